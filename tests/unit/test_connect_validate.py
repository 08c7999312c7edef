"""`xietong connect validate`: a department's sample, mapped field by field, nothing published."""

from __future__ import annotations

import csv
import random
from datetime import UTC, date, datetime, time
from pathlib import Path
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
