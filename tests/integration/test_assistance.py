"""行政协助 as the Xiamen report has it (seed 000), against the real broker: a worker of
``xietong streams assistance`` runs as its own process, the sample province's assistance
list is on ``registry.assistance-items``, and the departments act as themselves, each
writing to its own inbound topic (the acting department is the topic's).

杭州市西湖区综合行政执法局 (hz-xh-cg) investigates a 违法建设 and asks 杭州市规划和自然资源局
(hz-nr) by item HZXZ-003 of the list (违法建设规划许可情况核查, seven working days); the
杭州市委编办 (hz-bb) supervises. An overdue request is one made long enough ago: the time
limit runs on event time, from the request's acted_at.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from registry.grants import inbox_topic
from schemas import ASSISTANCE_ACTION
from streams.assistance.records import request_id
from streams.assistance.rules import APP_NAME, escalation_id, rating_id
from streams.assistance.settings import AssistanceSettings
from tests.assistance_records import assistance_action
from tests.kafka_helpers import ReadMessage, TopicWindow, eventually
from tests.stream_worker import (
    Onboarding,
    Platform,
    Worker,
    publish_catalog,
    running,
    streams_group,
    until_group_empty,
    until_ids,
)
from xietong import topics
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings

pytestmark = pytest.mark.usefixtures("secured")

DAY_MS = 24 * 3600 * 1000
REQUESTER = "hz-xh-cg"  # 杭州市西湖区综合行政执法局
ASSISTING = "hz-nr"  # 杭州市规划和自然资源局: HZXZ-003
BIANBAN = "hz-bb"  # 中共杭州市委机构编制委员会办公室
REGISTRAR = "hz-amr"  # 杭州市市场监督管理局: HZXZ-005, the kill test's requests
HEALTH = "hz-xh-health"  # 杭州市西湖区卫生健康局: asked outside the list, the 编办's figures
#: HZXZ-105: 杭州市生态环境局 sends 杭州市农业农村局 the rural sewage water-quality data monthly.
MONITORING, MONITORED_FOR = "hz-eco", "hz-agri"
DEPARTMENTS = (REQUESTER, ASSISTING, BIANBAN, REGISTRAR, HEALTH, MONITORING, MONITORED_FOR)


@pytest.fixture(scope="module")
def list_on_the_topic(
    registry_databases: Callable[[], str], stack_settings: Settings, kafka: KafkaClients
) -> str:
    """The sample list and departments published by the registry's own relay; the
    registry database's URL."""
    url = registry_databases()
    publish_catalog(url, stack_settings, kafka)
    return url


@pytest.fixture(scope="module")
def departments(kafka: KafkaClients, stack_settings: Settings) -> Iterator[Onboarding]:
    onboarding = Onboarding(kafka, stack_settings)
    for code in DEPARTMENTS:
        onboarding.onboard(code)
    yield onboarding
    onboarding.offboard_all()


@pytest.fixture(scope="module")
def monitoring_inbox(departments: Onboarding, kafka: KafkaClients) -> TopicWindow:
    """hz-eco's inbox from before the worker starts: a standing duty's period request is
    made (or, made before, sent again) at the worker's first tick."""
    return TopicWindow(kafka, inbox_topic(MONITORING))


@pytest.fixture(scope="module")
def worker(
    list_on_the_topic: str,
    departments: Onboarding,
    monitoring_inbox: TopicWindow,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    log = tmp_path_factory.mktemp("assistance") / "worker.log"
    with running("assistance", log) as worker:
        yield worker


@pytest.fixture(scope="module")
def platform(worker: Worker, kafka: KafkaClients, departments: Onboarding) -> Platform:
    return Platform(kafka, departments)


class Desk:
    """A department's desk: what it writes to its inbound topic, what its inbox got."""

    def __init__(self, platform: Platform, kafka: KafkaClients, code: str) -> None:
        self.platform, self.code = platform, code
        self.inbox = TopicWindow(kafka, inbox_topic(code))

    def act(self, kind: str, *, at: int | None = None, **fields: Any) -> dict[str, Any]:
        action = assistance_action(kind, business_clock().now_ms() if at is None else at, **fields)
        self.platform.write_inbound(ASSISTANCE_ACTION, self.code, action, key=action["action_id"])
        return action

    def until(
        self, holds: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first record in the inbox for which ``holds``."""
        found = eventually(
            self.inbox.read,
            lambda messages: any(holds(m.value) for m in messages),
            timeout,
            lambda messages: f"{self.inbox.topic}: not within {timeout}s: {len(messages)} read",
        )
        return next(m.value for m in found if holds(m.value))


@pytest.fixture
def desks(platform: Platform, kafka: KafkaClients) -> dict[str, Desk]:
    return {code: Desk(platform, kafka, code) for code in DEPARTMENTS}


def rejections(kafka: KafkaClients) -> TopicWindow:
    return TopicWindow(kafka, topics.ASSISTANCE_REJECTED_ACTIONS.name)


def rejected(window: TopicWindow, action: dict[str, Any], timeout: float = 30) -> str:
    """The reason the action was rejected with."""
    found = eventually(
        window.read,
        lambda messages: any(_names(m, action) for m in messages),
        timeout,
        lambda _: f"{action['action']} {action['action_id']} was not rejected in {timeout}s",
    )
    reason: str = next(m.value["reason"] for m in found if _names(m, action))
    return reason


def _names(message: ReadMessage, action: dict[str, Any]) -> bool:
    written = message.value.get("action")
    return written is not None and written["action_id"] == action["action_id"]


def request(desks: dict[str, Desk], *, at: int | None = None, item: str = "HZXZ-003") -> str:
    """hz-xh-cg asks by the list; the request id."""
    reference = f"西湖执法联系单〔2026〕{uuid.uuid4().hex[:8]}号"
    desks[REQUESTER].act(
        "REQUEST",
        at=at,
        item_code=item,
        request_reference=reference,
        subject="文三路违法建设规划许可核查",
    )
    return request_id(REQUESTER, reference)


def of(identity: str, state: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda record: (
        record.get("request_id") == identity and (state is None or record.get("state") == state)
    )


# -- the report's rules -----------------------------------------------------------------------


def test_a_request_by_the_list_reaches_the_assisting_departments_inbox_with_its_deadline(
    desks: dict[str, Desk],
) -> None:
    at = business_clock().now_ms()
    identity = request(desks, at=at)
    record = desks[ASSISTING].until(of(identity, "REQUESTED"))
    assert record["item"]["code"] == "HZXZ-003" and record["listed"]
    assert record["requesting_department"]["code"] == REQUESTER
    assert record["supervising_department"]["code"] == BIANBAN
    deadline = AssistanceSettings().deadline(at, 7, working_days=True)
    assert int(record["deadline"].timestamp() * 1000) == deadline


def test_accepted_then_completed_the_requester_is_answered_and_rates_it_once(
    desks: dict[str, Desk], kafka: KafkaClients
) -> None:
    identity = request(desks)
    desks[ASSISTING].until(of(identity, "REQUESTED"))
    desks[ASSISTING].act("ACCEPT", request_id=identity)
    assert desks[REQUESTER].until(of(identity, "ACCEPTED"))["version"] == 2
    attachment = {
        "name": "规划许可核查意见.pdf",
        "uri": "https://nr.hz.example/a/1",
        "sha256": None,
    }
    desks[ASSISTING].act(
        "COMPLETE",
        request_id=identity,
        result_text="该建筑未取得建设工程规划许可证",
        attachments=[attachment],
    )
    completed = desks[REQUESTER].until(of(identity, "COMPLETED"))
    assert completed["result_text"] == "该建筑未取得建设工程规划许可证"
    assert completed["attachments"] == [attachment] and completed["in_time"] is True
    desks[REQUESTER].act("RATE", request_id=identity, cooperation=5, effect=4, comment="配合积极")
    rating = desks[ASSISTING].until(lambda r: r.get("rating_id") == rating_id(identity))
    assert (rating["cooperation"], rating["effect"]) == (5, 4)
    window = rejections(kafka)
    again = desks[REQUESTER].act("RATE", request_id=identity, cooperation=1, effect=1)
    assert "one rating per request" in rejected(window, again)


def test_a_refusal_without_a_leaders_approval_is_rejected_and_refuses_once_a_leader_approves(
    desks: dict[str, Desk], kafka: KafkaClients
) -> None:
    identity = request(desks)
    desks[ASSISTING].until(of(identity, "REQUESTED"))
    window = rejections(kafka)
    no_basis = desks[ASSISTING].act(
        "FILE_REFUSAL",
        request_id=identity,
        refusal_reason="OVERRULED_BY_HIGHER_RULE",
        reason_text="地块档案涉密",
        operator="张三",
    )
    assert "legal_basis missing" in rejected(window, no_basis)
    not_our_duty = desks[ASSISTING].act(
        "FILE_REFUSAL",
        request_id=identity,
        refusal_reason="NOT_OUR_DUTY",
        reason_text="不属于本局职责",
        legal_basis="三定方案",
        operator="张三",
    )
    assert "never refused as not its duty" in rejected(window, not_our_duty)
    desks[ASSISTING].act(
        "FILE_REFUSAL",
        request_id=identity,
        refusal_reason="OVERRULED_BY_HIGHER_RULE",
        reason_text="地块档案涉密，按上级规定不对外提供",
        legal_basis="《中华人民共和国保守国家秘密法》",
        operator="张三",
    )
    desks[ASSISTING].until(of(identity, "REFUSAL_FILED"))
    by_clerk = desks[ASSISTING].act("APPROVE_REFUSAL", request_id=identity, operator="李四")
    assert "not LEADER" in rejected(window, by_clerk)
    desks[ASSISTING].act(
        "APPROVE_REFUSAL", request_id=identity, operator="陈局长", operator_role="LEADER"
    )
    refused = desks[REQUESTER].until(of(identity, "REFUSED"))  # answered
    assert refused["refusal"]["approved_by"] == "陈局长"
    assert refused["refusal"]["legal_basis"] == "《中华人民共和国保守国家秘密法》"
    assert desks[BIANBAN].until(of(identity, "REFUSED"))["version"] == refused["version"]
    late = desks[ASSISTING].act("COMPLETE", request_id=identity, result_text="补充提供")
    assert f"request {identity} is closed: REFUSED" in rejected(window, late)


def test_an_overdue_request_is_escalated_to_the_assisting_department_and_the_bianban(
    desks: dict[str, Desk],
) -> None:
    identity = request(desks, at=business_clock().now_ms() - 30 * DAY_MS)
    to_department = desks[ASSISTING].until(
        lambda r: r.get("escalation_id") == escalation_id(identity)
    )
    to_bianban = desks[BIANBAN].until(lambda r: r.get("escalation_id") == escalation_id(identity))
    assert to_department == to_bianban
    assert to_department["recipients"] == [ASSISTING, BIANBAN]
    assert to_department["state"] == "REQUESTED"


def test_a_monthly_monitoring_duty_is_a_request_of_its_own_each_month(
    monitoring_inbox: TopicWindow, desks: dict[str, Desk], kafka: KafkaClients
) -> None:
    from streams.assistance.rules import ended_period

    month, ended_at = ended_period("MONTHLY", business_clock().now_ms())
    reference = f"HZXZ-105/{month}"
    found = eventually(
        monitoring_inbox.read,
        lambda messages: any(m.value.get("request_reference") == reference for m in messages),
        30,
        lambda messages: f"{monitoring_inbox.topic}: no {reference} in {len(messages)} records",
    )
    record = next(m.value for m in found if m.value.get("request_reference") == reference)
    assert record["request_id"] == request_id(MONITORED_FOR, reference)
    assert record["requesting_department"]["code"] == MONITORED_FOR
    assert int(record["requested_at"].timestamp() * 1000) == ended_at
    # Delivered by completing it. On a stack that ran this test before it was already:
    # its request is sent again as it was made, and the completion is refused as closed.
    window = rejections(kafka)
    delivery = desks[MONITORING].act(
        "COMPLETE",
        request_id=record["request_id"],
        attachments=[
            {"name": f"{month}水质监测.xlsx", "uri": "https://eco.example/m", "sha256": None}
        ],
    )
    completed = of(record["request_id"], "COMPLETED")

    def answers() -> list[dict[str, Any]]:
        refused = [m.value for m in window.read() if _names(m, delivery)]
        return refused + [m.value for m in desks[MONITORED_FOR].inbox.read() if completed(m.value)]

    [answer, *_] = eventually(
        answers, bool, 30, lambda _: f"{reference}: neither completed nor refused as closed"
    )
    assert completed(answer) or "is closed: COMPLETED" in answer["reason"]


def test_the_worker_serves_its_figures(worker: Worker) -> None:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10).text
    assert 'xietong_assistance_requests_made_total{listed="true"}' in text
    assert "xietong_assistance_escalations_total" in text
    assert 'xietong_assistance_actions_rejected_total{action="FILE_REFUSAL"}' in text


# -- the list is the 编办's: changed, retired, with its history -----------------------------


def test_the_bianban_changes_and_retires_an_item_and_a_request_on_a_retired_item_is_refused(
    list_on_the_topic: str, stack_settings: Settings, desks: dict[str, Desk], kafka: KafkaClients
) -> None:
    from registry.assistance import (
        assistance_item_history,
        change_assistance_item,
        retire_assistance_item,
    )
    from registry.audit import Actor
    from registry.db import session_factory, transaction
    from registry.errors import ForbiddenError
    from registry.publisher import OutboxRelay
    from tests.assistance_records import PROVINCE

    sessions = session_factory(list_on_the_topic)
    [item] = [item for item in PROVINCE.assistance_items if item.code == "HZXZ-010"]
    with pytest.raises(ForbiddenError), transaction(sessions) as session:
        retire_assistance_item(session, Actor.department("nb-bb"), item.code, "不是本编办的")
    with transaction(sessions) as session:
        changed, _ = change_assistance_item(
            session, Actor.department(BIANBAN), item.model_copy(update={"time_limit_days": 7})
        )
        assert changed.version == 2
        retire_assistance_item(
            session, Actor.department(BIANBAN), item.code, "宅基地审批职责调整，并入 HZXZ-002"
        )
    with transaction(sessions) as session:
        history = assistance_item_history(session, item.code)
        assert [entry.action for entry in history] == [
            "assistance_item.add",
            "assistance_item.change",
            "assistance_item.retire",
        ]
        assert [entry.after["version"] for entry in history] == [1, 2, 3]
        assert history[-1].after["retired_reason"] == "宅基地审批职责调整，并入 HZXZ-002"
    items = TopicWindow(kafka, topics.REGISTRY_ASSISTANCE_ITEMS.name)
    relay = OutboxRelay(sessions, KafkaClients(stack_settings, "registry"))
    while relay.publish_pending(limit=500):
        pass
    [published] = [m.value for m in items.read() if m.key == item.code.encode()][-1:]
    assert published["version"] == 3 and published["retired_at"] is not None
    # The worker follows the list within a second: a request made from then on is refused
    # (one made before it read the retirement is taken, as the list stood).
    window = rejections(kafka)
    requests = TopicWindow(kafka, topics.ASSISTANCE_REQUESTS.name)

    def ask() -> list[str]:
        """A request on the item: the reason it was refused, or '' if it was taken."""
        reference = f"西湖执法〔2026〕retired-{uuid.uuid4().hex[:8]}"
        asked = desks[REQUESTER].act(
            "REQUEST", item_code=item.code, request_reference=reference, subject="宅基地审批核查"
        )
        identity = request_id(REQUESTER, reference)
        [answer, *_] = eventually(
            lambda: (
                [m.value for m in window.read() if _names(m, asked)]
                + [m.value for m in requests.read() if m.value["request_id"] == identity]
            ),
            bool,
            30,
            lambda _: f"{reference}: neither refused nor taken",
        )
        return [str(answer.get("reason", ""))]

    [reason] = eventually(
        ask, lambda found: "left the list" in found[0], 30, lambda found: f"{item.code}: {found}"
    )
    assert "ask outside the list" in reason


# -- the 编办's figures in the credit database --------------------------------------------


@pytest.fixture(scope="module")
def credit_database(
    worker: Worker,
    credit_databases: Callable[[], str],
    kafka: KafkaClients,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The sink into a fresh credit database of this module's own, from this module on."""
    from tests.monitoring import Command
    from tests.stream_worker import free_port, sink_starts_at_the_end

    url = credit_databases()
    sink_starts_at_the_end(kafka, url)
    logs = tmp_path_factory.mktemp("assistance-sink")
    port = free_port()
    sink = Command(
        logs / "sink.log",
        "sink",
        "run",
        "--database",
        url,
        XIETONG_SINK_METRICS_PORT=str(port),
        XIETONG_SINK_TOPIC_REFRESH_INTERVAL="1",
        XIETONG_SINK_BATCH_WAIT="0.1",
        XIETONG_SINK_AUDIT_KEY=str(logs / "audit-key.pem"),
    )
    try:
        sink.wait_for(f"http://127.0.0.1:{port}/metrics")
        yield url
    finally:
        sink.stop()


def _rows(url: str, sql: str) -> list[dict[str, Any]]:
    from connectors.sink import db as credit_db

    conn = credit_db.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()


def test_the_bianban_reads_per_department_received_in_time_late_refused_and_ratings(
    desks: dict[str, Desk], credit_database: str
) -> None:
    """Four requests outside the list to 西湖区卫健局: one completed in time and rated, one
    refused through an approved 否定报备, one completed after its deadline, one left open
    past it (escalated)."""
    now = business_clock().now_ms()

    def ask(at: int) -> str:
        reference = f"西湖执法〔2026〕cdb-{uuid.uuid4().hex[:8]}"
        desks[REQUESTER].act(
            "REQUEST",
            at=at,
            request_reference=reference,
            assisting_department_code=HEALTH,
            subject="违法建设内诊所的执业登记情况",
        )
        identity = request_id(REQUESTER, reference)
        desks[HEALTH].until(of(identity))
        return identity

    in_time, refused, late, overdue = (
        ask(now),
        ask(now),
        ask(now - 30 * DAY_MS),
        ask(now - 30 * DAY_MS),
    )
    desks[HEALTH].act("COMPLETE", request_id=in_time, result_text="该诊所未办理执业登记")
    desks[REQUESTER].until(of(in_time, "COMPLETED"))
    desks[REQUESTER].act("RATE", request_id=in_time, cooperation=4, effect=5, comment="及时")
    desks[HEALTH].act(
        "FILE_REFUSAL",
        request_id=refused,
        refusal_reason="NOT_OUR_DUTY",
        reason_text="诊所执业登记由杭州市卫健委负责",
        legal_basis="《医疗机构管理条例》",
        operator="赵六",
    )
    desks[HEALTH].until(of(refused, "REFUSAL_FILED"))
    desks[HEALTH].act(
        "APPROVE_REFUSAL", request_id=refused, operator="孙局长", operator_role="LEADER"
    )
    desks[HEALTH].act("COMPLETE", request_id=late, result_text="已核查")
    desks[HEALTH].until(lambda r: r.get("escalation_id") == escalation_id(overdue))

    figures = eventually(
        lambda: _rows(
            credit_database,
            f"SELECT * FROM auditor.assistance_by_department WHERE department_code = '{HEALTH}'",
        ),
        lambda rows: (
            bool(rows)
            and rows[0]["received"] == 4
            and rows[0]["ratings"] == 1
            and rows[0]["open_overdue"] == 1
            and rows[0]["refused"] == 1
            and rows[0]["completed"] == 2
        ),
        60,
        lambda rows: f"auditor.assistance_by_department: {rows}",
    )
    [row] = figures
    assert (row["completed_in_time"], row["completed_late"], row["open"]) == (1, 1, 1)
    assert (float(row["mean_cooperation"]), float(row["mean_effect"])) == (4.0, 5.0)
    [refusal] = _rows(
        credit_database,
        f"SELECT * FROM auditor.assistance_refusals WHERE request_id = '{refused}'",
    )
    assert refusal["refusal_reason"] == "NOT_OUR_DUTY"
    assert refusal["refusal_legal_basis"] == "《医疗机构管理条例》"
    assert refusal["refusal_approved_by"] == "孙局长"
    scores = _rows(
        credit_database,
        f"SELECT * FROM auditor.assistance_scores WHERE department_code = '{HEALTH}'",
    )
    assert {score["period_kind"] for score in scores} == {"half-year", "year"}
    assert all(float(score["score"]) == 4.5 for score in scores)


# -- kill -9 ----------------------------------------------------------------------------------


def test_a_worker_killed_mid_stream_loses_no_request_and_makes_none_twice(
    worker: Worker, platform: Platform, kafka: KafkaClients
) -> None:
    """After kill -9 and a restart every request is on assistance.requests and in the
    assisting department's inbox (none lost); no request is made twice (each id is in
    version 1 only, every copy of it the same record: one sent again after the crash)."""
    count = 300
    references = [f"西湖执法〔2026〕kill-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    expected = {request_id(REQUESTER, reference) for reference in references}
    requests = TopicWindow(kafka, topics.ASSISTANCE_REQUESTS.name)
    inbox = TopicWindow(kafka, inbox_topic(REGISTRAR))

    def feed() -> None:  # about 100 a second, as the department's system would send them
        clients = platform.departments.clients[REQUESTER]
        serialize = platform._serializer(clients, ASSISTANCE_ACTION)
        producer = clients.producer(**{"linger.ms": 0})
        from confluent_kafka.serialization import MessageField, SerializationContext

        topic = f"dept.{REQUESTER}.inbound"
        context = SerializationContext(topic, MessageField.VALUE)
        for index, reference in enumerate(references):
            action = assistance_action(
                "REQUEST",
                business_clock().now_ms(),
                item_code="HZXZ-005",
                request_reference=reference,
                subject="违法建设内经营主体登记信息",
            )
            producer.produce(
                topic, key=action["action_id"].encode(), value=serialize(action, context)
            )
            if index % 10 == 9:
                producer.flush(10)
                time.sleep(0.1)
        producer.flush(10)

    sending = threading.Thread(target=feed)
    sending.start()
    until_ids(requests, "request_id", expected, count // 3, timeout=60)
    worker.kill()
    sending.join()
    until_group_empty(kafka, streams_group(APP_NAME))
    before_kill = {m.value["request_id"] for m in requests.read()} & expected
    worker.start()

    found = until_ids(requests, "request_id", expected, count, timeout=90)
    delivered = until_ids(inbox, "request_id", expected, count, timeout=30)
    assert 0 < len(before_kill) < count, "the worker was not killed mid-stream"
    mine = [m.value for m in found if m.value["request_id"] in expected]
    assert {record["request_id"] for record in mine} == expected
    assert all(record["version"] == 1 for record in mine)
    copies: dict[str, list[dict[str, Any]]] = {}
    for record in mine:
        copies.setdefault(record["request_id"], []).append(record)
    assert all(all(c == same[0] for c in same) for same in copies.values())
    in_inbox = Counter(
        m.value["request_id"] for m in delivered if m.value["request_id"] in expected
    )
    assert set(in_inbox) == expected
    print(
        f"killed after {len(before_kill)} of {count} requests;"
        f" {len(mine) - count} sent again after the restart"
    )
