"""The act side of a department's inbox: a claim, a return, a stop or a 反馈 written to the
department's own inbound topic ``dept.<code>.inbound``, exactly as the department's own
Kafka client would write it — a ``DepartmentAction`` or a ``RestrictionFeedback``
(``schemas/avro/``), registered under its record name, keyed by the entity's USCC — and
acknowledged before anyone is told it was sent::

    actions = InboxActions(KafkaClients(settings, "inbox"), clock, timeout_seconds=10)
    actions.start()
    sent = actions.act_on_push("hz-xh-transport", push, "CLAIM", action_id, operator="王芳")
    sent.action_id, sent.offset        # acknowledged by every in-sync replica
    actions.stop()

It writes as the ``svc-inbox`` principal, which may write every department's inbound
topic and nothing else; the processors take the acting department from the topic's
name, never from the record, so writing on a department's behalf changes nothing of the
rules. The producer is idempotent with ``acks=all``; :meth:`InboxActions.send` returns
only once the broker acknowledged the record and raises :class:`NotDelivered` when it did
not within the timeout (then the record may still arrive: the caller sends it again
with the same action id, and the processors apply an action id once).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.schema_registry import record_subject_name_strategy
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import Counter

from connectors.inbox.store import InboxItem
from schemas import DEPARTMENT_ACTION, RESTRICTION_FEEDBACK, RecordType
from xietong.clock import BusinessClock
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.topics import DepartmentTopic

logger = logging.getLogger(__name__)

ACTIONS_PRODUCED = Counter(
    "xietong_inbox_actions_produced",
    "Actions the inbox API wrote to departments' inbound topics, acknowledged, by kind",
    ("action",),
)
PRODUCE_FAILURES = Counter(
    "xietong_inbox_produce_failures",
    "Actions the broker did not acknowledge (answered 503), by reason",
    ("reason",),
)

#: The return reasons a RETURN takes (cn.gov.xietong.dualnotice.ReturnReason).
RETURN_REASONS = (
    "NO_SUCH_ITEM",
    "SCOPE_NOT_IN_JURISDICTION",
    "ADDRESS_NOT_IN_JURISDICTION",
    "OTHER",
)


class NotDelivered(RuntimeError):
    """The broker did not acknowledge the record in time, or refused it."""


@dataclass(frozen=True)
class SentAction:
    """An action the broker acknowledged: its id, what it was, where it is."""

    action_id: str
    action: str
    item_id: str
    topic: str
    partition: int
    offset: int


class InboxActions:
    """Writes departments' actions to their inbound topics (see the module docstring)."""

    def __init__(self, kafka: KafkaClients, clock: BusinessClock, timeout_seconds: float) -> None:
        self._kafka = kafka
        self.clock = clock
        self.timeout_seconds = timeout_seconds
        timeout_ms = int(timeout_seconds * 1000)
        self.producer = kafka.producer(
            **{
                "linger.ms": 0,
                "delivery.timeout.ms": timeout_ms,
                "request.timeout.ms": min(timeout_ms, 30000),
            }
        )
        options = {"subject.name.strategy": record_subject_name_strategy}
        self._serializers = {
            record.name: kafka.avro_serializer(record.schema_str, **options)
            for record in (DEPARTMENT_ACTION, RESTRICTION_FEEDBACK)
        }
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="inbox-producer", daemon=True)

    def check_registered(self) -> None:
        """Fail unless the schemas written are registered (``xietong schemas register``)."""
        client = self._kafka.schema_registry()
        for record in (DEPARTMENT_ACTION, RESTRICTION_FEEDBACK):
            try:
                client.get_latest_version(record.subject)
            except Exception as error:
                raise RuntimeError(
                    f"schema subject {record.subject} is not registered ({error}): run"
                    " xietong schemas register"
                ) from error

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self.producer.flush(self.timeout_seconds)
        self._stopping.set()
        if self._poller.is_alive():
            self._poller.join(5)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self.producer.poll(0.1)

    # -- what a department does ---------------------------------------------------------------

    def act_on_push(
        self,
        department: str,
        push: InboxItem,
        action: str,
        action_id: str,
        return_reason: str | None = None,
        reason_text: str | None = None,
        operator: str | None = None,
    ) -> SentAction:
        """认领 (CLAIM), 退回 (RETURN, with a reason) or 终止 (STOP) the department's push."""
        record = {
            "action_id": action_id,
            "uscc": push.uscc,
            "push_id": push.item_id,
            "action": action,
            "return_reason": return_reason,
            "reason_text": reason_text,
            "target_department_code": None,
            "acted_at": self._now(),
            "operator": operator,
        }
        return self.send(DEPARTMENT_ACTION, department, record, action, push.item_id)

    def give_feedback(
        self,
        department: str,
        hit: InboxItem,
        feedback_id: str,
        outcome: str,
        reason: str | None = None,
        operator: str | None = None,
    ) -> SentAction:
        """反馈 on the department's restriction hit: APPLIED, or NOT_APPLICABLE with the reason."""
        record = {
            "feedback_id": feedback_id,
            "uscc": hit.uscc,
            "hit_id": hit.item_id,
            "outcome": outcome,
            "reason": reason,
            "fed_back_at": self._now(),
            "operator": operator,
        }
        return self.send(
            RESTRICTION_FEEDBACK, department, record, f"FEEDBACK_{outcome}", hit.item_id
        )

    def _now(self) -> datetime:
        return self.clock.now().astimezone(UTC)

    # -- writing ------------------------------------------------------------------------------

    def send(
        self,
        record_type: RecordType,
        department: str,
        record: dict[str, Any],
        action: str,
        item_id: str,
    ) -> SentAction:
        """``record`` on the department's inbound topic, acknowledged (NotDelivered if not)."""
        topic = DepartmentTopic.inbound(department)
        value = self._serializers[record_type.name](
            record, SerializationContext(topic, MessageField.VALUE)
        )
        done = threading.Event()
        report: dict[str, Any] = {}

        def delivered(error: KafkaError | None, message: Message) -> None:
            report.update(error=error, message=message)
            done.set()

        action_id = record.get("action_id") or record["feedback_id"]
        try:
            self.producer.produce(
                topic, key=record["uscc"].encode(), value=value, on_delivery=delivered
            )
        except (BufferError, KafkaException) as refused:  # a full queue, a bad topic …
            PRODUCE_FAILURES.labels(type(refused).__name__).inc()
            raise NotDelivered(f"{topic}: not sent ({refused})") from refused
        if not done.wait(self.timeout_seconds + 1):
            PRODUCE_FAILURES.labels("timeout").inc()
            raise NotDelivered(f"{topic}: not acknowledged within {self.timeout_seconds:.0f} s")
        error = report["error"]
        if error is not None:
            PRODUCE_FAILURES.labels(error.name()).inc()
            log_event(
                logger, "inbox.not_delivered", topic=topic, action_id=action_id, reason=error.str()
            )
            raise NotDelivered(f"{topic}: {error.str()}")
        message = report["message"]
        ACTIONS_PRODUCED.labels(action).inc()
        log_event(
            logger,
            "inbox.action_sent",
            department=department,
            action=action,
            action_id=action_id,
            item_id=item_id,
            uscc=record["uscc"],
            offset=message.offset(),
        )
        return SentAction(action_id, action, item_id, topic, message.partition(), message.offset())
