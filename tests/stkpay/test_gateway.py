"""The gateway service (stkpay/gateway.py) over real loopback TCP: the SMSC simulator with a
fleet of virtual phones behind it (simcard/fleet.py InProcessNetwork), a SQLite ledger in
tmp_path, and the gateway on the real reactor.

Pinned: a phone's STK top-up goes MO -> gateway -> CREDIT FOR LOAD by OTA -> PoR -> post ->
confirmation SMS, and the balance query is answered; GET /healthz is 200 "ready" while bound,
503 naming the unbound SMSC when the simulator is gone; an MO while stopping is refused
(ESME_RX_T_APPN path) and an MO the app cannot take (database down) fails the ESME's Deferred,
is answered ESME_RX_T_APPN on the wire with its traceback logged, and is redelivered; a
subscriber's MO are handled one at a time in arrival order while other workers' run beside;
stopService finishes the MO in hand, drains and unbinds; startup refuses a missing key file or
pepper in one line.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.logger import globalLogPublisher

from handlers.app import SendSms
from handlers.pins import Pepper, SqlPinStore
from ledger.service import Ledger
from ota.errors import CounterTooLow
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.smspp import parse_command_user_data
from simcard.fleet import Fleet, InProcessNetwork
from simcard.phone import SmsReceived
from smsc.reassembly import Message
from stk_menus import wallet_mo
from stk_menus.replies import render
from stkpay.config import (
    CalibrationConfig,
    Config,
    GatewayConfig,
    LedgerConfig,
    OtaConfig,
    Secret,
    SmscConfig,
)
from stkpay.gateway import GatewayError, GatewayService, GatewayStopping, make_gateway
from tests.smsc.conftest import SimHandle, start_simulator, stop_simulator
from tests.smsc.test_esme_tcp import until

FIRST = "8613900000000"
PIN = "123456"
ID_NUMBER = "11010119900307001X"
PEPPER_HEX = "a5" * 32
TOPUP = "我的手机钱包/充值"
BALANCE = "我的手机钱包/余额查询"


def gateway_config(tmp: Path, sim: SimHandle | None) -> Config:
    """Everything in ``tmp``; the ESME pointed at ``sim``; health on an ephemeral port."""
    smsc = SmscConfig(
        host="127.0.0.1",
        port=sim.port if sim is not None else 1,
        system_id=sim.system_id if sim is not None else "stkpay",
        password=Secret(sim.password if sim is not None else "secret"),
        source_addr="10658888",
        registered_delivery=False,
        reconnect_min=0.05,
        reconnect_max=0.2,
    )
    return Config(
        smsc=smsc,
        ledger=LedgerConfig(url=f"sqlite:///{tmp / 'ledger.db'}"),
        ota=OtaConfig(key_file=str(tmp / "keys.json"), counter_url=f"sqlite:///{tmp / 'ota.db'}"),
        calibration=CalibrationConfig(url=f"sqlite:///{tmp / 'calibration.db'}"),
        gateway=GatewayConfig(
            health="tcp:0:interface=127.0.0.1",
            sweep_interval=3600.0,
            grace_period=3.0,
            pin_pepper=Secret(PEPPER_HEX),
        ),
    )


def get_health(port: int) -> tuple[int, dict[str, Any]]:
    """GET /healthz (blocking: run it in a thread); (status, JSON body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


class Rig:
    """Simulator + fleet phones + the ledger's subscribers + the running gateway."""

    def __init__(self, tmp: Path, count: int = 2) -> None:
        self.tmp = tmp
        self.keystore = FileKeyStore(tmp / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)
        self.fleet = Fleet(self.keystore, count=count, first_msisdn=FIRST, seed=7)
        self.sim: SimHandle | None = None
        self.network: InProcessNetwork | None = None
        self.gateway: GatewayService | None = None
        self.health_port = 0

    async def start(self) -> None:
        holder: list[SimHandle] = []

        def send_mo(*args: Any, **kwargs: Any) -> object:
            return holder[0].simulator.submit_mo(*args, **kwargs)

        self.network = InProcessNetwork(
            self.fleet, send_mo=send_mo, later=lambda f: reactor.callLater(0, f)
        )
        self.sim = await start_simulator(directory=self.network)
        holder.append(self.sim)
        config = gateway_config(self.tmp, self.sim)
        url = config.ledger.url
        with Ledger.connect(url, group_commit=False) as ledger:
            pins = SqlPinStore(url, Pepper(bytes.fromhex(PEPPER_HEX)))
            for entry in self.fleet:
                msisdn, iccid = entry.phone.msisdn, entry.phone.card.iccid
                ledger.open_wallet(msisdn, ID_NUMBER)
                ledger.enable_card(msisdn, iccid)
                ledger.deposit(msisdn, 200_000, "bank", request_id=f"fund-{msisdn}")
                pins.set_pin(iccid, PIN)
                entry.phone.power_on()
                entry.phone.outbox()  # the calibration MO is issue 6's
            pins.close()
        self.gateway = make_gateway(config, reactor)
        self.gateway.startService()
        port = await self.gateway.when_health_listening()
        assert port is not None
        self.health_port = port
        await self.gateway.esme.when_bound()

    def sms(self, msisdn: str) -> list[str]:
        return [e.text for e in self.fleet[msisdn].events if isinstance(e, SmsReceived)]

    def act(self, msisdn: str, action: Callable[[Any], object]) -> None:
        assert self.network is not None
        self.network.act(msisdn, lambda p: list(action(p) or []))  # type: ignore[call-overload]

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        return await threads.deferToThread(get_health, self.health_port)

    async def stop(self) -> None:
        if self.gateway is not None and self.gateway.running:
            await self.gateway.stopService()
        if self.sim is not None:
            await stop_simulator(self.sim)
            self.sim = None


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A started rig; stopped at teardown."""
    r = Rig(tmp_path)
    try:
        await r.start()
        yield r
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_topup_and_balance_through_the_gateway(rig: Rig) -> None:
    """A top-up of 100 yuan from the STK menu ends in the confirmation SMS with the new
    balances and the ledger shows the card loaded; the balance query is answered too."""
    msisdn = FIRST
    rig.act(msisdn, lambda p: p.select(TOPUP))
    rig.act(msisdn, lambda p: p.input("100"))
    rig.act(msisdn, lambda p: p.input(PIN))
    expected = render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000)
    await until(lambda: expected in rig.sms(msisdn), 10, "the top-up confirmation")
    assert rig.gateway is not None
    view = rig.gateway.ledger.wallet(msisdn)
    assert (view.card_balance, view.cash, view.in_flight) == (10_000, 190_000, 0)
    assert rig.gateway.ledger.verify().ok
    before = len(rig.sms(msisdn))
    rig.act(msisdn, lambda p: p.select(BALANCE))
    await until(lambda: len(rig.sms(msisdn)) > before, 10, "the balance reply")
    reply = rig.sms(msisdn)[-1]
    assert "100.00" in reply and "1900.00" in reply
    assert rig.gateway.mo_accepted >= 3


@pytest_twisted.ensureDeferred
async def test_concurrent_topups_on_several_workers(tmp_path: Path) -> None:
    """Twelve phones top up at once, on the gateway's default workers with group commit, in two
    rounds: every load is confirmed and posted exactly once, the purses equal the ledger's
    mirrors, and the ledger verifies."""
    r = Rig(tmp_path, count=12)
    try:
        await r.start()
        assert r.gateway is not None and len(r.gateway._workers) == GatewayConfig().workers > 1
        phones = [e.phone.msisdn for e in r.fleet]
        for round_ in (1, 2):
            for msisdn in phones:
                r.act(msisdn, lambda p: p.select(TOPUP))
                r.act(msisdn, lambda p: p.input("10"))
                r.act(msisdn, lambda p: p.input(PIN))

            expected = render(
                "topup_ok",
                "zh",
                amount=1_000,
                card_balance=1_000 * round_,
                cash_balance=200_000 - 1_000 * round_,
            )

            def confirmed(text: str = expected) -> bool:
                return all(text in r.sms(m) for m in phones)

            await until(confirmed, 20, f"round {round_} of confirmations")
        ledger = r.gateway.ledger
        for entry in r.fleet:
            view = ledger.wallet(entry.phone.msisdn)
            assert (view.card_balance, view.cash, view.in_flight) == (2_000, 198_000, 0)
            assert entry.phone.applet.purse.balance == 2_000
        assert ledger.verify().ok
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_healthz_ready_then_503_when_the_smsc_is_gone(rig: Rig) -> None:
    """Bound and ledger up: 200 ready. Simulator stopped: 503 with 'not bound' as reason."""
    code, body = await rig.healthz()
    assert code == 200 and body["status"] == "ready" and body["bound"] is True
    assert body["ledger"] == "ok"
    assert rig.sim is not None and rig.gateway is not None
    await stop_simulator(rig.sim)
    rig.sim = None
    await until(lambda: not rig.gateway.esme.bound, 5, "the bind to drop")  # type: ignore[union-attr]
    code, body = await rig.healthz()
    assert code == 503 and body["status"] == "unavailable"
    assert "not bound" in body["reason"]


@pytest_twisted.ensureDeferred
async def test_healthz_503_when_the_ledger_fails(rig: Rig) -> None:
    """A ledger that no longer answers (closed) makes /healthz 503 naming the ledger."""
    assert rig.gateway is not None
    rig.gateway.ledger.close()
    code, body = await rig.healthz()
    assert code == 503 and body["ledger"] == "unreachable"
    assert "ledger" in body["reason"]


@pytest_twisted.ensureDeferred
async def test_mo_refused_when_the_app_fails_or_the_gateway_stops(rig: Rig) -> None:
    """The ESME's Deferred fails (so it answers ESME_RX_T_APPN) when the app raises, and at
    once while stopping; it succeeds only after the app returned."""
    gw = rig.gateway
    assert gw is not None
    msg = mo(FIRST)
    await gw.on_message(msg)  # accepted: the app returned
    accepted = gw.mo_accepted

    def broken(message: Message) -> list[Any]:
        raise RuntimeError("database down")

    gw.app.on_message = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await gw.on_message(msg)
    gw.stopping = True
    with pytest.raises(GatewayStopping):
        await gw.on_message(msg)
    gw.stopping = False
    assert gw.mo_accepted == accepted and gw.mo_refused == 2


def mo(source: str, payload: bytes = b"BAL") -> Message:
    """A one-part text MO from ``source`` to the gateway's short code."""
    return Message(source, "10658888", 0x00, 0, 0, payload, (), 1)


@pytest_twisted.ensureDeferred
async def test_mo_of_a_subscriber_in_order_others_beside_them(rig: Rig) -> None:
    """Twenty MO from each of forty subscribers given at once: a subscriber's MO reach the
    app one at a time in arrival order and their ESME Deferreds fire in that order, while a
    subscriber on another worker is served to the end beside one whose first MO is held."""
    gw = rig.gateway
    assert gw is not None
    workers = gw._workers
    subscribers = [f"86139{n:08d}" for n in range(40)]
    held = subscribers[0]
    free = next(s for s in subscribers if workers.index(s) != workers.index(held))
    release = threading.Event()
    lock = threading.Lock()
    running: set[str] = set()
    overlaps: list[str] = []
    seen: dict[str, list[int]] = {s: [] for s in subscribers}

    def app(message: Message) -> list[Any]:
        source, n = message.source, int(message.payload)
        with lock:
            if source in running:
                overlaps.append(source)
            running.add(source)
        if source == held and n == 0:
            assert release.wait(10)
        with lock:
            running.discard(source)
            seen[source].append(n)
        return []

    gw.app.on_message = app  # type: ignore[method-assign]
    accepted = gw.mo_accepted
    fired: dict[str, list[int]] = {s: [] for s in subscribers}
    waits = []
    for n in range(20):
        for source in subscribers:
            d = gw.on_message(mo(source, str(n).encode()))
            d.addCallback(lambda _, s=source, n=n: fired[s].append(n))
            waits.append(d)
    try:
        await until(lambda: len(fired[free]) == 20, 10, "the other worker's subscriber")
        assert seen[held] == [] and fired[held] == []
    finally:
        release.set()
    await defer.gatherResults(waits)
    expected = list(range(20))
    assert all(seen[s] == expected and fired[s] == expected for s in subscribers)
    assert overlaps == []
    assert gw.mo_accepted == accepted + 20 * len(subscribers)


@pytest_twisted.ensureDeferred
async def test_a_raising_app_is_answered_esme_rx_t_appn_then_redelivered(rig: Rig) -> None:
    """An MO whose app call raises is answered ESME_RX_T_APPN on the wire (a temporary error:
    the simulator redelivers it), the ESME logs the app's traceback; once the app takes MO
    again the redelivery is accepted."""
    gw, sim = rig.gateway, rig.sim
    assert gw is not None and sim is not None

    def broken(message: Message) -> list[Any]:
        raise RuntimeError("database down")

    def totals() -> dict[str, int]:
        return sim.simulator.stats()["totals"]  # type: ignore[no-any-return]

    failed, redelivered = totals()["deliver_sm_failed"], totals()["redeliveries"]
    accepted, refused = gw.mo_accepted, gw.mo_refused
    events: list[dict[str, Any]] = []
    gw.app.on_message = broken  # type: ignore[method-assign]
    globalLogPublisher.addObserver(events.append)
    try:
        sim.simulator.submit_mo(FIRST, "10658888", text="BAL")
        await until(lambda: totals()["deliver_sm_failed"] > failed, 10, "the refusal")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert totals()["redeliveries"] > redelivered  # ESME_RX_T_APPN: retried (SMPP 3.4 §5.1.3)
    assert gw.mo_refused == refused + 1 and gw.mo_accepted == accepted
    logged = [e["log_failure"] for e in events if "log_failure" in e]
    assert any(f.check(RuntimeError) and "broken" in f.getTraceback() for f in logged)
    del gw.app.on_message  # the app's own again
    await until(lambda: gw.mo_accepted > accepted, 10, "the redelivery accepted")


@pytest_twisted.ensureDeferred
async def test_stop_finishes_the_mo_in_hand(rig: Rig) -> None:
    """stopService while the app handles an MO: new MO are refused at once, the stop waits
    for the one in hand, whose Deferred then succeeds and whose reply reaches the phone
    before the unbind; the worker threads are gone afterwards."""
    gw = rig.gateway
    assert gw is not None
    in_app, release = threading.Event(), threading.Event()

    def slow(message: Message) -> list[Any]:
        in_app.set()
        assert release.wait(10)
        return [SendSms(FIRST, "drained")]

    gw.app.on_message = slow  # type: ignore[method-assign]
    outcome: list[object] = []
    gw.on_message(mo(FIRST)).addBoth(outcome.append)
    await until(in_app.is_set, 5, "the MO in the app")
    stopped = gw.stopService()
    try:
        assert not stopped.called
        with pytest.raises(GatewayStopping):
            await gw.on_message(mo(FIRST))
        assert outcome == []
    finally:
        release.set()
    await stopped
    assert outcome == [None] and gw.mo_accepted == 1 and gw.mo_refused == 1
    assert not gw.esme.bound
    await until(lambda: "drained" in rig.sms(FIRST), 5, "the reply sent before the unbind")
    alive = [t.name for t in threading.enumerate() if t.name.startswith("stkpay-gateway-app")]
    assert alive == []


@pytest_twisted.ensureDeferred
async def test_stop_service_drains_and_unbinds(rig: Rig) -> None:
    """stopService with a reply in flight: the reply is still delivered, then the ESME
    unbinds and the simulator has no bind left; /healthz stops listening."""
    gw, sim = rig.gateway, rig.sim
    assert gw is not None and sim is not None
    msisdn = FIRST
    rig.act(msisdn, lambda p: p.select(BALANCE))
    await until(lambda: gw.mo_accepted >= 1, 5, "the MO")
    await gw.stopService()
    assert not gw.esme.bound
    assert len(sim.simulator.stats()["binds"]) == 0
    await until(lambda: bool(rig.sms(msisdn)), 5, "the balance reply sent before the unbind")
    assert gw.mo_accepted == 1


def test_startup_refuses_missing_key_file_and_pepper(tmp_path: Path) -> None:
    """No key file, no pepper, a bad health endpoint: GatewayError, one line, no secret."""
    config = gateway_config(tmp_path, None)
    with pytest.raises(GatewayError, match="key file") as info:
        make_gateway(config, reactor, env={})
    assert "\n" not in str(info.value)
    FileKeyStore(tmp_path / "keys.json")
    generate_keyset(FileKeyStore(tmp_path / "keys.json"), "ota", 1, KeyAlgorithm.AES)
    no_pepper = dataclasses.replace(
        config, gateway=dataclasses.replace(config.gateway, pin_pepper=Secret(""))
    )
    with pytest.raises(GatewayError, match="STKPAY_PIN_PEPPER"):
        make_gateway(no_pepper, reactor, env={})
    bad_health = dataclasses.replace(
        config, gateway=dataclasses.replace(config.gateway, health="bogus:1")
    )
    with pytest.raises(GatewayError, match=r"gateway\.health") as info:
        make_gateway(bad_health, reactor, env={})
    assert PEPPER_HEX not in str(info.value)


def test_durable_mo_history_refuses_a_replay_across_a_restart(tmp_path: Path) -> None:
    """[ota] mo_history = "durable": a card's MO accepted by one gateway is refused as a replay
    (other octets on its counter) by the next gateway on the same stores; "memory" (the
    default) keeps the counters in the process."""
    generate_keyset(FileKeyStore(tmp_path / "keys.json"), "ota", 1, KeyAlgorithm.AES)
    config = gateway_config(tmp_path, None)
    durable = dataclasses.replace(config, ota=dataclasses.replace(config.ota, mo_history="durable"))
    keystore = FileKeyStore(tmp_path / "keys.json")
    phone = Fleet(keystore, count=1, first_msisdn=FIRST, seed=7)[FIRST].phone
    iccid = phone.card.iccid

    def packet(counter: int, action: wallet_mo.WalletMo) -> bytes:
        return parse_command_user_data(
            list(phone.applet.secured_user_data(action, counter=counter))
        )

    balance = wallet_mo.Balance(wallet_mo.Language.ZH, 0, None)
    last10 = wallet_mo.Last10(wallet_mo.Language.ZH, 0, None)
    first = make_gateway(durable, reactor, env={})
    try:
        assert not first.app.receiver.receive(iccid, packet(7, balance)).redelivered
    finally:
        for close in first._closers:
            close()
    second = make_gateway(durable, reactor, env={})
    try:
        assert second.app.receiver.receive(iccid, packet(7, balance)).redelivered
        with pytest.raises(CounterTooLow):
            second.app.receiver.receive(iccid, packet(7, last10))
    finally:
        for close in second._closers:
            close()
    in_memory = make_gateway(config, reactor, env={})
    try:
        assert not in_memory.app.receiver.receive(iccid, packet(7, last10)).redelivered
    finally:
        for close in in_memory._closers:
            close()
