"""The one settings object of the platform.

Every component reads its configuration from :func:`get_settings`. Values come from
environment variables; the defaults describe the local stack that ``make up`` starts on
loopback, so a newcomer needs no configuration at all.

The four endpoint variables are the contract with the outside world::

    KAFKA_BOOTSTRAP_SERVERS   SCHEMA_REGISTRY_URL   DATABASE_URL   CREDIT_DATABASE_URL

When one of them is set to something other than the local stack's address, the
platform uses that service and ``xietong stack up`` does not start a local one.
Everything else is prefixed ``XIETONG_`` (for example ``XIETONG_KAFKA_PORT=19092``).

Every secret (a ``SecretStr`` setting such as ``XIETONG_KAFKA_PASSWORD``) may instead be
read from a file, as Kubernetes and Compose mount secrets: ``XIETONG_<NAME>_FILE`` names
it (``XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE=/run/secrets/registry-password``). Secrets
are ``SecretStr``: their ``repr`` and ``str`` are ``**********``, so a settings object
printed or logged by mistake shows none.
"""

from __future__ import annotations

import os
import typing
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

LOOPBACK = "127.0.0.1"


def seconds_or_text(value: object) -> object:
    """A duration setting as pydantic reads it: text of a number is seconds (pydantic
    alone reads only ISO 8601 or [-]HH:MM:SS); anything else is left to pydantic."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def libpq_url(url: str) -> str:
    """A SQLAlchemy database URL (``postgresql+psycopg2://…``) as ``psql`` and every libpq
    client take it (``postgresql://…``), without its password: a line to copy, which asks
    for the password (or reads ``PGPASSWORD`` / ``~/.pgpass``) instead of showing it."""
    from sqlalchemy.engine import URL, make_url

    given = make_url(url)
    plain = URL.create(
        "postgresql",
        username=given.username,
        host=given.host,
        port=given.port,
        database=given.database,
        query=given.query,
    )
    return plain.render_as_string(hide_password=False)


def without_password(url: str) -> str:
    """``url`` with the password of its user info, if any, shown as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xietong"


ENV_PREFIX = "XIETONG_"


def is_secret(field: FieldInfo) -> bool:
    """True for a setting that holds a secret (``SecretStr``, optional or not)."""
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


def secret_file_variable(name: str) -> str:
    """The variable naming the file a secret setting is read from."""
    return f"{ENV_PREFIX}{name.upper()}_FILE"


class SecretFiles(PydanticBaseSettingsSource):
    """Secret settings read from the files ``XIETONG_<NAME>_FILE`` names (its content, the
    trailing newline dropped); the variable ``XIETONG_<NAME>`` itself wins when set too."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = secret_file_variable(field_name)
        path = os.environ.get(variable)
        if not path or not is_secret(field):
            return None, field_name, False
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n"), field_name, False
        except OSError as error:
            raise ValueError(f"{variable}: cannot read {path}: {error.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class Settings(BaseSettings):
    """Platform configuration, from the environment with local-stack defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    def __repr_args__(self) -> Any:
        # SecretStr fields show as '**********' already; an endpoint URL may hold a password.
        for name, value in super().__repr_args__():
            if isinstance(value, str) and name is not None and name.endswith("_env"):
                value = without_password(value)
            yield name, value

    @field_serializer("database_url_env", "credit_database_url_env", when_used="json")
    def _shown_without_password(self, url: str | None) -> str | None:
        # as a SecretStr shows in JSON: the settings' JSON is for people, never a secret store
        return None if url is None else without_password(url)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            SecretFiles(settings_cls),
            file_secret_settings,
        )

    # -- where the local stack lives -------------------------------------------------
    home: Path = Field(
        default_factory=lambda: Path.cwd() / ".local",
        description="Data, logs and pid files of the local stack (git-ignored).",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Downloaded artifacts (Maven repository, unpacked registry), reused.",
    )

    # -- local stack ports and versions ----------------------------------------------
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    schema_registry_port: int = 8081
    schema_registry_management_port: int = 8091  # Quarkus health and metrics
    postgres_port: int = 5433
    kafka_version: str = "4.1.1"
    apicurio_version: str = "3.3.3"
    kafka_heap: str = "512m"
    schema_registry_heap: str = "384m"
    postgres_user: str = "xietong"
    postgres_password: SecretStr = Field(
        default=SecretStr("xietong"),
        description="The local PostgreSQL's password (in the local database URLs).",
    )

    # -- endpoints: external when set to something else than the local stack ---------
    kafka_bootstrap_servers_env: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    schema_registry_url_env: str | None = Field(
        default=None, validation_alias="SCHEMA_REGISTRY_URL"
    )
    database_url_env: str | None = Field(default=None, validation_alias="DATABASE_URL")
    credit_database_url_env: str | None = Field(
        default=None, validation_alias="CREDIT_DATABASE_URL"
    )

    # -- Kafka authentication ----------------------------------------------------------
    kafka_security_protocol: str = Field(
        default="SASL_PLAINTEXT",
        description="SASL_PLAINTEXT (the local stack), SASL_SSL, or PLAINTEXT for an open cluster.",
    )
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str | None = Field(
        default=None,
        description="This process's principal; default: the service's own (svc-<service>).",
    )
    kafka_password: SecretStr | None = Field(
        default=None,
        description="Its password; default: from the local stack's credentials file.",
    )
    # -- Kafka over TLS (security protocol SSL or SASL_SSL) -----------------------------
    kafka_ssl_ca_location: Path | None = Field(
        default=None,
        description="The CA file (PEM) that signed the brokers' certificates (and an https"
        " schema registry's); default: the system's trust store. The local stack's:"
        " <XIETONG_HOME>/kafka/tls/ca.pem.",
    )
    kafka_ssl_certificate_location: Path | None = Field(
        default=None,
        description="This client's certificate (PEM), where the brokers ask for one (mutual TLS).",
    )
    kafka_ssl_key_location: Path | None = Field(
        default=None, description="The private key (PEM) of that certificate."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="The key's password, when it is encrypted."
    )
    kafka_ssl_endpoint_identification: bool = Field(
        default=True,
        description="Check that a broker's certificate names the host connected to (keep on).",
    )
    kafka_brokers: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Nodes of the local Kafka cluster, each a KRaft broker and controller: 1 on"
        " a laptop, 3 for the fault tests. Node n listens on the first node's ports + 10(n-1).",
    )
    kafka_tls_port: int = Field(
        default=9094,
        description="The local broker's SASL_SSL listener, with a certificate from a CA the"
        " stack generates (<XIETONG_HOME>/kafka/tls/); 0: no TLS listener.",
    )

    # -- schema registry authentication ----------------------------------------------
    schema_registry_auth: bool = Field(
        default=False,
        description="Local stack: start Apicurio with HTTP basic authentication and"
        " role-based authorization (its users' passwords in"
        " <XIETONG_HOME>/schema-registry/credentials.json, mode 0600); the platform's clients"
        " then send the xietong-platform principal's credentials from that file.",
    )
    schema_registry_username: str | None = Field(
        default=None,
        description="HTTP basic authentication to the schema registry: the user name (an"
        " Apicurio user with the sr-developer role, to register schemas).",
    )
    schema_registry_password: SecretStr | None = Field(
        default=None,
        description="Its password (or XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE: a file holding it).",
    )
    schema_registry_oauth_token_url: str | None = Field(
        default=None,
        description="OIDC client credentials instead of basic authentication: the identity"
        " provider's token endpoint (…/protocol/openid-connect/token for Keycloak); the"
        " registry must validate its tokens (Apicurio: QUARKUS_OIDC_TENANT_ENABLED=true).",
    )
    schema_registry_oauth_client_id: str | None = Field(
        default=None, description="The OIDC client id of this platform."
    )
    schema_registry_oauth_client_secret: SecretStr | None = Field(
        default=None,
        description="Its client secret (or XIETONG_SCHEMA_REGISTRY_OAUTH_CLIENT_SECRET_FILE).",
    )
    schema_registry_oauth_scope: str = Field(
        default="", description="The scope asked for with the token (space separated)."
    )
    schema_registry_oauth_logical_cluster: str = Field(
        default="apicurio",
        description="Sent as the target-sr-cluster header, which confluent-kafka requires:"
        " Confluent Cloud's schema registry id (lsrc-…); Apicurio ignores it.",
    )
    schema_registry_ssl_ca_location: Path | None = Field(
        default=None,
        description="The CA file (PEM) of an https schema registry; default: the system's.",
    )
    schema_registry_database: str = Field(
        default="xietong_schemas",
        description="The local PostgreSQL database the local schema registry stores schemas in.",
    )

    # -- topic layout -----------------------------------------------------------------
    replication_factor: int = Field(
        default=1,
        description="1 on a laptop, 3 on a production cluster; default: 3 on a local stack"
        " of 3 or more brokers (XIETONG_KAFKA_BROKERS), else 1.",
    )
    min_insync_replicas: int = Field(
        default=1,
        description="1 on a laptop, 2 on a production cluster; default: 2 on a local stack"
        " of 3 or more brokers, else 1.",
    )
    uscc_partitions: int = Field(
        default=6,
        description="Partition count of every topic keyed by USCC (co-partitioning).",
    )

    # -- the business clock (xietong/clock.py) ------------------------------------------
    time_zone: str = Field(
        default="Asia/Shanghai",
        description="The province's time zone: it defines today, the day of an instant and"
        " every deadline, in every service.",
    )
    clock_offset: timedelta = Field(
        default=timedelta(0),
        description="Rehearsal: shift the business clock of every service by this much"
        " (seconds, or ISO 8601 such as PT8H); 0 in production.",
    )
    clock_at: datetime | None = Field(
        default=None,
        description="Rehearsal: freeze the business clock at this instant (ISO 8601 with"
        " its offset); for one-shot commands and tests, never for a running platform.",
    )

    @field_validator("clock_offset", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        return seconds_or_text(value)

    # -- monitoring -------------------------------------------------------------------
    prometheus_port: int = Field(
        default=9090, description="The local Prometheus (xietong stack up --with-prometheus)."
    )
    lag_exporter_port: int = Field(
        default=9460, description="Metrics of the consumer-lag exporter (xietong lag serve)."
    )
    lag_exporter_interval: float = Field(
        default=5.0, description="Seconds between two consumer-lag measurements."
    )

    # -- derived endpoints ------------------------------------------------------------
    @model_validator(mode="after")
    def _replicated_as_the_local_cluster_allows(self) -> Settings:
        if "replication_factor" not in self.model_fields_set:
            self.replication_factor = min(3, self.kafka_brokers)
        if "min_insync_replicas" not in self.model_fields_set:
            self.min_insync_replicas = 2 if self.kafka_brokers >= 3 else 1
        return self

    @staticmethod
    def kafka_node_port(first: int, node: int) -> int:
        """Node ``node``'s port (1-based) given the first node's."""
        return first + 10 * (node - 1) if first else 0

    @property
    def local_bootstrap_servers(self) -> str:
        return ",".join(
            f"{LOOPBACK}:{self.kafka_node_port(self.kafka_port, node)}"
            for node in range(1, self.kafka_brokers + 1)
        )

    @property
    def local_schema_registry_url(self) -> str:
        return f"http://{LOOPBACK}:{self.schema_registry_port}/apis/ccompat/v7"

    def local_database_url(self, database: str) -> str:
        return (
            f"postgresql+psycopg2://{self.postgres_user}:{self.postgres_password.get_secret_value()}"
            f"@{LOOPBACK}:{self.postgres_port}/{database}"
        )

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers_env or self.local_bootstrap_servers

    @property
    def schema_registry_url(self) -> str:
        return self.schema_registry_url_env or self.local_schema_registry_url

    @property
    def database_url(self) -> str:
        return self.database_url_env or self.local_database_url(REGISTRY_DATABASE)

    @property
    def credit_database_url(self) -> str:
        return self.credit_database_url_env or self.local_database_url(CREDIT_DATABASE)

    def endpoints(self) -> dict[str, str]:
        """The endpoint variables, as written to ``.local/stack.env``: each ``<name>_env``
        field's variable, with the endpoint ``<name>`` in use."""
        return {
            str(spec.validation_alias): getattr(self, name.removesuffix("_env"))
            for name, spec in type(self).model_fields.items()
            if name.endswith("_env")
        }

    # -- which services the local stack must provide ------------------------------------
    @property
    def kafka_is_external(self) -> bool:
        return self.kafka_bootstrap_servers != self.local_bootstrap_servers

    @property
    def schema_registry_is_external(self) -> bool:
        return self.schema_registry_url.rstrip("/") != self.local_schema_registry_url

    @property
    def postgres_is_external(self) -> bool:
        local = {
            self.local_database_url(REGISTRY_DATABASE),
            self.local_database_url(CREDIT_DATABASE),
        }
        return self.database_url not in local or self.credit_database_url not in local


REGISTRY_DATABASE = "xietong_registry"
CREDIT_DATABASE = "xietong_credit"
SCHEMA_REGISTRY_DATABASE = Settings.model_fields["schema_registry_database"].default


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
