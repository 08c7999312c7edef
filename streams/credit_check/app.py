"""嵌入式联合奖惩: the synchronous credit check a department's system makes while it
handles a matter for an entity (domain brief §6, "embedded checking with feedback").

A department system asks, for one entity (USCC) and one matter type (政府采购, 土地供应 …)::

    GET /v1/checks?uscc=91330106MA2CD7Q4XU&matter_type=GOVERNMENT_PROCUREMENT
        &matter_date=2026-03-02&matter_ref=ZJCG-2026-0117
    Authorization: Bearer xtr_…                 # the department's registry token

and is answered at once with the entity's listings in force on the matter date (list
type, listed on, planned end, listing authority, reason, basis), the measures of the
joint-punishment catalog that restrict this matter type for those lists (text, legal
basis, implementing sectors, whether and within how many days the department must
report back 反馈), and a verdict: ``RESTRICTED`` when at least one measure applies,
``CLEAR`` otherwise.

**The answer comes from memory.** Every instance holds, materialised from the topics:

* ``credit.list-entries`` (列入/移出, keyed by USCC): one :class:`Listing` per entry id
  and entity, folded by :func:`fold_entry`;
* ``registry.measures`` and ``registry.list-types``, the registry's compacted topics,
  whole (:class:`~streams.runtime.ReferenceData`).

Each is read from the beginning when the service starts; ``/ready`` answers 503 and a
check waits (then answers 503) until all three have been read to the end they had at
start; after that they are followed live, so a listing published now restricts the
entity within about a second.

**When a listing applies** (:meth:`Listing.in_force_on`): on day *d* when
``listed_on ≤ d``, and ``d < planned_removal_on`` (if planned), and ``d < removed_on``
(if removed). A listing effective in the future does not apply yet; one removed on or
before its start never applies; an entity may be on several lists at once; a record
sent twice changes nothing. A removal is final for its entry id: a 列入 of the same
entry re-sent after its 移出 updates the listing's details, never lifts the removal.

**Who checks.** The bearer token is a department's registry API token
(``xietong registry issue-token <department>``), verified by the registry's own service
layer (:func:`registry.service.authenticate`) against the registry database; the
checking department is the token's. An unknown or revoked token is 401, an
administrator token 403 (it has no department). A verified token is remembered for
``XIETONG_CREDIT_CHECK_TOKEN_CACHE_SECONDS`` (5 s), so a revocation takes effect within
that time.

**Every check is itself a matter event** (``MatterEvent``, source ``CREDIT_CHECK``) on
``credit.matter-events``, for the joint-punishment processor and the auditors. Its ids
are deterministic — the check id from department, USCC, matter type and the matter
reference (or date) — so repeating a check repeats the same event. A check only queues
its event; a thread of its own encodes and produces it, off the request's path; a delivery
that fails (or an event that finds the queue full) is counted in
``xietong_credit_check_matter_events_total{outcome}`` and logged with the whole event
as a JSON line, never dropped silently.

Run it with ``xietong credit-check serve [--port 8420]``; settings are
``XIETONG_CREDIT_CHECK_*`` (:class:`CreditCheckSettings`). OpenAPI at ``/docs``;
Prometheus metrics at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated, Any, Protocol

import sqlalchemy as sa
from confluent_kafka import KafkaError, Message
from confluent_kafka.serialization import SerializationContext
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry import db, service
from registry.contract import ErrorBody
from registry.errors import ForbiddenError, NotAuthenticatedError, RegistryError
from schemas import MATTER_EVENT
from streams.runtime import RecordWriter, ReferenceData
from xietong.ids import deterministic_id, matter_event_id
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.topics import (
    CREDIT_LIST_ENTRIES,
    MATTER_EVENTS,
    REGISTRY_LIST_TYPES,
    REGISTRY_MEASURES,
    TopicSpec,
)
from xietong.uscc import uscc_problems

logger = logging.getLogger(__name__)

APP_NAME = "credit-check"
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))


class CreditCheckSettings(BaseSettings):
    """The credit-check service, from ``XIETONG_CREDIT_CHECK_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_CREDIT_CHECK_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8420, description="Port the API (and its /metrics) listens on.")
    token_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified token is trusted without asking the registry"
        " database again: a revoked token stops working within this time. 0: every check asks.",
    )
    ready_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a check waits for the state to be loaded before answering 503.",
    )
    load_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="Give up loading a topic to its end after this long."
    )
    matter_event_queue: int = Field(
        default=100_000,
        gt=0,
        description="Matter events waiting to be produced; beyond it they are counted and"
        " logged as undelivered.",
    )


# -- listings and when they apply -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """One listing of an entity on a credit list (名单条目), as its 列入 and 移出 records
    on ``credit.list-entries`` describe it together."""

    entry_id: str
    list_type: str
    entity_name: str
    listing_authority_name: str
    listing_authority_uscc: str
    reason: str
    legal_basis: str
    document_number: str
    listed_on: date
    planned_removal_on: date | None
    removed_on: date | None = None
    removal_reason: str | None = None
    #: Event time of the 列入 record the details come from (None: from a 移出 record): an
    #: older version re-sent later does not overwrite a newer one.
    listed_version_at: datetime | None = None

    @property
    def ends_on(self) -> date | None:
        """The first day the listing no longer applies: its planned end or its removal,
        whichever comes first; None while it has neither."""
        ends = [day for day in (self.planned_removal_on, self.removed_on) if day is not None]
        return min(ends) if ends else None

    def in_force_on(self, day: date) -> bool:
        """Whether the listing applies on ``day``: listed by then and not yet ended."""
        ends_on = self.ends_on
        return self.listed_on <= day and (ends_on is None or day < ends_on)


class UnusableEntry(ValueError):
    """A list entry the check cannot fold; the message names the entry and the field."""


def fold_entry(current: Listing | None, entry: dict[str, Any]) -> Listing:
    """The listing after ``entry`` (a ``credit_list_entry`` record) on top of ``current``
    (what earlier records of the same entry id made, or None).

    A 列入 (``LISTED``) gives the listing's details and keeps a removal already known; a
    列入 older (by event time) than the details held is a stale re-send and changes
    nothing. A 移出 (``REMOVED``) records the removal day (its ``removed_on``, else its
    event day) and reason; arriving first, it also gives the details until the 列入 does.
    """
    action = entry["action"]
    if action == "LISTED":
        version_at: datetime = entry["envelope"]["event_time"]
        if (
            current is not None
            and current.listed_version_at is not None
            and version_at < current.listed_version_at
        ):
            return current
        listing = _listing_of(entry, version_at)
        if current is None:
            return listing
        return replace(
            listing, removed_on=current.removed_on, removal_reason=current.removal_reason
        )
    if action == "REMOVED":
        removed_on = entry["removed_on"] or entry["envelope"]["event_time"].date()
        base = current if current is not None else _listing_of(entry, None)
        return replace(base, removed_on=removed_on, removal_reason=entry["removal_reason"])
    raise UnusableEntry(
        f"credit list entry {entry['entry_id']} (event {entry['envelope']['event_id']}):"
        f" action {action!r} is neither LISTED nor REMOVED"
    )


def _listing_of(entry: dict[str, Any], version_at: datetime | None) -> Listing:
    return Listing(
        entry_id=entry["entry_id"],
        list_type=entry["list_type"],
        entity_name=entry["entity_name"],
        listing_authority_name=entry["listing_authority_name"],
        listing_authority_uscc=entry["listing_authority_uscc"],
        reason=entry["reason"],
        legal_basis=entry["legal_basis"],
        document_number=entry["document_number"],
        listed_on=entry["listed_on"],
        planned_removal_on=entry["planned_removal_on"],
        listed_version_at=version_at,
    )


class CreditListings(ReferenceData):
    """``credit.list-entries`` held whole: USCC → its listings, every entry id once.

    Read and followed exactly as :class:`~streams.runtime.ReferenceData` reads a
    registry topic (to its end at start, then live), each record folded by
    :func:`fold_entry` instead of kept as it came. Each entity's listings are a tuple
    replaced whole on change, so a check reads them without a lock.
    """

    def __init__(self, clients: KafkaClients, spec: TopicSpec) -> None:
        super().__init__(clients, spec)
        self._by_uscc: dict[str, tuple[Listing, ...]] = {}
        self.records_read = 0
        self.listing_count = 0

    def of(self, uscc: str) -> tuple[Listing, ...]:
        """Every listing of the entity, in force or not."""
        return self._by_uscc.get(uscc, ())

    def fold(self, entry: dict[str, Any]) -> None:
        """Apply one ``credit_list_entry`` record (:func:`fold_entry`)."""
        uscc = entry["uscc"]
        held = self._by_uscc.get(uscc, ())
        for index, listing in enumerate(held):
            if listing.entry_id == entry["entry_id"]:
                changed = fold_entry(listing, entry)
                if changed is not listing:
                    self._by_uscc[uscc] = (*held[:index], changed, *held[index + 1 :])
                break
        else:
            self._by_uscc[uscc] = (*held, fold_entry(None, entry))
            self.listing_count += 1
            LISTINGS.set(self.listing_count)
        self.records_read += 1
        self.version += 1

    def _apply(self, message: Any, deserialize: Any, context: SerializationContext) -> None:
        if message.error() is not None or message.value() is None:
            return
        entry = deserialize(message.value(), context)
        LIST_ENTRIES_READ.inc()
        try:
            self.fold(entry)
        except UnusableEntry as error:
            # Connectors validate before they publish (and dead-letter what fails): a
            # record here that cannot be folded comes from a newer schema. Every instance
            # rereads it at start, so it is counted and logged, not dead-lettered again.
            SKIPPED_ENTRIES.inc()
            log_event(
                logger,
                "credit_check.entry_skipped",
                reason=str(error),
                uscc=entry.get("uscc"),
                event_id=entry["envelope"]["event_id"],
                partition=message.partition(),
                offset=message.offset(),
            )


# -- the measures catalog -------------------------------------------------------------------


class Verdict(StrEnum):
    RESTRICTED = "RESTRICTED"  # at least one measure restricts the matter for the entity
    CLEAR = "CLEAR"


@dataclass(frozen=True)
class MeasureCatalog:
    """The measures (``registry.measures`` records) by the matter type they restrict, and
    the names of matter types and list types."""

    by_matter_type: dict[str, list[dict[str, Any]]]
    matter_type_names: dict[str, str]
    list_type_names: dict[str, str]

    @classmethod
    def of(
        cls, measures: Iterable[dict[str, Any]], list_types: Iterable[dict[str, Any]]
    ) -> MeasureCatalog:
        by_matter_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        names: dict[str, str] = {}
        for measure in sorted(measures, key=lambda m: m["code"]):
            for matter in measure["matter_types"]:
                by_matter_type[matter["code"]].append(measure)
                names[matter["code"]] = matter["name"]
        return cls(dict(by_matter_type), names, {row["code"]: row["name"] for row in list_types})


@dataclass(frozen=True)
class MeasureHit:
    """A measure that restricts the matter, and the listings that make it apply."""

    measure: dict[str, Any]
    listings: tuple[Listing, ...]


@dataclass(frozen=True)
class Assessment:
    """What a check finds: the listings in force on the day and the measures they trigger."""

    in_force: tuple[Listing, ...]
    hits: tuple[MeasureHit, ...]

    @property
    def verdict(self) -> Verdict:
        return Verdict.RESTRICTED if self.hits else Verdict.CLEAR


def assess(
    listings: Iterable[Listing], measures: Sequence[dict[str, Any]], day: date
) -> Assessment:
    """The listings in force on ``day`` and, of ``measures`` (those restricting the matter
    type), each one whose list types include one of those listings'."""
    in_force = tuple(
        sorted(
            (listing for listing in listings if listing.in_force_on(day)),
            key=lambda listing: (listing.listed_on, listing.entry_id),
        )
    )
    hits = []
    for measure in measures:
        triggering = tuple(lst for lst in in_force if lst.list_type in measure["list_types"])
        if triggering:
            hits.append(MeasureHit(measure, triggering))
    return Assessment(in_force, tuple(hits))


# -- the state a check is answered from ------------------------------------------------------


@dataclass(frozen=True)
class CreditCheckTopics:
    """Where the service reads and writes (the platform's topics; the benchmark's own)."""

    list_entries: TopicSpec = CREDIT_LIST_ENTRIES
    measures: TopicSpec = REGISTRY_MEASURES
    list_types: TopicSpec = REGISTRY_LIST_TYPES
    matter_events: TopicSpec = MATTER_EVENTS


class CreditState:
    """Listings, measures and list types, loaded by a thread of their own and then
    followed; :attr:`ready` is set once all three are read to their end at start."""

    def __init__(
        self, clients: KafkaClients, topics: CreditCheckTopics, load_timeout: float = 1800.0
    ) -> None:
        self.listings = CreditListings(clients, topics.list_entries)
        self.measures = ReferenceData(clients, topics.measures)
        self.list_types = ReferenceData(clients, topics.list_types)
        self.load_timeout = load_timeout
        self.ready = threading.Event()
        self.failure: str | None = None
        self._catalog: tuple[tuple[int, int], MeasureCatalog] | None = None
        self._catalog_lock = threading.Lock()
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        """Start loading in the background (returns at once)."""
        self._loader = threading.Thread(target=self._load, name="credit-state load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        started = time.monotonic()
        try:
            for reference in (self.list_types, self.measures, self.listings):
                reference.load(self.load_timeout)
        except Exception as error:  # the service stays up, not ready, and says why
            self.failure = f"{type(error).__name__}: {error}"
            log_event(logger, "credit_check.load_failed", reason=self.failure)
            return
        # What was loaded stays for the process's life: out of the collector's sight, a
        # full collection no longer walks every listing (pauses of tens of ms at 100,000).
        gc.collect()
        gc.freeze()
        self.ready.set()
        READY.set(1)
        log_event(
            logger,
            "credit_check.ready",
            list_entries=self.listings.records_read,
            listings=self.listings.listing_count,
            measures=len(self.measures.values()),
            list_types=len(self.list_types.values()),
            seconds=round(time.monotonic() - started, 2),
        )

    def stop(self) -> None:
        for reference in (self.list_types, self.measures, self.listings):
            reference.stop()

    def catalog(self) -> MeasureCatalog:
        """The catalog as the topics hold it now (rebuilt only after a change)."""
        versions = (self.measures.version, self.list_types.version)
        held = self._catalog
        if held is None or held[0] != versions:
            with self._catalog_lock:
                held = self._catalog
                if held is None or held[0] != versions:
                    built = MeasureCatalog.of(self.measures.values(), self.list_types.values())
                    held = self._catalog = (versions, built)
        return held[1]

    def progress(self) -> dict[str, Any]:
        return {
            "list_entries_read": self.listings.records_read,
            "listings": self.listings.listing_count,
            "measures": len(self.measures.values()),
            "list_types": len(self.list_types.values()),
        }


# -- who checks: the registry's tokens -------------------------------------------------------


@dataclass(frozen=True)
class CheckingDepartment:
    """The department whose token made the check."""

    code: str
    uscc: str
    name: str
    sector: str


class Departments(Protocol):
    def cached(self, token: str) -> CheckingDepartment | None: ...

    def verify(self, token: str) -> CheckingDepartment: ...

    def matter_type_name(self, code: str) -> str | None: ...


class RegistryDirectory:
    """Tokens and matter types, as the registry database holds them, through the
    registry's service layer (the same verification as the registry API's)."""

    def __init__(
        self, database_url: str, admin_token_sha256: str | None, cache_seconds: float
    ) -> None:
        self.sessions = db.session_factory(database_url)
        self.admin_token_sha256 = admin_token_sha256
        self.cache_seconds = cache_seconds
        self._tokens: dict[str, tuple[float, CheckingDepartment]] = {}
        self._matter_types: tuple[float, dict[str, str]] = (0.0, {})

    def cached(self, token: str) -> CheckingDepartment | None:
        """The token's department if it was verified less than ``cache_seconds`` ago."""
        held = self._tokens.get(service.token_digest(token))
        if held is None or held[0] < time.monotonic():
            return None
        return held[1]

    def verify(self, token: str) -> CheckingDepartment:
        """Ask the registry database who presents ``token`` (blocking)."""
        with self._registry("verify the token") as session:
            actor = service.authenticate(session, token, self.admin_token_sha256)
            if actor is None:
                raise NotAuthenticatedError(
                    "unknown or revoked token: a department's system checks with its own"
                    " registry token (xietong registry issue-token <department>)"
                )
            if actor.department_code is None:
                raise ForbiddenError(
                    f"{actor} has no department: a check is made by a department, with"
                    " that department's token"
                )
            row = service.get_department(session, actor.department_code)
            department = CheckingDepartment(row.code, row.uscc, row.name, row.sector_code)
        if self.cache_seconds > 0:
            expires = time.monotonic() + self.cache_seconds
            self._tokens[service.token_digest(token)] = (expires, department)
        return department

    def matter_type_name(self, code: str) -> str | None:
        """The name of a matter type of the registry's catalog (re-read at most every
        ``cache_seconds``); None when the registry does not know it."""
        read_at, names = self._matter_types
        if code not in names and time.monotonic() - read_at > self.cache_seconds:
            with self._registry("look the matter type up") as session:
                names = {row.code: row.name for row in service.list_matter_types(session)}
            self._matter_types = (time.monotonic(), names)
        return names.get(code)

    @contextmanager
    def _registry(self, doing: str) -> Iterator[Session]:
        try:
            with db.transaction(self.sessions) as session:
                yield session
        except sa.exc.SQLAlchemyError as error:
            where = self.sessions.kw["bind"].url.render_as_string(hide_password=True)
            reason = str(getattr(error, "orig", error)).splitlines()[0]
            log_event(logger, "credit_check.registry_unreachable", database=where, reason=reason)
            raise RegistryUnavailableError(
                f"the registry database cannot be reached to {doing} ({reason}): retry shortly"
            ) from None


# -- the matter events ------------------------------------------------------------------------


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


def matter_event(
    *,
    check_id: str,
    department: CheckingDepartment,
    uscc: str,
    entity_name: str | None,
    matter_type: str,
    matter_ref: str | None,
    matter_date: date,
    checked_at: datetime,
) -> dict[str, Any]:
    """The ``MatterEvent`` (source ``CREDIT_CHECK``) recording a check.

    Its matter reference is the department's (``matter_ref``), so the joint-punishment
    processor folds the check and the department's own report of the matter for the same
    entity into one (the event id is ``matter_event_id`` of the entity, the department,
    the matter type, the reference and ``CREDIT_CHECK``); a check without a reference is
    a matter of its own, ``CREDIT-CHECK/<uscc>/<date>``.
    """
    reference = matter_ref or f"CREDIT-CHECK/{uscc}/{matter_date.isoformat()}"
    return {
        "event_id": matter_event_id(uscc, department.code, matter_type, reference, "CREDIT_CHECK"),
        "uscc": uscc,
        "entity_name": entity_name,
        "department_code": department.code,
        "department_uscc": department.uscc,
        "matter_type": matter_type,
        "matter_reference": reference,
        "matter_name": None,
        "matter_date": matter_date,
        "source": "CREDIT_CHECK",
        "credit_check_id": check_id,
        "occurred_at": checked_at,
    }


def credit_check_id(
    department: str, uscc: str, matter_type: str, matter_ref: str | None, matter_date: date
) -> str:
    """The check's id: the same department checking the same entity for the same matter
    (its reference, or without one its date) gets the same id."""
    matter = f"ref:{matter_ref}" if matter_ref is not None else f"date:{matter_date.isoformat()}"
    return deterministic_id(f"credit-check|{department}|{uscc}|{matter_type}|{matter}")


# -- metrics ----------------------------------------------------------------------------------

CHECKS = Counter(
    "xietong_credit_check_checks",
    "Credit checks answered, by checking department, matter type and verdict",
    ("department", "matter_type", "verdict"),
)
CHECK_SECONDS = Histogram(
    "xietong_credit_check_seconds",
    "Time to answer a credit check (token, state lookup, answer), in seconds",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0),
)
REFUSED = Counter(
    "xietong_credit_check_refused",
    "Credit checks refused, by reason (not_authenticated, forbidden, validation_error, not_ready)",
    ("reason",),
)
MATTER_EVENT_OUTCOMES = Counter(
    "xietong_credit_check_matter_events",
    "Matter events of checks, by outcome (delivered; queue_full, encoding, delivery: undelivered)",
    ("outcome",),
)
MATTER_EVENT_QUEUE = Gauge(
    "xietong_credit_check_matter_event_queue", "Matter events waiting to be produced"
)
LIST_ENTRIES_READ = Counter(
    "xietong_credit_check_list_entries_read", "Records read from credit.list-entries"
)
SKIPPED_ENTRIES = Counter(
    "xietong_credit_check_list_entries_skipped", "List entries that could not be folded"
)
LISTINGS = Gauge("xietong_credit_check_listings", "Listings held (every entry id of every entity)")
READY = Gauge("xietong_credit_check_ready", "1 once the state is loaded to the topics' end")


# -- the API ----------------------------------------------------------------------------------


class NotReadyError(RegistryError):
    """The state is still being loaded (or failed to load): try again shortly."""

    status = 503
    code = "not_ready"


class RegistryUnavailableError(RegistryError):
    """The registry database, which holds the tokens, does not answer."""

    status = 503
    code = "registry_unavailable"


class InvalidCheckError(RegistryError):
    status = 422
    code = "invalid_input"


class ListTypeOut(BaseModel):
    code: str = Field(examples=["SERIOUS_ILLEGAL_DISHONEST"])
    name: str = Field(examples=["严重违法失信名单"])


class AuthorityOut(BaseModel):
    name: str = Field(description="列入机关", examples=["杭州市市场监督管理局"])
    uscc: str = Field(description="列入机关统一社会信用代码")


class ListingOut(BaseModel):
    """名单条目: a listing of the entity in force on the matter date."""

    entry_id: str = Field(description="名单条目标识")
    list_type: ListTypeOut = Field(description="名单类型")
    listed_on: date = Field(description="列入日期")
    planned_removal_on: date | None = Field(description="预计移出日期; null: no fixed term")
    removed_on: date | None = Field(
        description="实际移出日期, when a removal after the matter date is already known"
    )
    listing_authority: AuthorityOut = Field(description="列入机关")
    reason: str = Field(description="列入事由")
    legal_basis: str = Field(description="列入依据")
    document_number: str = Field(description="决定文书号")

    @classmethod
    def of(cls, listing: Listing, list_type_names: dict[str, str]) -> ListingOut:
        return cls(
            entry_id=listing.entry_id,
            list_type=ListTypeOut(
                code=listing.list_type,
                name=list_type_names.get(listing.list_type, listing.list_type),
            ),
            listed_on=listing.listed_on,
            planned_removal_on=listing.planned_removal_on,
            removed_on=listing.removed_on,
            listing_authority=AuthorityOut(
                name=listing.listing_authority_name, uscc=listing.listing_authority_uscc
            ),
            reason=listing.reason,
            legal_basis=listing.legal_basis,
            document_number=listing.document_number,
        )


class MeasureOut(BaseModel):
    """失信惩戒措施: a measure that restricts the matter for this entity."""

    code: str = Field(description="措施编码", examples=["CJ01"])
    text: str = Field(description="措施内容", examples=["依法限制作为供应商参加政府采购活动"])
    legal_basis: str = Field(description="措施依据")
    implementing_sectors: list[str] = Field(description="实施部门类别编码")
    implemented_by_checking_department: bool = Field(
        description="Whether the checking department's sector is one of the implementing ones"
    )
    feedback_required: bool = Field(description="是否需要反馈: report back what was done")
    feedback_days: int | None = Field(description="反馈期限 (days), when feedback is required")
    entry_ids: list[str] = Field(description="The listings (entry ids above) that trigger it")

    @classmethod
    def of(cls, hit: MeasureHit, checker: CheckingDepartment) -> MeasureOut:
        measure = hit.measure
        return cls(
            code=measure["code"],
            text=measure["text"],
            legal_basis=measure["legal_basis"],
            implementing_sectors=measure["implementing_sectors"],
            implemented_by_checking_department=checker.sector in measure["implementing_sectors"],
            feedback_required=measure["feedback_required"],
            feedback_days=measure["feedback_days"],
            entry_ids=[listing.entry_id for listing in hit.listings],
        )


class MatterOut(BaseModel):
    """办理事项: what the department is handling, as the query gave it."""

    matter_type: str = Field(description="事项类型编码", examples=["GOVERNMENT_PROCUREMENT"])
    matter_type_name: str = Field(description="事项类型名称", examples=["政府采购"])
    matter_date: date = Field(description="办理日期: the listings in force on it apply")
    matter_ref: str | None = Field(description="事项编号, as given")


class CreditCheckOut(BaseModel):
    """The answer to a credit check (信用核查结果)."""

    check_id: str = Field(
        description="核查标识: uuid5 of department, USCC, matter type and matter reference"
        " (or date); the same check again has the same id"
    )
    uscc: str = Field(description="统一社会信用代码")
    entity_name: str | None = Field(description="主体名称, as the listings name it")
    department: str = Field(description="The checking department (the token's)")
    matter: MatterOut
    verdict: Verdict = Field(
        description="RESTRICTED: at least one measure below applies; CLEAR: none does"
    )
    listings: list[ListingOut] = Field(description="Listings in force on the matter date")
    measures: list[MeasureOut] = Field(description="Measures restricting this matter for them")
    checked_at: datetime


class ReadyOut(BaseModel):
    status: str = Field(description="ready, loading or failed", examples=["ready"])
    reason: str | None = Field(default=None, description="Why loading failed")
    list_entries_read: int
    listings: int
    measures: int
    list_types: int


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No bearer token, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "An administrator token: checks are departments'."},
    422: {"model": ErrorBody, "description": "A parameter is invalid; `field` names it."},
    503: {
        "model": ErrorBody,
        "description": "The state is still being loaded, or the registry database (which"
        " holds the tokens) does not answer; retry shortly.",
    },
}
CHECK_PARAMETERS = frozenset({"uscc", "matter_type", "matter_date", "matter_ref"})
BEARER = HTTPBearer(auto_error=False, description="The department's registry API token.")

UsccParameter = Annotated[
    str,
    Query(
        description="统一社会信用代码 of the entity (18 characters, both check characters valid)",
        min_length=18,
        max_length=18,
        examples=["91330106MA2CD7Q4XU"],
    ),
]
MatterTypeParameter = Annotated[
    str,
    Query(
        description="事项类型编码 of the registry's catalog",
        pattern=r"^[A-Z][A-Z0-9_]{0,39}$",
        examples=["GOVERNMENT_PROCUREMENT"],
    ),
]
MatterDateParameter = Annotated[
    date | None,
    Query(description="办理日期 (default: today, China Standard Time)", examples=["2026-03-02"]),
]
MatterRefParameter = Annotated[
    str | None,
    Query(
        description="事项编号: the department's own reference of the matter (bid, application)",
        min_length=1,
        max_length=200,
        examples=["ZJCG-2026-0117"],
    ),
]


def today() -> date:
    return datetime.now(CHINA_STANDARD_TIME).date()


@dataclass(frozen=True)
class CreditCheckService:
    """What the API answers from and records to (``app.state.service``)."""

    state: CreditState
    departments: Departments
    recorder: MatterEventRecorder
    rules: CreditCheckSettings


def _service(request: Request) -> CreditCheckService:
    service_: CreditCheckService = request.app.state.service
    return service_


async def checking_department(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> CheckingDepartment:
    """The department whose token this is (401/403 otherwise); then, parameters the
    operation does not declare are refused, so a misspelt one never goes unnoticed."""
    if credentials is None:
        raise NotAuthenticatedError(
            "no bearer token: send Authorization: Bearer <token>, your department's"
            " registry token (ask a registry administrator for it)"
        )
    departments = _service(request).departments
    token = credentials.credentials
    known = departments.cached(token)
    if known is None:
        known = await run_in_threadpool(departments.verify, token)
    unknown = sorted(set(request.query_params.keys()) - CHECK_PARAMETERS)
    if unknown:
        raise InvalidCheckError(
            f"unknown query parameter {', '.join(map(repr, unknown))}; /v1/checks takes"
            f" {', '.join(sorted(CHECK_PARAMETERS))}",
            field=unknown[0],
        )
    return known


router = APIRouter()


@router.get(
    "/v1/checks",
    tags=["checks"],
    summary="Check an entity's credit for a matter (嵌入式联合奖惩)",
    responses=ERROR_RESPONSES,
)
async def check(
    request: Request,
    uscc: UsccParameter,
    matter_type: MatterTypeParameter,
    checker: Annotated[CheckingDepartment, Depends(checking_department)],
    matter_date: MatterDateParameter = None,
    matter_ref: MatterRefParameter = None,
) -> CreditCheckOut:
    """The entity's listings in force on the matter date, the measures that restrict this
    matter type for them, and the verdict; the check is recorded as a matter event
    (source CREDIT_CHECK) on credit.matter-events."""
    started = time.perf_counter()
    service_ = _service(request)
    problems = uscc_problems(uscc)
    if problems:
        raise InvalidCheckError(
            f"uscc {uscc!r} is not a valid USCC: {'; '.join(p.message for p in problems)}",
            field="uscc",
        )
    state = service_.state
    await _until_ready(state, service_.rules.ready_wait_seconds)
    catalog = state.catalog()
    matter_name = catalog.matter_type_names.get(matter_type)
    if matter_name is None:
        matter_name = await run_in_threadpool(service_.departments.matter_type_name, matter_type)
        if matter_name is None:
            raise InvalidCheckError(
                f"matter_type {matter_type!r} is not in the registry's catalog of matter"
                f" types; those with measures: {', '.join(sorted(catalog.matter_type_names))}",
                field="matter_type",
            )
    day = matter_date or today()
    listings = state.listings.of(uscc)
    found = assess(listings, catalog.by_matter_type.get(matter_type, ()), day)
    check_id = credit_check_id(checker.code, uscc, matter_type, matter_ref, day)
    entity_name = listings[-1].entity_name if listings else None
    checked_at = datetime.now(UTC)
    answer = CreditCheckOut(
        check_id=check_id,
        uscc=uscc,
        entity_name=entity_name,
        department=checker.code,
        matter=MatterOut(
            matter_type=matter_type,
            matter_type_name=matter_name,
            matter_date=day,
            matter_ref=matter_ref,
        ),
        verdict=found.verdict,
        listings=[ListingOut.of(lst, catalog.list_type_names) for lst in found.in_force],
        measures=[MeasureOut.of(hit, checker) for hit in found.hits],
        checked_at=checked_at,
    )
    service_.recorder.record(
        matter_event(
            check_id=check_id,
            department=checker,
            uscc=uscc,
            entity_name=entity_name,
            matter_type=matter_type,
            matter_ref=matter_ref,
            matter_date=day,
            checked_at=checked_at,
        )
    )
    CHECKS.labels(checker.code, matter_type, found.verdict.value).inc()
    CHECK_SECONDS.observe(time.perf_counter() - started)
    return answer


@router.get(
    "/ready",
    tags=["service"],
    summary="Whether the state is loaded to the topics' end (503 while loading)",
    responses={503: {"model": ReadyOut, "description": "Loading, or loading failed."}},
)
def ready(request: Request, response: Response) -> ReadyOut:
    state = _service(request).state
    if state.ready.is_set():
        return ReadyOut(status="ready", **state.progress())
    response.status_code = 503
    status = "failed" if state.failure else "loading"
    return ReadyOut(status=status, reason=state.failure, **state.progress())


@router.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_app(
    state: CreditState,
    departments: Departments,
    recorder: MatterEventRecorder,
    rules: CreditCheckSettings,
) -> FastAPI:
    """The credit-check API over ``state``; loading starts, and the recorder with it, when
    the app starts (uvicorn's lifespan), and both stop with it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        recorder.start()
        try:
            yield
        finally:
            await run_in_threadpool(recorder.stop)
            state.stop()

    app = FastAPI(
        title="Xietong credit check (协同 · 嵌入式联合奖惩)",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.service = CreditCheckService(state, departments, recorder, rules)
    app.include_router(router)
    _install_error_handlers(app)
    return app


async def _until_ready(state: CreditState, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not state.ready.is_set():
        if state.failure is not None:
            raise NotReadyError(f"the credit state could not be loaded: {state.failure}")
        if time.monotonic() >= deadline:
            progress = state.progress()
            raise NotReadyError(
                "the credit state is still being loaded"
                f" ({progress['list_entries_read']} list entries read so far): retry shortly"
            )
        await asyncio.sleep(0.02)


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    body = ErrorBody(error=code, message=message, field=field)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RegistryError)
    async def refused(request: Request, error: RegistryError) -> JSONResponse:
        REFUSED.labels(error.code).inc()
        if error.status in (401, 403):
            log_event(
                logger,
                "credit_check.refused",
                reason=error.message,
                client=request.client.host if request.client else None,
            )
        return _error(error.status, error.code, error.message, error.field)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        REFUSED.labels("validation_error").inc()
        located = [
            (".".join(str(part) for part in problem["loc"][1:]), problem["msg"])
            for problem in error.errors()
        ]
        message = "; ".join(f"{where}: {what}" for where, what in located)
        return _error(422, "validation_error", message, located[0][0] if located else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(
            error.status_code, codes.get(error.status_code, "http_error"), str(error.detail)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"{type(error).__name__}: see the service's log")


# -- the service ------------------------------------------------------------------------------


def build_app(
    settings: Settings,
    rules: CreditCheckSettings | None = None,
    topics: CreditCheckTopics | None = None,
) -> FastAPI:
    """The service as ``xietong credit-check serve`` runs it: connected as ``svc-streams``,
    tokens checked against the registry database (``DATABASE_URL``). Fails at once when
    the matter-event schema is not registered."""
    from registry.settings import get_registry_settings

    rules = rules or CreditCheckSettings()
    topics = topics or CreditCheckTopics()
    kafka = KafkaClients(settings, "streams")
    writer = RecordWriter(kafka, MATTER_EVENT)
    writer.check_registered()
    directory = RegistryDirectory(
        settings.database_url,
        get_registry_settings().admin_token_sha256,
        rules.token_cache_seconds,
    )
    recorder = MatterEventRecorder(
        kafka.producer(), topics.matter_events.name, writer.encode, rules.matter_event_queue
    )
    state = CreditState(kafka, topics, rules.load_timeout_seconds)
    return create_app(state, directory, recorder, rules)


def run_service(
    settings: Settings,
    rules: CreditCheckSettings | None = None,
    topics: CreditCheckTopics | None = None,
) -> None:
    """Serve checks on ``rules.host:rules.port`` until SIGTERM or Ctrl-C."""
    import uvicorn

    from xietong.logs import configure

    configure()
    rules = rules or CreditCheckSettings()
    app = build_app(settings, rules, topics)
    log_event(logger, "credit_check.listening", host=rules.host, port=rules.port)
    # No access log: one line per check would cost more than the check; /metrics counts them.
    uvicorn.run(app, host=rules.host, port=rules.port, log_level="warning", access_log=False)
