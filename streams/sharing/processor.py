"""The sharing processor: every conditional subscription's view, written as it is granted.

``xietong streams sharing`` follows ``registry.subscriptions`` and, for each APPROVED,
not-expired subscription shared on conditions (chosen fields or division filters),
reads the resource's canonical topic and writes the view of each record
(:mod:`streams.sharing.views`) to the department's ``dept.<code>.shared.<resource>``::

    processor = SharingProcessor(get_settings(), SharingSettings())
    on_stop_signal(processor.stop)
    processor.run()

A plain confluent-kafka loop, not a Faust agent: it keeps no table, joins nothing and
its set of inputs changes at run time, one consumer per view, each with its own group
and so its own position (see streams/README.md, "有条件共享"). Each view's consumer is
assigned every partition of its canonical topic, so one processor writes every view:
run one (a second would write the same records again, with the same ids).

**One subscription, one consumer group**: ``xietong.streams.sharing.<code>.<resource>.
<subscription id>.<decided at>``. A newly approved subscription has no committed offset,
so its view starts at the beginning of the canonical topic's retained log (the
department receives the history it is entitled to); a restart continues each view from
its committed position.

**Subscription changes come first.** The subscriptions topic is read whole before any
record, then followed: every turn of the loop applies what arrived there before it
polls records, so a record polled after a revocation is not shared under it, and one
polled after an approval is. A view whose subscription is revoked, expires
(``valid_until``, by the business clock) or stops being conditional is closed at once;
its topic stays (the registry keeps it, see registry/acl.py).

**At least once, deterministic**: each view record is keyed by the entity's USCC and
carries an id derived from the subscription and the source event, and a view commits
its offsets only after the broker acknowledged every record it wrote: a crash or a
failed write (say, before the registry has granted the processor the view's topic)
re-reads from the last commit and writes the same records again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.schema_registry import record_subject_name_strategy
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import Counter, Gauge

from schemas import RecordType, register_schema
from streams.sharing.settings import SharingSettings
from streams.sharing.views import (
    ViewGrant,
    project,
    shared_record_type,
    view_schema,
    view_subject,
)
from xietong.clock import business_clock, millis
from xietong.kafka import KafkaClients, produce
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.topics import REGISTRY_SUBSCRIPTIONS

logger = logging.getLogger("streams.sharing")

SHARING_SERVICE = "streams"  # the stream processors' principal, svc-streams

VIEW_LABELS = ("subscription", "department", "resource")
SHARED = Counter(
    "xietong_sharing_records_shared", "Records written to a department's view", VIEW_LABELS
)
FILTERED = Counter(
    "xietong_sharing_records_filtered",
    "Records read for a view and not shared: the entity is outside the granted divisions",
    VIEW_LABELS,
)
LAG = Gauge("xietong_sharing_lag", "Canonical records a view has not read yet", VIEW_LABELS)
VIEWS = Gauge(
    "xietong_sharing_views",
    "Live conditional subscriptions, by state: writing their view, or waiting (for its topic"
    " and ACL from the registry, or after a failed write)",
    ("state",),
)
ERRORS = Counter("xietong_sharing_errors", "What went wrong, by reason", ("reason",))


class ViewWriteFailed(RuntimeError):
    """The broker refused or lost a record of a view: it is read again from its commit."""


class ViewReadFailed(RuntimeError):
    """The canonical topic could not be read (say, a partition not there): the view is
    opened again from its commit after a pause."""


class View:
    """One live conditional subscription: its consumer of the canonical topic, its
    serializer, and the records it shares."""

    def __init__(
        self,
        clients: KafkaClients,
        grant: ViewGrant,
        decided_at_ms: int,
        record_type: RecordType,
        producer: Producer,
        batch_size: int,
    ) -> None:
        self.clients = clients
        self.grant = grant
        self.decided_at_ms = decided_at_ms
        self.record_type = record_type
        self.producer = producer
        self.batch_size = batch_size
        self.labels = (str(grant.subscription_id), grant.department_code, grant.resource_code)
        self.consumer: Consumer | None = None
        self._deserialize = clients.avro_deserializer()
        self._serialize: Any = None
        self._context = SerializationContext(grant.view_topic, MessageField.VALUE)

    @property
    def group(self) -> str:
        """The view's consumer group: its own position in the canonical topic. The
        decision's time tells apart a subscription id that a rebuilt registry gives again."""
        grant = self.grant
        return self.clients.group(
            f"sharing.{grant.department_code}.{grant.resource_code}"
            f".{grant.subscription_id}.{self.decided_at_ms}"
        )

    def ready_to_write(self) -> bool:
        """Whether the view's topic exists and the processor may write it (the registry's
        reconciler creates it and grants it within seconds of the approval)."""
        try:
            topic = self.producer.list_topics(self.grant.view_topic, timeout=5).topics.get(
                self.grant.view_topic
            )
        except KafkaException:
            return False
        return topic is not None and topic.error is None and bool(topic.partitions)

    def open(self) -> None:
        """Register the view's schema and start reading the canonical topic from the
        view's committed position (its beginning, for a new subscription)."""
        schema = json.dumps(view_schema(self.record_type, self.grant), ensure_ascii=False)
        subject = view_subject(self.record_type, self.grant.department_code)
        register_schema(self.clients.schema_registry(), subject, schema)
        self._serialize = self.clients.avro_serializer(
            schema, **{"subject.name.strategy": record_subject_name_strategy}
        )
        self.consumer = self.clients.consumer(self.group, **{"fetch.wait.max.ms": 100})
        topic = self.grant.source_topic
        partitions = self.consumer.list_topics(topic, timeout=15).topics[topic].partitions
        # Assigned, not subscribed: no group to join or wait out after a crash, so a view
        # resumes at once; OFFSET_STORED is the committed offset, else the beginning.
        self.consumer.assign([TopicPartition(topic, p, OFFSET_STORED) for p in partitions])

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        LAG.labels(*self.labels).set(0)

    def step(self, timeout: float) -> int:
        """Read a batch, write its view, commit after every write is acknowledged; how
        many records were read."""
        assert self.consumer is not None
        messages = self.consumer.consume(self.batch_size, timeout)
        if not messages:
            return 0
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error)

        shared = filtered = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise ViewReadFailed(f"{self.grant.source_topic}: {error}")
            record = self._decode(message)
            if record is None:
                continue
            view = project(self.record_type, self.grant, record)
            if view is None:
                filtered += 1
                continue
            produce(
                self.producer,
                self.grant.view_topic,
                key=message.key(),
                value=self._serialize(view, self._context),
                on_delivery=delivered,
            )
            shared += 1
        if shared:
            self.producer.flush(30)
        if failures or len(self.producer):
            raise ViewWriteFailed(
                f"{self.grant.view_topic}: {len(failures) or len(self.producer)} records not"
                f" written ({failures[0] if failures else 'not acknowledged in 30 s'})"
            )
        self.consumer.commit(asynchronous=False)
        SHARED.labels(*self.labels).inc(shared)
        FILTERED.labels(*self.labels).inc(filtered)
        return len(messages)

    def _decode(self, message: Message) -> dict[str, Any] | None:
        """The canonical record; None (counted, logged) for one that cannot be read, which
        is never shared."""
        context = SerializationContext(message.topic() or "", MessageField.VALUE)
        try:
            record = self._deserialize(message.value(), context)
        except Exception as problem:  # an unreadable record is never shared
            ERRORS.labels("undecodable").inc()
            log_event(
                logger,
                "sharing_undecodable",
                topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                error=str(problem),
            )
            return None
        return record if isinstance(record, dict) else None

    def measure_lag(self) -> None:
        if self.consumer is None:
            return
        assigned = self.consumer.assignment()
        if not assigned:
            return
        behind = 0
        for position in self.consumer.position(assigned):
            _, high = self.consumer.get_watermark_offsets(position, cached=True)
            if high >= 0 and position.offset >= 0:
                behind += max(high - position.offset, 0)
        LAG.labels(*self.labels).set(behind)


class SharingProcessor:
    """Follows the subscriptions and writes every live conditional subscription's view."""

    def __init__(
        self,
        settings: Settings,
        options: SharingSettings | None = None,
        clients: KafkaClients | None = None,
    ) -> None:
        self.options = options or SharingSettings()
        self.clients = clients or KafkaClients(settings, SHARING_SERVICE)
        self.producer = self.clients.producer()
        self.grants: dict[int, tuple[ViewGrant, int]] = {}  # id → (grant, decided at ms)
        self.views: dict[int, View] = {}
        self._retry_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._subscriptions: Consumer | None = None
        self._subscription_partitions: set[int] = set()
        self._changed = False  # grants changed since the views were last reconciled
        self._unreadable: set[int] = set()  # live grants of resources it cannot read, logged
        self._deserialize = self.clients.avro_deserializer()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand (safe from a signal handler)."""
        self._stop.set()

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Read the subscriptions whole, then follow them and write the views until
        :meth:`stop`."""
        self._subscriptions = self._follow_subscriptions()
        try:
            self._read_subscriptions_whole()
            self._reconcile()
            log_event(logger, "sharing_ready", views=sorted(self.views))
            if ready is not None:
                ready()
            next_lag = time.monotonic()
            while not self._stop.is_set():
                self._read_subscription_changes()
                if self._changed or self._expired():
                    self._reconcile()
                self._open_pending()
                read = 0
                for subscription_id, view in list(self.views.items()):
                    if view.consumer is not None:
                        read += self._step(subscription_id, view)
                if not read:
                    self._read_subscription_changes(self.options.poll_timeout)
                if time.monotonic() >= next_lag:
                    self._measure_lag()
                    next_lag = time.monotonic() + self.options.lag_interval
        finally:
            for view in self.views.values():
                view.close()
            self._subscriptions.close()
            self.producer.flush(10)
        log_event(logger, "sharing_stopped", views=sorted(self.views))

    def _count_views(self) -> None:
        writing = sum(view.consumer is not None for view in self.views.values())
        VIEWS.labels("writing").set(writing)
        VIEWS.labels("waiting").set(len(self.views) - writing)

    def _measure_lag(self) -> None:
        self._count_views()
        for view in self.views.values():
            try:
                view.measure_lag()
            except KafkaException as error:  # measuring must never stop the views
                ERRORS.labels("lag_unmeasured").inc()
                log_event(logger, "sharing_lag_unmeasured", error=str(error))

    # -- the subscriptions ----------------------------------------------------------------

    def _follow_subscriptions(self) -> Consumer:
        topic = REGISTRY_SUBSCRIPTIONS.name
        consumer = self.clients.consumer(
            self.clients.group(f"sharing-subscriptions-{uuid.uuid4()}"),
            **{"enable.partition.eof": True},
        )
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._subscription_partitions = set(partitions)
        return consumer

    def _read_subscriptions_whole(self) -> None:
        pending = set(self._subscription_partitions)
        while pending and not self._stop.is_set():
            message = self._poll_subscription(1.0)
            if message is not None and message.error() is not None:
                pending.discard(message.partition())

    def _read_subscription_changes(self, timeout: float = 0.0) -> None:
        """Take in what arrived on the subscriptions topic (waiting up to ``timeout`` s
        for the first record)."""
        while True:
            message = self._poll_subscription(timeout)
            if message is None or message.error() is not None:
                return
            timeout = 0.0

    def _poll_subscription(self, timeout: float) -> Message | None:
        """One message of the subscriptions topic, applied to :attr:`grants`; its EOF
        too (an error message), or None."""
        assert self._subscriptions is not None
        message = self._subscriptions.poll(timeout)
        if message is None:
            return None
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
            return message
        self._changed = True
        if message.value() is None:
            self.grants.pop(int((message.key() or b"0").decode()), None)
            return message
        context = SerializationContext(REGISTRY_SUBSCRIPTIONS.name, MessageField.VALUE)
        record = self._deserialize(message.value(), context)
        if not isinstance(record, dict):
            return message
        grant = ViewGrant.of(record)
        decided = record.get("decided_at")
        self.grants[grant.subscription_id] = (grant, 0 if decided is None else millis(decided))
        return message

    # -- the views ------------------------------------------------------------------------

    def _wanted(self) -> dict[int, tuple[ViewGrant, int]]:
        """The live conditional grants, one per view topic: the registry allows one open
        subscription per department and resource, and should the topic say otherwise (a
        record of a registry since rebuilt), the latest decision writes the view."""
        now = business_clock().now()
        latest: dict[str, tuple[int, int]] = {}  # view topic → (decided at, subscription)
        for subscription_id, (grant, decided_at_ms) in self.grants.items():
            if grant.conditional and grant.live(now) and shared_record_type(grant):
                held = latest.get(grant.view_topic)
                if held is None or (decided_at_ms, subscription_id) > held:
                    latest[grant.view_topic] = (decided_at_ms, subscription_id)
        return {
            subscription_id: self.grants[subscription_id] for _, subscription_id in latest.values()
        }

    def _reconcile(self) -> None:
        """Open a view for every wanted grant, close those no longer wanted; a grant that
        changed in place (a republished record, a new ``valid_until``) is opened again at
        its committed position, under the new conditions."""
        self._changed = False
        wanted = self._wanted()
        for subscription_id in list(self.views):
            if subscription_id not in wanted:
                self._close(subscription_id, "no longer granted")
        for subscription_id, (grant, decided_at_ms) in wanted.items():
            view = self.views.get(subscription_id)
            if view is not None and (view.grant, view.decided_at_ms) != (grant, decided_at_ms):
                self._close(subscription_id, "conditions changed")
                view = None
            if view is None:
                record_type = shared_record_type(grant)
                assert record_type is not None
                self.views[subscription_id] = View(
                    self.clients,
                    grant,
                    decided_at_ms,
                    record_type,
                    self.producer,
                    self.options.batch_size,
                )
                self._retry_at[subscription_id] = 0.0
        self._report_unreadable(wanted)
        self._count_views()

    def _report_unreadable(self, wanted: dict[int, tuple[ViewGrant, int]]) -> None:
        """Log once each live conditional grant of a resource whose records the processor
        does not know (a department's own topic): its view stays empty."""
        now = business_clock().now()
        for subscription_id, (grant, _) in self.grants.items():
            if subscription_id in wanted or subscription_id in self._unreadable:
                continue
            if grant.conditional and grant.live(now) and shared_record_type(grant) is None:
                self._unreadable.add(subscription_id)
                ERRORS.labels("unknown_resource").inc()
                log_event(
                    logger,
                    "sharing_unknown_resource",
                    subscription=subscription_id,
                    resource=grant.resource_code,
                    topic=grant.source_topic,
                    why="only the canonical record types are shared on conditions",
                )

    def _expired(self) -> bool:
        """Whether a view's grant has passed its ``valid_until`` (by the business clock)."""
        now = business_clock().now()
        return any(not view.grant.live(now) for view in self.views.values())

    def _close(self, subscription_id: int, why: str) -> None:
        view = self.views.pop(subscription_id)
        view.close()
        self._retry_at.pop(subscription_id, None)
        log_event(
            logger,
            "sharing_view_closed",
            subscription=subscription_id,
            department=view.grant.department_code,
            topic=view.grant.view_topic,
            why=why,
        )

    def _open_pending(self) -> None:
        now = time.monotonic()
        for subscription_id, view in self.views.items():
            if view.consumer is not None or now < self._retry_at.get(subscription_id, 0.0):
                continue
            self._retry_at[subscription_id] = now + self.options.retry_interval
            if not view.ready_to_write():
                continue
            try:
                view.open()
            except Exception as problem:  # the schema registry or the broker: try again later
                view.close()
                ERRORS.labels("open_failed").inc()
                log_event(
                    logger, "sharing_open_failed", subscription=subscription_id, error=str(problem)
                )
                continue
            log_event(
                logger,
                "sharing_view_opened",
                subscription=subscription_id,
                department=view.grant.department_code,
                source=view.grant.source_topic,
                topic=view.grant.view_topic,
                fields=view.grant.fields,
                divisions=view.grant.divisions,
            )

    def _step(self, subscription_id: int, view: View) -> int:
        try:
            return view.step(0.0)
        except (ViewWriteFailed, ViewReadFailed) as failure:
            reason = "write_failed" if isinstance(failure, ViewWriteFailed) else "read_failed"
            ERRORS.labels(reason).inc()
            log_event(logger, f"sharing_{reason}", subscription=subscription_id, error=str(failure))
            view.close()  # read again from its last commit, after a pause
            self._retry_at[subscription_id] = time.monotonic() + self.options.retry_interval
            return 0
