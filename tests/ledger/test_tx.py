"""ledger.tx: the unit of work. Pinned: a finished batch leaves nothing for the garbage
collector (its undo log, which refers back to it, is released request by request); a refused
request is still undone; a read of a load for a view neither locks nor caches it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger import ops
from ledger.commit import Job, Runner
from ledger.db import Database
from ledger.errors import InvalidAmount
from ledger.limits import Limits
from ledger.tx import Tx

from .helpers import ICCID, ID_NUMBER, MSISDN

NOW = datetime(2026, 3, 2, 2, tzinfo=UTC)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[tuple[Database, Runner]]:
    """A migrated SQLite ledger database and a runner on it."""
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    db.migrate()
    try:
        yield db, Runner(db, Limits(), lambda: NOW, {})
    finally:
        db.close()


def _run(db: Database, runner: Runner, *jobs: Job) -> list[Job]:
    with db.connection() as conn:
        runner.run(conn, list(jobs))
    return list(jobs)


def test_a_finished_batch_leaves_no_garbage_cycle(
    runner: tuple[Database, Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the garbage collector off, the Tx of a batch (accepted and refused requests
    alike) is freed as soon as the batch is done: no reference cycle keeps it."""
    db, run = runner
    _run(db, run, Job(ops.open_wallet, args=(MSISDN, ID_NUMBER, None)))
    made: list[weakref.ref[Tx]] = []
    original = Tx.__init__

    def tracking(self: Tx, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(weakref.ref(self))

    monkeypatch.setattr(Tx, "__init__", tracking)
    gc.collect()
    gc.disable()
    try:
        jobs = _run(
            db,
            run,
            Job(ops.deposit, args=(MSISDN, 100, "bank", "a")),
            Job(ops.deposit, args=(MSISDN, 0, "bank", "refused")),
            Job(ops.deposit, args=(MSISDN, 200, "bank", "b")),
        )
        assert [j.error is None for j in jobs] == [True, False, True]
        assert made
        assert all(ref() is None for ref in made)
    finally:
        gc.enable()


def test_a_refused_request_in_a_batch_is_undone(runner: tuple[Database, Runner]) -> None:
    """A request that posts and then fails leaves no trace; the batch's others stand."""
    db, run = runner
    _run(db, run, Job(ops.open_wallet, args=(MSISDN, ID_NUMBER, None)))

    def posts_then_fails(tx: Tx) -> Callable[[], Any]:
        ops.deposit(tx, MSISDN, 999, "bank", "undone")
        raise InvalidAmount("refused after posting")

    jobs = _run(
        db,
        run,
        Job(posts_then_fails),
        Job(ops.deposit, args=(MSISDN, 100, "bank", "kept")),
    )
    assert isinstance(jobs[0].error, InvalidAmount)
    assert jobs[1].result.amount == 100

    def cash(tx: Tx) -> Callable[[], int]:
        wallet = tx.open_wallet(MSISDN)
        assert wallet is not None
        value = ops.wallet_view(tx, wallet).cash
        return lambda: value

    (check,) = _run(db, run, Job(cash))
    assert check.result == 100


def test_a_load_read_for_a_view_is_not_cached(runner: tuple[Database, Runner]) -> None:
    """tx.load(id, lock=False) returns the load without taking it into the batch's cache: a
    later tx.load(id) in the same batch reads (and locks) it for real."""
    db, run = runner
    _run(db, run, Job(ops.open_wallet, args=(MSISDN, ID_NUMBER, None)))
    _run(db, run, Job(ops.enable_card, args=(MSISDN, ICCID, None)))
    _run(db, run, Job(ops.deposit, args=(MSISDN, 10_000, "bank", "fund")))
    (reserved,) = _run(
        db, run, Job(ops.reserve_load, args=(MSISDN, ICCID, 5_000, 0, 1, "k1", "stk"))
    )
    load_id = reserved.result.id
    reads: list[str] = []

    def probe(tx: Tx) -> Callable[[], tuple[Any, Any]]:
        original = tx.conn.one

        def one(sql: str, params: Any = ()) -> Any:
            reads.append(sql)
            return original(sql, params)

        tx.conn.one = one  # type: ignore[method-assign]
        try:
            first = tx.load(load_id, lock=False)
            second = tx.load(load_id)
        finally:
            del tx.conn.one
        return lambda: (first, second)

    (job,) = _run(db, run, Job(probe))
    first, second = job.result
    assert first is not None and second is not None
    assert (first.id, first.amount, first.state) == (load_id, 5_000, "reserved")
    assert first is not second
    assert len([sql for sql in reads if "FROM loads" in sql]) == 2
