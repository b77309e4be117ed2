"""Several processes hammer one card and one cash account on PostgreSQL (issue 3, acceptance:
"the final balances equal the model's and no limit is exceeded").

Four worker processes (multiprocessing, spawn; half with group commit, half without) run a
seeded mix against one wallet: reserve loads (cash -> in flight, all reporting the same card
balance), post or void pending loads picked from ``pending_loads`` (so workers race to settle
the same load), mark loads in doubt, purchases from the purse (with replays of other workers'
POS records, same card and offline counter), and deposits (with replays of other workers'
request ids). A fifth process samples the wallet meanwhile. Each worker reports which calls
succeeded; the test rebuilds the expected balances from those alone and compares.

Limits are the product's, except a daily count raised to 16 (voided loads do not count, so
many loads run and the count still bites); the reported card balance of 200 CNY makes the card
cap (1000 CNY) bite on loads in flight.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.errors import LoadStateError, Refused
from ledger.limits import Limits
from ledger.service import Ledger

pytestmark = pytest.mark.postgres

MSISDN = "8613800138000"
ICCID = "89860012345678901234"
MERCHANT = "M-HAMMER"
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: one local day throughout
LIMITS = Limits(daily_topups=16)
REPORTED = 20_000  # every load reports a card balance of 200.00 CNY
INITIAL_CASH = 300_000
WORKERS = 4
OPS = 70
COUNTER_BASE = 10_000  # counter of worker w's op i: w * COUNTER_BASE + i


def _clock() -> datetime:
    return NOW


def _purchase_amount(counter: int) -> int:
    """The amount of the POS record with this offline counter (same for every replayer)."""
    return random.Random(counter).randrange(100, 30_000)


def _deposit_amount(counter: int) -> int:
    return random.Random(-counter).randrange(100, 20_000)


def _worker(url: str, wid: int, start: float) -> dict[str, Any]:
    """One hammering process; returns the calls that succeeded and any unexpected error."""
    rng = random.Random(wid)
    led = Ledger.connect(url, limits=LIMITS, clock=_clock, group_commit=wid % 2 == 0)
    out: dict[str, Any] = {
        "reserved": [],  # (load id, amount)
        "posted": [],  # load ids
        "voided": [],
        "purchases": [],  # (counter, transfer id)
        "deposits": [],  # (counter, transfer id)
        "refused": Counter(),
        "unexpected": [],
    }
    time.sleep(max(0.0, start - time.time()))
    try:
        for i in range(OPS):
            counter = wid * COUNTER_BASE + i
            r = rng.random()
            try:
                if r < 0.35:
                    amount = rng.choice((5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 60_000))
                    load = led.reserve_load(
                        MSISDN,
                        ICCID,
                        amount,
                        card_balance=REPORTED,
                        online_counter=counter,
                        key=f"mo:{ICCID}:{counter}",
                    )
                    out["reserved"].append((load.id, load.amount))
                elif r < 0.60:
                    pending = led.pending_loads(ICCID)
                    if pending:
                        load = rng.choice(pending)
                        choice = rng.random()
                        if choice < 0.55:
                            assert led.post_load(load.id).state == "posted"
                            out["posted"].append(load.id)
                        elif choice < 0.9:
                            assert led.void_load(load.id).state == "voided"
                            out["voided"].append(load.id)
                        else:
                            assert led.mark_in_doubt(load.id).state == "in_doubt"
                elif r < 0.85:
                    # a fresh POS record, or another worker's record replayed
                    if rng.random() < 0.3:
                        counter = rng.randrange(WORKERS) * COUNTER_BASE + rng.randrange(OPS)
                    t = led.purchase(
                        ICCID, MERCHANT, _purchase_amount(counter), offline_counter=counter
                    )
                    out["purchases"].append((counter, t.id))
                else:
                    if rng.random() < 0.3:
                        counter = rng.randrange(WORKERS) * COUNTER_BASE + rng.randrange(OPS)
                    t = led.deposit(
                        MSISDN, _deposit_amount(counter), "bank", request_id=f"dep:{counter}"
                    )
                    out["deposits"].append((counter, t.id))
            except Refused as exc:
                out["refused"][exc.rule] += 1
            except LoadStateError:
                out["refused"]["load_state"] += 1  # lost a race to settle the same load
            except Exception as exc:
                out["unexpected"].append(f"op {i}: {type(exc).__name__}: {exc}")
    finally:
        led.close()
    out["refused"] = dict(out["refused"])
    return out


def _monitor(url: str, start: float, seconds: float) -> dict[str, Any]:
    """Samples the wallet while the workers run; returns any limit seen broken."""
    led = Ledger.connect(url, limits=LIMITS, clock=_clock, group_commit=False)
    seen: list[str] = []
    samples = 0
    time.sleep(max(0.0, start - time.time()))
    try:
        deadline = time.time() + seconds
        while time.time() < deadline:
            w = led.wallet(MSISDN)
            samples += 1
            if w.in_flight + REPORTED > LIMITS.card_balance:
                seen.append(f"in flight {w.in_flight} over the card cap")
            if w.topups_today > LIMITS.daily_topups:
                seen.append(f"{w.topups_today} top-ups today")
            if w.cash < 0 or w.card_balance < 0 or w.in_flight < 0:
                seen.append(f"negative balance {w}")
            time.sleep(0.005)
    finally:
        led.close()
    return {"samples": samples, "violations": seen}


def test_processes_hammering_one_card_and_one_cash_account(pg_url: str) -> None:
    """Final balances equal the model built from the calls that succeeded; no settled load
    was both posted and voided; no limit is ever exceeded (final state and live samples);
    every refusal is a named rule; verify() passes."""
    led = Ledger.connect(pg_url, limits=LIMITS, clock=_clock)
    try:
        led.open_wallet(MSISDN, "110101199003070000", request_id="open")
        led.deposit(MSISDN, INITIAL_CASH, "bank", request_id="seed")
        led.enable_card(MSISDN, ICCID, request_id="enable")
        led.open_merchant(MERCHANT, "Hammer canteen")
    finally:
        led.close()

    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 4.0  # every process imported and connected before the gun
    with ctx.Pool(WORKERS + 1) as pool:
        monitor = pool.apply_async(_monitor, (pg_url, start, 6.0))
        runs = pool.starmap_async(_worker, [(pg_url, w, start) for w in range(WORKERS)])
        results: list[dict[str, Any]] = runs.get(timeout=90)
        sampled: dict[str, Any] = monitor.get(timeout=90)

    assert [r["unexpected"] for r in results] == [[]] * WORKERS
    reserved = {lid: amount for r in results for lid, amount in r["reserved"]}
    posted = {lid for r in results for lid in r["posted"]}
    voided = {lid for r in results for lid in r["voided"]}
    assert not posted & voided, "a load was both posted and voided"
    assert posted | voided <= set(reserved)

    purchases: dict[int, set[int]] = {}
    for r in results:
        for counter, tid in r["purchases"]:
            purchases.setdefault(counter, set()).add(tid)
    assert all(len(ids) == 1 for ids in purchases.values()), "a POS record posted twice"
    deposits: dict[int, set[int]] = {}
    for r in results:
        for counter, tid in r["deposits"]:
            deposits.setdefault(counter, set()).add(tid)
    assert all(len(ids) == 1 for ids in deposits.values()), "a request id posted twice"

    spent = sum(_purchase_amount(c) for c in purchases)
    loaded = sum(reserved[lid] for lid in posted)
    returned = sum(reserved[lid] for lid in voided)
    expected_cash = (
        INITIAL_CASH + sum(_deposit_amount(c) for c in deposits) - sum(reserved.values()) + returned
    )
    expected_in_flight = sum(reserved.values()) - loaded - returned

    led = Ledger.connect(pg_url, limits=LIMITS, clock=_clock)
    try:
        wallet = led.wallet(MSISDN)
        assert wallet.cash == expected_cash
        assert wallet.in_flight == expected_in_flight
        assert wallet.card_balance == loaded - spent
        assert wallet.topups_today == len(reserved) - len(voided)
        assert {p.id for p in led.pending_loads(ICCID)} == set(reserved) - posted - voided
        merchant = led.merchant_day(MERCHANT, LIMITS.local_day(NOW))
        assert sorted(e.amount for e in merchant) == sorted(_purchase_amount(c) for c in purchases)
        # the limits held
        assert wallet.topups_today <= LIMITS.daily_topups
        assert wallet.in_flight + REPORTED <= LIMITS.card_balance
        assert min(wallet.cash, wallet.card_balance, wallet.in_flight) >= 0
        assert sampled["samples"] > 10 and sampled["violations"] == []
        report = led.verify()
        assert report.ok, report.problems
        assert report.total == 0
    finally:
        led.close()

    # the run was a contest: the limits actually bit, and settlements actually raced
    refused: Counter[str] = Counter()
    for r in results:
        refused.update(r["refused"])
    assert refused["card_balance_limit"] > 0, refused
    assert refused["daily_topup_count"] > 0, refused
    assert refused["load_state"] > 0, refused  # workers raced to settle the same load
    assert refused["insufficient_funds"] > 0, refused
    assert refused["single_topup_limit"] > 0, refused
    assert len(posted) > 5 and len(purchases) > 5
