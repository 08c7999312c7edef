"""The credit sink: every canonical and derived topic into the credit database.

Lifecycle (``xietong sink run``, as principal ``svc-sink``):

1. :meth:`CreditSink.start` migrates the database and loads (or makes) the platform's
   signing key;
2. :meth:`CreditSink.run` assigns itself every partition of the mapped topics and of
   every department inbox (inboxes made later are found within
   ``topic_refresh_interval``), each *at the offset stored in the database*
   (``sink_offsets``) — no consumer group, no committed offsets: a restart after
   ``kill -9`` resumes at once — then, batch after batch, decodes the messages and
   writes rows, log entries and offsets in one transaction (:mod:`.writer`), until
   :meth:`stop`. One sink process serves a credit database;
3. :meth:`CreditSink.backfill` reads a fixed range instead — from the stored offsets,
   from the beginning, or from a moment — to the end each partition had when it began,
   with the same writer, so a rebuilt database equals the live one.

A message that cannot be read (not Avro, a record type without a table) goes to
``platform.dead-letter`` with its reason, and its offset is stored like any other.

Example::

    sink = CreditSink(get_settings())
    sink.start()
    sink.run()           # until sink.stop() (SIGTERM in the CLI)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.sink import db
from connectors.sink.chain import Appender, load_or_create_key
from connectors.sink.decode import Decoder, UnreadableRecord
from connectors.sink.tables import (
    TABLES_BY_RECORD,
    TABLES_BY_TOPIC,
    Delivery,
    TableMapping,
)
from connectors.sink.writer import Batch, BatchWriter, Written, stored_offsets
from schemas import DEAD_LETTER_RECORD
from xietong.dead_letters import unreadable_message
from xietong.kafka import KafkaClients
from xietong.logs import log_event, log_warning
from xietong.settings import Settings
from xietong.topics import DEAD_LETTER, DepartmentTopic

logger = logging.getLogger("connectors.sink")

SINK_SERVICE = "sink"


class SinkSettings(BaseSettings):
    """The sink's settings, ``XIETONG_SINK_*``."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_SINK_", extra="ignore")

    batch_size: int = Field(default=5000, description="Most messages written per transaction.")
    batch_wait: float = Field(
        default=0.5, description="Longest wait (s) for a batch to fill before writing it."
    )
    metrics_port: int | None = Field(
        default=9466, description="Port of the Prometheus /metrics endpoint; unset: none."
    )
    audit_key: Path | None = Field(
        default=None,
        description="The platform's Ed25519 signing key (PEM); default <home>/audit/"
        "platform-ed25519.pem, made on first use with its public key beside it.",
    )
    topic_refresh_interval: float = Field(
        default=10.0, description="How often (s) new department inboxes are looked for."
    )
    lag_interval: float = Field(default=10.0, description="How often (s) the lag is measured.")

    def audit_key_path(self, settings: Settings) -> Path:
        return self.audit_key or settings.home / "audit" / "platform-ed25519.pem"


# -- metrics ----------------------------------------------------------------------------------

ROWS_WRITTEN = Counter(
    "xietong_sink_rows_written", "Rows inserted or updated in the credit database", ["table"]
)
BATCHES = Counter("xietong_sink_batches", "Batches committed to the credit database")
BATCH_SECONDS = Histogram(
    "xietong_sink_batch_seconds",
    "Time to write one batch (rows, log entries and offsets, one transaction)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGES = Counter("xietong_sink_messages", "Messages read by the sink", ["topic"])
DATABASE_UP = Gauge(
    "xietong_sink_database_up", "1 while the credit database takes the sink's writes, else 0"
)
DATABASE_RECONNECTS = Counter(
    "xietong_sink_database_reconnects",
    "Times the sink lost the credit database and connected again (with back-off)",
)
#: Back-off between two attempts to reach the credit database again: doubles, with jitter,
#: up to this many seconds.
RECONNECT_BACKOFF_MAX = 30.0
LOST_CONNECTION = (psycopg2.OperationalError, psycopg2.InterfaceError)
ERRORS = Counter("xietong_sink_errors", "Messages the sink could not store, by reason", ["reason"])
# Every reason is exported from the start (at 0), so that a dashboard and an alert see the
# series before the first error rather than "no data".
for _reason in ("lag_unmeasured", "kafka", "unreadable"):
    ERRORS.labels(_reason)
AUDIT_ENTRIES = Counter(
    "xietong_sink_audit_entries", "Entries appended to the tamper-evident log", ["kind"]
)
LAG = Gauge("xietong_sink_lag", "Messages not yet in the database", ["topic", "partition"])


@dataclass
class Progress:
    """What a run or a backfill has done so far."""

    messages: int = 0
    batches: int = 0
    dead_lettered: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    def count(self, batch: Batch, written: Written) -> None:
        self.messages += batch.messages
        self.batches += 1
        for table, n in written.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n


class WriterThread:
    """Writes batches on a thread of its own, one at a time and in order, while the next
    batch is read and decoded (PostgreSQL works on the other core meanwhile). At most
    one batch waits; an error in the thread is raised again in the caller."""

    def __init__(self, write: Callable[[Batch, Progress], None]) -> None:
        self._write = write
        self._queue: queue.Queue[tuple[Batch, Progress] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="sink-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._write(*item)
            except BaseException as error:
                self._error = error
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError("the credit sink could not write a batch") from self._error

    def put(self, batch: Batch, progress: Progress) -> None:
        while True:
            self._raise()
            try:
                self._queue.put((batch, progress), timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Write what waits, then end the thread."""
        if self._thread.is_alive():
            while self._error is None:
                try:
                    self._queue.put(None, timeout=0.5)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        self._raise()


class CreditSink:
    """Reads the platform's topics into the credit database, effectively once."""

    def __init__(
        self,
        settings: Settings,
        sink_settings: SinkSettings | None = None,
        database_url: str | None = None,
        clients: KafkaClients | None = None,
        topics: Mapping[str, TableMapping] | None = None,
        inboxes: bool = True,
    ) -> None:
        """``topics`` maps each topic read to its table (default: every platform topic,
        :data:`~connectors.sink.tables.TABLES_BY_TOPIC`); ``inboxes``: read every
        department's inbox too. A benchmark reads topics of its own this way."""
        self.topics = TABLES_BY_TOPIC if topics is None else topics
        self.inboxes = inboxes
        self.settings = settings
        self.options = sink_settings or SinkSettings()
        self.database_url = database_url or settings.credit_database_url
        self.clients = clients or KafkaClients(settings, SINK_SERVICE)
        self.decoder = Decoder(self.clients)
        self._stop = threading.Event()
        self._conn: Any = None
        self._lookups: Any = None  # offsets are looked up beside the writer's transaction
        self._writer: BatchWriter | None = None
        self._thread: WriterThread | None = None
        self._producer: Any = None
        self._dead_letter_serialize: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate the database and open the connection; call before run or backfill."""
        db.migrate(self.database_url)
        self._appender = Appender(load_or_create_key(self.options.audit_key_path(self.settings)))
        self._conn = db.connect(self.database_url)
        self._lookups = db.connect(self.database_url)
        self._writer = BatchWriter(self._conn, self._appender)
        DATABASE_UP.set(1)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand (safe from a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(30)
        for conn in (self._conn, self._lookups):
            if conn is not None:
                conn.close()

    # -- live -----------------------------------------------------------------------------

    def run(self, ready: Callable[[], None] | None = None) -> Progress:
        """Follow the topics until :meth:`stop`; what was done."""
        progress = Progress()
        consumer = self.clients.consumer(self.clients.group("credit"), **{"fetch.wait.max.ms": 100})
        assigned: set[tuple[str, int]] = set()
        self._assign_new(consumer, assigned)
        log_event(logger, "sink_ready", database=self._database_name(), topics=sorted(self.topics))
        if ready is not None:
            ready()
        next_lag = next_refresh = time.monotonic()
        self._thread = WriterThread(self._commit)
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.options.batch_size, self.options.batch_wait)
                if messages:
                    self._write(messages, progress)
                now = time.monotonic()
                if now >= next_refresh:
                    self._assign_new(consumer, assigned)
                    next_refresh = now + self.options.topic_refresh_interval
                if now >= next_lag:
                    self._measure_lag(consumer)
                    next_lag = now + self.options.lag_interval
        finally:
            try:
                self._thread.close()
            finally:
                self._thread = None
                consumer.close()
        log_event(logger, "sink_stopped", messages=progress.messages, batches=progress.batches)
        return progress

    def _assign_new(self, consumer: Consumer, assigned: set[tuple[str, int]]) -> None:
        """Assign the partitions not yet assigned (a new inbox, say), each at the offset
        the database stored for it, or at its beginning."""
        new = [key for key in self._partitions(consumer) if key not in assigned]
        if not new:
            return
        if self._lookups is None:  # lost, and not yet connected again
            self._lookups = self._connect_quietly(None)
            if self._lookups is None:
                return
        try:
            stored = stored_offsets(self._lookups, new)
        except LOST_CONNECTION as error:
            # assigned at the next refresh, once the database answers again
            error_text = str(error).strip()
            log_warning(logger, "sink_database_unavailable", error=error_text, step="assign")
            self._lookups = self._connect_quietly(self._lookups)
            return
        consumer.incremental_assign(
            [TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING)) for t, p in new]
        )
        assigned.update(new)
        log_event(
            logger,
            "sink_assigned",
            partitions={f"{t}/{p}": stored.get((t, p), "beginning") for t, p in new},
        )

    def _measure_lag(self, consumer: Consumer) -> None:
        """Lag per partition: the high watermark of the last fetch (cached by the client:
        asking the broker for every partition stalls the loop) less the position."""
        try:
            assigned = consumer.assignment()
            if not assigned:
                return
            for position in consumer.position(assigned):
                _, high = consumer.get_watermark_offsets(position, cached=True)
                if high < 0 or position.offset < 0:
                    continue  # nothing fetched from it yet
                LAG.labels(position.topic, str(position.partition)).set(
                    max(high - position.offset, 0)
                )
        except Exception as error:  # measuring must never stop the sink
            ERRORS.labels("lag_unmeasured").inc()
            log_event(logger, "sink_lag_unmeasured", error=str(error))

    # -- one batch ------------------------------------------------------------------------

    def _write(self, messages: list[Message], progress: Progress) -> None:
        """Decode a batch here, write it on the writer thread (or here, without one)."""
        dead_lettered = progress.dead_lettered
        batch = self.assemble(messages, progress)
        if progress.dead_lettered > dead_lettered:
            # The dead letters are durable before their offsets are.
            self._producer.flush(30)
        if self._thread is not None:
            self._thread.put(batch, progress)
        else:
            self._commit(batch, progress)

    def _commit(self, batch: Batch, progress: Progress) -> None:
        """Write one batch (one transaction), count it and log it."""
        assert self._writer is not None
        started = time.perf_counter()
        written = self._write_until_written(batch)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        BATCHES.inc()
        progress.count(batch, written)
        for topic, n in batch.read.items():
            MESSAGES.labels(topic).inc(n)
        for table, n in written.rows.items():
            ROWS_WRITTEN.labels(table).inc(n)
        for entry in written.entries:
            AUDIT_ENTRIES.labels(entry.kind).inc()
            log_event(
                logger,
                "sink_audit_appended",
                kind=entry.kind,
                event_id=entry.event_id,
                uscc=entry.uscc,
                department=entry.department_code,
                chain=entry.chain,
                position=entry.position,
            )
        log_event(
            logger,
            "sink_batch_written",
            messages=batch.messages,
            rows=written.rows,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _write_until_written(self, batch: Batch) -> Written:
        """Write the batch, reconnecting with back-off while the database is unreachable
        (a PostgreSQL restart, a fail-over): the write is idempotent, so a batch whose
        commit was cut off is written again unchanged. Gives up only when stopped (what
        it held is read again from the stored offsets after the restart)."""
        assert self._writer is not None
        attempt, delay = 0, 0.5
        while True:
            try:
                written = self._writer.write(batch)
            except LOST_CONNECTION as error:
                attempt += 1
                DATABASE_UP.set(0)
                log_warning(
                    logger,
                    "sink_database_unavailable",
                    error=str(error).strip(),
                    step="write",
                    attempt=attempt,
                    retry_in_seconds=round(delay, 2),
                )
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, RECONNECT_BACKOFF_MAX) * random.uniform(0.8, 1.2)
                connection = self._connect_quietly(self._conn)
                if connection is not None:
                    self._conn = connection
                    # a new session has none of the old one's staging tables
                    self._writer = BatchWriter(connection, self._appender)
                continue
            if attempt:
                DATABASE_UP.set(1)
                DATABASE_RECONNECTS.inc()
                log_event(logger, "sink_database_reconnected", attempts=attempt)
            return written

    def _connect_quietly(self, old: Any) -> Any:
        """A new connection in place of ``old`` (closed), or None while none can be made."""
        with contextlib.suppress(Exception):  # it is gone either way
            old.close()
        try:
            return db.connect(self.database_url)
        except LOST_CONNECTION:
            return None

    def assemble(self, messages: Iterable[Message], progress: Progress) -> Batch:
        """Decode messages into a batch; unreadable ones are dead-lettered."""
        batch = Batch()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    ERRORS.labels("kafka").inc()
                    log_event(logger, "sink_kafka_error", error=str(error))
                continue
            topic = message.topic() or ""
            partition = message.partition() or 0
            offset = message.offset() or 0
            try:
                name, record = self.decoder.decode(message.value())
                mapping = self.topics.get(topic)
                if mapping is not None:
                    if name != mapping.record_name:
                        raise UnreadableRecord(f"{topic} carries {mapping.record_name}, not {name}")
                    batch.add(topic, partition, offset, mapping, record)
                    continue
                department = DepartmentTopic.INBOX.code_of(topic)
                mapping = TABLES_BY_RECORD.get(name)
                if department is None or mapping is None:
                    raise UnreadableRecord(
                        f"the credit database has no table for {name} (read from {topic}):"
                        " add a mapping in connectors/sink/tables.py"
                    )
                stamp = message.timestamp()[1]
                delivered = dt.datetime.fromtimestamp(stamp / 1000, dt.UTC)
                batch.add_delivery(
                    topic, partition, offset, Delivery(department, mapping, record, delivered)
                )
            except (UnreadableRecord, KeyError, TypeError, ValueError) as problem:
                self._dead_letter(message, problem)
                progress.dead_lettered += 1
                batch.advance(topic, partition, offset)
        return batch

    def _dead_letter(self, message: Message, problem: Exception) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        reason = problem.args[0] if problem.args else repr(problem)
        ERRORS.labels("unreadable").inc()
        log_event(
            logger,
            "sink_dead_lettered",
            topic=topic,
            partition=partition,
            offset=offset,
            reason=str(reason),
        )
        if self._producer is None:
            from confluent_kafka.serialization import MessageField, SerializationContext

            self._producer = self.clients.producer()
            serializer = self.clients.avro_serializer(DEAD_LETTER_RECORD.schema_str)
            context = SerializationContext(DEAD_LETTER.name, MessageField.VALUE)
            self._dead_letter_serialize = lambda value: serializer(value, context)
        value = unreadable_message(
            connector="sink.credit",
            source_system="xietong.sink",
            record_type="unknown",
            topic=topic or "",
            partition=partition or 0,
            offset=offset or 0,
            payload=message.value(),
            code="sink.unreadable",
            message=str(reason),
            id_prefix="sink|",
        )
        self._producer.produce(
            DEAD_LETTER.name, key=b"sink", value=self._dead_letter_serialize(value)
        )

    # -- backfill ---------------------------------------------------------------------------

    def backfill(
        self,
        *,
        from_beginning: bool = False,
        since: dt.datetime | None = None,
        progress_bar: Callable[[int, int], None] | None = None,
    ) -> Progress:
        """Read every sink topic up to its end now, from the stored offsets (default), from
        the beginning, or from ``since``; ``progress_bar(done, total)`` after each batch."""
        consumer = self.clients.consumer(self.clients.group(f"backfill-{uuid.uuid4().hex[:8]}"))
        try:
            partitions = self._partitions(consumer)
            stored = stored_offsets(self._lookups, partitions)
            starts: dict[tuple[str, int], int] = {}
            ends: dict[tuple[str, int], int] = {}
            for topic, partition in partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=15
                )
                ends[(topic, partition)] = high
                starts[(topic, partition)] = (
                    low
                    if from_beginning or since
                    else max(stored.get((topic, partition), low), low)
                )
            if since is not None:
                wanted = [
                    TopicPartition(t, p, int(since.timestamp() * 1000)) for t, p in partitions
                ]
                for found in consumer.offsets_for_times(wanted, timeout=15):
                    key = (found.topic, found.partition)
                    starts[key] = found.offset if found.offset >= 0 else ends[key]
            pending = {key: end for key, end in ends.items() if starts[key] < end}
            total = sum(end - starts[key] for key, end in pending.items())
            progress = Progress()
            log_event(
                logger,
                "sink_backfill_started",
                database=self._database_name(),
                partitions=len(pending),
                messages=total,
            )
            if progress_bar is not None:
                progress_bar(0, total)
            consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in pending])
            self._thread = WriterThread(self._commit)
            while pending:
                messages = consumer.consume(self.options.batch_size, self.options.batch_wait)
                wanted_messages = []
                for message in messages:
                    key = (message.topic() or "", message.partition() or 0)
                    if key in pending and (message.offset() or 0) < pending[key]:
                        wanted_messages.append(message)
                    if message.error() is None and (message.offset() or 0) + 1 >= pending.get(
                        key, 0
                    ):
                        pending.pop(key, None)
                if wanted_messages:
                    self._write(wanted_messages, progress)
                if progress_bar is not None:
                    progress_bar(min(progress.messages, total), total)
            self._thread.close()
            if progress_bar is not None:
                progress_bar(progress.messages, total)
            log_event(
                logger,
                "sink_backfill_done",
                messages=progress.messages,
                batches=progress.batches,
                rows=progress.rows,
            )
            return progress
        finally:
            if self._thread is not None:
                self._thread.close()
                self._thread = None
            consumer.close()

    def _partitions(self, consumer: Consumer) -> list[tuple[str, int]]:
        """Every partition of the mapped topics and of the inboxes that exist now."""
        inbox = re.compile(DepartmentTopic.INBOX.pattern())
        topics = consumer.list_topics(timeout=15).topics
        return sorted(
            (name, partition)
            for name, metadata in topics.items()
            if name in self.topics or (self.inboxes and inbox.match(name))
            for partition in metadata.partitions
        )

    def _database_name(self) -> str:
        import sqlalchemy as sa

        return str(sa.make_url(self.database_url).database)
