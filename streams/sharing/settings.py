"""The sharing processor's settings: ``XIETONG_SHARING_*``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SharingSettings(BaseSettings):
    """How the sharing processor (``xietong streams sharing``) reads and reports."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_SHARING_", extra="ignore")

    batch_size: int = Field(
        default=500,
        gt=0,
        description="Most records of one view read, written and committed at once.",
    )
    poll_timeout: float = Field(
        default=0.2, gt=0, description="Longest wait (s) for records when nothing is pending."
    )
    retry_interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds before a view waiting for its topic (made by the registry's"
        " reconciler) or one whose write failed is tried again.",
    )
    lag_interval: float = Field(default=5.0, gt=0, description="How often (s) the lag is measured.")
    metrics_port: int | None = Field(
        default=9469, description="Port of the Prometheus /metrics endpoint; unset: none."
    )
