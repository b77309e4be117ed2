"""The wallet MO action format: what the RF-SIM's wallet applet sends the platform.

Each action the subscriber takes in the STK menu (top-up, balance, last 10) and each
calibration SMS the card sends is one **secured packet** (ETSI TS 102 225 command packet,
3GPP TS 31.115 SMS coding, UDH IEI 0x70) addressed to the platform's TAR
(:data:`PLATFORM_TAR`), with a cryptographic checksum, ciphering and a counter that must be
higher (SPI ``16 00``: no PoR; the platform answers by SMS). The platform checks it with
:class:`ota.receiver.SecuredMoReceiver`. Its secured data is this format:

``01`` (format version) followed by simple TLVs (tag 1 octet, length 1 octet), each tag at
most once, in any order:

===== ======================= ====== =================================================
tag   field                   octets used by
===== ======================= ====== =================================================
80    action                  1      all: 01 top-up, 02 balance, 03 last 10, 04 calibration
81    amount in fen           4      top-up (big-endian, > 0)
82    PIN block               8      top-up: ISO 9564-1 format 2 (``2L`` + digits + ``F``s)
83    INITIALIZE FOR LOAD     16     top-up: the purse's response (balance, online counter,
                                     key version, algorithm, random, MAC1; JR/T 0025)
84    terminal id             6      top-up: the terminal id the load was initialised with
85    language                1      optional: 00 Chinese (default), 01 English
86    online counter          2      optional: the purse's online counter now (lets the
                                     platform settle a load left in doubt)
87    load proof              10     optional: counter (2) then MAC || TAC (8) of the last
                                     load, from GET TRANSACTION PROVE
88    IMEI                    8      calibration: 15 digits + ``F``, BCD, low nibble first
89    ICCID                   10     calibration: as in EF ICCID (TS 102 221 §13.2)
8A    applet version          2      calibration
8B    calibration profile     0-32   calibration: the card's current calibration file
===== ======================= ====== =================================================

The PIN travels only inside the ciphered secured data; the platform keeps PINs as keyed
hashes. Nothing here prints a PIN: reprs hide the PIN block. Test vectors: docs/protocol.md.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "FORMAT_VERSION",
    "PLATFORM_TAR",
    "WALLET_TAR",
    "Action",
    "Balance",
    "Calibration",
    "Language",
    "Last10",
    "LoadProof",
    "TopUp",
    "WalletMo",
    "WalletMoError",
    "decode",
    "encode",
    "pin_block",
    "pin_from_block",
]

FORMAT_VERSION: Final = 0x01
#: The platform's TAR for wallet MO (an operator-chosen value, ASCII "WLT").
PLATFORM_TAR: Final = b"WLT"
#: The wallet applet's TAR on the card, for the platform's OTA commands to it (CREDIT FOR
#: LOAD; ASCII "WLA").
WALLET_TAR: Final = b"WLA"


class WalletMoError(ValueError):
    """Secured data that is not a well-formed wallet action (the message never shows a PIN)."""


class Action(enum.IntEnum):
    """Tag 80."""

    TOPUP = 0x01
    BALANCE = 0x02
    LAST10 = 0x03
    CALIBRATION = 0x04


class Language(enum.IntEnum):
    """Tag 85: the language of the replies."""

    ZH = 0x00
    EN = 0x01


class _Tag(enum.IntEnum):
    ACTION = 0x80
    AMOUNT = 0x81
    PIN_BLOCK = 0x82
    LOAD_INIT = 0x83
    TERMINAL = 0x84
    LANGUAGE = 0x85
    ONLINE_COUNTER = 0x86
    LOAD_PROOF = 0x87
    IMEI = 0x88
    ICCID = 0x89
    APPLET_VERSION = 0x8A
    PROFILE = 0x8B


_SIZES: Final[dict[_Tag, tuple[int, int]]] = {
    _Tag.ACTION: (1, 1),
    _Tag.AMOUNT: (4, 4),
    _Tag.PIN_BLOCK: (8, 8),
    _Tag.LOAD_INIT: (16, 16),
    _Tag.TERMINAL: (6, 6),
    _Tag.LANGUAGE: (1, 1),
    _Tag.ONLINE_COUNTER: (2, 2),
    _Tag.LOAD_PROOF: (10, 10),
    _Tag.IMEI: (8, 8),
    _Tag.ICCID: (10, 10),
    _Tag.APPLET_VERSION: (2, 2),
    _Tag.PROFILE: (0, 32),
}


#: Look-up tables of the decoder (a dict look-up instead of an enum call per field).
_TAG_OF: Final[dict[int, _Tag]] = {int(tag): tag for tag in _Tag}
_ACTION_OF: Final[dict[int, Action]] = {int(action): action for action in Action}
_LANGUAGE_OF: Final[dict[int, Language]] = {int(language): language for language in Language}
#: The tags each action may carry.
_COMMON_TAGS: Final = frozenset({_Tag.ACTION, _Tag.LANGUAGE, _Tag.ONLINE_COUNTER, _Tag.LOAD_PROOF})
_ALLOWED: Final[dict[Action, frozenset[_Tag]]] = {
    Action.TOPUP: _COMMON_TAGS | {_Tag.AMOUNT, _Tag.PIN_BLOCK, _Tag.LOAD_INIT, _Tag.TERMINAL},
    Action.CALIBRATION: _COMMON_TAGS | {_Tag.IMEI, _Tag.ICCID, _Tag.APPLET_VERSION, _Tag.PROFILE},
    Action.BALANCE: _COMMON_TAGS,
    Action.LAST10: _COMMON_TAGS,
}


def pin_block(pin: str) -> bytes:
    """ISO 9564-1 format 2 PIN block: ``2``, the length, the digits, ``F`` padding."""
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise WalletMoError("a PIN is 4 to 12 digits")
    digits = f"2{len(pin):X}{pin}".ljust(16, "F")
    return bytes.fromhex(digits)


def pin_from_block(block: bytes) -> str:
    """The PIN in a format 2 block; :class:`WalletMoError` if malformed."""
    text = block.hex().upper()
    if len(block) != 8 or text[0] != "2":
        raise WalletMoError("not an ISO 9564-1 format 2 PIN block")
    n = int(text[1], 16)
    pin, rest = text[2 : 2 + n], text[2 + n :]
    if not 4 <= n <= 12 or not pin.isdigit() or rest != "F" * len(rest):
        raise WalletMoError("malformed PIN block")
    return pin


def _bcd_swapped(digits: str, size: int) -> bytes:
    padded = digits.ljust(2 * size, "F")
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, 2 * size, 2))


def _digits_swapped(data: bytes, what: str) -> str:
    out: list[str] = []
    for octet in data:
        for nibble in (octet & 0x0F, octet >> 4):
            if nibble == 0xF:
                return "".join(out)
            if nibble > 9:
                raise WalletMoError(f"{what} is not BCD")
            out.append(str(nibble))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class LoadProof:
    """Tag 87: what GET TRANSACTION PROVE returned for the load with this online counter."""

    counter: int
    mac: bytes
    tac: bytes


@dataclass(frozen=True, slots=True)
class _Common:
    language: Language = Language.ZH
    online_counter: int | None = None
    load_proof: LoadProof | None = None


@dataclass(frozen=True, slots=True)
class TopUp(_Common):
    """充值: load ``amount`` fen from the cash account onto the card."""

    amount: int = 0
    pin_block: bytes = field(default=b"", repr=False)
    load_init: bytes = b""
    terminal_id: bytes = b""

    @property
    def pin(self) -> str:
        """The PIN carried (never logged)."""
        return pin_from_block(self.pin_block)


@dataclass(frozen=True, slots=True)
class Balance(_Common):
    """余额查询."""


@dataclass(frozen=True, slots=True)
class Last10(_Common):
    """最近10笔交易."""


@dataclass(frozen=True, slots=True)
class Calibration(_Common):
    """The automatic calibration SMS (first use, and every IMEI change)."""

    iccid: str = ""
    imei: str = ""
    applet_version: int = 0
    profile: bytes = b""


WalletMo = TopUp | Balance | Last10 | Calibration


_KIND_OF: Final[dict[type, Action]] = {
    TopUp: Action.TOPUP,
    Balance: Action.BALANCE,
    Last10: Action.LAST10,
}


def _tlv(tag: _Tag, value: bytes) -> bytes:
    return bytes((tag, len(value))) + value


def encode(action: WalletMo) -> bytes:
    """The secured data of a wallet action."""
    parts = [bytes((FORMAT_VERSION,))]
    kind = _KIND_OF.get(type(action), Action.CALIBRATION)
    parts.append(_tlv(_Tag.ACTION, bytes((kind,))))
    if isinstance(action, TopUp):
        if not 0 < action.amount < 1 << 32:
            raise WalletMoError("amount must be 1 .. 2**32-1 fen")
        parts += [
            _tlv(_Tag.AMOUNT, action.amount.to_bytes(4, "big")),
            _tlv(_Tag.PIN_BLOCK, action.pin_block),
            _tlv(_Tag.LOAD_INIT, action.load_init),
            _tlv(_Tag.TERMINAL, action.terminal_id),
        ]
    if isinstance(action, Calibration):
        parts += [
            _tlv(_Tag.ICCID, _bcd_swapped(action.iccid, 10)),
            _tlv(_Tag.IMEI, _bcd_swapped(action.imei, 8)),
            _tlv(_Tag.APPLET_VERSION, action.applet_version.to_bytes(2, "big")),
            _tlv(_Tag.PROFILE, action.profile),
        ]
    if action.language is not Language.ZH:
        parts.append(_tlv(_Tag.LANGUAGE, bytes((action.language,))))
    if action.online_counter is not None:
        parts.append(_tlv(_Tag.ONLINE_COUNTER, action.online_counter.to_bytes(2, "big")))
    if action.load_proof is not None:
        proof = action.load_proof
        value = proof.counter.to_bytes(2, "big") + proof.mac + proof.tac
        parts.append(_tlv(_Tag.LOAD_PROOF, value))
    out = b"".join(parts)
    decode(out)  # the encoder never emits what the decoder would refuse
    return out


def _items(data: bytes) -> Iterator[tuple[_Tag, bytes]]:
    i = 1
    while i < len(data):
        if i + 2 > len(data):
            raise WalletMoError(f"truncated TLV at offset {i}")
        raw_tag, length = data[i], data[i + 1]
        tag = _TAG_OF.get(raw_tag)
        if tag is None:
            raise WalletMoError(f"unknown tag {raw_tag:02X} at offset {i}")
        value = data[i + 2 : i + 2 + length]
        if len(value) != length:
            raise WalletMoError(f"tag {raw_tag:02X}: length {length} runs past the end")
        low, high = _SIZES[tag]
        if not low <= length <= high:
            raise WalletMoError(f"tag {raw_tag:02X}: {length} octets, expected {low}..{high}")
        yield tag, value
        i += 2 + length


def decode(data: bytes) -> WalletMo:
    """Parse the secured data of a wallet action; :class:`WalletMoError` on anything else."""
    if not data or data[0] != FORMAT_VERSION:
        raise WalletMoError("not a wallet action (format version 01 expected)")
    fields: dict[_Tag, bytes] = {}
    for tag, value in _items(data):
        if tag in fields:
            raise WalletMoError(f"tag {tag:02X} appears twice")
        fields[tag] = value

    def need(tag: _Tag) -> bytes:
        value = fields.get(tag)
        if value is None:
            raise WalletMoError(f"tag {tag:02X} missing")
        return value

    action_raw = need(_Tag.ACTION)
    action = _ACTION_OF.get(action_raw[0])
    if action is None:
        raise WalletMoError(f"unknown action {action_raw.hex()}")
    language = _LANGUAGE_OF.get(fields.get(_Tag.LANGUAGE, b"\x00")[0])
    if language is None:
        raise WalletMoError("unknown language")
    counter_raw = fields.get(_Tag.ONLINE_COUNTER)
    counter = None if counter_raw is None else int.from_bytes(counter_raw, "big")
    proof_raw = fields.get(_Tag.LOAD_PROOF)
    proof = (
        None
        if proof_raw is None
        else LoadProof(int.from_bytes(proof_raw[:2], "big"), proof_raw[2:6], proof_raw[6:])
    )
    result: WalletMo
    if action is Action.TOPUP:
        amount = int.from_bytes(need(_Tag.AMOUNT), "big")
        if amount == 0:
            raise WalletMoError("amount must be positive")
        block = need(_Tag.PIN_BLOCK)
        pin_from_block(block)
        result = TopUp(
            language=language,
            online_counter=counter,
            load_proof=proof,
            amount=amount,
            pin_block=block,
            load_init=need(_Tag.LOAD_INIT),
            terminal_id=need(_Tag.TERMINAL),
        )
    elif action is Action.CALIBRATION:
        result = Calibration(
            language=language,
            online_counter=counter,
            load_proof=proof,
            iccid=_digits_swapped(need(_Tag.ICCID), "ICCID"),
            imei=_digits_swapped(need(_Tag.IMEI), "IMEI"),
            applet_version=int.from_bytes(need(_Tag.APPLET_VERSION), "big"),
            profile=need(_Tag.PROFILE),
        )
    elif action is Action.BALANCE:
        result = Balance(language, counter, proof)
    else:
        result = Last10(language, counter, proof)
    extra = fields.keys() - _ALLOWED[action]
    if extra:
        raise WalletMoError(f"tag {min(extra):02X} does not belong to action {action.name}")
    return result
