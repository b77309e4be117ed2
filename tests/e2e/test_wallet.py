"""The wallet end to end over loopback TCP (issue 5, Acceptance, second item): virtual phones
drive their STK menus, their secured MO cross the SMSC simulator and the real gateway
(stkpay/gateway.py) on the reactor, the CREDIT FOR LOAD goes back to the card by OTA and its
PoR returns; on SQLite with in-process state and on PostgreSQL with Redis (conftest.py).

Pinned, each judged on the SMS the subscriber receives and on the ledger: the happy top-up,
balance and last 10; 500 per top-up; 1000 per card on the balance the card reports plus what
is in flight; 5 top-ups a local day; no overdraft of cash; a duplicated MO posts once and is
answered with the stored first reply; a used counter with other content and an old counter
are replays; a flipped octet fails the CC; three wrong PINs lock until ``stkpay wallet
unlock-pin``; a lost PoR is settled by the card's online counter at its next contact; a lost
CREDIT is voided at the next top-up; the SMSC redelivering an MO the gateway refused
(ESME_RX_T_APPN) is handled once. After each, :meth:`Rig.audit` (conftest.py) checks the
ledger verifies, nothing is posted twice, and the phones' purses equal the card mirrors.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import threads

from handlers.app import Effect
from handlers.state import StateUnavailable
from ledger.service import Ledger
from smsc.reassembly import Message
from stk_menus import wallet_mo
from stk_menus.replies import render
from tests.e2e.conftest import (
    CAPPED,
    FIRST,
    LAST10,
    PIN,
    PRELOAD,
    SECOND,
    SHORT_CODE,
    TOPUP,
    WAIT,
    WRONG_PIN,
    Mo,
    Rig,
    ledger_config,
    stkpay,
)
from tests.smsc.test_esme_tcp import until


def ok(amount: int, card: int, cash: int) -> str:
    return render("topup_ok", "zh", amount=amount, card_balance=card, cash_balance=cash)


def balance(card: int, cash: int) -> str:
    return render("balance", "zh", card_balance=card, cash_balance=cash)


def forged(rig: Rig, msisdn: str, counter: int, action: wallet_mo.WalletMo) -> Mo:
    """A packet secured with the card's own keys at a chosen counter (a replay attempt)."""
    parts = rig.phone(msisdn).applet.secured_user_data(action, counter=counter, reference=1)
    model = rig.secured_mo(msisdn)[-1]
    return Mo(msisdn, SHORT_CODE, parts, model.protocol_id, model.data_coding)


@pytest_twisted.ensureDeferred
async def test_topup_then_balance_and_last10(rig: Rig) -> None:
    """STK top-up of 100 yuan: the confirmation carries the new balances, the card holds 100,
    the ledger shows it posted; the balance and last-10 answers follow from the ledger."""
    assert await rig.topup_reply(FIRST, 100) == [ok(10_000, 10_000, 190_000)]
    assert rig.purse(FIRST) == 10_000
    view = rig.ledger.wallet(FIRST)
    assert (view.card_balance, view.cash, view.in_flight, view.topups_today) == (
        10_000,
        190_000,
        0,
        1,
    )
    assert rig.ledger.pending_loads() == []
    assert len(rig.phone(FIRST).outcomes) == 1  # one CREDIT FOR LOAD reached the card
    assert await rig.query(FIRST) == [balance(10_000, 190_000)]
    (last,) = await rig.query(FIRST, LAST10)
    assert last.startswith("明细：") and "0520充100.00" in last and "0520存2000.00" in last


@pytest_twisted.ensureDeferred
async def test_single_topup_above_500_is_refused(rig: Rig) -> None:
    """600 yuan: refused with the rule's figures, nothing posted, no OTA sent; 500 passes."""
    journal = rig.journal()
    assert await rig.topup_reply(FIRST, 600) == [
        render("refused_topup_limit", "zh", amount=60_000, limit=50_000)
    ]
    assert rig.journal() == journal
    assert len(rig.phone(FIRST).outcomes) == 0 and rig.purse(FIRST) == 0
    assert await rig.topup_reply(FIRST, 500) == [ok(50_000, 50_000, 150_000)]


@pytest_twisted.ensureDeferred
async def test_card_cap_on_the_reported_balance_plus_in_flight(rig: Rig) -> None:
    """The card reports 900 yuan the mirror never saw: +200 is refused naming 900; with 50
    in flight elsewhere (an operator load the card has not reached), +100 is refused naming
    950; once that load is voided, +100 (exactly 1000 on the card) passes."""
    iccid = rig.iccid(CAPPED)
    assert await rig.topup_reply(CAPPED, 200) == [
        render("refused_card_cap", "zh", amount=20_000, card_balance=90_000, cap=100_000)
    ]
    elsewhere = rig.ledger.reserve_load(
        CAPPED, iccid, 5_000, card_balance=0, online_counter=1_000, key=f"{iccid}:elsewhere"
    )
    assert rig.ledger.wallet(CAPPED).in_flight == 5_000
    assert await rig.topup_reply(CAPPED, 100) == [
        render("refused_card_cap", "zh", amount=10_000, card_balance=95_000, cap=100_000)
    ]
    assert rig.ledger.void_load(elsewhere.id).state == "voided"
    assert await rig.topup_reply(CAPPED, 100) == [ok(10_000, 10_000, 190_000)]
    assert rig.purse(CAPPED) == PRELOAD[CAPPED] + 10_000 == 100_000


@pytest_twisted.ensureDeferred
async def test_sixth_topup_of_the_day_is_refused(rig: Rig) -> None:
    """Five top-ups pass, the sixth of the local day is refused and posts nothing; the next
    day (the gateway's clock moved) it passes."""
    for n in range(1, 6):
        assert await rig.topup_reply(FIRST, 10) == [ok(1_000, n * 1_000, 200_000 - n * 1_000)]
    journal = rig.journal()
    assert await rig.topup_reply(FIRST, 10) == [render("refused_daily_count", "zh", max_count=5)]
    assert rig.journal() == journal
    rig.clock.advance(86_400)
    assert await rig.topup_reply(FIRST, 10) == [ok(1_000, 6_000, 194_000)]
    assert rig.purse(FIRST) == 6_000


@pytest_twisted.ensureDeferred
async def test_no_overdraft_of_the_cash_account(rig: Rig) -> None:
    """50 yuan of cash: 100 is refused naming the cash, 50 passes, then 1 more is refused."""
    assert await rig.topup_reply(SECOND, 100) == [
        render("refused_insufficient_cash", "zh", amount=10_000, cash_balance=5_000)
    ]
    assert await rig.topup_reply(SECOND, 50) == [ok(5_000, 5_000, 0)]
    assert await rig.topup_reply(SECOND, 1) == [
        render("refused_insufficient_cash", "zh", amount=100, cash_balance=0)
    ]
    assert rig.ledger.wallet(SECOND).cash == 0


@pytest_twisted.ensureDeferred
async def test_duplicated_topup_mo_posts_once(rig: Rig) -> None:
    """The SMSC delivers the top-up MO twice (same user data again through submit_mo, right
    behind the first, and once more after the post): one CREDIT reaches the card, one load is
    posted, the duplicates get the stored first reply (none: the confirmation rides on the PoR)."""
    rig.topup(FIRST, 100)
    await until(lambda: len(rig.secured_mo(FIRST)) == 1, WAIT, "the top-up MO")
    (first,) = rig.secured_mo(FIRST)
    rig.network.submit(first)
    assert await rig.wait_sms(FIRST, 1) == [ok(10_000, 10_000, 190_000)]
    journal = rig.journal()
    rig.network.submit(first)
    assert await rig.query(FIRST) == [balance(10_000, 190_000)]  # nothing else came first
    assert rig.journal() == journal
    assert len(rig.phone(FIRST).outcomes) == 1  # one CREDIT FOR LOAD
    assert rig.purse(FIRST) == 10_000 and len(rig.posts(FIRST)) == 1
    assert rig.gateway is not None and rig.gateway.mo_accepted >= 5


@pytest_twisted.ensureDeferred
async def test_duplicated_query_gets_the_stored_first_reply(rig: Rig) -> None:
    """A balance MO delivered again after the balance changed is answered with the first
    reply (from the dedup cache), not recomputed; a new query sees the new balance."""
    assert await rig.query(FIRST) == [balance(0, 200_000)]
    mo = rig.secured_mo(FIRST)[-1]
    rig.ledger.deposit(FIRST, 100, "bank", request_id="e2e-later")
    rig.deposited[FIRST] += 100
    assert await rig.reply(FIRST, lambda: rig.network.submit(mo)) == [balance(0, 200_000)]
    assert await rig.query(FIRST) == [balance(0, 200_100)]


@pytest_twisted.ensureDeferred
async def test_replayed_counter_with_other_content_is_refused(rig: Rig) -> None:
    """A used counter with other octets, and an older counter, are replays: refused, nothing
    run; the phone's own next MO is still served."""
    await rig.query(FIRST)
    used = rig.phone(FIRST).applet.mo_counter
    journal = rig.journal()
    replay = forged(rig, FIRST, used, wallet_mo.Last10())
    assert await rig.reply(FIRST, lambda: rig.network.submit(replay)) == [
        render("refused_replay", "zh")
    ]
    older = forged(rig, FIRST, max(used - 1, 0), wallet_mo.Balance())
    assert await rig.reply(FIRST, lambda: rig.network.submit(older)) == [
        render("refused_replay", "zh")
    ]
    assert rig.journal() == journal
    assert await rig.query(FIRST) == [balance(0, 200_000)]


@pytest_twisted.ensureDeferred
async def test_tampered_packet_is_refused(rig: Rig) -> None:
    """One flipped octet in the ciphered top-up MO fails the CC: refused, nothing reserved,
    no OTA; the card's next genuine top-up passes."""
    phone = rig.phone(FIRST)
    phone.select(TOPUP)
    phone.input("100")
    phone.input(PIN)
    (out,) = phone.outbox()  # kept from the network: the test sends it, altered
    parts = [bytearray(p) for p in out.user_data]
    parts[-1][-3] ^= 0x01
    tampered = Mo(
        FIRST, out.destination, tuple(bytes(p) for p in parts), out.protocol_id, out.data_coding
    )
    journal = rig.journal()
    assert await rig.reply(FIRST, lambda: rig.network.submit(tampered)) == [
        render("refused_bad_mac", "zh")
    ]
    assert rig.journal() == journal and rig.ledger.pending_loads() == []
    assert len(phone.outcomes) == 0
    assert await rig.topup_reply(FIRST, 100) == [ok(10_000, 10_000, 190_000)]


def unlock_pin_cli(tmp: Path, ledger_url: str, msisdn: str) -> subprocess.CompletedProcess[str]:
    """``stkpay wallet unlock-pin --msisdn`` as the business hall runs it (blocking)."""
    config = ledger_config(tmp, ledger_url, "hall.toml")
    return stkpay(tmp, config, "wallet", "unlock-pin", "--msisdn", msisdn)


@pytest_twisted.ensureDeferred
async def test_wrong_pin_three_times_locks_until_unlocked(rig: Rig) -> None:
    """Wrong PINs say the attempts left; the third locks; the right PIN is then refused too,
    until ``stkpay wallet unlock-pin``; nothing posted meanwhile."""
    journal = rig.journal()
    replies = [await rig.topup_reply(FIRST, 10, WRONG_PIN) for _ in range(3)]
    replies.append(await rig.topup_reply(FIRST, 10))
    assert replies == [
        [render("refused_wrong_pin", "zh", attempts_left=2)],
        [render("refused_wrong_pin", "zh", attempts_left=1)],
        [render("refused_pin_locked", "zh")],
        [render("refused_pin_locked", "zh")],
    ]
    assert rig.journal() == journal and len(rig.phone(FIRST).outcomes) == 0
    result = await threads.deferToThread(unlock_pin_cli, rig.tmp, rig.backend.ledger_url, FIRST)
    assert result.returncode == 0, result.stderr
    assert "unlocked" in result.stdout and PIN not in result.stdout + result.stderr
    assert await rig.topup_reply(FIRST, 10) == [ok(1_000, 1_000, 199_000)]


@pytest_twisted.ensureDeferred
async def test_por_lost_is_settled_at_the_next_contact(rig: Rig) -> None:
    """The card loads but its PoR is lost in the network: the load stays reserved (in flight,
    no SMS); the card's next MO (a balance query, its online counter past the load's) posts it
    and the confirmation comes before the balance; the PoR arriving late changes nothing."""
    rig.network.hold_por.add(FIRST)
    rig.topup(FIRST, 100)
    await until(lambda: len(rig.network.held_por) == 1, WAIT, "the PoR, held back")
    assert rig.purse(FIRST) == 10_000 and rig.sms(FIRST) == []
    (load,) = rig.ledger.pending_loads()
    assert load.state == "reserved" and load.amount == 10_000
    view = rig.ledger.wallet(FIRST)
    assert (view.cash, view.in_flight, view.card_balance) == (190_000, 10_000, 0)
    rig.network.hold_por.clear()
    late, rig.network.held_por = rig.network.held_por, []
    assert await rig.query(FIRST, expect=2) == [
        ok(10_000, 10_000, 190_000),
        balance(10_000, 190_000),
    ]
    assert rig.ledger.pending_loads() == []
    journal = rig.journal()
    for mo in late:
        rig.network.submit(mo)
    assert await rig.query(FIRST) == [balance(10_000, 190_000)]
    assert rig.journal() == journal


@pytest_twisted.ensureDeferred
async def test_credit_lost_is_voided_at_the_next_topup(rig: Rig) -> None:
    """The CREDIT FOR LOAD never reaches the card: the cash stays reserved; the next top-up's
    INITIALIZE shows the counter never moved, so the old load is voided (cash back, told)
    before the new one is judged."""
    rig.network.hold_mt.add(FIRST)
    rig.topup(FIRST, 100)
    await until(lambda: len(rig.network.held_mt) == 1, WAIT, "the CREDIT, held back")
    assert rig.ledger.wallet(FIRST).in_flight == 10_000
    rig.network.hold_mt.clear()
    rig.network.held_mt.clear()  # lost
    assert await rig.topup_reply(FIRST, 50, expect=2) == [
        render("topup_failed", "zh"),
        ok(5_000, 5_000, 195_000),
    ]
    assert rig.purse(FIRST) == 5_000


@pytest_twisted.ensureDeferred
async def test_smsc_redelivers_an_mo_the_gateway_refused(rig: Rig) -> None:
    """The gateway answers ESME_RX_T_APPN and the simulator delivers the MO again: (1) the
    app failed before doing anything (a database blip): the redelivery tops up once; (2) the
    app ran and stored its reply but the acknowledgement failed: the redelivery is answered
    from the dedup cache (the balance at the first run, not the balance after a deposit made
    in between); one SMS each."""
    gw = rig.gateway
    assert gw is not None and rig.sim is not None
    real = gw.app.on_message
    url = rig.backend.ledger_url
    plan: list[str] = ["fail-before"]

    def flaky(message: Message) -> list[Effect]:
        step = plan.pop(0) if plan else "pass"
        if step == "fail-before":
            raise RuntimeError("database blip")
        effects = real(message)
        if step == "fail-after":
            with Ledger.connect(url, group_commit=False) as ledger:  # this thread's own
                ledger.deposit(FIRST, 100, "bank", request_id="e2e-between")
            raise RuntimeError("acknowledgement lost")
        return effects

    gw.app.on_message = flaky  # type: ignore[method-assign,assignment]
    refused = gw.mo_refused
    assert await rig.topup_reply(FIRST, 100) == [ok(10_000, 10_000, 190_000)]
    assert gw.mo_refused == refused + 1
    assert len(rig.phone(FIRST).outcomes) == 1 and len(rig.posts(FIRST)) == 1
    plan.append("fail-after")
    assert await rig.query(FIRST) == [balance(10_000, 190_000)]
    rig.deposited[FIRST] += 100
    assert gw.mo_refused == refused + 2
    assert rig.sim.simulator.stats()["totals"]["redeliveries"] >= 2
    assert await rig.query(FIRST) == [balance(10_000, 190_100)]
    assert rig.sms(FIRST)[1:] == [balance(10_000, 190_000), balance(10_000, 190_100)]


class _ForgetfulState:
    """The gateway's state store whose next ``remember_reply`` fails once (a Redis blip)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failures = 1

    def remember_reply(self, key: str, reply: bytes, ttl: float) -> None:
        if self.failures:
            self.failures -= 1
            raise StateUnavailable("the state store did not answer")
        self.inner.remember_reply(key, reply, ttl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest_twisted.ensureDeferred
async def test_state_store_blip_after_the_reserve_does_not_lose_the_topup(rig: Rig) -> None:
    """The dedup cache is losable: failing to write it must not cost the subscriber the
    top-up. Expected: the CREDIT goes out, the card loads, the confirmation arrives."""
    gw = rig.gateway
    assert gw is not None
    gw.app.state = _ForgetfulState(gw.app.state)
    rig.topup(FIRST, 100)
    await until(
        lambda: ok(10_000, 10_000, 190_000) in rig.sms(FIRST), 5.0, "the top-up confirmation"
    )
    assert rig.purse(FIRST) == 10_000 and rig.ledger.pending_loads() == []
