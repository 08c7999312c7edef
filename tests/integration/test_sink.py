"""The credit sink against the real broker and PostgreSQL: effectively once under kill -9,
a tamper-evident log that names what was done to it, a backfill that rebuilds the live
database exactly, and auditors who may read the views and nothing else.

Each test has a credit database of its own, whose stored offsets start at the topics'
ends when the test begins, so the sink reads what the test produces and nothing older.
"""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from confluent_kafka import TopicPartition
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from connectors.sink import db
from connectors.sink.chain import (
    Appender,
    load_or_create_key,
    load_public_key,
    public_key_path,
    verify,
)
from connectors.sink.sink import CreditSink, SinkSettings
from connectors.sink.tables import (
    LICENCES_TABLE,
    TABLES_BY_TOPIC,
    Delivery,
    all_tables,
    delivery_id,
)
from connectors.sink.writer import Batch, BatchWriter
from registry.acl import service_acls_on_department_topics
from schemas import register_all
from tests.dual_notice_records import licence as dual_notice_licence
from tests.kafka_helpers import TopicWindow
from tests.sink_records import (
    Outgoing,
    canonical,
    decoded_records,
    dual_notice_traffic,
    make_inboxes,
    produce,
)
from tests.unit.test_dual_notice_rules import Harness, xihu_registration
from xietong.clock import business_clock, clock_from_settings, millis
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import DEAD_LETTER, DepartmentTopic
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "app.cli"]


# -- databases, departments, offsets ---------------------------------------------------------


@pytest.fixture(scope="module")
def departments(kafka: KafkaClients) -> list[str]:
    """Two departments of this module's own, with inboxes the sink may read."""
    codes = [f"sink-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    make_inboxes(kafka, codes)
    admin = kafka.admin()
    grants = set().union(*(service_acls_on_department_topics(code) for code in codes))
    for future in admin.create_acls([grant.binding() for grant in grants]).values():
        future.result()
    return codes


def sink_partitions(kafka: KafkaClients) -> dict[tuple[str, int], int]:
    """Every partition the sink reads (inboxes included), with its end offset now."""
    consumer = kafka.consumer(f"test-sink-{uuid.uuid4()}")
    try:
        topics = consumer.list_topics(timeout=10).topics
        wanted = [
            (name, p)
            for name, metadata in topics.items()
            if name in TABLES_BY_TOPIC or DepartmentTopic.INBOX.code_of(name)
            for p in metadata.partitions
        ]
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t, p in wanted
        }
    finally:
        consumer.close()


def start_at(url: str, ends: dict[tuple[str, int], int]) -> None:
    """Store ``ends`` as the database's offsets: its sink starts there."""
    conn = db.connect(url)
    with conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO sink_offsets (topic, partition, next_offset) VALUES (%s, %s, %s)",
            [(t, p, o) for (t, p), o in ends.items()],
        )
    conn.close()


def stored(url: str) -> dict[tuple[str, int], int]:
    conn = db.connect(url)
    with conn.cursor() as cursor:
        cursor.execute("SELECT topic, partition, next_offset FROM sink_offsets")
        found = {(t, p): o for t, p, o in cursor.fetchall()}
    conn.close()
    return found


def wait_caught_up(url: str, ends: dict[tuple[str, int], int], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while True:
        have = stored(url)
        behind = {k: (have.get(k, 0), v) for k, v in ends.items() if have.get(k, 0) < v}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the sink did not catch up: {behind}")
        time.sleep(0.3)


def count(url: str, sql: str, *params: Any) -> Any:
    conn = db.connect(url)
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        value = cursor.fetchone()[0]
    conn.close()
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the sink as its own process -------------------------------------------------------------


@dataclass
class SinkProcess:
    """``xietong sink run`` as a process of its own."""

    url: str
    key: Path
    log: Path
    batch_size: int = 300
    environment: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "XIETONG_SINK_BATCH_SIZE": str(self.batch_size),
            "XIETONG_SINK_BATCH_WAIT": "0.2",
            "XIETONG_SINK_METRICS_PORT": str(free_port()),
            "XIETONG_SINK_AUDIT_KEY": str(self.key),
            **self.environment,
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "sink", "run", "--database", self.url],
                stdout=log,
                stderr=log,
                env=env,
                cwd=ROOT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(20) == 0, self.log.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            self.kill()
            raise


def expected_event_ids(kafka: KafkaClients, window: TopicWindow) -> list[str]:
    """The event id of every message added to a mapped topic since the window opened."""
    mapping = TABLES_BY_TOPIC[window.topic]
    return [mapping.event_id(message.value) for message in window.read()]


# -- effectively once ---------------------------------------------------------------------------


def test_killed_with_sigkill_mid_batch_again_and_again_the_database_holds_each_record_once(
    kafka: KafkaClients,
    credit_databases: Callable[[], str],
    departments: list[str],
    tmp_path: Path,
) -> None:
    url = credit_databases()
    starts = sink_partitions(kafka)
    start_at(url, starts)
    topics = ["market.registrations", "permits.licences", "enforcement.penalties"]
    topics += ["credit.list-entries", "dualnotice.pushes"]
    windows = {topic: TopicWindow(kafka, topic) for topic in topics}
    inboxes = {d: TopicWindow(kafka, DepartmentTopic.inbox(d)) for d in departments}
    records = canonical(6000, seed=11) + dual_notice_traffic(departments, 300, random.Random(11))
    # A producer's retry after a lost acknowledgement: the same records again.
    records += records[:500]
    sink = SinkProcess(url, tmp_path / "key.pem", tmp_path / "sink.log", batch_size=200)
    sink.start()
    feeder = threading.Thread(target=produce, args=(kafka, records))
    feeder.start()
    kills = 0
    rng = random.Random(3)

    def messages_stored() -> int:
        offsets = count(url, "SELECT coalesce(sum(next_offset), 0) FROM sink_offsets")
        return int(offsets) - sum(starts.values())

    while kills < 5 and messages_stored() < 0.7 * len(records):
        written = messages_stored()
        deadline = time.monotonic() + 30
        while messages_stored() == written:
            assert time.monotonic() < deadline, sink.log.read_text()[-3000:]
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.1))  # somewhere in the next batches
        sink.kill()
        kills += 1
        sink.start()
    assert kills >= 3
    feeder.join()
    ends = sink_partitions(kafka)
    wait_caught_up(url, {k: v for k, v in ends.items() if k[0] in topics or "inbox" in k[0]})
    sink.stop()

    for topic, window in windows.items():
        produced = expected_event_ids(kafka, window)
        table = TABLES_BY_TOPIC[topic].table
        conn = db.connect(url)
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT event_id FROM {table} WHERE source_topic = %s", (topic,))
            stored_ids = [row[0] for row in cursor.fetchall()]
        conn.close()
        assert len(stored_ids) == len(set(produced)), topic  # none lost, none twice
        assert set(stored_ids) == set(produced), topic
    delivered = {
        delivery_id(window.topic, TABLES_BY_TOPIC["dualnotice.pushes"].event_id(m.value))
        for window in inboxes.values()
        for m in window.read()
    }
    assert count(url, "SELECT count(*) FROM deliveries") == len(delivered) == 300
    # One log entry per delivery, claim and return, however often the sink was killed.
    claims_and_returns = count(
        url,
        "SELECT count(*) FROM dual_notice_push_states WHERE state IN ('CLAIMED', 'RETURNED')",
    )
    assert count(url, "SELECT count(*) FROM audit_log") == len(delivered) + claims_and_returns
    conn = db.connect(url)
    result = verify(conn, load_public_key(public_key_path(tmp_path / "key.pem")))
    conn.close()
    assert result.intact, result.findings
    assert count(url, "SELECT count(*) FROM entities") == count(
        url, "SELECT count(DISTINCT uscc) FROM registrations"
    )


def test_the_sink_reconnects_by_itself_when_the_database_drops_its_connections(
    kafka: KafkaClients, credit_databases: Callable[[], str], tmp_path: Path
) -> None:
    """PostgreSQL ends the sink's sessions (as a restart or a fail-over does) twice while
    records flow: the sink says so, backs off, connects again and stores every record
    once, without exiting."""
    url = credit_databases()
    starts = sink_partitions(kafka)
    start_at(url, starts)
    window = TopicWindow(kafka, "market.registrations")
    records = [r for r in canonical(3000, seed=17) if r.record.topic.name == "market.registrations"]
    sink = SinkProcess(url, tmp_path / "key.pem", tmp_path / "sink.log", batch_size=100)
    sink.start()
    database = psycopg2.connect(url.replace("+psycopg2", ""))
    database.autocommit = True
    try:
        stored_offsets = "SELECT coalesce(sum(next_offset), 0) FROM sink_offsets"
        for half in (records[: len(records) // 2], records[len(records) // 2 :]):
            before = count(url, stored_offsets)
            produce(kafka, half)
            deadline = time.monotonic() + 60
            while count(url, stored_offsets) == before:  # the sink is writing this half
                assert time.monotonic() < deadline, sink.log.read_text()[-3000:]
                time.sleep(0.1)
            with database.cursor() as cursor:  # every session of the sink, mid-stream
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        ends = sink_partitions(kafka)
        wait_caught_up(url, {k: v for k, v in ends.items() if k[0] == "market.registrations"}, 90)
        assert sink.process is not None and sink.process.poll() is None, "the sink exited"
    finally:
        database.close()
        sink.stop()
    produced = set(expected_event_ids(kafka, window))
    stored_ids = [
        row[0]
        for row in count_rows(
            url, "SELECT event_id FROM registrations WHERE source_topic = 'market.registrations'"
        )
    ]
    assert len(stored_ids) == len(set(stored_ids)) and set(stored_ids) == produced
    log = sink.log.read_text()
    assert '"event": "sink_database_unavailable"' in log
    assert '"event": "sink_database_reconnected"' in log


def count_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = db.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        conn.close()


# -- the tamper-evident log ---------------------------------------------------------------------


def run_in_process(
    kafka: KafkaClients, settings: Settings, url: str, key: Path, ends: dict[tuple[str, int], int]
) -> None:
    """The sink in this process until it has read up to ``ends``."""
    sink = CreditSink(settings, SinkSettings(metrics_port=None, audit_key=key, batch_wait=0.2), url)
    sink.start()
    thread = threading.Thread(target=sink.run)
    thread.start()
    try:
        wait_caught_up(url, ends)
    finally:
        sink.stop()
        thread.join(20)
        sink.close()


@pytest.fixture(scope="module")
def audited(
    kafka: KafkaClients,
    stack_settings: Settings,
    credit_databases: Callable[[], str],
    departments: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path]:
    """A credit database whose log holds deliveries, claims and returns; its key."""
    key = tmp_path_factory.mktemp("audit") / "key.pem"
    url = credit_databases()
    start_at(url, sink_partitions(kafka))
    produce(kafka, dual_notice_traffic(departments, 40, random.Random(5)))
    inboxes = {DepartmentTopic.inbox(d) for d in departments}
    ends = {
        (topic, p): end
        for (topic, p), end in sink_partitions(kafka).items()
        if topic == "dualnotice.pushes" or topic in inboxes
    }
    run_in_process(kafka, stack_settings, url, key, ends)
    return url, key


def tampered(url: str, key: Path, *statements: str) -> list[Any]:
    """What verification finds after ``statements`` (rolled back afterwards)."""
    conn = db.connect(url)
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        return verify(conn, load_public_key(key)).findings  # verify rolls back
    finally:
        conn.close()


def nth_entry(url: str, position: int) -> tuple[str, str]:
    """(chain, entry id) at ``position`` of the longest chain."""
    conn = db.connect(url)
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT chain FROM audit_log GROUP BY chain ORDER BY count(*) DESC, chain LIMIT 1"
        )
        (chain,) = cursor.fetchone()
        cursor.execute(
            "SELECT entry_id FROM audit_log WHERE chain = %s AND position = %s", (chain, position)
        )
        (entry_id,) = cursor.fetchone()
    conn.close()
    return chain, entry_id


def test_the_log_is_intact_and_verify_says_so(audited: tuple[str, Path]) -> None:
    url, key = audited
    assert tampered(url, key) == []
    assert count(url, "SELECT count(*) FROM audit_log WHERE kind = 'DELIVERY'") == 40
    assert count(url, "SELECT count(*) FROM audit_log WHERE kind IN ('CLAIM', 'RETURN')") > 0


def test_a_modified_entry_is_named(audited: tuple[str, Path]) -> None:
    url, key = audited
    chain, entry_id = nth_entry(url, 2)
    (finding,) = tampered(
        url,
        key,
        f"UPDATE audit_log SET occurred_at = occurred_at - interval '1 day'"
        f" WHERE entry_id = '{entry_id}'",
    )
    assert (finding.chain, finding.problem, finding.entry_id) == (chain, "modified", entry_id)


def test_a_deleted_entry_is_named_by_its_place(audited: tuple[str, Path]) -> None:
    url, key = audited
    chain, entry_id = nth_entry(url, 2)
    (finding,) = tampered(url, key, f"DELETE FROM audit_log WHERE entry_id = '{entry_id}'")
    assert (finding.chain, finding.problem, finding.position) == (chain, "deleted", 2)


def test_reordered_entries_are_named(audited: tuple[str, Path]) -> None:
    url, key = audited
    chain, first = nth_entry(url, 1)
    _, second = nth_entry(url, 2)
    (finding,) = tampered(
        url,
        key,
        f"UPDATE audit_log SET position = -1 WHERE entry_id = '{first}'",
        f"UPDATE audit_log SET position = 1 WHERE entry_id = '{second}'",
        f"UPDATE audit_log SET position = 2 WHERE entry_id = '{first}'",
    )
    assert (finding.chain, finding.problem, finding.entry_id) == (chain, "reordered", second)


def test_audit_verify_exits_1_naming_the_entry(
    audited: tuple[str, Path], tmp_path: Path, stack_settings: Settings
) -> None:
    url, key = audited
    env = {**os.environ, "XIETONG_SINK_AUDIT_KEY": str(key)}
    command = [sys.executable, "-m", "app.cli", "audit", "verify", "--database", url]
    intact = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    assert intact.returncode == 0, intact.stderr
    assert "intact" in intact.stdout
    chain, entry_id = nth_entry(url, 3)
    conn = db.connect(url)
    with conn, conn.cursor() as cursor:  # committed: the CLI reads with its own connection
        cursor.execute(
            'UPDATE audit_log SET details = details || \'{"changed_by": "someone"}\''
            " WHERE entry_id = %s",
            (entry_id,),
        )
    conn.close()
    broken = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    assert broken.returncode == 1
    assert f"{chain}: modified at position 3 entry {entry_id}" in broken.stderr.replace("\n", "")


# -- replay equals live ---------------------------------------------------------------------------


def generated(topic: str, count: int) -> list[Outgoing]:
    """Random valid records of a topic's type (the joint-punishment processor's, say)."""
    mapping = TABLES_BY_TOPIC[topic]
    return [
        Outgoing(mapping.record, str(mapping.uscc(record)), record)
        for record in decoded_records(mapping.record.schema, count)
    ]


def table_contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table the sink writes, ingest times left out, in a fixed order."""
    conn = db.connect(url)
    contents = {}
    with conn.cursor() as cursor:
        for table in [*all_tables(), "audit_chain_heads", "sink_offsets"]:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = %s"
                " AND column_name NOT IN ('ingested_at', 'updated_at') ORDER BY ordinal_position",
                (table,),
            )
            columns = ", ".join(row[0] for row in cursor.fetchall())
            cursor.execute(f"SELECT {columns} FROM {table} ORDER BY {columns}")
            contents[table] = cursor.fetchall()
    conn.close()
    return contents


def test_a_backfill_rebuilds_the_database_live_processing_made(
    kafka: KafkaClients,
    stack_settings: Settings,
    credit_databases: Callable[[], str],
    departments: list[str],
    tmp_path: Path,
) -> None:
    live, rebuilt = credit_databases(), credit_databases()
    starts = sink_partitions(kafka)
    start_at(live, starts)
    start_at(rebuilt, starts)
    since = datetime.now(UTC)
    key = tmp_path / "key.pem"
    load_or_create_key(key)
    records = canonical(1500, seed=23) + dual_notice_traffic(departments, 60, random.Random(23))
    # The other processors' records and dead letters (no canonical ones: random decimals
    # would not fit).
    for topic in TABLES_BY_TOPIC:
        if topic.startswith(
            ("dualnotice.", "punishment.", "credit.matter", "assistance.", DEAD_LETTER.name)
        ) and (topic != "dualnotice.pushes"):
            records += generated(topic, 15)
    random.Random(23).shuffle(records)
    # Live: the records arrive in three waves while the sink runs.
    sink = CreditSink(
        stack_settings, SinkSettings(metrics_port=None, audit_key=key, batch_wait=0.1), live
    )
    sink.start()
    thread = threading.Thread(target=sink.run)
    thread.start()
    try:
        for wave in range(3):
            produce(kafka, records[wave::3])
            time.sleep(0.5)
        wait_caught_up(live, {k: v for k, v in sink_partitions(kafka).items() if k in starts})
    finally:
        sink.stop()
        thread.join(20)
        sink.close()

    env = {**os.environ, "XIETONG_SINK_AUDIT_KEY": str(key), "XIETONG_SINK_BATCH_SIZE": "2000"}
    backfill = subprocess.run(
        [*CLI, "sink", "backfill", "--since", since.isoformat(), "--database", rebuilt],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    assert "messages in" in backfill.stdout

    live_contents, rebuilt_contents = table_contents(live), table_contents(rebuilt)
    for table in live_contents:
        assert rebuilt_contents[table] == live_contents[table], table
    empty = [table for table, rows in live_contents.items() if not rows]
    assert not empty, f"no rows in {empty}"


# -- auditors ----------------------------------------------------------------------------


def test_the_auditor_role_reads_the_views_and_nothing_else(audited: tuple[str, Path]) -> None:
    url, _ = audited
    conn = db.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET ROLE xietong_auditor")
            cursor.execute("SELECT count(*) FROM auditor.deliveries")
            assert cursor.fetchone()[0] == 40
            cursor.execute(
                "SELECT department_code, pushes, claim_rate, median_time_to_claim"
                " FROM auditor.dual_notice_claims_monthly"
            )
            assert cursor.fetchall()
            for table in ("deliveries", "audit_log", "sink_offsets"):
                cursor.execute("SAVEPOINT probe")
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cursor.execute(f"SELECT 1 FROM public.{table}")
                cursor.execute("ROLLBACK TO SAVEPOINT probe")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cursor.execute("DELETE FROM auditor.audit_log")
    finally:
        conn.rollback()
        conn.close()


def test_audit_reports_as_json_and_csv(audited: tuple[str, Path], departments: list[str]) -> None:
    import json

    url, _ = audited
    conn = db.connect(url)
    with conn.cursor() as cursor:
        cursor.execute("SELECT uscc FROM deliveries ORDER BY event_id LIMIT 1")
        (uscc,) = cursor.fetchone()
    conn.close()
    base = [sys.executable, "-m", "app.cli", "audit"]
    entity = subprocess.run(
        [*base, "entity", uscc, "--format", "json", "--database", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert entity.returncode == 0, entity.stderr
    report = json.loads(entity.stdout)
    assert report["pushes"] and report["deliveries"][0]["department_code"] in departments
    department = subprocess.run(
        [*base, "department", departments[0], "--format", "csv", "--database", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert department.returncode == 0, department.stderr
    claims = department.stdout.split("\n\n")[0].splitlines()
    assert claims[0].startswith("section,pushes,claimed,claim_rate,median_time_to_claim")
    assert int(claims[1].split(",")[1]) > 0


# -- day columns, with the services' business now on either side of midnight in China ---------

LICENCE_COLUMNS = [
    "记录编号", "版本", "统一社会信用代码", "行政相对人名称", "法定代表人", "许可文书号",
    "许可类别", "许可证编号", "许可内容", "许可决定日期", "有效期自", "有效期至", "当前状态",
]  # fmt: skip


@pytest.mark.parametrize("utc_hour_minute", [(16, 30), (23, 30)], ids=["16:30Z", "23:30Z"])
def test_a_licence_decided_on_the_province_s_today_is_stored_on_that_day(
    kafka: KafkaClients,
    credit_databases: Callable[[], str],
    tmp_path: Path,
    utc_hour_minute: tuple[int, int],
) -> None:
    """At 16:30 and 23:30 UTC it is already tomorrow in China: a decision of the province's
    today is stored with that day, its event time is that day's midnight in China, and the
    connector's ingest time is its rehearsed now."""
    register_all(kafka.schema_registry())
    started = datetime.now(UTC)  # the machine's real time, which the offset is counted from
    rehearsed = datetime.combine(started.date(), dt_time(*utc_hour_minute), UTC)
    offset_ms = millis(rehearsed) - millis(started)
    clock = clock_from_settings(offset=timedelta(milliseconds=offset_ms))
    today = clock.today()
    environment = {**kafka.settings.endpoints(), "XIETONG_CLOCK_OFFSET": str(offset_ms / 1000)}

    uscc = make_uscc("91", "330106", rng=random.Random(started.timestamp()))
    export = tmp_path / "licences.csv"
    with export.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, LICENCE_COLUMNS)
        writer.writeheader()
        writer.writerow(
            {
                "记录编号": uuid.uuid4().hex, "版本": "1", "统一社会信用代码": uscc,
                "行政相对人名称": "杭州西湖区测试酒店有限公司", "法定代表人": "张伟",
                "许可文书号": "杭卫公许〔2026〕1号", "许可类别": "普通",
                "许可证编号": "浙卫公证字（2026）第000001号", "许可内容": "住宿",
                "许可决定日期": f"{today:%Y年%m月%d日}", "有效期自": f"{today:%Y年%m月%d日}",
                "有效期至": "长期", "当前状态": "有效",
            }
        )  # fmt: skip
    config = tmp_path / "connector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": f"test-day-{uuid.uuid4().hex[:8]}",
                "mapping": str(ROOT / "tests" / "fixtures" / "hz-health-licence.yaml"),
                "source": {"kind": "file", "path": str(export), "encoding": "utf-8"},
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    url = credit_databases()
    start_at(url, sink_partitions(kafka))
    licences = TopicWindow(kafka, LICENCES_TABLE.record.topic.name)
    sink = SinkProcess(url, tmp_path / "key.pem", tmp_path / "sink.log", environment=environment)
    sink.start()
    try:
        subprocess.run(
            [*CLI, "connect", "run", str(config), "--no-progress"],
            env={**os.environ, **environment},
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        wait_caught_up(url, sink_partitions(kafka))
    finally:
        sink.stop()

    (envelope,) = [m.value["envelope"] for m in licences.read() if m.value["uscc"] == uscc]
    ingested = millis(envelope["ingest_time"])
    assert millis(rehearsed) - 1 <= ingested <= millis(datetime.now(UTC)) + offset_ms + 1
    assert clock.day_of(ingested) == today
    conn = db.connect(url)
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT decided_on, valid_from, event_time,"
            " (event_time AT TIME ZONE %s)::date FROM licences WHERE uscc = %s",
            (clock.zone.key, uscc),
        )
        (decided_on, valid_from, event_time, event_day) = cursor.fetchone()
    conn.close()
    assert decided_on == valid_from == event_day == today
    assert event_time == clock.midnight(today)


def test_a_push_just_after_midnight_in_china_counts_in_the_province_s_month(
    credit_databases: Callable[[], str], tmp_path: Path
) -> None:
    """16:30 UTC on 30 November is 00:30 on 1 December in China: the auditors' monthly
    claim rate counts the push in December, whatever the database server's time zone."""
    url = credit_databases()
    mapping = TABLES_BY_TOPIC["dualnotice.pushes"]
    (push,) = decoded_records(mapping.record.schema, 1)
    push["pushed_at"] = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)
    batch = Batch()
    batch.add("dualnotice.pushes", 0, 0, mapping, push)
    conn = db.connect(url)
    try:
        BatchWriter(conn, Appender(load_or_create_key(tmp_path / "key.pem"))).write(batch)
        with conn.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
            cursor.execute(
                "SELECT month FROM auditor.dual_notice_claims_monthly WHERE department_code = %s",
                (push["department"]["code"],),
            )
            months = [month for (month,) in cursor.fetchall()]
    finally:
        conn.close()
    assert months == [business_clock().day_of(push["pushed_at"]).replace(day=1)]
    assert months == [date(2026, 12, 1)]


def test_the_auditors_current_licence_and_listing_are_their_later_versions_read_first(
    credit_databases: Callable[[], str], tmp_path: Path
) -> None:
    """Version 2 of a licence (CANCELLED) and of a 列入 (its list corrected) stored before
    their version 1, all of one business date: ``entity_profile`` counts no valid licence
    and shows the corrected list; a listing with a 移出 is no current list."""
    url = credit_databases()
    uscc = make_uscc("91", "330106", rng=random.Random(13))
    decided = datetime(2026, 3, 2, tzinfo=UTC)

    def versioned(topic: str, version: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        """Version ``version`` of a record, at that offset of one source table."""
        (record,) = decoded_records(TABLES_BY_TOPIC[topic].record.schema, 1)
        record["envelope"].update(
            record_version=version,
            source_partition="sql:test",
            source_offset=version,
            event_time=decided,
        )
        return topic, {**record, "uscc": uscc, **fields}

    (registration,) = decoded_records(TABLES_BY_TOPIC["market.registrations"].record.schema, 1)
    licence = {"authority_uscc": "11330106MB1234567X", "licence_number": "JY1"}
    listed = {"action": "LISTED", "entry_id": "E-1"}
    ended = {"entry_id": "E-2", "list_type": "SECTOR"}
    arrivals = [
        ("market.registrations", {**registration, "uscc": uscc}),
        versioned("permits.licences", "2", status="CANCELLED", **licence),
        versioned("permits.licences", "1", status="VALID", **licence),
        versioned("credit.list-entries", "2", list_type="JUDGMENT_DEFAULTER", **listed),
        versioned("credit.list-entries", "1", list_type="SERIOUS_ILLEGAL_DISHONEST", **listed),
        versioned("credit.list-entries", "1", action="LISTED", **ended),
        versioned("credit.list-entries", "1", action="REMOVED", **ended),
    ]
    batch = Batch()
    for offset, (topic, record) in enumerate(arrivals):
        batch.add(topic, 0, offset, TABLES_BY_TOPIC[topic], record)
    conn = db.connect(url)
    try:
        BatchWriter(conn, Appender(load_or_create_key(tmp_path / "key.pem"))).write(batch)
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT valid_licences, current_lists FROM auditor.entity_profile WHERE uscc = %s",
                (uscc,),
            )
            profile = cursor.fetchone()
    finally:
        conn.close()
    assert profile == (0, ["JUDGMENT_DEFAULTER"])


# -- what PostgreSQL cannot store -------------------------------------------------------------


def test_a_nul_in_a_derived_record_becomes_a_sink_dead_letter_naming_where_it_was_and_the_field(
    kafka: KafkaClients, credit_databases: Callable[[], str], tmp_path: Path
) -> None:
    """PostgreSQL's text cannot hold NUL. The connectors refuse it, but the sink also reads
    what others write: a licence with NUL in its holder's name, produced straight to the
    canonical topic, is dead-lettered by the sink, and the licence after it is stored."""
    poisoned, good = [r for r in canonical(60, seed=12) if r.record.name == "licence"][:2]
    poisoned.value["holder_name"] = "杭州\x00西湖某某有限公司"
    url = credit_databases()
    start_at(url, sink_partitions(kafka))
    licences = TopicWindow(kafka, LICENCES_TABLE.record.topic.name)
    dead_letters = TopicWindow(kafka, DEAD_LETTER.name)
    produce(kafka, [poisoned, good])
    sink = SinkProcess(url, tmp_path / "key.pem", tmp_path / "sink.log")
    sink.start()
    try:
        wait_caught_up(url, sink_partitions(kafka))
    finally:
        sink.stop()

    (written,) = [m for m in licences.read() if "\x00" in m.value["holder_name"]]
    stored = "SELECT count(*) FROM licences WHERE event_id = %s"
    assert count(url, stored, good.value["envelope"]["event_id"]) == 1
    assert count(url, stored, poisoned.value["envelope"]["event_id"]) == 0
    (letter,) = [
        m.value
        for m in dead_letters.read()
        if m.value["source_partition"] == f"{licences.topic}[{written.partition}]"
        and m.value["source_offset"] == str(written.offset)
    ]
    assert letter["connector"] == "sink.credit"
    assert letter["position"] == (
        f"{licences.topic} partition {written.partition} offset {written.offset}"
    )
    (reason,) = letter["reasons"]
    assert reason["code"] == "sink.unreadable"
    assert "holder_name" in reason["message"] and "U+0000" in reason["message"]


# -- 双告知's two time bases; a licence's 注销/吊销/撤销日期 (issue 13) ---------------------------


def as_decoded(schema: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A record as the processor wrote it, as the sink's decoder returns it."""
    parsed = parse_schema(schema)
    buffer = io.BytesIO()
    schemaless_writer(buffer, parsed, record)
    buffer.seek(0)
    decoded = schemaless_reader(buffer, parsed, None)
    assert isinstance(decoded, dict)
    return decoded


def test_a_licence_dated_before_the_platform_saw_the_registration_is_after_the_push_for_auditors(
    credit_databases: Callable[[], str], tmp_path: Path
) -> None:
    """Issue 13's repro, through the real rules into the credit database: the platform
    reads a 2 March registration on 5 March and the licence of 3 March on 6 March. The
    auditor views show both time bases, named, and in neither is the push FULFILLED before
    it was pushed (it was: ``pushed_at`` the platform's clock, ``state_changed_at`` the
    licence's date)."""
    china = business_clock().zone
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=china))
    read_at = millis(datetime(2026, 3, 5, 9, 0, tzinfo=china))
    licensed = millis(datetime(2026, 3, 3, tzinfo=china))
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")
    issued = dual_notice_licence(
        record["uscc"], "DLHWYSXK", "hz-xh-transport", decided_on=date(2026, 3, 3)
    )
    issued["envelope"]["event_time"] = licensed
    h.feed("registration", record, read_at)
    h.feed("licence", issued, read_at + 86_400_000)
    mapping = TABLES_BY_TOPIC["dualnotice.pushes"]
    states = [as_decoded(mapping.record.schema, push) for push in h.of("dual_notice_push")]
    batch = Batch()
    for offset, push in enumerate(states):
        batch.add("dualnotice.pushes", 0, offset, mapping, push)
    url = credit_databases()
    conn = db.connect(url)
    try:
        BatchWriter(conn, Appender(load_or_create_key(tmp_path / "key.pem"))).write(batch)
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT state, pushed_at, push_recorded_at, state_changed_at, state_recorded_at"
                " FROM auditor.dual_notice_pushes WHERE uscc = %s",
                (record["uscc"],),
            )
            current = cursor.fetchone()
            cursor.execute(
                "SELECT version, pushed_at, push_recorded_at, state_changed_at,"
                " state_recorded_at FROM auditor.dual_notice_push_history WHERE uscc = %s"
                " ORDER BY version",
                (record["uscc"],),
            )
            history = cursor.fetchall()
            cursor.execute(
                "SELECT min(at) FROM auditor.entity_timeline"
                " WHERE uscc = %s AND kind = 'dual_notice_push'",
                (record["uscc"],),
            )
            (first_in_timeline,) = cursor.fetchone()
    finally:
        conn.close()

    def at(moment: int) -> datetime:
        return datetime.fromtimestamp(moment / 1000, UTC)

    state, pushed_at, push_recorded_at, changed_at, recorded_at = current
    assert state == "FULFILLED"
    assert (pushed_at, push_recorded_at) == (at(registered), at(read_at))
    assert (changed_at, recorded_at) == (at(licensed), at(read_at + 86_400_000))
    assert pushed_at <= changed_at and push_recorded_at <= recorded_at
    assert [row[0] for row in history] == [1, 2]
    for _, pushed, push_recorded, changed, recorded in history:
        assert pushed <= changed and push_recorded <= recorded
    assert first_in_timeline == pushed_at


def test_a_licences_status_change_day_is_stored_and_on_the_entitys_profile(
    credit_databases: Callable[[], str], tmp_path: Path
) -> None:
    """A licence 注销 on 5 March (its version 2, status_changed_on 2026-03-05): the
    credit database keeps the day, and ``entity_profile`` lists the licence among the
    entity's ended licences with it; the still-valid one is not listed."""
    url = credit_databases()
    uscc = make_uscc("91", "330106", rng=random.Random(17))
    schema = TABLES_BY_TOPIC["permits.licences"].record.schema
    (registration,) = decoded_records(TABLES_BY_TOPIC["market.registrations"].record.schema, 1)

    def version(number: str, version: str, status: str, ended: date | None) -> dict[str, Any]:
        (record,) = decoded_records(schema, 1)
        record["envelope"].update(
            record_version=version, source_partition="sql:test", source_offset=version
        )
        return {
            **record,
            "uscc": uscc,
            "authority_uscc": "11330106MB1234567X",
            "authority_name": "杭州市西湖区卫生健康局",
            "licence_number": number,
            "status": status,
            "status_changed_on": ended,
        }

    arrivals = [
        ("market.registrations", {**registration, "uscc": uscc}),
        ("permits.licences", version("WS-1", "1", "VALID", None)),
        ("permits.licences", version("WS-1", "2", "CANCELLED", date(2026, 3, 5))),
        ("permits.licences", version("WS-2", "1", "VALID", None)),
    ]
    batch = Batch()
    for offset, (topic, record) in enumerate(arrivals):
        batch.add(topic, 0, offset, TABLES_BY_TOPIC[topic], record)
    conn = db.connect(url)
    try:
        BatchWriter(conn, Appender(load_or_create_key(tmp_path / "key.pem"))).write(batch)
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT licence_number, status, status_changed_on FROM licences"
                " WHERE uscc = %s ORDER BY licence_number, record_version",
                (uscc,),
            )
            stored_rows = cursor.fetchall()
            cursor.execute(
                "SELECT valid_licences, ended_licences FROM auditor.entity_profile WHERE uscc = %s",
                (uscc,),
            )
            profile = cursor.fetchone()
    finally:
        conn.close()
    assert stored_rows == [
        ("WS-1", "VALID", None),
        ("WS-1", "CANCELLED", date(2026, 3, 5)),
        ("WS-2", "VALID", None),
    ]
    assert profile == (
        1,
        [
            {
                "licence_number": "WS-1",
                "authority_name": "杭州市西湖区卫生健康局",
                "status": "CANCELLED",
                "status_changed_on": "2026-03-05",
            }
        ],
    )


def test_a_serious_listing_proposal_and_its_delivery_are_stored_and_it_stands_as_withdrawn(
    credit_databases: Callable[[], str], tmp_path: Path
) -> None:
    """A 经营异常 three-year proposal, delivered to the deciding department's inbox, then
    republished WITHDRAWN: both states are rows, the delivery is a delivery (not a sink dead
    letter), and the auditor's view shows the proposal as it stands."""
    url = credit_databases()
    mapping = TABLES_BY_TOPIC["punishment.serious-listing-proposals"]
    (proposal,) = decoded_records(mapping.record.schema, 1)
    proposal |= {"status": "PROPOSED", "withdrawn_reason": None}
    withdrawn = proposal | {"status": "WITHDRAWN", "withdrawn_reason": "移出日期早于届满日"}
    inbox = DepartmentTopic.inbox(proposal["department"]["code"])
    delivered = business_clock().now()
    batch = Batch()
    batch.add(mapping.record.topic.name, 0, 0, mapping, proposal)
    batch.add_delivery(
        inbox, 0, 0, Delivery(proposal["department"]["code"], mapping, proposal, delivered)
    )
    batch.add(mapping.record.topic.name, 0, 1, mapping, withdrawn)
    conn = db.connect(url)
    try:
        BatchWriter(conn, Appender(load_or_create_key(tmp_path / "key.pem"))).write(batch)
        with conn.cursor() as cursor:
            cursor.execute("SELECT status FROM serious_listing_proposals ORDER BY source_offset")
            states = [row[0] for row in cursor.fetchall()]
            cursor.execute(
                "SELECT record_type, department_code FROM deliveries WHERE source_topic = %s",
                (inbox,),
            )
            deliveries = cursor.fetchall()
            cursor.execute(
                "SELECT status, withdrawn_reason FROM auditor.serious_listing_proposals"
                " WHERE proposal_id = %s",
                (proposal["proposal_id"],),
            )
            standing = cursor.fetchall()
    finally:
        conn.close()
    assert states == ["PROPOSED", "WITHDRAWN"]
    assert deliveries == [("serious_listing_proposal", proposal["department"]["code"])]
    assert standing == [("WITHDRAWN", "移出日期早于届满日")]


def test_a_sanction_notices_division_basis_and_persons_and_a_penaltys_publicity_end_are_stored(
    credit_databases: Callable[[], str], tmp_path: Path
) -> None:
    """What issue 13 added to the records reaches the auditor: the division that chose the
    department and why, a person measure's target, roles and persons, and a penalty's
    publicity ended early by 信用修复."""
    url = credit_databases()
    notices = TABLES_BY_TOPIC["punishment.sanction-notices"]
    penalties = TABLES_BY_TOPIC["enforcement.penalties"]
    (notice,) = decoded_records(notices.record.schema, 1)
    notice["division_code"], notice["division_basis"] = "330110", "REGISTRATION"
    notice["measure"] |= {"target": "PERSONS_IN_ROLE", "roles": ["LEGAL_REPRESENTATIVE"]}
    notice["persons"] = [{"role": "LEGAL_REPRESENTATIVE", "name": "张三"}]
    (penalty,) = decoded_records(penalties.record.schema, 1)
    penalty |= {"publicity_ended_on": date(2026, 9, 1), "publicity_end_reason": "CREDIT_REPAIR"}
    batch = Batch()
    batch.add(notices.record.topic.name, 0, 0, notices, notice)
    batch.add(penalties.record.topic.name, 0, 0, penalties, penalty)
    conn = db.connect(url)
    try:
        BatchWriter(conn, Appender(load_or_create_key(tmp_path / "key.pem"))).write(batch)
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT division_code, division_basis, measure_target, measure_roles, persons"
                " FROM auditor.sanction_notices"
            )
            stored_notice = cursor.fetchall()
            cursor.execute("SELECT publicity_ended_on, publicity_end_reason FROM penalties")
            stored_penalty = cursor.fetchall()
    finally:
        conn.close()
    assert stored_notice == [
        (
            "330110",
            "REGISTRATION",
            "PERSONS_IN_ROLE",
            ["LEGAL_REPRESENTATIVE"],
            [{"role": "LEGAL_REPRESENTATIVE", "name": "张三"}],
        )
    ]
    assert stored_penalty == [(date(2026, 9, 1), "CREDIT_REPAIR")]
