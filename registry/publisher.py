"""The outbox relay: from the ``outbox`` table to the registry's compacted topics.

:mod:`registry.outbox` writes a snapshot of every changed department, approval item,
measure, list type and subscription in the transaction that changed it. The
:class:`OutboxRelay` hands those rows to the broker, in id order, each keyed by the
entity's code (a subscription by its id) on its compacted topic and Avro-encoded with
the topic's schema, then marks them published::

    relay = OutboxRelay(session_factory(url), KafkaClients(settings, "registry"))
    relay.publish_pending()          # once; the number of records published
    relay.run(stop_event)            # or until stop_event is set (xietong registry publish --watch)

Guarantees:

* **At least once.** Rows are marked published in the database transaction that locked
  them, after the idempotent producer's flush has been acknowledged by the broker. A
  crash in between publishes them again on the next round: the same snapshot under the
  same key, which a reader of a compacted topic (a table keyed by that key) absorbs.
* **In order per key.** Rows go out in id order and one relay publishes at a time, so
  the latest record of a key on the topic is its latest snapshot.
* **Nothing is skipped.** A row that cannot be published (schema not registered, broker
  refusing) fails the whole batch, which stays pending and is retried; the error names
  the row, its topic and key.

Metrics (``prometheus_client``'s default registry): ``xietong_registry_outbox_pending``,
``xietong_registry_outbox_published_total`` by topic,
``xietong_registry_outbox_publish_latency_seconds`` (from the change's transaction to
the broker's acknowledgement) and ``xietong_registry_outbox_failures_total``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge, Histogram
from sqlalchemy.orm import Session, sessionmaker

from registry import outbox
from registry.db import transaction
from registry.models import OutboxEntry
from xietong.kafka import KafkaClients
from xietong.logs import log_event

logger = logging.getLogger(__name__)

OUTBOX_PENDING = Gauge(
    "xietong_registry_outbox_pending", "Outbox rows not yet published to the broker"
)
OUTBOX_PUBLISHED = MetricCounter(
    "xietong_registry_outbox_published",
    "Registry records published from the outbox, by topic",
    ("topic",),
)
OUTBOX_LATENCY = Histogram(
    "xietong_registry_outbox_publish_latency_seconds",
    "From the transaction that changed an entity to the broker's acknowledgement of it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
OUTBOX_FAILURES = MetricCounter(
    "xietong_registry_outbox_failures", "Publishing rounds that failed and will be retried"
)

#: Held by the relay that is publishing; the others wait for their next round.
RELAY_LOCK = "registry.outbox-relay"


class OutboxPublishError(RuntimeError):
    """A batch of outbox rows could not be published; they stay pending."""


@dataclass(frozen=True)
class PendingTopic:
    """What waits in the outbox for one topic."""

    topic: str
    rows: int
    oldest: datetime


class OutboxRelay:
    """Publishes the registry's outbox to its compacted topics, as ``svc-registry``."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        clients: KafkaClients,
        *,
        flush_timeout: float = 30.0,
    ) -> None:
        self.sessions = session_factory
        self.clients = clients
        self.flush_timeout = flush_timeout
        self._producer: Producer | None = None
        self._serializers: dict[str, AvroSerializer] = {}
        self._topics = {entity.topic: entity for entity in outbox.PUBLISHED}
        self._nudged = threading.Event()

    # -- one round ------------------------------------------------------------------------

    def publish_pending(self, limit: int = 500) -> int:
        """Publish up to ``limit`` unpublished rows, oldest first; the number published.

        Returns 0 when nothing is pending, or when another relay is publishing right now
        (it holds :data:`RELAY_LOCK`). Raises :class:`OutboxPublishError` when the batch
        could not be published; its rows stay pending for the next round.
        """
        published: list[Any] = []
        with transaction(self.sessions) as session:
            # One relay at a time: two relays taking different rows of one key could
            # publish them out of order, leaving an older snapshot as the latest. The
            # rows themselves stay locked until marked (FOR UPDATE), and SKIP LOCKED
            # keeps a round from ever queueing behind another transaction's lock.
            if not session.scalar(
                sa.select(sa.func.pg_try_advisory_xact_lock(sa.func.hashtext(RELAY_LOCK)))
            ):
                return 0
            rows = session.execute(
                sa.select(OutboxEntry.id, OutboxEntry.topic, OutboxEntry.key, OutboxEntry.payload)
                .where(OutboxEntry.published_at.is_(None))
                .order_by(OutboxEntry.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if rows:
                self._produce(rows)
                published = list(
                    session.execute(
                        sa.update(OutboxEntry)
                        .where(OutboxEntry.id.in_([row.id for row in rows]))
                        .values(published_at=sa.func.clock_timestamp())
                        .returning(
                            OutboxEntry.topic,
                            sa.extract("epoch", OutboxEntry.published_at - OutboxEntry.created_at),
                        )
                    )
                )
            pending = session.scalar(
                sa.select(sa.func.count()).where(OutboxEntry.published_at.is_(None))
            )
        OUTBOX_PENDING.set(pending or 0)
        if not published:
            return 0
        by_topic = Counter(topic for topic, _ in published)
        for topic, count in by_topic.items():
            OUTBOX_PUBLISHED.labels(topic).inc(count)
        for _, seconds in published:
            OUTBOX_LATENCY.observe(float(seconds))
        log_event(
            logger,
            "registry_outbox_published",
            records=len(published),
            topics=dict(by_topic),
            last_outbox_id=rows[-1].id,
        )
        return len(published)

    def _produce(self, rows: Sequence[Any]) -> None:
        """Produce the rows and wait for the broker; raise unless every one is acknowledged."""
        producer = self._producer or self.clients.producer()
        self._producer = producer
        failures: list[str] = []
        refused = False

        def delivered(error: KafkaError | None, message: Message) -> None:
            nonlocal refused
            if error is not None:
                key = (message.key() or b"").decode()
                failures.append(f"{message.topic()} key {key!r}: {error.str()}")
                refused = refused or error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

        try:
            for row in rows:
                producer.produce(
                    row.topic,
                    key=row.key.encode(),
                    value=self._value(row),
                    on_delivery=delivered,
                )
                producer.poll(0)
            unsent = producer.flush(self.flush_timeout)
        except (BufferError, KafkaException, ValueError, TypeError) as error:
            self._discard_producer()
            raise OutboxPublishError(str(error)) from error
        if unsent or failures:
            self._discard_producer()
            detail = failures[0] if failures else f"{unsent} not acknowledged in time"
            hint = (
                f" ({self.clients.principal} may not write there: apply the topic"
                " declarations and their ACLs with `xietong topics apply`)"
                if refused
                else ""
            )
            raise OutboxPublishError(
                f"{len(failures) or unsent} of {len(rows)} outbox records (ids {rows[0].id}"
                f"–{rows[-1].id}) were not published, e.g. {detail}{hint}; they stay pending"
                " and are retried on the next round"
            )

    def _value(self, row: Any) -> bytes | None:
        if row.payload is None:
            return None  # a tombstone: the entity was removed
        entity = self._topics.get(row.topic)
        if entity is None:
            raise ValueError(
                f"outbox row {row.id} is for topic {row.topic!r}, which the registry does not"
                f" publish (it publishes {', '.join(self._topics)})"
            )
        serializer = self._serializers.get(row.topic)
        if serializer is None:
            serializer = self.clients.avro_serializer(entity.record.schema_str)
            self._serializers[row.topic] = serializer
        try:
            value: bytes | None = serializer(
                row.payload, SerializationContext(row.topic, MessageField.VALUE)
            )
        except SchemaRegistryError as error:
            raise ValueError(
                f"outbox row {row.id} ({row.topic} key {row.key!r}): the schema registry"
                f" refused {entity.record.subject}: {error.error_message}; register the"
                " schemas with `xietong schemas register`"
            ) from error
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"outbox row {row.id} ({row.topic} key {row.key!r}) does not fit"
                f" schemas/avro/{entity.record.schema_file}.avsc: {error}"
            ) from error
        return value

    def _discard_producer(self) -> None:
        # What is still queued would be sent later, possibly after a newer snapshot of
        # the same key from the retry; drop it, the rows stay pending anyway.
        if self._producer is not None:
            self._producer.purge()
            self._producer.flush(0)
            self._producer = None

    # -- running ---------------------------------------------------------------------------

    def run(self, stop_event: threading.Event, interval: float = 1.0, limit: int = 500) -> None:
        """Publish until ``stop_event`` is set: a full batch is followed by the next at
        once; otherwise the relay waits ``interval`` seconds, or until :meth:`nudge`.

        A failed round is logged and counted, and retried; it never ends the loop.
        """
        while not stop_event.is_set():
            try:
                published = self.publish_pending(limit)
            except Exception:
                OUTBOX_FAILURES.inc()
                logger.exception("publishing the registry outbox failed; retrying")
                published = 0
            if published < limit:
                self._nudged.wait(interval)
                self._nudged.clear()
        if self._producer is not None:
            self._producer.flush(self.flush_timeout)

    def nudge(self) -> None:
        """Ask for a round now (after a change was committed)."""
        self._nudged.set()

    def start(self, interval: float = 1.0) -> tuple[threading.Thread, threading.Event]:
        """Run in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop, interval), name="outbox-relay", daemon=True
        )
        thread.start()
        return thread, stop

    # -- maintenance -----------------------------------------------------------------------

    def republish_all(self) -> int:
        """Write a fresh snapshot of every published entity to the outbox; the number.

        For a new topic, a topic that lost its data, or a database restored from a
        backup. The next rounds publish them; readers receive the same state again.
        """
        with transaction(self.sessions) as session:
            written = outbox.write_all(session)
        log_event(logger, "registry_outbox_republished", records=written)
        return written

    def pending(self) -> list[PendingTopic]:
        """What waits in the outbox, per topic."""
        with transaction(self.sessions) as session:
            rows = session.execute(
                sa.select(OutboxEntry.topic, sa.func.count(), sa.func.min(OutboxEntry.created_at))
                .where(OutboxEntry.published_at.is_(None))
                .group_by(OutboxEntry.topic)
                .order_by(OutboxEntry.topic)
            ).all()
        return [PendingTopic(topic, count, oldest) for topic, count, oldest in rows]
