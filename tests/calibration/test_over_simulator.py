"""Calibration (issue 6) end to end over real loopback TCP: the SMSC simulator with a fleet of
virtual phones behind it (simcard/fleet.py InProcessNetwork; each phone's handset model has
its own shielding A), and the real gateway (stkpay.gateway.make_gateway, calibration store
and handset table from the configuration's ``[calibration]`` section) bound to it.

Pinned, per path of docs/calibration.md "Decisions on a calibration SMS":

1. known TAC: first power-on -> calibration SMS -> RFM command -> the card writes EF 6F60 and
   answers the PoR -> "calibrated" SMS; the store's record says SMS, that IMEI; the card's
   payment level puts this phone's d_eff in 3.0-5.0 cm;
2. unknown TAC: the business-hall SMS (zh), no command, the TAC counted once;
3. phone change (new IMEI by PROVIDE LOCAL INFORMATION, another known model): recalibrated;
4. forged calibration SMS (bad CC; another card's keys) and replays (used counter with other
   content; older counter) refused with nothing changed, while an exact SMSC redelivery gets
   the stored first reply (and no second command);
5. the OTA command lost in the network (the simulator's ``delivered_ratio`` fault): the card
   stays uncalibrated; its next calibration SMS retries and succeeds; a lost PoR: the next
   calibration SMS reports the file written and the platform takes it;
6. malformed IMEI (wrong check digit, wrong length) in an authentic SMS: the refusal SMS,
   nothing recorded, nothing sent to the card.

The card sends its calibration SMS on first use, on an IMEI change, and again at later
start-ups (with a back-off) while its file is not calibrated for the phone it is in: a lost
command is retried by switching the phone on again. A calibration SMS the applet would not
send now (a lost PoR's card is calibrated; a malformed IMEI) is built here the way the applet
builds it: the card's own keys and its next MO counter.

Business time is a fixed clock (the record's date is checked); the tests wait on real TCP
with ``tests.smsc.test_esme_tcp.until``. "Nothing happened" is observed behind a fence: a
plain-text balance query from the same phone, whose reply comes after anything the MO before
it produced (a subscriber's MO are handled in arrival order by one gateway worker; one bind;
MT delivered in order).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from calibration.imei import parse_imei
from calibration.profile import CalibrationRecord, Method, decode
from calibration.rf import DEFAULT_MODEL, BandKind, effective_distance
from calibration.store import CalibrationStore, CardState
from calibration.table import HandsetModel, Provenance
from handlers.pins import Pepper, SqlPinStore
from ledger.service import Ledger
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.secured_packet import Keys
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD
from simcard.fleet import DEFAULT_MODELS, Fleet, FleetPhone, InProcessNetwork, imei_for
from simcard.phone import SmsReceived, VirtualPhone
from simcard.wallet_applet import Outgoing
from stk_menus import wallet_mo
from stk_menus.replies import render
from stkpay.config import CalibrationConfig
from stkpay.gateway import GatewayService, make_gateway
from tests.smsc.conftest import SimHandle, start_simulator, stop_simulator
from tests.smsc.test_esme_tcp import until
from tests.stkpay.test_gateway import FIRST, ID_NUMBER, PEPPER_HEX, PIN, gateway_config

KNOWN = DEFAULT_MODELS[0]  # Virtual A10, A = 10 dB: in the table (lab)
OTHER = DEFAULT_MODELS[1]  # Virtual B20, A = 20 dB: in the table (lab)
UNKNOWN = DEFAULT_MODELS[2]  # Virtual C27: not in the table
NOW = dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.UTC)
WAIT = 10.0  # seconds: generous, the machine is shared

#: Phones of the fleet (models assigned round robin): 0 KNOWN, 1 OTHER, 2 UNKNOWN.
P_KNOWN, P_OTHER, P_UNKNOWN = (str(int(FIRST) + i) for i in range(3))

CALIBRATED = render("calibration_done", "zh")
ALREADY = render("calibration_already", "zh")
BUSINESS_HALL = render("calibration", "zh")
BAD_IMEI = render("calibration_refused_imei", "zh")
BAD_MAC = render("refused_bad_mac", "zh")
REPLAY = render("refused_replay", "zh")


class CalRig:
    """Simulator + fleet (3 phones, switched off, wallets open and cards enabled) + the
    gateway with its calibration store seeded with KNOWN and OTHER; ``store`` is the test's
    own connection to that store."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keystore = FileKeyStore(tmp / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)
        self.fleet = Fleet(self.keystore, count=3, first_msisdn=FIRST, seed=7)
        self.cal_url = f"sqlite:///{tmp / 'calibration.db'}"
        self.sim: SimHandle | None = None
        self.network: InProcessNetwork | None = None
        self.gateway: GatewayService | None = None
        self.store: CalibrationStore | None = None
        self.drop_por = False  # the network loses the phones' PoRs while set
        self.pors_dropped = 0

    async def start(self) -> None:
        holder: list[SimHandle] = []

        def send_mo(source: str, destination: str, **kwargs: Any) -> object:
            parts = kwargs.get("user_data") or ()
            if self.drop_por and any(p[1:2] == b"\x71" for p in parts):  # UDH IEI 71: a PoR
                self.pors_dropped += 1
                return None
            return holder[0].simulator.submit_mo(source, destination, **kwargs)

        self.network = InProcessNetwork(
            self.fleet, send_mo=send_mo, later=lambda f: reactor.callLater(0, f)
        )
        self.sim = await start_simulator(directory=self.network)
        holder.append(self.sim)
        config = dataclasses.replace(
            gateway_config(self.tmp, self.sim), calibration=CalibrationConfig(url=self.cal_url)
        )
        with CalibrationStore.open(self.cal_url) as store:
            store.put_models(
                [HandsetModel(m.tac, m.name, m.a_db, Provenance.LAB) for m in (KNOWN, OTHER)],
                at=NOW,
            )
        url = config.ledger.url
        with Ledger.connect(url, group_commit=False) as ledger:
            pins = SqlPinStore(url, Pepper(bytes.fromhex(PEPPER_HEX)))
            for entry in self.fleet:
                msisdn, iccid = entry.phone.msisdn, entry.phone.card.iccid
                ledger.open_wallet(msisdn, ID_NUMBER)
                ledger.enable_card(msisdn, iccid)
                ledger.deposit(msisdn, 50_000, "bank", request_id=f"fund-{msisdn}")
                pins.set_pin(iccid, PIN)
            pins.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STKPAY_")}
        self.gateway = make_gateway(config, reactor, clock=lambda: NOW, env=env)
        assert self.gateway.app.calibration is not None, "the gateway wires no calibration"
        self.gateway.startService()
        await self.gateway.esme.when_bound()
        self.store = CalibrationStore.open(self.cal_url)

    async def stop(self) -> None:
        if self.gateway is not None and self.gateway.running:
            await self.gateway.stopService()
        if self.sim is not None:
            await stop_simulator(self.sim)
            self.sim = None
        if self.store is not None:
            self.store.close()

    # -- the phones ---------------------------------------------------------------------------

    def entry(self, msisdn: str) -> FleetPhone:
        return self.fleet[msisdn]

    def phone(self, msisdn: str) -> VirtualPhone:
        return self.fleet[msisdn].phone

    def iccid(self, msisdn: str) -> str:
        return self.phone(msisdn).card.iccid

    def sms(self, msisdn: str) -> list[str]:
        """Every text the phone received, oldest first."""
        return [e.text for e in self.fleet[msisdn].events if isinstance(e, SmsReceived)]

    def card_record(self, msisdn: str) -> CalibrationRecord:
        """The card's EF 7F50/6F60, decoded."""
        return decode(self.phone(msisdn).applet.calibration_file())

    def commands_run(self, msisdn: str) -> int:
        """OTA command packets the card received."""
        return len(self.phone(msisdn).outcomes)

    def card(self, msisdn: str) -> CardState | None:
        """The calibration store's record of the phone's card."""
        assert self.store is not None
        return self.store.card(self.iccid(msisdn))

    def power_on(self, msisdn: str) -> None:
        """Switch the phone on and send what its card sends (the calibration SMS, if any)."""
        assert self.network is not None
        self.network.act(msisdn, lambda p: p.power_on())

    def switch_on_holding(self, msisdn: str) -> Outgoing:
        """Switch the phone on but keep its calibration SMS (the network has not taken it)."""
        self.phone(msisdn).power_on()
        (out,) = self.phone(msisdn).outbox()
        assert out.action is wallet_mo.Action.CALIBRATION
        return out

    def send(self, msisdn: str, parts: Sequence[bytes]) -> None:
        """An MO with these short messages' user data (UDH included) from ``msisdn``."""
        assert self.sim is not None
        self.sim.simulator.submit_mo(
            msisdn,
            self.sim.short_code,
            user_data=tuple(parts),
            protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
            data_coding=DCS_CLASS2_8BIT,
        )

    def card_mo(
        self,
        msisdn: str,
        counter: int,
        action: wallet_mo.WalletMo,
        *,
        keys: Keys | None = None,
    ) -> tuple[bytes, ...]:
        """A secured MO as the card builds it (its KIc/KID, ``counter``), with ``keys``
        instead of the card's own when given (a forgery)."""
        return self.phone(msisdn).applet.secured_user_data(action, counter=counter, keys=keys)

    def calibration_mo(self, msisdn: str, imei: str) -> wallet_mo.Calibration:
        """The calibration SMS content the card would send now, for ``imei``."""
        phone = self.phone(msisdn)
        return wallet_mo.Calibration(
            iccid=phone.card.iccid,
            imei=imei,
            applet_version=1,
            profile=phone.applet.calibration_file(),
        )

    async def wait_sms(self, msisdn: str, count: int, what: str) -> list[str]:
        """Wait until the phone holds ``count`` texts; returns them."""
        await until(lambda: len(self.sms(msisdn)) >= count, WAIT, what)
        return self.sms(msisdn)

    async def fence(self, msisdn: str) -> None:
        """Send a plain-text balance query and wait for its reply, which is sent after
        anything the MO sent before it produced; the reply is then forgotten."""
        assert self.sim is not None
        before = len(self.sms(msisdn))
        self.sim.simulator.submit_mo(msisdn, self.sim.short_code, text="BAL")
        await until(lambda: len(self.sms(msisdn)) > before, WAIT, "the fence's balance reply")
        last = self.fleet[msisdn].events.pop()
        assert isinstance(last, SmsReceived) and "500.00" in last.text, last
        assert len(self.sms(msisdn)) == before, "an SMS arrived behind the fence"


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path) -> AsyncIterator[CalRig]:
    """A started rig; stopped at teardown."""
    r = CalRig(tmp_path)
    try:
        await r.start()
        yield r
    finally:
        await r.stop()


def assert_pays_in_band(record: CalibrationRecord, own_a: Decimal) -> None:
    """The payment level makes a phone of shielding ``own_a`` pay within 3.0-5.0 cm."""
    assert record.payment_dbm is not None
    d_eff = effective_distance(record.payment_dbm, own_a)
    assert 3.0 <= d_eff <= 5.0, (record.payment_dbm, own_a, d_eff)
    assert DEFAULT_MODEL.in_band(record.payment_dbm, own_a, BandKind.PAYMENT)


# -- 1. known TAC -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_known_tac_calibrated_by_sms_through_the_gateway(rig: CalRig) -> None:
    """First power-on: the calibration SMS, the RFM command, the card's file written for this
    IMEI (A = 10 dB: payment -5.5 dBm, door +2.0 dBm, today), the PoR, the "calibrated" SMS;
    the store records SMS calibration for this IMEI with the file the card holds; this
    phone's own A pays within 3-5 cm."""
    msisdn = P_KNOWN
    entry = rig.entry(msisdn)
    assert entry.model == KNOWN and decode(rig.phone(msisdn).applet.calibration_file()).method is (
        Method.NONE
    )
    rig.power_on(msisdn)
    assert await rig.wait_sms(msisdn, 1, "the calibrated SMS") == [CALIBRATED]
    assert rig.commands_run(msisdn) == 1
    record = rig.card_record(msisdn)
    imei = rig.phone(msisdn).imei
    assert record.method is Method.SMS and record.imei == parse_imei(imei)
    assert (record.payment_dbm, record.door_dbm) == (Decimal("-5.5"), Decimal("2.0"))
    assert record.a_db == Decimal(10) and record.calibrated_on == NOW.date()
    assert_pays_in_band(record, entry.a_db)
    state = rig.card(msisdn)
    assert state is not None and state.method is Method.SMS and state.imei == imei
    assert state.pending is None and state.msisdn == msisdn and state.calibrated_at == NOW
    assert state.record == rig.phone(msisdn).applet.calibration_file()
    assert (state.payment_dbm, state.door_dbm) == (Decimal("-5.5"), Decimal("2.0"))
    calibration = rig.gateway.app.calibration  # type: ignore[union-attr]
    assert calibration is not None
    cover = calibration.coverage()
    assert (cover.active, cover.sms, cover.uncalibrated, cover.tacs) == (1, 1, 0, ())


@pytest_twisted.ensureDeferred
async def test_three_phones_switched_on_together(rig: CalRig) -> None:
    """Three phones at once (the gateway's workers run them side by side): the two known
    models calibrated for their own IMEI and A, the unknown one sent to a business hall;
    coverage 3 active, 2 by SMS, 1 uncalibrated."""
    for msisdn in (P_KNOWN, P_OTHER, P_UNKNOWN):
        rig.power_on(msisdn)
    for msisdn, text in ((P_KNOWN, CALIBRATED), (P_OTHER, CALIBRATED), (P_UNKNOWN, BUSINESS_HALL)):
        assert await rig.wait_sms(msisdn, 1, f"the reply to {msisdn}") == [text]
    for msisdn, model in ((P_KNOWN, KNOWN), (P_OTHER, OTHER)):
        record = rig.card_record(msisdn)
        assert record.imei == parse_imei(rig.phone(msisdn).imei) and record.a_db == model.a_db
        assert_pays_in_band(record, rig.entry(msisdn).a_db)
    calibration = rig.gateway.app.calibration  # type: ignore[union-attr]
    assert calibration is not None
    cover = calibration.coverage()
    assert (cover.active, cover.sms, cover.instrument, cover.uncalibrated) == (3, 2, 0, 1)


# -- 2. unknown TAC -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unknown_tac_sent_to_a_business_hall_and_counted(rig: CalRig) -> None:
    """A TAC the table does not know: the business-hall SMS in Chinese, no OTA command, the
    card uncalibrated for this IMEI, and its TAC counted in the coverage."""
    msisdn = P_UNKNOWN
    assert rig.entry(msisdn).model == UNKNOWN
    rig.power_on(msisdn)
    assert await rig.wait_sms(msisdn, 1, "the business-hall SMS") == [BUSINESS_HALL]
    assert "营业厅" in BUSINESS_HALL
    await rig.fence(msisdn)
    assert rig.commands_run(msisdn) == 0
    assert rig.card_record(msisdn).method is Method.NONE
    state = rig.card(msisdn)
    assert state is not None and not state.calibrated and state.pending is None
    assert state.imei == rig.phone(msisdn).imei
    calibration = rig.gateway.app.calibration  # type: ignore[union-attr]
    assert calibration is not None
    cover = calibration.coverage()
    assert (cover.active, cover.sms, cover.uncalibrated) == (1, 0, 1)
    (tac,) = cover.tacs
    assert (tac.tac, tac.cards, tac.held_back, tac.status) == (UNKNOWN.tac, 1, 1, "unknown")


# -- 3. phone change ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_phone_change_recalibrates_for_the_new_imei(rig: CalRig) -> None:
    """The card moves from a KNOWN handset to an OTHER one (A = 20 dB): PROVIDE LOCAL
    INFORMATION reports the new IMEI, the card sends a new calibration SMS and is
    recalibrated (+4.5 dBm, door unavailable) for that IMEI; the same phone switched on again
    sends nothing."""
    msisdn = P_KNOWN
    rig.power_on(msisdn)
    await rig.wait_sms(msisdn, 1, "the first calibration")
    first = rig.card_record(msisdn)
    new_imei = imei_for(OTHER.tac, 4242)
    assert rig.network is not None
    rig.network.act(msisdn, lambda p: p.change_imei(new_imei))
    assert await rig.wait_sms(msisdn, 2, "the recalibration") == [CALIBRATED, CALIBRATED]
    assert rig.commands_run(msisdn) == 2
    record = rig.card_record(msisdn)
    assert record.method is Method.SMS and record.imei == parse_imei(new_imei) != first.imei
    assert (record.payment_dbm, record.door_dbm, record.a_db) == (
        Decimal("4.5"),
        None,
        Decimal(20),
    )
    for own_a in (OTHER.a_db - 1, OTHER.a_db, OTHER.a_db + 1):  # any phone of the new model
        assert_pays_in_band(record, own_a)
    state = rig.card(msisdn)
    assert state is not None and state.method is Method.SMS and state.imei == new_imei
    assert state.record == rig.phone(msisdn).applet.calibration_file() and state.pending is None
    counter = rig.phone(msisdn).applet.mo_counter
    assert rig.phone(msisdn).power_on()[1:] == [] and rig.phone(msisdn).outbox() == []
    assert rig.phone(msisdn).applet.mo_counter == counter


# -- 4. forged and replayed ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_forged_calibration_sms_refused_nothing_changed(rig: CalRig) -> None:
    """A calibration SMS with a bad CC (right KIc, wrong KID) and one secured with another
    card's keys: each refused (refused_bad_mac), no command sent, nothing in the store, the
    card's file untouched; they used up nothing, so the card's genuine SMS with the same
    counter is then accepted and calibrates it."""
    msisdn = P_KNOWN
    genuine = rig.switch_on_holding(msisdn)
    counter = rig.phone(msisdn).applet.mo_counter
    content = rig.calibration_mo(msisdn, rig.phone(msisdn).imei)
    own = rig.keystore.card_keys(rig.iccid(msisdn), "ota").ota_keys()
    other = rig.keystore.card_keys(rig.iccid(P_OTHER), "ota").ota_keys()
    bad_cc = rig.card_mo(msisdn, counter, content, keys=Keys(kic=own.kic, kid=other.kid))
    foreign = rig.card_mo(msisdn, counter, content, keys=Keys(kic=other.kic, kid=other.kid))
    file_before = rig.phone(msisdn).applet.calibration_file()
    rig.send(msisdn, bad_cc)
    rig.send(msisdn, foreign)
    assert await rig.wait_sms(msisdn, 2, "the two refusals") == [BAD_MAC, BAD_MAC]
    await rig.fence(msisdn)
    assert rig.card(msisdn) is None
    assert rig.commands_run(msisdn) == 0
    assert rig.phone(msisdn).applet.calibration_file() == file_before
    rig.send(msisdn, genuine.user_data)
    assert await rig.wait_sms(msisdn, 3, "the genuine calibration") == [
        BAD_MAC,
        BAD_MAC,
        CALIBRATED,
    ]
    state = rig.card(msisdn)
    assert state is not None and state.method is Method.SMS


@pytest_twisted.ensureDeferred
async def test_replayed_calibration_sms_refused_redelivery_gets_first_reply(rig: CalRig) -> None:
    """After calibration: the SMSC redelivering the very same SMS gets the stored first reply
    (none: the PoR answered) and no second command; the used counter with other content
    (another IMEI) and an older counter are refused as replays; the store's record and the
    card's file are unchanged."""
    msisdn = P_KNOWN
    genuine = rig.switch_on_holding(msisdn)
    rig.send(msisdn, genuine.user_data)
    await rig.wait_sms(msisdn, 1, "the calibration")
    state, file_before = rig.card(msisdn), rig.phone(msisdn).applet.calibration_file()
    rig.send(msisdn, genuine.user_data)  # exact redelivery
    await rig.fence(msisdn)
    assert rig.sms(msisdn) == [CALIBRATED] and rig.commands_run(msisdn) == 1
    used = rig.phone(msisdn).applet.mo_counter
    assert genuine.counter == used
    for counter in (used, used - 1):
        content = rig.calibration_mo(msisdn, imei_for(KNOWN.tac, 777))
        rig.send(msisdn, rig.card_mo(msisdn, counter, content))
    assert await rig.wait_sms(msisdn, 3, "the replay refusals") == [CALIBRATED, REPLAY, REPLAY]
    await rig.fence(msisdn)
    assert rig.commands_run(msisdn) == 1
    assert rig.card(msisdn) == state
    assert rig.phone(msisdn).applet.calibration_file() == file_before


@pytest_twisted.ensureDeferred
async def test_redelivered_business_hall_sms_answered_again_counted_once(rig: CalRig) -> None:
    """An unknown TAC's calibration SMS redelivered by the SMSC: the stored business-hall
    reply is sent again (not a replay refusal), the TAC still counted once."""
    msisdn = P_UNKNOWN
    genuine = rig.switch_on_holding(msisdn)
    rig.send(msisdn, genuine.user_data)
    await rig.wait_sms(msisdn, 1, "the business-hall SMS")
    state = rig.card(msisdn)
    rig.send(msisdn, genuine.user_data)
    assert await rig.wait_sms(msisdn, 2, "the stored reply") == [BUSINESS_HALL, BUSINESS_HALL]
    await rig.fence(msisdn)
    assert rig.card(msisdn) == state and rig.commands_run(msisdn) == 0
    calibration = rig.gateway.app.calibration  # type: ignore[union-attr]
    assert calibration is not None
    (tac,) = calibration.coverage().tacs
    assert (tac.tac, tac.cards) == (UNKNOWN.tac, 1)


# -- 5. PoR never comes -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_command_lost_card_uncalibrated_next_sms_retries(rig: CalRig) -> None:
    """The simulator delivers no MT (``delivered_ratio`` 0): the RFM command never reaches the
    card, no PoR comes; the command is pending, the card uncalibrated, its file untouched and
    no SMS sent. The card's next calibration SMS (next counter) gets a new command with a new
    counter, which calibrates it."""
    msisdn = P_KNOWN
    assert rig.sim is not None
    simulator = rig.sim.simulator
    simulator.delivered_ratio = 0.0
    rig.power_on(msisdn)
    await until(
        lambda: (s := rig.card(msisdn)) is not None and s.pending is not None,
        WAIT,
        "the command recorded as pending",
    )
    state = rig.card(msisdn)
    assert state is not None and state.pending is not None
    first_counter = state.pending.counter
    await until(lambda: simulator.counters.mt_parts >= 1, WAIT, "the command offered to the phone")
    simulator.delivered_ratio = 1.0
    await rig.fence(msisdn)
    state = rig.card(msisdn)
    assert state is not None and not state.calibrated and state.pending is not None
    assert rig.commands_run(msisdn) == 0 and rig.card_record(msisdn).method is Method.NONE
    assert rig.sms(msisdn) == []
    rig.power_on(msisdn)  # still uncalibrated in this phone: the card sends it again
    assert await rig.wait_sms(msisdn, 1, "the retried calibration") == [CALIBRATED]
    assert rig.commands_run(msisdn) == 1
    (outcome,) = rig.phone(msisdn).outcomes
    assert outcome.error is None
    phone = rig.phone(msisdn)
    last = phone.endpoint.last_counter(phone.applet.key_version)
    assert last is not None and last > first_counter  # a new command, a new counter
    state = rig.card(msisdn)
    assert state is not None and state.method is Method.SMS and state.pending is None
    assert rig.card_record(msisdn).method is Method.SMS
    assert_pays_in_band(rig.card_record(msisdn), rig.entry(msisdn).a_db)


@pytest_twisted.ensureDeferred
async def test_por_lost_next_sms_reports_the_file_and_is_taken(rig: CalRig) -> None:
    """The card wrote its file but the network lost its PoR: the platform keeps the card
    uncalibrated; the card's next calibration SMS carries the file written, and the platform
    records it (calibration_already) without a second command."""
    msisdn = P_KNOWN
    rig.drop_por = True
    rig.power_on(msisdn)
    await until(lambda: rig.pors_dropped == 1, WAIT, "the PoR to be lost")
    rig.drop_por = False
    await rig.fence(msisdn)
    state = rig.card(msisdn)
    assert state is not None and not state.calibrated and state.pending is not None
    assert rig.card_record(msisdn).method is Method.SMS and rig.sms(msisdn) == []
    # The card is calibrated for this phone: switching on again sends nothing ...
    rig.power_on(msisdn)
    await rig.fence(msisdn)
    state = rig.card(msisdn)
    assert state is not None and not state.calibrated and rig.sms(msisdn) == []
    # ... so the platform learns of it from the card's next calibration SMS: here, the one
    # it sends when moved to another phone and back (its file is for the first IMEI).
    counter = rig.phone(msisdn).applet.mo_counter + 1
    again = rig.calibration_mo(msisdn, rig.phone(msisdn).imei)
    rig.send(msisdn, rig.card_mo(msisdn, counter, again))
    assert await rig.wait_sms(msisdn, 1, "the reply") == [ALREADY]
    await rig.fence(msisdn)
    assert rig.commands_run(msisdn) == 1
    state = rig.card(msisdn)
    assert state is not None and state.method is Method.SMS
    assert state.record == rig.phone(msisdn).applet.calibration_file()


# -- 6. malformed IMEI --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_malformed_imei_clear_refusal_nothing_recorded(rig: CalRig) -> None:
    """An authentic calibration SMS (the card's keys, its next counters) whose IMEI fails the
    check digit, then one with 14 digits: the IMEI refusal SMS for each, nothing in the
    store, no command to the card, no TAC counted."""
    msisdn = P_KNOWN
    rig.switch_on_holding(msisdn)  # the genuine SMS is not sent
    imei = rig.phone(msisdn).imei
    wrong_luhn = imei[:14] + str((int(imei[14]) + 1) % 10)
    counter = rig.phone(msisdn).applet.mo_counter
    for step, bad in enumerate((wrong_luhn, imei[:14]), start=1):
        rig.send(msisdn, rig.card_mo(msisdn, counter + step, rig.calibration_mo(msisdn, bad)))
    assert await rig.wait_sms(msisdn, 2, "the refusals") == [BAD_IMEI, BAD_IMEI]
    assert "IMEI" in BAD_IMEI
    await rig.fence(msisdn)
    assert rig.card(msisdn) is None
    assert rig.commands_run(msisdn) == 0 and rig.card_record(msisdn).method is Method.NONE
    calibration = rig.gateway.app.calibration  # type: ignore[union-attr]
    assert calibration is not None and calibration.coverage().tacs == ()
