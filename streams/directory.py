"""The registry's departments as a processor looks them up (``registry.departments``, held
whole by :class:`streams.runtime.ReferenceData`): by code, by USCC, and by sector and
division. No metrics and no Kafka here, so any part may use it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class DepartmentDirectory:
    """The registry's departments, by code and by USCC (each as a ``DepartmentRef``), and
    by sector and division (the department of a sector seated in a division)."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.by_code: dict[str, dict[str, str]] = {}
        self.by_uscc: dict[str, dict[str, str]] = {}
        self.by_sector: dict[tuple[str, str], dict[str, str]] = {}
        #: Each department's sector and division code, by its code.
        self.seat: dict[str, tuple[str, str]] = {}
        for record in records:
            ref = {"code": record["code"], "uscc": record["uscc"], "name": record["name"]}
            self.by_code[ref["code"]] = ref
            self.by_uscc[ref["uscc"]] = ref
            seat = (record.get("sector_code", ""), record.get("division_code", ""))
            self.seat[ref["code"]] = seat
            self.by_sector.setdefault(seat, ref)
