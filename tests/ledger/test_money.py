"""Money parsing and formatting: yuan text <-> integer fen, never through floats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvalidAmount
from ledger.money import MAX_AMOUNT, check_amount, check_balance, format_yuan, parse_yuan


@pytest.mark.parametrize(
    ("text", "fen"),
    [("12", 1200), ("12.5", 1250), ("12.50", 1250), ("0.01", 1), ("500", 50_000), ("007", 700)],
)
def test_parse_yuan_accepts(text: str, fen: int) -> None:
    """Whole yuan and one or two decimals parse to fen."""
    assert parse_yuan(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "12.345",
        "-1",
        "0",
        "0.00",
        "1e3",
        "abc",
        "",
        " 12",
        "12 ",
        "+5",
        "12.",
        ".5",
        "1,000",
        "１２",
        "NaN",
        "inf",
        "99999999999999",
    ],
)
def test_parse_yuan_refuses(text: str) -> None:
    """Three decimals, signs, zero, exponents, blanks and non-ASCII digits are refused."""
    with pytest.raises(InvalidAmount, match="invalid amount"):
        parse_yuan(text)


def test_parse_yuan_refuses_non_strings() -> None:
    """Only text is parsed (a float would have lost the fen already)."""
    with pytest.raises(InvalidAmount):
        parse_yuan(12.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (0, "0.00"),
        (1, "0.01"),
        (100, "1.00"),
        (123456, "1234.56"),
        (-5, "-0.05"),
        (-12345, "-123.45"),
    ],
)
def test_format_yuan(fen: int, text: str) -> None:
    """Fen format as yuan with exactly two decimals, negatives with a sign."""
    assert format_yuan(fen) == text


@given(st.integers(min_value=1, max_value=MAX_AMOUNT - 1))
def test_format_then_parse_round_trips(fen: int) -> None:
    """Every valid amount survives format then parse."""
    assert parse_yuan(format_yuan(fen)) == fen


@given(st.integers(min_value=0, max_value=10**10), st.integers(min_value=0, max_value=99))
def test_parse_matches_integer_arithmetic(whole: int, frac: int) -> None:
    """'W.FF' is W*100+FF fen, computed without floats."""
    text = f"{whole}.{frac:02d}"
    if whole == 0 and frac == 0:
        with pytest.raises(InvalidAmount):
            parse_yuan(text)
    else:
        assert parse_yuan(text) == whole * 100 + frac


@given(st.text(max_size=12))
def test_parse_yuan_never_crashes(text: str) -> None:
    """Any text either parses to a positive amount or raises InvalidAmount."""
    try:
        fen = parse_yuan(text)
    except InvalidAmount:
        return
    assert 0 < fen < MAX_AMOUNT


def test_check_amount_and_balance() -> None:
    """Amounts must be positive ints; balances may be zero; bools and floats never pass."""
    assert check_amount(1) == 1
    assert check_balance(0) == 0
    for bad in (0, -1, True, 1.0, "1", MAX_AMOUNT):
        with pytest.raises(InvalidAmount):
            check_amount(bad)
    for bad in (-1, False, 0.0, MAX_AMOUNT):
        with pytest.raises(InvalidAmount):
            check_balance(bad)
