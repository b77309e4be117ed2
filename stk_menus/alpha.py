"""Alpha identifiers and menu item texts (ETSI TS 102 221 Annex A; used by TS 102 223 §8.2, §8.9).

An alpha field is coded one of four ways, told apart by its first octet:

* **SMS default alphabet, unpacked** (first octet < 0x80): one GSM 7-bit septet per octet, bit 8
  zero (3GPP TS 23.038 §6.2.1; an extension-table character is ESC + code, two octets);
* **80**: ``80`` then UCS2 characters, two octets each, big-endian;
* **81**: ``81``, the number of characters, one octet holding bits 15..8 of a base pointer whose
  bit 16 and bits 7..1 are zero (so the pointer is ``octet << 7``), then one octet per
  character: below 0x80 a GSM default-alphabet septet, from 0x80 up ``base + (octet & 0x7F)``;
* **82**: as 81, but the base pointer is a full 16-bit value in two octets.

Unused octets at the end of a field are ``FF`` and are dropped on decoding (Annex A; an 80-coded
field may end in an odd ``FF``).

:func:`encode_alpha` tries every coding that can carry the text and returns the shortest (ties:
GSM, then 81, 82, 80), never padded. UCS2 here is the 16-bit code of ISO/IEC 10646: a character
beyond the Basic Multilingual Plane cannot be coded; nor can U+FFFF, the padding value. Both raise
:class:`AlphaError`, as does malformed input to :func:`decode_alpha`.
"""

from __future__ import annotations

from smsc import gsm7

__all__ = ["AlphaError", "decode_alpha", "encode_alpha"]

UCS2 = 0x80
UCS2_HALF_PAGE = 0x81
UCS2_BASE16 = 0x82
PAD = 0xFF
_WINDOW = 0x80  # characters reachable from one base pointer (offsets 0x00..0x7F)


class AlphaError(ValueError):
    """Text that no alpha coding can carry, or an alpha field that is not well formed."""


# -- encoding -------------------------------------------------------------------------------


def _check_ucs2(text: str) -> None:
    for position, char in enumerate(text):
        code = ord(char)
        if code >= 0xFFFF or 0xD800 <= code <= 0xDFFF:
            raise AlphaError(
                f"character U+{code:04X} at position {position} is outside UCS2 (TS 102 221 "
                "Annex A codes 16-bit characters only)"
            )
        if code == 0xFFFF:
            raise AlphaError(f"U+FFFF at position {position} is the padding value, not text")


def _single_septet(char: str) -> int | None:
    """The septet of a base-table GSM character, or None (extension characters take two)."""
    if not gsm7.can_encode(char):
        return None
    septets = gsm7.encode(char)
    return septets[0] if len(septets) == 1 else None


def _windowed(text: str, base: int) -> bytes | None:
    """The character octets of an 81/82 coding with ``base``, or None if one does not fit."""
    out = bytearray()
    for char in text:
        septet = _single_septet(char)
        if septet is not None:
            out.append(septet)
            continue
        offset = ord(char) - base
        if not 0 <= offset < _WINDOW:
            return None
        out.append(0x80 | offset)
    return bytes(out)


def _candidates(text: str) -> list[bytes]:
    """Every coding of ``text`` that works, in tie-break order: GSM, 81, 82, 80."""
    found: list[bytes] = []
    if gsm7.can_encode(text):
        found.append(gsm7.encode(text))
    _check_ucs2(text)
    others = [ord(c) for c in text if _single_septet(c) is None]
    if others and len(text) <= 0xFF:
        low, high = min(others), max(others)
        half_page = low & ~0x7F
        if high - half_page < _WINDOW and half_page >> 7 <= 0xFF:
            chars = _windowed(text, half_page)
            if chars is not None:
                found.append(bytes((UCS2_HALF_PAGE, len(text), half_page >> 7)) + chars)
        if high - low < _WINDOW:
            chars = _windowed(text, low)
            if chars is not None:
                found.append(bytes((UCS2_BASE16, len(text))) + low.to_bytes(2, "big") + chars)
    found.append(bytes((UCS2,)) + text.encode("utf-16-be"))
    return found


def encode_alpha(text: str, *, max_len: int | None = None) -> bytes:
    """Code ``text`` as an alpha field in the most compact of the four codings (no padding).

    The empty text codes as no octets. With ``max_len``, a coding longer than ``max_len``
    octets is refused with :class:`AlphaError` (the shortest one is tried, so a text that fits
    in any coding fits).
    """
    if not text:
        return b""
    best = min(_candidates(text), key=len)  # min keeps the first of equal lengths
    if max_len is not None and len(best) > max_len:
        raise AlphaError(
            f"text of {len(text)} characters needs {len(best)} octets, more than {max_len}"
        )
    return best


# -- decoding -------------------------------------------------------------------------------


def _strip_pad(data: bytes) -> bytes:
    end = len(data)
    while end and data[end - 1] == PAD:
        end -= 1
    return data[:end]


def _decode_gsm(data: bytes) -> str:
    body = _strip_pad(data)
    if not body.isascii():
        bad = next(i for i, octet in enumerate(body) if octet >= 0x80)
        raise AlphaError(f"octet {body[bad]:02X} at offset {bad} in a GSM-coded alpha field")
    return gsm7.decode(body)


def _decode_ucs2(body: bytes) -> str:
    if len(body) % 2 and body[-1] == PAD:
        body = body[:-1]
    if len(body) % 2:
        raise AlphaError(f"80-coded alpha field has an odd number ({len(body)}) of text octets")
    units = [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body), 2)]
    while units and units[-1] == 0xFFFF:
        units.pop()
    for position, unit in enumerate(units):
        if 0xD800 <= unit <= 0xDFFF or unit == 0xFFFF:
            raise AlphaError(f"UCS2 character {position} ({unit:04X}) is not a character")
    return "".join(map(chr, units))


def _decode_windowed(chars: bytes, base: int) -> str:
    parts: list[str] = []
    run = bytearray()
    for octet in chars:
        if octet < 0x80:
            run.append(octet)
            continue
        if run:
            parts.append(gsm7.decode(bytes(run)))
            run.clear()
        code = base + (octet & 0x7F)
        if code >= 0xFFFF or 0xD800 <= code <= 0xDFFF:
            raise AlphaError(f"base {base:04X} + offset {octet & 0x7F:02X} is not a UCS2 character")
        parts.append(chr(code))
    if run:
        parts.append(gsm7.decode(bytes(run)))
    return "".join(parts)


def decode_alpha(data: bytes) -> str:
    """Decode an alpha field in any of the four codings; trailing ``FF`` padding is dropped."""
    data = bytes(data)
    if not data:
        return ""
    scheme = data[0]
    if scheme < 0x80 or scheme == PAD:
        return _decode_gsm(data)
    if scheme == UCS2:
        return _decode_ucs2(data[1:])
    if scheme == UCS2_HALF_PAGE:
        header, base = 3, (data[2] << 7) if len(data) >= 3 else 0
    elif scheme == UCS2_BASE16:
        header, base = 4, int.from_bytes(data[2:4], "big") if len(data) >= 4 else 0
    else:
        raise AlphaError(f"alpha field starts with {scheme:02X}: not a TS 102 221 Annex A coding")
    if len(data) < header:
        raise AlphaError(f"{scheme:02X}-coded alpha field of {len(data)} octets has no full header")
    count = data[1]
    chars = data[header : header + count]
    if len(chars) < count:
        raise AlphaError(
            f"{scheme:02X}-coded alpha field announces {count} characters, holds {len(chars)}"
        )
    return _decode_windowed(chars, base)
