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
        payload=raw, reasons=[Reason("uscc", "uscc.check_character", "…")],
    )
    unreadable_message(
        connector="sink.credit", source_system="xietong.sink", record_type="unknown",
        topic="dualnotice.pushes", partition=3, offset=17, payload=raw,
        code="sink.unreadable", message="not Avro", id_prefix="sink|",
    )
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from xietong.clock import business_clock
from xietong.ids import deterministic_id

#: The most of the original payload a dead letter keeps: a record must stay under the
#: broker's ``message.max.bytes`` (1 MiB by default), with room for the other fields, or
#: the dead letter itself could not be produced.
PAYLOAD_LIMIT = 768 * 1024


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
    payload_json: str | None = None,
) -> dict[str, Any]:
    """The value of a ``DeadLetter`` record, refused now by the business clock.

    A payload longer than :data:`PAYLOAD_LIMIT` is cut there, with a ``payload.truncated``
    reason that says how long it was; its JSON form is dropped when both would not fit.
    """
    rejections = [{"field": r.field, "code": r.code, "message": r.message} for r in reasons]
    if payload_json is not None and len(payload) + len(payload_json.encode()) > PAYLOAD_LIMIT:
        payload_json = None  # the payload itself says the same
    if len(payload) > PAYLOAD_LIMIT:
        rejections.append(
            {
                "field": "",
                "code": "payload.truncated",
                "message": f"the payload was {len(payload)} bytes: its first {PAYLOAD_LIMIT}"
                " are kept, the whole is in the source at this position",
            }
        )
        payload = payload[:PAYLOAD_LIMIT]
    return {
        "dead_letter_id": dead_letter_id,
        "connector": connector,
        "record_type": record_type,
        "source_department_uscc": source_department_uscc,
        "source_system": source_system,
        "source_partition": source_partition,
        "source_offset": source_offset,
        "position": position,
        "payload": payload,
        "payload_json": payload_json,
        "reasons": rejections,
        "failed_at": business_clock().now_ms(),
    }


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
