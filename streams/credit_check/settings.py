"""The credit check's settings (``XIETONG_CREDIT_CHECK_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CreditCheckSettings(BaseSettings):
    """The credit-check service, from ``XIETONG_CREDIT_CHECK_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_CREDIT_CHECK_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8420, description="Port the API (and its /metrics) listens on.")
    token_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified token is trusted without asking the registry"
        " database again: a revoked token stops working within this time. 0: every check asks.",
    )
    ready_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a check waits for the state to be loaded before answering 503.",
    )
    load_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="Give up loading a topic to its end after this long."
    )
    matter_event_queue: int = Field(
        default=100_000,
        gt=0,
        description="Matter events waiting to be produced; beyond it they are counted and"
        " logged as undelivered.",
    )
