"""The inbox API against the real stack: the 双告知 and joint-punishment workers, the sink
and ``xietong inbox serve`` run as processes of their own (``tests/inbox_stack.py``), the
broker enforces its ACLs, and departments read and act with their registry tokens over
HTTP only. The kit's example clients are run in ``test_kit.py``.

A push is published as the connectors publish it, reaches the department's inbox, the
sink stores the delivery, the API lists it; a claim over HTTP is written to the
department's inbound topic as ``svc-inbox`` and the processor makes the push CLAIMED.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from connectors.inbox.store import InboxStore
from registry import service
from registry.audit import Actor
from registry.db import session_factory, transaction
from tests import inbox_stack
from tests.inbox_stack import OTHER, TRANSPORT, Department, new_hit, new_push
from tests.joint_punishment_records import today
from tests.kafka_helpers import eventually
from tests.stream_worker import Platform
from xietong.access import Grant
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.topics import DepartmentTopic

pytestmark = pytest.mark.usefixtures("secured")

# The stack's fixtures (tests/inbox_stack.py), one stack for this module.
registry_url = inbox_stack.registry_url
departments = inbox_stack.departments
credit_url = inbox_stack.credit_url
workers = inbox_stack.workers
inbox_url = inbox_stack.inbox_url
tokens = inbox_stack.tokens
platform = inbox_stack.platform
transport = inbox_stack.transport
finance = inbox_stack.finance


# -- reading and acting -----------------------------------------------------------------------


def test_a_push_published_through_a_connector_is_listed_claimed_over_http_and_becomes_claimed(
    platform: Platform, transport: Department
) -> None:
    push = new_push(platform, transport)
    assert push["state"] == "PUSHED" and push["open"] and push["title"] == "道路货物运输经营许可"
    assert push["deadline"] is not None and push["made_on"] == str(today())
    assert push in transport.items(kind="push")  # open by default

    answer = transport.post(f"/v1/pushes/{push['id']}/claim", {"operator": "王芳"}, key="claim-1")

    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert answer.headers["Location"] == f"/v1/actions/{accepted['action_id']}"
    assert (
        accepted["status"] == "PENDING" and accepted["inbound_topic"] == f"dept.{TRANSPORT}.inbound"
    )
    outcome = transport.outcome(accepted["action_id"])
    assert outcome["status"] == "APPLIED" and outcome["action"] == "CLAIM", outcome
    detail = eventually(
        lambda: transport.get(f"/v1/inbox/{push['id']}").json(),
        lambda found: found["item"]["state"] == "CLAIMED",
        30,
        lambda found: f"not CLAIMED: {found['item']}",
    )
    versions = [
        (v["version"], v["state"], v["inbox_offset"] is not None) for v in detail["versions"]
    ]
    # the claim is the department's own doing: that version reaches no inbox
    assert versions == [(1, "PUSHED", True), (2, "CLAIMED", False)]
    assert (
        detail["record"]["claimed_at"] is not None and detail["record"]["changed_by"] == TRANSPORT
    )
    assert [(a["action_id"], a["status"]) for a in detail["actions"]] == [
        (accepted["action_id"], "APPLIED")
    ]


def test_a_post_sent_again_with_the_same_idempotency_key_makes_one_action(
    platform: Platform, transport: Department
) -> None:
    push = new_push(platform, transport)
    key = f"stop-{uuid.uuid4()}"

    first = transport.post(f"/v1/pushes/{push['id']}/stop", {"reason_text": "不涉及"}, key=key)
    again = transport.post(f"/v1/pushes/{push['id']}/stop", {"reason_text": "不涉及"}, key=key)

    assert first.status_code == again.status_code == 202
    assert first.json()["action_id"] == again.json()["action_id"]
    assert first.json()["inbound_offset"] < again.json()["inbound_offset"]  # sent twice
    assert transport.outcome(first.json()["action_id"])["status"] == "APPLIED"
    detail = transport.get(f"/v1/inbox/{push['id']}").json()
    assert [v["state"] for v in detail["versions"]] == ["PUSHED", "STOPPED"]  # applied once
    assert len(detail["actions"]) == 1


def test_a_rejected_action_shows_the_processor_s_reason(
    platform: Platform, transport: Department
) -> None:
    push = new_push(platform, transport)
    claimed = transport.post(f"/v1/pushes/{push['id']}/claim", key=f"a-{uuid.uuid4()}").json()
    assert transport.outcome(claimed["action_id"])["status"] == "APPLIED"

    again = transport.post(f"/v1/pushes/{push['id']}/claim", key=f"b-{uuid.uuid4()}").json()

    outcome = transport.outcome(again["action_id"])
    assert outcome["status"] == "REJECTED", outcome
    assert "it is CLAIMED" in outcome["reason"] and outcome["details"]["push_state"] == "CLAIMED"


def test_a_hit_s_feedback_over_http_is_applied(platform: Platform, finance: Department) -> None:
    hit = new_hit(platform, finance)
    assert hit["state"] == "PENDING" and hit["open"] and hit["deadline"] is not None

    answer = finance.post(f"/v1/hits/{hit['id']}/feedback", {"outcome": "APPLIED"}, key="fb-1")

    assert answer.status_code == 202, answer.text
    outcome = finance.outcome(answer.json()["action_id"])
    assert outcome["status"] == "APPLIED" and outcome["item_id"] == hit["id"]
    assert (
        finance.until_item(hit["uscc"], "hit", lambda i: i["state"] == "APPLIED")["open"] is False
    )
    assert hit["id"] not in {i["id"] for i in finance.items(kind="hit")}  # no longer open
    notices = finance.items(kind="sanction_notice")
    assert any(n["uscc"] == hit["uscc"] for n in notices)


def test_an_action_the_broker_refuses_is_503_and_the_same_key_later_makes_it_once(
    platform: Platform, transport: Department, kafka: KafkaClients
) -> None:
    """Without svc-inbox's WRITE on the inbound topic the broker refuses the record: the
    API answers 503, never a false 202; sent again with the same key once it may, the
    action is made once."""
    push = new_push(platform, transport)
    admin = kafka.admin()
    write = Grant("User:svc-inbox", "TOPIC", DepartmentTopic.inbound(TRANSPORT), "WRITE")
    for future in admin.delete_acls([write.binding_filter()]).values():
        future.result()
    key = f"claim-{uuid.uuid4()}"
    try:
        refused = eventually(
            lambda: transport.post(f"/v1/pushes/{push['id']}/claim", key=key),
            lambda answer: answer.status_code == 503,
            20,
            lambda answer: f"not refused: {answer.status_code} {answer.text}",
        )
        assert (
            refused.json()["error"] == "not_delivered"
            and "Idempotency-Key" in refused.json()["message"]
        )
    finally:
        for future in admin.create_acls([write.binding()]).values():
            future.result()

    accepted = eventually(
        lambda: transport.post(f"/v1/pushes/{push['id']}/claim", key=key),
        lambda answer: answer.status_code == 202,
        20,
        lambda answer: f"not accepted again: {answer.status_code} {answer.text}",
    )
    assert transport.outcome(accepted.json()["action_id"])["status"] == "APPLIED"


# -- who may see and do what ------------------------------------------------------------------


def test_a_department_sees_and_acts_only_on_its_own_items(
    platform: Platform, transport: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    push = new_push(platform, transport)
    other = Department(inbox_url, tokens(OTHER))

    assert other.get(f"/v1/inbox/{push['id']}").status_code == 404
    refused = other.post(f"/v1/pushes/{push['id']}/claim", key="x")
    assert refused.status_code == 404 and refused.json()["field"] == "push_id"
    assert push["id"] not in {i["id"] for i in other.items(state="any")}
    assert other.get(f"/v1/actions/{uuid.uuid4()}").json()["status"] == "PENDING"


def test_a_revoked_token_is_401_and_a_missing_scope_403(
    inbox_url: str, registry_url: str, tokens: Callable[..., str]
) -> None:
    token = tokens(TRANSPORT)
    holder = Department(inbox_url, token)
    assert holder.get("/v1/inbox").status_code == 200
    with transaction(session_factory(registry_url)) as session:
        [credential] = [
            c
            for c in service.list_credentials(session)
            if c.token_sha256 == service.token_digest(token)
        ]
        service.revoke_credential(session, Actor.admin("test"), credential.id)
    assert holder.get("/v1/inbox").status_code == 401
    assert httpx.get(f"{inbox_url}/v1/inbox").status_code == 401  # no token at all

    reader = Department(inbox_url, tokens(TRANSPORT, ["inbox:read"]))
    assert reader.get("/v1/inbox").status_code == 200
    refused = reader.post(f"/v1/pushes/{uuid.uuid4()}/claim", key="k")
    assert refused.status_code == 403 and "inbox:act" in refused.json()["message"]
    actor = Department(inbox_url, tokens(TRANSPORT, ["inbox:act"]))
    assert actor.get("/v1/inbox").status_code == 403


def test_bad_input_is_422_naming_the_field(
    platform: Platform, transport: Department, finance: Department
) -> None:
    push = new_push(platform, transport)

    def field(answer: httpx.Response) -> str:
        assert answer.status_code == 422, answer.text
        return str(answer.json()["field"])

    assert (
        field(transport.post(f"/v1/pushes/{push['id']}/return", {"reason": "NOT_MINE"})) == "reason"
    )
    assert (
        field(transport.post(f"/v1/pushes/{push['id']}/return", {"reason": "OTHER"}))
        == "reason_text"
    )
    assert field(transport.post(f"/v1/pushes/{push['id']}/claim", {"operater": "x"})) == "operater"
    assert field(transport.get("/v1/inbox", kind="pushes")) == "kind"
    assert field(transport.get("/v1/inbox", state="LOST")) == "state"
    assert field(transport.get("/v1/inbox", cursor="not-a-cursor")) == "cursor"
    assert field(transport.get("/v1/inbox", since="2026-02-30")) == "since"
    assert field(transport.get("/v1/inbox", limit="0")) == "limit"
    assert field(transport.get("/v1/inbox", stat="open")) == "stat"
    assert (
        field(finance.post(f"/v1/hits/{uuid.uuid4()}/feedback", {"outcome": "NOT_APPLICABLE"}))
        == "reason"
    )


def test_the_read_side_reads_the_inbox_tables_and_can_write_nothing(credit_url: str) -> None:
    store = InboxStore(credit_url, business_clock())
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM deliveries").scalar_one() >= 0
            connection.rollback()
            with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
                connection.exec_driver_sql("DELETE FROM deliveries")
            connection.rollback()
            connection.exec_driver_sql("SET TRANSACTION READ WRITE")
            with pytest.raises(sa.exc.DBAPIError, match="permission denied"):
                connection.exec_driver_sql("DELETE FROM deliveries")
            connection.rollback()
            with pytest.raises(sa.exc.DBAPIError, match="permission denied"):
                connection.exec_driver_sql("SELECT count(*) FROM audit_log")
            connection.rollback()
    finally:
        store.close()


# -- paging -----------------------------------------------------------------------------------


def test_the_cursor_resumes_where_the_client_stopped(
    platform: Platform, transport: Department
) -> None:
    for _ in range(2):
        new_push(platform, transport)
    everything = transport.items(kind="push", state="any")
    assert len(everything) >= 3

    first = transport.get("/v1/inbox", kind="push", state="any", limit=1).json()
    second = transport.get(
        "/v1/inbox", kind="push", state="any", limit=2, cursor=first["next_cursor"]
    ).json()

    assert first["more"] and [i["id"] for i in first["items"]] == [everything[0]["id"]]
    assert [i["id"] for i in second["items"]] == [i["id"] for i in everything[1:3]]
    offsets = [i["inbox_offset"] for i in everything]
    assert offsets == sorted(offsets)
    end = transport.get(
        "/v1/inbox", kind="push", state="any", cursor=_last_cursor(transport)
    ).json()
    assert end["items"] == [] and not end["more"]

    later = new_push(platform, transport)  # delivered after the client stopped

    resumed = transport.get("/v1/inbox", kind="push", state="any", cursor=end["next_cursor"]).json()
    assert [i["id"] for i in resumed["items"]] == [later["id"]]


def _last_cursor(department: Department) -> str:
    cursor = None
    while True:
        page = department.get(
            "/v1/inbox", kind="push", state="any", **({"cursor": cursor} if cursor else {})
        ).json()
        cursor = page["next_cursor"]
        if not page["more"]:
            return str(cursor)


def test_the_metrics_count_requests_by_route_and_actions(
    transport: Department, inbox_url: str
) -> None:
    transport.get("/v1/inbox")
    text = httpx.get(f"{inbox_url}/metrics").text

    assert 'xietong_inbox_requests_total{method="GET",route="/v1/inbox",status="200"}' in text
    assert re.search(
        r'xietong_inbox_requests_total\{method="POST",'
        r'route="/v1/pushes/\{push_id\}/claim",status="202"\} [1-9]',
        text,
    )
    assert re.search(r'xietong_inbox_actions_produced_total\{action="CLAIM"\} [1-9]', text)
    assert re.search(r'xietong_inbox_produce_failures_total\{reason="[A-Z_]+"\} [1-9]', text)


# -- the contract, fuzzed -------------------------------------------------------------------


@pytest.fixture(scope="module")
def inbox_openapi(inbox_url: str) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(f"{inbox_url}/v1/openapi.json")


contract = schemathesis.pytest.from_fixture("inbox_openapi")


@contract.parametrize()
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_the_inbox_api_answer_with_a_server_error_or_off_contract(
    case: schemathesis.Case, transport: Department
) -> None:
    """Whatever a department sends, the API answers as its OpenAPI document says."""
    token = transport.http.headers["Authorization"]
    case.call_and_validate(
        headers={"Authorization": token},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
