"""SMSC simulator: an SMPP 3.4 server that ESMEs (ours, smpplib's, Kannel) bind to.

SMPP v3.4 Issue 1.2 clauses implemented here (framing and the §2.3 session state table are
:mod:`smsc.session`'s):

* §4.1 bind_transmitter / bind_receiver / bind_transceiver, authenticated against accounts
  (system_id + password): ESME_RINVSYSID / ESME_RINVPASWD on failure; the *_resp carries the
  SMSC's system_id and the sc_interface_version TLV (§5.3.2.25).
* §4.2 unbind in both directions (the SMSC's own unbind is a fault to inject), §4.11
  enquire_link, §4.3 generic_nack (queued by the session).
* §4.4 submit_sm, §4.7 data_sm, §4.5 submit_multi: a message id per message (a monotonic
  counter, written in decimal or hex to exercise ESMEs' id normalisation), MT routed by
  destination to a handset (:mod:`smsc.handset`), long messages reassembled first (UDH
  concatenation, TS 23.040 §9.2.3.24.1/.8; sar_* TLVs §5.3.2.22-24; message_payload
  §5.3.2.32).
* §4.8 query_sm (state of a recent message id), §4.9 cancel_sm and §4.10 replace_sm
  (always ESME_RCANCELFAIL / ESME_RREPLACEFAIL: messages are delivered at once).
* §5.2.17 registered_delivery bits 0-1 (1: receipt always, 2: on failure, 3: on success as in
  SMPP 5.0) -> a delivery receipt deliver_sm (§4.6.1, esm_class 0x04, Appendix B text and
  the receipted_message_id/message_state TLVs, :func:`smsc.dlr.receipt_pdu`) to a receiver
  or transceiver bind of the same system_id, after ``receipt_delay``.
* MO (§4.6.1 deliver_sm to the ESME): split like an SMSC does (UDH 8-bit concatenation,
  optional caller IEs such as TS 31.115 §4 0x70/0x71 in every part), routed to the account
  whose short code is the longest prefix of the destination, round-robin over its binds.
  A deliver_sm_resp other than ESME_ROK (ESME_RX_T_APPN and the like) is redelivered later
  with exponential backoff, at most ``max_delivery_attempts`` times; ESME_RX_P_APPN and
  ESME_RX_R_APPN are final. MO and receipts wait in a bounded per-account queue while no
  receiver is bound.
* Fault injection for integration tests (:class:`Faults`, changeable at run time):
  per-bind throughput limit answered with ESME_RTHROTTLED (token bucket), response delay,
  error status at a rate, dropping the connection at the Nth PDU, answering out of order,
  an SMSC-initiated unbind after N PDUs, and a stall (a hung SMSC: PDUs read and never
  answered, nothing sent; the ESME's §4.11 enquire_link goes unanswered too).

The core (:class:`Simulator`, :class:`Connection`) opens no socket: it is driven by bytes
and a transport (``write``/``loseConnection``), and reads time from an injected clock
(``seconds``/``callLater``: a reactor or ``twisted.internet.task.Clock``). The Twisted glue
is :class:`SmppServerProtocol` (one per TCP connection: feeds bytes to the core, which writes
each connection's output once per received chunk) and :func:`make_service` (listeners from
endpoint strings plus the HTTP control API of :mod:`smsc.sim_api`).

Everything that grows with traffic is bounded: mailboxes (:class:`~smsc.handset.
MailboxDirectory`), partial MT reassembly, the per-account queues, the message-state ring
for query_sm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import heapq
import hmac
import itertools
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, NamedTuple, TypeVar, cast

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from smsc._io import Clock, DelayedCall, Transport
from smsc.dlr import receipt_pdu
from smsc.handset import HandsetDirectory, MailboxDirectory, MtMessage, MtPart
from smsc.pdu import (
    ESM_UDHI,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageState,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    Status,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
    response_class,
    status_name,
)
from smsc.reassembly import Fragment, Message, Reassembler, fragment_from_pdu
from smsc.segment import LongMode, ReferenceAllocator, Segment, segment_binary, segment_text
from smsc.session import (
    ConnectionBroken,
    LocalProtocolError,
    PduReceived,
    ProtocolViolation,
    Role,
    SmppSession,
    State,
)
from smsc.text import Encoding, choose_encoding, decode_text, encoding_of
from smsc.udh import InformationElement, split_udh

__all__ = [
    "MESSAGE_ID_FORMATS",
    "TAG_DELIVER_REPORT_OF",
    "BindStats",
    "BindType",
    "Clock",
    "Connection",
    "Faults",
    "MoResult",
    "Simulator",
    "SimulatorService",
    "SmppServerFactory",
    "SmppServerProtocol",
    "Transport",
    "loopback_default",
    "make_service",
    "parse_status",
]

_T = TypeVar("_T")

#: twisted.internet.endpoints.serverFromString, which Twisted leaves unannotated.
server_from_string: Callable[..., Any] = endpoints.serverFromString

MESSAGE_ID_FORMATS: Final = ("dec", "hex", "hex-upper")

#: Simulator extension (a vendor-specific TLV, SMPP 3.4 §5.3.2: 0x1400-0x3FFF): on an MO that
#: carries a handset's SMS-DELIVER-REPORT user data (a card's PoR when the SPI asks for it by
#: deliver report, 3GPP TS 31.115 §4.4), the message id of the MT it answers, C-Octet String.
#: A real SMSC gives an ESME no deliver-report user data (SMPP 3.4 has no field for it).
TAG_DELIVER_REPORT_OF: Final = 0x1401

#: sc_interface_version (§5.3.2.25) sent in every successful bind_*_resp: SMPP 3.4.
_INTERFACE_VERSION: Final = b"\x34"

#: deliver_sm_resp statuses after which a message is not redelivered (§5.1.3).
_PERMANENT: Final = frozenset({Status.ESME_RX_P_APPN, Status.ESME_RX_R_APPN})

#: GSM 04.11/TS 24.011 cause written as err / network_error_code of a failed receipt:
#: 1 "unassigned (unallocated) number", the usual reason a handset is unreachable.
_UNDELIVERABLE_ERR: Final = 1


class _TimerQueue(Generic[_T]):
    """Items due at given times, with one pending ``callLater`` for the earliest of them."""

    __slots__ = ("_call", "_clock", "_counter", "_due", "_fire", "_heap")

    def __init__(self, clock: Clock, fire: Callable[[list[_T]], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._heap: list[tuple[float, int, _T]] = []
        self._counter = itertools.count()
        self._call: DelayedCall | None = None
        self._due = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, item: _T) -> None:
        """Fire ``item`` at ``due`` (clock seconds)."""
        heapq.heappush(self._heap, (due, next(self._counter), item))
        if self._call is None or due < self._due:
            self._arm()

    def cancel(self) -> list[_T]:
        """Stop: nothing more fires; returns the items that were waiting."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        items = [entry[2] for entry in sorted(self._heap)]
        self._heap.clear()
        return items

    def _arm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._due = due = self._heap[0][0]
        self._call = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._run)

    def _run(self) -> None:
        self._call = None
        now = self._clock.seconds()
        heap = self._heap
        items: list[_T] = []
        while heap and heap[0][0] <= now:
            items.append(heapq.heappop(heap)[2])
        if heap:
            self._arm()
        if items:
            self._fire(items)


# -- settings --------------------------------------------------------------------------


def parse_status(value: object) -> int:
    """A command_status from a name (``ESME_RTHROTTLED`` or ``RTHROTTLED``, any case), a hex
    string (``0x58``), a decimal string or an int. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("a status is a name or a number, not a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        upper = text.upper()
        for name in (upper, "ESME_" + upper):
            if name in Status.__members__:
                return int(Status[name])
        try:
            number = int(text, 16) if upper.startswith("0X") else int(text, 10)
        except ValueError:
            raise ValueError(f"unknown command_status {text[:40]!r}") from None
    else:
        raise ValueError("a status is a name or a number")
    if not 0 < number <= 0xFFFFFFFF:
        raise ValueError("an error status must be 1..0xFFFFFFFF")
    return number


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults injected into every bind; :meth:`Simulator.set_faults` changes them at run time.

    * ``throttle``: submit_sm/data_sm/submit_multi per second per bind (token bucket with
      ``throttle_burst`` seconds of tokens); over it -> ESME_RTHROTTLED. 0: use the
      account's ``throughput`` (0 there too: no limit).
    * ``response_delay``: seconds before a submit_sm/data_sm/submit_multi response is sent.
    * ``error_rate`` of those requests answered with ``error_status`` (not delivered).
    * ``drop_after``: close the connection when its Nth PDU (counting every PDU received on
      it, the bind included) arrives; that PDU and the rest of its chunk are not answered.
    * ``out_of_order``: hold responses and release them in shuffled batches.
    * ``unbind_after``: the SMSC sends unbind after answering the Nth PDU of a connection;
      requests after that are refused with ESME_RINVBNDSTS, and the connection closes on the
      ESME's unbind_resp (or after ``unbind_timeout``).
    * ``stall``: every connection hangs while set: its PDUs are read and ignored (no
      response to anything, enquire_link included) and nothing is written to it (responses
      still waiting on a delay, deliver_sm). Clearing it makes them answer again (what came
      in meanwhile stays unanswered).
    * ``stall_after``: the same for one connection from its Nth PDU on (the answers to the
      PDUs before it in the same chunk are still written); a new connection is healthy
      until its own Nth PDU.
    """

    throttle: float = 0.0
    response_delay: float = 0.0
    error_rate: float = 0.0
    error_status: int = int(Status.ESME_RSYSERR)
    drop_after: int = 0
    out_of_order: bool = False
    unbind_after: int = 0
    stall: bool = False
    stall_after: int = 0

    def __post_init__(self) -> None:
        for name in ("throttle", "response_delay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if not 0 < self.error_status <= 0xFFFFFFFF:
            raise ValueError("error_status must be a non-zero command_status")
        for name in ("drop_after", "unbind_after", "stall_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, the status by name."""
        return {
            "throttle": self.throttle,
            "response_delay": self.response_delay,
            "error_rate": self.error_rate,
            "error_status": status_name(self.error_status),
            "drop_after": self.drop_after,
            "out_of_order": self.out_of_order,
            "unbind_after": self.unbind_after,
            "stall": self.stall,
            "stall_after": self.stall_after,
        }

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with ``changes`` (JSON-like values) applied; ValueError naming a bad key."""
        kwargs: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "error_status":
                kwargs[key] = parse_status(value)
            elif key in ("throttle", "response_delay", "error_rate"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key} must be a number")
                kwargs[key] = float(value)
            elif key in ("drop_after", "unbind_after", "stall_after"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{key} must be an integer")
                kwargs[key] = value
            elif key in ("out_of_order", "stall"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                kwargs[key] = value
            else:
                raise ValueError(f"unknown fault {key[:40]!r}")
        return dataclasses.replace(self, **kwargs)


class BindType(enum.StrEnum):
    """§4.1 bind types."""

    TRANSMITTER = "transmitter"
    RECEIVER = "receiver"
    TRANSCEIVER = "transceiver"

    @property
    def receives(self) -> bool:
        """True when the SMSC may send deliver_sm on this bind (§2.3)."""
        return self is not BindType.TRANSMITTER


_BINDS: Final[dict[type[Pdu], tuple[type[Pdu], BindType]]] = {
    BindTransmitter: (BindTransmitterResp, BindType.TRANSMITTER),
    BindReceiver: (BindReceiverResp, BindType.RECEIVER),
    BindTransceiver: (BindTransceiverResp, BindType.TRANSCEIVER),
}

_BOUND_STATES: Final = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})


@dataclass(slots=True)
class BindStats:
    """Counters of one connection (monotonic)."""

    pdus: int = 0  # PDUs received
    submit_sm: int = 0
    data_sm: int = 0
    submit_multi: int = 0
    query_sm: int = 0
    cancel_sm: int = 0
    replace_sm: int = 0
    enquire_link: int = 0
    throttled: int = 0  # requests answered ESME_RTHROTTLED
    errors: int = 0  # requests answered with another error status (injected or invalid)
    protocol_errors: int = 0  # PDUs the session refused (state, framing)
    deliver_sm: int = 0  # deliver_sm sent (MO and receipts, redeliveries included)
    receipts: int = 0  # of which receipts
    mo: int = 0  # of which MO
    deliver_sm_ok: int = 0  # deliver_sm_resp ESME_ROK
    deliver_sm_failed: int = 0  # deliver_sm_resp/generic_nack with an error, or no answer
    unexpected: int = 0  # responses matching nothing outstanding
    stalled: int = 0  # PDUs read and ignored by the stall fault

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class MoResult(NamedTuple):
    """The outcome of injecting an MO: its id, the account it was routed to (None when no
    account serves the destination), whether it waits for a receiver bind, and how many
    deliver_sm parts it was split into."""

    message_id: str
    system_id: str | None
    queued: bool
    parts: int


class _Account:
    """An ESME account, its receiver binds and its queue of deliveries waiting for them."""

    __slots__ = (
        "dropped",
        "last_conn",
        "last_group",
        "password",
        "queue",
        "receivers",
        "rr",
        "short_codes",
        "system_id",
        "throughput",
    )

    def __init__(
        self, system_id: str, password: str, short_codes: Sequence[str], throughput: float
    ) -> None:
        self.system_id = system_id
        self.password = password.encode("latin-1", "replace")
        self.short_codes = tuple(short_codes)
        self.throughput = throughput
        self.queue: deque[_Delivery] = deque()
        self.receivers: list[Connection] = []
        self.rr = -1
        self.last_group: str | None = None
        self.last_conn: Connection | None = None
        self.dropped = 0

    def __repr__(self) -> str:
        return f"_Account({self.system_id!r})"


class _Delivery:
    """A deliver_sm (MO part or receipt) on its way to an account's receiver bind."""

    __slots__ = ("account", "attempts", "conn", "group", "pdu", "receipt", "sent_at")

    def __init__(
        self, account: _Account, pdu: DeliverSm, *, receipt: bool, group: str | None = None
    ) -> None:
        self.account = account
        self.pdu = pdu
        self.receipt = receipt
        self.group = group  # the parts of one MO share it (kept on one bind)
        self.attempts = 0
        self.conn: Connection | None = None
        self.sent_at = 0.0


@dataclass(slots=True)
class _Counters:
    """Simulator-wide counters (monotonic)."""

    binds: int = 0  # successful binds
    bind_failures: int = 0
    mt_parts: int = 0  # MT parts accepted (each destination of a submit_multi counts)
    mt_messages: int = 0  # whole messages handed to handsets (delivered or not)
    mt_delivered: int = 0  # parts whose outcome is DELIVERED
    mt_undeliverable: int = 0  # parts whose outcome is UNDELIVERABLE
    mt_expired: int = 0  # incomplete long MT given up
    mo_messages: int = 0  # MO injected and routed
    mo_unrouted: int = 0  # MO for a destination no account serves
    receipts_made: int = 0  # receipts generated
    redeliveries: int = 0  # deliver_sm scheduled again after a failure
    delivery_failed: int = 0  # given up after max attempts
    delivery_rejected: int = 0  # ESME_RX_P_APPN / ESME_RX_R_APPN
    queue_dropped: int = 0  # deliveries dropped from a full account queue

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _smpp_date(when: float) -> str:
    """Appendix B date 'YYMMDDhhmm' (UTC)."""
    return _minute_date(int(when // 60))


@functools.lru_cache(maxsize=8)
def _minute_date(minute: int) -> str:
    """'YYMMDDhhmm' of a minute since the epoch: formatted once per minute, not per receipt
    (two strftime per receipt were a seventh of the simulator's time with receipts)."""
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%y%m%d%H%M")


def _smpp_time(when: float) -> str:
    """§7.1.1 absolute time 'YYMMDDhhmmsstnnp' in UTC."""
    stamp = datetime.fromtimestamp(when, UTC)
    return stamp.strftime("%y%m%d%H%M%S") + f"{stamp.microsecond // 100_000}00+"


def _peer_text(peer: object) -> str:
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    return str(peer)


def _parse_ies(udh: str | bytes) -> tuple[InformationElement, ...]:
    """Information elements from their hex (or raw) encoding, without the UDHL octet."""
    raw = bytes.fromhex(udh) if isinstance(udh, str) else bytes(udh)
    if len(raw) > 0xFF:
        raise ValueError("udh longer than 255 octets")
    ies, rest = split_udh(bytes((len(raw),)) + raw)
    assert not rest
    return ies


def _sample_text(pdu: SubmitSm | DataSm | SubmitMulti, encoding: Encoding) -> str:
    """The first characters of a message, for the receipt's ``text:`` field."""
    data = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD)
    if data is None:
        data = b"" if isinstance(pdu, DataSm) else pdu.short_message
    if pdu.esm_class & ESM_UDHI and data:
        data = data[1 + data[0] :]
    enc = encoding_of(pdu.data_coding, default=encoding)
    if enc is Encoding.BINARY:
        return ""
    return decode_text(data[:40], enc)[:20]


def _as_submit_sm(pdu: SubmitMulti, destination: tuple[int, int, int, str]) -> SubmitSm:
    """One destination of a submit_multi as the submit_sm it amounts to."""
    _, ton, npi, address = destination
    return SubmitSm(
        sequence_number=pdu.sequence_number,
        service_type=pdu.service_type,
        source_addr_ton=pdu.source_addr_ton,
        source_addr_npi=pdu.source_addr_npi,
        source_addr=pdu.source_addr,
        dest_addr_ton=ton,
        dest_addr_npi=npi,
        destination_addr=address,
        esm_class=pdu.esm_class,
        protocol_id=pdu.protocol_id,
        priority_flag=pdu.priority_flag,
        schedule_delivery_time=pdu.schedule_delivery_time,
        validity_period=pdu.validity_period,
        registered_delivery=pdu.registered_delivery,
        replace_if_present_flag=pdu.replace_if_present_flag,
        data_coding=pdu.data_coding,
        sm_default_msg_id=pdu.sm_default_msg_id,
        short_message=pdu.short_message,
        tlvs=pdu.tlvs,
    )


# -- the core ----------------------------------------------------------------------------


class Simulator:
    """The SMSC: accounts, binds, message ids, MT to handsets, MO and receipts to ESMEs.

    Message ids are written per ``message_id_format`` ("dec", "hex", "hex-upper"); receipts
    carry the same id, or the same number written per ``receipt_id_format`` when it differs
    (as SMSCs that Kannel's msg-id-type 1 and 2 exist for).

    ``accounts`` are :class:`stkpay.config.SimAccount` (or anything with ``system_id``,
    ``password`` (a Secret or str), ``short_codes``, ``throughput``). ``rng`` decides the
    delivered/undeliverable mix, injected errors and out-of-order shuffles (seed it in
    tests). Call :meth:`start` to run the periodic housekeeping (reassembly expiry,
    deliver_sm response timeouts) and :meth:`stop` to end it and close every connection.
    Like the reactor it runs on, it is single-threaded: call it from the reactor thread.
    """

    def __init__(
        self,
        accounts: Iterable[Any],
        *,
        clock: Clock,
        directory: HandsetDirectory | None = None,
        faults: Faults | None = None,
        receipt_delay: float = 0.0,
        delivered_ratio: float = 1.0,
        message_id_format: str = "dec",
        receipt_id_format: str | None = None,
        rng: random.Random | None = None,
        system_id: str = "stkpay-sim",
        mt_retention: int = 1000,
        max_mailboxes: int = 10_000,
        max_mailbox_messages: int = 20_000,
        data_coding_default: Encoding | str = Encoding.GSM7,
        queue_limit: int = 10_000,
        delivery_window: int = 64,
        delivery_timeout: float = 30.0,
        max_delivery_attempts: int = 5,
        redelivery_delay: float = 1.0,
        redelivery_max_delay: float = 60.0,
        reassembly_timeout: float = 120.0,
        reassembly_max_per_source: int = 64,
        reassembly_max_total: int = 10_000,
        query_retention: int = 100_000,
        out_of_order_batch: int = 8,
        out_of_order_hold: float = 0.05,
        throttle_burst: float = 0.1,
        unbind_timeout: float = 5.0,
        housekeeping_interval: float = 1.0,
    ) -> None:
        for name, value in (
            ("message_id_format", message_id_format),
            ("receipt_id_format", receipt_id_format or message_id_format),
        ):
            if value not in MESSAGE_ID_FORMATS:
                raise ValueError(f"{name} must be one of " + ", ".join(MESSAGE_ID_FORMATS))
        if receipt_delay < 0:
            raise ValueError("receipt_delay must be >= 0")
        if not 0.0 <= delivered_ratio <= 1.0:
            raise ValueError("delivered_ratio must be between 0 and 1")
        if queue_limit < 1 or delivery_window < 1 or max_delivery_attempts < 1:
            raise ValueError("queue_limit, delivery_window, max_delivery_attempts must be >= 1")
        self._clock = clock
        self._log = Logger(namespace="smsc.simulator")
        self._rng = rng if rng is not None else random.Random()
        self.system_id = system_id
        self._faults = faults if faults is not None else Faults()
        self._receipt_delay = receipt_delay
        self._delivered_ratio = delivered_ratio
        self.message_id_format = message_id_format
        formats: dict[str, Callable[[int], str]] = {
            "dec": str,
            "hex": "{:x}".format,
            "hex-upper": "{:X}".format,
        }
        self._format_id = formats[message_id_format]
        self.receipt_id_format = receipt_id_format or message_id_format
        self._format_receipt_id = (
            None if self.receipt_id_format == message_id_format else formats[self.receipt_id_format]
        )
        self.directory: HandsetDirectory = (
            directory
            if directory is not None
            else MailboxDirectory(
                mt_retention, max_mailboxes=max_mailboxes, max_messages=max_mailbox_messages
            )
        )
        self.data_coding_default = Encoding(data_coding_default)
        self._queue_limit = queue_limit
        self._window = delivery_window
        self._delivery_timeout = delivery_timeout
        self._max_attempts = max_delivery_attempts
        self._redelivery_delay = redelivery_delay
        self._redelivery_max = redelivery_max_delay
        self._ooo_batch = max(1, out_of_order_batch)
        self._ooo_hold = out_of_order_hold
        self._throttle_burst = throttle_burst
        self._unbind_timeout = unbind_timeout
        self._housekeeping_interval = housekeeping_interval

        self._connections: dict[Connection, None] = {}
        self._dirty: list[Connection] = []
        self._accounts: dict[str, _Account] = {}
        self._routes: list[tuple[str, _Account]] = []
        for account in accounts:
            self.add_account(account)

        self._closed_totals: dict[str, int] = BindStats().as_dict()
        self.counters = _Counters()

        self._next_number = 1
        self._states: deque[tuple[int, float] | None] = deque(maxlen=query_retention)
        self._reassembler = Reassembler(
            timeout=reassembly_timeout,
            max_per_source=reassembly_max_per_source,
            max_total=reassembly_max_total,
        )
        self._partial: OrderedDict[tuple[str, str, int, int], dict[int, MtPart]] = OrderedDict()
        self._partial_max = reassembly_max_total
        self._references = ReferenceAllocator(10_000, rng=self._rng)
        self._timers: _TimerQueue[_Delivery] = _TimerQueue(clock, self._timers_fired)
        self._housekeeping: DelayedCall | None = None

    # -- configuration ---------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any, *, clock: Clock, **overrides: Any) -> Simulator:
        """A simulator from a :class:`stkpay.config.SimulatorConfig` (plus keyword overrides)."""
        kwargs: dict[str, Any] = {
            "receipt_delay": config.receipt_delay,
            "delivered_ratio": config.delivered_ratio,
            "mt_retention": config.mt_retention,
            "max_mailboxes": config.max_mailboxes,
            "message_id_format": config.message_id_format,
            "receipt_id_format": config.receipt_id_format or None,
            "data_coding_default": config.data_coding_default,
        }
        kwargs.update(overrides)
        return cls(config.accounts, clock=clock, **kwargs)

    def add_account(self, account: Any) -> None:
        """Add an account, or update the one with the same system_id (its binds stay up):
        ``system_id``, ``password`` (a Secret or str), ``short_codes``, ``throughput``."""
        password = account.password
        secret = password.reveal() if hasattr(password, "reveal") else str(password)
        short_codes = tuple(getattr(account, "short_codes", ()))
        throughput = float(getattr(account, "throughput", 0.0))
        existing = self._accounts.get(account.system_id)
        if existing is None:
            self._accounts[account.system_id] = _Account(
                account.system_id, secret, short_codes, throughput
            )
        else:
            existing.password = secret.encode("latin-1", "replace")
            existing.short_codes = short_codes
            existing.throughput = throughput
        self._routes = sorted(
            ((code, acc) for acc in self._accounts.values() for code in acc.short_codes),
            key=lambda route: -len(route[0]),
        )
        for conn in self._connections:
            conn.refresh_rate()

    @property
    def accounts(self) -> tuple[str, ...]:
        """The system_ids that may bind."""
        return tuple(self._accounts)

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Change the faults for every bind, from now on."""
        self._faults = faults
        for conn in self._connections:
            conn.refresh_rate()

    @property
    def receipt_delay(self) -> float:
        """Seconds between accepting an MT and its receipt."""
        return self._receipt_delay

    @receipt_delay.setter
    def receipt_delay(self, value: float) -> None:
        if not value >= 0:
            raise ValueError("receipt_delay must be >= 0")
        self._receipt_delay = float(value)

    @property
    def delivered_ratio(self) -> float:
        """Share of MT parts that reach their handset (the rest are UNDELIVERABLE)."""
        return self._delivered_ratio

    @delivered_ratio.setter
    def delivered_ratio(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError("delivered_ratio must be between 0 and 1")
        self._delivered_ratio = float(value)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic housekeeping."""
        if self._housekeeping is None:
            self._housekeeping = self._clock.callLater(self._housekeeping_interval, self._housekeep)

    def stop(self) -> None:
        """Stop timers and close every connection (pending deliveries stay queued)."""
        if self._housekeeping is not None and self._housekeeping.active():
            self._housekeeping.cancel()
        self._housekeeping = None
        for item in self._timers.cancel():
            self._queue(item, front=False, dispatch=False)
        for conn in list(self._connections):
            conn.close()
        self.flush()

    def connection_made(self, transport: Transport) -> Connection:
        """A new TCP connection: the core object that serves it."""
        conn = Connection(self, transport)
        self._connections[conn] = None
        return conn

    @property
    def connections(self) -> tuple[Connection, ...]:
        """Open connections, oldest first."""
        return tuple(self._connections)

    def flush(self) -> None:
        """Write what every touched connection has to send (once per entry point)."""
        dirty = self._dirty
        while dirty:
            conns = dirty[:]
            dirty.clear()
            for conn in conns:
                conn._flush()

    # -- MT ----------------------------------------------------------------------------

    def _new_id(self) -> tuple[int, str]:
        """A fresh message id (number, text); its state is unknown until :meth:`_set_state`."""
        number = self._next_number
        self._next_number = number + 1
        self._states.append(None)
        return number, self._format_id(number)

    def _set_state(self, number: int, delivered: bool) -> None:
        """Record the outcome of message ``number`` for query_sm (final at receipt time)."""
        states = self._states
        index = len(states) - (self._next_number - number)
        if index >= 0:
            states[index] = (
                MessageState.DELIVERED if delivered else MessageState.UNDELIVERABLE,
                self._clock.seconds() + self._receipt_delay,
            )

    def query(self, message_id: str) -> tuple[MessageState, float] | None:
        """(state, time it becomes final) of a recent MT message id, or None if unknown.

        The state is ENROUTE until the receipt time (submission + receipt_delay).
        """
        try:
            number = int(message_id.strip(), 10 if self.message_id_format == "dec" else 16)
        except ValueError:
            return None
        states = self._states
        index = len(states) - (self._next_number - number)
        if not 0 <= index < len(states) or number <= 0:
            return None
        entry = states[index]
        if entry is None:
            return None
        state, done = entry
        if self._clock.seconds() < done:
            return MessageState.ENROUTE, done
        return MessageState(state), done

    def _accept_mt(
        self,
        conn: Connection,
        pdu: SubmitSm | DataSm | SubmitMulti,
        message_id: str,
        destination: str,
        fragment: Fragment | None,
    ) -> bool:
        """Route one accepted MT part to its handset (reassembling first when it is one
        part of several) and schedule its receipt. True when its outcome is DELIVERED."""
        now = self._clock.seconds()
        counters = self.counters
        counters.mt_parts += 1
        ratio = self._delivered_ratio
        delivered = ratio >= 1.0 or self._rng.random() < ratio
        if delivered:
            part = MtPart(message_id, conn.system_id or "", pdu, destination, now)
            if fragment is None:
                assert not isinstance(pdu, DataSm)
                message: Message | None = Message(
                    pdu.source_addr,
                    destination,
                    pdu.data_coding,
                    pdu.esm_class,
                    pdu.protocol_id,
                    pdu.short_message,
                    (),
                    1,
                )
                parts: tuple[MtPart, ...] = (part,)
            else:
                message, parts = self._collect(fragment, part, now)
            if message is not None:
                counters.mt_messages += 1
                delivered = self._hand_over(MtMessage(message, parts, now))
        if delivered:
            counters.mt_delivered += 1
        else:
            counters.mt_undeliverable += 1
        wanted = pdu.registered_delivery & 0x03
        if wanted and (wanted == 1 or (wanted == 3) is delivered):
            self._make_receipt(conn, pdu, message_id, destination, delivered, now)
        return delivered

    def _collect(
        self, fragment: Fragment, part: MtPart, now: float
    ) -> tuple[Message | None, tuple[MtPart, ...]]:
        """Feed one part to the reassembler; the whole message and its parts when complete."""
        if fragment.reference is None or fragment.total == 1:
            return self._reassembler.add(fragment, now), (part,)
        key = (fragment.source, fragment.destination, fragment.reference, fragment.total)
        held = self._partial.get(key)
        if held is None:
            held = self._partial[key] = {}
            if len(self._partial) > self._partial_max:
                self._partial.popitem(last=False)
        held.setdefault(fragment.seqnum, part)
        message = self._reassembler.add(fragment, now)
        if message is None:
            return None, ()
        held = self._partial.pop(key, held)
        return message, tuple(held[n] for n in sorted(held))

    def _hand_over(self, message: MtMessage) -> bool:
        handset = self.directory.handset(message.message.destination)
        if handset is None:
            return False
        try:
            return bool(handset.deliver(message))
        except Exception:
            self._log.failure(
                "handset {msisdn} failed to take a message", msisdn=message.message.destination
            )
            return False

    def _make_receipt(  # noqa: PLR0917 - internal, called from one place
        self,
        conn: Connection,
        pdu: SubmitSm | DataSm | SubmitMulti,
        message_id: str,
        destination: str,
        delivered: bool,
        now: float,
    ) -> None:
        account = conn.account
        if account is None:  # pragma: no cover - only bound connections submit
            return
        done = now + self._receipt_delay
        if isinstance(pdu, SubmitMulti):
            dest_ton = dest_npi = 1
        else:
            dest_ton, dest_npi = pdu.dest_addr_ton, pdu.dest_addr_npi
        if self._format_receipt_id is not None:  # the id in another base, as some SMSCs do
            base = 10 if self.message_id_format == "dec" else 16
            message_id = self._format_receipt_id(int(message_id, base))
        receipt = receipt_pdu(
            message_id,
            MessageState.DELIVERED if delivered else MessageState.UNDELIVERABLE,
            source_addr=destination,
            destination_addr=pdu.source_addr,
            source_addr_ton=dest_ton,
            source_addr_npi=dest_npi,
            dest_addr_ton=pdu.source_addr_ton,
            dest_addr_npi=pdu.source_addr_npi,
            submit_date=_smpp_date(now),
            done_date=_smpp_date(done),
            err=0 if delivered else _UNDELIVERABLE_ERR,
            text=_sample_text(pdu, self.data_coding_default),
        )
        self.counters.receipts_made += 1
        item = _Delivery(account, receipt, receipt=True)
        if self._receipt_delay > 0:
            self._timers.push(done, item)
        else:
            self._queue(item, front=False)

    # -- MO ----------------------------------------------------------------------------

    def route(self, destination: str) -> str | None:
        """The system_id serving ``destination`` (longest short-code prefix), or None."""
        account = self._route(destination)
        return None if account is None else account.system_id

    def _route(self, destination: str) -> _Account | None:
        for code, account in self._routes:
            if destination.startswith(code):
                return account
        return None

    def submit_mo(
        self,
        source: str,
        destination: str,
        *,
        text: str | None = None,
        data: bytes | None = None,
        data_coding: int | None = None,
        udh: str | bytes | None = None,
        user_data: Sequence[bytes] | None = None,
        protocol_id: int = 0,
        tlvs: Mapping[int, bytes] | None = None,
    ) -> tuple[str, str | None]:
        """Inject an MO from handset ``source`` to ``destination``: (message id, system_id
        it is routed to or None). See :meth:`inject_mo`."""
        result = self.inject_mo(
            source,
            destination,
            text=text,
            data=data,
            data_coding=data_coding,
            udh=udh,
            user_data=user_data,
            protocol_id=protocol_id,
            tlvs=tlvs,
        )
        return result.message_id, result.system_id

    def inject_mo(
        self,
        source: str,
        destination: str,
        *,
        text: str | None = None,
        data: bytes | None = None,
        data_coding: int | None = None,
        udh: str | bytes | None = None,
        user_data: Sequence[bytes] | None = None,
        protocol_id: int = 0,
        tlvs: Mapping[int, bytes] | None = None,
    ) -> MoResult:
        """Inject an MO: ``text`` (GSM 7-bit when it fits, else UCS2, unless ``data_coding``
        says) or ``data`` (8-bit, data_coding 0x04 by default); ``udh`` holds information
        elements (hex, without the UDHL octet) put in front of the data of every part with
        UDHI set. Long messages are split with 8-bit UDH concatenation. Raises ValueError for
        a bad message (both or neither of text/data, text the coding cannot carry, too
        long, a malformed udh). ``user_data`` instead gives each short message's user data
        with its UDH, sent as is with UDHI set (a card's proof of receipt, 3GPP TS 31.115
        §4.4: TP-PID 0x7F in ``protocol_id``, data_coding 0xF6). ``tlvs`` are added to every
        deliver_sm (e.g. :data:`TAG_DELIVER_REPORT_OF`)."""
        if user_data is not None:
            if text is not None or data is not None or udh:
                raise ValueError("user_data excludes text, data and udh")
            if not 1 <= len(user_data) <= 255 or any(not 1 <= len(p) <= 140 for p in user_data):
                raise ValueError("user_data must be 1 to 255 parts of 1 to 140 octets")
        elif (text is None) == (data is None):
            raise ValueError("give exactly one of text and data")
        if not 0 <= protocol_id <= 0xFF:
            raise ValueError("protocol_id must be 0..255")
        if data_coding is not None and not 0 <= data_coding <= 0xFF:
            raise ValueError("data_coding must be 0..255")
        ies = _parse_ies(udh) if udh else ()
        reference = self._references.next(f"{source}>{destination}", wide=False)
        segments: list[Segment]
        if user_data is not None:
            coding = 0x04 if data_coding is None else data_coding
            segments = [Segment(bytes(part), True, {}, coding) for part in user_data]
        elif text is not None:
            if data_coding is None:
                enc = choose_encoding(text)
                segments = segment_text(text, enc, LongMode.UDH8, reference, extra_ies=ies)
            else:
                enc = encoding_of(data_coding, default=self.data_coding_default)
                if enc is Encoding.BINARY:
                    raise ValueError(f"data_coding 0x{data_coding:02X} is not a text coding")
                segments = [
                    dataclasses.replace(segment, data_coding=data_coding)
                    for segment in segment_text(text, enc, LongMode.UDH8, reference, extra_ies=ies)
                ]
        else:
            assert data is not None
            segments = segment_binary(
                data,
                LongMode.UDH8,
                reference,
                data_coding=0x04 if data_coding is None else data_coding,
                extra_ies=ies,
            )
        _, message_id = self._new_id()
        account = self._route(destination)
        if account is None:
            self.counters.mo_unrouted += 1
            self._log.warn(
                "MO to {destination} dropped: no account serves it", destination=destination
            )
            return MoResult(message_id, None, False, len(segments))
        self.counters.mo_messages += 1
        items = [
            _Delivery(
                account,
                DeliverSm(
                    source_addr_ton=1,
                    source_addr_npi=1,
                    source_addr=source,
                    dest_addr_ton=0,
                    dest_addr_npi=1,
                    destination_addr=destination,
                    esm_class=ESM_UDHI if segment.udhi else 0,
                    protocol_id=protocol_id,
                    data_coding=segment.data_coding,
                    short_message=segment.short_message,
                    tlvs={**segment.tlvs, **tlvs} if tlvs else dict(segment.tlvs),
                ),
                receipt=False,
                group=message_id,
            )
            for segment in segments
        ]
        for item in items:
            self._queue(item, front=False, dispatch=False)
        self._dispatch(account)
        self.flush()
        queued = any(item.conn is None for item in items)
        return MoResult(message_id, account.system_id, queued, len(items))

    # -- deliveries to ESMEs -------------------------------------------------------------

    def _queue(self, item: _Delivery, *, front: bool, dispatch: bool = True) -> None:
        account = item.account
        queue = account.queue
        if len(queue) >= self._queue_limit:
            if front:
                queue.pop()
            else:
                queue.popleft()
            account.dropped += 1
            self.counters.queue_dropped += 1
        if front:
            queue.appendleft(item)
        else:
            queue.append(item)
        if dispatch and account.receivers:
            self._dispatch(account)

    def _dispatch(self, account: _Account) -> None:
        """Send queued deliveries to the account's receiver binds with window room."""
        queue = account.queue
        receivers = account.receivers
        window = self._window
        for r in receivers:
            if r.session.state not in _BOUND_STATES:
                # A bind whose unbind is being processed (its session left the bound state
                # before the handler took it off the list) takes no more deliveries.
                receivers[:] = [r for r in receivers if r.session.state in _BOUND_STATES]
                break
        while queue and receivers:
            item = queue[0]
            conn: Connection | None = None
            last = account.last_conn
            if (
                item.group is not None
                and item.group == account.last_group
                and last is not None
                and last in receivers
                and len(last._outstanding) < window
            ):
                conn = last
            else:
                count = len(receivers)
                for _ in range(count):
                    account.rr = (account.rr + 1) % count
                    candidate = receivers[account.rr]
                    if len(candidate._outstanding) < window:
                        conn = candidate
                        break
            if conn is None:
                return
            queue.popleft()
            account.last_group = item.group
            account.last_conn = conn
            conn._deliver(item)

    def _settle(self, conn: Connection, sequence_number: int, status: int) -> None:
        """A deliver_sm_resp (or generic_nack) for one of ``conn``'s deliveries."""
        item = conn._outstanding.pop(sequence_number, None)
        if item is None:
            conn.stats.unexpected += 1
            return
        if status == Status.ESME_ROK:
            conn.stats.deliver_sm_ok += 1
        else:
            conn.stats.deliver_sm_failed += 1
            self._retry(item, status)
        self._dispatch(item.account)

    def _retry(self, item: _Delivery, status: int) -> None:
        if status in _PERMANENT:
            self.counters.delivery_rejected += 1
            return
        item.attempts += 1
        if item.attempts >= self._max_attempts:
            self.counters.delivery_failed += 1
            self._log.warn(
                "deliver_sm to {system_id} given up after {attempts} attempts ({status})",
                system_id=item.account.system_id,
                attempts=item.attempts,
                status=status_name(status),
            )
            return
        self.counters.redeliveries += 1
        delay = min(self._redelivery_delay * 2 ** (item.attempts - 1), self._redelivery_max)
        self._timers.push(self._clock.seconds() + delay, item)

    def _timers_fired(self, items: list[_Delivery]) -> None:
        accounts: dict[_Account, None] = {}
        for item in items:
            self._queue(item, front=item.attempts > 0, dispatch=False)
            accounts[item.account] = None
        for account in accounts:
            self._dispatch(account)
        self.flush()

    # -- binds ---------------------------------------------------------------------------

    def _authenticate(self, system_id: str, password: str) -> tuple[int, _Account | None]:
        account = self._accounts.get(system_id)
        if account is None:
            return Status.ESME_RINVSYSID, None
        if not hmac.compare_digest(password.encode("latin-1", "replace"), account.password):
            return Status.ESME_RINVPASWD, None
        return Status.ESME_ROK, account

    def _bound(self, conn: Connection) -> None:
        self.counters.binds += 1
        account = conn.account
        assert account is not None and conn.bind_type is not None
        self._log.info(
            "bind {bind_type} system_id={system_id} from {peer}",
            bind_type=conn.bind_type.value,
            system_id=conn.system_id,
            peer=conn.peer,
        )
        if conn.bind_type.receives:
            account.receivers.append(conn)
            self._dispatch(account)

    def _stop_receiving(self, conn: Connection) -> None:
        account = conn.account
        if account is not None and conn in account.receivers:
            account.receivers.remove(conn)

    def _connection_lost(self, conn: Connection) -> None:
        self._stop_receiving(conn)
        self._connections.pop(conn, None)
        for name, value in conn.stats.as_dict().items():
            self._closed_totals[name] += value
        outstanding = list(conn._outstanding.values())
        conn._outstanding.clear()
        account = conn.account
        if outstanding and account is not None:
            for item in reversed(outstanding):
                self._queue(item, front=True, dispatch=False)
            self._dispatch(account)
        if conn.system_id is not None:
            self._log.info(
                "connection closed: system_id={system_id} from {peer}",
                system_id=conn.system_id,
                peer=conn.peer,
            )
        self.flush()

    # -- housekeeping --------------------------------------------------------------------

    def _housekeep(self) -> None:
        self._housekeeping = self._clock.callLater(self._housekeeping_interval, self._housekeep)
        now = self._clock.seconds()
        for expired in self._reassembler.expire(now):
            self.counters.mt_expired += 1
            self._partial.pop(
                (expired.source, expired.destination, expired.reference, expired.total), None
            )
        limit = now - self._delivery_timeout
        touched: dict[_Account, None] = {}
        for conn in list(self._connections):
            outstanding = conn._outstanding
            while outstanding:
                sequence_number, item = next(iter(outstanding.items()))
                if item.sent_at > limit:
                    break
                del outstanding[sequence_number]
                conn.stats.deliver_sm_failed += 1
                self._retry(item, Status.ESME_RX_T_APPN)
                touched[item.account] = None
        for account in touched:
            self._dispatch(account)
        self.flush()

    # -- statistics ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts per open bind, totals since start (closed binds included), per-account
        queues and simulator-wide counters; JSON-ready."""
        binds = [conn.describe() for conn in self._connections]
        totals = dict(self._closed_totals)
        for conn in self._connections:
            for name, value in conn.stats.as_dict().items():
                totals[name] += value
        totals.update(self.counters.as_dict())
        accounts = {
            account.system_id: {
                "queued": len(account.queue),
                "receivers": len(account.receivers),
                "queue_dropped": account.dropped,
            }
            for account in self._accounts.values()
        }
        result: dict[str, Any] = {
            "binds": binds,
            "totals": totals,
            "accounts": accounts,
            "connections": len(self._connections),
            "waiting_timers": len(self._timers),
            "reassembly": {
                "pending": self._reassembler.pending,
                **dataclasses.asdict(self._reassembler.stats),
            },
        }
        if isinstance(self.directory, MailboxDirectory):
            result["mailboxes"] = {
                "mailboxes": len(self.directory),
                "cursor": self.directory.cursor,
                "evicted_mailboxes": self.directory.evicted_mailboxes,
                "evicted_messages": self.directory.evicted_messages,
            }
        return result

    def summary(self) -> str:
        """One line for the periodic log."""
        stats = self.stats()
        totals = stats["totals"]
        queued = sum(account["queued"] for account in stats["accounts"].values())
        return (
            f"binds={len(stats['binds'])} submit_sm={totals['submit_sm']} "
            f"deliver_sm={totals['deliver_sm']} receipts={totals['receipts']} "
            f"mo={totals['mo_messages']} throttled={totals['throttled']} "
            f"errors={totals['errors']} queued={queued}"
        )


class Connection:
    """One ESME connection: its SMPP session, bind, counters and injected faults."""

    __slots__ = (
        "_close_after_flush",
        "_delayed",
        "_dirty",
        "_dropped",
        "_gone",
        "_held",
        "_held_call",
        "_outstanding",
        "_rate",
        "_stamp",
        "_tokens",
        "_unbind_call",
        "_unbind_sent",
        "account",
        "bind_type",
        "bound_at",
        "peer",
        "session",
        "sim",
        "stats",
        "system_id",
        "transport",
    )

    def __init__(self, sim: Simulator, transport: Transport) -> None:
        self.sim = sim
        self.transport = transport
        self.peer = _peer_text(transport.getPeer())
        self.session = SmppSession(Role.SMSC)
        self.stats = BindStats()
        self.system_id: str | None = None
        self.bind_type: BindType | None = None
        self.account: _Account | None = None
        self.bound_at: float | None = None
        self._outstanding: dict[int, _Delivery] = {}
        self._dirty = False
        self._close_after_flush = False
        self._dropped = False
        self._gone = False
        self._unbind_sent = False
        self._unbind_call: DelayedCall | None = None
        self._rate = 0.0
        self._tokens = 0.0
        self._stamp = 0.0
        self._delayed: _TimerQueue[Pdu] | None = None
        self._held: list[Pdu] = []
        self._held_call: DelayedCall | None = None

    def __repr__(self) -> str:
        return f"Connection({self.peer}, {self.system_id!r}, {self.session.state.name})"

    def describe(self) -> dict[str, Any]:
        """JSON-ready view for ``GET /stats``."""
        return {
            "system_id": self.system_id,
            "bind_type": None if self.bind_type is None else self.bind_type.value,
            "peer": self.peer,
            "state": self.session.state.name,
            "bound_at": self.bound_at,
            "outstanding": len(self._outstanding),
            **self.stats.as_dict(),
        }

    # -- input -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the ESME: answer every PDU, then write everything once."""
        if self._dropped or self._gone:
            return
        sim = self.sim
        stats = self.stats
        faults = sim._faults
        try:
            for event in self.session.receive_data(data):
                stats.pdus += 1
                drop_after = faults.drop_after
                if drop_after and stats.pdus >= drop_after:
                    self._drop()
                    break
                if faults.stall or (faults.stall_after and stats.pdus >= faults.stall_after):
                    self._stall_input(faults)
                    continue
                if type(event) is PduReceived:
                    pdu = event.pdu
                    handler = _HANDLERS.get(type(pdu))
                    try:
                        if (
                            self._unbind_sent
                            and not pdu.is_response
                            and type(pdu) not in _WHILE_UNBINDING
                        ):
                            self._refuse_after_unbind(pdu)
                        elif handler is None:
                            self._unexpected(pdu)
                        else:
                            handler(self, pdu)
                    except Exception:
                        self._failed(pdu)
                elif type(event) is ProtocolViolation:
                    stats.protocol_errors += 1
                    self._mark_dirty()
                    sim._log.debug(
                        "protocol violation from {peer}: {detail}",
                        peer=self.peer,
                        detail=event.detail,
                    )
                else:
                    assert isinstance(event, ConnectionBroken)
                    stats.protocol_errors += 1
                    sim._log.warn(
                        "closing connection from {peer}: {detail}",
                        peer=self.peer,
                        detail=event.detail,
                    )
                    self._mark_dirty()
                    self._close_after_flush = True
                    break
                unbind_after = sim._faults.unbind_after
                if unbind_after and stats.pdus >= unbind_after and not self._unbind_sent:
                    self.unbind()
        finally:
            sim.flush()

    def _stalled(self) -> bool:
        """True while the stall fault holds this connection (see :class:`Faults`)."""
        faults = self.sim._faults
        return faults.stall or bool(faults.stall_after and self.stats.pdus >= faults.stall_after)

    def _stall_input(self, faults: Faults) -> None:
        """A PDU read while stalled: ignored. When ``stall_after`` starts the stall at this
        PDU, what the PDUs before it in the same chunk were answered with is written now
        (flushes write nothing while stalled)."""
        stats = self.stats
        stats.stalled += 1
        if not faults.stall and stats.pdus == faults.stall_after:
            data = self.session.data_to_send()
            if data and not self._dropped:
                self.transport.write(data)

    def _refuse_after_unbind(self, pdu: Pdu) -> None:
        """A request that was in the same chunk as PDUs answered before our unbind: refused
        as the session refuses anything arriving after it (ESME_RINVBNDSTS), never accepted."""
        self.stats.protocol_errors += 1
        resp_class = response_class(pdu.command_id)
        if resp_class is None:
            self._send(GenericNack(pdu.sequence_number, Status.ESME_RINVBNDSTS))
        else:
            self._send(resp_class(pdu.sequence_number, Status.ESME_RINVBNDSTS))

    def _failed(self, pdu: Pdu) -> None:
        """A handler raised (a bug or a misbehaving handset): log it, answer ESME_RSYSERR."""
        self.sim._log.failure(
            "error handling {command} from {peer}", command=type(pdu).__name__, peer=self.peer
        )
        self.stats.errors += 1
        resp_class = response_class(pdu.command_id)
        if resp_class is not None:
            with contextlib.suppress(LocalProtocolError, ValueError):
                self._send(resp_class(pdu.sequence_number, Status.ESME_RSYSERR))

    def connection_lost(self) -> None:
        """The TCP connection is gone: requeue unanswered deliveries, drop timers."""
        if self._gone:
            return
        self._gone = True
        for call in (self._unbind_call, self._held_call):
            if call is not None and call.active():
                call.cancel()
        if self._delayed is not None:
            self._delayed.cancel()
        self._held.clear()
        self.sim._connection_lost(self)

    # -- output ----------------------------------------------------------------------

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.sim._dirty.append(self)

    def _send(self, pdu: Pdu) -> None:
        self.session.send(pdu)
        if not self._dirty:
            self._dirty = True
            self.sim._dirty.append(self)

    def _flush(self) -> None:
        self._dirty = False
        if self._gone:
            return
        data = self.session.data_to_send()
        if data and not self._dropped and not self._stalled():
            self.transport.write(data)
        if self._close_after_flush:
            self._close_after_flush = False
            self.transport.loseConnection()

    def _respond(self, pdu: Pdu) -> None:
        """Send a submit/data response, through the injected delay and reordering."""
        faults = self.sim._faults
        if faults.response_delay > 0:
            delayed = self._delayed
            if delayed is None:
                delayed = self._delayed = _TimerQueue(self.sim._clock, self._delayed_fired)
            delayed.push(self.sim._clock.seconds() + faults.response_delay, pdu)
        elif faults.out_of_order:
            self._hold(pdu)
        else:
            self._send(pdu)

    def _delayed_fired(self, pdus: list[Pdu]) -> None:
        for pdu in pdus:
            if self.sim._faults.out_of_order:
                self._hold(pdu)
            else:
                self._send_late(pdu)
        self.sim.flush()

    def _hold(self, pdu: Pdu) -> None:
        held = self._held
        held.append(pdu)
        if len(held) >= self.sim._ooo_batch:
            self._release()
        elif self._held_call is None:
            self._held_call = self.sim._clock.callLater(self.sim._ooo_hold, self._release_later)

    def _release_later(self) -> None:
        self._held_call = None
        self._release()
        self.sim.flush()

    def _release(self) -> None:
        if self._held_call is not None:
            if self._held_call.active():
                self._held_call.cancel()
            self._held_call = None
        held = self._held
        self._held = []
        self.sim._rng.shuffle(held)
        for pdu in held:
            self._send_late(pdu)

    def _send_late(self, pdu: Pdu) -> None:
        """Send a response that waited; dropped if the session can no longer send it."""
        if self._gone or self._dropped:
            return
        try:
            self._send(pdu)
        except LocalProtocolError:
            self.sim._log.debug("late response dropped on {peer}", peer=self.peer)

    # -- faults and lifecycle ------------------------------------------------------------

    def refresh_rate(self) -> None:
        """Recompute the throughput limit (faults, else the account's)."""
        rate = self.sim._faults.throttle
        if not rate and self.account is not None:
            rate = self.account.throughput
        if rate != self._rate:
            self._rate = rate
            self._tokens = max(1.0, rate * self.sim._throttle_burst)
            self._stamp = self.sim._clock.seconds()

    def _take_token(self) -> bool:
        now = self.sim._clock.seconds()
        rate = self._rate
        burst = max(1.0, rate * self.sim._throttle_burst)
        tokens = min(burst, self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def _drop(self) -> None:
        """drop_after: write what was answered so far, then close."""
        self.sim._log.info("dropping connection from {peer} (fault)", peer=self.peer)
        self.sim._stop_receiving(self)
        self._mark_dirty()
        self._close_after_flush = True
        self.sim.flush()
        self._dropped = True

    def unbind(self) -> None:
        """Send unbind (§4.2.1) and close when the ESME answers (or after a timeout)."""
        if self._unbind_sent or self.session.state not in _BOUND_STATES:
            return
        self._unbind_sent = True
        self.sim._stop_receiving(self)
        self._send(Unbind())
        self._unbind_call = self.sim._clock.callLater(self.sim._unbind_timeout, self.close)
        self.sim._log.info("unbinding {peer} (fault)", peer=self.peer)

    def close(self) -> None:
        """Close the connection after writing what is queued."""
        if self._gone:
            return
        self.sim._stop_receiving(self)
        self._mark_dirty()
        self._close_after_flush = True
        self.sim.flush()

    # -- PDU handlers ----------------------------------------------------------------

    def _on_bind(self, pdu: BindTransmitter | BindReceiver | BindTransceiver) -> None:
        resp_class, bind_type = _BINDS[type(pdu)]
        sim = self.sim
        status, account = sim._authenticate(pdu.system_id, pdu.password)
        resp = cast(Any, resp_class)(
            sequence_number=pdu.sequence_number, command_status=status, system_id=sim.system_id
        )
        if status != Status.ESME_ROK:
            self._send(resp)
            sim.counters.bind_failures += 1
            sim._log.warn(
                "bind {bind_type} refused ({status}): system_id={system_id} from {peer}",
                bind_type=bind_type.value,
                status=status_name(status),
                system_id=pdu.system_id,
                peer=self.peer,
            )
            return
        resp.tlvs = {Tag.SC_INTERFACE_VERSION: _INTERFACE_VERSION}
        self._send(resp)
        self.system_id = pdu.system_id
        self.bind_type = bind_type
        self.account = account
        self.bound_at = sim._clock.seconds()
        self.refresh_rate()
        sim._bound(self)

    def _refused(self, pdu: SubmitSm | DataSm | SubmitMulti, resp: type[Pdu]) -> bool:
        """Apply the throttle and the error-rate fault to a message request; True (and the
        refusal sent) when it is not to be accepted."""
        stats = self.stats
        if self._rate and not self._take_token():
            stats.throttled += 1
            self._send(resp(pdu.sequence_number, Status.ESME_RTHROTTLED))
            return True
        sim = self.sim
        faults = sim._faults
        if faults.error_rate and sim._rng.random() < faults.error_rate:
            stats.errors += 1
            self._respond(resp(pdu.sequence_number, faults.error_status))
            return True
        return False

    def _accept(
        self, pdu: SubmitSm | DataSm, resp: type[SubmitSmResp] | type[DataSmResp], parse: bool
    ) -> None:
        """Give the message an id, answer, and hand it to the handset (via reassembly when
        ``parse``: it has a UDH or TLVs); bad user data is refused."""
        fragment = None
        if parse:
            try:
                fragment = fragment_from_pdu(pdu)
            except ValueError:
                self.stats.errors += 1
                self._respond(resp(pdu.sequence_number, _bad_user_data(pdu.esm_class)))
                return
        sim = self.sim
        number, message_id = sim._new_id()
        self._respond(resp(pdu.sequence_number, 0, message_id))
        delivered = sim._accept_mt(self, pdu, message_id, pdu.destination_addr, fragment)
        sim._set_state(number, delivered)

    def _on_submit_sm(self, pdu: SubmitSm) -> None:
        self.stats.submit_sm += 1
        if not self._refused(pdu, SubmitSmResp):
            self._accept(pdu, SubmitSmResp, bool(pdu.tlvs or pdu.esm_class & ESM_UDHI))

    def _on_data_sm(self, pdu: DataSm) -> None:
        self.stats.data_sm += 1
        if not self._refused(pdu, DataSmResp):
            self._accept(pdu, DataSmResp, True)

    def _on_submit_multi(self, pdu: SubmitMulti) -> None:
        stats = self.stats
        stats.submit_multi += 1
        if self._refused(pdu, SubmitMultiResp):
            return
        sim = self.sim
        if not pdu.dest_addresses:
            stats.errors += 1
            self._respond(SubmitMultiResp(pdu.sequence_number, Status.ESME_RINVNUMDESTS))
            return
        fragments: list[tuple[str, Fragment]] = []
        unsuccessful: list[tuple[int, int, str, int]] = []
        for destination in pdu.dest_addresses:
            flag, ton, npi, address = destination
            if flag != 1:  # §4.5.1.1: distribution lists are not provisioned here
                unsuccessful.append((ton, npi, address, Status.ESME_RINVDSTADR))
                continue
            try:
                fragment = fragment_from_pdu(_as_submit_sm(pdu, destination))
            except ValueError:
                stats.errors += 1
                self._respond(SubmitMultiResp(pdu.sequence_number, _bad_user_data(pdu.esm_class)))
                return
            fragments.append((address, fragment))
        number, message_id = sim._new_id()
        self._respond(
            SubmitMultiResp(pdu.sequence_number, 0, message_id, unsuccess_smes=unsuccessful)
        )
        delivered = bool(fragments)
        for address, fragment in fragments:
            delivered &= sim._accept_mt(self, pdu, message_id, address, fragment)
        sim._set_state(number, delivered)

    def _on_query_sm(self, pdu: QuerySm) -> None:
        self.stats.query_sm += 1
        known = self.sim.query(pdu.message_id)
        if known is None:
            self._send(
                QuerySmResp(pdu.sequence_number, Status.ESME_RQUERYFAIL, message_id=pdu.message_id)
            )
            return
        state, done = known
        final = state is not MessageState.ENROUTE
        self._send(
            QuerySmResp(
                pdu.sequence_number,
                0,
                message_id=pdu.message_id,
                final_date=_smpp_time(done) if final else "",
                message_state=int(state),
                error_code=0 if state is not MessageState.UNDELIVERABLE else _UNDELIVERABLE_ERR,
            )
        )

    def _on_cancel_sm(self, pdu: CancelSm) -> None:
        self.stats.cancel_sm += 1
        self._send(CancelSmResp(pdu.sequence_number, Status.ESME_RCANCELFAIL))

    def _on_replace_sm(self, pdu: ReplaceSm) -> None:
        self.stats.replace_sm += 1
        self._send(ReplaceSmResp(pdu.sequence_number, Status.ESME_RREPLACEFAIL))

    def _on_enquire_link(self, pdu: EnquireLink) -> None:
        self.stats.enquire_link += 1
        self._send(EnquireLinkResp(pdu.sequence_number))

    def _on_unbind(self, pdu: Unbind) -> None:
        self.sim._stop_receiving(self)
        self._send(UnbindResp(pdu.sequence_number))
        self._close_after_flush = True

    def _on_unbind_resp(self, pdu: UnbindResp) -> None:
        if self._unbind_call is not None and self._unbind_call.active():
            self._unbind_call.cancel()
        self._unbind_call = None
        self._mark_dirty()
        self._close_after_flush = True

    def _on_deliver_sm_resp(self, pdu: DeliverSmResp) -> None:
        self.sim._settle(self, pdu.sequence_number, pdu.command_status)

    def _on_generic_nack(self, pdu: GenericNack) -> None:
        if pdu.sequence_number in self._outstanding:
            self.sim._settle(self, pdu.sequence_number, pdu.command_status or Status.ESME_RSYSERR)
        else:
            self.stats.unexpected += 1

    def _on_enquire_link_resp(self, pdu: EnquireLinkResp) -> None:
        """The simulator sends no enquire_link; a stray answer is ignored."""
        self.stats.unexpected += 1

    def _unexpected(self, pdu: Pdu) -> None:
        """A PDU the session let through but an SMSC does not take from an ESME."""
        if pdu.is_response:
            self.stats.unexpected += 1
            return
        resp_class = response_class(pdu.command_id)
        self.stats.errors += 1
        if resp_class is None:
            self._send(GenericNack(pdu.sequence_number, Status.ESME_RINVCMDID))
        else:
            self._send(resp_class(pdu.sequence_number, Status.ESME_RINVCMDID))

    def _deliver(self, item: _Delivery) -> None:
        """Send one deliver_sm of the account's queue on this bind."""
        pdu = item.pdu
        pdu.sequence_number = sequence_number = self.session.next_sequence()
        self._outstanding[sequence_number] = item
        item.conn = self
        item.sent_at = self.sim._clock.seconds()
        self._send(pdu)
        stats = self.stats
        stats.deliver_sm += 1
        if item.receipt:
            stats.receipts += 1
        else:
            stats.mo += 1


def _bad_user_data(esm_class: int) -> int:
    """The status for a part whose UDH or sar_*/payload TLVs cannot be read."""
    return Status.ESME_RINVESMCLASS if esm_class & ESM_UDHI else Status.ESME_RINVOPTPARAMVAL


#: Requests an ESME may still send after the SMSC's unbind (as in smsc.session).
_WHILE_UNBINDING: Final[frozenset[type[Pdu]]] = frozenset({Unbind, EnquireLink})

_HANDLERS: Final[dict[type[Pdu], Callable[[Connection, Any], None]]] = {
    SubmitSm: Connection._on_submit_sm,
    DataSm: Connection._on_data_sm,
    SubmitMulti: Connection._on_submit_multi,
    DeliverSmResp: Connection._on_deliver_sm_resp,
    EnquireLink: Connection._on_enquire_link,
    EnquireLinkResp: Connection._on_enquire_link_resp,
    QuerySm: Connection._on_query_sm,
    CancelSm: Connection._on_cancel_sm,
    ReplaceSm: Connection._on_replace_sm,
    Unbind: Connection._on_unbind,
    UnbindResp: Connection._on_unbind_resp,
    GenericNack: Connection._on_generic_nack,
    BindTransmitter: Connection._on_bind,
    BindReceiver: Connection._on_bind,
    BindTransceiver: Connection._on_bind,
}


# -- Twisted glue ------------------------------------------------------------------------


class SmppServerProtocol(TwistedProtocol):
    """One TCP connection to the simulator: bytes in, the core answers."""

    def __init__(self, simulator: Simulator) -> None:
        self._simulator = simulator
        self._conn: Connection | None = None

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        transport = self.transport
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)  # responses must not wait for Nagle
        self._conn = self._simulator.connection_made(cast(Transport, transport))

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self._conn is not None:
            self._conn.data_received(data)

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802
        if self._conn is not None:
            self._conn.connection_lost()


class SmppServerFactory(Factory):
    """Builds a :class:`SmppServerProtocol` per connection."""

    noisy = False  # the simulator logs binds itself

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    def buildProtocol(self, addr: object) -> SmppServerProtocol:  # noqa: N802
        return SmppServerProtocol(self.simulator)


def loopback_default(endpoint: str) -> str:
    """A ``tcp:PORT`` endpoint without ``interface=`` bound to 127.0.0.1 (the control API
    is loopback unless asked otherwise)."""
    if endpoint.startswith("tcp:") and "interface=" not in endpoint:
        return endpoint + ":interface=127.0.0.1"
    return endpoint


class _Listener(Service):
    """Listens on an endpoint string while running; ``port`` is the bound port number."""

    def __init__(self, reactor: Any, description: str, factory: Any) -> None:
        self._reactor = reactor
        self.description = description
        self._factory = factory
        self._listening: Any = None
        self._outcome: object = None
        self._waiters: list[Deferred[int]] = []
        self.port: int | None = None

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]
        self._outcome = None
        endpoint = server_from_string(self._reactor, self.description)
        deferred: Deferred[Any] = endpoint.listen(self._factory)
        deferred.addCallbacks(self._listened, self._failed)

    def _listened(self, listening: Any) -> None:
        self._listening = listening
        self.port = int(listening.getHost().port)
        self._settle(self.port)

    def _failed(self, failure: Failure) -> None:
        self._settle(failure)

    def _settle(self, outcome: object) -> None:
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._fire(waiter)

    def _fire(self, waiter: Deferred[int]) -> None:
        outcome = self._outcome
        if isinstance(outcome, Failure):
            waiter.errback(outcome)
        else:
            waiter.callback(cast(int, outcome))

    def when_listening(self) -> Deferred[int]:
        """Fires with the port number once listening, or fails when listening failed."""
        waiter: Deferred[int] = Deferred()
        if self._outcome is None:
            self._waiters.append(waiter)
        else:
            self._fire(waiter)
        return waiter

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        super().stopService()  # type: ignore[no-untyped-call]
        listening, self._listening = self._listening, None
        if listening is None:
            return succeed(None)
        return cast("Deferred[None]", listening.stopListening())


class _Runner(Service):
    """Runs the simulator's housekeeping and closes its connections on stop."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]
        self.simulator.start()

    def stopService(self) -> None:  # noqa: N802 - Twisted's name
        super().stopService()  # type: ignore[no-untyped-call]
        self.simulator.stop()


class SimulatorService(MultiService):
    """The simulator as a service: the SMPP listener, the HTTP API listener, housekeeping."""

    def __init__(self, simulator: Simulator, smpp: _Listener, api: _Listener | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.simulator = simulator
        self.smpp = smpp
        self.api = api
        for child in (_Runner(simulator), smpp, api):
            if child is not None:
                self.addService(child)  # type: ignore[no-untyped-call]

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        """Start listening (typed wrapper over MultiService)."""
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        """Stop listening and the simulator's timers; fires when the ports are closed."""
        result: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]
        return result

    def when_listening(self) -> Deferred[tuple[int, int | None]]:
        """Fires with (SMPP port, API port or None) once both listen."""
        waits: list[Deferred[int]] = [self.smpp.when_listening()]
        if self.api is not None:
            waits.append(self.api.when_listening())
        both: Deferred[list[tuple[bool, Any]]] = DeferredList(
            waits, fireOnOneErrback=True, consumeErrors=True
        )

        def ports(results: list[tuple[bool, Any]]) -> tuple[int, int | None]:
            numbers = [int(value) for _, value in results]
            return numbers[0], (numbers[1] if len(numbers) > 1 else None)

        def unwrap(failure: Failure) -> Failure:
            inner = getattr(failure.value, "subFailure", None)
            return inner if isinstance(inner, Failure) else failure

        return both.addCallbacks(ports, unwrap)


def make_service(
    config: Any,
    reactor: Any,
    *,
    simulator: Simulator | None = None,
    listen: str | None = None,
    api: str | None = None,
    **simulator_kwargs: Any,
) -> SimulatorService:
    """The simulator service from a :class:`stkpay.config.SimulatorConfig`.

    ``listen``/``api`` override the config's endpoint strings; ``api=""`` runs no API. The
    API endpoint binds to loopback unless it names an interface. ``simulator`` (else one is
    built from the config with ``simulator_kwargs``) reads time from ``reactor``.
    """
    from smsc.sim_api import make_site  # noqa: PLC0415 - sim_api imports this module

    if simulator is None:
        simulator = Simulator.from_config(config, clock=reactor, **simulator_kwargs)
    smpp = _Listener(
        reactor, listen if listen is not None else config.listen, SmppServerFactory(simulator)
    )
    api_description = api if api is not None else config.api
    api_listener = (
        _Listener(reactor, loopback_default(api_description), make_site(simulator))
        if api_description
        else None
    )
    return SimulatorService(simulator, smpp, api_listener)
