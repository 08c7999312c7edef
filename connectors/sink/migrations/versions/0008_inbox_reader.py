"""The read-only role ``xietong_inbox`` of the inbox API (``connectors/inbox/``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

The inbox API reads what departments were delivered and the state of each item; it
connects with ``role=xietong_inbox`` and every transaction ``READ ONLY``, so it can read
these tables and write none. Like the auditors' role it belongs to the whole cluster: made
only where missing, never dropped; the database user the service logs in as is made a
member (``GRANT xietong_inbox TO <its login>`` for a login of its own).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ROLE = "xietong_inbox"

#: What the inbox reads: the deliveries, the current and past states of its items, the
#: departments' actions as received and refused, and the registration a push was made for
#: (the workbench's 登记信息: InboxStore.registration_of).
TABLES = (
    "deliveries",
    "registrations",
    "dual_notice_pushes",
    "dual_notice_push_states",
    "dual_notice_alerts",
    "dual_notice_closure_notices",
    "dual_notice_actions",
    "dual_notice_rejected_actions",
    "restriction_hits",
    "restriction_hit_states",
    "restriction_feedback",
    "sanction_notices",
    "licence_review_notices",
    "lift_notices",
    "punishment_alerts",
)


def upgrade() -> None:
    op.execute(
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} NOLOGIN;
              END IF;
            END $$"""
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT SELECT ON {', '.join(TABLES)} TO {ROLE}")
    op.execute(f"GRANT {ROLE} TO CURRENT_USER")


def downgrade() -> None:
    op.execute(f"REVOKE SELECT ON {', '.join(TABLES)} FROM {ROLE}")
