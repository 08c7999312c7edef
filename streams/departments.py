"""The processors' side of the departments' own topics: their inboxes and inbound topics.

Every onboarded department has ``dept.<code>.inbox`` (the platform delivers to it) and
``dept.<code>.inbound`` (only the department may write it: the broker checks its
principal). Two things here serve every processor:

* :class:`Inboxes` — which inboxes exist now (a department not onboarded yet has none),
  and the Faust topic of each, made once;
* :class:`InboundRelay` — reads every department's inbound topic and forwards the
  records of one schema (a 双告知 action, a 反馈 on a restriction hit …), stamped with the
  department the topic names and where the record was read, re-keyed by the entity's
  USCC onto a platform topic, so that the agent holding the entity's state reads it in
  order with everything else about the entity. Records of other schemas are other
  processors' business and pass by; unreadable ones are rejected with the reason.

Example (the joint-punishment processor's feedback)::

    relay = InboundRelay(
        clients,
        group=clients.group("joint-punishment-inbound"),
        record_name="cn.gov.xietong.punishment.RestrictionFeedback",
        forward=lambda stamp, feedback: ("punishment.feedback", feedback["uscc"], {...}),
        reject=lambda stamp, raw, error: ("platform.dead-letter", stamp["department_code"], {...}),
    )
    await app.add_runtime_dependency(relay)
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import faust
import mode
from confluent_kafka import KafkaError, Message, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.runtime import DeclaredTopic, RecordWriter, declared_topic
from xietong.ids import deterministic_id
from xietong.kafka import KafkaClients
from xietong.topics import DepartmentTopic

logger = logging.getLogger(__name__)

#: Every department's inbound topic, as a pattern librdkafka subscribes to.
INBOUND_PATTERN = DepartmentTopic.INBOUND.pattern()


class Inboxes:
    """The departments' inboxes that exist, listed from the broker, and their topics.

    ``single`` names one topic standing for every inbox (the benchmarks' sink).
    """

    def __init__(self, app: faust.App, clients: KafkaClients, single: str | None = None) -> None:
        self.app = app
        self.single = single
        self._admin = clients.admin()
        self._names: set[str] | None = None
        self._topics: dict[str, DeclaredTopic] = {}

    def exists(self, department: str) -> bool:
        if self.single is not None:
            return True
        if self._names is None:
            self._names = self._list()
        return DepartmentTopic.inbox(department) in self._names

    def name(self, department: str) -> str:
        """The name of the department's inbox topic (whether it exists or not)."""
        return self.single or DepartmentTopic.inbox(department)

    def topic(self, department: str) -> DeclaredTopic | None:
        """The department's inbox, or None while it has none (not onboarded yet)."""
        if not self.exists(department):
            return None
        name = self.name(department)
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = declared_topic(self.app, name)
        return topic

    async def refresh(self) -> set[str]:
        """List the inboxes again; the codes of the departments whose inbox is new."""
        if self.single is not None:
            return set()
        before = self._names
        self._names = await asyncio.to_thread(self._list)
        if before is None:
            return set()
        return {DepartmentTopic.INBOX.code_of(name) or "" for name in self._names - before}

    def _list(self) -> set[str]:
        topics = self._admin.list_topics(timeout=15).topics
        return {name for name in topics if DepartmentTopic.INBOX.code_of(name)}


def received_stamp(message: Message, id_prefix: str = "inbound") -> dict[str, Any] | None:
    """Who wrote an inbound record and where it was read; None if the topic is not a
    department's inbound topic. ``received_id`` is uuid5 of the prefix, topic, partition
    and offset."""
    topic = message.topic() or ""
    department = DepartmentTopic.INBOUND.code_of(topic)
    if department is None:
        return None
    partition, offset = message.partition() or 0, message.offset() or 0
    return {
        "received_id": deterministic_id(f"{id_prefix}|{topic}|{partition}|{offset}"),
        "department_code": department,
        "inbound_topic": topic,
        "inbound_partition": partition,
        "inbound_offset": offset,
        "received_at": message.timestamp()[1],
    }


#: (topic, key, record) to produce, and the writer that encodes the record.
Produced = tuple[str, str, dict[str, Any], RecordWriter]


class InboundRelay(mode.Service):
    """Forwards the records of one schema from every department's inbound topic.

    ``forward(stamp, record)`` says where a readable record goes (usually a platform
    topic keyed by the record's USCC, the record inside the stamp); ``reject(stamp, raw,
    error)`` where an unreadable one goes, with the reason. The inbound topics are found
    by pattern, so a department onboarded later is read within ``refresh_interval``
    seconds. Offsets are committed after the broker acknowledged everything their records
    produced: at least once, and the receiver applies a department's record id once.
    """

    def __init__(
        self,
        clients: KafkaClients,
        *,
        group: str,
        record_name: str,
        forward: Callable[[dict[str, Any], dict[str, Any]], Produced],
        reject: Callable[[dict[str, Any], bytes, Exception], Produced],
        refresh_interval: float = 30.0,
        pattern: str = INBOUND_PATTERN,
        id_prefix: str = "inbound",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clients = clients
        self.group = group
        self.record_name = record_name
        self.forward = forward
        self.reject = reject
        self.refresh_interval = refresh_interval
        self.pattern = pattern
        self.id_prefix = id_prefix
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._schemas: dict[int, bool] = {}
        self._reported: set[str] = set()

    async def on_start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"inbound {self.record_name}", daemon=True
        )
        self._thread.start()

    async def on_stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 15)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._relay()
            except Exception:
                logger.exception("relaying %s failed; retrying in 5 s", self.record_name)
                self._stopping.wait(5)

    def _relay(self) -> None:
        clients = self.clients
        consumer = clients.consumer(
            self.group,
            **{
                "topic.metadata.refresh.interval.ms": int(self.refresh_interval * 1000),
                # As the Faust apps': a dead worker's share is taken over within 10 s.
                "session.timeout.ms": 10_000,
            },
        )
        producer = clients.producer(**{"linger.ms": 5})
        deserialize = clients.avro_deserializer()
        consumer.subscribe([self.pattern])
        try:
            while not self._stopping.is_set():
                messages = consumer.consume(500, timeout=0.5)
                failures: list[str] = []
                read = produced = 0
                for message in messages:
                    error = message.error()
                    if error is None:
                        read += 1
                        produced += self._pass_on(message, deserialize, producer, failures)
                    elif error.str() not in self._reported:
                        # e.g. no department onboarded yet: nothing matches the pattern
                        self._reported.add(error.str())
                        logger.warning("reading the inbound topics: %s", error.str())
                if not read:
                    continue
                if produced:
                    producer.flush(30)
                if failures:
                    # Not acknowledged: read them again from the last commit.
                    logger.error("%s not relayed, will retry: %s", self.record_name, failures[0])
                    for tp in consumer.committed(consumer.assignment(), timeout=10):
                        consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
                    continue
                consumer.commit(asynchronous=False)
        finally:
            producer.flush(30)
            consumer.close()

    def _pass_on(
        self, message: Message, deserialize: Any, producer: Any, failures: list[str]
    ) -> int:
        stamp = received_stamp(message, self.id_prefix)
        raw = message.value()
        if stamp is None or raw is None:
            return 0

        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                failures.append(f"{stamp['inbound_topic']}@{stamp['inbound_offset']}: {error}")

        try:
            if not self._is_mine(raw):
                return 0
            context = SerializationContext(stamp["inbound_topic"], MessageField.VALUE)
            record = deserialize(raw, context)
            assert isinstance(record, dict), f"{type(record).__name__}, not a record"
            topic, key, value, writer = self.forward(stamp, record)
        except Exception as error:
            topic, key, value, writer = self.reject(stamp, raw, error)
        producer.produce(topic, key=key.encode(), value=writer.encode(value), on_delivery=delivered)
        producer.poll(0)
        return 1

    def _is_mine(self, raw: bytes) -> bool:
        """Whether the writer's schema is this relay's record (others pass by)."""
        if len(raw) < 5 or raw[0] != 0:
            raise ValueError("no Confluent wire-format header (magic byte 0, schema id)")
        schema_id = int.from_bytes(raw[1:5], "big")
        known = self._schemas.get(schema_id)
        if known is None:
            schema = self.clients.schema_registry().get_schema(schema_id)
            parsed = json.loads(schema.schema_str or "{}")
            name = parsed.get("name", "") if isinstance(parsed, dict) else ""
            if "." not in name and isinstance(parsed, dict) and parsed.get("namespace"):
                name = f"{parsed['namespace']}.{name}"
            known = self._schemas[schema_id] = name == self.record_name
        return known
