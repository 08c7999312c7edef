"""一处违法、处处受限, against the real broker: a worker of ``xietong streams joint-punishment``
runs as its own process, the sample province's measures, lists and departments are on
the registry's topics, and the departments answer as themselves, each writing 反馈 to its
own inbound topic.

The entities are of 西湖区 (330106), by their USCC and, where a test sends one, their
registration (one test moves an entity to 上城区): their measures are implemented by 西湖区's
departments (财政 hz-xh-finance, 发改 hz-xh-drc, 市场监管 hz-xh-amr …) and by the province's
人民银行 and 海关, which have no seat below it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta
from typing import Any

import httpx
import pytest

from registry.grants import inbox_topic
from schemas import CREDIT_LIST_ENTRY, LICENCE, PENALTY, REGISTRATION
from streams.credit_repair import earliest_repair_day
from streams.joint_punishment.escalation import serious_listing_proposal_id
from streams.joint_punishment.rules import (
    APP_NAME,
    lift_notice_id,
    restriction_hit_id,
    sanction_notice_id,
)
from tests.joint_punishment_records import (
    DAY_MS,
    feedback,
    licence,
    list_entry,
    matter,
    penalty,
    registration,
    removal_of,
    today,
)
from tests.kafka_helpers import TopicWindow, eventually
from tests.stream_worker import (
    Onboarding,
    Platform,
    SteadyFeed,
    Watch,
    Worker,
    barrier,
    committed_offsets,
    free_port,
    partition_mate,
    publish_catalog,
    running,
    schema_registry_environment,
    skip_backlog,
    streams_group,
    until_group_empty,
    until_ids,
)
from xietong import topics
from xietong.clock import business_clock, months_later
from xietong.kafka import KafkaClients, local_credentials_file
from xietong.settings import Settings
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

#: The departments these tests act as (西湖区).
DEPARTMENTS = ("hz-xh-finance", "hz-xh-drc", "hz-xh-amr")


@pytest.fixture(scope="module")
def departments(
    registry_databases: Callable[[], str], stack_settings: Settings, kafka: KafkaClients
) -> Iterator[Onboarding]:
    publish_catalog(registry_databases(), stack_settings, kafka)
    onboarding = Onboarding(kafka, stack_settings)
    for code in DEPARTMENTS:
        onboarding.onboard(code)
    yield onboarding
    onboarding.offboard_all()


@pytest.fixture(scope="module")
def worker(
    departments: Onboarding, kafka: KafkaClients, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    # The worker starts where these tests start, not behind the sample licences and
    # penalties earlier modules published (a backlog a slow machine takes minutes over).
    group = streams_group("joint-punishment")
    until_group_empty(kafka, group)
    sources = [
        topics.CREDIT_LIST_ENTRIES,
        topics.LICENCES,
        topics.PENALTIES,
        topics.MATTER_EVENTS,
        topics.REGISTRATIONS,  # the history cut-over's 10,000, the 双告知 tests' …
    ]
    skip_backlog(kafka, group, [topic.name for topic in sources])
    log = tmp_path_factory.mktemp("joint-punishment") / "worker.log"
    with running("joint-punishment", log) as worker:
        yield worker


@pytest.fixture(scope="module")
def platform(worker: Worker, kafka: KafkaClients, departments: Onboarding) -> Platform:
    return Platform(kafka, departments)


def new_uscc() -> str:
    return make_uscc("91", "330106")


def watch(kafka: KafkaClients, topic: str, uscc: str) -> Watch:
    return Watch(kafka, topic, uscc)


def days_ago(n: int) -> Any:
    return today() - timedelta(days=n)


# Barriers: once one has returned, everything the records sent about the entity so far
# made is on the topics (tests/stream_worker.py says why).


def after_listings(platform: Platform, kafka: KafkaClients, uscc: str) -> None:
    """What the list entries of ``uscc`` made: a serious listing of an entity in the same
    partition reaches 西湖区财政's inbox (its CJ01 notice) after it."""
    barrier(
        kafka,
        uscc,
        lambda mate: platform.list(list_entry(mate, f"E-{mate}", listed_on=days_ago(10))),
        inbox_topic("hz-xh-finance"),
        division="330106",
    )


def after_matters(platform: Platform, kafka: KafkaClients, uscc: str) -> None:
    """What the matters of ``uscc`` made: a matter of an entity in the same partition,
    from a department the registry does not know, is dead-lettered after it."""
    barrier(
        kafka,
        uscc,
        lambda mate: platform.matter(
            {**matter(mate, "hz-xh-finance", "SUBSIDY", "BZ-0"), "department_code": "hz-nowhere"}
        ),
        topics.DEAD_LETTER.name,
        made=lambda sent, m: sent["uscc"] in (m.value["payload_json"] or ""),
    )


# -- the rule end to end: listed, hit, fed back, removed --------------------------------------


def test_a_serious_listing_notifies_finance_once_hits_its_procurement_and_lifts_on_removal(
    platform: Platform, kafka: KafkaClients
) -> None:
    """An entity listed on 严重违法失信名单, whose measure 依法限制作为供应商参加政府采购 (CJ01) is
    implemented by 财政, produces one CJ01 sanction notice to 西湖区财政; a procurement
    matter for it while listed produces one restriction hit there, which the department
    answers; after 移出, one lift notice to 西湖区财政."""
    uscc = new_uscc()
    inbox = watch(kafka, inbox_topic("hz-xh-finance"), uscc)
    notices = watch(kafka, topics.PUNISHMENT_SANCTION_NOTICES.name, uscc)
    hits = watch(kafka, topics.PUNISHMENT_RESTRICTION_HITS.name, uscc)
    lifts = watch(kafka, topics.PUNISHMENT_LIFT_NOTICES.name, uscc)
    # Listed 400 days ago: its 信用修复 removal comes after the one-year term.
    listing = list_entry(uscc, f"E-{uscc}", listed_on=days_ago(400))

    platform.list(listing)

    notices.until(lambda found: any(n["measure"]["code"] == "CJ01" for n in found))
    after_listings(platform, kafka, uscc)
    cj01 = [n for n in notices.records() if n["measure"]["code"] == "CJ01"]
    assert [n["department"]["code"] for n in cj01] == ["hz-xh-finance"]
    assert cj01[0]["notice_id"] == sanction_notice_id(listing["entry_id"], "CJ01", "hz-xh-finance")
    assert cj01[0]["listing"]["list_name"] == "严重违法失信名单"
    assert cj01[0]["valid_from"] == days_ago(400) and cj01[0]["feedback_required"] is True
    assert len({n["notice_id"] for n in notices.records()}) == len(notices.records())

    platform.matter(
        matter(uscc, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-001", matter_date=days_ago(1))
    )

    [hit] = hits.until(lambda found: len(found) >= 1)
    assert hit["hit_id"] == restriction_hit_id(
        uscc, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-001", "CJ01"
    )
    assert hit["status"] == "ACTIVE" and hit["feedback_outcome"] == "PENDING"
    assert hit["measure"]["text"] == "依法限制作为供应商参加政府采购活动"

    platform.feed_back("hz-xh-finance", feedback(uscc, hit["hit_id"], "APPLIED"))

    answered = hits.until(lambda found: found[-1]["feedback_outcome"] == "APPLIED")
    assert {h["hit_id"] for h in answered} == {hit["hit_id"]}

    platform.list(removal_of(listing))

    lifts.until(lambda found: any(n["department"]["code"] == "hz-xh-finance" for n in found))
    after_listings(platform, kafka, uscc)
    told = {n["department"]["code"] for n in notices.records()}
    assert Counter(n["department"]["code"] for n in lifts.records()) == Counter(told)
    [finance] = [n for n in lifts.records() if n["department"]["code"] == "hz-xh-finance"]
    assert finance["end_reason"] == "CREDIT_REPAIR" and finance["hit_ids"] == [hit["hit_id"]]
    assert [m["code"] for m in finance["measures"]] == ["CJ01", "CJ04"]
    # the department's inbox got the same: two notices, the hit (twice), the lift
    kinds = Counter(
        "hit" if "hit_id" in r and "status" in r else "lift" if "lift_id" in r else "notice"
        for r in inbox.records()
    )
    assert kinds == Counter({"notice": 2, "hit": 2, "lift": 1})


def test_a_listing_in_an_aborted_transaction_restricts_nothing(
    platform: Platform, kafka: KafkaClients
) -> None:
    """A batch the HTTP ingest aborted was, for the department that sent it, never written
    (it was answered 5xx and sends the batch again): the worker reads committed records
    only, so a serious listing left in an aborted transaction notifies no one."""
    uscc = new_uscc()
    notices = watch(kafka, topics.PUNISHMENT_SANCTION_NOTICES.name, uscc)

    platform.send_aborted(CREDIT_LIST_ENTRY, list_entry(uscc, f"E-{uscc}", listed_on=days_ago(10)))

    after_listings(platform, kafka, uscc)
    assert notices.records() == []


def test_a_listing_read_after_a_matter_dated_within_it_still_hits_the_matter(
    platform: Platform, kafka: KafkaClients
) -> None:
    uscc = new_uscc()
    hits = watch(kafka, topics.PUNISHMENT_RESTRICTION_HITS.name, uscc)
    platform.matter(matter(uscc, "hz-xh-drc", "BOND_ISSUE", "ZQ-7", matter_date=days_ago(3)))
    after_matters(platform, kafka, uscc)
    assert hits.records() == []

    platform.list(list_entry(uscc, f"E-{uscc}", listed_on=days_ago(30)))

    [hit] = hits.until(lambda found: len(found) >= 1)
    assert hit["measure"]["code"] == "CJ06" and hit["department"]["code"] == "hz-xh-drc"


def test_a_listing_that_starts_later_restricts_nothing_before_it_starts(
    platform: Platform, kafka: KafkaClients
) -> None:
    uscc = new_uscc()
    notices = watch(kafka, topics.PUNISHMENT_SANCTION_NOTICES.name, uscc)
    hits = watch(kafka, topics.PUNISHMENT_RESTRICTION_HITS.name, uscc)
    platform.list(list_entry(uscc, f"E-{uscc}", listed_on=today() + timedelta(days=5)))
    platform.matter(matter(uscc, "hz-xh-finance", "SUBSIDY", "BZ-1", matter_date=today()))

    notices.until(lambda found: len(found) >= 1)
    after_matters(platform, kafka, uscc)
    assert hits.records() == []
    assert {n["valid_from"] for n in notices.records()} == {today() + timedelta(days=5)}


# -- which departments: the registration's division; person measures as such -----------------


def test_a_registration_in_another_district_moves_the_restriction_there(
    platform: Platform, kafka: KafkaClients
) -> None:
    """An entity whose USCC says 西湖区 is listed: without a registration, 西湖区财政 is told
    (basis USCC). Its registration then puts its 住所 in 上城区: 上城区财政 is told (basis
    REGISTRATION) and 西湖区财政 is told to stop (a lift notice, RELOCATED)."""
    uscc = new_uscc()
    notices = watch(kafka, topics.PUNISHMENT_SANCTION_NOTICES.name, uscc)
    lifts = watch(kafka, topics.PUNISHMENT_LIFT_NOTICES.name, uscc)
    listing = list_entry(uscc, f"E-{uscc}", listed_on=days_ago(10))
    platform.list(listing)
    notices.until(lambda found: any(n["measure"]["code"] == "CJ01" for n in found))
    [first] = [n for n in notices.records() if n["measure"]["code"] == "CJ01"]
    assert (first["department"]["code"], first["division_basis"]) == ("hz-xh-finance", "USCC")

    platform.send(REGISTRATION, registration(uscc, "330102", registered_on=days_ago(2)))

    lifts.until(lambda found: any(n["department"]["code"] == "hz-xh-finance" for n in found))
    moved = [n for n in notices.records() if n["department"]["code"] == "hz-sc-finance"]
    assert {(n["measure"]["code"], n["division_code"], n["division_basis"]) for n in moved} == {
        ("CJ01", "330102", "REGISTRATION"),
        ("CJ04", "330102", "REGISTRATION"),
    }
    [lift] = [n for n in lifts.records() if n["department"]["code"] == "hz-xh-finance"]
    assert lift["end_reason"] == "RELOCATED" and lift["ended_on"] == days_ago(2)
    assert lift["lift_id"] == lift_notice_id(listing["entry_id"], "hz-xh-finance")


def test_a_person_measure_names_the_legal_representative_and_restricts_no_entity_matter(
    platform: Platform, kafka: KafkaClients
) -> None:
    """CJ11 (限制担任董监高, 公司法 §178) of a 失信被执行人 goes to 西湖区市场监管 as a measure on
    the persons in its roles, naming the registered 法定代表人; the entity's own officer
    appointment there makes no restriction hit."""
    uscc = new_uscc()
    notices = watch(kafka, topics.PUNISHMENT_SANCTION_NOTICES.name, uscc)
    hits = watch(kafka, topics.PUNISHMENT_RESTRICTION_HITS.name, uscc)
    platform.list(
        list_entry(uscc, f"E-{uscc}", list_type="JUDGMENT_DEFAULTER", listed_on=days_ago(10))
    )
    notices.until(lambda found: any(n["measure"]["code"] == "CJ11" for n in found))

    platform.send(
        REGISTRATION,
        registration(uscc, "330106", registered_on=days_ago(300), legal_representative="李四"),
    )

    notices.until(lambda found: any(n["measure"]["code"] == "CJ11" and n["persons"] for n in found))
    person = [n for n in notices.records() if n["measure"]["code"] == "CJ11"][-1]
    assert person["department"]["code"] == "hz-xh-amr"
    assert person["measure"]["target"] == "PERSONS_IN_ROLE"
    assert person["measure"]["roles"] == ["LEGAL_REPRESENTATIVE", "PRINCIPAL_RESPONSIBLE_PERSON"]
    assert person["persons"] == [{"role": "LEGAL_REPRESENTATIVE", "name": "李四"}]
    assert person["division_basis"] == "REGISTRATION"

    platform.matter(
        matter(uscc, "hz-xh-amr", "OFFICER_APPOINTMENT", "BG-1", matter_date=days_ago(1))
    )
    after_matters(platform, kafka, uscc)
    assert hits.records() == []


# -- penalty → licence review -----------------------------------------------------------------


def test_a_licence_revoking_penalty_reaches_the_department_whose_licence_is_valid(
    platform: Platform, kafka: KafkaClients
) -> None:
    uscc = new_uscc()
    inbox = watch(kafka, inbox_topic("hz-xh-amr"), uscc)
    reviews = watch(kafka, topics.PUNISHMENT_LICENCE_REVIEWS.name, uscc)
    platform.send(LICENCE, licence(uscc, f"JY-{uscc[-6:]}", "hz-xh-amr"))

    platform.send(
        PENALTY, penalty(uscc, f"西市监罚〔2026〕{uscc[-4:]}号", authority="hz-xh-health")
    )

    [review] = reviews.until(lambda found: len(found) >= 1)
    assert review["cause"] == "LICENCE_PENALTY" and review["department"]["code"] == "hz-xh-amr"
    assert [lic["licence_number"] for lic in review["licences"]] == [f"JY-{uscc[-6:]}"]
    assert inbox.until(lambda found: len(found) >= 1)[0]["review_id"] == review["review_id"]


def test_a_licence_cancelled_yesterday_read_first_is_reviewed_for_a_penalty_of_three_days_ago(
    platform: Platform, kafka: KafkaClients
) -> None:
    """Issue 13 §2, through the broker: the 注销 version (decided 400 days ago, 注销日期
    yesterday) is the only version read; the licence was valid on the penalty's day."""
    uscc = new_uscc()
    reviews = watch(kafka, topics.PUNISHMENT_LICENCE_REVIEWS.name, uscc)
    number = f"JY-{uscc[-6:]}"
    cancelled = licence(
        uscc,
        number,
        "hz-xh-amr",
        status="CANCELLED",
        valid_from=today() - timedelta(days=400),
        status_changed_on=today() - timedelta(days=1),
        version="2",
    )
    platform.send(LICENCE, cancelled)

    platform.send(
        PENALTY,
        penalty(
            uscc,
            f"西卫罚〔2026〕{uscc[-4:]}号",
            authority="hz-xh-health",
            decided_on=today() - timedelta(days=3),
        ),
    )

    [review] = reviews.until(lambda found: len(found) >= 1)
    assert review["department"]["code"] == "hz-xh-amr"
    assert [lic["licence_number"] for lic in review["licences"]] == [number]


# -- feedback overdue -------------------------------------------------------------------------


def test_a_hit_left_without_feedback_past_its_deadline_alerts_finance_and_the_credit_authority(
    platform: Platform, kafka: KafkaClients
) -> None:
    """CJ01 asks for feedback within 15 days, counted from the day after the hit to the end
    of the 15th: a hit raised 16 days ago is overdue since the last midnight."""
    uscc = new_uscc()
    alerts = watch(kafka, topics.PUNISHMENT_ALERTS.name, uscc)
    credit_inbox = watch(kafka, inbox_topic("hz-xh-drc"), uscc)
    platform.list(list_entry(uscc, f"E-{uscc}", listed_on=days_ago(20)))
    raised = business_clock().now_ms() - 16 * DAY_MS
    platform.matter(
        matter(
            uscc,
            "hz-xh-finance",
            "GOVERNMENT_PROCUREMENT",
            "CG-9",
            matter_date=days_ago(15),
            occurred_at_ms=raised,
        )
    )
    [alert] = alerts.until(lambda found: len(found) >= 1, timeout=20)

    assert alert["recipients"] == ["hz-xh-finance", "hz-xh-drc"]
    assert alert["status"] == "ACTIVE" and alert["measure"]["code"] == "CJ01"
    assert any(r.get("alert_id") == alert["alert_id"] for r in credit_inbox.until(bool))


# -- bad input, metrics -----------------------------------------------------------------------


def test_a_matter_of_a_department_the_registry_does_not_know_is_dead_lettered(
    platform: Platform, kafka: KafkaClients
) -> None:
    uscc = new_uscc()
    letters = TopicWindow(kafka, topics.DEAD_LETTER.name)
    record = matter(uscc, "hz-xh-finance", "SUBSIDY", "BZ-404")
    record["department_code"] = "hz-xh-nowhere"

    platform.matter(record)

    [letter] = eventually(
        lambda: [m.value for m in letters.read() if uscc in (m.value["payload_json"] or "")],
        bool,
        20,
        lambda _: f"no dead letter about {uscc} within 20 s",
    )
    assert letter["reasons"][0]["field"] == "department_code"
    assert "hz-xh-nowhere" in letter["reasons"][0]["message"]


def test_the_worker_serves_notices_hits_and_feedback_metrics(
    worker: Worker, platform: Platform, kafka: KafkaClients
) -> None:
    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5).text

    assert (
        'xietong_joint_punishment_sanction_notices_total{department="hz-xh-finance",measure="CJ01"}'
        in text
    )
    assert 'xietong_joint_punishment_restriction_hits_total{department="hz-xh-finance"' in text
    assert 'xietong_joint_punishment_feedback_given_total{department="hz-xh-finance"' in text
    assert 'xietong_joint_punishment_feedback_required_total{department="hz-xh-finance"}' in text
    assert 'xietong_joint_punishment_feedback_overdue_total{department="hz-xh-finance"}' in text


# -- rebalance --------------------------------------------------------------------------------


def test_listings_restrict_across_rebalances_when_a_second_worker_joins_and_the_first_leaves(
    worker: Worker,
    platform: Platform,
    kafka: KafkaClients,
    stack_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Entities listed on one worker are hit on the worker that took their partitions over
    (its table recovered from the changelog), and lifted on the first one again once the
    second has stopped: one hit and one lift per entity, none lost."""
    usccs = [new_uscc() for _ in range(12)]  # over every partition, most likely
    hits = TopicWindow(kafka, topics.PUNISHMENT_RESTRICTION_HITS.name)
    lifts = TopicWindow(kafka, topics.PUNISHMENT_LIFT_NOTICES.name)
    listings = [list_entry(uscc, f"R-{uscc}", listed_on=days_ago(400)) for uscc in usccs]
    for listing in listings:
        platform.list(listing)
    home = tmp_path_factory.mktemp("second-worker-home")
    credentials = json.loads(local_credentials_file(stack_settings).read_text(encoding="utf-8"))
    second = Worker(
        "joint-punishment",
        "joint_punishment_ready",
        home / "worker.log",
        {
            "XIETONG_HOME": str(home),  # its own RocksDB
            "XIETONG_KAFKA_USERNAME": "svc-streams",
            "XIETONG_KAFKA_PASSWORD": credentials["svc-streams"],
            "XIETONG_JOINT_PUNISHMENT_METRICS_PORT": str(free_port()),
            **schema_registry_environment(stack_settings),
        },
    )
    group = streams_group(APP_NAME)
    second.start()
    try:
        until_members(kafka, group, 2)
        for uscc in usccs:
            platform.matter(
                matter(uscc, "hz-xh-finance", "SUBSIDY", f"BZ-{uscc}", matter_date=days_ago(1))
            )
        wanted = {
            restriction_hit_id(uscc, "hz-xh-finance", "SUBSIDY", f"BZ-{uscc}", "CJ04")
            for uscc in usccs
        }
        until_ids(hits, "hit_id", wanted, len(wanted), timeout=60)
    finally:
        second.stop()
    made_there = second.log.read_text(errors="replace").count('"record_type": "restriction_hit"')
    assert made_there > 0, "the second worker took no partition over"
    until_members(kafka, group, 1)
    for listing in listings:
        platform.list(removal_of(listing))
    finance = {lift_notice_id(f"R-{uscc}", "hz-xh-finance") for uscc in usccs}
    found = until_ids(lifts, "lift_id", finance, len(finance), timeout=60)
    assert all(len(m.value["hit_ids"]) == 1 for m in found if m.value["lift_id"] in finance), (
        "a lift that does not name its entity's hit"
    )
    assert {m.value["hit_id"] for m in hits.read() if m.value["hit_id"] in wanted} == wanted


def until_members(kafka: KafkaClients, group: str, count: int, timeout: float = 60) -> None:
    """Wait until ``group`` has ``count`` members (a rebalance has assigned them)."""
    admin = kafka.admin()

    def described() -> Any:
        [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
        return future.result(timeout=15)

    eventually(
        described,
        lambda now: len(now.members) == count and str(now.state).endswith("STABLE"),
        timeout,
        lambda now: f"{group}: {len(now.members)} members, {now.state}",
        every=0.5,
    )


# -- kill -9 ----------------------------------------------------------------------------------


def test_a_worker_killed_mid_stream_loses_no_notice_and_makes_none_twice(
    worker: Worker, platform: Platform, kafka: KafkaClients
) -> None:
    """After kill -9 and a restart, every listing has its sanction notices (none lost), no
    notice id exists that should not, and a notice appears more than once only for a
    listing the killed worker had processed but not committed (at least once)."""
    count = 1500
    # 经营异常名录: three notices each (人民银行 CJ07, 发改 and 市场监管 CJ12)
    listings = [
        list_entry(uscc, f"A-{uscc}", list_type="ABNORMAL_OPERATION", listed_on=days_ago(2))
        for uscc in (new_uscc() for _ in range(count))
    ]
    expected = {
        listing["uscc"]: {
            sanction_notice_id(listing["entry_id"], measure, department)
            for measure, department in (
                ("CJ07", "zj-pbc"),
                ("CJ12", "hz-xh-drc"),
                ("CJ12", "hz-xh-amr"),
            )
        }
        for listing in listings
    }
    wanted = set().union(*expected.values())
    notices = TopicWindow(kafka, topics.PUNISHMENT_SANCTION_NOTICES.name)
    topic = CREDIT_LIST_ENTRY.topic.name
    sending = SteadyFeed(kafka, CREDIT_LIST_ENTRY, listings, batch=15)  # about 300/s, for 5 s
    sending.start()
    until_ids(notices, "notice_id", wanted, len(wanted) // 3, timeout=30)
    worker.kill()
    sending.join()
    positions = sending.positions
    group = streams_group(APP_NAME)
    committed = committed_offsets(kafka, group, topic)
    until_group_empty(kafka, group)
    # Read only now: what the dead worker had in flight is written by the time its
    # session has expired.
    before_kill = {m.value["notice_id"] for m in notices.read()} & wanted
    worker.start()

    found = until_ids(notices, "notice_id", wanted, len(wanted), timeout=90)

    assert 0 < len(before_kill) < len(wanted), "the worker was not killed mid-stream"
    mine = set(expected)
    ids = Counter(m.value["notice_id"] for m in found if m.key and m.key.decode() in mine)
    assert set(ids) == wanted, "a notice lost, or one that should not exist"
    uncommitted = {
        uscc
        for uscc, (partition, offset) in positions.items()
        if offset >= committed.get(partition, 0) and expected[uscc] & before_kill
    }
    twice = {notice for notice, seen in ids.items() if seen > 1}
    allowed = set().union(*(expected[uscc] for uscc in uncommitted)) if uncommitted else set()
    print(
        f"killed after {len(before_kill)} of {len(wanted)} notices; {len(uncommitted)} listings"
        f" uncommitted; {sum(ids.values()) - len(ids)} notices sent twice"
    )
    assert twice <= allowed, f"sent twice although committed: {sorted(twice - allowed)[:5]}"


# -- versions of one record (issue 13 §1) ----------------------------------------------------


def test_a_removal_corrected_to_an_earlier_day_withdraws_the_hit_whatever_order_it_came_in(
    platform: Platform, kafka: KafkaClients
) -> None:
    """A 移出 dated d-5, corrected by its version 2 to d-30: the version 2 read first and
    version 1 after it, the hit on a d-20 procurement matter is withdrawn and stays so."""
    uscc = new_uscc()
    hits = watch(kafka, topics.PUNISHMENT_RESTRICTION_HITS.name, uscc)
    listing = list_entry(uscc, f"E-{uscc}", listed_on=days_ago(500))  # past its repair term
    platform.list(listing)
    platform.matter(
        matter(uscc, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-020", matter_date=days_ago(20))
    )
    hits.until(lambda found: [hit["status"] for hit in found] == ["ACTIVE"])

    platform.list(removal_of(listing, days_ago(30), version="2"))
    platform.list(removal_of(listing, days_ago(5), version="1"))

    after_listings(platform, kafka, uscc)
    assert [hit["status"] for hit in hits.records()] == ["ACTIVE", "WITHDRAWN"]


# -- 经营异常名录届满三年 and credit repair terms (issue 13 §7) -------------------------------


def three_years_and(n: int) -> Any:
    """The 列入日期 of a listing whose three years were over ``n`` days ago."""
    return months_later(today(), -36) - timedelta(days=n + 1)


def test_an_abnormal_listing_of_three_years_is_proposed_for_the_serious_list_to_its_authority(
    platform: Platform, kafka: KafkaClients
) -> None:
    """An entity in the 经营异常名录 of 西湖区市场监管 for three years and five days, never
    removed: one 列入严重违法失信名单建议 to 西湖区市场监管 (its inbox and the platform topic),
    with the listing as its basis; nothing is listed. A second one, removed before its
    three years were over, is proposed to nobody."""
    uscc, removed_early = new_uscc(), partition_mate(kafka, new_uscc())
    proposals = watch(kafka, topics.PUNISHMENT_SERIOUS_LISTING_PROPOSALS.name, uscc)
    cancelled = watch(kafka, topics.PUNISHMENT_SERIOUS_LISTING_PROPOSALS.name, removed_early)
    inbox = watch(kafka, inbox_topic("hz-xh-amr"), uscc)
    abnormal = list_entry(
        uscc,
        f"YC-{uscc}",
        list_type="ABNORMAL_OPERATION",
        listed_on=three_years_and(5),
        authority="hz-xh-amr",
    )
    early = list_entry(
        removed_early,
        f"YC-{removed_early}",
        list_type="ABNORMAL_OPERATION",
        listed_on=three_years_and(5),
        authority="hz-xh-amr",
    )

    platform.list(abnormal)
    platform.list(removal_of(early, days_ago(30), reason="EXPIRY"))
    platform.list(early)

    [proposal] = proposals.until(bool)
    assert proposal["proposal_id"] == serious_listing_proposal_id(abnormal["entry_id"])
    assert proposal["status"] == "PROPOSED"
    assert proposal["department"]["code"] == "hz-xh-amr"
    assert proposal["recipient_basis"] == "LISTING_AUTHORITY"
    assert proposal["listing"]["entry_id"] == abnormal["entry_id"]
    assert proposal["listing"]["listed_on"] == three_years_and(5)
    assert proposal["proposed_list_type"] == "SERIOUS_ILLEGAL_DISHONEST"
    assert "《企业信息公示暂行条例》第十八条" in proposal["legal_basis"]
    assert proposal["proposed_at"] == datetime.combine(
        proposal["due_on"], time.min, business_clock().zone
    )
    assert any(r.get("proposal_id") == proposal["proposal_id"] for r in inbox.until(bool))
    after_listings(platform, kafka, uscc)
    assert len(proposals.records()) == 1 and cancelled.records() == []


def test_a_credit_repair_within_the_year_is_dead_lettered_and_the_listing_keeps_restricting(
    platform: Platform, kafka: KafkaClients
) -> None:
    """A 信用修复 移出 of a serious listing of 100 days ago is refused: a dead letter names
    the entry and the earliest day (a year and a day after the listing); no lift notice, and
    a procurement matter of today is still restricted."""
    uscc = new_uscc()
    letters = TopicWindow(kafka, topics.DEAD_LETTER.name)
    notices = watch(kafka, topics.PUNISHMENT_SANCTION_NOTICES.name, uscc)
    hits = watch(kafka, topics.PUNISHMENT_RESTRICTION_HITS.name, uscc)
    lifts = watch(kafka, topics.PUNISHMENT_LIFT_NOTICES.name, uscc)
    listing = list_entry(uscc, f"E-{uscc}", listed_on=days_ago(100))
    platform.list(listing)
    notices.until(bool)

    platform.list(removal_of(listing, days_ago(1)))

    [letter] = eventually(
        lambda: [m.value for m in letters.read() if uscc in (m.value["payload_json"] or "")],
        bool,
        20,
        lambda _: f"no dead letter about {uscc} within 20 s",
    )
    [reason] = letter["reasons"]
    assert reason["field"] == "removed_on" and reason["code"] == "credit_repair.too_early"
    assert listing["entry_id"] in reason["message"]
    assert earliest_repair_day(days_ago(100), 12).isoformat() in reason["message"]
    platform.matter(matter(uscc, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-R1"))
    [hit] = hits.until(bool)
    assert hit["status"] == "ACTIVE"
    after_listings(platform, kafka, uscc)
    assert lifts.records() == []
