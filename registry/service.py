"""The registry's operations, over a SQLAlchemy session; the API and the CLI both call these.

Every function takes the session and, when it changes something, the :class:`Actor`
doing it. Functions flush but never commit: the caller owns the transaction
(:func:`registry.db.transaction`), so a change and its audit entries land together.
Refusals are :mod:`registry.errors` exceptions naming the record, the field and what
would be accepted.

A subscription (订阅) moves through this state machine; anything else is refused with
:class:`~registry.errors.InvalidTransitionError`::

    request ──> REQUESTED ──approve──> APPROVED ──revoke──> REVOKED
                    │                      │
                    ├──reject──> REJECTED  └──expire──> EXPIRED   (valid_until passed)
                    └──expire──> EXPIRED

Approving, rejecting and revoking are for the department that owns the resource or an
administrator. Every request goes through approval, whatever the sharing class:
无条件共享 means the owner may not refuse without cause, not that nobody looks.

Example::

    with transaction(session_factory(url)) as session:
        load_catalog(session, Actor.system("load-catalog"))
        subscription = request_subscription(
            session, Actor.department("hz-health"), department="hz-health",
            resource="registration", purpose="双告知: 公共场所卫生许可",
            legal_basis="国发〔2015〕62号",
        )
        approve_subscription(session, Actor.department("zj-amr"), subscription.id)
        grants = access_grants(session, utcnow())
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from registry import audit
from registry.assistance import sync_listed_item
from registry.audit import Actor
from registry.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    InvalidTransitionError,
    NotAuthenticatedError,
    NotFoundError,
)
from registry.grants import DepartmentGrant, department_principal, is_conditional, read_topic
from registry.models import (
    OPEN_STATUSES,
    TOKEN_SCOPES,
    ApprovalItem,
    ApprovalMatchRule,
    ApprovalRoute,
    AuditEntry,
    Base,
    Credential,
    CreditListType,
    DataResource,
    Department,
    Division,
    MatchKind,
    MatterType,
    Measure,
    Sector,
    SharingClass,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
    row_snapshot,
)
from registry.seed import DepartmentRole, Level, SampleProvince, load_sample_province
from schemas import CANONICAL_RECORD_TYPES
from xietong.clock import business_clock
from xietong.logs import log_event as structured_log
from xietong.topics import DepartmentTopic
from xietong.uscc import uscc_problems

__all__ = [
    "CANONICAL_RESOURCES",
    "TRANSITIONS",
    "Actor",
    "CatalogLoadReport",
    "IssuedToken",
    "access_grants",
    "approve_subscription",
    "authenticate",
    "create_department",
    "create_resource",
    "expire_due",
    "issue_token",
    "load_catalog",
    "reject_subscription",
    "request_subscription",
    "revoke_subscription",
]

logger = logging.getLogger(__name__)

Row = TypeVar("Row", bound=Base)

#: Filters a subscription may carry, and what each restricts.
SUBSCRIPTION_FILTERS = {"divisions": "records about entities in these GB/T 2260 divisions"}

#: action → {state it applies to: state it leads to}.
TRANSITIONS: dict[str, dict[SubscriptionStatus, SubscriptionStatus]] = {
    "approve": {SubscriptionStatus.REQUESTED: SubscriptionStatus.APPROVED},
    "reject": {SubscriptionStatus.REQUESTED: SubscriptionStatus.REJECTED},
    "revoke": {SubscriptionStatus.APPROVED: SubscriptionStatus.REVOKED},
    "expire": {
        SubscriptionStatus.REQUESTED: SubscriptionStatus.EXPIRED,
        SubscriptionStatus.APPROVED: SubscriptionStatus.EXPIRED,
    },
}


@dataclass(frozen=True)
class CanonicalResource:
    """A data resource the platform itself declares, one per canonical record topic."""

    record_type: str
    owner: str
    sharing_class: SharingClass


#: The canonical record topics as data resources. Registrations belong to the province's
#: registration authority (浙江省市场监督管理局). Licences and penalties are gathered from
#: every licensing and enforcement department by the credit authority for 双公示, and list
#: entries are its own, so those three belong to 浙江省发展和改革委员会 (信用). Registrations,
#: licences and penalties are public (双公示, 企业信息公示), hence 无条件共享; list entries
#: carry restrictions on named entities and are shared on conditions (有条件共享).
CANONICAL_RESOURCES: tuple[CanonicalResource, ...] = (
    CanonicalResource("registration", "zj-amr", SharingClass.UNCONDITIONAL),
    CanonicalResource("licence", "zj-drc", SharingClass.UNCONDITIONAL),
    CanonicalResource("penalty", "zj-drc", SharingClass.UNCONDITIONAL),
    CanonicalResource("credit_list_entry", "zj-drc", SharingClass.CONDITIONAL),
)


def utcnow() -> datetime:
    """Now by the business clock (a rehearsal's offset moves expiries too), in UTC as the
    database gives instants back."""
    return business_clock().now().astimezone(UTC)


def log_event(event: str, **fields: Any) -> None:
    """One structured line per significant event."""
    structured_log(logger, event, **fields)


# -- reading --------------------------------------------------------------------------------


def get_department(session: Session, code: str, *, field: str = "department") -> Department:
    return _one_by_code(session, Department, code, what="department", field=field)


def list_departments(session: Session) -> Sequence[Department]:
    return _all_by_code(session, Department)


def get_resource(session: Session, code: str, *, field: str = "resource") -> DataResource:
    return _one_by_code(session, DataResource, code, what="data resource", field=field)


def list_resources(session: Session) -> Sequence[DataResource]:
    return _all_by_code(session, DataResource)


def list_sectors(session: Session) -> Sequence[Sector]:
    return _all_by_code(session, Sector)


def list_divisions(session: Session) -> Sequence[Division]:
    return _all_by_code(session, Division)


def list_approval_items(session: Session) -> Sequence[ApprovalItem]:
    return _all_by_code(session, ApprovalItem)


def get_approval_item(session: Session, code: str) -> ApprovalItem:
    return _one_by_code(session, ApprovalItem, code, what="approval item", field="code")


def list_credit_list_types(session: Session) -> Sequence[CreditListType]:
    return _all_by_code(session, CreditListType)


def list_matter_types(session: Session) -> Sequence[MatterType]:
    return _all_by_code(session, MatterType)


def list_measures(session: Session) -> Sequence[Measure]:
    return _all_by_code(session, Measure)


def _one_by_code(session: Session, model: type[Row], code: str, *, what: str, field: str) -> Row:
    """The row of ``model`` with this code; not found, an error naming ``field``."""
    row = session.scalars(sa.select(model).filter_by(code=code)).first()
    if row is None:
        raise NotFoundError(f"no {what} {code!r}", field=field)
    return row


def _all_by_code(session: Session, model: type[Row]) -> Sequence[Row]:
    return session.scalars(sa.select(model).order_by(model.__table__.c.code)).all()


def audit_entries(
    session: Session,
    *,
    limit: int = 100,
    entity: str | None = None,
    entity_id: str | None = None,
) -> Sequence[AuditEntry]:
    """The newest audit entries first, optionally of one table or one row."""
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if entity is not None:
        query = query.where(AuditEntry.entity == entity)
    if entity_id is not None:
        query = query.where(AuditEntry.entity_id == entity_id)
    return session.scalars(query).all()


# -- departments and credentials ------------------------------------------------------------


def create_department(
    session: Session,
    actor: Actor,
    *,
    code: str,
    uscc: str,
    name: str,
    sector: str,
    roles: Iterable[str],
    level: Level,
    division: str,
    contact: str,
    now: datetime | None = None,
) -> Department:
    """Register a department (administrators only); its principal is ``User:dept-<code>``."""
    _require_admin(actor, "create a department")
    now = now or utcnow()
    problems = uscc_problems(uscc)
    if problems:
        raise InvalidInputError(
            f"uscc {uscc!r} is not a valid USCC: " + "; ".join(p.message for p in problems),
            field="uscc",
        )
    _require_known(session, Sector, sector, "sector")
    _require_known(session, Division, division, "division")
    role_values = _roles(roles)
    for column, value in (("code", code), ("uscc", uscc)):
        holder = session.scalar(sa.select(Department).where(getattr(Department, column) == value))
        if holder is not None:
            raise ConflictError(
                f"{column} {value!r} is already department {holder.code} ({holder.name})",
                field=column,
            )
    department = Department(
        code=code,
        uscc=uscc,
        name=name,
        sector_code=sector,
        roles=role_values,
        level=Level(level),
        division_code=division,
        contact=contact,
        kafka_principal=department_principal(code),
        created_at=now,
        updated_at=now,
    )
    audit.created(session, actor, "department.create", department)
    session.flush()
    log_event("department.created", department=code, actor=str(actor))
    return department


@dataclass(frozen=True)
class IssuedToken:
    """A newly issued credential and its token, which is shown this once and never stored."""

    credential: Credential
    token: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    session: Session,
    actor: Actor,
    department: str | None,
    now: datetime | None = None,
    scopes: Sequence[str] | None = None,
) -> IssuedToken:
    """Issue an API token for ``department``, or an administrator token when it is None;
    with ``scopes`` (of :data:`~registry.models.TOKEN_SCOPES`), it may be used for those
    alone, without, for all of them."""
    _require_admin(actor, "issue a credential")
    owner = None if department is None else get_department(session, department)
    granted = list(TOKEN_SCOPES) if scopes is None else sorted(set(scopes))
    unknown = [scope for scope in granted if scope not in TOKEN_SCOPES]
    if unknown:
        raise InvalidInputError(
            f"unknown token scope {', '.join(map(repr, unknown))}; the scopes are"
            f" {', '.join(TOKEN_SCOPES)}",
            field="scopes",
        )
    token = "xtr_" + secrets.token_urlsafe(32)
    credential = Credential(
        department_id=None if owner is None else owner.id,
        token_sha256=token_digest(token),
        issued_at=now or utcnow(),
        issued_by=str(actor),
        revoked_at=None,
        scopes=granted,
    )
    audit.created(session, actor, "credential.issue", credential)
    session.flush()
    log_event("credential.issued", credential=credential.id, department=department)
    return IssuedToken(credential, token)


def list_credentials(session: Session) -> Sequence[Credential]:
    return session.scalars(sa.select(Credential).order_by(Credential.id)).all()


def revoke_credential(
    session: Session, actor: Actor, credential_id: int, now: datetime | None = None
) -> Credential:
    """Revoke a credential; the token stops working at once."""
    _require_admin(actor, "revoke a credential")
    credential = session.get(Credential, credential_id)
    if credential is None:
        raise NotFoundError(f"no credential {credential_id}", field="credential_id")
    if credential.revoked_at is not None:
        raise ConflictError(
            f"credential {credential_id} was already revoked at {credential.revoked_at.isoformat()}"
        )
    before = row_snapshot(credential)
    credential.revoked_at = now or utcnow()
    audit.updated(session, actor, "credential.revoke", credential, before)
    session.flush()
    return credential


def rotate_credential(
    session: Session, actor: Actor, credential_id: int, now: datetime | None = None
) -> IssuedToken:
    """Replace a credential by a new token of the same department and scopes, in one
    transaction: the old token stops working and the new one works from the commit on,
    so there is no moment with neither (or, once committed, both)."""
    _require_admin(actor, "rotate a credential")
    old = session.get(Credential, credential_id)
    if old is None:
        raise NotFoundError(f"no credential {credential_id}", field="credential_id")
    if old.revoked_at is not None:
        raise ConflictError(
            f"credential {credential_id} was revoked at {old.revoked_at.isoformat()}:"
            " issue a new token instead (xietong registry issue-token)"
        )
    department = None if old.department is None else old.department.code
    moment = now or utcnow()
    issued = issue_token(session, actor, department, now=moment, scopes=list(old.scopes))
    revoke_credential(session, actor, credential_id, now=moment)
    log_event(
        "credential.rotated",
        credential=credential_id,
        replaced_by=issued.credential.id,
        department=department,
    )
    return issued


def authenticate(session: Session, token: str, admin_token_sha256: str | None) -> Actor | None:
    """Who presents ``token``: an administrator, a department, or None when unknown/revoked."""
    digest = token_digest(token)
    if admin_token_sha256 and hmac.compare_digest(digest, admin_token_sha256.lower()):
        return Actor.admin("bootstrap-token")
    credential = session.scalar(
        sa.select(Credential).where(
            Credential.token_sha256 == digest, Credential.revoked_at.is_(None)
        )
    )
    if credential is None:
        return None
    if credential.department is None:
        return Actor.admin(f"credential-{credential.id}")
    return Actor.department(credential.department.code)


def token_scopes(session: Session, token: str) -> frozenset[str]:
    """The scopes of a department's unrevoked ``token`` (none for any other)."""
    scopes = session.scalar(
        sa.select(Credential.scopes).where(
            Credential.token_sha256 == token_digest(token), Credential.revoked_at.is_(None)
        )
    )
    return frozenset(scopes or ())


def verify_token(session: Session, token: str | None, admin_token_sha256: str | None) -> Actor:
    """Who presents ``token`` (:func:`authenticate`), the bearer token of a request (None:
    it had none); NotAuthenticatedError when nobody does. The platform's one token check:
    the registry API, the credit check and the HTTP ingest all ask it."""
    if token is None:
        raise NotAuthenticatedError(
            "no bearer token: send Authorization: Bearer <token>, your department's registry"
            " token (ask a registry administrator for it)"
        )
    actor = authenticate(session, token, admin_token_sha256)
    if actor is None:
        raise NotAuthenticatedError(
            "unknown or revoked token: present your department's registry token (a registry"
            " administrator issues it: xietong registry issue-token <department>)"
        )
    return actor


# -- data resources -------------------------------------------------------------------------


def create_resource(
    session: Session,
    actor: Actor,
    *,
    code: str,
    name: str,
    topic: str,
    owner: str,
    sharing_class: SharingClass,
    fields: Sequence[str],
    description: str,
    schema_subject: str | None = None,
    now: datetime | None = None,
) -> DataResource:
    """Declare a data resource. A department declares its own, on topics under
    ``dept.<code>.``; an administrator declares any, for any owner."""
    owner_department = get_department(session, owner, field="owner")
    if not actor.is_admin:
        if actor.department_code != owner:
            raise ForbiddenError(
                f"{actor} may not declare a resource owned by {owner}: a department declares"
                " only its own resources",
                field="owner",
            )
        namespace = DepartmentTopic.namespace(owner)
        if not topic.startswith(namespace):
            raise ForbiddenError(
                f"topic {topic!r} is outside {owner}'s namespace: a department's resources"
                f" live on topics starting with {namespace!r}; platform topics are declared"
                " by an administrator",
                field="topic",
            )
    for column, value in (("code", code), ("topic", topic)):
        holder = session.scalar(
            sa.select(DataResource).where(getattr(DataResource, column) == value)
        )
        if holder is not None:
            raise ConflictError(
                f"{column} {value!r} is already data resource {holder.code}", field=column
            )
    field_names = _field_names(fields)
    now = now or utcnow()
    resource = DataResource(
        code=code,
        name=name,
        topic=topic,
        schema_subject=schema_subject or f"{topic}-value",
        owner_department_id=owner_department.id,
        sharing_class=SharingClass(sharing_class),
        fields=field_names,
        description=description,
        created_at=now,
        updated_at=now,
    )
    audit.created(session, actor, "resource.create", resource)
    session.flush()
    log_event("resource.created", resource=code, owner=owner, actor=str(actor))
    return resource


# -- subscriptions --------------------------------------------------------------------------


def get_subscription(session: Session, actor: Actor, subscription_id: int) -> Subscription:
    """The subscription, if ``actor`` may see it: its subscriber, its resource's owner,
    or an administrator."""
    subscription = session.get(Subscription, subscription_id)
    if subscription is None:
        raise NotFoundError(f"no subscription {subscription_id}", field="subscription_id")
    if not _may_see(actor, subscription):
        raise ForbiddenError(
            f"{actor} may not see subscription {subscription_id}: it is"
            f" {subscription.subscriber.code}'s request for {subscription.resource.code}"
            f" (owned by {subscription.resource.owner.code})"
        )
    return subscription


def list_subscriptions(
    session: Session,
    actor: Actor,
    *,
    department: str | None = None,
    status: SubscriptionStatus | None = None,
    role: str | None = None,
) -> Sequence[Subscription]:
    """Subscriptions ``actor`` may see, newest first.

    A department sees those it requested (``role="subscriber"``) and those for its own
    resources (``role="owner"``); without ``role``, both. An administrator sees all, or
    those of ``department`` in the given role.
    """
    if role not in (None, "subscriber", "owner"):
        raise InvalidInputError(f"role {role!r}: expected subscriber or owner", field="role")
    if not actor.is_admin:
        if department is not None and department != actor.department_code:
            raise ForbiddenError(
                f"{actor} may list only its own subscriptions, not {department}'s",
                field="department",
            )
        department = actor.department_code
    query = sa.select(Subscription).join(Subscription.resource).order_by(Subscription.id.desc())
    if department is not None:
        department_id = get_department(session, department).id
        as_subscriber = Subscription.subscriber_department_id == department_id
        as_owner = DataResource.owner_department_id == department_id
        by_role = {"subscriber": as_subscriber, "owner": as_owner}
        query = query.where(by_role[role] if role else sa.or_(as_subscriber, as_owner))
    if status is not None:
        query = query.where(Subscription.status == status)
    return session.scalars(query).all()


def subscription_history(
    session: Session, actor: Actor, subscription_id: int
) -> Sequence[SubscriptionEvent]:
    """Every transition of a subscription, oldest first."""
    get_subscription(session, actor, subscription_id)
    return session.scalars(
        sa.select(SubscriptionEvent)
        .where(SubscriptionEvent.subscription_id == subscription_id)
        .order_by(SubscriptionEvent.id)
    ).all()


def request_subscription(
    session: Session,
    actor: Actor,
    *,
    department: str,
    resource: str,
    purpose: str,
    legal_basis: str,
    fields: Sequence[str] | None = None,
    filters: dict[str, Any] | None = None,
    valid_until: datetime | None = None,
    now: datetime | None = None,
) -> Subscription:
    """``department`` asks for ``resource``, saying why (purpose) and under which law.

    * 不予共享 resources are refused outright;
    * 有条件共享 resources need the fields and the filters (e.g. ``{"divisions":
      ["330106"]}``) the department asks for;
    * fields must be fields of the resource; filters are :data:`SUBSCRIPTION_FILTERS`;
    * one open (requested or approved) subscription per resource and department.
    """
    now = now or utcnow()
    if not actor.is_admin and actor.department_code != department:
        raise ForbiddenError(
            f"{actor} may not request on behalf of {department}: a department requests for itself",
            field="department",
        )
    subscriber = get_department(session, department)
    wanted = get_resource(session, resource)
    if wanted.sharing_class is SharingClass.NOT_SHARED:
        raise InvalidInputError(
            f"data resource {wanted.code} is 不予共享 (NOT_SHARED): it is not shared with any"
            " department, so it cannot be requested",
            field="resource",
            code="not_shared",
        )
    for name, text in (("purpose", purpose), ("legal_basis", legal_basis)):
        if not text.strip():
            raise InvalidInputError(f"{name} is empty: say why, and under which law", field=name)
    field_names = None if fields is None else _requested_fields(wanted, fields)
    checked_filters = None if filters is None else _filters(session, filters)
    if wanted.sharing_class is SharingClass.CONDITIONAL:
        if not field_names:
            raise InvalidInputError(
                f"data resource {wanted.code} is 有条件共享 (CONDITIONAL): name the fields you"
                f" need, from {', '.join(wanted.fields)}",
                field="fields",
            )
        if not checked_filters:
            raise InvalidInputError(
                f"data resource {wanted.code} is 有条件共享 (CONDITIONAL): give the filters"
                f" that limit what you receive ({_filter_help()})",
                field="filters",
            )
    if valid_until is not None:
        _require_future(valid_until, now)
    open_one = session.scalar(
        sa.select(Subscription).where(
            Subscription.resource_id == wanted.id,
            Subscription.subscriber_department_id == subscriber.id,
            Subscription.status.in_(OPEN_STATUSES),
        )
    )
    if open_one is not None:
        raise ConflictError(
            f"{department} already has subscription {open_one.id} to {resource}, which is"
            f" {open_one.status.value}; revoke or let it end before requesting again",
            field="resource",
        )
    subscription = Subscription(
        resource_id=wanted.id,
        subscriber_department_id=subscriber.id,
        purpose=purpose,
        legal_basis=legal_basis,
        fields=field_names,
        filters=checked_filters,
        status=SubscriptionStatus.REQUESTED,
        requested_at=now,
        requested_by=str(actor),
        valid_until=valid_until,
    )
    audit.created(session, actor, "subscription.request", subscription)
    session.flush()
    _record_event(session, actor, subscription, None, "request", now, None)
    log_event(
        "subscription.requested",
        subscription=subscription.id,
        department=department,
        resource=resource,
        actor=str(actor),
    )
    return subscription


def approve_subscription(
    session: Session,
    actor: Actor,
    subscription_id: int,
    *,
    valid_until: datetime | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> Subscription:
    """The resource's owner (or an administrator) approves; ``valid_until`` replaces the
    requested end date when given."""
    now = now or utcnow()
    subscription = _subscription_for_decision(session, actor, subscription_id, "approve")
    end = valid_until or subscription.valid_until
    if end is not None:
        _require_future(end, now)
    return _transition(session, actor, subscription, "approve", now, reason, valid_until=end)


def reject_subscription(
    session: Session,
    actor: Actor,
    subscription_id: int,
    *,
    reason: str,
    now: datetime | None = None,
) -> Subscription:
    """The resource's owner (or an administrator) refuses a request, saying why."""
    _require_reason(reason)
    subscription = _subscription_for_decision(session, actor, subscription_id, "reject")
    return _transition(session, actor, subscription, "reject", now or utcnow(), reason)


def revoke_subscription(
    session: Session,
    actor: Actor,
    subscription_id: int,
    *,
    reason: str,
    now: datetime | None = None,
) -> Subscription:
    """The resource's owner (or an administrator) ends an approved subscription."""
    _require_reason(reason)
    subscription = _subscription_for_decision(session, actor, subscription_id, "revoke")
    return _transition(session, actor, subscription, "revoke", now or utcnow(), reason)


def expire_due(session: Session, now: datetime, actor: Actor | None = None) -> list[Subscription]:
    """Expire every open subscription whose ``valid_until`` is not after ``now``."""
    actor = actor or Actor.system("expire-due")
    due = session.scalars(
        sa.select(Subscription)
        .where(
            Subscription.status.in_(OPEN_STATUSES),
            Subscription.valid_until.is_not(None),
            Subscription.valid_until <= now,
        )
        .order_by(Subscription.id)
        .with_for_update(skip_locked=True)
    ).all()
    for subscription in due:
        assert subscription.valid_until is not None
        _transition(
            session,
            actor,
            subscription,
            "expire",
            now,
            f"valid_until {subscription.valid_until.isoformat()} passed",
        )
    return list(due)


def access_grants(session: Session, now: datetime) -> list[DepartmentGrant]:
    """THE HOOK for broker ACLs: what every department may read and write at ``now``.

    One :class:`~registry.grants.DepartmentGrant` per department, sorted by code. Its
    ``read_topics`` are, for its APPROVED subscriptions whose ``valid_until`` is unset or
    after ``now`` (so access ends at ``valid_until`` even before :func:`expire_due`
    runs), the resource's topic when the subscription is unconditional, and its view
    ``dept.<code>.shared.<resource>`` (:func:`registry.grants.is_conditional`; written by
    the sharing processor, ``streams/sharing/``) when it is not; plus ``dept.<code>.inbox``;
    ``write_topics`` is ``dept.<code>.inbound``; ``group_prefix`` is ``<code>.``.
    """
    live = session.execute(
        sa.select(Department.code, DataResource.code, DataResource.topic, Subscription)
        .select_from(Subscription)
        .join(Subscription.subscriber)
        .join(Subscription.resource)
        .where(
            Subscription.status == SubscriptionStatus.APPROVED,
            sa.or_(Subscription.valid_until.is_(None), Subscription.valid_until > now),
        )
    ).all()
    topics: dict[str, set[str]] = {}
    views: dict[str, set[str]] = {}
    for code, resource, topic, subscription in live:
        if is_conditional(subscription.fields, subscription.filters):
            views.setdefault(code, set()).add(
                read_topic(code, resource, topic, subscription.fields, subscription.filters)
            )
        else:
            topics.setdefault(code, set()).add(topic)
    codes = session.scalars(sa.select(Department.code).order_by(Department.code)).all()
    return [
        DepartmentGrant.for_department(code, topics.get(code, ()), views.get(code, ()))
        for code in codes
    ]


# -- the sample province's catalog ----------------------------------------------------------


@dataclass
class CatalogLoadReport:
    """What a catalog load did, per table: created, updated, deleted, unchanged."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def count(self, table: str, outcome: str) -> None:
        self.counts.setdefault(table, Counter())[outcome] += 1

    @property
    def changed(self) -> int:
        return sum(
            counter[outcome]
            for counter in self.counts.values()
            for outcome in ("created", "updated", "deleted")
        )


def load_catalog(
    session: Session,
    actor: Actor,
    province: SampleProvince | None = None,
    now: datetime | None = None,
) -> CatalogLoadReport:
    """Load (or bring up to date) the sample province's catalog; safe to repeat.

    Upserts sectors, divisions, departments, approval items with their routes and
    matching rules, credit list types, matter types, measures, the assistance list
    (:mod:`registry.assistance`: a changed item is a new version, a retired one stays
    retired) and one data resource per
    canonical record topic (:data:`CANONICAL_RESOURCES`). Rows are matched by code and
    changed only where the seed differs, so a second load changes nothing and writes no
    audit entry. An item's routes and rules follow the seed exactly (stale ones are
    deleted); nothing else is ever deleted, since subscriptions may refer to it.
    """
    province = province or load_sample_province()
    now = now or utcnow()
    report = CatalogLoadReport()
    loader = _CatalogLoader(session, actor, report)

    for code, name in province.sectors.items():
        loader.upsert(Sector, code, {"name": name})
    for division in province.divisions:
        loader.upsert(
            Division,
            division.code,
            {"name": division.name, "level": division.level, "parent_code": division.parent},
        )
    session.flush()

    departments: dict[str, Department] = {}
    for seeded in province.departments:
        department = loader.upsert(
            Department,
            seeded.code,
            {
                "uscc": seeded.uscc,
                "name": seeded.name,
                "sector_code": seeded.sector,
                "roles": [role.value for role in seeded.roles],
                "level": seeded.level,
                "division_code": seeded.division,
                "contact": seeded.contact,
                "kafka_principal": department_principal(seeded.code),
            },
            created={"created_at": now, "updated_at": now},
            on_update={"updated_at": now},
        )
        departments[seeded.code] = department
    session.flush()

    for item in province.approval_items:
        loader.upsert(
            ApprovalItem,
            item.code,
            {
                "name": item.name,
                "legal_basis": item.legal_basis,
                "sector_code": item.sector,
                "level": item.level,
                "category": item.category,
                "certificate_name": item.certificate_name,
                "validity_years": item.validity_years,
            },
        )
    session.flush()
    for item in province.approval_items:
        routes = province.routing.get(item.code, {})
        loader.sync(
            ApprovalRoute,
            ApprovalRoute.item_code == item.code,
            key=lambda route: route.division_code,
            wanted={
                division: {
                    "item_code": item.code,
                    "division_code": division,
                    "department_id": departments[department].id,
                }
                for division, department in routes.items()
            },
        )
        rules = [(MatchKind.SCOPE, wording) for wording in item.match.scope] + [
            (MatchKind.INDUSTRY, code) for code in item.match.industry
        ]
        loader.sync(
            ApprovalMatchRule,
            ApprovalMatchRule.item_code == item.code,
            key=lambda rule: (rule.kind, rule.value),
            wanted={
                (kind, value): {"item_code": item.code, "kind": kind, "value": value}
                for kind, value in rules
            },
        )

    for list_type in province.list_types:
        loader.upsert(
            CreditListType,
            list_type.code,
            {
                "name": list_type.name,
                "listing_sectors": list(list_type.listing_sectors),
                "duration_years": list_type.duration_years,
                "early_removal_after_years": list_type.early_removal_after_years,
                "extendable_years": list_type.extendable_years,
                "escalates_to": list_type.escalates_to,
                "escalates_after_years": list_type.escalates_after_years,
                "legal_basis": list_type.legal_basis,
            },
        )
        session.flush()  # a list type may escalate to one loaded just before
    for code, name in province.matter_types.items():
        loader.upsert(MatterType, code, {"name": name})
    for measure in province.measures:
        loader.upsert(
            Measure,
            measure.code,
            {
                "text": measure.text,
                "legal_basis": measure.legal_basis,
                "implementing_sectors": list(measure.sectors),
                "list_types": list(measure.list_types),
                "matter_types": list(measure.matters),
                "feedback_required": measure.feedback_required,
                "feedback_days": measure.feedback_days,
                "target": measure.target,
                "roles": list(measure.roles),
            },
        )

    session.flush()
    for assistance in province.assistance_items:
        report.count("assistance_items", sync_listed_item(session, actor, assistance, now))

    for canonical in CANONICAL_RESOURCES:
        record = CANONICAL_RECORD_TYPES[canonical.record_type]
        loader.upsert(
            DataResource,
            record.name,
            {
                "name": record.label,
                "topic": record.topic.name,
                "schema_subject": record.subject,
                "owner_department_id": departments[canonical.owner].id,
                "sharing_class": canonical.sharing_class,
                "fields": [schema_field["name"] for schema_field in record.schema["fields"]],
                "description": record.topic.description,
            },
            created={"created_at": now, "updated_at": now},
            on_update={"updated_at": now},
        )
    session.flush()
    log_event("catalog.loaded", actor=str(actor), changed=report.changed)
    return report


class _CatalogLoader:
    """Upserts rows by code and keeps child rows in step with the seed, auditing each."""

    ACTION = "catalog.load"

    def __init__(self, session: Session, actor: Actor, report: CatalogLoadReport) -> None:
        self.session = session
        self.actor = actor
        self.report = report
        self._existing: dict[type[Base], dict[str, Any]] = {}

    def _by_code(self, model: type[Row]) -> dict[str, Row]:
        if model not in self._existing:
            rows = self.session.scalars(sa.select(model)).all()
            self._existing[model] = {row.code: row for row in rows}  # type: ignore[attr-defined]
        return self._existing[model]

    def upsert(
        self,
        model: type[Row],
        code: str,
        values: dict[str, Any],
        *,
        created: dict[str, Any] | None = None,
        on_update: dict[str, Any] | None = None,
    ) -> Row:
        existing = self._by_code(model)
        table = model.__tablename__
        row = existing.get(code)
        if row is None:
            row = model(code=code, **values, **(created or {}))
            audit.created(self.session, self.actor, self.ACTION, row)
            existing[code] = row
            self.report.count(table, "created")
            return row
        changes = {name: value for name, value in values.items() if getattr(row, name) != value}
        if not changes:
            self.report.count(table, "unchanged")
            return row
        before = row_snapshot(row)
        for name, value in {**changes, **(on_update or {})}.items():
            setattr(row, name, value)
        audit.updated(self.session, self.actor, self.ACTION, row, before)
        self.report.count(table, "updated")
        return row

    def sync(
        self,
        model: type[Row],
        scope: sa.ColumnElement[bool],
        *,
        key: Any,
        wanted: dict[Any, dict[str, Any]],
    ) -> None:
        table = model.__tablename__
        present = {key(row): row for row in self.session.scalars(sa.select(model).where(scope))}
        for identity, row in present.items():
            values = wanted.get(identity)
            if values is None:
                audit.deleted(self.session, self.actor, self.ACTION, row)
                self.report.count(table, "deleted")
            elif any(getattr(row, name) != value for name, value in values.items()):
                before = row_snapshot(row)
                for name, value in values.items():
                    setattr(row, name, value)
                audit.updated(self.session, self.actor, self.ACTION, row, before)
                self.report.count(table, "updated")
            else:
                self.report.count(table, "unchanged")
        for identity, values in wanted.items():
            if identity not in present:
                audit.created(self.session, self.actor, self.ACTION, model(**values))
                self.report.count(table, "created")


# -- helpers --------------------------------------------------------------------------------


def _require_admin(actor: Actor, what: str) -> None:
    if not (actor.is_admin or actor.kind is audit.ActorKind.SYSTEM):
        raise ForbiddenError(f"{actor} may not {what}: administrators only")


def _require_known(session: Session, model: type[Base], code: str, field_name: str) -> None:
    if session.get(model, code) is None:
        raise InvalidInputError(
            f"{field_name} {code!r} is not in the catalog (load it with `xietong registry"
            " load-catalog`)",
            field=field_name,
        )


def _roles(roles: Iterable[str]) -> list[str]:
    values = list(dict.fromkeys(roles))
    known = {role.value for role in DepartmentRole}
    unknown = [role for role in values if role not in known]
    if unknown or not values:
        raise InvalidInputError(
            f"roles {values!r}: expected one or more of {', '.join(sorted(known))}",
            field="roles",
        )
    return values


def _field_names(fields: Sequence[str]) -> list[str]:
    names = list(fields)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInputError(f"fields listed twice: {', '.join(duplicates)}", field="fields")
    return names


def _requested_fields(resource: DataResource, fields: Sequence[str]) -> list[str]:
    names = _field_names(fields)
    unknown = [name for name in names if name not in resource.fields]
    if unknown:
        raise InvalidInputError(
            f"data resource {resource.code} has no field {', '.join(unknown)}; its fields are"
            f" {', '.join(resource.fields)}",
            field="fields",
        )
    return names


def _filter_help() -> str:
    return "; ".join(f"{name}: {meaning}" for name, meaning in SUBSCRIPTION_FILTERS.items())


def _filters(session: Session, filters: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(filters) - set(SUBSCRIPTION_FILTERS))
    if unknown:
        raise InvalidInputError(
            f"unknown filter {', '.join(unknown)}; filters are {_filter_help()}",
            field="filters",
        )
    checked: dict[str, Any] = {}
    divisions = filters.get("divisions")
    if divisions is not None:
        if not isinstance(divisions, list) or not all(isinstance(d, str) for d in divisions):
            raise InvalidInputError(
                "filters.divisions must be a list of GB/T 2260 codes", field="filters.divisions"
            )
        known = set(session.scalars(sa.select(Division.code).where(Division.code.in_(divisions))))
        unknown_divisions = [code for code in divisions if code not in known]
        if unknown_divisions:
            raise InvalidInputError(
                f"filters.divisions: unknown division {', '.join(unknown_divisions)}",
                field="filters.divisions",
            )
        if divisions:
            checked["divisions"] = list(dict.fromkeys(divisions))
    return checked


def _require_future(valid_until: datetime, now: datetime) -> None:
    if valid_until.tzinfo is None:
        raise InvalidInputError(
            f"valid_until {valid_until.isoformat()} has no time zone; give one"
            " (e.g. 2027-12-31T23:59:59+08:00)",
            field="valid_until",
        )
    if valid_until <= now:
        raise InvalidInputError(
            f"valid_until {valid_until.isoformat()} is not in the future (now {now.isoformat()})",
            field="valid_until",
        )


def _require_reason(reason: str) -> None:
    if not reason.strip():
        raise InvalidInputError("reason is empty: say why", field="reason")


def _may_see(actor: Actor, subscription: Subscription) -> bool:
    return actor.is_admin or actor.department_code in (
        subscription.subscriber.code,
        subscription.resource.owner.code,
    )


def _subscription_for_decision(
    session: Session, actor: Actor, subscription_id: int, action: str
) -> Subscription:
    """The subscription, locked for the decision, if ``actor`` may take ``action`` on it."""
    subscription = session.scalar(
        sa.select(Subscription)
        .where(Subscription.id == subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if subscription is None:
        raise NotFoundError(f"no subscription {subscription_id}", field="subscription_id")
    owner = subscription.resource.owner.code
    if not (actor.is_admin or actor.department_code == owner):
        raise ForbiddenError(
            f"{actor} may not {action} subscription {subscription_id}: data resource"
            f" {subscription.resource.code} belongs to {owner}; only its owner or an"
            " administrator decides on it"
        )
    return subscription


def _transition(
    session: Session,
    actor: Actor,
    subscription: Subscription,
    action: str,
    now: datetime,
    reason: str | None,
    *,
    valid_until: datetime | None = None,
) -> Subscription:
    allowed = TRANSITIONS[action]
    current = subscription.status
    if current not in allowed:
        states = " or ".join(state.value for state in allowed)
        raise InvalidTransitionError(
            f"subscription {subscription.id} ({subscription.subscriber.code} →"
            f" {subscription.resource.code}) is {current.value}; {action} applies only to a"
            f" {states} subscription"
        )
    before = row_snapshot(subscription)
    subscription.status = allowed[current]
    if action == "approve":
        subscription.valid_until = valid_until
    subscription.decided_by = str(actor)
    subscription.decided_at = now
    subscription.reason = reason
    audit.updated(session, actor, f"subscription.{action}", subscription, before)
    session.flush()
    _record_event(session, actor, subscription, current, action, now, reason)
    log_event(
        f"subscription.{subscription.status.value.lower()}",
        subscription=subscription.id,
        department=subscription.subscriber.code,
        resource=subscription.resource.code,
        actor=str(actor),
        reason=reason,
    )
    return subscription


def _record_event(
    session: Session,
    actor: Actor,
    subscription: Subscription,
    from_status: SubscriptionStatus | None,
    action: str,
    now: datetime,
    reason: str | None,
) -> None:
    audit.created(
        session,
        actor,
        f"subscription.{action}",
        SubscriptionEvent(
            subscription_id=subscription.id,
            from_status=from_status,
            to_status=subscription.status,
            actor=str(actor),
            at=now,
            reason=reason,
        ),
    )
    session.flush()
