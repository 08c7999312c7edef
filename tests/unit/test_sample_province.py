"""The sample province (registry/seed/sample_province.yaml), as a specification of its data."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.seed import (
    CREDIT_LIST_TYPES,
    DepartmentRole,
    Level,
    SampleProvince,
    load_sample_province,
)
from schemas import CREDIT_LIST_ENTRY, LICENCE
from xietong.uscc import is_valid_uscc

#: The one item+division with no department: 上城区 has no 农业农村局 (分流失败).
DELIBERATE_GAP = ("NYJYXK", "330102")


@pytest.fixture(scope="module")
def province() -> SampleProvince:
    return load_sample_province()


def test_it_loads_with_two_cities_of_three_counties_each(province: SampleProvince) -> None:
    assert province.province == "330000"
    cities = province.divisions_at(Level.CITY)
    assert [(c.code, c.name) for c in cities] == [("330100", "杭州市"), ("330200", "宁波市")]
    assert [c.code for c in province.counties_of("330100")] == ["330102", "330106", "330110"]
    assert [c.code for c in province.counties_of("330200")] == ["330203", "330206", "330212"]


def test_every_department_uscc_is_a_valid_government_code_of_its_division(
    province: SampleProvince,
) -> None:
    for department in province.departments:
        assert is_valid_uscc(department.uscc), department.code
        assert department.uscc.startswith("11"), department.code
        assert department.uscc[2:8] == department.division, department.code


def test_department_codes_and_usccs_are_unique(province: SampleProvince) -> None:
    codes = [department.code for department in province.departments]
    usccs = [department.uscc for department in province.departments]
    assert len(codes) == len(set(codes))
    assert len(usccs) == len(set(usccs))


def test_the_health_commission_keeps_the_uscc_of_the_mapping_fixture(
    province: SampleProvince,
) -> None:
    fixture = Path(__file__).parents[1] / "fixtures" / "hz-health-licence.yaml"
    assert province.department("hz-health").uscc in fixture.read_text(encoding="utf-8")


def test_departments_sit_at_the_level_of_their_division(province: SampleProvince) -> None:
    for department in province.departments:
        assert province.division(department.division).level is department.level


def test_every_level_has_a_registration_authority_and_a_credit_authority(
    province: SampleProvince,
) -> None:
    for division in province.divisions:
        roles = {
            role
            for department in province.departments
            if department.division == division.code
            for role in department.roles
        }
        assert DepartmentRole.REGISTRATION in roles, division.name
        assert DepartmentRole.CREDIT in roles, division.name
        assert province.department_of("market_regulation", division.code) is not None
        assert province.department_of("development_reform", division.code) is not None


def test_the_catalog_has_the_twenty_items_of_the_domain_brief_with_drugs_split_in_two(
    province: SampleProvince,
) -> None:
    """The brief's 20 items, 药品经营许可 being two (retail, wholesale) since issue 13:
    药品管理法 §51 has them approved at different levels."""
    items = province.approval_items
    assert len(items) == 21
    assert len({item.code for item in items}) == 21
    licence_categories = {
        symbol
        for field in LICENCE.schema["fields"]
        if field["name"] == "category"
        for symbol in field["type"]["symbols"]
    }
    for item in items:
        assert item.legal_basis.startswith("《") or "号" in item.legal_basis, item.code
        assert item.sector in province.sectors, item.code
        assert item.category in licence_categories, item.code
        assert item.match.scope, item.code


def test_every_routing_references_an_existing_item_division_and_department(
    province: SampleProvince,
) -> None:
    item_codes = {item.code for item in province.approval_items}
    division_codes = {division.code for division in province.divisions}
    department_codes = {department.code for department in province.departments}
    for item_code, table in province.routing.items():
        assert item_code in item_codes
        for division, department in table.items():
            assert division in division_codes
            assert department in department_codes


def test_every_city_and_county_routes_every_item_except_the_one_deliberate_gap(
    province: SampleProvince,
) -> None:
    local = [d.code for d in province.divisions if d.level in (Level.CITY, Level.COUNTY)]
    missing = [
        (item.code, division)
        for item in province.approval_items
        for division in local
        if province.route(item.code, division) is None
    ]
    assert missing == [DELIBERATE_GAP]


def test_items_route_to_their_sector_where_they_are_approved(province: SampleProvince) -> None:
    """A county-level item goes to the division's own department (a city's for a city), a
    city-level one to the city's, a province-level one to the province's."""
    for item in province.approval_items:
        for division, code in province.routing[item.code].items():
            department = province.department(code)
            seat = {
                Level.COUNTY: division,
                Level.CITY: province.city_of(division).code,
                Level.PROVINCE: province.province,
            }[item.level]
            assert department.sector == item.sector, (item.code, division)
            assert department.division == seat, (item.code, division)
            assert DepartmentRole.LICENSING in department.roles, (item.code, division)


def test_a_county_item_approved_at_city_level_routes_to_the_city_department(
    province: SampleProvince,
) -> None:
    food = province.route("SPJYXK", "330106")
    drugs = province.route("YPJYXK", "330106")
    salt = province.route("SYPFXK", "330212")
    assert food is not None and food.name == "杭州市西湖区市场监督管理局"
    assert drugs is not None and drugs.name == "杭州市药品监督管理局"
    assert salt is not None and salt.name == "浙江省盐务管理局"


def test_drug_wholesale_is_approved_by_the_provincial_drug_administration_retail_by_the_city(
    province: SampleProvince,
) -> None:
    """药品管理法 §51: 药品批发 needs a 药品经营许可证 from the province's 药监, 药品零售 one
    from a 药监 at county level or above (the city's here), wherever the entity is."""
    [wholesale] = province.items_for_scope(["药品批发"])
    [retail] = province.items_for_scope(["药品零售"])
    assert wholesale.level is Level.PROVINCE and retail.level is Level.CITY
    for division in ("330100", "330106", "330200", "330212"):
        wholesaler = province.route(wholesale.code, division)
        retailer = province.route(retail.code, division)
        assert wholesaler is not None and wholesaler.name == "浙江省药品监督管理局", division
        assert retailer is not None and retailer.level is Level.CITY, division
        assert retailer.division == province.city_of(division).code, division


def test_permit_wordings_match_their_item_and_general_wordings_do_not(
    province: SampleProvince,
) -> None:
    codes = [item.code for item in province.items_for_scope(["餐饮服务", "烟草制品零售"])]
    assert codes == ["SPJYXK", "YCZMLSXK"]
    qualified = province.items_for_scope(["危险化学品经营（不含仓储）"])
    assert [item.code for item in qualified] == ["WXHXPJYXK"]
    assert province.items_for_scope(["日用百货销售", "旅行社服务网点旅游招徕、咨询服务"]) == []
    assert [item.code for item in province.items_for_industry("H6210")] == ["SPJYXK"]


def test_list_types_are_the_schema_symbols_with_their_terms(province: SampleProvince) -> None:
    schema_symbols = next(
        f["type"]["symbols"] for f in CREDIT_LIST_ENTRY.schema["fields"] if f["name"] == "list_type"
    )
    codes = [list_type.code for list_type in province.list_types]
    assert codes == list(CREDIT_LIST_TYPES)
    assert set(codes) == set(schema_symbols) - {"UNKNOWN"}
    assert province.list_type("SERIOUS_ILLEGAL_DISHONEST").duration_years == 3
    assert province.list_type("SERIOUS_ILLEGAL_DISHONEST").early_removal_after_years == 1
    assert province.list_type("JUDGMENT_DEFAULTER").duration_years == 2
    abnormal = province.list_type("ABNORMAL_OPERATION")
    assert abnormal.duration_years is None
    assert (abnormal.escalates_to, abnormal.escalates_after_years) == (
        "SERIOUS_ILLEGAL_DISHONEST",
        3,
    )


def test_every_measure_names_known_list_types_matters_and_sectors(
    province: SampleProvince,
) -> None:
    list_types = {list_type.code for list_type in province.list_types}
    assert len(province.measures) >= 12
    for measure in province.measures:
        assert set(measure.list_types) <= list_types, measure.code
        assert set(measure.matters) <= set(province.matter_types), measure.code
        assert set(measure.sectors) <= set(province.sectors), measure.code
        assert measure.legal_basis, measure.code
        if measure.feedback_required:
            assert measure.feedback_days and measure.feedback_days > 0, measure.code


def test_every_list_type_restricts_something(province: SampleProvince) -> None:
    for list_type in province.list_types:
        assert province.measures_for(list_type.code), list_type.code


def test_a_routing_to_an_unknown_department_is_refused_with_its_name() -> None:
    raw = load_sample_province().model_dump(mode="json")
    raw["routing"]["SPJYXK"]["330106"] = "hz-xh-nowhere"
    with pytest.raises(ValueError, match="hz-xh-nowhere"):
        SampleProvince.model_validate(raw)
