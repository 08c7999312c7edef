"""Who may do what on the broker: ACL grants, and reconciling the broker with them.

Access is declared, never granted by hand. Each :class:`Grant` is one ALLOW ACL. The
platform's services get theirs from the topic declarations (each topic names the
services that write and read it, :mod:`xietong.topics`); departments get theirs from
the registry (:mod:`registry.acl`). :func:`reconcile` makes the broker hold exactly the
desired grants for a set of principals: it creates what is missing and deletes what
is no longer granted, so revoking a subscription in the registry removes the access.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``principal`` may ``operation`` the ``resource`` named ``name``."""

    principal: str  # "User:svc-connectors", "User:dept-hz-amr"
    resource: str  # TOPIC | GROUP | CLUSTER
    name: str
    operation: str  # READ | WRITE | DESCRIBE | …
    pattern: str = "LITERAL"  # LITERAL | PREFIXED

    def binding(self) -> AclBinding:
        return AclBinding(*self._acl())

    def binding_filter(self) -> AclBindingFilter:
        """The filter that matches this grant alone (to delete it)."""
        return AclBindingFilter(*self._acl())

    def _acl(self) -> tuple[Any, ...]:
        resource, pattern = ResourceType[self.resource], ResourcePatternType[self.pattern]
        operation, allow = AclOperation[self.operation], AclPermissionType.ALLOW
        return resource, self.name, pattern, self.principal, "*", operation, allow

    @classmethod
    def of(cls, binding: AclBinding) -> Grant:
        # The client returns enums here; the stubs also allow the str/int it accepts.
        return cls(
            binding.principal,
            _name(binding.restype),
            binding.name,
            _name(binding.operation),
            _name(binding.resource_pattern_type),
        )


def _name(value: object) -> str:
    return str(getattr(value, "name", value))


def topic_grants(
    principal: str, topic: str, operation: str, pattern: str = "LITERAL"
) -> set[Grant]:
    """The grants to READ or WRITE a topic (with DESCRIBE, which clients need for metadata)."""
    return {
        Grant(principal, "TOPIC", topic, operation, pattern),
        Grant(principal, "TOPIC", topic, "DESCRIBE", pattern),
    }


def group_grant(principal: str, prefix: str) -> Grant:
    """READ on the consumer groups whose id starts with ``prefix``."""
    return Grant(principal, "GROUP", prefix, "READ", "PREFIXED")


def current_grants(admin: AdminClient, owns: Callable[[Grant], bool]) -> set[Grant]:
    """The ALLOW ACLs on the broker that ``owns`` says belong to the caller."""
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]  # None matches any name (the stubs say str)
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ALLOW,
    )
    bindings = admin.describe_acls(everything, request_timeout=15).result()
    return {grant for grant in map(Grant.of, bindings) if owns(grant)}


@dataclass(frozen=True)
class Reconciled:
    created: tuple[Grant, ...]
    deleted: tuple[Grant, ...]


def reconcile(
    admin: AdminClient, desired: Iterable[Grant], owns: Callable[[Grant], bool]
) -> Reconciled:
    """Make the broker's ACLs that ``owns`` claims exactly ``desired``.

    Two reconcilers share the broker — the topic declarations (the services' ACLs on
    the platform's topics) and the registry (departments, and the services' ACLs on
    department topics) — and each touches only the grants it owns.
    """
    wanted = set(desired)
    stray = [g for g in wanted if not owns(g)]
    if stray:
        raise ValueError(f"grant {stray[0]} is not owned by this reconciler")
    present = current_grants(admin, owns)
    missing = sorted(wanted - present)
    extra = sorted(present - wanted)
    if missing:
        for future in admin.create_acls(
            [g.binding() for g in missing], request_timeout=15
        ).values():
            future.result()
    if extra:
        filters = [g.binding_filter() for g in extra]
        for future in admin.delete_acls(filters, request_timeout=15).values():
            future.result()
    return Reconciled(tuple(missing), tuple(extra))
