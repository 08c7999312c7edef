"""The transactional outbox of the registry's compacted topics.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

One row per snapshot of a published entity (department, approval item, measure, list
type, subscription), written in the transaction that changed it; ``published_at`` is
set by the relay once the broker has acknowledged the record. Existing data gets no
rows here: ``xietong registry publish --republish`` writes a snapshot of everything.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("payload", JSONB(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("outbox")
