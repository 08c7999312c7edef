"""信用修复的期限 (credit repair terms): the earliest day a listing or a penalty's publicity
may be repaired, and the refusal of a repair made before it. The one rule that the
joint-punishment processor (``streams/joint_punishment/rules.py``, on every 移出 and
penalty it reads) and the credit check (``streams/credit_check/rules.py``,
:func:`~streams.credit_check.rules.fold_entry`) both apply, so the two never disagree on
whether a listing still stands (domain brief §6, Credit repair)::

    from datetime import date
    refusal = listing_repair_refusal(
        entry_id="E-1", list_type="SERIOUS_ILLEGAL_DISHONEST", listed_on=date(2026, 1, 10),
        removed_on=date(2026, 6, 1), removal_reason="CREDIT_REPAIR",
    )
    refusal.earliest_on     # date(2027, 1, 11): a year counted from 11 January 2026
    refusal.message         # names the entry, the term and that earliest day

The terms:

* **严重违法失信名单**: 提前移出 (a 移出 with reason ``CREDIT_REPAIR``) only once the entity
  has been listed for a year (《市场监督管理严重违法失信名单管理办法》: 列入满一年). The
  registry's ``early_removal_after_years`` of the list type says the same
  (``tests/unit/test_credit_repair.py`` holds the two together). The other lists' repairs
  follow their own rules and have no term here.
* **行政处罚信息公示**: repairable (the penalty record re-sent with ``publicity_ended_on``
  and ``publicity_end_reason`` ``CREDIT_REPAIR``) after six months from the decision; after
  a year where the penalty concerns food, drugs or special equipment (食品、药品、特种设备).
  **Which sector a penalty concerns** is read from the penalty itself: its 处罚依据
  (``legal_basis``) or 违法行为类型 (``violation_type``) names the law of the sector —
  《食品安全法》, 《药品管理法》, 《疫苗管理法》, 《特种设备安全法》 and the regulations
  under them all contain 食品, 药品, 疫苗 or 特种设备. The record has no sector field, and
  the issuing department's sector would not tell (市场监管 enforces all three and others
  besides); the cited law always does.

A term counts as the law counts (《民法典》 第二百零一、二百零二条,
:func:`xietong.clock.months_later`): from the day after the start (the 列入日期, the
处罚决定日期) to the end of the corresponding day a year (six months) later; the repair
may take effect from the next day on (:func:`earliest_repair_day`). Only the record
decides, never the order records come in: a 移出 carries its listing's 列入日期 and list
type, a penalty its decision day and basis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from xietong.clock import from_epoch_day, months_later

CREDIT_REPAIR = "CREDIT_REPAIR"

#: The months a listing must have stood before 信用修复 may remove it, by list type.
LISTING_REPAIR_MONTHS = {"SERIOUS_ILLEGAL_DISHONEST": 12}
#: The months a penalty's publicity must have lasted before it may be repaired …
PENALTY_REPAIR_MONTHS = 6
#: … and for food, drugs and special equipment.
STRICT_PENALTY_REPAIR_MONTHS = 12
#: What the law cited by a penalty of those sectors contains.
STRICT_SECTOR_WORDS = ("食品", "药品", "疫苗", "特种设备")


@dataclass(frozen=True)
class RepairTooEarly:
    """A repair made before its term: what was repaired, when, and the earliest day it
    may be (the record stays in force until a repair on or after that day)."""

    record: str  # which record, for people: "名单条目 E-1（SERIOUS_ILLEGAL_DISHONEST）"
    started_on: date  # the 列入日期 or 处罚决定日期 the term runs from
    repaired_on: date
    term_months: int
    earliest_on: date

    @property
    def message(self) -> str:
        months = self.term_months
        term = f"{months // 12}年" if months % 12 == 0 else f"{months}个月"
        return (
            f"{self.record}: 信用修复 dated {self.repaired_on.isoformat()} is before its term"
            f" ({term} from {self.started_on.isoformat()}); it may be repaired on"
            f" {self.earliest_on.isoformat()} at the earliest — the record stays in force,"
            " send the repair again dated that day or later"
        )


def _day(value: date | int) -> date:
    return from_epoch_day(value) if isinstance(value, int) else value


def earliest_repair_day(started_on: date | int, months: int) -> date:
    """The first day a repair of a term of ``months`` starting on ``started_on`` may take
    effect: the day after the term's last day."""
    return months_later(_day(started_on), months) + timedelta(days=1)


def _refusal(
    record: str, started_on: date | int, repaired_on: date | int, months: int
) -> RepairTooEarly | None:
    earliest = earliest_repair_day(started_on, months)
    if _day(repaired_on) >= earliest:
        return None
    return RepairTooEarly(record, _day(started_on), _day(repaired_on), months, earliest)


def listing_repair_refusal(
    *,
    entry_id: str,
    list_type: str,
    listed_on: date | int,
    removed_on: date | int,
    removal_reason: str | None,
) -> RepairTooEarly | None:
    """Why a 移出 may not take effect, or None: a 信用修复 removal of a list with a repair
    term (:data:`LISTING_REPAIR_MONTHS`) dated before the term is over. ``removed_on`` is
    the removal's day (the record's, else the day of its event time)."""
    months = LISTING_REPAIR_MONTHS.get(list_type)
    if removal_reason != CREDIT_REPAIR or months is None:
        return None
    return _refusal(f"名单条目 {entry_id}（{list_type}）", listed_on, removed_on, months)


def penalty_repair_months(legal_basis: str, violation_type: str) -> int:
    """The repair term of a penalty's publicity: a year where its 处罚依据 or 违法行为类型
    names food, drugs or special equipment, six months otherwise."""
    text = f"{legal_basis} {violation_type}"
    if any(word in text for word in STRICT_SECTOR_WORDS):
        return STRICT_PENALTY_REPAIR_MONTHS
    return PENALTY_REPAIR_MONTHS


def penalty_repair_refusal(
    *,
    decision_number: str,
    decided_on: date | int,
    legal_basis: str,
    violation_type: str,
    publicity_ended_on: date | int | None,
    publicity_end_reason: str | None,
) -> RepairTooEarly | None:
    """Why a penalty record's 信用修复 of its publicity may not take effect, or None."""
    if publicity_end_reason != CREDIT_REPAIR or publicity_ended_on is None:
        return None
    months = penalty_repair_months(legal_basis, violation_type)
    return _refusal(f"行政处罚 {decision_number}", decided_on, publicity_ended_on, months)
