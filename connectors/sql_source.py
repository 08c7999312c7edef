"""Department databases polled through SQLAlchemy, by a strictly increasing column.

Where a department grants read access to its own database, this source polls one table
(or one query) as one source partition, ``sql:<host>/<database>/<table>`` — or
``sql:<host>/<database>/query:<digest>`` for a query, the digest being a short hash of
its text, so the partition stays stable across restarts and never holds a password.

The source offset is the value of the *incrementing column* (an id from a sequence, or
a creation timestamp) of the last row read: each fetch selects the rows after it, in
its order, ``fetch_size`` at a time, and a fetch that comes back short means the source
is caught up (:data:`~connectors.base.IDLE`); the next read polls again. Offsets are
strings: an integer column's offset is the integer written out, a timestamp column's
its ISO 8601 form, and both are turned back into their type before comparing, so the
database compares ``10 > 9`` as numbers, not as text.

Values reach the mapping as the database driver returns them — dates as ``date``,
amounts as ``Decimal`` — and the row as JSON is kept as the raw payload for the
dead-letter topic, whatever the driver returned (bytes as ``\\x`` and their hex digits,
as PostgreSQL writes ``bytea``; other types as their text). A value the mapping cannot
take (a ``bytea``, a JSON object, a fraction as the version) is a dead letter like any
other. Each fetch takes a pooled connection and gives it back before the rows are
published, so no transaction stays open on the department's database.

A connection dropped between polls is opened again (each is checked before use). A
database that cannot be reached, or a connection lost in the middle of a fetch, stops
the run with :class:`SqlSourceUnavailable`, saying where reading stopped and what to do:
nothing after the last committed offset is lost, and the next run resumes there.

The column must be strictly increasing in the order rows become visible: a row that
commits after a row with a larger value has been read is never read (a long
transaction holding an early id), and of rows sharing one timestamp, those a fetch
cuts off are skipped.

Example::

    source = SqlTableSource(
        "postgresql+psycopg2://reader:secret@db.health.local/licensing",
        incrementing_column="记录编号",
        table="licence_export",
    )
    for record in source.read(offset=None):
        if record is None:  # caught up; a connector waits poll_interval and reads on
            break
        print(record.source_offset, record.fields)
    source.close()
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from connectors.base import IDLE, Source
from connectors.config import SqlSourceConfig
from connectors.records import SourceRecord

#: How a stored offset string is turned back into the incrementing column's type.
OFFSET_TYPES: dict[type, Callable[[str], Any]] = {int: int, datetime: datetime.fromisoformat}


class SqlSourceError(ValueError):
    """A department table or query that cannot be read as configured."""


class SqlSourceUnavailable(SqlSourceError):
    """The department's database cannot be reached, or the connection to it was lost."""


class SqlTableSource(Source):
    """One department table (or query), read after a committed offset, polled for more."""

    def __init__(
        self,
        url: str,
        incrementing_column: str,
        *,
        table: str | None = None,
        query: str | None = None,
        fetch_size: int = 5000,
    ) -> None:
        if (table is None) == (query is None):
            raise SqlSourceError("a sql source needs exactly one of table: and query:")
        if fetch_size < 1:
            raise SqlSourceError(f"fetch_size must be at least 1, not {fetch_size}")
        parsed = make_url(url)
        self.incrementing_column = incrementing_column
        self.fetch_size = fetch_size
        self.database = f"{parsed.host or 'localhost'}/{parsed.database or ''}"
        if query is not None:
            # Whitespace is normalised so that re-indenting the YAML keeps the offsets.
            digest = hashlib.sha256(" ".join(query.split()).encode()).hexdigest()[:12]
            self.relation_name = f"query {digest}"
            self.source_partition = f"sql:{self.database}/query:{digest}"
        else:
            self.relation_name = f"table {table}"
            self.source_partition = f"sql:{self.database}/{table}"
        # Department databases sit behind firewalls that drop idle connections between
        # polls: check each pooled connection before use.
        self.engine = sa.create_engine(parsed, pool_pre_ping=True)
        try:
            if query is not None:
                self.relation: sa.FromClause = self._describe_query(query)
            else:
                assert table is not None
                self.relation = self._reflect_table(table)
            self.column: sa.ColumnElement[Any] = self.relation.c[incrementing_column]
            self._offset_type = self._declared_offset_type() or self._probe_offset_type()
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def from_config(cls, config: SqlSourceConfig) -> SqlTableSource:
        """The source a connector file's ``source: {kind: sql, …}`` describes."""
        return cls(
            config.url,
            config.incrementing_column,
            table=config.table,
            query=config.query,
            fetch_size=config.fetch_size,
        )

    # -- reading ---------------------------------------------------------------------------
    def read(self, offset: str | None) -> Iterator[SourceRecord | None]:
        """Rows after ``offset`` in column order, one fetch at a time; IDLE when caught up."""
        while True:
            rows = self._fetch(offset)
            for fields in rows:
                offset = _offset_of(fields[self.incrementing_column])
                yield SourceRecord(
                    self.source_partition,
                    offset,
                    f"row {self.incrementing_column}={offset}",
                    raw_json(fields),
                    fields,
                )
            if len(rows) < self.fetch_size:
                yield IDLE

    def lag(self, offset: str | None) -> tuple[float, str] | None:
        """How many rows lie beyond ``offset``."""
        condition = self._after(offset)
        if condition is None:
            return (0.0, "rows")
        count = sa.select(sa.func.count()).select_from(self.relation).where(condition)
        with self._connection() as connection:
            return (float(connection.execute(count).scalar_one()), "rows")

    def close(self) -> None:
        self.engine.dispose()

    def _fetch(self, offset: str | None) -> list[dict[str, Any]]:
        condition = self._after(offset)
        if condition is None:
            return []
        statement = (
            sa.select(self.relation).where(condition).order_by(self.column).limit(self.fetch_size)
        )
        with self._connection(reading_after=offset) as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    def _after(self, offset: str | None) -> sa.ColumnElement[bool] | None:
        """The rows after ``offset``; None while the column's type is still unknown."""
        if offset is None:
            return self.column.is_not(None)
        if self._offset_type is None:
            self._offset_type = self._probe_offset_type()
            if self._offset_type is None:
                return None
        try:
            value = OFFSET_TYPES[self._offset_type](offset)
        except ValueError:
            raise SqlSourceError(
                f"{self.relation_name} in {self.database}: stored offset {offset!r} is no"
                f" {self._offset_type.__name__} value of column {self.incrementing_column!r};"
                " was incrementing_column changed? Give the connector a new name to start over"
            ) from None
        return self.column > value

    # -- describing the table or query ------------------------------------------------------
    def _reflect_table(self, table: str) -> sa.Table:
        schema, _, name = table.rpartition(".")
        try:
            with self._connection() as connection:
                reflected = sa.Table(
                    name, sa.MetaData(), schema=schema or None, autoload_with=connection
                )
        except sa.exc.NoSuchTableError:
            raise SqlSourceError(
                f"table {table} does not exist in {self.database}; check table: in the"
                " connector configuration (schema.table for another schema)"
            ) from None
        self._check_column(reflected.c.keys())
        return reflected

    def _describe_query(self, query: str) -> sa.Subquery:
        query = query.strip().rstrip(";")  # a habit from SQL consoles; breaks a subquery
        nothing = sa.select(sa.text("*")).select_from(sa.text(f"({query}) AS source"))
        with self._connection() as connection:
            names = list(connection.execute(nothing.where(sa.false())).keys())
        self._check_column(names)
        return sa.text(query).columns(*(sa.column(name) for name in names)).subquery("source")

    def _check_column(self, columns: list[str]) -> None:
        if self.incrementing_column not in columns:
            raise SqlSourceError(
                f"{self.relation_name} in {self.database} has no column"
                f" {self.incrementing_column!r} (incrementing_column); its columns are"
                f" {', '.join(columns)}"
            )

    def _declared_offset_type(self) -> type | None:
        """The column's type as the table declares it; None when undeclared (a query's)."""
        declared = self.column.type
        if isinstance(declared, sa.types.NullType):
            return None
        try:
            python_type = declared.python_type
        except NotImplementedError:  # a type SQLAlchemy knows by name only: look at a value
            return None
        return self._supported(python_type, declared)

    def _probe_offset_type(self) -> type | None:
        """The column's type from its first value; None while there is no row."""
        first = sa.select(self.column).where(self.column.is_not(None)).limit(1)
        with self._connection() as connection:
            value = connection.execute(first).scalar()
        if value is None:
            return None
        return self._supported(type(value), type(value).__name__)

    def _supported(self, python_type: type, described: object) -> type:
        if python_type not in OFFSET_TYPES:
            raise SqlSourceError(
                f"column {self.incrementing_column!r} of {self.relation_name} in"
                f" {self.database} is {described}; the incrementing column must be an integer"
                " or a timestamp that grows with every new row"
            )
        return python_type

    @contextmanager
    def _connection(self, reading_after: str | None = None) -> Iterator[sa.Connection]:
        """A pooled connection; a database error becomes one line naming the source, and
        a lost or refused connection says what to do about it."""
        try:
            with self.engine.connect() as connection:
                yield connection
        except sa.exc.DBAPIError as error:
            reason = " ".join(str(error.orig or error).split())
            where = f"{self.relation_name} in {self.database}"
            if isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError):
                after = "" if reading_after is None else f" after offset {reading_after}"
                raise SqlSourceUnavailable(
                    f"{where}: the database cannot be reached or the connection was lost"
                    f" ({reason}); the run stops reading{after}. Check that the database"
                    " is up and accepts the connector's login, then run the connector again:"
                    " it resumes after its last committed offset, and nothing is lost"
                ) from error
            raise SqlSourceError(f"{where}: {reason}") from error


def raw_json(fields: dict[str, Any]) -> bytes:
    """A row as JSON, the raw payload of its dead letter, whatever types the driver gave:
    bytes as PostgreSQL writes ``bytea`` (``\\x`` and hex digits), anything else without
    a JSON form (a date, a ``Decimal``, a UUID, an interval) as its text."""
    return json.dumps(fields, ensure_ascii=False, default=_json_text).encode(
        "utf-8", "backslashreplace"
    )


def _json_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def _offset_of(value: Any) -> str:
    """The incrementing column's value as a stored offset (ISO 8601 for a timestamp)."""
    return value.isoformat() if isinstance(value, datetime) else str(value)
