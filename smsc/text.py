"""Message text encodings and data_coding (SMPP 3.4 §5.2.19; 3GPP TS 23.038 §4 and §5).

:class:`Encoding` names what stkpay sends; :func:`data_coding_for` gives its SMPP data_coding
and :func:`encoding_of` reads any received data_coding, both the SMPP values 0x00-0x0F of
§5.2.19 and the GSM SMS data coding scheme groups of TS 23.038 §4 used above 0x0F.

Decoding never raises: a received message is always shown, with U+FFFD for what cannot be
read. Encoding raises :class:`~smsc.gsm7.UnencodableError` naming the first character that the
chosen encoding cannot carry.
"""

from __future__ import annotations

import enum

from smsc import gsm7
from smsc.gsm7 import UnencodableError

__all__ = [
    "Encoding",
    "UnencodableError",
    "choose_encoding",
    "data_coding_for",
    "decode_text",
    "encode_auto",
    "encode_text",
    "encoding_of",
]


class Encoding(enum.StrEnum):
    """How a message's user data is encoded."""

    GSM7 = "gsm7"  # TS 23.038 §6.2.1 default alphabet, unpacked septets
    ASCII = "ascii"  # SMPP §5.2.19 IA5 (CCITT T.50) / ASCII
    LATIN1 = "latin1"  # SMPP §5.2.19 ISO-8859-1
    UCS2 = "ucs2"  # ISO/IEC 10646 as UTF-16-BE (TS 23.038 §5: surrogate pairs beyond the BMP)
    BINARY = "binary"  # 8-bit data, no character set


_DATA_CODING = {
    Encoding.ASCII: 0x01,
    Encoding.LATIN1: 0x03,
    Encoding.BINARY: 0x04,
    Encoding.UCS2: 0x08,
}

# SMPP §5.2.19 values 0x01-0x0F. Character sets stkpay does not implement (JIS, Cyrillic,
# Hebrew, pictogram, ISO-2022-JP, Kanji, KS C 5601) and the reserved values are read as
# octets (BINARY) rather than guessed at.
_SMPP_CODINGS = {
    0x01: Encoding.ASCII,
    0x02: Encoding.BINARY,
    0x03: Encoding.LATIN1,
    0x04: Encoding.BINARY,
    0x08: Encoding.UCS2,
}

# TS 23.038 §4 character set bits (bits 3..2 of the general and automatic-deletion groups).
# "Reserved" (0b11) is assumed to be the default alphabet, as §4 requires of any reserved
# coding.
_DCS_ALPHABET = (Encoding.GSM7, Encoding.BINARY, Encoding.UCS2, Encoding.GSM7)


def data_coding_for(enc: Encoding, *, gsm7_coding: int = 0x00) -> int:
    """The data_coding value for ``enc``; GSM7 uses ``gsm7_coding`` (0x00, the SMSC default,
    unless the SMSC is configured otherwise, e.g. 0xF0 or 0x01 at some operators)."""
    if enc is Encoding.GSM7:
        return gsm7_coding
    return _DATA_CODING[enc]


def encoding_of(data_coding: int, *, default: Encoding = Encoding.GSM7) -> Encoding:
    """The encoding a received data_coding denotes.

    0x00 ("SMSC default alphabet", SMPP §5.2.19) means ``default``. 0x01-0x0F follow SMPP
    §5.2.19. Above that the TS 23.038 §4 coding groups apply: 00xx xxxx general and 01xx xxxx
    automatic deletion (bits 3..2 give the alphabet; compressed text, bit 5, is read as octets),
    1100/1101 message waiting (GSM 7-bit), 1110 message waiting (UCS2), 1111 data coding/message
    class (bit 2: 8-bit, else GSM 7-bit); the reserved groups 1000-1011 are read as GSM 7-bit
    (§4: "any reserved codings shall be assumed to be the GSM 7 bit default alphabet").
    """
    data_coding &= 0xFF
    if data_coding == 0x00:
        return default
    if data_coding <= 0x0F:
        return _SMPP_CODINGS.get(data_coding, Encoding.BINARY)
    group = data_coding >> 4
    if group <= 0x7:  # 00xx xxxx general, 01xx xxxx automatic deletion
        if data_coding & 0x20:  # compressed (TS 23.042): not decodable here
            return Encoding.BINARY
        return _DCS_ALPHABET[(data_coding >> 2) & 0x03]
    if group == 0xE:
        return Encoding.UCS2
    if group == 0xF:
        return Encoding.BINARY if data_coding & 0x04 else Encoding.GSM7
    return Encoding.GSM7  # 1000-1011 reserved, 1100/1101 message waiting with GSM 7-bit


def choose_encoding(text: str) -> Encoding:
    """GSM7 when the default alphabet (with its extension table) can carry ``text``, else UCS2."""
    return Encoding.GSM7 if gsm7.can_encode(text) else Encoding.UCS2


def encode_auto(text: str) -> tuple[Encoding, bytes]:
    """:func:`choose_encoding` and :func:`encode_text` in one pass: GSM7 septets when the
    default alphabet can carry ``text``, else UTF-16-BE (UCS2).

    Raises :class:`UnencodableError` for text UCS2 cannot carry either (a lone surrogate).
    """
    septets = gsm7.try_encode(text)
    if septets is not None:
        return Encoding.GSM7, septets
    return Encoding.UCS2, _encode_codec(text, "utf-16-be", Encoding.UCS2)


def _encode_codec(text: str, codec: str, enc: Encoding) -> bytes:
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise UnencodableError(exc.start, text[exc.start], enc.value) from None


def encode_text(text: str, enc: Encoding) -> bytes:
    """Encode ``text``: GSM7 as unpacked septets, UCS2 as UTF-16-BE (a character beyond the BMP
    as a surrogate pair), ASCII/LATIN1 one octet per character, BINARY as Latin-1 (each
    character U+0000-U+00FF stands for one octet, the inverse of :func:`decode_text`)."""
    if enc is Encoding.GSM7:
        return gsm7.encode(text)
    if enc is Encoding.UCS2:
        return _encode_codec(text, "utf-16-be", enc)
    if enc is Encoding.ASCII:
        return _encode_codec(text, "ascii", enc)
    return _encode_codec(text, "latin-1", enc)


def decode_text(data: bytes, enc: Encoding) -> str:
    """Decode user data; never raises. UCS2: a lone surrogate or a trailing odd octet becomes
    U+FFFD. ASCII: an octet >= 0x80 becomes U+FFFD. BINARY: each octet as U+0000-U+00FF."""
    if enc is Encoding.GSM7:
        return gsm7.decode(data)
    if enc is Encoding.UCS2:
        return data.decode("utf-16-be", "replace")
    if enc is Encoding.ASCII:
        return data.decode("ascii", "replace")
    return data.decode("latin-1")
