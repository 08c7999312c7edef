"""The joint-punishment processor's Faust app: the wiring around :mod:`.rules`.

It reads the inputs listed in :mod:`streams.joint_punishment.rules` (co-partitioned by
USCC), holds the state in one table, ``entities``, backed by its changelog, hands each
event to :class:`~streams.joint_punishment.rules.JointPunishmentRules` with the clock's
time, and sends what the rules return: to the platform topic, and to each department's
inbox. A timer sends each due entity through the internal topic
``xietong.streams.joint-punishment-due``, keyed by USCC, so the change is made on the
entity's own partition.

Guarantee: at least once with deterministic ids. Outputs go through a librdkafka producer
that Faust's pre-commit flush waits for (:class:`streams.runtime.OutputProducer`), so an
offset is committed only once what its events sent is acknowledged. After a crash the
events since the last commit are processed again; an event that changes nothing re-sends
what it had sent (same ids, same content), so a reader keeping the latest record per id
sees each once.

Run it with ``xietong streams joint-punishment``; settings are
``XIETONG_JOINT_PUNISHMENT_*`` (:mod:`streams.joint_punishment.settings`).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import faust
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from schemas import DEAD_LETTER_RECORD, JOINT_PUNISHMENT_RECORD_TYPES, RESTRICTION_FEEDBACK
from streams.departments import INBOUND_PATTERN, InboundRelay, Inboxes, Produced
from streams.joint_punishment.rules import (
    APP_NAME,
    ID_FIELD,
    REJECTED,
    UNDELIVERED,
    JointPunishmentRules,
    PunishmentCatalog,
    PunishmentOutput,
)
from streams.joint_punishment.settings import JointPunishmentSettings
from streams.runtime import (
    OutputProducer,
    RecordWriter,
    ReferenceData,
    changelog_config,
    declared_topic,
    make_app,
    unreadable_input,
)
from xietong.clock import DAY_MS, business_clock
from xietong.ids import deterministic_id
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.topics import (
    CREDIT_LIST_ENTRIES,
    DEAD_LETTER,
    LICENCES,
    MATTER_EVENTS,
    PENALTIES,
    PUNISHMENT_ALERTS,
    PUNISHMENT_FEEDBACK,
    PUNISHMENT_LICENCE_REVIEWS,
    PUNISHMENT_LIFT_NOTICES,
    PUNISHMENT_RESTRICTION_HITS,
    PUNISHMENT_SANCTION_NOTICES,
    REGISTRY_DEPARTMENTS,
    REGISTRY_LIST_TYPES,
    REGISTRY_MEASURES,
)

logger = logging.getLogger(__name__)


# -- where it reads and writes ------------------------------------------------------------------


@dataclass(frozen=True)
class JointPunishmentTopics:
    """The topics of one run: the declarations of :mod:`xietong.topics`, or the
    benchmark's own (``inbox`` then names one topic standing for every inbox)."""

    app_name: str = APP_NAME
    list_entries: str = CREDIT_LIST_ENTRIES.name
    penalties: str = PENALTIES.name
    licences: str = LICENCES.name
    matters: str = MATTER_EVENTS.name
    feedback: str = PUNISHMENT_FEEDBACK.name
    outputs: dict[str, str] = field(
        default_factory=lambda: {
            "sanction_notice": PUNISHMENT_SANCTION_NOTICES.name,
            "licence_review_notice": PUNISHMENT_LICENCE_REVIEWS.name,
            "restriction_hit": PUNISHMENT_RESTRICTION_HITS.name,
            "feedback_overdue_alert": PUNISHMENT_ALERTS.name,
            "lift_notice": PUNISHMENT_LIFT_NOTICES.name,
            "dead_letter": DEAD_LETTER.name,
        }
    )
    inbox: str | None = None
    #: Every department's inbound topic (a regular expression, as librdkafka takes it).
    inbound_pattern: str = INBOUND_PATTERN


# -- the processor: the Faust app around the rules ------------------------------------------


class JointPunishmentProcessor:
    """The joint-punishment Faust app: its table, agents, timer and feedback relay."""

    def __init__(
        self,
        settings: Settings,
        rules: JointPunishmentSettings | None = None,
        topics: JointPunishmentTopics | None = None,
    ) -> None:
        self.settings = settings
        self.rules_settings = rules or JointPunishmentSettings()
        self.topics = topics or JointPunishmentTopics()
        self.clients = KafkaClients(settings, "streams")
        self.app = make_app(settings, self.topics.app_name)
        self._writers = {
            name: RecordWriter(self.clients, record)
            for name, record in {
                **JOINT_PUNISHMENT_RECORD_TYPES,
                "dead_letter": DEAD_LETTER_RECORD,
            }.items()
        }
        self._read = self.clients.avro_deserializer()
        self.output = OutputProducer(self.clients)
        self._due: list[tuple[int, str]] = []
        self._catalog: tuple[tuple[int, int, int], PunishmentCatalog] | None = None
        self._without_inbox: set[str] = set()
        self._received_writer = RecordWriter(
            self.clients, JOINT_PUNISHMENT_RECORD_TYPES["received_restriction_feedback"]
        )
        self._declare()

    def _declare(self) -> None:
        app, settings = self.app, self.settings
        self.measures = ReferenceData(self.clients, REGISTRY_MEASURES)
        self.list_types = ReferenceData(self.clients, REGISTRY_LIST_TYPES)
        self.departments = ReferenceData(self.clients, REGISTRY_DEPARTMENTS)
        self.entities = app.Table(
            "entities",
            partitions=settings.uscc_partitions,
            extra_topic_configs=changelog_config(settings),
            on_recover=self._on_recovered,
        )
        self.rules = JointPunishmentRules(self.entities, self.catalog, self.rules_settings)
        self.inboxes = Inboxes(app, self.clients, self.topics.inbox)
        self.due_topic = app.topic(
            f"{app.conf.id}-due",
            internal=True,
            partitions=settings.uscc_partitions,
            key_serializer="raw",
            value_serializer="json",
            retention=timedelta(days=7),
            config=changelog_config(settings),
        )
        rules = self.rules
        inputs: list[tuple[str, str, str, Callable[[dict[str, Any], int], PunishmentOutput]]] = [
            ("list-entries", self.topics.list_entries, "credit_list_entry", rules.on_list_entry),
            ("penalties", self.topics.penalties, "penalty", rules.on_penalty),
            ("licences", self.topics.licences, "licence", rules.on_licence),
            ("matters", self.topics.matters, "matter_event", rules.on_matter),
            ("feedback", self.topics.feedback, "received_restriction_feedback", rules.on_feedback),
        ]
        for name, topic, record_type, rule in inputs:
            app.agent(declared_topic(app, topic), name=name)(self._agent(record_type, rule))
        app.agent(self.due_topic, name="due")(self._due_agent)
        app.timer(self.rules_settings.tick_interval, name="due-check")(self._check_due)
        app.timer(self.rules_settings.inbox_refresh_interval, name="inbox-refresh")(
            self._refresh_inboxes
        )
        self.relay = InboundRelay(
            self.clients,
            group=self.clients.group(f"{self.topics.app_name}-inbound"),
            record_name=RESTRICTION_FEEDBACK.subject,
            forward=self._forward_feedback,
            reject=self._reject_feedback,
            refresh_interval=self.rules_settings.inbox_refresh_interval,
            pattern=self.topics.inbound_pattern,
        )
        app.task(self._start)

    async def _start(self) -> None:
        self.output.attach(self.app)
        await self.app.add_runtime_dependency(self.relay)
        log_event(
            logger,
            "joint_punishment_ready",
            app=self.app.conf.id,
            measures=len(self.catalog().measures),
        )

    def create_due_topic(self) -> None:
        """Create the internal due topic now if it is missing: Faust would create it too,
        but its consumer, subscribed before, ignores a topic missing at start."""
        spec = self.due_topic
        topic = NewTopic(
            spec.get_topic_name(),
            num_partitions=self.settings.uscc_partitions,
            replication_factor=self.settings.replication_factor,
            config={
                "retention.ms": str(7 * DAY_MS),  # a week of due ticks
                **changelog_config(self.settings),
            },
        )
        admin = self.clients.admin()
        for future in admin.create_topics([topic], operation_timeout=30).values():
            try:
                future.result()
            except KafkaException as error:
                if "TOPIC_ALREADY_EXISTS" not in str(error):
                    raise

    def catalog(self) -> PunishmentCatalog:
        """The catalog as the registry's topics hold it now."""
        version = (self.measures.version, self.list_types.version, self.departments.version)
        if self._catalog is None or self._catalog[0] != version:
            self._catalog = (
                version,
                PunishmentCatalog(
                    self.measures.values(), self.list_types.values(), self.departments.values()
                ),
            )
        return self._catalog[1]

    def writers(self) -> list[RecordWriter]:
        """Every kind of record the processor writes, with its schema."""
        return [*self._writers.values(), self._received_writer]

    # -- feedback from the departments' inbound topics --------------------------------------

    def _forward_feedback(self, stamp: dict[str, Any], feedback: dict[str, Any]) -> Produced:
        received = {**stamp, "feedback": feedback}
        return (self.topics.feedback, feedback["uscc"], received, self._received_writer)

    def _reject_feedback(self, stamp: dict[str, Any], raw: bytes, error: Exception) -> Produced:
        REJECTED.labels("received_restriction_feedback").inc()
        topic, partition = stamp["inbound_topic"], stamp["inbound_partition"]
        offset = stamp["inbound_offset"]
        value = {
            "dead_letter_id": deterministic_id(f"{topic}|{partition}|{offset}"),
            "connector": f"streams.{APP_NAME}",
            "record_type": "restriction_feedback",
            "source_department_uscc": "",
            "source_system": stamp["department_code"],
            "source_partition": f"{topic}[{partition}]",
            "source_offset": str(offset),
            "position": f"{topic} partition {partition} offset {offset}",
            "payload": raw,
            "payload_json": None,
            "reasons": [
                {
                    "field": "",
                    "code": "avro.unreadable",
                    "message": f"not a readable RestrictionFeedback (schemas/avro/"
                    f"{RESTRICTION_FEEDBACK.schema_file}.avsc, Confluent wire format): {error}",
                }
            ],
            "failed_at": business_clock().now_ms(),
        }
        writer = self._writers["dead_letter"]
        return (self.topics.outputs["dead_letter"], stamp["department_code"], value, writer)

    # -- agents: read, apply the rule, send ---------------------------------------------------

    def _agent(
        self, record_type: str, rule: Callable[[dict[str, Any], int], PunishmentOutput]
    ) -> Callable[[faust.StreamT], Any]:
        async def agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                message = event.message
                try:
                    # No context: the writer's schema comes with the record.
                    record = self._read(message.value, None)
                    assert isinstance(record, dict), f"{type(record).__name__}, not a record"
                except Exception as error:
                    REJECTED.labels(record_type).inc()
                    outcome = PunishmentOutput()
                    outcome.send(
                        "dead_letter",
                        f"xietong.streams.{APP_NAME}",
                        unreadable_input(APP_NAME, message, record_type, error),
                    )
                    await self._send(outcome)
                    continue
                await self._send(rule(record, business_clock().now_ms()))

        agent.__name__ = f"{record_type}_agent"
        return agent

    async def _due_agent(self, stream: faust.StreamT) -> None:
        async for due in stream:
            cause = f"due|{due['uscc']}|{due['due_at']}"
            await self._send(self.rules.on_due(due["uscc"], due["checked_at"], cause))

    async def _send(self, outcome: PunishmentOutput) -> None:
        for out in outcome.outgoing:
            value = self._writers[out.record_type].encode(out.value)
            key = out.key.encode()
            self.output.produce(self.topics.outputs[out.record_type], key, value)
            for department in out.inboxes:
                if not self.inboxes.exists(department):
                    UNDELIVERED.labels(out.record_type).inc()
                    if department not in self._without_inbox:
                        self._without_inbox.add(department)
                        log_event(
                            logger,
                            "joint_punishment_inbox_missing",
                            department=department,
                            record_type=out.record_type,
                            uscc=out.key,
                            note="the records for it are on the platform topics only",
                        )
                    continue
                self.output.produce(self.inboxes.name(department), key, value)
            log_event(
                logger,
                "joint_punishment_sent",
                record_type=out.record_type,
                uscc=out.key,
                id=out.value.get(ID_FIELD.get(out.record_type, "dead_letter_id")),
                status=out.value.get("status"),
                inboxes=list(out.inboxes),
            )
        for due in outcome.due:
            heapq.heappush(self._due, due)

    # -- timers ---------------------------------------------------------------------------------

    async def _check_due(self) -> None:
        """Every tick: each entity whose due date has passed goes to its own partition."""
        now = business_clock().now_ms()
        sent: set[str] = set()
        while self._due and self._due[0][0] <= now:
            due_at, uscc = heapq.heappop(self._due)
            state = self.entities.get(uscc)
            if state is None or state["due"] != due_at or uscc in sent:
                continue  # settled since, or sent already in this tick
            sent.add(uscc)
            value = {"uscc": uscc, "due_at": due_at, "checked_at": now}
            await self.due_topic.send(key=uscc.encode(), value=value)

    async def _on_recovered(self) -> None:
        """After every rebalance: rebuild the due dates from the table."""
        due = [(state["due"], uscc) for uscc, state in self.entities.items() if state["due"]]
        heapq.heapify(due)
        self._due = due

    async def _refresh_inboxes(self) -> None:
        new = await self.inboxes.refresh()
        if new:
            log_event(logger, "joint_punishment_inboxes_found", departments=sorted(new))
            self._without_inbox -= new


# -- running it ---------------------------------------------------------------------------------


def run_worker(
    settings: Settings,
    rules: JointPunishmentSettings | None = None,
    loglevel: str = "info",
    topics: JointPunishmentTopics | None = None,
) -> None:
    """Run one worker until SIGTERM or SIGINT (``xietong streams joint-punishment``)."""
    from prometheus_client import start_http_server

    from xietong.logs import configure

    configure()
    processor = JointPunishmentProcessor(settings, rules, topics)
    log_event(logger, "joint_punishment_starting", app=processor.app.conf.id)
    # Nothing is decided before the whole catalog is here.
    processor.measures.load()
    processor.list_types.load()
    processor.departments.load()
    processor.inboxes.exists("")  # the inboxes that exist, listed once before the loop
    processor.create_due_topic()
    for writer in processor.writers():
        writer.check_registered()
    catalog = processor.catalog()
    log_event(
        logger,
        "joint_punishment_reference_data_loaded",
        measures=len(catalog.measures),
        list_types=len(catalog.list_names),
        departments=len(catalog.departments),
    )
    if processor.rules_settings.metrics_port:
        start_http_server(processor.rules_settings.metrics_port)
    worker = faust.Worker(processor.app, loglevel=loglevel, quiet=True)
    worker.spinner = None  # see streams/dual_notice/app.py: it puts the root logger at DEBUG
    worker.execute_from_commandline()


__all__ = [
    "JointPunishmentProcessor",
    "JointPunishmentRules",
    "JointPunishmentSettings",
    "JointPunishmentTopics",
    "PunishmentCatalog",
    "run_worker",
]
