"""Auditor views in schema ``auditor`` and the read-only role ``xietong_auditor``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

The role may SELECT the views and nothing else: views read the tables with their
owner's rights, so the role needs no grant on any table. Roles belong to the whole
PostgreSQL cluster, so the role is made only where it is missing (a second credit
database, e.g. a backfill target, reuses it) and never dropped by a downgrade.
``connectors/sink/COOKBOOK.md`` shows the queries an auditor types.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROLE = "xietong_auditor"

VIEWS = {
    # 主体信用档案: one row per entity, its current status and a summary of its record
    "entity_profile": """
        SELECT e.uscc, e.name, e.entity_type, e.status, e.legal_representative,
               e.registered_capital, e.established_on, e.address, e.division_code,
               e.industry_code, e.registering_authority_name, e.last_event_kind,
               e.last_event_date,
               (SELECT count(*) FROM registrations r WHERE r.uscc = e.uscc) AS registrations,
               (SELECT count(DISTINCT l.licence_number) FROM licences l
                 WHERE l.uscc = e.uscc) AS licences,
               (SELECT count(*) FROM (SELECT DISTINCT ON (l.licence_number) l.status
                                        FROM licences l WHERE l.uscc = e.uscc
                                       ORDER BY l.licence_number, l.event_time DESC) v
                 WHERE v.status = 'VALID') AS valid_licences,
               (SELECT count(*) FROM penalties p WHERE p.uscc = e.uscc) AS penalties,
               (SELECT coalesce(sum(p.fine_amount), 0) FROM penalties p
                 WHERE p.uscc = e.uscc) AS fines_wan_yuan,
               (SELECT array_agg(DISTINCT le.list_type) FROM (
                    SELECT DISTINCT ON (entry_id) list_type, action FROM list_entries
                     WHERE uscc = e.uscc ORDER BY entry_id, event_time DESC) le
                 WHERE le.action = 'LISTED') AS current_lists,
               (SELECT count(*) FROM dual_notice_pushes d WHERE d.uscc = e.uscc) AS pushes,
               (SELECT count(*) FROM dual_notice_pushes d
                 WHERE d.uscc = e.uscc AND d.state IN ('PUSHED', 'OVERDUE')) AS unclaimed_pushes
          FROM entities e
    """,
    # 主体信用记录: everything recorded about an entity, one row per fact, in time order
    "entity_timeline": """
        SELECT uscc, event_time AS at, 'registration' AS kind, event_kind AS what,
               registering_authority_name AS department, name || ' ' || status AS detail,
               event_id, source_topic, source_partition, source_offset
          FROM registrations
        UNION ALL
        SELECT uscc, event_time, 'licence', status, authority_name,
               licence_number || ' ' || content, event_id, source_topic, source_partition,
               source_offset
          FROM licences
        UNION ALL
        SELECT uscc, event_time, 'penalty', array_to_string(categories, ','), authority_name,
               decision_number || ' ' || violation_type
               || coalesce(' 罚款' || fine_amount::text || '万元', ''),
               event_id, source_topic, source_partition, source_offset
          FROM penalties
        UNION ALL
        SELECT uscc, event_time, 'list_entry', action || ' ' || list_type,
               listing_authority_name, document_number || ' ' || reason, event_id,
               source_topic, source_partition, source_offset
          FROM list_entries
        UNION ALL
        SELECT uscc, state_changed_at, 'dual_notice_push', state, department_name,
               item_name || ' (' || push_id || ' v' || version || ')', event_id,
               source_topic, source_partition, source_offset
          FROM dual_notice_push_states
        UNION ALL
        SELECT uscc, raised_at, 'dual_notice_alert', kind, department_code, message,
               event_id, source_topic, source_partition, source_offset
          FROM dual_notice_alerts
        UNION ALL
        SELECT uscc, notified_at, 'closure_notice', closure, department_code,
               entity_name, event_id, source_topic, source_partition, source_offset
          FROM dual_notice_closure_notices
        UNION ALL
        SELECT uscc, delivered_at, 'delivery', record_type, department_code,
               coalesce(subject_id, record_event_id), event_id, source_topic,
               source_partition, source_offset
          FROM deliveries
    """,
    # 双告知推送: each push as it stands, with what an auditor measures
    "dual_notice_pushes": """
        SELECT push_id, department_code, department_name, uscc, entity_name, item_code,
               item_name, routing, state, pushed_at, claim_deadline, claimed_at,
               claimed_at - pushed_at AS time_to_claim,
               (claimed_at IS NULL AND claim_deadline < now()
                 AND state IN ('PUSHED', 'OVERDUE'))
               OR claimed_at > claim_deadline
               OR escalated_at IS NOT NULL AS overdue,
               escalated_at, return_reason, reason_text, fulfilled_by_licence,
               state_changed_at, version
          FROM dual_notice_pushes
    """,
    # 双告知推送历史: every state each push went through
    "dual_notice_push_history": """
        SELECT push_id, version, state, department_code, uscc, item_code, changed_by,
               state_changed_at, return_reason, reason_text, event_id, source_topic,
               source_partition, source_offset
          FROM dual_notice_push_states
    """,
    # 认领率: per department and month of pushing
    "dual_notice_claims_monthly": """
        SELECT department_code, department_name,
               date_trunc('month', pushed_at)::date AS month,
               count(*) AS pushes,
               count(claimed_at) AS claimed,
               round(count(claimed_at)::numeric / count(*), 4) AS claim_rate,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_claim) AS median_time_to_claim,
               count(*) FILTER (WHERE overdue) AS overdue
          FROM auditor.dual_notice_pushes
         GROUP BY department_code, department_name, date_trunc('month', pushed_at)
    """,
    # 推送给部门的每一条: every delivery to a department, with its timestamps
    "deliveries": """
        SELECT department_code, delivered_at, record_type, uscc, subject_id,
               record_event_id, record_time, delivered_at - record_time AS delivery_delay,
               event_id, source_topic, source_partition, source_offset
          FROM deliveries
    """,
    # 防篡改日志: the log itself (xietong audit verify checks it)
    "audit_log": """
        SELECT chain, position, kind, occurred_at, uscc, department_code, entry_id,
               event_id, details, prev_hash, hash, signature
          FROM audit_log
    """,
}


def upgrade() -> None:
    op.execute("CREATE SCHEMA auditor")
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW auditor.{name} AS {query}")
    op.execute(
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} NOLOGIN;
              END IF;
            END $$"""
    )
    op.execute(f"GRANT USAGE ON SCHEMA auditor TO {ROLE}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA auditor TO {ROLE}")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA auditor FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA auditor FROM {ROLE}")
    op.execute("DROP SCHEMA auditor CASCADE")
