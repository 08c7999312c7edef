"""The platform's services as ``xietong run`` started them, beside the stack's own.

The supervisor records its own pid and every service's in ``.local/run/services/``
(``supervisor.pid``, ``<service>.pid``: the pid, the process's start time, its metrics
URL and log), next to the stack's pid files in ``.local/run/``. So ``xietong stack
status`` lists the services, ``xietong stack down`` stops them (the supervisor first,
which stops its services; then any service left, SIGTERM then SIGKILL), and a new
``xietong run`` finds what an earlier one left running.

A record names a process by pid *and* start time: a pid the kernel gave to another
process since is not taken for the service.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from deploy.local.stack.base import ServiceStatus, resident_mib
from xietong.processes import still_running, stop_processes
from xietong.settings import Settings

SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class PlatformProcess:
    """One recorded process: the supervisor or a service it started."""

    name: str
    process: psutil.Process
    endpoint: str
    log: Path | None


class PlatformServices:
    """The pid records of ``xietong run`` under the stack's home."""

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.home / "run" / "services"

    def record(self, name: str, pid: int, endpoint: str = "", log: Path | None = None) -> None:
        """Record that ``pid`` is the service ``name`` (or the supervisor)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {
            "pid": pid,
            "started": psutil.Process(pid).create_time(),
            "endpoint": endpoint,
            "log": str(log) if log else None,
        }
        path = self.directory / f"{name}.pid"
        written = path.with_suffix(".tmp")
        written.write_text(json.dumps(entry) + "\n")
        written.replace(path)  # a reader sees the whole record or none

    def forget(self, name: str) -> None:
        (self.directory / f"{name}.pid").unlink(missing_ok=True)

    def running(self) -> list[PlatformProcess]:
        """The recorded processes still alive, the supervisor first; stale records go."""
        found = []
        for path in sorted(self.directory.glob("*.pid"), key=lambda p: p.stem != SUPERVISOR):
            entry = self._read(path)
            if entry is None:
                path.unlink(missing_ok=True)
            else:
                found.append(entry)
        return found

    @staticmethod
    def _read(path: Path) -> PlatformProcess | None:
        """The process a record names, if it still runs (and is still that process)."""
        try:
            entry = json.loads(path.read_text())
            process = psutil.Process(int(entry["pid"]))
            if process.create_time() != entry["started"]:
                return None  # the pid is another process's now
        except (FileNotFoundError, ValueError, KeyError, psutil.NoSuchProcess):
            return None
        if not still_running([process]):
            return None
        log = Path(entry["log"]) if entry["log"] else None
        return PlatformProcess(path.stem, process, entry["endpoint"], log)

    def status(self) -> list[ServiceStatus]:
        """The recorded processes that run, as rows of ``xietong stack status``."""
        return [
            ServiceStatus(
                "xietong run" if entry.name == SUPERVISOR else entry.name,
                "running",
                entry.endpoint,
                pid=entry.process.pid,
                # the supervisor's children are the services, each on a row of its own
                rss_mib=entry.process.memory_info().rss / 2**20
                if entry.name == SUPERVISOR
                else resident_mib(entry.process.pid),
                log=entry.log,
            )
            for entry in self.running()
        ]

    def stop(self, grace: float = 30.0, report: Callable[[str], None] = print) -> None:
        """Stop the supervisor (it gives its services ``grace`` seconds), then any service
        still running: one it could not stop, or one an earlier run left behind."""
        for entry in self.running():
            if entry.name == SUPERVISOR:
                killed = stop_processes([entry.process], grace + 10)
                report(f"xietong run (pid {entry.process.pid}): {_stopped(killed, entry.process)}")
        left = self.running()
        killed = stop_processes([entry.process for entry in left], grace)
        for entry in left:
            report(f"{entry.name} (pid {entry.process.pid}): {_stopped(killed, entry.process)}")
            self.forget(entry.name)
        self.forget(SUPERVISOR)


def _stopped(killed: list[psutil.Process], process: psutil.Process) -> str:
    return "killed after its grace period" if process in killed else "stopped"
