"""The registry: reference catalogs, departments, credentials, resources, subscriptions, audit.

Revision ID: 0001
Revises:
Create Date: 2026-05-04

Hand-written. Enumerations are VARCHAR columns with a CHECK constraint, so adding a value
later is a constraint swap rather than an ALTER TYPE. Constraint names follow the
naming convention of ``registry.models.NAMING_CONVENTION``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LEVELS = ("province", "city", "county")
SHARING_CLASSES = ("UNCONDITIONAL", "CONDITIONAL", "NOT_SHARED")
SUBSCRIPTION_STATUSES = ("REQUESTED", "APPROVED", "REJECTED", "REVOKED", "EXPIRED")
MATCH_KINDS = ("scope", "industry")


def one_of(table: str, column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=f"ck_{table}_{name}")


def moment(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # -- reference catalogs ----------------------------------------------------------------
    op.create_table(
        "sectors",
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_sectors"),
    )
    op.create_table(
        "divisions",
        sa.Column("code", sa.String(6), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("parent_code", sa.String(6), nullable=True),
        sa.PrimaryKeyConstraint("code", name="pk_divisions"),
        sa.ForeignKeyConstraint(
            ["parent_code"], ["divisions.code"], name="fk_divisions_parent_code"
        ),
        sa.CheckConstraint("code ~ '^[0-9]{6}$'", name="ck_divisions_code_six_digits"),
        one_of("divisions", "level", LEVELS, "level"),
    )
    op.create_table(
        "approval_items",
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("sector_code", sa.String(40), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("certificate_name", sa.Text(), nullable=False),
        sa.Column("validity_years", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("code", name="pk_approval_items"),
        sa.ForeignKeyConstraint(
            ["sector_code"], ["sectors.code"], name="fk_approval_items_sector_code"
        ),
        one_of("approval_items", "level", LEVELS, "level"),
    )
    op.create_table(
        "credit_list_types",
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("listing_sectors", JSONB(), nullable=False),
        sa.Column("duration_years", sa.Integer(), nullable=True),
        sa.Column("early_removal_after_years", sa.Integer(), nullable=True),
        sa.Column("extendable_years", sa.Integer(), nullable=True),
        sa.Column("escalates_to", sa.String(40), nullable=True),
        sa.Column("escalates_after_years", sa.Integer(), nullable=True),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_credit_list_types"),
        sa.ForeignKeyConstraint(
            ["escalates_to"], ["credit_list_types.code"], name="fk_credit_list_types_escalates_to"
        ),
    )
    op.create_table(
        "matter_types",
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_matter_types"),
    )
    op.create_table(
        "measures",
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("implementing_sectors", JSONB(), nullable=False),
        sa.Column("list_types", JSONB(), nullable=False),
        sa.Column("matter_types", JSONB(), nullable=False),
        sa.Column("feedback_required", sa.Boolean(), nullable=False),
        sa.Column("feedback_days", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("code", name="pk_measures"),
        sa.CheckConstraint(
            "NOT feedback_required OR feedback_days IS NOT NULL",
            name="ck_measures_feedback_has_deadline",
        ),
    )

    # -- departments and credentials ---------------------------------------------------------
    op.create_table(
        "departments",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sector_code", sa.String(40), nullable=False),
        sa.Column("roles", JSONB(), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("division_code", sa.String(6), nullable=False),
        sa.Column("contact", sa.Text(), nullable=False),
        sa.Column("kafka_principal", sa.String(80), nullable=False),
        moment("created_at"),
        moment("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_departments"),
        sa.UniqueConstraint("code", name="uq_departments_code"),
        sa.UniqueConstraint("uscc", name="uq_departments_uscc"),
        sa.UniqueConstraint("kafka_principal", name="uq_departments_kafka_principal"),
        sa.ForeignKeyConstraint(
            ["sector_code"], ["sectors.code"], name="fk_departments_sector_code"
        ),
        sa.ForeignKeyConstraint(
            ["division_code"], ["divisions.code"], name="fk_departments_division_code"
        ),
        sa.CheckConstraint("code ~ '^[a-z0-9]+(-[a-z0-9]+)*$'", name="ck_departments_code_ascii"),
        sa.CheckConstraint("char_length(uscc) = 18", name="ck_departments_uscc_length"),
        one_of("departments", "level", LEVELS, "level"),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        moment("issued_at"),
        sa.Column("issued_by", sa.Text(), nullable=False),
        moment("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_credentials"),
        sa.UniqueConstraint("token_sha256", name="uq_credentials_token_sha256"),
        sa.ForeignKeyConstraint(
            ["department_id"], ["departments.id"], name="fk_credentials_department_id"
        ),
    )
    op.create_index("ix_credentials_department_id", "credentials", ["department_id"])

    # -- approval routes and matching rules (they name departments) --------------------------
    op.create_table(
        "approval_routes",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("item_code", sa.String(40), nullable=False),
        sa.Column("division_code", sa.String(6), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval_routes"),
        sa.UniqueConstraint(
            "item_code", "division_code", name="uq_approval_routes_item_code_division_code"
        ),
        sa.ForeignKeyConstraint(
            ["item_code"], ["approval_items.code"], name="fk_approval_routes_item_code"
        ),
        sa.ForeignKeyConstraint(
            ["division_code"], ["divisions.code"], name="fk_approval_routes_division_code"
        ),
        sa.ForeignKeyConstraint(
            ["department_id"], ["departments.id"], name="fk_approval_routes_department_id"
        ),
    )
    op.create_index("ix_approval_routes_department_id", "approval_routes", ["department_id"])
    op.create_table(
        "approval_match_rules",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("item_code", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval_match_rules"),
        sa.UniqueConstraint(
            "item_code", "kind", "value", name="uq_approval_match_rules_item_code_kind_value"
        ),
        sa.ForeignKeyConstraint(
            ["item_code"], ["approval_items.code"], name="fk_approval_match_rules_item_code"
        ),
        one_of("approval_match_rules", "kind", MATCH_KINDS, "match_kind"),
    )

    # -- data resources and subscriptions ----------------------------------------------------
    op.create_table(
        "data_resources",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("code", sa.String(80), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("schema_subject", sa.Text(), nullable=False),
        sa.Column("owner_department_id", sa.Integer(), nullable=False),
        sa.Column("sharing_class", sa.String(13), nullable=False),
        sa.Column("fields", JSONB(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        moment("created_at"),
        moment("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_data_resources"),
        sa.UniqueConstraint("code", name="uq_data_resources_code"),
        sa.UniqueConstraint("topic", name="uq_data_resources_topic"),
        sa.ForeignKeyConstraint(
            ["owner_department_id"],
            ["departments.id"],
            name="fk_data_resources_owner_department_id",
        ),
        sa.CheckConstraint(
            "code ~ '^[a-z0-9]+([_.-][a-z0-9]+)*$'", name="ck_data_resources_code_ascii"
        ),
        one_of("data_resources", "sharing_class", SHARING_CLASSES, "sharing_class"),
    )
    op.create_index(
        "ix_data_resources_owner_department_id", "data_resources", ["owner_department_id"]
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_department_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("fields", JSONB(), nullable=True),
        sa.Column("filters", JSONB(), nullable=True),
        sa.Column("status", sa.String(9), nullable=False),
        moment("requested_at"),
        sa.Column("requested_by", sa.Text(), nullable=False),
        moment("valid_until", nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        moment("decided_at", nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["data_resources.id"], name="fk_subscriptions_resource_id"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_department_id"],
            ["departments.id"],
            name="fk_subscriptions_subscriber_department_id",
        ),
        one_of("subscriptions", "status", SUBSCRIPTION_STATUSES, "subscription_status"),
    )
    op.create_index("ix_subscriptions_resource_id", "subscriptions", ["resource_id"])
    op.create_index(
        "ix_subscriptions_subscriber_department_id", "subscriptions", ["subscriber_department_id"]
    )
    op.create_index(
        "ix_subscriptions_status_valid_until", "subscriptions", ["status", "valid_until"]
    )
    # At most one open (requested or approved) subscription per resource and subscriber.
    op.create_index(
        "uq_subscriptions_open_per_subscriber",
        "subscriptions",
        ["resource_id", "subscriber_department_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('REQUESTED', 'APPROVED')"),
    )
    op.create_table(
        "subscription_events",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(9), nullable=True),
        sa.Column("to_status", sa.String(9), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        moment("at"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_subscription_events"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_subscription_events_subscription_id",
        ),
        one_of("subscription_events", "from_status", SUBSCRIPTION_STATUSES, "from_status"),
        one_of("subscription_events", "to_status", SUBSCRIPTION_STATUSES, "to_status"),
    )
    op.create_index(
        "ix_subscription_events_subscription_id", "subscription_events", ["subscription_id"]
    )

    # -- the audit log ------------------------------------------------------------------------
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.Text(), nullable=False),
        sa.Column("before", JSONB(), nullable=True),
        sa.Column("after", JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_entity", "audit_log", ["entity", "entity_id"])


def downgrade() -> None:
    for table in (
        "audit_log",
        "subscription_events",
        "subscriptions",
        "data_resources",
        "approval_match_rules",
        "approval_routes",
        "credentials",
        "departments",
        "measures",
        "matter_types",
        "credit_list_types",
        "approval_items",
        "divisions",
        "sectors",
    ):
        op.drop_table(table)
