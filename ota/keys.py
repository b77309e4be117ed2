"""Per-card keys, "one card, one key" (一卡一密): diversification of master keys by ICCID.

Sans-IO: bytes in, bytes out, no store, no clock. The master keys live behind
:mod:`ota.keystore`; this module turns one master key and one card into that card's key.

Two methods, chosen by the master key's algorithm:

* **2-key triple DES, the PBOC method** (JR/T 0025, as summarised in ``PBOC.md`` "Keys: one
  card, one key"; the same computation as EMV 4.3 Book 2 Annex A1.4.1, "Option A"):
  ``D`` = the rightmost 16 digits of the ICCID as printed, packed BCD in print order (no
  nibble swap, 8 bytes); ``DK = 3DES-ECB(MK, D) || 3DES-ECB(MK, NOT D)``. No parity
  adjustment: DES ignores the parity bits, so the card computes the same with either form,
  and the KCVs agree.
* **AES: NIST SP 800-108 KDF in counter mode with AES-CMAC as the PRF** (SP 800-108 §5.1),
  computed by ``cryptography``'s ``KBKDFCMAC``: an 8-bit counter ``[i]`` placed before the
  fixed input data ``label || 00 || context || [L]_16``, where ``label`` is the key's purpose
  (``b"KIc"``, ``b"KID"``, ``b"DLK"``, ``b"DPK"``, ``b"DTK"``), ``context`` the ICCID digits in
  ASCII (all of them, check digit included) and ``L`` the card key length in bits (the master
  key's length: AES-128 -> 128, AES-256 -> 256), as a 16-bit big-endian integer.

ICCIDs are taken as printed: decimal digits, 16 to 20 of them, optionally followed by one
``F`` filler (the filler that pads a 19-digit ICCID to 10 bytes in EF_ICCID) which is removed.
The last digit (the Luhn check digit of ITU-T E.118, where the operator's format has one) is
part of the ICCID for every purpose here: it is neither verified nor stripped, in both methods.

Key check values (GlobalPlatform Card Specification, Annex B.6 as cited by pySim's
``pySim/global_platform/__init__.py``): 3DES, the first 3 bytes of 3DES-ECB(key, ``00``*8); AES,
the first 3 bytes of AES-ECB(key, ``01``*16).

The wallet's PBOC keys (DLK load, DPK purchase, DTK TAC) are always 2-key triple DES; the OTA
keys (KIc ciphering, KID checksum, ETSI TS 102 225 §5.1.2-5.1.3) are 3DES or AES.

No key material ever appears in a repr, a str or an exception message: keys carry
``field(repr=False)`` and errors name the key, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

#: Length of a 2-key triple-DES key (K1 || K2), the only 3DES master and card key size here.
TDES_KEY_LEN: Final = 16
#: AES key lengths accepted for masters (card keys have the master's length).
AES_KEY_LENS: Final = (16, 24, 32)
#: Bytes of a key check value.
KCV_LEN: Final = 3

_DIGITS: Final = re.compile(r"[0-9]{16,20}")
_HEX: Final = re.compile(r"[0-9A-Fa-f]*")


class KeysError(ValueError):
    """Bad input to a key computation; ``str()`` is one line and never holds key material."""


class IccidError(KeysError):
    """An ICCID that is not 16-20 decimal digits (plus an optional trailing ``F`` filler)."""


class KeyFormatError(KeysError):
    """Key material of the wrong length, encoding or algorithm for its name."""


class KeyAlgorithm(StrEnum):
    """Algorithm of a master key, and so of the card keys diversified from it."""

    TDES = "3des"  # 2-key triple DES, PBOC diversification
    AES = "aes"  # AES, SP 800-108 KDF in counter mode with CMAC


class KeyName(StrEnum):
    """The keys of a card: OTA (TS 102 225) and the wallet's PBOC e-purse keys (JR/T 0025)."""

    KIC = "kic"  # TS 102 225 §5.1.2: ciphering key of secured packets
    KID = "kid"  # TS 102 225 §5.1.3: cryptographic checksum key
    DLK = "dlk"  # PBOC load (圈存) key
    DPK = "dpk"  # PBOC purchase (消费) key
    DTK = "dtk"  # PBOC TAC key

    @property
    def label(self) -> bytes:
        """The SP 800-108 label (purpose) of this key in the AES method."""
        return _LABELS[self]

    @property
    def wallet(self) -> bool:
        """True for the PBOC keys, which are always 2-key triple DES."""
        return self in WALLET_NAMES


_LABELS: Final = {
    KeyName.KIC: b"KIc",
    KeyName.KID: b"KID",
    KeyName.DLK: b"DLK",
    KeyName.DPK: b"DPK",
    KeyName.DTK: b"DTK",
}

OTA_NAMES: Final = (KeyName.KIC, KeyName.KID)
WALLET_NAMES: Final = (KeyName.DLK, KeyName.DPK, KeyName.DTK)
ALL_NAMES: Final = OTA_NAMES + WALLET_NAMES


def normalize_iccid(text: str) -> str:
    """The ICCID's digits: ``text`` without one trailing ``F``/``f`` filler, checked to be
    16-20 decimal digits. The check digit stays; nothing is swapped."""
    digits = text[:-1] if text[-1:] in ("F", "f") else text
    if not _DIGITS.fullmatch(digits):
        shown = text if len(text) <= 24 and text.isprintable() else f"{text[:24]!r}..."
        raise IccidError(f"bad ICCID {shown!r}: expected 16-20 decimal digits (optional F filler)")
    return digits


def pboc_diversifier(iccid: str) -> bytes:
    """``D`` of the PBOC method: the rightmost 16 ICCID digits, packed BCD in print order."""
    return bytes.fromhex(normalize_iccid(iccid)[-16:])


def tdes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """2-key triple-DES EDE in ECB mode of whole 8-byte blocks (K1 || K2 || K1 for
    ``cryptography``). Also what the PBOC session keys (SESLK, SESPK) are computed with."""
    if len(key) != TDES_KEY_LEN:
        raise KeyFormatError(f"a 2-key 3DES key is {TDES_KEY_LEN} bytes, got {len(key)}")
    if not data or len(data) % 8:
        raise KeyFormatError(f"3DES-ECB needs whole 8-byte blocks, got {len(data)} bytes")
    encryptor = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()  # noqa: S305 - ECB is the method
    return encryptor.update(data) + encryptor.finalize()


def _not(data: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in data)


def diversify_3des(master: bytes, iccid: str) -> bytes:
    """The card's 16-byte key: ``3DES(MK, D) || 3DES(MK, NOT D)`` (PBOC method)."""
    d = pboc_diversifier(iccid)
    return tdes_ecb_encrypt(master, d + _not(d))


def sp800_108_cmac_aes(key: bytes, fixed_input: bytes, length: int) -> bytes:
    """NIST SP 800-108 KDF in counter mode, PRF = AES-CMAC, 8-bit counter before the fixed
    input data, ``length`` bytes out (``cryptography``'s KBKDFCMAC; nothing hand-rolled)."""
    if len(key) not in AES_KEY_LENS:
        raise KeyFormatError(f"an AES key is 16, 24 or 32 bytes, got {len(key)}")
    if not 1 <= length <= 255 * 16:
        raise KeyFormatError(f"KDF output length must be 1-4080 bytes, got {length}")
    kdf = KBKDFCMAC(
        algorithms.AES,
        Mode.CounterMode,
        length,
        1,  # r = 8 bits
        None,  # [L] is part of the fixed input data we pass
        CounterLocation.BeforeFixed,
        None,
        None,
        fixed_input,
    )
    return kdf.derive(key)


def aes_fixed_input(name: KeyName, iccid: str, length: int) -> bytes:
    """SP 800-108 fixed input data of the AES method: ``label || 00 || ICCID (ASCII digits) ||
    [L]_16`` with ``L = 8 * length``."""
    return (
        KeyName(name).label
        + b"\x00"
        + normalize_iccid(iccid).encode("ascii")
        + (8 * length).to_bytes(2, "big")
    )


def diversify_aes(master: bytes, name: KeyName, iccid: str) -> bytes:
    """The card's AES key (the master's length) for key ``name`` (SP 800-108 method)."""
    if len(master) not in AES_KEY_LENS:
        raise KeyFormatError(f"an AES key is 16, 24 or 32 bytes, got {len(master)}")
    return sp800_108_cmac_aes(master, aes_fixed_input(name, iccid, len(master)), len(master))


def diversify(algorithm: KeyAlgorithm, master: bytes, name: KeyName, iccid: str) -> bytes:
    """The card key diversified from ``master`` by the method of ``algorithm``."""
    if KeyAlgorithm(algorithm) is KeyAlgorithm.TDES:
        return diversify_3des(master, iccid)
    return diversify_aes(master, name, iccid)


def kcv(algorithm: KeyAlgorithm, key: bytes) -> bytes:
    """Key check value (GlobalPlatform): 3 bytes of 3DES(key, 00*8) or AES(key, 01*16)."""
    if KeyAlgorithm(algorithm) is KeyAlgorithm.TDES:
        return tdes_ecb_encrypt(key, bytes(8))[:KCV_LEN]
    if len(key) not in AES_KEY_LENS:
        raise KeyFormatError(f"an AES key is 16, 24 or 32 bytes, got {len(key)}")
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - KCV is ECB
    return (encryptor.update(b"\x01" * 16) + encryptor.finalize())[:KCV_LEN]


def check_key(algorithm: KeyAlgorithm, name: KeyName, material: bytes) -> None:
    """Refuse material unfit for a master key of this algorithm and name (length; the wallet
    keys are 2-key 3DES; a 3DES key whose halves are equal is single DES)."""
    algorithm, name = KeyAlgorithm(algorithm), KeyName(name)
    if name.wallet and algorithm is not KeyAlgorithm.TDES:
        raise KeyFormatError(f"{name} is a PBOC key: always 2-key 3DES, not {algorithm}")
    if algorithm is KeyAlgorithm.TDES:
        if len(material) != TDES_KEY_LEN:
            raise KeyFormatError(
                f"{name}: a 2-key 3DES key is {TDES_KEY_LEN} bytes, got {len(material)}"
            )
        if material[:8] == material[8:]:
            raise KeyFormatError(f"{name}: the two 3DES halves are equal (that is single DES)")
    elif len(material) not in AES_KEY_LENS:
        raise KeyFormatError(f"{name}: an AES key is 16, 24 or 32 bytes, got {len(material)}")


def parse_key_hex(text: str) -> bytes:
    """Key bytes from hex (whitespace ignored); the error never repeats the input."""
    compact = "".join(text.split())
    if not compact or len(compact) % 2 or not _HEX.fullmatch(compact):
        raise KeyFormatError(
            f"key is not an even number of hex digits ({len(compact)} characters read)"
        )
    return bytes.fromhex(compact)


def kcv_hex(value: bytes) -> str:
    """A KCV as printed: upper-case hex."""
    return value.hex().upper()


@dataclass(frozen=True, slots=True)
class CardKey:
    """One diversified card key; its repr shows name, version, algorithm and KCV only."""

    name: KeyName
    algorithm: KeyAlgorithm
    version: int
    value: bytes = field(repr=False)
    kcv: bytes = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"CardKey({self.name.value} v{self.version} {self.algorithm.value}-"
            f"{8 * len(self.value)} KCV {kcv_hex(self.kcv)})"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class OtaKeyPair:
    """The (KIc, KID) key bytes a secured packet is built with; unpacks as ``kic, kid``."""

    kic: bytes = field(repr=False)
    kid: bytes = field(repr=False)

    def __iter__(self) -> Iterator[bytes]:
        return iter((self.kic, self.kid))

    def __repr__(self) -> str:
        return "OtaKeyPair(kic=***, kid=***)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class CardKeys:
    """All keys of one card in one key set version ("one card, one key")."""

    iccid: str
    keyset: str
    version: int
    keys: tuple[CardKey, ...]

    def __repr__(self) -> str:
        inner = ", ".join(repr(k) for k in self.keys)
        return f"CardKeys(iccid={self.iccid}, keyset={self.keyset} v{self.version}: {inner})"

    __str__ = __repr__

    @property
    def names(self) -> tuple[KeyName, ...]:
        """Names of the keys present."""
        return tuple(k.name for k in self.keys)

    def get(self, name: KeyName | str) -> CardKey:
        """The card key ``name``; :class:`KeysError` if this key set has none."""
        for key in self.keys:
            if key.name == name:
                return key
        raise KeysError(f"key set {self.keyset} v{self.version} has no {name} key")

    def key(self, name: KeyName | str) -> bytes:
        """The bytes of card key ``name``."""
        return self.get(name).value

    def ota_keys(self) -> OtaKeyPair:
        """The (KIc, KID) pair for the secured-packet codec (``Keys(*card.ota_keys())``)."""
        return OtaKeyPair(self.key(KeyName.KIC), self.key(KeyName.KID))


def card_key(name: KeyName, algorithm: KeyAlgorithm, version: int, value: bytes) -> CardKey:
    """A :class:`CardKey` with its KCV computed."""
    algorithm = KeyAlgorithm(algorithm)
    return CardKey(KeyName(name), algorithm, version, value, kcv(algorithm, value))
