"""Building and running connectors from their configuration files.

``xietong connect run <config>`` and ``xietong connect validate <config> <sample>`` are
thin shells over :func:`run_connector` and :func:`preview_mapping`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from connectors.base import OffsetStore, Publisher, RunReport, Source, SourceConnector
from connectors.config import ConnectorConfig, FileSourceConfig, SqlSourceConfig
from connectors.file_source import FileFormat, FileSource
from connectors.mapping import DepartmentMapping
from connectors.validation import Problem, validate
from xietong.kafka import KafkaClients


def build_source(config: ConnectorConfig) -> Source:
    """The source a connector file describes (file or SQL; HTTP is a server of its own)."""
    source = config.source
    if isinstance(source, FileSourceConfig):
        return FileSource(
            source.path,
            FileFormat(source.format) if source.format else None,
            encoding=source.encoding,
            delimiter=source.delimiter,
            max_record_bytes=source.max_record_bytes,
            max_record_lines=source.max_record_lines,
        )
    if isinstance(source, SqlSourceConfig):
        from connectors.sql_source import SqlTableSource

        return SqlTableSource.from_config(source)
    raise ValueError(f"connector {config.name}: a {source.kind} source is served, not polled")


def run_connector(
    config: ConnectorConfig,
    clients: KafkaClients,
    once: bool = True,
    on_batch: Callable[[RunReport, int], None] | None = None,
    connector_hook: Callable[[SourceConnector], None] | None = None,
) -> RunReport:
    """Run a file or SQL connector until its source is exhausted (``once``) or stopped."""
    assert config.mapping is not None
    mapping = DepartmentMapping.load(config.mapping)
    connector = SourceConnector(
        config.name,
        build_source(config),
        Publisher(config.name, mapping, clients),
        OffsetStore(clients),
        batch_size=config.batch_size,
        poll_interval=getattr(config.source, "poll_interval", 5.0),
        workers=config.workers,
    )
    if connector_hook:
        connector_hook(connector)
    return connector.run(once=once, on_batch=on_batch)


@dataclass(frozen=True)
class FieldPreview:
    """How one canonical field of one sample record was filled."""

    field: str
    column: str
    raw: Any
    value: Any
    problems: list[Problem]


@dataclass(frozen=True)
class RecordPreview:
    position: str
    fields: list[FieldPreview]
    record_problems: list[Problem]  # problems not tied to a mapped field

    @property
    def accepted(self) -> bool:
        return not self.record_problems and not any(f.problems for f in self.fields)


@dataclass(frozen=True)
class PreviewProblem:
    """One problem of a sample record, as ``xietong connect validate`` lists it: where it
    is, the field and its column, the value read, the reason code and what was expected
    (``reason``: the problem's message without the field's name in front)."""

    position: str
    field: str
    column: str
    value: Any
    code: str
    reason: str

    def line(self) -> str:
        """``line 17  field reg_date (column 成立日期)  value '2024-13-01'  date.invalid: …``;
        the value only where the reason does not show it already."""
        where = f"field {self.field}" if self.field else "(record)"
        if self.column:
            where += f" (column {self.column})"
        shown = "" if self.value is None else repr(str(self.value))
        if len(shown) > 42:
            shown = shown[:40] + "…'"
        value = f"  value {shown}" if shown and shown not in self.reason else ""
        return f"{self.position}  {where}{value}  {self.code}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        value = self.value if self.value is None or isinstance(self.value, str) else str(self.value)
        return {
            "position": self.position,
            "field": self.field,
            "column": self.column,
            "value": value,
            "code": self.code,
            "reason": self.reason,
        }


def preview_problems(preview: RecordPreview) -> Iterator[PreviewProblem]:
    """Every problem of one previewed record, its fields' first (in the mapping's order),
    then those of the record as a whole (an unreadable line, a rule across fields)."""
    for field in preview.fields:
        column = "" if field.column == "(constant)" else field.column
        for problem in field.problems:
            yield PreviewProblem(
                preview.position,
                field.field,
                column,
                field.raw,
                problem.code,
                _reason(problem, column),
            )
    for problem in preview.record_problems:
        yield PreviewProblem(
            preview.position, problem.field, "", None, problem.code, _reason(problem, "")
        )


def _reason(problem: Problem, column: str) -> str:
    """The message without the ``<field> (column '<column>'): `` or ``<field>: `` that
    the listing shows in columns of its own."""
    for prefix in (f"{problem.field} (column {column!r}): ", f"{problem.field}: "):
        if problem.field and problem.message.startswith(prefix):
            return problem.message.removeprefix(prefix)
    return problem.message


def preview_mapping(
    mapping: DepartmentMapping,
    sample: Path,
    limit: int | None = None,
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Iterator[RecordPreview]:
    """Map each record of a sample export and say, field by field, what became of it."""
    rules = mapping.spec.fields
    source = FileSource(sample, encoding=encoding, delimiter=delimiter)
    for record in islice(source.read(None), limit):
        if record is None:
            continue
        if record.fields is None:
            problem = record.read_problem or Problem("", "record.unreadable", "unreadable")
            yield RecordPreview(record.position, [], [problem])
            continue
        try:
            mapped = mapping.map(record.fields)
            problems = mapped.problems + validate(mapping.record_type.name, mapped.fields)
        except Exception as error:  # as a run would: that record unprocessable, not the sample
            message = f"{record.position} could not be mapped: {error}"
            yield RecordPreview(record.position, [], [Problem("", "record.unprocessable", message)])
            continue
        previews = []
        for name, rule in rules.items():
            previews.append(
                FieldPreview(
                    field=name,
                    column=rule.column or "(constant)",
                    raw=record.fields.get(rule.column) if rule.column else rule.value,
                    value=mapped.fields.get(name),
                    problems=[p for p in problems if p.field == name],
                )
            )
        leftover = [p for p in problems if p.field not in rules]
        yield RecordPreview(record.position, previews, leftover)
