"""``xietong registry …`` on a real registry database: the same operations as the API."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from app import cli
from xietong.clock import business_clock
from xietong.settings import Settings


@pytest.fixture
def run(registry_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``xietong registry ARGS`` against this module's registry database."""
    monkeypatch.setattr(cli, "get_settings", lambda: Settings(database_url_env=registry_url))
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli.app, ["registry", *args])

    return invoke


def test_a_request_approved_by_its_owner_shows_up_approved_in_json(run: Any) -> None:
    requested = run(
        "request",
        "--department", "hz-health",
        "--resource", "credit_list_entry",
        "--purpose", "嵌入式联合惩戒: 行政许可申请时核查",
        "--legal-basis", "国办发〔2020〕49号",
        "--fields", "uscc,list_type,listed_on",
        "--divisions", "330106,330102",
        "--until", "2099-12-31",
        "--json",
    )  # fmt: skip
    assert requested.exit_code == 0, requested.output
    subscription = json.loads(requested.stdout)
    end_of_day_in_china = business_clock().midnight(date(2100, 1, 1))
    assert datetime.fromisoformat(subscription["valid_until"]) == end_of_day_in_china
    assert subscription["filters"] == {"divisions": ["330106", "330102"]}

    wrong = run("approve", str(subscription["id"]), "--by", "hz-amr")
    assert wrong.exit_code == 1
    assert "belongs to zj-drc" in wrong.output

    assert run("approve", str(subscription["id"]), "--by", "zj-drc").exit_code == 0
    listed = run("subscriptions", "--department", "hz-health", "--status", "approved", "--json")
    assert [row["id"] for row in json.loads(listed.stdout)] == [subscription["id"]]

    history = json.loads(run("history", str(subscription["id"]), "--json").stdout)
    assert [(e["from_status"], e["to_status"]) for e in history] == [
        (None, "REQUESTED"),
        ("REQUESTED", "APPROVED"),
    ]
    grants = {g["department"]: g for g in json.loads(run("grants", "--json").stdout)}
    # 有条件共享: the department reads its view, which only the sharing processor writes.
    assert "dept.hz-health.shared.credit_list_entry" in grants["hz-health"]["read_topics"]
    assert "credit.list-entries" not in grants["hz-health"]["read_topics"]


def test_a_refusal_is_one_line_naming_the_state(run: Any) -> None:
    requested = run(
        "request",
        "--department", "hz-em",
        "--resource", "registration",
        "--purpose", "危险化学品经营许可 双告知",
        "--legal-basis", "国发〔2015〕62号",
        "--json",
    )  # fmt: skip
    subscription_id = str(json.loads(requested.stdout)["id"])
    assert run("reject", subscription_id, "--by", "admin", "--reason", "重复申请").exit_code == 0
    again = run("revoke", subscription_id, "--by", "zj-amr", "--reason", "x")
    assert again.exit_code == 1
    assert f"subscription {subscription_id}" in again.output
    assert "is REJECTED" in again.output


def test_loading_the_catalog_again_reports_everything_unchanged(run: Any) -> None:
    loaded = run("load-catalog")
    assert loaded.exit_code == 0, loaded.output
    assert "departments" in loaded.output
    assert json.loads(run("departments", "--json").stdout)[0]["kafka_principal"].startswith(
        "User:dept-"
    )
    resources = {r["code"]: r for r in json.loads(run("resources", "--json").stdout)}
    assert resources["registration"]["topic"] == "market.registrations"


def test_an_issued_token_is_printed_once_and_the_audit_log_shows_who_issued_it(run: Any) -> None:
    issued = run("issue-token", "hz-health")
    assert issued.exit_code == 0
    token = issued.stdout.strip().splitlines()[-1]
    assert token.startswith("xtr_")
    entries = json.loads(run("audit", "--limit", "5", "--json").stdout)
    credential = next(e for e in entries if e["entity"] == "credentials")
    assert credential["actor"] == "admin:cli"
    assert token not in json.dumps(entries)


def test_a_department_s_token_is_rotated_and_revoked_from_the_command_line(
    run: Any, registry_url: str
) -> None:
    from registry import service
    from registry.db import session_factory, transaction

    def works(token: str) -> bool:
        with transaction(session_factory(registry_url)) as session:
            return service.authenticate(session, token, None) is not None

    issued = run("issue-token", "hz-em", "--scope", "inbox:read")
    old_token = issued.stdout.strip().splitlines()[-1]
    [listed] = json.loads(run("tokens", "--department", "hz-em", "--json").stdout)
    assert listed["scopes"] == ["inbox:read"] and listed["revoked_at"] is None

    rotated = run("rotate-token", str(listed["id"]))

    assert rotated.exit_code == 0, rotated.output
    new_token = rotated.stdout.strip()  # the token alone on stdout, the rest on stderr
    assert new_token.startswith("xtr_") and new_token != old_token
    assert f"credential {listed['id']} of hz-em revoked" in rotated.stderr
    assert not works(old_token) and works(new_token)
    after = {row["id"]: row for row in json.loads(run("tokens", "--json").stdout)}
    assert after[listed["id"]]["revoked_at"] is not None
    [replacement] = [
        row for row in after.values() if row["department"] == "hz-em" and not row["revoked_at"]
    ]
    assert replacement["scopes"] == ["inbox:read"]

    revoked = run("revoke-token", str(replacement["id"]))
    assert revoked.exit_code == 0, revoked.output
    assert not works(new_token)
    again = run("revoke-token", str(replacement["id"]))
    assert again.exit_code == 1 and "already revoked" in again.output
    assert run("rotate-token", str(replacement["id"])).exit_code == 1


def test_a_department_s_kafka_password_is_revoked_from_the_command_line(
    run: Any, stack_settings: Settings
) -> None:
    from confluent_kafka import KafkaException
    from pydantic import SecretStr

    from tests.kafka_helpers import eventually
    from xietong.kafka import KafkaClients

    def logs_in(password: str) -> bool:
        department = KafkaClients(
            stack_settings.model_copy(
                update={"kafka_username": "dept-hz-em", "kafka_password": SecretStr(password)}
            )
        )
        try:
            department.admin().list_topics(timeout=5)
        except KafkaException:
            return False
        return True

    issued = run("issue-kafka-password", "hz-em")
    assert issued.exit_code == 0, issued.output
    password = issued.stdout.split("password:")[1].split()[0]
    assert eventually(lambda: logs_in(password), bool, 30, lambda _: "dept-hz-em cannot log in")

    revoked = run("revoke-kafka-password", "hz-em")

    assert revoked.exit_code == 0, revoked.output
    assert "dept-hz-em: its Kafka credential is deleted" in revoked.stdout
    assert eventually(lambda: not logs_in(password), bool, 30, lambda _: "still logs in")
    again = run("revoke-kafka-password", "hz-em")
    assert again.exit_code == 1 and "has no Kafka credential" in again.output
