"""Benchmark: operations per second of the gateway's losable state (handlers.state).

For the in-process store (``MemoryState``) and Redis (``RedisState``, one connection, one
thread, so every operation is a round trip) it prints the median of ``--repeats`` runs of:

* dedup: ``remember_reply`` then ``recall_reply`` of a 140-octet reply under a fresh
  :func:`~handlers.state.dedup_key` each time (two operations per MO; ops/s counts both);
* allow: ``allow()`` on a rotating set of 1,000 subscribers at 5 per minute, burst 5
  (the flood check every MO passes through);
* budget: ``take_submit_budget(account, 1)`` on one SMSC account (the ESME's draw per submit_sm).

Redis keys go under a unique prefix that is deleted afterwards; without a reachable Redis the
Redis rows say so. It asserts nothing. Usage:
``python bench/state_store.py [--quick] [--ops N] [--repeats R] [--redis-url URL]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import redis

from handlers.state import MemoryState, RedisState, StateStore, StateUnavailable, dedup_key

ICCID = "8986001234567890123"
TAR = bytes.fromhex("B00010")
REPLY = bytes(140)  # one SMS segment of 8-bit data


def _dedup(store: StateStore, ops: int, run: int) -> None:
    remember, recall = store.remember_reply, store.recall_reply
    for i in range(ops // 2):
        key = dedup_key(ICCID, TAR, run * ops + i, b"packet")
        remember(key, REPLY, 60.0)
        recall(key)


def _allow(store: StateStore, ops: int, run: int) -> None:
    allow = store.allow
    for i in range(ops):
        allow(f"86138{(run * 7 + i) % 1000:08d}", rate=5 / 60, burst=5)


def _budget(store: StateStore, ops: int, run: int) -> None:
    take = store.take_submit_budget
    for _ in range(ops):
        take(f"smsc{run}", 1, rate=1_000_000.0, burst=1000)


WORKLOADS: dict[str, Callable[[StateStore, int, int], None]] = {
    "dedup": _dedup,
    "allow": _allow,
    "budget": _budget,
}


def _median_rate(
    store: StateStore, work: Callable[[StateStore, int, int], None], ops: int, repeats: int
) -> float:
    """Median ops/s of ``repeats`` timed runs (after one warm-up run)."""
    work(store, min(ops, 1000), 999)
    rates = []
    for run in range(repeats):
        began = time.perf_counter()
        work(store, ops, run)
        rates.append(ops / (time.perf_counter() - began))
    return statistics.median(rates)


def _cleanup(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one row per backend and workload."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=None, help="operations per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="fewer operations")
    args = parser.parse_args(argv)
    memory_ops = args.ops or (20_000 if args.quick else 200_000)
    redis_ops = args.ops or (2_000 if args.quick else 20_000)

    heading = f"ops/s (median of {args.repeats})"
    print(f"{'backend':<8} {'workload':<8} {'ops/run':>8} {heading:>24}")
    memory = MemoryState()
    for name, work in WORKLOADS.items():
        rate = _median_rate(memory, work, memory_ops, args.repeats)
        print(f"{'memory':<8} {name:<8} {memory_ops:>8} {rate:>24,.0f}")

    prefix = f"stkpay-bench-{uuid.uuid4().hex[:8]}:"
    shared = RedisState(args.redis_url, prefix=prefix)
    if not shared.ping():
        print(f"{'redis':<8} skipped: {shared!r} does not answer PING")
        return 0
    try:
        for name, work in WORKLOADS.items():
            rate = _median_rate(shared, work, redis_ops, args.repeats)
            print(f"{'redis':<8} {name:<8} {redis_ops:>8} {rate:>24,.0f}")
    except StateUnavailable as exc:
        print(f"{'redis':<8} failed: {exc}")
    finally:
        shared.close()
        _cleanup(args.redis_url, prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
