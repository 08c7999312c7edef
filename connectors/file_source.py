"""File exports from department systems: CSV, JSON Lines and Excel.

Departments often hand over exports rather than database access. This source reads one
file as one source partition (``file:<absolute path>``):

* **CSV** in UTF-8 (with or without BOM) or GB18030/GBK, the encodings Chinese
  government exports come in; the source offset is the byte position after the row,
  so a restart seeks straight there. A line that does not decode in the declared
  encoding is dead-lettered with its raw bytes; the rest of the file carries on.
* **JSON Lines**, one object per line; the offset is again a byte position.
* **Excel** (``.xlsx``), the first sheet with a header row; the offset is the row number.

Example::

    source = FileSource(Path("exports/licences-2026-11.csv"), encoding="gb18030")
    for record in source.read(offset=None):
        ...
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from connectors.base import Source
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
    ) -> None:
        self.path = path.resolve()
        self.format = file_format or FileFormat.of(path)
        # utf-8-sig reads UTF-8 with or without the BOM that Excel writes.
        self.encoding = "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
        self.delimiter = delimiter
        self.source_partition = f"file:{self.path}"
        if not self.path.exists():
            raise FileNotFoundError(f"department export {self.path} does not exist")

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def read(self, offset: str | None) -> Iterator[SourceRecord | None]:
        if self.format is FileFormat.XLSX:
            yield from self._read_xlsx(int(offset) if offset else 1)
        elif self.format is FileFormat.JSONL:
            yield from self._read_jsonl(int(offset) if offset else 0)
        else:
            yield from self._read_csv(int(offset) if offset else None)

    def lag(self, offset: str | None) -> tuple[float, str] | None:
        if self.format is FileFormat.XLSX:
            return None
        return (float(self.size - int(offset or 0)), "bytes")

    # -- CSV --------------------------------------------------------------------------------
    def _read_csv(self, offset: int | None) -> Iterator[SourceRecord]:
        with self.path.open("rb") as handle:
            lines = _DecodedLines(handle, self.encoding)
            reader = csv.reader(lines, delimiter=self.delimiter)
            header = next(reader, None)
            if header is None:
                return
            if lines.undecodable is not None:
                raise ValueError(
                    f"{self.path}: the header row is not {self.encoding}; set encoding: in the"
                    " connector configuration (gb18030 for most GBK exports)"
                )
            columns = [column.strip() for column in header]
            lines.consume()
            resumed = offset is not None and offset > lines.position
            if offset is not None and resumed:
                handle.seek(offset)
                lines.position = offset
            for row in reader:
                start, first_line = lines.row_start, lines.row_first_line
                raw = lines.consume()
                # After a resume line numbers are unknown; the byte position is exact.
                where = f"byte {start}" if resumed else f"line {first_line}"
                offset_after = str(lines.position)
                problem = None
                if lines.undecodable is not None:
                    lines.undecodable = None
                    problem = Problem(
                        "",
                        "encoding.invalid",
                        f"{where} is not valid {self.encoding}; the export's encoding may"
                        " differ (UTF-8 vs GB18030)",
                    )
                elif not row or row == [""]:
                    continue
                elif len(row) != len(columns):
                    problem = Problem(
                        "",
                        "row.columns",
                        f"{where} has {len(row)} values, the header has {len(columns)}",
                    )
                fields = None if problem else dict(zip(columns, row, strict=True))
                yield SourceRecord(self.source_partition, offset_after, where, raw, fields, problem)

    # -- JSON Lines ---------------------------------------------------------------------------
    def _read_jsonl(self, offset: int) -> Iterator[SourceRecord]:
        with self.path.open("rb") as handle:
            handle.seek(offset)
            position = offset
            line_number = 0 if offset == 0 else None
            for raw in handle:
                position += len(raw)
                if line_number is not None:
                    line_number += 1
                where = f"line {line_number}" if line_number else f"byte {position - len(raw)}"
                if not raw.strip():
                    continue
                problem = None
                fields: dict[str, Any] | None = None
                try:
                    decoded = json.loads(raw.decode(self.encoding))
                    if isinstance(decoded, dict):
                        fields = decoded
                    else:
                        problem = Problem("", "json.not_object", f"{where} is not a JSON object")
                except UnicodeDecodeError:
                    problem = Problem("", "encoding.invalid", f"{where} is not {self.encoding}")
                except json.JSONDecodeError as error:
                    problem = Problem("", "json.invalid", f"{where} is not JSON: {error.msg}")
                yield SourceRecord(
                    self.source_partition,
                    str(position),
                    where,
                    raw.rstrip(b"\r\n"),
                    fields,
                    problem,
                )

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
                cells = zip(columns, row, strict=False)  # trailing empty cells may be cut
                fields = {column: _cell(value) for column, value in cells if column}
                raw = json.dumps(fields, ensure_ascii=False, default=str).encode()
                yield SourceRecord(self.source_partition, str(number), f"row {number}", raw, fields)
        finally:
            workbook.close()


def _cell(value: Any) -> Any:
    """Excel cells as the mapper expects them: dates as dates, everything else as is."""
    if isinstance(value, datetime) and value.time() == datetime.min.time():
        return value.date()
    if isinstance(value, date | int | float | str) or value is None:
        return value
    return str(value)


class _DecodedLines:
    """Lines of a binary file decoded one by one, tracking the byte position.

    ``csv.reader`` pulls exactly the lines a row needs, so after it yields a row our
    position is the byte offset just after that row. A line that fails to decode is
    replaced by an empty line and kept in ``undecodable`` for the caller to dead-letter.
    """

    def __init__(self, handle: IO[bytes], encoding: str) -> None:
        self.handle = handle
        self.encoding = encoding
        self.position = 0
        self.line_number = 0
        self.row_start = 0  # byte position where the row being read began
        self.row_first_line = 1
        self.undecodable: bytes | None = None
        self._raw = bytearray()

    def __iter__(self) -> _DecodedLines:
        return self

    def __next__(self) -> str:
        line = self.handle.readline()
        if not line:
            raise StopIteration
        if not self._raw:
            self.row_start, self.row_first_line = self.position, self.line_number + 1
        self.position += len(line)
        self.line_number += 1
        self._raw += line
        try:
            return line.decode(self.encoding)
        except UnicodeDecodeError:
            self.undecodable = bytes(line.rstrip(b"\r\n"))
            return "\n"

    def consume(self) -> bytes:
        """The raw bytes of the row just read (for the dead-letter topic)."""
        raw, self._raw = bytes(self._raw).rstrip(b"\r\n"), bytearray()
        return raw
