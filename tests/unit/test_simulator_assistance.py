"""The simulator's clerks play 行政协助 (app/simulator.py): departments ask by the list they
may use; the assisting department completes, refuses through a 否定报备 its leader then
approves, or lets the request go overdue; the requester rates what was completed."""

from __future__ import annotations

from typing import Any

from app.simulator import Counts, DepartmentDesks, SimulatorSettings
from tests.assistance_records import PROVINCE


def desks(**settings: Any) -> DepartmentDesks:
    return DepartmentDesks(SimulatorSettings(**settings), clients=None, counts=Counts())  # type: ignore[arg-type]


def scheduled(desk: DepartmentDesks) -> list[tuple[str, dict[str, Any]]]:
    return [(department, value) for _, _, department, _, value in sorted(desk._due)]


def test_requests_are_made_by_departments_the_list_lets_ask() -> None:
    desk = desks()
    for _ in range(40):
        desk._ask_for_assistance()
    items = {item.code: item for item in PROVINCE.assistance_items}
    sector = {d.code: d.sector for d in PROVINCE.departments}
    made = scheduled(desk)
    assert len(made) == 40
    for department, value in made:
        assert value["action"] == "REQUEST" and value["request_reference"]
        if value["item_code"] is None:  # outside the list
            assert value["assisting_department_code"] and value["subject"]
            continue
        item = items[value["item_code"]]
        assert department != item.assisting
        assert item.requesting_department in (None, department)
        assert item.requesting_sector in (None, sector[department])


def _request(state: str, version: int = 1, listed: bool = True) -> dict[str, Any]:
    return {
        "request_id": "r-1",
        "request_reference": "西湖执法〔2026〕1号",
        "state": state,
        "version": version,
        "listed": listed,
        "subject": "违法建设规划许可核查",
        "assisting_department": {"code": "hz-nr"},
        "requesting_department": {"code": "hz-xh-cg"},
    }


def test_the_assisting_department_completes_or_refuses_and_its_leader_approves() -> None:
    completes = desks(assist_share=1.0)
    completes._consider("hz-nr", _request("REQUESTED"))
    [(department, value)] = scheduled(completes)
    assert (department, value["action"], value["request_id"]) == ("hz-nr", "COMPLETE", "r-1")
    assert value["result_text"] and value["attachments"]
    refuses = desks(assist_share=0.0, refuse_share=1.0)
    refuses._consider("hz-nr", _request("REQUESTED"))
    [(_, refusal)] = scheduled(refuses)
    assert refusal["action"] == "FILE_REFUSAL" and refusal["refusal_reason"] == "CANNOT_PROVIDE"
    assert refusal["legal_basis"] and refusal["reason_text"]
    refuses._consider("hz-nr", _request("REFUSAL_FILED", 2))
    approval = scheduled(refuses)[-1][1]
    assert approval["action"] == "APPROVE_REFUSAL" and approval["operator_role"] == "LEADER"
    overdue = desks(assist_share=0.0, refuse_share=0.0)
    overdue._consider("hz-nr", _request("REQUESTED"))
    assert not scheduled(overdue)


def test_the_requester_rates_what_was_completed() -> None:
    desk = desks(rate_share=1.0)
    desk._consider("hz-xh-cg", _request("COMPLETED", 3))
    [(department, rating)] = scheduled(desk)
    assert department == "hz-xh-cg" and rating["action"] == "RATE"
    assert 3 <= rating["cooperation"] <= 5 and 3 <= rating["effect"] <= 5


def test_an_escalation_or_a_rating_in_the_inbox_is_read_and_left() -> None:
    desk = desks(assist_share=1.0, rate_share=1.0)
    escalation = {
        "escalation_id": "e-1",
        "request_id": "r-1",
        "state": "REQUESTED",
        "assisting_department": {"code": "hz-nr"},
        "requesting_department": {"code": "hz-xh-cg"},
        "supervising_department": {"code": "hz-bb"},
    }
    rating = {"rating_id": "g-1", "request_id": "r-1", "rated_department": {"code": "hz-nr"}}
    for department, record in (("hz-nr", escalation), ("hz-bb", escalation), ("hz-nr", rating)):
        desk._consider(department, record)
    assert not scheduled(desk)
