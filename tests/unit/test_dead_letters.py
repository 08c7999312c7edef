"""The one dead-letter builder: what every ``platform.dead-letter`` record says."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine
from fastavro import parse_schema, schemaless_writer

from connectors.mapping import DepartmentMapping
from connectors.records import RecordEncoder, SourceRecord
from schemas import DEAD_LETTER_RECORD
from xietong.clock import millis
from xietong.dead_letters import (
    MESSAGE_LIMIT,
    PAYLOAD_LIMIT,
    REASON_MESSAGE_LIMIT,
    Reason,
    dead_letter,
    unreadable_message,
)
from xietong.ids import deterministic_id
from xietong.logs import event_fields

FIXTURES = Path(__file__).parents[1] / "fixtures"
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


def test_a_truncated_payload_keeps_the_length_and_digest_of_the_whole() -> None:
    huge = bytes(range(256)) * 4000
    value = dead_letter(
        dead_letter_id="d", connector="hz-amr", record_type="registration",
        source_system="登记系统", source_partition="file:big.csv", source_offset="1024000",
        position="line 2", payload=huge, reasons=[Reason("", "record.too_long", "too long")],
    )  # fmt: skip
    fits_the_schema(value)
    assert value["payload_length"] == len(huge)
    assert value["payload_sha256"] == hashlib.sha256(huge).hexdigest()
    assert len(value["payload"]) == PAYLOAD_LIMIT


def test_reasons_are_bounded_so_the_dead_letter_still_fits_a_kafka_message() -> None:
    many = [Reason("名称" * 500, "required", "值" * 50_000) for _ in range(500)]
    value = dead_letter(
        dead_letter_id="d", connector="hz-amr", record_type="registration",
        source_system="登记系统", source_partition="file:x.csv", source_offset="10",
        position="line 1", payload=b"x" * (2 * PAYLOAD_LIMIT), payload_json="{}", reasons=many,
    )  # fmt: skip
    fits_the_schema(value)
    encoded = io.BytesIO()
    schemaless_writer(encoded, parse_schema(json.loads(DEAD_LETTER_RECORD.schema_str)), value)
    assert len(encoded.getvalue()) + 1024 < MESSAGE_LIMIT
    assert value["reasons"][-2]["code"] == "reasons.truncated"
    assert value["reasons"][-1]["code"] == "payload.truncated"
    assert all(len(r["message"]) < 2 * REASON_MESSAGE_LIMIT for r in value["reasons"])


def test_text_that_is_not_unicode_is_kept_as_escapes() -> None:
    value = dead_letter(
        dead_letter_id="d", connector="hz-amr", record_type="registration",
        source_system="登记系统", source_partition="http:hz-amr", source_offset="r1/0",
        position="request r1, record 0", payload=b'{"name": "\\ud800"}',
        payload_json='{"name": "\ud800"}', reasons=[Reason("name", "text.invalid", "\ud800 bad")],
    )  # fmt: skip
    fits_the_schema(value)
    assert value["payload_json"] == '{"name": "\\ud800"}'
    assert value["reasons"][0]["message"] == "\\ud800 bad"


class _AvroWithoutRegistry:
    """Serialises with fastavro alone, for the dead letters a unit test looks at."""

    def avro_serializer(self, schema_str: str) -> Callable[[dict[str, Any], object], bytes]:
        def serialize(value: dict[str, Any], context: object) -> bytes:
            encoded = io.BytesIO()
            schemaless_writer(encoded, parse_schema(json.loads(schema_str)), value)
            return encoded.getvalue()

        return serialize


def test_a_failure_no_rule_foresaw_makes_a_logged_record_unprocessable_dead_letter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mapping = DepartmentMapping.load(FIXTURES / "hz-health-licence.yaml")

    def breaks(fields: object) -> None:
        raise ArithmeticError("a value no rule foresaw")

    mapping.map = breaks  # type: ignore[method-assign,assignment]
    encoder = RecordEncoder("hz-health", mapping, _AvroWithoutRegistry())  # type: ignore[arg-type]
    record = SourceRecord("file:x.csv", "120", "line 3", b"3,1,...", {"记录编号": "3"})

    with caplog.at_level(logging.INFO, logger="connectors.records"):
        encoded = encoder.encode(record)

    assert encoded.topic == DEAD_LETTER_RECORD.topic.name
    [problem] = encoded.problems
    assert problem.code == "record.unprocessable"
    assert "line 3" in problem.message and "while mapping" in problem.message
    assert "a value no rule foresaw" in problem.message
    [logged] = [record for record in caplog.records if record.message == "record_unprocessable"]
    assert "ArithmeticError" in str(event_fields(logged))
