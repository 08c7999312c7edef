"""Which matters a joint-punishment measure binds, decided once for every part of
``streams`` that answers it: the joint-punishment processor (a restriction hit) and the
credit check (a RESTRICTED verdict).

A measure (``registry.measures``, ``schemas/avro/measure.avsc``) restricts a matter of
its ``matter_types`` for an entity on one of its ``list_types``, and it is the
departments of its ``implementing_sectors`` that apply it (the domain brief §6: each
measure has *an implementing department*). So a department handling a matter is bound by
a measure only when

* the measure restricts that matter type,
* the department's sector is one of the measure's implementing sectors, and
* the measure restricts the **entity** (``target`` ENTITY). A measure whose target is
  ``PERSONS_IN_ROLE`` (限制担任法定代表人、董监高, 公司法 §178) restricts the persons who hold
  those roles in the listed entity, not the entity's own matters: it is delivered to its
  implementing departments as a sanction notice naming the roles and the persons known
  (from the registration), and it never makes an entity matter RESTRICTED nor a hit.

Whether a listing the measure applies to is in force on the matter date is the
listing's question, asked by each caller with the same dates.

Example::

    >>> cj01 = {"implementing_sectors": ["finance"], "matter_types": [
    ...     {"code": "GOVERNMENT_PROCUREMENT", "name": "政府采购"}], "target": "ENTITY"}
    >>> binds_matter(cj01, sector="finance", matter_type="GOVERNMENT_PROCUREMENT")
    True
    >>> binds_matter(cj01, sector="taxation", matter_type="GOVERNMENT_PROCUREMENT")
    False
"""

from __future__ import annotations

from typing import Any

#: 措施对象: the measure restricts the listed entity itself.
ENTITY = "ENTITY"
#: 措施对象: the measure restricts the persons holding ``roles`` in the listed entity.
PERSONS_IN_ROLE = "PERSONS_IN_ROLE"


def target_of(measure: dict[str, Any]) -> str:
    """The measure's target; a record written before the field existed restricts the
    entity (the schema's default)."""
    return str(measure.get("target") or ENTITY)


def roles_of(measure: dict[str, Any]) -> list[str]:
    """The roles a person measure restricts (empty for an entity measure)."""
    return list(measure.get("roles") or ())


def binds_matter(measure: dict[str, Any], *, sector: str, matter_type: str) -> bool:
    """Whether ``measure`` binds a department of ``sector`` handling a matter of
    ``matter_type`` for a listed entity: the one rule behind both a restriction hit and
    a RESTRICTED credit check."""
    return (
        target_of(measure) == ENTITY
        and sector in measure["implementing_sectors"]
        and any(matter["code"] == matter_type for matter in measure["matter_types"])
    )
