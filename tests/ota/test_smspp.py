"""ota.smspp: secured packets in SMS-PP user data (TS 31.115 §4, TS 23.040 §9.2.3.24)."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ota.errors import MalformedPacket, MalformedUserData, OtaError, OtaUsageError
from ota.smspp import (
    DCS_CLASS2_8BIT,
    MAX_USER_DATA,
    TP_PID_SIM_DATA_DOWNLOAD,
    command_user_data,
    parse_command_user_data,
    parse_response_user_data,
    response_user_data,
)
from smsc.udh import Concat, InformationElement, build_udh, find_concat, split_udh

H = bytes.fromhex

# osmocom pySim, tests/unittests/test_ota.py at commit 6076e4e6ff848590cf2bce98aeb78a37c67dbad8,
# SmsOtaTestCase '3DES-SJA5-CIPHERED-CC': the command packet and the SMS-DELIVER TPDU pySim
# builds around it. TPDU: 40 (SMS-DELIVER, TP-UDHI) | OA 08 81 21436587 | PID 7F | DCS F6 |
# SCTS 22705200000000 | UDL (pySim's test passes 03 here) | UD = 02 70 00 + packet.
PYSIM_COMMAND = H("00201506193535b00011ae733256918d050b87c94fbfe12e4dc402f262c41cf67f2f")
PYSIM_TPDU = H(
    "400881214365877ff6227052000000000302700000201506193535b00011ae733256918d050b87c94fbfe12e"
    "4dc402f262c41cf67f2f"
)
# The same test's response, as the card's user data (UDH 02 71 00 + response packet).
PYSIM_POR_USER_DATA = H("027100001c12b000118bb989492c632529326a2f4681feb37c825bc9021c9f6d0b")


def _packet(size: int) -> bytes:
    """A byte string of ``size`` octets whose first two octets are a consistent CPL."""
    assert size >= 2
    return (size - 2).to_bytes(2, "big") + bytes(i % 251 for i in range(size - 2))


def test_pysim_tpdu_user_data_and_header_fields() -> None:
    """Our user data for pySim's packet is the UD of pySim's SMS-DELIVER; PID and DCS match."""
    assert PYSIM_TPDU[7] == TP_PID_SIM_DATA_DOWNLOAD == 0x7F
    assert PYSIM_TPDU[8] == DCS_CLASS2_8BIT == 0xF6
    assert command_user_data(PYSIM_COMMAND, reference=0) == [PYSIM_TPDU[17:]]
    assert parse_command_user_data([PYSIM_TPDU[17:]]) == PYSIM_COMMAND


def test_pysim_por_user_data() -> None:
    """The card's PoR user data splits into UDH 02 71 00 and the response packet, and back."""
    packet = parse_response_user_data(PYSIM_POR_USER_DATA)
    assert packet == PYSIM_POR_USER_DATA[3:]
    assert response_user_data(packet) == PYSIM_POR_USER_DATA


def test_single_message_limit() -> None:
    """137 octets fit one message (3 + 137 = 140); 138 need two."""
    assert len(command_user_data(_packet(137), reference=1)) == 1
    assert len(command_user_data(_packet(137), reference=1)[0]) == MAX_USER_DATA
    assert len(command_user_data(_packet(138), reference=1)) == 2


def test_concatenated_layout() -> None:
    """First part: UDH 07 | 00 03 ref n 1 | 70 00 and 132 octets; later parts: UDH
    05 | 00 03 ref n seq and up to 134 octets; the 0x70 element is in the first part only."""
    packet = _packet(132 + 134 + 10)
    parts = command_user_data(packet, reference=0x5A)
    assert [len(p) for p in parts] == [140, 140, 6 + 10]
    assert parts[0][:8] == H("0700035A03017000")
    assert parts[1][:6] == H("0500035A0302")
    assert parts[2][:6] == H("0500035A0303")
    assert parts[0][8:] + parts[1][6:] + parts[2][6:] == packet


@settings(max_examples=200)
@given(
    st.integers(2, 1200).flatmap(lambda n: st.just(_packet(n))),
    st.integers(0, 255),
    st.randoms(use_true_random=False),
)
def test_split_and_reassemble_in_any_order(
    packet: bytes, reference: int, rnd: random.Random
) -> None:
    """parse(split(p)) == p whatever order the parts arrive in; each part fits 140 octets."""
    parts = command_user_data(packet, reference=reference)
    assert all(len(p) <= MAX_USER_DATA for p in parts)
    shuffled = list(parts)
    rnd.shuffle(shuffled)
    assert parse_command_user_data(shuffled) == packet


def test_16_bit_concatenation_is_read() -> None:
    """Parts using the 16-bit reference element (§9.2.3.24.8) reassemble too."""
    packet = _packet(200)
    first = build_udh((Concat(0x1234, 2, 1, ref16=True).to_ie(), InformationElement(0x70)))
    second = build_udh((Concat(0x1234, 2, 2, ref16=True).to_ie(),))
    assert parse_command_user_data([second + packet[130:], first + packet[:130]]) == packet


def test_repeated_0x70_in_later_parts_is_tolerated() -> None:
    """A sender repeating the (empty) 0x70 element in every part is read all the same."""
    packet = _packet(200)
    cpi = InformationElement(0x70)
    parts = [
        build_udh((Concat(1, 2, 1, ref16=False).to_ie(), cpi)) + packet[:100],
        build_udh((Concat(1, 2, 2, ref16=False).to_ie(), cpi)) + packet[100:],
    ]
    assert parse_command_user_data(parts) == packet


def _replace_udh(part: bytes, *ies: InformationElement) -> bytes:
    _, payload = split_udh(part)
    return build_udh(ies) + payload


CPI = InformationElement(0x70)
P = _packet(200)
PARTS = command_user_data(P, reference=7)


@pytest.mark.parametrize(
    ("parts", "why"),
    [
        ([], "no user data"),
        ([PARTS[0]], "a lone first part of two"),
        ([PARTS[0], PARTS[0]], "the same part twice"),
        ([PARTS[0], _replace_udh(PARTS[1], Concat(8, 2, 2, ref16=False).to_ie())], "references"),
        ([PARTS[0], _replace_udh(PARTS[1], Concat(7, 3, 2, ref16=False).to_ie())], "totals"),
        ([PARTS[0], _replace_udh(PARTS[1], Concat(7, 2, 3, ref16=False).to_ie())], "seq > total"),
        ([PARTS[0], _replace_udh(PARTS[1], Concat(7, 2, 0, ref16=False).to_ie())], "seq 0"),
        ([PARTS[0], _replace_udh(PARTS[1], CPI)], "no concatenation element"),
        ([_replace_udh(PARTS[0], Concat(7, 2, 1, ref16=False).to_ie()), PARTS[1]], "no 0x70"),
        ([PARTS[0], PARTS[1][:-1]], "CPL does not match"),
        ([PARTS[0], PARTS[1], PARTS[1]], "three parts for a total of two"),
        ([H("027000") + _packet(20)[:-1]], "single: CPL does not match"),
        ([H("020000") + _packet(20)], "single: no 0x70"),
        ([H("05")], "UDHL past the end"),
        ([b""], "empty user data"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_inconsistent_parts_are_refused(parts: list[bytes], why: str) -> None:
    """Every inconsistency raises MalformedUserData (a MalformedPacket, status 06)."""
    with pytest.raises(MalformedUserData):
        parse_command_user_data(parts)


def test_malformed_user_data_is_a_malformed_packet() -> None:
    """MalformedUserData is a MalformedPacket and so an OtaError with status 06."""
    with pytest.raises(MalformedPacket) as info:
        parse_command_user_data([H("020000") + _packet(20)])
    assert info.value.status == 0x06


@pytest.mark.parametrize(
    "user_data",
    [
        H("027000") + _packet(20),  # a command UDH, not a response one
        build_udh((Concat(1, 2, 1, ref16=False).to_ie(), InformationElement(0x71))) + _packet(9),
        H("09"),
        b"",
    ],
)
def test_bad_response_user_data_is_refused(user_data: bytes) -> None:
    """No 0x71 element, a concatenated PoR or a broken UDH: MalformedUserData."""
    with pytest.raises(MalformedUserData):
        parse_response_user_data(user_data)


@pytest.mark.parametrize(
    ("packet", "reference"),
    [(b"", 0), (_packet(20), -1), (_packet(20), 256), (_packet(132 + 134 * 254 + 1), 0)],
)
def test_command_user_data_arguments_are_checked(packet: bytes, reference: int) -> None:
    """An empty packet, a reference outside 0..255 or more than 255 parts: OtaUsageError."""
    with pytest.raises(OtaUsageError):
        command_user_data(packet, reference=reference)


def test_most_parts_fit() -> None:
    """A packet needing exactly 255 parts is split (the 8-bit limit of TS 23.040)."""
    parts = command_user_data(_packet(132 + 134 * 254), reference=3)
    assert len(parts) == 255
    assert find_concat(split_udh(parts[-1])[0]) == Concat(3, 255, 255, ref16=False)


def test_response_too_long_is_usage_error() -> None:
    """A PoR that does not fit one short message is refused (concatenated PoRs not built)."""
    response_user_data(bytes(137))
    with pytest.raises(OtaUsageError):
        response_user_data(bytes(138))


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=160), max_size=4))
def test_arbitrary_parts_raise_only_ota_errors(parts: list[bytes]) -> None:
    """Random user data never raises anything but OtaError."""
    with contextlib.suppress(OtaError):
        parse_command_user_data(parts)
    for part in parts:
        with contextlib.suppress(OtaError):
            parse_response_user_data(part)


@settings(max_examples=200)
@given(st.lists(st.binary(min_size=1, max_size=140), min_size=1, max_size=4), st.integers(0, 255))
def test_random_payloads_under_valid_headers_raise_only_ota_errors(
    payloads: list[bytes], reference: int
) -> None:
    """Valid concatenation headers around random payloads: a packet or an OtaError."""
    total = len(payloads)
    parts = []
    for seq, payload in enumerate(payloads, start=1):
        ies = [Concat(reference, total, seq, ref16=False).to_ie()]
        if seq == 1:
            ies.append(CPI)
        parts.append(build_udh(ies) + payload)
    try:
        packet = parse_command_user_data(parts)
    except OtaError:
        return
    assert packet == b"".join(payloads)
