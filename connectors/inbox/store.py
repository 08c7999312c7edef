"""The read side of a department's inbox: what the credit database says it was delivered,
the state each item is in now, its history, and what became of the department's actions.

It reads the tables the sink writes (``connectors/sink/``) over a read-only connection:
as the role ``xietong_inbox``, which may SELECT those tables and nothing else (the sink's
migration ``0010``), with every transaction ``READ ONLY``. It knows nothing of HTTP, so
the inbox API and a clerk's workbench use it alike::

    store = InboxStore(credit_database_url, business_clock())
    page = store.page("hz-xh-transport", InboxFilter.parse(kind="push"), limit=50)
    page.items[0].item_id, page.next_cursor          # resume with next_cursor later
    store.item("hz-xh-transport", push_id)            # None: not this department's
    store.action("hz-xh-transport", action_id).status # PENDING | APPLIED | REJECTED

Every question names the department: an item is its only if it was delivered to its
inbox and the current state names it, and an action only if it came on its inbound topic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connectors.inbox.items import (
    APPLIED_STATE,
    ITEM_SOURCES,
    VERSIONED_RECORD_TYPES,
    InboxFilter,
    InboxKind,
    encode_cursor,
    source_of,
)
from streams.dual_notice.rules import rejection_id
from xietong.clock import BusinessClock


@dataclass(frozen=True)
class InboxItem:
    """One item as it stands: its kind and state, the entity, what it is about, the
    deadline it carries (a push's claim or licence deadline, a hit's feedback deadline,
    an alert's), when it was made, and the inbox offset of its latest delivery."""

    item_id: str
    kind: InboxKind
    state: str
    is_open: bool
    uscc: str
    entity_name: str | None
    title: str | None
    deadline: datetime | None
    at: datetime
    offset: int
    record_type: str

    @classmethod
    def of(cls, row: Mapping[str, Any] | sa.RowMapping) -> InboxItem:
        return cls(
            row["item_id"],
            InboxKind(row["kind"]),
            row["state"],
            row["is_open"],
            row["uscc"],
            row["entity_name"],
            row["title"],
            row["deadline"],
            row["at"],
            row["last_offset"],
            row["record_type"],
        )


@dataclass(frozen=True)
class InboxPage:
    """A page of items in inbox order; ``next_cursor`` resumes after it (after the
    given cursor when the page is empty), ``more`` says whether items follow now."""

    items: list[InboxItem]
    next_cursor: str
    more: bool


@dataclass(frozen=True)
class InboxItemDetail:
    """One item with its record as it stands, its versions (each as the processor
    published it, with the inbox offset where it was delivered: None for a version that
    reached no inbox, such as the department's own claim), and the department's actions
    on it with their outcome."""

    item: InboxItem
    record: dict[str, Any]
    versions: list[dict[str, Any]]
    actions: list[ActionOutcome]


@dataclass(frozen=True)
class ActionOutcome:
    """What became of one action of a department: PENDING (not received, or received
    and not applied yet), APPLIED, or REJECTED with the processor's reason."""

    action_id: str
    status: str
    received: bool = False
    action: str | None = None
    item_id: str | None = None
    received_at: datetime | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


_ITEMS = " UNION ALL ".join(f"({source.sql()})" for source in ITEM_SOURCES)
_ITEM_ID = (
    "CASE WHEN record_type IN ("
    + ", ".join(f"'{name}'" for name in VERSIONED_RECORD_TYPES)
    + ") THEN subject_id ELSE record_event_id END"
)
_DELIVERED = f"""
    SELECT {_ITEM_ID} AS item_id, max(source_offset) AS last_offset
      FROM deliveries WHERE department_code = %(department)s {{only}} GROUP BY 1
"""
#: The deliveries of one item only (its id is the subject or the record's).
_OF_ONE_ITEM = "AND (subject_id = %(item)s OR record_event_id = %(item)s)"


#: The credit database's role the store reads as (connectors/sink/migrations, 0010).
READER_ROLE = "xietong_inbox"


class InboxStore:
    """The inbox's read side over the credit database at ``database_url`` (SQLAlchemy URL)."""

    def __init__(self, database_url: str, clock: BusinessClock, role: str = READER_ROLE) -> None:
        self.engine = sa.create_engine(
            database_url,
            pool_pre_ping=True,
            connect_args={
                "options": f"-c role={role} -c default_transaction_read_only=on",
                "application_name": "xietong-inbox",
            },
        )
        self.clock = clock

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection
            connection.rollback()

    def ping(self) -> None:
        """Raise if the database cannot be read."""
        with self._read() as connection:
            connection.exec_driver_sql("SELECT 1 FROM deliveries LIMIT 1")

    # -- the list ---------------------------------------------------------------------------

    def page(self, department: str, wanted: InboxFilter, limit: int) -> InboxPage:
        """The department's items after ``wanted.after_offset`` that ``wanted`` selects, in
        inbox order, at most ``limit``."""
        where = ["d.last_offset > %(after)s"]
        params: dict[str, Any] = {
            "department": department,
            "after": wanted.after_offset,
            "limit": limit + 1,
        }
        if wanted.kinds is not None:
            where.append("i.kind = ANY(%(kinds)s)")
            params["kinds"] = [kind.value for kind in wanted.kinds]
        if wanted.states is not None:
            where.append("i.state = ANY(%(states)s)")
            params["states"] = list(wanted.states)
        elif wanted.open_only:
            where.append("i.is_open")
        if wanted.since is not None:
            where.append("i.at >= %(since)s")
            params["since"] = self.clock.midnight(wanted.since)
        if wanted.until is not None:
            where.append("i.at < %(until)s")
            params["until"] = self.clock.midnight(wanted.until + timedelta(days=1))
        sql = f"""
            WITH delivered AS ({_DELIVERED.format(only="")}), items AS ({_ITEMS})
            SELECT i.*, d.last_offset FROM delivered d JOIN items i USING (item_id)
             WHERE {" AND ".join(where)}
             ORDER BY d.last_offset LIMIT %(limit)s
        """
        with self._read() as connection:
            rows = connection.exec_driver_sql(sql, params).mappings().all()
        items = [InboxItem.of(row) for row in rows[:limit]]
        after = items[-1].offset if items else wanted.after_offset
        return InboxPage(items, encode_cursor(after), more=len(rows) > limit)

    # -- one item ---------------------------------------------------------------------------

    def find(self, department: str, item_id: str) -> InboxItem | None:
        """The department's item ``item_id`` as it stands; None if it is not its own."""
        sql = f"""
            WITH delivered AS ({_DELIVERED.format(only=_OF_ONE_ITEM)}), items AS ({_ITEMS})
            SELECT i.*, d.last_offset FROM delivered d JOIN items i USING (item_id)
             WHERE i.item_id = %(item)s
        """
        with self._read() as connection:
            row = (
                connection.exec_driver_sql(sql, {"department": department, "item": item_id})
                .mappings()
                .first()
            )
        return None if row is None else InboxItem.of(row)

    def item(self, department: str, item_id: str) -> InboxItemDetail | None:
        """The department's item with its record, versions and actions; None if it is not
        its own (another department's, or unknown)."""
        found = self.find(department, item_id)
        if found is None:
            return None
        source = source_of(found.record_type)
        with self._read() as connection:
            record = connection.exec_driver_sql(
                f"SELECT to_jsonb(t) FROM {source.table} t WHERE {source.key} = %(item)s",
                {"item": item_id},
            ).scalar_one()
            versions = self._versions(connection, department, found.kind, item_id)
        actions = self._actions_on(department, found.kind, item_id)
        return InboxItemDetail(found, record, versions, actions)

    def registration_of(self, department: str, push_id: str) -> dict[str, Any] | None:
        """The registration a push of the department was made for (登记信息: name, kind,
        address, legal representative, business scope, its 许可项目 …), as the credit
        database holds it; None if the push is not the department's, or the registration
        is not stored (yet)."""
        found = self.find(department, push_id)
        if found is None or found.kind is not InboxKind.PUSH:
            return None
        with self._read() as connection:
            row = connection.exec_driver_sql(
                """SELECT to_jsonb(r) - 'source_topic' - 'source_partition' - 'source_offset'
                          - 'ingested_at'
                     FROM registrations r JOIN dual_notice_pushes p
                          ON r.event_id = p.registration_event_id
                    WHERE p.push_id = %(push)s""",
                {"push": push_id},
            ).scalar()
        return None if row is None else dict(row)

    def _versions(
        self, connection: Connection, department: str, kind: InboxKind, item_id: str
    ) -> list[dict[str, Any]]:
        history = {
            InboxKind.PUSH: ("dual_notice_push_states", "push_id", "h.version, h.source_offset"),
            InboxKind.HIT: ("restriction_hit_states", "hit_id", "h.source_offset"),
        }
        if kind in history:
            table, key, order = history[kind]
            sql = f"""
                SELECT to_jsonb(h) - 'source_topic' - 'source_partition' - 'source_offset'
                       - 'ingested_at' AS version,
                       d.source_offset AS inbox_offset, d.delivered_at
                  FROM {table} h
                  LEFT JOIN deliveries d ON d.record_event_id = h.event_id
                       AND d.department_code = %(department)s
                 WHERE h.{key} = %(item)s ORDER BY {order}
            """
        else:
            sql = """
                SELECT NULL::jsonb AS version, record_type, record_event_id,
                       source_offset AS inbox_offset, delivered_at
                  FROM deliveries
                 WHERE department_code = %(department)s AND record_event_id = %(item)s
                 ORDER BY source_offset
            """
        rows = connection.exec_driver_sql(sql, {"department": department, "item": item_id})
        versions = []
        for row in rows.mappings():
            entry = dict(row.get("version") or {k: v for k, v in row.items() if k != "version"})
            entry["inbox_offset"] = row["inbox_offset"]
            entry["delivered_at"] = row["delivered_at"]
            versions.append(entry)
        return versions

    # -- actions ----------------------------------------------------------------------------

    def _actions_on(self, department: str, kind: InboxKind, item_id: str) -> list[ActionOutcome]:
        if kind is InboxKind.PUSH:
            sql = """SELECT DISTINCT action_id FROM dual_notice_actions
                      WHERE department_code = %(department)s AND push_id = %(item)s"""
        elif kind is InboxKind.HIT:
            sql = """SELECT DISTINCT feedback_id FROM restriction_feedback
                      WHERE department_code = %(department)s AND hit_id = %(item)s"""
        else:
            return []
        with self._read() as connection:
            ids = connection.exec_driver_sql(
                sql, {"department": department, "item": item_id}
            ).scalars()
            return [self._outcome(connection, department, action_id) for action_id in ids]

    def action(self, department: str, action_id: str) -> ActionOutcome:
        """What became of the department's action ``action_id`` (a 双告知 action or a 反馈):
        PENDING while the platform has not received it (or not applied it yet), APPLIED,
        or REJECTED with the processor's reason. Another department's action reads as one
        never received."""
        with self._read() as connection:
            return self._outcome(connection, department, action_id)

    def _outcome(self, connection: Connection, department: str, action_id: str) -> ActionOutcome:
        params = {"department": department, "id": action_id}
        received = (
            connection.exec_driver_sql(
                """SELECT event_id, action, push_id, acted_at, received_at
                     FROM dual_notice_actions
                    WHERE action_id = %(id)s AND department_code = %(department)s
                    ORDER BY received_at""",
                params,
            )
            .mappings()
            .all()
        )
        if received:
            return self._push_action(connection, department, action_id, received)
        feedback = (
            connection.exec_driver_sql(
                """SELECT hit_id, outcome, received_at FROM restriction_feedback
                    WHERE feedback_id = %(id)s AND department_code = %(department)s
                    ORDER BY received_at LIMIT 1""",
                params,
            )
            .mappings()
            .first()
        )
        if feedback is None:
            return ActionOutcome(action_id, "PENDING")
        applied = connection.exec_driver_sql(
            """SELECT 1 FROM restriction_hit_states
                WHERE hit_id = %(hit)s AND feedback_id = %(id)s AND department_code = %(department)s
                LIMIT 1""",
            {**params, "hit": feedback["hit_id"]},
        ).first()
        return ActionOutcome(
            action_id,
            "APPLIED" if applied else "PENDING",
            received=True,
            action=f"FEEDBACK_{feedback['outcome']}",
            item_id=feedback["hit_id"],
            received_at=feedback["received_at"],
        )

    def _push_action(
        self,
        connection: Connection,
        department: str,
        action_id: str,
        received: Sequence[sa.RowMapping],
    ) -> ActionOutcome:
        first = received[0]
        common = {
            "received": True,
            "action": first["action"],
            "item_id": first["push_id"],
            "received_at": first["received_at"],
        }
        refusal = (
            connection.exec_driver_sql(
                """SELECT reason, push_state, rejected_at FROM dual_notice_rejected_actions
                    WHERE event_id = ANY(%(ids)s) ORDER BY rejected_at LIMIT 1""",
                {"ids": [rejection_id(row["event_id"]) for row in received]},
            )
            .mappings()
            .first()
        )
        if refusal is not None:
            return ActionOutcome(
                action_id,
                "REJECTED",
                reason=refusal["reason"],
                details={"push_state": refusal["push_state"]},
                **common,
            )
        # Applied: the push changed to the action's state, by this department, at the
        # action's own acted_at (the processor keeps it as the change's time, or refuses).
        applied = connection.exec_driver_sql(
            """SELECT version FROM dual_notice_push_states
                WHERE push_id = %(push)s AND changed_by = %(department)s
                  AND state = %(state)s AND state_changed_at = %(acted_at)s LIMIT 1""",
            {
                "push": first["push_id"],
                "department": department,
                "state": APPLIED_STATE.get(first["action"], ""),
                "acted_at": first["acted_at"],
            },
        ).first()
        if applied is not None:
            return ActionOutcome(action_id, "APPLIED", details={"version": applied[0]}, **common)
        return ActionOutcome(action_id, "PENDING", **common)
