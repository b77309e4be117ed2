"""Interop harness: Kannel (bearerbox + smsbox), Kannel's test SMSC, and ``stkpay`` processes.

Everything here runs real programs as subprocesses and talks to them over loopback TCP:

* :class:`Kannel` renders one Kannel configuration file (``group = core``, ``smsc``,
  ``smsbox``, ``sendsms-user``, ``sms-service``, as the Kannel 1.4 User's Guide names them)
  into a temporary directory, starts ``bearerbox`` then ``smsbox`` and waits until the SMPP
  bind is online according to bearerbox's admin ``status.txt``.
* :class:`HttpRecorder` is the tiny HTTP server Kannel's ``sms-service`` ``get-url`` and the
  sendsms ``dlr-url`` call back into; it records every request and answers MO with a reply.
* :class:`SmscSim` runs ``stkpay smsc-sim`` and speaks its HTTP JSON control API.
* :class:`DriveSmpp` runs kannel-extras' ``drive_smpp`` (``test/drive_smpp.c``), an SMSC
  written to drive bearerbox, together with the stand-in for the smsbox it dials.
* :class:`StkpayProcess` runs an ``stkpay`` command and hands its stdout over line by line.

Every process is started in its own session with ``PR_SET_PDEATHSIG`` so that it dies with
the test run, and is stopped with SIGTERM then SIGKILL to the whole process group. Every
wait has a deadline and, on expiry, fails naming what it waited for with the tail of the
relevant logs. Readiness is read from ``/proc/net/tcp`` (a LISTEN socket on the port)
rather than by connecting: ``drive_smpp`` shuts down as soon as any accepted connection
closes, so a probe connection would kill it.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.server
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

T = TypeVar("T")

BEARERBOX = Path("/usr/sbin/bearerbox")
SMSBOX = Path("/usr/sbin/smsbox")
DRIVE_SMPP = Path("/usr/lib/kannel/test/drive_smpp")
#: ``drive_smpp`` dials bearerbox's smsbox port at this fixed port (``port_for_smsbox`` in
#: test/drive_smpp.c; no option changes it) one second after its first SMPP client connects,
#: and panics when nothing answers there three seconds later.
DRIVE_SMPP_SMSBOX_PORT = 13001
LOOPBACK = "127.0.0.1"
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
POLL = 0.05

_PR_SET_PDEATHSIG = 1


def kannel_missing() -> list[str]:
    """Paths of the Kannel programs (package kannel) that are not installed."""
    return [str(p) for p in (BEARERBOX, SMSBOX) if not os.access(p, os.X_OK)]


def drive_smpp_missing() -> list[str]:
    """Paths of the kannel-extras programs that are not installed."""
    return [str(p) for p in (DRIVE_SMPP,) if not os.access(p, os.X_OK)]


def stkpay_command() -> list[str]:
    """argv prefix that runs the ``stkpay`` CLI of the interpreter running the tests.

    The installed console script when there is one (what operators run), otherwise the
    entry point called through ``-c``. Not ``-m stkpay.cli``: that would import the CLI
    module twice (as ``__main__`` and as ``stkpay.cli``), with two distinct ``CliError``s.
    """
    script = Path(sys.executable).with_name("stkpay")
    if os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import sys; from stkpay.cli import main; sys.exit(main())"]


# --- ports and waiting ----------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports the OS reports free on loopback (all held while picking).

    The fixed port ``drive_smpp`` dials is never returned.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
            if port != DRIVE_SMPP_SMSBOX_PORT:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def listening_ports() -> set[int]:
    """Local ports with a TCP socket in LISTEN state (``/proc/net/tcp`` and ``tcp6``)."""
    ports: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name, encoding="ascii") as table:
            next(table, None)  # header line
            for line in table:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def is_listening(port: int) -> bool:
    """Whether some socket listens on ``port`` (no connection is made)."""
    return port in listening_ports()


class WaitTimeoutError(AssertionError):
    """A bounded wait expired; the message says what was awaited and shows the logs."""


def wait_until(
    probe: Callable[[], T | None],
    what: str,
    timeout: float,
    watch: Sequence[ManagedProcess] = (),
) -> T:
    """Call ``probe`` until it returns something other than ``None`` or ``False``.

    Fails early when a watched process exits, and with :class:`WaitTimeoutError` after ``timeout``
    seconds; both messages carry the tail of every watched process's log.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        for proc in watch:
            if not proc.running:
                raise WaitTimeoutError(
                    f"{proc.name} exited with {proc.returncode} while waiting for {what}\n"
                    + _tails(watch)
                )
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout:.0f} s waiting for {what}\n" + _tails(watch)
            )
        time.sleep(POLL)


def _tails(procs: Sequence[ManagedProcess]) -> str:
    return "\n".join(p.describe() for p in procs)


# --- processes ------------------------------------------------------------------------------


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the test process dies, however it dies.

    Linux ``PR_SET_PDEATHSIG`` fires when the thread that forked exits; processes are
    started from the test's main thread, so this covers a run killed by pytest-timeout's
    thread method or by SIGKILL, where no teardown runs.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """One subprocess in its own process group, output in a log file (or a pipe), stoppable.

    ``stop()`` sends SIGTERM to the group, waits :data:`STOP_GRACE` seconds, then SIGKILLs
    the group; it is idempotent and never raises for a process that already exited. (None
    of the programs run here forks, so the group is the process; signalling the group also
    covers a wrapper script.)
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._log_file: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log_file,
            stderr=self._log_file,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads fork in between
        )

    @property
    def pid(self) -> int:
        """Process id (also the process group id)."""
        return self.popen.pid

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status, ``None`` while running (negative: killed by that signal)."""
        return self.popen.poll()

    def log_text(self) -> str:
        """Everything the process wrote to its log so far."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def describe(self, lines: int = 25) -> str:
        """A header and the last ``lines`` lines of the log, for failure messages."""
        tail = self.log_text().splitlines()[-lines:]
        state = "running" if self.running else f"exit {self.returncode}"
        body = "\n".join("    " + line for line in tail) or "    (empty)"
        return f"--- {self.name} [{state}] {self.log}\n{body}"

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; fail (leaving it running) after timeout."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeoutError(
                f"{self.name} did not exit within {timeout:.0f} s\n{self.describe()}"
            ) from None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process only (not the group), if it still runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def stop(self, grace: float = STOP_GRACE) -> int:
        """Terminate the process group, kill it after ``grace`` seconds; return the status."""
        if self.running:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(grace)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log_file.close()
        code = self.popen.returncode
        assert code is not None
        return code

    def _signal_group(self, signum: int) -> None:
        # Only while the leader is unreaped: then the group id is certainly still ours.
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signum)


class StkpayProcess(ManagedProcess):
    """An ``stkpay`` command whose stdout is read line by line on a thread."""

    def __init__(self, name: str, args: Sequence[str], log: Path) -> None:
        super().__init__(name, [*stkpay_command(), *args], log, stdout_pipe=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.popen.stdout
        assert stream is not None
        with contextlib.suppress(ValueError, OSError):
            for raw in iter(stream.readline, b""):
                self._lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        self._lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line; ``None`` at end of output; fails after ``timeout`` seconds."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise WaitTimeoutError(
                f"no output line from {self.name} within {timeout:.0f} s\n{self.describe()}"
            ) from None
        if line is not None:
            self.stdout_lines.append(line)
        return line

    def json_lines(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """The next ``count`` stdout lines parsed as JSON objects, all within ``timeout``."""
        deadline = time.monotonic() + timeout
        out: list[dict[str, Any]] = []
        while len(out) < count:
            line = self.next_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise WaitTimeoutError(
                    f"{self.name} ended after {len(out)} of {count} JSON lines\n{self.describe()}"
                )
            if line.strip():
                obj = json.loads(line)
                assert isinstance(obj, dict), f"not a JSON object: {line!r}"
                out.append(obj)
        return out

    def communicate(self, timeout: float) -> tuple[int, list[str]]:
        """Wait for exit; return the status and all stdout lines (stderr is in the log)."""
        deadline = time.monotonic() + timeout
        while self.next_line(max(0.0, deadline - time.monotonic())) is not None:
            pass
        return self.wait(max(0.1, deadline - time.monotonic())), list(self.stdout_lines)


def run_stkpay(args: Sequence[str], log: Path, timeout: float) -> tuple[int, list[str], str]:
    """Run an ``stkpay`` command to completion: (exit status, stdout lines, stderr)."""
    proc = StkpayProcess(f"stkpay {args[0]}", args, log)
    try:
        code, lines = proc.communicate(timeout)
    finally:
        proc.stop()
    return code, lines, proc.log_text()


# --- HTTP -----------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body); HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def http_json(
    method: str, url: str, body: Mapping[str, Any] | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """Send a JSON request, parse the JSON answer: (status, value)."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = int(exc.code), exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class HttpHit:
    """One request Kannel made to the recorder: path and query (values as Latin-1 strings).

    Values are decoded octet for octet (``%XX`` -> code point XX) so binary parameters such
    as Kannel's ``%b`` survive; :meth:`text` re-reads a value in a given charset.
    """

    path: str
    query: Mapping[str, str]

    def get(self, key: str) -> str:
        """A query value as sent (Latin-1 decoded), '' when absent."""
        return self.query.get(key, "")

    def raw(self, key: str) -> bytes:
        """A query value as the octets Kannel URL-encoded."""
        return self.get(key).encode("latin-1")

    def text(self, key: str, charset: str = "utf-8") -> str:
        """A query value decoded in ``charset``."""
        return self.raw(key).decode(charset)


MoReply = Callable[[HttpHit], str]


class HttpRecorder:
    """Loopback HTTP server recording every GET; ``/mo`` answers with ``mo_reply(hit)``.

    Kannel's sms-service ``get-url`` turns the body of a 200 text/plain answer into the
    reply MT; an empty body sends nothing back. Other paths answer an empty 200.
    """

    def __init__(self, mo_reply: MoReply | None = None) -> None:
        self.mo_reply = mo_reply
        self.hits: list[HttpHit] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                query = dict(
                    urllib.parse.parse_qsl(parts.query, keep_blank_values=True, encoding="latin-1")
                )
                hit = HttpHit(parts.path, query)
                with recorder._lock:
                    recorder.hits.append(hit)
                reply = ""
                if parts.path == "/mo" and recorder.mo_reply is not None:
                    reply = recorder.mo_reply(hit)
                body = reply.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the recorder's list is the log."""

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return f"http://{LOOPBACK}:{self.port}{path}"

    def matching(
        self, path: str, predicate: Callable[[HttpHit], bool] | None = None
    ) -> list[HttpHit]:
        """Hits on ``path`` (that satisfy ``predicate``) so far."""
        with self._lock:
            hits = list(self.hits)
        return [h for h in hits if h.path == path and (predicate is None or predicate(h))]

    def wait_for(
        self,
        path: str,
        predicate: Callable[[HttpHit], bool],
        what: str,
        timeout: float,
        watch: Sequence[ManagedProcess] = (),
    ) -> HttpHit:
        """The first hit on ``path`` satisfying ``predicate``, waiting up to ``timeout``."""

        def probe() -> HttpHit | None:
            found = self.matching(path, predicate)
            return found[0] if found else None

        try:
            return wait_until(probe, what, timeout, watch)
        except WaitTimeoutError as exc:
            seen = "\n".join(f"    {h.path} {dict(h.query)}" for h in self.matching(path))
            raise WaitTimeoutError(f"{exc}\nrequests on {path}:\n{seen or '    (none)'}") from None

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


# --- stkpay smsc-sim ------------------------------------------------------------------------


class SmscSim:
    """``stkpay smsc-sim`` as a subprocess, with its HTTP JSON control API.

    API (issue 2): ``POST /mo`` ``{"from","to","text"}`` -> ``{"message_id","esme","queued"}``;
    ``GET /mt?to=MSISDN[&after=CURSOR]`` -> ``{"messages": [...], "cursor": N}``;
    ``GET /stats``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        system_id: str,
        password: str,
        short_codes: Sequence[str] = (),
        receipt_delay: float | None = None,
        extra_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        self.smpp_port, self.api_port = free_ports(2)
        self.system_id = system_id
        args = [
            "smsc-sim",
            "--listen",
            f"tcp:{self.smpp_port}:interface={LOOPBACK}",
            "--system-id",
            system_id,
            "--password",
            password,
            "--api",
            f"tcp:{self.api_port}:interface={LOOPBACK}",
        ]
        for code in short_codes:
            args += ["--short-code", code]
        if receipt_delay is not None:
            args += ["--receipt-delay", f"{receipt_delay:g}"]
        args += list(extra_args)
        argv = [*(command if command is not None else stkpay_command()), *args]
        self.proc = ManagedProcess("stkpay smsc-sim", argv, workdir / "smsc-sim.log")

    @property
    def api(self) -> str:
        """Base URL of the control API."""
        return f"http://{LOOPBACK}:{self.api_port}"

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until both the SMPP listener and the control API are up."""
        wait_until(
            lambda: is_listening(self.smpp_port) and is_listening(self.api_port),
            f"smsc-sim listening on {self.smpp_port} (SMPP) and {self.api_port} (API)",
            timeout,
            [self.proc],
        )
        wait_until(self._stats_ok, "smsc-sim GET /stats", timeout, [self.proc])

    def _stats_ok(self) -> bool:
        try:
            return http_json("GET", f"{self.api}/stats", timeout=2.0)[0] == 200
        except OSError:
            return False

    def stats(self) -> Any:
        """``GET /stats``."""
        status, value = http_json("GET", f"{self.api}/stats")
        assert status == 200, f"GET /stats -> {status} {value!r}"
        return value

    def post_mo(self, sender: str, to: str, text: str) -> dict[str, Any]:
        """``POST /mo``: inject an MO from handset ``sender`` to short code ``to``."""
        status, value = http_json(
            "POST", f"{self.api}/mo", {"from": sender, "to": to, "text": text}
        )
        assert status in (200, 201, 202), f"POST /mo -> {status} {value!r}"
        assert isinstance(value, dict), value
        return value

    def mt(self, to: str, after: int | None = None) -> dict[str, Any]:
        """``GET /mt?to=...``: what has been delivered to handset ``to``."""
        query = {"to": to} if after is None else {"to": to, "after": str(after)}
        url = f"{self.api}/mt?{urllib.parse.urlencode(query)}"
        status, value = http_json("GET", url)
        assert status == 200, f"GET /mt -> {status} {value!r}"
        assert isinstance(value, dict), value
        return value

    def wait_mt(
        self,
        to: str,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float,
        watch: Sequence[ManagedProcess] = (),
    ) -> dict[str, Any]:
        """The first message in ``GET /mt?to=`` satisfying ``predicate``, within ``timeout``."""
        last: list[Any] = []

        def probe() -> dict[str, Any] | None:
            messages = self.mt(to).get("messages", [])
            last[:] = [messages]
            return next((m for m in messages if predicate(m)), None)

        try:
            return wait_until(probe, what, timeout, [self.proc, *watch])
        except WaitTimeoutError as exc:
            raise WaitTimeoutError(f"{exc}\nGET /mt?to={to} last answered: {last!r}") from None

    def stop(self) -> int:
        """Stop the simulator."""
        return self.proc.stop()


# --- Kannel ---------------------------------------------------------------------------------


def _conf_value(value: str | int) -> str:
    """One Kannel configuration value, quoted (Kannel's cfg parser strips the quotes)."""
    text = str(value)
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"value not representable in a Kannel config file: {text!r}")
    return f'"{text}"'


def _group(name: str, items: Mapping[str, str | int]) -> str:
    lines = [f"group = {name}"] + [f"{key} = {_conf_value(val)}" for key, val in items.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class KannelSettings:
    """What the rendered Kannel configuration wires together (all on loopback).

    The passwords are throwaway test values for processes that live only during the test.
    """

    workdir: Path
    smsc_port: int
    system_id: str
    password: str = field(repr=False)
    service_url: str
    admin_port: int
    smsbox_port: int
    sendsms_port: int
    smsc_id: str = "stkpay-sim"
    admin_password: str = field(default="kannel-admin", repr=False)
    sendsms_user: str = "tester"
    sendsms_password: str = field(default="sendsms-pw", repr=False)
    extra_smsc: Mapping[str, str | int] = field(default_factory=dict)

    @classmethod
    def on_free_ports(
        cls,
        workdir: Path,
        *,
        smsc_port: int,
        system_id: str,
        password: str,
        service_url: str,
        extra_smsc: Mapping[str, str | int] | None = None,
    ) -> KannelSettings:
        """Settings with admin, smsbox and sendsms ports chosen by the OS."""
        admin, smsbox, sendsms = free_ports(3)
        return cls(
            workdir=workdir,
            smsc_port=smsc_port,
            system_id=system_id,
            password=password,
            service_url=service_url,
            admin_port=admin,
            smsbox_port=smsbox,
            sendsms_port=sendsms,
            extra_smsc=dict(extra_smsc or {}),
        )


def render_config(s: KannelSettings) -> str:
    """The kannel.conf both boxes read.

    * core: admin and smsbox ports on loopback only, internal DLR storage, logs in workdir.
    * smsc: one SMPP 3.4 transceiver bind (``transceiver-mode``, ``interface-version = 34``)
      to the SMSC under test; short reconnect delay and enquire_link interval so a test
      never waits long for a (re)bind.
    * smsbox: sendsms HTTP on loopback; ``mo-recode`` so a UCS-2 MO reaches the service as
      UTF-8 when it can be.
    * sendsms-user: up to 10 concatenated parts per message (Kannel's default is 1).
    * sms-service: ``keyword = default`` calls ``service_url`` for every MO; the body of the
      answer goes back to the sender as an MT.
    """
    wd = s.workdir
    core: dict[str, str | int] = {
        "admin-port": s.admin_port,
        "admin-interface": LOOPBACK,
        "admin-password": s.admin_password,
        "admin-allow-ip": LOOPBACK,
        "smsbox-port": s.smsbox_port,
        "smsbox-interface": LOOPBACK,
        "box-deny-ip": "*.*.*.*",
        "box-allow-ip": LOOPBACK,
        "log-file": str(wd / "bearerbox.log"),
        "access-log": str(wd / "bearerbox-access.log"),
        "dlr-storage": "internal",
    }
    smsc: dict[str, str | int] = {
        "smsc": "smpp",
        "smsc-id": s.smsc_id,
        "host": LOOPBACK,
        "port": s.smsc_port,
        "transceiver-mode": "true",
        "smsc-username": s.system_id,
        "smsc-password": s.password,
        "system-type": "KANNEL",
        "interface-version": 34,
        "reconnect-delay": 1,
        "enquire-link-interval": 10,
        "max-pending-submits": 10,
    }
    smsc.update(s.extra_smsc)
    smsbox: dict[str, str | int] = {
        "bearerbox-host": LOOPBACK,
        "bearerbox-port": s.smsbox_port,
        "sendsms-port": s.sendsms_port,
        "sendsms-interface": LOOPBACK,
        "log-file": str(wd / "smsbox.log"),
        "access-log": str(wd / "smsbox-access.log"),
        "mo-recode": "true",
    }
    user: dict[str, str | int] = {
        "username": s.sendsms_user,
        "password": s.sendsms_password,
        "max-messages": 10,
        "concatenation": "true",
    }
    service: dict[str, str | int] = {
        "keyword": "default",
        "get-url": s.service_url,
        "max-messages": 10,
        "concatenation": "true",
        "catch-all": "true",
    }
    return "\n".join(
        [
            "# Rendered by tests/interop/kannel.py for one test run.",
            _group("core", core),
            _group("smsc", smsc),
            _group("smsbox", smsbox),
            _group("sendsms-user", user),
            _group("sms-service", service),
        ]
    )


@dataclass(frozen=True, slots=True)
class SmscStatus:
    """One line of the ``SMSC connections:`` block of bearerbox's ``status.txt``."""

    smsc_id: str
    line: str

    @property
    def online(self) -> bool:
        """Kannel reports the bind as up."""
        return "(online" in self.line


def parse_smsc_status(status_txt: str) -> dict[str, SmscStatus]:
    """The SMSC lines of ``status.txt`` by smsc-id (first word of each indented line)."""
    out: dict[str, SmscStatus] = {}
    lines = status_txt.splitlines()
    inside = False
    for line in lines:
        if line.startswith("SMSC connections:"):
            inside = True
            continue
        if inside:
            if not line.startswith((" ", "\t")):
                break
            words = line.split()
            if words:
                smsc_id = words[0].split("[", 1)[0]  # "admin-id[smsc-id]"
                out[smsc_id] = SmscStatus(smsc_id, line.strip())
    return out


class Kannel:
    """bearerbox + smsbox run from a rendered config; a context manager that always stops."""

    def __init__(self, settings: KannelSettings) -> None:
        self.settings = settings
        self.conf = settings.workdir / "kannel.conf"
        self.bearerbox: ManagedProcess | None = None
        self.smsbox: ManagedProcess | None = None

    @property
    def processes(self) -> list[ManagedProcess]:
        """The boxes started so far."""
        return [p for p in (self.bearerbox, self.smsbox) if p is not None]

    def start(self, timeout: float = 15.0) -> None:
        """Write kannel.conf, start bearerbox, then smsbox once bearerbox listens for boxes.

        Both run in the workdir at debug verbosity (``-v 0``); stderr goes to
        ``bearerbox.out`` / ``smsbox.out`` beside the configured log files.
        """
        s = self.settings
        s.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render_config(s), encoding="utf-8")
        self.bearerbox = ManagedProcess(
            "bearerbox",
            [str(BEARERBOX), "-v", "0", str(self.conf)],
            s.workdir / "bearerbox.out",
            cwd=s.workdir,
        )
        wait_until(
            lambda: is_listening(s.smsbox_port) and is_listening(s.admin_port),
            f"bearerbox listening on {s.smsbox_port} (boxes) and {s.admin_port} (admin)",
            timeout,
            self.processes,
        )
        self.smsbox = ManagedProcess(
            "smsbox",
            [str(SMSBOX), "-v", "0", str(self.conf)],
            s.workdir / "smsbox.out",
            cwd=s.workdir,
        )
        wait_until(
            lambda: is_listening(s.sendsms_port),
            f"smsbox sendsms port {s.sendsms_port}",
            timeout,
            self.processes,
        )

    def status(self) -> str:
        """bearerbox's ``/status.txt`` (admin interface)."""
        s = self.settings
        query = urllib.parse.urlencode({"password": s.admin_password})
        status, body = http_get(f"http://{LOOPBACK}:{s.admin_port}/status.txt?{query}")
        assert status == 200, f"status.txt -> {status}"
        return body.decode("utf-8", errors="replace")

    def smsc_status(self) -> SmscStatus | None:
        """This config's SMSC line in ``status.txt``."""
        try:
            return parse_smsc_status(self.status()).get(self.settings.smsc_id)
        except OSError:
            return None

    def wait_online(
        self, timeout: float = 20.0, watch: Sequence[ManagedProcess] = ()
    ) -> SmscStatus:
        """Wait until bearerbox reports the SMPP bind online and smsbox connected."""

        def probe() -> SmscStatus | None:
            st = self.smsc_status()
            if st is None or not st.online:
                return None
            return st if "smsbox:" in self.status() else None

        return wait_until(
            probe, f"Kannel SMSC {self.settings.smsc_id} online", timeout, [*self.processes, *watch]
        )

    def sendsms(self, **params: str | int) -> tuple[int, str]:
        """GET ``/cgi-bin/sendsms`` on smsbox with the sendsms-user's credentials added."""
        s = self.settings
        query = {"username": s.sendsms_user, "password": s.sendsms_password}
        query.update({k.replace("_", "-"): str(v) for k, v in params.items()})
        url = f"http://{LOOPBACK}:{s.sendsms_port}/cgi-bin/sendsms?{urllib.parse.urlencode(query)}"
        status, body = http_get(url)
        return status, body.decode("utf-8", errors="replace")

    def logs(self) -> str:
        """Tails of the boxes' logs, for failure messages."""
        return _tails(self.processes)

    def stop(self) -> None:
        """Stop smsbox, then bearerbox (each: SIGTERM, then SIGKILL after the grace time)."""
        for proc in (self.smsbox, self.bearerbox):
            if proc is not None:
                proc.stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- drive_smpp -----------------------------------------------------------------------------


class SmsboxStandIn:
    """Accepts (and holds) the smsbox connection ``drive_smpp`` makes to port 13001.

    drive_smpp was written to sit between bearerbox and a fake smsbox of its own: it dials
    bearerbox's smsbox port to answer MO with an MT. Without bearerbox, nothing listens
    there and drive_smpp panics three seconds after its first SMPP client connects. This
    stand-in accepts the connection and never sends, so drive_smpp's smsbox thread idles.
    When another process already listens on 13001 (another run's stand-in), that one serves.
    """

    def __init__(self, port: int = DRIVE_SMPP_SMSBOX_PORT) -> None:
        self.port = port
        self.connections: list[socket.socket] = []
        #: Another process already listens on the port and serves drive_smpp instead.
        self.shared = False
        self._sock: socket.socket | None = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            sock.close()
            if not is_listening(port):
                raise
            self.shared = True
            return
        sock.listen(4)
        sock.settimeout(0.1)
        self._sock = sock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="smsbox-stand-in", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        """Stop accepting and drop held connections."""
        if self._sock is None:
            return
        self._stopping.set()
        self._thread.join(2.0)
        self._sock.close()
        for conn in self.connections:
            conn.close()


@dataclass(frozen=True, slots=True)
class DriveSmppReport:
    """The counters drive_smpp logs when it exits (``main`` in test/drive_smpp.c)."""

    sent_to_esme: int  # deliver_sm sent
    received_from_esme: int  # submit_sm received ("sent to SMSC")
    submitted_texts: tuple[str, ...]  # short_message of each submit_sm, as logged
    handled: Mapping[str, int]  # PDUs handled, by type name


class DriveSmpp:
    """kannel-extras' ``drive_smpp`` SMSC on a free port, sending ``messages`` MOs.

    Behaviour, from its source and verified on the wire (see docs/interop.md): it answers
    bind_transmitter and bind_receiver only (bind_transceiver gets no answer at all), with an
    empty system_id; submit_sm_resp carries an empty message_id; once a receiver is bound it
    sends ``messages`` deliver_sm from 456 to 123 with texts "1", "2", ..., each followed by
    an enquire_link, sequence numbers from 0, and a receipted_message_id TLV on these
    ordinary MOs when the bind asked for interface_version 0x34. The whole program exits when
    its first client connection closes.
    """

    def __init__(self, workdir: Path, messages: int = 1) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.messages = messages
        self.stand_in = SmsboxStandIn()
        self.log = workdir / "drive_smpp.log"
        self.proc = ManagedProcess(
            "drive_smpp",
            [str(DRIVE_SMPP), "-v", "0", "-p", str(self.port), "-m", str(messages)],
            self.log,
            cwd=workdir,
        )
        try:
            wait_until(
                lambda: is_listening(self.port),
                f"drive_smpp listening on {self.port}",
                10.0,
                [self.proc],
            )
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        """HOST:PORT for ``--smsc``."""
        return f"{LOOPBACK}:{self.port}"

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for drive_smpp to end by itself (after its client disconnected)."""
        return self.proc.wait(timeout)

    def report(self) -> DriveSmppReport:
        """Parse the counters and per-PDU debug lines from its log."""
        text = self.proc.log_text()
        handled: dict[str, int] = {}
        submitted: list[str] = []
        counters: dict[str, int] = {}
        for line in text.splitlines():
            if "Handling SMPP PDU of type " in line:
                name = line.rsplit(" ", 1)[1]
                handled[name] = handled.get(name, 0) + 1
            elif "submit_sm: short_message = <" in line:
                submitted.append(line.split("short_message = <", 1)[1].rsplit(">", 1)[0])
            elif "Number of messages sent to " in line:
                key, _, value = line.split("Number of messages sent to ", 1)[1].partition(": ")
                counters[key] = int(value)
        return DriveSmppReport(
            sent_to_esme=counters.get("ESME", -1),
            received_from_esme=counters.get("SMSC", -1),
            submitted_texts=tuple(submitted),
            handled=handled,
        )

    def stop(self) -> None:
        """Stop drive_smpp (it panics on SIGTERM, by design) and the stand-in."""
        self.proc.stop()
        self.stand_in.close()
