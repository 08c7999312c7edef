"""The one base of every department connector: sources in, canonical events out.

The model is Kafka Connect's. A :class:`Source` reads one *source partition* (a table,
a file, an HTTP endpoint) and gives every record its *source offset* (a row id, a byte
position), the point to resume from after that record. The :class:`Publisher` maps
each record with the department's mapping file, validates it, and produces either a
canonical Avro event to the record type's topic (keyed by USCC) or a dead letter with
the original payload and every reason. The :class:`SourceConnector` drives a source in
batches: after a batch is acknowledged by the broker its last offset is committed to
the offsets topic, so a restart after a crash or ``kill -9`` resumes there and re-sends
at most the records of the batch that was in flight — with the same event ids, since
event ids are derived from the source record, never from the time of sending.

Every run reconciles exactly: ``read == published + dead_lettered``, and for a file every
byte read is accounted for — by the header, a published record, a dead letter or a blank
line — from the records' byte spans (:class:`ByteAccount`, :class:`RunReport`). No one
record stops a run: whatever fails for it (reading, mapping, validating, encoding, even
the broker refusing it as too large) makes it a dead letter; only the source failing as
a whole, or the platform (the broker not acknowledging), ends a run with an error.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge, Histogram

from connectors.mapping import DepartmentMapping
from connectors.parallel import ParallelEncoder
from connectors.records import Encoded, RecordEncoder, RecordVerdict, SourceRecord
from xietong.kafka import KafkaClients, produce
from xietong.logs import log_event
from xietong.topics import CONNECTOR_OFFSETS

logger = logging.getLogger(__name__)


# -- metrics, shared by every connector ----------------------------------------------------
# A connector knows its department by the USCC of its mapping file, not by its platform code
# (the ``department`` label of the processors), hence ``department_uscc``.
LABELS = ("connector", "department_uscc", "record_type")
RECORDS_READ = MetricCounter(
    "xietong_connector_records_read", "Records read from department sources", LABELS
)
RECORDS_PUBLISHED = MetricCounter(
    "xietong_connector_records_published", "Canonical events acknowledged by Kafka", LABELS
)
RECORDS_DEAD_LETTERED = MetricCounter(
    "xietong_connector_records_dead_lettered",
    "Records sent to the dead-letter topic, by reason code",
    (*LABELS, "reason"),
)
SOURCE_LAG = Gauge(
    "xietong_connector_source_lag",
    "What the source still holds beyond the committed offset (rows or bytes, see unit)",
    ("connector", "source_partition", "unit"),
)
BATCH_SECONDS = Histogram(
    "xietong_connector_batch_seconds",
    "Time to publish one batch and commit its offset",
    ("connector",),
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class Source(ABC):
    """A department source: one source partition, read from a committed offset on.

    Subclasses implement :meth:`read`, which yields records after ``offset`` (from the
    beginning when it is None) in offset order. A polling source yields :data:`IDLE`
    when it has nothing more for now, so that the connector can commit and wait;
    a finite source simply ends.
    """

    #: The source partition's name: stable across restarts (it keys the stored offset).
    source_partition: str

    @abstractmethod
    def read(self, offset: str | None) -> Iterator[SourceRecord | None]:
        """Records after ``offset``, in order; ``None`` (IDLE) when caught up for now."""

    def lag(self, offset: str | None) -> tuple[float, str] | None:
        """How much the source holds beyond ``offset``, and in which unit; None if unknown."""
        return None

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release files and connections; called once when the connector stops."""

    def byte_account(self) -> ByteAccount | None:
        """For a byte-positioned source, what the bytes read so far were; None otherwise.

        Called when a run ends, after every record read was sent.
        """
        return None


IDLE = None


@dataclass(frozen=True)
class ByteAccount:
    """What a byte-positioned source (a file) says of the bytes it read in one run.

    Reading began at ``start`` (the header's end, or the committed offset after it) and
    stopped at ``end``; the records' spans tile ``[start, end)`` with ``blank`` bytes of
    blank lines between them.
    """

    total: int  # the source's size when the run ended
    header: int
    start: int
    end: int
    blank: int


@dataclass
class _SpanLedger:
    """The spans of the records sent, in source order: where they leave gaps or overlap."""

    first_start: int | None = None
    last_end: int | None = None
    gaps: int = 0
    overlaps: int = 0

    def add(self, span: tuple[int, int]) -> None:
        start, end = span
        if self.last_end is None:
            self.first_start = start
        elif start < self.last_end:
            self.overlaps += 1
        else:
            self.gaps += start - self.last_end
        self.last_end = end

    def uncovered(self, start: int, end: int) -> int:
        """The bytes of ``[start, end)`` no span covers (-1 if spans fall outside it)."""
        if self.first_start is None or self.last_end is None:
            return end - start
        if self.first_start < start or self.last_end > end:
            return -1
        return (self.first_start - start) + self.gaps + (end - self.last_end)


@dataclass
class RunReport:
    """What one connector run did, counted and — for a file — byte by byte.

    ``read == published + dead_lettered``; for a file, in addition, ``bytes_header +
    bytes_before_offset + bytes_blank + bytes_published + bytes_dead_lettered +
    bytes_unread == bytes_total``, where ``bytes_before_offset`` were accounted for in
    earlier runs (before the committed offset) and ``bytes_unread`` is what a stopped run
    left for the next (0 after a full read). :attr:`reconciles` checks both, and that the
    records' spans, in source order, neither overlap nor leave a gap other than blank
    lines. The byte fields are None for sources that are not byte-positioned.
    """

    connector: str
    read: int = 0
    published: int = 0
    dead_lettered: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    committed_offset: str | None = None
    seconds: float = 0.0
    bytes_total: int | None = None
    bytes_header: int | None = None
    bytes_before_offset: int | None = None
    bytes_blank: int | None = None
    bytes_published: int | None = None
    bytes_dead_lettered: int | None = None
    bytes_unread: int | None = None
    spans: _SpanLedger = field(default_factory=_SpanLedger, repr=False)
    account: ByteAccount | None = field(default=None, repr=False)

    def settle_bytes(self, account: ByteAccount | None) -> None:
        """Take the source's account of its bytes at the end of a run."""
        if account is None:
            return
        self.bytes_total, self.bytes_header = account.total, account.header
        self.bytes_before_offset = account.start - account.header
        self.bytes_blank, self.bytes_unread = account.blank, account.total - account.end
        self.bytes_published = self.bytes_published or 0
        self.bytes_dead_lettered = self.bytes_dead_lettered or 0
        self.account = account

    def count_bytes(self, span: tuple[int, int] | None, published: bool) -> None:
        """Count an acknowledged record's bytes as published or dead-lettered."""
        if span is None:
            return
        if published:
            self.bytes_published = (self.bytes_published or 0) + span[1] - span[0]
        else:
            self.bytes_dead_lettered = (self.bytes_dead_lettered or 0) + span[1] - span[0]

    @property
    def reconciles(self) -> bool:
        counted = self.read == self.published + self.dead_lettered
        if self.account is None:
            return counted
        accounted = (
            (self.bytes_header or 0)
            + (self.bytes_before_offset or 0)
            + (self.bytes_blank or 0)
            + (self.bytes_published or 0)
            + (self.bytes_dead_lettered or 0)
            + (self.bytes_unread or 0)
        )
        return (
            counted
            and accounted == self.bytes_total
            and self.spans.overlaps == 0
            and self.spans.uncovered(self.account.start, self.account.end) == self.bytes_blank
        )

    def as_dict(self) -> dict[str, Any]:
        report = {
            **asdict(self),
            "reasons": dict(self.reasons),
            "seconds": round(self.seconds, 3),
            "reconciles": self.reconciles,
        }
        del report["spans"], report["account"]
        return report


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a record; the batch's offset must not be committed."""


class Publisher:
    """Produces encoded records of one department mapping and counts what was acknowledged.

    The producer is idempotent (acks=all), so retries inside the client never create
    duplicates; :meth:`flush` waits until every record produced so far is acknowledged
    and raises :class:`DeliveryFailed` if one was not.
    """

    def __init__(
        self,
        connector: str,
        mapping: DepartmentMapping,
        clients: KafkaClients,
        producer: Producer | None = None,
    ) -> None:
        self.connector = connector
        self.mapping = mapping
        self.record_type = mapping.record_type
        self.department = mapping.department
        self.encoder = RecordEncoder(connector, mapping, clients)
        self.producer = producer or clients.producer()
        self._record_type_header = self.record_type.name.encode()
        self._failures: list[str] = []
        # Dead letters of records refused as too large, produced at the next poll or flush
        # (a delivery report is no place to produce from).
        self._resend: list[tuple[Encoded, SourceRecord]] = []
        labels = (connector, self.department.uscc, self.record_type.name)
        self._read = RECORDS_READ.labels(*labels)
        self._published = RECORDS_PUBLISHED.labels(*labels)
        self._labels = labels
        self.report = RunReport(connector)

    def publish(self, record: SourceRecord) -> RecordVerdict:
        """Produce the record's canonical event, or its dead letter; never both, never none."""
        encoded = self.encoder.encode(record)
        self.send(encoded, record)
        return encoded.verdict

    def event_id(self, source_record_id: str, record_version: str) -> str:
        return self.encoder.event_id(source_record_id, record_version)

    def send(self, encoded: Encoded, record: SourceRecord | None = None) -> None:
        """Produce one encoded record (counted as read now, as published once acknowledged).

        Given the ``record`` it was encoded from, a record the producer or the broker
        refuses as too large is dead-lettered instead (see
        :meth:`~connectors.records.RecordEncoder.too_large`), and its byte span counts.
        """
        self.report.read += 1
        self._read.inc()
        if record is not None and record.span is not None:
            self.report.spans.add(record.span)
        self._produce(encoded, record)

    def _produce(self, encoded: Encoded, record: SourceRecord | None) -> None:
        on_delivery: Callable[[KafkaError | None, Message], None]
        if encoded.problems:
            codes = sorted({problem.code for problem in encoded.problems})
            on_delivery = partial(self._dead_letter_delivered, codes, encoded, record)
        else:
            on_delivery = partial(self._event_delivered, encoded, record)
        headers: list[tuple[str, str | bytes | None]] = [
            ("event_id", encoded.event_id.encode()),
            ("record_type", self._record_type_header),
        ]
        try:
            produce(
                self.producer,
                encoded.topic,
                key=encoded.key,
                value=encoded.payload,
                headers=headers,
                on_delivery=on_delivery,
            )
        except KafkaException as refusal:
            error = refusal.args[0]
            if not self._refused_as_too_large(error, encoded, record):
                raise

    def _refused_as_too_large(
        self, error: KafkaError, refused: Encoded, record: SourceRecord | None
    ) -> bool:
        """Dead-letter a record refused for its size (once: its dead letter is small)."""
        too_large = error.code() == KafkaError.MSG_SIZE_TOO_LARGE
        if (
            not too_large
            or record is None
            or any(problem.code == "record.too_large" for problem in refused.problems)
        ):
            return False
        self._resend.append((self.encoder.too_large(record, refused, error.str()), record))
        return True

    def _event_delivered(
        self,
        encoded: Encoded,
        record: SourceRecord | None,
        error: KafkaError | None,
        message: Message,
    ) -> None:
        """Delivery report of a canonical event: counted once the broker acknowledged it."""
        if error is not None:
            if not self._refused_as_too_large(error, encoded, record):
                self._failed(error, message)
            return
        self.report.published += 1
        self.report.count_bytes(record.span if record else None, published=True)
        self._published.inc()

    def _dead_letter_delivered(
        self,
        codes: list[str],
        encoded: Encoded,
        record: SourceRecord | None,
        error: KafkaError | None,
        message: Message,
    ) -> None:
        if error is not None:
            if not self._refused_as_too_large(error, encoded, record):
                self._failed(error, message)
            return
        log_event(
            logger,
            "record_dead_lettered",
            connector=self.connector,
            department=self.department.uscc,
            record_type=self.record_type.name,
            reasons=codes,
            event_id=encoded.event_id,
            uscc=encoded.uscc,
            dead_letter_offset=message.offset(),
        )
        self.report.dead_lettered += 1
        self.report.reasons.update(codes)
        self.report.count_bytes(record.span if record else None, published=False)
        for code in codes:
            RECORDS_DEAD_LETTERED.labels(*self._labels, code).inc()

    def _failed(self, error: KafkaError, message: Message) -> None:
        key = (message.key() or b"").decode(errors="replace")
        self._failures.append(f"{message.topic()} record keyed {key}: {error}")

    # -- batches ---------------------------------------------------------------------------
    def poll(self) -> None:
        """Serve delivery callbacks without waiting."""
        self.producer.poll(0)
        self._send_refused()

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until everything produced is acknowledged; raise if anything was not."""
        remaining = self.producer.flush(timeout)
        while self._resend and not remaining:
            self._send_refused()
            remaining = self.producer.flush(timeout)
        if remaining:
            raise DeliveryFailed(f"{remaining} records not acknowledged within {timeout:.0f}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(f"{len(failures)} records failed, first: {failures[0]}")

    def _send_refused(self) -> None:
        resend, self._resend = self._resend, []
        for encoded, record in resend:
            self._produce(encoded, record)


class OffsetStore:
    """Committed source offsets, kept in a compacted topic like Kafka Connect's.

    The key is ``[connector, source partition]`` as JSON, the value the offset and when
    it was committed; the latest value per key wins.
    """

    def __init__(self, clients: KafkaClients) -> None:
        self.clients = clients
        self.topic = CONNECTOR_OFFSETS.name
        self._producer = clients.producer(**{"linger.ms": 0})

    @staticmethod
    def _key(connector: str, source_partition: str) -> bytes:
        return json.dumps([connector, source_partition], ensure_ascii=False).encode()

    def load(self, connector: str, source_partition: str) -> str | None:
        """The last committed offset of this connector's source partition, or None."""
        wanted = self._key(connector, source_partition)
        offset: str | None = None
        for message in self.clients.read_to_end(self.topic, "offsets"):
            if message.key() == wanted:
                value = message.value()
                offset = None if value is None else json.loads(value)["offset"]
        return offset

    def commit(self, connector: str, source_partition: str, offset: str) -> None:
        """Store the offset durably (acknowledged by all in-sync replicas) before returning."""
        value = json.dumps(
            # When it was committed, on the wall clock: bookkeeping, not business time.
            {"offset": offset, "committed_at": datetime.now(UTC).isoformat()},
            ensure_ascii=False,
        ).encode()
        self._producer.produce(self.topic, key=self._key(connector, source_partition), value=value)
        if self._producer.flush(30):
            raise DeliveryFailed(f"offset {offset} of {connector} not acknowledged")


class SourceConnector:
    """Drives one source through a publisher in batches, committing offsets after each.

    ``batch_size`` bounds what a crash can make us re-send: after a restart the
    connector resumes from the last committed offset, so at most one batch is sent again,
    with the same event ids. With ``workers`` > 0 records are encoded in that many
    worker processes (:mod:`connectors.parallel`) and still produced in source order.
    """

    def __init__(
        self,
        name: str,
        source: Source,
        publisher: Publisher,
        offsets: OffsetStore,
        batch_size: int = 5000,
        poll_interval: float = 5.0,
        workers: int = 0,
    ) -> None:
        self.name = name
        self.source = source
        self.publisher = publisher
        self.offsets = offsets
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.workers = workers
        self.chunk_size = min(500, batch_size)
        self._stopping = False
        self._in_batch = 0
        self._last_offset: str | None = None
        self._on_batch: Callable[[RunReport, int], None] | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to finish its batch, commit and return (e.g. on SIGTERM)."""
        self._stopping = True

    def run(
        self, once: bool = True, on_batch: Callable[[RunReport, int], None] | None = None
    ) -> RunReport:
        """Publish everything after the committed offset.

        With ``once`` the run ends when the source is exhausted or idle (a file, a
        backfill); otherwise it keeps polling until :meth:`stop`. ``on_batch`` is told
        the report and the records of every committed batch (for progress bars).
        """
        started = time.perf_counter()
        report = self.publisher.report
        offset = self.offsets.load(self.name, self.source.source_partition)
        report.committed_offset = self._last_offset = offset
        self._on_batch = on_batch
        pool = (
            ParallelEncoder(
                self.name, self.publisher.mapping, self.offsets.clients.settings, self.workers
            )
            if self.workers
            else None
        )
        chunk: list[SourceRecord] = []
        try:
            for record in self.source.read(offset):
                if record is not None:
                    chunk.append(record)
                    if len(chunk) < self.chunk_size and not self._stopping:
                        continue
                if chunk:
                    self._encode_and_send(chunk, pool)
                    chunk = []
                if record is None:  # the source is caught up for now
                    self._settle(pool)
                    if once or self._stopping:
                        break
                    time.sleep(self.poll_interval)
                if self._stopping:
                    break
            if chunk:
                self._encode_and_send(chunk, pool)
            self._settle(pool)
            report.settle_bytes(self.source.byte_account())
        finally:
            if pool is not None:
                pool.close()
            self.source.close()
            report.seconds = time.perf_counter() - started
        return report

    def _encode_and_send(self, chunk: list[SourceRecord], pool: ParallelEncoder | None) -> None:
        if pool is None:
            encode = self.publisher.encoder.encode
            self._send(chunk, [encode(record) for record in chunk])
            return
        pool.submit(chunk)
        for records, encoded in pool.results():
            self._send(records, encoded)

    def _settle(self, pool: ParallelEncoder | None) -> None:
        """Send everything still being encoded, then commit what is pending."""
        if pool is not None:
            for records, encoded in pool.results(drain=True):
                self._send(records, encoded)
        if self._in_batch:
            self._commit()

    def _send(self, records: list[SourceRecord], encoded: list[Encoded]) -> None:
        for record, item in zip(records, encoded, strict=True):
            self.publisher.send(item, record)
        self.publisher.poll()
        self._last_offset = records[-1].source_offset
        self._in_batch += len(records)
        if self._in_batch >= self.batch_size:
            self._commit()

    def _commit(self) -> None:
        offset, records = self._last_offset, self._in_batch
        assert offset is not None
        with BATCH_SECONDS.labels(self.name).time():
            self.publisher.flush()
            self.offsets.commit(self.name, self.source.source_partition, offset)
        self._in_batch = 0
        self.publisher.report.committed_offset = offset
        log_event(
            logger,
            "batch_committed",
            connector=self.name,
            source_partition=self.source.source_partition,
            source_offset=offset,
            records=records,
        )
        lag = self.source.lag(offset)
        if lag is not None:
            SOURCE_LAG.labels(self.name, self.source.source_partition, lag[1]).set(lag[0])
        if self._on_batch:
            self._on_batch(self.publisher.report, records)
