"""有条件共享, tried as an attacker would: a department subscribed on conditions reads its
view and nothing else, and never a field or a division it was not granted.

西湖区卫生健康局 (hz-xh-health) subscribes to the credit list entries with the fields
``uscc, list_type`` and the division 330106. Against the real broker (ACLs enforced),
schema registry and PostgreSQL: the registry API with its access enforcer and outbox
relay in-process, as ``xietong registry serve`` runs them, and the sharing processor as
a process of its own (``xietong streams sharing``). Records go in as the connectors
publish them; the department reads as its own principal. "The processor has passed
them" is shown by a barrier: a record of 330106 sent after them to the same partition
of the canonical topic, and seen in the view.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion
from confluent_kafka.serialization import MessageField, SerializationContext
from fastapi.testclient import TestClient
from pydantic import SecretStr

from registry.acl import issue_kafka_password, reconcile_departments
from registry.api import create_app
from registry.audit import Actor
from registry.db import session_factory, transaction
from registry.enforcer import AccessEnforcer
from registry.publisher import OutboxRelay
from registry.service import issue_token
from schemas import CREDIT_LIST_ENTRY, REGISTRATION
from streams.sharing.views import VIEW_FIELDS, view_event_id, view_subject
from tests.joint_punishment_records import list_entry, registration, today
from tests.kafka_helpers import eventually, first_message, produce_all
from tests.stream_worker import (
    Onboarding,
    Platform,
    Worker,
    partition_mate,
    publish_catalog,
    running,
)
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import REGISTRY_SUBSCRIPTIONS, DepartmentTopic
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

SUBSCRIBER = "hz-xh-health"  # 杭州市西湖区卫生健康局
LIST_OWNER = "zj-drc"  # 浙江省发展和改革委员会 owns the credit list entries
REGISTRATION_OWNER = "zj-amr"  # 浙江省市场监督管理局 owns the registrations
VIEW = DepartmentTopic.shared(SUBSCRIBER, "credit_list_entry")
CANONICAL = CREDIT_LIST_ENTRY.topic.name
ALWAYS = {name for name, _, _ in VIEW_FIELDS}


# -- the platform around the test -----------------------------------------------------------


@pytest.fixture(scope="module")
def registry(registry_url: str, stack_settings: Settings, kafka: KafkaClients) -> Iterator[Any]:
    """The registry API with its access enforcer and outbox relay, as `registry serve`."""
    publish_catalog(registry_url, stack_settings, kafka)
    admin = kafka.admin()
    enforcer = AccessEnforcer(registry_url, stack_settings, admin, interval=1.0)
    relay = OutboxRelay(session_factory(registry_url), KafkaClients(stack_settings, "registry"))
    enforcer_thread, stop_enforcer = enforcer.start()
    relay_thread, stop_relay = relay.start(interval=0.5)

    def after_change() -> None:
        relay.nudge()
        enforcer.nudge()

    tokens = {}
    with transaction(session_factory(registry_url)) as session:
        for department in (SUBSCRIBER, LIST_OWNER, REGISTRATION_OWNER):
            tokens[department] = issue_token(session, Actor.admin("test"), department).token
    try:
        with TestClient(create_app(registry_url, None, after_change)) as client:
            yield client, tokens
    finally:
        stop_enforcer.set()
        stop_relay.set()
        enforcer.nudge()
        relay.nudge()
        enforcer_thread.join(10)
        relay_thread.join(10)
        reconcile_departments(admin, stack_settings, [])


@pytest.fixture(scope="module")
def subscriber(kafka: KafkaClients, stack_settings: Settings) -> Iterator[KafkaClients]:
    """The department's own principal, onboarded; its view topic starts empty (a view of
    an earlier run is deleted) and is deleted at the end."""
    admin = kafka.admin()
    delete_view(kafka)
    password = issue_kafka_password(admin, SUBSCRIBER)
    settings = stack_settings.model_copy(
        update={"kafka_username": f"dept-{SUBSCRIBER}", "kafka_password": SecretStr(password)}
    )
    yield KafkaClients(settings)
    deletion = [UserScramCredentialDeletion(f"dept-{SUBSCRIBER}", ScramMechanism.SCRAM_SHA_512)]
    for future in admin.alter_user_scram_credentials(deletion).values():
        future.result()
    delete_view(kafka)


@pytest.fixture(scope="module")
def sharing(
    tmp_path_factory: pytest.TempPathFactory, registry: Any, kafka: KafkaClients
) -> Iterator[Worker]:
    forget_earlier_subscriptions(kafka)
    log = tmp_path_factory.mktemp("sharing") / "sharing.log"
    with running("sharing", log, RETRY_INTERVAL="0.5") as worker:
        yield worker


@pytest.fixture(scope="module")
def platform(
    connectors_kafka: KafkaClients, kafka: KafkaClients, stack_settings: Settings
) -> Platform:
    """Records sent as the connectors send them."""
    return Platform(connectors_kafka, Onboarding(kafka, stack_settings))


def forget_earlier_subscriptions(kafka: KafkaClients) -> None:
    """Tombstone the department's subscriptions left on registry.subscriptions by an
    earlier run (whose registry database is gone, and whose ids this run's registry
    gives again)."""
    topic = REGISTRY_SUBSCRIPTIONS.name
    deserialize = kafka.avro_deserializer()
    context = SerializationContext(topic, MessageField.VALUE)
    stale = set()
    for message in kafka.read_to_end(topic, "test-sharing"):
        value = None if message.value() is None else deserialize(message.value(), context)
        if isinstance(value, dict) and value["subscriber_code"] == SUBSCRIBER:
            stale.add(message.key())
        else:
            stale.discard(message.key())
    produce_all(kafka, [(topic, key, None) for key in stale if key])


def delete_view(kafka: KafkaClients) -> None:
    admin = kafka.admin()
    if VIEW in admin.list_topics(timeout=10).topics:
        for future in admin.delete_topics([VIEW]).values():
            future.result()
        eventually(
            lambda: VIEW in admin.list_topics(timeout=10).topics,
            lambda present: not present,
            30,
            lambda _: f"{VIEW} still there",
        )


# -- what the department does ---------------------------------------------------------------


def post(client: TestClient, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code in (200, 201), answer.text
    result: dict[str, Any] = answer.json()
    return result


def subscribe(registry: Any, resource: str, owner: str, **conditions: Any) -> int:
    """The department requests ``resource`` (on ``conditions``), its owner approves."""
    client, tokens = registry
    requested = post(
        client,
        "/subscriptions",
        tokens[SUBSCRIBER],
        {
            "resource": resource,
            "purpose": "卫生健康行政许可前核查失信主体",
            "legal_basis": "国发〔2016〕33号",
            **conditions,
        },
    )
    approved = post(client, f"/subscriptions/{requested['id']}/approve", tokens[owner], {})
    # The registry tells the department where to read: its view, if on conditions.
    view = DepartmentTopic.shared(SUBSCRIBER, resource)
    assert approved["read_topic"] == (view if conditions else approved["topic"])
    return int(requested["id"])


def revoke(registry: Any, subscription: int, owner: str) -> None:
    client, tokens = registry
    post(client, f"/subscriptions/{subscription}/revoke", tokens[owner], {"reason": "条件变更"})


def refusal(clients: KafkaClients, topic: str) -> bool:
    """Whether the broker refuses the department's read of ``topic``."""
    group = f"{SUBSCRIBER}.probe-{uuid.uuid4().hex[:8]}"
    message = first_message(clients, topic, group, seconds=4)
    return (
        message is not None
        and message.error() is not None
        and message.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    )


def served(clients: KafkaClients, topic: str) -> bool:
    group = f"{SUBSCRIBER}.probe-{uuid.uuid4().hex[:8]}"
    message = first_message(clients, topic, group, seconds=6)
    return message is not None and message.error() is None


def until(check: Any, what: str, seconds: float = 30.0) -> None:
    """Poll the broker until ``check()`` holds."""
    eventually(check, bool, seconds, lambda _: f"not within {seconds}s: {what}", every=0.5)


def read_view(clients: KafkaClients) -> list[dict[str, Any]] | None:
    """Every record of the view as the department reads it, from its beginning; None
    while the broker does not let it (or the topic is not there yet)."""
    read = read_view_with_schemas(clients)
    return None if read is None else [record for _, record in read]


def read_view_with_schemas(clients: KafkaClients) -> list[tuple[int, dict[str, Any]]] | None:
    """:func:`read_view`, each record with the id of the schema it was written with."""
    consumer = clients.consumer(
        f"{SUBSCRIBER}.view-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
    )
    deserialize = clients.avro_deserializer()
    context = SerializationContext(VIEW, MessageField.VALUE)
    try:
        metadata = consumer.list_topics(VIEW, timeout=10).topics.get(VIEW)
        if metadata is None or metadata.error is not None:
            return None
        pending = set(metadata.partitions)
        consumer.assign([TopicPartition(VIEW, p, OFFSET_BEGINNING) for p in pending])
        records = []
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is None:
                value = deserialize(message.value(), context)
                assert isinstance(value, dict)
                assert message.key() == value["uscc"].encode(), "a view record is keyed by USCC"
                schema_id = int.from_bytes((message.value() or b"")[1:5], "big")
                records.append((schema_id, value))
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
            else:
                return None
        assert not pending, f"{VIEW}: the end not reached in 20 s"
        return records
    finally:
        consumer.close()


def writer_fields(clients: KafkaClients, kafka: KafkaClients, subscription: int) -> set[str]:
    """The fields of the schemas the view's records of ``subscription`` were written with,
    each registered under the view's own subject."""
    registry = kafka.schema_registry()
    subject = view_subject(CREDIT_LIST_ENTRY, SUBSCRIBER)
    read = read_view_with_schemas(clients) or []
    ids = {schema_id for schema_id, r in read if r["subscription_id"] == subscription}
    assert ids, f"no record of subscription {subscription}"
    fields = set()
    for schema_id in ids:
        registered = registry.lookup_schema(subject, registry.get_schema(schema_id))
        assert registered.schema_id == schema_id, f"schema {schema_id} is not under {subject}"
        fields |= {f["name"] for f in json.loads(registered.schema.schema_str)["fields"]}
    return fields


def view_until(clients: KafkaClients, holds: Any, what: str) -> list[dict[str, Any]]:
    return (
        eventually(
            lambda: read_view(clients),
            lambda records: records is not None and holds(records),
            60,
            lambda records: f"{VIEW}: not within 60s: {what} ({len(records or [])} records)",
            every=0.5,
        )
        or []
    )


def listed(platform: Platform, uscc: str) -> dict[str, Any]:
    """A 列入 of ``uscc``, sent as the credit connector sends it."""
    entry_id = f"LIST-{uuid.uuid4().hex[:10]}"
    return platform.list(list_entry(uscc, entry_id, list_type="ABNORMAL_OPERATION"))


def ids_of(records: list[dict[str, Any]], subscription: int) -> set[str]:
    return {r["source_event_id"] for r in records if r["subscription_id"] == subscription}


# -- the specification ----------------------------------------------------------------------


def test_a_department_receives_exactly_what_it_subscribed_to(
    registry: Any,
    subscriber: KafkaClients,
    sharing: Worker,
    platform: Platform,
    kafka: KafkaClients,
) -> None:
    # Entities of several divisions, their records all in one partition of the canonical
    # topic, so that a later record of that partition is a barrier for all of them.
    anchor = make_uscc(division="330106")
    entities = {
        division: [partition_mate(kafka, anchor, division) for _ in range(2)]
        for division in ("330106", "330102", "330105", "330110")
    }
    before = {
        division: [listed(platform, uscc)["envelope"]["event_id"] for uscc in usccs]
        for division, usccs in entities.items()
    }

    granted = subscribe(
        registry,
        "credit_list_entry",
        LIST_OWNER,
        fields=["uscc", "list_type"],
        filters={"divisions": ["330106"]},
    )
    barrier = listed(platform, partition_mate(kafka, anchor, "330106"))["envelope"]["event_id"]
    records = view_until(
        subscriber, lambda found: barrier in ids_of(found, granted), "the barrier record"
    )

    # The canonical topic stays closed to it: the view is all it gets.
    assert refusal(subscriber, CANONICAL)
    seen = ids_of(records, granted)
    assert set(before["330106"]) <= seen, "every record of 330106 is shared"
    for division in ("330102", "330105", "330110"):
        assert not set(before[division]) & seen, f"no record of {division} is shared"
    # Not one record or field outside the grant: the history shared too (the view starts
    # at the beginning of the canonical topic), whoever published it.
    assert {r["subscription_id"] for r in records} == {granted}
    assert all(r["uscc"][2:8] == "330106" for r in records)
    present = {name for r in records for name, value in r.items() if value is not None}
    assert present <= ALWAYS | {"list_type"}, present - ALWAYS
    assert all(r["list_type"] for r in records)
    assert all(
        r["view_event_id"] == view_event_id(r["subscription_id"], r["source_event_id"])
        for r in records
    ), "a view record's id is derived from its subscription and its source event"
    assert writer_fields(subscriber, kafka, granted) == ALWAYS | {"list_type"}

    # An unconditional subscription still reads the canonical topic itself.
    platform.register(registration(anchor, "330106", registered_on=today()))
    unconditional = subscribe(registry, "registration", REGISTRATION_OWNER)
    until(lambda: served(subscriber, REGISTRATION.topic.name), "registrations served")

    # Widened: revoked, and a new subscription with one more field and division. The
    # revocation closes the view within seconds.
    revoke(registry, granted, LIST_OWNER)
    until(lambda: refusal(subscriber, VIEW), "the revoked view refused")
    widened = subscribe(
        registry,
        "credit_list_entry",
        LIST_OWNER,
        fields=["uscc", "list_type", "entity_name"],
        filters={"divisions": ["330106", "330102"]},
    )
    # The new subscription's view starts from the beginning: the history it may now see.
    view_until(
        subscriber,
        lambda found: set(before["330102"]) <= ids_of(found, widened),
        "the history of 330102 under the widened grant",
    )
    after = {
        division: listed(platform, partition_mate(kafka, anchor, division))["envelope"]["event_id"]
        for division in ("330106", "330102", "330105")
    }
    barrier = listed(platform, partition_mate(kafka, anchor, "330106"))["envelope"]["event_id"]
    records = view_until(
        subscriber, lambda found: barrier in ids_of(found, widened), "the second barrier"
    )
    assert {after["330106"], after["330102"]} <= ids_of(records, widened)
    assert after["330105"] not in {r["source_event_id"] for r in records}
    assert not set(after.values()) & ids_of(records, granted), "the revoked view stopped"
    for record in records:
        if record["subscription_id"] == widened:
            assert record["uscc"][2:8] in ("330106", "330102")
            assert record["entity_name"]
        else:
            assert record["subscription_id"] == granted
            assert record["uscc"][2:8] == "330106" and record.get("entity_name") is None
    assert writer_fields(subscriber, kafka, widened) == ALWAYS | {"list_type", "entity_name"}

    # Revoked again: no view, and the canonical topics as they were.
    revoke(registry, widened, LIST_OWNER)
    revoke(registry, unconditional, REGISTRATION_OWNER)
    until(lambda: refusal(subscriber, VIEW), "the view refused after the last revocation")
    assert refusal(subscriber, CANONICAL)
    until(lambda: refusal(subscriber, REGISTRATION.topic.name), "registrations refused")


def test_the_sharing_processor_serves_metrics(sharing: Worker) -> None:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{sharing.metrics_port}/metrics", timeout=5).text
    assert "xietong_sharing_views" in text


def test_a_view_killed_and_restarted_loses_nothing_and_repeats_a_record_only_as_itself(
    registry: Any,
    subscriber: KafkaClients,
    sharing: Worker,
    platform: Platform,
    kafka: KafkaClients,
) -> None:
    anchor = make_uscc(division="330106")
    granted = subscribe(
        registry,
        "credit_list_entry",
        LIST_OWNER,
        fields=["uscc", "list_type", "listed_on"],
        filters={"divisions": ["330106"]},
    )
    first = [
        listed(platform, partition_mate(kafka, anchor))["envelope"]["event_id"] for _ in range(5)
    ]
    view_until(subscriber, lambda found: set(first) <= ids_of(found, granted), "the first five")

    sharing.kill()
    second = [
        listed(platform, partition_mate(kafka, anchor))["envelope"]["event_id"] for _ in range(5)
    ]
    sharing.start()
    records = view_until(
        subscriber, lambda found: set(second) <= ids_of(found, granted), "the five sent meanwhile"
    )

    mine = [r for r in records if r["subscription_id"] == granted]
    by_source: dict[str, list[dict[str, Any]]] = {}
    for record in mine:
        by_source.setdefault(record["source_event_id"], []).append(record)
    assert set(first) | set(second) <= set(by_source), "nothing lost"
    for copies in by_source.values():
        assert all(copy == copies[0] for copy in copies), "a record written again is the same"
    revoke(registry, granted, LIST_OWNER)
    until(lambda: refusal(subscriber, VIEW), "the view refused after the revocation")


def test_at_its_valid_until_a_view_is_closed_and_its_topic_refused(
    registry: Any,
    subscriber: KafkaClients,
    sharing: Worker,
    platform: Platform,
    kafka: KafkaClients,
) -> None:
    client, tokens = registry
    ends = business_clock().now() + timedelta(seconds=20)
    requested = post(
        client,
        "/subscriptions",
        tokens[SUBSCRIBER],
        {
            "resource": "credit_list_entry",
            "purpose": "专项整治期间核查失信主体",
            "legal_basis": "国发〔2016〕33号",
            "fields": ["uscc", "list_type"],
            "filters": {"divisions": ["330106"]},
        },
    )
    post(
        client,
        f"/subscriptions/{requested['id']}/approve",
        tokens[LIST_OWNER],
        {"valid_until": ends.isoformat()},
    )
    sent = listed(platform, make_uscc(division="330106"))["envelope"]["event_id"]
    view_until(subscriber, lambda found: sent in ids_of(found, requested["id"]), "shared")

    until(lambda: refusal(subscriber, VIEW), "the view refused at its end", seconds=60)
    closed = f'"event": "sharing_view_closed", "subscription": {requested["id"]}'
    until(lambda: closed in sharing.log.read_text(errors="replace"), "the view closed")
