"""Fixtures shared by the whole suite.

Integration tests (``tests/integration``) run against real services: by default the
local stack (started here if it is not running, and stopped again at the end if this
session started it, so a test run leaves no stray process); with a Docker engine and
``XIETONG_TESTCONTAINERS=1``, equivalent containers started by testcontainers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.stack import LocalStack
from xietong.kafka import KafkaClients
from xietong.settings import Settings, get_settings
from xietong.topics import apply_service_acls, apply_topics

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
    # The main job onboards every department of the sample province: tests that count on
    # a department not onboarded yet run before it.
    items.sort(key=lambda item: item.get_closest_marker("main_job") is not None)


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
