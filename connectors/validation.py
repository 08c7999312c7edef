"""The rules every canonical record must satisfy, shared by every connector.

A :class:`Problem` names the canonical field at fault, a machine-readable code and a
sentence for people. :func:`validate` applies the domain rules to a mapped record —
USCC check characters (GB 32100, with the GB 11714 organization-code check inside),
date order, non-negative amounts, division codes — and returns every problem, not just
the first. Conversion problems (not a date in its formats, unknown code, missing field) are
found earlier, while mapping; a record is published only when both lists are empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

from xietong.uscc import UsccProblem, uscc_problems


@dataclass(frozen=True)
class Problem:
    """Why a record cannot be accepted: which field, which rule, in words."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


Rule = Callable[[dict[str, Any]], list[Problem]]

# (earlier, later) date fields that must be in order when both are present.
DATE_ORDER: dict[str, list[tuple[str, str]]] = {
    "registration": [("established_on", "operating_term_end")],
    "licence": [("valid_from", "valid_to"), ("decided_on", "valid_to")],
    "penalty": [("decided_on", "publicity_until")],
    "credit_list_entry": [("listed_on", "planned_removal_on"), ("listed_on", "removed_on")],
}

AMOUNT_FIELDS: dict[str, list[str]] = {
    "registration": ["registered_capital"],
    "penalty": ["fine_amount", "confiscated_amount"],
}

USCC_FIELDS: dict[str, list[str]] = {
    "registration": ["uscc", "registering_authority_uscc"],
    "licence": ["uscc", "authority_uscc", "data_source_uscc"],
    "penalty": ["uscc", "authority_uscc", "data_source_uscc"],
    "credit_list_entry": ["uscc", "listing_authority_uscc"],
}


def check_uscc(field: str, value: Any) -> list[Problem]:
    """Problems of one USCC-valued field, each naming the field."""
    if value is None:
        return []
    problems = _uscc_problems(value) if isinstance(value, str) else uscc_problems(value)
    return [Problem(field, p.code, f"{field}: {p.message}") for p in problems]


@lru_cache(maxsize=65536)
def _uscc_problems(value: str) -> tuple[UsccProblem, ...]:
    # Department codes repeat on every row and entities on many: check each code once.
    return tuple(uscc_problems(value))


def _date_order(record_type: str) -> Rule:
    pairs = DATE_ORDER.get(record_type, [])

    def rule(fields: dict[str, Any]) -> list[Problem]:
        problems = []
        for earlier, later in pairs:
            start, end = fields.get(earlier), fields.get(later)
            if isinstance(start, date) and isinstance(end, date) and start > end:
                problems.append(
                    Problem(
                        later,
                        "date.order",
                        f"{later} {end.isoformat()} is before {earlier} {start.isoformat()}",
                    )
                )
        return problems

    return rule


def _amounts(record_type: str) -> Rule:
    names = AMOUNT_FIELDS.get(record_type, [])

    def rule(fields: dict[str, Any]) -> list[Problem]:
        return [
            Problem(name, "amount.negative", f"{name} is {fields[name]} 万元, cannot be negative")
            for name in names
            if isinstance(fields.get(name), Decimal) and fields[name] < 0
        ]

    return rule


def _usccs(record_type: str) -> Rule:
    names = USCC_FIELDS.get(record_type, [])

    def rule(fields: dict[str, Any]) -> list[Problem]:
        return [problem for name in names for problem in check_uscc(name, fields.get(name))]

    return rule


def _division(fields: dict[str, Any]) -> list[Problem]:
    code = fields.get("division_code")
    if code is None or (len(code) == 6 and code.isdigit() and code[:2] != "00"):
        return []
    return [
        Problem(
            "division_code",
            "division.invalid",
            f"division_code {code!r} is not a 6-digit GB/T 2260 division code",
        )
    ]


def _removal(fields: dict[str, Any]) -> list[Problem]:
    if fields.get("action") != "REMOVED":
        return []
    return [
        Problem(name, "required", f"{name} is required when the entry is removed (移出)")
        for name in ("removed_on", "removal_reason")
        if fields.get(name) is None
    ]


def _rules(record_type: str) -> list[Rule]:
    rules = [_usccs(record_type), _date_order(record_type), _amounts(record_type)]
    if record_type == "registration":
        rules.append(_division)
    if record_type == "credit_list_entry":
        rules.append(_removal)
    return rules


_RULES: dict[str, list[Rule]] = {name: _rules(name) for name in USCC_FIELDS}


def validate(record_type: str, fields: dict[str, Any]) -> list[Problem]:
    """Every domain rule the mapped record breaks; empty when it may be published."""
    return [problem for rule in _RULES[record_type] for problem in rule(fields)]
