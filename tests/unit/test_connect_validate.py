"""`xietong connect validate`: a department's sample, mapped field by field, nothing published."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from typer.testing import CliRunner

from app.cli import app
from app.samples import DEPARTMENTS_DIR, SampleGenerator, write_export
from connectors.records import event_time
from xietong.clock import DAY_MS, business_clock, millis

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_validate_shows_each_field_and_counts_what_would_be_dead_lettered(tmp_path: Path) -> None:
    generator = SampleGenerator(None, seed=random.Random(4).randrange(1 << 20), bad_share=0.2)
    records = generator.generate(400).exports["hz-amr-registration"][:60]
    export = generator.exports["hz-amr-registration"]
    sample = tmp_path / "sample.csv"
    write_export(sample, export, records)
    bad = sum(1 for record in records if not record.good)

    result = CliRunner().invoke(
        app,
        [
            "connect",
            "validate",
            str(DEPARTMENTS_DIR / "hz-amr-registration.connector.yaml"),
            str(sample),
            "--limit",
            "2",
        ],
        env={"COLUMNS": "200"},
    )

    assert result.exit_code == 0, result.output
    assert "统一社会信用代码" in result.output  # the department's column, shown per field
    assert "uscc" in result.output and "business_scope_items" in result.output
    assert (
        f"{len(records)} records: {len(records) - bad} accepted, {bad} would be dead-lettered"
        in result.output
    )


# -- the day of a record, on either side of midnight in China ------------------------------

INSTANTS = {
    "15:30Z": datetime(2026, 12, 6, 15, 30, tzinfo=UTC),  # 23:30 in China, 6 December
    "16:30Z": datetime(2026, 12, 6, 16, 30, tzinfo=UTC),  # 00:30 in China, 7 December
    "23:30Z": datetime(2026, 12, 6, 23, 30, tzinfo=UTC),  # 07:30 in China, 7 December
}


@pytest.mark.parametrize("instant", INSTANTS.values(), ids=INSTANTS.keys())
def test_a_decision_of_today_happened_at_the_province_s_midnight_before_now(
    instant: datetime,
) -> None:
    with time_machine.travel(instant, tick=False):
        today = business_clock().today()
        happened = event_time("licence", {"decided_on": today})
    assert business_clock().day_of(happened) == today
    assert happened <= millis(instant) < happened + DAY_MS
    assert datetime.fromtimestamp(happened / 1000, SHANGHAI).time() == time.min


def test_a_removal_is_when_a_list_entry_happened() -> None:
    fields = {"listed_on": date(2026, 1, 5), "removed_on": date(2026, 12, 7)}
    assert event_time("credit_list_entry", fields) == millis(
        datetime(2026, 12, 6, 16, 0, tzinfo=UTC)
    )


@pytest.mark.parametrize("instant", INSTANTS.values(), ids=INSTANTS.keys())
def test_sample_exports_count_their_days_back_from_the_province_s_today(instant: datetime) -> None:
    with time_machine.travel(instant, tick=False):
        generator = SampleGenerator(None, seed=7, bad_share=0.0)
    assert generator.today == business_clock().day_of(instant)


def test_validate_counts_refused_values_by_their_code(tmp_path: Path) -> None:
    """A department trying its export sees which values its mapping refuses, and why."""
    generator = SampleGenerator(None, seed=7, bad_share=0.0)
    records = generator.generate(8000).exports["zj-drc-penalty"][:3]
    sample = tmp_path / "sample.csv"
    write_export(sample, generator.exports["zj-drc-penalty"], records)
    with sample.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["罚款金额(万元)"] = "1,000"
    rows[1]["行政相对人名称"] = "杭州\x00某某有限公司"
    with sample.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    result = CliRunner().invoke(
        app,
        [
            "connect",
            "validate",
            str(DEPARTMENTS_DIR / "zj-drc-penalty.connector.yaml"),
            str(sample),
            "--limit",
            "0",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "3 records: 1 accepted, 2 would be dead-lettered" in result.output
    assert "amount.separator: 1" in result.output
    assert "text.control: 1" in result.output


# -- the failing lines, listed -------------------------------------------------------------

KIT_EXAMPLE = Path(__file__).parents[2] / "connectors" / "kit" / "examples"


def bad_penalties(tmp_path: Path) -> Path:
    """The kit's mixed-dates penalty sample, with three bad lines after its three good ones:
    a month 13 (line 5), a wrong USCC check character and a 30 February (line 6), a line of
    three values (line 7)."""
    good = (KIT_EXAMPLE / "mixed-dates-penalty.csv").read_text(encoding="utf-8").splitlines()
    header, first, second = good[0], good[1], good[2]
    lines = [
        *good,
        first.replace("XH-AJ-2024-011", "XH-AJ-2024-014").replace("2024年3月5日", "2024-13-01"),
        second.replace("XH-AJ-2024-012", "XH-AJ-2024-015")
        .replace("91330106HMM850L299", "91330106HMM850L29X")
        .replace("20240605", "2024/2/30"),
        "XH-AJ-2024-016,only,three",
    ]
    assert header.startswith("案件编号")
    sample = tmp_path / "penalties.csv"
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sample


def validate(*args: str) -> Any:
    connector = KIT_EXAMPLE / "mixed-dates-penalty.connector.yaml"
    return CliRunner().invoke(
        app, ["connect", "validate", str(connector), *args], env={"COLUMNS": "100"}
    )


def test_validate_lists_each_failing_line_with_its_field_column_and_what_was_expected(
    tmp_path: Path,
) -> None:
    result = validate(str(bad_penalties(tmp_path)), "--limit", "0")

    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[:5] == [
        "4 problems:",
        "line 5  field decided_on (column 处罚决定日期)  date.invalid: '2024-13-01' is not a date"
        " in any of the formats %Y年%m月%d日 (e.g. 2024年03月05日), %Y/%m/%d (e.g. 2024/03/05)",
        "line 6  field uscc (column 统一社会信用代码)  value '91330106HMM850L29X'"
        "  uscc.check_character: check character (position 18) is 'X', expected '9'",
        "line 6  field publicity_until (column 公示截止期)  date.invalid: '2024/2/30' is not a"
        " date in any of the formats %Y-%m-%d (e.g. 2024-03-05), %Y%m%d (e.g. 20240305)",
        "line 7  (record)  row.columns: line 7 has 3 values, the header has 12",
    ]
    assert "6 records: 3 accepted, 3 would be dead-lettered" in result.stdout


def test_validate_lists_only_the_first_failures_asked_for(tmp_path: Path) -> None:
    sample = str(bad_penalties(tmp_path))

    first = validate(sample, "--limit", "0", "--failures", "1")
    none = validate(sample, "--limit", "0", "--failures", "0")

    assert first.exit_code == 0 and none.exit_code == 0
    assert "4 problems, the first 1:" in first.stdout
    assert "line 5  field decided_on" in first.stdout and "line 6" not in first.stdout
    assert "problems" not in none.stdout and "line 5" not in none.stdout
    assert "date.invalid: 2" in none.stdout  # the counts stay


def test_validate_json_is_one_document_with_the_counts_and_the_failures(tmp_path: Path) -> None:
    result = validate(str(bad_penalties(tmp_path)), "--json", "--failures", "3")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["records"], report["accepted"], report["dead_lettered"]) == (6, 3, 3)
    assert report["by_code"] == {"date.invalid": 2, "uscc.check_character": 1, "row.columns": 1}
    assert report["problems"] == 4 and report["failures_not_listed"] == 1
    assert report["failures"][0] == {
        "position": "line 5",
        "field": "decided_on",
        "column": "处罚决定日期",
        "value": "2024-13-01",
        "code": "date.invalid",
        "reason": "'2024-13-01' is not a date in any of the formats %Y年%m月%d日"
        " (e.g. 2024年03月05日), %Y/%m/%d (e.g. 2024/03/05)",
    }
    assert [f["position"] for f in report["failures"]] == ["line 5", "line 6", "line 6"]


def test_a_sample_the_mapping_reads_whole_lists_no_failure() -> None:
    result = validate(str(KIT_EXAMPLE / "mixed-dates-penalty.csv"), "--limit", "0")
    assert result.exit_code == 0
    assert result.stdout.strip() == "3 records: 3 accepted, 0 would be dead-lettered"


def test_a_sample_that_cannot_be_read_is_one_line_naming_it(tmp_path: Path) -> None:
    result = validate(str(tmp_path / "missing.csv"))
    assert result.exit_code == 1
    said = " ".join(result.output.split())  # the error console wraps at the terminal's width
    assert "missing.csv does not exist" in said and "Traceback" not in said
