"""Tests for ota.pcsc and ``stkpay card``: the T=0 transport rules, script runs, the CLI, and
the runner through a real pcscd with vsmartcard's vpcd driver against simcard's VirtualCard.

The PC/SC tests skip when pcscd (with the vpcd reader "Virtual PCD 00 00") is not reachable,
except under ``CI=true`` where they fail: ``make test`` starts pcscd, so its absence there is
a broken environment. Only one virtual card may sit on the vpcd port, so one module fixture
serves it and releases it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ota.apdu import CommandApdu
from ota.pcsc import (
    MAX_ROUNDS,
    CardUnavailableError,
    Exchange,
    PcscError,
    PcscUnavailableError,
    ReaderNotFoundError,
    RunResult,
    Transmission,
    TransmitError,
    check,
    list_readers,
    run_script,
    run_steps,
    transceive,
)
from ota.script import ScriptStep, parse_script
from simcard.card import ATR, VirtualCard, encode_iccid
from simcard.filesystem import fcp
from simcard.vpcd import frame
from stkpay import cmd_card
from stkpay.cli import CliError
from stkpay.config import from_mapping
from tests.vpcd import WatchedCard, card_connectable, served_card

ICCID = "89860012345678901234"
READER = "Virtual PCD 00 00"  # vpcd slot 0
SECOND_READER = "Virtual PCD 00 01"  # vpcd slot 1
VPCD_PORT = 35963  # slot 0 (vsmartcard vpcd.h VPCDPORT)
PRESENCE_DEADLINE = 10.0
REPO = Path(__file__).resolve().parents[2]


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def step(apdu: str, *expect: str, line: int = 1) -> ScriptStep:
    return ScriptStep(CommandApdu.from_bytes(hx(apdu)), expect or ("9000", "61XX"), line)


class Scripted:
    """A transmit function answering from a list, recording what was sent."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = [hx(a) for a in answers]
        self.sent: list[str] = []

    def __call__(self, apdu: bytes) -> bytes:
        self.sent.append(apdu.hex().upper())
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


# --- the T=0 transport rules (no PC/SC) ----------------------------------------------------------


def test_61xx_is_fetched_with_get_response() -> None:
    """61XX makes the runner send 00 C0 00 00 XX and return the data with the final 9000."""
    card = VirtualCard(ICCID)
    response, first_sw, log = transceive(CommandApdu.from_bytes(hx("00A40004023F00")), card.process)
    assert first_sw >> 8 == 0x61
    assert [t.command.hex().upper() for t in log] == [
        "00A40004023F00",
        f"00C00000{first_sw & 0xFF:02X}",
    ]
    assert response.sw == 0x9000
    assert response.data == fcp(card.fs.mf)


def test_6cxx_resends_with_the_right_le() -> None:
    """6CXX makes the runner send the same command again with Le = XX."""
    card = VirtualCard(ICCID)
    response, first_sw, log = transceive(CommandApdu.from_bytes(hx("00B201F410")), card.process)
    assert first_sw == 0x6C20  # EF DIR (SFI 30) records are 32 bytes
    assert [t.command.hex().upper() for t in log] == ["00B201F410", "00B201F420"]
    assert response.sw == 0x9000
    assert len(response.data) == 32


def test_chunks_are_concatenated_and_6c_on_get_response_is_corrected() -> None:
    """Data from successive 61XX rounds is joined; a 6CXX to GET RESPONSE is re-sent."""
    fake = Scripted(["AAAA6102", "6C01", "BB6100", "CC9000"])
    response, first_sw, log = transceive(CommandApdu(0x80, 0xCA, 0, 0), fake)
    assert fake.sent == ["80CA0000", "00C0000002", "00C0000001", "00C0000000"]
    assert (response.data, response.sw, first_sw) == (hx("AAAABBCC"), 0x9000, 0x6102)
    assert len(log) == 4


def test_rounds_are_bounded() -> None:
    """A card answering 6CXX forever is given up after MAX_ROUNDS re-sends."""
    fake = Scripted(["6C05"])
    response, _, log = transceive(CommandApdu(0, 0xB0, 0, 0, le=1), fake)
    assert response.sw == 0x6C05
    assert len(log) == MAX_ROUNDS + 1


def test_an_answer_without_status_word_is_a_transmit_error() -> None:
    """A one-byte answer is not a response APDU."""
    with pytest.raises(TransmitError):
        transceive(CommandApdu(0, 0xA4, 0, 0), lambda _: b"\x90")


def test_expectation_may_match_the_first_answer() -> None:
    """A step expecting 61XX passes when the card said 61XX before GET RESPONSE."""
    assert check(step("00A40004023F00", "61XX"), 0x9000, 0x611A, rounds=2)
    assert not check(step("00A40004023F00", "61XX"), 0x9000, 0x9000, rounds=1)
    assert check(step("00A40004023F00"), 0x9000, 0x9000, rounds=1)
    assert not check(step("00A40004023F00", "6A82"), 0x9000, 0x611A, rounds=2)


def test_run_steps_stops_at_first_mismatch() -> None:
    """The run stops at the first mismatch; keep_going runs every step."""
    steps = [
        step("00A4000C022FE2", line=1),
        step("00A4000C026FFF", "9000", line=2),
        step("00B000000A", line=3),
    ]
    seen: list[Exchange] = []
    result = run_steps(steps, VirtualCard(ICCID).process, on_exchange=seen.append)
    assert [e.step.line for e in result.exchanges] == [1, 2]
    assert seen == list(result.exchanges)
    assert not result.ok
    assert [e.response.sw for e in result.mismatches] == [0x6A82]
    result = run_steps(steps, VirtualCard(ICCID).process, keep_going=True)
    assert [e.step.line for e in result.exchanges] == [1, 2, 3]
    assert result.exchanges[2].response.data == encode_iccid(ICCID)
    assert not result.ok


def test_run_steps_all_ok_and_json_shape() -> None:
    """A clean run is ok; each exchange's JSON has exactly the documented keys."""
    steps = parse_script("00A4000C022FE2\n00B000000A -> 9000\n", source="t.apdu")
    result = run_steps(steps, VirtualCard(ICCID).process)
    assert result.ok
    assert result == RunResult(result.exchanges, 2)
    assert result.exchanges[1].to_json() == {
        "apdu": "00B000000A",
        "response": encode_iccid(ICCID).hex().upper(),
        "sw": "9000",
        "expected": ["9000"],
        "ok": True,
        "line": 2,
    }


def test_transmission_repr_hides_command_data() -> None:
    """A transmission's repr shows the header and lengths, never the data (a PIN, a key)."""
    text = repr(Transmission(hx("0020000108 3132333435363738"), hx("9000")))
    assert "3132333435363738" not in text
    assert "00200001" in text
    assert "command=<13 bytes>" in text


def test_choose_reader() -> None:
    """The named reader if present; the only reader by default; refuse otherwise."""
    assert cmd_card.choose_reader("B", ["A", "B"]) == "B"
    assert cmd_card.choose_reader(None, ["A"]) == "A"
    with pytest.raises(CliError, match="unknown reader 'C'; readers present: 'A', 'B'"):
        cmd_card.choose_reader("C", ["A", "B"])
    with pytest.raises(CliError, match=r"several readers present.*'A', 'B'"):
        cmd_card.choose_reader(None, ["A", "B"])
    with pytest.raises(CliError, match="no PC/SC reader"):
        cmd_card.choose_reader(None, [])


def test_reader_not_found_message() -> None:
    """ReaderNotFoundError names the reader asked for and those present."""
    assert str(ReaderNotFoundError("X", [])) == "unknown reader 'X'; readers present: none"


# --- the CLI (parser built with the module's register()) -------------------------------------


def run_cli(argv: list[str]) -> int:
    """What ``stkpay.cli.main`` does for the ``card`` group: parse, run, CliError -> stderr."""
    parser = argparse.ArgumentParser(prog="stkpay")
    sub = parser.add_subparsers(dest="command")
    cmd_card.register(sub)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, Any], int] = args.func
    try:
        return func(args, from_mapping({}, {}))
    except CliError as exc:
        print(f"stkpay: {exc}", file=sys.stderr)
        return exc.code


def test_cli_unreadable_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing script file: exit 2, one line naming the file."""
    missing = tmp_path / "missing.apdu"
    assert run_cli(["card", "run", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(missing) in err


def test_cli_malformed_script_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed line: exit 2 with file:line, before any reader is touched."""
    script = tmp_path / "bad.apdu"
    script.write_text("# ok\n00A40004023F00\n00A4 0G\n")
    assert run_cli(["card", "run", str(script)]) == 2
    assert f"{script}:3:" in capsys.readouterr().err


def test_cli_empty_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A script with no APDU is refused (exit 2)."""
    script = tmp_path / "empty.apdu"
    script.write_text("# nothing\n")
    assert run_cli(["card", "run", str(script)]) == 2
    assert "no APDU" in capsys.readouterr().err


def test_cli_without_pcscd(tmp_path: Path) -> None:
    """No PC/SC service (client socket pointed nowhere): exit 2, 'pcscd is not running'."""
    script = tmp_path / "s.apdu"
    script.write_text("00A40004023F00\n")
    code = (
        "import sys\n"
        "from tests.ota.test_pcsc import run_cli\n"
        f"sys.exit(run_cli(['card', 'run', {str(script)!r}]))\n"
    )
    env = dict(os.environ, PCSCLITE_CSOCK_NAME=str(tmp_path / "no-pcscd.comm"))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "pcscd is not running" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_list_readers_without_pcscd(tmp_path: Path) -> None:
    """list_readers raises PcscUnavailableError when the PC/SC service is missing."""
    code = (
        "from ota.pcsc import PcscUnavailableError, list_readers\n"
        "try:\n    list_readers()\nexcept PcscUnavailableError as exc:\n    print(exc)\n"
    )
    env = dict(os.environ, PCSCLITE_CSOCK_NAME=str(tmp_path / "no-pcscd.comm"))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "pcscd is not running" in proc.stdout, proc.stderr
    assert issubclass(PcscUnavailableError, PcscError)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--iccid", "89X"], "ICCID must be"),
        (["--iccid", "1", "--vpcd", "host:0"], "--vpcd"),
    ],
)
def test_cli_virtual_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad ICCID or endpoint: exit 2 with one line."""
    assert run_cli(["card", "virtual", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_virtual_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening on --vpcd: exit 2 saying so."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    assert run_cli(["card", "virtual", "--iccid", ICCID, "--vpcd", f"127.0.0.1:{port}"]) == 2
    assert "cannot connect to vpcd" in capsys.readouterr().err


def test_cli_virtual_serves_until_closed() -> None:
    """``card virtual`` answers the driver (here a stand-in) and exits 0 when it hangs up."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]
        codes: list[int] = []
        argv = ["card", "virtual", "--iccid", ICCID, "--vpcd", f"127.0.0.1:{port}"]
        thread = threading.Thread(target=lambda: codes.append(run_cli(argv)), daemon=True)
        thread.start()
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(frame(b"\x04"))
            assert conn.recv(64) == frame(ATR)
    thread.join(10)
    assert codes == [0]


# --- through pcscd + vpcd --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vpcd_card() -> Iterator[WatchedCard]:
    """A VirtualCard served on vpcd slot 0, present in READER; released afterwards."""
    with served_card(WatchedCard(ICCID), READER, VPCD_PORT) as card:
        yield card


def write_script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "script.apdu"
    path.write_text(text)
    return str(path)


def test_pcsc_select_and_read_iccid(
    vpcd_card: WatchedCard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SELECT MF (61XX fetched), SELECT EF ICCID, READ BINARY returns the ICCID; exit 0."""
    script = write_script(
        tmp_path,
        "00A40004023F00 -> 61XX   # MF, FCP by GET RESPONSE\n"
        "00A4000C022FE2 -> 9000   # EF ICCID\n"
        "00B000000A               # read it\n",
    )
    assert run_cli(["card", "run", script, "--reader", READER]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "> 00A40004023F00"
    assert lines[1] == f"< {fcp(vpcd_card.fs.mf).hex().upper()} 9000  ok"
    assert lines[2:4] == ["> 00A4000C022FE2", "< 9000  ok"]
    assert lines[4:] == ["> 00B000000A", f"< {encode_iccid(ICCID).hex().upper()} 9000  ok"]


def test_pcsc_update_then_read(
    vpcd_card: WatchedCard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """UPDATE BINARY then READ BINARY on the calibration EF, as JSON lines."""
    script = write_script(
        tmp_path,
        "00A4080C047F506F60 -> 9000\n00D6000404CAFEF00D -> 9000\n00B0000008 -> 9000\n",
    )
    assert run_cli(["card", "run", script, "--reader", READER, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(r) for r in rows] == [{"apdu", "response", "sw", "expected", "ok", "line"}] * 3
    assert rows[2] == {
        "apdu": "00B0000008",
        "response": "FFFFFFFFCAFEF00D",
        "sw": "9000",
        "expected": ["9000"],
        "ok": True,
        "line": 3,
    }
    assert vpcd_card.fs.read_binary("7F50/6F60")[4:8] == hx("CAFEF00D")


def test_pcsc_wrong_le_is_corrected(
    vpcd_card: WatchedCard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """READ RECORD with a wrong Le: the card's 6C20 is answered by a re-send with Le 20."""
    script = write_script(tmp_path, "00A4000C022F00\n00B2010410 -> 9000\n")
    assert run_cli(["card", "run", script, "--reader", READER, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[1]["sw"] == "9000"
    assert hx(rows[1]["response"]) == vpcd_card.fs.ef("2F00").record(1)


def test_pcsc_mismatch_exits_1_and_stops(
    vpcd_card: WatchedCard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deliberate mismatch exits 1 and stops the run; --keep-going runs the rest."""
    script = write_script(tmp_path, "00A4000C026FFF -> 9000\n00A4000C023F00\n")
    assert run_cli(["card", "run", script, "--reader", READER]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "> 00A4000C026FFF",
        "< 6A82  MISMATCH expected 9000",
    ]
    assert run_cli(["card", "run", script, "--reader", READER, "--keep-going"]) == 1
    assert capsys.readouterr().out.splitlines()[2:] == ["> 00A4000C023F00", "< 9000  ok"]


def test_pcsc_run_script_api(vpcd_card: WatchedCard) -> None:
    """run_script (the API) returns every exchange with its transmissions."""
    steps = parse_script("00A40004022FE2\n00B0000000\n")
    result = run_script(steps, reader=READER)
    assert result.ok
    assert len(result.exchanges[0].transmissions) == 2  # SELECT + GET RESPONSE
    assert result.exchanges[1].response.data == encode_iccid(ICCID)


def test_pcsc_unknown_reader(
    vpcd_card: WatchedCard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown reader: exit 2, naming the readers present."""
    script = write_script(tmp_path, "00A40004023F00\n")
    assert run_cli(["card", "run", script, "--reader", "No Such Reader 00 00"]) == 2
    err = capsys.readouterr().err
    assert "unknown reader 'No Such Reader 00 00'" in err
    assert repr(READER) in err
    with pytest.raises(ReaderNotFoundError):
        run_script(parse_script("00A40004023F00\n"), reader="No Such Reader 00 00")


def test_pcsc_default_reader(
    vpcd_card: WatchedCard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --reader: refused naming the readers when several are present."""
    script = write_script(tmp_path, "00A4000C023F00\n")
    readers = list_readers()
    code = run_cli(["card", "run", script])
    if len(readers) > 1:
        assert code == 2
        assert "several readers present" in capsys.readouterr().err
    else:
        assert code == 0


def test_pcsc_reader_without_card(vpcd_card: WatchedCard, tmp_path: Path) -> None:
    """A reader with no card: CardUnavailableError (exit 2 from the CLI)."""
    if SECOND_READER not in list_readers() or card_connectable(SECOND_READER):
        pytest.skip(f"{SECOND_READER!r} absent or holding a card")
    with pytest.raises(CardUnavailableError, match="no card"):
        run_script(parse_script("00A4000C023F00\n"), reader=SECOND_READER)
    script = write_script(tmp_path, "00A4000C023F00\n")
    assert run_cli(["card", "run", script, "--reader", SECOND_READER]) == 2
