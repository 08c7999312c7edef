"""The reports of ``xietong audit entity|department``: the auditor views, queried and
printed as rich tables, JSON or CSV.

A :class:`Report` is a title and named sections, each a list of rows; every query here
reads the ``auditor`` views, the same ones the ``xietong_auditor`` role may read, so a
report shows nothing an auditor could not query (``COOKBOOK.md``), over a read-only
connection.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg2.extras import RealDictCursor
from rich.console import Console
from rich.table import Table

from connectors.sink import db
from xietong.clock import business_clock

Row = dict[str, Any]


@dataclass
class Section:
    title: str
    rows: list[Row]
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns and self.rows:
            self.columns = list(self.rows[0])


@dataclass
class Report:
    title: str
    sections: dict[str, Section]


def _query(cursor: Any, sql: str, params: dict[str, Any]) -> list[Row]:
    cursor.execute(sql, params)
    return [dict(row) for row in cursor.fetchall()]


# -- an entity ------------------------------------------------------------------------------


def entity_report(url: str, uscc: str) -> Report | None:
    """Everything the credit database holds about one entity; None if it holds nothing."""
    conn = db.connect(url, read_only=True)
    try:
        with conn.cursor(cursor_factory=RealDictCursor) as cursor:
            p = {"uscc": uscc}
            profile = _query(
                cursor, "SELECT * FROM auditor.entity_profile WHERE uscc = %(uscc)s", p
            )
            timeline = _query(
                cursor,
                "SELECT at, kind, what, department, detail, event_id"
                " FROM auditor.entity_timeline WHERE uscc = %(uscc)s"
                " ORDER BY at, kind, event_id",
                p,
            )
            if not profile and not timeline:
                return None
            pushes = _query(
                cursor,
                "SELECT push_id, department_code, item_name, state, pushed_at, claim_deadline,"
                " claimed_at, overdue FROM auditor.dual_notice_pushes WHERE uscc = %(uscc)s"
                " ORDER BY pushed_at, push_id",
                p,
            )
            deliveries = _query(
                cursor,
                "SELECT department_code, delivered_at, record_type, subject_id, record_time"
                " FROM auditor.deliveries WHERE uscc = %(uscc)s ORDER BY delivered_at, event_id",
                p,
            )
            sanctions = _query(
                cursor,
                "SELECT department_code, list_name, measure_text, valid_from, valid_to,"
                " notified_at FROM auditor.sanction_notices WHERE uscc = %(uscc)s"
                " ORDER BY notified_at, event_id",
                p,
            )
            hits = _query(
                cursor,
                "SELECT hit_id, department_code, matter_type, matter_reference, measure_code,"
                " status, raised_at, feedback_outcome, fed_back_at, feedback_overdue"
                " FROM auditor.restriction_hits WHERE uscc = %(uscc)s ORDER BY raised_at, hit_id",
                p,
            )
    finally:
        conn.close()
    name = profile[0]["name"] if profile else uscc
    facts = [{"field": k, "value": v} for k, v in profile[0].items()] if profile else []
    return Report(
        f"{name} ({uscc})",
        {
            "profile": Section("信用档案 profile", facts, ["field", "value"]),
            "pushes": Section("双告知推送 pushes", pushes),
            "sanctions": Section("惩戒告知 sanction notices", sanctions),
            "restriction_hits": Section("限制命中 restriction hits", hits),
            "deliveries": Section("推送记录 deliveries", deliveries),
            "timeline": Section("信用记录 timeline", timeline),
        },
    )


# -- a department ---------------------------------------------------------------------------


_PUSHED_IN = (
    "department_code = %(code)s"
    " AND (%(from)s::timestamptz IS NULL OR pushed_at >= %(from)s)"
    " AND (%(to)s::timestamptz IS NULL OR pushed_at < %(to)s)"
)


_RAISED_IN = (
    "department_code = %(code)s AND feedback_expected"
    " AND (%(from)s::timestamptz IS NULL OR raised_at >= %(from)s)"
    " AND (%(to)s::timestamptz IS NULL OR raised_at < %(to)s)"
)


def _department_summary(cursor: Any, p: dict[str, Any]) -> tuple[list[Row], list[Row]]:
    claims = _query(
        cursor,
        "SELECT count(*) AS pushes, count(claimed_at) AS claimed,"
        " round(count(claimed_at)::numeric / nullif(count(*), 0), 4) AS claim_rate,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_claim)"
        " AS median_time_to_claim,"
        " count(*) FILTER (WHERE overdue) AS overdue,"
        " count(*) FILTER (WHERE state = 'RETURNED') AS returned"
        f" FROM auditor.dual_notice_pushes WHERE {_PUSHED_IN}",
        p,
    )
    feedback = _query(
        cursor,
        "SELECT count(*) AS hits_expecting_feedback, count(fed_back_at) AS fed_back,"
        " round(count(fed_back_at)::numeric / nullif(count(*), 0), 4) AS feedback_rate,"
        " count(*) FILTER (WHERE feedback_overdue) AS overdue_feedback"
        f" FROM auditor.restriction_hits WHERE {_RAISED_IN}",
        p,
    )
    return claims, feedback


def department_figures(url: str, code: str) -> tuple[Row, Row]:
    """A department's figures over all time, as its report's first sections count them:
    pushes, claimed, claim rate, median time to claim, overdue, returned; and hits
    expecting feedback, fed back, feedback rate, overdue feedback (the clerk's workbench
    shows them)."""
    p = {"code": code, "from": None, "to": None}
    conn = db.connect(url, read_only=True)
    try:
        with conn.cursor(cursor_factory=RealDictCursor) as cursor:
            [claims], [feedback] = _department_summary(cursor, p)
    finally:
        conn.close()
    return claims, feedback


def department_report(
    url: str, code: str, date_from: dt.datetime | None, date_to: dt.datetime | None
) -> Report:
    """One department over ``[date_from, date_to)``: claims, overdue pushes, sanction
    feedback, deliveries."""
    # Months are the province's, whatever the database server's time zone.
    p = {"code": code, "from": date_from, "to": date_to, "zone": business_clock().zone.key}
    conn = db.connect(url, read_only=True)
    try:
        with conn.cursor(cursor_factory=RealDictCursor) as cursor:
            summary, feedback = _department_summary(cursor, p)
            monthly = _query(
                cursor,
                "SELECT date_trunc('month', pushed_at AT TIME ZONE %(zone)s)::date AS month,"
                " count(*) AS pushes,"
                " count(claimed_at) AS claimed,"
                " round(count(claimed_at)::numeric / count(*), 4) AS claim_rate,"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_claim)"
                " AS median_time_to_claim, count(*) FILTER (WHERE overdue) AS overdue"
                f" FROM auditor.dual_notice_pushes WHERE {_PUSHED_IN}"
                " GROUP BY 1 ORDER BY 1",
                p,
            )
            overdue = _query(
                cursor,
                "SELECT push_id, uscc, entity_name, item_name, state, pushed_at,"
                " claim_deadline, claimed_at, escalated_at"
                f" FROM auditor.dual_notice_pushes WHERE {_PUSHED_IN} AND overdue"
                " ORDER BY claim_deadline, push_id",
                p,
            )
            overdue_feedback = _query(
                cursor,
                "SELECT hit_id, uscc, entity_name, matter_type, matter_reference, measure_code,"
                " raised_at, feedback_due_at, fed_back_at"
                f" FROM auditor.restriction_hits WHERE {_RAISED_IN} AND feedback_overdue"
                " ORDER BY feedback_due_at, hit_id",
                p,
            )
            deliveries = _query(
                cursor,
                "SELECT delivered_at, record_type, uscc, subject_id, record_time,"
                " delivery_delay FROM auditor.deliveries WHERE department_code = %(code)s"
                " AND (%(from)s::timestamptz IS NULL OR delivered_at >= %(from)s)"
                " AND (%(to)s::timestamptz IS NULL OR delivered_at < %(to)s)"
                " ORDER BY delivered_at, event_id",
                p,
            )
    finally:
        conn.close()
    period = (
        f"{date_from.isoformat() if date_from else '…'} – {date_to.isoformat() if date_to else '…'}"
    )
    return Report(
        f"{code}, {period}",
        {
            "claims": Section("双告知认领 claims", summary),
            "monthly": Section("按月 by month", monthly),
            "overdue": Section("逾期推送 overdue pushes", overdue),
            "feedback": Section("惩戒反馈 sanction feedback", feedback),
            "overdue_feedback": Section("逾期未反馈 overdue feedback", overdue_feedback),
            "deliveries": Section("推送记录 deliveries", deliveries),
        },
    )


# -- printing -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def as_json(report: Report) -> str:
    return json.dumps(
        {
            "title": report.title,
            **{
                name: [{k: _plain(v) for k, v in row.items()} for row in section.rows]
                for name, section in report.sections.items()
            },
        },
        ensure_ascii=False,
        indent=2,
    )


def as_csv(report: Report) -> str:
    """Each section as a CSV block (first column ``section``), blocks separated by a blank line."""
    out = io.StringIO()
    for name, section in report.sections.items():
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["section", *section.columns])
        for row in section.rows:
            writer.writerow([name, *(_cell(row.get(c)) for c in section.columns)])
        out.write("\n")
    return out.getvalue()


def _cell(value: Any) -> str:
    plain = _plain(value)
    if plain is None:
        return ""
    if isinstance(plain, list):
        return ";".join(str(v) for v in plain)
    return str(plain)


def render(report: Report, output: str, console: Console) -> None:
    if output == "json":
        print(as_json(report))
        return
    if output == "csv":
        print(as_csv(report), end="")
        return
    console.rule(report.title)
    for section in report.sections.values():
        table = Table(*section.columns, title=section.title, title_justify="left")
        for row in section.rows:
            table.add_row(*(_cell(row.get(c)) for c in section.columns))
        if not section.rows:
            table.caption = "none"
        console.print(table)
