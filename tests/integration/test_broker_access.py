"""The broker enforces the registry's answer: who may read, write and consume what.

Two departments get their own principals; the registry's grants are reconciled onto
the real broker (SASL/SCRAM, StandardAuthorizer), and each department's own client is
then refused or served.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion
from pydantic import SecretStr

from registry.acl import issue_kafka_password, onboarded_departments, reconcile_departments
from registry.grants import DepartmentGrant, inbound_topic, inbox_topic
from tests.kafka_helpers import first_message
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import TopicKey, TopicSpec, apply_topics

pytestmark = pytest.mark.usefixtures("secured")


@dataclass
class Department:
    code: str
    clients: KafkaClients


@pytest.fixture
def shared_topic(kafka: KafkaClients, stack_settings: Settings) -> Iterator[str]:
    """A data resource's topic holding one record."""
    name = f"test.shared.{uuid.uuid4().hex[:8]}"
    apply_topics(kafka.admin(), stack_settings, [TopicSpec(name, "test resource", TopicKey.USCC)])
    producer = kafka.producer()
    producer.produce(name, key=b"91330106MA2CD7Q4XU", value=b"record")
    producer.flush(10)
    yield name
    admin = kafka.admin()
    admin.delete_topics([name])[name].result()


@pytest.fixture
def departments(
    kafka: KafkaClients, stack_settings: Settings
) -> Iterator[tuple[Department, Department]]:
    """Two onboarded departments, each with its own Kafka principal and password."""
    admin = kafka.admin()
    made = []
    for _ in range(2):
        code = f"t{uuid.uuid4().hex[:8]}"
        password = issue_kafka_password(admin, code)
        settings = stack_settings.model_copy(
            update={"kafka_username": f"dept-{code}", "kafka_password": SecretStr(password)}
        )
        made.append(Department(code, KafkaClients(settings)))
    yield made[0], made[1]
    reconcile_departments(admin, stack_settings, [])
    deletions = [
        UserScramCredentialDeletion(f"dept-{d.code}", ScramMechanism.SCRAM_SHA_512) for d in made
    ]
    for future in admin.alter_user_scram_credentials(deletions).values():
        future.result()
    topics = [t for d in made for t in (inbox_topic(d.code), inbound_topic(d.code))]
    for future in admin.delete_topics(topics).values():
        future.result()


def grant(department: Department, *topics: str) -> DepartmentGrant:
    return DepartmentGrant.for_department(department.code, read_topics=topics)


def first_read(department: Department, topic: str, group: str | None = None, wait: float = 20.0):
    """The first message or error a department's consumer gets from ``topic``."""
    group = group or f"{department.code}.reader-{uuid.uuid4().hex[:6]}"
    message = first_message(department.clients, topic, group, wait)
    assert message is not None, f"{department.code} got nothing from {topic} in {wait}s"
    return message


def produce_result(department: Department, topic: str) -> KafkaError | None:
    producer = department.clients.producer(**{"message.timeout.ms": 10_000})
    outcome: list[KafkaError | None] = []
    producer.produce(
        topic, key=b"k", value=b"v", on_delivery=lambda error, _: outcome.append(error)
    )
    producer.flush(15)
    return outcome[0] if outcome else KafkaError(KafkaError._MSG_TIMED_OUT)


def test_a_department_without_an_approved_subscription_is_refused(
    kafka: KafkaClients, stack_settings: Settings, departments, shared_topic: str
) -> None:
    owner, outsider = departments
    reconcile_departments(
        kafka.admin(), stack_settings, [grant(owner, shared_topic), grant(outsider)]
    )

    refused = first_read(outsider, shared_topic)
    served = first_read(owner, shared_topic)

    assert refused.error() is not None
    assert refused.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert served.error() is None and served.value() == b"record"


def test_a_department_writes_only_to_its_own_inbound_topic(
    kafka: KafkaClients, stack_settings: Settings, departments, shared_topic: str
) -> None:
    first, second = departments
    reconcile_departments(
        kafka.admin(), stack_settings, [grant(first), grant(second, shared_topic)]
    )

    assert produce_result(first, inbound_topic(first.code)) is None
    assert (
        produce_result(first, inbound_topic(second.code)).code()
        == KafkaError.TOPIC_AUTHORIZATION_FAILED
    )
    assert produce_result(second, shared_topic).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert (
        produce_result(first, "market.registrations").code()
        == KafkaError.TOPIC_AUTHORIZATION_FAILED
    )


def test_a_department_uses_only_its_own_consumer_groups(
    kafka: KafkaClients, stack_settings: Settings, departments, shared_topic: str
) -> None:
    first, second = departments
    reconcile_departments(
        kafka.admin(), stack_settings, [grant(first, shared_topic), grant(second, shared_topic)]
    )

    borrowed = first_read(second, shared_topic, group=f"{first.code}.reader")

    assert borrowed.error() is not None
    assert borrowed.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_a_revocation_takes_effect_within_seconds(
    kafka: KafkaClients, stack_settings: Settings, departments, shared_topic: str
) -> None:
    subscriber, other = departments
    admin = kafka.admin()
    reconcile_departments(admin, stack_settings, [grant(subscriber, shared_topic), grant(other)])
    consumer = subscriber.clients.consumer(group_id=f"{subscriber.code}.live")
    consumer.subscribe([shared_topic])
    try:
        deadline = time.monotonic() + 20
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None and message.error() is None

        revoked_at = time.monotonic()
        reconcile_departments(admin, stack_settings, [grant(subscriber), grant(other)])
        kafka.producer().produce(shared_topic, key=b"91330106MA2CD7Q4XU", value=b"after")
        refused = None
        while refused is None and time.monotonic() - revoked_at < 15:
            polled = consumer.poll(0.5)
            if polled is not None and polled.error() is not None:
                refused = polled
            elif polled is not None:
                assert polled.value() != b"after", "read a record produced after the revocation"
        elapsed = time.monotonic() - revoked_at
    finally:
        consumer.close()

    assert refused is not None, "the subscriber was never refused"
    assert refused.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert elapsed < 10


def test_only_onboarded_departments_get_their_own_topics(
    kafka: KafkaClients, stack_settings: Settings, departments
) -> None:
    first, second = departments
    paper_only = DepartmentGrant.for_department(f"t{uuid.uuid4().hex[:8]}")

    report = reconcile_departments(
        kafka.admin(), stack_settings, [grant(first), grant(second), paper_only]
    )

    admin = kafka.admin()
    topics = admin.list_topics(timeout=10).topics
    assert {first.code, second.code} <= onboarded_departments(admin)
    assert inbox_topic(first.code) in topics and inbound_topic(second.code) in topics
    assert inbox_topic(paper_only.department_code) not in topics
    assert report.onboarded >= 2
