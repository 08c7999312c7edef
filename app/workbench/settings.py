"""The workbench's settings (``XIETONG_WORKBENCH_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkbenchSettings(BaseSettings):
    """The clerk's workbench, from ``XIETONG_WORKBENCH_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_WORKBENCH_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the workbench listens on.")
    port: int = Field(default=8440, description="Port of the workbench's pages (and its /metrics).")
    session_idle_minutes: float = Field(
        default=480.0,
        gt=0,
        description="A clerk's sign-in ends after this long without a request (a working"
        " day by default); a restart of the workbench signs every clerk out.",
    )
    secure_cookie: bool = Field(
        default=False,
        description="Send the session cookie over HTTPS only: set it when the workbench is"
        " served behind TLS (a clerk on plain http://127.0.0.1 could not sign in).",
    )
    page_size: int = Field(
        default=50, gt=0, le=500, description="Inbox items on one page (then 下一页)."
    )
    token_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified token is trusted without asking the registry"
        " database again: a revoked token signs its clerks out within this time.",
    )
