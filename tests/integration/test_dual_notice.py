"""双告知, against the real broker: a worker of ``xietong streams dual-notice`` runs as its
own process, the sample province's catalog is on ``registry.approval-items``, and the
departments act as themselves, each writing to its own inbound topic.

Deadlines run on event time: the worker's claim and licence periods are one hour here,
so a registration dated one hour less two seconds ago is overdue two seconds from now.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from registry.grants import inbound_topic, inbox_topic
from schemas import REGISTRATION
from streams.dual_notice.rules import APP_NAME, push_id, routing_id
from tests.dual_notice_records import action, key_of, licence, registration
from tests.kafka_helpers import ReadMessage, TopicWindow, eventually
from tests.stream_worker import (
    Onboarding,
    Platform,
    SteadyFeed,
    Watch,
    Worker,
    barrier,
    committed_offsets,
    publish_catalog,
    running,
    streams_group,
    until_group_empty,
    until_ids,
)
from xietong import topics
from xietong.clock import business_clock, millis
from xietong.kafka import KafkaClients
from xietong.settings import Settings

pytestmark = pytest.mark.usefixtures("secured")

HOUR_MS = 3600 * 1000
#: The departments these tests act as: 西湖区 (330106) and 上城区 (330102).
DEPARTMENTS = (
    "hz-xh-amr",  # 西湖区市场监管: registers 330106 entities; approves 食品经营许可
    "hz-xh-transport",  # 西湖区交通运输: 道路货物运输经营许可
    "hz-xh-tobacco",  # 西湖区烟草专卖: 烟草专卖零售许可
    "hz-xh-em",  # 西湖区应急管理: not the department of any push here
    "hz-sc-amr",  # 上城区市场监管: registers 330102 entities
    "hz-agri",  # 杭州市农业农村局: where 上城区's 农药经营许可 is routed by hand
    "hz-yh-transport",  # 余杭区交通运输: where a push moves with its entity's 住所
)
#: Onboarded during a test: what waited for it must reach its new inbox.
LATE_DEPARTMENT = "hz-xh-culture"  # 西湖区文化和旅游: 娱乐场所经营许可
ROAD_FREIGHT = "道路货物运输（不含危险货物）"


# -- the stack: catalog, departments, worker ---------------------------------------------------


@pytest.fixture(scope="module")
def catalog_on_the_topic(
    registry_databases: Callable[[], str], stack_settings: Settings, kafka: KafkaClients
) -> None:
    """The sample catalog and departments published by the registry's own relay."""
    publish_catalog(registry_databases(), stack_settings, kafka)


@pytest.fixture(scope="module")
def departments(kafka: KafkaClients, stack_settings: Settings) -> Iterator[Onboarding]:
    """The departments these tests act as, onboarded; LATE_DEPARTMENT not (yet)."""
    onboarding = Onboarding(kafka, stack_settings)
    onboarding.remove_topics(LATE_DEPARTMENT)  # left by an interrupted run
    for code in DEPARTMENTS:
        onboarding.onboard(code)
    yield onboarding
    onboarding.offboard_all()
    onboarding.remove_topics(LATE_DEPARTMENT)


@pytest.fixture(scope="module")
def worker(
    catalog_on_the_topic: None,
    departments: Onboarding,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    log = tmp_path_factory.mktemp("dual-notice") / "worker.log"
    with running("dual-notice", log, CLAIM_PERIOD="PT1H", LICENCE_PERIOD="PT1H") as worker:
        yield worker


# -- sending and reading ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(worker: Worker, kafka: KafkaClients, departments: Onboarding) -> Platform:
    return Platform(kafka, departments)


def watch(kafka: KafkaClients, topic: str, key: str) -> Watch:
    return Watch(kafka, topic, key)


def latest(records: list[dict[str, Any]], key: str = "push_id") -> dict[str, dict[str, Any]]:
    """The latest record of each id, as a reader of the topic holds them."""
    by_id: dict[str, dict[str, Any]] = {}
    for record in records:
        known = by_id.get(record[key])
        if known is None or record.get("version", 0) >= known.get("version", 0):
            by_id[record[key]] = record
    return by_id


def new_uscc(division: str = "330106") -> str:
    from xietong.uscc import make_uscc

    return make_uscc("91", division)


def minus_period_plus(seconds: float) -> int:
    """An event time whose one-hour period ends ``seconds`` from now."""
    return business_clock().now_ms() - HOUR_MS + int(seconds * 1000)


def road_freight(platform: Platform, kafka: KafkaClients, **kwargs: Any) -> tuple[dict, dict]:
    """A 设立 in 西湖区 with 道路货物运输; its registration and its push."""
    record = registration("330106", (ROAD_FREIGHT,), industry="G5431", uscc=new_uscc(), **kwargs)
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, record["uscc"])
    platform.register(record)
    [push] = pushes.until(lambda found: len(found) >= 1)
    return record, push


# Barriers: once one has returned, everything the records sent about the entity so far
# made is on the topics (tests/stream_worker.py says why).


def after_registrations(platform: Platform, kafka: KafkaClients, uscc: str) -> None:
    """What the registrations of ``uscc`` made: a road-freight 设立 of an entity in the same
    partition reaches the transport department's inbox after it."""
    barrier(
        kafka,
        uscc,
        lambda mate: platform.register(
            registration("330106", (ROAD_FREIGHT,), industry="G5431", uscc=mate)
        ),
        inbox_topic("hz-xh-transport"),
        division="330106",
    )


def after_actions(platform: Platform, kafka: KafkaClients, uscc: str, department: str) -> None:
    """What ``department``'s actions about ``uscc`` made: its claim of a push that does not
    exist, about an entity in the same partition, is refused after them."""
    barrier(
        kafka,
        uscc,
        lambda mate: platform.act(department, action(mate, f"no-push-{mate}", "CLAIM")),
        topics.DUAL_NOTICE_REJECTED_ACTIONS.name,
        made=lambda sent, m: m.value["action"]["action_id"] == sent["action_id"],
    )


def after_ticks(platform: Platform, kafka: KafkaClients, uscc: str) -> None:
    """Several more ticks of the deadline timer: a push due a second and a half from now
    is escalated by a later tick than any that has passed."""
    barrier(
        kafka,
        uscc,
        lambda mate: platform.register(
            registration(
                "330106",
                (ROAD_FREIGHT,),
                industry="G5431",
                uscc=mate,
                event_time_ms=minus_period_plus(1.5),
            )
        ),
        topics.DUAL_NOTICE_ALERTS.name,
        division="330106",
    )


# -- 告知审批部门 and 告知申请人 -----------------------------------------------------------------


def test_a_330106_establishment_with_road_freight_pushes_once_to_its_transport_department(
    platform: Platform, kafka: KafkaClients
) -> None:
    """A 设立 in division 330106 whose scope includes 道路货物运输 produces exactly one push
    to that division's transport department and one applicant notice naming
    道路货物运输经营许可."""
    record = registration("330106", (ROAD_FREIGHT,), industry="G5431", uscc=new_uscc())
    uscc = record["uscc"]
    inbox = watch(kafka, inbox_topic("hz-xh-transport"), uscc)
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    notices = watch(kafka, topics.DUAL_NOTICE_APPLICANT_NOTICES.name, uscc)

    platform.register(record)

    [delivered] = inbox.until(lambda found: len(found) >= 1)
    [notice] = notices.until(lambda found: len(found) >= 1)
    after_registrations(platform, kafka, uscc)
    assert len(pushes.records()) == 1 and len(inbox.records()) == 1
    assert delivered["push_id"] == push_id(key_of(record), "DLHWYSXK", "hz-xh-transport")
    assert delivered["state"] == "PUSHED" and delivered["routing"] == "AUTO"
    assert delivered["department"]["name"] == "杭州市西湖区交通运输局"
    assert delivered["item"]["name"] == "道路货物运输经营许可"
    assert set(delivered["matched_by"]) == {f"经营范围: {ROAD_FREIGHT}", "行业代码: G5431"}
    claim_window = delivered["claim_deadline"] - delivered["entity"]["registered_at"]
    assert claim_window.total_seconds() == 3600
    [item] = notice["items"]
    assert item["item"]["name"] == "道路货物运输经营许可"
    assert item["item"]["legal_basis"] == "《中华人民共和国道路运输条例》"
    assert item["department"]["code"] == "hz-xh-transport"
    assert item["push_id"] == delivered["push_id"]


def test_a_registration_whose_scope_needs_no_permit_pushes_nothing_until_a_change_adds_one(
    platform: Platform, kafka: KafkaClients
) -> None:
    uscc = new_uscc()
    general_only = registration(
        "330106", (), ("食品销售（仅销售预包装食品）", "日用百货销售"), industry="F5211", uscc=uscc
    )
    change = registration("330106", (ROAD_FREIGHT,), industry="F5211", uscc=uscc, kind="CHANGE")
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    notices = watch(kafka, topics.DUAL_NOTICE_APPLICANT_NOTICES.name, uscc)

    platform.register(general_only)
    platform.register(change)  # same entity, same partition: read after the first

    [push] = pushes.until(lambda found: len(found) >= 1)
    [notice] = notices.until(lambda found: len(found) >= 1)
    assert push["entity"]["registration_event_id"] == change["envelope"]["event_id"]
    assert push["matched_by"] == [f"经营范围: {ROAD_FREIGHT}"]
    assert notice["entity"]["event_kind"] == "CHANGE"


def test_a_change_that_adds_permit_scope_pushes_only_the_item_it_adds(
    platform: Platform, kafka: KafkaClients
) -> None:
    established, _ = road_freight(platform, kafka)
    uscc = established["uscc"]
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    change = registration(
        "330106", (ROAD_FREIGHT, "烟草制品零售"), industry="G5431", uscc=uscc, kind="CHANGE"
    )

    platform.register(change)

    [push] = pushes.until(lambda found: len(found) >= 1)
    after_registrations(platform, kafka, uscc)
    assert len(pushes.records()) == 1
    assert push["item"]["code"] == "YCZMLSXK" and push["department"]["code"] == "hz-xh-tobacco"
    assert push["entity"]["event_kind"] == "CHANGE"


def test_the_same_registration_sent_again_sends_nothing_new(
    platform: Platform, kafka: KafkaClients
) -> None:
    """The same event again (same event id), at a new offset: no second push, and since
    issue 13 no second copy of the push in the inbox (it had one per send) nor on
    dualnotice.pushes (where this test saw the push re-sent, version 1, until then)."""
    record, _ = road_freight(platform, kafka)
    uscc = record["uscc"]
    after_registrations(platform, kafka, uscc)  # all the first one sent is on the topics
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    inbox = watch(kafka, inbox_topic("hz-xh-transport"), uscc)
    notices = watch(kafka, topics.DUAL_NOTICE_APPLICANT_NOTICES.name, uscc)

    platform.register(record)

    after_registrations(platform, kafka, uscc)
    assert pushes.records() == [] and inbox.records() == [] and notices.records() == []


# -- 分流失败 and 手动分流 ------------------------------------------------------------------------


def test_an_item_with_no_department_in_the_division_waits_for_the_registrar_to_route_it_by_hand(
    platform: Platform, kafka: KafkaClients
) -> None:
    record = registration(
        "330102", ("农药零售",), ("肥料销售",), industry="F5167", uscc=new_uscc("330102")
    )
    uscc, event_id = record["uscc"], key_of(record)
    queue = watch(kafka, topics.DUAL_NOTICE_MANUAL_ROUTING.name, uscc)
    notices = watch(kafka, topics.DUAL_NOTICE_APPLICANT_NOTICES.name, uscc)
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)

    platform.register(record)

    [failure] = queue.until(lambda found: len(found) >= 1)
    [notice] = notices.until(lambda found: len(found) >= 1)
    assert failure["routing_id"] == routing_id(event_id, "NYJYXK") and failure["state"] == "OPEN"
    assert (
        failure["item"]["name"] == "农药经营许可" and failure["entity"]["division_code"] == "330102"
    )
    assert notice["items"][0]["department"] is None
    assert notice["items"][0]["routing_id"] == failure["routing_id"]
    after_registrations(platform, kafka, uscc)
    assert pushes.records() == []

    inbox = watch(kafka, inbox_topic("hz-agri"), uscc)
    platform.act("hz-sc-amr", action(uscc, failure["routing_id"], "ROUTE", target="hz-agri"))

    [routed] = inbox.until(lambda found: len(found) >= 1)
    assert routed["routing"] == "MANUAL" and routed["state"] == "PUSHED"
    assert routed["push_id"] == push_id(event_id, "NYJYXK", "hz-agri")
    final = queue.until(lambda found: found[-1]["state"] == "ROUTED")[-1]
    assert final["routed_to"]["code"] == "hz-agri" and final["routed_push_id"] == routed["push_id"]


def test_only_the_registration_authority_routes_by_hand(
    platform: Platform, kafka: KafkaClients
) -> None:
    record = registration("330102", ("农药零售",), industry="F5167", uscc=new_uscc("330102"))
    queue = watch(kafka, topics.DUAL_NOTICE_MANUAL_ROUTING.name, record["uscc"])
    rejected = watch(kafka, topics.DUAL_NOTICE_REJECTED_ACTIONS.name, "hz-agri")
    platform.register(record)
    [failure] = queue.until(lambda found: len(found) >= 1)

    platform.act(
        "hz-agri", action(record["uscc"], failure["routing_id"], "ROUTE", target="hz-agri")
    )

    [refusal] = rejected.until(lambda found: len(found) >= 1)
    assert "only the registration authority hz-sc-amr" in refusal["reason"]
    assert queue.records()[-1]["state"] == "OPEN"


def claimable_list(departments: Onboarding, department: str) -> list[tuple[str, Any]]:
    """The claimable list ``dualnotice.claimable`` read whole, as ``department`` itself
    (its own principal and consumer group): (routing id, record, or None for a tombstone)."""
    clients = departments.clients[department]
    name = topics.DUAL_NOTICE_CLAIMABLE.name
    consumer = clients.consumer(
        group_id=f"{department}.claimable-{uuid.uuid4().hex}", **{"enable.partition.eof": True}
    )
    deserialize = clients.avro_deserializer()
    found: list[tuple[str, Any]] = []
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in partitions}  # fmt: skip
        wanted = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in wanted])
        while wanted:
            message = consumer.poll(5.0)
            assert message is not None, f"{name}: stopped short as {department}"
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    wanted.discard(message.partition() or 0)
                    continue
                raise AssertionError(f"{name} as {department}: {message.error()}")
            raw = message.value()
            context = SerializationContext(name, MessageField.VALUE)
            found.append(((message.key() or b"").decode(), deserialize(raw, context)))
    finally:
        consumer.close()
    return found


def on_the_list(found: list[tuple[str, Any]], identity: str) -> Any:
    """What the list holds for ``identity`` now: its latest record, None once removed,
    or the string "absent" when it was never there."""
    records = [value for key, value in found if key == identity]
    return records[-1] if records else "absent"


def test_an_item_with_no_department_is_on_the_claimable_list_and_the_first_claim_takes_it(
    worker: Worker, platform: Platform, kafka: KafkaClients, departments: Onboarding
) -> None:
    """Issue 13 §7: a 上城区 农药经营 item has no department (分流失败). Any department finds
    it on the claimable list, reading the topic as itself; 杭州市农业农村局 claims it by its
    routing id and gets it as its push, CLAIMED; a later claim by 西湖区应急管理 is rejected
    naming the winner; the item leaves the list (a tombstone)."""
    record = registration("330102", ("农药零售",), industry="F5167", uscc=new_uscc("330102"))
    uscc, key = record["uscc"], key_of(record)
    identity = routing_id(key, "NYJYXK")
    queue = watch(kafka, topics.DUAL_NOTICE_MANUAL_ROUTING.name, uscc)
    inbox = watch(kafka, inbox_topic("hz-agri"), uscc)
    rejected = watch(kafka, topics.DUAL_NOTICE_REJECTED_ACTIONS.name, "hz-xh-em")
    platform.register(record)
    queue.until(lambda found: len(found) >= 1)

    listed = eventually(
        lambda: on_the_list(claimable_list(departments, "hz-xh-em"), identity),
        lambda held: isinstance(held, dict),
        30,
        lambda held: f"{identity} on the claimable list: {held}",
    )
    assert listed["state"] == "OPEN" and listed["item"]["code"] == "NYJYXK"
    assert listed["entity"]["uscc"] == uscc

    platform.act("hz-agri", action(uscc, identity, "CLAIM"))
    [claimed] = inbox.until(lambda found: len(found) >= 1)
    platform.act("hz-xh-em", action(uscc, identity, "CLAIM"))
    [refusal] = rejected.until(lambda found: len(found) >= 1)

    assert claimed["push_id"] == push_id(key, "NYJYXK", "hz-agri")
    assert (claimed["routing"], claimed["state"]) == ("CLAIMABLE", "CLAIMED")
    assert claimed["claimed_at"] == claimed["pushed_at"] and claimed["licence_deadline"]
    assert f"{identity} was claimed by hz-agri first" in refusal["reason"]
    final = queue.until(lambda found: found[-1]["state"] == "CLAIMED")[-1]
    assert final["routed_to"]["code"] == "hz-agri" and final["routed_push_id"] == claimed["push_id"]
    assert on_the_list(claimable_list(departments, "hz-agri"), identity) is None
    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5).text
    assert 'xietong_dual_notice_claimable_claims_total{outcome="claimed"}' in text
    assert 'xietong_dual_notice_claimable_claims_total{outcome="taken"}' in text


# -- department actions -------------------------------------------------------------------------


def test_the_department_claims_its_push(platform: Platform, kafka: KafkaClients) -> None:
    record, push = road_freight(platform, kafka)
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, record["uscc"])

    platform.act("hz-xh-transport", action(record["uscc"], push["push_id"], "CLAIM"))

    claimed = pushes.until(lambda found: len(found) >= 1)[-1]
    assert claimed["state"] == "CLAIMED" and claimed["version"] == 2
    assert claimed["changed_by"] == "hz-xh-transport" and claimed["claimed_at"] is not None
    assert claimed["licence_deadline"] is not None


def test_a_returned_push_cannot_be_claimed_and_the_claim_is_recorded_with_its_reason(
    platform: Platform, kafka: KafkaClients
) -> None:
    record, push = road_freight(platform, kafka)
    uscc = record["uscc"]
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    rejected = watch(kafka, topics.DUAL_NOTICE_REJECTED_ACTIONS.name, "hz-xh-transport")

    platform.act(
        "hz-xh-transport",
        action(uscc, push["push_id"], "RETURN", reason="ADDRESS_NOT_IN_JURISDICTION"),
    )
    returned = pushes.until(lambda found: len(found) >= 1)[-1]
    claim = platform.act("hz-xh-transport", action(uscc, push["push_id"], "CLAIM"))

    refusal = rejected.until(
        lambda found: any(r["action"]["action_id"] == claim["action_id"] for r in found)
    )[-1]
    assert returned["state"] == "RETURNED"
    assert returned["return_reason"] == "ADDRESS_NOT_IN_JURISDICTION"
    assert refusal["push_state"] == "RETURNED"
    assert f"cannot CLAIM push {push['push_id']}: it is RETURNED" in refusal["reason"]
    after_actions(platform, kafka, uscc, "hz-xh-transport")
    assert [p["state"] for p in pushes.records()] == ["RETURNED"]


def test_a_return_needs_one_of_the_reasons_or_a_text(
    platform: Platform, kafka: KafkaClients
) -> None:
    record, push = road_freight(platform, kafka)
    rejected = watch(kafka, topics.DUAL_NOTICE_REJECTED_ACTIONS.name, "hz-xh-transport")
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, record["uscc"])

    bare = platform.act(
        "hz-xh-transport", action(record["uscc"], push["push_id"], "RETURN", reason="OTHER")
    )
    rejected.until(lambda found: any(r["action"]["action_id"] == bare["action_id"] for r in found))
    platform.act(
        "hz-xh-transport",
        action(record["uscc"], push["push_id"], "RETURN", reason="OTHER", text="已迁出本区"),
    )

    returned = pushes.until(lambda found: len(found) >= 1)[-1]
    assert returned["state"] == "RETURNED" and returned["reason_text"] == "已迁出本区"


def test_a_department_stops_a_push_whose_item_is_not_involved(
    platform: Platform, kafka: KafkaClients
) -> None:
    record, push = road_freight(platform, kafka)
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, record["uscc"])

    platform.act(
        "hz-xh-transport", action(record["uscc"], push["push_id"], "STOP", text="仅从事仓储")
    )

    stopped = pushes.until(lambda found: len(found) >= 1)[-1]
    assert stopped["state"] == "STOPPED" and stopped["reason_text"] == "仅从事仓储"


def test_an_action_on_another_departments_push_is_rejected_and_changes_nothing(
    platform: Platform, kafka: KafkaClients
) -> None:
    record, push = road_freight(platform, kafka)
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, record["uscc"])
    rejected = watch(kafka, topics.DUAL_NOTICE_REJECTED_ACTIONS.name, "hz-xh-em")

    platform.act("hz-xh-em", action(record["uscc"], push["push_id"], "CLAIM"))

    [refusal] = rejected.until(lambda found: len(found) >= 1)
    assert refusal["department_code"] == "hz-xh-em"
    assert refusal["inbound_topic"] == inbound_topic("hz-xh-em")
    assert "only the push's department hz-xh-transport may" in refusal["reason"]
    after_actions(platform, kafka, record["uscc"], "hz-xh-em")
    assert pushes.records() == []


def test_the_registrar_reassigns_a_returned_push_and_the_new_department_gets_it(
    platform: Platform, kafka: KafkaClients
) -> None:
    record, push = road_freight(platform, kafka)
    uscc = record["uscc"]
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    inbox = watch(kafka, inbox_topic("hz-xh-em"), uscc)
    platform.act("hz-xh-transport", action(uscc, push["push_id"], "RETURN", reason="NO_SUCH_ITEM"))
    pushes.until(lambda found: any(p["state"] == "RETURNED" for p in found))
    rejected = watch(kafka, topics.DUAL_NOTICE_REJECTED_ACTIONS.name, "hz-xh-transport")

    platform.act("hz-xh-transport", action(uscc, push["push_id"], "REASSIGN", target="hz-xh-em"))
    [refusal] = rejected.until(lambda found: len(found) >= 1)
    platform.act("hz-xh-amr", action(uscc, push["push_id"], "REASSIGN", target="hz-xh-em"))

    [new] = inbox.until(lambda found: len(found) >= 1)
    states = latest(pushes.until(lambda found: len(latest(found)) == 2))
    assert "only the registration authority hz-xh-amr may" in refusal["reason"]
    assert states[push["push_id"]]["state"] == "REASSIGNED"
    assert states[push["push_id"]]["reassigned_to_push_id"] == new["push_id"]
    assert new["routing"] == "REASSIGNED" and new["reassigned_from_push_id"] == push["push_id"]
    assert new["department"]["code"] == "hz-xh-em" and new["state"] == "PUSHED"


# -- deadlines, licences, 注销 ------------------------------------------------------------------


def test_a_push_not_claimed_within_the_period_becomes_overdue_and_is_escalated_once(
    platform: Platform, kafka: KafkaClients
) -> None:
    record = registration(
        "330106",
        (ROAD_FREIGHT,),
        industry="G5431",
        uscc=new_uscc(),
        event_time_ms=minus_period_plus(2),
    )
    uscc = record["uscc"]
    alerts = watch(kafka, topics.DUAL_NOTICE_ALERTS.name, uscc)
    department_inbox = watch(kafka, inbox_topic("hz-xh-transport"), uscc)
    registrar_inbox = watch(kafka, inbox_topic("hz-xh-amr"), uscc)
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)

    platform.register(record)

    [alert] = alerts.until(lambda found: len(found) >= 1, timeout=20)
    registrar_inbox.until(lambda found: len(found) >= 1)
    after_ticks(platform, kafka, uscc)  # no second escalation
    assert alert["kind"] == "OVERDUE" and alert["recipients"] == ["hz-xh-transport", "hz-xh-amr"]
    assert len(alerts.records()) == 1
    assert [m["alert_id"] for m in registrar_inbox.records()] == [alert["alert_id"]]
    kinds = [("alert_id" in m, m.get("state")) for m in department_inbox.records()]
    # Since issue 13 the department is told of the push's new state too, before the alert.
    assert kinds == [(False, "PUSHED"), (False, "OVERDUE"), (True, None)]
    overdue = latest(pushes.records())[alert["push_id"]]
    assert overdue["state"] == "OVERDUE" and overdue["escalated_at"] is not None


def test_a_push_claimed_after_its_deadline_is_claimed(
    platform: Platform, kafka: KafkaClients
) -> None:
    record = registration(
        "330106",
        (ROAD_FREIGHT,),
        industry="G5431",
        uscc=new_uscc(),
        event_time_ms=minus_period_plus(1),
    )
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, record["uscc"])
    platform.register(record)
    overdue = pushes.until(lambda found: any(p["state"] == "OVERDUE" for p in found), timeout=20)

    platform.act("hz-xh-transport", action(record["uscc"], overdue[0]["push_id"], "CLAIM"))

    assert pushes.until(lambda found: found[-1]["state"] == "CLAIMED")[-1]["escalated_at"]


def test_a_claimed_push_without_a_licence_after_the_period_raises_an_unlicensed_trading_alert(
    platform: Platform, kafka: KafkaClients
) -> None:
    """Until issue 13 the claim here was dated an hour before its push's registration; an
    action dated before its push is rejected now, so the registration is dated an hour
    ago (the push is escalated first) and the claim after it."""
    record = registration(
        "330106",
        (ROAD_FREIGHT,),
        industry="G5431",
        uscc=new_uscc(),
        event_time_ms=minus_period_plus(1),
    )
    uscc = record["uscc"]
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    alerts = watch(kafka, topics.DUAL_NOTICE_ALERTS.name, uscc)
    inbox = watch(kafka, inbox_topic("hz-xh-transport"), uscc)
    platform.register(record)
    overdue = pushes.until(lambda found: any(p["state"] == "OVERDUE" for p in found), timeout=20)

    platform.act(
        "hz-xh-transport",
        action(uscc, overdue[0]["push_id"], "CLAIM", acted_at_ms=minus_period_plus(2)),
    )

    alerts.until(lambda found: any(a["kind"] == "UNLICENSED_TRADING" for a in found), timeout=20)
    after_ticks(platform, kafka, uscc)
    escalation, alert = alerts.records()
    assert escalation["kind"] == "OVERDUE"
    assert alert["kind"] == "UNLICENSED_TRADING" and alert["recipients"] == ["hz-xh-transport"]
    assert "无证经营" in alert["message"]
    told = [m["alert_id"] for m in inbox.records() if "alert_id" in m]
    assert told == [escalation["alert_id"], alert["alert_id"]]


def test_a_claim_dated_2020_on_a_push_of_today_is_rejected_and_no_alert_follows(
    platform: Platform, kafka: KafkaClients
) -> None:
    """Issue 13's repro: the claim was accepted, its licence deadline fell in 2020, and the
    无证经营 alert fired on the next tick."""
    from datetime import datetime

    record, push = road_freight(platform, kafka)
    uscc = record["uscc"]
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    alerts = watch(kafka, topics.DUAL_NOTICE_ALERTS.name, uscc)
    rejected = watch(kafka, topics.DUAL_NOTICE_REJECTED_ACTIONS.name, "hz-xh-transport")
    in_2020 = millis(datetime(2020, 3, 2, 10, 0, tzinfo=business_clock().zone))

    claim = platform.act(
        "hz-xh-transport", action(uscc, push["push_id"], "CLAIM", acted_at_ms=in_2020)
    )

    refusal = rejected.until(
        lambda found: any(r["action"]["action_id"] == claim["action_id"] for r in found)
    )[-1]
    assert refusal["push_state"] == "PUSHED"
    assert (
        f"CLAIM {claim['action_id']} has acted_at 2020-03-02T10:00:00+08:00" in (refusal["reason"])
    )
    assert f"before push {push['push_id']} was made" in refusal["reason"]
    after_ticks(platform, kafka, uscc)
    assert alerts.records() == [] and pushes.records() == []


def test_a_licence_for_the_item_fulfils_the_push(platform: Platform, kafka: KafkaClients) -> None:
    """The licence fulfils the claimed push, and the department's inbox is told (issue 13:
    it went on reading PUSHED, and the department's clerks went on acting on it); its own
    claim is not sent back to it."""
    record, push = road_freight(platform, kafka)
    uscc = record["uscc"]
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    inbox = watch(kafka, inbox_topic("hz-xh-transport"), uscc)
    platform.act("hz-xh-transport", action(uscc, push["push_id"], "CLAIM"))
    pushes.until(lambda found: any(p["state"] == "CLAIMED" for p in found))

    issued = platform.license(licence(uscc, "DLHWYSXK", "hz-xh-transport"))

    fulfilled = pushes.until(lambda found: found[-1]["state"] == "FULFILLED")[-1]
    assert fulfilled["fulfilled_by_licence"] == issued["licence_number"]
    assert fulfilled["changed_by"] == "hz-xh-transport"
    # The claim was sent before the fulfilment, on the same partition of the same inbox;
    # the push's first delivery may come after the watch began.
    told = inbox.until(lambda found: any(p["state"] == "FULFILLED" for p in found))
    assert [p for p in told if p["state"] != "PUSHED"] == [fulfilled]


def test_a_licence_that_expired_in_2020_does_not_fulfil_a_push_of_today(
    platform: Platform, kafka: KafkaClients
) -> None:
    """Issue 13 §2, through the broker: the expired licence is read first; the licence
    issued after it (the barrier, on the same partition) is the one that fulfils."""
    from datetime import date

    record, _ = road_freight(platform, kafka)
    uscc = record["uscc"]
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    platform.license(
        licence(
            uscc, "DLHWYSXK", "hz-xh-transport",
            decided_on=date(2016, 1, 2), valid_to=date(2020, 1, 1),
        )
    )  # fmt: skip

    issued = platform.license(licence(uscc, "DLHWYSXK", "hz-xh-transport"))

    fulfilled = pushes.until(lambda found: any(p["state"] == "FULFILLED" for p in found))
    assert [p["fulfilled_by_licence"] for p in fulfilled if p["state"] == "FULFILLED"] == [
        issued["licence_number"]
    ]


def test_a_cancellation_notifies_each_department_whose_licence_is_still_valid(
    platform: Platform, kafka: KafkaClients
) -> None:
    from datetime import timedelta

    record = registration(
        "330106", (ROAD_FREIGHT, "餐饮服务", "烟草制品零售"), industry="G5431", uscc=new_uscc()
    )
    uscc = record["uscc"]
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    platform.register(record)
    pushes.until(lambda found: len(latest(found)) == 3)
    food = platform.license(licence(uscc, "SPJYXK", "hz-xh-amr"))
    tobacco = platform.license(licence(uscc, "YCZMLSXK", "hz-xh-tobacco"))
    platform.license(licence(uscc, "DLHWYSXK", "hz-xh-transport", status="REVOKED"))
    expired = business_clock().today() - timedelta(days=1)
    platform.license(licence(uscc, "SPJYXK", "hz-xh-amr", valid_to=expired))
    pushes.until(lambda found: sum(p["state"] == "FULFILLED" for p in latest(found).values()) == 2)
    notices = watch(kafka, topics.DUAL_NOTICE_CLOSURE_NOTICES.name, uscc)
    tobacco_inbox = watch(kafka, inbox_topic("hz-xh-tobacco"), uscc)

    platform.register(registration("330106", kind="CANCEL", uscc=uscc))

    told = notices.until(lambda found: len(found) >= 2)
    after_registrations(platform, kafka, uscc)
    by_department = {n["department"]["code"]: n for n in notices.records()}
    assert set(by_department) == {"hz-xh-amr", "hz-xh-tobacco"}
    assert len(told) == 2
    assert [lic["licence_number"] for lic in by_department["hz-xh-amr"]["licences"]] == [
        food["licence_number"]
    ]
    assert by_department["hz-xh-tobacco"]["closure"] == "CANCELLED"
    assert [n["notice_id"] for n in tobacco_inbox.until(lambda found: len(found) >= 1)] == [
        by_department["hz-xh-tobacco"]["notice_id"]
    ]
    assert tobacco["licence_number"] in str(by_department["hz-xh-tobacco"]["licences"])
    road = latest(pushes.records())
    assert {p["item"]["code"]: p["state"] for p in road.values()}["DLHWYSXK"] == "CLOSED"


# -- the entity's own event order (issue 13 §3) --------------------------------------------

MINUTE_MS = 60_000


def xihu_event(uscc: str, minutes_ago: int, **kwargs: Any) -> dict[str, Any]:
    """A registration event of a 西湖区 road-freight entity, ``minutes_ago`` in the past."""
    division = kwargs.pop("division", "330106")
    permits = kwargs.pop("permits", (ROAD_FREIGHT,))
    moment = business_clock().now_ms() - minutes_ago * MINUTE_MS
    return registration(
        division, permits, industry="G5431", uscc=uscc, event_time_ms=moment, **kwargs
    )


def test_a_cancellation_read_before_its_establishment_leaves_no_open_push(
    platform: Platform, kafka: KafkaClients
) -> None:
    """Issue 13's repro: a 注销 read before its 设立 left an open PUSHED push for a cancelled
    entity. The push is CLOSED at once, on dualnotice.pushes, and reaches no inbox."""
    uscc = new_uscc()
    establish = xihu_event(uscc, 10)
    cancel = xihu_event(uscc, 5, kind="CANCEL", permits=())
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    inbox = watch(kafka, inbox_topic("hz-xh-transport"), uscc)

    platform.register(cancel)
    platform.register(establish)

    [push] = latest(pushes.until(lambda found: len(found) >= 1)).values()
    after_registrations(platform, kafka, uscc)
    assert push["state"] == "CLOSED" and push["version"] == 2
    assert push["push_id"] == push_id(key_of(establish), "DLHWYSXK", "hz-xh-transport")
    assert inbox.records() == []


def test_the_same_establishment_re_published_as_a_new_version_makes_no_second_push(
    platform: Platform, kafka: KafkaClients
) -> None:
    """Issue 13's repro: the same 设立 re-published (a new event id, version 2) made a second
    push. The push is the registration's (USCC, kind, day): one push, one copy in the inbox,
    updated to the later version's snapshot."""
    uscc = new_uscc()
    first = xihu_event(uscc, 10)
    second = {**first, "name": "杭州测试货运有限公司（更正）"}
    second["envelope"] = {**first["envelope"], "event_id": str(uuid4()), "record_version": "2"}
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    inbox = watch(kafka, inbox_topic("hz-xh-transport"), uscc)

    platform.register(first)
    platform.register(second)

    after_registrations(platform, kafka, uscc)
    [push] = latest(pushes.records()).values()
    assert push["entity"]["name"] == "杭州测试货运有限公司（更正）"
    assert [p["push_id"] for p in inbox.records()] == [push["push_id"]]


def test_a_move_to_another_division_re_routes_the_open_push_and_moving_out_closes_it(
    platform: Platform, kafka: KafkaClients
) -> None:
    """Issue 13's repro: a 住所 change to another division did not re-route open pushes,
    and 迁出 closed nothing. 西湖's transport department is told its push went to 余杭's,
    which gets it; the 迁出 closes it there, saying so."""
    uscc = new_uscc()
    establish = xihu_event(uscc, 10)
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    xihu = watch(kafka, inbox_topic("hz-xh-transport"), uscc)
    yuhang = watch(kafka, inbox_topic("hz-yh-transport"), uscc)
    platform.register(establish)
    [first] = xihu.until(lambda found: len(found) >= 1)

    platform.register(xihu_event(uscc, 5, kind="CHANGE", division="330110"))

    moved = xihu.until(lambda found: len(found) >= 2)[-1]
    [pushed] = yuhang.until(lambda found: len(found) >= 1)
    assert moved["push_id"] == first["push_id"] and moved["state"] == "REASSIGNED"
    assert moved["reassigned_to_push_id"] == pushed["push_id"]
    assert pushed["state"] == "PUSHED" and pushed["entity"]["division_code"] == "330110"

    platform.register(xihu_event(uscc, 1, status="MOVED_OUT", kind="CHANGE", permits=()))

    closed = yuhang.until(lambda found: len(found) >= 2)[-1]
    assert closed["state"] == "CLOSED" and "迁出" in closed["reason_text"]
    assert latest(pushes.records())[first["push_id"]]["state"] == "REASSIGNED"


def test_a_push_for_a_department_not_yet_onboarded_reaches_its_inbox_once_it_is(
    platform: Platform, kafka: KafkaClients, departments: Onboarding
) -> None:
    record = registration("330106", ("歌舞娱乐活动",), industry="R9011", uscc=new_uscc())
    pushes = watch(kafka, topics.DUAL_NOTICE_PUSHES.name, record["uscc"])
    platform.register(record)
    [push] = pushes.until(lambda found: len(found) >= 1)
    assert push["department"]["code"] == LATE_DEPARTMENT

    departments.onboard(LATE_DEPARTMENT)
    inbox = watch(kafka, inbox_topic(LATE_DEPARTMENT), record["uscc"])
    inbox.window.start = {0: 0}  # the inbox is new: everything on it counts

    [delivered] = inbox.until(lambda found: len(found) >= 1, timeout=20)
    assert delivered["push_id"] == push["push_id"] and delivered["state"] == "PUSHED"


# -- metrics and crashes -----------------------------------------------------------------------


def test_the_worker_serves_pushes_by_department_and_state_claim_latency_overdue_and_routing_queue(
    worker: Worker, platform: Platform, kafka: KafkaClients
) -> None:
    road_freight(platform, kafka)

    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5).text

    assert 'xietong_dual_notice_pushes{department="hz-xh-transport",state="PUSHED"}' in text
    assert "xietong_dual_notice_claim_latency_seconds_bucket" in text
    assert "xietong_dual_notice_overdue_pushes " in text
    assert "xietong_dual_notice_manual_routing_queue " in text


def test_a_worker_killed_mid_stream_loses_no_push_and_makes_none_twice(
    worker: Worker, platform: Platform, kafka: KafkaClients
) -> None:
    """The guarantee: after kill -9 and a restart, every registration has its push on
    dualnotice.pushes and in the department's inbox (none lost), no push id exists that
    should not (none made twice), and a push id appears more than once only for a
    registration the killed worker had processed but not yet committed (at least once)."""
    count = 800
    records = [
        registration("330106", (ROAD_FREIGHT,), industry="G5431", uscc=new_uscc())
        for _ in range(count)
    ]
    expected = {r["uscc"]: push_id(key_of(r), "DLHWYSXK", "hz-xh-transport") for r in records}
    pushes = TopicWindow(kafka, topics.DUAL_NOTICE_PUSHES.name)
    inbox = TopicWindow(kafka, inbox_topic("hz-xh-transport"))
    topic = REGISTRATION.topic.name
    sending = SteadyFeed(kafka, REGISTRATION, records, batch=10)  # about 200/s, for 4 s
    sending.start()
    until_some(pushes, expected, count // 2)  # some 2.5 s in: past a commit or two
    worker.kill()
    sending.join()
    positions = sending.positions
    committed = committed_offsets(kafka, streams_group(APP_NAME), topic)
    # Restarted once the group has given the dead member up (its session timed out), as
    # a supervisor would: otherwise the newcomer is rebalanced again mid-stream, and what
    # it processed before that second rebalance may be sent twice as well.
    until_group_empty(kafka, streams_group(APP_NAME))
    # What the killed worker had sent, read only now: a request it made just before it
    # died may still be written by the broker after, but not after its session expired.
    before_kill = {m.value["push_id"] for m in pushes.read()}
    # The push and its delivery are two sends: either may have reached the broker alone.
    in_inbox_before_kill = {m.value["push_id"] for m in inbox.read()}
    worker.start()

    found = until_all(pushes, expected, timeout=60)
    delivered = until_all(inbox, expected, timeout=30)

    mine = set(expected.values())
    assert 0 < len(before_kill & mine) < count, "the worker was not killed mid-stream"
    ids = Counter(m.value["push_id"] for m in found if m.value["push_id"] in mine)
    assert set(ids) == mine
    # Processed by the killed worker, but not committed: these it may send again.
    uncommitted = sum(
        1
        for uscc, (partition, offset) in positions.items()
        if offset >= committed.get(partition, 0) and expected[uscc] in before_kill
    )
    duplicates = sum(ids.values()) - len(ids)
    twice = {push for push, seen in ids.items() if seen > 1}
    committed_twice = sorted(
        (partition, offset, committed.get(partition, 0))
        for uscc, (partition, offset) in positions.items()
        if expected[uscc] in twice and offset < committed.get(partition, 0)
    )
    assert not committed_twice, f"sent twice although committed: {committed_twice[:10]}"
    print(
        f"killed after {len(before_kill & mine)} of {count} pushes; {uncommitted} of them"
        f" uncommitted; {duplicates} pushes sent twice"
    )
    assert duplicates <= uncommitted, (duplicates, uncommitted)
    in_inbox = Counter(m.value["push_id"] for m in delivered if m.value["push_id"] in mine)
    assert set(in_inbox) == mine
    delivered_uncommitted = sum(
        1
        for uscc, (partition, offset) in positions.items()
        if offset >= committed.get(partition, 0) and expected[uscc] in in_inbox_before_kill
    )
    assert sum(in_inbox.values()) - len(in_inbox) <= delivered_uncommitted
    assert all(m.value["version"] == 1 for m in found if m.value["push_id"] in mine)


def until_some(window: TopicWindow, expected: dict[str, str], minimum: int) -> None:
    until_ids(window, "push_id", set(expected.values()), minimum, timeout=30)


def until_all(window: TopicWindow, expected: dict[str, str], timeout: float) -> list[ReadMessage]:
    return until_ids(window, "push_id", set(expected.values()), len(expected), timeout)
