"""Kafka over TLS: the local broker's SASL_SSL listener, with a certificate from the CA
the stack generated, reached by the platform's one client factory (librdkafka) and by
Faust's client (aiokafka) from the same settings; a client that does not trust that CA
is refused, and so is one that trusts it but is not authenticated."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from streams.runtime import broker_credentials
from xietong.kafka import KafkaClients, local_ca_file
from xietong.settings import LOOPBACK, Settings

pytestmark = pytest.mark.usefixtures("secured")


@pytest.fixture(scope="module")
def tls(stack_settings: Settings) -> Settings:
    """The stack's settings, with every client on the TLS listener."""
    if not stack_settings.kafka_tls_port or stack_settings.kafka_is_external:
        pytest.skip("the local stack's TLS listener is off (XIETONG_KAFKA_TLS_PORT=0)")
    return stack_settings.model_copy(
        update={
            "kafka_bootstrap_servers_env": f"{LOOPBACK}:{stack_settings.kafka_tls_port}",
            "kafka_security_protocol": "SASL_SSL",
            "kafka_ssl_ca_location": local_ca_file(stack_settings),
        }
    )


@pytest.fixture(scope="module")
def topic(kafka: KafkaClients) -> Iterator[str]:
    name = f"test.tls.{uuid.uuid4().hex[:8]}"
    admin = kafka.admin()
    for future in admin.create_topics([NewTopic(name, 1, 1)]).values():
        future.result()
    yield name
    for future in admin.delete_topics([name]).values():
        future.result()


def test_the_client_factory_writes_and_reads_over_tls_trusting_the_stacks_ca(
    tls: Settings, topic: str
) -> None:
    clients = KafkaClients(tls, "admin")
    producer = clients.producer()
    producer.produce(topic, key=b"91330100MA2B3C4D5E", value=b"over TLS")
    assert producer.flush(30) == 0
    consumer = clients.consumer(clients.group(f"tls-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.value() == b"over TLS"
    finally:
        consumer.close()
    admin = clients.admin()
    [broker] = admin.list_topics(timeout=10).brokers.values()
    assert broker.port == tls.kafka_tls_port


def test_fausts_client_connects_over_tls_from_the_same_settings(tls: Settings, topic: str) -> None:
    credentials = broker_credentials(tls, "admin")
    assert credentials is not None

    async def send() -> int:
        producer = AIOKafkaProducer(
            bootstrap_servers=tls.kafka_bootstrap_servers,
            **credentials_to_aiokafka_auth(credentials),
        )
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b"from aiokafka", key=b"k")
            return sent.offset
        finally:
            await producer.stop()

    assert asyncio.run(send()) >= 0


def refusal(settings: Settings) -> str:
    """Why a client with these settings cannot read the cluster's metadata."""
    errors: list[str] = []
    admin = KafkaClients(settings, "admin").admin(
        error_cb=lambda error: errors.append(str(error)), log_level=0
    )
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=8)
    for _ in range(10):  # the error callbacks are served by poll
        if errors:
            break
        admin.poll(0.5)
    return " ".join(errors)


def test_a_client_that_does_not_trust_the_stacks_ca_is_refused(tls: Settings) -> None:
    untrusting = tls.model_copy(update={"kafka_ssl_ca_location": None})  # the system's CAs
    assert "certificate verify failed" in refusal(untrusting)


def test_tls_without_the_sasl_credentials_is_refused(tls: Settings) -> None:
    wrong = tls.model_copy(
        update={"kafka_username": "xietong-admin", "kafka_password": SecretStr("not it")}
    )
    assert "Authentication failed" in refusal(wrong)
