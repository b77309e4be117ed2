"""Sending-side OTA counters: ETSI TS 102 225 §5.1.1 CNTR (5 octets), per card and key set.

The platform's counter for a (card, key set) pair is strictly increasing and never reused:
:meth:`CounterStore.next` makes the new value durable (committed, synced) *before* it returns
it, so a packet can only ever carry a counter that the store will not hand out again, whatever
crashes later. Values start at 1 (or a configured start) and end at ``2**40 - 1``, the largest
five-octet CNTR; past it the store refuses with :class:`CounterExhaustedError` (the key set
must be rotated). When a card answers "CNTR low" (TS 102 225 response status code ``02``)
with its own counter, :meth:`CounterStore.set_at_least` resynchronises: the next
value sent is above the one the card reported.

Backends, opened by URL with :func:`open_counter_store`:

* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite://:memory:``:
  WAL journal, ``synchronous=FULL`` (every commit is fsynced), ``BEGIN IMMEDIATE`` (the write
  lock is taken first, so concurrent processes queue on the busy timeout instead of failing),
  one ``INSERT .. ON CONFLICT DO UPDATE .. RETURNING`` per counter;
* ``postgresql://...`` (psycopg 3, autocommit): the same upsert as one statement; the row lock
  orders concurrent writers and the commit is durable when the statement returns.

Both are safe across threads (a lock per store) and processes (the database's locks). ICCIDs
are normalised as :func:`ota.keys.normalize_iccid` does (a trailing ``F`` filler dropped).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

from ota.keys import KeysError, normalize_iccid

if TYPE_CHECKING:
    import psycopg

#: The largest CNTR: five octets (TS 102 225 §5.1.1).
MAX_COUNTER: Final = 2**40 - 1

_SQLITE: Final = "sqlite://"
_TABLE_SQLITE: Final = """
CREATE TABLE IF NOT EXISTS ota_counter (
    iccid  TEXT    NOT NULL,
    keyset TEXT    NOT NULL,
    value  INTEGER NOT NULL CHECK (value BETWEEN 0 AND 1099511627775),
    PRIMARY KEY (iccid, keyset)
) WITHOUT ROWID
"""
_TABLE_PG: Final = """
CREATE TABLE IF NOT EXISTS ota_counter (
    iccid  TEXT   NOT NULL,
    keyset TEXT   NOT NULL,
    value  BIGINT NOT NULL CHECK (value BETWEEN 0 AND 1099511627775),
    PRIMARY KEY (iccid, keyset)
)
"""
# Insert ``start`` for a new pair, else add one unless exhausted; no row back = exhausted.
_NEXT_SQLITE: Final = (
    "INSERT INTO ota_counter (iccid, keyset, value) VALUES (?, ?, ?) "
    "ON CONFLICT (iccid, keyset) DO UPDATE SET value = value + 1 WHERE value < ? "
    "RETURNING value"
)
_NEXT_PG: Final = (
    "INSERT INTO ota_counter (iccid, keyset, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (iccid, keyset) DO UPDATE SET value = ota_counter.value + 1 "
    "WHERE ota_counter.value < %s RETURNING value"
)
_RAISE_SQLITE: Final = (
    "INSERT INTO ota_counter (iccid, keyset, value) VALUES (?, ?, ?) "
    "ON CONFLICT (iccid, keyset) DO UPDATE SET value = max(value, excluded.value) "
    "RETURNING value"
)
_RAISE_PG: Final = (
    "INSERT INTO ota_counter (iccid, keyset, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (iccid, keyset) DO UPDATE SET value = GREATEST(ota_counter.value, "
    "EXCLUDED.value) RETURNING value"
)
_PEEK_SQLITE: Final = "SELECT value FROM ota_counter WHERE iccid = ? AND keyset = ?"
_PEEK_PG: Final = "SELECT value FROM ota_counter WHERE iccid = %s AND keyset = %s"


class CounterError(Exception):
    """A counter store failure or refusal; ``str()`` is one line (no password)."""


class CounterInputError(CounterError, ValueError):
    """A bad URL, ICCID, key set name or counter value."""


class CounterExhaustedError(CounterError):
    """The card's counter for this key set reached ``2**40 - 1``: rotate the key set."""

    def __init__(self, iccid: str, keyset: str) -> None:
        self.iccid = iccid
        self.keyset = keyset
        super().__init__(
            f"OTA counter exhausted for card {iccid}, key set {keyset}: 2**40-1 reached; "
            f"rotate the card's key set"
        )


class CounterStorageError(CounterError):
    """The database failed or cannot be reached."""


class CounterStore(Protocol):
    """Durable, strictly increasing CNTR values per (card, key set)."""

    def next(self, iccid: str, keyset: str) -> int:
        """The next counter, durably recorded before it is returned."""
        ...

    def peek(self, iccid: str, keyset: str) -> int | None:
        """The last counter handed out (or raised to), None if none yet."""
        ...

    def set_at_least(self, iccid: str, keyset: str, value: int) -> int:
        """Make the last counter at least ``value`` (the next is above it); returns it."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def _check(iccid: str, keyset: str) -> tuple[str, str]:
    try:
        digits = normalize_iccid(iccid)
    except KeysError as exc:
        raise CounterInputError(str(exc)) from None
    if not isinstance(keyset, str) or not keyset or len(keyset) > 32 or not keyset.isprintable():
        raise CounterInputError(f"bad key set name {str(keyset)[:40]!r}")
    return digits, keyset


def _check_value(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNTER:
        raise CounterInputError(f"{what} must be an integer 0..2**40-1, got {value!r}")
    return value


def _check_start(start: int) -> int:
    if _check_value(start, "start") < 1:
        raise CounterInputError(f"start must be at least 1, got {start}")
    return start


def redact(url: str) -> str:
    """``url`` without its password (for messages)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (database drivers' messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class SqliteCounterStore:
    """Counters in a SQLite file (WAL, synchronous=FULL) or in memory."""

    def __init__(self, path: str, *, start: int = 1, timeout: float = 30.0) -> None:
        self.path = path
        self.start = _check_start(start)
        self._lock = threading.Lock()  # the connection (the writer)
        self._queue_lock = threading.Lock()
        self._queue: list[list[Any]] = []  # next() requests waiting for a transaction
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute(_TABLE_SQLITE)
        except (sqlite3.Error, OSError) as exc:
            raise CounterStorageError(f"counter store {path}: {one_line(exc)}") from None

    def __repr__(self) -> str:
        return f"SqliteCounterStore({self.path!r}, start={self.start})"

    def _write(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = self._conn.execute(sql, params).fetchall()
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise CounterStorageError(f"counter store {self.path}: {one_line(exc)}") from None
        return rows

    def next(self, iccid: str, keyset: str) -> int:
        """The next counter of (``iccid``, ``keyset``), committed before it is returned.

        Group commit: the threads asking at the same moment queue their requests; whichever
        holds the write lock serves the whole queue in one transaction and one durable
        commit, and the others find their counter ready when they get the lock."""
        iccid, keyset = _check(iccid, keyset)
        request: list[Any] = [iccid, keyset, None]  # the third slot: the counter or an error
        with self._queue_lock:
            self._queue.append(request)
        with self._lock:
            if request[2] is None:
                self._serve()
        outcome = request[2]
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, int)
        return outcome

    def _serve(self) -> None:
        """Hand out a counter to every queued request, in one transaction (lock held)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                values = [
                    self._conn.execute(
                        _NEXT_SQLITE, (iccid, keyset, self.start, MAX_COUNTER)
                    ).fetchall()
                    for iccid, keyset, _ in batch
                ]
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            for request in batch:
                request[2] = CounterStorageError(f"counter store {self.path}: {one_line(exc)}")
            return
        for request, rows in zip(batch, values, strict=True):
            request[2] = int(rows[0][0]) if rows else CounterExhaustedError(request[0], request[1])

    def peek(self, iccid: str, keyset: str) -> int | None:
        """The last counter handed out, None if none yet."""
        iccid, keyset = _check(iccid, keyset)
        with self._lock:
            try:
                row = self._conn.execute(_PEEK_SQLITE, (iccid, keyset)).fetchone()
            except sqlite3.Error as exc:
                raise CounterStorageError(f"counter store {self.path}: {one_line(exc)}") from None
        return None if row is None else int(row[0])

    def set_at_least(self, iccid: str, keyset: str, value: int) -> int:
        """Raise the last counter to ``value`` if below (after "counter too low")."""
        iccid, keyset = _check(iccid, keyset)
        _check_value(value, "counter")
        rows = self._write(_RAISE_SQLITE, (iccid, keyset, value))
        return int(rows[0][0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()


class PostgresCounterStore:
    """Counters in PostgreSQL (psycopg 3, autocommit: each statement is its own transaction)."""

    def __init__(self, url: str, *, start: int = 1, connect_timeout: int = 10) -> None:
        import psycopg  # noqa: PLC0415 - only this backend needs the driver

        self.url = url
        self.start = _check_start(start)
        self._lock = threading.Lock()
        self._psycopg = psycopg
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                url, autocommit=True, connect_timeout=connect_timeout
            )
        except psycopg.Error as exc:
            raise CounterStorageError(
                f"counter store {redact(url)}: cannot connect: {one_line(exc)}"
            ) from None
        try:
            self._conn.execute(_TABLE_PG)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            pass  # another process created it at the same moment
        except psycopg.Error as exc:
            self._conn.close()
            raise CounterStorageError(f"counter store {redact(url)}: {one_line(exc)}") from None

    def __repr__(self) -> str:
        return f"PostgresCounterStore({redact(self.url)!r}, start={self.start})"

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except self._psycopg.Error as exc:
                raise CounterStorageError(
                    f"counter store {redact(self.url)}: {one_line(exc)}"
                ) from None

    def next(self, iccid: str, keyset: str) -> int:
        """The next counter of (``iccid``, ``keyset``), committed before it is returned."""
        iccid, keyset = _check(iccid, keyset)
        rows = self._run(_NEXT_PG, (iccid, keyset, self.start, MAX_COUNTER))
        if not rows:
            raise CounterExhaustedError(iccid, keyset)
        return int(rows[0][0])

    def peek(self, iccid: str, keyset: str) -> int | None:
        """The last counter handed out, None if none yet."""
        iccid, keyset = _check(iccid, keyset)
        rows = self._run(_PEEK_PG, (iccid, keyset))
        return None if not rows else int(rows[0][0])

    def set_at_least(self, iccid: str, keyset: str, value: int) -> int:
        """Raise the last counter to ``value`` if below (after "counter too low")."""
        iccid, keyset = _check(iccid, keyset)
        _check_value(value, "counter")
        return int(self._run(_RAISE_PG, (iccid, keyset, value))[0][0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite://`` URL: ``sqlite:///rel.db`` -> ``rel.db``,
    ``sqlite:////abs.db`` -> ``/abs.db``, ``sqlite://:memory:`` -> ``:memory:``."""
    rest = url[len(_SQLITE) :]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise CounterInputError(f"expected sqlite:///PATH or sqlite://:memory:, got {url!r}")
    return rest[1:]


def open_counter_store(url: str, *, start: int = 1) -> SqliteCounterStore | PostgresCounterStore:
    """A counter store for ``url`` (``sqlite://...`` or ``postgresql://...``)."""
    if url.startswith(_SQLITE):
        return SqliteCounterStore(sqlite_path(url), start=start)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresCounterStore(url, start=start)
    raise CounterInputError(
        f"unsupported counter store URL {redact(url)!r} (sqlite:// or postgresql://)"
    )
