"""Two gateway instances behind one SMSC account (docs/handlers.md, the paragraph after the
top-up state diagram): both bound to the simulator's account, which spreads MO over the
account's binds round-robin, so a top-up reaches one instance, which reserves the load and
sends the CREDIT FOR LOAD, while the card's PoR often reaches the other. That one has no
pending command for it: it verifies the PoR with the card's keys (``matched=False``) and
posts the pending load whose stored note (``loads.credit``) the TAC verifies.

Pinned on both backends (conftest.py's ``backend``): every top-up of every phone is confirmed
without any further contact from the phone and nothing stays pending; the cross-instance path
is shown taken (unmatched PoRs counted per instance, commands left pending at the sender); and
one instance stopped with loads in flight: the other posts them and keeps serving. After each,
:meth:`Rig.audit` and ``stkpay ledger verify``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest_twisted
from twisted.internet import threads

from ota.platform import PorResult
from stk_menus.replies import render
from stkpay.gateway import GatewayService
from tests.e2e.conftest import (
    CAPPED,
    CASH,
    FIRST,
    PHONES,
    SECOND,
    WAIT,
    Rig,
    ledger_config,
    stkpay,
)
from tests.smsc.test_esme_tcp import until

#: Yuan per phone per round: within 500 a top-up, SECOND's 50 of cash, CAPPED's 100 of room
#: under the card's 1000 (it holds 900 the platform never saw), 5 top-ups a local day.
ROUNDS: tuple[dict[str, int], ...] = (
    {FIRST: 100, SECOND: 10, CAPPED: 20},
    {FIRST: 200, SECOND: 20, CAPPED: 30},
    {FIRST: 50, SECOND: 15, CAPPED: 40},
)


def ok(amount: int, card: int, cash: int) -> str:
    return render("topup_ok", "zh", amount=amount, card_balance=card, cash_balance=cash)


@dataclass(frozen=True)
class Por:
    """A PoR an instance's OTA platform verified."""

    instance: int
    msisdn: str
    matched: bool


def record_pors(gateways: list[GatewayService]) -> list[Por]:
    """Every PoR each instance's platform verifies from now on (appended from its worker
    threads), by instance index."""
    seen: list[Por] = []
    for index, gateway in enumerate(gateways):
        platform = gateway.app.platform
        inner = platform.receive_por

        def receive_por(
            msisdn: str,
            user_data: bytes,
            *,
            iccid: str | None = None,
            _index: int = index,
            _inner: Callable[..., PorResult] = inner,
        ) -> PorResult:
            result = _inner(msisdn, user_data, iccid=iccid)
            seen.append(Por(_index, msisdn, result.matched))
            return result

        platform.receive_por = receive_por  # type: ignore[method-assign]
    return seen


class Books:
    """What each phone's next confirmation must say: the card mirror and the cash."""

    def __init__(self) -> None:
        self.card = dict.fromkeys(PHONES, 0)
        self.cash = dict(CASH)

    def topup(self, msisdn: str, yuan: int) -> str:
        self.card[msisdn] += yuan * 100
        self.cash[msisdn] -= yuan * 100
        return ok(yuan * 100, self.card[msisdn], self.cash[msisdn])


async def topup_all(rig: Rig, books: Books, amounts: dict[str, int]) -> None:
    """Every phone tops up at once; each gets its confirmation and nothing else."""
    before = {msisdn: len(rig.sms(msisdn)) for msisdn in PHONES}
    for msisdn, yuan in amounts.items():
        rig.topup(msisdn, yuan)
    for msisdn, yuan in amounts.items():
        assert (await rig.wait_sms(msisdn, before[msisdn] + 1))[before[msisdn] :] == [
            books.topup(msisdn, yuan)
        ]


def ledger_verify_cli(tmp: Path, ledger_url: str) -> subprocess.CompletedProcess[str]:
    """``stkpay ledger verify`` on the gateways' ledger (blocking)."""
    return stkpay(tmp, ledger_config(tmp, ledger_url, "verify.toml"), "ledger", "verify")


async def settled(rig: Rig) -> None:
    """Nothing pending, and ``stkpay ledger verify`` exits 0 (the rig audits at teardown)."""
    assert rig.ledger.pending_loads() == []
    for msisdn in PHONES:
        assert rig.ledger.wallet(msisdn).in_flight == 0
    verify = await threads.deferToThread(ledger_verify_cli, rig.tmp, rig.backend.ledger_url)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest_twisted.ensureDeferred
async def test_por_at_the_other_instance_posts_the_load(rig: Rig) -> None:
    """Two instances on one account. First round phone by phone: each top-up reaches the
    instance after the previous MO's (round-robin), its PoR the other one, which posts the
    load from the stored note. Then rounds with all phones at once. Every top-up confirmed
    with no further contact, nothing pending; the first instance still holds commands whose
    PoR the second settled."""
    second = await rig.add_gateway()
    assert rig.gateway is not None
    gateways = rig.gateways
    pors = record_pors(gateways)
    books = Books()

    first_round, *others = ROUNDS
    for msisdn, yuan in first_round.items():
        before = len(pors)
        assert await rig.topup_reply(msisdn, yuan) == [books.topup(msisdn, yuan)]
        (por,) = pors[before:]  # recorded before the confirmation was sent
        assert por.msisdn == msisdn and not por.matched, pors
    # Each of those CREDITs is still pending at the instance that sent it.
    assert sum(g.app.platform.pending for g in gateways) == len(first_round)
    for amounts in others:
        await topup_all(rig, books, amounts)

    await settled(rig)
    topups = sum(len(r) for r in ROUNDS)
    assert len(pors) == topups and {p.msisdn for p in pors} == set(PHONES)
    unmatched = [p for p in pors if not p.matched]
    assert len(unmatched) >= len(first_round)
    # Matched PoRs cleared their command; each unmatched one left its command at the sender.
    assert sum(g.app.platform.pending for g in gateways) == len(unmatched)
    assert second.running and rig.gateway.app.platform.pending > 0


@pytest_twisted.ensureDeferred
async def test_a_stopped_instance_loads_are_posted_by_the_other(rig: Rig) -> None:
    """Every phone tops up with its PoR held back in the network: the loads are reserved and
    the cards loaded. The instance that sent the most CREDITs stops (drains, unbinds); the
    PoRs, released, all reach the other one, which posts every load and confirms it; it then
    serves the next round alone."""
    await rig.add_gateway()
    gateways = rig.gateways
    pors = record_pors(gateways)
    books = Books()
    await topup_all(rig, books, ROUNDS[0])

    sent = [g.app.platform.pending for g in gateways]
    rig.network.hold_por.update(PHONES)
    amounts = ROUNDS[1]
    for msisdn, yuan in amounts.items():
        rig.topup(msisdn, yuan)
    await until(lambda: len(rig.network.held_por) == len(PHONES), WAIT, "the PoRs, held back")
    assert len(rig.ledger.pending_loads()) == len(PHONES)
    sent = [g.app.platform.pending - s for g, s in zip(gateways, sent, strict=True)]
    assert sum(sent) == len(PHONES), sent
    stopped = max(range(len(gateways)), key=lambda i: sent[i])
    survivor = gateways[1 - stopped]
    await gateways[stopped].stopService()
    assert not gateways[stopped].running and survivor.running

    before = len(pors)
    counts = {msisdn: len(rig.sms(msisdn)) for msisdn in PHONES}
    rig.network.hold_por.clear()
    assert rig.network.release_por() == len(PHONES)
    for msisdn, yuan in amounts.items():
        assert (await rig.wait_sms(msisdn, counts[msisdn] + 1))[counts[msisdn] :] == [
            books.topup(msisdn, yuan)
        ]
    late = pors[before:]
    assert {p.instance for p in late} == {1 - stopped}, late
    assert sum(not p.matched for p in late) == sent[stopped], late
    assert rig.ledger.pending_loads() == []

    await topup_all(rig, books, ROUNDS[2])
    assert {p.instance for p in pors[before + len(late) :]} == {1 - stopped}
    await settled(rig)
