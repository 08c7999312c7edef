"""Department mapping files: a department's columns, date formats and codes → canonical fields.

Onboarding a department is configuration, not code. A mapping file (YAML) says which
department sends which record type, and how each canonical field is read from the
department's own record::

    department:
      uscc: 12330100MB1234567X        # 来源部门统一社会信用代码
      name: 杭州市卫生健康委员会
      system: 卫生许可审批系统
    record_type: licence               # registration | licence | penalty | credit_list_entry
    source_record_id: 许可记录编号       # column holding the record's id in the source
    record_version: 更新时间             # optional: column holding the record's version
    date_format: "%Y年%m月%d日"          # default for every date field (ISO if absent)
    fields:
      uscc: 统一社会信用代码              # shorthand: the column name
      holder_name: 行政相对人名称
      valid_to: {column: 有效期至, date_format: "%Y/%m/%d", empty: [长期, 永久]}
      category: {column: 许可类别, codes: {普通: ORDINARY, 特许: FRANCHISE}}
      authority_uscc: {value: 12330100MB1234567X}   # a constant

The target type of each field comes from the record type's Avro schema, so a date
column is parsed as a date, a 万元 amount as a ``Decimal``, a code through ``codes``
to the enum's symbol, and an array field by splitting on ``split``. A value that cannot
be converted becomes a :class:`~connectors.validation.Problem` naming the field; the
record is then dead-lettered with every problem found, never half-published.

``business_scope_items`` may use ``{column: 经营范围, scope: true}`` to split the
standard wording "许可项目：…；一般项目：…" into catalog entries tagged permit/general.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.validation import Problem
from schemas import CANONICAL_RECORD_TYPES, RecordType
from xietong.clock import business_clock

MISSING: Any = None

#: Decimal places of every 万元 amount (the schemas' ``scale``): 0.000001 万元 = 0.01 元.
AMOUNT_SCALE = Decimal("0.000001")


class FieldRule(BaseModel):
    """How one canonical field is read from a department record."""

    model_config = ConfigDict(extra="forbid")

    column: str | None = None
    value: Any = None
    date_format: str | None = None
    codes: dict[str, str] = Field(default_factory=dict)
    split: str | None = None
    scope: bool = False
    empty: list[str] = Field(
        default_factory=list, description="Values that mean 'none', e.g. 长期 for an end date."
    )


class DepartmentIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uscc: str
    name: str
    system: str


class MappingFile(BaseModel):
    """The parsed YAML of one department mapping."""

    model_config = ConfigDict(extra="forbid")

    department: DepartmentIdentity
    record_type: str
    source_record_id: str
    record_version: str | None = None
    date_format: str | None = None
    fields: dict[str, FieldRule]

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                name: {"column": rule} if isinstance(rule, str) else rule
                for name, rule in value.items()
            }
        return value

    @field_validator("record_type")
    @classmethod
    def _known_record_type(cls, value: str) -> str:
        if value not in CANONICAL_RECORD_TYPES:
            raise ValueError(f"must be one of {', '.join(CANONICAL_RECORD_TYPES)}")
        return value


@dataclass(frozen=True)
class MappedRecord:
    """A department record mapped onto canonical fields, with what went wrong."""

    fields: dict[str, Any]
    source_record_id: str
    record_version: str
    problems: list[Problem] = field(default_factory=list)


Converter = Callable[[Any], Any]  # raises ValueError with a message for people


class MappingError(ValueError):
    """A mapping file that cannot be used: names the file and what to change."""


@dataclass
class _CompiledField:
    name: str
    rule: FieldRule
    convert: Converter
    required: bool
    default: Any


class DepartmentMapping:
    """A compiled mapping file: turns one department record into canonical fields.

    Compilation checks the file against the record type's schema once (unknown fields,
    missing required fields, codes that are not enum symbols), so the per-record work
    is a list of small converters.
    """

    def __init__(self, spec: MappingFile, origin: str = "<mapping>") -> None:
        self.spec = spec
        self.origin = origin
        self.record_type: RecordType = CANONICAL_RECORD_TYPES[spec.record_type]
        self.department = spec.department
        self._fields = self._compile()
        # The per-record plan: columns to read, and constants converted once, here, so a
        # bad constant is a mapping error at load time rather than a dead letter per row.
        self._columns = [
            (
                f.name,
                f.rule.column,
                f.convert,
                f.required,
                f.default,
                frozenset({"", *f.rule.empty}),
            )
            for f in self._fields
            if f.rule.column is not None
        ]
        self._constants: dict[str, Any] = {}
        for f in self._fields:
            if f.rule.column is None:
                try:
                    self._constants[f.name] = f.convert(f.rule.value)
                except ValueError as error:
                    raise MappingError(f"{origin}: the constant of {f.name}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> DepartmentMapping:
        """Read and compile a mapping file; a :class:`MappingError` says what is wrong."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls(MappingFile.model_validate(raw), origin=str(path))
        except (OSError, yaml.YAMLError, ValueError) as error:
            raise MappingError(f"mapping file {path}: {error}") from error

    @property
    def columns(self) -> list[str]:
        """The source columns the mapping reads, in canonical field order."""
        return [f.rule.column for f in self._fields if f.rule.column]

    # -- compiling ------------------------------------------------------------------------
    def _compile(self) -> list[_CompiledField]:
        schema_fields = {f["name"]: f for f in self.record_type.schema["fields"]}
        schema_fields.pop("envelope")
        unknown = set(self.spec.fields) - set(schema_fields)
        if unknown:
            raise MappingError(
                f"{self.origin}: {', '.join(sorted(unknown))} not a field of"
                f" {self.record_type.name}; fields are {', '.join(schema_fields)}"
            )
        compiled = []
        for name, avro_field in schema_fields.items():
            avro_type = avro_field["type"]
            nullable = isinstance(avro_type, list) and "null" in avro_type
            has_default = "default" in avro_field
            rule = self.spec.fields.get(name)
            if rule is None:
                if not (nullable or has_default):
                    raise MappingError(
                        f"{self.origin}: required field {name} ({avro_field.get('doc', '')})"
                        " has no rule; map it to a column or give a value"
                    )
                continue
            if rule.column is None and rule.value is None:
                raise MappingError(f"{self.origin}: field {name} needs a column or a value")
            compiled.append(
                _CompiledField(
                    name=name,
                    rule=rule,
                    convert=self._converter(name, _non_null(avro_type), rule),
                    required=not (nullable or has_default),
                    default=avro_field.get("default"),
                )
            )
        return compiled

    def _converter(self, name: str, avro_type: Any, rule: FieldRule) -> Converter:
        if isinstance(avro_type, dict):
            logical = avro_type.get("logicalType")
            if logical == "date":
                return _date_converter(rule.date_format or self.spec.date_format)
            if logical == "decimal":
                return _decimal
            if avro_type["type"] == "enum":
                return _enum_converter(name, avro_type, rule.codes, self.origin)
            if avro_type["type"] == "array":
                if rule.scope:
                    return _scope_items
                item = _converter_for_items(self, name, avro_type["items"], rule)
                separator = rule.split or "、"
                return lambda raw: [item(part) for part in _split(raw, separator)]
        if avro_type == "string":
            return _text
        raise MappingError(f"{self.origin}: field {name} has a type the mapper cannot fill")

    # -- mapping a record -----------------------------------------------------------------
    def map(self, raw: Mapping[str, Any]) -> MappedRecord:
        """Map one department record (column → value); problems instead of exceptions."""
        fields: dict[str, Any] = dict(self._constants)
        problems: list[Problem] = []
        for name, column, convert, required, default, empty in self._columns:
            value = raw.get(column)
            if value is None or (type(value) is str and value.strip() in empty):
                if required:
                    problems.append(
                        Problem(name, "required", f"{name} is empty (column {column!r})")
                    )
                fields[name] = default
                continue
            try:
                fields[name] = convert(value)
            except ValueError as error:
                problems.append(Problem(name, _code_of(error), f"{name}: {error}"))
                fields[name] = default
        record_id = raw.get(self.spec.source_record_id)
        if _is_empty(record_id):
            problems.append(
                Problem(
                    "source_record_id",
                    "required",
                    f"source record id column {self.spec.source_record_id!r} is empty",
                )
            )
            record_id = ""
        return MappedRecord(
            fields=fields,
            source_record_id=str(record_id).strip(),
            record_version=self._version(raw),
            problems=problems,
        )

    def _version(self, raw: Mapping[str, Any]) -> str:
        if self.spec.record_version:
            version = raw.get(self.spec.record_version)
            if not _is_empty(version):
                return str(version).strip()
        # No version column: a digest of the content, so that the same record re-sent
        # keeps its event id and a corrected record gets a new one.
        digest = hashlib.blake2b(digest_size=12)
        for key in sorted(raw):
            digest.update(f"{key}\x1f{raw[key]}\x1e".encode())
        return digest.hexdigest()


# -- converters -------------------------------------------------------------------------------


class ConversionError(ValueError):
    """A value that cannot become its canonical type; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _code_of(error: ValueError) -> str:
    return error.code if isinstance(error, ConversionError) else "value.invalid"


def _non_null(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        return next(t for t in avro_type if t != "null")
    return avro_type


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(raw: Any) -> str:
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # spreadsheets turn codes like 330106 into 330106.0
    return str(raw).strip()


def _date_converter(date_format: str | None) -> Converter:
    # An export holds few distinct days and strptime is slow: parse each text once.
    @lru_cache(maxsize=8192)
    def parse(text: str) -> date:
        try:
            if date_format is None:
                return date.fromisoformat(text)
            return datetime.strptime(text, date_format).date()
        except ValueError:
            expected = date_format or "YYYY-MM-DD"
            raise ConversionError(
                "date.invalid", f"{text!r} is not a real date in the format {expected}"
            ) from None

    def convert(raw: Any) -> date:
        if isinstance(raw, datetime):
            # A naive time is the department's own wall clock; an instant (a timestamptz
            # column) falls on the day it is in the province then.
            return raw.date() if raw.tzinfo is None else business_clock().day_of(raw)
        if isinstance(raw, date):
            return raw
        return parse(str(raw).strip())

    return convert


def _decimal(raw: Any) -> Decimal:
    text = str(raw).strip().replace(",", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ConversionError("amount.invalid", f"{text!r} is not an amount in 万元") from None
    if not amount.is_finite():
        raise ConversionError("amount.invalid", f"{text!r} is not an amount in 万元")
    return amount.quantize(AMOUNT_SCALE)


def _enum_converter(
    name: str, avro_enum: dict[str, Any], codes: dict[str, str], origin: str
) -> Converter:
    symbols = [s for s in avro_enum["symbols"] if s != avro_enum.get("default")]
    wrong = {code: symbol for code, symbol in codes.items() if symbol not in symbols}
    if wrong:
        raise MappingError(
            f"{origin}: codes of {name} map to {', '.join(sorted(set(wrong.values())))},"
            f" not symbols of {avro_enum['name']} ({', '.join(symbols)})"
        )
    table = {**{symbol: symbol for symbol in symbols}, **codes}
    known = ", ".join(codes) if codes else ", ".join(symbols)

    def convert(raw: Any) -> str:
        text = _text(raw)
        try:
            return table[text]
        except KeyError:
            raise ConversionError(
                "code.unknown", f"{text!r} is not a known code; known: {known}"
            ) from None

    return convert


def _converter_for_items(
    mapping: DepartmentMapping, name: str, items: Any, rule: FieldRule
) -> Converter:
    if isinstance(items, dict) and items.get("type") == "enum":
        return _enum_converter(name, items, rule.codes, mapping.origin)
    if items == "string":
        return _text
    raise MappingError(f"{mapping.origin}: field {name} has items the mapper cannot fill")


def _split(raw: Any, separator: str) -> list[str]:
    if isinstance(raw, list | tuple):
        return [str(part).strip() for part in raw if str(part).strip()]
    return [part.strip() for part in str(raw).split(separator) if part.strip()]


_SCOPE_SECTION = re.compile(r"(许可项目|一般项目)[:：]")
_SCOPE_SEPARATORS = re.compile(r"[；;。]")
_SCOPE_TAIL = re.compile(r"[（(]依法须经批准的项目.*?[)）]|[（(]除依法须经批准的项目外.*?[)）]")


def _scope_items(raw: Any) -> list[dict[str, Any]]:
    """Split the standard business-scope wording into entries tagged permit or general.

    "许可项目：食品经营；酒类经营。一般项目：日用百货销售" gives two PERMIT entries and
    one GENERAL entry. Text outside a section is kept as GENERAL.
    """
    if isinstance(raw, list):
        return [
            {"text": str(item), "kind": "UNKNOWN", "catalog_code": None}
            for item in raw
            if str(item).strip()
        ]
    text = _SCOPE_TAIL.sub("", str(raw))
    items: list[dict[str, Any]] = []
    kind = "GENERAL"
    position = 0
    for match in [*_SCOPE_SECTION.finditer(text), None]:
        end = match.start() if match else len(text)
        for entry in _SCOPE_SEPARATORS.split(text[position:end]):
            entry = entry.strip(" ，,、")
            if entry:
                items.append({"text": entry, "kind": kind, "catalog_code": None})
        if match:
            kind = "PERMIT" if match.group(1) == "许可项目" else "GENERAL"
            position = match.end()
    return items
