"""Schema version 2: per-account transfer chains instead of per-account journal indexes;
one batch judging many requests on the same hot accounts; the gateway's job fast path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ledger import db as ledger_db
from ledger.commit import Job
from ledger.db import Database
from ledger.errors import Refused
from ledger.schema import MIGRATIONS, SCHEMA_VERSION
from ledger.service import _CAPTURE, Ledger

from .conftest import SettableClock
from .helpers import ICCID, ID_NUMBER, MSISDN, MSISDN2, funded_wallet, raw_sql, run_one_batch


def _legs_newest_first(url: str, accounts: set[str]) -> list[int]:
    """Brute force: the ids of every transfer touching ``accounts``, newest first."""
    rows = raw_sql(url, "SELECT id, debit_account, credit_account FROM transfers")
    return sorted((int(r[0]) for r in rows if r[1] in accounts or r[2] in accounts), reverse=True)


def _chains_from_scratch(url: str) -> tuple[dict[int, tuple[Any, Any]], dict[str, Any]]:
    """What every link and head must be, recomputed from the journal in id order."""
    rows = raw_sql(url, "SELECT id, debit_account, credit_account FROM transfers ORDER BY id")
    heads: dict[str, Any] = {}
    links: dict[int, tuple[Any, Any]] = {}
    for tid, debit, credit in rows:
        links[int(tid)] = (heads.get(debit), heads.get(credit))
        heads[debit] = heads[credit] = int(tid)
    return links, heads


def _assert_chains(url: str) -> None:
    links, heads = _chains_from_scratch(url)
    stored = {
        int(r[0]): (r[1], r[2])
        for r in raw_sql(url, "SELECT id, debit_prev, credit_prev FROM transfers")
    }
    assert stored == links
    stored_heads = {str(r[0]): r[1] for r in raw_sql(url, "SELECT id, last_transfer FROM accounts")}
    assert {a: h for a, h in stored_heads.items() if h is not None} == heads


def test_history_walks_the_chains(ledger: Ledger, ledger_url: str) -> None:
    """Over many batches and both of a subscriber's accounts (cash, purse), history is the
    newest transfers touching them, as a scan of the whole journal finds them; every link
    and head is what the journal's order gives; verify agrees."""
    funded_wallet(ledger, cash=100_000)
    funded_wallet(ledger, MSISDN2, None, cash=5_000)
    for k in range(12):
        ledger.deposit(MSISDN, 10 + k, "voucher", request_id=f"v-{k}")
        ledger.deposit(MSISDN2, 1, "bank", request_id=f"o-{k}")
        if k % 3 == 0:
            load = ledger.reserve_load(
                MSISDN, ICCID, 1_000, card_balance=k * 1_000, online_counter=k, key=f"mo:{k}"
            )
            ledger.post_load(load.id)
    accounts = {f"cash:{MSISDN}", f"card:{ICCID}"}
    expected = _legs_newest_first(ledger_url, accounts)
    for last in (1, 5, 10, 1000):
        got = [e.transfer_id for e in ledger.history(MSISDN, last)]
        # a transfer between two of the subscriber's accounts is two entries
        assert list(dict.fromkeys(got)) == expected[: len(set(got))]
        assert len(got) == min(last, len(ledger.history(MSISDN, 1000)))
    assert len({e.transfer_id for e in ledger.history(MSISDN, 1000)}) == len(expected)
    _assert_chains(ledger_url)
    assert ledger.verify().ok


def test_verify_catches_a_broken_chain(ledger: Ledger, ledger_url: str) -> None:
    """A head or a link changed behind the ledger's back is reported."""
    funded_wallet(ledger, cash=10_000)
    ledger.deposit(MSISDN, 5, "bank", request_id="second")
    assert ledger.verify().ok
    raw_sql(ledger_url, "UPDATE accounts SET last_transfer = 1 WHERE id = ?", (f"cash:{MSISDN}",))
    problems = ledger.verify().problems
    assert any(f"cash:{MSISDN}" in p and "chain" in p for p in problems)
    raw_sql(
        ledger_url,
        "UPDATE accounts SET last_transfer = (SELECT MAX(id) FROM transfers) WHERE id = ?",
        (f"cash:{MSISDN}",),
    )
    raw_sql(ledger_url, "UPDATE accounts SET last_transfer = 99 WHERE id = 'voucher'")
    problems = ledger.verify().problems
    assert problems == ["account voucher has no transfer but its chain starts at 99"]


def test_migration_2_backfills_the_chains(
    ledger_url: str, ledger_clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-1 database with transfers is migrated: links and heads backfilled from the
    journal, the per-account indexes gone, the journal still append-only, and the ledger
    carries on from it."""
    with monkeypatch.context() as patch:
        patch.setattr(ledger_db, "MIGRATIONS", MIGRATIONS[:1])
        db = Database(ledger_url)
        try:
            assert db.migrate() == 1
        finally:
            db.close()
    stamp = "2026-03-02T02:00:00.000000+00:00"
    accounts = [("cash:a", "cash", 0), ("cash:b", "cash", 0), ("hall:H", "hall_cash", 0)]
    for acc, kind, balance in accounts:
        raw_sql(
            ledger_url,
            "INSERT INTO accounts (id, kind, currency, balance, created_at) "
            "VALUES (?, ?, 'CNY', ?, ?)",
            (acc, kind, balance, stamp),
        )
    moves = [("bank", "cash:a", 50), ("hall:H", "cash:b", 30), ("cash:a", "cash:b", 20)]
    moves += [("voucher", "cash:a", 5), ("cash:b", "hall:H", 10)]
    balances: dict[str, int] = {}
    for n, (debit, credit, amount) in enumerate(moves, start=1):
        balances[debit] = balances.get(debit, 0) - amount
        balances[credit] = balances.get(credit, 0) + amount
        raw_sql(
            ledger_url,
            "INSERT INTO transfers (id, code, amount, debit_account, credit_account, currency, "
            "key, request_hash, context, debit_balance, credit_balance, created_at, occurred_at) "
            "VALUES (?, 'deposit', ?, ?, ?, 'CNY', ?, 'h', '{}', ?, ?, ?, ?)",
            (n, amount, debit, credit, f"k{n}", balances[debit], balances[credit], stamp, stamp),
        )
    for acc, balance in balances.items():
        raw_sql(ledger_url, "UPDATE accounts SET balance = ? WHERE id = ?", (balance, acc))
    if ledger_url.startswith("postgresql"):  # ids were given: move the identity past them
        raw_sql(ledger_url, "SELECT setval(pg_get_serial_sequence('transfers', 'id'), 5)")
    with Ledger.connect(ledger_url, clock=ledger_clock) as led:
        assert led.verify().ok
        _assert_chains(ledger_url)
        links = {
            int(r[0]): (r[1], r[2])
            for r in raw_sql(ledger_url, "SELECT id, debit_prev, credit_prev FROM transfers")
        }
        assert links == {1: (None, None), 2: (None, None), 3: (1, 2), 4: (None, 3), 5: (3, 2)}
        versions = raw_sql(ledger_url, "SELECT version FROM schema_version ORDER BY version")
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        if led.dialect == "sqlite":
            names = raw_sql(ledger_url, "SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            names = raw_sql(ledger_url, "SELECT indexname FROM pg_indexes")
        assert not {"transfers_debit", "transfers_credit"} & {str(r[0]) for r in names}
        with pytest.raises(Exception, match="append-only"):
            raw_sql(ledger_url, "UPDATE transfers SET amount = 1")
        led.open_wallet(MSISDN, ID_NUMBER)
        led.deposit(MSISDN, 7, "bank", request_id="after")
        assert led.verify().ok
        _assert_chains(ledger_url)


def test_one_batch_refuses_individually_with_the_figures_of_the_batch(
    ledger_url: str, ledger_clock: SettableClock
) -> None:
    """One transaction, many requests on the same hot accounts (bank, in flight, one cash
    account, one purse): a request refused in the middle by the limits or an overdraft is
    judged on the balances the requests before it in the batch left, names those figures,
    and leaves nothing; the requests after it see the same balances; the journal's balances
    after and chains are those of the accepted requests in order."""
    with Ledger.connect(ledger_url, clock=ledger_clock, group_commit=False) as led:
        funded_wallet(led, cash=0)
        calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
            (led.deposit, (MSISDN, 30_000, "bank"), {"request_id": "d1"}),
            (
                led.reserve_load,
                (MSISDN, ICCID, 20_000),
                {"card_balance": 75_000, "online_counter": 1, "key": "r1"},
            ),
            # 75,000 reported + 20,000 in flight + 10,000 > 100,000
            (
                led.reserve_load,
                (MSISDN, ICCID, 10_000),
                {"card_balance": 75_000, "online_counter": 2, "key": "r2"},
            ),
            # 10,000 left in cash
            (
                led.reserve_load,
                (MSISDN, ICCID, 15_000),
                {"card_balance": 0, "online_counter": 3, "key": "r3"},
            ),
            (led.deposit, (MSISDN, 0, "bank"), {"request_id": "bad"}),
            (
                led.reserve_load,
                (MSISDN, ICCID, 10_000),
                {"card_balance": 0, "online_counter": 4, "key": "r4"},
            ),
            (led.deposit, (MSISDN, 5, "bank"), {"request_id": "d2"}),
            (led.deposit, (MSISDN, 6, "bank"), {"request_id": "d1"}),  # reused key
        ]
        jobs = run_one_batch(led, calls)
        for job in jobs:
            job.finish()
        errors = [type(j.error).__name__ if j.error else None for j in jobs]
        assert errors == [
            None,
            None,
            "Refused",
            "Refused",
            "InvalidAmount",
            None,
            None,
            "IdempotencyConflict",
        ]
        limit, funds = jobs[2].error, jobs[3].error
        assert isinstance(limit, Refused)
        assert limit.rule == "card_balance_limit"
        assert limit.figures["in_flight"] == 20_000
        assert isinstance(funds, Refused)
        assert (funds.rule, funds.figures) == (
            "insufficient_funds",
            {"balance": 10_000, "amount": 15_000},
        )
        wallet = led.wallet(MSISDN)
        assert (wallet.cash, wallet.in_flight) == (5, 30_000)
        rows = raw_sql(
            ledger_url,
            "SELECT key, debit_balance, credit_balance FROM transfers "
            "WHERE key <> 'req:fund-' || ? ORDER BY id",
            (MSISDN,),
        )
        assert [(str(k), int(d), int(c)) for k, d, c in rows] == [
            ("req:d1", -30_000, 30_000),
            ("load:r1", 10_000, 20_000),
            ("load:r4", 0, 30_000),
            ("req:d2", -30_005, 5),
        ]
        _assert_chains(ledger_url)
        assert led.verify().ok


class _Custom(Ledger):
    """A subclass overriding a write method: its override must run."""

    calls = 0

    def deposit(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        return super().deposit(*args, **kwargs)


def test_submitted_jobs_match_the_methods(tmp_path: Path) -> None:
    """The jobs ``submit`` builds directly for the gateway's writes are the ones the methods
    build (same operation, arguments and hints); a subclass's override is still called."""
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", group_commit=False) as led:
        calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
            (
                led.deposit,
                ("+8613800138000", 5, "hall"),
                {"request_id": "r", "teller": "T", "hall": "H"},
            ),
            (led.deposit, (MSISDN, 5, "bank"), {"request_id": "r"}),
            (
                led.reserve_load,
                (MSISDN, ICCID.lower(), 5),
                {"card_balance": 0, "online_counter": 1, "key": "k", "channel": "pos"},
            ),
            (led.post_load, ("ld_1",), {}),
            (led.void_load, ("ld_1",), {}),
            (led.mark_in_doubt, ("ld_1",), {}),
            (
                led.purchase,
                (ICCID, "M1", 5),
                {"offline_counter": 3, "terminal_id": "T9", "at": None},
            ),
        ]
        for method, args, kwargs in calls:
            fast = led._capture(method, args, kwargs)
            captured: list[Job] = []
            token = _CAPTURE.set(captured)
            try:
                method(*args, **kwargs)
            finally:
                _CAPTURE.reset(token)
            slow = captured[0]
            assert (fast.op, fast.args, fast.hints) == (slow.op, slow.args, slow.hints)
            assert fast.hints.complete
        with pytest.raises(TypeError):
            led._capture(led.deposit, (MSISDN, 5), {"request_id": "r", "bogus": 1})
    with _Custom.connect(f"sqlite:///{tmp_path / 'c.db'}") as custom:
        custom.open_wallet(MSISDN, ID_NUMBER)
        custom.submit(custom.deposit, MSISDN, 5, "bank", request_id="s").result(timeout=30)
        assert _Custom.calls == 1
        assert custom.wallet(MSISDN).cash == 5
