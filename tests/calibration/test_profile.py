"""calibration.profile: the 32-byte calibration file (EF 7F50/6F60), its vectors, round trip,
validation and robustness against arbitrary bytes."""

from __future__ import annotations

import binascii
import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.imei import Imei, parse_imei
from calibration.profile import (
    RECORD_SIZE,
    UNCALIBRATED,
    CalibrationRecord,
    Method,
    ProfileError,
    decode,
    decode_imei,
    encode,
    encode_imei,
)
from calibration.rf import Profile, compute_profile
from simcard.card import CALIBRATION_SIZE

# IMEI 260531793113837: the check-digit example of 3GPP TS 23.003 Annex B.
ANNEX_B_IMEI = "260531793113837"
# Its TS 24.008 §10.5.1.4 mobile identity value, worked by hand from the clause: first octet
# digit 1 ('2') in the high nibble, odd indicator 1, type IMEI '010' -> 2A; then digit pairs
# low nibble first; the 15th digit is the spare 0 a terminal transmits (TS 23.003 §6.2.1).
ANNEX_B_IDENTITY = bytes.fromhex("2A06357139118303")

# An SMS-calibrated record (A = 10.0 dB: payment -5.5 dBm, door +2.0 dBm) for that IMEI on
# 2024-03-15, laid out per the module docstring; the CRC is CRC-16/CCITT-FALSE of bytes 0..29.
SMS_RECORD = CalibrationRecord(
    method=Method.SMS,
    payment_dbm=Decimal("-5.5"),
    door_dbm=Decimal("2.0"),
    imei=parse_imei(ANNEX_B_IMEI),
    calibrated_on=dt.date(2024, 3, 15),
    a_db=Decimal("10.0"),
)
SMS_RECORD_BYTES = bytes.fromhex(
    "01"  # format version
    "01"  # method SMS
    "75"  # payment: 2 * -5.5 + 128 = 117
    "84"  # door: 2 * 2.0 + 128 = 132
    "2A06357139118303"  # IMEI identity
    "20240315"  # date, BCD YYYYMMDD
    "0064"  # A = 100 tenths of a dB
    "000000000000000000000000"  # reserved
    "5819"  # CRC
)
UNCALIBRATED_BYTES = bytes.fromhex("0100" + "FF" * 16 + "00" * 12 + "BFC6")


def test_record_size_matches_the_card_file() -> None:
    """The record fills EF 7F50/6F60 exactly (simcard.card.CALIBRATION_SIZE)."""
    assert RECORD_SIZE == CALIBRATION_SIZE == 32


def test_crc_is_ccitt_false() -> None:
    """The CRC used is CRC-16/CCITT-FALSE: check value 0x29B1 over "123456789" (CRC RevEng
    catalogue, CRC-16/IBM-3740 alias CCITT-FALSE)."""
    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1
    assert int.from_bytes(SMS_RECORD_BYTES[30:], "big") == binascii.crc_hqx(
        SMS_RECORD_BYTES[:30], 0xFFFF
    )


def test_imei_identity_vector() -> None:
    """The IMEI field is the TS 24.008 mobile identity value with the spare digit 0."""
    imei = parse_imei(ANNEX_B_IMEI)
    assert encode_imei(imei) == ANNEX_B_IDENTITY
    assert decode_imei(ANNEX_B_IDENTITY) == imei


def test_imei_identity_with_check_digit_in_the_spare_position() -> None:
    """A terminal that reports the check digit (7) in the 15th position decodes the same."""
    assert decode_imei(bytes.fromhex("2A06357139118373")) == parse_imei(ANNEX_B_IMEI)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (bytes.fromhex("2906357139118303"), "type"),  # type nibble 9: IMSI
        (bytes.fromhex("2A0635713911830A"), "non-decimal"),
        (bytes.fromhex("2A06357139118353"), "15th digit"),
        (bytes.fromhex("2A063571391183"), "8 bytes"),
    ],
)
def test_bad_imei_identity(data: bytes, words: str) -> None:
    """A wrong type, a non-decimal digit, a wrong 15th digit or length raise ProfileError."""
    with pytest.raises(ProfileError, match=words):
        decode_imei(data)


def test_sms_record_vector() -> None:
    """The SMS record encodes to the documented 32 bytes and decodes back."""
    assert encode(SMS_RECORD) == SMS_RECORD_BYTES
    assert decode(SMS_RECORD_BYTES) == SMS_RECORD


def test_uncalibrated_vector() -> None:
    """Method none: FF in bytes 2..17, reserved zeros, CRC; decodes to UNCALIBRATED."""
    assert encode(UNCALIBRATED) == UNCALIBRATED_BYTES
    assert decode(UNCALIBRATED_BYTES) == UNCALIBRATED
    assert not UNCALIBRATED.calibrated


@pytest.mark.parametrize("fill", [0xFF, 0x00])
def test_blank_file_reads_as_uncalibrated(fill: int) -> None:
    """A file never written (all FF as personalised, or all 00) is an uncalibrated card."""
    assert decode(bytes([fill]) * 32) == UNCALIBRATED


def test_from_profile_copies_levels_and_marks_missing_door() -> None:
    """from_profile writes the payment level, the door level or FF when unavailable, and A."""
    outcome = compute_profile(Decimal("27.0"))  # payment +10.0 dBm, door unavailable
    assert isinstance(outcome, Profile)
    record = CalibrationRecord.from_profile(
        outcome,
        imei=parse_imei("352099001761481"),
        method=Method.INSTRUMENT,
        on=dt.date(2025, 12, 31),
    )
    data = encode(record)
    assert data[1] == 0x02
    assert data[2] == 2 * 10 + 128
    assert data[3] == 0xFF
    assert data[16:18] == (270).to_bytes(2, "big")
    assert decode(data) == record
    assert record.door_dbm is None


def test_negative_a_is_stored_signed() -> None:
    """A phone measured below 0 dB (instrument) keeps its A: two's complement tenths."""
    outcome = compute_profile(Decimal("-0.7"))
    assert isinstance(outcome, Profile)
    record = CalibrationRecord.from_profile(
        outcome, imei=parse_imei(ANNEX_B_IMEI), method=Method.INSTRUMENT, on=dt.date(2024, 1, 2)
    )
    data = encode(record)
    assert data[16:18] == bytes.fromhex("FFF9")
    assert decode(data).a_db == Decimal("-0.7")


def test_from_profile_refuses_method_none() -> None:
    """A profile is never written as an uncalibrated record."""
    outcome = compute_profile(0)
    assert isinstance(outcome, Profile)
    with pytest.raises(ProfileError):
        CalibrationRecord.from_profile(
            outcome, imei=parse_imei(ANNEX_B_IMEI), method=Method.NONE, on=dt.date(2024, 1, 1)
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": Method.NONE, "payment_dbm": Decimal(0)},
        {"method": Method.SMS, "payment_dbm": None},
        {"method": Method.SMS, "payment_dbm": Decimal("0.3")},
        {"method": Method.SMS, "payment_dbm": Decimal(64)},
        {"method": Method.SMS, "door_dbm": Decimal("NaN")},
        {"method": Method.SMS, "a_db": Decimal("100.1")},
        {"method": Method.SMS, "a_db": Decimal("1.25")},
        {"method": Method.SMS, "a_db": None},
        {"method": Method.SMS, "calibrated_on": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)},
        {"method": Method.SMS, "imei": "260531793113837"},
        {"method": 1},
    ],
)
def test_invalid_records_are_refused(kwargs: dict[str, object]) -> None:
    """A record with a missing or malformed field raises ProfileError when built."""
    base: dict[str, object] = {
        "payment_dbm": Decimal("-5.5"),
        "imei": parse_imei(ANNEX_B_IMEI),
        "calibrated_on": dt.date(2024, 3, 15),
        "a_db": Decimal("10.0"),
    }
    if kwargs.get("method") is Method.NONE:
        base = {}
    base.update(kwargs)
    with pytest.raises(ProfileError):
        CalibrationRecord(**base)  # type: ignore[arg-type]


def _with_crc(body: bytes) -> bytes:
    return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({0: 0x02}, "version"),
        ({1: 0x07}, "method"),
        ({2: 0xFF}, "payment level"),
        ({12: 0x2A}, "BCD"),
        ({14: 0x13}, "calendar date"),
        ({16: 0x10}, "tenths"),
        ({20: 0x01}, "reserved"),
    ],
)
def test_malformed_fields_are_refused(patch: dict[int, int], words: str) -> None:
    """Each malformed field (with a correct CRC) raises ProfileError naming the problem."""
    body = bytearray(SMS_RECORD_BYTES[:30])
    for offset, value in patch.items():
        body[offset] = value
    with pytest.raises(ProfileError, match=words):
        decode(_with_crc(bytes(body)))


def test_uncalibrated_with_stray_content_is_refused() -> None:
    """Method none with a level in byte 2 is not a valid file."""
    body = bytearray(UNCALIBRATED_BYTES[:30])
    body[2] = 0x80
    with pytest.raises(ProfileError, match="FF"):
        decode(_with_crc(bytes(body)))


def test_wrong_size_and_type_are_refused() -> None:
    """Content other than 32 bytes raises ProfileError."""
    with pytest.raises(ProfileError):
        decode(SMS_RECORD_BYTES[:31])
    with pytest.raises(ProfileError):
        decode("01" * 32)  # type: ignore[arg-type]


levels = st.integers(-128, 126).map(lambda n: Decimal(n) / 2)
records = st.builds(
    CalibrationRecord,
    method=st.sampled_from([Method.SMS, Method.INSTRUMENT]),
    payment_dbm=levels,
    door_dbm=st.none() | levels,
    imei=st.builds(Imei, tac=st.from_regex(r"\A[0-9]{8}\Z"), snr=st.from_regex(r"\A[0-9]{6}\Z")),
    calibrated_on=st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)),
    a_db=st.integers(-1000, 1000).map(lambda n: Decimal(n).scaleb(-1)),
)


@settings(max_examples=300, deadline=None)
@given(records | st.just(UNCALIBRATED))
def test_round_trip(record: CalibrationRecord) -> None:
    """decode(encode(r)) == r for every valid record, and the encoding is 32 bytes."""
    data = encode(record)
    assert len(data) == RECORD_SIZE
    assert decode(data) == record
    assert encode(decode(data)) == data


@settings(max_examples=300, deadline=None)
@given(records, st.integers(0, 32 * 8 - 1))
def test_any_single_bit_flip_is_detected(record: CalibrationRecord, bit: int) -> None:
    """Flipping any one bit of a valid file makes it fail to decode (the CRC catches it)."""
    data = bytearray(encode(record))
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProfileError):
        decode(bytes(data))


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=40) | st.binary(min_size=32, max_size=32))
def test_arbitrary_bytes_raise_only_profile_error(data: bytes) -> None:
    """Any bytes decode to a record or raise ProfileError, never another exception."""
    try:
        record = decode(data)
    except ProfileError:
        return
    assert isinstance(record, CalibrationRecord)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=29, max_size=29), st.sampled_from([0x00, 0x01, 0x02]))
def test_arbitrary_body_with_valid_crc_raises_only_profile_error(noise: bytes, method: int) -> None:
    """Arbitrary content behind version 1 and a known method, with a correct CRC, decodes
    or raises ProfileError only (the CRC does not shield the field checks)."""
    body = bytes([0x01, method]) + noise[1:]
    try:
        record = decode(_with_crc(body))
    except ProfileError:
        return
    assert record.method is Method(method)
