"""Fault tests of smsc/esme.py against the real SMSC simulator over loopback TCP.

The fake-clock versions (tests/smsc/test_esme.py, test_esme_core.py) pin the logic; these
pin the same promises end to end, on the real reactor, with the simulator's injected faults
(smsc.simulator.Faults): a connection dropped with a full window, throttling, a peer that
stops answering (the stall fault: SMPP 3.4 §4.11 enquire_link goes unanswered), and the
graceful stop that drains the window before the §4.2 unbind. Every wait is bounded by a
deadline; nothing sleeps inside protocol logic.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from smsc.esme import Esme
from smsc.handset import MailboxDirectory
from smsc.message import OutboundMessage, SendResult
from smsc.session import State
from smsc.simulator import Faults, Simulator
from stkpay.config import Secret, SmscConfig
from tests.smsc.conftest import SimHandle
from tests.smsc.test_sim_api import http

StartSim = Callable[..., Awaitable[SimHandle]]

#: Handsets the messages are spread over (one mailbox each).
PHONES = tuple(f"86139000{n:05d}" for n in range(8))


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def logged_failures() -> Iterator[list[LogEvent]]:
    """Failures logged while the test runs (an exception in a callback, a Deferred fired
    twice, an unhandled error): the tests assert there are none."""
    seen: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_failure") is not None:
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def failure_texts(events: list[LogEvent]) -> list[str]:
    """The logged failures as text, for an assertion message."""
    return [str(event["log_failure"].getTraceback()) for event in events]


def esme_config(sim: SimHandle, **overrides: Any) -> SmscConfig:
    """An SmscConfig binding to ``sim`` as its account, no receipts, fast reconnects."""
    settings: dict[str, Any] = {
        "host": sim.host,
        "port": sim.port,
        "system_id": sim.system_id,
        "password": Secret(sim.password),
        "source_addr": sim.short_code,
        "window": 64,
        "response_timeout": 5.0,
        "enquire_link_interval": 30.0,
        "throughput": 100_000.0,
        "reconnect_min": 0.05,
        "reconnect_max": 0.1,
        "registered_delivery": False,
    }
    settings.update(overrides)
    return SmscConfig(**settings)


@pytest_twisted.async_yield_fixture
async def esmes() -> AsyncIterator[Callable[..., Esme]]:
    """``esmes(config, **kwargs)`` starts an Esme on the real reactor; all stop at teardown."""
    started: list[Esme] = []

    def start(config: SmscConfig, **kwargs: Any) -> Esme:
        kwargs.setdefault("rng", random.Random(2775))
        kwargs.setdefault("bind_stable_after", 0.1)
        esme = Esme(config, reactor=reactor, **kwargs)
        esme.startService()
        started.append(esme)
        return esme

    yield start
    for esme in started:
        if esme.running:
            await esme.stopService()


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Let the reactor run until ``condition()`` holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await task.deferLater(reactor, 0.005, lambda: None)


class Outcomes:
    """Every message's outcome, by message number, counting how often each arrived."""

    def __init__(self) -> None:
        self.results: dict[int, SendResult] = {}
        self.calls: Counter[int] = Counter()
        self.errors: list[Failure] = []
        self.times: list[float] = []

    def track(self, number: int, d: Deferred[SendResult]) -> None:
        """Record the outcome of message ``number``."""

        def done(result: SendResult) -> None:
            self.calls[number] += 1
            self.results[number] = result
            self.times.append(time.monotonic())

        def failed(failure: Failure) -> None:
            self.calls[number] += 1
            self.errors.append(failure)

        d.addCallbacks(done, failed)

    def count(self) -> int:
        """Outcomes arrived so far (errors included)."""
        return sum(self.calls.values())


def send_numbered(esme: Esme, outcomes: Outcomes, numbers: range, prefix: str) -> None:
    """Send one short GSM message per number (text ``prefix-NNNNN``), round-robin over
    :data:`PHONES`."""
    for n in numbers:
        msg = OutboundMessage(PHONES[n % len(PHONES)], text=f"{prefix}-{n:05d}")
        outcomes.track(n, esme.send(msg))


def delivered(sim: Simulator) -> list[tuple[str, str]]:
    """(text, message id) of every MT in the simulator's mailboxes."""
    directory = sim.directory
    assert isinstance(directory, MailboxDirectory)
    found = []
    for phone in PHONES:
        for stored in directory.messages(phone):
            mt = stored.message
            (part,) = mt.parts
            found.append((mt.message.text(), part.message_id))
    return found


def assert_each_once(outcomes: Outcomes, total: int) -> None:
    """Every message's Deferred fired exactly once, with success."""
    assert not outcomes.errors, [f.getErrorMessage() for f in outcomes.errors]
    assert sorted(outcomes.calls) == list(range(total))
    assert set(outcomes.calls.values()) == {1}
    failed = {n: r.parts[0].status_name for n, r in outcomes.results.items() if not r.ok}
    assert failed == {}


# -- a connection dropped with a full window -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_drops_with_full_window_lose_nothing(
    smsc_sim_factory: StartSim, esmes: Callable[..., Esme], logged_failures: list[LogEvent]
) -> None:
    """The SMSC drops the connection at its 700th PDU, several times over 3000 messages at
    window 64, with responses delayed 5 ms so that each drop catches a full window.

    Every caller's Deferred fires exactly once, with success; no message is lost (each text
    reached its handset) and every message id a caller was given is a message the handset
    got, with that text. SMPP is at-least-once: a submit_sm the SMSC accepted but whose
    response died with the connection is resent after the rebind, so the SMSC may hold it
    twice. The caller hears of only one of the two (none twice to its knowledge), and each
    such duplicate is one of the resends the ESME counts in its stats.
    """
    total = 3000
    handle = await smsc_sim_factory(
        faults=Faults(drop_after=700, response_delay=0.005), mt_retention=total
    )
    sim = handle.simulator
    esme = esmes(esme_config(handle))
    await esme.when_bound()
    outcomes = Outcomes()
    send_numbered(esme, outcomes, range(total), "drop")
    await until(lambda: outcomes.count() == total, 20.0, "every outcome")
    assert_each_once(outcomes, total)

    stats = esme.stats
    assert stats["connections_lost"] >= 3
    assert stats["binds"] == stats["connections_lost"] + 1
    mailbox = delivered(sim)
    by_id = {message_id: text for text, message_id in mailbox}
    assert len(by_id) == len(mailbox)  # the SMSC never reuses an id
    texts = Counter(text for text, _ in mailbox)
    assert set(texts) == {f"drop-{n:05d}" for n in range(total)}  # nothing lost
    for n, result in outcomes.results.items():
        assert by_id[result.message_ids[0]] == f"drop-{n:05d}"
    duplicates = len(mailbox) - total
    assert duplicates == sum(count - 1 for count in texts.values())
    assert 0 < duplicates <= stats["core_resent"]
    assert stats["core_resent"] == stats["core_requeued_on_drop"]
    assert sim.stats()["totals"]["submit_sm"] == len(mailbox)
    assert stats["core_timeouts"] == 0 and stats["core_aborted"] == 0
    assert not logged_failures, failure_texts(logged_failures)


# -- throttling ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_throttling_slows_the_client_without_errors(
    smsc_sim_factory: StartSim, esmes: Callable[..., Esme], logged_failures: list[LogEvent]
) -> None:
    """The SMSC accepts 300 submit_sm/s per bind (ESME_RTHROTTLED beyond) while the ESME
    is configured for 5000/s: every message succeeds (no ESME_RTHROTTLED reaches a caller),
    the observed rate settles near the limit, and the ESME counts the throttles it took."""
    total, limit = 600, 300.0
    handle = await smsc_sim_factory(faults=Faults(throttle=limit))
    esme = esmes(esme_config(handle, throughput=5000.0, throttle_backoff=0.1))
    await esme.when_bound()
    outcomes = Outcomes()
    started = time.monotonic()
    send_numbered(esme, outcomes, range(total), "slow")
    await until(lambda: outcomes.count() == total, 8.0, "every outcome")
    elapsed = max(outcomes.times) - started
    assert_each_once(outcomes, total)

    rate = total / elapsed
    # The SMSC's bucket holds 0.1 s of tokens: nobody can beat limit * t + 30.
    assert rate <= (limit * elapsed + 30) / elapsed * 1.05
    assert rate >= 0.6 * limit, f"{rate:.0f}/s is far below the SMSC's {limit:.0f}/s"
    stats = esme.stats
    refused = handle.simulator.stats()["totals"]["throttled"]
    assert refused > 0
    assert stats["core_throttled"] == refused
    assert stats["core_throttle_pauses"] >= 1
    assert stats["core_resent"] == refused  # each refused request went out again
    assert len(delivered(handle.simulator)) == total
    assert not logged_failures, failure_texts(logged_failures)


# -- a peer that stops answering --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_hung_smsc_is_detected_by_enquire_link_and_reconnected(
    smsc_sim_factory: StartSim, esmes: Callable[..., Esme], logged_failures: list[LogEvent]
) -> None:
    """An idle bound link whose SMSC hangs (``POST /faults {"stall": true}``: PDUs read,
    nothing answered): after enquire_link_interval of silence the ESME's enquire_link goes
    unanswered, and response_timeout later the ESME drops the link (a dead link, not a
    response timeout) and reconnects once the SMSC answers again. The messages sent into
    the hung link all complete once, with success, each delivered once."""
    handle = await smsc_sim_factory()
    sim = handle.simulator
    config = esme_config(
        handle,
        enquire_link_interval=0.3,
        response_timeout=0.3,
        reconnect_min=0.2,
        reconnect_max=0.3,
    )
    esme = esmes(config)
    await esme.when_bound()
    before = Outcomes()
    send_numbered(esme, before, range(5), "before")
    await until(lambda: before.count() == 5, 5.0, "the first messages")
    assert_each_once(before, 5)

    code, faults = await http("POST", handle.api_url + "/faults", {"stall": True})
    assert (code, faults["stall"]) == (200, True)
    probes = esme.stats["enquire_links_sent"]
    await until(lambda: esme.stats["enquire_links_sent"] > probes, 2.0, "an enquire_link")
    outcomes = Outcomes()
    send_numbered(esme, outcomes, range(20), "across")
    await until(lambda: esme.stats["dead_links"] == 1, 2.0, "the dead link")
    assert outcomes.count() == 0  # nothing was answered, nothing was given up
    sim.set_faults(Faults())  # the SMSC recovers before the reconnect (>= 0.2 s later)
    await until(lambda: outcomes.count() == 20, 5.0, "every outcome")
    assert_each_once(outcomes, 20)

    stats = esme.stats
    assert stats["dead_links"] == 1 and stats["response_timeouts"] == 0
    assert stats["binds"] == 2
    assert stats["core_requeued_on_drop"] == 20 and stats["core_resent"] == 20
    texts = Counter(text for text, _ in delivered(sim))
    assert texts == Counter(
        [f"before-{n:05d}" for n in range(5)] + [f"across-{n:05d}" for n in range(20)]
    )
    totals = sim.stats()["totals"]
    assert totals["stalled"] >= 21  # the enquire_link and the 20 submit_sm
    assert not logged_failures, failure_texts(logged_failures)


@pytest_twisted.ensureDeferred
async def test_smsc_hanging_under_load_is_detected_and_nothing_is_lost(
    smsc_sim_factory: StartSim, esmes: Callable[..., Esme], logged_failures: list[LogEvent]
) -> None:
    """Each connection hangs from its 300th PDU (``stall_after``) while the window is full:
    the unanswered submit_sm time out, the ESME drops the link and reconnects, and the new
    connection takes the resent requests. Every message completes once, with success, and
    reaches its handset exactly once (the hung SMSC never handled what it ignored)."""
    total = 1000
    handle = await smsc_sim_factory(faults=Faults(stall_after=300), mt_retention=total)
    esme = esmes(esme_config(handle, response_timeout=0.3, enquire_link_interval=0.3))
    await esme.when_bound()
    outcomes = Outcomes()
    send_numbered(esme, outcomes, range(total), "load")
    await until(lambda: outcomes.count() == total, 9.0, "every outcome")
    assert_each_once(outcomes, total)

    stats = esme.stats
    hangs = stats["response_timeouts"] + stats["dead_links"]
    assert hangs >= 3
    assert stats["binds"] == hangs + 1
    assert stats["core_resent"] == stats["core_requeued_on_drop"] > 0
    texts = Counter(text for text, _ in delivered(handle.simulator))
    assert texts == Counter(f"load-{n:05d}" for n in range(total))
    assert handle.simulator.stats()["totals"]["stalled"] > 0
    assert not logged_failures, failure_texts(logged_failures)


# -- graceful stop -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_graceful_stop_drains_a_full_window_then_unbinds(
    smsc_sim_factory: StartSim, esmes: Callable[..., Esme], logged_failures: list[LogEvent]
) -> None:
    """stopService with 64 submit_sm outstanding (responses delayed 0.3 s): every one
    completes with success before the stop completes, and the link ends with an unbind
    the SMSC answered (its session is CLOSED), not an abort."""
    handle = await smsc_sim_factory(faults=Faults(response_delay=0.3))
    sim = handle.simulator
    esme = esmes(esme_config(handle, response_timeout=2.0))
    await esme.when_bound()
    outcomes = Outcomes()
    send_numbered(esme, outcomes, range(64), "drain")
    await until(lambda: esme.stats["in_flight"] == 64, 2.0, "a full window")
    (conn,) = sim.connections
    assert outcomes.count() == 0
    stopped_at: list[float] = []
    stopping = esme.stopService()
    stopping.addCallback(lambda _: stopped_at.append(time.monotonic()))
    await until(lambda: bool(stopped_at), 3.0, "the stop")
    assert_each_once(outcomes, 64)
    assert max(outcomes.times) <= stopped_at[0]
    assert conn.session.state is State.CLOSED  # unbind received and answered
    await until(lambda: not sim.connections, 1.0, "the connection to close")
    stats = esme.stats
    assert stats["core_aborted"] == 0 and stats["core_timeouts"] == 0
    assert stats["connections_lost"] == 1 and stats["binds"] == 1
    assert not logged_failures, failure_texts(logged_failures)
