"""Helpers of the monitoring tests: platform commands as processes, a real Prometheus
scraping them, and the Grafana dashboards' queries asked of it.

``tests/integration/test_monitoring.py`` runs the registry, a 双告知 worker, the lag
exporter and the connectors; ``test_monitoring_credit.py`` the 联合惩戒 worker, the sink
and the credit check. Each checks the dashboard queries of the services it runs
(:func:`of_credit_services` tells them apart), so together they check every panel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.lag import measure
from deploy.local.stack.prometheus import PrometheusServer
from tests.stream_worker import free_port, stop_process, until_ready
from xietong.kafka import KafkaClients
from xietong.settings import Settings

REPO = Path(__file__).parents[1]
GRAFANA_DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
#: Grafana's variables, as "All" and a short range would give them.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$department": ".*"}
#: What the queries of the credit services (test_monitoring_credit.py) mention.
CREDIT_SERVICES = (
    "xietong_joint_punishment_",
    "xietong.streams.joint-punishment",
    "xietong_sink_",
    "xietong_credit_check_",
)


class Command:
    """A ``xietong`` command as a process of its own, with its log."""

    def __init__(self, log: Path, *args: str, **env: str) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *args],
                stdout=out,
                stderr=out,
                env={**os.environ, **env},
                cwd=REPO,
            )

    def wait_for(self, url: str, timeout: float = 60.0) -> None:
        """Until ``url`` answers 200; fails with the log's end if the command exits."""

        def answers() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        until_ready(self.process, self.log, answers, timeout)

    def stop(self) -> None:
        stop_process(self.process, grace=20)


def until_caught_up(kafka: KafkaClients, group: str, timeout: float = 60.0) -> None:
    """Until ``group`` has committed every record of its topics: what a demo sends next
    is then not queued behind what earlier tests left. A group that has committed nothing
    yet is caught up once it is stable with members: on a fresh stack its topics hold
    nothing to commit."""
    deadline = time.monotonic() + timeout
    while True:
        measured = measure(kafka.admin(), (group,))
        behind = measured.total_lag(group)
        stable = any(
            g.group == group and g.state == "STABLE" and g.members for g in measured.groups
        )
        if behind == 0 and (measured.partitions or stable):
            return
        assert time.monotonic() < deadline, f"{group} is {behind} records behind after {timeout}s"
        time.sleep(0.5)


@contextmanager
def prometheus_scraping(
    settings: Settings, targets: Mapping[str, Sequence[str]], home: Path
) -> Iterator[str]:
    """Debian's Prometheus on a free port, scraping ``targets`` every second, with the
    platform's alert rules; its URL."""
    server = PrometheusServer(
        settings.model_copy(update={"home": home, "prometheus_port": free_port()}),
        targets=targets,
        scrape_interval="1s",
    )
    try:
        server.start()
    except Exception as error:  # the binary is missing: make system installs it
        if os.environ.get("CI") or "not found on PATH" not in str(error):
            raise
        pytest.skip(str(error))
    try:
        yield server.endpoint
    finally:
        server.stop()


def prometheus_fixture() -> Any:
    """The ``prometheus`` fixture of a monitoring test module: Prometheus scraping the
    services of the module's ``running`` fixture (job → targets); its URL. A module
    takes it as ``prometheus = prometheus_fixture()``."""

    @pytest.fixture(scope="module")
    def prometheus(
        running: dict[str, list[str]],
        stack_settings: Settings,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[str]:
        home = tmp_path_factory.mktemp("prometheus-home")
        with prometheus_scraping(stack_settings, running, home) as url:
            yield url

    return prometheus


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, query) of every panel of every dashboard."""
    found = []
    for path in sorted(GRAFANA_DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((dashboard["title"], panel["title"], target["expr"]))
    return found


def of_credit_services(expr: str) -> bool:
    return any(mention in expr for mention in CREDIT_SERVICES)


def resolve(expr: str) -> str:
    """The query as Grafana sends it, its variables replaced."""
    return re.sub(r"\$\w+", lambda m: GRAFANA_VARIABLES.get(m.group(0), m.group(0)), expr)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    assert answer.status_code == 200, f"{expr}: {answer.text}"
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def panels_without_data(
    prometheus: str, queries: list[tuple[str, str, str]], timeout: float = 60.0
) -> list[str]:
    """The panels among ``queries`` whose query still returns nothing after ``timeout``
    seconds of scraping (a rate needs two scrapes; a worker needs a commit)."""
    deadline = time.monotonic() + timeout
    while True:
        empty = [f"{d} / {p}: {e}" for d, p, e in queries if not query(prometheus, resolve(e))]
        if not empty or time.monotonic() > deadline:
            return empty
        time.sleep(1)
