"""The fuzz harness: generated records through the real connectors, and what became of them.

Each format is written as its department would hand it over — files of a few thousand
records (so that a crash costs one file, not the run), rows of a table in a database of
its own on the stack's PostgreSQL, batches posted to the HTTP ingest's ASGI app — and run
through the connector the platform runs (:func:`connectors.runner.run_connector`, the
ingest app of :func:`connectors.http_ingest.create_app`), producing to the real broker.
Then the canonical topic and ``platform.dead-letter`` are read back from where they ended
before the run: a connector run returns only after the broker acknowledged everything and
an HTTP answer only after its records were, so the end offsets after the run are the
barrier. Every event and dead letter of the run's source partitions is matched to its
record by source offset (a dead letter first by its position), and counted per category:

* ``in``: records generated; ``published``, ``dead_lettered``, ``refused`` (the HTTP
  request answered 4xx as a whole: nothing written);
* ``missing``: found nowhere; ``wrong``: found, but not as expected (published instead of
  dead-lettered, or the reverse, or refused); ``duplicated``: found more than once, or its
  HTTP request, sent again under the same Idempotency-Key, answered otherwise;
* ``unnamed``: dead letters that do not name the record (the position it was written at)
  or whose reasons name neither a field nor a record-level reason code, and 4xx answers
  without an error code and a message;
* ``crashes``: connector runs that raised (charged to the first missing mutated record);
  ``5xx``: HTTP answers of 500 and up; ``next_lost``: mutated records whose following
  (valid) record was not published; ``stray``: output of the run that matches no record.

Example::

    result = run_formats(FuzzRun(seed=12, records={Format.JSONL: 500}), services)
    print(result.markdown())
    assert not result.failures()
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from connectors.config import ConnectorConfig, FileSourceConfig, HttpIngestConfig, SqlSourceConfig
from connectors.http_ingest import create_app
from connectors.runner import run_connector
from registry import service
from registry.audit import Actor
from registry.db import session_factory, transaction
from registry.directory import RegistryDirectory
from tests.fuzz.generator import (
    CSV_FORMATS,
    ENCODING_OF,
    EXPORT_OF,
    SPREADING,
    Format,
    FuzzRecord,
    Outcome,
    exports,
    generate,
    mutations_for,
    neighbours,
)
from tests.kafka_helpers import ReadMessage, TopicWindow
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import DEAD_LETTER

DEPARTMENTS_DIR = Path(__file__).parents[2] / "connectors" / "departments"
#: Records per file (or SQL table, or connector run): a crash loses at most these.
CHUNK_RECORDS = 2000
#: Records per HTTP request (a mutated body is posted alone).
HTTP_BATCH = 50
#: Every so many HTTP requests one is sent twice under its Idempotency-Key.
RETRY_EVERY = 5
HTTP_DEPARTMENT = "hz-health"  # the registry's code of 杭州市卫生健康委员会
SQL_OFFSET_COLUMN = "行号"
#: A reason code the platform chose, not an exception's name: ``date.invalid``.
REASON_CODE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
EXCEPTION_NAME = re.compile(r"^\w*(Error|Exception)\b")

COUNTS = (
    "in",
    "published",
    "dead_lettered",
    "refused",
    "missing",
    "wrong",
    "duplicated",
    "unnamed",
    "crashes",
    "5xx",
    "next_lost",
    "stray",
)
#: The counts that must be zero in a passing run.
MUST_BE_ZERO = ("missing", "wrong", "duplicated", "unnamed", "crashes", "5xx", "next_lost", "stray")


@dataclass
class FuzzRun:
    """What to generate: records per format, from one seed."""

    seed: int
    records: dict[Format, int]
    categories: frozenset[str] | None = None  # the mutations to draw from; None: all


@dataclass
class Where:
    """Where one record was written: its source partition, offset and position."""

    partition: str
    offset: str
    position: str
    refused: bool = False  # its HTTP request was answered 4xx as a whole
    server_error: bool = False  # … or 5xx
    answer_named: bool = True  # a 4xx answer says what (an error code and a message)
    answered_otherwise: bool = False  # its request, sent again, got another answer


@dataclass
class FuzzResult:
    """Counts per (format, category), and what went wrong, record by record."""

    seed: int
    counts: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    failures_seen: list[dict[str, Any]] = field(default_factory=list)
    crashes: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def count(self, fmt: str, category: str, name: str, n: int = 1) -> None:
        row = self.counts.setdefault((fmt, category), dict.fromkeys(COUNTS, 0))
        row[name] += n

    def by_category(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for (_, category), row in sorted(self.counts.items(), key=lambda kv: kv[0][1]):
            total = totals.setdefault(category, dict.fromkeys(COUNTS, 0))
            for name, n in row.items():
                total[name] += n
        return totals

    def by_format(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for (fmt, _), row in sorted(self.counts.items()):
            total = totals.setdefault(fmt, dict.fromkeys(COUNTS, 0))
            for name, n in row.items():
                total[name] += n
        return totals

    def failures(self) -> dict[tuple[str, str], dict[str, int]]:
        """The (format, category) pairs with a count that must be zero and is not, or that
        do not reconcile (in != published + dead-lettered + refused)."""
        bad = {}
        for key, row in self.counts.items():
            nonzero = {n: row[n] for n in MUST_BE_ZERO if row[n]}
            unaccounted = row["in"] - row["published"] - row["dead_lettered"] - row["refused"]
            if unaccounted:
                nonzero["unaccounted"] = unaccounted
            if nonzero:
                bad[key] = nonzero
        return bad

    def markdown(self) -> str:
        lines = [f"Fuzz run, seed {self.seed}: {self.total('in')} records", ""]
        for title, table in (("category", self.by_category()), ("format", self.by_format())):
            lines.append("| " + " | ".join([title, *COUNTS]) + " |")
            lines.append("|" + " --- |" * (len(COUNTS) + 1))
            for name, row in table.items():
                lines.append("| " + " | ".join([name, *(str(row[c]) for c in COUNTS)]) + " |")
            total = [str(sum(r[c] for r in table.values())) for c in COUNTS]
            lines.append("| **all** | " + " | ".join(total) + " |")
            lines.append("")
        return "\n".join(lines)

    def examples(self, each: int = 5) -> list[dict[str, Any]]:
        """The first ``each`` failures of every format and category."""
        kept: dict[tuple[Any, Any], int] = defaultdict(int)
        examples = []
        for failure in self.failures_seen:
            key = (failure.get("format"), failure.get("category"))
            kept[key] += 1
            if kept[key] <= each:
                examples.append(failure)
        return examples

    def total(self, name: str) -> int:
        return sum(row[name] for row in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "records": self.total("in"),
            "by_category": self.by_category(),
            "by_format": self.by_format(),
            "by_format_and_category": [
                {"format": f, "category": c, **row} for (f, c), row in sorted(self.counts.items())
            ],
            "failures": [
                {"format": f, "category": c, **row} for (f, c), row in self.failures().items()
            ],
            "examples": self.examples(),
            "crashes": self.crashes,
            "seconds": self.seconds,
        }


@dataclass
class Services:
    """What the harness runs against."""

    kafka: KafkaClients  # the administrator: reads the topics back
    connectors: KafkaClients  # svc-connectors: what the connectors run as
    settings: Settings
    registry_url: str  # a migrated registry database with the sample province's catalog
    workdir: Path


Progress = Callable[[str], None]


def run_records(
    fmt: Format,
    records: list[FuzzRecord],
    services: Services,
    result: FuzzResult,
    progress: Progress | None = None,
) -> None:
    """Run records made elsewhere (e.g. by hypothesis) through one format, in chunks;
    ``progress`` is told of each chunk done."""
    for start in range(0, len(records), CHUNK_RECORDS):
        chunk = records[start : start + CHUNK_RECORDS]
        _run_chunk(fmt, chunk, services, result)
        if progress:
            progress(f"{fmt}: {start + len(chunk)} of {len(records)} records run")


def run_formats(
    run: FuzzRun,
    services: Services,
    result: FuzzResult | None = None,
    progress: Progress | None = None,
) -> FuzzResult:
    """Generate, run and count every format of ``run`` (into ``result``, when given)."""
    result = result or FuzzResult(run.seed)
    for fmt, count in run.records.items():
        started = time.perf_counter()
        for records in _files_of(fmt, count, run):
            run_records(fmt, records, services, result, progress)
        seconds = result.seconds.get(fmt.value, 0.0) + time.perf_counter() - started
        result.seconds[fmt.value] = round(seconds, 1)
    return result


def _files_of(fmt: Format, count: int, run: FuzzRun) -> Iterator[list[FuzzRecord]]:
    """The format's records: those of a :data:`SPREADING` category (a share of ``count``)
    in files of their own, their valid neighbours counted apart; then all the others."""
    every = frozenset(m.category for m in mutations_for(fmt, run.categories))
    spreading = sorted(every & SPREADING)
    share = max(20, count // len(every)) if every and count > 40 else count
    start = 0
    for category in spreading:
        records = generate(fmt, share, run.seed, categories=frozenset({category}), start=start)
        for record in records:
            if not record.mutated:
                record.category = neighbours(category)
        yield records
        start += share
    if count > start:
        yield generate(fmt, count - start, run.seed, categories=every - SPREADING, start=start)


def _run_chunk(
    fmt: Format, records: list[FuzzRecord], services: Services, result: FuzzResult
) -> None:
    topic = exports()[EXPORT_OF[fmt]].mapping.record_type.topic.name
    events, letters = (
        TopicWindow(services.kafka, topic),
        TopicWindow(services.kafka, DEAD_LETTER.name),
    )
    crash: str | None = None
    where: list[Where] = []
    try:
        _publish(fmt, records, services, where)
    except Exception:  # a crash of the connector is what is being counted
        crash = traceback.format_exc(limit=8)
    _count(fmt, records, where, events.read(), letters.read(), crash, result)


def _publish(
    fmt: Format, records: list[FuzzRecord], services: Services, where: list[Where]
) -> None:
    """Write the records and run them through the connector; ``where`` is filled with where
    each was written before the connector runs (so that a crash still knows)."""
    if fmt is Format.HTTP:
        _post(records, services, where)
        return
    if fmt is Format.SQL:
        with _department_database(services.settings) as url:
            where.extend(_insert(url, records))
            source = SqlSourceConfig(
                url=url,
                table="fuzz_export",
                incrementing_column=SQL_OFFSET_COLUMN,
                fetch_size=500,
            )
            _run(fmt, source, services)
        return
    path = services.workdir / f"{fmt.value}-{uuid.uuid4().hex[:10]}"
    if fmt in CSV_FORMATS:
        path = path.with_suffix(".csv")
        written = _write_csv(path, records, ENCODING_OF[fmt])
    elif fmt is Format.JSONL:
        path = path.with_suffix(".jsonl")
        written = _write_jsonl(path, records)
    else:
        path = path.with_suffix(".xlsx")
        written = _write_xlsx(path, records)
    where.extend(written)
    _run(fmt, FileSourceConfig(path=path, encoding=ENCODING_OF.get(fmt, "utf-8")), services)


def _run(fmt: Format, source: FileSourceConfig | SqlSourceConfig, services: Services) -> None:
    config = ConnectorConfig(
        name=f"fuzz-{fmt.value}-{uuid.uuid4().hex[:10]}",
        mapping=DEPARTMENTS_DIR / f"{EXPORT_OF[fmt]}.yaml",
        batch_size=1000,
        source=source,
    )
    run_connector(config, services.connectors)


# -- writing the formats ----------------------------------------------------------------------


def _patched(data: bytes, patch: tuple[bytes, bytes] | None) -> bytes:
    if patch is None:
        return data
    old, new = patch
    assert old in data, f"the sentinel {old[:40]!r} is not in the record"
    return data.replace(old, new, 1)


def _cell_text(value: Any) -> str:
    return "" if value is None else str(value)


def _write_csv(path: Path, records: Sequence[FuzzRecord], encoding: str) -> list[Where]:
    columns = exports()[EXPORT_OF[records[0].format]].columns
    partition = f"file:{path.resolve()}"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    where = []
    with path.open("wb") as handle:
        head = buffer.getvalue().encode(encoding)
        handle.write(head)
        position, line = len(head), 2
        for record in records:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow([_cell_text(record.row.get(c)) for c in columns])
            data = _patched(
                buffer.getvalue().encode(encoding), record.patch.csv if record.patch else None
            )
            handle.write(data)
            position += len(data)
            where.append(Where(partition, str(position), f"line {line}"))
            line += data.count(b"\n")
    return where


def _json_text(record: FuzzRecord) -> bytes:
    text = json.dumps(record.row, ensure_ascii=False, default=str)
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate drawn by hypothesis: sent as its escape
        data = json.dumps(record.row, default=str).encode()
    return _patched(data, record.patch.json if record.patch else None)


def _write_jsonl(path: Path, records: Sequence[FuzzRecord]) -> list[Where]:
    partition = f"file:{path.resolve()}"
    where = []
    with path.open("wb") as handle:
        position = 0
        for line, record in enumerate(records, start=1):
            data = _json_text(record) + b"\n"
            handle.write(data)
            position += len(data)
            where.append(Where(partition, str(position), f"line {line}"))
    return where


def _write_xlsx(path: Path, records: Sequence[FuzzRecord]) -> list[Where]:
    from openpyxl import Workbook

    columns = exports()[EXPORT_OF[records[0].format]].columns
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("导出数据")
    sheet.append(list(columns))
    for record in records:
        sheet.append([record.row.get(c) for c in columns])
    workbook.save(path)
    partition = f"file:{path.resolve()}"
    return [Where(partition, str(n), f"row {n}") for n in range(2, len(records) + 2)]


@contextmanager
def _department_database(settings: Settings) -> Iterator[str]:
    """A throwaway database of the stack's PostgreSQL standing in for a department's."""
    name = f"fuzz_dept_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(settings.local_database_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield settings.local_database_url(name)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _insert(url: str, records: Sequence[FuzzRecord]) -> list[Where]:
    """The records as rows of ``fuzz_export`` (text columns, numbered by 行号)."""
    columns = exports()[EXPORT_OF[Format.SQL]].columns
    metadata = sa.MetaData()
    table = sa.Table(
        "fuzz_export",
        metadata,
        sa.Column(SQL_OFFSET_COLUMN, sa.BigInteger, primary_key=True),
        *(sa.Column(c, sa.Text) for c in columns),
    )
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        rows = [
            {SQL_OFFSET_COLUMN: n, **{c: r.row.get(c) for c in columns}}
            for n, r in enumerate(records, start=1)
        ]
        with engine.begin() as connection:
            connection.execute(table.insert(), rows)
        partition = f"sql:{engine.url.host}/{engine.url.database}/fuzz_export"
    finally:
        engine.dispose()
    return [
        Where(partition, str(n), f"row {SQL_OFFSET_COLUMN}={n}") for n in range(1, len(records) + 1)
    ]


# -- the HTTP ingest ----------------------------------------------------------------------------


def _post(records: list[FuzzRecord], services: Services, where: list[Where]) -> None:
    """Post the records in batches, each under an Idempotency-Key; every
    :data:`RETRY_EVERY`-th batch is sent twice, as a client that lost the first answer does."""
    mapping = exports()[EXPORT_OF[Format.HTTP]].mapping
    partition = f"http:{mapping.department.uscc}"
    url = f"/v1/records/{mapping.record_type.name}"
    with _ingest(services) as (client, token):
        for number, batch in enumerate(_batches(records)):
            body = batch[0].body or _body(batch)
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"fuzz-{uuid.uuid4().hex}",
            }
            response = client.post(url, content=body, headers=headers)
            answered_otherwise = False
            if number % RETRY_EVERY == 0:
                again = client.post(url, content=body, headers=headers)
                first = (response.status_code, response.content)
                answered_otherwise = (again.status_code, again.content) != first
            if response.status_code != 200:
                refused = 400 <= response.status_code < 500
                failed = response.status_code >= 500
                named = _says_what(response.content)
                where.extend(
                    Where(partition, "", "", refused, failed, named, answered_otherwise)
                    for _ in batch
                )
                continue
            request_id = response.json()["request_id"]
            for index, _ in enumerate(batch):
                where.append(
                    Where(
                        partition,
                        f"{request_id}:{index}",
                        f"request {request_id}, record {index}",
                        answered_otherwise=answered_otherwise,
                    )
                )


def _says_what(answer: bytes) -> bool:
    try:
        error = json.loads(answer)
    except ValueError:
        return False
    return isinstance(error, dict) and bool(error.get("error")) and bool(error.get("message"))


def _batches(records: list[FuzzRecord]) -> Iterator[list[FuzzRecord]]:
    batch: list[FuzzRecord] = []
    for record in records:
        # posted alone: a request that must be refused, or may be, refuses no other record
        if record.alone or record.expected in (Outcome.REFUSED, Outcome.ANY):
            if batch:
                yield batch
                batch = []
            yield [record]
            continue
        batch.append(record)
        if len(batch) == HTTP_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _body(batch: list[FuzzRecord]) -> bytes:
    return b'{"records": [' + b", ".join(_json_text(r) for r in batch) + b"]}"


@contextmanager
def _ingest(services: Services) -> Iterator[tuple[TestClient, str]]:
    """The HTTP ingest app with the department's mapping, and a registry token of its."""
    with transaction(session_factory(services.registry_url)) as session:
        token = service.issue_token(session, Actor.admin("fuzz"), HTTP_DEPARTMENT).token
    config = ConnectorConfig(
        name=f"fuzz-http-{uuid.uuid4().hex[:10]}",
        source=HttpIngestConfig(
            mappings=[DEPARTMENTS_DIR / f"{EXPORT_OF[Format.HTTP]}.yaml"], max_batch=HTTP_BATCH
        ),
    )
    directory = RegistryDirectory(services.registry_url, None, cache_seconds=0)
    app = create_app(config, services.connectors, directory)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, token


# -- counting -----------------------------------------------------------------------------------


def _envelope(message: ReadMessage) -> dict[str, Any]:
    value: dict[str, Any] = message.value.get("envelope", message.value)
    return value


def _names_the_record(letter: dict[str, Any], where: Where) -> bool:
    if letter["position"] != where.position or not letter["reasons"]:
        return False
    return all(
        reason["message"]
        and not EXCEPTION_NAME.match(reason["message"])
        and (reason["field"] or REASON_CODE.match(reason["code"]))
        for reason in letter["reasons"]
    )


def _count(
    fmt: Format,
    records: list[FuzzRecord],
    where: list[Where],
    events: list[ReadMessage],
    letters: list[ReadMessage],
    crash: str | None,
    result: FuzzResult,
) -> None:
    partitions = {written.partition for written in where}
    by_offset: dict[tuple[str, str], int] = {}
    by_position: dict[tuple[str, str], int] = {}
    for i, written in enumerate(where):
        if written.offset:
            by_offset[(written.partition, written.offset)] = i
            by_position[(written.partition, written.position)] = i
    published: dict[int, int] = defaultdict(int)
    dead: dict[int, list[dict[str, Any]]] = defaultdict(list)
    stray: list[str] = []
    for message in events:
        envelope = _envelope(message)
        if envelope["source_partition"] not in partitions:
            continue
        event_of = by_offset.get((envelope["source_partition"], envelope["source_offset"]))
        if event_of is None:
            stray.append(f"event at {envelope['source_offset']}")
        else:
            published[event_of] += 1
    for message in letters:
        letter = message.value
        if letter["source_partition"] not in partitions:
            continue
        key = (letter["source_partition"], letter["position"])
        letter_of = by_position.get(
            key, by_offset.get((letter["source_partition"], letter["source_offset"]))
        )
        if letter_of is None:
            stray.append(f"dead letter at {letter['position']} / {letter['source_offset']}")
        else:
            dead[letter_of].append(letter)
    if stray:
        result.count(fmt.value, "(unmatched)", "stray", len(stray))
        result.failures_seen.append({"format": fmt.value, "stray": stray[:20]})

    outcomes: list[str] = []
    for i, record in enumerate(records):
        w: Where | None = where[i] if i < len(where) else None
        result.count(fmt.value, record.category, "in")
        found = published[i] + len(dead[i])
        if w is not None and w.server_error:
            result.count(fmt.value, record.category, "5xx")
        if w is not None and w.refused:
            actual = Outcome.REFUSED.value
        elif found == 0:
            actual = "missing"
        else:
            actual = (Outcome.PUBLISHED if published[i] else Outcome.DEAD_LETTERED).value
        outcomes.append(actual)
        if actual in (Outcome.PUBLISHED, Outcome.DEAD_LETTERED, Outcome.REFUSED):
            result.count(fmt.value, record.category, actual)
        if actual == "missing":
            result.count(fmt.value, record.category, "missing")
        elif not record.expected.admits(actual):
            result.count(fmt.value, record.category, "wrong")
        retried_otherwise = w is not None and w.answered_otherwise
        if found > 1 or retried_otherwise:
            result.count(fmt.value, record.category, "duplicated")
        unnamed = [letter for letter in dead[i] if w is None or not _names_the_record(letter, w)]
        if unnamed or (w is not None and w.refused and not w.answer_named):
            result.count(fmt.value, record.category, "unnamed")
        if not record.expected.admits(actual) or found > 1 or unnamed or retried_otherwise:
            result.failures_seen.append(
                {
                    "format": fmt.value,
                    "category": record.category,
                    "record_id": record.record_id,
                    "position": w.position if w else None,
                    "expected": record.expected.value,
                    "actual": actual,
                    "found": found,
                    "reasons": [r for letter in dead[i] for r in letter["reasons"]][:5],
                    "unnamed_position": [letter["position"] for letter in unnamed][:3],
                }
            )
    for i, record in enumerate(records[:-1]):
        if record.mutated and outcomes[i + 1] != Outcome.PUBLISHED:
            result.count(fmt.value, record.category, "next_lost")
            result.failures_seen.append(
                {
                    "format": fmt.value,
                    "category": record.category,
                    "record_id": record.record_id,
                    "position": where[i].position if i < len(where) else None,
                    "the next record": outcomes[i + 1],
                }
            )
    if crash is not None:
        culprit = next(
            (r for r, o in zip(records, outcomes, strict=True) if o == "missing" and r.mutated),
            records[0],
        )
        result.count(fmt.value, culprit.category, "crashes")
        result.crashes.append({"format": fmt.value, "category": culprit.category, "error": crash})


def result_json(result: FuzzResult) -> str:
    return json.dumps(result.as_dict(), ensure_ascii=False, indent=2, default=str)
