"""Benchmark: complete STK top-ups and balance queries per second, end to end.

Issue 5, Acceptance, last bullet: N virtual phones (default 10,000 subscribers, each wallet
funded, card enabled, PIN set) driven through the SMSC simulator against the gateway; complete
top-ups/s and MO-to-confirmation latency p50/p99, the same for balance queries. Targets on
this 2-core machine: **at least 500 complete top-ups/s; p99 under 100 ms for a top-up and
under 40 ms for a balance query at 200 requests/s**; the gateway's resident size under 300 MB
and flat over the run.

The gateway is the real ``stkpay serve`` in a child process (:class:`bench._gateway.
GatewayProcess`); this process is the network side: the SMSC simulator on an ephemeral
loopback port (its account unthrottled) and the fleet of virtual phones behind it. The phones
start everything from their STK menu as a subscriber does: a top-up is
``select("我的手机钱包/充值")``, ``input("1")`` (1 yuan), ``input(PIN)``; the card then sends the
secured top-up MO. A top-up is complete when the confirmation SMS (``topup_ok``) reaches the
phone, after the gateway's CREDIT FOR LOAD by OTA and the card's PoR. A balance query is
``select("我的手机钱包/余额查询")``, complete when the balance SMS arrives. Latency runs from the
MO handed to the simulator to that SMS handed to the phone; paced rows also show it from the
scheduled instant (``p99 sched``: lateness of this process counts too). Any other reply is a
refusal, counted apart by reason (the reply template its text matches).

Load spread: top-ups go round robin over the subscribers, 1 yuan each, at most 5 per
subscriber per day (the daily limit, Asia/Shanghai), so neither the card cap nor the cash nor
the daily count binds. Each phone has one request outstanding at most.

Rows: warm-up (closed loop: some top-ups, then a balance query from every subscriber, so that
the gateway's per-card caches are filled before its resident size is taken), top-ups paced at
200/s, balance queries paced at 200/s, top-ups
closed loop with ``--concurrency`` outstanding, top-ups paced at ``--rate`` (500/s). Between
rows the bench waits until the gateway has answered everything. Each row shows the CPU per
request of the gateway process and of this process (both share the 2 cores) and the share of
the machine other processes used.

``--ledger-url URL`` (a PostgreSQL server: a throwaway database is created there and dropped
after) and ``--redis-url URL`` run a second configuration in the same invocation (ledger,
PINs, OTA counters and calibration table on PostgreSQL; losable state on Redis, under a
run-unique prefix deleted after), printed beside the embedded default.

Usage::

    .venv/bin/python bench/e2e_topup.py                      # 10,000 subscribers, 10 s rows
    .venv/bin/python bench/e2e_topup.py --quick              # 1,000 subscribers, 3 s rows
    .venv/bin/python bench/e2e_topup.py --ledger-url postgresql://postgres@127.0.0.1/postgres \\
        --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, threads

from bench._gateway import (
    Done,
    GatewayProcess,
    PrepTimes,
    Row,
    Sampler,
    Stores,
    Subscriber,
    closed_loop,
    freeze_heap,
    open_loop,
    percentile,
    pg_database,
    prepare,
    redis_cleanup,
    sleep,
    start_network,
)
from ledger.service import Ledger
from ota.keystore import FileKeyStore
from simcard.fleet import Fleet
from smsc.handset import MtMessage
from stk_menus.replies import LONGEST_VALUES, TEMPLATES, render
from stkpay.config import GatewayConfig
from stkpay.runner import run

TOPUP: Final = "我的手机钱包/充值"
BALANCE: Final = "我的手机钱包/余额查询"
PIN: Final = "123456"
AMOUNT_YUAN: Final = "1"
CASH_FEN: Final = 10_000  # 100 yuan per wallet
DAILY_TOPUPS: Final = 5
FIRST_MSISDN: Final = "8613700000000"
TARGET_TOPUPS_PER_S: Final = 500.0
TARGET_TOPUP_P99_MS: Final = 100.0
TARGET_BALANCE_P99_MS: Final = 40.0
TARGET_RSS_MB: Final = 300.0
#: Growth of the gateway's resident size from after the warm-up to the end called flat.
FLAT_GROWTH: Final = 0.10
PACED_RATE: Final = 200.0
WARMUP: Final = 200
DRAIN_S: Final = 10.0


def _reply_prefixes() -> list[tuple[str, str]]:
    """(text prefix, template name), longest first: each Chinese reply up to its first
    variable digit, so that an SMS is told by the template it was rendered from."""
    out = []
    for name in TEMPLATES:
        text = render(name, "zh", **LONGEST_VALUES[name])
        m = re.search(r"\d", text)
        out.append((text[: m.start()] if m else text, name))
    return sorted(out, key=lambda p: -len(p[0]))


_PREFIXES: Final = _reply_prefixes()


def classify(text: str) -> str:
    """The reply template ``text`` was rendered from, or ``other``."""
    for prefix, name in _PREFIXES:
        if prefix and text.startswith(prefix):
            return name
    return "other"


@dataclass
class _Flow:
    expect: str  # the template that completes it: topup_ok or balance
    done: defer.Deferred[Done]
    mo_at: float | None = None


class _Traffic:
    """Outstanding requests by MSISDN (one per phone); the network side's hooks end them."""

    def __init__(self) -> None:
        self.flows: dict[str, _Flow] = {}
        self.network: Any = None
        self.stray = 0  # SMS no outstanding request waited for (a late one)
        self.last_mt = time.perf_counter()

    def on_mo(self, msisdn: str, at: float) -> None:
        flow = self.flows.get(msisdn)
        if flow is not None and flow.mo_at is None:
            flow.mo_at = at

    def on_mt(self, msisdn: str, message: MtMessage, text: str | None, at: float) -> None:
        del message
        self.last_mt = at
        if text is None:
            return  # an OTA command: the card answers it with its PoR
        flow = self.flows.pop(msisdn, None)
        if flow is None:
            self.stray += 1
            return
        kind = classify(text)
        outcome = "ok" if kind == flow.expect else kind.removeprefix("refused_")
        flow.done.callback(Done(flow.mo_at if flow.mo_at is not None else at, at, outcome))

    def _start(
        self, msisdn: str, expect: str, action: Callable[[Any], Any]
    ) -> defer.Deferred[Done]:
        def cancel(_d: defer.Deferred[Done]) -> None:
            self.flows.pop(msisdn, None)

        d: defer.Deferred[Done] = defer.Deferred(cancel)
        self.flows[msisdn] = _Flow(expect, d)
        self.network.act(msisdn, action)
        return d

    def topup(self, msisdn: str) -> defer.Deferred[Done]:
        """The subscriber's STK top-up of 1 yuan."""
        return self._start(
            msisdn, "topup_ok", lambda p: [*p.select(TOPUP), *p.input(AMOUNT_YUAN), *p.input(PIN)]
        )

    def balance(self, msisdn: str) -> defer.Deferred[Done]:
        """The subscriber's STK balance query."""
        return self._start(msisdn, "balance", lambda p: p.select(BALANCE))

    async def quiet(self, reactor: Any, still: float = 1.0, limit: float = 60.0) -> None:
        """Wait until nothing is outstanding and no MT came for ``still`` s (at most
        ``limit`` s): what a row queued does not spill into the next."""
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            if not self.flows and time.perf_counter() - self.last_mt >= still:
                return
            await sleep(reactor, 0.1)


class _Picker:
    """Subscribers round robin, skipping a phone with a request outstanding and, for
    top-ups, one that had its ``cap`` top-ups today (counted here)."""

    def __init__(self, msisdns: list[str], traffic: _Traffic, cap: int | None) -> None:
        self._msisdns = msisdns
        self._traffic = traffic
        self._cap = cap
        self._used: dict[str, int] = {}
        self._next = 0

    def __call__(self) -> str | None:
        for _ in range(len(self._msisdns)):
            msisdn = self._msisdns[self._next]
            self._next = (self._next + 1) % len(self._msisdns)
            if msisdn in self._traffic.flows:
                continue
            if self._cap is not None:
                used = self._used.get(msisdn, 0)
                if used >= self._cap:
                    continue
                self._used[msisdn] = used + 1
            return msisdn
        return None

    @property
    def most(self) -> int:
        return max(self._used.values(), default=0)


@dataclass
class _Result:
    """One configuration's run."""

    name: str
    subscribers: int
    fleet_s: float = 0.0
    power_on_s: float = 0.0
    prep: PrepTimes = field(default_factory=PrepTimes)
    ready_s: float = 0.0
    rows: list[tuple[str, Row]] = field(default_factory=list)  # (kind, row)
    rss_ready_kb: int = 0
    rss_warm_kb: int = 0
    rss_max_kb: int = 0
    rss_end_kb: int = 0
    rss_samples: list[int] = field(default_factory=list)
    exit_status: int | None = None
    warnings: int = 0
    warning_samples: list[str] = field(default_factory=list)
    stray: int = 0
    verified: bool | None = None
    pending_loads: int = 0
    most_topups: int = 0
    mo_accepted: int = 0
    mo_refused: int = 0


async def _run_config(
    reactor: Any,
    args: argparse.Namespace,
    name: str,
    pg_url: str | None,
    redis_url: str | None,
) -> _Result:
    result = _Result(name, args.subscribers)
    with tempfile.TemporaryDirectory(prefix="stkpay-bench-e2e-") as tmp:
        stores = Stores.make(Path(tmp), pg_url=pg_url, redis_url=redis_url)
        print(f"[{name}] personalising {args.subscribers} phones ...", file=sys.stderr)
        t = time.perf_counter()
        fleet = Fleet(
            FileKeyStore(stores.key_file), count=args.subscribers, first_msisdn=FIRST_MSISDN
        )
        result.fleet_s = time.perf_counter() - t
        t = time.perf_counter()
        for entry in fleet:  # the first switch-on's calibration MO is issue 6's bench
            entry.phone.power_on()
            entry.phone.outbox()
        result.power_on_s = time.perf_counter() - t
        subscribers = [Subscriber(e.phone.msisdn, e.phone.card.iccid) for e in fleet]
        freeze_heap()
        print(f"[{name}] preparing the stores ...", file=sys.stderr)
        result.prep = await threads.deferToThread(
            prepare, stores, subscribers, cash_fen=CASH_FEN, pin=PIN
        )
        print(f"[{name}] stores prepared in {result.prep.describe()}", file=sys.stderr)
        traffic = _Traffic()
        side = await start_network(reactor, fleet, on_mo=traffic.on_mo, on_mt=traffic.on_mt)
        traffic.network = side.network
        gateway = GatewayProcess(
            stores,
            smpp_port=side.smpp_port,
            account=side.account,
            window=args.window,
            throughput=args.throughput,
            workers=args.workers,
        )
        gateway.start()
        sampler = Sampler(reactor, gateway)
        msisdns = list(fleet.phones)
        topups = _Picker(msisdns, traffic, DAILY_TOPUPS)
        queries = _Picker(msisdns, traffic, None)
        try:
            t = time.perf_counter()
            await threads.deferToThread(gateway.wait_ready)
            result.ready_s = time.perf_counter() - t
            result.rss_ready_kb = gateway.rss_kb()
            sampler.start()
            await closed_loop(
                reactor, traffic.topup, topups, name="warm-up", concurrency=16, count=WARMUP
            )
            # Every subscriber once, so that the gateway's per-card caches (derived keys,
            # the receiver's counters, dedup entries) are as full as the run will make them:
            # growth after this is what the traffic itself leaves behind.
            await closed_loop(
                reactor,
                traffic.balance,
                queries,
                name="warm-up",
                concurrency=64,
                count=max(WARMUP, len(msisdns)),
            )
            await traffic.quiet(reactor)
            result.rss_warm_kb = gateway.rss_kb()

            async def measure(kind: str, body: Callable[[], Any]) -> None:
                print(f"[{name}] {kind} ...", file=sys.stderr)
                sampler.mark()
                row: Row = await body()
                sampler.charge(row)
                result.rows.append((kind, row))
                print(f"[{name}]   {_line(name, row)} {row.refusals}", file=sys.stderr)
                await traffic.quiet(reactor)
                row.gateway_rss_kb = gateway.rss_kb()

            secs = args.seconds
            await measure(
                "top-up",
                lambda: open_loop(
                    reactor,
                    traffic.topup,
                    topups,
                    name="top-up, paced",
                    rate=PACED_RATE,
                    seconds=secs,
                    drain=DRAIN_S,
                ),
            )
            await measure(
                "balance",
                lambda: open_loop(
                    reactor,
                    traffic.balance,
                    queries,
                    name="balance, paced",
                    rate=PACED_RATE,
                    seconds=secs,
                    drain=DRAIN_S,
                ),
            )
            await measure(
                "top-up",
                lambda: closed_loop(
                    reactor,
                    traffic.topup,
                    topups,
                    name=f"top-up, closed {args.concurrency}",
                    concurrency=args.concurrency,
                    seconds=secs,
                ),
            )
            for _ in range(args.repeat if args.rate > 0 else 0):
                await measure(
                    "top-up",
                    lambda: open_loop(
                        reactor,
                        traffic.topup,
                        topups,
                        name="top-up, paced",
                        rate=args.rate,
                        seconds=secs,
                        drain=DRAIN_S,
                    ),
                )
            result.rss_end_kb = gateway.rss_kb()
            with contextlib.suppress(Exception):
                _code, body = await threads.deferToThread(gateway.health)
                result.mo_accepted = int(body.get("mo_accepted", 0))
                result.mo_refused = int(body.get("mo_refused", 0))
        finally:
            sampler.stop()
            result.exit_status = await threads.deferToThread(gateway.stop)
            await side.stop()
        result.rss_samples = sampler.rss_kb
        result.rss_max_kb = max(sampler.rss_kb, default=0)
        result.warnings = gateway.warnings
        result.warning_samples = gateway.warning_samples
        result.stray = traffic.stray
        result.most_topups = topups.most

        def check() -> tuple[bool, int]:
            ledger = Ledger.connect(stores.ledger_url, group_commit=False)
            try:
                return ledger.verify().ok, len(ledger.pending_loads())
            finally:
                ledger.close()

        result.verified, result.pending_loads = await threads.deferToThread(check)
        if redis_url:
            await threads.deferToThread(redis_cleanup, redis_url, stores.state_prefix)
    return result


def _line(config: str, row: Row) -> str:
    paced = row.offered is not None
    offered = f"{row.offered:>6.0f}" if row.offered is not None else f"{'max':>6}"
    sched = f"{percentile(row.from_schedule_ms, 0.99):>8.1f}" if paced else f"{'-':>8}"
    lat = row.latencies_ms
    return (
        f"{config:<22} {row.name:<20} {offered} {row.rate:>7.1f} {percentile(lat, 0.5):>7.1f} "
        f"{percentile(lat, 0.99):>7.1f} {sched} {max(lat, default=math.nan):>7.1f} "
        f"{row.ok:>6}/{row.injected:<6} {sum(row.refusals.values()):>5} {row.lost:>5} "
        f"{row.per_flow_us(row.gateway_cpu_s):>6.0f} {row.per_flow_us(row.bench_cpu_s):>6.0f} "
        f"{_busy(row.gateway_cpu_s, row):>4.0%} {_busy(row.bench_cpu_s, row):>4.0%} "
        f"{row.others:>6.0%}"
    )


def _busy(cpu_s: float, row: Row) -> float:
    """CPU seconds over the row's measured interval (1.0: one core saturated)."""
    return cpu_s / row.cpu_interval_s if row.cpu_interval_s else math.nan


def _report(args: argparse.Namespace, results: list[_Result]) -> None:
    print(
        "End-to-end benchmark: STK top-ups and balance queries through the SMSC simulator "
        "(loopback SMPP) and `stkpay serve` in its own process; simulator + virtual phones in "
        "this process"
    )
    print(
        f"{args.subscribers} subscribers (wallet funded 100 yuan, card enabled, PIN set); "
        f"top-ups of {AMOUNT_YUAN} yuan round robin, at most {DAILY_TOPUPS} per subscriber per "
        "day (Asia/Shanghai): the single, card, cash and daily limits do not bind; gateway "
        f"ESME window {args.window}, {args.throughput:.0f} submit_sm/s; rows of "
        f"{args.seconds:.0f} s"
    )
    print(
        "latency ms: MO handed to the simulator -> reply SMS handed to the phone (top-up: "
        "confirmation after CREDIT FOR LOAD and PoR); p99 sched: from the scheduled instant"
    )
    print()
    head = (
        f"{'configuration':<22} {'row':<20} {'rate':>6} {'done/s':>7} {'p50':>7} {'p99':>7} "
        f"{'p99sched':>8} {'max':>7} {'ok/injected':>13} {'refus':>5} {'lost':>5} "
        f"{'gw us':>6} {'ben us':>6} {'gw%':>4} {'ben%':>4} {'others':>6}"
    )
    print(head)
    print("-" * len(head))
    for i in range(max(len(r.rows) for r in results)):
        for r in results:
            if i < len(r.rows):
                print(_line(r.name, r.rows[i][1]))
    print()
    print(
        "done/s: requests answered ok inside the row's window per second; gw us / ben us: CPU "
        "microseconds per request of the gateway process / of this process (simulator, "
        "phones, pacing); gw% / ben%: their CPU over the row (100%: one core saturated); "
        "others: share of the 2 cores other processes used (noise)"
    )
    for r in results:
        refusals: dict[str, int] = {}
        for _kind, row in r.rows:
            for reason, n in row.refusals.items():
                refusals[reason] = refusals.get(reason, 0) + n
        text = ", ".join(f"{k} {v}" for k, v in refusals.items()) or "none"
        print(f"[{r.name}] refusals by reason: {text}; late SMS after a timeout: {r.stray}")
    print()
    for r in results:
        growth = (r.rss_end_kb - r.rss_warm_kb) / r.rss_warm_kb if r.rss_warm_kb else math.nan
        print(
            f"[{r.name}] gateway RSS MiB: ready {r.rss_ready_kb / 1024:.1f}, after warm-up "
            f"{r.rss_warm_kb / 1024:.1f}, max during {r.rss_max_kb / 1024:.1f}, end "
            f"{r.rss_end_kb / 1024:.1f} ({growth:+.1%} from warm-up to end; "
            f"{len(r.rss_samples)} samples); after each row: "
            + ", ".join(f"{row.gateway_rss_kb / 1024:.1f}" for _k, row in r.rows)
        )
        print(
            f"[{r.name}] set-up: {r.subscribers} phones personalised {r.fleet_s:.1f} s, "
            f"switched on {r.power_on_s:.1f} s; stores {r.prep.describe()}; gateway ready "
            f"{r.ready_s:.1f} s"
        )
        print(
            f"[{r.name}] gateway: MO accepted {r.mo_accepted}, refused {r.mo_refused}, exit "
            f"status {r.exit_status}, {r.warnings} warning lines; ledger verify "
            f"{'ok' if r.verified else 'FAILED'}, {r.pending_loads} loads pending at the end; "
            f"most top-ups by one subscriber {r.most_topups}"
        )
        for sample in r.warning_samples:
            print(f"[{r.name}]   gateway log: {sample}")
    print()
    for r in results:
        _targets(r)


def _targets(r: _Result) -> None:
    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT met"

    best = max((row.rate for kind, row in r.rows if kind == "top-up"), default=0.0)
    print(
        f"[{r.name}] target >= {TARGET_TOPUPS_PER_S:.0f} complete top-ups/s: "
        f"{verdict(best >= TARGET_TOPUPS_PER_S)} (best row {best:.1f}/s)"
    )
    for kind, target in (("top-up", TARGET_TOPUP_P99_MS), ("balance", TARGET_BALANCE_P99_MS)):
        row = next(
            (x for k, x in r.rows if k == kind and x.offered == PACED_RATE),
            None,
        )
        if row is None:
            continue
        p99 = percentile(row.latencies_ms, 0.99)
        sched = percentile(row.from_schedule_ms, 0.99)
        complete = row.ok == row.injected and row.in_window >= 0.99 * row.injected
        print(
            f"[{r.name}] target {kind} p99 < {target:.0f} ms at {PACED_RATE:.0f}/s: "
            f"{verdict(complete and p99 < target)} (p99 {p99:.1f} ms from the MO, "
            f"{sched:.1f} ms from the schedule; {row.ok}/{row.injected} ok)"
        )
    flat = r.rss_warm_kb > 0 and (r.rss_end_kb - r.rss_warm_kb) / r.rss_warm_kb <= FLAT_GROWTH
    print(
        f"[{r.name}] target gateway RSS < {TARGET_RSS_MB:.0f} MB and flat (<= "
        f"{FLAT_GROWTH:.0%} growth after warm-up): "
        f"{verdict(r.rss_max_kb / 1024 < TARGET_RSS_MB and flat)}"
    )


@contextlib.contextmanager
def _maybe_pg(url: str | None) -> Iterator[str | None]:
    if url is None:
        yield None
        return
    with pg_database(url) as db:
        yield db


async def _bench(reactor: Any, args: argparse.Namespace) -> int:
    results: list[_Result] = []
    if not args.skip_sqlite:
        results.append(await _run_config(reactor, args, "sqlite + in-process", None, None))
    if args.ledger_url or args.redis_url:
        ledger = "postgresql" if args.ledger_url else "sqlite"
        name = f"{ledger} + {'redis' if args.redis_url else 'in-process'}"
        with _maybe_pg(args.ledger_url) as db:
            results.append(await _run_config(reactor, args, name, db, args.redis_url))
    _report(args, results)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=10_000, help="virtual phones")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each row")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop outstanding")
    parser.add_argument(
        "--rate", type=float, default=TARGET_TOPUPS_PER_S, help="last paced top-up row (0: none)"
    )
    parser.add_argument("--window", type=int, default=64, help="gateway ESME window")
    parser.add_argument(
        "--throughput", type=float, default=10_000.0, help="gateway ESME submit_sm/s limit"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=GatewayConfig().workers,
        help="gateway [gateway] workers (default: the product's)",
    )
    parser.add_argument("--ledger-url", help="PostgreSQL server for a second configuration")
    parser.add_argument("--redis-url", help="Redis for the second configuration's state")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the last paced row this many times (the RSS after each tells a high-water "
        "mark from a leak)",
    )
    parser.add_argument(
        "--skip-sqlite",
        action="store_true",
        help="only the --ledger-url/--redis-url configuration (profiling it alone)",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 subscribers, 3 s rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers = min(args.subscribers, 1000)
        args.seconds = min(args.seconds, 3.0)
    if (
        args.subscribers < 1
        or args.seconds <= 0
        or args.concurrency < 1
        or args.rate < 0
        or args.repeat < 1
    ):
        parser.error(
            "--subscribers, --seconds, --concurrency, --repeat must be positive, --rate >= 0"
        )
    if args.skip_sqlite and not (args.ledger_url or args.redis_url):
        parser.error("--skip-sqlite needs --ledger-url or --redis-url")
    return run(lambda reactor: _bench(reactor, args))


if __name__ == "__main__":
    sys.exit(main())
