"""``stkpay demo``: the whole service on its embedded defaults: the SMSC simulator, the
gateway (``stkpay serve``, as its own process) and a fleet of virtual phones.

Starts the SMSC simulator on loopback (ephemeral ports), binds an ESME to it over real TCP
(the simulator's ``demo`` account, short code 10659999) and exchanges messages both ways: long
Chinese (UCS2) and GSM 7-bit MT with delivery receipts, long MO from handsets reassembled by
the ESME and answered. Prints what each side saw and a summary; exit status 0 only when every
check held.

Then the wallet (issue 5), calibration (issue 6) and an OTA push, on the embedded default
(SQLite files in a temporary directory, in-process state, a generated key file with ephemeral
master keys). The stores are prepared in this process (wallets opened and funded, cards
enabled, PINs set, the handset table seeded), then ``stkpay serve`` runs as a child process
(:mod:`stkpay.serve_process`) bound to the simulator on the ``stkpay`` account (short code
10658888), and the fleet of virtual phones behind the simulator talks to it. The phones power
on and send their calibration SMS (known handsets calibrated over the air, unknown and invalid
ones sent to a business hall, one calibrated by the simulated instrument, one phone change
recalibrated), top up through the STK menu (every limit refused once, a wrong PIN, a PoR
dropped on purpose and settled by the next balance query), query balance and last 10. The
gateway is stopped with SIGTERM (it must drain and exit 0); then an operator's OTA push binds
the same account from this process: an RFM script updates EF 6F51 on a few cards and its PoRs
are verified. The summary shows the figures, the gateway's resident size and CPU, calibration
coverage and ``Ledger.verify()``. Ledger and store calls of this process run on one worker
thread (``deferToThreadPool``), never on the reactor thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from calibration.imei import parse_imei
from calibration.instrument import MEASUREMENT_LEVEL_DBM, SimulatedInstrument, calibrate_phone
from calibration.profile import CalibrationRecord, Method, decode, encode
from calibration.rf import DEFAULT_MODEL, BandKind, Profile
from calibration.service import calibration_apdus
from handlers.app import Effect, SendSms
from handlers.pins import Pepper
from ota.apdu import ResponseApdu
from ota.commands import TAR_RFM_UICC, SelectReturn, read_binary, select_by_path, update_binary
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.pboc import PurseKeys
from ota.platform import OutgoingCommand, PorResult
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD
from simcard.card import WALLET_PARAMETERS_PATH, VirtualCard
from simcard.fleet import Fleet, FleetPhone, HandsetModelSpec, InProcessNetwork, imei_for
from simcard.phone import Event, VirtualPhone
from simcard.purse import Purse
from simcard.wallet_applet import TERMINAL_ID, WalletApplet
from smsc.dlr import Receipt
from smsc.handset import Handset, MailboxDirectory, MtMessage
from smsc.message import OutboundMessage
from smsc.reassembly import Message
from smsc.text import Encoding
from stk_menus.replies import TEMPLATE_DIR
from stkpay.config import Config, Secret, SimAccount
from stkpay.embedded import EmbeddedPlatform
from stkpay.runner import run
from stkpay.serve_process import (
    ServeProcess,
    ServeProcessError,
    gateway_sections,
    write_config,
)

PHONE_A = "8613800138000"
PHONE_B = "8613900139000"
SHORT_CODE = "10658888"  # the gateway's (the simulator's ``stkpay`` account)
DEMO_CODE = "10659999"  # the SMPP exchange's (its ``demo`` account)
DEMO_ACCOUNT = SimAccount(system_id="demo", password=Secret("demo-pw"), short_codes=(DEMO_CODE,))

MT_TEXTS: tuple[tuple[str, str, str], ...] = (
    (
        "long Chinese (UCS2)",
        PHONE_A,
        "【手机钱包】尊敬的用户，您已成功开通手机钱包业务。现金账户可在营业厅、银行或充值卡充值；"
        "手机钱包卡为RF-SIM卡，单笔充值不超过500元，卡内余额不超过1000元，每日最多充值5次。"
        "请在STK菜单“我的手机钱包”中进行充值、余额查询和最近10笔交易查询。卡片不可挂失、不可找回，"
        "请妥善保管。",
    ),
    (
        "long GSM 7-bit with extension characters",
        PHONE_B,
        "Your wallet card is ready. Top up from your cash account in the STK menu: "
        "single top-up <= 500 CNY, card balance <= 1000 CNY, at most 5 top-ups a day. "
        "Fees [card swap, replacement] are waived during the trial: 0 EUR/0 € {promo}. "
        "Keep the card safe: it cannot be reported lost or recovered.",
    ),
    ("short GSM 7-bit", PHONE_A, "BAL: cash 100.00 CNY, card 35.50 CNY"),
)

MO_TEXTS: tuple[tuple[str, str, str], ...] = (
    (
        "long Chinese (UCS2)",
        PHONE_A,
        "余额查询。我想知道我的现金账户和手机钱包卡的余额，以及最近10笔交易明细，"
        "包括在食堂、便利店和地铁的消费记录，还有上周在营业厅的充值记录。谢谢！"
        "另外请问换手机以后是否需要重新做距离校准？",
    ),
    (
        "long GSM 7-bit",
        PHONE_B,
        "LAST 10 please. I paid at the canteen, the metro and the corner shop this week "
        "and topped up twice at the business hall; I want to check every amount and the "
        "balance left on the card before the weekend trip.",
    ),
)


@dataclass
class _Run:
    receipts: list[Receipt] = field(default_factory=list)
    mo: list[Message] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))

    def say(self, line: str = "") -> None:
        self.lines.append(line)
        print(line)
        sys.stdout.flush()


async def _wait_until(reactor: Any, cond: Any, timeout: float) -> bool:
    deadline = reactor.seconds() + timeout
    while not cond():
        if reactor.seconds() >= deadline:
            return False
        await task.deferLater(reactor, 0.02, lambda: None)
    return True


# -- the wallet, calibration and an OTA push (issues 5 and 6) ------------------------------

FLEET_FIRST = "8613700000000"
FLEET_SIZE = 20
CAP_PHONE = 2  # the phone whose card leaves the 1000 cap to the platform
PIN = "135790"
WRONG_PIN = "000000"
ID_NUMBER = "11010119900307001X"
TOPUP = "我的手机钱包/充值"
BALANCE = "我的手机钱包/余额查询"
LAST10 = "我的手机钱包/最近10笔交易"

MODEL_A10 = HandsetModelSpec("Virtual A10", "35693803", Decimal(10))
MODEL_B20 = HandsetModelSpec("Virtual B20", "49015420", Decimal(20))
MODEL_C15 = HandsetModelSpec("Virtual C15", "86891203", Decimal(15))  # not in the table
MODEL_Z29 = HandsetModelSpec("Virtual Z29", "86000029", Decimal(29))  # no valid payment level
#: Round robin over the fleet: 8 A10, 8 B20, 2 C15 (unknown), 2 Z29 (cannot be valid).
FLEET_MODELS = (*(MODEL_A10, MODEL_B20) * 4, MODEL_C15, MODEL_Z29)
TABLE_MODELS = (MODEL_A10, MODEL_B20, MODEL_Z29)

#: The wallet parameters pushed by OTA to EF 6F51 (simcard.card's layout, in fen: balance
#: cap, single purchase cap, single top-up cap, top-ups a day) and a version octet.
PUSHED_PARAMETERS = (
    (100_000).to_bytes(4, "big")
    + (50_000).to_bytes(4, "big")
    + (50_000).to_bytes(4, "big")
    + bytes((5, 2))
)
WALLET_PARAMETERS_FIDS = (0x7F50, 0x6F51)

_REFUSALS = (
    "refused_topup_limit",
    "refused_card_cap",
    "refused_daily_count",
    "refused_insufficient_cash",
    "refused_wrong_pin",
    "refused_pin_locked",
    "refused_pin_unset",
    "refused_unknown_card",
    "refused_replay",
    "refused_bad_mac",
    "topup_failed",
)


def _prefix(name: str) -> str:
    """The fixed opening of a Chinese reply template (before its first value or tag)."""
    source = (TEMPLATE_DIR / f"{name}.zh.j2").read_text(encoding="utf-8")
    source = re.sub(r"\{#.*?#\}", "", source, flags=re.DOTALL).lstrip("-").lstrip()
    return source.split("{")[0].strip()


_REPLY_NAMES = (
    "topup_ok",
    *_REFUSALS,
    "balance",
    "last10",
    "calibration_done",
    "calibration_already",
    "calibration",
    "help",
)


def _classify(text: str) -> str:
    """The reply template a Chinese SMS was rendered from (by its fixed opening)."""
    prefixes = sorted(((_prefix(n), n) for n in _REPLY_NAMES), key=lambda p: -len(p[0]))
    for prefix, name in prefixes:
        if prefix and text.startswith(prefix):
            return name
    return "last10" if text.startswith("明细") else "other"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


class _Network(InProcessNetwork):
    """The fleet behind the simulator, telling waiters when a phone gets an SMS, and able to
    drop one PoR of a phone on purpose."""

    def __init__(self, fleet: Fleet, **kwargs: Any) -> None:
        super().__init__(fleet, **kwargs)
        self.waiters: dict[str, list[tuple[int, defer.Deferred[None]]]] = {}
        self.drop_por: set[str] = set()
        self.dropped = 0

    def handset(self, msisdn: str) -> Handset | None:
        inner = super().handset(msisdn)
        if inner is None or msisdn not in self.fleet.phones:
            return inner
        return _Watched(self, msisdn, inner)

    def notify(self, msisdn: str) -> None:
        count = len(self.fleet[msisdn].phone.inbox)
        waiting = self.waiters.get(msisdn, [])
        for entry in [w for w in waiting if count >= w[0]]:
            waiting.remove(entry)
            entry[1].callback(None)

    def wait_inbox(self, msisdn: str, count: int) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.waiters.setdefault(msisdn, []).append((count, d))
        self.notify(msisdn)
        return d

    def flush(self, phone: VirtualPhone) -> int:
        outgoing = phone.outbox()
        sent = 0
        for message in outgoing:
            if message.action is None and phone.msisdn in self.drop_por:
                self.drop_por.discard(phone.msisdn)
                self.dropped += 1
                continue
            self._later(self._sender(phone.msisdn, message))
            sent += 1
        return sent


class _Watched:
    """A fleet phone's handset that notifies the network after each MT."""

    def __init__(self, network: _Network, msisdn: str, inner: Handset) -> None:
        self._network = network
        self._msisdn = msisdn
        self._inner = inner

    def deliver(self, message: MtMessage) -> bool:
        ok = self._inner.deliver(message)
        self._network.notify(self._msisdn)
        return ok


@dataclass
class _Figures:
    attempts: int = 0
    successes: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    queries: int = 0
    pushed: list[PorResult] = field(default_factory=list)
    gateway: tuple[float, float] = (0.0, 0.0)  # the gateway process: MB resident, CPU s


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _unbound() -> Any:
    raise RuntimeError("no operator bind configured")


class _Wallet:
    """The platform side of the demo: the stores (prepared here, then shared with the gateway
    process: SQLite in WAL mode takes several processes), the gateway process, this process's
    WalletApp + CalibrationService for the operator's OTA push, run on one worker thread
    (ledger and stores off the reactor thread), and the fleet behind the simulator."""

    def __init__(self, reactor: Any, directory: Path) -> None:
        self.reactor = reactor
        self.dir = directory
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="stkpay-demo-app")
        self.keystore = FileKeyStore(directory / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)  # ephemeral master keys
        self.fleet = Fleet(
            self.keystore, count=FLEET_SIZE, first_msisdn=FLEET_FIRST, models=FLEET_MODELS, seed=15
        )
        self._lenient_purse(list(self.fleet.phones)[CAP_PHONE])
        self.figures = _Figures()
        self.esme: Any = None  # the operator's bind for the OTA push
        self.operator_bind: Callable[[], Any] = _unbound
        self.network: _Network | None = None
        self.pepper = secrets.token_bytes(32)  # to the gateway by STKPAY_PIN_PEPPER only
        self.gateway: ServeProcess | None = None

    def _lenient_purse(self, msisdn: str) -> None:
        """Give this phone a card whose purse leaves the 1000 cap to the platform (its own cap
        2000), so that the platform's cap check (docs/ledger.md) is what refuses."""
        entry = self.fleet[msisdn]
        iccid = entry.phone.card.iccid
        keys = self.keystore.card_keys(iccid, "ota")
        purse = Purse(PurseKeys.from_card_keys(keys), cap=200_000, rng=random.Random(2))
        card = VirtualCard(iccid)
        card.register(purse)
        phone = VirtualPhone(msisdn, entry.phone.imei, WalletApplet(card, purse, keys))
        self.fleet.phones[msisdn] = FleetPhone(phone, entry.model, entry.a_db)

    def work(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run ``fn`` on the worker thread (deferToThreadPool)."""
        return deferToThreadPool(self.reactor, self.pool, fn, *args)

    def open_stores(self) -> None:
        """On the worker thread: ledger, PINs, state, OTA, calibration, the app."""
        self.stack = EmbeddedPlatform.open(
            self.dir,
            self.keystore,
            models=TABLE_MODELS,
            clock=_utcnow,
            pepper=Pepper(self.pepper),
            terminal_id=TERMINAL_ID,
            on_other_por=self.figures.pushed.append,
        )
        stack = self.stack
        self.ledger, self.pins, self.platform = stack.ledger, stack.pins, stack.platform
        self.store, self.calibration, self.app = stack.store, stack.calibration, stack.app

    def close_stores(self) -> None:
        self.stack.close()

    def enrol(self, cash: dict[str, int]) -> None:
        """On the worker thread: wallets opened and funded, cards enabled, PINs set."""
        for entry in self.fleet:
            msisdn = entry.phone.msisdn
            iccid = entry.phone.card.iccid
            self.ledger.open_wallet(msisdn, ID_NUMBER, request_id=f"open-{msisdn}")
            self.ledger.enable_card(msisdn, iccid, request_id=f"card-{msisdn}")
            self.ledger.deposit(
                msisdn, cash.get(msisdn, 200_000), "bank", request_id=f"fund-{msisdn}"
            )
            self.pins.set_pin(iccid, PIN)

    def serve(self, smpp_port: int, account: SimAccount) -> ServeProcess:
        """``stkpay serve`` on these stores, bound to the simulator as ``account``."""
        config = write_config(
            self.dir / "stkpay.toml",
            gateway_sections(
                smpp_port=smpp_port,
                system_id=account.system_id,
                password=account.password.reveal(),
                source_addr=SHORT_CODE,
                ledger_url=f"sqlite:///{self.dir / 'ledger.db'}",
                key_file=self.dir / "keys.json",
                counter_url=f"sqlite:///{self.dir / 'ota.db'}",
                calibration_url=f"sqlite:///{self.dir / 'calibration.db'}",
                throughput=5000.0,
            ),
        )
        self.gateway = ServeProcess(config, cwd=self.dir, pepper=self.pepper)
        self.gateway.start()
        return self.gateway

    def on_message(self, message: Message) -> defer.Deferred[None]:
        """An MO of a fleet phone while this process holds the bind (the OTA push): the app
        on the worker thread, then its effects."""
        d = self.work(self.app.on_message, message)

        def carry_out(effects: list[Effect]) -> None:
            for effect in effects:
                if isinstance(effect, SendSms):
                    msg = OutboundMessage(effect.to, text=effect.text, registered_delivery=False)
                else:
                    msg = self.ota_message(effect.msisdn, effect.outgoing)
                self.esme.send(msg).addErrback(lambda _f: None)

        return d.addCallback(carry_out)

    @staticmethod
    def ota_message(msisdn: str, outgoing: OutgoingCommand) -> OutboundMessage:
        return OutboundMessage(
            msisdn,
            user_data=outgoing.user_data,
            protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
            data_coding=DCS_CLASS2_8BIT,
            registered_delivery=False,
        )

    # -- a phone's actions, each awaited until the SMS it causes ------------------------

    async def act(
        self, msisdn: str, action: Callable[[VirtualPhone], list[Event]], replies: int = 1
    ) -> list[str]:
        """Run ``action`` on the phone, send its MO, wait for ``replies`` SMS; their texts."""
        assert self.network is not None
        phone = self.fleet[msisdn].phone
        before = len(phone.inbox)
        waiter = self.network.wait_inbox(msisdn, before + replies)
        self.network.act(msisdn, action)
        await _timeout(self.reactor, waiter, 15.0)
        return [sms.text for sms in list(phone.inbox)[before:]]

    async def topup(self, msisdn: str, yuan: int, pin: str = PIN) -> str:
        started = time.perf_counter()

        def enter(p: VirtualPhone) -> list[Event]:
            return [*p.select(TOPUP), *p.input(str(yuan)), *p.input(pin)]

        self.figures.attempts += 1
        texts = await self.act(msisdn, enter)
        text = texts[-1] if texts else ""
        kind = _classify(text)
        if kind == "topup_ok":
            self.figures.successes += 1
            self.figures.latencies.append(time.perf_counter() - started)
        else:
            self.figures.refusals[kind] += 1
        return kind

    async def query(self, msisdn: str, path: str, replies: int = 1) -> list[str]:
        self.figures.queries += 1
        return await self.act(msisdn, lambda p: p.select(path), replies)


async def _timeout(reactor: Any, d: defer.Deferred[None], seconds: float) -> None:
    timer = reactor.callLater(seconds, d.cancel)
    try:
        await d
    finally:
        if timer.active():
            timer.cancel()


async def _gather(coros: list[Any]) -> list[Any]:
    return list(await defer.gatherResults([defer.ensureDeferred(c) for c in coros]))


async def _wallet_demo(reactor: Any, out: _Run, wallet: _Wallet) -> list[str]:
    """The wallet part of the run; returns the summary lines."""
    assert wallet.network is not None
    network = wallet.network
    fleet = wallet.fleet
    m = list(fleet.phones)
    poor = m[4]
    await wallet.work(wallet.enrol, {poor: 10_000})
    out.say(
        f"Wallet: {len(fleet)} virtual phones ({', '.join(x.name for x in set(FLEET_MODELS))}); "
        "wallets opened and funded, cards enabled, PINs set"
    )

    # -- calibration ----------------------------------------------------------------------
    out.say("Calibration: phones power on and send their calibration SMS")
    replies = await _gather([wallet.act(x, lambda p: p.power_on()) for x in m])
    by_model: dict[str, Counter[str]] = {}
    for msisdn, texts in zip(m, replies, strict=True):
        by_model.setdefault(fleet[msisdn].model.name, Counter()).update(map(_classify, texts))
    for name, kinds in sorted(by_model.items()):
        out.say(f"  {name}: {dict(kinds)}")
    known = [x for x in m if fleet[x].model in (MODEL_A10, MODEL_B20)]
    others = [x for x in m if x not in known]
    out.check(
        "known handsets calibrated by SMS (OTA + PoR)",
        all(
            _classify(r[-1]) == "calibration_done"
            for x, r in zip(m, replies, strict=True)
            if x in known
        ),
    )
    out.check(
        "unknown or invalid handsets told to visit a business hall",
        all(
            _classify(r[-1]) == "calibration"
            for x, r in zip(m, replies, strict=True)
            if x in others
        ),
    )
    in_band = True
    for x in known:
        record = decode(fleet[x].phone.applet.calibration_file())
        in_band = in_band and (
            record.method is Method.SMS
            and record.payment_dbm is not None
            and DEFAULT_MODEL.in_band(record.payment_dbm, fleet[x].a_db, BandKind.PAYMENT)
        )
    out.check("every SMS-calibrated phone pays within 3-5 cm with its own A", in_band)

    # the instrument at the business hall, for the first phone of the unknown model
    hall = next(x for x in m if fleet[x].model == MODEL_C15)
    entry = fleet[hall]
    result = calibrate_phone(
        SimulatedInstrument(MEASUREMENT_LEVEL_DBM, entry.a_db, random.Random(15))
    )
    instrument_ok = False
    if isinstance(result.outcome, Profile):
        record = CalibrationRecord.from_profile(
            result.outcome,
            imei=parse_imei(entry.phone.imei),
            method=Method.INSTRUMENT,
            on=dt.datetime.now(dt.UTC).date(),
        )
        raw = encode(record)
        answer = ResponseApdu(b"", 0x6F00)
        for apdu in calibration_apdus(raw):
            answer = ResponseApdu.from_bytes(entry.phone.card.process(apdu.to_bytes()))
        learned = await wallet.work(
            lambda: wallet.calibration.on_instrument_result(
                entry.phone.card.iccid, entry.phone.imei, result.a_db, record, msisdn=hall
            )
        )
        instrument_ok = (
            answer.sw == 0x9000
            and answer.data == raw
            and DEFAULT_MODEL.in_band(result.outcome.payment.p_dbm, entry.a_db, BandKind.PAYMENT)
        )
        out.say(
            f"  instrument at the business hall: {hall} ({entry.model.name}, own A "
            f"{entry.a_db} dB) measured A {result.a_estimate_db:.2f} dB, payment level "
            f"{record.payment_dbm} dBm written and read back; table: {learned.status.value}"
        )
    out.check("one phone calibrated by the instrument path", instrument_ok)

    # a phone change: the first card moves to another A10 handset
    moved = m[0]
    new_imei = imei_for(MODEL_A10.tac, 900_001)
    texts = await wallet.act(moved, lambda p: p.change_imei(new_imei))
    state = await wallet.work(wallet.store.card, fleet[moved].phone.card.iccid)
    recal = (
        _classify(texts[-1]) == "calibration_done"
        and state is not None
        and state.calibrated
        and state.imei == new_imei
    )
    out.say(f"  phone change: {moved} moved to IMEI {new_imei}: {_classify(texts[-1])}")
    out.check("a phone change triggered recalibration", recal)
    out.say()

    # -- top-ups through the STK menu ---------------------------------------------------
    out.say("Top-ups, balance and last-10 through the STK menu")
    lost_resolved: list[bool] = []

    async def happy(x: str) -> list[str]:
        kinds = [await wallet.topup(x, 100), await wallet.topup(x, 200)]
        await wallet.query(x, BALANCE)
        await wallet.query(x, LAST10)
        return kinds

    async def limit(x: str) -> list[str]:
        return [await wallet.topup(x, 600), await wallet.topup(x, 500)]

    async def cap(x: str) -> list[str]:
        return [await wallet.topup(x, 500), await wallet.topup(x, 500), await wallet.topup(x, 100)]

    async def daily(x: str) -> list[str]:
        kinds = [await wallet.topup(x, 10) for _ in range(6)]
        await wallet.query(x, LAST10)
        return kinds

    async def overdraft(x: str) -> list[str]:
        return [await wallet.topup(x, 200), await wallet.topup(x, 50)]

    async def wrong_pin(x: str) -> list[str]:
        return [await wallet.topup(x, 100, WRONG_PIN), await wallet.topup(x, 100)]

    async def lost_por(x: str) -> list[str]:
        network.drop_por.add(x)
        wallet.figures.attempts += 1
        started = len(fleet[x].phone.inbox)
        dropped = network.dropped

        def enter(p: VirtualPhone) -> list[Event]:
            return [*p.select(TOPUP), *p.input("100"), *p.input(PIN)]

        network.act(x, enter)
        await _wait_until(reactor, lambda: network.dropped > dropped, 10.0)
        pending = await wallet.work(wallet.ledger.pending_loads, fleet[x].phone.card.iccid)
        texts = await wallet.query(x, BALANCE, replies=2)
        kinds = [_classify(t) for t in texts]
        settled = await wallet.work(wallet.ledger.pending_loads, fleet[x].phone.card.iccid)
        ok = (
            len(fleet[x].phone.inbox) == started + 2
            and len(pending) == 1
            and kinds == ["topup_ok", "balance"]
            and settled == []
        )
        lost_resolved.append(ok)
        if kinds and kinds[0] == "topup_ok":
            wallet.figures.successes += 1
        return kinds[:1]

    async def plain(x: str) -> list[str]:
        kinds = [await wallet.topup(x, 50)]
        await wallet.query(x, BALANCE)
        return kinds

    scripts = [happy, limit, cap, daily, overdraft, wrong_pin, lost_por]
    plans = [(scripts[i] if i < len(scripts) else plain)(x) for i, x in enumerate(m)]
    outcomes = await _gather(plans)
    for name, x, kinds in zip([s.__name__ for s in scripts], m, outcomes, strict=False):
        out.say(f"  {x} ({name}): {', '.join(kinds)}")
    f = wallet.figures
    expected = {
        "refused_topup_limit": 1,
        "refused_card_cap": 1,
        "refused_daily_count": 1,
        "refused_insufficient_cash": 1,
        "refused_wrong_pin": 1,
    }
    out.check(
        "each limit refused its top-up (500, 1000, 5 a day, no overdraft, PIN)",
        dict(f.refusals) == expected,
    )
    out.check(
        f"{f.successes} of {f.attempts} top-ups confirmed as planned",
        f.successes == f.attempts - sum(expected.values()),
    )
    out.check("the lost PoR was resolved at the next contact", lost_resolved == [True])

    def mirror() -> tuple[bool, bool, list[Any]]:
        same = all(
            wallet.ledger.wallet(x).card_balance == fleet[x].phone.applet.purse.balance for x in m
        )
        report = wallet.ledger.verify()
        return same, report.ok and report.total == 0, [report.transfers, report.accounts]

    # -- the gateway stops: SIGTERM, the windows drained, unbound, exit 0 -----------------
    gateway = wallet.gateway
    assert gateway is not None
    rss_mb, cpu_s = gateway.rss_kb() / 1024, gateway.cpu_seconds()
    code = await threads.deferToThread(gateway.stop, 20.0)
    out.say(
        f"Gateway: SIGTERM -> exit status {code}; it used {cpu_s:.1f} s CPU, "
        f"{rss_mb:.0f} MB resident"
    )
    out.check("stkpay serve drained, unbound and exited 0 on SIGTERM", code == 0)
    for sample in gateway.warning_samples:
        out.say(f"  gateway log: {sample}")
    out.check("stkpay serve logged no failure", gateway.warnings == 0)
    wallet.figures.gateway = (rss_mb, cpu_s)

    # -- an OTA push: new wallet parameters (EF 6F51) on a few cards ----------------------
    # The operator's tool binds the gateway's account now that the gateway is down, so the
    # cards' PoRs come back to it.
    wallet.esme = await wallet.operator_bind()
    targets = m[7:12]

    def push(x: str) -> OutgoingCommand:
        return wallet.platform.command(
            iccid=fleet[x].phone.card.iccid,
            msisdn=x,
            tar=TAR_RFM_UICC,
            apdus=[
                select_by_path(WALLET_PARAMETERS_FIDS, returns=SelectReturn.NOTHING),
                update_binary(PUSHED_PARAMETERS),
                read_binary(0, len(PUSHED_PARAMETERS)),
            ],
        )

    for x in targets:
        command = await wallet.work(push, x)
        result_send = await wallet.esme.send(wallet.ota_message(x, command))
        out.check(f"OTA push to {x} accepted by the SMSC", result_send.ok)
    await _wait_until(reactor, lambda: len(f.pushed) >= len(targets), 10.0)
    verified = [
        por
        for por in f.pushed
        if por.ok
        and por.response is not None
        and por.response.last.data == PUSHED_PARAMETERS
        and fleet[por.command.msisdn].phone.card.fs.read_binary(WALLET_PARAMETERS_PATH)[
            : len(PUSHED_PARAMETERS)
        ]
        == PUSHED_PARAMETERS
    ]
    out.check(
        "every OTA push PoR verified and the cards hold the new parameters",
        len(verified) == len(targets),
    )
    out.say(
        f"OTA push (RFM, UPDATE BINARY EF 6F51) to {len(targets)} cards: "
        f"{len(verified)} PoR verified"
    )
    out.say()

    same, ledger_ok, (transfers, accounts) = await wallet.work(mirror)
    out.check("every card's purse equals the ledger's card balance", same)
    out.check("Ledger.verify() passed", ledger_ok)
    cover = await wallet.work(wallet.calibration.coverage)

    ms = [v * 1000 for v in f.latencies]
    lines = [
        "Wallet summary",
        f"  phones                       {len(fleet):>6}",
        f"  top-up attempts              {f.attempts:>6}",
        f"  top-up successes             {f.successes:>6}",
    ]
    labels = {
        "refused_topup_limit": "refused: over 500 per top-up",
        "refused_card_cap": "refused: card cap 1000",
        "refused_daily_count": "refused: 5 top-ups a day",
        "refused_insufficient_cash": "refused: no overdraft",
        "refused_wrong_pin": "refused: wrong PIN",
    }
    for key, count in sorted(f.refusals.items()):
        lines.append(f"  {labels.get(key, 'refused: ' + key):<28} {count:>6}")
    lines += [
        f"  top-up latency p50 / p99     {_percentile(ms, 0.5):>6.1f} / "
        f"{_percentile(ms, 0.99):.1f} ms (MO to confirmation)",
        f"  balance and last-10 queries  {f.queries:>6}",
        f"  gateway process              {f.gateway[0]:>6.0f} MB resident, "
        f"{f.gateway[1]:.1f} s CPU (stkpay serve)",
        f"  lost PoR resolved            {'yes' if lost_resolved == [True] else 'NO':>6}",
        f"  calibration coverage         {cover.active:>6} active cards: "
        f"SMS {cover.sms} ({cover.share(cover.sms):.0%}), "
        f"instrument {cover.instrument} ({cover.share(cover.instrument):.0%}), "
        f"uncalibrated {cover.uncalibrated} ({cover.share(cover.uncalibrated):.0%})",
    ]
    for tac in cover.tacs:
        lines.append(
            f"  TAC {tac.tac} ({tac.status}): {tac.held_back} held back of {tac.cards} cards"
        )
    lines += [
        f"  OTA push EF 6F51             {len(verified)}/{len(targets)} PoR verified",
        f"  ledger verify                {'passed' if ledger_ok else 'FAILED'}"
        f" ({transfers} transfers, {accounts} accounts)",
    ]
    out.check(
        "coverage: 16 by SMS, 1 by instrument, 3 uncalibrated",
        (cover.active, cover.sms, cover.instrument, cover.uncalibrated) == (20, 16, 1, 3),
    )
    return lines


async def _demo(reactor: Any, args: argparse.Namespace, config: Config) -> int:
    with tempfile.TemporaryDirectory(prefix="stkpay-demo-") as tmp:
        wallet = _Wallet(reactor, Path(tmp))
        wallet.pool.start()
        try:
            await wallet.work(wallet.open_stores)
            try:
                return await _demo_run(reactor, config, wallet)
            finally:
                if wallet.gateway is not None:
                    await threads.deferToThread(wallet.gateway.stop, 20.0)
                await wallet.work(wallet.close_stores)
        finally:
            wallet.pool.stop()


async def _demo_run(reactor: Any, config: Config, wallet: _Wallet) -> int:
    from smsc.esme import Esme  # noqa: PLC0415 - Twisted imports only when running
    from smsc.simulator import make_service  # noqa: PLC0415

    out = _Run()
    started = time.perf_counter()
    account = SimAccount()  # the gateway's: stkpay, short code 10658888
    sim_cfg = replace(
        config.simulator,
        listen="tcp:0:interface=127.0.0.1",
        api="tcp:0:interface=127.0.0.1",
        accounts=(account, DEMO_ACCOUNT),
        receipt_delay=0.2,
        delivered_ratio=1.0,
    )
    directory = MailboxDirectory(retention=100)
    holder: list[Any] = []
    network = _Network(
        wallet.fleet,
        send_mo=lambda *a, **k: holder[0].submit_mo(*a, **k),  # noqa: PLW0108 - sim later
        later=lambda f: reactor.callLater(0, f),
        fallback=directory,
    )
    wallet.network = network
    sim_service = make_service(sim_cfg, reactor, directory=network, rng=random.Random(7))
    sim_service.startService()
    smpp_port, api_port = await sim_service.when_listening()
    sim = sim_service.simulator
    holder.append(sim)
    out.say(f"SMSC simulator: SMPP on 127.0.0.1:{smpp_port}, HTTP API on 127.0.0.1:{api_port}")

    esme_cfg = replace(
        config.smsc,
        host="127.0.0.1",
        port=smpp_port,
        system_id=DEMO_ACCOUNT.system_id,
        password=DEMO_ACCOUNT.password,
        source_addr=DEMO_CODE,
        bind="trx",
        registered_delivery=True,
    )

    def on_receipt(receipt: Receipt, token: object) -> None:
        out.receipts.append(receipt)

    esme: Esme | None = None

    def on_message(message: Message) -> defer.Deferred[None] | None:
        if message.source in wallet.fleet.phones:
            return wallet.on_message(message)
        out.mo.append(message)
        if esme is not None:
            reply = OutboundMessage(
                destination=message.source,
                text=f"收到您的{message.parts}段短信，共{len(message.text())}字。",
                registered_delivery=False,
            )
            esme.send(reply)
        return None

    esme = Esme(esme_cfg, reactor=reactor, on_message=on_message, on_receipt=on_receipt)
    esme.startService()
    await esme.when_bound()
    out.say(f"stkpay ESME bound as transceiver '{DEMO_ACCOUNT.system_id}' (short code {DEMO_CODE})")
    out.say()

    async def operator_bind() -> Esme:
        """An ESME on the gateway's account in this process (the gateway stopped)."""
        bound = Esme(
            replace(
                esme_cfg,
                system_id=account.system_id,
                password=account.password,
                source_addr=SHORT_CODE,
                registered_delivery=False,
            ),
            reactor=reactor,
            on_message=wallet.on_message,
        )
        bound.startService()
        await bound.when_bound()
        return bound

    wallet.operator_bind = operator_bind

    # -- MT: the gateway answers phones -------------------------------------------------
    out.say("MT (stkpay -> SMSC -> handset)")
    expected_receipts = 0
    for label, phone, text in MT_TEXTS:
        result = await esme.send(OutboundMessage(destination=phone, text=text))
        expected_receipts += len(result.parts)
        ids = ", ".join(result.message_ids)
        out.say(
            f"  {label}: {len(text)} chars, {len(result.parts)} part(s), "
            f"{'accepted' if result.ok else 'REFUSED'} (ids {ids})"
        )
        out.check(f"MT {label} accepted", result.ok)
    got = await _wait_until(reactor, lambda: len(out.receipts) >= expected_receipts, 10.0)
    delivered = sum(1 for r in out.receipts if r.delivered_ok)
    out.say(f"  delivery receipts: {len(out.receipts)}/{expected_receipts}, {delivered} DELIVRD")
    out.check("every MT part got a delivery receipt", got)
    for label, phone, text in MT_TEXTS:
        texts = [m.message.text() for m in directory.messages(phone)]
        out.check(f"handset {phone} got the {label} text intact", text in texts)
    out.say()

    # -- MO: phones write to the service ------------------------------------------------
    out.say("MO (handset -> SMSC -> stkpay), each answered")
    for label, phone, text in MO_TEXTS:
        mo = sim.inject_mo(phone, DEMO_CODE, text=text)
        out.say(
            f"  {label} from {phone}: {len(text)} chars in {mo.parts} part(s) -> {mo.system_id}"
        )
    got = await _wait_until(reactor, lambda: len(out.mo) >= len(MO_TEXTS), 10.0)
    out.check("every MO reached the ESME", got)
    for label, _phone, text in MO_TEXTS:
        seen = [m for m in out.mo if m.text(default=Encoding.GSM7) == text]
        out.check(f"MO {label} reassembled intact", bool(seen))
    replies = await _wait_until(
        reactor,
        lambda: all(
            any(m.message.text().startswith("收到您的") for m in directory.messages(phone))
            for _, phone, _ in MO_TEXTS
        ),
        10.0,
    )
    out.check("every MO was answered", replies)
    for m in out.mo:
        out.say(f"  stkpay received from {m.source}: {m.parts} part(s): {m.text()[:40]}...")
    out.say()

    # -- the gateway process, the wallet, calibration and an OTA push --------------------
    gateway = wallet.serve(smpp_port, account)
    try:
        health = await threads.deferToThread(gateway.wait_ready, 60.0)
    except ServeProcessError as exc:
        out.say(str(exc))
        out.check("stkpay serve became ready", False)
        await esme.stopService()
        await sim_service.stopService()
        return 1
    out.say(
        f"Gateway: stkpay serve (pid {gateway.pid}) bound as '{account.system_id}' "
        f"(short code {SHORT_CODE}); GET /healthz: {health.get('status')}"
    )
    out.check("stkpay serve became ready (bound, ledger reachable)", True)
    wallet_lines = await _wallet_demo(reactor, out, wallet)

    if wallet.esme is not None:
        await wallet.esme.stopService()
    await esme.stopService()
    stats = sim.stats()["totals"]
    await sim_service.stopService()
    elapsed = time.perf_counter() - started

    # -- summary --------------------------------------------------------------------------
    out.say("Summary")
    out.say(f"  submit_sm      {stats['submit_sm']:>6}")
    out.say(f"  deliver_sm     {stats['deliver_sm']:>6}  (MO parts and receipts)")
    out.say(f"  receipts       {stats['receipts']:>6}")
    out.say(f"  MO messages    {stats['mo_messages']:>6}")
    out.say(f"  elapsed        {elapsed:>6.2f} s")
    out.say()
    for line in wallet_lines:
        out.say(line)
    out.say()
    failed = [what for what, ok in out.checks if not ok]
    for what, ok in out.checks:
        out.say(f"  [{'ok' if ok else 'FAILED'}] {what}")
    out.say()
    out.say("demo: all checks passed" if not failed else f"demo: {len(failed)} check(s) FAILED")
    return 0 if not failed else 1


def _demo_cmd(args: argparse.Namespace, config: Config) -> int:
    return run(lambda reactor: _demo(reactor, args, config))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    p = sub.add_parser("demo", help="run the whole service on embedded defaults, with a summary")
    p.set_defaults(func=_demo_cmd)
