"""What the pages show: the inbox's items as a clerk reads them, and the Chinese labels.

The desk (``connectors/inbox``'s read side) gives an item as the inbox holds it; an
:class:`Item` adds only what a page needs to say at a glance — its kind's label, its
deadline and whether it has passed — and keeps the record whole for the detail page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: The labels clerks read, by the codes of the records (kinds, states, outcomes).
LABELS: dict[str, str] = {
    # kinds of inbox item (connectors.inbox.items.InboxKind)
    "push": "双告知推送",
    "hit": "限制命中",
    "sanction_notice": "惩戒告知",
    "licence_review": "许可审查告知",
    "lift_notice": "解除惩戒告知",
    "closure_notice": "注销吊销告知",
    "alert": "督办预警",
    # push states (cn.gov.xietong.dualnotice.PushState)
    "PUSHED": "待认领",
    "OVERDUE": "逾期未认领",
    "CLAIMED": "已认领",
    "RETURNED": "已退回",
    "REASSIGNED": "已改派",
    "STOPPED": "已终止",
    "UNLICENSED": "疑似无证经营",
    "FULFILLED": "已发证",
    "CLOSED": "已关闭",
    # restriction hits: their feedback while they stand, or WITHDRAWN
    "APPLIED": "已实施限制",
    "NOT_APPLICABLE": "不适用",
    "NOT_REQUIRED": "无需反馈",
    "WITHDRAWN": "已撤回",
    # notices and alerts
    "NOTIFIED": "已告知",
    "ACTIVE": "有效",
    # registration kinds
    "ESTABLISH": "设立",
    "CHANGE": "变更",
    "CANCEL": "注销",
}
#: A hit's PENDING is its feedback not given yet; an action's, its outcome not known yet.
HIT_PENDING = "待反馈"
OUTCOME_LABELS = {"PENDING": "处理中", "APPLIED": "已生效", "REJECTED": "未通过"}

#: 退回原因 (cn.gov.xietong.dualnotice.ReturnReason), as the return form offers them.
RETURN_REASONS: dict[str, str] = {
    "NO_SUCH_ITEM": "经营范围内无此审批事项",
    "SCOPE_NOT_IN_JURISDICTION": "经营范围不在本部门管辖范围内",
    "ADDRESS_NOT_IN_JURISDICTION": "地址不在本部门管辖范围内",
    "OTHER": "其他（请在说明中写明）",
}

#: What the processor lets a department do to its push in each state (streams/dual_notice).
CLAIMABLE_STATES = frozenset({"PUSHED", "OVERDUE"})
STOPPABLE_STATES = frozenset({"PUSHED", "OVERDUE", "CLAIMED", "UNLICENSED"})


def state_label(kind: str, state: str | None) -> str:
    """A state as clerks name it (a hit's PENDING is 待反馈)."""
    if state is None:
        return ""
    if kind == "hit" and state == "PENDING":
        return HIT_PENDING
    return LABELS.get(state, state)


@dataclass(frozen=True)
class Item:
    """One item of the department's inbox, as its latest version stands."""

    id: str
    kind: str
    state: str
    uscc: str
    entity_name: str | None
    title: str
    deadline: datetime | None
    overdue: bool
    record: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    #: For a push: the registration it came from (the credit database's row), and the
    #: approval item it needs from the catalog (code, name, legal basis, certificate).
    registration: dict[str, Any] | None = None
    approval_item: dict[str, Any] | None = None
    #: For a hit: the measure from the catalog (code, text, legal basis), and the name of
    #: the matter's type (政府采购 …).
    measure: dict[str, Any] | None = None
    matter_type_name: str | None = None

    @property
    def kind_label(self) -> str:
        return LABELS.get(self.kind, self.kind)

    @property
    def state_label(self) -> str:
        return state_label(self.kind, self.state)

    @property
    def is_push(self) -> bool:
        return self.kind == "push"

    @property
    def is_hit(self) -> bool:
        return self.kind == "hit"

    @property
    def claimable(self) -> bool:
        """Whether 认领 and 退回 are offered (the processor would apply them)."""
        return self.is_push and self.state in CLAIMABLE_STATES

    @property
    def stoppable(self) -> bool:
        return self.is_push and self.state in STOPPABLE_STATES

    @property
    def awaits_feedback(self) -> bool:
        """Whether the 反馈 form is offered: a standing hit (the latest feedback counts)."""
        return self.is_hit and self.state in ("PENDING", "APPLIED", "NOT_APPLICABLE")


@dataclass(frozen=True)
class InboxPage:
    """One page of the inbox, and the cursor of the next (None: the last page)."""

    items: list[Item]
    next_cursor: str | None


@dataclass(frozen=True)
class Outcome:
    """What became of an action the clerk sent: PENDING until the processor decided."""

    action_id: str
    state: str
    reason: str | None = None

    @property
    def label(self) -> str:
        return OUTCOME_LABELS.get(self.state, self.state)


@dataclass(frozen=True)
class Figures:
    """The department's own figures (the auditor views' definitions: COOKBOOK.md)."""

    pushes: int
    claimed: int
    claim_rate: float | None
    overdue: int
    hits_expecting_feedback: int
    fed_back: int
    feedback_rate: float | None
    overdue_feedback: int

    @staticmethod
    def percent(rate: float | None) -> str:
        return "—" if rate is None else f"{rate * 100:.1f}%"
