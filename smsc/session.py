"""Sans-IO SMPP 3.4 session: bytes in, events out (SMPP v3.4 Issue 1.2 §2.2-§2.4, §3.2).

Modeled on h11: :class:`SmppSession` does no I/O. Feed it what the socket read with
:meth:`SmppSession.receive_data`, act on the events, :meth:`SmppSession.send` PDUs and
write :meth:`SmppSession.data_to_send` to the socket.

Everything that affects the session state lives in this file: :data:`_SENDERS` (which
side may send which PDU in which state, §2.3 and the §2.4 table of operations per bind
type) and :meth:`SmppSession._transition` (bind, unbind and their responses).

Deviations from the letter of the §2.4 table, on purpose:

* ``enquire_link`` / ``enquire_link_resp`` / ``generic_nack`` are also allowed in OPEN
  (many ESMEs probe the link before binding) and while unbinding.
* ``data_sm`` follows the bind direction: ESME->SMSC on TX/TRX binds, SMSC->ESME on RX/TRX.
* UNBINDING (an unbind is outstanding) still carries the responses the bind allowed, so
  a window drains; no new request but ``enquire_link`` and a crossing ``unbind``.

What the session does on its own, so that every peer PDU is answered (§2.9, §4.3.1):

* a request not allowed in the current state is answered with its ``*_resp`` carrying
  ``ESME_RINVBNDSTS`` (``ESME_RALYBND`` for a bind on a bound session), or a
  ``generic_nack`` for a request without a response (outbind, alert_notification), and
  reported as :class:`ProtocolViolation`;
* a malformed PDU is answered with :meth:`PduError.response` (generic_nack for a bad header,
  the ``*_resp`` with an error status for a bad body) and reported the same way;
* a bad ``command_length`` is answered with a generic_nack, reported as
  :class:`ConnectionBroken`, and all later input is ignored.

Responses are never answered: sequence numbers are per direction, so a generic_nack for a
bad ``submit_sm_resp`` would be taken by the peer as the answer to its own request with
that number.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from smsc.codec import HEADER, MAX_PDU_SIZE, PduError, _decode, encode
from smsc.pdu import (
    RESPONSE_BIT,
    CommandId,
    GenericNack,
    Pdu,
    Status,
    response_class,
)

__all__ = [
    "ConnectionBroken",
    "Event",
    "LocalProtocolError",
    "PduReceived",
    "ProtocolViolation",
    "Role",
    "SmppSession",
    "State",
]


class Role(enum.Enum):
    """Which end of the session this object plays."""

    ESME = "esme"
    SMSC = "smsc"


class State(enum.Enum):
    """§2.3 session states, plus UNBINDING while an unbind is outstanding."""

    OPEN = "open"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBINDING = "unbinding"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PduReceived:
    """A well-formed PDU the peer was allowed to send."""

    pdu: Pdu


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The peer broke the protocol; ``response`` is what the session already queued."""

    detail: str
    response: Pdu | None


@dataclass(frozen=True, slots=True)
class ConnectionBroken:
    """Fatal: flush :meth:`SmppSession.data_to_send` and close the connection."""

    detail: str


Event = PduReceived | ProtocolViolation | ConnectionBroken


class LocalProtocolError(Exception):
    """The caller misused the session (e.g. sending a PDU illegal in this state)."""


# -- the state table ---------------------------------------------------------------------

_OPEN: Final = State.OPEN
_TX: Final = State.BOUND_TX
_RX: Final = State.BOUND_RX
_TRX: Final = State.BOUND_TRX
_UNBINDING: Final = State.UNBINDING
_CLOSED: Final = State.CLOSED

_NONE: Final[frozenset[State]] = frozenset()
_BOUND: Final = frozenset({_TX, _RX, _TRX})
_CAN_TX: Final = frozenset({_TX, _TRX})  # ESME may submit (§2.4: transmitter operations)
_CAN_RX: Final = frozenset({_RX, _TRX})  # SMSC may deliver (§2.4: receiver operations)
_LINK: Final = frozenset({_OPEN, _TX, _RX, _TRX, _UNBINDING})

_C = CommandId

# command_id -> (states in which the ESME may send it, states in which the SMSC may send it).
# For a response, a bound state also covers UNBINDING entered from that bound state.
_SENDERS: Final[dict[int, tuple[frozenset[State], frozenset[State]]]] = {
    # §4.1 binds: ESME requests in OPEN, SMSC answers in OPEN; outbind from the SMSC.
    _C.BIND_TRANSMITTER: (frozenset({_OPEN}), _NONE),
    _C.BIND_RECEIVER: (frozenset({_OPEN}), _NONE),
    _C.BIND_TRANSCEIVER: (frozenset({_OPEN}), _NONE),
    _C.BIND_TRANSMITTER_RESP: (_NONE, frozenset({_OPEN})),
    _C.BIND_RECEIVER_RESP: (_NONE, frozenset({_OPEN})),
    _C.BIND_TRANSCEIVER_RESP: (_NONE, frozenset({_OPEN})),
    _C.OUTBIND: (_NONE, frozenset({_OPEN})),
    # §4.2 unbind: either side, when bound; a crossing unbind while unbinding.
    _C.UNBIND: (_BOUND | {_UNBINDING}, _BOUND | {_UNBINDING}),
    _C.UNBIND_RESP: (frozenset({_UNBINDING}), frozenset({_UNBINDING})),
    # §4.3, §4.11: link-level PDUs.
    _C.GENERIC_NACK: (_LINK, _LINK),
    _C.ENQUIRE_LINK: (_LINK, _LINK),
    _C.ENQUIRE_LINK_RESP: (_LINK, _LINK),
    # §4.4, §4.5, §4.8-§4.10: ESME -> SMSC on a transmitter or transceiver bind.
    _C.SUBMIT_SM: (_CAN_TX, _NONE),
    _C.SUBMIT_SM_RESP: (_NONE, _CAN_TX),
    _C.SUBMIT_MULTI: (_CAN_TX, _NONE),
    _C.SUBMIT_MULTI_RESP: (_NONE, _CAN_TX),
    _C.QUERY_SM: (_CAN_TX, _NONE),
    _C.QUERY_SM_RESP: (_NONE, _CAN_TX),
    _C.CANCEL_SM: (_CAN_TX, _NONE),
    _C.CANCEL_SM_RESP: (_NONE, _CAN_TX),
    _C.REPLACE_SM: (_CAN_TX, _NONE),
    _C.REPLACE_SM_RESP: (_NONE, _CAN_TX),
    # §4.6, §4.12: SMSC -> ESME on a receiver or transceiver bind.
    _C.DELIVER_SM: (_NONE, _CAN_RX),
    _C.DELIVER_SM_RESP: (_CAN_RX, _NONE),
    _C.ALERT_NOTIFICATION: (_NONE, _CAN_RX),
    # §4.7 data_sm: both directions, following the bind type.
    _C.DATA_SM: (_CAN_TX, _CAN_RX),
    _C.DATA_SM_RESP: (_CAN_RX, _CAN_TX),
}

_BINDS: Final[dict[int, State]] = {
    _C.BIND_TRANSMITTER: _TX,
    _C.BIND_RECEIVER: _RX,
    _C.BIND_TRANSCEIVER: _TRX,
}
# PDUs whose sending or receipt changes the state: handled by _transition().
_EFFECTS: Final = frozenset(
    {
        *_BINDS,
        *(cid | RESPONSE_BIT for cid in _BINDS),
        _C.UNBIND,
        _C.UNBIND_RESP,
        _C.GENERIC_NACK,
    }
)


def _legal(sender: Role, state: State, bound_as: State | None) -> frozenset[int]:
    """Command ids ``sender`` may send in ``state`` (``bound_as``: the bind being closed)."""
    side = 0 if sender is Role.ESME else 1
    out: set[int] = set()
    for cid, senders in _SENDERS.items():
        allowed = senders[side]
        if state in allowed or (
            state is _UNBINDING
            and bound_as is not None
            and cid & RESPONSE_BIT
            and bound_as in allowed
        ):
            out.add(cid)
    return frozenset(out)


_OTHER: Final = {Role.ESME: Role.SMSC, Role.SMSC: Role.ESME}
_MAX_SEQUENCE: Final = 0x7FFFFFFF


class SmppSession:
    """One SMPP connection, either end, without I/O (see the module docstring)."""

    __slots__ = (
        "_bind_pending",
        "_bound_as",
        "_broken",
        "_buf",
        "_eof",
        "_max",
        "_may_recv",
        "_may_send",
        "_out",
        "_role",
        "_seq",
        "_state",
        "_unbind_in",
        "_unbind_out",
        "_unbind_sent",
    )

    def __init__(self, role: Role, *, max_pdu_size: int = MAX_PDU_SIZE) -> None:
        self._role = role
        self._max = max_pdu_size
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._seq = 0
        self._bind_pending: tuple[int, int] | None = None  # (bind command_id, sequence)
        self._bound_as: State | None = None
        self._unbind_sent = False  # this side has sent an unbind
        self._unbind_out = False  # ... and awaits its unbind_resp
        self._unbind_in = False  # the peer's unbind awaits our unbind_resp
        self._broken = False
        self._eof = False
        self._state = _OPEN
        self._may_send: frozenset[int] = frozenset()
        self._may_recv: frozenset[int] = frozenset()
        self._enter(_OPEN)

    # -- public API -----------------------------------------------------------------------

    @property
    def role(self) -> Role:
        """Which end this session plays."""
        return self._role

    @property
    def state(self) -> State:
        """The current §2.3 session state."""
        return self._state

    def next_sequence(self) -> int:
        """The next sequence number, 1..0x7FFFFFFF, wrapping (§3.2: sequence_number)."""
        seq = self._seq + 1
        if seq > _MAX_SEQUENCE:
            seq = 1
        self._seq = seq
        return seq

    def send(self, pdu: Pdu) -> None:
        """Queue ``pdu`` for sending.

        Raises :class:`LocalProtocolError` if this side may not send it now. A request
        with ``sequence_number`` 0 gets the next sequence number (written into ``pdu``).
        Encoding errors (:class:`ValueError`, :class:`TypeError`) propagate and leave the
        session and ``pdu`` as they were (a sequence number may be skipped).
        """
        cid = pdu.command_id
        if cid not in self._may_send:
            raise LocalProtocolError(
                f"{self._role.name} may not send {type(pdu).__name__} in state {self._state.name}"
            )
        effect = cid in _EFFECTS
        if effect:
            self._check_send_effect(pdu)
        if not cid & RESPONSE_BIT and pdu.sequence_number == 0:
            pdu.sequence_number = self.next_sequence()
            try:
                raw = encode(pdu)
            except Exception:
                pdu.sequence_number = 0
                raise
        else:
            raw = encode(pdu)
        self._out.append(raw)
        if effect:
            self._transition(pdu, sent=True)

    def data_to_send(self) -> bytes:
        """Drain and return the queued outgoing octets."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed octets read from the peer; ``b""`` means the peer closed the connection."""
        if self._broken or self._eof:
            return []
        if not data:
            return self._peer_closed()
        buf = self._buf
        if buf:  # a partial PDU is pending: one copy joins it to the new octets
            buf += data
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        events: list[Event] = []
        append = events.append
        n = len(data)
        off = 0
        unpack = HEADER.unpack_from
        limit = self._max
        may_recv = self._may_recv
        while n - off >= 16:
            length, cid, status, seq = unpack(data, off)
            if length < 16 or length > limit:
                self._fatal(cid, seq, length, events)
                return events
            end = off + length
            if end > n:
                break
            raw = data if length == n else data[off:end]
            off = end
            try:
                pdu = _decode(raw, 16, cid, status, seq)
            except PduError as exc:
                self._malformed(exc, events)
                continue
            if cid in may_recv:
                if cid in _EFFECTS:
                    refusal = self._check_recv_effect(pdu)
                    if refusal is not None:
                        append(refusal)
                        continue
                    self._transition(pdu, sent=False)
                    may_recv = self._may_recv
                append(PduReceived(pdu))
            else:
                append(self._refuse(pdu))
        if off < n:
            buf += memoryview(data)[off:]
        return events

    # -- receive helpers ------------------------------------------------------------------

    def _peer_closed(self) -> list[Event]:
        self._eof = True
        pending = len(self._buf)
        self._buf.clear()
        state = self._state
        self._enter(_CLOSED)
        if pending:
            return [ConnectionBroken(f"peer closed the connection inside a PDU ({pending} octets)")]
        if state is not _CLOSED:
            return [ConnectionBroken(f"peer closed the connection in state {state.name}")]
        return []

    def _fatal(self, cid: int, seq: int, length: int, events: list[Event]) -> None:
        nack = GenericNack(sequence_number=seq, command_status=Status.ESME_RINVCMDLEN)
        self._out.append(encode(nack))
        self._broken = True
        self._enter(_CLOSED)
        events.append(
            ConnectionBroken(
                f"command_length {length} outside 16..{self._max} "
                f"(command_id 0x{cid:08X}, sequence {seq}); stream cannot be resynchronised"
            )
        )

    def _malformed(self, exc: PduError, events: list[Event]) -> None:
        response: Pdu | None = None
        if not exc.command_id & RESPONSE_BIT and self._state is not _CLOSED:
            response = exc.response()
            self._out.append(encode(response))
        events.append(ProtocolViolation(exc.detail, response))

    def _refuse(self, pdu: Pdu) -> ProtocolViolation:
        """Answer (if a request) a PDU the peer may not send in this state."""
        name = type(pdu).__name__
        state = self._state
        detail = f"{_OTHER[self._role].name} may not send {name} in state {state.name}"
        if pdu.command_id & RESPONSE_BIT or state is _CLOSED:
            return ProtocolViolation(detail, None)
        status = Status.ESME_RINVBNDSTS
        if pdu.command_id in _BINDS and (state in _BOUND or state is _UNBINDING):
            status = Status.ESME_RALYBND
        cls = response_class(pdu.command_id)
        if cls is None:
            response: Pdu = GenericNack(sequence_number=pdu.sequence_number, command_status=status)
        else:
            response = cls(sequence_number=pdu.sequence_number, command_status=status)
        self._out.append(encode(response))
        return ProtocolViolation(detail, response)

    def _check_recv_effect(self, pdu: Pdu) -> ProtocolViolation | None:
        """Refuse a legal-by-table PDU that contradicts the session's own bookkeeping."""
        cid = pdu.command_id
        pending = self._bind_pending
        if cid in _BINDS:  # SMSC side: a second bind before the first was answered
            if pending is not None:
                cls = response_class(cid)
                assert cls is not None
                response = cls(
                    sequence_number=pdu.sequence_number, command_status=Status.ESME_RALYBND
                )
                self._out.append(encode(response))
                return ProtocolViolation(
                    f"{type(pdu).__name__} while a bind is being answered", response
                )
        elif cid & RESPONSE_BIT and (cid & ~RESPONSE_BIT) in _BINDS:  # ESME: a bind resp
            if pending is None or pending[0] | RESPONSE_BIT != cid:
                return ProtocolViolation(f"{type(pdu).__name__} without a matching bind", None)
        elif cid == _C.UNBIND_RESP and not self._unbind_out:
            return ProtocolViolation("unbind_resp without an unbind", None)
        return None

    # -- send helpers ---------------------------------------------------------------------

    def _check_send_effect(self, pdu: Pdu) -> None:
        cid = pdu.command_id
        pending = self._bind_pending
        problem = ""
        if cid in _BINDS:
            if pending is not None:
                problem = "a bind is already outstanding"
        elif cid & RESPONSE_BIT and (cid & ~RESPONSE_BIT) in _BINDS:
            if pending is None or pending[0] | RESPONSE_BIT != cid:
                problem = "it answers no received bind of that type"
        elif cid == _C.UNBIND:
            if self._unbind_sent:
                problem = "unbind already sent"
        elif cid == _C.UNBIND_RESP and not self._unbind_in:
            problem = "it answers no received unbind"
        if problem:
            raise LocalProtocolError(
                f"{self._role.name} may not send {type(pdu).__name__} in state "
                f"{self._state.name}: {problem}"
            )

    # -- the transitions ------------------------------------------------------------------

    def _transition(self, pdu: Pdu, *, sent: bool) -> None:
        """Apply the state effect of a bind, unbind, their responses or a generic_nack."""
        cid = pdu.command_id
        if cid in _BINDS:
            self._bind_pending = (cid, pdu.sequence_number)
        elif cid == _C.UNBIND:
            if sent:
                self._unbind_sent = self._unbind_out = True
            else:
                self._unbind_in = True
            if self._state is not _UNBINDING:
                self._enter(_UNBINDING)
        elif cid == _C.UNBIND_RESP:
            # CLOSED once every unbind is answered (two unbinds may cross on the wire)
            if sent:
                self._unbind_in = False
            else:
                self._unbind_out = False
            if not self._unbind_in and not self._unbind_out:
                self._enter(_CLOSED)
        elif cid == _C.GENERIC_NACK:
            # Some SMSCs refuse an unsupported bind type with generic_nack(RINVCMDID).
            pending = self._bind_pending
            if not sent and pending is not None and pending[1] == pdu.sequence_number:
                self._bind_pending = None
        else:  # a bind_*_resp
            self._bind_pending = None
            if pdu.command_status == Status.ESME_ROK:
                self._enter(_BINDS[cid & ~RESPONSE_BIT])

    def _enter(self, state: State) -> None:
        self._state = state
        if state in _BOUND:
            self._bound_as = state
        bound_as = self._bound_as
        self._may_send = _LEGAL[self._role, state, bound_as]
        self._may_recv = _LEGAL[_OTHER[self._role], state, bound_as]


_LEGAL: Final[dict[tuple[Role, State, State | None], frozenset[int]]] = {
    (role, state, bound_as): _legal(role, state, bound_as)
    for role in Role
    for state in State
    for bound_as in (None, _TX, _RX, _TRX)
}
