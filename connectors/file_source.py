"""File exports from department systems: CSV, JSON Lines and Excel.

Departments often hand over exports rather than database access. This source reads one
file as one source partition (``file:<absolute path>``):

* **CSV** in UTF-8 (with or without BOM) or GB18030/GBK, the encodings Chinese
  government exports come in; the source offset is the byte position after the row,
  so a restart seeks straight there.
* **JSON Lines**, one object per line; the offset is again a byte position.
* **Excel** (``.xlsx``), the first sheet with a header row; the offset is the row number.

No one record stops the file. A text export is read line by line as bytes, and each
record is decoded and parsed on its own, so whatever is wrong with it — bytes that are
not the declared encoding, broken CSV quoting, JSON nested too deep or with an integer
too long to convert, a line longer than ``max_record_bytes`` — becomes that record's
read problem, dead-lettered with its raw bytes, and the next record is read as usual.
A CSV record goes on over several lines only while a quoted field is open, and at most
for ``max_record_lines`` lines and ``max_record_bytes`` bytes: a quote that is still open
then (or at the end of the file), or whose lines do not make one valid record of the
header's columns (a stray quote that another line's stray quote "closed"), makes its
first line a ``csv.unclosed_quote`` dead letter, and the lines after it are read again
as records. Only the file itself failing
— it cannot be opened, its header does not decode — stops a run.

Every record of a text export carries its byte span, and :meth:`FileSource.byte_account`
says what the other bytes were (header, blank lines), so a run accounts for every byte.

Read problems (reason codes): ``encoding.invalid``, ``csv.invalid``,
``csv.unclosed_quote``, ``row.columns``, ``json.invalid``, ``json.not_object``,
``json.too_deep``, ``json.integer_too_long``, ``record.too_long``, ``xlsx.row_unreadable``.

Example::

    source = FileSource(Path("exports/licences-2026-11.csv"), encoding="gb18030")
    for record in source.read(offset=None):
        ...
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from connectors.base import ByteAccount, Source
from connectors.config import MAX_RECORD_BYTES, MAX_RECORD_LINES
from connectors.records import SourceRecord
from connectors.validation import Problem


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    XLSX = "xlsx"

    @classmethod
    def of(cls, path: Path) -> FileFormat:
        suffix = path.suffix.lower().lstrip(".")
        aliases = {"csv": cls.CSV, "txt": cls.CSV, "jsonl": cls.JSONL, "ndjson": cls.JSONL}
        aliases["xlsx"] = cls.XLSX
        if suffix not in aliases:
            raise ValueError(f"{path}: cannot tell the format from '.{suffix}'; say format:")
        return aliases[suffix]


class FileSource(Source):
    """One department export file, read record by record from a committed offset."""

    def __init__(
        self,
        path: Path,
        file_format: FileFormat | None = None,
        encoding: str = "utf-8",
        delimiter: str = ",",
        max_record_bytes: int = MAX_RECORD_BYTES,
        max_record_lines: int = MAX_RECORD_LINES,
    ) -> None:
        self.path = path.resolve()
        self.format = file_format or FileFormat.of(path)
        # utf-8-sig reads UTF-8 with or without the BOM that Excel writes.
        self.encoding = "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
        self.delimiter = delimiter
        self.max_record_bytes = max_record_bytes
        self.max_record_lines = max_record_lines
        self.source_partition = f"file:{self.path}"
        self._lines: _Lines | None = None
        if not self.path.exists():
            raise FileNotFoundError(
                f"department export {self.path} does not exist; check path: in the connector"
                " file, or whether the export was moved"
            )

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def read(self, offset: str | None) -> Iterator[SourceRecord | None]:
        if self.format is FileFormat.XLSX:
            yield from self._read_xlsx(int(offset) if offset else 1)
            return
        try:
            handle = self.path.open("rb")
        except OSError as error:
            raise OSError(
                f"department export {self.path} cannot be opened ({error.strerror}); check"
                " path: in the connector file and that the export is readable"
            ) from error
        with handle:
            if self.format is FileFormat.JSONL:
                yield from self._read_jsonl(handle, int(offset) if offset else 0)
            else:
                yield from self._read_csv(handle, int(offset) if offset else None)

    def lag(self, offset: str | None) -> tuple[float, str] | None:
        if self.format is FileFormat.XLSX:
            return None
        # The open file's size: an export moved away while it is read is still read whole.
        size = self._lines.size() if self._lines is not None else self.size
        return (float(size - int(offset or 0)), "bytes")

    def byte_account(self) -> ByteAccount | None:
        """Header, blank lines and where reading began and stopped, in bytes."""
        lines = self._lines
        if lines is None:
            return None
        return ByteAccount(
            total=lines.size(),
            header=lines.header,
            start=lines.start,
            end=lines.consumed,
            blank=lines.blank,
        )

    def _where(self, line: _Line) -> str:
        # After a resume line numbers are unknown; the byte position is exact.
        return f"line {line.number}" if line.number is not None else f"byte {line.start}"

    def _record(
        self,
        lines: list[_Line],
        fields: dict[str, Any] | None,
        problem: Problem | None = None,
    ) -> SourceRecord:
        first, last = lines[0], lines[-1]
        if len(lines) == 1:
            raw, whole = first.raw.rstrip(b"\r\n"), first.whole
        else:
            raw, whole = b"".join(line.raw for line in lines).rstrip(b"\r\n"), None
        return SourceRecord(
            self.source_partition,
            str(last.end),
            self._where(first),
            raw,
            fields,
            problem,
            (first.start, last.end),
            whole,
        )

    def _too_long(self, line: _Line) -> Problem:
        return Problem(
            "",
            "record.too_long",
            f"{self._where(line)} is {line.length} bytes long, more than max_record_bytes"
            f" ({self.max_record_bytes}); its first {len(line.raw)} bytes are kept. Split the"
            " export into lines, or raise max_record_bytes in the connector file",
        )

    # -- CSV --------------------------------------------------------------------------------
    def _read_csv(self, handle: IO[bytes], offset: int | None) -> Iterator[SourceRecord]:
        lines = self._lines = _Lines(handle, self.encoding, self.max_record_bytes)
        quotes = _QuoteScanner(self.delimiter)
        # The csv module's own bound on a field (128 KiB) is the process's; ours is the
        # record's, so a field may be as long as a record may be.
        csv.field_size_limit(max(csv.field_size_limit(), self.max_record_bytes))
        header_lines = self._csv_record_lines(lines, quotes)
        if header_lines is None:
            return
        header = None
        readable = all(line.fits and line.decodes for line in header_lines)
        if readable and not quotes.open_after(header_lines):
            with contextlib.suppress(csv.Error):
                header = self._parse_csv(header_lines, quotes)
        if header is None:
            raise ValueError(
                f"{self.path}: the header row is not {self.encoding} CSV; set encoding: in"
                " the connector configuration (gb18030 for most GBK exports), or fix the"
                " header's quoting"
            )
        columns = [column.strip() for column in header]
        lines.consume(header_lines)
        lines.begin(header=lines.consumed, offset=offset)
        while (record_lines := self._csv_record_lines(lines, quotes)) is not None:
            first = record_lines[0]
            if first.blank and len(record_lines) == 1:
                lines.skip_blank(first)
                continue
            record = None
            if not self._unclosed(record_lines, quotes):
                record = self._csv_record(record_lines, columns, quotes)
            if record is None or (len(record_lines) > 1 and record.read_problem is not None):
                # A stray quote, not a quoted field: only its line is refused, and the lines
                # after it are records of their own.
                lines.push_back(record_lines[1:])
                record_lines = [first]
                record = self._record(record_lines, None, self._unclosed_quote(first))
            yield record
            lines.consume(record_lines)

    def _csv_record_lines(self, lines: _Lines, quotes: _QuoteScanner) -> list[_Line] | None:
        """The lines of the next CSV record: one, or more while a quoted field is open."""
        first = lines.next()
        if first is None:
            return None
        record = [first]
        size = first.length
        while (
            first.fits
            and quotes.open_after(record)
            and len(record) < self.max_record_lines
            and (line := lines.next()) is not None
        ):
            record.append(line)
            size += line.length
            if not line.fits or size > self.max_record_bytes:
                break
        return record

    def _unclosed(self, record: list[_Line], quotes: _QuoteScanner) -> bool:
        """Whether the record's quote is still open at its bounds (or the file's end)."""
        if len(record) == 1:
            return record[0].fits and quotes.open_after(record)
        size = sum(line.length for line in record)
        if size > self.max_record_bytes or not all(line.fits for line in record):
            return True
        return quotes.open_after(record)

    def _unclosed_quote(self, line: _Line) -> Problem:
        return Problem(
            "",
            "csv.unclosed_quote",
            f"{self._where(line)} opens a quoted field that does not close into one record"
            f" of the header's columns within {self.max_record_lines} lines and"
            f" {self.max_record_bytes} bytes (or before the end of the file); the lines after"
            " it are read as records of their own. Close the quote, or raise"
            " max_record_lines",
        )

    def _parse_csv(self, record: list[_Line], quotes: _QuoteScanner) -> list[str]:
        """The values of one CSV record (raises ``csv.Error`` when it is not valid CSV).

        A record of several lines is parsed strictly: a quote there followed by anything
        but a delimiter or the line's end was a stray quote, not the end of a field.
        """
        text = quotes.text(record)
        if '"' not in text and "\r" not in text:
            return text.split(self.delimiter)  # what csv.reader makes of it, faster
        strict = len(record) > 1
        rows = list(csv.reader([text], delimiter=self.delimiter, strict=strict))
        if len(rows) != 1:
            raise csv.Error("not one CSV record")
        return rows[0]

    def _csv_record(
        self, record: list[_Line], columns: list[str], quotes: _QuoteScanner
    ) -> SourceRecord:
        if not record[0].fits:
            return self._record(record, None, self._too_long(record[0]))
        if not all(line.decodes for line in record):
            problem = Problem(
                "",
                "encoding.invalid",
                f"{self._where(record[0])} is not valid {self.encoding}; the export's"
                " encoding may differ (UTF-8 vs GB18030)",
            )
            return self._record(record, None, problem)
        try:
            row = self._parse_csv(record, quotes)
        except csv.Error as error:
            where = self._where(record[0])
            if "new-line character" in str(error):
                message = (
                    f"{where} has a carriage return (\\r) inside an unquoted field; quote"
                    " the field or remove the character"
                )
            else:
                message = f"{where} is not valid CSV: {error}"
            return self._record(record, None, Problem("", "csv.invalid", message))
        if len(row) != len(columns):
            problem = Problem(
                "",
                "row.columns",
                f"{self._where(record[0])} has {len(row)} values, the header has {len(columns)}",
            )
            return self._record(record, None, problem)
        return self._record(record, dict(zip(columns, row, strict=True)))

    # -- JSON Lines ---------------------------------------------------------------------------
    def _read_jsonl(self, handle: IO[bytes], offset: int) -> Iterator[SourceRecord]:
        lines = self._lines = _Lines(handle, self.encoding, self.max_record_bytes)
        lines.begin(header=0, offset=offset or None)
        while (line := lines.next()) is not None:
            if line.blank:
                lines.skip_blank(line)
                continue
            where = self._where(line)
            fields: dict[str, Any] | None = None
            problem = None
            if not line.fits:
                problem = self._too_long(line)
            elif not line.decodes:
                problem = Problem(
                    "",
                    "encoding.invalid",
                    f"{where} is not valid {self.encoding}; the export's encoding may differ"
                    " (UTF-8 vs GB18030)",
                )
            else:
                fields, problem = _json_object(line.text, where)
            yield self._record([line], fields, problem)
            lines.consume([line])

    # -- Excel --------------------------------------------------------------------------------
    def _read_xlsx(self, next_row: int) -> Iterator[SourceRecord]:
        from openpyxl import load_workbook

        workbook = load_workbook(self.path, read_only=True, data_only=True)
        try:
            rows = workbook.worksheets[0].iter_rows(values_only=True)
            header = next(rows, None)
            if header is None:
                return
            columns = [str(column).strip() if column is not None else "" for column in header]
            for number, row in enumerate(rows, start=2):
                if number <= next_row:
                    continue
                if all(cell is None for cell in row):
                    continue
                yield self._xlsx_row(number, columns, row)
        finally:
            workbook.close()

    def _xlsx_row(self, number: int, columns: list[str], row: tuple[Any, ...]) -> SourceRecord:
        where = f"row {number}"
        try:
            cells = zip(columns, row, strict=False)  # trailing empty cells may be cut
            fields = {column: _cell(value) for column, value in cells if column}
            raw = json.dumps(fields, ensure_ascii=False, default=str).encode()
        except (ValueError, TypeError, OverflowError, UnicodeError) as error:
            raw = repr(row).encode("utf-8", "backslashreplace")
            problem = Problem(
                "", "xlsx.row_unreadable", f"{where} has a cell that cannot be read: {error}"
            )
            return SourceRecord(self.source_partition, str(number), where, raw, None, problem)
        return SourceRecord(self.source_partition, str(number), where, raw, fields)


def _json_object(text: str, where: str) -> tuple[dict[str, Any] | None, Problem | None]:
    """One JSON Lines record: its object, or why it is not one."""
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as error:
        return None, Problem("", "json.invalid", f"{where} is not JSON: {error.msg}")
    except RecursionError:
        return None, Problem(
            "",
            "json.too_deep",
            f"{where} nests arrays or objects deeper than the reader allows (about 1,000"
            " levels); a record is one flat object",
        )
    except ValueError as error:  # an integer beyond Python's conversion limit
        return None, Problem(
            "",
            "json.integer_too_long",
            f"{where} holds an integer of more than {_max_int_digits()} digits ({error});"
            " no field of a record is a number that long",
        )
    if not isinstance(decoded, dict):
        return None, Problem("", "json.not_object", f"{where} is not a JSON object")
    return decoded, None


def _max_int_digits() -> int:
    return sys.get_int_max_str_digits() or 4300


def _cell(value: Any) -> Any:
    """Excel cells as the mapper expects them: dates as dates, everything else as is."""
    if isinstance(value, datetime) and value.time() == datetime.min.time():
        return value.date()
    if isinstance(value, date | int | float | str) or value is None:
        return value
    return str(value)


@dataclass(eq=False, slots=True)
class _Line:
    """One physical line of a text export, as bytes, with where it lies in the file."""

    number: int | None  # 1-based; None after a resume by byte offset
    start: int
    length: int  # in the file, terminator included (more than raw when it is too long)
    raw: bytes  # the line, or only its first max_record_bytes when it is too long
    encoding: str
    whole: tuple[int, str] | None = None  # of a line too long: its content's length, SHA-256
    _text: str | None = None
    _decodes: bool | None = None
    opens: bool | None = None  # CSV: a quoted field is open at its end, from a closed start
    continues: bool | None = None  # CSV: … from a start inside a quoted field

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def fits(self) -> bool:
        return self.whole is None

    @property
    def blank(self) -> bool:
        return self.fits and not self.raw.strip()

    @property
    def decodes(self) -> bool:
        self._decode()
        return bool(self._decodes)

    @property
    def text(self) -> str:
        """The line decoded (with replacement characters where it does not decode)."""
        self._decode()
        assert self._text is not None
        return self._text

    def _decode(self) -> None:
        if self._decodes is None:
            try:
                self._text, self._decodes = self.raw.decode(self.encoding), True
            except UnicodeDecodeError:
                self._text, self._decodes = self.raw.decode(self.encoding, "replace"), False


class _Lines:
    """The physical lines of a text export from a byte position, with the byte account.

    A line is read up to ``max_line_bytes``; the rest of a longer one is skipped (and
    counted). Lines read ahead of a record and given back by :meth:`push_back` are read
    again before the file.
    """

    def __init__(self, handle: IO[bytes], encoding: str, max_line_bytes: int) -> None:
        self.handle = handle
        self.encoding = encoding
        self.max_line_bytes = max_line_bytes
        self.header = 0
        self.start = 0
        self.consumed = 0  # every byte before this is accounted for
        self.blank = 0
        self._position = 0
        self._number: int | None = 0
        self._again: list[_Line] = []  # read ahead and given back, in reverse order

    def begin(self, header: int, offset: int | None) -> None:
        """Records start here: after the header, or at the committed offset after it."""
        self.header = header
        if offset is not None and offset > header:
            self.handle.seek(offset)
            self._position, self._number = offset, None
        self.start = self.consumed = self._position

    def size(self) -> int:
        """The file's size now; once it is closed, what was read of it."""
        try:
            return os.fstat(self.handle.fileno()).st_size
        except (OSError, ValueError):
            return self._position

    def next(self) -> _Line | None:
        if self._again:
            return self._again.pop()
        raw = self.handle.readline(self.max_line_bytes + 1)
        if not raw:
            return None
        length, whole = len(raw), None
        if length > self.max_line_bytes and not raw.endswith(b"\n"):
            length, whole = self._rest_of_line(raw)
            raw = raw[: self.max_line_bytes]
        if self._number is not None:
            self._number += 1
        line = _Line(self._number, self._position, length, raw, self.encoding, whole)
        self._position += length
        return line

    def _rest_of_line(self, beginning: bytes) -> tuple[int, tuple[int, str]]:
        """Read past the rest of a line too long to keep: its length in the file, and the
        length and SHA-256 of its content (without the line terminator)."""
        digest, length, last = hashlib.sha256(), 0, beginning
        while chunk := self.handle.readline(1 << 20):
            digest.update(last)
            length += len(last)
            last = chunk
            if chunk.endswith(b"\n"):
                break
        content = last.rstrip(b"\r\n")
        digest.update(content)
        return length + len(last), (length + len(content), digest.hexdigest())

    def push_back(self, lines: list[_Line]) -> None:
        self._again.extend(reversed(lines))

    def consume(self, lines: list[_Line]) -> None:
        self.consumed = lines[-1].end

    def skip_blank(self, line: _Line) -> None:
        self.blank += line.length
        self.consumed = line.end


class _QuoteScanner:
    """Whether a CSV record's quoted field is still open at the end of its lines.

    It follows the states of Python's ``csv`` reader for the default dialect (``"`` as
    quote, doubled to escape): a quote opens a field only at its start, and inside one a
    quote followed by anything but a quote closes it. Each line's outcome is kept on the
    line, so lines read again after an unclosed quote are not scanned again.
    """

    _START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self._specials = re.compile(f'["{re.escape(delimiter)}]')

    def open_after(self, lines: list[_Line]) -> bool:
        is_open = False
        for line in lines:
            if is_open:
                if line.continues is None:
                    line.continues = self._ends_open(line.text, self._QUOTED)
                is_open = line.continues
            else:
                if line.opens is None:
                    line.opens = self._ends_open(line.text, self._START)
                is_open = line.opens
        return is_open

    def text(self, lines: list[_Line]) -> str:
        """The record's text without its last line terminator, for ``csv.reader``."""
        text = lines[0].text if len(lines) == 1 else "".join(line.text for line in lines)
        return text.removesuffix("\n").removesuffix("\r")

    def _ends_open(self, text: str, state: int) -> bool:
        if '"' not in text:
            return state == self._QUOTED
        position = 0
        for match in self._specials.finditer(text):
            if match.start() > position:  # ordinary characters in between
                state = self._ordinary(state)
            state = self._special(state, match.group())
            position = match.end()
        if position < len(text):
            state = self._ordinary(state)
        return state == self._QUOTED

    def _ordinary(self, state: int) -> int:
        if state in (self._START, self._QUOTE_IN_QUOTED):
            return self._UNQUOTED
        return state

    def _special(self, state: int, char: str) -> int:
        if char == '"':
            if state == self._START:
                return self._QUOTED
            if state == self._QUOTED:
                return self._QUOTE_IN_QUOTED
            if state == self._QUOTE_IN_QUOTED:
                return self._QUOTED
            return state  # a quote inside an unquoted field is a character like any other
        # the delimiter
        if state == self._QUOTED:
            return state
        return self._START
