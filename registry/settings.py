"""The registry service's own settings (``XIETONG_REGISTRY_*``).

The database is the platform's registry database, ``xietong.settings.get_settings()
.database_url`` (``DATABASE_URL``); only what is specific to the registry's HTTP service
lives here.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """The registry service, from ``XIETONG_REGISTRY_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_REGISTRY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8410, description="Port the API listens on.")
    admin_token_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "SHA-256 (hex) of the bootstrap administrator token; the token itself is never"
            ' stored (printf %s "$TOKEN" | sha256sum). Further administrator credentials'
            " are issued with `xietong registry issue-token admin`."
        ),
    )

    webhook_allow_http: bool = Field(
        default=False,
        description="Accept plain http:// webhook endpoints (the local stack, tests); off,"
        " only https:// is registered.",
    )

    acl_reconciler: bool = Field(
        default=True,
        description="Reconcile department ACLs on the broker (registry/acl.py). Switch it off"
        " (false) where another owner manages users and ACLs, such as Strimzi's User"
        " Operator: the department topics are still created, no ACL is created or removed.",
    )

    @field_validator("admin_token_sha256", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


@lru_cache(maxsize=1)
def get_registry_settings() -> RegistrySettings:
    """The process-wide registry settings, read once from the environment."""
    return RegistrySettings()
