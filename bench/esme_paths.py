"""Benchmark: CPU per message on the ESME's hot paths, in process (no sockets, no reactor).

An :class:`smsc.esme.Esme` (a transceiver bind, as ``stkpay serve`` runs it, no
``on_receipt``) is connected to an in-memory transport (it keeps what is written) and bound
through a real bind_transceiver exchange, on a :class:`twisted.internet.task.Clock` that the
bench moves forward 1 ms per message (so the token bucket refills as at 1000 msg/s). Paths:

* ``MO in``: a deliver_sm chunk fed to ``dataReceived`` -> ``on_message`` (returns a pending
  Deferred, as the gateway's worker hand-off does) -> the Deferred fired (as ``_carry_out``
  does) -> deliver_sm_resp written. Two MO shapes: the card's secured packet (UDH ``02 70
  00``, TP-PID 0x7F, DCS 0xF6, 8-bit, as ``simcard.fleet`` sends it) and a plain GSM text MO.
* ``MT out``: ``esme.send(OutboundMessage(...))`` built as ``stkpay.gateway._send`` builds it
  -> submit_sm(s) written -> the submit_sm_resp(s) fed back -> the send's Deferred fired.
  Shapes: the Chinese confirmation (UCS2, one part), a longer Chinese text (UCS2, two parts,
  UDH8 concatenation) and the OTA CREDIT FOR LOAD (``user_data``: UDH ``02 70 00`` + a
  96-octet command packet, TP-PID 0x7F, DCS 0xF6), plus an ASCII text (GSM 7-bit).

Each figure is the median over ``--rounds`` rounds of ``--count`` messages of the process's
CPU time (``time.thread_time``; the bench is single-threaded) per message, in µs; the
garbage collector is off while timing. Each round checks what it timed: one 17-octet
deliver_sm_resp written per MO, every MT resolved as accepted with the expected part count.
The bench's own work (encoding the submit_sm_resp it feeds back, reading the written
octets) is inside the MT figures, the same before and after a change.

Usage: ``python bench/esme_paths.py [--count N] [--rounds N] [--profile PATH]``; with
``--profile`` one extra round of every path runs under cProfile and the top functions by
own time are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from smsc.codec import HEADER, encode
from smsc.esme import Esme
from smsc.message import OutboundMessage, SendResult
from smsc.pdu import (
    ESM_UDHI,
    BindTransceiverResp,
    DeliverSm,
    SubmitSmResp,
)
from smsc.reassembly import Message
from stkpay.config import SmscConfig

CONFIRMATION = "充值成功：100.00元，卡内余额 200.00元，现金账户余额 800.00元"
LONG_CONFIRMATION = (
    CONFIRMATION + "。如非本人操作，请立即致电客服 95588 冻结钱包并更换卡片。谢谢使用！"
)
ASCII_TEXT = "Top-up OK: 100.00 CNY, card balance 200.00, cash account 800.00"
TP_PID_SIM_DATA_DOWNLOAD = 0x7F
DCS_CLASS2_8BIT = 0xF6
OTA_USER_DATA = (bytes((0x02, 0x70, 0x00)) + bytes(range(0x10, 0x10 + 96)),)
SUBSCRIBER = "8613800138000"
SHORT_CODE = "10658888"


class _Transport:
    """What the ESME needs of a transport; keeps the written octets."""

    def __init__(self) -> None:
        self._written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._written.append(data)

    def take(self) -> bytes:
        """Everything written since the last take."""
        data = b"".join(self._written)
        self._written.clear()
        return data

    def loseConnection(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def abortConnection(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def getPeer(self) -> object:  # noqa: N802 - Twisted's name
        return None


class _Endpoint:
    """Connects the ESME's protocol to an in-memory transport at once."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def connect(self, factory: Any) -> Deferred[Any]:
        proto = factory.buildProtocol(None)
        transport = _Transport()
        proto.makeConnection(transport)
        self.bench.proto = proto
        self.bench.transport = transport
        d: Deferred[Any] = Deferred()
        d.callback(proto)
        return d


class Bench:
    """A bound ESME on a fake transport, and the app's side of the MO hand-off."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.proto: Any = None
        self.transport = _Transport()
        self.pending: list[Deferred[None]] = []
        self.messages = 0
        config = SmscConfig(window=10, throughput=100_000.0)
        self.esme = Esme(
            config,
            reactor=self.clock,
            on_message=self.on_message,
            endpoint_factory=lambda kind: _Endpoint(self),
        )
        self.esme.startService()
        bind = self.transport.take()
        (_, _, _, seq) = HEADER.unpack_from(bind)
        cast(Any, self.proto).dataReceived(
            encode(BindTransceiverResp(sequence_number=seq, system_id="S"))
        )
        assert self.esme.bound

    def on_message(self, message: Message) -> Deferred[None]:
        self.messages += 1
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def tick(self) -> float:
        self.clock.rightNow += 0.001
        return self.clock.rightNow


def _mo_pdus(udh: bool, count: int) -> list[bytes]:
    out = []
    for seq in range(1, count + 1):
        if udh:
            pdu = DeliverSm(
                sequence_number=seq,
                source_addr=SUBSCRIBER,
                destination_addr=SHORT_CODE,
                esm_class=ESM_UDHI,
                protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
                data_coding=DCS_CLASS2_8BIT,
                short_message=bytes((0x02, 0x70, 0x00)) + bytes(range(40, 40 + 80)),
            )
        else:
            pdu = DeliverSm(
                sequence_number=seq,
                source_addr=SUBSCRIBER,
                destination_addr=SHORT_CODE,
                short_message=b"TOPUP 10000 1234",
            )
        out.append(encode(pdu))
    return out


def mo_round(bench: Bench, chunks: list[bytes]) -> float:
    """CPU µs per MO: deliver_sm in, on_message, its Deferred fired, deliver_sm_resp out."""
    proto = bench.proto
    pending = bench.pending
    transport = bench.transport
    tick = bench.tick
    start = time.thread_time()
    for chunk in chunks:
        tick()
        proto.dataReceived(chunk)
        pending.pop().callback(None)
    elapsed = time.thread_time() - start
    written = transport.take()
    assert len(written) == 17 * len(chunks), len(written)
    return elapsed / len(chunks) * 1e6


def _mt_message(kind: str) -> OutboundMessage:
    if kind == "ota":
        return OutboundMessage(
            SUBSCRIBER,
            user_data=OTA_USER_DATA,
            protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
            data_coding=DCS_CLASS2_8BIT,
        )
    text = {"zh": CONFIRMATION, "zh2": LONG_CONFIRMATION, "ascii": ASCII_TEXT}[kind]
    return OutboundMessage(SUBSCRIBER, text=text)


_PARTS = {"zh": 1, "zh2": 2, "ota": 1, "ascii": 1}


def mt_round(bench: Bench, kind: str, count: int) -> float:
    """CPU µs per MT: OutboundMessage built, sent, submit_sm written, resp fed, resolved."""
    proto = bench.proto
    transport = bench.transport
    esme = bench.esme
    tick = bench.tick
    parts = _PARTS[kind]
    results: list[SendResult] = []
    done = results.append
    unpack = HEADER.unpack_from
    resp = SubmitSmResp
    message_id = 1000
    start = time.thread_time()
    for _ in range(count):
        tick()
        d = esme.send(_mt_message(kind))
        d.addCallback(done)
        data = transport.take()
        answers = []
        off = 0
        while off < len(data):
            (length, _, _, seq) = unpack(data, off)
            off += length
            message_id += 1
            answers.append(encode(resp(sequence_number=seq, message_id=str(message_id))))
        proto.dataReceived(b"".join(answers))
    elapsed = time.thread_time() - start
    assert len(results) == count and all(r.ok and len(r.parts) == parts for r in results)
    return elapsed / count * 1e6


def measure(fn: Callable[[], float], rounds: int) -> tuple[float, float, float]:
    """(median, min, max) of ``rounds`` calls of ``fn`` (each returns µs per message)."""
    fn()  # warm-up
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            samples.append(fn())
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(samples), min(samples), max(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--profile", metavar="PATH", help="cProfile one round of each path")
    args = parser.parse_args(argv)
    bench = Bench()
    count = args.count
    mo_udh = _mo_pdus(True, count)
    mo_text = _mo_pdus(False, count)
    paths: list[tuple[str, Callable[[], float]]] = [
        ("MO in: secured packet (UDH, 8-bit)", lambda: mo_round(bench, mo_udh)),
        ("MO in: plain GSM text", lambda: mo_round(bench, mo_text)),
        ("MT out: confirmation (UCS2, 1 part)", lambda: mt_round(bench, "zh", count)),
        ("MT out: long text (UCS2, 2 parts)", lambda: mt_round(bench, "zh2", count)),
        ("MT out: OTA user_data (8-bit, UDH)", lambda: mt_round(bench, "ota", count)),
        ("MT out: ASCII text (GSM 7-bit)", lambda: mt_round(bench, "ascii", count)),
    ]
    print(f"ESME per-message CPU, µs (median of {args.rounds} rounds x {count}; min..max)")
    for name, fn in paths:
        med, lo, hi = measure(fn, args.rounds)
        print(f"  {name:<40} {med:7.1f}   ({lo:.1f}..{hi:.1f})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _, fn in paths:
            fn()
        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
