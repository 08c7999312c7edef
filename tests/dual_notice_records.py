"""Records for the 双告知 tests and benchmark: registrations, licences and department
actions of the sample province, as the connectors and the departments would send them."""

from __future__ import annotations

import random
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from registry.seed import load_sample_province
from streams.directory import DepartmentDirectory
from streams.dual_notice.rules import (
    ApprovalCatalog,
    registered_entity,
    registration_key,
)
from xietong.clock import business_clock
from xietong.ids import deterministic_id
from xietong.uscc import make_uscc

PROVINCE = load_sample_province()


def sample_catalog() -> ApprovalCatalog:
    """The sample province's approval catalog, as registry.approval-items carries it."""
    records = []
    for item in PROVINCE.approval_items:
        routes = []
        for division, code in PROVINCE.routing.get(item.code, {}).items():
            department = PROVINCE.department(code)
            routes.append(
                {
                    "division_code": division,
                    "department_code": code,
                    "department_uscc": department.uscc,
                    "department_name": department.name,
                }
            )
        records.append(
            {
                "code": item.code,
                "name": item.name,
                "legal_basis": item.legal_basis,
                "certificate_name": item.certificate_name,
                "scope_wordings": list(item.match.scope),
                "industry_codes": list(item.match.industry),
                "routes": routes,
            }
        )
    return ApprovalCatalog(records)


def sample_directory() -> DepartmentDirectory:
    """The sample province's departments, as registry.departments carries them."""
    return DepartmentDirectory(
        {"code": department.code, "uscc": department.uscc, "name": department.name}
        for department in PROVINCE.departments
    )


def key_of(registration: dict[str, Any]) -> str:
    """The business key of a registration event (USCC | kind | day), as push ids use it."""
    return registration_key(registered_entity(registration, None))


def received(department: str, action: dict[str, Any], offset: int) -> dict[str, Any]:
    """A department action as the relay forwards it from the department's inbound topic."""
    topic = f"dept.{department}.inbound"
    return {
        "received_id": deterministic_id(f"dual-notice-action|{topic}|0|{offset}"),
        "department_code": department,
        "inbound_topic": topic,
        "inbound_partition": 0,
        "inbound_offset": offset,
        "received_at": action["acted_at"],
        "action": action,
    }


def registration(
    division: str = "330106",
    permit: tuple[str, ...] = (),
    general: tuple[str, ...] = ("日用百货销售",),
    *,
    industry: str = "F5211",
    kind: str = "ESTABLISH",
    uscc: str | None = None,
    status: str | None = None,
    event_time_ms: int | None = None,
    event_id: str | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """A registration event of the registration authority (市场监管) of ``division``."""
    authority = PROVINCE.department_of("market_regulation", division)
    assert authority is not None, division
    clock = business_clock()
    moment = event_time_ms if event_time_ms is not None else clock.now_ms()
    day = clock.day_of(moment)
    items = [{"text": text, "kind": "PERMIT", "catalog_code": None} for text in permit]
    items += [{"text": text, "kind": "GENERAL", "catalog_code": None} for text in general]
    scope = (
        f"许可项目：{'；'.join(permit)}。" if permit else ""
    ) + f"一般项目：{'；'.join(general)}。"
    record_id = uuid.UUID(int=(rng or random).getrandbits(128)).hex
    return {
        "envelope": {
            "event_id": event_id or str(uuid.UUID(int=(rng or random).getrandbits(128))),
            "source_department_uscc": authority.uscc,
            "source_department_name": authority.name,
            "source_system": "test-registration-system",
            "source_record_id": record_id,
            "record_version": "1",
            "source_partition": "test",
            "source_offset": record_id,
            "event_time": moment,
            "ingest_time": clock.now_ms(),
        },
        "event_kind": kind,
        "event_date": day,
        "uscc": uscc or make_uscc("91", division, rng=rng),
        "name": "杭州测试货运有限公司",
        "entity_type": "LIMITED_LIABILITY",
        "legal_representative": "张三",
        "registered_capital": Decimal("100.000000"),
        "established_on": day,
        "operating_term_end": None,
        "address": "浙江省杭州市西湖区文三路1号",
        "division_code": division,
        "business_scope": scope,
        "business_scope_items": items,
        "industry_code": industry,
        "registering_authority_name": authority.name,
        "registering_authority_uscc": authority.uscc,
        "status": status or ("CANCELLED" if kind == "CANCEL" else "ACTIVE"),
    }


def licence(
    uscc: str,
    item_code: str,
    authority_code: str,
    *,
    status: str = "VALID",
    valid_to: date | None = None,
    number: str | None = None,
    version: str = "1",
    decided_on: date | None = None,
) -> dict[str, Any]:
    """A licence (行政许可) for the entity and the approval item, by a department, decided
    (and valid from) ``decided_on`` (today if absent); its 注销 or 吊销 is the same
    licence ``number`` at a later ``version``."""
    authority = PROVINCE.department(authority_code)
    item = PROVINCE.approval_item(item_code)
    clock = business_clock()
    today, now = clock.today(), clock.now_ms()
    number = number or f"{item_code}-{uuid.uuid4().hex[:10]}"
    return {
        "envelope": {
            "event_id": str(uuid.uuid4()),
            "source_department_uscc": authority.uscc,
            "source_department_name": authority.name,
            "source_system": "test-licensing-system",
            "source_record_id": number,
            "record_version": version,
            "source_partition": "test",
            "source_offset": number,
            "event_time": now,
            "ingest_time": now,
        },
        "uscc": uscc,
        "holder_name": "杭州测试货运有限公司",
        "legal_representative": "张三",
        "decision_document_name": f"{item.name}决定书",
        "decision_document_number": f"决字〔2026〕{number}",
        "category": item.category,
        "certificate_name": item.certificate_name,
        "licence_number": number,
        "content": item.name,
        "approval_item_code": item_code,
        "decided_on": decided_on or today,
        "valid_from": decided_on or today,
        "valid_to": valid_to,
        "authority_name": authority.name,
        "authority_uscc": authority.uscc,
        "status": status,
        "data_source_name": authority.name,
        "data_source_uscc": authority.uscc,
    }


def action(
    uscc: str,
    push_id: str,
    kind: str,
    *,
    reason: str | None = None,
    text: str | None = None,
    target: str | None = None,
    acted_at_ms: int | None = None,
    action_id: str | None = None,
) -> dict[str, Any]:
    """A department action (认领、退回 …) as the department's system writes it."""
    return {
        "action_id": action_id or str(uuid.uuid4()),
        "uscc": uscc,
        "push_id": push_id,
        "action": kind,
        "return_reason": reason,
        "reason_text": text,
        "target_department_code": target,
        "acted_at": acted_at_ms if acted_at_ms is not None else business_clock().now_ms(),
        "operator": "李四",
    }
