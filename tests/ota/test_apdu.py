"""Tests for ota.apdu: ISO/IEC 7816-4 C-APDU / R-APDU values and status words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.apdu import ApduError, CommandApdu, ResponseApdu, StatusWord, sw_text

byte = st.integers(0, 255)


@st.composite
def command_apdus(draw: st.DrawFn, *, extended: bool = True) -> CommandApdu:
    """Any valid C-APDU, short or (optionally) extended, of any case."""
    max_nc = 65535 if extended else 255
    max_ne = 65536 if extended else 256
    nc = draw(st.one_of(st.just(0), st.integers(1, 300), st.integers(1, max_nc)))
    nc = min(nc, max_nc)
    data = draw(st.binary(min_size=nc, max_size=nc)) if nc < 400 else bytes(nc)
    le = draw(st.one_of(st.none(), st.integers(1, 256), st.integers(1, max_ne)))
    return CommandApdu(draw(byte), draw(byte), draw(byte), draw(byte), data, le)


# ISO/IEC 7816-4 cases, one per case, as osmocom/pysim tests/pySim-shell_test/apdu/
# test_apdu.script sends them to a card (MANAGE CHANNEL, STATUS, TERMINAL CAPABILITY, SELECT).
PYSIM_CASES = [
    ("00700001", 1, CommandApdu(0x00, 0x70, 0x00, 0x01)),
    ("80F2000000", 2, CommandApdu(0x80, 0xF2, 0x00, 0x00, le=256)),
    ("80AA000005A903830180", 3, CommandApdu(0x80, 0xAA, 0, 0, bytes.fromhex("A903830180"))),
    ("00A40004023F0000", 4, CommandApdu(0x00, 0xA4, 0, 4, b"\x3f\x00", 256)),
    # GlobalPlatform APDUs of osmocom/pysim tests/unittests/test_globalplatform.py
    # (SCP02_Test.test_mac_command, the plain APDUs of cases 1 to 4)
    ("80F22002", 1, CommandApdu(0x80, 0xF2, 0x20, 0x02)),
    ("80CA006600", 2, CommandApdu(0x80, 0xCA, 0x00, 0x66, le=256)),
    (
        "80F220020A4F0212345C054F9F70C5",
        3,
        CommandApdu(0x80, 0xF2, 0x20, 0x02, bytes.fromhex("4F0212345C054F9F70C5")),
    ),
    ("80F28002024F0000", 4, CommandApdu(0x80, 0xF2, 0x80, 0x02, b"\x4f\x00", 256)),
]


@pytest.mark.parametrize(("hexa", "case", "apdu"), PYSIM_CASES)
def test_published_case_vectors(hexa: str, case: int, apdu: CommandApdu) -> None:
    """Published C-APDUs of each case decode to the expected fields and encode back."""
    decoded = CommandApdu.from_bytes(bytes.fromhex(hexa))
    assert decoded == apdu
    assert decoded.case == case
    assert decoded.to_bytes() == bytes.fromhex(hexa)


@pytest.mark.parametrize(
    ("apdu", "wire"),
    [
        (CommandApdu(0, 0xB0, 0, 0, le=65536), "00B00000000000"),
        (CommandApdu(0, 0xB0, 0, 0, le=257), "00B00000000101"),
        (CommandApdu(0, 0xD6, 0, 0, bytes(256)), "00D6000000" + "0100" + "00" * 256),
        (CommandApdu(0, 0xA4, 0, 4, b"\x3f\x00", 65536), "00A4000400" + "00023F00" + "0000"),
        (CommandApdu(0, 0xA4, 0, 4, bytes(300), 1), "00A4000400012C" + "00" * 300 + "0001"),
    ],
)
def test_extended_length_forms(apdu: CommandApdu, wire: str) -> None:
    """Nc > 255 or Ne > 256 switch to the ISO/IEC 7816-3 §12.1.3 extended form, both fields."""
    assert apdu.extended
    assert apdu.to_bytes() == bytes.fromhex(wire)
    assert CommandApdu.from_bytes(bytes.fromhex(wire)) == apdu


def test_extended_refused_where_not_allowed() -> None:
    """from_short_bytes refuses the extended form that from_bytes accepts."""
    wire = bytes.fromhex("00B00000000101")
    assert CommandApdu.from_bytes(wire).le == 257
    with pytest.raises(ApduError, match="extended"):
        CommandApdu.from_short_bytes(wire)


@pytest.mark.parametrize(
    "hexa",
    [
        "",
        "00A400",  # 3 bytes: no complete header
        "00A40004023F",  # Lc=2, one data byte
        "00A40004023F000000",  # Lc=2, data, two more bytes
        "00B000000000010203",  # extended Lc=1: 9 bytes fit neither 3E (8) nor 4E (10)
        "00D6000000000005",  # extended Lc of 0000 then a byte
        "00D600000000",  # 6 bytes with B1=00
    ],
)
def test_lengths_matching_no_case_are_refused(hexa: str) -> None:
    """A byte string whose length fits no ISO/IEC 7816-3 case raises ApduError."""
    with pytest.raises(ApduError):
        CommandApdu.from_bytes(bytes.fromhex(hexa))


def test_le_zero_is_refused() -> None:
    """le=0 is refused: short Le 00 means 256, use None for no Le field."""
    with pytest.raises(ApduError, match="None"):
        CommandApdu(0, 0xB0, 0, 0, le=0)


@pytest.mark.parametrize("field", ["cla", "ins", "p1", "p2"])
def test_header_bytes_are_checked(field: str) -> None:
    """A header byte outside 0..255 is refused, naming the field."""
    values = {"cla": 0, "ins": 0xA4, "p1": 0, "p2": 0, field: 256}
    with pytest.raises(ApduError, match=field.upper()):
        CommandApdu(**values)


def test_repr_hides_command_data() -> None:
    """The repr of a VERIFY PIN shows the data length, not the PIN."""
    verify = CommandApdu(0x00, 0x20, 0x00, 0x01, b"1234\xff\xff\xff\xff")
    assert "1234" not in repr(verify)
    assert "31323334" not in repr(verify).lower()
    assert "<8 bytes>" in repr(verify)


@given(command_apdus())
def test_command_round_trip(apdu: CommandApdu) -> None:
    """from_bytes(to_bytes(x)) == x for every case, short and extended."""
    assert CommandApdu.from_bytes(apdu.to_bytes()) == apdu


@given(command_apdus(extended=False))
def test_short_round_trip_and_case(apdu: CommandApdu) -> None:
    """Short APDUs round-trip through from_short_bytes and keep their case."""
    wire = apdu.to_bytes()
    assert not apdu.extended
    back = CommandApdu.from_short_bytes(wire)
    assert back == apdu
    assert back.case == apdu.case
    assert len(wire) == 4 + (1 + len(apdu.data) if apdu.data else 0) + (apdu.le is not None)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_apdu_error(raw: bytes) -> None:
    """from_bytes either decodes or raises ApduError, and a decoded APDU re-encodes to a
    C-APDU that decodes to the same value."""
    try:
        apdu = CommandApdu.from_bytes(raw)
    except ApduError:
        return
    assert CommandApdu.from_bytes(apdu.to_bytes()) == apdu


def test_response_fields_and_ok() -> None:
    """SW1/SW2 split, and ok follows TS 102 221 §10.2.1.1 (9000, 91XX, 92XX only)."""
    r = ResponseApdu.from_bytes(bytes.fromhex("6F219000"))
    assert (r.data, r.sw, r.sw1, r.sw2) == (b"\x6f\x21", 0x9000, 0x90, 0x00)
    assert r.ok
    assert ResponseApdu(b"", 0x9110).ok
    assert ResponseApdu(b"", 0x9200).ok
    assert not ResponseApdu(b"", 0x6132).ok
    assert ResponseApdu(b"", 0x6132).more_data
    assert not ResponseApdu(b"", 0x6A82).ok
    assert not ResponseApdu(b"", 0x9300).ok


def test_response_too_short() -> None:
    """An R-APDU needs its two status bytes."""
    with pytest.raises(ApduError):
        ResponseApdu.from_bytes(b"\x90")
    with pytest.raises(ApduError):
        ResponseApdu(b"", 0x10000)


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_response_round_trip(data: bytes, sw: int) -> None:
    """ResponseApdu.from_bytes(to_bytes(x)) == x."""
    r = ResponseApdu(data, sw)
    assert ResponseApdu.from_bytes(r.to_bytes()) == r


@given(st.binary(max_size=40))
def test_response_arbitrary_bytes(raw: bytes) -> None:
    """ResponseApdu.from_bytes raises only ApduError, and only below 2 bytes."""
    try:
        r = ResponseApdu.from_bytes(raw)
    except ApduError:
        assert len(raw) < 2
        return
    assert r.to_bytes() == raw


def test_sw_text() -> None:
    """Status words get a label: exact ones first, then by SW1, else 'unknown status'."""
    assert sw_text(StatusWord.OK) == "ok"
    assert sw_text(0x6A82) == "file or application not found"
    assert sw_text(0x6132) == "response bytes available"
    assert sw_text(0x1234) == "unknown status"
    with pytest.raises(ApduError):
        sw_text(-1)
