"""The gateway's losable state: one small interface, an in-process and a Redis implementation.

What lives here may be lost at any moment without losing or duplicating money (issue 5,
"Handlers"; ``docs/architecture.md``, Money and State and scale): the truth (pending loads, PIN
attempt counters, locks, idempotency keys) is in the ledger database. Three things live here:

* the **dedup cache** in front of the database: the reply the gateway gave to a secured MO,
  keyed by (ICCID, TAR, counter) of the ETSI TS 102 225 / 3GPP TS 31.115 command packet and a
  digest of its content (:func:`dedup_key`), so that an SMSC redelivering the same deliver_sm
  (SMPP 3.4 carries no message id on MO) is answered without touching the database. A miss
  only costs a database look-up;
* **per-subscriber flood limits** (:meth:`StateStore.allow`): a token bucket per subject;
* the **submit-rate budget** shared by every bind of one SMSC account across every gateway
  instance (:meth:`StateStore.take_submit_budget`, :meth:`StateStore.budget_wait`): a token
  bucket per account that the ESME draws from before it sends submit_sm (SMPP 3.4 section
  5.1.3, ESME_RTHROTTLED is what happens when it does not).

Token buckets hold ``burst`` tokens at most, start full and earn ``rate`` tokens per second;
a take grants whole tokens. Rate and burst come with each call (configuration is not state).

:class:`MemoryState` is the embedded default: thread-safe, bounded (LRU on entry counts and
reply bytes, TTLs checked on read), time from an injected ``clock``. :class:`RedisState` serves
any number of gateway instances: dedup entries carry server-side TTLs (``SET ... PX``), each
token bucket is one key updated by a Lua script, so check-and-take is atomic across instances,
with time from the Redis server (``TIME``) or, when a ``clock`` is injected, passed in as an
argument. Every key has a Redis Cluster hash tag, the part of the caller's key before its first
``:`` (the ICCID, the MSISDN, the SMSC account), so one card's or subscriber's keys share a slot.
Bucket state is JSON with a version field (``{"v":1,"tokens":..,"stamp":..}``); no pickle.

A Redis failure raises :class:`StateUnavailable` (one line, password redacted), so the gateway
can answer ESME_RX_T_APPN and let the SMSC retry; :class:`MemoryState` never raises it. Bad
arguments raise :class:`StateArgumentError` on both. Key layout and scripts: ``docs/state.md``.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "BUCKET_GRACE",
    "BUCKET_TTL_MAX",
    "MAX_KEY_LENGTH",
    "MAX_REPLY_BYTES",
    "MemoryState",
    "MemoryStats",
    "RedisState",
    "StateArgumentError",
    "StateError",
    "StateStore",
    "StateUnavailable",
    "dedup_key",
    "open_state",
    "redact_url",
]

#: Longest caller key (dedup key, flood subject, SMSC account), in characters.
MAX_KEY_LENGTH: Final = 200
#: Largest reply the dedup cache keeps (a few SMS segments fit many times over).
MAX_REPLY_BYTES: Final = 65_536
#: How long a token bucket key outlives the moment its bucket is full again (Redis TTL).
BUCKET_GRACE: Final = 60.0
#: Cap of a bucket key's Redis TTL: a bucket idle that long is treated as full.
BUCKET_TTL_MAX: Final = 86_400.0
#: Tolerance when counting whole tokens (float refill arithmetic).
_EPSILON: Final = 1e-9
#: Longest dedup TTL accepted (30 days).
_TTL_MAX: Final = 30 * 86_400.0

_PRINTABLE_RE: Final = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space
# a caller key: printable ASCII without space or braces, not starting with ':', 1..200 long
_KEY_RE: Final = re.compile(r"[\x21-\x39\x3b-\x7a|~][\x21-\x7a|~]{0,199}")
_DIGITS_RE: Final = re.compile(r"[0-9]{16,20}")


class StateError(Exception):
    """Base of this module's errors."""


class StateUnavailable(StateError):  # noqa: N818 - the name the gateway's brief uses
    """The state backend cannot be reached or refused the command; the MO may be retried."""


class StateArgumentError(StateError, ValueError):
    """A key, reply, TTL, rate, burst or count the store cannot accept (a caller bug)."""


@runtime_checkable
class StateStore(Protocol):
    """What the gateway keeps that may be lost: dedup replies, flood limits, submit budgets."""

    def remember_reply(self, key: str, reply: bytes, ttl: float) -> None:
        """Keep ``reply`` as the answer to the MO ``key`` for ``ttl`` seconds (replaces)."""
        ...

    def recall_reply(self, key: str) -> bytes | None:
        """The reply remembered for ``key``, or None (never stored, expired or evicted)."""
        ...

    def allow(self, subject: str, *, rate: float, burst: int) -> bool:
        """Take one token from ``subject``'s flood bucket; False when it is empty."""
        ...

    def take_submit_budget(self, account: str, n: int, *, rate: float, burst: int) -> int:
        """How many of ``n`` submit_sm of SMSC ``account`` may go now (those tokens are taken)."""
        ...

    def budget_wait(self, account: str, *, rate: float) -> float:
        """Seconds until ``account``'s submit budget holds one more token (0.0: now)."""
        ...

    def ping(self) -> bool:
        """True when the backend answers."""
        ...

    def close(self) -> None:
        """Release the backend (idempotent)."""
        ...


# --- keys -------------------------------------------------------------------------------------


def dedup_key(iccid: str, tar: bytes, counter: int, packet: bytes) -> str:
    """The dedup key of a secured MO: ``ICCID:TAR:COUNTER:DIGEST``.

    ``tar`` is the 3-octet toolkit application reference and ``counter`` the 5-octet CNTR of
    the command packet (ETSI TS 102 225 §5.1); ``packet`` the whole secured packet as
    received. The digest (SHA-256, first 16 octets) makes a used counter with different
    content a cache miss, so the database refuses it as a replay instead of the cache
    answering it. The ICCID (16-20 digits, an optional trailing F filler dropped) is the Redis
    hash tag.
    """
    if not isinstance(iccid, str):
        raise StateArgumentError("ICCID must be a string")
    digits = iccid[:-1] if iccid[-1:] in ("F", "f") else iccid
    if not _DIGITS_RE.fullmatch(digits):
        shown = iccid[:24] if iccid.isprintable() else "<unprintable>"
        raise StateArgumentError(f"bad ICCID {shown!r}: expected 16-20 decimal digits")
    if not isinstance(tar, bytes | bytearray) or len(tar) != 3:
        raise StateArgumentError("TAR must be 3 octets")
    if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter < 1 << 40:
        raise StateArgumentError("counter must be an integer 0..2**40-1")
    if not isinstance(packet, bytes | bytearray):
        raise StateArgumentError("packet must be bytes")
    digest = hashlib.sha256(packet).hexdigest()[:32]
    return f"{digits}:{bytes(tar).hex().upper()}:{counter:010X}:{digest}"


def _check_key(key: object, what: str) -> str:
    """``key`` if it is a usable caller key: printable ASCII without spaces or braces, a
    non-empty part before any ``:`` (the hash tag), at most :data:`MAX_KEY_LENGTH`."""
    if isinstance(key, str) and _KEY_RE.fullmatch(key):
        return key
    if not isinstance(key, str):
        raise StateArgumentError(f"{what} must be a string")
    raise StateArgumentError(
        f"{what} must be 1..{MAX_KEY_LENGTH} printable ASCII characters without spaces or"
        " braces, not starting with ':'"
    )


def _redis_key(prefix: str, namespace: str, key: str) -> str:
    """``prefix{tag}:namespace[:rest]`` where ``tag`` is ``key`` up to its first ``:``."""
    tag, _, rest = key.partition(":")
    base = f"{prefix}{{{tag}}}:{namespace}"
    return f"{base}:{rest}" if rest else base


def _check_ttl(ttl: object) -> float:
    if isinstance(ttl, float | int) and not isinstance(ttl, bool) and 0 < ttl <= _TTL_MAX:
        return float(ttl)  # NaN fails the comparison; inf is above the maximum
    raise StateArgumentError(f"ttl must be a number of seconds > 0 and at most {_TTL_MAX:g}")


def _check_reply(reply: object) -> bytes:
    if type(reply) is not bytes:
        if not isinstance(reply, bytes | bytearray | memoryview):
            raise StateArgumentError("reply must be bytes")
        reply = bytes(reply)
    if len(reply) > MAX_REPLY_BYTES:
        raise StateArgumentError(f"reply of {len(reply)} bytes exceeds {MAX_REPLY_BYTES}")
    return reply


def _check_rate(rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise StateArgumentError("rate must be a number of tokens per second")
    if not math.isfinite(rate) or rate <= 0 or rate > 1e9:
        raise StateArgumentError("rate must be > 0 and at most 1e9 per second")
    return float(rate)


def _check_count(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateArgumentError(f"{what} must be an integer")
    if not minimum <= value <= 1_000_000_000:
        raise StateArgumentError(f"{what} must be {minimum}..1000000000")
    return value


def _check_now(now: object) -> float:
    if type(now) is float and -1e15 < now < 1e15:  # the common case, NaN fails
        return now
    if isinstance(now, int | float) and not isinstance(now, bool) and -1e15 < now < 1e15:
        return float(now)
    raise StateArgumentError("the clock must return a finite number of seconds")


# --- token bucket arithmetic (mirrored exactly by _TAKE_LUA and _WAIT_LUA) ----------------------


def _bucket_take(
    state: tuple[float, float] | None, now: float, rate: float, burst: int, wanted: int
) -> tuple[int, float, float]:
    """(granted, tokens, stamp) after taking up to ``wanted`` from ``state`` (None: full)."""
    if state is None:
        tokens, stamp = float(burst), now
    else:
        tokens, stamp = state
        if now > stamp:
            tokens = min(burst, tokens + (now - stamp) * rate)
            stamp = now
        tokens = min(tokens, burst)
    granted = max(0, min(wanted, math.floor(tokens + _EPSILON)))
    return granted, tokens - granted, stamp


def _bucket_wait(state: tuple[float, float] | None, now: float, rate: float) -> float:
    """Seconds from ``now`` until ``state`` holds one whole token."""
    if state is None:
        return 0.0
    tokens, stamp = state
    if now > stamp:
        tokens += (now - stamp) * rate
    missing = 1.0 - tokens
    return 0.0 if missing <= _EPSILON else missing / rate


# --- in-process --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """What a :class:`MemoryState` holds (counts only, never contents)."""

    replies: int
    reply_bytes: int
    buckets: int
    evicted_replies: int
    evicted_buckets: int


class MemoryState:
    """The embedded default: one process's state behind a lock, bounded in memory.

    Dedup replies are kept in LRU order and evicted beyond ``max_replies`` entries or
    ``max_reply_bytes`` of payload; an expired one is dropped when read, and expired entries
    at the cold end are dropped on every write. Token buckets are kept in LRU order and evicted
    beyond ``max_buckets`` (an evicted bucket comes back full: state that may be lost).
    ``clock`` gives seconds (``time.monotonic`` by default; tests pass a fake).
    """

    __slots__ = (
        "_buckets",
        "_clock",
        "_evicted_buckets",
        "_evicted_replies",
        "_lock",
        "_max_buckets",
        "_max_replies",
        "_max_reply_bytes",
        "_replies",
        "_reply_bytes",
    )

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_replies: int = 100_000,
        max_reply_bytes: int = 32 * 1024 * 1024,
        max_buckets: int = 100_000,
    ) -> None:
        for name, value in (
            ("max_replies", max_replies),
            ("max_reply_bytes", max_reply_bytes),
            ("max_buckets", max_buckets),
        ):
            _check_count(value, name, 1)
        self._clock = clock
        self._max_replies = max_replies
        self._max_reply_bytes = max_reply_bytes
        self._max_buckets = max_buckets
        self._lock = threading.Lock()
        self._replies: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._reply_bytes = 0
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._evicted_replies = 0
        self._evicted_buckets = 0

    def __repr__(self) -> str:
        stats = self.stats()
        return f"MemoryState(replies={stats.replies}, buckets={stats.buckets})"

    def stats(self) -> MemoryStats:
        """Entry counts and payload bytes held, and evictions so far."""
        with self._lock:
            return MemoryStats(
                replies=len(self._replies),
                reply_bytes=self._reply_bytes,
                buckets=len(self._buckets),
                evicted_replies=self._evicted_replies,
                evicted_buckets=self._evicted_buckets,
            )

    def _now(self) -> float:
        return _check_now(self._clock())

    def remember_reply(self, key: str, reply: bytes, ttl: float) -> None:
        """Keep ``reply`` for ``key`` until ``clock() + ttl``."""
        key = _check_key(key, "dedup key")
        data = _check_reply(reply)
        seconds = _check_ttl(ttl)
        now = self._now()
        expires = now + seconds
        with self._lock:
            replies = self._replies
            old = replies.pop(key, None)
            if old is not None:
                self._reply_bytes -= len(old[0])
            replies[key] = (data, expires)
            self._reply_bytes += len(data)
            while len(replies) > self._max_replies or self._reply_bytes > self._max_reply_bytes:
                self._reply_bytes -= len(replies.popitem(last=False)[1][0])
                self._evicted_replies += 1
            # expired entries at the cold end go too (in write order when TTLs are uniform)
            while replies:
                oldest_key = next(iter(replies))
                oldest, oldest_expires = replies[oldest_key]
                if oldest_expires > now:
                    break
                del replies[oldest_key]
                self._reply_bytes -= len(oldest)

    def recall_reply(self, key: str) -> bytes | None:
        """The reply for ``key`` if it has not expired (it becomes the most recently used)."""
        key = _check_key(key, "dedup key")
        now = self._now()
        with self._lock:
            entry = self._replies.get(key)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._replies[key]
                self._reply_bytes -= len(entry[0])
                return None
            self._replies.move_to_end(key)
            return entry[0]

    def _take(self, namespace: str, key: str, wanted: int, rate: float, burst: int) -> int:
        now = self._now()
        slot = (namespace, key)
        with self._lock:
            buckets = self._buckets
            granted, tokens, stamp = _bucket_take(buckets.pop(slot, None), now, rate, burst, wanted)
            buckets[slot] = (tokens, stamp)
            while len(buckets) > self._max_buckets:
                buckets.popitem(last=False)
                self._evicted_buckets += 1
            return granted

    def allow(self, subject: str, *, rate: float, burst: int) -> bool:
        """Take one token from ``subject``'s flood bucket; False when it is empty."""
        subject = _check_key(subject, "subject")
        return (
            self._take("flood", subject, 1, _check_rate(rate), _check_count(burst, "burst", 1)) == 1
        )

    def take_submit_budget(self, account: str, n: int, *, rate: float, burst: int) -> int:
        """How many of ``n`` submit_sm may go now; that many tokens are taken."""
        account = _check_key(account, "account")
        wanted = _check_count(n, "n", 0)
        return self._take(
            "submit", account, wanted, _check_rate(rate), _check_count(burst, "burst", 1)
        )

    def budget_wait(self, account: str, *, rate: float) -> float:
        """Seconds until ``account``'s budget holds one more token."""
        account = _check_key(account, "account")
        rate = _check_rate(rate)
        now = self._now()
        with self._lock:
            return _bucket_wait(self._buckets.get(("submit", account)), now, rate)

    def ping(self) -> bool:
        """Always True: the process is its own backend."""
        return True

    def close(self) -> None:
        """Drop everything held."""
        with self._lock:
            self._replies.clear()
            self._buckets.clear()
            self._reply_bytes = 0


# --- Redis ------------------------------------------------------------------------------------

# KEYS[1] bucket; ARGV rate, burst, wanted, now ('' = server TIME), grace ms, max ttl ms.
# Returns the whole tokens granted. Same arithmetic as _bucket_take, in IEEE doubles.
_TAKE_LUA: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local tokens = burst
local stamp = now
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, state = pcall(cjson.decode, raw)
  if ok and type(state) == 'table' and state.v == 1 then
    tokens = state.tokens
    stamp = state.stamp
    if now > stamp then
      tokens = math.min(burst, tokens + (now - stamp) * rate)
      stamp = now
    end
    tokens = math.min(tokens, burst)
  end
end
local granted = math.min(wanted, math.floor(tokens + 1e-9))
if granted < 0 then granted = 0 end
tokens = tokens - granted
local ttl = math.ceil((burst - tokens) / rate * 1000) + tonumber(ARGV[5])
ttl = math.min(ttl, tonumber(ARGV[6]))
redis.call('SET', KEYS[1],
  string.format('{"v":1,"tokens":%.17g,"stamp":%.17g}', tokens, stamp),
  'PX', string.format('%d', ttl))
return granted
"""

# KEYS[1] bucket; ARGV rate, now ('' = server TIME). Returns the wait in seconds as a string.
_WAIT_LUA: Final = """
local rate = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local raw = redis.call('GET', KEYS[1])
if not raw then return '0' end
local ok, state = pcall(cjson.decode, raw)
if not ok or type(state) ~= 'table' or state.v ~= 1 then return '0' end
local tokens = state.tokens
if now > state.stamp then tokens = tokens + (now - state.stamp) * rate end
local missing = 1 - tokens
if missing <= 1e-9 then return '0' end
return string.format('%.17g', missing / rate)
"""

_SECRET_QUERY_NAMES: Final = frozenset({"password", "pass", "pwd", "auth", "token"})


def redact_url(url: str) -> str:
    """``url`` with any password (in the userinfo or a query parameter) shown as ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            # redis://:pw@host and redis://pw@host (no user) both carry a secret
            netloc = f"{user}:***@{hostport}" if sep else f"***@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() in _SECRET_QUERY_NAMES else v) for k, v in pairs],
                safe="*",
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparsable URL>"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


class RedisState:
    """State shared by every gateway instance through one Redis (or Redis Cluster node set).

    ``target`` is a ``redis://``/``rediss://``/``unix://`` URL (a client is made with the given
    timeouts and one immediate retry, for a pooled connection the server dropped) or a
    ``redis.Redis`` the caller owns (it must not decode responses; :meth:`close` leaves it
    open). ``prefix`` starts every key. ``clock``: None takes token-bucket time from the
    Redis server's ``TIME`` (one clock for all instances); a callable is passed into the
    scripts instead (tests; instances sharing a synchronised clock). Dedup TTLs are always
    measured by the server.
    """

    __slots__ = (
        "_client",
        "_clock",
        "_owns_client",
        "_prefix",
        "_take_script",
        "_wait_script",
        "_where",
    )

    def __init__(
        self,
        target: str | redis.Redis,
        *,
        prefix: str = "stkpay:",
        clock: Callable[[], float] | None = None,
        socket_timeout: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        if not isinstance(prefix, str) or len(prefix) > 64 or not _PRINTABLE_RE.fullmatch(prefix):
            raise StateArgumentError("prefix must be 1..64 printable ASCII characters")
        if "{" in prefix or "}" in prefix:
            raise StateArgumentError("prefix must not contain braces (Redis Cluster hash tags)")
        self._prefix = prefix
        self._clock = clock
        if isinstance(target, str):
            self._where = redact_url(target)
            try:
                client = redis.Redis.from_url(
                    target,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=connect_timeout,
                    retry=Retry(NoBackoff(), 1),
                )
            except (ValueError, redis.RedisError) as exc:
                raise StateArgumentError(
                    f"bad Redis URL {self._where}: {type(exc).__name__}"
                ) from None
            self._owns_client = True
        elif isinstance(target, redis.Redis):
            client = target
            kwargs = client.connection_pool.connection_kwargs
            where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
            self._where = f"redis {where} db {kwargs.get('db', 0)}"
            self._owns_client = False
        else:
            raise StateArgumentError("target must be a Redis URL or a redis.Redis client")
        if client.get_encoder().decode_responses:
            raise StateArgumentError("the Redis client must not decode responses (bytes values)")
        self._client = client
        self._take_script = client.register_script(_TAKE_LUA)
        self._wait_script = client.register_script(_WAIT_LUA)

    def __repr__(self) -> str:
        return f"RedisState({self._where!r}, prefix={self._prefix!r})"

    @property
    def prefix(self) -> str:
        """What every key of this store starts with."""
        return self._prefix

    def redis_key(self, namespace: str, key: str) -> str:
        """The Redis key for caller ``key`` in ``namespace`` (reply, flood or submit)."""
        if namespace not in ("reply", "flood", "submit"):
            raise StateArgumentError(f"unknown namespace {namespace[:20]!r}")
        return _redis_key(self._prefix, namespace, _check_key(key, "key"))

    def _unavailable(self, exc: redis.RedisError) -> StateUnavailable:
        detail = _one_line(str(exc))
        return StateUnavailable(f"Redis at {self._where}: {type(exc).__name__}: {detail}")

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(_check_now(self._clock()))

    def remember_reply(self, key: str, reply: bytes, ttl: float) -> None:
        """``SET prefix{tag}:reply:rest reply PX ttl`` (at least 1 ms)."""
        name = _redis_key(self._prefix, "reply", _check_key(key, "dedup key"))
        data = _check_reply(reply)
        ttl_ms = max(1, math.ceil(_check_ttl(ttl) * 1000))
        try:
            self._client.set(name, data, px=ttl_ms)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None

    def recall_reply(self, key: str) -> bytes | None:
        """``GET`` of the reply key (expiry is the server's)."""
        name = _redis_key(self._prefix, "reply", _check_key(key, "dedup key"))
        try:
            value: Any = self._client.get(name)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None
        return None if value is None else bytes(value)

    def _take(self, namespace: str, key: str, wanted: int, rate: float, burst: int) -> int:
        name = _redis_key(self._prefix, namespace, key)
        args = [
            repr(rate),
            str(burst),
            str(wanted),
            self._now_arg(),
            str(int(BUCKET_GRACE * 1000)),
            str(int(BUCKET_TTL_MAX * 1000)),
        ]
        try:
            granted: Any = self._take_script(keys=[name], args=args)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None
        return int(granted)

    def allow(self, subject: str, *, rate: float, burst: int) -> bool:
        """One token from ``prefix{tag}:flood[:rest]`` (atomic script)."""
        subject = _check_key(subject, "subject")
        return (
            self._take("flood", subject, 1, _check_rate(rate), _check_count(burst, "burst", 1)) == 1
        )

    def take_submit_budget(self, account: str, n: int, *, rate: float, burst: int) -> int:
        """Up to ``n`` tokens from ``prefix{account}:submit`` (atomic script)."""
        account = _check_key(account, "account")
        wanted = _check_count(n, "n", 0)
        return self._take(
            "submit", account, wanted, _check_rate(rate), _check_count(burst, "burst", 1)
        )

    def budget_wait(self, account: str, *, rate: float) -> float:
        """Seconds until ``prefix{account}:submit`` holds one more token (read-only script)."""
        name = _redis_key(self._prefix, "submit", _check_key(account, "account"))
        args = [repr(_check_rate(rate)), self._now_arg()]
        try:
            wait: Any = self._wait_script(keys=[name], args=args)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None
        return float(wait)

    def ping(self) -> bool:
        """True when the server answers PING."""
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        """Close the connection pool when this store made the client."""
        if self._owns_client:
            self._client.close()


def open_state(url: str | None = None, **kwargs: Any) -> StateStore:
    """The store a configuration names: None, ``""`` or ``memory:`` for :class:`MemoryState`,
    a ``redis://``, ``rediss://`` or ``unix://`` URL for :class:`RedisState`; ``kwargs`` go to
    the constructor."""
    if url is None or url in ("", "memory:"):
        return MemoryState(**kwargs)
    scheme = url.partition(":")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisState(url, **kwargs)
    raise StateArgumentError(f"unknown state store URL scheme {scheme[:20]!r}")
