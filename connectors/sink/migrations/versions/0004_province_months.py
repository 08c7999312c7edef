"""The auditors' months are the province's: monthly claim rates count a push in the
month it was pushed in the province's time zone, not in the database server's.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

A push at 00:30 on 1 December in China (16:30 UTC on 30 November) is December's. The
zone is the business clock's (``XIETONG_TIME_ZONE``) when the migration runs.
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

from xietong.clock import business_clock

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MONTHLY = "dual_notice_claims_monthly"
SERVER_MONTH = "date_trunc('month', pushed_at)"


def _monthly_view(month: str) -> str:
    previous = import_module("connectors.sink.migrations.versions.0002_auditor_views")
    query: str = previous.VIEWS[MONTHLY]
    assert query.count(SERVER_MONTH) == 2, "the view counts months where 0002 made it"
    return f"CREATE OR REPLACE VIEW auditor.{MONTHLY} AS {query.replace(SERVER_MONTH, month)}"


def upgrade() -> None:
    zone = business_clock().zone.key
    op.execute(_monthly_view(f"date_trunc('month', pushed_at AT TIME ZONE '{zone}')"))


def downgrade() -> None:
    op.execute(_monthly_view(SERVER_MONTH))
