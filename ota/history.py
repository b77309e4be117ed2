"""A durable :class:`~ota.receiver.CounterHistory`: the counters (and packet digests) of
cards' secured MO, in a SQLite file or PostgreSQL, so that replay protection survives a
gateway restart and is shared by every gateway instance (ETSI TS 102 225 §5.1.1: a receiving
entity refuses a counter that is not higher than the last one it accepted).

Table ``mo_history`` (``iccid``, ``keyset``, ``counter``, ``digest``): the last ``window``
counters of each card and key set, each with the SHA-256 of its packet, so that an SMSC
redelivery (the same counter and octets) is told from a replay (the same counter, other
octets). :meth:`SqlHistory.record` runs in one transaction:

1. the counter is known: its digest (nothing changes);
2. it is not above the card's highest: :class:`~ota.errors.CounterTooLow`;
3. else it is stored (and, at every ``window``-th counter, those more than ``window`` below
   it are forgotten).

SQLite runs in WAL mode at ``synchronous=NORMAL``: a record survives a process crash (what a
restart is); a power cut may lose the last few, which could then be replayed once. Concurrent
writers: SQLite serialises them (``BEGIN IMMEDIATE``); on PostgreSQL two instances storing the
same counter at once meet on the primary key and the loser judges again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any, Final

from ota.counters import CounterStorageError, one_line, redact, sqlite_path
from ota.errors import CounterTooLow

__all__ = ["SqlHistory", "history_url_for"]

_TABLE: Final = """
CREATE TABLE IF NOT EXISTS mo_history (
    iccid TEXT NOT NULL,
    keyset TEXT NOT NULL,
    counter BIGINT NOT NULL,
    digest {blob} NOT NULL,
    PRIMARY KEY (iccid, keyset, counter)
)
"""
#: The counter's digest, if known, and the card's highest counter, in one statement.
_JUDGE: Final = (
    "SELECT (SELECT digest FROM mo_history WHERE iccid = ? AND keyset = ? AND counter = ?), "
    "(SELECT MAX(counter) FROM mo_history WHERE iccid = ? AND keyset = ?)"
)
_STORE: Final = "INSERT INTO mo_history (iccid, keyset, counter, digest) VALUES (?, ?, ?, ?)"
_FORGET: Final = "DELETE FROM mo_history WHERE iccid = ? AND keyset = ? AND counter < ?"


def history_url_for(counter_url: str) -> str:
    """Where the MO history lives beside an OTA counter store: PostgreSQL, the same database;
    SQLite, a file of its own next to the counters' (``ota.db`` -> ``ota-mo.db``), because
    two connections writing one SQLite file contend for its write lock, and SQLite's busy
    handler waits for it by sleeping (milliseconds at a time)."""
    if not counter_url.startswith("sqlite://"):
        return counter_url
    path = sqlite_path(counter_url)
    if path == ":memory:":
        return counter_url
    file = Path(path)
    return "sqlite:///" + str(file.with_name(f"{file.stem}-mo{file.suffix or '.db'}"))


class SqlHistory:
    """:class:`~ota.receiver.CounterHistory` in ``url`` (``sqlite:///PATH`` or
    ``postgresql://...``); one connection, used under a lock."""

    def __init__(self, url: str, *, window: int = 32) -> None:
        if window <= 0:
            raise ValueError("window must be > 0")
        self.url = url
        self._window = window
        self._lock = threading.Lock()
        self._pg = url.startswith(("postgresql://", "postgres://"))
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        try:
            if self._pg:
                import psycopg  # noqa: PLC0415 - only this backend needs the driver

                self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
                self._unique: type[BaseException] = psycopg.errors.UniqueViolation
                self._conn: Any = psycopg.connect(url, autocommit=True, connect_timeout=10)
                # another process may create it at the same moment
                with contextlib.suppress(
                    psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable
                ):
                    self._conn.execute(_TABLE.format(blob="BYTEA"))
            else:
                path = sqlite_path(url)
                if path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._errors = (sqlite3.Error,)
                self._unique = sqlite3.IntegrityError
                self._conn = sqlite3.connect(
                    path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
                if path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode = WAL")
                    # checkpoints on a thread of their own, not inside an MO's commit
                    self._conn.execute("PRAGMA wal_autocheckpoint = 0")
                    self._checkpointer = threading.Thread(
                        target=self._checkpoint_loop,
                        args=(path,),
                        daemon=True,
                        name="mo-history-checkpoint",
                    )
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._conn.execute("PRAGMA busy_timeout = 30000")
                self._conn.execute(_TABLE.format(blob="BLOB"))
                if self._checkpointer is not None:
                    self._checkpointer.start()
        except (sqlite3.Error, OSError) as exc:
            raise CounterStorageError(f"MO history {redact(url)}: {one_line(exc)}") from None
        except Exception as exc:  # psycopg's errors, without importing it for SQLite
            raise CounterStorageError(f"MO history {redact(url)}: {one_line(exc)}") from None

    def __repr__(self) -> str:
        return f"SqlHistory({redact(self.url)!r}, window={self._window})"

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._pg else text

    def record(self, key: tuple[str, str], counter: int, digest: bytes) -> bytes | None:
        """See :class:`~ota.receiver.CounterHistory`."""
        iccid, keyset = key
        with self._lock:
            for _ in range(3):  # a concurrent instance may store the same counter first
                try:
                    return self._record(iccid, keyset, counter, digest)
                except CounterTooLow:
                    raise
                except self._unique:
                    continue
                except self._errors as exc:
                    raise CounterStorageError(
                        f"MO history {redact(self.url)}: {one_line(exc)}"
                    ) from None
            raise CounterStorageError(f"MO history {redact(self.url)}: counter {counter} contended")

    def _record(self, iccid: str, keyset: str, counter: int, digest: bytes) -> bytes | None:
        conn = self._conn
        conn.execute("BEGIN" if self._pg else "BEGIN IMMEDIATE")
        try:
            known, highest = conn.execute(
                self._sql(_JUDGE), (iccid, keyset, counter, iccid, keyset)
            ).fetchone()
            if known is not None:
                conn.execute("COMMIT")
                return bytes(known)
            if highest is not None and counter <= int(highest):
                conn.execute("COMMIT")
                raise CounterTooLow(f"counter {counter} is not above {highest}", counter=counter)
            conn.execute(self._sql(_STORE), (iccid, keyset, counter, digest))
            if counter % self._window == 0:  # now and then: the card's older counters
                conn.execute(self._sql(_FORGET), (iccid, keyset, counter - self._window))
            conn.execute("COMMIT")
            return None
        except CounterTooLow:
            raise
        except BaseException:
            with contextlib.suppress(*self._errors):  # gone: the caller sees the first error
                conn.execute("ROLLBACK")
            raise

    def _checkpoint_loop(self, path: str) -> None:
        """A PASSIVE checkpoint every second (never waits for the writer) on its own
        connection, as the ledger does (``ledger.db``): a checkpoint inside an MO's commit
        stalled every worker waiting for the history."""
        try:
            raw = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(1.0):
                with contextlib.suppress(sqlite3.Error):  # busy: the next round
                    raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            raw.close()

    def close(self) -> None:
        """Close the connection (and stop the checkpointer)."""
        self._stop.set()
        if self._checkpointer is not None and self._checkpointer.is_alive():
            self._checkpointer.join(timeout=10)
        with self._lock, contextlib.suppress(*self._errors):
            self._conn.close()
