"""Webhook endpoints in the registry API: a department registers and manages its own with
its token, an administrator any; the secret is shown once and never audited; a rotation
keeps the previous secret signing for its grace.

The app runs in-process (TestClient) on a registry database of this module's own, with
the sample province loaded; 杭州市卫生健康委员会 (hz-health) registers, 杭州市应急管理局
(hz-em) is an outsider.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from registry.api import create_app
from registry.db import session_factory, transaction
from registry.models import AuditEntry, WebhookEndpoint
from registry.service import token_digest

ADMIN_TOKEN = "registry-webhooks-test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OWNER, OUTSIDER = "hz-health", "hz-em"


@pytest.fixture(scope="module")
def client(registry_url: str) -> Iterator[TestClient]:
    app = create_app(registry_url, token_digest(ADMIN_TOKEN), webhook_allow_http=False)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def tokens(client: TestClient) -> dict[str, dict[str, str]]:
    headers = {}
    for code in (OWNER, OUTSIDER):
        answer = client.post("/credentials", json={"department": code}, headers=ADMIN)
        assert answer.status_code == 201, answer.text
        headers[code] = {"Authorization": f"Bearer {answer.json()['token']}"}
    return headers


@pytest.fixture(scope="module")
def registered(client: TestClient, tokens: dict[str, dict[str, str]]) -> dict[str, object]:
    answer = client.post(
        "/webhooks", json={"url": "https://oa.hz-health.gov.cn/hook"}, headers=tokens[OWNER]
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_a_department_registers_its_own_endpoint_and_gets_a_standard_webhooks_secret_once(
    client: TestClient, tokens: dict[str, dict[str, str]], registered: dict[str, object]
) -> None:
    assert registered["department"] == OWNER and registered["cloudevents"] is False
    assert str(registered["secret"]).startswith("whsec_")
    shown = client.get(f"/webhooks/{registered['id']}", headers=tokens[OWNER]).json()
    assert "secret" not in shown and shown["url"] == "https://oa.hz-health.gov.cn/hook"
    [listed] = client.get("/webhooks", headers=tokens[OWNER]).json()
    assert listed["id"] == registered["id"]


def test_a_second_endpoint_for_the_same_department_is_a_conflict(
    client: TestClient, tokens: dict[str, dict[str, str]], registered: dict[str, object]
) -> None:
    answer = client.post(
        "/webhooks", json={"url": "https://elsewhere.gov.cn/hook"}, headers=tokens[OWNER]
    )
    assert answer.status_code == 409 and answer.json()["field"] == "department"


def test_another_departments_endpoint_is_not_found_and_not_listed(
    client: TestClient, tokens: dict[str, dict[str, str]], registered: dict[str, object]
) -> None:
    path = f"/webhooks/{registered['id']}"
    assert client.get(path, headers=tokens[OUTSIDER]).status_code == 404
    assert client.delete(path, headers=tokens[OUTSIDER]).status_code == 404
    assert client.post(f"{path}/rotate-secret", headers=tokens[OUTSIDER]).status_code == 404
    assert client.get("/webhooks", headers=tokens[OUTSIDER]).json() == []
    refused = client.post(
        "/webhooks",
        json={"url": "https://evil.example/hook", "department": OWNER},
        headers=tokens[OUTSIDER],
    )
    assert refused.status_code == 403


def test_plain_http_is_refused_naming_the_url_unless_the_setting_allows_it(
    client: TestClient, tokens: dict[str, dict[str, str]], registry_url: str
) -> None:
    answer = client.post(
        "/webhooks", json={"url": "http://oa.hz-em.gov.cn/hook"}, headers=tokens[OUTSIDER]
    )
    assert answer.status_code == 422 and answer.json()["field"] == "url"
    assert "https://" in answer.json()["message"]
    bad = client.post("/webhooks", json={"url": "ftp://x"}, headers=tokens[OUTSIDER])
    assert bad.status_code == 422
    allowing = create_app(registry_url, token_digest(ADMIN_TOKEN), webhook_allow_http=True)
    with TestClient(allowing) as test_host:
        made = test_host.post(
            "/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "department": OUTSIDER},
            headers=ADMIN,
        )
        assert made.status_code == 201, made.text
        assert test_host.delete(f"/webhooks/{made.json()['id']}", headers=ADMIN).status_code == 204


def test_a_rotation_keeps_the_previous_secret_for_its_grace_and_no_secret_is_audited(
    client: TestClient,
    tokens: dict[str, dict[str, str]],
    registered: dict[str, object],
    registry_url: str,
) -> None:
    rotated = client.post(f"/webhooks/{registered['id']}/rotate-secret", headers=tokens[OWNER])
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != registered["secret"] and rotated.json()["previous_secret_valid_until"]
    with transaction(session_factory(registry_url)) as session:
        row = session.get(WebhookEndpoint, registered["id"])
        assert row is not None
        assert (row.secret, row.previous_secret) == (new_secret, registered["secret"])
        entries = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.entity == "webhook_endpoints")
        ).all()
    assert {entry.action for entry in entries} >= {"webhook.register", "webhook.rotate-secret"}
    for entry in entries:
        text = str(entry.before) + str(entry.after)
        assert "whsec_" not in text and "secret'" not in text.replace("secret_rotated_at", "")


def test_an_administrator_changes_any_endpoint_and_a_change_keeps_the_secret(
    client: TestClient, registered: dict[str, object], registry_url: str
) -> None:
    path = f"/webhooks/{registered['id']}"
    changed = client.patch(path, json={"cloudevents": True}, headers=ADMIN)
    assert changed.status_code == 200 and changed.json()["cloudevents"] is True
    assert client.patch(path, json={"url": "not a url"}, headers=ADMIN).status_code == 422
