"""PBOC e-purse computations and APDU values (JR/T 0025 Part 2, electronic deposit / purse).

What the card model (:mod:`simcard.purse`) and the platform (the wallet handlers) both
compute, as summarised in ``PBOC.md`` (the project's notes on JR/T 0025 ED/EP) with the
published worked examples it lists reproduced in ``tests/ota/test_pboc.py``:

* **MAC** ("MAC" section): single-DES CBC-MAC, IV ``00``*8, over the data padded with ``80``
  then ``00`` to a multiple of 8 (a whole ``80 00 .. 00`` block when already aligned); the
  MAC is the leftmost 4 bytes of the last block (:func:`pboc_mac`).
* **Session keys** ("Keys" section): ``SESLK = 3DES(DLK, random || online counter || 8000)``
  (:func:`session_key_load`), ``SESPK = 3DES(DPK, random || offline counter || the last 2
  bytes of the terminal transaction sequence number)`` (:func:`session_key_purchase`), 2-key
  3DES EDE in ECB. The **TAC key** is ``DTK left 8 XOR DTK right 8`` (:func:`tac_key`).
* **Load** ("Load" section, transaction type 02 EP / 01 ED): INITIALIZE FOR LOAD
  ``80 50 00 P2 0B`` (P2 ``02`` EP, ``01`` ED) and CREDIT FOR LOAD ``80 52 00 00 0B``;
  ``MAC1 = MAC(SESLK, old balance || amount || type || terminal id)``, ``MAC2 = MAC(SESLK,
  amount || type || terminal id || date || time)``, ``TAC = MAC(TAC key, new balance || online
  counter (as INITIALIZE returned it) || amount || type || terminal id || date || time)``.
* **Purchase** ("Purchase" section, type 06 EP / 05 ED): INITIALIZE FOR PURCHASE
  ``80 50 01 P2 0B`` and DEBIT FOR PURCHASE ``80 54 01 00 0F``; ``MAC1 = MAC(SESPK, amount ||
  type || terminal id || date || time)``, the card's ``MAC2 = MAC(SESPK, amount)``, ``TAC =
  MAC(TAC key, amount || type || terminal id || terminal sequence || date || time)``.
* GET BALANCE ``80 5C 00 P2 04`` and GET TRANSACTION PROVE ``80 5A 00 TT 02`` ("Proof of an
  interrupted transaction": the 2-byte counter of the transaction, answered MAC || TAC).
* What P3 counts for each purse INS in the compact remote format (:data:`COMPACT_P3`), so a
  purse command can be sent in an OTA script (ETSI TS 102 226 §5.1.1).
* The transaction types 01..09 ("Transaction types") and the 23-byte transaction detail
  record (the EF 18 log record the purse keeps).
* The status words a PBOC purse answers (:class:`PbocStatus`), from the public PBOC status
  word tables (cnblogs.com/sarafill/p/5444378.html, blog.csdn.net/K_Cobian/article/details/
  120158183): 9302 MAC invalid, 9303 application permanently locked, 9401 insufficient funds,
  9402 counter at its maximum, 9403 key index not supported, 9406 required MAC unavailable;
  the algorithm identifier ``00`` is 3DES (dpj365.com/?p=401, "算法标识 00-3DES").

Amounts and counters are big-endian unsigned binary (amounts in fen), dates ``YYYYMMDD`` and
times ``hhmmss`` in BCD. Keys are the card's diversified DLK / DPK / DTK (2-key 3DES, 16
bytes, :mod:`ota.keys`); session keys are 8 bytes. Sans-IO and clock-free: the date and time
come from the terminal (the platform) as values. ``cryptography`` does every cipher
operation (DES and 3DES from its ``decrepit`` namespace).

Errors: every bad input raises :class:`PbocError` (a :class:`ValueError`); bytes that do not
decode raise its subclass :class:`MalformedPbocData`. No message, repr or str ever holds key
material: :class:`PurseKeys` shows key check values only.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from ota.apdu import CommandApdu
from ota.keys import KeyAlgorithm, KeyName, kcv, kcv_hex
from ota.remote_apdu import P3

if TYPE_CHECKING:
    from ota.keys import CardKeys

__all__ = [
    "ALGORITHM_3DES",
    "CLA",
    "COMPACT_P3",
    "DEFAULT_KEY_INDEX",
    "DEFAULT_KEY_VERSION",
    "INS_CREDIT_FOR_LOAD",
    "INS_DEBIT_FOR_PURCHASE",
    "INS_GET_BALANCE",
    "INS_GET_TRANSACTION_PROVE",
    "INS_INITIALIZE",
    "MAX_AMOUNT",
    "MAX_COUNTER",
    "P1_LOAD",
    "P1_PURCHASE",
    "Balance",
    "CreditForLoad",
    "CreditForLoadResponse",
    "DebitForPurchase",
    "DebitForPurchaseResponse",
    "GetBalance",
    "GetTransactionProve",
    "InitializeForLoad",
    "InitializeForLoadResponse",
    "InitializeForPurchase",
    "InitializeForPurchaseResponse",
    "MalformedPbocData",
    "PbocError",
    "PbocStatus",
    "PurseKeys",
    "PurseKind",
    "TransactionProve",
    "TransactionRecord",
    "TransactionType",
    "decode_date",
    "decode_time",
    "encode_date",
    "encode_time",
    "mac1_load",
    "mac1_purchase",
    "mac2_load",
    "mac2_purchase",
    "pad80",
    "pboc_mac",
    "session_key_load",
    "session_key_purchase",
    "tac_key",
    "tac_load",
    "tac_purchase",
    "verify_mac1_load",
    "verify_mac2_purchase",
    "verify_tac_load",
    "verify_tac_purchase",
]

# -- constants ---------------------------------------------------------------------------

#: Class byte of the PBOC purse commands (proprietary class, ETSI TS 102 221 §10.1.1).
CLA: Final = 0x80
#: INITIALIZE FOR LOAD (P1 00) and INITIALIZE FOR PURCHASE (P1 01) share this INS.
INS_INITIALIZE: Final = 0x50
INS_CREDIT_FOR_LOAD: Final = 0x52
INS_DEBIT_FOR_PURCHASE: Final = 0x54
INS_GET_TRANSACTION_PROVE: Final = 0x5A
INS_GET_BALANCE: Final = 0x5C
P1_LOAD: Final = 0x00
P1_PURCHASE: Final = 0x01

#: What P3 of each purse command counts in the compact remote format (ETSI TS 102 226 §5.1.1),
#: for ``ota.remote_apdu.split_compact(..., overrides=COMPACT_P3)``: a script such as
#: ``[GET TRANSACTION PROVE, CREDIT FOR LOAD, GET RESPONSE]`` splits only with it.
COMPACT_P3: Final[Mapping[int, P3]] = MappingProxyType(
    {
        INS_INITIALIZE: P3.LC,
        INS_CREDIT_FOR_LOAD: P3.LC,
        INS_DEBIT_FOR_PURCHASE: P3.LC,
        INS_GET_TRANSACTION_PROVE: P3.LC,
        INS_GET_BALANCE: P3.LE,
    }
)

#: Algorithm identifier of the INITIALIZE responses for 3DES (dpj365.com/?p=401: 00 = 3DES).
ALGORITHM_3DES: Final = 0x00
#: Key index and key version the purse answers by default (one DLK and one DPK per card).
DEFAULT_KEY_INDEX: Final = 0x01
DEFAULT_KEY_VERSION: Final = 0x01

MAX_AMOUNT: Final = 0xFFFF_FFFF  # 4-byte amounts and balances, in fen
MAX_COUNTER: Final = 0xFFFF  # 2-byte online and offline counters
MAX_OVERDRAFT: Final = 0xFF_FFFF  # 3-byte overdraft limit
MAX_SEQUENCE: Final = 0xFFFF_FFFF  # 4-byte terminal transaction sequence number

MAC_LEN: Final = 4
RANDOM_LEN: Final = 4
TERMINAL_ID_LEN: Final = 6
SESSION_KEY_LEN: Final = 8
PURSE_KEY_LEN: Final = 16
DATE_LEN: Final = 4
TIME_LEN: Final = 3
RECORD_LEN: Final = 23

_BLOCK: Final = 8
_LOAD_SESSION_SUFFIX: Final = bytes.fromhex("8000")


class PbocError(ValueError):
    """A value or argument a PBOC computation or codec cannot take; never holds key material."""


class MalformedPbocData(PbocError):  # noqa: N818 - a codec error named after what it finds
    """Command data, response data or a record whose bytes do not decode."""


class PbocStatus(IntEnum):
    """Status words of the PBOC purse (public PBOC SW tables, see the module docstring)."""

    OK = 0x9000
    WRONG_LENGTH = 0x6700
    COMMAND_NOT_ACCEPTED = 0x6901  # invalid state: no matching INITIALIZE before CREDIT/DEBIT
    CONDITIONS_NOT_SATISFIED = 0x6985
    INCORRECT_DATA = 0x6A80
    INCORRECT_P1_P2 = 0x6A86
    MAC_INVALID = 0x9302
    APPLICATION_LOCKED = 0x9303  # application permanently locked
    INSUFFICIENT_FUNDS = 0x9401
    COUNTER_AT_MAXIMUM = 0x9402
    KEY_INDEX_NOT_SUPPORTED = 0x9403
    MAC_UNAVAILABLE = 0x9406  # GET TRANSACTION PROVE: no completed transaction there


class TransactionType(IntEnum):
    """Transaction type identifiers (``PBOC.md`` "Transaction types")."""

    ED_LOAD = 0x01
    EP_LOAD = 0x02
    UNLOAD = 0x03
    WITHDRAWAL = 0x04
    ED_PURCHASE = 0x05
    EP_PURCHASE = 0x06
    OVERDRAFT_UPDATE = 0x07
    CAPP_PURCHASE = 0x09

    @property
    def is_load(self) -> bool:
        """True for the loads (01, 02): their counter is the online counter."""
        return self in (TransactionType.ED_LOAD, TransactionType.EP_LOAD)


class PurseKind(IntEnum):
    """P2 of INITIALIZE and GET BALANCE: electronic deposit (01) or electronic purse (02)."""

    ED = 0x01
    EP = 0x02

    @property
    def load_type(self) -> TransactionType:
        """The transaction type of a load into this application."""
        return TransactionType.ED_LOAD if self is PurseKind.ED else TransactionType.EP_LOAD

    @property
    def purchase_type(self) -> TransactionType:
        """The transaction type of a purchase from this application."""
        return TransactionType.ED_PURCHASE if self is PurseKind.ED else TransactionType.EP_PURCHASE


# -- field checks --------------------------------------------------------------------------


def _uint(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise PbocError(f"{name} must be an integer 0..{maximum}, got {value!r}")


def _blob(name: str, value: bytes, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise PbocError(f"{name} must be {length} bytes, got {got}")


def _key(name: str, value: bytes, length: int) -> None:
    """Like :func:`_blob` for key material; the message says nothing of the value."""
    if not isinstance(value, bytes) or len(value) != length:
        raise PbocError(f"{name} must be a {length}-byte key")


def _purse_kind(value: int) -> PurseKind:
    try:
        return PurseKind(value)
    except ValueError:
        raise PbocError(f"purse kind must be ED (01) or EP (02), got {value!r}") from None


def _transaction_type(value: int) -> TransactionType:
    try:
        return TransactionType(value)
    except ValueError:
        raise PbocError(f"{value!r} is not a PBOC transaction type") from None


def _length(what: str, data: bytes, length: int) -> bytes:
    data = bytes(data)
    if len(data) != length:
        raise MalformedPbocData(f"{what} is {length} bytes, got {len(data)}")
    return data


def _be(value: int, n: int) -> bytes:
    return value.to_bytes(n, "big")


def _num(data: bytes) -> int:
    return int.from_bytes(data, "big")


# -- dates and times (BCD) -----------------------------------------------------------------


def encode_date(value: dt.date) -> bytes:
    """``YYYYMMDD`` in BCD (4 bytes)."""
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise PbocError(f"a transaction date must be a datetime.date, got {type(value).__name__}")
    return bytes.fromhex(f"{value.year:04d}{value.month:02d}{value.day:02d}")


def encode_time(value: dt.time) -> bytes:
    """``hhmmss`` in BCD (3 bytes); whole seconds, no time zone (the terminal's local time)."""
    if not isinstance(value, dt.time):
        raise PbocError(f"a transaction time must be a datetime.time, got {type(value).__name__}")
    if value.microsecond or value.tzinfo is not None:
        raise PbocError("a transaction time is whole seconds without a time zone")
    return bytes.fromhex(f"{value.hour:02d}{value.minute:02d}{value.second:02d}")


def _bcd_digits(what: str, data: bytes) -> str:
    digits = data.hex()
    if not digits.isdigit():
        raise MalformedPbocData(f"{what} {digits.upper()} is not BCD")
    return digits


def decode_date(data: bytes) -> dt.date:
    """A BCD ``YYYYMMDD`` date; :class:`MalformedPbocData` if not BCD or not a calendar day."""
    digits = _bcd_digits("date", _length("a date", data, DATE_LEN))
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise MalformedPbocData(f"date {digits} is not a calendar day") from None


def decode_time(data: bytes) -> dt.time:
    """A BCD ``hhmmss`` time; :class:`MalformedPbocData` if not BCD or out of range."""
    digits = _bcd_digits("time", _length("a time", data, TIME_LEN))
    try:
        return dt.time(int(digits[:2]), int(digits[2:4]), int(digits[4:]))
    except ValueError:
        raise MalformedPbocData(f"time {digits} is not a time of day") from None


def _check_when(date: dt.date, time: dt.time) -> None:
    encode_date(date)
    encode_time(time)


# -- cryptography --------------------------------------------------------------------------


def pad80(data: bytes) -> bytes:
    """``data || 80 || 00..`` to a multiple of 8 bytes (always at least the ``80``)."""
    padded = bytes(data) + b"\x80"
    return padded + bytes(-len(padded) % _BLOCK)


def pboc_mac(key: bytes, data: bytes) -> bytes:
    """The PBOC MAC: single-DES CBC-MAC (IV zero) of ``pad80(data)``, leftmost 4 bytes."""
    _key("a MAC key", key, SESSION_KEY_LEN)
    encryptor = Cipher(TripleDES(key * 3), modes.CBC(bytes(_BLOCK))).encryptor()
    out = encryptor.update(pad80(data)) + encryptor.finalize()
    return out[-_BLOCK:][:MAC_LEN]


def _tdes_ecb(key: bytes, block: bytes) -> bytes:
    """2-key 3DES EDE of one block (K1 || K2 || K1 for ``cryptography``)."""
    encryptor = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()  # noqa: S305 - the method
    return encryptor.update(block) + encryptor.finalize()


def session_key_load(dlk: bytes, random: bytes, online_counter: int) -> bytes:
    """``SESLK = 3DES(DLK, random(4) || online counter(2) || 80 00)``."""
    _key("DLK", dlk, PURSE_KEY_LEN)
    _blob("random", random, RANDOM_LEN)
    _uint("online counter", online_counter, MAX_COUNTER)
    return _tdes_ecb(dlk, random + _be(online_counter, 2) + _LOAD_SESSION_SUFFIX)


def session_key_purchase(
    dpk: bytes, random: bytes, offline_counter: int, terminal_sequence: int
) -> bytes:
    """``SESPK = 3DES(DPK, random(4) || offline counter(2) || terminal sequence low 2 bytes)``."""
    _key("DPK", dpk, PURSE_KEY_LEN)
    _blob("random", random, RANDOM_LEN)
    _uint("offline counter", offline_counter, MAX_COUNTER)
    _uint("terminal sequence", terminal_sequence, MAX_SEQUENCE)
    return _tdes_ecb(dpk, random + _be(offline_counter, 2) + _be(terminal_sequence & 0xFFFF, 2))


def tac_key(dtk: bytes) -> bytes:
    """The single-DES TAC key: the DTK's left 8 bytes XOR its right 8 bytes."""
    _key("DTK", dtk, PURSE_KEY_LEN)
    return bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:], strict=True))


def _ttid(amount: int, transaction_type: TransactionType, terminal_id: bytes) -> bytes:
    """``amount(4) || type(1) || terminal id(6)``, checked."""
    _uint("amount", amount, MAX_AMOUNT)
    _blob("terminal id", terminal_id, TERMINAL_ID_LEN)
    return _be(amount, 4) + bytes((_transaction_type(transaction_type),)) + terminal_id


def mac1_load(
    dlk: bytes,
    *,
    random: bytes,
    online_counter: int,
    old_balance: int,
    amount: int,
    terminal_id: bytes,
    transaction_type: TransactionType = TransactionType.EP_LOAD,
) -> bytes:
    """The card's MAC1 of INITIALIZE FOR LOAD: ``MAC(SESLK, old balance || amount || type ||
    terminal id)``."""
    _uint("old balance", old_balance, MAX_AMOUNT)
    seslk = session_key_load(dlk, random, online_counter)
    return pboc_mac(seslk, _be(old_balance, 4) + _ttid(amount, transaction_type, terminal_id))


def mac2_load(
    dlk: bytes,
    *,
    random: bytes,
    online_counter: int,
    amount: int,
    terminal_id: bytes,
    date: dt.date,
    time: dt.time,
    transaction_type: TransactionType = TransactionType.EP_LOAD,
) -> bytes:
    """The platform's MAC2 for CREDIT FOR LOAD: ``MAC(SESLK, amount || type || terminal id ||
    date || time)``."""
    seslk = session_key_load(dlk, random, online_counter)
    data = _ttid(amount, transaction_type, terminal_id) + encode_date(date) + encode_time(time)
    return pboc_mac(seslk, data)


def tac_load(
    dtk: bytes,
    *,
    new_balance: int,
    online_counter: int,
    amount: int,
    terminal_id: bytes,
    date: dt.date,
    time: dt.time,
    transaction_type: TransactionType = TransactionType.EP_LOAD,
) -> bytes:
    """The load TAC: ``MAC(TAC key, new balance || online counter (before the increment) ||
    amount || type || terminal id || date || time)``."""
    _uint("new balance", new_balance, MAX_AMOUNT)
    _uint("online counter", online_counter, MAX_COUNTER)
    data = (
        _be(new_balance, 4)
        + _be(online_counter, 2)
        + _ttid(amount, transaction_type, terminal_id)
        + encode_date(date)
        + encode_time(time)
    )
    return pboc_mac(tac_key(dtk), data)


def mac1_purchase(
    dpk: bytes,
    *,
    random: bytes,
    offline_counter: int,
    terminal_sequence: int,
    amount: int,
    terminal_id: bytes,
    date: dt.date,
    time: dt.time,
    transaction_type: TransactionType = TransactionType.EP_PURCHASE,
) -> bytes:
    """The terminal's MAC1 for DEBIT FOR PURCHASE: ``MAC(SESPK, amount || type || terminal id
    || date || time)``."""
    sespk = session_key_purchase(dpk, random, offline_counter, terminal_sequence)
    data = _ttid(amount, transaction_type, terminal_id) + encode_date(date) + encode_time(time)
    return pboc_mac(sespk, data)


def mac2_purchase(
    dpk: bytes, *, random: bytes, offline_counter: int, terminal_sequence: int, amount: int
) -> bytes:
    """The card's MAC2 of DEBIT FOR PURCHASE: ``MAC(SESPK, amount)``."""
    _uint("amount", amount, MAX_AMOUNT)
    sespk = session_key_purchase(dpk, random, offline_counter, terminal_sequence)
    return pboc_mac(sespk, _be(amount, 4))


def tac_purchase(
    dtk: bytes,
    *,
    amount: int,
    terminal_id: bytes,
    terminal_sequence: int,
    date: dt.date,
    time: dt.time,
    transaction_type: TransactionType = TransactionType.EP_PURCHASE,
) -> bytes:
    """The purchase TAC: ``MAC(TAC key, amount || type || terminal id || terminal sequence ||
    date || time)``."""
    _uint("terminal sequence", terminal_sequence, MAX_SEQUENCE)
    data = (
        _ttid(amount, transaction_type, terminal_id)
        + _be(terminal_sequence, 4)
        + encode_date(date)
        + encode_time(time)
    )
    return pboc_mac(tac_key(dtk), data)


def _same(expected: bytes, given: bytes) -> bool:
    _blob("MAC", given, MAC_LEN)
    return hmac.compare_digest(expected, given)


def verify_mac1_load(
    dlk: bytes,
    init_response: InitializeForLoadResponse,
    amount: int,
    terminal_id: bytes,
    transaction_type: TransactionType = TransactionType.EP_LOAD,
) -> bool:
    """Whether the MAC1 of an INITIALIZE FOR LOAD answer is the card's for this amount and
    terminal (so its old balance and online counter are authentic)."""
    r = init_response
    expected = mac1_load(
        dlk,
        random=r.random,
        online_counter=r.online_counter,
        old_balance=r.old_balance,
        amount=amount,
        terminal_id=terminal_id,
        transaction_type=transaction_type,
    )
    return _same(expected, r.mac1)


def verify_tac_load(
    dtk: bytes,
    *,
    new_balance: int,
    online_counter: int,
    amount: int,
    terminal_id: bytes,
    date: dt.date,
    time: dt.time,
    tac: bytes,
    transaction_type: TransactionType = TransactionType.EP_LOAD,
) -> bool:
    """Whether ``tac`` proves the load (``new_balance`` = old balance + amount)."""
    expected = tac_load(
        dtk,
        new_balance=new_balance,
        online_counter=online_counter,
        amount=amount,
        terminal_id=terminal_id,
        date=date,
        time=time,
        transaction_type=transaction_type,
    )
    return _same(expected, tac)


def verify_mac2_purchase(
    dpk: bytes,
    init_response: InitializeForPurchaseResponse,
    *,
    terminal_sequence: int,
    amount: int,
    mac2: bytes,
) -> bool:
    """Whether the MAC2 of a DEBIT FOR PURCHASE answer is the card's."""
    r = init_response
    expected = mac2_purchase(
        dpk,
        random=r.random,
        offline_counter=r.offline_counter,
        terminal_sequence=terminal_sequence,
        amount=amount,
    )
    return _same(expected, mac2)


def verify_tac_purchase(
    dtk: bytes,
    *,
    amount: int,
    terminal_id: bytes,
    terminal_sequence: int,
    date: dt.date,
    time: dt.time,
    tac: bytes,
    transaction_type: TransactionType = TransactionType.EP_PURCHASE,
) -> bool:
    """Whether ``tac`` proves the purchase."""
    expected = tac_purchase(
        dtk,
        amount=amount,
        terminal_id=terminal_id,
        terminal_sequence=terminal_sequence,
        date=date,
        time=time,
        transaction_type=transaction_type,
    )
    return _same(expected, tac)


# -- keys ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurseKeys:
    """The purse's keys (the card's diversified DLK, DPK, DTK) and what INITIALIZE announces
    with them: key index, key version, algorithm identifier. Shown by KCV only."""

    dlk: bytes = field(repr=False)
    dpk: bytes = field(repr=False)
    dtk: bytes = field(repr=False)
    key_version: int = DEFAULT_KEY_VERSION
    key_index: int = DEFAULT_KEY_INDEX
    algorithm_id: int = ALGORITHM_3DES

    def __post_init__(self) -> None:
        _key("DLK", self.dlk, PURSE_KEY_LEN)
        _key("DPK", self.dpk, PURSE_KEY_LEN)
        _key("DTK", self.dtk, PURSE_KEY_LEN)
        _uint("key version", self.key_version, 0xFF)
        _uint("key index", self.key_index, 0xFF)
        _uint("algorithm id", self.algorithm_id, 0xFF)

    def __repr__(self) -> str:
        kcvs = ", ".join(
            f"{name} KCV {kcv_hex(kcv(KeyAlgorithm.TDES, key))}"
            for name, key in (("DLK", self.dlk), ("DPK", self.dpk), ("DTK", self.dtk))
        )
        return f"PurseKeys(index {self.key_index:02X} v{self.key_version}: {kcvs})"

    __str__ = __repr__

    @classmethod
    def from_card_keys(cls, keys: CardKeys, *, key_index: int = DEFAULT_KEY_INDEX) -> PurseKeys:
        """The purse keys of a card's key set (:class:`ota.keys.CardKeys`); the key version is
        the key set's (low byte)."""
        try:
            return cls(
                keys.key(KeyName.DLK),
                keys.key(KeyName.DPK),
                keys.key(KeyName.DTK),
                key_version=keys.version & 0xFF,
                key_index=key_index,
            )
        except ValueError as exc:  # KeysError has no key material in its message either
            raise PbocError(f"no PBOC purse keys in this key set: {exc}") from None


# -- APDU values ---------------------------------------------------------------------------


def _check_command(apdu: CommandApdu, ins: int, p1: int, what: str) -> None:
    if (apdu.cla, apdu.ins, apdu.p1) != (CLA, ins, p1):
        raise MalformedPbocData(
            f"{apdu.cla:02X} {apdu.ins:02X} {apdu.p1:02X} is not {what} "
            f"({CLA:02X} {ins:02X} {p1:02X})"
        )


def _kind(p2: int) -> PurseKind:
    try:
        return PurseKind(p2)
    except ValueError:
        raise MalformedPbocData(f"P2 {p2:02X} names neither ED (01) nor EP (02)") from None


@dataclass(frozen=True, slots=True)
class InitializeForLoad:
    """INITIALIZE FOR LOAD ``80 50 00 P2 0B``: key index(1) || amount(4) || terminal id(6)."""

    key_index: int
    amount: int
    terminal_id: bytes
    kind: PurseKind = PurseKind.EP

    LENGTH = 11
    LE = 16

    def __post_init__(self) -> None:
        _uint("key index", self.key_index, 0xFF)
        _uint("amount", self.amount, MAX_AMOUNT)
        _blob("terminal id", self.terminal_id, TERMINAL_ID_LEN)
        _purse_kind(self.kind)

    def to_bytes(self) -> bytes:
        """The command data."""
        return bytes((self.key_index,)) + _be(self.amount, 4) + self.terminal_id

    @classmethod
    def from_bytes(cls, data: bytes, kind: PurseKind = PurseKind.EP) -> InitializeForLoad:
        """Decode the command data (P2 given as ``kind``)."""
        data = _length("INITIALIZE FOR LOAD data", data, cls.LENGTH)
        return cls(data[0], _num(data[1:5]), data[5:11], _purse_kind(kind))

    def to_apdu(self) -> CommandApdu:
        """The whole command, Le 10."""
        return CommandApdu(CLA, INS_INITIALIZE, P1_LOAD, self.kind, self.to_bytes(), self.LE)

    @classmethod
    def from_apdu(cls, apdu: CommandApdu) -> InitializeForLoad:
        """Decode a whole command (CLA, INS and P1 checked, P2 read)."""
        _check_command(apdu, INS_INITIALIZE, P1_LOAD, "INITIALIZE FOR LOAD")
        return cls.from_bytes(apdu.data, _kind(apdu.p2))


@dataclass(frozen=True, slots=True)
class InitializeForLoadResponse:
    """INITIALIZE FOR LOAD answer: old balance(4) || online counter(2) || key version(1) ||
    algorithm id(1) || random(4) || MAC1(4)."""

    old_balance: int
    online_counter: int
    key_version: int
    algorithm_id: int
    random: bytes
    mac1: bytes

    LENGTH = 16

    def __post_init__(self) -> None:
        _uint("old balance", self.old_balance, MAX_AMOUNT)
        _uint("online counter", self.online_counter, MAX_COUNTER)
        _uint("key version", self.key_version, 0xFF)
        _uint("algorithm id", self.algorithm_id, 0xFF)
        _blob("random", self.random, RANDOM_LEN)
        _blob("MAC1", self.mac1, MAC_LEN)

    def to_bytes(self) -> bytes:
        """The response data."""
        return (
            _be(self.old_balance, 4)
            + _be(self.online_counter, 2)
            + bytes((self.key_version, self.algorithm_id))
            + self.random
            + self.mac1
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> InitializeForLoadResponse:
        """Decode the response data."""
        data = _length("INITIALIZE FOR LOAD response", data, cls.LENGTH)
        return cls(_num(data[:4]), _num(data[4:6]), data[6], data[7], data[8:12], data[12:16])


@dataclass(frozen=True, slots=True)
class CreditForLoad:
    """CREDIT FOR LOAD ``80 52 00 00 0B``: date(4) || time(3) || MAC2(4)."""

    date: dt.date
    time: dt.time
    mac2: bytes

    LENGTH = 11
    LE = 4

    def __post_init__(self) -> None:
        _check_when(self.date, self.time)
        _blob("MAC2", self.mac2, MAC_LEN)

    def to_bytes(self) -> bytes:
        """The command data."""
        return encode_date(self.date) + encode_time(self.time) + self.mac2

    @classmethod
    def from_bytes(cls, data: bytes) -> CreditForLoad:
        """Decode the command data."""
        data = _length("CREDIT FOR LOAD data", data, cls.LENGTH)
        return cls(decode_date(data[:4]), decode_time(data[4:7]), data[7:11])

    def to_apdu(self) -> CommandApdu:
        """The whole command, Le 04."""
        return CommandApdu(CLA, INS_CREDIT_FOR_LOAD, 0x00, 0x00, self.to_bytes(), self.LE)

    @classmethod
    def from_apdu(cls, apdu: CommandApdu) -> CreditForLoad:
        """Decode a whole command (CLA, INS, P1 and P2 checked)."""
        _check_command(apdu, INS_CREDIT_FOR_LOAD, 0x00, "CREDIT FOR LOAD")
        if apdu.p2 != 0x00:
            raise MalformedPbocData(f"CREDIT FOR LOAD has P2 00, got {apdu.p2:02X}")
        return cls.from_bytes(apdu.data)


@dataclass(frozen=True, slots=True)
class CreditForLoadResponse:
    """CREDIT FOR LOAD answer: TAC(4)."""

    tac: bytes

    LENGTH = 4

    def __post_init__(self) -> None:
        _blob("TAC", self.tac, MAC_LEN)

    def to_bytes(self) -> bytes:
        """The response data."""
        return self.tac

    @classmethod
    def from_bytes(cls, data: bytes) -> CreditForLoadResponse:
        """Decode the response data."""
        return cls(_length("CREDIT FOR LOAD response", data, cls.LENGTH))


@dataclass(frozen=True, slots=True)
class InitializeForPurchase:
    """INITIALIZE FOR PURCHASE ``80 50 01 P2 0B``: key index(1) || amount(4) || terminal id(6)."""

    key_index: int
    amount: int
    terminal_id: bytes
    kind: PurseKind = PurseKind.EP

    LENGTH = 11
    LE = 15

    def __post_init__(self) -> None:
        _uint("key index", self.key_index, 0xFF)
        _uint("amount", self.amount, MAX_AMOUNT)
        _blob("terminal id", self.terminal_id, TERMINAL_ID_LEN)
        _purse_kind(self.kind)

    def to_bytes(self) -> bytes:
        """The command data."""
        return bytes((self.key_index,)) + _be(self.amount, 4) + self.terminal_id

    @classmethod
    def from_bytes(cls, data: bytes, kind: PurseKind = PurseKind.EP) -> InitializeForPurchase:
        """Decode the command data (P2 given as ``kind``)."""
        data = _length("INITIALIZE FOR PURCHASE data", data, cls.LENGTH)
        return cls(data[0], _num(data[1:5]), data[5:11], _purse_kind(kind))

    def to_apdu(self) -> CommandApdu:
        """The whole command, Le 0F."""
        return CommandApdu(CLA, INS_INITIALIZE, P1_PURCHASE, self.kind, self.to_bytes(), self.LE)

    @classmethod
    def from_apdu(cls, apdu: CommandApdu) -> InitializeForPurchase:
        """Decode a whole command (CLA, INS and P1 checked, P2 read)."""
        _check_command(apdu, INS_INITIALIZE, P1_PURCHASE, "INITIALIZE FOR PURCHASE")
        return cls.from_bytes(apdu.data, _kind(apdu.p2))


@dataclass(frozen=True, slots=True)
class InitializeForPurchaseResponse:
    """INITIALIZE FOR PURCHASE answer: balance(4) || offline counter(2) || overdraft limit(3)
    || key version(1) || algorithm id(1) || random(4)."""

    balance: int
    offline_counter: int
    overdraft_limit: int
    key_version: int
    algorithm_id: int
    random: bytes

    LENGTH = 15

    def __post_init__(self) -> None:
        _uint("balance", self.balance, MAX_AMOUNT)
        _uint("offline counter", self.offline_counter, MAX_COUNTER)
        _uint("overdraft limit", self.overdraft_limit, MAX_OVERDRAFT)
        _uint("key version", self.key_version, 0xFF)
        _uint("algorithm id", self.algorithm_id, 0xFF)
        _blob("random", self.random, RANDOM_LEN)

    def to_bytes(self) -> bytes:
        """The response data."""
        return (
            _be(self.balance, 4)
            + _be(self.offline_counter, 2)
            + _be(self.overdraft_limit, 3)
            + bytes((self.key_version, self.algorithm_id))
            + self.random
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> InitializeForPurchaseResponse:
        """Decode the response data."""
        data = _length("INITIALIZE FOR PURCHASE response", data, cls.LENGTH)
        return cls(_num(data[:4]), _num(data[4:6]), _num(data[6:9]), data[9], data[10], data[11:15])


@dataclass(frozen=True, slots=True)
class DebitForPurchase:
    """DEBIT FOR PURCHASE ``80 54 01 00 0F``: terminal sequence(4) || date(4) || time(3) ||
    MAC1(4)."""

    terminal_sequence: int
    date: dt.date
    time: dt.time
    mac1: bytes

    LENGTH = 15
    LE = 8

    def __post_init__(self) -> None:
        _uint("terminal sequence", self.terminal_sequence, MAX_SEQUENCE)
        _check_when(self.date, self.time)
        _blob("MAC1", self.mac1, MAC_LEN)

    def to_bytes(self) -> bytes:
        """The command data."""
        return (
            _be(self.terminal_sequence, 4)
            + encode_date(self.date)
            + encode_time(self.time)
            + self.mac1
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DebitForPurchase:
        """Decode the command data."""
        data = _length("DEBIT FOR PURCHASE data", data, cls.LENGTH)
        return cls(_num(data[:4]), decode_date(data[4:8]), decode_time(data[8:11]), data[11:15])

    def to_apdu(self) -> CommandApdu:
        """The whole command, Le 08."""
        return CommandApdu(CLA, INS_DEBIT_FOR_PURCHASE, 0x01, 0x00, self.to_bytes(), self.LE)

    @classmethod
    def from_apdu(cls, apdu: CommandApdu) -> DebitForPurchase:
        """Decode a whole command (CLA, INS, P1 and P2 checked)."""
        _check_command(apdu, INS_DEBIT_FOR_PURCHASE, 0x01, "DEBIT FOR PURCHASE")
        if apdu.p2 != 0x00:
            raise MalformedPbocData(f"DEBIT FOR PURCHASE has P2 00, got {apdu.p2:02X}")
        return cls.from_bytes(apdu.data)


@dataclass(frozen=True, slots=True)
class DebitForPurchaseResponse:
    """DEBIT FOR PURCHASE answer: TAC(4) || MAC2(4)."""

    tac: bytes
    mac2: bytes

    LENGTH = 8

    def __post_init__(self) -> None:
        _blob("TAC", self.tac, MAC_LEN)
        _blob("MAC2", self.mac2, MAC_LEN)

    def to_bytes(self) -> bytes:
        """The response data."""
        return self.tac + self.mac2

    @classmethod
    def from_bytes(cls, data: bytes) -> DebitForPurchaseResponse:
        """Decode the response data."""
        data = _length("DEBIT FOR PURCHASE response", data, cls.LENGTH)
        return cls(data[:4], data[4:])


@dataclass(frozen=True, slots=True)
class GetBalance:
    """GET BALANCE ``80 5C 00 P2 04`` (no command data)."""

    kind: PurseKind = PurseKind.EP

    LE = 4

    def __post_init__(self) -> None:
        _purse_kind(self.kind)

    def to_apdu(self) -> CommandApdu:
        """The whole command."""
        return CommandApdu(CLA, INS_GET_BALANCE, 0x00, self.kind, b"", self.LE)

    @classmethod
    def from_apdu(cls, apdu: CommandApdu) -> GetBalance:
        """Decode a whole command (CLA, INS, P1 checked, no data)."""
        _check_command(apdu, INS_GET_BALANCE, 0x00, "GET BALANCE")
        if apdu.data:
            raise MalformedPbocData("GET BALANCE carries no command data")
        return cls(_kind(apdu.p2))


@dataclass(frozen=True, slots=True)
class Balance:
    """GET BALANCE answer: balance(4)."""

    balance: int

    LENGTH = 4

    def __post_init__(self) -> None:
        _uint("balance", self.balance, MAX_AMOUNT)

    def to_bytes(self) -> bytes:
        """The response data."""
        return _be(self.balance, 4)

    @classmethod
    def from_bytes(cls, data: bytes) -> Balance:
        """Decode the response data."""
        return cls(_num(_length("GET BALANCE response", data, cls.LENGTH)))


@dataclass(frozen=True, slots=True)
class GetTransactionProve:
    """GET TRANSACTION PROVE ``80 5A 00 TT 02``: the counter(2) of the transaction in question;
    P2 is its transaction type (the counter is the online one for loads, else the offline)."""

    transaction_type: TransactionType
    counter: int

    LENGTH = 2
    LE = 8

    def __post_init__(self) -> None:
        _transaction_type(self.transaction_type)
        _uint("counter", self.counter, MAX_COUNTER)

    def to_bytes(self) -> bytes:
        """The command data."""
        return _be(self.counter, 2)

    @classmethod
    def from_bytes(
        cls, data: bytes, transaction_type: TransactionType = TransactionType.EP_LOAD
    ) -> GetTransactionProve:
        """Decode the command data (P2 given as ``transaction_type``)."""
        data = _length("GET TRANSACTION PROVE data", data, cls.LENGTH)
        return cls(_transaction_type(transaction_type), _num(data))

    def to_apdu(self) -> CommandApdu:
        """The whole command, Le 08."""
        return CommandApdu(
            CLA, INS_GET_TRANSACTION_PROVE, 0x00, self.transaction_type, self.to_bytes(), self.LE
        )

    @classmethod
    def from_apdu(cls, apdu: CommandApdu) -> GetTransactionProve:
        """Decode a whole command (CLA, INS, P1 checked, P2 read as the transaction type)."""
        _check_command(apdu, INS_GET_TRANSACTION_PROVE, 0x00, "GET TRANSACTION PROVE")
        try:
            kind = TransactionType(apdu.p2)
        except ValueError:
            raise MalformedPbocData(f"P2 {apdu.p2:02X} is no transaction type") from None
        return cls.from_bytes(apdu.data, kind)


@dataclass(frozen=True, slots=True)
class TransactionProve:
    """GET TRANSACTION PROVE answer: MAC(4) || TAC(4) of the completed transaction (MAC2 of
    the load as the card checked it, or the card's MAC2 of the purchase)."""

    mac: bytes
    tac: bytes

    LENGTH = 8

    def __post_init__(self) -> None:
        _blob("MAC", self.mac, MAC_LEN)
        _blob("TAC", self.tac, MAC_LEN)

    def to_bytes(self) -> bytes:
        """The response data."""
        return self.mac + self.tac

    @classmethod
    def from_bytes(cls, data: bytes) -> TransactionProve:
        """Decode the response data."""
        data = _length("GET TRANSACTION PROVE response", data, cls.LENGTH)
        return cls(data[:4], data[4:])


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One transaction detail (the purse's EF 18 log record, 23 bytes): counter(2) ||
    overdraft limit(3) || amount(4) || type(1) || terminal id(6) || date(4) || time(3).

    ``counter`` is the online counter for loads and the offline counter for purchases, as
    INITIALIZE returned it (the value the TAC covers)."""

    counter: int
    overdraft_limit: int
    amount: int
    transaction_type: TransactionType
    terminal_id: bytes
    date: dt.date
    time: dt.time

    LENGTH = RECORD_LEN

    def __post_init__(self) -> None:
        _uint("counter", self.counter, MAX_COUNTER)
        _uint("overdraft limit", self.overdraft_limit, MAX_OVERDRAFT)
        _ttid(self.amount, self.transaction_type, self.terminal_id)
        _check_when(self.date, self.time)

    def to_bytes(self) -> bytes:
        """The record."""
        return (
            _be(self.counter, 2)
            + _be(self.overdraft_limit, 3)
            + _ttid(self.amount, self.transaction_type, self.terminal_id)
            + encode_date(self.date)
            + encode_time(self.time)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TransactionRecord:
        """Decode a record."""
        data = _length("a transaction record", data, cls.LENGTH)
        try:
            kind = TransactionType(data[9])
        except ValueError:
            raise MalformedPbocData(f"transaction type {data[9]:02X} is not defined") from None
        return cls(
            _num(data[:2]),
            _num(data[2:5]),
            _num(data[5:9]),
            kind,
            data[10:16],
            decode_date(data[16:20]),
            decode_time(data[20:23]),
        )
