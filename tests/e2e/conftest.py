"""The end-to-end rig: the SMSC simulator on loopback TCP with a fleet of virtual phones behind
it (simcard/fleet.py), and the real gateway (stkpay/gateway.py) bound to it on the reactor.

``rig`` is parametrized over two backends:

* ``sqlite``: ledger, PIN store and OTA counters in SQLite files in ``tmp_path``, the losable
  state in process (the embedded default);
* ``pg``: ledger, PIN store and OTA counters in a throwaway PostgreSQL database
  (tests/ledger/conftest.py), the state in Redis (``STKPAY_TEST_REDIS``, default
  ``redis://127.0.0.1:6379/9``) under a key prefix of its own, deleted afterwards.

Without PostgreSQL or Redis the ``pg`` cases skip, except under ``CI=true`` where they fail.

The network between phones and simulator (:class:`Network`) records every MO a phone sends,
and can hold back a phone's PoRs (the PoR "lost") or its OTA MT (the CREDIT never reaching the
card), to release them later. The gateway's clock is a settable fake (:class:`Clock`): the
ledger's local day, the CREDIT's date and time, the PIN and load bookkeeping all read it.

After every test the rig audits (:meth:`Rig.audit`): the ledger verifies (every balance
recomputed from the journal, total 0), each wallet's cash + card mirror + in flight equals
what was deposited, no load is posted twice, the posted loads add up to the card mirror, and
the phone's purse equals the mirror (plus what the card held before it met the platform).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import redis
from twisted.internet import reactor

from handlers.pins import Pepper, SqlPinStore
from ledger.service import Ledger
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.pboc import PurseKeys
from simcard.card import VirtualCard
from simcard.fleet import DEFAULT_MODELS, Fleet, FleetPhone, InProcessNetwork, iccid_for
from simcard.phone import SmsReceived, VirtualPhone
from simcard.purse import Purse
from simcard.wallet_applet import WalletApplet
from smsc.handset import Handset, MtMessage
from smsc.udh import split_udh
from stkpay.config import (
    CalibrationConfig,
    Config,
    GatewayConfig,
    LedgerConfig,
    OtaConfig,
    Secret,
    SmscConfig,
    StateConfig,
)
from stkpay.gateway import GatewayService, make_gateway
from tests.ledger.conftest import throwaway_pg_database
from tests.smsc.conftest import SimHandle, start_simulator, stop_simulator
from tests.smsc.test_esme_tcp import until

FIRST = "8613900000000"  # 2000 yuan of cash
SECOND = "8613900000001"  # 50 yuan of cash
CAPPED = "8613700000001"  # its card holds 900 yuan the platform never saw
PHONES = (FIRST, SECOND, CAPPED)
CASH = {FIRST: 200_000, SECOND: 5_000, CAPPED: 200_000}
PRELOAD = {CAPPED: 90_000}
PIN = "123456"
WRONG_PIN = "000000"
ID_NUMBER = "11010119900307001X"
PEPPER_HEX = "a5" * 32
SHORT_CODE = "10658888"
TOPUP = "我的手机钱包/充值"
BALANCE = "我的手机钱包/余额查询"
LAST10 = "我的手机钱包/最近10笔交易"
#: 10:30 in Asia/Shanghai: the local day does not change under the tests' feet.
START = dt.datetime(2024, 5, 20, 2, 30, tzinfo=dt.UTC)
#: IEI of a response packet (PoR), 3GPP TS 31.115 §4.4.
IEI_POR = 0x71
#: Seconds to wait for anything crossing the rig (loaded 2-core machine: generous).
WAIT = 20.0
REDIS_URL = os.environ.get("STKPAY_TEST_REDIS", "redis://127.0.0.1:6379/9")


class Clock:
    """The gateway's and the test ledger's clock: aware UTC, moved by the test."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class Backend:
    """Where the gateway keeps its stores."""

    name: str
    ledger_url: str
    counter_url: str
    state_url: str = ""
    state_prefix: str = "stkpay:"


def _unavailable(what: str, reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} required under CI=true: {reason}")
    pytest.skip(f"{what} unreachable: {reason}")


def _redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        _unavailable("Redis", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return client


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("pg", id="pg", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """SQLite + in-process state, or PostgreSQL + Redis (a unique prefix, deleted after)."""
    if request.param == "sqlite":
        yield Backend(
            "sqlite", f"sqlite:///{tmp_path / 'ledger.db'}", f"sqlite:///{tmp_path / 'ota.db'}"
        )
        return
    client = _redis_client()
    prefix = f"stkpay-e2e-{uuid.uuid4().hex[:12]}:"
    try:
        with throwaway_pg_database() as url:
            yield Backend("pg", url, url, REDIS_URL, prefix)
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


# -- the network between the phones and the simulator -------------------------------------------


@dataclass(frozen=True)
class Mo:
    """One MO a phone handed to the network, as the simulator's ``submit_mo`` takes it."""

    msisdn: str
    destination: str
    user_data: tuple[bytes, ...]
    protocol_id: int
    data_coding: int
    tlvs: dict[int, bytes] = field(default_factory=dict, hash=False)

    @property
    def is_por(self) -> bool:
        ies, _ = split_udh(self.user_data[0])
        return any(ie.iei == IEI_POR for ie in ies)


class _Gate:
    """A phone's handset as the simulator sees it: OTA MT may be held back."""

    def __init__(self, network: Network, msisdn: str, inner: Handset) -> None:
        self._network = network
        self._msisdn = msisdn
        self._inner = inner

    def deliver(self, message: MtMessage) -> bool:
        net = self._network
        if self._msisdn in net.hold_mt and message.message.protocol_id == 0x7F:
            net.held_mt.append((self._inner, message))
            return True
        return self._inner.deliver(message)


class Network:
    """The fleet behind the simulator (:class:`simcard.fleet.InProcessNetwork`), recording
    each MO and holding back PoRs or OTA MT of the MSISDNs in ``hold_por`` / ``hold_mt``."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.sim: SimHandle | None = None
        self.inner = InProcessNetwork(
            fleet, send_mo=self._send_mo, later=lambda f: cast(Any, reactor).callLater(0, f)
        )
        self.sent: list[Mo] = []
        self.hold_por: set[str] = set()
        self.held_por: list[Mo] = []
        self.hold_mt: set[str] = set()
        self.held_mt: list[tuple[Handset, MtMessage]] = []

    def handset(self, msisdn: str) -> Handset | None:
        inner = self.inner.handset(msisdn)
        if inner is None or msisdn not in self.fleet.phones:
            return inner
        return _Gate(self, msisdn, inner)

    def _send_mo(
        self,
        source: str,
        destination: str,
        *,
        user_data: Sequence[bytes] | None = None,
        protocol_id: int = 0,
        data_coding: int | None = None,
        tlvs: Mapping[int, bytes] | None = None,
    ) -> object:
        assert user_data is not None and data_coding is not None  # a phone's MO
        msisdn = source
        mo = Mo(msisdn, destination, tuple(user_data), protocol_id, data_coding, dict(tlvs or {}))
        self.sent.append(mo)
        if mo.is_por and msisdn in self.hold_por:
            self.held_por.append(mo)
            return None
        return self.submit(mo)

    def submit(self, mo: Mo) -> object:
        """Hand ``mo`` to the simulator (again, for a duplicate)."""
        assert self.sim is not None
        return self.sim.simulator.submit_mo(
            mo.msisdn,
            mo.destination,
            user_data=mo.user_data,
            protocol_id=mo.protocol_id,
            data_coding=mo.data_coding,
            tlvs=mo.tlvs,
        )

    def release_por(self) -> int:
        """Send the held PoRs now; how many."""
        held, self.held_por = self.held_por, []
        for mo in held:
            self.submit(mo)
        return len(held)

    def release_mt(self) -> int:
        """Deliver the held OTA MT now; how many."""
        held, self.held_mt = self.held_mt, []
        for handset, message in held:
            handset.deliver(message)
        return len(held)


# -- the rig --------------------------------------------------------------------------------


def gateway_config(tmp: Path, sim: SimHandle, backend: Backend) -> Config:
    """The in-process gateway's configuration: stores per ``backend``, the ESME at ``sim``."""
    return Config(
        smsc=SmscConfig(
            host="127.0.0.1",
            port=sim.port,
            system_id=sim.system_id,
            password=Secret(sim.password),
            source_addr=SHORT_CODE,
            registered_delivery=False,
            reconnect_min=0.05,
            reconnect_max=0.2,
        ),
        ledger=LedgerConfig(url=backend.ledger_url),
        ota=OtaConfig(key_file=str(tmp / "keys.json"), counter_url=backend.counter_url),
        calibration=CalibrationConfig(url=f"sqlite:///{tmp / 'calibration.db'}"),
        state=StateConfig(url=backend.state_url, prefix=backend.state_prefix),
        gateway=GatewayConfig(
            health="none",
            sweep_interval=3600.0,
            grace_period=3.0,
            pin_pepper=Secret(PEPPER_HEX),
        ),
    )


def make_fleet(keystore: FileKeyStore) -> Fleet:
    """FIRST and SECOND with empty purses; CAPPED, built by hand, whose purse holds PRELOAD
    already and whose own cap (2000 yuan) would let it pass the product's 1000: the
    platform's judgement is what refuses it."""
    fleet = Fleet(keystore, count=2, first_msisdn=FIRST, seed=7)
    iccid = iccid_for(CAPPED)
    keys = keystore.card_keys(iccid, "ota")
    purse = Purse(
        PurseKeys.from_card_keys(keys),
        balance=PRELOAD[CAPPED],
        cap=200_000,
        rng=random.Random(1),
    )
    card = VirtualCard(iccid)
    card.register(purse)
    phone = VirtualPhone(CAPPED, "356938035643809", WalletApplet(card, purse, keys))
    fleet.phones[CAPPED] = FleetPhone(phone, DEFAULT_MODELS[0], Decimal(10))
    return fleet


def open_wallets(ledger: Ledger, pins: SqlPinStore, fleet: Fleet) -> None:
    """Open, fund (CASH) and enable each phone's wallet and card; set the PIN; power on."""
    for entry in fleet:
        phone = entry.phone
        msisdn, iccid = phone.msisdn, phone.card.iccid
        ledger.open_wallet(msisdn, ID_NUMBER)
        ledger.enable_card(msisdn, iccid)
        ledger.deposit(msisdn, CASH[msisdn], "bank", request_id=f"fund-{msisdn}")
        pins.set_pin(iccid, PIN)
        phone.power_on()
        phone.outbox()  # the calibration MO (issue 6) is not these tests' business


class Rig:
    """Simulator + phones + the ledger's subscribers + the gateway, all on the reactor."""

    def __init__(self, tmp: Path, backend: Backend) -> None:
        self.tmp = tmp
        self.backend = backend
        self.clock = Clock()
        self.keystore = FileKeyStore(tmp / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)
        self.fleet = make_fleet(self.keystore)
        self.network = Network(self.fleet)
        self.deposited = dict(CASH)
        self.sim: SimHandle | None = None
        self.gateway: GatewayService | None = None
        #: Further instances on the same config and stores (:meth:`add_gateway`).
        self.others: list[GatewayService] = []
        self.config: Config | None = None
        #: The test's own connection to the gateway's ledger (the gateway's is its thread's).
        self.ledger = Ledger.connect(backend.ledger_url, clock=self.clock, group_commit=False)
        self.pins = SqlPinStore(backend.ledger_url, Pepper(bytes.fromhex(PEPPER_HEX)))

    async def start(self) -> None:
        self.sim = await start_simulator(directory=self.network, redelivery_delay=0.05)
        self.network.sim = self.sim
        open_wallets(self.ledger, self.pins, self.fleet)
        self.config = gateway_config(self.tmp, self.sim, self.backend)
        self.gateway = make_gateway(self.config, reactor, clock=self.clock)
        self.gateway.startService()
        await self.gateway.esme.when_bound()

    async def add_gateway(self) -> GatewayService:
        """Another gateway instance on the same config and stores, bound to the same
        simulator account (which spreads MO over the account's binds, round-robin)."""
        assert self.config is not None
        gateway = make_gateway(self.config, reactor, clock=self.clock)
        self.others.append(gateway)
        gateway.startService()
        await gateway.esme.when_bound()
        return gateway

    @property
    def gateways(self) -> list[GatewayService]:
        """Every gateway instance started, the first one first."""
        return [*([self.gateway] if self.gateway is not None else []), *self.others]

    async def stop(self) -> None:
        try:
            for gateway in reversed(self.gateways):
                if gateway.running:
                    await gateway.stopService()
            if self.sim is not None:
                await stop_simulator(self.sim)
                self.sim = None
        finally:
            self.ledger.close()
            self.pins.close()

    # -- the phones ----------------------------------------------------------------------

    def phone(self, msisdn: str) -> VirtualPhone:
        return self.fleet[msisdn].phone

    def iccid(self, msisdn: str) -> str:
        return self.phone(msisdn).card.iccid

    def purse(self, msisdn: str) -> int:
        return self.phone(msisdn).applet.purse.balance

    def sms(self, msisdn: str) -> list[str]:
        """Every SMS the phone received, oldest first."""
        return [e.text for e in self.fleet[msisdn].events if isinstance(e, SmsReceived)]

    def act(self, msisdn: str, action: Callable[[VirtualPhone], Any]) -> None:
        """Drive the phone's STK menu; what it sends goes out on the next reactor turn."""
        self.network.inner.act(msisdn, lambda p: list(action(p) or []))

    def topup(self, msisdn: str, yuan: int, pin: str = PIN) -> None:
        """我的手机钱包/充值, the amount, the PIN (the secured MO leaves the phone)."""
        self.act(msisdn, lambda p: [*p.select(TOPUP), *p.input(str(yuan)), *p.input(pin)])

    def select(self, msisdn: str, path: str) -> None:
        self.act(msisdn, lambda p: p.select(path))

    async def wait_sms(self, msisdn: str, count: int, what: str = "") -> list[str]:
        """Wait until the phone holds ``count`` SMS; all of them."""
        await until(
            lambda: len(self.sms(msisdn)) >= count,
            WAIT,
            what or f"{count} SMS at {msisdn} (has {self.sms(msisdn)})",
        )
        return self.sms(msisdn)

    async def reply(self, msisdn: str, send: Callable[[], object], expect: int = 1) -> list[str]:
        """Run ``send`` and wait for ``expect`` more SMS; the new ones."""
        before = len(self.sms(msisdn))
        send()
        return (await self.wait_sms(msisdn, before + expect))[before:]

    async def topup_reply(
        self, msisdn: str, yuan: int, pin: str = PIN, *, expect: int = 1
    ) -> list[str]:
        """A top-up from the STK menu; the ``expect`` SMS it brought."""
        return await self.reply(msisdn, lambda: self.topup(msisdn, yuan, pin), expect)

    async def query(self, msisdn: str, path: str = BALANCE, *, expect: int = 1) -> list[str]:
        """A query from the STK menu; the ``expect`` SMS it brought (settled loads' first)."""
        return await self.reply(msisdn, lambda: self.select(msisdn, path), expect)

    def secured_mo(self, msisdn: str) -> list[Mo]:
        """The wallet actions (not PoRs) the phone sent, oldest first."""
        return [m for m in self.network.sent if m.msisdn == msisdn and not m.is_por]

    # -- the ledger ----------------------------------------------------------------------

    def journal(self) -> int:
        """Transfers in the journal."""
        return self.ledger.verify().transfers

    def posts(self, msisdn: str) -> list[tuple[str, int]]:
        """(load id, amount) of each topup_post on the subscriber's accounts."""
        return [
            (str(e.context.get("load_id")), e.amount)
            for e in self.ledger.history(msisdn, last=500)
            if e.code == "topup_post"
        ]

    def audit(self) -> None:
        """The invariants every test ends with (see the module docstring)."""
        report = self.ledger.verify()
        assert report.ok and report.total == 0, report.problems
        for msisdn in PHONES:
            view = self.ledger.wallet(msisdn)
            assert view.cash + view.card_balance + view.in_flight == self.deposited[msisdn], view
            posts = self.posts(msisdn)
            ids = [load_id for load_id, _ in posts]
            assert len(ids) == len(set(ids)), f"a load posted twice: {posts}"
            assert sum(amount for _, amount in posts) == view.card_balance, (posts, view)
            if view.in_flight == 0:
                assert self.purse(msisdn) - PRELOAD.get(msisdn, 0) == view.card_balance, (
                    msisdn,
                    self.purse(msisdn),
                    view,
                )
            confirmations = [t for t in self.sms(msisdn) if t.startswith("充值成功")]
            assert len(confirmations) == len(posts), (confirmations, posts)


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path, backend: Backend) -> AsyncIterator[Rig]:
    """A started rig on ``backend``, audited and stopped at teardown."""
    r = Rig(tmp_path, backend)
    try:
        await r.start()
        yield r
        r.audit()
    finally:
        await r.stop()


ROOT = Path(__file__).resolve().parents[2]


def cli_env(tmp: Path) -> dict[str, str]:
    """The environment of a ``stkpay`` process: no STKPAY_* of the caller's but the test pepper."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STKPAY_")}
    return env | {"PYTHONPATH": str(ROOT), "HOME": str(tmp), "STKPAY_PIN_PEPPER": PEPPER_HEX}


def stkpay(tmp: Path, config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """One ``stkpay --config CONFIG ARGV`` run (blocking: call it from a thread)."""
    return subprocess.run(
        [sys.executable, "-m", "stkpay", "--config", str(config), *argv],
        cwd=tmp,
        env=cli_env(tmp),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ledger_config(tmp: Path, ledger_url: str, name: str = "cli.toml") -> Path:
    """A configuration naming only the ledger (what the business hall's CLI needs)."""
    config = tmp / name
    config.write_text(f'[ledger]\nurl = "{ledger_url}"\n', encoding="utf-8")
    return config
