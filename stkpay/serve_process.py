"""``stkpay serve`` as a child process: what ``stkpay demo``, the end-to-end benches and the
restart tests run, so that the gateway runs as production runs it (issue 5, "Running it"): its
own interpreter (hence its own core), its configuration from a TOML file, the PIN pepper in
``STKPAY_PIN_PEPPER`` (never on the command line, never in the file).

:func:`write_config` writes the TOML (mode 0600: it may hold the SMSC password);
:class:`ServeProcess` starts the process, reads its log (the health port it listens on, the
warnings it prints), waits for ``GET /healthz`` 200 (bound, ledger reachable), samples its
resident size and CPU from ``/proc``, and stops it with SIGTERM (SIGKILL after a timeout) or
kills it outright (crash tests). The blocking calls (:meth:`ServeProcess.wait_ready`,
:meth:`ServeProcess.stop`) belong on a thread when the caller's reactor serves the SMSC the
gateway binds to.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = ["ServeProcess", "ServeProcessError", "gateway_sections", "write_config"]

#: The project root (the checkout), put on the child's PYTHONPATH.
ROOT: Final = Path(__file__).resolve().parent.parent
_HEALTH_LINE: Final = re.compile(r"healthz listening on port (\d+)")
_WARN_LINE: Final = re.compile(r"not (sent|accepted by the SMSC)|Traceback|Unhandled")


class ServeProcessError(RuntimeError):
    """The gateway process did not become ready (the message carries its last log lines)."""


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def write_config(path: Path, sections: Mapping[str, Mapping[str, object]]) -> Path:
    """Write ``sections`` (``{"smsc": {"port": 2775, ...}, ...}``) as TOML at ``path``, readable
    by its owner only; returns ``path``."""
    text = "".join(
        f"[{name}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in body.items())
        for name, body in sections.items()
    )
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def gateway_sections(
    *,
    smpp_port: int,
    system_id: str,
    password: str,
    source_addr: str,
    ledger_url: str,
    key_file: Path,
    counter_url: str,
    calibration_url: str,
    state_url: str = "",
    state_prefix: str = "stkpay:",
    window: int = 64,
    throughput: float = 10_000.0,
    grace_period: float = 5.0,
    workers: int | None = None,
) -> dict[str, dict[str, object]]:
    """The configuration of a gateway bound to a loopback SMSC (the simulator) as a
    transceiver, without delivery receipts, reconnecting fast; health on an ephemeral port;
    ``workers`` None: the product's default."""
    gateway: dict[str, object] = {
        "health": "tcp:0:interface=127.0.0.1",
        "grace_period": grace_period,
    }
    if workers is not None:
        gateway["workers"] = workers
    return {
        "smsc": {
            "host": "127.0.0.1",
            "port": smpp_port,
            "system_id": system_id,
            "password": password,
            "source_addr": source_addr,
            "bind": "trx",
            "window": window,
            "throughput": float(throughput),
            "registered_delivery": False,
            "reconnect_min": 0.05,
            "reconnect_max": 1.0,
        },
        "ledger": {"url": ledger_url},
        "ota": {"key_file": str(key_file), "counter_url": counter_url},
        "calibration": {"url": calibration_url},
        "state": {"url": state_url, "prefix": state_prefix},
        "gateway": gateway,
    }


class ServeProcess:
    """``python -m stkpay --config CONFIG serve`` with ``cwd`` as its working directory."""

    def __init__(
        self,
        config_path: Path,
        *,
        cwd: Path,
        pepper: bytes,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.cwd = cwd
        self._pepper = pepper
        self._extra_env = dict(env or {})
        self.popen: subprocess.Popen[str] | None = None
        self.lines: deque[str] = deque(maxlen=200)
        self.warnings = 0
        self.warning_samples: list[str] = []
        self.health_port: int | None = None
        self._port_seen = threading.Event()
        self._pump: threading.Thread | None = None

    def __repr__(self) -> str:
        pid = self.popen.pid if self.popen is not None else None
        return f"ServeProcess(pid={pid}, health_port={self.health_port})"

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.popen is not None, "not started"
        return self.popen.pid

    def start(self) -> None:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STKPAY_")}
        env["PYTHONPATH"] = str(ROOT)
        env["STKPAY_PIN_PEPPER"] = self._pepper.hex()
        env.update(self._extra_env)
        self.health_port = None
        self._port_seen.clear()
        self.popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "stkpay", "--config", str(self.config_path), "serve"],
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._pump = threading.Thread(target=self._read_log, name="serve-log", daemon=True)
        self._pump.start()

    def _read_log(self) -> None:
        assert self.popen is not None and self.popen.stderr is not None
        in_traceback = False
        for line in self.popen.stderr:
            self.lines.append(line.rstrip("\n"))
            if in_traceback and line[:1] not in (" ", "\t"):
                in_traceback = False  # the exception line that ends a traceback
                if len(self.warning_samples) < 3:
                    self.warning_samples.append("traceback: " + line.strip()[:300])
            elif self.health_port is None and (m := _HEALTH_LINE.search(line)):
                self.health_port = int(m.group(1))
                self._port_seen.set()
            elif _WARN_LINE.search(line):
                self.warnings += 1
                in_traceback = "Traceback" in line
                if not in_traceback and len(self.warning_samples) < 3:
                    self.warning_samples.append(line.strip()[:300])
        self._port_seen.set()  # the process ended: stop waiting

    def log_tail(self, lines: int = 20) -> str:
        """The last log lines (for a failure message)."""
        return "\n".join(list(self.lines)[-lines:])

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /healthz``: (status, JSON body). Blocking."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), json.loads(exc.read())

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Block until ``/healthz`` answers 200 (bound, ledger up); its body, else
        :class:`ServeProcessError` with the log's tail."""
        assert self.popen is not None, "not started"
        deadline = time.monotonic() + timeout
        self._port_seen.wait(timeout)
        last: object = "no health port logged"
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                break
            if self.health_port is not None:
                try:
                    code, body = self.health()
                except (OSError, ValueError) as exc:
                    last = exc
                else:
                    if code == 200:
                        return body
                    last = body
            time.sleep(0.05)
        raise ServeProcessError(
            f"stkpay serve not ready ({last}); exit status {self.popen.poll()}; log:\n"
            + self.log_tail()
        )

    def rss_kb(self) -> int:
        """Resident size (``VmRSS`` of /proc/PID/status), KiB."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU of the process (all its threads), from /proc/PID/stat."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _reap(self) -> int | None:
        assert self.popen is not None
        if self._pump is not None:
            self._pump.join(timeout=5)
        if self.popen.stderr is not None:
            self.popen.stderr.close()
        return self.popen.returncode

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL (a crash: nothing drained, nothing closed); the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        return self._reap()
