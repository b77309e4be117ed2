"""Group commit: concurrent requests share transactions, each individually accepted or
refused; transient failures are retried, then isolated; submit() gives futures."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger import ops
from ledger.commit import Job, Runner
from ledger.db import Database
from ledger.errors import InvalidAmount, LedgerError, Refused, StorageError
from ledger.limits import Limits
from ledger.service import Ledger
from ledger.tx import Tx

from .conftest import SettableClock
from .helpers import ID_NUMBER, MSISDN, MSISDN2, funded_wallet, journal_size, raw_sql

MSISDNS = [f"86138000{i:05d}" for i in range(8)]


def _batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    original = Runner.run

    def run(self: Runner, conn: Any, jobs: list[Job]) -> None:
        sizes.append(len(jobs))
        original(self, conn, jobs)

    monkeypatch.setattr(Runner, "run", run)
    return sizes


def _hammer(workers: int, each: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def work(n: int) -> None:
        barrier.wait()
        try:
            each(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_requests_share_commits(
    ledger_url: str, ledger_clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many threads depositing at once: fewer transactions than requests, every deposit
    posted exactly once, balances right."""
    with Ledger.connect(ledger_url, clock=ledger_clock) as led:
        for m in MSISDNS:
            led.open_wallet(m, ID_NUMBER)
        sizes = _batch_sizes(monkeypatch)

        def deposits(n: int) -> None:
            for k in range(25):
                led.deposit(MSISDNS[n], 100 + k, "bank", request_id=f"d-{n}-{k}")

        assert _hammer(len(MSISDNS), deposits) == []
        assert sum(sizes) == 25 * len(MSISDNS)
        assert max(sizes) > 1
        assert len(sizes) < 25 * len(MSISDNS)
        for m in MSISDNS:
            assert led.wallet(m).cash == sum(100 + k for k in range(25))
        assert led.verify().ok


def test_refusals_inside_a_batch_are_individual(
    ledger_url: str, ledger_clock: SettableClock
) -> None:
    """In shared transactions, refused requests leave no trace and do not affect others."""
    with Ledger.connect(ledger_url, clock=ledger_clock) as led:
        for m in MSISDNS:
            led.open_wallet(m, ID_NUMBER)
        refused: list[LedgerError] = []
        lock = threading.Lock()

        def mixed(n: int) -> None:
            for k in range(20):
                amount = 0 if k % 3 == 0 else 100
                try:
                    led.deposit(MSISDNS[n], amount, "bank", request_id=f"d-{n}-{k}")
                except InvalidAmount as exc:
                    with lock:
                        refused.append(exc)

        assert _hammer(len(MSISDNS), mixed) == []
        assert len(refused) == 7 * len(MSISDNS)
        assert journal_size(led) == 13 * len(MSISDNS)
        assert all(led.wallet(m).cash == 1_300 for m in MSISDNS)


def test_one_card_hammered_keeps_limits(ledger_url: str, ledger_clock: SettableClock) -> None:
    """Threads racing top-ups and purchases on one card and one cash account, with and
    without group commit: no lost update, no limit exceeded."""
    for group in (True, False):
        with Ledger.connect(ledger_url, clock=ledger_clock, group_commit=group) as led:
            msisdn, iccid = f"8613900{int(group)}00000", f"8986001000000000000{int(group)}"
            funded_wallet(led, msisdn, iccid, cash=1_000_000)
            led.open_merchant("M1", "Shop")
            accepted: list[int] = []
            lock = threading.Lock()

            def topups(
                n: int,
                msisdn: str = msisdn,
                iccid: str = iccid,
                accepted: list[int] = accepted,
                lock: threading.Lock = lock,
            ) -> None:
                for k in range(4):
                    try:
                        load = led.reserve_load(
                            msisdn,
                            iccid,
                            30_000,
                            card_balance=0,
                            online_counter=k,
                            key=f"{msisdn}-{n}-{k}",
                        )
                    except Refused:
                        continue
                    led.post_load(load.id)
                    with lock:
                        accepted.append(load.amount)

            assert _hammer(6, topups) == []
            view = led.wallet(msisdn)
            assert len(accepted) <= 5  # daily count
            assert sum(accepted) == view.card_balance
            assert view.cash == 1_000_000 - sum(accepted)
            assert view.topups_today == len(accepted)

            def purchases(n: int, iccid: str = iccid) -> None:
                for k in range(10):
                    with contextlib.suppress(Refused):
                        led.purchase(iccid, "M1", 7_000, offline_counter=n * 100 + k)

            assert _hammer(6, purchases) == []
            spent = view.card_balance - led.wallet(msisdn).card_balance
            assert spent % 7_000 == 0
            assert 0 <= led.wallet(msisdn).card_balance < 7_000
            assert led.verify().ok


def test_submit_returns_futures(ledger_url: str, ledger_clock: SettableClock) -> None:
    """submit() starts a write without blocking; its future gives the result or the refusal,
    with and without group commit."""
    for group in (True, False):
        with Ledger.connect(ledger_url, clock=ledger_clock, group_commit=group) as led:
            msisdn = MSISDNS[int(group)]
            led.open_wallet(msisdn, ID_NUMBER)
            futures = [
                led.submit(led.deposit, msisdn, 100, "bank", request_id=f"f-{group}-{k}")
                for k in range(50)
            ]
            bad = led.submit(led.deposit, msisdn, -1, "bank", request_id=f"bad-{group}")
            assert [f.result(timeout=30).amount for f in futures] == [100] * 50
            with pytest.raises(InvalidAmount):
                bad.result(timeout=30)
            assert led.wallet(msisdn).cash == 5_000
            with pytest.raises(TypeError):
                led.submit(led.wallet, msisdn)  # type: ignore[arg-type]


def test_submit_callback_reports_outcomes(ledger_url: str, ledger_clock: SettableClock) -> None:
    """submit_callback() queues a write without a future: the callback gets (result, None)
    or (None, refusal) once the batch is committed; one callback raising does not keep the
    others from theirs; only write methods of this ledger are taken."""
    for group in (True, False):
        with Ledger.connect(ledger_url, clock=ledger_clock, group_commit=group) as led:
            msisdn = MSISDNS[2 + int(group)]
            led.open_wallet(msisdn, ID_NUMBER)
            outcomes: list[tuple[Any, BaseException | None]] = []
            done = threading.Semaphore(0)

            def record(
                result: Any,
                error: BaseException | None,
                outcomes: list[tuple[Any, BaseException | None]] = outcomes,
                done: threading.Semaphore = done,
            ) -> None:
                outcomes.append((result, error))
                done.release()

            def explode(
                result: Any, error: BaseException | None, done: threading.Semaphore = done
            ) -> None:
                done.release()
                raise RuntimeError("a broken callback")

            led.submit_callback(explode, led.deposit, msisdn, 7, "bank", request_id=f"x-{group}")
            for k in range(20):
                led.submit_callback(
                    record, led.deposit, msisdn, 100, "bank", request_id=f"c-{group}-{k}"
                )
            led.submit_callback(record, led.deposit, msisdn, 0, "bank", request_id=f"z-{group}")
            for _ in range(22):
                assert done.acquire(timeout=30)
            results = [r for r, e in outcomes if e is None]
            errors = [e for r, e in outcomes if e is not None]
            assert [t.amount for t in results] == [100] * 20
            assert len(errors) == 1
            assert isinstance(errors[0], InvalidAmount)
            assert led.wallet(msisdn).cash == 2_007
            with pytest.raises(TypeError):
                led.submit_callback(record, led.wallet, msisdn)  # type: ignore[arg-type]


@pytest.mark.postgres
def test_a_batch_of_hinted_requests_costs_two_round_trips(
    pg_url: str, ledger_clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a batch of deposits is one round trip to read and lock (ids drawn under
    those locks) and one to write and commit, whatever its size; a batch with a request
    whose rows are not all hinted (opening a wallet) takes one more, and both stay right."""
    import psycopg

    with Ledger.connect(pg_url, clock=ledger_clock) as led:
        for m in MSISDNS:
            led.open_wallet(m, ID_NUMBER)
        led.deposit(MSISDNS[0], 1, "bank", request_id="warm")  # account kinds cached
        syncs: list[int] = []
        per_batch: dict[int, int] = {}
        pipeline, run = psycopg.Connection.pipeline, Runner.run

        @contextlib.contextmanager
        def counted(self: psycopg.Connection[Any]) -> Any:
            syncs.append(1)
            with pipeline(self) as pipe:
                yield pipe

        def counting_run(self: Runner, conn: Any, jobs: list[Job]) -> None:
            syncs.clear()
            run(self, conn, jobs)
            per_batch[len(jobs)] = len(syncs)

        monkeypatch.setattr(psycopg.Connection, "pipeline", counted)
        monkeypatch.setattr(Runner, "run", counting_run)
        gate, held = threading.Event(), threading.Event()

        def hold_op(tx: Tx) -> Callable[[], None]:
            held.set()
            gate.wait(30)
            return lambda: None

        def batch(extra: bool) -> list[Any]:
            held.clear()
            led._committer.submit(Job(hold_op))  # type: ignore[union-attr]  # holds the committer
            assert held.wait(30)  # the committer runs it: what follows queues up
            futures = [
                led.submit(led.deposit, m, 10, "bank", request_id=f"rt-{extra}-{m}")
                for m in MSISDNS
            ]
            if extra:
                futures.append(led.submit(led.open_wallet, "8613700000001", ID_NUMBER))
            gate.set()
            out = [f.result(timeout=30) for f in futures]
            gate.clear()
            return out

        assert len(batch(extra=False)) == len(MSISDNS)
        assert per_batch[len(MSISDNS)] == 2, per_batch
        assert len(batch(extra=True)) == len(MSISDNS) + 1
        assert per_batch[len(MSISDNS) + 1] == 3, per_batch
        assert [led.wallet(m).cash for m in MSISDNS] == [21] + [20] * (len(MSISDNS) - 1)
        assert led.verify().ok


@pytest.mark.postgres
def test_transfer_ids_follow_commit_order_on_each_account(
    pg_url: str, ledger_clock: SettableClock
) -> None:
    """Two ledgers (two committers, two connections) posting to the same accounts at once:
    on every account, ordered by transfer id, each balance after is the previous one plus
    this transfer, so ids were drawn while the account was locked, in commit order."""
    with Ledger.connect(pg_url, clock=ledger_clock) as setup:
        for m in MSISDNS:
            setup.open_wallet(m, ID_NUMBER)
    ledgers = [Ledger.connect(pg_url, clock=ledger_clock) for _ in range(2)]
    try:

        def deposits(n: int) -> None:
            led = ledgers[n % 2]
            for k in range(40):
                led.deposit(MSISDNS[(n + k) % len(MSISDNS)], 1 + k, "bank", request_id=f"o-{n}-{k}")

        assert _hammer(8, deposits) == []
        rows = raw_sql(
            pg_url,
            "SELECT id, amount, debit_account, credit_account, debit_balance, credit_balance "
            "FROM transfers ORDER BY id",
        )
        last: dict[str, int] = {}
        for _id, amount, debit, credit, debit_after, credit_after in rows:
            for account, after, delta in (
                (debit, debit_after, -amount),
                (credit, credit_after, amount),
            ):
                if account in last:
                    assert after == last[account] + delta, (account, _id)
                last[account] = after
        assert ledgers[0].verify().ok
    finally:
        for led in ledgers:
            led.close()


@pytest.mark.postgres
@pytest.mark.parametrize("complete", [True, False], ids=["prefetch", "prepare"])
def test_transfer_ids_are_drawn_under_the_account_locks(
    pg_url: str, ledger_clock: SettableClock, complete: bool
) -> None:
    """While another transaction holds the bank account, a deposit from the bank waits for
    it before drawing its transfer id (in the prefetch for a batch of fully hinted requests,
    in the flush otherwise): an id drawn meanwhile elsewhere is smaller than the deposit's."""
    import psycopg

    with Ledger.connect(pg_url, clock=ledger_clock) as led:
        led.open_wallet(MSISDN, ID_NUMBER)
        led.deposit(MSISDN, 1, "bank", request_id="warm")
        holder = psycopg.connect(pg_url)
        other = psycopg.connect(pg_url, autocommit=True)
        try:
            holder.execute("SELECT balance FROM accounts WHERE id = 'bank' FOR UPDATE")
            gate, held = threading.Event(), threading.Event()

            def hold_op(tx: Tx) -> Callable[[], None]:
                held.set()
                gate.wait(30)
                return lambda: None

            led._committer.submit(Job(hold_op))  # type: ignore[union-attr]
            assert held.wait(30)
            deposit = led.submit(led.deposit, MSISDN, 5, "bank", request_id="late")
            if not complete:  # a request whose rows are not all hinted joins the batch
                led.submit(led.open_wallet, MSISDN2, ID_NUMBER)
            gate.set()
            for _ in range(300):  # until the ledger's transaction waits for the bank's lock
                waiting = other.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the deposit never waited for the bank account")
            meanwhile = other.execute(
                "SELECT nextval(pg_get_serial_sequence('transfers', 'id'))"
            ).fetchone()
            holder.commit()
            assert meanwhile is not None
            assert deposit.result(timeout=30).id > meanwhile[0]
        finally:
            holder.close()
            other.close()
        assert led.verify().ok


def _runner(tmp_path: Path) -> tuple[Database, Runner]:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.migrate()
    clock = SettableClock(datetime(2026, 3, 2, 2, tzinfo=UTC))
    return db, Runner(db, Limits(), clock, {})


def _cash(tx: Tx) -> Callable[[], int]:
    wallet = tx.open_wallet(MSISDN)
    assert wallet is not None
    cash = ops.wallet_view(tx, wallet).cash
    return lambda: cash


def _run(db: Database, runner: Runner, *opfns: Callable[[Tx], Any]) -> list[Job]:
    jobs = [Job(fn) for fn in opfns]
    with db.connection() as conn:
        runner.run(conn, jobs)
    return jobs


def test_transient_failure_is_isolated(tmp_path: Path) -> None:
    """A request that keeps failing with a transient database error is retried, then run
    alone: its neighbours commit, it gets a StorageError."""
    db, runner = _runner(tmp_path)
    try:
        (setup,) = _run(db, runner, lambda tx: ops.open_wallet(tx, MSISDN, ID_NUMBER, None))
        assert setup.error is None
        attempts = []

        def poisoned(tx: Tx) -> Any:
            attempts.append(1)
            raise sqlite3.IntegrityError("UNIQUE constraint failed: simulated race")

        jobs = _run(
            db,
            runner,
            lambda tx: ops.deposit(tx, MSISDN, 100, "bank", request_id="a"),
            poisoned,
            lambda tx: ops.deposit(tx, MSISDN, 200, "bank", request_id="b"),
        )
        assert jobs[0].error is None
        assert jobs[2].error is None
        assert isinstance(jobs[1].error, StorageError)
        assert len(attempts) > 4  # the batch retries, then the job alone retries
        (check,) = _run(db, runner, lambda tx: ops.deposit(tx, MSISDN, 100, "bank", request_id="a"))
        assert check.error is None
        assert check.result.amount == 100
    finally:
        db.close()


def test_a_bug_in_one_request_does_not_sink_the_batch(tmp_path: Path) -> None:
    """An unexpected exception in one request is that request's error only."""
    db, runner = _runner(tmp_path)
    try:
        _run(db, runner, lambda tx: ops.open_wallet(tx, MSISDN, ID_NUMBER, None))

        def buggy(tx: Tx) -> Any:
            ops.deposit(tx, MSISDN, 999, "bank", request_id="half-done")
            raise RuntimeError("bug after a posting")

        jobs = _run(
            db, runner, buggy, lambda tx: ops.deposit(tx, MSISDN, 100, "bank", request_id="ok")
        )
        assert isinstance(jobs[0].error, RuntimeError)
        assert jobs[1].error is None
        (view,) = _run(db, runner, _cash)
        assert view.result == 100  # the half-done posting was undone
    finally:
        db.close()
