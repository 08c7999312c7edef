"""Which departments a listing binds, and how: the division a measure is implemented in
is the entity's registered 住所 (the USCC's only when no registration is known); a
measure that restricts persons is delivered as one; and one function
(``streams.measures.binds_matter``) decides for both the credit check's verdict and
joint punishment's hits, so the two agree on every input (a property test over both)."""

from __future__ import annotations

import contextlib
from datetime import date, timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from registry.seed import Measure as SeedMeasure
from streams.credit_check.rules import (
    Listing,
    MeasureCatalog,
    RepairRefused,
    Verdict,
    assess,
    fold_entry,
)
from streams.joint_punishment.rules import PunishmentCatalog
from streams.measures import binds_matter
from tests.credit_check_records import list_type_records, measure_records
from tests.joint_punishment_records import (
    PROVINCE,
    list_entry,
    matter,
    registration,
    removal_of,
)
from tests.unit.test_joint_punishment_rules import CATALOG, ENTITY, NOW, XIHU, Harness, days
from xietong.clock import BusinessClock

SHANGCHENG = "330102"  # 上城区: the entity registered there, its USCC says 西湖区
CLOCK = BusinessClock()


def notices_to(h: Harness) -> dict[str, set[str]]:
    """department → the measures the sanction notices published to it name."""
    told: dict[str, set[str]] = {}
    for notice in h.of("sanction_notice"):
        told.setdefault(notice["department"]["code"], set()).add(notice["measure"]["code"])
    return told


def serious_listing(**fields: Any) -> dict[str, Any]:
    return list_entry(ENTITY, "E-1", listed_on=days(-10), planned_removal_on=days(1085), **fields)


# -- 1. the division is the registration's ------------------------------------------------------


def test_an_entity_registered_in_another_district_is_restricted_there_and_the_notice_says_why():
    h = Harness()
    h.feed("registration", registration(ENTITY, SHANGCHENG, registered_on=days(-400)))
    h.feed("list_entry", serious_listing())

    told = notices_to(h)
    assert "hz-sc-finance" in told and "hz-xh-finance" not in told  # CJ01 政府采购, 财政
    assert all(n["division_basis"] == "REGISTRATION" for n in h.of("sanction_notice"))
    assert {n["division_code"] for n in h.of("sanction_notice")} == {SHANGCHENG}


def test_without_a_registration_the_uscc_division_chooses_and_the_notice_says_so() -> None:
    h = Harness()
    h.feed("list_entry", serious_listing())

    assert "hz-xh-finance" in notices_to(h)
    assert {(n["division_code"], n["division_basis"]) for n in h.of("sanction_notice")} == {
        (XIHU, "USCC")
    }


def test_a_registration_read_after_the_listing_moves_the_restriction_to_the_new_district() -> None:
    """The new district's departments are told to restrict; the old district's are told to
    stop (a lift notice RELOCATED, from the registration's date); a provincial department
    serving both districts is not lifted (its notice, same id, names the new division)."""
    h = Harness()
    h.feed("list_entry", serious_listing())
    before = notices_to(h)
    h.published.clear()

    h.feed("registration", registration(ENTITY, SHANGCHENG, registered_on=days(-2)))

    after = notices_to(h)
    lifts = {lift["department"]["code"]: lift for lift in h.of("lift_notice")}
    assert "hz-sc-finance" in after and "hz-xh-finance" in lifts
    assert {code for code in before if code.startswith("hz-xh-")} == set(lifts)
    assert not set(after) & set(lifts)
    assert "zj-pbc" in before and "zj-pbc" not in lifts  # CJ07, seated in the province only
    lift = lifts["hz-xh-finance"]
    assert lift["end_reason"] == "RELOCATED"
    assert lift["ended_on"] == days(-2).toordinal() - date(1970, 1, 1).toordinal()
    assert [m["code"] for m in lift["measures"]] == sorted(before["hz-xh-finance"])


def test_an_older_registration_version_read_later_does_not_move_the_entity_back() -> None:
    h = Harness()
    h.feed("registration", registration(ENTITY, SHANGCHENG, registered_on=days(-2), version="2"))
    h.feed("list_entry", serious_listing())
    h.published.clear()

    h.feed("registration", registration(ENTITY, XIHU, registered_on=days(-400), version="1"))

    assert h.published == []


def test_an_entity_that_moves_back_is_restricted_again_by_the_departments_it_left() -> None:
    h = Harness()
    h.feed("list_entry", serious_listing())
    h.feed("registration", registration(ENTITY, SHANGCHENG, registered_on=days(-5), version="1"))
    h.published.clear()

    h.feed("registration", registration(ENTITY, XIHU, registered_on=days(-1), version="2"))

    assert "hz-xh-finance" in notices_to(h)
    assert {n["division_code"] for n in h.of("sanction_notice")} == {XIHU}
    assert "hz-sc-finance" in {lift["department"]["code"] for lift in h.of("lift_notice")}


def test_the_overdue_alert_goes_to_the_credit_authority_of_the_registered_district() -> None:
    h = Harness()
    h.feed("registration", registration(ENTITY, SHANGCHENG, registered_on=days(-400)))
    h.feed("list_entry", list_entry(ENTITY, "E-1", listed_on=days(-60)))
    h.feed(
        "matter",
        matter(ENTITY, "hz-sc-finance", "GOVERNMENT_PROCUREMENT", "CG-1", matter_date=days(-30)),
    )
    h.tick(NOW)

    (alert,) = h.of("feedback_overdue_alert")
    assert alert["recipients"] == ["hz-sc-finance", "hz-sc-drc"]


# -- 2. a measure that restricts persons is delivered as one ------------------------------------


def test_a_person_measure_names_its_target_the_roles_and_the_registered_legal_representative():
    """CJ11 限制担任董监高 (公司法 §178) restricts the persons responsible for a 失信被执行人,
    not the entity: its notice says so and names the 法定代表人 the registration gives."""
    h = Harness()
    h.feed("registration", registration(ENTITY, XIHU, registered_on=days(-400)))
    h.feed("list_entry", serious_listing(list_type="JUDGMENT_DEFAULTER"))

    by_measure = {n["measure"]["code"]: n for n in h.of("sanction_notice")}
    person = by_measure["CJ11"]
    assert person["measure"]["target"] == "PERSONS_IN_ROLE"
    assert person["measure"]["roles"] == ["LEGAL_REPRESENTATIVE", "PRINCIPAL_RESPONSIBLE_PERSON"]
    assert person["persons"] == [{"role": "LEGAL_REPRESENTATIVE", "name": "张三"}]
    entity = by_measure["CJ01"]
    assert (entity["measure"]["target"], entity["measure"]["roles"], entity["persons"]) == (
        "ENTITY",
        [],
        [],
    )


def test_a_person_measure_restricts_no_matter_of_the_entity_in_either_service() -> None:
    """The registration authority appointing officers of the listed entity itself is an
    entity matter: no hit, and the credit check answers CLEAR."""
    h = Harness()
    listed = serious_listing(list_type="JUDGMENT_DEFAULTER")
    h.feed("list_entry", listed)
    h.feed(
        "matter", matter(ENTITY, "hz-xh-amr", "OFFICER_APPOINTMENT", "BG-1", matter_date=days(-1))
    )

    assert h.of("restriction_hit") == []
    checked = assess(
        [fold_entry(None, listed, CLOCK)],
        MeasureCatalog.of(measure_records(), list_type_records()).by_matter_type[
            "OFFICER_APPOINTMENT"
        ],
        days(-1),
        sector="market_regulation",
        matter_type="OFFICER_APPOINTMENT",
    )
    assert checked.verdict is Verdict.CLEAR


# -- 3. one binding function, and the two services agree on every input -----------------------

SECTORS = sorted({d.sector for d in PROVINCE.departments})
MATTER_TYPES = ("GOVERNMENT_PROCUREMENT", "SUBSIDY", "LAND_SUPPLY", "INSPECTION")
LIST_TYPES = ("SERIOUS_ILLEGAL_DISHONEST", "JUDGMENT_DEFAULTER", "MAJOR_TAX_VIOLATION")
DEPARTMENTS = sorted(d.code for d in PROVINCE.departments if d.division in ("330106", "330100"))


@st.composite
def measures(draw: st.DrawFn, sector: str, matter_type: str) -> list[dict[str, Any]]:
    """A measures catalog: sectors, lists and matters drawn (often the checking
    department's sector and the matter's type, so that both verdicts come up), some
    measures on persons."""
    sectors = st.just(sector) | st.sampled_from(SECTORS)
    matters = st.just(matter_type) | st.sampled_from(MATTER_TYPES)
    found = []
    for n in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(("ENTITY", "ENTITY", "PERSONS_IN_ROLE")))
        found.append(
            {
                "code": f"M{n}",
                "text": f"措施{n}",
                "legal_basis": "国办发〔2020〕49号",
                "implementing_sectors": draw(
                    st.lists(sectors, min_size=1, max_size=3, unique=True)
                ),
                "list_types": draw(
                    st.lists(st.sampled_from(LIST_TYPES), min_size=1, max_size=2, unique=True)
                ),
                "matter_types": [
                    {"code": code, "name": code}
                    for code in draw(st.lists(matters, min_size=1, max_size=2, unique=True))
                ],
                "feedback_required": False,
                "feedback_days": None,
                "target": target,
                "roles": ["LEGAL_REPRESENTATIVE"] if target == "PERSONS_IN_ROLE" else [],
            }
        )
    return found


@st.composite
def listings(draw: st.DrawFn) -> list[dict[str, Any]]:
    """列入 (and some 移出) records of one entity, in force on days around the matter's."""
    entries = []
    for i in range(draw(st.integers(0, 3) | st.integers(1, 3))):
        listed_on = days(draw(st.integers(-60, 0)))
        planned = draw(st.none() | st.integers(1, 90))
        listed = list_entry(
            ENTITY,
            f"E-{i}",
            list_type=draw(st.sampled_from(LIST_TYPES)),
            listed_on=listed_on,
            planned_removal_on=None if planned is None else listed_on + timedelta(days=planned),
        )
        entries.append(listed)
        if draw(st.booleans()):
            reason = draw(st.sampled_from(("CREDIT_REPAIR", "CORRECTION", "EXPIRY")))
            entries.append(removal_of(listed, days(draw(st.integers(-70, 0))), reason))
    return entries


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, str, int]:
    """A catalog, the entity's list entries, and a matter: its department, type and day."""
    department = draw(st.sampled_from(DEPARTMENTS))
    matter_type = draw(st.sampled_from(MATTER_TYPES))
    sector = PROVINCE.department(department).sector
    return (
        draw(measures(sector, matter_type)),
        draw(listings()),
        department,
        matter_type,
        draw(st.integers(-60, 0)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_the_credit_check_says_restricted_exactly_when_joint_punishment_makes_a_hit(
    case: tuple[list[dict[str, Any]], list[dict[str, Any]], str, str, int],
) -> None:
    catalog_measures, entries, department, matter_type, matter_day = case
    list_types = list_type_records()
    h = Harness(PunishmentCatalog(catalog_measures, list_types, [*CATALOG.departments.values()]))
    for entry in entries:
        h.feed("list_entry", entry)
    h.feed("matter", matter(ENTITY, department, matter_type, "M-1", matter_date=days(matter_day)))
    hit = any(value["status"] == "ACTIVE" for value in h.of("restriction_hit"))

    folded: dict[str, Listing] = {}
    for entry in entries:
        with contextlib.suppress(RepairRefused):  # a repair before its term: both keep it
            folded[entry["entry_id"]] = fold_entry(folded.get(entry["entry_id"]), entry, CLOCK)
    checked = assess(
        folded.values(),
        MeasureCatalog.of(catalog_measures, list_types).by_matter_type.get(matter_type, ()),
        days(matter_day),
        sector=PROVINCE.department(department).sector,
        matter_type=matter_type,
    )

    assert (checked.verdict is Verdict.RESTRICTED) is hit
    # and each names the same measures
    named = {value["measure"]["code"] for value in h.of("restriction_hit")}
    assert named == {found.measure["code"] for found in checked.hits}


def test_a_measure_binds_only_its_sectors_matters_and_only_when_it_restricts_the_entity() -> None:
    cj01 = CATALOG.measures["CJ01"]
    cj11 = CATALOG.measures["CJ11"]
    assert binds_matter(cj01, sector="finance", matter_type="GOVERNMENT_PROCUREMENT")
    assert not binds_matter(cj01, sector="taxation", matter_type="GOVERNMENT_PROCUREMENT")
    assert not binds_matter(cj01, sector="finance", matter_type="SUBSIDY")
    assert not binds_matter(cj11, sector="market_regulation", matter_type="OFFICER_APPOINTMENT")
    legacy = {k: v for k, v in cj01.items() if k not in ("target", "roles")}  # before the field
    assert binds_matter(legacy, sector="finance", matter_type="GOVERNMENT_PROCUREMENT")


def test_the_credit_check_of_another_sectors_department_is_clear() -> None:
    """A 税务 department checking a government procurement: CJ01 is 财政's to apply."""
    listed = serious_listing()
    checked = assess(
        [fold_entry(None, listed, CLOCK)],
        MeasureCatalog.of(measure_records(), list_type_records()).by_matter_type[
            "GOVERNMENT_PROCUREMENT"
        ],
        days(-1),
        sector="taxation",
        matter_type="GOVERNMENT_PROCUREMENT",
    )
    assert checked.verdict is Verdict.CLEAR


@pytest.mark.parametrize(("target", "roles"), [("PERSONS_IN_ROLE", ()), ("ENTITY", ("DIRECTOR",))])
def test_a_person_measure_of_the_seed_names_its_roles_and_an_entity_measure_none(
    target: str, roles: tuple[str, ...]
) -> None:
    cj11 = next(m for m in PROVINCE.measures if m.code == "CJ11")
    assert (cj11.target, cj11.roles) == (
        "PERSONS_IN_ROLE",
        ("LEGAL_REPRESENTATIVE", "PRINCIPAL_RESPONSIBLE_PERSON"),
    )
    assert {m.target for m in PROVINCE.measures if m.code != "CJ11"} == {"ENTITY"}
    with pytest.raises(ValidationError, match="names its roles"):
        SeedMeasure(**{**cj11.model_dump(), "target": target, "roles": roles})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    divisions=st.lists(st.sampled_from((XIHU, SHANGCHENG, "330100")), min_size=1, max_size=3),
    data=st.data(),
)
def test_in_any_order_the_departments_left_restricting_are_those_of_the_latest_registration(
    divisions: list[str], data: st.DataObject
) -> None:
    """A standing listing and versions 1…n of the entity's registration, read in any order
    (some twice): each department's last word is a sanction notice exactly when it
    implements a measure of the list in the division of the latest version."""
    records = [("list_entry", serious_listing())] + [
        (
            "registration",
            registration(ENTITY, division, registered_on=days(-30 + n), version=str(n + 1)),
        )
        for n, division in enumerate(divisions)
    ]
    again = data.draw(st.lists(st.sampled_from(records), max_size=2))
    h = Harness()
    for kind, record in data.draw(st.permutations(records + again)):
        h.feed(kind, record)

    last: dict[str, str] = {}
    for kind, value, _ in h.published:
        if kind in ("sanction_notice", "lift_notice"):
            last[value["department"]["code"]] = kind
    restricting = {code for code, kind in last.items() if kind == "sanction_notice"}
    expected = {
        department["code"]
        for measure in CATALOG.by_list_type["SERIOUS_ILLEGAL_DISHONEST"]
        for department in CATALOG.implementing(measure, divisions[-1])
    }
    assert restricting == expected
