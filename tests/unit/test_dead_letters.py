"""The one dead-letter builder: what every ``platform.dead-letter`` record says."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import time_machine
from fastavro import parse_schema, schemaless_writer

from schemas import DEAD_LETTER_RECORD
from xietong.clock import millis
from xietong.dead_letters import PAYLOAD_LIMIT, Reason, dead_letter, unreadable_message
from xietong.ids import deterministic_id

REFUSED_AT = datetime(2026, 12, 6, 16, 30, tzinfo=UTC)


def fits_the_schema(value: dict[str, object]) -> None:
    schemaless_writer(io.BytesIO(), parse_schema(json.loads(DEAD_LETTER_RECORD.schema_str)), value)


def test_an_unreadable_message_is_named_by_its_topic_partition_and_offset() -> None:
    with time_machine.travel(REFUSED_AT, tick=False):
        value = unreadable_message(
            connector="sink.credit", source_system="xietong.sink", record_type="unknown",
            topic="dualnotice.pushes", partition=3, offset=17, payload=b"\x00not avro",
            code="sink.unreadable", message="not Avro", id_prefix="sink|",
        )  # fmt: skip
    fits_the_schema(value)
    assert value["dead_letter_id"] == deterministic_id("sink|dualnotice.pushes|3|17")
    assert value["source_partition"] == "dualnotice.pushes[3]"
    assert value["position"] == "dualnotice.pushes partition 3 offset 17"
    assert value["reasons"] == [{"field": "", "code": "sink.unreadable", "message": "not Avro"}]
    assert value["failed_at"] == millis(REFUSED_AT)


def test_a_payload_beyond_the_broker_s_size_is_cut_and_says_so() -> None:
    huge = b"x" * (PAYLOAD_LIMIT + 10)
    value = dead_letter(
        dead_letter_id="d", connector="hz-amr", record_type="registration",
        source_system="登记系统", source_partition="file:big.jsonl", source_offset="10",
        position="line 1", payload=huge, payload_json=json.dumps({"blob": huge.decode()}),
        reasons=[Reason("uscc", "required", "统一社会信用代码 is empty")],
    )  # fmt: skip
    fits_the_schema(value)
    assert value["payload"] == huge[:PAYLOAD_LIMIT]
    assert value["payload_json"] is None
    assert [r["code"] for r in value["reasons"]] == ["required", "payload.truncated"]
    assert str(len(huge)) in value["reasons"][1]["message"]
