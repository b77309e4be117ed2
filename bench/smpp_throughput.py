"""Benchmark: SMPP 3.4 submit_sm throughput, latency, CPU and memory of stkpay's ESME.

What it measures (issue 2, Acceptance, last bullet):

* **Throughput and latency**, closed loop: exactly ``window`` submit_sm outstanding (SMPP
  v3.4 §2.6 / §3.1 "window"; a new message is sent only when a submit_sm_resp, §4.4.2,
  completes one), so latency is the round trip, not queueing delay. Messages are 60
  characters of GSM 7-bit text (data_coding 0x00, one octet per character, §5.2.19) to 10
  rotating destinations; one row without receipts (registered_delivery 0, the headline) and
  one with receipts requested (registered_delivery 1, §5.2.17: the SMSC's deliver_sm
  receipts, §4.6.1 esm_class 0x04, share the connection and every one must arrive).
  stkpay's :class:`smsc.esme.Esme` runs in this process on the Twisted reactor; latency is
  ``Esme.send()`` to its Deferred firing with the submit_sm_resp (it includes building and
  encoding the PDU). smpplib's ``Client`` runs in a child process
  (``bench/_smpplib_driver.py``) driven as its README does (``send_message`` in one thread,
  ``listen()`` in another), with the same window. Each row is the median of ``--repeats``
  runs of at most ``--messages-per-point`` messages or ``--seconds`` seconds, after a
  warm-up.
* **CPU**: user+system seconds of each process over the measured interval (from
  ``/proc/PID/stat``) divided by the wall time: 100 % is one core saturated. The machine
  has 2 cores; the simulator runs in its own process (``stkpay smsc-sim``).
* **Memory**: before the throughput rows, a run of ``--messages`` messages at window 64
  without receipts and one with receipts (``--memory-load``), each on a fresh bind, printing
  the resident size (``VmRSS``) of this process (the ESME) and of the simulator after the
  bind and at checkpoints from 100k on, and the growth from 100k to the end.

``--smsc HOST:PORT --system-id ID --password PW`` runs the same load against another SMSC
(no simulator is started; its CPU and memory are then not shown). ``--quick`` is a < 1 min
smoke run. The bench asserts nothing: it prints figures beside the targets (>= 15,000
submit_sm/s at window 64 with p99 < 10 ms; memory growth < 5 %). Progress goes to stderr,
the report to stdout; ``docs/benchmarks.md`` explains the figures.

Usage: ``.venv/bin/python bench/smpp_throughput.py [--quick] [--smsc HOST:PORT ...]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import twisted
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater, react
from twisted.internet.utils import getProcessOutputAndValue

from smsc.dlr import Receipt
from smsc.esme import Esme
from smsc.message import OutboundMessage, SendResult
from stkpay.config import Secret, SmscConfig

TARGET_RATE = 15_000.0  # submit_sm/s at window 64 (issue 2)
TARGET_P99 = 0.010  # seconds, at window 64
TARGET_GROWTH = 5.0  # % RSS growth from 100k to the last checkpoint
SATURATED = 90.0  # % of a core from which a process is called saturated
DISTURBED = 25.0  # % of a core used by other processes from which a row is flagged

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_DRIVER = Path(__file__).with_name("_smpplib_driver.py")
_DESTINATIONS = tuple(f"86138{n:08d}" for n in range(10))
_SOURCE = "10658888"


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


# -- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:8]]
    return (sum(values) - values[3] - values[4]) / _CLK_TCK


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of process ``pid`` in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of an ascending sequence by nearest rank; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


# -- the SMSC ----------------------------------------------------------------------------


@dataclass
class Target:
    """Where to bind, as whom; ``pid``/``api_port`` when it is our simulator."""

    host: str
    port: int
    system_id: str
    password: str
    pid: int | None = None
    api_port: int | None = None

    def sim_stats(self) -> dict[str, Any] | None:
        """The simulator's ``GET /stats`` (None for an external SMSC or on error)."""
        if self.api_port is None:
            return None
        url = f"http://127.0.0.1:{self.api_port}/stats"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                result: dict[str, Any] = json.load(resp)
                return result
        except (OSError, ValueError):
            return None


class Simulator:
    """``stkpay smsc-sim`` in a child process on OS-chosen loopback ports."""

    def __init__(self, system_id: str, password: str) -> None:
        self._stopped = False
        self._dir = tempfile.TemporaryDirectory(prefix="stkpay-bench-")
        config = Path(self._dir.name) / "empty.toml"  # no stray ./stkpay.toml is read
        config.write_text("")
        self.log_path = Path(self._dir.name) / "sim.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stkpay.cli",
                "--config",
                str(config),
                "smsc-sim",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--api",
                "tcp:0:interface=127.0.0.1",
                "--system-id",
                system_id,
                "--password",
                password,
                "--stats-interval",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=self._dir.name,
        )
        smpp_port, api_port = self._wait_listening()
        self.target = Target("127.0.0.1", smpp_port, system_id, password, self.proc.pid, api_port)

    def _wait_listening(self) -> tuple[int, int]:
        marker = "SMSC simulator listening: smpp port "
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            for line in self.log_path.read_text(errors="replace").splitlines():
                if marker in line:
                    rest = line.split(marker, 1)[1]
                    smpp, _, api = rest.partition(", api port ")
                    return int(smpp), int(api.split(";", 1)[0])
            time.sleep(0.05)
        self.stop()
        raise SystemExit("the simulator did not start:\n" + self.log_path.read_text()[-2000:])

    def stop(self) -> None:
        """SIGTERM, wait, clean up (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._dir.cleanup()


# -- results -----------------------------------------------------------------------------


@dataclass
class Run:
    """One measured run of one client at one window."""

    client: str
    window: int
    receipts_requested: bool
    rate: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    measured: int = 0
    ok: int = 0
    failed: int = 0
    receipts: int = 0
    cpu: float = 0.0  # % of a core
    sim_cpu: float | None = None
    others: float = 0.0  # % of a core used by every other process on the machine
    error: str | None = None


@dataclass
class Row:
    """The median of several runs of the same (client, window, receipts)."""

    client: str
    window: int
    receipts_requested: bool
    runs: list[Run] = field(default_factory=list)

    def _median(self, get: Callable[[Run], float]) -> float:
        good = [get(r) for r in self.runs if r.error is None]
        return statistics.median(good) if good else 0.0

    @property
    def rate(self) -> float:
        return self._median(lambda r: r.rate)

    @property
    def p50(self) -> float:
        return self._median(lambda r: r.p50)

    @property
    def p99(self) -> float:
        return self._median(lambda r: r.p99)

    @property
    def cpu(self) -> float:
        return self._median(lambda r: r.cpu)

    @property
    def cpu_us(self) -> float:
        """CPU microseconds of the client process per message."""
        return self._median(lambda r: r.cpu * 1e4 / r.rate if r.rate else 0.0)

    @property
    def sim_us(self) -> float | None:
        """CPU microseconds of the simulator per message."""
        values = [
            r.sim_cpu * 1e4 / r.rate
            for r in self.runs
            if r.error is None and r.sim_cpu is not None and r.rate
        ]
        return statistics.median(values) if values else None

    @property
    def others(self) -> float:
        return self._median(lambda r: r.others)

    @property
    def sim_cpu(self) -> float | None:
        values = [r.sim_cpu for r in self.runs if r.error is None and r.sim_cpu is not None]
        return statistics.median(values) if values else None

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.runs if r.error is not None]

    def receipts_text(self) -> str:
        if not self.receipts_requested:
            return "-"
        got = sum(r.receipts for r in self.runs)
        want = sum(r.ok for r in self.runs)
        return f"{got}/{want}" + ("" if got == want else " MISSING")


# -- stkpay's ESME -----------------------------------------------------------------------


class ClosedLoop:
    """Keeps exactly ``window`` messages in ``esme.send()`` until enough were measured.

    Measurement starts when the ``warmup``-th message completes or ``warmup_seconds`` have
    passed (the window is full then); it stops issuing once ``messages`` were issued after
    that or ``seconds`` passed, or at the first local failure (TIMEOUT, ABORTED: the link is
    gone), and ends when the last outstanding one completes. Latencies are of messages
    issued in the measured interval. ``checkpoint(done)`` is called after each completion.
    """

    def __init__(
        self,
        esme: Esme,
        *,
        window: int,
        warmup: int,
        warmup_seconds: float,
        messages: int,
        seconds: float,
        receipts: bool,
        length: int,
        sim_pid: int | None,
        record: bool = True,
        checkpoint: Callable[[int], None] | None = None,
    ) -> None:
        self.esme = esme
        self.window = window
        self.warmup = warmup
        self.warmup_seconds = warmup_seconds
        self.began = 0.0
        self.messages = messages
        self.seconds = seconds
        self.receipts = receipts
        self.text = "x" * length
        self.sim_pid = sim_pid
        self.record = record
        self.checkpoint = checkpoint
        self.latencies: list[float] = []
        self.issued = 0
        self.done = 0
        self.ok = 0
        self.failed = 0
        self.measuring = False
        self.stop_issuing = False
        self.issued_measured = 0
        self.done_at_start = 0
        self.t_start = self.t_end = 0.0
        self.cpu_start = self.cpu_end = 0.0
        self.sim_start = self.sim_end = 0.0
        self.busy_start = self.busy_end = 0.0
        self.deadline = float("inf")
        self.finished: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        """Fill the window; the Deferred fires when the last message completed."""
        self.began = time.perf_counter()
        for _ in range(self.window):
            self._issue()
        return self.finished

    def _issue(self) -> None:
        index = self.issued
        self.issued += 1
        measured = self.measuring
        if measured:
            self.issued_measured += 1
        message = OutboundMessage(
            _DESTINATIONS[index % 10],
            text=self.text,
            source=_SOURCE,
            registered_delivery=self.receipts,
        )
        start = time.perf_counter()
        self.esme.send(message).addCallback(self._completed, start, measured)

    def _completed(self, result: SendResult, start: float, measured: bool) -> None:
        end = time.perf_counter()
        self.done += 1
        if result.ok:
            self.ok += 1
        else:
            self.failed += 1
            if result.status < 0:  # TIMEOUT / ABORTED / INVALID: do not spin on a dead link
                self.stop_issuing = True
        if measured and self.record:
            self.latencies.append(end - start)
        if self.checkpoint is not None:
            self.checkpoint(self.done)
        if not self.measuring and (
            self.done >= self.warmup or end - self.began >= self.warmup_seconds
        ):
            self.measuring = True
            self.done_at_start = self.done
            self.t_start = end
            self.cpu_start = cpu_seconds(os.getpid())
            self.busy_start = machine_busy_seconds()
            self.sim_start = cpu_seconds(self.sim_pid) if self.sim_pid else 0.0
            self.deadline = end + self.seconds
        if not self.stop_issuing and (
            self.issued_measured >= self.messages or (self.measuring and end >= self.deadline)
        ):
            self.stop_issuing = True
        if not self.stop_issuing:
            self._issue()
        elif self.done == self.issued:
            self.t_end = end
            self.cpu_end = cpu_seconds(os.getpid())
            self.busy_end = machine_busy_seconds()
            self.sim_end = cpu_seconds(self.sim_pid) if self.sim_pid else 0.0
            self.finished.callback(None)


def _esme(reactor: Any, target: Target, window: int, on_receipt: Any) -> Esme:
    config = SmscConfig(
        host=target.host,
        port=target.port,
        system_id=target.system_id,
        password=Secret(target.password),
        window=window,
        throughput=1e9,  # the token bucket must not be what limits
        response_timeout=30.0,
        registered_delivery=False,
    )
    return Esme(config, reactor=reactor, on_receipt=on_receipt, reconnect=False)


async def _wait_receipts(reactor: Any, count: Callable[[], int], want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while count() < want and time.monotonic() < deadline:
        await deferLater(reactor, 0.02, lambda: None)


async def esme_run(
    reactor: Any, target: Target, window: int, receipts: bool, args: argparse.Namespace
) -> Run:
    """One closed-loop run of stkpay's ESME (a fresh bind)."""
    got = [0]

    def on_receipt(receipt: Receipt, token: object) -> None:
        del receipt, token
        got[0] += 1

    esme = _esme(reactor, target, window, on_receipt if receipts else None)
    run = Run("stkpay", window, receipts)
    esme.startService()
    try:
        await esme.when_bound()
    except Exception as exc:
        run.error = f"bind failed: {exc}"
        await esme.stopService()
        return run
    loop = ClosedLoop(
        esme,
        window=window,
        warmup=max(500, window * 20),
        warmup_seconds=0.5,
        messages=args.messages_per_point,
        seconds=args.seconds,
        receipts=receipts,
        length=args.length,
        sim_pid=target.pid,
    )
    await loop.start()
    if receipts:
        await _wait_receipts(reactor, lambda: got[0], loop.ok, args.receipt_timeout)
    await esme.stopService()
    elapsed = loop.t_end - loop.t_start
    measured = loop.done - loop.done_at_start
    latencies = sorted(loop.latencies)
    run.rate = measured / elapsed if elapsed > 0 else 0.0
    run.p50 = percentile(latencies, 0.50)
    run.p99 = percentile(latencies, 0.99)
    run.measured = measured
    run.ok = loop.ok
    run.failed = loop.failed
    run.receipts = got[0]
    run.cpu = 100 * (loop.cpu_end - loop.cpu_start) / elapsed if elapsed > 0 else 0.0
    if target.pid:
        run.sim_cpu = 100 * (loop.sim_end - loop.sim_start) / elapsed if elapsed > 0 else 0.0
    if elapsed > 0:
        busy = 100 * (loop.busy_end - loop.busy_start) / elapsed
        run.others = max(0.0, busy - run.cpu - (run.sim_cpu or 0.0))
    if loop.failed:
        run.error = f"{loop.failed} submit_sm refused"
    return run


async def smpplib_run(
    reactor: Any, target: Target, window: int, receipts: bool, args: argparse.Namespace
) -> Run:
    """One closed-loop run of smpplib's Client in a child process."""
    argv = [
        str(_DRIVER),
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--system-id",
        target.system_id,
        "--password",
        target.password,
        "--window",
        str(window),
        "--messages",
        str(args.messages_per_point),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(max(500, window * 20)),
        "--length",
        str(args.length),
        "--receipt-timeout",
        str(args.receipt_timeout),
        "--sim-pid",
        str(target.pid or 0),
    ]
    if receipts:
        argv.append("--receipts")
    spawn: Callable[..., Deferred[tuple[bytes, bytes, int]]] = getProcessOutputAndValue
    out, err, code = await spawn(sys.executable, argv, env=dict(os.environ), reactor=reactor)
    run = Run("smpplib", window, receipts)
    try:
        data = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        run.error = f"driver exit {code}: {err.decode(errors='replace').strip()[-300:]}"
        return run
    elapsed = float(data.get("elapsed", 0.0))
    run.error = data.get("error")
    run.rate = float(data.get("rate", 0.0))
    run.p50 = float(data.get("p50", 0.0))
    run.p99 = float(data.get("p99", 0.0))
    run.measured = int(data.get("measured", 0))
    run.ok = int(data.get("ok", 0))
    run.failed = int(data.get("failed", 0))
    run.receipts = int(data.get("receipts", 0))
    run.cpu = 100 * float(data.get("cpu", 0.0)) / elapsed if elapsed > 0 else 0.0
    if target.pid:
        run.sim_cpu = 100 * float(data.get("sim_cpu", 0.0)) / elapsed if elapsed > 0 else 0.0
    if elapsed > 0:
        busy = 100 * float(data.get("machine_busy", 0.0)) / elapsed
        run.others = max(0.0, busy - run.cpu - (run.sim_cpu or 0.0))
    if run.failed and run.error is None:
        run.error = f"{run.failed} submit_sm refused"
    return run


# -- memory ------------------------------------------------------------------------------


@dataclass
class MemoryPoint:
    """RSS of both processes after ``messages`` completed."""

    messages: int
    esme_kib: int
    sim_kib: int | None
    receipts: int
    elapsed: float


def memory_checkpoints(total: int) -> list[int]:
    """100k, 200k, 300k, 500k, 700k, 1M, 1.5M, 2M, 3M, 5M ... below ``total``, and ``total``."""
    points: list[int] = []
    base = 100_000
    while base < total:
        for step in (1, 1.5, 2, 3, 5, 7):
            value = int(step * base)
            if value < total and (base > 100_000 or step != 1.5):
                points.append(value)
        base *= 10
    points.append(total)
    return sorted(set(points))


async def memory_run(
    reactor: Any, target: Target, args: argparse.Namespace, *, receipts: bool
) -> list[MemoryPoint]:
    """``--messages`` through one fresh bind at window 64; RSS after the bind and at
    checkpoints."""
    got = [0]

    def on_receipt(receipt: Receipt, token: object) -> None:
        del receipt, token
        got[0] += 1

    esme = _esme(reactor, target, 64, on_receipt if receipts else None)
    esme.startService()
    try:
        await esme.when_bound()
    except Exception as exc:
        log(f"  memory: bind failed: {exc}")
        await esme.stopService()
        return []
    wanted = memory_checkpoints(args.memory_messages)
    points = [
        MemoryPoint(0, rss_kib(os.getpid()), rss_kib(target.pid) if target.pid else None, 0, 0.0)
    ]
    began = time.perf_counter()

    def checkpoint(done: int) -> None:
        if wanted and done >= wanted[0]:
            wanted.pop(0)
            point = MemoryPoint(
                done,
                rss_kib(os.getpid()),
                rss_kib(target.pid) if target.pid else None,
                got[0],
                time.perf_counter() - began,
            )
            points.append(point)
            sim = f", simulator {point.sim_kib / 1024:.1f} MiB" if point.sim_kib else ""
            log(
                f"  memory: {done:>9,} messages: ESME {point.esme_kib / 1024:.1f} MiB{sim}"
                f" ({done / point.elapsed:,.0f}/s)"
            )

    loop = ClosedLoop(
        esme,
        window=64,
        warmup=0,
        warmup_seconds=0.0,
        messages=args.memory_messages,
        seconds=float("inf"),
        receipts=receipts,
        length=args.length,
        sim_pid=None,
        record=False,
        checkpoint=checkpoint,
    )
    await loop.start()
    if receipts:
        await _wait_receipts(reactor, lambda: got[0], loop.ok, args.receipt_timeout)
    await esme.stopService()
    if receipts and got[0] != loop.ok:
        log(f"  memory: {got[0]} receipts for {loop.ok} accepted messages")
    return points


# -- report ------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def _cpu(percent: float | None, us: float | None) -> str:
    """'61% 36µs': share of a core and CPU microseconds per message."""
    if percent is None or us is None:
        return "n/a"
    return f"{percent:.0f}% {us:.0f}µs"


def report(
    rows: list[Row],
    memory: dict[bool, list[MemoryPoint]],
    target: Target,
    *,
    external: bool,
    args: argparse.Namespace,
    sim_stats: dict[str, Any] | None,
) -> None:
    """Print the whole report on stdout."""
    out: list[str] = []
    smsc = (
        f"external SMSC at {target.host}:{target.port}"
        if external
        else f"stkpay smsc-sim (own process, pid {target.pid}) on 127.0.0.1:{target.port}"
    )
    out.append("SMPP 3.4 submit_sm benchmark: stkpay ESME vs smpplib Client")
    out.append(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Twisted {twisted.__version__}, smpplib {metadata.version('smpplib')}; "
        f"SMSC: {smsc}"
    )
    out.append(
        f"load: {args.length}-character GSM 7-bit submit_sm, closed loop with exactly <window> "
        f"outstanding; each row = median of {args.repeats} run(s) of up to "
        f"{args.messages_per_point:,} messages / {args.seconds:g} s after a warm-up"
    )
    out.append(
        "latency: stkpay = Esme.send() to its Deferred firing; smpplib = before send_message() "
        "to message_sent_handler; both = submit_sm built+written to submit_sm_resp received"
    )
    out.append(
        "CPU: process CPU time / wall time over the measured interval (100% = one core "
        "saturated) and CPU µs per message; others = every other process on the machine "
        "(should be ~0%)"
    )
    out.append("")
    header = (
        f"{'client':<8} {'window':>6} {'receipts':>8} {'submit_sm/s':>12} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'receipts got':>14} {'client CPU':>13} {'SMSC CPU':>13} {'others':>7}"
    )
    out.append(header)
    out.append("-" * len(header))
    disturbed = False
    for row in rows:
        mark = ""
        if row.others > DISTURBED and not external:
            mark, disturbed = " !", True
        out.append(
            f"{row.client:<8} {row.window:>6} {'yes' if row.receipts_requested else 'no':>8} "
            f"{row.rate:>12,.0f} {row.p50 * 1e3:>7.2f} {row.p99 * 1e3:>7.2f} "
            f"{row.receipts_text():>14} {_cpu(row.cpu, row.cpu_us):>13} "
            f"{_cpu(row.sim_cpu, row.sim_us):>13} {_pct(row.others):>7}{mark}"
        )
        for error in sorted(set(row.errors)):
            out.append(f"{'':<8} ERROR: {error}")
    if external:
        out.append(
            "(external SMSC: its CPU is not sampled; when it runs on this machine it is "
            "counted in 'others')"
        )
    if disturbed:
        out.append(
            f"! other processes used more than {DISTURBED:.0f}% of a core during these rows: "
            "their figures are disturbed; run again on an idle machine"
        )
    out.append("")

    by_key = {(r.client, r.window, r.receipts_requested): r for r in rows}
    ratios = []
    for (client, window, receipts), row in by_key.items():
        other = by_key.get(("smpplib", window, receipts))
        if client == "stkpay" and other is not None and other.rate > 0:
            label = f"window {window}{' +receipts' if receipts else ''}"
            ratios.append(f"{label}: {row.rate / other.rate:.1f}x")
    if ratios:
        out.append("throughput ratio stkpay/smpplib: " + ", ".join(ratios))

    head = by_key.get(("stkpay", 64, False))
    if head is not None:
        met = head.rate >= TARGET_RATE and head.p99 < TARGET_P99 and not head.errors
        out.append(
            f"target at window 64 (no receipts): >= {TARGET_RATE:,.0f} submit_sm/s with p99 < "
            f"{TARGET_P99 * 1e3:.0f} ms; measured {head.rate:,.0f}/s, p99 "
            f"{head.p99 * 1e3:.2f} ms: {'MET' if met else 'NOT MET'}"
        )
        out.append(saturation(head, external))
        with_receipts = by_key.get(("stkpay", 64, True))
        if with_receipts is not None:
            out.append(saturation(with_receipts, external))
    out.append("")
    if not memory:
        out.append("memory: not measured (--messages 0, or the bind failed)")
    for receipts, points in memory.items():
        out.extend(memory_report(points, receipts=receipts, external=external))
        out.append("")
    while out and not out[-1]:
        out.pop()
    if sim_stats is not None:
        totals = sim_stats.get("totals", {})
        out.append("")
        out.append(
            "simulator's own counts (GET /stats) for the whole run: "
            f"submit_sm={totals.get('submit_sm')} receipts sent={totals.get('receipts')} "
            f"deliver_sm_ok={totals.get('deliver_sm_ok')} throttled={totals.get('throttled')} "
            f"errors={totals.get('errors')} protocol_errors={totals.get('protocol_errors')}"
        )
    print("\n".join(out), flush=True)


def saturation(row: Row, external: bool) -> str:
    """Which side of a stkpay row saturates a core, or which one the round trip waits on."""
    label = f"window {row.window}{' with receipts' if row.receipts_requested else ''}"
    if external or row.sim_cpu is None:
        return f"saturation ({label}): ESME {_pct(row.cpu)} of a core; the SMSC is not sampled"
    esme, sim = row.cpu, row.sim_cpu
    head = f"saturation ({label}): ESME {_pct(esme)}, simulator {_pct(sim)} of a core: "
    sides = [
        name
        for name, value in (("the ESME (this process)", esme), ("the simulator", sim))
        if value >= SATURATED
    ]
    if sides:
        return head + " and ".join(sides) + " saturate(s) a core"
    if esme + sim >= 80.0:
        bigger = "the ESME" if esme >= sim else "the simulator"
        share = 100 * max(esme, sim) / (esme + sim)
        return (
            head + "neither saturates one; they take turns (the window travels as one batch, "
            f"so one works while the other waits), together about one core; {bigger} takes "
            f"{share:.0f}% of each round, so it is the larger cost"
        )
    return head + "neither saturates a core; the rest of the time both wait (wake-ups, TCP)"


def memory_report(memory: list[MemoryPoint], *, receipts: bool, external: bool) -> list[str]:
    """Lines about one memory run."""
    load = "with receipts requested" if receipts else "without receipts"
    where = "" if external else " (one simulator process serves every run)"
    lines = [
        f"memory, {load}: resident size (VmRSS) during {memory[-1].messages:,} messages "
        f"at window 64 on a fresh bind{where}"
    ]
    lines.append(f"{'messages':>10} {'ESME MiB':>9} {'SMSC MiB':>9} {'receipts':>10}")
    for point in memory:
        sim = "n/a" if point.sim_kib is None else f"{point.sim_kib / 1024:.1f}"
        label = "after bind" if point.messages == 0 else f"{point.messages:,}"
        lines.append(f"{label:>10} {point.esme_kib / 1024:>9.1f} {sim:>9} {point.receipts:>10,}")

    def growth(a: int, b: int) -> str:
        value = 100.0 * (b - a) / a if a else 0.0
        verdict = "flat" if value < TARGET_GROWTH else "GROWS"
        return f"{value:+.1f}% ({verdict}; target < {TARGET_GROWTH:.0f}%)"

    last = memory[-1]
    first = next((p for p in memory if p.messages >= 100_000), None)
    if first is not None and first.messages < last.messages:
        text = (
            f"growth from {first.messages:,} to {last.messages:,} messages: "
            f"ESME {growth(first.esme_kib, last.esme_kib)}"
        )
        if first.sim_kib is not None and last.sim_kib is not None:
            text += f"; simulator {growth(first.sim_kib, last.sim_kib)}"
        lines.append(text)
    settled = next((p for p in memory if p.messages == 1_000_000), None)
    if receipts and settled is not None and settled.messages < last.messages:
        text = (
            f"growth from 1,000,000 to {last.messages:,} messages: "
            f"ESME {growth(settled.esme_kib, last.esme_kib)}"
        )
        if settled.sim_kib is not None and last.sim_kib is not None:
            text += f"; simulator {growth(settled.sim_kib, last.sim_kib)}"
        lines.append(text)
    if receipts:
        lines.append(
            "  with receipts the ESME's ReceiptMatcher remembers the latest 50,000 to 100,000 "
            "final receipt ids (a repeated receipt is recognised, not reported twice) as 64-bit "
            "fingerprints in two preallocated 1 MiB tables (smsc.dlr.RecentKeys): nothing per "
            "receipt outlives its message, so the resident size stays flat"
        )
    else:
        lines.append(
            "  without receipts the ESME keeps nothing per message once it completes"
            + (
                ""
                if external
                else "; the simulator's bounded tables (last 100,000 message states for "
                "query_sm, 1,000 MT per handset, 10 handsets here) fill during the first "
                "100k messages"
            )
        )
    return lines


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description="SMPP submit_sm throughput/latency/memory: stkpay ESME vs smpplib."
    )
    p.add_argument("--smsc", metavar="HOST:PORT", help="an external SMSC (no simulator)")
    p.add_argument("--system-id", default="bench", help="account to bind as (default bench)")
    p.add_argument("--password", default="benchpw", help="its password")
    p.add_argument("--quick", action="store_true", help="< 1 min: ~50k/point, 300k memory run")
    p.add_argument(
        "--messages",
        "--memory-messages",
        dest="memory_messages",
        type=int,
        default=None,
        help="messages of the memory run (default 1,000,000; --quick 300,000; 0: skip)",
    )
    p.add_argument(
        "--memory-load",
        choices=("both", "plain", "receipts"),
        default=None,
        help="memory runs: without receipts, with receipts, or both one after the other "
        "(default both; --quick: plain, to fit in a minute)",
    )
    p.add_argument("--messages-per-point", type=int, default=None, help="messages per run at most")
    p.add_argument("--seconds", type=float, default=None, help="seconds per run at most")
    p.add_argument("--repeats", type=int, default=None, help="runs per row (median)")
    p.add_argument("--windows", default="1,10,64", help="comma-separated windows")
    p.add_argument("--no-smpplib", action="store_true", help="skip smpplib's client")
    p.add_argument("--no-receipts", action="store_true", help="skip the receipt rows")
    p.add_argument("--length", type=int, default=60, help="characters per message (60)")
    p.add_argument("--receipt-timeout", type=float, default=30.0, help="seconds to wait")
    args = p.parse_args(argv)
    quick = args.quick
    if args.memory_messages is None:
        args.memory_messages = 300_000 if quick else 1_000_000
    if args.messages_per_point is None:
        args.messages_per_point = 50_000 if quick else 200_000
    if args.seconds is None:
        args.seconds = 1.5 if quick else 5.0
    if args.repeats is None:
        args.repeats = 1 if quick else 3
    if args.memory_load is None:
        args.memory_load = "plain" if quick else "both"
    args.memory_loads = {"both": [False, True], "plain": [False], "receipts": [True]}[
        args.memory_load
    ]
    args.window_list = [int(w) for w in args.windows.split(",") if w.strip()]
    if not 1 <= args.length <= 160:
        p.error("--length must be 1..160 (one GSM 7-bit part)")
    if args.smsc is not None:
        host, _, port = args.smsc.rpartition(":")
        if not host or not port.isdigit():
            p.error("--smsc must be HOST:PORT")
        args.smsc_host, args.smsc_port = host, int(port)
    return args


async def run(reactor: Any, args: argparse.Namespace) -> None:
    """All phases, then the report."""
    sim: Simulator | None = None
    if args.smsc is None:
        log("starting stkpay smsc-sim ...")
        sim = Simulator(args.system_id, args.password)
        reactor.addSystemEventTrigger("before", "shutdown", sim.stop)  # also on Ctrl-C
        target = sim.target
    else:
        target = Target(args.smsc_host, args.smsc_port, args.system_id, args.password)
    try:
        memory: dict[bool, list[MemoryPoint]] = {}
        for receipts in args.memory_loads if args.memory_messages > 0 else []:
            log(
                f"memory run: {args.memory_messages:,} messages, window 64, "
                + ("receipts" if receipts else "no receipts")
            )
            points = await memory_run(reactor, target, args, receipts=receipts)
            if points:
                memory[receipts] = points
        gc.collect()
        rows: dict[tuple[str, int, bool], Row] = {}
        clients = ["stkpay"] + ([] if args.no_smpplib else ["smpplib"])
        receipt_modes = [False] if args.no_receipts else [False, True]
        for repeat in range(args.repeats):
            for window in args.window_list:
                for receipts in receipt_modes:
                    for client in clients:
                        key = (client, window, receipts)
                        row = rows.setdefault(key, Row(client, window, receipts))
                        runner = esme_run if client == "stkpay" else smpplib_run
                        result = await runner(reactor, target, window, receipts, args)
                        row.runs.append(result)
                        log(
                            f"run {repeat + 1}/{args.repeats}: {client:<7} window {window:>2}"
                            f"{' receipts' if receipts else '         '}: {result.rate:>8,.0f}/s "
                            f"p50 {result.p50 * 1e3:.2f} ms p99 {result.p99 * 1e3:.2f} ms"
                            + (f" ERROR {result.error}" if result.error else "")
                        )
        ordered = sorted(
            rows.values(), key=lambda r: (r.receipts_requested, r.window, r.client != "stkpay")
        )
        report(
            ordered,
            memory,
            target,
            external=sim is None,
            args=args,
            sim_stats=target.sim_stats(),
        )
    finally:
        if sim is not None:
            sim.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run on the global reactor (this is a script, not library code)."""
    args = parse_args(argv)
    react(lambda reactor: ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
