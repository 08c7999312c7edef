"""双告知's two time bases (issue 13 §3, last bullet): a push and each change of its state
say when it happened in the business (``pushed_at``, ``state_changed_at``: the
registration, the action's acted_at, the deadline, the licence's event time) and when the
platform decided it (``push_recorded_at``, ``state_recorded_at``: the processor's clock),
and in neither base does a change come before the push."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

import pytest

from streams.dual_notice.rules import PushState
from tests.business_time import INSTANTS
from tests.dual_notice_records import action, licence, received, registration
from tests.unit.test_dual_notice_rules import CHINA, DAY_MS, Harness, xihu_registration
from xietong.clock import business_clock, millis
from xietong.uscc import make_uscc


def instant_id(instant: datetime) -> str:
    return instant.strftime("%H:%MZ")


def licence_of(uscc: str, decided_on: date, event_time: int) -> dict:
    """西湖区交通运输's 道路货物运输 licence, decided ``decided_on``, its record dated
    ``event_time`` (the connector's event time: the decision's day)."""
    issued = licence(uscc, "DLHWYSXK", "hz-xh-transport", decided_on=decided_on)
    issued["envelope"]["event_time"] = event_time
    return issued


def assert_never_before_the_push(states: list[dict]) -> None:
    """Every published state of one push, in the order published: in each time base no
    change before the push; in the platform's, none before the change before it."""
    first = states[0]
    recorded = [state["state_recorded_at"] for state in states]
    assert all(state["pushed_at"] == first["pushed_at"] for state in states)
    assert first["state_changed_at"] == first["pushed_at"]
    assert all(state["state_changed_at"] >= first["pushed_at"] for state in states)
    assert recorded[0] == first["push_recorded_at"] and recorded == sorted(recorded)


@pytest.mark.parametrize("instant", INSTANTS, ids=instant_id)
def test_a_licence_dated_before_the_platform_saw_the_registration_is_never_before_the_push(
    instant: datetime,
) -> None:
    """Issue 13's repro: the platform reads a registration three days late and the
    licence, decided the day after the registration, after that. ``pushed_at`` was the
    platform's clock and ``state_changed_at`` the licence's date, so the auditor saw the
    push FULFILLED two days before it was pushed. Now the push is at the registration in
    business time, at the reading in platform time, and FULFILLED after it in both."""
    registered = millis(instant)
    read_at = registered + 3 * DAY_MS
    licensed_on = business_clock().day_of(registered) + timedelta(days=1)
    licensed = millis(datetime.combine(licensed_on, datetime.min.time(), CHINA))
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")

    h.feed("registration", record, read_at)
    h.feed("licence", licence_of(record["uscc"], licensed_on, licensed), read_at + DAY_MS)

    pushed, fulfilled = h.of("dual_notice_push")
    assert pushed["state"] == PushState.PUSHED and fulfilled["state"] == PushState.FULFILLED
    assert pushed["pushed_at"] == registered and pushed["push_recorded_at"] == read_at
    assert fulfilled["state_changed_at"] == licensed  # the licence's day, after the push
    assert fulfilled["state_recorded_at"] == read_at + DAY_MS
    assert_never_before_the_push([pushed, fulfilled])


@pytest.mark.parametrize("instant", INSTANTS, ids=instant_id)
def test_a_licence_dated_earlier_on_the_day_of_the_registration_fulfils_it_at_the_push(
    instant: datetime,
) -> None:
    """A licence decided on the day of the registration is dated that day's 00:00, hours
    before the registration: read after the push, it fulfils the push as it was made, at
    ``pushed_at`` in business time, and when it was read in platform time."""
    registered = millis(instant)
    day = business_clock().day_of(registered)
    midnight = millis(datetime.combine(day, datetime.min.time(), CHINA))
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")

    h.feed("registration", record, registered + 1000)
    h.feed("licence", licence_of(record["uscc"], day, midnight), registered + 2000)

    pushed, fulfilled = h.of("dual_notice_push")
    assert midnight < registered
    assert fulfilled["state"] == PushState.FULFILLED
    assert fulfilled["state_changed_at"] == registered == pushed["pushed_at"]
    assert fulfilled["state_recorded_at"] == registered + 2000
    assert_never_before_the_push([pushed, fulfilled])


def test_a_push_escalated_by_the_timer_changed_at_its_deadline_and_was_recorded_at_the_tick() -> (
    None
):
    """OVERDUE happened as the claim deadline passed (business time), whenever the timer
    saw it; the platform recorded it at the tick."""
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")
    h.feed("registration", record, registered)
    [push] = h.of("dual_notice_push")
    tick = push["claim_deadline"] + 3 * DAY_MS

    due = {"uscc": record["uscc"], "push_id": push["push_id"], "due": "CLAIM"}
    h.feed("due", {**due, "checked_at": tick}, tick)

    overdue = h.of("dual_notice_push")[-1]
    assert overdue["state"] == PushState.OVERDUE
    assert overdue["state_changed_at"] == push["claim_deadline"]
    assert overdue["state_recorded_at"] == overdue["escalated_at"] == tick
    assert_never_before_the_push([push, overdue])


def test_a_routing_failure_says_when_the_registration_was_and_when_the_platform_found_it() -> None:
    """分流失败 in business time is the registration's; in platform time, the reading."""
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    uscc = make_uscc("91", "330102", rng=random.Random(3))
    record = registration("330102", ("农药零售",), uscc=uscc, event_time_ms=registered)
    h = Harness()

    h.feed("registration", record, registered + DAY_MS)

    [failure] = h.of("dual_notice_routing_failure")
    assert failure["failed_at"] == failure["state_changed_at"] == registered
    assert failure["failure_recorded_at"] == failure["state_recorded_at"] == registered + DAY_MS


def test_a_claim_acted_before_the_deadline_but_read_after_the_escalation_keeps_its_instant() -> (
    None
):
    """The business instant of a change is its own, not the order it was read in: a claim
    made on day 3 and read after the timer escalated the push is CLAIMED on day 3 in
    business time, after the escalation in the platform's."""
    registered = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
    h = Harness()
    record = xihu_registration(registered, "DLHWYSXK")
    h.feed("registration", record, registered)
    [push] = h.of("dual_notice_push")
    tick = push["claim_deadline"] + DAY_MS
    due = {"uscc": record["uscc"], "push_id": push["push_id"], "due": "CLAIM"}
    h.feed("due", {**due, "checked_at": tick}, tick)

    claimed = registered + 3 * DAY_MS
    taken = action(record["uscc"], push["push_id"], "CLAIM", acted_at_ms=claimed)
    h.feed("action", received("hz-xh-transport", taken, 1), tick + 1000)

    pushed, overdue, claim = h.of("dual_notice_push")
    assert (overdue["state"], claim["state"]) == (PushState.OVERDUE, PushState.CLAIMED)
    assert claim["state_changed_at"] == claim["claimed_at"] == claimed
    assert overdue["state_changed_at"] == push["claim_deadline"] > claimed
    assert claim["state_recorded_at"] == tick + 1000 > overdue["state_recorded_at"]
    assert_never_before_the_push([pushed, overdue, claim])
