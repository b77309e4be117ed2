"""Ledger storage: URLs, the SQLite settings, migrations (also when processes start together)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.db import Database, dumps, parse_url, redact_url
from ledger.errors import InvalidRequest, StorageError
from ledger.schema import MIGRATIONS, SCHEMA_VERSION, Migration
from ledger.service import Ledger

from .helpers import ID_NUMBER, MSISDN, raw_sql


@pytest.mark.parametrize(
    ("url", "dialect", "target"),
    [
        ("sqlite:///var/ledger.db", "sqlite", "var/ledger.db"),
        ("sqlite:////abs/ledger.db", "sqlite", "/abs/ledger.db"),
        ("sqlite://:memory:", "sqlite", ":memory:"),
        ("postgresql://u@h:5432/db", "postgresql", "postgresql://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql", "postgres://u@h/db"),
    ],
)
def test_parse_url(url: str, dialect: str, target: str) -> None:
    """The documented URL forms select the backend and the target."""
    parsed = parse_url(url)
    assert (parsed.dialect, parsed.target) == (dialect, target)


@pytest.mark.parametrize("url", ["", "sqlite://", "sqlite:///", "mysql://x/y", "/tmp/x.db"])
def test_parse_url_refuses_others(url: str) -> None:
    """Anything else is refused with the accepted forms in the message."""
    with pytest.raises(InvalidRequest, match="sqlite:///PATH"):
        parse_url(url)


def test_passwords_never_shown() -> None:
    """URLs in messages and reprs have their password masked."""
    assert redact_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact_url("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert "s3cret" not in repr(parse_url("postgresql://bob:s3cret@db:5432/x"))
    with pytest.raises(StorageError) as info:
        Ledger.connect("postgresql://bob:s3cret@127.0.0.1:1/x")
    assert "s3cret" not in str(info.value)
    assert "cannot open" in str(info.value)


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    """SQLite runs in WAL mode with synchronous=FULL and foreign keys on."""
    db = Database(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        with db.connection() as conn:
            assert conn.one("PRAGMA journal_mode") == ("wal",)
            assert conn.one("PRAGMA synchronous") == (2,)
            assert conn.one("PRAGMA foreign_keys") == (1,)
    finally:
        db.close()


def test_sqlite_wal_is_checkpointed_off_the_commit_path(tmp_path: Path) -> None:
    """Commits never checkpoint (wal_autocheckpoint 0); the checkpointer thread copies the WAL
    into the database file on its own, so the file alone (WAL ignored) soon holds every
    committed transfer, and closing the ledger stops the thread."""
    path = tmp_path / "l.db"
    ledger = Ledger.connect(f"sqlite:///{path}", group_commit=True)
    try:
        with ledger._db.connection() as conn:
            assert conn.one("PRAGMA wal_autocheckpoint") == (0,)
        ledger.open_wallet(MSISDN, ID_NUMBER)
        for i in range(50):
            ledger.deposit(MSISDN, 100, "bank", request_id=f"d{i}")

        def in_file() -> int:
            raw = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                return int(raw.execute("SELECT COUNT(*) FROM transfers").fetchone()[0])
            except sqlite3.OperationalError:  # the schema itself still only in the WAL
                return 0
            finally:
                raw.close()

        deadline = time.monotonic() + 15
        while in_file() < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_file() == 50
        thread = ledger._db._checkpointer
        assert thread is not None and thread.is_alive()
    finally:
        ledger.close()
    assert not thread.is_alive()


def test_relative_sqlite_path_creates_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path is relative to the working directory; missing directories are made."""
    monkeypatch.chdir(tmp_path)
    with Ledger.connect("sqlite:///var/sub/ledger.db") as led:
        led.open_wallet(MSISDN, ID_NUMBER)
    assert (tmp_path / "var" / "sub" / "ledger.db").exists()


def test_memory_ledger() -> None:
    """sqlite://:memory: is a working ledger for the life of the object."""
    with Ledger.connect("sqlite://:memory:") as led:
        led.open_wallet(MSISDN, ID_NUMBER)
        led.deposit(MSISDN, 100, "bank", request_id="d")
        assert led.wallet(MSISDN).cash == 100
        assert led.verify().ok


def test_migrations_apply_once(ledger_url: str) -> None:
    """Connecting again does not re-apply migrations; schema_version records each once."""
    for _ in range(2):
        Ledger.connect(ledger_url).close()
    rows = raw_sql(ledger_url, "SELECT version FROM schema_version ORDER BY version")
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_concurrent_first_start_migrates_once(ledger_url: str) -> None:
    """Eight ledgers starting at once on an empty database: each migration runs once and all
    of them work."""
    errors: list[BaseException] = []
    ledgers: list[Ledger] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        try:
            led = Ledger.connect(ledger_url, group_commit=False)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            ledgers.append(led)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert raw_sql(ledger_url, "SELECT COUNT(*) FROM schema_version") == [(SCHEMA_VERSION,)]
        ledgers[0].open_wallet(MSISDN, ID_NUMBER)
        assert ledgers[-1].wallet(MSISDN).state == "open"
    finally:
        for led in ledgers:
            led.close()


def test_closed_ledger_refuses_calls(ledger_url: str) -> None:
    """After close() every call fails with StorageError; close() is idempotent."""
    led = Ledger.connect(ledger_url)
    led.close()
    led.close()
    with pytest.raises(StorageError, match="closed"):
        led.open_wallet(MSISDN, ID_NUMBER)
    with pytest.raises(StorageError, match="closed"):
        led.verify()


def test_unreachable_postgres_is_a_storage_error() -> None:
    """A database that cannot be reached is a StorageError, not a refusal."""
    with pytest.raises(StorageError, match="cannot open"):
        Ledger.connect("postgresql://nobody@127.0.0.1:1/nothing")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON)
def test_dumps_is_the_canonical_json_text(value: Any) -> None:
    """The cached C encoder writes exactly what json.dumps(sort_keys, compact, UTF-8 kept)
    writes, the stored form of contexts and results, for any JSON value."""
    expected = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert dumps(value) == expected
    assert json.loads(dumps(value)) == value


_TRICKY = ['a"b', "back\\slash", "{brace}", "com,ma", "sp ace", "NULL", "", "汉字"]


def test_batched_statements_carry_any_text(ledger_url: str) -> None:
    """Multi-row inserts and updates, IN lists and several queries in one statement give the
    values back exactly, whatever the text holds (quotes, backslashes, braces, commas, the
    word NULL, non-ASCII), with NULLs, timestamps and JSON (rows travel as JSON on
    PostgreSQL)."""
    db = Database(ledger_url)
    pg = db.dialect == "postgresql"
    at = datetime(2026, 3, 2, 2, 0, 0, 123456, tzinfo=UTC)
    try:
        with db.connection() as conn:
            conn.begin_write()
            conn.execute(
                "CREATE TABLE scratch (k TEXT PRIMARY KEY, n BIGINT, t "
                + ("TIMESTAMPTZ" if pg else "TEXT")
                + ", j "
                + ("JSONB" if pg else "TEXT")
                + ")"
            )
            rows = [
                (key, i, conn.row_ts(at), conn.row_json({"key": key, "i": i}))
                for i, key in enumerate(_TRICKY)
            ]
            rows.append(("none", None, None, conn.row_json(None)))
            conn.insert_rows(
                "INSERT INTO scratch (k, n, t, j)", ("text", "bigint", "timestamptz", "jsonb"), rows
            )
            conn.update_rows(
                "scratch",
                "k",
                ("n",),
                ("text", "bigint"),
                [(k, 10) for k in _TRICKY],
                increment=True,
            )
            cond, params = conn.in_("k", [*_TRICKY, "missing"])
            first, second = conn.select_many(
                [
                    ("k, n, t, j", f"FROM scratch WHERE {cond}", params),
                    ("k, j", "FROM scratch WHERE n IS NULL", ()),
                ]
            )
            conn.commit()
        got = {row[0]: row for row in first}
        assert sorted(got) == sorted(_TRICKY)
        for i, key in enumerate(_TRICKY):
            _k, n, t, j = got[key]
            assert n == i + 10
            assert conn.from_ts(t) == at
            assert conn.from_json(j) == {"key": key, "i": i}
        assert [(k, conn.from_json(j)) for k, j in second] == [("none", None)]
    finally:
        db.close()


def _scans(plan: tuple[Any, ...] | None) -> list[tuple[str, str]]:
    """(node type, relation) of every node of an ``EXPLAIN (FORMAT JSON)`` answer."""
    assert plan is not None
    document = plan[0] if isinstance(plan[0], list) else json.loads(plan[0])

    def walk(node: dict[str, Any]) -> list[tuple[str, str]]:
        found = [(node["Node Type"], node.get("Relation Name", ""))]
        for child in node.get("Plans", []):
            found += walk(child)
        return found

    return walk(document[0]["Plan"])


def test_batched_update_of_a_few_rows_looks_them_up_by_key(pg_url: str) -> None:
    """PostgreSQL: a batched UPDATE of two rows of a 5,000-row table, statistics gathered,
    plans index lookups, not a scan of the table (the JSON rows' count is given to the
    planner; it used to assume 100 and hash-join the whole table)."""
    db = Database(pg_url)
    try:
        db.migrate()
        with db.connection() as conn:
            rows = [
                [f"cash:8613{n:09d}", "cash", "CNY", 0, "2026-11-27T00:00:00+00:00"]
                for n in range(5000)
            ]
            sql = "INSERT INTO accounts (id, kind, currency, balance, created_at)"
            for stmt, params, _ in conn.insert_statements(
                sql, ("text", "text", "text", "bigint", "timestamptz"), rows
            ):
                conn.execute(stmt, params)
            conn.execute("ANALYZE accounts")
            ((stmt, params, _),) = conn.update_statements(
                "accounts",
                "id",
                ("balance",),
                ("text", "bigint"),
                [["cash:8613000000007", 5], ["cash:8613000000042", 7]],
                increment=True,
            )
            plan = conn.one("EXPLAIN (FORMAT JSON) " + stmt, params)
    finally:
        db.close()
    nodes = _scans(plan)
    assert ("Seq Scan", "accounts") not in nodes, nodes
    assert any(kind.startswith("Index") and rel == "accounts" for kind, rel in nodes), nodes


def test_young_table_is_still_looked_up_by_index(pg_url: str) -> None:
    """PostgreSQL: on a new ledger (``loads`` analyzed while empty) the pending loads of a card
    are read through the partial index, not by a scan of the table: the generic plan made
    then would stay a scan, however many loads follow, until the next ANALYZE. Only a
    transaction that reads every row (``verify``) plans scans, and only for itself."""
    db = Database(pg_url)
    try:
        db.migrate()
        with db.connection() as conn:
            conn.execute("ANALYZE loads")
            lookup = conn.one(
                "EXPLAIN (FORMAT JSON) SELECT id FROM loads "
                "WHERE state IN ('reserved', 'in_doubt') AND iccid = ? ORDER BY created_at, id",
                ("89860086137000000131",),
            )
            conn.begin_read()
            conn.scan_tables()
            whole = conn.one("EXPLAIN (FORMAT JSON) SELECT COUNT(*) FROM loads")
            conn.commit()
            after = conn.one("SHOW enable_seqscan")
    finally:
        db.close()
    nodes = _scans(lookup)
    assert ("Seq Scan", "loads") not in nodes, nodes
    assert any(kind.startswith("Index") and rel == "loads" for kind, rel in nodes), nodes
    assert ("Seq Scan", "loads") in _scans(whole)
    assert after == ("off",)


def test_migrations_plan_whole_table_scans(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a migration's transaction may scan whole tables (a backfill reads every
    row), unlike the ledger's other statements; the setting ends with the migration."""
    probe = Migration(
        SCHEMA_VERSION + 1,
        "probe",
        (),
        ("CREATE TABLE probe AS SELECT current_setting('enable_seqscan') AS seqscan",),
    )
    monkeypatch.setattr("ledger.db.MIGRATIONS", (*MIGRATIONS, probe))
    db = Database(pg_url)
    try:
        assert db.migrate() == SCHEMA_VERSION + 1
        with db.connection() as conn:
            during = conn.one("SELECT seqscan FROM probe")
            after = conn.one("SHOW enable_seqscan")
    finally:
        db.close()
    assert (during, after) == (("on",), ("off",))
