"""The one order of a record's versions: which of two versions of one record is the later.

A department re-sends a record when it corrects it (a licence VALID then CANCELLED, a
listing whose planned end is extended, a 移出 whose date is corrected). Every processor
and view that keeps "the latest version" of a record asks :func:`is_later`, so they all
keep the same one whatever order the versions arrived in::

    known = version_of(first_record)
    if is_later(version_of(second_record), known):
        ...  # the second supersedes the first

The order, as the Envelope's ``record_version`` doc states it:

1. **The source's own version** (``record_version``): the record's update time or row
   version, as the department's mapping declares it. Numbers compare as numbers; ISO
   dates and timestamps as instants (a date is its 00:00, a timestamp without a zone is
   the province's time, ``XIETONG_TIME_ZONE``); only values of the same kind compare. A
   content digest (what the connector writes when the mapping declares no version
   column: :data:`DIGEST`), or any other text, carries no order.
2. **The connector's source offset**, only within the same source partition (the same
   table, file or endpoint): a later row id or byte position is a later version. Offsets
   compare as the versions do (numbers, instants); others (an HTTP request id) carry no
   order.
3. **The content** (:func:`content_digest`), the last resort: deterministic, so every
   service picks the same version, though not the department's latest. Two versions with
   the same content are one: neither is later.

Never the arrival order, never a uuid (the event id is derived from the version and
orders nothing). Versions of one record that all have an order of the same kind (the
usual case: one mapping, one version column), or none and one source partition, are
totally ordered. A record whose versions mix kinds (a mapping that gained a version
column) may not be: version 2 at offset 1, version 1 at offset 9 and a digest at offset 5
go round in a circle, and which of them is kept can depend on the order they come in.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Context, Decimal, InvalidOperation
from typing import Any, TypedDict

from xietong.clock import business_clock

#: What the connector writes as ``record_version`` when a mapping has no version column:
#: a 12-byte BLAKE2b of the row, in hex (``connectors/mapping.py``). It orders nothing.
DIGEST = re.compile(r"[0-9a-f]{24}")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class RecordVersion(TypedDict):
    """What :func:`is_later` compares: the Envelope's order fields and the content."""

    record_version: str
    source_partition: str
    source_offset: str
    content: str


def content_digest(record: Mapping[str, Any]) -> str:
    """The digest of a record's fields, its envelope left out (the same content sent
    twice, or by two connectors, has one digest)."""
    fields = {name: value for name, value in record.items() if name != "envelope"}
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def version_of(record: Mapping[str, Any]) -> RecordVersion:
    """The version of a canonical record (one with an ``envelope``), as plain text that
    keeps in a JSON state and compares with :func:`is_later`."""
    envelope = record["envelope"]
    return {
        "record_version": envelope["record_version"],
        # Every version a service holds keeps its partition: one string per partition.
        "source_partition": sys.intern(envelope["source_partition"]),
        "source_offset": envelope["source_offset"],
        "content": content_digest(record),
    }


def is_later(new: RecordVersion, known: RecordVersion) -> bool:
    """Whether ``new`` supersedes ``known`` (two versions of one record): by the source's
    version, else the source offset in the same source partition, else the content."""
    by_version = _compare(new["record_version"], known["record_version"])
    if by_version is not None:
        return by_version > 0
    if new["source_partition"] == known["source_partition"]:
        by_offset = _compare(new["source_offset"], known["source_offset"])
        if by_offset is not None:
            return by_offset > 0
    return new["content"] > known["content"]


def order_key(version: RecordVersion) -> str:
    """A text that sorts the versions of one record as :func:`is_later` orders them, for
    SQL (``ORDER BY version_order DESC``): the sink stores it with every row.

    :func:`is_later` compares versions of different kinds (or partitions) by the next
    step, so it is no total order and no single key reproduces it everywhere. This key
    agrees with it wherever the versions of a record have one kind (the usual case: one
    mapping, one version column) and, when they have no order, come from one source
    partition; otherwise it is still deterministic: kinds rank no-order < number <
    instant, and partitions by name. Numbers sort exactly up to 10^59 in magnitude and
    to 20 decimals."""
    return "|".join(
        (
            _sortable(version["record_version"]),
            version["source_partition"],
            _sortable(version["source_offset"]),
            version["content"],
        )
    )


#: Numbers and instants become fixed-width digits; the bias keeps negatives sortable and
#: the limit keeps a version like "1e999999999" from becoming a billion-digit integer.
_LIMIT = Decimal(10) ** 59
_SCALE = Decimal(10) ** 20
_EXACT = Context(prec=100)
_BIAS = 10**80


def _sortable(value: str) -> str:
    ordered = _ordered(value)
    if ordered is None:
        return "0"
    if isinstance(ordered, Decimal):
        bounded = max(-_LIMIT, min(_LIMIT, ordered))
        fixed = int(_EXACT.multiply(bounded, _SCALE).to_integral_value(ROUND_FLOOR))
        return f"1{fixed + _BIAS:081d}"
    microseconds = (ordered - _EPOCH) // timedelta(microseconds=1)
    return f"2{microseconds + _BIAS:081d}"


def _compare(a: str, b: str) -> int | None:
    """-1, 0 or 1 if ``a`` and ``b`` are ordered values of the same kind and differ or
    not; None if they carry no order between them (so the next step decides)."""
    first, second = _ordered(a), _ordered(b)
    if first is None or second is None or type(first) is not type(second):
        return None
    if first == second:
        return None
    return 1 if first > second else -1  # type: ignore[operator]


def _ordered(value: str) -> Decimal | datetime | None:
    """A version or offset as the value it orders by: a number, an instant, or None."""
    text = value.strip()
    if DIGEST.fullmatch(text):
        return None
    if _NUMBER.fullmatch(text):
        try:
            return Decimal(text)
        except InvalidOperation:
            return None
    try:
        moment = datetime.fromisoformat(text)  # a date alone is its 00:00
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=business_clock().zone)
    return moment
