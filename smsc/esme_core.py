"""Sans-IO core of the ESME client: window, queue, rate, throttling, timers, reconnect backoff.

SMPP v3.4 Issue 1.2 clauses this module implements on the client side:

* §2.6 / §3.1 "Asynchronous operation" and *window*: at most ``window`` requests are
  outstanding per bind; each carries a response deadline (§2.5 ``response_timer``); a
  request with no response before its deadline marks the link as bad.
* §5.1.3 ``ESME_RTHROTTLED`` (0x58) and ``ESME_RMSGQFUL`` (0x14): not failures of the
  message; the request goes back to the head of the queue, sending pauses (exponential,
  jittered) and the window halves (multiplicative decrease), then regrows by one per
  ``regrow_after`` successes (additive increase). The send rate adapts too: a throttle
  episode sets the token bucket's rate to 90 % of the lower of the current rate and the
  rate the SMSC accepted since the previous pause ended, and sending resumes from an
  empty bucket; each second without throttling raises the rate by 10 % (+1) back toward
  ``throughput``. So an SMSC's per-second limit is approached instead of being hit right
  after every pause.
* §4.11 ``enquire_link``: sent after ``interval`` seconds of inbound silence; the link is
  dead when nothing arrives within ``timeout`` of it (:class:`KeepAlive`).
* Reconnect pacing (not in the spec): exponential from ``minimum`` to ``maximum`` with
  full or decorrelated jitter, reset once a bind has lasted ``stable_after`` seconds
  (:class:`ReconnectBackoff`).

Nothing here does I/O or reads a clock: every method takes ``now`` (seconds, any epoch,
monotonic in practice) and returns what to send or who completed. The Twisted adapter is
:mod:`smsc.esme`.

Delivery guarantee to callers: every enqueued request completes **exactly once** (success,
SMSC error, :data:`TIMEOUT` or :data:`ABORTED`) or is still pending. Requests go out in
enqueue order; a request that must be sent again (throttled, or in flight when the link
dropped) is resent before any newer one, in its original order, with a new sequence number.
A response that matches nothing in flight (late, duplicate, unknown) is ignored and counted.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from typing import Final, Generic, TypeVar

from smsc.pdu import Pdu, Status

T = TypeVar("T")

#: Local outcome of a request that got no response before it exhausted its attempts (or
#: the link dropped while the ESME was stopping): the SMSC may or may not have accepted it.
TIMEOUT: Final = -1
#: Local outcome of a request the ESME never got accepted because it stopped (or was told
#: not to reconnect): it was not sent, or it was refused with throttling. Safe to resend.
ABORTED: Final = -2
#: Local outcome of a request that could not be encoded (never sent).
INVALID: Final = -3

_THROTTLE_STATUSES: Final = frozenset({Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL})
_MAX_LEVEL: Final = 30  # 2**30 * backoff is far beyond any cap; keeps the float finite
# Rate adaptation to throttling (tuned against a token-bucket SMSC with a 0.1 s burst: about
# 80 % of its limit with a 1 s throttle_backoff, 97 % with 0.1 s).
_RATE_DECREASE: Final = 0.9  # a throttle episode: rate x this (of the accepted rate if lower)
_PROBE_INTERVAL: Final = 1.0  # seconds without throttling before each rate increase
_PROBE_GROWTH: Final = 1.1  # the increase: rate x this, + 1


@dataclass(frozen=True, slots=True)
class Completion(Generic[T]):
    """The final outcome of one request, reported exactly once.

    ``status`` is the SMPP command_status of the response (0 = accepted), or one of the
    negative local outcomes :data:`TIMEOUT` / :data:`ABORTED`. ``message_id`` is the
    SMSC's id from the response (may be ``""``: some SMSCs send none).
    """

    token: T
    status: int
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class TimerResult(Generic[T]):
    """What :meth:`EsmeCore.on_timer` found: completed requests and whether the link is bad.

    ``drop_link`` means a request timed out: the core has already treated the connection
    as lost (in-flight requests requeued); the adapter must abort the connection and
    reconnect.
    """

    completions: list[Completion[T]]
    drop_link: bool


@dataclass(slots=True)
class CoreStats:
    """Counters of one :class:`EsmeCore` (monotonic, never reset)."""

    enqueued: int = 0
    sent: int = 0
    resent: int = 0
    accepted: int = 0
    failed: int = 0
    throttled: int = 0
    throttle_pauses: int = 0
    timeouts: int = 0
    requeued_on_drop: int = 0
    late_responses: int = 0
    aborted: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class TokenBucket:
    """Token bucket: ``rate`` tokens per second, at most ``burst`` banked (starts full)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp: float | None = None

    def _refill(self, now: float) -> None:
        stamp = self.stamp
        if stamp is not None and now > stamp:
            self.tokens = min(self.burst, self.tokens + (now - stamp) * self.rate)
        self.stamp = now

    def take(self, now: float, wanted: int) -> int:
        """Take up to ``wanted`` whole tokens at ``now``; return how many were granted."""
        self._refill(now)
        granted = min(wanted, int(self.tokens + 1e-9))
        if granted > 0:
            self.tokens -= granted
        return granted

    def set_rate(self, now: float, rate: float) -> None:
        """Change the rate from ``now`` on (tokens earned so far are kept)."""
        self._refill(now)
        self.rate = rate

    def available_at(self) -> float:
        """When the next whole token is available (the last ``take`` time if one is now)."""
        stamp = 0.0 if self.stamp is None else self.stamp
        missing = 1.0 - self.tokens
        return stamp if missing <= 1e-9 else stamp + missing / self.rate


class _Request(Generic[T]):
    """One request's bookkeeping (mutable, slotted: it lives on the hot path)."""

    __slots__ = (
        "deadline",
        "epoch",
        "order",
        "pdu",
        "sends",
        "seq",
        "timeouts",
        "token",
        "unanswered",
    )

    def __init__(self, pdu: Pdu, token: T, order: int) -> None:
        self.pdu = pdu
        self.token = token
        self.order = order
        self.seq = 0
        self.sends = 0
        self.timeouts = 0
        self.epoch = 0
        self.deadline = 0.0
        # A send of it went unanswered (link dropped or timed out): the SMSC may have
        # accepted it, so giving up on it is TIMEOUT (outcome unknown), never ABORTED.
        self.unanswered = False


class EsmeCore(Generic[T]):
    """The outbound request machinery of one bind (the transmitter or transceiver side).

    Lifecycle per connection: :meth:`bound` when the bind_resp says OK; :meth:`ready`
    whenever something may be sendable (after a batch of input, after :meth:`enqueue`,
    after :meth:`on_timer`); :meth:`on_response` for each submit_sm_resp / data_sm_resp /
    generic_nack; :meth:`on_timer` at :meth:`next_deadline`; :meth:`connection_lost` when
    the transport closes. The queue survives connections: nothing is lost or failed by a
    reconnect.

    ``max_attempts``: how many of a request's sends may time out before it completes with
    :data:`TIMEOUT`. A dropped connection requeues its in-flight requests without counting
    an attempt (the drop is the link's fault, not the message's); the reconnect backoff
    bounds how fast that can repeat.

    ``regrow_after``: successes per +1 of the shrunken window (``None``: the current
    window size, i.e. one step per window's worth of successes, as TCP's additive
    increase). ``burst``: token bucket depth (``None``: ``min(window, throughput)``, at
    least 1).
    """

    def __init__(
        self,
        *,
        window: int = 10,
        response_timeout: float = 10.0,
        throughput: float = 100.0,
        throttle_backoff: float = 1.0,
        throttle_backoff_max: float | None = None,
        max_attempts: int = 3,
        regrow_after: int | None = None,
        burst: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if response_timeout <= 0 or throttle_backoff <= 0:
            raise ValueError("response_timeout and throttle_backoff must be > 0")
        if regrow_after is not None and regrow_after < 1:
            raise ValueError("regrow_after must be >= 1")
        self.window = window
        self.response_timeout = response_timeout
        self.max_attempts = max_attempts
        self.throttle_backoff = throttle_backoff
        self.throttle_backoff_max = (
            throttle_backoff * 32 if throttle_backoff_max is None else throttle_backoff_max
        )
        self.regrow_after = regrow_after
        self.bucket = TokenBucket(
            throughput, max(1.0, min(float(window), throughput)) if burst is None else burst
        )
        self._burst_max = self.bucket.burst
        self.stats = CoreStats()
        self._rng = rng if rng is not None else random.Random()
        self._queue: deque[_Request[T]] = deque()
        # Requests to send again, before anything in _queue, smallest order first. Every
        # request here is older than every request in _queue (it left _queue earlier).
        self._retry: list[tuple[int, _Request[T]]] = []
        # seq -> request, in send order, hence in deadline order (one timeout for all).
        self._in_flight: dict[int, _Request[T]] = {}
        self._order = 0
        self._effective = window
        self._credit = 0
        self._level = 0  # consecutive throttle episodes
        self._epoch = 0  # bumped by each throttle pause; a request remembers its send epoch
        self._pause_until = float("-inf")
        self._next_seq: Callable[[], int] | None = None
        self._draining = False
        self.max_rate = throughput
        self._next_probe = float("inf")
        # Acceptances of requests sent since the last pause ended (or the first bind).
        self._active_since: float | None = None
        self._active_accepts = 0

    # -- introspection -------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered on the current connection."""
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        """Requests waiting to be sent (including those to be sent again)."""
        return len(self._queue) + len(self._retry)

    @property
    def effective_window(self) -> int:
        """The current window: ``window`` unless shrunk by throttling."""
        return self._effective

    @property
    def linked(self) -> bool:
        """True between :meth:`bound` and the connection's loss (or :meth:`link_closing`)."""
        return self._next_seq is not None

    @property
    def draining(self) -> bool:
        """True after :meth:`drain`: nothing new is sent."""
        return self._draining

    @property
    def rate(self) -> float:
        """The current send rate limit (requests per second)."""
        return self.bucket.rate

    @property
    def paused_until(self) -> float:
        """End of the current throttle pause (``-inf`` if never paused)."""
        return self._pause_until

    # -- input ---------------------------------------------------------------------------

    def enqueue(self, pdu: Pdu, token: T) -> None:
        """Queue a request (its ``sequence_number`` is assigned when sent)."""
        self._order += 1
        self._queue.append(_Request(pdu, token, self._order))
        self.stats.enqueued += 1

    def bound(self, now: float, next_sequence: Callable[[], int]) -> None:
        """The connection is bound: requests may go out, numbered by ``next_sequence``."""
        if self._active_since is None:
            self._active_since = now
        self._next_seq = next_sequence

    def link_closing(self) -> None:
        """Stop sending on this connection (the peer unbound) but keep accepting responses."""
        self._next_seq = None

    def connection_lost(self, now: float) -> list[Completion[T]]:
        """The transport closed: in-flight requests go back to the head of the queue.

        Returns completions only while draining (a stopped ESME does not resend): the
        in-flight requests then complete with :data:`TIMEOUT`.
        """
        del now
        self._next_seq = None
        if not self._in_flight:
            return []
        requests = list(self._in_flight.values())
        self._in_flight.clear()
        if self._draining:
            return self._finish_all(requests, TIMEOUT)
        self.stats.requeued_on_drop += len(requests)
        for req in requests:
            req.unanswered = True
            heapq.heappush(self._retry, (req.order, req))
        return []

    def ready(self, now: float) -> list[Pdu]:
        """The requests to send now, in order, each with its new ``sequence_number``.

        Bounded by the effective window, the token bucket and any throttle pause.
        """
        next_seq = self._next_seq
        if next_seq is None or self._draining or now < self._pause_until:
            return []
        if now >= self._next_probe:
            self._probe(now)
        in_flight = self._in_flight
        room = self._effective - len(in_flight)
        if room <= 0:
            return []
        queue = self._queue
        retry = self._retry
        waiting = len(queue) + len(retry)
        if not waiting:
            return []
        count = self.bucket.take(now, room if room < waiting else waiting)
        if not count:
            return []
        out: list[Pdu] = []
        deadline = now + self.response_timeout
        epoch = self._epoch
        resent = 0
        for _ in range(count):
            req = heapq.heappop(retry)[1] if retry else queue.popleft()
            seq = next_seq()
            req.pdu.sequence_number = seq
            req.seq = seq
            req.deadline = deadline
            req.epoch = epoch
            if req.sends:
                resent += 1
            req.sends += 1
            in_flight[seq] = req
            out.append(req.pdu)
        self.stats.sent += count
        self.stats.resent += resent
        return out

    def on_response(self, pdu: Pdu, now: float) -> Completion[T] | None:
        """A response (submit_sm_resp, data_sm_resp, generic_nack) arrived.

        Returns the request's completion, or None when the request goes back to the queue
        (throttled) or the response matches nothing in flight (counted as late).
        """
        req = self._in_flight.pop(pdu.sequence_number, None)
        if req is None:
            self.stats.late_responses += 1
            return None
        status = pdu.command_status
        if status == 0:
            self.stats.accepted += 1
            # Only a request sent since the last pause says the SMSC has recovered.
            if req.epoch == self._epoch:
                self._active_accepts += 1
                self._level = 0
                if self._effective < self.window:
                    self._credit += 1
                    if self._credit >= (self.regrow_after or self._effective):
                        self._credit = 0
                        self._effective += 1
            return Completion(req.token, 0, getattr(pdu, "message_id", ""))
        if status in _THROTTLE_STATUSES:
            self.stats.throttled += 1
            if self._draining:
                self.stats.aborted += 1
                return Completion(req.token, ABORTED)
            heapq.heappush(self._retry, (req.order, req))
            if req.epoch == self._epoch:
                self._throttle_pause(now)
            return None
        self.stats.failed += 1
        return Completion(req.token, status, getattr(pdu, "message_id", ""))

    def reject(self, sequence_number: int, status: int) -> Completion[T] | None:
        """Complete an in-flight request with a local ``status`` (e.g. :data:`INVALID` when
        the session could not encode it): it leaves the window and is not resent."""
        req = self._in_flight.pop(sequence_number, None)
        if req is None:
            return None
        self.stats.failed += 1
        return Completion(req.token, status)

    def _throttle_pause(self, now: float) -> None:
        """Start a throttle episode: jittered exponential pause, halve the window.

        Only a request sent since the last pause starts a new episode, so a full window
        answered with ESME_RTHROTTLED counts once, not ``window`` times.
        """
        self._level = min(self._level + 1, _MAX_LEVEL)
        base = min(self.throttle_backoff * 2.0 ** (self._level - 1), self.throttle_backoff_max)
        self._pause_until = now + base * (0.5 + 0.5 * self._rng.random())
        self._epoch += 1
        self._effective = max(1, self._effective // 2)
        self._credit = 0
        self.stats.throttle_pauses += 1
        rate = self.bucket.rate
        since = self._active_since
        if since is not None and now > since:
            rate = min(rate, self._active_accepts / (now - since))
        self._set_rate(now, _RATE_DECREASE * rate)
        # Resume from an empty bucket: no burst right after the pause.
        self.bucket.tokens = -self.bucket.rate * (self._pause_until - now)
        self._active_since = self._pause_until
        self._active_accepts = 0
        self._next_probe = self._pause_until + _PROBE_INTERVAL

    def _probe(self, now: float) -> None:
        """A second without throttling: raise the rate by 10 % (+1) toward the maximum."""
        rate = min(self.max_rate, self.bucket.rate * _PROBE_GROWTH + 1.0)
        self._set_rate(now, rate)
        self._next_probe = now + _PROBE_INTERVAL if rate < self.max_rate else float("inf")

    def _set_rate(self, now: float, rate: float) -> None:
        """Adapt the bucket: ``rate`` (at least 1/s), a burst of 0.1 s of it (capped)."""
        rate = max(1.0, rate)
        self.bucket.set_rate(now, rate)
        self.bucket.burst = max(1.0, min(self._burst_max, rate * 0.1))
        self.bucket.tokens = min(self.bucket.tokens, self.bucket.burst)

    # -- time ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`on_timer` (or :meth:`ready`) has something to do."""
        deadline: float | None = None
        if self._in_flight:
            deadline = next(iter(self._in_flight.values())).deadline
        if (
            self._next_seq is not None
            and not self._draining
            and (self._queue or self._retry)
            and len(self._in_flight) < self._effective
        ):
            when = max(self._pause_until, self.bucket.available_at())
            if deadline is None or when < deadline:
                deadline = when
        return deadline

    def on_timer(self, now: float) -> TimerResult[T]:
        """Handle response deadlines at ``now``.

        A request past its deadline means the link is bad: every in-flight request leaves
        the connection (as in :meth:`connection_lost`); the timed-out ones count an attempt
        and complete with :data:`TIMEOUT` once ``max_attempts`` sends have timed out.
        """
        in_flight = self._in_flight
        if not in_flight or next(iter(in_flight.values())).deadline > now:
            return TimerResult([], False)
        completions: list[Completion[T]] = []
        requests = list(in_flight.values())
        in_flight.clear()
        self._next_seq = None
        for req in requests:
            if req.deadline <= now:
                self.stats.timeouts += 1
                req.timeouts += 1
                if req.timeouts >= self.max_attempts:
                    completions.append(Completion(req.token, TIMEOUT))
                    self.stats.failed += 1
                    continue
            if self._draining:
                completions.append(Completion(req.token, TIMEOUT))
                self.stats.failed += 1
                continue
            self.stats.requeued_on_drop += 1
            req.unanswered = True
            heapq.heappush(self._retry, (req.order, req))
        return TimerResult(completions, True)

    # -- stopping ------------------------------------------------------------------------

    def drain(self) -> list[Completion[T]]:
        """Stop sending: queued requests complete with :data:`ABORTED` (never accepted),
        except those whose earlier send went unanswered, which complete with
        :data:`TIMEOUT` (the SMSC may have accepted them); in-flight ones are still awaited
        (their responses complete them; throttled ones become ABORTED)."""
        self._draining = True
        waiting = [req for _, req in sorted(self._retry, key=lambda item: item[0])]
        waiting.extend(self._queue)
        self._retry.clear()
        self._queue.clear()
        unknown = [req for req in waiting if req.unanswered]
        never = [req for req in waiting if not req.unanswered]
        return self._finish_all(unknown, TIMEOUT) + self._finish_all(never, ABORTED)

    def abort(self) -> list[Completion[T]]:
        """Give up on everything: in-flight -> :data:`TIMEOUT`, waiting -> :data:`ABORTED`."""
        completions = self.drain()
        requests = list(self._in_flight.values())
        self._in_flight.clear()
        self._next_seq = None
        return completions + self._finish_all(requests, TIMEOUT)

    def _finish_all(self, requests: list[_Request[T]], status: int) -> list[Completion[T]]:
        if status == ABORTED:
            self.stats.aborted += len(requests)
        else:
            self.stats.failed += len(requests)
        return [Completion(req.token, status) for req in requests]


# -- keep-alive --------------------------------------------------------------------------


class Probe(Enum):
    """What :meth:`KeepAlive.on_timer` asks the adapter to do."""

    SEND = "send"  # send an enquire_link now
    DEAD = "dead"  # the probe went unanswered: drop the connection


class KeepAlive:
    """§4.11 enquire_link after ``interval`` seconds of inbound silence; dead after
    ``timeout`` more seconds with nothing received. Any inbound bytes count as life."""

    __slots__ = ("interval", "last_rx", "probe_deadline", "timeout")

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.last_rx = now
        self.probe_deadline: float | None = None

    def activity(self, now: float) -> None:
        """Something arrived from the peer."""
        self.last_rx = now
        self.probe_deadline = None

    def next_deadline(self) -> float:
        """When :meth:`on_timer` next has something to do."""
        if self.probe_deadline is not None:
            return self.probe_deadline
        return self.last_rx + self.interval

    def on_timer(self, now: float) -> Probe | None:
        """Send a probe, declare the peer dead, or nothing yet."""
        if self.probe_deadline is not None:
            return Probe.DEAD if now >= self.probe_deadline else None
        if now >= self.last_rx + self.interval:
            self.probe_deadline = now + self.timeout
            return Probe.SEND
        return None


# -- reconnect backoff -------------------------------------------------------------------


class ReconnectBackoff:
    """Delay before each reconnect: exponential from ``minimum`` to ``maximum`` with jitter.

    ``jitter="full"``: uniform in [minimum, min(maximum, minimum * 2**n)];
    ``jitter="decorrelated"``: min(maximum, uniform(minimum, 3 * previous)). Failed
    connects and failed binds both grow it; :meth:`lost` resets it when the bind that
    just ended had lasted ``stable_after`` seconds.
    """

    __slots__ = (
        "_bound_at",
        "_failures",
        "_previous",
        "_rng",
        "jitter",
        "maximum",
        "minimum",
        "stable_after",
    )

    def __init__(
        self,
        minimum: float,
        maximum: float,
        *,
        rng: random.Random,
        jitter: str = "decorrelated",
        stable_after: float = 30.0,
    ) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("need 0 < minimum <= maximum")
        if jitter not in ("full", "decorrelated"):
            raise ValueError("jitter must be 'full' or 'decorrelated'")
        self.minimum = minimum
        self.maximum = maximum
        self.jitter = jitter
        self.stable_after = stable_after
        self._rng = rng
        self._failures = 0
        self._previous = minimum
        self._bound_at: float | None = None

    @property
    def failures(self) -> int:
        """Consecutive delays handed out since the last reset."""
        return self._failures

    def next_delay(self) -> float:
        """The delay before the next connection attempt."""
        if self.jitter == "full":
            ceiling = min(self.maximum, self.minimum * 2.0 ** min(self._failures, 60))
            delay = self._rng.uniform(self.minimum, ceiling)
        else:
            delay = min(self.maximum, self._rng.uniform(self.minimum, self._previous * 3.0))
        self._failures += 1
        self._previous = delay
        return delay

    def bound(self, now: float) -> None:
        """A bind succeeded at ``now``."""
        self._bound_at = now

    def lost(self, now: float) -> None:
        """The connection ended at ``now``: reset if its bind had lasted long enough."""
        if self._bound_at is not None and now - self._bound_at >= self.stable_after:
            self.reset()
        self._bound_at = None

    def reset(self) -> None:
        """Start again from ``minimum``."""
        self._failures = 0
        self._previous = self.minimum
