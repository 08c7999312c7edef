"""The registry decides, the broker enforces: a subscription through the API opens the
topic to the department's own principal within seconds, and its revocation closes it.

Runs the registry API (in-process) with the access enforcer beside it, exactly as
``xietong registry serve`` does, against the real broker and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message
from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.demo import feed_samples
from registry.acl import issue_kafka_password, reconcile_departments
from registry.api import create_app
from registry.audit import Actor
from registry.db import session_factory, transaction
from registry.enforcer import AccessEnforcer
from registry.service import issue_token
from schemas import register_all
from tests.kafka_helpers import first_message
from xietong.kafka import KafkaClients
from xietong.settings import Settings

pytestmark = pytest.mark.usefixtures("secured")

SUBSCRIBER = "hz-health"  # 杭州市卫生健康委员会 wants the registrations
OWNER = "zj-amr"  # 浙江省市场监督管理局 owns them


@pytest.fixture(scope="module")
def registrations_on_the_topic(
    kafka: KafkaClients, connectors_kafka: KafkaClients, tmp_path_factory: pytest.TempPathFactory
) -> None:
    register_all(kafka.schema_registry())
    feed_samples(connectors_kafka, tmp_path_factory.mktemp("feed"), records=300, seed=3)


@pytest.fixture
def enforcer(
    registry_url: str, stack_settings: Settings, kafka: KafkaClients
) -> Iterator[AccessEnforcer]:
    admin = kafka.admin()
    running = AccessEnforcer(registry_url, stack_settings, admin, interval=1.0)
    thread, stop = running.start()
    yield running
    stop.set()
    running.nudge()
    thread.join(10)
    reconcile_departments(admin, stack_settings, [])


@pytest.fixture
def subscriber_clients(kafka: KafkaClients, stack_settings: Settings) -> Iterator[KafkaClients]:
    admin = kafka.admin()
    password = issue_kafka_password(admin, SUBSCRIBER)
    settings = stack_settings.model_copy(
        update={"kafka_username": f"dept-{SUBSCRIBER}", "kafka_password": SecretStr(password)}
    )
    yield KafkaClients(settings)
    deletion = [UserScramCredentialDeletion(f"dept-{SUBSCRIBER}", ScramMechanism.SCRAM_SHA_512)]
    for future in admin.alter_user_scram_credentials(deletion).values():
        future.result()


@pytest.fixture
def api(registry_url: str, enforcer: AccessEnforcer) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tokens = {}
    with transaction(session_factory(registry_url)) as session:
        for department in (SUBSCRIBER, OWNER):
            tokens[department] = issue_token(session, Actor.admin("test"), department).token
    with TestClient(create_app(registry_url, None, enforcer.nudge)) as client:
        yield client, tokens


def read_registrations(clients: KafkaClients, seconds: float = 6.0) -> Message | None:
    """What the department's consumer gets first: a record, an error, or None."""
    group = f"{SUBSCRIBER}.registrations-{time.monotonic_ns()}"
    return first_message(clients, "market.registrations", group, seconds)


def wait_for(check, seconds: float = 15.0) -> float:
    """Seconds until ``check()`` holds; fails after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"not within {seconds}s")


def refused(clients: KafkaClients) -> bool:
    message = read_registrations(clients, seconds=3)
    return (
        message is not None
        and message.error() is not None
        and message.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    )


def served(clients: KafkaClients) -> bool:
    message = read_registrations(clients)
    return message is not None and message.error() is None


def test_an_approved_subscription_opens_the_topic_and_its_revocation_closes_it(
    registrations_on_the_topic: None,
    api: tuple[TestClient, dict[str, str]],
    subscriber_clients: KafkaClients,
    tmp_path: Path,
) -> None:
    client, tokens = api
    as_subscriber = {"Authorization": f"Bearer {tokens[SUBSCRIBER]}"}
    as_owner = {"Authorization": f"Bearer {tokens[OWNER]}"}

    wait_for(lambda: refused(subscriber_clients))

    requested = client.post(
        "/subscriptions",
        json={
            "resource": "registration",
            "purpose": "双告知: 认领本部门审批事项的新设市场主体",
            "legal_basis": "国发〔2015〕62号",
        },
        headers=as_subscriber,
    )
    assert requested.status_code in (200, 201), requested.text
    subscription = requested.json()["id"]
    assert refused(subscriber_clients), "a request alone opens nothing"

    approved = client.post(f"/subscriptions/{subscription}/approve", json={}, headers=as_owner)
    assert approved.status_code == 200, approved.text
    opened_in = wait_for(lambda: served(subscriber_clients))

    revoked = client.post(
        f"/subscriptions/{subscription}/revoke",
        json={"reason": "用途已完成"},
        headers=as_owner,
    )
    assert revoked.status_code == 200, revoked.text
    closed_in = wait_for(lambda: refused(subscriber_clients))

    assert opened_in < 15 and closed_in < 15
    history = client.get(f"/subscriptions/{subscription}/history", headers=as_owner).json()
    assert [event["to_status"] for event in history][-2:] == ["APPROVED", "REVOKED"]
