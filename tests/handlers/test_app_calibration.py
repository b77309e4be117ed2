"""Calibration through the wallet application (handlers/app.py with a CalibrationService):
real virtual phones power on and send their secured calibration MO, WalletApp hands it to
the service, the RFM command it sends is run by the card, and the card's PoR comes back
through the app; the ledger on SQLite in tmp_path is verified after every scenario."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from calibration.imei import parse_imei
from calibration.profile import Method, decode
from calibration.service import CalibrationService
from calibration.store import CalibrationStore
from calibration.table import HandsetModel, Provenance
from handlers.app import AppConfig, SendOta, SendSms, WalletApp
from ota.commands import TAR_RFM_UICC, read_binary
from ota.platform import PorResult
from simcard.fleet import DEFAULT_MODELS, imei_for
from simcard.wallet_applet import TERMINAL_ID
from stk_menus import wallet_mo
from stk_menus.replies import render
from tests.handlers.test_app import PIN, Rig, _forged, to_message

KNOWN = DEFAULT_MODELS[0]  # "Virtual A10": in the handset table below
UNKNOWN = DEFAULT_MODELS[1]  # "Virtual B20": not in the table


class CalRig(Rig):
    """The wallet rig with a calibration store and service wired into the app."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.other_pors: list[PorResult] = []
        super().__init__(tmp, count=2)

    def make_app(self) -> WalletApp:
        """A fresh app over the same stores, with calibration."""
        if not hasattr(self, "store"):
            self.store = CalibrationStore.open(f"sqlite:///{self.tmp / 'cal.db'}")
            model = HandsetModel(KNOWN.tac, KNOWN.name, KNOWN.a_db, Provenance.LAB)
            self.store.put_models([model], at=self.clock.now)
            self.service = CalibrationService(self.store, ota=self.platform, clock=self.clock)
        return WalletApp(
            ledger=self.ledger,
            receiver=self.receiver,
            platform=self.platform,
            keystore=self.keystore,
            pins=self.pins,
            state=self.state,
            clock=self.clock,
            config=AppConfig(terminal_id=TERMINAL_ID),
            calibration=self.service,
            on_other_por=self.other_pors.append,
        )

    def close(self) -> None:
        super().close()
        self.store.close()

    def enrol(self, msisdn: str) -> str:
        """Open and fund the wallet, enable the card, set the PIN (phone still off)."""
        iccid = self.phone(msisdn).card.iccid
        self.ledger.open_wallet(msisdn, "11010119900307001X")
        self.ledger.enable_card(msisdn, iccid)
        self.ledger.deposit(msisdn, 100_000, "bank", request_id=f"fund-{msisdn}")
        self.pins.set_pin(iccid, PIN)
        return iccid

    def switch_on(self, msisdn: str) -> None:
        """Power the phone on and send its calibration MO (and the PoRs that follow)."""
        self.phone(msisdn).power_on()
        self.pump(msisdn)

    def card_file(self, msisdn: str) -> bytes:
        return self.phone(msisdn).applet.calibration_file()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[CalRig]:
    """A calibration rig whose ledger must verify at the end of every test."""
    r = CalRig(tmp_path)
    yield r
    assert r.verified(), r.ledger.verify().problems
    r.close()


def test_known_tac_ota_por_calibrated_and_told(rig: CalRig) -> None:
    """Known TAC: the app sends the RFM command, the card writes EF 6F60 (levels for A = 10,
    this IMEI, method SMS), the PoR through the app marks it calibrated and the subscriber
    gets the "calibrated" SMS."""
    msisdn = rig.msisdn(0)
    iccid = rig.enrol(msisdn)
    assert rig.fleet[msisdn].model == KNOWN
    rig.switch_on(msisdn)
    assert rig.inbox(msisdn) == [render("calibration_done", "zh")]
    record = decode(rig.card_file(msisdn))
    assert record.method is Method.SMS
    assert record.imei == parse_imei(rig.phone(msisdn).imei)
    # docs/calibration.md worked example: A = 10.0 dB -> payment -5.5 dBm, door +2.0 dBm
    assert (record.payment_dbm, record.door_dbm) == (Decimal("-5.5"), Decimal("2.0"))
    state = rig.store.card(iccid)
    assert state is not None and state.method is Method.SMS and state.pending is None
    assert rig.platform.pending == 0
    assert rig.other_pors == []
    cover = rig.service.coverage()
    assert (cover.active, cover.sms, cover.uncalibrated) == (1, 1, 0)


def test_unknown_tac_business_hall_and_counted(rig: CalRig) -> None:
    """Unknown TAC: the business-hall SMS, no OTA, the card uncalibrated and its TAC counted."""
    msisdn = rig.msisdn(1)
    iccid = rig.enrol(msisdn)
    assert rig.fleet[msisdn].model == UNKNOWN
    rig.switch_on(msisdn)
    assert rig.inbox(msisdn) == [render("calibration", "zh")]
    assert rig.platform.pending == 0
    assert decode(rig.card_file(msisdn)).method is Method.NONE
    state = rig.store.card(iccid)
    assert state is not None and not state.calibrated
    (tac,) = rig.service.coverage().tacs
    assert (tac.tac, tac.held_back, tac.status) == (UNKNOWN.tac, 1, "unknown")


def test_english_card_gets_english_calibration_replies(rig: CalRig) -> None:
    """The calibration MO's language tag chooses the reply language."""
    msisdn = rig.msisdn(1)
    rig.enrol(msisdn)
    rig.phone(msisdn).applet.language = wallet_mo.Language.EN
    rig.switch_on(msisdn)
    assert rig.inbox(msisdn) == [render("calibration", "en")]


def test_malformed_imei_refused(rig: CalRig) -> None:
    """A calibration MO whose IMEI fails the Luhn check gets the refusal SMS; nothing is
    stored, nothing sent to the card."""
    msisdn = rig.msisdn(0)
    iccid = rig.enrol(msisdn)
    rig.phone(msisdn).power_on()
    rig.phone(msisdn).outbox()  # the phone's genuine MO is not sent
    counter = rig.phone(msisdn).applet.mo_counter + 1
    bad = wallet_mo.Calibration(
        iccid=iccid, imei="356938030000018", applet_version=1, profile=rig.card_file(msisdn)
    )
    effects = rig.deliver(_forged(rig, msisdn, counter, bad))
    assert effects == [SendSms(msisdn, render("calibration_refused_imei", "zh"))]
    assert rig.store.card(iccid) is None
    assert rig.platform.pending == 0


def test_replayed_calibration_sms_refused_nothing_changed(rig: CalRig) -> None:
    """The SMSC redelivering the calibration MO gets the stored (empty) first answer: no
    second OTA command. A replay, the used counter with other content (another IMEI) or an
    older counter, is refused: no command, the card's record and the ledger unchanged."""
    msisdn = rig.msisdn(0)
    iccid = rig.enrol(msisdn)
    rig.phone(msisdn).power_on()
    (first_out,) = rig.phone(msisdn).outbox()
    first = to_message(msisdn, first_out)
    effects = rig.app.on_message(first)
    assert [type(e) for e in effects] == [SendOta]
    assert rig.app.on_message(first) == []  # redelivery: nothing sent twice
    rig.apply(effects)
    assert rig.inbox(msisdn) == [render("calibration_done", "zh")]
    used = rig.phone(msisdn).applet.mo_counter
    state = rig.store.card(iccid)
    pending = rig.platform.pending
    journal = rig.journal()
    for counter in (used, used - 1):
        other = wallet_mo.Calibration(
            iccid=iccid,
            imei=imei_for(KNOWN.tac, 777),
            applet_version=1,
            profile=rig.card_file(msisdn),
        )
        refused = rig.deliver(_forged(rig, msisdn, counter, other))
        assert refused == [SendSms(msisdn, render("refused_replay", "zh"))]
    assert rig.store.card(iccid) == state
    assert rig.platform.pending == pending
    assert rig.journal() == journal
    assert decode(rig.card_file(msisdn)).imei == parse_imei(rig.phone(msisdn).imei)


def test_por_never_comes_card_uncalibrated_next_sms_retries(rig: CalRig) -> None:
    """The command never reaches the card: no PoR, the card stays uncalibrated; the card's
    next calibration SMS gets a new command (new counter) whose PoR calibrates it."""
    msisdn = rig.msisdn(0)
    iccid = rig.enrol(msisdn)
    rig.lose_mt = True
    rig.switch_on(msisdn)
    rig.lose_mt = False
    state = rig.store.card(iccid)
    assert state is not None and not state.calibrated and state.pending is not None
    first_counter = state.pending.counter
    assert decode(rig.card_file(msisdn)).method is Method.NONE
    assert rig.inbox(msisdn) == []
    counter = rig.phone(msisdn).applet.mo_counter + 1
    again = wallet_mo.Calibration(
        iccid=iccid, imei=rig.phone(msisdn).imei, applet_version=1, profile=rig.card_file(msisdn)
    )
    effects = rig.deliver(_forged(rig, msisdn, counter, again))
    (ota,) = [e for e in effects if isinstance(e, SendOta)]
    assert ota.outgoing.pending.counter > first_counter
    assert ota.outgoing.pending.tar == TAR_RFM_UICC
    assert rig.inbox(msisdn) == [render("calibration_done", "zh")]
    state = rig.store.card(iccid)
    assert state is not None and state.method is Method.SMS


def test_por_lost_card_reports_its_file_at_next_sms(rig: CalRig) -> None:
    """The card wrote the file but its PoR was lost: uncalibrated on the platform until the
    next calibration SMS reports the record, which the platform then takes (no new OTA)."""
    msisdn = rig.msisdn(0)
    iccid = rig.enrol(msisdn)
    rig.lose_por = True
    rig.switch_on(msisdn)
    rig.lose_por = False
    state = rig.store.card(iccid)
    assert state is not None and not state.calibrated
    assert decode(rig.card_file(msisdn)).method is Method.SMS
    counter = rig.phone(msisdn).applet.mo_counter + 1
    again = wallet_mo.Calibration(
        iccid=iccid, imei=rig.phone(msisdn).imei, applet_version=1, profile=rig.card_file(msisdn)
    )
    effects = rig.deliver(_forged(rig, msisdn, counter, again))
    assert effects == [SendSms(msisdn, render("calibration_already", "zh"))]
    state = rig.store.card(iccid)
    assert state is not None and state.method is Method.SMS


def test_imei_change_recalibrates(rig: CalRig) -> None:
    """The card moved to another phone of the model: a new calibration MO, a new command, the
    file rewritten for the new IMEI, calibrated again."""
    msisdn = rig.msisdn(0)
    iccid = rig.enrol(msisdn)
    rig.switch_on(msisdn)
    new_imei = imei_for(KNOWN.tac, 424242)
    rig.phone(msisdn).change_imei(new_imei)
    rig.pump(msisdn)
    assert rig.inbox(msisdn) == [render("calibration_done", "zh")] * 2
    assert decode(rig.card_file(msisdn)).imei == parse_imei(new_imei)
    state = rig.store.card(iccid)
    assert state is not None and state.calibrated and state.imei == new_imei
    rig.phone(msisdn).power_on()  # the same phone again: no calibration MO
    assert rig.phone(msisdn).outbox() == []


def test_other_por_goes_to_the_observer_and_topups_still_work(rig: CalRig) -> None:
    """A PoR of an operator's RFM command (not a load, not a pending calibration) goes to the
    observer; top-ups keep being confirmed by their own PoRs."""
    msisdn = rig.msisdn(0)
    iccid = rig.enrol(msisdn)
    rig.switch_on(msisdn)
    outgoing = rig.platform.command(
        iccid=iccid, msisdn=msisdn, tar=TAR_RFM_UICC, apdus=[read_binary(0, 4)]
    )
    rig.apply([SendOta(msisdn, outgoing)])
    (por,) = rig.other_pors
    assert por.command.counter == outgoing.pending.counter
    rig.topup(msisdn, 100)
    assert rig.inbox(msisdn)[-1].startswith("充值成功")
    assert rig.ledger.wallet(msisdn).card_balance == 10_000
