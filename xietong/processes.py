"""Child processes that never outlive their parent, and stops that end in bounds.

A supervisor (``xietong run``) and a connector with worker processes start children
that must end when their parent ends, however it ends: by SIGKILL too, when none of the
parent's code runs to stop them. Linux does it for us: ``prctl(PR_SET_PDEATHSIG, sig)``,
called in the child, asks the kernel to send the child ``sig`` when its parent dies.
:func:`die_with_parent` makes that call, from inside the child: as the ``preexec_fn``
of :class:`subprocess.Popen` (after the fork, before the exec, which keeps it) or first
thing in a process pool's ``initializer``.

The kernel watches the *thread* that forked, not the whole process: a child forked by a
thread that then ends is signalled although its parent lives on. So fork from the main
thread, or from a thread that outlives the children (see :mod:`connectors.parallel`).

A service stopped by SIGTERM or SIGINT finishes what it can, but exits within
:data:`STOP_GRACE_SECONDS` even when that waits on a broker that is gone
(:func:`on_stop_signal`, :func:`exit_after`): what it could not commit is read again
after the restart, which at-least-once delivery allows for.

Example::

    subprocess.Popen(command, preexec_fn=partial(die_with_parent, os.getpid()))
    on_stop_signal(sink.stop)         # in the service: stop, and exit 8 s later at most
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil

from xietong.logs import log_event

logger = logging.getLogger("xietong.processes")

#: How long a service may take to stop after SIGTERM or SIGINT before it exits anyway.
STOP_GRACE_SECONDS = 8.0
#: From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1

# Loaded once, here: a ``preexec_fn`` runs between fork and exec, where loading a
# library (or taking any lock another thread may hold) can deadlock.
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Have the kernel send this process ``sig`` when ``parent``, the pid that started
    it, dies; exit at once if it has died already (between the fork and this call,
    when the kernel would not tell us any more)."""
    if _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_PDEATHSIG, {sig.name}): {os.strerror(code)}")
    if os.getppid() != parent:
        os._exit(128 + int(sig))


def still_running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` that still run. A zombie has ended: it only waits for its
    parent (init, for an orphan) to collect its exit status."""
    running = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
    return running


def wait_ended(processes: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for every process to end; those still running."""
    waiting = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        for process in waiting:  # collects the exit status of our own children
            with contextlib.suppress(psutil.Error):
                process.wait(0)
        waiting = still_running(waiting)
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(0.1)


def stop_processes(processes: Iterable[psutil.Process], grace: float) -> list[psutil.Process]:
    """SIGTERM every process, SIGKILL those still running ``grace`` seconds later; the
    processes that had to be killed."""
    signalled = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
            signalled.append(process)
    alive = wait_ended(signalled, grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_ended(alive, 10)
    return alive


def exit_after(grace: float, why: str) -> None:
    """Exit this process ``grace`` seconds from now unless it has ended by then; armed
    when a stop begins, so that no wait of the stop (a flush, a group leave, a thread
    that does not answer) can make it last longer."""

    def overran() -> None:
        log_event(logger, "stop_overran", why=why, grace_seconds=grace, pid=os.getpid())
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(128 + signal.SIGTERM)

    deadline = threading.Timer(grace, overran)
    deadline.daemon = True  # it must not keep a process alive that ended in time
    deadline.start()


def on_stop_signal(stop: Callable[[], None], grace: float = STOP_GRACE_SECONDS) -> None:
    """On SIGTERM or SIGINT call ``stop`` (which asks the service to finish), and exit
    ``grace`` seconds after the first such signal if the service has not ended."""
    armed = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        if not armed.is_set():
            armed.set()
            exit_after(grace, f"{signal.Signals(signum).name} received")
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
