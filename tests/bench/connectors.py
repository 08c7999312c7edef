"""Connector throughput against a bare confluent-kafka producer, in the same run.

    make bench            # or: python -m tests.bench.connectors --records 100000

For each source (CSV in GB18030 and UTF-8, JSON Lines, Excel, a PostgreSQL table, HTTP
ingest) the sample province's department records go through the whole connector path —
parse, map, validate, Avro-serialise, produce, wait for acknowledgement, commit the
offset — on the running local stack. The baseline then sends the very bytes the
connector produced (same keys, same Avro payloads, so the same sizes) with a bare
confluent-kafka producer configured like the platform's (idempotent, acks=all, zstd)
to ``platform.bench``. Results go to ``.local/bench/connectors.json``.

"Where the time goes" times each stage of the largest CSV alone, in the main thread.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml
from confluent_kafka import TopicPartition

from app.samples import DEPARTMENTS_DIR, SampleGenerator, write_export, write_jsonl
from connectors.base import Publisher
from connectors.config import ConnectorConfig, FileSourceConfig, SqlSourceConfig
from connectors.file_source import FileSource
from connectors.mapping import DepartmentMapping
from connectors.runner import run_connector
from connectors.validation import validate
from deploy.local.stack import LocalStack
from registry import service
from registry.audit import Actor
from registry.db import migrate, session_factory, transaction
from schemas import register_all
from tests.stream_worker import free_port
from xietong.kafka import KafkaClients, clients
from xietong.settings import get_settings
from xietong.topics import BENCH, apply_topics

FILE_TARGET = 30_000  # records/s, issue 3
BASELINE_SHARE_TARGET = 1 / 3


@dataclass
class Result:
    source: str
    connector: str
    record_type: str
    records: int
    published: int
    dead_lettered: int
    seconds: float
    records_per_second: float
    average_payload_bytes: float
    baseline_records_per_second: float
    share_of_baseline: float
    target_records_per_second: int | None
    meets_target: bool | None


def payloads_since(
    kafka: KafkaClients, topic: str, start: dict[int, int]
) -> list[tuple[bytes, bytes]]:
    """The (key, value) bytes added to ``topic`` after the offsets in ``start``."""
    consumer = kafka.consumer(group_id=f"bench-{uuid.uuid4()}")
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in start
        }
        wanted = {p: end for p, end in ends.items() if end > start[p]}
        consumer.assign([TopicPartition(topic, p, start[p]) for p in wanted])
        out: list[tuple[bytes, bytes]] = []
        while wanted:
            batch = consumer.consume(10_000, timeout=5)
            if not batch:
                raise RuntimeError(f"{topic}: stopped short of {wanted}")
            for message in batch:
                if message.error():
                    continue
                out.append((message.key() or b"", message.value() or b""))
                if (message.offset() or 0) + 1 >= wanted.get(message.partition() or 0, 0):
                    wanted.pop(message.partition() or 0, None)
        return out
    finally:
        consumer.close()


def end_offsets(kafka: KafkaClients, topic: str) -> dict[int, int]:
    consumer = kafka.consumer(group_id=f"bench-{uuid.uuid4()}")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def bare_producer_rate(kafka: KafkaClients, messages: list[tuple[bytes, bytes]]) -> float:
    """Records/s of a bare producer sending pre-encoded messages, until all are acknowledged."""
    producer = kafka.producer()
    started = time.perf_counter()
    for index, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(BENCH.name, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        if index % 1000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("baseline producer did not drain")
    return len(messages) / (time.perf_counter() - started)


def measure(
    kafka: KafkaClients,
    source: str,
    connector: str,
    record_type_topic: str,
    run: Callable[[], tuple[int, int, int]],
    target: int | None,
) -> Result:
    start = end_offsets(kafka, record_type_topic)
    started = time.perf_counter()
    read, published, dead = run()
    seconds = time.perf_counter() - started
    produced = payloads_since(kafka, record_type_topic, start)
    baseline = bare_producer_rate(kafka, produced)
    rate = read / seconds
    return Result(
        source=source,
        connector=connector,
        record_type=record_type_topic,
        records=read,
        published=published,
        dead_lettered=dead,
        seconds=round(seconds, 3),
        records_per_second=round(rate),
        average_payload_bytes=round(sum(len(v) for _, v in produced) / max(1, len(produced)), 1),
        baseline_records_per_second=round(baseline),
        share_of_baseline=round(rate / baseline, 3),
        target_records_per_second=target,
        meets_target=None
        if target is None
        else rate >= target and rate / baseline >= BASELINE_SHARE_TARGET,
    )


def file_run(
    kafka: KafkaClients, name: str, path: Path, workers: int = 0
) -> Callable[[], tuple[int, int, int]]:
    config = ConnectorConfig.load(DEPARTMENTS_DIR / f"{name}.connector.yaml")
    assert isinstance(config.source, FileSourceConfig)
    config.name = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    source = config.source
    config.source = FileSourceConfig(
        path=path, encoding=source.encoding, delimiter=source.delimiter
    )
    config.workers = workers

    def run() -> tuple[int, int, int]:
        report = run_connector(config, kafka)
        assert report.reconciles
        return report.read, report.published, report.dead_lettered

    return run


def sql_run(
    kafka: KafkaClients, rows: list[dict[str, Any]], name: str
) -> Callable[[], tuple[int, int, int]]:
    """Load the rows into a department database table; run the SQL source over it."""
    settings = kafka.settings
    database = f"bench_dept_{secrets.token_hex(3)}"
    admin = sa.create_engine(settings.local_database_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    url = settings.local_database_url(database)
    engine = sa.create_engine(url)
    columns = list(rows[0])
    table = sa.Table(
        "licence_export",
        sa.MetaData(),
        sa.Column("行号", sa.BigInteger, primary_key=True, autoincrement=True),
        *(sa.Column(column, sa.Text) for column in columns),
    )
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            table.insert(), [{c: _text(row.get(c)) for c in columns} for row in rows]
        )
    engine.dispose()
    config = ConnectorConfig(
        name=f"bench-sql-{uuid.uuid4().hex[:6]}",
        mapping=DEPARTMENTS_DIR / f"{name}.yaml",
        source=SqlSourceConfig(url=url, table="licence_export", incrementing_column="行号"),
    )

    def run() -> tuple[int, int, int]:
        report = run_connector(config, kafka)
        assert report.reconciles
        return report.read, report.published, report.dead_lettered

    return run


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def registry_token(uscc: str) -> str:
    """A registry token of the department with ``uscc``, in the registry database the HTTP
    ingest verifies tokens against (the sample province's catalog loaded)."""
    url = get_settings().database_url
    migrate(url)
    with transaction(session_factory(url)) as session:
        service.load_catalog(session, Actor.system("bench-connectors"))
        [code] = [row.code for row in service.list_departments(session) if row.uscc == uscc]
        return service.issue_token(session, Actor.admin("bench-connectors"), code).token


def http_run(
    rows: list[dict[str, Any]], name: str, workdir: Path, batch: int = 500
) -> Callable[[], tuple[int, int, int]]:
    """Serve HTTP ingest in its own process; POST the rows in batches as the department."""
    mapping = DepartmentMapping.load(DEPARTMENTS_DIR / f"{name}.yaml")
    token = registry_token(mapping.department.uscc)
    # a port of its own: on a fixed one, a server left by an earlier run (or make run's)
    # answered /health, then refused this token issued in another registry (401)
    port = free_port()
    config_file = workdir / "http.connector.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "name": f"bench-http-{uuid.uuid4().hex[:6]}",
                "source": {
                    "kind": "http",
                    "port": port,
                    "mappings": [str(DEPARTMENTS_DIR / f"{name}.yaml")],
                },
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )

    def run() -> tuple[int, int, int]:
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "connect", "run", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                deadline = time.monotonic() + 60
                while True:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the HTTP ingest server did not start: {config_file}")
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.2)
                accepted = rejected = 0
                headers = {"Authorization": f"Bearer {token}"}
                for start in range(0, len(rows), batch):
                    answer = client.post(
                        f"/v1/records/{mapping.record_type.name}",
                        json={"records": rows[start : start + batch]},
                        headers=headers,
                    )
                    answer.raise_for_status()
                    body = answer.json()
                    accepted += body["accepted"]
                    rejected += body["rejected"]
            return accepted + rejected, accepted, rejected
        finally:
            server.terminate()
            server.wait(30)

    return run


def stage_breakdown(path: Path, name: str, encoding: str) -> dict[str, float]:
    """Microseconds per record of each stage of the inline connector path, streamed.

    Each record is timed through reading and parsing, mapping, validation, the whole
    encoding (mapping and validation again, envelope, Avro) and producing; the wait for
    the last acknowledgements is timed once at the end.
    """
    kafka = clients()
    mapping = DepartmentMapping.load(DEPARTMENTS_DIR / f"{name}.yaml")
    publisher = Publisher(f"bench-stages-{uuid.uuid4().hex[:6]}", mapping, kafka)
    totals = dict.fromkeys(("read_and_parse", "map", "validate", "encode", "produce"), 0.0)
    clock = time.perf_counter
    count = 0
    records = iter(FileSource(path, encoding=encoding).read(None))
    while True:
        started = clock()
        record = next(records, None)
        read = clock()
        if record is None:
            break
        if record.fields is not None:
            mapped = mapping.map(record.fields)
            mapped_at = clock()
            validate(mapping.record_type.name, mapped.fields)
            validated_at = clock()
            totals["map"] += mapped_at - read
            totals["validate"] += validated_at - mapped_at
        encode_started = clock()
        encoded = publisher.encoder.encode(record)
        encoded_at = clock()
        publisher.send(encoded)
        if count % 1000 == 0:
            publisher.poll()
        totals["read_and_parse"] += read - started
        totals["encode"] += encoded_at - encode_started
        totals["produce"] += clock() - encoded_at
        count += 1
    started = clock()
    publisher.flush()
    waited = clock() - started
    stages = {stage: seconds / count * 1e6 for stage, seconds in totals.items()}
    stages["serialize_and_envelope"] = stages["encode"] - stages["map"] - stages["validate"]
    stages["wait_for_acknowledgements"] = waited / count * 1e6
    return {stage: round(us, 1) for stage, us in stages.items()}


@dataclass(frozen=True)
class BenchExports:
    registrations: Path
    registrations_encoding: str
    licences_csv: Path
    licences_jsonl: Path
    penalties_xlsx: Path
    licence_rows: list[dict[str, Any]]


def write_bench_exports(workdir: Path, records: int, small: int) -> BenchExports:
    """Sample department exports of the sizes measured; the sample itself is not kept."""
    generator = SampleGenerator(None, seed=random.randrange(1 << 30), bad_share=0.05)
    # Registrations are ~44 % and 双公示 licences ~16 % of a sample: generate enough of both.
    sample = generator.generate(int(records / 0.16) + 1000)

    def export_of(name: str, limit: int, suffix: str | None = None) -> Path:
        rows = sample.exports[name][:limit]
        export = generator.exports[name]
        path = workdir / (export.file_name if suffix is None else f"{name}{suffix}")
        if suffix == ".jsonl":
            write_jsonl(path, [r for r in rows if r.defect != "wrong_encoding"])
        else:
            write_export(path, export, rows)
        return path

    licences = sample.exports["zj-drc-licence"][:small]
    return BenchExports(
        registrations=export_of("hz-amr-registration", records),
        registrations_encoding=generator.exports["hz-amr-registration"].encoding,
        licences_csv=export_of("zj-drc-licence", records),
        licences_jsonl=export_of("zj-drc-licence", records, ".jsonl"),
        penalties_xlsx=export_of("zj-amr-penalty", small),
        licence_rows=[dict(r.row) for r in licences if r.defect != "wrong_encoding"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000, help="records per file source")
    parser.add_argument("--small", type=int, default=20_000, help="records for xlsx, SQL and HTTP")
    parser.add_argument("--out", type=Path, default=Path(".local/bench/connectors.json"))
    args = parser.parse_args()

    settings = get_settings()
    LocalStack(settings).up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    kafka = clients()
    apply_topics(kafka.admin(), settings)
    register_all(kafka.schema_registry())

    workdir = (args.out.parent / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"generating sample records in {workdir} …", file=sys.stderr)
    exports = write_bench_exports(workdir, args.records, args.small)
    # The generated sample was a heap of several hundred thousand objects; collect it now,
    # or the garbage collector's passes over it are charged to the connectors measured.
    gc.collect()
    registrations = exports.registrations
    licence_rows = exports.licence_rows

    registrations_topic, licences_topic = "market.registrations", "permits.licences"
    plan: list[tuple[str, str, str, Callable[[], tuple[int, int, int]], int | None]] = [
        (
            "file csv gb18030",
            "hz-amr-registration",
            registrations_topic,
            file_run(kafka, "hz-amr-registration", registrations),
            FILE_TARGET,
        ),
        (
            "file csv gb18030, 2 worker processes",
            "hz-amr-registration",
            registrations_topic,
            file_run(kafka, "hz-amr-registration", registrations, workers=2),
            FILE_TARGET,
        ),
        (
            "file csv utf-8",
            "zj-drc-licence",
            licences_topic,
            file_run(kafka, "zj-drc-licence", exports.licences_csv),
            FILE_TARGET,
        ),
        (
            "file jsonl",
            "zj-drc-licence",
            licences_topic,
            file_run(kafka, "zj-drc-licence", exports.licences_jsonl),
            FILE_TARGET,
        ),
        (
            "file xlsx",
            "zj-amr-penalty",
            "enforcement.penalties",
            file_run(kafka, "zj-amr-penalty", exports.penalties_xlsx),
            None,
        ),
        (
            "sql postgresql",
            "zj-drc-licence",
            licences_topic,
            sql_run(kafka, licence_rows, "zj-drc-licence"),
            None,
        ),
        (
            "http ingest",
            "zj-drc-licence",
            licences_topic,
            http_run(licence_rows, "zj-drc-licence", workdir),
            None,
        ),
    ]
    results = []
    for source, connector, topic, run, target in plan:
        print(f"{source}: running …", file=sys.stderr)
        result = measure(kafka, source, connector, topic, run, target)
        print(
            f"{source}: {result.records} records in {result.seconds:.1f} s"
            f" = {result.records_per_second:,} records/s; bare producer"
            f" {result.baseline_records_per_second:,}/s (x{result.share_of_baseline:.2f})",
            file=sys.stderr,
        )
        results.append(result)

    stages = stage_breakdown(registrations, "hz-amr-registration", exports.registrations_encoding)
    document = {
        "benchmark": "connectors",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kafka": settings.kafka_version,
            "schema_registry": f"apicurio {settings.apicurio_version}",
        },
        "targets": {
            "file_records_per_second": FILE_TARGET,
            "share_of_bare_producer": round(BASELINE_SHARE_TARGET, 3),
        },
        "results": [asdict(result) for result in results],
        "where_the_time_goes_us_per_record": {
            "source": "file csv gb18030 (registrations)",
            **stages,
        },
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(document, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
