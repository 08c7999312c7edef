"""The 双告知 processor's Faust app: the wiring around :mod:`.rules`.

It reads the inputs listed in :mod:`streams.dual_notice.rules` (co-partitioned by USCC),
holds the state in three tables backed by their changelogs (``registered-scopes``,
``pushes``, ``licences``), hands each event to
:class:`~streams.dual_notice.rules.DualNoticeRules` with the clock's time, and sends what
the rules return: to the platform topic, and to each department's inbox. A timer sends
each due push through the internal topic ``xietong.streams.dual-notice-due``, keyed by
USCC, so the change is made on the push's own partition; the same topic carries the
pushes waiting for a department onboarded since.

Guarantee: at least once with deterministic ids (:mod:`streams.dual_notice.rules`).

Run it with ``xietong streams dual-notice``; settings are ``XIETONG_DUAL_NOTICE_*``
(:mod:`streams.dual_notice.settings`).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import faust

from schemas import DEAD_LETTER_RECORD, DEPARTMENT_ACTION, DUAL_NOTICE_RECORD_TYPES
from streams.departments import InboundRelay, Inboxes, Produced
from streams.dual_notice.rules import (
    APP_NAME,
    DEAD_LETTERED,
    DELIVERY,
    PROCESSING_SECONDS,
    UNDELIVERED,
    ApprovalCatalog,
    DepartmentDirectory,
    DualNoticeOutput,
    DualNoticeRules,
    rejection,
)
from streams.dual_notice.settings import DualNoticeSettings
from streams.runtime import (
    DeclaredTopic,
    RecordWriter,
    ReferenceData,
    changelog_config,
    declared_topic,
    make_app,
    unreadable_input,
)
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.topics import (
    DEAD_LETTER,
    DUAL_NOTICE_ACTIONS,
    DUAL_NOTICE_ALERTS,
    DUAL_NOTICE_APPLICANT_NOTICES,
    DUAL_NOTICE_CLOSURE_NOTICES,
    DUAL_NOTICE_MANUAL_ROUTING,
    DUAL_NOTICE_PUSHES,
    DUAL_NOTICE_REJECTED_ACTIONS,
    LICENCES,
    REGISTRATIONS,
    REGISTRY_APPROVAL_ITEMS,
    REGISTRY_DEPARTMENTS,
)

logger = logging.getLogger(__name__)


# -- where it reads and writes ------------------------------------------------------------------


@dataclass(frozen=True)
class DualNoticeTopics:
    """The topics of one run: the declarations of :mod:`xietong.topics`, or the
    benchmark's own (``inbox`` then names one topic standing for every inbox)."""

    app_name: str = APP_NAME
    registrations: str = REGISTRATIONS.name
    licences: str = LICENCES.name
    actions: str = DUAL_NOTICE_ACTIONS.name
    outputs: dict[str, str] = field(
        default_factory=lambda: {
            "dual_notice_push": DUAL_NOTICE_PUSHES.name,
            "dual_notice_applicant_notice": DUAL_NOTICE_APPLICANT_NOTICES.name,
            "dual_notice_routing_failure": DUAL_NOTICE_MANUAL_ROUTING.name,
            "rejected_department_action": DUAL_NOTICE_REJECTED_ACTIONS.name,
            "dual_notice_alert": DUAL_NOTICE_ALERTS.name,
            "entity_closure_notice": DUAL_NOTICE_CLOSURE_NOTICES.name,
            "dead_letter": DEAD_LETTER.name,
        }
    )
    inbox: str | None = None
    #: Every department's inbound topic (a regular expression, as librdkafka takes it).
    inbound_pattern: str = r"^dept\.[^.]+\.inbound$"


# -- the processor: the Faust app around the rules ------------------------------------------


class DualNoticeProcessor:
    """The 双告知 Faust app: its tables, agents, timers and action relay.

    Its three tables, keyed by USCC, held in memory and rebuilt from their changelogs,
    are the rules' state (:class:`~streams.dual_notice.rules.DualNoticeRules`).
    """

    def __init__(
        self,
        settings: Settings,
        rules: DualNoticeSettings | None = None,
        topics: DualNoticeTopics | None = None,
    ) -> None:
        self.settings = settings
        self.rules_settings = rules or DualNoticeSettings()
        self.topics = topics or DualNoticeTopics()
        self.clients = KafkaClients(settings, "streams")
        self.app = make_app(settings, self.topics.app_name)
        self._writers = {
            name: RecordWriter(self.clients, record)
            for name, record in {
                **DUAL_NOTICE_RECORD_TYPES,
                "dead_letter": DEAD_LETTER_RECORD,
            }.items()
        }
        self._read = self.clients.avro_deserializer()
        self._deadlines: list[tuple[int, str, str, str]] = []
        self._without_inbox: set[str] = set()
        self._catalog: tuple[int, ApprovalCatalog] | None = None
        self._directory: tuple[int, DepartmentDirectory] | None = None
        self._declare()

    def _declare(self) -> None:
        app, settings = self.app, self.settings

        self.approval_items = ReferenceData(self.clients, REGISTRY_APPROVAL_ITEMS)
        self.departments = ReferenceData(self.clients, REGISTRY_DEPARTMENTS)
        partitions, configs = settings.uscc_partitions, changelog_config(settings)
        self.registered_scopes = app.Table(
            "registered-scopes", partitions=partitions, extra_topic_configs=configs
        )
        self.pushes = app.Table(
            "pushes",
            partitions=partitions,
            extra_topic_configs=configs,
            on_recover=self._on_recovered,
        )
        self.licences = app.Table("licences", partitions=partitions, extra_topic_configs=configs)
        self.inboxes = Inboxes(app, self.clients, self.topics.inbox)
        self.rules = DualNoticeRules(
            registered_scopes=self.registered_scopes,
            pushes=self.pushes,
            licences=self.licences,
            catalog=self.catalog,
            directory=self.directory,
            has_inbox=self.inboxes.exists,
            settings=self.rules_settings,
        )

        self._out = {
            name: declared_topic(app, topic) for name, topic in self.topics.outputs.items()
        }
        # What the timers found due (a deadline passed, an inbox appeared), sent to the
        # push's own partition so that an agent makes the change in order with the rest.
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
        inputs: list[tuple[str, str, str, Callable[[dict[str, Any], int], DualNoticeOutput]]] = [
            ("registrations", self.topics.registrations, "registration", rules.on_registration),
            ("licences", self.topics.licences, "licence", rules.on_licence),
            (
                "department-actions",
                self.topics.actions,
                "received_department_action",
                rules.on_action,
            ),
        ]
        for name, topic, record_type, rule in inputs:
            app.agent(declared_topic(app, topic), name=name)(self._agent(record_type, rule))
        app.agent(self.due_topic, name="due")(self._due_agent)
        app.timer(self.rules_settings.tick_interval, name="deadline-check")(self._check_deadlines)
        app.timer(self.rules_settings.inbox_refresh_interval, name="inbox-refresh")(
            self._refresh_inboxes
        )
        self.relay = self._inbound_relay()
        app.task(self._start)

    async def _start(self) -> None:
        await self.app.add_runtime_dependency(self.relay)
        log_event(logger, "dual_notice_ready", app=self.app.conf.id, catalog=len(self.catalog()))

    def writers(self) -> list[RecordWriter]:
        """Every kind of record the processor writes, with its schema."""
        return [*self._writers.values(), self._received_writer]

    def _inbound_relay(self) -> InboundRelay:
        """Department actions: from every department's inbound topic (the acting
        department is the topic's) to ``dualnotice.actions``, keyed by USCC so that they
        reach the partition holding the push. Unreadable ones are rejected with the
        reason; records of other schemas are other processors' business."""
        self._received_writer = RecordWriter(
            self.clients, DUAL_NOTICE_RECORD_TYPES["received_department_action"]
        )
        rejected_writer = self._writers["rejected_department_action"]

        def forward(stamp: dict[str, Any], action: dict[str, Any]) -> Produced:
            received = {**stamp, "action": action}
            return (self.topics.actions, action["uscc"], received, self._received_writer)

        def reject(stamp: dict[str, Any], raw: bytes, error: Exception) -> Produced:
            reason = (
                "not a readable DepartmentAction (schemas/avro/cn.gov.xietong.dualnotice."
                f"DepartmentAction.avsc, Confluent wire format): {error}"
            )
            now = business_clock().now_ms()
            rejected = rejection({**stamp, "original_value": raw}, reason, None, now)
            topic = self.topics.outputs["rejected_department_action"]
            return (topic, stamp["department_code"], rejected, rejected_writer)

        return InboundRelay(
            self.clients,
            group=self.clients.group(f"{self.topics.app_name}-inbound"),
            record_name=DEPARTMENT_ACTION.subject,
            forward=forward,
            reject=reject,
            refresh_interval=self.rules_settings.inbox_refresh_interval,
            pattern=self.topics.inbound_pattern,
            id_prefix="dual-notice-action",
        )

    def catalog(self) -> ApprovalCatalog:
        """The approval catalog as registry.approval-items holds it now."""
        version = self.approval_items.version
        if self._catalog is None or self._catalog[0] != version:
            self._catalog = (version, ApprovalCatalog(self.approval_items.values()))
        return self._catalog[1]

    def directory(self) -> DepartmentDirectory:
        """The departments as registry.departments holds them now."""
        version = self.departments.version
        if self._directory is None or self._directory[0] != version:
            self._directory = (version, DepartmentDirectory(self.departments.values()))
        return self._directory[1]

    # -- agents: read, apply the rule, send ---------------------------------------------------

    def _agent(
        self, record_type: str, rule: Callable[[dict[str, Any], int], DualNoticeOutput]
    ) -> Callable[[faust.StreamT], Any]:
        """An agent reading ``record_type`` records: decode, apply ``rule``, send."""
        label = "department_action" if record_type == "received_department_action" else record_type
        timer = PROCESSING_SECONDS.labels(label)

        async def agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                with timer.time():
                    record = self._decode(event, record_type)
                    if isinstance(record, DualNoticeOutput):
                        await self._send(record)
                    else:
                        await self._send(rule(record, business_clock().now_ms()))

        agent.__name__ = f"{record_type}_agent"
        return agent

    async def _due_agent(self, stream: faust.StreamT) -> None:
        timer = PROCESSING_SECONDS.labels("deadline")
        async for due in stream:
            with timer.time():
                await self._send(self.rules.on_due(due))

    def _decode(self, event: faust.EventT, record_type: str) -> dict[str, Any] | DualNoticeOutput:
        """The record, or (unreadable input: kept whole, never dropped) its dead letter."""
        message = event.message
        try:
            # No context: the writer's schema comes with the record, and the platform's
            # schemas carry no data-contract rules to run (a fifth of the decoding time).
            value = self._read(message.value, None)
            assert isinstance(value, dict), f"{type(value).__name__}, not a record"
            return value
        except Exception as error:
            DEAD_LETTERED.labels(record_type, "avro.unreadable").inc()
            log_event(
                logger,
                "dual_notice_unreadable_input",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                error=str(error),
            )
            outcome = DualNoticeOutput()
            outcome.send(
                "dead_letter",
                f"xietong.streams.{APP_NAME}",
                unreadable_input(APP_NAME, message, record_type, error),
            )
            return outcome

    async def _send(self, outcome: DualNoticeOutput) -> None:
        for out in outcome.outgoing:
            value = self._writers[out.record_type].encode(out.value)
            key = out.key.encode()
            await self._out[out.record_type].send(key=key, value=value)
            for department in out.inboxes:
                inbox = self._inbox(department)
                if inbox is None:
                    UNDELIVERED.labels(out.record_type).inc()
                    if department not in self._without_inbox:
                        self._without_inbox.add(department)
                        log_event(
                            logger,
                            "dual_notice_inbox_missing",
                            department=department,
                            record_type=out.record_type,
                            uscc=out.key,
                            note="pushes wait until the department is onboarded; alerts and"
                            " notices for it are on the platform topics only",
                        )
                    continue
                await inbox.send(key=key, value=value)
        for due_at, uscc, identity, deadline in outcome.deadlines:
            heapq.heappush(self._deadlines, (due_at, uscc, identity, str(deadline)))

    def _inbox(self, department: str) -> DeclaredTopic | None:
        """The department's inbox, or None while it has none (not onboarded yet)."""
        return self.inboxes.topic(department)

    # -- what the timers find due ------------------------------------------------------------

    async def _check_deadlines(self) -> None:
        """Every tick: each push whose deadline has passed goes to its own partition."""
        now = business_clock().now_ms()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, uscc, identity, deadline = heapq.heappop(self._deadlines)
            if self.rules.is_waiting(uscc, identity, deadline):
                await self._due(uscc, identity, deadline, now)

    async def _due(self, uscc: str, identity: str, what: str, now: int) -> None:
        value = {"uscc": uscc, "push_id": identity, "due": what, "checked_at": now}
        await self.due_topic.send(key=uscc.encode(), value=value)

    async def _on_recovered(self) -> None:
        """After every rebalance: rebuild the deadlines and the gauges from the table."""
        deadlines = self.rules.recovered()
        heapq.heapify(deadlines)
        self._deadlines = deadlines

    async def _refresh_inboxes(self) -> None:
        """Departments onboarded since the last look get what waited for them."""
        new = await self.inboxes.refresh()
        if not new:
            return
        log_event(logger, "dual_notice_inboxes_found", departments=sorted(new))
        self._without_inbox -= new
        now = business_clock().now_ms()
        for uscc, identity in self.rules.undelivered(new):
            await self._due(uscc, identity, DELIVERY, now)


# -- running it ---------------------------------------------------------------------------------


def run_worker(
    settings: Settings,
    rules: DualNoticeSettings | None = None,
    loglevel: str = "info",
    topics: DualNoticeTopics | None = None,
) -> None:
    """Run one worker until SIGTERM or SIGINT (``xietong streams dual-notice``)."""
    from prometheus_client import start_http_server

    from xietong.logs import configure

    configure()
    processor = DualNoticeProcessor(settings, rules, topics)
    log_event(logger, "dual_notice_starting", app=processor.app.conf.id)
    # Nothing is matched or routed before the whole catalog is here.
    processor.approval_items.load()
    processor.departments.load()
    processor.inboxes.exists("")  # the inboxes that exist, listed once before the loop starts
    for writer in processor.writers():
        writer.check_registered()
    log_event(
        logger,
        "dual_notice_reference_data_loaded",
        approval_items=len(processor.catalog()),
        departments=len(processor.directory().by_code),
    )
    if processor.rules_settings.metrics_port:
        start_http_server(processor.rules_settings.metrics_port)
    worker = faust.Worker(processor.app, loglevel=loglevel, quiet=True)
    # Faust's terminal spinner puts the root logger at DEBUG, so that every debug line of
    # Faust and aiokafka (several per record) is formatted, then thrown away.
    worker.spinner = None
    worker.execute_from_commandline()


__all__ = [
    "ApprovalCatalog",
    "DualNoticeProcessor",
    "DualNoticeRules",
    "DualNoticeSettings",
    "DualNoticeTopics",
    "run_worker",
]
