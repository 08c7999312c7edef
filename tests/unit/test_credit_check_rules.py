"""The credit check's rules, without services: when a listing applies, how 列入 and 移出
records fold into one listing, which measures a check names, and the API's contract."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import time_machine
from confluent_kafka import KafkaError
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from registry.directory import RegistryDirectory
from streams.credit_check.api import create_app
from streams.credit_check.recorder import MatterEventRecorder
from streams.credit_check.rules import (
    CheckingDepartment,
    Listing,
    MeasureCatalog,
    UnusableEntry,
    Verdict,
    assess,
    credit_check_id,
    fold_entry,
    matter_event,
)
from streams.credit_check.settings import CreditCheckSettings
from streams.credit_check.state import CreditCheckTopics, CreditState
from tests.credit_check_records import (
    PROVINCE,
    list_entry,
    list_type_records,
    measure_records,
    new_uscc,
    removal_of,
)
from xietong.clock import BusinessClock
from xietong.http_errors import ServiceUnavailableError
from xietong.ids import matter_event_id
from xietong.kafka import KafkaClients
from xietong.logs import LineFormatter
from xietong.settings import Settings

USCC = "91330106MA2CD7Q4XU"
JAN_1 = date(2025, 1, 1)
#: The province's clock (Asia/Shanghai), read from the real time (which time-machine moves).
CLOCK = BusinessClock()
CATALOG = MeasureCatalog.of(measure_records(), list_type_records())
PROCUREMENT = CATALOG.by_matter_type["GOVERNMENT_PROCUREMENT"]  # CJ01 (财政)
#: a check by a 财政 department of a procurement, which CJ01 binds
FINANCE_PROCUREMENT = {"sector": "finance", "matter_type": "GOVERNMENT_PROCUREMENT"}


def folded(*entries: dict[str, Any]) -> Listing:
    listing = None
    for entry in entries:
        listing = fold_entry(listing, entry, CLOCK)
    assert listing is not None
    return listing


# -- when a listing applies ---------------------------------------------------------------------


def test_a_listing_applies_from_its_listing_day_until_the_day_before_its_planned_end() -> None:
    listing = folded(list_entry(USCC, JAN_1, planned_removal_on=date(2028, 1, 1)))
    assert not listing.in_force_on(date(2024, 12, 31))
    assert listing.in_force_on(JAN_1)
    assert listing.in_force_on(date(2027, 12, 31))
    assert not listing.in_force_on(date(2028, 1, 1))


def test_a_listing_without_a_planned_end_applies_until_it_is_removed() -> None:
    listed = list_entry(USCC, JAN_1)
    assert folded(listed).in_force_on(date(2099, 1, 1))
    removed = folded(listed, removal_of(listed, date(2026, 3, 1)))
    assert removed.in_force_on(date(2026, 2, 28))
    assert not removed.in_force_on(date(2026, 3, 1))


def test_an_early_removal_ends_the_listing_before_its_planned_end() -> None:
    listed = list_entry(USCC, JAN_1, planned_removal_on=date(2028, 1, 1))
    listing = folded(listed, removal_of(listed, date(2026, 1, 2), "CREDIT_REPAIR"))
    assert listing.ends_on == date(2026, 1, 2)
    assert listing.removal_reason == "CREDIT_REPAIR"
    assert not listing.in_force_on(date(2027, 6, 1))


def test_a_listing_removed_before_it_starts_never_applies() -> None:
    listed = list_entry(USCC, date(2026, 6, 1), planned_removal_on=date(2029, 6, 1))
    listing = folded(listed, removal_of(listed, date(2026, 5, 1), "CORRECTION"))
    for day in (date(2026, 4, 30), date(2026, 5, 1), date(2026, 6, 1), date(2027, 1, 1)):
        assert not listing.in_force_on(day)


def test_a_correction_voids_the_listing_from_its_start_as_joint_punishment_does() -> None:
    """撤销: a listing withdrawn as wrong never applied, on no day before its removal
    either — the credit check answers what joint punishment's hits say."""
    listed = list_entry(USCC, JAN_1, planned_removal_on=date(2028, 1, 1))
    listing = folded(listed, removal_of(listed, date(2026, 3, 1), "CORRECTION"))
    assert listing.ends_on == JAN_1
    for day in (JAN_1, date(2026, 2, 28), date(2026, 3, 1), date(2027, 1, 1)):
        assert not listing.in_force_on(day)


def test_a_listing_effective_in_the_future_applies_only_from_its_day() -> None:
    start = JAN_1 + timedelta(days=30)
    listing = folded(list_entry(USCC, start))
    assert not listing.in_force_on(JAN_1)
    assert listing.in_force_on(start)


def test_a_removal_that_arrives_before_its_listing_is_kept() -> None:
    listed = list_entry(USCC, JAN_1, planned_removal_on=date(2028, 1, 1))
    removed = removal_of(listed, date(2026, 1, 2))
    assert folded(removed, listed) == folded(listed, removed)
    assert not folded(removed, listed).in_force_on(date(2026, 6, 1))


def test_a_listing_sent_again_after_its_removal_does_not_lift_the_removal() -> None:
    listed = list_entry(USCC, JAN_1)
    listing = folded(listed, removal_of(listed, date(2026, 1, 2)), listed)
    assert listing.removed_on == date(2026, 1, 2)


def test_an_older_version_of_a_listing_sent_late_does_not_overwrite_a_newer_one() -> None:
    # Issue 13 §1: versions are ordered by the source's version, not by event time (which
    # is the listing's business date, the same for every version): the extension is
    # version 2 of the entry.
    first = list_entry(USCC, JAN_1, planned_removal_on=date(2027, 1, 1), version="1")
    extended = list_entry(
        USCC,
        JAN_1,
        planned_removal_on=date(2029, 1, 1),  # 延长: the court extended the term
        entry_id=first["entry_id"],
        version="2",
    )
    assert folded(first, extended, first).planned_removal_on == date(2029, 1, 1)
    assert folded(extended, first).planned_removal_on == date(2029, 1, 1)


def test_a_removal_without_a_removal_day_takes_its_event_day() -> None:
    listed = list_entry(USCC, JAN_1)
    removed = {**removal_of(listed, date(2026, 1, 2)), "removed_on": None}
    assert folded(listed, removed).removed_on == date(2026, 1, 2)


#: Instants either side of midnight in China (UTC+8): 23:30 on 1 March, then 00:30 and
#: 07:30 on 2 March there.
EITHER_SIDE_OF_MIDNIGHT = [
    (datetime(2026, 3, 1, 15, 30, tzinfo=UTC), date(2026, 3, 1)),
    (datetime(2026, 3, 1, 16, 30, tzinfo=UTC), date(2026, 3, 2)),
    (datetime(2026, 3, 1, 23, 30, tzinfo=UTC), date(2026, 3, 2)),
]


@pytest.mark.parametrize(("event_time", "day_in_china"), EITHER_SIDE_OF_MIDNIGHT)
def test_a_removal_without_a_removal_day_takes_the_day_of_its_event_in_china(
    event_time: datetime, day_in_china: date
) -> None:
    listed = list_entry(USCC, JAN_1)
    removed = list_entry(
        USCC, JAN_1, action="REMOVED", entry_id=listed["entry_id"], event_time=event_time
    )
    assert folded(listed, removed).removed_on == day_in_china


def test_an_entry_that_is_neither_listed_nor_removed_is_refused_by_name() -> None:
    entry = {**list_entry(USCC, JAN_1), "action": "UNKNOWN"}
    with pytest.raises(UnusableEntry, match=f"{entry['entry_id']}.*action 'UNKNOWN'"):
        fold_entry(None, entry, CLOCK)


days = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31))


@given(listed_on=days, planned=st.none() | days, removed=st.none() | days, day=days)
def test_a_listing_applies_exactly_between_its_start_and_its_first_end(
    listed_on: date, planned: date | None, removed: date | None, day: date
) -> None:
    listed = list_entry(USCC, listed_on, planned_removal_on=planned, entry_id="E-1")
    # 期满 here: a 信用修复 removal has a term (test_credit_repair.py)
    entries = [listed] if removed is None else [listed, removal_of(listed, removed, "EXPIRY")]
    ends = [end for end in (planned, removed) if end is not None]
    expected = listed_on <= day and all(day < end for end in ends)
    # In any order, and sent any number of times, the records say the same.
    for order in (entries, entries[::-1], entries + entries, entries[::-1] + entries):
        assert folded(*order).in_force_on(day) is expected


# -- which measures a check names -----------------------------------------------------------------


def test_a_serious_listing_restricts_government_procurement_by_cj01() -> None:
    listing = folded(list_entry(USCC, JAN_1, planned_removal_on=date(2028, 1, 1)))
    found = assess([listing], PROCUREMENT, date(2026, 3, 2), **FINANCE_PROCUREMENT)
    assert found.verdict is Verdict.RESTRICTED
    assert [hit.measure["code"] for hit in found.hits] == ["CJ01"]
    assert found.hits[0].listings == (listing,)


def test_a_list_no_measure_of_the_matter_names_shows_but_does_not_restrict() -> None:
    abnormal = folded(list_entry(USCC, JAN_1, list_type="ABNORMAL_OPERATION"))
    found = assess([abnormal], PROCUREMENT, date(2026, 3, 2), **FINANCE_PROCUREMENT)
    assert found.verdict is Verdict.CLEAR
    assert found.in_force == (abnormal,)


def test_several_lists_each_trigger_the_measures_that_name_them() -> None:
    serious = folded(list_entry(USCC, JAN_1, entry_id="A"))
    defaulter = folded(list_entry(USCC, JAN_1, list_type="JUDGMENT_DEFAULTER", entry_id="B"))
    sector = folded(list_entry(USCC, JAN_1, list_type="SECTOR", entry_id="C"))
    subsidy = CATALOG.by_matter_type["SUBSIDY"]
    found = assess(
        [serious, defaulter, sector],
        subsidy,
        date(2026, 3, 2),
        sector="finance",
        matter_type="SUBSIDY",
    )
    cj04 = next(hit for hit in found.hits if hit.measure["code"] == "CJ04")
    assert {listing.entry_id for listing in cj04.listings} == {"A", "B", "C"}


def test_an_ended_listing_restricts_nothing_and_is_not_shown() -> None:
    listed = list_entry(USCC, JAN_1)
    listing = folded(listed, removal_of(listed, date(2026, 1, 2)))
    found = assess([listing], PROCUREMENT, date(2026, 3, 2), **FINANCE_PROCUREMENT)
    assert found.verdict is Verdict.CLEAR
    assert found.in_force == ()
    assert (
        assess([listing], PROCUREMENT, date(2025, 6, 1), **FINANCE_PROCUREMENT).verdict
        is Verdict.RESTRICTED
    )


def test_the_catalog_indexes_measures_by_matter_type_with_its_names() -> None:
    assert CATALOG.matter_type_names["GOVERNMENT_PROCUREMENT"] == "政府采购"
    assert CATALOG.list_type_names["SERIOUS_ILLEGAL_DISHONEST"] == "严重违法失信名单"
    expected = sorted(m.code for m in PROVINCE.measures if "SUBSIDY" in m.matters)
    assert [m["code"] for m in CATALOG.by_matter_type["SUBSIDY"]] == expected


# -- ids ------------------------------------------------------------------------------------


def test_a_check_repeated_has_the_same_id_and_another_entity_another() -> None:
    same = credit_check_id("hz-finance", USCC, "GOVERNMENT_PROCUREMENT", "ZJCG-1", JAN_1)
    assert same == credit_check_id("hz-finance", USCC, "GOVERNMENT_PROCUREMENT", "ZJCG-1", JAN_1)
    others = {
        credit_check_id("hz-finance", new_uscc(), "GOVERNMENT_PROCUREMENT", "ZJCG-1", JAN_1),
        credit_check_id("zj-finance", USCC, "GOVERNMENT_PROCUREMENT", "ZJCG-1", JAN_1),
        credit_check_id("hz-finance", USCC, "SUBSIDY", "ZJCG-1", JAN_1),
        credit_check_id("hz-finance", USCC, "GOVERNMENT_PROCUREMENT", "ZJCG-2", JAN_1),
        credit_check_id("hz-finance", USCC, "GOVERNMENT_PROCUREMENT", None, JAN_1),
        credit_check_id("hz-finance", USCC, "GOVERNMENT_PROCUREMENT", None, date(2025, 1, 2)),
    }
    assert same not in others and len(others) == 6


FINANCE = CheckingDepartment("hz-finance", "11330100MB0000000X", "杭州市财政局", "finance")


def check_event(reference: str | None, uscc: str = USCC) -> dict[str, Any]:
    """The matter event of 杭州市财政局's procurement check of ``uscc`` on 1 January 2025."""
    return matter_event(
        check_id=f"c-{reference}-{uscc}",
        department=FINANCE,
        uscc=uscc,
        entity_name=None,
        matter_type="GOVERNMENT_PROCUREMENT",
        matter_ref=reference,
        matter_date=JAN_1,
        checked_at=CLOCK.now(),
    )


def test_a_check_without_a_matter_reference_is_a_matter_of_its_own() -> None:
    event = check_event(None)
    assert event["matter_reference"] == f"CREDIT-CHECK/{USCC}/2025-01-01"
    assert event["source"] == "CREDIT_CHECK" and event["credit_check_id"] == f"c-None-{USCC}"


def test_the_checks_of_two_bidders_under_one_reference_are_two_matter_events() -> None:
    """One procurement, two bidders checked: each check's matter event has its own id (the
    entity's USCC is in it), the same one the joint-punishment processor derives, so the
    check and the department's report of one bidder's matter fold into one hit."""
    bidders = (USCC, new_uscc())
    events = [check_event("ZJCG-7", uscc=bidder) for bidder in bidders]
    assert [event["event_id"] for event in events] == [
        matter_event_id(bidder, "hz-finance", "GOVERNMENT_PROCUREMENT", "ZJCG-7", "CREDIT_CHECK")
        for bidder in bidders
    ]
    assert events[0]["event_id"] != events[1]["event_id"]


# -- the API, over state filled in memory -------------------------------------------------------

FINANCE_TOKEN = {"Authorization": "Bearer finance-token"}


class Departments:
    """Two tokens: a department's and an administrator's (refused)."""

    def cached(self, token: str) -> CheckingDepartment | None:
        return FINANCE if token == "finance-token" else None

    def verify(self, token: str | None) -> CheckingDepartment:
        from registry.errors import ForbiddenError, NotAuthenticatedError

        if token == "admin-token":
            raise ForbiddenError("admin has no department")
        raise NotAuthenticatedError("unknown or revoked token")

    def matter_type_name(self, code: str) -> str | None:
        return "职业培训" if code == "VOCATIONAL_TRAINING" else None


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def api(ready: bool, *entries: dict[str, Any]) -> tuple[TestClient, Recorder]:
    state = CreditState(KafkaClients(Settings()), CreditCheckTopics(), CLOCK)
    for entry in entries:
        state.listings.fold(entry)
    state.catalog = lambda: CATALOG  # type: ignore[method-assign]
    state.ready = threading.Event()
    if ready:
        state.ready.set()
    recorder = Recorder()
    rules = CreditCheckSettings(ready_wait_seconds=0)
    app = create_app(state, Departments(), recorder, rules, CLOCK)  # type: ignore[arg-type]
    return TestClient(app), recorder  # no lifespan: nothing is loaded from Kafka


def test_the_openapi_document_declares_the_check_and_its_refusals() -> None:
    client, _ = api(True)
    operation = client.get("/openapi.json").json()["paths"]["/v1/checks"]["get"]
    parameters = {p["name"]: p["required"] for p in operation["parameters"]}
    assert parameters == {
        "uscc": True,
        "matter_type": True,
        "matter_date": False,
        "matter_ref": False,
    }
    assert {"200", "401", "403", "422", "503"} <= set(operation["responses"])


def test_a_department_sees_the_listings_and_the_measure_and_its_check_is_recorded() -> None:
    entry = list_entry(USCC, JAN_1, planned_removal_on=date(2028, 1, 1))
    client, recorder = api(True, entry)
    answer = client.get(
        "/v1/checks",
        params={"uscc": USCC, "matter_type": "GOVERNMENT_PROCUREMENT", "matter_ref": "ZJCG-1"},
        headers={"Authorization": "Bearer finance-token"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["verdict"] == "RESTRICTED"
    assert body["listings"][0]["list_type"] == {
        "code": "SERIOUS_ILLEGAL_DISHONEST",
        "name": "严重违法失信名单",
    }
    assert body["measures"][0]["code"] == "CJ01"
    assert body["measures"][0]["implemented_by_checking_department"] is True
    assert body["measures"][0]["entry_ids"] == [entry["entry_id"]]
    [event] = recorder.events
    assert event["credit_check_id"] == body["check_id"]
    assert (event["department_code"], event["matter_reference"]) == ("hz-finance", "ZJCG-1")


def test_a_matter_type_without_measures_but_in_the_registry_is_clear() -> None:
    client, _ = api(True, list_entry(USCC, JAN_1))
    answer = client.get(
        "/v1/checks",
        params={"uscc": USCC, "matter_type": "VOCATIONAL_TRAINING"},
        headers={"Authorization": "Bearer finance-token"},
    )
    assert answer.json()["verdict"] == "CLEAR"


@pytest.mark.parametrize(("now", "today_in_china"), EITHER_SIDE_OF_MIDNIGHT)
def test_a_check_without_a_matter_date_is_for_today_in_china(
    now: datetime, today_in_china: date
) -> None:
    """A listing from 2 March applies to a check made at 00:30 on 2 March in China
    (16:30 UTC on 1 March), not to one made at 23:30 on 1 March there."""
    listed = list_entry(USCC, date(2026, 3, 2), planned_removal_on=date(2029, 3, 2))
    client, recorder = api(True, listed)
    with time_machine.travel(now, tick=False):
        answer = client.get(
            "/v1/checks",
            params={"uscc": USCC, "matter_type": "GOVERNMENT_PROCUREMENT"},
            headers=FINANCE_TOKEN,
        )
    body = answer.json()
    assert body["matter"]["matter_date"] == today_in_china.isoformat()
    expected = Verdict.RESTRICTED if today_in_china >= listed["listed_on"] else Verdict.CLEAR
    assert body["verdict"] == expected
    [event] = recorder.events
    assert event["matter_date"] == today_in_china
    assert event["matter_reference"] == f"CREDIT-CHECK/{USCC}/{today_in_china.isoformat()}"
    assert event["occurred_at"] == now


@pytest.mark.parametrize(
    ("headers", "params", "status", "field"),
    [
        ({}, {}, 401, None),
        ({"Authorization": "Bearer wrong"}, {}, 401, None),
        ({"Authorization": "Bearer admin-token"}, {}, 403, None),
        ({"Authorization": "Bearer finance-token"}, {"uscc": "91330106MA2CD7Q4XA"}, 422, "uscc"),
        ({"Authorization": "Bearer finance-token"}, {"matter_type": "TYPO"}, 422, "matter_type"),
        (
            {"Authorization": "Bearer finance-token"},
            {"matter_date": "2026-02-30"},
            422,
            "matter_date",
        ),
        (
            {"Authorization": "Bearer finance-token"},
            {"matter_dat": "2026-01-01"},
            422,
            "matter_dat",
        ),
    ],
)
def test_refusals_say_what_is_wrong(
    headers: dict[str, str], params: dict[str, str], status: int, field: str | None
) -> None:
    client, recorder = api(True)
    query = {"uscc": USCC, "matter_type": "GOVERNMENT_PROCUREMENT", **params}
    answer = client.get("/v1/checks", params=query, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field and answer.json()["message"]
    assert recorder.events == []


def test_a_check_before_the_state_is_loaded_is_answered_503_and_ready_says_so() -> None:
    client, recorder = api(False)
    answer = client.get(
        "/v1/checks",
        params={"uscc": USCC, "matter_type": "GOVERNMENT_PROCUREMENT"},
        headers={"Authorization": "Bearer finance-token"},
    )
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert "still being loaded" in answer.json()["message"]
    assert client.get("/ready").status_code == 503
    assert recorder.events == []


# -- the record of each check, when it cannot be delivered ----------------------------------------


class FailingProducer:
    """A producer whose every delivery fails, as librdkafka reports a message timeout."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        for callback in self.callbacks:
            callback(KafkaError(KafkaError._MSG_TIMED_OUT), None)
        self.callbacks.clear()
        return 0

    def flush(self, timeout: float = 0) -> int:
        return self.poll()


def outcomes(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("xietong_credit_check_matter_events_total", labels) or 0.0


@contextmanager
def logged() -> Iterator[list[str]]:
    """The service's log lines while the block runs (whether or not the platform's log
    configuration, which stops propagation, is in place)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(LineFormatter().format(record))  # type: ignore[method-assign]
    service_logger = logging.getLogger("streams.credit_check.recorder")
    level = service_logger.level
    service_logger.addHandler(handler)
    service_logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        service_logger.removeHandler(handler)
        service_logger.setLevel(level)


def test_an_undeliverable_matter_event_is_counted_and_logged_whole() -> None:
    before = outcomes("delivery")
    recorder = MatterEventRecorder(
        FailingProducer(), "credit.matter-events", lambda event: b"encoded", 10
    )
    recorder.start()
    with logged() as lines:
        recorder.record(check_event("ZJCG-LOST"))
        recorder.stop()
    assert outcomes("delivery") == before + 1
    [line] = [line for line in lines if "matter_event_undelivered" in line]
    assert "ZJCG-LOST" in line and "Local: Message timed out" in line


def test_a_matter_event_beyond_the_queue_is_counted_not_dropped_silently() -> None:
    before = outcomes("queue_full")
    recorder = MatterEventRecorder(FailingProducer(), "credit.matter-events", bytes, 1)
    with logged() as lines:
        recorder.record(check_event("ZJCG-1"))
        recorder.record(check_event("ZJCG-2"))  # not started: the queue holds one
    assert outcomes("queue_full") == before + 1
    [line] = lines
    assert '"outcome": "queue_full"' in line and "ZJCG-2" in line


def test_a_registry_database_that_does_not_answer_is_503_not_401() -> None:
    directory = RegistryDirectory(
        "postgresql+psycopg2://nobody:secret@127.0.0.1:9/registry", None, cache_seconds=5
    )
    with pytest.raises(ServiceUnavailableError, match="cannot be reached to verify the token"):
        directory.verify("xtr_anything")
