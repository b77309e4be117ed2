"""ota.counters: durable, strictly increasing CNTR values per card and key set (SQLite, PG).

PostgreSQL cases use a throwaway database on ``STKPAY_TEST_PG`` the way the ledger tests do
(``tests/ledger/conftest.py``): they skip when the server is unreachable, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ota.counters import (
    MAX_COUNTER,
    CounterExhaustedError,
    CounterInputError,
    CounterStorageError,
    CounterStore,
    PostgresCounterStore,
    SqliteCounterStore,
    open_counter_store,
    redact,
    sqlite_path,
)

ROOT = Path(__file__).resolve().parents[2]
CARD = "89860012345678901234"
CARD2 = "8986001234567890123F"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def counter_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty counter store URL on each backend (PostgreSQL: the table is emptied
    after each test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'counters.db'}"
        return
    import psycopg

    url: str = request.getfixturevalue("pg_module_url")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ota_counter")


@pytest.fixture
def store(counter_url: str) -> Iterator[CounterStore]:
    """An open counter store on each backend."""
    s = open_counter_store(counter_url)
    try:
        yield s
    finally:
        s.close()


def test_counters_start_at_one_and_increase(store: CounterStore) -> None:
    """The first counter is 1, then 2, 3...; peek shows the last one handed out."""
    assert store.peek(CARD, "ota") is None
    assert [store.next(CARD, "ota") for _ in range(5)] == [1, 2, 3, 4, 5]
    assert store.peek(CARD, "ota") == 5


def test_counters_are_per_card_and_key_set(store: CounterStore) -> None:
    """Each (card, key set) pair has its own sequence."""
    assert store.next(CARD, "ota") == 1
    assert store.next(CARD, "ota") == 2
    assert store.next(CARD, "wallet") == 1
    assert store.next(CARD2, "ota") == 1
    assert store.peek(CARD2, "wallet") is None


def test_iccid_filler_is_the_same_card(store: CounterStore) -> None:
    """An ICCID with its F filler and without it is one card, one counter."""
    assert store.next("8986001234567890123F", "ota") == 1
    assert store.next("8986001234567890123", "ota") == 2


def test_configured_start(counter_url: str) -> None:
    """A configured start is the first value of every new pair, not of existing ones."""
    with_start = open_counter_store(counter_url, start=1000)
    try:
        assert with_start.next(CARD, "ota") == 1000
        assert with_start.next(CARD, "ota") == 1001
    finally:
        with_start.close()


def test_set_at_least_resynchronises(store: CounterStore) -> None:
    """After "CNTR low" the platform raises its counter: the next is above the card's value;
    a lower value never moves the counter back."""
    store.next(CARD, "ota")
    assert store.set_at_least(CARD, "ota", 41) == 41
    assert store.next(CARD, "ota") == 42
    assert store.set_at_least(CARD, "ota", 7) == 42
    assert store.next(CARD, "ota") == 43
    assert store.set_at_least(CARD2, "ota", 99) == 99  # a pair not seen before
    assert store.next(CARD2, "ota") == 100


def test_counter_exhaustion_is_a_clear_error(store: CounterStore) -> None:
    """At 2**40-1 (the largest 5-octet CNTR) next() refuses and the counter stays put."""
    store.set_at_least(CARD, "ota", MAX_COUNTER - 1)
    assert store.next(CARD, "ota") == MAX_COUNTER
    with pytest.raises(CounterExhaustedError, match=r"exhausted.*2\*\*40-1.*rotate"):
        store.next(CARD, "ota")
    assert store.peek(CARD, "ota") == MAX_COUNTER
    assert store.next(CARD, "other") == 1


@pytest.mark.parametrize(
    ("iccid", "keyset", "value"),
    [
        ("123", "ota", 1),
        (CARD, "", 1),
        (CARD, "x" * 33, 1),
        (CARD, "ota", -1),
        (CARD, "ota", MAX_COUNTER + 1),
        (CARD, "ota", True),
    ],
)
def test_bad_input_is_refused(store: CounterStore, iccid: str, keyset: str, value: int) -> None:
    """Bad ICCIDs, key set names or values raise CounterInputError and store nothing."""
    with pytest.raises(CounterInputError):
        store.set_at_least(iccid, keyset, value)
    if iccid == CARD and keyset == "ota":
        assert store.peek(CARD, "ota") is None


def test_threads_share_a_store(store: CounterStore) -> None:
    """Many threads on one store object: every value distinct, none lost."""
    got: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            v = store.next(CARD, "ota")
            with lock:
                got.append(v)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 151))


def test_sqlite_serves_concurrent_requests_in_one_commit(tmp_path: Path) -> None:
    """Requests queued while the writer is busy are served in one transaction (one durable
    commit); each still gets its own value or its own error (an exhausted card beside
    others in the same batch)."""
    store = SqliteCounterStore(str(tmp_path / "c.db"))
    other = "8986001234567890131"
    store.set_at_least(other, "ota", MAX_COUNTER)
    commits: list[str] = []
    store._conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    results: dict[int, object] = {}

    def ask(i: int, iccid: str) -> None:
        try:
            results[i] = store.next(iccid, "ota")
        except CounterExhaustedError as exc:
            results[i] = exc

    with store._lock:  # the writer is busy: the requests queue up
        threads = [
            threading.Thread(target=ask, args=(i, other if i == 2 else CARD)) for i in range(5)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(store._queue) < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(store._queue) == 5
    for t in threads:
        t.join()
    assert commits == ["COMMIT"]
    assert isinstance(results.pop(2), CounterExhaustedError)
    assert sorted(results.values()) == [1, 2, 3, 4]  # type: ignore[type-var]
    store.close()


def _spawned_worker(args: tuple[str, int]) -> list[int]:
    url, count = args
    s = open_counter_store(url)
    try:
        return [s.next(CARD, "ota") for _ in range(count)]
    finally:
        s.close()


def test_processes_never_share_a_counter(counter_url: str) -> None:
    """Several spawned processes on one database: all values distinct and strictly increasing
    within each process, and together exactly 1..N."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_spawned_worker, [(counter_url, 60)] * 4)
    for values in results:
        assert values == sorted(values) and len(set(values)) == len(values)
    merged = sorted(v for values in results for v in values)
    assert merged == list(range(1, 241))


_LOOP = textwrap.dedent(
    """
    import sys
    from ota.counters import open_counter_store
    store = open_counter_store(sys.argv[1])
    print("ready", flush=True)
    while True:
        print(store.next(sys.argv[2], "ota"), flush=True)
    """
)


def test_sigkill_never_reuses_a_counter(counter_url: str) -> None:
    """A process killed with SIGKILL in a loop of next(), again and again: after each restart
    the next value is above every value it printed (values are durable before returned)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    highest = 0
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOOP, counter_url, CARD],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        printed = [int(proc.stdout.readline()) for _ in range(20 + 15 * round_)]
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        printed += [int(line) for line in rest.split() if line.strip().isdigit()]
        assert proc.returncode == -signal.SIGKILL
        assert printed == sorted(printed) and printed[0] > highest
        highest = printed[-1]
        fresh = open_counter_store(counter_url)
        try:
            after = fresh.next(CARD, "ota")
        finally:
            fresh.close()
        assert after > highest
        highest = after


def test_in_memory_sqlite() -> None:
    """sqlite://:memory: works (for tests): counters increase within the store."""
    s = open_counter_store("sqlite://:memory:")
    try:
        assert [s.next(CARD, "ota") for _ in range(3)] == [1, 2, 3]
    finally:
        s.close()


def test_sqlite_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    """The SQLite backend runs in WAL mode with synchronous=FULL (2)."""
    s = SqliteCounterStore(str(tmp_path / "sub" / "c.db"))
    try:
        conn = s._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        s.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/c.db", "var/c.db"),
        ("sqlite:////abs/c.db", "/abs/c.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    """sqlite:///rel, sqlite:////abs and :memory: map to the file SQLite opens."""
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://relative.db", "sqlite:///", "c.db"])
def test_unsupported_urls(url: str) -> None:
    """Other schemes and malformed SQLite URLs: CounterInputError."""
    with pytest.raises(CounterInputError):
        open_counter_store(url)


def test_bad_start_is_refused() -> None:
    """A start below 1 or above 2**40-1 is refused."""
    for start in (0, MAX_COUNTER + 1):
        with pytest.raises(CounterInputError):
            open_counter_store("sqlite://:memory:", start=start)


def test_unreachable_postgres_message_hides_the_password() -> None:
    """A connection failure is a CounterStorageError whose message has no password."""
    url = "postgresql://stkpay:hunter2@127.0.0.1:9/nodb"
    with pytest.raises(CounterStorageError) as info:
        PostgresCounterStore(url, connect_timeout=2)
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)
    assert redact(url) == "postgresql://stkpay:***@127.0.0.1:9/nodb"
