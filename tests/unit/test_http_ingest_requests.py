"""What the HTTP ingest makes of a posted body before anything is produced: the pure part."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.http_ingest import (
    BatchTooLargeError,
    lone_surrogate,
    parse_batch,
    request_fingerprint,
    request_key,
    source_record,
)
from xietong.http_errors import ApiError, InvalidInputError, error_response

HZ_HEALTH = "11330100EUHUXQEE4F"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"records": NaN}', "holds NaN"),
        (b'{"records": [1e5, Infinity]}', "holds Infinity"),
        (b'{"records": [', "line 1 column 14"),
        (b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too deeply"),
        (b'{"records": [' + b"1" * 4301 + b"]}", "4300 digits"),
        (b'{"records": ["\xff"]}', "byte 0xff at byte 14"),
    ],
)
def test_a_body_that_is_not_strict_utf8_json_is_refused_saying_where(
    body: bytes, said: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        parse_batch(body, max_batch=10)
    assert refused.value.code == "invalid_json"
    assert said in refused.value.message


def test_a_body_that_is_not_the_contract_names_the_field() -> None:
    with pytest.raises(InvalidInputError) as refused:
        parse_batch(b'{"records": {"a": 1}}', max_batch=10)
    assert (refused.value.code, refused.value.field) == ("validation_error", "records")
    with pytest.raises(InvalidInputError) as refused:
        parse_batch(b"[]", max_batch=10)
    assert refused.value.message.startswith("body: ")


def test_more_records_than_max_batch_are_refused_whole() -> None:
    assert parse_batch(b'{"records": [{}, {}], "extra": 1}', max_batch=2) == [{}, {}]
    with pytest.raises(BatchTooLargeError, match="3 records in one request; at most 2"):
        parse_batch(b'{"records": [{}, {}, {}]}', max_batch=2)


def test_a_lone_surrogate_is_found_in_values_nested_values_and_column_names() -> None:
    assert lone_surrogate({"名称": "杭州示例", "n": 1, "list": ["a", {"b": "c"}]}) is None
    assert lone_surrogate({"名称": "杭州\ud800示例"}) == ("名称", "\ud800", 3)
    assert lone_surrogate({"名称": ["ok", {"x": "\udfff"}]}) == ("名称", "\udfff", 1)
    assert lone_surrogate({"名\udc80": "ok"}) == ("名\udc80", "\udc80", 2)
    # A pair written as two escapes is one character, not a surrogate.
    assert lone_surrogate(json.loads('{"a": "\\ud83d\\ude00"}')) is None


def test_a_record_holding_a_lone_surrogate_is_rejected_naming_its_index_column_and_field() -> None:
    record = {"行政相对人名称": "杭州\ud800餐饮", "记录编号": "XK-1"}
    read = source_record(HZ_HEALTH, "key-1", 3, record, {"行政相对人名称": "holder_name"})

    assert read.fields is None and read.read_problem is not None
    assert (read.read_problem.field, read.read_problem.code) == ("holder_name", "text.surrogate")
    assert "record 3, column '行政相对人名称'" in read.read_problem.message
    assert "\\ud800 at character 3" in read.read_problem.message
    assert json.loads(read.raw) == record  # the JSON text, the surrogate escaped
    assert read.raw.isascii()
    assert (read.source_offset, read.position) == ("key-1:3", "request key-1, record 3")


def test_a_record_that_is_no_object_is_rejected_on_its_own() -> None:
    read = source_record(HZ_HEALTH, "r", 0, ["XK-1"])
    assert read.read_problem is not None and read.read_problem.code == "json.not_object"
    assert "record 0 is a JSON array" in read.read_problem.message
    assert read.raw == b'["XK-1"]'


def test_the_request_key_is_either_header_and_both_must_agree() -> None:
    assert request_key(None, None) is None
    assert request_key("k-1", None) == request_key(None, "k-1") == request_key("k-1", "k-1")
    with pytest.raises(ApiError, match="differ"):
        request_key("k-1", "k-2")


def test_a_request_is_the_same_request_by_record_type_and_body_bytes() -> None:
    body = b'{"records": []}'
    assert request_fingerprint("licence", body) == request_fingerprint("licence", body)
    assert request_fingerprint("licence", body) != request_fingerprint("penalty", body)
    assert request_fingerprint("licence", body) != request_fingerprint("licence", body + b" ")


def test_an_error_body_renders_whatever_text_it_quotes() -> None:
    quoted = error_response(422, "invalid_input", "column '杭州\ud800' is not known")
    assert json.loads(quoted.body)["message"] == "column '杭州\ud800' is not known"
    plain = error_response(422, "invalid_input", "杭州 is not known")
    assert "杭州".encode() in plain.body  # UTF-8 as it is, when it can be


def test_a_record_nested_deeper_than_can_be_written_again_is_rejected_on_its_own() -> None:
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    read = source_record(HZ_HEALTH, "r", 4, {"许可内容": nested})
    assert read.fields is None and read.read_problem is not None
    assert read.read_problem.code == "json.too_deep"
    assert "record 4" in read.read_problem.message
