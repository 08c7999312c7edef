"""Reading the platform's records off the wire, fast, knowing what each one is.

Every record is Avro in the Confluent wire format (magic byte 0, a 4-byte schema id,
the body). The sink needs the writer schema's *name* as well as the record — a
department's inbox carries pushes, alerts and notices side by side — so it reads the
header itself, fetches each schema once from the registry (the platform's one client,
:meth:`xietong.kafka.KafkaClients.schema_registry`) and decodes the body with fastavro.

This is the one place that does not go through confluent-kafka's ``AvroDeserializer``,
on purpose: the sink is the platform's hottest reader, and on the benchmark's records
(``tests/bench/sink.py``) this decoder takes 24 µs a message where the deserializer
takes 48 µs without a serialization context and 62 µs with one. It reads exactly the
standard wire format the deserializer reads, with the schemas the same registry
client returns; the sink's tests feed it records written by confluent-kafka's
``AvroSerializer`` (through the platform's processors and connectors), so the two
cannot drift apart unnoticed.

A record holding NUL (U+0000) in any string is unreadable too: PostgreSQL's text and
jsonb cannot store it, and one such value would fail the whole batch's transaction.
The connectors never publish one, but the sink reads what every processor and
department writes, so it checks here, where each record is decoded once.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_reader

from xietong.kafka import KafkaClients


class UnreadableRecord(ValueError):
    """A message that is not a readable Avro record of the platform; says why."""


@dataclass(frozen=True)
class WriterSchema:
    name: str  # full name, e.g. cn.gov.xietong.dualnotice.DualNoticePush
    parsed: Any


class Decoder:
    """Decodes wire-format Avro, caching every writer schema by id."""

    def __init__(self, clients: KafkaClients) -> None:
        self.clients = clients
        self._schemas: dict[int, WriterSchema] = {}

    def writer_schema(self, schema_id: int) -> WriterSchema:
        known = self._schemas.get(schema_id)
        if known is None:
            try:
                schema = self.clients.schema_registry().get_schema(schema_id)
            except Exception as error:  # the registry's errors have no common base
                raise UnreadableRecord(
                    f"schema id {schema_id} not in the registry: {error}"
                ) from error
            document = json.loads(schema.schema_str or "{}")
            name = str(document.get("name", ""))
            if "." not in name and document.get("namespace"):
                name = f"{document['namespace']}.{name}"
            known = self._schemas[schema_id] = WriterSchema(name, parse_schema(document))
        return known

    def decode(self, raw: bytes | None) -> tuple[str, dict[str, Any]]:
        """The writer schema's full name and the decoded record."""
        if raw is None:
            raise UnreadableRecord("a null value (tombstone) where a record was expected")
        if len(raw) < 5 or raw[0] != 0:
            raise UnreadableRecord("no Confluent wire-format header (magic byte 0, schema id)")
        schema = self.writer_schema(int.from_bytes(raw[1:5], "big"))
        try:
            record = schemaless_reader(io.BytesIO(raw[5:]), schema.parsed, None)
        except Exception as error:  # fastavro raises whatever the bytes provoke
            raise UnreadableRecord(f"not a readable {schema.name}: {error}") from error
        if not isinstance(record, dict):
            raise UnreadableRecord(f"{schema.name} is not a record schema")
        if _holds_nul(record.values()):
            path, text = _nul_path(record)
            field = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path)
            raise UnreadableRecord(
                f"{schema.name} field {field[1:]} holds U+0000 (NUL) at character"
                f" {text.index(chr(0)) + 1}; PostgreSQL cannot store NUL in text"
            )
        return schema.name, record


def _holds_nul(values: Iterable[Any]) -> bool:
    """Whether any string among ``values`` (records, lists and maps walked, a map's keys
    included) holds NUL: the check every record passes, a few µs of the decoding."""
    for item in values:
        kind = item.__class__
        if kind is str:
            if "\x00" in item:
                return True
        elif kind is dict:
            if "\x00" in "".join(item) or _holds_nul(item.values()):
                return True
        elif kind is list and _holds_nul(item):
            return True
    return False


def _nul_path(value: dict[str, Any] | list[Any]) -> tuple[list[str | int], str]:
    """Where the first NUL is — the path to its string (``["items", 2, "text"]``) and the
    string — in a record :func:`_holds_nul` found one in."""
    pairs = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in pairs:
        if isinstance(key, str) and "\x00" in key:
            return [key], key
        if isinstance(item, str):
            if "\x00" in item:
                return [key], item
        elif isinstance(item, dict | list) and _holds_nul([item]):
            path, text = _nul_path(item)
            return [key, *path], text
    raise AssertionError("no NUL where _holds_nul found one")
