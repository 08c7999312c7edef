"""The department simulator of ``make run``: the province's department systems, played.

Two kinds of department behaviour, each in a thread of its own:

* **Exports** (:class:`ExportFeeder`). Every ``tick_seconds`` the registration, licensing
  and enforcement departments hand over a fresh export, written with the sample
  generator (:mod:`app.samples`, ``bad_share`` of the records bad) into
  ``<out_dir>/tick-000042/``, and the department connectors publish it exactly as
  ``xietong connect run`` would (same mapping, validation, dead letters and offsets). A
  tick holds *recent* records (registrations, licences of the last ``recent_days``, so
  their 双告知 pushes are live) and *history* (licences, penalties and credit-list
  entries of the last three years for entities registered before the platform). A tick
  is marked fed once every file of it is published; a restarted simulator feeds the
  unfinished tick again (the connectors' offsets skip what was published) and goes on
  with the next.
* **Desks** (:class:`DepartmentDesks`). The departments' clerks read their inboxes and
  act: a 双告知 push is claimed (``claim_share``), returned as not theirs
  (``return_share``), or left to go overdue; a restriction hit gets its feedback
  (``feedback_share``), the rest goes overdue. Each acts after a few seconds' delay, as
  a clerk would. ``http_share`` of the actions go through the inbox API
  (``connectors/inbox/``) with the department's own registry token, as a department
  system without a Kafka client does (:class:`InboxClerks`); the rest are written to the
  department's own inbound topic directly. One process plays every department here, so
  it writes those as the platform's administrator; a real department connects as
  ``dept-<code>`` and may write only its own inbound topic.
* **行政协助** (also the desks). Every tick ``assistance_per_tick`` departments ask for
  assistance by an item of the list they may use (now and then the same need outside
  the list); the assisting department completes it (``assist_share``), refuses it
  through a 否定报备 that its leader then approves (``refuse_share``), or lets it go
  overdue (escalated to it and the 编办); the requester rates ``rate_share`` of the
  completed ones. These go through the inbound topics (the inbox API takes 双告知 and
  反馈 only).
* **Webhooks** (:class:`~app.webhook_receivers.WebhookReceivers`). A few departments
  (``webhook_departments``) take their inbox by webhook: the simulator registers their
  endpoints on a loopback server of its own and verifies every delivery, as their
  systems would.
* **Matters** (also the desks). When an entity is listed, a department whose sector
  implements a measure against that list handles a matter for it (``check_share`` of
  listings: a procurement bid, a land sale …) and checks the entity's credit through
  the credit-check API, with a registry token of its own, as its system would while the
  clerk waits; the check is the matter event the joint-punishment processor acts on.

Decisions are drawn from a hash of the record's id, so a replay decides the same.

Example::

    tokens = DepartmentTokens(database_url)
    simulator = DepartmentSimulator(
        settings, exports, clients("admin"), clients("connectors"),
        CreditChecks(settings, tokens), InboxClerks(settings, tokens), tokens,
    )
    simulator.start()          # threads; simulator.stop() ends them and revokes the tokens
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import record_subject_name_strategy
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.samples import DEPARTMENTS_DIR, ExportFile, generate_exports
from app.webhook_receivers import WebhookReceivers
from connectors.config import ConnectorConfig, FileSourceConfig
from connectors.runner import run_connector
from registry.seed import load_sample_province
from schemas import ASSISTANCE_ACTION, DEPARTMENT_ACTION, RESTRICTION_FEEDBACK
from streams.assistance.records import assistance_action
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.topics import CREDIT_LIST_ENTRIES, DepartmentTopic

logger = logging.getLogger("app.simulator")

FED_MARKER = "fed"


class SimulatorSettings(BaseSettings):
    """How busy the simulated province is, from ``XIETONG_SIMULATOR_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_SIMULATOR_", extra="ignore")

    tick_seconds: float = Field(default=5.0, gt=0, description="Seconds between two exports.")
    recent_records: int = Field(
        default=150, ge=0, description="Records of the last days per export (registrations …)."
    )
    history_records: int = Field(
        default=150,
        ge=0,
        description="Records of the last three years per export (licences, penalties, lists).",
    )
    recent_days: int = Field(default=20, ge=1, description="How far back 'recent' records go.")
    bad_share: float = Field(default=0.05, ge=0, le=1, description="Share of bad records.")
    seed: int = Field(default=2026, description="Seed of the generator; tick n uses seed + n.")
    claim_share: float = Field(default=0.8, ge=0, le=1, description="Pushes claimed.")
    return_share: float = Field(default=0.05, ge=0, le=1, description="Pushes returned.")
    feedback_share: float = Field(default=0.85, ge=0, le=1, description="Hits answered.")
    check_share: float = Field(
        default=0.6, ge=0, le=1, description="Listings followed by a matter (a credit check)."
    )
    credit_check_url: str = Field(
        default="http://127.0.0.1:8420", description="The credit-check API the clerks call."
    )
    http_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Claims, returns and feedback sent through the inbox API with the"
        " department's own token (the rest through its inbound topic).",
    )
    inbox_url: str = Field(
        default="http://127.0.0.1:8430", description="The inbox API the clerks call."
    )
    assistance_per_tick: int = Field(
        default=1,
        ge=0,
        description="行政协助 requests made every tick (by the list, or outside it).",
    )
    assist_share: float = Field(
        default=0.75, ge=0, le=1, description="Assistance requests completed in time."
    )
    refuse_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Assistance requests refused through a 否定报备 (the rest go overdue).",
    )
    rate_share: float = Field(default=0.8, ge=0, le=1, description="Completed requests rated.")
    max_delay_seconds: float = Field(
        default=20.0, ge=0, description="A clerk acts within this many seconds."
    )
    metrics_port: int | None = Field(
        default=9401, description="/metrics of the connectors run by the simulator."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address of that /metrics (0.0.0.0 in a container, for Prometheus).",
    )
    exports_dir: Path | None = Field(
        default=None, description="Where the exports go (default <XIETONG_HOME>/run/exports)."
    )
    webhook_departments: list[str] = Field(
        default=["hz-xh-amr", "hz-xh-transport", "hz-sc-amr"],
        description="Departments whose system takes its inbox by webhook, served by the"
        " simulator on loopback (app/webhook_receivers.py); a JSON list, [] for none.",
    )


@dataclass
class Counts:
    """What the simulator did, for the live summary."""

    ticks: int = 0
    files: int = 0
    read: int = 0
    published: int = 0
    dead_lettered: int = 0
    actions: dict[str, int] = field(default_factory=dict)

    def acted(self, kind: str) -> None:
        self.actions[kind] = self.actions.get(kind, 0) + 1


def share(identity: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``identity``: the same record always decides the same."""
    digest = hashlib.sha256(f"{salt}|{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class ExportFeeder:
    """Department exports, one tick after the other, through the department connectors."""

    # The history part feeds everything but registrations: those entities registered
    # before the platform, and a years-old registration would only make an old push.
    HISTORY_RECORD_TYPES = ("licence", "penalty", "credit_list_entry")

    def __init__(
        self, settings: SimulatorSettings, clients: KafkaClients, out_dir: Path, counts: Counts
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.out_dir = out_dir
        self.counts = counts
        self._stop = threading.Event()
        self._connector: Any = None

    def next_tick(self) -> int:
        """The first tick not yet fed (an unfinished one is fed again)."""
        ticks = sorted(self.out_dir.glob("tick-*"))
        for path in ticks:
            if not (path / FED_MARKER).exists():
                return int(path.name.removeprefix("tick-"))
        return int(ticks[-1].name.removeprefix("tick-")) + 1 if ticks else 0

    def run(self) -> None:
        tick = self.next_tick()
        while not self._stop.is_set():
            started = time.monotonic()
            self.feed(tick)
            tick += 1
            self._stop.wait(max(0.0, self.settings.tick_seconds - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._connector is not None:
            self._connector.stop()

    def feed(self, tick: int) -> None:
        directory = self.out_dir / f"tick-{tick:06d}"
        parts = {
            "recent": (self.settings.recent_records, self.settings.recent_days, None),
            "history": (self.settings.history_records, 3 * 365, self.HISTORY_RECORD_TYPES),
        }
        for part, (records, days, only) in parts.items():
            if records == 0:
                continue
            files = self._exports(directory / part, records, tick, days)
            for export in files:
                if only is not None and export.record_type not in only:
                    continue
                if self._stop.is_set():
                    return
                self._publish(directory / part, export)
        (directory / FED_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))
        self.counts.ticks += 1
        log_event(logger, "simulator_tick_fed", tick=tick, directory=str(directory))

    def _exports(self, directory: Path, records: int, tick: int, days: int) -> list[ExportFile]:
        manifest = directory / "manifest.json"
        if manifest.exists():  # written before a stop: the same files, fed from their offsets
            entries = json.loads(manifest.read_text(encoding="utf-8"))["files"]
            return [ExportFile(**entry) for entry in entries]
        seed = self.settings.seed * 1_000_003 + tick * 2 + (days < 3 * 365)
        written = generate_exports(
            directory,
            records,
            seed=seed,
            bad_share=self.settings.bad_share,
            today=business_clock().today(),
            history_days=days,
        )
        return list(written.files)

    def _publish(self, directory: Path, export: ExportFile) -> None:
        config = ConnectorConfig.load(DEPARTMENTS_DIR / f"{export.connector}.connector.yaml")
        assert isinstance(config.source, FileSourceConfig)
        config.source.path = directory / export.file

        def keep(connector: Any) -> None:
            self._connector = connector

        report = run_connector(config, self.clients, connector_hook=keep)
        self._connector = None
        self.counts.files += 1
        self.counts.read += report.read
        self.counts.published += report.published
        self.counts.dead_lettered += report.dead_lettered


class DepartmentDesks:
    """Every department's clerks: read the inbox, act on it through the inbound topic."""

    def __init__(
        self,
        settings: SimulatorSettings,
        clients: KafkaClients,
        counts: Counts,
        checks: CreditChecks | None = None,
        inbox: InboxClerks | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.counts = counts
        self.checks = checks
        self.inbox = inbox
        self._stop = threading.Event()
        self._due: list[tuple[float, int, str, str, dict[str, Any]]] = []
        self._sequence = 0
        self._province = load_sample_province()
        #: This run's assistance requests: their references are the run's and a count.
        self._run, self._asked = f"{int(time.time())}", 0
        self._serializers: dict[str, Any] = {}

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        consumer = self.clients.consumer(
            self.clients.group("simulator-desks"),
            **{"topic.metadata.refresh.interval.ms": 10_000},
        )
        consumer.subscribe([DepartmentTopic.INBOX.pattern(), CREDIT_LIST_ENTRIES.name])
        deserialize = self.clients.avro_deserializer()
        producer = self.clients.producer()
        next_ask = time.monotonic()
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_ask:
                    next_ask += self.settings.tick_seconds
                    for _ in range(self.settings.assistance_per_tick):
                        self._ask_for_assistance()
                for message in consumer.consume(200, timeout=0.5):
                    if message.error() is not None or message.value() is None:
                        continue
                    record = deserialize(message.value(), None)
                    if not isinstance(record, dict):
                        continue
                    if message.topic() == CREDIT_LIST_ENTRIES.name:
                        self._listed(record)
                        continue
                    department = DepartmentTopic.INBOX.code_of(message.topic() or "")
                    if department is not None:
                        self._consider(department, record)
                self._act_on_due(producer)
                producer.poll(0)
        finally:
            producer.flush(15)
            consumer.close()

    def _consider(self, department: str, record: dict[str, Any]) -> None:
        settings = self.settings
        if "push_id" in record and record.get("state") == "PUSHED":
            identity = record["push_id"]
            drawn = share(identity, "push")
            if drawn < settings.claim_share:
                action = self._dual_notice(record, "CLAIM")
            elif drawn < settings.claim_share + settings.return_share:
                action = self._dual_notice(record, "RETURN", reason="NO_SUCH_ITEM")
            else:
                return  # nobody looks at it: it goes overdue
            self._schedule(department, "dual_notice_action", identity, action)
        elif "request_reference" in record and "assisting_department" in record:
            self._assist(department, record)  # a request (not its 督查 or its rating)
        elif "hit_id" in record and record.get("status") == "ACTIVE":
            identity = record["hit_id"]
            if record.get("feedback_due_at") is None or record.get("fed_back_at") is not None:
                return  # no feedback asked for, or given already
            if share(identity, "hit") < settings.feedback_share:
                self._schedule(department, "feedback", identity, self._feedback(record))

    def _ask_for_assistance(self) -> None:
        """A department asks another for 行政协助: mostly by an item of the list it may use,
        now and then outside the list (清单外)."""
        province = self._province
        self._asked += 1
        identity = f"{self._run}-{self._asked}"
        item = province.assistance_items[
            int(share(identity, "item") * len(province.assistance_items))
        ]
        if item.requesting_department:
            requester = item.requesting_department
        else:
            candidates = [
                d.code
                for d in province.departments
                if d.code != item.assisting
                and (item.requesting_sector is None or d.sector == item.requesting_sector)
            ]
            requester = candidates[int(share(identity, "who") * len(candidates))]
        fields: dict[str, Any] = {"item_code": item.code}
        if share(identity, "unlisted") < 0.15:  # the same need, asked outside the list
            fields = {"assisting_department_code": item.assisting, "subject": item.content}
        value = assistance_action(
            "REQUEST",
            0,
            action_id=f"sim-request-{identity}",
            request_reference=f"模拟联系单-{identity}",
            operator="模拟经办人",
            **fields,
        )
        self._schedule(requester, "assistance_action", identity, value)

    def _assist(self, department: str, request: dict[str, Any]) -> None:
        """The assisting department answers (or lets it go overdue); its leader approves a
        否定报备; the requester rates a completed request."""
        identity, state = request["request_id"], request["state"]
        settings = self.settings
        value: dict[str, Any] | None = None
        if department == request["assisting_department"]["code"]:
            drawn = share(identity, "assist")
            if state == "REQUESTED" and request["version"] == 1:
                if drawn < settings.assist_share:
                    value = assistance_action(
                        "COMPLETE",
                        0,
                        result_text=f"已按请求提供：{request['subject']}",
                        attachments=[
                            {
                                "name": "协助结果.pdf",
                                "uri": f"https://sim.example/{identity}",
                                "sha256": None,
                            }
                        ],
                    )
                elif drawn < settings.assist_share + settings.refuse_share:
                    reason = "CANNOT_PROVIDE" if request["listed"] else "NOT_OUR_DUTY"
                    value = assistance_action(
                        "FILE_REFUSAL",
                        0,
                        refusal_reason=reason,
                        reason_text="所请求的资料不在本机关保存范围内",
                        legal_basis="《中华人民共和国档案法》",
                    )
            elif state == "REFUSAL_FILED":
                value = assistance_action(
                    "APPROVE_REFUSAL", 0, operator="模拟分管领导", operator_role="LEADER"
                )
        elif (
            department == request["requesting_department"]["code"]
            and state == "COMPLETED"
            and share(identity, "rate") < settings.rate_share
        ):
            value = assistance_action(
                "RATE",
                0,
                cooperation=3 + int(share(identity, "cooperation") * 3),
                effect=3 + int(share(identity, "effect") * 3),
                comment="配合及时",
            )
        if value is None:
            return
        value = {
            **value,
            "action_id": f"sim-{value['action'].lower()}-{identity}",
            "request_id": identity,
            "operator": value["operator"] or "模拟经办人",
        }
        self._schedule(department, "assistance_action", f"{identity}|{value['action']}", value)

    def _listed(self, entry: dict[str, Any]) -> None:
        """A listing: some department soon handles a matter for the entity, and checks."""
        if entry.get("action") != "LISTED" or self.checks is None:
            return
        identity = entry["entry_id"]
        if share(identity, "matter") >= self.settings.check_share:
            return
        matter = self.checks.matter_for(entry.get("list_type") or "", share(identity, "which"))
        if matter is None:
            return
        department, matter_type = matter
        value = {"uscc": entry["uscc"], "matter_type": matter_type, "matter_ref": identity[:32]}
        self._schedule(department, "credit_check", identity, value)

    def _schedule(self, department: str, kind: str, identity: str, value: dict[str, Any]) -> None:
        delay = share(identity, "delay") * self.settings.max_delay_seconds
        self._sequence += 1
        heapq.heappush(
            self._due, (time.monotonic() + delay, self._sequence, department, kind, value)
        )

    def _act_on_due(self, producer: Any) -> None:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _, _, department, kind, value = heapq.heappop(self._due)
            if kind == "credit_check":
                assert self.checks is not None
                self.counts.acted(self.checks.check(department, value))
                continue
            identity = value.get("push_id") or value.get("hit_id") or ""
            by_http = kind != "assistance_action"  # the inbox API takes 双告知 and 反馈 only
            if (
                by_http
                and self.inbox is not None
                and share(identity, "http") < self.settings.http_share
            ):
                sent = self.inbox.act(department, kind, value)
                if sent == InboxClerks.SENT:
                    self.counts.acted(f"HTTP_{value.get('action') or value.get('outcome')}")
                    continue
                tries = value.get("_tries", 0) + 1
                if sent == InboxClerks.NOT_YET and tries < InboxClerks.TRIES:
                    # the sink has not stored the delivery yet: the clerk looks again later
                    self._sequence += 1
                    again = (
                        now + 3.0,
                        self._sequence,
                        department,
                        kind,
                        {**value, "_tries": tries},
                    )
                    heapq.heappush(self._due, again)
                    continue
                # the API is not there (starting, restarting): the system's Kafka path
            value = {k: v for k, v in value.items() if k != "_tries"}
            stamp = "fed_back_at" if kind == "feedback" else "acted_at"
            value = dict(value, **{stamp: business_clock().now_ms()})
            topic = DepartmentTopic.inbound(department)
            try:
                encoded = self._serializer(kind)(
                    value, SerializationContext(topic, MessageField.VALUE)
                )
            except Exception as error:  # a schema not registered yet: say so, go on
                log_event(logger, "simulator_action_unsent", kind=kind, error=str(error))
                continue
            key = value.get("uscc") or value["action_id"]
            producer.produce(topic, key=key.encode(), value=encoded)
            self.counts.acted(value.get("action") or value.get("outcome") or kind)

    def _serializer(self, kind: str) -> Any:
        if kind not in self._serializers:
            record_type = {
                "dual_notice_action": DEPARTMENT_ACTION,
                "assistance_action": ASSISTANCE_ACTION,
            }.get(kind, RESTRICTION_FEEDBACK)
            self._serializers[kind] = self.clients.avro_serializer(
                record_type.schema_str,
                **{"subject.name.strategy": record_subject_name_strategy},
            )
        return self._serializers[kind]

    @staticmethod
    def _dual_notice(push: dict[str, Any], kind: str, reason: str | None = None) -> dict[str, Any]:
        return {
            "action_id": f"sim-{kind.lower()}-{push['push_id']}",
            "uscc": push["entity"]["uscc"] if "entity" in push else push["uscc"],
            "push_id": push["push_id"],
            "action": kind,
            "return_reason": reason,
            "reason_text": None,
            "target_department_code": None,
            "operator": "模拟经办人",
        }

    @staticmethod
    def _feedback(hit: dict[str, Any]) -> dict[str, Any]:
        applied = share(hit["hit_id"], "applied") < 0.9
        return feedback_record(hit, applied)


def feedback_record(hit: dict[str, Any], applied: bool) -> dict[str, Any]:
    """A department's 反馈 on a restriction hit (the joint-punishment processor's format)."""
    return {
        "feedback_id": f"sim-feedback-{hit['hit_id']}",
        "uscc": hit["uscc"],
        "hit_id": hit["hit_id"],
        "outcome": "APPLIED" if applied else "NOT_APPLICABLE",
        "reason": None if applied else "该事项不在措施适用范围内",
        "operator": "模拟经办人",
    }


class DepartmentTokens:
    """Registry tokens of the departments the simulator acts for, issued when first
    needed and revoked when it stops."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._tokens: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def token(self, department: str) -> str:
        from registry import service
        from registry.audit import Actor
        from registry.db import session_factory, transaction

        with self._lock:
            if department not in self._tokens:
                with transaction(session_factory(self.database_url)) as session:
                    issued = service.issue_token(session, Actor.admin("simulator"), department)
                    self._tokens[department] = (issued.token, issued.credential.id)
            return self._tokens[department][0]

    def revoke_all(self) -> None:
        from registry import service
        from registry.audit import Actor
        from registry.db import session_factory, transaction

        with self._lock, transaction(session_factory(self.database_url)) as session:
            for _, credential in self._tokens.values():
                service.revoke_credential(session, Actor.admin("simulator"), credential)
            self._tokens.clear()


class InboxClerks:
    """Clerks whose department system acts through the inbox API, with the department's
    own token: a claim, a return, a 反馈, each with an Idempotency-Key fixed by the
    action, so a clerk trying again makes no second action."""

    SENT, NOT_YET, FAILED = "sent", "not_yet", "failed"
    #: How often a clerk looks again for an item the API does not list yet.
    TRIES = 5

    def __init__(self, settings: SimulatorSettings, tokens: DepartmentTokens) -> None:
        import httpx

        self.tokens = tokens
        self._http = httpx.Client(base_url=settings.inbox_url, timeout=15.0)

    def close(self) -> None:
        self._http.close()

    def act(self, department: str, kind: str, value: dict[str, Any]) -> str:
        """The action through the API: SENT (202), NOT_YET (the item is not listed yet),
        FAILED (the API does not answer, or refused)."""
        if kind == "feedback":
            path = f"/v1/hits/{value['hit_id']}/feedback"
            body = {"outcome": value["outcome"], "reason": value["reason"]}
            key = value["feedback_id"]
        elif value["action"] == "RETURN":
            path = f"/v1/pushes/{value['push_id']}/return"
            body = {"reason": value["return_reason"], "reason_text": value["reason_text"]}
            key = value["action_id"]
        else:
            path = f"/v1/pushes/{value['push_id']}/{value['action'].lower()}"
            body = {}
            key = value["action_id"]
        try:
            headers = {
                "Authorization": f"Bearer {self.tokens.token(department)}",
                "Idempotency-Key": key,
            }
            response = self._http.post(
                path, json={**body, "operator": "模拟经办人"}, headers=headers
            )
        except Exception as error:  # the API not up yet, or restarting; the registry away
            log_event(logger, "simulator_inbox_failed", department=department, error=str(error))
            return self.FAILED
        if response.status_code == 202:
            return self.SENT
        if response.status_code == 404:
            return self.NOT_YET
        log_event(
            logger,
            "simulator_inbox_refused",
            department=department,
            status=response.status_code,
            body=response.text[:300],
        )
        return self.FAILED


class CreditChecks:
    """Departments that handle restricted matters, each with a registry token, checking
    entities' credit through the credit-check API."""

    def __init__(self, settings: SimulatorSettings, tokens: DepartmentTokens) -> None:
        self.settings = settings
        self.database_url = tokens.database_url
        self.tokens = tokens
        # list type → [(department code, matter type)] of the measures against it
        self.matters: dict[str, list[tuple[str, str]]] = {}
        self._http: Any = None

    def open(self) -> None:
        """Find who handles which restricted matter, and issue their tokens."""
        import httpx

        from registry.db import session_factory, transaction
        from registry.models import Department, Measure
        from registry.seed import Level

        departments: set[str] = set()
        with transaction(session_factory(self.database_url)) as session:
            provincial = {
                d.sector_code: d.code
                for d in session.query(Department).filter(Department.level == Level.PROVINCE)
            }
            for measure in session.query(Measure).order_by(Measure.code):
                if measure.target != "ENTITY":  # restricts persons, no matter of the entity
                    continue
                for sector in measure.implementing_sectors:
                    department = provincial.get(sector)
                    if department is None:
                        continue
                    for list_type in measure.list_types:
                        for matter_type in measure.matter_types:
                            self.matters.setdefault(list_type, []).append((department, matter_type))
                    departments.add(department)
        for department in sorted(departments):
            self.tokens.token(department)
        self._http = httpx.Client(base_url=self.settings.credit_check_url, timeout=5.0)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def matter_for(self, list_type: str, drawn: float) -> tuple[str, str] | None:
        choices = self.matters.get(list_type)
        return choices[int(drawn * len(choices))] if choices else None

    def check(self, department: str, query: dict[str, Any]) -> str:
        """One check; its verdict (or why there is none) for the summary."""
        token = self.tokens.token(department)
        try:
            response = self._http.get(
                "/v1/checks", params=query, headers={"Authorization": f"Bearer {token}"}
            )
        except Exception as error:  # the API not up yet, or restarting
            log_event(logger, "simulator_check_failed", department=department, error=str(error))
            return "CHECK_FAILED"
        if response.status_code != 200:
            log_event(
                logger,
                "simulator_check_refused",
                department=department,
                status=response.status_code,
                body=response.text[:300],
            )
            return "CHECK_FAILED"
        return f"CHECK_{response.json().get('verdict', 'UNKNOWN')}"


class DepartmentSimulator:
    """The exports and the desks together, each in a thread."""

    def __init__(
        self,
        settings: SimulatorSettings,
        out_dir: Path,
        admin: KafkaClients,
        connectors: KafkaClients,
        checks: CreditChecks | None = None,
        inbox: InboxClerks | None = None,
        tokens: DepartmentTokens | None = None,
        webhooks: WebhookReceivers | None = None,
    ) -> None:
        self.counts = Counts()
        self.checks = checks
        self.inbox = inbox
        self.tokens = tokens  # revoked when it stops
        self.webhooks = webhooks
        self.feeder = ExportFeeder(settings, connectors, out_dir, self.counts)
        self.desks = DepartmentDesks(settings, admin, self.counts, checks, inbox)
        self._threads = [
            threading.Thread(target=self.feeder.run, name="simulator exports", daemon=True),
            threading.Thread(target=self.desks.run, name="simulator desks", daemon=True),
        ]

    def start(self) -> None:
        if self.checks is not None:
            self.checks.open()
        if self.webhooks is not None:
            self.webhooks.open()
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    def stop(self, timeout: float = 30.0) -> None:
        self.feeder.stop()
        self.desks.stop()
        for thread in self._threads:
            thread.join(timeout)
        if self.checks is not None:
            self.checks.close()
        if self.inbox is not None:
            self.inbox.close()
        if self.tokens is not None:
            self.tokens.revoke_all()
        if self.webhooks is not None:
            self.webhooks.close()
