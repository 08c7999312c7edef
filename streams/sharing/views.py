"""有条件共享: what a conditional subscription lets its department see of a record.

A department subscribed on conditions — chosen fields, division filters — receives a
*view* of the resource: only the records about entities in its divisions, only its
fields. This module is the rule, apart from the wiring (``processor.py``): plain
records in, the view's record (or nothing) out, and the view's Avro schema::

    grant = ViewGrant.of(subscription)                  # a registry.subscriptions record
    view = project(CREDIT_LIST_ENTRY, grant, record)    # a dict, or None: filtered out
    schema = view_schema(CREDIT_LIST_ENTRY, grant)      # registered under view_subject(…)

**What a view record holds.** The granted fields of the record, each as the canonical
record has it, and what makes it usable and traceable, always: ``uscc`` (统一社会信用代码,
also the record's key), ``view_event_id`` (this view record's id, derived from the
subscription and the source event, so a replay writes the same record), and from the
source envelope ``source_event_id`` and ``record_version``; plus ``subscription_id``,
the grant that shared it. A subscription that names no fields (a division filter alone)
gets every field.

**Where an entity is.** A registration says its 住所 division (``division_code``); the
other record types (licence, penalty, credit list entry) say none, so their entity is
where its USCC was issued: characters 3–8, the registering authority's GB/T 2260
division (:class:`xietong.uscc.Uscc`). A granted division covers itself and, for a
prefecture (``3301 00``) or a province (``33 0000``), every division under it.

**Why every view field is optional.** One subject per department and resource holds
the view's schemas as its approvals change: a narrowed grant drops fields, a widened one
adds them, and with every field ``["null", …]`` defaulting to null each such change is
compatible (BACKWARD_TRANSITIVE) for the department's readers.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry.grants import is_conditional
from schemas import CANONICAL_RECORD_TYPES, RecordType
from xietong.ids import deterministic_id
from xietong.topics import DepartmentTopic
from xietong.uscc import InvalidUsccError, Uscc

#: Record types whose records say where the entity is, and in which field; any other
#: record type's entity is where its USCC was issued.
DIVISION_FIELDS: dict[str, str] = {"registration": "division_code"}  # 住所行政区划代码

#: What every view record carries besides the granted fields, in this order.
VIEW_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("view_event_id", "string", "共享记录标识: derived from the subscription and the source event"),
    ("subscription_id", "long", "订阅标识: the conditional subscription that shared this record"),
    ("source_event_id", "string", "来源事件标识: the canonical record's envelope.event_id"),
    ("record_version", "string", "记录版本: the canonical record's envelope.record_version"),
    ("uscc", "string", "统一社会信用代码 (also the record key)"),
)

_AVRO_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class ViewGrant:
    """One subscription as the sharing processor follows it (``registry.subscriptions``)."""

    subscription_id: int
    department_code: str
    resource_code: str
    source_topic: str
    status: str
    fields: tuple[str, ...] | None  # None: every field
    divisions: tuple[str, ...] | None  # None: every division
    valid_until: datetime | None

    @classmethod
    def of(cls, subscription: Mapping[str, Any]) -> ViewGrant:
        """From a decoded ``cn.gov.xietong.registry.Subscription`` record."""
        fields = subscription.get("fields")
        divisions = (subscription.get("filters") or {}).get("divisions")
        return cls(
            subscription_id=int(subscription["subscription_id"]),
            department_code=subscription["subscriber_code"],
            resource_code=subscription["resource_code"],
            source_topic=subscription["topic"],
            status=subscription["status"],
            fields=None if fields is None else tuple(fields),
            divisions=None if divisions is None else tuple(divisions),
            valid_until=subscription.get("valid_until"),
        )

    @property
    def conditional(self) -> bool:
        """Shared on conditions, so read through a view (the registry's own rule)."""
        divisions = None if self.divisions is None else list(self.divisions)
        return is_conditional(self.fields, {"divisions": divisions})

    @property
    def view_topic(self) -> str:
        return DepartmentTopic.shared(self.department_code, self.resource_code)

    def live(self, now: datetime) -> bool:
        """APPROVED and not past ``valid_until``: the view is written now."""
        return self.status == "APPROVED" and (self.valid_until is None or now < self.valid_until)


def shared_record_type(grant: ViewGrant) -> RecordType | None:
    """The canonical record type the grant's resource carries; None for a resource the
    processor cannot read (a department's own topic, whose records it does not know)."""
    record_type = CANONICAL_RECORD_TYPES.get(grant.resource_code)
    if record_type is None or record_type.topic.name != grant.source_topic:
        return None
    return record_type


def entity_division(record_type: RecordType, record: Mapping[str, Any]) -> str | None:
    """Where the record's entity is (see the module docstring); None when unknown."""
    field = DIVISION_FIELDS.get(record_type.name)
    if field is not None:
        division = record.get(field)
        return division if isinstance(division, str) and division else None
    try:
        return Uscc.parse(str(record.get("uscc", ""))).division
    except InvalidUsccError:
        return None


def within(division: str, granted: str) -> bool:
    """Whether ``division`` lies in the ``granted`` one (GB/T 2260): itself, or under a
    prefecture (``xxxx00``) or a province (``xx0000``)."""
    if division == granted:
        return True
    if len(granted) != 6 or len(division) != 6:
        return False
    if granted.endswith("0000"):
        return division[:2] == granted[:2]
    if granted.endswith("00"):
        return division[:4] == granted[:4]
    return False


def granted_fields(record_type: RecordType, grant: ViewGrant) -> list[str]:
    """The record's fields the view carries besides :data:`VIEW_FIELDS`, in the record's
    order; unknown names (a field the record type no longer has) are left out."""
    names = [field["name"] for field in record_type.schema["fields"]]
    wanted = set(names) if grant.fields is None else set(grant.fields)
    fixed = {name for name, _, _ in VIEW_FIELDS}
    return [name for name in names if name in wanted and name not in fixed]


def view_event_id(subscription_id: int, source_event_id: str) -> str:
    """The id of a view record: the same source event shared by the same subscription
    always gets it."""
    return deterministic_id(f"shared|{subscription_id}|{source_event_id}")


def project(
    record_type: RecordType, grant: ViewGrant, record: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The view of ``record`` under ``grant``: None when its entity is not in a granted
    division (or where it is cannot be told), else the granted fields and
    :data:`VIEW_FIELDS`."""
    if grant.divisions is not None:
        division = entity_division(record_type, record)
        if division is None or not any(within(division, g) for g in grant.divisions):
            return None
    envelope = record.get("envelope") or {}
    source_event_id = str(envelope.get("event_id", ""))
    view: dict[str, Any] = {
        "view_event_id": view_event_id(grant.subscription_id, source_event_id),
        "subscription_id": grant.subscription_id,
        "source_event_id": source_event_id,
        "record_version": envelope.get("record_version"),
        "uscc": record.get("uscc"),
    }
    for name in granted_fields(record_type, grant):
        view[name] = record.get(name)
    return view


def avro_namespace_part(code: str) -> str:
    """A department code as one part of an Avro namespace (``hz-xh-health`` →
    ``hz_xh_health``; a part may not start with a digit)."""
    part = _AVRO_NAME.sub("_", code)
    return part if part[:1].isalpha() or part[:1] == "_" else f"_{part}"


def view_record_name(record_type: RecordType, department_code: str) -> str:
    """The view's full record name, e.g. ``cn.gov.xietong.shared.hz_xh_health.CreditListEntry``:
    its subject too (record-name strategy), one per department and resource."""
    short = str(record_type.schema["name"]).rsplit(".", 1)[-1]
    return f"cn.gov.xietong.shared.{avro_namespace_part(department_code)}.{short}"


def view_subject(record_type: RecordType, department_code: str) -> str:
    return view_record_name(record_type, department_code)


def view_schema(record_type: RecordType, grant: ViewGrant) -> dict[str, Any]:
    """The Avro schema of the grant's view: :data:`VIEW_FIELDS` and the granted fields,
    every one optional with a null default; the named types they use are defined
    inside it, so it is self-contained."""
    canonical = record_type.schema
    definitions = _named_types(canonical)
    emitted: set[str] = set()
    by_name = {field["name"]: field for field in canonical["fields"]}
    fields: list[dict[str, Any]] = [
        {"name": name, "type": ["null", kind], "default": None, "doc": doc}
        for name, kind, doc in VIEW_FIELDS
    ]
    for name in granted_fields(record_type, grant):
        field = by_name[name]
        field_type = _inline(copy.deepcopy(field["type"]), definitions, emitted)
        fields.append(
            {
                "name": name,
                "type": _optional(field_type),
                "default": None,
                "doc": field.get("doc", ""),
            }
        )
    divisions = "every division" if grant.divisions is None else ", ".join(grant.divisions)
    where = DIVISION_FIELDS.get(record_type.name)
    located = f"its {where}" if where else "characters 3–8 of its USCC"
    return {
        "type": "record",
        "name": view_record_name(record_type, grant.department_code),
        "doc": (
            f"有条件共享: {grant.department_code}'s view of {record_type.name}"
            f" ({record_type.label}) on {grant.view_topic}, as granted by subscription"
            f" {grant.subscription_id}: only records about entities in {divisions} (an"
            f" entity is where {located} says), only the granted fields, each optional;"
            " always uscc (the key), view_event_id, subscription_id, and the source"
            " envelope's event_id and record_version."
        ),
        "fields": fields,
    }


def _optional(field_type: Any) -> list[Any]:
    """``field_type`` as a union with null first (a null default needs it first)."""
    branches: list[Any] = list(field_type) if isinstance(field_type, list) else [field_type]
    return ["null", *[branch for branch in branches if branch != "null"]]


def _named_types(schema: Any) -> dict[str, dict[str, Any]]:
    """Every named type (record, enum, fixed) defined in ``schema``, by full name."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed") and "name" in node:
                found.setdefault(node["name"], node)
            for field in node.get("fields", ()):
                walk(field["type"])
            for key in ("items", "values"):
                if key in node:
                    walk(node[key])
            if isinstance(node.get("type"), dict | list):
                walk(node["type"])

    walk(schema)
    return found


def _inline(node: Any, definitions: Mapping[str, dict[str, Any]], emitted: set[str]) -> Any:
    """``node`` with each named type defined at its first use in the view and referred to
    by name after: a granted field may use a type the canonical schema defined in a field
    that is not granted."""
    if isinstance(node, str):
        if node in definitions and node not in emitted:
            return _inline(copy.deepcopy(definitions[node]), definitions, emitted)
        return node
    if isinstance(node, list):
        return [_inline(branch, definitions, emitted) for branch in node]
    if isinstance(node, dict):
        name = node.get("name")
        if node.get("type") in ("record", "enum", "fixed") and isinstance(name, str):
            if name in emitted:
                return name
            emitted.add(name)
        result = dict(node)
        if "fields" in node:
            result["fields"] = [
                {**field, "type": _inline(field["type"], definitions, emitted)}
                for field in node["fields"]
            ]
        for key in ("items", "values"):
            if key in node:
                result[key] = _inline(node[key], definitions, emitted)
        if isinstance(node.get("type"), dict | list):
            result["type"] = _inline(node["type"], definitions, emitted)
        return result
    return node
