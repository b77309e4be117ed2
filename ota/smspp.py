"""SMS-PP bearer of secured packets: 3GPP TS 31.115 §4 over TS 23.040 user data.

A command packet (CPL to the end, :mod:`ota.secured_packet`) travels in the user data of an
SMS-DELIVER sent for SIM data download: TP-PID 0x7F (TS 23.040 §9.2.3.9), TP-DCS 0xF6 (class 2,
8-bit data, TS 23.038 §4), TP-UDHI set, and a UDH holding the zero-length Command Packet
Identifier element, IEI 0x70 (TS 31.115 §4.2).

One short message carries 140 octets of user data, UDH included. A longer packet is split
over concatenated messages with the 8-bit reference concatenation element (TS 23.040
§9.2.3.24.1), as TS 31.115 §4.3 lays out (and GSM 03.48 V8.8.0 §6.3 before it):

* the **first** message's UDH is ``UDHL=07 | 00 03 ref total 1 | 70 00``, then CPL, CHL, the
  rest of the command header and the first part of the secured data (132 octets);
* **each following** message's UDH is ``UDHL=05 | 00 03 ref total seq`` only (no 0x70), then
  the next part of the secured data (134 octets each).

The packet is secured as a whole before it is split; the receiver reassembles, then verifies.
When reading, a 0x70 element repeated in later parts is tolerated (it carries no data), and
16-bit reference concatenation (§9.2.3.24.8) is accepted as well.

The response packet (PoR, TS 31.115 §4.4) goes back in one message (SMS-SUBMIT or
SMS-DELIVER-REPORT user data) with the UDH ``02 71 00``: Response Packet Identifier 0x71.
That UDH is covered by the PoR's RC/CC (see ``ota.secured_packet.SMS_RESPONSE_UDH``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ota.errors import MalformedUserData, OtaUsageError
from smsc.udh import (
    IEI_COMMAND_PACKET,
    IEI_RESPONSE_PACKET,
    Concat,
    InformationElement,
    UdhError,
    build_udh,
    find_concat,
    split_udh,
)

__all__ = [
    "DCS_CLASS2_8BIT",
    "MAX_USER_DATA",
    "TP_PID_SIM_DATA_DOWNLOAD",
    "command_user_data",
    "parse_command_user_data",
    "parse_response_user_data",
    "response_user_data",
]

TP_PID_SIM_DATA_DOWNLOAD = 0x7F  # TS 23.040 §9.2.3.9: (U)SIM data download
DCS_CLASS2_8BIT = 0xF6  # TS 23.038 §4: 1111 0110, 8-bit data, class 2 ((U)SIM specific)
MAX_USER_DATA = 140  # octets of TP-UD in one short message, UDH included

_CPI = InformationElement(IEI_COMMAND_PACKET)
_SINGLE_UDH = build_udh((_CPI,))  # 02 70 00
_RESPONSE_UDH = build_udh((InformationElement(IEI_RESPONSE_PACKET),))  # 02 71 00
_FIRST_ROOM = MAX_USER_DATA - 8  # UDHL + concat IE (5) + CPI IE (2)
_NEXT_ROOM = MAX_USER_DATA - 6  # UDHL + concat IE (5)


def command_user_data(packet: bytes, *, reference: int) -> list[bytes]:
    """The TP-UD payload(s), UDH included, carrying ``packet`` (CPL to the end).

    One payload when ``02 70 00`` + packet fits 140 octets, else concatenated parts using
    the 8-bit ``reference`` (0..255). Raises :class:`OtaUsageError` for an empty packet, a
    reference out of range or a packet needing more than 255 parts.
    """
    if not packet:
        raise OtaUsageError("empty command packet")
    if not 0 <= reference <= 0xFF:
        raise OtaUsageError(f"8-bit concatenation reference must be 0..255, got {reference}")
    if len(_SINGLE_UDH) + len(packet) <= MAX_USER_DATA:
        return [_SINGLE_UDH + packet]
    chunks = [packet[:_FIRST_ROOM]]
    chunks += [packet[i : i + _NEXT_ROOM] for i in range(_FIRST_ROOM, len(packet), _NEXT_ROOM)]
    total = len(chunks)
    if total > 0xFF:
        raise OtaUsageError(f"command packet of {len(packet)} octets needs {total} parts (max 255)")
    parts = []
    for seq, chunk in enumerate(chunks, start=1):
        concat = Concat(reference, total, seq, ref16=False).to_ie()
        ies = (concat, _CPI) if seq == 1 else (concat,)
        parts.append(build_udh(ies) + chunk)
    return parts


def response_user_data(packet: bytes) -> bytes:
    """``02 71 00`` + the response packet: the PoR's TP-UD. Raises :class:`OtaUsageError`
    when it does not fit one short message (concatenated PoRs are not produced)."""
    if len(_RESPONSE_UDH) + len(packet) > MAX_USER_DATA:
        raise OtaUsageError(f"response packet of {len(packet)} octets exceeds one short message")
    return _RESPONSE_UDH + packet


def _split(user_data: bytes, index: int) -> tuple[tuple[InformationElement, ...], bytes]:
    try:
        return split_udh(user_data)
    except UdhError as exc:
        raise MalformedUserData(f"part {index}: {exc}") from exc


def _check_cpl(packet: bytes) -> bytes:
    if len(packet) < 2 or int.from_bytes(packet[:2], "big") != len(packet) - 2:
        raise MalformedUserData(f"reassembled {len(packet)} octets do not match their CPL")
    return packet


def parse_command_user_data(parts: Sequence[bytes]) -> bytes:
    """Reassemble the command packet from the TP-UD of its message(s), in any order.

    Raises :class:`MalformedUserData` (a :class:`~ota.errors.MalformedPacket`) for a UDH that
    does not parse, a missing 0x70 element in the first part, inconsistent concatenation
    (reference, total, duplicate or missing parts) or a result whose CPL does not match.
    """
    if not parts:
        raise MalformedUserData("no user data")
    split = [_split(part, i) for i, part in enumerate(parts)]
    if len(split) == 1:
        ies, payload = split[0]
        concat = find_concat(ies)
        if concat is not None and concat.total != 1:
            raise MalformedUserData(f"part 1 of {concat.total} alone")
        if not any(ie.iei == IEI_COMMAND_PACKET for ie in ies):
            raise MalformedUserData("no command packet identifier (IEI 0x70) in the UDH")
        return _check_cpl(payload)
    by_seq: dict[int, bytes] = {}
    key: tuple[int, int, bool] | None = None
    for i, (ies, payload) in enumerate(split):
        concat = find_concat(ies)
        if concat is None:
            raise MalformedUserData(f"part {i}: no concatenation element")
        this = (concat.reference, concat.total, concat.ref16)
        if key is not None and this != key:
            raise MalformedUserData(f"part {i}: reference/total {this[:2]} differ from {key[:2]}")
        key = this
        if concat.total != len(parts):
            raise MalformedUserData(f"{len(parts)} parts given, the UDH says {concat.total}")
        if not 1 <= concat.seqnum <= concat.total:
            raise MalformedUserData(f"part {i}: sequence number {concat.seqnum} out of range")
        if concat.seqnum in by_seq:
            raise MalformedUserData(f"sequence number {concat.seqnum} given twice")
        if concat.seqnum == 1 and not any(ie.iei == IEI_COMMAND_PACKET for ie in ies):
            raise MalformedUserData("first part has no command packet identifier (IEI 0x70)")
        by_seq[concat.seqnum] = payload
    return _check_cpl(b"".join(by_seq[seq] for seq in sorted(by_seq)))


def parse_response_user_data(user_data: bytes) -> bytes:
    """Strip the UDH (it must hold IEI 0x71) from a PoR's TP-UD; return the response packet.

    Raises :class:`MalformedUserData`; a concatenated PoR is refused (not produced here).
    """
    ies, payload = _split(user_data, 0)
    if not any(ie.iei == IEI_RESPONSE_PACKET for ie in ies):
        raise MalformedUserData("no response packet identifier (IEI 0x71) in the UDH")
    concat = find_concat(ies)
    if concat is not None and concat.total != 1:
        raise MalformedUserData("concatenated response packets are not supported")
    return payload
