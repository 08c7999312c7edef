"""列入严重违法失信名单建议 (经营异常名录届满三年) in the credit database.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

The joint-punishment processor proposes an entity listed on the 经营异常名录 for three years
to the department that decides, and republishes the proposal WITHDRAWN when a later removal
shows the listing ended in time. ``serious_listing_proposals`` holds every state a proposal
was published in (its delivery to the deciding department's inbox is a ``deliveries`` row
like any other); ``auditor.serious_listing_proposals`` shows each proposal as it stands (its
latest state by offset: a proposal's records share the entity's key, one partition).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ROLE = "xietong_auditor"

TABLE = """
    event_id text PRIMARY KEY,
    proposal_id text NOT NULL,
    status text NOT NULL,
    uscc text NOT NULL,
    entity_name text NOT NULL,
    entry_id text NOT NULL,
    list_type text NOT NULL,
    listing_authority_name text NOT NULL,
    document_number text NOT NULL,
    proposed_list_type text NOT NULL,
    years_listed integer NOT NULL,
    last_day date NOT NULL,
    due_on date NOT NULL,
    department_code text NOT NULL,
    department_name text NOT NULL,
    recipient_basis text NOT NULL,
    legal_basis text NOT NULL,
    proposed_at timestamptz NOT NULL,
    withdrawn_reason text,
    source_topic text NOT NULL,
    source_partition integer NOT NULL,
    source_offset bigint NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
"""

VIEW = """
    SELECT DISTINCT ON (proposal_id)
           proposal_id, status, uscc, entity_name, entry_id, list_type, last_day, due_on,
           department_code, department_name, recipient_basis, legal_basis, proposed_at,
           withdrawn_reason, event_id
      FROM serious_listing_proposals
     ORDER BY proposal_id, source_offset DESC
"""


def upgrade() -> None:
    op.execute(f"CREATE TABLE serious_listing_proposals ({TABLE})")
    op.execute("CREATE INDEX ON serious_listing_proposals (proposal_id)")
    op.execute("CREATE INDEX ON serious_listing_proposals (uscc)")
    op.execute(f"CREATE VIEW auditor.serious_listing_proposals AS {VIEW}")
    op.execute(f"GRANT SELECT ON auditor.serious_listing_proposals TO {ROLE}")


def downgrade() -> None:
    op.execute("DROP VIEW auditor.serious_listing_proposals")
    op.execute("DROP TABLE serious_listing_proposals")
