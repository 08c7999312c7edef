"""The one order of a record's versions (``xietong/versions.py``): the source's version
(numbers as numbers, timestamps as instants, same kinds only; a digest orders nothing),
then the source offset within one source partition, then the content; never a uuid."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given

from xietong.versions import RecordVersion, content_digest, is_later, order_key, version_of

DIGEST_A = "0f3c9a1b2d4e5f60718293a4"
DIGEST_B = "ffffffffffffffffffffffff"


def version(
    record_version: str,
    *,
    partition: str = "sql:credit/list_entries",
    offset: str = "1",
    content: str = "a",
) -> RecordVersion:
    return {
        "record_version": record_version,
        "source_partition": partition,
        "source_offset": offset,
        "content": content,
    }


@pytest.mark.parametrize(
    ("later", "earlier"),
    [
        ("10", "9"),  # as numbers, not as text ("10" < "9")
        ("2", "1.5"),
        ("1e3", "999"),
        ("2026-03-01T10:00:00", "2026-03-01T09:59:59"),
        ("2026-03-02", "2026-03-01T23:59:59"),  # a date is its 00:00
        ("2026-03-01T02:00:00+00:00", "2026-03-01T09:30:00"),  # 10:00 in Hangzhou
        ("2026-03-01 10:00:00.5", "2026-03-01 10:00:00"),
    ],
)
def test_the_sources_version_orders_numbers_as_numbers_and_timestamps_as_instants(
    later: str, earlier: str
) -> None:
    # The earlier version comes later in the source and has the greater content: neither
    # decides while the versions do.
    assert is_later(version(later), version(earlier, offset="2", content="z"))
    assert not is_later(version(earlier, offset="2", content="z"), version(later))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("2", "2026-03-01"),  # a number and a date: no order between them
        (DIGEST_A, DIGEST_B),  # digests of the content: no order
        (DIGEST_A, "3"),
        ("第二版", "第一版"),  # text that is no number and no instant
    ],
)
def test_versions_without_an_order_between_them_fall_to_the_source_offset(
    first: str, second: str
) -> None:
    assert is_later(version(first, offset="8"), version(second, offset="7"))
    assert is_later(version(second, offset="8"), version(first, offset="7"))


def test_a_digest_of_only_digits_is_still_a_digest() -> None:
    digits = "1" * 24
    assert is_later(version(digits, offset="2"), version("2" * 24, offset="1"))


def test_the_source_offset_orders_as_a_number_and_only_within_one_source_partition() -> None:
    assert is_later(version(DIGEST_A, offset="10"), version(DIGEST_A, offset="9"))
    # Other partitions (a file and a table): the offsets say nothing, the content decides.
    file_row = version(DIGEST_A, partition="file:/in/a.csv", offset="900", content="a")
    table_row = version(DIGEST_B, partition="sql:credit/t", offset="3", content="b")
    assert is_later(table_row, file_row)
    assert not is_later(file_row, table_row)


def test_equal_versions_fall_to_the_offset_then_the_content() -> None:
    assert is_later(version("3", offset="5"), version("3", offset="4"))
    assert is_later(
        version("3", offset="req-b:0", content="b"), version("3", offset="req-a:0", content="a")
    )


def test_the_same_content_again_is_not_later() -> None:
    same = version(DIGEST_A, partition="http:hz-amr", offset="r1:0")
    again = version(DIGEST_A, partition="http:zj-drc", offset="r2:0")
    assert not is_later(again, same)
    assert not is_later(same, again)


VALUES = st.one_of(
    st.integers(0, 10**6).map(str),
    st.dates().map(str),
    st.text("0123456789abcdef", min_size=24, max_size=24),
)


@given(a=VALUES, b=VALUES, offsets=st.tuples(st.integers(0, 9), st.integers(0, 9)))
def test_of_two_different_versions_exactly_one_is_later(
    a: str, b: str, offsets: tuple[int, int]
) -> None:
    first = version(a, offset=str(offsets[0]), content=f"{a}|{offsets[0]}")
    second = version(b, offset=str(offsets[1]), content=f"{b}|{offsets[1]}")
    if first == second:
        assert not is_later(first, second)
    else:
        assert is_later(first, second) != is_later(second, first)


def test_a_records_version_is_its_envelopes_order_fields_and_its_content() -> None:
    envelope = {
        "event_id": "6f1d2c0e-3b9a-5c4e-9a57-58696574e76f",
        "record_version": "2",
        "source_partition": "sql:licences",
        "source_offset": "17",
        "event_time": 0,
    }
    record = {"envelope": envelope, "licence_number": "JY1", "status": "CANCELLED"}
    assert version_of(record) == {
        "record_version": "2",
        "source_partition": "sql:licences",
        "source_offset": "17",
        "content": content_digest({"status": "CANCELLED", "licence_number": "JY1"}),
    }
    # The envelope (its uuid, its ingest time) is no part of the content.
    assert content_digest(record) == content_digest({**record, "envelope": {}})


NUMBERS = st.decimals(-(10**12), 10**12, places=3, allow_nan=False).map(str)
INSTANTS = st.datetimes().map(lambda moment: moment.isoformat())
DIGESTS = st.text("0123456789abcdef", min_size=24, max_size=24)


@given(
    pair=st.one_of(*(st.tuples(kind, kind) for kind in (NUMBERS, INSTANTS, DIGESTS))),
    offsets=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)),
)
def test_the_sql_order_key_sorts_one_kind_of_versions_of_one_partition_as_is_later(
    pair: tuple[str, str], offsets: tuple[int, int]
) -> None:
    first = version(pair[0], offset=str(offsets[0]), content=f"{pair[0]}|{offsets[0]}")
    second = version(pair[1], offset=str(offsets[1]), content=f"{pair[1]}|{offsets[1]}")
    assert (order_key(first) > order_key(second)) == is_later(first, second)


def test_the_sql_order_key_bounds_a_huge_number() -> None:
    huge, one = version("1e999999999"), version("1")
    assert order_key(huge) > order_key(one)
    assert len(order_key(huge)) == len(order_key(one))
