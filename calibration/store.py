"""Persistence of calibration on the platform (issue 6): the handset table, the cards'
calibration records, the instrument results that teach the table, and the TACs that hold
cards back.

What is kept:

* **handset models** (``cal_model``): TAC (3GPP TS 23.003 §6.2.1, 8 digits) -> model name, A
  in tenths of a dB, provenance (``lab``, ``instrument``, ``import``); the profile is not
  stored, it follows from A (:mod:`calibration.rf`, docs/calibration.md);
* **instrument results** (``cal_instrument_result``): every business-hall measurement of one
  phone's A (0..30 dB, the range :class:`calibration.table.HandsetTable` learns from), with
  the card, the IMEI and when, oldest first;
* **cards** (``cal_card``): ICCID -> MSISDN, active or not, the method the card is calibrated
  by (none, SMS, instrument), when, for which IMEI, the A and levels written (the 32-byte file
  of :mod:`calibration.profile` too), and the OTA command in flight if any (its counter, the
  IMEI and file it writes, the reply language, when it was sent);
* **held-back cards** (``cal_unknown_tac``): (TAC, ICCID) pairs, one per card told to visit a
  business hall for that TAC, so a TAC is counted once per card however often it writes.

Backends, opened by URL with :meth:`CalibrationStore.open` (the schema is created and
migrated on open, under the database's write lock):

* ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://:memory:``: WAL journal,
  ``synchronous=FULL``, write transactions ``BEGIN IMMEDIATE``;
* ``postgresql://...`` (psycopg 3): each write is one transaction; migrations and learning
  take an advisory transaction lock.

The SQL is written once (``?`` placeholders, rewritten for psycopg) and both backends store
the same text and integers (times as ISO-8601 UTC text with microseconds, so text order is
time order; the file as upper-case hex), so they behave alike; the tests run both. Errors
are :class:`StoreError` with one-line messages that never show a password.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

from calibration.profile import CalibrationRecord, Method, ProfileError, decode
from calibration.table import HandsetModel, Provenance
from ota.counters import one_line, redact

__all__ = [
    "DEFAULT_URL",
    "CalibrationStore",
    "CardState",
    "CoverageCounts",
    "PendingCalibration",
    "StoreError",
    "StoreInputError",
    "StoreUnavailableError",
    "TacHoldBack",
]

DEFAULT_URL: Final = "sqlite:///var/stkpay-calibration.db"
SCHEMA_VERSION: Final = 1
#: pg_advisory_xact_lock key of the calibration store ("stkpay-c" in ASCII).
_PG_LOCK: Final = 0x73746B7061792D63

Dialect = Literal["sqlite", "postgresql"]

_ID = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}

#: Migrations, in order: migration ``n`` brings the schema to version ``n + 1``.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE cal_model (
            tac        TEXT    NOT NULL PRIMARY KEY,
            name       TEXT    NOT NULL,
            a_tenths   INTEGER NOT NULL CHECK (a_tenths BETWEEN 0 AND 300),
            provenance TEXT    NOT NULL,
            updated_at TEXT    NOT NULL
        )""",
        """CREATE TABLE cal_instrument_result (
            id          {id},
            tac         TEXT    NOT NULL,
            a_tenths    INTEGER NOT NULL,
            iccid       TEXT    NOT NULL,
            imei        TEXT    NOT NULL,
            name        TEXT    NOT NULL,
            measured_at TEXT    NOT NULL
        )""",
        "CREATE INDEX cal_instrument_result_tac ON cal_instrument_result (tac, id)",
        """CREATE TABLE cal_card (
            iccid            TEXT    NOT NULL PRIMARY KEY,
            msisdn           TEXT,
            active           INTEGER NOT NULL DEFAULT 1,
            method           TEXT    NOT NULL,
            imei             TEXT,
            calibrated_at    TEXT,
            a_tenths         INTEGER,
            payment_code     INTEGER,
            door_code        INTEGER,
            record           TEXT,
            pending_counter  BIGINT,
            pending_imei     TEXT,
            pending_record   TEXT,
            pending_language TEXT,
            pending_at       TEXT,
            updated_at       TEXT    NOT NULL
        )""",
        """CREATE TABLE cal_unknown_tac (
            tac      TEXT NOT NULL,
            iccid    TEXT NOT NULL,
            msisdn   TEXT,
            first_at TEXT NOT NULL,
            PRIMARY KEY (tac, iccid)
        )""",
    ),
)

_METHOD_TEXT: Final = {Method.NONE: "none", Method.SMS: "sms", Method.INSTRUMENT: "instrument"}
_TEXT_METHOD: Final = {v: k for k, v in _METHOD_TEXT.items()}


_SELECT_CARD: Final = (
    "SELECT iccid, msisdn, active, method, imei, calibrated_at, a_tenths, payment_code, "
    "door_code, record, pending_counter, pending_imei, pending_record, pending_language, "
    "pending_at FROM cal_card WHERE iccid = ?"
)


class StoreError(Exception):
    """A calibration store failure; ``str()`` is one line without a password."""


class StoreInputError(StoreError, ValueError):
    """A bad URL or value handed to the store."""


class StoreUnavailableError(StoreError):
    """The database failed or cannot be reached."""


def _iso(when: datetime) -> str:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise StoreInputError("times must be timezone-aware datetimes")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _tenths(value: Decimal, what: str) -> int:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise StoreInputError(f"{what} must be a finite Decimal")
    scaled = value.scaleb(1)
    if scaled != scaled.to_integral_value() or abs(scaled) > 1000:
        raise StoreInputError(f"{what} must be within +-100 dB on the 0.1 dB grid, not {value}")
    return int(scaled)


def _iccid(iccid: str) -> str:
    if not (isinstance(iccid, str) and iccid.isascii() and iccid.isdigit()):
        raise StoreInputError("an ICCID is decimal digits")
    if not 10 <= len(iccid) <= 20:
        raise StoreInputError(f"an ICCID is 10 to 20 digits, got {len(iccid)}")
    return iccid


def _level(code: int | None) -> Decimal | None:
    return None if code is None else (Decimal(code - 128) / 2).quantize(Decimal("0.1"))


def _code(level: Decimal | None) -> int | None:
    return None if level is None else int(level * 2) + 128


@dataclass(frozen=True, slots=True)
class PendingCalibration:
    """An OTA calibration command sent to a card and not yet confirmed by its PoR."""

    counter: int
    imei: str
    record: bytes
    language: str
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class CardState:
    """What the platform knows of one card's calibration.

    ``method`` is how the card is calibrated *for ``imei``* (the phone it last reported);
    the levels and ``record`` (the 32-byte file confirmed on the card) are set with SMS and
    instrument, None with none.
    """

    iccid: str
    msisdn: str | None
    active: bool
    method: Method
    imei: str | None
    calibrated_at: datetime | None
    a_db: Decimal | None
    payment_dbm: Decimal | None
    door_dbm: Decimal | None
    record: bytes | None
    pending: PendingCalibration | None

    @property
    def calibrated(self) -> bool:
        """Whether the card holds levels for its current phone."""
        return self.method is not Method.NONE


@dataclass(frozen=True, slots=True)
class CoverageCounts:
    """Active cards by calibration method."""

    active: int
    sms: int
    instrument: int
    uncalibrated: int


@dataclass(frozen=True, slots=True)
class TacHoldBack:
    """A TAC that sent cards to a business hall: cards counted, and those still uncalibrated
    (active and with method none)."""

    tac: str
    cards: int
    held_back: int
    subscribers: int


class _Db:
    """One connection and the two dialects' differences."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        if url.startswith("sqlite://"):
            self.dialect: Dialect = "sqlite"
            path = _sqlite_path(url)
            try:
                if path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA busy_timeout = 30000")
                if path != ":memory:":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailableError(f"calibration store {url}: {one_line(exc)}") from None
            self._sqlite = conn
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            import psycopg  # noqa: PLC0415 - only this backend needs the driver

            self._psycopg = psycopg
            try:
                self._pg = psycopg.connect(url, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise StoreUnavailableError(
                    f"calibration store {redact(url)}: cannot connect: {one_line(exc)}"
                ) from None
        else:
            raise StoreInputError(
                f"unsupported calibration store URL {redact(url)!r} (sqlite:// or postgresql://)"
            )

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self.dialect == "sqlite":
            return (sqlite3.Error,)
        return (self._psycopg.Error,)

    @contextlib.contextmanager
    def tx(self, *, lock: bool = False) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
        """A write transaction; ``run(sql, *params)`` executes in it. ``lock`` serialises
        with other writers that also lock (PostgreSQL advisory lock; SQLite's write lock is
        always taken first)."""
        with self._lock:
            try:
                if self._sqlite is not None:
                    conn = self._sqlite

                    def run_sqlite(sql: str, *params: Any) -> list[tuple[Any, ...]]:
                        return [tuple(r) for r in conn.execute(sql, params).fetchall()]

                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield run_sqlite
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                else:
                    pg = self._pg

                    def run_pg(sql: str, *params: Any) -> list[tuple[Any, ...]]:
                        cur = pg.execute(sql.replace("?", "%s"), params)
                        return [tuple(r) for r in cur.fetchall()] if cur.description else []

                    with pg.transaction():
                        if lock:
                            pg.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
                        yield run_pg
            except self._errors() as exc:
                raise StoreUnavailableError(
                    f"calibration store {redact(self.url)}: {one_line(exc)}"
                ) from None

    def close(self) -> None:
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
            if self._pg is not None:
                self._pg.close()


def _sqlite_path(url: str) -> str:
    rest = url[len("sqlite://") :]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise StoreInputError(f"expected sqlite:///PATH or sqlite://:memory:, got {url!r}")
    return rest[1:]


def _model_row(row: tuple[Any, ...]) -> HandsetModel:
    tac, name, a_tenths, provenance = row
    return HandsetModel(
        str(tac), str(name), Decimal(int(a_tenths)).scaleb(-1), Provenance(provenance)
    )


def _card_row(row: tuple[Any, ...]) -> CardState:
    (iccid, msisdn, active, method, imei, at, a_tenths, pay, door, record) = row[:10]
    (p_counter, p_imei, p_record, p_language, p_at) = row[10:]
    pending = None
    if p_counter is not None:
        pending = PendingCalibration(
            counter=int(p_counter),
            imei=str(p_imei),
            record=bytes.fromhex(p_record),
            language=str(p_language),
            sent_at=datetime.fromisoformat(p_at),
        )
    return CardState(
        iccid=str(iccid),
        msisdn=msisdn,
        active=bool(active),
        method=_TEXT_METHOD[method],
        imei=imei,
        calibrated_at=_time(at),
        a_db=None if a_tenths is None else Decimal(int(a_tenths)).scaleb(-1),
        payment_dbm=_level(pay),
        door_dbm=_level(door),
        record=None if record is None else bytes.fromhex(record),
        pending=pending,
    )


class CalibrationStore:
    """The calibration database (SQLite or PostgreSQL, chosen by URL)."""

    def __init__(self, db: _Db) -> None:
        self._db = db
        self._migrate()

    @classmethod
    def open(cls, url: str = DEFAULT_URL) -> CalibrationStore:
        """Connect to ``url`` and create or migrate the schema."""
        if not isinstance(url, str):
            raise StoreInputError("the calibration store URL must be text")
        return cls(_Db(url))

    def __repr__(self) -> str:
        return f"CalibrationStore({redact(self._db.url)!r})"

    @property
    def dialect(self) -> Dialect:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    def close(self) -> None:
        """Release the connection."""
        self._db.close()

    def __enter__(self) -> CalibrationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._db.tx(lock=True) as run:
            run("CREATE TABLE IF NOT EXISTS cal_schema (version INTEGER NOT NULL)")
            rows = run("SELECT version FROM cal_schema")
            version = int(rows[0][0]) if rows else 0
            if not rows:
                run("INSERT INTO cal_schema (version) VALUES (0)")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"calibration store schema version {version} is newer than this "
                    f"software's {SCHEMA_VERSION}"
                )
            for statements in _MIGRATIONS[version:]:
                for sql in statements:
                    run(sql.replace("{id}", _ID[self._db.dialect]))
            run("UPDATE cal_schema SET version = ?", SCHEMA_VERSION)

    def schema_version(self) -> int:
        """The schema version of the database."""
        with self._db.tx() as run:
            return int(run("SELECT version FROM cal_schema")[0][0])

    # -- the handset table ----------------------------------------------------------------

    def put_models(self, models: Iterable[HandsetModel], *, at: datetime) -> int:
        """Insert or replace ``models`` (all in one transaction); the number written."""
        rows = []
        for model in models:
            if not isinstance(model, HandsetModel):
                raise StoreInputError("put_models takes HandsetModel values")
            rows.append(
                (model.tac, model.name, _tenths(model.a_db, "A"), model.provenance.value, _iso(at))
            )
        with self._db.tx() as run:
            for row in rows:
                run(
                    "INSERT INTO cal_model (tac, name, a_tenths, provenance, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tac) DO UPDATE SET name = excluded.name, "
                    "a_tenths = excluded.a_tenths, provenance = excluded.provenance, "
                    "updated_at = excluded.updated_at",
                    *row,
                )
        return len(rows)

    def add_model_if_absent(self, model: HandsetModel, *, at: datetime) -> bool:
        """Insert ``model`` unless its TAC is known; whether it was inserted."""
        with self._db.tx() as run:
            rows = run(
                "INSERT INTO cal_model (tac, name, a_tenths, provenance, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tac) DO NOTHING RETURNING tac",
                model.tac,
                model.name,
                _tenths(model.a_db, "A"),
                model.provenance.value,
                _iso(at),
            )
        return bool(rows)

    def get_model(self, tac: str) -> HandsetModel | None:
        """The model of ``tac``, or None."""
        with self._db.tx() as run:
            rows = run("SELECT tac, name, a_tenths, provenance FROM cal_model WHERE tac = ?", tac)
        return _model_row(rows[0]) if rows else None

    def models(self) -> list[HandsetModel]:
        """Every model, sorted by TAC."""
        with self._db.tx() as run:
            rows = run("SELECT tac, name, a_tenths, provenance FROM cal_model ORDER BY tac")
        return [_model_row(r) for r in rows]

    def delete_model(self, tac: str) -> bool:
        """Forget ``tac``'s model; whether it was there."""
        with self._db.tx() as run:
            return bool(run("DELETE FROM cal_model WHERE tac = ? RETURNING tac", tac))

    def add_instrument_result(
        self,
        tac: str,
        a_db: Decimal,
        *,
        iccid: str,
        imei: str,
        at: datetime,
        name: str = "",
        window: int = 3,
    ) -> tuple[tuple[Decimal, ...], HandsetModel | None]:
        """Record one phone's measured A for ``tac``; returns the latest ``window`` results
        (oldest first, this one last) and the TAC's model if it is known."""
        a_tenths = _tenths(a_db, "A")
        with self._db.tx(lock=True) as run:
            run(
                "INSERT INTO cal_instrument_result (tac, a_tenths, iccid, imei, name, "
                "measured_at) VALUES (?, ?, ?, ?, ?, ?)",
                tac,
                a_tenths,
                _iccid(iccid),
                imei,
                name,
                _iso(at),
            )
            rows = run(
                "SELECT a_tenths FROM cal_instrument_result WHERE tac = ? ORDER BY id DESC LIMIT ?",
                tac,
                window,
            )
            known = run("SELECT tac, name, a_tenths, provenance FROM cal_model WHERE tac = ?", tac)
        results = tuple(Decimal(int(r[0])).scaleb(-1) for r in reversed(rows))
        return results, (_model_row(known[0]) if known else None)

    def instrument_results(self, tac: str) -> tuple[Decimal, ...]:
        """Every instrument result recorded for ``tac``, oldest first."""
        with self._db.tx() as run:
            rows = run("SELECT a_tenths FROM cal_instrument_result WHERE tac = ? ORDER BY id", tac)
        return tuple(Decimal(int(r[0])).scaleb(-1) for r in rows)

    # -- cards ----------------------------------------------------------------------------

    def card(self, iccid: str) -> CardState | None:
        """The calibration state of ``iccid``, or None for a card never seen."""
        with self._db.tx() as run:
            rows = run(_SELECT_CARD, _iccid(iccid))
        return _card_row(rows[0]) if rows else None

    def _ensure(
        self, run: Callable[..., list[tuple[Any, ...]]], iccid: str, msisdn: str | None, at: str
    ) -> None:
        run(
            "INSERT INTO cal_card (iccid, msisdn, active, method, updated_at) "
            "VALUES (?, ?, 1, 'none', ?) ON CONFLICT (iccid) DO NOTHING",
            iccid,
            msisdn,
            at,
        )
        if msisdn is not None:
            run("UPDATE cal_card SET msisdn = ? WHERE iccid = ?", msisdn, iccid)

    def register_card(self, iccid: str, *, msisdn: str | None, at: datetime) -> None:
        """Make ``iccid`` known (active, uncalibrated) if it is not; update its MSISDN."""
        with self._db.tx() as run:
            self._ensure(run, _iccid(iccid), msisdn, _iso(at))

    def set_active(self, iccid: str, active: bool, *, at: datetime) -> None:
        """Mark the card active or not (closed, swapped): only active cards count in coverage."""
        with self._db.tx() as run:
            self._ensure(run, _iccid(iccid), None, _iso(at))
            run(
                "UPDATE cal_card SET active = ?, updated_at = ? WHERE iccid = ?",
                1 if active else 0,
                _iso(at),
                iccid,
            )

    def mark_uncalibrated(self, iccid: str, *, msisdn: str | None, imei: str, at: datetime) -> None:
        """The card now sits in phone ``imei`` and holds no levels for it; clears any
        pending command."""
        when = _iso(at)
        with self._db.tx() as run:
            self._ensure(run, _iccid(iccid), msisdn, when)
            run(
                "UPDATE cal_card SET method = 'none', imei = ?, calibrated_at = NULL, "
                "a_tenths = NULL, payment_code = NULL, door_code = NULL, record = NULL, "
                "pending_counter = NULL, pending_imei = NULL, pending_record = NULL, "
                "pending_language = NULL, pending_at = NULL, updated_at = ? WHERE iccid = ?",
                imei,
                when,
                iccid,
            )

    def mark_pending(
        self,
        iccid: str,
        *,
        msisdn: str | None,
        imei: str,
        counter: int,
        record: bytes,
        language: str,
        at: datetime,
    ) -> None:
        """A calibration command with ``counter`` writing ``record`` was sent: the card is
        uncalibrated for ``imei`` until its PoR confirms (a newer command replaces it)."""
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
            raise StoreInputError("the OTA counter is a non-negative integer")
        when = _iso(at)
        with self._db.tx() as run:
            self._ensure(run, _iccid(iccid), msisdn, when)
            run(
                "UPDATE cal_card SET method = 'none', imei = ?, calibrated_at = NULL, "
                "a_tenths = NULL, payment_code = NULL, door_code = NULL, record = NULL, "
                "pending_counter = ?, pending_imei = ?, pending_record = ?, "
                "pending_language = ?, pending_at = ?, updated_at = ? WHERE iccid = ?",
                imei,
                counter,
                imei,
                bytes(record).hex().upper(),
                language,
                when,
                when,
                iccid,
            )

    def clear_pending(self, iccid: str, counter: int, *, at: datetime) -> bool:
        """Forget the pending command if it is the one with ``counter``; whether it was."""
        with self._db.tx() as run:
            rows = run(
                "UPDATE cal_card SET pending_counter = NULL, pending_imei = NULL, "
                "pending_record = NULL, pending_language = NULL, pending_at = NULL, "
                "updated_at = ? WHERE iccid = ? AND pending_counter = ? RETURNING iccid",
                _iso(at),
                _iccid(iccid),
                counter,
            )
        return bool(rows)

    def mark_calibrated(
        self, iccid: str, record: bytes, *, msisdn: str | None, at: datetime
    ) -> CalibrationRecord:
        """The card holds the calibration file ``record`` (32 bytes, method SMS or
        instrument), confirmed at ``at``: recorded, pending command cleared."""
        try:
            decoded = decode(bytes(record))
        except ProfileError as exc:
            raise StoreInputError(f"not a calibration file: {exc}") from None
        if not decoded.calibrated:
            raise StoreInputError("mark_calibrated needs a calibrated record (SMS or instrument)")
        assert decoded.imei is not None and decoded.a_db is not None
        when = _iso(at)
        with self._db.tx() as run:
            self._ensure(run, _iccid(iccid), msisdn, when)
            run(
                "UPDATE cal_card SET method = ?, imei = ?, calibrated_at = ?, a_tenths = ?, "
                "payment_code = ?, door_code = ?, record = ?, pending_counter = NULL, "
                "pending_imei = NULL, pending_record = NULL, pending_language = NULL, "
                "pending_at = NULL, updated_at = ? WHERE iccid = ?",
                _METHOD_TEXT[decoded.method],
                decoded.imei.digits,
                when,
                _tenths(decoded.a_db, "A"),
                _code(decoded.payment_dbm),
                _code(decoded.door_dbm),
                bytes(record).hex().upper(),
                when,
                iccid,
            )
        return decoded

    # -- held-back cards and coverage -----------------------------------------------------

    def count_hold_back(self, tac: str, iccid: str, *, msisdn: str | None, at: datetime) -> bool:
        """Count ``iccid`` against ``tac`` (once per card); whether it was new."""
        with self._db.tx() as run:
            rows = run(
                "INSERT INTO cal_unknown_tac (tac, iccid, msisdn, first_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tac, iccid) DO NOTHING RETURNING tac",
                tac,
                _iccid(iccid),
                msisdn,
                _iso(at),
            )
        return bool(rows)

    def hold_backs(self) -> list[TacHoldBack]:
        """The TACs that sent cards to a business hall, by cards still held back, then by
        cards counted, then TAC."""
        with self._db.tx() as run:
            rows = run(
                "SELECT u.tac, COUNT(*), "
                "SUM(CASE WHEN c.iccid IS NULL OR (c.active = 1 AND c.method = 'none') "
                "THEN 1 ELSE 0 END), COUNT(DISTINCT u.msisdn) "
                "FROM cal_unknown_tac u LEFT JOIN cal_card c ON c.iccid = u.iccid "
                "GROUP BY u.tac"
            )
        out = [TacHoldBack(str(t), int(n), int(h or 0), int(s)) for t, n, h, s in rows]
        out.sort(key=lambda x: (-x.held_back, -x.cards, x.tac))
        return out

    def coverage_counts(self) -> CoverageCounts:
        """Active cards by method."""
        with self._db.tx() as run:
            rows = run("SELECT method, COUNT(*) FROM cal_card WHERE active = 1 GROUP BY method")
        by = {str(m): int(n) for m, n in rows}
        sms, instrument, none = by.get("sms", 0), by.get("instrument", 0), by.get("none", 0)
        return CoverageCounts(sms + instrument + none, sms, instrument, none)
