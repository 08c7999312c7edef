"""The inbox API against the real stack: the 双告知 and joint-punishment workers, the sink
and ``xietong inbox serve`` run as processes of their own, the broker enforces its ACLs,
and departments read and act with their registry tokens over HTTP only.

A push is published as the connectors publish it, reaches the department's inbox, the
sink stores the delivery, the API lists it; a claim over HTTP is written to the
department's inbound topic as ``svc-inbox`` and the processor makes the push CLAIMED.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

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
from tests.dual_notice_records import registration
from tests.joint_punishment_records import list_entry, matter, today
from tests.kafka_helpers import eventually
from tests.stream_worker import (
    Onboarding,
    Platform,
    free_port,
    publish_catalog,
    running,
    sink_starts_at_the_end,
    start_where_the_tests_start,
    stop_process,
    until_ready,
)
from xietong.access import Grant
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import DepartmentTopic
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

ROOT = Path(__file__).parents[2]
TRANSPORT = "hz-xh-transport"  # 西湖区交通运输: the push of a 道路货物运输 registration
FINANCE = "hz-xh-finance"  # 西湖区财政: the hit of a government procurement (CJ01)
OTHER = "hz-xh-amr"  # 西湖区市场监管: another department
ROAD_FREIGHT = "道路货物运输（不含危险货物）"


# -- the stack: catalog, departments, workers, sink, the API ----------------------------------


@pytest.fixture(scope="module")
def registry_url(
    registry_databases: Callable[[], str], stack_settings: Settings, kafka: KafkaClients
) -> str:
    url = registry_databases()
    publish_catalog(url, stack_settings, kafka)
    return url


@pytest.fixture(scope="module")
def departments(
    registry_url: str, kafka: KafkaClients, stack_settings: Settings
) -> Iterator[Onboarding]:
    onboarding = Onboarding(kafka, stack_settings)
    for code in (TRANSPORT, FINANCE, OTHER):
        onboarding.onboard(code)
    yield onboarding
    onboarding.offboard_all()


@pytest.fixture(scope="module")
def credit_url(credit_databases: Callable[[], str]) -> str:
    """A fresh, migrated credit database of this module's own; dropped at the end."""
    return credit_databases()


@dataclass
class Service:
    """A platform command as a process of its own, stopped at the end."""

    args: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool]) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.args],
                stdout=log,
                stderr=log,
                env={**os.environ, **self.env},
                cwd=ROOT,
            )
        until_ready(self.process, self.log, ready, 60)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=20, how=signal.SIGTERM)


@pytest.fixture(scope="module")
def workers(
    departments: Onboarding, kafka: KafkaClients, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The 双告知 and joint-punishment workers, started where these tests start."""
    logs = tmp_path_factory.mktemp("inbox-workers")
    start_where_the_tests_start(kafka, "dual-notice", "joint-punishment")
    with (
        running("dual-notice", logs / "dual-notice.log"),
        running("joint-punishment", logs / "joint-punishment.log"),
    ):
        yield


@pytest.fixture(scope="module")
def inbox_url(
    workers: None,
    registry_url: str,
    credit_url: str,
    kafka: KafkaClients,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The sink into this module's credit database, and the inbox API over it."""
    logs = tmp_path_factory.mktemp("inbox-services")
    sink_starts_at_the_end(kafka, credit_url)
    sink_metrics = free_port()
    sink = Service(
        ["sink", "run", "--database", credit_url],
        {
            "XIETONG_SINK_BATCH_WAIT": "0.2",
            "XIETONG_SINK_METRICS_PORT": str(sink_metrics),
            "XIETONG_SINK_AUDIT_KEY": str(logs / "audit-key.pem"),
            "XIETONG_SINK_TOPIC_REFRESH_INTERVAL": "1",
        },
        logs / "sink.log",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = Service(
        ["inbox", "serve", "--port", str(port)],
        {
            "DATABASE_URL": registry_url,
            "CREDIT_DATABASE_URL": credit_url,
            "XIETONG_INBOX_TOKEN_CACHE_SECONDS": "0",
            "XIETONG_INBOX_PRODUCE_TIMEOUT_SECONDS": "5",
        },
        logs / "inbox.log",
    )
    try:
        sink.start(lambda: _answers(f"http://127.0.0.1:{sink_metrics}/metrics"))
        api.start(lambda: _answers(f"{url}/ready"))
        yield url
    finally:
        api.stop()
        sink.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def tokens(registry_url: str) -> Callable[..., str]:
    """A new registry token of a department (``scopes``: None for both)."""

    def issue(department: str, scopes: list[str] | None = None) -> str:
        with transaction(session_factory(registry_url)) as session:
            issued = service.issue_token(session, Actor.admin("test"), department, scopes=scopes)
            return issued.token

    return issue


@pytest.fixture(scope="module")
def platform(inbox_url: str, connectors_kafka: KafkaClients, departments: Onboarding) -> Platform:
    """What the tests publish, as the connectors publish it."""
    return Platform(connectors_kafka, departments)


class Department:
    """A department system calling the inbox API with its token."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=20
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def post(
        self, path: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.http.post(path, json=body, headers=headers)

    def items(self, **filters: Any) -> list[dict[str, Any]]:
        found, cursor = [], None
        while True:
            page = self.get("/v1/inbox", **filters, **({"cursor": cursor} if cursor else {})).json()
            found += page["items"]
            cursor = page["next_cursor"]
            if not page["more"]:
                return found

    def until_item(
        self, uscc: str, kind: str, holds: Callable[[dict[str, Any]], bool] = bool
    ) -> dict[str, Any]:
        [item] = eventually(
            lambda: [
                i for i in self.items(kind=kind, state="any") if i["uscc"] == uscc and holds(i)
            ],
            lambda found: len(found) == 1,
            60,
            lambda found: f"no {kind} of {uscc} in the inbox within 60 s: {found}",
        )
        return item

    def outcome(self, action_id: str, settled: bool = True) -> dict[str, Any]:
        answer: dict[str, Any] = eventually(
            lambda: self.get(f"/v1/actions/{action_id}").json(),
            lambda found: found["status"] != "PENDING" if settled else found["received"],
            60,
            lambda found: f"action {action_id} still {found}",
        )
        return answer


@pytest.fixture(scope="module")
def transport(inbox_url: str, tokens: Callable[..., str]) -> Department:
    return Department(inbox_url, tokens(TRANSPORT))


@pytest.fixture(scope="module")
def finance(inbox_url: str, tokens: Callable[..., str]) -> Department:
    return Department(inbox_url, tokens(FINANCE))


def new_push(platform: Platform, transport: Department) -> dict[str, Any]:
    """A 设立 in 西湖区 with 道路货物运输, published as a connector does; its push in the
    transport department's inbox, as the API lists it."""
    uscc = make_uscc("91", "330106")
    platform.register(registration("330106", (ROAD_FREIGHT,), industry="G5431", uscc=uscc))
    return transport.until_item(uscc, "push")


def new_hit(platform: Platform, finance: Department) -> dict[str, Any]:
    """A serious listing of a 西湖区 entity, then a government procurement of 西湖区财政 for
    it: a CJ01 restriction hit in the finance department's inbox."""
    uscc = make_uscc("91", "330106")
    platform.list(list_entry(uscc, f"E-{uscc}", listed_on=today() - timedelta(days=10)))
    platform.matter(
        matter(uscc, FINANCE, "GOVERNMENT_PROCUREMENT", f"CG-{uscc[-6:]}", matter_date=today())
    )
    return finance.until_item(uscc, "hit")


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


# -- the examples of the guide ----------------------------------------------------------------


def test_the_example_client_claims_a_push_and_sees_it_applied(
    platform: Platform, transport: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    push = new_push(platform, transport)
    env = {**os.environ, "XIETONG_INBOX_URL": inbox_url, "XIETONG_INBOX_TOKEN": tokens(TRANSPORT)}
    client = [sys.executable, str(ROOT / "connectors" / "inbox" / "example_client.py")]

    listed = subprocess.run(
        [*client, "list", "--kind", "push"], env=env, capture_output=True, text=True, timeout=60
    )
    claimed = subprocess.run(
        [*client, "claim", push["id"]], env=env, capture_output=True, text=True, timeout=90
    )

    assert listed.returncode == 0, listed.stderr
    assert push["id"] in listed.stdout and "resume with cursor" in listed.stdout
    assert claimed.returncode == 0, claimed.stderr
    assert '"status": "APPLIED"' in claimed.stdout, claimed.stdout


def test_the_curl_session_of_the_guide_works(
    platform: Platform, transport: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    guide = (ROOT / "connectors" / "inbox" / "README.md").read_text()
    [session] = re.findall(
        r"<!-- tests/integration/test_inbox_api.py runs this block.*?-->\n```sh\n(.*?)```",
        guide,
        re.S,
    )
    push = new_push(platform, transport)
    env = {**os.environ, "INBOX": inbox_url, "TOKEN": tokens(TRANSPORT), "PUSH_ID": push["id"]}

    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", session],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert ran.returncode == 0, ran.stderr
    assert push["id"] in ran.stdout and '"PUSHED"' in ran.stdout
    assert ran.stdout.rstrip().endswith(": APPLIED"), ran.stdout


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
