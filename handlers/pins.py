"""Wallet PINs: set at the business hall, checked on every top-up, locked after 3 wrong tries.

Issue 5 ("Handlers"): the top-up PIN is verified by the platform (it travels only inside the
ciphered secured MO, ISO 9564-1 format 2, ``docs/protocol.md``); wrong attempts are counted;
after :data:`MAX_ATTEMPTS` wrong ones in a row the PIN is locked until the business hall
unlocks it (``stkpay wallet unlock-pin``); PINs are stored only as keyed hashes.

* **Hash.** ``HMAC-SHA256(pepper, "stkpay-pin-v1" || 00 || salt || 00 || PIN)`` (RFC 2104,
  FIPS 180-4), with a platform-wide secret *pepper* (from the configuration or the
  environment variable :data:`PEPPER_ENV`, never from the database) and a random 16-octet
  salt per card. A stolen database alone gives nothing to brute-force the 10^6 PINs against.
  Comparison is constant-time (:func:`hmac.compare_digest`).
* **Attempts.** :meth:`PinStore.verify` counts a wrong PIN atomically with the check (two
  gateways racing cannot both get a free try) and reports the attempts left; at 0 the PIN is
  locked. A right PIN does **not** reset the count by itself: the caller calls
  :meth:`PinStore.succeeded` right after the ledger has judged the top-up (the closest the two
  APIs allow to "the same transaction as the money"; see ``docs/handlers.md``).
  ``verify(..., count=False)`` judges without counting (a redelivered MO must not cost a try).
* **Storage.** :class:`MemoryPinStore` (tests, embedded demo without persistence) and
  :class:`SqlPinStore` on the ledger database URL (``sqlite:///...`` or ``postgresql://...``)
  in its own table ``wallet_pins`` (``CREATE TABLE IF NOT EXISTS``, to be moved into the
  ledger's migrations).

Nothing here puts a PIN, a hash, a salt or the pepper in a repr, a log line or an exception
message.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

__all__ = [
    "MAX_ATTEMPTS",
    "PEPPER_ENV",
    "MemoryPinStore",
    "Pepper",
    "PinCheck",
    "PinError",
    "PinStore",
    "PinStoreError",
    "PinVerdict",
    "SqlPinStore",
    "open_pin_store",
    "pepper_from_env",
    "pin_hash",
]

#: Wrong PINs in a row that lock the PIN.
MAX_ATTEMPTS: Final = 3
#: The environment variable holding the pepper (hex, at least 16 octets).
PEPPER_ENV: Final = "STKPAY_PIN_PEPPER"
_DOMAIN: Final = b"stkpay-pin-v1"
_SALT_LEN: Final = 16
_MIN_PEPPER: Final = 16


class PinError(ValueError):
    """A bad argument (PIN not 4..12 digits, bad ICCID, bad pepper); never shows a PIN."""


class PinStoreError(Exception):
    """The PIN database failed (unreachable, broken): the outcome is unknown."""


@dataclass(frozen=True, slots=True)
class Pepper:
    """The platform's PIN-hashing secret (shown by a check value only)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) < _MIN_PEPPER:
            raise PinError(f"a pepper is at least {_MIN_PEPPER} octets")

    def __repr__(self) -> str:
        check = hashlib.sha256(b"kcv" + self.key).hexdigest()[:6].upper()
        return f"Pepper(check {check})"

    __str__ = __repr__


def pepper_from_env(env: Mapping[str, str] | None = None) -> Pepper:
    """The pepper from :data:`PEPPER_ENV` (hex); :class:`PinError` if absent or malformed."""
    source = os.environ if env is None else env
    text = source.get(PEPPER_ENV, "")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise PinError(f"{PEPPER_ENV} is not hex") from None
    if not raw:
        raise PinError(f"{PEPPER_ENV} is not set")
    return Pepper(raw)


class PinVerdict(enum.Enum):
    """What a PIN check found."""

    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"
    NOT_SET = "not_set"


@dataclass(frozen=True, slots=True)
class PinCheck:
    """The verdict and the wrong attempts still allowed before the lock (0 when locked)."""

    verdict: PinVerdict
    attempts_left: int

    @property
    def ok(self) -> bool:
        """True when the PIN was right."""
        return self.verdict is PinVerdict.OK


def _check_pin(pin: object) -> str:
    if not (isinstance(pin, str) and pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise PinError("a PIN is 4 to 12 digits")
    return pin


def _check_iccid(iccid: object) -> str:
    if not isinstance(iccid, str):
        raise PinError("an ICCID is 16 to 20 digits")
    card = iccid.upper().removesuffix("F")
    if not (card.isascii() and card.isdigit() and 16 <= len(card) <= 20):
        raise PinError("an ICCID is 16 to 20 digits")
    return card


def pin_hash(pepper: Pepper, salt: bytes, pin: str) -> bytes:
    """The keyed hash stored for ``pin`` with this card's ``salt`` (see the module doc)."""
    message = _DOMAIN + b"\x00" + salt + b"\x00" + _check_pin(pin).encode("ascii")
    return hmac.new(pepper.key, message, hashlib.sha256).digest()


class PinStore(Protocol):
    """PIN state per card (ICCID)."""

    def set_pin(self, iccid: str, pin: str) -> None:
        """Set (or replace) the card's PIN with a fresh salt; clears attempts and the lock."""
        ...

    def verify(self, iccid: str, pin: str, *, count: bool = True) -> PinCheck:
        """Check ``pin``; a wrong one is counted (unless ``count`` is False) atomically with
        the check, locking at :data:`MAX_ATTEMPTS`. A right one changes nothing."""
        ...

    def succeeded(self, iccid: str) -> None:
        """The right PIN was used for a request the ledger judged: reset the wrong count."""
        ...

    def unlock(self, iccid: str) -> None:
        """The business hall unlocks the PIN (the count goes back to 0)."""
        ...

    def status(self, iccid: str) -> PinCheck:
        """The state without a PIN: OK (set, not locked), LOCKED or NOT_SET."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


def _judge(
    pepper: Pepper, row: tuple[bytes, bytes, int] | None, pin: str, count: bool
) -> tuple[PinCheck, int | None]:
    """The verdict for ``pin`` against ``row`` (salt, hash, failures) and the new failure
    count to store (None: unchanged). Without ``count`` a wrong PIN reports the attempts left
    as they stand (what the first judgement of a redelivered request reported)."""
    if row is None:
        return PinCheck(PinVerdict.NOT_SET, 0), None
    salt, stored, failures = row
    if failures >= MAX_ATTEMPTS:
        return PinCheck(PinVerdict.LOCKED, 0), None
    if hmac.compare_digest(pin_hash(pepper, salt, pin), stored):
        return PinCheck(PinVerdict.OK, MAX_ATTEMPTS - failures), None
    if not count:
        return PinCheck(PinVerdict.WRONG, MAX_ATTEMPTS - failures), None
    failures += 1
    left = MAX_ATTEMPTS - failures
    return PinCheck(PinVerdict.WRONG if left else PinVerdict.LOCKED, left), failures


def _status(row: tuple[bytes, bytes, int] | None) -> PinCheck:
    if row is None:
        return PinCheck(PinVerdict.NOT_SET, 0)
    left = max(0, MAX_ATTEMPTS - row[2])
    return PinCheck(PinVerdict.OK if left else PinVerdict.LOCKED, left)


class MemoryPinStore:
    """In-process :class:`PinStore` (thread-safe); lost on restart."""

    def __init__(self, pepper: Pepper) -> None:
        self._pepper = pepper
        self._rows: dict[str, tuple[bytes, bytes, int]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryPinStore({len(self._rows)} cards)"

    def set_pin(self, iccid: str, pin: str) -> None:
        card = _check_iccid(iccid)
        salt = secrets.token_bytes(_SALT_LEN)
        digest = pin_hash(self._pepper, salt, pin)
        with self._lock:
            self._rows[card] = (salt, digest, 0)

    def verify(self, iccid: str, pin: str, *, count: bool = True) -> PinCheck:
        card, pin = _check_iccid(iccid), _check_pin(pin)
        with self._lock:
            row = self._rows.get(card)
            check, failures = _judge(self._pepper, row, pin, count)
            if failures is not None and row is not None:
                self._rows[card] = (row[0], row[1], failures)
            return check

    def _set_failures(self, iccid: str, failures: int) -> None:
        card = _check_iccid(iccid)
        with self._lock:
            row = self._rows.get(card)
            if row is not None:
                self._rows[card] = (row[0], row[1], failures)

    def succeeded(self, iccid: str) -> None:
        card = _check_iccid(iccid)
        with self._lock:
            row = self._rows.get(card)
            if row is not None and row[2] < MAX_ATTEMPTS:
                self._rows[card] = (row[0], row[1], 0)

    def unlock(self, iccid: str) -> None:
        self._set_failures(iccid, 0)

    def status(self, iccid: str) -> PinCheck:
        card = _check_iccid(iccid)
        with self._lock:
            return _status(self._rows.get(card))

    def close(self) -> None:
        """Nothing to release."""


_SQLITE_DDL: Final = """
CREATE TABLE IF NOT EXISTS wallet_pins (
    iccid TEXT PRIMARY KEY,
    salt BLOB NOT NULL,
    pin_hash BLOB NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""
_PG_DDL: Final = """
CREATE TABLE IF NOT EXISTS wallet_pins (
    iccid TEXT PRIMARY KEY,
    salt BYTEA NOT NULL,
    pin_hash BYTEA NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


_SELECT_ROW: Final = "SELECT salt, pin_hash, failures FROM wallet_pins WHERE iccid = ?"


class SqlPinStore:
    """:class:`PinStore` in the table ``wallet_pins`` of the ledger's database.

    ``url``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://:memory:`` or
    ``postgresql://...``. One connection guarded by a lock; each operation is one transaction
    (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``SELECT ... FOR UPDATE``)."""

    def __init__(self, url: str, pepper: Pepper) -> None:
        self._pepper = pepper
        self._lock = threading.Lock()
        self._conn: Any
        try:
            if url.startswith("sqlite://"):
                self.dialect = "sqlite"
                path = url.removeprefix("sqlite://")
                path = ":memory:" if path == ":memory:" else path.removeprefix("/")
                if not path:
                    raise PinError("a sqlite URL names a file: sqlite:///path.db")
                conn = sqlite3.connect(
                    path, isolation_level=None, check_same_thread=False, timeout=30.0
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SQLITE_DDL)
                self._conn = conn
            elif url.startswith(("postgresql://", "postgres://")):
                import psycopg  # noqa: PLC0415 - only when PostgreSQL is configured

                self.dialect = "postgresql"
                self._conn = psycopg.connect(url, autocommit=True)
                self._conn.execute(_PG_DDL)
            else:
                raise PinError("the PIN store URL must be sqlite:// or postgresql://")
        except PinError:
            raise
        except Exception as exc:
            raise PinStoreError(f"cannot open the PIN store: {type(exc).__name__}") from None

    def __repr__(self) -> str:
        return f"SqlPinStore({self.dialect})"

    def _sql(self, text: str) -> str:
        return text if self.dialect == "sqlite" else text.replace("?", "%s")

    @contextmanager
    def _tx(self) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
        """One write transaction; yields ``run(sql, params) -> rows``."""
        with self._lock:
            conn = self._conn

            def run(text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
                cur = conn.execute(self._sql(text), params)
                return list(cur.fetchall()) if cur.description else []

            try:
                conn.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
            except Exception as exc:
                raise PinStoreError(f"PIN store: {type(exc).__name__}") from None
            try:
                yield run
            except BaseException as exc:
                with suppress(Exception):  # the first error is the one to report
                    conn.execute("ROLLBACK")
                if isinstance(exc, PinError | PinStoreError) or not isinstance(exc, Exception):
                    raise
                raise PinStoreError(f"PIN store: {type(exc).__name__}") from None
            try:
                conn.execute("COMMIT")
            except Exception as exc:
                raise PinStoreError(f"PIN store commit: {type(exc).__name__}") from None

    def _row(
        self, run: Callable[..., list[tuple[Any, ...]]], card: str
    ) -> tuple[bytes, bytes, int] | None:
        query = _SELECT_ROW if self.dialect == "sqlite" else _SELECT_ROW + " FOR UPDATE"
        rows = run(query, (card,))
        if not rows:
            return None
        salt, digest, failures = rows[0]
        return bytes(salt), bytes(digest), int(failures)

    def set_pin(self, iccid: str, pin: str) -> None:
        card = _check_iccid(iccid)
        salt = secrets.token_bytes(_SALT_LEN)
        digest = pin_hash(self._pepper, salt, pin)
        with self._tx() as run:
            run(
                "INSERT INTO wallet_pins (iccid, salt, pin_hash, failures) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (iccid) DO UPDATE SET salt = excluded.salt, "
                "pin_hash = excluded.pin_hash, failures = 0, updated_at = CURRENT_TIMESTAMP",
                (card, salt, digest),
            )

    def _read_row(self, card: str) -> tuple[bytes, bytes, int] | None:
        """The row by one plain statement (its own snapshot; no transaction, no lock)."""
        with self._lock:
            try:
                rows = self._conn.execute(self._sql(_SELECT_ROW), (card,)).fetchall()
            except Exception as exc:
                raise PinStoreError(f"PIN store: {type(exc).__name__}") from None
        if not rows:
            return None
        salt, digest, failures = rows[0]
        return bytes(salt), bytes(digest), int(failures)

    def verify(self, iccid: str, pin: str, *, count: bool = True) -> PinCheck:
        card, pin = _check_iccid(iccid), _check_pin(pin)
        # The usual case, the right PIN (or a locked or unset one), changes nothing: judged on
        # one plain read. Only a wrong PIN to be counted takes the write transaction, where it
        # is judged again on the locked row.
        check, _ = _judge(self._pepper, self._read_row(card), pin, False)
        if check.verdict is not PinVerdict.WRONG or not count:
            return check
        with self._tx() as run:
            check, failures = _judge(self._pepper, self._row(run, card), pin, count)
            if failures is not None:
                run(
                    "UPDATE wallet_pins SET failures = ?, updated_at = CURRENT_TIMESTAMP "
                    "WHERE iccid = ?",
                    (failures, card),
                )
            return check

    def succeeded(self, iccid: str) -> None:
        card = _check_iccid(iccid)
        with self._tx() as run:
            run(
                "UPDATE wallet_pins SET failures = 0, updated_at = CURRENT_TIMESTAMP "
                "WHERE iccid = ? AND failures > 0 AND failures < ?",
                (card, MAX_ATTEMPTS),
            )

    def unlock(self, iccid: str) -> None:
        card = _check_iccid(iccid)
        with self._tx() as run:
            run(
                "UPDATE wallet_pins SET failures = 0, updated_at = CURRENT_TIMESTAMP "
                "WHERE iccid = ?",
                (card,),
            )

    def status(self, iccid: str) -> PinCheck:
        return _status(self._read_row(_check_iccid(iccid)))

    def close(self) -> None:
        with self._lock, suppress(Exception):  # closing a broken connection
            self._conn.close()


def open_pin_store(url: str | None, pepper: Pepper) -> PinStore:
    """:class:`MemoryPinStore` for ``None``/``""``/``memory:``, else :class:`SqlPinStore`."""
    if url in (None, "", "memory:"):
        return MemoryPinStore(pepper)
    assert url is not None
    return SqlPinStore(url, pepper)
