"""GSM 7-bit default alphabet (3GPP TS 23.038 §6.2.1, extension table §6.2.1.1, packing §6.1.2.1).

``encode``/``decode`` work on *unpacked* septets, one per octet, as SMPP 3.4 carries GSM 7-bit
text in ``short_message`` (data_coding 0x00 at most SMSCs). An extension-table character is the
escape 0x1B followed by its code, so it costs two septets. ``pack``/``unpack`` give the packed
form of §6.1.2.1.1 (the SMS-PP TPDU), with fill bits for a septet-aligned UDH (TS 23.040
§9.2.3.24).

Decoding is tolerant and never raises:

* an escape followed by a code the extension table does not define decodes as the base-table
  character for that code (§6.2.1.1: "display ... the character shown in the main GSM 7 bit
  default alphabet table");
* escape + escape (reserved for a further extension table) and a trailing lone escape decode as
  a space (§6.2.1.1: "shall display a space until another extension table is defined");
* an octet >= 0x80 is not a septet; it decodes as U+FFFD (it is not masked, so a mislabelled
  8-bit message shows as replacement characters rather than as plausible wrong text).
"""

from __future__ import annotations

import codecs
import re

__all__ = [
    "ESC",
    "UnencodableError",
    "can_encode",
    "decode",
    "encode",
    "pack",
    "septet_length",
    "try_encode",
    "unpack",
]

ESC = 0x1B

# §6.2.1: the default alphabet, indexed by septet value. 0x1B is the escape (no character).
_BASE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_BASE) == 128

# §6.2.1.1: the extension table (characters reached by ESC + code).
_EXT: dict[int, str] = {
    0x0A: "\x0c",  # form feed (page break)
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}


class UnencodableError(ValueError):
    """A character has no representation in the target encoding.

    ``position`` is the index of the first such character in the text, ``char`` the character.
    """

    def __init__(self, position: int, char: str, encoding: str = "gsm7") -> None:
        super().__init__(
            f"character U+{ord(char):04X} at position {position} cannot be encoded in {encoding}"
        )
        self.position = position
        self.char = char
        self.encoding = encoding


# -- tables, built once -------------------------------------------------------------------

# Unencodable marker: a non-ASCII character. Every ASCII code point is in the table (mapped to
# its septets or to this marker) and every other unencodable character passes through
# str.translate unchanged, so "translated.isascii()" is exactly "the text is encodable".
_BAD = "\x80"


def _build_encode_table() -> dict[int, str]:
    table: dict[int, str] = dict.fromkeys(range(128), _BAD)
    for code, char in enumerate(_BASE):
        if code != ESC:
            table[ord(char)] = chr(code)
    for code, char in _EXT.items():
        table[ord(char)] = chr(ESC) + chr(code)
    return table


_ENCODE = _build_encode_table()
_ENCODABLE = frozenset(chr(cp) for cp, out in _ENCODE.items() if out != _BAD)

# Octet -> character for charmap_decode; ESC decodes to U+001B (which no septet otherwise
# produces) so that escape sequences can be resolved afterwards.
_DECODE = "".join(_BASE[i] for i in range(128)) + "\ufffd" * 128
# Base-decoded character following an ESC -> the character of the escape sequence.
_EXT_AFTER_ESC: dict[str, str] = {_BASE[code]: char for code, char in _EXT.items()}
_EXT_AFTER_ESC["\x1b"] = " "  # ESC ESC: reserved, shown as a space
_EXT_AFTER_ESC[""] = " "  # trailing lone ESC
_ESCAPE_RE = re.compile("\x1b(.?)", re.DOTALL)


def _resolve_escape(match: re.Match[str]) -> str:
    follower = match.group(1)
    # Unknown extension code: the base-table character (§6.2.1.1 fallback).
    return _EXT_AFTER_ESC.get(follower, follower)


# -- text <-> unpacked septets ------------------------------------------------------------


def _first_unencodable(text: str) -> UnencodableError:
    for position, char in enumerate(text):
        if char not in _ENCODABLE:
            return UnencodableError(position, char, "gsm7")
    raise AssertionError("no unencodable character")  # pragma: no cover


def _septets(text: str) -> str | None:
    """The unpacked septets of ``text`` as a str (ASCII), or None if it is not encodable.

    A non-ASCII character missing from the table costs ``str.translate`` a failed lookup
    (a raised and cleared LookupError) each: text in another script (Chinese, UCS2) is
    refused by one set test instead.
    """
    if not text.isascii() and not _ENCODABLE.issuperset(text):
        return None
    septets = text.translate(_ENCODE)
    return septets if septets.isascii() else None


def encode(text: str) -> bytes:
    """Text -> unpacked septets (one per octet; extension characters as ESC + code).

    Raises :class:`UnencodableError` naming the first character outside the alphabet.
    """
    septets = _septets(text)
    if septets is None:
        raise _first_unencodable(text)
    return septets.encode("ascii")


def try_encode(text: str) -> bytes | None:
    """:func:`encode`, or None (instead of raising) when ``text`` is not encodable: the
    check and the conversion in one pass."""
    septets = _septets(text)
    return None if septets is None else septets.encode("ascii")


def can_encode(text: str) -> bool:
    """True when every character is in the default alphabet or its extension table."""
    return _septets(text) is not None


def septet_length(text: str) -> int:
    """Number of septets ``text`` encodes to (an extension character counts 2).

    Raises :class:`UnencodableError` like :func:`encode`.
    """
    septets = _septets(text)
    if septets is None:
        raise _first_unencodable(text)
    return len(septets)


def decode(data: bytes) -> str:
    """Unpacked septets -> text; never raises (see the module docstring for the fallbacks)."""
    text, _ = codecs.charmap_decode(data, "strict", _DECODE)
    if "\x1b" in text:
        text = _ESCAPE_RE.sub(_resolve_escape, text)
    return text


# -- §6.1.2.1.1 packing -------------------------------------------------------------------


def _check_fill(fill_bits: int) -> None:
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")


def pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets into octets, least significant bit first (TS 23.038 §6.1.2.1.1).

    ``fill_bits`` zero bits precede the first septet, as after a UDH that does not end on a
    septet boundary (TS 23.040 §9.2.3.24). Raises ValueError for a value >= 0x80.
    """
    _check_fill(fill_bits)
    if not septets.isascii():
        raise ValueError("a septet must be < 0x80")
    acc = 0
    for index, septet in enumerate(septets):
        acc |= septet << (7 * index)
    nbits = 7 * len(septets) + fill_bits
    return (acc << fill_bits).to_bytes((nbits + 7) // 8, "little")


def unpack(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """Unpack ``count`` septets from packed octets, skipping ``fill_bits`` leading bits.

    Raises ValueError when ``data`` is too short to hold ``count`` septets.
    """
    _check_fill(fill_bits)
    if count < 0:
        raise ValueError("count must be >= 0")
    needed = (7 * count + fill_bits + 7) // 8
    if len(data) < needed:
        raise ValueError(f"{count} septets need {needed} octets, got {len(data)}")
    acc = int.from_bytes(data[:needed], "little") >> fill_bits
    return bytes((acc >> (7 * index)) & 0x7F for index in range(count))
