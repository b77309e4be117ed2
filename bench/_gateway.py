"""What the end-to-end benches share: ``stkpay serve`` as a child process, and the network side.

The gateway runs as production runs it: ``python -m stkpay --config FILE serve`` in its own
process (issue 5, "Running it"; its own interpreter, hence its own core). The bench process
hosts the *network side*: the SMSC simulator (:func:`smsc.simulator.make_service`, on an
ephemeral loopback port, its account unthrottled) and the fleet of virtual phones behind it
(:class:`simcard.fleet.InProcessNetwork`), observed by the bench's timing hooks.

* :class:`Stores` names every store the gateway opens (ledger, PINs on the ledger's database,
  OTA counters, calibration table, losable state, key file, PIN pepper); :func:`prepare`
  fills them before the gateway starts (wallets, cards, deposits, PINs, handset models), in
  bulk: ledger writes through group commit (:meth:`ledger.service.Ledger.submit`), PIN rows
  in one transaction.
* :class:`GatewayProcess` writes the TOML configuration, starts the process, waits for
  ``GET /healthz`` 200, samples its resident size and CPU (``/proc``), stops it with SIGTERM.
* :func:`start_network` starts the simulator with an :class:`ObservedNetwork` behind it: every
  MO a phone hands to the simulator and every MT handed to a phone is reported to the bench.
* :func:`open_loop` and :func:`closed_loop` drive flows (one per phone at a time) and collect
  :class:`Row` figures; :func:`percentile`, :class:`Sampler` and :func:`machine_busy` help print
  them.

Timing figures on a shared 2-core machine are noisy; the benches print the other work seen.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import heapq
import itertools
import math
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from twisted.internet import defer, task

from bench._pg import throwaway_database
from calibration.store import CalibrationStore
from calibration.table import HandsetModel, Provenance
from handlers.pins import Pepper, SqlPinStore, pin_hash
from ledger.service import Ledger
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from simcard.fleet import Fleet, HandsetModelSpec, InProcessNetwork
from simcard.phone import SmsReceived
from smsc.handset import Handset, MailboxDirectory, MtMessage
from stkpay.config import Config, GatewayConfig, SimAccount
from stkpay.serve_process import ServeProcess, gateway_sections, write_config

__all__ = [
    "Done",
    "GatewayProcess",
    "NetworkSide",
    "ObservedNetwork",
    "PrepTimes",
    "Row",
    "Sampler",
    "Stores",
    "Subscriber",
    "closed_loop",
    "freeze_heap",
    "machine_busy",
    "open_loop",
    "own_cpu",
    "percentile",
    "pg_database",
    "prepare",
    "redis_cleanup",
    "sleep",
    "start_network",
]

SHORT_CODE: Final = "10658888"
ID_NUMBER: Final = "11010119900307001X"
#: PIN salt length, as handlers.pins stores it (16 octets).
_SALT_LEN: Final = 16


# -- stores ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stores:
    """Every store ``stkpay serve`` opens, and the PIN pepper (never printed: no repr)."""

    directory: Path
    ledger_url: str
    counter_url: str
    calibration_url: str
    state_url: str
    state_prefix: str
    pepper: bytes = field(repr=False)

    @property
    def key_file(self) -> Path:
        return self.directory / "keys.json"

    @classmethod
    def make(
        cls, directory: Path, *, pg_url: str | None = None, redis_url: str | None = None
    ) -> Stores:
        """The embedded default (SQLite files in ``directory``, in-process state), or the
        ledger, PINs, counters and calibration table on ``pg_url`` and the state on
        ``redis_url``; a fresh key file (AES key set ``ota``) and a random pepper."""
        generate_keyset(FileKeyStore(directory / "keys.json"), "ota", 1, KeyAlgorithm.AES)
        sqlite = f"sqlite:///{directory}"
        return cls(
            directory=directory,
            ledger_url=pg_url or f"{sqlite}/ledger.db",
            counter_url=pg_url or f"{sqlite}/ota.db",
            calibration_url=pg_url or f"{sqlite}/calibration.db",
            state_url=redis_url or "",
            state_prefix=f"stkpay-bench-{uuid.uuid4().hex[:8]}:",
            pepper=secrets.token_bytes(32),
        )

    def describe(self) -> str:
        """``sqlite + memory`` or ``postgresql + redis`` (no URL: they may hold passwords)."""
        ledger = "postgresql" if self.ledger_url.startswith("postgres") else "sqlite"
        return f"{ledger} + {'redis' if self.state_url else 'in-process state'}"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A wallet to open: MSISDN and the ICCID of its card."""

    msisdn: str
    iccid: str


@dataclass
class PrepTimes:
    """Seconds each preparation step took."""

    wallets: float = 0.0
    cards: float = 0.0
    deposits: float = 0.0
    pins: float = 0.0
    models: float = 0.0

    @property
    def total(self) -> float:
        return self.wallets + self.cards + self.deposits + self.pins + self.models

    def describe(self) -> str:
        parts = [
            f"{name} {value:.1f} s"
            for name, value in (
                ("wallets", self.wallets),
                ("cards", self.cards),
                ("deposits", self.deposits),
                ("PINs", self.pins),
                ("models", self.models),
            )
            if value
        ]
        return f"{self.total:.1f} s ({', '.join(parts)})"


def _wait_all(futures: list[Future[Any]], started: float) -> float:
    """Wait for every queued write (group commit batches them); seconds since ``started``."""
    for future in futures:
        future.result()
    return time.perf_counter() - started


def prepare(
    stores: Stores,
    subscribers: Sequence[Subscriber],
    *,
    cash_fen: int = 0,
    pin: str | None = None,
    models: Sequence[HandsetModelSpec] = (),
) -> PrepTimes:
    """Open a wallet and enable the card of each subscriber; deposit ``cash_fen`` from the
    bank when > 0; set ``pin`` when given; put ``models`` in the calibration table (lab
    provenance). Blocking; before the gateway starts."""
    times = PrepTimes()
    ledger = Ledger.connect(stores.ledger_url, group_commit=True, max_batch=512)
    try:
        t = time.perf_counter()
        futures: list[Future[Any]] = [
            ledger.submit(ledger.open_wallet, s.msisdn, ID_NUMBER, request_id=f"open-{s.msisdn}")
            for s in subscribers
        ]
        times.wallets = _wait_all(futures, t)
        t = time.perf_counter()
        futures = [
            ledger.submit(ledger.enable_card, s.msisdn, s.iccid, request_id=f"card-{s.msisdn}")
            for s in subscribers
        ]
        times.cards = _wait_all(futures, t)
        if cash_fen > 0:
            t = time.perf_counter()
            futures = [
                ledger.submit(
                    ledger.deposit, s.msisdn, cash_fen, "bank", request_id=f"fund-{s.msisdn}"
                )
                for s in subscribers
            ]
            times.deposits = _wait_all(futures, t)
    finally:
        ledger.close()
    if pin is not None and subscribers:
        started = time.perf_counter()
        _set_pins(stores, [s.iccid for s in subscribers], pin)
        times.pins = time.perf_counter() - started
    if models:
        started = time.perf_counter()
        store = CalibrationStore.open(stores.calibration_url)
        try:
            store.put_models(
                [HandsetModel(m.tac, m.name, m.a_db, Provenance.LAB) for m in models],
                at=dt.datetime.now(dt.UTC),
            )
        finally:
            store.close()
        times.models = time.perf_counter() - started
    _analyze(stores.ledger_url)
    return times


def _analyze(url: str) -> None:
    """Table statistics for the bulk-loaded database, as autovacuum would gather them within
    a minute or so of the load: without them PostgreSQL's first plans (and the generic plans
    of the prepared statements built on them) scan whole tables."""
    if not url.startswith("postgres"):
        return
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("ANALYZE")


def _set_pins(stores: Stores, iccids: Sequence[str], pin: str) -> None:
    """Every card's PIN row (``wallet_pins``, as :class:`handlers.pins.SqlPinStore` writes
    it: a fresh salt and the keyed hash) in one transaction, then one checked through the
    store's own ``verify``. ``SqlPinStore.set_pin`` commits each row alone (10,000 fsyncs)."""
    pepper = Pepper(stores.pepper)
    probe = SqlPinStore(stores.ledger_url, pepper)  # creates the table
    try:
        rows = []
        for iccid in iccids:
            salt = secrets.token_bytes(_SALT_LEN)
            rows.append((iccid, salt, pin_hash(pepper, salt, pin)))
        insert = "INSERT INTO wallet_pins (iccid, salt, pin_hash, failures) VALUES (?, ?, ?, 0)"
        if stores.ledger_url.startswith("sqlite"):
            path = stores.ledger_url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as conn, conn:
                conn.executemany(insert, rows)
        else:
            import psycopg

            with psycopg.connect(stores.ledger_url) as pg, pg.cursor() as cur:
                cur.executemany(insert.replace("?", "%s"), rows)
        if not probe.verify(iccids[0], pin, count=False).ok:
            raise RuntimeError("the bulk PIN rows do not verify through SqlPinStore")
    finally:
        probe.close()


def pg_database(admin_url: str) -> contextlib.AbstractContextManager[str]:
    """A throwaway database on the server of ``admin_url``; its URL; dropped afterwards."""
    return throwaway_database(admin_url, "stkpay_e2e")


def redis_cleanup(url: str, prefix: str) -> int:
    """Delete the run's keys (``prefix*``) from Redis; how many."""
    import redis

    client: Any = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        client.close()


# -- the gateway process ---------------------------------------------------------------------


class GatewayProcess(ServeProcess):
    """``stkpay serve`` in a child process (:class:`stkpay.serve_process.ServeProcess`),
    configured from :class:`Stores` and pointed at the simulator on ``smpp_port`` (window
    ``window``, ``throughput`` submit_sm/s, no delivery receipts, fast reconnect). The PIN
    pepper goes in ``STKPAY_PIN_PEPPER``."""

    def __init__(
        self,
        stores: Stores,
        *,
        smpp_port: int,
        account: SimAccount,
        window: int = 64,
        throughput: float = 10_000.0,
        grace_period: float = 5.0,
        workers: int = GatewayConfig().workers,
    ) -> None:
        self.stores = stores
        config = write_config(
            stores.directory / "stkpay.toml",
            gateway_sections(
                smpp_port=smpp_port,
                system_id=account.system_id,
                password=account.password.reveal(),
                source_addr=SHORT_CODE,
                ledger_url=stores.ledger_url,
                key_file=stores.key_file,
                counter_url=stores.counter_url,
                calibration_url=stores.calibration_url,
                state_url=stores.state_url,
                state_prefix=stores.state_prefix,
                window=window,
                throughput=throughput,
                grace_period=grace_period,
                workers=workers,
            ),
        )
        super().__init__(config, cwd=stores.directory, pepper=stores.pepper)


#: An MT handed to a fleet phone: (msisdn, the MT, the SMS text it showed or None, instant).
MtHook = Callable[[str, MtMessage, str | None, float], None]
#: An MO a fleet phone handed to the simulator: (msisdn, instant).
MoHook = Callable[[str, float], None]


class ObservedNetwork(InProcessNetwork):
    """The fleet behind the simulator; reports each MT handed to a fleet phone to ``on_mt``
    (msisdn, the MT, the text if it was an SMS the phone received, the instant it was
    handed). MO are reported by :func:`start_network`'s ``send_mo`` wrapper."""

    def __init__(self, fleet: Fleet, *, on_mt: MtHook, **kwargs: Any) -> None:
        super().__init__(fleet, **kwargs)
        self.on_mt = on_mt
        self._observed: dict[str, _Observed] = {}

    def handset(self, msisdn: str) -> Handset | None:
        observed = self._observed.get(msisdn)
        if observed is not None:
            return observed
        inner = super().handset(msisdn)
        if inner is None or msisdn not in self.fleet.phones:
            return inner
        observed = self._observed[msisdn] = _Observed(self, msisdn, inner)
        return observed


class _Observed:
    """A fleet phone's handset that reports an MT to the network's hook (one per phone)."""

    __slots__ = ("_inbox", "_inner", "_msisdn", "_network")

    def __init__(self, network: ObservedNetwork, msisdn: str, inner: Handset) -> None:
        self._network = network
        self._msisdn = msisdn
        self._inner = inner
        self._inbox = network.fleet.phones[msisdn].phone.inbox

    def deliver(self, message: MtMessage) -> bool:
        now = time.perf_counter()
        inbox = self._inbox
        before = inbox[-1] if inbox else None
        ok = self._inner.deliver(message)
        after = inbox[-1] if inbox else None
        text = after.text if isinstance(after, SmsReceived) and after is not before else None
        self._network.on_mt(self._msisdn, message, text, now)
        return ok


@dataclass
class NetworkSide:
    """The running simulator, the network behind it and the account the gateway binds as."""

    service: Any
    network: ObservedNetwork
    smpp_port: int
    account: SimAccount

    async def stop(self) -> None:
        await self.service.stopService()


async def start_network(
    reactor: Any, fleet: Fleet, *, on_mo: MoHook, on_mt: MtHook, seed: int = 16
) -> NetworkSide:
    """The SMSC simulator on an ephemeral loopback port (its API too), one account
    unthrottled (``throughput`` 0), ``fleet`` behind it; every MO a phone hands to the
    simulator is reported to ``on_mo`` (msisdn, instant) first."""
    import random

    from smsc.simulator import make_service

    config = Config()
    account = SimAccount(throughput=0.0)
    sim_cfg = replace(
        config.simulator,
        listen="tcp:0:interface=127.0.0.1",
        api="tcp:0:interface=127.0.0.1",
        accounts=(account,),
        max_mailboxes=1000,
    )
    holder: list[Any] = []

    def send_mo(msisdn: str, *args: Any, **kwargs: Any) -> object:
        on_mo(msisdn, time.perf_counter())
        return holder[0].submit_mo(msisdn, *args, **kwargs)

    network = ObservedNetwork(
        fleet,
        on_mt=on_mt,
        send_mo=send_mo,
        later=lambda f: reactor.callLater(0, f),
        fallback=MailboxDirectory(retention=10),
    )
    service = make_service(sim_cfg, reactor, directory=network, rng=random.Random(seed))
    service.startService()
    smpp_port, _api = await service.when_listening()
    holder.append(service.simulator)
    return NetworkSide(service, network, smpp_port, account)


# -- driving flows ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """A finished flow: ``started`` (the instant its latency counts from), ``ended``, and its
    ``outcome`` (``ok`` or a refusal reason)."""

    started: float
    ended: float
    outcome: str


#: Starts a flow on a phone; fires with :class:`Done` (or is cancelled on timeout).
Starter = Callable[[str], "defer.Deferred[Done]"]


@dataclass
class Row:
    """One printed row: offered rate (None: closed loop), measured window, latencies of the
    flows that ended ``ok`` (from their start, and for paced rows also from the scheduled
    instant), outcomes counted."""

    name: str
    offered: float | None
    window_s: float = 0.0
    injected: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    from_schedule_ms: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    in_window: int = 0
    late: int = 0
    lost: int = 0
    gateway_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    others: float = 0.0
    gateway_rss_kb: int = 0  # after the row (set by the bench)
    cpu_interval_s: float = 0.0  # wall time the CPU figures cover

    @property
    def ok(self) -> int:
        return self.outcomes.get("ok", 0)

    @property
    def rate(self) -> float:
        """Flows ended ``ok`` inside the window, per second."""
        return self.in_window / self.window_s if self.window_s else 0.0

    @property
    def refusals(self) -> dict[str, int]:
        return {k: v for k, v in sorted(self.outcomes.items()) if k != "ok"}

    def per_flow_us(self, seconds: float) -> float:
        """CPU microseconds per flow ended (ok or refused)."""
        ended = sum(self.outcomes.values())
        return seconds / ended * 1e6 if ended else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def sleep(reactor: Any, seconds: float) -> None:
    """Let the reactor run for ``seconds``."""
    await task.deferLater(reactor, max(0.0, seconds), lambda: None)


#: How often flow timeouts are checked (seconds).
_SWEEP_S: Final = 0.1


class _Timeouts:
    """The deadlines of the flows on one reactor: a heap swept every :data:`_SWEEP_S` s that
    cancels each flow still pending past its deadline. A reactor timer per flow cost a
    DelayedCall, its heap entry and its cancellation for every flow, on the bench's CPU."""

    __slots__ = ("_call", "_heap", "_seq", "reactor")

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._heap: list[tuple[float, int, defer.Deferred[Any]]] = []
        self._seq = itertools.count()
        self._call: Any = None

    def add(self, d: defer.Deferred[Any], timeout: float) -> None:
        """Cancel ``d`` if it has not fired ``timeout`` s from now (at most a sweep late)."""
        heapq.heappush(self._heap, (self.reactor.seconds() + timeout, next(self._seq), d))
        if self._call is None:
            self._call = self.reactor.callLater(_SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self._call = None
        heap = self._heap
        now = self.reactor.seconds()
        while heap and heap[0][0] <= now:
            d = heapq.heappop(heap)[2]
            if not d.called:
                d.cancel()
        if heap:
            self._call = self.reactor.callLater(_SWEEP_S, self._sweep)


#: One :class:`_Timeouts` per reactor (by id; each holds its reactor).
_TIMEOUTS: dict[int, _Timeouts] = {}


def _none(_failure: object) -> None:
    return None


def _timed(reactor: Any, d: defer.Deferred[Done], timeout: float) -> defer.Deferred[Done | None]:
    """``d``, or None when it does not fire within ``timeout`` (it is cancelled then)."""
    timeouts = _TIMEOUTS.get(id(reactor))
    if timeouts is None or timeouts.reactor is not reactor:
        timeouts = _TIMEOUTS[id(reactor)] = _Timeouts(reactor)
    timeouts.add(d, timeout)
    return d.addErrback(_none)


async def open_loop(
    reactor: Any,
    start: Starter,
    phones: Callable[[], str | None],
    *,
    name: str,
    rate: float,
    seconds: float,
    drain: float = 10.0,
) -> Row:
    """Paced: flow *i* starts at ``t0 + i / rate`` on the phone ``phones()`` gives; waits up
    to ``drain`` s after the last for the rest. Those never done, and those due when no
    phone was free (``phones()`` None: every phone busy), count as lost, and as an infinite
    latency from their schedule (no coordinated omission)."""
    count = int(rate * seconds)
    row = Row(name, rate, seconds)
    t0 = time.perf_counter() + 0.05
    end = t0 + seconds
    pending: list[tuple[float, defer.Deferred[Done | None]]] = []
    i = 0
    while i < count:
        now = time.perf_counter()
        while i < count and t0 + i / rate <= now:
            due = t0 + i / rate
            i += 1
            msisdn = phones()
            if msisdn is None:
                row.lost += 1
                row.from_schedule_ms.append(math.inf)
                continue
            pending.append((due, _timed(reactor, start(msisdn), seconds + drain)))
        if i < count:
            await sleep(reactor, t0 + i / rate - time.perf_counter())
    row.injected = count
    for due, d in pending:
        done = await d
        if done is None:
            row.lost += 1
            row.from_schedule_ms.append(math.inf)
            continue
        row.outcomes[done.outcome] = row.outcomes.get(done.outcome, 0) + 1
        if done.outcome != "ok":
            continue
        row.latencies_ms.append((done.ended - done.started) * 1000)
        row.from_schedule_ms.append((done.ended - due) * 1000)
        if done.ended <= end:
            row.in_window += 1
        else:
            row.late += 1
    return row


async def closed_loop(
    reactor: Any,
    start: Starter,
    phones: Callable[[], str | None],
    *,
    name: str,
    concurrency: int,
    seconds: float | None = None,
    count: int | None = None,
    timeout: float = 10.0,
) -> Row:
    """``concurrency`` flows outstanding, each end starting the next on ``phones()`` (None:
    no phone left), until ``seconds`` have passed or ``count`` flows started; the window
    ends when the last started flow ends."""
    row = Row(name, None)
    started = [0]
    t0 = time.perf_counter()
    stop_at = t0 + seconds if seconds is not None else math.inf

    async def worker() -> None:
        while time.perf_counter() < stop_at and (count is None or started[0] < count):
            msisdn = phones()
            if msisdn is None:
                return
            started[0] += 1
            done = await _timed(reactor, start(msisdn), timeout)
            if done is None:
                row.lost += 1
                continue
            row.outcomes[done.outcome] = row.outcomes.get(done.outcome, 0) + 1
            if done.outcome == "ok":
                row.latencies_ms.append((done.ended - done.started) * 1000)
                row.in_window += 1

    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(concurrency)])
    row.window_s = time.perf_counter() - t0
    row.injected = started[0]
    return row


# -- resource figures ------------------------------------------------------------------------


def freeze_heap() -> None:
    """Collect, then move every object alive (the fleet: millions of them for 10,000 phones)
    out of the collector's reach (:func:`gc.freeze`), so that a full collection in the middle
    of a row does not stall this process for hundreds of milliseconds."""
    gc.collect()
    gc.freeze()


def own_cpu() -> float:
    """This process's user + system CPU seconds (all threads)."""
    return time.process_time()


def machine_busy() -> tuple[float, float]:
    """Busy and total seconds of the whole machine so far (/proc/stat, all cores)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


class Sampler:
    """CPU of the gateway and of this process and the machine's busy time over an interval;
    the gateway's resident size sampled every ``interval`` s while running."""

    def __init__(self, reactor: Any, gateway: GatewayProcess, interval: float = 1.0) -> None:
        self.gateway = gateway
        self.rss_kb: list[int] = []
        self._loop = task.LoopingCall(self._sample)
        self._loop.clock = reactor
        self._interval = interval
        self._marks: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
        self._wall = 0.0

    def _sample(self) -> None:
        with contextlib.suppress(OSError):
            self.rss_kb.append(self.gateway.rss_kb())

    def start(self) -> None:
        """Start sampling the resident size (one sample now)."""
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def mark(self) -> None:
        """Start a CPU interval."""
        busy, total = machine_busy()
        self._marks = (self.gateway.cpu_seconds(), own_cpu(), busy, total)
        self._wall = time.perf_counter()

    def charge(self, row: Row) -> None:
        """Put the CPU since :meth:`mark` on ``row``: gateway and bench seconds, and the
        share of the machine's capacity other processes used (0-1)."""
        gateway, own, busy, total = self._marks
        busy2, total2 = machine_busy()
        row.gateway_cpu_s = self.gateway.cpu_seconds() - gateway
        row.bench_cpu_s = own_cpu() - own
        row.cpu_interval_s = time.perf_counter() - self._wall
        others = (busy2 - busy) - row.gateway_cpu_s - row.bench_cpu_s
        row.others = max(0.0, others) / max(total2 - total, 1e-9)
