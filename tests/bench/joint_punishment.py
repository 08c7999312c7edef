"""Joint-punishment processor: throughput on one worker, against a bare confluent-kafka
loop applying the same rules, in the same run.

    make bench            # or: python -m tests.bench.joint_punishment --events 40000

On the running local stack, with the sample province's measures, lists and departments
on the registry's topics (``make run`` puts them there), the benchmark

1. produces ``--events`` input events about ``--entities`` entities of the sample
   province to input topics of its own: matter events (40 %: departments handling
   procurement, subsidies, bids, land, bonds …), licences (30 %), penalties (26 %, a
   tenth of them revoking a licence), 列入 (3 %: serious, abnormal-operation, tax and
   judgment-defaulter lists) and 移出 (1 %) — listings are rare beside the rest, but each
   makes a dozen notices; it then starts one worker of the processor
   (``JointPunishmentProcessor``, its own app id and topics: nothing reaches the
   platform's topics or any department) and times it through that backlog:
   **events/s on one worker**, with what it sent;
2. does the same with the baseline: one process, a confluent-kafka consumer on the same
   topics, the same Avro decoding, the same rule methods (``JointPunishmentRules``) on
   a dict in memory, the same records encoded and produced, offsets committed after the
   producer's flush — and no changelogs, no RocksDB, no timers, no feedback relay.

Last, unless ``--no-ceilings``, a worker runs through the same backlog twice more with
the rules stubbed out — doing nothing, then writing one table entry per event — to show
Faust's own ceiling on the machine beside the processor's figure.

Results: ``<home>/bench/joint_punishment.json`` (``.local/bench/`` by default; target:
10,000 events/s per worker).
"""

from __future__ import annotations

import argparse
import random
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Message

from deploy.local.stack import LocalStack
from schemas import (
    CREDIT_LIST_ENTRY,
    DEAD_LETTER_RECORD,
    JOINT_PUNISHMENT_RECORD_TYPES,
    LICENCE,
    MATTER_EVENT,
    PENALTY,
    register_all,
)
from streams.joint_punishment.app import JointPunishmentTopics, run_worker
from streams.joint_punishment.rules import (
    EVENTS,
    JointPunishmentRules,
    PunishmentCatalog,
    PunishmentOutput,
)
from streams.joint_punishment.settings import JointPunishmentSettings
from streams.runtime import RecordWriter, ReferenceData
from tests.bench import harness
from tests.joint_punishment_records import PROVINCE, licence, list_entry, matter, penalty, today
from tests.stream_worker import free_port
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings, get_settings
from xietong.topics import (
    REGISTRY_DEPARTMENTS,
    REGISTRY_LIST_TYPES,
    REGISTRY_MEASURES,
    STREAMS_INTERNAL_TOPIC_PREFIX,
)
from xietong.uscc import make_uscc

THROUGHPUT_TARGET = 10_000  # events/s per worker, issue 6
APP_NAME = "joint-punishment-bench"
PREFIX = f"{STREAMS_INTERNAL_TOPIC_PREFIX}{APP_NAME}."
INPUTS = ("list-entries", "penalties", "licences", "matters", "feedback")
OUTPUTS = (
    "sanction-notices",
    "licence-reviews",
    "restriction-hits",
    "alerts",
    "lift-notices",
    "dead-letter",
)
TOPIC_SUFFIXES = (*INPUTS, *OUTPUTS, "inbound", "inbox", "baseline-out")
BASELINE_GROUP = f"{STREAMS_INTERNAL_TOPIC_PREFIX}{APP_NAME}-baseline"
MODULE = "tests.bench.joint_punishment"
UNIT = "events"


def bench_topics(app_name: str = APP_NAME) -> JointPunishmentTopics:
    """The processor's topics in the benchmark: its own, every inbox one topic."""
    return harness.own_topics(JointPunishmentTopics(), PREFIX, app_name)


# -- the workload ----------------------------------------------------------------------------------

DIVISIONS = ("330102", "330106", "330110", "330203", "330206", "330212")
#: Who handles which matter, by division (the sector's department there).
MATTERS = {
    "GOVERNMENT_PROCUREMENT": "finance",
    "SUBSIDY": "finance",
    "PUBLIC_PROJECT_BID": "housing",
    "LAND_SUPPLY": "nr",
    "BOND_ISSUE": "drc",
    "PERMIT_APPLICATION": "amr",
}
LISTS = (
    ("SERIOUS_ILLEGAL_DISHONEST", "zj-amr"),
    ("ABNORMAL_OPERATION", "zj-amr"),
    ("MAJOR_TAX_VIOLATION", "zj-tax"),
    ("JUDGMENT_DEFAULTER", "zj-court"),
)
COUNTY = {
    "330102": "hz-sc",
    "330106": "hz-xh",
    "330110": "hz-yh",
    "330203": "nb-hs",
    "330206": "nb-bl",
    "330212": "nb-yz",
}


KNOWN_DEPARTMENTS = {d.code for d in PROVINCE.departments}


def department(division: str, sector: str) -> str:
    """The county's department of the sector, else the city's."""
    code = f"{COUNTY[division]}-{sector}"
    return code if code in KNOWN_DEPARTMENTS else f"{COUNTY[division][:2]}-{sector}"


def workload(events: int, entities: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """``events`` input events about ``entities`` entities, as (input, record)."""
    usccs = [make_uscc("91", rng.choice(DIVISIONS), rng=rng) for _ in range(entities)]
    listed: list[tuple[str, str, str, str]] = []
    out: list[tuple[str, dict[str, Any]]] = []
    day = today()
    for index in range(events):
        uscc = rng.choice(usccs)
        division = uscc[2:8]
        roll = rng.random()
        if roll < 0.40:
            matter_type = rng.choice(sorted(MATTERS))
            code = department(division, MATTERS[matter_type])
            record = matter(
                uscc,
                code,
                matter_type,
                f"M-{index}",
                matter_date=day - timedelta(days=rng.randint(0, 60)),
                source=rng.choice(("DEPARTMENT_REPORT", "CREDIT_CHECK")),
            )
            out.append(("matters", record))
        elif roll < 0.70:
            authority = department(division, rng.choice(("amr", "health", "transport")))
            out.append(("licences", licence(uscc, f"X-{index}", authority)))
        elif roll < 0.96:
            categories = ("LICENCE_SUSPENSION_OR_REVOCATION",) if rng.random() < 0.1 else ("FINE",)
            authority = department(division, "amr")
            out.append(
                (
                    "penalties",
                    penalty(uscc, f"罚-{index}", categories=categories, authority=authority),
                )
            )
        elif roll < 0.99 or not listed:
            list_type, authority = rng.choice(LISTS)
            entry = f"L-{index}"
            listed_on = day - timedelta(days=rng.randint(0, 90))
            planned = listed_on + timedelta(days=365 * 3)
            record = list_entry(
                uscc,
                entry,
                list_type=list_type,
                listed_on=listed_on,
                planned_removal_on=planned,
                authority=authority,
            )
            listed.append((uscc, entry, list_type, authority))
            out.append(("list-entries", record))
        else:
            uscc, entry, list_type, authority = listed.pop(rng.randrange(len(listed)))
            record = list_entry(
                uscc,
                entry,
                action="REMOVED",
                list_type=list_type,
                listed_on=day - timedelta(days=100),
                removed_on=day,
                removal_reason="CREDIT_REPAIR",
                authority=authority,
            )
            out.append(("list-entries", record))
    return out


WRITERS = {
    "list-entries": CREDIT_LIST_ENTRY,
    "penalties": PENALTY,
    "licences": LICENCE,
    "matters": MATTER_EVENT,
}


def encode_all(
    kafka: KafkaClients, events: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, bytes, bytes]]:
    """The events in the wire format, each for its input topic of the benchmark."""
    writers = {name: RecordWriter(kafka, record) for name, record in WRITERS.items()}
    return [
        (f"{PREFIX}{name}", record["uscc"].encode(), writers[name].encode(record))
        for name, record in events
    ]


# -- the processor and the baseline, each a process of its own ------------------------------------


def read_catalog(kafka: KafkaClients) -> PunishmentCatalog:
    held = [
        ReferenceData(kafka, spec)
        for spec in (REGISTRY_MEASURES, REGISTRY_LIST_TYPES, REGISTRY_DEPARTMENTS)
    ]
    for reference in held:
        reference.load()
        reference.stop()
    measures, list_types, departments = (reference.values() for reference in held)
    return PunishmentCatalog(measures, list_types, departments)


def baseline(settings: Settings) -> None:
    """The bare loop: consume, decode, apply the rules in memory, encode, produce; commit
    after flush."""
    kafka = KafkaClients(settings, "streams")
    catalog = read_catalog(kafka)
    rules = JointPunishmentRules({}, lambda: catalog)
    apply = {
        f"{PREFIX}list-entries": rules.on_list_entry,
        f"{PREFIX}penalties": rules.on_penalty,
        f"{PREFIX}licences": rules.on_licence,
        f"{PREFIX}matters": rules.on_matter,
    }
    writers = {
        name: RecordWriter(kafka, record)
        for name, record in {
            **JOINT_PUNISHMENT_RECORD_TYPES,
            "dead_letter": DEAD_LETTER_RECORD,
        }.items()
    }
    deserialize = kafka.avro_deserializer()
    consumer = kafka.consumer(BASELINE_GROUP)
    producer = kafka.producer(**{"linger.ms": 5})
    consumer.subscribe(list(apply))
    clock = business_clock()

    def handle(message: Message) -> None:
        record = deserialize(message.value(), None)
        assert isinstance(record, dict)
        outcome = apply[message.topic() or ""](record, clock.now_ms())
        for out in outcome.outgoing:
            value = writers[out.record_type].encode(out.value)
            producer.produce(f"{PREFIX}baseline-out", key=out.key.encode(), value=value)
            for _ in out.inboxes:
                producer.produce(f"{PREFIX}baseline-out", key=out.key.encode(), value=value)

    harness.bare_loop(consumer, producer, handle)


#: Faust's own ceiling on this machine, measured with the rules stubbed out: what one
#: worker reaches with no rule at all, and with one table write (one changelog record) per
#: event, which most of the processor's inputs make (a matter or a licence is kept).
CEILINGS = {
    "agent-only": "Faust reads and decodes every event; the rule does nothing",
    "one-table-write": "as agent-only, and the rule writes one table entry per event",
}


def worker(settings: Settings, metrics_port: int, ceiling: str | None = None) -> None:
    rules = JointPunishmentSettings(metrics_port=metrics_port, tick_interval=5.0)
    app_name = APP_NAME
    if ceiling is not None:
        stub_rules(ceiling)
        app_name = f"{APP_NAME}-{ceiling}"  # its own group: it reads the backlog again
    run_worker(settings, rules, loglevel="warning", topics=bench_topics(app_name))


def stub_rules(ceiling: str) -> None:
    """Replace the rule methods (in this worker process only) for a ceiling run."""
    write = ceiling == "one-table-write"

    def rule(self: JointPunishmentRules, record: dict[str, Any], now: int) -> PunishmentOutput:
        EVENTS.labels("ceiling").inc()
        if write:
            self.entities[record["uscc"]] = {"seen": now}
        return PunishmentOutput()

    for name in ("on_list_entry", "on_penalty", "on_licence", "on_matter"):
        setattr(JointPunishmentRules, name, rule)


# -- the measurements ------------------------------------------------------------------------------


def worker_metrics(port: int) -> dict[str, float]:
    """The worker's counters: events by input, records made by kind."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    return harness.metric_totals(text, "xietong_joint_punishment_")


def events_processed(port: int) -> float:
    return worker_metrics(port).get("events", 0.0)


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--events", type=int, default=40_000, help="input events in the backlog")
    parser.add_argument("--entities", type=int, default=10_000, help="entities they are about")
    parser.add_argument("--out", type=Path, default=None, help="default: <home>/bench/…json")
    parser.add_argument("--worker", nargs=2, metavar=("PORT", "CEILING"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-ceilings", action="store_true", help="skip the runs with the rules stubbed out"
    )
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = get_settings()
    if args.worker:
        worker(settings, int(args.worker[0]), None if args.worker[1] == "-" else args.worker[1])
        return
    if args.baseline:
        baseline(settings)
        return

    out: Path = args.out or settings.home / "bench" / "joint_punishment.json"
    LocalStack(settings).up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    kafka = KafkaClients(settings)
    register_all(kafka.schema_registry())
    catalog = read_catalog(kafka)
    if len(catalog.measures) == 0 or len(catalog.departments) == 0:
        raise SystemExit(
            f"{REGISTRY_MEASURES.name} or {REGISTRY_DEPARTMENTS.name} is empty: publish the"
            " catalog first (make run)"
        )
    apps = [APP_NAME, *(f"{APP_NAME}-{ceiling}" for ceiling in CEILINGS)]
    harness.reset(kafka, settings, PREFIX, TOPIC_SUFFIXES, apps=apps, groups=[BASELINE_GROUP])
    workdir = (out.parent / f"joint-punishment-{datetime.now(UTC):%Y%m%dT%H%M%S}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(6)

    print(f"producing {args.events} events about {args.entities} entities …", file=sys.stderr)
    events = workload(args.events, args.entities, rng)
    mix = {name: sum(1 for kind, _ in events if kind == name) for name in WRITERS}
    harness.produce_backlog(kafka, encode_all(kafka, events))
    results = []

    port = free_port()
    process = harness.start(MODULE, "worker", str(port), "-", log=workdir / "worker.log")
    try:
        print("processor: the backlog …", file=sys.stderr)
        throughput = harness.time_backlog(args.events, partial(events_processed, port), UNIT)
        made = worker_metrics(port)
        print(f"processor: {throughput}", file=sys.stderr)
        results.append(harness.result("processor (faust, one worker)", throughput, made=made))
    finally:
        harness.stop(process)

    log = workdir / "baseline.log"
    process = harness.start(MODULE, "baseline", log=log)
    try:
        print("baseline: the backlog …", file=sys.stderr)
        throughput = harness.time_backlog(
            args.events, lambda: harness.processed_by_baseline(log), UNIT
        )
        print(f"baseline: {throughput}", file=sys.stderr)
        results.append(
            harness.result("baseline (bare confluent-kafka loop, same rules)", throughput, made={})
        )
    finally:
        harness.stop(process)

    ceilings: dict[str, dict[str, Any]] = {}
    for ceiling, what in () if args.no_ceilings else CEILINGS.items():
        port = free_port()
        process = harness.start(
            MODULE, "worker", str(port), ceiling, log=workdir / f"{ceiling}.log"
        )
        try:
            print(f"faust ceiling, {ceiling}: the backlog …", file=sys.stderr)
            throughput = harness.time_backlog(args.events, partial(events_processed, port), UNIT)
            print(f"faust ceiling, {ceiling}: {throughput}", file=sys.stderr)
            ceilings[ceiling] = {"what": what, **throughput}
        finally:
            harness.stop(process)

    processor, bare = results
    report: dict[str, Any] = {
        "benchmark": "joint_punishment",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "workload": {"events": args.events, "entities": args.entities, "by_input": mix},
        "targets": {"events_per_second": THROUGHPUT_TARGET},
        "results": results,
        "processor_share_of_baseline": round(
            processor["throughput"]["events_per_second"] / bare["throughput"]["events_per_second"],
            3,
        ),
        "meets_throughput_target": (
            processor["throughput"]["events_per_second"] >= THROUGHPUT_TARGET
        ),
        "faust_ceilings": ceilings,
    }
    harness.write_report(out, report)
    harness.delete_topics(kafka, PREFIX)


if __name__ == "__main__":
    main()
