"""Monitoring, end to end: Prometheus (Debian's binary) scrapes the platform's running
services after a demo, and every Grafana panel's query returns data — so no dashboard
shows a metric that no service exports.

What runs, each as it runs in production: the registry API (``xietong registry serve``,
with its enforcer and outbox relay), a 双告知 worker (``xietong streams dual-notice``),
the lag exporter (``xietong lag serve``), and the sample departments' connectors (in
this process, their metrics served on a port of their own). The demo: the sample feed,
a push claimed and fulfilled, one overdue, one action refused, one registration to
route by hand, one unreadable record.

The panels of the 联合惩戒 worker, the sink and the credit check are
test_monitoring_credit.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.registry import Collector

from app.demo import feed_samples
from registry.db import session_factory
from registry.publisher import OutboxRelay
from schemas import register_all
from streams.dual_notice.rules import push_id
from tests.dual_notice_records import action, key_of, licence, registration
from tests.monitoring import (
    Command,
    dashboard_queries,
    of_credit_services,
    panels_without_data,
    prometheus_fixture,
    query,
)
from tests.stream_worker import Onboarding, Platform, Watch, Worker, free_port
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import DUAL_NOTICE_PUSHES, REGISTRATIONS, apply_topics
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

ROAD_FREIGHT = "道路货物运输（不含危险货物）"  # needs 道路货物运输经营许可 (DLHWYSXK)
#: The 双告知 worker's claim period here, so that a push can be overdue at once.
CLAIM_PERIOD_MS = 3600 * 1000


# -- the services -------------------------------------------------------------------------------


class OnlyNamed(Collector):
    """The metrics of this process whose names start with ``prefix`` (the connectors')."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        return (m for m in REGISTRY.collect() if m.name.startswith(self.prefix))


@pytest.fixture(scope="module")
def running(
    stack_settings: Settings,
    kafka: KafkaClients,
    registry_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, list[str]]]:
    """The services, started; the scrape targets of each Prometheus job."""
    logs = tmp_path_factory.mktemp("monitoring")
    apply_topics(kafka.admin(), stack_settings)
    register_all(kafka.schema_registry())
    relay = OutboxRelay(session_factory(registry_url), KafkaClients(stack_settings, "registry"))
    while relay.publish_pending(limit=500):  # the catalog, before the worker reads it
        pass

    departments = Onboarding(kafka, stack_settings)
    started: list[Command | Worker] = []
    try:
        for code in ("hz-xh-transport", "hz-xh-em"):
            departments.onboard(code)
        registry_port, lag_port, connectors_port = free_port(), free_port(), free_port()
        registry = Command(
            logs / "registry.log",
            "registry",
            "serve",
            DATABASE_URL=registry_url,
            XIETONG_REGISTRY_PORT=str(registry_port),
        )
        started.append(registry)
        lag = Command(logs / "lag.log", "lag", "serve", "--port", str(lag_port), "--interval", "1")
        started.append(lag)
        worker = Worker.of("dual-notice", logs / "dual-notice.log", CLAIM_PERIOD="PT1H")
        started.append(worker)
        worker.start()
        registry.wait_for(f"http://127.0.0.1:{registry_port}/health")
        lag.wait_for(f"http://127.0.0.1:{lag_port}/metrics")

        connectors = CollectorRegistry()
        connectors.register(OnlyNamed("xietong_connector_"))
        server, _ = start_http_server(connectors_port, "127.0.0.1", registry=connectors)

        demo(Platform(kafka, departments), kafka, logs)
        yield {
            "registry": [f"127.0.0.1:{registry_port}"],
            "lag-exporter": [f"127.0.0.1:{lag_port}"],
            "dual-notice": [f"127.0.0.1:{worker.metrics_port}"],
            "connectors": [f"127.0.0.1:{connectors_port}"],
        }
        server.shutdown()
    finally:
        for command in reversed(started):
            command.stop()
        departments.offboard_all()


def new_uscc(division: str = "330106") -> str:
    return make_uscc("91", division)


def demo(platform: Platform, kafka: KafkaClients, logs: Path) -> None:
    """What the dashboards show: the sample feed and each kind of 双告知 event."""
    feed_samples(KafkaClients(kafka.settings, "connectors"), logs / "exports", records=300)

    # A push claimed by its department, then fulfilled by the licence.
    claimed = registration("330106", (ROAD_FREIGHT,), industry="G5431", uscc=new_uscc())
    pushes = Watch(kafka, DUAL_NOTICE_PUSHES.name, claimed["uscc"])
    platform.register(claimed)
    pushes.until(lambda found: len(found) >= 1)
    push = push_id(key_of(claimed), "DLHWYSXK", "hz-xh-transport")
    platform.act("hz-xh-em", action(claimed["uscc"], push, "CLAIM"))  # not its push: refused
    platform.act("hz-xh-transport", action(claimed["uscc"], push, "CLAIM"))
    pushes.until(lambda found: any(p["state"] == "CLAIMED" for p in found))
    platform.license(licence(claimed["uscc"], "DLHWYSXK", "hz-xh-transport"))

    # A push past its one-hour claim period as soon as it is made.
    platform.register(
        registration(
            "330106",
            (ROAD_FREIGHT,),
            industry="G5431",
            uscc=new_uscc(),
            event_time_ms=business_clock().now_ms() - CLAIM_PERIOD_MS - 60_000,
        )
    )
    # 农药经营许可 has no department in 上城区: routed by hand.
    platform.register(
        registration(
            "330102", ("农药零售",), ("肥料销售",), industry="F5167", uscc=new_uscc("330102")
        )
    )
    # Not Avro at all: dead-lettered by the worker.
    producer = kafka.producer()
    producer.produce(REGISTRATIONS.name, key=b"monitoring-test", value=b"not avro")
    producer.flush(10)


prometheus = prometheus_fixture()


# -- what Prometheus holds ----------------------------------------------------------------------


def test_every_dashboard_panel_query_of_these_services_returns_data(prometheus: str) -> None:
    mine = [q for q in dashboard_queries() if not of_credit_services(q[2])]
    empty = panels_without_data(prometheus, mine)
    assert empty == [], "panels without data:\n" + "\n".join(empty)


def test_the_lag_exporter_measures_the_workers_group_per_topic_and_partition(
    prometheus: str,
) -> None:
    lag = query(prometheus, 'xietong_consumer_lag{group="xietong.streams.dual-notice"}')
    topics = {series["metric"]["topic"] for series in lag}
    assert REGISTRATIONS.name in topics
    assert all(int(series["metric"]["partition"]) >= 0 for series in lag)
    consistent = query(
        prometheus,
        "xietong_consumer_end_offset - xietong_consumer_committed_offset"
        " - xietong_consumer_lag != 0",
    )
    assert consistent == []


def test_prometheus_loads_every_alert_rule_and_none_fires_for_the_running_services(
    prometheus: str,
) -> None:
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = {rule["name"] for group in rules for rule in group["rules"]}
    assert {"XietongRegistryUnreachable", "XietongConsumerLagGrowing"} <= names
    unreachable = query(prometheus, 'ALERTS{alertname="XietongRegistryUnreachable"}')
    assert unreachable == []
