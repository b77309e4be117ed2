"""Benchmark: smsc.codec against smpplib on the hot SMPP 3.4 PDUs.

Prints the median microseconds per operation for submit_sm (60-octet message, no TLVs),
submit_sm_resp and deliver_sm (a delivery receipt with receipted_message_id and
message_state TLVs), for ours and smpplib's equivalent in the same run, and the ratio.

* encode: an existing PDU object to octets (``encode(pdu)`` / ``pdu.generate()``);
* decode: octets to a PDU object (``decode(raw)`` / ``smpplib.smpp.parse_pdu(raw)``);
* build+encode: construct the PDU object from field values, then encode it.

Each figure is the median over ``--batches`` batches of ``--batch`` calls, timed with
``time.perf_counter_ns``. Usage: ``python bench/pdu_codec.py [--batch N] [--batches N]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import smpplib.smpp

from smsc.codec import decode, encode
from smsc.pdu import DeliverSm, MessageState, SubmitSm, SubmitSmResp, Tag

TEXT = b"Your wallet was credited with 100.00 CNY. Balance: 1234.56 ok"[:60]
RECEIPT = (
    b"id:0A1B2C3D sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 "
    b"stat:DELIVRD err:000 text:Your wallet was"
)


def median_us(fn: Callable[[], object], batch: int, batches: int) -> float:
    """Median µs per call of ``fn`` over ``batches`` timed batches of ``batch`` calls."""
    for _ in range(batch // 10 + 1):  # warm-up
        fn()
    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(batches):
            loop = range(batch)
            start = time.perf_counter_ns()
            for _ in loop:
                fn()
            samples.append((time.perf_counter_ns() - start) / batch / 1000)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(samples)


def _theirs(name: str, seq: int, **fields: Any) -> Any:
    pdu = smpplib.smpp.make_pdu(name, sequence=seq, **fields)
    pdu.sequence = seq
    return pdu


SUBMIT_FIELDS: dict[str, Any] = {
    "source_addr_ton": 5,
    "source_addr_npi": 0,
    "source_addr": "95588",
    "dest_addr_ton": 1,
    "dest_addr_npi": 1,
    "destination_addr": "8613800138000",
    "registered_delivery": 0,
    "data_coding": 0,
    "short_message": TEXT,
}
DELIVER_FIELDS: dict[str, Any] = {
    "source_addr_ton": 1,
    "source_addr_npi": 1,
    "source_addr": "8613800138000",
    "dest_addr_ton": 0,
    "dest_addr_npi": 0,
    "destination_addr": "95588",
    "esm_class": 0x04,
    "short_message": RECEIPT,
}


def cases() -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """(name, build ours, build smpplib's) for each benchmarked PDU."""
    return [
        (
            "submit_sm",
            lambda: SubmitSm(sequence_number=7, **SUBMIT_FIELDS),
            lambda: _theirs("submit_sm", 7, **SUBMIT_FIELDS),
        ),
        (
            "submit_sm_resp",
            lambda: SubmitSmResp(7, 0, "0A1B2C3D"),
            lambda: _theirs("submit_sm_resp", 7, message_id="0A1B2C3D"),
        ),
        (
            "deliver_sm",
            lambda: DeliverSm(
                sequence_number=9,
                **DELIVER_FIELDS,
                tlvs={  # in smpplib's order, so that the octets compare equal
                    Tag.MESSAGE_STATE: bytes([MessageState.DELIVERED]),
                    Tag.RECEIPTED_MESSAGE_ID: b"0A1B2C3D\0",
                },
            ),
            lambda: _theirs(
                "deliver_sm",
                9,
                receipted_message_id="0A1B2C3D",
                message_state=MessageState.DELIVERED,
                **DELIVER_FIELDS,
            ),
        ),
    ]


def main() -> None:
    """Run every case and print one line per (PDU, operation)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2000, help="calls per timed batch")
    parser.add_argument("--batches", type=int, default=31, help="timed batches per figure")
    args = parser.parse_args()
    small = max(1, args.batch // 10)  # smpplib is ~10x slower: keep its batches short

    print(f"median µs per operation ({args.batches} batches; ours {args.batch}, smpplib {small})")
    print(f"{'PDU':<16}{'operation':<14}{'stkpay':>9}{'smpplib':>10}{'ratio':>8}")
    for name, build_ours, build_theirs in cases():
        ours, theirs = build_ours(), build_theirs()
        raw = encode(ours)
        if theirs.generate() != raw:
            raise SystemExit(f"{name}: smpplib and stkpay octets differ; fix before timing")
        rows = [
            ("encode", lambda o=ours: encode(o), lambda t=theirs: t.generate()),
            (
                "decode",
                lambda r=raw: decode(r),
                lambda r=raw: smpplib.smpp.parse_pdu(r, sequence=0),
            ),
            (
                "build+encode",
                lambda b=build_ours: encode(b()),
                lambda b=build_theirs: b().generate(),
            ),
        ]
        for operation, fn_ours, fn_theirs in rows:
            us_ours = median_us(fn_ours, args.batch, args.batches)
            us_theirs = median_us(fn_theirs, small, args.batches)
            print(
                f"{name:<16}{operation:<14}{us_ours:>9.2f}{us_theirs:>10.2f}"
                f"{us_theirs / us_ours:>7.1f}x"
            )
    session_figures(args.batch, args.batches)


def session_figures(batch: int, batches: int) -> None:
    """µs per PDU through smsc.session: a 64-PDU read of submit_sm, and send + drain."""
    from smsc.pdu import BindTransceiver, BindTransceiverResp
    from smsc.session import Role, SmppSession

    smsc = SmppSession(Role.SMSC)
    smsc.receive_data(encode(BindTransceiver(1, system_id="esme")))
    smsc.send(BindTransceiverResp(1, 0, "smsc"))
    esme = SmppSession(Role.ESME)
    esme.send(BindTransceiver(system_id="esme"))
    esme.receive_data(smsc.data_to_send())
    window = 64
    chunk = b"".join(
        encode(SubmitSm(sequence_number=i + 1, **SUBMIT_FIELDS)) for i in range(window)
    )
    per_read = median_us(lambda: smsc.receive_data(chunk), max(1, batch // window), batches)
    print(f"{'session':<16}{'receive_data':<14}{per_read / window:>9.2f}  (submit_sm, 64 per read)")

    def send_one() -> None:
        esme.send(SubmitSm(**SUBMIT_FIELDS))
        esme.data_to_send()

    print(
        f"{'session':<16}{'send+drain':<14}{median_us(send_one, batch, batches):>9.2f}"
        "  (submit_sm, incl. building it)"
    )


if __name__ == "__main__":
    main()
