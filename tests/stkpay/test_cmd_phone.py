"""``stkpay phone`` (stkpay/cmd_phone.py) against a simulator started in the test, through its
HTTP API: the scripted top-up prints screens and the MO as JSON lines (never the PIN), the MO
reaches the ESME and verifies, an SMS reply is printed, and the card state carries the MO
counter to the next run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from ota.smspp import parse_command_user_data
from simcard.fleet import iccid_for
from smsc.pdu import BindTransceiver
from stk_menus import wallet_mo
from stkpay import cmd_phone
from stkpay.config import load
from tests.simcard.test_wallet_applet import make_store, receiver_for
from tests.smsc.conftest import SimHandle, start_simulator, stop_simulator
from tests.smsc.test_simulator import FakeEsme, submit

MSISDN = "8613911112222"


def run_phone(*argv: str) -> int:
    """Parse ``stkpay phone ARGV`` with the module's own parser and run it."""
    parser = argparse.ArgumentParser(prog="stkpay")
    cmd_phone.register(parser.add_subparsers())
    args = parser.parse_args(["phone", *argv])
    return int(args.func(args, load(None, env={})))


@pytest_twisted.ensureDeferred
async def test_scripted_topup_prints_json_lines_and_reaches_the_esme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--select/--input: screens, the calibration and top-up MO, then the SMS reply, one JSON
    object per line; the MO verifies with the platform's keys; a second run goes on with the
    next MO counter from the state file."""
    smsc_sim = await start_simulator()
    try:
        await scripted(smsc_sim, tmp_path, capsys)
    finally:
        await stop_simulator(smsc_sim)


async def scripted(smsc_sim: SimHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The body of the scripted test, with a running simulator."""
    store = make_store(tmp_path)
    esme = FakeEsme(smsc_sim.simulator)
    esme.bind(BindTransceiver, smsc_sim.system_id, smsc_sim.password)
    common = (
        "--msisdn", MSISDN,
        "--sim-api", smsc_sim.api_url,
        "--key-file", str(tmp_path / "keys.json"),
        "--short-code", smsc_sim.short_code,
        "--state", str(tmp_path / "phone.json"),
    )  # fmt: skip
    reactor.callLater(  # type: ignore[attr-defined]
        1.0, lambda: esme.send(submit("充值成功".encode("utf-16-be"), to=MSISDN, data_coding=8))
    )
    code = await threads.deferToThread(
        run_phone,
        *common,
        "--select", "我的手机钱包/充值", "--input", "200", "--input", "135790",
        "--wait", "5", "--lang", "en",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert "135790" not in out
    kinds = [(e["event"], e.get("kind") or e.get("action")) for e in lines]
    assert kinds[:2] == [("screen", "menu"), ("sms_sent", "calibration")]
    assert ("screen", "input") in kinds and ("sms_sent", "topup") in kinds
    assert lines[-1] == {"event": "sms", "from": smsc_sim.short_code, "text": "充值成功"}
    receiver = receiver_for(store)
    mos = esme.ack_all()
    assert len(mos) == 2
    actions = [
        wallet_mo.decode(
            receiver.receive(
                iccid_for(MSISDN), parse_command_user_data([m.short_message])
            ).command.data
        )
        for m in mos
    ]
    assert isinstance(actions[1], wallet_mo.TopUp)
    assert actions[1].amount == 20_000 and actions[1].pin == "135790"
    assert actions[1].language is wallet_mo.Language.EN

    code = await threads.deferToThread(
        run_phone, *common, "--select", "我的手机钱包/余额查询", "--wait", "0"
    )
    assert code == 0
    # The card is still uncalibrated in this phone (nobody answered its calibration SMS), so
    # at this start-up it sends it again, with the state file's next counter; then the query.
    retry_mo, balance_mo = esme.ack_all()
    retried = receiver.receive(iccid_for(MSISDN), parse_command_user_data([retry_mo.short_message]))
    assert retried.command.counter == 3
    assert isinstance(wallet_mo.decode(retried.command.data), wallet_mo.Calibration)
    packet = parse_command_user_data([balance_mo.short_message])
    received = receiver.receive(iccid_for(MSISDN), packet)
    assert received.command.counter == 4 and not received.redelivered
    assert isinstance(wallet_mo.decode(received.command.data), wallet_mo.Balance)


def test_unknown_card_and_bad_path_are_one_line_errors(tmp_path: Path) -> None:
    """No key file: a CliError naming the card, not a traceback."""
    with pytest.raises(cmd_phone.CliError, match="cannot personalise"):
        run_phone(
            "--msisdn", MSISDN, "--key-file", str(tmp_path / "none.json"),
            "--state", str(tmp_path / "s.json"),
        )  # fmt: skip
