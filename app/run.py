"""``xietong run``: the whole platform on the local stack, with a live summary.

``make run`` prepares the stack (Kafka, the schema registry, PostgreSQL, Prometheus;
topics, schemas, the sample province in the registry, ACLs) and then calls this. It
starts every platform service as a process of its own, as a deployment would:

========================  ========================================  ==================
service                   command                                   metrics
========================  ========================================  ==================
registry                  ``xietong registry serve``                :8410/metrics
dual-notice               ``xietong streams dual-notice``           :9465
joint-punishment          ``xietong streams joint-punishment``      :9467
sink                      ``xietong sink run``                      :9466
credit-check              ``xietong credit-check serve``            :8420/metrics
lag-exporter              ``xietong lag serve``                     :9460
simulator                 ``xietong simulate`` (the connectors)     :9401
========================  ========================================  ==================

Each writes its log to ``.local/logs/run/<service>.log``. A service that exits is
started again (after 2, 4, 8 … s, at most 30). Every few seconds the supervisor reads
every service's ``/metrics`` and prints one summary: records in, dead letters, pushes,
claims, overdue, sanctions, hits, feedback, rows in the credit database, checks.
Ctrl-C (or SIGTERM) stops the services (SIGTERM, then SIGKILL after 30 s) and returns.
Everything keeps its position — connector offsets, the processors' committed offsets
and tables, the sink's offsets in the credit database, the simulator's ticks — so
running it again continues where it stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from xietong.settings import LOOPBACK, Settings

BACKOFF_LIMIT = 30.0


@dataclass
class Service:
    """One platform process under the supervisor."""

    name: str
    args: list[str]
    metrics_url: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    last_exit: int | None = None

    def start(self, environment: dict[str, str]) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them
            )
        self.started_at = time.monotonic()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def watch(self, environment: dict[str, str], say: Callable[[str], None]) -> None:
        """Start it again if it exited (with a growing pause)."""
        if self.process is None or self.running:
            return
        now = time.monotonic()
        if self.next_start == 0.0:
            self.last_exit = self.process.returncode
            pause = min(BACKOFF_LIMIT, 2.0 ** (self.restarts + 1))
            self.next_start = now + pause
            say(
                f"{self.name} exited with {self.last_exit}; starting it again in {pause:.0f} s"
                f" (log: {self.log})"
            )
            return
        if now >= self.next_start:
            self.restarts += 1
            self.next_start = 0.0
            self.start(environment)
            if now - self.started_at > 300:
                self.restarts = 0  # it ran a good while: the next exit pauses briefly again

    def stop(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def services(settings: Settings, logs: Path) -> list[Service]:
    """The platform's services, with their metrics endpoints from the settings."""
    from app.simulator import SimulatorSettings
    from deploy.local.stack.prometheus import local_ports

    ports = {**local_ports(settings), "simulator": SimulatorSettings().metrics_port}
    args = {
        "registry": ["registry", "serve"],
        "dual-notice": ["streams", "dual-notice"],
        "joint-punishment": ["streams", "joint-punishment"],
        "sink": ["sink", "run"],
        "credit-check": ["credit-check", "serve"],
        "lag-exporter": ["lag", "serve"],
        "simulator": ["simulate"],
    }
    return [
        Service(name, args[name], f"http://{LOOPBACK}:{ports[name]}/metrics", logs / f"{name}.log")
        for name in args
    ]


# -- the summary ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One line of the summary: a sum over samples of metrics, optionally filtered."""

    label: str
    metrics: tuple[str, ...]
    where: dict[str, str] = field(default_factory=dict)

    def value(self, samples: Iterable[tuple[str, dict[str, str], float]]) -> float:
        return sum(
            value
            for name, labels, value in samples
            if name in self.metrics and all(labels.get(k) == v for k, v in self.where.items())
        )


FIGURES = (
    Figure("records in (published)", ("xietong_connector_records_published_total",)),
    Figure("dead letters", ("xietong_connector_records_dead_lettered_total",)),
    Figure("双告知 pushes", ("xietong_dual_notice_pushes_created_total",)),
    Figure("claims", ("xietong_dual_notice_actions_applied_total",), {"action": "CLAIM"}),
    Figure("overdue now", ("xietong_dual_notice_overdue_pushes",)),
    Figure("manual routing queue", ("xietong_dual_notice_manual_routing_queue",)),
    Figure("sanction notices", ("xietong_joint_punishment_sanction_notices_total",)),
    Figure("credit checks", ("xietong_credit_check_checks_total",)),
    Figure("restriction hits", ("xietong_joint_punishment_restriction_hits_total",)),
    Figure("feedback given", ("xietong_joint_punishment_feedback_given_total",)),
    Figure("lift notices", ("xietong_joint_punishment_lift_notices_total",)),
    Figure("rows in the credit database", ("xietong_sink_rows_written_total",)),
)


def scrape(client: httpx.Client, url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of one /metrics endpoint; none while it does not answer."""
    try:
        text = client.get(url).text
    except httpx.HTTPError:
        return []
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def summary(running: list[Service], client: httpx.Client) -> Table:
    samples: list[tuple[str, dict[str, str], float]] = []
    table = Table(title="Xietong — the platform running on the local stack", expand=False)
    table.add_column("service")
    table.add_column("state")
    table.add_column("figure")
    table.add_column("value", justify="right")
    states = []
    for service in running:
        scraped = scrape(client, service.metrics_url) if service.running else []
        samples.extend(scraped)
        if not service.running:
            state = "[red]down[/red]"
        elif scraped:
            state = "[green]up[/green]"
        else:
            state = "[yellow]starting[/yellow]"
        if service.restarts:
            state += f" ({service.restarts} restarts)"
        states.append((service.name, state))
    figures = [(f.label, f"{f.value(samples):,.0f}") for f in FIGURES]
    for index in range(max(len(states), len(figures))):
        name, state = states[index] if index < len(states) else ("", "")
        label, value = figures[index] if index < len(figures) else ("", "")
        table.add_row(name, state, label, value)
    return table


def where_to_look(settings: Settings, running: list[Service]) -> str:
    from registry.settings import get_registry_settings

    registry = get_registry_settings()
    lines = [
        f"Prometheus: http://{LOOPBACK}:{settings.prometheus_port} (alerts under /alerts)",
        f"registry API docs: http://{LOOPBACK}:{registry.port}/docs",
        f"credit-check API docs: {running[4].metrics_url.removesuffix('/metrics')}/docs",
        "metrics: " + "  ".join(s.metrics_url for s in running),
        f"auditors: psql '{settings.credit_database_url}', then SET ROLE xietong_auditor;"
        " the views are auditor.* (connectors/sink/COOKBOOK.md has the queries)",
        f"logs: {running[0].log.parent}/<service>.log",
        "Ctrl-C stops everything; `make run` again continues where it stopped.",
    ]
    return "\n".join(lines)


def run(settings: Settings, duration: float | None = None, interval: float = 5.0) -> int:
    """Start the services, show the summary until Ctrl-C (or ``duration`` s), stop them."""
    console = Console()
    logs = settings.home / "logs" / "run"
    running = services(settings, logs)
    environment = dict(os.environ)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    for service in running:
        service.start(environment)
        console.print(f"started {service.name} (log: {service.log})", highlight=False)
    console.print(where_to_look(settings, running), highlight=False)
    began = time.monotonic()
    client = httpx.Client(timeout=2.0)
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    last_print = 0.0
    try:
        if live:
            live.start()
        while not stopping:
            if duration is not None and time.monotonic() - began > duration:
                break
            for service in running:
                service.watch(environment, lambda line: console.print(line, highlight=False))
            if time.monotonic() - last_print >= interval:
                table = summary(running, client)
                if live:
                    live.update(table, refresh=True)
                else:
                    console.print(table)
                last_print = time.monotonic()
            time.sleep(0.5)
        final = summary(running, client)
    finally:
        if live:
            live.stop()
        console.print("stopping …", highlight=False)
        for service in running:
            service.stop()
        deadline = time.monotonic() + 30
        for service in running:
            service.wait(deadline)
        client.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(final)
    console.print("stopped; `make run` continues from here.", highlight=False)
    return 0
