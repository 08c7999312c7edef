"""一处违法、处处受限 (joint punishment, 联合惩戒): a listing restricts the entity at every
department with a measure for it, until the listing ends (domain brief §6).

What it reads, all keyed by the entity's USCC and co-partitioned (``streams.runtime``):

* ``credit.list-entries``: 列入 (LISTED) and 移出 (REMOVED) of a listing, both carrying its
  entry id, list type, 列入日期 and planned removal date;
* ``enforcement.penalties``: a penalty that suspends or revokes a permit or licence
  (处罚类别 ``LICENCE_SUSPENSION_OR_REVOCATION``); and any penalty whose publicity is
  repaired (信用修复) before its term, which is dead-lettered (:mod:`streams.credit_repair`);
* ``permits.licences``: which department issued the entity which licence, valid when (its
  term, and the day of its 注销/吊销/撤销: ``status_changed_on``, :func:`licence_valid_on`);
* ``market.registrations``: the entity's latest registration (by the registration's own
  version): its 住所 division, which chooses the implementing departments, and its
  法定代表人, whom a person measure names;
* ``credit.matter-events``: a department handles a matter for the entity (its own report,
  or a credit check through the credit-check API), typed as the catalog's matter types;
* ``punishment.feedback``: departments' 反馈 on restriction hits, read from each
  department's inbound topic ``dept.<code>.inbound`` (the department is the topic's) and
  re-keyed by USCC here;
* ``registry.measures``, ``registry.list-types`` and ``registry.departments``, held whole
  by every worker.

What it tells whom (each also delivered to the department's inbox ``dept.<code>.inbox``):

* **惩戒告知** (``punishment.sanction-notices``) — for a 列入, each implementing department
  of every measure that applies to the list: one notice per (listing, measure, department)
  with the measure, its basis, the term and whether feedback is required;
* **许可审查告知** (``punishment.licence-reviews``) — a licence-revoking penalty, or a listing
  on the serious list (``review_list_types``), to every department that issued the entity a
  licence valid on the decision's date, naming those licences;
* **限制命中** (``punishment.restriction-hits``) — a matter dated while the entity was
  listed, of a type a measure of the handling department's sector restricts: one hit per
  (matter, measure) naming the listings, to the handling department, which answers with
  反馈 (APPLIED, or NOT_APPLICABLE with a reason);
* **逾期未反馈督办** (``punishment.alerts``) — a hit that needs feedback and has none dated by
  its deadline (raised time + the measure's ``feedback_days``), to the department and the
  credit authority of the entity's division;
* **列入严重违法失信名单建议** (``punishment.serious-listing-proposals``) — an 经营异常名录
  listing that stood three years, to the department that decides (:mod:`.escalation`);
* **解除惩戒告知** (``punishment.lift-notices``) — a listing ended (移出, or its planned
  removal date passed): one notice per department a sanction notice told to restrict
  because of it, naming the measures and that department's hits under the listing. (A hit
  of a department that had no sanction notice concerns one matter, decided on its date.)

Which department implements a measure: a measure names sectors (``implementing_sectors``),
the registry seats departments by sector and division. The entity's division is the
住所行政区划 of its latest registration (``division_basis`` REGISTRATION on the notice);
only while no registration is known, the 登记管理机关行政区划码 inside its USCC
(characters 3–8: the code-issuing authority's, basis USCC), which is wrong for an entity
that moved or was registered by a city authority (:func:`entity_division`). For each
sector, the department of that sector seated in that division, else in its city
(``3301xx`` → ``330100``), else in its province (``330000``): the nearest up the
administrative hierarchy; where none is seated, nobody is told and
``xietong_joint_punishment_unrouted`` counts it. The credit authority is found the same
way with ``credit_authority_sector`` (``development_reform``). A registration that moves
a standing listing's entity to another division tells the new departments (sanction
notices) and each department told before that no longer implements the measures to stop
(a lift notice, ``end_reason`` RELOCATED, from the registration's date;
``xietong_joint_punishment_relocations``); moved back, the departments it left are told
again. A matter's department is the one that reports it; whether a measure restricts
the matter there is :func:`streams.measures.binds_matter` — of the department's sector,
of that matter type, and on the entity: a measure on persons (``target``
PERSONS_IN_ROLE, 公司法 §178) is delivered as a sanction notice naming its roles and the
persons the registration gives (``persons``), and makes no hit. The credit check asks
the same function, so it answers RESTRICTED exactly when a hit is made.

**The disorder rule.** Every output is a function of the facts known about the entity,
never of the order they came in: after each event the processor derives, from all the
entity's facts, the set of records it should have published, and publishes those that are
new or whose content changed (same id, deterministic from content). So any arrival order
of the same events ends with the same final set — for a reader keeping the latest record
per id and leaving out the WITHDRAWN ones. Concretely:

* decisions use the listing's **effective dates**: it is in force on the days
  ``列入日期 ≤ day < end``, where ``end`` is the planned removal date or the 移出 record's
  removal date, whichever comes first (neither: open-ended) — the credit-check API's
  rule too; a 列入 dated in the future notifies at once with its dates, and restricts
  only from its start;
* a **late listing** (its 列入 read after matters dated within its term) makes hits for
  the matters kept in the entity's state: matters are kept for ``matter_window`` (90
  days by default) after their date, then dropped, with what they made left as it was
  (the window must exceed the longest feedback period);
* a **backdated removal or correction** that shows no listing in force on a matter's date
  republishes the matter's hits as WITHDRAWN (and their overdue alerts): a hit is withdrawn
  only by facts, never by time; a 移出 before the start date leaves the listing with no
  day in force: notices, then lift notices, and no hit; a 撤销 (removal reason
  ``CORRECTION``) voids the listing from its start whatever its date: the same, its lift
  notices ending on the 列入日期;
* a **信用修复 before its term** (:mod:`streams.credit_repair`: a year on the serious list,
  six months or a year for a penalty's publicity) is dead-lettered naming the record and
  the earliest day; it is not kept, so the listing stays in force — the credit check
  refuses the same records;
* duplicates (the same event id, or the same matter reported and credit-checked) change
  nothing: a matter is identified by (entity, department, matter type, matter reference)
  — the entity's USCC is part of every matter event id and hit id, so two bidders under
  one procurement reference are two matters;
* several listings at once: each gets its notices and lifts; a hit names every listing
  the measure applies to on the matter date;
* the 列入 record is what notifies (a 移出 read before its 列入 waits for it); of several
  versions of one record the later counts (:mod:`xietong.versions`: the source's version,
  then its source offset, never arrival order or a uuid). The records are keyed by their
  business key, so a correction is a new version, never a second record: a listing by its
  entry id (名单条目标识, which its 列入 and 移出 share; each kind is one record), a
  licence by issuer and 许可编号, a penalty by issuer and 文书号.
* what is not retracted: a notice, a licence review or a lift notice once sent stays
  (only hits and alerts have a WITHDRAWN state); so a later 列入 record that moves a
  listing's end past a lift already sent, or a 注销 record of a licence dated before a
  review's cause, leaves that record as it was. The property test keeps to histories
  without those (one 列入 record per listing, removals dated in the past). Likewise a
  registration that moves the entity: a department told before the move read keeps its
  notice and gets a RELOCATED lift, one told nothing if the registration came first
  hears nothing — what differs is only who heard of the old division; the departments
  whose last word is a sanction notice are those of the latest registration in any
  order (``tests/unit/test_joint_punishment_measures.py``).

Time is event time: a listing ends on its date (China Standard Time), a feedback
deadline runs from the hit's event time. A timer compares them with the clock every
``tick_interval`` seconds and sends each due entity through the internal topic
``xietong.streams.joint-punishment-due``, keyed by USCC, so the change is made on the
entity's own partition.

**A province's first day.** With a cut-over (``history_until``, ``--history-until``), a
listing that ended by the cut-over (its end day starting at or before it) sends nothing —
no notice, review, hit or lift; a licence-revoking penalty decided on a day over by then
sends no review; a feedback deadline passed by then raises no alert (the hit shows it
PENDING). A listing standing at the cut-over is live (``streams/README.md``).

Guarantee: at least once with deterministic ids. State is one table, ``entities`` (by
USCC: the facts, and each published record's content digest with the event that last
changed it), backed by its changelog. Outputs go through a librdkafka producer that
Faust's pre-commit flush waits for (:class:`OutputProducer`), so an offset is committed
only once what its events sent is acknowledged. After a crash the events since the last
commit are processed again; an event that changes nothing re-sends what it had sent (same ids,
same content), so a reader keeping the latest record per id sees each once.

Run it with ``xietong streams joint-punishment``; settings are
``XIETONG_JOINT_PUNISHMENT_*`` (:class:`JointPunishmentSettings`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, TypedDict

from prometheus_client import Counter

from streams.credit_repair import RepairTooEarly, listing_repair_refusal, penalty_repair_refusal
from streams.joint_punishment.escalation import (
    LISTING_AUTHORITY,
    PROPOSED_LIST,
    REGISTRATION_AUTHORITY,
    escalates,
    escalation_due_on,
    proposal,
    serious_listing_proposal_id,
)
from streams.joint_punishment.settings import JointPunishmentSettings
from streams.measures import PERSONS_IN_ROLE, binds_matter, roles_of, target_of
from streams.outputs import Outgoing, RuleOutput
from xietong.clock import business_clock, epoch_day, millis
from xietong.dead_letters import Reason, dead_letter
from xietong.ids import deterministic_id
from xietong.logs import log_event
from xietong.versions import is_later, version_of

APP_NAME = "joint-punishment"
logger = logging.getLogger(__name__)


# -- time: dates are days since 1970-01-01 (Avro's date), moments epoch milliseconds; -------
# -- the day a moment falls on is the business clock's (the province's time zone) -----------


def optional_day(value: date | int | None) -> int | None:
    return None if value is None else epoch_day(value)


def day_of(moment_ms: int) -> int:
    """The day (in the province's time zone) a moment falls on, as an epoch day."""
    return business_clock().epoch_day_of(moment_ms)


def day_start(day: int) -> int:
    """Midnight in the province at the start of ``day`` (an epoch day), epoch ms."""
    return business_clock().midnight_ms(day)


# -- ids: derived from what a record is about, never from when it was made -----------------


@lru_cache(maxsize=65_536)
def sanction_notice_id(entry_id: str, measure_code: str, department_code: str) -> str:
    return deterministic_id(f"sanction-notice|{entry_id}|{measure_code}|{department_code}")


@lru_cache(maxsize=65_536)
def licence_review_id(cause_key: str, department_code: str) -> str:
    return deterministic_id(f"licence-review|{cause_key}|{department_code}")


@lru_cache(maxsize=65_536)
def restriction_hit_id(
    uscc: str, department_code: str, matter_type: str, matter_reference: str, measure_code: str
) -> str:
    """命中标识: one hit per (entity, matter, measure) — a report and a credit check of the
    matter are one hit, two entities under one matter reference are two."""
    matter = f"{uscc}|{department_code}|{matter_type}|{matter_reference}"
    return deterministic_id(f"restriction-hit|{matter}|{measure_code}")


@lru_cache(maxsize=65_536)
def feedback_alert_id(hit_id: str) -> str:
    return deterministic_id(f"punishment-alert|{hit_id}|FEEDBACK_OVERDUE")


@lru_cache(maxsize=65_536)
def lift_notice_id(entry_id: str, department_code: str) -> str:
    return deterministic_id(f"lift-notice|{entry_id}|{department_code}")


def matter_key(department_code: str, matter_type: str, matter_reference: str) -> str:
    """A matter's key in its entity's state (the state is the entity's: no USCC needed)."""
    return f"{department_code}|{matter_type}|{matter_reference}"


# -- the catalog: measures, lists and departments, as the registry publishes them ----------


def department_ref(record: dict[str, Any]) -> dict[str, str]:
    return {"code": record["code"], "uscc": record["uscc"], "name": record["name"]}


def measure_ref(measure: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": measure["code"],
        "text": measure["text"],
        "legal_basis": measure["legal_basis"],
        "feedback_required": measure["feedback_required"],
        "feedback_days": measure["feedback_days"],
        "target": target_of(measure),
        "roles": roles_of(measure),
    }


def restricted_persons(
    measure: dict[str, Any], registration: dict[str, Any] | None
) -> list[dict[str, str]]:
    """受限人员: the holders of a person measure's roles the platform knows — the
    registration names the 法定代表人 only (registration.avsc); none for an entity measure."""
    if target_of(measure) != PERSONS_IN_ROLE or registration is None:
        return []
    name = (registration.get("legal_representative") or "").strip()
    if "LEGAL_REPRESENTATIVE" not in roles_of(measure) or not name:
        return []
    return [{"role": "LEGAL_REPRESENTATIVE", "name": name}]


def entity_division(uscc: str, registration: dict[str, Any] | None) -> tuple[str, str]:
    """The division whose departments implement measures for the entity, and its basis:
    the 住所行政区划 of its latest registration (``REGISTRATION``); only when no
    registration is known, the code-issuing authority's division inside the USCC
    (characters 3–8, ``USCC``) — which is not where an entity that moved, or one
    registered by a city authority, is."""
    if registration is not None and registration.get("division_code"):
        return str(registration["division_code"]), "REGISTRATION"
    return uscc[2:8], "USCC"


def seats(division: str) -> list[str]:
    """The divisions whose departments serve ``division``, nearest first: itself, its
    city, its province (GB/T 2260: ``330106`` → ``330100`` → ``330000``)."""
    return list(dict.fromkeys((division, f"{division[:4]}00", f"{division[:2]}0000")))


class PunishmentCatalog:
    """The measures catalog, the list types and the departments, indexed for the rules."""

    def __init__(
        self,
        measures: Iterable[dict[str, Any]],
        list_types: Iterable[dict[str, Any]],
        departments: Iterable[dict[str, Any]],
    ) -> None:
        self.measures = {m["code"]: m for m in sorted(measures, key=lambda m: m["code"])}
        self.list_names = {t["code"]: t["name"] for t in list_types}
        self.departments: dict[str, dict[str, Any]] = {}
        self.by_uscc: dict[str, dict[str, str]] = {}
        self._seated: dict[tuple[str, str], dict[str, str]] = {}
        for record in sorted(departments, key=lambda d: d["code"]):
            self.departments[record["code"]] = record
            self.by_uscc.setdefault(record["uscc"], department_ref(record))
            self._seated.setdefault(
                (record["sector_code"], record["division_code"]), department_ref(record)
            )
        self.by_list_type: dict[str, list[dict[str, Any]]] = {}
        self.by_matter_type: dict[str, list[dict[str, Any]]] = {}
        self.matter_type_names: dict[str, str] = {}
        for measure in self.measures.values():
            for list_type in measure["list_types"]:
                self.by_list_type.setdefault(list_type, []).append(measure)
            for matter in measure["matter_types"]:
                self.by_matter_type.setdefault(matter["code"], []).append(measure)
                self.matter_type_names.setdefault(matter["code"], matter["name"])

    def seated(self, sector: str, division: str) -> dict[str, str] | None:
        """The department of ``sector`` nearest ``division`` (itself, city, province)."""
        for seat in seats(division):
            found = self._seated.get((sector, seat))
            if found is not None:
                return found
        return None

    def implementing(self, measure: dict[str, Any], division: str) -> list[dict[str, str]]:
        """The departments that implement ``measure`` for an entity of ``division``: one per
        sector of the measure that has a department seated at or above the division."""
        found: dict[str, dict[str, str]] = {}
        for sector in measure["implementing_sectors"]:
            department = self.seated(sector, division)
            if department is None:
                UNROUTED.labels(sector).inc()
            else:
                found[department["code"]] = department
        return [found[code] for code in sorted(found)]


# -- what one event makes the processor send -------------------------------------------------


@dataclass
class PunishmentOutput(RuleOutput):
    """What handling one event sends, and when the entity is next due (epoch ms)."""

    due: list[tuple[int, str]] = field(default_factory=list)


#: What an input can change, so what is derived again after it: the notices (from 列入),
#: the licence reviews (penalties, licences, 列入), the hits with their alerts (matters,
#: feedback, listings, time), the lifts (listings, hits, time) and the proposals of the
#: serious list (listings, time: :mod:`.escalation`).
NOTICES, REVIEWS, HITS, LIFTS, PROPOSALS = "notices", "reviews", "hits", "lifts", "proposals"
EVERYTHING = frozenset({NOTICES, REVIEWS, HITS, LIFTS, PROPOSALS})
AFTER = {
    "list_entry": EVERYTHING,
    "penalty": frozenset({REVIEWS}),
    "licence": frozenset({REVIEWS}),
    "registration": frozenset({NOTICES, HITS, LIFTS}),
    "matter": frozenset({HITS, LIFTS}),
    "feedback": frozenset({HITS, LIFTS}),
    "due": frozenset({HITS, LIFTS, PROPOSALS}),
}

#: Records whose latest version may say WITHDRAWN: their last content is kept in the state;
#: each is withdrawn when the section that derives it no longer does, with that reason.
WITHDRAWABLE = {
    "restriction_hit": HITS,
    "feedback_overdue_alert": HITS,
    "serious_listing_proposal": PROPOSALS,
}
WITHDRAWN_REASONS = {
    "restriction_hit": "no listing the measure applies to was in force on the matter date"
    " (a later removal or correction)",
    "serious_listing_proposal": "the 经营异常 listing ended before its three years were over"
    " (a later removal or correction)",
}
#: Where each record's id is.
ID_FIELD = {
    "sanction_notice": "notice_id",
    "licence_review_notice": "review_id",
    "restriction_hit": "hit_id",
    "feedback_overdue_alert": "alert_id",
    "lift_notice": "lift_id",
    "serious_listing_proposal": "proposal_id",
}


# -- metrics ----------------------------------------------------------------------------------

EVENTS = Counter("xietong_joint_punishment_events", "Input events processed, by input", ("input",))
SANCTION_NOTICES = Counter(
    "xietong_joint_punishment_sanction_notices",
    "Sanction notices made, by department and measure",
    ("department", "measure"),
)
LICENCE_REVIEWS = Counter(
    "xietong_joint_punishment_licence_reviews",
    "Licence-review notices made, by department and cause",
    ("department", "cause"),
)
RESTRICTION_HITS = Counter(
    "xietong_joint_punishment_restriction_hits",
    "Restriction hits made, by department and measure",
    ("department", "measure"),
)
HITS_WITHDRAWN = Counter(
    "xietong_joint_punishment_hits_withdrawn", "Restriction hits withdrawn by later facts"
)
FEEDBACK_REQUIRED = Counter(
    "xietong_joint_punishment_feedback_required",
    "Restriction hits that need feedback (the feedback rate's denominator), by department",
    ("department",),
)
FEEDBACK_GIVEN = Counter(
    "xietong_joint_punishment_feedback_given",
    "Restriction hits given their first feedback (the feedback rate's numerator), by"
    " department and outcome",
    ("department", "outcome"),
)
FEEDBACK_OVERDUE = Counter(
    "xietong_joint_punishment_feedback_overdue",
    "Overdue-feedback alerts raised, by department",
    ("department",),
)
LIFT_NOTICES = Counter(
    "xietong_joint_punishment_lift_notices", "Lift notices made, by department", ("department",)
)
RELOCATIONS = Counter(
    "xietong_joint_punishment_relocations",
    "Lift notices to departments that no longer implement a standing listing's measures"
    " because the entity's registration moved it to another division, by department",
    ("department",),
)
DIVISION_BASIS = Counter(
    "xietong_joint_punishment_division_basis",
    "Sanction notices made, by what chose their department's division: REGISTRATION"
    " (the entity's 住所) or USCC (no registration known)",
    ("basis",),
)
UNROUTED = Counter(
    "xietong_joint_punishment_unrouted",
    "Measures' sectors with no department seated for the entity's division",
    ("sector",),
)
REJECTED = Counter("xietong_joint_punishment_rejected", "Input dead-lettered, by input", ("input",))
REPAIRS_REFUSED = Counter(
    "xietong_joint_punishment_repairs_refused",
    "信用修复 before its term, refused (dead-lettered; the record stays in force), by input",
    ("input",),
)
SERIOUS_LISTING_PROPOSALS = Counter(
    "xietong_joint_punishment_serious_listing_proposals",
    "经营异常名录届满三年: proposals to list on the serious list sent, by department",
    ("department",),
)
HISTORY = Counter(
    "xietong_joint_punishment_history",
    "Records taken as the province's history (before the cut-over): not sent, by record type",
    ("output",),
)
#: The digest a sent record has when it was history: what it would have been was not sent.
HISTORY_DIGEST = "history"
#: The digest of a sanction notice whose department was since told to stop because the
#: entity moved (a RELOCATED lift): derived again (the entity moved back), it is sent again.
LIFTED_DIGEST = "lifted"


# -- facts: what the rules remember of each input, in plain JSON ------------------------------


def _later(new: dict[str, Any], known: dict[str, Any] | None) -> bool:
    """Whether ``new`` supersedes ``known``: the later version of the record
    (:func:`xietong.versions.is_later`), never the later to arrive."""
    if known is None:
        return True
    if "version" not in known:  # kept by an earlier worker: ordered as it ordered them
        return (new["event_time"], new["event_id"]) > (known["event_time"], known["event_id"])
    return is_later(new["version"], known["version"])


def _keep_later(facts: dict[str, Any], key: str, fact: dict[str, Any]) -> bool:
    """Keep ``fact`` under ``key`` if it supersedes what is there; whether it did."""
    if not _later(fact, facts.get(key)):
        return False
    facts[key] = fact
    return True


def _fact(
    record: dict[str, Any],
    fields: tuple[str, ...],
    days: tuple[str, ...] = (),
    optional_days: tuple[str, ...] = (),
) -> dict[str, Any]:
    """What the rules keep of an input record: its event id and time, its version (the
    order of the record's versions), ``fields`` as they are, ``days`` (and
    ``optional_days``, which may be absent) as epoch days."""
    envelope = record["envelope"]
    fact = {
        "event_id": envelope["event_id"],
        "event_time": millis(envelope["event_time"]),
        "version": version_of(record),
    }
    fact.update((name, record[name]) for name in fields)
    fact.update((name, epoch_day(record[name])) for name in days)
    fact.update((name, optional_day(record[name])) for name in optional_days)
    return fact


def listing_fact(record: dict[str, Any]) -> dict[str, Any]:
    fact = _fact(
        record,
        (
            "list_type",
            "entity_name",
            "listing_authority_name",
            "listing_authority_uscc",
            "reason",
            "legal_basis",
            "document_number",
            "removal_reason",
        ),
        days=("listed_on",),
        optional_days=("planned_removal_on", "removed_on"),
    )
    if fact["removed_on"] is None:  # a 移出 without its date is removed on the record's day
        fact["removed_on"] = day_of(fact["event_time"])
    return fact


def licence_fact(record: dict[str, Any]) -> dict[str, Any]:
    fact = _fact(
        record,
        ("licence_number", "certificate_name", "approval_item_code", "authority_uscc", "status"),
        days=("valid_from",),
        optional_days=("valid_to",),
    )
    # A record written before the schema had status_changed_on has no such key.
    fact["status_changed_on"] = optional_day(record.get("status_changed_on"))
    return fact


def registration_fact(record: dict[str, Any]) -> dict[str, Any]:
    """What the rules keep of a registration (设立/变更/注销…): where the entity is and who
    represents it, from its latest version."""
    return _fact(record, ("event_kind", "name", "division_code", "legal_representative"),
                 days=("event_date",))  # fmt: skip


def licence_valid_on(licence: dict[str, Any], day: int) -> bool:
    """Valid on ``day``: within its term (有效期自 … 有效期至, open-ended when absent) and,
    if its latest version is not VALID (注销, 吊销, 撤销 …), before the day its status
    changed. Only a record that does not say that day falls back to its own date, which
    the connectors set to the decision date: such a licence was never valid here."""
    if day < licence["valid_from"]:
        return False
    if licence["valid_to"] is not None and day > licence["valid_to"]:
        return False
    if licence["status"] == "VALID":
        return True
    # A fact kept by an earlier worker has no status_changed_on.
    ended = licence.get("status_changed_on")
    return day < (day_of(licence["event_time"]) if ended is None else ended)


def penalty_fact(record: dict[str, Any]) -> dict[str, Any]:
    return _fact(
        record,
        (
            "party_name",
            "decision_number",
            "violation_type",
            "content",
            "legal_basis",
            "affected_licence",
            "authority_name",
            "authority_uscc",
        ),
        days=("decided_on",),
    )


@dataclass(frozen=True)
class Listing:
    """A listing as the rules see it: its 列入 record, and how it ends (if it does)."""

    entry_id: str
    listed: dict[str, Any]
    removed: dict[str, Any] | None

    @property
    def list_type(self) -> str:
        return str(self.listed["list_type"])

    @property
    def end(self) -> int | None:
        """The first day it is no longer in force: its removal or its planned end,
        whichever comes first (None: open-ended); its start if it was voided."""
        if self.voided:
            return int(self.listed["listed_on"])
        ends = [day for day in (self.planned_end, self.removed_on) if day is not None]
        return min(ends, default=None)

    @property
    def voided(self) -> bool:
        """撤销: a removal that corrects the listing (``CORRECTION``) says it should never
        have stood, so it voids the listing from its start, whatever the removal's date;
        移出 for any other reason (期满, 信用修复) ends it from its date on."""
        return self.removed is not None and self.removed["removal_reason"] == "CORRECTION"

    @property
    def planned_end(self) -> int | None:
        planned = self.listed["planned_removal_on"]
        return None if planned is None else int(planned)

    @property
    def removed_on(self) -> int | None:
        return None if self.removed is None else int(self.removed["removed_on"])

    @property
    def ended_by_removal(self) -> bool:
        return self.voided or (self.removed_on is not None and self.removed_on == self.end)

    def in_force_on(self, day: int) -> bool:
        end = self.end
        return self.listed["listed_on"] <= day and (end is None or day < end)

    def ref(self, catalog: PunishmentCatalog) -> dict[str, Any]:
        listed = self.listed
        return {
            "entry_id": self.entry_id,
            "list_type": self.list_type,
            "list_name": catalog.list_names.get(self.list_type, self.list_type),
            "listing_authority_name": listed["listing_authority_name"],
            "listing_authority_uscc": listed["listing_authority_uscc"],
            "reason": listed["reason"],
            "legal_basis": listed["legal_basis"],
            "document_number": listed["document_number"],
            "listed_on": listed["listed_on"],
            "planned_removal_on": listed["planned_removal_on"],
        }

    @property
    def end_reason(self) -> str:
        if not self.ended_by_removal:
            return "EXPIRY"
        assert self.removed is not None
        return str(self.removed["removal_reason"] or "UNKNOWN")

    @property
    def ended_at(self) -> int:
        """When it ended, in event time: the 移出 record's time, or the planned date's start."""
        if self.ended_by_removal:
            assert self.removed is not None
            return int(self.removed["event_time"])
        return day_start(int(self.listed["planned_removal_on"]))


def digest(value: dict[str, Any]) -> str:
    """A record's content fingerprint. The records are built field by field in a fixed
    order from plain values (and read back from JSON in that order), so their ``repr``
    is canonical: much cheaper than sorted JSON."""
    return hashlib.blake2b(repr(value).encode(), digest_size=10).hexdigest()


class SentRecord(TypedDict, total=False):
    """What the state remembers of a record it published (``state["sent"][record id]``)."""

    digest: str  # of the content last published
    cause: str  # the event that last changed it: that event again re-sends it
    record_type: str  # withdrawable records only (hits, alerts): their type …
    value: dict[str, Any]  # … and last content, to publish them WITHDRAWN
    told: dict[str, Any]  # sanction notices only: entry id, department, measure


#: The one-letter keys of the state written before the fields had names.
_SENT_RECORD_KEYS = {"d": "digest", "c": "cause", "t": "record_type", "v": "value"}


def _named(sent: dict[str, dict[str, Any]]) -> None:
    """Give an earlier worker's sent records their field names, in place."""
    # A worker writes all of an entity's sent records one way: the first one tells.
    if not sent or "d" not in next(iter(sent.values())):
        return
    for identity, known in sent.items():
        sent[identity] = {_SENT_RECORD_KEYS.get(k, k): v for k, v in known.items()}


def new_entity() -> dict[str, Any]:
    """The state of an entity the processor has heard nothing about."""
    return {
        "listings": {},  # entry id → {"listed": fact, "removed": fact}
        "licences": {},  # authority USCC/licence number → fact (the latest)
        "registration": None,  # the latest registration's fact: division, 法定代表人
        "penalties": {},  # authority USCC/decision number → fact (licence-revoking only)
        "matters": {},  # department|type|reference → {..., "events": {event id → fact}}
        "feedback": {},  # hit id → {department|feedback id → fact}
        "sent": {},  # record id → a SentRecord
        "due": None,  # when the entity is next due (epoch ms), or None
        "due_by": {},  # that, by what comes due: HITS (feedback deadlines), LIFTS (ends)
    }


# -- the rules ----------------------------------------------------------------------------------


class JointPunishmentRules:
    """The rule methods: each takes one input and the time, updates the entity's state in
    ``entities`` (a Faust table, or any mutable mapping) and returns what to send.

    They read nothing else but the catalog, so a harness can drive them with a dict and
    a fixed catalog (``tests/unit/test_joint_punishment_rules.py``).
    """

    def __init__(
        self,
        entities: MutableMapping[str, Any],
        catalog: Callable[[], PunishmentCatalog],
        rules: JointPunishmentSettings | None = None,
    ) -> None:
        self.entities = entities
        self.catalog = catalog
        self.rules = rules or JointPunishmentSettings()

    # -- inputs ---------------------------------------------------------------------------

    def on_list_entry(self, record: dict[str, Any], now: int) -> PunishmentOutput:
        """列入 or 移出: remember it (the latest record of each kind counts), then settle."""
        EVENTS.labels("list_entry").inc()
        action = record["action"]
        if action not in ("LISTED", "REMOVED"):
            return self._reject(
                "credit_list_entry",
                record,
                "action",
                f"action {action!r}: a list entry is LISTED (列入) or REMOVED (移出)",
            )
        uscc = record["uscc"]
        fact = listing_fact(record)
        if action == "REMOVED":
            refusal = listing_repair_refusal(
                entry_id=record["entry_id"],
                list_type=record["list_type"],
                listed_on=record["listed_on"],
                removed_on=fact["removed_on"],
                removal_reason=record["removal_reason"],
            )
            if refusal is not None:
                return self._refuse_repair("credit_list_entry", record, "removed_on", refusal)
        state = self._state(uscc)
        entry = state["listings"].setdefault(record["entry_id"], {})
        slot = "listed" if action == "LISTED" else "removed"
        changed = _keep_later(entry, slot, fact)
        return self._settle(uscc, state, fact["event_id"], now, changed, AFTER["list_entry"])

    def on_penalty(self, record: dict[str, Any], now: int) -> PunishmentOutput:
        """A penalty: only one that suspends or revokes a licence is remembered (it sends
        licence-review notices)."""
        EVENTS.labels("penalty").inc()
        refusal = penalty_repair_refusal(
            decision_number=record["decision_number"],
            decided_on=record["decided_on"],
            legal_basis=record["legal_basis"],
            violation_type=record["violation_type"],
            publicity_ended_on=record.get("publicity_ended_on"),
            publicity_end_reason=record.get("publicity_end_reason"),
        )
        if refusal is not None:
            return self._refuse_repair("penalty", record, "publicity_ended_on", refusal)
        if "LICENCE_SUSPENSION_OR_REVOCATION" not in record["categories"]:
            return PunishmentOutput()
        uscc = record["uscc"]
        state = self._state(uscc)
        fact = penalty_fact(record)
        key = f"{fact['authority_uscc']}/{fact['decision_number']}"
        changed = _keep_later(state["penalties"], key, fact)
        return self._settle(uscc, state, fact["event_id"], now, changed, AFTER["penalty"])

    def on_licence(self, record: dict[str, Any], now: int) -> PunishmentOutput:
        """A licence: remember its latest record (who issued it, valid when)."""
        EVENTS.labels("licence").inc()
        uscc = record["uscc"]
        state = self._state(uscc)
        fact = licence_fact(record)
        key = f"{fact['authority_uscc']}/{fact['licence_number']}"
        changed = _keep_later(state["licences"], key, fact)
        if not (state["listings"] or state["penalties"]):
            # Nothing it could be reviewed for yet: keep it, derive nothing.
            if changed:
                self.entities[uscc] = state
            return PunishmentOutput()
        return self._settle(uscc, state, fact["event_id"], now, changed, AFTER["licence"])

    def on_registration(self, record: dict[str, Any], now: int) -> PunishmentOutput:
        """A registration (market.registrations, keyed by USCC like the list entries): the
        latest version by the registration's own version says the entity's division, so
        which departments implement its measures, and its 法定代表人. A move to another
        division moves a standing listing's restriction: the new departments get sanction
        notices, the old ones a lift notice (``RELOCATED``)."""
        EVENTS.labels("registration").inc()
        uscc = record["uscc"]
        state = self._state(uscc)
        fact = registration_fact(record)
        known = state.get("registration")
        changed = known is None or _later(fact, known)
        if changed:
            state["registration"] = fact
        if not state["listings"]:
            # Nothing it could route yet: keep it, derive nothing.
            if changed:
                self.entities[uscc] = state
            return PunishmentOutput()
        return self._settle(uscc, state, fact["event_id"], now, changed, AFTER["registration"])

    def on_matter(self, record: dict[str, Any], now: int) -> PunishmentOutput:
        """A matter a department handles for the entity: kept for the matter window, and
        checked against the entity's listings on the matter date."""
        EVENTS.labels("matter").inc()
        catalog = self.catalog()
        department = catalog.departments.get(record["department_code"])
        if department is None:
            return self._reject(
                "matter_event",
                record,
                "department_code",
                f"department {record['department_code']!r} is not in registry.departments",
            )
        if department["uscc"] != record["department_uscc"]:
            return self._reject(
                "matter_event",
                record,
                "department_uscc",
                f"{record['department_uscc']} is not the USCC of {department['code']}"
                f" ({department['uscc']} in registry.departments)",
            )
        if record["matter_type"] not in catalog.matter_type_names:
            # No measure restricts it: nothing to check now or later.
            return PunishmentOutput()
        uscc = record["uscc"]
        state = self._state(uscc)
        key = matter_key(
            record["department_code"], record["matter_type"], record["matter_reference"]
        )
        matter = state["matters"].setdefault(
            key,
            {
                "department_code": record["department_code"],
                "matter_type": record["matter_type"],
                "matter_reference": record["matter_reference"],
                "events": {},
            },
        )
        changed = record["event_id"] not in matter["events"]
        if changed:
            matter["events"][record["event_id"]] = {
                "matter_date": epoch_day(record["matter_date"]),
                "occurred_at": millis(record["occurred_at"]),
                "matter_name": record["matter_name"],
                "source": record["source"],
            }
        if not state["listings"]:
            # Unlisted: keep the matter for a listing that may come late; derive nothing.
            if changed:
                self._prune(uscc, state, now)
                self.entities[uscc] = state
            return PunishmentOutput()
        return self._settle(uscc, state, record["event_id"], now, changed, AFTER["matter"])

    def on_feedback(self, received: dict[str, Any], now: int) -> PunishmentOutput:
        """A department's 反馈 on one of its restriction hits."""
        EVENTS.labels("feedback").inc()
        feedback, department = received["feedback"], received["department_code"]
        outcome = feedback["outcome"]
        problem = None
        if outcome not in ("APPLIED", "NOT_APPLICABLE"):
            problem = ("outcome", f"outcome {outcome!r}: feedback is APPLIED or NOT_APPLICABLE")
        elif outcome == "NOT_APPLICABLE" and not (feedback["reason"] or "").strip():
            problem = ("reason", "NOT_APPLICABLE needs the reason why the measure does not apply")
        uscc = feedback["uscc"]
        state = self._state(uscc)
        hit = state["sent"].get(feedback["hit_id"], {}).get("value")
        if problem is None and hit is not None and hit["department"]["code"] != department:
            problem = (
                "hit_id",
                f"hit {feedback['hit_id']} is {hit['department']['code']}'s, not {department}'s",
            )
        if problem is not None:
            return self._reject("received_restriction_feedback", received, *problem)
        fact = {
            "department_code": department,
            "feedback_id": feedback["feedback_id"],
            "outcome": outcome,
            "reason": feedback["reason"],
            "fed_back_at": millis(feedback["fed_back_at"]),
        }
        given = state["feedback"].setdefault(feedback["hit_id"], {})
        key = f"{department}|{feedback['feedback_id']}"
        changed = given.get(key) != fact
        given[key] = fact
        return self._settle(uscc, state, f"feedback|{key}", now, changed, AFTER["feedback"])

    def on_due(self, uscc: str, checked_at: int, cause: str) -> PunishmentOutput:
        """The entity's next due date passed (a listing's end, a feedback deadline)."""
        EVENTS.labels("due").inc()
        if uscc not in self.entities:
            return PunishmentOutput()
        state = self._state(uscc)
        return self._settle(uscc, state, cause, checked_at, False, AFTER["due"])

    # -- settling: derive what should have been sent, send the difference ------------------

    def _state(self, uscc: str) -> dict[str, Any]:
        known = self.entities.get(uscc)
        if known is None:
            return new_entity()
        _named(known["sent"])
        return known

    def _settle(
        self,
        uscc: str,
        state: dict[str, Any],
        cause: str,
        now: int,
        changed: bool,
        sections: frozenset[str],
    ) -> PunishmentOutput:
        """Derive again what ``sections`` hold (what the event could change), publish what
        is new or changed; withdraw hits and alerts no longer derived; note the next due
        date. ``cause`` is the event: what it changed remembers it, and the same event
        again re-sends what it had sent."""
        pruned = self._prune(uscc, state, now)
        history: dict[str, str] = {}
        desired, dues = self._derive(uscc, state, now, sections, history)
        outcome = PunishmentOutput()
        sent = state["sent"]
        for identity, record_type in history.items():
            if identity not in sent:  # counted once; a record sent before stays as it was
                sent[identity] = {"digest": HISTORY_DIGEST, "cause": cause}
                HISTORY.labels(record_type).inc()
                changed = True
        for identity, out in desired.items():
            fingerprint = digest(out.value)
            known = sent.get(identity)
            if known is None or known["digest"] != fingerprint:
                self._count(out, known)
                entry: dict[str, Any] = {"digest": fingerprint, "cause": cause}
                if out.record_type in WITHDRAWABLE:
                    entry.update(record_type=out.record_type, value=out.value)
                elif out.record_type == "sanction_notice":  # whom it told: a move lifts it
                    value = out.value
                    entry["told"] = {
                        "entry_id": value["listing"]["entry_id"],
                        "department": value["department"],
                        "measure": value["measure"],
                    }
                elif out.record_type == "lift_notice" and out.value["end_reason"] == "RELOCATED":
                    self._mark_lifted(sent, out.value)
                sent[identity] = entry
                outcome.outgoing.append(out)
                changed = True
            elif known["cause"] == cause:  # this event again (after a crash): send it again
                outcome.outgoing.append(out)
        for identity, known in sent.items():
            if identity in desired or "record_type" not in known:
                continue
            if WITHDRAWABLE[known["record_type"]] not in sections:
                continue
            value = known["value"]
            if value["status"] != "WITHDRAWN":
                value = {**value, "status": "WITHDRAWN"}
                if known["record_type"] in WITHDRAWN_REASONS:
                    value["withdrawn_reason"] = WITHDRAWN_REASONS[known["record_type"]]
                if known["record_type"] == "restriction_hit":
                    HITS_WITHDRAWN.inc()
                known.update(digest=digest(value), cause=cause, value=value)
                changed = True
            elif known["cause"] != cause:
                continue
            outcome.outgoing.append(self._outgoing(known["record_type"], uscc, value))
        due_by = {**state.get("due_by", {}), **dues}
        due = min((at for at in due_by.values() if at is not None), default=None)
        if due != state["due"]:
            state["due"] = due
            changed = True
            if due is not None:  # the timer's heap holds each entity's due dates once
                outcome.due.append((due, uscc))
        if due_by != state.get("due_by", {}):
            state["due_by"] = due_by
            changed = True
        if changed or pruned:
            self.entities[uscc] = state
        return outcome

    @staticmethod
    def _mark_lifted(sent: dict[str, Any], lift: dict[str, Any]) -> None:
        """A department relocated away was told to stop: should the entity move back, its
        sanction notices are new to it again (sent again, though their content is the
        same as before)."""
        code = lift["department"]["code"]
        for measure in lift["measures"]:
            notice = sent.get(
                sanction_notice_id(lift["listing"]["entry_id"], measure["code"], code)
            )
            if notice is not None and notice["digest"] != HISTORY_DIGEST:
                notice["digest"] = LIFTED_DIGEST

    def _outgoing(self, record_type: str, uscc: str, value: dict[str, Any]) -> Outgoing:
        if record_type == "feedback_overdue_alert":
            return Outgoing(record_type, uscc, value, tuple(value["recipients"]))
        return Outgoing(record_type, uscc, value, (value["department"]["code"],))

    def _count(self, out: Outgoing, known: dict[str, Any] | None) -> None:
        value, kind = out.value, out.record_type
        if kind == "restriction_hit":
            department = value["department"]["code"]
            if known is None or known["value"]["status"] == "WITHDRAWN":
                RESTRICTION_HITS.labels(department, value["measure"]["code"]).inc()
                if value["measure"]["feedback_required"]:
                    FEEDBACK_REQUIRED.labels(department).inc()
            if value["feedback_id"] is not None and (
                known is None or known["value"]["feedback_id"] is None
            ):
                FEEDBACK_GIVEN.labels(department, value["feedback_outcome"]).inc()
            return
        if known is not None:
            return
        if kind == "sanction_notice":
            SANCTION_NOTICES.labels(value["department"]["code"], value["measure"]["code"]).inc()
            DIVISION_BASIS.labels(value["division_basis"]).inc()
        elif kind == "licence_review_notice":
            LICENCE_REVIEWS.labels(value["department"]["code"], value["cause"]).inc()
        elif kind == "feedback_overdue_alert":
            FEEDBACK_OVERDUE.labels(value["department"]["code"]).inc()
        elif kind == "lift_notice":
            LIFT_NOTICES.labels(value["department"]["code"]).inc()
            if value["end_reason"] == "RELOCATED":
                RELOCATIONS.labels(value["department"]["code"]).inc()
        elif kind == "serious_listing_proposal":
            SERIOUS_LISTING_PROPOSALS.labels(value["department"]["code"]).inc()

    def _prune(self, uscc: str, state: dict[str, Any], now: int) -> bool:
        """Drop matters (and unmatched feedback) older than the matter window; what they
        made stays as it was sent."""
        cutoff = day_of(now) - self.rules.matter_window.days
        catalog = self.catalog()
        pruned = False
        for key, matter in list(state["matters"].items()):
            if max(e["matter_date"] for e in matter["events"].values()) >= cutoff:
                continue
            del state["matters"][key]
            pruned = True
            for measure in catalog.by_matter_type.get(matter["matter_type"], ()):
                hit = restriction_hit_id(
                    uscc,
                    matter["department_code"],
                    matter["matter_type"],
                    matter["matter_reference"],
                    measure["code"],
                )
                state["sent"].pop(hit, None)
                state["sent"].pop(feedback_alert_id(hit), None)
                state["feedback"].pop(hit, None)
        cutoff_ms = day_start(cutoff)
        for hit, given in list(state["feedback"].items()):
            if hit not in state["sent"] and all(
                f["fed_back_at"] < cutoff_ms for f in given.values()
            ):
                del state["feedback"][hit]
                pruned = True
        return pruned

    def _derive(
        self,
        uscc: str,
        state: dict[str, Any],
        now: int,
        sections: frozenset[str],
        history: dict[str, str],
    ) -> tuple[dict[str, Outgoing], dict[str, int | None]]:
        """What the entity's facts say should have been sent by ``now`` in ``sections``,
        by id; and, for the sections that change by themselves (a listing ends, a feedback
        deadline passes), when that happens next. What would have been sent but is the
        province's history (before the cut-over) goes to ``history`` instead, id → type."""
        catalog = self.catalog()
        registration = state.get("registration")
        division, basis = entity_division(uscc, registration)
        today = day_of(now)
        desired: dict[str, Outgoing] = {}
        due: list[int] = []
        alerts_due: list[int] = []
        listings = [
            Listing(entry_id, entry["listed"], entry.get("removed"))
            for entry_id, entry in sorted(state["listings"].items())
            if entry.get("listed") is not None
        ]
        # who was told to restrict, because of which listing: entry → department → …
        told: dict[str, dict[str, dict[str, Any]]] = {}
        dues: dict[str, int | None] = {}
        if PROPOSALS in sections:  # of every listing: a proposal of the history is recorded
            dues[PROPOSALS] = self._derive_proposals(
                uscc, listings, catalog, now, desired, division=division, history=history
            )

        # A listing that ended before the cut-over binds nobody from it on: it sends nothing,
        # unless its notices went out before its end was known (its 列入 read before its
        # 移出): then it goes on as live, so that whoever was told is told of the end.
        history_listings = []
        for listing in listings:
            if not self._ended_in_history(listing):
                continue
            notices = {
                sanction_notice_id(listing.entry_id, measure["code"], department["code"])
                for measure in catalog.by_list_type.get(listing.list_type, ())
                for department in catalog.implementing(measure, division)
            }
            if any(
                state["sent"].get(n, {}).get("digest", HISTORY_DIGEST) != HISTORY_DIGEST
                for n in notices
            ):
                continue
            history.update(dict.fromkeys(notices, "sanction_notice"))
            history_listings.append(listing)
        listings = [listing for listing in listings if listing not in history_listings]

        for listing in listings:
            ref = listing.ref(catalog)
            for measure in catalog.by_list_type.get(listing.list_type, ()):
                for department in catalog.implementing(measure, division):
                    told_ = told.setdefault(listing.entry_id, {}).setdefault(
                        department["code"], {"department": department, "measures": {}, "hits": []}
                    )
                    told_["measures"][measure["code"]] = measure_ref(measure)
                    if NOTICES not in sections:
                        continue
                    identity = sanction_notice_id(
                        listing.entry_id, measure["code"], department["code"]
                    )
                    desired[identity] = Outgoing(
                        "sanction_notice",
                        uscc,
                        {
                            "notice_id": identity,
                            "uscc": uscc,
                            "entity_name": listing.listed["entity_name"],
                            "listing": ref,
                            "measure": measure_ref(measure),
                            "department": department,
                            "valid_from": ref["listed_on"],
                            "valid_to": ref["planned_removal_on"],
                            "feedback_required": measure["feedback_required"],
                            "notified_at": listing.listed["event_time"],
                            "division_code": division,
                            "division_basis": basis,
                            "persons": restricted_persons(measure, registration),
                        },
                        (department["code"],),
                    )
        # Who was told and no longer implements the measures (the entity moved): entry → …
        moved_from: dict[str, dict[str, dict[str, Any]]] = {}
        standing = {listing.entry_id for listing in listings}
        for known in state["sent"].values():
            notice = known.get("told")
            if notice is None or notice["entry_id"] not in standing:
                continue
            code = notice["department"]["code"]
            if code in told.get(notice["entry_id"], {}):
                continue
            moved = moved_from.setdefault(notice["entry_id"], {}).setdefault(
                code,
                {"department": notice["department"], "measures": {}, "hits": [], "lifted": False},
            )
            moved["measures"][notice["measure"]["code"]] = notice["measure"]
            moved["lifted"] = moved["lifted"] or known["digest"] == LIFTED_DIGEST

        if REVIEWS in sections:
            self._derive_reviews(uscc, state, listings, catalog, desired, history=history)
        if HITS in sections:
            self._derive_hits(
                uscc, state, listings, catalog, now, desired, alerts_due, told, moved_from,
                division=division, history=history,
            )  # fmt: skip
        if HITS in sections:
            dues[HITS] = min(alerts_due, default=None)
        if LIFTS not in sections:
            return desired, dues

        for listing in listings:
            end = listing.end
            moved = moved_from.get(listing.entry_id, {})
            if end is None or (end > today and not listing.voided):  # voided: lifted at once
                if end is not None:
                    due.append(day_start(end))
                if moved and registration is not None:
                    self._derive_relocations(uscc, listing, moved, registration, catalog, desired)
                continue
            ref = listing.ref(catalog)
            recipients = {
                **{code: m for code, m in moved.items() if not m["lifted"]},
                **told.get(listing.entry_id, {}),
            }
            for code, told_ in sorted(recipients.items()):
                identity = lift_notice_id(listing.entry_id, code)
                desired[identity] = Outgoing(
                    "lift_notice",
                    uscc,
                    {
                        "lift_id": identity,
                        "uscc": uscc,
                        "entity_name": listing.listed["entity_name"],
                        "listing": ref,
                        "department": told_["department"],
                        "measures": [told_["measures"][m] for m in sorted(told_["measures"])],
                        "hit_ids": sorted(told_["hits"]),
                        "ended_on": end,
                        "end_reason": listing.end_reason,
                        "notified_at": listing.ended_at,
                    },
                    (code,),
                )
        dues[LIFTS] = min(due, default=None)
        return desired, dues

    @staticmethod
    def _derive_relocations(
        uscc: str,
        listing: Listing,
        moved: dict[str, dict[str, Any]],
        registration: dict[str, Any],
        catalog: PunishmentCatalog,
        desired: dict[str, Outgoing],
    ) -> None:
        """解除惩戒告知 (``RELOCATED``) for a standing listing: each department told to
        restrict the entity that no longer implements the measures for it, because its
        latest registration puts it in another division; from the registration's date
        (not before the listing's start), at the registration's event time."""
        ref = listing.ref(catalog)
        for code, told_ in sorted(moved.items()):
            identity = lift_notice_id(listing.entry_id, code)
            desired[identity] = Outgoing(
                "lift_notice",
                uscc,
                {
                    "lift_id": identity,
                    "uscc": uscc,
                    "entity_name": listing.listed["entity_name"],
                    "listing": ref,
                    "department": told_["department"],
                    "measures": [told_["measures"][m] for m in sorted(told_["measures"])],
                    "hit_ids": sorted(told_["hits"]),
                    "ended_on": max(int(registration["event_date"]), int(ref["listed_on"])),
                    "end_reason": "RELOCATED",
                    "notified_at": registration["event_time"],
                },
                (code,),
            )

    def _derive_proposals(
        self,
        uscc: str,
        listings: list[Listing],
        catalog: PunishmentCatalog,
        now: int,
        desired: dict[str, Outgoing],
        *,
        division: str,
        history: dict[str, str],
    ) -> int | None:
        """列入严重违法失信名单建议 for each 经营异常 listing that stood its three years
        (:mod:`.escalation`), once they are over; when the next is due (epoch ms)."""
        due: list[int] = []
        for listing in listings:
            due_on = escalation_due_on(int(listing.listed["listed_on"]))
            if not escalates(listing.list_type, listing.end, due_on):
                continue
            proposed_at = day_start(due_on)
            if proposed_at > now:
                due.append(proposed_at)
                continue
            identity = serious_listing_proposal_id(listing.entry_id)
            if self.rules.is_history(proposed_at):
                history[identity] = "serious_listing_proposal"
                continue
            department = catalog.by_uscc.get(listing.listed["listing_authority_uscc"])
            basis = LISTING_AUTHORITY
            if department is None:
                sector = self.rules.registration_authority_sector
                department, basis = catalog.seated(sector, division), REGISTRATION_AUTHORITY
                if department is None:
                    UNROUTED.labels(sector).inc()
                    continue
            value = proposal(
                identity=identity,
                uscc=uscc,
                entity_name=listing.listed["entity_name"],
                listing=listing.ref(catalog),
                proposed_list_name=catalog.list_names.get(PROPOSED_LIST, PROPOSED_LIST),
                department=department,
                recipient_basis=basis,
                proposed_at=proposed_at,
            )
            desired[identity] = Outgoing(
                "serious_listing_proposal", uscc, value, (department["code"],)
            )
        return min(due, default=None)

    def _derive_reviews(
        self,
        uscc: str,
        state: dict[str, Any],
        listings: list[Listing],
        catalog: PunishmentCatalog,
        desired: dict[str, Outgoing],
        *,
        history: dict[str, str],
    ) -> None:
        """许可审查告知: for each licence-revoking penalty and serious listing, every
        department whose licence was valid on the decision's date; a penalty decided on a
        day that ended before the cut-over is history."""
        causes = [
            {
                "key": f"penalty|{key}",
                "cause": "LICENCE_PENALTY",
                "cause_id": penalty["event_id"],
                "cause_document": penalty["decision_number"],
                "cause_authority_name": penalty["authority_name"],
                "cause_date": penalty["decided_on"],
                "reason": f"{penalty['violation_type']}：{penalty['content']}",
                "legal_basis": penalty["legal_basis"],
                "affected_licence": penalty["affected_licence"],
                "entity_name": penalty["party_name"],
                "event_time": penalty["event_time"],
            }
            for key, penalty in sorted(state["penalties"].items())
        ]
        causes += [
            {
                "key": f"listing|{listing.entry_id}",
                "cause": "SERIOUS_LISTING",
                "cause_id": listing.entry_id,
                "cause_document": listing.listed["document_number"],
                "cause_authority_name": listing.listed["listing_authority_name"],
                "cause_date": listing.listed["listed_on"],
                "reason": listing.listed["reason"],
                "legal_basis": listing.listed["legal_basis"],
                "affected_licence": None,
                "entity_name": listing.listed["entity_name"],
                "event_time": listing.listed["event_time"],
            }
            for listing in listings
            if listing.list_type in self.rules.review_list_types
        ]
        for cause in causes:
            held: dict[str, list[dict[str, Any]]] = {}
            for licence in state["licences"].values():
                if licence_valid_on(licence, cause["cause_date"]):
                    held.setdefault(licence["authority_uscc"], []).append(licence)
            for authority_uscc, licences in sorted(held.items()):
                department = catalog.by_uscc.get(authority_uscc)
                if department is None:
                    UNROUTED.labels("licensing").inc()
                    continue
                licences.sort(key=lambda licence: licence["licence_number"])
                identity = licence_review_id(cause["key"], department["code"])
                if cause["cause"] == "LICENCE_PENALTY" and self.rules.is_history(
                    day_start(cause["cause_date"] + 1)
                ):
                    history[identity] = "licence_review_notice"
                    continue
                desired[identity] = Outgoing(
                    "licence_review_notice",
                    uscc,
                    {
                        "review_id": identity,
                        "uscc": uscc,
                        "entity_name": cause["entity_name"],
                        "cause": cause["cause"],
                        "cause_id": cause["cause_id"],
                        "cause_document": cause["cause_document"],
                        "cause_authority_name": cause["cause_authority_name"],
                        "cause_date": cause["cause_date"],
                        "reason": cause["reason"],
                        "legal_basis": cause["legal_basis"],
                        "affected_licence": cause["affected_licence"],
                        "department": department,
                        "licences": [
                            {
                                "licence_number": licence["licence_number"],
                                "certificate_name": licence["certificate_name"],
                                "approval_item_code": licence["approval_item_code"],
                                "valid_to": licence["valid_to"],
                            }
                            for licence in licences
                        ],
                        "notified_at": max(
                            [cause["event_time"], *(lic["event_time"] for lic in licences)]
                        ),
                    },
                    (department["code"],),
                )

    def _derive_hits(
        self,
        uscc: str,
        state: dict[str, Any],
        listings: list[Listing],
        catalog: PunishmentCatalog,
        now: int,
        desired: dict[str, Outgoing],
        due: list[int],
        told: dict[str, dict[str, dict[str, Any]]],
        moved_from: dict[str, dict[str, dict[str, Any]]],
        *,
        division: str,
        history: dict[str, str],
    ) -> None:
        """限制命中 for each kept matter, and 逾期未反馈督办 for each hit past its deadline
        (one whose deadline passed before the cut-over is history: the hit shows it)."""
        if not listings:
            return
        for _, matter in sorted(state["matters"].items()):
            record = catalog.departments.get(matter["department_code"])
            if record is None:
                continue
            department = department_ref(record)
            events = sorted(
                matter["events"].items(), key=lambda item: (item[1]["occurred_at"], item[0])
            )
            matter_date = min(event["matter_date"] for _, event in events)
            first_seen = events[0][1]["occurred_at"]
            matter_ref = {
                "matter_type": matter["matter_type"],
                "matter_type_name": catalog.matter_type_names.get(
                    matter["matter_type"], matter["matter_type"]
                ),
                "matter_reference": matter["matter_reference"],
                "matter_name": next(
                    (e["matter_name"] for _, e in events if e["matter_name"]), None
                ),
                "matter_date": matter_date,
                "matter_event_ids": sorted(event_id for event_id, _ in events),
            }
            in_force = [listing for listing in listings if listing.in_force_on(matter_date)]
            for measure in catalog.by_matter_type.get(matter["matter_type"], ()):
                if not binds_matter(
                    measure, sector=record["sector_code"], matter_type=matter["matter_type"]
                ):
                    continue
                applying = [
                    listing for listing in in_force if listing.list_type in measure["list_types"]
                ]
                if not applying:
                    continue
                identity = restriction_hit_id(
                    uscc,
                    department["code"],
                    matter["matter_type"],
                    matter["matter_reference"],
                    measure["code"],
                )
                for listing in applying:
                    notified = told.get(listing.entry_id, {}).get(department["code"])
                    if notified is None:
                        notified = moved_from.get(listing.entry_id, {}).get(department["code"])
                    if notified is not None:  # its lift notice names the hit
                        notified["hits"].append(identity)
                listed_at = min(listing.listed["event_time"] for listing in applying)
                raised_at = max(first_seen, listed_at)
                hit = self._hit(
                    identity, uscc, department, matter_ref, measure, applying, catalog, raised_at,
                    state["feedback"].get(identity, {}),
                )  # fmt: skip
                desired[identity] = Outgoing("restriction_hit", uscc, hit, (department["code"],))
                deadline = hit["feedback_due_at"]
                if deadline is None:
                    continue
                in_time = any(
                    f["department_code"] == department["code"] and f["fed_back_at"] <= deadline
                    for f in state["feedback"].get(identity, {}).values()
                )
                if in_time:
                    continue
                if self.rules.is_history(deadline):
                    history[feedback_alert_id(identity)] = "feedback_overdue_alert"
                    continue
                if deadline > now:
                    due.append(deadline)
                    continue
                alert = self._alert(hit, uscc, division=division, catalog=catalog)
                desired[alert["alert_id"]] = Outgoing(
                    "feedback_overdue_alert", uscc, alert, tuple(alert["recipients"])
                )

    @staticmethod
    def _hit(
        identity: str,
        uscc: str,
        department: dict[str, str],
        matter: dict[str, Any],
        measure: dict[str, Any],
        applying: list[Listing],
        catalog: PunishmentCatalog,
        raised_at: int,
        feedback: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        required = bool(measure["feedback_required"])
        mine = [f for f in feedback.values() if f["department_code"] == department["code"]]
        latest = max(mine, key=lambda f: (f["fed_back_at"], f["feedback_id"]), default=None)
        return {
            "hit_id": identity,
            "status": "ACTIVE",
            "uscc": uscc,
            "entity_name": applying[0].listed["entity_name"],
            "department": department,
            "matter": matter,
            "measure": measure_ref(measure),
            "listings": [listing.ref(catalog) for listing in applying],
            "raised_at": raised_at,
            # A period counted as the law counts it: from the next day to the end of its last.
            "feedback_due_at": (
                business_clock().period_end(raised_at, int(measure["feedback_days"] or 0))
                if required
                else None
            ),
            "feedback_outcome": (
                latest["outcome"] if latest else ("PENDING" if required else "NOT_REQUIRED")
            ),
            "feedback_reason": latest["reason"] if latest else None,
            "fed_back_at": latest["fed_back_at"] if latest else None,
            "feedback_id": latest["feedback_id"] if latest else None,
            "withdrawn_reason": None,
        }

    def _alert(
        self, hit: dict[str, Any], uscc: str, *, division: str, catalog: PunishmentCatalog
    ) -> dict[str, Any]:
        department = hit["department"]
        authority = catalog.seated(self.rules.credit_authority_sector, division)
        recipients = [department["code"]]
        if authority is not None and authority["code"] != department["code"]:
            recipients.append(authority["code"])
        matter, measure = hit["matter"], hit["measure"]
        return {
            "alert_id": feedback_alert_id(hit["hit_id"]),
            "kind": "FEEDBACK_OVERDUE",
            "status": "ACTIVE",
            "hit_id": hit["hit_id"],
            "uscc": uscc,
            "entity_name": hit["entity_name"],
            "department": department,
            "matter": matter,
            "measure": measure,
            "recipients": recipients,
            "deadline": hit["feedback_due_at"],
            "raised_at": hit["feedback_due_at"],
            "message": (
                f"{department['name']}办理{hit['entity_name']}（{uscc}）的"
                f"{matter['matter_type_name']}事项{matter['matter_reference']}命中"
                f"“{measure['text']}”，逾期{measure['feedback_days']}日未反馈，请督办"
            ),
        }

    def _ended_in_history(self, listing: Listing) -> bool:
        """Whether a listing ended (removed, or its planned end reached) before the
        cut-over: it is the province's history and sends nothing."""
        end = listing.end
        return end is not None and self.rules.is_history(day_start(end))

    # -- bad input ------------------------------------------------------------------------------

    def _refuse_repair(
        self, record_type: str, record: dict[str, Any], field_name: str, refusal: RepairTooEarly
    ) -> PunishmentOutput:
        """A 信用修复 before its term (:mod:`streams.credit_repair`): dead-lettered with the
        reason and the earliest day; the listing (the penalty's publicity) stays as it was."""
        REPAIRS_REFUSED.labels(record_type).inc()
        log_event(
            logger,
            "joint_punishment_repair_refused",
            record_type=record_type,
            uscc=record["uscc"],
            record=refusal.record,
            earliest_on=refusal.earliest_on.isoformat(),
        )
        return self._reject(
            record_type, record, field_name, refusal.message, code="credit_repair.too_early"
        )

    def _reject(
        self,
        record_type: str,
        record: dict[str, Any],
        field_name: str,
        message: str,
        code: str = f"{APP_NAME}.rejected",
    ) -> PunishmentOutput:
        REJECTED.labels(record_type).inc()
        payload = json.dumps(record, ensure_ascii=False, default=str, sort_keys=True)
        identity = deterministic_id(f"{APP_NAME}|rejected|{record_type}|{payload}")
        log_event(
            logger,
            "joint_punishment_rejected",
            record_type=record_type,
            field=field_name,
            reason=message,
        )
        outcome = PunishmentOutput()
        outcome.send(
            "dead_letter",
            f"xietong.streams.{APP_NAME}",
            dead_letter(
                dead_letter_id=identity,
                connector=f"streams.{APP_NAME}",
                record_type=record_type,
                source_system=f"xietong.streams.{APP_NAME}",
                source_partition=str(record.get("inbound_topic") or record_type),
                source_offset=str(record.get("inbound_offset") or ""),
                position=f"{record_type} {identity}",
                payload=payload.encode(),
                payload_json=payload,
                reasons=[Reason(field_name, code, message)],
            ),
        )
        return outcome
