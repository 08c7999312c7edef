"""双告知 follows the entity's own event order (issue 13 §3): a registration event read
late takes effect as if read in its place; a registration re-published as a new version,
or a department action sent again, makes nothing twice; 迁出 and a 住所 in another division
move the open pushes. The rules on dicts (the harness of test_dual_notice_rules.py); the
same rules run in the worker: tests/integration/test_dual_notice.py."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from streams.dual_notice.rules import (
    SUPERSEDED,
    PushState,
    push_id,
    routing_id,
)
from tests.dual_notice_records import action, key_of, licence, received, registration
from tests.unit.test_dual_notice_rules import (
    CHINA,
    DAY_MS,
    XIHU,
    XIHU_ITEMS,
    inbox_of,
)
from tests.unit.test_dual_notice_rules import Harness as RulesHarness
from xietong.clock import millis
from xietong.uscc import make_uscc

REGISTERED = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
#: Read after the whole history: every deadline has passed.
LATE = REGISTERED + 200 * DAY_MS
YUHANG = "330110"  # 余杭区: its own transport and tobacco departments
USCC = make_uscc("91", XIHU, rng=random.Random(7))


class Stored(dict[str, Any]):
    """A table as the worker's RocksDB store holds it: a value read is a copy, so a change
    the rules make and do not write back is lost, as it would be there."""

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(super().__getitem__(key))

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(super().get(key, default))

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, copy.deepcopy(value))


class Harness(RulesHarness):
    """The harness on tables that copy what they are given (:class:`Stored`)."""

    def __init__(self) -> None:
        super().__init__()
        self.registered_scopes = self.rules.registered_scopes = Stored()
        self.pushes = self.rules.pushes = Stored()
        self.licences = self.rules.licences = Stored()


def event(
    kind: str,
    items: tuple[str, ...] = (),
    *,
    day: int = 0,
    division: str = XIHU,
    status: str | None = None,
    event_id: str | None = None,
    version: str = "1",
) -> dict[str, Any]:
    """A registration event of the one entity, ``day`` days after its 设立."""
    permits = tuple(XIHU_ITEMS[item][0] for item in items)
    record = registration(
        division,
        permits,
        kind=kind,
        uscc=USCC,
        status=status,
        event_time_ms=REGISTERED + day * DAY_MS,
        event_id=event_id or f"{kind}-{day}-{status}-v{version}",
        rng=random.Random(f"{kind}{day}{status}{division}"),
    )
    record["envelope"]["record_version"] = version
    return record


def feed_all(h: Harness, events: list[tuple[str, dict[str, Any]]], now: int = LATE) -> Harness:
    for kind, record in events:
        h.feed(kind, record, now)
    return h


def pushes(h: Harness) -> dict[str, dict[str, Any]]:
    """The push table: the latest record of each push id."""
    return {key[1]: value for key, value in h.final().items() if key[0] == "dual_notice_push"}


def live(h: Harness) -> dict[tuple[str, str], str]:
    """(item, department) → state, of every push but those an earlier registration read
    late replaced."""
    return {
        (p["item"]["code"], p["department"]["code"]): p["state"]
        for p in pushes(h).values()
        if not (p["reason_text"] or "").startswith(SUPERSEDED)
    }


def ids(*items: str, of: dict[str, Any], division: str = XIHU) -> list[str]:
    departments = {"DLHWYSXK": "transport", "YCZMLSXK": "tobacco", "SPJYXK": "amr"}
    prefix = {XIHU: "hz-xh", YUHANG: "hz-yh"}[division]
    return [push_id(key_of(of), item, f"{prefix}-{departments[item]}") for item in items]


# -- 1. a 注销 or a 变更 read before its 设立 ---------------------------------------------------


def test_a_cancellation_read_before_its_establishment_leaves_no_open_push() -> None:
    """Issue 13's repro: a 注销 read before its 设立 left an open PUSHED push for a cancelled
    entity. The 设立 read afterwards makes its push CLOSED at once (as pushed and then
    closed in order), on dualnotice.pushes for auditors, and sends it to no inbox."""
    establish = event("ESTABLISH", ("DLHWYSXK",))
    cancel = event("CANCEL", day=20)
    in_order = feed_all(Harness(), [("registration", establish), ("registration", cancel)])

    h = feed_all(Harness(), [("registration", cancel), ("registration", establish)])

    [push] = pushes(h).values()
    assert push["state"] == PushState.CLOSED and push["version"] == 2
    assert push["state_changed_at"] == cancel["envelope"]["event_time"]
    assert inbox_of(h, "hz-xh-transport") == []
    assert pushes(h) == pushes(in_order)


def test_a_cancellation_read_late_does_not_close_the_pushes_of_the_re_registration() -> None:
    """注销 on day 0, registered again (same USCC) on day 1: the 注销 read last closes
    only what was registered before it."""
    cancel = event("CANCEL", day=0)
    again = event("ESTABLISH", ("DLHWYSXK",), day=1)

    h = feed_all(Harness(), [("registration", again), ("registration", cancel)])

    assert [p["state"] for p in pushes(h).values()] == [PushState.PUSHED]


def test_a_change_read_before_its_establishment_ends_as_in_order() -> None:
    """Issue 13's repro: a 变更 (食品 + 烟草) read before its 设立 (食品) made a second 食品
    push to the same department. Read in either order, one 食品 push (the 设立's) and one
    烟草 push (the 变更's) stand; the 变更's 食品 push, made while the 设立 was unknown,
    is REASSIGNED to the 设立's, and the department is told; the 变更's 告知书 lists what it
    adds, 烟草 only, as in order."""
    establish = event("ESTABLISH", ("SPJYXK",))
    change = event("CHANGE", ("SPJYXK", "YCZMLSXK"), day=2)
    in_order = feed_all(Harness(), [("registration", establish), ("registration", change)])

    h = feed_all(Harness(), [("registration", change), ("registration", establish)])

    assert (
        live(h)
        == live(in_order)
        == {
            ("SPJYXK", "hz-xh-amr"): PushState.PUSHED,
            ("YCZMLSXK", "hz-xh-tobacco"): PushState.PUSHED,
        }
    )
    [food] = ids("SPJYXK", of=establish)
    [replaced] = ids("SPJYXK", of=change)
    assert pushes(h)[replaced]["state"] == PushState.REASSIGNED
    assert pushes(h)[replaced]["reassigned_to_push_id"] == food
    assert [p["state"] for p in inbox_of(h, "hz-xh-amr") if p["push_id"] == replaced] == [
        PushState.PUSHED,
        PushState.REASSIGNED,
    ]
    notices = {n["notice_id"]: n for n in h.of("dual_notice_applicant_notice")}
    expected = {n["notice_id"]: n for n in in_order.of("dual_notice_applicant_notice")}
    assert notices == expected


def test_a_change_that_adds_nothing_read_after_an_older_establishment_pushes_nothing() -> None:
    """Issue 13's repro: the older 设立 read last overwrote the scope, so a later 变更 that
    adds nothing re-pushed 烟草. A 变更 is compared with the registration before it in
    business order, not with the one read last."""
    establish = event("ESTABLISH", ("SPJYXK",))
    change = event("CHANGE", ("SPJYXK", "YCZMLSXK"), day=2)
    later = event("CHANGE", ("SPJYXK", "YCZMLSXK"), day=5)
    h = feed_all(Harness(), [("registration", change), ("registration", establish)])

    h.feed("registration", later, LATE)

    assert live(h) == {
        ("SPJYXK", "hz-xh-amr"): PushState.PUSHED,
        ("YCZMLSXK", "hz-xh-tobacco"): PushState.PUSHED,
    }
    assert all(p["entity"]["registration_event_id"] != later["envelope"]["event_id"]
               for p in pushes(h).values())  # fmt: skip


def test_an_entity_that_needs_no_permit_leaves_no_state() -> None:
    """Most entities need no permit: their registrations keep nothing (as before the event
    order was kept), so the state grows with the entities that need one."""
    h = feed_all(
        Harness(), [("registration", event("ESTABLISH")), ("registration", event("CHANGE", day=2))]
    )

    assert h.pushes == {} and h.published == []


# -- 2. the same 设立 re-published as a new version ------------------------------------------


def test_the_same_establishment_re_published_makes_no_second_push_nor_routing_failure() -> None:
    """Issue 13's repro: the same 设立 re-published with a new event id made a second push
    per item and a second 分流失败 record. Pushes are the registration's (USCC, kind, day):
    the later version updates them (its snapshot, on the platform topic) and reaches no
    inbox again; the earlier version read last changes nothing."""
    shangcheng = "330102"  # no 农药 department: 分流失败
    first = registration(
        shangcheng, ("农药零售", "烟草制品零售"), uscc=USCC, event_time_ms=REGISTERED,
        event_id="v1", rng=random.Random(1),
    )  # fmt: skip
    second = {**first, "name": "杭州测试货运有限公司（更正）"}
    second["envelope"] = {**first["envelope"], "event_id": "v2", "record_version": "2"}
    h = Harness()
    h.feed("registration", first, REGISTERED)

    h.feed("registration", second, REGISTERED)
    h.feed("registration", first, REGISTERED)  # the older version, read again last

    [push] = pushes(h).values()
    assert push["push_id"] == push_id(key_of(first), "YCZMLSXK", "hz-sc-tobacco")
    assert push["entity"]["name"] == "杭州测试货运有限公司（更正）"
    assert len(inbox_of(h, "hz-sc-tobacco")) == 1
    assert {f["routing_id"] for f in h.of("dual_notice_routing_failure")} == {
        routing_id(key_of(first), "NYJYXK")
    }
    assert len({n["notice_id"] for n in h.of("dual_notice_applicant_notice")}) == 1


def test_push_ids_follow_from_the_registrations_business_key_not_its_event_id() -> None:
    first = event("ESTABLISH", ("DLHWYSXK",), event_id="a")
    second = event("ESTABLISH", ("DLHWYSXK",), event_id="b", version="2")

    assert key_of(first) == key_of(second) == f"{USCC}|ESTABLISH|2026-03-02"
    assert ids("DLHWYSXK", of=first) == ids("DLHWYSXK", of=second)


# -- 3. 迁出, a 住所 in another division, a 注销 re-published --------------------------------


def test_moving_out_of_the_province_closes_the_open_pushes_saying_so() -> None:
    """Issue 13's repro: 迁出 closed nothing."""
    h = feed_all(Harness(), [("registration", event("ESTABLISH", ("DLHWYSXK",)))])

    h.feed("registration", event("CHANGE", day=9, status="MOVED_OUT"), LATE)

    [push] = pushes(h).values()
    assert push["state"] == PushState.CLOSED
    assert "迁出" in push["reason_text"]
    assert [p["state"] for p in inbox_of(h, "hz-xh-transport")] == [
        PushState.PUSHED,
        PushState.CLOSED,
    ]
    assert h.of("entity_closure_notice") == []  # its licences are not ended by the move


def test_an_address_in_another_division_moves_the_open_pushes_to_its_departments() -> None:
    """Issue 13's repro: a 住所 change to another division did not re-route open pushes.
    The unclaimed transport push goes to 余杭's transport department (REASSIGNED away from
    西湖's, which is told); the claimed tobacco push stays with the department at work."""
    establish = event("ESTABLISH", ("DLHWYSXK", "YCZMLSXK"))
    h = feed_all(Harness(), [("registration", establish)])
    transport, tobacco = ids("DLHWYSXK", "YCZMLSXK", of=establish)
    claim = action(USCC, tobacco, "CLAIM", acted_at_ms=REGISTERED + DAY_MS)
    h.feed("action", received("hz-xh-tobacco", claim, 1), LATE)
    move = event("CHANGE", ("DLHWYSXK", "YCZMLSXK"), day=3, division=YUHANG)

    h.feed("registration", move, LATE)

    [moved] = ids("DLHWYSXK", of=move, division=YUHANG)
    table = pushes(h)
    assert table[transport]["state"] == PushState.REASSIGNED
    assert table[transport]["reassigned_to_push_id"] == moved
    assert table[tobacco]["state"] == PushState.CLAIMED
    assert table[moved]["state"] == PushState.PUSHED
    assert table[moved]["entity"]["division_code"] == YUHANG
    assert [p["state"] for p in inbox_of(h, "hz-xh-transport")][-1] == PushState.REASSIGNED
    assert [p["push_id"] for p in inbox_of(h, "hz-yh-transport")] == [moved]


def test_an_establishment_read_after_the_move_ends_as_in_order() -> None:
    establish = event("ESTABLISH", ("DLHWYSXK",))
    move = event("CHANGE", ("DLHWYSXK",), day=3, division=YUHANG)
    in_order = feed_all(Harness(), [("registration", establish), ("registration", move)])

    h = feed_all(Harness(), [("registration", move), ("registration", establish)])

    assert (
        live(h)
        == live(in_order)
        == {
            ("DLHWYSXK", "hz-xh-transport"): PushState.REASSIGNED,
            ("DLHWYSXK", "hz-yh-transport"): PushState.PUSHED,
        }
    )
    assert inbox_of(h, "hz-xh-transport") == []  # never seen there: nothing to take back


def test_a_cancellation_re_published_with_a_new_event_id_sends_no_second_notice() -> None:
    """Issue 13's repro: a duplicate 注销 with a new event id sent a second closure
    notice."""
    h = feed_all(Harness(), [("registration", event("ESTABLISH", ("DLHWYSXK",)))])
    h.feed("licence", licence(USCC, "DLHWYSXK", "hz-xh-transport"), LATE)
    h.feed("registration", event("CANCEL", day=20, event_id="cancel-1"), LATE)
    before = h.state()

    again = h.feed("registration", event("CANCEL", day=20, event_id="cancel-2"), LATE)

    assert again.outgoing == []
    assert h.state() == before
    assert len(h.of("entity_closure_notice")) == 1


# -- 4. a department action sent again ------------------------------------------------------


def claimed() -> tuple[Harness, dict[str, Any]]:
    establish = event("ESTABLISH", ("DLHWYSXK",))
    h = feed_all(Harness(), [("registration", establish)])
    [transport] = ids("DLHWYSXK", of=establish)
    claim = action(USCC, transport, "CLAIM", acted_at_ms=REGISTERED + DAY_MS, action_id="c-1")
    return h, claim


def test_an_action_its_department_sends_again_changes_nothing_and_sends_nothing() -> None:
    h, claim = claimed()
    h.feed("action", received("hz-xh-transport", claim, 7), LATE)
    before = h.state()

    again = h.feed("action", received("hz-xh-transport", claim, 12), LATE)

    assert again.outgoing == [] and again.deadlines == []
    assert h.state() == before


def test_an_action_reprocessed_at_its_offset_after_a_crash_sends_again_what_it_made() -> None:
    h, claim = claimed()
    first = h.feed("action", received("hz-xh-transport", claim, 7), LATE)

    again = h.feed("action", received("hz-xh-transport", claim, 7), LATE)

    assert [o.value for o in again.outgoing] == [o.value for o in first.outgoing] != []


# -- 5. the property: any order of one entity's events ends as in order ----------------------


def tick(h: Harness) -> None:
    """The timer at LATE: every push waiting for a deadline is due (as the app's timer
    sends them, from the state)."""
    for uscc, state in list(h.pushes.items()):
        for identity in list(state["pushes"]):
            for due in ("CLAIM", "LICENCE"):
                if h.rules.is_waiting(uscc, identity, due):
                    checked = {"uscc": uscc, "push_id": identity, "due": due}
                    h.feed("due", {**checked, "checked_at": LATE}, LATE)


Event = tuple[str, Any]


@st.composite
def entity_histories(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """One entity's registration events — a 设立, maybe re-published as a new version, maybe
    a 变更 (adding items, maybe moving to 余杭), maybe its end (注销, 吊销 or 迁出) — in
    business order; and what its departments and the licensing authority do after them."""
    items = tuple(sorted(draw(st.sets(st.sampled_from(sorted(XIHU_ITEMS))))))
    events: list[Event] = [("registration", event("ESTABLISH", items))]
    if draw(st.booleans()):
        events.append(("registration", event("ESTABLISH", items, event_id="v2", version="2")))
    if draw(st.booleans()):
        more = draw(st.sets(st.sampled_from(sorted(XIHU_ITEMS))))
        division = draw(st.sampled_from((XIHU, YUHANG)))
        changed = tuple(sorted(set(items) | more))
        events.append(("registration", event("CHANGE", changed, day=2, division=division)))
    end = draw(st.sampled_from((None, "CANCELLED", "REVOKED", "MOVED_OUT")))
    if end is not None:
        kind = "CANCEL" if end == "CANCELLED" else "CHANGE"
        events.append(("registration", event(kind, day=20, status=end)))
    after: list[Event] = []
    for step, item in enumerate(draw(st.lists(st.sampled_from(sorted(XIHU_ITEMS)), max_size=3))):
        if draw(st.booleans()):
            after.append(("licence", (item, f"{item}-{step}")))
        else:
            after.append(("claim", (item, f"claim-{step}")))
    return events, after


def replay(order: list[Event], after: list[Event], ticks: set[int]) -> Harness:
    """Read ``order`` (ticking the timer at the positions ``ticks``), then what came after
    the registrations, then a last tick."""
    h = Harness()
    for position, (kind, record) in enumerate(order):
        if position in ticks:
            tick(h)
        h.feed(kind, record, LATE)
    for offset, (kind, (item, name)) in enumerate(after):
        if kind == "licence":
            department = XIHU_ITEMS[item][1]
            h.feed("licence", licence(USCC, item, department, number=name), LATE)
            continue
        for push in open_pushes(h, item):
            claim = action(USCC, push["push_id"], "CLAIM", acted_at_ms=LATE, action_id=name)
            h.feed("action", received(push["department"]["code"], claim, 100 + offset), LATE)
    tick(h)
    return h


def open_pushes(h: Harness, item: str) -> Iterator[dict[str, Any]]:
    for push in sorted(pushes(h).values(), key=lambda p: p["push_id"]):
        if push["item"]["code"] == item and push["state"] in (PushState.PUSHED, "OVERDUE"):
            yield push


def table(h: Harness) -> dict[str, tuple[Any, ...]]:
    """The push table as auditors read it — each push's state, item, department, entity
    (which registration, which division), deadlines, claim, licence and replacement —
    but the pushes an earlier registration read late replaced, and the transient fields
    (the version, when it was escalated): what a timer's tick before a 注销 adds."""
    return {
        p["push_id"]: (
            p["state"],
            p["item"]["code"],
            p["department"]["code"],
            key_of_entity(p["entity"]),
            p["entity"]["division_code"],
            p["claim_deadline"],
            p["claimed_at"],
            p["fulfilled_by_licence"],
            p["reassigned_to_push_id"],
        )
        for p in pushes(h).values()
        if not (p["reason_text"] or "").startswith(SUPERSEDED)
    } | {
        f["routing_id"]: (f["state"],)
        for (kind, _), f in h.final().items()
        if kind == "dual_notice_routing_failure"
    }


def key_of_entity(entity: dict[str, Any]) -> str:
    return f"{entity['uscc']}|{entity['event_kind']}|{entity['registered_at']}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=entity_histories())
def test_any_order_of_an_entitys_registration_events_ends_as_in_order(
    data: st.DataObject, history: tuple[list[Event], list[Event]]
) -> None:
    """Any arrival order of one entity's registration events (设立, its re-published
    version, 变更 with or without a move, 注销/吊销/迁出), with duplicates and timer ticks
    anywhere, then licences and claims: the push table and the 分流失败 records end as in
    business order with no tick but the last."""
    events, after = history
    in_order = table(replay(events, after, ticks=set()))

    order = data.draw(st.permutations(events))
    for _ in range(data.draw(st.integers(0, 3))):
        order.insert(data.draw(st.integers(0, len(order))), data.draw(st.sampled_from(events)))
    ticks = data.draw(st.sets(st.integers(0, len(order))))

    assert table(replay(order, after, ticks)) == in_order
