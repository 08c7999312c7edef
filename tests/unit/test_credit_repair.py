"""信用修复 has terms (issue 13 §7): early removal from the 严重违法失信名单 only after a year
from listing; a penalty's publicity repairable after six months (a year for food, drugs,
special equipment). A repair before its term is refused with the reason and the listing
stays in force — by joint punishment (a dead letter naming the record and the earliest day)
and by the credit check (:func:`fold_entry` refuses it), through the one rule of
streams/credit_repair.py; the property test proves the two agree."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from registry.seed import load_sample_province
from streams.credit_check.rules import RepairRefused, fold_entry
from streams.credit_repair import (
    LISTING_REPAIR_MONTHS,
    earliest_repair_day,
    listing_repair_refusal,
    penalty_repair_months,
)
from streams.joint_punishment.rules import Listing
from tests.joint_punishment_records import list_entry, matter, penalty, removal_of
from tests.unit.test_joint_punishment_rules import ENTITY, Harness, days
from xietong.clock import BusinessClock, epoch_day

CLOCK = BusinessClock()
SERIOUS = "SERIOUS_ILLEGAL_DISHONEST"


# -- the term -------------------------------------------------------------------------------------


def test_a_year_counts_from_the_day_after_the_listing_and_the_repair_may_come_the_day_after() -> (
    None
):
    assert earliest_repair_day(date(2026, 1, 10), 12) == date(2027, 1, 11)
    assert earliest_repair_day(date(2024, 2, 29), 12) == date(2025, 3, 1)  # 28 Feb is the last
    assert earliest_repair_day(date(2026, 8, 31), 6) == date(2027, 3, 1)  # 28 Feb is the last


def test_a_serious_listing_repaired_within_its_year_is_refused_naming_the_earliest_day() -> None:
    refusal = listing_repair_refusal(
        entry_id="E-1",
        list_type=SERIOUS,
        listed_on=date(2026, 1, 10),
        removed_on=date(2027, 1, 10),
        removal_reason="CREDIT_REPAIR",
    )
    assert refusal is not None and refusal.earliest_on == date(2027, 1, 11)
    assert "E-1" in refusal.message and "2027-01-11" in refusal.message
    on_the_day = dict(entry_id="E-1", list_type=SERIOUS, listed_on=date(2026, 1, 10))
    assert (
        listing_repair_refusal(
            **on_the_day, removed_on=date(2027, 1, 11), removal_reason="CREDIT_REPAIR"
        )
        is None
    )
    # only 信用修复 has a term: 期满 and 撤销 take effect on their day
    for reason in ("EXPIRY", "CORRECTION"):
        assert (
            listing_repair_refusal(**on_the_day, removed_on=date(2026, 2, 1), removal_reason=reason)
            is None
        )


@pytest.mark.parametrize(
    ("legal_basis", "violation_type", "months"),
    [
        ("《中华人民共和国食品安全法》第一百二十二条", "无证经营", 12),
        ("《中华人民共和国药品管理法》第一百一十五条", "无证经营药品", 12),
        ("《中华人民共和国疫苗管理法》第八十条", "违法经营", 12),
        ("《中华人民共和国特种设备安全法》第八十四条", "使用未经检验的设备", 12),
        ("《中华人民共和国广告法》第五十五条", "虚假广告", 6),
        ("《无证无照经营查处办法》第十三条", "无照经营食品", 12),
    ],
)
def test_a_penalty_is_of_food_drugs_or_special_equipment_by_the_law_it_cites(
    legal_basis: str, violation_type: str, months: int
) -> None:
    assert penalty_repair_months(legal_basis, violation_type) == months


def test_the_registry_list_types_say_the_same_term() -> None:
    terms = {
        t.code: t.early_removal_after_years * 12
        for t in load_sample_province().list_types
        if t.early_removal_after_years is not None
    }
    assert terms == LISTING_REPAIR_MONTHS


# -- joint punishment ---------------------------------------------------------------------------


def test_joint_punishment_refuses_an_early_repair_and_the_listing_keeps_restricting() -> None:
    h = Harness()
    listing = list_entry(ENTITY, "E-1", listed_on=days(-100))
    h.feed("list_entry", listing)

    refused = h.feed("list_entry", removal_of(listing, days(-1)))

    [letter] = refused.outgoing
    assert letter.record_type == "dead_letter"
    [reason] = letter.value["reasons"]
    assert reason["field"] == "removed_on" and reason["code"] == "credit_repair.too_early"
    assert "E-1" in reason["message"]
    assert earliest_repair_day(days(-100), 12).isoformat() in reason["message"]
    assert h.of("lift_notice") == []
    # still listed: a procurement today is restricted
    h.feed("matter", matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1"))
    assert [hit["status"] for hit in h.of("restriction_hit")] == ["ACTIVE"]


def test_joint_punishment_lifts_a_repair_made_once_the_year_is_over() -> None:
    h = Harness()
    listing = list_entry(ENTITY, "E-1", listed_on=days(-400))
    h.feed("list_entry", listing)
    h.feed("list_entry", removal_of(listing, days(-1)))
    lifts = h.of("lift_notice")
    assert lifts and {lift["end_reason"] for lift in lifts} == {"CREDIT_REPAIR"}


def test_a_penalty_repaired_before_its_term_is_dead_lettered_with_the_earliest_day() -> None:
    h = Harness()
    decided = days(-200)  # a food penalty: a year
    early = penalty(
        ENTITY,
        "杭西市监罚〔2026〕9号",
        decided_on=decided,
        publicity_ended_on=days(-1),
        publicity_end_reason="CREDIT_REPAIR",
        version="2",
    )
    [letter] = h.feed("penalty", early).outgoing
    assert letter.record_type == "dead_letter"
    [reason] = letter.value["reasons"]
    assert reason["field"] == "publicity_ended_on"
    assert "杭西市监罚〔2026〕9号" in reason["message"]
    assert earliest_repair_day(decided, 12).isoformat() in reason["message"]
    # the same repair of a penalty under another law (six months) takes effect
    general = {**early, "legal_basis": "《中华人民共和国广告法》第五十五条"}
    assert all(o.record_type != "dead_letter" for o in h.feed("penalty", general).outgoing)


# -- the credit check -----------------------------------------------------------------------------


def test_the_credit_check_refuses_the_early_repair_and_keeps_the_listing_in_force() -> None:
    listed = list_entry(ENTITY, "E-1", listed_on=days(-100))
    listing = fold_entry(None, listed, CLOCK)
    with pytest.raises(RepairRefused, match="E-1") as refused:
        fold_entry(listing, removal_of(listed, days(-1)), CLOCK)
    assert refused.value.refusal.earliest_on == earliest_repair_day(days(-100), 12)
    assert listing.in_force_on(days(0))


# -- both services, any dates, any order: the same answer ----------------------------------------

DAYS = st.integers(-800, 30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    listed=DAYS,
    removed=DAYS,
    reason=st.sampled_from(["CREDIT_REPAIR", "EXPIRY"]),
    list_type=st.sampled_from([SERIOUS, "JUDGMENT_DEFAULTER"]),
    removal_first=st.booleans(),
    probe=st.lists(st.integers(-800, 60), min_size=1, max_size=8),
)
def test_joint_punishment_and_the_credit_check_agree_on_every_repair(
    listed: int,
    removed: int,
    reason: str,
    list_type: str,
    removal_first: bool,
    probe: list[int],
) -> None:
    listing = list_entry(ENTITY, "E-P", list_type=list_type, listed_on=days(listed))
    removal = removal_of(listing, days(removed), reason=reason)
    records = [removal, listing] if removal_first else [listing, removal]
    refused = reason == "CREDIT_REPAIR" and list_type == SERIOUS and days(removed) < (
        earliest_repair_day(days(listed), 12)
    )  # fmt: skip

    h = Harness()
    letters = [
        o for record in records for o in h.feed("list_entry", record).outgoing
        if o.record_type == "dead_letter"
    ]  # fmt: skip
    held: Any = None
    refusals = 0
    for record in records:
        try:
            held = fold_entry(held, record, CLOCK)
        except RepairRefused:
            refusals += 1

    assert len(letters) == refusals == int(refused)
    entry = h.entities[ENTITY]["listings"]["E-P"]
    jp = Listing("E-P", entry["listed"], entry.get("removed"))
    for offset in probe:
        day = days(offset)
        assert jp.in_force_on(epoch_day(day)) is held.in_force_on(day), day
    if refused:  # the listing stands from its day, open-ended
        assert held.removed_on is None and jp.removed is None
        assert held.in_force_on(days(listed) + timedelta(days=5000))
