"""The integration kit's example clients (``connectors/kit/``) against the real stack, run
as a department's integrator runs them: ``example_client.py`` and ``curl_session.sh`` as
processes of their own, with nothing but the inbox API's address and a registry token.
The stack is the inbox API's (``tests/inbox_stack.py``): the workers, the sink and
``xietong inbox serve``, with pushes and hits published as the connectors publish them.
``kafka_client.py`` reads and writes as the department's own Kafka principal, with the
settings of the guide's "Raw Kafka" table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests import inbox_stack
from tests.inbox_stack import FINANCE, ROOT, TRANSPORT, Department, new_hit, new_push
from tests.stream_worker import Onboarding, Platform
from xietong.settings import Settings

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

KIT = ROOT / "connectors" / "kit"


def example_client(inbox_url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python connectors/kit/example_client.py ARGS`` as the guide says to run it."""
    env = {**os.environ, "XIETONG_INBOX_URL": inbox_url, "XIETONG_INBOX_TOKEN": token}
    return subprocess.run(
        [sys.executable, str(KIT / "example_client.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def curl_session(inbox_url: str, token: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``bash connectors/kit/curl_session.sh`` with INBOX, TOKEN and ``variables`` set."""
    env = {**os.environ, "INBOX": inbox_url, "TOKEN": token, **variables}
    return subprocess.run(
        ["bash", str(KIT / "curl_session.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def kafka_client(
    departments: Onboarding, settings: Settings, code: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``python connectors/kit/kafka_client.py ARGS`` as department ``code``, with its
    Kafka password and the stack's endpoints."""
    password = departments.clients[code].settings.kafka_password
    assert password is not None
    env = {
        **os.environ,
        "DEPT_CODE": code,
        "DEPT_KAFKA_PASSWORD": password.get_secret_value(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
    }
    return subprocess.run(
        [sys.executable, str(KIT / "kafka_client.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def resume_cursor(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith("resume with cursor ")]
    return line.removeprefix("resume with cursor ")


def outcome_of(output: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return answer


# -- the Python example -----------------------------------------------------------------------


def test_the_python_example_lists_with_the_cursor_and_resumes_where_it_stopped(
    platform: Platform, transport: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    token = tokens(TRANSPORT)
    first = new_push(platform, transport)

    listed = example_client(inbox_url, token, "list", "--kind", "push", "--state", "any")
    assert listed.returncode == 0, listed.stderr
    assert first["id"] in listed.stdout
    cursor = resume_cursor(listed.stdout)

    later = new_push(platform, transport)  # delivered after the client stopped
    resumed = example_client(
        inbox_url, token, "list", "--kind", "push", "--state", "any", "--cursor", cursor
    )

    assert resumed.returncode == 0, resumed.stderr
    assert later["id"] in resumed.stdout and first["id"] not in resumed.stdout


def test_the_python_example_claims_a_push_and_a_second_claim_is_rejected_with_the_reason(
    platform: Platform, transport: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    token = tokens(TRANSPORT)
    push = new_push(platform, transport)

    claimed = example_client(inbox_url, token, "claim", push["id"])
    again = example_client(inbox_url, token, "claim", push["id"])

    assert claimed.returncode == 0, claimed.stdout + claimed.stderr
    assert outcome_of(claimed.stdout)["status"] == "APPLIED"
    assert again.returncode == 3, again.stdout + again.stderr  # REJECTED
    rejected = outcome_of(again.stdout)
    assert rejected["status"] == "REJECTED" and "it is CLAIMED" in rejected["reason"]
    assert transport.get(f"/v1/inbox/{push['id']}").json()["item"]["state"] == "CLAIMED"


def test_the_python_example_returns_a_push_with_a_reason(
    platform: Platform, transport: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    push = new_push(platform, transport)

    returned = example_client(
        inbox_url, tokens(TRANSPORT), "return", push["id"], "SCOPE_NOT_IN_JURISDICTION"
    )

    assert returned.returncode == 0, returned.stdout + returned.stderr
    assert outcome_of(returned.stdout)["action"] == "RETURN"


def test_the_python_example_answers_a_hit_with_feedback(
    platform: Platform, finance: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    hit = new_hit(platform, finance)

    answered = example_client(
        inbox_url,
        tokens(FINANCE),
        "feedback",
        hit["id"],
        "NOT_APPLICABLE",
        "--reason",
        "非政府采购",
    )

    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert outcome_of(answered.stdout)["status"] == "APPLIED"
    assert finance.until_item(hit["uscc"], "hit", lambda i: i["state"] == "NOT_APPLICABLE")


def test_the_python_example_names_the_field_of_a_refused_request(
    platform: Platform, finance: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    hit = new_hit(platform, finance)

    refused = example_client(inbox_url, tokens(FINANCE), "feedback", hit["id"], "NOT_APPLICABLE")

    assert refused.returncode == 1
    assert "422" in refused.stderr and "(field reason)" in refused.stderr


# -- the curl session -------------------------------------------------------------------------


def test_the_curl_session_claims_a_push_and_answers_a_hit(
    platform: Platform,
    transport: Department,
    finance: Department,
    inbox_url: str,
    tokens: Callable[..., str],
) -> None:
    push = new_push(platform, transport)
    hit = new_hit(platform, finance)

    claimed = curl_session(inbox_url, tokens(TRANSPORT), PUSH_ID=push["id"])
    answered = curl_session(inbox_url, tokens(FINANCE), HIT_ID=hit["id"])

    assert claimed.returncode == 0, claimed.stdout + claimed.stderr
    assert push["id"] in claimed.stdout and '"state":"PUSHED"' in claimed.stdout
    assert claimed.stdout.rstrip().splitlines()[-1].split(": ")[1].startswith("APPLIED")
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert answered.stdout.rstrip().splitlines()[-1].split(": ")[1].startswith("APPLIED")
    assert finance.until_item(hit["uscc"], "hit", lambda i: i["state"] == "APPLIED")


def test_the_curl_session_resumes_at_its_cursor_and_exits_3_on_a_rejection(
    platform: Platform, transport: Department, inbox_url: str, tokens: Callable[..., str]
) -> None:
    token = tokens(TRANSPORT)
    first = new_push(platform, transport)
    listed = curl_session(inbox_url, token)
    assert listed.returncode == 0, listed.stderr
    cursor = resume_cursor(listed.stdout)
    claimed = transport.post(f"/v1/pushes/{first['id']}/claim", key=f"kit-{first['id']}")
    transport.outcome(claimed.json()["action_id"])
    later = new_push(platform, transport)

    resumed = curl_session(inbox_url, token, CURSOR=cursor, PUSH_ID=first["id"])

    # after the cursor: the push delivered since, not the one listed before
    listed_ids = [line.split("\t")[2] for line in resumed.stdout.splitlines() if "\t" in line]
    assert later["id"] in listed_ids and first["id"] not in listed_ids
    assert resumed.returncode == 3, resumed.stdout + resumed.stderr  # claimed already
    assert "REJECTED" in resumed.stdout.rstrip().splitlines()[-1]


# -- the raw Kafka example --------------------------------------------------------------------


def test_the_kafka_example_reads_the_inbox_in_its_own_group_and_claims_a_push(
    platform: Platform,
    transport: Department,
    departments: Onboarding,
    stack_settings: Settings,
) -> None:
    push = new_push(platform, transport)

    read = kafka_client(departments, stack_settings, TRANSPORT, "read", "--idle", "5")

    assert read.returncode == 0, read.stderr
    items = [json.loads(line) for line in read.stdout.splitlines()]
    [mine] = [i for i in items if i["value"].get("push_id") == push["id"]]
    assert mine["record"] == "cn.gov.xietong.dualnotice.DualNoticePush"
    assert mine["key"] == push["uscc"] and mine["value"]["state"] == "PUSHED"

    claimed = kafka_client(
        departments, stack_settings, TRANSPORT, "claim", push["id"], push["uscc"]
    )

    assert claimed.returncode == 0, claimed.stderr
    action_id = claimed.stdout.strip()
    outcome = transport.outcome(action_id)
    assert outcome["status"] == "APPLIED" and outcome["action"] == "CLAIM", outcome
    assert transport.get(f"/v1/inbox/{push['id']}").json()["item"]["state"] == "CLAIMED"
    # the group committed what it read: the next read starts after it
    again = kafka_client(departments, stack_settings, TRANSPORT, "read", "--idle", "3")
    assert again.returncode == 0, again.stderr
    assert push["id"] not in again.stdout


def test_the_kafka_example_answers_a_hit(
    platform: Platform,
    finance: Department,
    departments: Onboarding,
    stack_settings: Settings,
) -> None:
    hit = new_hit(platform, finance)

    answered = kafka_client(
        departments, stack_settings, FINANCE, "feedback", hit["id"], hit["uscc"], "APPLIED"
    )

    assert answered.returncode == 0, answered.stderr
    assert finance.outcome(answered.stdout.strip())["status"] == "APPLIED"
    assert finance.until_item(hit["uscc"], "hit", lambda i: i["state"] == "APPLIED")
