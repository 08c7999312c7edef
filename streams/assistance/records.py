"""行政协助 records as the departments write them and the relay forwards them: plain
builders with no metrics, for the processor, the simulator and the tests alike."""

from __future__ import annotations

import uuid
from typing import Any

from xietong.ids import deterministic_id


def request_id(requesting_department: str, reference: str) -> str:
    """协助请求标识: the requester and its own reference (联系单号) make the request."""
    return deterministic_id(f"assistance-request|{requesting_department}|{reference}")


def assistance_action(kind: str, acted_at: int, **fields: Any) -> dict[str, Any]:
    """An AssistanceAction as a department's system writes it: ``fields`` given, every
    other optional field empty, a fresh action id unless one is given."""
    action: dict[str, Any] = {
        "action_id": str(uuid.uuid4()),
        "action": kind,
        "request_reference": None,
        "request_id": None,
        "item_code": None,
        "assisting_department_code": None,
        "subject": None,
        "party_uscc": None,
        "time_limit_days": None,
        "result_text": None,
        "attachments": [],
        "refusal_reason": None,
        "reason_text": None,
        "legal_basis": None,
        "cooperation": None,
        "effect": None,
        "comment": None,
        "acted_at": acted_at,
        "operator": None,
        "operator_role": "CLERK",
    }
    action.update(fields)
    return action


def forwarded(stamp: dict[str, Any], action: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The request id an inbound action is about (a REQUEST's from its department and
    reference) and the action as received; ValueError when it names none."""
    if action["action"] == "REQUEST":
        reference = (action["request_reference"] or "").strip()
        if not reference:
            raise ValueError(
                "a REQUEST names its request_reference (the requesting department's own"
                " reference of the request, 联系单号): the request id is made from it"
            )
        identity = request_id(stamp["department_code"], reference)
        action = {**action, "request_reference": reference}
    elif action["request_id"]:
        identity = action["request_id"]
    else:
        raise ValueError(
            f"a {action['action']} names the request_id it acts on, as the inbox has it"
        )
    return identity, {**stamp, "request_id": identity, "action": action}
