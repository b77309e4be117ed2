"""IMEI and IMEISV validation and the Type Allocation Code (3GPP TS 23.003 §6.2).

* IMEI (TS 23.003 §6.2.1): 15 decimal digits, TAC (8) + SNR (6) + CD (1). The check digit is
  the Luhn digit of the 14 digits TAC + SNR (TS 23.003 Annex B: from the right, double every
  second digit, add the digits of the products and the undoubled digits; CD makes the sum a
  multiple of 10). A 15-digit text is accepted only when its 15th digit is that check digit.
* IMEISV (TS 23.003 §6.2.2): 16 decimal digits, TAC (8) + SNR (6) + SVN (2), with no check
  digit. It is accepted as the same equipment: :func:`parse_imei` returns the IMEI (the check
  digit computed from TAC + SNR) and keeps the SVN aside (:attr:`Imei.svn`), which takes no
  part in equality: two reports of one handset with different software are one handset.
* The TAC (the first 8 digits) names the handset model: it keys the calibration table.

Only bare ASCII digits are accepted (no separators, no spaces): the IMEI comes from a
machine (the card's PROVIDE LOCAL INFORMATION, a CSV column), and a malformed one is refused
with a message that says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "IMEISV_LENGTH",
    "IMEI_LENGTH",
    "TAC_LENGTH",
    "Imei",
    "ImeiError",
    "luhn_check_digit",
    "parse_imei",
    "tac_of",
    "validate_tac",
]

TAC_LENGTH: Final = 8
SNR_LENGTH: Final = 6
IMEI_LENGTH: Final = 15
IMEISV_LENGTH: Final = 16


class ImeiError(ValueError):
    """A malformed IMEI, IMEISV or TAC."""


def _digits(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ImeiError(f"{what} must be a string of digits, not {type(text).__name__}")
    if not (text.isascii() and text.isdigit()):
        raise ImeiError(f"{what} must contain decimal digits only")
    return text


def luhn_check_digit(digits: str) -> int:
    """The Luhn check digit of ``digits`` (TS 23.003 Annex B for the 14 digits TAC + SNR)."""
    _digits(digits, "Luhn input")
    total = 0
    # the rightmost digit of the input is doubled (the check digit will sit to its right)
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 0:
            value *= 2
            value = value - 9 if value > 9 else value
        total += value
    return (10 - total % 10) % 10


def validate_tac(tac: str) -> str:
    """``tac`` if it is a Type Allocation Code (8 decimal digits), else :class:`ImeiError`."""
    _digits(tac, "TAC")
    if len(tac) != TAC_LENGTH:
        raise ImeiError(f"TAC must be {TAC_LENGTH} digits, got {len(tac)}")
    return tac


@dataclass(frozen=True, slots=True)
class Imei:
    """One handset identity: TAC and SNR (the check digit follows from them); ``svn`` the
    software version when the identity came as an IMEISV (not part of equality)."""

    tac: str
    snr: str
    svn: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        validate_tac(self.tac)
        _digits(self.snr, "SNR")
        if len(self.snr) != SNR_LENGTH:
            raise ImeiError(f"SNR must be {SNR_LENGTH} digits, got {len(self.snr)}")
        if self.svn is not None and (len(_digits(self.svn, "SVN")) != 2):
            raise ImeiError(f"SVN must be 2 digits, got {len(self.svn)}")

    @property
    def body(self) -> str:
        """TAC + SNR, the 14 digits the check digit is computed over."""
        return self.tac + self.snr

    @property
    def check_digit(self) -> int:
        """The Luhn check digit (TS 23.003 §6.2.1, Annex B)."""
        return luhn_check_digit(self.body)

    @property
    def digits(self) -> str:
        """The 15-digit IMEI."""
        return self.body + str(self.check_digit)

    @property
    def imeisv(self) -> str | None:
        """The 16-digit IMEISV when the SVN is known."""
        return None if self.svn is None else self.body + self.svn

    def __str__(self) -> str:
        return self.digits


def parse_imei(text: str) -> Imei:
    """An :class:`Imei` from 15 digits (IMEI, check digit verified) or 16 (IMEISV)."""
    _digits(text, "IMEI")
    if len(text) == IMEI_LENGTH:
        body, given = text[:14], int(text[14])
        expected = luhn_check_digit(body)
        if given != expected:
            raise ImeiError(
                f"IMEI check digit is {given}, expected {expected} (3GPP TS 23.003 §6.2.1)"
            )
        return Imei(body[:TAC_LENGTH], body[TAC_LENGTH:])
    if len(text) == IMEISV_LENGTH:
        return Imei(text[:TAC_LENGTH], text[TAC_LENGTH:14], svn=text[14:])
    raise ImeiError(
        f"IMEI must be {IMEI_LENGTH} digits (or {IMEISV_LENGTH} for an IMEISV), got {len(text)}"
    )


def tac_of(text: str) -> str:
    """The TAC of an IMEI or IMEISV given as text (validated as :func:`parse_imei` does)."""
    return parse_imei(text).tac
