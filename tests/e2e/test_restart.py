"""The gateway killed between reserve and post, and restarted (issue 5, Acceptance, second
item): ``stkpay serve`` runs as a real process on SQLite stores in ``tmp_path``; this test
process hosts the SMSC simulator and the phones behind it on the reactor (conftest.py's
:class:`Network`).

Two top-ups are left half done: phone A's card loaded but its PoR is held back in the network;
phone B's CREDIT FOR LOAD is held back, so its card never loads. Both reserves are committed
(``stkpay ledger in-doubt`` lists them, the cash is in flight). The gateway is SIGKILLed and
started again on the same stores (it has no note of either load in memory, no pending OTA
command). A's PoR then arrives: verified with A's card keys, its TAC with the note stored with
the reservation, it posts A's load at once, and A's next contact (a balance query) posts
nothing more; B's next top-up shows its counter never moved, so B's load is voided and the new
top-up done. Then ``stkpay ledger verify`` exits 0, nothing is pending,
every wallet adds up, the purses equal the card mirrors, and SIGTERM ends the gateway with 0.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import threads

from handlers.pins import Pepper, SqlPinStore
from ledger.service import Ledger
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from simcard.phone import SmsReceived
from stk_menus.replies import render
from tests.e2e.conftest import (
    BALANCE,
    CASH,
    FIRST,
    PEPPER_HEX,
    PHONES,
    PIN,
    PRELOAD,
    SECOND,
    SHORT_CODE,
    TOPUP,
    Network,
    cli_env,
    make_fleet,
    open_wallets,
    stkpay,
)
from tests.smsc.conftest import SimHandle, start_simulator, stop_simulator
from tests.smsc.test_esme_tcp import until

#: Process start-up on a loaded 2-core machine can take seconds.
START_WAIT = 60.0
WAIT = 20.0


class Serve:
    """``stkpay --config CONFIG serve`` as a child process; stderr lines collected."""

    def __init__(self, config: Path, env: dict[str, str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "stkpay", "--config", str(config), "serve"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def text(self) -> str:
        return "".join(self.lines)

    async def bound(self) -> None:
        await until(
            lambda: self.saw("bound as stkpay") or self.popen.poll() is not None,
            START_WAIT,
            "the gateway to bind",
        )
        assert self.popen.poll() is None, self.text()

    async def ended(self, timeout: float) -> int:
        await until(lambda: self.popen.poll() is not None, timeout, "the gateway to exit")
        code = self.popen.wait()
        self._thread.join(timeout=5)
        return code

    def close(self) -> None:
        """Kill it if still running; reap it; close the pipe."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)
        self._thread.join(timeout=5)
        if self.popen.stderr is not None:
            self.popen.stderr.close()


def write_config(tmp: Path, sim: SimHandle) -> Path:
    path = tmp / "stkpay.toml"
    path.write_text(
        "[smsc]\n"
        f'host = "127.0.0.1"\nport = {sim.port}\nsystem_id = "{sim.system_id}"\n'
        f'password = "{sim.password}"\nsource_addr = "{SHORT_CODE}"\n'
        "registered_delivery = false\nreconnect_min = 0.2\nreconnect_max = 1.0\n"
        f'[ledger]\nurl = "sqlite:///{tmp / "ledger.db"}"\n'
        f'[ota]\nkey_file = "{tmp / "keys.json"}"\ncounter_url = "sqlite:///{tmp / "ota.db"}"\n'
        f'[calibration]\nurl = "sqlite:///{tmp / "calibration.db"}"\n'
        '[gateway]\nhealth = "none"\nsweep_interval = 3600.0\ngrace_period = 5.0\n',
        encoding="utf-8",
    )
    return path


class Site:
    """The test's side: simulator, phones, and its own connection to the SQLite ledger."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keystore = FileKeyStore(tmp / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)
        self.fleet = make_fleet(self.keystore)
        self.network = Network(self.fleet)
        self.url = f"sqlite:///{tmp / 'ledger.db'}"
        self.ledger = Ledger.connect(self.url, group_commit=False)
        self.sim: SimHandle | None = None
        self.procs: list[Serve] = []
        self.config = tmp / "stkpay.toml"

    async def start(self) -> None:
        self.sim = await start_simulator(directory=self.network)
        self.network.sim = self.sim
        pins = SqlPinStore(self.url, Pepper(bytes.fromhex(PEPPER_HEX)))
        try:
            open_wallets(self.ledger, pins, self.fleet)
        finally:
            pins.close()
        self.config = write_config(self.tmp, self.sim)

    async def serve(self) -> Serve:
        proc = Serve(self.config, cli_env(self.tmp), self.tmp)
        self.procs.append(proc)
        await proc.bound()
        return proc

    async def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return await threads.deferToThread(stkpay, self.tmp, self.config, *argv)

    def sms(self, msisdn: str) -> list[str]:
        return [e.text for e in self.fleet[msisdn].events if isinstance(e, SmsReceived)]

    def act(self, msisdn: str, action: Any) -> None:
        self.network.inner.act(msisdn, lambda p: list(action(p) or []))

    async def stop(self) -> None:
        try:
            for proc in self.procs:
                if proc.popen.poll() is None:
                    proc.popen.send_signal(signal.SIGTERM)
            for proc in self.procs:
                if proc.popen.poll() is None:
                    with contextlib.suppress(AssertionError):  # killed by close() below
                        await proc.ended(15)
                proc.close()
            if self.sim is not None:
                await stop_simulator(self.sim)
        finally:
            self.ledger.close()


@pytest_twisted.async_yield_fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(tmp_path)
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_gateway_killed_between_reserve_and_post(site: Site) -> None:
    """See the module docstring."""
    net = site.network
    first = await site.serve()

    # A: the card loads, its PoR is held back.  B: the CREDIT never reaches the card.
    net.hold_por.add(FIRST)
    net.hold_mt.add(SECOND)
    site.act(FIRST, lambda p: [*p.select(TOPUP), *p.input("100"), *p.input(PIN)])
    site.act(SECOND, lambda p: [*p.select(TOPUP), *p.input("20"), *p.input(PIN)])
    await until(
        lambda: len(net.held_por) == 1 and len(net.held_mt) == 1,
        WAIT,
        "A's PoR and B's CREDIT, held back",
    )
    assert site.fleet[FIRST].phone.applet.purse.balance == 10_000
    assert site.fleet[SECOND].phone.applet.purse.balance == 0

    # SIGKILL between reserve and post.
    first.popen.send_signal(signal.SIGKILL)
    assert await first.ended(10) == -signal.SIGKILL
    net.hold_por.clear()
    net.hold_mt.clear()
    net.held_mt.clear()  # B's CREDIT is lost with the network
    late_por = list(net.held_por)
    net.held_por.clear()

    # The reserves were committed: the loads are pending, their cash in flight.
    listed = await site.run("ledger", "in-doubt", "--json")
    assert listed.returncode == 0, listed.stderr
    pending = {row["msisdn"]: row for row in json.loads(listed.stdout)}
    assert {m: (r["amount_fen"], r["state"]) for m, r in pending.items()} == {
        FIRST: (10_000, "reserved"),
        SECOND: (2_000, "reserved"),
    }
    a, b = site.ledger.wallet(FIRST), site.ledger.wallet(SECOND)
    assert (a.cash, a.in_flight, a.card_balance) == (190_000, 10_000, 0)
    assert (b.cash, b.in_flight, b.card_balance) == (3_000, 2_000, 0)

    # Restart on the same stores; A's PoR arrives late, then A and B contact again.
    await site.serve()
    for mo in late_por:
        net.submit(mo)
    await until(lambda: len(site.sms(FIRST)) >= 1, WAIT, "A's confirmation, from its late PoR")
    assert site.ledger.wallet(FIRST).card_balance == 10_000
    site.act(FIRST, lambda p: p.select(BALANCE))
    await until(lambda: len(site.sms(FIRST)) >= 2, WAIT, "A's confirmation and balance")
    assert site.sms(FIRST) == [
        render("topup_ok", "zh", amount=10_000, card_balance=10_000, cash_balance=190_000),
        render("balance", "zh", card_balance=10_000, cash_balance=190_000),
    ]
    site.act(SECOND, lambda p: [*p.select(TOPUP), *p.input("30"), *p.input(PIN)])
    await until(lambda: len(site.sms(SECOND)) >= 2, WAIT, "B's void and new top-up")
    assert site.sms(SECOND) == [
        render("topup_failed", "zh"),
        render("topup_ok", "zh", amount=3_000, card_balance=3_000, cash_balance=2_000),
    ]

    # Nothing lost, nothing posted twice.
    verify = await site.run("ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    listed = await site.run("ledger", "in-doubt", "--json")
    assert json.loads(listed.stdout) == []
    report = site.ledger.verify()
    assert report.ok and report.total == 0, report.problems
    for msisdn in PHONES:
        view = site.ledger.wallet(msisdn)
        purse = site.fleet[msisdn].phone.applet.purse.balance
        assert view.in_flight == 0
        assert view.cash + view.card_balance == CASH[msisdn], view
        assert purse - PRELOAD.get(msisdn, 0) == view.card_balance, (msisdn, purse, view)
        posts = [e for e in site.ledger.history(msisdn, last=100) if e.code == "topup_post"]
        assert len({e.context.get("load_id") for e in posts}) == len(posts)
        assert sum(e.amount for e in posts) == view.card_balance

    # SIGTERM: drain, unbind, exit 0.
    second = site.procs[-1]
    second.popen.send_signal(signal.SIGTERM)
    assert await second.ended(15) == 0, second.text()
    assert "Traceback" not in second.text() and PEPPER_HEX not in second.text()
