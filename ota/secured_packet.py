"""Secured command and response packets of ETSI TS 102 225 with the SMS coding of 3GPP TS 31.115.

Sans-IO codec: bytes in, typed values out, and the reverse. Covered:

* Command packet (TS 102 225 §5.1, TS 31.115 §4.2): ``CPL(2) CHL(1) SPI(2) KIc(1) KID(1)
  TAR(3) CNTR(5) PCNTR(1) RC/CC/DS secured-data``. For SMS the CPI is the UDH element 0x70
  and the CHI is null, so a packet here runs from CPL to the end (what follows the UDH).
* SPI (§5.1.1), KIc (§5.1.2), KID for RC and CC (§5.1.3), response status codes (§5.1.2
  table 5, in :mod:`ota.errors`), counter modes and their checks on the receiving side.
* Response packet (TS 31.115 §4.4): ``RPL(2) RHL(1) TAR(3) CNTR(5) PCNTR(1) Status(1)
  RC/CC/DS additional-data``, secured as the command's SPI second octet asks, with the
  command's KIc/KID algorithms and keys.

Rules applied (each checked against public vectors, see tests/ota/test_secured_packet.py):

* Ciphering covers CNTR to the end. Before ciphering the secured data is padded with 00
  octets so that the ciphered part is a whole number of cipher blocks (8 for DES, 16 for AES);
  PCNTR counts them. IV is zero. Without ciphering there is no padding and PCNTR is 0.
* The command RC/CC covers ``CPL CHL SPI KIc KID TAR CNTR PCNTR secured-data+padding`` (the
  UDH of the SMS is not included). The response RC/CC covers the SMS UDH ``02 71 00`` then
  ``RPL RHL TAR CNTR PCNTR Status additional-data+padding``. Both are computed on the
  plaintext, before ciphering.
* DES-family CC: CBC-MAC over the input zero-padded to 8 octets (padding not sent), 8
  octets. AES CC: CMAC (NIST SP 800-38B) over the unpadded input, truncated to the leftmost
  octets; the length is what CHL/RHL says on decode (4..16 accepted) and 8 by default on
  encode. RC: CRC-32 (ISO/IEC 13239, as zlib) or CRC-16/X-25, sent big-endian.
* KIc/KID key sizes: DES 8 octets, two-key 3DES 16 (K1||K2, used as K1 K2 K1), three-key
  3DES 24, AES 16/24/32. A key of another size is refused (:class:`~ota.errors.BadKey`).
* SPI reserved bits (first octet b6-b8, second octet b7-b8) are **preserved**: decoded into
  :attr:`Spi.reserved` and re-encoded unchanged. The RC/CC covers the SPI as transmitted, so
  normalising them would break verification of a packet that sets them; refusing them would
  turn a harmless future extension into an error. The reserved PoR request value (11) has
  no meaning to act on and is refused.

Only the ``cryptography`` package does cryptography here; DES and 3DES come from its
``decrepit`` namespace. Module state is read-only or a pure memo: the KIc/KID decodings of all
256 octets are tabled at import, SPI decodings are memoised, and so are the :class:`Keys` of
the last key pairs given to :func:`shared_keys`; nothing else is global. A :class:`Keys` keeps
the cipher and CMAC objects it has built (per algorithm), so reusing one ``Keys`` for a card's
packets skips their set-up; results never depend on it.
"""

from __future__ import annotations

import hmac
import zlib
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum
from functools import lru_cache

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from ota.errors import (
    BadChecksum,
    BadKey,
    CipheringError,
    CounterBlocked,
    CounterTooHigh,
    CounterTooLow,
    InsufficientSecurity,
    MalformedPacket,
    OtaError,
    OtaUsageError,
    ResponseStatus,
    UnknownTar,
    UnsupportedAlgorithm,
)

__all__ = [
    "COMMAND_HEADER_MIN",
    "MAX_COUNTER",
    "SMS_RESPONSE_UDH",
    "BadChecksum",
    "ChecksumAlgorithm",
    "CipherAlgorithm",
    "CipheringError",
    "CommandHeader",
    "CommandPacket",
    "CounterBlocked",
    "CounterMode",
    "CounterTooHigh",
    "CounterTooLow",
    "InsufficientSecurity",
    "Integrity",
    "Keys",
    "Kic",
    "Kid",
    "MalformedPacket",
    "OtaError",
    "OtaUsageError",
    "PorRequest",
    "PorTransport",
    "ResponsePacket",
    "ResponseStatus",
    "Spi",
    "UnknownTar",
    "UnsupportedAlgorithm",
    "check_counter",
    "crc16_x25",
    "decode_command",
    "decode_command_header",
    "decode_response",
    "encode_command",
    "encode_response",
    "por_wanted",
    "response_for_error",
    "shared_keys",
]

MAX_COUNTER = 2**40 - 1  # CNTR is 5 octets (§5.1)
COMMAND_HEADER_MIN = 13  # CHL without RC/CC/DS: SPI 2, KIc, KID, TAR 3, CNTR 5, PCNTR
RESPONSE_HEADER_MIN = 10  # RHL without RC/CC/DS: TAR 3, CNTR 5, PCNTR, Status
SMS_RESPONSE_UDH = b"\x02\x71\x00"  # UDHL, RPI (IEI 0x71), IEIDL 0: part of the PoR RC/CC
_CLEAR_COMMAND = 10  # CPL 2, CHL, SPI 2, KIc, KID, TAR 3: never ciphered
_CLEAR_RESPONSE = 6  # RPL 2, RHL, TAR 3
_MAX_LENGTH = 0xFFFF  # CPL / RPL are two octets


# -- SPI (TS 102 225 §5.1.1, TS 31.115 §4.2 for the PoR transport bit) ----------------------


class CounterMode(IntEnum):
    """SPI first octet b5-b4: what the card does with CNTR."""

    NONE = 0  # no counter
    AVAILABLE_NO_CHECK = 1  # counter present, no replay or sequence check
    HIGHER = 2  # process only if CNTR is higher than the card's value
    ONE_HIGHER = 3  # process only if CNTR is exactly one higher than the card's value


class Integrity(IntEnum):
    """SPI first octet b2-b1 (command) and second octet b4-b3 (PoR): RC, CC or DS."""

    NONE = 0
    RC = 1  # redundancy check
    CC = 2  # cryptographic checksum
    DS = 3  # digital signature


class PorRequest(IntEnum):
    """SPI second octet b2-b1: when the card sends a proof of receipt (11 is reserved)."""

    NONE = 0
    ALWAYS = 1
    ON_ERROR = 2


class PorTransport(IntEnum):
    """SPI second octet b6 (TS 31.115 §4.2): how the SMS-PP PoR travels."""

    DELIVER_REPORT = 0  # in the SMS-DELIVER-REPORT (RP-ACK/RP-ERROR user data)
    SUBMIT = 1  # in an SMS-SUBMIT (reaches an ESME as a deliver_sm)


_SPI_RESERVED = 0xE0C0  # first octet b8-b6, second octet b8-b7


@dataclass(frozen=True, slots=True)
class Spi:
    """The two-octet Security Parameter Indicator.

    ``reserved`` holds the reserved bits exactly where they sit in the big-endian 16-bit
    value (mask 0xE0C0); they are kept, not cleared (see the module docstring).
    """

    counter: CounterMode = CounterMode.NONE
    integrity: Integrity = Integrity.NONE
    ciphered: bool = False
    por: PorRequest = PorRequest.NONE
    por_integrity: Integrity = Integrity.NONE
    por_ciphered: bool = False
    por_transport: PorTransport = PorTransport.DELIVER_REPORT
    reserved: int = 0

    def __post_init__(self) -> None:
        if self.reserved & ~_SPI_RESERVED or self.reserved < 0:
            raise OtaUsageError(f"SPI reserved bits outside mask 0xE0C0: {self.reserved:#x}")

    @classmethod
    def from_bytes(cls, b: bytes) -> Spi:
        """Decode two octets. Raises :class:`MalformedPacket` on a wrong length or the
        reserved PoR request value 11."""
        if len(b) != 2:
            raise MalformedPacket(f"SPI is 2 octets, got {len(b)}")
        first, second = b[0], b[1]
        por = second & 0x03
        if por == 3:
            raise MalformedPacket("SPI PoR request value 11 is reserved")
        return cls(
            counter=CounterMode((first >> 3) & 0x03),
            integrity=Integrity(first & 0x03),
            ciphered=bool(first & 0x04),
            por=PorRequest(por),
            por_integrity=Integrity((second >> 2) & 0x03),
            por_ciphered=bool(second & 0x10),
            por_transport=PorTransport((second >> 5) & 0x01),
            reserved=((first << 8) | second) & _SPI_RESERVED,
        )

    @classmethod
    def from_hex(cls, text: str) -> Spi:
        """``Spi.from_hex("1621")``; spaces allowed. Raises :class:`MalformedPacket`."""
        try:
            raw = bytes.fromhex(text)
        except ValueError as exc:
            raise MalformedPacket(f"SPI {text!r} is not hex") from exc
        return cls.from_bytes(raw)

    def to_bytes(self) -> bytes:
        """The two octets, reserved bits included."""
        first = (
            (self.reserved >> 8)
            | (int(self.counter) << 3)
            | (0x04 if self.ciphered else 0)
            | int(self.integrity)
        )
        second = (
            (self.reserved & 0xFF)
            | (int(self.por_transport) << 5)
            | (0x10 if self.por_ciphered else 0)
            | (int(self.por_integrity) << 2)
            | int(self.por)
        )
        return bytes((first, second))


@lru_cache(maxsize=1024)
def _spi_of(raw: bytes) -> Spi:
    """:meth:`Spi.from_bytes`, memoised: a platform or card sees a handful of SPI values."""
    return Spi.from_bytes(raw)


# -- KIc and KID (TS 102 225 §5.1.2, §5.1.3) --------------------------------------------------


class CipherAlgorithm(Enum):
    """What a KIc octet names (b2-b1 family, b4-b3 mode)."""

    IMPLICIT = "implicit"  # b2b1 00: agreed beforehand; not usable here
    DES_CBC = "DES-CBC"  # 01, 00 (legacy single DES)
    TDES_2KEY_CBC = "3DES-2key-outer-CBC"  # 01, 01
    TDES_3KEY_CBC = "3DES-3key-outer-CBC"  # 01, 10
    DES_ECB = "DES-ECB"  # 01, 11
    AES_CBC = "AES-CBC"  # 10, 00
    PROPRIETARY = "proprietary"  # 11


class ChecksumAlgorithm(Enum):
    """What a KID octet names; its coding depends on whether the SPI asks for RC or CC."""

    IMPLICIT = "implicit"  # b2b1 00 (RC or CC)
    DES_CBC_MAC = "DES-CBC-MAC"  # CC: 01, 00
    TDES_2KEY_MAC = "3DES-2key-CBC-MAC"  # CC: 01, 01
    TDES_3KEY_MAC = "3DES-3key-CBC-MAC"  # CC: 01, 10
    AES_CMAC = "AES-CMAC"  # CC: 10, 00
    CRC16 = "CRC-16"  # RC: 01, 00
    CRC32 = "CRC-32"  # RC: 01, 01
    PROPRIETARY = "proprietary"  # b2b1 11 (RC or CC)


_KIC_DES_MODES = (
    CipherAlgorithm.DES_CBC,
    CipherAlgorithm.TDES_2KEY_CBC,
    CipherAlgorithm.TDES_3KEY_CBC,
    CipherAlgorithm.DES_ECB,
)
_KIC_CODES: dict[CipherAlgorithm, int] = {
    CipherAlgorithm.DES_CBC: 0x01,
    CipherAlgorithm.TDES_2KEY_CBC: 0x05,
    CipherAlgorithm.TDES_3KEY_CBC: 0x09,
    CipherAlgorithm.DES_ECB: 0x0D,
    CipherAlgorithm.AES_CBC: 0x02,
}
_KID_CC_CODES: dict[ChecksumAlgorithm, int] = {
    ChecksumAlgorithm.DES_CBC_MAC: 0x01,
    ChecksumAlgorithm.TDES_2KEY_MAC: 0x05,
    ChecksumAlgorithm.TDES_3KEY_MAC: 0x09,
    ChecksumAlgorithm.AES_CMAC: 0x02,
}
_KID_RC_CODES: dict[ChecksumAlgorithm, int] = {
    ChecksumAlgorithm.CRC16: 0x01,
    ChecksumAlgorithm.CRC32: 0x05,
}


def _check_nibble(name: str, value: int) -> None:
    if not 0 <= value <= 0x0F:
        raise OtaUsageError(f"{name} must be 0..15, got {value}")


@dataclass(frozen=True, slots=True)
class Kic:
    """A KIc octet: ciphering algorithm and key version (b8-b5).

    ``mode_bits`` keeps b4-b3 for the implicit and proprietary codings, whose meaning the
    standard leaves to the parties; it is 0 for the others.
    """

    algorithm: CipherAlgorithm
    key_version: int = 0
    mode_bits: int = 0

    def __post_init__(self) -> None:
        _check_nibble("key version", self.key_version)
        if self.algorithm in (CipherAlgorithm.IMPLICIT, CipherAlgorithm.PROPRIETARY):
            if not 0 <= self.mode_bits <= 3:
                raise OtaUsageError(f"KIc mode bits must be 0..3, got {self.mode_bits}")
        elif self.mode_bits:
            raise OtaUsageError(f"KIc mode bits are implied by {self.algorithm.value}")

    @classmethod
    def from_byte(cls, octet: int) -> Kic:
        """Decode. Raises :class:`UnsupportedAlgorithm` for an RFU coding (AES b4-b3 != 00)."""
        family, mode, version = octet & 0x03, (octet >> 2) & 0x03, octet >> 4
        if family == 0:
            return cls(CipherAlgorithm.IMPLICIT, version, mode)
        if family == 3:
            return cls(CipherAlgorithm.PROPRIETARY, version, mode)
        if family == 1:
            return cls(_KIC_DES_MODES[mode], version)
        if mode == 0:
            return cls(CipherAlgorithm.AES_CBC, version)
        raise UnsupportedAlgorithm(f"KIc {octet:02X}: AES mode {mode:02b} is RFU")

    def to_byte(self) -> int:
        """The KIc octet."""
        low = _KIC_CODES.get(self.algorithm)
        if low is None:
            low = (self.mode_bits << 2) | (0 if self.algorithm is CipherAlgorithm.IMPLICIT else 3)
        return (self.key_version << 4) | low


@dataclass(frozen=True, slots=True)
class Kid:
    """A KID octet: RC or CC algorithm and key version (b8-b5); see :class:`Kic`."""

    algorithm: ChecksumAlgorithm
    key_version: int = 0
    mode_bits: int = 0

    def __post_init__(self) -> None:
        _check_nibble("key version", self.key_version)
        if self.algorithm in (ChecksumAlgorithm.IMPLICIT, ChecksumAlgorithm.PROPRIETARY):
            if not 0 <= self.mode_bits <= 3:
                raise OtaUsageError(f"KID mode bits must be 0..3, got {self.mode_bits}")
        elif self.mode_bits:
            raise OtaUsageError(f"KID mode bits are implied by {self.algorithm.value}")

    @classmethod
    def from_byte(cls, octet: int, integrity: Integrity) -> Kid:
        """Decode for an SPI asking for ``integrity`` (RC or CC; §5.1.3.1 / §5.1.3.2).

        Raises :class:`UnsupportedAlgorithm` for RFU codings, for DS (whose KID coding is
        not standardised) and for NONE (there is no KID to read)."""
        family, mode, version = octet & 0x03, (octet >> 2) & 0x03, octet >> 4
        if integrity not in (Integrity.RC, Integrity.CC):
            raise UnsupportedAlgorithm(f"no KID coding for integrity {integrity.name}")
        if family == 0:
            return cls(ChecksumAlgorithm.IMPLICIT, version, mode)
        if family == 3:
            return cls(ChecksumAlgorithm.PROPRIETARY, version, mode)
        if integrity is Integrity.RC:
            if family == 1 and mode <= 1:
                return cls((ChecksumAlgorithm.CRC16, ChecksumAlgorithm.CRC32)[mode], version)
            raise UnsupportedAlgorithm(f"KID {octet:02X}: RFU coding for an RC")
        if family == 1 and mode <= 2:
            algorithm = (
                ChecksumAlgorithm.DES_CBC_MAC,
                ChecksumAlgorithm.TDES_2KEY_MAC,
                ChecksumAlgorithm.TDES_3KEY_MAC,
            )[mode]
            return cls(algorithm, version)
        if family == 2 and mode == 0:
            return cls(ChecksumAlgorithm.AES_CMAC, version)
        raise UnsupportedAlgorithm(f"KID {octet:02X}: RFU coding for a CC")

    def to_byte(self) -> int:
        """The KID octet."""
        low = _KID_CC_CODES.get(self.algorithm, _KID_RC_CODES.get(self.algorithm))
        if low is None:
            low = (self.mode_bits << 2) | (0 if self.algorithm is ChecksumAlgorithm.IMPLICIT else 3)
        return (self.key_version << 4) | low


# -- keys and the algorithms themselves ---------------------------------------------------------

_KEY_SIZES = frozenset({0, 8, 16, 24, 32})
_Primitive = Cipher[modes.CBC] | Cipher[modes.ECB] | CMAC


@dataclass(frozen=True, slots=True)
class Keys:
    """The card's KIc and KID keys for one key set. Key bytes never appear in a repr.

    Empty bytes mean "no key" (for packets without ciphering or CC). Sizes: DES 8, two-key
    3DES 16, three-key 3DES 24, AES 16/24/32; the algorithm in the packet picks which fits.
    """

    kic: bytes = field(default=b"", repr=False)
    kid: bytes = field(default=b"", repr=False)
    # cipher/CMAC objects built from these keys, per algorithm: building them costs more than
    # using them. They hold nothing the keys do not; never compared, hashed or shown.
    _primitives: dict[CipherAlgorithm | ChecksumAlgorithm, _Primitive] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        for name in ("kic", "kid"):
            key = getattr(self, name)
            if not isinstance(key, bytes):
                raise OtaUsageError(f"{name} key must be bytes, got {type(key).__name__}")
            if len(key) not in _KEY_SIZES:
                raise OtaUsageError(f"{name} key of {len(key)} octets: expected 8, 16, 24 or 32")

    def __repr__(self) -> str:
        return f"Keys(kic=<{len(self.kic)} octets>, kid=<{len(self.kid)} octets>)"

    def __reduce__(self) -> tuple[type[Keys], tuple[bytes, bytes]]:
        return (Keys, (self.kic, self.kid))  # pickle/copy the keys, not the cached objects


@lru_cache(maxsize=1024)
def shared_keys(kic: bytes, kid: bytes) -> Keys:
    """The one :class:`Keys` for this KIc/KID pair among the last 1024 pairs asked for, so that
    whoever handles a card's packets (the receiver of its MO, the platform securing the
    command that answers it, the PoR check) reuses the cipher and CMAC objects built for it
    (about 2 kB per pair, warm). A new key (a rotation) is a new pair; the old one ages out.
    Thread-safe; the memo shows no key (``cache_info`` counts only)."""
    return Keys(kic=kic, kid=kid)


def _need_key(role: str, key: bytes, sizes: tuple[int, ...], what: str) -> None:
    if len(key) not in sizes:
        expected = " or ".join(str(s) for s in sizes)
        raise BadKey(f"{role} key of {len(key)} octets does not fit {what} ({expected} octets)")


def _tdes_key(key: bytes) -> bytes:
    """8 -> K K K (single DES), 16 -> K1 K2 K1, 24 unchanged."""
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    return key


_CIPHER_KEY_SIZES: dict[CipherAlgorithm, tuple[int, ...]] = {
    CipherAlgorithm.DES_CBC: (8,),
    CipherAlgorithm.DES_ECB: (8,),
    CipherAlgorithm.TDES_2KEY_CBC: (16,),
    CipherAlgorithm.TDES_3KEY_CBC: (24,),
    CipherAlgorithm.AES_CBC: (16, 24, 32),
}
_MAC_KEY_SIZES: dict[ChecksumAlgorithm, tuple[int, ...]] = {
    ChecksumAlgorithm.DES_CBC_MAC: (8,),
    ChecksumAlgorithm.TDES_2KEY_MAC: (16,),
    ChecksumAlgorithm.TDES_3KEY_MAC: (24,),
    ChecksumAlgorithm.AES_CMAC: (16, 24, 32),
}


def _kic_entry(kic: int) -> CipherAlgorithm | str:
    try:
        algorithm = Kic.from_byte(kic).algorithm
    except UnsupportedAlgorithm as exc:
        return str(exc)
    if algorithm not in _CIPHER_KEY_SIZES:
        return f"KIc {kic:02X}: {algorithm.value} ciphering not supported"
    return algorithm


# every KIc octet decoded once: the algorithm, or why it cannot be used
_KIC_TABLE: tuple[CipherAlgorithm | str, ...] = tuple(_kic_entry(k) for k in range(256))


def _cipher_algorithm(kic: int) -> CipherAlgorithm:
    entry = _KIC_TABLE[kic]
    if isinstance(entry, str):
        raise UnsupportedAlgorithm(entry)
    return entry


def _block_size(algorithm: CipherAlgorithm) -> int:
    return 16 if algorithm is CipherAlgorithm.AES_CBC else 8


def _cipher(keys: Keys, algorithm: CipherAlgorithm) -> Cipher[modes.CBC] | Cipher[modes.ECB]:
    """The KIc cipher (zero IV), built once per :class:`Keys` and algorithm."""
    cached = keys._primitives.get(algorithm)
    if cached is not None:
        return cached  # type: ignore[return-value]  # stored under a CipherAlgorithm key
    key = keys.kic
    _need_key("KIc", key, _CIPHER_KEY_SIZES[algorithm], algorithm.value)
    cipher: Cipher[modes.CBC] | Cipher[modes.ECB]
    if algorithm is CipherAlgorithm.AES_CBC:
        cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    elif algorithm is CipherAlgorithm.DES_ECB:
        # KIc b4b3 = 11 names DES in ECB mode (§5.1.2): legacy, but it is what the card does
        cipher = Cipher(TripleDES(_tdes_key(key)), modes.ECB())  # noqa: S305
    else:
        cipher = Cipher(TripleDES(_tdes_key(key)), modes.CBC(bytes(8)))
    keys._primitives[algorithm] = cipher
    return cipher


def _encipher(algorithm: CipherAlgorithm, keys: Keys, data: bytes) -> bytes:
    encryptor = _cipher(keys, algorithm).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _decipher(algorithm: CipherAlgorithm, keys: Keys, data: bytes) -> bytes:
    if not data or len(data) % _block_size(algorithm):
        raise CipheringError(
            f"{len(data)} ciphered octets are not whole {_block_size(algorithm)}-octet blocks"
        )
    decryptor = _cipher(keys, algorithm).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _crc16_x25_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_TABLE = _crc16_x25_table()  # reflected 0x1021 (ISO/IEC 13239 FCS-16, "CRC-16/X-25")


def crc16_x25(data: bytes) -> int:
    """CRC-16 of ISO/IEC 13239 (init FFFF, reflected, final complement); check 0x906E."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC16_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def _mac_primitive(keys: Keys, algorithm: ChecksumAlgorithm) -> _Primitive:
    """An unused AES-CMAC (copied per use) or the 3DES/DES-CBC cipher of the KID key."""
    cached = keys._primitives.get(algorithm)
    if cached is not None:
        return cached
    key = keys.kid
    _need_key("KID", key, _MAC_KEY_SIZES[algorithm], algorithm.value)
    primitive: _Primitive
    if algorithm is ChecksumAlgorithm.AES_CMAC:
        primitive = CMAC(algorithms.AES(key))
    else:
        primitive = Cipher(TripleDES(_tdes_key(key)), modes.CBC(bytes(8)))
    keys._primitives[algorithm] = primitive
    return primitive


def _checksum(algorithm: ChecksumAlgorithm, keys: Keys, data: bytes, length: int) -> bytes:
    """The RC/CC of ``data`` (already holding any ciphering padding), ``length`` octets."""
    if algorithm is ChecksumAlgorithm.CRC32:
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm is ChecksumAlgorithm.CRC16:
        return crc16_x25(data).to_bytes(2, "big")
    primitive = _mac_primitive(keys, algorithm)
    if isinstance(primitive, CMAC):
        mac = primitive.copy()
        mac.update(data)
        return mac.finalize()[:length]
    tail = len(data) % 8
    padded = data + bytes(8 - tail) if tail else data
    encryptor = primitive.encryptor()
    return (encryptor.update(padded) + encryptor.finalize())[-8:]


_ChecksumSpec = tuple[ChecksumAlgorithm, tuple[int, ...]]


def _kid_entry(integrity: Integrity, kid: int) -> _ChecksumSpec | str:
    try:
        algorithm = Kid.from_byte(kid, integrity).algorithm
    except UnsupportedAlgorithm as exc:
        return str(exc)
    if algorithm is ChecksumAlgorithm.CRC32:
        return algorithm, (4,)
    if algorithm is ChecksumAlgorithm.CRC16:
        return algorithm, (2,)
    if algorithm is ChecksumAlgorithm.AES_CMAC:
        return algorithm, tuple(range(4, 17))  # SP 800-38B truncation; 8 is the default
    if algorithm in _MAC_KEY_SIZES:
        return algorithm, (8,)
    return f"KID {kid:02X}: {algorithm.value} {integrity.name} not supported"


# every KID octet decoded once for an RC and for a CC: (algorithm, lengths), or why not
_KID_TABLES: dict[Integrity, tuple[_ChecksumSpec | str, ...]] = {
    integrity: tuple(_kid_entry(integrity, k) for k in range(256))
    for integrity in (Integrity.RC, Integrity.CC)
}


def _checksum_spec(integrity: Integrity, kid: int) -> _ChecksumSpec:
    """(algorithm, allowed lengths) for an RC or CC; raises :class:`UnsupportedAlgorithm`."""
    if integrity is Integrity.DS:
        raise UnsupportedAlgorithm("digital signatures (DS) are not supported")
    entry = _KID_TABLES[integrity][kid]
    if isinstance(entry, str):
        raise UnsupportedAlgorithm(entry)
    return entry


def _encode_checksum_length(
    integrity: Integrity, kid: int, cc_length: int | None
) -> tuple[ChecksumAlgorithm | None, int]:
    if integrity is Integrity.NONE:
        if cc_length:
            raise OtaUsageError("cc_length given but the SPI asks for no RC/CC/DS")
        return None, 0
    algorithm, lengths = _checksum_spec(integrity, kid)
    length = lengths[0] if algorithm is not ChecksumAlgorithm.AES_CMAC else 8
    if cc_length is not None:
        if cc_length not in lengths:
            raise OtaUsageError(f"{algorithm.value} cannot give {cc_length} octets: {lengths}")
        length = cc_length
    return algorithm, length


def _decode_checksum_algorithm(
    integrity: Integrity, kid: int, length: int, what: str
) -> ChecksumAlgorithm | None:
    if integrity is Integrity.NONE:
        if length:
            raise MalformedPacket(f"{what} has {length} RC/CC/DS octets but the SPI asks for none")
        return None
    algorithm, lengths = _checksum_spec(integrity, kid)
    if length not in lengths:
        raise MalformedPacket(f"{what}: {length} octets cannot be a {algorithm.value} value")
    return algorithm


def _counter_bytes(counter: int) -> bytes:
    if not 0 <= counter <= MAX_COUNTER:
        raise OtaUsageError(f"counter {counter} out of range 0..2**40-1")
    return counter.to_bytes(5, "big")


def _check_octet(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise OtaUsageError(f"{name} must be 0..255, got {value}")


def _check_tar(tar: bytes) -> None:
    if len(tar) != 3:
        raise OtaUsageError(f"TAR is 3 octets, got {len(tar)}")


# -- command packets ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandHeader:
    """What can be read of a command packet without keys (TS 102 225 §5.1).

    ``counter`` is the CNTR when the packet is not ciphered, None when it is (it then sits in
    the ciphertext). ``checksum_length`` is the RC/CC/DS length implied by CHL.
    """

    cpl: int
    chl: int
    spi: Spi
    kic: int
    kid: int
    tar: bytes
    counter: int | None

    @property
    def checksum_length(self) -> int:
        """CHL minus the 13 fixed header octets."""
        return self.chl - COMMAND_HEADER_MIN


@dataclass(frozen=True, slots=True)
class CommandPacket:
    """A verified, deciphered command packet; ``data`` is the secured data without padding."""

    spi: Spi
    kic: int
    kid: int
    tar: bytes
    counter: int
    pcntr: int
    data: bytes
    header: CommandHeader


def encode_command(
    *,
    spi: Spi,
    kic: int,
    kid: int,
    tar: bytes,
    counter: int,
    data: bytes,
    keys: Keys,
    cc_length: int | None = None,
) -> bytes:
    """Build a command packet, CPL to the end (what follows the UDH in an SMS).

    Secures ``data`` as ``spi`` asks with the KIc/KID algorithms and ``keys``. ``cc_length``
    only applies to AES-CMAC (4..16, default 8). Raises :class:`OtaUsageError` for bad
    arguments, :class:`UnsupportedAlgorithm` / :class:`BadKey` for algorithms or keys that
    cannot do what the SPI asks.
    """
    _check_octet("KIc", kic)
    _check_octet("KID", kid)
    _check_tar(tar)
    cntr = _counter_bytes(counter)
    algorithm, sig_len = _encode_checksum_length(spi.integrity, kid, cc_length)
    cipher = _cipher_algorithm(kic) if spi.ciphered else None
    pad = (-(6 + sig_len + len(data))) % _block_size(cipher) if cipher else 0
    chl = COMMAND_HEADER_MIN + sig_len
    cpl = 1 + chl + len(data) + pad
    if cpl > _MAX_LENGTH:
        raise OtaUsageError(f"command packet of {cpl} octets exceeds CPL 65535")
    clear = cpl.to_bytes(2, "big") + bytes((chl,)) + spi.to_bytes() + bytes((kic, kid)) + tar
    counter_part = cntr + bytes((pad,))
    body = data + bytes(pad) if pad else data
    sig = _checksum(algorithm, keys, clear + counter_part + body, sig_len) if algorithm else b""
    secured = counter_part + sig + body
    if cipher is not None:
        secured = _encipher(cipher, keys, secured)
    return clear + secured


def decode_command_header(packet: bytes) -> CommandHeader:
    """Read CPL, CHL, SPI, KIc, KID, TAR (and CNTR if not ciphered), without crypto, so the
    receiver can find the TAR's keys first. Raises :class:`MalformedPacket`."""
    if len(packet) < 2 + 1 + COMMAND_HEADER_MIN:
        raise MalformedPacket(f"command packet of {len(packet)} octets is shorter than 16")
    cpl = int.from_bytes(packet[:2], "big")
    if cpl != len(packet) - 2:
        raise MalformedPacket(f"CPL {cpl} but {len(packet) - 2} octets follow it")
    chl = packet[2]
    if chl < COMMAND_HEADER_MIN:
        raise MalformedPacket(f"CHL {chl} is below the 13 fixed header octets")
    if 3 + chl > len(packet):
        raise MalformedPacket(f"CHL {chl} runs past the {len(packet)}-octet packet")
    spi = _spi_of(bytes(packet[3:5]))
    counter = None if spi.ciphered else int.from_bytes(packet[10:15], "big")
    return CommandHeader(cpl, chl, spi, packet[5], packet[6], bytes(packet[7:10]), counter)


def _strip_padding(body: bytes, pcntr: int, ciphered: bool, block: int, counter: int) -> bytes:
    if not ciphered:
        if pcntr:
            raise MalformedPacket(f"PCNTR {pcntr} without ciphering", counter=counter)
        return body
    if pcntr >= block or pcntr > len(body):
        raise CipheringError(f"PCNTR {pcntr} impossible for the ciphered data", counter=counter)
    return body[: len(body) - pcntr]


def decode_command(packet: bytes, keys: Keys) -> CommandPacket:
    """Decipher and verify a command packet (CPL to the end).

    Raises :class:`MalformedPacket`, :class:`UnsupportedAlgorithm`, :class:`BadKey`,
    :class:`CipheringError` or :class:`BadChecksum` (all :class:`OtaError`). The counter is
    returned, not checked: see :func:`check_counter`.
    """
    header = decode_command_header(packet)
    spi = header.spi
    sig_len = header.checksum_length
    algorithm = _decode_checksum_algorithm(spi.integrity, header.kid, sig_len, "command")
    secured = packet[_CLEAR_COMMAND:]
    block = 1
    if spi.ciphered:
        cipher = _cipher_algorithm(header.kic)
        block = _block_size(cipher)
        secured = _decipher(cipher, keys, secured)
    if len(secured) < 6 + sig_len:
        raise MalformedPacket(f"CHL {header.chl} runs past the secured data")
    counter = int.from_bytes(secured[:5], "big")
    pcntr = secured[5]
    body = secured[6 + sig_len :]
    if algorithm is not None:
        expected = _checksum(algorithm, keys, packet[:_CLEAR_COMMAND] + secured[:6] + body, sig_len)
        if not hmac.compare_digest(expected, secured[6 : 6 + sig_len]):
            raise BadChecksum(f"command {spi.integrity.name} does not verify", counter=counter)
    data = _strip_padding(body, pcntr, spi.ciphered, block, counter)
    return CommandPacket(spi, header.kic, header.kid, header.tar, counter, pcntr, data, header)


# -- response packets -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponsePacket:
    """A verified, deciphered response packet (PoR); ``data`` without padding."""

    tar: bytes
    counter: int
    pcntr: int
    status: ResponseStatus
    data: bytes


def encode_response(
    *,
    spi: Spi,
    kic: int,
    kid: int,
    tar: bytes,
    counter: int,
    status: ResponseStatus,
    data: bytes,
    keys: Keys,
    cc_length: int | None = None,
) -> bytes:
    """Build a response packet, RPL to the end, secured as the command's ``spi`` asks for the
    PoR (``por_integrity``, ``por_ciphered``) with the command's KIc/KID algorithms and keys.
    ``cc_length`` as in :func:`encode_command`."""
    _check_octet("KIc", kic)
    _check_octet("KID", kid)
    _check_tar(tar)
    cntr = _counter_bytes(counter)
    try:
        status = ResponseStatus(status)
    except ValueError:
        raise OtaUsageError(f"response status {status!r} is not in table 5") from None
    algorithm, sig_len = _encode_checksum_length(spi.por_integrity, kid, cc_length)
    cipher = _cipher_algorithm(kic) if spi.por_ciphered else None
    pad = (-(7 + sig_len + len(data))) % _block_size(cipher) if cipher else 0
    rhl = RESPONSE_HEADER_MIN + sig_len
    rpl = 1 + rhl + len(data) + pad
    if rpl > _MAX_LENGTH:
        raise OtaUsageError(f"response packet of {rpl} octets exceeds RPL 65535")
    clear = rpl.to_bytes(2, "big") + bytes((rhl,)) + tar
    counter_part = cntr + bytes((pad, status))
    body = data + bytes(pad) if pad else data
    sig = b""
    if algorithm is not None:
        sig = _checksum(algorithm, keys, SMS_RESPONSE_UDH + clear + counter_part + body, sig_len)
    secured = counter_part + sig + body
    if cipher is not None:
        secured = _encipher(cipher, keys, secured)
    return clear + secured


def decode_response(packet: bytes, *, spi: Spi, kic: int, kid: int, keys: Keys) -> ResponsePacket:
    """Decipher and verify a response packet (RPL to the end, UDH removed) answering a
    command sent with ``spi``, ``kic`` and ``kid``. Raises :class:`OtaError` subclasses."""
    if len(packet) < _CLEAR_RESPONSE + 1:
        raise MalformedPacket(f"response packet of {len(packet)} octets is too short")
    rpl = int.from_bytes(packet[:2], "big")
    if rpl != len(packet) - 2:
        raise MalformedPacket(f"RPL {rpl} but {len(packet) - 2} octets follow it")
    rhl = packet[2]
    if rhl < RESPONSE_HEADER_MIN:
        raise MalformedPacket(f"RHL {rhl} is below the 10 fixed header octets")
    sig_len = rhl - RESPONSE_HEADER_MIN
    algorithm = _decode_checksum_algorithm(spi.por_integrity, kid, sig_len, "response")
    secured = packet[_CLEAR_RESPONSE:]
    block = 1
    if spi.por_ciphered:
        cipher = _cipher_algorithm(kic)
        block = _block_size(cipher)
        secured = _decipher(cipher, keys, secured)
    if len(secured) < 7 + sig_len:
        raise MalformedPacket(f"RHL {rhl} runs past the response data")
    counter = int.from_bytes(secured[:5], "big")
    pcntr = secured[5]
    body = secured[7 + sig_len :]
    if algorithm is not None:
        signed = SMS_RESPONSE_UDH + packet[:_CLEAR_RESPONSE] + secured[:7] + body
        expected = _checksum(algorithm, keys, signed, sig_len)
        if not hmac.compare_digest(expected, secured[7 : 7 + sig_len]):
            raise BadChecksum(f"response {spi.por_integrity.name} does not verify", counter=counter)
    try:
        status = ResponseStatus(secured[6])
    except ValueError:
        raise MalformedPacket(f"response status {secured[6]:02X} is RFU", counter=counter) from None
    data = _strip_padding(body, pcntr, spi.por_ciphered, block, counter)
    return ResponsePacket(bytes(packet[3:6]), counter, pcntr, status, data)


# -- the receiving side: counters, PoR for errors ------------------------------------------------


def check_counter(
    mode: CounterMode, received: int, last: int | None, *, max_window: int | None = None
) -> None:
    """Check a received CNTR against ``last``, the value the receiver holds (None: none yet).

    * NONE, AVAILABLE_NO_CHECK: nothing is checked;
    * otherwise :class:`CounterBlocked` when ``last`` is 2**40-1 (it cannot increase);
    * HIGHER: ``received > last`` else :class:`CounterTooLow`; with ``max_window``, a jump
      above ``last + max_window`` is :class:`CounterTooHigh`;
    * ONE_HIGHER: ``received == last + 1`` (or up to ``last + max_window`` when the card
      chooses to allow a window) else :class:`CounterTooLow` / :class:`CounterTooHigh`.

    The errors carry ``counter=received`` for the PoR.
    """
    if not 0 <= received <= MAX_COUNTER:
        raise MalformedPacket(f"counter {received} out of range")
    if max_window is not None and max_window < 1:
        raise OtaUsageError(f"max_window must be at least 1, got {max_window}")
    if mode in (CounterMode.NONE, CounterMode.AVAILABLE_NO_CHECK) or last is None:
        return
    if last >= MAX_COUNTER:
        raise CounterBlocked("the counter has reached 2**40-1", counter=received)
    if received <= last:
        raise CounterTooLow(f"counter {received} is not above {last}", counter=received)
    window = max_window if max_window is not None else (1 if mode is CounterMode.ONE_HIGHER else 0)
    if window and received - last > window:
        raise CounterTooHigh(
            f"counter {received} is more than {window} above {last}", counter=received
        )


def por_wanted(spi: Spi, status: ResponseStatus) -> bool:
    """Whether the SPI asks the card for a PoR with this status (§5.1.1 second octet)."""
    if spi.por is PorRequest.ALWAYS:
        return True
    return spi.por is PorRequest.ON_ERROR and status is not ResponseStatus.POR_OK


_UNSECURED_STATUSES = frozenset(
    {ResponseStatus.UNIDENTIFIED_SECURITY_ERROR, ResponseStatus.TAR_UNKNOWN}
)


def response_for_error(error: OtaError, header: CommandHeader, keys: Keys | None) -> bytes:
    """The response packet (RPL to the end) a card sends for ``error`` on the command whose
    header is ``header``: status ``error.status``, no additional data, the command's TAR and
    counter (``error.counter``, else the clear CNTR, else 0).

    It is secured as the SPI asks for the PoR when the keys are known; with ``keys`` None,
    for status 06 (the header could not be interpreted) and 09 (unknown TAR), and when the
    PoR's own algorithm is unusable, it is sent unciphered and without RC/CC/DS (§5.1.2).
    """
    counter = error.counter if error.counter is not None else (header.counter or 0)

    def build(spi: Spi, with_keys: Keys) -> bytes:
        return encode_response(
            spi=spi,
            kic=header.kic,
            kid=header.kid,
            tar=header.tar,
            counter=counter,
            status=error.status,
            data=b"",
            keys=with_keys,
        )

    if keys is not None and error.status not in _UNSECURED_STATUSES:
        try:
            return build(header.spi, keys)
        except OtaError:
            pass  # the PoR's own algorithm or key is unusable: fall back to a clear PoR
    return build(replace(header.spi, por_integrity=Integrity.NONE, por_ciphered=False), Keys())
