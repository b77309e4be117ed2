"""``stkpay serve`` as a real process against ``stkpay smsc-sim`` as another (issue 5,
"Running it"): /healthz becomes ready once bound, SIGTERM ends it with exit 0 within the grace
period after an unbind; a bad configuration, a missing pepper or key file is one line on
stderr and exit status 2, no traceback."""

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
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset

ROOT = Path(__file__).resolve().parents[2]
PEPPER_HEX = "c3" * 32
#: ``stkpay`` with ``serve`` registered even before cli.py lists it.
LAUNCH = (
    "import sys\n"
    "from stkpay import cli, cmd_serve\n"
    "_orig = cli.build_parser\n"
    "def _build():\n"
    "    parser = _orig()\n"
    "    sub = parser._subparsers._group_actions[0]\n"
    "    if 'serve' not in sub.choices:\n"
    "        cmd_serve.register(sub)\n"
    "    return parser\n"
    "cli.build_parser = _build\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


class Proc:
    """A child process whose stderr lines are collected by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self._queue.put(line)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first stderr line (from now on, or already seen) matching ``pattern``."""
        regex = re.compile(pattern)
        for line in self.lines:
            if m := regex.search(line):
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.popen.poll() is not None and self._queue.empty():
                    break
                continue
            self.lines.append(line)
            if m := regex.search(line):
                return m
        raise AssertionError(f"no line matching {pattern!r}; stderr so far:\n{self.text()}")

    def text(self) -> str:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return "".join(self.lines)

    def finish(self, timeout: float) -> int:
        code = self.popen.wait(timeout=timeout)
        self._thread.join(timeout=5)
        return code

    def kill(self) -> None:
        """Kill it if still running; close the pipe."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=5)
        self._thread.join(timeout=5)
        if self.popen.stderr is not None:
            self.popen.stderr.close()


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STKPAY_")}
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(tmp)
    return env


def write_config(tmp: Path, smpp_port: int, *, extra: str = "") -> Path:
    path = tmp / "stkpay.toml"
    path.write_text(
        f'[smsc]\nhost = "127.0.0.1"\nport = {smpp_port}\npassword = "secret"\n'
        "reconnect_min = 0.2\nreconnect_max = 1.0\n"
        f'[ledger]\nurl = "sqlite:///{tmp / "ledger.db"}"\n'
        f'[ota]\nkey_file = "{tmp / "keys.json"}"\ncounter_url = "sqlite:///{tmp / "ota.db"}"\n'
        '[gateway]\nhealth = "tcp:0:interface=127.0.0.1"\ngrace_period = 5.0\n' + extra,
        encoding="utf-8",
    )
    return path


def healthz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def smsc(tmp_path: Path) -> Iterator[int]:
    """``stkpay smsc-sim`` on an ephemeral port; yields that port."""
    proc = Proc(
        ["smsc-sim", "--listen", "tcp:0:interface=127.0.0.1", "--api", "none"],
        base_env(tmp_path),
        tmp_path,
    )
    try:
        yield int(proc.wait_for(r"smpp port (\d+)").group(1))
    finally:
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.finish(10)
        finally:
            proc.kill()


def test_serve_becomes_ready_and_exits_0_on_sigterm(tmp_path: Path, smsc: int) -> None:
    """healthz answers 200 ready once bound; SIGTERM: unbind, 'stopped', exit 0 within the
    grace period (5 s) plus process start-up slack."""
    generate_keyset(FileKeyStore(tmp_path / "keys.json"), "ota", 1, KeyAlgorithm.AES)
    config = write_config(tmp_path, smsc)
    env = base_env(tmp_path) | {"STKPAY_PIN_PEPPER": PEPPER_HEX}
    proc = Proc(["--config", str(config), "serve"], env, tmp_path)
    try:
        port = int(proc.wait_for(r"healthz listening on port (\d+)").group(1))
        proc.wait_for(r"bound as stkpay")
        deadline = time.monotonic() + 10
        code, body = healthz(port)
        while code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            code, body = healthz(port)
        assert (code, body["status"]) == (200, "ready"), body
        assert {k: body[k] for k in ("mo_in_progress", "mt_unanswered", "mt_queued")} == {
            "mo_in_progress": 0,
            "mt_unanswered": 0,
            "mt_queued": 0,
        }, body
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.finish(timeout=10) == 0, proc.text()
        assert time.monotonic() - started < 5 + 2
        text = proc.text()
        assert "stopped" in text and "Traceback" not in text
        assert PEPPER_HEX not in text
    finally:
        proc.kill()


def one_line_exit_2(tmp_path: Path, argv: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("stkpay: "), result.stderr
    return lines[0]


def test_serve_refuses_a_bad_config_missing_pepper_or_key_file(tmp_path: Path) -> None:
    """Unknown key in the file; no STKPAY_PIN_PEPPER; no key file: one line, exit 2."""
    env = base_env(tmp_path) | {"STKPAY_PIN_PEPPER": PEPPER_HEX}
    bad = write_config(tmp_path, 2775, extra="bogus = 1\n")
    line = one_line_exit_2(tmp_path, ["--config", str(bad), "serve"], env)
    assert "gateway.bogus" in line
    config = write_config(tmp_path, 2775)
    line = one_line_exit_2(tmp_path, ["--config", str(config), "serve"], base_env(tmp_path))
    assert "STKPAY_PIN_PEPPER" in line
    line = one_line_exit_2(tmp_path, ["--config", str(config), "serve"], env)
    assert "key file" in line and PEPPER_HEX not in line
