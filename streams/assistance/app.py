"""The 行政协助 processor's Faust app: the wiring around :mod:`.rules`.

It reads the departments' assistance actions (relayed from every ``dept.<code>.inbound``
to ``assistance.actions``, keyed by request id), holds the requests in one table backed
by its changelog (``requests``, keyed by request id), hands each action to
:class:`~streams.assistance.rules.AssistanceRules` with the clock's time, and sends what
the rules return: to the platform topic, and to each department's inbox. A timer sends
each request whose deadline passed through ``xietong.streams.assistance-due``, keyed by
request id, so the 督查 is decided on the request's own partition; the same topic carries
the requests waiting for a department onboarded since.

Guarantee: at least once with deterministic ids, as the 双告知 processor
(:mod:`streams.dual_notice.app`): outputs go through the librdkafka producer that Faust's
pre-commit flush waits for, and a reprocessed action re-sends what it had sent.

Run it with ``xietong streams assistance``; settings are ``XIETONG_ASSISTANCE_*``
(:mod:`streams.assistance.settings`).
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import Counter, Histogram

from schemas import ASSISTANCE_ACTION, ASSISTANCE_RECORD_TYPES
from streams.assistance.records import forwarded
from streams.assistance.rules import (
    APP_NAME,
    DEADLINE,
    DELIVERY,
    AssistanceList,
    AssistanceOutput,
    AssistanceRules,
    periods_due,
    rejection,
)
from streams.assistance.settings import AssistanceSettings
from streams.departments import InboundRelay, ProcessorApp, ProcessorTopics, Produced
from streams.directory import DepartmentDirectory
from streams.outputs import RuleOutput
from streams.runtime import ReferenceData, changelog_config
from xietong.clock import business_clock
from xietong.logs import log_event
from xietong.topics import REGISTRY_ASSISTANCE_ITEMS, REGISTRY_DEPARTMENTS

logger = logging.getLogger(__name__)

PROCESSING_SECONDS = Histogram(
    "xietong_assistance_processing_seconds",
    "From reading an input record to handing what it makes to the producer, by input",
    ("input",),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
DEAD_LETTERED = Counter(
    "xietong_assistance_dead_lettered",
    "Input records sent to the dead-letter topic, by record type and reason code",
    ("record_type", "reason"),
)

RECEIVED_ACTION = "received_assistance_action"
REJECTED_ACTION = "rejected_assistance_action"


@dataclass(frozen=True)
class AssistanceTopics(ProcessorTopics):
    """Where the processor reads the actions, and sends."""

    app_name: str = APP_NAME
    actions: str = ASSISTANCE_RECORD_TYPES[RECEIVED_ACTION].topic.name


class AssistanceProcessor(ProcessorApp[AssistanceSettings, AssistanceTopics]):
    """The 行政协助 Faust app: its table, agents, timers and action relay."""

    name = APP_NAME
    record_types = ASSISTANCE_RECORD_TYPES
    settings_type = AssistanceSettings
    topics_type = AssistanceTopics
    inbox_missing = (
        "requests wait until the assisting department is onboarded; answers, escalations"
        " and ratings for it are on the platform topics only"
    )

    def declare(self) -> None:
        self._deadlines: list[tuple[int, str]] = []
        #: The periods of standing duties this worker has sent to their partitions.
        self._periods_sent: set[str] = set()
        app, settings = self.app, self.settings
        self.assistance_items = ReferenceData(self.clients, REGISTRY_ASSISTANCE_ITEMS)
        self.departments = ReferenceData(self.clients, REGISTRY_DEPARTMENTS)
        #: The list and the departments as their topics hold them now.
        self.assistance_list = self.assistance_items.indexed(AssistanceList)
        self.directory = self.departments.indexed(DepartmentDirectory)
        self.requests = app.Table(
            "requests",
            partitions=settings.uscc_partitions,
            extra_topic_configs=changelog_config(settings),
            on_recover=self._on_recovered,
        )
        self.rules = AssistanceRules(
            requests=self.requests,
            items=self.assistance_list,
            directory=self.directory,
            has_inbox=self.inboxes.exists,
            settings=self.rules_settings,
        )
        self.read_input(
            "assistance-actions",
            self.topics.actions,
            RECEIVED_ACTION,
            self.rules.on_action,
            unreadable=DEAD_LETTERED.labels(RECEIVED_ACTION, "avro.unreadable"),
            timer=PROCESSING_SECONDS.labels("action"),
        )
        app.agent(self.due_topic, name="due")(self._due_agent)
        app.timer(self.rules_settings.tick_interval, name="deadline-check")(self._check_deadlines)
        app.timer(self.rules_settings.tick_interval, name="period-check")(self._check_periods)
        app.timer(self.rules_settings.inbox_refresh_interval, name="inbox-refresh")(
            self._refresh_inboxes
        )
        self.relay = self._inbound_relay()
        app.task(self._start)

    async def _start(self) -> None:
        self.sender.attach(self.app)
        await self.app.add_runtime_dependency(self.relay)
        log_event(
            logger, "assistance_ready", app=self.app.conf.id, items=len(self.assistance_list())
        )

    def _inbound_relay(self) -> InboundRelay:
        """Assistance actions: from every department's inbound topic (the acting department
        is the topic's) to ``assistance.actions``, keyed by the request id."""
        received_writer = self.sender.writers[RECEIVED_ACTION]
        rejected_writer = self.sender.writers[REJECTED_ACTION]

        def forward(stamp: dict[str, Any], action: dict[str, Any]) -> Produced:
            identity, received = forwarded(stamp, action)
            return (self.topics.actions, identity, received, received_writer)

        def reject(stamp: dict[str, Any], raw: bytes, error: Exception) -> Produced:
            reason = (
                "not an applicable AssistanceAction (schemas/avro/cn.gov.xietong.assistance."
                f"AssistanceAction.avsc, Confluent wire format): {error}"
            )
            now = business_clock().now_ms()
            rejected = rejection({**stamp, "original_value": raw}, reason, None, now)
            topic = self.sender.topics[REJECTED_ACTION]
            return (topic, stamp["department_code"], rejected, rejected_writer)

        return InboundRelay(
            self.clients,
            group=self.clients.group(f"{self.topics.app_name}-inbound"),
            record_name=ASSISTANCE_ACTION.subject,
            forward=forward,
            reject=reject,
            refresh_interval=self.rules_settings.inbox_refresh_interval,
            pattern=self.topics.inbound_pattern,
            id_prefix="assistance-action",
        )

    def load(self) -> dict[str, int]:
        """The whole list and the departments: no request is decided before."""
        self.assistance_items.load()
        self.departments.load()
        return {
            "assistance_items": len(self.assistance_list()),
            "departments": len(self.directory().by_code),
        }

    # -- sending what the rules return ---------------------------------------------------------

    def send(self, output: RuleOutput) -> None:
        for out in output.outgoing:
            self.sender.send(out)
        if isinstance(output, AssistanceOutput):
            for due_at, identity in output.deadlines:
                heapq.heappush(self._deadlines, (due_at, identity))

    async def _due_agent(self, stream: faust.StreamT) -> None:
        timer = PROCESSING_SECONDS.labels("deadline")
        async for due in stream:
            with timer.time():
                self.send(self.rules.on_due(due))

    async def _check_deadlines(self) -> None:
        """Every tick: each request whose deadline passed goes to its own partition."""
        now = business_clock().now_ms()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, identity = heapq.heappop(self._deadlines)
            if self.rules.is_waiting(identity):
                await self._due(identity, DEADLINE, now)

    async def _check_periods(self) -> None:
        """Every tick: each standing duty's last ended period goes to its partition once,
        where its request is made unless it was (定期协助)."""
        for due in periods_due(self.assistance_list(), business_clock().now_ms()):
            if due["request_id"] not in self._periods_sent:
                await self.due_topic.send(key=due["request_id"].encode(), value=due)
                self._periods_sent.add(due["request_id"])

    async def _due(self, identity: str, what: str, now: int) -> None:
        value = {"request_id": identity, "due": what, "checked_at": now}
        await self.due_topic.send(key=identity.encode(), value=value)

    async def _on_recovered(self) -> None:
        """After every rebalance: rebuild the deadlines and the gauge from the table."""
        deadlines = self.rules.recovered()
        heapq.heapify(deadlines)
        self._deadlines = deadlines

    async def _refresh_inboxes(self) -> None:
        """Departments onboarded since the last look get the requests that waited."""
        new = await self.sender.refresh()
        now = business_clock().now_ms()
        for identity in self.rules.undelivered(new):
            await self._due(identity, DELIVERY, now)


#: ``xietong streams assistance``: one worker until SIGTERM or SIGINT.
run_worker = AssistanceProcessor.run_worker
