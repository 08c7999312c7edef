"""The joint-punishment processor's settings: ``XIETONG_JOINT_PUNISHMENT_*``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streams.settings import ProcessorSettings


class JointPunishmentSettings(ProcessorSettings):
    """The province's joint-punishment rules, from ``XIETONG_JOINT_PUNISHMENT_*``."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_JOINT_PUNISHMENT_", extra="ignore")

    matter_window: timedelta = Field(
        default=timedelta(days=90),
        description="How long after its date a matter is kept, so that a listing read late"
        " still makes its hits; longer than the longest feedback period.",
    )
    review_list_types: list[str] = Field(
        default_factory=lambda: ["SERIOUS_ILLEGAL_DISHONEST"],
        description="Listings that send licence-review notices (the serious list).",
    )
    credit_authority_sector: str = Field(
        default="development_reform",
        description="The sector of the credit authority (信用主管部门) told of overdue feedback.",
    )
    registration_authority_sector: str = Field(
        default="market_regulation",
        description="The sector of the registration authority (登记机关) that decides a"
        " proposal to list on the serious list when the 经营异常 listing's authority is not"
        " a known department.",
    )
    metrics_port: int | None = Field(
        default=9467, description="Port of the Prometheus /metrics endpoint; unset: none."
    )
