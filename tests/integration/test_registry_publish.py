"""The registry's compacted topics, as a specification, on the real broker, schema
registry and PostgreSQL.

Every change of a department, approval item, measure, list type or subscription leaves a
snapshot in the outbox, in the transaction that made it; the relay, connecting as
``svc-registry``, publishes the snapshots keyed by code (a subscription by its id); and
a reader that consumes a topic from the beginning and keeps the latest value per key —
what a Faust GlobalTable does — holds the registry's current state.

The topics are shared with other tests and outlive every run, so each test looks only
at keys it knows: the sample province's codes (every load publishes the same content
for them), and subscription ids and department codes made unique to this run.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app import cli
from registry import service
from registry.audit import Actor
from registry.db import engine, session_factory, transaction
from registry.models import OutboxEntry
from registry.outbox import (
    APPROVAL_ITEMS,
    DEPARTMENTS,
    LIST_TYPES,
    MEASURES,
    SUBSCRIPTIONS,
    PublishedEntity,
)
from registry.publisher import OutboxRelay
from registry.seed import Level, load_sample_province
from schemas import register_all
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import (
    REGISTRY_APPROVAL_ITEMS,
    REGISTRY_DEPARTMENTS,
    REGISTRY_LIST_TYPES,
    REGISTRY_MEASURES,
    REGISTRY_SUBSCRIPTIONS,
    apply_service_acls,
    apply_topics,
)
from xietong.uscc import USCC_ALPHABET, make_uscc

ADMIN = Actor.admin("test")
LOADER = Actor.system("test-load-catalog")
REGISTRATION_OWNER = Actor.department("zj-amr")  # 浙江省市场监督管理局
HEALTH = Actor.department("hz-health")  # 杭州市卫生健康委员会


class Record(NamedTuple):
    """One record of a registry topic, decoded; ``value`` None is a tombstone."""

    key: str
    value: dict[str, Any] | None
    partition: int
    offset: int


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_topics(kafka: KafkaClients, stack_settings: Settings) -> None:
    """The registry's topics, their ACLs (svc-registry writes, svc-streams and svc-sink
    read) and their schemas, as the declarations say."""
    admin = kafka.admin()
    apply_topics(admin, stack_settings)
    if stack_settings.kafka_security_protocol.startswith("SASL"):
        apply_service_acls(admin)
    register_all(kafka.schema_registry())


@pytest.fixture(scope="module")
def publishing_url(registry_databases: Callable[[], str], registry_topics: None) -> str:
    """This module's registry database, the sample catalog loaded."""
    url = registry_databases()
    # Subscription ids key a topic that outlives this database: start where no other
    # run's ids are.
    with engine(url).begin() as connection:
        first = random.randrange(10**8, 2 * 10**9)
        connection.execute(sa.text(f"ALTER TABLE subscriptions ALTER COLUMN id RESTART {first}"))
    with transaction(session_factory(url)) as session:
        service.load_catalog(session, LOADER)
    return url


@pytest.fixture(scope="module")
def sessions(publishing_url: str) -> sessionmaker[Session]:
    """Sessions on this module's registry database."""
    return session_factory(publishing_url)


@pytest.fixture(scope="module")
def ends_before_catalog(kafka: KafkaClients, registry_topics: None) -> dict[str, dict[int, int]]:
    """Where each catalog topic ended before this run published its catalog."""
    return {
        spec.name: end_offsets(kafka, spec.name)
        for spec in (
            REGISTRY_DEPARTMENTS,
            REGISTRY_APPROVAL_ITEMS,
            REGISTRY_MEASURES,
            REGISTRY_LIST_TYPES,
        )
    }


@pytest.fixture(scope="module")
def relay(
    sessions: sessionmaker[Session],
    stack_settings: Settings,
    ends_before_catalog: dict[str, dict[int, int]],
) -> OutboxRelay:
    """The relay, connecting as the registry's own principal, with the catalog published."""
    relay = OutboxRelay(sessions, KafkaClients(stack_settings, "registry"))
    publish_everything(relay)
    return relay


@pytest.fixture
def scratch_sessions(registry_databases: Callable[[], str]) -> sessionmaker[Session]:
    """Sessions on a database of this test's own, the sample catalog loaded, for tests
    that change the catalog (they read the outbox, and publish nothing)."""
    factory = session_factory(registry_databases())
    with transaction(factory) as session:
        service.load_catalog(session, LOADER)
    return factory


# -- helpers --------------------------------------------------------------------------------


def publish_everything(relay: OutboxRelay) -> int:
    published = 0
    while batch := relay.publish_pending(limit=200):
        published += batch
    return published


def end_offsets(clients: KafkaClients, topic: str) -> dict[int, int]:
    """The offset the next record of each partition of ``topic`` will get."""
    consumer = clients.consumer(group_id=clients.group(f"test-publish-{uuid.uuid4().hex[:8]}"))
    try:
        ends = {}
        for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            ends[partition] = high
        return ends
    finally:
        consumer.close()


def read_from_beginning(clients: KafkaClients, topic: str) -> list[Record]:
    """Every record of ``topic`` up to its current end, decoded, in order within each
    partition (so in order per key)."""
    deserialize = clients.avro_deserializer()
    ends = {partition: end for partition, end in end_offsets(clients, topic).items() if end}
    consumer = clients.consumer(group_id=clients.group(f"test-publish-{uuid.uuid4().hex[:8]}"))
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records: list[Record] = []
        while ends:
            message = consumer.poll(10.0)
            assert message is not None, f"{topic}: stopped short of the ends {ends}"
            assert message.error() is None, f"{topic}: {message.error()}"
            value = message.value()
            decoded: dict[str, Any] | None = None
            if value is not None:  # None is a tombstone
                record = deserialize(value, SerializationContext(topic, MessageField.VALUE))
                assert isinstance(record, dict)
                decoded = record
            partition, offset = message.partition() or 0, message.offset() or 0
            records.append(Record((message.key() or b"").decode(), decoded, partition, offset))
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
        return records
    finally:
        consumer.close()


def latest_per_key(records: list[Record]) -> dict[str, dict[str, Any] | None]:
    """The table a reader of a compacted topic holds: the last value of every key."""
    return {record.key: record.value for record in records}


def published_since(records: list[Record], ends: dict[int, int]) -> set[str]:
    """The keys of the records added after the topic ended at ``ends``."""
    return {record.key for record in records if record.offset >= ends.get(record.partition, 0)}


def outbox_rows(sessions: sessionmaker[Session], topic: str | None = None) -> list[OutboxEntry]:
    with transaction(sessions) as session:
        query = sa.select(OutboxEntry).order_by(OutboxEntry.id)
        if topic is not None:
            query = query.where(OutboxEntry.topic == topic)
        return list(session.scalars(query))


def new_department(session: Session) -> str:
    """A department of this run's own: its code and USCC exist nowhere else."""
    body = "".join(random.choice(USCC_ALPHABET) for _ in range(8))
    code = f"test-{body.lower()}"
    service.create_department(
        session,
        ADMIN,
        code=code,
        uscc=make_uscc("11", "330106", body8=body),
        name="杭州市西湖区发布测试局",
        sector="health",
        roles=["other"],
        level=Level.COUNTY,
        division="330106",
        contact="0571-0",
    )
    return code


# -- the outbox -----------------------------------------------------------------------------


def request_registrations(session: Session) -> Any:
    """杭州市卫健委 asks for the registrations, for 公共场所卫生许可's 双告知."""
    return service.request_subscription(
        session,
        HEALTH,
        department="hz-health",
        resource="registration",
        purpose="双告知: 公共场所卫生许可的后置审批",
        legal_basis="国发〔2015〕62号",
    )


def test_a_catalog_load_writes_one_snapshot_per_entity_it_changed_and_a_second_load_none(
    scratch_sessions: sessionmaker[Session],
) -> None:
    province = load_sample_province()
    rows = outbox_rows(scratch_sessions)

    def keys(entity: PublishedEntity) -> list[str]:
        return sorted(row.key for row in rows if row.topic == entity.topic)

    assert keys(DEPARTMENTS) == sorted(d.code for d in province.departments)
    assert keys(APPROVAL_ITEMS) == sorted(i.code for i in province.approval_items)
    assert keys(MEASURES) == sorted(m.code for m in province.measures)
    assert keys(LIST_TYPES) == sorted(t.code for t in province.list_types)
    assert keys(SUBSCRIPTIONS) == []

    with transaction(scratch_sessions) as session:
        service.load_catalog(session, LOADER)

    assert len(outbox_rows(scratch_sessions)) == len(rows)


def test_a_change_rolled_back_writes_no_outbox_row_and_the_same_change_committed_does(
    scratch_sessions: sessionmaker[Session],
) -> None:
    def request_and_onboard(session: Session) -> tuple[int, str]:
        subscription = request_registrations(session)
        return subscription.id, new_department(session)

    before = outbox_rows(scratch_sessions)

    with (
        pytest.raises(RuntimeError, match="changed my mind"),
        transaction(scratch_sessions) as session,
    ):
        request_and_onboard(session)
        session.flush()
        raise RuntimeError("changed my mind")

    assert [row.id for row in outbox_rows(scratch_sessions)] == [row.id for row in before]

    with transaction(scratch_sessions) as session:
        subscription_id, department = request_and_onboard(session)

    written = outbox_rows(scratch_sessions)[len(before) :]
    assert [(row.topic, row.key) for row in written] == [
        (DEPARTMENTS.topic, department),
        (SUBSCRIPTIONS.topic, str(subscription_id)),
    ]
    assert written[1].payload is not None and written[1].payload["status"] == "REQUESTED"


def test_a_snapshot_follows_what_it_shows_renamed_departments_matters_and_dropped_routes(
    scratch_sessions: sessionmaker[Session],
) -> None:
    """An approval item shows its departments' names and a measure its matters' names, so
    renaming those republishes every item and measure that shows them."""
    province = load_sample_province()
    renamed = province.department("hz-xh-amr").model_copy(update={"name": "杭州市西湖区市场监管局"})
    food_routes = {
        division: department
        for division, department in province.routing["SPJYXK"].items()
        if division != "330106"
    }
    changed = province.model_copy(
        update={
            "departments": tuple(
                renamed if d.code == renamed.code else d for d in province.departments
            ),
            "routing": {**province.routing, "SPJYXK": food_routes},
            "matter_types": {**province.matter_types, "GOVERNMENT_PROCUREMENT": "政府采购活动"},
        }
    )
    seen = len(outbox_rows(scratch_sessions))

    with transaction(scratch_sessions) as session:
        service.load_catalog(session, LOADER, changed)

    written = outbox_rows(scratch_sessions)[seen:]
    routed_to_xihu = {
        item for item, routes in province.routing.items() if "hz-xh-amr" in routes.values()
    }
    restricting_procurement = {
        measure.code for measure in province.measures if "GOVERNMENT_PROCUREMENT" in measure.matters
    }
    assert restricting_procurement and "SPJYXK" in routed_to_xihu
    assert {(row.topic, row.key) for row in written} == {
        (DEPARTMENTS.topic, "hz-xh-amr"),
        *((APPROVAL_ITEMS.topic, item) for item in routed_to_xihu),
        *((MEASURES.topic, measure) for measure in restricting_procurement),
    }
    snapshots = {(row.topic, row.key): row.payload for row in written}
    food = snapshots[APPROVAL_ITEMS.topic, "SPJYXK"]
    assert food is not None and "330106" not in {r["division_code"] for r in food["routes"]}
    for item in routed_to_xihu - {"SPJYXK"}:
        payload = snapshots[APPROVAL_ITEMS.topic, item]
        assert payload is not None
        [xihu] = [r for r in payload["routes"] if r["department_code"] == "hz-xh-amr"]
        assert xihu["department_name"] == "杭州市西湖区市场监管局"
    for measure in restricting_procurement:
        payload = snapshots[MEASURES.topic, measure]
        assert payload is not None
        assert {"code": "GOVERNMENT_PROCUREMENT", "name": "政府采购活动"} in payload["matter_types"]


# -- the topics -----------------------------------------------------------------------------


def test_after_a_catalog_load_and_a_relay_run_a_reader_holds_every_approval_item_with_its_routes(
    relay: OutboxRelay, kafka: KafkaClients, ends_before_catalog: dict[str, dict[int, int]]
) -> None:
    province = load_sample_province()
    records = read_from_beginning(kafka, REGISTRY_APPROVAL_ITEMS.name)
    items = latest_per_key(records)

    # This run published every item (the topic also holds earlier runs' records).
    assert {item.code for item in province.approval_items} <= published_since(
        records, ends_before_catalog[REGISTRY_APPROVAL_ITEMS.name]
    )

    for item in province.approval_items:
        record = items[item.code]
        assert record is not None, item.code
        routes = {
            route["division_code"]: (route["department_code"], route["department_uscc"])
            for route in record["routes"]
        }
        assert routes == {
            division: (department, province.department(department).uscc)
            for division, department in province.routing.get(item.code, {}).items()
        }, item.code
        assert (record["name"], record["legal_basis"]) == (item.name, item.legal_basis)
        assert record["scope_wordings"] == list(item.match.scope)
        assert record["industry_codes"] == list(item.match.industry)
    # 食品经营许可 in 西湖区 goes to the 西湖区 regulator; 农药经营许可 in 上城区 nowhere
    # (分流失败).
    food, pesticide = items["SPJYXK"], items["NYJYXK"]
    assert food is not None and pesticide is not None
    in_xihu = {route["division_code"]: route for route in food["routes"]}["330106"]
    assert (in_xihu["department_code"], in_xihu["department_name"]) == (
        "hz-xh-amr",
        "杭州市西湖区市场监督管理局",
    )
    assert "330102" not in {route["division_code"] for route in pesticide["routes"]}


def test_readers_of_the_other_catalog_topics_hold_every_department_measure_and_list_type(
    relay: OutboxRelay, kafka: KafkaClients, ends_before_catalog: dict[str, dict[int, int]]
) -> None:
    province = load_sample_province()
    read = {
        spec.name: read_from_beginning(kafka, spec.name)
        for spec in (REGISTRY_DEPARTMENTS, REGISTRY_MEASURES, REGISTRY_LIST_TYPES)
    }
    for topic, seeded in (
        (REGISTRY_DEPARTMENTS.name, {d.code for d in province.departments}),
        (REGISTRY_MEASURES.name, {m.code for m in province.measures}),
        (REGISTRY_LIST_TYPES.name, {t.code for t in province.list_types}),
    ):
        assert seeded <= published_since(read[topic], ends_before_catalog[topic]), topic
    departments = latest_per_key(read[REGISTRY_DEPARTMENTS.name])
    measures = latest_per_key(read[REGISTRY_MEASURES.name])
    list_types = latest_per_key(read[REGISTRY_LIST_TYPES.name])

    for department in province.departments:
        record = departments[department.code]
        assert record is not None
        assert (record["uscc"], record["name"], record["level"]) == (
            department.uscc,
            department.name,
            department.level.value.upper(),
        )
    for measure in province.measures:
        record = measures[measure.code]
        assert record is not None
        assert record["list_types"] == list(measure.list_types)
        assert [matter["code"] for matter in record["matter_types"]] == list(measure.matters)
        assert all(matter["name"] for matter in record["matter_types"])
        assert (record["feedback_required"], record["feedback_days"]) == (
            measure.feedback_required,
            measure.feedback_days,
        )
    for list_type in province.list_types:
        record = list_types[list_type.code]
        assert record is not None
        assert (record["name"], record["duration_years"]) == (
            list_type.name,
            list_type.duration_years,
        )


def test_approving_then_revoking_a_subscription_publishes_approved_then_revoked_as_the_latest(
    sessions: sessionmaker[Session], relay: OutboxRelay, kafka: KafkaClients
) -> None:
    with transaction(sessions) as session:
        subscription_id = request_registrations(session).id
    with transaction(sessions) as session:
        service.approve_subscription(session, REGISTRATION_OWNER, subscription_id)
    relay.publish_pending()
    with transaction(sessions) as session:
        service.revoke_subscription(session, REGISTRATION_OWNER, subscription_id, reason="职责调整")
    publish_everything(relay)

    key = str(subscription_id)
    records = [
        record.value
        for record in read_from_beginning(kafka, REGISTRY_SUBSCRIPTIONS.name)
        if record.key == key
    ]
    assert [value["status"] for value in records if value] == [
        "REQUESTED",
        "APPROVED",
        "REVOKED",
    ]
    revoked = latest_per_key(read_from_beginning(kafka, REGISTRY_SUBSCRIPTIONS.name))[key]
    assert revoked is not None
    assert revoked["status"] == "REVOKED"
    assert (revoked["subscription_id"], revoked["subscriber_code"], revoked["resource_code"]) == (
        subscription_id,
        "hz-health",
        "registration",
    )
    assert revoked["topic"] == "market.registrations"
    assert revoked["decided_at"] is not None and revoked["valid_until"] is None


def test_publishing_twice_does_not_duplicate_the_latest_state(
    sessions: sessionmaker[Session], relay: OutboxRelay, kafka: KafkaClients
) -> None:
    province = load_sample_province()
    ours = {item.code for item in province.approval_items}

    def our_items() -> dict[str, dict[str, Any] | None]:
        table = latest_per_key(read_from_beginning(kafka, REGISTRY_APPROVAL_ITEMS.name))
        return {code: value for code, value in table.items() if code in ours}

    before = our_items()
    published_before = len(read_from_beginning(kafka, REGISTRY_APPROVAL_ITEMS.name))

    assert relay.publish_pending() == 0  # nothing pending: nothing sent again
    assert len(read_from_beginning(kafka, REGISTRY_APPROVAL_ITEMS.name)) == published_before

    # A relay that died after the broker's acknowledgement, before marking its rows,
    # publishes them again: the same snapshots under the same keys.
    with transaction(sessions) as session:
        session.execute(
            sa.update(OutboxEntry)
            .where(OutboxEntry.topic == APPROVAL_ITEMS.topic)
            .values(published_at=None)
        )
    assert publish_everything(relay) >= len(ours)
    assert our_items() == before

    # So does a republication of everything (a new topic, a restored database).
    assert relay.republish_all() >= len(ours) + len(province.departments)
    publish_everything(relay)
    assert our_items() == before


def test_the_relay_publishes_as_svc_registry_which_alone_may_write_the_registry_topics(
    sessions: sessionmaker[Session],
    relay: OutboxRelay,
    kafka: KafkaClients,
    stack_settings: Settings,
    secured: None,
) -> None:
    assert relay.clients.principal == "svc-registry"
    with transaction(sessions) as session:
        code = new_department(session)

    assert publish_everything(relay) == 1

    # A stream processor reads the registry's topics under its own principal.
    streams = KafkaClients(stack_settings, "streams")
    department = latest_per_key(read_from_beginning(streams, REGISTRY_DEPARTMENTS.name))[code]
    assert department is not None and department["name"] == "杭州市西湖区发布测试局"

    # No other service may write them.
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error)

    producer = KafkaClients(stack_settings, "connectors").producer()
    producer.produce(
        REGISTRY_DEPARTMENTS.name, key=code.encode(), value=None, on_delivery=delivered
    )
    producer.flush(15)
    assert [error.code() for error in failures] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert latest_per_key(read_from_beginning(kafka, REGISTRY_DEPARTMENTS.name))[code] is not None


def test_xietong_registry_publish_sends_what_xietong_registry_outbox_shows_pending(
    publishing_url: str,
    sessions: sessionmaker[Session],
    relay: OutboxRelay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: Settings(database_url_env=publishing_url))
    runner = CliRunner()
    with transaction(sessions) as session:
        new_department(session)

    pending = runner.invoke(cli.app, ["registry", "outbox", "--json"])
    published = runner.invoke(cli.app, ["registry", "publish"])
    after = runner.invoke(cli.app, ["registry", "outbox", "--json"])

    assert pending.exit_code == 0, pending.output
    assert [(p["topic"], p["pending"]) for p in json.loads(pending.output)] == [
        (REGISTRY_DEPARTMENTS.name, 1)
    ]
    assert published.exit_code == 0, published.output
    assert "1 records published" in published.output
    assert json.loads(after.output) == []
