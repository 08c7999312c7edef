"""行政协助事项清单: the assistance items the 编办 lists (issue 15 §1).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

One row per item, its versions in the audit log (``version`` counts them); a retired item
keeps its row with ``retired_at`` and the reason. Published to ``registry.assistance-items``
through the outbox like the other catalogs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assistance_items",
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "requesting_sector_code",
            sa.String(40),
            sa.ForeignKey("sectors.code", name="fk_assistance_items_requesting_sector_code"),
        ),
        sa.Column(
            "requesting_department_id",
            sa.Integer(),
            sa.ForeignKey("departments.id", name="fk_assistance_items_requesting_department_id"),
        ),
        sa.Column(
            "assisting_department_id",
            sa.Integer(),
            sa.ForeignKey("departments.id", name="fk_assistance_items_assisting_department_id"),
            nullable=False,
        ),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("time_limit_days", sa.Integer(), nullable=False),
        sa.Column("working_days", sa.Boolean(), nullable=False),
        sa.Column("cadence", sa.String(20)),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column(
            "supervising_department_id",
            sa.Integer(),
            sa.ForeignKey("departments.id", name="fk_assistance_items_supervising_department_id"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
        sa.Column("retired_reason", sa.Text()),
        sa.CheckConstraint("time_limit_days > 0", name="ck_assistance_items_time_limit_positive"),
        sa.CheckConstraint(
            "requesting_sector_code IS NULL OR requesting_department_id IS NULL",
            name="ck_assistance_items_one_kind_of_requester",
        ),
        sa.CheckConstraint(
            "cadence IS NULL OR cadence IN ('MONTHLY', 'QUARTERLY', 'HALF_YEARLY', 'YEARLY')",
            name="ck_assistance_items_cadence_known",
        ),
        sa.PrimaryKeyConstraint("code", name="pk_assistance_items"),
    )
    op.create_index(
        "ix_assistance_items_assisting_department_id",
        "assistance_items",
        ["assisting_department_id"],
    )


def downgrade() -> None:
    op.drop_table("assistance_items")
