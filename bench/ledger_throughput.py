"""Benchmark: ledger transfers per second and commit latency, SQLite and PostgreSQL.

What it measures (issue 3, Acceptance, last bullet), for each backend in the same run:

* **Gateway rows** (the ones the targets are judged on). The SMPP gateway is a Twisted
  process: it calls the ledger through :class:`ledger.asyncapi.AsyncLedger`, whose writes go
  to the group committer with :meth:`Ledger.submit_callback` (no thread per request) and
  whose answers come back to the reactor thread as Deferreds. These rows run exactly that
  on a running reactor, in this process:

  - *gateway, N in flight*: closed loop, ``--inflight`` requests (default 1,024) kept
    outstanding; each answer, on the reactor thread, issues the next request. Latency is the
    call to the Deferred firing (the service answers only once the commit is durable).
  - *gateway paced*: open loop, ``--rate`` transfers/s (default 1,000) issued by the reactor
    on a fixed schedule for ``--paced-seconds``; latency runs from the *scheduled* instant to
    the Deferred firing, so any lateness of the reactor or queueing behind a slow commit
    counts (no coordinated omission).

* **Thread rows**, through the blocking API as the CLI or a thread pool calls it:

  - *group commit*: ``--threads`` threads (default 64) each post transfers back to back on
    one ledger opened with ``group_commit=True``: the committer batches concurrent requests
    into one database transaction (each in its own savepoint) and one durable commit;
  - *one tx per transfer*, the same threads on a ledger with ``group_commit=False``;
  - *one tx per transfer, 1 thread*: the plain sequential baseline;
  - *paced*, open loop: ``--rate`` transfers/s issued on a fixed schedule into a pool of
    64 threads, group commit on; latency from the scheduled instant to the return.

In every row a transfer is a bank deposit of 1 fen to one of ``--wallets`` wallets with a
fresh request id: a full keyed posting, validated, checked against its idempotency key and
the limits, with its journal row (the idempotency record of a one-transfer request) and two
balance updates (the bank account being the hot row every transfer touches), committed
durably (SQLite WAL ``synchronous=FULL``; PostgreSQL at the server's ``synchronous_commit``,
printed). Closed-loop latency counts every call started in the measured window, however late
it returns; throughput is the transfers finished in the window divided by its length, after
a warm-up. The max column shows a caller starved by an unfair lock, which percentiles hide.
Each row starts after a full garbage collection, as a long-running process would be: not
carrying the garbage of the imports and of the previous rows.
The cpu column is this process's CPU time per transfer in the window (both cores; the
PostgreSQL server's own CPU is not in it): the steadiest figure on a shared machine.

Targets (this 2-core machine): >= 20,000 transfers/s on SQLite and >= 5,000/s on PostgreSQL
with group commit; p99 < 20 ms at 1,000 transfers/s. They are judged on the gateway rows,
the path production traffic takes; the thread rows show the blocking path for comparison
(64 threads each blocked on a call spend more on waking threads than on the ledger). The
bench asserts nothing. SQLite runs on a file in a temporary directory; PostgreSQL on a
throwaway database created on ``--pg`` (default ``$STKPAY_TEST_PG`` or
``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped after. Progress goes to
stderr, the report to stdout.

Usage: ``.venv/bin/python bench/ledger_throughput.py [--quick] [--skip-pg] [--pg URL]
[--gateway-only]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

# Run as a script, this file's folder comes first on sys.path: put the project root first so
# that ``bench`` is the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._pg import throwaway_database
from ledger.asyncapi import AsyncLedger
from ledger.service import Ledger

PG_ADMIN = os.environ.get("STKPAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET_GROUP = {"sqlite": 20_000, "postgresql": 5_000}
TARGET_P99_MS = 20.0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Row:
    """One measured configuration."""

    backend: str
    mode: str
    threads: int
    transfers: int
    seconds: float
    latencies: list[float]
    cpu: float = float("nan")  # process CPU seconds in the window

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Process CPU per transfer, in microseconds."""
        return self.cpu / self.transfers * 1e6 if self.transfers else float("nan")

    def pct(self, q: float) -> float:
        """Latency percentile ``q`` (0..100) in ms."""
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        k = min(len(data) - 1, max(0, round(q / 100 * (len(data) - 1))))
        return data[k] * 1000


@contextlib.contextmanager
def _database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh, empty ledger URL for ``backend``; dropped afterwards."""
    if backend == "sqlite":
        path = tmp / f"bench-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite:///{path}"
        return
    with throwaway_database(PG_ADMIN) as url:
        yield url


def _msisdns(wallets: int) -> list[str]:
    return [f"86138{n:08d}" for n in range(wallets)]


def _setup(url: str, wallets: int) -> None:
    led = Ledger.connect(url, group_commit=False)
    try:
        for n, msisdn in enumerate(_msisdns(wallets)):
            led.open_wallet(msisdn, f"ID{n:016d}", request_id=f"open:{msisdn}")
    finally:
        led.close()


def _closed_loop(
    url: str, backend: str, mode: str, threads: int, *, seconds: float, warmup: float, wallets: int
) -> Row:
    """``threads`` threads posting back to back for ``seconds`` (after ``warmup``)."""
    group = mode == "group commit"
    led = Ledger.connect(url, group_commit=group)
    targets = _msisdns(wallets)
    run = uuid.uuid4().hex[:6]
    lock = threading.Lock()
    latencies: list[float] = []
    counts = [0]
    errors: list[str] = []
    gate = threading.Barrier(threads + 1)
    phase = {"measure": False, "stop": False}

    def worker(t: int) -> None:
        mine: list[float] = []
        done = 0
        gate.wait()
        try:
            for n in itertools.count():
                if phase["stop"]:
                    break
                msisdn = targets[(t + n * threads) % len(targets)]
                measured = phase["measure"]
                t0 = time.perf_counter()
                led.deposit(msisdn, 1, "bank", request_id=f"b:{run}:{t}:{n}")
                dt = time.perf_counter() - t0
                if measured:  # started in the window: its latency counts, however late
                    mine.append(dt)
                if phase["measure"]:  # finished in the window: counts for throughput
                    done += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            latencies.extend(mine)
            counts[0] += done

    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    gc.collect()
    for th in pool:
        th.start()
    try:
        gate.wait()
        time.sleep(warmup)
        phase["measure"] = True
        start, cpu0 = time.perf_counter(), time.process_time()
        time.sleep(seconds)
        phase["measure"] = False
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        phase["stop"] = True
        for th in pool:
            th.join()
    finally:
        led.close()
    if errors:
        _log(f"  {len(errors)} threads failed, first: {errors[0]}")
    return Row(backend, mode, threads, counts[0], elapsed, latencies, cpu)


def _paced(url: str, backend: str, rate: float, seconds: float, wallets: int) -> Row:
    """Open loop: one transfer every 1/rate s; latency from the scheduled instant."""
    led = Ledger.connect(url, group_commit=True)
    targets = _msisdns(wallets)
    run = uuid.uuid4().hex[:6]
    total = int(rate * seconds)
    latencies: list[float] = []
    lock = threading.Lock()
    interval = 1.0 / rate

    failed: list[str] = []

    def one(n: int, due: float) -> None:
        try:
            led.deposit(targets[n % len(targets)], 1, "bank", request_id=f"p:{run}:{n}")
        except Exception as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
            return
        dt = time.perf_counter() - due
        with lock:
            latencies.append(dt)

    gc.collect()
    cpu0 = time.process_time()
    try:
        with ThreadPoolExecutor(max_workers=64) as pool:
            start = time.perf_counter() + 0.05
            for n in range(total):
                due = start + n * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(one, n, due)
        elapsed = time.perf_counter() - start
    finally:
        led.close()
    if failed:
        _log(f"  {len(failed)} transfers failed, first: {failed[0]}")
    cpu = time.process_time() - cpu0
    return Row(backend, f"paced {rate:,.0f}/s", 64, len(latencies), elapsed, latencies, cpu)


async def _gateway_closed(reactor: Any, url: str, backend: str, args: argparse.Namespace) -> Row:
    """AsyncLedger on the running reactor, ``args.inflight`` requests outstanding."""
    led = Ledger.connect(url, group_commit=True, max_batch=args.max_batch)
    alg = AsyncLedger(led, reactor)
    targets = _msisdns(args.wallets)
    run = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    errors: list[str] = []
    state = {"measure": False, "stop": False, "done": 0, "active": 0, "n": 0}
    finished: defer.Deferred[None] = defer.Deferred()

    def issue() -> None:
        n = state["n"]
        state["n"] = n + 1
        t0 = time.perf_counter()
        d = alg.deposit(targets[n % len(targets)], 1, "bank", request_id=f"g:{run}:{n}")
        d.addCallbacks(answered, failed, (t0, state["measure"]))

    def answered(_view: object, t0: float, measured: bool) -> None:
        if measured:
            latencies.append(time.perf_counter() - t0)
        if state["measure"]:
            state["done"] += 1
        if state["stop"]:
            state["active"] -= 1
            if state["active"] == 0:
                finished.callback(None)
            return
        issue()

    def failed(failure: Any) -> None:
        errors.append(str(failure.value))
        state["active"] -= 1
        if state["active"] == 0 and not finished.called:
            finished.callback(None)

    gc.collect()
    try:
        state["active"] = args.inflight
        for _ in range(args.inflight):
            issue()
        await task.deferLater(reactor, args.warmup, lambda: None)
        state["measure"] = True
        start, cpu0 = time.perf_counter(), time.process_time()
        await task.deferLater(reactor, args.seconds, lambda: None)
        state["measure"] = False
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        state["stop"] = True
        await finished
    finally:
        alg.stop()
        led.close()
    if errors:
        _log(f"  {len(errors)} transfers failed, first: {errors[0]}")
    mode = f"gateway, {args.inflight} in flight"
    return Row(backend, mode, 1, state["done"], elapsed, latencies, cpu)


async def _gateway_paced(reactor: Any, url: str, backend: str, args: argparse.Namespace) -> Row:
    """AsyncLedger on the running reactor, open loop: one transfer every 1/rate s, each
    issued by the reactor at its scheduled instant (or as soon after as the reactor can)."""
    led = Ledger.connect(url, group_commit=True, max_batch=args.max_batch)
    alg = AsyncLedger(led, reactor)
    targets = _msisdns(args.wallets)
    run = uuid.uuid4().hex[:6]
    total = int(args.rate * args.paced_seconds)
    interval = 1.0 / args.rate
    latencies: list[float] = []
    errors: list[str] = []
    finished: defer.Deferred[None] = defer.Deferred()
    state = {"issued": 0, "answered": 0}

    def answered(_view: object, due: float) -> None:
        latencies.append(time.perf_counter() - due)
        settled()

    def failed(failure: Any) -> None:
        errors.append(str(failure.value))
        settled()

    def settled() -> None:
        state["answered"] += 1
        if state["answered"] == total:
            finished.callback(None)

    def tick() -> None:
        now = time.perf_counter()
        issued = state["issued"]
        while issued < total and start + issued * interval <= now:
            due = start + issued * interval
            d = alg.deposit(
                targets[issued % len(targets)], 1, "bank", request_id=f"q:{run}:{issued}"
            )
            d.addCallbacks(answered, failed, (due,))
            issued += 1
        state["issued"] = issued
        if issued < total:
            reactor.callLater(max(0.0, start + issued * interval - time.perf_counter()), tick)

    gc.collect()
    start = time.perf_counter() + 0.05
    cpu0 = time.process_time()
    try:
        reactor.callLater(max(0.0, start - time.perf_counter()), tick)
        await finished
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    finally:
        alg.stop()
        led.close()
    if errors:
        _log(f"  {len(errors)} transfers failed, first: {errors[0]}")
    mode = f"gateway paced {args.rate:,.0f}/s"
    return Row(backend, mode, 1, len(latencies), elapsed, latencies, cpu)


def _durability(url: str, backend: str) -> str:
    """The durability setting commits run with, as the service opens its connections."""
    if backend == "sqlite":
        led = Ledger.connect(url, group_commit=False)
        try:
            with led._db.connection() as conn:  # the bench inspects the pool's settings
                mode = conn.raw.execute("PRAGMA journal_mode").fetchone()[0]
                sync = conn.raw.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            led.close()
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return f"journal_mode={mode}, synchronous={names.get(sync, sync)}"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"
        ).fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    setting, source = row if row else ("?", "?")
    return f"synchronous_commit={setting} ({source}), fsync={fsync[0] if fsync else '?'}"


async def _measure(  # noqa: PLR0917 - a private helper of main()
    reactor: Any,
    backend: str,
    args: argparse.Namespace,
    tmp: Path,
    report: Callable[[Row], None],
    notes: list[str],
) -> None:
    with _database(backend, tmp) as url:
        _log(f"{backend}: setting up {args.wallets} wallets")
        _setup(url, args.wallets)
        notes.append(f"{backend}: {_durability(url, backend)}")
        _log(f"{backend}: gateway, {args.inflight} in flight, {args.seconds:g} s")
        report(await _gateway_closed(reactor, url, backend, args))
        _settle(url, backend)
        _log(f"{backend}: gateway paced {args.rate:g}/s for {args.paced_seconds:g} s")
        report(await _gateway_paced(reactor, url, backend, args))
        if args.gateway_only:
            return
        for mode, threads in (
            ("group commit", args.threads),
            ("one tx per transfer", args.threads),
            ("one tx per transfer", 1),
        ):
            _log(f"{backend}: {mode}, {threads} threads, {args.seconds:g} s")
            row = _closed_loop(
                url,
                backend,
                mode,
                threads,
                seconds=args.seconds,
                warmup=args.warmup,
                wallets=args.wallets,
            )
            report(row)
        _settle(url, backend)
        _log(f"{backend}: paced {args.rate:g}/s for {args.paced_seconds:g} s")
        report(_paced(url, backend, args.rate, args.paced_seconds, args.wallets))


def _settle(url: str, backend: str) -> None:
    """Before a paced row: let the previous row's burst reach the disk (``sync``; on
    PostgreSQL a ``CHECKPOINT`` where the role may), so the row measures a steady 1,000/s and
    not the write-back of the 50,000 transfers before it."""
    os.sync()
    if backend != "postgresql":
        return
    import psycopg

    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(url, autocommit=True, connect_timeout=10) as conn,
    ):
        conn.execute("CHECKPOINT")


def _verdict(row: Row) -> str:
    """The target a row is judged on, and whether it is met ("" for unjudged rows)."""
    if row.mode.startswith("gateway paced"):
        met = row.pct(99) < TARGET_P99_MS
        return f"p99 < {TARGET_P99_MS:g} ms" + (" (met)" if met else " (NOT met)")
    if row.mode.startswith("gateway"):
        met = row.rate >= TARGET_GROUP[row.backend]
        return f">= {TARGET_GROUP[row.backend]:,}/s" + (" (met)" if met else " (NOT met)")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per row")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured start per row")
    parser.add_argument("--threads", type=int, default=64, help="concurrent blocking callers")
    parser.add_argument("--inflight", type=int, default=1024, help="gateway requests in flight")
    parser.add_argument("--max-batch", type=int, default=512, help="group commit batch bound")
    parser.add_argument("--wallets", type=int, default=256, help="destination wallets")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced transfers/s")
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument("--skip-pg", action="store_true", help="SQLite only")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--gateway-only", action="store_true", help="only the judged rows")
    parser.add_argument("--pg", default=None, help="PostgreSQL admin URL (creates a database)")
    parser.add_argument("--quick", action="store_true", help="short rows (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.paced_seconds, args.wallets = 1.5, 0.3, 2.0, 32
    if args.pg:
        global PG_ADMIN  # noqa: PLW0603 - a CLI override of the module default
        PG_ADMIN = args.pg

    rows: list[Row] = []
    notes: list[str] = []

    def report(row: Row) -> None:
        rows.append(row)
        _log(
            f"  {row.rate:,.0f}/s, p50 {row.pct(50):.2f} ms, p99 {row.pct(99):.2f} ms, "
            f"cpu {row.cpu_us:.1f} us/transfer"
        )

    backends = [
        b for b, skip in (("sqlite", args.skip_sqlite), ("postgresql", args.skip_pg)) if not skip
    ]

    async def run_all(reactor: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
            for backend in backends:
                try:
                    await _measure(reactor, backend, args, Path(tmp), report, notes)
                except Exception as exc:  # e.g. PostgreSQL unreachable: report, go on
                    text = " ".join(str(exc).split())
                    _log(f"{backend}: skipped: {type(exc).__name__}: {text}")

    from twisted.internet import reactor as installed

    _reactor: Any = installed
    outcome: list[object] = []

    def done(result: object) -> None:
        outcome.append(result)
        _reactor.stop()

    def start() -> None:
        defer.ensureDeferred(run_all(_reactor)).addBoth(done)

    _reactor.callWhenRunning(start)
    _reactor.run()
    for result in outcome:  # a bug in the bench itself: show it
        if hasattr(result, "printTraceback"):
            result.printTraceback()

    print(
        f"ledger throughput, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; transfer = keyed bank deposit of 1 fen, durable commit"
    )
    for note in notes:
        print(f"  {note}")
    print(
        f"{'backend':<11}{'mode':<27}{'threads':>8}{'transfers':>11}{'per s':>9}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'cpu us':>8}  target"
    )
    for row in rows:
        print(
            f"{row.backend:<11}{row.mode:<27}{row.threads:>8}{row.transfers:>11,}"
            f"{row.rate:>9,.0f}{row.pct(50):>8.2f}{row.pct(99):>8.2f}{row.pct(100):>8.1f}"
            f"{row.cpu_us:>8.1f}  {_verdict(row)}"
        )
    print(
        "Targets are judged on the gateway rows: AsyncLedger on a running Twisted reactor,\n"
        "writes handed to the group committer by Ledger.submit_callback, the path the SMPP\n"
        "gateway takes (issue 3: 'a non-blocking API for the Twisted gateway'). The thread\n"
        "rows are the blocking CLI/thread-pool path, for comparison. cpu us = this process's\n"
        "CPU per transfer (the PostgreSQL server's is not included)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
