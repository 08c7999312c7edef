"""The credit-check API's contract: the query parameters, the answer and the refusals,
as typed pydantic models (the OpenAPI document at ``/openapi.json`` is made of them)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, Field

from streams.credit_check.rules import CheckingDepartment, Listing, MeasureHit, Verdict
from xietong.http_errors import error_responses


class ListTypeOut(BaseModel):
    code: str = Field(examples=["SERIOUS_ILLEGAL_DISHONEST"])
    name: str = Field(examples=["严重违法失信名单"])


class AuthorityOut(BaseModel):
    name: str = Field(description="列入机关", examples=["杭州市市场监督管理局"])
    uscc: str = Field(description="列入机关统一社会信用代码")


class ListingOut(BaseModel):
    """名单条目: a listing of the entity in force on the matter date."""

    entry_id: str = Field(description="名单条目标识")
    list_type: ListTypeOut = Field(description="名单类型")
    listed_on: date = Field(description="列入日期")
    planned_removal_on: date | None = Field(description="预计移出日期; null: no fixed term")
    removed_on: date | None = Field(
        description="实际移出日期, when a removal after the matter date is already known"
    )
    listing_authority: AuthorityOut = Field(description="列入机关")
    reason: str = Field(description="列入事由")
    legal_basis: str = Field(description="列入依据")
    document_number: str = Field(description="决定文书号")

    @classmethod
    def of(cls, listing: Listing, list_type_names: dict[str, str]) -> ListingOut:
        return cls(
            entry_id=listing.entry_id,
            list_type=ListTypeOut(
                code=listing.list_type,
                name=list_type_names.get(listing.list_type, listing.list_type),
            ),
            listed_on=listing.listed_on,
            planned_removal_on=listing.planned_removal_on,
            removed_on=listing.removed_on,
            listing_authority=AuthorityOut(
                name=listing.listing_authority_name, uscc=listing.listing_authority_uscc
            ),
            reason=listing.reason,
            legal_basis=listing.legal_basis,
            document_number=listing.document_number,
        )


class MeasureOut(BaseModel):
    """失信惩戒措施: a measure that restricts the matter for this entity."""

    code: str = Field(description="措施编码", examples=["CJ01"])
    text: str = Field(description="措施内容", examples=["依法限制作为供应商参加政府采购活动"])
    legal_basis: str = Field(description="措施依据")
    implementing_sectors: list[str] = Field(description="实施部门类别编码")
    implemented_by_checking_department: bool = Field(
        description="Whether the checking department's sector is one of the implementing"
        " ones: always true, since only a measure that binds the checking department is"
        " listed (streams/measures.py); kept for the clients that read it"
    )
    feedback_required: bool = Field(description="是否需要反馈: report back what was done")
    feedback_days: int | None = Field(description="反馈期限 (days), when feedback is required")
    entry_ids: list[str] = Field(description="The listings (entry ids above) that trigger it")

    @classmethod
    def of(cls, hit: MeasureHit, checker: CheckingDepartment) -> MeasureOut:
        measure = hit.measure
        return cls(
            code=measure["code"],
            text=measure["text"],
            legal_basis=measure["legal_basis"],
            implementing_sectors=measure["implementing_sectors"],
            implemented_by_checking_department=checker.sector in measure["implementing_sectors"],
            feedback_required=measure["feedback_required"],
            feedback_days=measure["feedback_days"],
            entry_ids=[listing.entry_id for listing in hit.listings],
        )


class MatterOut(BaseModel):
    """办理事项: what the department is handling, as the query gave it."""

    matter_type: str = Field(description="事项类型编码", examples=["GOVERNMENT_PROCUREMENT"])
    matter_type_name: str = Field(description="事项类型名称", examples=["政府采购"])
    matter_date: date = Field(description="办理日期: the listings in force on it apply")
    matter_ref: str | None = Field(description="事项编号, as given")


class CreditCheckOut(BaseModel):
    """The answer to a credit check (信用核查结果)."""

    check_id: str = Field(
        description="核查标识: uuid5 of department, USCC, matter type and matter reference"
        " (or date); the same check again has the same id"
    )
    uscc: str = Field(description="统一社会信用代码")
    entity_name: str | None = Field(description="主体名称, as the listings name it")
    department: str = Field(description="The checking department (the token's)")
    matter: MatterOut
    verdict: Verdict = Field(
        description="RESTRICTED: at least one measure below applies; CLEAR: none does. A"
        " measure applies when it binds the checking department (its sector implements it)"
        " and restricts the entity itself: a measure of another sector, or one restricting"
        " persons in the entity (target PERSONS_IN_ROLE), does not — joint punishment makes"
        " a restriction hit exactly when this says RESTRICTED (streams/measures.py)"
    )
    listings: list[ListingOut] = Field(description="Listings in force on the matter date")
    measures: list[MeasureOut] = Field(
        description="Measures binding the checking department for this matter"
    )
    checked_at: datetime


class ReadyOut(BaseModel):
    status: str = Field(description="ready, loading or failed", examples=["ready"])
    reason: str | None = Field(default=None, description="Why loading failed")
    list_entries_read: int
    listings: int
    measures: int
    list_types: int


ERROR_RESPONSES = error_responses(
    {
        401: "No bearer token, or an unknown or revoked one.",
        403: "An administrator token: checks are departments'.",
        422: "A parameter is invalid; `field` names it.",
        503: "The state is still being loaded, or the registry database (which"
        " holds the tokens) does not answer; retry shortly.",
    }
)


UsccParameter = Annotated[
    str,
    Query(
        description="统一社会信用代码 of the entity (18 characters, both check characters valid)",
        min_length=18,
        max_length=18,
        examples=["91330106MA2CD7Q4XU"],
    ),
]
MatterTypeParameter = Annotated[
    str,
    Query(
        description="事项类型编码 of the registry's catalog",
        pattern=r"^[A-Z][A-Z0-9_]{0,39}$",
        examples=["GOVERNMENT_PROCUREMENT"],
    ),
]
MatterDateParameter = Annotated[
    date | None,
    Query(description="办理日期 (default: today, China Standard Time)", examples=["2026-03-02"]),
]
MatterRefParameter = Annotated[
    str | None,
    Query(
        description="事项编号: the department's own reference of the matter (bid, application)",
        min_length=1,
        max_length=200,
        examples=["ZJCG-2026-0117"],
    ),
]
