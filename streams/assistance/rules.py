"""行政协助 (administrative assistance): a department that cannot finish a matter alone asks
another, by the list the 编办 publishes, and the other must assist in time (domain brief §7,
seed 000: 厦门市行政协助管理办法).

What it reads:

* ``assistance.actions``: what departments did, read from every department's own inbound
  topic ``dept.<code>.inbound`` (the broker lets only that department write it, so the
  acting department is the topic's, never a field) and re-keyed by the request id, so one
  request and everything done about it are on one partition;
* ``registry.assistance-items`` (the list: who may ask, who assists, what, the time limit
  and the basis, the 编办 that supervises it) and ``registry.departments``, as tables every
  worker holds whole.

The request and its states: each row is a state, each column what may move it (the
assisting department "asst", its leader "lead", the requester "req", the platform's
timer), each cell where it goes::

                  ACCEPT    COMPLETE    FILE_REFUSAL    APPROVE_ /      RATE     deadline
                  (asst)    (asst)      (asst)          OVERRULE_       (req)    (timer)
                                                        REFUSAL (lead)
    REQUESTED     ACCEPTED  COMPLETED   REFUSAL_FILED   ✗               ✗        督查 ¹
    ACCEPTED      ✗         COMPLETED   REFUSAL_FILED   ✗               ✗        督查 ¹
    REFUSAL_FILED ✗         ✗           ✗               REFUSED /       ✗        督查 ¹
                                                        back ²
    COMPLETED, REFUSED: closed; every action but the requester's one RATE of a COMPLETED
    request is rejected, naming the state and when it closed.

    ¹ at 24:00 of the last day of the time limit (the list's, or for a request outside
      the list the days it asked, XIETONG_ASSISTANCE_UNLISTED_TIME_LIMIT_DAYS by default),
      counted from the day after the request in the province, in working days where the
      item says so: the open request is escalated once, to the assisting department and
      the 编办 (``assistance.escalations``); it stays open and may still be completed, late.
    ² OVERRULE_REFUSAL: the leader finds the assistance possible; the request goes back
      to ACCEPTED (REQUESTED if it never was) and the department must assist.

**A request** (``REQUEST``) names a listed item (``item_code``) or, outside the list
(清单外), the department asked (``assisting_department_code``) and the subject. A listed
item takes only the requesters it names (a department, or a sector's departments), is not
retired, and fixes the assisting department. The request reaches the assisting
department's inbox with its deadline.

**否定报备.** A department refuses only by filing the 《否定报备表》 (``FILE_REFUSAL``: a
reason, its words and its legal basis, by a named operator), which a leader of that
department then approves (``APPROVE_REFUSAL`` with ``operator_role`` LEADER, by another
person than the one who filed it); only then is the request REFUSED, answered to the
requester and archived with the 编办. A refusal without its reason, words or basis, an
approval by a clerk or by the filer, is rejected with the reason. A request on a listed
item is never refused as ``NOT_OUR_DUTY``: the list says it is the department's.

**互评.** Once a request is COMPLETED its requester rates it once (配合程度, 协助成效, 1–5,
a comment), on ``assistance.ratings``, delivered to the rated department.

**定期协助.** An item with a cadence (MONTHLY, QUARTERLY, HALF_YEARLY, YEARLY) and one
requesting department is a standing duty to send data (the report's 监测数据
"定期向请求机关发送"): when a period ends, the list makes its request on the requester's
behalf (:func:`periods_due`: reference ``<item>/<period>``, e.g. ``HZXZ-105/2026-11``,
made at the period's end, due within the item's limit); the assisting department delivers
by completing it, and a missed delivery is escalated like any overdue request.

Time is event time: the time limit runs from the REQUEST's ``acted_at``; whether a closed
request was in time (``in_time``) compares the completion's (or the approval's)
``acted_at`` with the deadline, so a completion done before the deadline but read after the
escalation is still in time. An action dated before its request, or later than now plus
``action_clock_skew``, is rejected.

Guarantee: at least once, with deterministic ids (a request's id is uuid5 of its
requester and the requester's reference; each state is the request id and its version).
Each applied action keeps where it was read (``received_id``) and what it sent: read again
at the same place (a reprocessing after a crash) it sends the same records again; the same
action id read elsewhere (the department sent it twice) sends nothing.

The rules are pure (:class:`AssistanceRules`: plain values in, an
:class:`AssistanceOutput` out, the time passed in); :mod:`streams.assistance.app` is the
Faust app around them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from prometheus_client import Counter, Gauge

from registry.seed import ESTABLISHMENT_SECTOR
from streams.assistance.records import assistance_action, request_id
from streams.assistance.settings import AssistanceSettings
from streams.directory import DepartmentDirectory
from streams.outputs import RuleOutput
from xietong.clock import business_clock, millis
from xietong.ids import deterministic_id
from xietong.logs import log_event

logger = logging.getLogger(__name__)

APP_NAME = "assistance"
#: Who made a change that no department made (the deadline's 督查).
PLATFORM = "platform"
#: What the due topic says: a deadline passed, an inbox now exists for what waited, or a
#: period of a standing duty (定期协助) ended and its delivery is due.
DEADLINE, DELIVERY, PERIOD = "deadline", "delivery", "period"

REQUESTS_MADE = Counter(
    "xietong_assistance_requests_made",
    "Assistance requests made, by listed (清单内) or not (清单外)",
    ("listed",),
)
ACTIONS_APPLIED = Counter(
    "xietong_assistance_actions_applied", "Assistance actions applied, by action", ("action",)
)
ACTIONS_REJECTED = Counter(
    "xietong_assistance_actions_rejected", "Assistance actions rejected, by action", ("action",)
)
ACTIONS_SENT_AGAIN = Counter(
    "xietong_assistance_actions_sent_again",
    "Actions a department sent again (an action id applied already, read elsewhere)",
)
ESCALATIONS = Counter(
    "xietong_assistance_escalations", "Overdue requests escalated (督查), once each"
)
RATINGS = Counter("xietong_assistance_ratings", "互评 ratings given, once per request")
OPEN_REQUESTS = Gauge(
    "xietong_assistance_open_requests",
    "Requests not yet answered, by assisting department and whether overdue",
    ("department", "overdue"),
)


class AssistanceState(StrEnum):
    REQUESTED = "REQUESTED"  # 待受理
    ACCEPTED = "ACCEPTED"  # 已受理
    REFUSAL_FILED = "REFUSAL_FILED"  # 否定报备待领导审核
    COMPLETED = "COMPLETED"  # 已完成协助
    REFUSED = "REFUSED"  # 经审核不予协助，已答复并归档


OPEN = frozenset(
    {AssistanceState.REQUESTED, AssistanceState.ACCEPTED, AssistanceState.REFUSAL_FILED}
)
CLOSED = frozenset({AssistanceState.COMPLETED, AssistanceState.REFUSED})


class ActionKind(StrEnum):
    REQUEST = "REQUEST"
    ACCEPT = "ACCEPT"
    COMPLETE = "COMPLETE"
    FILE_REFUSAL = "FILE_REFUSAL"
    APPROVE_REFUSAL = "APPROVE_REFUSAL"
    OVERRULE_REFUSAL = "OVERRULE_REFUSAL"
    RATE = "RATE"


ASSISTING, REQUESTING = "assisting", "requesting"

#: action → (the states it applies to, who may do it: the assisting or the requesting side)
ACTIONS: dict[ActionKind, tuple[frozenset[AssistanceState], str]] = {
    ActionKind.ACCEPT: (frozenset({AssistanceState.REQUESTED}), ASSISTING),
    ActionKind.COMPLETE: (
        frozenset({AssistanceState.REQUESTED, AssistanceState.ACCEPTED}),
        ASSISTING,
    ),
    ActionKind.FILE_REFUSAL: (
        frozenset({AssistanceState.REQUESTED, AssistanceState.ACCEPTED}),
        ASSISTING,
    ),
    ActionKind.APPROVE_REFUSAL: (frozenset({AssistanceState.REFUSAL_FILED}), ASSISTING),
    ActionKind.OVERRULE_REFUSAL: (frozenset({AssistanceState.REFUSAL_FILED}), ASSISTING),
    ActionKind.RATE: (frozenset({AssistanceState.COMPLETED}), REQUESTING),
}

#: 否定理由 a 否定报备 may give (RefusalReason of the action's schema, UNKNOWN aside).
REFUSAL_REASONS = {
    "NOT_IN_RULES": "不符合《行政协助管理办法》规定",
    "OVERRULED_BY_HIGHER_RULE": "上级另有规定",
    "NOT_OUR_DUTY": "不属于本机关职权范围",
    "CANNOT_PROVIDE": "客观上无法提供",
    "OTHER": "其他",
}


# -- ids -------------------------------------------------------------------------------------


def request_state_id(record: dict[str, Any]) -> str:
    """A request's state is identified by the request and its version."""
    return deterministic_id(f"assistance-request|{record['request_id']}|{record['version']}")


def escalation_id(identity: str) -> str:
    return deterministic_id(f"assistance-escalation|{identity}")


def rating_id(identity: str) -> str:
    return deterministic_id(f"assistance-rating|{identity}")


def rejection_id(received_id: str) -> str:
    return deterministic_id(f"assistance-rejection|{received_id}")


# -- 定期协助: a standing duty's periods ------------------------------------------------------

#: How many months each cadence's period lasts.
CADENCE_MONTHS = {"MONTHLY": 1, "QUARTERLY": 3, "HALF_YEARLY": 6, "YEARLY": 12}


def ended_period(cadence: str, now: int) -> tuple[str, int]:
    """The label of the last period of ``cadence`` that has ended by ``now`` in the
    province (``2026-11``, ``2026-Q3``, ``2026-H1``, ``2026``) and when it ended (00:00 of
    the next period's first day, epoch ms)."""
    clock, months = business_clock(), CADENCE_MONTHS[cadence]
    today = clock.day_of(now)
    index = (today.year * 12 + today.month - 1) // months * months  # this period's start
    end = date(index // 12, index % 12 + 1, 1)
    start_index = index - months
    year, month = start_index // 12, start_index % 12 + 1
    label = {
        1: f"{year}-{month:02d}",
        3: f"{year}-Q{(month - 1) // 3 + 1}",
        6: f"{year}-H{(month - 1) // 6 + 1}",
        12: f"{year}",
    }[months]
    return label, clock.midnight_ms(end)


def period_reference(item_code: str, period: str) -> str:
    """The reference of a standing duty's request for one period: ``HZXZ-105/2026-11``."""
    return f"{item_code}/{period}"


def periods_due(items: AssistanceList, now: int) -> list[dict[str, Any]]:
    """What the due topic carries for each standing duty (an item with a cadence and one
    requesting department, not retired): its last ended period, keyed by that period's
    request id."""
    due = []
    for item in items.by_code.values():
        requester = item["requesting_department"]
        if not item["cadence"] or requester is None or item["retired_at"] is not None:
            continue
        period, ended_at = ended_period(item["cadence"], now)
        reference = period_reference(item["code"], period)
        due.append(
            {
                "request_id": request_id(requester["code"], reference),
                "due": PERIOD,
                "item_code": item["code"],
                "period": period,
                "ended_at": ended_at,
                "checked_at": now,
            }
        )
    return due


# -- the list ----------------------------------------------------------------------------------


class AssistanceList:
    """行政协助事项清单 as ``registry.assistance-items`` holds it, by item code."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.by_code = {record["code"]: record for record in records}

    def __len__(self) -> int:
        return len(self.by_code)

    def item(self, code: str) -> dict[str, Any] | None:
        return self.by_code.get(code)


class Rejected(Exception):
    """An action that cannot be applied; the message says why."""

    def __init__(self, reason: str, state: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.state = state


@dataclass
class AssistanceOutput(RuleOutput):
    """What one event makes the processor send, and the deadlines it starts
    (epoch ms, request id)."""

    deadlines: list[tuple[int, str]] = field(default_factory=list)


def _local(moment: int) -> str:
    return business_clock().local_time(moment).isoformat(timespec="seconds")


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


# -- the rules -------------------------------------------------------------------------------


class AssistanceRules:
    """The 行政协助 rules over a table of requests (request id → entry).

    An entry holds the request as last published (``record``), each applied action's id
    and where it was read (``applied``), what each cause sent (``sent``: by received id,
    or ``due``), the rating, and whether the assisting department's inbox got the request
    (``delivered``)."""

    def __init__(
        self,
        *,
        requests: MutableMapping[str, Any],
        items: Callable[[], AssistanceList],
        directory: Callable[[], DepartmentDirectory],
        has_inbox: Callable[[str], bool],
        settings: AssistanceSettings,
    ) -> None:
        self.requests = requests
        self.items = items
        self.directory = directory
        self.has_inbox = has_inbox
        self.settings = settings

    # -- department actions -------------------------------------------------------------------

    def on_action(self, received: dict[str, Any], now: int) -> AssistanceOutput:
        """A department action: apply it, or record why it was not."""
        outcome = AssistanceOutput()
        action = received["action"]
        kind, identity = action["action"], received["request_id"]
        entry = self.requests.get(identity)
        try:
            if kind not in ActionKind.__members__:
                raise Rejected(
                    f"unknown action {kind!r}: one of {', '.join(ActionKind)}",
                )
            first_read = None if entry is None else entry["applied"].get(action["action_id"])
            if entry is not None and first_read == received["received_id"]:
                # reprocessed after a crash: send again what it sent
                self._resend(entry, received["received_id"], outcome)
                return outcome
            if first_read is not None:  # the department sent it again: it was applied
                ACTIONS_SENT_AGAIN.inc()
                log_event(
                    logger,
                    "assistance_action_sent_again",
                    request_id=identity,
                    action_id=action["action_id"],
                    first_read_at=first_read,
                    read_at=received["received_id"],
                )
                return outcome
            if ActionKind(kind) is ActionKind.REQUEST:
                self._request(received, entry, outcome, now)
            elif entry is None:
                raise Rejected(
                    f"no assistance request {identity}: check the request id in the inbox"
                )
            else:
                self._act(entry, received, ActionKind(kind), outcome, now)
            ACTIONS_APPLIED.labels(kind).inc()
        except Rejected as rejected:
            ACTIONS_REJECTED.labels(kind).inc()
            outcome.outgoing.clear()
            outcome.deadlines.clear()
            outcome.send(
                "rejected_assistance_action",
                received["department_code"],
                rejection(received, rejected.reason, rejected.state, now),
            )
            log_event(
                logger,
                "assistance_action_rejected",
                event_id=received["received_id"],
                request_id=identity,
                department=received["department_code"],
                action=kind,
                reason=rejected.reason,
            )
        return outcome

    def _request(
        self,
        received: dict[str, Any],
        existing: dict[str, Any] | None,
        outcome: AssistanceOutput,
        now: int,
    ) -> None:
        action, acting = received["action"], received["department_code"]
        identity = received["request_id"]
        directory = self.directory()
        requester = directory.by_code.get(acting)
        if requester is None:
            raise Rejected(f"{acting} is not a department of the registry (registry.departments)")
        if existing is not None:
            raise Rejected(
                f"request reference {action['request_reference']!r} of {acting} names request"
                f" {identity}, made already: give a new request its own reference",
                existing["record"]["state"],
            )
        at = millis(action["acted_at"])
        self._not_ahead(action, at, now)
        subject = _text(action["subject"])
        code = action["item_code"]
        if code:
            item = self.items().item(code)
            if item is None:
                raise Rejected(
                    f"no assistance item {code!r} on the list (registry.assistance-items): ask"
                    " outside the list (清单外) with item_code empty, naming"
                    " assisting_department_code and the subject"
                )
            retired = item["retired_at"]
            if retired is not None and millis(retired) <= at:
                raise Rejected(
                    f"assistance item {code} left the list on {_local(millis(retired))}"
                    f" ({item['retired_reason'] or 'no reason given'}): ask outside the list"
                )
            self._may_ask(item, acting, directory)
            assisting = item["assisting_department"]
            named = action["assisting_department_code"]
            if named and named != assisting["code"]:
                raise Rejected(
                    f"assistance item {code} is assisted by {assisting['code']}, not {named}:"
                    " leave assisting_department_code empty or name the list's department"
                )
            days, working = item["time_limit_days"], item["working_days"]
            supervisor = item["supervising_department"]
            subject = subject or item["content"]
            item_ref = {
                "code": item["code"],
                "name": item["name"],
                "version": item["version"],
                "content": item["content"],
                "legal_basis": item["legal_basis"],
            }
        else:
            named = action["assisting_department_code"]
            found = directory.by_code.get(named or "")
            if found is None:
                raise Rejected(
                    "a request outside the list (清单外) names the department asked in"
                    f" assisting_department_code: {named!r} is not a department of the registry"
                )
            if not subject:
                raise Rejected("a request outside the list (清单外) says what is asked (subject)")
            assisting, item_ref = found, None
            days = action["time_limit_days"] or self.settings.unlisted_time_limit_days
            if not 0 < days <= self.settings.max_unlisted_time_limit_days:
                raise Rejected(
                    f"time_limit_days {days}: a request outside the list asks 1 to"
                    f" {self.settings.max_unlisted_time_limit_days} days"
                )
            working = self.settings.unlisted_working_days
            supervisor = self._supervisor_of(assisting["code"], directory)
        if assisting["code"] == acting:
            raise Rejected(f"{acting} asks itself: a request goes to another department")
        deadline = self.settings.deadline(at, days, working)
        record = {
            "request_id": identity,
            "version": 1,
            "request_reference": action["request_reference"],
            "listed": item_ref is not None,
            "item": item_ref,
            "subject": subject,
            "party_uscc": action["party_uscc"],
            "requesting_department": requester,
            "assisting_department": assisting,
            "supervising_department": supervisor,
            "time_limit_days": days,
            "working_days": working,
            "requested_at": at,
            "deadline": deadline,
            "state": AssistanceState.REQUESTED.value,
            "accepted_at": None,
            "completed_at": None,
            "result_text": None,
            "attachments": [],
            "refusal": None,
            "refusals_overruled": 0,
            "in_time": None,
            "escalated_at": None,
            "state_changed_at": at,
            "state_recorded_at": now,
            "changed_by": acting,
        }
        entry = {
            "record": record,
            "applied": {},
            "sent": {},
            "rating": None,
            "delivered": self.has_inbox(assisting["code"]),
        }
        self._publish(entry, received, outcome, record, assisting["code"])
        outcome.deadlines.append((deadline, identity))
        REQUESTS_MADE.labels(str(item_ref is not None).lower()).inc()
        _count(record, +1)
        self.requests[identity] = entry

    def _act(
        self,
        entry: dict[str, Any],
        received: dict[str, Any],
        kind: ActionKind,
        outcome: AssistanceOutput,
        now: int,
    ) -> None:
        action, acting = received["action"], received["department_code"]
        record = entry["record"]
        identity, state = record["request_id"], AssistanceState(record["state"])
        allowed, side = ACTIONS[kind]
        may = record[f"{side}_department"]["code"]
        if acting != may:
            raise Rejected(
                f"{acting} may not {kind} request {identity}: only its {side} department {may} may",
                state,
            )
        if state in CLOSED and kind is not ActionKind.RATE:
            raise Rejected(
                f"request {identity} is closed: {state} on {_local(record['state_changed_at'])};"
                " no action is taken on a closed request but its requester's rating (RATE)",
                state,
            )
        if state not in allowed:
            raise Rejected(
                f"cannot {kind} request {identity}: it is {state}; {kind} is possible from"
                f" {', '.join(sorted(allowed))}",
                state,
            )
        at = millis(action["acted_at"])
        if at < record["requested_at"]:
            raise Rejected(
                f"{kind} {action['action_id']} has acted_at {_local(at)}, before the request"
                f" ({_local(record['requested_at'])}): check the acting system's clock",
                state,
            )
        self._not_ahead(action, at, now)
        requester = record["requesting_department"]["code"]
        if kind is ActionKind.RATE:
            self._rate(entry, received, at, outcome)
            return
        changes: dict[str, Any] = {}
        tell: tuple[str, ...] = ()
        if kind is ActionKind.ACCEPT:
            to = AssistanceState.ACCEPTED
            changes = {"accepted_at": at}
            tell = (requester,)
        elif kind is ActionKind.COMPLETE:
            result, attachments = _text(action["result_text"]), list(action["attachments"] or [])
            if not result and not attachments:
                raise Rejected(
                    "a completion carries its result: result_text, or attachments by reference",
                    state,
                )
            to = AssistanceState.COMPLETED
            changes = {
                "accepted_at": record["accepted_at"] or at,
                "completed_at": at,
                "result_text": result or None,
                "attachments": [dict(attachment) for attachment in attachments],
                "in_time": at <= record["deadline"],
            }
            tell = (requester,)
        elif kind is ActionKind.FILE_REFUSAL:
            to = AssistanceState.REFUSAL_FILED
            changes = {"refusal": self._refusal(record, action, at)}
            tell = (may,)  # its leaders decide
        elif kind is ActionKind.APPROVE_REFUSAL:
            refusal = record["refusal"]
            self._leader(action, refusal, state, "approve")
            to = AssistanceState.REFUSED
            changes = {
                "refusal": {**refusal, "approved_by": _text(action["operator"]), "approved_at": at},
                "in_time": at <= record["deadline"],
            }
            supervisor = record["supervising_department"]
            tell = (requester, *([supervisor["code"]] if supervisor else []))
        else:  # OVERRULE_REFUSAL: the department must assist after all
            self._leader(action, record["refusal"], state, "overrule")
            to = AssistanceState.ACCEPTED if record["accepted_at"] else AssistanceState.REQUESTED
            changes = {"refusal": None, "refusals_overruled": record["refusals_overruled"] + 1}
            tell = (may,)
        changed = {
            **record,
            **changes,
            "version": record["version"] + 1,
            "state": to.value,
            "state_changed_at": at,
            "state_recorded_at": max(now, record["state_recorded_at"]),
            "changed_by": acting,
        }
        _count(record, -1)
        _count(changed, +1)
        entry["record"] = changed
        self._publish(entry, received, outcome, changed, *tell)
        self.requests[identity] = entry

    def _refusal(self, record: dict[str, Any], action: dict[str, Any], at: int) -> dict[str, Any]:
        """The 否定报备表, if it is complete and allowed; rejected with what is missing."""
        state = record["state"]
        reason = action["refusal_reason"]
        if reason not in REFUSAL_REASONS:
            raise Rejected(
                "a 否定报备 names its reason (refusal_reason): one of "
                + ", ".join(f"{code} ({text})" for code, text in REFUSAL_REASONS.items()),
                state,
            )
        missing = [
            name for name in ("reason_text", "legal_basis", "operator") if not _text(action[name])
        ]
        if missing:
            raise Rejected(
                "a 否定报备 says why in words (reason_text), on which legal basis (legal_basis),"
                f" and who filed it (operator): {', '.join(missing)} missing",
                state,
            )
        if record["listed"] and reason == "NOT_OUR_DUTY":
            item = record["item"]
            raise Rejected(
                f"request {record['request_id']} is on listed item {item['code']} ({item['name']}),"
                f" which names {record['assisting_department']['name']} as the assisting"
                " department: a listed item is never refused as not its duty (NOT_OUR_DUTY)",
                state,
            )
        return {
            "reason": reason,
            "reason_text": _text(action["reason_text"]),
            "legal_basis": _text(action["legal_basis"]),
            "filed_by": _text(action["operator"]),
            "filed_at": at,
            "approved_by": None,
            "approved_at": None,
        }

    @staticmethod
    def _leader(
        action: dict[str, Any], refusal: dict[str, Any], state: AssistanceState, decision: str
    ) -> None:
        """Only a leader, another person than the one who filed the 否定报备, decides it."""
        operator = _text(action["operator"])
        if action["operator_role"] != "LEADER":
            raise Rejected(
                f"a 否定报备 is decided by a leader of the department: operator_role is"
                f" {action['operator_role']}, not LEADER; a clerk cannot {decision} it",
                state,
            )
        if not operator or operator == refusal["filed_by"]:
            raise Rejected(
                f"a 否定报备 filed by {refusal['filed_by']!r} is decided by another person"
                f" (operator {operator!r}): a second action, by the leader",
                state,
            )

    def _rate(
        self, entry: dict[str, Any], received: dict[str, Any], at: int, outcome: AssistanceOutput
    ) -> None:
        action, record = received["action"], entry["record"]
        state = record["state"]
        if entry["rating"] is not None:
            raise Rejected(
                f"request {record['request_id']} was rated already on"
                f" {_local(entry['rating']['rated_at'])}: one rating per request",
                state,
            )
        scores = {name: action[name] for name in ("cooperation", "effect")}
        wrong = [name for name, score in scores.items() if score is None or not 1 <= score <= 5]
        if wrong:
            raise Rejected(
                "a rating gives 配合程度 (cooperation) and 协助成效 (effect), each 1 to 5:"
                f" {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not",
                state,
            )
        rating = {
            "rating_id": rating_id(record["request_id"]),
            "request_id": record["request_id"],
            "item_code": record["item"]["code"] if record["item"] else None,
            "rating_department": record["requesting_department"],
            "rated_department": record["assisting_department"],
            "cooperation": scores["cooperation"],
            "effect": scores["effect"],
            "comment": _text(action["comment"]) or None,
            "completed_in_time": record["in_time"],
            "rated_at": at,
        }
        entry["rating"] = rating
        self._emit(
            entry,
            received["received_id"],
            outcome,
            "assistance_rating",
            rating,
            record["assisting_department"]["code"],
        )
        entry["applied"][action["action_id"]] = received["received_id"]
        RATINGS.inc()
        self.requests[record["request_id"]] = entry

    def _not_ahead(self, action: dict[str, Any], at: int, now: int) -> None:
        skew = self.settings.action_clock_skew
        if at > now + int(skew.total_seconds() * 1000):
            raise Rejected(
                f"{action['action']} {action['action_id']} has acted_at {_local(at)}, later"
                f" than the platform's now ({_local(now)}) plus the clock skew allowed ({skew},"
                " XIETONG_ASSISTANCE_ACTION_CLOCK_SKEW): an action is sent once done"
            )

    @staticmethod
    def _may_ask(item: dict[str, Any], acting: str, directory: DepartmentDirectory) -> None:
        department, sector = item["requesting_department"], item["requesting_sector"]
        if department is not None and department["code"] != acting:
            raise Rejected(
                f"assistance item {item['code']} is for requests by {department['code']}"
                f" ({department['name']}), not {acting}: ask outside the list (清单外)"
            )
        own_sector = directory.seat.get(acting, ("", ""))[0]
        if sector is not None and sector != own_sector:
            raise Rejected(
                f"assistance item {item['code']} is for requests by departments of sector"
                f" {sector}; {acting} is of {own_sector or 'no known sector'}: ask outside the"
                " list (清单外)"
            )

    @staticmethod
    def _supervisor_of(code: str, directory: DepartmentDirectory) -> dict[str, str] | None:
        """The 编办 of a department's division, else of the city, else of the province
        (GB/T 2260: a county's city is its first four digits)."""
        division = directory.seat.get(code, ("", ""))[1]
        for seat in (division, f"{division[:4]}00", f"{division[:2]}0000"):
            found = directory.by_sector.get((ESTABLISHMENT_SECTOR, seat))
            if found is not None:
                return found
        return None

    # -- what one cause sends, and sends again -------------------------------------------

    def _publish(
        self,
        entry: dict[str, Any],
        received: dict[str, Any],
        outcome: AssistanceOutput,
        record: dict[str, Any],
        *inboxes: str,
    ) -> None:
        """The request as it is now, to its topic and the inboxes told; the action applied."""
        delivered = tuple(code for code in inboxes if code)
        self._emit(
            entry,
            received["received_id"],
            outcome,
            "assistance_request",
            record,
            *delivered,
        )
        entry["applied"][received["action"]["action_id"]] = received["received_id"]

    @staticmethod
    def _emit(
        entry: dict[str, Any],
        cause: str,
        outcome: AssistanceOutput,
        record_type: str,
        value: dict[str, Any],
        *inboxes: str,
    ) -> None:
        outcome.send(record_type, value["request_id"], value, *inboxes)
        entry["sent"].setdefault(cause, []).append([record_type, value, list(inboxes)])

    @staticmethod
    def _resend(entry: dict[str, Any], cause: str, outcome: AssistanceOutput) -> None:
        for record_type, value, inboxes in entry["sent"].get(cause, ()):
            outcome.send(record_type, value["request_id"], value, *inboxes)

    # -- deadlines and deliveries ----------------------------------------------------------

    def on_due(self, due: dict[str, Any]) -> AssistanceOutput:
        """The deadline passed (escalate the open request once), or the assisting
        department got an inbox (deliver what waited)."""
        outcome = AssistanceOutput()
        identity, checked_at = due["request_id"], int(due["checked_at"])
        entry = self.requests.get(identity)
        if due["due"] == PERIOD:
            if entry is None:
                self._period_request(due, outcome, checked_at)
            else:  # made already (perhaps before a crash): the same records again
                self._resend(entry, deterministic_id(f"assistance-period|{identity}"), outcome)
            return outcome
        if entry is None:
            return outcome
        record = entry["record"]
        if due["due"] == DELIVERY:
            if not entry["delivered"] and self.has_inbox(record["assisting_department"]["code"]):
                outcome.send(
                    "assistance_request", identity, record, record["assisting_department"]["code"]
                )
                entry["delivered"] = True
                self.requests[identity] = entry
            return outcome
        if "due" in entry["sent"]:  # escalated already: the same records again
            self._resend(entry, "due", outcome)
            return outcome
        if record["state"] not in OPEN or record["deadline"] > checked_at:
            return outcome
        history = self.settings.is_history(record["deadline"])
        changed = {
            **record,
            "version": record["version"] + 1,
            "escalated_at": checked_at,
            "state_changed_at": record["deadline"],
            "state_recorded_at": max(checked_at, record["state_recorded_at"]),
            "changed_by": PLATFORM,
        }
        supervisor = record["supervising_department"]
        told = (
            ()
            if history
            else tuple(
                dict.fromkeys(
                    [
                        record["assisting_department"]["code"],
                        *([supervisor["code"]] if supervisor else []),
                    ]
                )
            )
        )
        _count(record, -1)
        _count(changed, +1)
        entry["record"] = changed
        self._emit(entry, "due", outcome, "assistance_request", changed)
        self._emit(entry, "due", outcome, "assistance_escalation", escalation(changed, told), *told)
        self.requests[identity] = entry
        ESCALATIONS.inc()
        log_event(
            logger,
            "assistance_escalated",
            request_id=identity,
            state=record["state"],
            deadline=_local(record["deadline"]),
            recipients=list(told),
        )
        return outcome

    def _period_request(self, due: dict[str, Any], outcome: AssistanceOutput, now: int) -> None:
        """A standing duty's request for a period that ended: made by the list on behalf
        of its requesting department, at the period's end, due within the item's limit."""
        item = self.items().item(due["item_code"])
        if item is None or item["requesting_department"] is None or item["retired_at"]:
            return
        requester = item["requesting_department"]["code"]
        identity = due["request_id"]
        cause = deterministic_id(f"assistance-period|{identity}")
        action = assistance_action(
            ActionKind.REQUEST,
            int(due["ended_at"]),
            action_id=f"period|{identity}",
            request_reference=period_reference(item["code"], due["period"]),
            item_code=item["code"],
            subject=f"{item['content']}（{due['period']}）",
        )
        received = {
            "received_id": cause,
            "department_code": requester,
            "request_id": identity,
            "action": action,
        }
        try:
            self._request(received, None, outcome, now)
        except Rejected as rejected:
            log_event(
                logger,
                "assistance_period_not_requested",
                request_id=identity,
                item_code=item["code"],
                period=due["period"],
                reason=rejected.reason,
            )

    def is_waiting(self, identity: str) -> bool:
        """Whether the request is still open and not yet escalated (a timer sends it)."""
        entry = self.requests.get(identity)
        return (
            entry is not None
            and entry["record"]["state"] in OPEN
            and entry["record"]["escalated_at"] is None
        )

    def undelivered(self, departments: set[str]) -> Iterator[str]:
        """The open requests never delivered to their assisting department, one of
        ``departments`` (it had no inbox then)."""
        for identity, entry in list(self.requests.items()):
            record = entry["record"]
            if (
                not entry["delivered"]
                and record["state"] in OPEN
                and record["assisting_department"]["code"] in departments
            ):
                yield identity

    def recovered(self) -> list[tuple[int, str]]:
        """After a rebalance: the deadlines still running, and the gauge, from the table."""
        OPEN_REQUESTS.clear()
        deadlines: list[tuple[int, str]] = []
        for identity, entry in self.requests.items():
            record = entry["record"]
            _count(record, +1)
            if record["state"] in OPEN and record["escalated_at"] is None:
                deadlines.append((record["deadline"], identity))
        return deadlines


def _count(record: dict[str, Any], step: int) -> None:
    if record["state"] in OPEN:
        overdue = "true" if record["escalated_at"] is not None else "false"
        OPEN_REQUESTS.labels(record["assisting_department"]["code"], overdue).inc(step)


def escalation(record: dict[str, Any], recipients: tuple[str, ...]) -> dict[str, Any]:
    """The 督查 of a request open at its deadline."""
    assisting, requesting = record["assisting_department"], record["requesting_department"]
    return {
        "escalation_id": escalation_id(record["request_id"]),
        "request_id": record["request_id"],
        "item_code": record["item"]["code"] if record["item"] else None,
        "subject": record["subject"],
        "requesting_department": requesting,
        "assisting_department": assisting,
        "supervising_department": record["supervising_department"],
        "state": record["state"],
        "deadline": record["deadline"],
        "recipients": list(recipients),
        "raised_at": record["escalated_at"],
        "message": (
            f"{assisting['name']}未在协助时限内办结{requesting['name']}的行政协助请求"
            f"（{record['subject']}，期限{_local(record['deadline'])}），请督办"
        ),
    }


def rejection(received: dict[str, Any], reason: str, state: str | None, now: int) -> dict[str, Any]:
    """The record of an action not applied, with the reason."""
    return {
        "rejection_id": rejection_id(received["received_id"]),
        "department_code": received["department_code"],
        "inbound_topic": received["inbound_topic"],
        "inbound_partition": received["inbound_partition"],
        "inbound_offset": received["inbound_offset"],
        "request_id": received.get("request_id"),
        "action": received.get("action"),
        "original_value": received.get("original_value"),
        "request_state": None if state is None else str(state),
        "reason": reason,
        "rejected_at": now,
    }
