"""Benchmark: SMS calibrations per second and latency, calibration SMS to OTA command.

Issue 6, Acceptance, last bullet: calibrations/s and p99 latency from a phone's calibration
SMS to the profile-writing OTA command reaching that phone, through the SMSC simulator;
target **p99 under 40 ms at 200 calibrations/s**.

The set-up is ``stkpay demo``'s (``stkpay/cmd_demo.py``), in one process: the simulator on
loopback TCP (ephemeral ports), stkpay's ESME bound to it as a transceiver, a fleet of
virtual phones behind the simulator (:class:`simcard.fleet.InProcessNetwork`), and every MO
of a fleet phone handled by :class:`handlers.app.WalletApp` with a
:class:`calibration.service.CalibrationService` on one worker thread (ledger, calibration
store, OTA counters: SQLite files in a temporary directory). Every phone is of a handset
model in the calibration table (so each calibration SMS yields an OTA command), its wallet
opened and card enabled (the app resolves the card by MSISDN through the ledger).

One calibration: a phone is switched on for the first time (``power_on``): its applet sends
the secured calibration MO (ETSI TS 102 225 command packet); the simulator delivers it to
the ESME; the app authenticates it, resolves the card, the service chooses the profile and
builds the RFM command (UPDATE BINARY of the calibration file); the ESME submits it as an
SMS-PP data download (TP-PID 0x7F, UDH IEI 0x70, TS 102 225 §5.1 / TS 23.040 §9.2.3.9);
the simulator delivers it to the phone. The latency ends there, at the handset adapter's
``deliver`` of that MT. (The PoR and the "calibrated" SMS follow and load the system too,
but are not timed.)

Rows:

* **open loop, paced**: ``--rate`` calibrations/s for ``--seconds``, each on a fixed
  schedule and by a fresh phone; latency from the *scheduled* instant, so lateness of the
  pacer or queueing anywhere counts (no coordinated omission). Completed/s counts the OTA
  commands that reached their phone inside the run window.
* **closed loop**: ``--concurrency`` calibrations outstanding, each completion starting the
  next (fresh phones again): the maximum sustained rate.

Usage::

    .venv/bin/python bench/calibration.py            # 10 s paced + closed loop
    .venv/bin/python bench/calibration.py --quick    # 3 s paced, shorter closed loop
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

# Run as a script, this file's folder comes first on sys.path, and this file's name would
# shadow the project's ``calibration`` package: put the project root before it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from handlers.app import Effect, SendSms
from handlers.pins import Pepper
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.platform import OutgoingCommand
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD
from simcard.fleet import Fleet, HandsetModelSpec, InProcessNetwork
from simcard.wallet_applet import TERMINAL_ID
from smsc.handset import Handset, MailboxDirectory, MtMessage
from smsc.message import OutboundMessage
from smsc.reassembly import Message
from stkpay.config import Config, SimAccount
from stkpay.embedded import EmbeddedPlatform
from stkpay.runner import run

#: UDH IEI of a secured command packet (TS 23.040 §9.2.3.24, IEI 0x70).
IEI_COMMAND_PACKET = 0x70
TARGET_RATE = 200.0
TARGET_P99_MS = 40.0
FIRST_MSISDN = "8613600000000"
ID_NUMBER = "11010119900307001X"
SHORT_CODE = "10658888"
#: Two handset models known to the calibration table (A within the payment band).
MODELS = (
    HandsetModelSpec("Bench A10", "35693803", Decimal(10)),
    HandsetModelSpec("Bench B20", "49015420", Decimal(20)),
)
WARMUP = 100
#: How long the paced row waits, after its last injection, for the OTA commands still due.
DRAIN_S = 10.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _is_calibration_command(message: MtMessage) -> bool:
    """An SMS-PP data download carrying a command packet (TP-PID 0x7F, UDH IEI 0x70)."""
    msg = message.message
    return msg.protocol_id == TP_PID_SIM_DATA_DOWNLOAD and any(
        ie.iei == IEI_COMMAND_PACKET for ie in msg.ies
    )


class _TimedNetwork(InProcessNetwork):
    """The fleet behind the simulator; stamps the arrival of each phone's OTA command."""

    def __init__(self, fleet: Fleet, **kwargs: Any) -> None:
        super().__init__(fleet, **kwargs)
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, defer.Deferred[float]] = {}
        self.other_mt = 0

    def handset(self, msisdn: str) -> Handset | None:
        inner = super().handset(msisdn)
        if inner is None or msisdn not in self.fleet.phones:
            return inner
        return _Stamped(self, msisdn, inner)

    def stamp(self, msisdn: str, message: MtMessage) -> None:
        if not _is_calibration_command(message):
            self.other_mt += 1
            return
        if msisdn in self.arrived:
            return
        now = time.perf_counter()
        self.arrived[msisdn] = now
        waiter = self.waiters.pop(msisdn, None)
        if waiter is not None:
            waiter.callback(now)

    def wait(self, msisdn: str) -> defer.Deferred[float]:
        d: defer.Deferred[float] = defer.Deferred()
        self.waiters[msisdn] = d
        return d


class _Stamped:
    """A fleet phone's handset that stamps an OTA command before handing it to the phone."""

    def __init__(self, network: _TimedNetwork, msisdn: str, inner: Handset) -> None:
        self._network = network
        self._msisdn = msisdn
        self._inner = inner

    def deliver(self, message: MtMessage) -> bool:
        self._network.stamp(self._msisdn, message)
        return self._inner.deliver(message)


@dataclass
class _Row:
    name: str
    offered: float | None
    window_s: float
    injected: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    in_window: int = 0
    late: int = 0


class _Platform:
    """Stores, the app and the calibration service, all called on one worker thread."""

    def __init__(self, reactor: Any, directory: Path, phones: int) -> None:
        self.reactor = reactor
        self.dir = directory
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="stkpay-bench-app")
        self.keystore = FileKeyStore(directory / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)
        self.fleet = Fleet(
            self.keystore, count=phones, first_msisdn=FIRST_MSISDN, models=MODELS, seed=16
        )
        self.esme: Any = None

    def work(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        return deferToThreadPool(self.reactor, self.pool, fn, *args)

    def open(self) -> None:
        self.stack = EmbeddedPlatform.open(
            self.dir,
            self.keystore,
            models=MODELS,
            clock=_utcnow,
            pepper=Pepper(bytes(32)),
            terminal_id=TERMINAL_ID,
        )
        stack = self.stack
        self.ledger, self.platform, self.store = stack.ledger, stack.platform, stack.store
        self.calibration, self.app = stack.calibration, stack.app

    def enrol(self) -> None:
        for entry in self.fleet:
            msisdn = entry.phone.msisdn
            self.ledger.open_wallet(msisdn, ID_NUMBER, request_id=f"open-{msisdn}")
            self.ledger.enable_card(msisdn, entry.phone.card.iccid, request_id=f"card-{msisdn}")

    def close(self) -> None:
        self.stack.close()

    def on_message(self, message: Message) -> defer.Deferred[None]:
        d = self.work(self.app.on_message, message)

        def carry_out(effects: list[Effect]) -> None:
            for effect in effects:
                if isinstance(effect, SendSms):
                    msg = OutboundMessage(effect.to, text=effect.text, registered_delivery=False)
                else:
                    msg = _ota_message(effect.msisdn, effect.outgoing)
                self.esme.send(msg).addErrback(lambda _f: None)

        return d.addCallback(carry_out)


def _ota_message(msisdn: str, outgoing: OutgoingCommand) -> OutboundMessage:
    return OutboundMessage(
        msisdn,
        user_data=outgoing.user_data,
        protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
        data_coding=DCS_CLASS2_8BIT,
        registered_delivery=False,
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _machine_busy() -> tuple[float, float]:
    """Busy and total jiffies of the whole machine (/proc/stat), to see competing work."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _sleep(reactor: Any, seconds: float) -> None:
    await task.deferLater(reactor, max(0.0, seconds), lambda: None)


async def _open_loop(
    reactor: Any, network: _TimedNetwork, phones: list[str], rate: float, seconds: float
) -> _Row:
    """Paced: phone i is due at t0 + i / rate; latency from that scheduled instant."""
    count = min(len(phones), int(rate * seconds))
    row = _Row("open loop, paced", rate, seconds)
    scheduled: dict[str, float] = {}
    t0 = time.perf_counter() + 0.05
    i = 0
    while i < count:
        now = time.perf_counter()
        while i < count and t0 + i / rate <= now:
            msisdn = phones[i]
            scheduled[msisdn] = t0 + i / rate
            network.act(msisdn, lambda p: p.power_on())
            i += 1
        if i < count:
            await _sleep(reactor, t0 + i / rate - time.perf_counter())
    row.injected = count
    end = t0 + seconds
    drain = time.perf_counter() + DRAIN_S
    while time.perf_counter() < drain and any(m not in network.arrived for m in scheduled):
        await _sleep(reactor, 0.02)
    for msisdn, due in scheduled.items():
        got = network.arrived.get(msisdn)
        if got is None:
            row.latencies_ms.append(math.inf)  # never came: counts, as the slowest
            continue
        row.latencies_ms.append((got - due) * 1000)
        if got <= end:
            row.in_window += 1
        else:
            row.late += 1
    return row


async def _closed_loop(
    reactor: Any, network: _TimedNetwork, phones: list[str], concurrency: int
) -> tuple[_Row, float]:
    """``concurrency`` calibrations outstanding, each completion starting the next."""
    row = _Row(f"closed loop, {concurrency} outstanding", None, 0.0)
    queue = iter(phones)

    async def worker() -> None:
        for msisdn in queue:
            waiter = network.wait(msisdn)
            started = time.perf_counter()
            network.act(msisdn, lambda p: p.power_on())
            timer = reactor.callLater(10.0, waiter.cancel)
            try:
                got = await waiter
            except defer.CancelledError:
                continue
            finally:
                if timer.active():
                    timer.cancel()
            row.latencies_ms.append((got - started) * 1000)
            row.in_window += 1

    cpu = _cpu()
    t0 = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(concurrency)])
    row.window_s = time.perf_counter() - t0
    row.injected = len(phones)
    return row, (_cpu() - cpu) / max(row.in_window, 1) * 1e6


def _format(row: _Row) -> str:
    ms = row.latencies_ms
    rate = row.in_window / row.window_s if row.window_s else 0.0
    offered = f"{row.offered:>8.0f}" if row.offered is not None else f"{'max':>8}"
    return (
        f"{row.name:<28} {offered} {rate:>10.1f} {_percentile(ms, 0.5):>8.1f} "
        f"{_percentile(ms, 0.99):>8.1f} {max(ms, default=math.nan):>8.1f} "
        f"{row.in_window:>6}/{row.injected:<6} {row.late:>5}"
    )


async def _bench(reactor: Any, args: argparse.Namespace) -> int:
    from smsc.esme import Esme  # Twisted imports only when running
    from smsc.simulator import make_service

    paced = int(args.rate * args.seconds)
    total = WARMUP + paced + args.closed
    with tempfile.TemporaryDirectory(prefix="stkpay-bench-cal-") as tmp:
        t = time.perf_counter()
        plat = _Platform(reactor, Path(tmp), total)
        elapsed = time.perf_counter() - t
        print(f"fleet: {total} phones personalised in {elapsed:.1f} s", file=sys.stderr)
        plat.pool.start()
        try:
            await plat.work(plat.open)
            t = time.perf_counter()
            await plat.work(plat.enrol)
            print(f"ledger: wallets and cards in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            config = Config()
            account = SimAccount()
            sim_cfg = replace(
                config.simulator,
                listen="tcp:0:interface=127.0.0.1",
                api="tcp:0:interface=127.0.0.1",
                accounts=(account,),
                max_mailboxes=1000,
            )
            holder: list[Any] = []
            network = _TimedNetwork(
                plat.fleet,
                send_mo=lambda *a, **k: holder[0].submit_mo(*a, **k),  # noqa: PLW0108
                later=lambda f: reactor.callLater(0, f),
                fallback=MailboxDirectory(retention=10),
            )
            sim_service = make_service(sim_cfg, reactor, directory=network, rng=random.Random(16))
            sim_service.startService()
            smpp_port, _api = await sim_service.when_listening()
            holder.append(sim_service.simulator)
            esme_cfg = replace(
                config.smsc,
                host="127.0.0.1",
                port=smpp_port,
                system_id=account.system_id,
                password=account.password,
                source_addr=SHORT_CODE,
                bind="trx",
                registered_delivery=False,
                window=args.window,
                throughput=args.throughput,
            )

            def on_message(message: Message) -> defer.Deferred[None] | None:
                if message.source in plat.fleet.phones:
                    return plat.on_message(message)
                return None

            esme = Esme(esme_cfg, reactor=reactor, on_message=on_message)
            plat.esme = esme
            esme.startService()
            await esme.when_bound()
            phones = list(plat.fleet.phones)
            warm, paced_phones, closed_phones = (
                phones[:WARMUP],
                phones[WARMUP : WARMUP + paced],
                phones[WARMUP + paced :],
            )
            await _closed_loop(reactor, network, warm, 10)
            await _sleep(reactor, 0.5)
            print(f"open loop: {args.rate:.0f}/s for {args.seconds:.0f} s ...", file=sys.stderr)
            cpu, (busy, total_j) = _cpu(), _machine_busy()
            open_row = await _open_loop(reactor, network, paced_phones, args.rate, args.seconds)
            own = _cpu() - cpu
            busy2, total2 = _machine_busy()
            ticks = os.sysconf("SC_CLK_TCK")
            others = max(0.0, (busy2 - busy) / ticks - own) / max((total2 - total_j) / ticks, 1e-9)
            open_cpu = own / max(open_row.injected, 1) * 1e6
            await _sleep(reactor, 1.0)
            closed_row, closed_cpu = (None, 0.0)
            if closed_phones:
                print(f"closed loop: {len(closed_phones)} calibrations ...", file=sys.stderr)
                closed_row, closed_cpu = await _closed_loop(
                    reactor, network, closed_phones, args.concurrency
                )
            await _sleep(reactor, 1.0)
            cover = await plat.work(plat.calibration.coverage)
            await esme.stopService()
            await sim_service.stopService()
        finally:
            await plat.work(plat.close)
            plat.pool.stop()

    print(
        "Calibration benchmark: calibration SMS -> OTA command (TP-PID 0x7F, UDH 70) at the "
        "phone, through the SMSC simulator (loopback SMPP), WalletApp + CalibrationService on "
        "one worker thread, SQLite"
    )
    print(
        f"ESME window {args.window}, throughput limit {args.throughput:.0f} submit_sm/s; "
        f"fleet {total} phones; latency in ms"
    )
    print()
    print(
        f"{'row':<28} {'offered':>8} {'cal/s':>10} {'p50':>8} {'p99':>8} {'max':>8} "
        f"{'done/injected':>13} {'late':>5} {'cpu us/cal':>10}"
    )
    print(f"{_format(open_row)} {open_cpu:>10.0f}")
    if closed_row is not None:
        print(f"{_format(closed_row)} {closed_cpu:>10.0f}")
    print()
    print(
        f"calibrated by SMS at the end: {cover.sms} of {cover.active} active cards "
        f"(expected {total}); other MT to phones: {network.other_mt}"
    )
    print(
        f"other work on the machine during the paced row: {others:.0%} of its CPU time "
        f"({os.cpu_count()} cores; this process: {own:.1f} s CPU)"
    )
    p99 = _percentile(open_row.latencies_ms, 0.99)
    done = sum(1 for v in open_row.latencies_ms if math.isfinite(v))
    complete = done == open_row.injected
    met = (
        args.rate >= TARGET_RATE
        and complete
        and p99 < TARGET_P99_MS
        and open_row.in_window >= 0.99 * open_row.injected
    )
    print(
        f"target: p99 < {TARGET_P99_MS:.0f} ms at {TARGET_RATE:.0f}/s: "
        f"{'met' if met else 'NOT met'} (p99 {p99:.1f} ms at {args.rate:.0f}/s offered, "
        f"{done}/{open_row.injected} completed within {DRAIN_S:.0f} s of the run's end)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="calibrations/s offered")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced run length")
    parser.add_argument("--closed", type=int, default=2000, help="closed-loop calibrations")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop outstanding")
    parser.add_argument("--window", type=int, default=64, help="ESME window")
    parser.add_argument("--throughput", type=float, default=5000.0, help="ESME submit_sm/s limit")
    parser.add_argument("--quick", action="store_true", help="3-second paced run")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
        args.closed = min(args.closed, 600)
    if args.rate <= 0 or args.seconds <= 0 or args.concurrency <= 0 or args.closed < 0:
        parser.error("--rate, --seconds and --concurrency must be positive, --closed >= 0")
    return run(lambda reactor: _bench(reactor, args))


if __name__ == "__main__":
    sys.exit(main())
