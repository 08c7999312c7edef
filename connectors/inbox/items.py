"""What a department's inbox holds, as the inbox API names it: the kinds of item, when an
item is open, the cursor that pages through the inbox, the filters, and the ids of the
actions the API writes. Pure: no database, no broker (the read side, :mod:`.store`, and
the act side, :mod:`.actions`, use it; ``tests/unit/test_inbox_items.py`` drives it).

An **item** is one thing the platform delivered to the department's inbox topic
``dept.<code>.inbox`` (the sink records each delivery, with where it was read, in the
credit database's ``deliveries``): a 双告知 push and a restriction hit are one item across
all their versions (their id is the push's or hit's id); a notice or an alert is one item
per record (its id is the record's). The item's state is its current state, which the
sink keeps from the processors' topics: a push a department claimed reads CLAIMED even
though the CLAIMED version reaches no inbox (the department made it).

The **cursor** is the inbox topic's offset of the last delivery a page showed; an item
is placed by its latest delivery, so an item delivered again (a push escalated, a hit
withdrawn) comes again after the cursor, and a client that keeps its cursor sees every
change delivered since, in inbox order::

    cursor = encode_cursor(41)          # 'eyJhZnRlciI6NDF9'
    decode_cursor(cursor)               # 41
    inbox_action_id("hz-xh-transport", "claim-7f3a")   # the same key, the same action
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from xietong.ids import deterministic_id


class InboxKind(StrEnum):
    """The kinds of inbox item (each with the record type the inbox carries)."""

    PUSH = "push"  # 双告知推送 (DualNoticePush): claim, return or stop it
    HIT = "hit"  # 限制命中 (RestrictionHit): give its 反馈
    SANCTION_NOTICE = "sanction_notice"  # 惩戒告知 (SanctionNotice)
    LICENCE_REVIEW = "licence_review"  # 许可审查告知 (LicenceReviewNotice)
    LIFT_NOTICE = "lift_notice"  # 解除惩戒告知 (LiftNotice)
    CLOSURE_NOTICE = "closure_notice"  # 注销/吊销告知 (EntityClosureNotice)
    #: 督办: 逾期未认领, 疑似无证经营 (DualNoticeAlert), 逾期未反馈 (FeedbackOverdueAlert)
    ALERT = "alert"


#: The record types (``deliveries.record_type``) that are one item across their versions,
#: identified by the delivery's subject (the push id, the hit id).
VERSIONED_RECORD_TYPES = ("dual_notice_push", "restriction_hit")


@dataclass(frozen=True)
class ItemSource:
    """How the items of one record type are read: a SELECT over the current-state table
    giving ``item_id, kind, state, is_open, uscc, entity_name, title, deadline, at,
    department_code`` (and ``record_type``) for one department (``%(department)s``)."""

    record_type: str
    kind: InboxKind
    table: str
    key: str
    select: str

    def sql(self) -> str:
        return (
            f"{self.select}, '{self.record_type}' AS record_type"
            f" FROM {self.table} WHERE department_code = %(department)s"
        )


def source_of(record_type: str) -> ItemSource:
    """The item source of a record type the inbox carries."""
    return next(source for source in ITEM_SOURCES if source.record_type == record_type)


#: A push is open while the department still has a duty on it: to claim it, or to issue
#: the licence it claimed; RETURNED, REASSIGNED, STOPPED, FULFILLED and CLOSED end it.
OPEN_PUSH_STATES = ("PUSHED", "OVERDUE", "CLAIMED", "UNLICENSED")

ITEM_SOURCES: tuple[ItemSource, ...] = (
    ItemSource(
        "dual_notice_push",
        InboxKind.PUSH,
        "dual_notice_pushes",
        "push_id",
        "SELECT push_id AS item_id, 'push' AS kind, state,"
        f" state IN ({', '.join(repr(s) for s in OPEN_PUSH_STATES)}) AS is_open,"
        " uscc, entity_name, item_name AS title,"
        " CASE WHEN state IN ('CLAIMED', 'UNLICENSED') THEN licence_deadline"
        " ELSE claim_deadline END AS deadline, pushed_at AS at, department_code",
    ),
    ItemSource(
        "restriction_hit",
        InboxKind.HIT,
        "restriction_hits",
        "hit_id",
        # A hit's state: its feedback while it stands (PENDING, APPLIED, NOT_APPLICABLE,
        # NOT_REQUIRED), WITHDRAWN once the listing no longer covers the matter.
        "SELECT hit_id, 'hit', CASE WHEN status = 'ACTIVE' THEN feedback_outcome"
        " ELSE status END, status = 'ACTIVE' AND feedback_outcome = 'PENDING',"
        " uscc, entity_name, measure_text, feedback_due_at, raised_at, department_code",
    ),
    ItemSource(
        "sanction_notice",
        InboxKind.SANCTION_NOTICE,
        "sanction_notices",
        "event_id",
        "SELECT event_id, 'sanction_notice', 'NOTIFIED', true, uscc, entity_name,"
        " measure_text, NULL::timestamptz, notified_at, department_code",
    ),
    ItemSource(
        "licence_review_notice",
        InboxKind.LICENCE_REVIEW,
        "licence_review_notices",
        "event_id",
        "SELECT event_id, 'licence_review', 'NOTIFIED', true, uscc, entity_name, reason,"
        " NULL::timestamptz, notified_at, department_code",
    ),
    ItemSource(
        "lift_notice",
        InboxKind.LIFT_NOTICE,
        "lift_notices",
        "event_id",
        "SELECT event_id, 'lift_notice', 'NOTIFIED', true, uscc, entity_name, end_reason,"
        " NULL::timestamptz, notified_at, department_code",
    ),
    ItemSource(
        "entity_closure_notice",
        InboxKind.CLOSURE_NOTICE,
        "dual_notice_closure_notices",
        "event_id",
        "SELECT event_id, 'closure_notice', 'NOTIFIED', true, uscc, entity_name, closure,"
        " NULL::timestamptz, notified_at, department_code",
    ),
    ItemSource(
        "dual_notice_alert",
        InboxKind.ALERT,
        "dual_notice_alerts",
        "event_id",
        "SELECT event_id, 'alert', 'ACTIVE', true, uscc, NULL::text, message, deadline,"
        " raised_at, department_code",
    ),
    ItemSource(
        "feedback_overdue_alert",
        InboxKind.ALERT,
        "punishment_alerts",
        "event_id",
        "SELECT event_id, 'alert', status, status = 'ACTIVE', uscc, NULL::text, message,"
        " deadline, raised_at, department_code",
    ),
)

#: Every state an item can be in, by kind (what ``state=`` accepts).
STATES: dict[InboxKind, tuple[str, ...]] = {
    InboxKind.PUSH: (
        *OPEN_PUSH_STATES,
        "RETURNED",
        "REASSIGNED",
        "STOPPED",
        "FULFILLED",
        "CLOSED",
    ),
    InboxKind.HIT: ("PENDING", "APPLIED", "NOT_APPLICABLE", "NOT_REQUIRED", "WITHDRAWN"),
    InboxKind.SANCTION_NOTICE: ("NOTIFIED",),
    InboxKind.LICENCE_REVIEW: ("NOTIFIED",),
    InboxKind.LIFT_NOTICE: ("NOTIFIED",),
    InboxKind.CLOSURE_NOTICE: ("NOTIFIED",),
    InboxKind.ALERT: ("ACTIVE", "WITHDRAWN"),
}
ALL_STATES = tuple(sorted({state for states in STATES.values() for state in states}))

#: ``state=`` values that are not a state: the open items (the default), or every item.
OPEN, ANY = "open", "any"


class FilterError(ValueError):
    """A filter or cursor the API refuses (422), naming the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class InboxFilter:
    """Which items a page lists: kinds (None: all), states (None: ``open_only`` says),
    the business days the item was made on (inclusive), after which inbox offset."""

    kinds: tuple[InboxKind, ...] | None = None
    states: tuple[str, ...] | None = None
    open_only: bool = True
    since: date | None = None
    until: date | None = None
    after_offset: int = -1

    @classmethod
    def parse(
        cls,
        kind: str | None = None,
        state: str | None = None,
        since: date | None = None,
        until: date | None = None,
        cursor: str | None = None,
    ) -> InboxFilter:
        """The filter of the API's query parameters: ``kind`` and ``state`` are
        comma-separated lists (``state=open``, the default, or ``any``); FilterError names
        the parameter at fault."""
        kinds: tuple[InboxKind, ...] | None = None
        if kind:
            names = [k.value for k in InboxKind]
            kinds = tuple(InboxKind(_one_of("kind", part, names)) for part in _split(kind))
        states: tuple[str, ...] | None = None
        open_only = True
        if state and state not in (OPEN, ANY):
            allowed = ALL_STATES if kinds is None else sorted({s for k in kinds for s in STATES[k]})
            states = tuple(_one_of("state", part, [*allowed, OPEN, ANY]) for part in _split(state))
            if OPEN in states or ANY in states:
                raise FilterError("state", f"state {state!r}: give open, any, or states only")
            open_only = False
        elif state == ANY:
            open_only = False
        if since and until and since > until:
            raise FilterError("until", f"until {until} is before since {since}")
        after = -1 if cursor is None else decode_cursor(cursor)
        return cls(kinds, states, open_only, since, until, after)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _one_of(field: str, value: str, allowed: list[str]) -> str:
    if value not in allowed:
        raise FilterError(field, f"{field} {value!r} is not one of {', '.join(allowed)}")
    return value


# -- the cursor -----------------------------------------------------------------------------


def encode_cursor(offset: int) -> str:
    """The opaque cursor after the delivery at inbox ``offset``."""
    raw = json.dumps({"after": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> int:
    """The inbox offset a cursor of :func:`encode_cursor` stands for (FilterError if it is
    not one: a cursor is only ever given back as it was received)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = value["after"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise FilterError(
            "cursor",
            f"cursor {cursor[:40]!r} is not one this API gave: pass next_cursor as it came",
        ) from None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < -1:
        raise FilterError("cursor", f"cursor {cursor[:40]!r} holds no inbox offset")
    return offset


# -- the actions' ids -----------------------------------------------------------------------


def inbox_action_id(department_code: str, idempotency_key: str) -> str:
    """操作标识 of the action a department's ``Idempotency-Key`` names: a POST retried
    with the same key writes the same id, which the processors apply once."""
    return deterministic_id(f"inbox-action|{department_code}|{idempotency_key}")


#: What each action on a push makes of it when applied.
APPLIED_STATE = {"CLAIM": "CLAIMED", "RETURN": "RETURNED", "STOP": "STOPPED"}
