"""A registry token's scopes: what a department's token may be used for.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

The inbox API (``connectors/inbox/``) reads a department's inbox with ``inbox:read`` and
acts on it (claims, returns, stops, feedback) with ``inbox:act``. A token issued before
this revision keeps both, as does one issued without ``--scope``; the registry API and
the credit check ask for no scope.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "credentials",
        sa.Column(
            "scopes",
            JSONB(),
            server_default=sa.text("""'["inbox:read", "inbox:act"]'::jsonb"""),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("credentials", "scopes")
