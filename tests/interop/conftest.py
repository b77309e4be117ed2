"""Fixtures for the Kannel interop tests.

Kannel is an optional system package: where it is missing these tests skip, except under
``CI=true`` where a missing Kannel fails the run (``make test`` installs it, so its absence
there is a broken environment, not a reason to pass). Every process a fixture starts is
stopped in its teardown, and a failing test gets the tails of their logs in its report.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.interop.kannel import (
    HttpHit,
    HttpRecorder,
    Kannel,
    KannelSettings,
    ManagedProcess,
    SmscSim,
    drive_smpp_missing,
    kannel_missing,
)

#: The short code Kannel's bind serves on the simulator; MOs to it are routed to Kannel.
SHORT_CODE = "10086"
#: Credentials the simulator accepts and Kannel binds with (throwaway test values).
SYSTEM_ID = "kannel"
PASSWORD = "kannelpw"  # SMPP 3.4 §4.1: at most 8 octets; Kannel truncates longer


def require_installed(missing: list[str], package: str) -> None:
    """Skip when ``missing`` is not empty; under ``CI=true`` fail instead."""
    if not missing:
        return
    reason = f"{package} is not installed ({', '.join(missing)} missing)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true it is required (make test installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kannel_installed() -> None:
    """bearerbox and smsbox (Debian package kannel): skip without, fail under CI=true."""
    require_installed(kannel_missing(), "Kannel (Debian package kannel)")


@pytest.fixture(scope="session")
def drive_smpp_installed() -> None:
    """drive_smpp (Debian package kannel-extras): skip without, fail under CI=true."""
    require_installed(drive_smpp_missing(), "Kannel's test SMSC (Debian package kannel-extras)")


def mo_reply(hit: HttpHit) -> str:
    """What the test's sms-service answers to an MO: its length and sender, in ASCII."""
    text = hit.text("text", hit.get("charset") or "utf-8")
    return f"ack {len(text)} chars from {hit.get('from').lstrip('+')}"


@pytest.fixture(scope="module")
def recorder() -> Iterator[HttpRecorder]:
    """The HTTP server Kannel's sms-service and dlr-url call."""
    rec = HttpRecorder(mo_reply)
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def smsc_sim(kannel_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmscSim]:
    """``stkpay smsc-sim`` with one account for Kannel, serving :data:`SHORT_CODE`."""
    sim = SmscSim(
        tmp_path_factory.mktemp("smsc-sim"),
        system_id=SYSTEM_ID,
        password=PASSWORD,
        short_codes=[SHORT_CODE],
        receipt_delay=0.2,
    )
    try:
        sim.wait_ready()
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def kannel(
    smsc_sim: SmscSim, recorder: HttpRecorder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kannel]:
    """bearerbox + smsbox bound (transceiver) to the simulator, MO service -> recorder."""
    service_url = recorder.url("/mo") + "?from=%p&to=%P&text=%a&coding=%c&charset=%C&smsc=%i"
    settings = KannelSettings.on_free_ports(
        tmp_path_factory.mktemp("kannel"),
        smsc_port=smsc_sim.smpp_port,
        system_id=SYSTEM_ID,
        password=PASSWORD,
        service_url=service_url,
    )
    with Kannel(settings) as box:
        box.wait_online(watch=[smsc_sim.proc])
        yield box


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, append the log tails of the interop processes the test used."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        procs: list[ManagedProcess] = []
        for value in funcargs.values():
            if isinstance(value, Kannel):
                procs += value.processes
            elif isinstance(value, SmscSim):
                procs.append(value.proc)
        for proc in procs:
            report.sections.append((f"interop log: {proc.name}", proc.describe(40)))
    return report


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A per-test directory for process logs."""
    return tmp_path
