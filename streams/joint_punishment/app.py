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
from dataclasses import dataclass
from typing import Any

import faust

from schemas import JOINT_PUNISHMENT_RECORD_TYPES, RESTRICTION_FEEDBACK
from streams.departments import InboundRelay, ProcessorApp, ProcessorTopics, Produced
from streams.joint_punishment.rules import (
    APP_NAME,
    ID_FIELD,
    REJECTED,
    JointPunishmentRules,
    PunishmentCatalog,
    PunishmentOutput,
)
from streams.joint_punishment.settings import JointPunishmentSettings
from streams.outputs import RuleOutput
from streams.runtime import (
    ReferenceData,
    Rule,
    changelog_config,
)
from xietong.clock import business_clock
from xietong.dead_letters import unreadable_message
from xietong.logs import log_event
from xietong.topics import (
    CREDIT_LIST_ENTRIES,
    LICENCES,
    MATTER_EVENTS,
    PENALTIES,
    PUNISHMENT_FEEDBACK,
    REGISTRATIONS,
    REGISTRY_DEPARTMENTS,
    REGISTRY_LIST_TYPES,
    REGISTRY_MEASURES,
)

logger = logging.getLogger(__name__)

RECEIVED_FEEDBACK = "received_restriction_feedback"


# -- where it reads and writes ------------------------------------------------------------------


@dataclass(frozen=True)
class JointPunishmentTopics(ProcessorTopics):
    """Where the processor reads listings, penalties, licences, matters, feedback."""

    app_name: str = APP_NAME
    list_entries: str = CREDIT_LIST_ENTRIES.name
    penalties: str = PENALTIES.name
    licences: str = LICENCES.name
    matters: str = MATTER_EVENTS.name
    feedback: str = PUNISHMENT_FEEDBACK.name
    registrations: str = REGISTRATIONS.name


# -- the processor: the Faust app around the rules ------------------------------------------


class JointPunishmentProcessor(ProcessorApp[JointPunishmentSettings, JointPunishmentTopics]):
    """The joint-punishment Faust app: its table, agents, timer and feedback relay."""

    name = APP_NAME
    record_types = JOINT_PUNISHMENT_RECORD_TYPES
    settings_type = JointPunishmentSettings
    topics_type = JointPunishmentTopics
    inbox_missing = "the records for it are on the platform topics only"

    def declare(self) -> None:
        self._due: list[tuple[int, str]] = []
        self._catalog: tuple[tuple[int, int, int], PunishmentCatalog] | None = None
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
        inputs: list[tuple[str, str, str, Rule]] = [
            (
                "list-entries",
                self.topics.list_entries,
                "credit_list_entry",
                self.rules.on_list_entry,
            ),
            ("penalties", self.topics.penalties, "penalty", self.rules.on_penalty),
            ("licences", self.topics.licences, "licence", self.rules.on_licence),
            (
                "registrations",
                self.topics.registrations,
                "registration",
                self.rules.on_registration,
            ),
            ("matters", self.topics.matters, "matter_event", self.rules.on_matter),
            ("feedback", self.topics.feedback, RECEIVED_FEEDBACK, self.rules.on_feedback),
        ]
        for name, topic, record_type, rule in inputs:
            self.read_input(name, topic, record_type, rule, unreadable=REJECTED.labels(record_type))
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
        self.sender.attach(self.app)
        await self.app.add_runtime_dependency(self.relay)
        log_event(
            logger,
            "joint_punishment_ready",
            app=self.app.conf.id,
            measures=len(self.catalog().measures),
        )

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

    def load(self) -> dict[str, int]:
        """The measures, list types and departments: nothing is decided before."""
        self.measures.load()
        self.list_types.load()
        self.departments.load()
        catalog = self.catalog()
        return {
            "measures": len(catalog.measures),
            "list_types": len(catalog.list_names),
            "departments": len(catalog.departments),
        }

    # -- feedback from the departments' inbound topics --------------------------------------

    def _forward_feedback(self, stamp: dict[str, Any], feedback: dict[str, Any]) -> Produced:
        received = {**stamp, "feedback": feedback}
        writer = self.sender.writers[RECEIVED_FEEDBACK]
        return (self.topics.feedback, feedback["uscc"], received, writer)

    def _reject_feedback(self, stamp: dict[str, Any], raw: bytes, error: Exception) -> Produced:
        REJECTED.labels("received_restriction_feedback").inc()
        topic, partition = stamp["inbound_topic"], stamp["inbound_partition"]
        offset = stamp["inbound_offset"]
        value = unreadable_message(
            connector=f"streams.{APP_NAME}",
            source_system=stamp["department_code"],
            record_type="restriction_feedback",
            topic=topic,
            partition=partition,
            offset=offset,
            payload=raw,
            code="avro.unreadable",
            message=f"not a readable RestrictionFeedback (schemas/avro/"
            f"{RESTRICTION_FEEDBACK.schema_file}.avsc, Confluent wire format): {error}",
        )
        writer = self.sender.writers["dead_letter"]
        return (self.sender.topics["dead_letter"], stamp["department_code"], value, writer)

    # -- sending what the rules return -------------------------------------------------------

    async def _due_agent(self, stream: faust.StreamT) -> None:
        async for due in stream:
            cause = f"due|{due['uscc']}|{due['due_at']}"
            self.send(self.rules.on_due(due["uscc"], due["checked_at"], cause))

    def send(self, output: RuleOutput) -> None:
        for out in output.outgoing:
            self.sender.send(out)
            log_event(
                logger,
                "joint_punishment_sent",
                record_type=out.record_type,
                uscc=out.key,
                id=out.value.get(ID_FIELD.get(out.record_type, "dead_letter_id")),
                status=out.value.get("status"),
                inboxes=list(out.inboxes),
            )
        if isinstance(output, PunishmentOutput):
            for due in output.due:
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
        await self.sender.refresh()


# -- running it ---------------------------------------------------------------------------------


#: ``xietong streams joint-punishment``: one worker until SIGTERM or SIGINT.
run_worker = JointPunishmentProcessor.run_worker


__all__ = [
    "JointPunishmentProcessor",
    "JointPunishmentRules",
    "JointPunishmentSettings",
    "JointPunishmentTopics",
    "PunishmentCatalog",
    "run_worker",
]
