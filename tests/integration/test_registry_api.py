"""The registry API (registry.api) as a specification: who may do what, and what a refusal says.

The app runs in-process (TestClient) on a registry database of this module's own, with
the sample province loaded. Three departments hold tokens: 杭州市市场监督管理局 (hz-amr)
owns a fresh resource in every test, 杭州市卫生健康委员会 (hz-health) asks for it, and
杭州市应急管理局 (hz-em) is an outsider.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from registry.api import create_app
from registry.db import MIGRATIONS_DIR
from registry.service import token_digest
from xietong import migrations
from xietong.uscc import make_uscc

ADMIN_TOKEN = "registry-test-admin-token"
OWNER, SUBSCRIBER, OUTSIDER = "hz-amr", "hz-health", "hz-em"


@pytest.fixture(scope="module")
def client(registry_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(registry_url, token_digest(ADMIN_TOKEN))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


@pytest.fixture(scope="module")
def tokens(client: TestClient) -> dict[str, dict[str, str]]:
    """Authorization headers of the owner, the subscriber and the outsider."""
    headers = {}
    for code in (OWNER, SUBSCRIBER, OUTSIDER):
        answer = client.post("/credentials", json={"department": code}, headers=ADMIN)
        assert answer.status_code == 201, answer.text
        headers[code] = bearer(answer.json()["token"])
    return headers


@dataclass
class Resource:
    code: str
    topic: str


def resource_body(
    topic: str, name: str, sharing_class: str, fields: list[str], description: str
) -> dict[str, Any]:
    """A resource of hz-amr's on a topic of its own, ``dept.hz-amr.<topic>-<random>``."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "code": f"hz-amr.{topic}-{suffix}",
        "name": name,
        "topic": f"dept.hz-amr.{topic}-{suffix}",
        "sharing_class": sharing_class,
        "fields": fields,
        "description": description,
    }


@pytest.fixture
def resource(client: TestClient, tokens: dict[str, dict[str, str]]) -> Resource:
    """A fresh resource of hz-amr's, declared by hz-amr itself, for this test alone."""
    body = resource_body(
        "permits",
        "食品经营许可 (测试)",
        "UNCONDITIONAL",
        ["uscc", "licence_number", "division_code"],
        "杭州市市场监督管理局发放的食品经营许可",
    )
    answer = client.post("/resources", json=body, headers=tokens[OWNER])
    assert answer.status_code == 201, answer.text
    assert answer.json()["owner"] == OWNER
    return Resource(body["code"], body["topic"])


def ask(client: TestClient, headers: dict[str, str], resource: str, **fields: Any) -> Any:
    body = {"resource": resource, "purpose": "双告知后置审批", "legal_basis": "国发〔2015〕62号"}
    return client.post("/subscriptions", json={**body, **fields}, headers=headers)


def requested(client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource) -> int:
    answer = ask(client, tokens[SUBSCRIBER], resource.code)
    assert answer.status_code == 201, answer.text
    subscription_id: int = answer.json()["id"]
    return subscription_id


def refused(answer: Any, status: int, error: str, field: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["error"] == error, body
    assert body["message"]
    if field is not None:
        assert body["field"] == field, body
    return body


# -- the contract and the service endpoints -------------------------------------------------


ENDPOINTS = {
    ("get", "/departments"),
    ("post", "/departments"),
    ("get", "/departments/{code}"),
    ("get", "/credentials"),
    ("post", "/credentials"),
    ("post", "/credentials/{credential_id}/revoke"),
    ("get", "/resources"),
    ("post", "/resources"),
    ("get", "/resources/{code}"),
    ("get", "/subscriptions"),
    ("post", "/subscriptions"),
    ("get", "/subscriptions/{subscription_id}"),
    ("get", "/subscriptions/{subscription_id}/history"),
    ("post", "/subscriptions/{subscription_id}/approve"),
    ("post", "/subscriptions/{subscription_id}/reject"),
    ("post", "/subscriptions/{subscription_id}/revoke"),
    ("get", "/access-grants"),
    ("get", "/catalog/sectors"),
    ("get", "/catalog/divisions"),
    ("get", "/catalog/approval-items"),
    ("get", "/catalog/approval-items/{code}"),
    ("get", "/catalog/list-types"),
    ("get", "/catalog/matter-types"),
    ("get", "/catalog/measures"),
    ("get", "/audit"),
    ("get", "/webhooks"),
    ("post", "/webhooks"),
    ("get", "/webhooks/{webhook_id}"),
    ("patch", "/webhooks/{webhook_id}"),
    ("delete", "/webhooks/{webhook_id}"),
    ("post", "/webhooks/{webhook_id}/rotate-secret"),
}
OPEN = {("get", "/health"), ("get", "/metrics")}


def test_the_openapi_document_lists_every_endpoint_with_bearer_auth_and_error_bodies(
    client: TestClient,
) -> None:
    document = client.get("/openapi.json").json()
    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations == ENDPOINTS | OPEN
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    approve = document["paths"]["/subscriptions/{subscription_id}/approve"]["post"]
    for status in ("401", "403", "404", "409", "422"):
        schema = approve["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert client.get("/docs").status_code == 200


def test_health_answers_without_a_token_and_names_the_migration(client: TestClient) -> None:
    newest = migrations.head(MIGRATIONS_DIR)
    assert newest is not None
    assert client.get("/health").json() == {"status": "ok", "database": "ok", "migration": newest}


def test_metrics_count_requests_by_route_template_and_status(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    client.get("/subscriptions/2147483000", headers=tokens[SUBSCRIBER])
    metrics = client.get("/metrics").text
    assert (
        'xietong_registry_requests_total{method="GET",'
        'route="/subscriptions/{subscription_id}",status="404"}'
    ) in metrics
    assert "xietong_registry_request_seconds_bucket" in metrics


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), sorted(ENDPOINTS))
def test_every_endpoint_refuses_a_caller_without_a_token_with_401(
    client: TestClient, method: str, path: str
) -> None:
    concrete = path.format(code="hz-amr", credential_id=1, subscription_id=1, webhook_id=1)
    answer = client.request(method, concrete, json={})
    refused(answer, 401, "not_authenticated")
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_an_unknown_token_is_refused_with_401(client: TestClient) -> None:
    refused(client.get("/departments", headers=bearer("made-up")), 401, "not_authenticated")


def test_a_revoked_token_stops_working_at_once(client: TestClient) -> None:
    issued = client.post("/credentials", json={"department": OUTSIDER}, headers=ADMIN).json()
    assert client.get("/resources", headers=bearer(issued["token"])).status_code == 200
    revoke = client.post(f"/credentials/{issued['id']}/revoke", headers=ADMIN)
    assert revoke.json()["revoked_at"] is not None
    refused(client.get("/resources", headers=bearer(issued["token"])), 401, "not_authenticated")


def test_an_issued_credential_never_shows_its_token_again(client: TestClient) -> None:
    issued = client.post("/credentials", json={"department": OUTSIDER}, headers=ADMIN).json()
    listed = client.get("/credentials", headers=ADMIN).json()
    assert issued["token"] not in str(listed)
    assert next(c for c in listed if c["id"] == issued["id"])["department"] == OUTSIDER


def test_an_administrator_credential_issued_by_the_bootstrap_admin_can_administer(
    client: TestClient,
) -> None:
    issued = client.post("/credentials", json={"department": None}, headers=ADMIN).json()
    assert issued["department"] is None
    assert client.get("/audit?limit=1", headers=bearer(issued["token"])).status_code == 200


# -- authorisation: a department sees and changes only its own ------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/departments", None),
        ("get", "/credentials", None),
        ("post", "/credentials", {"department": "hz-health"}),
        ("get", "/audit", None),
        ("get", "/access-grants", None),
    ],
)
def test_a_department_cannot_use_administrator_endpoints(
    client: TestClient,
    tokens: dict[str, dict[str, str]],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    answer = client.request(method, path, json=body or {}, headers=tokens[SUBSCRIBER])
    refused(answer, 403, "forbidden")


def test_a_department_cannot_see_another_departments_subscription(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    subscription_id = requested(client, tokens, resource)
    for path in (f"/subscriptions/{subscription_id}", f"/subscriptions/{subscription_id}/history"):
        refused(client.get(path, headers=tokens[OUTSIDER]), 403, "forbidden")
        assert client.get(path, headers=tokens[SUBSCRIBER]).status_code == 200
        assert client.get(path, headers=tokens[OWNER]).status_code == 200
    listed = client.get("/subscriptions", headers=tokens[OUTSIDER]).json()
    assert subscription_id not in {row["id"] for row in listed}
    refused(
        client.get("/subscriptions?department=hz-health", headers=tokens[OUTSIDER]),
        403,
        "forbidden",
        "department",
    )


def test_a_department_cannot_approve_a_subscription_to_another_departments_resource(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    subscription_id = requested(client, tokens, resource)
    for stranger in (SUBSCRIBER, OUTSIDER):
        for action in ("approve", "reject", "revoke"):
            answer = client.post(
                f"/subscriptions/{subscription_id}/{action}",
                json={"reason": "不是我的资源"},
                headers=tokens[stranger],
            )
            body = refused(answer, 403, "forbidden")
            assert "belongs to hz-amr" in body["message"]
    status = client.get(f"/subscriptions/{subscription_id}", headers=tokens[OWNER]).json()
    assert status["status"] == "REQUESTED"


def test_a_department_cannot_request_on_behalf_of_another(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    answer = ask(client, tokens[OUTSIDER], resource.code, department=SUBSCRIBER)
    refused(answer, 403, "forbidden", "department")


def test_a_department_cannot_declare_a_resource_for_another_or_on_a_platform_topic(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    body = {
        "code": "hz-health.stolen",
        "name": "冒名资源",
        "topic": "dept.hz-amr.stolen",
        "owner": OWNER,
        "sharing_class": "UNCONDITIONAL",
        "fields": ["uscc"],
        "description": "x",
    }
    refused(client.post("/resources", json=body, headers=tokens[SUBSCRIBER]), 403, "forbidden")
    body.update(owner=SUBSCRIBER, topic="market.registrations")
    answer = client.post("/resources", json=body, headers=tokens[SUBSCRIBER])
    refused(answer, 403, "forbidden", "topic")


# -- the subscription flow ------------------------------------------------------------------


def test_a_department_requests_the_owner_approves_and_the_grant_follows(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    subscription_id = requested(client, tokens, resource)
    answer = client.post(
        f"/subscriptions/{subscription_id}/approve",
        json={"valid_until": "2099-12-31T23:59:59+08:00", "reason": "依法共享"},
        headers=tokens[OWNER],
    )
    assert answer.status_code == 200, answer.text
    approved = answer.json()
    assert (approved["status"], approved["decided_by"]) == ("APPROVED", "department:hz-amr")
    assert approved["topic"] == resource.topic

    grants = {g["department"]: g for g in client.get("/access-grants", headers=ADMIN).json()}
    assert resource.topic in grants[SUBSCRIBER]["read_topics"]
    assert grants[SUBSCRIBER]["write_topics"] == ["dept.hz-health.inbound"]
    assert resource.topic not in grants[OUTSIDER]["read_topics"]

    revoked = client.post(
        f"/subscriptions/{subscription_id}/revoke",
        json={"reason": "职责调整"},
        headers=tokens[OWNER],
    )
    assert revoked.json()["status"] == "REVOKED"
    grants = {g["department"]: g for g in client.get("/access-grants", headers=ADMIN).json()}
    assert resource.topic not in grants[SUBSCRIBER]["read_topics"]

    history = client.get(
        f"/subscriptions/{subscription_id}/history", headers=tokens[SUBSCRIBER]
    ).json()
    assert [(e["from_status"], e["to_status"], e["actor"]) for e in history] == [
        (None, "REQUESTED", "department:hz-health"),
        ("REQUESTED", "APPROVED", "department:hz-amr"),
        ("APPROVED", "REVOKED", "department:hz-amr"),
    ]


def test_the_owner_sees_requests_for_its_resources_and_the_subscriber_its_own(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    subscription_id = requested(client, tokens, resource)
    as_owner = client.get("/subscriptions?role=owner", headers=tokens[OWNER]).json()
    as_subscriber = client.get(
        "/subscriptions?role=subscriber&status=REQUESTED", headers=tokens[SUBSCRIBER]
    ).json()
    assert subscription_id in {row["id"] for row in as_owner}
    assert subscription_id in {row["id"] for row in as_subscriber}
    mine = client.get("/subscriptions?role=subscriber", headers=tokens[OWNER]).json()
    assert subscription_id not in {row["id"] for row in mine}


def test_every_change_through_the_api_is_in_the_audit_log_with_before_and_after(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    subscription_id = requested(client, tokens, resource)
    client.post(
        f"/subscriptions/{subscription_id}/reject", json={"reason": "材料不全"}, headers=ADMIN
    )
    entries = client.get(
        f"/audit?entity=subscriptions&entity_id={subscription_id}", headers=ADMIN
    ).json()
    assert [(e["actor"], e["action"]) for e in reversed(entries)] == [
        ("department:hz-health", "subscription.request"),
        ("admin:bootstrap-token", "subscription.reject"),
    ]
    newest = entries[0]
    assert (newest["before"]["status"], newest["after"]["status"]) == ("REQUESTED", "REJECTED")
    assert newest["after"]["reason"] == "材料不全"


def test_an_administrator_registers_a_department_which_then_works_with_its_own_token(
    client: TestClient,
) -> None:
    code = f"hz-xh-t{uuid.uuid4().hex[:6]}"
    body = {
        "code": code,
        "uscc": make_uscc("11", "330106", rng=random.Random(code)),
        "name": "杭州市西湖区测试局",
        "sector": "health",
        "roles": ["licensing"],
        "level": "county",
        "division": "330106",
        "contact": "0571-88888888",
    }
    created = client.post("/departments", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["kafka_principal"] == f"User:dept-{code}"
    token = client.post("/credentials", json={"department": code}, headers=ADMIN).json()["token"]
    assert client.get(f"/departments/{code}", headers=bearer(token)).json()["uscc"] == body["uscc"]


def test_the_catalogs_are_readable_by_any_department(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    headers = tokens[OUTSIDER]
    food = client.get("/catalog/approval-items/SPJYXK", headers=headers).json()
    assert food["name"] == "食品经营许可"
    assert {"division": "330106", "department": "hz-xh-amr"} in food["routes"]
    assert "餐饮服务" in food["scope_wordings"] and "H6210" in food["industry_codes"]
    # 21 since issue 13: 药品经营许可 is two items, retail and wholesale (药品管理法 §51).
    assert len(client.get("/catalog/approval-items", headers=headers).json()) == 21
    list_types = client.get("/catalog/list-types", headers=headers).json()
    assert "SERIOUS_ILLEGAL_DISHONEST" in {t["code"] for t in list_types}
    measures = {m["code"]: m for m in client.get("/catalog/measures", headers=headers).json()}
    assert measures["CJ01"]["matter_types"] == ["GOVERNMENT_PROCUREMENT"]
    assert measures["CJ01"]["feedback_days"] == 15
    matters = client.get("/catalog/matter-types", headers=headers).json()
    assert {"code": "LAND_SUPPLY", "name": "土地供应"} in matters
    assert len(client.get("/catalog/divisions", headers=headers).json()) == 9
    assert client.get("/catalog/sectors", headers=headers).status_code == 200


# -- refusals name the field ----------------------------------------------------------------


def test_unknown_records_answer_404_naming_the_field(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    headers = tokens[SUBSCRIBER]
    refused(
        client.get("/subscriptions/2147483647", headers=headers),
        404,
        "not_found",
        "subscription_id",
    )
    refused(client.get("/departments/nowhere", headers=headers), 404, "not_found", "code")
    refused(client.get("/resources/nothing", headers=headers), 404, "not_found", "code")
    refused(client.get("/catalog/approval-items/NOPE", headers=headers), 404, "not_found", "code")
    refused(ask(client, headers, "nothing"), 404, "not_found", "resource")
    refused(client.get("/no/such/path", headers=headers), 404, "not_found")


def test_invalid_input_answers_422_naming_the_field(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    headers = tokens[SUBSCRIBER]
    no_purpose = client.post(
        "/subscriptions", json={"resource": resource.code, "legal_basis": "x"}, headers=headers
    )
    assert "purpose" in refused(no_purpose, 422, "validation_error", "purpose")["message"]
    refused(
        ask(client, headers, resource.code, purpose="a\x00b"), 422, "validation_error", "purpose"
    )
    refused(ask(client, headers, resource.code, purpose="   "), 422, "validation_error", "purpose")
    refused(
        ask(client, headers, resource.code, valid_until="2099-01-01T00:00:00"),
        422,
        "validation_error",
        "valid_until",
    )
    refused(
        ask(client, headers, resource.code, valid_until="2001-01-01T00:00:00+08:00"),
        422,
        "invalid_input",
        "valid_until",
    )
    refused(
        ask(client, headers, resource.code, fields=["uscc", "salary"]),
        422,
        "invalid_input",
        "fields",
    )
    refused(
        ask(client, headers, resource.code, filters={"divisions": ["33010"]}),
        422,
        "validation_error",
        "filters.divisions.0",
    )
    refused(
        ask(client, headers, resource.code, unexpected=1), 422, "validation_error", "unexpected"
    )
    refused(
        client.get("/subscriptions/0", headers=headers), 422, "validation_error", "subscription_id"
    )
    refused(
        client.get("/subscriptions/99999999999", headers=headers),
        422,
        "validation_error",
        "subscription_id",
    )
    refused(
        client.post("/subscriptions", content=b"{not json", headers=headers),
        422,
        "validation_error",
    )


def test_an_unknown_or_repeated_query_parameter_is_refused_not_ignored(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    headers = tokens[SUBSCRIBER]
    misspelt = client.get("/subscriptions?stauts=APPROVED", headers=headers)
    assert "status" in refused(misspelt, 422, "invalid_input", "stauts")["message"]
    twice = client.get("/subscriptions?status=APPROVED&status=REVOKED", headers=headers)
    refused(twice, 422, "invalid_input", "status")


def test_a_conditional_resource_without_fields_or_filters_is_refused_with_422(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    headers = tokens[SUBSCRIBER]
    refused(ask(client, headers, "credit_list_entry"), 422, "invalid_input", "fields")
    refused(
        ask(client, headers, "credit_list_entry", fields=["uscc"]), 422, "invalid_input", "filters"
    )
    accepted = ask(
        client,
        headers,
        "credit_list_entry",
        fields=["uscc", "list_type"],
        filters={"divisions": ["330106"]},
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["filters"] == {"divisions": ["330106"]}


def test_a_not_shared_resource_is_refused_with_422_not_shared(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    body = resource_body("cases", "案件卷宗", "NOT_SHARED", ["case_number"], "不予共享")
    assert client.post("/resources", json=body, headers=tokens[OWNER]).status_code == 201
    refused(ask(client, tokens[SUBSCRIBER], body["code"]), 422, "not_shared", "resource")


def test_an_invalid_uscc_is_refused_with_422_naming_uscc(client: TestClient) -> None:
    body = {
        "code": "hz-xh-badcode",
        "uscc": "11330106TT6P0PAF5X",
        "name": "错误代码局",
        "sector": "health",
        "roles": ["licensing"],
        "level": "county",
        "division": "330106",
        "contact": "0571-1",
    }
    answer = client.post("/departments", json=body, headers=ADMIN)
    assert "check character" in refused(answer, 422, "invalid_input", "uscc")["message"]


def test_a_transition_outside_the_state_machine_answers_409_naming_the_state(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    subscription_id = requested(client, tokens, resource)
    approve = f"/subscriptions/{subscription_id}/approve"
    assert client.post(approve, headers=tokens[OWNER]).status_code == 200
    body = refused(client.post(approve, headers=tokens[OWNER]), 409, "invalid_transition")
    assert f"subscription {subscription_id}" in body["message"]
    assert "is APPROVED" in body["message"]
    refused(
        client.post(
            f"/subscriptions/{subscription_id}/reject", json={"reason": "晚了"}, headers=ADMIN
        ),
        409,
        "invalid_transition",
    )


def test_duplicates_answer_409_naming_the_field(
    client: TestClient, tokens: dict[str, dict[str, str]], resource: Resource
) -> None:
    requested(client, tokens, resource)
    refused(ask(client, tokens[SUBSCRIBER], resource.code), 409, "conflict", "resource")
    existing = client.get("/departments/hz-amr", headers=ADMIN).json()
    body = {
        "code": "hz-amr",
        "uscc": existing["uscc"],
        "name": "重复",
        "sector": "market_regulation",
        "roles": ["registration"],
        "level": "city",
        "division": "330100",
        "contact": "0571-1",
    }
    refused(client.post("/departments", json=body, headers=ADMIN), 409, "conflict", "code")
