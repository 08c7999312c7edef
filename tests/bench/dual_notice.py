"""双告知 processor: throughput and end-to-end latency, against a bare confluent-kafka loop
doing the same catalog match, in the same run.

    make bench            # or: python -m tests.bench.dual_notice --records 30000 --seconds 20

On the running local stack, with the sample province's catalog on
``registry.approval-items`` (``make run`` puts it there), the benchmark

1. produces ``--records`` registrations of the sample province's mix (about 30 % with a
   permit item) to a registrations topic of its own, then starts one worker of the
   processor (``DualNoticeProcessor``, its own app id and topics: nothing reaches the
   platform's topics or any department) and times it through that backlog:
   **registrations/s on one worker**;
2. with the worker caught up, produces registrations at a steady ``--rate`` (1,000/s) for
   ``--seconds`` and times each push from the registration's send to its arrival in the
   inbox: **p50/p99 end-to-end latency**;
3. does both again with the baseline: one process, a confluent-kafka consumer, the same
   Avro decoding, catalog match and routing, the same push records encoded and produced,
   offsets committed after the producer's flush — and no state, no changelogs, no
   department actions, no deadlines.

Last, a worker runs under cProfile through ``--profile`` more registrations, and its time
is reported by group and function ("where the time goes"; the profiler slows it, so
read the shares). Results: ``.local/bench/dual_notice.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Message, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from deploy.local.stack import LocalStack
from schemas import DUAL_NOTICE_RECORD_TYPES, REGISTRATION, register_all
from streams.dual_notice.app import DualNoticeTopics, run_worker
from streams.dual_notice.rules import ApprovalCatalog, PushOrder, new_push, registered_entity
from streams.dual_notice.settings import DualNoticeSettings
from streams.runtime import RecordWriter
from tests.bench import harness
from tests.dual_notice_records import PROVINCE, registration
from tests.stream_worker import free_port
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings, get_settings
from xietong.topics import (
    REGISTRY_APPROVAL_ITEMS,
    STREAMS_INTERNAL_TOPIC_PREFIX,
)

THROUGHPUT_TARGET = 10_000  # registrations/s per worker, issue 5
WARMUP_SECONDS = 2  # sent at the steady rate before the latency is timed
P99_TARGET_MS = 250  # at 1,000 registrations/s
APP_NAME = "dual-notice-bench"
PREFIX = f"{STREAMS_INTERNAL_TOPIC_PREFIX}{APP_NAME}."
TOPIC_SUFFIXES = (
    "registrations",
    "licences",
    "actions",
    "inbound",
    "pushes",
    "applicant-notices",
    "manual-routing",
    "rejected-actions",
    "alerts",
    "closure-notices",
    "dead-letter",
    "inbox",
    "baseline-pushes",
    "baseline-inbox",
    "baseline-applicant-notices",
)
BASELINE_GROUP = f"{STREAMS_INTERNAL_TOPIC_PREFIX}{APP_NAME}-baseline"
MODULE = "tests.bench.dual_notice"
UNIT = "registrations"


def bench_topics() -> DualNoticeTopics:
    """The processor's topics in the benchmark: its own, every inbox one topic."""
    return harness.own_topics(DualNoticeTopics(), PREFIX, APP_NAME)


# -- the workload -------------------------------------------------------------------------------

#: 许可项目 (with the industry class that goes with them) of the registrations that need a
#: permit, and the 一般项目 of those that do not, as the sample generator mixes them.
WITH_PERMIT = (
    (("餐饮服务",), "H6210"),
    (("食品销售",), "F5229"),
    (("食品销售", "烟草制品零售"), "F5213"),
    (("道路货物运输（不含危险货物）",), "G5431"),
    (("药品零售",), "F5251"),
    (("理发服务", "生活美容服务"), "O8040"),
    (("建设工程施工",), "E4710"),
    (("农药零售",), "F5167"),
)
GENERAL_ONLY = (
    (("日用百货销售", "五金产品零售"), "F5211"),
    (("软件开发", "信息技术咨询服务"), "I6513"),
    (("服装服饰零售",), "F5232"),
)
DIVISIONS = ("330102", "330106", "330110", "330203", "330206", "330212")


def workload(count: int, rng: random.Random) -> list[dict[str, Any]]:
    records = []
    for _ in range(count):
        division = rng.choice(DIVISIONS)
        if rng.random() < 0.3:
            permit, industry = rng.choice(WITH_PERMIT)
            general: tuple[str, ...] = ("日用百货销售",)
        else:
            (general, industry), permit = rng.choice(GENERAL_ONLY), ()
        records.append(registration(division, permit, general, industry=industry, rng=rng))
    return records


def encode_all(
    kafka: KafkaClients, records: list[dict[str, Any]]
) -> list[tuple[bytes, bytes, str]]:
    """Registrations in the wire format, under market.registrations' subject (the
    benchmark's topic carries what the platform's would)."""
    writer = RecordWriter(kafka, REGISTRATION)
    return [(r["uscc"].encode(), writer.encode(r), r["envelope"]["event_id"]) for r in records]


def backlog(topic: str, encoded: list[tuple[bytes, bytes, str]]) -> list[tuple[str, bytes, bytes]]:
    return [(topic, key, value) for key, value, _ in encoded]


def produce_steadily(
    kafka: KafkaClients, topic: str, encoded: list[tuple[bytes, bytes, str]], rate: int
) -> dict[str, float]:
    """Send at ``rate`` records/s; when each was handed to the producer (epoch s)."""
    producer = kafka.producer(**{"linger.ms": 1})
    sent: dict[str, float] = {}
    started = time.time()
    for index, (key, value, event_id) in enumerate(encoded):
        due = started + index / rate
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        sent[event_id] = time.time()
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    producer.flush(60)
    return sent


class Arrivals:
    """When each push reaches an inbox topic, by registration event id (first arrival)."""

    def __init__(self, kafka: KafkaClients, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.arrived: dict[str, float] = {}
        self._stop = threading.Event()
        consumer = kafka.consumer(f"bench-{uuid.uuid4()}", **{"fetch.wait.max.ms": 10})
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in partitions
        ]
        consumer.assign(ends)
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deserialize = self.kafka.avro_deserializer()
        context = SerializationContext(self.topic, MessageField.VALUE)
        while not self._stop.is_set():
            for message in self._consumer.consume(1000, timeout=0.1):
                if message.error() is None:
                    now = time.time()
                    push = deserialize(message.value(), context)
                    assert isinstance(push, dict)
                    self.arrived.setdefault(push["entity"]["registration_event_id"], now)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def latency(
    kafka: KafkaClients,
    registrations: str,
    inbox: str,
    encoded: list[tuple[bytes, bytes, str]],
    rate: int,
    expected: set[str],
    warmup_seconds: int = WARMUP_SECONDS,
) -> dict[str, float]:
    """Send ``encoded`` at ``rate``; the delays of the pushes of those sent after the
    first ``warmup_seconds`` (connections, schema lookups and caches are warm by then)."""
    arrivals = Arrivals(kafka, inbox)
    sent = produce_steadily(kafka, registrations, encoded, rate)
    deadline = time.time() + 60
    while not expected <= arrivals.arrived.keys() and time.time() < deadline:
        time.sleep(0.2)
    arrivals.stop()
    timed = {event for _, _, event in encoded[warmup_seconds * rate :]}
    delays = sorted(
        (arrivals.arrived[event] - sent[event]) * 1000
        for event in expected & timed
        if event in arrivals.arrived
    )
    missing = len(expected) - len(expected & arrivals.arrived.keys())
    return {
        "registrations": len(timed),
        "pushes_timed": len(delays),
        "pushes_missing": missing,
        "p50_ms": round(statistics.median(delays), 1),
        "p99_ms": round(delays[int(len(delays) * 0.99) - 1], 1),
        "max_ms": round(delays[-1], 1),
        "achieved_rate": round(len(encoded) / (max(sent.values()) - min(sent.values())), 1),
    }


def expected_pushes(records: list[dict[str, Any]], catalog: ApprovalCatalog) -> set[str]:
    """The registrations whose matched items have a department (they reach an inbox)."""
    found = set()
    for record in records:
        permits = [e["text"] for e in record["business_scope_items"] if e["kind"] == "PERMIT"]
        for match in catalog.match(permits, record["industry_code"]):
            if record["division_code"] in match.item.routes:
                found.add(record["envelope"]["event_id"])
    return found


# -- the processor and the baseline, each a process of its own ---------------------------------


def read_catalog(kafka: KafkaClients) -> ApprovalCatalog:
    """Every approval item on registry.approval-items (the latest of each key)."""
    topic = REGISTRY_APPROVAL_ITEMS.name
    consumer = kafka.consumer(f"bench-{uuid.uuid4()}")
    deserialize = kafka.avro_deserializer()
    _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, 0)])
    latest: dict[bytes, dict[str, Any] | None] = {}
    position = 0
    while position < end:
        message = consumer.poll(10)
        assert message is not None, f"{topic}: stopped at {position} of {end}"
        if message.error():
            continue
        value = message.value()
        latest[message.key() or b""] = (
            None
            if value is None
            else deserialize(value, SerializationContext(topic, MessageField.VALUE))
        )
        position = (message.offset() or 0) + 1
    consumer.close()
    return ApprovalCatalog(v for v in latest.values() if v)


def baseline(settings: Settings, registrations: str) -> None:
    """The bare loop: consume, decode, match, route, encode, produce; commit after flush."""
    kafka = KafkaClients(settings, "streams")
    catalog = read_catalog(kafka)
    rules = DualNoticeSettings()
    deserialize = kafka.avro_deserializer()
    pushes = RecordWriter(kafka, DUAL_NOTICE_RECORD_TYPES["dual_notice_push"])
    notices = RecordWriter(kafka, DUAL_NOTICE_RECORD_TYPES["dual_notice_applicant_notice"])
    consumer = kafka.consumer(BASELINE_GROUP)
    producer = kafka.producer()
    consumer.subscribe([registrations])

    def handle(message: Message) -> None:
        record = deserialize(message.value(), None)
        assert isinstance(record, dict)
        permits = [e["text"] for e in record["business_scope_items"] if e["kind"] == "PERMIT"]
        matches = catalog.match(permits, record["industry_code"])
        if not matches:
            return
        entity = registered_entity(record, None)
        items = []
        for match in matches:
            department = match.item.routes.get(entity["division_code"])
            if department is None:
                continue
            push = new_push(
                PushOrder.routed(entity, match, department),
                claim_deadline=rules.claim_deadline(entity["registered_at"]),
                licence_deadline=rules.licence_deadline(entity["registered_at"]),
                recorded_at=business_clock().now_ms(),
            )
            value = pushes.encode(push)
            producer.produce(f"{PREFIX}baseline-pushes", key=message.key(), value=value)
            producer.produce(f"{PREFIX}baseline-inbox", key=message.key(), value=value)
            items.append(
                {
                    "item": match.item.ref,
                    "department": department,
                    "push_id": push["push_id"],
                    "routing_id": None,
                }
            )
        notice = {
            "notice_id": entity["registration_event_id"],
            "entity": entity,
            "items": items,
            "issued_at": entity["registered_at"],
        }
        producer.produce(
            f"{PREFIX}baseline-applicant-notices", key=message.key(), value=notices.encode(notice)
        )

    harness.bare_loop(consumer, producer, handle)


def worker(settings: Settings, metrics_port: int, profile: Path | None) -> None:
    rules = DualNoticeSettings(metrics_port=metrics_port, tick_interval=5.0)
    if profile is None:
        run_worker(settings, rules, loglevel="warning", topics=bench_topics())
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run_worker(settings, rules, loglevel="warning", topics=bench_topics())
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


# -- the measurements ------------------------------------------------------------------------------


def processed_by_worker(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("xietong_dual_notice_registrations_total{")
    )


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--records", type=int, default=30_000, help="registrations in the backlog")
    parser.add_argument("--rate", type=int, default=1_000, help="registrations/s for the latency")
    parser.add_argument("--seconds", type=int, default=20, help="how long to send at --rate")
    parser.add_argument(
        "--profile", type=int, default=8_000, help="registrations for the profiled pass (0: none)"
    )
    parser.add_argument("--out", type=Path, default=Path(".local/bench/dual_notice.json"))
    parser.add_argument("--worker", nargs=2, metavar=("PORT", "PROFILE"), help=argparse.SUPPRESS)
    parser.add_argument("--baseline", nargs=1, metavar="TOPIC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = get_settings()
    if args.worker:
        worker(
            settings, int(args.worker[0]), Path(args.worker[1]) if args.worker[1] != "-" else None
        )
        return
    if args.baseline:
        baseline(settings, args.baseline[0])
        return

    LocalStack(settings).up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    kafka = KafkaClients(settings)
    register_all(kafka.schema_registry())
    catalog = read_catalog(kafka)
    if len(catalog) < len(PROVINCE.approval_items):
        raise SystemExit(
            f"{REGISTRY_APPROVAL_ITEMS.name} holds {len(catalog)} approval items, the sample"
            f" province has {len(PROVINCE.approval_items)}: publish the catalog first (make run)"
        )
    harness.reset(kafka, settings, PREFIX, TOPIC_SUFFIXES, apps=[APP_NAME], groups=[BASELINE_GROUP])
    workdir = (args.out.parent / f"dual-notice-{datetime.now(UTC):%Y%m%dT%H%M%S}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(5)
    registrations = f"{PREFIX}registrations"

    print(f"producing {args.records} registrations …", file=sys.stderr)
    records = workload(args.records, rng)
    harness.produce_backlog(kafka, backlog(registrations, encode_all(kafka, records)))
    steady = args.rate * args.seconds
    results: list[dict[str, Any]] = []

    def measure(
        role: str,
        run: str,
        process: subprocess.Popen[bytes],
        progress: Callable[[], float],
        backlog_count: int,
        inbox: str,
    ) -> None:
        """Through the backlog, then at the steady rate: one result of ``run``."""
        try:
            print(f"{role}: the backlog …", file=sys.stderr)
            throughput = harness.time_backlog(backlog_count, progress, UNIT)
            print(f"{role}: {throughput}; {args.rate}/s for {args.seconds} s …", file=sys.stderr)
            load = workload(steady + WARMUP_SECONDS * args.rate, rng)
            expected = expected_pushes(load, catalog)
            timed = latency(
                kafka, registrations, inbox, encode_all(kafka, load), args.rate, expected
            )
            print(f"{role}: {timed}", file=sys.stderr)
            results.append(harness.result(run, throughput, latency=timed))
        finally:
            harness.stop(process)

    port = free_port()
    measure(
        "processor",
        "processor (faust, one worker)",
        harness.start(MODULE, "worker", str(port), "-", log=workdir / "worker.log"),
        lambda: processed_by_worker(port),
        args.records,
        f"{PREFIX}inbox",
    )
    log = workdir / "baseline.log"
    measure(
        "baseline",
        "baseline (bare confluent-kafka loop)",
        harness.start(MODULE, "baseline", registrations, log=log),
        lambda: harness.processed_by_baseline(log),
        args.records + steady + WARMUP_SECONDS * args.rate,  # it reads the processor's too
        f"{PREFIX}baseline-inbox",
    )

    processor, bare = results
    report: dict[str, Any] = {
        "benchmark": "dual_notice",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "workload": {
            "backlog_registrations": args.records,
            "steady_rate": args.rate,
            "steady_seconds": args.seconds,
            "share_with_permit": 0.3,
        },
        "targets": {
            "registrations_per_second": THROUGHPUT_TARGET,
            "p99_ms_at_1000_per_second": P99_TARGET_MS,
        },
        "results": results,
        "processor_share_of_baseline": round(
            processor["throughput"]["registrations_per_second"]
            / bare["throughput"]["registrations_per_second"],
            3,
        ),
        "meets_throughput_target": processor["throughput"]["registrations_per_second"]
        >= THROUGHPUT_TARGET,
        "meets_latency_target": processor["latency"]["p99_ms"] <= P99_TARGET_MS,
    }
    if args.profile:
        print(f"processor under cProfile: {args.profile} more registrations …", file=sys.stderr)
        more = encode_all(kafka, workload(args.profile, rng))
        harness.produce_backlog(kafka, backlog(registrations, more))
        profile = workdir / "worker.prof"
        process = harness.start(
            MODULE, "worker", str(port), str(profile), log=workdir / "worker.log"
        )
        try:  # the worker resumes after what it processed: it gets the new ones only
            harness.time_backlog(args.profile, lambda: processed_by_worker(port), UNIT)
        finally:
            harness.stop(process)
        report["where_the_time_goes"] = harness.where_the_time_goes(profile, TIME_GROUPS)
    harness.write_report(args.out, report)
    harness.delete_topics(kafka, PREFIX)


#: Where a function's own time is counted, by its file or, for built-ins, its name (the
#: first match wins; the first group is the idle one).
TIME_GROUPS = (
    ("waiting for the network (idle)", ("select.epoll",)),
    ("faust and mode (streams, conductor, tables, commits)", ("faust/", "mode/")),
    ("asyncio (scheduling the above)", ("asyncio/", "_contextvars", "selectors.py")),
    ("aiokafka (fetch, produce, protocol)", ("aiokafka/", "_socket.socket")),
    ("Avro serde (confluent-kafka, fastavro)", ("schema_registry/", "fastavro")),
    ("confluent-kafka clients (reference data, relay)", ("cimpl",)),
    ("RocksDB (rocksdict)", ("Rdict", "rocksdict")),
    ("the 双告知 rules (streams/)", ("streams/dual_notice/", "streams/runtime.py")),
    ("JSON (table values, log lines)", ("json/",)),
    ("logging", ("logging/", "xietong/logs.py")),
    ("prometheus metrics", ("prometheus_client/",)),
    ("garbage collection", ("gc.collect",)),
)
if __name__ == "__main__":
    main()
