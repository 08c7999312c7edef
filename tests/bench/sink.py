"""The credit sink: rows/s into PostgreSQL through the sink, against a bare ``COPY`` of
the same rows, in the same run.

    make bench            # or: python -m tests.bench.sink --records 20000 --copies 3

On the running local stack, the benchmark

1. generates ``--records`` canonical records of the sample province (registrations,
   licences, penalties, list entries), each sent ``--copies`` times with fresh event
   ids, to topics of its own (``bench.sink.*``: nothing reaches the platform's topics);
2. runs the sink (``CreditSink``, the code of ``xietong sink run``) into a fresh
   database through that backlog — Kafka fetch, Avro decoding, rows, ``COPY`` into
   staging tables, ``INSERT … ON CONFLICT``, the ``entities`` upserts and the offsets in
   one transaction per batch — and times it until its stored offsets reach the ends:
   **rows/s through the sink** (rows written, every table);
3. copies the very rows the sink wrote (read back with ``COPY … TO``) into another fresh
   database with the same tables and indexes, with one bare ``COPY … FROM`` per table:
   **rows/s of a bare COPY**, the ceiling of this PostgreSQL on this machine.

Targets: ≥ 20,000 rows/s, and ≥ half the bare COPY's rate. Results:
``.local/bench/sink.json``.
"""

from __future__ import annotations

import argparse
import io
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka import TopicPartition

from connectors.sink import db
from connectors.sink.sink import CreditSink, SinkSettings
from connectors.sink.tables import TABLES_BY_TOPIC, TableMapping
from tests.bench.harness import machine, produce_backlog, write_report
from tests.sink_records import Outgoing, canonical, encoded
from xietong.ids import deterministic_id
from xietong.kafka import KafkaClients
from xietong.settings import get_settings
from xietong.topics import TopicKey, TopicSpec, apply_topics

PREFIX = "bench.sink."
CANONICAL_TOPICS = (
    "market.registrations",
    "permits.licences",
    "enforcement.penalties",
    "credit.list-entries",
)


def bench_topics() -> dict[str, TableMapping]:
    return {f"{PREFIX}{topic}": TABLES_BY_TOPIC[topic] for topic in CANONICAL_TOPICS}


def records(count: int, copies: int) -> list[Outgoing]:
    """``count`` sample records, each ``copies`` times with its own event id."""
    base = canonical(count, seed=2026)
    out = []
    for copy in range(copies):
        for item in base:
            envelope = {
                **item.value["envelope"],
                "event_id": deterministic_id(f"bench|{copy}|{item.value['envelope']['event_id']}"),
            }
            out.append(Outgoing(item.record, item.key, {**item.value, "envelope": envelope}))
    return out


def ends(kafka: KafkaClients, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = kafka.consumer("bench-sink-ends")
    try:
        metadata = consumer.list_topics(timeout=10).topics
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t in topics
            for p in metadata[t].partitions
        }
    finally:
        consumer.close()


def fresh_database(name: str) -> str:
    server = sa.make_url(get_settings().credit_database_url)
    maintenance = sa.create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    with maintenance.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    maintenance.dispose()
    url = server.set(database=name).render_as_string(hide_password=False)
    db.create_database(url)
    db.migrate(url)
    return url


def store_offsets(url: str, offsets: dict[tuple[str, int], int]) -> None:
    conn = db.connect(url)
    with conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO sink_offsets (topic, partition, next_offset) VALUES (%s, %s, %s)",
            [(t, p, o) for (t, p), o in offsets.items()],
        )
    conn.close()


def through_the_sink(
    kafka: KafkaClients, url: str, targets: dict[tuple[str, int], int], batch_size: int
) -> dict[str, Any]:
    sink = CreditSink(
        kafka.settings,
        SinkSettings(metrics_port=None, batch_size=batch_size, batch_wait=0.05),
        url,
        clients=kafka,  # the administrator reads the benchmark's own topics
        topics=bench_topics(),
        inboxes=False,
    )
    sink.start()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(progress=sink.run()))
    conn = db.connect(url)
    started = time.perf_counter()
    thread.start()
    while True:
        with conn.cursor() as cursor:
            cursor.execute("SELECT topic, partition, next_offset FROM sink_offsets")
            stored = {(t, p): o for t, p, o in cursor.fetchall()}
        conn.rollback()
        if all(stored.get(key, 0) >= end for key, end in targets.items()):
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    sink.stop()
    thread.join(30)
    sink.close()
    conn.close()
    progress = result["progress"]
    rows = {table: n for table, n in progress.rows.items() if n}
    return {
        "messages": progress.messages,
        "batches": progress.batches,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(sum(rows.values()) / seconds),
        "messages_per_second": round(progress.messages / seconds),
    }


def bare_copy(source_url: str, tables: list[str]) -> dict[str, Any]:
    """COPY the rows the sink wrote into a fresh database with the same tables."""
    target_url = fresh_database("xietong_credit_bench_copy")
    source = db.connect(source_url)
    dumps: dict[str, tuple[str, io.StringIO]] = {}
    with source.cursor() as cursor:
        for table in tables:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = %s AND column_name <> 'ingested_at' ORDER BY ordinal_position",
                (table,),
            )
            columns = ", ".join(row[0] for row in cursor.fetchall())
            buffer = io.StringIO()
            cursor.copy_expert(f"COPY (SELECT {columns} FROM {table}) TO STDOUT", buffer)
            dumps[table] = (columns, buffer)
    source.close()
    target = db.connect(target_url)
    rows = 0
    started = time.perf_counter()
    with target.cursor() as cursor:
        for table, (columns, buffer) in dumps.items():
            buffer.seek(0)
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)
            rows += cursor.rowcount
    target.commit()
    seconds = time.perf_counter() - started
    target.close()
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path(".local/bench/sink.json"))
    args = parser.parse_args()

    settings = get_settings()
    kafka = KafkaClients(settings)
    topics = list(bench_topics())
    apply_topics(
        kafka.admin(),
        settings,
        [
            TopicSpec(name, "credit sink benchmark", TopicKey.USCC, retention_ms=3600_000)
            for name in topics
        ],
    )
    print(f"generating {args.records} records × {args.copies} …", flush=True)
    payloads = []
    for topic, key, value in encoded(kafka, records(args.records, args.copies)):
        payloads.append((PREFIX + topic, key, value))
    starts = ends(kafka, topics)
    produce_backlog(kafka, payloads)
    targets = ends(kafka, topics)
    print(f"{len(payloads)} messages on {', '.join(topics)}", flush=True)

    url = fresh_database("xietong_credit_bench")
    store_offsets(url, starts)
    sink = through_the_sink(kafka, url, targets, args.batch_size)
    print(f"sink: {sink['rows_per_second']} rows/s ({sink['rows']})", flush=True)
    copy = bare_copy(url, list(sink["rows"]))
    print(f"bare COPY: {copy['rows_per_second']} rows/s", flush=True)
    ratio = sink["rows_per_second"] / copy["rows_per_second"]
    report = {
        "benchmark": "credit sink vs bare COPY",
        "machine": machine(),
        "records": args.records,
        "copies": args.copies,
        "batch_size": args.batch_size,
        "sink": sink,
        "bare_copy": copy,
        "sink_share_of_copy": round(ratio, 3),
        "targets": {
            "rows_per_second_at_least_20000": sink["rows_per_second"] >= 20_000,
            "at_least_half_of_copy": ratio >= 0.5,
        },
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
