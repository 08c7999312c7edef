"""A province's first day, against the real broker: a 双告知 worker started with a history
cut-over reads a year-old backlog of registrations and then new ones, and tells departments
only of the new (issue 13 §5; streams/README.md, "A province's first day").

The worker's claim period is one hour and its cut-over two minutes less than an hour ago,
so the new registrations, dated just after the cut-over, fall due about two minutes after
the module starts: their escalations are the barrier that shows every history push has
been through its own deadline too (each partition gets new registrations after its history,
and the timer sends due pushes in deadline order).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka.serialization import MessageField, SerializationContext

from registry.grants import inbox_topic
from schemas import REGISTRATION
from streams.dual_notice.rules import APP_NAME
from streams.runtime import uscc_partition
from tests.dual_notice_records import registration
from tests.kafka_helpers import TopicWindow, eventually
from tests.stream_worker import (
    Onboarding,
    Worker,
    publish_catalog,
    running,
    skip_backlog,
    streams_group,
    until_group_empty,
)
from xietong import topics
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

HISTORY, NEW = 10_000, 100
DEPARTMENTS = ("hz-xh-amr", "hz-xh-transport")  # 西湖区 registrar, and its 道路货物运输 approver
ROAD_FREIGHT = "道路货物运输（不含危险货物）"
#: How long after the module starts the new registrations fall due.
NEW_DUE_IN = timedelta(minutes=2)


@pytest.fixture(scope="module")
def cut_over() -> datetime:
    return business_clock().now() - timedelta(hours=1) + NEW_DUE_IN


@pytest.fixture(scope="module")
def worker(
    cut_over: datetime,
    registry_databases: Callable[[], str],
    stack_settings: Settings,
    kafka: KafkaClients,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """A 双告知 worker with the cut-over, reading from the records this module sends."""
    publish_catalog(registry_databases(), stack_settings, kafka)
    onboarding = Onboarding(kafka, stack_settings)
    for code in DEPARTMENTS:
        onboarding.onboard(code)
    group = streams_group(APP_NAME)
    until_group_empty(kafka, group)
    skip_backlog(kafka, group, [topics.REGISTRATIONS.name, topics.LICENCES.name])
    log = tmp_path_factory.mktemp("history-cutover") / "worker.log"
    settings = {"CLAIM_PERIOD": "PT1H", "HISTORY_UNTIL": cut_over.isoformat()}
    try:
        with running("dual-notice", log, **settings) as worker:
            yield worker
    finally:
        onboarding.offboard_all()


def xihu_usccs(count: int, partitions: int) -> list[str]:
    """``count`` new 西湖区 entities, spread round-robin over every partition."""
    usccs: list[str] = []
    while len(usccs) < count:
        uscc = make_uscc("91", "330106")
        if uscc_partition(uscc.encode(), partitions) == len(usccs) % partitions:
            usccs.append(uscc)
    return usccs


def send_all(kafka: KafkaClients, records: list[dict[str, Any]]) -> None:
    """Registrations through one producer, as the connector would publish a backlog."""
    topic = REGISTRATION.topic.name
    serialize = kafka.avro_serializer(REGISTRATION.schema_str)
    context = SerializationContext(topic, MessageField.VALUE)
    producer = kafka.producer(**{"linger.ms": 50})
    for record in records:
        producer.produce(topic, key=record["uscc"].encode(), value=serialize(record, context))
        producer.poll(0)
    assert producer.flush(60) == 0, f"{topic}: registrations not acknowledged"


def road_freight(uscc: str, registered_at: datetime) -> dict[str, Any]:
    return registration(
        "330106",
        (ROAD_FREIGHT,),
        industry="G5431",
        uscc=uscc,
        event_time_ms=int(registered_at.timestamp() * 1000),
    )


def counter(port: int, name: str) -> dict[str, float]:
    """A counter of the worker's /metrics, by its ``output`` label."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    pattern = rf'^{name}_total\{{output="([^"]+)"\}} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


def test_a_year_of_history_then_the_cut_over_tells_departments_only_of_the_new_registrations(
    worker: Worker, kafka: KafkaClients, stack_settings: Settings, cut_over: datetime
) -> None:
    """10,000 registrations dated last year that need 道路货物运输经营许可, then 100 dated
    after the cut-over: the history makes 10,000 pushes recorded on dualnotice.pushes and
    turned OVERDUE at their deadline, none in an inbox, no escalation; the new ones make
    100 pushes to the transport department's inbox, escalated to it and the registrar
    when their claim period ends."""
    partitions = stack_settings.uscc_partitions
    history = xihu_usccs(HISTORY, partitions)
    new = xihu_usccs(NEW, partitions)
    last_year = datetime.now(UTC) - timedelta(days=365)
    pushes = TopicWindow(kafka, topics.DUAL_NOTICE_PUSHES.name)
    inbox = TopicWindow(kafka, inbox_topic("hz-xh-transport"))
    registrar_inbox = TopicWindow(kafka, inbox_topic("hz-xh-amr"))
    alerts = TopicWindow(kafka, topics.DUAL_NOTICE_ALERTS.name)

    send_all(kafka, [road_freight(uscc, last_year) for uscc in history])
    send_all(kafka, [road_freight(uscc, cut_over + timedelta(seconds=1)) for uscc in new])

    # The barrier: the new pushes' escalations come after every history push's deadline.
    raised = eventually(
        alerts.read,
        lambda found: len({m.key for m in found} & {u.encode() for u in new}) == NEW,
        NEW_DUE_IN.total_seconds() + 240,
        lambda found: f"{len(found)} of the {NEW} new pushes escalated",
    )
    history_keys, new_keys = {u.encode() for u in history}, {u.encode() for u in new}
    assert [m for m in raised if m.key in history_keys] == []
    assert {m.value["kind"] for m in raised} == {"OVERDUE"} and len(raised) == NEW
    delivered = Counter(m.key for m in inbox.read())
    assert set(delivered) & history_keys == set()
    assert set(delivered) >= new_keys  # each new push, then its escalation
    assert set(Counter(m.key for m in registrar_inbox.read())) & history_keys == set()

    latest: dict[str, dict[str, Any]] = {}
    for message in pushes.read():
        record = message.value
        known = latest.get(record["push_id"])
        if known is None or record["version"] >= known["version"]:
            latest[record["push_id"]] = record
    states = Counter(
        (record["entity"]["uscc"].encode() in history_keys, record["state"], record["escalated_at"])
        for record in latest.values()
        if record["entity"]["uscc"].encode() in history_keys | new_keys
    )
    assert states[(True, "OVERDUE", None)] == HISTORY
    [(new_state, count)] = [(key, n) for key, n in states.items() if not key[0]]
    assert new_state[1] == "OVERDUE" and new_state[2] is not None and count == NEW

    taken = counter(worker.metrics_port, "xietong_dual_notice_history")
    assert taken["push"] >= HISTORY and taken["alert_overdue"] >= HISTORY
