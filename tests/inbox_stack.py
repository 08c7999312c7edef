"""The inbox API on the real stack, for the tests that call it as department systems do
(``tests/integration/test_inbox_api.py``, ``tests/integration/test_kit.py``): the 双告知
and joint-punishment workers, the sink and ``xietong inbox serve`` as processes of their
own, three onboarded departments, their registry tokens, and helpers that publish a
registration or a listing and wait for the push or hit in a department's inbox.

The fixtures are module-scoped; a test module names the ones it uses (and those they
depend on) at its top, so each module gets a stack of its own::

    from tests import inbox_stack

    registry_url = inbox_stack.registry_url
    inbox_url = inbox_stack.inbox_url
    …
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

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
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.uscc import make_uscc

ROOT = Path(__file__).parents[1]
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
