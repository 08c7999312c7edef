"""Avro schemas of the platform's records and the one way they are registered.

Each record type has one ``.avsc`` file in ``schemas/avro/``. A schema is registered
under the subject ``<topic>-value`` (Confluent's TopicNameStrategy) with the subject's
compatibility set first, so the registry refuses an incompatible change.
"""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

AVRO_DIR = Path(__file__).parent / "avro"


def load_schema(name: str) -> str:
    """The text of ``schemas/avro/<name>.avsc``, checked to be JSON."""
    text = (AVRO_DIR / f"{name}.avsc").read_text(encoding="utf-8")
    json.loads(text)
    return text


def value_subject(topic: str) -> str:
    return f"{topic}-value"


def register_schema(
    client: SchemaRegistryClient,
    subject: str,
    schema_str: str,
    compatibility: str = "BACKWARD",
) -> int:
    """Set the subject's compatibility, register the schema; the schema id.

    Registering a schema that is already the subject's latest version returns its
    existing id, so this is safe to call on every start.
    """
    client.set_compatibility(subject_name=subject, level=compatibility)
    return client.register_schema(subject, Schema(schema_str, "AVRO"))
