"""A department's file export through the connector: canonical events or dead letters."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import psutil
import pytest
import yaml

from connectors.config import ConnectorConfig
from connectors.runner import run_connector
from schemas import register_all
from tests.kafka_helpers import TopicWindow
from xietong.kafka import KafkaClients
from xietong.processes import wait_ended
from xietong.uscc import make_uscc

FIXTURES = Path(__file__).parents[1] / "fixtures"
HEALTH_COMMISSION = "11330100EUHUXQEE4F"
COLUMNS = [
    "记录编号", "版本", "统一社会信用代码", "行政相对人名称", "法定代表人", "许可文书号",
    "许可类别", "许可证编号", "许可内容", "许可决定日期", "有效期自", "有效期至", "当前状态",
]  # fmt: skip


def licence_row(number: int, rng: random.Random) -> dict[str, str]:
    return {
        "记录编号": str(number),
        "版本": "1",
        "统一社会信用代码": make_uscc("91", "330106", rng=rng),
        "行政相对人名称": f"杭州西湖区第{number}号酒店有限公司",
        "法定代表人": rng.choice(["张伟", "王芳", "李娜", "刘洋"]),
        "许可文书号": f"杭卫公许〔2026〕{number}号",
        "许可类别": "普通",
        "许可证编号": f"浙卫公证字（2026）第{number:06d}号",
        "许可内容": "住宿、公共浴室",
        "许可决定日期": "2026年11月02日",
        "有效期自": "2026年11月02日",
        "有效期至": "2030年11月01日" if number % 4 else "长期",
        "当前状态": "有效",
    }


# Each bad row: how it is broken, and the reason code the dead letter must carry.
BAD_ROWS = {
    "uscc.check_character": lambda row: {
        **row,
        "统一社会信用代码": row["统一社会信用代码"][:17]
        + ("0" if row["统一社会信用代码"][17] != "0" else "1"),
    },
    "date.invalid": lambda row: {**row, "许可决定日期": "2023年02月30日"},
    "date.order": lambda row: {**row, "有效期至": "2020年01月01日"},
    "required": lambda row: {**row, "行政相对人名称": ""},
    "code.unknown": lambda row: {**row, "许可类别": "特级"},
}


def write_export(path: Path, rows: list[dict[str, str]], encoding: str) -> None:
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def connector_file(
    tmp_path: Path,
    export: Path,
    encoding: str,
    batch_size: int = 5000,
    workers: int = 0,
    **source: object,
) -> Path:
    config = {
        "name": f"test-licences-{uuid.uuid4().hex[:8]}",
        "mapping": str(FIXTURES / "hz-health-licence.yaml"),
        "batch_size": batch_size,
        "workers": workers,
        "source": {"kind": "file", "path": str(export), "encoding": encoding, **source},
    }
    path = tmp_path / "connector.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module", autouse=True)
def schemas_registered(kafka: KafkaClients) -> None:
    register_all(kafka.schema_registry())


@pytest.mark.parametrize(
    ("encoding", "workers"),
    [("gb18030", 0), ("utf-8", 0), ("gb18030", 2)],
    ids=["gb18030", "utf-8", "gb18030-in-worker-processes"],
)
def test_a_licence_export_becomes_canonical_events_and_bad_rows_dead_letters(
    kafka: KafkaClients, tmp_path: Path, encoding: str, workers: int, connectors_kafka: KafkaClients
) -> None:
    rng = random.Random(20261121)
    good = [licence_row(n, rng) for n in range(1, 41)]
    bad = {
        code: breaks(licence_row(100 + i, rng)) for i, (code, breaks) in enumerate(BAD_ROWS.items())
    }
    export = tmp_path / "licences.csv"
    write_export(export, good[:20] + list(bad.values()) + good[20:], encoding)
    licences = TopicWindow(kafka, "permits.licences")
    dead_letters = TopicWindow(kafka, "platform.dead-letter")

    config = ConnectorConfig.load(connector_file(tmp_path, export, encoding, workers=workers))

    report = run_connector(config, connectors_kafka)

    assert (report.read, report.published, report.dead_lettered) == (45, 40, 5)
    assert report.reconciles
    partition = f"file:{export.resolve()}"
    events = [m for m in licences.read() if m.value["envelope"]["source_partition"] == partition]
    for kafka_partition in {e.partition for e in events}:
        offsets = [
            int(e.value["envelope"]["source_offset"])
            for e in events
            if e.partition == kafka_partition
        ]
        assert offsets == sorted(offsets), "events keep their source order"
    assert sorted(e.value["holder_name"] for e in events) == sorted(
        r["行政相对人名称"] for r in good
    )
    first = next(e for e in events if e.value["envelope"]["source_record_id"] == "1")
    assert first.key == good[0]["统一社会信用代码"].encode()
    assert first.value["valid_from"] == date(2026, 11, 2)
    assert first.value["category"] == "ORDINARY"
    assert first.value["envelope"]["source_department_uscc"] == HEALTH_COMMISSION
    assert first.headers["event_id"].decode() == first.value["envelope"]["event_id"]

    letters = [m.value for m in dead_letters.read() if m.value["source_partition"] == partition]
    assert len(letters) == 5
    for code, row in bad.items():
        letter = next(
            x for x in letters if json.loads(x["payload_json"])["记录编号"] == row["记录编号"]
        )
        assert code in {reason["code"] for reason in letter["reasons"]}, letter["reasons"]
        assert letter["payload"].decode(encoding).startswith(row["记录编号"] + ",")
        assert letter["position"].startswith("line ")


def test_a_line_in_the_wrong_encoding_is_dead_lettered_and_the_file_carries_on(
    kafka: KafkaClients, tmp_path: Path, connectors_kafka: KafkaClients
) -> None:
    rng = random.Random(7)
    export = tmp_path / "mixed.csv"
    write_export(export, [licence_row(n, rng) for n in (1, 2)], "gb18030")
    stray = licence_row(3, rng)
    with export.open("ab") as handle:  # a UTF-8 line pasted into a GB18030 export
        handle.write((",".join(stray[c] for c in COLUMNS) + "\r\n").encode("utf-8"))
    with export.open("a", encoding="gb18030", newline="") as handle:
        csv.DictWriter(handle, COLUMNS).writerow(licence_row(4, rng))
    dead_letters = TopicWindow(kafka, "platform.dead-letter")

    report = run_connector(
        ConnectorConfig.load(connector_file(tmp_path, export, "gb18030")), connectors_kafka
    )

    assert (report.read, report.published, report.dead_lettered) == (4, 3, 1)
    letter = next(
        m.value
        for m in dead_letters.read()
        if m.value["source_partition"] == f"file:{export.resolve()}"
    )
    assert letter["reasons"][0]["code"] == "encoding.invalid"
    assert letter["payload"].decode("utf-8").startswith("3,1,")
    assert letter["position"] == "line 4"


def test_a_second_run_of_the_same_file_publishes_nothing_again(
    kafka: KafkaClients, tmp_path: Path, connectors_kafka: KafkaClients
) -> None:
    rng = random.Random(3)
    export = tmp_path / "licences.csv"
    write_export(export, [licence_row(n, rng) for n in range(1, 11)], "utf-8")
    config = ConnectorConfig.load(connector_file(tmp_path, export, "utf-8"))

    first = run_connector(config, connectors_kafka)
    with export.open("a", encoding="utf-8", newline="") as handle:
        csv.DictWriter(handle, COLUMNS).writerow(licence_row(11, rng))
    second = run_connector(config, connectors_kafka)

    assert first.published == 10
    assert (second.read, second.published) == (1, 1)


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "worker-processes"])
def test_a_connector_killed_mid_file_resumes_without_loss_resending_at_most_one_batch(
    kafka: KafkaClients, tmp_path: Path, workers: int
) -> None:
    rows, batch = 60_000, 2_000
    rng = random.Random(99)
    export = tmp_path / "big.csv"
    write_export(export, [licence_row(n, rng) for n in range(1, rows + 1)], "gb18030")
    config_path = connector_file(tmp_path, export, "gb18030", batch_size=batch, workers=workers)
    licences = TopicWindow(kafka, "permits.licences")
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "connect",
        "run",
        str(config_path),
        "--no-progress",
    ]
    env = {**os.environ, **{k: v for k, v in kafka.settings.endpoints().items()}}

    victim = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _published_so_far(licences, export) < rows // 4:
        time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = _published_so_far(licences, export)
    assert 0 < killed_at < rows, "the kill must land mid-file"

    finished = subprocess.run(command, env=env, capture_output=True, text=True, check=True)

    report = json.loads(finished.stdout)
    assert report["reconciles"]
    partition = f"file:{export.resolve()}"
    events = [
        m.value["envelope"]
        for m in licences.read()
        if m.value["envelope"]["source_partition"] == partition
    ]
    ids = Counter(e["event_id"] for e in events)
    assert len(ids) == rows, "every row is published"
    assert len(events) - rows <= batch, "at most one batch is sent twice"
    assert {e["source_record_id"] for e in events} == {str(n) for n in range(1, rows + 1)}


def test_a_connector_killed_outright_leaves_none_of_its_worker_processes_running(
    kafka: KafkaClients, tmp_path: Path
) -> None:
    rng = random.Random(7)
    export = tmp_path / "big.csv"
    write_export(export, [licence_row(n, rng) for n in range(1, 60_001)], "gb18030")
    config_path = connector_file(tmp_path, export, "gb18030", batch_size=2_000, workers=2)
    command = [sys.executable, "-m", "app.cli", "connect", "run", str(config_path), "--no-progress"]
    env = {**os.environ, **kafka.settings.endpoints()}
    victim = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    connector = psutil.Process(victim.pid)
    deadline = time.monotonic() + 60
    descendants: list[psutil.Process] = []
    workers: list[psutil.Process] = []
    while len(workers) < 2 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.1)
        try:
            descendants = connector.children(recursive=True)
            workers = [p for p in descendants if "spawn_main" in " ".join(p.cmdline())]
        except psutil.NoSuchProcess:  # one was starting or ending: look again
            continue
    assert len(workers) == 2, "the connector must be encoding in its two workers when killed"

    victim.send_signal(signal.SIGKILL)
    victim.wait()

    left = wait_ended(descendants, timeout=15)
    assert not left, f"still running after the connector was killed: {[p.cmdline() for p in left]}"


def _published_so_far(window: TopicWindow, export: Path) -> int:
    consumer_ends = window._ends()
    return sum(consumer_ends[p] - window.start.get(p, 0) for p in consumer_ends)


def test_a_run_is_counted_in_the_connector_metrics(
    tmp_path: Path, connectors_kafka: KafkaClients
) -> None:
    from prometheus_client import REGISTRY

    rng = random.Random(5)
    rows = [licence_row(n, rng) for n in range(1, 6)]
    rows.append(BAD_ROWS["date.invalid"](licence_row(6, rng)))
    export = tmp_path / "licences.csv"
    write_export(export, rows, "utf-8")
    config = ConnectorConfig.load(connector_file(tmp_path, export, "utf-8"))

    run_connector(config, connectors_kafka)

    labels = {
        "connector": config.name,
        "department_uscc": HEALTH_COMMISSION,
        "record_type": "licence",
    }
    assert REGISTRY.get_sample_value("xietong_connector_records_read_total", labels) == 6
    assert REGISTRY.get_sample_value("xietong_connector_records_published_total", labels) == 5
    dead = REGISTRY.get_sample_value(
        "xietong_connector_records_dead_lettered_total", {**labels, "reason": "date.invalid"}
    )
    assert dead == 1
    lag = REGISTRY.get_sample_value(
        "xietong_connector_source_lag",
        {"connector": config.name, "source_partition": f"file:{export.resolve()}", "unit": "bytes"},
    )
    assert lag == 0


# -- poison records: data, not crashes (issue 12) --------------------------------------------


def csv_line(row: dict[str, str]) -> str:
    return ",".join(row[column] for column in COLUMNS) + "\r\n"


def run_cli(config_path: Path, kafka: KafkaClients) -> dict[str, object]:
    """``xietong connect run`` in its own process: it must exit 0; its printed report."""
    command = [sys.executable, "-m", "app.cli", "connect", "run", str(config_path), "--no-progress"]
    env = {**os.environ, **kafka.settings.endpoints()}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report: dict[str, object] = json.loads(finished.stdout)
    return report


def line_ends(data: bytes) -> list[int]:
    """The byte offset just after each line: ``line N`` ends at ``line_ends(data)[N - 1]``."""
    return [index + 1 for index, byte in enumerate(data) if byte == 0x0A]


def assert_bytes_reconcile(report: dict[str, object], size: int) -> None:
    parts = ("header", "before_offset", "blank", "published", "dead_lettered", "unread")
    assert sum(int(report[f"bytes_{part}"]) for part in parts) == size  # type: ignore[call-overload]
    assert report["bytes_total"] == size
    assert report["bytes_unread"] == 0
    assert report["reconciles"] is True


@pytest.mark.parametrize("encoding", ["utf-8", "gb18030"])
def test_poison_rows_are_dead_lettered_the_rows_after_them_published_and_a_rerun_is_clean(
    kafka: KafkaClients, tmp_path: Path, encoding: str
) -> None:
    rng = random.Random(12)
    poison = {
        "csv.invalid": lambda row: csv_line(
            {**row, "行政相对人名称": "宁波青\r禾建设工程有限公司"}
        ),
        "csv.unclosed_quote": lambda row: csv_line(
            {**row, "行政相对人名称": '"宁波青禾建设工程有限公司'}
        ),
        "record.too_long": lambda row: csv_line({**row, "许可内容": "住宿" * 400_000}),
        # Under max_record_bytes, but its canonical event is over a Kafka message.
        "record.too_large": lambda row: csv_line(
            {**row, "许可内容": "".join(rng.choices("abcdefghij", k=1_010_000))}
        ),
    }
    data = csv_line({c: c for c in COLUMNS}).encode(encoding)
    good: list[str] = []
    number = 0
    for breaks in [*poison.values(), None]:
        for _ in range(2):  # a valid row before and after each poison row
            number += 1
            row = licence_row(number, rng)
            data += csv_line(row).encode(encoding)
            good.append(str(number))
        number += 1
        if breaks is None:  # bytes that are neither UTF-8 nor GB18030
            line = csv_line({**licence_row(number, rng), "行政相对人名称": "@@"})
            data += line.encode(encoding).replace(b"@@", b"\xff\xfe")
        else:
            data += breaks(licence_row(number, rng)).encode(encoding)
    number += 1
    data += b"\r\n" + csv_line(licence_row(number, rng)).encode(encoding)
    good.append(str(number))
    export = tmp_path / "poison.csv"
    export.write_bytes(data)
    config_path = connector_file(
        tmp_path, export, encoding, batch_size=3, max_record_bytes=1_100_000
    )
    licences = TopicWindow(kafka, "permits.licences")
    dead_letters = TopicWindow(kafka, "platform.dead-letter")

    first = run_cli(config_path, kafka)
    second = run_cli(config_path, kafka)

    counts = (first["read"], first["published"], first["dead_lettered"])
    assert counts == (len(good) + 5, len(good), 5)
    assert first["reasons"] == dict.fromkeys([*poison, "encoding.invalid"], 1)
    assert_bytes_reconcile(first, len(data))
    assert first["bytes_blank"] == 2
    assert (second["read"], second["published"], second["dead_lettered"]) == (0, 0, 0)
    assert_bytes_reconcile(second, len(data))
    partition = f"file:{export.resolve()}"
    events = [
        m.value for m in licences.read() if m.value["envelope"]["source_partition"] == partition
    ]
    assert sorted(e["envelope"]["source_record_id"] for e in events) == sorted(good)
    letters = [m.value for m in dead_letters.read() if m.value["source_partition"] == partition]
    assert len(letters) == 5
    ends = line_ends(data)
    for letter in letters:
        assert letter["position"].startswith("line ")
        line_number = int(letter["position"].removeprefix("line "))
        # The position names the line its offset ends.
        assert int(letter["source_offset"]) == ends[line_number - 1]
        assert letter["payload_length"] is not None and letter["payload_sha256"]
    too_long = next(x for x in letters if x["reasons"][0]["code"] == "record.too_long")
    assert too_long["payload_length"] > len(too_long["payload"])


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "worker-processes"])
def test_json_lines_too_deep_too_long_or_not_unicode_are_dead_lettered_one_by_one(
    kafka: KafkaClients, tmp_path: Path, connectors_kafka: KafkaClients, workers: int
) -> None:
    rng = random.Random(1212)
    poison = [
        '{"记录编号": "x1", "行政相对人名称": ' + "[" * 3000 + "]" * 3000 + "}",
        '{"记录编号": "x2", "版本": ' + "7" * 5000 + "}",
        json.dumps({**licence_row(900, rng), "行政相对人名称": "杭州\ud800市酒店"}),
        json.dumps({**licence_row(901, rng), "许可内容": "住宿" * 600_000}, ensure_ascii=False),
    ]
    lines = []
    for number, line in enumerate(poison, start=1):
        lines.append(json.dumps(licence_row(number, rng), ensure_ascii=False))
        lines.append(line)
    lines.append(json.dumps(licence_row(99, rng), ensure_ascii=False))
    export = tmp_path / "poison.jsonl"
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = ConnectorConfig.load(
        connector_file(tmp_path, export, "utf-8", batch_size=2, workers=workers)
    )
    dead_letters = TopicWindow(kafka, "platform.dead-letter")

    first = run_connector(config, connectors_kafka)
    second = run_connector(config, connectors_kafka)

    assert (first.read, first.published, first.dead_lettered) == (9, 5, 4)
    assert first.reconciles and first.bytes_unread == 0
    assert first.bytes_published is not None and first.bytes_dead_lettered is not None
    assert first.bytes_published + first.bytes_dead_lettered == export.stat().st_size
    assert {"json.too_deep", "json.integer_too_long", "record.too_long"} <= set(first.reasons)
    # A lone surrogate: refused by the mapping's text rules, or else by the encoder's last resort.
    assert {"text.surrogate", "record.unprocessable"} & set(first.reasons)
    assert (second.read, second.published, second.dead_lettered) == (0, 0, 0)
    partition = f"file:{export.resolve()}"
    letters = [m.value for m in dead_letters.read() if m.value["source_partition"] == partition]
    assert sorted(x["position"] for x in letters) == ["line 2", "line 4", "line 6", "line 8"]
    too_long = next(x for x in letters if x["position"] == "line 8")
    assert too_long["payload_length"] == len(lines[7].encode()) > len(too_long["payload"])


def test_a_record_the_producer_or_the_broker_refuses_as_too_large_is_dead_lettered(
    kafka: KafkaClients, tmp_path: Path, connectors_kafka: KafkaClients
) -> None:
    from connectors.base import Publisher
    from connectors.mapping import DepartmentMapping
    from connectors.records import Encoded, SourceRecord

    mapping = DepartmentMapping.load(FIXTURES / "hz-health-licence.yaml")
    partition = f"file:{tmp_path / 'refused.csv'}"
    dead_letters = TopicWindow(kafka, "platform.dead-letter")
    incompressible = random.Random(5).randbytes(1_200_000)

    def refused(line: int) -> tuple[Encoded, SourceRecord]:
        record = SourceRecord(
            partition, str(line * 10), f"line {line}", incompressible, None, None, (0, 10)
        )
        event = Encoded("permits.licences", b"91330106MA2KXXXX0X", incompressible, f"e{line}")
        return event, record

    # The producer refuses it at once (its message.max.bytes is 1,000,000) …
    by_producer = Publisher("test-refused", mapping, connectors_kafka)
    by_producer.send(*refused(2))
    by_producer.flush()
    # … or lets it through and the broker refuses it (its message.max.bytes is 1,048,588).
    by_broker = Publisher(
        "test-refused",
        mapping,
        connectors_kafka,
        connectors_kafka.producer(**{"message.max.bytes": 4_000_000}),
    )
    by_broker.send(*refused(3))
    by_broker.flush()

    for report in (by_producer.report, by_broker.report):
        assert (report.read, report.published, report.dead_lettered) == (1, 0, 1)
        assert report.reasons == {"record.too_large": 1}
    letters = [m.value for m in dead_letters.read() if m.value["source_partition"] == partition]
    assert sorted(x["position"] for x in letters) == ["line 2", "line 3"]
    for letter in letters:
        assert letter["payload_length"] == len(incompressible)
        assert len(letter["payload"]) < len(incompressible)
        assert "payload.truncated" in {r["code"] for r in letter["reasons"]}


def test_a_file_of_garbage_runs_to_its_end_with_every_byte_accounted_for(
    tmp_path: Path, connectors_kafka: KafkaClients
) -> None:
    rng = random.Random(50)
    export = tmp_path / "garbage.csv"
    valid = csv_line(licence_row(1, rng)).encode("gb18030")
    header = csv_line({c: c for c in COLUMNS}).encode("gb18030")
    export.write_bytes(header + valid + rng.randbytes(12 * 1024 * 1024) + b"\n" + valid)
    config = ConnectorConfig.load(connector_file(tmp_path, export, "gb18030"))

    report = run_connector(config, connectors_kafka)

    assert report.published == 2, "the valid row before and after the garbage"
    assert report.dead_lettered > 1000
    assert report.reconciles
    assert report.bytes_total == export.stat().st_size and report.bytes_unread == 0
