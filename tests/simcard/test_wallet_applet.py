"""The wallet applet (simcard/wallet_applet.py): the menu walk as CAT commands, secured MO the
platform verifies, the MO counter across restarts, CREDIT FOR LOAD over OTA with its TAC, the
load proof on the next contact, and the calibration MO on IMEI change."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibration import profile
from calibration.imei import parse_imei
from ota.apdu import CommandApdu
from ota.commands import get_response
from ota.errors import ResponseStatus
from ota.keys import CardKeys, KeyAlgorithm, KeyName
from ota.keystore import FileKeyStore, generate_keyset
from ota.pboc import (
    CreditForLoad,
    InitializeForLoadResponse,
    mac2_load,
    verify_mac1_load,
    verify_tac_load,
)
from ota.platform import OtaPlatform, PorResult
from ota.receiver import MemoryHistory, SecuredMoReceiver
from ota.secured_packet import decode_command_header
from ota.smspp import parse_command_user_data, response_user_data
from simcard.card import CALIBRATION_PATH
from simcard.ota_endpoint import OtaEndpoint
from simcard.wallet_applet import (
    APPLET_VERSION,
    TERMINAL_ID,
    WALLET_TAR,
    AppletState,
    Outgoing,
    WalletApplet,
    WalletAppletError,
)
from stk_menus import wallet_mo
from stk_menus.cat import (
    DisplayText,
    GeneralResult,
    GetInput,
    GetInputQualifier,
    SelectItem,
    terminal_response,
)
from stk_menus.menu import MenuTree

ICCID = "8986001234567890123"
MSISDN = "8613912345678"
IMEI = "356938035643809"


@dataclass
class MemoryCounters:
    """A CounterStore in memory (the platform's sending counters)."""

    last: dict[tuple[str, str], int] = field(default_factory=dict)

    def next(self, iccid: str, keyset: str) -> int:
        value = self.last.get((iccid, keyset), 0) + 1
        self.last[(iccid, keyset)] = value
        return value

    def peek(self, iccid: str, keyset: str) -> int | None:
        return self.last.get((iccid, keyset))

    def set_at_least(self, iccid: str, keyset: str, value: int) -> int:
        self.last[(iccid, keyset)] = max(value, self.last.get((iccid, keyset), 0))
        return self.last[(iccid, keyset)]

    def close(self) -> None:
        pass


def make_store(tmp: Path, algorithm: KeyAlgorithm = KeyAlgorithm.AES) -> FileKeyStore:
    """A key file with fresh masters for key set "ota" v1."""
    store = FileKeyStore(tmp / "keys.json")
    generate_keyset(store, "ota", 1, algorithm)
    return store


def platform_for(store: FileKeyStore) -> OtaPlatform:
    """The platform's OTA sender with in-memory counters and a fixed clock."""
    return OtaPlatform(store, MemoryCounters(), clock=lambda: 0.0)


def receiver_for(store: FileKeyStore) -> SecuredMoReceiver:
    """The platform's receiving entity for wallet MO."""
    return SecuredMoReceiver(store, MemoryHistory(), tars=[wallet_mo.PLATFORM_TAR])


def walk(applet: WalletApplet, *choices: int | str) -> object:
    """Drive a session: top-level item, then items (int) or input texts (str)."""
    first, *rest = choices
    assert isinstance(first, int)
    shown: object = applet.envelope_menu_selection(first)
    for choice in rest:
        assert isinstance(shown, SelectItem | GetInput | DisplayText)
        if isinstance(choice, int):
            shown = applet.terminal_response(terminal_response(shown, item=choice))
        else:
            shown = applet.terminal_response(terminal_response(shown, text=choice))
    return shown


def secured_action(
    receiver: SecuredMoReceiver, outgoing: Outgoing, iccid: str = ICCID
) -> wallet_mo.WalletMo:
    """Verify an MO as the platform does and decode its action."""
    packet = parse_command_user_data(list(outgoing.user_data))
    received = receiver.receive(iccid, packet)
    assert not received.redelivered
    return wallet_mo.decode(received.command.data)


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    """Key file with AES OTA keys and 3DES purse keys."""
    return make_store(tmp_path)


@pytest.fixture
def keys(store: FileKeyStore) -> CardKeys:
    """The card's own keys."""
    return store.card_keys(ICCID, "ota")


@pytest.fixture
def applet(keys: CardKeys) -> WalletApplet:
    """A fresh card with the wallet applet, deterministic purse random."""
    return WalletApplet.personalise(ICCID, keys, rng=random.Random(7))


def topup(applet: WalletApplet, yuan: str, pin: str = "123456") -> Outgoing:
    """充值 with ``yuan`` and ``pin``: the secured MO."""
    out = walk(applet, 1, 1, yuan, pin)
    assert isinstance(out, Outgoing)
    return out


def test_menu_walk_issues_the_menu_tree_commands(applet: WalletApplet) -> None:
    """SET UP MENU, SELECT ITEM of the wallet, GET INPUT amount then hidden PIN, the MO, then
    the notice by DISPLAY TEXT, then the session ends."""
    tree = MenuTree.load()
    assert applet.setup_menu().encode() == tree.setup_menu().encode()
    shown = applet.envelope_menu_selection(1)
    assert isinstance(shown, SelectItem)
    assert shown.encode() == tree.node("我的手机钱包").select_item().encode()
    amount = applet.terminal_response(terminal_response(shown, item=1))
    assert isinstance(amount, GetInput)
    assert not amount.qualifier & GetInputQualifier.HIDDEN
    pin = applet.terminal_response(terminal_response(amount, text="200"))
    assert isinstance(pin, GetInput) and pin.qualifier & GetInputQualifier.HIDDEN
    out = applet.terminal_response(terminal_response(pin, text="123456"))
    assert isinstance(out, Outgoing)
    assert out.destination == "10658888" and out.protocol_id == 0x7F and out.data_coding == 0xF6
    assert out.user_data[0][:3] == bytes.fromhex("027000")
    header = decode_command_header(out.user_data[0][3:])
    assert header.spi.to_bytes() == bytes.fromhex("1600")
    assert (header.kic, header.kid, header.tar) == (0x12, 0x12, wallet_mo.PLATFORM_TAR)
    notice = applet.message_sent(out)
    assert isinstance(notice, DisplayText)
    assert notice.encode() == tree.node("我的手机钱包/充值").display_text().encode()  # type: ignore[union-attr]
    assert applet.terminal_response(terminal_response(notice)) is None
    assert not applet.in_session


def test_topup_mo_verifies_and_carries_mac1(
    applet: WalletApplet, store: FileKeyStore, keys: CardKeys
) -> None:
    """The top-up MO verifies with the platform's keys, decodes to the amount in fen and the
    PIN, and its INITIALIZE FOR LOAD answer has a MAC1 the platform accepts."""
    action = secured_action(receiver_for(store), topup(applet, "200", "654321"))
    assert isinstance(action, wallet_mo.TopUp)
    assert action.amount == 20_000 and action.pin == "654321"
    assert action.terminal_id == TERMINAL_ID
    init = InitializeForLoadResponse.from_bytes(action.load_init)
    assert init.old_balance == 0 and init.online_counter == 0 == action.online_counter
    assert action.load_proof is None
    assert verify_mac1_load(keys.key(KeyName.DLK), init, 20_000, TERMINAL_ID)
    assert not verify_mac1_load(keys.key(KeyName.DLK), init, 20_100, TERMINAL_ID)


def test_mo_counter_increases_and_survives_a_restart(
    applet: WalletApplet, store: FileKeyStore, keys: CardKeys
) -> None:
    """Every MO takes the next counter; an applet rebuilt from its saved state goes on above
    it, so the platform accepts its MO (no replay)."""
    receiver = receiver_for(store)
    counters = []
    for path in ((1, 2), (1, 3)):
        out = walk(applet, *path)
        assert isinstance(out, Outgoing)
        secured_action(receiver, out)
        counters.append(out.counter)
        applet.message_sent(out)
    assert counters == [1, 2]
    saved = AppletState.from_json(applet.state.to_json())
    again = WalletApplet(applet.card, applet.purse, keys, state=saved)
    out = walk(again, 1, 2)
    assert isinstance(out, Outgoing) and out.counter == 3
    assert isinstance(secured_action(receiver, out), wallet_mo.Balance)
    fresh = WalletApplet(applet.card, applet.purse, keys)  # state lost: counter 1 again
    out = walk(fresh, 1, 3)  # counter 1 was a balance query: other octets, a replay
    assert isinstance(out, Outgoing)
    with pytest.raises(ValueError, match="counter"):
        secured_action(receiver, out)


def credit(
    endpoint: OtaEndpoint,
    platform: OtaPlatform,
    keys: CardKeys,
    action: wallet_mo.TopUp,
    when: dt.datetime,
) -> PorResult:
    """The platform's CREDIT FOR LOAD for ``action`` through OTA; the verified PoR."""
    init = InitializeForLoadResponse.from_bytes(action.load_init)
    mac2 = mac2_load(
        keys.key(KeyName.DLK),
        random=init.random,
        online_counter=init.online_counter,
        amount=action.amount,
        terminal_id=action.terminal_id,
        date=when.date(),
        time=when.time(),
    )
    # The compact remote command carries no Le: the card answers 6104 and the TAC comes with
    # GET RESPONSE (TS 102 221 §12.1.1), which the script adds.
    apdus = [CreditForLoad(when.date(), when.time(), mac2).to_apdu(), get_response(4)]
    out = platform.command(iccid=ICCID, msisdn=MSISDN, tar=WALLET_TAR, apdus=apdus)
    outcome = endpoint.receive(parse_command_user_data(list(out.user_data)))
    assert outcome.response is not None
    return platform.receive_por(MSISDN, response_user_data(outcome.response))


def test_credit_for_load_over_ota_credits_the_purse_and_the_por_carries_the_tac(
    applet: WalletApplet, store: FileKeyStore, keys: CardKeys
) -> None:
    """CREDIT FOR LOAD with the platform's MAC2, sent to the applet's TAR, credits the purse;
    the PoR's TAC verifies; the next top-up carries that load's proof (tag 87)."""
    receiver, platform = receiver_for(store), platform_for(store)
    endpoint = applet.ota_endpoint()
    action = secured_action(receiver, topup(applet, "100"))
    assert isinstance(action, wallet_mo.TopUp)
    when = dt.datetime(2024, 5, 1, 12, 30, 5)
    por = credit(endpoint, platform, keys, action, when)
    assert por.ok and por.status is ResponseStatus.POR_OK and por.response is not None
    tac = por.response.last.data
    assert applet.purse.balance == 10_000 and applet.purse.online_counter == 1
    assert verify_tac_load(
        keys.key(KeyName.DTK),
        new_balance=10_000,
        online_counter=0,
        amount=10_000,
        terminal_id=TERMINAL_ID,
        date=when.date(),
        time=when.time(),
        tac=tac,
    )
    applet.message_sent(Outgoing("x", ()))
    nxt = secured_action(receiver, topup(applet, "50"))
    assert isinstance(nxt, wallet_mo.TopUp)
    assert nxt.online_counter == 1
    assert nxt.load_proof is not None
    assert (nxt.load_proof.counter, nxt.load_proof.tac) == (0, tac)
    balance = secured_action(receiver, walk(applet, 1, 2))  # type: ignore[arg-type]
    assert isinstance(balance, wallet_mo.Balance)
    assert balance.online_counter == 1 and balance.load_proof == nxt.load_proof


def test_wrong_mac2_is_refused_by_the_purse(
    applet: WalletApplet, store: FileKeyStore, keys: CardKeys
) -> None:
    """A CREDIT FOR LOAD whose MAC2 is not the card's: the PoR reports 9302, no money moves."""
    platform = platform_for(store)
    endpoint = applet.ota_endpoint()
    topup(applet, "100")
    when = dt.datetime(2024, 5, 1, 12, 0, 0)
    apdu = CreditForLoad(when.date(), when.time(), bytes(4)).to_apdu()
    out = platform.command(iccid=ICCID, msisdn=MSISDN, tar=WALLET_TAR, apdus=[apdu])
    outcome = endpoint.receive(parse_command_user_data(list(out.user_data)))
    assert outcome.response is not None
    por = platform.receive_por(MSISDN, response_user_data(outcome.response))
    assert not por.ok and por.response is not None and por.response.last.sw == 0x9302
    assert applet.purse.balance == 0


def test_rfm_update_of_the_calibration_file_through_the_endpoint(
    applet: WalletApplet, store: FileKeyStore
) -> None:
    """The RFM TAR reaches the card's file system: an UPDATE BINARY of EF calibration lands,
    and the next calibration MO carries the new content."""
    platform = platform_for(store)
    endpoint = applet.ota_endpoint()
    content = bytes(range(32))
    apdus = [
        CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex(f)) for f in ("3F00", "7F50", "6F60")
    ]
    apdus.append(CommandApdu(0x00, 0xD6, 0x00, 0x00, content))
    out = platform.command(iccid=ICCID, msisdn=MSISDN, tar=bytes.fromhex("B00001"), apdus=apdus)
    outcome = endpoint.receive(parse_command_user_data(list(out.user_data)))
    assert outcome.status is ResponseStatus.POR_OK
    assert applet.card.fs.read_binary(CALIBRATION_PATH) == content
    mo = applet.provide_local_information(IMEI)
    assert mo is not None
    action = secured_action(receiver_for(store), mo)
    assert isinstance(action, wallet_mo.Calibration) and action.profile == content


def test_calibration_mo_on_first_use_and_imei_change(
    applet: WalletApplet, store: FileKeyStore
) -> None:
    """PROVIDE LOCAL INFORMATION: the first IMEI and every new one produce a calibration MO
    (ICCID, IMEI, applet version, calibration file); the same IMEI again produces nothing."""
    receiver = receiver_for(store)
    first = applet.provide_local_information(IMEI)
    assert first is not None and first.action is wallet_mo.Action.CALIBRATION
    action = secured_action(receiver, first)
    assert isinstance(action, wallet_mo.Calibration)
    assert (action.iccid, action.imei, action.applet_version) == (ICCID, IMEI, APPLET_VERSION)
    assert action.profile == applet.calibration_file() and len(action.profile) == 32
    applet.card.fs.write_binary(CALIBRATION_PATH, calibrated_for(IMEI))
    assert applet.provide_local_information(IMEI) is None
    other = "490154203237518"
    second = applet.provide_local_information(other)
    assert second is not None
    changed = secured_action(receiver, second)
    assert isinstance(changed, wallet_mo.Calibration) and changed.imei == other
    with pytest.raises(WalletAppletError):
        applet.provide_local_information("12345")


def calibrated_for(imei: str) -> bytes:
    """A calibration file written by SMS calibration for ``imei``."""
    return profile.encode(
        profile.CalibrationRecord(
            profile.Method.SMS,
            payment_dbm=Decimal("-5.5"),
            imei=parse_imei(imei),
            calibrated_on=dt.date(2026, 11, 27),
            a_db=Decimal(10),
        )
    )


def test_uncalibrated_card_retries_its_calibration_mo_with_back_off(
    applet: WalletApplet, store: FileKeyStore
) -> None:
    """In the same phone, while the file is not calibrated for its IMEI (command or PoR lost,
    model unknown), the card sends the calibration MO again at the 1st, 2nd, 4th and 8th
    start-up after the last one, each with a new counter; once calibrated it stops, and the
    back-off starts over."""
    receiver = receiver_for(store)
    assert applet.provide_local_information(IMEI) is not None
    sent = []
    for start in range(1, 11):
        mo = applet.provide_local_information(IMEI)
        if mo is not None:
            action = secured_action(receiver, mo)  # authentic, and a fresh counter
            assert isinstance(action, wallet_mo.Calibration) and action.imei == IMEI
            sent.append(start)
    assert sent == [1, 2, 4, 8]
    applet.card.fs.write_binary(CALIBRATION_PATH, calibrated_for(IMEI))
    assert all(applet.provide_local_information(IMEI) is None for _ in range(5))
    assert applet.state.uncalibrated_starts == 0
    restored = AppletState.from_json(applet.state.to_json())
    assert restored == applet.state


def test_purse_cap_refused_on_the_card_sends_nothing(applet: WalletApplet) -> None:
    """A top-up above the card's cap is refused by INITIALIZE FOR LOAD (6985): the applet shows
    why and sends no MO; its counter does not move."""
    shown = walk(applet, 1, 1, "1001", "123456")
    assert isinstance(shown, DisplayText) and "上限" in shown.text.text
    assert applet.mo_counter == 0
    assert applet.terminal_response(terminal_response(shown)) is None


def test_cancel_ends_the_session_and_out_of_order_is_refused(applet: WalletApplet) -> None:
    """The user backing out ends the session; a response to no command, or to another type of
    command, is the caller's error."""
    shown = walk(applet, 1, 1)
    assert isinstance(shown, GetInput)
    ended = terminal_response(shown, GeneralResult.SESSION_TERMINATED_BY_USER)
    assert applet.terminal_response(ended) is None
    with pytest.raises(WalletAppletError):
        applet.terminal_response(ended)
    select = applet.envelope_menu_selection(1)
    assert isinstance(select, SelectItem)
    with pytest.raises(WalletAppletError):
        applet.terminal_response(terminal_response(shown, text="1"))
    with pytest.raises(WalletAppletError):
        applet.envelope_menu_selection(99)


def test_card_leaf_shows_its_text(applet: WalletApplet) -> None:
    """SIM卡信息 is answered on the card: a DISPLAY TEXT with the ICCID, no MO."""
    shown = applet.envelope_menu_selection(4)
    assert isinstance(shown, DisplayText) and ICCID in shown.text.text
    assert applet.mo_counter == 0


def test_3des_key_set_secures_with_kic_15(tmp_path: Path) -> None:
    """With a 3DES key set the MO uses KIc/KID 15 (3DES 2-key CBC / MAC) and still verifies."""
    store = make_store(tmp_path, KeyAlgorithm.TDES)
    applet = WalletApplet.personalise(ICCID, store.card_keys(ICCID, "ota"), rng=random.Random(1))
    out = walk(applet, 1, 3)
    assert isinstance(out, Outgoing)
    header = decode_command_header(parse_command_user_data(list(out.user_data)))
    assert (header.kic, header.kid) == (0x15, 0x15)
    assert isinstance(secured_action(receiver_for(store), out), wallet_mo.Last10)


@given(
    st.builds(
        AppletState,
        st.integers(0, (1 << 40) - 1),
        st.none() | st.text("0123456789", min_size=15, max_size=15),
        st.sampled_from(wallet_mo.Language),
    )
)
def test_state_json_round_trip(state: AppletState) -> None:
    """The saved state reads back as it was."""
    assert AppletState.from_json(state.to_json()) == state


@given(st.dictionaries(st.sampled_from(["mo_counter", "imei", "language"]), st.from_type(object)))
def test_state_from_arbitrary_json_raises_only_its_error(data: dict[str, object]) -> None:
    """Malformed saved state raises WalletAppletError, nothing else."""
    with contextlib.suppress(WalletAppletError):
        AppletState.from_json(data)
