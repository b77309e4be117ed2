"""User Data Header (3GPP TS 23.040 §9.2.3.24) and the information elements stkpay reads.

A UDH is its length octet (UDHL) followed by information elements, each IEI, length, data.
:func:`split_udh` reads every element wherever it sits; the typed helpers pick out

* concatenated short messages, 8-bit reference (IEI 0x00, §9.2.3.24.1) and 16-bit reference
  (IEI 0x08, §9.2.3.24.8);
* application port addressing, 8-bit (IEI 0x04, §9.2.3.24.3) and 16-bit (IEI 0x05, §9.2.3.24.4);
* the (U)SIM toolkit security headers of TS 31.115 §4: command packet (0x70) and response
  packet (0x71), zero-length elements that are kept like any other.

Where an element that may not repeat occurs more than once, or two mutually exclusive ones
occur (8- and 16-bit forms), the last occurrence is used (§9.2.3.24). An element of the wrong
length is ignored by the typed helpers rather than misread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CONCAT_IEIS",
    "IEI_COMMAND_PACKET",
    "IEI_CONCAT_8",
    "IEI_CONCAT_16",
    "IEI_PORT_8",
    "IEI_PORT_16",
    "IEI_RESPONSE_PACKET",
    "Concat",
    "InformationElement",
    "Ports",
    "UdhError",
    "build_udh",
    "find_concat",
    "find_ports",
    "split_udh",
]

IEI_CONCAT_8 = 0x00  # §9.2.3.24.1
IEI_PORT_8 = 0x04  # §9.2.3.24.3
IEI_PORT_16 = 0x05  # §9.2.3.24.4
IEI_CONCAT_16 = 0x08  # §9.2.3.24.8
IEI_COMMAND_PACKET = 0x70  # TS 31.115 §4.2
IEI_RESPONSE_PACKET = 0x71  # TS 31.115 §4.2

CONCAT_IEIS = frozenset({IEI_CONCAT_8, IEI_CONCAT_16})  # added by segmentation, not callers


class UdhError(ValueError):
    """A malformed User Data Header (length overrun, out-of-range field)."""


@dataclass(frozen=True, slots=True)
class InformationElement:
    """One information element: IEI (0..255) and its data (0..255 octets)."""

    iei: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.iei <= 0xFF:
            raise UdhError(f"IEI must be 0..255, got {self.iei}")
        if len(self.data) > 0xFF:
            raise UdhError(f"IE 0x{self.iei:02X} data is {len(self.data)} octets, at most 255")


def split_udh(user_data: bytes) -> tuple[tuple[InformationElement, ...], bytes]:
    """Split user data that starts with a UDH into (its IEs in order, the payload after it).

    Raises :class:`UdhError` when the UDHL or an IE length runs past the data.
    """
    if not user_data:
        raise UdhError("UDHI set but the user data is empty")
    udhl = user_data[0]
    end = 1 + udhl
    if end > len(user_data):
        raise UdhError(f"UDHL {udhl} exceeds the {len(user_data) - 1} octets that follow")
    ies: list[InformationElement] = []
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise UdhError(f"IE header at offset {pos} runs past the UDH")
        iei = user_data[pos]
        length = user_data[pos + 1]
        start = pos + 2
        pos = start + length
        if pos > end:
            raise UdhError(f"IE 0x{iei:02X} of {length} octets runs past the UDH")
        ies.append(InformationElement(iei, bytes(user_data[start:pos])))
    return tuple(ies), bytes(user_data[end:])


def build_udh(ies: Sequence[InformationElement]) -> bytes:
    """Encode UDHL followed by ``ies`` in order. Raises :class:`UdhError` above 255 octets."""
    body = b"".join(bytes((ie.iei, len(ie.data))) + ie.data for ie in ies)
    if len(body) > 0xFF:
        raise UdhError(f"UDH of {len(body)} octets exceeds 255")
    return bytes((len(body),)) + body


@dataclass(frozen=True, slots=True)
class Concat:
    """Concatenated short message IE (§9.2.3.24.1 / .8): reference, total parts, this part."""

    reference: int
    total: int
    seqnum: int
    ref16: bool

    def to_ie(self) -> InformationElement:
        """The IE (0x08 when ``ref16`` else 0x00). Raises :class:`UdhError` if out of range."""
        limit = 0xFFFF if self.ref16 else 0xFF
        if not 0 <= self.reference <= limit:
            raise UdhError(f"concat reference {self.reference} out of range 0..{limit}")
        if not (0 <= self.total <= 0xFF and 0 <= self.seqnum <= 0xFF):
            raise UdhError("concat total and seqnum must be 0..255")
        if self.ref16:
            data = self.reference.to_bytes(2, "big") + bytes((self.total, self.seqnum))
            return InformationElement(IEI_CONCAT_16, data)
        return InformationElement(IEI_CONCAT_8, bytes((self.reference, self.total, self.seqnum)))


def find_concat(ies: Iterable[InformationElement]) -> Concat | None:
    """The (last well-formed) concatenation IE, 8- or 16-bit, wherever it sits; None if absent.

    The values are not validated (seqnum 0 or > total are reported as received)."""
    found: Concat | None = None
    for ie in ies:
        if ie.iei == IEI_CONCAT_8 and len(ie.data) == 3:
            found = Concat(ie.data[0], ie.data[1], ie.data[2], ref16=False)
        elif ie.iei == IEI_CONCAT_16 and len(ie.data) == 4:
            found = Concat(int.from_bytes(ie.data[:2], "big"), ie.data[2], ie.data[3], ref16=True)
    return found


@dataclass(frozen=True, slots=True)
class Ports:
    """Application port addressing IE (§9.2.3.24.3 8-bit / .4 16-bit)."""

    destination: int
    source: int
    wide: bool

    def to_ie(self) -> InformationElement:
        """The IE (0x05 when ``wide`` else 0x04). Raises :class:`UdhError` if out of range."""
        limit = 0xFFFF if self.wide else 0xFF
        if not (0 <= self.destination <= limit and 0 <= self.source <= limit):
            raise UdhError(f"port out of range 0..{limit}")
        if self.wide:
            data = self.destination.to_bytes(2, "big") + self.source.to_bytes(2, "big")
            return InformationElement(IEI_PORT_16, data)
        return InformationElement(IEI_PORT_8, bytes((self.destination, self.source)))


def find_ports(ies: Iterable[InformationElement]) -> Ports | None:
    """The (last well-formed) port addressing IE, 8- or 16-bit; None if absent."""
    found: Ports | None = None
    for ie in ies:
        if ie.iei == IEI_PORT_8 and len(ie.data) == 2:
            found = Ports(ie.data[0], ie.data[1], wide=False)
        elif ie.iei == IEI_PORT_16 and len(ie.data) == 4:
            found = Ports(
                int.from_bytes(ie.data[:2], "big"), int.from_bytes(ie.data[2:], "big"), wide=True
            )
    return found
