"""The credit check against the real stack: the registry's catalog published by its own
relay, list entries on ``credit.list-entries`` as the credit authority's connector sends
them, department tokens issued by the registry, and the service of
``xietong credit-check serve`` running in this process (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from confluent_kafka.serialization import MessageField, SerializationContext

from registry import service
from registry.audit import Actor
from registry.db import session_factory, transaction
from registry.publisher import OutboxRelay
from schemas import CREDIT_LIST_ENTRY, register_all
from streams.credit_check.api import build_app
from streams.credit_check.settings import CreditCheckSettings
from tests.credit_check_records import list_entry, new_uscc, removal_of
from tests.kafka_helpers import TopicWindow
from xietong.clock import BusinessClock, business_clock, clock_from_settings
from xietong.ids import matter_event_id
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import MATTER_EVENTS, apply_topics

pytestmark = pytest.mark.usefixtures("secured")

PROCUREMENT = "GOVERNMENT_PROCUREMENT"  # CJ01, implemented by 财政


@dataclass(frozen=True)
class Tokens:
    finance: str  # 杭州市财政局 (hz-finance)
    land: str  # 杭州市规划和自然资源局: checks land supply, does not implement CJ01
    admin: str
    revoked: str


@pytest.fixture(scope="module")
def tokens(registry_url: str, stack_settings: Settings, kafka: KafkaClients) -> Tokens:
    """The sample catalog published to the registry's topics by the registry's relay, and
    tokens issued in the same registry database the service reads."""
    apply_topics(kafka.admin(), stack_settings)
    register_all(kafka.schema_registry())
    sessions = session_factory(registry_url)
    relay = OutboxRelay(sessions, KafkaClients(stack_settings, "registry"))
    while relay.publish_pending(limit=500):
        pass
    admin = Actor.admin("test-credit-check")
    with transaction(sessions) as session:
        revoked = service.issue_token(session, admin, "hz-xh-finance")
        service.revoke_credential(session, admin, revoked.credential.id)
        return Tokens(
            finance=service.issue_token(session, admin, "hz-finance").token,
            land=service.issue_token(session, admin, "hz-nr").token,
            admin=service.issue_token(session, admin, None).token,
            revoked=revoked.token,
        )


class CreditAuthority:
    """Publishes list entries as the credit authority's connector does."""

    def __init__(self, settings: Settings) -> None:
        kafka = KafkaClients(settings, "connectors")
        self._producer = kafka.producer()
        self._serialize = kafka.avro_serializer(CREDIT_LIST_ENTRY.schema_str)

    def publish(self, *entries: dict[str, Any]) -> None:
        topic = CREDIT_LIST_ENTRY.topic.name
        context = SerializationContext(topic, MessageField.VALUE)
        for entry in entries:
            value = self._serialize(entry, context)
            self._producer.produce(topic, key=entry["uscc"].encode(), value=value)
        assert self._producer.flush(10) == 0


@pytest.fixture(scope="module")
def authority(stack_settings: Settings) -> CreditAuthority:
    return CreditAuthority(stack_settings)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """``xietong credit-check serve`` in a thread of this process, on a free port, its
    business clock shifted by ``clock_offset`` (``XIETONG_CLOCK_OFFSET``)."""

    def __init__(self, settings: Settings, registry_url: str, clock_offset: timedelta) -> None:
        self.rules = CreditCheckSettings(port=free_port(), token_cache_seconds=0)
        rehearsal = settings.model_copy(
            update={"database_url_env": registry_url, "clock_offset": clock_offset}
        )
        #: The service's clock: the tests assert on the days it says.
        self.clock: BusinessClock = clock_from_settings(
            rehearsal.time_zone, rehearsal.clock_offset, rehearsal.clock_at
        )
        app = build_app(rehearsal, self.rules)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.rules.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.rules.port}", timeout=30)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "not listening"
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def today(self) -> date:
        """The day it is in the province on the service's clock."""
        return self.clock.today()

    def check(self, token: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get("/v1/checks", params=params, headers=headers)


# What is on the topic before the service starts: it must have read it before it answers.
# A hundred days and more from any of the instants below: in force at all of them.
LOADED_USCC = new_uscc()
_ANY_DAY = business_clock().today()
LOADED = list_entry(
    LOADED_USCC, _ANY_DAY - timedelta(days=100), planned_removal_on=_ANY_DAY + timedelta(1000)
)

#: The instants (UTC, of the day the suite runs) the service's clock is set to, either side
#: of midnight in China (UTC+8): 23:30 there, then 00:30 and 07:30 of the next day.
INSTANTS = (clock_time(15, 30), clock_time(16, 30), clock_time(23, 30))


@pytest.fixture(scope="module", params=INSTANTS, ids=[f"{at:%H%M}UTC" for at in INSTANTS])
def credit_check(
    request: pytest.FixtureRequest,
    tokens: Tokens,
    authority: CreditAuthority,
    stack_settings: Settings,
    registry_url: str,
) -> Iterator[Service]:
    """The service as if it were ``request.param`` (UTC) today, whatever the hour of the run."""
    now = datetime.now(UTC)  # real time: the service's clock is real time plus the offset
    instant = datetime.combine(now.date(), request.param, UTC)
    authority.publish(LOADED)
    running = Service(stack_settings, registry_url, instant - now)
    # 15:30 UTC is still the day in China, 16:30 and 23:30 already the next.
    assert running.today == instant.astimezone(ZoneInfo("Asia/Shanghai")).date()
    running.start()
    try:
        yield running
    finally:
        running.stop()


def wait_for(check: Any, verdict: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        assert answer.status_code == 200, answer.text
        if answer.json()["verdict"] == verdict or time.monotonic() > deadline:
            return dict(answer.json())
        time.sleep(0.2)


# -- the answers ---------------------------------------------------------------------------------


def test_the_first_check_waits_for_the_state_and_finds_a_listing_published_before(
    credit_check: Service, tokens: Tokens
) -> None:
    # Asked at once, before /ready was ever looked at: answered from the loaded state.
    answer = credit_check.check(tokens.finance, uscc=LOADED_USCC, matter_type=PROCUREMENT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["verdict"] == "RESTRICTED"
    [listing] = body["listings"]
    assert listing["entry_id"] == LOADED["entry_id"]
    assert listing["list_type"]["name"] == "严重违法失信名单"
    assert listing["listing_authority"]["name"] == "杭州市市场监督管理局"
    [measure] = body["measures"]
    assert measure["code"] == "CJ01" and measure["feedback_required"] is True
    assert measure["implemented_by_checking_department"] is True
    assert credit_check.client.get("/ready").json()["status"] == "ready"
    # CJ01 binds 财政 only (streams/measures.py): the land department's procurement is
    # CLEAR, as joint punishment makes no hit for it.
    other = credit_check.check(tokens.land, uscc=LOADED_USCC, matter_type=PROCUREMENT).json()
    assert other["verdict"] == "CLEAR" and other["measures"] == []
    assert [listing["entry_id"] for listing in other["listings"]] == [LOADED["entry_id"]]


def test_a_listing_published_while_serving_restricts_within_seconds(
    credit_check: Service, tokens: Tokens, authority: CreditAuthority
) -> None:
    today = credit_check.today
    uscc = new_uscc()
    check = lambda: credit_check.check(tokens.land, uscc=uscc, matter_type="LAND_SUPPLY")  # noqa: E731
    assert check().json()["verdict"] == "CLEAR"
    authority.publish(list_entry(uscc, today, list_type="JUDGMENT_DEFAULTER"))
    body = wait_for(check, "RESTRICTED")
    assert body["verdict"] == "RESTRICTED"
    assert [m["code"] for m in body["measures"]] == ["CJ03"]  # 限制取得政府供应土地


def test_a_removal_lifts_the_restriction_from_its_day_on(
    credit_check: Service, tokens: Tokens, authority: CreditAuthority
) -> None:
    today = credit_check.today
    uscc = new_uscc()
    listed = list_entry(uscc, today - timedelta(days=400), list_type="MAJOR_TAX_VIOLATION")
    authority.publish(listed, removal_of(listed, today, "CREDIT_REPAIR"))

    def check(day: date) -> Any:
        return lambda: credit_check.check(
            tokens.finance, uscc=uscc, matter_type=PROCUREMENT, matter_date=day.isoformat()
        )

    before = wait_for(check(today - timedelta(days=1)), "RESTRICTED")
    assert before["verdict"] == "RESTRICTED"
    assert before["listings"][0]["removed_on"] == today.isoformat()
    on_the_day = check(today)().json()
    assert on_the_day["verdict"] == "CLEAR" and on_the_day["listings"] == []


def test_a_credit_repair_within_the_year_leaves_the_serious_listing_restricting(
    credit_check: Service, tokens: Tokens, authority: CreditAuthority
) -> None:
    """严重违法失信名单 listed 100 days ago, removed today for 信用修复: before its year the
    removal is refused (streams/credit_repair.py, as joint punishment refuses it), so
    procurement today is still RESTRICTED. The barrier is a later listing of the entity
    (one key, one partition, read in order): once it restricts, the removal was read."""
    today = credit_check.today
    uscc = new_uscc()
    listed = list_entry(uscc, today - timedelta(days=100))
    barrier = list_entry(uscc, today, list_type="JUDGMENT_DEFAULTER")
    authority.publish(listed, removal_of(listed, today, "CREDIT_REPAIR"), barrier)

    land = lambda: credit_check.check(tokens.land, uscc=uscc, matter_type="LAND_SUPPLY")  # noqa: E731
    wait_for(land, "RESTRICTED")
    body = credit_check.check(tokens.finance, uscc=uscc, matter_type=PROCUREMENT).json()
    assert body["verdict"] == "RESTRICTED"
    [serious] = [li for li in body["listings"] if li["entry_id"] == listed["entry_id"]]
    assert serious["removed_on"] is None


def test_a_future_listing_and_a_list_without_a_measure_leave_the_matter_clear(
    credit_check: Service, tokens: Tokens, authority: CreditAuthority
) -> None:
    today = credit_check.today
    uscc = new_uscc()
    future = list_entry(uscc, today + timedelta(days=10))
    abnormal = list_entry(uscc, today - timedelta(days=5), list_type="ABNORMAL_OPERATION")
    authority.publish(future, abnormal, abnormal)  # sent twice: still one listing

    def check(day: date) -> Any:
        return lambda: credit_check.check(
            tokens.finance, uscc=uscc, matter_type=PROCUREMENT, matter_date=day.isoformat()
        )

    later = wait_for(check(today + timedelta(days=10)), "RESTRICTED")
    assert later["verdict"] == "RESTRICTED"
    assert len(later["listings"]) == 2
    now = check(today)().json()
    assert now["verdict"] == "CLEAR"
    assert [listing["entry_id"] for listing in now["listings"]] == [abnormal["entry_id"]]


def test_a_check_without_a_date_is_for_today_in_china(
    credit_check: Service, tokens: Tokens, authority: CreditAuthority
) -> None:
    """At any of the instants: a listing from today (in China) applies to a check without a
    matter date, and one whose planned end is today no longer does."""
    today = credit_check.today
    from_today, ending_today = new_uscc(), new_uscc()
    authority.publish(
        list_entry(from_today, today, planned_removal_on=today + timedelta(days=365)),
        list_entry(ending_today, today - timedelta(days=365), planned_removal_on=today),
    )

    def check(uscc: str, **params: Any) -> Any:
        return lambda: credit_check.check(
            tokens.finance, uscc=uscc, matter_type=PROCUREMENT, **params
        )

    listed = wait_for(check(from_today), "RESTRICTED")
    assert listed["verdict"] == "RESTRICTED"
    assert listed["matter"]["matter_date"] == today.isoformat()
    [listing] = listed["listings"]
    assert listing["planned_removal_on"] == (today + timedelta(days=365)).isoformat()
    yesterday = (today - timedelta(days=1)).isoformat()
    # Restricted yesterday: the service has read the entry, so today's CLEAR is its end.
    assert wait_for(check(ending_today, matter_date=yesterday), "RESTRICTED")["verdict"] == (
        "RESTRICTED"
    )
    ended = check(ending_today)().json()
    assert ended["verdict"] == "CLEAR" and ended["listings"] == []
    assert ended["matter"]["matter_date"] == today.isoformat()


def test_a_removal_corrected_to_an_earlier_day_counts_though_its_first_version_came_last(
    credit_check: Service, tokens: Tokens, authority: CreditAuthority
) -> None:
    """A 移出 dated d-5, corrected by its version 2 to d-30, version 2 published first: a
    d-20 matter is CLEAR (issue 13 §1). The barrier is a later listing of the entity (one
    key, one partition, read in order): once it restricts, both versions were read."""
    today = credit_check.today
    uscc = new_uscc()
    listed = list_entry(uscc, today - timedelta(days=60), list_type="MAJOR_TAX_VIOLATION")
    corrected = removal_of(listed, today - timedelta(days=30), version="2")
    first = removal_of(listed, today - timedelta(days=5), version="1")
    barrier = list_entry(uscc, today + timedelta(days=10), list_type="JUDGMENT_DEFAULTER")
    authority.publish(listed, corrected, first, barrier)

    def check(token: str, matter_type: str, day: date) -> Any:
        return lambda: credit_check.check(
            token, uscc=uscc, matter_type=matter_type, matter_date=day.isoformat()
        )

    land = wait_for(check(tokens.land, "LAND_SUPPLY", today + timedelta(days=10)), "RESTRICTED")
    assert land["verdict"] == "RESTRICTED"
    on_d20 = check(tokens.finance, PROCUREMENT, today - timedelta(days=20))().json()
    assert on_d20["verdict"] == "CLEAR" and on_d20["listings"] == []


@pytest.mark.parametrize(
    ("token", "status", "says"),
    [
        (None, 401, "no bearer token"),
        ("xtr_not-a-token", 401, "unknown or revoked token"),
        ("revoked", 401, "unknown or revoked token"),
        ("admin", 403, "has no department"),
    ],
)
def test_a_check_without_a_department_token_is_refused(
    credit_check: Service, tokens: Tokens, token: str | None, status: int, says: str
) -> None:
    presented = getattr(tokens, token) if token in ("revoked", "admin") else token
    answer = credit_check.check(presented, uscc=LOADED_USCC, matter_type=PROCUREMENT)
    assert answer.status_code == status
    assert says in answer.json()["message"]


# -- the record of each check ------------------------------------------------------------------


def test_each_check_is_a_matter_event_with_deterministic_ids(
    credit_check: Service, tokens: Tokens, kafka: KafkaClients
) -> None:
    today = credit_check.today
    window = TopicWindow(kafka, MATTER_EVENTS.name)
    params = {"uscc": LOADED_USCC, "matter_type": PROCUREMENT, "matter_ref": "ZJCG-2026-0117"}
    first = credit_check.check(tokens.finance, **params).json()
    again = credit_check.check(tokens.finance, **params).json()
    without_ref = credit_check.check(tokens.finance, uscc=LOADED_USCC, matter_type=PROCUREMENT)
    assert first["check_id"] == again["check_id"] != without_ref.json()["check_id"]

    deadline = time.monotonic() + 15
    events: list[dict[str, Any]] = []
    while len(events) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        events = [m.value for m in window.read() if m.key == LOADED_USCC.encode()]
    by_check = {event["credit_check_id"]: event for event in events}
    event = by_check[first["check_id"]]
    assert event["event_id"] == matter_event_id(
        LOADED_USCC, "hz-finance", PROCUREMENT, "ZJCG-2026-0117", "CREDIT_CHECK"
    )
    assert event["source"] == "CREDIT_CHECK"
    assert event["department_code"] == "hz-finance"
    assert event["matter_date"] == today and event["uscc"] == LOADED_USCC
    assert by_check[without_ref.json()["check_id"]]["matter_reference"] == (
        f"CREDIT-CHECK/{LOADED_USCC}/{today.isoformat()}"
    )
    metrics = credit_check.client.get("/metrics").text
    assert 'xietong_credit_check_matter_events_total{outcome="delivered"}' in metrics
    assert (
        'xietong_credit_check_checks_total{department="hz-finance",'
        'matter_type="GOVERNMENT_PROCUREMENT",verdict="RESTRICTED"}'
    ) in metrics
