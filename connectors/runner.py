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
