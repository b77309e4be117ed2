"""Tests of stkpay/cmd_smpp.py: ``stkpay smpp send|listen`` against ``stkpay smsc-sim``.

Both sides run as subprocesses (``smpp send`` runs the global reactor with task.react), the
simulator's HTTP control API (``GET /mt``, ``POST /mo``, ``GET /stats``) checks what went
over the wire. Exit statuses: 0 success, 1 a bind failure / refused part / lost link,
2 a usage error caught before connecting.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stkpay.test_cmd_sim import STKPAY, SimProcess, clean_env, stkpay

SYSTEM_ID = "cli"
PASSWORD = "clipw"
SHORT_CODE = "1065"
SERVICE = "10650001"  # an MO to it goes to the cli account
LONG_CHINESE = "移动手机钱包长短信互通测试，" * 12  # 168 UCS2 characters: 3 parts
GSM_TEXT = "Hello from stkpay: 100 € {ok} [1/1]"  # with GSM 03.38 extension characters


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One simulator for the module: account cli/clipw serving short code 1065."""
    process = SimProcess(
        tmp_path_factory.mktemp("sim"),
        "--system-id",
        SYSTEM_ID,
        "--password",
        PASSWORD,
        "--short-code",
        SHORT_CODE,
        "--stats-interval",
        "0",
    )
    yield process
    assert process.stop() == 0, process.text
    assert PASSWORD not in process.text


def smpp(cwd: Path, action: str, smsc: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``stkpay smpp ACTION --smsc SMSC`` as cli/clipw with ``args``."""
    return stkpay(
        cwd,
        "smpp",
        action,
        "--smsc",
        smsc,
        "--system-id",
        SYSTEM_ID,
        "--password",
        PASSWORD,
        *args,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each line of ``text`` decoded as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in text.splitlines()]


def free_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def one_line(err: str) -> str:
    """The single stderr line of a failed run (asserting there is exactly one, no traceback)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- send -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "text", "parts"),
    [("8613900000101", GSM_TEXT, 1), ("8613900000102", LONG_CHINESE, 3)],
)
def test_send_with_receipt_prints_parts_then_receipts(
    sim: SimProcess, tmp_path: Path, phone: str, text: str, parts: int
) -> None:
    """send --receipt: one JSON line per part (its message id, ESME_ROK) first, then one
    receipt per part naming those ids, exit 0; the handset got the text reassembled."""
    run = smpp(
        tmp_path,
        "send",
        sim.smsc,
        "--from",
        SHORT_CODE,
        "--to",
        phone,
        "--text",
        text,
        "--receipt",
        "--wait",
        "10",
    )
    assert (run.returncode, run.stderr) == (0, "")
    lines = json_lines(run.stdout)
    part_lines, receipt_lines = lines[:parts], lines[parts:]
    assert [(p["part"], p["parts"], p["status"]) for p in part_lines] == [
        (n, parts, "ESME_ROK") for n in range(1, parts + 1)
    ]
    ids = [p["message_id"] for p in part_lines]
    assert len(set(ids)) == parts and all(ids)
    assert sorted(r["receipt"]["message_id"] for r in receipt_lines) == sorted(ids)
    assert {r["receipt"]["stat"] for r in receipt_lines} == {"DELIVRD"}
    (delivered,) = sim.mt(phone)
    assert delivered["text"] == text
    assert [p["message_id"] for p in delivered["parts"]] == ids
    assert {p["registered_delivery"] for p in delivered["parts"]} == {1}
    assert delivered["from"] == SHORT_CODE


def test_send_hex_on_a_transmitter_bind(sim: SimProcess, tmp_path: Path) -> None:
    """--hex with --data-coding over --bind tx: one part, no receipt asked or printed; the
    handset got exactly those octets with that data_coding, over a transmitter bind."""
    phone = "8613900000103"
    run = smpp(
        tmp_path,
        "send",
        sim.smsc,
        "--bind",
        "tx",
        "--from",
        SHORT_CODE,
        "--to",
        phone,
        "--hex",
        "02700000150d",
        "--data-coding",
        "0xF6",
    )
    assert (run.returncode, run.stderr) == (0, "")
    (line,) = json_lines(run.stdout)
    assert (line["part"], line["parts"], line["status"]) == (1, 1, "ESME_ROK")
    (delivered,) = sim.mt(phone)
    assert (delivered["hex"], delivered["data_coding"], delivered["text"]) == (
        "02700000150d",
        0xF6,
        None,
    )
    assert delivered["parts"][0]["registered_delivery"] == 0
    deadline = time.monotonic() + 5
    while f"bind transmitter system_id={SYSTEM_ID}" not in sim.text:
        assert time.monotonic() < deadline, sim.text
        time.sleep(0.02)


def test_bad_password_is_one_line_naming_the_refusal(sim: SimProcess, tmp_path: Path) -> None:
    """A wrong password: exit 1, one stderr line naming ESME_RINVPASWD (not the password),
    nothing on stdout, no traceback."""
    run = stkpay(
        tmp_path,
        "smpp",
        "send",
        "--smsc",
        sim.smsc,
        "--system-id",
        SYSTEM_ID,
        "--password",
        "wrong1",
        "--to",
        "8613900000104",
        "--text",
        "x",
    )
    assert run.returncode == 1
    line = one_line(run.stderr)
    assert line.startswith("stkpay: ") and "ESME_RINVPASWD" in line
    assert "wrong1" not in run.stderr
    assert run.stdout == ""
    assert sim.mt("8613900000104") == []


def test_unreachable_smsc_is_one_line(tmp_path: Path) -> None:
    """Nobody listening: exit 1 with one line saying it cannot connect."""
    run = smpp(tmp_path, "send", f"127.0.0.1:{free_port()}", "--to", "1", "--text", "x")
    assert run.returncode == 1
    assert "cannot connect" in one_line(run.stderr)
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["send", "--bind", "tx", "--receipt", "--to", "1", "--text", "x"], "--receipt"),
        (["listen", "--bind", "rx", "--echo"], "--echo"),
        (["send", "--to", "1", "--hex", "zz"], "--hex"),
        (["send", "--to", "1", "--encoding", "binary", "--text", "x"], "--encoding"),
    ],
)
def test_impossible_requests_are_refused_before_connecting(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    """What a bind type cannot do (--receipt on a transmitter, --echo on a receiver) and a
    bad --hex: exit 2 with one line naming the flag, before any connection is tried (the
    SMSC address is unreachable, which would otherwise exit 1)."""
    action, *rest = args
    run = smpp(tmp_path, action, f"127.0.0.1:{free_port()}", *rest)
    assert run.returncode == 2, run.stderr
    assert fragment in one_line(run.stderr)


@pytest.mark.parametrize("smsc", ["nohost", "127.0.0.1:0", "127.0.0.1:99999", ":2775", "h:x"])
def test_bad_smsc_value_is_a_usage_error(tmp_path: Path, smsc: str) -> None:
    """--smsc must be HOST:PORT with a port 1..65535: exit 2, one line naming --smsc."""
    run = smpp(tmp_path, "send", smsc, "--to", "1", "--text", "x")
    assert run.returncode == 2
    assert "--smsc" in one_line(run.stderr)


# -- listen -----------------------------------------------------------------------------------


class Listener:
    """``stkpay smpp listen`` running in the background."""

    def __init__(self, cwd: Path, smsc: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [
                *STKPAY,
                "smpp",
                "listen",
                "--smsc",
                smsc,
                "--system-id",
                SYSTEM_ID,
                "--password",
                PASSWORD,
                *args,
            ],
            cwd=cwd,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, timeout: float = 20.0) -> tuple[int, str, str]:
        """Wait for the exit: (status, stdout, stderr); killed after ``timeout``."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=5)
            raise AssertionError(f"listen did not exit: {out}{err}") from None
        return self.proc.returncode, out, err


def wait_for_bind(sim: SimProcess, count: int, listener: Listener, timeout: float = 10.0) -> None:
    """Until the simulator has ``count`` bound connections of the cli account."""
    deadline = time.monotonic() + timeout
    while True:
        binds = sim.api("GET", "/stats")["binds"]
        if sum(b["system_id"] == SYSTEM_ID and b["bound_at"] for b in binds) >= count:
            return
        if listener.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("listen did not bind: " + repr(listener.finish()))
        time.sleep(0.05)


def test_listen_prints_reassembled_mo_and_echoes(sim: SimProcess, tmp_path: Path) -> None:
    """listen --count 2 --echo: two MO injected with POST /mo (a GSM text, a 3-part
    Chinese one) come out as two JSON lines with the reassembled text; each is echoed back
    as an MT with the same text to the sender; exit 0 after the second."""
    phone = "8613900000201"
    listener = Listener(tmp_path, sim.smsc, "--count", "2", "--echo")
    wait_for_bind(sim, 1, listener)
    first = sim.api("POST", "/mo", {"from": phone, "to": SERVICE, "text": GSM_TEXT})
    second = sim.api("POST", "/mo", {"from": phone, "to": SERVICE, "text": LONG_CHINESE})
    assert (first["esme"], first["queued"], second["parts"]) == (SYSTEM_ID, False, 3)
    code, out, err = listener.finish()
    assert (code, err) == (0, "")
    lines = json_lines(out)
    assert [(m["from"], m["to"], m["text"], m["parts"]) for m in lines] == [
        (phone, SERVICE, GSM_TEXT, 1),
        (phone, SERVICE, LONG_CHINESE, 3),
    ]
    echoed = sim.mt(phone)
    assert [(m["from"], m["text"]) for m in echoed] == [
        (SERVICE, GSM_TEXT),
        (SERVICE, LONG_CHINESE),
    ]


def test_listen_echoes_binary_as_binary(sim: SimProcess, tmp_path: Path) -> None:
    """An 8-bit MO (data_coding 0xF6) is printed with text null and its octets in hex, and
    --echo answers with the same octets and data_coding, not with a decoded text."""
    phone = "8613900000202"
    listener = Listener(tmp_path, sim.smsc, "--count", "1", "--echo")
    wait_for_bind(sim, 1, listener)
    sim.api("POST", "/mo", {"from": phone, "to": SERVICE, "hex": "0a0bff", "data_coding": 0xF6})
    code, out, err = listener.finish()
    assert (code, err) == (0, "")
    (line,) = json_lines(out)
    assert (line["text"], line["hex"], line["data_coding"]) == (None, "0a0bff", 0xF6)
    (echo,) = sim.mt(phone)
    assert (echo["text"], echo["hex"], echo["data_coding"]) == (None, "0a0bff", 0xF6)


def test_listen_exits_with_one_line_when_the_smsc_unbinds(tmp_path: Path) -> None:
    """The SMSC unbinds the listener (its --unbind-after fault): listen prints the MO it
    got, then exits 1 with one line saying the SMSC unbound, instead of waiting forever."""
    sim = SimProcess(
        tmp_path,
        "--system-id",
        SYSTEM_ID,
        "--password",
        PASSWORD,
        "--short-code",
        SHORT_CODE,
        "--unbind-after",
        "2",
        "--stats-interval",
        "0",
    )
    try:
        listener = Listener(tmp_path, sim.smsc)
        wait_for_bind(sim, 1, listener)
        sim.api("POST", "/mo", {"from": "8613900000301", "to": SERVICE, "text": "last"})
        code, out, err = listener.finish()
    finally:
        assert sim.stop() == 0, sim.text
    assert code == 1
    assert [m["text"] for m in json_lines(out)] == ["last"]
    assert "unbound" in one_line(err)
