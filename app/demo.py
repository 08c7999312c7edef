"""What ``make run`` shows on the local stack.

* :func:`round_trip` — one Avro record through the real registry and broker: registers
  the heartbeat schema, produces one record with confluent-kafka's Avro serializer
  (Confluent wire format: magic byte, schema id, Avro body), reads it back with a
  consumer and the Avro deserializer, and records it in PostgreSQL.
* :func:`feed_samples` — the sample province's department exports through their
  connectors: canonical events, dead letters, reconciled counts.
* :func:`example_sharing` — one conditional subscription (有条件共享) for the sharing
  processor to write: 西湖区卫生健康局 sees the credit list entries of 330106, only
  ``uscc`` and ``list_type``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from confluent_kafka import Message, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from app.samples import DEPARTMENTS_DIR, ExportFile, generate_exports
from connectors.base import RunReport
from connectors.config import ConnectorConfig, FileSourceConfig
from connectors.runner import run_connector
from schemas import load_schema, register_schema, value_subject
from xietong.kafka import KafkaClients
from xietong.topics import HEARTBEATS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from registry.models import Subscription


@dataclass(frozen=True)
class ExampleSharing:
    """The example of 有条件共享 that ``make run`` sets up (the one of issue 14)."""

    department: str = "hz-xh-health"  # 杭州市西湖区卫生健康局
    resource: str = "credit_list_entry"
    owner: str = "zj-drc"  # 浙江省发展和改革委员会, the credit authority
    fields: tuple[str, ...] = ("uscc", "list_type")
    divisions: tuple[str, ...] = ("330106",)


EXAMPLE_SHARING = ExampleSharing()


@dataclass(frozen=True)
class RoundTrip:
    schema_id: int
    partition: int
    offset: int
    wire_bytes: int
    decoded: dict[str, Any]
    database_row_id: int
    elapsed_ms: float


def round_trip(clients: KafkaClients, service: str = "demo") -> RoundTrip:
    """Produce one heartbeat, consume and decode it, store it; what happened."""
    started = time.perf_counter()
    topic = HEARTBEATS.name
    schema_str = load_schema("heartbeat")
    schema_id = register_schema(clients.schema_registry(), value_subject(topic), schema_str)

    heartbeat = {
        "service": service,
        "instance": f"{socket.gethostname()}:{os.getpid()}",
        "sent_at": datetime.now(UTC).replace(microsecond=0),  # a probe's instant: wall clock
        "detail": {"purpose": "stack round trip"},
    }
    serializer = clients.avro_serializer(schema_str)
    payload = serializer(heartbeat, SerializationContext(topic, MessageField.VALUE))
    assert payload is not None

    delivered: list[Message] = []
    producer = clients.producer()
    producer.produce(
        topic,
        key=service.encode(),
        value=payload,
        on_delivery=lambda error, message: delivered.append(message) if error is None else None,
    )
    producer.flush(30)
    if not delivered:
        raise RuntimeError(
            f"the heartbeat was not acknowledged by {clients.settings.kafka_bootstrap_servers}"
        )
    partition, offset = delivered[0].partition() or 0, delivered[0].offset() or 0

    consumer = clients.consumer(group_id=clients.group(f"round-trip-{os.getpid()}"))
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        received = None
        deadline = time.monotonic() + 30
        while received is None and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                received = message
    finally:
        consumer.close()
    if received is None:
        raise RuntimeError(f"the heartbeat at {topic}[{partition}]@{offset} was not read back")
    raw = received.value() or b""
    decoded = clients.avro_deserializer()(raw, SerializationContext(topic, MessageField.VALUE))
    if not isinstance(decoded, dict):
        raise RuntimeError(f"the heartbeat at {topic}[{partition}]@{offset} did not decode")

    row_id = _record(clients.settings.credit_database_url, decoded, partition, offset)
    return RoundTrip(
        schema_id=schema_id,
        partition=partition,
        offset=offset,
        wire_bytes=len(raw),
        decoded=decoded,
        database_row_id=row_id,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


ROUND_TRIP_TABLE = """
CREATE TABLE IF NOT EXISTS stack_round_trip (
    id bigserial PRIMARY KEY,
    service text NOT NULL,
    sent_at timestamptz NOT NULL,
    topic text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset bigint NOT NULL
)"""

INSERT_ROUND_TRIP = """
INSERT INTO stack_round_trip (service, sent_at, topic, kafka_partition, kafka_offset)
VALUES (:service, :sent_at, :topic, :partition, :offset)
RETURNING id"""


def _record(database_url: str, heartbeat: dict[str, Any], partition: int, offset: int) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(ROUND_TRIP_TABLE))
            row_id = connection.execute(
                sa.text(INSERT_ROUND_TRIP),
                {
                    "service": heartbeat["service"],
                    "sent_at": heartbeat["sent_at"],
                    "topic": HEARTBEATS.name,
                    "partition": partition,
                    "offset": offset,
                },
            ).scalar_one()
        return int(row_id)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class FeedResult:
    """One sample department export run through its connector."""

    export: ExportFile
    report: RunReport


def feed_samples(
    clients: KafkaClients,
    out_dir: Path,
    records: int,
    seed: int = 2026,
    bad_share: float = 0.05,
    on_result: Callable[[FeedResult], None] | None = None,
) -> list[FeedResult]:
    """Generate the sample province's department exports (unless ``out_dir`` holds them)
    and run every sample department connector over them.

    The connectors keep their offsets, so feeding the same directory again publishes
    only what was not published before.
    """
    manifest_file = out_dir / "manifest.json"
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        files = [ExportFile(**entry) for entry in manifest["files"]]
    else:
        files = list(generate_exports(out_dir, records, seed, bad_share).files)
    results = []
    for export in files:
        config = ConnectorConfig.load(DEPARTMENTS_DIR / f"{export.connector}.connector.yaml")
        assert isinstance(config.source, FileSourceConfig)
        config.source.path = out_dir / export.file
        result = FeedResult(export, run_connector(config, clients))
        results.append(result)
        if on_result:
            on_result(result)
    return results


def example_sharing(
    session: Session, example: ExampleSharing = EXAMPLE_SHARING
) -> tuple[Subscription, bool]:
    """``example`` requested and approved by its owner, unless the department has an open
    subscription to the resource already; (that subscription, whether it was made now)."""
    from registry.audit import Actor
    from registry.models import OPEN_STATUSES
    from registry.service import approve_subscription, list_subscriptions, request_subscription

    subscriber = Actor.department(example.department)
    for held in list_subscriptions(session, subscriber, role="subscriber"):
        if held.resource.code == example.resource and held.status in OPEN_STATUSES:
            return held, False
    requested = request_subscription(
        session,
        subscriber,
        department=example.department,
        resource=example.resource,
        purpose="卫生健康行政许可前核查本区失信主体 (the example of 有条件共享)",
        legal_basis="国发〔2016〕33号",
        fields=list(example.fields),
        filters={"divisions": list(example.divisions)},
    )
    owner = Actor.department(example.owner)
    return approve_subscription(session, owner, requested.id, reason="依法有条件共享"), True
