"""Dead letters reach the credit database, and are replayed once the mapping is fixed.

杭州市卫生健康委员会's approval system starts writing some decision dates as ``2026/11/02``
beside its usual ``2026年11月02日``. Through the real file connector, broker and sink: the
record goes to ``platform.dead-letter``, and an auditor finds it in
``auditor.dead_letters`` — department, connector, the record's own id, the field
(``decided_on``) and the reason, where it was in the export and where its dead letter
is on the topic. The mapping gains the second format; ``xietong connect replay``
publishes the record once, under the event id a first-time success would have had, and
the auditor sees it REPLAYED with that id. A record with a broken USCC is refused again
as before and nothing is written for it; a second replay changes nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from connectors.config import ConnectorConfig
from connectors.mapping import DepartmentMapping
from connectors.records import RecordEncoder
from connectors.replay import DeadLetterReplay
from connectors.runner import run_connector
from connectors.sink.sink import CreditSink, SinkSettings
from connectors.sink.tables import DEAD_LETTERS_TABLE
from schemas import register_all
from tests.kafka_helpers import TopicWindow
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import DEAD_LETTER, LICENCES
from xietong.uscc import make_uscc

REPO = Path(__file__).parents[2]
FIXTURES = Path(__file__).parents[1] / "fixtures"
HEALTH_COMMISSION = "11330100EUHUXQEE4F"  # 杭州市卫生健康委员会
COLUMNS = [
    "记录编号", "版本", "统一社会信用代码", "行政相对人名称", "法定代表人", "许可文书号",
    "许可类别", "许可证编号", "许可内容", "许可决定日期", "有效期自", "有效期至", "当前状态",
]  # fmt: skip


def licence_row(number: int, decided_on: str, rng: random.Random) -> dict[str, str]:
    return {
        "记录编号": f"XK-{number}",
        "版本": "1",
        "统一社会信用代码": make_uscc("91", "330106", rng=rng),
        "行政相对人名称": f"杭州西湖区第{number}号宾馆有限公司",
        "法定代表人": "王芳",
        "许可文书号": f"杭卫公许〔2026〕{number}号",
        "许可类别": "普通",
        "许可证编号": f"浙卫公证字（2026）第{number:06d}号",
        "许可内容": "住宿",
        "许可决定日期": decided_on,
        "有效期自": "2026年11月02日",
        "有效期至": "2030年11月01日",
        "当前状态": "有效",
    }


def write_mapping(path: Path, date_formats: list[str]) -> None:
    mapping = yaml.safe_load((FIXTURES / "hz-health-licence.yaml").read_text(encoding="utf-8"))
    mapping["date_format"] = date_formats
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="module", autouse=True)
def schemas_registered(kafka: KafkaClients) -> None:
    register_all(kafka.schema_registry())


def auditor_rows(url: str, connector: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT * FROM auditor.dead_letters WHERE connector = :c"),
                {"c": connector},
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def sink_dead_letters(settings: Settings, url: str, key: Path, since: dt.datetime) -> None:
    """The sink over the dead-letter topic, from ``since`` to its end now."""
    sink = CreditSink(
        settings,
        SinkSettings(metrics_port=None, audit_key=key, batch_wait=0.1),
        url,
        topics={DEAD_LETTER.name: DEAD_LETTERS_TABLE},
        inboxes=False,
    )
    sink.start()
    try:
        sink.backfill(since=since)
    finally:
        sink.close()


def replay_cli(config: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "connect", "replay", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_a_rejected_record_is_shown_to_auditors_and_replayed_once_after_the_mapping_is_fixed(
    kafka: KafkaClients,
    connectors_kafka: KafkaClients,
    credit_databases: Any,
    stack_settings: Settings,
    tmp_path: Path,
) -> None:
    rng = random.Random(16)
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    good = licence_row(1, "2026年11月02日", rng)
    slashed = licence_row(2, "2026/11/02", rng)
    broken = licence_row(3, "2026年11月02日", rng)
    broken["统一社会信用代码"] = broken["统一社会信用代码"][:17] + (
        "0" if broken["统一社会信用代码"][17] != "0" else "1"
    )
    export = tmp_path / "licences.csv"
    with export.open("w", encoding="gb18030", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows([good, slashed, broken])
    mapping = tmp_path / "hz-health-licence.yaml"
    write_mapping(mapping, ["%Y年%m月%d日"])
    name = f"test-replay-{uuid.uuid4().hex[:8]}"
    config_path = tmp_path / "connector.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "mapping": str(mapping),
                "source": {"kind": "file", "path": str(export), "encoding": "gb18030"},
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    licences = TopicWindow(kafka, LICENCES.name)
    dead_letters = TopicWindow(kafka, DEAD_LETTER.name)

    report = run_connector(ConnectorConfig.load(config_path), connectors_kafka)

    assert (report.read, report.published, report.dead_lettered) == (3, 1, 2)
    letters = {
        m.value["source_record_id"]: m for m in dead_letters.read() if m.value["connector"] == name
    }
    assert set(letters) == {"XK-2", "XK-3"}

    # -- the auditor's view --------------------------------------------------------------------
    url = credit_databases()
    sink_dead_letters(stack_settings, url, tmp_path / "key.pem", started)
    rows = auditor_rows(url, name)
    by_record = {row["source_record_id"]: row for row in rows}
    assert set(by_record) == {"XK-2", "XK-3"}
    slashed_row = by_record["XK-2"]
    letter = letters["XK-2"]
    assert slashed_row["department_uscc"] == HEALTH_COMMISSION
    assert slashed_row["record_type"] == "licence"
    assert slashed_row["field"] == "decided_on"
    assert slashed_row["reason_code"] == "date.invalid"
    assert "2026/11/02" in slashed_row["reason"] and "%Y年%m月%d日" in slashed_row["reason"]
    assert slashed_row["source_partition"] == f"file:{export.resolve()}"
    assert slashed_row["source_offset"] == letter.value["source_offset"]
    assert slashed_row["position"] == "line 3"
    assert (slashed_row["dead_letter_partition"], slashed_row["dead_letter_offset"]) == (
        letter.partition,
        letter.offset,
    )
    assert json.loads(slashed_row["payload_json"])["许可决定日期"] == "2026/11/02"
    assert by_record["XK-3"]["field"] == "uscc"

    # -- the mapping is fixed, the dead letters replayed --------------------------------------
    write_mapping(mapping, ["%Y年%m月%d日", "%Y/%m/%d"])
    replayed_window = TopicWindow(kafka, DEAD_LETTER.name)

    first = replay_cli(config_path)

    assert (first["dead_letters"], first["replayed"], first["still_refused"]) == (2, 1, 1)
    assert first["dead_lettered"] == first["not_replayable"] == 0
    events = [
        m.value
        for m in licences.read()
        if m.value["envelope"]["source_partition"] == f"file:{export.resolve()}"
    ]
    assert sorted(e["envelope"]["source_record_id"] for e in events) == ["XK-1", "XK-2"]
    event = next(e for e in events if e["envelope"]["source_record_id"] == "XK-2")
    assert event["decided_on"] == dt.date(2026, 11, 2)
    assert event["envelope"]["source_offset"] == letter.value["source_offset"]
    encoder = RecordEncoder(name, DepartmentMapping.load(mapping), kafka)
    assert event["envelope"]["event_id"] == encoder.event_id("XK-2", "1")
    # Beside the dead letter, the record settling it; nothing new for the one refused as before.
    settling = [m.value for m in replayed_window.read() if m.value["connector"] == name]
    assert [(s["dead_letter_id"], s["reasons"]) for s in settling] == [
        (letter.value["dead_letter_id"], [])
    ]
    assert settling[0]["replayed_event_id"] == event["envelope"]["event_id"]
    sink_dead_letters(stack_settings, url, tmp_path / "key.pem", started)
    states = {r["source_record_id"]: r for r in auditor_rows(url, name)}
    assert states["XK-2"]["state"] == "REPLAYED"
    assert states["XK-2"]["replayed_event_id"] == event["envelope"]["event_id"]
    assert states["XK-2"]["source_offset"] == letter.value["source_offset"]
    assert (states["XK-3"]["state"], states["XK-3"]["field"]) == ("REFUSED", "uscc")
    after_first = TopicWindow(kafka, DEAD_LETTER.name)

    # -- a second replay changes nothing -------------------------------------------------------
    second = DeadLetterReplay(ConnectorConfig.load(config_path), connectors_kafka).run()

    assert (second.dead_letters, second.replayed, second.still_refused) == (1, 0, 1)
    assert second.dead_lettered == 0
    again = [
        m
        for m in licences.read()
        if m.value["envelope"]["source_partition"] == f"file:{export.resolve()}"
    ]
    assert len(again) == 2
    assert [m for m in after_first.read() if m.value["connector"] == name] == []
    sink_dead_letters(stack_settings, url, tmp_path / "key.pem", started)
    assert auditor_rows(url, name) == list(states.values())
