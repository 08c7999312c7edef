"""The Avro schema files themselves: documented, typed as the domain brief requires."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from schemas import ALL_RECORD_TYPES, CANONICAL_RECORD_TYPES, LICENCE


def _fields(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for field in schema.get("fields", []):
        name = f"{path}{field['name']}"
        yield name, field
        for branch in field["type"] if isinstance(field["type"], list) else [field["type"]]:
            if isinstance(branch, dict) and branch.get("type") == "record":
                yield from _fields(branch, f"{name}.")
            if isinstance(branch, dict) and branch.get("type") == "array":
                items = branch["items"]
                if isinstance(items, dict) and items.get("type") == "record":
                    yield from _fields(items, f"{name}[].")


def _types(avro_type: Any) -> Iterator[dict[str, Any]]:
    for branch in avro_type if isinstance(avro_type, list) else [avro_type]:
        if isinstance(branch, dict):
            yield branch
            if branch.get("type") == "array":
                yield from _types(branch["items"])


@pytest.mark.parametrize("record", ALL_RECORD_TYPES, ids=lambda r: r.name)
def test_every_field_has_a_doc(record) -> None:
    undocumented = [name for name, field in _fields(record.schema) if not field.get("doc")]
    assert undocumented == []


@pytest.mark.parametrize("record", ALL_RECORD_TYPES, ids=lambda r: r.name)
def test_every_enum_has_a_default_so_new_codes_do_not_break_old_readers(record) -> None:
    enums = [
        t for _, f in _fields(record.schema) for t in _types(f["type"]) if t.get("type") == "enum"
    ]
    assert all(e.get("default") in e["symbols"] for e in enums)


@pytest.mark.parametrize("record", CANONICAL_RECORD_TYPES.values(), ids=lambda r: r.name)
def test_money_is_decimal_and_dates_are_dates(record) -> None:
    for name, field in _fields(record.schema):
        types = list(_types(field["type"]))
        if "amount" in name or "capital" in name:
            assert any(t.get("logicalType") == "decimal" for t in types), name
        if name.endswith(("_on", "_date", "valid_from", "valid_to", "publicity_until", "term_end")):
            assert any(t.get("logicalType") == "date" for t in types), name


@pytest.mark.parametrize("record", CANONICAL_RECORD_TYPES.values(), ids=lambda r: r.name)
def test_every_canonical_record_carries_the_envelope(record) -> None:
    envelope = next(f for f in record.schema["fields"] if f["name"] == "envelope")
    names = {f["name"] for f in envelope["type"]["fields"]}
    assert {
        "event_id",
        "source_department_uscc",
        "source_system",
        "event_time",
        "ingest_time",
    } <= names


def test_a_new_enum_code_does_not_break_an_old_reader() -> None:
    """Enums carry a default, so a reader of the old schema maps an unknown code to it."""
    import io

    from fastavro import parse_schema, schemaless_reader, schemaless_writer

    old = json.loads(LICENCE.schema_str)
    new = json.loads(LICENCE.schema_str)
    status = next(f for f in new["fields"] if f["name"] == "status")["type"]
    status["symbols"] = [*status["symbols"], "SUSPENDED"]
    record = {
        "envelope": {
            "event_id": "e", "source_department_uscc": "d", "source_department_name": "n",
            "source_system": "s", "source_record_id": "1", "record_version": "1",
            "source_partition": "p", "source_offset": "0", "event_time": 0, "ingest_time": 0,
        },
        "uscc": "91330106MA2CD7Q4XU", "holder_name": "h", "legal_representative": "l",
        "decision_document_name": "d", "decision_document_number": "n", "category": "ORDINARY",
        "licence_number": "x", "content": "c", "decided_on": 20000, "valid_from": 20000,
        "authority_name": "a", "authority_uscc": "91330106MA2CD7Q4XU", "status": "SUSPENDED",
        "data_source_name": "a", "data_source_uscc": "91330106MA2CD7Q4XU",
    }  # fmt: skip
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(new), record)
    buffer.seek(0)

    read = schemaless_reader(buffer, parse_schema(new), parse_schema(old))

    assert read["status"] == "UNKNOWN"
