"""Every change to the registry goes to the audit log, in the same transaction.

A service operation that changes a row says so with one of three calls, naming who
acts and which operation it is::

    audit.created(session, actor, "subscription.request", subscription)
    before = row_snapshot(subscription)
    subscription.status = SubscriptionStatus.APPROVED
    audit.updated(session, actor, "subscription.approve", subscription, before)
    audit.deleted(session, actor, "catalog.load", stale_route)

When the session flushes, one :class:`~registry.models.AuditEntry` per changed row is
inserted on the flush's own connection, with the row's state before and after (ids
assigned by the flush included). An update that changes nothing writes nothing, which
is what makes loading an unchanged catalog leave the log untouched.

:class:`AuditedSession` refuses to flush a new, changed or deleted row that none of
these calls announced (:class:`UnauditedChangeError`): a change cannot slip past the
log by forgetting to record it.

The same session feeds the outbox (:mod:`registry.outbox`): every row the audit log
records is noted, and just before the transaction commits a snapshot of each published
entity those rows belong to is written, so no change of published data commits without
its event, and a rolled-back one leaves none.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from registry import outbox
from registry.models import AuditEntry, Base, row_snapshot

_PENDING = "registry.audit.pending"


class ActorKind(StrEnum):
    ADMIN = "admin"
    DEPARTMENT = "department"
    SYSTEM = "system"  # the platform itself: scheduled expiry, catalog loads from the CLI


@dataclass(frozen=True)
class Actor:
    """Who performs an operation: an administrator, a department, or the platform itself.

    ``str(actor)`` is how the audit log and the subscription history name it:
    ``admin``, ``department:hz-amr``, ``system:expire-due``.
    """

    kind: ActorKind
    name: str = ""

    @classmethod
    def admin(cls, name: str = "") -> Actor:
        return cls(ActorKind.ADMIN, name)

    @classmethod
    def department(cls, code: str) -> Actor:
        return cls(ActorKind.DEPARTMENT, code)

    @classmethod
    def system(cls, job: str) -> Actor:
        return cls(ActorKind.SYSTEM, job)

    @property
    def is_admin(self) -> bool:
        return self.kind is ActorKind.ADMIN

    @property
    def department_code(self) -> str | None:
        return self.name if self.kind is ActorKind.DEPARTMENT else None

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}" if self.name else self.kind.value


class UnauditedChangeError(RuntimeError):
    """A row was about to change without an audit entry; a bug in the calling code."""


@dataclass
class _Change:
    actor: str
    action: str
    before: dict[str, Any] | None
    deleted: bool = False
    entity_id: str = ""


def created(session: Session, actor: Actor, action: str, row: Base) -> None:
    """Add ``row`` to the session; its creation is audited when the session flushes."""
    session.add(row)
    _pending(session).setdefault(row, _Change(str(actor), action, None))


def updated(session: Session, actor: Actor, action: str, row: Base, before: dict[str, Any]) -> None:
    """Record that ``row`` changed; ``before`` is its :func:`row_snapshot` before the change."""
    _pending(session).setdefault(row, _Change(str(actor), action, before))


def deleted(session: Session, actor: Actor, action: str, row: Base) -> None:
    """Delete ``row``; the audit entry keeps its last state."""
    _pending(session)[row] = _Change(
        str(actor), action, row_snapshot(row), deleted=True, entity_id=_entity_id(row)
    )
    session.delete(row)


class AuditedSession(Session):
    """A session that writes the audit log and refuses unaudited changes."""


def _pending(session: Session) -> dict[Base, _Change]:
    pending: dict[Base, _Change] = session.info.setdefault(_PENDING, {})
    return pending


def _entity_id(row: Base) -> str:
    """The row's primary key as text (assigned by the flush for a new row)."""
    key = sa.inspect(row).mapper.primary_key_from_instance(row)
    return "/".join(str(part) for part in key if part is not None)


@event.listens_for(AuditedSession, "before_flush")
def _refuse_unaudited(session: Session, flush_context: UOWTransaction, instances: object) -> None:
    pending = _pending(session)
    changed = [
        *session.new,
        *session.deleted,
        *(row for row in session.dirty if session.is_modified(row, include_collections=False)),
    ]
    unannounced = [row for row in changed if not isinstance(row, AuditEntry) and row not in pending]
    if unannounced:
        described = ", ".join(
            f"{type(row).__name__} {_entity_id(row) or '(new)'}" for row in unannounced
        )
        raise UnauditedChangeError(
            f"refusing to write {described} without an audit entry: change registry rows"
            " through registry.service, which records each change with registry.audit"
        )


@event.listens_for(AuditedSession, "after_flush")
def _write_audit_entries(session: Session, flush_context: UOWTransaction) -> None:
    pending = _pending(session)
    entries = []
    changed: list[Base] = []
    for row, change in pending.items():
        after = None if change.deleted else row_snapshot(row)
        if after is not None and after == change.before:
            continue
        changed.append(row)
        entries.append(
            {
                "actor": change.actor,
                "action": change.action,
                "entity": row.__tablename__,
                "entity_id": change.entity_id or _entity_id(row),
                "before": change.before,
                "after": after,
            }
        )
    pending.clear()
    if entries:
        session.connection().execute(sa.insert(AuditEntry), entries)
    outbox.note_changes(session, changed)


@event.listens_for(AuditedSession, "before_commit")
def _write_outbox(session: Session) -> None:
    # The commit flushes only after this hook; the snapshots must see the last changes.
    session.flush()
    outbox.write_changed(session)


@event.listens_for(AuditedSession, "after_soft_rollback")
def _forget_pending(session: Session, previous_transaction: SessionTransaction) -> None:
    _pending(session).clear()
    # A savepoint's rollback keeps what was noted before it: a snapshot too many is
    # harmless (the same state again), a missing one is not.
    if not previous_transaction.nested:
        outbox.forget_changes(session)
