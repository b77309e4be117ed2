"""Benchmark: SMS calibrations per second and latency, calibration SMS to OTA command.

Issue 6, Acceptance, last bullet: calibrations/s and p99 latency from a phone's calibration
SMS to the profile-writing OTA command reaching that phone, through the SMSC simulator;
target **p99 under 40 ms at 200 calibrations/s**.

The gateway is the real ``stkpay serve`` in a child process, as production runs it
(:class:`bench._gateway.GatewayProcess`: SQLite ledger, OTA counters and calibration table in
a temporary directory, in-process state, ESME window 64, ``--throughput`` submit_sm/s). This
process is the network side: the SMSC simulator on an ephemeral loopback port (its account
unthrottled) and a fleet of virtual phones behind it (:class:`simcard.fleet.InProcessNetwork`).
Before the gateway starts, every phone's wallet is opened and card enabled, and the two
handset models of the fleet are put in the calibration table (lab provenance), so that each
calibration SMS yields an OTA command.

One calibration: a phone is switched on for the first time (``power_on``): its applet sends
the secured calibration MO (ETSI TS 102 225 command packet); the simulator delivers it to the
gateway; the app authenticates it, resolves the card, the calibration service chooses the
profile and builds the RFM command (UPDATE BINARY of the calibration file); the gateway's ESME
submits it as an SMS-PP data download (TP-PID 0x7F, UDH IEI 0x70, TS 102 225 §5.1 / TS 23.040
§9.2.3.9); the simulator hands it to the phone. The latency ends there. (The PoR and the
"calibrated" SMS follow and load the system too, but are not timed.)

Rows:

* **open loop, paced**: ``--rate`` calibrations/s for ``--seconds``, each on a fixed schedule
  and by a fresh phone; latency from the *scheduled* instant, so lateness of the pacer or
  queueing anywhere counts (no coordinated omission; one never done counts as infinite).
  ``p99 mo`` is from the calibration MO handed to the simulator instead. Completed/s counts
  the OTA commands that reached their phone inside the run window.
* **closed loop**: ``--concurrency`` calibrations outstanding, each completion starting the
  next (fresh phones again): the maximum sustained rate; latency from the MO handed over.

Each row shows the CPU per calibration of the gateway process and of this process, and the
share of the machine other processes used. The gateway's resident size is sampled each second.

Usage::

    .venv/bin/python bench/calibration.py            # 10 s paced + 2,000 closed loop
    .venv/bin/python bench/calibration.py --quick    # 3 s paced, 600 closed loop
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and this file's name would
# shadow the project's ``calibration`` package: put the project root before it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, threads

from bench._gateway import (
    Done,
    GatewayProcess,
    Row,
    Sampler,
    Stores,
    Subscriber,
    closed_loop,
    freeze_heap,
    open_loop,
    percentile,
    prepare,
    sleep,
    start_network,
)
from calibration.store import CalibrationStore
from ota.keystore import FileKeyStore
from ota.smspp import TP_PID_SIM_DATA_DOWNLOAD
from simcard.fleet import Fleet, HandsetModelSpec
from smsc.handset import MtMessage
from stkpay.runner import run

#: UDH IEI of a secured command packet (TS 23.040 §9.2.3.24, IEI 0x70).
IEI_COMMAND_PACKET = 0x70
TARGET_RATE = 200.0
TARGET_P99_MS = 40.0
FIRST_MSISDN = "8613600000000"
#: Two handset models known to the calibration table (A within the payment band).
MODELS = (
    HandsetModelSpec("Bench A10", "35693803", Decimal(10)),
    HandsetModelSpec("Bench B20", "49015420", Decimal(20)),
)
WARMUP = 100
#: How long the paced row waits, after its last injection, for the OTA commands still due.
DRAIN_S = 10.0


def _is_calibration_command(message: MtMessage) -> bool:
    """An SMS-PP data download carrying a command packet (TP-PID 0x7F, UDH IEI 0x70)."""
    msg = message.message
    return msg.protocol_id == TP_PID_SIM_DATA_DOWNLOAD and any(
        ie.iei == IEI_COMMAND_PACKET for ie in msg.ies
    )


@dataclass
class _Flow:
    done: defer.Deferred[Done]
    mo_at: float | None = None


class _Calibrations:
    """Outstanding calibrations by MSISDN; the network side's hooks end them."""

    def __init__(self) -> None:
        self.flows: dict[str, _Flow] = {}
        self.other_mt = 0
        self.network: Any = None

    def on_mo(self, msisdn: str, at: float) -> None:
        flow = self.flows.get(msisdn)
        if flow is not None and flow.mo_at is None:
            flow.mo_at = at

    def on_mt(self, msisdn: str, message: MtMessage, text: str | None, at: float) -> None:
        del text
        if not _is_calibration_command(message):
            self.other_mt += 1
            return
        flow = self.flows.pop(msisdn, None)
        if flow is not None:
            flow.done.callback(Done(flow.mo_at if flow.mo_at is not None else at, at, "ok"))

    def start(self, msisdn: str) -> defer.Deferred[Done]:
        def cancel(_d: defer.Deferred[Done]) -> None:
            self.flows.pop(msisdn, None)

        d: defer.Deferred[Done] = defer.Deferred(cancel)
        self.flows[msisdn] = _Flow(d)
        self.network.act(msisdn, lambda p: p.power_on())
        return d


def _format(row: Row, paced: bool) -> str:
    lat = row.from_schedule_ms if paced else row.latencies_ms
    offered = f"{row.offered:>7.0f}" if row.offered is not None else f"{'max':>7}"
    mo99 = percentile(row.latencies_ms, 0.99)
    return (
        f"{row.name:<28} {offered} {row.rate:>7.1f} {percentile(lat, 0.5):>7.1f} "
        f"{percentile(lat, 0.99):>7.1f} {mo99:>7.1f} {max(lat, default=math.nan):>7.1f} "
        f"{row.in_window:>6}/{row.injected:<6} {row.late:>5} "
        f"{row.per_flow_us(row.gateway_cpu_s):>7.0f} {row.per_flow_us(row.bench_cpu_s):>7.0f} "
        f"{row.others:>6.0%}"
    )


async def _bench(reactor: Any, args: argparse.Namespace) -> int:
    paced = int(args.rate * args.seconds)
    total = WARMUP + paced + args.closed
    with tempfile.TemporaryDirectory(prefix="stkpay-bench-cal-") as tmp:
        stores = Stores.make(Path(tmp))
        t = time.perf_counter()
        fleet = Fleet(
            FileKeyStore(stores.key_file),
            count=total,
            first_msisdn=FIRST_MSISDN,
            models=MODELS,
            seed=16,
        )
        print(
            f"fleet: {total} phones personalised in {time.perf_counter() - t:.1f} s",
            file=sys.stderr,
        )
        subscribers = [Subscriber(e.phone.msisdn, e.phone.card.iccid) for e in fleet]
        freeze_heap()
        times = await threads.deferToThread(prepare, stores, subscribers, models=MODELS)
        print(f"stores prepared in {times.describe()}", file=sys.stderr)
        cal = _Calibrations()
        side = await start_network(reactor, fleet, on_mo=cal.on_mo, on_mt=cal.on_mt)
        cal.network = side.network
        gateway = GatewayProcess(
            stores,
            smpp_port=side.smpp_port,
            account=side.account,
            window=args.window,
            throughput=args.throughput,
        )
        gateway.start()
        sampler = Sampler(reactor, gateway)
        closed_row: Row | None = None
        try:
            t = time.perf_counter()
            await threads.deferToThread(gateway.wait_ready)
            print(f"gateway ready in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            sampler.start()
            phones = iter(list(fleet.phones))

            def next_phone() -> str | None:
                return next(phones, None)

            await closed_loop(
                reactor, cal.start, next_phone, name="warm-up", concurrency=10, count=WARMUP
            )
            await sleep(reactor, 0.5)
            rss_start = gateway.rss_kb()
            print(f"open loop: {args.rate:.0f}/s for {args.seconds:.0f} s ...", file=sys.stderr)
            sampler.mark()
            open_row = await open_loop(
                reactor,
                cal.start,
                next_phone,
                name="open loop, paced",
                rate=args.rate,
                seconds=args.seconds,
                drain=DRAIN_S,
            )
            sampler.charge(open_row)
            await sleep(reactor, 1.0)
            if args.closed:
                print(f"closed loop: {args.closed} calibrations ...", file=sys.stderr)
                sampler.mark()
                closed_row = await closed_loop(
                    reactor,
                    cal.start,
                    next_phone,
                    name=f"closed loop, {args.concurrency} outstanding",
                    concurrency=args.concurrency,
                    count=args.closed,
                )
                sampler.charge(closed_row)
            await sleep(reactor, 1.0)
            rss_end = gateway.rss_kb()
        finally:
            sampler.stop()
            code = await threads.deferToThread(gateway.stop)
            await side.stop()
        store = CalibrationStore.open(stores.calibration_url)
        try:
            cover = store.coverage_counts()
        finally:
            store.close()

    print(
        "Calibration benchmark: calibration SMS -> OTA command (TP-PID 0x7F, UDH 70) at the "
        "phone, through the SMSC simulator (loopback SMPP); the gateway is `stkpay serve` in "
        "its own process (SQLite, in-process state); simulator + phones in this process"
    )
    print(
        f"gateway ESME window {args.window}, throughput limit {args.throughput:.0f} "
        f"submit_sm/s; fleet {total} phones; latency in ms (paced: from the scheduled "
        "instant; closed: from the MO handed to the simulator; 'mo p99' always from the MO)"
    )
    print()
    print(
        f"{'row':<28} {'offered':>7} {'cal/s':>7} {'p50':>7} {'p99':>7} {'mo p99':>7} "
        f"{'max':>7} {'done/injected':>13} {'late':>5} {'gw us':>7} {'bench us':>7} "
        f"{'others':>6}"
    )
    print(_format(open_row, paced=True))
    if closed_row is not None:
        print(_format(closed_row, paced=False))
    print()
    print(
        "gw us / bench us: CPU microseconds per calibration of the gateway process / of this "
        "process (simulator + phones); others: share of the 2 cores used by other processes"
    )
    rss = sampler.rss_kb or [0]
    print(
        f"gateway resident size: {rss_start / 1024:.1f} MiB after warm-up, max "
        f"{max(rss) / 1024:.1f} MiB, {rss_end / 1024:.1f} MiB at the end; exit status {code}, "
        f"{gateway.warnings} warning lines in its log"
    )
    print(
        f"calibrated by SMS at the end: {cover.sms} of {cover.active} active cards "
        f"(expected {total}); other MT to phones: {cal.other_mt}"
    )
    p99 = percentile(open_row.from_schedule_ms, 0.99)
    done = open_row.ok
    met = (
        args.rate >= TARGET_RATE
        and done == open_row.injected
        and p99 < TARGET_P99_MS
        and open_row.in_window >= 0.99 * open_row.injected
    )
    print(
        f"target: p99 < {TARGET_P99_MS:.0f} ms at {TARGET_RATE:.0f}/s: "
        f"{'MET' if met else 'NOT met'} (p99 {p99:.1f} ms at {args.rate:.0f}/s offered, "
        f"{done}/{open_row.injected} completed within {DRAIN_S:.0f} s of the run's end)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="calibrations/s offered")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced run length")
    parser.add_argument("--closed", type=int, default=2000, help="closed-loop calibrations")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop outstanding")
    parser.add_argument("--window", type=int, default=64, help="gateway ESME window")
    parser.add_argument(
        "--throughput", type=float, default=10_000.0, help="gateway ESME submit_sm/s limit"
    )
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
