"""一处违法、处处受限: the rule methods of streams/joint_punishment/app.py on in-memory state, with
the sample province's catalog and a fixed clock. The same rules run in the Faust worker
(tests/integration/test_joint_punishment.py drives that one through the broker)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from streams.joint_punishment.rules import (
    ID_FIELD,
    JointPunishmentRules,
    PunishmentCatalog,
    PunishmentOutput,
    restriction_hit_id,
    seats,
)
from tests.business_time import INSTANTS, instant_id
from tests.joint_punishment_records import (
    feedback,
    licence,
    list_entry,
    matter,
    midnight_ms,
    penalty,
    received,
    sample_catalog,
)
from xietong.clock import business_clock, millis
from xietong.uscc import make_uscc

CATALOG = sample_catalog()
TODAY = date(2026, 6, 15)
NOW = midnight_ms(TODAY) + 10 * 3_600_000  # 10:00 in Hangzhou
DAY_MS = 86_400_000
XIHU = "330106"  # 西湖区: every sector has a department there but 人民银行 and 海关
ENTITY = make_uscc("91", XIHU, rng=random.Random(1))
SHANGCHENG = make_uscc("91", "330102", rng=random.Random(2))  # 上城区

INPUTS = {
    "list_entry": "on_list_entry",
    "penalty": "on_penalty",
    "licence": "on_licence",
    "matter": "on_matter",
    "feedback": "on_feedback",
    "registration": "on_registration",
}


class Harness:
    """The rules on a dict, a fixed catalog and a clock; every record they published."""

    def __init__(self, catalog: PunishmentCatalog = CATALOG) -> None:
        self.entities: dict[str, Any] = {}
        self.rules = JointPunishmentRules(self.entities, lambda: catalog)
        self.published: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []

    def feed(self, kind: str, record: dict[str, Any], now: int = NOW) -> PunishmentOutput:
        outcome: PunishmentOutput = getattr(self.rules, INPUTS[kind])(record, now)
        self._keep(outcome)
        return outcome

    def tick(self, now: int = NOW) -> None:
        """What the timer does: every entity due by ``now`` is settled at ``now``."""
        for uscc, state in list(self.entities.items()):
            if state["due"] is not None and state["due"] <= now:
                self._keep(self.rules.on_due(uscc, now, f"due|{uscc}|{state['due']}"))

    def _keep(self, outcome: PunishmentOutput) -> None:
        for out in outcome.outgoing:
            self.published.append((out.record_type, out.value, out.inboxes))

    def of(self, record_type: str) -> list[dict[str, Any]]:
        return [value for kind, value, _ in self.published if kind == record_type]

    def final(self) -> dict[tuple[str, str], dict[str, Any]]:
        """What a reader keeping the latest record per id holds, WITHDRAWN left out."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, value, _ in self.published:
            if kind in ID_FIELD:
                latest[(kind, value[ID_FIELD[kind]])] = value
        return {key: value for key, value in latest.items() if value.get("status") != "WITHDRAWN"}


def days(n: int) -> date:
    return TODAY + timedelta(days=n)


def by_department(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(record["department"]["code"] for record in records)


# -- who implements a measure ---------------------------------------------------------------


def test_a_measure_is_implemented_by_the_department_of_its_sector_nearest_the_division() -> None:
    cj01 = CATALOG.measures["CJ01"]  # 政府采购, 财政
    cj07 = CATALOG.measures["CJ07"]  # 融资授信, 人民银行: seated in the province only
    assert seats("330106") == ["330106", "330100", "330000"]
    assert [d["code"] for d in CATALOG.implementing(cj01, "330106")] == ["hz-xh-finance"]
    assert [d["code"] for d in CATALOG.implementing(cj01, "330100")] == ["hz-finance"]
    assert [d["code"] for d in CATALOG.implementing(cj07, "330106")] == ["zj-pbc"]
    assert [d["code"] for d in CATALOG.implementing(cj07, "330200")] == ["nb-pbc"]


# -- listing → sanction notices --------------------------------------------------------------


def test_a_serious_listing_notifies_each_implementing_department_of_each_measure_once() -> None:
    h = Harness()
    h.feed(
        "list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10), planned_removal_on=days(1085))
    )

    notices = h.of("sanction_notice")
    pairs = {(n["measure"]["code"], n["department"]["code"]) for n in notices}
    assert len(pairs) == len(notices)
    # 依法限制作为供应商参加政府采购 (CJ01) by 财政 of 西湖区
    [cj01] = [n for n in notices if n["measure"]["code"] == "CJ01"]
    assert cj01["department"]["code"] == "hz-xh-finance"
    assert cj01["measure"]["legal_basis"].startswith("《中华人民共和国政府采购法》")
    assert cj01["listing"]["list_name"] == "严重违法失信名单"
    assert (cj01["valid_from"], cj01["valid_to"]) == (
        (days(-10) - date(1970, 1, 1)).days,
        (days(1085) - date(1970, 1, 1)).days,
    )
    assert cj01["feedback_required"] is True
    # every measure of the serious list, each sector's nearest department
    expected = {
        (m["code"], d["code"])
        for m in CATALOG.by_list_type["SERIOUS_ILLEGAL_DISHONEST"]
        for d in CATALOG.implementing(m, XIHU)
    }
    assert pairs == expected
    assert ("CJ08", "zj-customs") in pairs and ("CJ02", "hz-xh-housing") in pairs


def test_the_same_listing_again_notifies_nobody_twice() -> None:
    h = Harness()
    record = list_entry(ENTITY, "E-1", listed_on=days(-10))
    h.feed("list_entry", record)
    first = len(h.published)

    again = h.feed("list_entry", record)

    assert {o.value["notice_id"] for o in again.outgoing} <= {
        v["notice_id"] for _, v, _ in h.published[:first]
    }
    assert len(h.final()) == first


# -- matter → restriction hit, feedback and overdue alerts -----------------------------------


def test_a_procurement_matter_while_listed_hits_cj01_at_the_handling_finance_department() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))

    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1)),
    )

    [hit] = h.of("restriction_hit")
    assert hit["hit_id"] == restriction_hit_id(
        ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", "CJ01"
    )
    assert hit["status"] == "ACTIVE" and hit["measure"]["code"] == "CJ01"
    assert hit["feedback_outcome"] == "PENDING"
    # 15 days as the law counts them: from the day after the hit, to the end of the 15th.
    assert hit["feedback_due_at"] == business_clock().period_end(hit["raised_at"], 15)
    assert [listing["entry_id"] for listing in hit["listings"]] == ["E-1"]


def test_a_matter_before_the_listing_starts_or_of_another_sector_is_not_hit() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))

    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-0", matter_date=days(-11)),
    )
    # 行政许可申请 is restricted by CJ05, a measure of 市场监管, not of 卫生健康
    h.feed(
        "matter", matter(ENTITY, "hz-xh-health", "PERMIT_APPLICATION", "XK-1", matter_date=days(-1))
    )

    assert h.of("restriction_hit") == []


def test_a_report_and_a_credit_check_of_one_matter_are_one_hit() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))
    h.feed("matter", matter(ENTITY, "hz-xh-finance", "SUBSIDY", "BZ-1", matter_date=days(-2)))
    h.feed(
        "matter",
        matter(
            ENTITY, "hz-xh-finance", "SUBSIDY", "BZ-1", matter_date=days(-2), source="CREDIT_CHECK"
        ),
    )

    hits = h.final()
    [hit] = [v for (kind, _), v in hits.items() if kind == "restriction_hit"]
    assert hit["measure"]["code"] == "CJ04" and len(hit["matter"]["matter_event_ids"]) == 2


def test_two_listed_bidders_under_one_procurement_reference_are_two_matters_and_two_hits() -> None:
    """财政 reports one procurement (CG-7) with two bidders, both listed, and checks both:
    every matter event and every hit has an id of its own, so a reader keeping the latest
    record per id keeps each bidder's; the report and the check of one bidder are one hit."""
    other = make_uscc("91", XIHU, rng=random.Random(3))
    h = Harness()
    events = []
    for bidder in (ENTITY, other):
        h.feed("list_entry", list_entry(bidder, f"E-{bidder}", listed_on=days(-10)))
        for source in ("DEPARTMENT_REPORT", "CREDIT_CHECK"):
            event = matter(
                bidder, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-7", matter_date=days(-1),
                source=source,
            )  # fmt: skip
            h.feed("matter", event)
            events.append(event)

    assert len({event["event_id"] for event in events}) == 4
    hits = {v["uscc"]: v for (kind, _), v in h.final().items() if kind == "restriction_hit"}
    assert set(hits) == {ENTITY, other}
    for bidder, hit in hits.items():
        assert hit["hit_id"] == restriction_hit_id(
            bidder, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-7", "CJ01"
        )
        assert hit["matter"]["matter_event_ids"] == sorted(
            event["event_id"] for event in events if event["uscc"] == bidder
        )


def test_feedback_is_recorded_on_the_hit() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1)),
    )
    [hit] = h.of("restriction_hit")

    h.feed(
        "feedback",
        received(
            "hz-xh-finance",
            feedback(
                ENTITY, hit["hit_id"], "NOT_APPLICABLE", reason="已中止采购", fed_back_at_ms=NOW
            ),
        ),
    )

    latest = h.of("restriction_hit")[-1]
    assert (
        latest["feedback_outcome"] == "NOT_APPLICABLE" and latest["feedback_reason"] == "已中止采购"
    )


def test_feedback_from_another_department_or_without_a_reason_is_dead_lettered() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1)),
    )
    [hit] = h.of("restriction_hit")

    other = h.feed("feedback", received("hz-xh-drc", feedback(ENTITY, hit["hit_id"])))
    bare = h.feed(
        "feedback", received("hz-xh-finance", feedback(ENTITY, hit["hit_id"], "NOT_APPLICABLE"))
    )

    for outcome, field in ((other, "hit_id"), (bare, "reason")):
        [letter] = outcome.outgoing
        assert letter.record_type == "dead_letter"
        assert letter.value["reasons"][0]["field"] == field
    assert h.of("restriction_hit")[-1]["feedback_outcome"] == "PENDING"


def test_a_hit_without_feedback_by_its_deadline_alerts_its_department_and_credit_authority() -> (
    None
):
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-40)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-20)),
    )
    [alert] = h.of("feedback_overdue_alert")
    assert alert["recipients"] == ["hz-xh-finance", "hz-xh-drc"]
    assert alert["deadline"] == h.of("restriction_hit")[0]["feedback_due_at"] < NOW

    # a feedback dated in time, read late, withdraws it; a late one would not
    hit_id = alert["hit_id"]
    h.feed(
        "feedback",
        received("hz-xh-finance", feedback(ENTITY, hit_id, fed_back_at_ms=alert["deadline"] - 1)),
    )
    assert h.of("feedback_overdue_alert")[-1]["status"] == "WITHDRAWN"


def test_an_alert_comes_when_the_deadline_passes() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1)),
    )
    deadline = h.of("restriction_hit")[0]["feedback_due_at"]
    assert h.entities[ENTITY]["due"] == deadline

    h.tick(deadline - 1)
    assert h.of("feedback_overdue_alert") == []
    h.tick(deadline)
    assert len(h.of("feedback_overdue_alert")) == 1


# -- removal and expiry → lift notices --------------------------------------------------------


def test_a_removal_lifts_at_every_department_that_was_told() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-400)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1)),
    )

    h.feed(
        "list_entry",
        list_entry(
            ENTITY,
            "E-1",
            action="REMOVED",
            listed_on=days(-400),
            removed_on=TODAY,
            removal_reason="CREDIT_REPAIR",
        ),
    )

    lifts = h.of("lift_notice")
    assert set(by_department(lifts)) == set(by_department(h.of("sanction_notice")))
    assert all(count == 1 for count in by_department(lifts).values())
    [finance] = [lift for lift in lifts if lift["department"]["code"] == "hz-xh-finance"]
    assert [m["code"] for m in finance["measures"]] == ["CJ01", "CJ04"]
    assert finance["end_reason"] == "CREDIT_REPAIR" and len(finance["hit_ids"]) == 1
    # still restricted only while listed: the hit stays, dated before the removal
    assert h.of("restriction_hit")[-1]["status"] == "ACTIVE"


def test_the_planned_end_lifts_by_itself_when_its_day_comes() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10), planned_removal_on=days(3)))
    assert h.of("lift_notice") == []

    h.tick(midnight_ms(days(3)))  # midnight in Hangzhou

    lifts = h.of("lift_notice")
    assert lifts and {lift["end_reason"] for lift in lifts} == {"EXPIRY"}


def test_a_removal_before_the_start_date_notifies_then_lifts_and_hits_nothing() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(5)))
    h.feed(
        "list_entry",
        list_entry(
            ENTITY,
            "E-1",
            action="REMOVED",
            listed_on=days(5),
            removed_on=days(-1),
            removal_reason="CORRECTION",
        ),
    )
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=TODAY),
    )

    assert h.of("restriction_hit") == []
    assert set(by_department(h.of("lift_notice"))) == set(by_department(h.of("sanction_notice")))


def test_a_backdated_correction_withdraws_the_hits_it_undoes() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-400)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1)),
    )

    h.feed(
        "list_entry",
        list_entry(
            ENTITY,
            "E-1",
            action="REMOVED",
            listed_on=days(-400),
            removed_on=days(-5),
            removal_reason="CORRECTION",
        ),
    )

    assert [hit["status"] for hit in h.of("restriction_hit")] == ["ACTIVE", "WITHDRAWN"]


def test_a_correction_dated_today_voids_the_listing_from_its_start() -> None:
    # 撤销 says the listing should never have stood: the hit made while it stood is
    # withdrawn although the removal is dated after the matter (移出 would leave it).
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-3)),
    )

    h.feed(
        "list_entry",
        list_entry(
            ENTITY,
            "E-1",
            action="REMOVED",
            listed_on=days(-10),
            removed_on=TODAY,
            removal_reason="CORRECTION",
        ),
    )

    assert [hit["status"] for hit in h.of("restriction_hit")] == ["ACTIVE", "WITHDRAWN"]
    lifts = h.of("lift_notice")
    assert set(by_department(lifts)) == set(by_department(h.of("sanction_notice")))
    assert {lift["end_reason"] for lift in lifts} == {"CORRECTION"}
    assert {lift["ended_on"] for lift in lifts} == {lifts[0]["listing"]["listed_on"]}
    assert all(lift["hit_ids"] == [] for lift in lifts)
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-2", matter_date=days(-5)),
    )
    assert [hit["status"] for hit in h.of("restriction_hit")] == ["ACTIVE", "WITHDRAWN"]


# -- disorder ------------------------------------------------------------------------------------


def test_a_listing_read_after_a_matter_dated_within_it_hits_the_kept_matter() -> None:
    h = Harness()
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-3)),
    )
    assert h.published == []

    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))

    assert len(h.of("restriction_hit")) == 1


def test_a_matter_older_than_the_window_is_not_kept() -> None:
    h = Harness()
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-91)),
    )
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-200)))

    assert h.of("restriction_hit") == []


def test_two_lists_at_once_each_notify_and_a_hit_names_both() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))
    h.feed(
        "list_entry",
        list_entry(
            ENTITY, "T-1", list_type="MAJOR_TAX_VIOLATION", authority="zj-tax", listed_on=days(-5)
        ),
    )
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1)),
    )

    [hit] = h.of("restriction_hit")
    assert [listing["entry_id"] for listing in hit["listings"]] == ["E-1", "T-1"]
    cj09 = [n for n in h.of("sanction_notice") if n["measure"]["code"] == "CJ09"]
    assert [n["department"]["code"] for n in cj09] == ["hz-xh-tax"]


# -- penalty → licence review ----------------------------------------------------------------


def test_a_licence_revoking_penalty_tells_each_department_whose_licence_was_valid() -> None:
    h = Harness()
    h.feed("licence", licence(ENTITY, "JY-1", "hz-xh-amr"))
    h.feed("licence", licence(ENTITY, "WS-1", "hz-xh-health"))
    h.feed("licence", licence(ENTITY, "OLD-1", "hz-xh-transport", valid_to=days(-30)))
    h.feed("penalty", penalty(ENTITY, "西市监罚〔2026〕1号", categories=("FINE",)))
    assert h.published == []

    h.feed("penalty", penalty(ENTITY, "西市监罚〔2026〕2号"))

    reviews = h.of("licence_review_notice")
    assert sorted(by_department(reviews)) == ["hz-xh-amr", "hz-xh-health"]
    assert {r["cause"] for r in reviews} == {"LICENCE_PENALTY"}


def test_a_serious_listing_sends_licence_reviews_too_and_a_licence_read_later_joins() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))
    assert h.of("licence_review_notice") == []

    h.feed("licence", licence(ENTITY, "JY-1", "hz-xh-amr"))

    [review] = h.of("licence_review_notice")
    assert (
        review["cause"] == "SERIOUS_LISTING" and review["licences"][0]["licence_number"] == "JY-1"
    )


@pytest.mark.parametrize("cause", ["serious listing", "licence-revoking penalty"])
def test_a_licence_cancelled_yesterday_was_valid_three_days_ago_whatever_arrives_first(
    cause: str,
) -> None:
    """Issue 13 §2: the 注销 version of a licence decided 400 days ago is read first (the
    connectors date it by its decision); its 注销日期 says it was valid until yesterday."""
    h = Harness()
    h.feed(
        "licence",
        licence(
            ENTITY,
            "JY-1",
            "hz-xh-amr",
            status="CANCELLED",
            valid_from=days(-400),
            status_changed_on=days(-1),
            version="2",
        ),
    )

    if cause == "serious listing":
        h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-3)))
    else:
        h.feed("penalty", penalty(ENTITY, "西市监罚〔2026〕3号", decided_on=days(-3)))

    [review] = h.of("licence_review_notice")
    assert [lic["licence_number"] for lic in review["licences"]] == ["JY-1"]


def test_a_licence_cancelled_before_the_cause_is_not_reviewed() -> None:
    h = Harness()
    h.feed(
        "licence",
        licence(
            ENTITY,
            "JY-1",
            "hz-xh-amr",
            status="CANCELLED",
            valid_from=days(-400),
            status_changed_on=days(-5),
        ),
    )

    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-3)))

    assert h.of("licence_review_notice") == []


# -- reprocessing ----------------------------------------------------------------------------------


def test_an_event_processed_again_sends_again_what_it_sent_and_nothing_new() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-10)))
    record = matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1))
    first = h.feed("matter", record)

    again = h.feed("matter", record)  # after a crash, before its offset was committed

    assert [o.value for o in again.outgoing] == [o.value for o in first.outgoing]


# -- the property: any arrival order gives the final set of in-order processing ---------------


MATTER_DEPARTMENTS = {
    "GOVERNMENT_PROCUREMENT": ("hz-xh-finance", "hz-finance"),
    "SUBSIDY": ("hz-xh-finance", "hz-xh-hrss"),
    "PUBLIC_PROJECT_BID": ("hz-xh-housing", "hz-xh-drc"),
    "LAND_SUPPLY": ("hz-xh-nr",),
    "BOND_ISSUE": ("hz-xh-drc",),
    "PERMIT_APPLICATION": ("hz-xh-amr", "hz-xh-health"),
}
LIST_TYPES = ("SERIOUS_ILLEGAL_DISHONEST", "JUDGMENT_DEFAULTER", "MAJOR_TAX_VIOLATION", "SECTOR")


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """The events about one or two entities: listings (some removed, some in the future,
    some removed before they start), matters (some reported and checked), licences,
    penalties and feedback — each event once; the test adds duplicates."""
    events: list[tuple[str, dict[str, Any]]] = []
    entities = [ENTITY, SHANGCHENG][: draw(st.integers(1, 2))]
    for n, uscc in enumerate(entities):
        for i in range(draw(st.integers(0, 3))):
            entry_id = f"L{n}-{i}"
            list_type = draw(st.sampled_from(LIST_TYPES))
            listed_on = days(draw(st.integers(-60, 10)))
            planned = draw(st.one_of(st.none(), st.integers(1, 120)))
            planned_on = None if planned is None else listed_on + timedelta(days=planned)
            common: dict[str, Any] = {
                "list_type": list_type,
                "listed_on": listed_on,
                "planned_removal_on": planned_on,
            }
            events.append(("list_entry", list_entry(uscc, entry_id, **common)))
            if draw(st.booleans()):
                removed_on = days(draw(st.integers(-70, 0)))  # a removal is a past fact
                reason = draw(st.sampled_from(("CREDIT_REPAIR", "CORRECTION", "EXPIRY")))
                events.append(
                    (
                        "list_entry",
                        list_entry(
                            uscc,
                            entry_id,
                            action="REMOVED",
                            removed_on=removed_on,
                            removal_reason=reason,
                            **common,
                        ),
                    )
                )
        for i in range(draw(st.integers(0, 4))):
            matter_type = draw(st.sampled_from(sorted(MATTER_DEPARTMENTS)))
            department = draw(st.sampled_from(MATTER_DEPARTMENTS[matter_type]))
            reference = f"M{n}-{i}"
            date_ = days(draw(st.integers(-50, 0)))
            events.append(
                ("matter", matter(uscc, department, matter_type, reference, matter_date=date_))
            )
            if draw(st.booleans()):
                events.append(
                    (
                        "matter",
                        matter(
                            uscc,
                            department,
                            matter_type,
                            reference,
                            matter_date=date_,
                            source="CREDIT_CHECK",
                            occurred_at_ms=midnight_ms(date_) + 7_200_000,
                        ),
                    )
                )
            for measure in CATALOG.by_matter_type[matter_type]:
                if draw(st.integers(0, 3)) == 0:
                    hit = restriction_hit_id(
                        uscc, department, matter_type, reference, measure["code"]
                    )
                    at = midnight_ms(date_) + draw(st.integers(0, 40)) * DAY_MS
                    record = feedback(
                        uscc,
                        hit,
                        draw(st.sampled_from(("APPLIED", "NOT_APPLICABLE"))),
                        reason="不适用",
                        fed_back_at_ms=at,
                        feedback_id=f"F-{hit[:8]}-{at}",
                    )
                    events.append(("feedback", received(department, record, offset=len(events))))
        for i in range(draw(st.integers(0, 2))):
            department = draw(st.sampled_from(("hz-xh-amr", "hz-xh-health", "hz-xh-transport")))
            start = days(draw(st.integers(-400, -1)))
            end = draw(st.one_of(st.none(), st.integers(-30, 400)))
            events.append(
                (
                    "licence",
                    licence(
                        uscc,
                        f"X{n}-{i}",
                        department,
                        valid_from=start,
                        valid_to=None if end is None else days(end),
                    ),
                )
            )
        if draw(st.booleans()):
            events.append(
                ("penalty", penalty(uscc, f"罚{n}", decided_on=days(draw(st.integers(-40, 0)))))
            )
    return events  # fmt: skip


def run(events: list[tuple[str, dict[str, Any]]], ticks: tuple[int, ...] = ()) -> Harness:
    h = Harness()
    for position, (kind, record) in enumerate(events):
        if position in ticks:
            h.tick()
        h.feed(kind, record)
    h.tick()
    return h


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), events=histories())
def test_any_arrival_order_with_duplicates_ends_with_the_final_set_of_in_order_processing(
    data: st.DataObject, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """Notices, licence reviews, hits (with their feedback), alerts and lifts: the latest
    record of each id, WITHDRAWN ones left out, is the same for every arrival order."""
    in_order = run(events).final()

    duplicated = events + data.draw(
        st.lists(st.sampled_from(events), max_size=4) if events else st.just([])
    )
    shuffled = data.draw(st.permutations(duplicated))
    ticks = data.draw(st.lists(st.integers(0, max(len(shuffled) - 1, 0)), max_size=3))

    assert run(shuffled, tuple(ticks)).final() == in_order


def test_an_earlier_workers_state_with_one_letter_keys_is_read_under_the_field_names() -> None:
    """State written before the sent records' fields had names keeps working."""
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-30)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-1)),
    )
    short = {"digest": "d", "cause": "c", "record_type": "t", "value": "v"}
    state = h.entities[ENTITY]
    state["sent"] = {
        identity: {short.get(key, key): value for key, value in known.items()}
        for identity, known in state["sent"].items()
    }

    again = h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-30)))

    assert all("digest" in known and "d" not in known for known in state["sent"].values())
    assert not [out for out in again.outgoing if out.record_type == "restriction_hit"]


@pytest.mark.parametrize("instant", INSTANTS, ids=instant_id)
def test_a_matter_on_the_provinces_day_of_a_listing_is_hit_and_due_at_the_end_of_the_15th_day(
    instant: datetime,
) -> None:
    """At 15:30 UTC the province is still on the UTC day; at 16:30 and 23:30 UTC it is on
    the next. The listing starts, and its sibling's ends, on the province's day."""
    clock = business_clock()
    now, day = millis(instant), clock.day_of(instant)
    h = Harness()
    ended = make_uscc("91", XIHU, rng=random.Random(7))
    for uscc, entry, start, end in (
        (ENTITY, "E-1", day, day + timedelta(days=30)),
        (ended, "E-2", day - timedelta(days=30), day),
    ):
        h.feed("list_entry", list_entry(uscc, entry, listed_on=start, planned_removal_on=end), now)
        h.feed(
            "matter",
            matter(
                uscc,
                "hz-xh-finance",
                "GOVERNMENT_PROCUREMENT",
                "CG-1",
                matter_date=day,
                occurred_at_ms=now,
            ),
            now,
        )

    [hit] = h.of("restriction_hit")
    assert hit["uscc"] == ENTITY and hit["raised_at"] == now
    assert hit["feedback_due_at"] == clock.midnight_ms(day + timedelta(days=16))
