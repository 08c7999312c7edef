"""The checks' matter events, produced off the request's path.

A check only queues its ``MatterEvent`` (:func:`~streams.credit_check.rules.matter_event`);
:class:`MatterEventRecorder` encodes and produces it from a thread of its own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message
from prometheus_client import Counter, Gauge

from xietong.logs import log_event

logger = logging.getLogger(__name__)

MATTER_EVENT_OUTCOMES = Counter(
    "xietong_credit_check_matter_events",
    "Matter events of checks, by outcome (delivered; queue_full, encoding, delivery: undelivered)",
    ("outcome",),
)
MATTER_EVENT_QUEUE = Gauge(
    "xietong_credit_check_matter_event_queue", "Matter events waiting to be produced"
)


class MatterEventRecorder:
    """Produces the checks' matter events from a thread of its own.

    :meth:`record` only queues (it never waits for Kafka). Undeliverable events — the
    queue full, encoding refused, the broker's acknowledgement an error — are counted
    and logged whole, so they can be replayed by hand.
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        encode: Callable[[dict[str, Any]], bytes],
        capacity: int,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.encode = encode
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="matter events", daemon=True)
        self._thread.start()

    def record(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._undelivered(event, "queue_full", "the matter-event queue is full")
            return
        MATTER_EVENT_QUEUE.inc()

    def stop(self, timeout: float = 30.0) -> int:
        """Produce what is queued, wait for the acknowledgements; the number still
        unacknowledged after ``timeout`` (each counted and logged by its callback later,
        or lost with the process: they are logged here)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
        left = int(self.producer.flush(timeout))
        if left:
            log_event(logger, "credit_check.matter_events_unflushed", count=left, topic=self.topic)
        return left

    def _run(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                self.producer.poll(0)
                continue
            if event is None:
                return
            MATTER_EVENT_QUEUE.dec()
            self._produce(event)
            self.producer.poll(0)

    def _produce(self, event: dict[str, Any]) -> None:
        try:
            value = self.encode(event)
        except Exception as error:  # a schema mismatch: say which event and why
            self._undelivered(event, "encoding", f"{type(error).__name__}: {error}")
            return

        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is None:
                MATTER_EVENT_OUTCOMES.labels("delivered").inc()
            else:
                self._undelivered(event, "delivery", error.str())

        while True:
            try:
                self.producer.produce(
                    self.topic, key=event["uscc"].encode(), value=value, on_delivery=delivered
                )
                return
            except BufferError:  # librdkafka's own queue is full: let it drain
                self.producer.poll(0.1)

    def _undelivered(self, event: dict[str, Any], outcome: str, reason: str) -> None:
        MATTER_EVENT_OUTCOMES.labels(outcome).inc()
        log_event(
            logger,
            "credit_check.matter_event_undelivered",
            outcome=outcome,
            reason=reason,
            topic=self.topic,
            event_id=event.get("event_id"),
            uscc=event.get("uscc"),
            matter_event=event,
        )
