"""The platform's calibration decisions (issue 6): what to do with a calibration SMS, with
the PoR of a calibration command, and with a business-hall instrument result; and the
coverage figures.

* :meth:`CalibrationService.on_calibration_sms` (the card's automatic SMS on first use and on
  every IMEI change, ``stk_menus.wallet_mo.Calibration``, already authenticated by the
  receiver): a malformed IMEI, a card the platform does not know, or content naming another
  card is **refused** (nothing changes); a card whose calibration file already holds this
  IMEI with the levels the platform would write is **already calibrated**; a TAC the handset
  table knows with a valid payment level gets an **OTA command** (Remote File Management,
  ETSI TS 102 226 §7 over TS 102 225 secured packets, :class:`ota.platform.OtaPlatform`):
  SELECT by path 7F50/6F60 from the MF (TS 102 221 §11.1.1), UPDATE BINARY of the 32-byte
  record (:mod:`calibration.profile`, method SMS; §11.1.4) and READ BINARY of it
  (§11.1.3), recorded as pending for the card; an unknown TAC, or one whose payment level
  cannot be valid, gets the **business-hall** reply and is counted once per card.
* :meth:`CalibrationService.on_por`: a PoR whose READ BINARY returned the record written
  marks the card calibrated (method SMS, when, IMEI, levels) and answers "calibrated"; any
  other PoR leaves it uncalibrated (the card's next calibration SMS retries, with a new
  command and counter).
* :meth:`CalibrationService.on_instrument_result`: the card is recorded calibrated by the
  instrument and the table learns the TAC (:class:`calibration.table.HandsetTable`'s rule: the
  latest 3 results agreeing within +-1 dB make the model's A their mean).
* :meth:`CalibrationService.coverage`: active cards calibrated by SMS, by instrument, not at
  all; the TACs that sent cards to a business hall, by how many cards they hold back.

Sans-IO apart from the store: time comes from the injected clock, the OTA command is
returned for the caller to send, and replies are a template key and values for
``stk_menus.replies.render``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final

from calibration.imei import Imei, ImeiError, parse_imei
from calibration.profile import (
    RECORD_SIZE,
    CalibrationRecord,
    Method,
    ProfileError,
    decode,
    encode,
)
from calibration.rf import DEFAULT_MODEL, Profile, Refusal, RfModel
from calibration.store import CalibrationStore
from calibration.table import HandsetModel, HandsetTable, Learning, LearnStatus, TableError
from ota.apdu import CommandApdu
from ota.commands import TAR_RFM_UICC, SelectReturn, read_binary, select_by_path, update_binary
from ota.platform import OtaPlatform, OutgoingCommand, PorResult
from stk_menus.wallet_mo import Calibration, Language

__all__ = [
    "REPLY_ALREADY",
    "REPLY_BAD_IMEI",
    "REPLY_BUSINESS_HALL",
    "REPLY_CALIBRATED",
    "REPLY_UNKNOWN_CARD",
    "CalibrationService",
    "Coverage",
    "Decision",
    "Outcome",
    "Reply",
    "ServiceError",
    "TacCoverage",
    "calibration_apdus",
]

#: Reply template keys (``stk_menus/templates/<key>.<lang>.j2``).
REPLY_BUSINESS_HALL: Final = "calibration"
REPLY_CALIBRATED: Final = "calibration_done"
REPLY_ALREADY: Final = "calibration_already"
REPLY_BAD_IMEI: Final = "calibration_refused_imei"
REPLY_UNKNOWN_CARD: Final = "refused_unknown_card"

#: The calibration file's path from the MF (simcard.card.CALIBRATION_PATH = 3F00/7F50/6F60).
CALIBRATION_FIDS: Final = (0x7F50, 0x6F60)


class ServiceError(ValueError):
    """A call the service cannot act on (a bad instrument result, a bad argument)."""


class Outcome(Enum):
    """What a decision does."""

    REFUSED = "refused"  # malformed IMEI, unknown card, content naming another card
    ALREADY_CALIBRATED = "already_calibrated"
    OTA_COMMAND = "ota_command"  # send ``Decision.command``; the PoR decides
    BUSINESS_HALL = "business_hall"  # unknown TAC or no valid payment level
    CALIBRATED = "calibrated"  # PoR confirmed, or instrument result recorded
    FAILED = "failed"  # the PoR reports an error: stays uncalibrated
    IGNORED = "ignored"  # a PoR for a command no longer pending


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMS to the subscriber: template key, values and language (``zh`` or ``en``)."""

    template: str
    values: Mapping[str, Any] = field(default_factory=dict)
    language: str = "zh"


@dataclass(frozen=True, slots=True)
class Decision:
    """The service's answer to one event."""

    outcome: Outcome
    iccid: str
    msisdn: str
    reply: Reply | None = None
    command: OutgoingCommand | None = None
    record: CalibrationRecord | None = None
    reason: str = ""
    tac: str | None = None


@dataclass(frozen=True, slots=True)
class TacCoverage:
    """A TAC that sent cards to a business hall. ``status``: ``unknown`` (not in the table),
    ``refused`` (known, no valid payment level) or ``calibratable`` (known since)."""

    tac: str
    cards: int
    held_back: int
    subscribers: int
    status: str


@dataclass(frozen=True, slots=True)
class Coverage:
    """Active cards by calibration method and the TACs holding cards back."""

    active: int
    sms: int
    instrument: int
    uncalibrated: int
    tacs: tuple[TacCoverage, ...]

    def share(self, count: int) -> float:
        """``count`` as a share of active cards (0.0 when there are none)."""
        return count / self.active if self.active else 0.0

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON-ready values."""
        return {
            "active": self.active,
            "sms": self.sms,
            "instrument": self.instrument,
            "uncalibrated": self.uncalibrated,
            "share_sms": round(self.share(self.sms), 4),
            "share_instrument": round(self.share(self.instrument), 4),
            "share_uncalibrated": round(self.share(self.uncalibrated), 4),
            "tacs": [
                {
                    "tac": t.tac,
                    "cards": t.cards,
                    "held_back": t.held_back,
                    "subscribers": t.subscribers,
                    "status": t.status,
                }
                for t in self.tacs
            ],
        }


def calibration_apdus(record: bytes) -> list[CommandApdu]:
    """SELECT 7F50/6F60 from the MF, UPDATE BINARY ``record``, READ BINARY it back."""
    return [
        select_by_path(CALIBRATION_FIDS, returns=SelectReturn.NOTHING),
        update_binary(record),
        read_binary(0, len(record)),
    ]


def _language(mo: Calibration) -> str:
    return "en" if mo.language is Language.EN else "zh"


class CalibrationService:
    """Calibration decisions over a :class:`~calibration.store.CalibrationStore`.

    ``ota`` may be None for a service that only records instrument results and reports
    coverage (the business-hall station, the CLI)."""

    def __init__(
        self,
        store: CalibrationStore,
        *,
        ota: OtaPlatform | None,
        clock: Callable[[], datetime],
        rf_model: RfModel = DEFAULT_MODEL,
        learn_count: int = 3,
        learn_tolerance_db: Decimal = Decimal(1),
        tar: bytes = TAR_RFM_UICC,
        card_known: Callable[[str], bool] | None = None,
    ) -> None:
        if learn_count < 1:
            raise ServiceError("learn_count must be >= 1")
        self._store = store
        self._ota = ota
        self._clock = clock
        self._rf = rf_model
        self._learn_count = learn_count
        self._tolerance = learn_tolerance_db
        self._tar = bytes(tar)
        self._card_known = card_known
        self._profiles: dict[Decimal, Profile | Refusal] = {}

    def __repr__(self) -> str:
        return f"CalibrationService({self._store!r}, TAR {self._tar.hex().upper()})"

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ServiceError("the clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    def profile_for(self, a_db: Decimal) -> Profile | Refusal:
        """The RF model's profile (or refusal) for a model's A (cached: a pure function)."""
        out = self._profiles.get(a_db)
        if out is None:
            out = self._rf.compute_profile(a_db)
            self._profiles[a_db] = out
        return out

    # -- the calibration SMS ----------------------------------------------------------------

    def on_calibration_sms(self, msisdn: str, mo: Calibration, *, iccid: str) -> Decision:
        """Decide on a calibration SMS from ``msisdn`` whose secured packet the receiver
        authenticated as card ``iccid``; ``mo`` is a ``wallet_mo.Calibration``."""
        language = _language(mo)
        mo_iccid = mo.iccid
        if self._card_known is not None and not self._card_known(iccid):
            return Decision(
                Outcome.REFUSED,
                iccid,
                msisdn,
                Reply(REPLY_UNKNOWN_CARD, {}, language),
                reason=f"card {iccid} is not known to the platform",
            )
        if mo_iccid != iccid:
            return Decision(
                Outcome.REFUSED,
                iccid,
                msisdn,
                Reply(REPLY_UNKNOWN_CARD, {}, language),
                reason="the calibration SMS names another card than the one that secured it",
            )
        try:
            imei = parse_imei(mo.imei)
        except ImeiError as exc:
            return Decision(
                Outcome.REFUSED,
                iccid,
                msisdn,
                Reply(REPLY_BAD_IMEI, {}, language),
                reason=f"malformed IMEI: {exc}",
            )
        now = self._now()
        model = self._store.get_model(imei.tac)
        outcome = None if model is None else self.profile_for(model.a_db)
        reported = self._reported(mo.profile)
        if reported is not None and reported.calibrated and reported.imei == imei:
            current = reported.method is Method.INSTRUMENT or (
                isinstance(outcome, Profile)
                and reported.payment_dbm == outcome.payment.p_dbm
                and reported.door_dbm == outcome.door_p_dbm
                and reported.a_db == outcome.a_db
            )
            if current:
                state = self._store.card(iccid)
                raw = encode(reported)
                if state is None or state.record != raw:
                    self._store.mark_calibrated(iccid, raw, msisdn=msisdn, at=now)
                return Decision(
                    Outcome.ALREADY_CALIBRATED,
                    iccid,
                    msisdn,
                    Reply(REPLY_ALREADY, {}, language),
                    record=reported,
                    tac=imei.tac,
                )
        if isinstance(outcome, Profile):
            record = CalibrationRecord.from_profile(
                outcome, imei=imei, method=Method.SMS, on=now.date()
            )
            raw = encode(record)
            if self._ota is None:
                raise ServiceError("this service has no OTA platform to send commands with")
            command = self._ota.command(
                iccid=iccid, msisdn=msisdn, tar=self._tar, apdus=calibration_apdus(raw)
            )
            self._store.mark_pending(
                iccid,
                msisdn=msisdn,
                imei=imei.digits,
                counter=command.pending.counter,
                record=raw,
                language=language,
                at=now,
            )
            return Decision(Outcome.OTA_COMMAND, iccid, msisdn, None, command, record, tac=imei.tac)
        self._store.mark_uncalibrated(iccid, msisdn=msisdn, imei=imei.digits, at=now)
        self._store.count_hold_back(imei.tac, iccid, msisdn=msisdn, at=now)
        reason = (
            f"TAC {imei.tac} is not in the handset table"
            if outcome is None
            else f"TAC {imei.tac}: {outcome.message}"
        )
        return Decision(
            Outcome.BUSINESS_HALL,
            iccid,
            msisdn,
            Reply(REPLY_BUSINESS_HALL, {}, language),
            reason=reason,
            tac=imei.tac,
        )

    @staticmethod
    def _reported(profile: bytes) -> CalibrationRecord | None:
        if len(profile) != RECORD_SIZE:
            return None
        try:
            return decode(profile)
        except ProfileError:
            return None

    # -- the PoR ------------------------------------------------------------------------------

    def on_por(self, result: PorResult) -> Decision:
        """Judge the PoR of a calibration command (verified by ``OtaPlatform.receive_por``)."""
        command = result.command
        iccid, msisdn = command.iccid, command.msisdn
        state = self._store.card(iccid)
        pending = None if state is None else state.pending
        if pending is None:
            return Decision(Outcome.IGNORED, iccid, msisdn, reason="no calibration pending")
        now = self._now()
        data = b"" if result.response is None else result.response.last.data
        if result.ok and data == pending.record:
            record = self._store.mark_calibrated(iccid, pending.record, msisdn=msisdn, at=now)
            return Decision(
                Outcome.CALIBRATED,
                iccid,
                msisdn,
                Reply(REPLY_CALIBRATED, {}, pending.language),
                record=record,
                tac=pending.imei[:8],
            )
        if command.counter != pending.counter:
            return Decision(
                Outcome.IGNORED,
                iccid,
                msisdn,
                reason=f"PoR of command {command.counter}, command {pending.counter} pending",
            )
        self._store.clear_pending(iccid, command.counter, at=now)
        if not result.ok:
            sw = None if result.response is None else f"{result.response.last.sw:04X}"
            reason = f"PoR status {result.status.name}" + (f", SW {sw}" if sw else "")
        else:
            reason = "the card's calibration file does not read back as written"
        return Decision(Outcome.FAILED, iccid, msisdn, reason=reason, tac=pending.imei[:8])

    # -- the instrument -----------------------------------------------------------------------

    def on_instrument_result(
        self,
        iccid: str,
        imei: str | Imei,
        a_estimate: Decimal,
        record: CalibrationRecord,
        *,
        msisdn: str | None = None,
        model_name: str = "",
    ) -> Learning:
        """Record the business hall's calibration of card ``iccid`` in phone ``imei`` (the
        phone's measured A and the record written and verified on the card) and let the
        table learn the TAC."""
        try:
            phone = imei if isinstance(imei, Imei) else parse_imei(imei)
        except ImeiError as exc:
            raise ServiceError(str(exc)) from None
        if not isinstance(record, CalibrationRecord) or record.method is not Method.INSTRUMENT:
            raise ServiceError("an instrument result carries a record with method instrument")
        if record.imei != phone:
            raise ServiceError("the record is written for another IMEI")
        if not isinstance(a_estimate, Decimal) or not a_estimate.is_finite():
            raise ServiceError("the A estimate must be a finite Decimal")
        now = self._now()
        self._store.mark_calibrated(iccid, encode(record), msisdn=msisdn, at=now)
        table = HandsetTable(
            rf_model=self._rf,
            learn_count=self._learn_count,
            learn_tolerance_db=self._tolerance,
        )
        try:
            in_range = table.record_instrument_result(phone.tac, a_estimate).status
        except TableError as exc:
            raise ServiceError(str(exc)) from None
        if in_range is LearnStatus.OUT_OF_RANGE:
            return Learning(phone.tac, LearnStatus.OUT_OF_RANGE, (), None)
        results, known = self._store.add_instrument_result(
            phone.tac,
            a_estimate,
            iccid=iccid,
            imei=phone.digits,
            at=now,
            name=model_name,
            window=self._learn_count,
        )
        if known is not None:
            entry = HandsetTable([known], rf_model=self._rf).get(phone.tac)
            return Learning(phone.tac, LearnStatus.ALREADY_KNOWN, (), entry)
        table = HandsetTable(
            rf_model=self._rf,
            learn_count=self._learn_count,
            learn_tolerance_db=self._tolerance,
        )
        learning = Learning(phone.tac, LearnStatus.PENDING, results, None)
        for value in results:
            learning = table.record_instrument_result(phone.tac, value, name=model_name)
        if learning.status is LearnStatus.LEARNED and learning.entry is not None:
            self._store.add_model_if_absent(learning.entry.model, at=now)
        return learning

    # -- coverage -----------------------------------------------------------------------------

    def coverage(self) -> Coverage:
        """Active cards by method, and the TACs holding cards back."""
        counts = self._store.coverage_counts()
        tacs = []
        for hold in self._store.hold_backs():
            model = self._store.get_model(hold.tac)
            status = self._status(model)
            tacs.append(TacCoverage(hold.tac, hold.cards, hold.held_back, hold.subscribers, status))
        return Coverage(
            counts.active, counts.sms, counts.instrument, counts.uncalibrated, tuple(tacs)
        )

    def _status(self, model: HandsetModel | None) -> str:
        if model is None:
            return "unknown"
        return "calibratable" if isinstance(self.profile_for(model.a_db), Profile) else "refused"
