"""A measure's target: the entity, or the persons holding roles in it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

公司法 §178 measures (限制担任法定代表人、董监高) restrict persons, not the entity's own
matters (``streams/measures.py``). Existing measures restrict the entity; the seed marks
the person measures when it is loaded again (``xietong registry seed``), and a
``--republish`` publishes them with the new fields.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "measures", sa.Column("target", sa.String(20), server_default="ENTITY", nullable=False)
    )
    op.add_column(
        "measures",
        sa.Column("roles", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("measures", "roles")
    op.drop_column("measures", "target")
