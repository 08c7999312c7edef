"""Dead letters (死信) in the credit database: what the platform refused, for auditors.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

The sink reads ``platform.dead-letter`` like any other topic: ``dead_letters`` holds one
row per dead letter written (a record refused again after a replay, with that day's
reasons, is a row of its own under the same ``dead_letter_id``), with where the
department's record was (``record_partition``, ``record_offset``, ``position``) and its
reasons as a JSON array; a replay that got the record accepted writes a settling record
(no reasons, ``replayed_event_id``), a row too. ``auditor.dead_letters`` shows each
refused record as it stands (its latest row), one row per reason: department,
connector, record type, the record's id in the department's system
(``source_record_id``), ``state`` REFUSED (or REPLAYED: one row, with the event's id and
no reason, ``failed_at`` being when it was replayed), the field and the reason, where it
was, and where its dead letter is on the topic. ``auditor.dead_letter_counts`` counts the
records still refused per department, connector, record type and reason.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ROLE = "xietong_auditor"

TABLE = """
    event_id text PRIMARY KEY,
    dead_letter_id text NOT NULL,
    connector text NOT NULL,
    record_type text NOT NULL,
    department_uscc text NOT NULL,
    source_system text NOT NULL,
    source_record_id text,
    record_partition text NOT NULL,
    record_offset text NOT NULL,
    position text NOT NULL,
    reasons jsonb NOT NULL,
    failed_at timestamptz NOT NULL,
    payload_json text,
    payload_length bigint,
    payload_sha256 text,
    replayed_event_id text,
    source_topic text NOT NULL,
    source_partition integer NOT NULL,
    source_offset bigint NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
"""

LATEST = """
    SELECT DISTINCT ON (dead_letter_id) *
      FROM dead_letters
     ORDER BY dead_letter_id, failed_at DESC, source_offset DESC
"""

VIEWS = {
    "dead_letters": f"""
        SELECT d.department_uscc, d.connector, d.record_type, d.source_record_id,
               CASE WHEN d.replayed_event_id IS NULL THEN 'REFUSED' ELSE 'REPLAYED' END
                   AS state,
               d.replayed_event_id,
               reason.value ->> 'field' AS field,
               reason.value ->> 'code' AS reason_code,
               reason.value ->> 'message' AS reason,
               d.record_partition AS source_partition,
               d.record_offset AS source_offset,
               d.position, d.failed_at, d.source_system, d.dead_letter_id,
               d.source_partition AS dead_letter_partition,
               d.source_offset AS dead_letter_offset,
               d.payload_json
          FROM ({LATEST}) AS d
          LEFT JOIN LATERAL jsonb_array_elements(d.reasons) WITH ORDINALITY AS reason ON true
         ORDER BY d.department_uscc, d.connector, d.failed_at, d.dead_letter_id,
                  reason.ordinality
    """,
    "dead_letter_counts": f"""
        SELECT d.department_uscc, d.connector, d.record_type,
               reason.value ->> 'code' AS reason_code,
               count(DISTINCT d.dead_letter_id) AS records,
               min(d.failed_at) AS first_failed_at,
               max(d.failed_at) AS last_failed_at
          FROM ({LATEST}) AS d
          CROSS JOIN LATERAL jsonb_array_elements(d.reasons) AS reason
         WHERE d.replayed_event_id IS NULL
         GROUP BY 1, 2, 3, 4
    """,
}


def upgrade() -> None:
    op.execute(f"CREATE TABLE dead_letters ({TABLE})")
    op.execute("CREATE INDEX ON dead_letters (dead_letter_id, failed_at)")
    op.execute("CREATE INDEX ON dead_letters (department_uscc, connector)")
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW auditor.{name} AS {query}")
        op.execute(f"GRANT SELECT ON auditor.{name} TO {ROLE}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW auditor.{name}")
    op.execute("DROP TABLE dead_letters")
