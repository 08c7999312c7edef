"""行政协助事项清单: the assistance list, kept by the 编办 (domain brief §7, issue 15 §1).

The list is adjusted dynamically (动态调整) by three operations, each audited in the
caller's transaction and published through the outbox to ``registry.assistance-items``
(compacted, keyed by item code) like every other catalog:

* :func:`add_assistance_item` lists a new item (version 1);
* :func:`change_assistance_item` changes what an item says (version + 1; a change that
  changes nothing is no version and no audit entry);
* :func:`retire_assistance_item` takes it off the list (``retired_at``, the reason): no new
  request is taken on it, the requests made while it was listed go on.

:func:`assistance_item_history` is every version, before and after, from the audit log.
Only an administrator, the platform (a catalog load) or the item's own 编办 (its
supervising department) may change an item. Example::

    with transaction(sessions) as session:
        item = load_sample_province().assistance_items[0]
        add_assistance_item(session, Actor.department("hz-bb"), item)
        retire_assistance_item(session, Actor.admin(), item.code, "职责调整，并入 HZXZ-002")
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from registry import audit
from registry.audit import Actor, ActorKind
from registry.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from registry.models import AssistanceItem, AuditEntry, Department, Sector, row_snapshot
from registry.seed import ESTABLISHMENT_SECTOR
from registry.seed import AssistanceItem as ListedItem

__all__ = [
    "ListedItem",
    "add_assistance_item",
    "assistance_item_history",
    "change_assistance_item",
    "get_assistance_item",
    "list_assistance_items",
    "retire_assistance_item",
]


def list_assistance_items(
    session: Session, *, include_retired: bool = True
) -> Sequence[AssistanceItem]:
    query = sa.select(AssistanceItem).order_by(AssistanceItem.code)
    if not include_retired:
        query = query.where(AssistanceItem.retired_at.is_(None))
    return session.scalars(query).all()


def get_assistance_item(session: Session, code: str) -> AssistanceItem:
    item = session.get(AssistanceItem, code)
    if item is None:
        raise NotFoundError(f"no assistance item {code!r}", field="code")
    return item


def add_assistance_item(
    session: Session, actor: Actor, item: ListedItem, now: datetime | None = None
) -> AssistanceItem:
    """List a new item (version 1); an item of that code already listed is a conflict."""
    values = _values(session, item)
    _require_may_change(session, actor, values["supervising_department_id"], item.code)
    if session.get(AssistanceItem, item.code) is not None:
        raise ConflictError(
            f"assistance item {item.code} is listed already: change it instead", field="code"
        )
    now = now or datetime.now(UTC)
    row = AssistanceItem(code=item.code, version=1, created_at=now, updated_at=now, **values)
    audit.created(session, actor, "assistance_item.add", row)
    session.flush()
    return row


def change_assistance_item(
    session: Session, actor: Actor, item: ListedItem, now: datetime | None = None
) -> tuple[AssistanceItem, bool]:
    """Change what a listed item says; the row, and whether anything changed (then its
    version is one more). A retired item is not changed: list a new one."""
    row = get_assistance_item(session, item.code)
    values = _values(session, item)
    _require_may_change(session, actor, row.supervising_department_id, item.code)
    if values["supervising_department_id"] != row.supervising_department_id:
        _require_may_change(session, actor, values["supervising_department_id"], item.code)
    if row.retired_at is not None:
        raise ConflictError(
            f"assistance item {item.code} was retired on {row.retired_at.date()}: a retired"
            " item is not changed; list a new item with a code of its own",
            field="code",
        )
    changes = {name: value for name, value in values.items() if getattr(row, name) != value}
    if not changes:
        return row, False
    before = row_snapshot(row)
    for name, value in changes.items():
        setattr(row, name, value)
    row.version += 1
    row.updated_at = now or datetime.now(UTC)
    audit.updated(session, actor, "assistance_item.change", row, before)
    session.flush()
    return row, True


def retire_assistance_item(
    session: Session, actor: Actor, code: str, reason: str, now: datetime | None = None
) -> AssistanceItem:
    """Take an item off the list, saying why; no new request is taken on it."""
    row = get_assistance_item(session, code)
    _require_may_change(session, actor, row.supervising_department_id, code)
    if not reason.strip():
        raise InvalidInputError("retiring an item needs the reason (理由)", field="reason")
    if row.retired_at is not None:
        raise ConflictError(
            f"assistance item {code} was retired already on {row.retired_at.date()}",
            field="code",
        )
    before = row_snapshot(row)
    now = now or datetime.now(UTC)
    row.retired_at, row.retired_reason = now, reason.strip()
    row.version += 1
    row.updated_at = now
    audit.updated(session, actor, "assistance_item.retire", row, before)
    session.flush()
    return row


def assistance_item_history(session: Session, code: str) -> Sequence[AuditEntry]:
    """Every version of the item, oldest first: who changed it, when, before and after."""
    get_assistance_item(session, code)
    return session.scalars(
        sa.select(AuditEntry)
        .where(AuditEntry.entity == AssistanceItem.__tablename__, AuditEntry.entity_id == code)
        .order_by(AuditEntry.id)
    ).all()


def sync_listed_item(session: Session, actor: Actor, item: ListedItem, now: datetime) -> str:
    """Bring one item of a catalog load up to date: ``created``, ``updated`` or
    ``unchanged`` (a retired item is left retired: a load does not list it again)."""
    row = session.get(AssistanceItem, item.code)
    if row is None:
        add_assistance_item(session, actor, item, now)
        return "created"
    if row.retired_at is not None:
        return "unchanged"
    return "updated" if change_assistance_item(session, actor, item, now)[1] else "unchanged"


# -- helpers --------------------------------------------------------------------------------


def _department_id(session: Session, code: str, field: str) -> int:
    found = session.scalars(sa.select(Department.id).where(Department.code == code)).first()
    if found is None:
        raise InvalidInputError(f"{field}: no department {code!r} in the registry", field=field)
    return found


def _values(session: Session, item: ListedItem) -> dict[str, Any]:
    if item.requesting_sector and session.get(Sector, item.requesting_sector) is None:
        raise InvalidInputError(
            f"requesting_sector: no sector {item.requesting_sector!r} in the catalog",
            field="requesting_sector",
        )
    supervisor = _department_id(session, item.supervisor, "supervisor")
    sector = session.scalars(sa.select(Department.sector_code).where(Department.id == supervisor))
    if sector.first() != ESTABLISHMENT_SECTOR:
        raise InvalidInputError(
            f"supervisor: {item.supervisor} is not a 编办 (sector organization_establishment);"
            " the 编办 compiles and supervises the assistance list",
            field="supervisor",
        )
    requesting = item.requesting_department
    return {
        "batch": item.batch,
        "name": item.name,
        "requesting_sector_code": item.requesting_sector,
        "requesting_department_id": (
            _department_id(session, requesting, "requesting_department") if requesting else None
        ),
        "assisting_department_id": _department_id(session, item.assisting, "assisting"),
        "content": item.content,
        "time_limit_days": item.time_limit_days,
        "working_days": item.working_days,
        "cadence": item.cadence,
        "legal_basis": item.legal_basis,
        "supervising_department_id": supervisor,
    }


def _require_may_change(session: Session, actor: Actor, supervisor_id: int, code: str) -> None:
    if actor.is_admin or actor.kind is ActorKind.SYSTEM:
        return
    if actor.kind is ActorKind.DEPARTMENT:
        own = session.scalars(sa.select(Department.id).where(Department.code == actor.name))
        if own.first() == supervisor_id:
            return
    raise ForbiddenError(
        f"{actor} may not change assistance item {code}: only its 编办 (supervising"
        " department) or an administrator may"
    )
