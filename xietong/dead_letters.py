"""The dead letter (死信): the one builder of a ``platform.dead-letter`` record's value.

Whatever the platform cannot accept — a connector's record that breaks a rule, a message
a processor or the sink cannot read — is kept whole on ``platform.dead-letter`` with
where it came from and every reason, so it can be corrected and re-sent. Connectors,
processors and the sink all build that value here, so every dead letter reads alike::

    from xietong.dead_letters import Reason, dead_letter, unreadable_message

    dead_letter(
        dead_letter_id=deterministic_id("hz-amr|registrations.csv|1042"),
        connector="hz-amr", record_type="registration", source_system="登记系统",
        source_partition="registrations.csv", source_offset="1042", position="line 17",
        source_record_id="DJ-2024-000517", payload=raw,
        reasons=[Reason("uscc", "uscc.check_character", "…")],
    )
    unreadable_message(
        connector="sink.credit", source_system="xietong.sink", record_type="unknown",
        topic="dualnotice.pushes", partition=3, offset=17, payload=raw,
        code="sink.unreadable", message="not Avro", id_prefix="sink|",
    )
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from xietong.clock import business_clock
from xietong.ids import deterministic_id

#: The most a produced record may be, key, headers and framing included: librdkafka's
#: ``message.max.bytes`` (1,000,000 by default), which is below what the broker accepts
#: (Kafka's ``message.max.bytes``, 1,048,588, on the local stack and by default).
MESSAGE_LIMIT = 1_000_000

#: The most of the original payload a dead letter keeps; with the reasons (at most
#: :data:`REASONS_LIMIT`) and the other fields it stays well under :data:`MESSAGE_LIMIT`,
#: or the dead letter itself could not be produced.
PAYLOAD_LIMIT = 768 * 1024

#: The most the reasons of one dead letter may take, in UTF-8 bytes; each message is cut at
#: :data:`REASON_MESSAGE_LIMIT` characters (a reason may quote the value it refuses).
REASONS_LIMIT = 64 * 1024
REASON_MESSAGE_LIMIT = 1000
_REASON_FIELD_LIMIT = 200  # a field name can be any JSON key a department sent


class Rejection(Protocol):
    """What a reason to refuse input says: which field, which rule, in words."""

    @property
    def field(self) -> str: ...

    @property
    def code(self) -> str: ...

    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class Reason:
    """A reason of one's own (a connector's :class:`~connectors.validation.Problem` is one too)."""

    field: str
    code: str
    message: str


def dead_letter(
    *,
    dead_letter_id: str,
    connector: str,
    record_type: str,
    source_system: str,
    source_partition: str,
    source_offset: str,
    position: str,
    payload: bytes,
    reasons: Iterable[Rejection],
    source_department_uscc: str = "",
    source_record_id: str | None = None,
    payload_json: str | None = None,
    payload_limit: int = PAYLOAD_LIMIT,
    whole_payload: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """The value of a ``DeadLetter`` record, refused now by the business clock.

    Whatever it is given, the value serialises and fits a Kafka message: a payload longer
    than ``payload_limit`` is cut there, with a ``payload.truncated`` reason, and
    ``payload_length`` and ``payload_sha256`` always describe the original whole; its JSON
    form is dropped when both would not fit; reasons are bounded by :data:`REASONS_LIMIT`
    (a ``reasons.truncated`` reason says how many were left out); text that is not valid
    Unicode (a lone surrogate a client sent) is kept as ``\\udXXX`` escapes. A source
    that could keep only the beginning of a record says so with ``whole_payload``, the
    whole's length and SHA-256.
    """
    rejections = _bounded(reasons)
    payload_length, payload_sha256 = whole_payload or (
        len(payload),
        hashlib.sha256(payload).hexdigest(),
    )
    if payload_json is not None:
        payload_json = _utf8(payload_json)
        if len(payload) + len(payload_json.encode()) > payload_limit:
            payload_json = None  # the payload itself says the same
    if len(payload) > payload_limit or payload_length > len(payload):
        payload_limit = min(payload_limit, len(payload))
        rejections.append(
            {
                "field": "",
                "code": "payload.truncated",
                "message": f"the payload was {payload_length} bytes: its first {payload_limit}"
                " are kept (payload_sha256 is of the whole), the whole is in the source at"
                " this position",
            }
        )
        payload = payload[:payload_limit]
    return {
        "dead_letter_id": dead_letter_id,
        "connector": connector,
        "record_type": record_type,
        "source_department_uscc": _utf8(source_department_uscc),
        "source_system": source_system,
        "source_partition": _utf8(source_partition),
        "source_offset": _utf8(source_offset),
        "position": _utf8(position),
        "payload": payload,
        "payload_json": payload_json,
        "reasons": rejections,
        "failed_at": business_clock().now_ms(),
        "payload_length": payload_length,
        "payload_sha256": payload_sha256,
        "source_record_id": _utf8(source_record_id) if source_record_id else None,
        "replayed_event_id": None,
    }


def settled(letter: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The record saying that ``letter``'s department record was accepted on a replay as
    the canonical event ``event_id``: the same dead letter id and source, no reasons, the
    payload left out (``payload_length`` and ``payload_sha256`` still name it), at the
    business clock's now."""
    return {
        **letter,
        "payload": b"",
        "payload_json": None,
        "reasons": [],
        "failed_at": business_clock().now_ms(),
        "replayed_event_id": event_id,
    }


def _bounded(reasons: Iterable[Rejection]) -> list[dict[str, str]]:
    """The reasons as Avro values, each message and all of them together bounded."""
    kept: list[dict[str, str]] = []
    size = left_out = 0
    for reason in reasons:
        rejection = {
            "field": _cut(_utf8(reason.field), _REASON_FIELD_LIMIT),
            "code": _cut(_utf8(reason.code), _REASON_FIELD_LIMIT),
            "message": _cut(_utf8(reason.message), REASON_MESSAGE_LIMIT),
        }
        length = sum(len(text.encode()) for text in rejection.values())
        if size + length > REASONS_LIMIT:
            left_out += 1
            continue
        kept.append(rejection)
        size += length
    if left_out:
        kept.append(
            {
                "field": "",
                "code": "reasons.truncated",
                "message": f"{left_out} more reasons are left out: the dead letter keeps at"
                f" most {REASONS_LIMIT} bytes of reasons",
            }
        )
    return kept


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters in all)"


def _utf8(text: str) -> str:
    """``text`` as it can be encoded in UTF-8: lone surrogates become escapes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def unreadable_message(
    *,
    connector: str,
    source_system: str,
    record_type: str,
    topic: str,
    partition: int,
    offset: int,
    payload: bytes | None,
    code: str,
    message: str,
    id_prefix: str = "",
) -> dict[str, Any]:
    """The dead letter of a Kafka message that could not be read, kept whole.

    Its id is uuid5 of ``id_prefix``, topic, partition and offset: reading the message
    again dead-letters it under the same id.
    """
    return dead_letter(
        dead_letter_id=deterministic_id(f"{id_prefix}{topic}|{partition}|{offset}"),
        connector=connector,
        record_type=record_type,
        source_system=source_system,
        source_partition=f"{topic}[{partition}]",
        source_offset=str(offset),
        position=f"{topic} partition {partition} offset {offset}",
        payload=payload or b"",
        reasons=[Reason("", code, message)],
    )
