"""Encoding source records in worker processes, for large files and backfills.

Mapping, validation and Avro serialisation are pure Python work and hold the GIL, so
one process tops out near 20,000 records/s. With ``workers: N`` a connector reads its
source in the main process, hands chunks of records to N worker processes that each
run their own :class:`~connectors.records.RecordEncoder`, and produces the results *in
source order* from the main process with its one idempotent producer. Offsets are
still committed only after everything before them is acknowledged, so resumption and
at-least-once delivery are exactly as without workers.

Workers are started with ``spawn`` (never ``fork``: the parent already runs
librdkafka threads and HTTP connections that must not be duplicated). They never
outlive the connector: the pool is shut down when the run ends, however it ends, and
at exit; and a connector killed outright takes its workers with it, because each asks
the kernel for a SIGKILL when its parent dies (:func:`xietong.processes.die_with_parent`).
That signal follows the thread that started the worker: the pool is made, fed and shut
down by the one thread that runs the connector, so it outlives its workers. Ctrl-C
reaches the workers too (they share the terminal): they leave it to the connector,
which stops after its batch and shuts the pool down.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from connectors.mapping import DepartmentMapping, MappingFile
from connectors.records import Encoded, RecordEncoder, SourceRecord
from xietong.kafka import KafkaClients
from xietong.processes import die_with_parent
from xietong.settings import Settings

_encoder: RecordEncoder | None = None


def _start_worker(
    parent: int, connector: str, spec: MappingFile, origin: str, settings: Settings
) -> None:
    global _encoder
    die_with_parent(parent, signal.SIGKILL)  # it holds nothing a kill could lose
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _encoder = RecordEncoder(
        connector, DepartmentMapping(spec, origin), KafkaClients(settings, "connectors")
    )


Packed = tuple[str, tuple[str, ...], list[tuple[Any, ...]]]


def _pack(records: list[SourceRecord]) -> Packed:
    """A chunk of records in a compact form: the column names once, values as tuples.

    Pickling twenty Chinese column names with every record costs more than encoding it.
    """
    first = next((r.fields for r in records if r.fields is not None), None)
    columns = tuple(first) if first is not None else ()
    rows = []
    for record in records:
        fields = record.fields
        values: Any = fields
        if fields is not None and tuple(fields) == columns:
            values = tuple(fields.values())
        rows.append(
            (
                record.source_offset,
                record.position,
                record.raw,
                values,
                record.read_problem,
                record.span,
                record.whole,
            )
        )
    return records[0].source_partition, columns, rows


def _unpack(packed: Packed) -> list[SourceRecord]:
    partition, columns, rows = packed
    return [
        SourceRecord(
            partition,
            offset,
            position,
            raw,
            dict(zip(columns, values, strict=True)) if isinstance(values, tuple) else values,
            problem,
            span,
            whole,
        )
        for offset, position, raw, values, problem, span, whole in rows
    ]


def _encode(packed: Packed) -> list[Encoded]:
    assert _encoder is not None, "worker not initialised"
    return [_encoder.encode(record) for record in _unpack(packed)]


class ParallelEncoder:
    """Encodes chunks of records in worker processes, returning results in order.

    ``submit`` queues a chunk; ``results`` yields finished chunks in submission order,
    waiting for the oldest once more than ``in_flight`` chunks are queued (or for all
    of them with ``drain=True``).
    """

    def __init__(
        self,
        connector: str,
        mapping: DepartmentMapping,
        settings: Settings,
        workers: int,
        in_flight: int | None = None,
    ) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(os.getpid(), connector, mapping.spec, mapping.origin, settings),
        )
        self._pending: deque[tuple[Future[list[Encoded]], list[SourceRecord]]] = deque()
        self._in_flight = in_flight or workers * 3
        atexit.register(self.close)

    def submit(self, records: list[SourceRecord]) -> None:
        self._pending.append((self._pool.submit(_encode, _pack(records)), records))

    def results(self, drain: bool = False) -> Iterator[tuple[list[SourceRecord], list[Encoded]]]:
        """Finished chunks, oldest first: the records and what they were encoded to."""
        while self._pending and (drain or len(self._pending) > self._in_flight):
            future, records = self._pending.popleft()
            yield records, future.result()

    def close(self) -> None:
        """Stop the workers; what was still queued is dropped (it was not committed)."""
        atexit.unregister(self.close)
        self._pool.shutdown(wait=True, cancel_futures=True)
