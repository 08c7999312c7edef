"""The workbench's pages over a desk of the test's own: signing in, the session cookie,
CSRF, the inbox with its deadlines and figures, the forms and their refusals.

The desk here is a fake (a dict of items): what the real one, ``connectors/inbox``,
reads and produces is the browser test's (tests/integration/test_workbench.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from app.workbench.sessions import Clerk
from app.workbench.settings import WorkbenchSettings
from app.workbench.view import Figures, InboxPage, Item, Outcome
from app.workbench.web import create_app
from xietong.clock import business_clock
from xietong.http_errors import (
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    ServiceUnavailableError,
)

TOKENS = {"good-token": ("hz-xh-transport", "西湖区交通运输局")}
NOW = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)


def push(push_id: str, department: str, deadline: datetime, state: str = "PUSHED") -> Item:
    record = {
        "push_id": push_id,
        "state": state,
        "entity": {"name": "杭州测试货运有限公司", "uscc": "91330106MA2CD7Q4XU"},
        "item": {"name": "道路货物运输经营许可", "legal_basis": "《道路运输条例》第二十四条"},
        "department": {"code": department},
        "claim_deadline": deadline,
    }
    return Item(
        push_id,
        "push",
        state,
        "91330106MA2CD7Q4XU",
        "杭州测试货运有限公司",
        "道路货物运输经营许可",
        deadline,
        deadline < NOW and state in ("PUSHED", "OVERDUE"),
        record,
    )


@dataclass
class FakeDesk:
    items: dict[str, tuple[str, Item]]
    sent: list[tuple[str, str, tuple[object, ...]]] = field(default_factory=list)
    down: bool = False
    revoked: set[str] = field(default_factory=set)

    def verify(self, token: str) -> tuple[str, str]:
        if token not in TOKENS:
            raise NotAuthenticatedError("unknown or revoked token")
        return TOKENS[token]

    def inbox(
        self, clerk: Clerk, kind: str | None, state: str | None, cursor: str | None, limit: int
    ) -> InboxPage:
        if clerk.token in self.revoked:
            raise NotAuthenticatedError("unknown or revoked token")
        mine = [item for owner, item in self.items.values() if owner == clerk.department_code]
        return InboxPage(mine, None)

    def item(self, clerk: Clerk, item_id: str) -> Item:
        owner, found = self.items.get(item_id, ("", None))
        if found is None or owner != clerk.department_code:
            raise NotFoundError(f"no inbox item {item_id} of {clerk.department_code}")
        return found

    def claim(self, clerk: Clerk, push_id: str, key: str) -> str:
        self.item(clerk, push_id)
        self.sent.append(("CLAIM", push_id, (clerk.operator,)))
        return "action-1"

    def return_push(
        self, clerk: Clerk, push_id: str, reason: str, text: str | None, key: str
    ) -> str:
        self.item(clerk, push_id)
        if reason not in ("NO_SUCH_ITEM", "OTHER"):
            raise InvalidInputError(f"reason {reason!r} is not one", field="reason")
        self.sent.append(("RETURN", push_id, (reason, text)))
        return "action-2"

    def stop(self, clerk: Clerk, push_id: str, text: str | None, key: str) -> str:
        return "action-3"

    def feedback(
        self, clerk: Clerk, hit_id: str, outcome: str, reason: str | None, key: str
    ) -> str:
        return "action-4"

    def outcome(self, clerk: Clerk, action_id: str) -> Outcome:
        return Outcome(action_id, "PENDING")

    def figures(self, clerk: Clerk) -> Figures:
        return Figures(4, 3, 0.75, 1, 2, 1, 0.5, 0)

    def ping(self) -> None:
        if self.down:
            raise ServiceUnavailableError("the credit database does not answer")


@pytest.fixture
def desk() -> FakeDesk:
    return FakeDesk(
        {
            "p-late": ("hz-xh-transport", push("p-late", "hz-xh-transport", NOW - timedelta(1))),
            "p-due": ("hz-xh-transport", push("p-due", "hz-xh-transport", NOW + timedelta(9))),
            "p-other": ("hz-xh-amr", push("p-other", "hz-xh-amr", NOW + timedelta(9))),
        }
    )


@pytest.fixture
def browser(desk: FakeDesk) -> TestClient:
    return TestClient(create_app(desk, WorkbenchSettings(), business_clock()))


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def signed_in(browser: TestClient) -> TestClient:
    page = browser.get("/signin").text
    answer = browser.post(
        "/signin",
        data={"token": "good-token", "operator": "李四", "csrf_token": csrf(page)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return browser


def test_a_page_asked_for_before_signing_in_leads_to_the_sign_in_page(
    browser: TestClient,
) -> None:
    answer = browser.get("/", follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/signin")


def test_the_session_cookie_is_signed_httponly_and_samesite_strict_and_holds_no_token(
    browser: TestClient,
) -> None:
    page = browser.get("/signin").text
    answer = browser.post(
        "/signin",
        data={"token": "good-token", "csrf_token": csrf(page)},
        follow_redirects=False,
    )
    cookie = answer.headers["set-cookie"]
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert "good-token" not in cookie
    import base64

    payload = cookie.split("=", 1)[1].split(".", 1)[0]
    assert b"good-token" not in base64.b64decode(payload + "==")


def test_an_unknown_token_is_refused_on_the_sign_in_page_naming_the_token(
    browser: TestClient,
) -> None:
    page = browser.get("/signin").text
    answer = browser.post("/signin", data={"token": "stolen", "csrf_token": csrf(page)})
    assert answer.status_code == 401
    assert 'data-field="token"' in answer.text


def test_a_form_without_the_sessions_csrf_token_is_refused(browser: TestClient) -> None:
    browser.get("/signin")
    answer = browser.post("/signin", data={"token": "good-token", "csrf_token": "forged"})
    assert answer.status_code == 403
    assert "csrf_token" in answer.text
    signed_in(browser)
    answer = browser.post("/pushes/p-due/claim", data={"csrf_token": "forged"})
    assert answer.status_code == 403


def test_the_inbox_shows_the_departments_pushes_the_overdue_one_in_red_and_its_figures(
    browser: TestClient,
) -> None:
    page = signed_in(browser).get("/").text
    assert 'id="item-p-late" class="overdue"' in page
    assert 'id="item-p-due" class=""' in page
    assert "p-other" not in page
    assert "75.0%" in page and "认领率" in page and "反馈率" in page


def test_another_departments_push_is_not_found(browser: TestClient) -> None:
    answer = signed_in(browser).get("/items/p-other")
    assert answer.status_code == 404
    answer = browser.post("/pushes/p-other/claim", data={"csrf_token": csrf(browser.get("/").text)})
    assert answer.status_code == 404


def test_a_claim_is_sent_as_the_clerk_and_leads_to_the_items_page_with_its_outcome(
    browser: TestClient, desk: FakeDesk
) -> None:
    token = csrf(signed_in(browser).get("/items/p-due").text)
    answer = browser.post("/pushes/p-due/claim", data={"csrf_token": token}, follow_redirects=False)
    assert answer.headers["location"] == "/items/p-due?action=action-1"
    assert desk.sent == [("CLAIM", "p-due", ("李四",))]
    page = browser.get(answer.headers["location"]).text
    assert 'id="outcome" data-state="PENDING"' in page


def test_a_bad_form_field_is_answered_422_naming_the_field(browser: TestClient) -> None:
    token = csrf(signed_in(browser).get("/items/p-due").text)
    answer = browser.post("/pushes/p-due/return", data={"csrf_token": token, "reason": "BORED"})
    assert answer.status_code == 422
    assert 'data-field="reason"' in answer.text


def test_the_stylesheet_is_served_by_the_workbench_and_no_page_loads_from_elsewhere(
    browser: TestClient,
) -> None:
    page = signed_in(browser).get("/").text
    assert browser.get("/static/workbench.css").status_code == 200
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_signing_out_ends_the_session(browser: TestClient) -> None:
    token = csrf(signed_in(browser).get("/").text)
    browser.post("/signout", data={"csrf_token": token})
    assert browser.get("/", follow_redirects=False).status_code == 303


def hit(hit_id: str, department: str) -> Item:
    record = {
        "hit_id": hit_id,
        "uscc": "91330106MA2CD7Q4XU",
        "entity_name": "杭州失信测试有限公司",
        "matter_type": "GOVERNMENT_PROCUREMENT",
        "matter_reference": "ZJCG-2026-0117",
        "matter_date": "2026-03-02",
        "measure_code": "CJ01",
        "measure_text": "限制参与政府采购活动",
        "department_code": department,
    }
    measure = {
        "code": "CJ01",
        "text": "限制参与政府采购活动",
        "legal_basis": "《中华人民共和国政府采购法》第二十二条",
    }
    return Item(
        hit_id,
        "hit",
        "PENDING",
        record["uscc"],
        record["entity_name"],
        record["measure_text"],
        NOW + timedelta(days=3),
        False,
        record,
        measure=measure,
    )


def test_a_restriction_hit_shows_its_measure_legal_basis_and_the_feedback_form(
    desk: FakeDesk, browser: TestClient
) -> None:
    desk.items["h-1"] = ("hz-xh-transport", hit("h-1", "hz-xh-transport"))
    page = signed_in(browser).get("/items/h-1").text
    assert "限制参与政府采购活动" in page
    assert "《中华人民共和国政府采购法》第二十二条" in page
    assert 'action="/hits/h-1/feedback"' in page
    assert "待反馈" in page


@pytest.mark.parametrize(
    ("act", "field"),
    [
        (lambda desk, clerk: desk.return_push(clerk, "p", "BORED", None, "k"), "reason"),
        (lambda desk, clerk: desk.return_push(clerk, "p", "OTHER", None, "k"), "reason_text"),
        (lambda desk, clerk: desk.feedback(clerk, "h", "MAYBE", None, "k"), "outcome"),
        (lambda desk, clerk: desk.feedback(clerk, "h", "NOT_APPLICABLE", None, "k"), "reason"),
    ],
    ids=["unknown-return-reason", "other-without-text", "unknown-outcome", "not-applicable-why"],
)
def test_the_desk_refuses_a_form_as_the_inbox_api_refuses_its_body_naming_the_field(
    act: object, field: str
) -> None:
    """The checks come before the department, the item or the broker is asked: a fault of
    the form is the form's."""
    from app.workbench.desk import InboxDesk

    desk = InboxDesk(None, None, None, None, "")  # type: ignore[arg-type]
    clerk = Clerk("token", "hz-xh-transport", "杭州市西湖区交通运输局", "李四")
    with pytest.raises(InvalidInputError) as refused:
        act(desk, clerk)  # type: ignore[operator]
    assert refused.value.field == field


def test_ready_answers_503_with_the_reason_while_the_inbox_cannot_be_read(
    desk: FakeDesk, browser: TestClient
) -> None:
    assert browser.get("/ready").status_code == 200
    desk.down = True
    answer = browser.get("/ready")
    assert answer.status_code == 503
    assert "credit database" in answer.json()["reason"]


def test_a_token_revoked_since_sign_in_signs_its_clerk_out(
    desk: FakeDesk, browser: TestClient
) -> None:
    signed_in(browser)
    desk.revoked.add("good-token")
    answer = browser.get("/", follow_redirects=False)
    assert answer.status_code == 401
    assert 'data-field="token"' in answer.text
    assert browser.get("/", follow_redirects=False).headers["location"] == "/signin"


def test_every_answer_forbids_scripts_and_other_origins_and_text_is_escaped(
    desk: FakeDesk, browser: TestClient
) -> None:
    evil = push("p-evil", "hz-xh-transport", NOW + timedelta(days=9))
    desk.items["p-evil"] = ("hz-xh-transport", replace(evil, title="<script>alert(1)</script>"))
    answer = signed_in(browser).get("/")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'none'" in policy
    assert "<script>" not in answer.text and "&lt;script&gt;" in answer.text
