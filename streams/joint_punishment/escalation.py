"""经营异常名录届满三年: the proposal to list an entity on the 严重违法失信名单.

An entity listed in the 经营异常名录 for three years without the listing being removed is
to be listed on the serious list (《企业信息公示暂行条例》 第十八条;
《市场监督管理严重违法失信名单管理办法》).
The platform does not list it: it sends the listing authority a **列入严重违法失信名单建议**
(``serious_listing_proposal`` on ``punishment.serious-listing-proposals``, and to that
department's inbox) with its basis — the 经营异常 listing, its 列入日期, the law — and the
department decides (its 列入, if it lists, comes back on ``credit.list-entries`` as any
other).

* **The three years** count as the law counts (《民法典》 第二百零一、二百零二条,
  :func:`xietong.clock.months_later`): from the day after the 列入日期 to the end of the
  corresponding day three years later. The proposal is due at the start of the next day
  (:func:`escalation_due_on`), in the province's time zone, and a timer tick at or after
  that instant sends it, once (its id is the listing's).
* **Removed before the day** (移出, its planned end, or a 撤销 that voids it from its
  start): nothing is sent, and the timer is not set again. A backdated removal read after
  the proposal was sent shows the three years were never complete: the proposal is
  republished ``WITHDRAWN``.
* **Who is told**: the department that made the 经营异常 listing (its listing authority's
  USCC, in ``registry.departments``), else the registration authority (市场监管,
  ``registration_authority_sector``) seated nearest the entity's division;
  ``recipient_basis`` says which.
* **History**: a proposal due at or before the cut-over is recorded as history (counted in
  ``xietong_joint_punishment_history_total{output="serious_listing_proposal"}``) and sent
  to nobody.

Pure values in, values out; the rules (:mod:`.rules`) call it from their derivation.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from xietong.clock import epoch_day, from_epoch_day, months_later
from xietong.ids import deterministic_id

#: The list whose listings escalate, the list they are proposed for, after how long.
ESCALATING_LIST = "ABNORMAL_OPERATION"
PROPOSED_LIST = "SERIOUS_ILLEGAL_DISHONEST"
ESCALATION_YEARS = 3
ESCALATION_BASIS = (
    "《企业信息公示暂行条例》第十八条；《市场监督管理严重违法失信名单管理办法》"
    "（国家市场监督管理总局令第44号）：被列入经营异常名录满三年仍未履行相关义务的，"
    "列入严重违法失信名单"
)
LISTING_AUTHORITY = "LISTING_AUTHORITY"
REGISTRATION_AUTHORITY = "REGISTRATION_AUTHORITY"


@lru_cache(maxsize=65_536)
def serious_listing_proposal_id(entry_id: str) -> str:
    """建议标识: one proposal per 经营异常 listing."""
    return deterministic_id(f"serious-listing-proposal|{entry_id}")


def escalation_last_day(listed_on: int) -> int:
    """The last day (an epoch day) of the three years a listing of ``listed_on`` counts."""
    return epoch_day(months_later(from_epoch_day(listed_on), 12 * ESCALATION_YEARS))


def escalation_due_on(listed_on: int) -> int:
    """The day (an epoch day) the proposal is due: the day after the three years."""
    return escalation_last_day(listed_on) + 1


def escalates(list_type: str, end: int | None, due_on: int) -> bool:
    """Whether a listing is proposed: an 经营异常 listing that still stood when its three
    years were over (``end``, its first day no longer in force, is after the last day)."""
    return list_type == ESCALATING_LIST and (end is None or end >= due_on)


def proposal(
    *,
    identity: str,
    uscc: str,
    entity_name: str,
    listing: dict[str, Any],
    proposed_list_name: str,
    department: dict[str, str],
    recipient_basis: str,
    proposed_at: int,
) -> dict[str, Any]:
    """The ``serious_listing_proposal`` record (``listing`` is the listing's ListingRef)."""
    last_day = escalation_last_day(int(listing["listed_on"]))
    listed = from_epoch_day(int(listing["listed_on"])).isoformat()
    return {
        "proposal_id": identity,
        "status": "PROPOSED",
        "uscc": uscc,
        "entity_name": entity_name,
        "listing": listing,
        "proposed_list_type": PROPOSED_LIST,
        "proposed_list_name": proposed_list_name,
        "years_listed": ESCALATION_YEARS,
        "last_day": last_day,
        "due_on": last_day + 1,
        "department": department,
        "recipient_basis": recipient_basis,
        "legal_basis": ESCALATION_BASIS,
        "message": (
            f"{entity_name}（{uscc}）自{listed}列入经营异常名录"
            f"（{listing['document_number']}），满{ESCALATION_YEARS}年未移出，"
            f"建议列入{proposed_list_name}，请{department['name']}依法决定"
        ),
        "proposed_at": proposed_at,
        "withdrawn_reason": None,
    }
