"""行政协助 in the credit database: the requests, the actions as received and refused, the
督查 and the 互评, and the views the 编办 publishes from (issue 15 §1).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

``assistance_request_states`` holds every state a request was published in,
``assistance_requests`` its latest (by version). The auditor views answer the 编办:

* ``auditor.assistance_requests`` — each request as it stands;
* ``auditor.assistance_by_department`` — per assisting department: received, completed,
  completed in time and late, refused, still open and overdue, its ratings;
* ``auditor.assistance_refusals`` — each refusal with its reason, basis, filer and the
  leader who approved it;
* ``auditor.assistance_scores`` — the 互评 per rated department and period (half-year,
  year, in the province's time zone): ratings, the mean 配合程度 and 协助成效.
"""

from __future__ import annotations

from alembic import op

from xietong.clock import business_clock

revision = "0013"
down_revision = "0012"
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
    # 行政协助请求, every state
    "assistance_request_states": f"""
        event_id text PRIMARY KEY,
        request_id text NOT NULL,
        version integer NOT NULL,
        state text NOT NULL,
        request_reference text NOT NULL,
        listed boolean NOT NULL,
        item_code text,
        item_name text,
        item_version integer,
        subject text NOT NULL,
        party_uscc text,
        requesting_department_code text NOT NULL,
        requesting_department_name text NOT NULL,
        assisting_department_code text NOT NULL,
        assisting_department_name text NOT NULL,
        supervising_department_code text,
        time_limit_days integer NOT NULL,
        working_days boolean NOT NULL,
        requested_at timestamptz NOT NULL,
        deadline timestamptz NOT NULL,
        accepted_at timestamptz,
        completed_at timestamptz,
        result_text text,
        attachments jsonb NOT NULL,
        refusal_reason text,
        refusal_reason_text text,
        refusal_legal_basis text,
        refusal_filed_by text,
        refusal_approved_by text,
        refusal_approved_at timestamptz,
        refusals_overruled integer NOT NULL,
        in_time boolean,
        escalated_at timestamptz,
        state_changed_at timestamptz NOT NULL,
        state_recorded_at timestamptz NOT NULL,
        changed_by text NOT NULL,
        {LINEAGE}
    """,
    # 行政协助操作（已接收）
    "assistance_actions": f"""
        event_id text PRIMARY KEY,
        action_id text NOT NULL,
        request_id text NOT NULL,
        department_code text NOT NULL,
        action text NOT NULL,
        item_code text,
        refusal_reason text,
        operator text,
        operator_role text,
        acted_at timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 未执行的行政协助操作
    "assistance_rejected_actions": f"""
        event_id text PRIMARY KEY,
        department_code text NOT NULL,
        request_id text,
        action text,
        request_state text,
        reason text NOT NULL,
        inbound_topic text NOT NULL,
        inbound_partition integer NOT NULL,
        inbound_offset bigint NOT NULL,
        rejected_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 督查
    "assistance_escalations": f"""
        event_id text PRIMARY KEY,
        request_id text NOT NULL,
        item_code text,
        subject text NOT NULL,
        requesting_department_code text NOT NULL,
        assisting_department_code text NOT NULL,
        supervising_department_code text,
        state text NOT NULL,
        deadline timestamptz NOT NULL,
        recipients text[] NOT NULL,
        raised_at timestamptz NOT NULL,
        message text NOT NULL,
        {LINEAGE}
    """,
    # 互评
    "assistance_ratings": f"""
        event_id text PRIMARY KEY,
        request_id text NOT NULL,
        item_code text,
        rating_department_code text NOT NULL,
        rated_department_code text NOT NULL,
        rated_department_name text NOT NULL,
        cooperation integer NOT NULL,
        effect integer NOT NULL,
        comment text,
        completed_in_time boolean,
        rated_at timestamptz NOT NULL,
        {LINEAGE}
    """,
}

INDEXES = (
    "assistance_request_states (request_id)",
    "assistance_requests (assisting_department_code)",
    "assistance_requests (requesting_department_code)",
    "assistance_actions (request_id)",
    "assistance_rejected_actions (request_id)",
    "assistance_escalations (request_id)",
    "assistance_ratings (rated_department_code)",
)


def views(zone: str) -> dict[str, str]:
    """The 编办's views; ``zone`` is the province's, where a half-year begins."""
    half_year = (
        f"to_char(rated_at AT TIME ZONE '{zone}', 'YYYY')"
        f" || CASE WHEN extract(month FROM rated_at AT TIME ZONE '{zone}') <= 6"
        " THEN '-H1' ELSE '-H2' END"
    )
    year = f"to_char(rated_at AT TIME ZONE '{zone}', 'YYYY')"
    return {
        "assistance_requests": """
            SELECT request_id, state, listed, item_code, item_name, subject, party_uscc,
                   requesting_department_code, requesting_department_name,
                   assisting_department_code, assisting_department_name,
                   supervising_department_code, time_limit_days, working_days,
                   requested_at, deadline, accepted_at, completed_at, result_text,
                   attachments, refusal_reason, refusal_reason_text, refusal_legal_basis,
                   refusal_filed_by, refusal_approved_by, refusals_overruled, in_time,
                   escalated_at, state_changed_at, version
              FROM assistance_requests
        """,
        "assistance_by_department": """
            WITH requests AS (
                SELECT assisting_department_code AS department_code,
                       max(assisting_department_name) AS department_name,
                       count(*) AS received,
                       count(*) FILTER (WHERE state = 'COMPLETED') AS completed,
                       count(*) FILTER (WHERE state = 'COMPLETED' AND in_time) AS completed_in_time,
                       count(*) FILTER (WHERE state = 'COMPLETED' AND NOT in_time)
                           AS completed_late,
                       count(*) FILTER (WHERE state = 'REFUSED') AS refused,
                       count(*) FILTER (WHERE state NOT IN ('COMPLETED', 'REFUSED')) AS open,
                       count(*) FILTER (
                           WHERE state NOT IN ('COMPLETED', 'REFUSED') AND escalated_at IS NOT NULL
                       ) AS open_overdue,
                       count(*) FILTER (WHERE escalated_at IS NOT NULL) AS escalated,
                       sum(refusals_overruled) AS refusals_overruled
                  FROM assistance_requests
                 GROUP BY assisting_department_code
            ), ratings AS (
                SELECT rated_department_code AS department_code, count(*) AS ratings,
                       round(avg(cooperation), 2) AS mean_cooperation,
                       round(avg(effect), 2) AS mean_effect
                  FROM assistance_ratings
                 GROUP BY rated_department_code
            )
            SELECT r.department_code, r.department_name, r.received, r.completed,
                   r.completed_in_time, r.completed_late, r.refused, r.open, r.open_overdue,
                   r.escalated, r.refusals_overruled,
                   coalesce(g.ratings, 0) AS ratings, g.mean_cooperation, g.mean_effect
              FROM requests r LEFT JOIN ratings g USING (department_code)
        """,
        "assistance_refusals": """
            SELECT request_id, assisting_department_code, assisting_department_name,
                   requesting_department_code, item_code, subject, refusal_reason,
                   refusal_reason_text, refusal_legal_basis, refusal_filed_by,
                   refusal_approved_by, refusal_approved_at, in_time
              FROM assistance_requests
             WHERE state = 'REFUSED'
        """,
        "assistance_scores": f"""
            SELECT 'half-year' AS period_kind, {half_year} AS period,
                   rated_department_code AS department_code,
                   max(rated_department_name) AS department_name, count(*) AS ratings,
                   round(avg(cooperation), 2) AS mean_cooperation,
                   round(avg(effect), 2) AS mean_effect,
                   round(avg((cooperation + effect) / 2.0), 2) AS score
              FROM assistance_ratings
             GROUP BY 2, 3
            UNION ALL
            SELECT 'year', {year}, rated_department_code, max(rated_department_name),
                   count(*), round(avg(cooperation), 2), round(avg(effect), 2),
                   round(avg((cooperation + effect) / 2.0), 2)
              FROM assistance_ratings
             GROUP BY 2, 3
        """,
    }


def upgrade() -> None:
    for name, columns in TABLES.items():
        op.execute(f"CREATE TABLE {name} ({columns})")
    op.execute(
        "CREATE TABLE assistance_requests (LIKE assistance_request_states INCLUDING DEFAULTS)"
    )
    op.execute("ALTER TABLE assistance_requests ADD PRIMARY KEY (request_id)")
    for index in INDEXES:
        op.execute(f"CREATE INDEX ON {index}")
    for name, query in views(business_clock().zone.key).items():
        op.execute(f"CREATE VIEW auditor.{name} AS {query}")
        op.execute(f"GRANT SELECT ON auditor.{name} TO {ROLE}")


def downgrade() -> None:
    for name in views(business_clock().zone.key):
        op.execute(f"DROP VIEW auditor.{name}")
    op.execute("DROP TABLE assistance_requests")
    for name in TABLES:
        op.execute(f"DROP TABLE {name}")
