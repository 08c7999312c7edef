"""The HTTP ingest, against the real broker and schema registry.

Two departments hold registry tokens, issued in the registry database the service reads:
杭州市卫生健康委员会 posts 公共场所卫生许可 in its own column names
(tests/fixtures/hz-health-licence.yaml), 西湖区市场监督管理局 posts 食品经营许可 in the
双公示 column names (tests/fixtures/http/xihu-market-licence.yaml). Topics are
shared with every other test and run, so each test reads only what was written after
it started and picks its records by event id or source offset.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import KafkaError, KafkaException
from fastapi.testclient import TestClient

from connectors.config import ConnectorConfig
from connectors.http_ingest import create_app
from registry import service
from registry.audit import Actor
from registry.db import session_factory, transaction
from registry.directory import RegistryDirectory
from schemas import register_all
from tests.kafka_helpers import TopicWindow
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import DEAD_LETTER, LICENCES

FIXTURES = Path(__file__).parents[1] / "fixtures"
HZ_HEALTH = "11330100EUHUXQEE4F"  # 杭州市卫生健康委员会
XIHU_MARKET = "11330106TT6P0PAF5K"  # 杭州市西湖区市场监督管理局 (hz-xh-amr)
MAPPINGS = [FIXTURES / "hz-health-licence.yaml", FIXTURES / "http" / "xihu-market-licence.yaml"]
MAX_BATCH = 5
ENTITY = "91330106MA2CD7Q4XU"  # 杭州示例餐饮有限公司


# -- the service under test ----------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    departments: dict[str, str]  # department USCC → its registry token
    admin: str
    revoked: str  # 杭州市卫生健康委员会's, revoked


@dataclass
class Ingest:
    client: TestClient
    tokens: dict[str, str]  # department USCC → bearer token

    def post(self, department: str, record_type: str, body: dict[str, Any]) -> Any:
        return self.client.post(
            f"/v1/records/{record_type}",
            json=body,
            headers={"Authorization": f"Bearer {self.tokens[department]}"},
        )


def write_connector(folder: Path, mappings: list[Path], name: str = "http-ingest-test") -> Path:
    """A connector file, as an operator would write it."""
    connector = {
        "name": name,
        "source": {
            "kind": "http",
            "mappings": [str(path) for path in mappings],
            "max_batch": MAX_BATCH,
        },
    }
    path = folder / "connector.yaml"
    path.write_text(yaml.safe_dump(connector, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokens(registry_url: str) -> Tokens:
    """Registry tokens of the two departments, an administrator's and a revoked one."""
    admin = Actor.admin("test-http-ingest")
    with transaction(session_factory(registry_url)) as session:
        revoked = service.issue_token(session, admin, "hz-health")
        service.revoke_credential(session, admin, revoked.credential.id)
        return Tokens(
            departments={
                HZ_HEALTH: service.issue_token(session, admin, "hz-health").token,
                XIHU_MARKET: service.issue_token(session, admin, "hz-xh-amr").token,
            },
            admin=service.issue_token(session, admin, None).token,
            revoked=revoked.token,
        )


def directory_of(registry_url: str) -> RegistryDirectory:
    """The registry the service asks, every request (no cache: revocations show at once)."""
    return RegistryDirectory(registry_url, None, cache_seconds=0)


@pytest.fixture(scope="module")
def ingest(
    kafka: KafkaClients,
    tokens: Tokens,
    registry_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ingest]:
    register_all(kafka.schema_registry())
    config = ConnectorConfig.load(write_connector(tmp_path_factory.mktemp("http-ingest"), MAPPINGS))
    with TestClient(create_app(config, kafka, directory_of(registry_url))) as client:
        yield Ingest(client, tokens.departments)


# -- records ---------------------------------------------------------------------------------


def hz_licence(**columns: Any) -> dict[str, Any]:
    """A 公共场所卫生许可 in 杭州市卫生健康委员会's columns, with a fresh record id."""
    return {
        "记录编号": f"WSXK-{uuid.uuid4().hex[:12]}",
        "版本": "1",
        "统一社会信用代码": ENTITY,
        "行政相对人名称": "杭州示例餐饮有限公司",
        "法定代表人": "王敏",
        "许可文书号": "杭卫公许〔2026〕17号",
        "许可类别": "普通",
        "许可证编号": "杭卫公证字〔2026〕第330106-0017号",
        "许可内容": "公共场所卫生许可（餐厅）",
        "许可决定日期": "2026年3月2日",
        "有效期自": "2026年3月2日",
        "有效期至": "长期",
        "当前状态": "有效",
        **columns,
    }


def xihu_licence(**columns: Any) -> dict[str, Any]:
    """A 食品经营许可 in the 双公示 columns 西湖区市场监督管理局 uses."""
    return {
        "XK_BH": f"SPJY-{uuid.uuid4().hex[:12]}",
        "XK_XDR_SHXYM": ENTITY,
        "XK_XDR_MC": "杭州示例餐饮有限公司",
        "XK_FRDB": "王敏",
        "XK_XKWS": "食品经营许可决定书",
        "XK_WSH": "西市监食许〔2026〕88号",
        "XK_XKLB": "普通",
        "XK_XKZS": "食品经营许可证",
        "XK_XKBH": "JY13301060088888",
        "XK_NR": "热食类食品制售",
        "XK_JDRQ": "2026-03-05",
        "XK_YXQZ": "2026-03-05",
        "XK_YXQZI": "2031-03-04",
        "XK_ZT": "有效",
        **columns,
    }


# -- the specification -----------------------------------------------------------------------


def test_a_batch_gets_a_verdict_per_record_and_every_record_reaches_kafka(
    ingest: Ingest, kafka: KafkaClients
) -> None:
    good = hz_licence()
    wrong_check_character = hz_licence(统一社会信用代码="91330106MA2CD7Q4XX")
    no_such_day = hz_licence(许可决定日期="2026年2月30日")
    licences, dead_letters = TopicWindow(kafka, LICENCES.name), TopicWindow(kafka, DEAD_LETTER.name)

    response = ingest.post(
        HZ_HEALTH, "licence", {"records": [good, wrong_check_character, no_such_day, "XK-1"]}
    )

    assert response.status_code == 200
    body = response.json()
    request_id = body["request_id"]
    assert (body["accepted"], body["rejected"]) == (1, 3)
    accepted, check, date, not_object = body["results"]
    assert accepted["index"] == 0 and accepted["status"] == "accepted"
    assert check["status"] == "rejected"
    assert [(r["field"], r["code"]) for r in check["reasons"]] == [("uscc", "uscc.check_character")]
    assert "expected 'U'" in check["reasons"][0]["message"]
    assert [(r["field"], r["code"]) for r in date["reasons"]] == [("decided_on", "date.invalid")]
    assert "2026年2月30日" in date["reasons"][0]["message"]
    assert [(r["field"], r["code"]) for r in not_object["reasons"]] == [("", "json.not_object")]

    # The accepted licence is on permits.licences, keyed by the entity, from the credential's
    # department, with where it came from.
    published = {
        message.value["envelope"]["event_id"]: (message.key, message.value)
        for message in licences.read()
    }
    key, licence = published[accepted["event_id"]]
    assert key == ENTITY.encode()
    assert licence["licence_number"] == good["许可证编号"]
    envelope = licence["envelope"]
    assert envelope["source_department_uscc"] == HZ_HEALTH
    assert envelope["source_record_id"] == good["记录编号"]
    assert envelope["source_partition"] == f"http:{HZ_HEALTH}"
    assert envelope["source_offset"] == f"{request_id}:0"

    # The three rejected records are kept whole on platform.dead-letter with their reasons.
    rejected = {
        value["source_offset"]: value
        for value in (message.value for message in dead_letters.read())
        if value["source_partition"] == f"http:{HZ_HEALTH}"
        and value["source_offset"].startswith(f"{request_id}:")
    }
    assert sorted(rejected) == [f"{request_id}:{index}" for index in (1, 2, 3)]
    check_letter = rejected[f"{request_id}:1"]
    assert check_letter["source_department_uscc"] == HZ_HEALTH
    assert check_letter["record_type"] == "licence"
    assert check_letter["position"] == f"request {request_id}, record 1"
    assert json.loads(check_letter["payload"]) == wrong_check_character
    assert [r["code"] for r in check_letter["reasons"]] == ["uscc.check_character"]
    assert [r["code"] for r in rejected[f"{request_id}:2"]["reasons"]] == ["date.invalid"]
    assert json.loads(rejected[f"{request_id}:3"]["payload"]) == "XK-1"


def test_the_body_cannot_choose_the_department(ingest: Ingest, kafka: KafkaClients) -> None:
    # 西湖区市场监管 claims, in the body and in the record, to be 杭州市卫健委.
    record = xihu_licence(source_department_uscc=HZ_HEALTH, 来源部门统一社会信用代码=HZ_HEALTH)
    licences = TopicWindow(kafka, LICENCES.name)

    response = ingest.post(
        XIHU_MARKET,
        "licence",
        {"department_uscc": HZ_HEALTH, "source_department_uscc": HZ_HEALTH, "records": [record]},
    )

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["status"] == "accepted"
    published = {m.value["envelope"]["event_id"]: m.value for m in licences.read()}
    envelope = published[result["event_id"]]["envelope"]
    assert envelope["source_department_uscc"] == XIHU_MARKET
    assert envelope["source_department_name"] == "杭州市西湖区市场监督管理局"
    assert envelope["source_partition"] == f"http:{XIHU_MARKET}"


def test_a_request_without_a_known_token_is_refused(ingest: Ingest, tokens: Tokens) -> None:
    body = {"records": [hz_licence()]}
    token = ingest.tokens[HZ_HEALTH]
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token-of-any-department"},
        {"Authorization": f"Basic {token}"},
        # The digest is what the registry stores, never what a department sends.
        {"Authorization": f"Bearer {service.token_digest(token)}"},
        {"Authorization": f"Bearer {tokens.revoked}"},
    ):
        response = ingest.client.post("/v1/records/licence", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "not_authenticated"
        assert "token" in response.json()["message"]


def test_an_administrator_token_posts_for_no_department(ingest: Ingest, tokens: Tokens) -> None:
    response = ingest.client.post(
        "/v1/records/licence",
        json={"records": [hz_licence()]},
        headers={"Authorization": f"Bearer {tokens.admin}"},
    )
    assert response.status_code == 403
    assert "has no department" in response.json()["message"]


def test_a_department_posts_only_the_record_types_it_has_a_mapping_for(ingest: Ingest) -> None:
    response = ingest.post(HZ_HEALTH, "penalty", {"records": [hz_licence()]})
    assert response.status_code == 403
    assert response.json()["field"] == "record_type"
    assert "'penalty'" in response.json()["message"]
    assert "licence" in response.json()["message"]

    response = ingest.post(HZ_HEALTH, "licences", {"records": [hz_licence()]})
    assert response.status_code == 404
    assert "registration, licence, penalty, credit_list_entry" in response.json()["message"]


def test_a_batch_larger_than_max_batch_is_refused_whole(ingest: Ingest) -> None:
    response = ingest.post(
        HZ_HEALTH, "licence", {"records": [hz_licence() for _ in range(MAX_BATCH + 1)]}
    )
    assert response.status_code == 413
    assert f"at most {MAX_BATCH}" in response.json()["message"]


def test_a_record_sent_again_keeps_its_event_id_and_a_new_version_gets_a_new_one(
    ingest: Ingest,
) -> None:
    record = hz_licence()

    first = ingest.post(HZ_HEALTH, "licence", {"records": [record]}).json()
    again = ingest.post(HZ_HEALTH, "licence", {"records": [record]}).json()
    corrected = ingest.post(
        HZ_HEALTH, "licence", {"records": [{**record, "版本": "2", "当前状态": "注销"}]}
    ).json()

    assert first["request_id"] != again["request_id"]
    assert first["results"][0]["event_id"] == again["results"][0]["event_id"]
    assert corrected["results"][0]["event_id"] != first["results"][0]["event_id"]


def test_when_the_broker_does_not_acknowledge_the_department_is_told_to_send_again(
    kafka: KafkaClients,
    tokens: Tokens,
    registry_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    unreachable = KafkaClients(
        kafka.settings.model_copy(update={"kafka_bootstrap_servers_env": nowhere})
    )
    monkeypatch.setattr("connectors.http_ingest.ACKNOWLEDGEMENT_TIMEOUT_SECONDS", 0.5)
    config = ConnectorConfig.load(write_connector(tmp_path, MAPPINGS))
    app = create_app(config, unreachable, directory_of(registry_url))

    with TestClient(app) as client:
        response = client.post(
            "/v1/records/licence",
            json={"records": [hz_licence()]},
            headers={"Authorization": f"Bearer {tokens.departments[HZ_HEALTH]}"},
        )

    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert "send the whole batch again" in response.json()["message"]


def test_a_mapping_whose_department_is_not_in_the_registry_is_refused_at_startup(
    kafka: KafkaClients, registry_databases: Callable[[], str], tmp_path: Path
) -> None:
    empty_registry = registry_databases()  # migrated, no department registered
    config = ConnectorConfig.load(write_connector(tmp_path, MAPPINGS))

    with pytest.raises(
        ValueError, match=r"hz-health-licence\.yaml.*11330100EUHUXQEE4F.*not registered"
    ):
        create_app(config, kafka, directory_of(empty_registry))


def test_the_openapi_document_is_the_contract(ingest: Ingest) -> None:
    document = ingest.client.get("/openapi.json").json()

    operation = document["paths"]["/v1/records/{record_type}"]["post"]
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["$ref"].endswith("/RecordBatch")
    responses = operation["responses"]
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/BatchResult"
    )
    assert {"401", "403", "404", "409", "413", "422", "503"} <= set(responses)
    assert "max_body_bytes" in responses["413"]["description"]
    assert "Idempotent-Replayed" in responses["200"]["headers"]
    # The Idempotency-Key and X-Request-Id headers are parameters too (issue 12).
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert set(parameters) == {"record_type", "Idempotency-Key", "X-Request-Id"}
    assert parameters["Idempotency-Key"]["in"] == "header"
    assert "first answer back" in parameters["Idempotency-Key"]["description"]
    record_type = parameters["record_type"]
    assert record_type["schema"]["enum"] == [
        "registration",
        "licence",
        "penalty",
        "credit_list_entry",
    ]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    schemas = document["components"]["schemas"]
    assert set(schemas["RecordAccepted"]["required"]) >= {"index", "event_id"}
    assert set(schemas["Rejection"]["properties"]) == {"field", "code", "message"}
    assert ingest.client.get("/docs").status_code == 200


def test_the_service_reports_health_and_metrics(ingest: Ingest) -> None:
    assert ingest.client.get("/health").json() == {"status": "ok", "connector": "http-ingest-test"}
    metrics = ingest.client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "xietong_connector_http_requests_total" in metrics.text
    assert "xietong_connector_records_published_total" in metrics.text


# -- a request is read whole and written whole (issue 12) -------------------------------------


def post_raw(client: TestClient, token: str, content: Any, **headers: str) -> Any:
    """POST a body as the client sends it (bytes, or an iterator of chunks: no Content-Length)."""
    return client.post(
        "/v1/records/licence",
        content=content,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            **{name.replace("_", "-"): value for name, value in headers.items()},
        },
    )


@dataclass(frozen=True)
class Barrier:
    """A batch committed after the one under test: a licence of ENTITY (the partition of
    the records under test on permits.licences) and a rejected record of 杭州市卫健委 (its
    partition on platform.dead-letter). Once both are read, everything written before
    them — committed, or aborted — has been passed."""

    event_id: str
    dead_letter_offset: str

    @classmethod
    def post(cls, client: TestClient, token: str) -> Barrier:
        body = {"records": [hz_licence(), hz_licence(许可决定日期="2026年2月30日")]}
        response = client.post(
            "/v1/records/licence", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        return cls(answer["results"][0]["event_id"], f"{answer['request_id']}:1")

    def read(
        self, licences: TopicWindow, dead_letters: TopicWindow
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The licences and dead letters (values) of 杭州市卫健委 written before the barrier."""
        events = [m.value for m in licences.read()]
        letters = [m.value for m in dead_letters.read()]
        event_ids = [event["envelope"]["event_id"] for event in events]
        letter_offsets = [letter["source_offset"] for letter in letters]
        assert self.event_id in event_ids, "the barrier licence was not read"
        assert self.dead_letter_offset in letter_offsets, "the barrier dead letter was not read"
        before_events = events[: event_ids.index(self.event_id)]
        before_letters = letters[: letter_offsets.index(self.dead_letter_offset)]
        return (
            [e for e in before_events if e["envelope"]["source_department_uscc"] == HZ_HEALTH],
            [d for d in before_letters if d["source_department_uscc"] == HZ_HEALTH],
        )


def of_request(
    request_id: str, events: list[dict[str, Any]], letters: list[dict[str, Any]]
) -> list[str]:
    """The source offsets of one request among events and dead letters."""
    offsets = [e["envelope"]["source_offset"] for e in events] + [
        d["source_offset"] for d in letters
    ]
    return sorted(offset for offset in offsets if offset.startswith(f"{request_id}:"))


def test_a_body_that_is_not_strict_json_is_refused_with_where_it_breaks(ingest: Ingest) -> None:
    token = ingest.tokens[HZ_HEALTH]
    for body, expected in (
        (b'{"records": NaN}', "NaN"),
        (b'{"records": [{"\\u8bb0\\u5f55\\u7f16\\u53f7": Infinity}]}', "Infinity"),
        (b'{"records": [-Infinity]}', "-Infinity"),
        (b'{"records": [{"a": 1},]}', "line 1 column 23"),
        (b'{"records": ' + b"[" * 3000 + b"]" * 3000 + b"}", "too deeply"),
        (b'{"records": [' + b"9" * 5000 + b"]}", "4300 digits"),
        ('{"records": ["杭州"]}'.encode("gb18030"), "not UTF-8"),
    ):
        response = post_raw(ingest.client, token, body)
        assert response.status_code == 422, (body[:40], response.text)
        refusal = response.json()
        assert refusal["error"] == "invalid_json"
        assert expected in refusal["message"], refusal["message"]

    response = post_raw(ingest.client, token, b'{"records": {"a": 1}}')
    assert response.status_code == 422
    assert response.json()["field"] == "records"
    assert "valid list" in response.json()["message"]


def test_a_lone_surrogate_rejects_its_record_alone_and_the_batch_is_written_whole(
    ingest: Ingest, kafka: KafkaClients
) -> None:
    records = [hz_licence() for _ in range(5)]
    records[3]["行政相对人名称"] = "杭州\ud800餐饮有限公司"
    licences, dead_letters = TopicWindow(kafka, LICENCES.name), TopicWindow(kafka, DEAD_LETTER.name)

    # json.dumps escapes the surrogate: the body is the JSON text "\ud800" (ASCII).
    response = post_raw(ingest.client, ingest.tokens[HZ_HEALTH], json.dumps({"records": records}))

    assert response.status_code == 200, response.text
    answer = response.json()
    request_id = answer["request_id"]
    assert (answer["accepted"], answer["rejected"]) == (4, 1)
    [reason] = answer["results"][3]["reasons"]
    assert (reason["field"], reason["code"]) == ("holder_name", "text.surrogate")
    assert "record 3" in reason["message"] and "\\ud800" in reason["message"]
    assert "'行政相对人名称'" in reason["message"]

    barrier = Barrier.post(ingest.client, ingest.tokens[HZ_HEALTH])
    events, letters = barrier.read(licences, dead_letters)
    # Each record once: four events and one dead letter, nothing else of the request.
    assert of_request(request_id, events, letters) == [f"{request_id}:{i}" for i in range(5)]
    [letter] = [d for d in letters if d["source_offset"] == f"{request_id}:3"]
    assert [r["code"] for r in letter["reasons"]] == ["text.surrogate"]
    assert json.loads(letter["payload"])["行政相对人名称"] == "杭州\ud800餐饮有限公司"


def test_a_body_over_the_limit_is_refused_as_it_arrives_with_the_limit_named(
    ingest: Ingest,
) -> None:
    twenty_megabytes = b'{"records": ["' + b"x" * (20 * 1024 * 1024) + b'"]}'
    token = ingest.tokens[HZ_HEALTH]

    declared = post_raw(ingest.client, token, twenty_megabytes)
    chunks = (twenty_megabytes[i : i + 65536] for i in range(0, len(twenty_megabytes), 65536))
    streamed = post_raw(ingest.client, token, chunks)  # chunked: no Content-Length

    for response in (declared, streamed):
        assert response.status_code == 413
        refusal = response.json()
        assert refusal["error"] == "content_too_large"
        assert "at most 4194304 bytes (max_body_bytes)" in refusal["message"]


def test_a_retry_with_the_same_idempotency_key_writes_nothing_twice_even_after_a_restart(
    ingest: Ingest,
    kafka: KafkaClients,
    connectors_kafka: KafkaClients,
    tokens: Tokens,
    registry_url: str,
    tmp_path: Path,
) -> None:
    # As the connectors' own principal: its ACLs let it use its transactional ids and
    # write and read back the answers.
    config = ConnectorConfig.load(write_connector(tmp_path, MAPPINGS, name="http-ingest-retry"))
    key = f"batch-{uuid.uuid4()}"
    body = json.dumps({"records": [hz_licence(), hz_licence(统一社会信用代码="1")]})
    token = tokens.departments[HZ_HEALTH]
    licences, dead_letters = TopicWindow(kafka, LICENCES.name), TopicWindow(kafka, DEAD_LETTER.name)

    with TestClient(create_app(config, connectors_kafka, directory_of(registry_url))) as client:
        first = post_raw(client, token, body, Idempotency_Key=key)
        again = post_raw(client, token, body, Idempotency_Key=key)
        by_request_id = post_raw(client, token, body, X_Request_Id=key)
    with TestClient(create_app(config, connectors_kafka, directory_of(registry_url))) as restarted:
        after_restart = post_raw(restarted, token, body, Idempotency_Key=key)
        barrier = Barrier.post(restarted, token)

    assert first.status_code == 200, first.text
    assert first.json()["request_id"] == key
    assert "idempotent-replayed" not in first.headers
    for replay in (again, by_request_id, after_restart):
        assert replay.status_code == 200
        assert replay.content == first.content
        assert replay.headers["idempotent-replayed"] == "true"
    events, letters = barrier.read(licences, dead_letters)
    assert of_request(key, events, letters) == [f"{key}:0", f"{key}:1"]


def test_an_idempotency_key_used_for_another_body_or_still_in_flight_is_refused(
    ingest: Ingest,
) -> None:
    token = ingest.tokens[HZ_HEALTH]
    key = f"batch-{uuid.uuid4()}"
    first = post_raw(
        ingest.client, token, json.dumps({"records": [hz_licence()]}), Idempotency_Key=key
    )
    assert first.status_code == 200

    other = post_raw(
        ingest.client, token, json.dumps({"records": [hz_licence()]}), Idempotency_Key=key
    )
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    assert other.json()["field"] == "Idempotency-Key"

    # The id the platform gave a request without a key has no answer to give again.
    unkeyed = ingest.post(HZ_HEALTH, "licence", {"records": []}).json()["request_id"]
    taken = post_raw(ingest.client, token, json.dumps({"records": []}), Idempotency_Key=unkeyed)
    assert taken.status_code == 422
    assert taken.json()["error"] == "idempotency_key_reused"

    unusable = post_raw(ingest.client, token, json.dumps({"records": []}), Idempotency_Key="a b")
    assert unusable.status_code == 422
    assert unusable.json()["field"] == "Idempotency-Key"

    # A request holding a key, as one still being written does: the second is told so.
    busy = f"batch-{uuid.uuid4()}"
    answers = ingest.client.app.state.ingest.answers  # type: ignore[attr-defined]
    with answers.claim(HZ_HEALTH, busy):
        conflict = post_raw(ingest.client, token, json.dumps({"records": []}), Idempotency_Key=busy)
    assert conflict.status_code == 409
    assert "still being written" in conflict.json()["message"]
    assert (
        post_raw(
            ingest.client, token, json.dumps({"records": []}), Idempotency_Key=busy
        ).status_code
        == 200
    )


def test_a_batch_the_broker_refuses_midway_is_answered_5xx_and_nothing_of_it_is_visible(
    kafka: KafkaClients, tokens: Tokens, registry_url: str, tmp_path: Path
) -> None:
    # Two ingests under one connector name share transactional ids: the one started
    # second fences the first, whose next batch the broker refuses as it is produced.
    config = ConnectorConfig.load(write_connector(tmp_path, MAPPINGS, name="http-ingest-fenced"))
    token = tokens.departments[HZ_HEALTH]
    key = f"batch-{uuid.uuid4()}"
    body = json.dumps(
        {"records": [hz_licence(), hz_licence(), hz_licence(许可决定日期="2026年2月30日")]}
    )
    licences, dead_letters = TopicWindow(kafka, LICENCES.name), TopicWindow(kafka, DEAD_LETTER.name)

    with TestClient(create_app(config, kafka, directory_of(registry_url))) as fenced:
        assert Barrier.post(fenced, token)  # its producers are made
        with TestClient(create_app(config, kafka, directory_of(registry_url))) as successor:
            Barrier.post(successor, token)  # fences the first
            refused = post_raw(fenced, token, body, Idempotency_Key=key)
        barrier = Barrier.post(fenced, token)  # a new producer, fencing the successor
        retried = post_raw(fenced, token, body, Idempotency_Key=key)
        metrics = fenced.get("/metrics").text

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"].isdigit()
    assert "nothing of it is kept" in refused.json()["message"]
    events, letters = barrier.read(licences, dead_letters)
    assert of_request(key, events, letters) == []
    # The key was not answered, so the retry is written, once.
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert retried.json()["request_id"] == key
    assert (
        'xietong_connector_http_aborted_transactions_total{connector="http-ingest-fenced"'
        in metrics
    )


def test_only_the_connectors_may_use_the_ingests_transactional_ids(
    stack_settings: Settings, connectors_kafka: KafkaClients
) -> None:
    if not stack_settings.kafka_security_protocol.startswith("SASL"):
        pytest.skip("the broker authorises nothing without SASL (testcontainers)")
    ingest_id = f"xietong.connectors.http-ingest-acl.{HZ_HEALTH}.licence"
    for clients, transactional_id, allowed in (
        (connectors_kafka, ingest_id, True),
        (KafkaClients(stack_settings, "sink"), ingest_id, False),
        (connectors_kafka, f"xietong.sink.{uuid.uuid4().hex[:8]}", False),
    ):
        producer = clients.producer(**{"transactional.id": transactional_id})
        try:
            producer.init_transactions(30)
            outcome = None
        except KafkaException as error:
            outcome = error.args[0].code()
        with contextlib.suppress(KafkaException):  # a refused producer's close raises again
            producer.close()
        expected = None if allowed else KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        assert outcome == expected, (clients.principal, transactional_id)
