"""Credit check: latency of ``GET /v1/checks`` on the running service with a warmed state,
against a bare lookup served the same way, in the same run.

    make bench            # or: python -m tests.bench.credit_check --listings 100000 --checks 10000

On the running local stack, the benchmark

1. produces ``--listings`` list entries (列入, a tenth of them later 移出, some effective
   in the future, several lists per entity for some) to a list-entries topic of its own,
   and the sample province's measures and list types to topics of their own: nothing
   reaches the platform's topics;
2. issues a token for 杭州市财政局 in the stack's registry database (revoked at the end);
3. starts the service (:func:`streams.credit_check.api.run_service` on those topics) as a
   process of its own and times its load to ``/ready``;
4. sends ``--checks`` checks one after another over one keep-alive connection (after
   ``--warmup`` unmeasured ones): half for listed entities, half for entities on no list,
   matter types drawn from the catalog, each with a matter reference of its own — and
   times each from the request to the whole answer read: **p50/p99**; then counts the
   matter events that reached the benchmark's matter-events topic;
5. does the same with the baseline: one process, a bare confluent-kafka consumer that
   reads the same topic with the same Avro deserializer into a dict USCC → entries, and
   a minimal ASGI app under the same uvicorn that answers the USCC's entries as JSON —
   no token, no validation, no rule, no measures, no matter event, no metrics.

Results: ``<XIETONG_HOME>/bench/credit_check.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from deploy.local.stack import LocalStack
from registry import service
from registry.audit import Actor
from registry.db import migrate, session_factory, transaction
from schemas import CREDIT_LIST_ENTRY, REGISTRY_RECORD_TYPES, register_all
from streams.credit_check.api import run_service
from streams.credit_check.settings import CreditCheckSettings
from streams.credit_check.state import CreditCheckTopics
from streams.runtime import RecordWriter
from tests.bench.harness import (
    arguments,
    delete_topics,
    machine,
    produce_backlog,
    start,
    stop,
    write_report,
)
from tests.credit_check_records import (
    list_entry,
    list_type_records,
    measure_records,
    new_uscc,
    removal_of,
)
from tests.stream_worker import free_port
from xietong.kafka import KafkaClients
from xietong.settings import Settings, get_settings
from xietong.topics import STREAMS_INTERNAL_TOPIC_PREFIX, TopicKey, TopicSpec, apply_topics

P99_TARGET_MS = 20.0  # issue 6
DEPARTMENT = "hz-finance"
PREFIX = f"{STREAMS_INTERNAL_TOPIC_PREFIX}credit-check-bench."
MODULE = "tests.bench.credit_check"
TOPICS = CreditCheckTopics(
    list_entries=TopicSpec(f"{PREFIX}list-entries", "bench", TopicKey.USCC, retention_ms=3600_000),
    measures=TopicSpec(f"{PREFIX}measures", "bench", TopicKey.CATALOG, compacted=True),
    list_types=TopicSpec(f"{PREFIX}list-types", "bench", TopicKey.CATALOG, compacted=True),
    matter_events=TopicSpec(
        f"{PREFIX}matter-events", "bench", TopicKey.USCC, retention_ms=3600_000
    ),
)
LIST_TYPES = (  # with their weights, roughly as common as in the seeds
    ("ABNORMAL_OPERATION", 50),
    ("SERIOUS_ILLEGAL_DISHONEST", 15),
    ("JUDGMENT_DEFAULTER", 25),
    ("MAJOR_TAX_VIOLATION", 5),
    ("SECTOR", 5),
)


# -- the workload ---------------------------------------------------------------------------------


def workload(listings: int, rng: random.Random) -> tuple[list[dict[str, Any]], list[str]]:
    """List entries (列入, and 移出 for a tenth) and the entities they list."""
    today = date.today()
    entries: list[dict[str, Any]] = []
    entities: list[str] = []
    kinds, weights = zip(*LIST_TYPES, strict=True)
    while len(entities) < listings:
        uscc = new_uscc(rng)
        for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 3)):
            list_type = rng.choices(kinds, weights)[0]
            if rng.random() < 0.05:  # effective in the future
                listed_on = today + timedelta(days=rng.randint(1, 60))
            else:
                listed_on = today - timedelta(days=rng.randint(0, 1000))
            planned = None if list_type == "ABNORMAL_OPERATION" else listed_on + timedelta(1095)
            listed = list_entry(
                uscc, listed_on, list_type=list_type, planned_removal_on=planned, rng=rng
            )
            entries.append(listed)
            entities.append(uscc)
            if rng.random() < 0.1:
                removed_on = listed_on + timedelta(days=rng.randint(1, 900))
                entries.append(removal_of(listed, removed_on))
    return entries, sorted(set(entities))


def checks(count: int, listed: list[str], matter_types: list[str], rng: random.Random) -> list[str]:
    """The query strings of ``count`` checks: half listed entities, half on no list."""
    queries = []
    for index in range(count):
        uscc = rng.choice(listed) if index % 2 == 0 else new_uscc(rng)
        matter_type = rng.choice(matter_types)
        queries.append(f"uscc={uscc}&matter_type={matter_type}&matter_ref=BENCH-{uuid.uuid4()}")
    return queries


def encoded(kafka: KafkaClients, entries: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    """The list entries, and the measures and list types they are checked against, as
    (topic, key, value) in the wire format."""
    writer = RecordWriter(kafka, CREDIT_LIST_ENTRY)
    messages = [
        (TOPICS.list_entries.name, entry["uscc"].encode(), writer.encode(entry))
        for entry in entries
    ]
    for record_type, topic, records in (
        ("measure", TOPICS.measures.name, measure_records()),
        ("credit_list_type", TOPICS.list_types.name, list_type_records()),
    ):
        writer = RecordWriter(kafka, REGISTRY_RECORD_TYPES[record_type])
        messages += [(topic, r["code"].encode(), writer.encode(r)) for r in records]
    return messages


def reset(kafka: KafkaClients, settings: Settings) -> None:
    """The benchmark's topics, empty."""
    delete_topics(kafka, PREFIX, gone=True)
    specs = [TOPICS.list_entries, TOPICS.measures, TOPICS.list_types, TOPICS.matter_events]
    apply_topics(kafka.admin(), settings, specs)


def count_messages(kafka: KafkaClients, topic: str) -> int:
    consumer = kafka.consumer(f"bench-{uuid.uuid4()}")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in partitions
            )
        )
    finally:
        consumer.close()


# -- the baseline: a dict loaded by a bare consumer, served by a minimal ASGI app -----------------


def baseline(settings: Settings, port: int) -> None:
    import uvicorn

    kafka = KafkaClients(settings, "streams")
    topic = TOPICS.list_entries.name
    started = time.monotonic()
    consumer = kafka.consumer(kafka.group(f"bench-{uuid.uuid4().hex[:8]}"))
    partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    deserialize = kafka.avro_deserializer()
    context = SerializationContext(topic, MessageField.VALUE)
    table: dict[str, list[dict[str, Any]]] = defaultdict(list)
    pending = {p: end for p, end in ends.items() if end > 0}
    while pending:
        for message in consumer.consume(1000, timeout=0.5):
            if message.error() is not None:
                continue
            entry = deserialize(message.value(), context)
            table[entry["uscc"]].append(entry)
            if (message.offset() or 0) + 1 >= pending.get(message.partition() or 0, 0):
                pending.pop(message.partition() or 0, None)
    consumer.close()
    print(
        json.dumps({"loaded": sum(map(len, table.values())), "seconds": time.monotonic() - started})
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        query = parse_qs(scope["query_string"].decode())
        found = table.get(query["uscc"][0], [])
        body = json.dumps(found, default=str, ensure_ascii=False).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False
    )


def service_process(settings: Settings, port: int) -> None:
    run_service(settings, CreditCheckSettings(port=port), TOPICS)


# -- the measurements -----------------------------------------------------------------------------


def wait_ready(
    process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 900
) -> float:
    """Seconds from now until ``url`` answers 200."""
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise SystemExit(f"exited before it was ready; {log}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise SystemExit(f"not ready in {timeout} s; {log}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def resident_mb(process: subprocess.Popen[bytes]) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def time_checks(
    base: str, queries: list[str], warmup: int, token: str | None
) -> tuple[list[float], dict[str, int]]:
    """The latency (ms) of each query after the first ``warmup``; answers by status/verdict."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    outcomes: dict[str, int] = defaultdict(int)
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for index, query in enumerate(queries):
            started = time.perf_counter()
            answer = client.get(f"/v1/checks?{query}")
            body = answer.content
            elapsed = (time.perf_counter() - started) * 1000
            if index >= warmup:
                latencies.append(elapsed)
                outcomes[outcome(answer.status_code, body)] += 1
    return latencies, dict(outcomes)


def outcome(status: int, body: bytes) -> str:
    """The service's verdict; for the baseline, whether the entity had entries."""
    if status != 200:
        return str(status)
    answer = json.loads(body)
    if isinstance(answer, dict):
        return str(answer["verdict"])
    return "with entries" if answer else "without entries"


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 3)

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def server_mean_ms(base: str) -> float:
    """The service's own mean time per check (its histogram), from /metrics."""
    values = {}
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        for name in ("xietong_credit_check_seconds_sum", "xietong_credit_check_seconds_count"):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    count = values.get("xietong_credit_check_seconds_count", 0.0)
    return round(values["xietong_credit_check_seconds_sum"] / count * 1000, 3) if count else 0.0


def issue_token(settings: Settings) -> tuple[str, int]:
    url = settings.database_url
    migrate(url)
    with transaction(session_factory(url)) as session:
        service.load_catalog(session, Actor.system("bench-credit-check"))
        issued = service.issue_token(session, Actor.admin("bench-credit-check"), DEPARTMENT)
        return issued.token, issued.credential.id


def revoke_token(settings: Settings, credential_id: int) -> None:
    with transaction(session_factory(settings.database_url)) as session:
        service.revoke_credential(session, Actor.admin("bench-credit-check"), credential_id)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--listings", type=int, default=100_000, help="listings in the state")
    parser.add_argument("--checks", type=int, default=10_000, help="checks timed")
    parser.add_argument("--warmup", type=int, default=1_000, help="checks sent first, untimed")
    parser.add_argument("--service", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = get_settings()
    if args.service:
        service_process(settings, args.service)
        return
    if args.baseline:
        baseline(settings, args.baseline)
        return

    LocalStack(settings).up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    kafka = KafkaClients(settings)
    register_all(kafka.schema_registry())
    reset(kafka, settings)
    out = settings.home / "bench" / "credit_check.json"
    workdir = out.parent / f"credit-check-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(6)

    print(f"producing {args.listings} listings …", file=sys.stderr)
    entries, listed = workload(args.listings, rng)
    produce_backlog(kafka, encoded(kafka, entries))
    matter_types = sorted({m["code"] for r in measure_records() for m in r["matter_types"]})
    queries = checks(args.warmup + args.checks, listed, matter_types, rng)
    token, credential = issue_token(settings)
    results: dict[str, Any] = {
        "run": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "listings": args.listings,
        "list_entries": len(entries),
        "entities": len(listed),
        "checks": args.checks,
        "warmup": args.warmup,
        "p99_target_ms": P99_TARGET_MS,
    }
    try:
        for role in ("service", "baseline"):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            log = workdir / f"{role}.log"
            process = start(MODULE, role, str(port), log=log)
            try:
                ready_url = f"{base}/ready" if role == "service" else f"{base}/?uscc=-"
                load_seconds = wait_ready(process, ready_url, log)
                print(f"{role}: loaded in {load_seconds:.1f} s; checking …", file=sys.stderr)
                latencies, outcomes = time_checks(
                    base, queries, args.warmup, token if role == "service" else None
                )
                measured = {
                    "load_seconds": round(load_seconds, 2),
                    "resident_mb": resident_mb(process),
                    **percentiles(latencies),
                    "answers": outcomes,
                }
                if role == "service":
                    measured["server_mean_ms"] = server_mean_ms(base)
            finally:
                stop(process, signal.SIGINT)
            if role == "service":
                measured["matter_events_on_topic"] = count_messages(
                    kafka, TOPICS.matter_events.name
                )
            results[role] = measured
            print(f"{role}: {measured}", file=sys.stderr)
    finally:
        revoke_token(settings, credential)
    service_p99 = results["service"]["p99_ms"]
    results["p99_over_baseline_ms"] = round(service_p99 - results["baseline"]["p99_ms"], 3)
    results["meets_target"] = service_p99 < P99_TARGET_MS
    write_report(out, results)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
