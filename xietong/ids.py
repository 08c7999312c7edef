"""The platform's deterministic ids: the same input always gets the same id.

Connectors derive event ids from the source record, processors derive the ids of what
they emit (a 双告知 push, a notice) from the events that caused it, so a record re-sent
or reprocessed after a crash keeps its id and downstream readers count it once::

    deterministic_id("hz-amr|registration|R-1|v3")   # a UUID5 string
"""

from __future__ import annotations

import hashlib
import uuid

#: Namespace of the platform's deterministic ids (uuid5).
XIETONG_NAMESPACE = uuid.UUID("6f1d2c0e-3b9a-5c4e-9a57-58696574e76f")
_NAMESPACE_DIGEST = hashlib.sha1(XIETONG_NAMESPACE.bytes, usedforsecurity=False)


def deterministic_id(name: str) -> str:
    """``str(uuid.uuid5(XIETONG_NAMESPACE, name))``, without rehashing the namespace."""
    digest = _NAMESPACE_DIGEST.copy()
    digest.update(name.encode())
    return str(uuid.UUID(bytes=digest.digest()[:16], version=5))


def matter_event_id(
    uscc: str, department_code: str, matter_type: str, matter_reference: str, source: str
) -> str:
    """事件标识 of a matter event: the same report (or check) of a matter for an entity keeps
    its id; another entity under the same reference (a second bidder) gets its own.

    ``source`` is the MatterSource symbol (``DEPARTMENT_REPORT`` or ``CREDIT_CHECK``); the
    report and the check of one matter have different ids and are folded into one matter
    by (entity, department, matter type, matter reference).
    """
    return deterministic_id(
        f"matter-event|{uscc}|{department_code}|{matter_type}|{matter_reference}|{source}"
    )
