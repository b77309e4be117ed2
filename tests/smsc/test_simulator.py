"""Tests of smsc/simulator.py: the SMSC simulator core with a fake clock and transport, its
Twisted service, and interop with smpplib's own client over real TCP."""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from smsc.codec import decode as decode_pdu
from smsc.codec import encode
from smsc.dlr import Receipt, parse_receipt
from smsc.handset import MailboxDirectory, MtMessage
from smsc.pdu import (
    ESM_TYPE_DELIVERY_RECEIPT,
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
)
from smsc.reassembly import Reassembler, fragment_from_pdu
from smsc.segment import LongMode, segment_text
from smsc.simulator import (
    TAG_DELIVER_REPORT_OF,
    Faults,
    Simulator,
    SmppServerFactory,
    loopback_default,
    parse_status,
)
from smsc.text import Encoding
from smsc.udh import IEI_COMMAND_PACKET, InformationElement
from stkpay.config import Secret, SimAccount
from tests.smsc.conftest import SimHandle

SHORT_CODE = "10658888"
PHONE = "8613800138000"


def _split(data: bytes) -> Iterator[bytes]:
    while data:
        length = int.from_bytes(data[:4], "big")
        yield data[:length]
        data = data[length:]


class FakeEsme:
    """A scripted ESME on a StringTransport, talking to the simulator's Twisted protocol."""

    def __init__(self, sim: Simulator) -> None:
        self.transport = StringTransport()
        protocol = SmppServerFactory(sim).buildProtocol(None)
        assert protocol is not None
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        self.seq = 0
        self._pending: list[Pdu] = []

    def send(self, *pdus: Pdu) -> None:
        """Encode ``pdus`` (numbering requests) and deliver them in one chunk."""
        for pdu in pdus:
            if not pdu.is_response and pdu.sequence_number == 0:
                self.seq += 1
                pdu.sequence_number = self.seq
        self.protocol.dataReceived(b"".join(encode(pdu) for pdu in pdus))

    def received(self) -> list[Pdu]:
        """The PDUs the simulator wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        pending, self._pending = self._pending, []
        return pending + [decode_pdu(raw) for raw in _split(data)]

    def bind(
        self, cls: type[Pdu] = BindTransceiver, system_id: str = "esme", password: str = "pw"
    ) -> Pdu:
        """Bind and return the bind response (what follows it stays for received())."""
        self.send(cls(system_id=system_id, password=password))
        resp, *self._pending = self.received()
        return resp

    @property
    def closing(self) -> bool:
        """True once the simulator asked to close the connection."""
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """The TCP connection goes away."""
        self.protocol.connectionLost(Failure(ConnectionDone()))

    def ack_all(self, status: int = Status.ESME_ROK) -> list[DeliverSm]:
        """Answer every deliver_sm received so far with ``status``; return them."""
        delivered = [p for p in self.received() if isinstance(p, DeliverSm)]
        if delivered:
            self.send(
                *(
                    DeliverSmResp(sequence_number=p.sequence_number, command_status=status)
                    for p in delivered
                )
            )
        return delivered


def drain(esme: FakeEsme) -> list[Pdu]:
    """Everything the simulator sends, acknowledging each deliver_sm so that more come."""
    seen: list[Pdu] = []
    while pdus := esme.received():
        seen += pdus
        acks = [
            DeliverSmResp(sequence_number=p.sequence_number)
            for p in pdus
            if isinstance(p, DeliverSm)
        ]
        if acks:
            esme.send(*acks)
    return seen


def make_sim(**kwargs: Any) -> tuple[Simulator, Clock]:
    """A simulator on a fake clock with account esme/pw serving SHORT_CODE."""
    clock = Clock()
    clock.advance(1_700_000_000)
    accounts = kwargs.pop(
        "accounts",
        (SimAccount(system_id="esme", password=Secret("pw"), short_codes=(SHORT_CODE,)),),
    )
    kwargs.setdefault("rng", random.Random(7))
    return Simulator(accounts, clock=clock, **kwargs), clock


def submit(
    text: bytes = b"hello", *, to: str = PHONE, registered_delivery: int = 0, **fields: Any
) -> SubmitSm:
    """A submit_sm from the short code."""
    return SubmitSm(
        source_addr=SHORT_CODE,
        destination_addr=to,
        short_message=text,
        registered_delivery=registered_delivery,
        **fields,
    )


def mailbox(sim: Simulator) -> MailboxDirectory:
    assert isinstance(sim.directory, MailboxDirectory)
    return sim.directory


def receipts(pdus: list[Pdu]) -> list[Receipt]:
    found = []
    for pdu in pdus:
        if isinstance(pdu, DeliverSm) and pdu.esm_class & ESM_TYPE_DELIVERY_RECEIPT:
            receipt = parse_receipt(pdu)
            assert receipt is not None
            found.append(receipt)
    return found


# -- binds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "resp"),
    [
        (BindTransmitter, BindTransmitterResp),
        (BindReceiver, BindReceiverResp),
        (BindTransceiver, BindTransceiverResp),
    ],
)
def test_bind_authenticates_each_bind_type(bind: type[Pdu], resp: type[Pdu]) -> None:
    """A good system_id/password binds; the resp names the SMSC and says SMPP 3.4."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    answer = esme.bind(bind)
    assert isinstance(answer, resp)
    assert answer.command_status == Status.ESME_ROK
    assert answer.system_id == "stkpay-sim"
    assert answer.tlvs == {Tag.SC_INTERFACE_VERSION: b"\x34"}
    assert sim.stats()["binds"][0]["bind_type"] == bind.__name__[4:].lower()


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [
        ("esme", "wrong", Status.ESME_RINVPASWD),
        ("nobody", "pw", Status.ESME_RINVSYSID),
        ("esme", "", Status.ESME_RINVPASWD),
    ],
)
def test_bind_refused_then_retry_works(system_id: str, password: str, status: int) -> None:
    """A bad bind is refused with the right status and the session stays open for a retry."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    assert esme.bind(BindTransceiver, system_id, password).command_status == status
    assert esme.bind(BindTransceiver, "esme", "pw").command_status == Status.ESME_ROK
    assert sim.counters.bind_failures == 1


def test_submit_before_bind_is_refused_by_state() -> None:
    """submit_sm in OPEN gets ESME_RINVBNDSTS and delivers nothing."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.send(submit())
    (resp,) = esme.received()
    assert isinstance(resp, SubmitSmResp)
    assert resp.command_status == Status.ESME_RINVBNDSTS
    assert mailbox(sim).messages(PHONE) == []


def test_receiver_bind_may_not_submit() -> None:
    """A receiver bind's submit_sm gets ESME_RINVBNDSTS (§2.4)."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind(BindReceiver)
    esme.send(submit())
    (resp,) = esme.received()
    assert resp.command_status == Status.ESME_RINVBNDSTS


def test_every_request_is_answered_with_its_sequence_number() -> None:
    """Each ESME request in one chunk gets its own response, in order, same sequence."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    requests: list[Pdu] = [
        submit(),
        DataSm(
            source_addr=SHORT_CODE,
            destination_addr=PHONE,
            tlvs={Tag.MESSAGE_PAYLOAD: b"payload"},
        ),
        SubmitMulti(
            source_addr=SHORT_CODE,
            dest_addresses=[(1, 1, 1, PHONE), (2, 0, 0, "somelist")],
            short_message=b"multi",
        ),
        QuerySm(message_id="1", source_addr=SHORT_CODE),
        CancelSm(message_id="1", source_addr=SHORT_CODE, destination_addr=PHONE),
        ReplaceSm(message_id="1", source_addr=SHORT_CODE, short_message=b"x"),
        EnquireLink(),
    ]
    esme.send(*requests)
    answers = esme.received()
    assert [type(a) for a in answers] == [
        SubmitSmResp,
        DataSmResp,
        SubmitMultiResp,
        QuerySmResp,
        CancelSmResp,
        ReplaceSmResp,
        EnquireLinkResp,
    ]
    assert [a.sequence_number for a in answers] == [r.sequence_number for r in requests]
    submit_resp, data_resp, multi_resp, query_resp, cancel, replace, _ = answers
    assert isinstance(multi_resp, SubmitMultiResp)
    assert multi_resp.unsuccess_smes == [(0, 0, "somelist", Status.ESME_RINVDSTADR)]
    assert isinstance(query_resp, QuerySmResp)
    assert query_resp.message_state == MessageState.DELIVERED
    assert cancel.command_status == Status.ESME_RCANCELFAIL
    assert replace.command_status == Status.ESME_RREPLACEFAIL
    ids = [submit_resp.message_id, data_resp.message_id, multi_resp.message_id]
    assert ids == ["1", "2", "3"]
    texts = [m.message.text() for m in mailbox(sim).messages(PHONE)]
    assert texts == ["hello", "payload", "multi"]


def test_unknown_command_gets_generic_nack() -> None:
    """A PDU with an unknown command_id is answered with generic_nack ESME_RINVCMDID."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    esme.protocol.dataReceived(
        (16).to_bytes(4, "big") + bytes.fromhex("00000999 00000000 0000002a")
    )
    (nack,) = esme.received()
    assert isinstance(nack, GenericNack)
    assert (nack.command_status, nack.sequence_number) == (Status.ESME_RINVCMDID, 42)
    assert sim.stats()["binds"][0]["protocol_errors"] == 1


def test_esme_unbind_is_answered_then_closed() -> None:
    """unbind -> unbind_resp, then the simulator closes the connection."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(Unbind())
    (resp,) = esme.received()
    assert isinstance(resp, UnbindResp)
    assert esme.closing


@pytest.mark.parametrize(
    ("fmt", "expected"), [("dec", ["9", "10"]), ("hex", ["9", "a"]), ("hex-upper", ["9", "A"])]
)
def test_message_id_formats(fmt: str, expected: list[str]) -> None:
    """Message ids are a monotonic counter written in decimal, hex or upper-case hex."""
    sim, _ = make_sim(message_id_format=fmt)
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(*(submit() for _ in range(10)))
    ids = [p.message_id for p in esme.received()]
    assert ids[8:] == expected
    assert sim.query(expected[1]) is not None


def test_receipt_id_format_can_differ_from_resp() -> None:
    """receipt_id_format hex with decimal resp ids: the receipt carries the same number in
    hex (the SMSC behaviour Kannel's msg-id-type exists for)."""
    sim, _ = make_sim(message_id_format="dec", receipt_id_format="hex-upper")
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(*(submit(registered_delivery=1 if i == 29 else 0) for i in range(30)))
    pdus = esme.received()
    assert pdus[29].message_id == "30"
    (receipt,) = receipts(pdus)
    assert receipt.message_id == "1E"
    with pytest.raises(ValueError, match="receipt_id_format"):
        make_sim(receipt_id_format="oct")


# -- MT to handsets ----------------------------------------------------------------------


def test_long_udh_message_is_reassembled_in_any_order() -> None:
    """UDH-concatenated parts arriving out of order reach the handset as one message with
    every part's PDU fields, each part with its own message id."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    text = "长短信测试" * 30
    segments = segment_text(text, Encoding.UCS2, LongMode.UDH8, 77)
    assert len(segments) == 3
    pdus = [
        submit(seg.short_message, esm_class=ESM_UDHI, data_coding=seg.data_coding)
        for seg in segments
    ]
    esme.send(pdus[2], pdus[0])
    assert mailbox(sim).messages(PHONE) == []
    esme.send(pdus[1])
    (stored,) = mailbox(sim).messages(PHONE)
    assert stored.message.text() == text
    assert stored.message.message.parts == 3
    parts = stored.message.parts
    assert [p.pdu.short_message for p in parts] == [s.short_message for s in segments]
    assert sorted(p.message_id for p in parts) == ["1", "2", "3"]


@pytest.mark.parametrize("mode", [LongMode.SAR, LongMode.PAYLOAD, LongMode.UDH16])
def test_sar_payload_and_udh16_messages_are_reassembled(mode: LongMode) -> None:
    """sar_* TLVs, message_payload and 16-bit references all reassemble to the text."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    text = "GSM long message with an escape € " * 12
    segments = segment_text(text, Encoding.GSM7, mode, 300)
    esme.send(
        *(
            submit(
                s.short_message,
                esm_class=ESM_UDHI if s.udhi else 0,
                data_coding=s.data_coding,
                tlvs=dict(s.tlvs),
            )
            for s in reversed(segments)
        )
    )
    assert all(p.command_status == 0 for p in esme.received())
    (stored,) = mailbox(sim).messages(PHONE)
    assert stored.message.text() == text


def test_malformed_udh_is_refused() -> None:
    """UDHI set with a UDH length running past the data -> ESME_RINVESMCLASS, not stored."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(b"\x09\x00\x03", esm_class=ESM_UDHI))
    (resp,) = esme.received()
    assert resp.command_status == Status.ESME_RINVESMCLASS
    assert mailbox(sim).messages(PHONE) == []


def test_custom_handset_directory_decides_delivery() -> None:
    """A handset returning False or raising makes the message UNDELIVERABLE."""

    class Phones:
        def __init__(self) -> None:
            self.got: list[MtMessage] = []

        def handset(self, msisdn: str) -> Phones | None:
            return self if msisdn != "0000" else None

        def deliver(self, message: MtMessage) -> bool:
            self.got.append(message)
            if message.text() == "boom":
                raise RuntimeError("handset exploded")
            return message.text() != "refuse"

    phones = Phones()
    sim, _ = make_sim(directory=phones)
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(
        submit(b"fine", registered_delivery=1),
        submit(b"refuse", registered_delivery=1),
        submit(b"boom", registered_delivery=1),
        submit(b"nobody", to="0000", registered_delivery=1),
    )
    stats = [r.stat for r in receipts(esme.received())]
    assert stats == ["DELIVRD", "UNDELIV", "UNDELIV", "UNDELIV"]
    assert [m.text() for m in phones.got] == ["fine", "refuse", "boom"]


# -- receipts ------------------------------------------------------------------------------


def test_receipt_follows_resp_on_transceiver() -> None:
    """registered_delivery=1: the receipt deliver_sm comes right after the submit_sm_resp,
    with the message id in the TLV and in the Appendix B text, addressed back."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(b"hello receipt", registered_delivery=1))
    resp, deliver = esme.received()
    assert isinstance(resp, SubmitSmResp)
    assert isinstance(deliver, DeliverSm)
    (receipt,) = receipts([deliver])
    assert receipt.message_id == resp.message_id
    assert receipt.state is MessageState.DELIVERED
    assert receipt.stat == "DELIVRD"
    assert (receipt.source, receipt.destination) == (PHONE, SHORT_CODE)
    assert receipt.text == "hello receipt"
    esme.send(DeliverSmResp(sequence_number=deliver.sequence_number))
    assert sim.stats()["binds"][0]["deliver_sm_ok"] == 1


def test_receipt_delay_uses_the_clock() -> None:
    """With receipt_delay the receipt waits on the clock; query_sm says ENROUTE meanwhile."""
    sim, clock = make_sim(receipt_delay=5.0)
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(registered_delivery=1))
    (resp,) = esme.received()
    esme.send(QuerySm(message_id=resp.message_id))
    (query,) = esme.received()
    assert isinstance(query, QuerySmResp)
    assert (query.message_state, query.final_date) == (MessageState.ENROUTE, "")
    clock.advance(4.9)
    assert esme.received() == []
    clock.advance(0.2)
    (receipt,) = receipts(esme.received())
    assert receipt.message_id == resp.message_id
    esme.send(QuerySm(message_id=resp.message_id))
    (query,) = esme.received()
    assert isinstance(query, QuerySmResp)
    assert query.message_state == MessageState.DELIVERED
    assert len(query.final_date) == 16


def test_query_of_unknown_id_fails() -> None:
    """query_sm of an id never issued (or not a number) -> ESME_RQUERYFAIL."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(QuerySm(message_id="999"), QuerySm(message_id="zz"))
    assert [p.command_status for p in esme.received()] == [Status.ESME_RQUERYFAIL] * 2


def test_receipt_goes_to_receiver_bind_of_same_account() -> None:
    """Submitting on a transmitter bind, the receipt arrives on the receiver bind."""
    sim, _ = make_sim()
    tx, rx = FakeEsme(sim), FakeEsme(sim)
    tx.bind(BindTransmitter)
    rx.bind(BindReceiver)
    tx.send(submit(registered_delivery=1))
    (resp,) = tx.received()
    (receipt,) = receipts(rx.received())
    assert receipt.message_id == resp.message_id


def test_receipts_wait_for_a_receiver_bind() -> None:
    """With only a transmitter bound, receipts queue and flow once a receiver binds."""
    sim, _ = make_sim()
    tx = FakeEsme(sim)
    tx.bind(BindTransmitter)
    tx.send(*(submit(registered_delivery=1) for _ in range(3)))
    tx.received()
    assert sim.stats()["accounts"]["esme"]["queued"] == 3
    rx = FakeEsme(sim)
    rx.bind(BindReceiver)
    assert [r.message_id for r in receipts(rx.received())] == ["1", "2", "3"]


def test_delivered_ratio_mix_is_reflected_in_receipts_and_mailbox() -> None:
    """delivered_ratio 0.5 yields both outcomes; only DELIVRD messages reach the mailbox and
    registered_delivery=2 asks for receipts on failure only."""
    sim, _ = make_sim(delivered_ratio=0.5)
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(*(submit(b"m", registered_delivery=1) for _ in range(100)))
    got = receipts(drain(esme))
    assert len(got) == 100
    delivered = sum(r.stat == "DELIVRD" for r in got)
    assert 25 < delivered < 75
    assert len(mailbox(sim).messages(PHONE)) == delivered
    esme.send(*(submit(b"m", registered_delivery=2) for _ in range(100)))
    failures = receipts(drain(esme))
    assert failures
    assert {r.stat for r in failures} == {"UNDELIV"}
    assert all(r.network_error == b"\x03\x00\x01" for r in failures)


def test_transmitter_only_account_gets_no_receipt_without_request() -> None:
    """registered_delivery=0 produces no receipt at all."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit())
    assert [type(p) for p in esme.received()] == [SubmitSmResp]
    assert sim.counters.receipts_made == 0


# -- MO ------------------------------------------------------------------------------------


def test_mo_routes_by_longest_short_code_prefix_round_robin() -> None:
    """MO goes to the account whose short code is the longest prefix of the destination,
    alternating over its receiver binds; a transmitter bind gets none."""
    accounts = (
        SimAccount(system_id="wide", password=Secret("pw"), short_codes=("1065",)),
        SimAccount(system_id="narrow", password=Secret("pw"), short_codes=("106588",)),
    )
    sim, _ = make_sim(accounts=accounts)
    wide, narrow1, narrow2, narrow_tx = (FakeEsme(sim) for _ in range(4))
    wide.bind(BindTransceiver, "wide")
    narrow1.bind(BindTransceiver, "narrow")
    narrow2.bind(BindReceiver, "narrow")
    narrow_tx.bind(BindTransmitter, "narrow")
    assert sim.submit_mo(PHONE, "10658888", text="a")[1] == "narrow"
    assert sim.submit_mo(PHONE, "10658888", text="b")[1] == "narrow"
    assert sim.submit_mo(PHONE, "1065123", text="c")[1] == "wide"
    assert sim.submit_mo(PHONE, "999", text="d") == ("4", None)
    got1 = [p.short_message for p in narrow1.ack_all()]
    got2 = [p.short_message for p in narrow2.ack_all()]
    assert sorted(got1 + got2) == [b"a", b"b"]
    assert len(got1) == len(got2) == 1
    assert [p.short_message for p in wide.ack_all()] == [b"c"]
    assert narrow_tx.received() == []
    assert sim.counters.mo_unrouted == 1


def test_mo_queued_until_bind() -> None:
    """MO injected while nobody is bound waits (queued=True) and arrives on bind in order."""
    sim, _ = make_sim()
    first = sim.inject_mo(PHONE, SHORT_CODE, text="first")
    second = sim.inject_mo(PHONE, SHORT_CODE, text="second")
    assert (first.system_id, first.queued) == ("esme", True)
    assert second.queued
    esme = FakeEsme(sim)
    esme.bind(BindReceiver)
    assert [p.short_message for p in esme.ack_all()] == [b"first", b"second"]
    assert not sim.inject_mo(PHONE, SHORT_CODE, text="now").queued


def test_no_delivery_on_a_bind_that_is_unbinding() -> None:
    """A receiver bind whose session has left the bound state (an unbind outstanding on it)
    while it is still listed gets no deliver_sm, which its session would refuse: the MO
    waits in the queue for the next bind."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    (conn,) = list(sim._connections)
    conn.session.send(Unbind(sequence_number=conn.session.next_sequence()))
    assert sim.inject_mo(PHONE, SHORT_CODE, text="waits").queued
    assert not [p for p in esme.received() if isinstance(p, DeliverSm)]
    again = FakeEsme(sim)
    again.bind()
    assert [p.short_message for p in again.ack_all()] == [b"waits"]


def test_long_mo_is_split_with_udh_and_reassembles() -> None:
    """A long UCS2 MO becomes UDH-concatenated deliver_sm parts (kept on one bind) whose
    reassembly is the text; caller IEs (0x70) ride in every part."""
    sim, _ = make_sim()
    a, b = FakeEsme(sim), FakeEsme(sim)
    a.bind()
    b.bind(BindReceiver)
    text = "钱包充值成功，余额一百元。" * 12
    result = sim.inject_mo(PHONE, SHORT_CODE, text=text, udh="7000")
    assert result.parts > 1
    from_a, from_b = a.ack_all(), b.ack_all()
    assert min(len(from_a), len(from_b)) == 0  # the parts of one MO stay on one bind
    parts = from_a + from_b
    assert len(parts) == result.parts
    reassembler = Reassembler(timeout=60, max_per_source=4, max_total=4)
    message = None
    for pdu in parts:
        assert pdu.esm_class & ESM_UDHI
        assert pdu.data_coding == 0x08
        message = reassembler.add(fragment_from_pdu(pdu), 0.0) or message
    assert message is not None
    assert message.text() == text
    assert message.ies == (InformationElement(IEI_COMMAND_PACKET, b""),)
    assert len({p.sequence_number for p in parts}) == len(parts)


def test_binary_mo_with_udh_sets_udhi() -> None:
    """An 8-bit MO with a response-packet IE carries the UDH and UDHI, data_coding as given."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    sim.submit_mo(PHONE, SHORT_CODE, data=b"\x01\x02\x03", data_coding=0xF6, udh="7100")
    (pdu,) = esme.ack_all()
    assert pdu.esm_class == ESM_UDHI
    assert pdu.data_coding == 0xF6
    assert pdu.short_message == b"\x02\x71\x00\x01\x02\x03"


def test_mo_user_data_is_sent_as_is() -> None:
    """Pre-built user data (a card's PoR in SMS-SUBMIT, TS 31.115 §4.4) reaches the ESME
    untouched, one deliver_sm per part, with UDHI, TP-PID 0x7F and data_coding 0xF6."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    parts = (b"\x05\x00\x03\x07\x02\x01" + b"a" * 10, b"\x05\x00\x03\x07\x02\x02b")
    sim.submit_mo(PHONE, SHORT_CODE, user_data=parts, protocol_id=0x7F, data_coding=0xF6)
    pdus = esme.ack_all()
    assert [p.short_message for p in pdus] == list(parts)
    assert {(p.esm_class, p.protocol_id, p.data_coding) for p in pdus} == {(ESM_UDHI, 0x7F, 0xF6)}


def test_mo_extension_tlvs_ride_on_every_part() -> None:
    """The deliver-report extension: the MT's message id in the vendor TLV of the MO."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    tag = TAG_DELIVER_REPORT_OF
    sim.submit_mo(PHONE, SHORT_CODE, user_data=(b"\x02\x71\x00\x01",), tlvs={tag: b"42\0"})
    (pdu,) = esme.ack_all()
    assert pdu.tlvs[tag] == b"42\0"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_data": (b"x",), "text": "x"},
        {"user_data": (b"x",), "udh": "7100"},
        {"user_data": ()},
        {"user_data": (b"x" * 141,)},
        {"text": "x", "protocol_id": 256},
    ],
)
def test_bad_mo_user_data_raises_value_error(kwargs: dict[str, Any]) -> None:
    """user_data excludes the other content forms and must fit short messages."""
    sim, _ = make_sim()
    with pytest.raises(ValueError):
        sim.inject_mo(PHONE, SHORT_CODE, **kwargs)


def test_bad_mo_raises_value_error() -> None:
    """Both text and data, neither, or text a coding cannot carry is a ValueError."""
    sim, _ = make_sim()
    with pytest.raises(ValueError, match="exactly one"):
        sim.submit_mo(PHONE, SHORT_CODE)
    with pytest.raises(ValueError, match="exactly one"):
        sim.submit_mo(PHONE, SHORT_CODE, text="a", data=b"a")
    with pytest.raises(ValueError):
        sim.submit_mo(PHONE, SHORT_CODE, text="中文", data_coding=0x00)
    with pytest.raises(ValueError):
        sim.submit_mo(PHONE, SHORT_CODE, data=b"x", udh="7")


def test_redelivery_after_temporary_app_error_with_backoff() -> None:
    """ESME_RX_T_APPN -> the same MO again after 1 s, then 2 s; ROK settles it."""
    sim, clock = make_sim(redelivery_delay=1.0)
    esme = FakeEsme(sim)
    esme.bind()
    sim.submit_mo(PHONE, SHORT_CODE, text="retry me")
    (first,) = esme.ack_all(Status.ESME_RX_T_APPN)
    clock.advance(0.9)
    assert esme.received() == []
    clock.advance(0.1)
    (second,) = esme.ack_all(Status.ESME_RX_T_APPN)
    assert second.short_message == b"retry me"
    assert second.sequence_number != first.sequence_number
    clock.advance(1.9)
    assert esme.received() == []
    clock.advance(0.1)
    (third,) = esme.ack_all()
    assert third.short_message == b"retry me"
    clock.advance(100)
    assert esme.received() == []
    assert sim.counters.redeliveries == 2


def test_redelivery_is_bounded_and_permanent_errors_are_final() -> None:
    """A delivery is tried max_delivery_attempts times; ESME_RX_P_APPN ends it at once."""
    sim, clock = make_sim(max_delivery_attempts=3, redelivery_delay=1.0)
    esme = FakeEsme(sim)
    esme.bind()
    sim.submit_mo(PHONE, SHORT_CODE, text="doomed")
    attempts = 0
    for _ in range(10):
        attempts += len(esme.ack_all(Status.ESME_RSYSERR))
        clock.advance(10)
    assert attempts == 3
    assert sim.counters.delivery_failed == 1
    sim.submit_mo(PHONE, SHORT_CODE, text="rejected")
    assert len(esme.ack_all(Status.ESME_RX_P_APPN)) == 1
    clock.advance(100)
    assert esme.received() == []
    assert sim.counters.delivery_rejected == 1


def test_unanswered_deliveries_are_requeued_when_connection_drops() -> None:
    """deliver_sm without a resp when the connection is lost go to the next receiver bind."""
    sim, _ = make_sim()
    first = FakeEsme(sim)
    first.bind()
    for text in ("one", "two"):
        sim.submit_mo(PHONE, SHORT_CODE, text=text)
    assert len(first.received()) == 2  # never answered
    first.lose()
    second = FakeEsme(sim)
    second.bind()
    assert [p.short_message for p in second.ack_all()] == [b"one", b"two"]


def test_deliver_window_and_response_timeout() -> None:
    """At most delivery_window deliver_sm are outstanding per bind; one unanswered for
    delivery_timeout is retried."""
    sim, clock = make_sim(delivery_window=2, delivery_timeout=10.0, redelivery_delay=1.0)
    sim.start()
    esme = FakeEsme(sim)
    esme.bind()
    for i in range(3):
        sim.submit_mo(PHONE, SHORT_CODE, text=f"m{i}")
    first = esme.received()
    assert [p.short_message for p in first] == [b"m0", b"m1"]
    esme.send(DeliverSmResp(sequence_number=first[0].sequence_number))
    (third,) = esme.received()
    assert third.short_message == b"m2"
    clock.advance(11)  # m1 and m2 time out
    clock.advance(2)
    assert sorted(p.short_message for p in esme.ack_all()) == [b"m1", b"m2"]
    sim.stop()


# -- fault injection -------------------------------------------------------------------------


def test_throttle_answers_throttled_and_refills() -> None:
    """throttle=10/s: beyond the burst submit_sm gets ESME_RTHROTTLED; tokens refill with time."""
    sim, clock = make_sim(faults=Faults(throttle=10.0), throttle_burst=0.5)
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(*(submit() for _ in range(8)))
    statuses = [p.command_status for p in esme.received()]
    assert statuses == [0] * 5 + [Status.ESME_RTHROTTLED] * 3
    clock.advance(0.2)
    esme.send(*(submit() for _ in range(3)))
    assert [p.command_status for p in esme.received()] == [0, 0, Status.ESME_RTHROTTLED]
    assert sim.stats()["totals"]["throttled"] == 4
    assert len(mailbox(sim).messages(PHONE)) == 7


def test_account_throughput_applies_without_fault() -> None:
    """An account's throughput limits its binds when no throttle fault is set."""
    accounts = (SimAccount(system_id="esme", password=Secret("pw"), throughput=2.0),)
    sim, _ = make_sim(accounts=accounts)
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(*(submit() for _ in range(3)))
    assert [p.command_status for p in esme.received()][-1] == Status.ESME_RTHROTTLED


def test_error_rate_injects_status() -> None:
    """error_rate=1 answers every submit with error_status and delivers nothing; 0.3 a mix."""
    sim, _ = make_sim(faults=Faults(error_rate=1.0, error_status=Status.ESME_RMSGQFUL))
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(*(submit() for _ in range(5)))
    assert {p.command_status for p in esme.received()} == {Status.ESME_RMSGQFUL}
    assert mailbox(sim).messages(PHONE) == []
    sim.set_faults(Faults(error_rate=0.3))
    esme.send(*(submit() for _ in range(100)))
    failed = sum(p.command_status == Status.ESME_RSYSERR for p in esme.received())
    assert 10 < failed < 50


def test_response_delay_holds_responses_on_the_clock() -> None:
    """response_delay: the submit_sm_resp is written only when the clock reaches it."""
    sim, clock = make_sim(faults=Faults(response_delay=0.5))
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(), submit())
    assert esme.received() == []
    clock.advance(0.5)
    assert [p.sequence_number for p in esme.received()] == [2, 3]


def test_drop_after_closes_at_the_nth_pdu() -> None:
    """drop_after=3: bind and one submit are answered, the 3rd PDU is not; connection closed."""
    sim, _ = make_sim(faults=Faults(drop_after=3))
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(b"a"), submit(b"b"), submit(b"c"))
    assert [p.sequence_number for p in esme.received()] == [2]
    assert esme.closing
    assert [m.message.text() for m in mailbox(sim).messages(PHONE)] == ["a"]
    esme.send(submit(b"late"))
    assert esme.received() == []


def test_out_of_order_releases_shuffled_batches() -> None:
    """out_of_order: responses come in shuffled batches; stragglers after the hold time."""
    sim, clock = make_sim(faults=Faults(out_of_order=True), out_of_order_batch=8)
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(*(submit() for _ in range(11)))
    batch = [p.sequence_number for p in esme.received()]
    assert sorted(batch) == list(range(2, 10))
    assert batch != sorted(batch)
    clock.advance(0.05)
    assert sorted(p.sequence_number for p in esme.received()) == [10, 11, 12]


def test_unbind_after_n_pdus() -> None:
    """unbind_after=2: after answering the 2nd PDU the SMSC sends unbind; the ESME's
    unbind_resp closes the connection."""
    sim, _ = make_sim(faults=Faults(unbind_after=2))
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit())
    resp, unbind = esme.received()
    assert isinstance(resp, SubmitSmResp)
    assert isinstance(unbind, Unbind)
    assert not esme.closing
    esme.send(UnbindResp(sequence_number=unbind.sequence_number))
    assert esme.closing


def test_unbind_without_answer_closes_after_timeout() -> None:
    """If the ESME ignores the SMSC's unbind, the connection closes after unbind_timeout."""
    sim, clock = make_sim(faults=Faults(unbind_after=1), unbind_timeout=5.0)
    esme = FakeEsme(sim)
    esme.send(BindTransceiver(system_id="esme", password="pw"))
    resp, unbind = esme.received()
    assert isinstance(resp, BindTransceiverResp)
    assert isinstance(unbind, Unbind)
    clock.advance(4.9)
    assert not esme.closing
    clock.advance(5)
    assert esme.closing


def test_stall_after_ignores_the_nth_pdu_and_everything_after() -> None:
    """stall_after=3: bind and one submit of the chunk are answered; the 3rd PDU and every
    later one (enquire_link included) are read and ignored, the connection stays open, and
    the ignored submits are never delivered. A new connection is healthy again."""
    sim, clock = make_sim(faults=Faults(stall_after=3))
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(b"a"), submit(b"b"), submit(b"c"))
    assert [p.sequence_number for p in esme.received()] == [2]
    esme.send(EnquireLink(), submit(b"d"))
    clock.advance(60)
    assert esme.received() == []
    assert not esme.closing
    assert [m.message.text() for m in mailbox(sim).messages(PHONE)] == ["a"]
    assert sim.stats()["totals"]["stalled"] == 4
    fresh = FakeEsme(sim)
    assert isinstance(fresh.bind(), BindTransceiverResp)
    fresh.send(submit(b"e"))
    (resp,) = fresh.received()
    assert isinstance(resp, SubmitSmResp) and resp.command_status == 0


def test_stall_hangs_every_connection_until_cleared() -> None:
    """stall set at run time: nothing is answered or written (not even a response already
    waiting on response_delay, nor an MO); a bind on a new connection gets no answer.
    Cleared: PDUs are answered again, and the MO written to the hung connection is
    delivered again once that connection is gone."""
    sim, clock = make_sim(faults=Faults(response_delay=0.5))
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(b"before"))
    sim.set_faults(Faults(response_delay=0.5, stall=True))
    clock.advance(1)
    esme.send(EnquireLink(), submit(b"during"))
    assert sim.submit_mo(PHONE, SHORT_CODE, text="mo")[1] == "esme"
    clock.advance(1)
    assert esme.received() == []
    other = FakeEsme(sim)
    other.send(BindTransceiver(system_id="esme", password="pw"))
    assert other.received() == []
    assert [m.message.text() for m in mailbox(sim).messages(PHONE)] == ["before"]
    sim.set_faults(Faults())
    esme.send(EnquireLink())
    (answer,) = esme.received()
    assert isinstance(answer, EnquireLinkResp)
    esme.lose()
    fresh = FakeEsme(sim)
    fresh.bind()
    (mo,) = fresh.ack_all()
    assert mo.short_message == b"mo"


def test_faults_are_validated_and_updated() -> None:
    """Faults reject bad values; updated() applies JSON-like changes, naming a bad key."""
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="drop_after"):
        Faults(drop_after=-1)
    faults = Faults().updated({"throttle": 5, "error_status": "RTHROTTLED", "out_of_order": True})
    assert (faults.throttle, faults.error_status, faults.out_of_order) == (
        5.0,
        Status.ESME_RTHROTTLED,
        True,
    )
    assert faults.as_dict()["error_status"] == "ESME_RTHROTTLED"
    with pytest.raises(ValueError, match="unknown fault"):
        faults.updated({"nonsense": 1})
    with pytest.raises(ValueError, match="drop_after"):
        faults.updated({"drop_after": "3"})
    with pytest.raises(ValueError, match="stall_after"):
        Faults(stall_after=-1)
    with pytest.raises(ValueError, match="stall must be true or false"):
        faults.updated({"stall": 1})
    stalled = faults.updated({"stall": True, "stall_after": 7})
    assert (stalled.stall, stalled.stall_after) == (True, 7)
    assert stalled.as_dict()["stall"] is True and stalled.as_dict()["stall_after"] == 7


@pytest.mark.parametrize(
    ("text", "status"),
    [("ESME_RSYSERR", 0x08), ("rthrottled", 0x58), ("0x64", 0x64), ("20", 20), (0x45, 0x45)],
)
def test_parse_status(text: str | int, status: int) -> None:
    """Statuses parse from names with or without ESME_, hex, decimal and ints."""
    assert parse_status(text) == status


@pytest.mark.parametrize("bad", ["ESME_NOPE", "0", "", "0xZZ", True])
def test_parse_status_rejects(bad: object) -> None:
    """Unknown names, zero and non-numbers are refused."""
    with pytest.raises(ValueError):
        parse_status(bad)


def test_stats_count_per_bind_and_keep_totals_after_close() -> None:
    """Per-bind counters show peer and type; totals survive the connection closing."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(registered_delivery=1), EnquireLink())
    esme.ack_all()
    (bind,) = sim.stats()["binds"]
    assert bind["peer"] == "192.168.1.1:54321"
    assert (bind["submit_sm"], bind["enquire_link"], bind["receipts"]) == (1, 1, 1)
    esme.lose()
    stats = sim.stats()
    assert stats["binds"] == []
    assert (stats["totals"]["submit_sm"], stats["totals"]["deliver_sm_ok"]) == (1, 1)
    assert "submit_sm=1" in sim.summary()


def test_memory_stays_bounded() -> None:
    """Queues, query states, mailbox messages and partial sets are bounded."""
    sim, _ = make_sim(
        queue_limit=5, query_retention=10, max_mailbox_messages=7, reassembly_max_total=3
    )
    for i in range(20):
        sim.submit_mo(PHONE, SHORT_CODE, text=f"q{i}")
    assert sim.stats()["accounts"]["esme"] == {"queued": 5, "receivers": 0, "queue_dropped": 15}
    esme = FakeEsme(sim)
    esme.bind(BindTransmitter)
    esme.send(*(submit(to=f"86{i}") for i in range(30)))
    esme.send(
        *(submit(b"\x05\x00\x03" + bytes((i, 2, 1)) + b"x", esm_class=ESM_UDHI) for i in range(10))
    )
    esme.received()
    assert mailbox(sim).stored <= 7
    assert sim.query("1") is None  # fell out of the state ring
    assert sim.query("60") is not None
    assert sim.stats()["reassembly"]["pending"] <= 3
    assert len(sim._partial) <= 3


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(max_size=80), max_size=6))
def test_arbitrary_bytes_never_break_the_simulator(chunks: list[bytes]) -> None:
    """Whatever a peer sends after binding, the simulator raises nothing and either answers
    or closes; everything it writes decodes as PDUs."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    for chunk in chunks:
        esme.protocol.dataReceived(chunk)
    esme.received()  # decodes cleanly
    esme.lose()
    assert sim.connections == ()


@settings(max_examples=30, deadline=None)
@given(texts=st.lists(st.text(min_size=1, max_size=400), min_size=1, max_size=4))
def test_any_mo_text_arrives_whole(texts: list[str]) -> None:
    """Any MO text (GSM 7-bit or UCS2, any length) reaches the ESME as parts that reassemble
    to exactly that text."""
    sim, _ = make_sim()
    esme = FakeEsme(sim)
    esme.bind()
    reassembler = Reassembler(timeout=60, max_per_source=8, max_total=8)
    for text in texts:
        sim.submit_mo(PHONE, SHORT_CODE, text=text)
        messages = [
            m
            for pdu in esme.ack_all()
            if (m := reassembler.add(fragment_from_pdu(pdu), 0.0)) is not None
        ]
        assert [m.text() for m in messages] == [text]


def test_loopback_default() -> None:
    """A tcp endpoint without interface= is bound to loopback; others are left alone."""
    assert loopback_default("tcp:8775") == "tcp:8775:interface=127.0.0.1"
    assert loopback_default("tcp:8775:interface=0.0.0.0") == "tcp:8775:interface=0.0.0.0"
    assert loopback_default("unix:/tmp/sock") == "unix:/tmp/sock"


# -- over real TCP -------------------------------------------------------------------------


def _http_post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.load(response)
    return result


def _smpplib_session(sim: SimHandle) -> dict[str, Any]:
    """Drive smpplib's own Client (blocking, in a thread) against the simulator."""
    import smpplib.client
    import smpplib.consts
    import smpplib.gsm

    client = smpplib.client.Client(sim.host, sim.port, timeout=10, allow_unknown_opt_params=True)
    resps: list[Any] = []
    delivered: list[Any] = []

    def sent(pdu: Any) -> None:  # smpplib calls handlers with pdu= as a keyword
        resps.append(pdu)

    def received(pdu: Any) -> None:
        delivered.append(pdu)

    client.set_message_sent_handler(sent)
    client.set_message_received_handler(received)
    client.connect()
    try:
        client.bind_transceiver(system_id=sim.system_id, password=sim.password)
        chinese = "移动手机钱包长短信互通测试，" * 8
        parts, encoding_flag, esm_class = smpplib.gsm.make_parts(chinese)
        for part in parts:
            client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
                source_addr=sim.short_code,
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                destination_addr="8613900000001",
                short_message=part,
                data_coding=encoding_flag,
                esm_class=esm_class,
                registered_delivery=1,
            )
        client.send_message(
            source_addr=sim.short_code,
            destination_addr="8613900000002",
            short_message=b"GSM text with receipt",
            registered_delivery=1,
        )
        mo = _http_post(
            sim.api_url + "/mo", {"from": "8613900000003", "to": sim.short_code, "text": "MO hi"}
        )
        expected = len(parts) + 1
        for _ in range(100):
            receipts_seen = [p for p in delivered if int(p.esm_class) & 0x04]
            if (
                len(resps) >= expected
                and len(receipts_seen) >= expected
                and (len(delivered) > len(receipts_seen))
            ):
                break
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    return {"parts": len(parts), "resps": resps, "delivered": delivered, "mo": mo, "text": chinese}


@pytest_twisted.ensureDeferred
async def test_interop_with_smpplib_client(smsc_sim: SimHandle) -> None:
    """smpplib's Client binds transceiver, sends a long UCS2 Chinese message and a GSM text
    with receipts requested, gets every submit_sm_resp and receipt, and receives an MO
    injected through POST /mo as a deliver_sm."""
    from twisted.internet.threads import deferToThread

    result = await deferToThread(_smpplib_session, smsc_sim)
    resps = result["resps"]
    assert len(resps) == result["parts"] + 1
    assert all(int(r.status) == 0 for r in resps)
    ids = {
        r.message_id.decode() if isinstance(r.message_id, bytes) else r.message_id for r in resps
    }
    delivered = result["delivered"]
    receipt_ids = set()
    for pdu in delivered:
        if int(pdu.esm_class) & 0x04:
            rid = pdu.receipted_message_id
            receipt_ids.add(rid.decode() if isinstance(rid, bytes) else rid)
    assert receipt_ids == ids
    mo = [p for p in delivered if not int(p.esm_class) & 0x04]
    assert [p.short_message for p in mo] == [b"MO hi"]
    assert result["mo"]["esme"] == smsc_sim.system_id
    (stored,) = mailbox(smsc_sim.simulator).messages("8613900000001")
    assert stored.message.text() == result["text"]


_SUBMITS = st.builds(
    SubmitSm,
    source_addr=st.sampled_from(["10658888", "1", ""]),
    destination_addr=st.sampled_from([PHONE, "8613800000002", ""]),
    esm_class=st.integers(0, 255),
    data_coding=st.integers(0, 255),
    registered_delivery=st.integers(0, 255),
    short_message=st.binary(max_size=160),
    tlvs=st.dictionaries(
        st.sampled_from(
            [
                Tag.SAR_MSG_REF_NUM,
                Tag.SAR_TOTAL_SEGMENTS,
                Tag.SAR_SEGMENT_SEQNUM,
                Tag.MESSAGE_PAYLOAD,
                Tag.USER_MESSAGE_REFERENCE,
            ]
        ),
        st.binary(max_size=6),
        max_size=4,
    ),
)


@settings(max_examples=80, deadline=None)
@given(pdus=st.lists(_SUBMITS, min_size=1, max_size=12), ratio=st.sampled_from([0.0, 0.5, 1.0]))
def test_any_submit_sm_gets_exactly_one_response(pdus: list[SubmitSm], ratio: float) -> None:
    """Whatever fields a submit_sm carries (malformed UDH, odd sar_* TLVs, any coding), it
    gets exactly one submit_sm_resp with its sequence number, and only valid ones are
    accepted; receipts never outnumber accepted messages."""
    sim, _ = make_sim(delivered_ratio=ratio)
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(*pdus)
    answers = drain(esme)
    resps = [p for p in answers if isinstance(p, SubmitSmResp)]
    assert [r.sequence_number for r in resps] == [p.sequence_number for p in pdus]
    assert all(r.command_status != Status.ESME_RSYSERR for r in resps)
    accepted = sum(r.command_status == Status.ESME_ROK for r in resps)
    assert len(receipts(answers)) <= accepted
    assert sim.counters.mt_parts == accepted


def test_requests_behind_the_smsc_unbind_are_refused_not_accepted() -> None:
    """Submits in the same chunk as the PDU that triggered the SMSC's unbind are answered
    ESME_RINVBNDSTS (as anything arriving after an unbind is), so none is accepted twice
    when the ESME resends them after rebinding; responses still settle."""
    sim, _ = make_sim(faults=Faults(unbind_after=2))
    esme = FakeEsme(sim)
    esme.bind()
    esme.send(submit(b"a"), submit(b"b"), EnquireLink())
    resp_a, unbind, resp_b, link = esme.received()
    assert (resp_a.command_status, resp_b.command_status) == (0, Status.ESME_RINVBNDSTS)
    assert isinstance(unbind, Unbind)
    assert isinstance(link, EnquireLinkResp)
    assert [m.message.text() for m in mailbox(sim).messages(PHONE)] == ["a"]


def test_from_config_reads_the_file_settings() -> None:
    """[simulator] keys reach the simulator: message-id formats and the mailbox bound."""
    import dataclasses

    from twisted.internet.task import Clock

    from smsc.simulator import Simulator
    from stkpay.config import SimulatorConfig

    cfg = dataclasses.replace(
        SimulatorConfig(), message_id_format="hex-upper", receipt_id_format="dec", max_mailboxes=7
    )
    sim = Simulator.from_config(cfg, clock=Clock())
    assert sim.directory.max_mailboxes == 7  # type: ignore[attr-defined]
    assert sim.message_id_format == "hex-upper"
    assert sim.receipt_id_format == "dec"
