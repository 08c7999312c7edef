"""Records for the credit-check tests and benchmark: list entries (列入/移出) as the credit
authority's connector sends them, and the sample province's measures and list types as
the registry publishes them."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, time
from typing import Any

from registry.seed import load_sample_province
from xietong.uscc import make_uscc

PROVINCE = load_sample_province()
#: 杭州市市场监督管理局 lists on the serious list; 浙江省发展和改革委员会 publishes the entries.
LISTING_AUTHORITY = PROVINCE.department("hz-amr")
CREDIT_AUTHORITY = PROVINCE.department("zj-drc")


def list_entry(
    uscc: str,
    listed_on: date,
    *,
    action: str = "LISTED",
    list_type: str = "SERIOUS_ILLEGAL_DISHONEST",
    planned_removal_on: date | None = None,
    removed_on: date | None = None,
    removal_reason: str | None = None,
    entry_id: str | None = None,
    event_time: datetime | None = None,
    rng: random.Random | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """A ``credit_list_entry`` record; a 移出 gets its removal reason (期满) by default. A
    correction is the same entry at a later ``version`` (by default the version is the
    action's name, which orders nothing)."""
    entry_id = entry_id or f"LIST-{uuid.UUID(int=(rng or random).getrandbits(128)).hex[:12]}"
    moment = event_time or datetime.combine(removed_on or listed_on, time.min, UTC)
    if action == "REMOVED" and removal_reason is None:
        removal_reason = "EXPIRY"
    return {
        "envelope": {
            "event_id": str(uuid.UUID(int=(rng or random).getrandbits(128))),
            "source_department_uscc": CREDIT_AUTHORITY.uscc,
            "source_department_name": CREDIT_AUTHORITY.name,
            "source_system": "test-credit-system",
            "source_record_id": entry_id,
            "record_version": version or action,
            "source_partition": "test",
            "source_offset": entry_id,
            "event_time": moment,
            "ingest_time": datetime.now(UTC),
        },
        "entry_id": entry_id,
        "action": action,
        "list_type": list_type,
        "uscc": uscc,
        "entity_name": "杭州测试失信有限公司",
        "listing_authority_name": LISTING_AUTHORITY.name,
        "listing_authority_uscc": LISTING_AUTHORITY.uscc,
        "reason": "提供虚假材料取得行政许可",
        "legal_basis": "《市场监督管理严重违法失信名单管理办法》第九条",
        "document_number": f"杭市监信〔2025〕{entry_id[-4:]}号",
        "listed_on": listed_on,
        "planned_removal_on": planned_removal_on,
        "removed_on": removed_on,
        "removal_reason": removal_reason,
    }


def removal_of(
    listing: dict[str, Any],
    removed_on: date,
    reason: str = "CREDIT_REPAIR",
    version: str | None = None,
) -> dict:
    """The 移出 of a listing: the same entry, its removal day and reason (and version)."""
    removed = list_entry(
        listing["uscc"],
        listing["listed_on"],
        action="REMOVED",
        list_type=listing["list_type"],
        planned_removal_on=listing["planned_removal_on"],
        removed_on=removed_on,
        removal_reason=reason,
        entry_id=listing["entry_id"],
        version=version,
    )
    return removed


def new_uscc(rng: random.Random | None = None) -> str:
    return make_uscc("91", "330106", rng=rng)


def measure_records() -> list[dict[str, Any]]:
    """The sample province's measures as ``registry.measures`` carries them."""
    return [
        {
            "code": measure.code,
            "text": measure.text,
            "legal_basis": measure.legal_basis,
            "implementing_sectors": list(measure.sectors),
            "list_types": list(measure.list_types),
            "matter_types": [
                {"code": code, "name": PROVINCE.matter_types[code]} for code in measure.matters
            ],
            "feedback_required": measure.feedback_required,
            "feedback_days": measure.feedback_days,
            "target": measure.target,
            "roles": list(measure.roles),
        }
        for measure in PROVINCE.measures
    ]


def list_type_records() -> list[dict[str, Any]]:
    """The sample province's credit lists as ``registry.list-types`` carries them (the
    seed's fields, by the same names)."""
    return [
        {**row.model_dump(), "listing_sectors": list(row.listing_sectors)}
        for row in PROVINCE.list_types
    ]
