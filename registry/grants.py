"""What each department may do on the broker: the registry's answer, for the ACL reconciler.

This module is deliberately free of the ORM and the database, so the broker-ACL module
can import it without pulling in SQLAlchemy. The topic names come from
:mod:`xietong.topics`, where every topic is declared. :func:`registry.service.access_grants`
computes one :class:`DepartmentGrant` per department from the registry; the ACL module
turns each grant into Kafka ACLs for the department's principal.

The naming rules for a department's own topics and consumer groups live here too, so
that the registry, the ACL reconciler and the topic declarations agree on them::

    >>> grant = DepartmentGrant.for_department("hz-amr", read_topics={"market.registrations"})
    >>> grant.principal, sorted(grant.write_topics)
    ('User:dept-hz-amr', ['dept.hz-amr.inbound'])
    >>> sorted(grant.read_topics)
    ['dept.hz-amr.inbox', 'dualnotice.claimable', 'market.registrations']
    >>> grant.group_prefix
    'hz-amr.'

A conditional subscription (有条件共享: chosen fields, or division filters) is granted not
the resource's topic but the department's view of it, which the sharing processor
(``streams/sharing/``) writes::

    >>> view = DepartmentGrant.for_department(
    ...     "hz-xh-health", shared_topics={"dept.hz-xh-health.shared.credit_list_entry"}
    ... )
    >>> sorted(view.read_topics)[0], sorted(view.shared_topics)
    ('dept.hz-xh-health.inbox', ['dept.hz-xh-health.shared.credit_list_entry'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xietong.topics import (
    DEPARTMENT_INBOUND,
    DEPARTMENT_INBOX,
    DUAL_NOTICE_CLAIMABLE,
    DepartmentTopic,
)


def department_principal(code: str) -> str:
    """The Kafka principal of a department: ``User:dept-<code>``."""
    return f"User:dept-{code}"


def inbox_topic(code: str) -> str:
    """Where the platform delivers to a department (双告知 pushes, notices): it reads it."""
    return DEPARTMENT_INBOX.name(code)


def inbound_topic(code: str) -> str:
    """Where a department publishes to the platform: the only topic it may write."""
    return DEPARTMENT_INBOUND.name(code)


def group_prefix(code: str) -> str:
    """The consumer-group prefix a department's clients use (``<code>.``).

    Department codes contain no dot, so one department's prefix never covers another's
    groups (``hz.`` does not match ``hz-amr.orders``).
    """
    return f"{code}."


def is_conditional(fields: Sequence[str] | None, filters: Mapping[str, Any] | None) -> bool:
    """Whether a subscription is shared on conditions (有条件共享): it names its fields, or
    its filters limit its records (a filter that is absent or null limits nothing). Such a
    subscription reads its view, never the resource's topic."""
    return fields is not None or any(value is not None for value in (filters or {}).values())


def read_topic(
    department_code: str,
    resource_code: str,
    resource_topic: str,
    fields: Sequence[str] | None,
    filters: Mapping[str, Any] | None,
) -> str:
    """Where a subscriber reads a resource: its topic, or, for a conditional subscription,
    the department's view of it ``dept.<code>.shared.<resource>``.

    >>> read_topic("hz-xh-health", "credit_list_entry", "credit.list-entries", ["uscc"], None)
    'dept.hz-xh-health.shared.credit_list_entry'
    """
    if is_conditional(fields, filters):
        return DepartmentTopic.shared(department_code, resource_code)
    return resource_topic


@dataclass(frozen=True)
class DepartmentGrant:
    """The broker access one department has now.

    * ``read_topics``: the topics of its APPROVED subscriptions whose ``valid_until`` has
      not passed — the resource's own topic for an unconditional subscription, its view
      ``dept.<code>.shared.<resource>`` for a conditional one — plus its own inbox topic
      ``dept.<code>.inbox`` and the 双告知 claimable list ``dualnotice.claimable``
      (分流失败 items any department may find and claim);
    * ``write_topics``: its own inbound topic ``dept.<code>.inbound``, nothing else;
    * ``group_prefix``: the consumer groups it may use, ``<code>.`` (prefixed ACL);
    * ``shared_topics``: the views among ``read_topics``, which the registry creates and
      the sharing processor writes while the subscription is live.
    """

    department_code: str
    principal: str
    read_topics: frozenset[str]
    write_topics: frozenset[str]
    group_prefix: str
    shared_topics: frozenset[str] = frozenset()

    @classmethod
    def for_department(
        cls, code: str, read_topics: Iterable[str] = (), shared_topics: Iterable[str] = ()
    ) -> DepartmentGrant:
        """The grant of department ``code`` given the topics of its live unconditional
        subscriptions (``read_topics``) and the views of its conditional ones."""
        shared = frozenset(shared_topics)
        return cls(
            department_code=code,
            principal=department_principal(code),
            read_topics=frozenset(read_topics)
            | shared
            | {inbox_topic(code), DUAL_NOTICE_CLAIMABLE.name},
            write_topics=frozenset({inbound_topic(code)}),
            group_prefix=group_prefix(code),
            shared_topics=shared,
        )
