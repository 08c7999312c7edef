"""Dead letters as the credit database keeps them, and what a replay reads and remembers.

The replay against the real broker and sink is tests/integration/test_dead_letter_replay.py.
"""

from __future__ import annotations

import json
from typing import Any

from connectors.replay import ReplayState, reasons_of, source_record
from connectors.sink.tables import DEAD_LETTERS_TABLE, TABLES_BY_TOPIC
from connectors.validation import Problem
from xietong.dead_letters import Reason, dead_letter, settled
from xietong.topics import DEAD_LETTER

HEALTH_COMMISSION = "11330100EUHUXQEE4F"


def letter(**changes: Any) -> dict[str, Any]:
    fields = {"记录编号": "XK-2", "许可决定日期": "2026/11/02"}
    value = dead_letter(
        dead_letter_id="6f1c0c57-0000-5000-8000-000000000002",
        connector="hz-health-licences",
        record_type="licence",
        source_department_uscc=HEALTH_COMMISSION,
        source_system="卫生许可审批系统",
        source_partition="file:/exports/licences.csv",
        source_offset="812",
        position="line 3",
        source_record_id="XK-2",
        payload="XK-2,…,2026/11/02".encode("gb18030"),
        payload_json=json.dumps(fields, ensure_ascii=False),
        reasons=[Reason("decided_on", "date.invalid", "decided_on: not a date in any of …")],
    )
    return {**value, **changes}


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    mapping = DEAD_LETTERS_TABLE
    values = mapping.row(record, DEAD_LETTER.name, 1, 40)
    names = [c.name for c in mapping.all_columns] + ["source_topic", "kafka_partition", "offset"]
    return dict(zip(names, values, strict=True))


def test_the_sink_keeps_every_dead_letter_with_the_records_id_and_where_it_was() -> None:
    assert TABLES_BY_TOPIC[DEAD_LETTER.name] is DEAD_LETTERS_TABLE
    row = row_of(letter())
    assert row["source_record_id"] == "XK-2"
    assert row["department_uscc"] == HEALTH_COMMISSION
    assert (row["record_partition"], row["record_offset"]) == ("file:/exports/licences.csv", "812")
    assert row["reasons"][0]["field"] == "decided_on"
    assert (row["source_topic"], row["kafka_partition"], row["offset"]) == (DEAD_LETTER.name, 1, 40)


def test_a_record_refused_again_later_is_a_row_of_its_own_and_the_same_letter_is_one() -> None:
    first = letter()
    again = letter(failed_at=first["failed_at"] + 86_400_000)
    assert DEAD_LETTERS_TABLE.event_id(first) == DEAD_LETTERS_TABLE.event_id(dict(first))
    assert DEAD_LETTERS_TABLE.event_id(first) != DEAD_LETTERS_TABLE.event_id(again)


def test_a_nul_a_department_sent_is_kept_as_text_postgresql_can_hold() -> None:
    nul = letter(
        position="line 3\x00",
        reasons=[{"field": "holder_name", "code": "text.control", "message": "has \x00"}],
    )
    row = row_of(nul)
    assert "\x00" not in row["position"] and row["position"].endswith("\\x00")
    assert "\x00" not in json.dumps(row["reasons"], ensure_ascii=False).replace("\\u0000", "")
    assert "\x00" not in row["reasons"][0]["message"]


def test_a_dead_letter_written_before_the_record_id_existed_is_kept_without_it() -> None:
    old = letter()
    del old["source_record_id"], old["payload_length"], old["payload_sha256"]
    assert row_of(old)["source_record_id"] is None


def test_a_replay_rebuilds_the_record_as_read_where_it_was_read() -> None:
    record = source_record(letter())
    assert record is not None
    assert record.fields == {"记录编号": "XK-2", "许可决定日期": "2026/11/02"}
    assert (record.source_partition, record.source_offset, record.position) == (
        "file:/exports/licences.csv",
        "812",
        "line 3",
    )
    assert record.raw.decode("gb18030").startswith("XK-2,")


def test_a_record_that_could_not_be_decoded_cannot_be_replayed() -> None:
    assert source_record(letter(payload_json=None)) is None


def test_refused_for_the_same_reasons_is_told_from_refused_for_others() -> None:
    kept = letter()["reasons"]
    same = [Problem("decided_on", "date.invalid", "decided_on: not a date in any of …")]
    other = [Problem("uscc", "uscc.check_character", "uscc: the check character …")]
    assert reasons_of(same) == reasons_of(kept)
    assert reasons_of(other) != reasons_of(kept)


def test_the_replay_state_reads_on_from_where_it_stopped_and_again_what_it_left_refused() -> None:
    state = ReplayState({0: 120, 1: 45, 2: 9}, [(1, 30), (1, 44)])
    assert state.start() == {0: 120, 1: 30, 2: 9}
    assert state.wants(1, 30) and state.wants(1, 44) and state.wants(1, 45)
    assert not state.wants(1, 31) and not state.wants(0, 119)
    assert state.wants(2, 9) and state.wants(5, 0)  # a partition it never read
    again = ReplayState.from_json(state.to_json())
    assert (again.offsets, sorted(again.refused)) == (state.offsets, sorted(state.refused))
    assert ReplayState().start() == {}


def test_a_replayed_dead_letter_is_settled_under_its_id_and_the_sink_keeps_it_replayed() -> None:
    refused = letter()
    record = settled(refused, "c0ffee00-0000-5000-8000-000000000001")
    assert record["dead_letter_id"] == refused["dead_letter_id"]
    assert (record["reasons"], record["payload"], record["payload_json"]) == ([], b"", None)
    assert record["payload_sha256"] == refused["payload_sha256"]
    assert record["failed_at"] >= refused["failed_at"]
    row = row_of(record)
    assert row["replayed_event_id"] == "c0ffee00-0000-5000-8000-000000000001"
    assert row["reasons"] == []
    assert row_of(refused)["replayed_event_id"] is None
