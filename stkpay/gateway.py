"""The SMPP gateway as a Twisted service: ``stkpay serve`` (issue 5, "Running it").

:func:`make_gateway` assembles, from one :class:`~stkpay.config.Config`:

* the ESME (:class:`smsc.esme.Esme`, SMPP 3.4 §2.2 binds to ``[smsc]``), which logs one line
  per bind state change itself (bound, connection closed, cannot connect, reconnecting);
* the wallet application (:class:`handlers.app.WalletApp`) over the configured ledger (SQLite
  by default), the PIN store on the ledger's database (pepper from ``STKPAY_PIN_PEPPER``), the
  losable state store (``[state]``), the key file and the OTA counter store (``[ota]``); with
  ``[ota] mo_history = "durable"`` the cards' MO counters are kept beside it
  (:class:`ota.history.SqlHistory`: replay protection survives a restart and is shared by
  gateway instances), else in process.

MO flow (docs/architecture.md, "State and scale"): the ESME hands a reassembled MO to
:meth:`GatewayService.on_message`, which runs ``WalletApp.on_message`` on one of the
gateway's ``[gateway] workers`` threads, chosen by the sender's MSISDN (a subscriber's MO are
handled one at a time, in arrival order; other subscribers' beside them, their ledger writes
sharing durable commits through the group committer). The workers are plain threads of the
gateway's own (:class:`_Workers`): their results come back to the reactor thread in batches,
one wake-up for all that finished meanwhile. The reactor then carries the effects out:
``SendSms`` as a text MT, ``SendOta`` as SMS-PP data download (TP-PID 0x7F, DCS 0xF6, 3GPP
TS 31.115 §4). The Deferred given back to the ESME fires only once the
app has returned (the MO is durably accepted), so the deliver_sm_resp follows; if the app
raised (database or state store down) it fails and the ESME answers ESME_RX_T_APPN (SMPP 3.4
§5.1.3) so that the SMSC retries, which is safe because every write is keyed.

A periodic sweep (``WalletApp.sweep``) marks unanswered loads in doubt. ``GET /healthz`` on
``[gateway] health`` (loopback) answers 200 ``{"status": "ready", ...}`` only while every bind
is up and the ledger answers a trivial read, else 503 with the reason. Stopping (SIGTERM):
new MO are answered ESME_RX_T_APPN, the MO being handled finish, the replies they produced
drain through the window, then the ESME unbinds; all within ``[gateway] grace_period``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import secrets
import threading
import zlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, cast

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from calibration.service import CalibrationService
from calibration.store import CalibrationStore
from handlers.app import AppConfig, Effect, SendOta, SendSms, WalletApp
from handlers.pins import Pepper, PinStore, open_pin_store
from handlers.state import StateStore, open_state
from ledger.errors import UnknownSubscriber
from ledger.service import Ledger
from ota.counters import open_counter_store
from ota.history import SqlHistory, history_url_for
from ota.keystore import FileKeyStore
from ota.platform import OtaPlatform
from ota.receiver import CounterHistory, MemoryHistory, SecuredMoReceiver
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD
from smsc.esme import Esme
from smsc.message import OutboundMessage, SendResult
from smsc.reassembly import Message
from stk_menus import wallet_mo
from stkpay.config import Config

__all__ = [
    "GatewayError",
    "GatewayService",
    "GatewayStopping",
    "make_gateway",
    "resolve_pepper",
]

#: A valid MSISDN no wallet has: the health check's trivial ledger read.
_PROBE_MSISDN: Final = "8600000000000"
#: Seconds the health check waits for the ledger.
_PROBE_TIMEOUT: Final = 2.0

log = Logger(namespace="stkpay.gateway")


class GatewayError(Exception):
    """The gateway cannot start (no pepper, no key file, bad endpoint); one line, no secret."""


class GatewayStopping(Exception):  # noqa: N818 - a state, not a fault
    """An MO arrived while the gateway stops: refused so that the SMSC retries it later."""


def resolve_pepper(config: Config, *, allow_ephemeral: bool | None = None) -> Pepper:
    """The PIN pepper: ``gateway.pin_pepper`` (``STKPAY_PIN_PEPPER`` already applied by the
    configuration). Without one, a throwaway random pepper when ``allow_ephemeral`` (default:
    ``gateway.ephemeral_pepper``), with a loud warning; else :class:`GatewayError`."""
    text = config.gateway.pin_pepper.reveal()
    if text:
        try:
            return Pepper(bytes.fromhex(text))
        except ValueError:
            raise GatewayError("the PIN pepper must be hex of at least 16 octets") from None
    ephemeral = config.gateway.ephemeral_pepper if allow_ephemeral is None else allow_ephemeral
    if not ephemeral:
        raise GatewayError(
            "no PIN pepper: set STKPAY_PIN_PEPPER (hex, at least 16 octets) or "
            "gateway.pin_pepper; for a throwaway demo set gateway.ephemeral_pepper = true"
        )
    log.warn(
        "WARNING: using an EPHEMERAL PIN pepper (gateway.ephemeral_pepper): PINs set with "
        "another pepper never verify, and these will not after a restart. Development only."
    )
    return Pepper(secrets.token_bytes(32))


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///") :]
    return None if rest in ("", ":memory:") else Path(rest)


def _server(reactor: Any, description: str) -> Any:
    return cast(Any, serverFromString)(reactor, description)


def _site(resource: Resource) -> Any:
    return cast(Any, Site)(resource)


def _log_failure(failure: Failure, what: str) -> None:
    log.failure("{what} failed", failure, what=what)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: Hands a finished call's outcome on, on the reactor thread: (Deferred, ok, result or Failure).
_Then = Callable[[Deferred[Any], bool, Any], None]
#: A worker's job: the call, its one argument, its Deferred, what to do with the outcome.
_Job = tuple[Callable[[Any], Any], Any, Deferred[Any], _Then]


def _fire(d: Deferred[Any], ok: bool, outcome: Any) -> None:
    if ok:
        d.callback(outcome)
    else:
        d.errback(outcome)


class _Workers:
    """The gateway's app threads: plain threads, each running the calls of its own queue one
    at a time in arrival order (so a subscriber's MO, always given to the same thread, are
    handled in order). A finished call's outcome (its result, or a :class:`Failure` with the
    traceback) goes to one list shared by all threads; a thread wakes the reactor
    (``callFromThread``) only when it found that list empty, and the reactor thread takes the
    whole list at once: one wake-up per batch, not per call."""

    def __init__(self, reactor: Any, count: int, name: str) -> None:
        self._reactor = reactor
        self._name = name
        self._queues: list[queue.SimpleQueue[_Job | None]] = [
            queue.SimpleQueue() for _ in range(max(1, count))
        ]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._done: list[tuple[_Then, Deferred[Any], bool, Any]] = []
        #: The Deferreds of the calls given and not yet handed on (what a stop waits for).
        self.busy: set[Deferred[Any]] = set()

    def __repr__(self) -> str:
        return f"_Workers({len(self._queues)}, busy={len(self.busy)})"

    def __len__(self) -> int:
        return len(self._queues)

    def index(self, subscriber: str) -> int:
        """The worker of ``subscriber`` (an MSISDN): always the same one."""
        return zlib.crc32(subscriber.encode()) % len(self._queues)

    def call(self, index: int, fn: Callable[[Any], Any], arg: Any, then: _Then = _fire) -> Any:
        """Run ``fn(arg)`` on worker ``index``, after the calls given to it before; ``then``
        gets the outcome on the reactor thread (default: fire the returned Deferred)."""
        d: Deferred[Any] = Deferred()
        self.busy.add(d)
        self._queues[index].put((fn, arg, d, then))
        return d

    def start(self) -> None:
        """Start the threads (calls given before are run then)."""
        if self._threads:
            return
        for i, jobs in enumerate(self._queues):
            thread = threading.Thread(
                target=self._run, args=(jobs,), name=f"{self._name}-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Each thread finishes the calls given before this, then ends; they are joined (as
        Twisted's ``ThreadPool.stop``)."""
        threads, self._threads = self._threads, []
        if not threads:
            return
        for jobs in self._queues:
            jobs.put(None)
        for thread in threads:
            thread.join()

    def _run(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        get = jobs.get
        lock = self._lock
        wake = self._reactor.callFromThread
        deliver = self._deliver
        while (job := get()) is not None:
            fn, arg, d, then = job
            ok = True
            try:
                outcome = fn(arg)
            except BaseException:  # as Twisted's thread pools: a Failure, the thread lives on
                outcome = Failure()  # type: ignore[no-untyped-call]
                ok = False
            with lock:
                done = self._done
                done.append((then, d, ok, outcome))
                first = len(done) == 1
            if first:
                wake(deliver)
            del job, fn, arg, d, outcome, done  # hold nothing while waiting for the next job

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        busy = self.busy
        for then, d, ok, outcome in done:
            busy.discard(d)
            try:
                then(d, ok, outcome)
            except Exception:
                log.failure("handing a worker's outcome on failed")


class _Health(Resource):
    """``GET /healthz``."""

    isLeaf = True  # noqa: N815 - Twisted's name

    def __init__(self, gateway: GatewayService) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._gateway = gateway

    def render_GET(self, request: Any) -> Any:  # noqa: N802 - Twisted's name
        if request.path != b"/healthz":
            request.setResponseCode(404)
            return b"not found\n"

        def answer(result: tuple[bool, dict[str, Any]]) -> None:
            ready, body = result
            request.setResponseCode(200 if ready else 503)
            request.setHeader(b"content-type", b"application/json")
            request.write(json.dumps(body).encode() + b"\n")
            request.finish()

        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)  # the client went away
        self._gateway.health().addCallback(answer).addErrback(_log_failure, "healthz")
        return NOT_DONE_YET


class GatewayService(MultiService):
    """The running gateway (see the module docstring). Build it with :func:`make_gateway`."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        *,
        app: WalletApp,
        ledger: Ledger,
        pins: PinStore,
        state: StateStore,
        closers: list[Callable[[], object]],
        clock: Callable[[], dt.datetime],
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.reactor = reactor
        self.app = app
        self.ledger = ledger
        self.pins = pins
        self.state = state
        self.clock = clock
        self._closers = closers
        self.stopping = False
        grace = config.gateway.grace_period
        self.esme = Esme(
            config.smsc,
            reactor=reactor,
            on_message=self.on_message,
            drain_timeout=grace / 2,
        )
        self.addService(self.esme)  # type: ignore[no-untyped-call]
        # One thread per worker; a subscriber's MO always go to the same worker, so they are
        # handled in arrival order (a PoR after the top-up it answers) while other
        # subscribers' MO run beside them and their commits are grouped.
        self._workers = _Workers(reactor, config.gateway.workers, "stkpay-gateway-app")
        self._busy = self._workers.busy  # app calls in progress
        self._sends: set[Deferred[SendResult]] = set()  # replies not yet answered by the SMSC
        self._sweep = LoopingCall(self._sweep_once)
        self._sweep.clock = reactor
        self._health_port: Any = None
        self._health_waiters: list[Deferred[int | None]] = []
        self._health_outcome: int | Failure | None = None
        self._health_known = False
        self.mo_accepted = 0
        self.mo_refused = 0

    def __repr__(self) -> str:
        return f"GatewayService(bound={self.esme.bound}, stopping={self.stopping})"

    # -- the MO flow ------------------------------------------------------------------------

    def on_message(self, message: Message) -> Deferred[None]:
        """The ESME's ``on_message``: fires once the app has returned and its effects are
        queued (durably accepted); fails (ESME_RX_T_APPN) while stopping or when it raised."""
        if self.stopping:
            self.mo_refused += 1
            return defer.fail(GatewayStopping("the gateway is stopping; MO not taken"))
        workers = self._workers
        d: Deferred[None] = workers.call(
            workers.index(message.source), self.app.on_message, message, self._carry_out
        )
        return d

    def _carry_out(self, d: Deferred[None], ok: bool, outcome: Any) -> None:
        """On the reactor thread, once the app returned: its effects sent, then ``d`` fired
        (or failed with the app's Failure). Cancelled meanwhile (a stop's grace period
        spent): the ESME answered ESME_RX_T_APPN already, the effects are dropped."""
        if d.called:
            self.mo_refused += 1
            return
        if not ok:
            self.mo_refused += 1
            d.errback(outcome)
            return
        self.mo_accepted += 1
        try:
            for effect in outcome:
                self._send(effect)
        except Exception:
            d.errback()
            return
        d.callback(None)

    def _send(self, effect: Effect) -> None:
        if isinstance(effect, SendSms):
            msg = OutboundMessage(effect.to, text=effect.text)
            what = "SMS"
        else:
            assert isinstance(effect, SendOta)
            msg = OutboundMessage(
                effect.msisdn,
                user_data=effect.outgoing.user_data,
                protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
                data_coding=DCS_CLASS2_8BIT,
            )
            what = "OTA"
        d = self.esme.send(msg)
        self._sends.add(d)
        d.addBoth(self._sent, d, what, msg.destination)

    def _sent(
        self, result: SendResult | Failure, d: Deferred[SendResult], what: str, to: str
    ) -> None:
        self._sends.discard(d)
        if isinstance(result, Failure):
            log.warn(
                "{what} to {to} not sent: {error}",
                what=what,
                to=to,
                error=result.getErrorMessage(),
            )
        elif not result.ok:
            log.warn(
                "{what} to {to} not accepted by the SMSC: status 0x{status:08X}",
                what=what,
                to=to,
                status=result.status,
            )

    def _sweep_once(self) -> Deferred[None]:
        def marked(ids: list[str]) -> None:
            if ids:
                log.info("sweep: {count} load(s) marked in doubt", count=len(ids))

        def failed(reason: Failure) -> None:
            log.warn("sweep failed: {error}", error=reason.getErrorMessage())

        d: Deferred[list[str]] = self._workers.call(0, self.app.sweep, self.clock())
        return d.addCallbacks(marked, failed)

    # -- health -----------------------------------------------------------------------------

    def health(self) -> Deferred[tuple[bool, dict[str, Any]]]:
        """(ready, body): ready only when every bind is up and the ledger answers."""
        reasons: list[str] = []
        if self.stopping:
            reasons.append("stopping")
        bound = self.esme.bound
        if not bound:
            why = self.esme.last_bind_error
            reasons.append("SMSC not bound" + (f" ({why})" if why else ""))

        def probe() -> None:
            with contextlib.suppress(UnknownSubscriber):
                self.ledger.wallet(_PROBE_MSISDN)

        d: Deferred[None] = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), probe)
        d.addTimeout(_PROBE_TIMEOUT, self.reactor)

        def body(ledger_ok: bool, error: str = "") -> tuple[bool, dict[str, Any]]:
            if not ledger_ok:
                reasons.append(f"ledger unreachable: {error}")
            ready = not reasons
            out: dict[str, Any] = {
                "status": "ready" if ready else "unavailable",
                "bound": bound,
                "ledger": "ok" if ledger_ok else "unreachable",
                "mo_accepted": self.mo_accepted,
                "mo_refused": self.mo_refused,
                "mo_in_progress": len(self._busy),
                "mt_unanswered": len(self._sends),
                "mt_queued": self.esme.core.queued,
            }
            if reasons:
                out["reason"] = "; ".join(reasons)
            return ready, out

        def ledger_failed(reason: Failure) -> tuple[bool, dict[str, Any]]:
            error = " ".join(reason.getErrorMessage().split())[:200] or type(reason.value).__name__
            return body(False, error)

        return d.addCallbacks(lambda _: body(True), ledger_failed)

    def when_health_listening(self) -> Deferred[int | None]:
        """Fires with the health port (None when off) once listening, or fails."""
        d: Deferred[int | None] = Deferred()
        if not self._health_known:
            self._health_waiters.append(d)
        elif isinstance(self._health_outcome, Failure):
            d.errback(self._health_outcome)
        else:
            d.callback(self._health_outcome)
        return d

    def _health_settled(self, outcome: int | Failure | None) -> None:
        self._health_known = True
        self._health_outcome = outcome
        waiters, self._health_waiters = self._health_waiters, []
        for d in waiters:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

    def _listen_health(self) -> None:
        description = self.config.gateway.health
        if description.lower() in ("", "none"):
            self._health_settled(None)
            return
        endpoint = _server(self.reactor, description)
        d = endpoint.listen(_site(_Health(self)))

        def listening(port: Any) -> None:
            self._health_port = port
            number = int(port.getHost().port)
            log.info("healthz listening on port {port}", port=number)
            self._health_settled(number)

        def failed(reason: Failure) -> None:
            log.error("healthz cannot listen: {error}", error=reason.getErrorMessage())
            self._health_settled(reason)

        d.addCallbacks(listening, failed)

    # -- service ----------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        self.stopping = False
        self._workers.start()
        super().startService()  # type: ignore[no-untyped-call]
        self._listen_health()
        self._sweep.start(self.config.gateway.sweep_interval, now=False).addErrback(
            _log_failure, "sweep loop"
        )

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        """Refuse new MO, finish the MO in hand, drain their replies, unbind, close; all
        bounded by ``grace_period`` (what is still pending then is left to the SMSC's retry
        and to the next contact of the card)."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self.stopping = True
        grace = self.config.gateway.grace_period
        start = self.reactor.seconds()
        if self._sweep.running:
            self._sweep.stop()
        log.info("stopping: no new MO; draining")
        # 1. MO in hand finish (their replies are queued), and those replies are answered.
        await self._settle(list(self._busy), grace / 2)
        await self._settle(
            list(self._sends), max(0.0, grace / 2 - (self.reactor.seconds() - start))
        )
        # 2. The ESME drains what is left of its window and unbinds (bounded by drain_timeout).
        remaining = max(0.1, grace - (self.reactor.seconds() - start))
        await self._settle([defer.maybeDeferred(super().stopService)], remaining)
        if self._health_port is not None:
            port, self._health_port = self._health_port, None
            await self._settle([defer.maybeDeferred(port.stopListening)], 1.0)
        self._workers.stop()
        for close in self._closers:
            try:
                close()
            except Exception as exc:  # closing a broken connection
                log.warn("close: {error}", error=type(exc).__name__)
        log.info("stopped")

    async def _settle(self, waits: list[Deferred[Any]], timeout: float) -> None:
        if not waits:
            return
        done: Deferred[Any] = defer.DeferredList(waits, consumeErrors=True)
        done.addTimeout(max(timeout, 0.0), self.reactor)
        try:
            await done
        except defer.TimeoutError:
            log.warn("stopping: grace period spent with work outstanding")


def make_gateway(
    config: Config,
    reactor: Any,
    *,
    clock: Callable[[], dt.datetime] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> GatewayService:
    """Open every store ``config`` names and build the gateway service (not started).

    Raises :class:`GatewayError` (one line) for a missing pepper, a missing key file, a bad
    health endpoint or a store that cannot be opened."""
    environ = os.environ if env is None else env
    from stkpay.cli import CliError  # noqa: PLC0415 - cli imports the command modules
    from stkpay.cmd_calibration import (  # noqa: PLC0415
        DEFAULT_URL as CALIBRATION_DEFAULT_URL,
    )
    from stkpay.cmd_calibration import (  # noqa: PLC0415
        URL_ENV as CALIBRATION_URL_ENV,
    )
    from stkpay.cmd_ledger import redact, resolve_url  # noqa: PLC0415

    now = clock if clock is not None else _utc_now
    gw = config.gateway
    pepper = resolve_pepper(config)
    key_path = Path(environ.get("STKPAY_KEY_FILE") or config.ota.key_file)
    if cwd is not None and not key_path.is_absolute():
        key_path = cwd / key_path
    if not key_path.is_file():
        raise GatewayError(
            f"key file {key_path} not found (ota.key_file / STKPAY_KEY_FILE; create it with "
            "`stkpay keys generate`)"
        )
    if gw.health.lower() not in ("", "none"):
        try:
            _server(reactor, gw.health)
        except (ValueError, TypeError, KeyError) as exc:
            raise GatewayError(f"gateway.health: bad endpoint {gw.health!r}: {exc}") from None
    try:
        ledger_url = resolve_url(config.ledger.url, cwd)
        counter_url = resolve_url(config.ota.counter_url, cwd)
        cal_url = resolve_url(
            environ.get(CALIBRATION_URL_ENV) or config.calibration.url or CALIBRATION_DEFAULT_URL,
            cwd,
        )
    except CliError as exc:
        raise GatewayError(str(exc)) from None
    closers: list[Callable[[], object]] = []
    try:
        keystore = FileKeyStore(key_path)
        # Several workers: their concurrent writes share durable commits (group commit).
        ledger = Ledger.connect(ledger_url, clock=now, group_commit=gw.workers > 1)
        closers.append(ledger.close)
        pins = open_pin_store(ledger_url, pepper)
        closers.append(pins.close)
        state = (
            open_state(config.state.url, prefix=config.state.prefix)
            if config.state.url not in ("", "memory:")
            else open_state(None)
        )
        closers.append(state.close)
        counters = open_counter_store(counter_url)
        closers.append(counters.close)
        # Cards' MO counters (replay protection). "durable": beside the counter store, so it
        # survives a restart and is shared by instances; "memory": per process.
        history: CounterHistory
        if config.ota.mo_history == "durable":
            durable = SqlHistory(history_url_for(counter_url))
            closers.append(durable.close)
            history = durable
        else:
            history = MemoryHistory()
        calibration_store = CalibrationStore.open(cal_url)
        closers.append(calibration_store.close)
    except GatewayError:
        raise
    except Exception as exc:
        for close in reversed(closers):
            try:
                close()
            except Exception:  # noqa: S112 - already failing
                continue
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise GatewayError(
            f"cannot open the stores (ledger {redact(ledger_url)}): {detail}"
        ) from None
    platform = OtaPlatform(keystore, counters, clock=lambda: now().timestamp())
    receiver = SecuredMoReceiver(keystore, history, tars=[wallet_mo.PLATFORM_TAR])
    cal = config.calibration
    calibration = CalibrationService(
        calibration_store,
        ota=platform,
        clock=now,
        rf_model=cal.rf_model(),
        learn_count=cal.learn_count,
        learn_tolerance_db=Decimal(str(cal.learn_tolerance_db)),
    )
    app = WalletApp(
        ledger=ledger,
        receiver=receiver,
        platform=platform,
        keystore=keystore,
        pins=pins,
        state=state,
        clock=now,
        config=AppConfig(in_doubt_after=gw.in_doubt_after),
        calibration=calibration,
    )
    return GatewayService(
        config,
        reactor,
        app=app,
        ledger=ledger,
        pins=pins,
        state=state,
        closers=list(reversed(closers)),
        clock=now,
    )
