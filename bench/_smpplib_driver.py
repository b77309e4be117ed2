"""smpplib's ``Client`` under the closed-loop submit_sm load of ``bench/smpp_throughput.py``.

Run as a child process by the bench (one run per table row), so that smpplib gets a fresh
interpreter and its CPU time is its own. The client is driven the way smpplib's README
drives it: ``client.listen()`` in one thread (it reads submit_sm_resp, answers every
deliver_sm, calls the handlers), ``client.send_message(...)`` in a loop in another. The
only addition is a semaphore of ``--window`` permits, taken before each ``send_message``
and given back by ``message_sent_handler``: at most ``window`` requests are outstanding
(SMPP v3.4 §2.6 / §3.1 "window"), exactly as for the stkpay ESME in the same bench, so
latency is not queueing delay and the SMSC's queue is never flooded.

Latency: ``perf_counter`` just before ``send_message`` (which builds, encodes and writes
the submit_sm, §4.4.1) to ``message_sent_handler`` for its submit_sm_resp (§4.4.2), matched
by sequence number. Receipts: deliver_sm with esm_class bit 2 (§5.2.12) counted in
``message_received_handler``; smpplib answers them with deliver_sm_resp itself.

Prints one JSON object on stdout: counts, elapsed seconds, throughput, latency percentiles,
receipts received, and the CPU seconds of this process and (``--sim-pid``) of the SMSC over
the measured interval, and the busy CPU seconds of the whole machine (/proc/stat) over it.
Exit status 0 also when the run failed: ``error`` says why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_ESM_RECEIPT = 0x04  # §5.2.12 esm_class bits 5-2 = 0001: SMSC delivery receipt


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:8]]
    return (sum(values) - values[3] - values[4]) / _CLK_TCK


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of an ascending list by nearest rank; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


class _Loop:
    """The shared state of the sending thread and the listener thread."""

    def __init__(self, window: int) -> None:
        self.permits = threading.Semaphore(window)
        self.lock = threading.Lock()
        # sequence_number -> (time before send_message, measured?)
        self.starts: dict[int, tuple[float, bool]] = {}
        self.early: dict[int, float] = {}  # submit_sm_resp seen before send_message returned
        self.latencies: list[float] = []
        self.issued = 0
        self.answered = 0
        self.ok = 0
        self.failed = 0
        self.receipts = 0
        self.listener_error: str | None = None

    def sent(self, pdu: Any, **_: Any) -> None:
        """message_sent_handler: a submit_sm_resp arrived."""
        end = time.perf_counter()
        with self.lock:
            self.answered += 1
            if int(pdu.status) == smpplib.consts.SMPP_ESME_ROK:
                self.ok += 1
            else:
                self.failed += 1
            started = self.starts.pop(pdu.sequence, None)
            if started is None:
                self.early[pdu.sequence] = end
            elif started[1]:
                self.latencies.append(end - started[0])
        self.permits.release()

    def received(self, pdu: Any, **_: Any) -> int:
        """message_received_handler: a deliver_sm (receipt or MO); answered ESME_ROK."""
        if getattr(pdu, "esm_class", 0) & _ESM_RECEIPT:
            with self.lock:
                self.receipts += 1
        return int(smpplib.consts.SMPP_ESME_ROK)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Bind, run the closed loop, wait for receipts, unbind; the figures as a dict."""
    logger_name = "bench.smpplib"
    logging.getLogger(logger_name).setLevel(logging.ERROR)
    client = smpplib.client.Client(
        args.host, args.port, timeout=10, logger_name=logger_name, allow_unknown_opt_params=True
    )
    loop = _Loop(args.window)
    client.set_message_sent_handler(loop.sent)
    client.set_message_received_handler(loop.received)
    client.set_error_pdu_handler(lambda pdu: None)  # counted in loop.sent by status
    client.connect()
    client.bind_transceiver(system_id=args.system_id, password=args.password)

    def listen() -> None:
        try:
            client.listen()
        except smpplib.exceptions.ConnectionError:
            pass  # the SMSC closed the connection after our unbind (or dropped it)
        except Exception as exc:  # smpplib's PDUError and the like end its listen()
            loop.listener_error = f"{type(exc).__name__}: {exc}"
        if loop.listener_error is None and client.state != smpplib.consts.SMPP_CLIENT_STATE_OPEN:
            loop.listener_error = "connection closed"
        loop.permits.release(args.window)  # wake the sender if it waits

    listener = threading.Thread(target=listen, name="smpplib-listen", daemon=True)
    listener.start()
    text = ("x" * args.length).encode("ascii")
    destinations = [f"86138{n:08d}" for n in range(10)]
    registered = 1 if args.receipts else 0
    t_start = cpu_start = sim_start = busy_start = 0.0
    deadline = float("inf")
    error: str | None = None
    measuring = False
    answered_at_start = stop_at = 0
    began = time.perf_counter()
    i = 0
    while True:
        if not loop.permits.acquire(timeout=30):
            error = "no submit_sm_resp for 30 s"
            break
        if loop.listener_error is not None:
            error = loop.listener_error
            break
        now = time.perf_counter()
        if not measuring and (i >= args.warmup or now - began >= args.warmup_seconds):
            # Wait for the warm-up's responses so that the measured interval is a closed loop.
            for _ in range(args.window - 1):
                loop.permits.acquire(timeout=30)
            for _ in range(args.window - 1):
                loop.permits.release()
            measuring = True
            with loop.lock:
                answered_at_start = loop.answered
            t_start = time.perf_counter()
            cpu_start = cpu_seconds(os.getpid())
            busy_start = machine_busy_seconds()
            sim_start = cpu_seconds(args.sim_pid) if args.sim_pid else 0.0
            deadline = t_start + args.seconds
            stop_at = i + args.messages
        elif measuring and (i >= stop_at or now >= deadline):
            loop.permits.release()
            break
        start = time.perf_counter()
        pdu = client.send_message(
            source_addr_ton=0,
            source_addr_npi=0,
            source_addr="10658888",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=destinations[i % 10],
            short_message=text,
            data_coding=0,
            registered_delivery=registered,
        )
        i += 1
        with loop.lock:
            loop.issued += 1
            end = loop.early.pop(pdu.sequence, None)
            if end is None:
                loop.starts[pdu.sequence] = (start, measuring)
            elif measuring:
                loop.latencies.append(end - start)
    # Drain: every permit back means every request was answered.
    for _ in range(args.window):
        if not loop.permits.acquire(timeout=30):
            error = error or "responses missing at the end"
            break
    t_end = time.perf_counter()
    cpu_end = cpu_seconds(os.getpid())
    busy_end = machine_busy_seconds()
    sim_end = cpu_seconds(args.sim_pid) if args.sim_pid else 0.0
    if args.receipts and error is None:
        wait_until = time.monotonic() + args.receipt_timeout
        while loop.receipts < loop.ok and time.monotonic() < wait_until:
            time.sleep(0.05)
    with contextlib.suppress(smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError):
        client.send_pdu(smpplib.smpp.make_pdu("unbind", client=client))
    listener.join(10)
    client.disconnect()
    with loop.lock:
        latencies = sorted(loop.latencies)
        count = loop.answered - answered_at_start
        elapsed = t_end - t_start if t_start else 0.0
        return {
            "client": "smpplib",
            "window": args.window,
            "receipts_requested": bool(args.receipts),
            "issued": loop.issued,
            "ok": loop.ok,
            "failed": loop.failed,
            "measured": count,
            "elapsed": elapsed,
            "rate": count / elapsed if elapsed > 0 else 0.0,
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "receipts": loop.receipts,
            "cpu": cpu_end - cpu_start,
            "sim_cpu": sim_end - sim_start,
            "machine_busy": busy_end - busy_start,
            "error": error,
        }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print the JSON line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--system-id", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--window", type=int, default=1)
    p.add_argument("--messages", type=int, default=50_000, help="measured messages at most")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds at most")
    p.add_argument("--warmup", type=int, default=500, help="warm-up messages at most")
    p.add_argument("--warmup-seconds", type=float, default=0.5, help="warm-up seconds at most")
    p.add_argument("--length", type=int, default=60)
    p.add_argument("--receipts", action="store_true")
    p.add_argument("--receipt-timeout", type=float, default=30.0)
    p.add_argument("--sim-pid", type=int, default=0)
    args = p.parse_args(argv)
    try:
        result = run(args)
    except (OSError, smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError) as exc:
        result = {"client": "smpplib", "window": args.window, "error": f"{exc}"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
