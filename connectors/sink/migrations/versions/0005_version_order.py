"""The auditors' "current" licence and listing follow the one order of a record's versions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

``entity_profile`` picked a licence's current status, and a listing's current state, by
the latest event time; but the event time is the record's business date, the same for
every version of one record (a licence VALID then CANCELLED), so PostgreSQL picked any.
``licences`` and ``list_entries`` get ``version_order``: the text the sink computes with
``xietong.versions.order_key``, which sorts a record's versions as the processors order
them (joint punishment, the credit check, 双告知). Rows written before this migration
have none; they sort after every row that has one, then by event time as before.

A licence is one record per issuer and 许可编号; a listing is its 列入 (the latest
version) and stands while the entry has no 移出 (its 列入 and 移出 are two records, so
which came later in time is no question of versions).
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PROFILE = "entity_profile"

VALID_LICENCES_BEFORE = """(SELECT count(*) FROM (SELECT DISTINCT ON (l.licence_number) l.status
                                        FROM licences l WHERE l.uscc = e.uscc
                                       ORDER BY l.licence_number, l.event_time DESC) v
                 WHERE v.status = 'VALID') AS valid_licences"""
VALID_LICENCES = """(SELECT count(*) FROM (
                    SELECT DISTINCT ON (l.authority_uscc, l.licence_number) l.status
                      FROM licences l WHERE l.uscc = e.uscc
                     ORDER BY l.authority_uscc, l.licence_number,
                              l.version_order DESC NULLS LAST, l.event_time DESC) v
                 WHERE v.status = 'VALID') AS valid_licences"""

CURRENT_LISTS_BEFORE = """(SELECT array_agg(DISTINCT le.list_type) FROM (
                    SELECT DISTINCT ON (entry_id) list_type, action FROM list_entries
                     WHERE uscc = e.uscc ORDER BY entry_id, event_time DESC) le
                 WHERE le.action = 'LISTED') AS current_lists"""
CURRENT_LISTS = """(SELECT array_agg(DISTINCT le.list_type) FROM (
                    SELECT DISTINCT ON (l.entry_id) l.entry_id, l.list_type
                      FROM list_entries l WHERE l.uscc = e.uscc AND l.action = 'LISTED'
                     ORDER BY l.entry_id, l.version_order DESC NULLS LAST,
                              l.event_time DESC) le
                 WHERE NOT EXISTS (SELECT 1 FROM list_entries r
                                    WHERE r.uscc = e.uscc AND r.entry_id = le.entry_id
                                      AND r.action = 'REMOVED')) AS current_lists"""


def _profile() -> str:
    previous = import_module("connectors.sink.migrations.versions.0002_auditor_views")
    query: str = previous.VIEWS[PROFILE]
    for before in (VALID_LICENCES_BEFORE, CURRENT_LISTS_BEFORE):
        assert query.count(before) == 1, "the view reads as 0002 made it"
    return query.replace(VALID_LICENCES_BEFORE, VALID_LICENCES).replace(
        CURRENT_LISTS_BEFORE, CURRENT_LISTS
    )


def upgrade() -> None:
    op.execute("ALTER TABLE licences ADD COLUMN version_order text")
    op.execute("ALTER TABLE list_entries ADD COLUMN version_order text")
    op.execute(f"CREATE OR REPLACE VIEW auditor.{PROFILE} AS {_profile()}")


def downgrade() -> None:
    previous = import_module("connectors.sink.migrations.versions.0002_auditor_views")
    op.execute(f"CREATE OR REPLACE VIEW auditor.{PROFILE} AS {previous.VIEWS[PROFILE]}")
    op.execute("ALTER TABLE list_entries DROP COLUMN version_order")
    op.execute("ALTER TABLE licences DROP COLUMN version_order")
