"""The inbox's reader may read the registration a push was made for.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

The clerk's workbench shows, beside a 双告知 push, the entity's registration (登记信息:
``InboxStore.registration_of``); it reads as ``xietong_inbox`` (0010), which now may
read ``registrations`` too. A grant only, never a write.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("GRANT SELECT ON registrations TO xietong_inbox")


def downgrade() -> None:
    op.execute("REVOKE SELECT ON registrations FROM xietong_inbox")
