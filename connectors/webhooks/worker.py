"""The webhook worker (``xietong webhooks run``): every department inbox, pushed to the
department's registered endpoint, in inbox order, at least once.

One Kafka consumer (as ``svc-webhooks``, group ``xietong.webhooks.delivery``) subscribes
to every inbox (``dept.<code>.inbox``, one partition each) and decodes each item with
the schema registry's Avro deserializer. Each inbox is a lane
(:mod:`connectors.webhooks.lanes`): its head is POSTed (:mod:`connectors.webhooks.delivery`)
by a bounded pool of threads, one attempt per department at a time, many departments at
once. The main thread alone talks to Kafka: it polls, hands heads to the pool, collects
the answers, and

* **commits** a partition's offset only once its item was delivered or dead-lettered:
  after a crash (kill -9 too) the worker starts again from the committed offsets, and
  only deliveries not yet committed are repeated — the receiver drops them by their
  ``webhook-id``;
* **pauses** a partition while its head waits for a retry (``consumer.pause``) and
  resumes it when the head is done; polling goes on, so the other departments'
  deliveries never wait for a slow or dead endpoint — only a pool full of hanging
  attempts could, and each attempt ends at ``XIETONG_WEBHOOKS_TIMEOUT``;
* gives an item up once it is older than the retry window
  (``XIETONG_WEBHOOKS_RETRY_WINDOW``, 24 h, from when it reached the inbox: a backlog
  behind an endpoint dead for longer drains, each item tried once), or at once on a
  refusal (4xx but 408/429): it goes to ``webhooks.dead-letters`` with the
  body, the last status and the reason, acknowledged before the offset is committed.

Why threads and not asyncio: the consumer, the producer and the registry database are
blocking clients, and the worker's concurrency is bounded by endpoints, not requests —
one in flight per department. A ``ThreadPoolExecutor`` of ``XIETONG_WEBHOOKS_CONCURRENCY``
threads around one shared ``httpx.Client`` keeps the Kafka side on one thread (as
librdkafka's pause/commit want) with no event loop to bridge.

A department without an endpoint has its items skipped (committed, counted as
``skipped``) — but only once the registry was read after the item was written: the
endpoints are read every few seconds, and an item newer than the last reading waits
for the next one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import Counter, Gauge, Histogram

from connectors.webhooks.delivery import (
    Answer,
    Backoff,
    InboxItem,
    Outcome,
    body_of,
    outcome_of,
    retry_after,
    signed_headers,
    wire_now,
)
from connectors.webhooks.lanes import Lane, Lanes, Pending
from connectors.webhooks.settings import GROUP, SERVICE, WebhookSettings
from registry import db
from registry.webhooks import endpoints_by_department
from schemas import WEBHOOK_DEAD_LETTER
from xietong.clock import business_clock
from xietong.ids import deterministic_id
from xietong.kafka import KafkaClients, produce
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.topics import WEBHOOK_DEAD_LETTERS, DepartmentTopic

logger = logging.getLogger("connectors.webhooks")

__all__ = ["GROUP", "SERVICE", "Endpoints", "WebhookSettings", "WebhookWorker"]


# -- metrics ----------------------------------------------------------------------------------

DELIVERIES = Counter(
    "xietong_webhooks_deliveries",
    "Inbox items finished, by department (one endpoint each) and outcome:"
    " delivered, dead_lettered, skipped (no endpoint)",
    ("department", "outcome"),
)
FAILURES = Counter(
    "xietong_webhooks_failures",
    "Failed attempts, by department and kind (timeout, connection, http_<status>)",
    ("department", "kind"),
)
RETRIES = Counter(
    "xietong_webhooks_retries", "Attempts scheduled again, by department", ("department",)
)
DEAD_LETTERS = Counter(
    "xietong_webhooks_dead_letters", "Items dead-lettered, by department", ("department",)
)
OLDEST_AGE = Gauge(
    "xietong_webhooks_oldest_undelivered_age_seconds",
    "Age of the oldest item read and not yet delivered, by department (0: none waiting)",
    ("department",),
)
LAST_SUCCESS = Gauge(
    "xietong_webhooks_last_success_timestamp_seconds",
    "When a delivery last succeeded, by department",
    ("department",),
)
LAST_FAILURE = Gauge(
    "xietong_webhooks_last_failure_timestamp_seconds",
    "When an attempt last failed, by department",
    ("department",),
)
LAST_FAILURE_REASON = Gauge(
    "xietong_webhooks_last_failure_info",
    "The last failed attempt's reason and status, by department (always 1)",
    ("department", "status", "reason"),
)
ATTEMPT_SECONDS = Histogram(
    "xietong_webhooks_attempt_seconds", "Duration of one POST attempt", ("department",)
)


# -- the registry's endpoints ----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A department's endpoint as the worker uses it: where, how, signed with which secrets."""

    id: int
    department: str
    url: str
    cloudevents: bool
    secrets: tuple[str, ...]  # the current one first; the previous one during its grace


class Endpoints:
    """The registry's endpoints, read every ``refresh`` seconds (:meth:`refresh`)."""

    def __init__(self, database_url: str, refresh: float) -> None:
        self.sessions = db.session_factory(database_url)
        self.refresh_seconds = refresh
        self._by_department: dict[str, Endpoint] = {}
        self._read_at_ms = 0  # real time, as the broker stamps records
        self._read_monotonic = float("-inf")

    def read(self) -> None:
        """Read them now (the previous secret only while its grace lasts)."""
        read_at_ms = int(wire_now().timestamp() * 1000)
        now = business_clock().now()  # the registry sets the grace by the business clock
        with db.transaction(self.sessions) as session:
            rows = endpoints_by_department(session)
            self._by_department = {
                code: Endpoint(
                    row.id,
                    code,
                    row.url,
                    row.cloudevents,
                    (row.secret,)
                    + (
                        (row.previous_secret,)
                        if row.previous_secret
                        and row.previous_secret_valid_until is not None
                        and row.previous_secret_valid_until > now
                        else ()
                    ),
                )
                for code, row in rows.items()
            }
        self._read_at_ms = read_at_ms
        self._read_monotonic = time.monotonic()

    def refresh(self) -> None:
        """Read them again when the last reading is ``refresh`` seconds old; a registry
        that does not answer keeps the last reading (logged), to be asked next time."""
        if time.monotonic() - self._read_monotonic < self.refresh_seconds:
            return
        try:
            self.read()
        except sa.exc.SQLAlchemyError as error:
            self._read_monotonic = time.monotonic()
            reason = str(getattr(error, "orig", error)).splitlines()[0]
            log_event(logger, "webhooks_registry_unreachable", reason=reason)

    def of(self, department: str) -> Endpoint | None:
        """The department's endpoint as last read."""
        return self._by_department.get(department)

    def read_after(self, written_ms: int) -> bool:
        """Whether the last reading is newer than a record written at ``written_ms``: only
        then does a missing endpoint mean the department has none for it."""
        return self._read_at_ms > written_ms

    def all(self) -> dict[str, Endpoint]:
        """Every endpoint as last read, by department."""
        return dict(self._by_department)


# -- the worker --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unreadable:
    """An inbox message the worker cannot decode: dead-lettered with the reason."""

    department: str
    topic: str
    offset: int
    reason: str
    written_ms: int


@dataclass
class Attempt:
    lane: Lane[InboxItem | Unreadable]
    pending: Pending[InboxItem | Unreadable]
    endpoint: Endpoint
    body: bytes
    content_type: str
    future: Future[Answer]


class WebhookWorker:
    """Reads every inbox and pushes each item to its department's endpoint until
    :meth:`stop`::

        worker = WebhookWorker(get_settings(), WebhookSettings())
        on_stop_signal(worker.stop)
        worker.run()
    """

    def __init__(
        self, settings: Settings, options: WebhookSettings, database_url: str | None = None
    ) -> None:
        self.options = options
        self.clients = KafkaClients(settings, SERVICE)
        self.endpoints = Endpoints(database_url or settings.database_url, options.endpoint_refresh)
        self.backoff = Backoff(
            timedelta(seconds=options.backoff_base), timedelta(seconds=options.backoff_cap)
        )
        self.lanes: Lanes[InboxItem | Unreadable] = Lanes(options.lane_capacity)
        self.pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="webhook")
        self.http = httpx.Client(
            timeout=options.timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=options.concurrency * 2),
        )
        self.attempts: list[Attempt] = []
        self._stopping = threading.Event()
        self._consumer: Consumer | None = None
        self._producer = self.clients.producer()
        self._deserialize = self.clients.avro_deserializer()
        self._serialize = self.clients.avro_serializer(WEBHOOK_DEAD_LETTER.schema_str)
        self._record_names: dict[int, str] = {}
        self._failure_labels: dict[str, tuple[str, str, str]] = {}

    def stop(self) -> None:
        """Ask :meth:`run` to return (from a signal handler too)."""
        self._stopping.set()

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        self.endpoints.read()
        consumer = self._consumer = self.clients.consumer(
            self.clients.group(GROUP),
            # A department onboarded while the worker runs is found within this.
            **{"topic.metadata.refresh.interval.ms": 5000},
        )
        consumer.subscribe(
            [DepartmentTopic.INBOX.pattern()], on_assign=self._assigned, on_revoke=self._revoked
        )
        log_event(logger, "webhooks_ready", group=self.clients.group(GROUP))
        try:
            while not self._stopping.is_set():
                messages = consumer.consume(500, 0 if self.attempts else 0.2)
                for message in messages:
                    self._take(message)
                if self.attempts and not messages:
                    # Wake as soon as an answer comes, not at the next poll's timeout.
                    wait([a.future for a in self.attempts], 0.05, FIRST_COMPLETED)
                self.endpoints.refresh()
                now = wire_now()
                self._collect(now)
                self._dispatch(now)
                self._pace(now)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._producer.flush(5)
            consumer.close()
            self.http.close()
            log_event(logger, "webhooks_stopped")

    def _assigned(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        for partition in partitions:
            code = DepartmentTopic.INBOX.code_of(partition.topic)
            if code is not None:
                self.lanes.assign(code)
        log_event(logger, "webhooks_assigned", inboxes=len(partitions))

    def _revoked(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        for partition in partitions:
            code = DepartmentTopic.INBOX.code_of(partition.topic)
            if code is not None:
                self.lanes.revoke(code)

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            # No inbox the worker may read yet (none onboarded) is not an error of its own.
            if error.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                log_event(logger, "webhooks_consumer_error", reason=str(error))
            return
        topic = message.topic() or ""
        code = DepartmentTopic.INBOX.code_of(topic)
        lane = None if code is None else self.lanes.get(code)
        if code is None or lane is None:
            return
        lane.offer(message.offset() or 0, self._decode(code, message))

    def _decode(self, department: str, message: Message) -> InboxItem | Unreadable:
        topic, offset = message.topic() or "", message.offset() or 0
        written_ms = message.timestamp()[1]
        raw = message.value()
        try:
            if raw is None or len(raw) < 5 or raw[0] != 0:
                raise ValueError("not Avro in the Confluent wire format")
            record: dict[str, Any] = self._deserialize(  # type: ignore[assignment]
                raw, SerializationContext(topic, MessageField.VALUE)
            )
            name = self._record_name(int.from_bytes(raw[1:5], "big"))
        except Exception as error:  # the deserializer raises whatever the bytes provoke
            return Unreadable(department, topic, offset, f"unreadable item: {error}", written_ms)
        return InboxItem(department, topic, offset, name, record or {}, written_ms)

    def _record_name(self, schema_id: int) -> str:
        name = self._record_names.get(schema_id)
        if name is None:
            schema = self.clients.schema_registry().get_schema(schema_id)
            document = json.loads(schema.schema_str or "{}")
            name = str(document.get("name", ""))
            if "." not in name and document.get("namespace"):
                name = f"{document['namespace']}.{name}"
            self._record_names[schema_id] = name
        return name

    # -- attempts ----------------------------------------------------------------------------

    def _dispatch(self, now: datetime) -> None:
        for lane in self.lanes.due(now):
            endpoint = self.endpoints.of(lane.key)
            if endpoint is None:
                self._skip(lane)
                continue
            head = lane.started(now)
            item = head.item
            if isinstance(item, Unreadable):
                self._dead_letter(lane, endpoint, b"", "", None, item.reason)
                continue
            body, content_type = body_of(item, now, cloudevents=endpoint.cloudevents)
            headers = signed_headers(item.webhook_id, now, body, endpoint.secrets, content_type)
            future = self.pool.submit(self._post, endpoint, body, headers)
            self.attempts.append(Attempt(lane, head, endpoint, body, content_type, future))

    def _skip(self, lane: Lane[InboxItem | Unreadable]) -> None:
        """Finish the items of a department without an endpoint, as far as the registry
        was read after them (a newer one waits for the next reading); one commit."""
        last: Pending[InboxItem | Unreadable] | None = None
        while (head := lane.head) is not None and self.endpoints.read_after(head.item.written_ms):
            last = lane.finish()
            DELIVERIES.labels(lane.key, "skipped").inc()
        if last is not None:
            self._commit(last.item.topic, last.offset)

    def _post(self, endpoint: Endpoint, body: bytes, headers: dict[str, str]) -> Answer:
        """One POST (on a pool thread): what came back."""
        started = time.monotonic()
        try:
            response = self.http.post(endpoint.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return Answer(None, f"timeout after {self.options.timeout:g} s")
        except httpx.TransportError as error:
            return Answer(
                None, f"connection failed: {error}" if str(error) else type(error).__name__
            )
        finally:
            ATTEMPT_SECONDS.labels(endpoint.department).observe(time.monotonic() - started)
        status = response.status_code
        reason = f"HTTP {status} {response.reason_phrase}".strip()
        return Answer(status, reason, retry_after(response.headers.get("retry-after"), wire_now()))

    def _collect(self, now: datetime) -> None:
        finished = [attempt for attempt in self.attempts if attempt.future.done()]
        if not finished:
            return
        self.attempts = [attempt for attempt in self.attempts if not attempt.future.done()]
        for attempt in finished:
            lane = attempt.lane
            if self.lanes.get(lane.key) is not lane or lane.head is not attempt.pending:
                continue  # the partition was revoked meanwhile: its new owner delivers it
            answer = attempt.future.result()
            self._settle(attempt, answer, now)

    def _settle(self, attempt: Attempt, answer: Answer, now: datetime) -> None:
        lane, pending, department = attempt.lane, attempt.pending, attempt.lane.key
        item = pending.item
        outcome = outcome_of(answer)
        if outcome is Outcome.DELIVERED:
            lane.finish()
            self._commit(item.topic, pending.offset)
            DELIVERIES.labels(department, "delivered").inc()
            LAST_SUCCESS.labels(department).set(now.timestamp())
            log_event(
                logger,
                "webhook_delivered",
                department=department,
                webhook_id=getattr(item, "webhook_id", ""),
                offset=pending.offset,
                attempts=pending.attempts,
            )
            return
        self._failed(department, answer, now)
        if outcome is Outcome.GIVE_UP:
            reason = f"{answer.reason}: the endpoint refused the item (not retried)"
            self._dead_letter(
                lane, attempt.endpoint, attempt.body, attempt.content_type, answer.status, reason
            )
            return
        delay = self.backoff.delay(pending.attempts, answer)
        written = datetime.fromtimestamp(item.written_ms / 1000, UTC)
        if now + delay > written + self.options.retry_window:
            reason = (
                f"retries exhausted: {pending.attempts} attempts, the item"
                f" {self.options.retry_window} old; last: {answer.reason}"
            )
            self._dead_letter(
                lane, attempt.endpoint, attempt.body, attempt.content_type, answer.status, reason
            )
            return
        lane.retry_at(now + delay, answer.status, answer.reason)
        RETRIES.labels(department).inc()
        log_event(
            logger,
            "webhook_retry",
            department=department,
            offset=pending.offset,
            attempts=pending.attempts,
            reason=answer.reason,
            next_in_seconds=round(delay.total_seconds(), 3),
        )

    def _failed(self, department: str, answer: Answer, now: datetime) -> None:
        FAILURES.labels(department, answer.failure_kind).inc()
        LAST_FAILURE.labels(department).set(now.timestamp())
        labels = (department, str(answer.status or ""), answer.reason[:200])
        previous = self._failure_labels.get(department)
        if previous is not None and previous != labels:
            LAST_FAILURE_REASON.remove(*previous)
        LAST_FAILURE_REASON.labels(*labels).set(1)
        self._failure_labels[department] = labels

    def _dead_letter(
        self,
        lane: Lane[InboxItem | Unreadable],
        endpoint: Endpoint,
        body: bytes,
        content_type: str,
        status: int | None,
        reason: str,
    ) -> None:
        """Give the head up: its dead letter acknowledged, then its offset committed."""
        pending = lane.head
        assert pending is not None
        item = pending.item
        now = wire_now()
        webhook_id = item.webhook_id if isinstance(item, InboxItem) else ""
        record_name = item.record_name if isinstance(item, InboxItem) else ""
        value: dict[str, Any] = {
            "dead_letter_id": deterministic_id(
                f"webhook-dead-letter|{endpoint.id}|{item.topic}|{pending.offset}|{webhook_id}"
            ),
            "department": lane.key,
            "endpoint_id": endpoint.id,
            "url": endpoint.url,
            "webhook_id": webhook_id,
            "item_type": record_name,
            "inbox_topic": item.topic,
            "inbox_offset": pending.offset,
            "content_type": content_type,
            "body": body.decode(),
            "attempts": pending.attempts,
            "first_attempt_at": pending.first_attempt_at or now,
            "last_attempt_at": now,
            "last_status": status,
            "reason": reason,
        }
        topic = WEBHOOK_DEAD_LETTERS.name
        encoded = self._serialize(value, SerializationContext(topic, MessageField.VALUE))
        produce(self._producer, topic, key=lane.key.encode(), value=encoded)
        if self._producer.flush(30) != 0:
            raise RuntimeError(f"dead letter for {lane.key} not acknowledged by the broker in 30 s")
        lane.finish()
        self._commit(item.topic, pending.offset)
        DELIVERIES.labels(lane.key, "dead_lettered").inc()
        DEAD_LETTERS.labels(lane.key).inc()
        log_event(
            logger,
            "webhook_dead_lettered",
            department=lane.key,
            dead_letter_id=value["dead_letter_id"],
            webhook_id=webhook_id,
            offset=pending.offset,
            status=status,
            reason=reason,
        )

    # -- Kafka: commits and pauses -----------------------------------------------------------

    def _commit(self, topic: str, offset: int) -> None:
        assert self._consumer is not None
        self._consumer.commit(offsets=[TopicPartition(topic, 0, offset + 1)], asynchronous=True)

    def _pace(self, now: datetime) -> None:
        assert self._consumer is not None
        now_ms = now.timestamp() * 1000
        for lane in self.lanes:
            head = lane.head
            OLDEST_AGE.labels(lane.key).set(
                0 if head is None else max(0.0, (now_ms - head.item.written_ms) / 1000)
            )
            should_pause = lane.should_pause(now)
            if should_pause == lane.paused:
                continue
            partition = [TopicPartition(DepartmentTopic.inbox(lane.key), 0)]
            if should_pause:
                self._consumer.pause(partition)
            else:
                self._consumer.resume(partition)
            lane.paused = should_pause
