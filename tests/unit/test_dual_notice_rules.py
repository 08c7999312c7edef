"""The 双告知 rules that need no broker: matching a scope against the catalog, the claim
deadline and its working-day calendar, the ids, the state machine's table, and the rule
methods of streams/dual_notice/rules.py on dicts with the sample province's catalog (the
same rules run in the Faust worker: tests/integration/test_dual_notice.py)."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import time_machine
import yaml
from hypothesis import HealthCheck, given, settings

from connectors.mapping import DepartmentMapping, MappingFile
from streams.dual_notice.rules import (
    ACTIONS,
    ActionKind,
    ApprovalCatalog,
    DualNoticeOutput,
    DualNoticeRules,
    PushState,
    push_id,
    routing_id,
)
from streams.dual_notice.settings import DualNoticeSettings
from streams.outputs import Outgoing
from tests.dual_notice_records import (
    action,
    key_of,
    licence,
    received,
    registration,
    sample_catalog,
    sample_directory,
)
from xietong.clock import business_clock, millis
from xietong.uscc import make_uscc


@pytest.fixture(scope="module")
def catalog() -> ApprovalCatalog:
    return sample_catalog()


def codes(matches) -> list[str]:
    return [match.item.code for match in matches]


def test_a_permit_entry_matches_the_wording_it_equals(catalog: ApprovalCatalog) -> None:
    assert codes(catalog.match(["道路货物运输（不含危险货物）"], "F5211")) == ["DLHWYSXK"]


def test_a_permit_entry_matches_a_wording_it_extends_with_a_qualifier(
    catalog: ApprovalCatalog,
) -> None:
    assert codes(catalog.match(["危险化学品经营（不含仓储）"], "F5211")) == ["WXHXPJYXK"]
    assert codes(catalog.match(["食品销售(仅限网络)"], "F5211")) == ["SPJYXK"]


def test_an_entry_that_only_begins_like_a_wording_does_not_match(catalog: ApprovalCatalog) -> None:
    assert catalog.match(["食品销售代理"], "F5211") == []


def test_the_industry_code_matches_too_and_an_item_is_needed_once_with_both_reasons(
    catalog: ApprovalCatalog,
) -> None:
    [match] = catalog.match(["餐饮服务"], "H6210")

    assert match.item.code == "SPJYXK"
    assert match.matched_by == ("经营范围: 餐饮服务", "行业代码: H6210")


def test_several_items_come_in_code_order(catalog: ApprovalCatalog) -> None:
    assert codes(catalog.match(["食品销售", "烟草制品零售"], "F5213")) == ["SPJYXK", "YCZMLSXK"]


def test_the_catalog_routes_each_item_per_division_and_has_the_one_gap(
    catalog: ApprovalCatalog,
) -> None:
    pesticide = catalog.items["NYJYXK"]

    assert catalog.items["DLHWYSXK"].routes["330106"]["code"] == "hz-xh-transport"
    assert "330102" not in pesticide.routes and pesticide.routes["330100"]["code"] == "hz-agri"


def test_a_licence_names_its_item_by_code_or_by_its_certificate(catalog: ApprovalCatalog) -> None:
    by_code = catalog.item_for_licence({"approval_item_code": "YCZMLSXK"})
    by_certificate = catalog.item_for_licence(
        {"approval_item_code": None, "certificate_name": "食品经营许可证"}
    )

    assert by_code is not None and by_code.code == "YCZMLSXK"
    assert by_certificate is not None and by_certificate.code == "SPJYXK"


CHINA = business_clock().zone  # the province's: Asia/Shanghai


def test_the_claim_deadline_is_24_00_of_the_fifteenth_day_after_the_registration_by_default() -> (
    None
):
    """The law counts the period from the day after the registration and ends it at 24:00 of
    its last day (《民法典》 第二百零一条). This test asserted ``registered + 15 days``
    (00:00 of 17 March) before the deadlines were counted so; it is now 24:00 of 17 March."""
    registered = datetime(2026, 3, 2, tzinfo=CHINA)

    deadline = DualNoticeSettings().claim_deadline(millis(registered))

    assert deadline == millis(datetime(2026, 3, 18, tzinfo=CHINA))


def test_in_working_days_the_national_holidays_do_not_count_but_make_up_days_do() -> None:
    """Before the national calendar (chinese-calendar) this test listed 10-01 and 10-02 as
    the holidays by hand and expected 24:00 of 10-09; the whole 国庆 week 10-01 … 10-07 is
    holidays, and 10-10, a Saturday, is worked instead (调休)."""
    rules = DualNoticeSettings(claim_period=timedelta(days=5), working_days=True)
    registered = datetime(2026, 9, 30, 10, 0, tzinfo=CHINA)  # a Wednesday

    deadline = rules.claim_deadline(millis(registered))

    # 10-08, 10-09, 10-10 (调休), 10-12 and 10-13 are the five working days
    assert deadline == millis(datetime(2026, 10, 14, tzinfo=CHINA))


def test_the_province_adds_its_own_holidays_and_working_days(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XIETONG_DUAL_NOTICE_WORKING_DAYS", "true")
    monkeypatch.setenv("XIETONG_DUAL_NOTICE_CLAIM_PERIOD", "P2D")
    monkeypatch.setenv("XIETONG_DUAL_NOTICE_EXTRA_HOLIDAYS", '["2026-06-16"]')
    monkeypatch.setenv("XIETONG_DUAL_NOTICE_EXTRA_WORKING_DAYS", '["2026-06-20"]')
    rules = DualNoticeSettings()
    registered = datetime(2026, 6, 15, 10, 0, tzinfo=CHINA)  # a Monday; 06-19 is 端午

    # 06-16 is the province's holiday, 06-17 and 06-18 count
    assert rules.claim_deadline(millis(registered)) == millis(datetime(2026, 6, 19, tzinfo=CHINA))
    # from Thursday: 06-19 端午 and 06-21 do not count, the Saturday the province works does
    thursday = datetime(2026, 6, 18, 10, 0, tzinfo=CHINA)
    assert rules.claim_deadline(millis(thursday)) == millis(datetime(2026, 6, 23, tzinfo=CHINA))


@pytest.mark.parametrize("working_days", [False, True], ids=["days", "working days"])
def test_a_rehearsal_period_of_seconds_runs_from_the_instant_in_either_mode(
    working_days: bool,
) -> None:
    # in working days a PT30S claim period ended at midnight in China, not 30 s later
    rules = DualNoticeSettings(claim_period=timedelta(seconds=30), working_days=working_days)
    registered = millis(datetime(2026, 6, 15, 10, 0, tzinfo=CHINA))

    assert rules.claim_deadline(registered) == registered + 30_000


def test_periods_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIETONG_DUAL_NOTICE_CLAIM_PERIOD", "P10D")
    monkeypatch.setenv("XIETONG_DUAL_NOTICE_LICENCE_PERIOD", "PT30S")

    rules = DualNoticeSettings()

    assert rules.claim_period == timedelta(days=10)
    assert rules.licence_period == timedelta(seconds=30)


def test_ids_follow_from_the_registration_event_the_item_and_the_department() -> None:
    first = push_id("event-1", "SPJYXK", "hz-xh-amr")

    assert first == push_id("event-1", "SPJYXK", "hz-xh-amr")
    assert (
        len(
            {
                first,
                push_id("event-1", "SPJYXK", "hz-amr"),
                push_id("event-2", "SPJYXK", "hz-xh-amr"),
            }
        )
        == 3
    )
    assert routing_id("event-1", "NYJYXK") != push_id("event-1", "NYJYXK", "")


def test_a_returned_push_cannot_be_claimed_but_the_registrar_may_reassign_it() -> None:
    claim_from, _, claim_by = ACTIONS[ActionKind.CLAIM]
    reassign_from, _, reassign_by = ACTIONS[ActionKind.REASSIGN]

    assert PushState.RETURNED not in claim_from and claim_by == {"department"}
    assert PushState.RETURNED in reassign_from and reassign_by == {"registrar"}


def test_nothing_moves_a_final_push() -> None:
    final = {PushState.REASSIGNED, PushState.STOPPED, PushState.FULFILLED, PushState.CLOSED}

    assert all(not (allowed & final) for allowed, _, _ in ACTIONS.values())


# -- the rules on dicts: a harness ----------------------------------------------------------

CATALOG = sample_catalog()
DIRECTORY = sample_directory()
XIHU = "330106"  # 西湖区, registered by hz-xh-amr
ROAD_FREIGHT = "道路货物运输（不含危险货物）"
#: The items a Xihu entity's scope needs here, and the department each is routed to.
XIHU_ITEMS = {
    "DLHWYSXK": (ROAD_FREIGHT, "hz-xh-transport"),
    "YCZMLSXK": ("烟草制品零售", "hz-xh-tobacco"),
    "SPJYXK": ("食品销售", "hz-xh-amr"),
}
REGISTRAR = "hz-xh-amr"
#: Where a push may be reassigned to (another department of the district).
TARGETS = ("hz-xh-health", "hz-xh-em", "hz-xh-culture", "hz-xh-commerce")
DAY_MS = 86_400_000
#: 15:30, 16:30 and 23:30 UTC on 1 March 2026: 23:30 on 1 March in Hangzhou, then 00:30
#: and 07:30 on 2 March.
INSTANTS = {
    "15:30Z": (datetime(2026, 3, 1, 15, 30, tzinfo=UTC), date(2026, 3, 1)),
    "16:30Z": (datetime(2026, 3, 1, 16, 30, tzinfo=UTC), date(2026, 3, 2)),
    "23:30Z": (datetime(2026, 3, 1, 23, 30, tzinfo=UTC), date(2026, 3, 2)),
}
ID_FIELD = {
    "dual_notice_push": "push_id",
    "dual_notice_applicant_notice": "notice_id",
    "dual_notice_routing_failure": "routing_id",
    "dual_notice_claimable_item": "routing_id",
    "rejected_department_action": "rejection_id",
    "dual_notice_alert": "alert_id",
    "entity_closure_notice": "notice_id",
}


class Harness:
    """The rules on dicts, the sample catalog and departments (every one with an inbox)
    and a fixed time; every record they published, as it was when published."""

    def __init__(self) -> None:
        self.registered_scopes: dict[str, Any] = {}
        self.pushes: dict[str, Any] = {}
        self.licences: dict[str, Any] = {}
        self.rules = DualNoticeRules(
            registered_scopes=self.registered_scopes,
            pushes=self.pushes,
            licences=self.licences,
            catalog=lambda: CATALOG,
            directory=lambda: DIRECTORY,
            has_inbox=lambda department: True,
        )
        self.published: list[Outgoing] = []

    def feed(self, kind: str, record: dict[str, Any], now: int) -> DualNoticeOutput:
        if kind == "due":
            output = self.rules.on_due(record)
        else:
            output = getattr(self.rules, f"on_{kind}")(record, now)
        # The app encodes each record as it is sent; later changes must not show here.
        self.published += copy.deepcopy(output.outgoing)
        return output

    def of(self, record_type: str) -> list[dict[str, Any]]:
        return [out.value for out in self.published if out.record_type == record_type]

    def final(self) -> dict[tuple[str, str], dict[str, Any]]:
        """What a reader keeping the latest record per id holds."""
        return {
            (out.record_type, out.value[ID_FIELD[out.record_type]]): out.value
            for out in self.published
        }

    def state(self) -> Any:
        return copy.deepcopy((self.registered_scopes, self.pushes, self.licences))


def xihu_registration(moment: int, *items: str, event_id: str = "event-1") -> dict[str, Any]:
    permits = tuple(XIHU_ITEMS[item][0] for item in items)
    uscc = make_uscc("91", XIHU, rng=random.Random(7))
    return registration(
        XIHU, permits, uscc=uscc, event_time_ms=moment, event_id=event_id, rng=random.Random(8)
    )


# -- the rules as the domain brief says them (§5), at three hours of one day ----------------


@pytest.mark.parametrize("instant", INSTANTS.values(), ids=INSTANTS.keys())
def test_a_330106_registration_needing_road_freight_makes_one_push_due_at_24_00_of_the_15th_day(
    instant: tuple[datetime, date],
) -> None:
    """A registration in 330106 whose scope needs 道路货物运输 makes one push, to the
    district's transport department, due at 24:00 of the 15th day after the day (in the
    province) it was registered on, whatever the hour of that day."""
    moment, day_in_hangzhou = instant
    with time_machine.travel(moment, tick=False):
        now = business_clock().now_ms()
        h = Harness()
        record = xihu_registration(now, "DLHWYSXK")

        h.feed("registration", record, now)

    [push] = h.of("dual_notice_push")
    assert push["department"]["code"] == "hz-xh-transport"
    assert push["item"]["code"] == "DLHWYSXK" and push["state"] == PushState.PUSHED
    last_day = day_in_hangzhou + timedelta(days=15)
    assert push["claim_deadline"] == millis(datetime.combine(last_day, time.max, CHINA)) + 1
    [delivered] = [out for out in h.published if out.inboxes]
    assert delivered.inboxes == ("hz-xh-transport",)
    [notice] = h.of("dual_notice_applicant_notice")
    assert [item["item"]["name"] for item in notice["items"]] == ["道路货物运输经营许可"]


@pytest.mark.parametrize("instant", INSTANTS.values(), ids=INSTANTS.keys())
def test_a_claim_made_at_23_59_on_1_march_has_its_licence_deadline_counted_from_2_march(
    instant: tuple[datetime, date],
) -> None:
    """The licence period (60 days) of a claim made at 23:59 on 1 March in Hangzhou counts
    from 2 March: its 60th day is 30 April, so the deadline is 24:00 of 30 April, however
    late in the day, and at whatever hour, the worker reads the claim. (It read the claim
    at the instants of 1 March too, before 23:59 in China at 15:30Z; an action dated
    after the worker's now, beyond the clock skew, is rejected since issue 13, so the
    worker reads it at those hours a day later.)"""
    registered = millis(datetime(2026, 2, 27, 9, 0, tzinfo=CHINA))
    claimed = millis(datetime(2026, 3, 1, 23, 59, tzinfo=CHINA))
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")
    h.feed("registration", record, registered)
    [push] = h.of("dual_notice_push")
    claim = action(record["uscc"], push["push_id"], "CLAIM", acted_at_ms=claimed, action_id="A1")

    with time_machine.travel(instant[0] + timedelta(days=1), tick=False):
        h.feed("action", received("hz-xh-transport", claim, 1), business_clock().now_ms())

    claimed_push = h.of("dual_notice_push")[-1]
    assert claimed_push["state"] == PushState.CLAIMED and claimed_push["claimed_at"] == claimed
    assert claimed_push["licence_deadline"] == millis(datetime(2026, 5, 1, tzinfo=CHINA))


def test_a_claim_period_set_in_hours_runs_from_the_instant_as_the_law_counts_hours() -> None:
    """A period with hours (a rehearsal's PT1H) is not rounded to days: it ends one hour
    after the registration (《民法典》 第二百零一条第二款)."""
    registered = millis(datetime(2026, 3, 1, 23, 30, tzinfo=CHINA))

    deadline = DualNoticeSettings(claim_period=timedelta(hours=1)).claim_deadline(registered)

    assert deadline == registered + 3_600_000


# -- acted_at: when a department says it acted must be possible ----------------------------


def test_a_claim_dated_2020_on_a_2026_push_is_rejected_and_starts_no_licence_deadline() -> None:
    """Issue 13's repro: the claim was accepted, its licence deadline was in 2020, and the
    无证经营 alert fired on the next tick."""
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    now = registered + DAY_MS
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")
    h.feed("registration", record, registered)
    [push] = h.of("dual_notice_push")
    in_2020 = millis(datetime(2020, 3, 2, 10, 0, tzinfo=CHINA))
    claim = action(record["uscc"], push["push_id"], "CLAIM", acted_at_ms=in_2020, action_id="A1")

    outcome = h.feed("action", received("hz-xh-transport", claim, 1), now)

    [rejected] = h.of("rejected_department_action")
    assert rejected["reason"].startswith("CLAIM A1 has acted_at 2020-03-02T10:00:00+08:00,")
    assert (
        f"before push {push['push_id']} was made (2026-03-02T10:00:00+08:00)"
        in (rejected["reason"])
    )
    assert rejected["push_state"] == PushState.PUSHED
    assert outcome.deadlines == [] and h.of("dual_notice_push") == [push]
    # the timer's tick after the licence period the claim would have started finds no claim
    tick = {"uscc": record["uscc"], "push_id": push["push_id"], "due": "LICENCE"}
    h.feed("due", {**tick, "checked_at": now + DAY_MS}, now + DAY_MS)
    assert h.of("dual_notice_alert") == []


@pytest.mark.parametrize(
    ("ahead", "applied"),
    [(timedelta(minutes=4), True), (timedelta(minutes=6), False)],
    ids=["4 min ahead", "6 min ahead"],
)
def test_an_action_dated_ahead_of_now_is_applied_only_within_the_clock_skew(
    ahead: timedelta, applied: bool
) -> None:
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    now = registered + DAY_MS
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")
    h.feed("registration", record, registered)
    [push] = h.of("dual_notice_push")
    acted_at = now + int(ahead.total_seconds() * 1000)
    claim = action(record["uscc"], push["push_id"], "CLAIM", acted_at_ms=acted_at, action_id="A1")

    h.feed("action", received("hz-xh-transport", claim, 1), now)

    assert (h.of("dual_notice_push")[-1]["state"] == PushState.CLAIMED) is applied
    if not applied:
        [rejected] = h.of("rejected_department_action")
        assert "CLAIM A1 has acted_at 2026-03-03T10:06:00+08:00, later than" in rejected["reason"]
        assert "the clock skew allowed (0:05:00" in rejected["reason"]


def test_a_reassigned_push_cannot_be_acted_on_before_the_reassignment() -> None:
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    reassigned = registered + 3 * DAY_MS
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")
    h.feed("registration", record, registered)
    [push] = h.of("dual_notice_push")
    give = action(
        record["uscc"],
        push["push_id"],
        "REASSIGN",
        target=TARGETS[0],
        acted_at_ms=reassigned,
        action_id="A1",
    )
    h.feed("action", received(REGISTRAR, give, 1), reassigned)
    [replacement] = [p for p in h.of("dual_notice_push") if p["department"]["code"] == TARGETS[0]]
    claim = action(
        record["uscc"],
        replacement["push_id"],
        "CLAIM",
        acted_at_ms=reassigned - DAY_MS,
        action_id="A2",
    )

    h.feed("action", received(TARGETS[0], claim, 2), reassigned + DAY_MS)

    [rejected] = h.of("rejected_department_action")
    assert (
        f"before push {replacement['push_id']} was made (2026-03-05T10:00:00+08:00)"
        in (rejected["reason"])
    )


def test_an_event_processed_again_sends_again_what_it_sent_and_changes_nothing() -> None:
    h = Harness()
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    record = xihu_registration(now, "DLHWYSXK", "YCZMLSXK")
    first = h.feed("registration", record, now)
    before = h.state()

    again = h.feed("registration", record, now)  # after a crash, before its offset's commit

    assert [o.value for o in again.outgoing] == [o.value for o in first.outgoing]
    assert h.state() == before


# -- the property: arrival order and duplicates do not change the final set ---------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[str, dict[str, Any]]], list[list[int]]]:
    """One registration's history: the registration (a 设立 in 西湖区 needing one to three
    items), then for each item a thread of what happened to its push — claims, returns,
    reassignments, stops, a licence, the timer's claim and licence deadlines.

    What the rules promise, and so what is generated: the registration comes first (an
    action on a push that does not exist yet is rejected, by the domain's rule; and a
    licence read before the registration makes the push FULFILLED at once, version 1,
    where read after it makes PUSHED then FULFILLED by the licensing department), and the
    events of one push keep their order (its state machine decides on what came before:
    a claim after a stop is rejected, a licence after a claim fulfils a claimed push; a
    claim dated before the claim deadline but read after the timer's tick finds the push
    escalated). Each action is one its push's state allows, by whom it allows: a rejected
    action read again is judged again against the push's state then, so its rejection
    (same id) may name another state. Those order dependences are issue 13's. Between
    the items anything goes, and every event may come again later.

    Returns the events and, for each item, the positions of its thread's events.
    """
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    items = draw(st.lists(st.sampled_from(sorted(XIHU_ITEMS)), min_size=1, max_size=3, unique=True))
    record = xihu_registration(registered, *items)
    uscc, event_id = record["uscc"], key_of(record)
    events: list[tuple[str, dict[str, Any]]] = [("registration", record)]
    threads: list[list[int]] = []
    late = registered + 200 * DAY_MS  # after every deadline
    for item in items:
        department = XIHU_ITEMS[item][1]
        push = push_id(event_id, item, department)
        state, thread, targets = PushState.PUSHED, [], list(TARGETS)
        for step in range(draw(st.integers(0, 5))):
            at = registered + (step + 1) * DAY_MS
            moves = {
                PushState.PUSHED: ["CLAIM", "RETURN", "STOP", "REASSIGN", "LICENCE", "CLAIM_DUE"],
                PushState.OVERDUE: ["CLAIM", "RETURN", "STOP", "REASSIGN", "LICENCE"],
                PushState.CLAIMED: ["STOP", "LICENCE", "LICENCE_DUE"],
                PushState.UNLICENSED: ["STOP", "LICENCE"],
                PushState.RETURNED: ["REASSIGN"],
            }.get(state, [])
            # Each reassignment takes a target no push of the item has had.
            moves = [move for move in moves if move != "REASSIGN" or targets]
            if not moves:
                break
            move = draw(st.sampled_from(moves))
            if move in ("CLAIM_DUE", "LICENCE_DUE"):
                due = "CLAIM" if move == "CLAIM_DUE" else "LICENCE"
                value = {"uscc": uscc, "push_id": push, "due": due, "checked_at": late}
                events.append(("due", value))
                state = PushState.OVERDUE if due == "CLAIM" else PushState.UNLICENSED
            elif move == "LICENCE":
                value = licence(uscc, item, department, number=f"{item}-{step}")
                events.append(("licence", value))
                state = PushState.FULFILLED
            else:
                by = REGISTRAR if move == "REASSIGN" else department
                if move == "STOP":
                    by = draw(st.sampled_from((department, REGISTRAR)))
                target = targets.pop(0) if move == "REASSIGN" else None
                value = action(
                    uscc,
                    push,
                    move,
                    reason="NO_SUCH_ITEM" if move == "RETURN" else None,
                    target=target,
                    acted_at_ms=at,
                    action_id=f"{push[:8]}-{step}",
                )
                events.append(("action", received(by, value, offset=len(events))))
                if move == "REASSIGN":
                    assert target is not None
                    push, department, state = (
                        push_id(event_id, item, target),
                        target,
                        PushState.PUSHED,
                    )
                else:
                    state = {"CLAIM": PushState.CLAIMED, "RETURN": PushState.RETURNED}.get(
                        move, PushState.STOPPED
                    )
            thread.append(len(events) - 1)
        threads.append(thread)
    return events, threads


def run(events: list[tuple[str, dict[str, Any]]]) -> Harness:
    h = Harness()
    # read after the whole history happened: an action dated after now is rejected
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA)) + 200 * DAY_MS
    for kind, record in events:
        h.feed(kind, record, now)
    return h


@st.composite
def arrivals(
    draw: st.DrawFn, events: list[tuple[str, dict[str, Any]]], threads: list[list[int]]
) -> list[int]:
    """An arrival order: the registration first, the items' threads interleaved at random
    (each in its order), and duplicates of any event at any point after it."""
    queues = [list(thread) for thread in threads if thread]
    order = [0]
    while queues:
        queue = draw(st.sampled_from(queues))
        order.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(order) - 1))
        later = draw(st.integers(position + 1, len(order)))
        order.insert(later, order[position])
    return order


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=histories())
def test_any_arrival_order_with_duplicates_ends_with_the_final_set_of_in_order_processing(
    data: st.DataObject, history: tuple[list[tuple[str, dict[str, Any]]], list[list[int]]]
) -> None:
    """Pushes, applicant notices, alerts: the latest record of each id is the same for any
    arrival order the rules promise to handle (:func:`histories`) with duplicates."""
    events, threads = history
    in_order = run(events).final()

    order = data.draw(arrivals(events, threads))

    assert run([events[i] for i in order]).final() == in_order


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=histories())
def test_a_duplicate_of_any_event_changes_nothing(
    data: st.DataObject, history: tuple[list[tuple[str, dict[str, Any]]], list[list[int]]]
) -> None:
    """Read again after the whole history, an event leaves the state as it was and sends
    only records already published, as they were last published."""
    events, _ = history
    h = run(events)
    before, final = h.state(), h.final()
    kind, record = data.draw(st.sampled_from(events))

    again = h.feed(kind, record, millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA)))

    assert h.state() == before
    for out in again.outgoing:
        assert final[(out.record_type, out.value[ID_FIELD[out.record_type]])] == out.value


# -- versions of one licence (issue 13 §1) ---------------------------------------------------


def test_a_licences_older_version_read_after_its_cancellation_fulfils_no_later_push() -> None:
    """The licence's 注销 is its version 2: read before version 1 (VALID), it still is what
    the platform holds, so a push made afterwards waits for a claim."""
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record = xihu_registration(now, "DLHWYSXK")
    uscc = record["uscc"]
    versions = {
        status: licence(uscc, "DLHWYSXK", "hz-xh-transport", status=status, number="JY-1",
                        version=version)
        for status, version in (("VALID", "1"), ("CANCELLED", "2"))
    }  # fmt: skip
    h.feed("licence", versions["CANCELLED"], now)
    h.feed("licence", versions["VALID"], now)

    h.feed("registration", record, now)

    (held,) = h.licences[uscc].values()
    assert held["status"] == "CANCELLED"
    [push] = h.of("dual_notice_push")
    assert push["state"] == PushState.PUSHED


# -- which licence fulfils a push (issue 13 §2) -----------------------------------------------


def test_a_licence_that_expired_before_the_registration_fulfils_no_push() -> None:
    """Issue 13's repro: a licence VALID with 有效期至 2020-01-01 fulfilled a 2026 push."""
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record = xihu_registration(now, "DLHWYSXK")
    expired = licence(
        record["uscc"], "DLHWYSXK", "hz-xh-transport",
        decided_on=date(2016, 1, 2), valid_to=date(2020, 1, 1),
    )  # fmt: skip

    h.feed("licence", expired, now)
    h.feed("registration", record, now)
    h.feed("licence", expired, now)  # read again after the push: still nothing

    assert [push["state"] for push in h.of("dual_notice_push")] == [PushState.PUSHED]


def test_a_licence_issued_before_a_cancellation_fulfils_no_push_of_the_re_registration() -> None:
    """An entity 注销 on 1 March and registered again (same USCC) on 2 March needs its
    permits anew: the licence issued to it in 2025 fulfils none of the new pushes, whether
    it is read before or after them; a licence issued after the re-registration does."""
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    cancelled_at = millis(datetime(2026, 3, 1, 10, 0, tzinfo=CHINA))
    h = Harness()
    record = xihu_registration(now, "DLHWYSXK", event_id="event-2")
    uscc = record["uscc"]
    old = licence(uscc, "DLHWYSXK", "hz-xh-transport", decided_on=date(2025, 5, 1), number="A")
    h.feed("licence", old, cancelled_at)
    cancel = registration(XIHU, kind="CANCEL", uscc=uscc, event_time_ms=cancelled_at)
    h.feed("registration", cancel, cancelled_at)

    h.feed("registration", record, now)
    h.feed("licence", old, now)

    assert [push["state"] for push in h.of("dual_notice_push")] == [PushState.PUSHED]
    h.feed("licence", licence(uscc, "DLHWYSXK", "hz-xh-transport", number="B"), now)
    assert h.of("dual_notice_push")[-1]["state"] == PushState.FULFILLED
    assert h.of("dual_notice_push")[-1]["fulfilled_by_licence"] == "B"


def test_a_licence_with_a_code_the_catalog_does_not_hold_is_named_by_its_certificate(
    catalog: ApprovalCatalog,
) -> None:
    """Issue 13's repro: a national item code with 食品经营许可证 fulfilled nothing."""
    item = catalog.item_for_licence(
        {"approval_item_code": "11100000000013338W3000117", "certificate_name": "食品经营许可证"}
    )

    assert item is not None and item.code == "SPJYXK"


def test_a_registrations_older_version_read_last_leaves_the_corrected_scope() -> None:
    """A 设立 corrected (version 2: 烟草制品零售 added) and read before its version 1: the
    scope a later 变更 is compared with stays the correction's."""
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    first = xihu_registration(now, "DLHWYSXK", event_id="event-1")
    corrected = xihu_registration(now, "DLHWYSXK", "YCZMLSXK", event_id="event-2")
    corrected["envelope"] = {**first["envelope"], "event_id": "event-2", "record_version": "2"}
    h.feed("registration", corrected, now)

    h.feed("registration", first, now)

    held = h.registered_scopes[first["uscc"]]
    assert held["event_id"] == "event-2"
    assert held["scope"]["permit_entries"] == sorted(
        XIHU_ITEMS[item][0] for item in ("DLHWYSXK", "YCZMLSXK")
    )


# -- the business scope as registration systems write it (issue 13 §6) ----------------------

ROOT = Path(__file__).parents[2]

XIHU_REGISTRATIONS = DepartmentMapping(
    MappingFile.model_validate(
        yaml.safe_load(
            (ROOT / "connectors" / "departments" / "hz-amr-registration.yaml").read_text(
                encoding="utf-8"
            )
        )
    ),
    origin="hz-amr-registration.yaml",
)


def registered_with_scope(scope: str | list[str], industry: str = "F5211") -> dict[str, Any]:
    """A Xihu 设立 whose 经营范围 is ``scope``, split into entries by the registration
    authority's own mapping, as its connector does."""
    mapped = XIHU_REGISTRATIONS.map({"业务流水号": "R-1", "经营范围": scope}).fields
    record = registration(XIHU, industry=industry, rng=random.Random(9))
    record["business_scope"] = scope if isinstance(scope, str) else "；".join(scope)
    record["business_scope_items"] = mapped["business_scope_items"]
    return record


def pushed_to(scope: str | list[str], industry: str = "F5211") -> list[tuple[str, str]]:
    """(item, department) of every push a registration with this scope makes."""
    h = Harness()
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h.feed("registration", registered_with_scope(scope, industry), now)
    return sorted((p["item"]["code"], p["department"]["code"]) for p in h.of("dual_notice_push"))


def test_permit_entries_separated_by_a_comma_make_one_push_each() -> None:
    """许可项目：食品销售，烟草制品零售 makes two pushes: 食品 to 市场监管, 烟草 to 烟草专卖."""
    assert pushed_to("许可项目：食品销售，烟草制品零售") == [
        ("SPJYXK", "hz-xh-amr"),
        ("YCZMLSXK", "hz-xh-tobacco"),
    ]


@pytest.mark.parametrize("separator", ["，", "、", "；", ";", ","])
def test_every_separator_registration_systems_write_ends_a_permit_entry(separator: str) -> None:
    assert pushed_to(f"许可项目：食品销售{separator}烟草制品零售") == [
        ("SPJYXK", "hz-xh-amr"),
        ("YCZMLSXK", "hz-xh-tobacco"),
    ]


def test_a_free_text_scope_with_no_heading_still_makes_the_food_push() -> None:
    """A free-text scope 餐饮服务 with no heading still makes the 食品经营 push: only an
    explicit 一般项目 says an entry needs no permit."""
    assert pushed_to("餐饮服务") == [("SPJYXK", "hz-xh-amr")]
    assert pushed_to("日用百货销售，餐饮服务。") == [("SPJYXK", "hz-xh-amr")]


def test_a_list_valued_scope_is_matched_item_by_item() -> None:
    assert pushed_to(["餐饮服务", "日用百货销售、烟草制品零售"]) == [
        ("SPJYXK", "hz-xh-amr"),
        ("YCZMLSXK", "hz-xh-tobacco"),
    ]


def test_an_entry_under_an_explicit_general_heading_still_needs_no_permit() -> None:
    assert pushed_to("一般项目：食品销售（仅销售预包装食品），日用百货销售") == []


def test_the_industry_code_still_needs_its_item_when_the_scope_names_none() -> None:
    assert pushed_to("一般项目：日用百货销售", industry="H6210") == [("SPJYXK", "hz-xh-amr")]


def test_drug_wholesale_is_pushed_to_the_provincial_drug_administration() -> None:
    """药品管理法 §51: 药品批发 is approved by the province's 药监, 药品零售 by the city's."""
    assert pushed_to("许可项目：药品批发；药品零售") == [
        ("YPJYXK", "hz-mpa"),
        ("YPPFJYXK", "zj-mpa"),
    ]


def test_a_standard_wording_with_an_enumeration_comma_needs_only_what_its_parts_name() -> None:
    assert pushed_to("许可项目：烟草制品零售。一般项目：广告设计、代理") == [
        ("YCZMLSXK", "hz-xh-tobacco")
    ]


# -- a department is told when its push ends (issue 13 §3) -----------------------------------


def inbox_of(h: Harness, department: str) -> list[dict[str, Any]]:
    """The pushes ``department``'s inbox got, as they were when sent."""
    return [
        out.value
        for out in h.published
        if out.record_type == "dual_notice_push" and department in out.inboxes
    ]


def pushed_to_transport(h: Harness, registered: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A 设立 needing 道路货物运输 pushed to 西湖区交通运输: its registration and its push."""
    record = xihu_registration(registered, "DLHWYSXK")
    h.feed("registration", record, registered)
    [push] = h.of("dual_notice_push")
    return record, push


def transport_acts(h: Harness, push: dict[str, Any], kind: str, at: int, offset: int) -> None:
    claim = action(push["entity"]["uscc"], push["push_id"], kind, acted_at_ms=at)
    h.feed("action", received("hz-xh-transport", claim, offset), at)


def end_by_licence(h: Harness, record: dict[str, Any], push: dict[str, Any], at: int) -> None:
    transport_acts(h, push, "CLAIM", at, offset=1)
    h.feed("licence", licence(record["uscc"], "DLHWYSXK", "hz-xh-transport"), at)


def end_by_cancellation(h: Harness, record: dict[str, Any], push: dict[str, Any], at: int) -> None:
    closed = xihu_registration(at, event_id="event-cancel")
    closed.update(uscc=record["uscc"], event_kind="CANCEL", status="CANCELLED")
    h.feed("registration", closed, at)


def end_by_reassignment(h: Harness, record: dict[str, Any], push: dict[str, Any], at: int) -> None:
    give = action(record["uscc"], push["push_id"], "REASSIGN", target=TARGETS[0], acted_at_ms=at)
    h.feed("action", received(REGISTRAR, give, 1), at)


def end_by_the_registrars_stop(
    h: Harness, record: dict[str, Any], push: dict[str, Any], at: int
) -> None:
    stop = action(record["uscc"], push["push_id"], "STOP", text="不涉及", acted_at_ms=at)
    h.feed("action", received(REGISTRAR, stop, 1), at)


def end_by_the_claim_deadline(
    h: Harness, record: dict[str, Any], push: dict[str, Any], at: int
) -> None:
    due_at = push["claim_deadline"] + 1
    due = {"uscc": record["uscc"], "push_id": push["push_id"], "due": "CLAIM"}
    h.feed("due", {**due, "checked_at": due_at}, due_at)


@pytest.mark.parametrize(
    ("end", "state"),
    [
        (end_by_licence, PushState.FULFILLED),
        (end_by_cancellation, PushState.CLOSED),
        (end_by_reassignment, PushState.REASSIGNED),
        (end_by_the_registrars_stop, PushState.STOPPED),
        (end_by_the_claim_deadline, PushState.OVERDUE),
    ],
    ids=["licence", "cancellation", "reassigned", "stopped by the registrar", "overdue"],
)
def test_a_change_its_department_did_not_make_reaches_the_departments_inbox(
    end: Callable[..., None], state: PushState
) -> None:
    """Issue 13's repro: a push FULFILLED by a licence (after its claim), CLOSED by a 注销,
    REASSIGNED away, STOPPED by the registration authority or escalated OVERDUE was
    published on dualnotice.pushes only, and the inbox still read PUSHED (the claim, the
    department's own action, is not echoed back to it)."""
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record, push = pushed_to_transport(h, registered)

    end(h, record, push, registered + DAY_MS)

    told = [p for p in inbox_of(h, "hz-xh-transport") if p["push_id"] == push["push_id"]]
    assert [p["state"] for p in told] == [PushState.PUSHED, state]
    assert told[-1] == h.final()[("dual_notice_push", push["push_id"])]


def test_what_the_department_does_itself_is_not_sent_back_to_its_inbox() -> None:
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    _, push = pushed_to_transport(h, registered)

    transport_acts(h, push, "CLAIM", registered + DAY_MS, offset=1)
    transport_acts(h, push, "STOP", registered + 2 * DAY_MS, offset=2)

    assert [p["state"] for p in h.of("dual_notice_push")][-1] == PushState.STOPPED
    assert [p["state"] for p in inbox_of(h, "hz-xh-transport")] == [PushState.PUSHED]


def test_a_change_processed_again_after_a_crash_reaches_the_inbox_again() -> None:
    """At least once: the licence read again (its offset was not committed) sends the
    FULFILLED push to the inbox again, the same record."""
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record, push = pushed_to_transport(h, registered)
    transport_acts(h, push, "CLAIM", registered + DAY_MS, offset=1)
    issued = licence(record["uscc"], "DLHWYSXK", "hz-xh-transport")
    first = h.feed("licence", issued, registered + DAY_MS)

    again = h.feed("licence", issued, registered + DAY_MS)

    assert again.outgoing == first.outgoing
    assert [o.inboxes for o in again.outgoing] == [("hz-xh-transport",)]


def test_a_history_push_that_ends_reaches_no_inbox() -> None:
    """A push whose claim deadline passed before the cut-over is the province's history:
    neither its escalation nor the licence that fulfils it is sent to the department."""
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    cut_over = registered + 30 * DAY_MS
    h = Harness()
    h.rules.settings = DualNoticeSettings(
        history_until=datetime.fromtimestamp(cut_over / 1000, UTC)
    )
    record, push = pushed_to_transport(h, registered)
    end_by_the_claim_deadline(h, record, push, cut_over)

    h.feed("licence", licence(record["uscc"], "DLHWYSXK", "hz-xh-transport"), cut_over + DAY_MS)

    assert [p["state"] for p in h.of("dual_notice_push")][-1] == PushState.FULFILLED
    assert [out for out in h.published if out.inboxes] == []


# -- a duplicate input sends nothing new (issue 13 §3) ---------------------------------------

READ_AT = "market.registrations|3|41"  # where the worker read the registration


def test_a_registration_a_department_sends_again_sends_nothing_new() -> None:
    """Issue 13's repro: the same registration event sent twice put two identical copies
    of its push in the inbox. Sent again, it arrives at a new offset: all it made was
    sent the first time."""
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record = xihu_registration(now, "DLHWYSXK", "YCZMLSXK")
    h.rules.on_registration(record, now, read_at=READ_AT)
    before = h.state()

    again = h.rules.on_registration(record, now + 60_000, read_at="market.registrations|3|97")

    assert again.outgoing == [] and again.deadlines == []
    assert h.state() == before


def test_a_registration_read_again_at_its_offset_after_a_crash_sends_again_what_it_sent() -> None:
    """At least once: its offset was not committed, so what it sent may not have been."""
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record = xihu_registration(now, "DLHWYSXK", "YCZMLSXK")
    first = h.rules.on_registration(record, now, read_at=READ_AT)

    again = h.rules.on_registration(record, now, read_at=READ_AT)

    assert again.outgoing == first.outgoing and len(first.outgoing) == 3
    assert [o.inboxes for o in again.outgoing if o.inboxes] == [
        ("hz-xh-transport",),
        ("hz-xh-tobacco",),
    ]


def test_a_cancellation_a_department_sends_again_sends_no_second_closure_notice() -> None:
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record, _ = pushed_to_transport(h, now)
    h.feed("licence", licence(record["uscc"], "DLHWYSXK", "hz-xh-transport"), now)
    closed = xihu_registration(now + DAY_MS, event_id="event-cancel")
    closed.update(uscc=record["uscc"], event_kind="CANCEL", status="CANCELLED")
    first = h.rules.on_registration(closed, now + DAY_MS, read_at=READ_AT)

    again = h.rules.on_registration(closed, now + DAY_MS, read_at="market.registrations|3|98")

    assert [o.record_type for o in first.outgoing] == ["entity_closure_notice"]
    assert again.outgoing == []


def test_a_licence_a_department_sends_again_tells_its_department_only_once() -> None:
    now = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record, push = pushed_to_transport(h, now)
    transport_acts(h, push, "CLAIM", now + DAY_MS, offset=1)
    issued = licence(record["uscc"], "DLHWYSXK", "hz-xh-transport")
    first = h.rules.on_licence(issued, now + DAY_MS, read_at="permits.licences|3|7")

    again = h.rules.on_licence(issued, now + DAY_MS, read_at="permits.licences|3|12")

    assert [(o.value["state"], o.inboxes) for o in first.outgoing] == [
        (PushState.FULFILLED, ("hz-xh-transport",))
    ]
    assert again.outgoing == []
