"""The Grafana dashboards of the platform, written as JSON to ``dashboards/``.

    .venv/bin/python deploy/grafana/dashboards.py     # after changing a panel here

Grafana (deploy/docker-compose.yml) provisions every JSON file of ``dashboards/`` into
its "Xietong" folder. Every panel reads the datasource of the dashboard's ``datasource``
variable (any Prometheus datasource of the Grafana; the default one to start with), so the
files import as they are into a province's existing Grafana, whatever its datasource
is called. Each panel is one or
more PromQL queries of the platform's metrics; ``tests/integration/test_monitoring.py``
runs the services and checks that every query returns data, so no panel shows a metric
that does not exist. ``tests/unit/test_grafana_dashboards.py`` checks that the JSON files
are what this script writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DATASOURCE_VARIABLE: dict[str, Any] = {
    "name": "datasource",
    "label": "Prometheus",
    "type": "datasource",
    "query": "prometheus",
    "regex": "",
    "current": {},  # Grafana's default Prometheus datasource until the viewer picks one
    "hide": 0,
    "includeAll": False,
    "multi": False,
    "refresh": 1,
}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or stat, bargauge
    description: str = ""
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[tuple[str, tuple[Panel, ...]], ...]
    variables: tuple[dict[str, Any], ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        y = 0
        for row_title, row_panels in self.rows:
            panels.append(
                {
                    "id": len(panels) + 1,
                    "type": "row",
                    "title": row_title,
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                    "panels": [],
                }
            )
            y += 1
            x = 0
            for panel in row_panels:
                if x + panel.width > 24:
                    x, y = 0, y + 8
                panels.append(_panel(panel, len(panels) + 1, x, y))
                x += panel.width
            y += 8
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["xietong"],
            "timezone": "browser",
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": [DATASOURCE_VARIABLE, *self.variables]},
            "annotations": {"list": []},
            "links": [
                {"type": "dashboards", "tags": ["xietong"], "asDropdown": True, "title": "Xietong"}
            ],
            "panels": panels,
        }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    options: dict[str, Any] = {"tooltip": {"mode": "multi", "sort": "desc"}}
    if panel.kind == "timeseries":
        options["legend"] = {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]}
    else:
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "values": False}}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
            }
            for n, query in enumerate(panel.queries)
        ],
    }


def department_variable(metric: str) -> dict[str, Any]:
    return {
        "name": "department",
        "label": "department",
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, department)", "refId": "department"},
        "definition": f"label_values({metric}, department)",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 1,
    }


def rate(metric: str, by: str, selector: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{_braces(selector)}[{RATE}]))"


def quantile(q: float, histogram: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket[{RATE}])))"


def _braces(selector: str) -> str:
    return f"{{{selector}}}" if selector else ""


# -- platform overview --------------------------------------------------------------------------

OVERVIEW = Dashboard(
    uid="xietong-overview",
    title="Xietong — platform overview",
    description="Every service, what flows through the topics, how far consumers are behind.",
    rows=(
        (
            "Services",
            (
                Panel(
                    "Services up",
                    (Query('up{job!="prometheus"}', "{{job}} {{instance}}"),),
                    kind="stat",
                    width=24,
                    description="1: Prometheus reaches the service's /metrics. Alerts:"
                    " XietongProcessorDown, XietongConnectorDown, XietongRegistryUnreachable.",
                ),
            ),
        ),
        (
            "Records",
            (
                Panel(
                    "Canonical events published",
                    (
                        Query(
                            rate("xietong_connector_records_published_total", "record_type"),
                            "{{record_type}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Writes per topic",
                    (
                        Query(
                            rate("xietong_topic_end_offset", "topic", 'topic!~"xietong\\\\..*"'),
                            "{{topic}}",
                        ),
                    ),
                    unit="ops",
                    description="Records appended per second, from the topics' end offsets"
                    " (the lag exporter); Faust's internal topics left out.",
                ),
                Panel(
                    "Dead letters",
                    (
                        Query(
                            "sum(rate(xietong_topic_end_offset"
                            f'{{topic="platform.dead-letter"}}[{RATE}]))',
                            "platform.dead-letter",
                        ),
                    ),
                    unit="ops",
                    description="Every writer's dead letters. Alert: XietongDeadLetterTopicSpike.",
                ),
            ),
        ),
        (
            "Consumers",
            (
                Panel(
                    "Consumer lag by group",
                    (Query("sum by (group) (xietong_consumer_lag)", "{{group}}"),),
                    description="Records written but not yet committed by the group."
                    " Alert: XietongConsumerLagGrowing.",
                ),
                Panel(
                    "Consumers per group",
                    (Query("sum by (group, state) (xietong_consumer_group_members)", "{{group}}"),),
                    kind="bargauge",
                    description="0: nobody consumes the group's topics.",
                ),
                Panel(
                    "Lag measurement age",
                    (
                        Query(
                            "time() - xietong_lag_exporter_last_success_timestamp_seconds",
                            "{{instance}}",
                        ),
                    ),
                    unit="s",
                    kind="stat",
                    description="Alert: XietongBrokerUnreachable.",
                ),
            ),
        ),
        (
            "Registry",
            (
                Panel(
                    "Registry API requests",
                    (Query(rate("xietong_registry_requests_total", "status"), "{{status}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Registry API latency (p95)",
                    (
                        Query(
                            quantile(0.95, "xietong_registry_request_seconds", "route"), "{{route}}"
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Outbox pending",
                    (Query("sum(xietong_registry_outbox_pending)", "pending"),),
                    kind="stat",
                    description="Registry changes not yet on the compacted registry.* topics.",
                ),
                Panel(
                    "Since the broker last matched the grants",
                    (
                        Query(
                            "time() - xietong_registry_access_last_success_timestamp_seconds",
                            "{{instance}}",
                        ),
                    ),
                    unit="s",
                    kind="stat",
                    description="Alert: XietongRegistryAccessStale.",
                ),
            ),
        ),
        (
            "Credit database and credit checks",
            (
                Panel(
                    "Rows written to the credit database",
                    (Query(rate("xietong_sink_rows_written_total", "table"), "{{table}}"),),
                    unit="ops",
                ),
                Panel(
                    "Sink batch time (p95)",
                    (Query(quantile(0.95, "xietong_sink_batch_seconds"), "p95"),),
                    unit="s",
                ),
                Panel(
                    "Credit checks by verdict",
                    (Query(rate("xietong_credit_check_checks_total", "verdict"), "{{verdict}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Credit check latency (p99)",
                    (Query(quantile(0.99, "xietong_credit_check_seconds"), "p99"),),
                    unit="s",
                ),
            ),
        ),
    ),
)


# -- 双告知 ---------------------------------------------------------------------------------------

DEPARTMENT = 'department=~"$department"'
DUAL_NOTICE = Dashboard(
    uid="xietong-dual-notice",
    title="Xietong — 双告知 per department",
    description="Pushes to approving departments: claims, overdue pushes, routing by hand.",
    variables=(department_variable("xietong_dual_notice_pushes"),),
    rows=(
        (
            "Departments",
            (
                Panel(
                    "Pushes by state",
                    (
                        Query(
                            f"sum by (state) (xietong_dual_notice_pushes{{{DEPARTMENT}}})",
                            "{{state}}",
                        ),
                    ),
                    kind="bargauge",
                    description="PUSHED 待认领, OVERDUE 逾期未认领, CLAIMED 已认领,"
                    " FULFILLED 已发证, UNLICENSED 认领后逾期未发证 …",
                ),
                Panel(
                    "Overdue pushes by department",
                    (
                        Query(
                            "sum by (department) (xietong_dual_notice_pushes"
                            f'{{state="OVERDUE", {DEPARTMENT}}})',
                            "{{department}}",
                        ),
                    ),
                    description="逾期未认领. Alert: XietongDualNoticeOverdueGrowing.",
                ),
                Panel(
                    "Claimed or fulfilled, share of pushes",
                    (
                        Query(
                            "(sum by (department) (xietong_dual_notice_pushes"
                            f'{{state=~"CLAIMED|FULFILLED|UNLICENSED", {DEPARTMENT}}})'
                            " or sum by (department)"
                            f" (xietong_dual_notice_pushes{{{DEPARTMENT}}}) * 0)"
                            " / sum by (department)"
                            f" (xietong_dual_notice_pushes{{{DEPARTMENT}}})",
                            "{{department}}",
                        ),
                    ),
                    unit="percentunit",
                    kind="bargauge",
                    description="认领率 per department: pushes claimed (or already licensed)"
                    " among all pushes held.",
                ),
                Panel(
                    "Claim latency",
                    (
                        Query(quantile(0.5, "xietong_dual_notice_claim_latency_seconds"), "p50"),
                        Query(quantile(0.9, "xietong_dual_notice_claim_latency_seconds"), "p90"),
                    ),
                    unit="s",
                    description="From the push to its claim, in event time.",
                ),
            ),
        ),
        (
            "Flow",
            (
                Panel(
                    "Pushes made, by routing",
                    (
                        Query(
                            rate("xietong_dual_notice_pushes_created_total", "routing"),
                            "{{routing}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Department actions",
                    (
                        Query(
                            rate("xietong_dual_notice_actions_applied_total", "action"),
                            "applied {{action}}",
                        ),
                        Query(
                            rate("xietong_dual_notice_actions_rejected_total", "action"),
                            "rejected {{action}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Escalations and risk alerts (last hour)",
                    (
                        Query(
                            "sum by (kind) (increase(xietong_dual_notice_alerts_total[1h]))",
                            "{{kind}}",
                        ),
                    ),
                    kind="bargauge",
                ),
                Panel(
                    "Waiting to be routed by hand",
                    (Query("sum(xietong_dual_notice_manual_routing_queue)", "分流失败"),),
                    kind="stat",
                    description="Alert: XietongDualNoticeManualRoutingBacklog.",
                ),
                Panel(
                    "For departments without an inbox",
                    (
                        Query(
                            "sum by (record_type) (xietong_dual_notice_undelivered_total)",
                            "{{record_type}}",
                        ),
                    ),
                    kind="bargauge",
                    description="Records kept on the platform topics until the department"
                    " is onboarded.",
                ),
                Panel(
                    "Processing time (p95)",
                    (
                        Query(
                            quantile(0.95, "xietong_dual_notice_processing_seconds", "input"),
                            "p95 {{input}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Input not yet read",
                    (
                        Query(
                            "sum by (topic) (xietong_consumer_lag"
                            '{group="xietong.streams.dual-notice"})',
                            "{{topic}}",
                        ),
                    ),
                ),
            ),
        ),
    ),
)


# -- 联合惩戒 -------------------------------------------------------------------------------------

JOINT_PUNISHMENT = Dashboard(
    uid="xietong-joint-punishment",
    title="Xietong — joint punishment (联合惩戒)",
    description="Sanction notices, restriction hits and the departments' feedback (反馈).",
    variables=(department_variable("xietong_joint_punishment_feedback_required_total"),),
    rows=(
        (
            "Measures",
            (
                Panel(
                    "Sanction notices by department (last day)",
                    (
                        Query(
                            "sum by (department) (increase("
                            f"xietong_joint_punishment_sanction_notices_total{{{DEPARTMENT}}}[1d]))",
                            "{{department}}",
                        ),
                    ),
                    kind="bargauge",
                ),
                Panel(
                    "Restriction hits by measure",
                    (
                        Query(
                            rate(
                                "xietong_joint_punishment_restriction_hits_total",
                                "measure",
                                DEPARTMENT,
                            ),
                            "{{measure}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Licence reviews by cause",
                    (
                        Query(
                            rate(
                                "xietong_joint_punishment_licence_reviews_total",
                                "cause",
                                DEPARTMENT,
                            ),
                            "{{cause}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Lift notices",
                    (
                        Query(
                            rate("xietong_joint_punishment_lift_notices_total", "department"),
                            "{{department}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Serious-list proposals (经营异常 three years); 信用修复 refused before term",
                    (
                        Query(
                            rate(
                                "xietong_joint_punishment_serious_listing_proposals_total",
                                "department",
                            ),
                            "proposal {{department}}",
                        ),
                        Query(
                            rate("xietong_joint_punishment_repairs_refused_total", "input"),
                            "repair refused {{input}}",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
        (
            "Feedback (反馈)",
            (
                Panel(
                    "Feedback rate by department",
                    (
                        Query(
                            "sum by (department) (xietong_joint_punishment_feedback_given_total"
                            f"{{{DEPARTMENT}}}) / sum by (department)"
                            f" (xietong_joint_punishment_feedback_required_total{{{DEPARTMENT}}})",
                            "{{department}}",
                        ),
                    ),
                    unit="percentunit",
                    kind="bargauge",
                    description="Hits fed back among hits that need feedback, since the"
                    " worker started.",
                ),
                Panel(
                    "Feedback overdue (last day)",
                    (
                        Query(
                            "sum by (department) (increase("
                            f"xietong_joint_punishment_feedback_overdue_total{{{DEPARTMENT}}}[1d]))",
                            "{{department}}",
                        ),
                    ),
                    kind="bargauge",
                    description="Alert: XietongSanctionFeedbackOverdue.",
                ),
                Panel(
                    "Input not yet read",
                    (
                        Query(
                            "sum by (topic) (xietong_consumer_lag"
                            '{group="xietong.streams.joint-punishment"})',
                            "{{topic}}",
                        ),
                    ),
                ),
            ),
        ),
    ),
)


# -- connectors and dead letters ---------------------------------------------------------------

CONNECTORS = Dashboard(
    uid="xietong-connectors",
    title="Xietong — connectors and dead letters",
    description="Department sources in: records read, published, dead-lettered and why.",
    rows=(
        (
            "Connectors",
            (
                Panel(
                    "Records per connector",
                    (
                        Query(
                            rate("xietong_connector_records_read_total", "connector"),
                            "read {{connector}}",
                        ),
                        Query(
                            rate("xietong_connector_records_published_total", "connector"),
                            "published {{connector}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Dead-lettered share per connector",
                    (
                        Query(
                            "sum by (connector) (xietong_connector_records_dead_lettered_total)"
                            " / sum by (connector) (xietong_connector_records_read_total)",
                            "{{connector}}",
                        ),
                    ),
                    unit="percentunit",
                    kind="bargauge",
                    description="Since each connector started.",
                ),
                Panel(
                    "Batch publish and commit time (p95)",
                    (
                        Query(
                            quantile(0.95, "xietong_connector_batch_seconds", "connector"),
                            "{{connector}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Source not yet published",
                    (
                        Query(
                            "xietong_connector_source_lag",
                            "{{connector}} ({{unit}})",
                        ),
                    ),
                    description="Rows or bytes the source holds beyond the committed offset.",
                ),
            ),
        ),
        (
            "Dead letters",
            (
                Panel(
                    "Dead letters by reason",
                    (
                        Query(
                            rate("xietong_connector_records_dead_lettered_total", "reason"),
                            "{{reason}}",
                        ),
                    ),
                    unit="ops",
                    description="Alert: XietongDeadLetterSpike.",
                ),
                Panel(
                    "Dead letters by reason and connector (total)",
                    (
                        Query(
                            "sum by (connector, reason)"
                            " (xietong_connector_records_dead_lettered_total)",
                            "{{connector}} {{reason}}",
                        ),
                    ),
                    kind="bargauge",
                ),
                Panel(
                    "Dead-letter topic, every writer",
                    (
                        Query(
                            "sum(rate(xietong_topic_end_offset"
                            f'{{topic="platform.dead-letter"}}[{RATE}]))',
                            "platform.dead-letter",
                        ),
                    ),
                    unit="ops",
                    description="Alert: XietongDeadLetterTopicSpike.",
                ),
                Panel(
                    "Processors' and sink's dead letters",
                    (
                        Query(
                            "sum by (record_type, reason)"
                            " (xietong_dual_notice_dead_lettered_total)",
                            "双告知 {{record_type}} {{reason}}",
                        ),
                        Query(
                            "sum by (reason) (xietong_sink_errors_total)",
                            "sink {{reason}}",
                        ),
                    ),
                    kind="bargauge",
                ),
            ),
        ),
    ),
)

DASHBOARDS = {
    "platform-overview": OVERVIEW,
    "dual-notice": DUAL_NOTICE,
    "joint-punishment": JOINT_PUNISHMENT,
    "connectors": CONNECTORS,
}


def render(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.as_json(), ensure_ascii=False, indent=2) + "\n"


def main() -> None:
    for name, dashboard in DASHBOARDS.items():
        (DASHBOARDS_DIR / f"{name}.json").write_text(render(dashboard), encoding="utf-8")
        print(f"{DASHBOARDS_DIR / name}.json")


if __name__ == "__main__":
    main()
