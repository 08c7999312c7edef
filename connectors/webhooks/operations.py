"""What an operator asks of the webhooks: each endpoint's status, the dead letters, and
a replay of one of them (``xietong webhooks status | dead-letters | replay``).

* **status** joins three sources: the registry's endpoints; Kafka for each inbox's backlog
  (its end offset less the worker group's committed offset) and the dead letters
  (``webhooks.dead-letters``, read whole); and the running worker's ``/metrics`` for the
  last success, the last failure and its reason, and the oldest undelivered item's age
  (absent when the worker does not run).
* **replay** re-sends a dead letter's body, exactly as it was sent, to the department's
  endpoint as it is registered now, freshly signed, with the same ``webhook-id`` — a
  receiver that had it already drops it. One attempt; it says what came back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from confluent_kafka import TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client.parser import text_string_to_metric_families

from connectors.webhooks.delivery import Answer, Outcome, outcome_of, signed_headers, wire_now
from connectors.webhooks.settings import GROUP
from connectors.webhooks.worker import Endpoints
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.topics import WEBHOOK_DEAD_LETTERS, DepartmentTopic


def dead_letters(clients: KafkaClients) -> list[dict[str, Any]]:
    """Every dead letter on ``webhooks.dead-letters`` now, oldest first (one per id)."""
    deserialize = clients.avro_deserializer()
    topic = WEBHOOK_DEAD_LETTERS.name
    found: dict[str, dict[str, Any]] = {}
    for message in clients.read_to_end(topic, "dead-letters"):
        record: dict[str, Any] | None = deserialize(  # type: ignore[assignment]
            message.value(), SerializationContext(topic, MessageField.VALUE)
        )
        if record is not None:
            found.setdefault(record["dead_letter_id"], record)
    return sorted(found.values(), key=lambda record: record["last_attempt_at"])


@dataclass(frozen=True)
class EndpointStatus:
    department: str
    endpoint_id: int
    url: str
    backlog: int | None  # inbox records not yet committed by the worker; None: no inbox
    dead_letters: int
    last_dead_letter_reason: str
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure_reason: str = ""
    oldest_undelivered_seconds: float | None = None


def backlogs(clients: KafkaClients, departments: Iterable[str]) -> dict[str, int | None]:
    """Department → how many of its inbox's records the worker has not committed."""
    consumer = clients.consumer(clients.group(GROUP), **{"log_level": 2})
    try:
        present = consumer.list_topics(timeout=10).topics
        partitions = [
            TopicPartition(DepartmentTopic.inbox(code), 0)
            for code in departments
            if DepartmentTopic.inbox(code) in present
        ]
        committed = {p.topic: p.offset for p in consumer.committed(partitions, timeout=10)}
        result: dict[str, int | None] = {code: None for code in departments}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(partition, timeout=10)
            position = committed.get(partition.topic, -1)
            start = position if position >= 0 else low
            code = DepartmentTopic.INBOX.code_of(partition.topic)
            if code is not None:
                result[code] = max(0, high - start)
        return result
    finally:
        consumer.close()


def worker_figures(metrics_url: str) -> dict[str, dict[str, Any]]:
    """Department → the running worker's last success/failure figures; empty when the
    worker does not answer."""
    try:
        text = httpx.get(metrics_url, timeout=3).text
    except httpx.HTTPError:
        return {}
    figures: dict[str, dict[str, Any]] = {}
    names = {
        "xietong_webhooks_last_success_timestamp_seconds": "last_success_at",
        "xietong_webhooks_last_failure_timestamp_seconds": "last_failure_at",
        "xietong_webhooks_oldest_undelivered_age_seconds": "oldest_undelivered_seconds",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            department = sample.labels.get("department")
            if department is None:
                continue
            mine = figures.setdefault(department, {})
            if sample.name in names:
                value: Any = sample.value
                if sample.name.endswith("timestamp_seconds"):
                    value = datetime.fromtimestamp(value, business_clock().zone)
                mine[names[sample.name]] = value
            elif sample.name == "xietong_webhooks_last_failure_info":
                mine["last_failure_reason"] = sample.labels.get("reason", "")
    return figures


def endpoint_status(
    clients: KafkaClients, endpoints: Endpoints, metrics_url: str
) -> list[EndpointStatus]:
    """Each registered endpoint's status (see the module's docstring)."""
    endpoints.read()
    registered = endpoints.all()
    behind = backlogs(clients, registered)
    letters = dead_letters(clients)
    figures = worker_figures(metrics_url)
    rows = []
    for code, endpoint in sorted(registered.items()):
        own = [letter for letter in letters if letter["department"] == code]
        rows.append(
            EndpointStatus(
                code,
                endpoint.id,
                endpoint.url,
                behind.get(code),
                len(own),
                own[-1]["reason"] if own else "",
                **figures.get(code, {}),
            )
        )
    return rows


@dataclass(frozen=True)
class Replayed:
    dead_letter: dict[str, Any]
    url: str
    answer: Answer

    @property
    def delivered(self) -> bool:
        return outcome_of(self.answer) is Outcome.DELIVERED


class ReplayError(LookupError):
    """No such dead letter, or no endpoint to replay it to; says which."""


def replay(
    clients: KafkaClients, endpoints: Endpoints, dead_letter_id: str, timeout: float
) -> Replayed:
    """POST the dead letter's body once more (see the module's docstring)."""
    try:
        uuid.UUID(dead_letter_id)
    except ValueError:
        raise ReplayError(f"{dead_letter_id!r} is not a dead letter id (a UUID)") from None
    letter = next(
        (row for row in dead_letters(clients) if row["dead_letter_id"] == dead_letter_id), None
    )
    if letter is None:
        raise ReplayError(
            f"no dead letter {dead_letter_id} on {WEBHOOK_DEAD_LETTERS.name}"
            " (xietong webhooks dead-letters lists them)"
        )
    if not letter["body"]:
        raise ReplayError(f"dead letter {dead_letter_id} has no body to send: {letter['reason']}")
    endpoints.read()
    endpoint = endpoints.all().get(letter["department"])
    if endpoint is None:
        raise ReplayError(
            f"department {letter['department']} has no webhook endpoint now: register one"
            " (xietong webhooks register) and replay again"
        )
    body = letter["body"].encode()
    now = wire_now()
    headers = signed_headers(
        letter["webhook_id"], now, body, endpoint.secrets, letter["content_type"]
    )
    try:
        response = httpx.post(endpoint.url, content=body, headers=headers, timeout=timeout)
        answer = Answer(
            response.status_code, f"HTTP {response.status_code} {response.reason_phrase}"
        )
    except httpx.TimeoutException:
        answer = Answer(None, f"timeout after {timeout:g} s")
    except httpx.TransportError as error:
        answer = Answer(None, f"connection failed: {error}")
    return Replayed(letter, endpoint.url, answer)
