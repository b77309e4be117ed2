"""The ESME client: a Twisted service binding to an SMSC over SMPP 3.4 (thin adapter).

SMPP v3.4 Issue 1.2: §2.2 binds (one bind_transceiver, or a bind_transmitter and a
bind_receiver on two connections, each reconnecting on its own), §2.3 session states and
§2.4 operations (:mod:`smsc.session`), §4.2 unbind (answered, then the connection closes
and is reopened later), §4.4 submit_sm, §4.6 deliver_sm / §4.7 data_sm (always answered),
§4.11 enquire_link (answered; sent after inbound silence), §5.2.12 esm_class (a delivery
receipt is told from an MO by esm_class alone), §5.1.3 ESME_RX_T_APPN (an MO the
application could not accept now: the SMSC retries).

The protocol logic lives in sans-IO cores: :mod:`smsc.session` (framing, state table),
:mod:`smsc.esme_core` (window, queue, rate, throttling, timeouts, keep-alive, reconnect
backoff), :mod:`smsc.reassembly`, :mod:`smsc.dlr`. This module wires them to a transport:
per connection it feeds the bytes to the session, handles a whole chunk's events, then
sends what the core allows in **one write** and arms **one** ``callLater`` for the earliest
deadline (re-armed lazily: a timer that fires early just re-arms).

Behaviour worth knowing:

* MO: parts of a concatenated message are acknowledged as they arrive; the
  deliver_sm_resp of the part that completes the message is sent only when
  ``on_message``'s Deferred fires (the message is durably accepted); if it fails, that part
  is answered with ESME_RX_T_APPN and the completed message is kept (bounded, until the
  reassembly timeout) so that the SMSC's redelivery of that part completes it again.
* Receipts: matched to the message's token by :class:`~smsc.dlr.ReceiptMatcher`, including
  a receipt that arrives before its submit_sm_resp (then ``on_receipt`` is called when the
  submit_sm_resp comes, possibly before the whole message's Deferred fires). Receipts are
  requested on every part (:mod:`smsc.message`); ``on_receipt`` is called per part.
* Each receipt reaches ``on_receipt`` once: matched (with the token given to ``send``), or
  with token None when its id is empty or its submit_sm_resp has not come within
  ``early_receipt_grace``. A repeated final receipt is acknowledged, not reported again;
  if ``on_receipt`` raises, the receipt is answered ESME_RX_T_APPN and its redelivery is
  reported with the same token.
* SMSC quirks taken in stride: an empty message_id (the part succeeds; its receipt cannot be
  matched and comes with token None), sequence numbers starting at 0, receipt TLVs on an
  ordinary MO, a transceiver bind refused (logged with the advice to configure ``tx+rx``).
* A response timeout or an unanswered enquire_link aborts the connection; in-flight
  requests are resent after the rebind (see :class:`~smsc.esme_core.EsmeCore` for the
  attempt limit). A part the codec cannot encode completes as INVALID.
* Stopping drains: nothing new is sent, queued messages complete as ABORTED, the
  outstanding responses (and MO acknowledgements waiting for ``on_message``) are awaited
  for at most ``drain_timeout`` seconds, then each connection unbinds and closes.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, cast
from typing import Protocol as TypingProtocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IWriteDescriptor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from smsc._io import Clock, DelayedCall, Transport
from smsc.dlr import MsgIdNormalizer, Receipt, ReceiptMatcher, is_receipt, parse_receipt
from smsc.esme_core import (
    ABORTED,
    INVALID,
    Completion,
    EsmeCore,
    KeepAlive,
    Probe,
    ReconnectBackoff,
)
from smsc.message import OutboundMessage, PartResult, ResultCollector, SendResult, build_submits
from smsc.pdu import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    Status,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    status_name,
)
from smsc.reassembly import Message, Reassembler, fragment_from_pdu, plain_message
from smsc.segment import ReferenceAllocator
from smsc.session import (
    ConnectionBroken,
    LocalProtocolError,
    PduReceived,
    ProtocolViolation,
    Role,
    SmppSession,
    State,
)
from stkpay.config import SmscConfig

#: PDUs handled per slice of a received chunk before what they produced is written out.
#: A window of responses arrives as one chunk; answering it slice by slice puts the first
#: new submit_sm on the wire while the rest is still being handled, so the SMSC works in
#: parallel with us instead of waiting for the whole batch (measured at window 64: about
#: +50 % submit_sm/s, and a lower p99; see docs/benchmarks.md).
WRITE_SLICE: Final = 16

__all__ = ["BindError", "Esme"]


class Endpoint(TypingProtocol):
    """The part of ``IStreamClientEndpoint`` used here."""

    def connect(self, protocol_factory: Any) -> Deferred[Any]:
        """Connect, building the protocol with ``protocol_factory``."""
        ...


OnMessage = Callable[[Message], "Deferred[None] | None"]
OnReceipt = Callable[[Receipt, Any], None]
EndpointFactory = Callable[[str], Endpoint]

_BINDS: Final[dict[str, type[BindTransceiver | BindTransmitter | BindReceiver]]] = {
    "trx": BindTransceiver,
    "tx": BindTransmitter,
    "rx": BindReceiver,
}
# config.bind -> the links: "tx" and "rx" alone serve one-way command-line use.
_LINK_KINDS: Final[dict[str, tuple[str, ...]]] = {
    "trx": ("trx",),
    "tx+rx": ("tx", "rx"),
    "tx": ("tx",),
    "rx": ("rx",),
}
_BIND_RESPS: Final = (BindTransceiverResp, BindTransmitterResp, BindReceiverResp)
_SUBMIT_RESPS: Final = (SubmitSmResp, DataSmResp, GenericNack)
_BOUND_STATES: Final = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})
_RETRY_CACHE: Final = 1000  # completed MO kept for the SMSC's redelivery after ESME_RX_T_APPN
_MAX_EARLY: Final = 10_000  # receipts held while awaiting their submit_sm_resp


class BindError(Exception):
    """The ESME could not bind (refused, unreachable) and was told not to retry, or stopped."""


@dataclass(slots=True)
class EsmeStats:
    """Counters of the adapter (monotonic). :attr:`Esme.stats` merges the cores' too."""

    messages: int = 0
    connects: int = 0
    connect_failures: int = 0
    binds: int = 0
    bind_failures: int = 0
    connections_lost: int = 0
    dead_links: int = 0
    response_timeouts: int = 0
    enquire_links_sent: int = 0
    enquire_links_answered: int = 0
    peer_unbinds: int = 0
    protocol_violations: int = 0
    deliver_sm: int = 0
    mo_parts: int = 0
    mo_messages: int = 0
    mo_retried: int = 0
    mo_invalid: int = 0
    mo_expired: int = 0
    receipts: int = 0
    receipts_matched: int = 0
    receipts_unmatched: int = 0
    receipts_duplicate: int = 0
    receipts_failed: int = 0
    encode_errors: int = 0


class _Pending:
    """One message being sent, and the core's token for it when it has a single part.

    ``collector`` gathers the parts' outcomes of a multi-part message (None for one part).
    """

    __slots__ = ("collector", "deferred", "receipt", "token")

    def __init__(
        self,
        collector: ResultCollector | None,
        deferred: Deferred[SendResult],
        token: Any,
        receipt: bool,
    ) -> None:
        self.collector = collector
        self.deferred = deferred
        self.token = token
        self.receipt = receipt


class _Part:
    """The core's token for one submit_sm of a multi-part message."""

    __slots__ = ("index", "pending")

    def __init__(self, pending: _Pending, index: int) -> None:
        self.pending = pending
        self.index = index


_Token = _Pending | _Part
_MoKey = tuple[str, str, int, int, int]  # an MO part: source, destination, ref, total, seqnum


class _Link:
    """One logical bind (``trx``, ``tx`` or ``rx``): its connection and reconnect backoff."""

    __slots__ = ("backoff", "bound", "connecting", "kind", "protocol", "retry_call")

    def __init__(self, kind: str, backoff: ReconnectBackoff) -> None:
        self.kind = kind
        self.backoff = backoff
        self.protocol: _SmppProtocol | None = None
        self.connecting: Deferred[Protocol] | None = None
        self.retry_call: DelayedCall | None = None
        self.bound = False

    @property
    def submits(self) -> bool:
        return self.kind != "rx"


class _LinkFactory(Factory):
    """Builds the protocol of one link's connection."""

    def __init__(self, esme: Esme, link: _Link) -> None:
        self.esme = esme
        self.link = link

    def buildProtocol(self, addr: object) -> Protocol:  # noqa: N802 - Twisted's name
        return _SmppProtocol(self.esme, self.link)


class _SmppProtocol(Protocol):
    """One SMPP connection of the ESME: bytes <-> session <-> cores."""

    _log = Logger()

    def __init__(self, esme: Esme, link: _Link) -> None:
        self.esme = esme
        self.link = link
        self.session = SmppSession(Role.ESME)
        self.core = esme.core if link.submits else None
        self.keepalive: KeepAlive | None = None
        self.bound = False
        self.closing = False
        self.lost = False
        self.in_receive = False
        self.bind_seq = -1
        self.bind_deadline: float | None = None
        self.unbind_deadline: float | None = None
        self._timer: DelayedCall | None = None

    # -- connection events -------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        esme = self.esme
        if esme.stopping:  # the connect completed after stopService
            self.close(abort=False)
            return
        now = esme.clock.seconds()
        cfg = esme.config
        self.keepalive = KeepAlive(cfg.enquire_link_interval, cfg.response_timeout, now)
        bind = _BINDS[self.link.kind](
            system_id=cfg.system_id,
            password=cfg.password.reveal(),
            system_type=cfg.system_type,
            address_range=cfg.address_range,
        )
        self.session.send(bind)
        self.bind_seq = bind.sequence_number
        self.bind_deadline = now + cfg.response_timeout
        self._write()
        self._arm(now)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.is_closing():
            return
        esme = self.esme
        now = esme.clock.seconds()
        keepalive = self.keepalive
        if keepalive is not None:
            keepalive.activity(now)
        core = self.core
        self.in_receive = True
        handled = 0
        try:
            for event in self.session.receive_data(data):
                if type(event) is PduReceived:
                    pdu = event.pdu
                    if core is not None and type(pdu) in _SUBMIT_RESPS and self.bound:
                        completion = core.on_response(pdu, now)
                        if completion is not None:
                            esme._complete(completion, now)
                    else:
                        self._on_pdu(pdu, now)
                elif type(event) is ProtocolViolation:
                    esme.counters.protocol_violations += 1
                    self._log.warn(
                        "SMPP {kind}: peer violated the protocol: {detail}",
                        kind=self.link.kind,
                        detail=event.detail,
                    )
                elif type(event) is ConnectionBroken:
                    self._log.error(
                        "SMPP {kind}: {detail}; closing", kind=self.link.kind, detail=event.detail
                    )
                    self._write()
                    self.close(abort=False)
                    return
                if self.closing:
                    break
                handled += 1
                if handled % WRITE_SLICE == 0:
                    self._push_slice(now)
        finally:
            self.in_receive = False
        if not self.closing:
            self.flush(now)
        else:
            self._write()
        if esme.stopping:
            esme._check_drained()

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802
        self.lost = True
        self.closing = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if reason is None:
            reason = Failure(ConnectionDone())  # type: ignore[no-untyped-call]
        self.esme._connection_lost(self, reason)

    # -- output --------------------------------------------------------------------------

    def is_closing(self) -> bool:
        """True once the connection is being closed (or is gone)."""
        return self.closing

    def _write(self) -> None:
        data = self.session.data_to_send()
        if data and not self.lost and self.transport is not None:
            cast(Transport, self.transport).write(data)

    def _push_slice(self, now: float) -> None:
        """Mid-chunk: queue what the core allows and put it on the wire now.

        Twisted only buffers a write until the reactor's next turn; a transport that is a
        write descriptor (plain TCP) is asked to write at once, so the peer starts on this
        slice while we handle the next. Other transports (TLS) write on the next turn.
        """
        self.flush(now)
        transport = self.transport
        if (
            transport is not None
            and IWriteDescriptor.providedBy(transport)
            and transport.doWrite() is not None  # the socket failed (the reactor's turn would too)
        ):
            self.close(abort=True)

    def flush(self, now: float) -> None:
        """Send what the core allows now, write everything queued, re-arm the timer."""
        core = self.core
        if core is not None and self.bound and not self.closing:
            pdus = core.ready(now)
            if pdus:
                send = self.session.send
                for pdu in pdus:
                    try:
                        send(pdu)
                    except (ValueError, TypeError) as exc:
                        self._encode_error(core, pdu, exc, now)
                    except LocalProtocolError as exc:
                        # The session state forbids it: a link problem, not the message's.
                        self._log.error(
                            "SMPP {kind}: {error}; reconnecting",
                            kind=self.link.kind,
                            error=str(exc),
                        )
                        core.link_closing()
                        self.close(abort=False)
                        break
        self._write()
        self._arm(now)

    def _encode_error(self, core: EsmeCore[_Token], pdu: Pdu, exc: Exception, now: float) -> None:
        """A PDU the codec refused: it completes as INVALID instead of being resent."""
        self.esme.counters.encode_errors += 1
        self._log.error(
            "SMPP {kind}: cannot encode {pdu_type}: {error}",
            kind=self.link.kind,
            pdu_type=type(pdu).__name__,
            error=str(exc),
        )
        completion = core.reject(pdu.sequence_number, INVALID)
        if completion is not None:
            self.esme._complete(completion, now)

    def answer(self, pdu: Pdu) -> None:
        """Send a response now (or with the current batch), unless the connection is gone."""
        if self.lost:
            return
        try:
            self.session.send(pdu)
        except LocalProtocolError as exc:
            self._log.warn(
                "SMPP {kind}: cannot answer: {error}", kind=self.link.kind, error=str(exc)
            )
            return
        if not self.in_receive:
            self._write()

    def close(self, *, abort: bool) -> None:
        """Close the connection (abort: at once, without flushing, for a dead peer)."""
        if self.closing or self.transport is None:
            self.closing = True
            return
        self.closing = True
        transport = cast(Transport, self.transport)
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()

    # -- timers --------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        keepalive = self.keepalive
        deadline = keepalive.next_deadline() if keepalive is not None else None
        extra = self.bind_deadline
        if extra is not None and (deadline is None or extra < deadline):
            deadline = extra
        extra = self.unbind_deadline
        if extra is not None and (deadline is None or extra < deadline):
            deadline = extra
        core = self.core
        if core is not None and self.bound:
            core_deadline = core.next_deadline()
            if core_deadline is not None and (deadline is None or core_deadline < deadline):
                deadline = core_deadline
        return deadline

    def _arm(self, now: float) -> None:
        if self.closing:
            return
        deadline = self._deadline()
        if deadline is None:
            return
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= deadline:
                return  # fires early and re-arms then: cheaper than moving it every batch
            timer.reset(max(0.0, deadline - now))
            return
        self._timer = self.esme.clock.callLater(max(0.0, deadline - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing:
            return
        esme = self.esme
        now = esme.clock.seconds()
        kind = self.link.kind
        if self.bind_deadline is not None and now >= self.bind_deadline:
            esme.counters.bind_failures += 1
            esme.last_bind_error = "no bind response"
            self._log.error(
                "SMPP {kind}: no bind response within {timeout} s",
                kind=kind,
                timeout=esme.config.response_timeout,
            )
            self.close(abort=True)
            return
        if self.unbind_deadline is not None and now >= self.unbind_deadline:
            self._log.warn("SMPP {kind}: no unbind_resp; closing", kind=kind)
            self.close(abort=True)
            return
        keepalive = self.keepalive
        if keepalive is not None:
            probe = keepalive.on_timer(now)
            if probe is Probe.DEAD:
                esme.counters.dead_links += 1
                self._log.error("SMPP {kind}: no answer to enquire_link; reconnecting", kind=kind)
                self.close(abort=True)
                return
            if probe is Probe.SEND:
                esme.counters.enquire_links_sent += 1
                self.answer(EnquireLink())
        core = self.core
        if core is not None and self.bound:
            result = core.on_timer(now)
            for completion in result.completions:
                esme._complete(completion, now)
            if result.drop_link:
                esme.counters.response_timeouts += 1
                self._log.error("SMPP {kind}: response timeout; reconnecting", kind=kind)
                self.close(abort=True)
                return
        self.flush(now)
        if esme.stopping:
            esme._check_drained()

    # -- inbound PDUs ----------------------------------------------------------------------

    def _on_pdu(self, pdu: Pdu, now: float) -> None:
        esme = self.esme
        kind = type(pdu)
        if kind is DeliverSm or kind is DataSm:
            esme._on_deliver(self, pdu, now)  # type: ignore[arg-type]
        elif kind is EnquireLink:
            self.answer(EnquireLinkResp(sequence_number=pdu.sequence_number))
        elif kind is EnquireLinkResp:
            esme.counters.enquire_links_answered += 1
        elif kind in _BIND_RESPS:
            self._on_bind_resp(pdu, now)
        elif kind is Unbind:
            esme.counters.peer_unbinds += 1
            self._log.info("SMPP {kind}: the SMSC unbinds", kind=self.link.kind)
            if self.core is not None:
                self.core.link_closing()
            self.answer(UnbindResp(sequence_number=pdu.sequence_number))
            self._write()
            self.close(abort=False)
        elif kind is UnbindResp:
            self.close(abort=False)
        elif kind is GenericNack:
            if not self.bound and pdu.sequence_number == self.bind_seq:
                self._bind_failed(pdu.command_status)
            else:
                self._log.warn(
                    "SMPP {kind}: generic_nack {status} for sequence {seq}",
                    kind=self.link.kind,
                    status=status_name(pdu.command_status),
                    seq=pdu.sequence_number,
                )
        elif kind is SubmitSmResp or kind is DataSmResp:
            esme.core.stats.late_responses += 1  # on a connection that does not submit
        elif not pdu.is_response and kind is not AlertNotification:
            # A request the session let through but the ESME does not serve (§2.4 lets the
            # SMSC send no other; alert_notification has no response).
            self.answer(
                GenericNack(
                    sequence_number=pdu.sequence_number, command_status=Status.ESME_RINVCMDID
                )
            )

    def _on_bind_resp(self, pdu: Pdu, now: float) -> None:
        self.bind_deadline = None
        if pdu.command_status != Status.ESME_ROK:
            self._bind_failed(pdu.command_status)
            return
        self.bound = True
        self.esme._bound(self, now)

    def _bind_failed(self, status: int) -> None:
        esme = self.esme
        esme.counters.bind_failures += 1
        name = status_name(status)
        esme.last_bind_error = f"{_BINDS[self.link.kind].__name__} refused: {name}"
        if self.link.kind == "trx":
            self._log.error(
                "SMPP trx: the SMSC refused bind_transceiver ({status}); if it does not "
                'support transceiver binds, configure smsc.bind = "tx+rx"',
                status=name,
            )
        else:
            self._log.error(
                "SMPP {kind}: bind refused ({status})", kind=self.link.kind, status=name
            )
        self.bind_deadline = None
        self.close(abort=False)

    def unbind(self, now: float) -> None:
        """Start the graceful end of this connection (the window is already drained)."""
        if self.closing:
            return
        if self.session.state in _BOUND_STATES:
            self.answer(Unbind())
            self._write()
            self.unbind_deadline = now + self.esme.config.response_timeout
            self._arm(now)
        else:
            self.close(abort=False)


class Esme(Service):
    """The ESME client as a Twisted service.

    ``endpoint_factory(kind)`` gives the endpoint for a link (``"trx"``, ``"tx"`` or ``"rx"``);
    by default a :class:`~twisted.internet.endpoints.HostnameEndpoint` to ``config.host``
    and ``config.port`` (then ``reactor`` must also provide IReactorTCP).

    Settings beyond :class:`~stkpay.config.SmscConfig` (keyword arguments):
    ``max_attempts`` (timed-out sends before a part fails with TIMEOUT), ``drain_timeout``
    (default ``response_timeout``), ``bind_stable_after`` (seconds a bind must last to reset
    the reconnect backoff), ``jitter`` (``"decorrelated"`` or ``"full"``),
    ``throttle_backoff_max`` (default 32 x throttle_backoff), ``regrow_after``,
    ``burst`` (see :class:`~smsc.esme_core.EsmeCore`), ``reconnect`` (False: the first
    failed connect/bind or lost connection is final — for one-shot command-line use),
    ``links`` (the binds to make, overriding ``config.bind``: e.g. ``("tx",)`` or
    ``("rx",)`` for one-way command-line use; ``config.bind`` may also be ``"tx"`` or
    ``"rx"``), ``receipt_ttl`` (seconds a submitted id waits for its receipt),
    ``early_receipt_grace`` (seconds a receipt that came before its submit_sm_resp waits
    for it; then it is handed to ``on_receipt`` with token None; default
    ``max(30, 3 x response_timeout)``).
    """

    _log = Logger()

    def __init__(
        self,
        config: SmscConfig,
        *,
        reactor: Clock,
        on_message: OnMessage | None = None,
        on_receipt: OnReceipt | None = None,
        endpoint_factory: EndpointFactory | None = None,
        rng: random.Random | None = None,
        max_attempts: int = 3,
        drain_timeout: float | None = None,
        bind_stable_after: float = 30.0,
        jitter: str = "decorrelated",
        throttle_backoff_max: float | None = None,
        regrow_after: int | None = None,
        burst: float | None = None,
        reconnect: bool = True,
        receipt_ttl: float = 72 * 3600.0,
        early_receipt_grace: float | None = None,
        links: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.clock = reactor
        self.on_message = on_message
        self.on_receipt = on_receipt
        self._endpoint_factory = endpoint_factory or self._default_endpoint
        self._rng = rng if rng is not None else random.Random()
        self.drain_timeout = config.response_timeout if drain_timeout is None else drain_timeout
        self.reconnect = reconnect
        self._throttle_backoff_max = throttle_backoff_max
        self._max_attempts = max_attempts
        self._regrow_after = regrow_after
        self._burst = burst
        self.core: EsmeCore[_Token] = self._new_core()
        kinds = _LINK_KINDS.get(config.bind) if links is None else tuple(links)
        if kinds is None:
            raise ValueError(f"bind must be one of {', '.join(_LINK_KINDS)}")
        if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(_BINDS):
            raise ValueError("links must be distinct kinds among 'trx', 'tx', 'rx'")
        self._links = [
            _Link(
                kind,
                ReconnectBackoff(
                    config.reconnect_min,
                    max(config.reconnect_min, config.reconnect_max),
                    rng=self._rng,
                    jitter=jitter,
                    stable_after=bind_stable_after,
                ),
            )
            for kind in kinds
        ]
        self._submitter = next((link for link in self._links if link.submits), None)
        self.references = ReferenceAllocator(rng=self._rng)
        self.reassembler = Reassembler(
            timeout=config.reassembly_timeout,
            max_per_source=config.reassembly_max_per_source,
            max_total=config.reassembly_max_total,
        )
        self.early_receipt_grace = (
            max(30.0, 3 * config.response_timeout)
            if early_receipt_grace is None
            else early_receipt_grace
        )
        self.matcher: ReceiptMatcher[Any] | None = (
            ReceiptMatcher(
                MsgIdNormalizer(config.msg_id_type),
                ttl=receipt_ttl,
                early_ttl=self.early_receipt_grace,
                max_early=_MAX_EARLY,
            )
            if on_receipt is not None
            else None
        )
        # Receipts parked in the matcher (awaiting their submit_sm_resp), by id as written,
        # oldest first: reported with token None if the resp never comes.
        self._early: OrderedDict[str, tuple[Receipt, float]] = OrderedDict()
        # Receipts whose on_receipt failed (answered ESME_RX_T_APPN), for the redelivery.
        self._receipt_retry: OrderedDict[str, Any] = OrderedDict()
        self.counters = EsmeStats()
        self.last_bind_error: str | None = None
        self.stopping = False
        self._held_mo = 0
        self._retry_cache: OrderedDict[_MoKey, tuple[Message, float]]
        self._retry_cache = OrderedDict()
        self._bound_waiters: list[Deferred[None]] = []
        self._stop_waiters: list[Deferred[None]] = []
        self._stop_pending = False  # between stopService and every connection closed
        self._drain_call: DelayedCall | None = None
        self._unbinding = False
        self._housekeeping: DelayedCall | None = None

    def _new_core(self) -> EsmeCore[_Token]:
        config = self.config
        return EsmeCore(
            window=config.window,
            response_timeout=config.response_timeout,
            throughput=config.throughput,
            throttle_backoff=config.throttle_backoff,
            throttle_backoff_max=self._throttle_backoff_max,
            max_attempts=self._max_attempts,
            regrow_after=self._regrow_after,
            burst=self._burst,
            rng=self._rng,
        )

    # -- public API ------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """True when every link (the transceiver, or both tx and rx) is bound."""
        return all(link.bound for link in self._links)

    def when_bound(self) -> Deferred[None]:
        """Fires when :attr:`bound` (at once if it is); fails with :class:`BindError` when
        the ESME stops first, or on a failed bind if ``reconnect`` is False."""
        if self.bound:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._bound_waiters.append(d)
        return d

    @property
    def stats(self) -> dict[str, int]:
        """All counters: the adapter's, the core's (``core_*``), reassembly and receipts."""
        out = {f.name: getattr(self.counters, f.name) for f in fields(self.counters)}
        out.update({f"core_{k}": v for k, v in self.core.stats.as_dict().items()})
        out["queued"] = self.core.queued
        out["in_flight"] = self.core.in_flight
        out["window"] = self.core.effective_window
        rstats = self.reassembler.stats
        for f in fields(rstats):
            out[f"reassembly_{f.name}"] = getattr(rstats, f.name)
        out["reassembly_pending"] = self.reassembler.pending
        if self.matcher is not None:
            mstats = self.matcher.stats
            for f in fields(mstats):
                out[f"receipts_{f.name}"] = getattr(mstats, f.name)
        return out

    def send(self, msg: OutboundMessage, *, token: Any = None) -> Deferred[SendResult]:
        """Queue ``msg``; the Deferred fires once with the :class:`SendResult` of all parts.

        ``token`` (default: ``msg`` itself) is what ``on_receipt`` is given with each of
        the message's receipts. A message that cannot be encoded fails the Deferred with
        ValueError; after :meth:`stopService` every part is ABORTED.
        """
        submitter = self._submitter
        if submitter is None:
            return fail(ValueError("a receiver bind cannot send messages"))
        try:
            pdus = build_submits(msg, self.config, self.references)
        except ValueError as exc:
            return fail(exc)
        if self.stopping:
            return succeed(SendResult(tuple(PartResult("", ABORTED) for _ in pdus)))
        d: Deferred[SendResult] = Deferred()
        receipt = self.matcher is not None and pdus[0].registered_delivery != 0
        user_token = msg if token is None else token
        core = self.core
        if len(pdus) == 1:
            core.enqueue(pdus[0], _Pending(None, d, user_token, receipt))
        else:
            pending = _Pending(ResultCollector(len(pdus)), d, user_token, receipt)
            for index, pdu in enumerate(pdus):
                core.enqueue(pdu, _Part(pending, index))
        self.counters.messages += 1
        protocol = submitter.protocol
        if (
            protocol is not None
            and protocol.bound
            and not protocol.in_receive
            and core.in_flight < core.effective_window
        ):
            protocol.flush(self.clock.seconds())
        return d

    # -- service ---------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]
        if self.core.draining:  # restarted after a stop: a fresh (empty) queue
            self.core = self._new_core()
        self.stopping = False
        self._unbinding = False
        for link in self._links:
            self._connect(link)
        self._schedule_housekeeping()

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        """Drain the window, unbind every connection, close; fires when all are closed."""
        super().stopService()  # type: ignore[no-untyped-call]
        stopped: Deferred[None] = Deferred()
        self._stop_waiters.append(stopped)
        if self._stop_pending:
            return stopped
        self.stopping = True
        self._stop_pending = True
        if self._housekeeping is not None and self._housekeeping.active():
            self._housekeeping.cancel()
        self._housekeeping = None
        for link in self._links:
            if link.retry_call is not None and link.retry_call.active():
                link.retry_call.cancel()
            link.retry_call = None
            if link.connecting is not None:
                link.connecting.cancel()
        now = self.clock.seconds()
        self._deliver(self.core.drain(), now)
        self._fail_waiters("the ESME stopped before binding")
        if not self._stop_pending:  # everything closed while cancelling
            return stopped
        if any(link.protocol is not None for link in self._links):
            self._drain_call = self.clock.callLater(self.drain_timeout, self._drain_expired)
            self._check_drained()
        else:
            self._finish_stop()
        return stopped

    # -- connections -----------------------------------------------------------------------

    def _default_endpoint(self, kind: str) -> Endpoint:
        del kind
        endpoint: Endpoint = HostnameEndpoint(self.clock, self.config.host, self.config.port)
        return endpoint

    def _connect(self, link: _Link) -> None:
        link.retry_call = None
        if self.stopping:
            return
        self.counters.connects += 1
        try:
            endpoint = self._endpoint_factory(link.kind)
            d = endpoint.connect(_LinkFactory(self, link))
        except Exception:  # a factory bug must not kill the reconnect loop
            self._log.failure("SMPP {kind}: cannot create the endpoint", kind=link.kind)
            self._connect_failed(link, None)
            return
        link.connecting = d

        def connected(protocol: Protocol) -> None:
            link.connecting = None
            assert isinstance(protocol, _SmppProtocol)
            if protocol.lost:  # closed already (e.g. connected during stopService)
                self._maybe_stopped()
                return
            link.protocol = protocol

        def failed(reason: Failure) -> None:
            link.connecting = None
            self._connect_failed(link, reason)

        d.addCallbacks(connected, failed)

    def _connect_failed(self, link: _Link, reason: Failure | None) -> None:
        if self.stopping:
            self._maybe_stopped()
            return
        self.counters.connect_failures += 1
        detail = reason.getErrorMessage() if reason is not None else "endpoint error"
        self.last_bind_error = f"cannot connect: {detail}"
        self._log.warn("SMPP {kind}: cannot connect: {detail}", kind=link.kind, detail=detail)
        self._retry(link)

    def _retry(self, link: _Link) -> None:
        if self.stopping:
            return
        if not self.reconnect:
            self._give_up()
            return
        delay = link.backoff.next_delay()
        self._log.info("SMPP {kind}: reconnecting in {delay:.1f} s", kind=link.kind, delay=delay)
        link.retry_call = self.clock.callLater(delay, self._connect, link)

    def _bound(self, protocol: _SmppProtocol, now: float) -> None:
        link = protocol.link
        link.bound = True
        link.backoff.bound(now)
        self.counters.binds += 1
        self.last_bind_error = None
        self._log.info(
            "SMPP {kind}: bound as {system_id}", kind=link.kind, system_id=self.config.system_id
        )
        if link.submits:
            self.core.bound(now, protocol.session.next_sequence)
        if self.bound:
            waiters, self._bound_waiters = self._bound_waiters, []
            for d in waiters:
                d.callback(None)

    def _connection_lost(self, protocol: _SmppProtocol, reason: Failure) -> None:
        link = protocol.link
        now = self.clock.seconds()
        if link.protocol is protocol or link.protocol is None:
            link.protocol = None
        was_bound = link.bound
        link.bound = False
        link.backoff.lost(now)
        self.counters.connections_lost += 1
        if link.submits and protocol.bound:
            if self.reconnect or self.stopping:
                self._deliver(self.core.connection_lost(now), now)
            else:  # nothing will be resent: in-flight outcomes are unknown
                self._deliver(self.core.abort(), now)
        if was_bound:
            self._log.info(
                "SMPP {kind}: connection closed: {reason}",
                kind=link.kind,
                reason=reason.getErrorMessage(),
            )
        if self.stopping:
            self._check_drained()
            self._maybe_stopped()
            return
        self._retry(link)

    def _give_up(self) -> None:
        """reconnect=False: the first failure ends the ESME's work."""
        now = self.clock.seconds()
        self._deliver(self.core.abort(), now)
        self._fail_waiters(self.last_bind_error or "connection lost")
        for link in self._links:
            if link.protocol is not None:
                link.protocol.close(abort=False)

    def _fail_waiters(self, why: str) -> None:
        waiters, self._bound_waiters = self._bound_waiters, []
        for d in waiters:
            d.errback(BindError(why))

    # -- completions and inbound messages --------------------------------------------------

    def _complete(self, completion: Completion[_Token], now: float) -> None:
        token = completion.token
        if type(token) is _Pending:
            pending = token
            index = -1
        else:
            assert isinstance(token, _Part)
            pending = token.pending
            index = token.index
        message_id = completion.message_id
        status = completion.status
        if status == 0 and pending.receipt and message_id and self.matcher is not None:
            early = self.matcher.submitted(message_id, pending.token, now)
            if early is not None:
                self._early.pop(early.message_id, None)
                self._receipt(early, pending.token)
        if index < 0:
            pending.deferred.callback(SendResult((PartResult(message_id, status),)))
            return
        assert pending.collector is not None
        result = pending.collector.set(index, PartResult(message_id, status))
        if result is not None:
            pending.deferred.callback(result)

    def _deliver(self, completions: list[Completion[_Token]], now: float) -> None:
        for completion in completions:
            self._complete(completion, now)

    def _receipt(self, receipt: Receipt, token: Any) -> bool:
        """Hand a receipt to the application; False if its callback failed."""
        if token is not None:
            self.counters.receipts_matched += 1
        if self.on_receipt is None:
            return True
        try:
            self.on_receipt(receipt, token)
        except Exception:
            self.counters.receipts_failed += 1
            self._log.failure(
                "on_receipt failed for message id {message_id}", message_id=receipt.message_id
            )
            return False
        return True

    def _on_receipt_pdu(self, pdu: DeliverSm | DataSm, now: float) -> int:
        """Match and hand over a receipt; the status to answer it with.

        Each receipt reaches ``on_receipt`` once: matched (with its token), or unmatchable
        (empty id: token None), or after ``early_receipt_grace`` without its submit_sm_resp
        (token None). A repeated final receipt is acknowledged and not reported again,
        unless handing it over failed before (then the redelivery is reported).
        """
        self.counters.receipts += 1
        matcher = self.matcher
        receipt = parse_receipt(pdu)
        if receipt is None or matcher is None:
            return Status.ESME_ROK
        retry = self._receipt_retry
        if receipt.message_id in retry:
            token = retry.pop(receipt.message_id)
        else:
            stats = matcher.stats
            duplicates, unmatchable = stats.duplicates, stats.unmatchable
            token = matcher.receipt(receipt, now)
            if token is None:
                if stats.duplicates != duplicates:
                    self.counters.receipts_duplicate += 1
                    return Status.ESME_ROK
                if stats.unmatchable == unmatchable:  # parked until its submit_sm_resp
                    self._park(receipt, now)
                    return Status.ESME_ROK
        if self._receipt(receipt, token):
            return Status.ESME_ROK
        retry[receipt.message_id] = token
        if len(retry) > _RETRY_CACHE:
            retry.popitem(last=False)
        return Status.ESME_RX_T_APPN

    def _park(self, receipt: Receipt, now: float) -> None:
        early = self._early
        early.pop(receipt.message_id, None)
        early[receipt.message_id] = (receipt, now)
        if len(early) > _MAX_EARLY:
            self._unmatched(early.popitem(last=False)[1][0])

    def _unmatched(self, receipt: Receipt) -> None:
        self.counters.receipts_unmatched += 1
        self._receipt(receipt, None)

    def _on_deliver(self, protocol: _SmppProtocol, pdu: DeliverSm | DataSm, now: float) -> None:
        self.counters.deliver_sm += 1
        resp_cls = DeliverSmResp if type(pdu) is DeliverSm else DataSmResp
        seq = pdu.sequence_number
        if is_receipt(pdu.esm_class):
            status = self._on_receipt_pdu(pdu, now)
            protocol.answer(resp_cls(sequence_number=seq, command_status=status))
            return
        self.counters.mo_parts += 1
        message = plain_message(pdu)
        if message is not None:  # the common MO: one short message, no UDH, no TLVs
            self._mo_complete(protocol, resp_cls, seq, None, message)
            return
        try:
            fragment = fragment_from_pdu(pdu)
        except ValueError as exc:
            self.counters.mo_invalid += 1
            self._log.warn(
                "MO from {source} refused: {error}", source=pdu.source_addr, error=str(exc)
            )
            protocol.answer(resp_cls(sequence_number=seq, command_status=Status.ESME_RX_P_APPN))
            return
        key: _MoKey | None = None
        if fragment.reference is not None:
            key = (
                fragment.source,
                fragment.destination,
                fragment.reference,
                fragment.total,
                fragment.seqnum,
            )
            cached = self._retry_cache.pop(key, None)
            if cached is not None:
                self.counters.mo_retried += 1
                message = cached[0]
        if message is None:
            message = self.reassembler.add(fragment, now)
        if message is None:
            protocol.answer(resp_cls(sequence_number=seq))
            return
        self._mo_complete(protocol, resp_cls, seq, key, message)

    def _mo_complete(
        self,
        protocol: _SmppProtocol,
        resp_cls: type[DeliverSmResp | DataSmResp],
        seq: int,
        key: _MoKey | None,
        message: Message,
    ) -> None:
        """A whole MO: hand it to ``on_message``; answer its last part when that settles."""
        self.counters.mo_messages += 1
        if self.on_message is None:
            protocol.answer(resp_cls(sequence_number=seq))
            return
        self._held_mo += 1
        # What a refusal keeps for the SMSC's redelivery of that part (a concatenated MO).
        retry = None if key is None else (key, message)
        try:
            outcome = self.on_message(message)
        except Exception:
            failure = Failure()  # type: ignore[no-untyped-call]
            self._mo_settled(failure, protocol, resp_cls, seq, retry)
            return
        if isinstance(outcome, Deferred):
            # One bound-method callback with its arguments: no closures per MO.
            outcome.addBoth(self._mo_settled, protocol, resp_cls, seq, retry)
        else:
            self._mo_settled(None, protocol, resp_cls, seq, retry)

    def _mo_settled(
        self,
        outcome: object,
        protocol: _SmppProtocol,
        resp_cls: type[DeliverSmResp | DataSmResp],
        seq: int,
        retry: tuple[_MoKey, Message] | None,
    ) -> None:
        """``on_message`` settled: answer the completing part, with ESME_RX_T_APPN if it
        failed (§5.1.3: the SMSC retries; ``retry`` keeps the message for that)."""
        try:
            if isinstance(outcome, Failure):
                self._log.failure("on_message failed; answering ESME_RX_T_APPN", outcome)
                if retry is not None:
                    cache = self._retry_cache
                    cache[retry[0]] = (retry[1], self.clock.seconds())
                    if len(cache) > _RETRY_CACHE:
                        cache.popitem(last=False)
                protocol.answer(resp_cls(sequence_number=seq, command_status=Status.ESME_RX_T_APPN))
            else:
                protocol.answer(resp_cls(sequence_number=seq))
        except Exception:
            self._log.failure("answering an MO failed")
        finally:
            self._held_mo -= 1
            if self.stopping:
                self._check_drained()

    # -- housekeeping and stopping ---------------------------------------------------------

    def _schedule_housekeeping(self) -> None:
        interval = max(1.0, min(self.config.reassembly_timeout / 4.0, 30.0))
        self._housekeeping = self.clock.callLater(interval, self._housekeep)

    def _housekeep(self) -> None:
        now = self.clock.seconds()
        for expired in self.reassembler.expire(now):
            self.counters.mo_expired += 1
            self._log.warn(
                "MO from {source} to {destination} incomplete: {received} of {total} parts "
                "(reference {reference}) expired",
                source=expired.source,
                destination=expired.destination,
                received=expired.received,
                total=expired.total,
                reference=expired.reference,
            )
        limit = now - self.config.reassembly_timeout
        cache = self._retry_cache
        while cache and next(iter(cache.values()))[1] <= limit:
            cache.popitem(last=False)
        if self.matcher is not None:
            self.matcher.expire(now)
            early = self._early
            limit = now - self.early_receipt_grace
            while early and next(iter(early.values()))[1] <= limit:
                self._unmatched(early.popitem(last=False)[1][0])
        self._schedule_housekeeping()

    def _check_drained(self) -> None:
        if not self._stop_pending or self._unbinding:
            return
        if self.core.in_flight == 0 and self._held_mo == 0:
            self._begin_unbind()

    def _drain_expired(self) -> None:
        self._drain_call = None
        if self._unbinding:
            return
        self._log.warn(
            "SMPP: drain timeout with {count} outstanding; unbinding", count=self.core.in_flight
        )
        self._deliver(self.core.abort(), self.clock.seconds())
        self._begin_unbind()

    def _begin_unbind(self) -> None:
        self._unbinding = True
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        self._drain_call = None
        now = self.clock.seconds()
        for link in self._links:
            if link.protocol is not None:
                link.protocol.unbind(now)
        self._maybe_stopped()

    def _maybe_stopped(self) -> None:
        if not self.stopping:
            return
        if any(link.protocol is not None or link.connecting is not None for link in self._links):
            return
        self._finish_stop()

    def _finish_stop(self) -> None:
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        self._drain_call = None
        self._unbinding = True
        self._deliver(self.core.abort(), self.clock.seconds())
        self._stop_pending = False
        waiters, self._stop_waiters = self._stop_waiters, []
        for d in waiters:
            d.callback(None)
