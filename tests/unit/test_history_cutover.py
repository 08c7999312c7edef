"""A province's first day: the history cut-over of 双告知 and 联合惩戒, as the rules say it
(streams/README.md, "A province's first day"), on dicts with the sample province's catalog.

A deadline that passed at or before the cut-over is history: what it changes is recorded on
the platform topics, for auditors, and nothing is sent to an inbox or alerted. The tests
set the cut-over at each of three instants around midnight in China
(tests/business_time.py), so a deadline at 24:00 of a day in the province falls on one
side of it or the other whatever the hour.
"""

from __future__ import annotations

import copy
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from streams.dual_notice.rules import DualNoticeRules, PushState
from streams.dual_notice.settings import DualNoticeSettings
from streams.joint_punishment.rules import JointPunishmentRules
from streams.joint_punishment.settings import JointPunishmentSettings
from streams.outputs import Outgoing
from tests.business_time import INSTANTS, instant_id
from tests.dual_notice_records import licence as food_licence
from tests.dual_notice_records import registration, sample_catalog, sample_directory
from tests.joint_punishment_records import licence, list_entry, matter, penalty, removal_of
from tests.joint_punishment_records import sample_catalog as punishment_catalog
from xietong.clock import business_clock, millis
from xietong.uscc import make_uscc

CHINA = business_clock().zone
DAY_MS = 86_400_000
XIHU = "330106"
ROAD_FREIGHT = "道路货物运输（不含危险货物）"
CATALOG, DIRECTORY = sample_catalog(), sample_directory()
PUNISHMENT = punishment_catalog()


# -- the setting ----------------------------------------------------------------------------


def test_a_cut_over_date_is_its_midnight_in_the_province_and_an_instant_keeps_its_zone() -> None:
    on_a_date = DualNoticeSettings(history_until="2026-12-01")  # type: ignore[arg-type]
    naive = DualNoticeSettings(history_until="2026-12-01T08:00")  # type: ignore[arg-type]
    in_utc = DualNoticeSettings(history_until="2026-12-01T00:00Z")  # type: ignore[arg-type]

    assert on_a_date.history_until_ms == millis(datetime(2026, 12, 1, tzinfo=CHINA))
    assert naive.history_until_ms == millis(datetime(2026, 12, 1, 8, tzinfo=CHINA))
    assert in_utc.history_until_ms == millis(datetime(2026, 12, 1, tzinfo=UTC))
    assert DualNoticeSettings().history_until_ms is None


def test_each_processor_reads_its_cut_over_from_its_own_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XIETONG_DUAL_NOTICE_HISTORY_UNTIL", "2026-12-01")
    monkeypatch.setenv("XIETONG_JOINT_PUNISHMENT_HISTORY_UNTIL", "2026-11-01T12:00+08:00")

    assert DualNoticeSettings().history_until == datetime(2026, 12, 1, tzinfo=CHINA)
    assert JointPunishmentSettings().history_until_ms == millis(
        datetime(2026, 11, 1, 12, tzinfo=CHINA)
    )


def test_a_deadline_at_the_cut_over_is_history_and_one_a_millisecond_later_is_not() -> None:
    rules = DualNoticeSettings(history_until="2026-12-01")  # type: ignore[arg-type]
    cut_over = millis(datetime(2026, 12, 1, tzinfo=CHINA))

    assert rules.is_history(cut_over) and not rules.is_history(cut_over + 1)
    assert not DualNoticeSettings().is_history(cut_over)


# -- 双告知 -------------------------------------------------------------------------------------


class DualNotice:
    """The 双告知 rules on dicts, every department with an inbox, the cut-over given."""

    def __init__(self, cut_over: datetime) -> None:
        self.pushes: dict[str, Any] = {}
        self.rules = DualNoticeRules(
            registered_scopes={},
            pushes=self.pushes,
            licences={},
            catalog=lambda: CATALOG,
            directory=lambda: DIRECTORY,
            has_inbox=lambda department: True,
            settings=DualNoticeSettings(history_until=cut_over),
        )
        self.published: list[Outgoing] = []

    def register(self, registered_at: int, now: int, **kwargs: Any) -> dict[str, Any]:
        record = registration(
            XIHU, (ROAD_FREIGHT,), uscc=make_uscc("91", XIHU), event_time_ms=registered_at, **kwargs
        )
        self.keep(self.rules.on_registration(record, now).outgoing)
        return record

    def keep(self, outgoing: list[Outgoing]) -> None:
        # The app encodes each record as it is sent; later changes must not show here.
        self.published += copy.deepcopy(outgoing)

    def tick(self, now: int) -> None:
        """What the timer does at ``now``: each push past its claim deadline is due."""
        for uscc, state in list(self.pushes.items()):
            for identity, entry in state["pushes"].items():
                if entry["record"]["claim_deadline"] <= now:
                    due = {"uscc": uscc, "push_id": identity, "due": "CLAIM", "checked_at": now}
                    self.keep(self.rules.on_due(due).outgoing)

    def of(self, record_type: str, uscc: str) -> list[Outgoing]:
        return [o for o in self.published if o.record_type == record_type and o.key == uscc]


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_a_registration_of_last_year_is_recorded_overdue_and_sent_to_no_inbox_nor_alerted(
    cut_over: datetime,
) -> None:
    """A 2025 registration read on the first day: its push is on dualnotice.pushes, PUSHED
    then OVERDUE (never escalated), and reaches no inbox; no alert is raised."""
    now = millis(cut_over) + 1000
    h = DualNotice(cut_over)
    record = h.register(millis(cut_over - timedelta(days=365)), now)

    h.tick(now)

    pushes = h.of("dual_notice_push", record["uscc"])
    assert [push.value["state"] for push in pushes] == [PushState.PUSHED, PushState.OVERDUE]
    assert all(push.inboxes == () for push in pushes)
    assert pushes[-1].value["escalated_at"] is None
    assert h.of("dual_notice_alert", record["uscc"]) == []
    assert [o.record_type for o in h.published if o.inboxes] == []


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_a_push_due_at_24_00_before_the_cut_over_is_history_one_due_the_next_midnight_is_live(
    cut_over: datetime,
) -> None:
    """Registered 16 days before the cut-over, the claim deadline (24:00 of the 15th day in
    the province) has passed at the cut-over: history. Registered 15 days before, it ends
    at the coming midnight: live, pushed to its department, escalated when it passes."""
    now = millis(cut_over)
    h = DualNotice(cut_over)
    old = h.register(millis(cut_over - timedelta(days=16)), now)
    open_at_the_cut_over = h.register(millis(cut_over - timedelta(days=15)), now)
    [live] = h.of("dual_notice_push", open_at_the_cut_over["uscc"])
    assert (
        live.value["claim_deadline"]
        > now
        >= h.of("dual_notice_push", old["uscc"])[0].value["claim_deadline"]
    )

    h.tick(live.value["claim_deadline"])

    assert all(o.inboxes == () for o in h.of("dual_notice_push", old["uscc"]))
    assert h.of("dual_notice_alert", old["uscc"]) == []
    assert live.inboxes == ("hz-xh-transport",)
    [escalation] = h.of("dual_notice_alert", open_at_the_cut_over["uscc"])
    assert escalation.value["kind"] == "OVERDUE"
    assert set(escalation.inboxes) == {"hz-xh-transport", "hz-xh-amr"}


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_a_live_push_read_before_a_cut_over_still_to_come_reaches_its_inbox_at_the_cut_over(
    cut_over: datetime,
) -> None:
    """Read an hour before the cut-over, a push whose claim deadline is after it waits: on
    dualnotice.pushes at once, in the department's inbox when the cut-over comes."""
    now = millis(cut_over) - 3_600_000
    h = DualNotice(cut_over)
    output = h.rules.on_registration(
        registration(
            XIHU, (ROAD_FREIGHT,), uscc=make_uscc("91", XIHU), event_time_ms=now - 5 * DAY_MS
        ),
        now,
    )
    [push] = [o for o in output.outgoing if o.record_type == "dual_notice_push"]
    [(at, uscc, identity, due)] = [d for d in output.deadlines if d[3] == "DELIVERY"]
    assert push.inboxes == () and at == millis(cut_over)
    assert h.rules.is_waiting(uscc, identity, due)

    early = {"uscc": uscc, "push_id": identity, "due": due, "checked_at": at - 1}
    assert h.rules.on_due(early).outgoing == []
    [delivered] = h.rules.on_due({**early, "checked_at": at}).outgoing

    assert delivered.inboxes == ("hz-xh-transport",) and delivered.value["state"] == "PUSHED"
    assert not h.rules.is_waiting(uscc, identity, due)


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_a_registration_after_the_cut_over_is_pushed_and_escalated_as_always(
    cut_over: datetime,
) -> None:
    h = DualNotice(cut_over)
    registered = millis(cut_over) + 1
    record = h.register(registered, registered)
    [push] = h.of("dual_notice_push", record["uscc"])

    h.tick(push.value["claim_deadline"])

    assert push.inboxes == ("hz-xh-transport",)
    assert [alert.value["kind"] for alert in h.of("dual_notice_alert", record["uscc"])] == [
        "OVERDUE"
    ]


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_a_cancellation_before_the_cut_over_is_recorded_and_told_to_no_inbox(
    cut_over: datetime,
) -> None:
    """注销 notices of the history go on dualnotice.closure-notices only; one after the
    cut-over reaches the licensing department's inbox."""
    h = DualNotice(cut_over)
    for cancelled_at, told in ((millis(cut_over) - DAY_MS, ()), (millis(cut_over) + 1, True)):
        uscc = make_uscc("91", XIHU, rng=random.Random(cancelled_at))
        issued = food_licence(uscc, "SPJYXK", "hz-xh-amr")
        h.keep(h.rules.on_licence(issued, cancelled_at).outgoing)
        cancel = registration(
            XIHU, (), uscc=uscc, event_time_ms=cancelled_at, kind="CANCEL", status="CANCELLED"
        )
        h.keep(h.rules.on_registration(cancel, cancelled_at).outgoing)

        [notice] = h.of("entity_closure_notice", uscc)
        assert notice.inboxes == (("hz-xh-amr",) if told else ())


# -- 联合惩戒 ------------------------------------------------------------------------------------


class JointPunishment:
    """The joint-punishment rules on a dict, the cut-over given."""

    def __init__(self, cut_over: datetime) -> None:
        self.entities: dict[str, Any] = {}
        settings = JointPunishmentSettings(history_until=cut_over)
        self.rules = JointPunishmentRules(self.entities, lambda: PUNISHMENT, settings)
        self.published: list[Outgoing] = []

    def feed(self, method: str, record: dict[str, Any], now: int) -> None:
        self.published += getattr(self.rules, method)(record, now).outgoing

    def of(self, record_type: str) -> list[Outgoing]:
        return [o for o in self.published if o.record_type == record_type]


def day_in_china(moment: datetime) -> date:
    return business_clock().day_of(moment)


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_a_listing_removed_before_the_cut_over_sends_nothing_one_standing_at_it_notifies(
    cut_over: datetime,
) -> None:
    """A listing whose end is the day of the cut-over in the province (it ended at the
    midnight before) sends no sanction notice and no lift; one ending the day after stands
    at the cut-over and notifies its departments."""
    today = day_in_china(cut_over)
    now = millis(cut_over)
    h = JointPunishment(cut_over)
    ended, standing = (make_uscc("91", XIHU, rng=random.Random(n)) for n in (1, 2))
    listed_on = today - timedelta(days=400)
    h.feed(
        "on_list_entry",
        list_entry(ended, "E-1", listed_on=listed_on, planned_removal_on=today),
        now,
    )
    h.feed(
        "on_list_entry",
        list_entry(
            standing, "E-2", listed_on=listed_on, planned_removal_on=today + timedelta(days=1)
        ),
        now,
    )

    assert {o.key for o in h.published} == {standing}
    assert h.of("sanction_notice") and all(o.inboxes for o in h.of("sanction_notice"))
    assert h.of("licence_review_notice") == [] and h.of("lift_notice") == []


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_a_listing_notified_before_its_removal_was_read_is_lifted_wherever_it_was_told(
    cut_over: datetime,
) -> None:
    """Its 列入 read first, the listing stood as far as the rules knew, and its notices went
    out; its 移出, dated before the cut-over and read next, lifts it at each of them."""
    today = day_in_china(cut_over)
    now = millis(cut_over)
    h = JointPunishment(cut_over)
    uscc = make_uscc("91", XIHU, rng=random.Random(4))
    listed = list_entry(uscc, "E-1", listed_on=today - timedelta(days=400))
    h.feed("on_list_entry", listed, now)

    h.feed("on_list_entry", removal_of(listed, removed_on=today - timedelta(days=30)), now)

    told = {o.value["department"]["code"] for o in h.of("sanction_notice")}
    assert told and {o.value["department"]["code"] for o in h.of("lift_notice")} == told


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_feedback_overdue_before_the_cut_over_is_recorded_on_the_hit_and_not_alerted(
    cut_over: datetime,
) -> None:
    """A hit whose feedback deadline passed before the cut-over shows it (PENDING, its
    deadline past) and raises no alert; one whose deadline is after raises it when due."""
    now = millis(cut_over) + 1000
    today = day_in_china(cut_over)
    h = JointPunishment(cut_over)
    uscc = make_uscc("91", XIHU, rng=random.Random(3))
    h.feed("on_list_entry", list_entry(uscc, "E-1", listed_on=today - timedelta(days=60)), now)
    old = matter(
        uscc,
        "hz-xh-finance",
        "GOVERNMENT_PROCUREMENT",
        "CG-1",
        matter_date=today - timedelta(days=40),
    )
    h.feed("on_matter", old, now)
    [hit] = [o.value for o in h.of("restriction_hit")]
    assert hit["feedback_outcome"] == "PENDING" and hit["feedback_due_at"] <= millis(cut_over)
    assert h.of("feedback_overdue_alert") == []

    recent = matter(uscc, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-2", matter_date=today)
    h.feed("on_matter", recent, now)
    deadline = max(o.value["feedback_due_at"] for o in h.of("restriction_hit"))
    h.published += h.rules.on_due(uscc, deadline, f"due|{uscc}|{deadline}").outgoing

    [alert] = h.of("feedback_overdue_alert")
    assert alert.value["matter"]["matter_reference"] == "CG-2" and alert.inboxes


@pytest.mark.parametrize("cut_over", INSTANTS, ids=instant_id)
def test_a_licence_penalty_decided_before_the_cut_over_day_sends_no_licence_review(
    cut_over: datetime,
) -> None:
    today = day_in_china(cut_over)
    now = millis(cut_over)
    h = JointPunishment(cut_over)
    for n, decided_on in enumerate((today - timedelta(days=1), today)):
        uscc = make_uscc("91", XIHU, rng=random.Random(10 + n))
        issued = today - timedelta(days=900)
        h.feed("on_licence", licence(uscc, f"JY-{n}", "hz-xh-amr", valid_from=issued), now)
        h.feed("on_penalty", penalty(uscc, f"P-{n}", decided_on=decided_on), now)

    assert [o.value["cause_date"] for o in h.of("licence_review_notice")] == [
        (today - datetime(1970, 1, 1).date()).days
    ]
