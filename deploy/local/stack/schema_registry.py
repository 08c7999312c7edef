"""Apicurio Registry 3.x serving the Confluent Schema Registry API.

The registry's Quarkus distribution is published on Maven Central as the ``all``
tar.gz of ``io.apicurio:apicurio-registry-app``; it is resolved with ``mvn``, unpacked
once into the cache directory and run with ``java -jar quarkus-run.jar``. Its storage
is the ``xietong_schemas`` database of the local PostgreSQL, so schema ids survive
restarts. Clients use the Confluent-compatible API under ``/apis/ccompat/v7``.

With ``XIETONG_SCHEMA_REGISTRY_AUTH=true`` the registry asks for HTTP basic
authentication and authorizes by role (Apicurio's ``sr-admin``, ``sr-developer``,
``sr-readonly``): its users are Quarkus embedded users, with passwords generated once
into ``.local/schema-registry/credentials.json`` and given to the registry in a
properties file of its own (both mode 0600), never on its command line or in its log.
The platform's clients read the ``xietong-platform`` user's password from the
credentials file (:func:`xietong.kafka.schema_registry_credentials`).
"""

from __future__ import annotations

import json
import os
import secrets
import tarfile
from pathlib import Path

import httpx

from deploy.local.stack.base import LocalService, StackError, port_is_open
from deploy.local.stack.java import find_java
from deploy.local.stack.maven import resolve_artifact
from xietong.kafka import (
    SCHEMA_REGISTRY_USERS,
    local_schema_registry_credentials_file,
    schema_registry_credentials,
)
from xietong.settings import LOOPBACK


class SchemaRegistry(LocalService):
    name = "schema-registry"
    port_setting = "XIETONG_SCHEMA_REGISTRY_PORT"
    start_timeout = 120.0

    @property
    def port(self) -> int:
        return self.settings.schema_registry_port

    @property
    def endpoint(self) -> str:
        return self.settings.local_schema_registry_url

    @property
    def is_external(self) -> bool:
        return self.settings.schema_registry_is_external

    @property
    def endpoints(self) -> str:
        if self.settings.schema_registry_auth:
            return f"{self.endpoint} (basic authentication, users in {self.credentials_file})"
        return self.endpoint

    @property
    def credentials_file(self) -> Path:
        return local_schema_registry_credentials_file(self.settings)

    @property
    def auth_config_file(self) -> Path:
        return self.data_dir / "auth.properties"

    def credentials(self) -> dict[str, str]:
        """The passwords of the registry's users, created once."""
        stored: dict[str, str] = {}
        if self.credentials_file.exists():
            stored = json.loads(self.credentials_file.read_text(encoding="utf-8"))
            if all(user in stored for user in SCHEMA_REGISTRY_USERS):
                return stored
        for user in SCHEMA_REGISTRY_USERS:
            stored.setdefault(user, secrets.token_urlsafe(24))
        write_private(self.credentials_file, json.dumps(stored, indent=2))
        return stored

    def write_auth_config(self) -> None:
        """The Quarkus configuration that turns authentication on: basic authentication
        against embedded users, each with its Apicurio role; no anonymous reads."""
        passwords = self.credentials()
        lines = [
            "quarkus.http.auth.basic=true",
            "quarkus.security.users.embedded.plain-text=true",
            "apicurio.auth.role-based-authorization=true",
            "apicurio.auth.role-source=token",
            "apicurio.auth.anonymous-read-access.enabled=false",
        ]
        for user, role in SCHEMA_REGISTRY_USERS.items():
            lines += [
                f"quarkus.security.users.embedded.users.{user}={passwords[user]}",
                f"quarkus.security.users.embedded.roles.{user}={role}",
            ]
        write_private(self.auth_config_file, "\n".join(lines) + "\n")

    @property
    def install_dir(self) -> Path:
        return self.settings.cache_dir / f"apicurio-registry-{self.settings.apicurio_version}"

    def java(self) -> str:
        # Apicurio Registry 3.3 is compiled for Java 21 (class file version 65).
        return find_java(21, f"the schema registry (Apicurio {self.settings.apicurio_version})")

    def prepare(self) -> None:
        if self.settings.postgres_is_external:
            raise StackError(
                "the local schema registry stores its schemas in the local PostgreSQL, but"
                " DATABASE_URL points elsewhere: set SCHEMA_REGISTRY_URL to your registry too"
            )
        self.java()
        management = self.settings.schema_registry_management_port
        if port_is_open(management):
            raise StackError(
                f"port {management} for the schema registry's health and metrics is taken: stop"
                " that process, or set XIETONG_SCHEMA_REGISTRY_MANAGEMENT_PORT to a free port"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.schema_registry_auth:
            self.write_auth_config()
        else:
            self.auth_config_file.unlink(missing_ok=True)
        if (self.install_dir / "quarkus-run.jar").exists():
            return
        archive = resolve_artifact(
            self.settings,
            f"io.apicurio:apicurio-registry-app:{self.settings.apicurio_version}:tar.gz:all",
            self.settings.home / "logs" / "maven.log",
        )
        partial = self.install_dir.with_suffix(".partial")
        with tarfile.open(archive) as bundle:
            bundle.extractall(partial, filter="data")
        partial.rename(self.install_dir)

    def command(self) -> list[str]:
        heap = self.settings.schema_registry_heap
        return [
            self.java(),
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.util.logging.manager=org.jboss.logmanager.LogManager",
            "-jar",
            str(self.install_dir / "quarkus-run.jar"),
        ]

    def environment(self) -> dict[str, str]:
        settings = self.settings
        auth = (
            {"QUARKUS_CONFIG_LOCATIONS": self.auth_config_file.as_uri()}
            if settings.schema_registry_auth
            else {}
        )
        return {
            **os.environ,
            **auth,
            "QUARKUS_HTTP_HOST": LOOPBACK,
            "QUARKUS_HTTP_PORT": str(self.port),
            # Health (/health/ready) and Prometheus metrics (/metrics) on a port of their own.
            "QUARKUS_MANAGEMENT_HOST": LOOPBACK,
            "QUARKUS_MANAGEMENT_PORT": str(settings.schema_registry_management_port),
            "APICURIO_STORAGE_KIND": "sql",
            "APICURIO_STORAGE_SQL_KIND": "postgresql",
            "APICURIO_DATASOURCE_URL": (
                f"jdbc:postgresql://{LOOPBACK}:{settings.postgres_port}/{settings.schema_registry_database}"
            ),
            "APICURIO_DATASOURCE_USERNAME": settings.postgres_user,
            "APICURIO_DATASOURCE_PASSWORD": settings.postgres_password.get_secret_value(),
            # The default pool keeps 20 connections open; a laptop needs far fewer.
            "APICURIO_DATASOURCE_JDBC_INITIAL_SIZE": "2",
            "APICURIO_DATASOURCE_JDBC_MIN_SIZE": "2",
            "APICURIO_DATASOURCE_JDBC_MAX_SIZE": "20",
            # Confluent clients expect Confluent's global ids, one per schema content.
            "APICURIO_CCOMPAT_LEGACY_ID_MODE_ENABLED": "false",
            "QUARKUS_LOG_LEVEL": "INFO",
        }

    def start(self) -> str:
        if self.pid() is not None and not self.is_external and self.answer() == 401:
            raise StackError(
                "the schema registry runs with authentication (it was started with"
                " XIETONG_SCHEMA_REGISTRY_AUTH=true) and this client sends no credentials:"
                " set XIETONG_SCHEMA_REGISTRY_AUTH=true (source .local/stack.env), or run"
                " 'make down' and 'make up' to restart it without"
            )
        return super().start()

    def answer(self) -> int | None:
        """The status of a request for the subjects, with this client's credentials."""
        try:
            response = httpx.get(
                f"{self.endpoint}/subjects",
                auth=schema_registry_credentials(self.settings),
                timeout=2,
            )
        except httpx.HTTPError:
            return None
        return response.status_code

    def is_ready(self) -> bool:
        return self.answer() == 200


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")
