"""The canonical schemas in the real schema registry: registered, evolvable, guarded."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas import ALL_RECORD_TYPES, LICENCE, register_all, register_schema
from xietong.kafka import KafkaClients


def test_every_record_type_is_registered_under_its_topic_with_transitive_compatibility(
    kafka: KafkaClients,
) -> None:
    registry = kafka.schema_registry()
    ids = register_all(registry)

    for record in ALL_RECORD_TYPES:
        assert ids[record.subject] == registry.get_latest_version(record.subject).schema_id
        assert registry.get_compatibility(record.subject) == "BACKWARD_TRANSITIVE"


def test_registering_the_same_schemas_again_keeps_their_ids(kafka: KafkaClients) -> None:
    registry = kafka.schema_registry()
    assert register_all(registry) == register_all(registry)


@pytest.fixture
def scratch_subject(kafka: KafkaClients):
    """A subject holding the licence schema, removed afterwards."""
    subject = f"test-evolution-{uuid.uuid4().hex[:8]}-value"
    register_schema(kafka.schema_registry(), subject, LICENCE.schema_str)
    yield subject
    kafka.schema_registry().delete_subject(subject)
    kafka.schema_registry().delete_subject(subject, permanent=True)


def _evolved(change) -> str:
    schema = json.loads(LICENCE.schema_str)
    change(schema["fields"])
    return json.dumps(schema, ensure_ascii=False)


def test_the_registry_accepts_a_new_optional_field(
    kafka: KafkaClients, scratch_subject: str
) -> None:
    compatible = _evolved(
        lambda fields: fields.append(
            {
                "name": "permit_scope_note",
                "type": ["null", "string"],
                "default": None,
                "doc": "许可范围备注",
            }
        )
    )

    new_id = kafka.schema_registry().register_schema(scratch_subject, Schema(compatible, "AVRO"))

    versions = kafka.schema_registry().get_versions(scratch_subject)
    assert len(versions) == 2
    assert kafka.schema_registry().get_latest_version(scratch_subject).schema_id == new_id


def test_the_registry_refuses_a_new_required_field(
    kafka: KafkaClients, scratch_subject: str
) -> None:
    incompatible = _evolved(
        lambda fields: fields.append({"name": "inspector", "type": "string", "doc": "检查人"})
    )

    with pytest.raises(SchemaRegistryError) as refused:
        kafka.schema_registry().register_schema(scratch_subject, Schema(incompatible, "AVRO"))

    assert refused.value.http_status_code == 409
    assert len(kafka.schema_registry().get_versions(scratch_subject)) == 1


def test_a_change_that_only_the_last_version_could_read_past_is_refused(
    kafka: KafkaClients,
) -> None:
    """Compatibility is transitive: a field dropped and then brought back with another
    type passes a check against the last version alone, but a replay from the start
    would meet the first version's records, which the new schema cannot read."""
    registry = kafka.schema_registry()
    subject = f"test-transitive-{uuid.uuid4().hex[:8]}-value"

    def version(*fields: dict) -> str:
        return json.dumps({"type": "record", "name": "Probe", "fields": list(fields)})

    try:
        register_schema(registry, subject, version({"name": "a", "type": "string"}))
        register_schema(registry, subject, version())
        with pytest.raises(SchemaRegistryError) as refused:
            register_schema(registry, subject, version({"name": "a", "type": "int", "default": 0}))
        assert refused.value.http_status_code == 409
    finally:
        registry.delete_subject(subject)
        registry.delete_subject(subject, permanent=True)
