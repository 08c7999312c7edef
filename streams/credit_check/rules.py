"""The credit check's rules: plain values in, plain values out (no Kafka, no HTTP).

* :func:`fold_entry`: the listing a 列入/移出 record makes of what earlier records of
  the same entry made;
* :meth:`Listing.in_force_on`: whether a listing applies on a day;
* :func:`assess`: the listings in force on the matter date and the measures they trigger;
* :func:`credit_check_id` and :func:`matter_event`: the check's id and its matter event.

Days are the province's (:mod:`xietong.clock`): the caller says which day a check is
for, and which clock reads the day of a removal's event time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from registry.directory import TokenHolder
from streams.credit_repair import RepairTooEarly, listing_repair_refusal
from streams.measures import binds_matter
from xietong.clock import BusinessClock
from xietong.ids import deterministic_id, matter_event_id
from xietong.versions import RecordVersion, is_later, version_of

#: The department whose registry token made the check.
CheckingDepartment = TokenHolder

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
    #: Version of the 列入 record the details come from (None: from a 移出 record), and
    #: of the 移出 record the removal comes from: an older version arriving later does not
    #: overwrite a newer one (:func:`xietong.versions.is_later`, joint punishment's order).
    listed_version: RecordVersion | None = field(default=None, compare=False)
    removed_version: RecordVersion | None = field(default=None, compare=False)

    @property
    def ends_on(self) -> date | None:
        """The first day the listing no longer applies: its planned end or its removal,
        whichever comes first; None while it has neither. A 撤销 (removal reason
        ``CORRECTION``) says it should never have stood: it ends on its listing day, as
        joint punishment voids it (``Listing.voided`` there), so the two agree."""
        if self.removal_reason == "CORRECTION":
            return self.listed_on
        ends = [day for day in (self.planned_removal_on, self.removed_on) if day is not None]
        return min(ends) if ends else None

    def in_force_on(self, day: date) -> bool:
        """Whether the listing applies on ``day``: listed by then and not yet ended."""
        ends_on = self.ends_on
        return self.listed_on <= day and (ends_on is None or day < ends_on)


class UnusableEntry(ValueError):
    """A list entry the check cannot fold; the message names the entry and the field."""


class RepairRefused(UnusableEntry):
    """A 信用修复 移出 before its term (:mod:`streams.credit_repair`, the rule joint
    punishment applies too): it is not folded, the listing stays in force. The message
    names the entry and the earliest day it may be removed."""

    def __init__(self, refusal: RepairTooEarly) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def fold_entry(current: Listing | None, entry: dict[str, Any], clock: BusinessClock) -> Listing:
    """The listing after ``entry`` (a ``credit_list_entry`` record) on top of ``current``
    (what earlier records of the same entry id made, or None).

    A 列入 (``LISTED``) gives the listing's details and keeps a removal already known; a
    移出 (``REMOVED``) records the removal day (its ``removed_on``, else the day of its
    event time on ``clock``) and reason; arriving first, it also gives the details until
    the 列入 does. Of several versions of the 列入 (or of the 移出) the later by
    :func:`xietong.versions.is_later` counts, whatever order they arrive in: an older
    version is a stale re-send and changes nothing. A 信用修复 移出 before its term
    (:func:`streams.credit_repair.listing_repair_refusal`) raises :class:`RepairRefused`:
    the listing stays as it was.
    """
    action = entry["action"]
    if action == "LISTED":
        version = version_of(entry)
        if current is not None and not _supersedes(version, current.listed_version):
            return current
        listing = _listing_of(entry, version)
        if current is None:
            return listing
        return replace(
            listing,
            removed_on=current.removed_on,
            removal_reason=current.removal_reason,
            removed_version=current.removed_version,
        )
    if action == "REMOVED":
        version = version_of(entry)
        if current is not None and not _supersedes(version, current.removed_version):
            return current
        removed_on = entry["removed_on"] or clock.day_of(entry["envelope"]["event_time"])
        refusal = listing_repair_refusal(
            entry_id=entry["entry_id"],
            list_type=entry["list_type"],
            listed_on=entry["listed_on"],
            removed_on=removed_on,
            removal_reason=entry["removal_reason"],
        )
        if refusal is not None:
            raise RepairRefused(refusal)
        base = current if current is not None else _listing_of(entry, None)
        return replace(
            base,
            removed_on=removed_on,
            removal_reason=entry["removal_reason"],
            removed_version=version,
        )
    raise UnusableEntry(
        f"credit list entry {entry['entry_id']} (event {entry['envelope']['event_id']}):"
        f" action {action!r} is neither LISTED nor REMOVED"
    )


def _supersedes(version: RecordVersion, known: RecordVersion | None) -> bool:
    return known is None or is_later(version, known)


def _listing_of(entry: dict[str, Any], version: RecordVersion | None) -> Listing:
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
        listed_version=version,
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
    listings: Iterable[Listing],
    measures: Sequence[dict[str, Any]],
    day: date,
    *,
    sector: str,
    matter_type: str,
) -> Assessment:
    """The listings in force on ``day`` and, of ``measures`` (those restricting the matter
    type), each one that binds the checking department's ``sector`` for ``matter_type``
    (:func:`streams.measures.binds_matter`, the rule joint punishment's hits follow: a
    measure of another sector, or one restricting persons, does not make the matter
    RESTRICTED) and whose list types include one of those listings'."""
    in_force = tuple(
        sorted(
            (listing for listing in listings if listing.in_force_on(day)),
            key=lambda listing: (listing.listed_on, listing.entry_id),
        )
    )
    hits = []
    for measure in measures:
        if not binds_matter(measure, sector=sector, matter_type=matter_type):
            continue
        triggering = tuple(lst for lst in in_force if lst.list_type in measure["list_types"])
        if triggering:
            hits.append(MeasureHit(measure, triggering))
    return Assessment(in_force, tuple(hits))


# -- the record of a check -------------------------------------------------------------------


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
