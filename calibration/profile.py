"""The content of the card's calibration file, EF '6F60' under the wallet DF '7F50' (32 bytes,
``simcard.card.CALIBRATION_PATH`` / ``CALIBRATION_SIZE``), format version 1.

Layout (offsets in bytes; multi-byte integers big-endian)::

    0   1  format version, 0x01
    1   1  method: 0x00 none (uncalibrated), 0x01 SMS (OTA from the handset table),
           0x02 instrument (business hall)
    2   1  payment level: a level code (below); 0xFF only when the method is none
    3   1  door-access level: a level code, or 0xFF when unavailable for this handset
    4   8  the IMEI calibrated for, coded as the mobile identity value of 3GPP TS 24.008
           §10.5.1.4 (type of identity IMEI '010', odd indicator set, digit 1 in the high
           nibble of the first octet, then two digits per octet, low nibble first), the 15th
           digit being the spare digit 0 as a terminal transmits it (3GPP TS 23.003 §6.2.1):
           the same 8 bytes a terminal gives in the IMEI data object of PROVIDE LOCAL
           INFORMATION (ETSI TS 102 223 §8.20). All 0xFF when the method is none
    12  4  the date calibrated (UTC), packed BCD YYYYMMDD; all 0xFF when the method is none
    16  2  the A the levels were computed for, in tenths of a dB, signed (two's complement,
           -1000..+1000); 0xFFFF when the method is none (bytes 2..17 are then all 0xFF)
    18 12  reserved, 0x00
    30  2  CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no
           final XOR) over bytes 0..29

Level code: ``2 * P + 128`` for a level ``P`` in dBm on the 0.5 dB grid, so codes 0..254 stand
for -64.0..+63.0 dBm and 0xFF is free to mean "none".

A file never written (every byte 0xFF as the card is personalised, or every byte 0x00) reads
as uncalibrated. Decoding accepts the 15th IMEI digit as 0 (spare) or as the Luhn check digit
(some terminals report it); the record holds the IMEI itself, so re-encoding writes 0.
"""

from __future__ import annotations

import binascii
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Final

from calibration.imei import Imei, ImeiError, luhn_check_digit
from calibration.rf import Level, Profile

__all__ = [
    "FORMAT_VERSION",
    "RECORD_SIZE",
    "UNCALIBRATED",
    "CalibrationRecord",
    "Method",
    "ProfileError",
    "decode",
    "decode_imei",
    "encode",
    "encode_imei",
]

RECORD_SIZE: Final = 32
FORMAT_VERSION: Final = 0x01
_NONE: Final = 0xFF
_A_MAX_TENTHS: Final = 1000
_IMEI_TYPE: Final = 0x02  # TS 24.008 table 10.5.4: type of identity IMEI
_ODD: Final = 0x08
_RESERVED: Final = bytes(12)


class ProfileError(ValueError):
    """A calibration record that cannot be built, encoded or decoded."""


class Method(Enum):
    """How the card was calibrated (byte 1)."""

    NONE = 0x00
    SMS = 0x01
    INSTRUMENT = 0x02


def _level_code(p_dbm: Decimal, what: str) -> int:
    if not isinstance(p_dbm, Decimal) or not p_dbm.is_finite():
        raise ProfileError(f"{what} must be a finite Decimal")
    doubled = p_dbm * 2
    if doubled != doubled.to_integral_value() or not -64 <= p_dbm <= 63:
        raise ProfileError(f"{what} must be on the 0.5 dB grid within -64..+63 dBm, not {p_dbm}")
    return int(doubled) + 128


def _level_of(code: int) -> Decimal:
    return (Decimal(code - 128) / 2).quantize(Decimal("0.1"))


def encode_imei(imei: Imei) -> bytes:
    """The 8-byte TS 24.008 §10.5.1.4 mobile identity value of ``imei`` (spare digit 0)."""
    digits = [int(c) for c in imei.body] + [0]
    out = bytearray([(digits[0] << 4) | _ODD | _IMEI_TYPE])
    out.extend(digits[i] | (digits[i + 1] << 4) for i in range(1, 15, 2))
    return bytes(out)


def decode_imei(data: bytes) -> Imei:
    """The IMEI in an 8-byte TS 24.008 mobile identity value (15th digit spare 0 or the CD)."""
    if len(data) != 8:
        raise ProfileError(f"an IMEI identity is 8 bytes, not {len(data)}")
    if data[0] & 0x0F != _ODD | _IMEI_TYPE:
        raise ProfileError(f"identity type/parity nibble is {data[0] & 0x0F:X}, expected A (IMEI)")
    nibbles = [data[0] >> 4]
    for byte in data[1:]:
        nibbles += [byte & 0x0F, byte >> 4]
    if any(n > 9 for n in nibbles):
        raise ProfileError("the IMEI identity holds a non-decimal digit")
    body = "".join(map(str, nibbles[:14]))
    if nibbles[14] not in (0, luhn_check_digit(body)):
        raise ProfileError("the IMEI's 15th digit is neither the spare 0 nor the check digit")
    try:
        return Imei(body[:8], body[8:])
    except ImeiError as exc:  # pragma: no cover - 14 decimal digits always form an Imei
        raise ProfileError(str(exc)) from exc


def _bcd(value: int, width: int) -> bytes:
    text = f"{value:0{width * 2}d}"
    return bytes.fromhex(text)


def _unbcd(data: bytes, what: str) -> int:
    text = data.hex()
    if not text.isdigit():
        raise ProfileError(f"{what} is not packed BCD: {text.upper()}")
    return int(text)


@dataclass(frozen=True, slots=True)
class CalibrationRecord:
    """The calibration file's content. With :attr:`Method.NONE` every other field is None;
    otherwise ``payment_dbm``, ``imei``, ``calibrated_on`` and ``a_db`` are required and
    ``door_dbm`` is None when the handset cannot reach the door band."""

    method: Method
    payment_dbm: Decimal | None = None
    door_dbm: Decimal | None = None
    imei: Imei | None = None
    calibrated_on: dt.date | None = None
    a_db: Decimal | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, Method):
            raise ProfileError("method must be a Method")
        if self.method is Method.NONE:
            if any(
                v is not None
                for v in (self.payment_dbm, self.door_dbm, self.imei, self.calibrated_on, self.a_db)
            ):
                raise ProfileError("an uncalibrated record (method none) carries no other field")
            return
        if self.payment_dbm is None or self.imei is None or self.calibrated_on is None:
            raise ProfileError("a calibrated record needs the payment level, IMEI and date")
        if self.a_db is None:
            raise ProfileError("a calibrated record needs the A it was computed for")
        _level_code(self.payment_dbm, "payment level")
        if self.door_dbm is not None:
            _level_code(self.door_dbm, "door level")
        if not isinstance(self.imei, Imei):
            raise ProfileError("imei must be an Imei")
        if not isinstance(self.calibrated_on, dt.date) or isinstance(
            self.calibrated_on, dt.datetime
        ):
            raise ProfileError("calibrated_on must be a date")
        if not isinstance(self.a_db, Decimal) or not self.a_db.is_finite():
            raise ProfileError("a_db must be a finite Decimal")
        tenths = self.a_db * 10
        if tenths != tenths.to_integral_value() or abs(tenths) > _A_MAX_TENTHS:
            raise ProfileError(f"a_db must be within +-100 dB on the 0.1 dB grid, not {self.a_db}")

    @property
    def calibrated(self) -> bool:
        """Whether the record holds levels (any method but none)."""
        return self.method is not Method.NONE

    @classmethod
    def from_profile(
        cls, profile: Profile, *, imei: Imei, method: Method, on: dt.date
    ) -> CalibrationRecord:
        """The record that writes ``profile`` for ``imei``, calibrated by ``method`` on ``on``."""
        if method is Method.NONE:
            raise ProfileError("a profile is written with method SMS or instrument")
        door = profile.door.p_dbm if isinstance(profile.door, Level) else None
        return cls(
            method=method,
            payment_dbm=profile.payment.p_dbm,
            door_dbm=door,
            imei=imei,
            calibrated_on=on,
            a_db=profile.a_db,
        )


#: The content of a card that is not calibrated.
UNCALIBRATED: Final = CalibrationRecord(Method.NONE)


def _crc(data: bytes) -> int:
    # CRC-16/CCITT-FALSE: binascii.crc_hqx is the 0x1021 MSB-first CRC with a given start
    return binascii.crc_hqx(data, 0xFFFF)


def encode(record: CalibrationRecord) -> bytes:
    """The 32 bytes of the calibration file for ``record``."""
    out = bytearray([FORMAT_VERSION, record.method.value])
    if record.method is Method.NONE:
        out += bytes([_NONE] * 16)
    else:
        assert record.payment_dbm is not None
        assert record.imei is not None
        assert record.calibrated_on is not None
        assert record.a_db is not None
        out.append(_level_code(record.payment_dbm, "payment level"))
        out.append(_NONE if record.door_dbm is None else _level_code(record.door_dbm, "door"))
        out += encode_imei(record.imei)
        on = record.calibrated_on
        out += _bcd(on.year, 2) + _bcd(on.month, 1) + _bcd(on.day, 1)
        out += int(record.a_db * 10).to_bytes(2, "big", signed=True)
    out += _RESERVED
    out += _crc(bytes(out)).to_bytes(2, "big")
    assert len(out) == RECORD_SIZE
    return bytes(out)


def decode(data: bytes) -> CalibrationRecord:
    """The record in the calibration file's 32 bytes; :class:`ProfileError` if malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProfileError("calibration file content must be bytes")
    data = bytes(data)
    if len(data) != RECORD_SIZE:
        raise ProfileError(f"calibration file content is {RECORD_SIZE} bytes, not {len(data)}")
    if data in (bytes([0xFF]) * RECORD_SIZE, bytes(RECORD_SIZE)):
        return UNCALIBRATED
    if data[0] != FORMAT_VERSION:
        raise ProfileError(f"unknown calibration format version {data[0]:#04x}")
    crc = int.from_bytes(data[30:32], "big")
    if crc != _crc(data[:30]):
        raise ProfileError(f"calibration file CRC is {crc:04X}, expected {_crc(data[:30]):04X}")
    if data[18:30] != _RESERVED:
        raise ProfileError("reserved bytes 18..29 must be 00")
    try:
        method = Method(data[1])
    except ValueError:
        raise ProfileError(f"unknown calibration method {data[1]:#04x}") from None
    if method is Method.NONE:
        if data[2:18] != bytes([_NONE] * 16):
            raise ProfileError("an uncalibrated record must hold FF in bytes 2..17")
        return UNCALIBRATED
    if data[2] == _NONE:
        raise ProfileError("a calibrated record must hold a payment level")
    payment = _level_of(data[2])
    door = None if data[3] == _NONE else _level_of(data[3])
    imei = decode_imei(data[4:12])
    year = _unbcd(data[12:14], "the year")
    month = _unbcd(data[14:15], "the month")
    day = _unbcd(data[15:16], "the day")
    try:
        on = dt.date(year, month, day)
    except ValueError:
        raise ProfileError(f"not a calendar date: {year:04d}-{month:02d}-{day:02d}") from None
    tenths = int.from_bytes(data[16:18], "big", signed=True)
    if abs(tenths) > _A_MAX_TENTHS:
        raise ProfileError(f"A is {tenths} tenths of a dB, beyond +-{_A_MAX_TENTHS}")
    return CalibrationRecord(
        method=method,
        payment_dbm=payment,
        door_dbm=door,
        imei=imei,
        calibrated_on=on,
        a_db=Decimal(tenths).scaleb(-1),
    )
