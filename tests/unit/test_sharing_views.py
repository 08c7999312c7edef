"""有条件共享's rule, apart from the wiring: a view never holds a field or a division that
was not granted, for any record and any grant, and is always writable under the view's
own schema."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.grants import DepartmentGrant, is_conditional
from schemas import CREDIT_LIST_ENTRY, LICENCE, REGISTRATION, RecordType
from streams.sharing.views import (
    VIEW_FIELDS,
    ViewGrant,
    entity_division,
    project,
    shared_record_type,
    view_event_id,
    view_record_name,
    view_schema,
    within,
)
from tests.joint_punishment_records import PROVINCE, licence, list_entry, registration, today
from xietong.topics import DepartmentTopic
from xietong.uscc import make_uscc

ALWAYS = {name for name, _, _ in VIEW_FIELDS}
#: Counties of Hangzhou and Ningbo, and the prefectures and the province above them.
COUNTIES = ("330102", "330105", "330106", "330110", "330203", "330212")
DIVISIONS = (*COUNTIES, "330100", "330200", "330000", "320000")


def grant_of(
    record_type: RecordType,
    fields: tuple[str, ...] | None,
    divisions: tuple[str, ...] | None,
    subscription_id: int = 7,
    valid_until: datetime | None = None,
    status: str = "APPROVED",
) -> ViewGrant:
    return ViewGrant(
        subscription_id=subscription_id,
        department_code="hz-xh-health",
        resource_code=record_type.name,
        source_topic=record_type.topic.name,
        status=status,
        fields=fields,
        divisions=divisions,
        valid_until=valid_until,
    )


def field_names(record_type: RecordType) -> list[str]:
    return [field["name"] for field in record_type.schema["fields"]]


def writes(schema: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
    """``view`` written under ``schema`` and read back."""
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, view)
    buffer.seek(0)
    result: dict[str, Any] = fastavro.schemaless_reader(buffer, parsed, parsed)
    return result


def as_read(record_type: RecordType, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as a consumer decodes it from its canonical topic (instants as datetimes)."""
    return writes(record_type.schema, record)


# -- the example of the issue ---------------------------------------------------------------


def test_a_list_entry_of_330106_is_shared_with_only_the_granted_fields() -> None:
    grant = grant_of(CREDIT_LIST_ENTRY, ("uscc", "list_type"), ("330106",))
    record = list_entry(make_uscc(division="330106"), "LIST-1", list_type="ABNORMAL_OPERATION")

    view = project(CREDIT_LIST_ENTRY, grant, record)

    assert view == {
        "view_event_id": view_event_id(7, record["envelope"]["event_id"]),
        "subscription_id": 7,
        "source_event_id": record["envelope"]["event_id"],
        "record_version": "1",
        "uscc": record["uscc"],
        "list_type": "ABNORMAL_OPERATION",
    }
    assert writes(view_schema(CREDIT_LIST_ENTRY, grant), view) == view


def test_a_list_entry_of_another_division_is_not_shared() -> None:
    grant = grant_of(CREDIT_LIST_ENTRY, ("uscc", "list_type"), ("330106",))
    assert project(CREDIT_LIST_ENTRY, grant, list_entry(make_uscc(division="330102"), "L")) is None


def test_a_registration_is_where_its_residence_is_not_where_its_uscc_was_issued() -> None:
    grant = grant_of(REGISTRATION, ("name",), ("330106",))
    moved_in = registration(make_uscc(division="330102"), "330106", registered_on=today())
    moved_out = registration(make_uscc(division="330106"), "330102", registered_on=today())

    assert entity_division(REGISTRATION, moved_in) == "330106"
    assert project(REGISTRATION, grant, moved_in) is not None
    assert project(REGISTRATION, grant, moved_out) is None


def test_a_licence_is_where_its_holders_uscc_was_issued() -> None:
    record = licence(make_uscc(division="330110"), "LIC-1", "hz-xh-health")
    assert entity_division(LICENCE, record) == "330110"


def test_a_prefecture_covers_its_counties_and_a_province_its_prefectures() -> None:
    assert within("330106", "330106") and within("330106", "330100")
    assert within("330106", "330000") and within("330100", "330000")
    assert not within("330106", "330102") and not within("330203", "330100")
    assert not within("330100", "330106") and not within("330106", "320000")


def test_a_filter_alone_shares_every_field() -> None:
    grant = grant_of(CREDIT_LIST_ENTRY, None, ("330106",))
    record = as_read(CREDIT_LIST_ENTRY, list_entry(make_uscc(division="330106"), "LIST-2"))
    view = project(CREDIT_LIST_ENTRY, grant, record)
    assert view is not None
    assert set(view) == ALWAYS | set(field_names(CREDIT_LIST_ENTRY))
    assert writes(view_schema(CREDIT_LIST_ENTRY, grant), view)["envelope"] == record["envelope"]


def test_the_view_has_a_record_name_and_subject_of_its_own_per_department() -> None:
    assert (
        view_record_name(CREDIT_LIST_ENTRY, "hz-xh-health")
        == "cn.gov.xietong.shared.hz_xh_health.CreditListEntry"
    )
    schema = view_schema(CREDIT_LIST_ENTRY, grant_of(CREDIT_LIST_ENTRY, ("uscc",), None))
    assert all(f["default"] is None and f["type"][0] == "null" for f in schema["fields"])


# -- the grant ---------------------------------------------------------------------------------


def test_a_grant_is_live_while_approved_and_before_its_end() -> None:
    now = datetime(2026, 12, 7, 8, tzinfo=UTC)
    assert grant_of(CREDIT_LIST_ENTRY, ("uscc",), None).live(now)
    ending = grant_of(CREDIT_LIST_ENTRY, ("uscc",), None, valid_until=now + timedelta(seconds=1))
    assert ending.live(now) and not ending.live(now + timedelta(seconds=1))
    assert not grant_of(CREDIT_LIST_ENTRY, ("uscc",), None, status="REVOKED").live(now)


def test_a_grant_comes_from_the_published_subscription() -> None:
    published = {
        "subscription_id": 12,
        "resource_code": "credit_list_entry",
        "topic": "credit.list-entries",
        "subscriber_code": "hz-xh-health",
        "status": "APPROVED",
        "fields": ["uscc", "list_type"],
        "filters": {"divisions": ["330106"]},
        "valid_until": None,
        "decided_at": None,
    }
    grant = ViewGrant.of(published)
    assert grant.conditional
    assert grant.view_topic == "dept.hz-xh-health.shared.credit_list_entry"
    assert shared_record_type(grant) is CREDIT_LIST_ENTRY
    assert not ViewGrant.of({**published, "fields": None, "filters": None}).conditional
    elsewhere = ViewGrant.of({**published, "topic": "dept.zj-drc.lists"})
    assert shared_record_type(elsewhere) is None, "only a canonical topic's records are known"


@pytest.mark.parametrize(
    ("fields", "filters", "conditional"),
    [
        (None, None, False),
        (None, {}, False),
        (None, {"divisions": None}, False),
        ([], None, True),
        (["uscc"], None, True),
        (None, {"divisions": ["330106"]}, True),
    ],
)
def test_conditional_means_chosen_fields_or_a_filter(
    fields: list[str] | None, filters: dict[str, Any] | None, conditional: bool
) -> None:
    assert is_conditional(fields, filters) is conditional


def test_a_conditional_subscription_is_granted_its_view_and_not_the_canonical_topic() -> None:
    view = DepartmentTopic.shared("hz-xh-health", "credit_list_entry")
    grant = DepartmentGrant.for_department(
        "hz-xh-health", read_topics={"market.registrations"}, shared_topics={view}
    )
    assert {view, "market.registrations"} <= grant.read_topics
    assert "credit.list-entries" not in grant.read_topics
    assert grant.shared_topics == {view}
    assert DepartmentTopic.SHARED.view_of(view) == ("hz-xh-health", "credit_list_entry")
    assert DepartmentTopic.SHARED.view_of("dept.hz-xh-health.inbox") is None
    assert DepartmentTopic.SHARED.code_of(view) == "hz-xh-health"
    assert re.match(DepartmentTopic.SHARED.pattern(), view)
    assert not re.match(DepartmentTopic.SHARED.pattern(), "dept.hz-xh-health.inbox")


# -- the property -----------------------------------------------------------------------------

RECORD_TYPES = (CREDIT_LIST_ENTRY, REGISTRATION)
#: Where a registration's residence may be: a county with a registration authority.
RESIDENCES = tuple(c for c in COUNTIES if PROVINCE.department_of("market_regulation", c))


@st.composite
def records(draw: st.DrawFn, record_type: RecordType) -> dict[str, Any]:
    uscc = make_uscc(
        draw(st.sampled_from(("91", "92", "93"))),
        draw(st.sampled_from(COUNTIES)),
        draw(st.text("0123456789ABCDEFGHJKLMNPQRTUWXY", min_size=8, max_size=8)),
    )
    if record_type is REGISTRATION:
        return registration(uscc, draw(st.sampled_from(RESIDENCES)), registered_on=today())
    entry = list_entry(uscc, draw(st.text("ABC0123456789", min_size=1, max_size=12)))
    entry["entity_name"] = draw(st.text(max_size=20))
    return entry


@st.composite
def cases(draw: st.DrawFn) -> tuple[RecordType, ViewGrant, dict[str, Any]]:
    record_type = draw(st.sampled_from(RECORD_TYPES))
    names = field_names(record_type)
    fields = draw(st.none() | st.lists(st.sampled_from(names), unique=True).map(tuple))
    divisions = draw(
        st.none() | st.lists(st.sampled_from(DIVISIONS), min_size=1, unique=True).map(tuple)
    )
    grant = grant_of(record_type, fields, divisions, draw(st.integers(1, 10**9)))
    return record_type, grant, as_read(record_type, draw(records(record_type)))


@settings(max_examples=300, deadline=None)
@given(cases())
def test_a_view_never_holds_a_field_or_a_division_not_granted(
    case: tuple[RecordType, ViewGrant, dict[str, Any]],
) -> None:
    record_type, grant, record = case
    view = project(record_type, grant, record)
    division = entity_division(record_type, record)
    in_divisions = grant.divisions is None or any(
        within(division or "", g) for g in grant.divisions
    )
    if not in_divisions:
        assert view is None
        return
    assert view is not None, "a record in a granted division is shared"
    granted = set(field_names(record_type)) if grant.fields is None else set(grant.fields)
    assert set(view) <= ALWAYS | granted
    assert set(view) >= ALWAYS
    for name in set(view) - ALWAYS:
        assert view[name] == record[name]
    assert view["view_event_id"] == view_event_id(
        grant.subscription_id, record["envelope"]["event_id"]
    )
    schema = view_schema(record_type, grant)
    assert {f["name"] for f in schema["fields"]} == set(view)
    assert writes(schema, view) == view
