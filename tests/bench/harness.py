"""What the benchmarks share: a backlog produced as fast as the broker takes it, the
measured program and its bare baseline each as a process of its own (the same module
started with a role flag), the baseline's loop, timing a backlog from a progress figure,
the benchmark's topics made fresh and removed, the profile read by group, and the JSON
report.

A benchmark module runs as ``python -m tests.bench.<name>``; the processes it measures
are the same module with ``--worker …`` or ``--baseline …``::

    process = start("tests.bench.dual_notice", "worker", str(port), "-", log=log)
    try:
        throughput = time_backlog(30_000, lambda: processed_by_worker(port), "registrations")
    finally:
        stop(process)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import pstats
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, Producer

from tests.kafka_helpers import produce_all
from tests.stream_worker import stop_process
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.topics import STREAMS_INTERNAL_TOPIC_PREFIX, TopicKey, TopicSpec, apply_topics

Topics = TypeVar("Topics", bound=Any)

#: How often a baseline prints its progress line, and commits (after its producer's flush).
REPORT_SECONDS = 0.2
COMMIT_SECONDS = 1.0


def produce_backlog(kafka: KafkaClients, messages: Iterable[tuple[str, bytes, bytes]]) -> None:
    """Every (topic, key, value), acknowledged, in large batches."""
    produce_all(kafka, messages, **{"linger.ms": 50, "batch.num.messages": 10_000})


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line, its module docstring as the help."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def result(run: str, throughput: dict[str, float], **figures: Any) -> dict[str, Any]:
    """One measured program's entry in a report's ``results``."""
    return {"run": run, "throughput": throughput, **figures}


# -- the measured processes ------------------------------------------------------------------


def start(module: str, role: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """``python -m module --role args…``, its output appended to ``log``."""
    command = [sys.executable, "-m", module, f"--{role}", *args]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> None:
    stop_process(process, grace=60, how=how)


def bare_loop(consumer: Consumer, producer: Producer, handle: Callable[[Message], None]) -> None:
    """A baseline's loop until SIGTERM: ``handle`` every readable message at once (waiting
    to fill a batch would be latency), print the count as a progress line, and commit
    after the producer's flush (at least once: what is committed has been produced)."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    processed, committed, last_commit, last_report = 0, 0, time.monotonic(), 0.0
    while not stopping.is_set():
        for message in consumer.consume(1000, timeout=0.005):
            if message.error() is None:
                handle(message)
                processed += 1
                producer.poll(0)
        if time.monotonic() - last_report > REPORT_SECONDS:
            print(json.dumps({"processed": processed, "at": time.time()}), flush=True)
            last_report = time.monotonic()
        if processed > committed and time.monotonic() - last_commit > COMMIT_SECONDS:
            producer.flush(30)
            consumer.commit(asynchronous=False)
            committed, last_commit = processed, time.monotonic()
    producer.flush(30)
    consumer.close()


def processed_by_baseline(log: Path) -> float:
    """The count of the baseline's last progress line."""
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith('{"processed"')
    ]
    return float(json.loads(lines[-1])["processed"]) if lines else 0.0


def metric_totals(text: str, prefix: str) -> dict[str, float]:
    """The ``prefix…_total`` counters of a ``/metrics`` page, summed over their labels,
    by name without the prefix and the suffix."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(prefix) or "_total" not in line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0].removeprefix(prefix)
        name = name.removesuffix("_total")
        totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def time_backlog(
    count: int, progress: Callable[[], float], unit: str, timeout: float = 900
) -> dict[str, float]:
    """Seconds from the first of ``count`` ``unit`` processed to the last, and the rate."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        done = progress()
        now = time.monotonic()
        if done > 0 and first is None:
            first = (now, done)
        if done >= count:
            break
        if now > deadline:
            raise RuntimeError(f"processed {done} of {count} {unit} in {timeout} s")
        time.sleep(0.1)
    assert first is not None
    seconds = now - first[0]
    return {
        unit: count,
        "seconds": round(seconds, 2),
        f"{unit}_per_second": round((count - first[1]) / seconds, 1) if seconds else 0.0,
    }


# -- the benchmark's own topics, groups and state ------------------------------------------


def own_topics(topics: Topics, prefix: str, app_name: str) -> Topics:
    """A processor's topics for a benchmark run, from its ``…Topics`` dataclass holding
    the platform's: every input becomes ``prefix + <field>``, every output ``prefix +``
    the last part of its platform topic's name, every inbox one topic and the
    departments' inbound topics one — nothing reaches the platform's topics or a
    department."""
    platform = {"app_name", "outputs", "inbox", "inbound_pattern"}
    inputs = {
        f.name: prefix + f.name.replace("_", "-")
        for f in dataclasses.fields(topics)
        if f.name not in platform
    }
    return dataclasses.replace(
        topics,
        app_name=app_name,
        outputs={kind: prefix + name.split(".", 1)[1] for kind, name in topics.outputs.items()},
        inbox=f"{prefix}inbox",
        inbound_pattern=rf"^{prefix.replace('.', '[.]')}inbound$",
        **inputs,
    )


def reset(
    kafka: KafkaClients,
    settings: Settings,
    prefix: str,
    suffixes: Sequence[str],
    apps: Sequence[str] = (),
    groups: Sequence[str] = (),
) -> None:
    """Remove what an earlier run left — the topics under ``prefix`` and the internal
    topics, groups and RocksDB state of the Faust ``apps``, and ``groups`` — and make the
    topics ``prefix + suffix`` afresh."""
    admin = kafka.admin()
    internal = [f"{STREAMS_INTERNAL_TOPIC_PREFIX}{app}-" for app in apps]
    delete_topics(kafka, prefix, *internal, gone=True)
    every_group = [*groups]
    for app in apps:
        every_group += [
            f"{STREAMS_INTERNAL_TOPIC_PREFIX}{app}",
            f"{STREAMS_INTERNAL_TOPIC_PREFIX}{app}-inbound",
        ]
    if every_group:
        for future in admin.delete_consumer_groups(every_group, request_timeout=15).values():
            with contextlib.suppress(KafkaException):  # the group did not exist
                future.result()
    for app in apps:
        shutil.rmtree(settings.home / "streams" / app, ignore_errors=True)
    apply_topics(
        admin,
        settings,
        [
            TopicSpec(f"{prefix}{suffix}", "bench", TopicKey.USCC, retention_ms=3600_000)
            for suffix in suffixes
        ],
    )


def delete_topics(kafka: KafkaClients, *prefixes: str, gone: bool = False) -> None:
    """Delete the topics whose names start with one of ``prefixes`` (the benchmark's are
    deleted afterwards; the JSON keeps the figures); with ``gone``, wait until the broker
    no longer lists them, so that they can be made again."""
    admin = kafka.admin()
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
    while gone and any(t in admin.list_topics(timeout=10).topics for t in doomed):
        time.sleep(0.5)


# -- the report ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_report(out: Path, report: dict[str, Any]) -> None:
    """The report as JSON at ``out``, and on standard output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, ensure_ascii=False, indent=2)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)


def where_the_time_goes(
    profile: Path, groups: Sequence[tuple[str, Sequence[str]]], top: int = 12
) -> dict[str, Any]:
    """A process's main thread under cProfile: its busy time by group, and the functions
    that took most of it. A function's own time counts in the first of ``groups`` (label,
    marks) one of whose marks is in its file or, for a built-in, its name; the first
    group is the idle one (waiting for the network). The profiler slows the process: read
    the shares."""
    idle_label = groups[0][0]
    stats = pstats.Stats(str(profile), stream=io.StringIO())
    raw = stats.stats  # type: ignore[attr-defined]
    by_group: dict[str, float] = {}
    rows = []
    for (file, line, name), (_, calls, tottime, _, _) in raw.items():
        where = f"{file}:{name}"
        group = next((label for label, marks in groups if any(m in where for m in marks)), "other")
        by_group[group] = by_group.get(group, 0.0) + tottime
        if group != idle_label:
            rows.append((tottime, f"{Path(file).name}:{line} {name}", calls))
    idle = by_group.pop(idle_label, 0.0)
    busy = sum(by_group.values()) or 1.0
    return {
        "idle_share_of_wall_time": round(idle / (idle + busy), 3),
        "busy_time_by_group": {
            label: round(seconds / busy, 3)
            for label, seconds in sorted(by_group.items(), key=lambda item: -item[1])
        },
        "top_functions_by_own_busy_time": [
            {"function": function, "calls": calls, "share": round(seconds / busy, 3)}
            for seconds, function, calls in sorted(rows, reverse=True)[:top]
        ],
    }
