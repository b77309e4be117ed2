"""Command and response APDUs (ISO/IEC 7816-4 §5.1, ISO/IEC 7816-3 §12.1) and status words
(ETSI TS 102 221 §10.2).

:class:`CommandApdu` is a C-APDU: the header ``CLA INS P1 P2`` and the body fields. ``data``
is the command data field (its length is Nc, carried as Lc); ``le`` is Ne, the maximum
number of response bytes expected, or ``None`` when the command carries no Le field. The
four cases of ISO/IEC 7816-3 §12.1.2 follow from these two fields:

====  ===========  ==========  ====================================
case  data         le          body on the wire (short form)
====  ===========  ==========  ====================================
1     empty        ``None``    nothing
2     empty        1..256      ``Le`` (256 is coded ``00``)
3     non-empty    ``None``    ``Lc data``
4     non-empty    1..256      ``Lc data Le``
====  ===========  ==========  ====================================

Extended length (§12.1.3): when Nc > 255 or Ne > 256 the body uses the extended form, a
``00`` octet then two-octet Lc and/or Le (``0000`` meaning 65,536 for Le); both fields are
extended together in case 4. ``le=0`` is refused: a short Le of ``00`` *means* 256, so a
zero would not survive a round trip (use ``None`` for "no Le field").

:meth:`CommandApdu.from_bytes` applies the decoding conventions of ISO/IEC 7816-3
§12.1.3 to a complete C-APDU, and rejects any length that matches no case.

:class:`ResponseApdu` is an R-APDU: the response data then the trailer ``SW1 SW2``.
:attr:`ResponseApdu.ok` is the TS 102 221 §10.2.1.1 "normal processing" set: ``9000``,
``91XX`` (a proactive command is pending) and ``92XX``. ``61XX`` (response bytes still
available, the T=0 procedure of TS 102 221 §7.3.1.1.4) is not "ok" but "more data"
(:attr:`ResponseApdu.more_data`).

The representation of a :class:`CommandApdu` shows the header and the *length* of the
data, never the data: a C-APDU may carry a PIN (VERIFY) or a key (PUT KEY).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "MAX_EXTENDED_LC",
    "MAX_EXTENDED_LE",
    "MAX_SHORT_LC",
    "MAX_SHORT_LE",
    "ApduError",
    "CommandApdu",
    "ResponseApdu",
    "StatusWord",
    "sw_text",
]

MAX_SHORT_LC: Final = 255
MAX_SHORT_LE: Final = 256
MAX_EXTENDED_LC: Final = 65535
MAX_EXTENDED_LE: Final = 65536


class ApduError(ValueError):
    """A C-APDU or R-APDU that cannot be built or parsed; the message never shows data."""


def _byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ApduError(f"{name} must be 0..255, got {value}")


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A C-APDU (ISO/IEC 7816-4 §5.1): header, command data, expected response length."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        _byte("CLA", self.cla)
        _byte("INS", self.ins)
        _byte("P1", self.p1)
        _byte("P2", self.p2)
        if not isinstance(self.data, bytes):
            raise ApduError("data must be bytes")
        if len(self.data) > MAX_EXTENDED_LC:
            raise ApduError(f"command data of {len(self.data)} bytes exceeds {MAX_EXTENDED_LC}")
        if self.le is not None and not 1 <= self.le <= MAX_EXTENDED_LE:
            raise ApduError(f"Le must be 1..{MAX_EXTENDED_LE} or None (no Le field), got {self.le}")

    def __repr__(self) -> str:
        return (
            f"CommandApdu(cla=0x{self.cla:02X}, ins=0x{self.ins:02X}, p1=0x{self.p1:02X}, "
            f"p2=0x{self.p2:02X}, data=<{len(self.data)} bytes>, le={self.le!r})"
        )

    @property
    def case(self) -> int:
        """The ISO/IEC 7816-3 §12.1.2 case, 1 to 4."""
        if self.data:
            return 3 if self.le is None else 4
        return 1 if self.le is None else 2

    @property
    def extended(self) -> bool:
        """True when :meth:`to_bytes` uses the extended length form (§12.1.3)."""
        return len(self.data) > MAX_SHORT_LC or (self.le is not None and self.le > MAX_SHORT_LE)

    @property
    def header(self) -> bytes:
        """The four header octets ``CLA INS P1 P2``."""
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def to_bytes(self) -> bytes:
        """Encode: short form when every length fits, otherwise extended (§12.1.3)."""
        out = bytearray(self.header)
        nc = len(self.data)
        if self.extended:
            out.append(0)
            if nc:
                out += nc.to_bytes(2, "big")
                out += self.data
            if self.le is not None:
                out += (self.le & 0xFFFF).to_bytes(2, "big")
        else:
            if nc:
                out.append(nc)
                out += self.data
            if self.le is not None:
                out.append(self.le & 0xFF)
        return bytes(out)

    @classmethod
    def from_bytes(cls, raw: bytes) -> CommandApdu:
        """Decode one complete C-APDU by the ISO/IEC 7816-3 §12.1.3 length rules."""
        return cls._decode(raw, allow_extended=True)

    @classmethod
    def from_short_bytes(cls, raw: bytes) -> CommandApdu:
        """Like :meth:`from_bytes` but refuse the extended length form."""
        return cls._decode(raw, allow_extended=False)

    @classmethod
    def _decode(cls, raw: bytes, *, allow_extended: bool) -> CommandApdu:
        raw = bytes(raw)
        n = len(raw)
        if n < 4:
            raise ApduError(f"a C-APDU has at least 4 header bytes, got {n}")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:  # case 1
            return cls(cla, ins, p1, p2)
        b1 = raw[4]
        if n == 5:  # case 2S
            return cls(cla, ins, p1, p2, le=b1 or MAX_SHORT_LE)
        if b1 != 0:  # case 3S or 4S
            if n == 5 + b1:
                return cls(cla, ins, p1, p2, raw[5:])
            if n == 6 + b1:
                return cls(cla, ins, p1, p2, raw[5 : 5 + b1], raw[-1] or MAX_SHORT_LE)
            raise ApduError(f"C-APDU length {n} does not match Lc={b1} (short cases 3 and 4)")
        if not allow_extended:
            raise ApduError("extended length C-APDU not allowed here")
        if n == 7:  # case 2E
            return cls(cla, ins, p1, p2, le=int.from_bytes(raw[5:7], "big") or MAX_EXTENDED_LE)
        if n < 8:
            raise ApduError(f"C-APDU length {n} matches no case (extended form needs >= 7)")
        nc = int.from_bytes(raw[5:7], "big")
        if nc == 0:
            raise ApduError("extended Lc of 0000 is not allowed")
        if n == 7 + nc:  # case 3E
            return cls(cla, ins, p1, p2, raw[7:])
        if n == 9 + nc:  # case 4E
            le = int.from_bytes(raw[-2:], "big") or MAX_EXTENDED_LE
            return cls(cla, ins, p1, p2, raw[7 : 7 + nc], le)
        raise ApduError(f"C-APDU length {n} does not match extended Lc={nc} (cases 3E and 4E)")


class StatusWord(IntEnum):
    """Status words used by the OTA code (TS 102 221 §10.2.1, GP Card Spec 2.3 §11.1.3)."""

    OK = 0x9000
    MORE_DATA_GP = 0x6310  # GET STATUS: more data available (GP 2.3 §11.4.5)
    RESPONSE_TRUNCATED = 0x62F1  # TS 102 226 §5.2.1.1: expanded R-APDU data truncated
    WRONG_LENGTH = 0x6700
    SECURITY_NOT_SATISFIED = 0x6982
    CONDITIONS_NOT_SATISFIED = 0x6985
    INCORRECT_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    TECHNICAL_PROBLEM = 0x6F00


_SW1_TEXT: Final[dict[int, str]] = {
    0x61: "response bytes available",
    0x6C: "wrong Le, exact length in SW2",
    0x91: "ok, proactive command pending",
    0x92: "ok, data transfer session info",
    0x63: "warning (verification failed or more data)",
    0x62: "warning, non-volatile memory unchanged",
    0x64: "execution error, memory unchanged",
    0x65: "execution error, memory changed",
    0x67: "wrong length",
    0x69: "command not allowed",
    0x6A: "wrong parameters",
    0x6B: "wrong P1/P2",
    0x6D: "instruction not supported",
    0x6E: "class not supported",
    0x6F: "technical problem",
}

_SW_TEXT: Final[dict[int, str]] = {
    0x9000: "ok",
    0x6310: "more data available",
    0x62F1: "response data truncated",
    0x6982: "security status not satisfied",
    0x6985: "conditions of use not satisfied",
    0x6A80: "incorrect data",
    0x6A81: "function not supported",
    0x6A82: "file or application not found",
    0x6A83: "record not found",
    0x6A84: "not enough memory",
    0x6A86: "incorrect P1/P2",
    0x6A88: "referenced data not found",
}


def sw_text(sw: int) -> str:
    """A short English label for a status word (TS 102 221 §10.2.1), for printing."""
    if not 0 <= sw <= 0xFFFF:
        raise ApduError(f"a status word is 0..0xFFFF, got {sw}")
    if sw in _SW_TEXT:
        return _SW_TEXT[sw]
    return _SW1_TEXT.get(sw >> 8, "unknown status")


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """An R-APDU (ISO/IEC 7816-4 §5.1): response data and the status word ``SW1 SW2``."""

    data: bytes
    sw: int

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise ApduError("data must be bytes")
        if not 0 <= self.sw <= 0xFFFF:
            raise ApduError(f"a status word is 0..0xFFFF, got {self.sw}")

    @property
    def sw1(self) -> int:
        """The first status byte."""
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        """The second status byte."""
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        """Normal processing per TS 102 221 §10.2.1.1: ``9000``, ``91XX`` or ``92XX``."""
        return self.sw == 0x9000 or self.sw1 in (0x91, 0x92)

    @property
    def more_data(self) -> bool:
        """``61XX``: the command succeeded and SW2 response bytes wait for GET RESPONSE."""
        return self.sw1 == 0x61

    def to_bytes(self) -> bytes:
        """Response data followed by SW1 SW2."""
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseApdu:
        """Split an R-APDU: everything but the last two bytes is data."""
        raw = bytes(raw)
        if len(raw) < 2:
            raise ApduError(f"an R-APDU has at least the 2 status bytes, got {len(raw)}")
        return cls(raw[:-2], int.from_bytes(raw[-2:], "big"))
