"""The webhook worker's settings (``XIETONG_WEBHOOKS_*``), apart from the worker so that
what only needs a port (the local Prometheus, ``xietong run``) does not load it."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from xietong.settings import seconds_or_text

#: The worker's Kafka principal (svc-webhooks) and its consumer group (xietong.webhooks.delivery).
SERVICE = "webhooks"
GROUP = "delivery"


class WebhookSettings(BaseSettings):
    """The webhook worker's settings, ``XIETONG_WEBHOOKS_*``."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_WEBHOOKS_", extra="ignore")

    metrics_port: int | None = Field(
        default=9468, description="Port of the Prometheus /metrics endpoint; unset: none."
    )
    timeout: float = Field(default=10.0, description="Seconds one attempt may take.")
    retry_window: timedelta = Field(
        default=timedelta(hours=24),
        description="How long after reaching the inbox an item is still retried; then it is"
        " dead-lettered (seconds, or ISO 8601 such as PT24H).",
    )
    backoff_base: float = Field(default=1.0, description="Seconds: the first retry's ceiling.")
    backoff_cap: float = Field(default=600.0, description="Seconds: the longest retry wait.")
    concurrency: int = Field(
        default=16, ge=1, description="Attempts at once (departments delivered in parallel)."
    )
    lane_capacity: int = Field(
        default=100, ge=1, description="Items read ahead per department before its inbox pauses."
    )
    endpoint_refresh: float = Field(
        default=5.0, description="Seconds between two readings of the registry's endpoints."
    )

    @field_validator("retry_window", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        return seconds_or_text(value)
