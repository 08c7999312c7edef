"""Department mapping files: a department's columns, date formats and codes → canonical fields.

Onboarding a department is configuration, not code. A mapping file (YAML) names the
department and its record type and gives each canonical field a rule: a column, or a
constant, with options by the field's kind (date formats, code tables, a list's separator,
an amount's digit-group separator, how to treat control characters)::

    record_type: licence
    source_record_id: 许可记录编号
    date_format: ["%Y年%m月%d日", "%Y/%m/%d"]
    fields:
      uscc: 统一社会信用代码
      valid_to: {column: 有效期至, empty: [长期]}

The reference — every key and option, what each kind of field takes, the reason codes —
is ``connectors/kit/MAPPING.md``, with worked examples in ``connectors/kit/examples/``.

The target type of each field comes from the record type's Avro schema; a value is
converted or refused, never repaired. Every converter raises only
:class:`ConversionError`, whose ``code`` becomes the :class:`~connectors.validation.Problem`'s
code; a record with a problem is dead-lettered with all of them, never half-published.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.validation import Problem
from schemas import CANONICAL_RECORD_TYPES, RecordType
from xietong.clock import business_clock

MISSING: Any = None

#: A date field's format: one ``strptime`` format, or a list of them tried in order.
DateFormats = str | list[str] | None


def _checked_date_formats(formats: DateFormats) -> DateFormats:
    """Refuse, when the file is loaded, a format list that is empty or a format that
    cannot read back a date it writes (a typo such as ``%Y/%m/%q``)."""
    if formats is None:
        return None
    listed = [formats] if isinstance(formats, str) else formats
    if not listed:
        raise ValueError("a list of date formats needs at least one format")
    sample = date(2024, 3, 5)
    for one in listed:
        try:
            readable = datetime.strptime(sample.strftime(one), one).date() == sample
        except ValueError:
            readable = False
        if not readable:
            raise ValueError(
                f"{one!r} cannot read the dates it writes ({sample} would be"
                f" {sample.strftime(one)!r}); a date format needs %Y (or %y), %m and %d"
            )
    return formats


class FieldRule(BaseModel):
    """How one canonical field is read from a department record."""

    model_config = ConfigDict(extra="forbid")

    column: str | None = None
    value: Any = None
    date_format: DateFormats = Field(
        default=None,
        description="A date's strptime format, or a list of them tried in order.",
    )
    codes: dict[str, str] = Field(default_factory=dict)
    split: str | None = None
    scope: bool = False
    empty: list[str] = Field(
        default_factory=list, description="Values that mean 'none', e.g. 长期 for an end date."
    )
    thousands_separator: str | None = Field(
        default=None,
        description="An amount's digit-group separator the department writes, e.g. ','.",
    )
    fullwidth_digits: bool = Field(
        default=False, description="An amount may be written in full-width digits (１００)."
    )
    strip_control: bool = Field(
        default=False,
        description="Remove control characters from the text instead of refusing it.",
    )
    newlines: Literal["strict", "normalise"] = Field(
        default="strict",
        description="normalise: a CRLF or lone CR in the text becomes a newline (LF).",
    )

    @field_validator("date_format")
    @classmethod
    def _readable_formats(cls, value: DateFormats) -> DateFormats:
        return _checked_date_formats(value)

    @field_validator("thousands_separator")
    @classmethod
    def _one_separator(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value.isdigit() or value in ".-+"):
            raise ValueError("must be one character that is not a digit, a sign or '.'")
        return value


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
    date_format: DateFormats = None
    fields: dict[str, FieldRule]

    @field_validator("date_format")
    @classmethod
    def _readable_formats(cls, value: DateFormats) -> DateFormats:
        return _checked_date_formats(value)

    def date_formats_of(self, rule: FieldRule | None) -> tuple[str, ...]:
        """The formats a date field is read in, in the order they are tried: the field's,
        else the file's; empty for ISO 8601 (YYYY-MM-DD)."""
        formats = (rule.date_format if rule is not None else None) or self.date_format
        if formats is None:
            return ()
        return (formats,) if isinstance(formats, str) else tuple(formats)

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


Converter = Callable[[Any], Any]  # raises ConversionError with a message for people

#: The kind of field each rule option applies to.
_OPTION_APPLIES_TO = {
    "date_format": "date",
    "thousands_separator": "amount",
    "fullwidth_digits": "amount",
    "strip_control": "text",
    "newlines": "text",
}


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
        logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
        kind = {"decimal": "amount", "date": "date"}.get(logical or "", "text")
        self._check_options(name, rule, kind)
        text = _text_converter(rule)
        if isinstance(avro_type, dict):
            if logical == "date":
                return _date_converter(self.spec.date_formats_of(rule))
            if logical == "decimal":
                return _decimal_converter(avro_type["precision"], avro_type.get("scale", 0), rule)
            if avro_type["type"] == "enum":
                return _enum_converter(name, avro_type, rule.codes, self.origin, text)
            if avro_type["type"] == "array":
                if rule.scope:
                    return _scope_converter(text)
                item = _converter_for_items(self, name, avro_type["items"], rule, text)
                return _array_converter(item, text, rule.split or "、")
        if avro_type == "string":
            return text
        raise MappingError(f"{self.origin}: field {name} has a type the mapper cannot fill")

    def _check_options(self, name: str, rule: FieldRule, kind: str) -> None:
        """Refuse a rule option the field's type never uses: it would be ignored silently."""
        given = {
            "date_format": rule.date_format is not None,
            "thousands_separator": rule.thousands_separator is not None,
            "fullwidth_digits": rule.fullwidth_digits,
            "strip_control": rule.strip_control,
            "newlines": rule.newlines != "strict",
        }
        for option, is_set in given.items():
            if is_set and _OPTION_APPLIES_TO[option] != kind:
                raise MappingError(
                    f"{self.origin}: field {name} is {kind}; {option} applies to"
                    f" {_OPTION_APPLIES_TO[option]} fields only"
                )

    # -- mapping a record -----------------------------------------------------------------
    def map(self, raw: Mapping[str, Any]) -> MappedRecord:
        """Map one department record (column → value); problems instead of exceptions.

        Every value is converted on its own: a value that cannot be taken is a
        :class:`~connectors.validation.Problem` naming its field, never an exception.
        """
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
            except ConversionError as error:
                problems.append(Problem(name, error.code, f"{name} (column {column!r}): {error}"))
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
        else:
            record_id = self._identifier(
                "source_record_id", self.spec.source_record_id, raw, problems
            )
        return MappedRecord(
            fields=fields,
            source_record_id=record_id,
            record_version=self._version(raw, problems),
            problems=problems,
        )

    def _identifier(
        self, name: str, column: str, raw: Mapping[str, Any], problems: list[Problem]
    ) -> str:
        try:
            return _identifier(raw[column], column)
        except ConversionError as error:
            problems.append(Problem(name, error.code, f"{name}: {error}"))
            return ""

    def _version(self, raw: Mapping[str, Any], problems: list[Problem]) -> str:
        column = self.spec.record_version
        if column and not _is_empty(raw.get(column)):
            return self._identifier("record_version", column, raw, problems)
        # No version column: a digest of the content, so that the same record re-sent
        # keeps its event id and a corrected record gets a new one.
        digest = hashlib.blake2b(digest_size=12)
        for key in sorted(raw):
            # surrogatepass: a lone surrogate (refused, or in a column no rule reads) still
            # has a digest, and every other text's bytes are its UTF-8 as before.
            value = raw[key]
            text = f"{key}\x1f{value if type(value) is str else _digest_text(value)}\x1e"
            digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


# -- converters -------------------------------------------------------------------------------


class ConversionError(ValueError):
    """A value that cannot become its canonical type; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _non_null(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        return next(t for t in avro_type if t != "null")
    return avro_type


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# -- how a value is shown in a message -----------------------------------------------------------

#: Characters of a value quoted in a message; a longer value is cut and its length given.
SHOWN_CHARACTERS = 40


def _shown(value: Any) -> str:
    """A value as a message quotes it: short, with every control character escaped
    (``repr``), so that the message itself is always valid UTF-8; a value that is no
    text or number is described by its type."""
    if isinstance(value, str):
        if len(value) <= SHOWN_CHARACTERS:
            return repr(value)
        return f"{value[:SHOWN_CHARACTERS]!r}… ({len(value)} characters)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if value is None:
        return "null"
    if isinstance(value, int):
        try:
            return _cut(str(value))
        except ValueError:  # too long to write out: str(int) stops at 4,300 digits
            return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, float | Decimal):
        return _cut(str(value))
    if isinstance(value, list | tuple):
        return f"a list of {_count(len(value), 'item')}"
    if isinstance(value, dict):
        return f"an object with {_count(len(value), 'key')}"
    if isinstance(value, bytes | bytearray | memoryview):
        return _count(len(value), "byte")
    return f"a {type(value).__name__}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _cut(number: str) -> str:
    if len(number) <= SHOWN_CHARACTERS:
        return number
    return f"{number[:SHOWN_CHARACTERS]}… ({len(number)} characters)"


def _digest_text(value: Any) -> str:
    """A value's text for the content digest: ``str``, or for an integer too long for it
    (past 4,300 digits ``str(int)`` raises ValueError, CVE-2020-10735) its hexadecimal."""
    try:
        return str(value)
    except ValueError:
        if isinstance(value, int):
            return hex(value)
        return repr(type(value))  # such an integer inside a list or an object


# -- text ----------------------------------------------------------------------------------------

#: C0 controls other than tab and newline, DEL and the C1 controls (U+0080–U+009F).
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_CONTROL_CHARACTER = re.compile(f"[{_CONTROL}]")
_CONTROL_BUT_CR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: What a text may not hold: the controls, and lone surrogates (U+D800–U+DFFF), which are
#: no character at all but the trace of bytes that were never valid Unicode.
_UNSAFE_CHARACTER = re.compile(f"[{_CONTROL}\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAK = re.compile("\r\n?")


def _text_converter(rule: FieldRule | None) -> Converter:
    """Text as the rule takes it: stripped of surrounding whitespace, control characters
    refused (or removed with ``strip_control``), CR refused (or, with ``newlines:
    normalise``, CRLF and a lone CR read as a newline)."""
    strip_control = rule is not None and rule.strip_control
    normalise_newlines = rule is not None and rule.newlines == "normalise"

    def convert(raw: Any) -> str:
        text = raw if type(raw) is str else _as_text(raw, "text.invalid", "text")
        # isprintable() is the fast, common answer (no control character, no surrogate);
        # a text with a tab, a newline or a wide space is looked at closer.
        if not text.isprintable() and _UNSAFE_CHARACTER.search(text) is not None:
            text = _safe_text(text, strip_control, normalise_newlines)
        return text.strip()

    return convert


def _safe_text(text: str, strip_control: bool, normalise_newlines: bool) -> str:
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        raise ConversionError(
            "text.surrogate",
            f"{_shown(text)} holds {_character(surrogate)}, a lone surrogate (text that was"
            " not valid Unicode where it came from); expected text in UTF-8",
        )
    if not strip_control:
        control = (_CONTROL_BUT_CR if normalise_newlines else _CONTROL_CHARACTER).search(text)
        if control is not None:
            hint = (
                "; newlines: normalise in the mapping reads a CR or CRLF as a newline"
                if control.group() == "\r"
                else ""
            )
            raise ConversionError(
                "text.control",
                f"{_shown(text)} holds {_character(control)}, a control character; text may"
                " hold tab and newline but no other control character (strip_control: true"
                f" in the mapping removes them){hint}",
            )
    if normalise_newlines:
        text = _LINE_BREAK.sub("\n", text)
    return _CONTROL_CHARACTER.sub("", text) if strip_control else text


def _character(found: re.Match[str]) -> str:
    return f"U+{ord(found.group()):04X} at character {found.start() + 1}"


def _as_text(raw: Any, code: str, expected: str) -> str:
    """The text of a value a source gave as another type where text is expected: a number
    written out (a spreadsheet's 330106.0 as 330106), a date in ISO 8601."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        try:
            return str(raw)
        except ValueError:  # past 4,300 digits: no text anyone wrote
            pass
    elif isinstance(raw, float):
        if raw.is_integer():
            return _as_text(int(raw), code, expected)
        if math.isfinite(raw):
            return repr(raw)
    elif isinstance(raw, Decimal):
        if raw.is_finite():
            return str(raw)
    elif isinstance(raw, date | time | UUID):
        return str(raw)
    raise ConversionError(code, f"{_shown(raw)} where {expected} is expected")


def _identifier(raw: Any, column: str) -> str:
    """A record id or version: text, or a whole number written out (a database's or a
    spreadsheet's integer, or a float that is one); never a list, an object, a boolean
    or a number with a fraction."""
    if isinstance(raw, str):
        return _STRICT_TEXT(raw)
    if _is_whole(raw):
        raw = int(raw)
    if isinstance(raw, int | date | UUID) and not isinstance(raw, bool):
        return _as_text(raw, "id.invalid", "an id (text or a whole number)")
    raise ConversionError(
        "id.invalid",
        f"column {column!r} holds {_shown(raw)}; an id is text or a whole number",
    )


_STRICT_TEXT = _text_converter(None)
#: Digits of the longest whole Decimal taken as an id (1E+999999999 is refused unexpanded).
_LONGEST_WHOLE_DECIMAL = 4000


def _is_whole(raw: Any) -> bool:
    if isinstance(raw, float):
        return raw.is_integer()
    return (
        isinstance(raw, Decimal)
        and raw.is_finite()
        and raw.adjusted() < _LONGEST_WHOLE_DECIMAL
        and raw == raw.to_integral_value()
    )


# -- dates ---------------------------------------------------------------------------------------

#: Longer than any date a format can describe: refused without parsing (and caching) it.
_LONGEST_DATE_TEXT = 64


def _date_converter(formats: tuple[str, ...]) -> Converter:
    """A date in the first of ``formats`` that reads it (ISO 8601 when there are none).

    A text that fits no format is "not a date in any of the formats …"; one that fits a
    format's shape but names no day of the calendar (2024/2/30) says so, since the
    department's system wrote an impossible date, not another format."""
    expected = _formats_expected(formats)

    # An export holds few distinct days and strptime is slow: parse each text once.
    @lru_cache(maxsize=8192)
    def parse(text: str) -> date:
        calendar_error = None
        if len(text) <= _LONGEST_DATE_TEXT:
            for one in formats or (None,):
                try:
                    if one is None:
                        return date.fromisoformat(text)
                    return datetime.strptime(text, one).date()
                except ValueError as error:
                    if calendar_error is None and not _NOT_THE_FORMAT.match(str(error)):
                        calendar_error = (one or "YYYY-MM-DD", str(error))
        if calendar_error is not None:
            one, why = calendar_error
            raise ConversionError(
                "date.invalid",
                f"{_shown(text)} is written in the format {one} but is no day of the"
                f" calendar ({why})",
            )
        raise ConversionError("date.invalid", f"{_shown(text)} is not a date in {expected}")

    def convert(raw: Any) -> date:
        if isinstance(raw, datetime):
            # A naive time is the department's own wall clock; an instant (a timestamptz
            # column) falls on the day it is in the province then.
            return raw.date() if raw.tzinfo is None else business_clock().day_of(raw)
        if isinstance(raw, date):
            return raw
        if isinstance(raw, str):
            return parse(raw.strip())
        if isinstance(raw, int | float | Decimal) and not isinstance(raw, bool):
            # 20240101 as a JSON number: the department's system wrote a number, and its
            # digits are no reliable date (2024010 is one digit short of nothing).
            found = f"{_shown(raw)} is a number"
        else:
            found = f"{_shown(raw)} is not a date"
        raise ConversionError("date.invalid", f"{found}; a date is text in {expected}")

    return convert


#: What strptime and date.fromisoformat say of a text that does not have a format's shape
#: (as against one that has it but names no day: "day is out of range for month").
_NOT_THE_FORMAT = re.compile(r"time data |unconverted data remains|Invalid isoformat string")


def _formats_expected(formats: tuple[str, ...]) -> str:
    """The formats as a message names them, with the day 2024-03-05 written in each."""
    if not formats:
        return "the format YYYY-MM-DD (e.g. 2024-03-05)"
    sample = date(2024, 3, 5)
    written = ", ".join(f"{one} (e.g. {sample.strftime(one)})" for one in formats)
    return f"the format {written}" if len(formats) == 1 else f"any of the formats {written}"


# -- amounts -------------------------------------------------------------------------------------

_PLAIN_AMOUNT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_FULLWIDTH_DIGIT = re.compile("[０-９]")
_ANY_SEPARATOR = re.compile(r"[+-]?[0-9]+(?:[,，'’_ ][0-9]+)+(?:\.[0-9]*)?")
_EXPONENT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][+-]?[0-9]+")


def _decimal_converter(precision: int, scale: int, rule: FieldRule) -> Converter:
    """An amount as the schema's decimal type holds it (万元 to ``scale`` places): a
    value with more decimals or more integer digits is refused, never rounded."""
    integer_digits = precision - scale
    quantum = Decimal(1).scaleb(-scale)
    separator = rule.thousands_separator or ""
    grouped = (
        re.compile(rf"[+-]?[0-9]{{1,3}}(?:{re.escape(separator)}[0-9]{{3}})+(?:\.[0-9]*)?")
        if separator
        else None
    )
    expected = f"a decimal amount in 万元 with at most {scale} decimals"

    def from_text(raw: str) -> Decimal:
        text = raw.strip()
        if rule.fullwidth_digits:
            # Only the digits, explicitly: NFKC would also turn a full-width comma or
            # letter into something the checks below would then take.
            text = _FULLWIDTH_DIGIT.sub(lambda d: unicodedata.normalize("NFKC", d.group()), text)
        if grouped is not None and separator in text:
            if grouped.fullmatch(text) is None:
                raise ConversionError(
                    "amount.separator",
                    f"{_shown(raw)} has a misplaced thousands separator {separator!r};"
                    f" expected groups of three digits, e.g. 1{separator}000.5",
                )
            text = text.replace(separator, "")
        if _PLAIN_AMOUNT.fullmatch(text) is not None:
            return Decimal(text)
        if _FULLWIDTH_DIGIT.search(text):
            raise ConversionError(
                "amount.fullwidth",
                f"{_shown(raw)} is written in full-width digits; expected {expected} in"
                " ASCII digits (fullwidth_digits: true in the mapping allows them)",
            )
        if _ANY_SEPARATOR.fullmatch(text):
            raise ConversionError(
                "amount.separator",
                f"{_shown(raw)} has a digit-group separator; expected {expected} without one"
                " (thousands_separator in the mapping allows one)",
            )
        what = "exponent notation" if _EXPONENT.fullmatch(text) else "not an amount"
        raise ConversionError("amount.invalid", f"{_shown(raw)} is {what}; expected {expected}")

    def convert(raw: Any) -> Decimal:
        if isinstance(raw, str):
            amount = from_text(raw)
        elif isinstance(raw, Decimal):
            amount = raw
        elif isinstance(raw, int) and not isinstance(raw, bool):
            amount = Decimal(raw)
        elif isinstance(raw, float):
            amount = Decimal(repr(raw))  # the number the department wrote, not its binary
        else:
            raise ConversionError("amount.invalid", f"{_shown(raw)} is not {expected}")
        if not amount.is_finite():
            raise ConversionError("amount.invalid", f"{_shown(raw)} is not {expected}")
        if amount and amount.adjusted() >= integer_digits:
            raise ConversionError(
                "amount.too_large",
                f"{_shown(raw)} has {amount.adjusted() + 1} digits before the decimal point;"
                f" expected at most {integer_digits} (the schema's decimal({precision},{scale}))",
            )
        if _decimals(amount) > scale:
            raise ConversionError(
                "amount.scale",
                f"{_shown(raw)} has {_decimals(amount)} decimals; expected at most {scale}"
                " (it is refused, not rounded)",
            )
        return amount.quantize(quantum)

    return convert


def _decimals(amount: Decimal) -> int:
    """The decimals a value needs: 1.50 needs 1, so trailing zeros lose nothing."""
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exponent - trailing_zeros)


# -- codes, lists, scopes ------------------------------------------------------------------------


def _enum_converter(
    name: str, avro_enum: dict[str, Any], codes: dict[str, str], origin: str, text: Converter
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
        code = text(raw)
        try:
            return table[code]
        except KeyError:
            raise ConversionError(
                "code.unknown", f"{_shown(code)} is not a known code; known: {known}"
            ) from None

    return convert


def _converter_for_items(
    mapping: DepartmentMapping, name: str, items: Any, rule: FieldRule, text: Converter
) -> Converter:
    if isinstance(items, dict) and items.get("type") == "enum":
        return _enum_converter(name, items, rule.codes, mapping.origin, text)
    if items == "string":
        return text
    raise MappingError(f"{mapping.origin}: field {name} has items the mapper cannot fill")


def _array_converter(item: Converter, text: Converter, separator: str) -> Converter:
    """A list given as a list (JSON), or as text split on ``separator``; empty parts skipped."""

    def convert(raw: Any) -> list[Any]:
        parts = raw if isinstance(raw, list | tuple) else text(raw).split(separator)
        return [item(part) for part in parts if not _is_empty(part)]

    return convert


_SCOPE_SECTION = re.compile(r"(许可项目|一般项目)[:：]")
# An entry ends at any of these, except inside a qualifier. The enumeration comma 、 is part
# of standard wordings ("广告设计、代理" is one entry of the 经营范围规范表述目录): the catalog's
# matching reads each of its parts (streams/dual_notice/rules.py).
_SCOPE_SEPARATORS = re.compile(r"[；;。，,](?![^（(]*[)）])")
_SCOPE_TAIL = re.compile(r"[（(]依法须经批准的项目.*?[)）]|[（(]除依法须经批准的项目外.*?[)）]")


def _scope_converter(text: Converter) -> Converter:
    """Split the standard business-scope wording into entries tagged permit or general.

    "许可项目：食品经营，酒类经营。一般项目：日用百货销售" gives two PERMIT entries and
    one GENERAL entry. Text before any heading (free text, as many older registrations
    have) is of a kind the wording does not say: UNKNOWN, never taken for GENERAL, since
    only an explicit 一般项目 says an entry needs no permit. A list (JSON) is taken item by
    item, each split the same way, UNKNOWN unless the item carries its own heading.
    """

    def convert(raw: Any) -> list[dict[str, Any]]:
        if isinstance(raw, list | tuple):
            return [
                entry for item in raw if not _is_empty(item) for entry in _scope_items(text(item))
            ]
        return _scope_items(text(raw))

    return convert


def _scope_items(wording: str) -> list[dict[str, Any]]:
    text = _SCOPE_TAIL.sub("", wording)
    items: list[dict[str, Any]] = []
    kind = "UNKNOWN"
    position = 0
    for match in [*_SCOPE_SECTION.finditer(text), None]:
        end = match.start() if match else len(text)
        for entry in _SCOPE_SEPARATORS.split(text[position:end]):
            entry = entry.strip()
            if entry:
                items.append({"text": entry, "kind": kind, "catalog_code": None})
        if match:
            kind = "PERMIT" if match.group(1) == "许可项目" else "GENERAL"
            position = match.end()
    return items
