"""The state a check is answered from: listings, measures and list types, held in memory.

:class:`CreditState` reads ``credit.list-entries``, ``registry.measures`` and
``registry.list-types`` from the beginning when the service starts (a thread of its
own), sets :attr:`CreditState.ready` once all three are read to the end they had then,
and follows them live afterwards.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka.serialization import SerializationContext
from prometheus_client import Counter, Gauge

from streams.credit_check.rules import (
    Listing,
    MeasureCatalog,
    RepairRefused,
    UnusableEntry,
    fold_entry,
)
from streams.runtime import ReferenceData
from xietong.clock import BusinessClock
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.topics import (
    CREDIT_LIST_ENTRIES,
    MATTER_EVENTS,
    REGISTRY_LIST_TYPES,
    REGISTRY_MEASURES,
    TopicSpec,
)

logger = logging.getLogger(__name__)

LIST_ENTRIES_READ = Counter(
    "xietong_credit_check_list_entries_read", "Records read from credit.list-entries"
)
SKIPPED_ENTRIES = Counter(
    "xietong_credit_check_list_entries_skipped", "List entries that could not be folded"
)
REPAIRS_REFUSED = Counter(
    "xietong_credit_check_repairs_refused",
    "信用修复 removals before their term, not folded (the listing stays in force)",
)
LISTINGS = Gauge("xietong_credit_check_listings", "Listings held (every entry id of every entity)")
READY = Gauge("xietong_credit_check_ready", "1 once the state is loaded to the topics' end")


class CreditListings(ReferenceData):
    """``credit.list-entries`` held whole: USCC → its listings, every entry id once.

    Read and followed exactly as :class:`~streams.runtime.ReferenceData` reads a
    registry topic (to its end at start, then live), each record folded by
    :func:`fold_entry` instead of kept as it came. Each entity's listings are a tuple
    replaced whole on change, so a check reads them without a lock.
    """

    def __init__(self, clients: KafkaClients, spec: TopicSpec, clock: BusinessClock) -> None:
        super().__init__(clients, spec)
        self.clock = clock
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
                changed = fold_entry(listing, entry, self.clock)
                if changed is not listing:
                    self._by_uscc[uscc] = (*held[:index], changed, *held[index + 1 :])
                break
        else:
            self._by_uscc[uscc] = (*held, fold_entry(None, entry, self.clock))
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
        except RepairRefused as error:
            # Joint punishment dead-letters it (the one rule, streams/credit_repair.py); here
            # the listing stays in force, and the refusal is counted and logged.
            REPAIRS_REFUSED.inc()
            log_event(
                logger,
                "credit_check.repair_refused",
                reason=str(error),
                uscc=entry.get("uscc"),
                earliest_on=error.refusal.earliest_on.isoformat(),
                event_id=entry["envelope"]["event_id"],
            )
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
        self,
        clients: KafkaClients,
        topics: CreditCheckTopics,
        clock: BusinessClock,
        load_timeout: float = 1800.0,
    ) -> None:
        self.listings = CreditListings(clients, topics.list_entries, clock)
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
