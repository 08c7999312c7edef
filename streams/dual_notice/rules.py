"""双告知 (dual notification) after 先照后证: every registration that needs a permit reaches
the approving department, which must claim it in time; the applicant is told which
permits it needs; the loop closes when the permit is issued (domain brief §5).

What it reads, all keyed by the entity's USCC and co-partitioned (``streams.runtime``):

* ``market.registrations``: a 设立, or a 变更 that adds permit-requiring scope, is matched
  against the approval catalog — its scope entries but those under 一般项目 (a wording, or
  the wording with a parenthesised qualifier) and its industry code; a 注销 or 吊销 closes
  the entity;
* ``permits.licences``: a licence for the entity and the item fulfils the push — if VALID,
  in its term on the day of the push's registration and issued after the entity's last
  注销/吊销 before that day (:func:`licence_fulfils`) — and is remembered for the 注销
  notice;
* ``dualnotice.actions``: what departments did, read from every department's own inbound
  topic ``dept.<code>.inbound`` (the broker lets only that department write it, so the
  acting department is the topic's, never a field) and re-keyed by USCC here;
* ``registry.approval-items`` and ``registry.departments``, as tables every worker holds
  whole: the catalog with its routes (事项+区划→部门), and the departments by code and USCC.

What it tells whom:

* **告知审批部门** — one :data:`push <schemas/avro/dual_notice_push.avsc>` per
  (registration, item, department) to ``dept.<code>.inbox``; its id is
  ``uuid5(registration | item | department)``, the registration being its business key
  (:func:`registration_key`: USCC, kind, day), so neither reprocessing nor the same
  registration re-published as a new version makes a second push;
  every change of state is republished on ``dualnotice.pushes`` for the sink and auditors,
  and reaches the department's inbox too unless the department made it itself (its
  claim, return or stop): a push FULFILLED, CLOSED, REASSIGNED, STOPPED by the
  registration authority, OVERDUE or UNLICENSED is followed there, so the inbox never
  reads PUSHED for a push that ended (history, sent to no inbox, stays so);
* **告知申请人** — one 告知书 per registration event on ``dualnotice.applicant-notices``:
  the items, their legal bases and the department granting each;
* **分流失败** — an item without a department for the entity's division goes to
  ``dualnotice.manual-routing``, never dropped, until the registration authority routes
  it by hand (``ROUTE`` from its inbound topic); and, while OPEN, it is on the
  **claimable list** ``dualnotice.claimable`` (compacted, keyed by routing id; a
  tombstone once it is routed, claimed or closed) for departments to find: a
  department's ``CLAIM`` naming the routing id makes the item its push, CLAIMED as it is
  made (routing CLAIMABLE); the first valid claim wins, a later one is rejected naming
  the winner;
* **督办** — on ``dualnotice.alerts`` and to the inboxes: an overdue push escalated once
  to its department and the registration authority; a claimed push still without a
  licence after the licence period, raised once to the department as an 无证经营 risk;
* **注销/吊销** — on ``dualnotice.closure-notices`` and to the inbox of every department
  that issued the entity a licence still valid;
* a department action that cannot be applied is recorded with its reason on
  ``dualnotice.rejected-actions`` and changes nothing.

The push and its states: each row is a state, each column what may move it (the push's
department "dept", or the registration authority "reg"), each cell where it goes::

                CLAIM     RETURN    STOP        REASSIGN     timer         licence    注销/吊销
                (dept)    (dept)    (dept/reg)  (reg)
    PUSHED      CLAIMED   RETURNED  STOPPED     REASSIGNED   OVERDUE ¹     FULFILLED  CLOSED
    OVERDUE     CLAIMED   RETURNED  STOPPED     REASSIGNED   ·             FULFILLED  CLOSED
    CLAIMED     ✗         ✗         STOPPED     ✗            UNLICENSED ²  FULFILLED  CLOSED
    UNLICENSED  ✗         ✗         STOPPED     ✗            ·             FULFILLED  CLOSED
    RETURNED    ✗         ✗         ✗           REASSIGNED   ·             ·          CLOSED
    REASSIGNED, STOPPED, FULFILLED, CLOSED: final, every action on them is rejected.

    ¹ at the claim deadline: 24:00 of the last day of the claim period (15 days by
      default, or working days) counted from the day after the registration, in the
      province; escalated once.  ² at the licence deadline: likewise, the licence period
      counted from the day after the claim; alerted once (``streams.dual_notice.settings``).
      REASSIGN makes a new PUSHED push to the target department (routing REASSIGNED)
      with a fresh claim period; ROUTE turns an OPEN 分流失败 record into ROUTED and
      makes a PUSHED push (routing MANUAL). A push made while the entity holds a licence
      for the item that fulfils it is FULFILLED at once.
    ✗: rejected with the reason, as is any action by a department that is neither the
      push's department nor, where allowed, the registration authority, and any action
      whose ``acted_at`` is before the push was made (in event time: its registration, or
      the REASSIGN or ROUTE that made it) or later than now plus
      ``action_clock_skew`` (5 minutes): its deadlines would run from a time that never was.

**The entity's own event order.** Its registration events are applied in business order
(their day, then 设立 < 变更 < 迁出 < 注销/吊销 on one day), whatever order they are read
in (:meth:`DualNoticeRules._apply_registration`): a 注销/吊销 closes what the
registrations before it opened, and a 设立 read after its 注销 makes its pushes CLOSED at
once (recorded, sent to no inbox); a 变更 pushes what it adds to the registration before
it, and a 设立 read after its 变更 takes back (REASSIGNED, reason
``由更早的登记替代…``) the 变更's pushes of what the 设立 needed already; 迁出 closes the
open pushes, saying so (no closure notice: its licences are not ended by the move); a
住所 in another division moves each open push not yet claimed (PUSHED, OVERDUE,
RETURNED) to the new division's department, REASSIGNED by the platform, its department
told. A closure re-published (a new event id, the same business key) sends nothing.
Still read in arrival order: department actions and licences (an action dated before a
注销 read before it is judged against the closed push).

Time is event time: deadlines run from the registration's event time and from the
claim's ``acted_at``, so a replay of history gives the same deadlines. A push and a
分流失败 record carry both time bases, each named: ``pushed_at``, ``failed_at`` and
``state_changed_at`` are when it happened in the business (the registration, the
action's ``acted_at``, the deadline passed, the licence's or the 注销's event time),
``push_recorded_at``, ``failure_recorded_at`` and ``state_recorded_at`` when the platform
decided it (the processor's clock). In neither base is a change before the push: a
licence dated before the platform saw the registration fulfils the push as it is made;
in platform time every change follows the one before. A timer compares
them with the clock every ``tick_interval`` seconds and sends each due push through the
internal topic ``xietong.streams.dual-notice-due``, keyed by USCC, so the change is made
by an agent on the push's own partition like every other change. The same topic
carries the pushes waiting for a department onboarded since (its inbox now exists).

**A province's first day.** With a cut-over (``history_until``, ``--history-until``), a
deadline at or before it is history: a push whose claim deadline passed by the cut-over
is published on ``dualnotice.pushes`` only and turns OVERDUE there at the tick, with no
alert and no inbox; a claim whose licence deadline passed by then turns UNLICENSED
likewise; a 注销/吊销 dated by then is a closure notice on its topic only. A push still
open at the cut-over (its deadline after it) is live: made before a cut-over still to
come, it is held (``held``) and delivered through the due topic at the cut-over
(``streams/README.md``).

Guarantee: at least once, with deterministic ids, which makes the result effectively
once for a reader that keeps the latest record per id. Offsets are committed only after
everything produced for the events before them (outputs and table changelogs) is
acknowledged; after a crash the events since the last commit are processed again
against state that may already hold them, and every change remembers the event that
made it, so a reprocessed event re-sends what it had sent (same ids, same content)
instead of changing anything twice. A registration, a licence or a department action
sent again (the same event id or action id) arrives at a new offset, unlike a
reprocessed one: the entity's state keeps where each was first read (``read``), and one
read elsewhere sends nothing.

The rules are pure (:class:`DualNoticeRules`: plain values in, a
:class:`DualNoticeOutput` out, the time passed in); :mod:`streams.dual_notice.app` is the
Faust app around them. Run it with ``xietong streams dual-notice``; settings are
``XIETONG_DUAL_NOTICE_*`` (:mod:`streams.dual_notice.settings`).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from streams.directory import DepartmentDirectory
from streams.dual_notice.settings import DualNoticeSettings
from streams.outputs import RuleOutput
from xietong.clock import business_clock, millis
from xietong.ids import deterministic_id
from xietong.logs import log_event
from xietong.versions import is_later, version_of

logger = logging.getLogger(__name__)

APP_NAME = "dual-notice"
#: Who changed a push when no department did (a deadline, a licence, a 注销).
PLATFORM = "platform"

# -- ids: derived from what caused a record, never from when it was made ----------------


def registration_key(entity: dict[str, Any]) -> str:
    """登记业务标识 of the registration a push is made for: USCC | event kind | the day it
    took effect (in the province). Its versions (a correction re-published with a new event
    id) share it, so they make the same pushes, never a second one per item."""
    day = business_clock().day_of(entity["registered_at"]).isoformat()
    return f"{entity['uscc']}|{entity['event_kind']}|{day}"


def push_id(registration: str, item_code: str, department_code: str) -> str:
    """推送标识 of the push of ``item_code`` to a department for a registration (its
    :func:`registration_key`)."""
    return deterministic_id(f"dual-notice-push|{registration}|{item_code}|{department_code}")


def routing_id(registration: str, item_code: str) -> str:
    """标识 of the 分流失败 record of an item of a registration (its
    :func:`registration_key`)."""
    return deterministic_id(f"dual-notice-routing|{registration}|{item_code}")


def applicant_notice_id(registration: str) -> str:
    return deterministic_id(f"dual-notice-applicant-notice|{registration}")


def alert_id(push: str, kind: AlertKind) -> str:
    return deterministic_id(f"dual-notice-alert|{push}|{kind}")


def closure_notice_id(closure: str, department_code: str) -> str:
    """标识 of the 注销/吊销 notice to a department; ``closure`` is the closure's business
    key (USCC | 注销 or 吊销 | its day), so a closure re-published tells nobody twice."""
    return deterministic_id(f"dual-notice-closure|{closure}|{department_code}")


# -- the catalog (后置审批事项目录) and the departments, as the registry publishes them ------


@dataclass(frozen=True)
class CatalogItem:
    """One approval item: what the applicant and the department are told, and its routes."""

    code: str
    name: str
    legal_basis: str
    certificate_name: str
    routes: dict[str, dict[str, str]]  # division → DepartmentRef

    @property
    def ref(self) -> dict[str, str]:
        return {
            "code": self.code,
            "name": self.name,
            "legal_basis": self.legal_basis,
            "certificate_name": self.certificate_name,
        }


@dataclass(frozen=True)
class Match:
    """An item a registration needs, and what in the registration said so."""

    item: CatalogItem
    matched_by: tuple[str, ...]


#: The enumeration comma between wordings of one scope entry, outside a qualifier.
_ENUMERATION = re.compile(r"、(?![^（(]*[)）])")


class ApprovalCatalog:
    """The approval items with their matching rules, indexed for matching.

    A scope entry, or a part of it between enumeration commas (、), matches a wording it
    equals, or the wording followed by a parenthesised qualifier: "危险化学品经营（不含仓储）"
    needs 危险化学品经营许可, "食品销售、烟草制品零售" needs two items. An industry
    code listed for an item matches it too, a second signal beside the scope. Only the
    entries :func:`entries_to_match` picks are matched: an entry under an explicit 一般项目
    heading, such as "食品销售（仅销售预包装食品）", needs no permit.
    """

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.items: dict[str, CatalogItem] = {}
        self._by_wording: dict[str, list[CatalogItem]] = defaultdict(list)
        self._by_industry: dict[str, list[CatalogItem]] = defaultdict(list)
        self._by_certificate: dict[str, CatalogItem] = {}
        for record in records:
            item = CatalogItem(
                record["code"],
                record["name"],
                record["legal_basis"],
                record["certificate_name"],
                {
                    route["division_code"]: {
                        "code": route["department_code"],
                        "uscc": route["department_uscc"],
                        "name": route["department_name"],
                    }
                    for route in record["routes"]
                },
            )
            self.items[item.code] = item
            for wording in record["scope_wordings"]:
                self._by_wording[wording].append(item)
            for industry in record["industry_codes"]:
                self._by_industry[industry].append(item)
            self._by_certificate[item.certificate_name] = item

    def __len__(self) -> int:
        return len(self.items)

    def match(self, permit_entries: Iterable[str], industry_code: str) -> list[Match]:
        """The items a scope and an industry code need, by item code, each once."""
        reasons: dict[str, list[str]] = defaultdict(list)
        for entry in permit_entries:
            for item in self._items_for_entry(entry):
                reasons[item.code].append(f"经营范围: {entry}")
        for item in self._by_industry.get(industry_code, ()):
            reasons[item.code].append(f"行业代码: {industry_code}")
        return [Match(self.items[code], tuple(reasons[code])) for code in sorted(reasons)]

    def _items_for_entry(self, entry: str) -> Iterator[CatalogItem]:
        # "食品销售、烟草制品零售" is two wordings; "广告设计、代理" is one standard wording
        # whose parts match nothing, so reading the parts as well costs nothing.
        for wording in dict.fromkeys([entry, *_ENUMERATION.split(entry)]):
            yield from self._by_wording.get(wording, ())
            for position, character in enumerate(wording):
                if character in "（(" and position:
                    yield from self._by_wording.get(wording[:position], ())

    def item_for_licence(self, licence: dict[str, Any]) -> CatalogItem | None:
        """The item a licence grants: its 审批事项编码, else (no code, or one the catalog
        does not hold, such as a national code) its certificate's name."""
        item = self.items.get(licence.get("approval_item_code") or "")
        return item or self._by_certificate.get(licence.get("certificate_name") or "")


def entries_to_match(scope_items: Iterable[dict[str, Any]]) -> list[str]:
    """The texts of the scope entries that may need a permit, each once, sorted.

    A 许可项目 (PERMIT) entry, and one whose kind the registration does not say (UNKNOWN:
    free text under no heading, an item of a list): a permit missed is 无证经营 nobody is
    told of, while a push for an item not involved is only returned (退回) by its
    department. Only an entry the registration itself lists under 一般项目 is left out.
    """
    return sorted({item["text"] for item in scope_items if item["kind"] != "GENERAL"})


# -- the push, its states and what may move it ----------------------------------------------


def licence_fulfils(licence: dict[str, Any], push: dict[str, Any], state: dict[str, Any]) -> bool:
    """Whether a licence the entity holds (as the rules keep it: days as ordinals) fulfils a
    push of its item: it is VALID, its 有效期至 is not before the day the push's
    registration took effect, and it was not issued before a 注销/吊销 of the entity on or
    before that day (a re-registered entity needs its permits anew; ``state["closures"]``
    holds the entity's closure days). An entry kept by an earlier worker has no
    ``decided_on`` and is taken as issued to the entity as it is registered now."""
    registered_on = business_clock().day_of(push["entity"]["registered_at"]).toordinal()
    if licence["status"] != "VALID":
        return False
    if licence["valid_to"] is not None and licence["valid_to"] < registered_on:
        return False
    decided_on = licence.get("decided_on")
    return decided_on is None or not any(
        decided_on <= closed_on <= registered_on for closed_on in state.get("closures", ())
    )


class PushState(StrEnum):
    PUSHED = "PUSHED"  # 已推送，待认领
    OVERDUE = "OVERDUE"  # 逾期未认领 (escalated)
    CLAIMED = "CLAIMED"  # 已认领
    RETURNED = "RETURNED"  # 已退回
    REASSIGNED = "REASSIGNED"  # 已重新指派 (another push replaced it)
    STOPPED = "STOPPED"  # 已终止推送 (item not involved)
    UNLICENSED = "UNLICENSED"  # 认领后逾期未发证: 无证经营 risk alerted
    FULFILLED = "FULFILLED"  # 已发证
    CLOSED = "CLOSED"  # 主体已注销或吊销


class ActionKind(StrEnum):
    CLAIM = "CLAIM"  # 认领
    RETURN = "RETURN"  # 退回
    REASSIGN = "REASSIGN"  # 重新指派 (registration authority only)
    STOP = "STOP"  # 终止推送
    ROUTE = "ROUTE"  # 手动分流 (registration authority only, on a 分流失败 record)


class AlertKind(StrEnum):
    OVERDUE = "OVERDUE"  # 逾期未认领
    UNLICENSED_TRADING = "UNLICENSED_TRADING"  # 疑似无证经营


class Deadline(StrEnum):
    CLAIM = "CLAIM"  # 认领期限 → OVERDUE
    LICENCE = "LICENCE"  # 发证期限 → UNLICENSED


#: Due, besides deadlines: a push whose department had no inbox when it was made.
DELIVERY = "DELIVERY"


#: For each action: the states it may leave, the state it leads to, and who may take it
#: ("department": the push's own department; "registrar": the registration authority).
ACTIONS: dict[ActionKind, tuple[frozenset[PushState], PushState, frozenset[str]]] = {
    ActionKind.CLAIM: (
        frozenset({PushState.PUSHED, PushState.OVERDUE}),
        PushState.CLAIMED,
        frozenset({"department"}),
    ),
    ActionKind.RETURN: (
        frozenset({PushState.PUSHED, PushState.OVERDUE}),
        PushState.RETURNED,
        frozenset({"department"}),
    ),
    ActionKind.STOP: (
        frozenset({PushState.PUSHED, PushState.OVERDUE, PushState.CLAIMED, PushState.UNLICENSED}),
        PushState.STOPPED,
        frozenset({"department", "registrar"}),
    ),
    ActionKind.REASSIGN: (
        frozenset({PushState.PUSHED, PushState.OVERDUE, PushState.RETURNED}),
        PushState.REASSIGNED,
        frozenset({"registrar"}),
    ),
}
#: States in which the department still owes something: a licence fulfils them.
AWAITING_LICENCE = frozenset(
    {PushState.PUSHED, PushState.OVERDUE, PushState.CLAIMED, PushState.UNLICENSED}
)
#: States a 注销/吊销 closes.
OPEN = AWAITING_LICENCE | {PushState.RETURNED}
RETURN_REASONS = {
    "NO_SUCH_ITEM": "经营范围内无此审批事项",
    "SCOPE_NOT_IN_JURISDICTION": "经营范围不在审批部门的管辖范围内",
    "ADDRESS_NOT_IN_JURISDICTION": "地址不在审批部门的管辖范围内",
    "OTHER": "其他",
}


#: States in which a push may be moved by the platform to the department of the entity's
#: new division (a 住所 change): not yet claimed, nor ended.
REROUTABLE = frozenset({PushState.PUSHED, PushState.OVERDUE, PushState.RETURNED})
#: The business order of registration events on one day: 设立, 变更, 迁出, 注销/吊销.
RANK = {"ESTABLISH": 0, "CHANGE": 1, "MOVED_OUT": 2, "CANCELLED": 3, "REVOKED": 3}
#: How the reason of a push the platform replaced by an earlier registration's begins.
SUPERSEDED = "由更早的登记替代"


def closure_kind(registration: dict[str, Any]) -> str | None:
    """CANCELLED (注销), REVOKED (吊销) or MOVED_OUT (迁出) if the registration event ends
    the entity in this province; None otherwise."""
    status = registration["status"]
    if status in ("REVOKED", "MOVED_OUT"):
        return str(status)
    if registration["event_kind"] == "CANCEL" or status == "CANCELLED":
        return "CANCELLED"
    return None


def _event_order(event: dict[str, Any]) -> tuple[int, int, str]:
    """A registration event's place in the entity's business order: its day's instant, its
    kind's rank that day, its business key (deterministic, never a uuid)."""
    return (int(event["at"]), int(event["rank"]), str(event["key"]))


def _entry_order(entry: dict[str, Any]) -> tuple[int, int]:
    """Where a push was made in the entity's business order (an entry kept by an earlier
    worker has none: before every event)."""
    made = entry.get("order")
    return (-1, -1) if made is None else (int(made[0]), int(made[1]))


def _scope_args(scope: dict[str, Any]) -> tuple[list[str], str]:
    return scope["permit_entries"], scope["industry_code"]


def _day(moment: int) -> str:
    return business_clock().day_of(moment).isoformat()


class Rejected(Exception):
    """A department action that cannot be applied; the message says why."""

    def __init__(self, reason: str, push_state: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.push_state = push_state


# -- what one event makes the processor send -----------------------------------------------


@dataclass
class DualNoticeOutput(RuleOutput):
    """What handling one event sends, and the deadlines it starts: (due at, USCC, push
    id, which deadline, or DELIVERY at the cut-over)."""

    deadlines: list[tuple[int, str, str, str]] = field(default_factory=list)


# -- metrics ----------------------------------------------------------------------------------

PUSHES = Gauge(
    "xietong_dual_notice_pushes",
    "双告知 pushes held by this worker, by department and state",
    ("department", "state"),
)
PUSHES_CREATED = Counter(
    "xietong_dual_notice_pushes_created", "Pushes made, by routing (AUTO, MANUAL …)", ("routing",)
)
CLAIM_LATENCY = Histogram(
    "xietong_dual_notice_claim_latency_seconds",
    "From the push to its claim (event time)",
    buckets=(1, 10, 60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 15 * 86400, 30 * 86400),
)
OVERDUE_PUSHES = Gauge(
    "xietong_dual_notice_overdue_pushes", "Pushes not claimed by their deadline (OVERDUE) now"
)
MANUAL_ROUTING_QUEUE = Gauge(
    "xietong_dual_notice_manual_routing_queue",
    "分流失败 records waiting for the registration authority to route them",
)
ACTIONS_APPLIED = Counter(
    "xietong_dual_notice_actions_applied", "Department actions applied", ("action",)
)
ACTIONS_REJECTED = Counter(
    "xietong_dual_notice_actions_rejected", "Department actions rejected", ("action",)
)
ALERTS_RAISED = Counter("xietong_dual_notice_alerts", "Escalations and risk alerts", ("kind",))
REGISTRATIONS_READ = Counter(
    "xietong_dual_notice_registrations", "Registration events processed", ("event_kind",)
)
CLAIMABLE_CLAIMS = Counter(
    "xietong_dual_notice_claimable_claims",
    "Claims (认领) of 分流失败 items from the claimable list, by outcome: claimed (the item"
    " became the department's push), taken (rejected: another department's claim won"
    " first), closed (rejected: routed by hand or the entity closed)",
    ("outcome",),
)
INPUTS_SENT_AGAIN = Counter(
    "xietong_dual_notice_inputs_sent_again",
    "Input events (registrations, licences) read again at a new offset, sent again by"
    " their department: nothing is sent for them, by record type",
    ("record_type",),
)
REGISTRATION_VERSIONS = Counter(
    "xietong_dual_notice_registration_versions",
    "Registration events with the business key (USCC, kind, day) of one known: a later"
    " version updates its pushes (applied), an earlier one or a closure re-published sends"
    " nothing (ignored)",
    ("outcome",),
)
REROUTED = Counter(
    "xietong_dual_notice_pushes_rerouted",
    "Open pushes moved by the platform to the department of the entity's new division (住所变更)",
)
HISTORY = Counter(
    "xietong_dual_notice_history",
    "Outputs taken as the province's history (before the cut-over): recorded on the"
    " platform topics, sent to no inbox and alerted to nobody, by output",
    ("output",),
)


# -- the records it makes ----------------------------------------------------------------------


def registered_entity(registration: dict[str, Any], registrar_code: str | None) -> dict[str, Any]:
    """The registration as a push, a notice or an alert shows it (RegisteredEntity)."""
    return {
        "registration_event_id": registration["envelope"]["event_id"],
        "event_kind": registration["event_kind"],
        "registered_at": millis(registration["envelope"]["event_time"]),
        "uscc": registration["uscc"],
        "name": registration["name"],
        "entity_type": registration["entity_type"],
        "legal_representative": registration["legal_representative"],
        "address": registration["address"],
        "division_code": registration["division_code"],
        "business_scope": registration["business_scope"],
        "industry_code": registration["industry_code"],
        "registering_authority_name": registration["registering_authority_name"],
        "registering_authority_uscc": registration["registering_authority_uscc"],
        "registrar_code": registrar_code,
    }


@dataclass(frozen=True)
class PushOrder:
    """A push to make: of which item, for which registered entity (and what in its
    registration needs the item), to which department, routed how (AUTO, REASSIGNED,
    MANUAL, CLAIMABLE), its claim period starting when (``starts_at``, business time: the
    push's ``pushed_at``), and the push it replaces, if any. A CLAIMABLE push is made by
    its department's claim of a 分流失败 item: it is CLAIMED as it is made, at
    ``starts_at``."""

    entity: dict[str, Any]
    item: dict[str, str]
    matched_by: list[str]
    department: dict[str, str]
    routing: str
    starts_at: int
    reassigned_from: str | None = None

    @classmethod
    def routed(cls, entity: dict[str, Any], match: Match, department: dict[str, str]) -> PushOrder:
        """A matched item for the department the catalog's route names (AUTO), its claim
        period starting at the registration."""
        matched_by = list(match.matched_by)
        return cls(entity, match.item.ref, matched_by, department, "AUTO", entity["registered_at"])

    @classmethod
    def elsewhere(
        cls,
        record: dict[str, Any],
        department: dict[str, str],
        routing: str,
        starts_at: int,
        reassigned_from: str | None = None,
    ) -> PushOrder:
        """The item of ``record`` (a push, or a 分流失败 record) for another department."""
        return cls(
            record["entity"],
            record["item"],
            record["matched_by"],
            department,
            routing,
            starts_at,
            reassigned_from,
        )

    @property
    def push_id(self) -> str:
        return push_id(registration_key(self.entity), self.item["code"], self.department["code"])


def new_push(
    order: PushOrder, *, claim_deadline: int, licence_deadline: int, recorded_at: int
) -> dict[str, Any]:
    """A push just made (version 1): the DualNoticePush record, PUSHED (CLAIMED if its
    department made it by claiming a 分流失败 item; ``licence_deadline`` is read then).

    Two time bases, each instant named for its own: ``pushed_at`` and
    ``state_changed_at`` are business time (``order.starts_at``: the registration, or the
    action that made the push), ``push_recorded_at`` and ``state_recorded_at`` the
    platform's (``recorded_at``: the processor's clock as it made the push)."""
    claimed = order.routing == "CLAIMABLE"
    return {
        "push_id": order.push_id,
        "version": 1,
        "state": PushState.CLAIMED if claimed else PushState.PUSHED,
        "routing": order.routing,
        "entity": order.entity,
        "item": order.item,
        "matched_by": order.matched_by,
        "department": order.department,
        "pushed_at": order.starts_at,
        "push_recorded_at": recorded_at,
        "claim_deadline": claim_deadline,
        "claimed_at": order.starts_at if claimed else None,
        "licence_deadline": licence_deadline if claimed else None,
        "escalated_at": None,
        "unlicensed_alert_at": None,
        "return_reason": None,
        "reason_text": None,
        "fulfilled_by_licence": None,
        "reassigned_to_push_id": None,
        "reassigned_from_push_id": order.reassigned_from,
        "state_changed_at": order.starts_at,
        "state_recorded_at": recorded_at,
        "changed_by": order.department["code"] if claimed else PLATFORM,
    }


# -- the rules ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DualNoticeRules:
    """The rule methods: each takes one input and the time (epoch ms), updates the
    entity's state and returns what to send.

    The state is three mappings by USCC (Faust tables in the app, dicts in a test):

    * ``registered_scopes``: the entity's latest 许可项目 entries and industry code (a
      变更 is compared with them), the event that set them and the ones before (of the
      versions of one registration record, the later: :func:`xietong.versions.is_later`);
    * ``pushes``: the entity's pushes and 分流失败 records, each with the event that last
      changed it and the department actions applied to it;
    * ``licences``: the licences the entity holds, by issuing authority and number (the
      later version of each, :func:`xietong.versions.is_later`).

    Besides the state they read only the catalog, the departments and which departments
    have an inbox, so a harness drives them with dicts and a fixed catalog
    (``tests/unit/test_dual_notice_rules.py``).
    """

    registered_scopes: MutableMapping[str, Any]
    pushes: MutableMapping[str, Any]
    licences: MutableMapping[str, Any]
    catalog: Callable[[], ApprovalCatalog]
    directory: Callable[[], DepartmentDirectory]
    has_inbox: Callable[[str], bool]
    settings: DualNoticeSettings = field(default_factory=DualNoticeSettings)

    # -- 设立 / 变更 / 注销 ---------------------------------------------------------------------

    def on_registration(
        self, registration: dict[str, Any], now: int, *, read_at: str | None = None
    ) -> DualNoticeOutput:
        """A registration event: match, route and push (设立, 变更 adding scope), or close
        the entity and tell its licensing departments (注销, 吊销).

        ``read_at`` is where the worker read it: see :meth:`_unless_sent_again`."""
        return self._unless_sent_again(
            "registration", registration, now, read_at, self._apply_registration
        )

    def _unless_sent_again(
        self,
        record_type: str,
        event: dict[str, Any],
        now: int,
        read_at: str | None,
        apply: Callable[[dict[str, Any], int], DualNoticeOutput],
    ) -> DualNoticeOutput:
        """``apply`` an input event (a registration, a licence), unless it was sent again.

        ``read_at`` is where the worker read it (topic|partition|offset). The same event
        (its event id) read at another position is one a department sent again: what it
        made was sent the first time, so it sends nothing. Read again at the same position
        it is being reprocessed after a crash, before its offset was committed: it sends
        again what it sent (at least once, the same ids)."""
        uscc, event_id = event["uscc"], event["envelope"]["event_id"]
        known = self.pushes.get(uscc)
        first_read_at = None if known is None else known.get("read", {}).get(event_id)
        if read_at is not None and first_read_at not in (None, read_at):
            INPUTS_SENT_AGAIN.labels(record_type).inc()
            log_event(
                logger,
                "dual_notice_input_sent_again",
                record_type=record_type,
                event_id=event_id,
                uscc=uscc,
                first_read_at=first_read_at,
                read_at=read_at,
            )
            return DualNoticeOutput()
        outcome = apply(event, now)
        if read_at is not None and first_read_at is None and outcome.outgoing:
            state = self._state(uscc)
            state.setdefault("read", {})[event_id] = read_at
            self.pushes[uscc] = state
        return outcome

    def _apply_registration(self, registration: dict[str, Any], now: int) -> DualNoticeOutput:
        """What :meth:`on_registration` does with an event not sent before.

        The entity's registration events are applied in their own order (the business
        order: their day, then 设立 < 变更 < 迁出 < 注销/吊销), whatever order they are read
        in: each is kept in the entity's state (``registrations``, by business key: USCC,
        kind, day), so one read late takes effect as if read in its place —

        * a 注销/吊销 (or 迁出) closes the pushes of the registrations before it, and a 设立
          read after its 注销 makes its pushes CLOSED at once, told to nobody;
        * a 变更 pushes what it adds to the registration before it in that order; a 设立
          read after its 变更 makes its own pushes, and the 变更's pushes of what the 设立
          needed already are REASSIGNED to them (:meth:`_register`);
        * a 变更 of 住所 to another division re-routes the open pushes to the departments
          of the new division (:meth:`_follow`);
        * another version of a registration known (a new event id, the same business key)
          makes the same pushes: a later version updates them, an earlier one, or a
          closure re-published, sends nothing.
        """
        outcome = DualNoticeOutput()
        kind = registration["event_kind"]
        REGISTRATIONS_READ.labels(kind).inc()
        event_id = registration["envelope"]["event_id"]
        uscc = registration["uscc"]
        scope = {
            "permit_entries": entries_to_match(registration["business_scope_items"]),
            "industry_code": registration["industry_code"],
        }
        needed = self.catalog().match(scope["permit_entries"], scope["industry_code"])
        known = self.registered_scopes.get(uscc)
        if known is not None and known["event_id"] == event_id:
            previous = known["previous"]  # this event again: compare as the first time
        else:
            previous = None if known is None else known["scope"]
        # An entity whose scope needs no permit is not remembered: no entry means "needed
        # nothing", which is all a later 变更 compares with (and most entities need none).
        # An older version of the record that set the scope read after it (a correction
        # read first) leaves the correction's scope.
        envelope = registration["envelope"]
        source_record = f"{envelope['source_department_uscc']}|{envelope['source_record_id']}"
        version = version_of(registration)
        superseded = (
            known is not None
            and known["event_id"] != event_id
            and known.get("source_record") == source_record
            and not is_later(version, known["version"])
        )
        if (needed or known is not None) and not superseded:
            self.registered_scopes[uscc] = {
                "event_id": event_id,
                "scope": scope,
                "previous": previous,
                "source_record": source_record,
                "version": version,
            }

        closure = closure_kind(registration)
        if closure is None and not needed and self.pushes.get(uscc) is None:
            return outcome  # most entities need no permit: nothing of theirs is kept
        entity = self._entity(registration)
        label = closure or kind
        day = business_clock().day_of(entity["registered_at"]).isoformat()
        event = {
            "key": f"{uscc}|{label}|{day}",
            "event_id": event_id,
            "version": version,
            "at": entity["registered_at"],
            "rank": RANK.get(label, RANK["CHANGE"]),
            "kind": kind,
            "closure": closure,
            "division": registration["division_code"],
            "scope": scope,
            "entity": entity,
        }
        state = self._state(uscc)
        events = state.setdefault("registrations", {})
        same = events.get(event["key"])
        if same is not None and same["event_id"] != event_id:
            if closure is not None or not is_later(version, same["version"]):
                REGISTRATION_VERSIONS.labels("ignored").inc()
                log_event(
                    logger,
                    "dual_notice_registration_version_ignored",
                    event_id=event_id,
                    uscc=uscc,
                    key=event["key"],
                    kept_event_id=same["event_id"],
                )
                return outcome
            REGISTRATION_VERSIONS.labels("applied").inc()
        events[event["key"]] = event
        self.pushes[uscc] = state

        if closure is not None:
            self._close_entity(registration, event, state, outcome, now)
        elif kind in ("ESTABLISH", "CHANGE"):
            before = self._before(state, event)
            if before is None and known is not None and not self._known_event(state, known):
                before = {"scope": known["scope"]}  # set by a worker before the order was kept
            self._register(state, event, before, outcome, now)
        self.pushes[uscc] = state  # a table holds what it is given, not what changes after
        return outcome

    def _entity(self, registration: dict[str, Any]) -> dict[str, Any]:
        authority = self.directory().by_uscc.get(registration["registering_authority_uscc"])
        return registered_entity(registration, authority["code"] if authority else None)

    # -- the entity's registration events in their own order ----------------------------------

    @staticmethod
    def _known_event(state: dict[str, Any], scope_entry: dict[str, Any]) -> bool:
        return any(
            event["event_id"] == scope_entry["event_id"]
            for event in state.get("registrations", {}).values()
        )

    @staticmethod
    def _ordered(state: dict[str, Any]) -> list[dict[str, Any]]:
        """The entity's registration events in business order."""
        return sorted(state.get("registrations", {}).values(), key=_event_order)

    def _before(self, state: dict[str, Any], event: dict[str, Any]) -> dict[str, Any] | None:
        """The 设立 or 变更 the entity's scope came from just before ``event``, if known."""
        earlier = [
            known
            for known in self._ordered(state)
            if known["closure"] is None
            and known["kind"] in ("ESTABLISH", "CHANGE")
            and _event_order(known) < _event_order(event)
        ]
        return earlier[-1] if earlier else None

    def _after(self, state: dict[str, Any], order: tuple[int, int]) -> list[dict[str, Any]]:
        """The registration events known after ``order`` (an instant and a rank)."""
        return [known for known in self._ordered(state) if _event_order(known)[:2] > order]

    def _added(self, event: dict[str, Any], before: dict[str, Any] | None) -> list[Match]:
        """What ``event`` needs that the registration before it did not (all it needs for a
        设立, or when nothing before it is known: registered before the platform)."""
        scope = event["scope"]
        needed = self.catalog().match(scope["permit_entries"], scope["industry_code"])
        if event["kind"] != "CHANGE" or before is None:
            return needed
        earlier = before["scope"]
        had = {m.item.code for m in self.catalog().match(*_scope_args(earlier))}
        return [match for match in needed if match.item.code not in had]

    def _register(
        self,
        state: dict[str, Any],
        event: dict[str, Any],
        before: dict[str, Any] | None,
        outcome: DualNoticeOutput,
        now: int,
    ) -> None:
        """A 设立 or 变更 in its place among the entity's events: it moves the pushes before
        it (a 住所 in another division), pushes what it adds, and corrects the 变更 after
        it that was read first and so pushed what this one needed already."""
        for entry in list(state["pushes"].values()):
            if _entry_order(entry) < _event_order(event)[:2]:
                self._follow(state, entry, event, outcome, now)
        needed = self._added(event, before)
        successor = next(
            (
                known
                for known in self._after(state, _event_order(event)[:2])
                if known["closure"] is None and known["kind"] in ("ESTABLISH", "CHANGE")
            ),
            None,
        )
        withdraw: list[dict[str, Any]] = []
        if successor is not None and successor["kind"] == "CHANGE":
            adding = {match.item.code for match in self._added(successor, event)}
            key = registration_key(successor["entity"])
            kept = set()
            for entry in state["pushes"].values():
                record = entry["record"]
                if (
                    record["routing"] != "AUTO"
                    or registration_key(record["entity"]) != key
                    or record["item"]["code"] in adding
                ):
                    continue
                closed = record["state"] == PushState.CLOSED and record["changed_by"] == PLATFORM
                if PushState(record["state"]) in REROUTABLE or closed:
                    withdraw.append(entry)
                else:  # its department acted on it already: it stands for this one's
                    kept.add(record["item"]["code"])
            needed = [match for match in needed if match.item.code not in kept]
        if needed:
            self._notify(state, event["entity"], needed, outcome, now)
        if successor is None or successor["kind"] != "CHANGE":
            return
        targets = {entry["record"]["reassigned_to_push_id"] for entry in state["pushes"].values()}
        for entry in withdraw:
            record = entry["record"]
            if record["push_id"] in targets:  # this one's push, moved to its division
                entry["rerouted"] = True
                continue
            replacement = push_id(
                registration_key(event["entity"]),
                record["item"]["code"],
                record["department"]["code"],
            )
            fields: dict[str, Any] = {
                "reassigned_to_push_id": replacement if replacement in state["pushes"] else None,
                "reason_text": f"{SUPERSEDED}：该事项{_day(event['at'])}登记时已需要，"
                f"由推送 {replacement} 办理",
            }
            if record["state"] != PushState.CLOSED:
                self._change(
                    entry,
                    PushState.REASSIGNED,
                    event["event_id"],
                    record["state_changed_at"],
                    now,
                    PLATFORM,
                    outcome,
                    REROUTABLE,
                    **fields,
                )
                continue
            # Closed with the entity already (its department was told): it stays CLOSED
            # and says which push replaced it, on the platform topic.
            if entry["cause"] != event["event_id"]:
                record.update(version=record["version"] + 1, **fields)
                entry["cause"] = event["event_id"]
            outcome.send("dual_notice_push", record["entity"]["uscc"], record)
        adds = self._added(successor, event)
        if adds or withdraw:  # its 告知书 corrected: what it adds to this one
            self._notify(state, successor["entity"], adds, outcome, now, resend=False)

    def _follow(
        self,
        state: dict[str, Any],
        entry: dict[str, Any],
        event: dict[str, Any],
        outcome: DualNoticeOutput,
        now: int,
    ) -> bool:
        """Apply a registration event to a push made before it: a 注销/吊销 or 迁出 closes
        it; a 变更 of 住所 to a division whose department for the item is another moves
        an open push (not yet claimed) there, REASSIGNED by the platform. True if the push
        is changed by it (now or before)."""
        record = entry["record"]
        if event["closure"] is not None:
            fields: dict[str, Any] = {}
            if event["closure"] == "MOVED_OUT":
                fields["reason_text"] = (
                    f"{event['entity']['name']}已于{_day(event['at'])}迁出本省（迁出），推送终止"
                )
            was = record["state"]
            if self._change(
                entry, PushState.CLOSED, event["event_id"], event["at"], now, PLATFORM, outcome,
                OPEN,
                **fields,
            ) and was != PushState.CLOSED:  # fmt: skip
                entry["closed"] = {"from": was, "order": list(_event_order(event)[:2])}
            return bool(entry["cause"] == event["event_id"])
        rerouted = record["routing"] == "AUTO" or entry.get("rerouted", False)
        if event["kind"] != "CHANGE" or not rerouted:
            return False
        # Closed by a 注销 that came after this move (read before it): moved first, as then.
        closed = entry.get("closed") or {}
        allowed = REROUTABLE
        if closed.get("from") in REROUTABLE and tuple(closed["order"]) > _event_order(event)[:2]:
            allowed = REROUTABLE | {PushState.CLOSED}
        if entry["cause"] != event["event_id"] and PushState(record["state"]) not in allowed:
            return False
        item = self.catalog().items.get(record["item"]["code"])
        target = None if item is None else item.routes.get(event["division"])
        if target is None or target["code"] == record["department"]["code"]:
            return False
        order = PushOrder(
            event["entity"],
            record["item"],
            record["matched_by"],
            dict(target),
            "REASSIGNED",
            event["at"],
            reassigned_from=record["push_id"],
        )
        replacement = order.push_id
        made = state["pushes"].get(replacement)
        # Made by this 变更 already: this move again (reprocessed), or, routed AUTO, the
        # 变更 read before the registration it moves pushed the item itself.
        if made is None:
            REROUTED.inc()
        if made is None or (made["cause"] == event["event_id"] and made.get("rerouted")):
            self._push(state, outcome, order, cause=event["event_id"], now=now)
        state["pushes"][replacement]["rerouted"] = True
        self._change(
            entry,
            PushState.REASSIGNED,
            event["event_id"],
            event["at"],
            now,
            PLATFORM,
            outcome,
            allowed,
            reassigned_to_push_id=replacement,
            reason_text=f"住所变更至{event['division']}（{event['entity']['address']}），"
            f"由{target['name']}办理",
        )
        return True

    def _notify(
        self,
        state: dict[str, Any],
        entity: dict[str, Any],
        needed: list[Match],
        outcome: DualNoticeOutput,
        now: int,
        *,
        resend: bool = True,
    ) -> None:
        """告知审批部门 for each item (or 分流失败), then 告知申请人 once.

        A push made for this very event before is sent again if ``resend`` (the event
        reprocessed); one made for another version of the registration takes this
        version's snapshot; ``resend`` false (a 变更 corrected by a 设立 read after it)
        makes only the pushes missing."""
        uscc, event_id = entity["uscc"], entity["registration_event_id"]
        key = registration_key(entity)
        notice_items = []
        for match in needed:
            department = match.item.routes.get(entity["division_code"])
            if department is None:
                failure = state["unrouted"].get(routing_id(key, match.item.code))
                if failure is not None and failure["record"]["entity"] != entity:
                    failure["record"]["entity"] = entity
                identity = self._routing_failure(state, entity, match, outcome, now)
                self._close_unrouted(state, state["unrouted"][identity], outcome)
                notice_items.append(
                    {
                        "item": match.item.ref,
                        "department": None,
                        "push_id": None,
                        "routing_id": identity,
                    }
                )
                continue
            order = PushOrder.routed(entity, match, department)
            entry = state["pushes"].get(order.push_id)
            if entry is None:
                self._push(state, outcome, order, cause=entity["registration_event_id"], now=now)
            elif entry["record"]["entity"]["registration_event_id"] != event_id:
                self._take_version(entry, order, outcome)
            elif resend:
                self._push(state, outcome, order, cause=entity["registration_event_id"], now=now)
            notice_items.append(
                {
                    "item": match.item.ref,
                    "department": department,
                    "push_id": order.push_id,
                    "routing_id": None,
                }
            )
        self.pushes[uscc] = state
        outcome.send(
            "dual_notice_applicant_notice",
            uscc,
            {
                "notice_id": applicant_notice_id(key),
                "entity": entity,
                "items": notice_items,
                "issued_at": entity["registered_at"],
            },
        )

    def _take_version(
        self, entry: dict[str, Any], order: PushOrder, outcome: DualNoticeOutput
    ) -> None:
        """Another version of the push's registration (a correction, re-published with a
        new event id): the push shows it, one version more, on the platform topic only
        (the department's push, its id and its deadlines, are the same)."""
        record = entry["record"]
        record.update(entity=order.entity, matched_by=order.matched_by)
        record["version"] += 1
        entry["cause"] = order.entity["registration_event_id"]
        outcome.send("dual_notice_push", record["entity"]["uscc"], record)

    def _close_unrouted(
        self, state: dict[str, Any], entry: dict[str, Any], outcome: DualNoticeOutput
    ) -> None:
        """A 分流失败 record of a registration the entity's 注销/吊销 (or 迁出) follows,
        read before it: CLOSED at once, nothing for the registration authority to route."""
        record = entry["record"]
        order = (record["entity"]["registered_at"], RANK.get(record["entity"]["event_kind"], 1))
        closure = next((e for e in self._after(state, order) if e["closure"] is not None), None)
        if closure is None or record["state"] != "OPEN":
            return
        record.update(state="CLOSED", state_changed_at=closure["at"])
        entry["cause"] = closure["event_id"]
        MANUAL_ROUTING_QUEUE.dec()
        outcome.send("dual_notice_routing_failure", record["entity"]["uscc"], record)

    def _state(self, uscc: str) -> dict[str, Any]:
        known = self.pushes.get(uscc)
        return {"pushes": {}, "unrouted": {}} if known is None else known

    def _push(
        self,
        state: dict[str, Any],
        outcome: DualNoticeOutput,
        order: PushOrder,
        *,
        cause: str,
        now: int,
    ) -> str:
        """Make the push and send it to the department; a push this same cause made
        already (reprocessing) is sent again as it is."""
        identity = order.push_id
        entry = state["pushes"].get(identity)
        if entry is not None:
            self._resend(entry, outcome)
            return identity
        claim_deadline = self.settings.claim_deadline(order.starts_at)
        licence_deadline = self.settings.licence_deadline(order.starts_at)
        record = new_push(
            order,
            claim_deadline=claim_deadline,
            licence_deadline=licence_deadline,
            recorded_at=now,
        )
        entity, item, department = order.entity, order.item, order.department
        licence = self._valid_licence_for(state, record)
        if licence is not None:  # the entity holds the permit already: nothing to claim
            record.update(state=PushState.FULFILLED, fulfilled_by_licence=licence["licence_number"])
        elif record["state"] == PushState.CLAIMED:  # claimed from the claimable list
            deadline = (licence_deadline, entity["uscc"], identity, Deadline.LICENCE)
            outcome.deadlines.append(deadline)
        else:
            deadline = (record["claim_deadline"], entity["uscc"], identity, Deadline.CLAIM)
            outcome.deadlines.append(deadline)
        history = self.settings.is_history(claim_deadline)
        # Live, but made before a cut-over still to come: it reaches the inbox at the cut-over.
        cut_over = self.settings.history_until_ms
        held = not history and cut_over is not None and now < cut_over
        entry = {
            "record": record,
            "cause": cause,
            "actions": [],
            "delivered": self.has_inbox(department["code"]) and not (history or held),
            "history": history,
            "held": held,
            "order": [order.starts_at, RANK.get(entity["event_kind"], RANK["CHANGE"])],
        }
        state["pushes"][identity] = entry
        _count(record, +1)
        PUSHES_CREATED.labels(order.routing).inc()
        if history:
            HISTORY.labels("push").inc()
        if held and cut_over is not None:
            outcome.deadlines.append((cut_over, entity["uscc"], identity, DELIVERY))
        if not self._catch_up(state, entry, outcome, now):
            self._resend(entry, outcome)
        log_event(
            logger,
            "dual_notice_pushed",
            event_id=entity["registration_event_id"],
            uscc=entity["uscc"],
            push_id=identity,
            item=item["code"],
            department=department["code"],
            routing=order.routing,
            state=str(record["state"]),
            history=history,
        )
        return identity

    def _catch_up(
        self, state: dict[str, Any], entry: dict[str, Any], outcome: DualNoticeOutput, now: int
    ) -> bool:
        """A push just made, for a registration the entity's later events (read first)
        follow: apply them, as if read after it (:meth:`_follow`). A push they change was
        never seen by its department, so it reaches no inbox: for an entity closed since,
        it is CLOSED at once; moved since, it is REASSIGNED to the new division's
        department, which gets the push. True if they changed it."""
        delivered, entry["delivered"] = entry["delivered"], False
        for later in self._after(state, _entry_order(entry)):
            if self._follow(state, entry, later, outcome, now):
                return True
        entry["delivered"] = delivered
        return False

    def _resend(self, entry: dict[str, Any], outcome: DualNoticeOutput) -> None:
        """Send the push as it is now; to the department's inbox too while it was never
        changed (what the department has not seen) and waits for the claim, or for the
        licence of the department's own claim from the claimable list, unless it is
        history (its claim deadline passed before the cut-over: for auditors only)."""
        record = entry["record"]
        waiting = record["version"] == 1 and record["state"] in (
            PushState.PUSHED,
            PushState.CLAIMED,
        )
        waiting &= not (entry.get("history", False) or entry.get("held", False))
        inboxes = (record["department"]["code"],) if waiting else ()
        outcome.send("dual_notice_push", record["entity"]["uscc"], record, *inboxes)

    def _routing_failure(
        self,
        state: dict[str, Any],
        entity: dict[str, Any],
        match: Match,
        outcome: DualNoticeOutput,
        now: int,
    ) -> str:
        """分流失败: the item waits for the registration authority's manual routing
        (``dualnotice.manual-routing``) and is on the claimable list
        (``dualnotice.claimable``) for any department to claim, until one of them takes
        it or the entity closes."""
        identity = routing_id(registration_key(entity), match.item.code)
        entry = state["unrouted"].get(identity)
        if entry is None:
            failed_at = entity["registered_at"]
            record = {
                "routing_id": identity,
                "state": "OPEN",
                "entity": entity,
                "item": match.item.ref,
                "matched_by": list(match.matched_by),
                "reason": f"审批事项 {match.item.code} {match.item.name} has no department for"
                f" division {entity['division_code']} in the catalog's routes (分流失败)",
                "failed_at": failed_at,
                "failure_recorded_at": now,
                "routed_to": None,
                "routed_push_id": None,
                "state_changed_at": failed_at,
                "state_recorded_at": now,
            }
            entry = {"record": record, "cause": entity["registration_event_id"], "actions": []}
            state["unrouted"][identity] = entry
            MANUAL_ROUTING_QUEUE.inc()
            log_event(
                logger,
                "dual_notice_routing_failed",
                event_id=entity["registration_event_id"],
                uscc=entity["uscc"],
                routing_id=identity,
                item=match.item.code,
                division=entity["division_code"],
            )
        _publish_routing(entry["record"], outcome)
        return identity

    def _close_entity(
        self,
        registration: dict[str, Any],
        event: dict[str, Any],
        state: dict[str, Any],
        outcome: DualNoticeOutput,
        now: int,
    ) -> None:
        """注销/吊销: close what the registrations before it opened, and tell every
        department whose licence is valid; 迁出 (moved out of the province): close them,
        saying so (its licences are not ended by the move: nobody is told of them)."""
        uscc, event_id = registration["uscc"], registration["envelope"]["event_id"]
        closed_at = event["at"]
        for entry in list(state["pushes"].values()):
            if _entry_order(entry) < _event_order(event)[:2]:
                self._follow(state, entry, event, outcome, now)
        for entry in state["unrouted"].values():
            record = entry["record"]
            made = (record["entity"]["registered_at"], RANK.get(record["entity"]["event_kind"], 1))
            if record["state"] == "OPEN" and made < _event_order(event)[:2]:
                changed_at = max(closed_at, record["failed_at"])
                record.update(state="CLOSED", state_changed_at=changed_at)
                record.update(state_recorded_at=_recorded(now, record))
                entry["cause"] = event_id
                MANUAL_ROUTING_QUEUE.dec()
            if entry["cause"] == event_id:
                _publish_routing(record, outcome)
        if event["closure"] == "MOVED_OUT":
            self.pushes[uscc] = state
            return
        closures = state.get("closures", [])
        if registration["event_date"].toordinal() not in closures:
            state["closures"] = sorted([*closures, registration["event_date"].toordinal()])
        self.pushes[uscc] = state

        closed_on: date = registration["event_date"]
        holders: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for licence in (self.licences.get(uscc) or {}).values():
            if licence["status"] == "VALID" and (
                licence["valid_to"] is None or licence["valid_to"] >= closed_on.toordinal()
            ):
                holders[licence["authority_uscc"]].append(licence)
        for authority_uscc, held in sorted(holders.items()):
            department = self.directory().by_uscc.get(authority_uscc)
            if department is None:
                log_event(
                    logger,
                    "dual_notice_licence_authority_unknown",
                    event_id=event_id,
                    uscc=uscc,
                    authority_uscc=authority_uscc,
                )
                continue
            licences = [
                {
                    "licence_number": licence["licence_number"],
                    "certificate_name": licence["certificate_name"],
                    "approval_item_code": licence["approval_item_code"],
                    "valid_to": (
                        None
                        if licence["valid_to"] is None
                        else date.fromordinal(licence["valid_to"])
                    ),
                }
                for licence in sorted(held, key=lambda licence: licence["licence_number"])
            ]
            notice = {
                "notice_id": closure_notice_id(event["key"], department["code"]),
                "registration_event_id": event_id,
                "uscc": uscc,
                "entity_name": registration["name"],
                "closure": "REVOKED" if registration["status"] == "REVOKED" else "CANCELLED",
                "closed_on": closed_on,
                "registering_authority_name": registration["registering_authority_name"],
                "department": department,
                "licences": licences,
                "notified_at": closed_at,
            }
            # A 注销 before the cut-over is the province's history: on the topic, no inbox.
            history = self.settings.is_history(closed_at)
            inboxes = () if history else (department["code"],)
            outcome.send("entity_closure_notice", uscc, notice, *inboxes)
            if history:
                HISTORY.labels("closure_notice").inc()
            log_event(
                logger,
                "dual_notice_closure_notified",
                event_id=event_id,
                uscc=uscc,
                department=department["code"],
                licences=len(held),
                history=history,
            )

    # -- licences ---------------------------------------------------------------------------

    def on_licence(
        self, licence: dict[str, Any], now: int, *, read_at: str | None = None
    ) -> DualNoticeOutput:
        """A licence: remember it; if valid, it fulfils the entity's open pushes of its item
        (and the department is told). ``read_at``: see :meth:`_unless_sent_again`."""
        return self._unless_sent_again("licence", licence, now, read_at, self._apply_licence)

    def _apply_licence(self, licence: dict[str, Any], now: int) -> DualNoticeOutput:
        """What :meth:`on_licence` does with a licence not sent before: the change is dated
        by the licence's event time (no earlier than the push), and recorded at ``now``."""
        outcome = DualNoticeOutput()
        uscc, event_id = licence["uscc"], licence["envelope"]["event_id"]
        item = self.catalog().item_for_licence(licence)
        held = dict(self.licences.get(uscc) or {})
        valid_to: date | None = licence["valid_to"]
        # One licence (issuer and 许可编号) is one record: its later version is kept,
        # whatever order the versions arrive in (an earlier worker's entry has no version).
        key = f"{licence['authority_uscc']}/{licence['licence_number']}"
        version = version_of(licence)
        fact = {
            "licence_number": licence["licence_number"],
            "certificate_name": licence["certificate_name"],
            "approval_item_code": item.code if item else licence["approval_item_code"],
            "authority_uscc": licence["authority_uscc"],
            "status": licence["status"],
            "decided_on": licence["decided_on"].toordinal(),
            "valid_to": valid_to.toordinal() if valid_to else None,
            "version": version,
        }
        known = held.get(key)
        if known is None or "version" not in known or is_later(version, known["version"]):
            held[key] = fact
            self.licences[uscc] = held
        state = self.pushes.get(uscc)
        if item is None or licence["status"] != "VALID" or state is None:
            return outcome
        authority = self.directory().by_uscc.get(licence["authority_uscc"])
        by = authority["code"] if authority else PLATFORM
        at = millis(licence["envelope"]["event_time"])
        fulfilled = False
        for entry in state["pushes"].values():
            record = entry["record"]
            if record["item"]["code"] == item.code and licence_fulfils(fact, record, state):
                fulfilled |= self._change(
                    entry,
                    PushState.FULFILLED,
                    event_id,
                    at,
                    now,
                    by,
                    outcome,
                    AWAITING_LICENCE,
                    fulfilled_by_licence=licence["licence_number"],
                )
        if fulfilled:
            self.pushes[uscc] = state
        return outcome

    def _valid_licence_for(
        self, state: dict[str, Any], push: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A licence the entity holds that fulfils the push (:func:`licence_fulfils`)."""
        for licence in (self.licences.get(push["entity"]["uscc"]) or {}).values():
            if licence["approval_item_code"] == push["item"]["code"] and licence_fulfils(
                licence, push, state
            ):
                return dict(licence)
        return None

    # -- changing a push's state --------------------------------------------------------------

    def _change(
        self,
        entry: dict[str, Any],
        to: PushState,
        cause: str,
        at: int,
        now: int,
        by: str,
        outcome: DualNoticeOutput,
        allowed: frozenset[PushState],
        *,
        tell_department: bool = True,
        **fields: Any,
    ) -> bool:
        """Move a push to ``to`` if its state is in ``allowed``, as happened at ``at``
        (business time) and decided at ``now`` (the processor's clock); send the new snapshot, to
        the push's department too unless ``tell_department`` is false (its own action, or
        history): a department whose push ends otherwise (a licence, a 注销, a
        reassignment, a deadline) must not go on reading PUSHED in its inbox. Only a push
        its department has seen (``delivered``) is followed there; one held or history
        reaches no inbox.

        The event that made the change is remembered: the same event again (after a
        crash) sends the snapshot again, to the same inboxes, and changes nothing. True
        if this event has changed the push, now or before (the caller stores it, and
        sends what goes with the change, again if need be).

        In either time base a change is never before the push: a licence dated before
        the push was made (the platform saw the registration late) fulfils it as it is
        made, at ``pushed_at``. In platform time each change is also after the one
        before; in business time a change keeps its own instant, so one acted before an
        escalation but read after it is dated when it was done.
        """
        record = entry["record"]
        told = tell_department and entry["delivered"]
        inboxes = (record["department"]["code"],) if told else ()
        if entry["cause"] == cause:
            outcome.send("dual_notice_push", record["entity"]["uscc"], record, *inboxes)
            return True
        if PushState(record["state"]) not in allowed:
            return False
        _count(record, -1)
        record.update(
            state=to,
            version=record["version"] + 1,
            state_changed_at=max(at, record["pushed_at"]),
            state_recorded_at=_recorded(now, record),
            changed_by=by,
            **fields,
        )
        _count(record, +1)
        entry["cause"] = cause
        outcome.send("dual_notice_push", record["entity"]["uscc"], record, *inboxes)
        log_event(
            logger,
            "dual_notice_push_changed",
            event_id=cause,
            uscc=record["entity"]["uscc"],
            push_id=record["push_id"],
            state=str(to),
            by=by,
        )
        return True

    # -- department actions -------------------------------------------------------------------

    def on_action(self, received: dict[str, Any], now: int) -> DualNoticeOutput:
        """A department action: apply it, or record why it was not."""
        outcome = DualNoticeOutput()
        action = received["action"]
        kind = action["action"]
        try:
            if kind not in ActionKind.__members__:
                raise Rejected(
                    f"unknown action {kind!r}: a department may CLAIM, RETURN or STOP its"
                    " pushes and CLAIM a 分流失败 item of the claimable list by its routing"
                    " id; the registration authority may also REASSIGN and ROUTE"
                )
            uscc, identity = action["uscc"], action["push_id"]
            # 认领 naming a routing id claims a 分流失败 item from the claimable list.
            from_list = ActionKind(kind) is ActionKind.CLAIM and self._is_unrouted(action)
            if ActionKind(kind) is ActionKind.ROUTE:
                missing = f"no 分流失败 record {identity} for {uscc} (ROUTE takes a routing id)"
                state, entry = self._named(action, "unrouted", missing)
            elif from_list:
                state, entry = self._named(action, "unrouted", "")
            else:
                missing = (
                    f"no push {identity} for {uscc}: check the push id in the inbox (or the"
                    " routing id on the claimable list dualnotice.claimable)"
                )
                state, entry = self._named(action, "pushes", missing)
            first_read = state.get("read", {}).get(f"action|{action['action_id']}")
            if action["action_id"] in entry["actions"] and first_read not in (
                None,
                received["received_id"],
            ):  # the department sent it again (a new offset): what it made was sent
                INPUTS_SENT_AGAIN.labels("action").inc()
                log_event(
                    logger,
                    "dual_notice_input_sent_again",
                    record_type="action",
                    event_id=action["action_id"],
                    uscc=uscc,
                    first_read_at=first_read,
                    read_at=received["received_id"],
                )
            elif action["action_id"] in entry["actions"]:  # reprocessed: applied already
                self._resend_after(received, state, entry, outcome)
            elif ActionKind(kind) is ActionKind.ROUTE:
                self._route_by_hand(received, entry["record"], outcome, now)
            elif from_list:
                self._claim_from_list(received, entry["record"], outcome, now)
            else:
                self._act_on_push(received, ActionKind(kind), outcome, now)
            ACTIONS_APPLIED.labels(kind).inc()
        except Rejected as rejected:
            ACTIONS_REJECTED.labels(kind).inc()
            outcome.outgoing.clear()
            outcome.deadlines.clear()
            outcome.send(
                "rejected_department_action",
                received["department_code"],
                rejection(received, rejected.reason, rejected.push_state, now),
            )
            log_event(
                logger,
                "dual_notice_action_rejected",
                event_id=received["received_id"],
                uscc=action["uscc"],
                push_id=action["push_id"],
                department=received["department_code"],
                action=kind,
                reason=rejected.reason,
            )
        return outcome

    def _act_on_push(
        self, received: dict[str, Any], kind: ActionKind, outcome: DualNoticeOutput, now: int
    ) -> None:
        action, acting = received["action"], received["department_code"]
        uscc, identity = action["uscc"], action["push_id"]
        state = self.pushes[uscc]
        entry = state["pushes"][identity]
        record = entry["record"]
        allowed_from, to, who = ACTIONS[kind]
        may_act = {
            "department": record["department"]["code"],
            "registrar": record["entity"]["registrar_code"],
        }
        if not any(may_act[role] == acting for role in who):
            named = {
                "department": f"the push's department {may_act['department']}",
                "registrar": f"the registration authority {may_act['registrar'] or '(unknown)'}",
            }
            raise Rejected(
                f"{acting} may not {kind} push {identity}: only"
                f" {' or '.join(named[role] for role in sorted(who))} may",
                record["state"],
            )
        current = PushState(record["state"])
        if current not in allowed_from:
            raise Rejected(
                f"cannot {kind} push {identity}: it is {current}; {kind} is possible from"
                f" {', '.join(sorted(allowed_from))}",
                record["state"],
            )
        at = self._acted_at(action, record, self._made_at(state, record), now)
        fields: dict[str, Any] = {}
        if kind is ActionKind.CLAIM:
            fields = {"claimed_at": at, "licence_deadline": self.settings.licence_deadline(at)}
            CLAIM_LATENCY.observe(max(0.0, (at - record["pushed_at"]) / 1000))
            outcome.deadlines.append((fields["licence_deadline"], uscc, identity, Deadline.LICENCE))
        elif kind is ActionKind.RETURN:
            reason = action["return_reason"]
            if reason not in RETURN_REASONS or (reason == "OTHER" and not action["reason_text"]):
                raise Rejected(
                    "a return needs a reason: one of "
                    + ", ".join(f"{code} ({text})" for code, text in RETURN_REASONS.items())
                    + ", with the reason in reason_text for OTHER",
                    record["state"],
                )
            fields = {"return_reason": reason, "reason_text": action["reason_text"]}
        elif kind is ActionKind.STOP:
            fields = {"reason_text": action["reason_text"]}
        elif kind is ActionKind.REASSIGN:
            target = self._target(action, exclude=record["department"]["code"])
            registration = registration_key(record["entity"])
            replacement = push_id(registration, record["item"]["code"], target["code"])
            if replacement in state["pushes"]:
                raise Rejected(
                    f"push {identity} was given to {target['code']} already (push {replacement})",
                    record["state"],
                )
            order = PushOrder.elsewhere(record, target, "REASSIGNED", at, reassigned_from=identity)
            self._push(state, outcome, order, cause=received["received_id"], now=now)
            fields = {"reassigned_to_push_id": replacement, "reason_text": action["reason_text"]}
        entry["actions"].append(action["action_id"])
        _read_action(state, received)
        self._change(
            entry,
            to,
            received["received_id"],
            at,
            now,
            acting,
            outcome,
            allowed_from,
            tell_department=acting != record["department"]["code"],
            **fields,
        )
        self.pushes[uscc] = state

    def _acted_at(
        self, action: dict[str, Any], acted_on: dict[str, Any], made_at: int, now: int
    ) -> int:
        """The action's ``acted_at`` (epoch ms), if it can be true: not before what it acts
        on (``acted_on``, a push or a 分流失败 record) was made (``made_at``, event time),
        not later than ``now`` plus the clock skew allowed. Rejected otherwise: its
        deadlines would run from a time that never was."""
        at = millis(action["acted_at"])
        what = f"push {acted_on['push_id']}" if "push_id" in acted_on else acted_on["routing_id"]
        skew = self.settings.action_clock_skew
        named = f"{action['action']} {action['action_id']} has acted_at {_local(at)}"
        if at < made_at:
            raise Rejected(
                f"{named}, before {what} was made ({_local(made_at)}): an action comes"
                " after what it acts on; check the acting system's clock and date",
                acted_on["state"],
            )
        if at > now + int(skew.total_seconds() * 1000):
            raise Rejected(
                f"{named}, later than the platform's now ({_local(now)}) plus the clock"
                f" skew allowed ({skew}, XIETONG_DUAL_NOTICE_ACTION_CLOCK_SKEW): an action"
                " is sent once done; check the acting system's clock and date",
                acted_on["state"],
            )
        return at

    @staticmethod
    def _made_at(state: dict[str, Any], record: dict[str, Any]) -> int:
        """When a push was made, in event time: at its registration, or at the REASSIGN,
        ROUTE or claim from the claimable list that made it (whose acted_at moved the push
        it replaces, or the 分流失败 record it routes, to its final state)."""
        if record["routing"] == "REASSIGNED":
            replaced = state["pushes"].get(record["reassigned_from_push_id"])
            if replaced is not None:
                return int(replaced["record"]["state_changed_at"])
        elif record["routing"] in ("MANUAL", "CLAIMABLE"):
            for entry in state["unrouted"].values():
                if entry["record"]["routed_push_id"] == record["push_id"]:
                    return int(entry["record"]["state_changed_at"])
        return int(record["entity"]["registered_at"])

    def _is_unrouted(self, action: dict[str, Any]) -> bool:
        """Whether the action names one of the entity's 分流失败 records (a routing id)."""
        state = self.pushes.get(action["uscc"])
        return state is not None and action["push_id"] in state["unrouted"]

    def _named(
        self, action: dict[str, Any], section: str, missing: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The entity's state and the entry of ``section`` (its pushes, or its 分流失败
        records) the action names; Rejected, saying ``missing``, if there is none."""
        state = self.pushes.get(action["uscc"])
        entry = None if state is None else state[section].get(action["push_id"])
        if state is None or entry is None:
            raise Rejected(missing)
        return state, entry

    def _resend_after(
        self,
        received: dict[str, Any],
        state: dict[str, Any],
        entry: dict[str, Any],
        outcome: DualNoticeOutput,
    ) -> None:
        """An action applied already: send again what it sent (the push, and the push it
        made when it reassigned or routed). The push reaches its department's inbox again
        only if this very record (reprocessed after a crash) last changed it and the
        department did not take the action itself, as the first time."""
        record = entry["record"]
        if "push_id" in record:
            department = record["department"]["code"]
            told = (
                entry["cause"] == received["received_id"]
                and received["department_code"] != department
                and entry["delivered"]
            )
            inboxes = (department,) if told else ()
            outcome.send("dual_notice_push", record["entity"]["uscc"], record, *inboxes)
            made = record["reassigned_to_push_id"]
        else:
            _publish_routing(record, outcome)
            made = record["routed_push_id"]
        if made in state["pushes"]:
            self._resend(state["pushes"][made], outcome)

    def _target(self, action: dict[str, Any], exclude: str | None = None) -> dict[str, str]:
        code = action["target_department_code"]
        if not code:
            raise Rejected(f"{action['action']} needs target_department_code: who gets the push")
        target = self.directory().by_code.get(code)
        if target is None:
            raise Rejected(f"target department {code!r} is not in the registry's departments")
        if code == exclude:
            raise Rejected(f"the push is with {code} already")
        return dict(target)

    def _route_by_hand(
        self, received: dict[str, Any], record: dict[str, Any], outcome: DualNoticeOutput, now: int
    ) -> None:
        """手动分流: the registration authority gives a 分流失败 item (``record``) to a
        department."""
        registrar, acting = record["entity"]["registrar_code"], received["department_code"]
        action, identity = received["action"], record["routing_id"]
        if acting != registrar:
            raise Rejected(
                f"{acting} may not route {identity} by hand: only the registration authority"
                f" {registrar or '(unknown)'} may",
                record["state"],
            )
        if record["state"] != "OPEN":
            raise Rejected(f"{identity} is {record['state']}, not waiting to be routed")
        target = self._target(action)
        at = self._acted_at(action, record, record["entity"]["registered_at"], now)
        order = PushOrder.elsewhere(record, target, "MANUAL", at)
        uscc = record["entity"]["uscc"]
        # The table's value read afresh (a Faust table hands out copies): what is changed
        # is what is stored.
        state = self.pushes[uscc]
        entry = state["unrouted"][identity]
        record = entry["record"]
        routed = self._push(state, outcome, order, cause=received["received_id"], now=now)
        record.update(state="ROUTED", routed_to=target, routed_push_id=routed, state_changed_at=at)
        record.update(state_recorded_at=_recorded(now, record))
        entry["cause"] = received["received_id"]
        entry["actions"].append(action["action_id"])
        _read_action(state, received)
        MANUAL_ROUTING_QUEUE.dec()
        _publish_routing(record, outcome)
        self.pushes[uscc] = state

    def _claim_from_list(
        self, received: dict[str, Any], record: dict[str, Any], outcome: DualNoticeOutput, now: int
    ) -> None:
        """认领 from the claimable list: a department claims a 分流失败 item (``record``)
        by its routing id, and the item becomes that department's push, CLAIMED as it is
        made (routing CLAIMABLE), its licence period running from the claim. The first
        valid claim in the entity's partition wins, whoever's it is; every later one is
        rejected naming the winner. The item leaves the list and the manual-routing
        queue."""
        action, acting = received["action"], received["department_code"]
        identity = record["routing_id"]
        department = self.directory().by_code.get(acting)
        if department is None:
            raise Rejected(f"{acting} is not in the registry's departments: it may claim nothing")
        if record["state"] == "CLAIMED":
            winner = (record["routed_to"] or {}).get("code")
            CLAIMABLE_CLAIMS.labels("taken").inc()
            raise Rejected(
                f"{identity} was claimed by {winner} first (push {record['routed_push_id']},"
                f" acted {_local(record['state_changed_at'])}): the first valid claim wins,"
                f" the item is {winner}'s push now",
                record["state"],
            )
        if record["state"] != "OPEN":
            CLAIMABLE_CLAIMS.labels("closed").inc()
            raise Rejected(
                f"{identity} is {record['state']}, no longer on the claimable list", record["state"]
            )
        at = self._acted_at(action, record, record["entity"]["registered_at"], now)
        order = PushOrder.elsewhere(record, dict(department), "CLAIMABLE", at)
        uscc = record["entity"]["uscc"]
        state = self.pushes[uscc]  # read afresh, as in _route_by_hand
        entry = state["unrouted"][identity]
        record = entry["record"]
        claimed = self._push(state, outcome, order, cause=received["received_id"], now=now)
        record.update(
            state="CLAIMED",
            routed_to=dict(department),
            routed_push_id=claimed,
            state_changed_at=max(at, record["failed_at"]),
            state_recorded_at=_recorded(now, record),
        )
        entry["cause"] = received["received_id"]
        entry["actions"].append(action["action_id"])
        MANUAL_ROUTING_QUEUE.dec()
        CLAIMABLE_CLAIMS.labels("claimed").inc()
        CLAIM_LATENCY.observe(max(0.0, (at - record["failed_at"]) / 1000))
        _publish_routing(record, outcome)
        self.pushes[uscc] = state
        log_event(
            logger,
            "dual_notice_claimed_from_list",
            event_id=received["received_id"],
            uscc=uscc,
            routing_id=identity,
            push_id=claimed,
            department=acting,
        )

    def on_due(self, due: dict[str, Any]) -> DualNoticeOutput:
        """A deadline passed (escalate the unclaimed push once, or raise the 无证经营
        alert once), or the push's department got an inbox (deliver what waited)."""
        outcome = DualNoticeOutput()
        uscc, identity, checked_at = due["uscc"], due["push_id"], due["checked_at"]
        state = self.pushes.get(uscc)
        entry = None if state is None else state["pushes"].get(identity)
        if state is None or entry is None:
            return outcome
        record = entry["record"]
        if due["due"] == DELIVERY:
            cut_over = self.settings.history_until_ms
            if entry.get("history", False):
                return outcome
            if entry.get("held", False):
                if cut_over is not None and checked_at < cut_over:
                    return outcome
                entry["held"] = False
                self.pushes[uscc] = state
                if record["state"] not in (PushState.PUSHED, PushState.OVERDUE):
                    return outcome  # settled before the cut-over: nothing left to tell
            if not entry["delivered"] and self.has_inbox(record["department"]["code"]):
                outcome.send("dual_notice_push", uscc, record, record["department"]["code"])
                entry["delivered"] = True
                self.pushes[uscc] = state
            return outcome
        if due["due"] == Deadline.CLAIM:
            kind, deadline, waiting = AlertKind.OVERDUE, record["claim_deadline"], PushState.PUSHED
            to, fields = PushState.OVERDUE, {"escalated_at": checked_at}
            recipients = [record["department"]["code"], record["entity"]["registrar_code"]]
        else:
            kind, deadline, waiting = (
                AlertKind.UNLICENSED_TRADING,
                record["licence_deadline"],
                PushState.CLAIMED,
            )
            to, fields = PushState.UNLICENSED, {"unlicensed_alert_at": checked_at}
            recipients = [record["department"]["code"]]
        if deadline is None or deadline > checked_at:
            return outcome
        # A deadline that passed before the cut-over is history: the push is recorded in
        # its new state, for auditors, and nobody is alerted (nor marked as alerted).
        history = self.settings.is_history(deadline)
        if history:
            fields = {}
        cause = f"due|{identity}|{due['due']}"
        again = entry["cause"] == cause
        if not self._change(
            entry,
            to,
            cause,
            deadline,  # in the business, it happened as the deadline passed
            checked_at,
            PLATFORM,
            outcome,
            frozenset({waiting}),
            tell_department=not history,
            **fields,
        ):
            return outcome
        if history:
            self.pushes[uscc] = state
            if not again:
                HISTORY.labels(f"alert_{kind.lower()}").inc()
            return outcome
        told = tuple(dict.fromkeys(code for code in recipients if code))
        outcome.send("dual_notice_alert", uscc, self._alert(kind, record, told, deadline), *told)
        self.pushes[uscc] = state
        if not again:
            ALERTS_RAISED.labels(kind).inc()
            log_event(
                logger,
                "dual_notice_alert_raised",
                event_id=cause,
                uscc=uscc,
                push_id=identity,
                kind=str(kind),
                recipients=list(told),
            )
        return outcome

    def _alert(
        self, kind: AlertKind, record: dict[str, Any], recipients: tuple[str, ...], deadline: int
    ) -> dict[str, Any]:
        entity, item, department = record["entity"], record["item"], record["department"]
        if kind is AlertKind.OVERDUE:
            raised_at = record["escalated_at"]
            message = (
                f"{department['name']}未在认领期限内认领{entity['name']}（{entity['uscc']}）"
                f"的{item['name']}双告知推送，请督办"
            )
        else:
            raised_at = record["unlicensed_alert_at"]
            message = (
                f"{entity['name']}（{entity['uscc']}）的{item['name']}已认领但逾期未取得许可，"
                "存在无证经营风险，请核查（国务院令第684号）"
            )
        return {
            "alert_id": alert_id(record["push_id"], kind),
            "kind": kind,
            "push_id": record["push_id"],
            "entity": entity,
            "item": item,
            "department": department,
            "recipients": list(recipients),
            "deadline": deadline,
            "raised_at": raised_at,
            "message": message,
        }

    # -- what the app's timers look at -----------------------------------------------------

    def is_waiting(self, uscc: str, identity: str, deadline: str) -> bool:
        """Whether the push still waits for what ``deadline`` is about (the claim, the
        licence): a timer sends it only then."""
        entry = self._entry(uscc, identity)
        if deadline == DELIVERY:  # held for the cut-over
            return entry is not None and entry.get("held", False)
        waiting = PushState.PUSHED if deadline == Deadline.CLAIM else PushState.CLAIMED
        return entry is not None and entry["record"]["state"] == waiting

    def undelivered(self, departments: set[str]) -> Iterator[tuple[str, str]]:
        """(USCC, push id) of each push that waits for its claim and was never delivered
        because its department, one of ``departments``, had no inbox."""
        for uscc, state in list(self.pushes.items()):
            for identity, entry in state["pushes"].items():
                record = entry["record"]
                waiting = record["state"] in (PushState.PUSHED, PushState.OVERDUE)
                if (
                    waiting
                    and not entry["delivered"]
                    and not (entry.get("history", False) or entry.get("held", False))
                    and record["department"]["code"] in departments
                ):
                    yield uscc, identity

    def recovered(self) -> list[tuple[int, str, str, str]]:
        """After a rebalance: the deadlines still running, from the state (the gauges are
        rebuilt from it too)."""
        deadlines: list[tuple[int, str, str, str]] = []
        PUSHES.clear()
        OVERDUE_PUSHES.set(0)
        queue = 0
        for uscc, state in self.pushes.items():
            for identity, entry in state["pushes"].items():
                record = entry["record"]
                _count(record, +1)
                if entry.get("held", False) and self.settings.history_until_ms is not None:
                    deadlines.append((self.settings.history_until_ms, uscc, identity, DELIVERY))
                if record["state"] == PushState.PUSHED:
                    deadlines.append(
                        (record["claim_deadline"], uscc, identity, Deadline.CLAIM.value)
                    )
                elif record["state"] == PushState.CLAIMED:
                    deadline = record["licence_deadline"]
                    deadlines.append((deadline, uscc, identity, Deadline.LICENCE.value))
            queue += sum(1 for e in state["unrouted"].values() if e["record"]["state"] == "OPEN")
        MANUAL_ROUTING_QUEUE.set(queue)
        return deadlines

    def _entry(self, uscc: str, identity: str) -> dict[str, Any] | None:
        state = self.pushes.get(uscc)
        return None if state is None else state["pushes"].get(identity)


def _local(moment: int) -> str:
    """An instant as the province reads it, to the second, for a reason."""
    return business_clock().local_time(moment).isoformat(timespec="seconds")


def _recorded(now: int, record: dict[str, Any]) -> int:
    """When the platform records a change of ``record`` (a push, a 分流失败 record): its
    clock, but never before what it recorded last (another worker's clock may lag)."""
    last = record.get("state_recorded_at") or record.get("push_recorded_at") or 0
    return max(now, int(last))


def _publish_routing(record: dict[str, Any], outcome: DualNoticeOutput) -> None:
    """A 分流失败 record as it is now: on the manual-routing topic, and on the claimable
    list while OPEN (keyed by its routing id), else its tombstone there."""
    outcome.send("dual_notice_routing_failure", record["entity"]["uscc"], record)
    if record["state"] == "OPEN":
        outcome.send("dual_notice_claimable_item", record["routing_id"], record)
    else:
        outcome.remove("dual_notice_claimable_item", record["routing_id"], record)


def _read_action(state: dict[str, Any], received: dict[str, Any]) -> None:
    """Keep where an applied action was first read (its ``received_id``: topic, partition,
    offset): the same action id read elsewhere is one its department sent again."""
    state.setdefault("read", {})[f"action|{received['action']['action_id']}"] = received[
        "received_id"
    ]


def _count(record: dict[str, Any], step: int) -> None:
    PUSHES.labels(record["department"]["code"], str(record["state"])).inc(step)
    if record["state"] == PushState.OVERDUE:
        OVERDUE_PUSHES.inc(step)


def rejection_id(received_id: str) -> str:
    """拒绝标识 of the refusal of the action read as ``received_id``: a reader that knows
    where an action was read (the inbox API) finds its refusal by it."""
    return deterministic_id(f"dual-notice-rejection|{received_id}")


def rejection(
    received: dict[str, Any], reason: str, push_state: str | None, now: int
) -> dict[str, Any]:
    """The record of a department action not applied, with the reason."""
    return {
        "rejection_id": rejection_id(received["received_id"]),
        "department_code": received["department_code"],
        "inbound_topic": received["inbound_topic"],
        "inbound_partition": received["inbound_partition"],
        "inbound_offset": received["inbound_offset"],
        "action": received.get("action"),
        "original_value": received.get("original_value"),
        "push_state": push_state,
        "reason": reason,
        "rejected_at": now,
    }
