"""The 双告知 processor's Faust app: the wiring around :mod:`.rules`.

It reads the inputs listed in :mod:`streams.dual_notice.rules` (co-partitioned by USCC),
holds the state in three tables backed by their changelogs (``registered-scopes``,
``pushes``, ``licences``), hands each event to
:class:`~streams.dual_notice.rules.DualNoticeRules` with the clock's time, and sends what
the rules return: to the platform topic, and to each department's inbox. A timer sends
each due push through the internal topic ``xietong.streams.dual-notice-due``, keyed by
USCC, so the change is made on the push's own partition; the same topic carries the
pushes waiting for a department onboarded since.

Guarantee: at least once with deterministic ids. Outputs go through a librdkafka producer
that Faust's pre-commit flush waits for (:class:`streams.runtime.OutputProducer`), so an
offset is committed only once what its events sent is acknowledged; an event processed
again after a crash re-sends what it had sent (:mod:`streams.dual_notice.rules`). A
registration or a licence reaches its rule with where it was read (topic, partition,
offset: :func:`told_where_read`), so that one a department sent again, at a new offset,
sends nothing new.

Run it with ``xietong streams dual-notice``; settings are ``XIETONG_DUAL_NOTICE_*``
(:mod:`streams.dual_notice.settings`).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import Counter, Histogram

from schemas import DEPARTMENT_ACTION, DUAL_NOTICE_RECORD_TYPES, LICENCE, REGISTRATION
from streams.departments import InboundRelay, ProcessorApp, ProcessorTopics, Produced
from streams.directory import DepartmentDirectory
from streams.dual_notice.rules import (
    APP_NAME,
    DELIVERY,
    ApprovalCatalog,
    DualNoticeOutput,
    DualNoticeRules,
    rejection,
)
from streams.dual_notice.settings import DualNoticeSettings
from streams.outputs import RuleOutput
from streams.runtime import ReferenceData, Rule, changelog_config
from xietong.clock import business_clock
from xietong.logs import log_event
from xietong.topics import REGISTRY_APPROVAL_ITEMS, REGISTRY_DEPARTMENTS

logger = logging.getLogger(__name__)

# The worker's own metrics; the rules count what they decide (streams.dual_notice.rules).
PROCESSING_SECONDS = Histogram(
    "xietong_dual_notice_processing_seconds",
    "From reading an input record to handing what it makes to the producer, by input",
    ("input",),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
DEAD_LETTERED = Counter(
    "xietong_dual_notice_dead_lettered",
    "Input records sent to the dead-letter topic, by record type and reason code",
    ("record_type", "reason"),
)


# -- where it reads and writes ------------------------------------------------------------------

#: Department actions as the relay forwards them (stamped with the acting department).
RECEIVED_ACTION = "received_department_action"


@dataclass(frozen=True)
class DualNoticeTopics(ProcessorTopics):
    """Where the processor reads registrations, licences and actions, and sends."""

    app_name: str = APP_NAME
    registrations: str = REGISTRATION.topic.name
    licences: str = LICENCE.topic.name
    actions: str = DUAL_NOTICE_RECORD_TYPES[RECEIVED_ACTION].topic.name


def told_where_read(rule: Callable[..., DualNoticeOutput]) -> Rule:
    """``rule`` told where the agent read the record (topic|partition|offset, of the event
    Faust is processing): the same event sent again at a new offset sends nothing; read
    again at its own offset, after a crash, it sends again what it sent."""

    def ruled(record: dict[str, Any], now: int) -> RuleOutput:
        event = faust.current_event()
        read_at = None
        if event is not None:
            message = event.message
            read_at = f"{message.topic}|{message.partition}|{message.offset}"
        return rule(record, now, read_at=read_at)

    return ruled


# -- the processor: the Faust app around the rules ------------------------------------------


class DualNoticeProcessor(ProcessorApp[DualNoticeSettings, DualNoticeTopics]):
    """The 双告知 Faust app: its tables, agents, timers and action relay.

    Its three tables, keyed by USCC, held in memory and rebuilt from their changelogs,
    are the rules' state (:class:`~streams.dual_notice.rules.DualNoticeRules`).
    """

    name = APP_NAME
    record_types = DUAL_NOTICE_RECORD_TYPES
    settings_type = DualNoticeSettings
    topics_type = DualNoticeTopics
    inbox_missing = (
        "pushes wait until the department is onboarded; alerts and notices for it"
        " are on the platform topics only"
    )

    def declare(self) -> None:
        self._deadlines: list[tuple[int, str, str, str]] = []
        app, settings = self.app, self.settings
        self.approval_items = ReferenceData(self.clients, REGISTRY_APPROVAL_ITEMS)
        self.departments = ReferenceData(self.clients, REGISTRY_DEPARTMENTS)
        #: The approval catalog and the departments as their topics hold them now.
        self.catalog = self.approval_items.indexed(ApprovalCatalog)
        self.directory = self.departments.indexed(DepartmentDirectory)
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
        self.rules = DualNoticeRules(
            registered_scopes=self.registered_scopes,
            pushes=self.pushes,
            licences=self.licences,
            catalog=self.catalog,
            directory=self.directory,
            has_inbox=self.inboxes.exists,
            settings=self.rules_settings,
        )
        # (agent, topic, record type, what the processing time is labelled, rule)
        inputs: list[tuple[str, str, str, str, Rule]] = [
            (
                "registrations",
                self.topics.registrations,
                "registration",
                "registration",
                told_where_read(self.rules.on_registration),
            ),
            (
                "licences",
                self.topics.licences,
                "licence",
                "licence",
                told_where_read(self.rules.on_licence),
            ),
            (
                "department-actions",
                self.topics.actions,
                RECEIVED_ACTION,
                "department_action",
                self.rules.on_action,
            ),
        ]
        for name, topic, record_type, label, rule in inputs:
            unreadable = DEAD_LETTERED.labels(record_type, "avro.unreadable")
            timer = PROCESSING_SECONDS.labels(label)
            self.read_input(name, topic, record_type, rule, unreadable=unreadable, timer=timer)
        app.agent(self.due_topic, name="due")(self._due_agent)
        app.timer(self.rules_settings.tick_interval, name="deadline-check")(self._check_deadlines)
        app.timer(self.rules_settings.inbox_refresh_interval, name="inbox-refresh")(
            self._refresh_inboxes
        )
        self.relay = self._inbound_relay()
        app.task(self._start)

    async def _start(self) -> None:
        self.sender.attach(self.app)
        await self.app.add_runtime_dependency(self.relay)
        log_event(logger, "dual_notice_ready", app=self.app.conf.id, catalog=len(self.catalog()))

    def _inbound_relay(self) -> InboundRelay:
        """Department actions: from every department's inbound topic (the acting
        department is the topic's) to ``dualnotice.actions``, keyed by USCC so that they
        reach the partition holding the push. Unreadable ones are rejected with the
        reason; records of other schemas are other processors' business."""
        received_writer = self.sender.writers[RECEIVED_ACTION]
        rejected_writer = self.sender.writers["rejected_department_action"]

        def forward(stamp: dict[str, Any], action: dict[str, Any]) -> Produced:
            received = {**stamp, "action": action}
            return (self.topics.actions, action["uscc"], received, received_writer)

        def reject(stamp: dict[str, Any], raw: bytes, error: Exception) -> Produced:
            reason = (
                "not a readable DepartmentAction (schemas/avro/cn.gov.xietong.dualnotice."
                f"DepartmentAction.avsc, Confluent wire format): {error}"
            )
            now = business_clock().now_ms()
            rejected = rejection({**stamp, "original_value": raw}, reason, None, now)
            topic = self.sender.topics["rejected_department_action"]
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

    def load(self) -> dict[str, int]:
        """The whole catalog and the departments: nothing is matched or routed before."""
        self.approval_items.load()
        self.departments.load()
        return {"approval_items": len(self.catalog()), "departments": len(self.directory().by_code)}

    # -- sending what the rules return -------------------------------------------------------

    def send(self, output: RuleOutput) -> None:
        for out in output.outgoing:
            self.sender.send(out)
        if isinstance(output, DualNoticeOutput):
            for due_at, uscc, identity, deadline in output.deadlines:
                heapq.heappush(self._deadlines, (due_at, uscc, identity, str(deadline)))

    async def _due_agent(self, stream: faust.StreamT) -> None:
        timer = PROCESSING_SECONDS.labels("deadline")
        async for due in stream:
            with timer.time():
                self.send(self.rules.on_due(due))

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
        new = await self.sender.refresh()
        now = business_clock().now_ms()
        for uscc, identity in self.rules.undelivered(new):
            await self._due(uscc, identity, DELIVERY, now)


# -- running it ---------------------------------------------------------------------------------


#: ``xietong streams dual-notice``: one worker until SIGTERM or SIGINT.
run_worker = DualNoticeProcessor.run_worker


__all__ = [
    "ApprovalCatalog",
    "DualNoticeProcessor",
    "DualNoticeRules",
    "DualNoticeSettings",
    "DualNoticeTopics",
    "run_worker",
]
