"""A licence's 注销/吊销/撤销日期 in the credit database, and on the entity's profile.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

``licence.avsc`` gained ``status_changed_on`` (the day a licence stopped being valid:
注销, 吊销, 撤销, or the day after its 有效期至 for 过期; null where the department did not
say). ``licences`` stores it; ``auditor.entity_profile`` gains ``ended_licences``: each
licence of the entity whose current version (the one order of versions, 0005) is not
VALID, with its status and that day, earliest first.
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PROFILE = "entity_profile"
LAST_COLUMN = "AS unclaimed_pushes"
ENDED_LICENCES = """AS unclaimed_pushes,
               (SELECT jsonb_agg(jsonb_build_object(
                           'licence_number', v.licence_number,
                           'authority_name', v.authority_name,
                           'status', v.status,
                           'status_changed_on', v.status_changed_on)
                         ORDER BY v.status_changed_on NULLS LAST, v.licence_number)
                  FROM (SELECT DISTINCT ON (l.authority_uscc, l.licence_number)
                               l.licence_number, l.authority_name, l.status,
                               l.status_changed_on
                          FROM licences l WHERE l.uscc = e.uscc
                         ORDER BY l.authority_uscc, l.licence_number,
                                  l.version_order DESC NULLS LAST, l.event_time DESC) v
                 WHERE v.status <> 'VALID') AS ended_licences"""


def _profile_before() -> str:
    previous = import_module("connectors.sink.migrations.versions.0005_version_order")
    query: str = previous._profile()
    return query


def upgrade() -> None:
    op.execute("ALTER TABLE licences ADD COLUMN status_changed_on date")
    query = _profile_before()
    assert query.count(LAST_COLUMN) == 1, "the profile reads as 0005 made it"
    op.execute(
        f"CREATE OR REPLACE VIEW auditor.{PROFILE} AS {query.replace(LAST_COLUMN, ENDED_LICENCES)}"
    )


def downgrade() -> None:
    role = import_module("connectors.sink.migrations.versions.0002_auditor_views").ROLE
    op.execute(f"DROP VIEW auditor.{PROFILE}")
    op.execute(f"CREATE VIEW auditor.{PROFILE} AS {_profile_before()}")
    op.execute(f"GRANT SELECT ON auditor.{PROFILE} TO {role}")
    op.execute("ALTER TABLE licences DROP COLUMN status_changed_on")
