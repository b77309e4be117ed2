"""Tests for smsc.session: the sans-IO SMPP 3.4 session state machine (§2.3, §2.4)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsc.codec import HEADER, encode
from smsc.pdu import (
    PDU_CLASSES,
    RESPONSE_BIT,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    CommandId,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
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
    Unbind,
    UnbindResp,
    response_class,
)
from smsc.session import (
    ConnectionBroken,
    Event,
    LocalProtocolError,
    PduReceived,
    ProtocolViolation,
    Role,
    SmppSession,
    State,
)
from tests.smsc.test_codec import _pdu_strategy

OPEN, TX, RX, TRX = State.OPEN, State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX
UNBINDING, CLOSED = State.UNBINDING, State.CLOSED
BOUND = {TX, RX, TRX}
LINK = {OPEN, TX, RX, TRX}

BIND_OF = {TX: BindTransmitter, RX: BindReceiver, TRX: BindTransceiver}
RESP_OF: dict[type[Pdu], type[Pdu]] = {
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
    BindTransceiver: BindTransceiverResp,
}

# §2.4 "SMPP PDUs" table restated per sender (with the documented deviations: link PDUs in
# OPEN too, data_sm following the bind direction). Bind responses and unbind_resp are only
# legal as answers, which the dedicated flow tests cover; here they have no free state.
ESME_MAY_SEND: dict[type[Pdu], set[State]] = {
    BindTransmitter: {OPEN},
    BindReceiver: {OPEN},
    BindTransceiver: {OPEN},
    SubmitSm: {TX, TRX},
    SubmitMulti: {TX, TRX},
    QuerySm: {TX, TRX},
    CancelSm: {TX, TRX},
    ReplaceSm: {TX, TRX},
    DataSm: {TX, TRX},
    DeliverSmResp: {RX, TRX},
    DataSmResp: {RX, TRX},
    Unbind: BOUND,
    EnquireLink: LINK,
    EnquireLinkResp: LINK,
    GenericNack: LINK,
}
SMSC_MAY_SEND: dict[type[Pdu], set[State]] = {
    Outbind: {OPEN},
    SubmitSmResp: {TX, TRX},
    SubmitMultiResp: {TX, TRX},
    QuerySmResp: {TX, TRX},
    CancelSmResp: {TX, TRX},
    ReplaceSmResp: {TX, TRX},
    DataSmResp: {TX, TRX},
    DeliverSm: {RX, TRX},
    AlertNotification: {RX, TRX},
    DataSm: {RX, TRX},
    Unbind: BOUND,
    EnquireLink: LINK,
    EnquireLinkResp: LINK,
    GenericNack: LINK,
}
MAY_SEND = {Role.ESME: ESME_MAY_SEND, Role.SMSC: SMSC_MAY_SEND}
PEER = {Role.ESME: Role.SMSC, Role.SMSC: Role.ESME}
ALL_CLASSES = sorted(PDU_CLASSES.values(), key=lambda c: c.command_id)


# -- helpers ---------------------------------------------------------------------------------


def session_in(role: Role, state: State, *, via: str = "local") -> SmppSession:
    """A session of ``role`` driven to ``state`` through real PDUs.

    UNBINDING and CLOSED start from a transceiver bind; ``via`` says who sent the unbind.
    """
    session = SmppSession(role)
    bound = state if state in BOUND else TRX
    if state is not OPEN:
        bind = BIND_OF[bound]
        if role is Role.ESME:
            session.send(bind(system_id="esme"))
            session.receive_data(encode(RESP_OF[bind](1, 0, "smsc")))
        else:
            session.receive_data(encode(bind(1, 0, "esme")))
            session.send(RESP_OF[bind](1, 0, "smsc"))
        assert session.state is bound
    if state in (UNBINDING, CLOSED):
        if via == "local":
            session.send(Unbind())
            if state is CLOSED:
                session.receive_data(encode(UnbindResp(session.next_sequence() - 1)))
        else:
            session.receive_data(encode(Unbind(900)))
            if state is CLOSED:
                session.send(UnbindResp(900))
    session.data_to_send()
    assert session.state is state
    return session


def feed(session: SmppSession, *pdus: Pdu) -> list[Event]:
    return session.receive_data(b"".join(encode(p) for p in pdus))


def refusal_for(pdu: Pdu, state: State) -> Pdu | None:
    """What a session must answer to a request the peer may not send in ``state``."""
    if pdu.command_id & RESPONSE_BIT or state is CLOSED:
        return None
    status = Status.ESME_RINVBNDSTS
    if isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver) and state is not OPEN:
        status = Status.ESME_RALYBND
    cls = response_class(pdu.command_id) or GenericNack
    return cls(sequence_number=pdu.sequence_number, command_status=status)


def assert_refused(session: SmppSession, pdu: Pdu) -> None:
    """The peer's ``pdu`` is refused: violation event, proper answer, state untouched."""
    state = session.state
    events = feed(session, pdu)
    expected = refusal_for(pdu, state)
    assert len(events) == 1, events
    event = events[0]
    assert isinstance(event, ProtocolViolation), event
    assert event.response == expected
    assert session.data_to_send() == (encode(expected) if expected else b"")
    assert session.state is state


# -- binding -------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [TX, RX, TRX], ids=lambda s: s.name)
def test_esme_bind_flow(bound: State) -> None:
    """ESME: bind_X gets sequence 1 and stays OPEN; bind_X_resp status 0 -> BOUND_X."""
    esme = SmppSession(Role.ESME)
    bind = BIND_OF[bound](system_id="stkpay", password="pw")
    esme.send(bind)
    assert bind.sequence_number == 1
    assert esme.data_to_send() == encode(bind)
    assert esme.data_to_send() == b""
    assert esme.state is OPEN
    resp = RESP_OF[type(bind)](1, 0, "SMSC")
    assert feed(esme, resp) == [PduReceived(resp)]
    assert esme.state is bound


def test_state_change_applies_to_the_rest_of_the_same_chunk() -> None:
    """bind_resp and the first deliver_sm in one read: the deliver_sm is already legal;
    likewise a PDU after unbind in the same read is judged in UNBINDING."""
    esme = SmppSession(Role.ESME)
    esme.send(BindReceiver(system_id="x"))
    events = feed(esme, BindReceiverResp(1), DeliverSm(1), Unbind(2), DeliverSm(3))
    assert [type(e) for e in events] == [PduReceived, PduReceived, PduReceived, ProtocolViolation]
    assert esme.state is UNBINDING


def test_esme_bind_refused_stays_open_and_may_rebind() -> None:
    """A bind_resp with an error leaves the ESME OPEN, free to bind again."""
    esme = SmppSession(Role.ESME)
    esme.send(BindTransceiver(system_id="x"))
    resp = BindTransceiverResp(1, Status.ESME_RINVPASWD)
    assert feed(esme, resp) == [PduReceived(resp)]
    assert esme.state is OPEN
    esme.send(BindTransceiver(system_id="x"))
    feed(esme, BindTransceiverResp(2, 0))
    assert esme.state is TRX


def test_esme_bind_answered_by_generic_nack_may_fall_back() -> None:
    """An SMSC without transceiver support nacks the bind; the ESME may try a transmitter."""
    esme = SmppSession(Role.ESME)
    esme.send(BindTransceiver(system_id="x"))
    with pytest.raises(LocalProtocolError, match="already outstanding"):
        esme.send(BindTransmitter(system_id="x"))
    nack = GenericNack(1, Status.ESME_RINVCMDID)
    assert feed(esme, nack) == [PduReceived(nack)]
    esme.send(BindTransmitter(system_id="x"))
    feed(esme, BindTransmitterResp(2))
    assert esme.state is TX


def test_esme_bind_resp_of_the_wrong_type_is_a_violation() -> None:
    """bind_transmitter_resp to a bind_transceiver: violation, not answered, still pending."""
    esme = SmppSession(Role.ESME)
    esme.send(BindTransceiver(system_id="x"))
    esme.data_to_send()
    events = feed(esme, BindTransmitterResp(1))
    assert [type(e) for e in events] == [ProtocolViolation]
    assert esme.data_to_send() == b""
    assert esme.state is OPEN
    feed(esme, BindTransceiverResp(1))
    assert esme.state is TRX


def test_esme_bind_resp_without_bind_is_a_violation() -> None:
    """A bind_resp nobody asked for changes nothing."""
    esme = SmppSession(Role.ESME)
    assert_refused(esme, BindTransceiverResp(1))


@pytest.mark.parametrize("bound", [TX, RX, TRX], ids=lambda s: s.name)
def test_smsc_bind_flow(bound: State) -> None:
    """SMSC: bind_X is handed to the application; its bind_X_resp status 0 -> BOUND_X."""
    smsc = SmppSession(Role.SMSC)
    bind = BIND_OF[bound](7, 0, "esme", "pw")
    assert feed(smsc, bind) == [PduReceived(bind)]
    assert smsc.state is OPEN
    with pytest.raises(LocalProtocolError):
        smsc.send(RESP_OF[BIND_OF[TX if bound is not TX else RX]](7))  # the wrong type
    resp = RESP_OF[type(bind)](7, 0, "SMSC")
    smsc.send(resp)
    assert smsc.data_to_send() == encode(resp)
    assert smsc.state is bound


def test_smsc_bind_refused_by_application() -> None:
    """The application's error bind_resp keeps the SMSC OPEN; the ESME may bind again."""
    smsc = SmppSession(Role.SMSC)
    feed(smsc, BindTransmitter(1, 0, "esme", "bad"))
    smsc.send(BindTransmitterResp(1, Status.ESME_RINVPASWD))
    assert smsc.state is OPEN
    assert feed(smsc, BindTransmitter(2, 0, "esme", "good"))[0] == PduReceived(
        BindTransmitter(2, 0, "esme", "good")
    )
    smsc.send(BindTransmitterResp(2))
    assert smsc.state is TX


def test_smsc_second_bind_while_first_pending_is_alybnd() -> None:
    """A second bind before the first is answered gets ESME_RALYBND from the session."""
    smsc = SmppSession(Role.SMSC)
    feed(smsc, BindTransceiver(1, 0, "esme"))
    events = feed(smsc, BindReceiver(2, 0, "esme"))
    expected = BindReceiverResp(2, Status.ESME_RALYBND)
    assert events == [ProtocolViolation(events[0].detail, expected)]  # type: ignore[union-attr]
    assert smsc.data_to_send() == encode(expected)
    smsc.send(BindTransceiverResp(1))
    assert smsc.state is TRX


@pytest.mark.parametrize("bound", [TX, RX, TRX], ids=lambda s: s.name)
@pytest.mark.parametrize("bind", [BindTransmitter, BindReceiver, BindTransceiver])
def test_bind_on_bound_session_is_alybnd(bound: State, bind: type[Pdu]) -> None:
    """Any bind on a bound SMSC session: its bind_resp with ESME_RALYBND, state unchanged."""
    smsc = session_in(Role.SMSC, bound)
    assert_refused(smsc, bind(sequence_number=5))
    esme = session_in(Role.ESME, bound)
    with pytest.raises(LocalProtocolError):
        esme.send(bind())


def test_outbind_then_bind_receiver() -> None:
    """§2.2.1: the SMSC outbinds, the ESME answers with a bind_receiver."""
    smsc, esme = SmppSession(Role.SMSC), SmppSession(Role.ESME)
    smsc.send(Outbind(system_id="smsc", password="pw"))
    events = esme.receive_data(smsc.data_to_send())
    assert events == [PduReceived(Outbind(1, 0, "smsc", "pw"))]
    esme.send(BindReceiver(system_id="esme"))
    smsc.receive_data(esme.data_to_send())
    smsc.send(BindReceiverResp(1, 0, "smsc"))
    esme.receive_data(smsc.data_to_send())
    assert esme.state is smsc.state is RX


# -- the state table, exhaustively -----------------------------------------------------------


@pytest.mark.parametrize("state", [OPEN, TX, RX, TRX], ids=lambda s: s.name)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.name)
def test_receive_table(role: Role, state: State) -> None:
    """Every PDU class from the peer: accepted where §2.4 allows it, else refused."""
    peer_may = MAY_SEND[PEER[role]]
    for cls in ALL_CLASSES:
        session = session_in(role, state)
        pdu = cls(sequence_number=77)
        if state in peer_may.get(cls, set()):
            assert feed(session, pdu) == [PduReceived(pdu)], cls.__name__
            assert session.data_to_send() == b""
        else:
            assert_refused(session, pdu)


@pytest.mark.parametrize("state", [OPEN, TX, RX, TRX], ids=lambda s: s.name)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.name)
def test_send_table(role: Role, state: State) -> None:
    """Every PDU class sent locally: queued where §2.4 allows it, else LocalProtocolError."""
    may = MAY_SEND[role]
    for cls in ALL_CLASSES:
        session = session_in(role, state)
        pdu = cls(sequence_number=77)
        if state in may.get(cls, set()):
            session.send(pdu)
            assert session.data_to_send() == encode(pdu), cls.__name__
        else:
            with pytest.raises(LocalProtocolError, match=state.name):
                session.send(pdu)
            assert session.data_to_send() == b""
            assert session.state is state


@pytest.mark.parametrize("bound", [TX, RX, TRX], ids=lambda s: s.name)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.name)
def test_unbinding_table(role: Role, bound: State) -> None:
    """While our unbind is outstanding: the bind's responses and link PDUs still flow, new
    requests (but enquire_link and a crossing unbind) are refused either way."""
    peer_may = MAY_SEND[PEER[role]]
    may = MAY_SEND[role]
    link = {EnquireLink, EnquireLinkResp, GenericNack, Unbind, UnbindResp}

    def unbinding() -> SmppSession:
        session = session_in(role, bound)
        session.send(Unbind(sequence_number=500))
        session.data_to_send()
        assert session.state is UNBINDING
        return session

    for cls in ALL_CLASSES:
        pdu = cls(sequence_number=500)
        session = unbinding()
        responds = bool(cls.command_id & RESPONSE_BIT)
        if cls in link or (responds and bound in peer_may.get(cls, set())):
            assert feed(session, pdu) == [PduReceived(pdu)], cls.__name__
        else:
            assert_refused(session, pdu)
        session = unbinding()
        if cls in (EnquireLink, EnquireLinkResp, GenericNack) or (
            responds and bound in may.get(cls, set())
        ):
            session.send(pdu)
        else:
            with pytest.raises(LocalProtocolError):
                session.send(pdu)
            assert session.state is UNBINDING


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.name)
def test_closed_session_refuses_everything(role: Role) -> None:
    """After unbind/unbind_resp: every PDU is a violation, never answered; sends raise."""
    for cls in ALL_CLASSES:
        session = session_in(role, CLOSED)
        assert_refused(session, cls(sequence_number=3))
        with pytest.raises(LocalProtocolError):
            session.send(cls(sequence_number=3))


# -- unbinding -------------------------------------------------------------------------------


def test_local_unbind_drains_then_closes() -> None:
    """ESME unbinds: submit_sm_resp still arrive, deliver_sm is refused, unbind_resp closes."""
    esme = session_in(Role.ESME, TRX)
    esme.send(SubmitSm(destination_addr="1"))
    mo = DeliverSm(40, short_message=b"mo")
    assert feed(esme, mo) == [PduReceived(mo)]
    esme.send(Unbind())
    assert esme.state is UNBINDING
    with pytest.raises(LocalProtocolError):
        esme.send(SubmitSm())
    with pytest.raises(LocalProtocolError, match="unbind already sent"):
        esme.send(Unbind())
    esme.send(DeliverSmResp(40))  # answering what came before the unbind is fine
    esme.data_to_send()
    resp = SubmitSmResp(1, 0, "m1")
    assert feed(esme, resp) == [PduReceived(resp)]
    assert_refused(esme, DeliverSm(41))
    feed(esme, UnbindResp(2))
    assert esme.state is CLOSED
    assert esme.receive_data(b"") == []


def test_peer_unbind_closes_when_answered() -> None:
    """SMSC receives unbind -> UNBINDING; its unbind_resp -> CLOSED."""
    smsc = session_in(Role.SMSC, TRX)
    assert feed(smsc, Unbind(9)) == [PduReceived(Unbind(9))]
    assert smsc.state is UNBINDING
    smsc.send(UnbindResp(9))
    assert smsc.state is CLOSED
    with pytest.raises(LocalProtocolError):
        smsc.send(DeliverSm())


def test_crossing_unbinds_close_when_both_answered() -> None:
    """Both sides unbind at once: CLOSED only after both unbinds are answered."""
    esme = session_in(Role.ESME, TRX)
    esme.send(Unbind())
    feed(esme, Unbind(50))
    esme.send(UnbindResp(50))
    assert esme.state is UNBINDING
    feed(esme, UnbindResp(2))
    assert esme.state is CLOSED
    smsc = session_in(Role.SMSC, TRX)
    smsc.send(Unbind())
    feed(smsc, Unbind(60))
    feed(smsc, UnbindResp(1))
    assert smsc.state is UNBINDING
    smsc.send(UnbindResp(60))
    assert smsc.state is CLOSED


def test_unbind_resp_must_answer_an_unbind() -> None:
    """unbind_resp from the peer with no unbind of ours, or ours with none of theirs: refused."""
    smsc = session_in(Role.SMSC, UNBINDING, via="peer")
    assert_refused(smsc, UnbindResp(1))
    esme = session_in(Role.ESME, UNBINDING, via="local")
    with pytest.raises(LocalProtocolError, match="answers no received unbind"):
        esme.send(UnbindResp(1))


# -- malformed input and framing ----------------------------------------------------------


def test_malformed_request_is_answered_and_stream_continues() -> None:
    """submit_sm without NUL: submit_sm_resp ESME_RINVMSGLEN queued; next PDU still parsed."""
    smsc = session_in(Role.SMSC, TRX)
    bad = HEADER.pack(19, CommandId.SUBMIT_SM, 0, 31) + b"CMT"
    events = smsc.receive_data(bad + encode(EnquireLink(32)))
    assert len(events) == 2
    assert isinstance(events[0], ProtocolViolation)
    assert events[0].response == SubmitSmResp(31, Status.ESME_RINVMSGLEN)
    assert events[1] == PduReceived(EnquireLink(32))
    assert smsc.data_to_send() == encode(SubmitSmResp(31, Status.ESME_RINVMSGLEN))


def test_unknown_command_is_nacked() -> None:
    """An unknown command_id gets generic_nack ESME_RINVCMDID (§4.3.1)."""
    esme = session_in(Role.ESME, TRX)
    events = esme.receive_data(HEADER.pack(20, 0x00000777, 0, 8) + b"abcd")
    assert events == [ProtocolViolation(events[0].detail, GenericNack(8, Status.ESME_RINVCMDID))]  # type: ignore[union-attr]
    assert esme.data_to_send() == encode(GenericNack(8, Status.ESME_RINVCMDID))
    assert esme.state is TRX


def test_malformed_response_is_not_answered() -> None:
    """A broken submit_sm_resp: violation reported, nothing sent (seq spaces differ)."""
    esme = session_in(Role.ESME, TRX)
    events = esme.receive_data(HEADER.pack(19, CommandId.SUBMIT_SM_RESP, 0, 1) + b"abc")
    assert [type(e) for e in events] == [ProtocolViolation]
    assert events[0].response is None  # type: ignore[union-attr]
    assert esme.data_to_send() == b""


@pytest.mark.parametrize("length", [0, 15, 65537])
def test_bad_command_length_breaks_the_connection(length: int) -> None:
    """command_length outside 16..max: generic_nack queued, ConnectionBroken, input ignored."""
    esme = session_in(Role.ESME, TRX)
    good = encode(DeliverSm(5))
    events = esme.receive_data(good + struct.pack(">IIII", length, 5, 0, 6) + good)
    assert events[0] == PduReceived(DeliverSm(5))
    assert [type(e) for e in events[1:]] == [ConnectionBroken]
    assert esme.data_to_send() == encode(GenericNack(6, Status.ESME_RINVCMDLEN))
    assert esme.state is CLOSED
    assert esme.receive_data(good) == []
    assert esme.receive_data(b"") == []
    with pytest.raises(LocalProtocolError):
        esme.send(EnquireLink())


def test_max_pdu_size_is_applied() -> None:
    """A PDU above the session's max_pdu_size is a fatal framing error."""
    smsc = SmppSession(Role.SMSC, max_pdu_size=100)
    raw = encode(BindTransmitter(1, system_id="x", address_range="y" * 40))
    small = SmppSession(Role.SMSC, max_pdu_size=len(raw))
    assert [type(e) for e in small.receive_data(raw)] == [PduReceived]
    big = encode(EnquireLink(1)) + HEADER.pack(101, CommandId.SUBMIT_SM, 0, 2)
    assert [type(e) for e in smsc.receive_data(big)] == [PduReceived, ConnectionBroken]


def test_peer_close() -> None:
    """EOF: ConnectionBroken when bound or mid-PDU, nothing after a clean unbind."""
    bound = session_in(Role.ESME, TRX)
    assert [type(e) for e in bound.receive_data(b"")] == [ConnectionBroken]
    assert bound.state is CLOSED
    assert bound.receive_data(encode(EnquireLink(1))) == []
    partial = session_in(Role.ESME, CLOSED)
    partial.receive_data(encode(EnquireLink(1))[:5])
    events = partial.receive_data(b"")
    assert [type(e) for e in events] == [ConnectionBroken]
    assert "inside a PDU" in events[0].detail  # type: ignore[union-attr]
    assert session_in(Role.SMSC, CLOSED).receive_data(b"") == []


# -- sequence numbers ------------------------------------------------------------------------


def test_sequence_numbers_assigned_to_requests_only() -> None:
    """send() numbers requests with sequence 0 from 1; keeps explicit ones and responses."""
    esme = session_in(Role.ESME, TRX)  # the bind used 1
    first, explicit, resp = SubmitSm(), SubmitSm(1000), DeliverSmResp(0)
    esme.send(first)
    esme.send(explicit)
    esme.send(resp)
    assert (first.sequence_number, explicit.sequence_number, resp.sequence_number) == (2, 1000, 0)
    assert esme.next_sequence() == 3


def test_sequence_wraps_to_one() -> None:
    """next_sequence() stays in 1..0x7FFFFFFF and wraps to 1 (§3.2)."""
    esme = SmppSession(Role.ESME)
    esme._seq = 0x7FFFFFFE  # white-box: skip two billion calls
    assert [esme.next_sequence() for _ in range(3)] == [0x7FFFFFFF, 1, 2]


def test_peer_sequence_zero_is_accepted() -> None:
    """Some SMSCs number from 0: such PDUs are received normally."""
    esme = session_in(Role.ESME, TRX)
    assert feed(esme, DeliverSm(0), EnquireLink(0)) == [
        PduReceived(DeliverSm(0)),
        PduReceived(EnquireLink(0)),
    ]


# -- buffering -------------------------------------------------------------------------------


def test_many_pdus_per_chunk_and_pdus_across_chunks() -> None:
    """A chunk holding many PDUs and a partial one; the rest completes it later."""
    smsc = session_in(Role.SMSC, TRX)
    pdus = [SubmitSm(i, destination_addr=str(i), short_message=b"x" * i) for i in range(1, 101)]
    raw = b"".join(encode(p) for p in pdus)
    cut = len(raw) - 7
    first = smsc.receive_data(raw[:cut])
    assert [e.pdu for e in first] == pdus[:-1]  # type: ignore[union-attr]
    assert smsc.receive_data(raw[cut:-1]) == []
    assert smsc.receive_data(raw[-1:]) == [PduReceived(pdus[-1])]


def test_bytearray_and_memoryview_input() -> None:
    """receive_data accepts any bytes-like chunk; decoded fields are bytes."""
    smsc = session_in(Role.SMSC, TRX)
    raw = encode(SubmitSm(3, short_message=b"abc", tlvs={0x0204: b"\0\1"}))
    (event,) = smsc.receive_data(bytearray(raw))  # type: ignore[arg-type]
    assert isinstance(event, PduReceived)
    assert isinstance(event.pdu, SubmitSm)
    assert type(event.pdu.short_message) is bytes
    assert type(event.pdu.tlvs[0x0204]) is bytes
    (event,) = smsc.receive_data(memoryview(raw))  # type: ignore[arg-type]
    assert event == PduReceived(SubmitSm(3, short_message=b"abc", tlvs={0x0204: b"\0\1"}))


def test_two_sessions_talk() -> None:
    """An ESME and an SMSC session wired together: bind, traffic both ways, unbind."""
    esme, smsc = SmppSession(Role.ESME), SmppSession(Role.SMSC)

    def pump(src: SmppSession, dst: SmppSession) -> list[Pdu]:
        events = dst.receive_data(src.data_to_send())
        assert all(isinstance(e, PduReceived) for e in events), events
        return [e.pdu for e in events]  # type: ignore[union-attr]

    esme.send(BindTransceiver(system_id="esme", password="pw"))
    (bind,) = pump(esme, smsc)
    smsc.send(BindTransceiverResp(bind.sequence_number, 0, "smsc"))
    pump(smsc, esme)
    for i in range(5):
        esme.send(SubmitSm(destination_addr="86138", short_message=b"mt%d" % i))
    submits = pump(esme, smsc)
    for p in submits:
        smsc.send(SubmitSmResp(p.sequence_number, 0, f"id{p.sequence_number}"))
    smsc.send(DeliverSm(short_message=b"mo"))
    smsc.send(EnquireLink())
    got = pump(smsc, esme)
    assert [type(p) for p in got] == [SubmitSmResp] * 5 + [DeliverSm, EnquireLink]
    esme.send(DeliverSmResp(got[5].sequence_number))
    esme.send(EnquireLinkResp(got[6].sequence_number))
    esme.send(Unbind())
    (_, _, unbind) = pump(esme, smsc)
    smsc.send(UnbindResp(unbind.sequence_number))
    pump(smsc, esme)
    assert esme.state is smsc.state is CLOSED


# -- hypothesis: fuzzing and splitting -----------------------------------------------------

SETUPS: list[Callable[[], SmppSession]] = [
    lambda: SmppSession(Role.ESME),
    lambda: SmppSession(Role.SMSC),
    lambda: session_in(Role.ESME, TRX),
    lambda: session_in(Role.SMSC, TRX),
    lambda: session_in(Role.ESME, UNBINDING),
]

# octets that look like SMPP: real headers with random ids and lengths, mixed with noise
_HEADERS = st.builds(
    HEADER.pack,
    st.integers(0, 80),
    st.sampled_from(sorted(PDU_CLASSES)) | st.integers(0, 0xFFFFFFFF),
    st.integers(0, 3),
    st.integers(0, 5),
)
_NOISE = st.lists(_HEADERS | st.binary(max_size=40), max_size=8).map(b"".join)


def _events_fed(setup: Callable[[], SmppSession], chunks: list[bytes]) -> tuple[list[Event], bytes]:
    session = setup()
    events: list[Event] = []
    for chunk in chunks:
        if chunk:  # b"" would mean end of file
            events.extend(session.receive_data(chunk))
    return events, session.data_to_send()


@settings(max_examples=300, deadline=None)
@given(setup=st.sampled_from(SETUPS), raw=st.binary(max_size=200) | _NOISE)
def test_arbitrary_bytes_whole_or_bytewise(setup: Callable[[], SmppSession], raw: bytes) -> None:
    """Any octets, whole or one at a time: only the three event kinds, identical both ways."""
    whole = _events_fed(setup, [raw])
    bytewise = _events_fed(setup, [raw[i : i + 1] for i in range(len(raw))])
    assert whole == bytewise
    for event in whole[0]:
        assert isinstance(event, PduReceived | ProtocolViolation | ConnectionBroken)


_SMSC_TRAFFIC = st.one_of(
    [_pdu_strategy(cls) for cls in (SubmitSm, DeliverSmResp, EnquireLink, EnquireLinkResp)]
)


@settings(max_examples=100, deadline=None)
@given(pdus=st.lists(_SMSC_TRAFFIC, min_size=1, max_size=12), data=st.data())
def test_valid_stream_split_anywhere(pdus: list[Pdu], data: st.DataObject) -> None:
    """A valid PDU stream split at arbitrary points yields the same PDUs as fed whole."""
    raw = b"".join(encode(p) for p in pdus)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=20)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]

    def setup() -> SmppSession:
        return session_in(Role.SMSC, TRX)

    whole = _events_fed(setup, [raw])
    split = _events_fed(setup, chunks)
    assert whole == split
    assert whole[0] == [PduReceived(p) for p in pdus]
