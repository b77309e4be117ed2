"""Tests for handlers.state: the same behaviour from MemoryState and RedisState.

The ``store`` fixture runs each behavioural test on both backends: the in-process store with a
fake clock, and a real Redis (``STKPAY_TEST_REDIS``, default ``redis://127.0.0.1:6379/0``)
under a unique key prefix that is deleted after the test, with the same fake clock injected
into the token-bucket scripts. When Redis is unreachable the Redis cases skip, except under
``CI=true``, where they fail (as the PostgreSQL cases of tests/ledger do).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.state import (
    BUCKET_GRACE,
    MAX_REPLY_BYTES,
    MemoryState,
    RedisState,
    StateArgumentError,
    StateStore,
    StateUnavailable,
    _redis_key,
    dedup_key,
    open_state,
    redact_url,
)

REDIS_URL = os.environ.get("STKPAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
ICCID = "8986001234567890123"
MSISDN = "8613800138000"


def _redis_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis required under CI=true: {reason}")
    pytest.skip(f"Redis unreachable: {reason}")


class FakeClock:
    """Seconds that move only when told; with ``step`` each reading advances it (thread-safe)."""

    def __init__(self, now: float = 1_000.0, step: float = 0.0) -> None:
        self.now = now
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            now = self.now
            self.now += self.step
            return now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def redis_admin() -> Iterator[redis.Redis]:
    """A plain client on the test Redis (skip without one, fail under CI=true)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        _redis_unavailable(f"{type(exc).__name__}: {exc}")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_admin: redis.Redis) -> Iterator[str]:
    """A key prefix unique to the test; every key under it is deleted afterwards."""
    prefix = f"stkpay-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(redis_admin.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_admin.delete(*keys)


@dataclass
class Backend:
    """A store under test, the fake clock it was given, and (Redis) an admin client."""

    kind: str
    store: StateStore
    clock: FakeClock
    admin: redis.Redis | None = None


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock of ``store`` (starts at 1000 s, moves when told)."""
    return FakeClock()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Backend]:
    """Each implementation with ``clock`` injected; Redis under a unique, cleaned prefix."""
    if request.param == "memory":
        memory = MemoryState(clock=clock)
        yield Backend("memory", memory, clock)
        return
    admin: redis.Redis = request.getfixturevalue("redis_admin")
    prefix: str = request.getfixturevalue("redis_prefix")

    shared = RedisState(REDIS_URL, prefix=prefix, clock=clock)
    yield Backend("redis", shared, clock, admin)
    shared.close()


@pytest.fixture
def store(backend: Backend) -> StateStore:
    """The store of ``backend``."""
    return backend.store


# --- dedup -------------------------------------------------------------------------------------


def test_recall_returns_the_remembered_reply(store: StateStore) -> None:
    """A remembered reply comes back byte for byte; an unknown key is a miss."""
    key = dedup_key(ICCID, b"\xb0\x00\x10", 7, b"packet")
    reply = bytes(range(256))
    assert store.recall_reply(key) is None
    store.remember_reply(key, reply, 60.0)
    assert store.recall_reply(key) == reply
    assert store.recall_reply(dedup_key(ICCID, b"\xb0\x00\x10", 8, b"packet")) is None


def test_remember_replaces_the_reply(store: StateStore) -> None:
    """Remembering again under the same key replaces the stored reply."""
    store.remember_reply(f"{ICCID}:k", b"first", 60.0)
    store.remember_reply(f"{ICCID}:k", b"second", 60.0)
    assert store.recall_reply(f"{ICCID}:k") == b"second"


def test_reply_is_kept_for_its_ttl_then_expires(backend: Backend) -> None:
    """A reply is there within its TTL and gone after it (Memory: fake clock; Redis: PX)."""
    store, key = backend.store, f"{ICCID}:expiring"
    ttl = 0.05 if backend.kind == "memory" else 1.0  # Redis: room for a stalled test process
    store.remember_reply(key, b"reply", ttl)
    store.remember_reply(f"{ICCID}:lasting", b"kept", 600.0)
    assert store.recall_reply(key) == b"reply"
    if backend.kind == "memory":
        backend.clock.advance(0.049)
        assert store.recall_reply(key) == b"reply"
        backend.clock.advance(0.002)
    else:
        # the TTL is the server's: 1 s set with the value, then polled until it is gone
        assert backend.admin is not None
        assert isinstance(store, RedisState)
        assert 0 < backend.admin.pttl(store.redis_key("reply", key)) <= 1000
        deadline = time.monotonic() + 5.0
        while store.recall_reply(key) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert store.recall_reply(key) is None
    assert store.recall_reply(f"{ICCID}:lasting") == b"kept"


def test_dedup_key_separates_content_and_canonicalises_iccid() -> None:
    """Same card, TAR, counter and packet: one key; other content or counter: another key."""
    tar = bytes.fromhex("B00010")
    key = dedup_key(ICCID, tar, 0x0102030405, b"abc")
    assert key == dedup_key(ICCID + "F", tar, 0x0102030405, b"abc")
    assert key.startswith(f"{ICCID}:B00010:0102030405:")
    assert key != dedup_key(ICCID, tar, 0x0102030405, b"abd")
    assert key != dedup_key(ICCID, tar, 0x0102030406, b"abc")
    assert key != dedup_key(ICCID, bytes.fromhex("B00011"), 0x0102030405, b"abc")


@pytest.mark.parametrize(
    ("iccid", "tar", "counter", "packet"),
    [
        ("123", b"\0\0\0", 0, b""),
        ("89860012345678901234567", b"\0\0\0", 0, b""),
        ("8986001234567890123x", b"\0\0\0", 0, b""),
        (ICCID, b"\0\0", 0, b""),
        (ICCID, b"\0\0\0", -1, b""),
        (ICCID, b"\0\0\0", 1 << 40, b""),
        (ICCID, b"\0\0\0", True, b""),
        (ICCID, b"\0\0\0", 0, "text"),
    ],
)
def test_dedup_key_rejects_bad_parts(iccid: str, tar: bytes, counter: int, packet: bytes) -> None:
    """A bad ICCID, TAR, counter or packet raises StateArgumentError."""
    with pytest.raises(StateArgumentError):
        dedup_key(iccid, tar, counter, packet)


# --- flood limit -------------------------------------------------------------------------------


def test_allow_grants_the_burst_then_the_rate(backend: Backend) -> None:
    """5 per minute, burst 5: five pass, the sixth is refused until 12 s have passed."""
    store, clock = backend.store, backend.clock
    rate = 5 / 60
    assert [store.allow(MSISDN, rate=rate, burst=5) for _ in range(6)] == [True] * 5 + [False]
    clock.advance(11.9)
    assert not store.allow(MSISDN, rate=rate, burst=5)
    clock.advance(0.1)
    assert store.allow(MSISDN, rate=rate, burst=5)
    assert not store.allow(MSISDN, rate=rate, burst=5)
    clock.advance(3600)  # refill stops at the burst
    assert sum(store.allow(MSISDN, rate=rate, burst=5) for _ in range(10)) == 5


def test_allow_keeps_subjects_apart(store: StateStore) -> None:
    """An exhausted subject does not limit another subject or another scope of it."""
    assert store.allow(MSISDN, rate=1.0, burst=1)
    assert not store.allow(MSISDN, rate=1.0, burst=1)
    assert store.allow("8613800138001", rate=1.0, burst=1)
    assert store.allow(f"{MSISDN}:help", rate=1.0, burst=1)
    assert not store.allow(f"{MSISDN}:help", rate=1.0, burst=1)


def test_clock_going_back_neither_earns_nor_loses_tokens(backend: Backend) -> None:
    """A reading earlier than the bucket's stamp (another instance's clock) changes nothing."""
    store, clock = backend.store, backend.clock
    assert store.take_submit_budget("acct", 1, rate=1.0, burst=3) == 1
    clock.advance(-100.0)
    assert store.budget_wait("acct", rate=1.0) == 0.0
    assert store.take_submit_budget("acct", 3, rate=1.0, burst=3) == 2
    clock.advance(100.5)
    assert store.take_submit_budget("acct", 3, rate=1.0, burst=3) == 0
    assert store.budget_wait("acct", rate=1.0) == pytest.approx(0.5)
    clock.advance(0.5)
    assert store.take_submit_budget("acct", 3, rate=1.0, burst=3) == 1


# --- submit budget -----------------------------------------------------------------------------


def test_submit_budget_grants_what_is_there_and_says_how_long_to_wait(backend: Backend) -> None:
    """Up to the burst now, then rate per second; budget_wait is the time to the next token."""
    store, clock = backend.store, backend.clock
    assert store.budget_wait("smsc1", rate=10.0) == 0.0  # unused account: full
    assert store.take_submit_budget("smsc1", 10, rate=10.0, burst=4) == 4
    assert store.take_submit_budget("smsc1", 10, rate=10.0, burst=4) == 0
    assert store.budget_wait("smsc1", rate=10.0) == pytest.approx(0.1)
    clock.advance(0.05)
    assert store.budget_wait("smsc1", rate=10.0) == pytest.approx(0.05)
    assert store.take_submit_budget("smsc1", 1, rate=10.0, burst=4) == 0
    clock.advance(0.25)
    assert store.budget_wait("smsc1", rate=10.0) == 0.0
    assert store.take_submit_budget("smsc1", 10, rate=10.0, burst=4) == 3
    assert store.take_submit_budget("smsc1", 0, rate=10.0, burst=4) == 0
    clock.advance(10.0)
    assert store.take_submit_budget("smsc1", 2, rate=10.0, burst=4) == 2
    assert store.take_submit_budget("smsc1", 9, rate=10.0, burst=4) == 2


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_shared_budget_never_exceeds_rate_times_t_plus_burst(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Eight threads on two gateways' stores draw at most rate*t+burst from one account."""
    ticking = FakeClock(now=5_000.0, step=0.001)  # every reading is 1 ms later
    start = ticking.now
    if kind == "memory":
        shared = MemoryState(clock=ticking)
        gateways: list[StateStore] = [shared, shared]
    else:
        request.getfixturevalue("redis_admin")
        prefix = request.getfixturevalue("redis_prefix")
        gateways = [RedisState(REDIS_URL, prefix=prefix, clock=ticking) for _ in range(2)]
    rate, burst = 100.0, 20
    granted = [0] * 8

    def run(index: int) -> None:
        gateway = gateways[index % 2]
        for call in range(150):
            granted[index] += gateway.take_submit_budget(
                "smsc-acct", 1 + call % 3, rate=rate, burst=burst
            )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for gateway in gateways:
        gateway.close()
    elapsed = ticking.now - ticking.step - start  # the last reading handed out
    total = sum(granted)
    assert total <= math.floor(rate * elapsed + burst + 1e-6)
    assert total >= burst + rate * elapsed / 2  # the budget was drawn on, not starved


@pytest.mark.redis
def test_shared_budget_on_the_server_clock(redis_admin: redis.Redis, redis_prefix: str) -> None:
    """Without an injected clock the scripts use Redis TIME; the total stays in the bound."""
    gateways = [RedisState(REDIS_URL, prefix=redis_prefix) for _ in range(2)]
    rate, burst = 500.0, 10

    def server_time() -> float:
        seconds, micros = redis_admin.time()
        return seconds + micros / 1e6

    granted = [0] * 4

    def run(index: int) -> None:
        for _ in range(200):
            granted[index] += gateways[index % 2].take_submit_budget(
                "live-acct", 2, rate=rate, burst=burst
            )

    before = server_time()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = server_time()
    for gateway in gateways:
        gateway.close()
    assert burst <= sum(granted) <= rate * (after - before) + burst


# --- bounds, model, Redis specifics ------------------------------------------------------------


def test_memory_state_stays_bounded_over_a_million_keys() -> None:
    """A million distinct dedup keys and many subjects leave at most the configured entries."""
    memory = MemoryState(clock=lambda: 1_000.0, max_replies=10_000, max_buckets=5_000)
    remember = memory.remember_reply
    for i in range(1_000_000):
        remember(f"{i}:r", b"reply", 600.0)
    for i in range(20_000):
        memory.allow(f"{i}", rate=1.0, burst=5)
    stats = memory.stats()
    assert stats.replies == 10_000
    assert stats.reply_bytes == 50_000
    assert stats.buckets == 5_000
    assert stats.evicted_replies == 990_000
    assert memory.recall_reply("999999:r") == b"reply"  # the newest survive
    assert memory.recall_reply("0:r") is None


def test_memory_state_heap_is_flat_once_full() -> None:
    """Once at its bound, 20,000 more distinct keys leave the traced heap no bigger."""
    memory = MemoryState(clock=FakeClock(), max_replies=2_000, max_buckets=2_000)

    def churn(first: int) -> None:
        for i in range(first, first + 10_000):
            memory.remember_reply(f"{i}:r", b"r" * 40, 600.0)
            memory.allow(f"{i}", rate=1.0, burst=2)

    tracemalloc.start()
    try:
        churn(0)
        full = tracemalloc.get_traced_memory()[0]
        churn(10_000)
        churn(20_000)
        later = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert later < full * 1.05 + 64_000


def test_memory_state_evicts_by_reply_bytes_and_drops_expired() -> None:
    """The payload byte bound evicts the least recently used; expired entries go on write."""
    clock = FakeClock()
    memory = MemoryState(clock=clock, max_replies=100, max_reply_bytes=1_000)
    for i in range(5):
        memory.remember_reply(f"k{i}", b"x" * 300, 60.0)
    assert memory.stats().reply_bytes <= 1_000
    assert memory.recall_reply("k0") is None
    assert memory.recall_reply("k4") == b"x" * 300
    clock.advance(61.0)
    memory.remember_reply("fresh", b"y", 60.0)
    assert memory.stats().replies == 1


def _model_total(steps: list[tuple[float, int]], rate: float, burst: int) -> int:
    """Whole tokens an ideal bucket can have granted over ``steps`` (its upper bound)."""
    return math.floor(rate * sum(dt for dt, _ in steps) + burst + 1e-6)


_steps = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), st.integers(0, 12)),
    min_size=1,
    max_size=40,
)
_rates = st.sampled_from([0.01, 0.5, 1.0, 3.3, 100.0, 2500.0])


@given(steps=_steps, rate=_rates, burst=st.integers(1, 50))
@settings(max_examples=150, deadline=None)
def test_memory_bucket_respects_the_bound_and_the_request(
    steps: list[tuple[float, int]], rate: float, burst: int
) -> None:
    """Any sequence of waits and takes: each grant <= what was asked, total <= rate*t+burst."""
    clock = FakeClock()
    memory = MemoryState(clock=clock)
    total = 0
    for dt, wanted in steps:
        clock.advance(dt)
        got = memory.take_submit_budget("acct", wanted, rate=rate, burst=burst)
        assert 0 <= got <= wanted
        total += got
    assert total <= _model_total(steps, rate, burst)


@pytest.mark.redis
@given(steps=_steps, rate=_rates, burst=st.integers(1, 50))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_redis_script_matches_the_memory_bucket(
    redis_prefix: str, steps: list[tuple[float, int]], rate: float, burst: int
) -> None:
    """The Lua bucket grants exactly what the in-process bucket grants, step by step."""
    clock = FakeClock()
    memory = MemoryState(clock=clock)
    shared = RedisState(REDIS_URL, prefix=redis_prefix, clock=clock)
    account = f"a{uuid.uuid4().hex[:12]}"
    try:
        for dt, wanted in steps:
            clock.advance(dt)
            expected = memory.take_submit_budget(account, wanted, rate=rate, burst=burst)
            assert shared.take_submit_budget(account, wanted, rate=rate, burst=burst) == expected
            assert shared.budget_wait(account, rate=rate) == memory.budget_wait(account, rate=rate)
    finally:
        shared.close()


@given(key=st.text(max_size=220))
def test_keys_map_to_one_hash_tag_or_raise_the_module_error(key: str) -> None:
    """Any text is a key with its first ':'-part as the only hash tag, or StateArgumentError."""
    memory = MemoryState(clock=FakeClock())
    try:
        memory.remember_reply(key, b"r", 1.0)
    except StateArgumentError:
        return
    name = _redis_key("stkpay:", "reply", key)
    tag = key.partition(":")[0]
    assert name.count("{") == name.count("}") == 1
    assert name[name.index("{") + 1 : name.index("}")] == tag
    assert memory.recall_reply(key) == b"r"


@pytest.mark.redis
def test_redis_key_layout_and_ttls(redis_admin: redis.Redis, redis_prefix: str) -> None:
    """Keys are prefix{tag}:namespace[:rest]; buckets are versioned JSON expiring after refill."""
    clock = FakeClock()
    shared = RedisState(REDIS_URL, prefix=redis_prefix, clock=clock)
    key = dedup_key(ICCID, bytes.fromhex("B00010"), 1, b"p")
    shared.remember_reply(key, b"r", 30.0)
    shared.allow(f"{MSISDN}:help", rate=0.1, burst=3)
    shared.take_submit_budget("smsc1", 5, rate=2.0, burst=5)
    names = {n.decode() for n in redis_admin.scan_iter(match=f"{redis_prefix}*")}
    assert names == {
        f"{redis_prefix}{{{ICCID}}}:reply:{key.partition(':')[2]}",
        f"{redis_prefix}{{{MSISDN}}}:flood:help",
        f"{redis_prefix}{{smsc1}}:submit",
    }
    state = json.loads(redis_admin.get(f"{redis_prefix}{{{MSISDN}}}:flood:help") or b"")
    assert state == {"v": 1, "tokens": 2, "stamp": clock.now}
    # one token missing at 0.1/s: full again after 10 s, kept BUCKET_GRACE more
    flood_ttl = redis_admin.pttl(f"{redis_prefix}{{{MSISDN}}}:flood:help")
    assert 10_000 + BUCKET_GRACE * 1000 - 2_000 < flood_ttl <= 10_000 + BUCKET_GRACE * 1000
    assert 0 < redis_admin.pttl(shared.redis_key("reply", key)) <= 30_000
    shared.close()


@pytest.mark.redis
def test_redis_corrupt_bucket_starts_full(redis_admin: redis.Redis, redis_prefix: str) -> None:
    """A bucket value that is not version-1 JSON counts as a full bucket, not an error."""
    shared = RedisState(REDIS_URL, prefix=redis_prefix, clock=FakeClock())
    for junk in (b"not json", b'{"v":2,"tokens":0,"stamp":0}', b"[]"):
        redis_admin.set(shared.redis_key("submit", "acct"), junk)
        assert shared.take_submit_budget("acct", 9, rate=1.0, burst=4) == 4
    shared.close()


@pytest.mark.redis
def test_redis_client_given_is_used_and_left_open(redis_prefix: str) -> None:
    """A caller's client serves the store, close() leaves it open; decoding clients refused."""
    client = redis.Redis.from_url(REDIS_URL)
    shared = RedisState(client, prefix=redis_prefix)
    shared.remember_reply("k", b"v", 5.0)
    shared.close()
    assert client.ping()
    assert RedisState(client, prefix=redis_prefix).recall_reply("k") == b"v"
    client.close()
    with pytest.raises(StateArgumentError):
        RedisState(redis.Redis.from_url(REDIS_URL, decode_responses=True))


# --- failures, arguments, secrets --------------------------------------------------------------


def test_dead_redis_raises_state_unavailable_quickly() -> None:
    """Every operation on a dead Redis raises StateUnavailable fast, one line, no password."""
    dead = RedisState(
        "redis://gw:hunter2secret@127.0.0.1:1/0", connect_timeout=0.5, socket_timeout=0.5
    )
    operations: list[Callable[[], object]] = [
        lambda: dead.remember_reply("k", b"v", 1.0),
        lambda: dead.recall_reply("k"),
        lambda: dead.allow(MSISDN, rate=1.0, burst=1),
        lambda: dead.take_submit_budget("acct", 1, rate=1.0, burst=1),
        lambda: dead.budget_wait("acct", rate=1.0),
    ]
    for operation in operations:
        began = time.monotonic()
        with pytest.raises(StateUnavailable) as caught:
            operation()
        assert time.monotonic() - began < 2.5
        message = str(caught.value)
        assert "hunter2secret" not in message
        assert "\n" not in message
        assert "127.0.0.1:1" in message
        assert caught.value.__cause__ is None
    assert dead.ping() is False
    dead.close()


def test_reprs_and_errors_hold_no_secret() -> None:
    """Neither a store's repr nor a URL error shows the password or remembered replies."""
    url = "redis://gw:hunter2secret@127.0.0.1:1/0?password=hunter3other"
    assert "hunter" not in repr(RedisState(url))
    with pytest.raises(StateArgumentError) as caught:
        RedisState("redis://gw:hunter2secret@127.0.0.1:notaport/0")
    assert "hunter2secret" not in str(caught.value)
    memory = MemoryState(clock=FakeClock())
    memory.remember_reply("k", b"PIN 123456 reply", 60.0)
    assert "123456" not in repr(memory)
    assert "123456" not in repr(memory.stats())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host/1", "redis://user:***@host/1"),
        ("redis://pw@host", "redis://***@host"),
        ("rediss://host:6380?password=pw&db=2", "rediss://host:6380?password=***&db=2"),
        ("unix://u:pw@/run/redis.sock?db=0", "unix://u:***@/run/redis.sock?db=0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    """Passwords in the userinfo or the query become ***; the rest of the URL stays."""
    assert redact_url(url) == shown


_BAD_CALLS: list[tuple[str, Callable[[StateStore], object]]] = [
    ("empty key", lambda s: s.recall_reply("")),
    ("space in key", lambda s: s.recall_reply("a b")),
    ("brace in key", lambda s: s.remember_reply("{a}", b"r", 1.0)),
    ("colon first", lambda s: s.allow(":x", rate=1.0, burst=1)),
    ("long key", lambda s: s.recall_reply("k" * 201)),
    ("non-ascii key", lambda s: s.recall_reply("钱包")),
    ("str reply", lambda s: s.remember_reply("k", "r", 1.0)),  # type: ignore[arg-type]
    ("huge reply", lambda s: s.remember_reply("k", bytes(MAX_REPLY_BYTES + 1), 1.0)),
    ("zero ttl", lambda s: s.remember_reply("k", b"r", 0)),
    ("nan ttl", lambda s: s.remember_reply("k", b"r", math.nan)),
    ("inf ttl", lambda s: s.remember_reply("k", b"r", math.inf)),
    ("zero rate", lambda s: s.allow("k", rate=0.0, burst=1)),
    ("nan rate", lambda s: s.budget_wait("k", rate=math.nan)),
    ("zero burst", lambda s: s.allow("k", rate=1.0, burst=0)),
    ("float burst", lambda s: s.allow("k", rate=1.0, burst=1.5)),  # type: ignore[arg-type]
    ("negative n", lambda s: s.take_submit_budget("k", -1, rate=1.0, burst=1)),
]


@pytest.mark.parametrize("call", [c for _, c in _BAD_CALLS], ids=[n for n, _ in _BAD_CALLS])
def test_bad_arguments_raise_the_module_error(
    store: StateStore, call: Callable[[StateStore], object]
) -> None:
    """Bad keys, replies, TTLs, rates, bursts and counts raise StateArgumentError."""
    with pytest.raises(StateArgumentError):
        call(store)


def test_a_clock_returning_nan_is_refused() -> None:
    """A clock that returns NaN raises StateArgumentError instead of poisoning a bucket."""
    memory = MemoryState(clock=lambda: math.nan)
    with pytest.raises(StateArgumentError):
        memory.allow("k", rate=1.0, burst=1)


def test_both_stores_satisfy_the_protocol_and_open_state_picks_them() -> None:
    """open_state: nothing or memory: gives MemoryState, redis:// gives RedisState."""
    memory = open_state(None)
    assert isinstance(memory, MemoryState)
    assert isinstance(open_state("memory:"), MemoryState)
    shared = open_state("redis://127.0.0.1:1/0", prefix="x:")
    assert isinstance(shared, RedisState)
    assert isinstance(memory, StateStore)
    assert isinstance(shared, StateStore)
    assert memory.ping()
    shared.close()
    with pytest.raises(StateArgumentError):
        open_state("mysql://host/db")
    with pytest.raises(StateArgumentError):
        RedisState("redis://host", prefix="a{b}:")


def test_memory_close_drops_everything() -> None:
    """close() empties the in-process store."""
    memory = MemoryState(clock=FakeClock())
    memory.remember_reply("k", b"v", 60.0)
    memory.allow("s", rate=1.0, burst=1)
    memory.close()
    assert memory.stats().replies == memory.stats().buckets == 0
    assert memory.recall_reply("k") is None
