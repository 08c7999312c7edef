"""Writing one batch of records to the credit database in one transaction.

A :class:`Batch` collects what a batch of Kafka messages becomes — rows per table,
current-state rows, facts for the tamper-evident log, and the next offset of every
partition it read — and :meth:`BatchWriter.write` stores all of it in **one
transaction**: the rows, the log entries and the offsets commit together or not at
all, so a sink killed at any moment resumes exactly after the last committed batch
(effectively once). Rows are written in bulk: ``COPY`` into a temporary staging table,
then ``INSERT … SELECT … ON CONFLICT (event_id) DO NOTHING``, so a record seen twice
(a producer's retry, a replay) is stored once. (The ids of a batch are looked up
first and the new rows copied straight into the table; the staging table is the
fallback when another writer raced it.)

    batch = Batch()
    batch.add(message_topic, partition, offset, timestamp, mapping, record)
    counts = BatchWriter(conn, appender).write(batch)   # {table: rows inserted}
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import psycopg2.errors
from psycopg2.extensions import connection as Connection
from psycopg2.extras import execute_values

from connectors.sink.chain import Appender, Candidate, Entry
from connectors.sink.tables import (
    DELIVERIES_TABLE,
    DELIVERY_COLUMNS,
    Column,
    Current,
    Delivery,
    TableMapping,
    delivery_audit,
    delivery_id,
    json_safe,
)

LINEAGE_COLUMNS = ("source_topic", "source_partition", "source_offset")

# -- COPY's text format ---------------------------------------------------------------------

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def _text(value: Any) -> str:
    text = str(value)
    # Most values need no escaping: two C-speed checks instead of a translation.
    if text.isprintable() and "\\" not in text:
        return text
    return text.translate(_ESCAPES)


def _array(values: Sequence[Any]) -> str:
    return _array_raw(values).translate(_ESCAPES)


def _array_raw(values: Sequence[Any]) -> str:
    quoted = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _json(value: Any) -> str:
    return _json_raw(value).translate(_ESCAPES)


def _json_raw(value: Any) -> str:
    return json.dumps(json_safe(value), ensure_ascii=False)


def _timestamp(value: dt.datetime | int) -> str:
    if isinstance(value, int):  # epoch milliseconds
        value = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    return value.isoformat()


_FORMATS: dict[str, Callable[[Any], str]] = {
    "text": _text,
    "integer": str,
    "bigint": str,
    "numeric": str,
    "date": dt.date.isoformat,
    "timestamptz": _timestamp,
    "text[]": _array,
    "boolean": lambda value: "t" if value else "f",
    "jsonb": _json,
}

#: Each kind's text before COPY's escaping.
_RAW_FORMATS: dict[str, Callable[[Any], str]] = {
    **_FORMATS,
    "text": str,
    "text[]": _array_raw,
    "jsonb": _json_raw,
}


@cache
def line_formatter(kinds: tuple[str, ...]) -> Callable[[Sequence[Any]], str]:
    """A function from a row of values of ``kinds`` to its line of COPY text.

    Compiled once per table (one expression per column), because formatting every value
    of every row through a generic loop was most of the sink's time. Most rows need no
    escaping, so the values are joined unescaped and the line checked once, at C speed —
    its only backslashes the nulls' ``\\N``, its only tabs the separators, no line
    breaks; a row that fails the check is formatted again, every value escaped."""
    scope: dict[str, Any] = {"escaped": _joiner(kinds, _FORMATS), "separators": len(kinds) - 1}
    exec(
        _joiner_source(kinds, _RAW_FORMATS, scope)
        + "    if (line.count('\\\\') == row.count(None) and line.count('\\t') == separators\n"
        "            and '\\n' not in line and '\\r' not in line):\n"
        "        return line + '\\n'\n"
        "    return escaped(row)\n",
        scope,
    )
    return scope["line"]


def _joiner_source(
    kinds: tuple[str, ...], formats: dict[str, Callable[[Any], str]], scope: dict[str, Any]
) -> str:
    """``def line(row)`` up to ``line = <the row's values as text, joined by tabs>``."""
    scope["N"] = NULL
    parts = []
    for i, kind in enumerate(kinds):
        if formats[kind] is str:
            expression = f"str(v{i})"
        else:
            scope[f"F{i}"] = formats[kind]
            expression = f"F{i}(v{i})"
        parts.append(f"N if v{i} is None else {expression}")
    names = ", ".join(f"v{i}" for i in range(len(kinds)))
    unpack = f"{names}," if len(kinds) == 1 else names
    return f"def line(row):\n    {unpack} = row\n    line = '\\t'.join(({', '.join(parts)},))\n"


def _joiner(
    kinds: tuple[str, ...], formats: dict[str, Callable[[Any], str]]
) -> Callable[[Sequence[Any]], str]:
    scope: dict[str, Any] = {}
    exec(_joiner_source(kinds, formats, scope) + "    return line + '\\n'\n", scope)
    return scope["line"]


def row_kinds(columns: Sequence[Column]) -> tuple[str, ...]:
    """The kinds of a table's columns, lineage (topic, partition, offset) included."""
    return (*(c.kind for c in columns), "text", "integer", "bigint")


# -- a batch --------------------------------------------------------------------------------


@dataclass
class TableRows:
    """The rows of one table in a batch, first occurrence of each key kept."""

    table: str
    columns: tuple[Column, ...]
    key_index: int = 0  # the unique column: event_id, or a current table's key
    rows: dict[Any, tuple[Any, ...]] = field(default_factory=dict)

    def add(self, row: tuple[Any, ...]) -> None:
        self.rows.setdefault(row[self.key_index], row)


@dataclass
class CurrentRows:
    """Current-state rows of one table in a batch, the newest of each key kept."""

    current: Current
    key_index: int
    rows: dict[Any, tuple[Any, ...]] = field(default_factory=dict)

    def add(self, row: tuple[Any, ...]) -> None:
        key = row[self.key_index]
        held = self.rows.get(key)
        if held is None or self.current.rank(held) < self.current.rank(row):
            self.rows[key] = row


@dataclass
class Batch:
    tables: dict[str, TableRows] = field(default_factory=dict)
    currents: dict[str, CurrentRows] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0
    read: dict[str, int] = field(default_factory=dict)  # messages per topic

    def add(
        self, topic: str, partition: int, offset: int, mapping: TableMapping, record: dict[str, Any]
    ) -> None:
        """A record of ``mapping``'s type read from a mapped topic."""
        row = mapping.row(record, topic, partition, offset)
        rows = self.tables.get(mapping.table)
        if rows is None:
            rows = self.tables[mapping.table] = TableRows(mapping.table, mapping.all_columns)
        rows.add(row)
        if mapping.current is not None:
            current = mapping.current
            held = self.currents.get(current.table)
            if held is None:
                key_index = [c.name for c in current.columns].index(current.key)
                held = self.currents[current.table] = CurrentRows(current, key_index)
            held.add(current.row(record, topic, partition, offset))
        if mapping.audit is not None:
            fact = mapping.audit(record, row[0])
            if fact is not None:
                self.candidates.append(Candidate(fact, topic, partition, offset))
        self.advance(topic, partition, offset)

    def add_delivery(self, topic: str, partition: int, offset: int, delivery: Delivery) -> None:
        """A record as delivered to a department's inbox."""
        event_id = delivery_id(topic, delivery.mapping.event_id(delivery.record))
        row = (event_id, *(c.get(delivery) for c in DELIVERY_COLUMNS), topic, partition, offset)
        rows = self.tables.get(DELIVERIES_TABLE)
        if rows is None:
            columns = (Column("event_id", "text", lambda d: None), *DELIVERY_COLUMNS)
            rows = self.tables[DELIVERIES_TABLE] = TableRows(DELIVERIES_TABLE, columns)
        rows.add(row)
        fact = delivery_audit(delivery, event_id)
        self.candidates.append(Candidate(fact, topic, partition, offset))
        self.advance(topic, partition, offset)

    def advance(self, topic: str, partition: int, offset: int) -> None:
        """The partition is read up to ``offset`` (whatever the message became)."""
        self.messages += 1
        self.read[topic] = self.read.get(topic, 0) + 1
        held = self.next_offsets.get((topic, partition), 0)
        self.next_offsets[(topic, partition)] = max(held, offset + 1)


# -- writing it -----------------------------------------------------------------------------


@dataclass
class Written:
    rows: dict[str, int]
    entries: list[Entry]


class BatchWriter:
    """Writes batches through one connection; its staging tables live as long as it."""

    def __init__(self, conn: Connection, appender: Appender) -> None:
        self.conn = conn
        self.appender = appender
        self._staged: set[str] = set()

    def _stage(self, cursor: Any, table: str) -> str:
        stage = f"stage_{table}"
        if table not in self._staged:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            self._staged.add(table)
        return stage

    @staticmethod
    def _copy_text(columns: Sequence[Column], rows: Sequence[tuple[Any, ...]]) -> io.StringIO:
        line = line_formatter(row_kinds(columns))
        return io.StringIO("".join(map(line, rows)))

    @staticmethod
    def _names(columns: Sequence[Column]) -> str:
        return ", ".join([c.name for c in columns] + list(LINEAGE_COLUMNS))

    def _copy(
        self, cursor: Any, table: str, columns: Sequence[Column], rows: Sequence[tuple[Any, ...]]
    ) -> tuple[str, str]:
        """COPY ``rows`` into the staging table of ``table``; (staging table, column list)."""
        stage = self._stage(cursor, table)
        names = self._names(columns)
        cursor.copy_expert(f"COPY {stage} ({names}) FROM STDIN", self._copy_text(columns, rows))
        return stage, names

    def _insert(self, cursor: Any, rows: TableRows) -> int:
        """Insert the rows whose event id the table does not hold; how many.

        Fast path: look the batch's ids up, COPY the new rows straight into the table.
        Only another writer inserting the same ids meanwhile can make that COPY fail
        (one sink serves a database, so hardly ever); then the rows go through a staging
        table and ``INSERT … ON CONFLICT DO NOTHING``."""
        cursor.execute(
            f"SELECT event_id FROM {rows.table} WHERE event_id = ANY(%s)", (list(rows.rows),)
        )
        held = {row[0] for row in cursor.fetchall()}
        new = [row for key, row in rows.rows.items() if key not in held]
        if not new:
            return 0
        cursor.execute("SAVEPOINT fast_copy")
        try:
            cursor.copy_expert(
                f"COPY {rows.table} ({self._names(rows.columns)}) FROM STDIN",
                self._copy_text(rows.columns, new),
            )
        except psycopg2.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT fast_copy")
            stage, names = self._copy(cursor, rows.table, rows.columns, new)
            cursor.execute(
                f"INSERT INTO {rows.table} ({names}) SELECT {names} FROM {stage}"
                " ON CONFLICT (event_id) DO NOTHING"
            )
            return int(cursor.rowcount)
        cursor.execute("RELEASE SAVEPOINT fast_copy")
        return len(new)

    def write(self, batch: Batch) -> Written:
        """Store the batch and its offsets in one transaction; rows inserted per table."""
        counts: dict[str, int] = {}
        try:
            with self.conn.cursor() as cursor:
                for rows in batch.tables.values():
                    counts[rows.table] = self._insert(cursor, rows)
                for held in batch.currents.values():
                    current = held.current
                    stage, names = self._copy(
                        cursor, current.table, current.columns, list(held.rows.values())
                    )
                    updates = ", ".join(
                        f"{name} = EXCLUDED.{name}"
                        for name in names.split(", ")
                        if name != current.key
                    )
                    cursor.execute(
                        f"INSERT INTO {current.table} AS t ({names}) SELECT {names} FROM {stage}"
                        f" ON CONFLICT ({current.key}) DO UPDATE SET {updates},"
                        f" ingested_at = now() WHERE {current.newer}"
                    )
                    counts[current.table] = cursor.rowcount
                entries = self.appender.append(cursor, batch.candidates)
                if entries:
                    counts["audit_log"] = len(entries)
                if batch.next_offsets:
                    execute_values(
                        cursor,
                        "INSERT INTO sink_offsets (topic, partition, next_offset) VALUES %s"
                        " ON CONFLICT (topic, partition) DO UPDATE"
                        " SET next_offset = EXCLUDED.next_offset, updated_at = now()",
                        [(t, p, o) for (t, p), o in sorted(batch.next_offsets.items())],
                    )
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return Written(counts, entries)


def stored_offsets(
    conn: Connection, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The next offset to read of each partition the database has seen."""
    if not partitions:
        return {}
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT topic, partition, next_offset FROM sink_offsets WHERE (topic, partition) IN %s",
            (tuple(partitions),),
        )
        found = {(t, p): o for t, p, o in cursor.fetchall()}
    conn.rollback()
    return found
