"""The registry API's contract: typed request and response bodies.

The OpenAPI document generated from these models is the contract (``/openapi.json``);
``xietong registry … --json`` prints the same response models, so the CLI and the API
show a record the same way. Each response model is built from its ORM row by ``of``.

Free text is any Unicode text without NUL characters (PostgreSQL cannot store them);
codes are short ASCII identifiers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from registry import models
from registry.grants import DepartmentGrant
from registry.models import MatchKind, SharingClass, SubscriptionStatus
from registry.seed import DepartmentRole, Level


def _storable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[
    str,
    Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$"),
    AfterValidator(_storable),
]
Name = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$"),
    AfterValidator(_storable),
]
DepartmentCode = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$",
        max_length=40,
        description="Stable ASCII id, e.g. hz-amr; the Kafka principal is User:dept-<code>.",
        examples=["hz-amr"],
    ),
]
ResourceCode = Annotated[
    str,
    Field(pattern=r"^[a-z0-9]+([_.-][a-z0-9]+)*$", max_length=80, examples=["registration"]),
]
CatalogCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$", max_length=40)]
DivisionCode = Annotated[
    str, Field(pattern=r"^[0-9]{6}$", description="GB/T 2260", examples=["330106"])
]
Uscc = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-Z]{18}$",
        description="统一社会信用代码 (GB 32100); both check characters are verified.",
        examples=["11330100JLBT8T3F6B"],
    ),
]
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$", max_length=249)]
FieldName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
Contact = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    database: str
    migration: str | None = Field(description="The database's migration revision.")


# -- departments and credentials ------------------------------------------------------------


class DepartmentIn(_Request):
    """A department to register (administrators only)."""

    code: DepartmentCode
    uscc: Uscc
    name: Name
    sector: CatalogCode = Field(description="部门类别, a code of /catalog/sectors")
    roles: list[DepartmentRole] = Field(min_length=1, max_length=5)
    level: Level
    division: DivisionCode
    contact: Contact


class _FromRow(BaseModel):
    """A response made of a database row's attributes of the same names."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, row: object) -> Self:
        return cls.model_validate(row)


def _attributes(model: type[BaseModel], row: object, **derived: Any) -> dict[str, Any]:
    """The fields of ``model``: those given in ``derived``, the others read from the
    attribute of the same name of ``row`` (a database row)."""
    return {
        name: derived[name] if name in derived else getattr(row, name)
        for name in model.model_fields
    }


class DepartmentOut(BaseModel):
    code: str
    uscc: str
    name: str
    sector: str
    roles: list[str]
    level: Level
    division: str
    contact: str
    kafka_principal: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: models.Department) -> DepartmentOut:
        return cls(**_attributes(cls, row, sector=row.sector_code, division=row.division_code))


TokenScope = Literal["inbox:read", "inbox:act"]  # registry.models.TOKEN_SCOPES


class CredentialIn(_Request):
    department: DepartmentCode | None = Field(
        default=None, description="The department the token is for; null: an administrator."
    )
    scopes: list[TokenScope] | None = Field(
        default=None,
        description="What the token may be used for beyond the registry API: inbox:read"
        " (read the department's inbox over the inbox API), inbox:act (claim, return, stop,"
        " give feedback there). Null: both.",
    )


class CredentialOut(BaseModel):
    id: int
    department: str | None = Field(description="null: an administrator credential")
    issued_at: datetime
    issued_by: str
    revoked_at: datetime | None
    scopes: list[str] = Field(description="inbox:read, inbox:act")

    @classmethod
    def of(cls, row: models.Credential) -> CredentialOut:
        department = None if row.department is None else row.department.code
        return cls(**_attributes(cls, row, department=department))


class IssuedCredential(CredentialOut):
    token: str = Field(
        description="The bearer token, shown this once; the registry keeps only its SHA-256."
    )


# -- data resources -------------------------------------------------------------------------


class ResourceIn(_Request):
    """A data resource to declare: by its owner (on ``dept.<owner>.`` topics) or an admin."""

    code: ResourceCode
    name: Name
    topic: TopicName
    schema_subject: Name | None = Field(default=None, description="default: <topic>-value")
    owner: DepartmentCode | None = Field(
        default=None, description="default: the calling department (required for an admin)"
    )
    sharing_class: SharingClass = Field(
        description="UNCONDITIONAL 无条件共享, CONDITIONAL 有条件共享, NOT_SHARED 不予共享"
    )
    fields: list[FieldName] = Field(min_length=1, max_length=200)
    description: Text


class ResourceOut(BaseModel):
    code: str
    name: str
    topic: str
    schema_subject: str
    owner: str
    sharing_class: SharingClass
    fields: list[str]
    description: str
    created_at: datetime

    @classmethod
    def of(cls, row: models.DataResource) -> ResourceOut:
        return cls(**_attributes(cls, row, owner=row.owner.code))


# -- subscriptions --------------------------------------------------------------------------


class SubscriptionFilters(_Request):
    """What part of a resource a subscriber receives."""

    divisions: list[DivisionCode] | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Only records about entities in these divisions (GB/T 2260).",
    )


class SubscriptionIn(_Request):
    """A department asks for a data resource."""

    resource: ResourceCode
    department: DepartmentCode | None = Field(
        default=None,
        description="The requesting department; default: the caller (an admin must name it).",
    )
    purpose: Text = Field(description="用途: what the data is for")
    legal_basis: Text = Field(description="依据: the law or document that allows it")
    fields: list[FieldName] | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Fields needed; required for CONDITIONAL resources; default: all.",
    )
    filters: SubscriptionFilters | None = Field(
        default=None, description="Required for CONDITIONAL resources."
    )
    valid_until: AwareDatetime | None = Field(
        default=None, description="Requested end of access; the approver may change it."
    )


class ApprovalIn(_Request):
    valid_until: AwareDatetime | None = Field(
        default=None, description="End of access; default: the requested end, if any."
    )
    reason: Text | None = None


class RefusalIn(_Request):
    reason: Text = Field(description="Why: shown to the requesting department and audited.")


class SubscriptionOut(BaseModel):
    id: int
    resource: str
    topic: str
    owner: str
    subscriber: str
    purpose: str
    legal_basis: str
    fields: list[str] | None
    filters: dict[str, Any] | None
    status: SubscriptionStatus
    requested_at: datetime
    requested_by: str
    valid_until: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None

    @classmethod
    def of(cls, row: models.Subscription) -> SubscriptionOut:
        resource = row.resource
        return cls(
            **_attributes(
                cls,
                row,
                resource=resource.code,
                topic=resource.topic,
                owner=resource.owner.code,
                subscriber=row.subscriber.code,
            )
        )


class SubscriptionEventOut(_FromRow):
    from_status: SubscriptionStatus | None = Field(description="null for the request itself")
    to_status: SubscriptionStatus
    actor: str
    at: datetime
    reason: str | None


class GrantOut(BaseModel):
    """A department's broker access now (see registry.grants.DepartmentGrant)."""

    department: str
    principal: str
    read_topics: list[str]
    write_topics: list[str]
    group_prefix: str

    @classmethod
    def of(cls, grant: DepartmentGrant) -> GrantOut:
        return cls(
            department=grant.department_code,
            principal=grant.principal,
            read_topics=sorted(grant.read_topics),
            write_topics=sorted(grant.write_topics),
            group_prefix=grant.group_prefix,
        )


# -- reference catalogs ---------------------------------------------------------------------


class SectorOut(BaseModel):
    code: str
    name: str


class DivisionOut(BaseModel):
    code: str
    name: str
    level: Level
    parent: str | None

    @classmethod
    def of(cls, row: models.Division) -> DivisionOut:
        return cls(code=row.code, name=row.name, level=row.level, parent=row.parent_code)


class RouteOut(BaseModel):
    division: str
    department: str


class ApprovalItemOut(BaseModel):
    """后置审批事项 with its routes (事项+区划→部门) and matching rules."""

    code: str
    name: str
    legal_basis: str
    sector: str
    level: Level
    category: str
    certificate_name: str
    validity_years: int | None
    routes: list[RouteOut]
    scope_wordings: list[str] = Field(description="许可项目 wordings that need the item")
    industry_codes: list[str] = Field(description="GB/T 4754 classes that usually need it")

    @classmethod
    def of(cls, row: models.ApprovalItem) -> ApprovalItemOut:
        return cls(
            **_attributes(
                cls,
                row,
                sector=row.sector_code,
                routes=[
                    RouteOut(division=route.division_code, department=route.department.code)
                    for route in row.routes
                ],
                scope_wordings=[rule.value for rule in row.rules if rule.kind is MatchKind.SCOPE],
                industry_codes=[
                    rule.value for rule in row.rules if rule.kind is MatchKind.INDUSTRY
                ],
            )
        )


class CreditListTypeOut(_FromRow):
    code: str
    name: str
    listing_sectors: list[str]
    duration_years: int | None
    early_removal_after_years: int | None
    extendable_years: int | None
    escalates_to: str | None
    escalates_after_years: int | None
    legal_basis: str


class MatterTypeOut(BaseModel):
    code: str
    name: str


class MeasureOut(_FromRow):
    code: str
    text: str
    legal_basis: str
    implementing_sectors: list[str]
    list_types: list[str]
    matter_types: list[str]
    feedback_required: bool
    feedback_days: int | None
    target: str = "ENTITY"
    roles: list[str] = []


class AuditEntryOut(_FromRow):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
