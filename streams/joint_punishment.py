"""一处违法、处处受限 (joint punishment): a listing restricts the entity at every department
with a measure for it, until the listing ends (domain brief §6).

This module is being built; its ids are fixed now so that producers of matter events
(the credit-check API, department connectors) derive the same ones.
"""

from __future__ import annotations

from xietong.ids import deterministic_id

APP_NAME = "joint-punishment"


def matter_event_id(
    department_code: str, matter_type: str, matter_reference: str, source: str
) -> str:
    """事件标识 of a matter event: the same report (or check) of a matter keeps its id.

    ``source`` is the MatterSource symbol (``DEPARTMENT_REPORT`` or ``CREDIT_CHECK``); the
    report and the check of one matter have different ids and are folded into one matter
    by (department, matter type, matter reference).
    """
    return deterministic_id(
        f"matter-event|{department_code}|{matter_type}|{matter_reference}|{source}"
    )
