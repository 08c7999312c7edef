"""Records for the sink's tests and benchmark: the sample province's canonical records,
双告知 pushes through their states, and deliveries to department inboxes — produced as
the connectors and the processors produce them (Avro, keyed by USCC)."""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from app.samples import SampleGenerator
from schemas import CANONICAL_RECORD_TYPES, DUAL_NOTICE_RECORD_TYPES, RecordType
from streams.runtime import RecordWriter
from tests.kafka_helpers import produce_all
from xietong.ids import deterministic_id
from xietong.kafka import KafkaClients
from xietong.topics import DEPARTMENT_INBOX, apply_topics
from xietong.uscc import make_uscc

PUSH = DUAL_NOTICE_RECORD_TYPES["dual_notice_push"]
ALERT = DUAL_NOTICE_RECORD_TYPES["dual_notice_alert"]


@dataclass(frozen=True)
class Outgoing:
    """One record to produce: its type, its key (USCC) and the topic (default: the type's)."""

    record: RecordType
    key: str
    value: dict[str, Any]
    topic: str | None = None


def canonical(records: int, seed: int = 0) -> list[Outgoing]:
    """``records`` good canonical records of the sample province, with envelopes."""
    generated = SampleGenerator(seed=seed, bad_share=0.0).generate(records)
    now = int(time.time() * 1000)
    out = []
    for sample in generated.records:
        source_uscc = sample.canonical.get("authority_uscc") or sample.canonical.get(
            "registering_authority_uscc", sample.canonical.get("listing_authority_uscc", "")
        )
        value = {
            "envelope": {
                "event_id": deterministic_id(f"{seed}|{sample.export}|{sample.source_record_id}|1"),
                "source_department_uscc": source_uscc,
                "source_department_name": sample.export,
                "source_system": sample.export,
                "source_record_id": sample.source_record_id,
                "record_version": "1",
                "source_partition": "test",
                "source_offset": sample.source_record_id,
                "event_time": now,
                "ingest_time": now,
            },
            **sample.canonical,
        }
        record = CANONICAL_RECORD_TYPES[sample.record_type]
        out.append(Outgoing(record, value["uscc"], value))
    return out


def decoded_records(schema: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Random records of ``schema`` as the sink's decoder returns them (logical types)."""
    parsed = parse_schema(schema)
    out = []
    for raw in generate_many(parsed, count):
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed, raw)
        buffer.seek(0)
        record = schemaless_reader(buffer, parsed, None)
        assert isinstance(record, dict)
        out.append(record)
    return out


def _entity(uscc: str, moment: int) -> dict[str, Any]:
    return {
        "registration_event_id": deterministic_id(f"registration|{uscc}"),
        "event_kind": "ESTABLISH",
        "registered_at": moment,
        "uscc": uscc,
        "name": "杭州测试餐饮有限公司",
        "entity_type": "LIMITED_LIABILITY",
        "legal_representative": "张三",
        "address": "浙江省杭州市西湖区文三路1号",
        "division_code": "330106",
        "business_scope": "许可项目：食品经营。",
        "industry_code": "H6210",
        "registering_authority_name": "杭州市西湖区市场监督管理局",
        "registering_authority_uscc": "11330106MB1234567X",
        "registrar_code": "hz-xh-amr",
    }


def push_states(
    uscc: str, department: str, states: Iterable[str], moment: int | None = None
) -> list[dict[str, Any]]:
    """One push to ``department`` going through ``states`` (PUSHED, CLAIMED, RETURNED …),
    one record per state with growing versions, as the 双告知 processor republishes it."""
    start = moment if moment is not None else int(time.time() * 1000)
    push_id = deterministic_id(f"push|{uscc}|{department}")
    records = []
    claimed_at = None
    for version, state in enumerate(states, start=1):
        changed = start + version * 60_000
        if state == "CLAIMED":
            claimed_at = changed
        records.append(
            {
                "push_id": push_id,
                "version": version,
                "state": state,
                "routing": "AUTO",
                "entity": _entity(uscc, start),
                "item": {
                    "code": "FOOD-OPERATION",
                    "name": "食品经营许可",
                    "legal_basis": "食品安全法",
                    "certificate_name": "食品经营许可证",
                },
                "matched_by": ["食品经营"],
                "department": {
                    "code": department,
                    "uscc": "11330106MB7654321X",
                    "name": department,
                },
                "pushed_at": start,
                "claim_deadline": start + 15 * 86_400_000,
                "claimed_at": claimed_at,
                "licence_deadline": None,
                "escalated_at": None,
                "unlicensed_alert_at": None,
                "return_reason": "NO_SUCH_ITEM" if state == "RETURNED" else None,
                "reason_text": None,
                "fulfilled_by_licence": None,
                "reassigned_to_push_id": None,
                "reassigned_from_push_id": None,
                "state_changed_at": changed,
                "changed_by": department,
            }
        )
    return records


def dual_notice_traffic(
    departments: list[str], entities: int, rng: random.Random
) -> list[Outgoing]:
    """Pushes with their histories on ``dualnotice.pushes``, each PUSHED state delivered to
    its department's inbox, half of them then claimed, some returned."""
    out: list[Outgoing] = []
    for _ in range(entities):
        uscc = make_uscc("91", "330106", rng=rng)
        department = rng.choice(departments)
        fate = rng.random()
        states = ["PUSHED"] + (["CLAIMED"] if fate < 0.5 else ["RETURNED"] if fate < 0.7 else [])
        for record in push_states(uscc, department, states):
            out.append(Outgoing(PUSH, uscc, record))
            if record["state"] == "PUSHED":
                out.append(Outgoing(PUSH, uscc, record, DEPARTMENT_INBOX.name(department)))
    return out


def make_inboxes(kafka: KafkaClients, departments: Iterable[str]) -> None:
    """The departments' inbox topics (the registry makes them when it onboards one)."""
    apply_topics(kafka.admin(), kafka.settings, [DEPARTMENT_INBOX.spec(d) for d in departments])


def encoded(kafka: KafkaClients, records: Iterable[Outgoing]) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value) of each record, in the Confluent wire format."""
    writers: dict[str, RecordWriter] = {}
    for item in records:
        writer = writers.get(item.record.name)
        if writer is None:
            writer = writers[item.record.name] = RecordWriter(kafka, item.record)
        yield item.topic or item.record.topic.name, item.key.encode(), writer.encode(item.value)


def produce(kafka: KafkaClients, records: Iterable[Outgoing]) -> int:
    """Produce the records (flushed); how many."""
    return produce_all(kafka, encoded(kafka, records))


def unique_tag() -> str:
    return f"{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:6]}"
