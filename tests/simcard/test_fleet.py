"""The fleet (simcard/fleet.py): personalisation with the platform's keys, numbering, and the
phones behind the SMSC simulator in process: MO reach a fake ESME and verify, an OTA CREDIT
FOR LOAD comes back as MT, runs on the card and its PoR reaches the ESME; a text MT reaches the
phone's events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ota.commands import get_response
from ota.keys import KeyName
from ota.pboc import CreditForLoad, InitializeForLoadResponse, mac2_load, verify_tac_load
from ota.smspp import parse_command_user_data
from simcard.fleet import Fleet, InProcessNetwork, iccid_for, imei_for
from simcard.phone import SmsReceived
from simcard.wallet_applet import WALLET_TAR
from smsc.pdu import ESM_UDHI, BindTransceiver, DeliverSm
from smsc.simulator import Simulator
from stk_menus import wallet_mo
from tests.simcard.test_wallet_applet import make_store, platform_for, receiver_for
from tests.smsc.test_simulator import SHORT_CODE, FakeEsme, make_sim, submit

FIRST = "8613900000001"


def test_numbering_and_personalisation(tmp_path: Path) -> None:
    """MSISDNs count up, ICCIDs and IMEIs carry valid Luhn digits, models go round robin with
    each phone's A within 1 dB of its model's, and each card holds its own keys."""
    store = make_store(tmp_path)
    fleet = Fleet(store, count=4, first_msisdn=FIRST)
    assert list(fleet.phones) == [str(int(FIRST) + i) for i in range(4)]
    assert iccid_for(FIRST) == "8986008613900000001" + iccid_for(FIRST)[-1]
    assert len(iccid_for(FIRST)) == 20
    assert imei_for("35693803", 564380) == "356938035643809"  # docs/protocol.md's IMEI
    entries = list(fleet)
    assert entries[0].model.tac == entries[3].model.tac != entries[1].model.tac
    for entry in entries:
        assert abs(entry.a_db - entry.model.a_db) < 1
        assert entry.phone.imei.startswith(entry.model.tac)
        iccid = entry.phone.card.iccid
        assert iccid == iccid_for(entry.phone.msisdn)
        assert entry.phone.applet.kic == 0x12
    mo = fleet[FIRST].phone.power_on()
    assert mo and fleet[FIRST].phone.outbox()


class Rig:
    """A simulator on a fake clock whose handsets are the fleet, with a fake ESME bound."""

    def __init__(self, tmp: Path) -> None:
        self.store = make_store(tmp)
        self.fleet = Fleet(self.store, count=2, first_msisdn=FIRST, short_code=SHORT_CODE)
        self.queue: list[Callable[[], object]] = []
        holder: list[Simulator] = []

        def send_mo(*args: Any, **kwargs: Any) -> object:
            return holder[0].submit_mo(*args, **kwargs)

        self.network = InProcessNetwork(
            self.fleet,
            send_mo=send_mo,
            later=self.queue.append,
        )
        self.sim, self.clock = make_sim(directory=self.network)
        holder.append(self.sim)
        self.esme = FakeEsme(self.sim)
        self.esme.bind(BindTransceiver, "esme", "pw")
        self.receiver = receiver_for(self.store)
        self.platform = platform_for(self.store)

    def pump(self) -> list[DeliverSm]:
        """Run what the phones scheduled, then take what reached the ESME."""
        while self.queue:
            self.queue.pop(0)()
        self.clock.advance(0)
        return self.esme.ack_all()


def test_phones_over_the_simulator_in_process(tmp_path: Path) -> None:
    """Calibration and top-up MO reach the ESME as deliver_sm (UDHI, TP-PID 7F, DCS F6) and
    verify; the platform's CREDIT FOR LOAD as MT credits the card; the PoR comes back and its
    TAC verifies; a text MT lands in the phone's events."""
    rig = Rig(tmp_path)
    iccid = iccid_for(FIRST)
    rig.network.act(FIRST, lambda p: p.power_on())
    (calibration,) = rig.pump()
    assert (calibration.esm_class & ESM_UDHI, calibration.protocol_id) == (ESM_UDHI, 0x7F)
    assert calibration.data_coding == 0xF6 and calibration.source_addr == FIRST
    received = rig.receiver.receive(iccid, parse_command_user_data([calibration.short_message]))
    assert isinstance(wallet_mo.decode(received.command.data), wallet_mo.Calibration)

    rig.network.act(FIRST, lambda p: p.select("我的手机钱包/充值"))
    rig.network.act(FIRST, lambda p: p.input("100"))
    rig.network.act(FIRST, lambda p: p.input("123456"))
    (mo,) = rig.pump()
    packet = parse_command_user_data([mo.short_message])
    action = wallet_mo.decode(rig.receiver.receive(iccid, packet).command.data)
    assert isinstance(action, wallet_mo.TopUp) and action.amount == 10_000

    keys = rig.store.card_keys(iccid)
    init = InitializeForLoadResponse.from_bytes(action.load_init)
    when = dt.datetime(2024, 6, 1, 9, 0, 0)
    mac2 = mac2_load(
        keys.key(KeyName.DLK),
        random=init.random,
        online_counter=init.online_counter,
        amount=action.amount,
        terminal_id=action.terminal_id,
        date=when.date(),
        time=when.time(),
    )
    apdus = [CreditForLoad(when.date(), when.time(), mac2).to_apdu(), get_response(4)]
    out = rig.platform.command(iccid=iccid, msisdn=FIRST, tar=WALLET_TAR, apdus=apdus)
    (user_data,) = out.user_data
    rig.esme.send(
        submit(user_data, to=FIRST, esm_class=ESM_UDHI, protocol_id=0x7F, data_coding=0xF6)
    )
    (por_mo,) = rig.pump()
    por = rig.platform.receive_por(FIRST, por_mo.short_message)
    assert por.ok and por.response is not None
    assert verify_tac_load(
        keys.key(KeyName.DTK),
        new_balance=10_000,
        online_counter=0,
        amount=10_000,
        terminal_id=action.terminal_id,
        date=when.date(),
        time=when.time(),
        tac=por.response.last.data,
    )
    assert rig.fleet[FIRST].phone.applet.purse.balance == 10_000

    rig.esme.send(submit("充值成功".encode("utf-16-be"), to=FIRST, data_coding=8))
    assert rig.pump() == []
    texts = [e for e in rig.fleet[FIRST].events if isinstance(e, SmsReceived)]
    assert texts == [SmsReceived("充值成功", SHORT_CODE, 8)]
    rig.esme.send(submit(b"hi", to="8613700000000"))
    rig.pump()
    box = rig.network.fallback.mailbox("8613700000000")
    assert box is not None and len(box) == 1
