"""Three brokers under fault (``make chaos``): the platform on a local Kafka of three
KRaft nodes (replication 3, min.insync.replicas 2, producers acks=all and idempotent),
at a steady load from the department simulator through the connectors, with two
workers of each processor and the sink; then one broker killed outright and brought
back, a rolling restart of all three, a worker of each processor killed, PostgreSQL
restarted. Afterwards the credit database holds every input once (by event id, against
the topics), every push reached its inbox, no consumer group lags, and the figures —
events in and out, duplicates, losses, the longest pause in the output — are written to
``<XIETONG_HOME>/chaos/figures.json`` and printed.

Run by ``make chaos`` (``pytest --chaos``); ``make test`` skips it, for the time it
takes on two cores.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from connectors.sink.tables import TABLES_BY_TOPIC
from deploy.local.stack.kafka import KafkaBroker
from deploy.local.stack.postgres import PostgresServer
from tests.conftest import SESSION_MARK
from tests.kafka_helpers import ReadMessage, TopicWindow
from tests.stream_worker import free_port
from xietong.kafka import KafkaClients, local_credentials_file
from xietong.settings import Settings
from xietong.topics import STREAMS_INTERNAL_TOPIC_PREFIX

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.usefixtures("secured"),
    pytest.mark.timeout(2400),  # minutes of faults on two cores
]

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("market.registrations", "permits.licences", "enforcement.penalties")
SOURCES += ("credit.list-entries",)
PUSHES = "dualnotice.pushes"


def free_base() -> int:
    """A first port whose node ports (+0, +1 … +21) are all free, below the range the
    kernel picks outgoing connections' ports from (which could take one meanwhile)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    chooser = random.Random()
    for _ in range(200):
        base = chooser.randrange(low // 2, low - 30)
        ports = [base + 10 * n + d for n in range(3) for d in (0, 1)]
        if all(_free(port) for port in ports):
            return base
    raise AssertionError("no free ports for three brokers")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Process:
    name: str
    args: list[str]
    environment: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.environment, "XIETONG_SERVICE": self.name},
                cwd=ROOT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Platform:
    settings: Settings
    environment: dict[str, str]
    nodes: list[KafkaBroker]
    credit_url: str
    home: Path
    processes: dict[str, Process] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def kafka(self) -> KafkaClients:
        return KafkaClients(self.settings, "admin")

    def say(self, what: str) -> None:
        self.events.append((time.time(), what))
        print(f"[chaos] {time.strftime('%H:%M:%S')} {what}", flush=True)

    def stored(self) -> int:
        """Rows the sink has stored so far (inputs and pushes)."""
        conn = psycopg2.connect(self.credit_url.replace("+psycopg2", ""), connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT (SELECT count(*) FROM registrations) + (SELECT count(*) FROM"
                    " penalties) + (SELECT count(*) FROM dual_notice_pushes)"
                )
                (total,) = cursor.fetchone()
        finally:
            conn.close()
        return int(total)

    def flowing(self, more: int = 50, timeout: float = 180) -> None:
        """Wait until the sink has stored ``more`` new rows: the barrier that says the
        platform goes on (never a sleep)."""
        start, deadline = self._stored_or_none(), time.monotonic() + timeout
        while True:
            now = self._stored_or_none()
            if start is not None and now is not None and now >= start + more:
                return
            start = start if start is not None else now
            assert time.monotonic() < deadline, f"no flow for {timeout:.0f} s; {self.alive()}"
            time.sleep(0.5)

    def _stored_or_none(self) -> int | None:
        try:
            return self.stored()
        except psycopg2.OperationalError:
            return None  # PostgreSQL restarting

    def alive(self) -> dict[str, bool]:
        return {name: p.alive for name, p in self.processes.items()}

    def fully_replicated(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                topics = self.kafka.admin().list_topics(timeout=10).topics
                short = [
                    f"{name}/{p}"
                    for name, topic in topics.items()
                    for p, partition in topic.partitions.items()
                    if len(partition.isrs) < 3
                ]
            except Exception as error:
                short = [str(error)]
            if not short:
                return
            assert time.monotonic() < deadline, f"under-replicated after {timeout} s: {short[:5]}"
            time.sleep(1)


def run_step(environment: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"xietong {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def platform(
    stack_settings: Settings,
    registry_databases: Callable[[], str],
    credit_databases: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    # kept for a person to read: the nodes' and the services' logs, and the figures
    home = stack_settings.home / "chaos" / time.strftime("run-%Y%m%d-%H%M%S")
    home.mkdir(parents=True)
    base = free_base()
    credit_url = credit_databases()
    environment = {
        **os.environ,
        **stack_settings.endpoints(),
        "XIETONG_HOME": str(home),
        "XIETONG_KAFKA_BROKERS": "3",
        "XIETONG_KAFKA_PORT": str(base),
        "XIETONG_KAFKA_CONTROLLER_PORT": str(base + 1),
        "XIETONG_KAFKA_TLS_PORT": "0",
        "DATABASE_URL": registry_databases(),
        "CREDIT_DATABASE_URL": credit_url,
        "XIETONG_SIMULATOR_EXPORTS_DIR": str(home / "exports"),
        "XIETONG_SIMULATOR_TICK_SECONDS": "2",
        "XIETONG_SIMULATOR_RECENT_RECORDS": "40",
        "XIETONG_SIMULATOR_HISTORY_RECORDS": "40",
        "XIETONG_SIMULATOR_HTTP_SHARE": "0",
        "XIETONG_SIMULATOR_CHECK_SHARE": "0",
        "XIETONG_SIMULATOR_WEBHOOK_DEPARTMENTS": "[]",
        "XIETONG_SIMULATOR_MAX_DELAY_SECONDS": "2",
    }
    environment.pop("KAFKA_BOOTSTRAP_SERVERS")  # the three nodes' own
    settings = Settings(
        home=home,
        kafka_brokers=3,
        kafka_port=base,
        kafka_controller_port=base + 1,
        kafka_tls_port=0,
        cache_dir=stack_settings.cache_dir,
        schema_registry_url_env=stack_settings.schema_registry_url,
    )
    nodes = [KafkaBroker(settings, node) for node in (1, 2, 3)]
    launches = [node.launch() for node in nodes]
    for node, launch in zip(nodes, launches, strict=True):
        assert not isinstance(launch, str)
        node.finish_start(launch)
    running = Platform(settings, environment, nodes, credit_url, home)
    try:
        credentials = home / "exports" / "credentials.json"
        for step in (
            ("topics", "apply"),
            ("schemas", "register"),
            ("registry", "migrate"),
            ("registry", "load-catalog"),
            ("registry", "onboard", "--credentials", str(credentials)),
            ("registry", "reconcile-acls"),
            ("registry", "publish"),
        ):
            run_step(environment, *step)
        yield running
    finally:
        for process in running.processes.values():
            process.stop()
        for node in nodes:
            node.stop()


def start(platform: Platform, name: str, args: list[str], **env: str) -> Process:
    process = Process(
        name, args, {**platform.environment, **env}, platform.home / "logs" / f"{name}.log"
    )
    process.log.parent.mkdir(parents=True, exist_ok=True)
    platform.processes[name] = process
    process.start()
    return process


def lagging_groups(kafka: KafkaClients) -> dict[str, int]:
    """The processors' consumer groups with their total lag (0: caught up)."""
    admin = kafka.admin()
    consumer = kafka.consumer(f"test-lag-{time.monotonic_ns()}")
    try:
        groups = [
            g.group_id
            for g in admin.list_consumer_groups().result(30).valid
            if g.group_id.startswith(STREAMS_INTERNAL_TOPIC_PREFIX)
        ]
        lag: dict[str, int] = {}
        for group in groups:
            [offsets] = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)]
            ).values()
            total = 0
            for partition in offsets.result(30).topic_partitions:
                if partition.offset < 0:
                    continue
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(partition.topic, partition.partition), timeout=10
                )
                total += max(high - partition.offset, 0)
            lag[group] = total
        return lag
    finally:
        consumer.close()


def read_all(kafka: KafkaClients, topic: str) -> list[ReadMessage]:
    window = TopicWindow(kafka, topic)
    window.start = {}
    return window.read()


def test_three_brokers_a_rolling_restart_killed_workers_and_a_database_restart_lose_nothing(
    platform: Platform, stack_settings: Settings
) -> None:
    passwords = json.loads(local_credentials_file(platform.settings).read_text())
    for worker in (1, 2):
        for processor in ("dual-notice", "joint-punishment"):
            prefix = "DUAL_NOTICE" if processor == "dual-notice" else "JOINT_PUNISHMENT"
            name = f"{processor}-{worker}"
            start(
                platform,
                name,
                ["streams", processor],
                # each worker its own RocksDB, as on hosts (or pods) of their own
                XIETONG_HOME=str(platform.home / "workers" / name),
                XIETONG_KAFKA_USERNAME="svc-streams",
                XIETONG_KAFKA_PASSWORD=passwords["svc-streams"],
                **{f"XIETONG_{prefix}_METRICS_PORT": str(free_port())},
            )
    start(platform, "sink", ["sink", "run"], XIETONG_SINK_METRICS_PORT=str(free_port()))
    start(platform, "simulator", ["simulate"], XIETONG_SIMULATOR_METRICS_PORT=str(free_port()))
    platform.say("load started")
    platform.flowing(200, timeout=300)

    # 1. one broker killed outright, then back
    victim = platform.nodes[1]
    pid = victim.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    platform.say(f"{victim.name} killed (SIGKILL)")
    platform.flowing()
    victim.start()
    platform.say(f"{victim.name} back")
    platform.fully_replicated()

    # 2. a rolling restart of all three
    for node in platform.nodes:
        node.stop()
        platform.say(f"{node.name} stopped (rolling)")
        platform.flowing()
        node.start()
        platform.say(f"{node.name} started (rolling)")
        platform.fully_replicated()
    platform.flowing()

    # 3. a worker of each processor killed, and started again as a supervisor would
    for name in ("dual-notice-1", "joint-punishment-1"):
        platform.processes[name].kill()
        platform.say(f"{name} killed (SIGKILL)")
    platform.flowing()
    for name in ("dual-notice-1", "joint-punishment-1"):
        platform.processes[name].start()
        platform.say(f"{name} started again")
    platform.flowing()

    # 4. PostgreSQL restarted under the sink
    postgres = PostgresServer(stack_settings)
    postgres.stop()
    platform.say("PostgreSQL stopped")
    # started again as an operator would, by `xietong stack up`: the stack's server, not
    # this session's, it outlives the session as it did before
    operator = {k: v for k, v in os.environ.items() if k != SESSION_MARK}
    run_step(operator, "stack", "up")
    assert postgres.pid() is not None
    platform.say("PostgreSQL started")
    platform.flowing()
    assert platform.alive() == {name: True for name in platform.processes}, platform.alive()

    # the load ends; everything must drain
    platform.processes["simulator"].stop()
    platform.say("load stopped")
    kafka = platform.kafka
    deadline = time.monotonic() + 300
    while any(lagging_groups(kafka).values()):
        assert time.monotonic() < deadline, lagging_groups(kafka)
        time.sleep(2)
    platform.say("processors caught up")
    ends = sink_ends(kafka, (*SOURCES, PUSHES))
    caught_up(platform.credit_url, ends)
    platform.say("sink caught up")

    figures = measure(platform, kafka)
    out = stack_settings.home / "chaos" / "figures.json"
    (platform.home / "figures.json").write_text(json.dumps(figures, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    assert figures["losses"] == 0, figures
    assert figures["pushes_not_delivered"] == 0, figures
    assert figures["events_in"] > 0 and figures["pushes_out"] > 0
    sink_log = platform.processes["sink"].log.read_text(errors="replace")
    assert '"event": "sink_database_reconnected"' in sink_log


def sink_ends(kafka: KafkaClients, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
    consumer = kafka.consumer(f"test-ends-{time.monotonic_ns()}")
    try:
        ends = {}
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            for p in metadata.partitions:
                ends[(topic, p)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10
                )[1]
        return ends
    finally:
        consumer.close()


def caught_up(url: str, ends: dict[tuple[str, int], int], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg2.connect(url.replace("+psycopg2", "")) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT topic, partition, next_offset FROM sink_offsets")
            have = {(t, p): o for t, p, o in cursor.fetchall()}
        conn.close()
        behind = {k: (have.get(k, 0), v) for k, v in ends.items() if have.get(k, 0) < v}
        if not behind:
            return
        assert time.monotonic() < deadline, f"the sink did not catch up: {behind}"
        time.sleep(1)


def measure(platform: Platform, kafka: KafkaClients) -> dict[str, Any]:
    conn = psycopg2.connect(platform.credit_url.replace("+psycopg2", ""))
    figures: dict[str, Any] = {"faults": [what for _, what in platform.events]}
    events_in = duplicates_in = losses = 0
    with conn.cursor() as cursor:
        for topic in SOURCES:
            mapping = TABLES_BY_TOPIC[topic]
            produced = [mapping.event_id(m.value) for m in read_all(kafka, topic)]
            cursor.execute(
                f"SELECT event_id FROM {mapping.table} WHERE source_topic = %s", (topic,)
            )
            stored = {row[0] for row in cursor.fetchall()}
            events_in += len(set(produced))
            duplicates_in += len(produced) - len(set(produced))
            losses += len(set(produced) - stored)
        # every state of every push (dual_notice_pushes holds each push's latest only)
        pushes = read_all(kafka, PUSHES)
        push_ids = [TABLES_BY_TOPIC[PUSHES].event_id(m.value) for m in pushes]
        cursor.execute("SELECT event_id FROM dual_notice_push_states")
        stored_pushes = {row[0] for row in cursor.fetchall()}
        # a push reached its department when its inbox holds it (in any of its states)
        cursor.execute("SELECT DISTINCT subject_id FROM deliveries")
        delivered = {row[0] for row in cursor.fetchall()}
    conn.close()
    times = sorted(m.timestamp for m in pushes if m.timestamp > 0)
    pauses = [b - a for a, b in itertools.pairwise(times)]
    figures.update(
        events_in=events_in,
        duplicate_inputs_in_topics=duplicates_in,
        losses=losses + len(set(push_ids) - stored_pushes),
        pushes_out=len({m.value["push_id"] for m in pushes}),
        push_states_out=len(set(push_ids)),
        duplicate_push_states_in_topic=len(push_ids) - len(set(push_ids)),
        pushes_not_delivered=len({m.value["push_id"] for m in pushes} - delivered),
        longest_pause_in_pushes_seconds=round(max(pauses, default=0) / 1000, 1),
    )
    return figures
