"""What a connector reads and what it makes of it: the pure half of publishing.

A :class:`SourceRecord` is one record as read from a department source, with its source
partition and offset; a :class:`RecordEncoder` maps, validates and Avro-serialises it
into an :class:`Encoded` record — its canonical event, or its dead letter — and its
:class:`RecordVerdict` says which. None of this holds a producer or a connection, so it
runs as well in the encoding workers of :mod:`connectors.parallel` as in the
:class:`~connectors.base.Publisher`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from confluent_kafka.serialization import MessageField, SerializationContext

from connectors.mapping import DepartmentMapping, MappedRecord
from connectors.validation import Problem, validate
from schemas import DEAD_LETTER_RECORD
from xietong.clock import BusinessClock, business_clock
from xietong.dead_letters import MESSAGE_LIMIT, dead_letter
from xietong.ids import deterministic_id
from xietong.kafka import KafkaClients
from xietong.logs import log_event

logger = logging.getLogger(__name__)

#: What a produced record may take beyond its value: its key (a USCC), the ``event_id``
#: and ``record_type`` headers and librdkafka's framing of one message.
MESSAGE_OVERHEAD = 1024

#: What the dead letter of a record Kafka refused as too large keeps of its payload: a
#: sixteenth of the usual 1 MB limit, so the dead letter is not refused in its turn.
REFUSED_PAYLOAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class SourceRecord:
    """One record as read from a department source, with where it was read.

    ``fields`` is the record as column → value; it is None when the record could not
    even be decoded (bad encoding, broken JSON), and ``read_problem`` says why.
    ``raw`` is the record's original bytes, kept for the dead-letter topic. ``span`` is
    where those bytes lie in a byte-positioned source (a file): ``(start, end)``, the end
    being the source offset, line terminator included; None for other sources. When a
    record is too long to keep, ``raw`` is its beginning and ``whole`` the length and
    SHA-256 (hex) of all of it.
    """

    source_partition: str
    source_offset: str
    position: str
    raw: bytes
    fields: Mapping[str, Any] | None
    read_problem: Problem | None = None
    span: tuple[int, int] | None = None
    whole: tuple[int, str] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by position: half the cost of the default, and records cross to
        # encoding workers by the hundred thousand.
        return (SourceRecord, tuple(getattr(self, f) for f in _SOURCE_RECORD_FIELDS))


_SOURCE_RECORD_FIELDS = tuple(SourceRecord.__dataclass_fields__)


@dataclass(frozen=True)
class RecordVerdict:
    """What became of one record: published under its event id, or dead-lettered for its
    problems."""

    event_id: str | None
    problems: tuple[Problem, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Encoded:
    """A source record made ready to produce: its canonical event, or its dead letter."""

    topic: str
    key: bytes
    payload: bytes
    event_id: str  # the event id, or the dead letter's id
    problems: tuple[Problem, ...] = ()  # empty for a canonical event
    uscc: str | None = None  # of a dead letter: the entity's USCC as given, for its log line

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            Encoded,
            (self.topic, self.key, self.payload, self.event_id, self.problems, self.uscc),
        )

    @property
    def verdict(self) -> RecordVerdict:
        return RecordVerdict(None if self.problems else self.event_id, self.problems)


class RecordEncoder:
    """The pure part of publishing: map, validate, build the envelope, Avro-serialise.

    It holds no producer, so it can run in worker processes (see
    :mod:`connectors.parallel`) while one producer sends the results in source order.
    """

    def __init__(self, connector: str, mapping: DepartmentMapping, clients: KafkaClients) -> None:
        self.connector = connector
        self.mapping = mapping
        self.record_type = mapping.record_type
        self.department = mapping.department
        self._topic = self.record_type.topic.name
        self._dead_letter_topic = DEAD_LETTER_RECORD.topic.name
        self._serialize = clients.avro_serializer(self.record_type.schema_str)
        self._serialize_dead_letter = clients.avro_serializer(DEAD_LETTER_RECORD.schema_str)
        self._value_context = SerializationContext(self._topic, MessageField.VALUE)
        self._dead_letter_context = SerializationContext(
            self._dead_letter_topic, MessageField.VALUE
        )
        self._department_key = self.department.uscc.encode()
        self._id_prefix = f"{self.department.uscc}|{self.record_type.name}|"
        self._clock = business_clock()

    def encode(self, record: SourceRecord) -> Encoded:
        """The record's canonical event, or — when it breaks any rule — its dead letter.

        It never raises for one record: whatever goes wrong while mapping, validating or
        serialising it (a value no rule foresaw) makes it a dead letter that says so,
        ``record.unprocessable`` naming the stage, and a canonical event larger than a
        Kafka message may be makes it a ``record.too_large`` dead letter.
        """
        if record.fields is None:
            problem = record.read_problem or Problem("", "record.unreadable", "record unreadable")
            return self._dead_letter(record, [problem])
        stage = "mapping"
        try:
            mapped = self.mapping.map(record.fields)
            stage = "validating"
            problems = mapped.problems + validate(self.record_type.name, mapped.fields)
            if problems:
                uscc = mapped.fields.get("uscc")
                return self._dead_letter(
                    record,
                    problems,
                    uscc if isinstance(uscc, str) else None,
                    source_record_id=mapped.source_record_id,
                )
            stage = "encoding"
            encoded = self._canonical_event(record, mapped)
        except Exception as error:  # one record's failure must not stop the feed
            return self._unprocessable(record, stage, error)
        if len(encoded.payload) + MESSAGE_OVERHEAD > MESSAGE_LIMIT:
            problem = Problem(
                "",
                "record.too_large",
                f"{record.position}: its canonical event is {len(encoded.payload)} bytes, more"
                f" than a Kafka message may be ({MESSAGE_LIMIT - MESSAGE_OVERHEAD} bytes for"
                " the value); shorten its longest fields",
            )
            return self._dead_letter(
                record, [problem], encoded.key.decode(), source_record_id=mapped.source_record_id
            )
        return encoded

    def _canonical_event(self, record: SourceRecord, mapped: MappedRecord) -> Encoded:
        event_id = self.event_id(mapped.source_record_id, mapped.record_version)
        value = mapped.fields
        value["envelope"] = {
            "event_id": event_id,
            "source_department_uscc": self.department.uscc,
            "source_department_name": self.department.name,
            "source_system": self.department.system,
            "source_record_id": mapped.source_record_id,
            "record_version": mapped.record_version,
            "source_partition": record.source_partition,
            "source_offset": record.source_offset,
            "event_time": event_time(self.record_type.name, value, self._clock),
            "ingest_time": self._clock.now_ms(),
        }
        payload = self._serialize(value, self._value_context) or b""
        return Encoded(self._topic, value["uscc"].encode(), payload, event_id)

    def _unprocessable(self, record: SourceRecord, stage: str, error: Exception) -> Encoded:
        """The last resort: a failure no rule names, dead-lettered and logged."""
        log_event(
            logger,
            "record_unprocessable",
            connector=self.connector,
            source_partition=record.source_partition,
            source_offset=record.source_offset,
            position=record.position,
            stage=stage,
            error=f"{type(error).__name__}: {error}"[:2000],
        )
        problem = Problem(
            "",
            "record.unprocessable",
            f"{record.position} failed while {stage}: {error}; the platform could not"
            " process it, report it with this dead letter",
        )
        return self._dead_letter(record, [problem])

    def too_large(self, record: SourceRecord, refused: Encoded, error: object) -> Encoded:
        """The dead letter of a record whose encoded form the broker refused as too large.

        A refused canonical event becomes a ``record.too_large`` dead letter; a refused
        dead letter is sent again keeping its reasons and only the first 64 KiB of its
        payload (``payload_length`` and ``payload_sha256`` still describe the whole).
        """
        problem = Problem(
            "",
            "record.too_large",
            f"{record.position}: Kafka refused its {len(refused.payload)}-byte"
            f" {'dead letter' if refused.problems else 'canonical event'} ({error})",
        )
        return self._dead_letter(
            record, [*refused.problems, problem], refused.uscc, payload_limit=REFUSED_PAYLOAD_LIMIT
        )

    def event_id(self, source_record_id: str, record_version: str) -> str:
        """The deterministic id of a record: same source record and version, same id.

        It is ``uuid5(XIETONG_NAMESPACE, "<department>|<record type>|<id>|<version>")``.
        """
        return deterministic_id(f"{self._id_prefix}{source_record_id}|{record_version}")

    def _dead_letter(
        self,
        record: SourceRecord,
        problems: list[Problem],
        uscc: str | None = None,
        payload_limit: int | None = None,
        source_record_id: str | None = None,
    ) -> Encoded:
        dead_letter_id = deterministic_id(
            f"{self.connector}|{record.source_partition}|{record.source_offset}"
        )
        value = dead_letter(
            dead_letter_id=dead_letter_id,
            connector=self.connector,
            record_type=self.record_type.name,
            source_department_uscc=self.department.uscc,
            source_system=self.department.system,
            source_partition=record.source_partition,
            source_offset=record.source_offset,
            position=record.position,
            source_record_id=source_record_id,
            payload=record.raw,
            payload_json=_as_json(record.fields),
            reasons=problems,
            whole_payload=record.whole,
            **({} if payload_limit is None else {"payload_limit": payload_limit}),
        )
        payload = self._serialize_dead_letter(value, self._dead_letter_context) or b""
        return Encoded(
            self._dead_letter_topic,
            self._department_key,
            payload,
            dead_letter_id,
            tuple(problems),
            uscc,
        )


def _as_json(fields: Mapping[str, Any] | None) -> str | None:
    """The record's fields as JSON for its dead letter, or None when they have none.

    Whatever a department sent was decoded from JSON or text, but it may still nest
    deeper than the encoder recurses or hold a float JSON cannot write: then the raw
    payload alone stands for it.
    """
    if fields is None:
        return None
    try:
        return json.dumps(fields, ensure_ascii=False, default=str)
    except (ValueError, RecursionError, TypeError):
        return None


EVENT_DATE_FIELD = {
    "registration": "event_date",
    "licence": "decided_on",
    "penalty": "decided_on",
    "credit_list_entry": "listed_on",
}


def event_time(
    record_type: str, fields: Mapping[str, Any], clock: BusinessClock | None = None
) -> int:
    """When the fact happened, in epoch milliseconds: the record's decision, registration,
    listing or removal date, at 00:00 of that day in the province's time zone."""
    day: date = fields.get("removed_on") or fields[EVENT_DATE_FIELD[record_type]]
    return _midnight_ms(clock or business_clock(), day)


@lru_cache(maxsize=16384)
def _midnight_ms(clock: BusinessClock, day: date) -> int:
    # A file of a million records holds a few thousand dates.
    return clock.midnight_ms(day)
