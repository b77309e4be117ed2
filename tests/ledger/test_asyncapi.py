"""ledger.asyncapi: the Deferred face of the ledger (issue 3, "a non-blocking API for the
Twisted gateway"), on both backends with the real reactor (pytest-twisted).

Pinned: every synchronous method has an asynchronous twin with the same parameters; calls run
off the reactor thread and fire on it; writes ride the ledger's committer (no pool thread);
refusals arrive as failures of the very LedgerError types with their rule and figures;
concurrent calls all land; the owned pool starts and stops with the reactor, and a stopped
wrapper fails calls instead of leaving them unanswered.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.python.threadpool import ThreadPool

from ledger.asyncapi import AsyncLedger
from ledger.commit import Job
from ledger.errors import InvalidAmount, LedgerError, Refused, UnknownLoad, UnknownSubscriber
from ledger.limits import Limits
from ledger.service import Ledger

MSISDN = "8613800138000"
#: Ledger methods that are plumbing for event loops, not ledger operations
_PLUMBING = {"close", "submit", "submit_callback", "add_batch_listener", "remove_batch_listener"}
ICCID = "89860012345678901234"
MERCHANT = "M-0001"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _failure_of(d: defer.Deferred[Any]) -> BaseException:
    """The exception a Deferred fails with (the test fails if it succeeds)."""
    try:
        result = await d
    except Exception as exc:
        return exc
    pytest.fail(f"expected a failure, got {result!r}")


def test_every_ledger_method_has_an_async_twin_with_the_same_parameters() -> None:
    """API drift guard: each public Ledger method (but connect/close) exists on AsyncLedger
    with identical parameter names, kinds and defaults."""
    names = [
        n
        for n, f in inspect.getmembers(Ledger, inspect.isfunction)
        if not n.startswith("_") and n not in _PLUMBING
    ]
    assert "reserve_load" in names and "verify" in names
    for name in names:
        assert hasattr(AsyncLedger, name), f"AsyncLedger lacks {name}"
        sync = inspect.signature(getattr(Ledger, name)).parameters
        wrapped = inspect.signature(getattr(AsyncLedger, name)).parameters
        assert [(p.name, p.kind, p.default) for p in sync.values()] == [
            (p.name, p.kind, p.default) for p in wrapped.values()
        ], name


@pytest_twisted.ensureDeferred
async def test_full_lifecycle_through_deferreds(ledger: Ledger, ledger_clock: Any) -> None:
    """Open, deposit, enable, two-phase load, purchase, queries, swap, close and verify all
    work through the async API and give the synchronous API's results."""
    alg = AsyncLedger(ledger, _reactor())
    try:
        view = await alg.open_wallet(MSISDN, "110101199003070000", request_id="open-1")
        assert view.msisdn == MSISDN
        transfer = await alg.deposit(
            MSISDN, 80_000, "hall", request_id="dep-1", teller="T1", hall="H1"
        )
        assert (transfer.code, transfer.amount) == ("deposit", 80_000)
        await alg.enable_card(MSISDN, ICCID, request_id="enable-1")
        await alg.open_merchant(MERCHANT, "Canteen")

        load = await alg.reserve_load(
            MSISDN, ICCID, 30_000, card_balance=0, online_counter=1, key="mo:1"
        )
        assert load.state == "reserved"
        assert [p.id for p in await alg.pending_loads(ICCID)] == [load.id]
        assert (await alg.post_load(load.id)).state == "posted"

        second = await alg.reserve_load(
            MSISDN, ICCID, 10_000, card_balance=30_000, online_counter=2, key="mo:2"
        )
        assert (await alg.mark_in_doubt(second.id)).state == "in_doubt"
        assert (await alg.void_load(second.id)).state == "voided"

        sale = await alg.purchase(ICCID, MERCHANT, 1_250, offline_counter=7, terminal_id="P1")
        assert (sale.code, sale.amount) == ("purchase", 1_250)

        wallet = await alg.wallet(MSISDN)
        assert (wallet.cash, wallet.card_balance, wallet.in_flight) == (50_000, 28_750, 0)
        assert wallet == ledger.wallet(MSISDN)
        history = await alg.history(MSISDN, 3)
        assert len(history) == 3
        assert history[0].code == "purchase"
        today = Limits().local_day(ledger_clock.now)
        sales = await alg.merchant_day(MERCHANT, today)
        assert [e.transfer_id for e in sales] == [sale.id]
        report = await alg.hall_report("H1", today)
        assert (report.hall, report.day, report.deposits) == ("H1", today, 80_000)

        swapped = await alg.swap_card(
            MSISDN, ICCID[:-1] + "9", old_balance=28_750, request_id="swap-1"
        )
        assert swapped.card_iccid == ICCID[:-1] + "9"
        closed = await alg.close_wallet(
            MSISDN, request_id="close-1", teller="T1", hall="H1", card_balance=28_750
        )
        assert (closed.cash_refunded, closed.purse_refunded) == (50_000, 28_750)
        verdict = await alg.verify()
        assert verdict.ok, verdict.problems
        assert verdict.total == 0
    finally:
        alg.stop()


@pytest_twisted.ensureDeferred
async def test_refusals_arrive_as_the_same_error_types(ledger: Ledger) -> None:
    """A refused rule fails the Deferred with Refused (rule and figures intact); unknown
    subscribers and loads fail with their own LedgerError subclasses; nothing is posted."""
    alg = AsyncLedger(ledger, _reactor())
    try:
        await alg.open_wallet(MSISDN, "110101199003070000")
        await alg.deposit(MSISDN, 90_000, "bank", request_id="dep-1")
        await alg.enable_card(MSISDN, ICCID)
        before = ledger.verify().transfers

        err = await _failure_of(
            alg.reserve_load(MSISDN, ICCID, 60_000, card_balance=0, online_counter=1, key="k1")
        )
        assert isinstance(err, Refused)
        assert err.rule == "single_topup_limit"
        assert err.figures == {"amount": 60_000, "limit": 50_000}
        assert "600.00" in str(err) and "500.00" in str(err)

        err = await _failure_of(alg.deposit(MSISDN, 0, "bank", request_id="zero"))
        assert isinstance(err, InvalidAmount)
        err = await _failure_of(alg.wallet("8613999999999"))
        assert isinstance(err, UnknownSubscriber)
        err = await _failure_of(alg.post_load("no-such-load"))
        assert isinstance(err, UnknownLoad)
        assert isinstance(err, LedgerError)
        assert ledger.verify().transfers == before
    finally:
        alg.stop()


@pytest_twisted.ensureDeferred
async def test_calls_run_in_pool_threads_and_fire_on_the_reactor_thread() -> None:
    """The blocking call runs in a pool thread (never the reactor's), the Deferred has not
    fired when the call returns, and its callback runs on the reactor thread."""
    reactor_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    gate = threading.Event()

    class Probe:
        def wallet(self, msisdn: str) -> str:
            gate.wait(5)
            seen.append(threading.current_thread())
            return msisdn

    alg = AsyncLedger(cast(Ledger, Probe()), _reactor(), maxthreads=2)
    try:
        d = alg.wallet("861")
        assert not d.called
        fired_on: list[threading.Thread] = []
        d.addCallback(lambda v: fired_on.append(threading.current_thread()) or v)
        gate.set()
        assert await d == "861"
        assert seen and seen[0] is not reactor_thread
        assert fired_on == [reactor_thread]
    finally:
        alg.stop()


@pytest_twisted.ensureDeferred
async def test_many_concurrent_calls_all_land(ledger: Ledger) -> None:
    """Forty deposits issued at once (group commit batches them) each post exactly once."""
    alg = AsyncLedger(ledger, _reactor(), maxthreads=8)
    try:
        await alg.open_wallet(MSISDN, "110101199003070000")
        results = await defer.gatherResults(
            [alg.deposit(MSISDN, 100 + i, "bank", request_id=f"d{i}") for i in range(40)],
            consumeErrors=True,
        )
        assert len({t.id for t in results}) == 40
        assert (await alg.wallet(MSISDN)).cash == sum(100 + i for i in range(40))
        # replays of the same keys, concurrently: same answers, nothing new posted
        again = await defer.gatherResults(
            [alg.deposit(MSISDN, 100 + i, "bank", request_id=f"d{i}") for i in range(40)],
            consumeErrors=True,
        )
        assert [t.id for t in again] == [t.id for t in results]
        assert (await alg.wallet(MSISDN)).cash == sum(100 + i for i in range(40))
    finally:
        alg.stop()


@pytest_twisted.ensureDeferred
async def test_writes_go_through_the_committer_not_the_thread_pool(ledger: Ledger) -> None:
    """With the only pool thread blocked, fifty concurrent writes still commit (they ride
    Ledger.submit, batched by the committer), and a read waits for the pool to free up."""
    pool = ThreadPool(1, 1, "one-thread")
    pool.start()
    gate = threading.Event()
    pool.callInThread(gate.wait, 10)
    alg = AsyncLedger(ledger, _reactor(), threadpool=pool)
    try:
        await alg.open_wallet(MSISDN, "110101199003070000")
        done = await defer.gatherResults(
            [alg.deposit(MSISDN, 1, "bank", request_id=f"w{i}") for i in range(50)],
            consumeErrors=True,
        )
        assert len({t.id for t in done}) == 50
        read = alg.wallet(MSISDN)
        assert not read.called
        gate.set()
        assert (await read).cash == 50
    finally:
        gate.set()
        alg.stop()
        pool.stop()


class _CountingReactor:
    """The real reactor, counting callFromThread."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.from_thread = 0

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.from_thread += 1
        self._reactor.callFromThread(f, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@pytest_twisted.ensureDeferred
async def test_a_batch_of_answers_wakes_the_reactor_once(ledger: Ledger) -> None:
    """Sixty-one writes committed in one batch reach the reactor through one callFromThread
    (the ledger's batch listener wakes it once the whole batch is answered), and every
    Deferred fires with its own answer or refusal."""
    counting = _CountingReactor(_reactor())
    alg = AsyncLedger(ledger, counting)
    try:
        await alg.open_wallet(MSISDN, "110101199003070000")
        gate, held = threading.Event(), threading.Event()

        def hold(tx: Any) -> Callable[[], None]:
            held.set()
            gate.wait(10)
            return lambda: None

        ledger._committer.submit(Job(hold))  # type: ignore[union-attr]  # hold the committer
        assert held.wait(10)
        counting.from_thread = 0
        calls = [alg.deposit(MSISDN, 100 + i, "bank", request_id=f"b{i}") for i in range(60)]
        calls.append(alg.deposit(MSISDN, 0, "bank", request_id="bad"))
        gate.set()
        results = await defer.DeferredList(calls, consumeErrors=True)
        assert counting.from_thread == 1
        assert [r.amount for ok, r in results[:60]] == [100 + i for i in range(60)]
        assert all(ok for ok, _r in results[:60])
        ok, failure = results[60]
        assert not ok
        assert isinstance(failure.value, InvalidAmount)
    finally:
        gate.set()
        alg.stop()


@pytest_twisted.ensureDeferred
async def test_a_ledger_with_only_futures_is_used_through_them() -> None:
    """A ledger offering submit() (futures) but not submit_callback() has its writes go
    through the futures, results and refusals alike, without the thread pool."""
    seen: list[str] = []

    class FutureLedger:
        def deposit(self, msisdn: str, amount: int, source: str, **kwargs: Any) -> None:
            raise AssertionError("called directly")

        def submit(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            from concurrent.futures import Future

            seen.append(threading.current_thread().name)
            future: Future[Any] = Future()
            if args[1] > 0:
                future.set_result(("posted", args[1]))
            else:
                future.set_exception(InvalidAmount("invalid amount"))
            return future

    alg = AsyncLedger(cast(Ledger, FutureLedger()), _reactor(), maxthreads=1)
    try:
        assert await alg.deposit(MSISDN, 5, "bank", request_id="f1") == ("posted", 5)
        err = await _failure_of(alg.deposit(MSISDN, 0, "bank", request_id="f2"))
        assert isinstance(err, InvalidAmount)
        assert seen == [threading.current_thread().name] * 2
    finally:
        alg.stop()


@pytest_twisted.ensureDeferred
async def test_stopped_wrapper_fails_calls_and_stop_is_idempotent(ledger: Ledger) -> None:
    """After stop() the owned pool is stopped and reads and writes fail at once with
    RuntimeError (a stopped ThreadPool would silently drop them); stop() again is harmless."""

    class Probe:
        def verify(self) -> str:
            return "ok"

    alg = AsyncLedger(cast(Ledger, Probe()), _reactor())
    assert alg.threadpool.started  # the reactor runs: started at once
    assert await alg.verify() == "ok"
    alg.stop()
    assert not alg.threadpool.started
    alg.stop()
    err = await _failure_of(alg.verify())
    assert isinstance(err, RuntimeError)

    real = AsyncLedger(ledger, _reactor())
    real.stop()
    err = await _failure_of(real.deposit(MSISDN, 1, "bank", request_id="late"))
    assert isinstance(err, RuntimeError)


@pytest_twisted.ensureDeferred
async def test_a_given_threadpool_is_the_callers_to_stop() -> None:
    """With a threadpool passed in, calls run there and stop() leaves that pool running."""
    pool = ThreadPool(1, 2, "test-pool")
    pool.start()
    names: list[str] = []

    class Probe:
        def verify(self) -> str:
            names.append(threading.current_thread().name)
            return "ok"

    try:
        alg = AsyncLedger(cast(Ledger, Probe()), _reactor(), threadpool=pool)
        assert alg.threadpool is pool
        assert await alg.verify() == "ok"
        assert names and "test-pool" in names[0]
        alg.stop()
        assert pool.started
    finally:
        pool.stop()


class _FakeReactor:
    """Records startup/shutdown triggers, so the lifecycle can be driven by hand."""

    def __init__(self) -> None:
        self.startup: list[Callable[[], object]] = []
        self.triggers: dict[int, tuple[str, str, Callable[[], object]]] = {}
        self.removed: list[int] = []

    def callWhenRunning(self, f: Callable[[], object]) -> int:
        self.startup.append(f)
        return self.addSystemEventTrigger("after", "startup", f)

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], object]) -> int:
        tid = len(self.triggers) + 1
        self.triggers[tid] = (phase, event, f)
        return tid

    def removeSystemEventTrigger(self, tid: int) -> None:
        if tid not in self.triggers:
            raise ValueError(tid)
        del self.triggers[tid]
        self.removed.append(tid)

    def fire(self, phase: str, event: str) -> None:
        for ph, ev, f in list(self.triggers.values()):
            if (ph, ev) == (phase, event):
                f()


def test_owned_pool_starts_and_stops_with_the_reactor() -> None:
    """Built before the reactor runs, the owned pool starts on the reactor's startup and is
    stopped during its shutdown."""
    fake = _FakeReactor()
    alg = AsyncLedger(cast(Ledger, object()), fake)
    assert not alg.threadpool.started
    fake.fire("after", "startup")
    assert alg.threadpool.started
    fake.fire("during", "shutdown")
    assert not alg.threadpool.started


def test_stop_before_the_reactor_runs_removes_the_triggers() -> None:
    """stop() before startup unregisters both triggers: the reactor will neither start nor
    stop a pool the application already gave up."""
    fake = _FakeReactor()
    alg = AsyncLedger(cast(Ledger, object()), fake)
    alg.stop()
    assert fake.triggers == {}
    assert len(fake.removed) == 2
    assert not alg.threadpool.started


def test_maxthreads_must_be_positive() -> None:
    """A pool of zero threads would never run anything: refused at construction."""
    with pytest.raises(ValueError, match="maxthreads"):
        AsyncLedger(cast(Ledger, object()), _FakeReactor(), maxthreads=0)
