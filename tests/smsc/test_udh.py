"""Tests for smsc.udh: TS 23.040 §9.2.3.24 User Data Header and its typed IEs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsc.udh import (
    IEI_COMMAND_PACKET,
    IEI_CONCAT_8,
    IEI_CONCAT_16,
    IEI_PORT_8,
    IEI_PORT_16,
    IEI_RESPONSE_PACKET,
    Concat,
    InformationElement,
    Ports,
    UdhError,
    build_udh,
    find_concat,
    find_ports,
    split_udh,
)

ies_strategy = st.lists(
    st.builds(InformationElement, st.integers(0, 255), st.binary(max_size=12)), max_size=12
)


def test_concat_8bit_vector() -> None:
    """The classic 8-bit concat UDH 05 00 03 ref total seq splits into its IE and payload."""
    ies, payload = split_udh(bytes.fromhex("050003CC0201") + b"hello")
    assert ies == (InformationElement(IEI_CONCAT_8, bytes.fromhex("CC0201")),)
    assert payload == b"hello"
    assert find_concat(ies) == Concat(0xCC, 2, 1, ref16=False)


def test_concat_16bit_vector() -> None:
    """A 16-bit concat UDH 06 08 04 refhi reflo total seq gives a 16-bit reference."""
    ies, payload = split_udh(bytes.fromhex("060804F42E0302"))
    assert payload == b""
    assert find_concat(ies) == Concat(0xF42E, 3, 2, ref16=True)


def test_command_packet_ie_is_kept() -> None:
    """The zero-length TS 31.115 command/response packet IEs build and parse like any other."""
    udh = build_udh([InformationElement(IEI_COMMAND_PACKET)])
    assert udh == b"\x02\x70\x00"
    ies, payload = split_udh(udh + b"\x01\x02")
    assert ies == (InformationElement(IEI_COMMAND_PACKET, b""),)
    assert payload == b"\x01\x02"
    resp = build_udh([InformationElement(IEI_RESPONSE_PACKET)])
    assert split_udh(resp)[0] == (InformationElement(IEI_RESPONSE_PACKET),)


def test_ies_found_at_any_position() -> None:
    """Concat and ports are found wherever they sit among other IEs."""
    ies = [
        InformationElement(IEI_COMMAND_PACKET),
        InformationElement(IEI_PORT_16, bytes.fromhex("0B840000")),
        InformationElement(0x24, b"\x01"),
        Concat(7, 4, 3, ref16=False).to_ie(),
    ]
    parsed, payload = split_udh(build_udh(ies) + b"x")
    assert list(parsed) == ies
    assert payload == b"x"
    assert find_concat(parsed) == Concat(7, 4, 3, ref16=False)
    assert find_ports(parsed) == Ports(2948, 0, wide=True)


def test_last_occurrence_wins() -> None:
    """Repeated or mutually exclusive IEs: the last one is used (§9.2.3.24)."""
    ies = [
        Concat(1, 2, 1, ref16=False).to_ie(),
        Concat(300, 5, 4, ref16=True).to_ie(),
        Ports(1, 2, wide=True).to_ie(),
        Ports(3, 4, wide=False).to_ie(),
    ]
    assert find_concat(ies) == Concat(300, 5, 4, ref16=True)
    assert find_ports(ies) == Ports(3, 4, wide=False)


def test_wrong_length_ies_ignored() -> None:
    """A concat or ports IE of the wrong length is ignored, not misread."""
    ies = [
        Concat(9, 2, 1, ref16=False).to_ie(),
        InformationElement(IEI_CONCAT_8, b"\x01\x02"),
        InformationElement(IEI_CONCAT_16, b"\x01\x02\x03"),
        InformationElement(IEI_PORT_8, b"\x01"),
    ]
    assert find_concat(ies) == Concat(9, 2, 1, ref16=False)
    assert find_ports(ies) is None
    assert find_concat([]) is None


@pytest.mark.parametrize(
    "user_data",
    [
        b"",  # no UDHL at all
        b"\x05\x00\x03\x01\x02",  # UDHL 5, only 4 octets follow
        b"\x03\x00\x03\x01",  # IE claims 3 octets, UDH holds 1
        b"\x01\x00",  # IE header cut by the UDHL
        b"\x04\x70\x00\x00\x05abcdef",  # second IE overruns the UDHL (payload follows)
    ],
)
def test_overrun_raises(user_data: bytes) -> None:
    """A UDHL or IE length that runs past its bounds raises UdhError (a ValueError)."""
    with pytest.raises(UdhError):
        split_udh(user_data)
    assert issubclass(UdhError, ValueError)


def test_empty_udh() -> None:
    """UDHL 0 is a header with no IEs."""
    assert split_udh(b"\x00abc") == ((), b"abc")
    assert build_udh([]) == b"\x00"


def test_construction_limits() -> None:
    """IEI and IE length are single octets; a UDH above 255 octets cannot be built."""
    with pytest.raises(UdhError):
        InformationElement(256)
    with pytest.raises(UdhError):
        InformationElement(0x24, bytes(256))
    with pytest.raises(UdhError):
        build_udh([InformationElement(0x24, bytes(200)), InformationElement(0x25, bytes(60))])
    with pytest.raises(UdhError):
        Concat(256, 2, 1, ref16=False).to_ie()
    with pytest.raises(UdhError):
        Concat(1, 256, 1, ref16=True).to_ie()
    with pytest.raises(UdhError):
        Ports(256, 0, wide=False).to_ie()


@given(ies_strategy, st.binary(max_size=40))
def test_build_split_round_trip(ies: list[InformationElement], payload: bytes) -> None:
    """split_udh(build_udh(ies) + payload) gives back the IEs in order and the payload."""
    parsed, rest = split_udh(build_udh(ies) + payload)
    assert list(parsed) == ies
    assert rest == payload


@given(st.binary(max_size=60))
def test_split_fuzz_contract(data: bytes) -> None:
    """Any octets either raise UdhError or parse to IEs that rebuild the same octets."""
    try:
        ies, payload = split_udh(data)
    except UdhError:
        return
    assert build_udh(ies) + payload == data


@given(st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255), st.booleans())
def test_concat_ie_round_trip(reference: int, total: int, seqnum: int, ref16: bool) -> None:
    """Concat -> IE -> find_concat is the identity (8-bit references within 0..255)."""
    if not ref16:
        reference &= 0xFF
    concat = Concat(reference, total, seqnum, ref16=ref16)
    assert find_concat([InformationElement(0x70), concat.to_ie()]) == concat


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.booleans())
def test_ports_ie_round_trip(destination: int, source: int, wide: bool) -> None:
    """Ports -> IE -> find_ports is the identity (8-bit ports within 0..255)."""
    if not wide:
        destination &= 0xFF
        source &= 0xFF
    ports = Ports(destination, source, wide=wide)
    assert find_ports([ports.to_ie()]) == ports
