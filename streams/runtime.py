"""What every stream processor of the platform shares: its Faust app and its serde.

A processor is one Faust app whose id starts with ``xietong.streams.`` (its consumer
group, and the prefix of the internal topics Faust creates for it: table changelogs,
repartition and timer topics, which ``svc-streams`` may create under that prefix). It is
made here from the one settings object, connects as ``svc-streams``, and gets:

* **co-partitioning with the rest of the platform.** Connectors produce with
  librdkafka, whose default partitioner puts a key in ``crc32(key) % partitions``;
  Faust's client would use murmur2. :func:`make_app` gives Faust the librdkafka
  partitioner, so a USCC lands in the same partition number of every USCC-keyed topic,
  whoever wrote it, and a table keyed by USCC is joined by looking it up.
* **partitions and replication from the settings** for every topic Faust declares.
* **the one serde path.** Records are Avro in the Confluent wire format, written by
  :class:`RecordWriter` and read by ``KafkaClients.avro_deserializer``, confluent-kafka's
  serializers from :class:`xietong.kafka.KafkaClients`; Faust itself only moves bytes.
* **reference data** (:class:`ReferenceData`): one of the registry's compacted topics
  held whole by every worker, following changes live.
* **no record skipped around a rebalance** (:class:`SeekingConsumer`): faust-streaming
  0.15 could drop records of its source topics while its tables recovered (a restart, a
  rebalance), and commit past them; its consumer is replaced by one that does not.
* **one processor shape**: its outputs sent through librdkafka (:class:`OutputProducer`,
  flushed before every Faust commit), one agent per input that hands each decoded record
  to the pure rules with the business clock's time (:func:`input_agent`), its due topic
  (:func:`due_topic`) and the settings every processor has (:class:`ProcessorSettings`);
  ``streams.departments.ProcessorApp`` puts them together with the inboxes.
* **a bounded stop** (:func:`run_faust_worker`): a worker ends within
  :data:`~xietong.processes.STOP_GRACE_SECONDS` of SIGTERM or SIGINT, broker or no
  broker.

Example::

    app = make_app(settings, "dual-notice")              # id xietong.streams.dual-notice
    items = ReferenceData(clients, REGISTRY_APPROVAL_ITEMS)
    items.load()                                         # then follows changes
    writer = RecordWriter(clients, DUAL_NOTICE_RECORD_TYPES["dual_notice_push"])
    await app.topic("dualnotice.pushes").send(key=b"9133…", value=writer.encode(push))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import faust
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from faust.transport import drivers
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from faust.types.auth import SASLMechanism
from prometheus_client import Counter, Histogram

from schemas import DEAD_LETTER_RECORD, RecordType
from streams.outputs import RuleOutput
from xietong.clock import DAY_MS, business_clock
from xietong.dead_letters import unreadable_message
from xietong.kafka import TLS_PROTOCOLS, KafkaClients, produce, security_config, ssl_context
from xietong.logs import dict_config, log_event
from xietong.processes import STOP_GRACE_SECONDS, exit_after
from xietong.settings import Settings
from xietong.topics import STREAMS_INTERNAL_TOPIC_PREFIX, TopicSpec

STREAMS_SERVICE = "streams"

# Table changes wait in a buffer for the producer. Past Faust's 100, every further
# change stops the stream until the buffer has drained, and logs a warning each time:
# under load most of a worker's time went there.
ProducerBuffer.max_messages = 10_000


def uscc_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner gives ``key`` (CRC-32 of the key)."""
    return zlib.crc32(key) % partitions


def _librdkafka_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    if key is None:  # librdkafka spreads unkeyed records; so may we
        return (available or all_partitions)[0]
    return all_partitions[uscc_partition(key, len(all_partitions))]


def broker_credentials(
    settings: Settings, service: str = STREAMS_SERVICE
) -> faust.types.auth.CredentialsT | None:
    """Faust's (aiokafka's) credentials from the same settings as every other client."""
    config = security_config(settings, service)
    protocol = config["security.protocol"]
    context = ssl_context(settings) if protocol in TLS_PROTOCOLS else None
    if not protocol.startswith("SASL"):
        return faust.SSLCredentials(context) if context else None
    return faust.SASLCredentials(
        username=config["sasl.username"],
        password=config["sasl.password"],
        mechanism=SASLMechanism(config["sasl.mechanism"]),
        ssl_context=context,
    )


# -- consuming: every record of a source partition is read, in order, before it is committed --


class SeekingConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """The aiokafka side of :class:`SeekingConsumer`, in the consumer's own thread."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        """Faust's consumer, reading only committed records.

        A batch of the HTTP ingest is one Kafka transaction, aborted when the platform
        fails it (the department is answered 5xx and sends it again): a processor must
        not act on the records of a batch that, for its sender, was never written.
        Faust asks aiokafka for ``read_committed`` only in its ``exactly_once`` mode,
        whose duplicate and recovery bugs we stay clear of, so the consumer it builds is
        set to it here, before it starts (aiokafka reads the setting in ``start``).
        The cost: a partition is held back while a transaction on it is open —
        milliseconds normally, up to the transaction timeout after an ingest crashed.
        """
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        return consumer

    async def getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Fetch from the partitions active now, and from no others.

        Faust hands over its live set of active partitions, which the worker's event
        loop keeps changing while the fetch waits here, in the consumer's thread; and
        aiokafka reads an empty set as *every assigned partition*. A fetch started while
        the tables recovered (only changelogs active) and still waiting when recovery
        paused them took the paused source partitions' records — up to
        ``broker_max_poll_records`` of each — and Faust threw them away as not active:
        the consumer's position was past them, so nothing read them again unless a
        committed offset was sought later (in the kill test, a restarted worker lost 73
        to 122 list entries of one partition this way). robinhood/faust#69 had once
        fixed the same race; faust-streaming 0.15 passes the live set again.
        """
        if active_partitions is None:  # a client-only app: no group, no pausing
            return await super().getmany(None, timeout)
        partitions = frozenset(active_partitions)
        if not partitions:
            return {}
        return await super().getmany(partitions, timeout)  # type: ignore[arg-type]

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed_or_start)

    async def _seek_to_committed_or_start(self) -> Mapping[TP, int]:
        """Every assigned source partition back to its committed offset or, with none
        (or 0, which aiokafka also leaves alone), to its first offset — where the group
        starts reading it (``consumer_auto_offset_reset`` is ``earliest``). Changelog
        partitions are the tables' recovery's to place."""
        consumer = self._ensure_consumer()
        committed: Mapping[TP, int] = await consumer.seek_to_committed()
        unsought = [
            tp
            for tp, offset in committed.items()
            if not offset and not self.consumer._is_changelog_tp(tp)
        ]
        if unsought:
            await consumer.seek_to_beginning(*unsought)
        return committed


class SeekingConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, with the seek it makes after every rebalance made before
    any record of a source partition is read.

    After a (re)assignment Faust recovers the tables, then *resumes* the source
    partitions and only then seeks them "to the committed offsets". Records fetched in
    between were processed from wherever the position was; once the seek had moved it
    back, those still to be handled set Faust's read position past the records fetched
    again, which it then dropped as already read (and counted as done: Faust takes a gap
    in the offsets it reads for compaction). Here a resumed source partition is held
    until the seek has placed it: at its committed offset, or at its first offset when
    it has none — aiokafka leaves a partition without one where it is, which may be past
    records fetched and dropped during the rebalance.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Source partitions Faust resumed, held until the next seek has placed them.
        self._unsought: set[TP] = set()
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> SeekingConsumerThread:
        return SeekingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        wanted = set(tps)
        sources = {tp for tp in wanted if not self._is_changelog_tp(tp)}
        self._unsought |= sources
        super().resume_partitions(wanted - sources)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        paused = set(tps)
        self._unsought -= paused
        super().pause_partitions(paused)

    async def perform_seek(self) -> None:
        waiting = set(self._unsought)
        await super().perform_seek()
        placed = waiting & self._unsought  # not paused again (a new rebalance) meanwhile
        self._unsought -= placed
        super().resume_partitions(placed)


class SeekingTransport(aiokafka_driver.Transport):
    Consumer = SeekingConsumer


#: The broker URL scheme of :class:`SeekingTransport` (Faust picks its transport by it).
BROKER_SCHEME = "kafka-seeking"
drivers.TRANSPORTS.aliases[BROKER_SCHEME] = f"{__name__}:SeekingTransport"


def make_app(settings: Settings, name: str, **overrides: Any) -> faust.App:
    """The Faust app ``xietong.streams.<name>`` of one processor.

    Its tables live in RocksDB under ``<home>/streams/<name>`` and are backed by their
    changelog topics: a restart reads only what the changelog gained since, a worker
    that takes over a partition rebuilds it from the changelog.
    """
    brokers = [
        f"{BROKER_SCHEME}://{server}" for server in settings.kafka_bootstrap_servers.split(",")
    ]
    datadir = settings.home / "streams" / name
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    config: dict[str, Any] = {
        "broker": brokers,
        "broker_credentials": broker_credentials(settings),
        "store": "rocksdb://",
        "processing_guarantee": "at_least_once",
        "topic_partitions": settings.uscc_partitions,
        "topic_replication_factor": settings.replication_factor,
        # Only needed for @app.timer(on_leader=True), which no processor uses.
        "topic_disable_leader": True,
        "producer_partitioner": _librdkafka_partitioner,
        "producer_acks": -1,
        "producer_linger": 0.005,  # a few ms of batching: far fewer requests under load
        "consumer_auto_offset_reset": "earliest",
        # A worker that died is noticed, and its partitions handed on, within 10 s (not
        # Faust's 60); heartbeats come from the consumer's own thread every 3 s.
        "broker_session_timeout": 10.0,
        # Small fetches: with Faust's 1 MB per partition, a record waited behind a
        # megabyte of others fetched before it (p50 1.4 s at 1,000 registrations/s,
        # 80 ms with these), and throughput did not gain from the big ones.
        "broker_max_poll_records": 200,
        "consumer_max_fetch_size": 64 * 1024,
        "web_enabled": False,
        "datadir": datadir,
        "key_serializer": "raw",
        "value_serializer": "raw",
        **overrides,
    }
    return faust.App(f"{STREAMS_INTERNAL_TOPIC_PREFIX}{name}", **config)


class BoundedStopWorker(faust.Worker):
    """A Faust worker that exits at most :data:`~xietong.processes.STOP_GRACE_SECONDS`
    after a stop signal.

    With the broker gone, faust-streaming 0.15 took over 60 s to stop: closing, aiokafka's
    fetcher re-raises the cancellation of a fetch waiting out its retry back-off, so
    Faust's consumer thread never reports that it has shut down, and mode waits its
    ``shutdown_timeout`` of 60 s for it (then a librdkafka flush may wait as long for
    acknowledgements that cannot come). Cutting that wait short loses nothing: offsets
    are committed only after what they cover was delivered, so whatever the stop could
    not commit is read again after the restart (at least once), and the tables' RocksDB
    keeps its write-ahead log.
    """

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        if not self._signal_stop_time:
            exit_after(STOP_GRACE_SECONDS, f"{self.app.conf.id}: {signal.name} received")
        super()._schedule_shutdown(signal)


def run_faust_worker(app: faust.App, loglevel: str) -> None:
    """Run a processor's Faust app as a worker until SIGTERM or SIGINT, and no longer
    than :data:`~xietong.processes.STOP_GRACE_SECONDS` after it."""
    worker = BoundedStopWorker(
        app, loglevel=loglevel, quiet=True, logging_config=dict_config(loglevel.upper())
    )
    # Faust's terminal spinner puts the root logger at DEBUG, so that every debug line of
    # Faust and aiokafka (several per record) is formatted, then thrown away.
    worker.spinner = None
    worker.execute_from_commandline()


def changelog_config(settings: Settings) -> dict[str, str]:
    """Extra configuration of a table's changelog topic (Faust sets compaction)."""
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


class DeclaredTopic(faust.Topic):
    """A platform topic declared in :mod:`xietong.topics`: Faust reads or writes it but
    never tries to create it (``xietong topics apply`` does, with its ACLs)."""

    async def maybe_declare(self) -> None:
        return None


def declared_topic(app: faust.App, spec: TopicSpec | str) -> DeclaredTopic:
    """A declared topic (or a department's, by name) carrying raw bytes."""
    name = spec if isinstance(spec, str) else spec.name
    return DeclaredTopic(app, topics=[name], key_serializer="raw", value_serializer="raw")


#: What a processor builds from a compacted topic's records (an index by code).
IndexT = TypeVar("IndexT")


class ReferenceData:
    """One of the registry's compacted topics, held whole by every worker: key → record.

    Read from the beginning when the worker starts (:meth:`load` returns once it holds
    everything the topic held then), then followed by a thread of its own, so a catalog
    change reaches the processor within a second and without a restart. A tombstone
    removes the key. ``version`` grows with every change: a reader that derives an index
    from :meth:`values` rebuilds it when the version moved.

    Why not a Faust GlobalTable: faust-streaming 0.15 assumes a global table's changelog
    is its own (it looks it up by the name it would have made) and, with one on a topic
    another service writes, a worker starting on a backlog lost a few records of its
    source topics at start (seen in the benchmark: a few of 20,000 registrations never
    reached the agent). This reader takes no part in Faust's recovery.
    """

    def __init__(self, clients: KafkaClients, spec: TopicSpec) -> None:
        self.clients = clients
        self.topic = spec.name
        self.version = 0
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def values(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records.values())

    def indexed(self, build: Callable[[list[dict[str, Any]]], IndexT]) -> Callable[[], IndexT]:
        """A function returning ``build(values())`` as the topic holds it now, built again
        only when the topic changed since (a catalog by code, the departments …)::

            catalog = approval_items.indexed(ApprovalCatalog)
            catalog().items_for(...)
        """
        built: list[tuple[int, IndexT]] = []

        def current() -> IndexT:
            version = self.version
            if not built or built[0][0] != version:
                built[:] = [(version, build(self.values()))]
            return built[0][1]

        return current

    def load(self, timeout: float = 60.0) -> None:
        """Read the topic to its current end, then follow it in the background."""
        consumer = self.clients.consumer(
            self.clients.group(f"reference-{uuid.uuid4().hex[:8]}"), **{"fetch.wait.max.ms": 200}
        )
        partitions = consumer.list_topics(self.topic, timeout=15).topics[self.topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=15)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        deserialize = self.clients.avro_deserializer()
        context = SerializationContext(self.topic, MessageField.VALUE)
        pending = {p: end for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                consumer.close()
                raise TimeoutError(f"{self.topic}: not read to its end in {timeout} s")
            for message in consumer.consume(1000, timeout=0.5):
                self._apply(message, deserialize, context)
                partition, offset = message.partition() or 0, message.offset() or 0
                if message.error() is None and offset + 1 >= pending.get(partition, 0):
                    pending.pop(partition, None)
        self._thread = threading.Thread(
            target=self._follow,
            args=(consumer, deserialize, context),
            name=f"reference {self.topic}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _follow(self, consumer: Any, deserialize: Any, context: SerializationContext) -> None:
        try:
            while not self._stop.is_set():
                for message in consumer.consume(100, timeout=0.5):
                    self._apply(message, deserialize, context)
        finally:
            consumer.close()

    def _apply(self, message: Any, deserialize: Any, context: SerializationContext) -> None:
        if message.error() is not None:
            return
        key = (message.key() or b"").decode()
        raw = message.value()
        record = None if raw is None else deserialize(raw, context)
        with self._lock:
            if record is None:
                self._records.pop(key, None)
            else:
                self._records[key] = record
            self.version += 1


class RecordWriter:
    """Encodes records of one :class:`~schemas.RecordType` in the Confluent wire format,
    under the record type's subject, whichever topic the bytes are then sent to (a
    department's inbox carries the same bytes as the platform topic)."""

    def __init__(self, clients: KafkaClients, record: RecordType) -> None:
        self.record = record
        subject = record.subject
        self._serialize = clients.avro_serializer(
            record.schema_str, **{"subject.name.strategy": lambda *_: subject}
        )
        self._context = SerializationContext(record.topic.name, MessageField.VALUE)
        self._registry = clients.schema_registry()  # the serializer's client, and its cache

    def check_registered(self) -> None:
        """Look the schema up now (a worker without its schemas fails at start, not at
        its first record); the answer is cached for every record after."""
        try:
            self._registry.lookup_schema(
                self.record.subject, Schema(self.record.schema_str, "AVRO")
            )
        except SchemaRegistryError as error:
            raise RuntimeError(
                f"{self.record.subject} does not hold schemas/avro/{self.record.schema_file}.avsc"
                f" ({error.error_message}): register the schemas with `xietong schemas register`"
            ) from error

    def encode(self, value: dict[str, Any]) -> bytes:
        encoded = self._serialize(value, self._context)
        assert encoded is not None
        return encoded


def unreadable_input(
    app_name: str, message: Any, record_type: str, error: Exception
) -> dict[str, Any]:
    """The dead letter of an input record a processor could not decode, kept whole."""
    return unreadable_message(
        connector=f"streams.{app_name}",
        source_system=f"xietong.streams.{app_name}",
        record_type=record_type,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        payload=message.value,
        code="avro.unreadable",
        message=f"not a readable {record_type}: {error}",
    )


# -- sending: librdkafka beside Faust, flushed before every commit ---------------------------


class OutputProducer:
    """The processor's outputs go through a confluent-kafka (librdkafka) producer rather
    than Faust's: a Faust send costs a hundred times more Python than handing a record to
    librdkafka, and a worker sends about two records (the platform topic, the inbox) for
    every input that tells anyone anything.

    At least once still holds: :meth:`attach` makes the Faust producer's ``flush`` — what
    Faust awaits before it commits offsets — flush this producer too, and a record that
    could not be delivered fails that flush, so its offset is not committed and the
    event is processed again after the restart.
    """

    def __init__(self, clients: KafkaClients) -> None:
        self._producer = clients.producer(**{"linger.ms": 5})
        self._failures: list[str] = []

    def produce(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Hand a record to librdkafka (``value`` None: a tombstone)."""
        produce(self._producer, topic, key=key, value=value, on_delivery=self._delivered)
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error.str()}")

    def flush(self) -> None:
        """Wait until every record handed over is acknowledged; fail if one was not."""
        left = self._producer.flush(60)
        if left or self._failures:
            failures, self._failures = self._failures, []
            raise KafkaException(
                f"{left} records not acknowledged in 60 s, {len(failures)} failed"
                f" ({'; '.join(failures[:3])}): offsets are not committed, the events"
                " will be processed again"
            )

    def attach(self, app: faust.App) -> None:
        """Make Faust's pre-commit flush flush this producer too."""
        faust_producer = app.producer
        faust_flush = faust_producer.flush

        async def flush_both() -> None:
            await faust_flush()
            await asyncio.to_thread(self.flush)

        faust_producer.flush = flush_both  # type: ignore[method-assign]


# -- one processor shape: what both processors' apps do around their rules ------------------


def processor_outputs(record_types: Mapping[str, RecordType]) -> dict[str, str]:
    """The platform topic of each of a processor's record types, and of its dead letters."""
    return {
        name: record.topic.name
        for name, record in {**record_types, "dead_letter": DEAD_LETTER_RECORD}.items()
    }


def record_writers(
    clients: KafkaClients, record_types: Mapping[str, RecordType]
) -> dict[str, RecordWriter]:
    """A writer for each of a processor's record types, and for its dead letters."""
    return {
        name: RecordWriter(clients, record)
        for name, record in {**record_types, "dead_letter": DEAD_LETTER_RECORD}.items()
    }


def due_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    """``<app id>-due``: what a processor's timers found due, sent to the entity's own
    partition (keyed by USCC) so that an agent makes the change in order with the rest."""
    return app.topic(
        f"{app.conf.id}-due",
        internal=True,
        partitions=settings.uscc_partitions,
        key_serializer="raw",
        value_serializer="json",
        retention=timedelta(days=7),
        config=changelog_config(settings),
    )


def create_due_topic(clients: KafkaClients, settings: Settings, topic: faust.TopicT) -> None:
    """Create the due topic now if it is missing: Faust would create it too, but its
    consumer, subscribed before, ignores a topic missing at start."""
    spec = NewTopic(
        topic.get_topic_name(),
        num_partitions=settings.uscc_partitions,
        replication_factor=settings.replication_factor,
        config={"retention.ms": str(7 * DAY_MS), **changelog_config(settings)},
    )
    admin = clients.admin()  # held until the futures are done: its handle serves them
    for future in admin.create_topics([spec], operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise


Rule = Callable[[dict[str, Any], int], RuleOutput]


def input_agent(
    app_name: str,
    record_type: str,
    rule: Rule,
    *,
    read: Callable[[bytes | None, None], Any],
    send: Callable[[RuleOutput], None],
    unreadable: Counter,
    timer: Histogram | None = None,
) -> Callable[[faust.StreamT], Awaitable[None]]:
    """A Faust agent for one input: decode each record, apply ``rule`` with the business
    clock's time, ``send`` what it returns.

    An unreadable record is kept whole on the dead-letter topic, never dropped, and
    counted on ``unreadable`` (a Prometheus counter child); ``timer`` (a histogram child),
    if given, times each record from reading to handing its outputs over.
    """
    clock = business_clock()
    logger = logging.getLogger(f"streams.{app_name}")

    def handle(message: Any) -> None:
        try:
            # No context: the writer's schema comes with the record, and the platform's
            # schemas carry no data-contract rules to run (a fifth of the decoding time).
            record = read(message.value, None)
            if not isinstance(record, dict):
                raise TypeError(f"{type(record).__name__}, not a record")
        except Exception as error:
            unreadable.inc()
            log_event(
                logger,
                f"{app_name.replace('-', '_')}_unreadable_input",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                error=str(error),
            )
            output = RuleOutput()
            output.send(
                "dead_letter",
                f"xietong.streams.{app_name}",
                unreadable_input(app_name, message, record_type, error),
            )
            send(output)
            return
        send(rule(record, clock.now_ms()))

    async def agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            with timer.time() if timer is not None else contextlib.nullcontext():
                handle(event.message)

    agent.__name__ = f"{record_type}_agent"
    return agent
