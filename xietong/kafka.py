"""The one Kafka client factory of the platform.

Every producer, consumer, admin client, schema registry client and Avro serde is made
here, from :class:`xietong.settings.Settings`, so that connection settings, delivery
guarantees and the serializer path are the same everywhere::

    from xietong.kafka import clients

    producer = clients().producer()
    serializer = clients().avro_serializer(schema_str)

Producers are idempotent with ``acks=all``: a retried send never duplicates a record
in the log, which at-least-once delivery with deterministic event ids turns into
effectively-once results downstream.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

from xietong.settings import Settings, get_settings

# The registry subject of a topic's values is "<topic>-value" (TopicNameStrategy), the
# Confluent default every department client will also use.
SERIALIZER_DEFAULTS: dict[str, Any] = {
    # Schemas are registered deliberately (the platform's schema registration step),
    # never implicitly by whichever producer happens to start first.
    "auto.register.schemas": False,
    # The plain topic strategy: no subject-association lookups against the registry and
    # no locked cache on every record.
    "subject.name.strategy": topic_subject_name_strategy,
}


class KafkaClients:
    """Builds Kafka and schema registry clients for one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.settings.kafka_bootstrap_servers}

    def producer(self, **overrides: Any) -> Producer:
        """An idempotent producer (acks=all) with small batching delay."""
        config = {
            **self._common(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "zstd",
            **overrides,
        }
        return Producer(config)

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        """A consumer that commits only what the caller says it has processed."""
        config = {
            **self._common(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **overrides,
        }
        return Consumer(config)

    def admin(self, **overrides: Any) -> AdminClient:
        return AdminClient({**self._common(), **overrides})

    @cache  # noqa: B019 - one registry client (and its schema cache) per factory
    def schema_registry(self) -> SchemaRegistryClient:
        return SchemaRegistryClient({"url": self.settings.schema_registry_url})

    def avro_serializer(self, schema_str: str | None = None, **config: Any) -> AvroSerializer:
        """An Avro serializer writing the Confluent wire format (magic byte, schema id).

        With ``schema_str`` the given schema is written (it must be registered under the
        subject already); without it the subject's latest registered schema is used.
        """
        defaults = {**SERIALIZER_DEFAULTS, "use.latest.version": schema_str is None}
        return AvroSerializer(self.schema_registry(), schema_str, conf={**defaults, **config})

    def avro_deserializer(self, schema_str: str | None = None, **config: Any) -> AvroDeserializer:
        """An Avro deserializer reading the writer's schema by the id in each message."""
        conf = {"subject.name.strategy": topic_subject_name_strategy, **config}
        return AvroDeserializer(self.schema_registry(), schema_str, conf=conf)


@cache
def clients() -> KafkaClients:
    """The factory for the process-wide settings."""
    return KafkaClients(get_settings())
