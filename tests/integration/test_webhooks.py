"""Webhooks against real HTTP servers on loopback: the worker (``xietong webhooks run``, a
process of its own as svc-webhooks) pushes department inboxes to endpoints registered in
a real registry database, and each receiver verifies the Standard Webhooks signature.

The receivers: one answers 200; one fails three times, then answers; one fails until
the test opens its gate; one never answers within the timeout; one is a port nobody
listens on. The worker runs with a short retry window (10 s) so the hopeless ones are
dead-lettered while the test waits. The inbox items are 双告知 pushes produced to each
inbox directly, as the processor would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from app.webhook_receivers import WebhookReceivers
from connectors.webhooks.operations import dead_letters, endpoint_status, replay
from connectors.webhooks.settings import GROUP
from connectors.webhooks.worker import Endpoints
from registry.audit import Actor
from registry.db import session_factory, transaction
from registry.webhooks import register_webhook
from schemas import DUAL_NOTICE_RECORD_TYPES, register_all
from tests.kafka_helpers import eventually, first_message
from tests.sink_records import Outgoing, produce, push_states
from tests.stream_worker import (
    Onboarding,
    free_port,
    skip_backlog,
    stop_process,
    until_group_empty,
    until_ready,
)
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import DepartmentTopic
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

REPO = Path(__file__).parents[2]
PUSH = DUAL_NOTICE_RECORD_TYPES["dual_notice_push"]

OK = "hz-xh-amr"  # answers 200
FLAKY = "hz-xh-transport"  # 503 three times, then 200; CloudEvents structured mode
GATED = "hz-xh-tobacco"  # 503 until the test opens the gate
SLOW = "hz-xh-em"  # answers after the worker's timeout
DOWN = "hz-sc-amr"  # nothing listens
BULK = "hz-agri"  # the kill -9 test's
SIMULATED = "hz-yh-transport"  # served by the simulator's receivers (app/webhook_receivers.py)
DEPARTMENTS = (OK, FLAKY, GATED, SLOW, DOWN, BULK)

WORKER_SETTINGS = {
    "TIMEOUT": "1",
    "RETRY_WINDOW": "10",
    "BACKOFF_BASE": "0.2",
    "BACKOFF_CAP": "1",
    "ENDPOINT_REFRESH": "1",
}


# -- receivers ---------------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server on loopback that verifies each delivery's signature and keeps what
    it accepted, in order; ``answer`` decides each response (status, delay)."""

    answer: Callable[[Receiver], tuple[int, float]]
    retry_after: str | None = None  # sent with each 503
    secret: str = ""
    accepted: list[str] = field(default_factory=list)  # webhook-ids, in arrival order
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: int = 0
    bad_signatures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.attempts += 1
                    status, delay = receiver.answer(receiver)
                time.sleep(delay)
                if status == 200:
                    try:
                        payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                    except Exception as error:
                        receiver.bad_signatures.append(str(error))
                        status = 400
                    else:
                        with receiver.lock:
                            receiver.accepted.append(self.headers["webhook-id"])
                            receiver.bodies[self.headers["webhook-id"]] = payload
                self.send_response(status)
                if status == 503 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/xietong"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def ids(self) -> list[str]:
        with self.lock:
            return list(self.accepted)


def always(status: int, delay: float = 0.0) -> Callable[[Receiver], tuple[int, float]]:
    return lambda receiver: (status, delay)


def failing_first(times: int) -> Callable[[Receiver], tuple[int, float]]:
    return lambda receiver: (503, 0.0) if receiver.attempts <= times else (200, 0.0)


GATE = threading.Event()


def gated(receiver: Receiver) -> tuple[int, float]:
    return (200, 0.0) if GATE.is_set() else (503, 0.0)


# -- the worker ---------------------------------------------------------------------------------


@dataclass
class WebhookProcess:
    """``xietong webhooks run`` as a process of its own."""

    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['XIETONG_WEBHOOKS_METRICS_PORT']}/metrics"

    def start(self) -> None:
        before = self._ready_lines()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "webhooks", "run"],
                stdout=out,
                stderr=out,
                env={**os.environ, **self.env},
                cwd=REPO,
            )
        until_ready(self.process, self.log, lambda: self._ready_lines() > before, 60)

    def _ready_lines(self) -> int:
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count('"event": "webhooks_ready"')

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=20)

    def metric(self, name: str, department: str) -> float:
        text = httpx.get(self.metrics_url, timeout=5).text
        pattern = rf'^{name}\{{department="{re.escape(department)}"\}} (\S+)$'
        found = re.search(pattern, text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def departments(kafka: KafkaClients, stack_settings: Settings) -> Iterator[Onboarding]:
    """The departments' inboxes, with the services' grants on them (svc-webhooks reads)."""
    register_all(kafka.schema_registry())
    onboarding = Onboarding(kafka, stack_settings)
    for code in (*DEPARTMENTS, SIMULATED):
        onboarding.onboard(code)
    yield onboarding
    onboarding.offboard_all()


@pytest.fixture(scope="module")
def receivers(registry_url: str) -> Iterator[dict[str, Receiver]]:
    """Every department's receiver started and its endpoint registered (DOWN's points at
    a port nobody listens on)."""
    made = {
        OK: Receiver(always(200)),
        FLAKY: Receiver(failing_first(3), retry_after="0"),
        GATED: Receiver(gated),
        SLOW: Receiver(always(200, delay=3.0)),
        BULK: Receiver(always(200, delay=0.03)),
    }
    urls = {code: receiver.start() for code, receiver in made.items()}
    urls[DOWN] = f"http://127.0.0.1:{free_port()}/nobody"
    try:
        with transaction(session_factory(registry_url)) as session:
            for code, url in urls.items():
                secret = register_webhook(
                    session,
                    Actor.admin("test"),
                    code,
                    url,
                    allow_http=True,
                    cloudevents=code == FLAKY,
                ).secret
                if code in made:
                    made[code].secret = secret
        yield made
    finally:
        GATE.set()  # a receiver's threads never hang on it
        for receiver in made.values():
            receiver.stop()


@pytest.fixture(scope="module")
def worker(
    departments: Onboarding,
    receivers: dict[str, Receiver],
    registry_url: str,
    kafka: KafkaClients,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebhookProcess]:
    group = f"xietong.webhooks.{GROUP}"
    until_group_empty(kafka, group)  # a worker of an interrupted run has gone
    inboxes = [
        name
        for name in kafka.admin().list_topics(timeout=10).topics
        if DepartmentTopic.INBOX.code_of(name) is not None
    ]
    skip_backlog(kafka, group, inboxes)
    env = {
        "DATABASE_URL": registry_url,
        "XIETONG_WEBHOOKS_METRICS_PORT": str(free_port()),
        **{f"XIETONG_WEBHOOKS_{name}": value for name, value in WORKER_SETTINGS.items()},
    }
    process = WebhookProcess(tmp_path_factory.mktemp("webhooks") / "worker.log", env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


#: Push ids this run sent, by department: what its dead letters are picked by (the topic
#: keeps earlier runs' too).
SENT: dict[str, set[str]] = {}


def push_to_inbox(kafka: KafkaClients, department: str, count: int) -> list[dict[str, Any]]:
    """``count`` new 双告知 pushes in the department's inbox, in this order."""
    records = [
        push_states(make_uscc("91", "330106"), department, ["PUSHED"])[0] for _ in range(count)
    ]
    inbox = DepartmentTopic.inbox(department)
    produce(kafka, [Outgoing(PUSH, record["entity"]["uscc"], record, inbox) for record in records])
    SENT.setdefault(department, set()).update(record["push_id"] for record in records)
    return records


def webhook_ids_of(receiver: Receiver, records: list[dict[str, Any]]) -> list[str]:
    """The webhook-ids ``receiver`` accepted for ``records``, in the records' order."""
    by_push = {body["data"]["push_id"]: webhook_id for webhook_id, body in receiver.bodies.items()}
    return [by_push[record["push_id"]] for record in records if record["push_id"] in by_push]


def received(receiver: Receiver, records: list[dict[str, Any]], timeout: float = 60) -> list[str]:
    """Until the receiver has accepted every record; the push ids in arrival order."""

    def arrivals() -> list[str]:
        with receiver.lock:
            return [
                receiver.bodies[webhook_id]["data"]["push_id"] for webhook_id in receiver.accepted
            ]

    wanted = {record["push_id"] for record in records}
    return eventually(
        arrivals,
        lambda seen: wanted <= set(seen),
        timeout,
        lambda seen: f"received {len(wanted & set(seen))} of {len(wanted)}",
    )


def dead_letters_of(kafka: KafkaClients, department: str) -> list[dict[str, Any]]:
    """The dead letters of what this run sent to ``department``."""
    sent = SENT.get(department, set())
    return [
        row
        for row in dead_letters(KafkaClients(kafka.settings, "webhooks"))
        if row["department"] == department
        and json.loads(row["body"] or "{}").get("data", {}).get("push_id") in sent
    ]


# -- the tests ----------------------------------------------------------------------------------


def test_an_endpoint_that_answers_gets_every_item_once_in_inbox_order_signed(
    worker: WebhookProcess, receivers: dict[str, Receiver], kafka: KafkaClients
) -> None:
    records = push_to_inbox(kafka, OK, 5)
    receiver = receivers[OK]
    arrivals = received(receiver, records)
    assert arrivals == [record["push_id"] for record in records]
    assert receiver.bad_signatures == []
    body = next(iter(receiver.bodies.values()))
    assert body["type"] == "cn.gov.xietong.dualnotice.DualNoticePush"
    assert body["department"] == OK


def test_an_endpoint_failing_three_times_gets_the_item_once_accepted_and_the_next_after_it(
    worker: WebhookProcess, receivers: dict[str, Receiver], kafka: KafkaClients
) -> None:
    records = push_to_inbox(kafka, FLAKY, 3)
    receiver = receivers[FLAKY]
    arrivals = received(receiver, records)
    assert arrivals == [record["push_id"] for record in records]
    assert receiver.attempts >= 3 + len(records)
    assert worker.metric("xietong_webhooks_retries_total", FLAKY) >= 3
    event = receiver.bodies[receiver.ids()[-1]]
    assert event["specversion"] == "1.0" and event["id"] == receiver.ids()[-1]
    assert event["type"] == "cn.gov.xietong.dualnotice.DualNoticePush"
    assert dead_letters_of(kafka, FLAKY) == []


def test_a_timing_out_and_a_dead_endpoint_are_dead_lettered_with_status_and_reason(
    worker: WebhookProcess, receivers: dict[str, Receiver], kafka: KafkaClients
) -> None:
    [slow] = push_to_inbox(kafka, SLOW, 1)
    [down] = push_to_inbox(kafka, DOWN, 1)
    letters = eventually(
        lambda: {code: dead_letters_of(kafka, code) for code in (SLOW, DOWN)},
        lambda found: all(found.values()),
        60,
        lambda found: f"dead letters so far: {found}",
        every=1.0,
    )
    [timed_out], [refused] = letters[SLOW], letters[DOWN]
    assert timed_out["last_status"] is None and "timeout" in timed_out["reason"]
    assert "retries exhausted" in timed_out["reason"] and timed_out["attempts"] >= 2
    assert refused["last_status"] is None and "connection" in refused["reason"]
    assert slow["push_id"] in timed_out["body"] and down["push_id"] in refused["body"]
    assert worker.metric("xietong_webhooks_dead_letters_total", DOWN) >= 1
    assert worker.metric("xietong_webhooks_dead_letters_total", SLOW) >= 1


def test_a_dead_endpoint_does_not_delay_another_departments_deliveries(
    worker: WebhookProcess, receivers: dict[str, Receiver], kafka: KafkaClients
) -> None:
    gated_receiver, healthy = receivers[GATED], receivers[OK]
    [held] = push_to_inbox(kafka, GATED, 1)
    eventually(lambda: gated_receiver.attempts, lambda n: n >= 1, 30, lambda n: "never tried")
    later = push_to_inbox(kafka, OK, 3)  # written after the held item
    received(healthy, later)
    tried = gated_receiver.attempts
    # The barrier: the gated item is tried again after the healthy ones were delivered, so
    # it was still being retried (not given up) while they went through.
    eventually(lambda: gated_receiver.attempts, lambda n: n > tried, 30, lambda n: "not retried")
    assert gated_receiver.ids() == []
    GATE.set()
    next_one = push_to_inbox(kafka, GATED, 1)
    arrivals = received(gated_receiver, [held, *next_one])
    assert arrivals == [held["push_id"], next_one[0]["push_id"]]
    assert dead_letters_of(kafka, GATED) == []


def test_status_shows_each_endpoint_s_backlog_last_success_last_failure_and_dead_letters(
    worker: WebhookProcess, receivers: dict[str, Receiver], kafka: KafkaClients, registry_url: str
) -> None:
    eventually(lambda: dead_letters_of(kafka, DOWN), bool, 60, lambda found: "no dead letter yet")
    rows = {
        row.department: row
        for row in endpoint_status(
            KafkaClients(kafka.settings, "webhooks"),
            Endpoints(registry_url, 0),
            worker.metrics_url,
        )
    }
    assert set(rows) == set(DEPARTMENTS)
    assert rows[OK].last_success_at is not None and rows[OK].dead_letters == 0
    assert rows[OK].backlog == 0
    down = rows[DOWN]
    assert down.dead_letters >= 1 and "retries exhausted" in down.last_dead_letter_reason
    assert down.last_success_at is None and "connection" in down.last_failure_reason
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "webhooks",
            "status",
            "--json",
            "--metrics-url",
            worker.metrics_url,
        ],
        env={**os.environ, "DATABASE_URL": registry_url},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert {row["department"] for row in json.loads(shown.stdout)} == set(DEPARTMENTS)


def test_a_dead_letter_is_replayed_to_the_endpoint_registered_now(
    worker: WebhookProcess, receivers: dict[str, Receiver], kafka: KafkaClients, registry_url: str
) -> None:
    [letter, *_] = eventually(
        lambda: dead_letters_of(kafka, DOWN), bool, 60, lambda found: "no dead letter"
    )
    stand_in = Receiver(always(200))
    url = stand_in.start()
    try:
        with transaction(session_factory(registry_url)) as session:
            from registry.webhooks import list_webhooks, update_webhook

            [endpoint] = [
                row
                for row in list_webhooks(session, Actor.admin("test"))
                if row.department.code == DOWN
            ]
            update_webhook(session, Actor.admin("test"), endpoint.id, url=url, allow_http=True)
            stand_in.secret = endpoint.secret
        done = replay(
            KafkaClients(kafka.settings, "webhooks"),
            Endpoints(registry_url, 0),
            letter["dead_letter_id"],
            timeout=5,
        )
        assert done.delivered, done.answer
        assert stand_in.ids() == [letter["webhook_id"]]
        assert stand_in.bad_signatures == []
    finally:
        stand_in.stop()


def test_the_simulators_webhook_departments_receive_and_verify_their_inbox(
    worker: WebhookProcess, kafka: KafkaClients, registry_url: str
) -> None:
    simulated = WebhookReceivers([SIMULATED], registry_url)
    simulated.open()
    try:
        accepted = {"department": SIMULATED, "outcome": "accepted"}
        before = REGISTRY.get_sample_value("xietong_simulator_webhooks_received_total", accepted)
        push_to_inbox(kafka, SIMULATED, 2)
        eventually(
            lambda: (
                REGISTRY.get_sample_value("xietong_simulator_webhooks_received_total", accepted)
                or 0
            ),
            lambda count: count >= (before or 0) + 2,
            60,
            lambda count: f"{count} accepted",
        )
        forged = REGISTRY.get_sample_value(
            "xietong_simulator_webhooks_received_total",
            {"department": SIMULATED, "outcome": "bad_signature"},
        )
        assert not forged
    finally:
        simulated.close()
    with transaction(session_factory(registry_url)) as session:
        from registry.webhooks import list_webhooks

        codes = {row.department.code for row in list_webhooks(session, Actor.admin("test"))}
    assert SIMULATED not in codes


def test_the_workers_principal_reads_the_inboxes_and_nothing_else_and_writes_no_inbox(
    departments: Onboarding, kafka: KafkaClients
) -> None:
    webhooks = KafkaClients(kafka.settings, "webhooks")
    probe = f"xietong.webhooks.probe-{uuid.uuid4().hex[:8]}"
    push_to_inbox(kafka, OK, 1)
    read = first_message(webhooks, DepartmentTopic.inbox(OK), probe, 30)
    assert read is not None and read.error() is None
    refused = first_message(webhooks, "market.registrations", probe + "-canonical", 30)
    assert refused is not None and refused.error() is not None
    assert refused.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    outcome: list[KafkaError | None] = []
    producer = webhooks.producer()
    producer.produce(
        DepartmentTopic.inbox(OK), key=b"x", value=b"x", on_delivery=lambda e, m: outcome.append(e)
    )
    producer.flush(30)
    [error] = outcome
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_worker_killed_mid_stream_loses_nothing_and_repeats_only_uncommitted_deliveries(
    worker: WebhookProcess, receivers: dict[str, Receiver], kafka: KafkaClients
) -> None:
    receiver = receivers[BULK]
    records = push_to_inbox(kafka, BULK, 60)
    eventually(receiver.ids, lambda ids: len(ids) >= 10, 60, lambda ids: f"{len(ids)} arrived")
    worker.kill()
    before_kill = receiver.ids()
    assert len(before_kill) < len(records), "the kill came after the last delivery"
    worker.start()
    received(receiver, records, timeout=120)
    arrivals = receiver.ids()
    expected = set(webhook_ids_of(receiver, records))
    assert set(arrivals) == expected and len(expected) == len(records)
    # First arrivals are in inbox order; what came twice is what had not been committed:
    # a run of the last deliveries before the kill, sent again from the committed offset.
    first = list(dict.fromkeys(arrivals))
    assert first == webhook_ids_of(receiver, records)
    repeated = [
        webhook_id for webhook_id in arrivals[len(before_kill) :] if webhook_id in before_kill
    ]
    assert repeated == before_kill[len(before_kill) - len(repeated) :]
