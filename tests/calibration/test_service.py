"""calibration.service: calibration SMS decisions, the OTA command executed by the card model
(simcard VirtualCard + OtaEndpoint with the platform's per-card keys), PoR handling,
instrument results teaching the table, and coverage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from calibration.imei import parse_imei
from calibration.profile import CalibrationRecord, Method, decode, encode
from calibration.rf import DEFAULT_MODEL, Profile
from calibration.service import (
    REPLY_ALREADY,
    REPLY_BAD_IMEI,
    REPLY_BUSINESS_HALL,
    REPLY_CALIBRATED,
    REPLY_UNKNOWN_CARD,
    CalibrationService,
    Decision,
    Outcome,
)
from calibration.store import CalibrationStore
from calibration.table import HandsetModel, LearnStatus, Provenance
from ota.commands import TAR_RFM_UICC
from ota.counters import open_counter_store
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.platform import OtaPlatform, PorResult
from ota.secured_packet import Keys
from ota.smspp import response_user_data
from simcard.card import CALIBRATION_PATH, VirtualCard
from simcard.ota_endpoint import OtaEndpoint, TarPolicy
from stk_menus.wallet_mo import Calibration, Language
from tests.ledger.conftest import throwaway_pg_database

T0 = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)
KNOWN_TAC = "26053179"
IMEI_KNOWN = "260531793113837"  # 3GPP TS 23.003 Annex B example IMEI
IMEI_KNOWN_2 = "260531790000003"  # same TAC, another phone (Luhn digit 3)
IMEI_UNKNOWN = "352099001761481"  # TAC 35209900, not in the table
IMEI_HEAVY = "350077520000005"  # TAC 35007752: A = 29 dB, refused
LAB = HandsetModel(KNOWN_TAC, "Example X1", Decimal("10.0"), Provenance.LAB)
HEAVY = HandsetModel("35007752", "Metal Brick", Decimal("29.0"), Provenance.IMPORT)


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


class Phone:
    """One card in one phone: the card model with the platform's keys for it."""

    def __init__(self, rig: Rig, iccid: str, msisdn: str, imei: str) -> None:
        self.iccid, self.msisdn, self.imei = iccid, msisdn, imei
        self.card = VirtualCard(iccid)
        pair = rig.keystore.card_keys(iccid, "ota").ota_keys()
        self.endpoint = OtaEndpoint(
            self.card.process,
            keys={1: Keys(kic=pair.kic, kid=pair.kid)},
            tars={TAR_RFM_UICC: TarPolicy("RFM")},
        )

    def file(self) -> bytes:
        return self.card.fs.read_binary(CALIBRATION_PATH)

    def sms(self, *, language: Language = Language.ZH, imei: str | None = None) -> Calibration:
        return Calibration(
            language=language,
            iccid=self.iccid,
            imei=self.imei if imei is None else imei,
            applet_version=1,
            profile=self.file(),
        )


class Rig:
    """Platform (store, OTA platform, service) and a way to run commands on phones."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.keystore = FileKeyStore(tmp / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)
        self.counters = open_counter_store(f"sqlite:///{tmp / 'counters.db'}")
        self.clock = Clock()
        self.ota = OtaPlatform(self.keystore, self.counters, clock=lambda: 0.0)
        self.store = CalibrationStore.open(url)
        self.store.put_models([LAB, HEAVY], at=T0)
        self.known_cards: set[str] | None = None
        self.service = CalibrationService(
            self.store, ota=self.ota, clock=self.clock, card_known=self._known
        )

    def _known(self, iccid: str) -> bool:
        return self.known_cards is None or iccid in self.known_cards

    def phone(self, n: int, imei: str = IMEI_KNOWN) -> Phone:
        return Phone(self, f"898600123456789012{n:02d}", f"86139000000{n:02d}", imei)

    def deliver(self, phone: Phone, decision: Decision) -> PorResult:
        """The card runs the command packet; its PoR goes back through the platform."""
        assert decision.command is not None
        outcome = phone.endpoint.receive(decision.command.packet)
        assert outcome.response is not None
        return self.ota.receive_por(phone.msisdn, response_user_data(outcome.response))

    def close(self) -> None:
        self.store.close()
        self.counters.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    """The platform on each store backend."""
    if request.param == "sqlite":
        r = Rig(tmp_path, f"sqlite:///{tmp_path / 'cal.db'}")
        yield r
        r.close()
        return
    with throwaway_pg_database() as url:
        r = Rig(tmp_path, url)
        yield r
        r.close()


def test_known_tac_ota_command_por_then_calibrated(rig: Rig) -> None:
    """Known TAC: the OTA command writes the SMS record (levels for A = 10 dB, this IMEI,
    today) into EF 6F60; its PoR marks the card calibrated and answers "calibrated"."""
    phone = rig.phone(1)
    decision = rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid=phone.iccid)
    assert decision.outcome is Outcome.OTA_COMMAND
    assert decision.reply is None
    state = rig.store.card(phone.iccid)
    assert state is not None and not state.calibrated and state.pending is not None
    assert state.pending.counter == decision.command.pending.counter  # type: ignore[union-attr]
    por = rig.deliver(phone, decision)
    assert por.ok
    rig.clock.now = T0 + dt.timedelta(seconds=3)
    done = rig.service.on_por(por)
    assert done.outcome is Outcome.CALIBRATED
    assert done.reply is not None and done.reply.template == REPLY_CALIBRATED
    on_card = decode(phone.file())
    # docs/calibration.md worked example: A = 10.0 dB -> payment -5.5 dBm, door +2.0 dBm
    assert (on_card.method, on_card.payment_dbm, on_card.door_dbm) == (
        Method.SMS,
        Decimal("-5.5"),
        Decimal("2.0"),
    )
    assert on_card.imei == parse_imei(IMEI_KNOWN)
    assert on_card.calibrated_on == T0.date()
    state = rig.store.card(phone.iccid)
    assert state is not None and state.method is Method.SMS and state.pending is None
    assert state.imei == IMEI_KNOWN and state.record == phone.file()
    assert state.calibrated_at == rig.clock.now


def test_already_calibrated_then_phone_change_recalibrates(rig: Rig) -> None:
    """The same IMEI with the current profile needs nothing; a new phone (IMEI) gets a new
    command and the card is uncalibrated until its PoR."""
    phone = rig.phone(2)
    rig.service.on_por(
        rig.deliver(
            phone, rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid=phone.iccid)
        )
    )
    again = rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid=phone.iccid)
    assert again.outcome is Outcome.ALREADY_CALIBRATED
    assert again.reply is not None and again.reply.template == REPLY_ALREADY
    assert again.command is None
    moved = rig.service.on_calibration_sms(
        phone.msisdn, phone.sms(imei=IMEI_KNOWN_2), iccid=phone.iccid
    )
    assert moved.outcome is Outcome.OTA_COMMAND
    state = rig.store.card(phone.iccid)
    assert state is not None and not state.calibrated and state.imei == IMEI_KNOWN_2


def test_unknown_tac_business_hall_counted_once_per_card(rig: Rig) -> None:
    """An unknown TAC gets the business-hall reply (in the MO's language) and is counted
    once per card however often the card writes; nothing is sent to the card."""
    a, b = rig.phone(3, IMEI_UNKNOWN), rig.phone(4, IMEI_UNKNOWN)
    for phone in (a, a, b):
        d = rig.service.on_calibration_sms(
            phone.msisdn, phone.sms(language=Language.EN), iccid=phone.iccid
        )
        assert d.outcome is Outcome.BUSINESS_HALL and d.command is None
        assert d.reply is not None
        assert (d.reply.template, d.reply.language) == (REPLY_BUSINESS_HALL, "en")
    assert rig.ota.pending == 0
    [hold] = rig.store.hold_backs()
    assert (hold.tac, hold.cards, hold.held_back) == ("35209900", 2, 2)


def test_not_sms_calibratable_goes_to_business_hall(rig: Rig) -> None:
    """A known model whose payment level cannot be valid (A = 29 dB) is sent to a hall."""
    phone = rig.phone(5, IMEI_HEAVY)
    d = rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid=phone.iccid)
    assert d.outcome is Outcome.BUSINESS_HALL
    assert "needs_more_power" in d.reason
    assert rig.service.coverage().tacs[0].status == "refused"


@pytest.mark.parametrize("imei", ["260531793113838", "2605317931138", "26053179311383x", ""])
def test_malformed_imei_refused_nothing_changed(rig: Rig, imei: str) -> None:
    """A malformed IMEI is refused with the reason; no card state, no count, no command."""
    phone = rig.phone(6)
    d = rig.service.on_calibration_sms(phone.msisdn, phone.sms(imei=imei), iccid=phone.iccid)
    assert d.outcome is Outcome.REFUSED
    assert d.reply is not None and d.reply.template == REPLY_BAD_IMEI
    assert "IMEI" in d.reason
    assert rig.store.card(phone.iccid) is None
    assert rig.store.hold_backs() == []
    assert rig.ota.pending == 0


def test_unknown_card_or_other_card_is_refused(rig: Rig) -> None:
    """A card the platform does not know, or an SMS naming another card than the one that
    secured it, is refused and changes nothing."""
    phone = rig.phone(7)
    rig.known_cards = {"89860012345678901299"}
    d = rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid=phone.iccid)
    assert d.outcome is Outcome.REFUSED
    assert d.reply is not None and d.reply.template == REPLY_UNKNOWN_CARD
    rig.known_cards = None
    d = rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid="89860012345678901299")
    assert d.outcome is Outcome.REFUSED
    assert rig.store.card(phone.iccid) is None
    assert rig.ota.pending == 0


def test_por_never_comes_next_sms_retries_with_new_counter(rig: Rig) -> None:
    """Without a PoR the card stays uncalibrated; the next SMS sends a new command with a
    new counter, whose PoR calibrates; the lost command's late PoR changes nothing."""
    phone = rig.phone(8)
    first = rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid=phone.iccid)
    state = rig.store.card(phone.iccid)
    assert state is not None and not state.calibrated
    second = rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid=phone.iccid)
    assert second.outcome is Outcome.OTA_COMMAND
    assert first.command is not None and second.command is not None
    assert second.command.pending.counter > first.command.pending.counter
    state = rig.store.card(phone.iccid)
    assert state is not None and state.pending is not None
    assert state.pending.counter == second.command.pending.counter
    done = rig.service.on_por(rig.deliver(phone, second))
    assert done.outcome is Outcome.CALIBRATED


def test_error_por_stays_uncalibrated(rig: Rig) -> None:
    """A PoR reporting an APDU error (EF missing on this card) leaves the card
    uncalibrated with nothing pending; the next SMS sends a new command."""
    phone = rig.phone(9)
    phone.card.fs.find("3F00/7F50").children.pop(0x6F60)  # type: ignore[union-attr]
    d = rig.service.on_calibration_sms(
        phone.msisdn,
        Calibration(iccid=phone.iccid, imei=IMEI_KNOWN, applet_version=1, profile=b""),
        iccid=phone.iccid,
    )
    por = rig.deliver(phone, d)
    assert not por.ok
    failed = rig.service.on_por(por)
    assert failed.outcome is Outcome.FAILED and failed.reply is None
    state = rig.store.card(phone.iccid)
    assert state is not None and not state.calibrated and state.pending is None
    again = rig.service.on_calibration_sms(
        phone.msisdn,
        Calibration(iccid=phone.iccid, imei=IMEI_KNOWN, applet_version=1, profile=b""),
        iccid=phone.iccid,
    )
    assert again.outcome is Outcome.OTA_COMMAND


def instrument_record(imei: str, a: str) -> CalibrationRecord:
    profile = DEFAULT_MODEL.compute_profile(Decimal(a))
    assert isinstance(profile, Profile)
    return CalibrationRecord.from_profile(
        profile, imei=parse_imei(imei), method=Method.INSTRUMENT, on=T0.date()
    )


def test_learning_after_three_instrument_results_then_sms(rig: Rig) -> None:
    """Three agreeing instrument results for an unknown TAC teach the table their mean;
    a later phone of that TAC is then calibrated by SMS."""
    imeis = ["352099001761481", "352099000000006", "352099000000014"]
    statuses = []
    for n, (imei, a) in enumerate(zip(imeis, ("15.2", "16.0", "15.5"), strict=True)):
        phone = rig.phone(20 + n, imei)
        learning = rig.service.on_instrument_result(
            phone.iccid, imei, Decimal(a), instrument_record(imei, a), model_name="New One"
        )
        statuses.append(learning.status)
        state = rig.store.card(phone.iccid)
        assert state is not None and state.method is Method.INSTRUMENT
    assert statuses == [LearnStatus.PENDING, LearnStatus.PENDING, LearnStatus.LEARNED]
    model = rig.store.get_model("35209900")
    assert model is not None
    assert (model.a_db, model.provenance, model.name) == (
        Decimal("15.6"),
        Provenance.INSTRUMENT,
        "New One",
    )
    later = rig.phone(30, "352099000000022")
    d = rig.service.on_calibration_sms(later.msisdn, later.sms(), iccid=later.iccid)
    assert d.outcome is Outcome.OTA_COMMAND
    assert rig.service.on_por(rig.deliver(later, d)).outcome is Outcome.CALIBRATED
    assert decode(later.file()).a_db == Decimal("15.6")


def test_instrument_calibrated_card_is_already_calibrated(rig: Rig) -> None:
    """A card calibrated by the instrument for this phone is not overwritten by SMS."""
    phone = rig.phone(40)
    record = instrument_record(IMEI_KNOWN, "11.3")
    phone.card.fs.write_binary(CALIBRATION_PATH, encode(record))
    learning = rig.service.on_instrument_result(phone.iccid, IMEI_KNOWN, Decimal("11.3"), record)
    assert learning.status is LearnStatus.ALREADY_KNOWN
    d = rig.service.on_calibration_sms(phone.msisdn, phone.sms(), iccid=phone.iccid)
    assert d.outcome is Outcome.ALREADY_CALIBRATED


def test_coverage_figures(rig: Rig) -> None:
    """Coverage: active cards by method and shares; TACs by cards held back."""
    sms = rig.phone(50)
    rig.service.on_por(
        rig.deliver(sms, rig.service.on_calibration_sms(sms.msisdn, sms.sms(), iccid=sms.iccid))
    )
    inst = rig.phone(51, IMEI_UNKNOWN)
    rig.service.on_instrument_result(
        inst.iccid, IMEI_UNKNOWN, Decimal("20.0"), instrument_record(IMEI_UNKNOWN, "20.0")
    )
    for n in (52, 53):
        p = rig.phone(n, IMEI_UNKNOWN)
        rig.service.on_calibration_sms(p.msisdn, p.sms(), iccid=p.iccid)
    heavy = rig.phone(54, IMEI_HEAVY)
    rig.service.on_calibration_sms(heavy.msisdn, heavy.sms(), iccid=heavy.iccid)
    cov = rig.service.coverage()
    assert (cov.active, cov.sms, cov.instrument, cov.uncalibrated) == (5, 1, 1, 3)
    assert cov.share(cov.uncalibrated) == pytest.approx(0.6)
    assert [(t.tac, t.held_back, t.status) for t in cov.tacs] == [
        ("35209900", 2, "unknown"),
        ("35007752", 1, "refused"),
    ]
    assert cov.to_json()["share_sms"] == 0.2
