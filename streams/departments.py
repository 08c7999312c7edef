"""The processors' side of the departments' own topics: their inboxes and inbound topics.

Every onboarded department has ``dept.<code>.inbox`` (the platform delivers to it) and
``dept.<code>.inbound`` (only the department may write it: the broker checks its
principal). What serves every processor here:

* :class:`Inboxes` — which inboxes exist now (a department not onboarded yet has none);
* :class:`OutputSender` — how a processor sends what its rules return: to the platform
  topic, and to the inboxes that exist (a department without one is counted and logged);
* :class:`ProcessorApp` — what both processors' Faust apps are made of around that
  (clients, app, sender, due topic) and how their workers start;
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
import functools
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import faust
import mode
from confluent_kafka import KafkaError, Message, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import Counter, Histogram

from schemas import RecordType
from streams.outputs import Outgoing, RuleOutput
from streams.runtime import (
    OutputProducer,
    RecordWriter,
    Rule,
    create_due_topic,
    declared_topic,
    due_topic,
    input_agent,
    make_app,
    processor_outputs,
    record_writers,
    run_faust_worker,
)
from streams.settings import ProcessorSettings
from xietong.ids import deterministic_id
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.topics import DepartmentTopic

logger = logging.getLogger(__name__)

#: Every department's inbound topic, as a pattern librdkafka subscribes to.
INBOUND_PATTERN = DepartmentTopic.INBOUND.pattern()


@dataclass(frozen=True)
class ProcessorTopics:
    """The topics of one run of a processor: the declarations of :mod:`xietong.topics`,
    or the benchmark's own. Each processor's subclass names its app and its inputs; here
    is the departments' side, and where the outputs go when not where :mod:`schemas`
    declares them."""

    #: The Faust app's name: its id is ``xietong.streams.<app_name>``.
    app_name: str = ""
    #: One topic standing for every department's inbox (the benchmarks'), else none.
    inbox: str | None = None
    #: Every department's inbound topic (a regular expression, as librdkafka takes it).
    inbound_pattern: str = INBOUND_PATTERN
    #: The platform topic of each record type the processor sends, where it is not the
    #: one :mod:`schemas` declares for it (the benchmarks').
    outputs: dict[str, str] = field(default_factory=dict)


class Inboxes:
    """The departments' inboxes that exist, listed from the broker.

    ``single`` names one topic standing for every inbox (the benchmarks' sink).
    """

    def __init__(self, clients: KafkaClients, single: str | None = None) -> None:
        self.single = single
        self._admin = clients.admin()
        self._names: set[str] | None = None

    def exists(self, department: str) -> bool:
        if self.single is not None:
            return True
        if self._names is None:
            self._names = self._list()
        return DepartmentTopic.inbox(department) in self._names

    def name(self, department: str) -> str:
        """The name of the department's inbox topic (whether it exists or not)."""
        return self.single or DepartmentTopic.inbox(department)

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


# -- sending a rule's outputs: the platform topic, and the inboxes that exist --------------


@functools.cache
def undelivered_counter(processor: str) -> Counter:
    """``xietong_<processor>_undelivered``: the processor's records for a department that
    has no inbox yet, by record type."""
    return Counter(
        f"xietong_{processor}_undelivered",
        "Records for a department that has no inbox yet (not onboarded), by record type",
        ("record_type",),
    )


class OutputSender:
    """What both processors do with what their rules return: each record to its platform
    topic and to the inboxes it names, through one librdkafka
    :class:`~streams.runtime.OutputProducer` flushed before every Faust commit.

    A department that has no inbox yet (not onboarded) is not written to: the record is
    counted on ``xietong_<processor>_undelivered`` (by record type), the department
    logged once until :meth:`refresh` finds its inbox, and the record stays on the
    platform topic; the rules keep what must reach the department later (a 双告知 push
    waits for it).
    """

    def __init__(
        self,
        clients: KafkaClients,
        topics: ProcessorTopics,
        record_types: Mapping[str, RecordType],
        *,
        log_name: str,
        note: str,
    ) -> None:
        self.output = OutputProducer(clients)
        self.inboxes = Inboxes(clients, topics.inbox)
        #: The platform topic of each record type: the run's own, else the declared ones.
        self.topics = topics.outputs or processor_outputs(record_types)
        self.writers = record_writers(clients, record_types)
        self.undelivered = undelivered_counter(log_name)
        self.log_name = log_name
        self.note = note
        self._without_inbox: set[str] = set()

    def attach(self, app: faust.App) -> None:
        """Make Faust's pre-commit flush wait for what was sent (at least once)."""
        self.output.attach(app)

    def send(self, out: Outgoing) -> None:
        key = out.key.encode()
        if out.tombstone:
            self.output.produce(self.topics[out.record_type], key, None)
            return
        value = self.writers[out.record_type].encode(out.value)
        self.output.produce(self.topics[out.record_type], key, value)
        for department in out.inboxes:
            if self.inboxes.exists(department):
                self.output.produce(self.inboxes.name(department), key, value)
                continue
            self.undelivered.labels(out.record_type).inc()
            if department not in self._without_inbox:
                self._without_inbox.add(department)
                log_event(
                    logger,
                    f"{self.log_name}_inbox_missing",
                    department=department,
                    record_type=out.record_type,
                    uscc=out.key,
                    note=self.note,
                )

    def check(self) -> None:
        """Before the first event: list the inboxes that exist, and check that every
        record type's schema is registered."""
        self.inboxes.exists("")
        for writer in self.writers.values():
            writer.check_registered()

    async def refresh(self) -> set[str]:
        """List the inboxes again; the departments whose inbox is new (onboarded since)."""
        new = await self.inboxes.refresh()
        if new:
            log_event(logger, f"{self.log_name}_inboxes_found", departments=sorted(new))
            self._without_inbox -= new
        return new


SettingsT = TypeVar("SettingsT", bound=ProcessorSettings)
TopicsT = TypeVar("TopicsT", bound=ProcessorTopics)


# -- the processor's app: what both processors are made of ---------------------------------


class ProcessorApp(ABC, Generic[SettingsT, TopicsT]):
    """The parts every processor's Faust app has: its settings and Kafka clients, the app,
    the :class:`OutputSender` of what its rules return, the internal due topic
    (``<app id>-due``: what its timers found due, sent to the entity's own partition so
    that an agent makes the change in order with the rest), and how a worker starts.

    A processor names itself, its record types, settings and topics (class attributes),
    and declares its tables, agents, timers and relay (:meth:`declare`) and what it loads
    before the first event (:meth:`load`).
    """

    #: The processor's name (``dual-notice`` …): in its dead letters and log events.
    name: ClassVar[str]
    record_types: ClassVar[Mapping[str, RecordType]]
    settings_type: type[SettingsT]
    topics_type: type[TopicsT]
    #: What the log says of a record for a department without an inbox.
    inbox_missing: ClassVar[str]

    def __init__(
        self, settings: Settings, rules: SettingsT | None = None, topics: TopicsT | None = None
    ) -> None:
        self.settings = settings
        self.rules_settings: SettingsT = rules or self.settings_type()
        self.topics: TopicsT = topics or self.topics_type()
        self.clients = KafkaClients(settings, "streams")
        self.app = make_app(settings, self.topics.app_name)
        self.sender = OutputSender(
            self.clients,
            self.topics,
            self.record_types,
            log_name=self.log_name,
            note=self.inbox_missing,
        )
        self.inboxes = self.sender.inboxes
        self.due_topic = due_topic(self.app, settings)
        self._read = self.clients.avro_deserializer()
        self.declare()

    @abstractmethod
    def declare(self) -> None:
        """Declare the processor's tables, agents, timers and relay on :attr:`app`."""

    @property
    def log_name(self) -> str:
        return self.name.replace("-", "_")

    def read_input(
        self,
        name: str,
        topic: str,
        record_type: str,
        rule: Rule,
        *,
        unreadable: Counter,
        timer: Histogram | None = None,
    ) -> None:
        """An agent ``name`` reading ``record_type`` records from ``topic``: each goes to
        ``rule`` with the clock's time, and what it returns to :meth:`send`
        (:func:`streams.runtime.input_agent`)."""
        agent = input_agent(
            self.name,
            record_type,
            rule,
            read=self._read,
            send=self.send,
            unreadable=unreadable,
            timer=timer,
        )
        self.app.agent(declared_topic(self.app, topic), name=name)(agent)

    @abstractmethod
    def send(self, output: RuleOutput) -> None:
        """Send what the rules returned (through :attr:`sender`), and note what it starts."""

    def writers(self) -> list[RecordWriter]:
        """Every kind of record the processor writes, with its schema."""
        return list(self.sender.writers.values())

    @abstractmethod
    def load(self) -> dict[str, int]:
        """Before the first event: load the reference data the rules read; how many of
        each there are, for the log."""

    @classmethod
    def run_worker(
        cls,
        settings: Settings,
        rules: SettingsT | None = None,
        loglevel: str = "info",
        topics: TopicsT | None = None,
    ) -> None:
        """Run one worker until SIGTERM or SIGINT (``xietong streams <name>``)."""
        from xietong.logs import configure

        configure()
        cls(settings, rules, topics).run(loglevel)

    def run(self, loglevel: str = "info") -> None:
        """Run this worker until SIGTERM or SIGINT: nothing is decided before the reference
        data is whole, every schema registered and the due topic there."""
        from prometheus_client import start_http_server

        log_event(logger, f"{self.log_name}_starting", app=self.app.conf.id)
        loaded = self.load()
        self.sender.check()
        create_due_topic(self.clients, self.settings, self.due_topic)
        log_event(logger, f"{self.log_name}_reference_data_loaded", **loaded)
        if self.rules_settings.metrics_port:
            start_http_server(self.rules_settings.metrics_port)
        run_faust_worker(self.app, loglevel)
