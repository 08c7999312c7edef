"""The registry's tables (SQLAlchemy 2 typed ORM, PostgreSQL).

Four groups of tables, created by ``registry/migrations/versions/0001_initial.py``:

* **who**: :class:`Department` (部门: its USCC, sector, level, division and Kafka principal)
  and :class:`Credential` (API tokens, stored as SHA-256 only; no department means an
  administrator credential);
* **what is shared, with whom**: :class:`DataResource` (数据资源: a topic, its schema subject,
  its owner and its sharing class 共享类型) and :class:`Subscription` (订阅: who asked for
  which resource, why, under which legal basis, and who decided), with every state change
  kept in :class:`SubscriptionEvent`;
* **reference catalogs**: sectors, divisions (GB/T 2260), approval items (后置审批事项) with
  their routes (事项+区划→部门) and matching rules, credit list types (名单), matter types
  (事项类型) and joint-punishment measures (失信惩戒措施);
* :class:`AuditEntry`: one row per changed row, written in the same transaction by
  :mod:`registry.audit` (who, when, what, before and after);
* :class:`AssistanceItem` (``0006_assistance_items.py``): 行政协助事项清单, the items one
  department must assist another with, as the 编办 lists them (retired ones kept);
* :class:`WebhookEndpoint` (``0005_webhooks.py``): a department's webhook endpoint and
  its signing secret, for the webhook worker;
* :class:`OutboxEntry` (``0002_outbox.py``): the transactional outbox, one snapshot per
  changed published entity, written in the same transaction by :mod:`registry.outbox`
  and relayed to the registry's compacted topics by :mod:`registry.publisher`.

Enumerations are stored as short strings with a CHECK constraint (not PostgreSQL enum
types), so adding a value is a one-line migration.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from registry.seed import Level

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class SharingClass(StrEnum):
    """共享类型 of a data resource (政务信息资源共享管理暂行办法)."""

    UNCONDITIONAL = "UNCONDITIONAL"  # 无条件共享
    CONDITIONAL = "CONDITIONAL"  # 有条件共享: a request must name its fields and filters
    NOT_SHARED = "NOT_SHARED"  # 不予共享: requests are refused outright


class SubscriptionStatus(StrEnum):
    """Where a subscription stands; see :data:`registry.service.TRANSITIONS`."""

    REQUESTED = "REQUESTED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class MatchKind(StrEnum):
    """What a matching rule of an approval item compares a registration against."""

    SCOPE = "scope"  # a 许可项目 wording of the 经营范围规范表述目录
    INDUSTRY = "industry"  # a GB/T 4754-2017 industry class, e.g. H6210


#: Subscription states that hold (or may come to hold) access; one per resource and
#: subscriber at a time.
OPEN_STATUSES = (SubscriptionStatus.REQUESTED, SubscriptionStatus.APPROVED)


def _enum(enum: type[StrEnum], name: str) -> sa.Enum:
    return sa.Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(member.value) for member in enum),
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def _now() -> sa.ColumnElement[datetime]:
    return sa.func.now()


#: JSONB where Python None is SQL NULL (not the JSON value null).
NULLABLE_JSONB = JSONB(none_as_null=True)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

    #: Columns left out of audit snapshots (secrets, even hashed ones).
    __audit_exclude__: ClassVar[frozenset[str]] = frozenset()


# -- reference catalogs ---------------------------------------------------------------------


class Sector(Base):
    """部门类别: the kind of department an approval item or a measure names."""

    __tablename__ = "sectors"

    code: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)


class Division(Base):
    """行政区划 (GB/T 2260)."""

    __tablename__ = "divisions"
    __table_args__ = (sa.CheckConstraint("code ~ '^[0-9]{6}$'", name="code_six_digits"),)

    code: Mapped[str] = mapped_column(sa.String(6), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    level: Mapped[Level] = mapped_column(_enum(Level, "level"))
    parent_code: Mapped[str | None] = mapped_column(sa.ForeignKey("divisions.code"))


class ApprovalItem(Base):
    """后置审批事项: a permit a registration may need (双告知), and who approves it."""

    __tablename__ = "approval_items"

    code: Mapped[str] = mapped_column(sa.String(40), primary_key=True)  # 审批事项编码
    name: Mapped[str] = mapped_column(sa.Text)
    legal_basis: Mapped[str] = mapped_column(sa.Text)  # 设定依据
    sector_code: Mapped[str] = mapped_column(sa.ForeignKey("sectors.code"))
    level: Mapped[Level] = mapped_column(_enum(Level, "level"))
    category: Mapped[str] = mapped_column(sa.String(40))  # 许可类别 (LicenceCategory)
    certificate_name: Mapped[str] = mapped_column(sa.Text)
    validity_years: Mapped[int | None]

    routes: Mapped[list[ApprovalRoute]] = relationship(
        order_by="ApprovalRoute.division_code", viewonly=True
    )
    rules: Mapped[list[ApprovalMatchRule]] = relationship(
        order_by="ApprovalMatchRule.id", viewonly=True
    )


class ApprovalRoute(Base):
    """事项+区划→部门: the department a 双告知 push of an item in a division goes to."""

    __tablename__ = "approval_routes"
    __table_args__ = (sa.UniqueConstraint("item_code", "division_code"),)

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    item_code: Mapped[str] = mapped_column(sa.ForeignKey("approval_items.code"))
    division_code: Mapped[str] = mapped_column(sa.ForeignKey("divisions.code"))
    department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), index=True)

    department: Mapped[Department] = relationship()


class ApprovalMatchRule(Base):
    """One way a registration is matched to an approval item: a scope wording or an
    industry class."""

    __tablename__ = "approval_match_rules"
    __table_args__ = (sa.UniqueConstraint("item_code", "kind", "value"),)

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    item_code: Mapped[str] = mapped_column(sa.ForeignKey("approval_items.code"))
    kind: Mapped[MatchKind] = mapped_column(_enum(MatchKind, "match_kind"))
    value: Mapped[str] = mapped_column(sa.Text)


class CreditListType(Base):
    """名单: a credit list and its term (a CreditListType symbol of the Avro schema)."""

    __tablename__ = "credit_list_types"

    code: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    listing_sectors: Mapped[list[str]] = mapped_column(JSONB)
    duration_years: Mapped[int | None]
    early_removal_after_years: Mapped[int | None]
    extendable_years: Mapped[int | None]
    escalates_to: Mapped[str | None] = mapped_column(sa.ForeignKey("credit_list_types.code"))
    escalates_after_years: Mapped[int | None]
    legal_basis: Mapped[str] = mapped_column(sa.Text)


class MatterType(Base):
    """事项类型: a matter a department handles for an entity, which a measure may restrict."""

    __tablename__ = "matter_types"

    code: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)


class Measure(Base):
    """失信惩戒措施: a joint-punishment measure.

    Its sectors, list types and matter types are JSONB lists of catalog codes, checked
    against the catalogs by :mod:`registry.service` when written; one row (and one
    audit entry) per measure keeps its history readable.
    """

    __tablename__ = "measures"
    __table_args__ = (
        sa.CheckConstraint(
            "NOT feedback_required OR feedback_days IS NOT NULL", name="feedback_has_deadline"
        ),
    )

    code: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    text: Mapped[str] = mapped_column(sa.Text)  # 措施内容
    legal_basis: Mapped[str] = mapped_column(sa.Text)  # 措施依据
    implementing_sectors: Mapped[list[str]] = mapped_column(JSONB)
    list_types: Mapped[list[str]] = mapped_column(JSONB)
    matter_types: Mapped[list[str]] = mapped_column(JSONB)
    feedback_required: Mapped[bool]  # 是否需要反馈
    feedback_days: Mapped[int | None]  # 反馈期限
    #: 措施对象: ENTITY, or PERSONS_IN_ROLE with the roles whose holders it restricts
    target: Mapped[str] = mapped_column(sa.String(20), server_default="ENTITY")
    roles: Mapped[list[str]] = mapped_column(JSONB, server_default=sa.text("'[]'::jsonb"))


#: 定期协助的周期 an assistance item may have (``AssistanceCadence`` of assistance_item.avsc).
ASSISTANCE_CADENCES = ("MONTHLY", "QUARTERLY", "HALF_YEARLY", "YEARLY")


class AssistanceItem(Base):
    """行政协助事项: one item of an assistance list (行政协助事项清单, domain brief §7).

    The 编办 that supervises it (``supervising_department``) compiles the list; who may ask
    is a department, a sector, or (neither) any department. The list is adjusted
    dynamically (动态调整): an item is added, changed (``version`` counts its versions,
    the audit log keeps each one before and after) and retired (``retired_at``: no new
    request on it; the row stays, as do the requests made while it was listed).
    """

    __tablename__ = "assistance_items"
    __table_args__ = (
        sa.CheckConstraint("time_limit_days > 0", name="time_limit_positive"),
        sa.CheckConstraint(
            "requesting_sector_code IS NULL OR requesting_department_id IS NULL",
            name="one_kind_of_requester",
        ),
        sa.CheckConstraint(
            "cadence IS NULL OR cadence IN ('MONTHLY', 'QUARTERLY', 'HALF_YEARLY', 'YEARLY')",
            name="cadence_known",
        ),
    )

    code: Mapped[str] = mapped_column(sa.String(40), primary_key=True)  # 协助事项编码
    batch: Mapped[int]  # 批次
    name: Mapped[str] = mapped_column(sa.Text)  # 事项名称
    requesting_sector_code: Mapped[str | None] = mapped_column(sa.ForeignKey("sectors.code"))
    requesting_department_id: Mapped[int | None] = mapped_column(sa.ForeignKey("departments.id"))
    assisting_department_id: Mapped[int] = mapped_column(
        sa.ForeignKey("departments.id"), index=True
    )
    content: Mapped[str] = mapped_column(sa.Text)  # 协助内容
    time_limit_days: Mapped[int]  # 协助时限
    working_days: Mapped[bool]  # 时限按工作日计
    cadence: Mapped[str | None] = mapped_column(sa.String(20))  # 定期协助的周期
    legal_basis: Mapped[str] = mapped_column(sa.Text)  # 协助依据
    supervising_department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"))
    version: Mapped[int] = mapped_column(server_default="1")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    retired_reason: Mapped[str | None] = mapped_column(sa.Text)

    requesting_department: Mapped[Department | None] = relationship(
        foreign_keys=[requesting_department_id]
    )
    assisting_department: Mapped[Department] = relationship(foreign_keys=[assisting_department_id])
    supervising_department: Mapped[Department] = relationship(
        foreign_keys=[supervising_department_id]
    )


# -- departments and their credentials ------------------------------------------------------


class Department(Base):
    """部门: a government department on the platform, with its own Kafka principal."""

    __tablename__ = "departments"
    __table_args__ = (
        sa.CheckConstraint("code ~ '^[a-z0-9]+(-[a-z0-9]+)*$'", name="code_ascii"),
        sa.CheckConstraint("char_length(uscc) = 18", name="uscc_length"),
    )

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(40), unique=True)
    uscc: Mapped[str] = mapped_column(sa.String(18), unique=True)
    name: Mapped[str] = mapped_column(sa.Text)
    sector_code: Mapped[str] = mapped_column(sa.ForeignKey("sectors.code"))
    roles: Mapped[list[str]] = mapped_column(JSONB)
    level: Mapped[Level] = mapped_column(_enum(Level, "level"))
    division_code: Mapped[str] = mapped_column(sa.ForeignKey("divisions.code"))
    contact: Mapped[str] = mapped_column(sa.Text)
    kafka_principal: Mapped[str] = mapped_column(sa.String(80), unique=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


#: The scopes a token may carry: reading a department's inbox, and acting on it (the inbox
#: API, ``connectors/inbox/``). A token is issued with both unless it is given fewer.
TOKEN_SCOPES = ("inbox:read", "inbox:act")


class Credential(Base):
    """An API token of a department (or, with no department, of an administrator).

    Only the token's SHA-256 is kept; the token is shown once, when it is issued.
    """

    __tablename__ = "credentials"
    __audit_exclude__ = frozenset({"token_sha256"})

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    department_id: Mapped[int | None] = mapped_column(sa.ForeignKey("departments.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    issued_by: Mapped[str] = mapped_column(sa.Text)
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    #: What the token may be used for beyond the registry API (:data:`TOKEN_SCOPES`).
    scopes: Mapped[list[str]] = mapped_column(JSONB, default=lambda: list(TOKEN_SCOPES))

    department: Mapped[Department | None] = relationship()

    @property
    def is_admin(self) -> bool:
        return self.department_id is None


# -- data resources and subscriptions -------------------------------------------------------


class DataResource(Base):
    """数据资源: one topic of records, its owner and how it may be shared."""

    __tablename__ = "data_resources"
    __table_args__ = (
        sa.CheckConstraint("code ~ '^[a-z0-9]+([_.-][a-z0-9]+)*$'", name="code_ascii"),
    )

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(80), unique=True)
    name: Mapped[str] = mapped_column(sa.Text)
    topic: Mapped[str] = mapped_column(sa.String(249), unique=True)
    schema_subject: Mapped[str] = mapped_column(sa.Text)
    owner_department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), index=True)
    sharing_class: Mapped[SharingClass] = mapped_column(_enum(SharingClass, "sharing_class"))
    fields: Mapped[list[str]] = mapped_column(JSONB)
    description: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))

    owner: Mapped[Department] = relationship()


class Subscription(Base):
    """订阅: a department's request for a resource, and what was decided about it."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        # One open (requested or approved) subscription per resource and subscriber.
        sa.Index(
            "uq_subscriptions_open_per_subscriber",
            "resource_id",
            "subscriber_department_id",
            unique=True,
            postgresql_where=sa.text("status IN ('REQUESTED', 'APPROVED')"),
        ),
        sa.Index("ix_subscriptions_status_valid_until", "status", "valid_until"),
    )

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    resource_id: Mapped[int] = mapped_column(sa.ForeignKey("data_resources.id"), index=True)
    subscriber_department_id: Mapped[int] = mapped_column(
        sa.ForeignKey("departments.id"), index=True
    )
    purpose: Mapped[str] = mapped_column(sa.Text)  # 用途
    legal_basis: Mapped[str] = mapped_column(sa.Text)  # 依据
    fields: Mapped[list[str] | None] = mapped_column(NULLABLE_JSONB)  # None: every field
    filters: Mapped[dict[str, Any] | None] = mapped_column(
        NULLABLE_JSONB
    )  # e.g. {"divisions": [...]}
    status: Mapped[SubscriptionStatus] = mapped_column(
        _enum(SubscriptionStatus, "subscription_status")
    )
    requested_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    requested_by: Mapped[str] = mapped_column(sa.Text)
    valid_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(sa.Text)
    decided_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(sa.Text)

    resource: Mapped[DataResource] = relationship()
    subscriber: Mapped[Department] = relationship()
    events: Mapped[list[SubscriptionEvent]] = relationship(
        order_by="SubscriptionEvent.id", viewonly=True
    )


class SubscriptionEvent(Base):
    """One transition of a subscription: from which state to which, by whom, when, why."""

    __tablename__ = "subscription_events"

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), index=True)
    from_status: Mapped[SubscriptionStatus | None] = mapped_column(
        _enum(SubscriptionStatus, "from_status")
    )
    to_status: Mapped[SubscriptionStatus] = mapped_column(_enum(SubscriptionStatus, "to_status"))
    actor: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(sa.Text)


# -- webhooks (0005) ------------------------------------------------------------------------


class WebhookEndpoint(Base):
    """推送地址: where the webhook worker (``connectors/webhooks``) POSTs the department's
    inbox items, one endpoint per department, signed with its secret (Standard Webhooks).

    The secret (``whsec_<base64>``) is kept as is, because signing needs it; it is shown
    once, when it is made, and left out of the audit log. After a rotation the previous
    secret still signs until ``previous_secret_valid_until`` (both signatures are sent),
    so a receiver can switch without losing a delivery.
    """

    __tablename__ = "webhook_endpoints"
    __audit_exclude__ = frozenset({"secret", "previous_secret"})

    id: Mapped[int] = mapped_column(sa.Identity(), primary_key=True)
    department_id: Mapped[int] = mapped_column(sa.ForeignKey("departments.id"), unique=True)
    url: Mapped[str] = mapped_column(sa.Text)
    cloudevents: Mapped[bool] = mapped_column(sa.Boolean)  # CloudEvents structured mode
    secret: Mapped[str] = mapped_column(sa.Text)
    previous_secret: Mapped[str | None] = mapped_column(sa.Text)
    previous_secret_valid_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    secret_rotated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    department: Mapped[Department] = relationship()


# -- the audit log --------------------------------------------------------------------------


class AuditEntry(Base):
    """One changed row: who changed it, when, by which operation, before and after.

    ``before`` is null for a created row, ``after`` for a deleted one.
    """

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_entity", "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now())
    actor: Mapped[str] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.Text)
    entity: Mapped[str] = mapped_column(sa.Text)  # the table name
    entity_id: Mapped[str] = mapped_column(sa.Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSONB)


# -- the outbox -----------------------------------------------------------------------------


class OutboxEntry(Base):
    """A snapshot of one published entity, waiting for (or already given to) the broker.

    Written by :mod:`registry.outbox` in the transaction that changed the entity, so
    the change and its event commit together; marked ``published_at`` by
    :class:`registry.publisher.OutboxRelay` once the broker has acknowledged it.
    ``payload`` is the Avro record of the topic's schema as JSON (timestamps in epoch
    milliseconds); null for a removed entity, which is published as a tombstone.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # The relay's queue: only the unpublished rows, in id order.
        sa.Index("ix_outbox_unpublished", "id", postgresql_where=sa.text("published_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(sa.String(249))
    key: Mapped[str] = mapped_column(sa.Text)
    payload: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSONB)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now())
    published_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


def row_snapshot(row: Base) -> dict[str, Any]:
    """A row's column values as JSON-ready values (for the audit log and API echoes)."""
    snapshot: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.key in row.__audit_exclude__:
            continue
        snapshot[column.key] = _json_value(getattr(row, column.key))
    return snapshot


def _json_value(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
