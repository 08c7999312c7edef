"""一处违法、处处受限: the joint-punishment processor's records, and the auditor views of
restriction hits and their feedback.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``restriction_hit_states`` holds every state a restriction hit was republished in
(feedback, withdrawal); ``restriction_hits`` its latest (the highest offset: a hit's
records share the entity's key, so they are in one partition, in order).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ROLE = "xietong_auditor"

LINEAGE = """
    source_topic text NOT NULL,
    source_partition integer NOT NULL,
    source_offset bigint NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
"""

TABLES = {
    # 办理事项
    "matter_events": f"""
        event_id text PRIMARY KEY,
        uscc text NOT NULL,
        entity_name text,
        department_code text NOT NULL,
        matter_type text NOT NULL,
        matter_reference text NOT NULL,
        matter_name text,
        matter_date date NOT NULL,
        source text NOT NULL,
        credit_check_id text,
        occurred_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 惩戒告知
    "sanction_notices": f"""
        event_id text PRIMARY KEY,
        uscc text NOT NULL,
        entity_name text NOT NULL,
        entry_id text NOT NULL,
        list_type text NOT NULL,
        list_name text NOT NULL,
        listing_authority_name text NOT NULL,
        document_number text NOT NULL,
        measure_code text NOT NULL,
        measure_text text NOT NULL,
        measure_legal_basis text NOT NULL,
        department_code text NOT NULL,
        department_name text NOT NULL,
        valid_from date NOT NULL,
        valid_to date,
        feedback_required boolean NOT NULL,
        notified_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 许可审查告知
    "licence_review_notices": f"""
        event_id text PRIMARY KEY,
        uscc text NOT NULL,
        entity_name text NOT NULL,
        cause text NOT NULL,
        cause_id text NOT NULL,
        cause_document text NOT NULL,
        cause_authority_name text NOT NULL,
        cause_date date NOT NULL,
        reason text NOT NULL,
        legal_basis text NOT NULL,
        affected_licence text,
        department_code text NOT NULL,
        licences jsonb NOT NULL,
        notified_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 限制命中: every state of each hit
    "restriction_hit_states": f"""
        event_id text PRIMARY KEY,
        hit_id text NOT NULL,
        status text NOT NULL,
        uscc text NOT NULL,
        entity_name text NOT NULL,
        department_code text NOT NULL,
        department_name text NOT NULL,
        matter_type text NOT NULL,
        matter_reference text NOT NULL,
        matter_date date NOT NULL,
        measure_code text NOT NULL,
        measure_text text NOT NULL,
        listing_entry_ids text[] NOT NULL,
        raised_at timestamptz NOT NULL,
        feedback_due_at timestamptz,
        feedback_outcome text NOT NULL,
        feedback_reason text,
        fed_back_at timestamptz,
        feedback_id text,
        withdrawn_reason text,
        {LINEAGE}
    """,
    # 反馈, as received from the departments' inbound topics
    "restriction_feedback": f"""
        event_id text PRIMARY KEY,
        feedback_id text NOT NULL,
        department_code text NOT NULL,
        uscc text NOT NULL,
        hit_id text NOT NULL,
        outcome text NOT NULL,
        reason text,
        operator text,
        fed_back_at timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 逾期未反馈督办
    "punishment_alerts": f"""
        event_id text PRIMARY KEY,
        alert_id text NOT NULL,
        kind text NOT NULL,
        status text NOT NULL,
        hit_id text NOT NULL,
        uscc text NOT NULL,
        department_code text NOT NULL,
        recipients text[] NOT NULL,
        deadline timestamptz NOT NULL,
        raised_at timestamptz NOT NULL,
        message text NOT NULL,
        {LINEAGE}
    """,
    # 解除惩戒告知
    "lift_notices": f"""
        event_id text PRIMARY KEY,
        uscc text NOT NULL,
        entity_name text NOT NULL,
        entry_id text NOT NULL,
        list_type text NOT NULL,
        department_code text NOT NULL,
        measure_codes text[] NOT NULL,
        hit_ids text[] NOT NULL,
        ended_on date NOT NULL,
        end_reason text NOT NULL,
        notified_at timestamptz NOT NULL,
        {LINEAGE}
    """,
}

VIEWS = {
    # 惩戒告知 and 限制命中 as an auditor reads them
    "sanction_notices": """
        SELECT department_code, department_name, uscc, entity_name, list_name, entry_id,
               measure_code, measure_text, valid_from, valid_to, feedback_required,
               notified_at, event_id
          FROM sanction_notices
    """,
    "restriction_hits": """
        SELECT hit_id, department_code, department_name, uscc, entity_name, matter_type,
               matter_reference, matter_date, measure_code, measure_text, status,
               raised_at, feedback_due_at, feedback_outcome, fed_back_at, feedback_reason,
               feedback_due_at IS NOT NULL AND status = 'ACTIVE' AS feedback_expected,
               status = 'ACTIVE' AND feedback_due_at IS NOT NULL
               AND (fed_back_at > feedback_due_at
                    OR (fed_back_at IS NULL AND feedback_due_at < now())) AS feedback_overdue
          FROM restriction_hits
    """,
    # 反馈率: per department, of the hits that expect feedback
    "sanction_feedback_by_department": """
        SELECT department_code, department_name,
               count(*) AS hits_expecting_feedback,
               count(fed_back_at) AS fed_back,
               round(count(fed_back_at)::numeric / count(*), 4) AS feedback_rate,
               count(*) FILTER (WHERE feedback_overdue) AS overdue_feedback,
               count(*) FILTER (WHERE feedback_overdue AND fed_back_at IS NULL)
                 AS overdue_still_open
          FROM auditor.restriction_hits
         WHERE feedback_expected
         GROUP BY department_code, department_name
    """,
    "lift_notices": """
        SELECT department_code, uscc, entity_name, entry_id, list_type, ended_on,
               end_reason, measure_codes, hit_ids, notified_at, event_id
          FROM lift_notices
    """,
}

INDEXES = (
    "matter_events (uscc)",
    "sanction_notices (uscc)",
    "sanction_notices (department_code)",
    "licence_review_notices (uscc)",
    "restriction_hit_states (hit_id)",
    "restriction_feedback (hit_id)",
    "punishment_alerts (uscc)",
    "lift_notices (uscc)",
)

TIMELINE = """
    CREATE OR REPLACE VIEW auditor.entity_timeline AS
    {previous}
    UNION ALL
    SELECT uscc, notified_at, 'sanction_notice', measure_code, department_code,
           list_name || ' ' || measure_text, event_id, source_topic, source_partition,
           source_offset
      FROM sanction_notices
    UNION ALL
    SELECT uscc, raised_at, 'restriction_hit', status || ' ' || feedback_outcome,
           department_code, matter_type || ' ' || matter_reference || ' ' || measure_code,
           event_id, source_topic, source_partition, source_offset
      FROM restriction_hit_states
    UNION ALL
    SELECT uscc, received_at, 'feedback', outcome, department_code,
           hit_id || coalesce(' ' || reason, ''), event_id, source_topic, source_partition,
           source_offset
      FROM restriction_feedback
    UNION ALL
    SELECT uscc, notified_at, 'lift_notice', end_reason, department_code,
           list_type || ' ' || entry_id, event_id, source_topic, source_partition,
           source_offset
      FROM lift_notices
"""


def upgrade() -> None:
    for name, columns in TABLES.items():
        op.execute(f"CREATE TABLE {name} ({columns})")
    op.execute("CREATE TABLE restriction_hits (LIKE restriction_hit_states INCLUDING DEFAULTS)")
    op.execute("ALTER TABLE restriction_hits ADD PRIMARY KEY (hit_id)")
    op.execute("CREATE INDEX ON restriction_hits (department_code, raised_at)")
    op.execute("CREATE INDEX ON restriction_hits (uscc)")
    for index in INDEXES:
        op.execute(f"CREATE INDEX ON {index}")
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW auditor.{name} AS {query}")
    from importlib import import_module

    previous = import_module("connectors.sink.migrations.versions.0002_auditor_views")
    op.execute(TIMELINE.format(previous=previous.VIEWS["entity_timeline"]))
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA auditor TO {ROLE}")


def downgrade() -> None:
    from importlib import import_module

    previous = import_module("connectors.sink.migrations.versions.0002_auditor_views")
    op.execute("DROP VIEW auditor.entity_timeline")
    op.execute(f"CREATE VIEW auditor.entity_timeline AS {previous.VIEWS['entity_timeline']}")
    op.execute(f"GRANT SELECT ON auditor.entity_timeline TO {ROLE}")
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW auditor.{name}")
    op.execute("DROP TABLE restriction_hits")
    for name in reversed(TABLES):
        op.execute(f"DROP TABLE {name}")
