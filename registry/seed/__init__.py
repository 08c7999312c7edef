"""The sample province (样例省): reference data for tests, the benchmark and the demo.

``sample_province.yaml`` describes one fictional-but-realistic province modelled on
Zhejiang (浙江省, 330000) with two cities and three districts under each:

* **departments** (部门) at province, city and county level, each with its own USCC, its
  sector (部门类别, e.g. 市场监管) and its roles on the platform (登记、审批、执法、信用);
* the **approval catalog** (工商登记后置审批事项目录): 21 post-registration approval items
  (the domain brief's 20, 药品经营许可 split into retail and wholesale as 药品管理法 §51 does)
  with their legal basis, the sector and level that approves them, and the 许可项目
  wordings and GB/T 4754 industry classes that need them;
* the **routing table** (事项+区划→部门) that names, for every item and every city and county,
  the department a 双告知 push goes to — with one deliberate gap (农药经营许可 in 上城区)
  so that 分流失败 (routing failed) can be exercised;
* the **credit lists** (名单) with their terms and the **joint-punishment measures**
  (失信惩戒措施) with the matters they restrict and their feedback deadlines;
* the **assistance lists** (行政协助事项清单, domain brief §7) of the two cities and the
  province: who may ask, who must assist, what, within how many days, on which basis, and
  which 编办 supervises the item; some are standing data duties at a cadence (定期协助).

Example::

    province = load_sample_province()
    department = province.route("SPJYXK", "330106")   # 食品经营许可 in 西湖区
    assert department is not None and department.name == "杭州市西湖区市场监督管理局"
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache, cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from xietong.uscc import uscc_problems

SAMPLE_PROVINCE_FILE = Path(__file__).parent / "sample_province.yaml"

#: Symbols of the CreditListType enum of ``schemas/avro/credit_list_entry.avsc`` (UNKNOWN aside).
CREDIT_LIST_TYPES = (
    "SERIOUS_ILLEGAL_DISHONEST",
    "ABNORMAL_OPERATION",
    "JUDGMENT_DEFAULTER",
    "MAJOR_TAX_VIOLATION",
    "SECTOR",
)


class Level(StrEnum):
    """Administrative level (层级) of a division, a department or an approval."""

    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"


class DepartmentRole(StrEnum):
    """What a department does on the platform; one department may have several roles."""

    REGISTRATION = "registration"  # 登记机关
    LICENSING = "licensing"  # 审批部门
    ENFORCEMENT = "enforcement"  # 执法部门
    CREDIT = "credit"  # 信用主管部门 (信用办)
    OTHER = "other"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Division(_Strict):
    """An administrative division (行政区划), GB/T 2260."""

    code: str = Field(pattern=r"^\d{6}$")
    name: str
    level: Level
    parent: str | None = None


class Department(_Strict):
    """A government department (部门) that publishes or receives records."""

    code: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", description="stable id, e.g. hz-amr")
    name: str
    sector: str = Field(description="部门类别, a key of SampleProvince.sectors")
    roles: tuple[DepartmentRole, ...] = Field(min_length=1)
    level: Level
    division: str
    uscc: str
    contact: str = Field(description="办公电话 (fictional)")

    @field_validator("uscc")
    @classmethod
    def _valid_uscc(cls, value: str) -> str:
        problems = uscc_problems(value)
        if problems:
            raise ValueError("; ".join(problem.message for problem in problems))
        return value


class ScopeMatch(_Strict):
    """How a registration is matched to an approval item."""

    scope: tuple[str, ...] = Field(description="许可项目 wordings of the 经营范围规范表述目录")
    industry: tuple[str, ...] = Field(
        default=(), description="GB/T 4754-2017 classes, section letter + 4 digits, e.g. H6210"
    )

    @field_validator("industry")
    @classmethod
    def _industry_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [c for c in value if not (len(c) == 5 and c[0].isupper() and c[1:].isdigit())]
        if wrong:
            raise ValueError(f"industry codes must look like H6210, found {wrong}")
        return value


class ApprovalItem(_Strict):
    """A post-registration approval item (后置审批事项) of the catalog."""

    code: str = Field(description="审批事项编码")
    name: str
    legal_basis: str = Field(description="设定依据")
    sector: str = Field(description="the approving department's sector")
    level: Level = Field(description="where the item is approved")
    category: str = Field(description="许可类别, a LicenceCategory symbol")
    certificate_name: str = Field(description="许可证书名称")
    validity_years: int | None = Field(description="the permit's usual term; None: not modelled")
    match: ScopeMatch

    def matches_scope_entry(self, entry: str) -> bool:
        """Whether one 经营范围 entry needs this item.

        An entry matches a wording when it equals it or is the wording followed by a
        parenthesised qualifier: "危险化学品经营（不含仓储）" matches "危险化学品经营",
        "食品销售（仅销售预包装食品）" does not match "食品销售" because it is a 一般项目
        — callers match only the 许可项目 entries of a scope.
        """
        return any(
            entry == wording or entry.startswith((wording + "（", wording + "("))
            for wording in self.match.scope
        )


class CreditListTypeInfo(_Strict):
    """A credit list (名单) and its term."""

    code: str
    name: str
    listing_sectors: tuple[str, ...]
    duration_years: int | None
    early_removal_after_years: int | None = None
    extendable_years: int | None = None
    escalates_to: str | None = None
    escalates_after_years: int | None = None
    legal_basis: str

    @field_validator("code")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CREDIT_LIST_TYPES:
            raise ValueError(f"{value!r} is not a CreditListType ({', '.join(CREDIT_LIST_TYPES)})")
        return value


#: 人员职务 a person measure can name (``PersonRole`` of schemas/avro/measure.avsc).
PersonRole = Literal[
    "LEGAL_REPRESENTATIVE",
    "PRINCIPAL_RESPONSIBLE_PERSON",
    "DIRECTOR",
    "SUPERVISOR",
    "SENIOR_MANAGER",
]


class Measure(_Strict):
    """A joint-punishment measure (失信惩戒措施)."""

    code: str
    text: str = Field(description="措施内容")
    legal_basis: str = Field(description="措施依据")
    sectors: tuple[str, ...] = Field(min_length=1, description="implementing department sectors")
    list_types: tuple[str, ...] = Field(min_length=1)
    matters: tuple[str, ...] = Field(min_length=1, description="the matters it restricts")
    feedback_required: bool = Field(description="是否需要反馈")
    feedback_days: int | None = Field(description="反馈期限 (days)")
    target: Literal["ENTITY", "PERSONS_IN_ROLE"] = Field(
        default="ENTITY",
        description="措施对象: the entity, or the persons holding ``roles`` in it (公司法 §178)",
    )
    roles: tuple[PersonRole, ...] = Field(
        default=(), description="受限人员职务: the roles a PERSONS_IN_ROLE measure restricts"
    )

    @model_validator(mode="after")
    def _feedback_deadline(self) -> Measure:
        if self.feedback_required and not self.feedback_days:
            raise ValueError(f"measure {self.code} requires feedback but has no feedback_days")
        return self

    @model_validator(mode="after")
    def _roles_of_person_measures(self) -> Measure:
        if (self.target == "PERSONS_IN_ROLE") != bool(self.roles):
            raise ValueError(
                f"measure {self.code}: a PERSONS_IN_ROLE measure names its roles, an ENTITY"
                f" measure none (target {self.target}, roles {list(self.roles)})"
            )
        return self


#: 机构编制: the sector of the 编办, which compile and supervise the assistance lists.
ESTABLISHMENT_SECTOR = "organization_establishment"

#: 定期协助的周期: how often a standing assistance item's data is due (``AssistanceCadence``
#: of schemas/avro/assistance_item.avsc).
AssistanceCadence = Literal["MONTHLY", "QUARTERLY", "HALF_YEARLY", "YEARLY"]


class AssistanceItem(_Strict):
    """行政协助事项: one item of an assistance list (行政协助事项清单) that a 编办 publishes.

    Who may ask is a department (``requesting_department``), a sector
    (``requesting_sector``: any of its departments), or neither (any department)."""

    code: str = Field(pattern=r"^[A-Z0-9]+(-[A-Z0-9]+)*$", description="协助事项编码")
    batch: int = Field(gt=0, description="批次: the batch of the list that published it")
    name: str = Field(description="事项名称")
    requesting_sector: str | None = Field(default=None, description="请求机关类别")
    requesting_department: str | None = Field(default=None, description="请求机关")
    assisting: str = Field(description="协助机关: the department code that must assist")
    content: str = Field(description="协助内容")
    time_limit_days: int = Field(gt=0, description="协助时限 (days)")
    working_days: bool = Field(default=False, description="whether the limit counts 工作日")
    cadence: AssistanceCadence | None = Field(default=None, description="定期协助的周期")
    legal_basis: str = Field(description="协助依据")
    supervisor: str = Field(description="the 编办 that compiles and supervises the item")

    @model_validator(mode="after")
    def _one_kind_of_requester(self) -> AssistanceItem:
        if self.requesting_sector and self.requesting_department:
            raise ValueError(
                f"assistance item {self.code}: name a requesting department or a requesting"
                " sector, not both"
            )
        return self


class SampleProvince(_Strict):
    """The parsed ``sample_province.yaml``; every cross-reference is checked on load."""

    province: str = Field(description="the province's division code")
    claim_deadline_days: int = Field(gt=0, description="双告知 认领期限")
    divisions: tuple[Division, ...]
    sectors: dict[str, str]
    departments: tuple[Department, ...]
    approval_items: tuple[ApprovalItem, ...]
    routing: dict[str, dict[str, str]] = Field(
        description="item code → division code → department code (事项+区划→部门)"
    )
    list_types: tuple[CreditListTypeInfo, ...]
    matter_types: dict[str, str]
    measures: tuple[Measure, ...]
    assistance_items: tuple[AssistanceItem, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> SampleProvince:
        errors: list[str] = []

        def unique(kind: str, codes: list[str]) -> None:
            duplicates = sorted({code for code in codes if codes.count(code) > 1})
            if duplicates:
                errors.append(f"duplicate {kind}: {', '.join(duplicates)}")

        unique("division codes", [d.code for d in self.divisions])
        unique("department codes", [d.code for d in self.departments])
        unique("department USCCs", [d.uscc for d in self.departments])
        unique("approval item codes", [i.code for i in self.approval_items])
        unique("measure codes", [m.code for m in self.measures])
        divisions = {d.code for d in self.divisions}
        if self.province not in divisions:
            errors.append(f"province {self.province} is not among the divisions")
        departments = {d.code for d in self.departments}
        items = {i.code for i in self.approval_items}
        list_types = {t.code for t in self.list_types}
        for division in self.divisions:
            if division.parent is not None and division.parent not in divisions:
                errors.append(f"division {division.code}: unknown parent {division.parent}")
        for department in self.departments:
            if department.division not in divisions:
                errors.append(f"department {department.code}: unknown division")
            if department.sector not in self.sectors:
                errors.append(f"department {department.code}: unknown sector {department.sector}")
        for item in self.approval_items:
            if item.sector not in self.sectors:
                errors.append(f"approval item {item.code}: unknown sector {item.sector}")
        for item_code, table in self.routing.items():
            if item_code not in items:
                errors.append(f"routing: unknown approval item {item_code}")
            for division_code, department_code in table.items():
                where = f"routing {item_code}/{division_code}"
                if division_code not in divisions:
                    errors.append(f"{where}: unknown division")
                if department_code not in departments:
                    errors.append(f"{where}: unknown department {department_code}")
        for list_type in self.list_types:
            if list_type.escalates_to and list_type.escalates_to not in list_types:
                errors.append(f"list type {list_type.code}: escalates to unknown list type")
            unknown_sectors = set(list_type.listing_sectors) - set(self.sectors)
            if unknown_sectors:
                errors.append(f"list type {list_type.code}: unknown sectors {unknown_sectors}")
        for measure in self.measures:
            for kind, values, known in (
                ("list types", measure.list_types, list_types),
                ("matters", measure.matters, set(self.matter_types)),
                ("sectors", measure.sectors, set(self.sectors)),
            ):
                unknown = sorted(set(values) - known)
                if unknown:
                    errors.append(f"measure {measure.code}: unknown {kind} {', '.join(unknown)}")
        unique("assistance item codes", [i.code for i in self.assistance_items])
        by_code = {d.code: d for d in self.departments}
        for assistance in self.assistance_items:
            where = f"assistance item {assistance.code}"
            named = [assistance.assisting, assistance.supervisor]
            if assistance.requesting_department:
                named.append(assistance.requesting_department)
            for code in named:
                if code not in departments:
                    errors.append(f"{where}: unknown department {code}")
            if assistance.requesting_sector and assistance.requesting_sector not in self.sectors:
                errors.append(f"{where}: unknown sector {assistance.requesting_sector}")
            supervisor = by_code.get(assistance.supervisor)
            if supervisor is not None and supervisor.sector != ESTABLISHMENT_SECTOR:
                errors.append(f"{where}: supervisor {supervisor.code} is not a 编办")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    # -- look-ups ---------------------------------------------------------------------------
    @cached_property
    def _departments(self) -> dict[str, Department]:
        return {department.code: department for department in self.departments}

    @cached_property
    def _by_uscc(self) -> dict[str, Department]:
        return {department.uscc: department for department in self.departments}

    @cached_property
    def _divisions(self) -> dict[str, Division]:
        return {division.code: division for division in self.divisions}

    @cached_property
    def _by_sector(self) -> dict[tuple[str, str], Department]:
        return {(d.sector, d.division): d for d in self.departments}

    @cached_property
    def _items(self) -> dict[str, ApprovalItem]:
        return {item.code: item for item in self.approval_items}

    def department(self, code: str) -> Department:
        """The department with this code; ``KeyError`` names it if there is none."""
        try:
            return self._departments[code]
        except KeyError:
            raise KeyError(f"no department {code!r} in the sample province") from None

    def department_by_uscc(self, uscc: str) -> Department:
        """The department whose own USCC this is; ``KeyError`` if none."""
        try:
            return self._by_uscc[uscc]
        except KeyError:
            raise KeyError(f"no department with USCC {uscc!r} in the sample province") from None

    def department_of(self, sector: str, division: str) -> Department | None:
        """The department of ``sector`` seated in ``division``, if there is one."""
        return self._by_sector.get((sector, division))

    def approval_item(self, code: str) -> ApprovalItem:
        return self._items[code]

    def division(self, code: str) -> Division:
        return self._divisions[code]

    def divisions_at(self, level: Level) -> list[Division]:
        return [d for d in self.divisions if d.level is level]

    def counties_of(self, city: str) -> list[Division]:
        return [d for d in self.divisions if d.parent == city and d.level is Level.COUNTY]

    def city_of(self, division: str) -> Division:
        """The city a county belongs to (a city is its own city)."""
        found = self.division(division)
        if found.level is Level.COUNTY:
            assert found.parent is not None
            return self.division(found.parent)
        return found

    def route(self, item_code: str, division: str) -> Department | None:
        """The department a 双告知 push of ``item_code`` for ``division`` goes to; None is
        分流失败 (no department found)."""
        code = self.routing.get(item_code, {}).get(division)
        return None if code is None else self.department(code)

    def items_for_scope(self, permit_entries: list[str]) -> list[ApprovalItem]:
        """The approval items needed by the 许可项目 entries of a business scope, in catalog
        order, each once."""
        return [
            item
            for item in self.approval_items
            if any(item.matches_scope_entry(entry) for entry in permit_entries)
        ]

    def items_for_industry(self, industry_code: str) -> list[ApprovalItem]:
        """The approval items usually needed in a GB/T 4754 class (a hint, not a rule)."""
        return [item for item in self.approval_items if industry_code in item.match.industry]

    def list_type(self, code: str) -> CreditListTypeInfo:
        return next(t for t in self.list_types if t.code == code)

    def measures_for(self, list_type: str) -> list[Measure]:
        return [measure for measure in self.measures if list_type in measure.list_types]


@cache
def load_sample_province(path: Path = SAMPLE_PROVINCE_FILE) -> SampleProvince:
    """Read and check the sample province; a ``ValueError`` names the file and every problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return SampleProvince.model_validate(raw)
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise ValueError(f"sample province {path}: {error}") from error
