"""What every locally run service of the stack has in common.

A :class:`LocalService` is one long-running process on loopback: it is prepared once
(artifacts resolved, data directory initialised), started detached in its own session
with its output in ``.local/logs/<name>.log``, tracked by a pid file in
``.local/run/``, probed until it answers, and stopped by signal. Every step is
idempotent, so ``make up`` twice does nothing the second time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from xietong.settings import LOOPBACK, Settings


class StackError(RuntimeError):
    """A problem the user can act on; its message is one line saying what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | stopped | external | unhealthy
    endpoint: str
    pid: int | None = None
    rss_mib: float | None = None
    log: Path | None = None


@dataclass(frozen=True)
class Launch:
    """A process just started: where its log stood, and when."""

    log_start: int
    started: float
    already_running: bool = False


def port_is_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def require_tool(tool: str, hint: str) -> str:
    """The path of ``tool`` on PATH, or a :class:`StackError` saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"'{tool}' was not found on PATH: {hint}")
    return path


def wait_until(probe: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Call ``probe`` until it returns True or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval)
    return probe()


def last_error(path: Path, since: int = 0) -> str:
    """The most telling line a failed start wrote to its log (from byte ``since`` on).

    For a Java service that is the deepest ``Caused by:`` (the root cause); otherwise
    the last line that reports an error, or simply the last line.
    """
    if not path.exists():
        return "(no log written)"
    with path.open("rb") as handle:
        handle.seek(max(since, path.stat().st_size - 262144))
        lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines()]
    causes = [line for line in lines if line.startswith("Caused by:")]
    errors = [line for line in lines if any(word in line for word in ("ERROR", "FATAL", "Error:"))]
    others = [line for line in lines if line and not line.startswith(("at ", "..."))]
    return ((causes or errors or others or ["(empty log)"])[-1])[:400]


class LocalService(ABC):
    """One process of the local stack.

    Subclasses say how to prepare the service (:meth:`prepare`), the command that runs
    it (:meth:`command`) and how to tell it is ready (:meth:`is_ready`). This base class
    owns the lifecycle: start detached, wait for readiness, report, stop.
    """

    name: str
    port_setting: str  # the XIETONG_* variable that moves this service's port
    start_timeout: float = 120.0
    stop_signal: signal.Signals = signal.SIGTERM
    #: Launched with the services next to it that say the same, before any is waited
    #: for (the nodes of a cluster that answer only together).
    starts_together: bool = False
    #: Started only when asked for (``xietong stack up --with-<name>``); the stack is up
    #: without it.
    optional: bool = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- what a subclass provides -----------------------------------------------------
    @property
    @abstractmethod
    def port(self) -> int:
        """The loopback port clients connect to."""

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """What clients are given (bootstrap servers, URL)."""

    @property
    def endpoints(self) -> str:
        """The endpoint, and any other the service offers, for people to read."""
        return self.endpoint

    @abstractmethod
    def prepare(self) -> None:
        """Resolve artifacts and initialise data; idempotent, may take long the first time."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the service in the foreground."""

    @abstractmethod
    def is_ready(self) -> bool:
        """True when the service answers requests."""

    def environment(self) -> dict[str, str]:
        """Environment of the service process."""
        return dict(os.environ)

    def run_as_user(self) -> str | None:
        """A system user to run as when started by root, or None to run as the caller."""
        return None

    def after_start(self) -> None:  # noqa: B027 - an optional hook
        """Called once the service is ready (create databases, and so on)."""

    @property
    def is_external(self) -> bool:
        """True when the settings point at a service that is not run locally."""
        return False

    # -- paths ------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.settings.home / self.name

    @property
    def log_file(self) -> Path:
        return self.settings.home / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.settings.home / "run" / f"{self.name}.pid"

    # -- lifecycle --------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of the running service, or None (stale pid files are removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            process = psutil.Process(pid)
            alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if not alive:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self) -> str:
        """Start the service unless it runs already; return what was done, in words."""
        launched = self.launch()
        return launched if isinstance(launched, str) else self.finish_start(launched)

    def launch(self) -> str | Launch:
        """Start the process without waiting for it to answer (nodes of a cluster that
        answer only once a quorum of them runs start this way, then wait together):
        what was done in words when nothing was started, else what to wait on."""
        if self.is_external:
            return f"{self.name}: external at {self.endpoint}, not started"
        if self.pid() is not None:
            if self.starts_together:  # it may wait for the others to answer
                return Launch(0, time.monotonic(), already_running=True)
            return self._already_running()
        if port_is_open(self.port):
            raise StackError(
                f"port {self.port} for {self.name} is taken by another process: stop it, or "
                f"set {self.port_setting} to a free port"
            )
        self.prepare()
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        self._spawn()
        return Launch(log_start, time.monotonic())

    def _already_running(self) -> str:
        if wait_until(self.is_ready, self.start_timeout):
            self.after_start()
            return f"{self.name}: already running at {self.endpoints}"
        raise StackError(
            f"{self.name} runs (pid {self.pid()}) but does not answer on {self.endpoint};"
            f" see {self.log_file} or run 'make down' and 'make up'"
        )

    def finish_start(self, launch: Launch) -> str:
        """Wait for a launched process to answer; what was done, in words."""
        if launch.already_running:
            return self._already_running()
        log_start, started = launch.log_start, launch.started
        if not wait_until(lambda: self.pid() is None or self.is_ready(), self.start_timeout):
            raise StackError(
                f"{self.name} did not answer within {self.start_timeout:.0f}s: "
                f"{last_error(self.log_file, log_start)} (log {self.log_file})"
            )
        if self.pid() is None:
            raise StackError(
                f"{self.name} exited during start: {last_error(self.log_file, log_start)}"
                f" (log {self.log_file})"
            )
        self.after_start()
        return (
            f"{self.name}: started at {self.endpoints} in {time.monotonic() - started:.1f}s,"
            f" log {self.log_file}"
        )

    def _spawn(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        user = self.run_as_user() if os.geteuid() == 0 else None
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                cwd=self.data_dir if self.data_dir.exists() else None,
            )
        self.pid_file.write_text(f"{process.pid}\n")

    def stop(self, timeout: float = 60.0) -> str:
        """Stop the service gracefully, then forcibly after ``timeout`` seconds."""
        if self.is_external:
            return f"{self.name}: external, left alone"
        pid = self.pid()
        if pid is None:
            return f"{self.name}: not running"
        process = psutil.Process(pid)
        process.send_signal(self.stop_signal)
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            for child in process.children(recursive=True):
                child.kill()
            process.kill()
            process.wait(10)
        self.pid_file.unlink(missing_ok=True)
        return f"{self.name}: stopped"

    def status(self) -> ServiceStatus:
        """Whether the service runs, answers, and how much memory it holds."""
        if self.is_external:
            return ServiceStatus(self.name, "external", self.endpoint)
        pid = self.pid()
        if pid is None:
            return ServiceStatus(self.name, "stopped", self.endpoint, log=self.log_file)
        return ServiceStatus(
            self.name,
            "running" if self.is_ready() else "unhealthy",
            self.endpoints,
            pid=pid,
            rss_mib=resident_mib(pid),
            log=self.log_file,
        )


def resident_mib(pid: int) -> float:
    """Resident memory of a process and all its children, in MiB."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        # Sum unique resident pages roughly: RSS double counts shared memory between
        # PostgreSQL backends, so USS is used where the platform allows reading it.
        total = 0
        for process in processes:
            try:
                total += process.memory_full_info().uss
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total / 2**20
    except psutil.NoSuchProcess:
        return 0.0
