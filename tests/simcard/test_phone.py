"""The virtual phone (simcard/phone.py): screens as a person sees them, the menu path driven
through encoded CAT commands, the MOs in the outbox, MT text to the inbox and OTA commands to
the card with a PoR back, and a card moved to another phone."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from ota.apdu import CommandApdu
from ota.keystore import FileKeyStore
from simcard import phone as phone_module
from simcard.card import CALIBRATION_PATH
from simcard.phone import PhoneError, Screen, SmsReceived, SmsSent, VirtualPhone
from simcard.wallet_applet import WalletApplet
from stk_menus import wallet_mo
from stk_menus.cat import (
    CatError,
    DisplayText,
    TextString,
    decode_proactive_command,
    decode_terminal_response,
    terminal_response,
)
from tests.simcard.test_wallet_applet import (
    ICCID,
    IMEI,
    MSISDN,
    calibrated_for,
    make_store,
    platform_for,
    receiver_for,
    secured_action,
)

OTHER_IMEI = "490154203237518"


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    """Fresh masters."""
    return make_store(tmp_path)


@pytest.fixture
def phone(store: FileKeyStore) -> VirtualPhone:
    """A phone holding a fresh wallet card, switched on (its calibration MO drained)."""
    applet = WalletApplet.personalise(ICCID, store.card_keys(ICCID), rng=random.Random(3))
    phone = VirtualPhone(MSISDN, IMEI, applet)
    phone.power_on()
    phone.outbox()
    return phone


def test_power_on_shows_the_menu_and_sends_calibration_once(store: FileKeyStore) -> None:
    """Power-on shows SET UP MENU's items and sends the calibration MO on first use; once the
    card is calibrated for this handset, power-on sends nothing."""
    applet = WalletApplet.personalise(ICCID, store.card_keys(ICCID), rng=random.Random(3))
    phone = VirtualPhone(MSISDN, IMEI, applet)
    events = phone.power_on()
    assert events[0] == Screen(
        "menu", title="中国移动", items=("我的手机钱包", "我的一卡通", "手机票", "SIM卡信息")
    )
    assert isinstance(events[1], SmsSent) and events[1].action == "calibration"
    (mo,) = phone.outbox()
    assert isinstance(secured_action(receiver_for(store), mo), wallet_mo.Calibration)
    assert phone.outbox() == []
    applet.card.fs.write_binary(CALIBRATION_PATH, calibrated_for(IMEI))
    assert [type(e) for e in phone.power_on()] == [Screen]


def test_select_path_and_inputs_produce_screens_and_one_topup_mo(
    phone: VirtualPhone, store: FileKeyStore
) -> None:
    """select("我的手机钱包/充值") shows the submenu then the amount prompt; the PIN prompt is
    hidden; after the PIN the MO is sent and the notice shown; JSON never holds the PIN."""
    events = phone.select("我的手机钱包/充值")
    assert [e.kind for e in events if isinstance(e, Screen)] == ["select", "input"]
    assert events[-1] == Screen("input", prompt="请输入充值金额(元)", hidden=False)
    (pin_screen,) = phone.input("300")
    assert isinstance(pin_screen, Screen) and pin_screen.hidden
    done = phone.input("246810")
    assert isinstance(done[0], SmsSent) and done[0].action == "topup"
    assert done[1] == Screen("text", text="充值请求已发送,结果将以短信通知")
    assert phone.screen is None
    assert "246810" not in repr([e.to_json() for e in events + done])
    (mo,) = phone.outbox()
    action = secured_action(receiver_for(store), mo)
    assert isinstance(action, wallet_mo.TopUp) and action.amount == 30_000


def test_wrong_moves_are_refused(phone: VirtualPhone) -> None:
    """A label not on the menu, input with no prompt, input of the wrong length: PhoneError."""
    with pytest.raises(PhoneError):
        phone.select("我的手机钱包/转账")
    with pytest.raises(PhoneError):
        phone.input("100")
    phone.select("我的手机钱包/充值")
    with pytest.raises(PhoneError):
        phone.input("1234567")
    assert phone.cancel() == [] and phone.screen is None


def test_text_mt_goes_to_the_inbox(phone: VirtualPhone) -> None:
    """A UCS2 MT and a GSM 7-bit MT are decoded per data coding into the inbox."""
    (sms,) = phone.deliver(
        ["充值成功".encode("utf-16-be")], source="10658888", data_coding=8, udhi=False
    )
    assert sms == SmsReceived("充值成功", "10658888", 8)
    (plain,) = phone.deliver([b"Balance 1.00"], source="10658888", udhi=False)
    assert isinstance(plain, SmsReceived) and plain.text == "Balance 1.00"
    assert list(phone.inbox) == [sms, plain]
    assert sms.to_json() == {"event": "sms", "from": "10658888", "text": "充值成功"}


def test_ota_mt_runs_on_the_card_and_the_por_goes_back(
    phone: VirtualPhone, store: FileKeyStore
) -> None:
    """An OTA command (TP-PID 7F, UDH 70) reaches the endpoint; the PoR (UDH 71) is queued to
    the sender and verifies on the platform; a text never reaches the card."""
    platform = platform_for(store)

    out = platform.command(
        iccid=ICCID,
        msisdn=MSISDN,
        tar=bytes.fromhex("B00001"),
        apdus=[CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex("3F00"))],
    )
    events = phone.deliver(
        list(out.user_data), source="10658888", protocol_id=0x7F, data_coding=0xF6
    )
    assert events == [SmsSent("10658888", 1, por=True)]
    (por,) = phone.outbox()
    assert por.user_data[0][:3] == bytes.fromhex("027100")
    assert platform.receive_por(MSISDN, por.user_data[0]).ok
    assert phone.deliver(list(out.user_data), source="x", protocol_id=0, data_coding=0xF6)
    assert phone.outbox() == []


def test_change_imei_sends_a_new_calibration_mo(phone: VirtualPhone, store: FileKeyStore) -> None:
    """Moving the card to another handset sends a calibration MO with the new IMEI."""
    events = phone.change_imei(OTHER_IMEI)
    assert any(isinstance(e, SmsSent) and e.action == "calibration" for e in events)
    (mo,) = phone.outbox()
    action = secured_action(receiver_for(store), mo)
    assert isinstance(action, wallet_mo.Calibration) and action.imei == OTHER_IMEI


def test_balance_path_sends_right_away(phone: VirtualPhone) -> None:
    """余额查询 has no inputs: selecting it sends the balance MO and shows the notice."""
    events = phone.select("我的手机钱包/余额查询")
    assert [e.to_json()["event"] for e in events] == ["screen", "sms_sent", "screen"]
    assert len(phone.outbox()) == 1


def test_command_codings_are_cached_by_identity_and_by_value(phone: VirtualPhone) -> None:
    """The phone decodes each command from its encoding; the result is remembered by the
    command's identity (and its value): an equal command of its own decodes the same, and
    sessions go on when the identity caches have been emptied by other commands."""
    command = phone.applet.menu.node("我的手机钱包").select_item()
    decoded = phone_module._fetched(command)
    assert decoded == decode_proactive_command(command.encode())
    assert phone_module._fetched(command) is decoded
    twin = dataclasses.replace(command)
    assert twin is not command and phone_module._fetched(twin) == decoded
    answer = phone_module._answered(command, 1)
    assert answer == decode_terminal_response(terminal_response(command, item=1).encode())
    with pytest.raises(CatError):
        phone_module._answered(command, 99)
    for n in range(1, 256):  # more commands than the identity caches keep
        notice = DisplayText(TextString(f"notice {n}"), number=n)
        phone_module._fetched(notice)
        phone_module._answered(notice)
    for _ in range(2):
        events = phone.select("我的手机钱包/充值")
        assert events[-1] == Screen("input", prompt="请输入充值金额(元)", hidden=False)
        phone.input("1")
        assert isinstance(phone.input("123456")[0], SmsSent)
