"""The inbox API's pure rules: the cursor, the actions' ids, the filters, the contract."""

from __future__ import annotations

from datetime import date

import pytest

from connectors.inbox.api import create_app
from connectors.inbox.items import (
    ITEM_SOURCES,
    FilterError,
    InboxFilter,
    InboxKind,
    decode_cursor,
    encode_cursor,
    inbox_action_id,
)
from connectors.inbox.settings import InboxSettings
from xietong.clock import business_clock
from xietong.topics import DEPARTMENT_INBOUND, service_grants


@pytest.mark.parametrize("offset", [-1, 0, 41, 2**40])
def test_a_cursor_gives_back_the_offset_it_was_made_of(offset: int) -> None:
    cursor = encode_cursor(offset)
    assert decode_cursor(cursor) == offset
    assert "=" not in cursor and cursor.isascii()


@pytest.mark.parametrize(
    "cursor", ["", "not-a-cursor", "e30", encode_cursor(-1)[:-2], "eyJhZnRlciI6ICJ4In0", "bnVsbA"]
)
def test_a_cursor_the_api_did_not_give_is_refused_naming_the_cursor(cursor: str) -> None:
    with pytest.raises(FilterError) as refused:
        decode_cursor(cursor)
    assert refused.value.field == "cursor"


def test_an_idempotency_key_names_one_action_of_one_department() -> None:
    one = inbox_action_id("hz-xh-transport", "claim-7")
    assert one == inbox_action_id("hz-xh-transport", "claim-7")
    assert one != inbox_action_id("hz-xh-transport", "claim-8")
    assert one != inbox_action_id("hz-xh-amr", "claim-7")


def test_without_filters_the_open_items_of_every_kind_are_listed_from_the_start() -> None:
    wanted = InboxFilter.parse()
    assert wanted == InboxFilter(None, None, True, None, None, -1)


def test_kinds_and_states_are_comma_separated_lists() -> None:
    wanted = InboxFilter.parse(kind="push, hit", state="PUSHED,PENDING")
    assert wanted.kinds == (InboxKind.PUSH, InboxKind.HIT)
    assert wanted.states == ("PUSHED", "PENDING") and not wanted.open_only
    assert InboxFilter.parse(state="any").open_only is False
    assert InboxFilter.parse(state="open").open_only is True


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"kind": "pushes"}, "kind"),
        ({"state": "LOST"}, "state"),
        ({"kind": "hit", "state": "CLAIMED"}, "state"),  # not a state of a hit
        ({"state": "open,PUSHED"}, "state"),
        ({"since": date(2026, 3, 5), "until": date(2026, 3, 4)}, "until"),
        ({"cursor": "garbage"}, "cursor"),
    ],
)
def test_a_filter_that_cannot_hold_is_refused_naming_the_parameter(
    arguments: dict[str, object], field: str
) -> None:
    with pytest.raises(FilterError) as refused:
        InboxFilter.parse(**arguments)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_every_kind_has_a_source_and_every_source_reads_one_department() -> None:
    assert {source.kind for source in ITEM_SOURCES} == set(InboxKind)
    for source in ITEM_SOURCES:
        assert source.sql().endswith("WHERE department_code = %(department)s")


def test_svc_inbox_writes_the_inbound_topics_and_nothing_else() -> None:
    assert DEPARTMENT_INBOUND.writers == ("inbox",)
    assert not [g for g in service_grants() if g.principal == "User:svc-inbox"]


def test_the_contract_is_under_v1_with_the_refusals_documented() -> None:
    app = create_app(None, None, None, InboxSettings(), business_clock())  # type: ignore[arg-type]
    document = app.openapi()
    paths = set(document["paths"])
    assert {
        "/v1/inbox",
        "/v1/inbox/{item_id}",
        "/v1/pushes/{push_id}/claim",
        "/v1/pushes/{push_id}/return",
        "/v1/pushes/{push_id}/stop",
        "/v1/hits/{hit_id}/feedback",
        "/v1/actions/{action_id}",
    } <= paths
    claim = document["paths"]["/v1/pushes/{push_id}/claim"]["post"]
    assert {"202", "401", "403", "404", "422", "503"} <= set(claim["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in claim["parameters"])
    assert app.openapi_url == "/v1/openapi.json"
