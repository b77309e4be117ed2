"""The ledger for the Twisted gateway: every :class:`~ledger.service.Ledger` call as a Deferred.

Issue 3 ("a non-blocking API for the Twisted gateway: Deferreds; blocking database work off
the reactor thread"). :class:`AsyncLedger` never blocks the reactor thread:

* **Writes** (open, enable, deposit, swap, close, the load phases, merchants, purchases) go
  through :meth:`Ledger.submit_callback`, which hands the request to the ledger's group
  committer; the Deferred fires (on the reactor thread) once the write is committed or
  refused. So any number of concurrent gateway requests can share one database transaction
  without a thread each. The answers of a batch reach the reactor together: finished writes
  are queued and the reactor is woken once for all of them (one ``callFromThread`` per
  batch, not per request). A ledger with only :meth:`Ledger.submit` (futures) is used
  through it; one with neither (a stand-in) has its writes run in the thread pool like reads.
* **Reads** (wallet, history, pending loads, reports, verify) run in a Twisted
  :class:`~twisted.python.threadpool.ThreadPool` through
  :func:`twisted.internet.threads.deferToThreadPool`.

Errors are not translated: a refused request fails its Deferred with the very
:class:`~ledger.errors.LedgerError` subclass (``Refused``, ``UnknownSubscriber``, ...) that the
synchronous call raises, with the same ``rule`` and ``figures``; a database failure with
:class:`~ledger.errors.StorageError`.

Lifecycle: with no ``threadpool`` given, the wrapper owns one, started when the reactor runs
and stopped (its threads joined, calls in progress completed) during reactor shutdown, the
way Twisted manages its own reactor pool; :meth:`AsyncLedger.stop` stops it earlier. A
``threadpool`` passed in is the caller's to start and stop. The wrapped ``Ledger`` is never
closed here: whoever connected it closes it, after stopping the wrapper.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from datetime import date, datetime
from functools import partial
from typing import Any, ParamSpec, TypeVar

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from ledger.service import Ledger
from ledger.views import (
    CloseView,
    EntryView,
    HallReport,
    LoadView,
    TransferView,
    VerifyReport,
    WalletView,
)

__all__ = ["DEFAULT_THREADS", "AsyncLedger"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Threads of an owned pool: reads only (writes ride the committer); each thread may hold
#: one pooled database connection while it reads.
DEFAULT_THREADS = 8


class AsyncLedger:
    """Each :class:`Ledger` method returning a Deferred: writes through ``Ledger.submit``,
    reads in a thread pool (``maxthreads`` threads when the wrapper owns it).

    ``reactor`` must provide ``callFromThread``, ``callWhenRunning`` and system event
    triggers (any real reactor does). Deferreds fire on the reactor thread.
    """

    def __init__(
        self,
        ledger: Ledger,
        reactor: Any,
        *,
        threadpool: ThreadPool | None = None,
        maxthreads: int = DEFAULT_THREADS,
    ) -> None:
        if maxthreads <= 0:
            raise ValueError(f"maxthreads must be positive, got {maxthreads}")
        self._ledger = ledger
        self._reactor = reactor
        self._stopped = False
        #: finished writes waiting for the reactor thread: (deferred, result, error)
        self._ready: deque[tuple[defer.Deferred[Any], Any, BaseException | None]] = deque()
        self._wake_pending = False
        #: how writes reach the committer (None: a stand-in ledger; writes use the pool)
        self._submit_callback: Callable[..., None] | None = getattr(ledger, "submit_callback", None)
        self._submit: Callable[..., Future[Any]] | None = getattr(ledger, "submit", None)
        #: with a ledger that signals the end of each batch, outcomes wait for it: one
        #: wake-up of the reactor per batch instead of one per outcome
        self._per_batch = False
        add_listener = getattr(ledger, "add_batch_listener", None)
        if self._submit_callback is not None and add_listener is not None:
            add_listener(self._wake)
            self._per_batch = True
        self._startup_id: object | None = None
        self._shutdown_id: object | None = None
        if threadpool is None:
            self._pool = ThreadPool(0, maxthreads, "stkpay-ledger")
            self._owns_pool = True
            # callWhenRunning starts the pool at once (returning None) when the reactor
            # already runs, else registers a startup trigger and returns its id.
            self._startup_id = reactor.callWhenRunning(self._pool.start)
            self._shutdown_id = reactor.addSystemEventTrigger("during", "shutdown", self._stop)
        else:
            self._pool = threadpool
            self._owns_pool = False

    @property
    def ledger(self) -> Ledger:
        """The wrapped synchronous ledger."""
        return self._ledger

    @property
    def threadpool(self) -> ThreadPool:
        """The pool the calls run in."""
        return self._pool

    def stop(self) -> None:
        """Stop taking calls; stop an owned pool (waits for calls in progress). Idempotent."""
        if self._stopped:
            return
        for trigger in (self._startup_id, self._shutdown_id):
            if trigger is not None:
                with contextlib.suppress(ValueError, KeyError):  # already fired or removed
                    self._reactor.removeSystemEventTrigger(trigger)
        self._startup_id = self._shutdown_id = None
        self._stop()
        if self._per_batch:
            remove_listener = getattr(self._ledger, "remove_batch_listener", None)
            if remove_listener is not None:
                remove_listener(self._wake)
            self._per_batch = False
            self._wake()  # outcomes of writes still running wake the reactor themselves

    def _stop(self) -> None:
        self._stopped = True
        if self._owns_pool and self._pool.started:
            self._pool.stop()

    def _run(self, f: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> defer.Deferred[_R]:
        if self._stopped:
            # A stopped ThreadPool silently drops work: fail loudly instead of never firing.
            return defer.fail(RuntimeError("AsyncLedger is stopped"))
        return threads.deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)

    def _write(
        self, method: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs
    ) -> defer.Deferred[_R]:
        """Hand a write to the ledger's committer; fire on the reactor thread when done."""
        submit_callback, submit = self._submit_callback, self._submit
        if submit_callback is None and submit is None:
            return self._run(method, *args, **kwargs)
        if self._stopped:
            return defer.fail(RuntimeError("AsyncLedger is stopped"))
        d: defer.Deferred[_R] = defer.Deferred()
        try:
            if submit_callback is not None:
                submit_callback(partial(self._finished, d), method, *args, **kwargs)
            elif submit is not None:
                future: Future[_R] = submit(method, *args, **kwargs)
                future.add_done_callback(partial(self._future_finished, d))
        except Exception:
            return defer.fail()
        return d

    def _finished(self, d: defer.Deferred[Any], result: Any, error: BaseException | None) -> None:
        """In the committer thread: queue the outcome; the batch listener (:meth:`_wake`)
        wakes the reactor once the batch is done, or this call does without one."""
        self._ready.append((d, result, error))
        if not self._per_batch:
            self._wake()

    def _wake(self) -> None:
        """Have the reactor deliver the queued outcomes, unless a delivery is already
        pending or running (it drains what is queued meanwhile too)."""
        if self._ready and not self._wake_pending:
            self._wake_pending = True
            self._reactor.callFromThread(self._deliver)

    def _future_finished(self, d: defer.Deferred[Any], future: Future[Any]) -> None:
        try:
            result = future.result()
        except (Exception, CancelledError) as exc:
            self._finished(d, None, exc)
        else:
            self._finished(d, result, None)

    def _deliver(self) -> None:
        """On the reactor thread: fire the Deferreds of every write finished so far, and of
        those finishing meanwhile. The flag is cleared only once the queue looked empty, and
        the queue is looked at again after: an outcome queued in between is either seen here
        or has scheduled another delivery."""
        ready = self._ready
        while True:
            while ready:
                d, result, error = ready.popleft()
                if error is None:
                    d.callback(result)
                else:
                    d.errback(error)
            self._wake_pending = False
            if not ready:
                return
            self._wake_pending = True

    # -- wallets and cards ------------------------------------------------------------------

    def open_wallet(
        self, msisdn: str, id_number: str, *, request_id: str | None = None
    ) -> defer.Deferred[WalletView]:
        """:meth:`Ledger.open_wallet` through the committer."""
        return self._write(self._ledger.open_wallet, msisdn, id_number, request_id=request_id)

    def enable_card(
        self, msisdn: str, iccid: str, *, request_id: str | None = None
    ) -> defer.Deferred[WalletView]:
        """:meth:`Ledger.enable_card` through the committer."""
        return self._write(self._ledger.enable_card, msisdn, iccid, request_id=request_id)

    def deposit(
        self,
        msisdn: str,
        amount: int,
        source: str,
        *,
        request_id: str,
        teller: str | None = None,
        hall: str | None = None,
    ) -> defer.Deferred[TransferView]:
        """:meth:`Ledger.deposit` through the committer."""
        return self._write(
            self._ledger.deposit,
            msisdn,
            amount,
            source,
            request_id=request_id,
            teller=teller,
            hall=hall,
        )

    def swap_card(
        self,
        msisdn: str,
        new_iccid: str,
        *,
        old_balance: int | None,
        request_id: str,
        teller: str | None = None,
        hall: str | None = None,
    ) -> defer.Deferred[WalletView]:
        """:meth:`Ledger.swap_card` through the committer."""
        return self._write(
            self._ledger.swap_card,
            msisdn,
            new_iccid,
            old_balance=old_balance,
            request_id=request_id,
            teller=teller,
            hall=hall,
        )

    def close_wallet(
        self,
        msisdn: str,
        *,
        request_id: str,
        teller: str | None = None,
        hall: str | None = None,
        card_balance: int | None = None,
    ) -> defer.Deferred[CloseView]:
        """:meth:`Ledger.close_wallet` through the committer."""
        return self._write(
            self._ledger.close_wallet,
            msisdn,
            request_id=request_id,
            teller=teller,
            hall=hall,
            card_balance=card_balance,
        )

    # -- two-phase top-up -------------------------------------------------------------------

    def reserve_load(
        self,
        msisdn: str,
        iccid: str,
        amount: int,
        *,
        card_balance: int,
        online_counter: int,
        key: str,
        channel: str = "stk",
        credit: str | None = None,
    ) -> defer.Deferred[LoadView]:
        """:meth:`Ledger.reserve_load` through the committer."""
        return self._write(
            self._ledger.reserve_load,
            msisdn,
            iccid,
            amount,
            card_balance=card_balance,
            online_counter=online_counter,
            key=key,
            channel=channel,
            credit=credit,
        )

    def post_load(self, load_id: str) -> defer.Deferred[LoadView]:
        """:meth:`Ledger.post_load` through the committer."""
        return self._write(self._ledger.post_load, load_id)

    def void_load(self, load_id: str) -> defer.Deferred[LoadView]:
        """:meth:`Ledger.void_load` through the committer."""
        return self._write(self._ledger.void_load, load_id)

    def mark_in_doubt(self, load_id: str) -> defer.Deferred[LoadView]:
        """:meth:`Ledger.mark_in_doubt` through the committer."""
        return self._write(self._ledger.mark_in_doubt, load_id)

    def pending_loads(self, iccid: str | None = None) -> defer.Deferred[list[LoadView]]:
        """:meth:`Ledger.pending_loads` off the reactor thread."""
        return self._run(self._ledger.pending_loads, iccid)

    # -- purchases and merchants ------------------------------------------------------------

    def open_merchant(
        self, merchant_id: str, name: str, *, currency: str = "CNY"
    ) -> defer.Deferred[None]:
        """:meth:`Ledger.open_merchant` through the committer."""
        return self._write(self._ledger.open_merchant, merchant_id, name, currency=currency)

    def purchase(
        self,
        iccid: str,
        merchant_id: str,
        amount: int,
        *,
        offline_counter: int,
        terminal_id: str = "",
        at: datetime | None = None,
    ) -> defer.Deferred[TransferView]:
        """:meth:`Ledger.purchase` through the committer."""
        return self._write(
            self._ledger.purchase,
            iccid,
            merchant_id,
            amount,
            offline_counter=offline_counter,
            terminal_id=terminal_id,
            at=at,
        )

    # -- queries ----------------------------------------------------------------------------

    def wallet(self, msisdn: str) -> defer.Deferred[WalletView]:
        """:meth:`Ledger.wallet` off the reactor thread."""
        return self._run(self._ledger.wallet, msisdn)

    def history(self, msisdn: str, last: int = 10) -> defer.Deferred[list[EntryView]]:
        """:meth:`Ledger.history` off the reactor thread."""
        return self._run(self._ledger.history, msisdn, last)

    def merchant_day(self, merchant_id: str, day: date) -> defer.Deferred[list[EntryView]]:
        """:meth:`Ledger.merchant_day` off the reactor thread."""
        return self._run(self._ledger.merchant_day, merchant_id, day)

    def hall_report(self, hall: str, day: date) -> defer.Deferred[HallReport]:
        """:meth:`Ledger.hall_report` off the reactor thread."""
        return self._run(self._ledger.hall_report, hall, day)

    def verify(self) -> defer.Deferred[VerifyReport]:
        """:meth:`Ledger.verify` off the reactor thread."""
        return self._run(self._ledger.verify)
