"""Connector configuration files: which source, which mapping, how to run.

One YAML file per connector, e.g. ``hz-health-licences.yaml``::

    name: hz-health-licences            # unique; keys the stored offsets
    mapping: mappings/hz-health-licence.yaml   # relative to this file
    batch_size: 5000                    # records per committed batch
    workers: 2                          # processes encoding records (large files); 0 = inline
    metrics_port: 9401                  # optional: serve /metrics here
    source:
      kind: file                        # file | sql | http
      path: exports/licences.csv        # relative to this file
      encoding: gb18030                 # utf-8 (default), gb18030, gbk
      format: csv                       # csv | jsonl | xlsx (default: from the suffix)
      max_record_bytes: 1048576         # a longer line (or multi-line record) is dead-lettered
      max_record_lines: 100             # lines a quoted CSV field may span before it counts
                                        # as a quote that never closes

    source:
      kind: sql
      url: postgresql+psycopg2://reader:secret@db.health.local/licensing
      table: licence_export             # or query: SELECT … (a subquery alias is added)
      incrementing_column: id           # strictly increasing, the source offset
      poll_interval: 5

    source:
      kind: http
      host: 127.0.0.1
      port: 8401
      mappings: [mappings/a.yaml, mappings/b.yaml]
      max_batch: 1000                   # records per request
      max_body_bytes: 4194304           # bytes per request body (413 above)

Paths are relative to the configuration file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Defaults of a file source's bounds on one record (see :mod:`connectors.file_source`).
MAX_RECORD_BYTES = 1024 * 1024
MAX_RECORD_LINES = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileSourceConfig(_Strict):
    kind: Literal["file"] = "file"
    path: Path
    format: Literal["csv", "jsonl", "xlsx"] | None = None
    encoding: str = "utf-8"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    max_record_bytes: int = Field(
        default=MAX_RECORD_BYTES, ge=1, description="The longest record of a text export, in bytes."
    )
    max_record_lines: int = Field(
        default=MAX_RECORD_LINES, ge=1, description="The most lines one CSV record spans."
    )


class SqlSourceConfig(_Strict):
    kind: Literal["sql"] = "sql"
    url: str
    table: str | None = None
    query: str | None = None
    incrementing_column: str
    poll_interval: float = 5.0
    fetch_size: int = 5000


class HttpIngestConfig(_Strict):
    kind: Literal["http"] = "http"
    host: str = "127.0.0.1"
    port: int = 8401
    mappings: list[Path]
    max_batch: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1,
        description="The largest request body taken, in bytes; a larger one is refused"
        " (413) as it arrives, before it is read whole.",
    )


SourceConfig = Annotated[
    FileSourceConfig | SqlSourceConfig | HttpIngestConfig, Field(discriminator="kind")
]


class ConnectorConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    mapping: Path | None = None
    source: SourceConfig
    batch_size: int = Field(default=5000, ge=1)
    workers: int = Field(
        default=0, ge=0, description="Worker processes encoding records; 0 encodes inline."
    )
    metrics_port: int | None = None

    @classmethod
    def load(cls, path: str | Path) -> ConnectorConfig:
        """Read a connector file; relative paths are taken relative to it."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            config = cls.model_validate(raw)
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"connector file {path}: {error}") from error
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise ValueError(f"connector file {path}: {problems}") from None
        base = path.parent
        if config.mapping is not None:
            config.mapping = base / config.mapping
        source = config.source
        if isinstance(source, FileSourceConfig):
            source.path = base / source.path
        elif isinstance(source, HttpIngestConfig):
            source.mappings = [base / mapping for mapping in source.mappings]
        if not isinstance(source, HttpIngestConfig) and config.mapping is None:
            raise ValueError(
                f"connector file {path}: mapping: is required for a {source.kind} source"
            )
        return config
