"""Tests of the Twisted ESME (smsc/esme.py) against a scripted fake SMSC on a fake clock,
and of the outbound message model (smsc/message.py) it sends."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IWriteDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from smsc.codec import HEADER, decode, encode
from smsc.dlr import Receipt, receipt_pdu
from smsc.esme import WRITE_SLICE, BindError, Esme
from smsc.message import (
    ABORTED,
    INVALID,
    TIMEOUT,
    OutboundMessage,
    PartResult,
    ResultCollector,
    SendResult,
    build_submits,
    status_text,
)
from smsc.pdu import (
    ESM_UDHI,
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
    MessageState,
    Pdu,
    Status,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
)
from smsc.reassembly import Message
from smsc.segment import LongMode, ReferenceAllocator, segment_text
from smsc.text import Encoding
from smsc.udh import IEI_COMMAND_PACKET, InformationElement, split_udh
from stkpay.config import Secret, SmscConfig

# -- the fake network and SMSC ---------------------------------------------------------------


class CountingTransport(StringTransport):
    """A StringTransport that counts write calls (batching is observable)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes += 1
        super().write(data)


def drain(transport: StringTransport) -> list[Pdu]:
    """Every PDU written to ``transport`` since the last drain."""
    data = transport.value()
    transport.clear()
    pdus = []
    while data:
        (length, _, _, _) = HEADER.unpack_from(data)
        pdus.append(decode(data[:length]))
        data = data[length:]
    return pdus


class Peer:
    """The SMSC end of one connection, scripted by the test."""

    def __init__(self, proto: Any, transport: CountingTransport, kind: str) -> None:
        self.proto = proto
        self.transport = transport
        self.kind = kind
        self.lost = False

    def read(self) -> list[Pdu]:
        """Every PDU the ESME wrote since the last read."""
        return drain(self.transport)

    def feed(self, *pdus: Pdu) -> None:
        """Deliver PDUs to the ESME in one chunk."""
        self.proto.dataReceived(b"".join(encode(p) for p in pdus))

    def accept_bind(self, status: int = 0) -> Pdu:
        """Answer the bind the ESME sent."""
        (bind,) = self.read()
        resp = {
            BindTransceiver: BindTransceiverResp,
            BindTransmitter: BindTransmitterResp,
            BindReceiver: BindReceiverResp,
        }[type(bind)]
        self.feed(resp(sequence_number=bind.sequence_number, command_status=status, system_id="S"))
        return bind

    def drop(self) -> None:
        """The connection breaks (from the SMSC's side or the network)."""
        if not self.lost:
            self.lost = True
            self.proto.connectionLost(Failure(ConnectionDone()))

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)


class Net:
    """Endpoint factory handing the ESME in-memory connections."""

    def __init__(self) -> None:
        self.peers: list[Peer] = []
        self.refuse = 0

    def endpoint(self, kind: str) -> Any:
        net = self

        class _Endpoint:
            def connect(self, factory: Any) -> Deferred[Any]:
                if net.refuse:
                    net.refuse -= 1
                    return fail(ConnectionRefusedError())
                proto = factory.buildProtocol(None)
                transport = CountingTransport()
                proto.makeConnection(transport)
                net.peers.append(Peer(proto, transport, kind))
                return succeed(proto)

        return _Endpoint()

    def settle(self) -> None:
        """Complete the closes the ESME asked for (StringTransport only records them)."""
        for peer in self.peers:
            if peer.closing and not peer.lost:
                peer.drop()

    def live(self, kind: str | None = None) -> list[Peer]:
        return [p for p in self.peers if not p.lost and (kind is None or p.kind == kind)]


def config(**overrides: Any) -> SmscConfig:
    base = SmscConfig(
        system_id="esme1",
        password=Secret("pw"),
        window=4,
        response_timeout=5.0,
        enquire_link_interval=30.0,
        throughput=1e6,
        reconnect_min=1.0,
        reconnect_max=8.0,
        throttle_backoff=1.0,
        registered_delivery=False,
    )
    return replace(base, **overrides)


def start(
    clock: Clock, net: Net, cfg: SmscConfig | None = None, **kwargs: Any
) -> tuple[Esme, Peer]:
    esme = Esme(
        cfg or config(),
        reactor=clock,
        endpoint_factory=net.endpoint,
        rng=random.Random(5),
        **kwargs,
    )
    esme.startService()
    peer = net.peers[-1]
    return esme, peer


def tick(clock: Clock, seconds: float, step: float = 0.1) -> None:
    """Advance the fake clock in small steps (Clock.advance jumps, then runs what is due)."""
    for _ in range(round(seconds / step)):
        clock.advance(step)


def results(d: Deferred[SendResult]) -> list[SendResult]:
    out: list[SendResult] = []
    d.addCallback(out.append)
    return out


def submits(pdus: list[Pdu]) -> list[SubmitSm]:
    return [p for p in pdus if isinstance(p, SubmitSm)]


def ok(pdu: Pdu, message_id: str = "", status: int = 0) -> SubmitSmResp:
    return SubmitSmResp(
        sequence_number=pdu.sequence_number, command_status=status, message_id=message_id
    )


def stop(esme: Esme) -> list[None]:
    done: list[None] = []
    esme.stopService().addCallback(done.append)
    return done


# -- binding ---------------------------------------------------------------------------------


def test_transceiver_bind() -> None:
    """One connection sends bind_transceiver with the configured credentials; the ESME is
    bound when the resp says OK."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(system_type="VMA", address_range="^1065"))
    waiting: list[None] = []
    esme.when_bound().addCallback(waiting.append)
    assert not esme.bound
    bind = peer.accept_bind()
    assert isinstance(bind, BindTransceiver)
    assert (bind.system_id, bind.password, bind.system_type) == ("esme1", "pw", "VMA")
    assert bind.address_range == "^1065" and bind.interface_version == 0x34
    assert esme.bound and waiting == [None]
    assert esme.stats["binds"] == 1


def test_transmitter_and_receiver_pair() -> None:
    """bind = "tx+rx": two connections; submits go on the transmitter, MO arrives on the
    receiver; bound only when both are."""
    clock, net = Clock(), Net()
    got: list[Message] = []
    esme = Esme(
        config(bind="tx+rx"),
        reactor=clock,
        endpoint_factory=net.endpoint,
        rng=random.Random(1),
        on_message=got.append,
    )
    esme.startService()
    tx, rx = net.peers
    assert (tx.kind, rx.kind) == ("tx", "rx")
    assert isinstance(tx.accept_bind(), BindTransmitter)
    assert not esme.bound
    assert isinstance(rx.accept_bind(), BindReceiver)
    assert esme.bound
    esme.send(OutboundMessage("8613800000000", text="hi"))
    assert len(submits(tx.read())) == 1 and rx.read() == []
    rx.feed(DeliverSm(sequence_number=3, source_addr="8613800000000", short_message=b"yo"))
    assert [m.payload for m in got] == [b"yo"]
    assert rx.read() == [DeliverSmResp(sequence_number=3)]


def test_receiver_reconnects_on_its_own() -> None:
    """In tx+rx mode a lost receiver reconnects while the transmitter keeps sending."""
    clock, net = Clock(), Net()
    esme = Esme(config(bind="tx+rx"), reactor=clock, endpoint_factory=net.endpoint)
    esme.startService()
    tx, rx = net.peers
    tx.accept_bind()
    rx.accept_bind()
    rx.drop()
    assert not esme.bound
    d = results(esme.send(OutboundMessage("1", text="still sending")))
    (pdu,) = submits(tx.read())
    tx.feed(ok(pdu, "m1"))
    assert d[0].ok
    clock.advance(8.0)
    new_rx = net.live("rx")[0]
    new_rx.accept_bind()
    assert esme.bound and len(net.peers) == 3


def test_bind_refused_then_reconnect_with_backoff() -> None:
    """A refused bind closes the connection and retries after a jittered, growing delay;
    the reason is kept (and logged with the tx+rx advice for a transceiver)."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net)
    peer.accept_bind(Status.ESME_RBINDFAIL)
    assert peer.closing and not esme.bound
    net.settle()
    assert "BindTransceiver refused: ESME_RBINDFAIL" in (esme.last_bind_error or "")
    times = []
    for _ in range(4):
        before = len(net.peers)
        start_time = clock.seconds()
        while len(net.peers) == before:
            clock.advance(0.05)
        times.append(clock.seconds() - start_time)
        net.peers[-1].accept_bind(Status.ESME_RINVPASWD)
        net.settle()
    assert all(1.0 <= t <= 8.1 for t in times)
    assert esme.stats["bind_failures"] == 5
    before = len(net.peers)
    clock.advance(8.1)
    net.peers[-1].accept_bind()
    assert esme.bound and len(net.peers) == before + 1


def test_bind_refused_with_generic_nack() -> None:
    """An SMSC that does not know bind_transceiver answers generic_nack: a bind failure."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net)
    (bind,) = peer.read()
    peer.feed(GenericNack(sequence_number=bind.sequence_number, command_status=3))
    assert peer.closing and esme.stats["bind_failures"] == 1


def test_unreachable_smsc_is_retried() -> None:
    """A refused TCP connection is retried with backoff."""
    clock, net = Clock(), Net()
    net.refuse = 2
    esme = Esme(config(), reactor=clock, endpoint_factory=net.endpoint, rng=random.Random(2))
    esme.startService()
    assert net.peers == [] and esme.stats["connect_failures"] == 1
    for _ in range(300):
        if net.peers:
            break
        clock.advance(0.1)
    assert esme.stats["connect_failures"] == 2 and len(net.peers) == 1
    assert 2.0 <= clock.seconds() <= 16.0  # two jittered delays of 1..8 s
    net.peers[0].accept_bind()
    assert esme.bound


def test_bind_timeout_aborts_and_retries() -> None:
    """No bind_resp within response_timeout: the connection is aborted and retried."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net)
    clock.advance(5.0)
    assert peer.transport.disconnected
    net.settle()
    clock.advance(8.0)
    assert len(net.peers) == 2
    net.peers[1].accept_bind()
    assert esme.bound


def test_no_reconnect_mode_fails_fast() -> None:
    """reconnect=False (command-line use): a refused bind fails when_bound with BindError
    and every queued message completes as ABORTED."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, reconnect=False)
    errors: list[Failure] = []
    esme.when_bound().addErrback(errors.append)
    d = results(esme.send(OutboundMessage("1", text="x")))
    peer.accept_bind(Status.ESME_RINVPASWD)
    net.settle()
    assert errors and errors[0].check(BindError)
    assert "ESME_RINVPASWD" in str(errors[0].value)
    assert d[0].status == ABORTED
    clock.advance(100.0)
    assert len(net.peers) == 1


def test_no_reconnect_mode_reports_in_flight_as_unknown() -> None:
    """reconnect=False and the bound connection drops: in-flight parts complete as TIMEOUT
    (the SMSC may have them), queued ones as ABORTED (never sent)."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=1), reconnect=False)
    peer.accept_bind()
    first = results(esme.send(OutboundMessage("1", text="a")))
    second = results(esme.send(OutboundMessage("1", text="b")))
    peer.drop()
    assert first[0].status == TIMEOUT and second[0].status == ABORTED
    clock.advance(100.0)
    assert len(net.peers) == 1


@pytest.mark.parametrize(("bind", "pdu_type"), [("tx", BindTransmitter), ("rx", BindReceiver)])
def test_one_way_binds(bind: str, pdu_type: type[Pdu]) -> None:
    """A lone transmitter or receiver bind (command-line use); a receiver cannot send."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(bind=bind))
    assert isinstance(peer.accept_bind(), pdu_type) and esme.bound
    errors: list[Failure] = []
    d = esme.send(OutboundMessage("1", text="x"))
    d.addErrback(errors.append)
    assert bool(errors) == (bind == "rx")


def test_links_override_the_configured_bind() -> None:
    """``links`` picks the binds regardless of config.bind (command-line --bind)."""
    clock, net = Clock(), Net()
    esme = Esme(config(bind="trx"), reactor=clock, endpoint_factory=net.endpoint, links=["rx"])
    esme.startService()
    assert isinstance(net.peers[0].accept_bind(), BindReceiver) and esme.bound


@pytest.mark.parametrize(("bind", "links"), [("xx", None), ("trx", ["tx", "tx"]), ("trx", [])])
def test_unknown_bind_kind_is_refused(bind: str, links: list[str] | None) -> None:
    """A bind setting the ESME does not know fails at construction."""
    with pytest.raises(ValueError):
        Esme(config(bind=bind), reactor=Clock(), links=links)


def test_unencodable_pdu_completes_as_invalid() -> None:
    """A submit the codec refuses (here a source_addr too long, from a bad config) fails as
    INVALID, leaves the window, and does not block the next message."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(source_addr="1" * 25))
    peer.accept_bind()
    bad = results(esme.send(OutboundMessage("1", text="x")))
    good = results(esme.send(OutboundMessage("1", text="y", source="123")))
    assert bad[0].status == INVALID and bad[0].parts[0].status_name == "INVALID"
    (pdu,) = submits(peer.read())
    peer.feed(ok(pdu, "1"))
    assert good[0].ok and esme.stats["encode_errors"] == 1


# -- sending ---------------------------------------------------------------------------------


def test_send_builds_submit_and_reports_the_message_id() -> None:
    """send() -> one submit_sm from the configured source; the Deferred gets the id."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(source_addr="10658888", dest_addr_ton=1))
    peer.accept_bind()
    d = results(esme.send(OutboundMessage("8613800138000", text="Hello")))
    (pdu,) = submits(peer.read())
    assert (pdu.source_addr, pdu.destination_addr, pdu.dest_addr_ton) == (
        "10658888",
        "8613800138000",
        1,
    )
    assert pdu.short_message == b"Hello" and pdu.data_coding == 0
    assert d == []
    peer.feed(ok(pdu, "abc"))
    assert d == [SendResult((PartResult("abc", 0),))]


def test_messages_wait_in_order_while_unbound() -> None:
    """Sends before the bind queue up and go out in order once bound."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=10))
    for n in range(5):
        esme.send(OutboundMessage("1", text=f"m{n}"))
    assert peer.read()[0].command_id == BindTransceiver.command_id
    peer.feed(BindTransceiverResp(sequence_number=1))
    assert [p.short_message for p in submits(peer.read())] == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_long_message_completes_when_every_part_has() -> None:
    """A long UCS2 message goes as UDH-concatenated parts; the caller's Deferred fires
    once, after the last part's response, with every part's id in order."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=10))
    peer.accept_bind()
    text = "支付成功" * 40  # 160 UCS2 characters -> 3 parts of at most 67
    d = results(esme.send(OutboundMessage("1", text=text)))
    parts = submits(peer.read())
    assert len(parts) == 3
    assert all(p.esm_class & ESM_UDHI and p.data_coding == 0x08 for p in parts)
    refs = {split_udh(p.short_message)[0][0].data[0] for p in parts}
    assert len(refs) == 1
    peer.feed(ok(parts[2], "c"), ok(parts[0], "a"))
    assert d == []
    peer.feed(ok(parts[1], "b"))
    assert d[0].message_ids == ("a", "b", "c") and d[0].ok


def test_failed_part_is_reported_with_its_status() -> None:
    """An SMSC error on one part is that part's status and the message's status."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net)
    peer.accept_bind()
    d = results(esme.send(OutboundMessage("1", text="x")))
    (pdu,) = submits(peer.read())
    peer.feed(ok(pdu, status=Status.ESME_RINVDSTADR))
    assert not d[0].ok and d[0].status == Status.ESME_RINVDSTADR
    assert d[0].parts[0].status_name == "ESME_RINVDSTADR"


def test_unencodable_message_fails_the_deferred() -> None:
    """An explicit encoding that cannot carry the text fails at send(), nothing is queued."""
    clock, net = Clock(), Net()
    esme, _peer = start(clock, net)
    errors: list[Failure] = []
    esme.send(OutboundMessage("1", text="中", encoding=Encoding.GSM7)).addErrback(errors.append)
    assert errors and errors[0].check(ValueError)
    assert esme.stats["queued"] == 0


def test_window_and_batching() -> None:
    """No more than ``window`` submits are outstanding, and responses arriving in one chunk
    release the next submits in one write."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=4))
    peer.accept_bind()
    for n in range(12):
        esme.send(OutboundMessage("1", text=str(n)))
    first = submits(peer.read())
    assert len(first) == 4
    writes = peer.transport.writes
    clock.advance(0.01)  # the token bucket (burst = window) refills
    peer.feed(*(ok(p, str(i)) for i, p in enumerate(first)))
    assert peer.transport.writes == writes + 1
    assert [p.short_message for p in submits(peer.read())] == [b"4", b"5", b"6", b"7"]


@implementer(IWriteDescriptor)
class DescriptorTransport(CountingTransport):
    """A transport that, like Twisted's TCP connections, can be told to write at once."""

    def __init__(self, fail_write: bool = False) -> None:
        super().__init__()
        self.pushed: list[int] = []  # submit_sm PDUs buffered at each doWrite
        self.fail_write = fail_write

    def doWrite(self) -> object:
        self.pushed.append(len(submits(drain(self))))
        return ConnectionDone() if self.fail_write else None

    def fileno(self) -> int:
        return -1

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "test"


def test_large_chunk_is_answered_slice_by_slice() -> None:
    """A chunk of many responses is handled in slices of WRITE_SLICE PDUs, and what each
    slice released goes on the wire before the next slice is handled (the SMSC works in
    parallel instead of waiting for the whole window)."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=2 * WRITE_SLICE))
    peer.accept_bind()
    transport = DescriptorTransport()
    peer.proto.transport = transport
    peer.transport = transport
    for n in range(4 * WRITE_SLICE):
        esme.send(OutboundMessage("1", text=str(n)))
    clock.advance(0.01)
    first = submits(peer.read())
    assert len(first) == 2 * WRITE_SLICE
    peer.feed(*(ok(p, str(i)) for i, p in enumerate(first)))
    assert transport.pushed == [WRITE_SLICE, WRITE_SLICE]


def test_failed_immediate_write_closes_the_connection() -> None:
    """A socket error on a mid-chunk write aborts the connection (the in-flight requests are
    resent after the reconnect) instead of being ignored."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=2 * WRITE_SLICE))
    peer.accept_bind()
    transport = DescriptorTransport(fail_write=True)
    peer.proto.transport = transport
    peer.transport = transport
    for n in range(4 * WRITE_SLICE):
        esme.send(OutboundMessage("1", text=str(n)))
    clock.advance(0.01)
    first = submits(peer.read())
    peer.feed(*(ok(p, str(i)) for i, p in enumerate(first)))
    assert transport.pushed == [WRITE_SLICE]
    assert peer.proto.closing


def test_one_timer_per_connection() -> None:
    """However many requests are outstanding, the ESME keeps a constant number of delayed
    calls (the connection's one timer, plus housekeeping)."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=64))
    peer.accept_bind()
    for n in range(200):
        esme.send(OutboundMessage("1", text=str(n)))
    assert len(submits(peer.read())) == 64
    assert len(clock.getDelayedCalls()) <= 2


def test_throttling_slows_without_errors_reaching_the_caller() -> None:
    """ESME_RTHROTTLED responses pause sending and shrink the window; every message still
    succeeds, none is reported failed."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=4, throttle_backoff=1.0))
    peer.accept_bind()
    done: list[SendResult] = []
    for n in range(8):
        esme.send(OutboundMessage("1", text=str(n))).addCallback(done.append)
    batch = submits(peer.read())
    peer.feed(*(ok(p, status=Status.ESME_RTHROTTLED) for p in batch))
    assert submits(peer.read()) == []  # paused
    assert esme.stats["window"] == 2
    clock.advance(0.49)
    assert submits(peer.read()) == []
    ids = 0
    for _ in range(100):
        clock.advance(0.1)
        pending = submits(peer.read())
        assert len(pending) <= 4
        for p in pending:
            ids += 1
            peer.feed(ok(p, str(ids)))
        if len(done) == 8:
            break
    assert len(done) == 8 and all(r.ok for r in done)
    assert sorted(int(r.message_ids[0]) for r in done) == list(range(1, 9))
    assert esme.stats["core_throttled"] == 4 and esme.stats["core_throttle_pauses"] == 1


def test_dropped_connection_with_full_window_loses_nothing() -> None:
    """The connection drops with a full window: after the rebind the in-flight submits are
    resent first, in order, and every caller learns its outcome exactly once."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=4))
    peer.accept_bind()
    outcomes: list[tuple[int, SendResult]] = []
    for n in range(6):
        esme.send(OutboundMessage("1", text=str(n))).addCallback(
            lambda r, n=n: outcomes.append((n, r))
        )
    first = submits(peer.read())
    peer.feed(ok(first[1], "early"))
    peer.drop()
    clock.advance(8.0)
    peer2 = net.live()[0]
    peer2.accept_bind()
    again = submits(peer2.read())
    assert [p.short_message for p in again] == [b"0", b"2", b"3", b"4"]
    peer2.feed(*(ok(p, "r" + p.short_message.decode()) for p in again))
    clock.advance(0.01)
    for p in submits(peer2.read()):
        peer2.feed(ok(p, "r" + p.short_message.decode()))
    assert sorted(n for n, _ in outcomes) == list(range(6))
    assert all(r.ok for _, r in outcomes)
    assert dict(outcomes)[1].message_ids == ("early",)
    assert esme.stats["core_requeued_on_drop"] == 3


def test_response_timeout_reconnects_and_resends() -> None:
    """A submit without a response for response_timeout: the link is aborted, the submit
    resent after the rebind; after max_attempts timeouts the caller gets TIMEOUT."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, max_attempts=2)
    peer.accept_bind()
    d = results(esme.send(OutboundMessage("1", text="slow")))
    submits(peer.read())
    clock.advance(5.0)
    assert peer.transport.disconnected
    net.settle()
    clock.advance(8.0)
    peer2 = net.live()[0]
    peer2.accept_bind()
    assert len(submits(peer2.read())) == 1
    assert d == []
    clock.advance(5.0)
    assert d[0].status == TIMEOUT and d[0].parts[0].status_name == "TIMEOUT"
    assert esme.stats["response_timeouts"] == 2


def test_late_response_after_timeout_is_ignored() -> None:
    """A response that arrives on a connection already declared bad changes nothing."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, max_attempts=1)
    peer.accept_bind()
    d = results(esme.send(OutboundMessage("1", text="x")))
    (pdu,) = submits(peer.read())
    clock.advance(5.0)
    assert d[0].status == TIMEOUT
    peer.feed(ok(pdu, "late"))  # ignored: the connection is closing
    assert len(d) == 1


# -- keep-alive and peer requests ------------------------------------------------------------


def test_enquire_link_keepalive_and_dead_peer() -> None:
    """After enquire_link_interval of silence an enquire_link goes out; an answered one
    keeps the link, an unanswered one within response_timeout drops and reconnects it."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net)
    peer.accept_bind()
    clock.advance(30.0)
    (probe,) = peer.read()
    assert isinstance(probe, EnquireLink)
    peer.feed(EnquireLinkResp(sequence_number=probe.sequence_number))
    clock.advance(29.0)
    assert peer.read() == [] and not peer.closing
    clock.advance(1.0)
    assert isinstance(peer.read()[0], EnquireLink)
    clock.advance(5.0)
    assert peer.transport.disconnected
    assert esme.stats["dead_links"] == 1
    net.settle()
    assert not esme.bound
    clock.advance(8.0)
    net.live()[0].accept_bind()
    assert esme.bound


def test_peer_requests_are_answered() -> None:
    """enquire_link -> resp; unbind -> unbind_resp, close, and a reconnect later."""
    clock, net = Clock(), Net()
    _esme, peer = start(clock, net)
    peer.accept_bind()
    peer.feed(EnquireLink(sequence_number=0))  # some SMSCs start at 0
    assert peer.read() == [EnquireLinkResp(sequence_number=0)]
    peer.feed(Unbind(sequence_number=7))
    assert peer.read() == [UnbindResp(sequence_number=7)]
    assert peer.closing
    net.settle()
    clock.advance(8.0)
    assert len(net.live()) == 1


def test_malformed_pdu_gets_generic_nack() -> None:
    """An unknown command_id is answered by the session with generic_nack."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net)
    peer.accept_bind()
    peer.proto.dataReceived(HEADER.pack(16, 0x00000099, 0, 5))
    (nack,) = peer.read()
    assert isinstance(nack, GenericNack) and nack.sequence_number == 5
    assert nack.command_status == Status.ESME_RINVCMDID
    assert esme.stats["protocol_violations"] == 1


# -- receipts --------------------------------------------------------------------------------


def receipt_for(message_id: str, state: MessageState = MessageState.DELIVERED) -> DeliverSm:
    return receipt_pdu(
        message_id,
        state,
        source_addr="8613800000000",
        destination_addr="10658888",
        submit_date="2401010000",
        done_date="2401010001",
        sequence_number=11,
    )


def test_receipt_is_matched_to_the_message_token() -> None:
    """A delivery receipt reaches on_receipt with the token given to send()."""
    clock, net = Clock(), Net()
    got: list[tuple[Receipt, Any]] = []
    esme, peer = start(
        clock, net, config(registered_delivery=True), on_receipt=lambda r, t: got.append((r, t))
    )
    peer.accept_bind()
    esme.send(OutboundMessage("8613800000000", text="x"), token="order-1")
    (pdu,) = submits(peer.read())
    assert pdu.registered_delivery == 1
    peer.feed(ok(pdu, "0A1B"))
    peer.feed(receipt_for("0a1b"))
    assert [(r.message_id, r.delivered_ok, t) for r, t in got] == [("0a1b", True, "order-1")]
    assert peer.read() == [DeliverSmResp(sequence_number=11)]


def test_receipt_before_submit_resp_is_not_lost() -> None:
    """A receipt that overtakes its submit_sm_resp is parked and matched when the resp
    comes."""
    clock, net = Clock(), Net()
    got: list[tuple[str, Any]] = []
    esme, peer = start(
        clock,
        net,
        config(registered_delivery=True),
        on_receipt=lambda r, t: got.append((r.message_id, t)),
    )
    peer.accept_bind()
    msg = OutboundMessage("8613800000000", text="x")
    d = results(esme.send(msg))
    (pdu,) = submits(peer.read())
    peer.feed(receipt_for("77"), ok(pdu, "77"))
    assert got == [("77", msg)]
    assert d[0].ok
    assert peer.read() == [DeliverSmResp(sequence_number=11)]


def test_empty_message_id_is_tolerated() -> None:
    """An SMSC that sends no message_id: the part succeeds; its receipt has no token."""
    clock, net = Clock(), Net()
    got: list[Any] = []
    esme, peer = start(
        clock, net, config(registered_delivery=True), on_receipt=lambda r, t: got.append(t)
    )
    peer.accept_bind()
    d = results(esme.send(OutboundMessage("1", text="x")))
    (pdu,) = submits(peer.read())
    peer.proto.dataReceived(HEADER.pack(16, SubmitSmResp.command_id, 0, pdu.sequence_number))
    assert d[0].ok and d[0].message_ids == ("",)
    peer.feed(receipt_for("5"))
    assert got == []  # it may still be early: held for early_receipt_grace (30 s)
    tick(clock, 61.0, step=0.5)
    assert got == [None]
    assert esme.stats["receipts_unmatched"] == 1


def test_failing_receipt_callback_asks_for_redelivery() -> None:
    """If on_receipt raises, the receipt is answered ESME_RX_T_APPN so the SMSC retries;
    the redelivery is handed over with the same token, and a further copy is a duplicate."""
    clock, net = Clock(), Net()
    got: list[Any] = []

    def flaky(receipt: Receipt, token: Any) -> None:
        if not esme.stats["receipts_failed"]:
            raise RuntimeError("store down")
        got.append(token)

    esme, peer = start(clock, net, config(registered_delivery=True), on_receipt=flaky)
    peer.accept_bind()
    esme.send(OutboundMessage("1", text="x"), token="t")
    (pdu,) = submits(peer.read())
    peer.feed(ok(pdu, "1"))
    peer.feed(receipt_for("1"))
    (resp,) = peer.read()
    assert resp.command_status == Status.ESME_RX_T_APPN
    assert esme.stats["receipts_failed"] == 1
    peer.feed(receipt_for("1"))
    peer.feed(receipt_for("1"))
    assert [r.command_status for r in peer.read()] == [0, 0]
    assert got == ["t"] and esme.stats["receipts_duplicate"] == 1


# -- MO ----------------------------------------------------------------------------------------


def mo_parts(text: str, reference: int = 9, mode: LongMode = LongMode.UDH8) -> list[DeliverSm]:
    return [
        DeliverSm(
            sequence_number=100 + n,
            source_addr="8613800000000",
            destination_addr="10658888",
            esm_class=ESM_UDHI if seg.udhi else 0,
            data_coding=seg.data_coding,
            short_message=seg.short_message,
            tlvs=dict(seg.tlvs),
        )
        for n, seg in enumerate(segment_text(text, Encoding.GSM7, mode, reference))
    ]


def test_mo_single_part_is_delivered_and_acknowledged() -> None:
    """A plain MO reaches on_message and is acknowledged at once when it returns None;
    receipt TLVs on an ordinary MO do not make it a receipt."""
    clock, net = Clock(), Net()
    got: list[Message] = []
    receipts: list[Any] = []
    _esme, peer = start(
        clock, net, on_message=got.append, on_receipt=lambda r, t: receipts.append(r)
    )
    peer.accept_bind()
    peer.feed(
        DeliverSm(
            sequence_number=0,
            source_addr="8613800000000",
            short_message=b"BAL",
            tlvs={Tag.RECEIPTED_MESSAGE_ID: b"1\x00", Tag.MESSAGE_STATE: b"\x02"},
        )
    )
    assert [m.text() for m in got] == ["BAL"] and receipts == []
    assert peer.read() == [DeliverSmResp(sequence_number=0)]


def test_mo_parts_acked_as_they_come_and_last_held_until_accepted() -> None:
    """Concatenated MO: each part is acknowledged on arrival except the completing one,
    whose deliver_sm_resp waits for on_message's Deferred."""
    clock, net = Clock(), Net()
    accepted: list[tuple[Message, Deferred[None]]] = []

    def on_message(message: Message) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        accepted.append((message, d))
        return d

    _esme, peer = start(clock, net, on_message=on_message)
    peer.accept_bind()
    text = "x" * 300
    parts = mo_parts(text)
    assert len(parts) == 2
    peer.feed(parts[1])
    assert peer.read() == [DeliverSmResp(sequence_number=101)]
    peer.feed(parts[0])
    assert peer.read() == []
    ((message, d),) = accepted
    assert message.text() == text and message.parts == 2
    d.callback(None)
    assert peer.read() == [DeliverSmResp(sequence_number=100)]


def test_mo_refused_by_application_is_retried_by_the_smsc() -> None:
    """If on_message fails, the completing part is answered ESME_RX_T_APPN; the SMSC's
    redelivery of that part completes the message again."""
    clock, net = Clock(), Net()
    calls: list[str] = []

    def on_message(message: Message) -> Deferred[None] | None:
        calls.append(message.text())
        if len(calls) == 1:
            return fail(RuntimeError("database down"))
        return None

    esme, peer = start(clock, net, on_message=on_message)
    peer.accept_bind()
    text = "y" * 200
    first, second = mo_parts(text)
    peer.feed(first, second)
    assert peer.read() == [
        DeliverSmResp(sequence_number=100),
        DeliverSmResp(sequence_number=101, command_status=Status.ESME_RX_T_APPN),
    ]
    peer.feed(second)  # the SMSC retries the refused part only
    assert calls == [text, text]
    assert peer.read() == [DeliverSmResp(sequence_number=101)]
    assert esme.stats["mo_retried"] == 1


def test_mo_whose_on_message_raises_is_refused_for_retry() -> None:
    """on_message raising (not returning a failed Deferred) is a refusal too: the part is
    answered ESME_RX_T_APPN (§5.1.3) and nothing stays held (stopping is not delayed)."""
    clock, net = Clock(), Net()

    def on_message(message: Message) -> None:
        raise RuntimeError("handler bug")

    esme, peer = start(clock, net, on_message=on_message)
    peer.accept_bind()
    peer.feed(DeliverSm(sequence_number=3, source_addr="8613800000000", short_message=b"BAL"))
    assert peer.read() == [DeliverSmResp(sequence_number=3, command_status=Status.ESME_RX_T_APPN)]
    assert esme._held_mo == 0


def test_plain_mo_answered_when_on_message_settles() -> None:
    """A single-part MO's deliver_sm_resp waits for on_message's Deferred, in the order the
    Deferreds fire; the MO reaches on_message as a whole Message."""
    clock, net = Clock(), Net()
    pending: list[tuple[Message, Deferred[None]]] = []

    def on_message(message: Message) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        pending.append((message, d))
        return d

    esme, peer = start(clock, net, on_message=on_message)
    peer.accept_bind()
    peer.feed(
        DeliverSm(sequence_number=1, source_addr="8613800000001", short_message=b"A"),
        DeliverSm(sequence_number=2, source_addr="8613800000002", short_message=b"B"),
    )
    assert peer.read() == []
    assert [(m.source, m.payload, m.parts, m.ies) for m, _ in pending] == [
        ("8613800000001", b"A", 1, ()),
        ("8613800000002", b"B", 1, ()),
    ]
    assert esme._held_mo == 2
    pending[1][1].callback(None)
    pending[0][1].errback(RuntimeError("database down"))
    assert peer.read() == [
        DeliverSmResp(sequence_number=2),
        DeliverSmResp(sequence_number=1, command_status=Status.ESME_RX_T_APPN),
    ]
    assert esme._held_mo == 0
    assert esme.stats["mo_messages"] == 2 and esme.stats["mo_parts"] == 2


def test_data_sm_mo_is_answered_with_data_sm_resp() -> None:
    """An MO carried in data_sm (message_payload) is delivered and answered in kind."""
    clock, net = Clock(), Net()
    got: list[Message] = []
    _esme, peer = start(clock, net, on_message=got.append)
    peer.accept_bind()
    peer.feed(DataSm(sequence_number=4, source_addr="1", tlvs={Tag.MESSAGE_PAYLOAD: b"hello"}))
    assert [m.payload for m in got] == [b"hello"]
    assert peer.read() == [DataSmResp(sequence_number=4)]


def test_malformed_udh_is_refused_permanently() -> None:
    """An MO whose UDH overruns is answered ESME_RX_P_APPN (retrying cannot help)."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, on_message=lambda m: None)
    peer.accept_bind()
    peer.feed(DeliverSm(sequence_number=2, esm_class=ESM_UDHI, short_message=b"\x09\x00\x03"))
    (resp,) = peer.read()
    assert resp.command_status == Status.ESME_RX_P_APPN
    assert esme.stats["mo_invalid"] == 1


def test_incomplete_mo_expires_and_is_reported() -> None:
    """A partial set older than reassembly_timeout is dropped and counted."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(reassembly_timeout=20.0), on_message=lambda m: None)
    peer.accept_bind()
    peer.feed(mo_parts("z" * 300)[0])
    for _ in range(12):
        clock.advance(5.0)
        peer.feed(EnquireLinkResp(sequence_number=1))  # keep the link busy
    assert esme.stats["mo_expired"] == 1
    assert esme.stats["reassembly_pending"] == 0


# -- stopping --------------------------------------------------------------------------------


def test_graceful_stop_drains_the_window_then_unbinds() -> None:
    """stopService: queued messages are ABORTED at once, outstanding responses are awaited,
    then unbind, unbind_resp, close."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(window=2))
    peer.accept_bind()
    outcomes = [results(esme.send(OutboundMessage("1", text=str(n)))) for n in range(4)]
    sent = submits(peer.read())
    stopped = stop(esme)
    assert [o[0].status for o in outcomes[2:]] == [ABORTED, ABORTED]
    assert peer.read() == [] and stopped == []
    peer.feed(ok(sent[0], "a"))
    assert peer.read() == []
    peer.feed(ok(sent[1], "b"))
    (unbind,) = peer.read()
    assert isinstance(unbind, Unbind)
    peer.feed(UnbindResp(sequence_number=unbind.sequence_number))
    assert peer.closing
    net.settle()
    assert stopped == [None]
    assert [o[0].ok for o in outcomes[:2]] == [True, True]
    clock.advance(100.0)
    assert len(net.peers) == 1  # no reconnect after a stop
    assert esme.send(OutboundMessage("1", text="late")).result.status == ABORTED  # type: ignore[attr-defined]


def test_stop_waits_for_held_mo_acknowledgements() -> None:
    """An MO whose on_message is still running delays the unbind until it settles."""
    clock, net = Clock(), Net()
    pending: list[Deferred[None]] = []

    def on_message(message: Message) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        pending.append(d)
        return d

    esme, peer = start(clock, net, on_message=on_message)
    peer.accept_bind()
    peer.feed(DeliverSm(sequence_number=8, short_message=b"pay"))
    stop(esme)
    assert peer.read() == []
    pending[0].callback(None)
    out = peer.read()
    assert out[0] == DeliverSmResp(sequence_number=8) and isinstance(out[1], Unbind)


def test_stop_drain_is_bounded_by_a_timeout() -> None:
    """Outstanding requests that never get a response are given up (TIMEOUT) after
    drain_timeout, and the unbind goes out; no unbind_resp -> the connection is aborted."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(response_timeout=60.0), drain_timeout=3.0)
    peer.accept_bind()
    d = results(esme.send(OutboundMessage("1", text="x")))
    submits(peer.read())
    stopped = stop(esme)
    clock.advance(3.0)
    assert d[0].status == TIMEOUT
    assert isinstance(peer.read()[0], Unbind)
    clock.advance(60.0)
    assert peer.transport.disconnected
    net.settle()
    assert stopped == [None]


def test_stop_twice_and_restart() -> None:
    """A second stopService while stopping fires with the first; a stopped ESME can start
    again with a fresh queue."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net)
    peer.accept_bind()
    first, second = stop(esme), stop(esme)
    (unbind,) = peer.read()
    peer.feed(UnbindResp(sequence_number=unbind.sequence_number))
    net.settle()
    assert first == [None] and second == [None]
    esme.startService()
    net.live()[0].accept_bind()
    d = results(esme.send(OutboundMessage("1", text="again")))
    (pdu,) = submits(net.live()[0].read())
    net.live()[0].feed(ok(pdu, "9"))
    assert d[0].ok


def test_stop_before_bind_fails_waiters() -> None:
    """Stopping while not yet bound fails when_bound() and closes the connection."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net)
    errors: list[Failure] = []
    esme.when_bound().addErrback(errors.append)
    stopped = stop(esme)
    assert errors and errors[0].check(BindError)
    assert peer.closing
    net.settle()
    assert stopped == [None]


def test_password_never_in_logs_or_reprs() -> None:
    """The bind password appears in no repr of the config, the bind PDU or the stats."""
    clock, net = Clock(), Net()
    esme, peer = start(clock, net, config(password=Secret("s3cr3t!")))
    bind = peer.accept_bind()
    assert "s3cr3t!" not in repr(bind) + repr(esme.config) + repr(esme.stats)


# -- the outbound message model (smsc/message.py) --------------------------------------------


def build(msg: OutboundMessage, **overrides: Any) -> list[SubmitSm]:
    return build_submits(msg, config(**overrides), ReferenceAllocator(rng=random.Random(1)))


def test_text_encoding_choice() -> None:
    """GSM 7-bit when the alphabet carries the text (0x00), else UCS2 (0x08)."""
    (gsm,) = build(OutboundMessage("1", text="Hello {€}"))
    assert gsm.data_coding == 0x00 and gsm.short_message.startswith(b"Hello \x1b\x28")
    (ucs,) = build(OutboundMessage("1", text="余额"))
    assert ucs.data_coding == 0x08 and ucs.short_message == "余额".encode("utf-16-be")


def test_latin1_default_alphabet() -> None:
    """With data_coding_default latin1, text that Latin-1 carries goes as 0x03."""
    (pdu,) = build(OutboundMessage("1", text="café"), data_coding_default="latin1")
    assert pdu.data_coding == 0x03 and pdu.short_message == "café".encode("latin-1")


def test_registered_delivery_on_every_part() -> None:
    """Receipts are requested on every part of a long message (config or per message)."""
    parts = build(OutboundMessage("1", text="a" * 400), registered_delivery=True)
    assert len(parts) == 3 and all(p.registered_delivery == 1 for p in parts)
    parts = build(OutboundMessage("1", text="a", registered_delivery=False))
    assert parts[0].registered_delivery == 0


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        (LongMode.UDH16, lambda p: p.esm_class & ESM_UDHI and p.short_message[1] == 0x08),
        (LongMode.SAR, lambda p: Tag.SAR_MSG_REF_NUM in p.tlvs and not p.esm_class & ESM_UDHI),
    ],
)
def test_long_modes(mode: LongMode, check: Callable[[SubmitSm], Any]) -> None:
    """UDH16 and SAR long modes produce their concatenation markers on every part."""
    parts = build(OutboundMessage("1", text="b" * 300, long_mode=mode))
    assert len(parts) == 2 and all(check(p) for p in parts)


def test_payload_mode_sends_one_pdu() -> None:
    """message_payload mode: one submit_sm, empty short_message."""
    (pdu,) = build(OutboundMessage("1", text="c" * 500), long_messages="payload")
    assert pdu.short_message == b"" and len(pdu.tlvs[Tag.MESSAGE_PAYLOAD]) == 500


def test_binary_with_command_packet_ie() -> None:
    """Binary data (OTA): data_coding as given, the extra IE in the UDH, UDHI set."""
    msg = OutboundMessage(
        "1",
        data=b"\x02\x70\x00",
        data_coding=0xF6,
        protocol_id=0x7F,
        extra_ies=(InformationElement(IEI_COMMAND_PACKET),),
    )
    (pdu,) = build(msg)
    assert pdu.data_coding == 0xF6 and pdu.protocol_id == 0x7F and pdu.esm_class & ESM_UDHI
    ies, payload = split_udh(pdu.short_message)
    assert [ie.iei for ie in ies] == [IEI_COMMAND_PACKET] and payload == b"\x02\x70\x00"


def test_concat_reference_rotates_per_destination() -> None:
    """Each long message to a destination gets the next reference; single parts use none."""
    refs = ReferenceAllocator(rng=random.Random(1))
    cfg = config()

    def ref(dest: str) -> int:
        parts = build_submits(OutboundMessage(dest, text="d" * 200), cfg, refs)
        return split_udh(parts[0].short_message)[0][0].data[0]

    a1, a2 = ref("A"), ref("A")
    assert a2 == (a1 + 1) % 256
    build_submits(OutboundMessage("A", text="short"), cfg, refs)
    assert ref("A") == (a2 + 1) % 256


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text": None, "data": None},
        {"text": "x", "data": b"x"},
        {"text": "x", "encoding": Encoding.BINARY},
        {"data": b"x", "encoding": Encoding.UCS2},
        {"text": "x", "data_coding": 4},
        {"text": "x", "esm_class": 256},
        {"text": "x", "validity_period": "1"},
        {"text": "x", "source": "1" * 21},
    ],
)
def test_outbound_message_validation(kwargs: dict[str, Any]) -> None:
    """Contradictory or out-of-range messages are refused at construction."""
    with pytest.raises(ValueError):
        OutboundMessage("1", **kwargs)
    with pytest.raises(ValueError):
        OutboundMessage("1" * 21, text="x")


def test_result_collector_completes_once() -> None:
    """The result appears when the last part is in; a part cannot complete twice."""
    collector = ResultCollector(2)
    assert collector.set(1, PartResult("b", 0)) is None
    with pytest.raises(ValueError):
        collector.set(1, PartResult("b", 0))
    result = collector.set(0, PartResult("a", Status.ESME_RSYSERR))
    assert result is not None and result.message_ids == ("a", "b")
    assert result.status == Status.ESME_RSYSERR and not result.ok
    assert status_text(ABORTED) == "ABORTED" and status_text(0) == "ESME_ROK"
