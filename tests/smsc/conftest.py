"""Fixtures running the SMSC simulator on ephemeral loopback ports with the real reactor.

``smsc_sim`` gives a running simulator (SMPP and HTTP API listeners on 127.0.0.1, one
transceiver-capable account) as a :class:`SimHandle`; ``smsc_sim_factory`` starts more, with
any :class:`smsc.simulator.Simulator` keyword arguments (faults, receipt_delay, ...). Both
stop their listeners and close every connection at teardown. Tests using them run under
pytest-twisted (``@pytest_twisted.ensureDeferred`` / ``inlineCallbacks``) so that the
reactor runs while they wait.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_twisted

from smsc.simulator import Simulator, SimulatorService, make_service
from stkpay.config import Secret, SimAccount, SimulatorConfig

SIM_SYSTEM_ID = "stkpay"
SIM_PASSWORD = "secret"
SIM_SHORT_CODE = "10658888"


@dataclass
class SimHandle:
    """A running simulator: where to bind, as whom, and the core object itself."""

    host: str
    port: int
    api_port: int
    system_id: str
    password: str
    simulator: Simulator
    service: SimulatorService = field(repr=False)
    short_code: str = SIM_SHORT_CODE

    @property
    def api_url(self) -> str:
        """Base URL of the HTTP control API."""
        return f"http://{self.host}:{self.api_port}"


async def start_simulator(
    *, accounts: tuple[SimAccount, ...] | None = None, **simulator_kwargs: Any
) -> SimHandle:
    """Start a simulator on 127.0.0.1 ports chosen by the OS; stop it with ``stop_simulator``."""
    from twisted.internet import reactor

    if accounts is None:
        accounts = (
            SimAccount(
                system_id=SIM_SYSTEM_ID,
                password=Secret(SIM_PASSWORD),
                short_codes=(SIM_SHORT_CODE,),
            ),
        )
    simulator_kwargs.setdefault("rng", random.Random(2775))
    config = SimulatorConfig(
        listen="tcp:0:interface=127.0.0.1",
        api="tcp:0:interface=127.0.0.1",
        accounts=accounts,
    )
    service = make_service(config, reactor, **simulator_kwargs)
    service.startService()
    port, api_port = await service.when_listening()
    assert api_port is not None
    first = accounts[0]
    return SimHandle(
        host="127.0.0.1",
        port=port,
        api_port=api_port,
        system_id=first.system_id,
        password=first.password.reveal(),
        simulator=service.simulator,
        service=service,
        short_code=first.short_codes[0] if first.short_codes else SIM_SHORT_CODE,
    )


async def stop_simulator(handle: SimHandle) -> None:
    """Stop listening and close every connection of ``handle``'s simulator."""
    result = handle.service.stopService()
    if result is not None:
        await result


@pytest_twisted.async_yield_fixture
async def smsc_sim() -> AsyncIterator[SimHandle]:
    """A running simulator with one account (``stkpay``/``secret``, short code 10658888)."""
    handle = await start_simulator()
    yield handle
    await stop_simulator(handle)


@pytest_twisted.async_yield_fixture
async def smsc_sim_factory() -> AsyncIterator[Callable[..., Awaitable[SimHandle]]]:
    """``await smsc_sim_factory(**simulator_kwargs)`` starts a simulator; all stop at teardown."""
    started: list[SimHandle] = []

    async def start(**kwargs: Any) -> SimHandle:
        handle = await start_simulator(**kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await stop_simulator(handle)
