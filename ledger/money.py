"""Money as integer fen (0.01 CNY): parsing and formatting yuan text, never through floats.

``parse_yuan`` accepts a positive decimal with at most two fraction digits ("12", "12.5",
"12.50") and refuses everything else (zero, signs, exponents, three decimals, blanks) with
:class:`~ledger.errors.InvalidAmount`. ``format_yuan`` prints fen as yuan with two decimals.
"""

from __future__ import annotations

import re
from typing import Final

from ledger.errors import InvalidAmount

CURRENCY: Final = "CNY"
#: Upper bound of any single amount, far above every limit; keeps sums inside BIGINT.
MAX_AMOUNT: Final = 10**13

_YUAN: Final = re.compile(r"([0-9]{1,13})(?:\.([0-9]{1,2}))?")


def parse_yuan(text: str) -> int:
    """Parse a positive yuan amount with at most two decimals into fen."""
    match = _YUAN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidAmount(
            f"invalid amount {str(text)[:40]!r}: yuan with at most two decimals, e.g. 12.50"
        )
    whole, frac = match.group(1), (match.group(2) or "").ljust(2, "0")
    fen = int(whole) * 100 + int(frac)
    return check_amount(fen)


def check_amount(fen: object, what: str = "amount") -> int:
    """Return ``fen`` if it is a positive integer below :data:`MAX_AMOUNT`, else refuse."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise InvalidAmount(f"invalid {what} {fen!r}: an integer number of fen is required")
    if fen <= 0:
        raise InvalidAmount(f"invalid {what} {format_yuan(fen)} CNY: must be positive")
    if fen >= MAX_AMOUNT:
        raise InvalidAmount(f"invalid {what} {format_yuan(fen)} CNY: too large")
    return fen


def check_balance(fen: object, what: str = "card balance") -> int:
    """Return ``fen`` if it is an integer in ``[0, MAX_AMOUNT)`` (a reported balance)."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise InvalidAmount(f"invalid {what} {fen!r}: an integer number of fen is required")
    if fen < 0 or fen >= MAX_AMOUNT:
        raise InvalidAmount(f"invalid {what} {format_yuan(fen)} CNY: out of range")
    return fen


def format_yuan(fen: int) -> str:
    """Format fen as yuan with two decimals: ``12345 -> "123.45"``, ``-5 -> "-0.05"``."""
    sign = "-" if fen < 0 else ""
    whole, frac = divmod(abs(fen), 100)
    return f"{sign}{whole}.{frac:02d}"
