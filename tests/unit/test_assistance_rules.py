"""行政协助 as the Xiamen report has it (seed 000; domain brief §7), on the rules alone: a
request by the list reaches the assisting department's inbox with its deadline; the
department accepts and completes, or refuses only through a 否定报备 that its leader
approves; an overdue request is escalated to it and the 编办; the requester rates the
assistance once. Properties: the outcome does not depend on the order in which different
requests' actions interleave, nor on when the deadline check runs, and a duplicate
changes nothing. The same rules in the worker: tests/integration/test_assistance.py."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from streams.assistance.records import request_id
from streams.assistance.rules import (
    DEADLINE,
    AssistanceOutput,
    AssistanceRules,
    AssistanceState,
    escalation_id,
    rating_id,
)
from streams.assistance.settings import AssistanceSettings
from tests.assistance_records import assistance_action, received, sample_directory, sample_list
from tests.unit.test_dual_notice_event_order import Stored
from xietong.clock import millis

CHINA = ZoneInfo("Asia/Shanghai")
HOUR = 3_600_000
DAY = 24 * HOUR
#: Monday 2 March 2026, 10:00 in the province; 7 and 8 March are the weekend.
REQUESTED = millis(datetime(2026, 3, 2, 10, 0, tzinfo=CHINA))
#: 24:00 on Wednesday 11 March: seven working days from the day after the request.
SEVEN_WORKING_DAYS = millis(datetime(2026, 3, 12, 0, 0, tzinfo=CHINA))
NOW = REQUESTED + 3 * HOUR
XIHU_CG = "hz-xh-cg"  # 杭州市西湖区综合行政执法局 (urban_management)
HZ_NR = "hz-nr"  # 杭州市规划和自然资源局, assisting on HZXZ-003
HZ_BB = "hz-bb"  # 中共杭州市委机构编制委员会办公室


@functools.cache
def _list() -> Any:
    return sample_list()


@functools.cache
def _directory() -> Any:
    return sample_directory()


class Harness:
    """The rules on a table, fed actions as the relay forwards them."""

    def __init__(self) -> None:
        self.requests = Stored()
        self.rules = AssistanceRules(
            requests=self.requests,
            items=_list,
            directory=_directory,
            has_inbox=lambda code: True,
            settings=AssistanceSettings(metrics_port=None),
        )
        self.offset = 0

    def act(
        self, department: str, kind: str, *, at: int | None = None, now: int = NOW, **fields: Any
    ) -> AssistanceOutput:
        action = assistance_action(kind, REQUESTED + HOUR if at is None else at, **fields)
        return self.apply(received(department, action, self.next_offset()), now)

    def apply(self, record: dict[str, Any], now: int = NOW) -> AssistanceOutput:
        return self.rules.on_action(record, now)

    def next_offset(self) -> int:
        self.offset += 1
        return self.offset

    def request(self, reference: str = "西湖执法〔2026〕12号", **fields: Any) -> str:
        fields = {"item_code": "HZXZ-003", "request_reference": reference, **fields}
        fields.setdefault("at", REQUESTED)
        self.act(fields.pop("department", XIHU_CG), "REQUEST", **fields)
        return request_id(XIHU_CG, reference)

    def due(self, identity: str, checked_at: int) -> AssistanceOutput:
        return self.rules.on_due(
            {"request_id": identity, "due": DEADLINE, "checked_at": checked_at}
        )

    def state(self, identity: str) -> dict[str, Any]:
        record: dict[str, Any] = self.requests[identity]["record"]
        return record


def sent(
    output: AssistanceOutput, record_type: str
) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    return [(out.value, out.inboxes) for out in output.outgoing if out.record_type == record_type]


def rejected_reason(output: AssistanceOutput) -> str:
    [(rejection, _)] = sent(output, "rejected_assistance_action")
    reason: str = rejection["reason"]
    return reason


# -- a request reaches the assisting department with its deadline --------------------------


def test_a_listed_request_reaches_the_assisting_department_due_in_seven_working_days() -> None:
    harness = Harness()
    out = harness.act(
        XIHU_CG,
        "REQUEST",
        at=REQUESTED,
        item_code="HZXZ-003",
        request_reference="西湖执法〔2026〕12号",
        subject="文三路12号违法建设规划许可核查",
    )
    [(request, inboxes)] = sent(out, "assistance_request")
    assert inboxes == (HZ_NR,)
    assert request["state"] == "REQUESTED" and request["listed"]
    assert request["item"]["code"] == "HZXZ-003"
    assert request["deadline"] == SEVEN_WORKING_DAYS  # the weekend of 7–8 March does not count
    assert request["supervising_department"]["code"] == HZ_BB
    assert request["request_id"] == request_id(XIHU_CG, "西湖执法〔2026〕12号")
    assert out.deadlines == [(SEVEN_WORKING_DAYS, request["request_id"])]


def test_a_request_outside_the_list_reaches_the_department_named_with_the_default_limit() -> None:
    harness = Harness()
    out = harness.act(
        XIHU_CG,
        "REQUEST",
        at=REQUESTED,
        request_reference="西湖执法〔2026〕13号",
        assisting_department_code="hz-xh-health",
        subject="违法建设内诊所执业许可情况",
    )
    [(request, inboxes)] = sent(out, "assistance_request")
    assert inboxes == ("hz-xh-health",) and not request["listed"]
    assert request["time_limit_days"] == 10 and request["working_days"]
    # The 编办 of 西湖区 is its city's: 杭州市委编办.
    assert request["supervising_department"]["code"] == HZ_BB


def test_a_listed_item_takes_only_the_requesters_it_names() -> None:
    harness = Harness()
    out = harness.act(
        "hz-xh-health", "REQUEST", at=REQUESTED, item_code="HZXZ-003", request_reference="R-1"
    )
    assert "for requests by departments of sector urban_management" in rejected_reason(out)
    assert not harness.requests


def test_a_listed_item_fixes_the_assisting_department() -> None:
    out = Harness().act(
        XIHU_CG,
        "REQUEST",
        at=REQUESTED,
        item_code="HZXZ-003",
        request_reference="R-2",
        assisting_department_code="hz-police",
    )
    assert "assisted by hz-nr, not hz-police" in rejected_reason(out)


# -- accepted, then completed with a result --------------------------------------------------


def test_accepted_then_completed_with_a_result_is_answered_to_the_requester_in_time() -> None:
    harness = Harness()
    identity = harness.request()
    [(accepted, told)] = sent(
        harness.act(HZ_NR, "ACCEPT", request_id=identity), "assistance_request"
    )
    assert accepted["state"] == "ACCEPTED" and told == (XIHU_CG,)
    attachment = {"name": "规划许可证.pdf", "uri": "https://nr.example/doc/1", "sha256": None}
    out = harness.act(
        HZ_NR,
        "COMPLETE",
        at=REQUESTED + 2 * HOUR,
        request_id=identity,
        result_text="该建筑未取得建设工程规划许可证",
        attachments=[attachment],
    )
    [(completed, told)] = sent(out, "assistance_request")
    assert completed["state"] == "COMPLETED" and told == (XIHU_CG,)
    assert completed["in_time"] is True and completed["attachments"] == [attachment]
    assert completed["version"] == 3


def test_a_completion_without_result_or_attachment_is_rejected() -> None:
    harness = Harness()
    identity = harness.request()
    out = harness.act(HZ_NR, "COMPLETE", request_id=identity)
    assert "carries its result" in rejected_reason(out)
    assert harness.state(identity)["state"] == "REQUESTED"


def test_only_the_assisting_department_answers() -> None:
    harness = Harness()
    identity = harness.request()
    out = harness.act("hz-police", "ACCEPT", request_id=identity)
    assert "only its assisting department hz-nr may" in rejected_reason(out)


# -- 否定报备: reason, basis, a leader's approval -------------------------------------------


def _file_refusal(harness: Harness, identity: str, **fields: Any) -> AssistanceOutput:
    values = {
        "request_id": identity,
        "refusal_reason": "OVERRULED_BY_HIGHER_RULE",
        "reason_text": "该地块涉密，档案按上级规定不对外提供",
        "legal_basis": "《中华人民共和国保守国家秘密法》",
        "operator": "张三",
        **fields,
    }
    return harness.act(HZ_NR, "FILE_REFUSAL", **values)


def test_a_refusal_without_its_legal_basis_is_rejected() -> None:
    harness = Harness()
    identity = harness.request()
    out = _file_refusal(harness, identity, legal_basis=None)
    assert "legal_basis missing" in rejected_reason(out)
    assert harness.state(identity)["state"] == "REQUESTED"


def test_a_listed_item_is_never_refused_as_not_our_duty() -> None:
    harness = Harness()
    identity = harness.request()
    out = _file_refusal(harness, identity, refusal_reason="NOT_OUR_DUTY")
    assert "never refused as not its duty" in rejected_reason(out)


def test_a_request_outside_the_list_may_be_refused_as_not_the_departments_duty() -> None:
    harness = Harness()
    harness.act(
        XIHU_CG,
        "REQUEST",
        at=REQUESTED,
        request_reference="R-9",
        assisting_department_code="hz-xh-health",
        subject="违法建设内诊所执业许可情况",
    )
    identity = request_id(XIHU_CG, "R-9")
    out = harness.act(
        "hz-xh-health",
        "FILE_REFUSAL",
        request_id=identity,
        refusal_reason="NOT_OUR_DUTY",
        reason_text="诊所执业登记由市卫健委负责",
        legal_basis="《医疗机构管理条例》",
        operator="赵六",
    )
    assert sent(out, "assistance_request")[0][0]["state"] == "REFUSAL_FILED"


def test_a_refusal_is_refused_only_once_a_leader_other_than_the_filer_approves_it() -> None:
    harness = Harness()
    identity = harness.request()
    filed = _file_refusal(harness, identity)
    [(record, told)] = sent(filed, "assistance_request")
    assert record["state"] == "REFUSAL_FILED" and told == (HZ_NR,)  # its leaders decide
    by_clerk = harness.act(HZ_NR, "APPROVE_REFUSAL", request_id=identity, operator="李科长")
    assert "operator_role is CLERK, not LEADER" in rejected_reason(by_clerk)
    by_filer = harness.act(
        HZ_NR, "APPROVE_REFUSAL", request_id=identity, operator="张三", operator_role="LEADER"
    )
    assert "decided by another person" in rejected_reason(by_filer)
    assert harness.state(identity)["state"] == "REFUSAL_FILED"
    approved = harness.act(
        HZ_NR, "APPROVE_REFUSAL", request_id=identity, operator="陈局长", operator_role="LEADER"
    )
    [(refused, told)] = sent(approved, "assistance_request")
    assert refused["state"] == "REFUSED" and told == (XIHU_CG, HZ_BB)  # answered, archived
    assert refused["refusal"]["approved_by"] == "陈局长"
    assert refused["refusal"]["legal_basis"] == "《中华人民共和国保守国家秘密法》"


def test_a_leader_who_overrules_the_refusal_sends_the_department_back_to_assist() -> None:
    harness = Harness()
    identity = harness.request()
    harness.act(HZ_NR, "ACCEPT", request_id=identity)
    _file_refusal(harness, identity)
    out = harness.act(
        HZ_NR, "OVERRULE_REFUSAL", request_id=identity, operator="陈局长", operator_role="LEADER"
    )
    [(record, told)] = sent(out, "assistance_request")
    assert record["state"] == "ACCEPTED" and record["refusal"] is None and told == (HZ_NR,)
    assert record["refusals_overruled"] == 1


# -- a closed request ------------------------------------------------------------------------


def test_an_action_on_a_closed_request_is_rejected_with_the_reason() -> None:
    harness = Harness()
    identity = harness.request()
    harness.act(HZ_NR, "COMPLETE", request_id=identity, result_text="已核查")
    out = harness.act(HZ_NR, "ACCEPT", request_id=identity)
    assert f"request {identity} is closed: COMPLETED" in rejected_reason(out)
    assert sent(out, "rejected_assistance_action")[0][0]["request_state"] == "COMPLETED"


# -- 督查: escalated once to the assisting department and the 编办 ---------------------------


def test_an_overdue_request_is_escalated_once_to_the_assisting_department_and_the_bianban() -> None:
    harness = Harness()
    identity = harness.request()
    assert not harness.due(identity, SEVEN_WORKING_DAYS - 1).outgoing  # not yet
    out = harness.due(identity, SEVEN_WORKING_DAYS + 1000)
    [(escalation, told)] = sent(out, "assistance_escalation")
    assert told == (HZ_NR, HZ_BB)
    assert escalation["escalation_id"] == escalation_id(identity)
    [(record, _)] = sent(out, "assistance_request")
    assert record["escalated_at"] == SEVEN_WORKING_DAYS + 1000 and record["state"] == "REQUESTED"
    again = harness.due(identity, SEVEN_WORKING_DAYS + 5000)  # the same escalation, not a new one
    assert sent(again, "assistance_escalation") == [(escalation, told)]
    late = harness.act(
        HZ_NR,
        "COMPLETE",
        at=SEVEN_WORKING_DAYS + HOUR,
        now=SEVEN_WORKING_DAYS + 2 * HOUR,
        request_id=identity,
        result_text="已核查",
    )
    assert sent(late, "assistance_request")[0][0]["in_time"] is False


def test_a_completion_done_in_time_but_read_after_the_escalation_is_in_time() -> None:
    harness = Harness()
    identity = harness.request()
    harness.due(identity, SEVEN_WORKING_DAYS + 1000)
    out = harness.act(
        HZ_NR,
        "COMPLETE",
        at=SEVEN_WORKING_DAYS - HOUR,
        now=SEVEN_WORKING_DAYS + 2 * HOUR,
        request_id=identity,
        result_text="已核查",
    )
    assert sent(out, "assistance_request")[0][0]["in_time"] is True


def test_a_closed_request_is_not_escalated() -> None:
    harness = Harness()
    identity = harness.request()
    harness.act(HZ_NR, "COMPLETE", request_id=identity, result_text="已核查")
    assert not harness.due(identity, SEVEN_WORKING_DAYS + 1000).outgoing


# -- 互评 ------------------------------------------------------------------------------------


def test_the_requester_rates_a_completed_request_once() -> None:
    harness = Harness()
    identity = harness.request()
    early = harness.act(XIHU_CG, "RATE", request_id=identity, cooperation=5, effect=4)
    assert "RATE is possible from COMPLETED" in rejected_reason(early)
    harness.act(HZ_NR, "COMPLETE", request_id=identity, result_text="已核查")
    by_assister = harness.act(HZ_NR, "RATE", request_id=identity, cooperation=5, effect=5)
    assert "only its requesting department hz-xh-cg may" in rejected_reason(by_assister)
    out_of_range = harness.act(XIHU_CG, "RATE", request_id=identity, cooperation=6, effect=4)
    assert "cooperation is not" in rejected_reason(out_of_range)
    rated = harness.act(
        XIHU_CG, "RATE", request_id=identity, cooperation=5, effect=4, comment="配合积极"
    )
    [(rating, told)] = sent(rated, "assistance_rating")
    assert told == (HZ_NR,) and rating["rating_id"] == rating_id(identity)
    assert (rating["cooperation"], rating["effect"], rating["completed_in_time"]) == (5, 4, True)
    second = harness.act(XIHU_CG, "RATE", request_id=identity, cooperation=1, effect=1)
    assert "one rating per request" in rejected_reason(second)


def test_an_action_dated_before_its_request_or_ahead_of_now_is_rejected() -> None:
    harness = Harness()
    identity = harness.request()
    before = harness.act(HZ_NR, "ACCEPT", at=REQUESTED - HOUR, request_id=identity)
    assert "before the request" in rejected_reason(before)
    ahead = harness.act(HZ_NR, "ACCEPT", at=NOW + HOUR, request_id=identity)
    assert "later than the platform's now" in rejected_reason(ahead)


# -- properties: arrival order, the deadline check, duplicates -----------------------------

#: What may happen to a request, each a script of (department, action, fields) after it.
SCRIPTS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "completed": [
        (HZ_NR, "ACCEPT", {}),
        (HZ_NR, "COMPLETE", {"result_text": "已核查"}),
        (XIHU_CG, "RATE", {"cooperation": 4, "effect": 5}),
    ],
    "refused": [
        (
            HZ_NR,
            "FILE_REFUSAL",
            {
                "refusal_reason": "CANNOT_PROVIDE",
                "reason_text": "档案已移交",
                "legal_basis": "《档案法》",
                "operator": "张三",
            },
        ),
        (HZ_NR, "APPROVE_REFUSAL", {"operator": "陈局长", "operator_role": "LEADER"}),
    ],
    "refusal without approval": [
        (
            HZ_NR,
            "FILE_REFUSAL",
            {
                "refusal_reason": "OTHER",
                "reason_text": "无",
                "legal_basis": "无",
                "operator": "张三",
            },
        ),
        (HZ_NR, "APPROVE_REFUSAL", {"operator": "张三", "operator_role": "CLERK"}),
    ],
    "late": [(HZ_NR, "COMPLETE", {"result_text": "已核查", "late": True})],
    "left open": [(HZ_NR, "ACCEPT", {})],
}


def _script_actions(name: str, index: int) -> list[dict[str, Any]]:
    """The received actions of one request following a script: its REQUEST, then the
    script's actions an hour apart (a late one after the deadline), with fixed ids."""
    reference = f"R-{index}"
    identity = request_id(XIHU_CG, reference)
    steps = [(XIHU_CG, "REQUEST", {"item_code": "HZXZ-003", "request_reference": reference})]
    steps += [
        (department, kind, {"request_id": identity, **fields})
        for department, kind, fields in SCRIPTS[name]
    ]
    records = []
    for step, (department, kind, fields) in enumerate(steps):
        fields = dict(fields)
        at = SEVEN_WORKING_DAYS + HOUR if fields.pop("late", False) else REQUESTED + step * HOUR
        action = assistance_action(kind, at, action_id=f"{reference}-{step}", **fields)
        records.append(received(department, action, offset=index * 100 + step))
    return records


LATE_NOW = SEVEN_WORKING_DAYS + 10 * HOUR


def _outcome(harness: Harness) -> dict[str, tuple[Any, ...]]:
    """What a reader of the topics keeps: each request's state, in time or not, its
    rating."""
    return {
        identity: (
            entry["record"]["state"],
            entry["record"]["in_time"],
            entry["record"]["refusal"],
            entry["rating"],
        )
        for identity, entry in harness.requests.items()
    }


scripts = st.lists(st.sampled_from(sorted(SCRIPTS)), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chosen=scripts, data=st.data())
def test_the_outcome_does_not_depend_on_how_requests_interleave(
    chosen: list[str], data: st.DataObject
) -> None:
    streams = [_script_actions(name, index) for index, name in enumerate(chosen)]
    in_order = Harness()
    for stream in streams:
        for record in stream:
            in_order.apply(record, LATE_NOW)
    # Any interleaving that keeps each request's own actions in their order.
    queues = [list(stream) for stream in streams]
    interleaved = Harness()
    while any(queues):
        pick = data.draw(st.sampled_from([i for i, queue in enumerate(queues) if queue]))
        interleaved.apply(queues[pick].pop(0), LATE_NOW)
    assert _outcome(interleaved) == _outcome(in_order)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chosen=scripts, data=st.data())
def test_the_deadline_check_at_any_point_changes_no_answer(
    chosen: list[str], data: st.DataObject
) -> None:
    streams = [_script_actions(name, index) for index, name in enumerate(chosen)]
    without = Harness()
    checked = Harness()
    for stream in streams:
        identity = stream[0]["request_id"]
        check_at = data.draw(st.integers(min_value=0, max_value=len(stream)))
        for position, record in enumerate(stream):
            if position == check_at:
                checked.due(identity, LATE_NOW)
            without.apply(record, LATE_NOW)
            checked.apply(record, LATE_NOW)
        if check_at == len(stream):
            checked.due(identity, LATE_NOW)
    assert _outcome(checked) == _outcome(without)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chosen=scripts, data=st.data())
def test_a_duplicate_changes_nothing_and_a_reprocessed_action_sends_the_same_records(
    chosen: list[str], data: st.DataObject
) -> None:
    streams = [_script_actions(name, index) for index, name in enumerate(chosen)]
    once = Harness()
    twice = Harness()
    sent_once: set[str] = set()
    sent_twice: set[str] = set()

    def ids(output: AssistanceOutput) -> set[str]:
        return {
            f"{out.record_type}|{out.key}|{sorted(out.value.items())}" for out in output.outgoing
        }

    for stream in streams:
        for record in stream:
            sent_once |= ids(once.apply(record, LATE_NOW))
            first = ids(twice.apply(record, LATE_NOW))
            sent_twice |= first
            how = data.draw(st.sampled_from(["none", "reprocessed", "sent again"]))
            if how == "reprocessed":  # the same record at the same offset, after a crash
                assert ids(twice.apply(record, LATE_NOW)) == first  # what it sent, again
            elif how == "sent again":  # the department sent it twice: a new offset
                copy_of = {**record, "received_id": f"{record['received_id']}-again"}
                again = twice.apply(copy_of, LATE_NOW)
                assert not [
                    out for out in again.outgoing if out.record_type != "rejected_assistance_action"
                ]
                sent_twice |= ids(again)
    assert _outcome(twice) == _outcome(once)
    sent_twice_kept = {
        line for line in sent_twice if not line.startswith("rejected_assistance_action")
    }
    sent_once_kept = {
        line for line in sent_once if not line.startswith("rejected_assistance_action")
    }
    assert sent_twice_kept == sent_once_kept


def test_states_are_the_schemas() -> None:
    from schemas import ASSISTANCE_RECORD_TYPES

    fields = {f["name"]: f for f in ASSISTANCE_RECORD_TYPES["assistance_request"].schema["fields"]}
    symbols = set(fields["state"]["type"]["symbols"]) - {"UNKNOWN"}
    assert symbols == {state.value for state in AssistanceState}


# -- 定期协助: each period of a standing duty is a request of its own -------------------------

#: Monday 7 December 2026, 10:00 in the province.
DECEMBER = millis(datetime(2026, 12, 7, 10, 0, tzinfo=CHINA))


def test_each_cadence_names_the_last_period_that_ended() -> None:
    from streams.assistance.rules import ended_period

    first_of = {
        "MONTHLY": ("2026-11", datetime(2026, 12, 1, tzinfo=CHINA)),
        "QUARTERLY": ("2026-Q3", datetime(2026, 10, 1, tzinfo=CHINA)),
        "HALF_YEARLY": ("2026-H1", datetime(2026, 7, 1, tzinfo=CHINA)),
        "YEARLY": ("2025", datetime(2026, 1, 1, tzinfo=CHINA)),
    }
    for cadence, (label, ended) in first_of.items():
        assert ended_period(cadence, DECEMBER) == (label, millis(ended))
    # At 00:30 on 1 January in China (16:30 UTC the day before) December has ended.
    assert (
        ended_period("MONTHLY", millis(datetime(2027, 1, 1, 0, 30, tzinfo=CHINA)))[0] == "2026-12"
    )


def _period_due(item_code: str) -> dict[str, Any]:
    from streams.assistance.rules import periods_due

    [due] = [due for due in periods_due(_list(), DECEMBER) if due["item_code"] == item_code]
    return due


def test_a_monthly_water_quality_duty_makes_its_request_when_the_month_ends() -> None:
    harness = Harness()
    due = _period_due("HZXZ-105")  # 农村生活污水处理设施进出水水质监测数据, monthly, 10 days
    out = harness.rules.on_due(due)
    [(request, told)] = sent(out, "assistance_request")
    assert told == ("hz-eco",)
    assert request["requesting_department"]["code"] == "hz-agri"
    assert request["request_reference"] == "HZXZ-105/2026-11"
    assert request["requested_at"] == millis(datetime(2026, 12, 1, tzinfo=CHINA))
    assert request["deadline"] == millis(datetime(2026, 12, 12, tzinfo=CHINA))  # 24:00 on 11th
    assert harness.rules.on_due(due).outgoing == out.outgoing  # the same request, not a second
    delivered = harness.act(
        "hz-eco",
        "COMPLETE",
        at=DECEMBER,
        now=DECEMBER,
        request_id=due["request_id"],
        attachments=[
            {"name": "2026-11水质监测.xlsx", "uri": "https://eco.example/m/11", "sha256": None}
        ],
    )
    assert sent(delivered, "assistance_request")[0][0]["in_time"] is True


def test_a_missed_quarterly_delivery_is_escalated() -> None:
    harness = Harness()
    due = _period_due("HZXZ-104")  # 地下管线安全隐患排查结果通报, quarterly, 15 days
    harness.rules.on_due(due)
    out = harness.due(due["request_id"], DECEMBER)  # Q3's was due at 24:00 on 16 October
    [(escalation, told)] = sent(out, "assistance_escalation")
    assert told == ("hz-housing", HZ_BB)
    assert escalation["deadline"] == millis(datetime(2026, 10, 17, tzinfo=CHINA))


def test_a_duty_to_a_sector_or_a_retired_item_makes_no_period_request() -> None:
    from streams.assistance.rules import periods_due

    codes = {due["item_code"] for due in periods_due(_list(), DECEMBER)}
    assert codes == {
        item["code"]
        for item in _list().by_code.values()
        if item["cadence"] and item["requesting_department"]
    }
    assert "HZXZ-001" not in codes  # on request only
