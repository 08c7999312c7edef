"""经营异常名录届满三年 (issue 13 §7): an entity in the 经营异常名录 for three years without the
listing being removed is proposed for the 严重违法失信名单 to the department that decides —
nothing is listed automatically. The rules of streams/joint_punishment/escalation.py, driven
through the joint-punishment rules with the sample province's catalog."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from registry.seed import load_sample_province
from streams.joint_punishment.escalation import (
    ESCALATING_LIST,
    ESCALATION_YEARS,
    PROPOSED_LIST,
    escalation_due_on,
    serious_listing_proposal_id,
)
from streams.joint_punishment.rules import JointPunishmentRules
from streams.joint_punishment.settings import JointPunishmentSettings
from tests.business_time import INSTANTS, instant_id
from tests.joint_punishment_records import list_entry, midnight_ms, removal_of
from tests.unit.test_joint_punishment_rules import CATALOG, ENTITY, NOW, Harness
from xietong.clock import business_clock, epoch_day, millis, months_later

LISTED = date(2023, 6, 15)  # three years end at 24:00 on 15 June 2026 (TODAY in the harness)
DUE = date(2026, 6, 16)


def abnormal(entry_id: str = "YC-1", listed_on: date = LISTED, **kw: Any) -> dict[str, Any]:
    """A 经营异常名录 listing by 西湖区市场监管 (its listing authority)."""
    return list_entry(
        ENTITY, entry_id, list_type=ESCALATING_LIST, listed_on=listed_on, authority="hz-xh-amr",
        **kw,
    )  # fmt: skip


def proposals(h: Harness) -> list[dict[str, Any]]:
    return h.of("serious_listing_proposal")


# -- the three years count as the law counts -----------------------------------------------------


def test_three_years_end_on_the_corresponding_day_and_the_proposal_is_due_the_day_after() -> None:
    assert months_later(date(2023, 6, 15), 36) == date(2026, 6, 15)
    assert escalation_due_on(epoch_day(date(2023, 6, 15))) == epoch_day(date(2026, 6, 16))
    # 29 February has no corresponding day in 2027: the month's last day is the last day
    assert months_later(date(2024, 2, 29), 36) == date(2027, 2, 28)
    assert escalation_due_on(epoch_day(date(2024, 2, 29))) == epoch_day(date(2027, 3, 1))


def test_an_abnormal_listing_standing_three_years_is_proposed_once_from_the_next_midnight() -> None:
    h = Harness()
    h.feed("list_entry", abnormal())
    assert proposals(h) == []  # 10:00 on its last day: the three years are not over
    assert h.entities[ENTITY]["due"] == midnight_ms(DUE)

    h.tick(midnight_ms(DUE) - 1)
    assert proposals(h) == []
    h.tick(midnight_ms(DUE))
    h.tick(midnight_ms(DUE) + 3_600_000)  # a later tick sends nothing again

    [proposal] = proposals(h)
    assert proposal["proposal_id"] == serious_listing_proposal_id("YC-1")
    assert proposal["status"] == "PROPOSED"
    assert proposal["department"]["code"] == "hz-xh-amr"
    assert proposal["recipient_basis"] == "LISTING_AUTHORITY"
    assert proposal["listing"]["entry_id"] == "YC-1"
    assert proposal["listing"]["listed_on"] == epoch_day(LISTED)
    assert (proposal["last_day"], proposal["due_on"]) == (
        epoch_day(date(2026, 6, 15)),
        epoch_day(DUE),
    )
    assert proposal["proposed_list_type"] == PROPOSED_LIST
    assert proposal["proposed_list_name"] == "严重违法失信名单"
    assert "《企业信息公示暂行条例》第十八条" in proposal["legal_basis"]
    assert "《市场监督管理严重违法失信名单管理办法》" in proposal["legal_basis"]
    assert proposal["proposed_at"] == midnight_ms(DUE)
    [(_, _, inboxes)] = [p for p in h.published if p[0] == "serious_listing_proposal"]
    assert inboxes == ("hz-xh-amr",)
    # nothing is listed: no sanction notice of the serious list (the 经营异常名录's own stand)
    assert {n["listing"]["list_type"] for n in h.of("sanction_notice")} == {ESCALATING_LIST}
    assert h.entities[ENTITY]["due"] is None


@pytest.mark.parametrize("instant", INSTANTS, ids=instant_id)
def test_the_proposal_is_due_at_midnight_in_the_province_not_in_utc(instant: datetime) -> None:
    """15:30Z is 23:30 on 15 June in Hangzhou (the three years still run), 16:30Z and
    23:30Z are 16 June there (they are over)."""
    h = Harness()
    h.feed("list_entry", abnormal())
    h.tick(millis(instant))
    over = business_clock().day_of(instant) >= DUE
    assert len(proposals(h)) == (1 if over else 0)


def test_a_listing_read_after_its_three_years_is_proposed_at_once() -> None:
    h = Harness()
    h.feed("list_entry", abnormal(listed_on=date(2022, 1, 1)))
    [proposal] = proposals(h)
    assert proposal["proposed_at"] == midnight_ms(date(2025, 1, 2))


def test_a_removal_before_the_day_cancels_the_proposal() -> None:
    h = Harness()
    listing = abnormal()
    h.feed("list_entry", listing)
    h.feed("list_entry", removal_of(listing, date(2026, 6, 15), reason="EXPIRY"))

    h.tick(midnight_ms(DUE) + 1)

    assert proposals(h) == []
    assert h.entities[ENTITY]["due"] is None  # nothing left to wait for


def test_a_removal_dated_after_the_three_years_leaves_the_proposal_standing() -> None:
    h = Harness()
    listing = abnormal()
    h.feed("list_entry", listing)
    h.tick(midnight_ms(DUE))
    h.feed("list_entry", removal_of(listing, DUE, reason="EXPIRY"), now=midnight_ms(DUE) + 1)
    assert [p["status"] for p in proposals(h)] == ["PROPOSED"]


def test_a_backdated_removal_read_after_the_proposal_withdraws_it() -> None:
    h = Harness()
    listing = abnormal()
    h.feed("list_entry", listing)
    h.tick(midnight_ms(DUE))
    h.feed(
        "list_entry", removal_of(listing, date(2026, 5, 1), reason="EXPIRY"), now=NOW + 86_400_000
    )

    first, withdrawn = proposals(h)
    assert first["status"] == "PROPOSED" and withdrawn["status"] == "WITHDRAWN"
    assert withdrawn["proposal_id"] == first["proposal_id"]
    assert "ended before its three years" in withdrawn["withdrawn_reason"]


def test_a_correction_voids_the_listing_and_nothing_is_proposed() -> None:
    h = Harness()
    listing = abnormal(listed_on=date(2022, 1, 1))
    h.feed("list_entry", removal_of(listing, date(2026, 1, 1), reason="CORRECTION"))
    h.feed("list_entry", listing)
    assert proposals(h) == []


def test_a_listing_by_an_unknown_authority_goes_to_the_registration_authority_of_its_division() -> (
    None
):
    h = Harness()
    listing = {
        **abnormal(listed_on=date(2022, 1, 1)),
        "listing_authority_uscc": "11330000XXXXXXXXXX",
    }
    h.feed("list_entry", listing)
    [proposal] = proposals(h)
    assert proposal["department"]["code"] == "hz-xh-amr"  # 市场监管 of 西湖区
    assert proposal["recipient_basis"] == "REGISTRATION_AUTHORITY"


def test_only_the_abnormal_operation_list_escalates() -> None:
    h = Harness()
    h.feed("list_entry", list_entry(ENTITY, "S-1", listed_on=date(2022, 1, 1)))
    defaulter = list_entry(
        ENTITY, "J-1", list_type="JUDGMENT_DEFAULTER", listed_on=date(2022, 1, 1)
    )
    h.feed("list_entry", defaulter)
    assert proposals(h) == []


# -- a province's first day ----------------------------------------------------------------------


def rules_with_cut_over(cut_over: datetime) -> tuple[JointPunishmentRules, dict[str, Any]]:
    entities: dict[str, Any] = {}
    settings = JointPunishmentSettings(history_until=cut_over)
    return JointPunishmentRules(entities, lambda: CATALOG, settings), entities


def test_a_proposal_due_before_the_cut_over_is_history_recorded_and_sent_to_nobody() -> None:
    rules, entities = rules_with_cut_over(datetime(2026, 1, 1, tzinfo=business_clock().zone))
    sent = rules.on_list_entry(abnormal(listed_on=date(2022, 1, 1)), NOW).outgoing
    assert [o for o in sent if o.record_type == "serious_listing_proposal"] == []
    identity = serious_listing_proposal_id("YC-1")
    assert entities[ENTITY]["sent"][identity]["digest"] == "history"


def test_a_proposal_due_after_the_cut_over_is_sent() -> None:
    rules, _ = rules_with_cut_over(datetime(2026, 1, 1, tzinfo=business_clock().zone))
    sent = rules.on_list_entry(abnormal(listed_on=date(2023, 1, 1)), NOW).outgoing
    assert [o.record_type for o in sent].count("serious_listing_proposal") == 1


# -- the registry says the same ------------------------------------------------------------------


def test_the_registry_list_types_say_the_same_term_and_target() -> None:
    [list_type] = [t for t in load_sample_province().list_types if t.code == ESCALATING_LIST]
    assert list_type.escalates_to == PROPOSED_LIST
    assert list_type.escalates_after_years == ESCALATION_YEARS
