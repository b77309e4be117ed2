"""The wallet application: route each MO by content and answer it (issue 5, "Handlers").

:class:`WalletApp` is sans-IO apart from its synchronous collaborators (the ledger, the PIN
store, the losable state store, the OTA platform's counter store); time is injected.
``on_message(msg)`` takes one reassembled MO (:class:`smsc.reassembly.Message`) and returns the
effects to carry out: :class:`SendSms` (a reply text) and :class:`SendOta` (a secured command
packet for a card). The routing table, the top-up state machine and the in-doubt rules are in
``docs/handlers.md``; the specifications behind them:

* secured MO from cards: ETSI TS 102 225 §5.1 command packets in the SMS coding of 3GPP TS
  31.115 §4.2 (UDH IEI 0x70), checked by :class:`ota.receiver.SecuredMoReceiver`; the wallet
  action format of ``docs/protocol.md`` (:mod:`stk_menus.wallet_mo`);
* proofs of receipt: TS 102 225 §5.1.2 response packets, TS 31.115 §4.4 (UDH IEI 0x71),
  matched by :meth:`ota.platform.OtaPlatform.receive_por`; the compact remote-APDU response of
  ETSI TS 102 226 §5.1.2;
* the load itself: JR/T 0025 (PBOC) INITIALIZE FOR LOAD / CREDIT FOR LOAD, MAC1, MAC2 and TAC
  (``docs/pboc.md``, :mod:`ota.pboc`), the two-phase top-up of ``docs/ledger.md``;
* distance calibration (issue 6), when a :class:`calibration.service.CalibrationService` is
  given: an authenticated calibration MO goes to ``on_calibration_sms``; its reply is sent and
  its OTA command (Remote File Management, ETSI TS 102 226 §7, to the RFM TAR) becomes a
  :class:`SendOta`. A PoR is routed by the TAR of the command it answers: the wallet applet's
  TAR to the load it confirms, the calibration service's TAR (``calibration_tar``) to
  ``calibration.on_por``; a PoR neither claims (an operator's OTA push, or a calibration
  PoR the service ignores) goes to the optional ``on_other_por`` observer.

Money moves only through the ledger, each request under an idempotency key; a refusal posts
nothing and gets a reply in the MO's language. Errors of the ledger's storage
(:class:`ledger.errors.StorageError`) and of the state store
(:class:`handlers.state.StateUnavailable`) propagate: the gateway then answers the MO with
ESME_RX_T_APPN so the SMSC retries, and a retry is safe (every write is keyed). One
exception: recording the reply in the dedup cache after the work is done; its failure is
logged and the MO is answered (the cache is losable, a redelivery is then recomputed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias
from zoneinfo import ZoneInfo

from calibration.service import CalibrationService, Decision, Outcome
from handlers.pins import MAX_ATTEMPTS, PinCheck, PinStore, PinVerdict
from handlers.state import StateStore, StateUnavailable, dedup_key
from ledger.errors import (
    CardStateError,
    LedgerError,
    LoadStateError,
    Refused,
    UnknownCard,
    UnknownLoad,
    UnknownSubscriber,
)
from ledger.service import Ledger, LoadView, WalletView
from ota.apdu import CommandApdu
from ota.commands import TAR_RFM_UICC
from ota.errors import CounterTooLow, OtaError, ResponseStatus
from ota.keys import CardKeys
from ota.keystore import KeyStore
from ota.pboc import (
    CreditForLoad,
    InitializeForLoadResponse,
    PbocError,
    PurseKeys,
    mac2_load,
    verify_mac1_load,
    verify_tac_load,
)
from ota.platform import OtaPlatform, OutgoingCommand, PorResult, UnmatchedPor
from ota.receiver import SecuredMoReceiver
from smsc.reassembly import Message
from smsc.udh import IEI_COMMAND_PACKET, IEI_RESPONSE_PACKET, InformationElement, build_udh
from stk_menus import wallet_mo
from stk_menus.replies import render

__all__ = [
    "AppConfig",
    "Effect",
    "LoadNote",
    "SendOta",
    "SendSms",
    "WalletApp",
]

log = logging.getLogger(__name__)

#: GET RESPONSE for the 4 octets of the TAC (ISO/IEC 7816-4 §7.6.1), after CREDIT FOR LOAD.
GET_RESPONSE_TAC: Final = CommandApdu(0x00, 0xC0, 0x00, 0x00, b"", 4)
#: PoR statuses meaning the card refused the packet, so the script never ran (TS 102 225
#: §5.1.2 table 5): the load was not applied.
_NOT_RUN: Final = frozenset(
    {
        ResponseStatus.RC_CC_DS_FAILED,
        ResponseStatus.COUNTER_LOW,
        ResponseStatus.COUNTER_HIGH,
        ResponseStatus.COUNTER_BLOCKED,
        ResponseStatus.CIPHERING_ERROR,
        ResponseStatus.UNIDENTIFIED_SECURITY_ERROR,
        ResponseStatus.INSUFFICIENT_MEMORY,
        ResponseStatus.TAR_UNKNOWN,
        ResponseStatus.INSUFFICIENT_SECURITY_LEVEL,
    }
)
_REPLY_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class SendSms:
    """Send ``text`` to the subscriber ``to`` (an MSISDN)."""

    to: str
    text: str


@dataclass(frozen=True, slots=True)
class SendOta:
    """Send the secured command ``outgoing`` (its SMS user data) to the card at ``msisdn``."""

    msisdn: str
    outgoing: OutgoingCommand


Effect: TypeAlias = SendSms | SendOta


@dataclass(frozen=True, slots=True)
class AppConfig:
    """The application's settings.

    ``in_doubt_after``: seconds after which :meth:`WalletApp.sweep` marks an unanswered load in
    doubt. ``reply_ttl``: how long the first reply to a secured MO is kept for redeliveries.
    ``help_rate``/``help_burst``: the per-MSISDN token bucket of help and unauthenticated
    refusal replies; ``text_rate``/``text_burst``: of plain-text queries. ``terminal_id``: the
    platform's terminal id the cards initialise loads with (None: any). ``timezone``: where
    the CREDIT FOR LOAD date and time are taken (a terminal in China)."""

    in_doubt_after: float = 300.0
    reply_ttl: float = 7 * 86_400.0
    help_rate: float = 1 / 60
    help_burst: int = 3
    text_rate: float = 1 / 6
    text_burst: int = 10
    terminal_id: bytes | None = None
    timezone: str = "Asia/Shanghai"
    max_notes: int = 100_000


#: the version of a load's durable credit note (``loads.credit``)
_CREDIT_VERSION: Final = 1
#: ``ota_counter`` of a note read back from the ledger (the command's counter is not kept)
NO_COUNTER: Final = -1


@dataclass(frozen=True, slots=True)
class LoadNote:
    """What the platform sent for a reserved load: enough to check its TAC later.

    It lives in this instance's memory and, but for the OTA counter, in the load's row
    (``credit``, written in the reservation's transaction; :meth:`credit` and
    :meth:`from_load`), so that a PoR reaching another gateway instance, or this one after a
    restart, is checked as well."""

    load_id: str
    key: str
    msisdn: str
    iccid: str
    amount: int
    old_balance: int
    online_counter: int
    terminal_id: bytes
    date: dt.date
    time: dt.time
    lang: str
    reserved_at: dt.datetime
    ota_counter: int
    #: built again for a load whose first CREDIT may have been sent: its failure proves
    #: nothing (the load is left in doubt, never voided)
    resent: bool = False

    @staticmethod
    def credit(
        *,
        old_balance: int,
        terminal_id: bytes,
        date: dt.date,
        time: dt.time,
        lang: str,
        nonce: str | None = None,
    ) -> str:
        """The durable part of a note, as stored with the reservation (compact JSON). Its
        ``n`` (random unless given) makes each note unique: a reservation that returns the
        caller's own note was made by that call (a replay returns the first caller's)."""
        at = dt.datetime.combine(date, time).isoformat()
        body = {"v": _CREDIT_VERSION, "ob": old_balance, "tid": terminal_id.hex(), "at": at}
        n = secrets.token_hex(8) if nonce is None else nonce
        return json.dumps({**body, "l": lang, "n": n}, separators=(",", ":"))

    @classmethod
    def from_load(cls, load: LoadView, zone: dt.tzinfo) -> LoadNote | None:
        """The note of a pending load read from the ledger (None: it has none, or one this
        version cannot read); ``zone``: the time zone the CREDIT's date and time are in."""
        if not load.credit:
            return None
        try:
            data = json.loads(load.credit)
            if data.get("v") != _CREDIT_VERSION:
                return None
            at = dt.datetime.fromisoformat(data["at"])
            old_balance, lang = int(data["ob"]), str(data["l"])
            terminal_id = bytes.fromhex(data["tid"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return cls(
            load_id=load.id,
            key=load.key,
            msisdn=load.msisdn,
            iccid=load.iccid,
            amount=load.amount,
            old_balance=old_balance,
            online_counter=load.online_counter,
            terminal_id=terminal_id,
            date=at.date(),
            time=at.time(),
            lang=lang,
            reserved_at=at.replace(tzinfo=zone),
            ota_counter=NO_COUNTER,
        )


_PLAIN: Final[dict[str, tuple[str, str]]] = {
    "余额": ("balance", "zh"),
    "YE": ("balance", "zh"),
    "BAL": ("balance", "en"),
    "BALANCE": ("balance", "en"),
    "明细": ("last10", "zh"),
    "MX": ("last10", "zh"),
    "LAST": ("last10", "en"),
    "充值": ("financial", "zh"),
    "CZ": ("financial", "zh"),
    "转账": ("financial", "zh"),
    "消费": ("financial", "zh"),
    "TOPUP": ("financial", "en"),
    "LOAD": ("financial", "en"),
    "PAY": ("financial", "en"),
}


def _lang(language: wallet_mo.Language) -> str:
    return "en" if language is wallet_mo.Language.EN else "zh"


def _encode_reply(texts: Sequence[str]) -> bytes:
    return json.dumps({"v": _REPLY_VERSION, "sms": list(texts)}, ensure_ascii=False).encode()


def _decode_reply(raw: bytes) -> list[str] | None:
    try:
        data = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("v") != _REPLY_VERSION:
        return None
    texts = data.get("sms")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return None
    return texts


class WalletApp:
    """The MO handler (see the module docstring)."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        receiver: SecuredMoReceiver,
        platform: OtaPlatform,
        keystore: KeyStore,
        pins: PinStore,
        state: StateStore,
        clock: Callable[[], dt.datetime],
        config: AppConfig | None = None,
        keyset: str = "ota",
        calibration: CalibrationService | None = None,
        calibration_tar: bytes = TAR_RFM_UICC,
        on_other_por: Callable[[PorResult], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.receiver = receiver
        self.platform = platform
        self.keystore = keystore
        self.pins = pins
        self.state = state
        self.clock = clock
        self.config = config if config is not None else AppConfig()
        self.keyset = keyset
        self.calibration = calibration
        self.calibration_tar = bytes(calibration_tar)
        self.on_other_por = on_other_por
        self._zone = ZoneInfo(self.config.timezone)
        # The notes are shared by the gateway's workers (each subscriber on one worker).
        self._notes_lock = threading.Lock()
        self._notes: OrderedDict[str, LoadNote] = OrderedDict()  # by load id
        self._by_command: dict[tuple[str, int], str] = {}  # (msisdn, OTA counter) -> load id
        self._unknown_seen: set[str] = set()

    def __repr__(self) -> str:
        return f"WalletApp({len(self._notes)} loads awaiting a PoR)"

    # -- routing ----------------------------------------------------------------------------

    def on_message(self, msg: Message) -> list[Effect]:
        """Handle one MO; returns the effects to carry out, in order."""
        ieis = {ie.iei for ie in msg.ies}
        if IEI_RESPONSE_PACKET in ieis:
            return self._on_por(msg)
        if IEI_COMMAND_PACKET in ieis:
            return self._on_secured(msg)
        return self._on_text(msg)

    # -- plain text -------------------------------------------------------------------------

    def _on_text(self, msg: Message) -> list[Effect]:
        text = msg.text().strip()
        word = "".join(text.split()).upper()
        found = _PLAIN.get(word)
        if found is None:  # "充值100", "TOPUP 50": a financial word with an amount
            found = next(
                (v for k, v in _PLAIN.items() if v[0] == "financial" and word.startswith(k)),
                None,
            )
        sender = msg.source
        if found is None:
            if not self.state.allow(
                f"{sender}:help", rate=self.config.help_rate, burst=self.config.help_burst
            ):
                return []
            lang = "en" if text.isascii() and text else "zh"
            return [SendSms(sender, render("help", lang))]
        action, lang = found
        if not self.state.allow(
            f"{sender}:text", rate=self.config.text_rate, burst=self.config.text_burst
        ):
            return []
        if action == "financial":
            return [SendSms(sender, render("refused_plain_text", lang))]
        try:
            return [SendSms(sender, self._query(sender, action, lang))]
        except UnknownSubscriber:
            return [SendSms(sender, render("refused_unknown_card", lang))]

    def _query(self, msisdn: str, action: str, lang: str) -> str:
        if action == "balance":
            return self._balance(self.ledger.wallet(msisdn), lang)
        entries = self.ledger.history(msisdn, last=10)
        rows = [
            {"date": e.at.astimezone(self._zone).date(), "kind": e.code, "amount": e.amount}
            for e in entries
        ]
        return render("last10", lang, transactions=rows)

    @staticmethod
    def _balance(wallet: WalletView, lang: str) -> str:
        return render("balance", lang, card_balance=wallet.card_balance, cash_balance=wallet.cash)

    # -- secured MO -------------------------------------------------------------------------

    def _unauthenticated(self, sender: str, name: str) -> list[Effect]:
        """A refusal to a packet we could not authenticate: rate-limited, in Chinese."""
        if not self.state.allow(
            f"{sender}:refusal", rate=self.config.help_rate, burst=self.config.help_burst
        ):
            return []
        return [SendSms(sender, render(name, "zh"))]

    def _on_secured(self, msg: Message) -> list[Effect]:
        sender = msg.source
        try:
            wallet = self.ledger.wallet(sender)
        except UnknownSubscriber:
            return self._unauthenticated(sender, "refused_unknown_card")
        iccid = wallet.card_iccid
        if iccid is None or wallet.card_state != "active":
            return self._unauthenticated(sender, "refused_unknown_card")
        packet = msg.payload
        try:
            received = self.receiver.receive(iccid, packet)
        except CounterTooLow:
            return self._unauthenticated(sender, "refused_replay")
        except OtaError:
            return self._unauthenticated(sender, "refused_bad_mac")
        command = received.command
        key = dedup_key(iccid, command.tar, command.counter, packet)
        if received.redelivered:
            stored = self.state.recall_reply(key)
            texts = None if stored is None else _decode_reply(stored)
            if texts is not None:
                return [SendSms(sender, t) for t in texts]
        try:
            action = wallet_mo.decode(command.data)
        except wallet_mo.WalletMoError:
            effects: list[Effect] = [SendSms(sender, render("refused_bad_mac", "zh"))]
        else:
            effects = self._on_action(
                sender,
                iccid,
                action,
                tar=command.tar,
                counter=command.counter,
                redelivered=received.redelivered,
                wallet=wallet,
            )
        texts_sent = [e.text for e in effects if isinstance(e, SendSms)]
        try:
            self.state.remember_reply(key, _encode_reply(texts_sent), self.config.reply_ttl)
        except StateUnavailable as exc:
            # The work is done (money reserved, the CREDIT built): refusing the MO now would
            # lose the CREDIT. The cache is losable; a redelivery is then recomputed.
            log.warning("reply to card %s not remembered (dedup cache): %s", iccid, exc)
        return effects

    def _on_action(
        self,
        msisdn: str,
        iccid: str,
        action: wallet_mo.WalletMo,
        *,
        tar: bytes,
        counter: int,
        redelivered: bool,
        wallet: WalletView,
    ) -> list[Effect]:
        """``wallet``: the sender's wallet as read to find its card. Nothing in flight on the
        card means no load of it is pending (the ledger keeps the two together, and
        ``verify`` checks it): there is nothing to settle, and its balances are current."""
        lang = _lang(action.language)
        load_key = f"{iccid}:{tar.hex().upper()}:{counter}"
        settled = wallet.in_flight == 0
        if isinstance(action, wallet_mo.TopUp):
            return self._topup(
                msisdn,
                iccid,
                action,
                lang=lang,
                load_key=load_key,
                redelivered=redelivered,
                pending=() if settled else None,
            )
        effects: list[Effect] = [] if settled else self._resolve(msisdn, iccid, action, None, None)
        if isinstance(action, wallet_mo.Balance):
            text = self._balance(wallet, lang) if settled else self._query(msisdn, "balance", lang)
            effects.append(SendSms(msisdn, text))
        elif isinstance(action, wallet_mo.Last10):
            effects.append(SendSms(msisdn, self._query(msisdn, "last10", lang)))
        elif isinstance(action, wallet_mo.Calibration) and self.calibration is not None:
            decision = self.calibration.on_calibration_sms(msisdn, action, iccid=iccid)
            effects += self._calibration_effects(decision)
        return effects

    # -- calibration ------------------------------------------------------------------------

    @staticmethod
    def _calibration_effects(decision: Decision) -> list[Effect]:
        """The reply and the OTA command of a calibration decision, in that order."""
        effects: list[Effect] = []
        if decision.reply is not None:
            reply = decision.reply
            text = render(reply.template, reply.language, **dict(reply.values))
            effects.append(SendSms(decision.msisdn, text))
        if decision.command is not None:
            effects.append(SendOta(decision.msisdn, decision.command))
        if decision.reason:
            log.info(
                "calibration of card %s: %s (%s)",
                decision.iccid,
                decision.outcome.value,
                decision.reason,
            )
        return effects

    def _other_por(self, por: PorResult) -> list[Effect]:
        """A PoR that no load claims: calibration by its TAR, else the observer."""
        if self.calibration is not None and por.command.tar == self.calibration_tar:
            decision = self.calibration.on_por(por)
            if decision.outcome is not Outcome.IGNORED:
                return self._calibration_effects(decision)
        if self.on_other_por is not None:
            self.on_other_por(por)
        return []

    # -- top-up -----------------------------------------------------------------------------

    def _topup(
        self,
        msisdn: str,
        iccid: str,
        action: wallet_mo.TopUp,
        *,
        lang: str,
        load_key: str,
        redelivered: bool,
        pending: Sequence[LoadView] | None = None,
    ) -> list[Effect]:
        """``pending``: the card's pending loads when the caller knows them (none)."""

        def reply(name: str, **values: object) -> list[Effect]:
            return [*effects, SendSms(msisdn, render(name, lang, **values))]

        try:
            init = InitializeForLoadResponse.from_bytes(action.load_init)
        except PbocError:
            return [SendSms(msisdn, render("refused_bad_mac", lang))]
        if pending is None:
            pending = self.ledger.pending_loads(iccid)
        effects: list[Effect] = self._resolve(
            msisdn, iccid, action, init, load_key, pending=pending
        )
        check = self.pins.verify(iccid, action.pin, count=not redelivered)
        if check.verdict is PinVerdict.NOT_SET:
            return reply("refused_pin_unset")
        if check.verdict is PinVerdict.LOCKED:
            return reply("refused_pin_locked")
        if check.verdict is PinVerdict.WRONG:
            return reply("refused_wrong_pin", attempts_left=check.attempts_left)
        expected_tid = self.config.terminal_id
        card_keys = self.keystore.card_keys(iccid, self.keyset)  # also for the CREDIT's packet
        purse = PurseKeys.from_card_keys(card_keys)
        try:
            mac1_ok = (expected_tid is None or action.terminal_id == expected_tid) and (
                verify_mac1_load(purse.dlk, init, action.amount, action.terminal_id)
            )
        except PbocError:
            mac1_ok = False
        if not mac1_ok:
            return reply("refused_bad_mac")
        pending_before = {v.key for v in pending}
        # The CREDIT's date and time are chosen now and kept with the reservation, so that
        # whichever instance gets the PoR can check its TAC.
        local = self.clock().astimezone(self._zone).replace(microsecond=0)
        date, time = local.date(), local.time().replace(tzinfo=None)
        credit = LoadNote.credit(
            old_balance=init.old_balance,
            terminal_id=action.terminal_id,
            date=date,
            time=time,
            lang=lang,
        )
        try:
            load = self.ledger.reserve_load(
                msisdn,
                iccid,
                action.amount,
                card_balance=init.old_balance,
                online_counter=init.online_counter,
                key=load_key,
                credit=credit,
            )
        except Refused as refused:
            self._pin_succeeded(iccid, check)
            return [*effects, SendSms(msisdn, self._refusal(refused, lang))]
        except (UnknownCard, UnknownSubscriber, CardStateError):
            return reply("refused_unknown_card")
        except LedgerError as exc:
            log.warning("top-up of card %s refused by the ledger: %s", iccid, exc)
            return reply("topup_failed")
        self._pin_succeeded(iccid, check)
        resend = False
        if load_key in pending_before:
            if self._has_note(load.id):
                return effects  # the CREDIT for this load went out already
            # Reserved, but this instance never built its CREDIT: the first handling failed
            # after the reserve (the SMSC redelivers the MO), or the gateway restarted. The
            # CREDIT is built again; the first may have been sent and applied, so a failure
            # of this one proves nothing (in doubt, never void). It carries the first one's
            # date and time (the same MAC2, so the same TAC) when the ledger kept them.
            resend = True
            first = LoadNote.from_load(load, self._zone)
            if first is not None:
                date, time = first.date, first.time
        elif load.credit != credit and load.id not in {
            v.id for v in self.ledger.pending_loads(iccid)
        }:
            # A replay (the first reservation's note came back, not ours) of a load settled
            # since. Our own note back means this call reserved it: pending, no read needed.
            return effects
        return [
            *effects,
            self._send_credit(
                msisdn,
                iccid,
                load,
                init=init,
                action=action,
                lang=lang,
                purse=purse,
                card_keys=card_keys,
                date=date,
                time=time,
                resent=resend,
            ),
        ]

    def _pin_succeeded(self, iccid: str, check: PinCheck) -> None:
        """Reset the wrong-PIN count after a judged request; a write only when there is a
        count to reset (the common case, no wrong attempt before, costs no transaction)."""
        if check.attempts_left < MAX_ATTEMPTS:
            self.pins.succeeded(iccid)

    def _send_credit(
        self,
        msisdn: str,
        iccid: str,
        load: LoadView,
        *,
        init: InitializeForLoadResponse,
        action: wallet_mo.TopUp,
        lang: str,
        purse: PurseKeys,
        card_keys: CardKeys,
        date: dt.date,
        time: dt.time,
        resent: bool = False,
    ) -> SendOta:
        now = self.clock()
        mac2 = mac2_load(
            purse.dlk,
            random=init.random,
            online_counter=init.online_counter,
            amount=action.amount,
            terminal_id=action.terminal_id,
            date=date,
            time=time,
        )
        credit = CreditForLoad(date, time, mac2).to_apdu()
        outgoing = self.platform.command(
            iccid=iccid,
            msisdn=msisdn,
            tar=wallet_mo.WALLET_TAR,
            apdus=[
                CommandApdu(credit.cla, credit.ins, credit.p1, credit.p2, credit.data),
                GET_RESPONSE_TAC,
            ],
            card_keys=card_keys,
        )
        note = LoadNote(
            load_id=load.id,
            key=load.key,
            msisdn=msisdn,
            iccid=iccid,
            amount=action.amount,
            old_balance=init.old_balance,
            online_counter=init.online_counter,
            terminal_id=action.terminal_id,
            date=date,
            time=time,
            lang=lang,
            reserved_at=now,
            ota_counter=outgoing.pending.counter,
            resent=resent,
        )
        self._remember(note)
        return SendOta(msisdn, outgoing)

    def _remember(self, note: LoadNote) -> None:
        with self._notes_lock:
            self._notes[note.load_id] = note
            self._by_command[(note.msisdn, note.ota_counter)] = note.load_id
            while len(self._notes) > self.config.max_notes:
                _, old = self._notes.popitem(last=False)
                self._by_command.pop((old.msisdn, old.ota_counter), None)

    def _forget(self, load_id: str) -> LoadNote | None:
        with self._notes_lock:
            note = self._notes.pop(load_id, None)
            if note is not None:
                self._by_command.pop((note.msisdn, note.ota_counter), None)
            return note

    def _has_note(self, load_id: str) -> bool:
        with self._notes_lock:
            return load_id in self._notes

    def _note_for(self, msisdn: str, ota_counter: int) -> LoadNote | None:
        """The note of the load whose CREDIT went out as OTA command ``ota_counter``."""
        with self._notes_lock:
            load_id = self._by_command.get((msisdn, ota_counter))
            return None if load_id is None else self._notes.get(load_id)

    def _refusal(self, refused: Refused, lang: str) -> str:
        f = refused.figures
        if refused.rule == "single_topup_limit":
            return render("refused_topup_limit", lang, amount=f["amount"], limit=f["limit"])
        if refused.rule == "card_balance_limit":
            return render(
                "refused_card_cap",
                lang,
                amount=f["amount"],
                card_balance=f["card_balance"] + f["in_flight"],
                cap=f["limit"],
            )
        if refused.rule == "daily_topup_count":
            return render("refused_daily_count", lang, max_count=f["limit"])
        if refused.rule == "insufficient_funds":
            return render(
                "refused_insufficient_cash", lang, amount=f["amount"], cash_balance=f["balance"]
            )
        return render("topup_failed", lang)

    # -- the PoR ----------------------------------------------------------------------------

    def _on_por(self, msg: Message) -> list[Effect]:
        user_data = build_udh((InformationElement(IEI_RESPONSE_PACKET),)) + msg.payload
        try:
            try:
                por = self.platform.receive_por(msg.source, user_data)
            except UnmatchedPor:
                # Sent before a restart, or by another instance: checked with the keys of
                # the card the sender's wallet holds.
                iccid = self._card_of(msg.source)
                if iccid is None:
                    raise
                por = self.platform.receive_por(msg.source, user_data, iccid=iccid)
        except OtaError as exc:
            log.info("PoR from %s refused: %s", msg.source, exc)
            return []
        note = self._note_for(por.command.msisdn, por.command.counter)
        if note is None:
            if por.command.tar == wallet_mo.WALLET_TAR:
                return self._por_of_load(por)
            return self._other_por(por)  # a calibration update, an operator's push
        load_id = note.load_id
        tac = self._tac_of(por)
        if tac is not None:
            if self._tac_ok(note, tac):
                return self._post(note.msisdn, note.lang, note)
            log.warning("load %s: the TAC in the PoR does not verify; left in doubt", load_id)
            self._mark_in_doubt(load_id)
            return []
        credit_failed = (
            por.status is ResponseStatus.POR_OK
            and por.response is not None
            and por.response.executed == 1  # the script stopped at CREDIT FOR LOAD
            and por.response.last.sw >> 8 not in (0x90, 0x91, 0x92, 0x61)
        )
        if por.status in _NOT_RUN or credit_failed:
            if note.resent:
                log.warning("load %s: a resent CREDIT failed; left in doubt", load_id)
                self._mark_in_doubt(load_id)
                return []
            return self._void(note.msisdn, note.lang, load_id, notify=True)
        if por.status is ResponseStatus.POR_OK:
            log.warning("load %s: the card ran CREDIT but gave no TAC; left in doubt", load_id)
            self._mark_in_doubt(load_id)
        return []  # "more time" and the like: the load stays reserved

    def _card_of(self, msisdn: str) -> str | None:
        """The ICCID of the active card of ``msisdn``'s wallet (None: no such card)."""
        try:
            wallet = self.ledger.wallet(msisdn)
        except UnknownSubscriber:
            return None
        return wallet.card_iccid if wallet.card_state == "active" else None

    def _por_of_load(self, por: PorResult) -> list[Effect]:
        """A wallet PoR this instance holds no note for: the load whose durable note its TAC
        verifies is posted. Anything else (no TAC, no such load) waits for the card's next
        contact, which settles the load by its online counter."""
        tac = self._tac_of(por)
        if tac is None:
            log.info(
                "PoR from card %s without a TAC for a load sent elsewhere; settled at its "
                "next contact",
                por.command.iccid,
            )
            return []
        for load in self.ledger.pending_loads(por.command.iccid):
            note = LoadNote.from_load(load, self._zone)
            if note is not None and self._tac_ok(note, tac):
                return self._post(note.msisdn, note.lang, note)
        log.warning("PoR from card %s: its TAC verifies no pending load", por.command.iccid)
        return []

    @staticmethod
    def _tac_of(por: PorResult) -> bytes | None:
        if not por.ok or por.response is None:
            return None
        last = por.response.last
        if last.sw != 0x9000 or len(last.data) != 4:
            return None
        return last.data

    def _tac_ok(self, note: LoadNote, tac: bytes) -> bool:
        purse = PurseKeys.from_card_keys(self.keystore.card_keys(note.iccid, self.keyset))
        try:
            return verify_tac_load(
                purse.dtk,
                new_balance=note.old_balance + note.amount,
                online_counter=note.online_counter,
                amount=note.amount,
                terminal_id=note.terminal_id,
                date=note.date,
                time=note.time,
                tac=tac,
            )
        except PbocError:
            return False

    def _post(
        self, msisdn: str, lang: str, note: LoadNote | None, load_id: str = ""
    ) -> list[Effect]:
        target = note.load_id if note is not None else load_id
        try:
            load = self.ledger.post_load(target)
        except (LoadStateError, UnknownLoad) as exc:
            log.warning("load %s could not be posted: %s", target, exc)
            self._forget(target)
            return []
        self._forget(target)
        card_balance, cash = load.card_balance, load.cash_balance
        if card_balance is None or cash is None:  # a ledger that does not report them
            wallet = self.ledger.wallet(msisdn)
            card_balance, cash = wallet.card_balance, wallet.cash
        text = render(
            "topup_ok", lang, amount=load.amount, card_balance=card_balance, cash_balance=cash
        )
        return [SendSms(msisdn, text)]

    def _void(self, msisdn: str, lang: str, load_id: str, *, notify: bool) -> list[Effect]:
        try:
            self.ledger.void_load(load_id)
        except (LoadStateError, UnknownLoad) as exc:
            log.warning("load %s could not be voided: %s", load_id, exc)
            self._forget(load_id)
            return []
        self._forget(load_id)
        return [SendSms(msisdn, render("topup_failed", lang))] if notify else []

    def _mark_in_doubt(self, load_id: str) -> None:
        try:
            self.ledger.mark_in_doubt(load_id)
        except (LoadStateError, UnknownLoad) as exc:
            log.info("load %s not marked in doubt: %s", load_id, exc)

    # -- in doubt ---------------------------------------------------------------------------

    def _resolve(
        self,
        msisdn: str,
        iccid: str,
        action: wallet_mo.WalletMo,
        init: InitializeForLoadResponse | None,
        own_key: str | None,
        *,
        pending: Sequence[LoadView] | None = None,
    ) -> list[Effect]:
        """Settle this card's pending loads from what its (authenticated) MO tells: the online
        counter now (tag 86, or the INITIALIZE FOR LOAD answer of a top-up) and the proof of the
        last load (tag 87). Returns the confirmation or failure replies. ``pending``: the
        card's pending loads when the caller read them already."""
        now_counter = init.online_counter if init is not None else action.online_counter
        if now_counter is None:
            return []
        if pending is None:
            pending = self.ledger.pending_loads(iccid)
        effects: list[Effect] = []
        proof = action.load_proof
        lang = _lang(action.language)
        for load in pending:
            if load.key == own_key:
                continue  # this very MO's load (a redelivery): not settled by itself
            note = self._notes.get(load.id) or LoadNote.from_load(load, self._zone)
            lang_of = note.lang if note is not None else lang
            if now_counter > load.online_counter:
                tac = (
                    proof.tac
                    if proof is not None and proof.counter == load.online_counter
                    else None
                )
                if note is not None and tac is not None and not self._tac_ok(note, tac):
                    log.warning("load %s: proof does not verify; left in doubt", load.id)
                    self._mark_in_doubt(load.id)
                    continue
                # Only a CREDIT FOR LOAD with the platform's MAC2 for this counter moves it.
                effects += self._post(msisdn, lang_of, note, load.id)
            elif now_counter == load.online_counter:
                # A new INITIALIZE closed the load's session (the CREDIT can no longer apply);
                # without one, only a load already in doubt is given up.
                if init is not None or load.state == "in_doubt":
                    effects += self._void(msisdn, lang_of, load.id, notify=True)
            else:
                log.warning("card %s reports counter %d below load %s", iccid, now_counter, load.id)
        return effects

    def _forget_settled(self, pending: set[str], limit: dt.datetime) -> None:
        """Drop the notes, and the OTA commands awaiting a PoR, of loads reserved before
        ``limit`` that are no longer pending: settled by another instance (it got the PoR)
        or by the card's next contact there. Without this they would stay until evicted."""
        with self._notes_lock:
            settled = [
                note
                for load_id, note in self._notes.items()
                if load_id not in pending and note.reserved_at <= limit
            ]
        for note in settled:
            self._forget(note.load_id)
            self.platform.forget(note.msisdn, wallet_mo.WALLET_TAR, note.ota_counter)

    def sweep(self, now: dt.datetime) -> list[str]:
        """Mark in doubt the loads reserved more than ``in_doubt_after`` seconds before ``now``
        whose PoR never came, judged by this instance's note or the one kept with the load
        (and loads with neither, from the second sweep that finds them). Posts and voids
        nothing. Forgets what this instance kept of loads settled elsewhere. Returns the load
        ids marked."""
        limit = now - dt.timedelta(seconds=self.config.in_doubt_after)
        marked: list[str] = []
        unknown: set[str] = set()
        pending = self.ledger.pending_loads()
        self._forget_settled({load.id for load in pending}, limit)
        for load in pending:
            if load.state != "reserved":
                continue
            # this instance's note, else the one kept with the load (another instance's)
            note = self._notes.get(load.id) or LoadNote.from_load(load, self._zone)
            if note is None:
                if load.id in self._unknown_seen:
                    self._mark_in_doubt(load.id)
                    marked.append(load.id)
                else:
                    unknown.add(load.id)
            elif note.reserved_at <= limit:
                self._mark_in_doubt(load.id)
                marked.append(load.id)
        self._unknown_seen = unknown
        return marked
