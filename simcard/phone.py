"""The virtual phone: what a subscriber sees and does with an RF-SIM wallet card (sans-IO).

The phone and its card talk as a real terminal and UICC do (ETSI TS 102 223): every proactive
command the applet issues is encoded to its BER-TLV (``D0``) and decoded by the phone; every
answer goes back as an encoded TERMINAL RESPONSE (§6.8) or ENVELOPE (MENU SELECTION) (§7.2),
decoded on the card side, with :mod:`stk_menus.cat`. At power-on the phone installs the SET UP
MENU and reports its IMEI (PROVIDE LOCAL INFORMATION, §6.4.15).

An MT that is an SMS-PP data download (3GPP TS 23.040 §9.2.3.9 TP-PID 0x7F with the command
packet element IEI 0x70: 3GPP TS 31.115 §4.2) goes to the card's OTA endpoint, which may answer
with a PoR (UDH IEI 0x71, sent by SMS-SUBMIT: §4.4). Any other MT is a text message decoded per
its data coding (SMPP 3.4 §5.2.19, TS 23.038 §4) into the inbox.

Methods return events (frozen dataclasses with ``to_json()``): :class:`Screen`,
:class:`SmsReceived`, :class:`SmsSent`. MOs wait in the outbox (:meth:`VirtualPhone.outbox`)
for the network adapter (:mod:`simcard.fleet`) to send. Nothing here shows a PIN: a hidden
input is never part of an event.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from ota.errors import OtaError
from ota.secured_packet import PorTransport
from ota.smspp import (
    DCS_CLASS2_8BIT,
    TP_PID_SIM_DATA_DOWNLOAD,
    parse_command_user_data,
    response_user_data,
)
from simcard.ota_endpoint import OtaEndpoint, OtaOutcome
from simcard.wallet_applet import Outgoing, Proactive, WalletApplet
from smsc.text import Encoding, decode_text, encoding_of
from smsc.udh import IEI_COMMAND_PACKET, InformationElement, UdhError, find_concat, split_udh
from stk_menus.cat import (
    CatError,
    DisplayText,
    GeneralResult,
    GetInput,
    GetInputQualifier,
    Item,
    ItemIdentifier,
    SelectItem,
    SetUpMenu,
    TerminalResponse,
    decode_envelope,
    decode_proactive_command,
    decode_terminal_response,
    terminal_response,
)
from stk_menus.cat import MenuSelection as MenuSelectionEnvelope
from stk_menus.menu import SEPARATOR

__all__ = ["Event", "PhoneError", "Screen", "SmsReceived", "SmsSent", "VirtualPhone"]

_INBOX: Final = 100


class PhoneError(ValueError):
    """The phone was asked something its screen does not offer (never shows a PIN)."""


@dataclass(frozen=True, slots=True)
class Screen:
    """What the display shows: a menu (``items``), an input ``prompt`` (``hidden``: a PIN, no
    echo) or a ``text``; ``kind`` is ``menu``, ``select``, ``input`` or ``text``."""

    kind: str
    title: str | None = None
    items: tuple[str, ...] = ()
    prompt: str | None = None
    hidden: bool = False
    text: str | None = None

    def to_json(self) -> dict[str, object]:
        """One JSON object (``event: screen``)."""
        out: dict[str, object] = {"event": "screen", "kind": self.kind}
        if self.title is not None:
            out["title"] = self.title
        if self.items:
            out["items"] = list(self.items)
        if self.prompt is not None:
            out["prompt"] = self.prompt
            out["hidden"] = self.hidden
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass(frozen=True, slots=True)
class SmsReceived:
    """A text message that arrived."""

    text: str
    sender: str
    data_coding: int = 0

    def to_json(self) -> dict[str, object]:
        """One JSON object (``event: sms``)."""
        return {"event": "sms", "from": self.sender, "text": self.text}


@dataclass(frozen=True, slots=True)
class SmsSent:
    """A short message the card sent: a wallet action (``action``), or a PoR (``por``)."""

    destination: str
    parts: int
    action: str | None = None
    counter: int | None = None
    por: bool = False

    def to_json(self) -> dict[str, object]:
        """One JSON object (``event: sms_sent``)."""
        out: dict[str, object] = {"event": "sms_sent", "to": self.destination, "parts": self.parts}
        if self.action is not None:
            out["action"] = self.action
        if self.counter is not None:
            out["counter"] = self.counter
        if self.por:
            out["por"] = True
        return out


Event: TypeAlias = Screen | SmsReceived | SmsSent


def _menu_screen(command: SetUpMenu | SelectItem, kind: str) -> Screen:
    title = None if command.alpha is None else command.alpha.text
    return Screen(kind, title=title, items=tuple(item.text for item in command.items))


@functools.lru_cache(maxsize=512)
def _coded(command: SetUpMenu | SelectItem | GetInput | DisplayText) -> object:
    """The command encoded (TS 102 223 §6.6) and decoded back, as a handset FETCHes it: the
    menu's commands are the same for every phone of a fleet, so each is coded once."""
    return decode_proactive_command(command.encode())


#: The cache size of the identity caches below (a fleet's menu has a few dozen commands).
_BY_IDENTITY: Final = 512
#: id(command) -> (command, what the phone decodes). The menu and the applet hand out the
#: same command objects every session (:mod:`stk_menus.menu` builds each once), so most
#: look-ups hit by identity without hashing the command; the entry holds the command, so
#: its id cannot be reused while it is cached.
_FETCHED: dict[int, tuple[object, object]] = {}


def _fetched(command: SetUpMenu | SelectItem | GetInput | DisplayText) -> object:
    """:func:`_coded`, looked up by identity first."""
    hit = _FETCHED.get(id(command))
    if hit is not None and hit[0] is command:
        return hit[1]
    decoded = _coded(command)
    if len(_FETCHED) >= _BY_IDENTITY:
        _FETCHED.clear()
    _FETCHED[id(command)] = (command, decoded)
    return decoded


@functools.lru_cache(maxsize=512)
def _responded(response: TerminalResponse) -> TerminalResponse:
    """A TERMINAL RESPONSE without typed text (an item chosen, a text read; TS 102 223
    §6.8) encoded and decoded back, as the card receives it; coded once per kind."""
    return decode_terminal_response(response.encode())


#: (id(command), item or None) -> (command, the card's decoded TERMINAL RESPONSE): the
#: answer to a SELECT ITEM (an item chosen) or a DISPLAY TEXT (read), by identity as above.
_ANSWERED: dict[tuple[int, int | None], tuple[object, TerminalResponse]] = {}


def _answered(command: SelectItem | DisplayText, item: int | None = None) -> TerminalResponse:
    """The card's view of the successful TERMINAL RESPONSE to ``command`` (choosing ``item``
    of a SELECT ITEM); :class:`CatError` as :func:`stk_menus.cat.terminal_response` raises."""
    key = (id(command), item)
    hit = _ANSWERED.get(key)
    if hit is not None and hit[0] is command:
        return hit[1]
    decoded = _responded(terminal_response(command, item=item))
    if len(_ANSWERED) >= _BY_IDENTITY:
        _ANSWERED.clear()
    _ANSWERED[key] = (command, decoded)
    return decoded


@functools.lru_cache(maxsize=256)
def _menu_selection(item: int) -> int:
    """ENVELOPE (MENU SELECTION) of ``item`` (TS 102 223 §7.2) encoded and decoded back, as
    the card receives it: the item identifier it names (coded once per item)."""
    envelope = MenuSelectionEnvelope(ItemIdentifier(item)).encode()
    return decode_envelope(envelope).item.identifier


class VirtualPhone:
    """A phone ``msisdn`` with handset identity ``imei`` holding ``card`` whose wallet applet
    is ``applet`` and whose OTA endpoint is ``endpoint`` (built from the applet if None)."""

    def __init__(
        self,
        msisdn: str,
        imei: str,
        applet: WalletApplet,
        *,
        endpoint: OtaEndpoint | None = None,
        short_code: str | None = None,
    ) -> None:
        self.msisdn = msisdn
        self.imei = imei
        self.applet = applet
        self.card = applet.card
        self.endpoint = endpoint if endpoint is not None else applet.ota_endpoint()
        if short_code is not None:
            applet.short_code = short_code
        self.inbox: deque[SmsReceived] = deque(maxlen=_INBOX)
        self.outcomes: deque[OtaOutcome] = deque(maxlen=_INBOX)
        self._outbox: list[Outgoing] = []
        self._menu: SetUpMenu | None = None
        self._current: SelectItem | GetInput | None = None

    def __repr__(self) -> str:
        return f"VirtualPhone({self.msisdn!r}, iccid={self.card.iccid!r})"

    # -- the card interface, as bytes ---------------------------------------------------------

    @staticmethod
    def _fetch(command: SetUpMenu | SelectItem | GetInput | DisplayText) -> object:
        """The command as the phone decodes it from its encoding (FETCH)."""
        return _fetched(command)

    def power_on(self) -> list[Event]:
        """Switch on: the card resets, installs its menu and learns the IMEI (may send the
        calibration MO)."""
        self.card.power_on()
        menu = self._fetch(self.applet.setup_menu())
        assert isinstance(menu, SetUpMenu)
        self._menu = menu
        self._current = None
        events: list[Event] = [_menu_screen(menu, "menu")]
        outgoing = self.applet.provide_local_information(self.imei)
        if outgoing is not None:
            events.append(self._queue(outgoing))
        return events

    def change_imei(self, imei: str) -> list[Event]:
        """Move the card to another handset (``imei``) and switch it on."""
        self.imei = imei
        return self.power_on()

    @property
    def screen(self) -> SelectItem | GetInput | None:
        """The command waiting for the user, if any."""
        return self._current

    def select(self, path: str) -> list[Event]:
        """Choose the menu entries of ``path`` ("我的手机钱包/充值") from the main menu."""
        if self._menu is None:
            raise PhoneError("the phone is off: power_on() first")
        labels = [label for label in path.split(SEPARATOR) if label]
        if not labels:
            raise PhoneError("an empty menu path")
        item = _item_id(self._menu.items, labels[0], path)
        events: list[Event] = []
        shown = self.applet.envelope_menu_selection(_menu_selection(item))
        self._current = None
        self._run(shown, events)
        for label in labels[1:]:
            current = self.screen  # (the property: _run changed it)
            if not isinstance(current, SelectItem):
                raise PhoneError(f"{label!r} in {path!r}: no menu is shown there")
            choice = _item_id(current.items, label, path)
            self._current = None
            self._run(self.applet.terminal_response(_answered(current, choice)), events)
        return events

    def input(self, text: str) -> list[Event]:
        """Type ``text`` into the GET INPUT shown (amount, PIN)."""
        current = self._current
        if not isinstance(current, GetInput):
            raise PhoneError("no input is asked for")
        try:
            response = terminal_response(current, text=text)
        except CatError:
            raise PhoneError("the input does not fit what is asked (length or alphabet)") from None
        events: list[Event] = []
        self._answer(response, events)
        return events

    def choose(self, item: int) -> list[Event]:
        """Pick item ``item`` (its identifier) of the SELECT ITEM shown."""
        current = self._current
        if not isinstance(current, SelectItem):
            raise PhoneError("no menu is shown")
        try:
            response = terminal_response(current, item=item)
        except CatError:
            raise PhoneError(f"item {item} is not offered") from None
        events: list[Event] = []
        self._answer(response, events)
        return events

    def cancel(self) -> list[Event]:
        """End the session shown (the red key)."""
        current = self._current
        if current is None:
            return []
        events: list[Event] = []
        self._answer(terminal_response(current, GeneralResult.SESSION_TERMINATED_BY_USER), events)
        return events

    def _answer(self, response: TerminalResponse, events: list[Event]) -> None:
        self._current = None
        # What the subscriber typed (amount, PIN) is coded each time and never kept.
        decoded = (
            _responded(response)
            if response.text is None
            else decode_terminal_response(response.encode())
        )
        self._run(self.applet.terminal_response(decoded), events)

    def _run(self, shown: Proactive, events: list[Event]) -> None:
        """Show what the card asks until it waits for the user or the session ends."""
        while shown is not None:
            if isinstance(shown, Outgoing):
                events.append(self._queue(shown))
                shown = self.applet.message_sent(shown)
                continue
            command = self._fetch(shown)
            if isinstance(command, SelectItem):
                events.append(_menu_screen(command, "select"))
                self._current = command
                return
            if isinstance(command, GetInput):
                hidden = bool(command.qualifier & GetInputQualifier.HIDDEN)
                events.append(Screen("input", prompt=command.text.text, hidden=hidden))
                self._current = command
                return
            if isinstance(command, DisplayText):
                events.append(Screen("text", text=command.text.text))
                # the subscriber reads the text and clears it
                shown = self.applet.terminal_response(_answered(command))
                continue
            raise PhoneError(f"the card sent {type(command).__name__} in a session")

    def _queue(self, outgoing: Outgoing) -> SmsSent:
        self._outbox.append(outgoing)
        action = None if outgoing.action is None else outgoing.action.name.lower()
        return SmsSent(
            outgoing.destination,
            len(outgoing.user_data),
            action=action,
            counter=outgoing.counter,
            por=outgoing.action is None,
        )

    def outbox(self) -> list[Outgoing]:
        """The MOs to send, oldest first; the outbox is emptied."""
        out, self._outbox = self._outbox, []
        return out

    # -- MT -----------------------------------------------------------------------------------

    def deliver(
        self,
        user_data: Sequence[bytes],
        *,
        source: str,
        protocol_id: int = 0,
        data_coding: int = 0,
        udhi: bool = True,
        message_id: str | None = None,
    ) -> list[Event]:
        """An MT: each short message's user data (with its UDH when ``udhi``). An OTA command
        goes to the card (its PoR, if any, to the outbox); a text goes to the inbox."""
        if not user_data:
            raise PhoneError("an MT without user data")
        split: list[tuple[tuple[InformationElement, ...], bytes]] = []
        if udhi:
            try:
                split = [split_udh(bytes(part)) for part in user_data]
            except UdhError:
                return []  # a handset drops what it cannot parse
        else:
            split = [((), bytes(part)) for part in user_data]
        first_ies = split[0][0]
        is_ota = protocol_id == TP_PID_SIM_DATA_DOWNLOAD and any(
            ie.iei == IEI_COMMAND_PACKET for ie in first_ies
        )
        if is_ota:
            return self._ota(user_data, source, message_id)
        ordered = sorted(split, key=lambda p: _seq(p[0]))
        payload = b"".join(part for _, part in ordered)
        encoding = encoding_of(data_coding, default=Encoding.GSM7)
        text = decode_text(payload, encoding)
        sms = SmsReceived(text, source, data_coding)
        self.inbox.append(sms)
        return [sms]

    def _ota(self, user_data: Sequence[bytes], source: str, message_id: str | None) -> list[Event]:
        try:
            packet = parse_command_user_data([bytes(part) for part in user_data])
        except OtaError:
            return []
        outcome = self.endpoint.receive(packet)
        self.outcomes.append(outcome)
        if outcome.response is None:
            return []
        spi = outcome.spi
        by_report = spi is not None and spi.por_transport is PorTransport.DELIVER_REPORT
        por = Outgoing(
            source,
            (response_user_data(outcome.response),),
            protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
            data_coding=DCS_CLASS2_8BIT,
            report_of=message_id if by_report else None,
        )
        return [self._queue(por)]


def _seq(ies: tuple[InformationElement, ...]) -> int:
    concat = find_concat(ies)
    return 0 if concat is None else concat.seqnum


def _item_id(items: Sequence[Item], label: str, path: str) -> int:
    for item in items:
        if item.text == label:
            return item.identifier
    raise PhoneError(f"{label!r} of {path!r} is not on the menu shown")
