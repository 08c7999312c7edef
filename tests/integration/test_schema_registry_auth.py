"""The schema registry with authentication: a second Apicurio of the test's own (own
ports, own home, own database in the stack's PostgreSQL), started by the local stack's
own service with ``XIETONG_SCHEMA_REGISTRY_AUTH=true``. An anonymous write is refused
(401), a read-only user's write is refused (403), the platform user's write is taken,
and the platform's one client factory registers, serializes and deserializes through it
with the platform user's password from the stack's credentials file; so does
``xietong schemas register`` given the credentials in the environment, and the sink's
decoder reads a record's writer schema through the same client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka.serialization import MessageField, SerializationContext

from connectors.sink.decode import Decoder
from deploy.local.stack.schema_registry import SchemaRegistry
from schemas import register_schema
from tests.stream_worker import free_port
from xietong.kafka import KafkaClients, local_schema_registry_credentials_file
from xietong.settings import Settings

CONTENT_TYPE = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
TOPIC = "test.registry-auth"
SUBJECT = f"{TOPIC}-value"
PROBE_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "RegistryAuthProbe",
        "namespace": "cn.gov.xietong.test",
        "fields": [{"name": "uscc", "type": "string"}, {"name": "note", "type": "string"}],
    }
)


@pytest.fixture(scope="module")
def authenticated(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of a registry that asks for authentication, running for this module."""
    if stack_settings.schema_registry_is_external or stack_settings.postgres_is_external:
        pytest.skip("needs the local stack's PostgreSQL and registry (not containers)")
    database = f"schemas_auth_{uuid.uuid4().hex[:10]}"
    server = sa.make_url(stack_settings.database_url).set(database="postgres")
    maintenance = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with maintenance.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
    settings = stack_settings.model_copy(
        update={
            "home": tmp_path_factory.mktemp("registry-auth-home"),
            "schema_registry_url_env": None,
            "schema_registry_port": free_port(),
            "schema_registry_management_port": free_port(),
            "schema_registry_database": database,
            "schema_registry_auth": True,
            "schema_registry_username": None,
            "schema_registry_password": None,
        }
    )
    registry = SchemaRegistry(settings)
    try:
        registry.start()
        yield settings
    finally:
        registry.stop()
        with maintenance.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        maintenance.dispose()


@pytest.fixture(scope="module")
def passwords(authenticated: Settings) -> dict[str, str]:
    path = local_schema_registry_credentials_file(authenticated)
    return json.loads(path.read_text(encoding="utf-8"))


def post_schema(settings: Settings, auth: tuple[str, str] | None) -> httpx.Response:
    body = {"schema": json.dumps({"type": "record", "name": "X", "fields": []})}
    return httpx.post(
        f"{settings.schema_registry_url}/subjects/x/versions",
        json=body,
        headers=CONTENT_TYPE,
        auth=auth,
        timeout=30,
    )


def test_an_unauthenticated_write_is_refused(authenticated: Settings) -> None:
    assert post_schema(authenticated, None).status_code == 401
    assert post_schema(authenticated, ("xietong-platform", "wrong")).status_code == 401
    anonymous_read = httpx.get(f"{authenticated.schema_registry_url}/subjects", timeout=30)
    assert anonymous_read.status_code == 401


def test_a_read_only_users_write_is_refused(
    authenticated: Settings, passwords: dict[str, str]
) -> None:
    reader = ("xietong-reader", passwords["xietong-reader"])
    assert post_schema(authenticated, reader).status_code == 403
    read = httpx.get(f"{authenticated.schema_registry_url}/subjects", auth=reader, timeout=30)
    assert read.status_code == 200


def test_the_platform_users_write_is_taken(
    authenticated: Settings, passwords: dict[str, str]
) -> None:
    platform = ("xietong-platform", passwords["xietong-platform"])
    response = post_schema(authenticated, platform)
    assert response.status_code == 200, response.text
    assert "id" in response.json()


def test_the_client_factory_round_trips_a_record_through_the_authenticated_registry(
    authenticated: Settings,
) -> None:
    schema_id = register_schema(
        KafkaClients(authenticated, "admin").schema_registry(), SUBJECT, PROBE_SCHEMA
    )
    context = SerializationContext(TOPIC, MessageField.VALUE)
    value = {"uscc": "91330100MA2B3C4D5E", "note": "经认证的注册中心"}
    # the subject's latest schema: a registry read by the connectors' factory
    wire = KafkaClients(authenticated, "connectors").avro_serializer()(value, context)
    assert wire is not None and int.from_bytes(wire[1:5], "big") == schema_id
    # fresh factories, each fetching the writer schema by its id
    assert KafkaClients(authenticated, "streams").avro_deserializer()(wire, context) == value
    name, decoded = Decoder(KafkaClients(authenticated, "sink")).decode(wire)
    assert (name, decoded) == ("cn.gov.xietong.test.RegistryAuthProbe", value)


def test_xietong_schemas_register_sends_the_credentials_from_the_environment(
    authenticated: Settings, passwords: dict[str, str], tmp_path: Path
) -> None:
    secret = tmp_path / "registry-password"
    secret.write_text(passwords["xietong-platform"] + "\n")
    secret.chmod(0o600)
    environment = {
        **os.environ,
        "SCHEMA_REGISTRY_URL": authenticated.schema_registry_url,
        "XIETONG_SCHEMA_REGISTRY_USERNAME": "xietong-platform",
        "XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE": str(secret),
    }
    environment.pop("XIETONG_SCHEMA_REGISTRY_PASSWORD", None)
    xietong = Path(sys.executable).with_name("xietong")
    done = subprocess.run(
        [str(xietong), "schemas", "register"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert passwords["xietong-platform"] not in done.stdout + done.stderr
    # without credentials the same command is refused, and says so
    environment.pop("XIETONG_SCHEMA_REGISTRY_PASSWORD_FILE")
    environment.pop("XIETONG_SCHEMA_REGISTRY_USERNAME")
    refused = subprocess.run(
        [str(xietong), "schemas", "register"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0
    assert "refused this client (401" in refused.stdout + refused.stderr
