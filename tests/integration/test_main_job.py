"""`make run`, the platform's main job, against the real stack.

The steps of the Makefile's ``run`` target, then ``xietong run``: every service starts
as a process of its own, the department simulator feeds the connectors and plays the
clerks, and within a minute or two records flow the whole way — published, pushed,
claimed, sanctioned, checked, hit, stored in the credit database. Ctrl-C stops it all.

It onboards every department of the sample province (their inbox and inbound topics),
so it runs last in the session (see ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from xietong.settings import Settings

pytestmark = [pytest.mark.main_job, pytest.mark.timeout(480)]

#: What must have happened, as the services' own metrics count it.
FLOWING = {
    "records published": ("simulator", "xietong_connector_records_published_total", {}),
    "records dead-lettered": ("simulator", "xietong_connector_records_dead_lettered_total", {}),
    "双告知 pushes": ("dual-notice", "xietong_dual_notice_pushes_created_total", {}),
    "claims": ("dual-notice", "xietong_dual_notice_actions_applied_total", {"action": "CLAIM"}),
    "sanction notices": (
        "joint-punishment",
        "xietong_joint_punishment_sanction_notices_total",
        {},
    ),
    "credit checks": ("credit-check", "xietong_credit_check_checks_total", {}),
    "rows in the credit database": ("sink", "xietong_sink_rows_written_total", {}),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def xietong(environment: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"xietong {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def environment(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The stack's endpoints, and a free port for every service of the main job."""
    ports = {
        "XIETONG_REGISTRY_PORT": free_port(),
        "XIETONG_DUAL_NOTICE_METRICS_PORT": free_port(),
        "XIETONG_JOINT_PUNISHMENT_METRICS_PORT": free_port(),
        "XIETONG_SINK_METRICS_PORT": free_port(),
        "XIETONG_CREDIT_CHECK_PORT": free_port(),
        "XIETONG_LAG_EXPORTER_PORT": free_port(),
        "XIETONG_SIMULATOR_METRICS_PORT": free_port(),
    }
    environment = {
        **os.environ,
        **stack_settings.endpoints(),
        **{name: str(port) for name, port in ports.items()},
        "XIETONG_HOME": str(stack_settings.home),
        "XIETONG_SIMULATOR_EXPORTS_DIR": str(tmp_path_factory.mktemp("exports")),
        "XIETONG_SIMULATOR_CREDIT_CHECK_URL": f"http://127.0.0.1:{ports['XIETONG_CREDIT_CHECK_PORT']}",
        "XIETONG_SIMULATOR_TICK_SECONDS": "2",
        "XIETONG_SIMULATOR_MAX_DELAY_SECONDS": "3",
    }
    return environment


@pytest.fixture(scope="module")
def prepared(environment: dict[str, str], stack_settings: Settings) -> dict[str, str]:
    """The Makefile's run target up to `xietong run`."""
    credentials = Path(environment["XIETONG_SIMULATOR_EXPORTS_DIR"]) / "credentials.json"
    for step in (
        ("topics", "apply"),
        ("schemas", "register"),
        ("registry", "migrate"),
        ("registry", "load-catalog"),
        ("registry", "onboard", "--credentials", str(credentials)),
        ("registry", "reconcile-acls"),
        ("registry", "publish"),
    ):
        xietong(environment, *step)
    assert credentials.stat().st_mode & 0o777 == 0o600
    return environment


@pytest.fixture(scope="module")
def platform(
    prepared: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[str]]:
    log = tmp_path_factory.mktemp("run") / "run.log"
    with log.open("w") as output:
        running = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run", "--interval", "5"],
            env=prepared,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    running.log = log  # type: ignore[attr-defined]
    yield running
    if running.poll() is None:
        running.kill()
        running.wait(30)


def metric(port: str, name: str, labels: dict[str, str]) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_make_run_starts_every_service_and_records_flow_end_to_end_until_ctrl_c(
    platform: subprocess.Popen[str], prepared: dict[str, str]
) -> None:
    ports = {
        "dual-notice": prepared["XIETONG_DUAL_NOTICE_METRICS_PORT"],
        "joint-punishment": prepared["XIETONG_JOINT_PUNISHMENT_METRICS_PORT"],
        "sink": prepared["XIETONG_SINK_METRICS_PORT"],
        "credit-check": prepared["XIETONG_CREDIT_CHECK_PORT"],
        "simulator": prepared["XIETONG_SIMULATOR_METRICS_PORT"],
    }
    deadline = time.monotonic() + 240
    missing = dict(FLOWING)
    while missing and time.monotonic() < deadline:
        assert platform.poll() is None, platform.log.read_text()  # type: ignore[attr-defined]
        for what, (service, name, labels) in list(missing.items()):
            if metric(ports[service], name, labels) > 0:
                del missing[what]
        time.sleep(2)
    log = platform.log.read_text()  # type: ignore[attr-defined]
    assert not missing, f"nothing yet for {sorted(missing)}; the run printed:\n{log[-4000:]}"
    for url in ("registry API docs", "Prometheus", "psql"):
        assert url in log

    platform.send_signal(signal.SIGINT)  # Ctrl-C
    assert platform.wait(60) == 0
    log = platform.log.read_text()  # type: ignore[attr-defined]
    assert "stopped; `make run` continues from here." in log
    assert "exited with" not in log, log[-4000:]  # no service died on the way
    for service, port in ports.items():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", int(port))) != 0, f"{service} still listens"
