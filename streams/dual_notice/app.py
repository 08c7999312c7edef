"""双告知 (dual notification) after 先照后证: every registration that needs a permit reaches
the approving department, which must claim it in time; the applicant is told which
permits it needs; the loop closes when the permit is issued (domain brief §5).

What it reads, all keyed by the entity's USCC and co-partitioned (``streams.runtime``):

* ``market.registrations``: a 设立, or a 变更 that adds permit-requiring scope, is matched
  against the approval catalog — its 许可项目 scope entries (a wording, or the wording with
  a parenthesised qualifier) and its industry code; a 注销 or 吊销 closes the entity;
* ``permits.licences``: a licence for the entity and the item fulfils the push, and is
  remembered for the 注销 notice;
* ``dualnotice.actions``: what departments did, read from every department's own inbound
  topic ``dept.<code>.inbound`` (the broker lets only that department write it, so the
  acting department is the topic's, never a field) and re-keyed by USCC here;
* ``registry.approval-items`` and ``registry.departments``, as tables every worker holds
  whole: the catalog with its routes (事项+区划→部门), and the departments by code and USCC.

What it tells whom:

* **告知审批部门** — one :data:`push <schemas/avro/dual_notice_push.avsc>` per
  (registration event, item, department) to ``dept.<code>.inbox``; its id is
  ``uuid5(event id | item | department)``, so reprocessing never makes a second push;
  every change of state is republished on ``dualnotice.pushes`` for the sink and auditors;
* **告知申请人** — one 告知书 per registration event on ``dualnotice.applicant-notices``:
  the items, their legal bases and the department granting each;
* **分流失败** — an item without a department for the entity's division goes to
  ``dualnotice.manual-routing``, never dropped, until the registration authority routes
  it by hand (``ROUTE`` from its inbound topic);
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

    ¹ at the claim deadline: registration time + the claim period (15 days by default,
      or working days); escalated once.  ² at the licence deadline: claim time + the
      licence period; alerted once.  REASSIGN makes a new PUSHED push to the target
      department (routing REASSIGNED) with a fresh claim period; ROUTE turns an OPEN
      分流失败 record into ROUTED and makes a PUSHED push (routing MANUAL). A push made
      while the entity holds a valid licence for the item is FULFILLED at once.
    ✗: rejected with the reason, as is any action by a department that is neither the
      push's department nor, where allowed, the registration authority.

Time is event time: deadlines run from the registration's event time and from the
claim's ``acted_at``, so a replay of history gives the same deadlines. A timer compares
them with the clock every ``tick_interval`` seconds and sends each due push through the
internal topic ``xietong.streams.dual-notice-due``, keyed by USCC, so the change is made
by an agent on the push's own partition like every other change. The same topic
carries the pushes waiting for a department onboarded since (its inbox now exists).

Guarantee: at least once, with deterministic ids, which makes the result effectively
once for a reader that keeps the latest record per id. Offsets are committed only after
everything produced for the events before them (outputs and table changelogs) is
acknowledged; after a crash the events since the last commit are processed again
against state that may already hold them, and every change remembers the event that
made it, so a reprocessed event re-sends what it had sent (same ids, same content)
instead of changing anything twice.

Run it with ``xietong streams dual-notice``; settings are ``XIETONG_DUAL_NOTICE_*``
(:class:`DualNoticeSettings`).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as clock
from enum import StrEnum
from typing import Any

import faust
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import DEAD_LETTER_RECORD, DEPARTMENT_ACTION, DUAL_NOTICE_RECORD_TYPES
from streams.departments import InboundRelay, Inboxes, Produced
from streams.runtime import (
    DeclaredTopic,
    RecordWriter,
    ReferenceData,
    changelog_config,
    declared_topic,
    make_app,
    run_faust_worker,
    unreadable_input,
)
from xietong.ids import deterministic_id
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.topics import (
    DEAD_LETTER,
    DEPARTMENT_INBOX,
    DUAL_NOTICE_ACTIONS,
    DUAL_NOTICE_ALERTS,
    DUAL_NOTICE_APPLICANT_NOTICES,
    DUAL_NOTICE_CLOSURE_NOTICES,
    DUAL_NOTICE_MANUAL_ROUTING,
    DUAL_NOTICE_PUSHES,
    DUAL_NOTICE_REJECTED_ACTIONS,
    LICENCES,
    REGISTRATIONS,
    REGISTRY_APPROVAL_ITEMS,
    REGISTRY_DEPARTMENTS,
)

logger = logging.getLogger(__name__)

APP_NAME = "dual-notice"
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
#: Who changed a push when no department did (a deadline, a licence, a 注销).
PLATFORM = "platform"


class DualNoticeSettings(BaseSettings):
    """The province's 双告知 rules, from ``XIETONG_DUAL_NOTICE_*`` variables.

    Periods are ISO 8601 durations or seconds: ``XIETONG_DUAL_NOTICE_CLAIM_PERIOD=P15D``,
    ``…=PT30S`` or ``…=30``.
    """

    model_config = SettingsConfigDict(env_prefix="XIETONG_DUAL_NOTICE_", extra="ignore")

    claim_period: timedelta = Field(
        default=timedelta(days=15),
        description="认领期限: from the registration to the claim (Zhejiang used 15 days).",
    )
    working_days: bool = Field(
        default=False,
        description="Count the claim period in working days (whole days, China Standard"
        " Time): the deadline is the end of the last working day.",
    )
    holidays: list[date] = Field(
        default_factory=list, description="法定节假日 on weekdays: not working days."
    )
    extra_working_days: list[date] = Field(
        default_factory=list, description="调休上班日 on weekends: working days."
    )
    licence_period: timedelta = Field(
        default=timedelta(days=60),
        description="From a claim to the 无证经营 risk alert when no licence has arrived.",
    )
    tick_interval: float = Field(
        default=5.0, gt=0, description="Seconds between two checks of the deadlines."
    )
    inbox_refresh_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between two looks for departments onboarded since (their"
        " inbound topics are read and their inboxes receive what waited for them).",
    )
    metrics_port: int | None = Field(
        default=9465, description="Port of the Prometheus /metrics endpoint; unset: none."
    )

    def claim_deadline(self, start_ms: int) -> int:
        """The end of the claim period that starts at ``start_ms`` (epoch ms)."""
        if not self.working_days:
            return start_ms + _ms(self.claim_period)
        day = datetime.fromtimestamp(start_ms / 1000, CHINA_STANDARD_TIME).date()
        counted = 0
        while counted < self.claim_period.days:
            day += timedelta(days=1)
            counted += self.is_working_day(day)
        end_of_day = datetime.combine(day + timedelta(days=1), clock.min, CHINA_STANDARD_TIME)
        return int(end_of_day.timestamp() * 1000)

    def is_working_day(self, day: date) -> bool:
        if day in self.extra_working_days:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def licence_deadline(self, claimed_ms: int) -> int:
        return claimed_ms + _ms(self.licence_period)


def _ms(period: timedelta) -> int:
    return int(period.total_seconds() * 1000)


def _millis(moment: datetime | int) -> int:
    if isinstance(moment, int):
        return moment
    return int(moment.timestamp() * 1000)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- ids: derived from what caused a record, never from when it was made ----------------


def push_id(registration_event_id: str, item_code: str, department_code: str) -> str:
    """推送标识 of the push of ``item_code`` to a department for a registration event."""
    return deterministic_id(
        f"dual-notice-push|{registration_event_id}|{item_code}|{department_code}"
    )


def routing_id(registration_event_id: str, item_code: str) -> str:
    """标识 of the 分流失败 record of an item of a registration event."""
    return deterministic_id(f"dual-notice-routing|{registration_event_id}|{item_code}")


def applicant_notice_id(registration_event_id: str) -> str:
    return deterministic_id(f"dual-notice-applicant-notice|{registration_event_id}")


def alert_id(push: str, kind: AlertKind) -> str:
    return deterministic_id(f"dual-notice-alert|{push}|{kind}")


def closure_notice_id(registration_event_id: str, department_code: str) -> str:
    return deterministic_id(f"dual-notice-closure|{registration_event_id}|{department_code}")


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


class ApprovalCatalog:
    """The approval items with their matching rules, indexed for matching.

    A 许可项目 entry matches a wording it equals, or the wording followed by a
    parenthesised qualifier: "危险化学品经营（不含仓储）" needs 危险化学品经营许可. An industry
    code listed for an item matches it too. Only 许可项目 entries are matched: a 一般项目
    such as "食品销售（仅销售预包装食品）" needs no permit.
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
        yield from self._by_wording.get(entry, ())
        for position, character in enumerate(entry):
            if character in "（(" and position:
                yield from self._by_wording.get(entry[:position], ())

    def item_for_licence(self, licence: dict[str, Any]) -> CatalogItem | None:
        """The item a licence grants: its 审批事项编码, else its certificate's name."""
        code = licence.get("approval_item_code")
        if code:
            return self.items.get(code)
        return self._by_certificate.get(licence.get("certificate_name") or "")


class DepartmentDirectory:
    """The registry's departments, by code and by USCC."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.by_code: dict[str, dict[str, str]] = {}
        self.by_uscc: dict[str, dict[str, str]] = {}
        for record in records:
            ref = {"code": record["code"], "uscc": record["uscc"], "name": record["name"]}
            self.by_code[ref["code"]] = ref
            self.by_uscc[ref["uscc"]] = ref


# -- the push, its states and what may move it ----------------------------------------------


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


class Rejected(Exception):
    """A department action that cannot be applied; the message says why."""

    def __init__(self, reason: str, push_state: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.push_state = push_state


# -- what one event makes the processor send -----------------------------------------------


@dataclass
class Outgoing:
    """One record to publish on its platform topic, and the inboxes it is delivered to."""

    record_type: str  # a key of DUAL_NOTICE_RECORD_TYPES, or "dead_letter"
    key: str
    value: dict[str, Any]
    inboxes: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What handling one event sends, and the deadlines it starts."""

    outgoing: list[Outgoing] = field(default_factory=list)
    deadlines: list[tuple[int, str, str, Deadline]] = field(default_factory=list)

    def send(self, record_type: str, key: str, value: dict[str, Any], *inboxes: str) -> None:
        self.outgoing.append(Outgoing(record_type, key, value, inboxes))


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
UNDELIVERED = Counter(
    "xietong_dual_notice_undelivered",
    "Records for a department that has no inbox yet (not onboarded), by record type",
    ("record_type",),
)
REGISTRATIONS_READ = Counter(
    "xietong_dual_notice_registrations", "Registration events processed", ("event_kind",)
)
PROCESSING_SECONDS = Histogram(
    "xietong_dual_notice_processing_seconds",
    "From reading an input record to handing what it makes to the producer, by input",
    ("input",),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
DEAD_LETTERED = Counter(
    "xietong_dual_notice_dead_lettered",
    "Input records sent to the dead-letter topic, by record type and reason code",
    ("record_type", "reason"),
)


# -- where it reads and writes ------------------------------------------------------------------


@dataclass(frozen=True)
class DualNoticeTopics:
    """The topics of one run: the declarations of :mod:`xietong.topics`, or the
    benchmark's own (``inbox`` then names one topic standing for every inbox)."""

    app_name: str = APP_NAME
    registrations: str = REGISTRATIONS.name
    licences: str = LICENCES.name
    actions: str = DUAL_NOTICE_ACTIONS.name
    outputs: dict[str, str] = field(
        default_factory=lambda: {
            "dual_notice_push": DUAL_NOTICE_PUSHES.name,
            "dual_notice_applicant_notice": DUAL_NOTICE_APPLICANT_NOTICES.name,
            "dual_notice_routing_failure": DUAL_NOTICE_MANUAL_ROUTING.name,
            "rejected_department_action": DUAL_NOTICE_REJECTED_ACTIONS.name,
            "dual_notice_alert": DUAL_NOTICE_ALERTS.name,
            "entity_closure_notice": DUAL_NOTICE_CLOSURE_NOTICES.name,
            "dead_letter": DEAD_LETTER.name,
        }
    )
    inbox: str | None = None
    #: Every department's inbound topic (a regular expression, as librdkafka takes it).
    inbound_pattern: str = r"^dept\.[^.]+\.inbound$"

    def inbox_of(self, department_code: str) -> str:
        return self.inbox or DEPARTMENT_INBOX.name(department_code)


# -- the records it makes ----------------------------------------------------------------------


def registered_entity(registration: dict[str, Any], registrar_code: str | None) -> dict[str, Any]:
    """The registration as a push, a notice or an alert shows it (RegisteredEntity)."""
    return {
        "registration_event_id": registration["envelope"]["event_id"],
        "event_kind": registration["event_kind"],
        "registered_at": _millis(registration["envelope"]["event_time"]),
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


def new_push(
    entity: dict[str, Any],
    item: dict[str, str],
    matched_by: list[str],
    department: dict[str, str],
    routing: str,
    *,
    claim_deadline: int,
    starts_at: int,
    reassigned_from: str | None = None,
) -> dict[str, Any]:
    """A push just made (PUSHED, version 1): the DualNoticePush record."""
    return {
        "push_id": push_id(entity["registration_event_id"], item["code"], department["code"]),
        "version": 1,
        "state": PushState.PUSHED,
        "routing": routing,
        "entity": entity,
        "item": item,
        "matched_by": matched_by,
        "department": department,
        "pushed_at": now_ms(),
        "claim_deadline": claim_deadline,
        "claimed_at": None,
        "licence_deadline": None,
        "escalated_at": None,
        "unlicensed_alert_at": None,
        "return_reason": None,
        "reason_text": None,
        "fulfilled_by_licence": None,
        "reassigned_to_push_id": None,
        "reassigned_from_push_id": reassigned_from,
        "state_changed_at": starts_at,
        "changed_by": PLATFORM,
    }


# -- the processor ----------------------------------------------------------------------------


class DualNoticeProcessor:
    """The 双告知 Faust app: its tables, agents and timers, and the rules they apply.

    Tables, all keyed by USCC and held in memory, rebuilt from their changelogs:

    * ``registered_scopes``: the entity's latest 许可项目 entries and industry code (a
      变更 is compared with them), the event that set them and the ones before;
    * ``pushes``: the entity's pushes and 分流失败 records, each with the event that last
      changed it and the department actions applied to it;
    * ``licences``: the licences the entity holds, by issuing authority and number.
    """

    def __init__(
        self,
        settings: Settings,
        rules: DualNoticeSettings | None = None,
        topics: DualNoticeTopics | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules or DualNoticeSettings()
        self.topics = topics or DualNoticeTopics()
        self.clients = KafkaClients(settings, "streams")
        self.app = make_app(settings, self.topics.app_name)
        self._writers = {
            name: RecordWriter(self.clients, record)
            for name, record in {
                **DUAL_NOTICE_RECORD_TYPES,
                "dead_letter": DEAD_LETTER_RECORD,
            }.items()
        }
        self._read = self.clients.avro_deserializer()
        self._deadlines: list[tuple[int, str, str, str]] = []
        self._without_inbox: set[str] = set()
        self._catalog: tuple[int, ApprovalCatalog] | None = None
        self._directory: tuple[int, DepartmentDirectory] | None = None
        self._declare()

    # -- wiring ---------------------------------------------------------------------------

    def _declare(self) -> None:
        app, settings = self.app, self.settings

        self.approval_items = ReferenceData(self.clients, REGISTRY_APPROVAL_ITEMS)
        self.departments = ReferenceData(self.clients, REGISTRY_DEPARTMENTS)
        partitions, configs = settings.uscc_partitions, changelog_config(settings)
        self.registered_scopes = app.Table(
            "registered-scopes", partitions=partitions, extra_topic_configs=configs
        )
        self.pushes = app.Table(
            "pushes",
            partitions=partitions,
            extra_topic_configs=configs,
            on_recover=self._on_recovered,
        )
        self.licences = app.Table("licences", partitions=partitions, extra_topic_configs=configs)

        self._out = {
            name: declared_topic(app, topic) for name, topic in self.topics.outputs.items()
        }
        self.inboxes = Inboxes(app, self.clients, self.topics.inbox)
        # What the timers found due (a deadline passed, an inbox appeared), sent to the
        # push's own partition so that an agent makes the change in order with the rest.
        self.due_topic = app.topic(
            f"{app.conf.id}-due",
            internal=True,
            partitions=settings.uscc_partitions,
            key_serializer="raw",
            value_serializer="json",
            retention=timedelta(days=7),
            config=changelog_config(settings),
        )

        inputs = (
            (self.topics.registrations, "registrations", "registration", self.on_registration),
            (self.topics.licences, "licences", "licence", self.on_licence),
            (
                self.topics.actions,
                "department-actions",
                "received_department_action",
                self.on_action,
            ),
        )
        for topic, name, record_type, rule in inputs:
            app.agent(declared_topic(app, topic), name=name)(self._agent(record_type, rule))
        app.agent(self.due_topic, name="due")(self._due_agent)
        app.timer(self.rules.tick_interval, name="deadline-check")(self._check_deadlines)
        app.timer(self.rules.inbox_refresh_interval, name="inbox-refresh")(self._refresh_inboxes)
        self.relay = self._inbound_relay()
        app.task(self._start)

    async def _start(self) -> None:
        await self.app.add_runtime_dependency(self.relay)
        log_event(logger, "dual_notice_ready", app=self.app.conf.id, catalog=len(self.catalog))

    def writers(self) -> list[RecordWriter]:
        """Every kind of record the processor writes, with its schema."""
        return [*self._writers.values(), self._received_writer]

    def _inbound_relay(self) -> InboundRelay:
        """Department actions: from every department's inbound topic (the acting
        department is the topic's) to ``dualnotice.actions``, keyed by USCC so that they
        reach the partition holding the push. Unreadable ones are rejected with the
        reason; records of other schemas are other processors' business."""
        self._received_writer = RecordWriter(
            self.clients, DUAL_NOTICE_RECORD_TYPES["received_department_action"]
        )
        rejected_writer = self._writers["rejected_department_action"]

        def forward(stamp: dict[str, Any], action: dict[str, Any]) -> Produced:
            received = {**stamp, "action": action}
            return (self.topics.actions, action["uscc"], received, self._received_writer)

        def reject(stamp: dict[str, Any], raw: bytes, error: Exception) -> Produced:
            reason = (
                "not a readable DepartmentAction (schemas/avro/cn.gov.xietong.dualnotice."
                f"DepartmentAction.avsc, Confluent wire format): {error}"
            )
            rejected = rejection({**stamp, "original_value": raw}, reason, None)
            topic = self.topics.outputs["rejected_department_action"]
            return (topic, stamp["department_code"], rejected, rejected_writer)

        return InboundRelay(
            self.clients,
            group=self.clients.group(f"{self.topics.app_name}-inbound"),
            record_name=DEPARTMENT_ACTION.subject,
            forward=forward,
            reject=reject,
            refresh_interval=self.rules.inbox_refresh_interval,
            pattern=self.topics.inbound_pattern,
            id_prefix="dual-notice-action",
        )

    @property
    def catalog(self) -> ApprovalCatalog:
        """The approval catalog as registry.approval-items holds it now."""
        version = self.approval_items.version
        if self._catalog is None or self._catalog[0] != version:
            self._catalog = (version, ApprovalCatalog(self.approval_items.values()))
        return self._catalog[1]

    @property
    def directory(self) -> DepartmentDirectory:
        """The departments as registry.departments holds them now."""
        version = self.departments.version
        if self._directory is None or self._directory[0] != version:
            self._directory = (version, DepartmentDirectory(self.departments.values()))
        return self._directory[1]

    # -- agents: read, apply the rule, send ---------------------------------------------------

    def _agent(
        self, record_type: str, rule: Callable[[dict[str, Any]], Outcome]
    ) -> Callable[[faust.StreamT], Any]:
        """An agent reading ``record_type`` records: decode, apply ``rule``, send."""
        label = "department_action" if record_type == "received_department_action" else record_type
        timer = PROCESSING_SECONDS.labels(label)

        async def agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                with timer.time():
                    record = self._decode(event, record_type)
                    await self._send(record if isinstance(record, Outcome) else rule(record))

        agent.__name__ = f"{record_type}_agent"
        return agent

    async def _due_agent(self, stream: faust.StreamT) -> None:
        timer = PROCESSING_SECONDS.labels("deadline")
        async for due in stream:
            with timer.time():
                await self._send(self.on_due(due))

    def _decode(self, event: faust.EventT, record_type: str) -> dict[str, Any] | Outcome:
        """The record, or (unreadable input: kept whole, never dropped) its dead letter."""
        message = event.message
        try:
            # No context: the writer's schema comes with the record, and the platform's
            # schemas carry no data-contract rules to run (a fifth of the decoding time).
            value = self._read(message.value, None)
            assert isinstance(value, dict), f"{type(value).__name__}, not a record"
            return value
        except Exception as error:
            DEAD_LETTERED.labels(record_type, "avro.unreadable").inc()
            log_event(
                logger,
                "dual_notice_unreadable_input",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                error=str(error),
            )
            outcome = Outcome()
            outcome.send(
                "dead_letter",
                f"xietong.streams.{APP_NAME}",
                unreadable_input(APP_NAME, message, record_type, error),
            )
            return outcome

    async def _send(self, outcome: Outcome) -> None:
        for out in outcome.outgoing:
            value = self._writers[out.record_type].encode(out.value)
            key = out.key.encode()
            await self._out[out.record_type].send(key=key, value=value)
            for department in out.inboxes:
                inbox = self._inbox(department)
                if inbox is None:
                    UNDELIVERED.labels(out.record_type).inc()
                    if department not in self._without_inbox:
                        self._without_inbox.add(department)
                        log_event(
                            logger,
                            "dual_notice_inbox_missing",
                            department=department,
                            record_type=out.record_type,
                            uscc=out.key,
                            note="pushes wait until the department is onboarded; alerts and"
                            " notices for it are on the platform topics only",
                        )
                    continue
                await inbox.send(key=key, value=value)
        for due_at, uscc, identity, deadline in outcome.deadlines:
            heapq.heappush(self._deadlines, (due_at, uscc, identity, str(deadline)))

    def _inbox(self, department: str) -> DeclaredTopic | None:
        """The department's inbox, or None while it has none (not onboarded yet)."""
        return self.inboxes.topic(department)

    def has_inbox(self, department: str) -> bool:
        return self.inboxes.exists(department)

    # -- 设立 / 变更 / 注销 ---------------------------------------------------------------------

    def on_registration(self, registration: dict[str, Any]) -> Outcome:
        """A registration event: match, route and push (设立, 变更 adding scope), or close
        the entity and tell its licensing departments (注销, 吊销)."""
        outcome = Outcome()
        kind, status = registration["event_kind"], registration["status"]
        REGISTRATIONS_READ.labels(kind).inc()
        event_id = registration["envelope"]["event_id"]
        uscc = registration["uscc"]
        scope = {
            "permit_entries": sorted(
                {e["text"] for e in registration["business_scope_items"] if e["kind"] == "PERMIT"}
            ),
            "industry_code": registration["industry_code"],
        }
        needed = self.catalog.match(scope["permit_entries"], scope["industry_code"])
        known = self.registered_scopes.get(uscc)
        if known is not None and known["event_id"] == event_id:
            previous = known["previous"]  # this event again: compare as the first time
        else:
            previous = None if known is None else known["scope"]
        # An entity whose scope needs no permit is not remembered: no entry means "needed
        # nothing", which is all a later 变更 compares with (and most entities need none).
        if needed or known is not None:
            self.registered_scopes[uscc] = {
                "event_id": event_id,
                "scope": scope,
                "previous": previous,
            }

        if kind == "CANCEL" or status in ("CANCELLED", "REVOKED"):
            self._close_entity(registration, outcome)
            return outcome
        if kind not in ("ESTABLISH", "CHANGE"):
            return outcome
        if kind == "CHANGE" and previous is not None:
            # Only what the change adds; an entity whose earlier scope is unknown here
            # (registered before the platform) is told everything it needs.
            before = self.catalog.match(previous["permit_entries"], previous["industry_code"])
            needed_before = {match.item.code for match in before}
            needed = [match for match in needed if match.item.code not in needed_before]
        if needed:
            self._notify(registration, needed, outcome)
        return outcome

    def _entity(self, registration: dict[str, Any]) -> dict[str, Any]:
        authority = self.directory.by_uscc.get(registration["registering_authority_uscc"])
        return registered_entity(registration, authority["code"] if authority else None)

    def _notify(self, registration: dict[str, Any], needed: list[Match], outcome: Outcome) -> None:
        """告知审批部门 for each item (or 分流失败), then 告知申请人 once."""
        uscc = registration["uscc"]
        entity = self._entity(registration)
        event_id = entity["registration_event_id"]
        state = self._state(uscc)
        notice_items = []
        for match in needed:
            department = match.item.routes.get(entity["division_code"])
            if department is None:
                failure = self._routing_failure(state, entity, match, outcome)
                notice_items.append(
                    {
                        "item": match.item.ref,
                        "department": None,
                        "push_id": None,
                        "routing_id": failure,
                    }
                )
                continue
            push = self._push(
                state,
                outcome,
                entity=entity,
                item=match.item.ref,
                matched_by=list(match.matched_by),
                department=department,
                routing="AUTO",
                cause=event_id,
                starts_at=entity["registered_at"],
            )
            notice_items.append(
                {
                    "item": match.item.ref,
                    "department": department,
                    "push_id": push,
                    "routing_id": None,
                }
            )
        self.pushes[uscc] = state
        outcome.send(
            "dual_notice_applicant_notice",
            uscc,
            {
                "notice_id": applicant_notice_id(event_id),
                "entity": entity,
                "items": notice_items,
                "issued_at": entity["registered_at"],
            },
        )

    def _state(self, uscc: str) -> dict[str, Any]:
        known = self.pushes.get(uscc)
        return {"pushes": {}, "unrouted": {}} if known is None else known

    def _push(
        self,
        state: dict[str, Any],
        outcome: Outcome,
        *,
        entity: dict[str, Any],
        item: dict[str, str],
        matched_by: list[str],
        department: dict[str, str],
        routing: str,
        cause: str,
        starts_at: int,
        reassigned_from: str | None = None,
    ) -> str:
        """Make the push and send it to the department; a push this same cause made
        already (reprocessing) is sent again as it is."""
        identity = push_id(entity["registration_event_id"], item["code"], department["code"])
        entry = state["pushes"].get(identity)
        if entry is not None:
            self._resend(entry, outcome)
            return identity
        record = new_push(
            entity,
            item,
            matched_by,
            department,
            routing,
            claim_deadline=self.rules.claim_deadline(starts_at),
            starts_at=starts_at,
            reassigned_from=reassigned_from,
        )
        licence = self._valid_licence_for(entity["uscc"], item["code"])
        if licence is not None:  # the entity holds the permit already: nothing to claim
            record.update(state=PushState.FULFILLED, fulfilled_by_licence=licence["licence_number"])
        else:
            deadline = (record["claim_deadline"], entity["uscc"], identity, Deadline.CLAIM)
            outcome.deadlines.append(deadline)
        entry = {
            "record": record,
            "cause": cause,
            "actions": [],
            "delivered": self.has_inbox(department["code"]),
        }
        state["pushes"][identity] = entry
        _count(record, +1)
        PUSHES_CREATED.labels(routing).inc()
        self._resend(entry, outcome)
        log_event(
            logger,
            "dual_notice_pushed",
            event_id=entity["registration_event_id"],
            uscc=entity["uscc"],
            push_id=identity,
            item=item["code"],
            department=department["code"],
            routing=routing,
            state=str(record["state"]),
        )
        return identity

    def _resend(self, entry: dict[str, Any], outcome: Outcome) -> None:
        """Send the push as it is now; to the department's inbox too while it waits for
        the claim and was never changed (what the department has not seen)."""
        record = entry["record"]
        waiting = record["version"] == 1 and record["state"] == PushState.PUSHED
        inboxes = (record["department"]["code"],) if waiting else ()
        outcome.send("dual_notice_push", record["entity"]["uscc"], record, *inboxes)

    def _routing_failure(
        self, state: dict[str, Any], entity: dict[str, Any], match: Match, outcome: Outcome
    ) -> str:
        identity = routing_id(entity["registration_event_id"], match.item.code)
        entry = state["unrouted"].get(identity)
        if entry is None:
            failed_at = now_ms()
            record = {
                "routing_id": identity,
                "state": "OPEN",
                "entity": entity,
                "item": match.item.ref,
                "matched_by": list(match.matched_by),
                "reason": f"审批事项 {match.item.code} {match.item.name} has no department for"
                f" division {entity['division_code']} in the catalog's routes (分流失败)",
                "failed_at": failed_at,
                "routed_to": None,
                "routed_push_id": None,
                "state_changed_at": failed_at,
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
        outcome.send("dual_notice_routing_failure", entity["uscc"], entry["record"])
        return identity

    def _close_entity(self, registration: dict[str, Any], outcome: Outcome) -> None:
        """注销/吊销: close what is open, and tell every department whose licence is valid."""
        uscc, event_id = registration["uscc"], registration["envelope"]["event_id"]
        closed_at = _millis(registration["envelope"]["event_time"])
        state = self.pushes.get(uscc)
        if state is not None:
            for entry in state["pushes"].values():
                self._change(entry, PushState.CLOSED, event_id, closed_at, PLATFORM, outcome, OPEN)
            for entry in state["unrouted"].values():
                record = entry["record"]
                if record["state"] == "OPEN":
                    record.update(state="CLOSED", state_changed_at=closed_at)
                    entry["cause"] = event_id
                    MANUAL_ROUTING_QUEUE.dec()
                if entry["cause"] == event_id:
                    outcome.send("dual_notice_routing_failure", uscc, record)
            self.pushes[uscc] = state

        closed_on: date = registration["event_date"]
        holders: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for licence in (self.licences.get(uscc) or {}).values():
            if licence["status"] == "VALID" and (
                licence["valid_to"] is None or licence["valid_to"] >= closed_on.toordinal()
            ):
                holders[licence["authority_uscc"]].append(licence)
        for authority_uscc, held in sorted(holders.items()):
            department = self.directory.by_uscc.get(authority_uscc)
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
                "notice_id": closure_notice_id(event_id, department["code"]),
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
            outcome.send("entity_closure_notice", uscc, notice, department["code"])
            log_event(
                logger,
                "dual_notice_closure_notified",
                event_id=event_id,
                uscc=uscc,
                department=department["code"],
                licences=len(held),
            )

    # -- licences ---------------------------------------------------------------------------

    def on_licence(self, licence: dict[str, Any]) -> Outcome:
        """A licence: remember it; if valid, it fulfils the entity's open pushes of its item."""
        outcome = Outcome()
        uscc, event_id = licence["uscc"], licence["envelope"]["event_id"]
        item = self.catalog.item_for_licence(licence)
        held = dict(self.licences.get(uscc) or {})
        valid_to: date | None = licence["valid_to"]
        held[f"{licence['authority_uscc']}/{licence['licence_number']}"] = {
            "licence_number": licence["licence_number"],
            "certificate_name": licence["certificate_name"],
            "approval_item_code": item.code if item else licence["approval_item_code"],
            "authority_uscc": licence["authority_uscc"],
            "status": licence["status"],
            "valid_to": valid_to.toordinal() if valid_to else None,
        }
        self.licences[uscc] = held
        state = self.pushes.get(uscc)
        if item is None or licence["status"] != "VALID" or state is None:
            return outcome
        authority = self.directory.by_uscc.get(licence["authority_uscc"])
        by = authority["code"] if authority else PLATFORM
        at = _millis(licence["envelope"]["event_time"])
        fulfilled = False
        for entry in state["pushes"].values():
            if entry["record"]["item"]["code"] == item.code:
                fulfilled |= self._change(
                    entry,
                    PushState.FULFILLED,
                    event_id,
                    at,
                    by,
                    outcome,
                    AWAITING_LICENCE,
                    fulfilled_by_licence=licence["licence_number"],
                )
        if fulfilled:
            self.pushes[uscc] = state
        return outcome

    def _valid_licence_for(self, uscc: str, item_code: str) -> dict[str, Any] | None:
        for licence in (self.licences.get(uscc) or {}).values():
            if licence["approval_item_code"] == item_code and licence["status"] == "VALID":
                return dict(licence)
        return None

    # -- changing a push's state --------------------------------------------------------------

    def _change(
        self,
        entry: dict[str, Any],
        to: PushState,
        cause: str,
        at: int,
        by: str,
        outcome: Outcome,
        allowed: frozenset[PushState],
        **fields: Any,
    ) -> bool:
        """Move a push to ``to`` if its state is in ``allowed``; send the new snapshot.

        The event that made the change is remembered: the same event again (after a
        crash) sends the snapshot again and changes nothing. True if this event has
        changed the push, now or before (the caller stores it, and sends what goes with
        the change, again if need be).
        """
        record = entry["record"]
        if entry["cause"] == cause:
            outcome.send("dual_notice_push", record["entity"]["uscc"], record)
            return True
        if PushState(record["state"]) not in allowed:
            return False
        _count(record, -1)
        record.update(
            state=to,
            version=record["version"] + 1,
            state_changed_at=at,
            changed_by=by,
            **fields,
        )
        _count(record, +1)
        entry["cause"] = cause
        outcome.send("dual_notice_push", record["entity"]["uscc"], record)
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

    def on_action(self, received: dict[str, Any]) -> Outcome:
        """A department action: apply it, or record why it was not."""
        outcome = Outcome()
        action = received["action"]
        kind = action["action"]
        try:
            if kind not in ActionKind.__members__:
                raise Rejected(
                    f"unknown action {kind!r}: a department may CLAIM, RETURN or STOP its"
                    " pushes; the registration authority may also REASSIGN and ROUTE"
                )
            if ActionKind(kind) is ActionKind.ROUTE:
                self._route_by_hand(received, outcome)
            else:
                self._act_on_push(received, ActionKind(kind), outcome)
            ACTIONS_APPLIED.labels(kind).inc()
        except Rejected as rejected:
            ACTIONS_REJECTED.labels(kind).inc()
            outcome.outgoing.clear()
            outcome.deadlines.clear()
            outcome.send(
                "rejected_department_action",
                received["department_code"],
                rejection(received, rejected.reason, rejected.push_state),
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

    def _act_on_push(self, received: dict[str, Any], kind: ActionKind, outcome: Outcome) -> None:
        action, acting = received["action"], received["department_code"]
        uscc, identity = action["uscc"], action["push_id"]
        state = self.pushes.get(uscc)
        entry = None if state is None else state["pushes"].get(identity)
        if state is None or entry is None:
            raise Rejected(f"no push {identity} for {uscc}: check the push id in the inbox")
        record = entry["record"]
        if action["action_id"] in entry["actions"]:  # delivered again: applied already
            self._resend_after(state, entry, outcome)
            return
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
        now = PushState(record["state"])
        if now not in allowed_from:
            raise Rejected(
                f"cannot {kind} push {identity}: it is {now}; {kind} is possible from"
                f" {', '.join(sorted(allowed_from))}",
                record["state"],
            )
        at = _millis(action["acted_at"])
        fields: dict[str, Any] = {}
        if kind is ActionKind.CLAIM:
            fields = {"claimed_at": at, "licence_deadline": self.rules.licence_deadline(at)}
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
            event_id = record["entity"]["registration_event_id"]
            replacement = push_id(event_id, record["item"]["code"], target["code"])
            if replacement in state["pushes"]:
                raise Rejected(
                    f"push {identity} was given to {target['code']} already (push {replacement})",
                    record["state"],
                )
            self._push(
                state,
                outcome,
                entity=record["entity"],
                item=record["item"],
                matched_by=record["matched_by"],
                department=target,
                routing="REASSIGNED",
                cause=received["received_id"],
                starts_at=at,
                reassigned_from=identity,
            )
            fields = {"reassigned_to_push_id": replacement, "reason_text": action["reason_text"]}
        entry["actions"].append(action["action_id"])
        self._change(
            entry, to, received["received_id"], at, acting, outcome, allowed_from, **fields
        )
        self.pushes[uscc] = state

    def _resend_after(self, state: dict[str, Any], entry: dict[str, Any], outcome: Outcome) -> None:
        """An action applied already: send again what it sent (the push, and the push it
        made when it reassigned or routed)."""
        record = entry["record"]
        if "push_id" in record:
            outcome.send("dual_notice_push", record["entity"]["uscc"], record)
            made = record["reassigned_to_push_id"]
        else:
            outcome.send("dual_notice_routing_failure", record["entity"]["uscc"], record)
            made = record["routed_push_id"]
        if made in state["pushes"]:
            self._resend(state["pushes"][made], outcome)

    def _target(self, action: dict[str, Any], exclude: str | None = None) -> dict[str, str]:
        code = action["target_department_code"]
        if not code:
            raise Rejected(f"{action['action']} needs target_department_code: who gets the push")
        target = self.directory.by_code.get(code)
        if target is None:
            raise Rejected(f"target department {code!r} is not in the registry's departments")
        if code == exclude:
            raise Rejected(f"the push is with {code} already")
        return dict(target)

    def _route_by_hand(self, received: dict[str, Any], outcome: Outcome) -> None:
        """手动分流: the registration authority gives a 分流失败 item to a department."""
        action, acting = received["action"], received["department_code"]
        uscc, identity = action["uscc"], action["push_id"]
        state = self.pushes.get(uscc)
        entry = None if state is None else state["unrouted"].get(identity)
        if state is None or entry is None:
            raise Rejected(f"no 分流失败 record {identity} for {uscc} (ROUTE takes a routing id)")
        record = entry["record"]
        if action["action_id"] in entry["actions"]:
            self._resend_after(state, entry, outcome)
            return
        registrar = record["entity"]["registrar_code"]
        if acting != registrar:
            raise Rejected(
                f"{acting} may not route {identity} by hand: only the registration authority"
                f" {registrar or '(unknown)'} may",
                record["state"],
            )
        if record["state"] != "OPEN":
            raise Rejected(f"{identity} is {record['state']}, not waiting to be routed")
        target = self._target(action)
        at = _millis(action["acted_at"])
        routed = self._push(
            state,
            outcome,
            entity=record["entity"],
            item=record["item"],
            matched_by=record["matched_by"],
            department=target,
            routing="MANUAL",
            cause=received["received_id"],
            starts_at=at,
        )
        record.update(state="ROUTED", routed_to=target, routed_push_id=routed, state_changed_at=at)
        entry["cause"] = received["received_id"]
        entry["actions"].append(action["action_id"])
        MANUAL_ROUTING_QUEUE.dec()
        outcome.send("dual_notice_routing_failure", uscc, record)
        self.pushes[uscc] = state

    # -- what the timers find due ------------------------------------------------------------

    async def _check_deadlines(self) -> None:
        """Every tick: each push whose deadline has passed goes to its own partition."""
        now = now_ms()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, uscc, identity, deadline = heapq.heappop(self._deadlines)
            entry = self._entry(uscc, identity)
            waiting = PushState.PUSHED if deadline == Deadline.CLAIM else PushState.CLAIMED
            if entry is not None and entry["record"]["state"] == waiting:
                await self._due(uscc, identity, deadline, now)

    async def _due(self, uscc: str, identity: str, what: str, now: int) -> None:
        value = {"uscc": uscc, "push_id": identity, "due": what, "checked_at": now}
        await self.due_topic.send(key=uscc.encode(), value=value)

    def _entry(self, uscc: str, identity: str) -> dict[str, Any] | None:
        state = self.pushes.get(uscc)
        return None if state is None else state["pushes"].get(identity)

    def on_due(self, due: dict[str, Any]) -> Outcome:
        """A deadline passed (escalate the unclaimed push once, or raise the 无证经营
        alert once), or the push's department got an inbox (deliver what waited)."""
        outcome = Outcome()
        uscc, identity, checked_at = due["uscc"], due["push_id"], due["checked_at"]
        state = self.pushes.get(uscc)
        entry = None if state is None else state["pushes"].get(identity)
        if state is None or entry is None:
            return outcome
        record = entry["record"]
        if due["due"] == DELIVERY:
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
        cause = f"due|{identity}|{due['due']}"
        again = entry["cause"] == cause
        if not self._change(
            entry, to, cause, checked_at, PLATFORM, outcome, frozenset({waiting}), **fields
        ):
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

    async def _on_recovered(self) -> None:
        """After every rebalance: rebuild the deadlines and the gauges from the table."""
        deadlines: list[tuple[int, str, str, str]] = []
        PUSHES.clear()
        OVERDUE_PUSHES.set(0)
        queue = 0
        for uscc, state in self.pushes.items():
            for identity, entry in state["pushes"].items():
                record = entry["record"]
                _count(record, +1)
                if record["state"] == PushState.PUSHED:
                    deadlines.append(
                        (record["claim_deadline"], uscc, identity, Deadline.CLAIM.value)
                    )
                elif record["state"] == PushState.CLAIMED:
                    deadline = record["licence_deadline"]
                    deadlines.append((deadline, uscc, identity, Deadline.LICENCE.value))
            queue += sum(1 for e in state["unrouted"].values() if e["record"]["state"] == "OPEN")
        heapq.heapify(deadlines)
        self._deadlines = deadlines
        MANUAL_ROUTING_QUEUE.set(queue)

    async def _refresh_inboxes(self) -> None:
        """Departments onboarded since the last look get what waited for them."""
        new = await self.inboxes.refresh()
        if not new:
            return
        log_event(logger, "dual_notice_inboxes_found", departments=sorted(new))
        self._without_inbox -= new
        now = now_ms()
        for uscc, state in list(self.pushes.items()):
            for identity, entry in state["pushes"].items():
                record = entry["record"]
                waiting = record["state"] in (PushState.PUSHED, PushState.OVERDUE)
                if waiting and not entry["delivered"] and record["department"]["code"] in new:
                    await self._due(uscc, identity, DELIVERY, now)


def _count(record: dict[str, Any], step: int) -> None:
    PUSHES.labels(record["department"]["code"], str(record["state"])).inc(step)
    if record["state"] == PushState.OVERDUE:
        OVERDUE_PUSHES.inc(step)


def rejection(received: dict[str, Any], reason: str, push_state: str | None) -> dict[str, Any]:
    return {
        "rejection_id": deterministic_id(f"dual-notice-rejection|{received['received_id']}"),
        "department_code": received["department_code"],
        "inbound_topic": received["inbound_topic"],
        "inbound_partition": received["inbound_partition"],
        "inbound_offset": received["inbound_offset"],
        "action": received.get("action"),
        "original_value": received.get("original_value"),
        "push_state": push_state,
        "reason": reason,
        "rejected_at": now_ms(),
    }


# -- running it ---------------------------------------------------------------------------------


def run_worker(
    settings: Settings,
    rules: DualNoticeSettings | None = None,
    loglevel: str = "info",
    topics: DualNoticeTopics | None = None,
) -> None:
    """Run one worker until SIGTERM or SIGINT (``xietong streams dual-notice``)."""
    from prometheus_client import start_http_server

    from xietong.logs import configure

    configure()
    processor = DualNoticeProcessor(settings, rules, topics)
    log_event(logger, "dual_notice_starting", app=processor.app.conf.id)
    # Nothing is matched or routed before the whole catalog is here.
    processor.approval_items.load()
    processor.departments.load()
    processor.has_inbox("")  # the inboxes that exist, listed once before the loop starts
    for writer in processor.writers():
        writer.check_registered()
    log_event(
        logger,
        "dual_notice_reference_data_loaded",
        approval_items=len(processor.catalog),
        departments=len(processor.directory.by_code),
    )
    if processor.rules.metrics_port:
        start_http_server(processor.rules.metrics_port)
    run_faust_worker(processor.app, loglevel)


__all__ = [
    "ApprovalCatalog",
    "DualNoticeProcessor",
    "DualNoticeSettings",
    "DualNoticeTopics",
    "PushState",
    "run_worker",
]
