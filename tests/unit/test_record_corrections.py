"""A correction is a new version of the same record, and every service keeps the later
version whatever order the versions arrive in (issue 13 §1): joint punishment's rules and
the credit check's fold, driven with the same records, end as in-order processing ends
and agree with each other."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from streams.credit_check.rules import Listing, MeasureCatalog, Verdict, assess, fold_entry
from tests.credit_check_records import list_type_records, measure_records
from tests.joint_punishment_records import licence, list_entry, matter, removal_of
from tests.unit.test_joint_punishment_rules import ENTITY, Harness, days
from xietong.clock import BusinessClock, epoch_day

CREDIT_CATALOG = MeasureCatalog.of(measure_records(), list_type_records())
PROCUREMENT = CREDIT_CATALOG.by_matter_type["GOVERNMENT_PROCUREMENT"]  # CJ01 (财政)
#: a check by a 财政 department of a procurement, which CJ01 binds
FINANCE_PROCUREMENT = {"sector": "finance", "matter_type": "GOVERNMENT_PROCUREMENT"}
CLOCK = BusinessClock()
EVERY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Numbers vary the ids, so the event ids (uuids) vary too: no uuid may decide the outcome.
NUMBERS = st.integers(0, 10**6)


def arrivals(records: list[tuple[str, dict[str, Any]]]) -> st.SearchStrategy[list[Any]]:
    """Every arrival order of ``records``, with some of them again (re-sent, reprocessed)."""
    again = st.lists(st.sampled_from(records), max_size=3)
    return again.flatmap(lambda extra: st.permutations(records + extra))


def joint_punishment(records: Iterable[tuple[str, dict[str, Any]]]) -> Harness:
    h = Harness()
    for kind, record in records:
        h.feed(kind, record)
    h.tick()
    return h


def credit_listing(records: Iterable[tuple[str, dict[str, Any]]]) -> Listing:
    """The credit check's listing after the list entries among ``records``, in that order."""
    listing = None
    for kind, record in records:
        if kind == "list_entry":
            listing = fold_entry(listing, record, CLOCK)
    assert listing is not None
    return listing


def without_lifts(h: Harness) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: value for key, value in h.final().items() if key[0] != "lift_notice"}


def procurement_hits(h: Harness) -> list[dict[str, Any]]:
    return [v for (kind, _), v in h.final().items() if kind == "restriction_hit"]


# -- a licence VALID, then CANCELLED -----------------------------------------------------------


@EVERY
@given(data=st.data(), number=NUMBERS)
def test_a_licence_cancelled_in_its_second_version_is_cancelled_whatever_the_arrival_order(
    data: st.DataObject, number: int
) -> None:
    issued = days(-365)
    valid = licence(ENTITY, f"JY{number}", "hz-xh-amr", valid_from=issued, version="1")
    cancelled = licence(
        ENTITY, f"JY{number}", "hz-xh-amr", valid_from=issued, status="CANCELLED", version="2"
    )
    # A serious listing today sends licence reviews for the licences valid today. It comes
    # after the licence's versions: a review once sent is not retracted (the rules' module
    # docstring), so a listing between them would make what in-order processing makes.
    serious = ("list_entry", list_entry(ENTITY, f"E-{number}", listed_on=days(0)))
    versions = [("licence", valid), ("licence", cancelled)]
    in_order = joint_punishment([*versions, serious])

    h = joint_punishment([*data.draw(arrivals(versions)), serious])

    (held,) = h.entities[ENTITY]["licences"].values()
    assert held["status"] == "CANCELLED"
    assert h.final() == in_order.final()
    assert not h.of("licence_review_notice")


# -- a 失信被执行人 listing whose planned end is extended ------------------------------------------


@EVERY
@given(data=st.data(), number=NUMBERS)
def test_an_extended_listing_keeps_its_extension_in_both_services_whatever_the_order(
    data: st.DataObject, number: int
) -> None:
    common: dict[str, Any] = {"list_type": "JUDGMENT_DEFAULTER", "listed_on": days(-60)}
    first = list_entry(ENTITY, f"E-{number}", planned_removal_on=days(-10), **common)
    extended = list_entry(
        ENTITY, f"E-{number}", planned_removal_on=days(100), version="2", **common
    )
    procurement = matter(
        ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", f"CG-{number}", matter_date=days(-5)
    )
    records = [("list_entry", first), ("list_entry", extended), ("matter", procurement)]
    in_order = joint_punishment(records)
    arrived = data.draw(arrivals(records))

    h = joint_punishment(arrived)
    listing = credit_listing(arrived)

    assert listing.planned_removal_on == days(100)
    kept = h.entities[ENTITY]["listings"][f"E-{number}"]["listed"]
    assert kept["planned_removal_on"] == epoch_day(days(100))
    # A lift once sent is not retracted (the rules' module docstring): in order, the first
    # version's end (d-10, passed) lifted before the extension came; all else is the same.
    assert without_lifts(h) == without_lifts(in_order)
    # Both services: the matter on d-5 falls in the extended listing, and is restricted.
    assert [hit["status"] for hit in procurement_hits(h)] == ["ACTIVE"]
    assert (
        assess([listing], PROCUREMENT, days(-5), **FINANCE_PROCUREMENT).verdict
        == Verdict.RESTRICTED
    )


# -- a removal corrected from d-5 to d-30 --------------------------------------------------------


@EVERY
@given(data=st.data(), number=NUMBERS)
def test_a_removal_corrected_to_an_earlier_day_lifts_from_that_day_in_both_services(
    data: st.DataObject, number: int
) -> None:
    # Listed 500 days ago: a 信用修复 removal is past its one-year term (streams/credit_repair.py).
    listed = list_entry(ENTITY, f"E-{number}", listed_on=days(-500))
    removed = removal_of(listed, days(-5), version="1")
    corrected = removal_of(listed, days(-30), version="2")  # the day was wrong: 30 days ago
    procurement = matter(
        ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", f"CG-{number}", matter_date=days(-20)
    )
    records = [
        ("list_entry", listed),
        ("matter", procurement),
        ("list_entry", removed),
        ("list_entry", corrected),
    ]
    in_order = joint_punishment(records)
    arrived = data.draw(arrivals(records))

    h = joint_punishment(arrived)
    listing = credit_listing(arrived)

    assert listing.removed_on == days(-30)
    assert h.final() == in_order.final()
    # Both services: on d-20 the listing was no longer in force: no hit, CLEAR.
    assert procurement_hits(h) == []
    assert assess([listing], PROCUREMENT, days(-20), **FINANCE_PROCUREMENT).verdict == Verdict.CLEAR


def test_the_corrected_removal_withdraws_the_hit_its_first_version_left_standing() -> None:
    listed = list_entry(ENTITY, "E-1", listed_on=days(-500))
    h = joint_punishment(
        [
            ("list_entry", listed),
            ("matter", matter(ENTITY, "hz-xh-finance", "GOVERNMENT_PROCUREMENT", "CG-1",
                              matter_date=days(-20))),
            ("list_entry", removal_of(listed, days(-5), version="1")),
        ]
    )  # fmt: skip
    assert [hit["status"] for hit in h.of("restriction_hit")] == ["ACTIVE"]

    h.feed("list_entry", removal_of(listed, days(-30), version="2"))

    assert [hit["status"] for hit in h.of("restriction_hit")] == ["ACTIVE", "WITHDRAWN"]


def test_an_older_version_arriving_last_changes_nothing() -> None:
    listed = list_entry(ENTITY, "E-1", listed_on=days(-500))
    corrected = removal_of(listed, days(-30), version="2")
    h = joint_punishment([("list_entry", listed), ("list_entry", corrected)])
    published = len(h.published)

    h.feed("list_entry", removal_of(listed, days(-5), version="1"))

    assert len(h.published) == published
    assert h.entities[ENTITY]["listings"]["E-1"]["removed"]["version"]["record_version"] == "2"
