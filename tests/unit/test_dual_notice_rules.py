"""The 双告知 rules that need no broker: matching a scope against the catalog, the claim
deadline and its working-day calendar, the ids, the state machine's table."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from registry.seed import load_sample_province
from streams.dual_notice.rules import (
    ACTIONS,
    ActionKind,
    ApprovalCatalog,
    PushState,
    push_id,
    routing_id,
)
from streams.dual_notice.settings import CHINA_STANDARD_TIME, DualNoticeSettings


@pytest.fixture(scope="module")
def catalog() -> ApprovalCatalog:
    """The sample province's catalog, as registry.approval-items carries it."""
    province = load_sample_province()
    records = []
    for item in province.approval_items:
        routes = []
        for division, code in province.routing.get(item.code, {}).items():
            department = province.department(code)
            routes.append(
                {
                    "division_code": division,
                    "department_code": code,
                    "department_uscc": department.uscc,
                    "department_name": department.name,
                }
            )
        records.append(
            {
                "code": item.code,
                "name": item.name,
                "legal_basis": item.legal_basis,
                "certificate_name": item.certificate_name,
                "scope_wordings": list(item.match.scope),
                "industry_codes": list(item.match.industry),
                "routes": routes,
            }
        )
    return ApprovalCatalog(records)


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


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_the_claim_deadline_is_fifteen_days_after_the_registration_by_default() -> None:
    registered = datetime(2026, 3, 2, tzinfo=CHINA_STANDARD_TIME)

    deadline = DualNoticeSettings().claim_deadline(millis(registered))

    assert deadline == millis(registered + timedelta(days=15))


def test_in_working_days_weekends_and_holidays_do_not_count_but_make_up_days_do() -> None:
    rules = DualNoticeSettings(
        claim_period=timedelta(days=5),
        working_days=True,
        holidays=[date(2026, 10, 1), date(2026, 10, 2)],
        extra_working_days=[date(2026, 10, 10)],  # a Saturday worked instead
    )
    registered = datetime(2026, 9, 30, 10, 0, tzinfo=CHINA_STANDARD_TIME)  # a Wednesday

    deadline = rules.claim_deadline(millis(registered))

    # 10-01 and 10-02 are holidays, 10-03/04 a weekend; 10-05 … 10-09 are five working days
    assert deadline == millis(datetime(2026, 10, 10, tzinfo=CHINA_STANDARD_TIME))
    assert rules.is_working_day(date(2026, 10, 10)) and not rules.is_working_day(date(2026, 10, 1))


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
