"""Monitoring of the credit services, end to end: Prometheus scrapes a 联合惩戒 worker
(``xietong streams joint-punishment``), the credit sink (``xietong sink run``), the
credit-check API (``xietong credit-check serve``) and the lag exporter after a demo, and
every dashboard query about them returns data (the other panels are
test_monitoring.py's).

The demo, in 西湖区: an entity listed on 严重违法失信名单, a procurement matter it hits and
西湖区财政's feedback, then its removal (lift notices); a hit left without feedback past
its 15-day deadline, and a 信用修复 of it before its year (refused); an entity on the
经营异常名录 for more than three years (a serious-list proposal); a licence-revoking
penalty; one credit check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from registry import service
from registry.audit import Actor
from registry.db import session_factory, transaction
from streams.joint_punishment.rules import restriction_hit_id
from tests.joint_punishment_records import (
    DAY_MS,
    feedback,
    licence,
    list_entry,
    matter,
    penalty,
    removal_of,
    today,
)
from tests.monitoring import (
    Command,
    dashboard_queries,
    of_credit_services,
    panels_without_data,
    prometheus_fixture,
    until_caught_up,
)
from tests.stream_worker import Onboarding, Platform, Watch, Worker, free_port, publish_catalog
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import PUNISHMENT_RESTRICTION_HITS
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

FINANCE = "hz-xh-finance"  # 西湖区财政局: implements CJ01 (政府采购), answers its hits


@pytest.fixture(scope="module")
def credit_database(credit_databases: Callable[[], str]) -> str:
    """A fresh, migrated credit database of this module's own; dropped at the end."""
    return credit_databases()


@pytest.fixture(scope="module")
def running(
    stack_settings: Settings,
    kafka: KafkaClients,
    registry_databases: Callable[[], str],
    credit_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, list[str]]]:
    """The services, started, after the demo; the scrape targets of each job."""
    logs = tmp_path_factory.mktemp("monitoring-credit")
    registry_url = registry_databases()
    publish_catalog(registry_url, stack_settings, kafka)
    with transaction(session_factory(registry_url)) as session:
        token = service.issue_token(session, Actor.admin("test-monitoring"), "hz-finance").token

    departments = Onboarding(kafka, stack_settings)
    started: list[Command | Worker] = []
    ports = {job: free_port() for job in ("joint-punishment", "sink", "credit-check", "lag")}
    try:
        departments.onboard(FINANCE)
        sink = Command(
            logs / "sink.log",
            "sink",
            "run",
            CREDIT_DATABASE_URL=credit_database,
            XIETONG_SINK_METRICS_PORT=str(ports["sink"]),
        )
        started.append(sink)
        credit_check = Command(
            logs / "credit-check.log",
            "credit-check",
            "serve",
            "--port",
            str(ports["credit-check"]),
            DATABASE_URL=registry_url,
        )
        started.append(credit_check)
        lag = Command(
            logs / "lag.log", "lag", "serve", "--port", str(ports["lag"]), "--interval", "1"
        )
        started.append(lag)
        worker = Worker.of(
            "joint-punishment",
            logs / "joint-punishment.log",
            METRICS_PORT=str(ports["joint-punishment"]),
        )
        started.append(worker)
        worker.start()
        until_caught_up(kafka, "xietong.streams.joint-punishment")
        sink.wait_for(f"http://127.0.0.1:{ports['sink']}/metrics")
        credit_check.wait_for(f"http://127.0.0.1:{ports['credit-check']}/ready")
        lag.wait_for(f"http://127.0.0.1:{ports['lag']}/metrics")

        demo(Platform(kafka, departments), kafka)
        answer = httpx.get(
            f"http://127.0.0.1:{ports['credit-check']}/v1/checks",
            params={"uscc": make_uscc("91", "330106"), "matter_type": "GOVERNMENT_PROCUREMENT"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        yield {
            "joint-punishment": [f"127.0.0.1:{ports['joint-punishment']}"],
            "sink": [f"127.0.0.1:{ports['sink']}"],
            "credit-check": [f"127.0.0.1:{ports['credit-check']}"],
            "lag-exporter": [f"127.0.0.1:{ports['lag']}"],
        }
    finally:
        for command in reversed(started):
            command.stop()
        departments.offboard_all()


def days_ago(n: int) -> Any:
    return today() - timedelta(days=n)


def demo(platform: Platform, kafka: KafkaClients) -> None:
    # Listed, hit by a procurement matter, answered by the department, then removed.
    listed = make_uscc("91", "330106")
    listing = list_entry(listed, f"E-{listed}", listed_on=days_ago(400))  # repairable by now
    hits = Watch(kafka, PUNISHMENT_RESTRICTION_HITS.name, listed)
    platform.list(listing)
    platform.matter(
        matter(listed, FINANCE, "GOVERNMENT_PROCUREMENT", "CG-M1", matter_date=days_ago(1))
    )
    hit = restriction_hit_id(listed, FINANCE, "GOVERNMENT_PROCUREMENT", "CG-M1", "CJ01")
    hits.until(bool)  # the hit first: feedback on an unknown hit is refused
    platform.feed_back(FINANCE, feedback(listed, hit, "APPLIED"))
    platform.list(removal_of(listing))
    # A hit raised 16 days ago: its 15 days (from the next day) ended at the last midnight.
    late = make_uscc("91", "330106")
    platform.list(list_entry(late, f"E-{late}", listed_on=days_ago(20)))
    platform.matter(
        matter(
            late,
            FINANCE,
            "GOVERNMENT_PROCUREMENT",
            "CG-M2",
            matter_date=days_ago(15),
            occurred_at_ms=business_clock().now_ms() - 16 * DAY_MS,
        ),
    )
    # Removed by 信用修复 twenty days after its 列入: before its year, refused (the listing
    # stays in force).
    platform.list(removal_of(list_entry(late, f"E-{late}", listed_on=days_ago(20))))
    # On the 经营异常名录 for more than three years: proposed for the serious list at once.
    abnormal = make_uscc("91", "330106")
    platform.list(
        list_entry(
            abnormal,
            f"YC-{abnormal}",
            list_type="ABNORMAL_OPERATION",
            listed_on=days_ago(1200),
            authority="hz-xh-amr",
        )
    )
    # A licence of 西湖区市场监管, then a penalty that revokes it: a licence review.
    revoked = make_uscc("91", "330106")
    platform.license(licence(revoked, f"JY-{revoked[-6:]}", "hz-xh-amr"))
    platform.penalize(
        penalty(revoked, f"西市监罚〔2026〕{revoked[-4:]}号", authority="hz-xh-health")
    )


prometheus = prometheus_fixture()


def test_every_dashboard_panel_query_of_the_credit_services_returns_data(
    prometheus: str,
) -> None:
    theirs = [q for q in dashboard_queries() if of_credit_services(q[2])]
    assert theirs, "no dashboard query mentions the credit services"
    empty = panels_without_data(prometheus, theirs)
    assert empty == [], "panels without data:\n" + "\n".join(empty)


def test_the_services_are_scraped(prometheus: str, running: dict[str, list[str]]) -> None:
    answer = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()
    health = {t["labels"]["job"]: t["health"] for t in answer["data"]["activeTargets"]}
    assert {job: health.get(job) for job in running} == {job: "up" for job in running}
