"""双告知's two time bases, each named: when a push and each change of its state happened
in the business, and when the platform recorded it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Before issue 13 a push's ``pushed_at`` was the processor's clock and its
``state_changed_at`` the business time of the change, so an auditor saw a push FULFILLED
(by a licence dated before the platform saw the registration) before it was pushed. Now
the processor publishes both bases (``schemas/avro/dual_notice_push.avsc``):
``pushed_at`` and ``state_changed_at`` are business time, ``push_recorded_at`` and
``state_recorded_at`` the platform's; likewise ``failed_at`` and ``failure_recorded_at``,
``state_changed_at`` and ``state_recorded_at`` of a 分流失败 record.

Rows stored before: their ``pushed_at`` was the platform's clock, so it moves to
``push_recorded_at``, and ``pushed_at`` becomes what the push's version 1 says in
business time (its ``state_changed_at``: the registration, or the action that made the
push). Their changes' platform time was never recorded: ``state_recorded_at`` stays null.
A 分流失败 row's ``failed_at`` was the platform's clock too; it is copied to
``failure_recorded_at`` (its business time is not in the table).

The views show both bases and never order a change before its push in the same base:
``state_changed_at`` is at least ``pushed_at`` (the processor guarantees it for new
records; the views hold it for the rows of before).
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

from xietong.clock import business_clock

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PUSH_TABLES = ("dual_notice_push_states", "dual_notice_pushes")
#: A change as the views show it: never before the push, in business time.
CHANGED_AT = "greatest(state_changed_at, pushed_at)"

PUSHES_VIEW = """
        SELECT push_id, department_code, department_name, uscc, entity_name, item_code,
               item_name, routing, state, pushed_at, claim_deadline, claimed_at,
               claimed_at - pushed_at AS time_to_claim,
               (claimed_at IS NULL AND claim_deadline < now()
                 AND state IN ('PUSHED', 'OVERDUE'))
               OR claimed_at > claim_deadline
               OR escalated_at IS NOT NULL AS overdue,
               escalated_at, return_reason, reason_text, fulfilled_by_licence,
               {changed_at} AS state_changed_at, version,
               push_recorded_at,
               state_recorded_at
          FROM dual_notice_pushes
"""
HISTORY_VIEW = """
        SELECT push_id, version, state, department_code, uscc, item_code, changed_by,
               {changed_at} AS state_changed_at, return_reason, reason_text, event_id,
               source_topic, source_partition, source_offset,
               pushed_at, push_recorded_at,
               state_recorded_at
          FROM dual_notice_push_states
"""
TIMELINE_PUSH_BEFORE = "SELECT uscc, state_changed_at, 'dual_notice_push'"
TIMELINE_PUSH = f"SELECT uscc, {CHANGED_AT}, 'dual_notice_push'"


def _timeline(push_at: str) -> str:
    """The entity timeline as 0003 made it, its push rows at ``push_at``."""
    first = import_module("connectors.sink.migrations.versions.0002_auditor_views")
    joint = import_module("connectors.sink.migrations.versions.0003_joint_punishment")
    statement: str = joint.TIMELINE.format(previous=first.VIEWS["entity_timeline"])
    assert statement.count(TIMELINE_PUSH_BEFORE) == 1, "the timeline reads as 0003 made it"
    return statement.replace(TIMELINE_PUSH_BEFORE, push_at)


def upgrade() -> None:
    for table in PUSH_TABLES:
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN push_recorded_at timestamptz,"
            " ADD COLUMN state_recorded_at timestamptz"
        )
        op.execute(
            f"""UPDATE {table} t
                   SET push_recorded_at = t.pushed_at,
                       pushed_at = coalesce(
                           (SELECT first.state_changed_at FROM dual_notice_push_states first
                             WHERE first.push_id = t.push_id AND first.version = 1),
                           t.pushed_at)
                 WHERE t.push_recorded_at IS NULL"""
        )
    op.execute(
        "ALTER TABLE dual_notice_routing_failures ADD COLUMN failure_recorded_at timestamptz,"
        " ADD COLUMN state_recorded_at timestamptz"
    )
    op.execute("UPDATE dual_notice_routing_failures SET failure_recorded_at = failed_at")
    op.execute(
        "CREATE OR REPLACE VIEW auditor.dual_notice_pushes AS"
        + PUSHES_VIEW.format(changed_at=CHANGED_AT)
    )
    op.execute(
        "CREATE OR REPLACE VIEW auditor.dual_notice_push_history AS"
        + HISTORY_VIEW.format(changed_at=CHANGED_AT)
    )
    op.execute(_timeline(TIMELINE_PUSH))


def downgrade() -> None:
    first = import_module("connectors.sink.migrations.versions.0002_auditor_views")
    op.execute(_timeline(TIMELINE_PUSH_BEFORE))
    # Views lose columns only when dropped; the monthly view reads dual_notice_pushes.
    op.execute("DROP VIEW auditor.dual_notice_claims_monthly")
    op.execute("DROP VIEW auditor.dual_notice_pushes")
    op.execute("DROP VIEW auditor.dual_notice_push_history")
    op.execute(f"CREATE VIEW auditor.dual_notice_pushes AS {first.VIEWS['dual_notice_pushes']}")
    op.execute(
        f"CREATE VIEW auditor.dual_notice_push_history AS {first.VIEWS['dual_notice_push_history']}"
    )
    months = import_module("connectors.sink.migrations.versions.0004_province_months")
    zone = business_clock().zone.key
    op.execute(months._monthly_view(f"date_trunc('month', pushed_at AT TIME ZONE '{zone}')"))
    role = first.ROLE
    for view in ("dual_notice_pushes", "dual_notice_push_history", "dual_notice_claims_monthly"):
        op.execute(f"GRANT SELECT ON auditor.{view} TO {role}")
    for table in PUSH_TABLES:
        op.execute(
            f"UPDATE {table} SET pushed_at = push_recorded_at WHERE push_recorded_at IS NOT NULL"
        )
        op.execute(
            f"ALTER TABLE {table} DROP COLUMN push_recorded_at, DROP COLUMN state_recorded_at"
        )
    op.execute(
        "ALTER TABLE dual_notice_routing_failures DROP COLUMN failure_recorded_at,"
        " DROP COLUMN state_recorded_at"
    )
