"""What issue 13 added to sanction notices and penalties, in the credit database.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

``sanction_notice.avsc`` gained the division the implementing department was found for
(``division_code``) and what chose it (``division_basis``: REGISTRATION, the entity's
registered 住所; USCC, the code's characters 3–8 when no registration was known), and, for
a measure restricting persons (``measure.target`` PERSONS_IN_ROLE, ``measure.roles``), the
persons it names. ``penalty.avsc`` gained the early end of its publicity
(``publicity_ended_on``, ``publicity_end_reason``: 信用修复 or 撤销). The columns are null
in rows stored before (their records did not carry the fields); ``auditor.sanction_notices``
shows the new ones after its old columns.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ROLE = "xietong_auditor"

SANCTION_COLUMNS = (
    ("division_code", "text"),
    ("division_basis", "text"),
    ("measure_target", "text"),
    ("measure_roles", "text[]"),
    ("persons", "jsonb"),
)
PENALTY_COLUMNS = (("publicity_ended_on", "date"), ("publicity_end_reason", "text"))

VIEW_BEFORE = """
    SELECT department_code, department_name, uscc, entity_name, list_name, entry_id,
           measure_code, measure_text, valid_from, valid_to, feedback_required,
           notified_at, event_id
      FROM sanction_notices
"""
VIEW = """
    SELECT department_code, department_name, uscc, entity_name, list_name, entry_id,
           measure_code, measure_text, valid_from, valid_to, feedback_required,
           notified_at, event_id, division_code, division_basis, measure_target,
           measure_roles, persons
      FROM sanction_notices
"""


def upgrade() -> None:
    for name, kind in SANCTION_COLUMNS:
        op.execute(f"ALTER TABLE sanction_notices ADD COLUMN {name} {kind}")
    for name, kind in PENALTY_COLUMNS:
        op.execute(f"ALTER TABLE penalties ADD COLUMN {name} {kind}")
    op.execute(f"CREATE OR REPLACE VIEW auditor.sanction_notices AS {VIEW}")


def downgrade() -> None:
    op.execute("DROP VIEW auditor.sanction_notices")
    op.execute(f"CREATE VIEW auditor.sanction_notices AS {VIEW_BEFORE}")
    op.execute(f"GRANT SELECT ON auditor.sanction_notices TO {ROLE}")
    for name, _ in reversed(PENALTY_COLUMNS):
        op.execute(f"ALTER TABLE penalties DROP COLUMN {name}")
    for name, _ in reversed(SANCTION_COLUMNS):
        op.execute(f"ALTER TABLE sanction_notices DROP COLUMN {name}")
