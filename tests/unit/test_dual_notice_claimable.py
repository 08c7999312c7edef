"""The claimable list (issue 13 §7, last bullet): where the catalog names no department for
an item (分流失败), the item is published for departments to find and claim, not only
queued for the registration authority's manual routing. A department's 认领 naming the
routing id makes the item its push; the first valid claim wins, a later one is rejected
with the reason; an item routed, claimed or closed leaves the list (a tombstone)."""

from __future__ import annotations

import copy
import random
from datetime import datetime
from typing import Any

from streams.dual_notice.rules import PushState, push_id, routing_id
from tests.dual_notice_records import action, key_of, licence, received, registration
from tests.unit.test_dual_notice_rules import CHINA, DAY_MS, Harness
from xietong.clock import millis
from xietong.uscc import make_uscc

SHANGCHENG = "330102"  # 上城区: the sample catalog routes 农药经营 to no department here
REGISTRAR = "hz-sc-amr"
REGISTERED = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))


def pesticide_shop(event_id: str = "event-pesticide") -> dict[str, Any]:
    uscc = make_uscc("91", SHANGCHENG, rng=random.Random(11))
    return registration(
        SHANGCHENG, ("农药零售",), uscc=uscc, event_time_ms=REGISTERED, event_id=event_id
    )


def claimable(h: Harness) -> list[tuple[str, bool, dict[str, Any]]]:
    """What the claimable list got: (key, tombstone, record)."""
    return [
        (out.key, out.tombstone, out.value)
        for out in h.published
        if out.record_type == "dual_notice_claimable_item"
    ]


def claim(
    h: Harness,
    record: dict[str, Any],
    department: str,
    *,
    offset: int,
    at: int,
    read_at: int | None = None,
    **kw: Any,
) -> None:
    """``department`` claims the 农药经营 item by its routing id, acted ``at``, read a
    second later (or ``read_at``)."""
    identity = routing_id(key_of(record), "NYJYXK")
    taken = action(record["uscc"], identity, "CLAIM", acted_at_ms=at, **kw)
    h.feed("action", received(department, taken, offset), read_at or at + 1000)


def failed(h: Harness) -> dict[str, Any]:
    record = pesticide_shop()
    h.feed("registration", record, REGISTERED)
    return record


def test_a_routing_failure_is_published_on_the_claimable_list_keyed_by_its_routing_id() -> None:
    h = Harness()

    record = failed(h)

    identity = routing_id(key_of(record), "NYJYXK")
    [(key, tombstone, item)] = claimable(h)
    assert (key, tombstone) == (identity, False)
    assert item["state"] == "OPEN" and item["item"]["code"] == "NYJYXK"
    [queued] = h.of("dual_notice_routing_failure")
    assert queued == item  # the same record as the manual-routing queue's
    assert not any(out.inboxes for out in h.published if "routing" in out.record_type)


def test_a_departments_claim_of_the_routing_id_makes_the_item_its_push_claimed() -> None:
    """hz-agri (the city's agriculture bureau) claims the 上城区 农药经营 item: it gets a
    push CLAIMED as it is made, routing CLAIMABLE, its licence period from the claim, in
    its inbox; the 分流失败 record is CLAIMED by it; the item leaves the list."""
    h = Harness()
    record = failed(h)
    at = REGISTERED + DAY_MS

    claim(h, record, "hz-agri", offset=1, at=at)

    [push] = h.of("dual_notice_push")
    assert push["push_id"] == push_id(key_of(record), "NYJYXK", "hz-agri")
    assert push["state"] == PushState.CLAIMED and push["routing"] == "CLAIMABLE"
    assert push["version"] == 1 and push["changed_by"] == "hz-agri"
    assert push["pushed_at"] == push["claimed_at"] == at
    assert push["licence_deadline"] is not None and push["licence_deadline"] > at
    delivered = [out for out in h.published if out.record_type == "dual_notice_push"]
    assert [out.inboxes for out in delivered] == [("hz-agri",)]
    routed = h.of("dual_notice_routing_failure")[-1]
    assert routed["state"] == "CLAIMED" and routed["routed_to"]["code"] == "hz-agri"
    assert routed["routed_push_id"] == push["push_id"] and routed["state_changed_at"] == at
    assert [(tombstone, item["state"]) for _, tombstone, item in claimable(h)] == [
        (False, "OPEN"),
        (True, "CLAIMED"),
    ]


def test_the_first_valid_claim_wins_and_a_later_claim_is_rejected_naming_the_winner() -> None:
    h = Harness()
    record = failed(h)
    at = REGISTERED + DAY_MS
    claim(h, record, "hz-sc-eco", offset=1, at=at + DAY_MS, read_at=at)  # dated ahead: invalid
    claim(h, record, "hz-agri", offset=2, at=at)

    claim(h, record, "hz-sc-eco", offset=3, at=at + 1000)

    invalid, taken = h.of("rejected_department_action")
    assert "later than the platform's now" in invalid["reason"]
    assert "claimed by hz-agri first" in taken["reason"] and taken["push_state"] == "CLAIMED"
    assert {push["department"]["code"] for push in h.of("dual_notice_push")} == {"hz-agri"}
    assert h.of("dual_notice_routing_failure")[-1]["routed_to"]["code"] == "hz-agri"


def test_which_claim_wins_follows_the_order_of_the_claims_not_their_dates() -> None:
    """Deterministic: the partition's order decides (every replay agrees), not acted_at."""
    h = Harness()
    record = failed(h)
    claim(h, record, "hz-sc-eco", offset=1, at=REGISTERED + 2 * DAY_MS)
    claim(h, record, "hz-agri", offset=2, at=REGISTERED + DAY_MS)

    [push] = h.of("dual_notice_push")
    assert push["department"]["code"] == "hz-sc-eco"


def test_a_claim_after_manual_routing_or_after_the_entitys_cancellation_is_rejected() -> None:
    h = Harness()
    record = failed(h)
    identity = routing_id(key_of(record), "NYJYXK")
    at = REGISTERED + DAY_MS
    route = action(record["uscc"], identity, "ROUTE", target="hz-agri", acted_at_ms=at)
    h.feed("action", received(REGISTRAR, route, 1), at)

    claim(h, record, "hz-sc-eco", offset=2, at=at + 1000)

    [rejected] = h.of("rejected_department_action")
    assert "is ROUTED, no longer on the claimable list" in rejected["reason"]
    assert [tombstone for _, tombstone, _ in claimable(h)] == [False, True]

    closed_h = Harness()
    record = failed(closed_h)
    cancel = pesticide_shop(event_id="event-cancel")
    cancel.update(event_kind="CANCEL", status="CANCELLED")
    cancel["envelope"]["event_time"] = at
    closed_h.feed("registration", cancel, at)
    claim(closed_h, record, "hz-agri", offset=1, at=at + 1000)

    [rejected] = closed_h.of("rejected_department_action")
    assert "is CLOSED" in rejected["reason"]
    assert [tombstone for _, tombstone, _ in claimable(closed_h)] == [False, True]


def test_a_claim_delivered_again_sends_again_what_it_sent_and_changes_nothing() -> None:
    h = Harness()
    record = failed(h)
    at = REGISTERED + DAY_MS
    claim(h, record, "hz-agri", offset=1, at=at, action_id="claim-1")
    before, sent = h.state(), len(h.published)

    claim(h, record, "hz-agri", offset=1, at=at, action_id="claim-1")

    assert h.state() == before
    again = h.published[sent:]
    assert {out.record_type for out in again} == {
        "dual_notice_routing_failure",
        "dual_notice_claimable_item",
        "dual_notice_push",
    }
    assert [out.tombstone for out in again if out.record_type == "dual_notice_claimable_item"] == [
        True
    ]


def test_a_push_claimed_from_the_list_is_fulfilled_by_the_claiming_departments_licence() -> None:
    h = Harness()
    record = failed(h)
    at = REGISTERED + DAY_MS
    claim(h, record, "hz-agri", offset=1, at=at)

    h.feed("licence", licence(record["uscc"], "NYJYXK", "hz-agri"), at + DAY_MS)

    assert h.of("dual_notice_push")[-1]["state"] == PushState.FULFILLED


class CopyingTable(dict):  # type: ignore[type-arg]
    """A table as Faust's RocksDB tables behave: every read hands out a copy, so only what
    is stored again is kept."""

    def __getitem__(self, key: Any) -> Any:
        return copy.deepcopy(super().__getitem__(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return copy.deepcopy(super().get(key, default))


def test_with_a_table_that_hands_out_copies_a_claimed_or_routed_item_stays_so() -> None:
    """The worker's state is a Faust table: the second claim finds the item CLAIMED, a
    ROUTE after a ROUTE finds it ROUTED (a change made to a copy would be lost)."""
    h = Harness()
    h.rules.pushes = CopyingTable()
    record = failed(h)
    at = REGISTERED + DAY_MS
    claim(h, record, "hz-agri", offset=1, at=at)
    claim(h, record, "hz-sc-eco", offset=2, at=at + 1000)

    [rejected] = h.of("rejected_department_action")
    assert "claimed by hz-agri first" in rejected["reason"]

    routed = Harness()
    routed.rules.pushes = CopyingTable()
    record = failed(routed)
    identity = routing_id(key_of(record), "NYJYXK")
    for offset, target in enumerate(("hz-agri", "hz-sc-eco"), start=1):
        route = action(record["uscc"], identity, "ROUTE", target=target, acted_at_ms=at)
        routed.feed("action", received(REGISTRAR, route, offset), at + 1000)

    [rejected] = routed.of("rejected_department_action")
    assert "is ROUTED, not waiting to be routed" in rejected["reason"]
