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
assistance                ``xietong streams assistance``            :9470
sharing                   ``xietong streams sharing``               :9469
sink                      ``xietong sink run``                      :9466
credit-check              ``xietong credit-check serve``            :8420/metrics
inbox                     ``xietong inbox serve``                   :8430/metrics
workbench                 ``xietong workbench serve``               :8440/metrics
lag-exporter              ``xietong lag serve``                     :9460
webhooks                  ``xietong webhooks run``                  :9468
simulator                 ``xietong simulate`` (the connectors)     :9401
========================  ========================================  ==================

Each writes its log to ``.local/logs/run/<service>.log``. A service that exits is
started again (after 2, 4, 8 … s, at most 30). Every few seconds the supervisor reads
every service's ``/metrics`` and prints one summary: records in, dead letters, pushes,
claims, overdue, sanctions, hits, feedback, rows in the credit database, checks,
webhooks delivered and dead-lettered, records shared on conditions (有条件共享).
Ctrl-C (or SIGTERM, or SIGHUP when its terminal closes) stops the services (SIGTERM,
then SIGKILL after 30 s) and returns — whatever became of its output: a terminal gone or
a pipe whose reader quit (``make run | tee run.log``) only ends the printing. The
services also end when the supervisor is killed outright (:func:`die_with_parent`), and
the supervisor records its pid and theirs in ``.local/run/services/`` for ``make
status`` and ``make down`` (:mod:`deploy.local.stack.platform`). A new run stops what an
earlier one left running, and refuses to start beside one that still runs.
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
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import create_engine
from sqlalchemy import text as sql_text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from deploy.local.stack.platform import SUPERVISOR, PlatformServices
from xietong.logs import SERVICE_VARIABLE, json_line
from xietong.processes import die_with_parent, stop_processes
from xietong.settings import LOOPBACK, Settings, libpq_url

BACKOFF_LIMIT = 30.0
#: A service still running this long after its SIGTERM is killed (each stops in 8 s).
KILL_AFTER_SECONDS = 30.0
#: What stops the supervisor: Ctrl-C, ``kill``, and its terminal closing.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SupervisorError(RuntimeError):
    """Why ``xietong run`` does not start, in one line saying what to do."""


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

    @property
    def port(self) -> int:
        return httpx.URL(self.metrics_url).port or 80

    def start(self, environment: dict[str, str], platform: PlatformServices) -> None:
        """Start the process (from the supervisor's main thread: see die_with_parent)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            log.write(json_line(self.name, "service_starting", args=self.args).encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**environment, SERVICE_VARIABLE: self.name},
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them
                preexec_fn=partial(die_with_parent, os.getpid()),
            )
        self.started_at = time.monotonic()
        platform.record(self.name, self.process.pid, self.metrics_url, self.log)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def watch(
        self, environment: dict[str, str], platform: PlatformServices, say: Callable[[str], None]
    ) -> None:
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
            self.start(environment, platform)
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
        "assistance": ["streams", "assistance"],
        "sink": ["sink", "run"],
        "credit-check": ["credit-check", "serve"],
        "inbox": ["inbox", "serve"],
        "sharing": ["streams", "sharing"],
        "workbench": ["workbench", "serve"],
        "lag-exporter": ["lag", "serve"],
        "webhooks": ["webhooks", "run"],
        "simulator": ["simulate"],
    }
    return [
        Service(name, args[name], f"http://{LOOPBACK}:{ports[name]}/metrics", logs / f"{name}.log")
        for name in args
    ]


# -- the summary ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One line of the summary: a sum over samples of metrics, optionally filtered, for
    this run; and, where the credit database holds it, the total of all runs so far
    (``data``: a SQL expression of that count)."""

    label: str
    metrics: tuple[str, ...]
    where: dict[str, str] = field(default_factory=dict)
    data: str | None = None

    def value(self, samples: Iterable[tuple[str, dict[str, str], float]]) -> float:
        return sum(
            value
            for name, labels, value in samples
            if name in self.metrics and all(labels.get(k) == v for k, v in self.where.items())
        )


def _rows(*tables: str) -> str:
    return " + ".join(f"(SELECT count(*) FROM {table})" for table in tables)


SOURCE_TABLES = ("registrations", "licences", "penalties", "list_entries")
RESULT_TABLES = (
    "dual_notice_pushes",
    "dual_notice_push_states",
    "dual_notice_actions",
    "dual_notice_rejected_actions",
    "dual_notice_alerts",
    "dual_notice_applicant_notices",
    "dual_notice_closure_notices",
    "dual_notice_routing_failures",
    "sanction_notices",
    "licence_review_notices",
    "restriction_hits",
    "restriction_hit_states",
    "restriction_feedback",
    "lift_notices",
    "punishment_alerts",
    "serious_listing_proposals",
    "matter_events",
    "deliveries",
    "dead_letters",
    "assistance_request_states",
    "assistance_actions",
    "assistance_rejected_actions",
    "assistance_escalations",
    "assistance_ratings",
)
FIGURES = (
    Figure(
        "records in (published)",
        ("xietong_connector_records_published_total",),
        data=_rows(*SOURCE_TABLES),
    ),
    Figure("dead letters", ("xietong_connector_records_dead_lettered_total",)),
    Figure(
        "双告知 pushes",
        ("xietong_dual_notice_pushes_created_total",),
        data=_rows("dual_notice_pushes"),
    ),
    Figure(
        "claims",
        ("xietong_dual_notice_actions_applied_total",),
        {"action": "CLAIM"},
        data="SELECT count(*) FROM dual_notice_actions WHERE action = 'CLAIM'",
    ),
    Figure("overdue now", ("xietong_dual_notice_overdue_pushes",)),
    Figure("manual routing queue", ("xietong_dual_notice_manual_routing_queue",)),
    Figure(
        "sanction notices",
        ("xietong_joint_punishment_sanction_notices_total",),
        data=_rows("sanction_notices"),
    ),
    Figure("credit checks", ("xietong_credit_check_checks_total",), data=_rows("matter_events")),
    Figure(
        "restriction hits",
        ("xietong_joint_punishment_restriction_hits_total",),
        data=_rows("restriction_hits"),
    ),
    Figure(
        "feedback given",
        ("xietong_joint_punishment_feedback_given_total",),
        data=_rows("restriction_feedback"),
    ),
    Figure(
        "lift notices", ("xietong_joint_punishment_lift_notices_total",), data=_rows("lift_notices")
    ),
    Figure(
        "serious-list proposals",
        ("xietong_joint_punishment_serious_listing_proposals_total",),
        data=_rows("serious_listing_proposals"),
    ),
    Figure("assistance requests", ("xietong_assistance_requests_made_total",)),
    Figure(
        "assistance completed",
        ("xietong_assistance_actions_applied_total",),
        {"action": "COMPLETE"},
    ),
    Figure("assistance escalated (督查)", ("xietong_assistance_escalations_total",)),
    Figure(
        "rows in the credit database",
        ("xietong_sink_rows_written_total",),
        data=_rows(*SOURCE_TABLES, *RESULT_TABLES),
    ),
    Figure("inbox API requests", ("xietong_inbox_requests_total",)),
    Figure("inbox API actions", ("xietong_inbox_actions_produced_total",)),
    Figure("inbox API produce failures", ("xietong_inbox_produce_failures_total",)),
    Figure(
        "webhooks delivered",
        ("xietong_webhooks_deliveries_total",),
        {"outcome": "delivered"},
    ),
    Figure("webhook dead letters", ("xietong_webhooks_dead_letters_total",)),
    Figure("records shared on conditions", ("xietong_sharing_records_shared_total",)),
    Figure("workbench sign-ins", ("xietong_workbench_sign_ins_total",), {"outcome": "ok"}),
    Figure("workbench actions", ("xietong_workbench_actions_total",)),
)


class DataTotals:
    """The totals the credit database holds, for the figures that have one: what the
    platform has done over every run so far, where the counters start again at each."""

    def __init__(self, url: str, figures: Iterable[Figure] = FIGURES) -> None:
        self.figures = [figure for figure in figures if figure.data]
        self.query = sql_text(
            "SELECT "
            + ", ".join(f"({figure.data}) AS t{i}" for i, figure in enumerate(self.figures))
        )
        self.engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={"connect_timeout": 3, "options": "-c statement_timeout=3000"},
        )

    def read(self) -> dict[str, int]:
        """Each figure's total by label; none while the database does not answer (or the
        sink has not yet made its tables)."""
        try:
            with self.engine.connect() as connection:
                row = connection.execute(self.query).one()
        except SQLAlchemyError:
            return {}
        return {figure.label: int(total) for figure, total in zip(self.figures, row, strict=True)}

    def close(self) -> None:
        self.engine.dispose()


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


def summary(
    running: list[Service], client: httpx.Client, totals: dict[str, int] | None = None
) -> Table:
    samples: list[tuple[str, dict[str, str], float]] = []
    table = Table(
        title="Xietong — the platform running on the local stack",
        caption="this run: the services' counters since they started; in all: the credit"
        " database's totals over every run",
        expand=False,
    )
    table.add_column("service")
    table.add_column("state")
    table.add_column("figure")
    table.add_column("this run", justify="right")
    table.add_column("in all", justify="right")  # the credit database's totals
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
    totals = totals or {}
    figures = [
        (f.label, f"{f.value(samples):,.0f}", f"{totals[f.label]:,}" if f.label in totals else "")
        for f in FIGURES
    ]
    for index in range(max(len(states), len(figures))):
        name, state = states[index] if index < len(states) else ("", "")
        label, value, total = figures[index] if index < len(figures) else ("", "", "")
        table.add_row(name, state, label, value, total)
    return table


def where_to_look(settings: Settings, running: list[Service]) -> str:
    from registry.settings import get_registry_settings

    registry = get_registry_settings()
    url = {service.name: service.metrics_url.removesuffix("/metrics") for service in running}
    lines = [
        f"Prometheus alerts: http://{LOOPBACK}:{settings.prometheus_port}/classic/alerts",
        f"registry API docs: http://{LOOPBACK}:{registry.port}/docs",
        f"credit-check API docs: {url['credit-check']}/docs",
        f"inbox API docs: {url['inbox']}/v1/docs",
        f"clerk's workbench: {url['workbench']}/ (sign in with"
        " a department's registry token: xietong registry issue-token <department>)",
        "metrics: " + "  ".join(s.metrics_url for s in running),
        f"auditors: {_psql(settings)}, then SET ROLE xietong_auditor;"
        " the views are auditor.* (connectors/sink/COOKBOOK.md has the queries)",
        f"logs: {running[0].log.parent}/<service>.log",
        "Ctrl-C stops everything; `make run` again continues where it stopped.",
    ]
    return "\n".join(lines)


def _psql(settings: Settings) -> str:
    """The auditor's psql command, as it can be copied: libpq's URL, never the password
    (the local stack's is in its password file, which the line names)."""
    line = f"psql '{libpq_url(settings.credit_database_url)}'"
    from xietong.settings import CREDIT_DATABASE

    if settings.credit_database_url == settings.local_database_url(CREDIT_DATABASE):
        from deploy.local.stack.postgres import pgpass_file

        line = f"PGPASSFILE={pgpass_file(settings)} {line}"
    return line


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich's own exits the process (status 1) from inside a print: here the write
        # fails like any other, and Output gives up on the pipe while the run goes on.
        raise BrokenPipeError


class Output:
    """The supervisor's terminal or pipe, written to as long as it can be.

    A write fails once the terminal is gone (EIO) or the pipe's reader quit (EPIPE, as
    under ``make run | tee run.log`` after Ctrl-C). From then on nothing more is written,
    and stdout and stderr are pointed at ``/dev/null`` so that Python's flush at exit
    cannot fail either: losing the output must never keep the services running.
    """

    def __init__(self) -> None:
        self.console = _Console()
        self.live = (
            Live(console=self.console, auto_refresh=False) if self.console.is_terminal else None
        )
        self.lost = False

    def _attempt(self, write: Callable[[], Any]) -> None:
        if self.lost:
            return
        try:
            write()
        except OSError:
            self.lost = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            for stream in (sys.__stdout__, sys.__stderr__):
                if stream is not None:
                    os.dup2(devnull, stream.fileno())
            os.close(devnull)

    def say(self, line: str) -> None:
        self._attempt(lambda: self.console.print(line, highlight=False, soft_wrap=True))

    def start(self) -> None:
        if self.live:
            self._attempt(self.live.start)

    def show(self, table: Table) -> None:
        if self.live:
            live = self.live
            self._attempt(lambda: live.update(table, refresh=True))
        else:
            self._attempt(lambda: self.console.print(table))

    def end(self, table: Table | None) -> None:
        if self.live:
            self._attempt(self.live.stop)
        if table is not None:
            self._attempt(lambda: self.console.print(table))


def clear_leftovers(
    platform: PlatformServices, running: list[Service], say: Callable[[str], None]
) -> None:
    """Stop the services an earlier run left behind; refuse to run beside a live one, or
    while another process holds a service's port."""
    for entry in platform.running():
        if entry.name == SUPERVISOR:
            raise SupervisorError(
                f"xietong run is running already (pid {entry.process.pid}): stop it with"
                " Ctrl-C in its terminal, or `make down`"
            )
    left = platform.running()
    for entry in left:
        platform.forget(entry.name)
    stop_processes([entry.process for entry in left], KILL_AFTER_SECONDS)
    for entry in left:
        say(f"stopped {entry.name} (pid {entry.process.pid}), left running by an earlier run")
    listening = {
        connection.laddr.port: connection.pid
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN
        and isinstance(connection.laddr, tuple)
        and connection.laddr
    }
    for service in running:
        if service.port in listening:
            raise SupervisorError(
                f"port {service.port} of {service.name} is taken by"
                f" {_describe(listening[service.port])}: stop it, or move {service.name} to"
                " another port in its settings"
            )


def _describe(pid: int | None) -> str:
    """A process for a message: its pid and command line, as far as they can be known."""
    try:
        return (
            f"pid {pid} ({' '.join(psutil.Process(pid).cmdline())})" if pid else "another process"
        )
    except psutil.Error:
        return f"pid {pid}"


def run(settings: Settings, duration: float | None = None, interval: float = 5.0) -> int:
    """Start the services, show the summary until a stop signal (or ``duration`` s),
    stop them."""
    output = Output()
    logs = settings.home / "logs" / "run"
    running = services(settings, logs)
    platform = PlatformServices(settings)
    environment = dict(os.environ)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    clear_leftovers(platform, running, output.say)
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    client = httpx.Client(timeout=2.0)
    totals = DataTotals(settings.credit_database_url)
    final = None
    try:
        platform.record(SUPERVISOR, os.getpid())
        for service in running:
            service.start(environment, platform)
            output.say(f"started {service.name} (log: {service.log})")
        output.say(where_to_look(settings, running))
        began = time.monotonic()
        last_print = 0.0
        output.start()
        while not stopping:
            if duration is not None and time.monotonic() - began > duration:
                break
            for service in running:
                service.watch(environment, platform, output.say)
            if time.monotonic() - last_print >= interval:
                final = summary(running, client, totals.read())
                output.show(final)
                last_print = time.monotonic()
            time.sleep(0.5)
    finally:
        # Stop first, report after: the report may find no one to read it.
        for service in running:
            service.stop()
        deadline = time.monotonic() + KILL_AFTER_SECONDS
        for service in running:
            service.wait(deadline)
            platform.forget(service.name)
        platform.forget(SUPERVISOR)
        client.close()
        totals.close()
        output.end(final)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    output.say("stopped; `make run` continues from here.")
    return 0
