"""The registry's answer enforced by the broker: department principals, topics and ACLs.

From the registry's :class:`~registry.grants.DepartmentGrant` list this module makes the
broker hold exactly:

* for every department: READ (and DESCRIBE) on the topics of its live subscriptions
  and on its own inbox, WRITE on its own inbound topic, READ on the consumer groups
  ``<code>.*`` — and nothing else (anything more found is removed);
* for every *onboarded* department (one that has a Kafka credential): its two topics
  ``dept.<code>.inbox`` and ``dept.<code>.inbound``, and the platform services' side of
  them (the streams write its inbox, the connectors read its inbound topic);
* for every live conditional subscription of an onboarded department: its view topic
  ``dept.<code>.shared.<resource>`` and the sharing processor's WRITE on it. A view
  whose subscription ends loses both ACLs at once, the department's READ and the
  processor's WRITE; the topic itself stays, as the record of what was shared.

It touches only the grants it owns (department principals, and services on
``dept.`` topics); the services' grants on the platform's topics belong to
``xietong topics apply``. Reconciling is idempotent and cheap, so the registry runs it
after every subscription change and on a short timer, which also retires subscriptions
whose ``valid_until`` has passed: a revocation is enforced within seconds.

Example::

    password = issue_kafka_password(admin, "hz-amr")      # once; give it to the department
    report = reconcile_departments(admin, settings, grants)
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from registry.grants import DepartmentGrant
from xietong.access import Grant, Reconciled, group_grant, reconcile, topic_grants
from xietong.kafka import principal_name
from xietong.settings import Settings
from xietong.topics import (
    DEPARTMENT_SHARED,
    DEPARTMENT_TOPIC_PREFIX,
    DEPARTMENT_TOPICS,
    TopicChange,
    apply_topics,
)

DEPARTMENT_USER_PREFIX = "dept-"
SCRAM_ITERATIONS = 8192


def owned_by_registry(grant: Grant) -> bool:
    """The grants this module reconciles: departments', and services' on department topics."""
    if grant.principal.startswith(f"User:{DEPARTMENT_USER_PREFIX}"):
        return True
    return grant.principal.startswith("User:svc-") and grant.name.startswith(
        DEPARTMENT_TOPIC_PREFIX
    )


def department_acls(grant: DepartmentGrant) -> set[Grant]:
    """The ACLs one department's grant stands for."""
    acls = {group_grant(grant.principal, grant.group_prefix)}
    for topic in grant.read_topics:
        acls |= topic_grants(grant.principal, topic, "READ")
    for topic in grant.write_topics:
        acls |= topic_grants(grant.principal, topic, "WRITE")
    return acls


def service_acls_on_department_topics(
    department_code: str, shared_topics: Iterable[str] = ()
) -> set[Grant]:
    """The platform services' side of one department's own topics, and of its views."""
    acls: set[Grant] = set()
    for view in shared_topics:
        for service in DEPARTMENT_SHARED.writers:
            acls |= topic_grants(f"User:{principal_name(service)}", view, "WRITE")
    for topic in DEPARTMENT_TOPICS:
        for service in topic.writers:
            acls |= topic_grants(
                f"User:{principal_name(service)}", topic.name(department_code), "WRITE"
            )
        for service in topic.readers:
            acls |= topic_grants(
                f"User:{principal_name(service)}", topic.name(department_code), "READ"
            )
    return acls


def onboarded_departments(admin: AdminClient) -> set[str]:
    """Codes of the departments that have a SCRAM credential on the broker."""
    described = admin.describe_user_scram_credentials()
    # Without a list of users the client answers with one future for all of them.
    users = described.result() if isinstance(described, Future) else described
    return {
        user.removeprefix(DEPARTMENT_USER_PREFIX)
        for user in users
        if user.startswith(DEPARTMENT_USER_PREFIX)
    }


def issue_kafka_password(admin: AdminClient, department_code: str) -> str:
    """Create (or rotate) the department's Kafka credential; the password, shown once.

    The broker keeps only a salted SCRAM hash; the registry keeps nothing.
    """
    return issue_kafka_passwords(admin, [department_code])[department_code]


def issue_kafka_passwords(admin: AdminClient, department_codes: Iterable[str]) -> dict[str, str]:
    """:func:`issue_kafka_password` for many departments in one request: code → password."""
    passwords = {code: secrets.token_urlsafe(24) for code in department_codes}
    upsert: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            f"{DEPARTMENT_USER_PREFIX}{code}",
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            password.encode(),
        )
        for code, password in passwords.items()
    ]
    if upsert:
        for future in admin.alter_user_scram_credentials(upsert).values():
            future.result()
    return passwords


def revoke_kafka_password(admin: AdminClient, department_code: str) -> None:
    """Delete the department's Kafka credential: the broker refuses every new login of
    ``dept-<code>`` (a connection already open stays until it reconnects). Its grants are
    the registry's and stay; ``issue_kafka_password`` gives it a credential again."""
    if department_code not in onboarded_departments(admin):
        raise ValueError(
            f"{DEPARTMENT_USER_PREFIX}{department_code} has no Kafka credential to revoke"
        )
    deletion: list[UserScramCredentialAlteration] = [
        UserScramCredentialDeletion(
            f"{DEPARTMENT_USER_PREFIX}{department_code}", ScramMechanism.SCRAM_SHA_512
        )
    ]
    for future in admin.alter_user_scram_credentials(deletion).values():
        future.result()


@dataclass(frozen=True)
class DepartmentAccessReport:
    """What one reconciliation did."""

    departments: int
    onboarded: int
    topics: tuple[TopicChange, ...]
    acls: Reconciled


def reconcile_departments(
    admin: AdminClient,
    settings: Settings,
    grants: Iterable[DepartmentGrant],
    acls: bool = True,
) -> DepartmentAccessReport:
    """Make the broker's department topics and ACLs exactly what the grants say.

    With ``acls`` false only the topics are made: the ACLs belong to someone else (an
    open broker has none; under Strimzi the User Operator owns them) and are not read.
    """
    grants = list(grants)
    onboarded = onboarded_departments(admin)
    live = [g for g in grants if g.department_code in onboarded]
    specs = [topic.spec(g.department_code) for g in live for topic in DEPARTMENT_TOPICS]
    specs += [
        DEPARTMENT_SHARED.spec(g.department_code, view)
        for g in live
        for view in sorted(g.shared_topics)
    ]
    topics = apply_topics(admin, settings, specs)
    if not acls:
        return DepartmentAccessReport(len(grants), len(live), tuple(topics), Reconciled((), ()))
    desired: set[Grant] = set()
    for grant in grants:
        desired |= department_acls(grant)
    for grant in live:
        desired |= service_acls_on_department_topics(grant.department_code, grant.shared_topics)
    reconciled = reconcile(admin, desired, owned_by_registry)
    return DepartmentAccessReport(len(grants), len(live), tuple(topics), reconciled)
