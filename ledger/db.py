"""Database access for the ledger: URLs, the two backends, a connection pool, migrations.

Backends:

* SQLite (``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://:memory:``) through
  :mod:`sqlite3`: WAL journal, ``synchronous=FULL`` (a commit is on disk before the caller is
  answered, also across a power cut), a 30 s busy timeout, foreign keys on. Write transactions
  are ``BEGIN IMMEDIATE`` (the database's write lock, taken up front, so a transaction never
  fails to upgrade a read lock), serialized inside one process by a mutex so that threads queue
  instead of sleeping in SQLite's busy handler.
* PostgreSQL (``postgresql://user@host:port/db``) through psycopg 3: READ COMMITTED write
  transactions whose rows are taken with ``SELECT ... FOR UPDATE``; REPEATABLE READ, READ ONLY
  snapshots for queries and ``verify``.

SQL is written once with ``?`` placeholders and rewritten to ``%s`` for psycopg. Timestamps are
aware UTC datetimes in Python; SQLite stores them as ISO-8601 text in UTC, always with
microseconds and ``+00:00`` (so that text order is time order), PostgreSQL as ``timestamptz``.

Batches: several reads go as one statement whose parts come back as JSON arrays; on
PostgreSQL lists and rows to write travel as one JSON text parameter each (encoded by the C
JSON encoder, unpacked by the server with ``jsonb_array_elements``; psycopg's array adapter
would dump them element by element in Python), so statement texts do not vary with the
batch and stay prepared.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Final, Literal

import psycopg

from ledger.errors import InvalidRequest, StorageError
from ledger.schema import MIGRATIONS, VERSION_TABLE

Dialect = Literal["sqlite", "postgresql"]
#: pg_advisory_xact_lock key of the migration lock ("stkpay-l" in ASCII).
_MIGRATION_LOCK: Final = 0x73746B7061792D6C


@dataclass(frozen=True, slots=True)
class DbUrl:
    """A parsed ledger URL."""

    dialect: Dialect
    target: str  # a file path, ":memory:", or the PostgreSQL conninfo URL

    def __repr__(self) -> str:
        return f"DbUrl({self.dialect}, {redact_url(self.target)})"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and messages)."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{head}://{user}{':***' if colon else ''}@{host}"


def parse_url(url: str) -> DbUrl:
    """Parse ``sqlite:///rel``, ``sqlite:////abs``, ``sqlite://:memory:`` or a PostgreSQL URL."""
    if url.startswith(("postgresql://", "postgres://")):
        return DbUrl("postgresql", url)
    if url in ("sqlite://:memory:", "sqlite:///:memory:"):
        return DbUrl("sqlite", ":memory:")
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return DbUrl("sqlite", url[len("sqlite:///") :])
    raise InvalidRequest(
        f"unsupported ledger URL {redact_url(url)!r}: use sqlite:///PATH, sqlite://:memory: "
        "or postgresql://user@host:port/db"
    )


#: bound parameters per statement (SQLite allows 32766, PostgreSQL 65535)
_MAX_PARAMS: Final = 30_000


#: a statement to send: SQL, parameters, binary parameters (PostgreSQL)
Statement = tuple[str, Sequence[Any], bool]


def _compact_json() -> Callable[[Any], str]:
    """A JSON encoder for containers: compact, keys sorted, UTF-8 kept (not ``\\u``-escaped).

    ``json.JSONEncoder.encode`` builds a new C encoder at every call, which costs more than
    encoding a small dict; this builds it once (falling back on the pure-Python encoder)."""
    encoder = json.JSONEncoder(
        ensure_ascii=False, sort_keys=True, separators=(",", ":"), check_circular=False
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return encoder.encode
    encode = make(
        None, encoder.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )

    def dumps(value: Any) -> str:
        if isinstance(value, dict | list | tuple):
            return "".join(encode(value, 0))
        return encoder.encode(value)

    return dumps


#: JSON text of ``value``: compact, keys sorted, non-ASCII kept (the stored form of contexts
#: and results, and the form batches of rows travel in to PostgreSQL)
dumps: Final = _compact_json()


#: the C JSON scanner behind ``json.loads``, called directly: SQLite's JSON functions give
#: compact, valid text (no surrounding whitespace to skip, nothing after the value)
_scan_json: Final[Callable[[str, int], tuple[Any, int]]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    return sql.replace("?", "%s")


@lru_cache(maxsize=64)
def _pg_columns(types: tuple[str, ...], names: tuple[str, ...] | None = None) -> str:
    """The select list unpacking a JSON row ``r`` (an array) into columns of ``types``."""
    cols = [f"r->{i}" if t == "jsonb" else f"CAST(r->>{i} AS {t})" for i, t in enumerate(types)]
    if names is not None:
        cols = [f"{c} AS {n}" for c, n in zip(cols, names, strict=True)]
    return ", ".join(cols)


def _flat(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The rows' values, row after row (the parameters of a multi-row statement)."""
    if len(rows) == 1:
        return list(rows[0])
    return list(chain.from_iterable(rows))


# Statement texts depend only on the statement's shape (and, on SQLite, its row count):
# built once per shape, not per batch.
@lru_cache(maxsize=256)
def _pg_insert_sql(prefix: str, types: tuple[str, ...], suffix: str) -> str:
    return (
        f"{prefix} SELECT {_pg_columns(types)} "  # noqa: S608 - constant SQL
        f"FROM jsonb_array_elements(CAST(? AS jsonb)) AS r{suffix}"
    )


@lru_cache(maxsize=1024)
def _sqlite_insert_sql(prefix: str, width: int, count: int, suffix: str) -> str:
    template = f"({', '.join('?' * width)})"
    return f"{prefix} VALUES {', '.join([template] * count)}{suffix}"


@lru_cache(maxsize=1024)
def _sqlite_in(column: str, count: int) -> str:
    return f"{column} IN ({', '.join('?' * count)})"


@lru_cache(maxsize=256)
def _sqlite_select_sql(queries: tuple[tuple[str, str], ...]) -> str:
    parts = [f"(SELECT json_group_array(json_array({c})) {r})" for c, r in queries]
    return f"SELECT {', '.join(parts)}"


def _set_clause(
    table: str, cols: tuple[str, ...], added: tuple[str, ...], values: list[str]
) -> str:
    return ", ".join(
        f"{c} = {table}.{c} + {v}" if c in added else f"{c} = {v}"
        for c, v in zip(cols, values, strict=True)
    )


@lru_cache(maxsize=1024)
def _pg_update_sql(  # noqa: PLR0917 - positional: an lru_cache key
    table: str,
    key: str,
    cols: tuple[str, ...],
    types: tuple[str, ...],
    added: tuple[str, ...],
    count: int,
) -> str:
    sets = _set_clause(table, cols, added, [f"v.{c}" for c in cols])
    # The LIMIT (the row count itself) is the planner's only clue to how many rows the JSON
    # holds: without it jsonb_array_elements counts as 100 rows, and an update of a few rows
    # of a large table became a hash join over all of it.
    return (
        f"UPDATE {table} SET {sets} FROM (SELECT {_pg_columns(types, (key, *cols))} "  # noqa: S608 - constant names
        f"FROM jsonb_array_elements(CAST(? AS jsonb)) AS r LIMIT {count}) AS v "
        f"WHERE {table}.{key} = v.{key}"
    )


@lru_cache(maxsize=1024)
def _sqlite_update_sql(
    table: str, key: str, cols: tuple[str, ...], added: tuple[str, ...], count: int
) -> str:
    sets = _set_clause(table, cols, added, [f"v.column{i + 2}" for i in range(len(cols))])
    template = f"({', '.join('?' * (len(cols) + 1))})"
    return (
        f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([template] * count)}) "  # noqa: S608
        f"AS v WHERE {table}.{key} = v.column1"
    )


class Conn:
    """One database connection with the few operations the ledger needs.

    Round trips are what a batch costs on PostgreSQL (and, on SQLite, every row the sqlite3
    module steps through releases the GIL): ``select_many`` sends several queries in one
    pipeline, ``pipeline`` sends every statement of a block (writes, ``COMMIT``) at once, and a
    write transaction's ``BEGIN`` travels with the first statement after it.
    """

    def __init__(self, dialect: Dialect, raw: Any) -> None:
        self.dialect: Dialect = dialect
        self.raw = raw
        self.broken = False
        self._begin: str | None = None  # PostgreSQL: BEGIN not sent yet
        self._pipe: Any = None  # PostgreSQL: the open pipeline

    # -- statements ----------------------------------------------------------------------
    def _pg(self, sql: str, params: Sequence[Any], *, binary: bool = False) -> Any:
        """Send one statement on PostgreSQL (with a pending BEGIN in the same round trip)."""
        if self._begin is not None and self._pipe is None:
            with self.pipeline():
                return self._pg(sql, params, binary=binary)
        self._send_begin()
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(_pg_sql(sql), params, binary=binary)

    def _send_begin(self) -> None:
        if self._begin is not None:
            begin, self._begin = self._begin, None
            self.raw.execute(begin)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; return its rows (empty for statements without rows)."""
        if self.dialect == "sqlite":
            cur = self.raw.execute(sql, params)
            rows = cur.fetchall()
            cur.close()
            return rows  # type: ignore[no-any-return]
        if self._pipe is not None:
            raise RuntimeError("results are read after the pipeline, not inside it")
        cur = self._pg(sql, params)
        return cur.fetchall() if cur.description is not None else []

    def send(self, sql: str, params: Sequence[Any] = (), *, binary: bool = False) -> None:
        """Run one statement whose result is not needed (queued inside :meth:`pipeline`);
        ``binary``: PostgreSQL binary parameters."""
        if self.dialect == "sqlite":
            self.raw.execute(sql, params).close()
        else:
            self._pg(sql, params, binary=binary)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run a statement expected to return at most one row."""
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """PostgreSQL: send the block's statements together, wait once at the end (errors
        raise there). SQLite: no-op."""
        if self.dialect == "sqlite" or self._pipe is not None:
            yield
            return
        first: psycopg.Error | None = None
        try:
            with self.raw.pipeline() as pipe:
                self._pipe = pipe
                try:
                    yield
                except psycopg.Error as exc:
                    # psycopg surfaces an error as soon as it sees it; close the pipeline
                    # quietly (it would log the follow-up "pipeline aborted"), then raise it
                    first = exc
                finally:
                    self._pipe = None
        except psycopg.Error:
            if first is None:
                raise
        if first is not None:
            raise first

    def in_(self, column: str, values: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """A ``column IN (...)`` condition on a text column and its parameters. PostgreSQL:
        ``= ANY(ARRAY(...))`` over one JSON text parameter, so that the statement text (parsed
        and prepared once) never varies, and the list is encoded by the C JSON encoder and
        parsed by the server rather than dumped element by element by psycopg's Python array
        adapter."""
        if self.dialect == "postgresql":
            return (
                f"{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST(? AS jsonb))))",
                (dumps(list(values)),),
            )
        return _sqlite_in(column, len(values)), tuple(values)

    def select(self, cols: str, rest: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """``SELECT {cols} {rest}``: all rows. On SQLite the rows come back aggregated into one
        JSON row, because the sqlite3 module releases the GIL at every row it steps through and
        winning it back among busy threads costs far more than the row."""
        return self.select_many([(cols, rest, params)])[0]

    def select_many(
        self,
        queries: Sequence[tuple[str, str, Sequence[Any]]],
        *,
        sends: Sequence[Statement] = (),
    ) -> list[list[tuple[Any, ...]]]:
        """Several :meth:`select` queries after the statements ``sends`` (whose results are
        not needed), in one round trip on PostgreSQL. Several queries travel as one
        statement, ``SELECT (q1), (q2), ...``, each aggregated into a JSON array: they run
        in that order (row locks taken by ``FOR UPDATE`` in one are held when the next
        runs), for the cost of one statement in the client, and on SQLite one release of
        the GIL instead of one per query. Results are read once the pipeline is closed, so
        a failure raises once, from the pipeline."""
        if self.dialect == "sqlite":
            for sql, params, _binary in sends:
                self.send(sql, params)
            if not queries:
                return []
            sql = _sqlite_select_sql(tuple([(c, r) for c, r, _p in queries]))
            if len(queries) == 1:
                params = queries[0][2]
            else:
                params = [p for _c, _r, ps in queries for p in ps]
            row = self.one(sql, params)
            if row is None:
                raise StorageError("the database returned no row for a batch read")
            return [[] if v is None else [tuple(r) for r in _scan_json(v, 0)[0]] for v in row]
        if self._pipe is not None:
            raise RuntimeError("results are read after the pipeline, not inside it")
        if len(queries) == 1 and not sends and self._begin is None:
            cols, rest, params = queries[0]
            return [self.execute(f"SELECT {cols} {rest}", params)]
        with self.pipeline():
            for sql, params, binary in sends:
                self._pg(sql, params, binary=binary)
            if len(queries) == 1:
                cols, rest, params = queries[0]
                cursor = self._pg(f"SELECT {cols} {rest}", params)
            elif queries:
                parts = [
                    f"(SELECT COALESCE(json_agg(q.j), '[]') FROM "  # noqa: S608 - constant SQL
                    f"(SELECT json_build_array({c}) AS j {r}) AS q)"
                    for c, r, _p in queries
                ]
                params = [p for _c, _r, ps in queries for p in ps]
                cursor = self._pg(f"SELECT {', '.join(parts)}", params)
        if not queries:
            return []
        if len(queries) == 1:
            return [cursor.fetchall()]
        row = cursor.fetchone()
        if row is None:
            raise StorageError("the database returned no row for a batch read")
        return [[tuple(r) for r in part] for part in row]

    def insert_rows(
        self,
        prefix: str,
        types: tuple[str, ...],
        rows: Sequence[Sequence[Any]],
        suffix: str = "",
    ) -> None:
        """``{prefix} VALUES (...), (...), ... {suffix}``: many rows in one statement."""
        for sql, params, binary in self.insert_statements(prefix, types, rows, suffix):
            self.send(sql, params, binary=binary)

    def insert_statements(
        self,
        prefix: str,
        types: tuple[str, ...],
        rows: Sequence[Sequence[Any]],
        suffix: str = "",
    ) -> list[Statement]:
        """The statements of :meth:`insert_rows`. ``types`` are the columns' SQL types.
        PostgreSQL: the rows travel as one JSON array of arrays (:meth:`row_ts` and
        :meth:`row_json` values), unpacked by ``jsonb_array_elements``: one parameter, encoded
        in C, and a statement text that never varies (parsed and prepared once) whatever the
        number of rows. SQLite: multi-row ``VALUES``."""
        if not rows:
            return []
        if self.dialect == "postgresql":
            return [(_pg_insert_sql(prefix, types, suffix), (dumps(rows),), False)]
        width = len(types)
        per = max(1, _MAX_PARAMS // len(rows[0]))
        if len(rows) <= per:  # the usual case: one statement, its text cached per row count
            return [(_sqlite_insert_sql(prefix, width, len(rows), suffix), _flat(rows), False)]
        return [
            (_sqlite_insert_sql(prefix, width, len(chunk), suffix), _flat(chunk), False)
            for chunk in (rows[i : i + per] for i in range(0, len(rows), per))
        ]

    def update_rows(
        self,
        table: str,
        key: str,
        cols: Sequence[str],
        types: tuple[str, ...],
        rows: Sequence[Sequence[Any]],
        *,
        increment: bool | Sequence[str] = False,
    ) -> None:
        """Set (or with ``increment`` add to: all of them, or those named) ``cols`` of the rows
        whose ``key`` is each row's first value, in one statement (see
        :meth:`update_statements`)."""
        for sql, params, binary in self.update_statements(
            table, key, cols, types, rows, increment=increment
        ):
            self.send(sql, params, binary=binary)

    def update_statements(
        self,
        table: str,
        key: str,
        cols: Sequence[str],
        types: tuple[str, ...],
        rows: Sequence[Sequence[Any]],
        *,
        increment: bool | Sequence[str] = False,
    ) -> list[Statement]:
        """The statements of :meth:`update_rows` (SQLite: ``UPDATE ... FROM (VALUES ...)``;
        PostgreSQL: ``UPDATE ... FROM`` the rows as one JSON parameter, as
        :meth:`insert_statements`). ``types``: the SQL types of key and columns."""
        if not rows:
            return []
        names = tuple(cols)
        added = names if increment is True else tuple(increment or ())
        if self.dialect == "postgresql":
            return [
                (_pg_update_sql(table, key, names, types, added, len(rows)), (dumps(rows),), False)
            ]
        per = max(1, _MAX_PARAMS // (len(names) + 1))
        if len(rows) <= per:  # the usual case: one statement, its text cached per row count
            return [(_sqlite_update_sql(table, key, names, added, len(rows)), _flat(rows), False)]
        return [
            (_sqlite_update_sql(table, key, names, added, len(chunk)), _flat(chunk), False)
            for chunk in (rows[i : i + per] for i in range(0, len(rows), per))
        ]

    def send_together(self, statements: Sequence[Statement]) -> None:
        """Run data-changing statements whose order does not matter (they touch different
        rows, none waits on another's unique key): PostgreSQL runs them as one statement
        (the others as ``WITH`` clauses of the last), which saves their per-statement cost
        in the client; SQLite one by one."""
        if self.dialect == "sqlite" or len(statements) <= 1:
            for sql, params, binary in statements:
                self.send(sql, params, binary=binary)
            return
        *first, (last_sql, last_params, _binary) = statements
        ctes = ", ".join(f"w{i} AS ({sql})" for i, (sql, _p, _b) in enumerate(first))
        params = [p for _sql, ps, _b in first for p in ps]
        params.extend(last_params)
        self.send(f"WITH {ctes} {last_sql}", params)

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter tuple (pipelined on PostgreSQL)."""
        if not seq:
            return
        if self.dialect == "sqlite":
            self.raw.executemany(sql, seq)
            return
        with self.pipeline(), self.raw.cursor() as cur:
            self._send_begin()
            cur.executemany(_pg_sql(sql), seq)

    # -- transactions --------------------------------------------------------------------
    def begin_write(self) -> None:
        """Start a write transaction (SQLite: take the write lock now; PostgreSQL: the BEGIN
        goes with the next statement)."""
        if self.dialect == "sqlite":
            self.raw.execute("BEGIN IMMEDIATE")
        else:
            self._begin = "BEGIN"

    def begin_read(self) -> None:
        """Start a read-only snapshot."""
        if self.dialect == "sqlite":
            self.raw.execute("BEGIN")
        else:
            self._begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def scan_tables(self) -> None:
        """Let the open transaction's plans scan whole tables (PostgreSQL; the ledger's
        sessions plan index lookups only, see :meth:`Database._open`): for reads of every
        row, such as ``verify``."""
        if self.dialect == "postgresql":
            self.execute("SET LOCAL enable_seqscan = on")

    def commit(self) -> None:
        """Commit the open transaction (queued when inside :meth:`pipeline`)."""
        if self.dialect == "postgresql" and self._begin is not None:
            self._begin = None  # nothing was sent: nothing to commit
            return
        self.send("COMMIT")

    def rollback(self) -> None:
        """Roll back the open transaction, if any; marks the connection broken on failure."""
        self._begin = None
        try:
            if self.dialect == "sqlite":
                if self.raw.in_transaction:
                    self.raw.execute("ROLLBACK")
            else:
                self.raw.rollback()
                if self.raw.info.transaction_status != 0:  # not idle: issue the SQL
                    self.raw.execute("ROLLBACK")
        except Exception:
            self.broken = True

    # -- value conversion ----------------------------------------------------------------
    def ts(self, value: datetime) -> Any:
        """A timestamp parameter."""
        if self.dialect == "sqlite":
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.isoformat(timespec="microseconds")
        return value

    def row_ts(self, value: datetime) -> str:
        """A timestamp inside rows written by :meth:`insert_rows` / :meth:`update_rows`: ISO
        8601 text in UTC with microseconds (SQLite stores it so; PostgreSQL casts it)."""
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.isoformat(timespec="microseconds")

    def row_json(self, value: Any) -> Any:
        """A JSON column value inside rows written by :meth:`insert_rows`: its text on SQLite;
        on PostgreSQL the value itself (it travels nested in the rows' JSON)."""
        if self.dialect == "sqlite":
            return dumps(value)
        return value

    def from_ts(self, value: Any) -> datetime:
        """A timestamp column value as an aware UTC datetime."""
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(str(value)).astimezone(UTC)

    @staticmethod
    def from_json(value: Any) -> Any:
        """A JSON column value as Python data."""
        if isinstance(value, str | bytes):
            return json.loads(value)
        return value

    def close(self) -> None:
        """Close the connection, ignoring errors."""
        with contextlib.suppress(Exception):  # a dead connection may fail to close
            self.raw.close()


def _sqlite_target(target: str) -> tuple[str, bool]:
    if target == ":memory:":
        return f"file:stkpay-ledger-{uuid.uuid4().hex}?mode=memory&cache=shared", True
    path = Path(target)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    return str(path), False


#: Seconds between the checkpointer's WAL checkpoints (SQLite).
CHECKPOINT_INTERVAL: Final = 0.5
#: WAL pages (4 KiB) past which a checkpoint waits for readers to reuse the file: 64 MiB.
WAL_LIMIT_PAGES: Final = 16_384


class Database:
    """A pool of connections to one ledger database; thread-safe."""

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self.url = parse_url(url)
        self.dialect: Dialect = self.url.dialect
        self._memory = self.url.target == ":memory:"
        if self.dialect == "sqlite":
            self._sqlite_path, uri = _sqlite_target(self.url.target)
            self._sqlite_uri = uri
        # an in-memory SQLite database is one connection shared under the pool's discipline
        self._max = 1 if self._memory else max(1, pool_size)
        self._idle: list[Conn] = []  # idle connections, the last used last (under _lock)
        self._slots = threading.BoundedSemaphore(self._max)
        self._lock = threading.Lock()
        self._all: list[Conn] = []
        self._closed = False
        #: serializes SQLite write transactions inside this process
        self.write_mutex = threading.Lock()
        self._keeper: Conn | None = None
        if self._memory:
            # keep the shared-cache memory database alive for the pool's lifetime
            self._keeper = self._open()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.dialect == "sqlite" and not self._memory:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="ledger-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database file every :data:`CHECKPOINT_INTERVAL`
        seconds (PASSIVE: never waits for readers or blocks the writer; SQLite restarts the
        WAL from its start once a checkpoint has caught up). When the WAL has outgrown
        :data:`WAL_LIMIT_PAGES` anyway, a RESTART checkpoint waits for the readers so that it
        can be reused."""
        try:
            raw = sqlite3.connect(
                self._sqlite_path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:
            return  # the pool's own connections report the problem
        try:
            raw.execute("PRAGMA busy_timeout=30000")
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                try:
                    row = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if row is not None and int(row[1]) > WAL_LIMIT_PAGES:
                        raw.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                except sqlite3.Error:
                    continue  # busy or locked: the next round tries again
            with contextlib.suppress(sqlite3.Error):
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            raw.close()

    def _open(self) -> Conn:
        try:
            raw: Any
            if self.dialect == "sqlite":
                raw = sqlite3.connect(
                    self._sqlite_path,
                    timeout=30.0,
                    isolation_level=None,
                    check_same_thread=False,
                    uri=self._sqlite_uri,
                )
                if not self._memory:
                    mode = raw.execute("PRAGMA journal_mode=WAL").fetchone()
                    if mode is None or str(mode[0]).lower() != "wal":
                        raise StorageError(f"SQLite refused WAL mode ({mode!r})")
                raw.execute("PRAGMA synchronous=FULL")
                raw.execute("PRAGMA foreign_keys=ON")
                raw.execute("PRAGMA busy_timeout=30000")
                raw.execute("PRAGMA cache_size=-32768")  # 32 MiB: the hot index pages stay in
                # WAL checkpoints run on the checkpointer thread (below), not inside a
                # commit: a checkpoint copying thousands of pages and syncing the database
                # file stalled the commit that triggered it by tens of milliseconds.
                raw.execute("PRAGMA wal_autocheckpoint=0")
                return Conn("sqlite", raw)
            raw = psycopg.connect(self.url.target, autocommit=True, connect_timeout=10)
            # Every statement of the ledger's own work is a key lookup, prepared once and
            # planned generically. A plan made while a table was young (``loads`` starts
            # empty) is a sequential scan, and it stays one, however big the table grows,
            # until autovacuum next analyzes the table: the pending-loads lookup went from
            # 20 us to 500 us, and the batch prefetch from 0.6 to 3.7 ms, within one run of
            # the end-to-end bench. Whole-table work (``verify``, the migrations) turns scans
            # back on for its own transaction (:meth:`Conn.scan_tables`).
            raw.execute("SET enable_seqscan = off")
            return Conn("postgresql", raw)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(
                f"cannot open the ledger database {redact_url(self.url.target)}: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from exc

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """Borrow a connection; broken ones are closed instead of returned."""
        conn = self.acquire()
        try:
            yield conn
        finally:
            self.release(conn)

    def acquire(self) -> Conn:
        """Borrow a connection (waiting while all are lent); give it back with
        :meth:`release`. :meth:`connection` without its context manager, for hot paths."""
        if self._closed:
            raise StorageError("the ledger is closed")
        self._slots.acquire()
        try:
            with self._lock:
                if self._idle:
                    return self._idle.pop()  # the most recently used: its caches are warm
            conn = self._open()
            with self._lock:
                self._all.append(conn)
            return conn
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Conn) -> None:
        """Give back a connection from :meth:`acquire`; a broken one is closed instead."""
        try:
            if conn.broken or self._closed:
                conn.close()
                with self._lock:
                    if conn in self._all:
                        self._all.remove(conn)
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    def migrate(self) -> int:
        """Apply pending migrations under the migration lock; return the schema version."""
        with self.connection() as conn:
            try:
                conn.begin_write()
                if conn.dialect == "postgresql":
                    conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                conn.scan_tables()  # a backfill reads whole tables
                conn.execute(VERSION_TABLE[conn.dialect])
                row = conn.one("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                current = int(row[0]) if row else 0
                for migration in MIGRATIONS:
                    if migration.version <= current:
                        continue
                    statements = (
                        migration.sqlite if conn.dialect == "sqlite" else migration.postgresql
                    )
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_version (version, description, applied_at) "
                        "VALUES (?, ?, ?)",
                        (migration.version, migration.description, conn.ts(datetime.now(UTC))),
                    )
                    current = migration.version
                conn.commit()
                return current
            except StorageError:
                conn.rollback()
                raise
            except Exception as exc:
                conn.rollback()
                raise StorageError(
                    f"ledger migration failed: {type(exc).__name__}: {_first_line(exc)}"
                ) from exc

    def close(self) -> None:
        """Close every connection (and stop the checkpointer after a last checkpoint)."""
        self._closed = True
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
        with self._lock:
            conns, self._all = list(self._all), []
        for conn in conns:
            conn.close()
        if self._keeper is not None:
            self._keeper.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
