"""The inbox API's settings (``XIETONG_INBOX_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InboxSettings(BaseSettings):
    """The inbox API, from ``XIETONG_INBOX_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_INBOX_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8430, description="Port the API (and its /metrics) listens on.")
    token_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified token is trusted without asking the registry"
        " database again: a revoked token stops working within this time. 0: every request asks.",
    )
    produce_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long an action waits for the broker's acknowledgement before the"
        " API answers 503 (the client sends it again with the same Idempotency-Key).",
    )
    page_size: int = Field(default=50, ge=1, le=500, description="Items per page by default.")
