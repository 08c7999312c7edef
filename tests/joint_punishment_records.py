"""Records for the joint-punishment tests and benchmark: list entries, penalties, matter
events and feedback of the sample province, as the connectors, the credit-check API and
the departments would send them; and the sample catalog as the registry publishes it."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from registry.seed import load_sample_province
from streams.joint_punishment.rules import PunishmentCatalog
from tests.credit_check_records import measure_records
from xietong.clock import business_clock
from xietong.ids import matter_event_id

PROVINCE = load_sample_province()
DAY_MS = 86_400_000


def today() -> date:
    """The province's today (the business clock's)."""
    return business_clock().today()


def midnight_ms(day: date) -> int:
    """00:00 of ``day`` in the province."""
    return business_clock().midnight_ms(day)


def sample_catalog() -> PunishmentCatalog:
    """The sample province's measures, lists and departments as the registry's topics carry them."""
    measures = measure_records()
    list_types = [{"code": t.code, "name": t.name} for t in PROVINCE.list_types]
    departments = [
        {
            "code": d.code,
            "uscc": d.uscc,
            "name": d.name,
            "sector_code": d.sector,
            "division_code": d.division,
        }
        for d in PROVINCE.departments
    ]
    return PunishmentCatalog(measures, list_types, departments)


def _envelope(source_code: str, record_id: str, event_time_ms: int, version: str = "1") -> dict:
    source = PROVINCE.department(source_code)
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source_code}|{record_id}|{version}")),
        "source_department_uscc": source.uscc,
        "source_department_name": source.name,
        "source_system": "test-system",
        "source_record_id": record_id,
        "record_version": version,
        "source_partition": "test",
        "source_offset": record_id,
        "event_time": event_time_ms,
        "ingest_time": business_clock().now_ms(),
    }


def list_entry(
    uscc: str,
    entry_id: str,
    *,
    action: str = "LISTED",
    list_type: str = "SERIOUS_ILLEGAL_DISHONEST",
    listed_on: date | None = None,
    planned_removal_on: date | None = None,
    removed_on: date | None = None,
    removal_reason: str | None = None,
    authority: str = "zj-amr",
    version: str = "1",
) -> dict[str, Any]:
    """A 列入 (or, with ``action="REMOVED"``, a 移出) of the listing ``entry_id``; a
    correction is the same record at a later ``version``."""
    listed_on = listed_on or today()
    moment = midnight_ms(removed_on if action == "REMOVED" and removed_on else listed_on)
    department = PROVINCE.department(authority)
    return {
        "envelope": _envelope(authority, f"{entry_id}|{action}", moment, version),
        "entry_id": entry_id,
        "action": action,
        "list_type": list_type,
        "uscc": uscc,
        "entity_name": "杭州测试失信有限公司",
        "listing_authority_name": department.name,
        "listing_authority_uscc": department.uscc,
        "reason": "提供虚假材料骗取登记",
        "legal_basis": "《市场监督管理严重违法失信名单管理办法》第九条",
        "document_number": f"列字〔2026〕{entry_id[-6:]}号",
        "listed_on": listed_on,
        "planned_removal_on": planned_removal_on,
        "removed_on": removed_on if action == "REMOVED" else None,
        "removal_reason": removal_reason if action == "REMOVED" else None,
    }


def removal_of(
    listing: dict[str, Any],
    removed_on: date | None = None,
    reason: str = "CREDIT_REPAIR",
    version: str = "1",
) -> dict[str, Any]:
    """The 移出 of ``listing`` (today by default): the same entry, its removal day and reason."""
    return list_entry(
        listing["uscc"],
        listing["entry_id"],
        action="REMOVED",
        list_type=listing["list_type"],
        listed_on=listing["listed_on"],
        planned_removal_on=listing["planned_removal_on"],
        removed_on=removed_on or today(),
        removal_reason=reason,
        version=version,
    )


def penalty(
    uscc: str,
    decision: str,
    *,
    categories: tuple[str, ...] = ("LICENCE_SUSPENSION_OR_REVOCATION",),
    decided_on: date | None = None,
    authority: str = "hz-xh-amr",
    legal_basis: str = "《中华人民共和国食品安全法》第一百二十二条",
    publicity_ended_on: date | None = None,
    publicity_end_reason: str | None = None,
    version: str = "1",
) -> dict[str, Any]:
    """A penalty ``decision``; its publicity ended early (信用修复) is the same penalty at a
    later ``version`` with ``publicity_ended_on`` and ``publicity_end_reason``."""
    decided_on = decided_on or today()
    department = PROVINCE.department(authority)
    return {
        "envelope": _envelope(authority, decision, midnight_ms(decided_on), version),
        "uscc": uscc,
        "party_name": "杭州测试失信有限公司",
        "legal_representative": "张三",
        "decision_number": decision,
        "violation_type": "无证经营",
        "violation_facts": "超范围经营",
        "legal_basis": legal_basis,
        "categories": list(categories),
        "content": "吊销食品经营许可证",
        "fine_amount": Decimal("1.500000"),
        "confiscated_amount": None,
        "affected_licence": "食品经营许可证 JY1330106",
        "decided_on": decided_on,
        "publicity_until": None,
        "publicity_ended_on": publicity_ended_on,
        "publicity_end_reason": publicity_end_reason,
        "authority_name": department.name,
        "authority_uscc": department.uscc,
        "data_source_name": department.name,
        "data_source_uscc": department.uscc,
    }


def licence(
    uscc: str,
    number: str,
    authority: str,
    *,
    status: str = "VALID",
    valid_from: date | None = None,
    valid_to: date | None = None,
    event_day: date | None = None,
    version: str = "1",
    status_changed_on: date | None = None,
) -> dict[str, Any]:
    """A licence (行政许可) ``number`` for the entity by the department ``authority``; its
    注销 or 吊销 is the same licence at a later ``version`` and another ``status``, on the
    day ``status_changed_on`` (absent: the department did not say)."""
    valid_from = valid_from or today() - timedelta(days=365)
    department = PROVINCE.department(authority)
    return {
        "envelope": _envelope(
            authority, f"{number}|{status}", midnight_ms(event_day or valid_from), version
        ),
        "uscc": uscc,
        "holder_name": "杭州测试失信有限公司",
        "legal_representative": "张三",
        "decision_document_name": "准予行政许可决定书",
        "decision_document_number": f"许字〔2026〕{number}",
        "category": "ORDINARY",
        "certificate_name": "食品经营许可证",
        "licence_number": number,
        "content": "食品销售",
        "approval_item_code": None,
        "decided_on": valid_from,
        "valid_from": valid_from,
        "valid_to": valid_to,
        "authority_name": department.name,
        "authority_uscc": department.uscc,
        "status": status,
        "status_changed_on": status_changed_on,
        "data_source_name": department.name,
        "data_source_uscc": department.uscc,
    }


def matter(
    uscc: str,
    department: str,
    matter_type: str,
    reference: str,
    *,
    matter_date: date | None = None,
    source: str = "DEPARTMENT_REPORT",
    occurred_at_ms: int | None = None,
) -> dict[str, Any]:
    """A department reports (or credit-checks) a matter it handles for the entity."""
    matter_date = matter_date or today()
    return {
        "event_id": matter_event_id(uscc, department, matter_type, reference, source),
        "uscc": uscc,
        "entity_name": "杭州测试失信有限公司",
        "department_code": department,
        "department_uscc": PROVINCE.department(department).uscc,
        "matter_type": matter_type,
        "matter_reference": reference,
        "matter_name": f"{reference} 项目",
        "matter_date": matter_date,
        "source": source,
        "credit_check_id": str(uuid.uuid4()) if source == "CREDIT_CHECK" else None,
        "occurred_at": (
            occurred_at_ms if occurred_at_ms is not None else midnight_ms(matter_date) + 3_600_000
        ),
    }


def feedback(
    uscc: str,
    hit_id: str,
    outcome: str = "APPLIED",
    *,
    reason: str | None = None,
    fed_back_at_ms: int | None = None,
    feedback_id: str | None = None,
) -> dict[str, Any]:
    """反馈 as the department's system writes it to its inbound topic."""
    return {
        "feedback_id": feedback_id or str(uuid.uuid4()),
        "uscc": uscc,
        "hit_id": hit_id,
        "outcome": outcome,
        "reason": reason,
        "fed_back_at": fed_back_at_ms if fed_back_at_ms is not None else business_clock().now_ms(),
        "operator": "李四",
    }


def received(department: str, record: dict[str, Any], offset: int = 0) -> dict[str, Any]:
    """The feedback as the relay puts it on punishment.feedback."""
    topic = f"dept.{department}.inbound"
    return {
        "received_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{topic}|{offset}")),
        "department_code": department,
        "inbound_topic": topic,
        "inbound_partition": 0,
        "inbound_offset": offset,
        "received_at": business_clock().now_ms(),
        "feedback": record,
    }


def registration(
    uscc: str,
    division: str,
    *,
    registered_on: date,
    version: str = "1",
    kind: str = "CHANGE",
    legal_representative: str = "张三",
) -> dict[str, Any]:
    """A registration (设立/变更) of ``uscc`` putting its 住所 in ``division``, version
    ``version`` of the registration authority's record of the entity (one record per
    USCC: a later 变更 is a later version of it)."""
    authority = PROVINCE.department_of("market_regulation", division)
    assert authority is not None, division
    moment = midnight_ms(registered_on) + 9 * 3_600_000
    envelope = _envelope(authority.code, f"REG-{uscc}", moment, version)
    return {
        "envelope": envelope,
        "event_kind": kind,
        "event_date": registered_on,
        "uscc": uscc,
        "name": "杭州测试科技有限公司",
        "entity_type": "LIMITED_LIABILITY",
        "legal_representative": legal_representative,
        "registered_capital": Decimal("100.000000"),
        "established_on": registered_on,
        "operating_term_end": None,
        "address": f"浙江省杭州市{division}测试路1号",
        "division_code": division,
        "business_scope": "一般项目：日用百货销售。",
        "business_scope_items": [],
        "industry_code": "F5211",
        "registering_authority_name": authority.name,
        "registering_authority_uscc": authority.uscc,
        "status": "ACTIVE",
    }
