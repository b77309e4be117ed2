"""Tests of stkpay/cmd_sim.py: ``stkpay smsc-sim`` on the command line.

The simulator runs as a subprocess (``SimProcess``, also used by test_cmd_smpp.py): its
ports come from its first log line, its stderr is collected by a thread (so that the pipe
never fills), and its HTTP control API is driven with urllib.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from stkpay.cli import main

#: Runs ``stkpay.cli.main`` in a fresh interpreter, as the installed ``stkpay`` script does.
#: (``python -m stkpay.cli`` loads the module twice, as ``__main__`` and as ``stkpay.cli``,
#: and then the ``CliError`` a command raises is not the one ``main`` catches.)
STKPAY = (
    sys.executable,
    "-c",
    "import sys; from stkpay.cli import main; sys.exit(main(sys.argv[1:]))",
)

PHONE = "8613800138000"
_READY = re.compile(r"smpp port (\d+), api port (\d+)")


def clean_env() -> dict[str, str]:
    """The environment without stkpay's own variables (no config file, no password)."""
    env = dict(os.environ)
    for name in ("STKPAY_CONFIG", "STKPAY_SMSC_PASSWORD", "STKPAY_LEDGER_URL"):
        env.pop(name, None)
    return env


class SimProcess:
    """``stkpay smsc-sim`` as a subprocess on loopback ports chosen by the OS."""

    def __init__(self, cwd: Path, *flags: str, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [
                *STKPAY,
                "smsc-sim",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--api",
                "tcp:0",
                *flags,
            ],
            cwd=cwd,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(deadline - time.monotonic())
            if line is None:
                self.stop()
                raise AssertionError("simulator did not start: " + self.text)
            found = _READY.search(line)
            if found:
                self.port, self.api_port = int(found.group(1)), int(found.group(2))
                break

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next stderr line, or None at EOF or after ``timeout`` seconds."""
        try:
            return self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    @property
    def text(self) -> str:
        """Everything logged so far."""
        return "".join(self.log)

    @property
    def smsc(self) -> str:
        """The ``--smsc`` value for ``stkpay smpp``."""
        return f"127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        """One request to the control API; the decoded JSON answer (HTTP errors raise)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.load(response)
        return result

    def mt(self, to: str) -> list[dict[str, Any]]:
        """The messages delivered to handset ``to`` (``GET /mt``)."""
        query = urllib.parse.urlencode({"to": to})
        messages: list[dict[str, Any]] = self.api("GET", "/mt?" + query)["messages"]
        return messages

    def stop(self) -> int:
        """SIGTERM, wait for the exit; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def stkpay(cwd: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``stkpay ARGS`` to completion in a fresh interpreter."""
    return subprocess.run(
        [*STKPAY, *args],
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--password", "pw"], "--password needs --system-id"),
        (["--system-id", "x"], "--system-id needs --password"),
        (["--system-id", "x", "--password", "123456789"], "--password must be"),
        (["--delivered-ratio", "1.5"], "--delivered-ratio"),
        (["--receipt-delay", "-1"], "--receipt-delay"),
        (["--error-rate", "2"], "--error-rate"),
        (["--error-status", "ESME_NOPE"], "--error-status"),
        (["--drop-after", "-3"], "--drop-after"),
        (["--stall-after", "-1"], "--stall-after"),
        (["--listen", "bogus:1"], "--listen"),
    ],
)
def test_cli_rejects_bad_flags_with_one_line(
    flags: list[str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A bad flag is one line on stderr and exit status 2; nothing starts."""
    monkeypatch.delenv("STKPAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["smsc-sim", *flags]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.count("\n") == 1
    assert "123456789" not in err


# -- running ----------------------------------------------------------------------------------


def test_cli_runs_binds_logs_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`stkpay smsc-sim` listens, takes a bind and a submit_sm from smpplib, injects an MO
    through its API, logs the bind and summaries without the password, and exits 0 on
    SIGTERM."""
    import smpplib.client

    password = "s3cr3t!x"
    sim = SimProcess(
        tmp_path,
        "--system-id",
        "cli",
        "--password",
        password,
        "--short-code",
        "1065",
        "--message-id-format",
        "hex-upper",
        "--stats-interval",
        "0.2",
    )
    try:
        client = smpplib.client.Client(
            "127.0.0.1", sim.port, timeout=10, allow_unknown_opt_params=True
        )
        resps: list[Any] = []
        mos: list[Any] = []

        def sent(pdu: Any) -> None:
            resps.append(pdu)

        def received(pdu: Any) -> None:
            mos.append(pdu)

        client.set_message_sent_handler(sent)
        client.set_message_received_handler(received)
        client.connect()
        client.bind_transceiver(system_id="cli", password=password)
        for _ in range(11):
            client.send_message(source_addr="1065", destination_addr=PHONE, short_message=b"x")
        answer = sim.api("POST", "/mo", {"from": PHONE, "to": "10650001", "text": "up"})
        assert answer["esme"] == "cli"
        while len(resps) < 11 or not mos:
            client.read_once()
        client.unbind()
        client.disconnect()
        ids = {r.message_id.decode() for r in resps}
        assert len(ids) == 11
        assert "A" in ids  # upper-case hex; the MO took one of the ids 1..C
        assert ids <= {f"{n:X}" for n in range(1, 13)}
        assert mos[0].short_message == b"up"
        deadline = time.monotonic() + 10
        while "binds=" not in sim.text and time.monotonic() < deadline:
            sim.next_line(0.5)
    finally:
        code = sim.stop()
    assert code == 0, sim.text
    assert "bind transceiver system_id=cli" in sim.text
    assert "binds=" in sim.text
    assert password not in sim.text


def test_stall_after_hangs_each_connection_at_its_nth_pdu(tmp_path: Path) -> None:
    """`--stall-after 2`: the bind (PDU 1) is answered, the first submit_sm (PDU 2) is not,
    like a hung SMSC: `stkpay smpp send` times the part out (exit 1, one line); the
    simulator counts the ignored PDU and the fault is visible and clearable through
    ``/faults``, after which a send succeeds."""
    config = tmp_path / "stkpay.toml"
    config.write_text("[smsc]\nresponse_timeout = 0.5\n", encoding="utf-8")
    sim = SimProcess(
        tmp_path,
        "--system-id",
        "cli",
        "--password",
        "pw",
        "--stall-after",
        "2",
        "--stats-interval",
        "0",
    )
    try:
        assert sim.api("GET", "/faults")["stall_after"] == 2
        send = (
            "--config",
            str(config),
            "smpp",
            "send",
            "--smsc",
            sim.smsc,
            "--system-id",
            "cli",
            "--password",
            "pw",
            "--to",
            PHONE,
            "--text",
            "hello",
        )
        started = time.monotonic()
        hung = stkpay(tmp_path, *send)
        assert hung.returncode == 1, hung.stderr
        assert time.monotonic() - started < 15
        # The SMSC may or may not have taken the unanswered part: TIMEOUT says so (ABORTED
        # would wrongly tell the caller it is safe to resend).
        assert json.loads(hung.stdout)["status"] == "TIMEOUT"
        assert hung.stderr.splitlines() == ["stkpay: part refused: TIMEOUT"]
        assert sim.mt(PHONE) == []
        assert sim.api("GET", "/stats")["totals"]["stalled"] >= 1
        assert sim.api("POST", "/faults", {"stall_after": 0})["stall_after"] == 0
        healthy = stkpay(tmp_path, *send)
        assert healthy.returncode == 0, healthy.stderr
        assert [m["text"] for m in sim.mt(PHONE)] == ["hello"]
    finally:
        assert sim.stop() == 0, sim.text


def test_stall_fault_is_validated_by_the_api(tmp_path: Path) -> None:
    """``POST /faults`` takes ``stall`` as a boolean and ``stall_after`` as a count >= 0;
    anything else is a 400 naming the key, and the faults stay as they were."""
    sim = SimProcess(tmp_path, "--system-id", "cli", "--password", "pw", "--stats-interval", "0")
    try:
        for bad, key in (
            ({"stall": "yes"}, "stall"),
            ({"stall": 1}, "stall"),
            ({"stall_after": -1}, "stall_after"),
            ({"stall_after": 1.5}, "stall_after"),
        ):
            with pytest.raises(urllib.error.HTTPError) as info:
                sim.api("POST", "/faults", bad)
            assert info.value.code == 400
            assert key in json.load(info.value)["error"]
        assert sim.api("POST", "/faults", {"stall": True})["stall"] is True
        assert sim.api("GET", "/faults")["stall"] is True
        assert sim.api("POST", "/faults", {"stall": False})["stall"] is False
    finally:
        assert sim.stop() == 0, sim.text
