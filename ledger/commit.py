"""Running requests in database transactions: one per request, or many per commit.

:class:`Runner` applies a batch of jobs in one write transaction: each job runs inside an
in-memory savepoint (:meth:`~ledger.tx.Tx.mark`), so it is individually accepted or refused; the
batch is flushed and committed once; only then is any caller answered, so an answer is always
durable. A transaction that fails for a transient reason (a unique-key race with another
process, a deadlock, a serialization failure, a busy database) is rolled back and the whole
batch re-run; after a few attempts the batch is split and each job runs alone, so one poisoned
request cannot keep failing its neighbours.

:class:`GroupCommitter` is the group commit: a thread that takes every job queued while the
previous batch was committing (up to ``max_batch``, optionally lingering ``linger`` seconds for
more while fewer requests came than last time) and runs them as one batch. Under load the
batch grows by itself and the commit cost (an fsync, a round trip) is shared; a lone caller is
never delayed. A finished job resolves its future, calls its callback or wakes its blocked
caller; after each batch the :class:`Listeners` run, so that an event loop fed by callbacks
is woken once per batch.
"""

from __future__ import annotations

import _thread
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import psycopg
import psycopg.errors as pge

from ledger.db import Conn, Database
from ledger.errors import LedgerError, StorageError
from ledger.limits import Limits
from ledger.tx import AccountMeta, Tx

MAX_ATTEMPTS: Final = 4

Op = Callable[..., Callable[[], Any]]


class Hints(NamedTuple):
    """What a job will read, so that a batch reads (and locks) it up front in few
    statements. Only an optimization: a wrong or missing hint costs one more read."""

    keys: tuple[str, ...] = ()
    request_keys: tuple[str, ...] = ()
    msisdns: tuple[str, ...] = ()
    iccids: tuple[str, ...] = ()
    load_ids: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()  # other accounts it moves money on (e.g. "bank")
    #: the hints name every row the job locks: a batch of such jobs locks its accounts in
    #: the prefetch too (and, on PostgreSQL, draws its transfer ids there), saving a round
    #: trip; a batch with any other job locks accounts after running them, as they may lock
    #: holders (wallets, cards) on their own and accounts are always locked last
    complete: bool = False


NO_HINTS: Final = Hints()


#: called in the committer thread once a job is finished: (result, None) or (None, error)
Callback = Callable[[Any, BaseException | None], object]


@dataclass(eq=False, slots=True)
class Job:
    """One request waiting for its batch: ``op(tx, *args)`` judges it and returns a thunk
    giving its result after the flush. It finishes once its batch is committed (or failed):
    ``future`` resolves, ``callback`` is called, a :meth:`blocking` caller wakes up."""

    op: Op
    hints: Hints = NO_HINTS
    args: tuple[Any, ...] = ()
    future: Future[Any] | None = None
    callback: Callback | None = None
    thunk: Callable[[], Any] | None = None
    result: Any = None
    error: BaseException | None = None
    _waiter: Any = None
    _finished: bool = False

    def blocking(self) -> Job:
        """Make :meth:`wait` available (a plain lock: cheaper than a Future)."""
        self._waiter = _thread.allocate_lock()
        self._waiter.acquire()
        return self

    def with_future(self) -> Future[Any]:
        """Give the job a future that resolves when it finishes."""
        self.future = Future()
        return self.future

    def finish(self) -> None:
        """Publish the outcome: resolve the future, call the callback, wake the waiter
        (once). A callback that raises does not keep the others from their outcome."""
        if self._finished:
            return
        self._finished = True
        if self.callback is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs ~0.5 us a job here
                self.callback(self.result, self.error)
            except Exception:  # noqa: S110 - a caller's callback failing is the caller's
                pass
        if self.future is not None:
            if self.error is not None:
                self.future.set_exception(self.error)
            else:
                self.future.set_result(self.result)
        if self._waiter is not None:
            self._waiter.release()

    def wait(self) -> Any:
        """Block until finished (after :meth:`blocking`); the result, or raise the error."""
        self._waiter.acquire()
        return self.outcome()

    def outcome(self) -> Any:
        """The result, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.result


_DB_ERRORS: Final = (sqlite3.Error, psycopg.Error)


def _transient(exc: BaseException) -> bool:
    """Whether re-running the transaction may succeed."""
    if isinstance(exc, StorageError):
        return True  # consistency checks in the flush: another process raced us
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    return isinstance(
        exc,
        pge.IntegrityError | pge.DeadlockDetected | pge.SerializationFailure | pge.LockNotAvailable,
    )


def _broken(conn: Conn, exc: BaseException) -> bool:
    if conn.dialect == "postgresql":
        return isinstance(exc, psycopg.OperationalError) or bool(conn.raw.closed)
    return False


def _gather(jobs: list[Job]) -> Hints:
    """The hints of a batch: every job's, concatenated; complete if every job's is."""
    keys: list[str] = []
    request_keys: list[str] = []
    msisdns: list[str] = []
    iccids: list[str] = []
    load_ids: list[str] = []
    accounts: list[str] = []
    complete = True
    for job in jobs:
        hints = job.hints
        if hints is not NO_HINTS:
            keys += hints.keys
            request_keys += hints.request_keys
            msisdns += hints.msisdns
            iccids += hints.iccids
            load_ids += hints.load_ids
            accounts += hints.accounts
        complete = complete and hints.complete
    return Hints._make(
        (
            tuple(keys),
            tuple(request_keys),
            tuple(msisdns),
            tuple(iccids),
            tuple(load_ids),
            tuple(accounts),
            complete,
        )
    )


class Runner:
    """Applies batches of jobs in write transactions."""

    def __init__(
        self,
        db: Database,
        limits: Limits,
        clock: Callable[[], datetime],
        meta: dict[str, AccountMeta],
    ) -> None:
        self._db = db
        self._limits = limits
        self._clock = clock
        self._meta = meta

    def now(self) -> datetime:
        """The injected clock's time, as an aware UTC datetime."""
        now = self._clock()
        if now.tzinfo is None:
            raise StorageError("the ledger clock returned a naive datetime")
        return now.astimezone(UTC)

    def run(self, conn: Conn, jobs: list[Job]) -> None:
        """Apply ``jobs`` in one transaction (retrying, then splitting, on transient errors);
        sets every job's result or error. Does not signal ``done``."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                self._attempt(conn, jobs)
                return
            except Exception as exc:
                conn.rollback()
                if _broken(conn, exc):
                    conn.broken = True
                    self.fail(jobs, exc)
                    return
                if not _transient(exc):
                    self.fail(jobs, exc)
                    return
                if attempt < MAX_ATTEMPTS:
                    time.sleep(0.001 * attempt * attempt)
                    continue
                if len(jobs) > 1:
                    for job in jobs:
                        self.run(conn, [job])
                    return
                self.fail(jobs, exc)
                return

    @staticmethod
    def fail(jobs: list[Job], exc: BaseException) -> None:
        """Give every job of a batch that did not commit the error ``exc`` (as StorageError)."""
        if isinstance(exc, StorageError):
            message = str(exc)
        else:
            text = str(exc).strip().splitlines()
            message = f"ledger transaction failed: {type(exc).__name__}: {text[0] if text else ''}"
        for job in jobs:
            job.thunk = None
            job.result = None
            job.error = StorageError(message)
            job.error.__cause__ = exc

    def _attempt(self, conn: Conn, jobs: list[Job]) -> None:
        mutex = self._db.write_mutex if conn.dialect == "sqlite" else None
        if mutex is not None:
            mutex.acquire()
        tx: Tx | None = None
        try:
            conn.begin_write()
            # one clock reading per transaction: every request in it happens "now"
            tx = Tx(conn, self._limits, self._meta, self.now())
            if len(jobs) == 1:  # a lone job's hints are the batch's
                keys, request_keys, msisdns, iccids, load_ids, accounts, complete = jobs[0].hints
            else:
                keys, request_keys, msisdns, iccids, load_ids, accounts, complete = _gather(jobs)
            tx.prefetch(
                keys=keys,
                request_keys=request_keys,
                msisdns=msisdns,
                iccids=iccids,
                load_ids=load_ids,
                accounts=accounts if complete else (),
                ids=len(jobs) if complete else 0,  # most requests post one transfer
            )
            for job in jobs:
                mark = tx.mark()  # an in-memory savepoint
                job.thunk, job.result, job.error = None, None, None
                try:
                    job.thunk = job.op(tx, *job.args)
                except LedgerError as exc:
                    tx.undo_to(mark)
                    # a refusal is raised again to its caller: its traceback here would only
                    # tie this frame, the batch and its Tx into a cycle for the GC to break
                    job.error = exc.with_traceback(None)
                except _DB_ERRORS:
                    raise
                except StorageError:
                    raise
                except Exception as exc:  # a bug in one request must not sink the batch
                    tx.undo_to(mark)
                    job.error = exc
                else:
                    tx.release(mark)
            tx.prepare()
            for job in jobs:
                if job.thunk is not None:
                    job.result = job.thunk()
            if conn.dialect == "sqlite":  # no pipeline to open (nor its context manager)
                tx.write()
                conn.commit()
            else:
                with conn.pipeline():  # PostgreSQL: all writes and the COMMIT in one round trip
                    tx.write()
                    conn.commit()
            tx.committed()
        finally:
            if tx is not None:
                tx.release(0)  # the undo log refers back to the Tx: no cycle left for the GC
            if mutex is not None:
                mutex.release()


class Listeners:
    """Functions called (in the thread that finished them) after each batch of jobs is
    finished: an event loop queues the outcomes its callbacks received and wakes once per
    batch, not once per job. Registration is thread-safe; a listener that raises is ignored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: tuple[Callable[[], object], ...] = ()

    def add(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` after every batch from now on."""
        with self._lock:
            self._all = (*self._all, listener)

    def remove(self, listener: Callable[[], object]) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        with self._lock:
            self._all = tuple(f for f in self._all if f != listener)

    def __call__(self) -> None:
        for listener in self._all:
            with contextlib.suppress(Exception):
                listener()


class GroupCommitter:
    """The group-commit thread: batches concurrent jobs into one transaction each."""

    def __init__(
        self,
        db: Database,
        runner: Runner,
        *,
        max_batch: int = 512,
        linger: float = 0.001,
        listeners: Listeners | None = None,
    ) -> None:
        self._db = db
        self._listeners = listeners or Listeners()
        self._runner = runner
        self._max = max(1, max_batch)
        self._linger = max(0.0, linger)
        self._expect = 1  # the size of the previous batch
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ledger-commit", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; it finishes once its batch is committed."""
        if self._closed:
            raise StorageError("the ledger is closed")
        self._queue.put(job)

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """The next batch: everything queued now; then, if fewer requests came than in the
        previous batch, wait up to ``linger`` for the others (the callers answered by the
        previous commit are about to send their next request). A lone caller, whose
        previous batch was itself, is never kept waiting."""
        batch = [first]
        deadline: float | None = None
        while len(batch) < self._max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if self._linger <= 0 or len(batch) >= self._expect:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self._linger
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                return batch, True
            batch.append(item)
        self._expect = len(batch)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            try:
                conn = self._db.acquire()
                try:
                    self._runner.run(conn, batch)
                finally:
                    self._db.release(conn)
            except BaseException as exc:  # the pool could not give a connection
                self._runner.fail(batch, exc)
            finally:
                for job in batch:
                    job.finish()
                self._listeners()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.error = StorageError("the ledger is closed")
                job.finish()
                self._listeners()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        self._drain()
