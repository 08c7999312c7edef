"""The transactional outbox: no change of published registry data without its event.

Stream processors hold the registry's reference data and subscriptions as tables read
from compacted topics, one per kind of entity (:data:`PUBLISHED`). Those records are not
produced by the operation that changes the data (a broker that is down must not fail an
approval, and a rolled-back approval must not be announced); instead a snapshot of the
entity is written to the ``outbox`` table in the same transaction, and
:class:`registry.publisher.OutboxRelay` hands it to the broker afterwards.

The hook is the audited session (:mod:`registry.audit`), the one place every change
passes:

* at every flush, :func:`note_changes` remembers the rows that changed;
* just before the transaction commits, :func:`write_changed` works out which published
  entities those rows belong to (a route or a matching rule to its approval item, a
  department also to every item routed to it, a matter type to the measures that
  restrict it, a data resource to its subscriptions) and writes one snapshot of each,
  read from the database as the transaction leaves it.

So a catalog load that touches an item, its routes and its rules writes one row for the
item, complete, not three partial ones; and a rolled-back change writes nothing. An
entity that no longer exists is written with a null payload, which becomes a tombstone.
The payload is the Avro record of the entity's schema (``schemas/avro/``) as JSON, with
timestamps in epoch milliseconds as Avro's ``timestamp-millis`` has them.

Example::

    with transaction(sessions) as session:
        approve_subscription(session, Actor.department("zj-amr"), 7)
    # committed together: the subscription, its audit entries and this outbox row
    #   topic=registry.subscriptions key="7" payload={"status": "APPROVED", ...}
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from registry.models import (
    ApprovalItem,
    ApprovalMatchRule,
    ApprovalRoute,
    AssistanceItem,
    Base,
    CreditListType,
    DataResource,
    Department,
    MatchKind,
    MatterType,
    Measure,
    OutboxEntry,
    Subscription,
)
from schemas import REGISTRY_RECORD_TYPES, RecordType

#: Snapshots by record key; a key that is missing no longer exists.
Snapshots = dict[str, dict[str, Any]]

_NOTED = "registry.outbox.noted"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, eq=False)  # one instance per kind, compared by identity
class PublishedEntity:
    """One kind of entity the registry publishes: its record type (the Avro schema and
    the compacted topic) and how snapshots of it are read from the database."""

    record: RecordType
    #: The snapshots of the entities with these keys (all of them for None).
    read: Callable[[sa.Connection, Sequence[str] | None], Snapshots]

    @property
    def topic(self) -> str:
        return self.record.topic.name


# -- reading snapshots ----------------------------------------------------------------------


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // timedelta(milliseconds=1)


def _departments(connection: sa.Connection, codes: Sequence[str] | None) -> Snapshots:
    query = sa.select(Department.__table__)
    if codes is not None:
        query = query.where(Department.code.in_(codes))
    return {
        row.code: {
            "code": row.code,
            "uscc": row.uscc,
            "name": row.name,
            "sector_code": row.sector_code,
            "roles": [role.upper() for role in row.roles],
            "level": str(row.level).upper(),
            "division_code": row.division_code,
            "contact": row.contact,
            "kafka_principal": row.kafka_principal,
            "updated_at": _millis(row.updated_at),
        }
        for row in connection.execute(query)
    }


def _approval_items(connection: sa.Connection, codes: Sequence[str] | None) -> Snapshots:
    items = sa.select(ApprovalItem.__table__)
    routes = (
        sa.select(
            ApprovalRoute.item_code,
            ApprovalRoute.division_code,
            Department.code.label("department_code"),
            Department.uscc.label("department_uscc"),
            Department.name.label("department_name"),
        )
        .join_from(ApprovalRoute, Department, ApprovalRoute.department_id == Department.id)
        .order_by(ApprovalRoute.item_code, ApprovalRoute.division_code)
    )
    rules = sa.select(
        ApprovalMatchRule.item_code, ApprovalMatchRule.kind, ApprovalMatchRule.value
    ).order_by(ApprovalMatchRule.id)
    if codes is not None:
        items = items.where(ApprovalItem.code.in_(codes))
        routes = routes.where(ApprovalRoute.item_code.in_(codes))
        rules = rules.where(ApprovalMatchRule.item_code.in_(codes))
    snapshots: Snapshots = {
        row.code: {
            "code": row.code,
            "name": row.name,
            "legal_basis": row.legal_basis,
            "sector_code": row.sector_code,
            "level": str(row.level).upper(),
            "category": row.category,
            "certificate_name": row.certificate_name,
            "validity_years": row.validity_years,
            "scope_wordings": [],
            "industry_codes": [],
            "routes": [],
        }
        for row in connection.execute(items)
    }
    for route in connection.execute(routes):
        snapshots[route.item_code]["routes"].append(
            {
                "division_code": route.division_code,
                "department_code": route.department_code,
                "department_uscc": route.department_uscc,
                "department_name": route.department_name,
            }
        )
    for rule in connection.execute(rules):
        wanted = "scope_wordings" if rule.kind == MatchKind.SCOPE else "industry_codes"
        snapshots[rule.item_code][wanted].append(rule.value)
    return snapshots


def _measures(connection: sa.Connection, codes: Sequence[str] | None) -> Snapshots:
    query = sa.select(Measure.__table__)
    if codes is not None:
        query = query.where(Measure.code.in_(codes))
    measures = connection.execute(query).all()
    matter_codes = sorted({code for row in measures for code in row.matter_types})
    matter_names = {
        code: name
        for code, name in connection.execute(
            sa.select(MatterType.code, MatterType.name).where(MatterType.code.in_(matter_codes))
        )
    }
    return {
        row.code: {
            "code": row.code,
            "text": row.text,
            "legal_basis": row.legal_basis,
            "implementing_sectors": list(row.implementing_sectors),
            "list_types": list(row.list_types),
            # Codes were checked against the catalog when the measure was written.
            "matter_types": [
                {"code": code, "name": matter_names[code]} for code in row.matter_types
            ],
            "feedback_required": row.feedback_required,
            "feedback_days": row.feedback_days,
            "target": row.target,
            "roles": list(row.roles),
        }
        for row in measures
    }


def _list_types(connection: sa.Connection, codes: Sequence[str] | None) -> Snapshots:
    query = sa.select(CreditListType.__table__)
    if codes is not None:
        query = query.where(CreditListType.code.in_(codes))
    return {
        row.code: {
            "code": row.code,
            "name": row.name,
            "listing_sectors": list(row.listing_sectors),
            "duration_years": row.duration_years,
            "early_removal_after_years": row.early_removal_after_years,
            "extendable_years": row.extendable_years,
            "escalates_to": row.escalates_to,
            "escalates_after_years": row.escalates_after_years,
            "legal_basis": row.legal_basis,
        }
        for row in connection.execute(query)
    }


def _assistance_items(connection: sa.Connection, codes: Sequence[str] | None) -> Snapshots:
    query = sa.select(AssistanceItem.__table__)
    if codes is not None:
        query = query.where(AssistanceItem.code.in_(codes))
    items = connection.execute(query).all()
    named = (
        {row.requesting_department_id for row in items if row.requesting_department_id}
        | {row.assisting_department_id for row in items}
        | {row.supervising_department_id for row in items}
    )
    departments = {
        row.id: {"code": row.code, "uscc": row.uscc, "name": row.name}
        for row in connection.execute(
            sa.select(Department.id, Department.code, Department.uscc, Department.name).where(
                Department.id.in_(sorted(named))
            )
        )
    }
    return {
        row.code: {
            "code": row.code,
            "batch": row.batch,
            "name": row.name,
            "requesting_sector": row.requesting_sector_code,
            "requesting_department": departments.get(row.requesting_department_id),
            "assisting_department": departments[row.assisting_department_id],
            "supervising_department": departments[row.supervising_department_id],
            "content": row.content,
            "time_limit_days": row.time_limit_days,
            "working_days": row.working_days,
            "cadence": row.cadence,
            "legal_basis": row.legal_basis,
            "version": row.version,
            "retired_at": _millis(row.retired_at),
            "retired_reason": row.retired_reason,
            "updated_at": _millis(row.updated_at),
        }
        for row in items
    }


def _subscriptions(connection: sa.Connection, ids: Sequence[str] | None) -> Snapshots:
    query = (
        sa.select(
            Subscription.id,
            DataResource.code.label("resource_code"),
            DataResource.topic,
            Department.code.label("subscriber_code"),
            Subscription.status,
            Subscription.fields,
            Subscription.filters,
            Subscription.valid_until,
            Subscription.decided_at,
        )
        .join_from(Subscription, DataResource, Subscription.resource_id == DataResource.id)
        .join(Department, Subscription.subscriber_department_id == Department.id)
    )
    if ids is not None:
        query = query.where(Subscription.id.in_([int(key) for key in ids]))
    return {
        str(row.id): {
            "subscription_id": row.id,
            "resource_code": row.resource_code,
            "topic": row.topic,
            "subscriber_code": row.subscriber_code,
            "status": str(row.status),
            "fields": row.fields,
            "filters": {"divisions": row.filters.get("divisions")} if row.filters else None,
            "valid_until": _millis(row.valid_until),
            "decided_at": _millis(row.decided_at),
        }
        for row in connection.execute(query)
    }


DEPARTMENTS = PublishedEntity(REGISTRY_RECORD_TYPES["department"], _departments)
APPROVAL_ITEMS = PublishedEntity(REGISTRY_RECORD_TYPES["approval_item"], _approval_items)
MEASURES = PublishedEntity(REGISTRY_RECORD_TYPES["measure"], _measures)
LIST_TYPES = PublishedEntity(REGISTRY_RECORD_TYPES["credit_list_type"], _list_types)
SUBSCRIPTIONS = PublishedEntity(REGISTRY_RECORD_TYPES["subscription"], _subscriptions)
ASSISTANCE_ITEMS = PublishedEntity(REGISTRY_RECORD_TYPES["assistance_item"], _assistance_items)

#: Everything the registry publishes, in the order snapshots are written (and locked).
PUBLISHED: tuple[PublishedEntity, ...] = (
    DEPARTMENTS,
    APPROVAL_ITEMS,
    MEASURES,
    LIST_TYPES,
    SUBSCRIPTIONS,
    ASSISTANCE_ITEMS,
)


# -- from changed rows to snapshots ---------------------------------------------------------

#: For each table whose rows are published (or are part of what is), the attribute that
#: names the entity a changed row belongs to.
_NOTED_BY: dict[type[Base], str] = {
    Department: "code",
    ApprovalItem: "code",
    ApprovalRoute: "item_code",
    ApprovalMatchRule: "item_code",
    MatterType: "code",
    Measure: "code",
    CreditListType: "code",
    DataResource: "code",
    Subscription: "id",
    AssistanceItem: "code",
}


def note_changes(session: Session, rows: Iterable[Base]) -> None:
    """Remember the entities ``rows`` belong to; called by the audited session with the
    rows each flush changed (created, updated or deleted)."""
    noted: set[tuple[type[Base], Any]] = session.info.setdefault(_NOTED, set())
    for row in rows:
        attribute = _NOTED_BY.get(type(row))
        if attribute is not None:
            noted.add((type(row), getattr(row, attribute)))


def forget_changes(session: Session) -> None:
    """Drop what was noted; called when the session's transaction rolls back."""
    session.info.pop(_NOTED, None)


def write_changed(session: Session) -> int:
    """Write a snapshot of every entity changed in this transaction; the number of rows.

    Called by the audited session just before it commits, after its last flush.
    """
    noted: set[tuple[type[Base], Any]] = session.info.pop(_NOTED, set())
    if not noted:
        return 0
    connection = session.connection()
    return _write(connection, _affected(connection, noted))


def write_all(session: Session) -> int:
    """Write a snapshot of every published entity (to bootstrap a new topic, or after a
    restore); the number of rows. Removed entities are not known, so no tombstones."""
    connection = session.connection()
    return _write(connection, {entity: set(entity.read(connection, None)) for entity in PUBLISHED})


def _affected(
    connection: sa.Connection, noted: set[tuple[type[Base], Any]]
) -> dict[PublishedEntity, set[str]]:
    """The published entities, by key, that the noted rows belong to or appear in."""

    def noted_of(*models: type[Base]) -> list[Any]:
        return sorted({value for model, value in noted if model in models})

    departments = noted_of(Department)
    items = set(noted_of(ApprovalItem, ApprovalRoute, ApprovalMatchRule))
    if departments:  # a route names its department's code, USCC and name
        items.update(
            connection.scalars(
                sa.select(ApprovalRoute.item_code)
                .join_from(ApprovalRoute, Department, ApprovalRoute.department_id == Department.id)
                .where(Department.code.in_(departments))
            )
        )
    measures = set(noted_of(Measure))
    matter_types = noted_of(MatterType)
    if matter_types:  # a measure names the matters it restricts
        measures.update(
            connection.scalars(
                sa.select(Measure.code).where(Measure.matter_types.has_any(array(matter_types)))
            )
        )
    assistance_items = set(noted_of(AssistanceItem))
    if departments:  # an assistance item names its departments' codes, USCCs and names
        ids = sa.select(Department.id).where(Department.code.in_(departments))
        assistance_items.update(
            connection.scalars(
                sa.select(AssistanceItem.code).where(
                    AssistanceItem.requesting_department_id.in_(ids)
                    | AssistanceItem.assisting_department_id.in_(ids)
                    | AssistanceItem.supervising_department_id.in_(ids)
                )
            )
        )
    subscriptions = {str(subscription_id) for subscription_id in noted_of(Subscription)}
    resources = noted_of(DataResource)
    if resources:  # a subscription names its resource's code and topic
        subscriptions.update(
            str(subscription_id)
            for subscription_id in connection.scalars(
                sa.select(Subscription.id)
                .join_from(Subscription, DataResource, Subscription.resource_id == DataResource.id)
                .where(DataResource.code.in_(resources))
            )
        )
    return {
        DEPARTMENTS: set(departments),
        APPROVAL_ITEMS: items,
        MEASURES: measures,
        LIST_TYPES: set(noted_of(CreditListType)),
        SUBSCRIPTIONS: subscriptions,
        ASSISTANCE_ITEMS: assistance_items,
    }


def _write(connection: sa.Connection, wanted: dict[PublishedEntity, set[str]]) -> int:
    rows: list[dict[str, Any]] = []
    for entity in PUBLISHED:
        keys = sorted(wanted.get(entity, ()))
        if not keys:
            continue
        _lock(connection, entity.topic, keys)
        snapshots = entity.read(connection, keys)
        rows.extend(
            {"topic": entity.topic, "key": key, "payload": snapshots.get(key)} for key in keys
        )
    if rows:
        connection.execute(sa.insert(OutboxEntry), rows)
    return len(rows)


def _lock(connection: sa.Connection, topic: str, keys: Collection[str]) -> None:
    """Hold these keys until the transaction ends.

    Two transactions may change one entity through different rows (a department renamed
    while a route to it is added). Without the lock each would snapshot the entity
    without the other's change, and whichever committed last would leave its stale
    snapshot as the latest record. With it the second waits, then reads the first's
    committed change (read committed: every statement sees the latest commits), and its
    row gets the higher id. Keys are locked in one order everywhere (:data:`PUBLISHED`,
    then sorted), so two writers cannot deadlock on them.
    """
    connection.execute(
        sa.text(
            "SELECT count(pg_advisory_xact_lock(hashtext(:topic), hashtext(key)))"
            " FROM unnest(CAST(:keys AS text[])) AS wanted(key)"
        ),
        {"topic": topic, "keys": list(keys)},
    )
