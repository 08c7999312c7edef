"""The credit database: one table per kind of record the sink reads, with its lineage;
the sink's own offsets; the tamper-evident audit log.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Every record table has the same lineage columns: ``event_id`` (the primary key; every
write is idempotent by it), ``source_topic``, ``source_partition``, ``source_offset``
(where the row was read: the first occurrence of its event id) and ``ingested_at``.
Two tables hold the *current* state besides the history: ``entities`` (the latest
registration of each USCC) and ``dual_notice_pushes`` (the latest version of each push).
``sink_offsets`` holds the next offset to read of every partition, written in the
same transaction as the rows, so a crash neither loses nor repeats a row.
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LINEAGE = """
    source_topic text NOT NULL,
    source_partition integer NOT NULL,
    source_offset bigint NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
"""

TABLES = {
    "sink_offsets": """
        topic text NOT NULL,
        partition integer NOT NULL,
        next_offset bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (topic, partition)
    """,
    # 市场主体登记: every registration event (设立/变更/注销)
    "registrations": f"""
        event_id text PRIMARY KEY,
        uscc text NOT NULL,
        event_kind text NOT NULL,
        event_date date NOT NULL,
        event_time timestamptz NOT NULL,
        name text NOT NULL,
        entity_type text NOT NULL,
        legal_representative text NOT NULL,
        registered_capital numeric(24, 6),
        established_on date NOT NULL,
        operating_term_end date,
        address text NOT NULL,
        division_code text NOT NULL,
        business_scope text NOT NULL,
        permit_scope_items text[] NOT NULL,
        industry_code text NOT NULL,
        registering_authority_name text NOT NULL,
        registering_authority_uscc text NOT NULL,
        status text NOT NULL,
        source_department_uscc text NOT NULL,
        source_system text NOT NULL,
        source_record_id text NOT NULL,
        record_version text NOT NULL,
        {LINEAGE}
    """,
    # 市场主体: each entity as its latest registration event says
    "entities": f"""
        uscc text PRIMARY KEY,
        name text NOT NULL,
        entity_type text NOT NULL,
        status text NOT NULL,
        legal_representative text NOT NULL,
        registered_capital numeric(24, 6),
        established_on date NOT NULL,
        address text NOT NULL,
        division_code text NOT NULL,
        industry_code text NOT NULL,
        registering_authority_name text NOT NULL,
        registering_authority_uscc text NOT NULL,
        last_event_kind text NOT NULL,
        last_event_date date NOT NULL,
        event_id text NOT NULL,
        {LINEAGE}
    """,
    # 行政许可 (双公示)
    "licences": f"""
        event_id text PRIMARY KEY,
        uscc text NOT NULL,
        holder_name text NOT NULL,
        licence_number text NOT NULL,
        approval_item_code text,
        category text NOT NULL,
        certificate_name text,
        content text NOT NULL,
        decision_document_number text NOT NULL,
        decided_on date NOT NULL,
        valid_from date NOT NULL,
        valid_to date,
        authority_name text NOT NULL,
        authority_uscc text NOT NULL,
        status text NOT NULL,
        event_time timestamptz NOT NULL,
        source_record_id text NOT NULL,
        record_version text NOT NULL,
        {LINEAGE}
    """,
    # 行政处罚 (双公示)
    "penalties": f"""
        event_id text PRIMARY KEY,
        uscc text NOT NULL,
        party_name text NOT NULL,
        decision_number text NOT NULL,
        violation_type text NOT NULL,
        violation_facts text NOT NULL,
        legal_basis text NOT NULL,
        categories text[] NOT NULL,
        content text NOT NULL,
        fine_amount numeric(24, 6),
        confiscated_amount numeric(24, 6),
        affected_licence text,
        decided_on date NOT NULL,
        publicity_until date,
        authority_name text NOT NULL,
        authority_uscc text NOT NULL,
        event_time timestamptz NOT NULL,
        source_record_id text NOT NULL,
        record_version text NOT NULL,
        {LINEAGE}
    """,
    # 名单: 列入 and 移出
    "list_entries": f"""
        event_id text PRIMARY KEY,
        entry_id text NOT NULL,
        uscc text NOT NULL,
        action text NOT NULL,
        list_type text NOT NULL,
        entity_name text NOT NULL,
        listing_authority_name text NOT NULL,
        listing_authority_uscc text NOT NULL,
        reason text NOT NULL,
        legal_basis text NOT NULL,
        document_number text NOT NULL,
        listed_on date NOT NULL,
        planned_removal_on date,
        removed_on date,
        removal_reason text,
        event_time timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 双告知推送: every state a push went through (dualnotice.pushes)
    "dual_notice_push_states": f"""
        event_id text PRIMARY KEY,
        push_id text NOT NULL,
        version integer NOT NULL,
        state text NOT NULL,
        routing text NOT NULL,
        uscc text NOT NULL,
        entity_name text NOT NULL,
        registration_event_id text NOT NULL,
        registration_kind text NOT NULL,
        division_code text NOT NULL,
        item_code text NOT NULL,
        item_name text NOT NULL,
        department_code text NOT NULL,
        department_name text NOT NULL,
        pushed_at timestamptz NOT NULL,
        claim_deadline timestamptz NOT NULL,
        claimed_at timestamptz,
        licence_deadline timestamptz,
        escalated_at timestamptz,
        unlicensed_alert_at timestamptz,
        return_reason text,
        reason_text text,
        fulfilled_by_licence text,
        reassigned_to_push_id text,
        reassigned_from_push_id text,
        state_changed_at timestamptz NOT NULL,
        changed_by text NOT NULL,
        {LINEAGE},
        UNIQUE (push_id, version)
    """,
    # 告知书
    "dual_notice_applicant_notices": f"""
        event_id text PRIMARY KEY,
        uscc text NOT NULL,
        entity_name text NOT NULL,
        registration_event_id text NOT NULL,
        items jsonb NOT NULL,
        issued_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 分流失败: every state of a routing failure (OPEN → ROUTED | CLOSED)
    "dual_notice_routing_failures": f"""
        event_id text PRIMARY KEY,
        routing_id text NOT NULL,
        state text NOT NULL,
        uscc text NOT NULL,
        entity_name text NOT NULL,
        item_code text NOT NULL,
        item_name text NOT NULL,
        reason text NOT NULL,
        failed_at timestamptz NOT NULL,
        routed_to_department_code text,
        routed_push_id text,
        state_changed_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 督办: 逾期未认领 and 疑似无证经营 alerts
    "dual_notice_alerts": f"""
        event_id text PRIMARY KEY,
        kind text NOT NULL,
        push_id text NOT NULL,
        uscc text NOT NULL,
        item_code text NOT NULL,
        department_code text NOT NULL,
        recipients text[] NOT NULL,
        deadline timestamptz NOT NULL,
        raised_at timestamptz NOT NULL,
        message text NOT NULL,
        {LINEAGE}
    """,
    # 注销/吊销告知
    "dual_notice_closure_notices": f"""
        event_id text PRIMARY KEY,
        registration_event_id text NOT NULL,
        uscc text NOT NULL,
        entity_name text NOT NULL,
        closure text NOT NULL,
        closed_on date NOT NULL,
        department_code text NOT NULL,
        licences jsonb NOT NULL,
        notified_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 部门操作: as received from the departments' inbound topics (dualnotice.actions)
    "dual_notice_actions": f"""
        event_id text PRIMARY KEY,
        action_id text NOT NULL,
        department_code text NOT NULL,
        action text NOT NULL,
        push_id text NOT NULL,
        uscc text NOT NULL,
        return_reason text,
        reason_text text,
        target_department_code text,
        operator text,
        acted_at timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # 未执行的部门操作
    "dual_notice_rejected_actions": f"""
        event_id text PRIMARY KEY,
        department_code text NOT NULL,
        action text,
        push_id text,
        uscc text,
        push_state text,
        reason text NOT NULL,
        inbound_topic text NOT NULL,
        inbound_partition integer NOT NULL,
        inbound_offset bigint NOT NULL,
        rejected_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # Every record delivered to a department's inbox (dept.<code>.inbox), once per record
    "deliveries": f"""
        event_id text PRIMARY KEY,
        department_code text NOT NULL,
        record_type text NOT NULL,
        record_event_id text NOT NULL,
        uscc text NOT NULL,
        subject_id text,
        record_time timestamptz,
        delivered_at timestamptz NOT NULL,
        {LINEAGE}
    """,
    # The tamper-evident log: one hash chain per source partition (see connectors/sink/chain.py)
    "audit_log": """
        chain text NOT NULL,
        position bigint NOT NULL,
        entry_id text NOT NULL UNIQUE,
        kind text NOT NULL,
        event_id text NOT NULL,
        uscc text NOT NULL,
        department_code text,
        occurred_at timestamptz NOT NULL,
        source_topic text NOT NULL,
        source_partition integer NOT NULL,
        source_offset bigint NOT NULL,
        details jsonb NOT NULL,
        prev_hash text NOT NULL,
        hash text NOT NULL,
        signature text NOT NULL,
        ingested_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (chain, position)
    """,
    "audit_chain_heads": """
        chain text PRIMARY KEY,
        position bigint NOT NULL,
        hash text NOT NULL,
        signature text NOT NULL
    """,
}

INDEXES = (
    "registrations (uscc)",
    "licences (uscc)",
    "penalties (uscc)",
    "list_entries (uscc)",
    "list_entries (entry_id)",
    "dual_notice_push_states (uscc)",
    "dual_notice_push_states (department_code, pushed_at)",
    "dual_notice_applicant_notices (uscc)",
    "dual_notice_routing_failures (uscc)",
    "dual_notice_alerts (uscc)",
    "dual_notice_alerts (department_code)",
    "dual_notice_closure_notices (uscc)",
    "dual_notice_actions (push_id)",
    "dual_notice_rejected_actions (department_code)",
    "deliveries (department_code, delivered_at)",
    "deliveries (uscc)",
    "audit_log (uscc)",
)


def upgrade() -> None:
    for name, columns in TABLES.items():
        op.execute(f"CREATE TABLE {name} ({columns})")
    # dual_notice_pushes: the latest state of each push, the same columns as its history
    op.execute("CREATE TABLE dual_notice_pushes (LIKE dual_notice_push_states INCLUDING DEFAULTS)")
    op.execute("ALTER TABLE dual_notice_pushes ADD PRIMARY KEY (push_id)")
    op.execute("CREATE INDEX ON dual_notice_pushes (department_code, pushed_at)")
    op.execute("CREATE INDEX ON dual_notice_pushes (uscc)")
    for index in INDEXES:
        op.execute(f"CREATE INDEX ON {index}")


def downgrade() -> None:
    op.execute("DROP TABLE dual_notice_pushes")
    for name in reversed(TABLES):
        op.execute(f"DROP TABLE {name}")
