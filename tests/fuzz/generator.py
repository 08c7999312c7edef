"""Seeded mutations of valid department exports, each record with what must become of it.

Valid rows come from the sample province's generator (:class:`app.samples.SampleGenerator`,
no defects) in the shipped departments' own columns and mappings; each format takes the
rows of one shipped export:

=============  ===========================  =====================================
format         export (mapping)             why this one
=============  ===========================  =====================================
csv-utf-8      zj-drc-penalty               UTF-8 CSV with money (罚款金额(万元))
csv-gb18030    hz-amr-registration          GB18030 CSV with money (注册资本（万元）)
jsonl          hz-health-licence            its export is JSON Lines
xlsx           zj-amr-penalty               its export is a workbook, money as numbers
sql            zj-drc-penalty               text columns of a table, polled by 行号
http           hz-health-licence            the department posts its licences
=============  ===========================  =====================================

:func:`generate` interleaves mutated records with valid ones — a valid record right after
every mutated one, then a few more — deterministically for a seed. A mutation that leaves a
record valid (a tab in a name) expects it published; every other one expects a dead letter,
or, at the HTTP ingest, a refusal of the whole request when what is broken is the body.

Example::

    records = generate(Format.JSONL, 1000, seed=12)
    Counter(r.category for r in records if r.expected is Outcome.DEAD_LETTERED)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from functools import cache
from typing import Any

from app.samples import DepartmentExport, SampleGenerator


class Format(StrEnum):
    CSV_UTF8 = "csv-utf-8"
    CSV_GB18030 = "csv-gb18030"
    JSONL = "jsonl"
    XLSX = "xlsx"
    SQL = "sql"
    HTTP = "http"


class Outcome(StrEnum):
    """What must become of a record."""

    PUBLISHED = "published"
    DEAD_LETTERED = "dead_lettered"
    REFUSED = "refused"  # the HTTP request as a whole is answered 4xx; nothing is written
    #: Any of the three, but once: a value drawn at random (hypothesis) whose validity the
    #: fuzzer does not judge.
    ANY = "published, dead-lettered or refused"

    def admits(self, actual: str) -> bool:
        """Whether a record that became ``actual`` became what it must."""
        if self is Outcome.ANY:
            return actual in (Outcome.PUBLISHED, Outcome.DEAD_LETTERED, Outcome.REFUSED)
        return actual == self.value


#: The shipped export whose rows and mapping each format uses.
EXPORT_OF = {
    Format.CSV_UTF8: "zj-drc-penalty",
    Format.CSV_GB18030: "hz-amr-registration",
    Format.JSONL: "hz-health-licence",
    Format.XLSX: "zj-amr-penalty",
    Format.SQL: "zj-drc-penalty",
    Format.HTTP: "hz-health-licence",
}
CSV_FORMATS = frozenset({Format.CSV_UTF8, Format.CSV_GB18030})
JSON_FORMATS = frozenset({Format.JSONL, Format.HTTP})
ALL_FORMATS = frozenset(Format)
#: The bytes a file of each format is written in (the SQL and HTTP rows are text).
ENCODING_OF = {Format.CSV_UTF8: "utf-8", Format.CSV_GB18030: "gb18030", Format.JSONL: "utf-8"}
#: Bytes that are no character in the encoding, whatever follows them.
INVALID_BYTES = {"utf-8": b"\xff", "gb18030": b"\x80"}

VALID = "valid"
#: Mutations whose damage can reach the records around them (a quote left open may close at
#: another stray quote lines later): generated into files of their own, their valid
#: neighbours counted under :func:`neighbours` of the category, not as ``valid``.
SPREADING = frozenset({"csv.unclosed_quote"})


def neighbours(category: str) -> str:
    """The category the valid records of a file of ``category``'s mutations are counted in."""
    return f"{category} (valid neighbours)"


# Per record type, the canonical fields the mutations aim at.
NAME_FIELD = {"registration": "name", "licence": "holder_name", "penalty": "party_name"}
LONG_TEXT_FIELD = {"registration": "address", "licence": "content", "penalty": "violation_facts"}
DATE_FIELD = {"registration": "established_on", "licence": "decided_on", "penalty": "decided_on"}
AMOUNT_FIELD = {"registration": "registered_capital", "penalty": "fine_amount"}

#: The day the sample records end on: fixed, so that a seed makes the same records.
SAMPLE_TODAY = date(2026, 6, 30)
TWO_MEGABYTES_OF_TEXT = "很" * 700_000  # 2.1 MB in UTF-8, 1.4 MB in GB18030
FIVE_THOUSAND_DIGITS = "7" * 5000
NESTED_3000 = b"[" * 3000 + b"]" * 3000
OVERSIZED_BODY_BYTES = 20 * 1024 * 1024
#: C0 controls other than tab, newline and carriage return, and DEL.
CONTROL_CHARACTERS = [chr(c) for c in (*range(1, 9), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)]


@dataclass(frozen=True)
class Patch:
    """Bytes the writer replaces after encoding: what no well-formed writer produces.

    ``csv`` is (old, new) in the CSV line, ``json`` (old, new) in the JSON text.
    """

    csv: tuple[bytes, bytes] | None = None
    json: tuple[bytes, bytes] | None = None


@dataclass
class FuzzRecord:
    """One generated record: its row (column → value), how it was broken, what it must become.

    At the HTTP ingest a record expected :attr:`Outcome.REFUSED`, or ``alone``, is posted in a
    request of its own, as ``body`` when that is set.
    """

    format: Format
    index: int  # its place in the format's sequence
    record_id: str
    row: dict[str, Any]
    category: str = VALID
    expected: Outcome = Outcome.PUBLISHED
    patch: Patch | None = None
    body: bytes | None = None
    alone: bool = False
    mutated: bool = False  # False for a valid record, whatever category it is counted in

    @property
    def sentinel(self) -> str:
        """A value unique to the record, for a :class:`Patch` to find in the written bytes."""
        return f"FUZZSENTINEL{self.index}X"


@dataclass(frozen=True)
class Target:
    """What a mutation works on: the record, its export, and the columns it aims at."""

    record: FuzzRecord
    export: DepartmentExport
    rng: random.Random

    @property
    def row(self) -> dict[str, Any]:
        return self.record.row

    def column(self, canonical_field: dict[str, str]) -> str | None:
        name = canonical_field.get(self.export.record_type)
        return None if name is None else self.export.column(name)

    @property
    def name_column(self) -> str:
        column = self.column(NAME_FIELD)
        assert column is not None
        return column

    def patch_name(self, csv: bytes | None = None, json: bytes | None = None) -> None:
        """Put the sentinel in the name and have the writer replace it by these bytes (in
        JSON, the quoted string literal is replaced)."""
        sentinel = self.record.sentinel
        self.row[self.name_column] = sentinel
        self.record.patch = Patch(
            csv=None if csv is None else (sentinel.encode(), csv),
            json=None if json is None else (f'"{sentinel}"'.encode(), json),
        )


Mutate = Callable[[Target], None]


@dataclass(frozen=True)
class Mutation:
    """One category of breakage: where it applies and what the record must become."""

    category: str
    mutate: Mutate
    formats: frozenset[Format] = ALL_FORMATS
    expected: Outcome = Outcome.DEAD_LETTERED
    needs: dict[str, str] | None = None  # a canonical field the record type must have
    weight: float = 1.0  # huge values are rarer: they cost megabytes each
    expected_at: dict[Format, Outcome] = field(default_factory=dict)
    #: The option of the amount's mapping rule that makes the mutated value valid (then it
    #: is normalised and published).
    allowed_by: str | None = None

    def applies_to(self, fmt: Format, export: DepartmentExport) -> bool:
        if fmt not in self.formats:
            return False
        return self.needs is None or self.needs.get(export.record_type) is not None

    def outcome(self, fmt: Format) -> Outcome:
        if self.allowed_by is not None:
            rule = exports()[EXPORT_OF[fmt]].rule(
                AMOUNT_FIELD[exports()[EXPORT_OF[fmt]].record_type]
            )
            if getattr(rule, self.allowed_by, None):
                return Outcome.PUBLISHED
        return self.expected_at.get(fmt, self.expected)


# -- the mutations ------------------------------------------------------------------------------


def _wrong_check_character(target: Target) -> None:
    column = target.export.column("uscc")
    assert column is not None
    uscc = target.row[column]
    target.row[column] = uscc[:17] + ("0" if uscc[17] != "0" else "1")


def _impossible_date(target: Target) -> None:
    name = DATE_FIELD[target.export.record_type]
    column = target.export.column(name)
    assert column is not None
    target.row[column] = target.export.impossible_date(name, month_13=target.rng.random() < 0.5)


def _date_as_number(target: Target) -> None:
    column = target.column(DATE_FIELD)
    assert column is not None
    target.row[column] = 20240101


def _amount(text: str) -> Mutate:
    def mutate(target: Target) -> None:
        column = target.column(AMOUNT_FIELD)
        assert column is not None
        target.row[column] = text

    return mutate


def _amount_as_json_number(digits: str) -> Mutate:
    """In JSON, the amount as a bare number (Python's json refuses ints of 4,300+ digits);
    elsewhere, as text."""

    def mutate(target: Target) -> None:
        column = target.column(AMOUNT_FIELD) or target.export.mapping.spec.record_version
        assert column is not None
        sentinel = target.record.sentinel
        target.row[column] = sentinel if target.record.format in JSON_FORMATS else digits
        target.record.patch = Patch(json=(f'"{sentinel}"'.encode(), digits.encode()))

    return mutate


def _name_with(insert: Callable[[random.Random], str]) -> Mutate:
    def mutate(target: Target) -> None:
        name = target.row[target.name_column]
        cut = target.rng.randrange(1, len(name))
        target.row[target.name_column] = name[:cut] + insert(target.rng) + name[cut:]

    return mutate


def _invalid_bytes(target: Target) -> None:
    name = target.row[target.name_column]
    encoding = ENCODING_OF[target.record.format]
    broken = name[:2].encode(encoding) + INVALID_BYTES[encoding] + name[2:].encode(encoding)
    target.patch_name(csv=broken, json=b'"' + broken + b'"')


def _csv_structure(make: Callable[[bytes], bytes]) -> Mutate:
    def mutate(target: Target) -> None:
        name = target.row[target.name_column].encode(ENCODING_OF[target.record.format])
        target.patch_name(csv=make(name))

    return mutate


def _missing_column(target: Target) -> None:
    sentinel = target.record.sentinel
    target.row[target.name_column] = sentinel
    target.record.patch = Patch(csv=(f"{sentinel},".encode(), b""))


def _huge_text(target: Target) -> None:
    column = target.column(LONG_TEXT_FIELD)
    assert column is not None
    target.row[column] = TWO_MEGABYTES_OF_TEXT
    # two in one batch would make a body over the ingest's limit, refused whole (413)
    target.record.alone = True


def _nested(target: Target) -> None:
    target.patch_name(json=NESTED_3000)


def _id_as(shape: Callable[[str], Any]) -> Mutate:
    def mutate(target: Target) -> None:
        column = target.export.mapping.spec.source_record_id
        target.row[column] = shape(target.row[column])

    return mutate


def _lone_surrogate(target: Target) -> None:
    name = target.row[target.name_column]
    target.patch_name(json=f'"{name[:2]}\\ud800{name[2:]}"'.encode())


def _nan_name(target: Target) -> None:
    target.patch_name(json=b"NaN")


def _nan_body(target: Target) -> None:
    target.record.body = b'{"records": NaN}'


def _oversized_body(target: Target) -> None:
    column = target.column(LONG_TEXT_FIELD)
    assert column is not None
    target.row[column] = "很" * (OVERSIZED_BODY_BYTES // 3 + 1)


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("uscc.check_character", _wrong_check_character),
    Mutation("date.impossible", _impossible_date),
    Mutation(
        "date.as_number",
        _date_as_number,
        formats=frozenset({Format.JSONL, Format.HTTP, Format.XLSX}),
    ),
    Mutation("money.1e400", _amount("1e400"), needs=AMOUNT_FIELD),
    Mutation("money.23_integer_digits", _amount("1" * 23), needs=AMOUNT_FIELD),
    Mutation(
        "money.thousands_separator",
        _amount("1,000"),
        needs=AMOUNT_FIELD,
        allowed_by="thousands_separator",
    ),
    Mutation(
        "money.full_width_digits",
        _amount("１００"),
        needs=AMOUNT_FIELD,
        allowed_by="fullwidth_digits",
    ),
    Mutation("money.beyond_scale", _amount("1.0000001"), needs=AMOUNT_FIELD),
    Mutation("money.nan", _amount("NaN"), needs=AMOUNT_FIELD),
    Mutation(
        "huge.5000_digit_integer",
        _amount_as_json_number(FIVE_THOUSAND_DIGITS),
        # the body as a whole is no JSON Python reads
        expected_at={Format.HTTP: Outcome.REFUSED},
    ),
    Mutation(
        "control.nul",
        _name_with(lambda rng: "\x00"),
        formats=ALL_FORMATS - {Format.XLSX, Format.SQL},  # neither can hold a NUL
    ),
    Mutation(
        "control.character",
        _name_with(lambda rng: rng.choice(CONTROL_CHARACTERS)),
        formats=ALL_FORMATS - {Format.XLSX},  # openpyxl refuses to write them
    ),
    Mutation("control.tab_allowed", _name_with(lambda rng: "\t"), expected=Outcome.PUBLISHED),
    Mutation(
        "bytes.invalid_in_encoding",
        _invalid_bytes,
        formats=CSV_FORMATS | {Format.JSONL},
    ),
    Mutation("csv.unclosed_quote", _csv_structure(lambda n: b'"' + n), formats=CSV_FORMATS),
    Mutation(
        "csv.bare_cr_unquoted", _csv_structure(lambda n: n[:3] + b"\r" + n[3:]), formats=CSV_FORMATS
    ),
    Mutation("csv.extra_column", _csv_structure(lambda n: n + b",extra"), formats=CSV_FORMATS),
    Mutation("csv.missing_column", _missing_column, formats=CSV_FORMATS),
    Mutation(
        "huge.2mb_field",
        _huge_text,
        formats=ALL_FORMATS - {Format.XLSX},  # an Excel cell holds at most 32,767 characters
        weight=0.1,
    ),
    Mutation(
        "huge.nested_3000",
        _nested,
        formats=JSON_FORMATS,
        weight=0.3,
        expected_at={Format.HTTP: Outcome.REFUSED},
    ),
    Mutation("type.id_as_list", _id_as(lambda v: [v]), formats=JSON_FORMATS),
    Mutation("type.id_as_object", _id_as(lambda v: {"id": v}), formats=JSON_FORMATS),
    Mutation("text.lone_surrogate", _lone_surrogate, formats=JSON_FORMATS),
    Mutation(
        "text.nan_as_name",
        _nan_name,
        formats=JSON_FORMATS,
        # the ingest takes strict JSON only: a body with NaN is refused whole (422)
        expected_at={Format.HTTP: Outcome.REFUSED},
    ),
    Mutation(
        "http.nan_body", _nan_body, formats=frozenset({Format.HTTP}), expected=Outcome.REFUSED
    ),
    Mutation(
        "http.oversized_body",
        _oversized_body,
        formats=frozenset({Format.HTTP}),
        expected=Outcome.REFUSED,
        weight=0.05,
    ),
)

# -- the records ------------------------------------------------------------------------------


@cache
def valid_rows(seed: int, least: int = 8) -> dict[str, tuple[dict[str, Any], ...]]:
    """Valid rows of every shipped export, at least ``least`` of each (some exports are rare
    in the sample province: a larger sample is drawn until each has enough)."""
    size = 5000
    while True:
        sample = SampleGenerator(seed=seed, bad_share=0.0, today=SAMPLE_TODAY).generate(size)
        rows = {name: tuple(r.row for r in records) for name, records in sample.exports.items()}
        if all(len(rows.get(name, ())) >= least for name in set(EXPORT_OF.values())):
            return rows
        size *= 4


@cache
def exports() -> dict[str, DepartmentExport]:
    from app.samples import load_exports

    return load_exports()


def mutations_for(fmt: Format, categories: frozenset[str] | None = None) -> list[Mutation]:
    """The mutations that apply to a format (of ``categories`` only, when given)."""
    export = exports()[EXPORT_OF[fmt]]
    return [
        m
        for m in MUTATIONS
        if m.applies_to(fmt, export) and (categories is None or m.category in categories)
    ]


def generate(
    fmt: Format,
    count: int,
    seed: int,
    mutated_share: float = 0.4,
    categories: frozenset[str] | None = None,
    start: int = 0,
) -> list[FuzzRecord]:
    """``count`` records of one format: mutated ones (about ``mutated_share``, below ½, of
    ``categories`` only when given), each followed by at least one valid record. Every
    category comes once (in a shuffled order), then they are drawn by weight. Records are
    numbered from ``start``, and their record ids with them."""
    rng = random.Random(f"{seed}:{fmt}:{start}")
    export = exports()[EXPORT_OF[fmt]]
    pool = valid_rows(seed)[EXPORT_OF[fmt]]
    mutations = mutations_for(fmt, categories)
    weights = [m.weight for m in mutations]
    first_round = rng.sample(mutations, len(mutations))
    id_column = export.mapping.spec.source_record_id
    format_number = list(Format).index(fmt)
    records: list[FuzzRecord] = []
    previous_mutated = True  # the sequence opens with a valid record
    # Only a record after a valid one may be mutated: a chance p there makes a share p/(1+p).
    chance = mutated_share / (1 - mutated_share)
    for index in range(start, start + count):
        row = dict(rng.choice(pool))
        record_id = f"9{seed % 1000:03d}{format_number}{index:09d}"
        row[id_column] = record_id
        record = FuzzRecord(fmt, index, record_id, row)
        if (
            mutations
            and not previous_mutated
            and index < start + count - 1
            and rng.random() < chance
        ):
            mutation = first_round.pop() if first_round else rng.choices(mutations, weights)[0]
            mutation.mutate(Target(record, export, rng))
            record.category, record.expected = mutation.category, mutation.outcome(fmt)
            record.mutated = True
        previous_mutated = record.mutated
        records.append(record)
    return records
