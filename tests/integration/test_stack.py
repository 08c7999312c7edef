"""The local stack: real Kafka, a real schema registry and a real PostgreSQL."""

from __future__ import annotations

import struct
import subprocess

import httpx
import sqlalchemy as sa

from app.demo import round_trip
from deploy.local.stack import LocalStack
from schemas import load_schema, register_schema, value_subject
from xietong.kafka import KafkaClients, schema_registry_credentials
from xietong.settings import Settings
from xietong.topics import TOPICS, Change, TopicKey, apply_topics


def test_an_avro_record_goes_through_the_registry_and_broker_and_a_row_through_postgresql(
    kafka: KafkaClients,
) -> None:
    result = round_trip(kafka, service="integration-test")

    assert result.decoded["service"] == "integration-test"
    assert result.decoded["detail"] == {"purpose": "stack round trip"}
    engine = sa.create_engine(kafka.settings.credit_database_url)
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT service, kafka_offset FROM stack_round_trip WHERE id = :id"),
            {"id": result.database_row_id},
        ).one()
    engine.dispose()
    assert tuple(row) == ("integration-test", result.offset)


def test_records_use_the_confluent_wire_format_with_the_registered_schema_id(
    kafka: KafkaClients,
) -> None:
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema_str = load_schema("heartbeat")
    subject = value_subject("platform.heartbeats")
    schema_id = register_schema(kafka.schema_registry(), subject, schema_str)
    payload = kafka.avro_serializer(schema_str)(
        {"service": "wire", "instance": "test", "sent_at": 0, "detail": {}},
        SerializationContext("platform.heartbeats", MessageField.VALUE),
    )
    assert payload is not None
    magic, written_id = struct.unpack(">bI", payload[:5])
    assert (magic, written_id) == (0, schema_id)
    # The id resolves through the Confluent API of the registry.
    response = httpx.get(
        f"{kafka.settings.schema_registry_url}/schemas/ids/{schema_id}",
        auth=schema_registry_credentials(kafka.settings),
    )
    assert response.status_code == 200
    assert "Heartbeat" in response.json()["schema"]


def test_topics_apply_is_idempotent_and_keeps_usccs_co_partitioned(
    kafka: KafkaClients, stack_settings: Settings
) -> None:
    again = apply_topics(kafka.admin(), stack_settings)
    assert {change.change for change in again} == {Change.UNCHANGED}

    metadata = kafka.admin().list_topics(timeout=10).topics
    uscc_partitions = {
        len(metadata[spec.name].partitions) for spec in TOPICS if spec.key is TopicKey.USCC
    }
    assert uscc_partitions == {stack_settings.uscc_partitions}


def test_the_broker_refuses_to_create_topics_implicitly(kafka: KafkaClients) -> None:
    producer = kafka.producer(**{"message.timeout.ms": 3000})
    errors: list[str] = []
    producer.produce(
        "not.declared.anywhere", b"x", on_delivery=lambda error, _: errors.append(str(error))
    )
    producer.flush(10)
    metadata = kafka.admin().list_topics(timeout=10).topics
    assert "not.declared.anywhere" not in metadata
    assert errors and errors[0] != "None"


def test_stack_up_twice_is_harmless_and_writes_sourceable_endpoints(
    local_stack: LocalStack,
) -> None:
    lines: list[str] = []
    started = local_stack.up(report=lines.append)

    assert started == []
    assert all("started at" not in line for line in lines)
    exported = subprocess.run(
        ["bash", "-c", f"source {local_stack.env_file} && env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name, value in local_stack.settings.endpoints().items():
        assert f"{name}={value}" in exported


def test_schema_ids_survive_a_restart_of_the_schema_registry(
    local_stack: LocalStack, kafka: KafkaClients
) -> None:
    subject = value_subject("platform.heartbeats")
    before = kafka.schema_registry().get_latest_version(subject).schema_id
    registry = next(s for s in local_stack.services if s.name == "schema-registry")
    if registry.is_external:
        return  # under testcontainers the registry is not ours to restart

    registry.stop()
    registry.start()

    fresh = KafkaClients(kafka.settings).schema_registry()
    assert fresh.get_latest_version(subject).schema_id == before
