"""Fixtures shared by the whole suite.

Integration tests (``tests/integration``) run against real services: by default the
local stack (started here if it is not running, and stopped again at the end if this
session started it, so a test run leaves no stray process); with a Docker engine and
``XIETONG_TESTCONTAINERS=1``, equivalent containers started by testcontainers.

A session that leaves a process of its own alive fails (:func:`pytest_sessionfinish`):
every process it started, or that one of those started, must have ended by then.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from deploy.local.stack import LocalStack
from xietong.kafka import KafkaClients
from xietong.processes import still_running, stop_processes, wait_ended
from xietong.settings import Settings, get_settings
from xietong.topics import apply_service_acls, apply_topics

INTEGRATION_DIR = Path(__file__).parent / "integration"

#: Inherited by every process the session starts, so that one is recognised even after
#: its parent died and it was handed to init.
SESSION_MARK = "XIETONG_TEST_SESSION"

#: How long processes of the session may take to end once its last fixture is gone (a
#: service's stop grace, and a little more).
LEFTOVER_GRACE_SECONDS = 12.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos", action="store_true", help="run the fault tests (make chaos): three brokers"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chaos = config.getoption("--chaos")
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("chaos") is not None and not chaos:
            item.add_marker(pytest.mark.skip(reason="a fault test: make chaos runs it"))
    # The main job onboards every department of the sample province: tests that count on
    # a department not onboarded yet run before it.
    items.sort(key=lambda item: item.get_closest_marker("main_job") is not None)


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ[SESSION_MARK] = str(os.getpid())


@pytest.hookimpl(trylast=True)  # after the session's fixtures, the stack's among them, ended
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when a process it started still runs, naming each one; then stop it."""
    leftovers = wait_ended(_started_by_this_session(), LEFTOVER_GRACE_SECONDS)
    if not leftovers:
        return
    lines = [_describe(p) for p in leftovers]
    stop_processes(leftovers, grace=5)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter else print
    say("")
    say(f"{len(lines)} process(es) started by this test session outlived it (now stopped):")
    for line in lines:
        say(f"  {line}")


def _started_by_this_session() -> list[psutil.Process]:
    session = psutil.Process()
    mark = os.environ[SESSION_MARK]
    found = {p.pid: p for p in session.children(recursive=True)}
    for process in psutil.process_iter():
        try:
            if process.pid != session.pid and process.environ().get(SESSION_MARK) == mark:
                found[process.pid] = process
        except psutil.Error:
            continue
    # multiprocessing's resource tracker ends with the process that started it: here, the
    # session itself (connectors with worker processes ran in it)
    return [p for p in still_running(found.values()) if not _is_resource_tracker_of(session, p)]


def _describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid} (parent {process.ppid()}): {' '.join(process.cmdline())}"
    except psutil.Error:
        return f"pid {process.pid} (ended while being named)"


def _is_resource_tracker_of(session: psutil.Process, process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline())
        return process.ppid() == session.pid and "multiprocessing.resource_tracker" in command
    except psutil.Error:
        return False


def _use_containers() -> bool:
    if os.environ.get("XIETONG_TESTCONTAINERS") != "1":
        return False
    from tests.containers import docker_available

    return docker_available()


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings whose endpoints are running services, with the platform's topics applied."""
    if _use_containers():
        from tests.containers import start_containers

        endpoints, stop = start_containers()
        # The containers' broker is open (no SASL, no authorizer): ACL tests skip.
        settings = Settings(**endpoints, kafka_security_protocol="PLAINTEXT")
        try:
            apply_topics(KafkaClients(settings).admin(), settings)
            yield settings
        finally:
            stop()
        return

    settings = get_settings()
    stack = LocalStack(settings)
    started = stack.up(report=lambda line: print(f"[stack] {line}"))
    try:
        admin = KafkaClients(settings).admin()
        apply_topics(admin, settings)
        apply_service_acls(admin)
        yield settings
    finally:
        if started:
            stack.down(only=started, report=lambda line: print(f"[stack] {line}"))


@pytest.fixture(scope="session")
def local_stack(stack_settings: Settings) -> LocalStack:
    """The local stack object (its services may be external under testcontainers)."""
    return LocalStack(stack_settings)


@pytest.fixture(scope="session")
def kafka(stack_settings: Settings) -> KafkaClients:
    """The platform's client factory, as the administrator, pointed at the running services."""
    return KafkaClients(stack_settings)


@pytest.fixture(scope="session")
def connectors_kafka(stack_settings: Settings) -> KafkaClients:
    """The client factory of the connectors service: only what its ACLs allow."""
    return KafkaClients(stack_settings, "connectors")


@pytest.fixture(scope="session")
def secured(stack_settings: Settings) -> None:
    """Skip a test that needs the broker's authentication and ACLs (not in containers)."""
    if not stack_settings.kafka_security_protocol.startswith("SASL"):
        pytest.skip("the broker runs without SASL and ACLs")
