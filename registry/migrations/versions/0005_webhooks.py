"""Webhook endpoints: where a department's inbox items are pushed, and their secrets.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

One endpoint per department (``connectors/webhooks`` POSTs each inbox item to it). The
signing secret is stored as is (HMAC needs it) and never audited; after a rotation the
previous secret keeps signing until ``previous_secret_valid_until``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("cloudevents", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
            name="fk_webhook_endpoints_department_id",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
        sa.UniqueConstraint("department_id", name="uq_webhook_endpoints_department_id"),
    )


def downgrade() -> None:
    op.drop_table("webhook_endpoints")
