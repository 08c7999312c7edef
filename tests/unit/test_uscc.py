"""The unified social credit code (USCC, GB 32100-2015), as a specification.

Section 4 of the domain brief is the source; the worked examples and sums below are
taken from it.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xietong.uscc import (
    REGISTRATION_AUTHORITIES,
    USCC_ALPHABET,
    USCC_WEIGHTS,
    InvalidUsccError,
    Uscc,
    UsccProblem,
    is_valid_uscc,
    make_uscc,
    organization_check_character,
    uscc_check_character,
    uscc_problems,
)

WORKED_EXAMPLES = [
    "91330106MA2CD7Q4XU",
    "92440300MA5G8K2T90",
    "52110108MJ0123AB31",
    "91350200776049653A",
]
EXAMPLE = "91330106MA2CD7Q4XU"


def problem_codes(value: object) -> list[str]:
    return [problem.code for problem in uscc_problems(value)]


def with_recomputed_check(first17: str) -> str:
    """Append the correct final check character, as a careless "fixer" would."""
    return first17 + uscc_check_character(first17)


valid_usccs = st.builds(
    make_uscc,
    prefix=st.tuples(
        st.sampled_from(sorted(REGISTRATION_AUTHORITIES)), st.sampled_from(USCC_ALPHABET)
    ).map("".join),
    division=st.text(alphabet="0123456789", min_size=6, max_size=6),
    body8=st.text(alphabet=USCC_ALPHABET, min_size=8, max_size=8),
)


# --- The two check characters -------------------------------------------------------


def test_the_uscc_alphabet_has_31_symbols_without_i_o_s_v_z() -> None:
    assert len(USCC_ALPHABET) == 31
    assert not set("IOSVZ") & set(USCC_ALPHABET)


def test_the_uscc_weights_are_the_published_powers_of_three_mod_31() -> None:
    assert USCC_WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


@pytest.mark.parametrize("code", WORKED_EXAMPLES)
def test_the_worked_examples_are_valid(code: str) -> None:
    assert uscc_problems(code) == []
    assert is_valid_uscc(code)


def test_worked_organization_check_507_gives_x() -> None:
    # MA2CD7Q4 valued in 0-9A-Z (M=22, A=10, C=12, D=13, Q=26), weights 3 7 9 10 5 8 4 2.
    total = 22 * 3 + 10 * 7 + 2 * 9 + 12 * 10 + 13 * 5 + 7 * 8 + 26 * 4 + 4 * 2
    assert total == 507
    assert 11 - total % 11 == 10
    assert organization_check_character("MA2CD7Q4") == "X"


def test_worked_final_check_2608_gives_u() -> None:
    first17 = EXAMPLE[:17]
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    assert total == 2608
    assert 31 - total % 31 == 27
    assert USCC_ALPHABET[27] == "U"
    assert uscc_check_character(first17) == "U"


def test_organization_check_writes_10_as_x_and_11_as_0() -> None:
    assert organization_check_character("MA2CD7Q4") == "X"  # 11 - 1 = 10
    assert organization_check_character("00000000") == "0"  # 11 - 0 = 11
    assert organization_check_character("77604965") == "3"  # 250 mod 11 = 8


def test_organization_check_values_m_as_22_not_as_in_the_uscc_alphabet() -> None:
    """M is 22 in 0-9A-Z but 21 in the USCC alphabet (J: 19 vs 18).

    For MJ0123AB the two valuations give different check characters: 305 -> '3' is
    right, 295 -> '2' is what an implementation reusing the USCC values would compute.
    (The brief's MA2CD7Q4 happens to give 'X' either way, so it cannot catch this.)
    """
    assert organization_check_character("MJ0123AB") == "3"
    assert is_valid_uscc("52110108MJ0123AB31")

    with_uscc_valued_check = with_recomputed_check("52110108MJ0123AB" + "2")
    assert problem_codes(with_uscc_valued_check) == ["uscc.organization_check"]


# --- What an invalid code is told -----------------------------------------------------


def test_a_wrong_check_character_is_rejected_naming_expected_and_found() -> None:
    assert uscc_problems("91330106MA2CD7Q4XX") == [
        UsccProblem("uscc.check_character", "check character (position 18) is 'X', expected 'U'")
    ]


def test_a_wrong_organization_check_is_rejected_even_with_a_recomputed_final_check() -> None:
    code = with_recomputed_check("91330106MA2CD7Q4" + "5")
    [problem] = uscc_problems(code)
    assert problem.code == "uscc.organization_check"
    assert "is '5', expected 'X'" in problem.message


@pytest.mark.parametrize("letter", list("IOSVZ"))
def test_letters_outside_the_uscc_alphabet_are_rejected(letter: str) -> None:
    code = EXAMPLE[:8] + letter + EXAMPLE[9:]
    [problem] = uscc_problems(code)
    assert problem.code == "uscc.charset"
    assert f"{letter!r} at position 9" in problem.message


def test_lower_case_is_rejected_not_upper_cased() -> None:
    lower = EXAMPLE.lower()
    [problem] = uscc_problems(lower)
    assert problem.code == "uscc.charset"
    assert "upper case" in problem.message
    assert is_valid_uscc(lower.upper())


@pytest.mark.parametrize("value", [EXAMPLE[:17], EXAMPLE + "0", "", f" {EXAMPLE}"])
def test_a_value_that_is_not_18_characters_long_is_rejected(value: str) -> None:
    problems = uscc_problems(value)
    assert problems[0].code == "uscc.length"
    assert f"has {len(value)} characters, expected 18" in problems[0].message


def test_surrounding_whitespace_is_named_and_not_stripped() -> None:
    problems = uscc_problems(f"{EXAMPLE} ")
    assert "leading or trailing whitespace" in problems[0].message
    assert not is_valid_uscc(f"{EXAMPLE} ")


@pytest.mark.parametrize("value", [None, 91350200776049653, EXAMPLE.encode()])
def test_a_value_that_is_not_a_string_is_rejected(value: object) -> None:
    assert problem_codes(value) == ["uscc.type"]
    assert not is_valid_uscc(value)


@pytest.mark.parametrize("authority", list("BCGXW0"))
def test_an_unknown_registration_authority_is_rejected(authority: str) -> None:
    code = with_recomputed_check(authority + EXAMPLE[1:17])
    assert problem_codes(code) == ["uscc.registration_authority"]


@pytest.mark.parametrize("authority", sorted(REGISTRATION_AUTHORITIES))
def test_every_registration_authority_in_the_table_is_accepted(authority: str) -> None:
    assert is_valid_uscc(with_recomputed_check(authority + EXAMPLE[1:17]))


def test_a_division_that_is_not_six_digits_is_rejected() -> None:
    code = with_recomputed_check("9133A106" + EXAMPLE[8:17])
    [problem] = uscc_problems(code)
    assert problem.code == "uscc.division"
    assert "'33A106'" in problem.message


def test_every_problem_is_reported_together() -> None:
    code = "B1330A06MA2CD7Q4" + "5" + "0"
    assert problem_codes(code) == [
        "uscc.registration_authority",
        "uscc.division",
        "uscc.organization_check",
        "uscc.check_character",
    ]


def test_check_characters_are_not_judged_when_length_or_alphabet_is_wrong() -> None:
    assert problem_codes("91330106MI2CD7Q4X") == ["uscc.length", "uscc.charset"]
    assert problem_codes("91330106MA2CD7Q4XS") == ["uscc.charset"]


# --- The parsed value -----------------------------------------------------------------


def test_parse_splits_a_valid_code_into_its_parts() -> None:
    uscc = Uscc.parse(EXAMPLE)
    assert uscc == Uscc(
        registration_authority="9",
        entity_category="1",
        division="330106",
        organization_code="MA2CD7Q4X",
        check="U",
    )
    assert str(uscc) == EXAMPLE


def test_parse_raises_a_value_error_listing_every_problem() -> None:
    with pytest.raises(ValueError, match=r"position 1.*position 18") as raised:
        Uscc.parse("B1330106MA2CD7Q4XU")
    assert isinstance(raised.value, InvalidUsccError)
    assert [p.code for p in raised.value.problems] == [
        "uscc.registration_authority",
        "uscc.check_character",
    ]


def test_a_uscc_cannot_be_built_from_parts_that_do_not_form_a_valid_code() -> None:
    with pytest.raises(InvalidUsccError, match="expected 'U'"):
        Uscc("9", "1", "330106", "MA2CD7Q4X", "X")


# --- Sample codes ---------------------------------------------------------------------


def test_make_uscc_computes_both_check_characters() -> None:
    assert make_uscc(body8="MA2CD7Q4") == EXAMPLE
    assert make_uscc("52", "110108", "MJ0123AB") == "52110108MJ0123AB31"


def test_make_uscc_is_reproducible_with_a_seeded_rng() -> None:
    assert make_uscc(rng=random.Random(7)) == make_uscc(rng=random.Random(7))


@pytest.mark.parametrize(
    ("prefix", "division", "body8"),
    [
        ("B1", "330106", "MA2CD7Q4"),
        ("9", "330106", "MA2CD7Q4"),
        ("91", "3301A6", "MA2CD7Q4"),
        ("91", "330106", "MA2CD7QI"),
    ],
)
def test_make_uscc_refuses_parts_that_cannot_form_a_valid_code(
    prefix: str, division: str, body8: str
) -> None:
    with pytest.raises(ValueError):
        make_uscc(prefix, division, body8)


@given(code=valid_usccs)
def test_every_made_code_is_valid(code: str) -> None:
    assert uscc_problems(code) == []
    assert Uscc.parse(code).division == code[2:8]


@given(rng=st.randoms(use_true_random=False))
def test_every_code_made_with_a_random_body_is_valid(rng: random.Random) -> None:
    assert is_valid_uscc(make_uscc(rng=rng))


# --- What the final check detects -----------------------------------------------------
#
# Both hold for every valid code: 31 is prime, so a weight times a nonzero difference is
# never 0 mod 31; adjacent weights differ by a factor of 3 (and 28 vs 1 between
# positions 17 and 18), so a swap changes the sum by a nonzero multiple too. Swaps of
# non-adjacent characters are not always detected (about 1 in 400 slip through), so no
# such property is claimed.


def test_every_single_substitution_of_the_worked_example_is_rejected() -> None:
    for position, original in enumerate(EXAMPLE):
        for replacement in USCC_ALPHABET.replace(original, ""):
            changed = EXAMPLE[:position] + replacement + EXAMPLE[position + 1 :]
            assert not is_valid_uscc(changed), changed


@given(code=valid_usccs, data=st.data())
def test_changing_any_one_character_is_caught_by_the_final_check(
    code: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(min_value=0, max_value=17), label="position")
    replacement = data.draw(
        st.sampled_from(USCC_ALPHABET.replace(code[position], "")), label="replacement"
    )
    changed = code[:position] + replacement + code[position + 1 :]
    assert "uscc.check_character" in problem_codes(changed)


@given(code=valid_usccs, data=st.data())
def test_swapping_two_adjacent_different_characters_is_caught_by_the_final_check(
    code: str, data: st.DataObject
) -> None:
    swappable = [i for i in range(17) if code[i] != code[i + 1]]
    position = data.draw(st.sampled_from(swappable), label="position")
    swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
    assert "uscc.check_character" in problem_codes(swapped)
