"""Benchmark: ledger transfers per second and commit latency, SQLite and PostgreSQL.

What it measures (issue 3, Acceptance, last bullet), through the synchronous service layer
(:class:`ledger.service.Ledger`) exactly as the gateway's thread pool calls it:

* **Closed loop**, for each backend, three rows in the same run:

  - *group commit*: ``--threads`` threads (default 64) each post transfers back to back on
    one ledger opened with ``group_commit=True``: the committer batches concurrent requests
    into one database transaction (each in its own savepoint) and one durable commit;
  - *one tx per transfer*, the same threads on a ledger with ``group_commit=False``;
  - *one tx per transfer, 1 thread*: the plain sequential baseline.

  A transfer is a bank deposit of 1 fen to one of ``--wallets`` wallets with a fresh request
  id: a full keyed posting (idempotency record, journal row, two balance updates, the bank
  account being the hot row every transfer touches). Latency is the call to its return,
  which the service gives only once the commit is durable, for every call started in the
  measured window (a call starved behind others counts, however late it returns);
  throughput is the transfers finished in the window divided by its length, after a warm-up.
  The max column shows a caller starved by an unfair lock, which the percentiles can hide.

* **Paced**, open loop: ``--rate`` transfers/s (default 1,000) issued on a fixed schedule for
  ``--paced-seconds`` into a pool of threads, group commit on; latency runs from the
  *scheduled* instant to the return, so queueing behind a slow commit counts (no
  coordinated omission).

Targets printed beside the figures (this 2-core machine): >= 20,000 transfers/s on SQLite and
>= 5,000/s on PostgreSQL with group commit; p99 < 20 ms at 1,000 transfers/s. The bench
asserts nothing. SQLite runs on a file in a temporary directory (WAL, the service's
synchronous setting); PostgreSQL on a throwaway database created on ``--pg`` (default
``$STKPAY_TEST_PG`` or ``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped
after. Progress goes to stderr, the report to stdout.

Usage: ``.venv/bin/python bench/ledger_throughput.py [--quick] [--skip-pg] [--pg URL]``.
"""

from __future__ import annotations

import argparse
import contextlib
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

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds if self.seconds else 0.0

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
    import psycopg
    import psycopg.conninfo

    admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    name = f"stkpay_bench_{uuid.uuid4().hex[:12]}"
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN)
    password = params.get("password")
    auth = f"{params.get('user') or 'postgres'}" + (f":{password}" if password else "")
    where = f"{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://{auth}@{where}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


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
    for th in pool:
        th.start()
    try:
        gate.wait()
        time.sleep(warmup)
        phase["measure"] = True
        start = time.perf_counter()
        time.sleep(seconds)
        phase["measure"] = False
        elapsed = time.perf_counter() - start
        phase["stop"] = True
        for th in pool:
            th.join()
    finally:
        led.close()
    if errors:
        _log(f"  {len(errors)} threads failed, first: {errors[0]}")
    return Row(backend, mode, threads, counts[0], elapsed, latencies)


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
    return Row(backend, f"paced {rate:,.0f}/s", 64, len(latencies), elapsed, latencies)


def _measure(
    backend: str, args: argparse.Namespace, tmp: Path, report: Callable[[Row], None]
) -> None:
    with _database(backend, tmp) as url:
        _log(f"{backend}: setting up {args.wallets} wallets")
        _setup(url, args.wallets)
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
        _log(f"{backend}: paced {args.rate:g}/s for {args.paced_seconds:g} s")
        report(_paced(url, backend, args.rate, args.paced_seconds, args.wallets))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per row")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured start per row")
    parser.add_argument("--threads", type=int, default=64, help="concurrent callers")
    parser.add_argument("--wallets", type=int, default=256, help="destination wallets")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced transfers/s")
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument("--skip-pg", action="store_true", help="SQLite only")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--pg", default=None, help="PostgreSQL admin URL (creates a database)")
    parser.add_argument("--quick", action="store_true", help="short rows (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.paced_seconds, args.wallets = 1.5, 0.3, 2.0, 32
    if args.pg:
        global PG_ADMIN  # noqa: PLW0603 - a CLI override of the module default
        PG_ADMIN = args.pg

    rows: list[Row] = []
    header = (
        f"{'backend':<11}{'mode':<22}{'threads':>8}{'transfers':>11}{'per s':>10}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  target"
    )

    def report(row: Row) -> None:
        rows.append(row)
        _log(f"  {row.rate:,.0f}/s, p50 {row.pct(50):.2f} ms, p99 {row.pct(99):.2f} ms")

    backends = [
        b for b, skip in (("sqlite", args.skip_sqlite), ("postgresql", args.skip_pg)) if not skip
    ]
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        for backend in backends:
            try:
                _measure(backend, args, Path(tmp), report)
            except Exception as exc:  # e.g. PostgreSQL unreachable: report, go on
                _log(f"{backend}: skipped: {type(exc).__name__}: {' '.join(str(exc).split())}")

    print(
        f"ledger throughput, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; transfer = keyed bank deposit of 1 fen"
    )
    print(header)
    for row in rows:
        if row.mode == "group commit":
            target = f">= {TARGET_GROUP[row.backend]:,}/s"
            met = row.rate >= TARGET_GROUP[row.backend]
        elif row.mode.startswith("paced"):
            target = f"p99 < {TARGET_P99_MS:g} ms"
            met = row.pct(99) < TARGET_P99_MS
        else:
            target, met = "", None
        verdict = "" if met is None else (" (met)" if met else " (NOT met)")
        print(
            f"{row.backend:<11}{row.mode:<22}{row.threads:>8}{row.transfers:>11,}"
            f"{row.rate:>10,.0f}{row.pct(50):>9.2f}{row.pct(99):>9.2f}{row.pct(100):>9.1f}"
            f"  {target}{verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
