"""Values are what the mapping says: money, dates, ids and text, refused rather than repaired.

Each rule is shown on one field of a sample department's mapping file; a refused value is a
problem naming the field (and its column), the value found and what was expected, with a
code. The last tests are properties: whatever a source hands over, in any column of any
sample mapping, mapping and validating a record never raises.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from connectors.mapping import DepartmentMapping, MappingError, MappingFile
from connectors.validation import Problem, validate

ROOT = Path(__file__).parents[2]
DEPARTMENTS = ROOT / "connectors" / "departments"
SAMPLE_MAPPINGS = sorted(
    [
        *(p for p in DEPARTMENTS.glob("*.yaml") if not p.name.endswith(".connector.yaml")),
        *(ROOT / "tests" / "fixtures").rglob("*.yaml"),
    ]
)
SAMPLE_MAPPINGS = [p for p in SAMPLE_MAPPINGS if "record_type:" in p.read_text(encoding="utf-8")]


def penalty_mapping(field: str = "", **rule: Any) -> DepartmentMapping:
    """信用浙江's penalty mapping, with extra rule options on one field."""
    raw = yaml.safe_load((DEPARTMENTS / "zj-drc-penalty.yaml").read_text(encoding="utf-8"))
    if field:
        given = raw["fields"][field]
        raw["fields"][field] = {**({"column": given} if isinstance(given, str) else given), **rule}
    return DepartmentMapping(MappingFile.model_validate(raw), origin="zj-drc-penalty.yaml")


PENALTIES = penalty_mapping()


def mapped(mapping: DepartmentMapping, field: str, value: Any) -> tuple[Any, list[Problem]]:
    """The field's value when its column holds ``value``, and the problems naming it."""
    column = mapping.spec.fields[field].column
    assert column is not None
    record = mapping.map({mapping.spec.source_record_id: "R-1", column: value})
    return record.fields.get(field), [p for p in record.problems if p.field == field]


def refused(mapping: DepartmentMapping, field: str, value: Any) -> Problem:
    """The one problem of a refused value; the field keeps no value."""
    converted, problems = mapped(mapping, field, value)
    assert converted is None, f"{value!r} was taken as {converted!r}"
    (problem,) = problems
    assert problem.message.startswith(f"{field} (column ")
    return problem


def taken(mapping: DepartmentMapping, field: str, value: Any) -> Any:
    converted, problems = mapped(mapping, field, value)
    assert not problems, problems
    return converted


# -- money -------------------------------------------------------------------------------------


def test_an_amount_is_kept_to_the_schema_s_six_decimals_of_a_wan_yuan() -> None:
    assert taken(PENALTIES, "fine_amount", "12.5") == Decimal("12.500000")
    assert taken(PENALTIES, "fine_amount", "999999999999.999999") == Decimal("999999999999.999999")
    assert taken(PENALTIES, "fine_amount", " 0.000001 ") == Decimal("0.000001")


def test_1_0000001_wan_yuan_is_refused_not_rounded() -> None:
    problem = refused(PENALTIES, "fine_amount", "1.0000001")
    assert problem.code == "amount.scale"
    assert "'1.0000001' has 7 decimals; expected at most 6" in problem.message
    assert "not rounded" in problem.message


def test_trailing_zeros_beyond_the_scale_lose_nothing_and_are_taken() -> None:
    assert taken(PENALTIES, "fine_amount", "1.50000000") == Decimal("1.500000")


@pytest.mark.parametrize("value", ["1" * 13, "1" * 23, "-" + "9" * 30 + ".5", Decimal("1E+400")])
def test_an_amount_with_more_integer_digits_than_the_schema_holds_is_too_large(value: Any) -> None:
    problem = refused(PENALTIES, "fine_amount", value)
    assert problem.code == "amount.too_large"
    assert "expected at most 12 (the schema's decimal(18,6))" in problem.message


@pytest.mark.parametrize("value", ["1e400", "1E5", "2.5e-3"])
def test_exponent_notation_is_not_an_amount(value: str) -> None:
    problem = refused(PENALTIES, "fine_amount", value)
    assert problem.code == "amount.invalid"
    assert f"{value!r} is exponent notation" in problem.message


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "-inf", "十万", "100万元", "1.2.3", float("nan")]
)
def test_nan_infinity_and_words_are_not_amounts(value: Any) -> None:
    assert refused(PENALTIES, "fine_amount", value).code == "amount.invalid"


def test_1_000_is_refused_unless_the_mapping_allows_a_thousands_separator() -> None:
    problem = refused(PENALTIES, "fine_amount", "1,000")
    assert problem.code == "amount.separator"
    assert "'1,000' has a digit-group separator" in problem.message
    assert "thousands_separator" in problem.message

    grouped = penalty_mapping("fine_amount", thousands_separator=",")
    assert taken(grouped, "fine_amount", "1,000") == Decimal("1000")
    assert taken(grouped, "fine_amount", "1,234,567.25") == Decimal("1234567.25")
    assert taken(grouped, "fine_amount", "1000") == Decimal("1000")


@pytest.mark.parametrize("value", ["1,00", "10,00,000", ",100", "1,000,"])
def test_a_misplaced_thousands_separator_is_refused_where_one_is_allowed(value: str) -> None:
    grouped = penalty_mapping("fine_amount", thousands_separator=",")
    problem = refused(grouped, "fine_amount", value)
    assert problem.code == "amount.separator"


def test_fullwidth_digits_are_refused_unless_the_mapping_allows_them() -> None:
    problem = refused(PENALTIES, "fine_amount", "１００")
    assert problem.code == "amount.fullwidth"
    assert "'１００' is written in full-width digits" in problem.message


def test_fullwidth_100_becomes_100_where_full_width_digits_are_allowed() -> None:
    wide = penalty_mapping("fine_amount", fullwidth_digits=True)
    assert taken(wide, "fine_amount", "１００") == Decimal("100")
    assert taken(wide, "fine_amount", "１２.５") == Decimal("12.5")
    # Only the digits: a full-width comma is still no separator of this mapping.
    assert refused(wide, "fine_amount", "１，０００").code == "amount.separator"


def test_a_json_or_sql_number_is_an_amount_but_a_boolean_is_not() -> None:
    assert taken(PENALTIES, "fine_amount", 5) == Decimal("5")
    assert taken(PENALTIES, "fine_amount", Decimal("0.25")) == Decimal("0.25")
    assert taken(PENALTIES, "fine_amount", 0.1) == Decimal("0.1")  # by its repr, not binary
    assert refused(PENALTIES, "fine_amount", 1e-7).code == "amount.scale"
    problem = refused(PENALTIES, "fine_amount", True)
    assert (problem.code, "true (a boolean)" in problem.message) == ("amount.invalid", True)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_an_amount_taken_is_exactly_the_amount_given(amount: Decimal) -> None:
    converted, problems = mapped(PENALTIES, "fine_amount", amount)
    if problems:
        assert [p.code for p in problems] in (["amount.scale"], ["amount.too_large"])
    else:
        assert converted == amount


# -- dates -------------------------------------------------------------------------------------


def test_20240101_as_a_number_is_not_a_date() -> None:
    problem = refused(PENALTIES, "decided_on", 20240101)
    assert problem.code == "date.invalid"
    assert "20240101 is a number; a date is text in the format %Y/%m/%d" in problem.message
    assert refused(PENALTIES, "decided_on", 20240101.0).code == "date.invalid"
    assert refused(PENALTIES, "decided_on", True).code == "date.invalid"


def test_a_date_from_a_spreadsheet_or_a_database_is_taken_as_it_is() -> None:
    assert taken(PENALTIES, "decided_on", date(2026, 3, 2)) == date(2026, 3, 2)
    assert taken(PENALTIES, "decided_on", datetime(2026, 3, 2, 9, 30)) == date(2026, 3, 2)
    assert taken(PENALTIES, "decided_on", "2026/03/02") == date(2026, 3, 2)


def test_an_impossible_date_is_still_refused() -> None:
    problem = refused(PENALTIES, "decided_on", "2026/02/30")
    assert problem.code == "date.invalid"
    wanted = "'2026/02/30' is written in the format %Y/%m/%d but is no day of the calendar"
    assert wanted in problem.message


# -- ids ---------------------------------------------------------------------------------------


def record_id_of(value: Any, mapping: DepartmentMapping = PENALTIES) -> tuple[str, list[Problem]]:
    record = mapping.map({mapping.spec.source_record_id: value})
    return record.source_record_id, [p for p in record.problems if p.field == "source_record_id"]


@pytest.mark.parametrize("value", [["PEN-1"], {"id": "PEN-1"}, True, 3.5, b"PEN-1"])
def test_an_id_given_as_a_list_an_object_a_boolean_or_a_fraction_is_refused(value: Any) -> None:
    record_id, problems = record_id_of(value)
    assert record_id == ""
    (problem,) = problems
    assert problem.code == "id.invalid"
    assert "column '信息编号' holds" in problem.message
    assert "an id is text or a whole number" in problem.message


def test_an_id_given_as_a_list_is_refused() -> None:
    _, (problem,) = record_id_of(["PEN-1", "PEN-2"])
    assert "column '信息编号' holds a list of 2 items" in problem.message


@pytest.mark.parametrize(
    ("value", "written"), [("PEN-1", "PEN-1"), (42, "42"), (42.0, "42"), (Decimal("7"), "7")]
)
def test_an_id_is_text_and_a_whole_number_is_written_out(value: Any, written: str) -> None:
    assert record_id_of(value) == (written, [])


def test_the_record_version_is_an_id_too() -> None:
    sql = DepartmentMapping.load(ROOT / "tests" / "fixtures" / "sql-health-licence.yaml")
    assert sql.map({"记录编号": 7, "版本": 3}).record_version == "3"
    record = sql.map({"记录编号": 7, "版本": [3]})
    (problem,) = [p for p in record.problems if p.field == "record_version"]
    assert (problem.code, "column '版本' holds a list of 1 item" in problem.message) == (
        "id.invalid",
        True,
    )


def test_a_control_character_in_an_id_is_refused() -> None:
    _, (problem,) = record_id_of("PEN-\x001")
    assert problem.code == "text.control"
    assert "U+0000 at character 5" in problem.message


# -- text --------------------------------------------------------------------------------------


def test_nul_in_a_name_is_refused_naming_u_0000_and_its_position() -> None:
    problem = refused(PENALTIES, "party_name", "杭州\x00某某有限公司")
    assert problem.code == "text.control"
    assert problem.message.startswith(
        "party_name (column '行政相对人名称'): '杭州\\x00某某有限公司'"
    )
    assert "U+0000 at character 3" in problem.message


@pytest.mark.parametrize(
    ("character", "named"),
    [
        ("\x07", "U+0007"),
        ("\x1b", "U+001B"),
        ("\x7f", "U+007F"),
        ("\x85", "U+0085"),
        ("\x9f", "U+009F"),
    ],
)
def test_c0_c1_and_del_control_characters_are_refused(character: str, named: str) -> None:
    problem = refused(PENALTIES, "party_name", f"某某{character}公司")
    assert (problem.code, f"{named} at character 3" in problem.message) == ("text.control", True)


def test_tab_and_newline_are_text() -> None:
    assert taken(PENALTIES, "violation_facts", "第一项\t经查\n第二项") == "第一项\t经查\n第二项"


def test_a_lone_surrogate_is_refused_even_where_control_characters_are_stripped() -> None:
    problem = refused(PENALTIES, "party_name", "某某\udc80公司")
    assert (problem.code, "U+DC80 at character 3" in problem.message) == ("text.surrogate", True)
    lenient = penalty_mapping("party_name", strip_control=True)
    assert refused(lenient, "party_name", "某某\ud800公司").code == "text.surrogate"


def test_control_characters_are_removed_where_the_mapping_says_strip_control() -> None:
    lenient = penalty_mapping("party_name", strip_control=True)
    assert taken(lenient, "party_name", "杭州\x00某某\x1b有限\x85公司") == "杭州某某有限公司"


def test_a_crlf_inside_a_field_is_refused_unless_the_mapping_normalises_newlines() -> None:
    problem = refused(PENALTIES, "violation_facts", "第一项\r\n第二项")
    assert (problem.code, "U+000D at character 4" in problem.message) == ("text.control", True)
    assert "newlines: normalise" in problem.message

    normalised = penalty_mapping("violation_facts", newlines="normalise")
    assert (
        taken(normalised, "violation_facts", "第一项\r\n第二项\r第三项") == "第一项\n第二项\n第三项"
    )
    assert refused(normalised, "violation_facts", "第一项\r\n\x00").code == "text.control"


def test_a_code_with_a_control_character_is_refused_as_text() -> None:
    problem = refused(PENALTIES, "violation_type", "罚款\x00")
    assert problem.code == "text.control"


NOT_TEXT = {
    "list": ["某某公司"],
    "object": {"name": "某某公司"},
    "boolean": True,
    "5000 digits": 10**5000,
    "bytes": b"\xe6\x9f\x90",
    "infinity": float("inf"),
}


@pytest.mark.parametrize("value", NOT_TEXT.values(), ids=NOT_TEXT.keys())
def test_a_list_an_object_or_an_integer_of_5000_digits_is_not_text(value: Any) -> None:
    assert refused(PENALTIES, "party_name", value).code == "text.invalid"


def test_a_number_where_text_is_expected_is_written_out() -> None:
    assert taken(PENALTIES, "party_name", 330106.0) == "330106"  # a spreadsheet's code
    assert taken(PENALTIES, "party_name", 3.25) == "3.25"


def test_a_long_value_is_shortened_in_the_message() -> None:
    problem = refused(PENALTIES, "party_name", "某" * 5000 + "\x00")
    assert "… (5001 characters)" in problem.message
    assert "U+0000 at character 5001" in problem.message
    assert len(problem.message) < 400


def test_list_items_are_text_too() -> None:
    categories, problems = mapped(PENALTIES, "categories", ["警告", ["罚款"]])
    assert categories is None
    assert [p.code for p in problems] == ["text.invalid"]


# -- mapping files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "option"),
    [
        ("party_name", {"thousands_separator": ","}),
        ("decided_on", {"strip_control": True}),
        ("fine_amount", {"newlines": "normalise"}),
    ],
)
def test_a_rule_option_on_a_field_it_does_not_apply_to_is_a_mapping_error(
    field: str, option: dict[str, Any]
) -> None:
    with pytest.raises(MappingError, match=f"field {field} is .*; {next(iter(option))} applies"):
        penalty_mapping(field, **option)


def test_a_thousands_separator_is_one_character() -> None:
    with pytest.raises(ValueError, match="thousands_separator"):
        penalty_mapping("fine_amount", thousands_separator="1")


# -- whatever a source hands over, mapping never raises -----------------------------------------


def lenient_penalty_mapping() -> DepartmentMapping:
    """The penalty mapping with every relaxing option set where it applies."""
    raw = yaml.safe_load((DEPARTMENTS / "zj-drc-penalty.yaml").read_text(encoding="utf-8"))
    fields = raw["fields"]
    for name in ("fine_amount", "confiscated_amount"):
        fields[name] = {
            "column": fields[name],
            "thousands_separator": ",",
            "fullwidth_digits": True,
        }
    for name in ("party_name", "violation_facts", "content"):
        fields[name] = {"column": fields[name], "strip_control": True, "newlines": "normalise"}
    fields["categories"] = {**fields["categories"], "strip_control": True}
    return DepartmentMapping(MappingFile.model_validate(raw), origin="lenient")


LENIENT = lenient_penalty_mapping()
MAPPINGS = [*(DepartmentMapping.load(path) for path in SAMPLE_MAPPINGS), LENIENT]

#: What a JSON Lines export, an HTTP body, a spreadsheet or a database driver can give.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(4301, 5000).map(lambda digits: 10**digits)  # past str(int)'s limit
    | st.floats()
    | st.decimals()
    | st.text()
    | st.text(alphabet=st.characters(codec=None, categories=["Cc", "Cs", "Nd", "Zs"]))
    | st.dates()
    | st.datetimes()
    | st.binary(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


#: Text close to an amount, to reach every branch of the amount parser.
AMOUNT_LIKE = st.from_regex(r"[-+]?[0-9０-９,，. ]{0,16}([eE][-+]?[0-9]{1,4})?", fullmatch=True)


def columns_of(mapping: DepartmentMapping) -> list[str]:
    spec = mapping.spec
    return sorted({*mapping.columns, spec.source_record_id, *filter(None, [spec.record_version])})


@st.composite
def department_records(draw: st.DrawFn) -> tuple[DepartmentMapping, dict[str, Any]]:
    mapping = draw(st.sampled_from(MAPPINGS))
    values = st.one_of(VALUES, st.text(), AMOUNT_LIKE)
    record = {column: draw(values) for column in columns_of(mapping)}
    return mapping, record


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(department_records())
def test_mapping_and_validating_any_record_of_any_sample_department_never_raises(
    case: tuple[DepartmentMapping, dict[str, Any]],
) -> None:
    mapping, record = case
    mapped_record = mapping.map(record)
    problems = mapped_record.problems + validate(mapping.record_type.name, mapped_record.fields)
    for problem in problems:
        assert problem.field and problem.code
        problem.message.encode("utf-8")  # a dead letter's reason is UTF-8 text
    mapped_record.source_record_id.encode("utf-8")
    mapped_record.record_version.encode("utf-8")


def test_every_sample_mapping_is_under_the_property() -> None:
    names = {path.name for path in SAMPLE_MAPPINGS}
    assert {"zj-drc-penalty.yaml", "sql-health-licence.yaml", "xihu-market-licence.yaml"} <= names
    assert len(MAPPINGS) >= 10


@given(AMOUNT_LIKE)
def test_an_amount_in_text_is_taken_as_its_digits_say_or_refused_with_an_amount_code(
    text: str,
) -> None:
    if not text.strip():
        return  # empty: no amount, not a problem
    converted, problems = mapped(LENIENT, "fine_amount", text)
    if problems:
        assert [p.code.split(".")[0] for p in problems] == ["amount"]
    else:
        digits = unicodedata.normalize("NFKC", text).replace(",", "").strip()
        assert converted == Decimal(digits)


# -- the business scope (经营范围) --------------------------------------------------------------

REGISTRATIONS = DepartmentMapping(
    MappingFile.model_validate(
        yaml.safe_load((DEPARTMENTS / "hz-amr-registration.yaml").read_text(encoding="utf-8"))
    ),
    origin="hz-amr-registration.yaml",
)


def scope_entries(scope: Any) -> list[tuple[str, str]]:
    entries, problems = mapped(REGISTRATIONS, "business_scope_items", scope)
    assert problems == []
    return [(entry["text"], entry["kind"]) for entry in entries]


@pytest.mark.parametrize("separator", ["，", "；", ";", ",", "。"])
def test_a_scope_entry_ends_at_each_separator_registration_systems_write(separator: str) -> None:
    assert scope_entries(f"许可项目：食品销售{separator}烟草制品零售") == [
        ("食品销售", "PERMIT"),
        ("烟草制品零售", "PERMIT"),
    ]


def test_an_enumeration_comma_belongs_to_the_standard_wording_it_is_in() -> None:
    """广告设计、代理 is one wording of the 经营范围规范表述目录; 双告知's matching reads its
    parts (tests/unit/test_dual_notice_rules.py)."""
    assert scope_entries("一般项目：广告设计、代理；广告制作") == [
        ("广告设计、代理", "GENERAL"),
        ("广告制作", "GENERAL"),
    ]


def test_a_separator_inside_a_qualifier_does_not_end_the_entry() -> None:
    assert scope_entries("一般项目：食品销售（仅销售预包装食品、散装食品），日用百货销售") == [
        ("食品销售（仅销售预包装食品、散装食品）", "GENERAL"),
        ("日用百货销售", "GENERAL"),
    ]


def test_the_standard_wording_tags_entries_by_their_heading_and_drops_the_approval_notes() -> None:
    wording = (
        "许可项目：危险化学品经营（不含仓储）（依法须经批准的项目，经相关部门批准后方可开展"
        "经营活动，具体经营项目以审批结果为准）。一般项目：日用百货销售（除依法须经批准的项目外，"
        "凭营业执照依法自主开展经营活动）"
    )
    assert scope_entries(wording) == [
        ("危险化学品经营（不含仓储）", "PERMIT"),
        ("日用百货销售", "GENERAL"),
    ]


def test_free_text_under_no_heading_is_of_a_kind_the_wording_does_not_say() -> None:
    assert scope_entries("餐饮服务，日用百货销售") == [
        ("餐饮服务", "UNKNOWN"),
        ("日用百货销售", "UNKNOWN"),
    ]


def test_a_list_valued_scope_is_split_item_by_item_keeping_an_item_s_own_heading() -> None:
    assert scope_entries(["餐饮服务；烟草制品零售", "一般项目：日用百货销售"]) == [
        ("餐饮服务", "UNKNOWN"),
        ("烟草制品零售", "UNKNOWN"),
        ("日用百货销售", "GENERAL"),
    ]


def date_mapping(formats: object) -> DepartmentMapping:
    raw = yaml.safe_load((DEPARTMENTS / "zj-drc-penalty.yaml").read_text(encoding="utf-8"))
    raw["fields"]["decided_on"] = {"column": raw["fields"]["decided_on"], "date_format": formats}
    return DepartmentMapping(MappingFile.model_validate(raw), origin="formats")


def test_a_list_of_date_formats_is_tried_in_order_and_the_first_that_reads_wins() -> None:
    mapping = date_mapping(["%Y年%m月%d日", "%Y/%m/%d"])
    assert taken(mapping, "decided_on", "2024年3月5日") == date(2024, 3, 5)
    assert taken(mapping, "decided_on", "2024/3/5") == date(2024, 3, 5)


def test_a_date_in_none_of_the_formats_names_them_all() -> None:
    problem = refused(date_mapping(["%Y年%m月%d日", "%Y/%m/%d"]), "decided_on", "2024.3.5")
    assert problem.code == "date.invalid"
    assert "is not a date in any of the formats %Y年%m月%d日" in problem.message
    assert "%Y/%m/%d (e.g. 2024/03/05)" in problem.message
    assert "real date" not in problem.message


def test_an_impossible_day_in_a_matching_format_says_it_is_no_day_of_the_calendar() -> None:
    problem = refused(date_mapping(["%Y年%m月%d日", "%Y/%m/%d"]), "decided_on", "2024/2/30")
    assert "written in the format %Y/%m/%d but is no day of the calendar" in problem.message


def test_an_empty_list_or_an_unreadable_format_is_refused_when_the_file_is_loaded() -> None:
    for formats in ([], ["%Y/%m/%q"]):
        with pytest.raises(ValueError):
            date_mapping(formats)
