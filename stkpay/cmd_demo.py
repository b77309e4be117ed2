"""``stkpay demo``: the whole service on its embedded defaults, in one process.

Starts the SMSC simulator on loopback (ephemeral ports), binds stkpay's ESME to it over
real TCP, and exchanges messages both ways: long Chinese (UCS2) and GSM 7-bit MT with
delivery receipts, long MO from handsets reassembled by the ESME and answered. Prints
what each side saw and a summary; exit status 0 only when every check held.

Later issues add the wallet (top-ups, queries), calibration and an OTA push to this run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet import defer, task

from smsc.dlr import Receipt
from smsc.handset import MailboxDirectory
from smsc.reassembly import Message
from smsc.text import Encoding
from stkpay.config import Config, SimAccount
from stkpay.runner import run

PHONE_A = "8613800138000"
PHONE_B = "8613900139000"
SHORT_CODE = "10658888"

MT_TEXTS: tuple[tuple[str, str, str], ...] = (
    (
        "long Chinese (UCS2)",
        PHONE_A,
        "【手机钱包】尊敬的用户，您已成功开通手机钱包业务。现金账户可在营业厅、银行或充值卡充值；"
        "手机钱包卡为RF-SIM卡，单笔充值不超过500元，卡内余额不超过1000元，每日最多充值5次。"
        "请在STK菜单“我的手机钱包”中进行充值、余额查询和最近10笔交易查询。卡片不可挂失、不可找回，"
        "请妥善保管。",
    ),
    (
        "long GSM 7-bit with extension characters",
        PHONE_B,
        "Your wallet card is ready. Top up from your cash account in the STK menu: "
        "single top-up <= 500 CNY, card balance <= 1000 CNY, at most 5 top-ups a day. "
        "Fees [card swap, replacement] are waived during the trial: 0 EUR/0 € {promo}. "
        "Keep the card safe: it cannot be reported lost or recovered.",
    ),
    ("short GSM 7-bit", PHONE_A, "BAL: cash 100.00 CNY, card 35.50 CNY"),
)

MO_TEXTS: tuple[tuple[str, str, str], ...] = (
    (
        "long Chinese (UCS2)",
        PHONE_A,
        "余额查询。我想知道我的现金账户和手机钱包卡的余额，以及最近10笔交易明细，"
        "包括在食堂、便利店和地铁的消费记录，还有上周在营业厅的充值记录。谢谢！"
        "另外请问换手机以后是否需要重新做距离校准？",
    ),
    (
        "long GSM 7-bit",
        PHONE_B,
        "LAST 10 please. I paid at the canteen, the metro and the corner shop this week "
        "and topped up twice at the business hall; I want to check every amount and the "
        "balance left on the card before the weekend trip.",
    ),
)


@dataclass
class _Run:
    receipts: list[Receipt] = field(default_factory=list)
    mo: list[Message] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))

    def say(self, line: str = "") -> None:
        self.lines.append(line)
        print(line)
        sys.stdout.flush()


async def _wait_until(reactor: Any, cond: Any, timeout: float) -> bool:
    deadline = reactor.seconds() + timeout
    while not cond():
        if reactor.seconds() >= deadline:
            return False
        await task.deferLater(reactor, 0.02, lambda: None)
    return True


async def _demo(reactor: Any, args: argparse.Namespace, config: Config) -> int:
    from smsc.esme import Esme  # noqa: PLC0415 - Twisted imports only when running
    from smsc.message import OutboundMessage  # noqa: PLC0415
    from smsc.simulator import make_service  # noqa: PLC0415

    out = _Run()
    started = time.perf_counter()
    account = SimAccount()
    sim_cfg = replace(
        config.simulator,
        listen="tcp:0:interface=127.0.0.1",
        api="tcp:0:interface=127.0.0.1",
        accounts=(account,),
        receipt_delay=0.2,
        delivered_ratio=1.0,
    )
    directory = MailboxDirectory(retention=100)
    sim_service = make_service(sim_cfg, reactor, directory=directory, rng=random.Random(7))
    sim_service.startService()
    smpp_port, api_port = await sim_service.when_listening()
    sim = sim_service.simulator
    out.say(f"SMSC simulator: SMPP on 127.0.0.1:{smpp_port}, HTTP API on 127.0.0.1:{api_port}")

    esme_cfg = replace(
        config.smsc,
        host="127.0.0.1",
        port=smpp_port,
        system_id=account.system_id,
        password=account.password,
        source_addr=SHORT_CODE,
        bind="trx",
        registered_delivery=True,
    )

    def on_receipt(receipt: Receipt, token: object) -> None:
        out.receipts.append(receipt)

    esme: Esme | None = None

    def on_message(message: Message) -> defer.Deferred[None] | None:
        out.mo.append(message)
        if esme is not None:
            reply = OutboundMessage(
                destination=message.source,
                text=f"收到您的{message.parts}段短信，共{len(message.text())}字。",
                registered_delivery=False,
            )
            esme.send(reply)
        return None

    esme = Esme(esme_cfg, reactor=reactor, on_message=on_message, on_receipt=on_receipt)
    esme.startService()
    await esme.when_bound()
    out.say(f"stkpay ESME bound as transceiver '{account.system_id}'")
    out.say()

    # -- MT: the gateway answers phones -------------------------------------------------
    out.say("MT (stkpay -> SMSC -> handset)")
    expected_receipts = 0
    for label, phone, text in MT_TEXTS:
        result = await esme.send(OutboundMessage(destination=phone, text=text))
        expected_receipts += len(result.parts)
        ids = ", ".join(result.message_ids)
        out.say(
            f"  {label}: {len(text)} chars, {len(result.parts)} part(s), "
            f"{'accepted' if result.ok else 'REFUSED'} (ids {ids})"
        )
        out.check(f"MT {label} accepted", result.ok)
    got = await _wait_until(reactor, lambda: len(out.receipts) >= expected_receipts, 10.0)
    delivered = sum(1 for r in out.receipts if r.delivered_ok)
    out.say(f"  delivery receipts: {len(out.receipts)}/{expected_receipts}, {delivered} DELIVRD")
    out.check("every MT part got a delivery receipt", got)
    for label, phone, text in MT_TEXTS:
        texts = [m.message.text() for m in directory.messages(phone)]
        out.check(f"handset {phone} got the {label} text intact", text in texts)
    out.say()

    # -- MO: phones write to the service ------------------------------------------------
    out.say("MO (handset -> SMSC -> stkpay), each answered")
    for label, phone, text in MO_TEXTS:
        mo = sim.inject_mo(phone, SHORT_CODE, text=text)
        out.say(
            f"  {label} from {phone}: {len(text)} chars in {mo.parts} part(s) -> {mo.system_id}"
        )
    got = await _wait_until(reactor, lambda: len(out.mo) >= len(MO_TEXTS), 10.0)
    out.check("every MO reached the ESME", got)
    for label, _phone, text in MO_TEXTS:
        seen = [m for m in out.mo if m.text(default=Encoding.GSM7) == text]
        out.check(f"MO {label} reassembled intact", bool(seen))
    replies = await _wait_until(
        reactor,
        lambda: all(
            any(m.message.text().startswith("收到您的") for m in directory.messages(phone))
            for _, phone, _ in MO_TEXTS
        ),
        10.0,
    )
    out.check("every MO was answered", replies)
    for m in out.mo:
        out.say(f"  stkpay received from {m.source}: {m.parts} part(s): {m.text()[:40]}...")
    out.say()

    await esme.stopService()
    stats = sim.stats()["totals"]
    await sim_service.stopService()
    elapsed = time.perf_counter() - started

    # -- summary --------------------------------------------------------------------------
    out.say("Summary")
    out.say(f"  submit_sm      {stats['submit_sm']:>6}")
    out.say(f"  deliver_sm     {stats['deliver_sm']:>6}  (MO parts and receipts)")
    out.say(f"  receipts       {stats['receipts']:>6}")
    out.say(f"  MO messages    {stats['mo_messages']:>6}")
    out.say(f"  elapsed        {elapsed:>6.2f} s")
    failed = [what for what, ok in out.checks if not ok]
    for what, ok in out.checks:
        out.say(f"  [{'ok' if ok else 'FAILED'}] {what}")
    out.say()
    out.say("demo: all checks passed" if not failed else f"demo: {len(failed)} check(s) FAILED")
    return 0 if not failed else 1


def _demo_cmd(args: argparse.Namespace, config: Config) -> int:
    return run(lambda reactor: _demo(reactor, args, config))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    p = sub.add_parser("demo", help="run the whole service on embedded defaults, with a summary")
    p.set_defaults(func=_demo_cmd)
