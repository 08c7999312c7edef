"""The unified social credit code (统一社会信用代码, USCC), GB 32100-2015.

Every legal entity and other organization in China has one USCC for life; it is the
key that joins records from different departments on this platform. A USCC has 18
characters::

    9 1 330106 MA2CD7Q4X U
    | | |      |         `-- 18    check character (校验码), ISO 7064 MOD 31-3 over 1-17
    | | |      `---------- 9-17  organization code (主体标识码, GB 11714): an 8-character
    | | |                        body and its own check character at position 17
    | | `----------------- 3-8   division of the registering authority (登记管理机关行政区划码,
    | |                          GB/T 2260)
    | `------------------- 2     entity category (机构类别代码), e.g. 1 enterprise under 9
    `--------------------- 1     registration authority (登记管理部门代码), e.g. 9 市场监管

Two alphabets are involved, and mixing them up is the classic bug:

* the USCC alphabet ``0123456789ABCDEFGHJKLMNPQRTUWXY`` (31 symbols; no I, O, S, V, Z),
  valued by index, so ``A`` = 10, ``M`` = 21, ``Y`` = 30; every character of a USCC is
  in it, and the final check uses these values;
* the organization-code alphabet ``0-9A-Z``, valued ``A`` = 10 … ``Z`` = 35, so ``M`` = 22;
  the check at position 17 uses these values.

Worked example, ``91330106MA2CD7Q4XU``:

* organization check: the body ``MA2CD7Q4`` weighted by 3 7 9 10 5 8 4 2 sums to
  22·3 + 10·7 + 2·9 + 12·10 + 13·5 + 7·8 + 26·4 + 4·2 = 507; 507 mod 11 = 1 and
  11 − 1 = 10, written ``X`` (11 would be written ``0``);
* final check: the first 17 characters, valued in the USCC alphabet and weighted by
  3^(i−1) mod 31, sum to 2608; 2608 mod 31 = 4 and 31 − 4 = 27, which is ``U``.

Because 31 is prime and consecutive weights differ by a factor of 3, the final check
alone catches every single-character substitution and every swap of two adjacent,
different characters.

A value that fails any rule is invalid input: :func:`uscc_problems` says what is wrong
so the record can be dead-lettered with that reason. Nothing here strips, upper-cases
or otherwise "fixes" a code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS: tuple[int, ...] = tuple(pow(3, i, 31) for i in range(17))

ORGANIZATION_CODE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ORGANIZATION_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

# 登记管理部门代码 as widely published for GB 32100-2015 and its amendment; 1, 5, 9 and Y
# are by far the most common.
REGISTRATION_AUTHORITIES: dict[str, str] = {
    "1": "机构编制 (establishment administration)",
    "2": "外交 (foreign affairs)",
    "3": "司法行政 (justice administration)",
    "4": "文化 (culture)",
    "5": "民政 (civil affairs)",
    "6": "旅游 (tourism)",
    "7": "宗教 (religious affairs)",
    "8": "工会 (trade unions)",
    "9": "工商 / 市场监管 (market regulation)",
    "A": "中央军委改革和编制办公室 (military establishment office)",
    "N": "农业 (agriculture)",
    "Y": "其他 (other)",
}

USCC_LENGTH = 18
_DIGITS = frozenset("0123456789")
_USCC_VALUE = {symbol: value for value, symbol in enumerate(USCC_ALPHABET)}
_ORGANIZATION_VALUE = {symbol: value for value, symbol in enumerate(ORGANIZATION_CODE_ALPHABET)}


def uscc_check_character(first17: str) -> str:
    """Return the check character (position 18) for the first 17 characters of a USCC.

    >>> uscc_check_character("91330106MA2CD7Q4X")
    'U'
    """
    if len(first17) != 17 or any(c not in _USCC_VALUE for c in first17):
        raise ValueError(f"expected 17 characters from {USCC_ALPHABET!r}, found {first17!r}")
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def organization_check_character(body8: str) -> str:
    """Return the GB 11714 check character for an 8-character organization-code body.

    This is position 17 of a USCC, computed over positions 9-16 with letters valued
    A=10 … Z=35 (not the USCC alphabet's values).

    >>> organization_check_character("MA2CD7Q4")
    'X'
    >>> organization_check_character("00000000")
    '0'
    """
    if len(body8) != 8 or any(c not in _ORGANIZATION_VALUE for c in body8):
        raise ValueError(f"expected 8 characters from 0-9 and A-Z, found {body8!r}")
    total = sum(
        _ORGANIZATION_VALUE[c] * w for c, w in zip(body8, ORGANIZATION_CODE_WEIGHTS, strict=True)
    )
    check = 11 - total % 11
    if check == 10:
        return "X"
    if check == 11:
        return "0"
    return str(check)


@dataclass(frozen=True)
class UsccProblem:
    """One reason a value is not a valid USCC.

    ``code`` is stable and machine-readable (for dead-letter headers and metrics);
    ``message`` is for people and names what was expected and what was found.
    """

    code: str
    message: str


def uscc_problems(value: object) -> list[UsccProblem]:
    """Return every rule that ``value`` breaks as a USCC; an empty list means valid.

    The structural rules (length, alphabet, registration authority, division) are all
    checked and reported together. The two check characters are only verified when the
    value has 18 characters from the USCC alphabet, since otherwise they are meaningless.

    >>> uscc_problems("91330106MA2CD7Q4XU")
    []
    >>> [p.message for p in uscc_problems("91330106MA2CD7Q4XX")]
    ["check character (position 18) is 'X', expected 'U'"]
    """
    if not isinstance(value, str):
        found = "None" if value is None else f"{type(value).__name__} {value!r}"
        return [UsccProblem("uscc.type", f"expected the USCC as a string, found {found}")]
    if _is_valid_fast(value):
        return []

    problems: list[UsccProblem] = []

    if len(value) != USCC_LENGTH:
        message = f"has {len(value)} characters, expected {USCC_LENGTH}"
        if value != value.strip():
            message += " (it has leading or trailing whitespace)"
        problems.append(UsccProblem("uscc.length", message))

    foreign = [(position, c) for position, c in enumerate(value, 1) if c not in _USCC_VALUE]
    if foreign:
        listed = ", ".join(f"{c!r} at position {position}" for position, c in foreign)
        message = (
            f"characters outside the USCC alphabet ({USCC_ALPHABET}; no I, O, S, V, Z): {listed}"
        )
        if any(c.islower() for _, c in foreign):
            message += "; letters in a USCC are upper case"
        problems.append(UsccProblem("uscc.charset", message))

    if value and value[0] not in REGISTRATION_AUTHORITIES:
        problems.append(
            UsccProblem(
                "uscc.registration_authority",
                f"registration authority code (position 1) is {value[0]!r}, "
                f"expected one of {', '.join(REGISTRATION_AUTHORITIES)}",
            )
        )

    division = value[2:8]
    if division and not (len(division) == 6 and all(c in _DIGITS for c in division)):
        problems.append(
            UsccProblem(
                "uscc.division",
                f"division code (positions 3-8) is {division!r}, expected six digits 0-9",
            )
        )

    if len(value) != USCC_LENGTH or foreign:
        return problems

    organization_check = organization_check_character(value[8:16])
    if value[16] != organization_check:
        problems.append(
            UsccProblem(
                "uscc.organization_check",
                f"organization-code check character (position 17) is {value[16]!r}, "
                f"expected {organization_check!r} for body {value[8:16]!r}",
            )
        )

    check = uscc_check_character(value[:17])
    if value[17] != check:
        problems.append(
            UsccProblem(
                "uscc.check_character",
                f"check character (position 18) is {value[17]!r}, expected {check!r}",
            )
        )
    return problems


# Per-position lookup tables (value × weight), so that checking a valid code, the common
# case on a connector's hot path, is a few dictionary lookups.
_USCC_WEIGHTED = tuple(
    {symbol: value * weight for symbol, value in _USCC_VALUE.items()} for weight in USCC_WEIGHTS
)
_ORGANIZATION_WEIGHTED = tuple(
    {symbol: _ORGANIZATION_VALUE[symbol] * weight for symbol in _USCC_VALUE}
    for weight in ORGANIZATION_CODE_WEIGHTS
)
_ORGANIZATION_CHECK = {
    remainder: "X" if remainder == 1 else "0" if remainder == 0 else str(11 - remainder)
    for remainder in range(11)
}


def _is_valid_fast(value: str) -> bool:
    """True when ``value`` passes every rule; False means "look closer", not "invalid"."""
    if len(value) != USCC_LENGTH or value[0] not in REGISTRATION_AUTHORITIES:
        return False
    division = value[2:8]
    if not (division.isascii() and division.isdigit()):
        return False
    try:
        total = sum(table[c] for table, c in zip(_USCC_WEIGHTED, value[:17], strict=True))
        organization = sum(
            table[c] for table, c in zip(_ORGANIZATION_WEIGHTED, value[8:16], strict=True)
        )
        check = USCC_ALPHABET[(31 - total % 31) % 31]
        return (
            value[17] == check
            and value[16] == _ORGANIZATION_CHECK[organization % 11]
            and value[17] in _USCC_VALUE
        )
    except KeyError:
        return False


def is_valid_uscc(value: object) -> bool:
    """Return whether ``value`` is a valid USCC (see :func:`uscc_problems` for why not)."""
    return not uscc_problems(value)


class InvalidUsccError(ValueError):
    """A value is not a valid USCC; ``problems`` lists every rule it breaks."""

    def __init__(self, value: object, problems: list[UsccProblem]) -> None:
        self.value = value
        self.problems = problems
        reasons = "; ".join(problem.message for problem in problems)
        super().__init__(f"invalid USCC {value!r}: {reasons}")


@dataclass(frozen=True)
class Uscc:
    """A valid unified social credit code, split into its parts.

    Build one with :meth:`parse`; ``str()`` gives back the 18 characters.
    Constructing one from parts that do not form a valid code raises
    :class:`InvalidUsccError`.
    """

    registration_authority: str
    """Position 1, 登记管理部门代码, e.g. ``9`` for market regulation."""
    entity_category: str
    """Position 2, 机构类别代码, e.g. ``1`` enterprise, ``2`` individual business under 9."""
    division: str
    """Positions 3-8, the GB/T 2260 division of the registering authority."""
    organization_code: str
    """Positions 9-17, the GB 11714 organization code including its check character."""
    check: str
    """Position 18, the check character."""

    def __post_init__(self) -> None:
        problems = uscc_problems(str(self))
        if problems:
            raise InvalidUsccError(str(self), problems)

    @classmethod
    def parse(cls, value: str) -> Uscc:
        """Parse ``value`` exactly as given, raising :class:`InvalidUsccError` (a
        ``ValueError``) that lists every problem if it is not a valid USCC.

        >>> Uscc.parse("91330106MA2CD7Q4XU").organization_code
        'MA2CD7Q4X'
        """
        problems = uscc_problems(value)
        if problems:
            raise InvalidUsccError(value, problems)
        return cls(
            registration_authority=value[0],
            entity_category=value[1],
            division=value[2:8],
            organization_code=value[8:17],
            check=value[17],
        )

    def __str__(self) -> str:
        return (
            self.registration_authority
            + self.entity_category
            + self.division
            + self.organization_code
            + self.check
        )


def make_uscc(
    prefix: str = "91",
    division: str = "330106",
    body8: str | None = None,
    rng: random.Random | None = None,
) -> str:
    """Return a valid USCC, for sample data.

    ``prefix`` is the registration authority and entity category (``91`` enterprise,
    ``92`` individual business, ``93`` farmers' cooperative, ``52`` 民办非企业单位 …).
    Unless ``body8`` is given, the organization-code body is drawn with ``rng`` from the
    USCC alphabet (whose letters are all valid in organization codes too); both check
    characters are computed.

    >>> make_uscc(body8="MA2CD7Q4")
    '91330106MA2CD7Q4XU'
    """
    if body8 is None:
        rng = rng if rng is not None else random.Random()
        body8 = "".join(rng.choice(USCC_ALPHABET) for _ in range(8))
    for name, part, length in (
        ("prefix", prefix, 2),
        ("division", division, 6),
        ("body8", body8, 8),
    ):
        if len(part) != length or any(c not in _USCC_VALUE for c in part):
            raise ValueError(
                f"{name} must be {length} characters from {USCC_ALPHABET!r}, found {part!r}"
            )
    first17 = prefix + division + body8 + organization_check_character(body8)
    code = first17 + uscc_check_character(first17)
    problems = uscc_problems(code)
    if problems:
        raise InvalidUsccError(code, problems)
    return code
