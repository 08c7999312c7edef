"""What the sink writes where: one :class:`TableMapping` per kind of record.

The sink is table-driven. A mapping names the record type it reads (by the writer
schema's full name, so a department's inbox, which carries several kinds, is read the
same way), the table it fills, the event id every write is idempotent by, and its
columns as functions of the decoded record. Adding a topic to the credit database is
one mapping here, its table in a migration, and its topic in :data:`SINK_TOPICS`::

    TableMapping(
        "penalties", PENALTY, event_id=envelope_event_id, uscc=field("uscc"),
        columns=(text("decision_number"), date("decided_on"), ...),
    )

A mapping may also keep a *current* table (:class:`Current`: the latest registration of
an entity, the latest state of a push) and say which of its records are facts for the
tamper-evident log (:class:`AuditFact`: a claim, a return …; see :mod:`.chain`).

Every row ends with its lineage — ``source_topic``, ``source_partition``,
``source_offset`` — which :mod:`.writer` appends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from schemas import (
    ASSISTANCE_RECORD_TYPES,
    CANONICAL_RECORD_TYPES,
    DEAD_LETTER_RECORD,
    DUAL_NOTICE_RECORD_TYPES,
    JOINT_PUNISHMENT_RECORD_TYPES,
    MATTER_EVENT,
    RecordType,
)
from xietong.ids import deterministic_id
from xietong.topics import DepartmentTopic
from xietong.versions import order_key, version_of

Record = dict[str, Any]
Getter = Callable[[Record], Any]

# -- columns: a name, a PostgreSQL type, and where the value comes from ---------------------


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text integer bigint boolean date timestamptz numeric text[] jsonb
    get: Callable[[Any], Any]  # of the decoded record (of a Delivery for ``deliveries``)


@dataclass(frozen=True)
class FieldPath:
    """A getter of a (possibly nested, possibly null) field: ``path("entity.uscc")``.

    :func:`row_builder` reads the names and inlines the lookups."""

    names: tuple[str, ...]

    def __call__(self, record: Record) -> Any:
        value: Any = record
        for name in self.names:
            if value is None:
                return None
            value = value[name]
        return value


def path(dotted: str) -> FieldPath:
    return FieldPath(tuple(dotted.split(".")))


def _column(kind: str) -> Callable[..., Column]:
    def make(name: str, source: str | Getter | None = None) -> Column:
        getter = source if callable(source) else path(source or name)
        return Column(name, kind, getter)

    return make


text = _column("text")
integer = _column("integer")
bigint = _column("bigint")
date = _column("date")
timestamp = _column("timestamptz")
numeric = _column("numeric")
text_array = _column("text[]")
jsonb = _column("jsonb")
boolean = _column("boolean")


RowBuilder = Callable[[Record, str, int, int], tuple[Any, ...]]


def row_builder(columns: Sequence[Column]) -> RowBuilder:
    """A function from a record and its lineage (topic, partition, offset) to its row.

    Compiled once per table, field lookups inlined (a parent looked up once for all its
    fields), because calling one getter per column of every record was a third of the
    sink's time. Same values and errors as calling each column's getter."""
    scope: dict[str, Any] = {}
    body: list[str] = []
    parents: dict[tuple[str, ...], str] = {(): "r"}

    def parent(names: tuple[str, ...]) -> str:
        held = parents.get(names)
        if held is None:
            above = parent(names[:-1])
            held = parents[names] = f"p{len(parents)}"
            lookup = f"{above}[{names[-1]!r}]"
            body.append(
                f"{held} = {lookup}"
                if above == "r"
                else f"{held} = None if {above} is None else {lookup}"
            )
        return held

    values = []
    for i, column in enumerate(columns):
        getter = column.get
        if isinstance(getter, FieldPath):
            above = parent(getter.names[:-1])
            lookup = f"{above}[{getter.names[-1]!r}]"
            values.append(lookup if above == "r" else f"(None if {above} is None else {lookup})")
        else:
            scope[f"g{i}"] = getter
            values.append(f"g{i}(r)")
    source = "".join(
        [
            "def row(r, topic, partition, offset):\n",
            *(f"    {line}\n" for line in body),
            f"    return ({', '.join(values)}, topic, partition, offset)\n",
        ]
    )
    exec(source, scope)
    return scope["row"]


def added_later(name: str) -> Getter:
    """A field a schema gained later: null in the records written before (the sink reads
    each record with its writer's schema)."""
    return lambda record: record.get(name)


def event_id_from(name: str) -> Getter:
    return path(name)


envelope_event_id = path("envelope.event_id")


def version_order(record: Record) -> str:
    """The record's place among the versions of its record, as text that sorts (the
    order the processors use: :func:`xietong.versions.order_key`); the auditor views
    pick a licence's or a listing's current version by it."""
    return order_key(version_of(record))


# -- the tamper-evident log's facts --------------------------------------------------------


@dataclass(frozen=True)
class AuditFact:
    """One entry for the tamper-evident log: a delivery, claim, return, feedback or lift.

    ``details`` holds only strings, integers and nulls (canonical JSON, same bytes on
    every replay)."""

    kind: str
    event_id: str
    uscc: str
    department_code: str | None
    occurred_at: dt.datetime
    details: dict[str, Any]

    @property
    def entry_id(self) -> str:
        return f"{self.kind.lower()}:{self.event_id}"


# -- current state kept beside the history ---------------------------------------------------


@dataclass(frozen=True)
class Current:
    """A table holding the latest row per ``key``: a row replaces the stored one only
    when ``newer`` (SQL over the stored row ``t`` and ``EXCLUDED``) holds, so replaying
    older records never moves the state back. ``rank`` orders rows of one batch the
    same way."""

    table: str
    key: str
    columns: tuple[Column, ...]
    newer: str
    rank: Callable[[tuple[Any, ...]], Any]
    row: RowBuilder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row", row_builder(self.columns))


@dataclass(frozen=True)
class TableMapping:
    """How the records of one type become rows of one table."""

    table: str
    record: RecordType
    event_id: Getter
    uscc: Getter
    columns: tuple[Column, ...]
    #: When the record was made (for a delivery's ``record_time``).
    time: Getter | None = None
    #: What a delivery of this record concerns (a push id), when it concerns one.
    subject: Getter | None = None
    current: Current | None = None
    audit: Callable[[Record, str], AuditFact | None] | None = None
    all_columns: tuple[Column, ...] = field(init=False)
    #: The row of a record (all columns, then the lineage): :func:`row_builder`.
    row: RowBuilder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        event_id_column = Column("event_id", "text", self.event_id)
        object.__setattr__(self, "all_columns", (event_id_column, *self.columns))
        object.__setattr__(self, "row", row_builder(self.all_columns))

    @property
    def record_name(self) -> str:
        schema = self.record.schema
        name = str(schema["name"])
        return name if "." in name else f"{schema.get('namespace', '')}.{name}"


# -- the canonical records ------------------------------------------------------------------

#: Columns of the latest registration that describe the entity (``entities``).
_ENTITY_COLUMNS = (
    text("uscc"),
    text("name"),
    text("entity_type"),
    text("status"),
    text("legal_representative"),
    numeric("registered_capital"),
    date("established_on"),
    text("address"),
    text("division_code"),
    text("industry_code"),
    text("registering_authority_name"),
    text("registering_authority_uscc"),
    text("last_event_kind", "event_kind"),
    date("last_event_date", "event_date"),
    text("event_id", "envelope.event_id"),
)

REGISTRATIONS_TABLE = TableMapping(
    "registrations",
    CANONICAL_RECORD_TYPES["registration"],
    event_id=envelope_event_id,
    uscc=path("uscc"),
    columns=(
        text("uscc"),
        text("event_kind"),
        date("event_date"),
        timestamp("event_time", "envelope.event_time"),
        text("name"),
        text("entity_type"),
        text("legal_representative"),
        numeric("registered_capital"),
        date("established_on"),
        date("operating_term_end"),
        text("address"),
        text("division_code"),
        text("business_scope"),
        text_array(
            "permit_scope_items",
            lambda r: [i["text"] for i in r["business_scope_items"] if i["kind"] == "PERMIT"],
        ),
        text("industry_code"),
        text("registering_authority_name"),
        text("registering_authority_uscc"),
        text("status"),
        text("source_department_uscc", "envelope.source_department_uscc"),
        text("source_system", "envelope.source_system"),
        text("source_record_id", "envelope.source_record_id"),
        text("record_version", "envelope.record_version"),
    ),
    time=path("envelope.event_time"),
    # An entity's registrations share its key, so they are in one partition, in order:
    # the latest is the one at the highest offset.
    current=Current(
        "entities",
        key="uscc",
        columns=_ENTITY_COLUMNS,
        newer="t.source_offset < EXCLUDED.source_offset",
        rank=lambda row: row[-1],  # source_offset, the last lineage column
    ),
)

LICENCES_TABLE = TableMapping(
    "licences",
    CANONICAL_RECORD_TYPES["licence"],
    event_id=envelope_event_id,
    uscc=path("uscc"),
    columns=(
        text("uscc"),
        text("holder_name"),
        text("licence_number"),
        text("approval_item_code"),
        text("category"),
        text("certificate_name"),
        text("content"),
        text("decision_document_number"),
        date("decided_on"),
        date("valid_from"),
        date("valid_to"),
        text("authority_name"),
        text("authority_uscc"),
        text("status"),
        timestamp("event_time", "envelope.event_time"),
        text("source_record_id", "envelope.source_record_id"),
        text("record_version", "envelope.record_version"),
        text("version_order", version_order),
        date("status_changed_on", added_later("status_changed_on")),  # 注销/吊销/撤销日期
    ),
    time=path("envelope.event_time"),
)

PENALTIES_TABLE = TableMapping(
    "penalties",
    CANONICAL_RECORD_TYPES["penalty"],
    event_id=envelope_event_id,
    uscc=path("uscc"),
    columns=(
        text("uscc"),
        text("party_name"),
        text("decision_number"),
        text("violation_type"),
        text("violation_facts"),
        text("legal_basis"),
        text_array("categories"),
        text("content"),
        numeric("fine_amount"),
        numeric("confiscated_amount"),
        text("affected_licence"),
        date("decided_on"),
        date("publicity_until"),
        date("publicity_ended_on", added_later("publicity_ended_on")),
        text("publicity_end_reason", added_later("publicity_end_reason")),
        text("authority_name"),
        text("authority_uscc"),
        timestamp("event_time", "envelope.event_time"),
        text("source_record_id", "envelope.source_record_id"),
        text("record_version", "envelope.record_version"),
    ),
    time=path("envelope.event_time"),
)

LIST_ENTRIES_TABLE = TableMapping(
    "list_entries",
    CANONICAL_RECORD_TYPES["credit_list_entry"],
    event_id=envelope_event_id,
    uscc=path("uscc"),
    columns=(
        text("entry_id"),
        text("uscc"),
        text("action"),
        text("list_type"),
        text("entity_name"),
        text("listing_authority_name"),
        text("listing_authority_uscc"),
        text("reason"),
        text("legal_basis"),
        text("document_number"),
        date("listed_on"),
        date("planned_removal_on"),
        date("removed_on"),
        text("removal_reason"),
        timestamp("event_time", "envelope.event_time"),
        text("version_order", version_order),
    ),
    time=path("envelope.event_time"),
)

# -- 双告知 (streams/dual_notice/) ------------------------------------------------


def push_state_id(record: Record) -> str:
    """A push's state is identified by the push and its version."""
    return deterministic_id(f"dual_notice_push|{record['push_id']}|{record['version']}")


def _push_audit(record: Record, event_id: str) -> AuditFact | None:
    """认领 and 退回 are facts for the log; the push's other states are the platform's."""
    state = record["state"]
    if state not in ("CLAIMED", "RETURNED"):
        return None
    kind = "CLAIM" if state == "CLAIMED" else "RETURN"
    occurred = record["claimed_at"] if kind == "CLAIM" else record["state_changed_at"]
    return AuditFact(
        kind,
        event_id,
        record["entity"]["uscc"],
        record["department"]["code"],
        occurred or record["state_changed_at"],
        {
            "push_id": record["push_id"],
            "version": record["version"],
            "item_code": record["item"]["code"],
            "changed_by": record["changed_by"],
            "return_reason": record["return_reason"],
            "reason_text": record["reason_text"],
        },
    )


_PUSH_COLUMNS = (
    text("push_id"),
    integer("version"),
    text("state"),
    text("routing"),
    text("uscc", "entity.uscc"),
    text("entity_name", "entity.name"),
    text("registration_event_id", "entity.registration_event_id"),
    text("registration_kind", "entity.event_kind"),
    text("division_code", "entity.division_code"),
    text("item_code", "item.code"),
    text("item_name", "item.name"),
    text("department_code", "department.code"),
    text("department_name", "department.name"),
    timestamp("pushed_at"),  # business time
    timestamp("push_recorded_at", added_later("push_recorded_at")),  # the platform's
    timestamp("claim_deadline"),
    timestamp("claimed_at"),
    timestamp("licence_deadline"),
    timestamp("escalated_at"),
    timestamp("unlicensed_alert_at"),
    text("return_reason"),
    text("reason_text"),
    text("fulfilled_by_licence"),
    text("reassigned_to_push_id"),
    text("reassigned_from_push_id"),
    timestamp("state_changed_at"),  # business time
    timestamp("state_recorded_at", added_later("state_recorded_at")),  # the platform's
    text("changed_by"),
)

PUSH_STATES_TABLE = TableMapping(
    "dual_notice_push_states",
    DUAL_NOTICE_RECORD_TYPES["dual_notice_push"],
    event_id=push_state_id,
    uscc=path("entity.uscc"),
    columns=_PUSH_COLUMNS,
    time=path("state_changed_at"),
    subject=path("push_id"),
    current=Current(
        "dual_notice_pushes",
        key="push_id",
        columns=(Column("event_id", "text", push_state_id), *_PUSH_COLUMNS),
        newer="t.version < EXCLUDED.version",
        rank=lambda row: row[2],  # version, after event_id and push_id
    ),
    audit=_push_audit,
)

APPLICANT_NOTICES_TABLE = TableMapping(
    "dual_notice_applicant_notices",
    DUAL_NOTICE_RECORD_TYPES["dual_notice_applicant_notice"],
    event_id=path("notice_id"),
    uscc=path("entity.uscc"),
    columns=(
        text("uscc", "entity.uscc"),
        text("entity_name", "entity.name"),
        text("registration_event_id", "entity.registration_event_id"),
        jsonb("items"),
        timestamp("issued_at"),
    ),
    time=path("issued_at"),
)


def routing_state_id(record: Record) -> str:
    return deterministic_id(
        f"dual_notice_routing|{record['routing_id']}|{record['state']}"
        f"|{_millis(record['state_changed_at'])}"
    )


ROUTING_FAILURES_TABLE = TableMapping(
    "dual_notice_routing_failures",
    DUAL_NOTICE_RECORD_TYPES["dual_notice_routing_failure"],
    event_id=routing_state_id,
    uscc=path("entity.uscc"),
    columns=(
        text("routing_id"),
        text("state"),
        text("uscc", "entity.uscc"),
        text("entity_name", "entity.name"),
        text("item_code", "item.code"),
        text("item_name", "item.name"),
        text("reason"),
        timestamp("failed_at"),
        timestamp("failure_recorded_at", added_later("failure_recorded_at")),
        text("routed_to_department_code", "routed_to.code"),
        text("routed_push_id"),
        timestamp("state_changed_at"),
        timestamp("state_recorded_at", added_later("state_recorded_at")),
    ),
    time=path("state_changed_at"),
)

ALERTS_TABLE = TableMapping(
    "dual_notice_alerts",
    DUAL_NOTICE_RECORD_TYPES["dual_notice_alert"],
    event_id=path("alert_id"),
    uscc=path("entity.uscc"),
    columns=(
        text("kind"),
        text("push_id"),
        text("uscc", "entity.uscc"),
        text("item_code", "item.code"),
        text("department_code", "department.code"),
        text_array("recipients"),
        timestamp("deadline"),
        timestamp("raised_at"),
        text("message"),
    ),
    time=path("raised_at"),
    subject=path("push_id"),
)

CLOSURE_NOTICES_TABLE = TableMapping(
    "dual_notice_closure_notices",
    DUAL_NOTICE_RECORD_TYPES["entity_closure_notice"],
    event_id=path("notice_id"),
    uscc=path("uscc"),
    columns=(
        text("registration_event_id"),
        text("uscc"),
        text("entity_name"),
        text("closure"),
        date("closed_on"),
        text("department_code", "department.code"),
        jsonb("licences"),
        timestamp("notified_at"),
    ),
    time=path("notified_at"),
)

ACTIONS_TABLE = TableMapping(
    "dual_notice_actions",
    DUAL_NOTICE_RECORD_TYPES["received_department_action"],
    event_id=path("received_id"),
    uscc=path("action.uscc"),
    columns=(
        text("action_id", "action.action_id"),
        text("department_code"),
        text("action", "action.action"),
        text("push_id", "action.push_id"),
        text("uscc", "action.uscc"),
        text("return_reason", "action.return_reason"),
        text("reason_text", "action.reason_text"),
        text("target_department_code", "action.target_department_code"),
        text("operator", "action.operator"),
        timestamp("acted_at", "action.acted_at"),
        timestamp("received_at"),
    ),
    time=path("received_at"),
    subject=path("action.push_id"),
)

#: What every rejected department action says after its own fields: why, where it was
#: read, when it was refused.
_REJECTION_COLUMNS = (
    text("reason"),
    text("inbound_topic"),
    integer("inbound_partition"),
    bigint("inbound_offset"),
    timestamp("rejected_at"),
)

REJECTED_ACTIONS_TABLE = TableMapping(
    "dual_notice_rejected_actions",
    DUAL_NOTICE_RECORD_TYPES["rejected_department_action"],
    event_id=path("rejection_id"),
    uscc=path("action.uscc"),
    columns=(
        text("department_code"),
        text("action", "action.action"),
        text("push_id", "action.push_id"),
        text("uscc", "action.uscc"),
        text("push_state"),
        *_REJECTION_COLUMNS,
    ),
    time=path("rejected_at"),
)

# -- 一处违法、处处受限 (streams/joint_punishment/) ----------------------------------

MATTER_EVENTS_TABLE = TableMapping(
    "matter_events",
    MATTER_EVENT,
    event_id=path("event_id"),
    uscc=path("uscc"),
    columns=(
        text("uscc"),
        text("entity_name"),
        text("department_code"),
        text("matter_type"),
        text("matter_reference"),
        text("matter_name"),
        date("matter_date"),
        text("source"),
        text("credit_check_id"),
        timestamp("occurred_at"),
    ),
    time=path("occurred_at"),
)

SANCTION_NOTICES_TABLE = TableMapping(
    "sanction_notices",
    JOINT_PUNISHMENT_RECORD_TYPES["sanction_notice"],
    event_id=path("notice_id"),
    uscc=path("uscc"),
    columns=(
        text("uscc"),
        text("entity_name"),
        text("entry_id", "listing.entry_id"),
        text("list_type", "listing.list_type"),
        text("list_name", "listing.list_name"),
        text("listing_authority_name", "listing.listing_authority_name"),
        text("document_number", "listing.document_number"),
        text("measure_code", "measure.code"),
        text("measure_text", "measure.text"),
        text("measure_legal_basis", "measure.legal_basis"),
        text("department_code", "department.code"),
        text("department_name", "department.name"),
        date("valid_from"),
        date("valid_to"),
        Column("feedback_required", "boolean", path("feedback_required")),
        timestamp("notified_at"),
        text("division_code", added_later("division_code")),
        text("division_basis", added_later("division_basis")),
        text("measure_target", lambda r: r["measure"].get("target")),
        text_array("measure_roles", lambda r: r["measure"].get("roles")),
        jsonb("persons", added_later("persons")),
    ),
    time=path("notified_at"),
)

LICENCE_REVIEWS_TABLE = TableMapping(
    "licence_review_notices",
    JOINT_PUNISHMENT_RECORD_TYPES["licence_review_notice"],
    event_id=path("review_id"),
    uscc=path("uscc"),
    columns=(
        text("uscc"),
        text("entity_name"),
        text("cause"),
        text("cause_id"),
        text("cause_document"),
        text("cause_authority_name"),
        date("cause_date"),
        text("reason"),
        text("legal_basis"),
        text("affected_licence"),
        text("department_code", "department.code"),
        jsonb("licences"),
        timestamp("notified_at"),
    ),
    time=path("notified_at"),
)


def proposal_state_id(record: Record) -> str:
    """A proposal is republished WITHDRAWN when its listing turns out to have ended in time:
    a state is the proposal with its status."""
    return deterministic_id(f"serious_listing_proposal|{record['proposal_id']}|{record['status']}")


SERIOUS_LISTING_PROPOSALS_TABLE = TableMapping(
    "serious_listing_proposals",
    JOINT_PUNISHMENT_RECORD_TYPES["serious_listing_proposal"],
    event_id=proposal_state_id,
    uscc=path("uscc"),
    columns=(
        text("proposal_id"),
        text("status"),
        text("uscc"),
        text("entity_name"),
        text("entry_id", "listing.entry_id"),
        text("list_type", "listing.list_type"),
        text("listing_authority_name", "listing.listing_authority_name"),
        text("document_number", "listing.document_number"),
        text("proposed_list_type"),
        integer("years_listed"),
        date("last_day"),
        date("due_on"),
        text("department_code", "department.code"),
        text("department_name", "department.name"),
        text("recipient_basis"),
        text("legal_basis"),
        timestamp("proposed_at"),
        text("withdrawn_reason"),
    ),
    time=path("proposed_at"),
    subject=path("proposal_id"),
)


def hit_state_id(record: Record) -> str:
    """A hit is republished at each change; a state is the hit with its status and feedback."""
    return deterministic_id(
        f"restriction_hit|{record['hit_id']}|{record['status']}|{record['feedback_outcome']}"
        f"|{record['feedback_id']}"
    )


_HIT_COLUMNS = (
    text("hit_id"),
    text("status"),
    text("uscc"),
    text("entity_name"),
    text("department_code", "department.code"),
    text("department_name", "department.name"),
    text("matter_type", "matter.matter_type"),
    text("matter_reference", "matter.matter_reference"),
    date("matter_date", "matter.matter_date"),
    text("measure_code", "measure.code"),
    text("measure_text", "measure.text"),
    text_array("listing_entry_ids", lambda r: [listing["entry_id"] for listing in r["listings"]]),
    timestamp("raised_at"),
    timestamp("feedback_due_at"),
    text("feedback_outcome"),
    text("feedback_reason"),
    timestamp("fed_back_at"),
    text("feedback_id"),
    text("withdrawn_reason"),
)

RESTRICTION_HITS_TABLE = TableMapping(
    "restriction_hit_states",
    JOINT_PUNISHMENT_RECORD_TYPES["restriction_hit"],
    event_id=hit_state_id,
    uscc=path("uscc"),
    columns=_HIT_COLUMNS,
    time=path("raised_at"),
    subject=path("hit_id"),
    current=Current(
        "restriction_hits",
        key="hit_id",
        columns=(Column("event_id", "text", hit_state_id), *_HIT_COLUMNS),
        newer="t.source_offset < EXCLUDED.source_offset",
        rank=lambda row: row[-1],
    ),
)


def _feedback_audit(record: Record, event_id: str) -> AuditFact:
    feedback = record["feedback"]
    return AuditFact(
        "FEEDBACK",
        event_id,
        feedback["uscc"],
        record["department_code"],
        feedback["fed_back_at"],
        {
            "feedback_id": feedback["feedback_id"],
            "hit_id": feedback["hit_id"],
            "outcome": feedback["outcome"],
            "reason": feedback["reason"],
        },
    )


FEEDBACK_TABLE = TableMapping(
    "restriction_feedback",
    JOINT_PUNISHMENT_RECORD_TYPES["received_restriction_feedback"],
    event_id=path("received_id"),
    uscc=path("feedback.uscc"),
    columns=(
        text("feedback_id", "feedback.feedback_id"),
        text("department_code"),
        text("uscc", "feedback.uscc"),
        text("hit_id", "feedback.hit_id"),
        text("outcome", "feedback.outcome"),
        text("reason", "feedback.reason"),
        text("operator", "feedback.operator"),
        timestamp("fed_back_at", "feedback.fed_back_at"),
        timestamp("received_at"),
    ),
    time=path("received_at"),
    subject=path("feedback.hit_id"),
    audit=_feedback_audit,
)


def punishment_alert_id(record: Record) -> str:
    return deterministic_id(f"punishment_alert|{record['alert_id']}|{record['status']}")


PUNISHMENT_ALERTS_TABLE = TableMapping(
    "punishment_alerts",
    JOINT_PUNISHMENT_RECORD_TYPES["feedback_overdue_alert"],
    event_id=punishment_alert_id,
    uscc=path("uscc"),
    columns=(
        text("alert_id"),
        text("kind"),
        text("status"),
        text("hit_id"),
        text("uscc"),
        text("department_code", "department.code"),
        text_array("recipients"),
        timestamp("deadline"),
        timestamp("raised_at"),
        text("message"),
    ),
    time=path("raised_at"),
    subject=path("hit_id"),
)


def _lift_audit(record: Record, event_id: str) -> AuditFact:
    return AuditFact(
        "LIFT",
        event_id,
        record["uscc"],
        record["department"]["code"],
        record["notified_at"],
        {
            "entry_id": record["listing"]["entry_id"],
            "list_type": record["listing"]["list_type"],
            "end_reason": record["end_reason"],
            "ended_on": record["ended_on"].isoformat(),
            "measures": [m["code"] for m in record["measures"]],
        },
    )


LIFT_NOTICES_TABLE = TableMapping(
    "lift_notices",
    JOINT_PUNISHMENT_RECORD_TYPES["lift_notice"],
    event_id=path("lift_id"),
    uscc=path("uscc"),
    columns=(
        text("uscc"),
        text("entity_name"),
        text("entry_id", "listing.entry_id"),
        text("list_type", "listing.list_type"),
        text("department_code", "department.code"),
        text_array("measure_codes", lambda r: [m["code"] for m in r["measures"]]),
        text_array("hit_ids"),
        date("ended_on"),
        text("end_reason"),
        timestamp("notified_at"),
    ),
    time=path("notified_at"),
    audit=_lift_audit,
)

# -- dead letters (死信): what the platform refused, for auditors ---------------------------


def _storable(text: Any) -> Any:
    """Text PostgreSQL can hold: a dead letter may quote a NUL character a department
    sent, which no text or jsonb value may contain (it is written as ``\\x00``)."""
    return text.replace("\x00", "\\x00") if isinstance(text, str) else text


def _stored(name: str) -> Getter:
    get = path(name)
    return lambda record: _storable(get(record))


def dead_letter_event_id(record: Record) -> str:
    """One row per dead letter written: a record refused again (after a replay, with
    today's reasons) keeps its dead letter's id and is a row of its own."""
    failed_at = _millis(record["failed_at"])
    return deterministic_id(f"dead_letter|{record['dead_letter_id']}|{failed_at}")


def _reasons(record: Record) -> list[dict[str, str]]:
    return [{key: _storable(value) for key, value in r.items()} for r in record["reasons"]]


DEAD_LETTERS_TABLE = TableMapping(
    "dead_letters",
    DEAD_LETTER_RECORD,
    event_id=dead_letter_event_id,
    uscc=lambda record: None,  # the entity's USCC is whatever the record said, or nothing
    columns=(
        text("dead_letter_id", _stored("dead_letter_id")),
        text("connector", _stored("connector")),
        text("record_type", _stored("record_type")),
        text("department_uscc", _stored("source_department_uscc")),
        text("source_system", _stored("source_system")),
        text("source_record_id", lambda r: _storable(r.get("source_record_id"))),
        # Where the department's record was (its file, table or endpoint, and the offset
        # in it); the lineage columns say where the dead letter is on platform.dead-letter.
        text("record_partition", _stored("source_partition")),
        text("record_offset", _stored("source_offset")),
        text("position", _stored("position")),
        jsonb("reasons", _reasons),
        timestamp("failed_at"),
        text("payload_json", _stored("payload_json")),
        bigint("payload_length", added_later("payload_length")),
        text("payload_sha256", added_later("payload_sha256")),
        # Set in the record a replay writes once the record was accepted (no reasons).
        text("replayed_event_id", added_later("replayed_event_id")),
    ),
    time=path("failed_at"),
)


# -- 行政协助 (streams/assistance/) ---------------------------------------------------------


def assistance_state_id(record: Record) -> str:
    """A request's state is identified by the request and its version."""
    return deterministic_id(f"assistance-request|{record['request_id']}|{record['version']}")


def assistance_uscc(request: Record) -> str:
    """The entity a request concerns, where it names one; else the requesting department's
    own USCC (a request about no market entity is the requester's matter)."""
    return str(request["party_uscc"] or request["requesting_department"]["uscc"])


_ASSISTANCE_COLUMNS = (
    text("request_id"),
    integer("version"),
    text("state"),
    text("request_reference"),
    boolean("listed"),
    text("item_code", "item.code"),
    text("item_name", "item.name"),
    integer("item_version", "item.version"),
    text("subject"),
    text("party_uscc"),
    text("requesting_department_code", "requesting_department.code"),
    text("requesting_department_name", "requesting_department.name"),
    text("assisting_department_code", "assisting_department.code"),
    text("assisting_department_name", "assisting_department.name"),
    text("supervising_department_code", "supervising_department.code"),
    integer("time_limit_days"),
    boolean("working_days"),
    timestamp("requested_at"),
    timestamp("deadline"),
    timestamp("accepted_at"),
    timestamp("completed_at"),
    text("result_text"),
    jsonb("attachments"),
    text("refusal_reason", "refusal.reason"),
    text("refusal_reason_text", "refusal.reason_text"),
    text("refusal_legal_basis", "refusal.legal_basis"),
    text("refusal_filed_by", "refusal.filed_by"),
    text("refusal_approved_by", "refusal.approved_by"),
    timestamp("refusal_approved_at", "refusal.approved_at"),
    integer("refusals_overruled"),
    boolean("in_time"),
    timestamp("escalated_at"),
    timestamp("state_changed_at"),  # business time
    timestamp("state_recorded_at"),  # the platform's
    text("changed_by"),
)

ASSISTANCE_REQUEST_STATES_TABLE = TableMapping(
    "assistance_request_states",
    ASSISTANCE_RECORD_TYPES["assistance_request"],
    event_id=assistance_state_id,
    uscc=assistance_uscc,
    columns=_ASSISTANCE_COLUMNS,
    time=path("state_changed_at"),
    subject=path("request_id"),
    current=Current(
        "assistance_requests",
        key="request_id",
        columns=(Column("event_id", "text", assistance_state_id), *_ASSISTANCE_COLUMNS),
        newer="t.version < EXCLUDED.version",
        rank=lambda row: row[2],  # version, after event_id and request_id
    ),
)

ASSISTANCE_ACTIONS_TABLE = TableMapping(
    "assistance_actions",
    ASSISTANCE_RECORD_TYPES["received_assistance_action"],
    event_id=path("received_id"),
    uscc=lambda record: str(record["action"]["party_uscc"] or record["department_code"]),
    columns=(
        text("action_id", "action.action_id"),
        text("request_id"),
        text("department_code"),
        text("action", "action.action"),
        text("item_code", "action.item_code"),
        text("refusal_reason", "action.refusal_reason"),
        text("operator", "action.operator"),
        text("operator_role", "action.operator_role"),
        timestamp("acted_at", "action.acted_at"),
        timestamp("received_at"),
    ),
    time=path("received_at"),
    subject=path("request_id"),
)

ASSISTANCE_REJECTED_ACTIONS_TABLE = TableMapping(
    "assistance_rejected_actions",
    ASSISTANCE_RECORD_TYPES["rejected_assistance_action"],
    event_id=path("rejection_id"),
    uscc=path("department_code"),
    columns=(
        text("department_code"),
        text("request_id"),
        text("action", "action.action"),
        text("request_state"),
        *_REJECTION_COLUMNS,
    ),
    time=path("rejected_at"),
)

ASSISTANCE_ESCALATIONS_TABLE = TableMapping(
    "assistance_escalations",
    ASSISTANCE_RECORD_TYPES["assistance_escalation"],
    event_id=path("escalation_id"),
    uscc=path("requesting_department.uscc"),
    columns=(
        text("request_id"),
        text("item_code"),
        text("subject"),
        text("requesting_department_code", "requesting_department.code"),
        text("assisting_department_code", "assisting_department.code"),
        text("supervising_department_code", "supervising_department.code"),
        text("state"),
        timestamp("deadline"),
        text_array("recipients"),
        timestamp("raised_at"),
        text("message"),
    ),
    time=path("raised_at"),
    subject=path("request_id"),
)

ASSISTANCE_RATINGS_TABLE = TableMapping(
    "assistance_ratings",
    ASSISTANCE_RECORD_TYPES["assistance_rating"],
    event_id=path("rating_id"),
    uscc=path("rating_department.uscc"),
    columns=(
        text("request_id"),
        text("item_code"),
        text("rating_department_code", "rating_department.code"),
        text("rated_department_code", "rated_department.code"),
        text("rated_department_name", "rated_department.name"),
        integer("cooperation"),
        integer("effect"),
        text("comment"),
        boolean("completed_in_time"),
        timestamp("rated_at"),
    ),
    time=path("rated_at"),
    subject=path("request_id"),
)

#: Every mapping, by the topic its record type is on (a department's inbox is read by
#: :data:`DELIVERIES`).
TABLES_BY_TOPIC: dict[str, TableMapping] = {
    mapping.record.topic.name: mapping
    for mapping in (
        REGISTRATIONS_TABLE,
        LICENCES_TABLE,
        PENALTIES_TABLE,
        LIST_ENTRIES_TABLE,
        PUSH_STATES_TABLE,
        APPLICANT_NOTICES_TABLE,
        ROUTING_FAILURES_TABLE,
        ALERTS_TABLE,
        CLOSURE_NOTICES_TABLE,
        ACTIONS_TABLE,
        REJECTED_ACTIONS_TABLE,
        MATTER_EVENTS_TABLE,
        SANCTION_NOTICES_TABLE,
        LICENCE_REVIEWS_TABLE,
        RESTRICTION_HITS_TABLE,
        FEEDBACK_TABLE,
        PUNISHMENT_ALERTS_TABLE,
        LIFT_NOTICES_TABLE,
        SERIOUS_LISTING_PROPOSALS_TABLE,
        DEAD_LETTERS_TABLE,
        ASSISTANCE_REQUEST_STATES_TABLE,
        ASSISTANCE_ACTIONS_TABLE,
        ASSISTANCE_REJECTED_ACTIONS_TABLE,
        ASSISTANCE_ESCALATIONS_TABLE,
        ASSISTANCE_RATINGS_TABLE,
    )
}

#: The mappings by the full name of the record they read (what an inbox message is).
TABLES_BY_RECORD: dict[str, TableMapping] = {
    mapping.record_name: mapping for mapping in TABLES_BY_TOPIC.values()
}


# -- deliveries: every record a department's inbox received --------------------------------


@dataclass(frozen=True)
class Delivery:
    """One record as delivered to a department: the delivery row's source values."""

    department_code: str
    mapping: TableMapping
    record: Record
    delivered_at: dt.datetime


def delivery_id(topic: str, record_event_id: str) -> str:
    """A delivery is identified by the inbox and the record: a record re-sent to the
    same inbox (a processor's retry) is one delivery."""
    return deterministic_id(f"delivery|{topic}|{record_event_id}")


def delivery_audit(delivery: Delivery, event_id: str) -> AuditFact:
    mapping, record = delivery.mapping, delivery.record
    return AuditFact(
        "DELIVERY",
        event_id,
        mapping.uscc(record),
        delivery.department_code,
        delivery.delivered_at,
        {
            "record_type": mapping.record.name,
            "record_event_id": mapping.event_id(record),
            "subject_id": mapping.subject(record) if mapping.subject else None,
        },
    )


#: The columns of ``deliveries`` after its event id (the delivery id).
DELIVERY_COLUMNS: tuple[Column, ...] = (
    Column("department_code", "text", lambda d: d.department_code),
    Column("record_type", "text", lambda d: d.mapping.record.name),
    Column("record_event_id", "text", lambda d: d.mapping.event_id(d.record)),
    Column("uscc", "text", lambda d: d.mapping.uscc(d.record)),
    Column(
        "subject_id", "text", lambda d: d.mapping.subject(d.record) if d.mapping.subject else None
    ),
    Column(
        "record_time", "timestamptz", lambda d: d.mapping.time(d.record) if d.mapping.time else None
    ),
    Column("delivered_at", "timestamptz", lambda d: d.delivered_at),
)
DELIVERIES_TABLE = "deliveries"


def sink_topics() -> list[str]:
    """What the sink subscribes to: every mapped topic and every inbox (a pattern)."""
    return [*TABLES_BY_TOPIC, DepartmentTopic.INBOX.pattern()]


def all_tables() -> Iterable[str]:
    """Every table the sink writes, current tables and the log included."""
    for mapping in TABLES_BY_TOPIC.values():
        yield mapping.table
        if mapping.current is not None:
            yield mapping.current.table
    yield DELIVERIES_TABLE
    yield "audit_log"


# -- values for COPY ------------------------------------------------------------------------


def _millis(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def json_safe(value: Any) -> Any:
    """A decoded Avro value as JSON: dates ISO, decimals as strings."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value
