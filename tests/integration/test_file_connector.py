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
    tmp_path: Path, export: Path, encoding: str, batch_size: int = 5000, workers: int = 0
) -> Path:
    config = {
        "name": f"test-licences-{uuid.uuid4().hex[:8]}",
        "mapping": str(FIXTURES / "hz-health-licence.yaml"),
        "batch_size": batch_size,
        "workers": workers,
        "source": {"kind": "file", "path": str(export), "encoding": encoding},
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
