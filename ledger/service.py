"""The ledger's synchronous service layer: the one API the CLI, the gateway and tests call.

Every fen that moves in the wallet moves through :class:`Ledger`. Write operations run as jobs
in write transactions (:mod:`ledger.commit`): with ``group_commit`` (the default) a committer
thread batches concurrent requests into one transaction, each request still atomic and
individually accepted or refused, and a call returns only once its transaction is committed.
Without it, each call runs its own transaction on a pooled connection (the bench compares the
two). Reads run on read-only snapshots. Methods block; without blocking, ``submit`` gives a
future and ``submit_callback`` calls back (what :mod:`ledger.asyncapi`, the Twisted gateway's
face of the ledger, uses for writes, with a batch listener to wake the reactor once per
batch; reads go to a thread pool). All methods are thread-safe.

Errors: a refusal raises a :class:`~ledger.errors.LedgerError` and posts nothing; a database
failure raises :class:`~ledger.errors.StorageError` (outcome unknown: retry with the same key).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

from ledger import ops, reads
from ledger.commit import NO_HINTS, GroupCommitter, Hints, Job, Listeners, Op, Runner
from ledger.db import Conn, Database, redact_url
from ledger.errors import LedgerError, StorageError
from ledger.limits import Limits
from ledger.ops import iccid_of
from ledger.tx import AccountMeta
from ledger.views import (
    CloseView,
    EntryView,
    HallReport,
    LoadView,
    TransferView,
    VerifyReport,
    WalletView,
)

__all__ = [
    "CloseView",
    "EntryView",
    "HallReport",
    "Ledger",
    "LoadView",
    "TransferView",
    "VerifyReport",
    "WalletView",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")
#: set by ``submit``: the write methods then queue their job instead of running it
_CAPTURE: ContextVar[list[Job] | None] = ContextVar("ledger_capture", default=None)
_WRITE_METHODS: Final = frozenset(
    {
        "open_wallet",
        "enable_card",
        "deposit",
        "swap_card",
        "close_wallet",
        "reserve_load",
        "post_load",
        "void_load",
        "mark_in_doubt",
        "open_merchant",
        "purchase",
    }
)
DEFAULT_LIMITS = Limits()
#: the largest batch: keeps every statement of a batch within SQLite's bound parameters
MAX_BATCH: Final = 4096
_IN_FLIGHT: Final = (ops.IN_FLIGHT,)


def _msisdns(msisdn: object) -> tuple[str, ...]:
    """A prefetch hint from a raw MSISDN (normalized as the operations do; anything odd is
    dropped: the operation validates and reads it itself)."""
    return (msisdn.removeprefix("+"),) if isinstance(msisdn, str) else ()


def _iccids(iccid: object) -> tuple[str, ...]:
    """A prefetch hint from a raw ICCID, normalized as the operations do (upper case)."""
    return (iccid.upper(),) if isinstance(iccid, str) else ()


def _strs(value: object) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else ()


def _complete(  # noqa: PLR0917 - one argument per field, positional for speed
    keys: tuple[str, ...],
    request_keys: tuple[str, ...],
    msisdns: tuple[str, ...],
    iccids: tuple[str, ...],
    load_ids: tuple[str, ...],
    accounts: tuple[str, ...],
) -> Hints:
    """Complete hints, built positionally (a NamedTuple built by keyword costs ~1 us)."""
    return Hints._make((keys, request_keys, msisdns, iccids, load_ids, accounts, True))


# -- the jobs of the gateway's writes: built without calling the method (see _capture) -------
def _deposit_job(
    msisdn: str,
    amount: int,
    source: str,
    *,
    request_id: str,
    teller: str | None = None,
    hall: str | None = None,
) -> Job:
    key = (f"req:{request_id}",)
    source_account = (f"hall:{hall}",) if source == "hall" else _strs(source)
    return Job(
        ops.deposit,
        _complete(key, key, _msisdns(msisdn), (), (), source_account),
        (msisdn, amount, source, request_id, teller, hall),
    )


def _reserve_load_job(
    msisdn: str,
    iccid: str,
    amount: int,
    *,
    card_balance: int,
    online_counter: int,
    key: str,
    channel: str = "stk",
    credit: str | None = None,
) -> Job:
    return Job(
        ops.reserve_load,
        _complete((f"load:{key}",), (), _msisdns(msisdn), _iccids(iccid), (), _IN_FLIGHT),
        (msisdn, iccid, amount, card_balance, online_counter, key, channel, credit),
    )


def _post_load_job(load_id: str) -> Job:
    return Job(ops.post_load, _complete((), (), (), (), _strs(load_id), _IN_FLIGHT), (load_id,))


def _void_load_job(load_id: str) -> Job:
    return Job(ops.void_load, _complete((), (), (), (), _strs(load_id), _IN_FLIGHT), (load_id,))


def _mark_in_doubt_job(load_id: str) -> Job:
    return Job(ops.mark_in_doubt, _complete((), (), (), (), _strs(load_id), ()), (load_id,))


def _purchase_job(
    iccid: str,
    merchant_id: str,
    amount: int,
    *,
    offline_counter: int,
    terminal_id: str = "",
    at: datetime | None = None,
) -> Job:
    iccids = _iccids(iccid)
    return Job(
        ops.purchase,
        _complete(
            tuple(f"pos:{i}:{offline_counter}" for i in iccids),
            (),
            (),
            iccids,
            (),
            (f"merchant:{merchant_id}",),
        ),
        (iccid, merchant_id, amount, offline_counter, terminal_id, at),
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """Synchronous service layer; thread-safe for use from a thread pool."""

    def __init__(
        self,
        db: Database,
        *,
        limits: Limits,
        clock: Callable[[], datetime],
        group_commit: bool,
        max_batch: int,
        linger: float,
        pool_size: int = 4,
    ) -> None:
        self._db = db
        self.limits = limits
        self._clock = clock
        self._meta: dict[str, AccountMeta] = {}
        self._runner = Runner(db, limits, clock, self._meta)
        self._listeners = Listeners()
        self._committer = (
            GroupCommitter(
                db, self._runner, max_batch=max_batch, linger=linger, listeners=self._listeners
            )
            if group_commit
            else None
        )
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pool_size = pool_size

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], datetime] | None = None,
        group_commit: bool = True,
        max_batch: int = 512,
        linger: float = 0.001,
        pool_size: int = 4,
    ) -> Ledger:
        """Open the ledger at ``url`` (``sqlite:///rel.db``, ``sqlite:////abs.db``,
        ``sqlite://:memory:``, ``postgresql://user@host:port/db``) and run pending migrations.

        ``clock`` returns aware datetimes (default: the system clock in UTC).
        ``group_commit`` batches concurrent writes into shared transactions of up to
        ``max_batch`` requests; when fewer requests are queued than the previous batch had, the
        committer waits up to ``linger`` seconds for the rest (0: never wait; a lone caller is
        never kept waiting either way).
        """
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be within 1..{MAX_BATCH}, got {max_batch}")
        if linger < 0 or pool_size < 1:
            raise ValueError("linger must be >= 0 and pool_size >= 1")
        db = Database(url, pool_size=pool_size + (1 if group_commit else 0))
        try:
            db.migrate()
        except BaseException:
            db.close()
            raise
        return cls(
            db,
            limits=limits,
            clock=clock or _utc_now,
            group_commit=group_commit,
            max_batch=max_batch,
            linger=linger,
            pool_size=pool_size,
        )

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    def __repr__(self) -> str:
        return f"<Ledger {self._db.dialect} {redact_url(self._db.url.target)}>"

    def close(self) -> None:
        """Finish queued writes, stop the committer and close every connection."""
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            self._committer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _write(self, op: Op, args: tuple[Any, ...], hints: Hints = NO_HINTS) -> Any:
        """Run ``op(tx, *args)`` in a write transaction (or hand it to ``submit``)."""
        return self._call(Job(op, hints, args))

    def _call(self, job: Job) -> Any:
        """Run ``job`` in a write transaction (or hand it to ``submit``)."""
        if self._closed:
            raise StorageError("the ledger is closed")
        capture = _CAPTURE.get()
        if capture is not None:  # inside submit(): hand the job over, do not run it here
            capture.append(job)
            return None
        if self._committer is not None:
            self._committer.submit(job.blocking())
            return job.wait()
        self._run_alone(job)
        return job.outcome()

    def _run_alone(self, job: Job) -> None:
        try:
            conn = self._db.acquire()  # not connection(): its context manager costs ~2 us
            try:
                self._runner.run(conn, [job])
            finally:
                self._db.release(conn)
        except BaseException as exc:  # the pool could not give a connection
            self._runner.fail([job], exc)
        job.finish()
        self._listeners()

    def submit(
        self, method: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]:
        """Start a write without blocking: ``ledger.submit(ledger.deposit, msisdn, 100, "bank",
        request_id="r1")`` returns a :class:`concurrent.futures.Future` of what
        ``ledger.deposit(...)`` returns; it resolves (in the committer thread) once the write is
        committed, or with the refusal. Validation errors are raised through the future too.
        With group commit this is how an event loop keeps many requests in one batch without
        a thread per request; without it the write runs on a small internal thread pool."""
        job = self._capture(method, args, kwargs)
        future = job.with_future()
        self._enqueue(job)
        return cast("Future[_T]", future)

    def submit_callback(
        self,
        callback: Callable[[_T | None, BaseException | None], object],
        method: Callable[_P, _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> None:
        """:meth:`submit` without a Future: ``callback(result, None)`` or ``callback(None,
        error)`` is called once the write is committed or refused, in the committer thread
        (keep it short: the batch's other callers wait for it; an exception it raises is
        dropped). This is the cheapest way in: what an event loop uses to keep thousands of
        requests in flight (:class:`ledger.asyncapi.AsyncLedger` does)."""
        job = self._capture(method, args, kwargs)
        job.callback = callback
        self._enqueue(job)

    def add_batch_listener(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` after the callbacks of every batch of writes (in the thread
        that ran them; one call per job without group commit). With
        :meth:`submit_callback`, an event loop queues outcomes in its callbacks and wakes
        itself once per batch in the listener."""
        self._listeners.add(listener)

    def remove_batch_listener(self, listener: Callable[[], object]) -> None:
        """Stop calling ``listener`` after each batch."""
        self._listeners.remove(listener)

    def _capture(
        self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job:
        """The job ``method(*args, **kwargs)`` would run, without running it."""
        if getattr(method, "__self__", None) is not self or (
            getattr(method, "__name__", "") not in _WRITE_METHODS
        ):
            raise TypeError(f"submit() takes a write method of this ledger, not {method!r}")
        build = _JOBS.get(getattr(method, "__func__", None))
        if build is not None:  # the gateway's writes: no call through the method
            if self._closed:
                raise StorageError("the ledger is closed")
            return build(*args, **kwargs)
        captured: list[Job] = []
        token = _CAPTURE.set(captured)
        try:
            method(*args, **kwargs)
        finally:
            _CAPTURE.reset(token)
        return captured[0]

    def _enqueue(self, job: Job) -> None:
        if self._committer is not None:
            self._committer.submit(job)
            return
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="ledger")
        self._pool.submit(self._run_alone, job)

    def _read(self, fn: Callable[[Conn], _T], *, one_statement: bool = False) -> _T:
        """Run ``fn`` on a read-only snapshot; ``one_statement``: ``fn`` issues a single
        statement, consistent by itself, so no transaction is opened (one round trip)."""
        if self._closed:
            raise StorageError("the ledger is closed")
        with self._db.connection() as conn:
            try:
                if one_statement:
                    return fn(conn)
                conn.begin_read()
                result = fn(conn)
                conn.commit()
                return result
            except LedgerError:
                conn.rollback()
                raise
            except Exception as exc:
                conn.rollback()
                if conn.dialect == "postgresql":
                    conn.broken = conn.broken or bool(conn.raw.closed)
                text = str(exc).strip().splitlines()
                raise StorageError(
                    f"ledger read failed: {type(exc).__name__}: {text[0] if text else ''}"
                ) from exc

    def _now(self) -> datetime:
        return self._runner.now()

    # -- wallets and cards ---------------------------------------------------------------
    def open_wallet(
        self, msisdn: str, id_number: str, *, request_id: str | None = None
    ) -> WalletView:
        """Open a wallet (cash account at 0) for ``msisdn``; WalletExists if one is open."""
        return cast(WalletView, self._write(ops.open_wallet, (msisdn, id_number, request_id)))

    def enable_card(self, msisdn: str, iccid: str, *, request_id: str | None = None) -> WalletView:
        """Enable the RF-SIM card ``iccid`` on the wallet (which must have no active card)."""
        return cast(WalletView, self._write(ops.enable_card, (msisdn, iccid, request_id)))

    def deposit(
        self,
        msisdn: str,
        amount: int,
        source: str,
        *,
        request_id: str,
        teller: str | None = None,
        hall: str | None = None,
    ) -> TransferView:
        """Deposit ``amount`` fen to the cash account from ``source`` (hall, bank, voucher);
        a hall deposit needs ``teller`` and ``hall``."""
        job = _deposit_job(msisdn, amount, source, request_id=request_id, teller=teller, hall=hall)
        return cast(TransferView, self._call(job))

    def swap_card(
        self,
        msisdn: str,
        new_iccid: str,
        *,
        old_balance: int | None,
        request_id: str,
        teller: str | None = None,
        hall: str | None = None,
    ) -> WalletView:
        """Swap the active card for ``new_iccid``: the old purse migrated (``old_balance`` read
        from the old card) or forfeited (``None``: the card is lost)."""
        return cast(
            WalletView,
            self._write(ops.swap_card, (msisdn, new_iccid, old_balance, request_id, teller, hall)),
        )

    def close_wallet(
        self,
        msisdn: str,
        *,
        request_id: str,
        teller: str | None = None,
        hall: str | None = None,
        card_balance: int | None = None,
    ) -> CloseView:
        """Close the wallet: cash refunded to the hall's cash, the purse refunded when the card
        was read (``card_balance``), forfeited otherwise."""
        return cast(
            CloseView,
            self._write(ops.close_wallet, (msisdn, request_id, teller, hall, card_balance)),
        )

    # -- two-phase top-up ----------------------------------------------------------------
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
    ) -> LoadView:
        """Reserve a top-up: cash -> loads in flight, after every top-up limit. ``credit``
        (the CREDIT FOR LOAD's note, up to 1024 characters) is stored with the load in the
        same transaction; it is not part of the request: a replay returns the first note."""
        job = _reserve_load_job(
            msisdn,
            iccid,
            amount,
            card_balance=card_balance,
            online_counter=online_counter,
            key=key,
            channel=channel,
            credit=credit,
        )
        return cast(LoadView, self._call(job))

    def post_load(self, load_id: str) -> LoadView:
        """The card loaded: in flight -> card purse (idempotent)."""
        return cast(LoadView, self._call(_post_load_job(load_id)))

    def void_load(self, load_id: str) -> LoadView:
        """The card did not load: in flight -> cash (idempotent)."""
        return cast(LoadView, self._call(_void_load_job(load_id)))

    def mark_in_doubt(self, load_id: str) -> LoadView:
        """No proof yet: the load stays in flight, in doubt."""
        return cast(LoadView, self._call(_mark_in_doubt_job(load_id)))

    def pending_loads(self, iccid: str | None = None) -> list[LoadView]:
        """Reserved and in-doubt loads, optionally of one card, oldest first."""
        card = iccid_of(iccid) if iccid is not None else None
        return self._read(lambda conn: reads.pending_loads(conn, card), one_statement=True)

    # -- merchants and purchases ---------------------------------------------------------
    def open_merchant(self, merchant_id: str, name: str, *, currency: str = "CNY") -> None:
        """Open a merchant with a payable account (idempotent for the same details)."""
        self._write(ops.open_merchant, (merchant_id, name, currency))

    def purchase(
        self,
        iccid: str,
        merchant_id: str,
        amount: int,
        *,
        offline_counter: int,
        terminal_id: str = "",
        at: datetime | None = None,
    ) -> TransferView:
        """Post a POS purchase record: card purse -> merchant (idempotent per card and offline
        counter)."""
        job = _purchase_job(
            iccid,
            merchant_id,
            amount,
            offline_counter=offline_counter,
            terminal_id=terminal_id,
            at=at,
        )
        return cast(TransferView, self._call(job))

    # -- queries -------------------------------------------------------------------------
    def wallet(self, msisdn: str) -> WalletView:
        """Balances and card state of the subscriber's wallet."""
        now = self._now()
        return self._read(
            lambda conn: reads.wallet(conn, msisdn, self.limits, now), one_statement=True
        )

    def history(self, msisdn: str, last: int = 10) -> list[EntryView]:
        """The subscriber's last ``last`` entries (cash account and purses), newest first."""
        return self._read(lambda conn: reads.history(conn, msisdn, last))

    def merchant_day(self, merchant_id: str, day: date) -> list[EntryView]:
        """A merchant's entries of one local calendar day, oldest first."""
        return self._read(lambda conn: reads.merchant_day(conn, merchant_id, day, self.limits))

    def hall_report(self, hall: str, day: date) -> HallReport:
        """A business hall's cash deposits and refunds of one local calendar day."""
        return self._read(lambda conn: reads.hall_report(conn, hall, day, self.limits))

    def verify(self) -> VerifyReport:
        """Recompute every balance from the journal and check the ledger's invariants."""
        return self._read(reads.verify)


#: write methods whose job :meth:`Ledger._capture` builds directly (the gateway's hot path);
#: an overriding subclass's method is called instead
_JOBS: Final[dict[object, Callable[..., Job]]] = {
    Ledger.deposit: _deposit_job,
    Ledger.reserve_load: _reserve_load_job,
    Ledger.post_load: _post_load_job,
    Ledger.void_load: _void_load_job,
    Ledger.mark_in_doubt: _mark_in_doubt_job,
    Ledger.purchase: _purchase_job,
}
