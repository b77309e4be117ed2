"""The wallet application end to end in process (handlers/app.py): real virtual phones and
cards (simcard/) drive their STK menus, their secured MO go through WalletApp, the CREDIT FOR
LOAD it sends is delivered to the card, the card's PoR comes back; the ledger on SQLite in
tmp_path is verified after every scenario."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bench.app_topup import Clock, to_message
from handlers.app import AppConfig, Effect, LoadNote, SendOta, SendSms, WalletApp
from handlers.pins import Pepper, SqlPinStore
from handlers.state import MemoryState
from ledger.service import Ledger, LoadView, WalletView
from ota.counters import CounterStorageError, open_counter_store
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.pboc import PurseKeys
from ota.platform import OtaPlatform
from ota.receiver import MemoryHistory, SecuredMoReceiver
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD
from simcard.card import VirtualCard
from simcard.fleet import DEFAULT_MODELS, Fleet, FleetPhone, iccid_for
from simcard.phone import VirtualPhone
from simcard.purse import Purse
from simcard.wallet_applet import TERMINAL_ID, Outgoing, WalletApplet
from smsc.reassembly import Message
from stk_menus import wallet_mo
from stk_menus.replies import render

FIRST = "8613900000000"
PIN = "123456"
ID_NUMBER = "11010119900307001X"
TOPUP = "我的手机钱包/充值"
BALANCE = "我的手机钱包/余额查询"
LAST10 = "我的手机钱包/最近10笔交易"


def text_message(msisdn: str, text: str) -> Message:
    """A plain text MO (UCS2 when it is not ASCII)."""
    if text.isascii():
        return Message(msisdn, "10658888", 0x00, 0, 0, text.encode(), (), 1)
    return Message(msisdn, "10658888", 0x08, 0, 0, text.encode("utf-16-be"), (), 1)


class Rig:
    """Ledger, PIN store, state, OTA platform and receiver, the app, and a fleet of phones."""

    def __init__(self, tmp: Path, count: int = 3) -> None:
        self.clock = Clock()
        self.keystore = FileKeyStore(tmp / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)
        self.url = f"sqlite:///{tmp / 'ledger.db'}"
        self.ledger = Ledger.connect(self.url, clock=self.clock, group_commit=False)
        self.pins = SqlPinStore(self.url, Pepper(b"\x5a" * 32))
        self.state = MemoryState(clock=self.clock.seconds)
        self.counters = open_counter_store(f"sqlite:///{tmp / 'counters.db'}")
        self.platform = OtaPlatform(self.keystore, self.counters, clock=self.clock.seconds)
        self.receiver = SecuredMoReceiver(
            self.keystore, MemoryHistory(), tars=[wallet_mo.PLATFORM_TAR]
        )
        self.app = self.make_app()
        self.fleet = Fleet(self.keystore, count=count, first_msisdn=FIRST, seed=7)
        self.sms: dict[str, list[str]] = {}
        self.lose_por = False
        self.lose_mt = False
        self.sent_mo: list[Message] = []

    def make_app(self) -> WalletApp:
        """A fresh app over the same stores (also: the gateway restarted)."""
        return WalletApp(
            ledger=self.ledger,
            receiver=self.receiver,
            platform=self.platform,
            keystore=self.keystore,
            pins=self.pins,
            state=self.state,
            clock=self.clock,
            config=AppConfig(terminal_id=TERMINAL_ID),
        )

    def close(self) -> None:
        self.ledger.close()
        self.pins.close()
        self.counters.close()

    def msisdn(self, i: int = 0) -> str:
        return str(int(FIRST) + i)

    def phone(self, msisdn: str) -> VirtualPhone:
        return self.fleet[msisdn].phone

    def open(self, msisdn: str, cash: int = 200_000, pin: str | None = PIN) -> str:
        """Open and fund the wallet, enable the card, set the PIN; returns the ICCID."""
        iccid = self.phone(msisdn).card.iccid
        self.ledger.open_wallet(msisdn, ID_NUMBER)
        self.ledger.enable_card(msisdn, iccid)
        if cash:
            self.ledger.deposit(msisdn, cash, "bank", request_id=f"fund-{msisdn}")
        if pin is not None:
            self.pins.set_pin(iccid, pin)
        self.phone(msisdn).power_on()
        self.phone(msisdn).outbox()  # the calibration MO is issue 6's
        return iccid

    def inbox(self, msisdn: str) -> list[str]:
        return self.sms.setdefault(msisdn, [])

    def apply(self, effects: list[Effect]) -> None:
        """Carry the effects out: SMS to the inbox, OTA to the card, its PoR back."""
        for effect in effects:
            if isinstance(effect, SendSms):
                self.inbox(effect.to).append(effect.text)
                continue
            assert isinstance(effect, SendOta)
            if self.lose_mt:
                continue
            phone = self.phone(effect.msisdn)
            phone.deliver(
                effect.outgoing.user_data,
                source="10658888",
                protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
                data_coding=DCS_CLASS2_8BIT,
            )
            self.pump(effect.msisdn)

    def pump(self, msisdn: str) -> None:
        """Send what the phone has in its outbox to the app (PoRs may be lost)."""
        for out in self.phone(msisdn).outbox():
            if out.action is None and self.lose_por:
                continue
            message = to_message(msisdn, out)
            self.sent_mo.append(message)
            self.apply(self.app.on_message(message))

    def deliver(self, message: Message) -> list[Effect]:
        """One MO to the app, effects carried out; returns them."""
        effects = self.app.on_message(message)
        self.apply(effects)
        return effects

    def topup(self, msisdn: str, yuan: int, pin: str = PIN) -> None:
        phone = self.phone(msisdn)
        phone.select(TOPUP)
        phone.input(str(yuan))
        phone.input(pin)
        self.pump(msisdn)

    def query(self, msisdn: str, path: str) -> None:
        self.phone(msisdn).select(path)
        self.pump(msisdn)

    def journal(self) -> int:
        return self.ledger.verify().transfers

    def verified(self) -> bool:
        report = self.ledger.verify()
        return report.ok and report.total == 0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """A rig whose ledger must verify at the end of every test."""
    r = Rig(tmp_path)
    yield r
    assert r.verified(), r.ledger.verify().problems
    r.close()


def test_topup_happy_path(rig: Rig) -> None:
    """MO -> PIN, MAC1, reserve -> CREDIT FOR LOAD by OTA -> card loads -> PoR with TAC ->
    post -> confirmation with the new balances."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.topup(msisdn, 100)
    assert rig.inbox(msisdn) == [
        render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000)
    ]
    assert rig.phone(msisdn).applet.purse.balance == 10_000
    wallet = rig.ledger.wallet(msisdn)
    assert (wallet.cash, wallet.card_balance, wallet.in_flight) == (190_000, 10_000, 0)
    assert rig.ledger.pending_loads() == []


def test_english_card_gets_english_replies(rig: Rig) -> None:
    """The MO's language tag (85) chooses the reply language."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.phone(msisdn).applet.language = wallet_mo.Language.EN
    rig.topup(msisdn, 50)
    assert rig.inbox(msisdn)[-1].startswith("Top-up done")
    rig.query(msisdn, BALANCE)
    assert rig.inbox(msisdn)[-1] == render(
        "balance", "en", card_balance=5_000, cash_balance=195_000
    )


def test_single_topup_limit_500(rig: Rig) -> None:
    """600 yuan is refused with the rule's figures; nothing posted, no OTA sent."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    before = rig.journal()
    rig.topup(msisdn, 600)
    assert rig.inbox(msisdn) == [render("refused_topup_limit", "zh", amount=60_000, limit=50_000)]
    assert rig.journal() == before
    assert rig.platform.pending == 0
    rig.topup(msisdn, 500)
    assert rig.ledger.wallet(msisdn).card_balance == 50_000


def test_five_topups_a_day(rig: Rig) -> None:
    """The sixth top-up of the local day is refused; the next day it is accepted."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    for _ in range(5):
        rig.topup(msisdn, 10)
    assert rig.inbox(msisdn)[-1].startswith("充值成功")
    before = rig.journal()
    rig.topup(msisdn, 10)
    assert rig.inbox(msisdn)[-1] == render("refused_daily_count", "zh", max_count=5)
    assert rig.journal() == before
    rig.clock.advance(86_400)
    rig.topup(msisdn, 10)
    assert rig.inbox(msisdn)[-1].startswith("充值成功")
    assert rig.ledger.wallet(msisdn).card_balance == 6_000


def test_no_overdraft_of_the_cash_account(rig: Rig) -> None:
    """A top-up above the cash balance is refused naming the balance."""
    msisdn = rig.msisdn()
    rig.open(msisdn, cash=5_000)
    rig.topup(msisdn, 100)
    assert rig.inbox(msisdn) == [
        render("refused_insufficient_cash", "zh", amount=10_000, cash_balance=5_000)
    ]
    assert rig.ledger.wallet(msisdn).cash == 5_000


def test_card_cap_1000_judged_on_the_balance_the_card_reports(tmp_path: Path) -> None:
    """The cap uses the MAC1-authenticated balance from the card (900 yuan, unknown to the
    mirror): 900 + 200 > 1000 is refused by the platform even though this card would allow it."""
    rig = Rig(tmp_path, count=0)
    msisdn = "8613700000001"
    iccid = iccid_for(msisdn)
    keys = rig.keystore.card_keys(iccid, "ota")
    purse = Purse(PurseKeys.from_card_keys(keys), balance=90_000, cap=200_000, rng=random.Random(1))
    card = VirtualCard(iccid)
    card.register(purse)
    phone = VirtualPhone(msisdn, "356938035643809", WalletApplet(card, purse, keys))
    rig.fleet.phones[msisdn] = _fleet_phone(phone)
    rig.open(msisdn)
    rig.topup(msisdn, 200)
    assert rig.inbox(msisdn) == [
        render("refused_card_cap", "zh", amount=20_000, card_balance=90_000, cap=100_000)
    ]
    rig.topup(msisdn, 100)  # exactly the cap
    assert rig.inbox(msisdn)[-1] == render(
        "topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000
    )
    assert purse.balance == 100_000
    assert rig.verified()
    rig.close()


def _fleet_phone(phone: VirtualPhone) -> FleetPhone:
    """A phone built by hand, entered in a fleet."""
    return FleetPhone(phone, DEFAULT_MODELS[0], Decimal(10))


def _forged(rig: Rig, msisdn: str, counter: int, action: wallet_mo.WalletMo) -> Message:
    """A packet secured with the card's own keys and a chosen counter (a replay attempt)."""
    parts = rig.phone(msisdn).applet.secured_user_data(action, counter=counter, reference=1)
    return to_message(msisdn, Outgoing("10658888", parts))


def test_duplicated_topup_mo_posts_once_and_sends_no_second_credit(rig: Rig) -> None:
    """The SMSC redelivering a top-up MO: no second OTA, nothing posted twice."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.topup(msisdn, 100)
    first = rig.sent_mo[0]
    journal = rig.journal()
    assert rig.deliver(first) == []
    # after a restart that lost the reply cache and the receiver's counter history: the MO
    # looks new, the reserve is idempotent by key, the load is settled: no OTA, no SMS
    rig.state = MemoryState(clock=rig.clock.seconds)
    rig.receiver = SecuredMoReceiver(rig.keystore, MemoryHistory(), tars=[wallet_mo.PLATFORM_TAR])
    rig.app = rig.make_app()
    assert rig.deliver(first) == []
    assert rig.journal() == journal
    assert rig.ledger.wallet(msisdn).card_balance == 10_000
    assert rig.inbox(msisdn) == [
        render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000)
    ]


def test_new_reservation_is_known_by_its_own_note(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A top-up on a card with nothing in flight reads no pending loads (there are none), and
    its reservation comes back with the note the app gave (unique per note), so it needs no
    read after the reserve either; a replay of that load, settled since, gets the first note
    back and reads them once, after the reserve (test above: no second CREDIT)."""
    msisdn = rig.msisdn()
    iccid = rig.open(msisdn)
    reads: list[str] = []
    pending_loads = rig.ledger.pending_loads

    def counted(card: str | None = None) -> list[LoadView]:
        reads.append(str(card))
        return pending_loads(card)

    monkeypatch.setattr(rig.ledger, "pending_loads", counted)
    rig.topup(msisdn, 100)
    assert rig.inbox(msisdn)[-1].startswith("充值成功")
    assert reads == []
    first = rig.sent_mo[0]
    rig.receiver = SecuredMoReceiver(rig.keystore, MemoryHistory(), tars=[wallet_mo.PLATFORM_TAR])
    rig.app = rig.make_app()  # a restart: the MO looks new, the reserve returns the first load
    reads.clear()
    assert rig.deliver(first) == []
    assert reads == [iccid]
    notes = {LoadNote.credit(**_NOTE, nonce=None) for _ in range(3)}
    assert len(notes) == 3
    assert LoadNote.credit(**_NOTE, nonce="ab") == LoadNote.credit(**_NOTE, nonce="ab")


_NOTE: dict[str, Any] = {
    "old_balance": 0,
    "terminal_id": TERMINAL_ID,
    "date": dt.date(2024, 5, 20),
    "time": dt.time(10, 30),
    "lang": "zh",
}


def test_replayed_counter_with_other_content_is_refused(rig: Rig) -> None:
    """A used counter with other octets, or an old counter, is a replay: refused, nothing run."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.query(msisdn, BALANCE)
    used = rig.phone(msisdn).applet.mo_counter
    journal = rig.journal()
    forged = _forged(rig, msisdn, used, wallet_mo.Last10())
    assert rig.deliver(forged) == [SendSms(msisdn, render("refused_replay", "zh"))]
    older = _forged(rig, msisdn, used - 1 if used > 1 else 0, wallet_mo.Balance())
    rig.deliver(older)
    assert rig.inbox(msisdn)[-1] == render("refused_replay", "zh")
    assert rig.journal() == journal


def test_tampered_packet_is_refused(rig: Rig) -> None:
    """One flipped octet in the ciphered part fails the CC: a refusal, nothing posted."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    phone = rig.phone(msisdn)
    phone.select(TOPUP)
    phone.input("100")
    phone.input(PIN)
    (out,) = phone.outbox()
    message = to_message(msisdn, out)
    payload = bytearray(message.payload)
    payload[-3] ^= 0x01
    journal = rig.journal()
    tampered = Message(
        message.source,
        message.destination,
        message.data_coding,
        0,
        message.protocol_id,
        bytes(payload),
        message.ies,
        message.parts,
    )
    assert rig.deliver(tampered) == [SendSms(msisdn, render("refused_bad_mac", "zh"))]
    assert rig.journal() == journal
    assert rig.platform.pending == 0


def test_wrong_pin_counts_down_then_locks_until_unlocked(rig: Rig) -> None:
    """Wrong PINs say the attempts left; the third locks; even the right PIN is then refused
    until the business hall unlocks; nothing is posted meanwhile."""
    msisdn = rig.msisdn()
    iccid = rig.open(msisdn)
    journal = rig.journal()
    rig.topup(msisdn, 10, pin="000000")
    rig.topup(msisdn, 10, pin="000000")
    rig.topup(msisdn, 10, pin="000000")
    rig.topup(msisdn, 10)
    assert rig.inbox(msisdn) == [
        render("refused_wrong_pin", "zh", attempts_left=2),
        render("refused_wrong_pin", "zh", attempts_left=1),
        render("refused_pin_locked", "zh"),
        render("refused_pin_locked", "zh"),
    ]
    assert rig.journal() == journal
    rig.pins.unlock(iccid)
    rig.topup(msisdn, 10)
    assert rig.inbox(msisdn)[-1].startswith("充值成功")


def test_right_pin_resets_the_count(rig: Rig) -> None:
    """Two wrong PINs, then a successful top-up: the next wrong PIN has 2 attempts left again."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.topup(msisdn, 10, pin="000000")
    rig.topup(msisdn, 10, pin="000000")
    rig.topup(msisdn, 10)
    rig.topup(msisdn, 10, pin="000000")
    assert rig.inbox(msisdn)[-1] == render("refused_wrong_pin", "zh", attempts_left=2)


def test_pin_not_set_is_refused(rig: Rig) -> None:
    """A card whose PIN was never set at the hall cannot top up."""
    msisdn = rig.msisdn()
    rig.open(msisdn, pin=None)
    rig.topup(msisdn, 10)
    assert rig.inbox(msisdn) == [render("refused_pin_unset", "zh")]


def test_unknown_subscriber_gets_a_refusal(rig: Rig) -> None:
    """An MO from a number without a wallet is refused (rate-limited), nothing posted."""
    msisdn = rig.msisdn(1)
    rig.phone(msisdn).power_on()
    rig.phone(msisdn).outbox()
    rig.query(msisdn, BALANCE)
    assert rig.inbox(msisdn) == [render("refused_unknown_card", "zh")]
    for _ in range(5):
        rig.query(msisdn, BALANCE)
    assert len(rig.inbox(msisdn)) == 3  # the refusal bucket's burst


def test_por_lost_then_posted_at_next_contact(rig: Rig) -> None:
    """The card loads but its PoR is lost: the load stays reserved, the sweep marks it in
    doubt (posting nothing), and the card's next MO (counter 1, proof of load 0) posts it."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.lose_por = True
    rig.topup(msisdn, 100)
    rig.lose_por = False
    assert rig.inbox(msisdn) == []
    assert rig.phone(msisdn).applet.purse.balance == 10_000
    (load,) = rig.ledger.pending_loads()
    assert load.state == "reserved"
    rig.clock.advance(60)
    assert rig.app.sweep(rig.clock.now) == []  # not old enough
    journal = rig.journal()
    rig.clock.advance(600)
    assert rig.app.sweep(rig.clock.now) == [load.id]
    assert rig.journal() == journal
    assert rig.ledger.pending_loads()[0].state == "in_doubt"
    rig.query(msisdn, BALANCE)
    assert rig.inbox(msisdn) == [
        render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000),
        render("balance", "zh", card_balance=10_000, cash_balance=190_000),
    ]
    assert rig.ledger.pending_loads() == []


def test_balance_with_nothing_in_flight_reads_the_wallet_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A balance query from a card with nothing in flight is answered from the wallet read
    that found the card: no pending loads to settle, so no second read (the test above
    covers a card with a load in doubt, whose reply shows the balances after settling it)."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.topup(msisdn, 100)
    reads: list[str] = []
    wallet, pending_loads = rig.ledger.wallet, rig.ledger.pending_loads

    def counted_wallet(who: str) -> WalletView:
        reads.append("wallet")
        return wallet(who)

    def counted_pending(card: str | None = None) -> list[LoadView]:
        reads.append("pending")
        return pending_loads(card)

    monkeypatch.setattr(rig.ledger, "wallet", counted_wallet)
    monkeypatch.setattr(rig.ledger, "pending_loads", counted_pending)
    rig.query(msisdn, BALANCE)
    assert rig.inbox(msisdn)[-1] == render(
        "balance", "zh", card_balance=10_000, cash_balance=190_000
    )
    assert reads == ["wallet"]


def test_por_lost_resolved_after_restart_by_the_counter(rig: Rig) -> None:
    """After a gateway restart (no note of the load) the next top-up MO, whose INITIALIZE
    shows the counter moved past the load, posts it before judging the new top-up."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.lose_por = True
    rig.topup(msisdn, 100)
    rig.lose_por = False
    rig.app = rig.make_app()
    rig.topup(msisdn, 50)
    assert rig.inbox(msisdn) == [
        render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000),
        render("topup_ok", "zh", amount=5_000, card_balance=15_000, cash_balance=185_000),
    ]
    assert rig.phone(msisdn).applet.purse.balance == 15_000


def _topup_mo(rig: Rig, msisdn: str, yuan: int) -> Message:
    """The phone's top-up MO, taken from its outbox (not delivered)."""
    phone = rig.phone(msisdn)
    phone.select(TOPUP)
    phone.input(str(yuan))
    phone.input(PIN)
    (out,) = phone.outbox()
    return to_message(msisdn, out)


def test_failure_after_the_reserve_then_redelivery_sends_the_credit(rig: Rig) -> None:
    """The OTA counter store fails after the reserve committed: the MO is refused (the
    gateway answers ESME_RX_T_APPN). The SMSC's redelivery finds the load reserved with no
    CREDIT built, builds it, and the load is posted once."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    message = _topup_mo(rig, msisdn, 100)
    command = rig.platform.command

    def broken(**kwargs: object) -> object:
        raise CounterStorageError("counter store: disk I/O error")

    rig.platform.command = broken  # type: ignore[method-assign]
    with pytest.raises(CounterStorageError):
        rig.app.on_message(message)
    assert [v.state for v in rig.ledger.pending_loads()] == ["reserved"]
    rig.platform.command = command  # type: ignore[method-assign]
    rig.deliver(message)  # the redelivery
    assert rig.inbox(msisdn) == [
        render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000)
    ]
    assert rig.ledger.pending_loads() == []
    assert rig.phone(msisdn).applet.purse.balance == 10_000


def test_resent_credit_that_fails_leaves_the_load_in_doubt_not_voided(rig: Rig) -> None:
    """The card applied the CREDIT but its PoR was lost; the gateway restarts and the SMSC
    redelivers the top-up MO: the CREDIT is built again, and the card refuses it (its load
    session is over). That failure proves nothing, so the load is left in doubt, not voided;
    the card's next contact shows its counter moved and the load is posted, once."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    message = _topup_mo(rig, msisdn, 100)
    rig.lose_por = True
    rig.deliver(message)
    rig.lose_por = False
    assert rig.phone(msisdn).applet.purse.balance == 10_000
    # The gateway restarts: no note of the load, and its in-process state is gone too.
    rig.state = MemoryState(clock=rig.clock.seconds)
    rig.receiver = SecuredMoReceiver(rig.keystore, MemoryHistory(), tars=[wallet_mo.PLATFORM_TAR])
    rig.app = rig.make_app()
    rig.deliver(message)
    (load,) = rig.ledger.pending_loads()
    assert load.state == "in_doubt"
    assert rig.ledger.wallet(msisdn).cash == 190_000  # not given back
    rig.query(msisdn, BALANCE)
    assert rig.inbox(msisdn) == [
        render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000),
        render("balance", "zh", card_balance=10_000, cash_balance=190_000),
    ]
    assert rig.ledger.pending_loads() == []


def _other_instance(rig: Rig) -> None:
    """Hand what follows to another gateway instance: its own OTA platform (no pending
    command), reply cache, MO counter history and app (no load note); the same databases."""
    rig.platform = OtaPlatform(rig.keystore, rig.counters, clock=rig.clock.seconds)
    rig.state = MemoryState(clock=rig.clock.seconds)
    rig.receiver = SecuredMoReceiver(rig.keystore, MemoryHistory(), tars=[wallet_mo.PLATFORM_TAR])
    rig.app = rig.make_app()


def _por_for(rig: Rig, msisdn: str, ota: Effect) -> Message:
    """The card runs the OTA command; its PoR, taken from the phone's outbox (not sent)."""
    assert isinstance(ota, SendOta)
    phone = rig.phone(msisdn)
    phone.deliver(
        ota.outgoing.user_data,
        source="10658888",
        protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
        data_coding=DCS_CLASS2_8BIT,
    )
    (out,) = phone.outbox()
    assert out.action is None
    return to_message(msisdn, out)


def test_por_at_another_instance_is_checked_with_the_note_kept_with_the_load(rig: Rig) -> None:
    """The SMSC hands the PoR to another gateway instance (or the gateway restarted between
    the CREDIT and its PoR): the PoR is verified with the card's keys, its TAC with the note
    the reservation stored, and the load is posted at once, not at the card's next contact.
    The PoR sent in another subscriber's name is refused; replayed later, it posts nothing."""
    msisdn, other = rig.msisdn(0), rig.msisdn(1)
    rig.open(msisdn)
    rig.open(other)
    (ota,) = rig.app.on_message(_topup_mo(rig, msisdn, 100))
    (load,) = rig.ledger.pending_loads()
    assert load.credit is not None and rig.ledger.wallet(msisdn).in_flight == 10_000
    por = _por_for(rig, msisdn, ota)
    first_app, first_platform = rig.app, rig.platform
    _other_instance(rig)
    journal = rig.journal()
    assert rig.deliver(dataclasses.replace(por, source=other)) == []
    assert rig.journal() == journal
    assert rig.deliver(por) == [
        SendSms(
            msisdn,
            render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000),
        )
    ]
    assert rig.ledger.pending_loads() == []
    assert rig.phone(msisdn).applet.purse.balance == rig.ledger.wallet(msisdn).card_balance
    journal = rig.journal()
    _other_instance(rig)
    assert rig.deliver(por) == []
    assert rig.journal() == journal
    # The sender still waits for that PoR; its sweep forgets it once the load is old enough.
    assert (len(first_app._notes), first_platform.pending) == (1, 1)
    assert first_app.sweep(rig.clock.now) == []
    assert (len(first_app._notes), first_platform.pending) == (1, 1)
    rig.clock.advance(301)
    assert first_app.sweep(rig.clock.now) == []
    assert (len(first_app._notes), first_platform.pending) == (0, 0)


def test_credit_built_again_elsewhere_keeps_the_first_date_and_time(rig: Rig) -> None:
    """The first CREDIT is lost; the SMSC redelivers the top-up MO to another instance a
    minute and a half later. The CREDIT it builds carries the stored date and time (so the
    same MAC2, and the same TAC whichever of the two the card applies), and the PoR, handed
    to a third instance, posts the load."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    message = _topup_mo(rig, msisdn, 100)
    (first,) = rig.app.on_message(message)
    assert isinstance(first, SendOta)
    rig.clock.advance(90)
    _other_instance(rig)
    (again,) = rig.app.on_message(message)
    assert isinstance(again, SendOta)
    (note,) = rig.app._notes.values()
    assert note.resent and note.reserved_at == rig.clock.now
    local = (rig.clock.now - dt.timedelta(seconds=90)).astimezone(ZoneInfo("Asia/Shanghai"))
    assert (note.date, note.time) == (local.date(), local.time().replace(tzinfo=None))
    por = _por_for(rig, msisdn, again)
    _other_instance(rig)
    rig.deliver(por)
    assert rig.inbox(msisdn) == [
        render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000)
    ]
    assert rig.ledger.pending_loads() == []


def test_another_instances_sweep_judges_a_load_by_its_stored_note(rig: Rig) -> None:
    """An instance that did not send the CREDIT sweeps a load by the time its note was
    stored: a fresh load is left alone however often it sweeps; an old one is in doubt."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.app.on_message(_topup_mo(rig, msisdn, 100))
    (load,) = rig.ledger.pending_loads()
    _other_instance(rig)
    for _ in range(3):
        rig.clock.advance(30)
        assert rig.app.sweep(rig.clock.now) == []
    rig.clock.advance(300)
    assert rig.app.sweep(rig.clock.now) == [load.id]


def test_mt_lost_card_never_loaded_is_voided(rig: Rig) -> None:
    """The CREDIT never reaches the card: after the sweep, the card's next MO shows a counter
    that never moved: the load is voided (cash back), the subscriber told."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.lose_mt = True
    rig.topup(msisdn, 100)
    rig.lose_mt = False
    assert rig.ledger.wallet(msisdn).cash == 190_000
    rig.query(msisdn, BALANCE)  # still reserved: a balance MO does not give it up
    assert rig.ledger.pending_loads()[0].state == "reserved"
    rig.clock.advance(3_600)
    rig.app.sweep(rig.clock.now)
    rig.query(msisdn, LAST10)
    assert rig.inbox(msisdn)[1] == render("topup_failed", "zh")
    assert rig.ledger.pending_loads() == []
    wallet = rig.ledger.wallet(msisdn)
    assert (wallet.cash, wallet.card_balance, wallet.in_flight) == (200_000, 0, 0)
    assert rig.phone(msisdn).applet.purse.balance == 0


def test_next_topup_voids_an_unapplied_load(rig: Rig) -> None:
    """A new INITIALIZE FOR LOAD at the same counter closes the old session: the old load is
    voided and the new one judged without it in flight."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.lose_mt = True
    rig.topup(msisdn, 500)
    rig.lose_mt = False
    rig.topup(msisdn, 500)
    assert rig.inbox(msisdn) == [
        render("topup_failed", "zh"),
        render("topup_ok", "zh", amount=50_000, card_balance=50_000, cash_balance=150_000),
    ]


def test_card_refusing_the_credit_voids(rig: Rig) -> None:
    """The card was reset before the CREDIT arrived (6901 in the PoR): void, cash back, SMS."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    phone = rig.phone(msisdn)
    phone.select(TOPUP)
    phone.input("100")
    phone.input(PIN)
    (out,) = phone.outbox()
    effects = rig.app.on_message(to_message(msisdn, out))
    assert [type(e) for e in effects] == [SendOta]
    phone.card.power_on()  # the purse session is gone
    rig.apply(effects)
    assert rig.inbox(msisdn) == [render("topup_failed", "zh")]
    assert rig.ledger.wallet(msisdn).cash == 200_000
    assert rig.ledger.pending_loads() == []


def test_redelivered_query_gets_the_same_reply(rig: Rig) -> None:
    """A redelivered balance MO gets the first reply again, from the cache or, when the cache
    was lost, recomputed; nothing is posted."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.query(msisdn, BALANCE)
    first = rig.sent_mo[-1]
    journal = rig.journal()
    rig.ledger.deposit(msisdn, 1, "bank", request_id="later")  # the cache answers, not the ledger
    rig.deliver(first)
    assert rig.inbox(msisdn)[1] == rig.inbox(msisdn)[0]
    assert rig.journal() == journal + 1
    rig.state = MemoryState(clock=rig.clock.seconds)
    rig.app = rig.make_app()
    rig.deliver(first)
    assert rig.inbox(msisdn)[2] == render("balance", "zh", card_balance=0, cash_balance=200_001)


def test_redelivered_refusal_costs_no_pin_attempt(rig: Rig) -> None:
    """A wrong-PIN MO redelivered (cache lost) is refused again without counting a try."""
    msisdn = rig.msisdn()
    iccid = rig.open(msisdn)
    rig.topup(msisdn, 10, pin="000000")
    first = rig.sent_mo[-1]
    rig.state = MemoryState(clock=rig.clock.seconds)
    rig.app = rig.make_app()
    rig.deliver(first)
    assert rig.inbox(msisdn) == [render("refused_wrong_pin", "zh", attempts_left=2)] * 2
    assert rig.pins.status(iccid).attempts_left == 2


def test_plain_text_queries(rig: Rig) -> None:
    """余额/YE/BAL and 明细/MX/LAST answer from the ledger; 充值 in text is refused."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.topup(msisdn, 100)
    journal = rig.journal()
    for word, lang in (("余额", "zh"), ("ye", "zh"), ("BAL", "en")):
        rig.deliver(text_message(msisdn, word))
        assert rig.inbox(msisdn)[-1] == render(
            "balance", lang, card_balance=10_000, cash_balance=190_000
        )
    rig.deliver(text_message(msisdn, "明细"))
    last = rig.inbox(msisdn)[-1]
    assert last.startswith("明细：") and "0520充100.00" in last and "0520存2000.00" in last
    rig.deliver(text_message(msisdn, " last "))
    assert "2000.00" in rig.inbox(msisdn)[-1]
    rig.deliver(text_message(msisdn, "充值100"))
    assert rig.inbox(msisdn)[-1] == render("refused_plain_text", "zh")
    rig.deliver(text_message(msisdn, "TOPUP 50"))
    assert rig.inbox(msisdn)[-1] == render("refused_plain_text", "en")
    assert rig.journal() == journal


def test_help_is_rate_limited_per_msisdn(rig: Rig) -> None:
    """Unknown text gets the help reply, at most a burst of 3, then 1 a minute, per MSISDN."""
    a, b = rig.msisdn(0), rig.msisdn(1)
    for _ in range(6):
        rig.deliver(text_message(a, "hello"))
    assert rig.inbox(a) == [render("help", "en")] * 3
    rig.deliver(text_message(b, "你好"))
    assert rig.inbox(b) == [render("help", "zh")]
    rig.clock.advance(60)
    rig.deliver(text_message(a, "hello"))
    rig.deliver(text_message(a, "hello"))
    assert len(rig.inbox(a)) == 4


def test_unmatched_por_is_ignored(rig: Rig) -> None:
    """A PoR replayed after its load was posted changes nothing and answers nothing."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.topup(msisdn, 100)
    por = next(m for m in rig.sent_mo if any(ie.iei == 0x71 for ie in m.ies))
    journal = rig.journal()
    assert rig.deliver(por) == []
    assert rig.journal() == journal


def test_proof_that_does_not_verify_posts_nothing(rig: Rig) -> None:
    """A next contact whose load proof (tag 87) has a wrong TAC leaves the load in doubt."""
    msisdn = rig.msisdn()
    rig.open(msisdn)
    rig.lose_por = True
    rig.topup(msisdn, 100)
    rig.lose_por = False
    counter = rig.phone(msisdn).applet.mo_counter + 1
    bad = wallet_mo.LoadProof(0, b"\x00" * 4, b"\x00" * 4)
    journal = rig.journal()
    rig.deliver(_forged(rig, msisdn, counter, wallet_mo.Balance(online_counter=1, load_proof=bad)))
    (load,) = rig.ledger.pending_loads()
    assert load.state == "in_doubt"
    assert rig.journal() == journal
    assert rig.inbox(msisdn) == [render("balance", "zh", card_balance=0, cash_balance=190_000)]
