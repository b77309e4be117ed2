"""Schema version 3: a load's credit note (``loads.credit``), the gateway's record of the CREDIT
FOR LOAD it sent, written with the reservation so that a proof of receipt can be verified
after a restart or at another gateway instance.

Pinned: the note is stored and comes back on every view of the load (reserve, replay,
pending, post, void, in doubt, after a reconnect); it is not part of the request (the same
key with another note is a replay giving the first note, also within one batch); a bad note
is refused with nothing posted; a version-2 database is upgraded in place, its loads with no
note; the async API passes it through.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from ledger import db as ledger_db
from ledger.asyncapi import AsyncLedger
from ledger.db import Database
from ledger.errors import InvalidRequest
from ledger.ops import CREDIT_MAX, load_id_for, request_hash
from ledger.schema import MIGRATIONS, SCHEMA_VERSION
from ledger.service import Ledger

from .conftest import SettableClock
from .helpers import ICCID, ID_NUMBER, MSISDN, funded_wallet, journal_size, raw_sql, run_one_batch

NOTE = '{"at":"260302100000","ob":0,"tid":"5445524d30303031","v":1}'


def _reserve(led: Ledger, key: str, credit: Any = None, amount: int = 1_000) -> Any:
    return led.reserve_load(
        MSISDN, ICCID, amount, card_balance=0, online_counter=1, key=key, credit=credit
    )


def _stored(url: str, load_id: str) -> Any:
    return raw_sql(url, "SELECT credit FROM loads WHERE id = ?", (load_id,))[0][0]


def test_credit_is_stored_and_on_every_view(ledger: Ledger, ledger_url: str) -> None:
    """The note comes back from reserve_load, pending_loads, mark_in_doubt, post_load and
    void_load, and is what the column holds; a load reserved without one has None."""
    funded_wallet(ledger, cash=100_000)
    first = _reserve(ledger, "mo:1", NOTE)
    plain = _reserve(ledger, "mo:2")
    third = _reserve(ledger, "mo:3", "é 中文 ✓")
    assert (first.credit, plain.credit, third.credit) == (NOTE, None, "é 中文 ✓")
    assert _stored(ledger_url, first.id) == NOTE
    assert _stored(ledger_url, plain.id) is None
    assert _stored(ledger_url, third.id) == "é 中文 ✓"
    assert {ld.id: ld.credit for ld in ledger.pending_loads(ICCID)} == {
        first.id: NOTE,
        plain.id: None,
        third.id: "é 中文 ✓",
    }
    assert {ld.id: ld.credit for ld in ledger.pending_loads()} == {
        first.id: NOTE,
        plain.id: None,
        third.id: "é 中文 ✓",
    }
    doubtful = ledger.mark_in_doubt(first.id)
    assert (doubtful.state, doubtful.credit) == ("in_doubt", NOTE)
    posted = ledger.post_load(first.id)
    assert (posted.state, posted.credit) == ("posted", NOTE)
    assert ledger.post_load(first.id).credit == NOTE  # idempotent post
    voided = ledger.void_load(third.id)
    assert (voided.state, voided.credit) == ("voided", "é 中文 ✓")
    assert ledger.void_load(plain.id).credit is None
    assert ledger.verify().ok


def test_credit_survives_a_reconnect(ledger_url: str, ledger_clock: SettableClock) -> None:
    """Another ledger on the same database (a restarted or another gateway) reads the note."""
    with Ledger.connect(ledger_url, clock=ledger_clock) as led:
        funded_wallet(led, cash=10_000)
        load = _reserve(led, "mo:1", NOTE)
    with Ledger.connect(ledger_url, clock=ledger_clock) as other:
        assert [ld.credit for ld in other.pending_loads(ICCID)] == [NOTE]
        assert _reserve(other, "mo:1", "another").credit == NOTE  # replay
        assert other.post_load(load.id).credit == NOTE


def test_replay_with_another_credit_returns_the_first(ledger: Ledger, ledger_url: str) -> None:
    """The note is not part of the request: the same key and request with another note (or
    none) is a replay, answered with the first load and its note; nothing more is posted."""
    funded_wallet(ledger, cash=10_000)
    first = _reserve(ledger, "mo:1", NOTE)
    size = journal_size(ledger)
    for other in ("another note", None, ""):
        again = _reserve(ledger, "mo:1", other)
        assert again == first
    assert journal_size(ledger) == size
    assert _stored(ledger_url, first.id) == NOTE
    ledger.post_load(first.id)
    assert _reserve(ledger, "mo:1", "later").credit == NOTE  # first result, whatever happened
    assert ledger.wallet(MSISDN).cash == 9_000


def test_replay_in_the_same_batch_keeps_the_first_credit(
    ledger_url: str, ledger_clock: SettableClock
) -> None:
    """Two requests with one key in one batch: the second is a replay of the first (made in
    this very transaction) and returns the first note; one load, one reserve transfer."""
    with Ledger.connect(ledger_url, clock=ledger_clock, group_commit=False) as led:
        funded_wallet(led, cash=10_000)
        kwargs = {"card_balance": 0, "online_counter": 1, "key": "mo:1"}
        calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
            (led.reserve_load, (MSISDN, ICCID, 1_000), {**kwargs, "credit": "first"}),
            (led.reserve_load, (MSISDN, ICCID, 1_000), {**kwargs, "credit": "second"}),
        ]
        jobs = run_one_batch(led, calls)
        for job in jobs:
            job.finish()
        assert [j.error for j in jobs] == [None, None]
        assert [j.result.credit for j in jobs] == ["first", "first"]
        assert _stored(ledger_url, load_id_for("mo:1")) == "first"
        assert [ld.credit for ld in led.pending_loads()] == ["first"]
        assert led.wallet(MSISDN).cash == 9_000
        assert led.verify().ok


@pytest.mark.parametrize(
    "credit",
    [
        "x" * (CREDIT_MAX + 1),
        b"bytes",
        42,
        ["a list"],
        "nul\x00inside",
        "lone \ud800 surrogate",
    ],
    ids=["too-long", "bytes", "int", "list", "nul", "surrogate"],
)
def test_bad_credit_is_refused_with_nothing_posted(
    ledger: Ledger, ledger_url: str, credit: Any
) -> None:
    """A note that is not None or a storable str of at most 1024 characters is an
    InvalidRequest: no load, no transfer, no change to the wallet; the key stays free."""
    funded_wallet(ledger, cash=10_000)
    before, size = ledger.wallet(MSISDN), journal_size(ledger)
    with pytest.raises(InvalidRequest, match="credit"):
        _reserve(ledger, "mo:1", credit)
    assert ledger.wallet(MSISDN) == before
    assert journal_size(ledger) == size
    assert ledger.pending_loads() == []
    assert raw_sql(ledger_url, "SELECT COUNT(*) FROM loads") == [(0,)]
    assert _reserve(ledger, "mo:1", "fine").credit == "fine"  # nothing was stored for the key
    assert ledger.verify().ok


def test_credit_of_the_longest_length_is_kept(ledger: Ledger, ledger_url: str) -> None:
    """Exactly 1024 characters (multi-byte ones too) is accepted and kept whole."""
    funded_wallet(ledger, cash=10_000)
    longest = ("中" * (CREDIT_MAX - 1)) + "a"
    load = _reserve(ledger, "mo:1", longest)
    assert load.credit == longest
    assert _stored(ledger_url, load.id) == longest
    assert ledger.pending_loads()[0].credit == longest


def test_bad_credit_in_a_batch_leaves_the_others(
    ledger_url: str, ledger_clock: SettableClock
) -> None:
    """In one batch, the request with a bad note is refused alone; the others commit."""
    with Ledger.connect(ledger_url, clock=ledger_clock, group_commit=False) as led:
        funded_wallet(led, cash=10_000)
        base = {"card_balance": 0, "online_counter": 1}
        calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
            (led.reserve_load, (MSISDN, ICCID, 1_000), {**base, "key": "a", "credit": "A"}),
            (led.reserve_load, (MSISDN, ICCID, 1_000), {**base, "key": "b", "credit": "\x00"}),
            (led.reserve_load, (MSISDN, ICCID, 1_000), {**base, "key": "c", "credit": None}),
        ]
        jobs = run_one_batch(led, calls)
        for job in jobs:
            job.finish()
        assert [type(j.error).__name__ if j.error else None for j in jobs] == [
            None,
            "InvalidRequest",
            None,
        ]
        assert sorted((ld.key, ld.credit) for ld in led.pending_loads()) == [
            ("a", "A"),
            ("c", None),
        ]
        assert led.verify().ok


def _version_2_database(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database migrated to version 2 only, holding one funded wallet with a card and one
    reserved load (rows as a version-2 ledger writes them, chains included); the load's id."""
    with monkeypatch.context() as patch:
        patch.setattr(ledger_db, "MIGRATIONS", MIGRATIONS[:2])
        db = Database(url)
        try:
            assert db.migrate() == 2
        finally:
            db.close()
    columns = {
        str(r[0])
        for r in raw_sql(
            url,
            "SELECT name FROM pragma_table_info('loads')"
            if url.startswith("sqlite")
            else "SELECT column_name FROM information_schema.columns WHERE table_name = 'loads'",
        )
    }
    assert "credit" not in columns
    stamp = "2026-03-02T02:00:00.000000+00:00"
    cash, purse = f"cash:{MSISDN}", f"card:{ICCID}"
    for acc, kind, balance, last in ((cash, "cash", 4_000, 2), (purse, "card", 0, None)):
        raw_sql(
            url,
            "INSERT INTO accounts (id, kind, currency, balance, created_at, last_transfer) "
            "VALUES (?, ?, 'CNY', ?, ?, ?)",
            (acc, kind, balance, stamp, last),
        )
    raw_sql(url, "UPDATE accounts SET balance = -5000, last_transfer = 1 WHERE id = 'bank'")
    raw_sql(url, "UPDATE accounts SET balance = 1000, last_transfer = 2 WHERE id = 'in_flight'")
    raw_sql(
        url,
        "INSERT INTO wallets (id, msisdn, id_number, state, cash_account, card_iccid, "
        "topup_day, topup_count, created_at) VALUES (?, ?, ?, 'open', ?, ?, '2026-03-02', 1, ?)",
        (MSISDN, MSISDN, ID_NUMBER, cash, ICCID, stamp),
    )
    raw_sql(
        url,
        "INSERT INTO cards (iccid, wallet_id, msisdn, state, purse_account, in_flight, "
        "enabled_at) VALUES (?, ?, ?, 'active', ?, 1000, ?)",
        (ICCID, MSISDN, MSISDN, purse, stamp),
    )
    load_id = load_id_for("mo:1")
    rhash = request_hash("reserve_load", MSISDN, ICCID, 1_000, 0, 1, "stk")
    # id, code, amount, debit, credit, key, request hash, balances after, chain links
    transfers = (
        (1, "deposit", 5_000, "bank", cash, "req:fund", "h", -5_000, 5_000, None, None),
        (2, "topup_reserve", 1_000, cash, "in_flight", "load:mo:1", rhash, 4_000, 1_000, 1, None),
    )
    for row in transfers:
        raw_sql(
            url,
            "INSERT INTO transfers (id, code, amount, debit_account, credit_account, currency, "
            "key, request_hash, debit_balance, credit_balance, debit_prev, credit_prev, "
            "context, created_at, occurred_at) "
            "VALUES (?, ?, ?, ?, ?, 'CNY', ?, ?, ?, ?, ?, ?, '{}', ?, ?)",
            (*row, stamp, stamp),
        )
    if url.startswith("postgresql"):  # ids were given: move the identity past them
        raw_sql(url, "SELECT setval(pg_get_serial_sequence('transfers', 'id'), 2)")
    raw_sql(
        url,
        "INSERT INTO loads (id, key, wallet_id, msisdn, iccid, amount, state, online_counter, "
        "channel, day, created_at, updated_at) "
        "VALUES (?, 'mo:1', ?, ?, ?, 1000, 'reserved', 1, 'stk', '2026-03-02', ?, ?)",
        (load_id, MSISDN, MSISDN, ICCID, stamp, stamp),
    )
    return load_id


def test_migration_3_adds_the_column_and_keeps_the_loads(
    ledger_url: str, ledger_clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-2 database with a reserved load is upgraded in place on connect: version 3
    recorded, the load kept with no note, settled as before; new loads carry their note."""
    load_id = _version_2_database(ledger_url, monkeypatch)
    with Ledger.connect(ledger_url, clock=ledger_clock) as led:
        versions = raw_sql(ledger_url, "SELECT version FROM schema_version ORDER BY version")
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert MIGRATIONS[2].version == 3
        assert led.verify().ok, led.verify().problems
        [old] = led.pending_loads(ICCID)
        assert (old.id, old.state, old.amount, old.credit) == (load_id, "reserved", 1_000, None)
        assert _stored(ledger_url, load_id) is None
        # a replay of the old reservation is still answered from its row
        replay = _reserve(led, "mo:1", "ignored")
        assert (replay.id, replay.credit) == (load_id, None)
        new = _reserve(led, "mo:2", NOTE)
        assert new.credit == NOTE
        assert led.post_load(load_id).credit is None
        assert led.post_load(new.id).credit == NOTE
        assert led.wallet(MSISDN).card_balance == 2_000
        assert led.verify().ok
    with Ledger.connect(ledger_url, clock=ledger_clock):  # again: nothing re-applied
        count = raw_sql(ledger_url, "SELECT COUNT(*) FROM schema_version")
        assert count == [(SCHEMA_VERSION,)]


@pytest_twisted.ensureDeferred
async def test_async_reserve_load_passes_the_credit(ledger: Ledger) -> None:
    """AsyncLedger.reserve_load takes the note and gives it back like the synchronous API."""
    from twisted.internet import reactor

    funded_wallet(ledger, cash=10_000)
    alg = AsyncLedger(ledger, reactor)
    try:
        load = await alg.reserve_load(
            MSISDN, ICCID, 1_000, card_balance=0, online_counter=1, key="mo:1", credit=NOTE
        )
        assert load.credit == NOTE
        assert [ld.credit for ld in await alg.pending_loads(ICCID)] == [NOTE]
        assert (await alg.post_load(load.id)).credit == NOTE
    finally:
        alg.stop()
