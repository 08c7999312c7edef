"""Records for the 行政协助 tests: the sample province's assistance list and departments as
the registry publishes them, and the departments' actions as their systems write them."""

from __future__ import annotations

from typing import Any

from registry.seed import load_sample_province
from streams.assistance.records import assistance_action, forwarded
from streams.assistance.rules import AssistanceList
from streams.directory import DepartmentDirectory
from xietong.ids import deterministic_id

PROVINCE = load_sample_province()


def _ref(code: str) -> dict[str, str]:
    department = PROVINCE.department(code)
    return {"code": code, "uscc": department.uscc, "name": department.name}


def sample_list() -> AssistanceList:
    """The sample province's assistance list, as registry.assistance-items carries it."""
    return AssistanceList(
        {
            "code": item.code,
            "batch": item.batch,
            "name": item.name,
            "requesting_sector": item.requesting_sector,
            "requesting_department": (
                _ref(item.requesting_department) if item.requesting_department else None
            ),
            "assisting_department": _ref(item.assisting),
            "supervising_department": _ref(item.supervisor),
            "content": item.content,
            "time_limit_days": item.time_limit_days,
            "working_days": item.working_days,
            "cadence": item.cadence,
            "legal_basis": item.legal_basis,
            "version": 1,
            "retired_at": None,
            "retired_reason": None,
            "updated_at": 0,
        }
        for item in PROVINCE.assistance_items
    )


def sample_directory() -> DepartmentDirectory:
    """The sample province's departments, as registry.departments carries them."""
    return DepartmentDirectory(
        {
            "code": department.code,
            "uscc": department.uscc,
            "name": department.name,
            "sector_code": department.sector,
            "division_code": department.division,
        }
        for department in PROVINCE.departments
    )


__all__ = ["assistance_action", "received", "sample_directory", "sample_list"]


def received(department: str, action: dict[str, Any], offset: int) -> dict[str, Any]:
    """An action as the relay forwards it from the department's inbound topic."""
    topic = f"dept.{department}.inbound"
    stamp = {
        "received_id": deterministic_id(f"assistance-action|{topic}|0|{offset}"),
        "department_code": department,
        "inbound_topic": topic,
        "inbound_partition": 0,
        "inbound_offset": offset,
        "received_at": action["acted_at"],
    }
    return forwarded(stamp, action)[1]
