"""Reading department exports: every record on its own, every byte accounted for."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from connectors.file_source import FileSource
from connectors.records import SourceRecord

HEADER = "记录编号,名称,金额\r\n"


def read_all(path: Path, **options: object) -> tuple[list[SourceRecord], FileSource]:
    source = FileSource(path, **options)  # type: ignore[arg-type]
    records = [record for record in source.read(None) if record is not None]
    return records, source


def assert_every_byte_accounted_for(path: Path, records: list[SourceRecord], source: FileSource):
    """The records' spans tile the file from the header's end, blank lines between."""
    account = source.byte_account()
    assert account is not None
    size = path.stat().st_size
    assert (account.total, account.end) == (size, size)
    position, blank = account.header, 0
    data = path.read_bytes()
    for record in records:
        assert record.span is not None
        start, end = record.span
        assert start >= position
        assert not data[position:start].strip(), "only blank lines lie between records"
        blank += start - position
        assert record.source_offset == str(end)
        position = end
    blank += size - position
    assert not data[position:].strip()
    assert account.blank == blank


def codes(records: list[SourceRecord]) -> list[str | None]:
    return [record.read_problem.code if record.read_problem else None for record in records]


def test_a_quote_that_never_closes_refuses_its_line_and_the_rows_after_it_are_read(
    tmp_path: Path,
) -> None:
    export = tmp_path / "licences.csv"
    rows = [f"{n},杭州第{n}号酒店,100\r\n" for n in range(1, 101)]
    rows.insert(1, '2x,"杭州西湖区某某酒店,100\r\n')  # the quote opens and never closes
    export.write_bytes((HEADER + "".join(rows)).encode("gb18030"))

    records, source = read_all(export, encoding="gb18030")

    assert len(records) == 101
    assert codes(records).count(None) == 100
    unclosed = records[1]
    assert unclosed.read_problem is not None
    assert unclosed.read_problem.code == "csv.unclosed_quote"
    assert unclosed.position == "line 3"
    assert "line 3" in unclosed.read_problem.message
    assert unclosed.raw.decode("gb18030") == '2x,"杭州西湖区某某酒店,100'
    assert [r.fields["记录编号"] for r in records if r.fields] == [str(n) for n in range(1, 101)]
    assert_every_byte_accounted_for(export, records, source)


def test_a_stray_quote_closed_by_another_s_does_not_swallow_the_rows_between(
    tmp_path: Path,
) -> None:
    export = tmp_path / "licences.csv"
    rows = ["1,杭州,5", '2,"宁波青禾,6', "3,温州,7", '4,"绍兴,8', "5,湖州,9", "6,嘉兴,1"]
    export.write_text(HEADER + "\r\n".join(rows) + "\r\n", encoding="gb18030", newline="")

    records, source = read_all(export, encoding="gb18030")

    assert codes(records) == [None, "csv.unclosed_quote", None, "csv.unclosed_quote", None, None]
    assert [r.position for r in records] == [f"line {n}" for n in range(2, 8)]
    assert_every_byte_accounted_for(export, records, source)


def test_a_quoted_field_may_span_lines_up_to_the_bound(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_text(
        HEADER + '1,"第一行\r\n第二行\r\n第三行",5\r\n' + '2,"一\r\n二\r\n三\r\n四",6\r\n3,x,7\r\n',
        encoding="utf-8",
        newline="",
    )

    records, source = read_all(export, max_record_lines=3)

    assert records[0].fields == {"记录编号": "1", "名称": "第一行\r\n第二行\r\n第三行", "金额": "5"}
    assert records[0].position == "line 2"
    # Four lines is one too many: the first is refused, the others are read as records.
    assert codes(records) == [None, "csv.unclosed_quote"] + ["row.columns"] * 3 + [None]
    assert records[-1].fields == {"记录编号": "3", "名称": "x", "金额": "7"}
    assert_every_byte_accounted_for(export, records, source)


def test_a_quoted_record_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_text(
        HEADER + '1,"' + "长" * 100 + "\n" + "长" * 100 + '",5\n2,b,6\n', encoding="utf-8"
    )

    records, source = read_all(export, max_record_bytes=400)

    assert codes(records) == ["csv.unclosed_quote", "row.columns", None]
    assert_every_byte_accounted_for(export, records, source)


def test_a_bare_carriage_return_in_an_unquoted_field_refuses_that_row_only(
    tmp_path: Path,
) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes((HEADER + "1,a,5\r\n2,杭州\r酒店,6\r\n3,c,7\r\n").encode("utf-8"))

    records, source = read_all(export)

    assert codes(records) == [None, "csv.invalid", None]
    problem = records[1].read_problem
    assert problem is not None and "carriage return" in problem.message
    assert records[1].position == "line 3"
    assert_every_byte_accounted_for(export, records, source)


def test_a_carriage_return_inside_quotes_is_part_of_the_value(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes((HEADER + '1,"杭州\r酒店",5\r\n').encode("utf-8"))

    records, _ = read_all(export)

    assert records[0].fields == {"记录编号": "1", "名称": "杭州\r酒店", "金额": "5"}


def test_invalid_bytes_refuse_their_line_and_the_file_carries_on(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes(
        HEADER.encode("gb18030")
        + "1,杭州,5\r\n".encode("gb18030")
        + b"2,\xff\xff\xff,6\r\n"
        + "3,宁波,7\r\n".encode("gb18030")
    )

    records, source = read_all(export, encoding="gb18030")

    assert codes(records) == [None, "encoding.invalid", None]
    assert records[1].raw == b"2,\xff\xff\xff,6"
    assert_every_byte_accounted_for(export, records, source)


def test_a_line_longer_than_the_bound_is_refused_without_being_held_whole(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes((HEADER + "1,a,5\n" + "9" * 5000 + "\n2,b,6\n").encode())

    records, source = read_all(export, max_record_bytes=1000)

    assert codes(records) == [None, "record.too_long", None]
    assert len(records[1].raw) == 1000
    assert records[1].whole == (5000, hashlib.sha256(b"9" * 5000).hexdigest())
    problem = records[1].read_problem
    assert problem is not None and "5001 bytes" in problem.message
    assert_every_byte_accounted_for(export, records, source)


def test_a_header_only_file_has_no_records_and_its_bytes_are_the_header(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes(b"\xef\xbb\xbf" + HEADER.encode())

    records, source = read_all(export)

    assert records == []
    account = source.byte_account()
    assert account is not None
    header = len(HEADER.encode()) + 3
    assert (account.header, account.start, account.blank, account.total) == (
        header,
        header,
        0,
        header,
    )


def test_a_bom_and_crlf_lines_are_read_as_utf_8(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes(b"\xef\xbb\xbf" + (HEADER + "1,杭州,5\r\n\r\n2,宁波,6").encode())

    records, source = read_all(export)

    assert [r.fields for r in records] == [
        {"记录编号": "1", "名称": "杭州", "金额": "5"},
        {"记录编号": "2", "名称": "宁波", "金额": "6"},
    ]
    assert [r.position for r in records] == ["line 2", "line 4"]
    assert_every_byte_accounted_for(export, records, source)


def test_a_resumed_read_starts_at_the_offset_and_names_records_by_byte(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes((HEADER + "1,a,5\r\n2,b,6\r\n3,c,7\r\n").encode())
    records, _ = read_all(export)

    source = FileSource(export)
    resumed = [r for r in source.read(records[0].source_offset) if r is not None]

    assert [r.fields["记录编号"] for r in resumed if r.fields] == ["2", "3"]
    assert resumed[0].position == f"byte {records[0].source_offset}"
    account = source.byte_account()
    assert account is not None and account.start == int(records[0].source_offset)


def test_an_undecodable_header_stops_the_run_with_what_to_do(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes("记录编号,名称\n1,a\n".encode("gb18030"))

    try:
        read_all(export, encoding="utf-8")
    except ValueError as error:
        assert "set encoding:" in str(error)
    else:
        raise AssertionError("an undecodable header must stop the run")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    garbage=st.binary(max_size=600)
    | st.lists(st.sampled_from([b'"', b",", b"\r", b"\n", b"\r\n", b"a", b"\xff", b" "])).map(
        b"".join
    ),
    encoding=st.sampled_from(["utf-8", "gb18030"]),
    max_record_lines=st.integers(1, 5),
)
def test_whatever_follows_a_valid_export_its_spans_cover_the_file_exactly(
    tmp_path_factory: object, garbage: bytes, encoding: str, max_record_lines: int
) -> None:
    export = tmp_path_factory.mktemp("fuzz") / "export.csv"  # type: ignore[attr-defined]
    export.write_bytes((HEADER + "1,杭州,5\r\n").encode(encoding) + garbage)

    records, source = read_all(
        export, encoding=encoding, max_record_lines=max_record_lines, max_record_bytes=64
    )

    assert records[0].fields == {"记录编号": "1", "名称": "杭州", "金额": "5"}
    assert_every_byte_accounted_for(export, records, source)


# -- JSON Lines ----------------------------------------------------------------------------


def test_json_lines_too_deep_or_with_huge_integers_are_refused_one_by_one(tmp_path: Path) -> None:
    export = tmp_path / "licences.jsonl"
    lines = [
        json.dumps({"记录编号": "1"}),
        "[" * 3000 + "]" * 3000,
        '{"金额": ' + "9" * 5000 + "}",
        "{not json",
        "[1, 2]",
        "",
        json.dumps({"记录编号": "2"}, ensure_ascii=False),
    ]
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")

    records, source = read_all(export)

    assert codes(records) == [
        None,
        "json.too_deep",
        "json.integer_too_long",
        "json.invalid",
        "json.not_object",
        None,
    ]
    assert [r.position for r in records] == [f"line {n}" for n in (1, 2, 3, 4, 5, 7)]
    assert_every_byte_accounted_for(export, records, source)


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(max_size=400))
def test_whatever_follows_valid_json_lines_their_spans_cover_the_file_exactly(
    tmp_path_factory: object, garbage: bytes
) -> None:
    export = tmp_path_factory.mktemp("fuzz") / "export.jsonl"  # type: ignore[attr-defined]
    export.write_bytes(b'{"a": 1}\n' + garbage)

    records, source = read_all(export, max_record_bytes=64)

    assert records[0].fields == {"a": 1}
    assert_every_byte_accounted_for(export, records, source)


# -- Excel ---------------------------------------------------------------------------------


def test_every_excel_row_is_a_record_named_by_its_row(tmp_path: Path) -> None:
    export = tmp_path / "licences.xlsx"
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["记录编号", "名称", "金额"])
    sheet.append(["1", "杭州", 5])
    sheet.append([None, None, None])
    sheet.append(["2", "宁波", 6])
    workbook.save(export)

    records, source = read_all(export)

    assert [(r.position, r.source_offset) for r in records] == [("row 2", "2"), ("row 4", "4")]
    assert records[1].fields == {"记录编号": "2", "名称": "宁波", "金额": 6}
    assert source.byte_account() is None


def test_an_excel_cell_that_cannot_be_a_date_does_not_stop_the_sheet(tmp_path: Path) -> None:
    export = tmp_path / "licences.xlsx"
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["记录编号", "许可决定日期"])
    sheet.append(["1", 1e12])  # a date serial far beyond year 9999
    sheet["B2"].number_format = "yyyy-mm-dd"
    sheet.append(["2", 46000])
    sheet["B3"].number_format = "yyyy-mm-dd"
    workbook.save(export)

    with pytest.warns(UserWarning, match="outside the limits for dates"):
        records, _ = read_all(export)

    assert [r.fields for r in records] == [
        {"记录编号": "1", "许可决定日期": "#VALUE!"},  # refused by the mapping as no date
        {"记录编号": "2", "许可决定日期": date(2025, 12, 9)},
    ]


def test_an_export_moved_away_while_it_is_read_is_still_read_to_its_end(tmp_path: Path) -> None:
    export = tmp_path / "licences.csv"
    export.write_bytes((HEADER + "1,a,5\n2,b,6\n").encode())
    source = FileSource(export)
    records = source.read(None)
    first = next(records)
    export.unlink()

    rest = list(records)

    assert first is not None and [r.fields["记录编号"] for r in rest if r and r.fields] == ["2"]
    assert source.lag(rest[-1].source_offset if rest[-1] else None) == (0.0, "bytes")
