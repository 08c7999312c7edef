"""Children that die with their parent, and stops that end in bounds (xietong/processes.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil

from xietong.processes import still_running, stop_processes, wait_ended

#: A parent that starts a child asking to die with it, prints the child's pid, and waits.
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from functools import partial
    from xietong.processes import die_with_parent
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        preexec_fn=partial(die_with_parent, os.getpid()),
    )
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def test_a_child_that_asked_to_die_with_its_parent_ends_when_the_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    assert still_running([child]) == [child]

    parent.kill()
    parent.wait()

    assert wait_ended([child], timeout=10) == []


def test_a_stop_kills_what_ignores_sigterm_once_the_grace_is_over() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM,"
            " signal.SIG_IGN); print(flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert stubborn.stdout is not None
    stubborn.stdout.readline()  # its SIGTERM is ignored from here on

    both = [psutil.Process(stubborn.pid), psutil.Process(polite.pid)]

    killed = stop_processes(both, grace=1)

    assert [process.pid for process in killed] == [stubborn.pid]
    assert still_running(both) == []


def test_a_service_whose_stop_hangs_exits_when_its_grace_is_over() -> None:
    hanging = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import threading; from xietong.processes import on_stop_signal;"
            " on_stop_signal(lambda: None, grace=1); print(flush=True); threading.Event().wait()",
        ],
        stdout=subprocess.PIPE,
    )
    assert hanging.stdout is not None
    hanging.stdout.readline()

    hanging.terminate()

    assert hanging.wait(10) == 128 + 15
