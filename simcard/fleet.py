"""A fleet of virtual phones with personalised RF-SIM wallet cards, and the two ways they reach
the SMSC simulator.

* Personalisation ("one card, one key"): each card's OTA and purse keys come from the platform's
  key store (:meth:`ota.keystore.KeyStore.card_keys`, purse keys by
  :meth:`ota.pboc.PurseKeys.from_card_keys`), so the platform derives the same keys.
* Numbering: MSISDNs count up from ``first_msisdn``; the ICCID of an MSISDN is
  :func:`iccid_for` (``898600`` + the last 13 digits of the MSISDN + a Luhn digit, ITU-T
  E.118); the IMEI of phone *i* is its handset model's TAC, a 6-digit serial and the Luhn check
  digit (3GPP TS 23.003 §6.2.1). Handset models (a TAC and its shielding A, issue 6) are
  assigned round robin; each phone's own A lies within +-0.9 dB of its model's.
* In process (:class:`InProcessNetwork`): a :class:`smsc.handset.HandsetDirectory` whose
  handsets deliver MT to the phones; their MOs are injected with the simulator's
  ``submit_mo(..., user_data=, protocol_id=0x7F, data_coding=0xF6)`` on the next reactor turn
  (never while the simulator is delivering).
* From another process (:class:`HttpLink`): the simulator's HTTP API (``POST /mo`` with
  ``user_data``, ``GET /mt?to=&after=``), blocking urllib calls: call them from a thread
  (``deferToThread``) inside a reactor.
"""

from __future__ import annotations

import json
import random as random_module
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from calibration.imei import luhn_check_digit
from ota.keystore import KeyStore
from simcard.handset import MoSender
from simcard.phone import Event, VirtualPhone
from simcard.wallet_applet import DEFAULT_SHORT_CODE, Outgoing, WalletApplet
from smsc.handset import Handset, MailboxDirectory, MtMessage
from smsc.simulator import TAG_DELIVER_REPORT_OF
from smsc.udh import InformationElement, build_udh

__all__ = [
    "DEFAULT_MODELS",
    "Fleet",
    "FleetError",
    "FleetPhone",
    "HandsetModelSpec",
    "HttpLink",
    "InProcessNetwork",
    "PhoneHandset",
    "iccid_for",
    "imei_for",
]

_EVENTS: Final = 100


class FleetError(ValueError):
    """A fleet that cannot be built, or an HTTP API answer that makes no sense."""


@dataclass(frozen=True, slots=True)
class HandsetModelSpec:
    """A handset model: name, TAC (8 digits) and its shielding A in dB (issue 6)."""

    name: str
    tac: str
    a_db: Decimal


#: Models for the demo and tests (virtual TACs; A from issue 6's worked example range).
DEFAULT_MODELS: Final = (
    HandsetModelSpec("Virtual A10", "35693803", Decimal(10)),
    HandsetModelSpec("Virtual B20", "49015420", Decimal(20)),
    HandsetModelSpec("Virtual C27", "86891203", Decimal(27)),
)


def iccid_for(msisdn: str) -> str:
    """The fleet's ICCID for ``msisdn``: 898600, the MSISDN's last 13 digits, a Luhn digit."""
    if not (msisdn.isascii() and msisdn.isdigit()):
        raise FleetError("an MSISDN is E.164 digits")
    body = "898600" + msisdn[-13:].zfill(13)
    return body + str(luhn_check_digit(body))


def imei_for(tac: str, serial: int) -> str:
    """A valid 15-digit IMEI: ``tac``, ``serial`` mod 10^6 on 6 digits, the check digit."""
    body = tac + f"{serial % 1_000_000:06d}"
    return body + str(luhn_check_digit(body))


@dataclass(slots=True)
class FleetPhone:
    """A phone of the fleet, its model and its own A; the last events it produced by itself
    (MT delivered: SMS received, PoRs sent)."""

    phone: VirtualPhone
    model: HandsetModelSpec
    a_db: Decimal
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=_EVENTS))


class Fleet:
    """``count`` phones personalised from ``keystore`` (see the module docstring)."""

    def __init__(
        self,
        keystore: KeyStore,
        *,
        count: int,
        first_msisdn: str = "8613900000000",
        models: Sequence[HandsetModelSpec] = DEFAULT_MODELS,
        short_code: str = DEFAULT_SHORT_CODE,
        keyset: str = "ota",
        balance: int = 0,
        seed: int = 0,
    ) -> None:
        if count < 0 or not models:
            raise FleetError("a fleet needs count >= 0 and at least one handset model")
        if not (first_msisdn.isascii() and first_msisdn.isdigit()):
            raise FleetError("first_msisdn must be E.164 digits")
        rng = random_module.Random(seed)
        self.phones: dict[str, FleetPhone] = {}
        start = int(first_msisdn)
        for i in range(count):
            msisdn = str(start + i).zfill(len(first_msisdn))
            iccid = iccid_for(msisdn)
            model = models[i % len(models)]
            applet = WalletApplet.personalise(
                iccid,
                keystore.card_keys(iccid, keyset),
                balance=balance,
                rng=random_module.Random(rng.getrandbits(64)),
                short_code=short_code,
            )
            own_a = model.a_db + Decimal(rng.randint(-9, 9)) / 10
            phone = VirtualPhone(msisdn, imei_for(model.tac, i + 1), applet)
            self.phones[msisdn] = FleetPhone(phone, model, own_a)

    def __repr__(self) -> str:
        return f"Fleet({len(self.phones)} phones)"

    def __len__(self) -> int:
        return len(self.phones)

    def __iter__(self) -> Iterator[FleetPhone]:
        return iter(self.phones.values())

    def __getitem__(self, msisdn: str) -> FleetPhone:
        try:
            return self.phones[msisdn]
        except KeyError:
            raise FleetError(f"no phone {msisdn} in the fleet") from None


# -- in process, behind the simulator -------------------------------------------------------


class PhoneHandset:
    """The simulator's handset interface for one fleet phone."""

    def __init__(self, network: InProcessNetwork, entry: FleetPhone) -> None:
        self._network = network
        self.entry = entry

    def __repr__(self) -> str:
        return f"PhoneHandset({self.entry.phone.msisdn!r})"

    def deliver(self, message: MtMessage) -> bool:
        """Hand the MT to the phone; what it sends back goes out on the next turn."""
        msg = message.message
        body = build_udh(msg.ies) + msg.payload if msg.ies else msg.payload
        events = self.entry.phone.deliver(
            [body],
            source=msg.source,
            protocol_id=msg.protocol_id,
            data_coding=msg.data_coding,
            udhi=bool(msg.ies),
            message_id=message.parts[0].message_id if message.parts else None,
        )
        self.entry.events.extend(events)
        self._network.flush(self.entry.phone)
        return True


class InProcessNetwork:
    """A :class:`smsc.handset.HandsetDirectory` putting the fleet's phones behind the
    simulator: MT to a fleet MSISDN reach its phone; every other MSISDN has a mailbox.

    ``send_mo`` is the simulator's ``submit_mo``; ``later`` runs a callable on the next turn
    of the event loop (``lambda f: reactor.callLater(0, f)``)."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        send_mo: MoSender,
        later: Callable[[Callable[[], object]], object],
        fallback: MailboxDirectory | None = None,
    ) -> None:
        self.fleet = fleet
        self._send_mo = send_mo
        self._later = later
        self.fallback = fallback if fallback is not None else MailboxDirectory()
        self._handsets = {
            msisdn: PhoneHandset(self, entry) for msisdn, entry in fleet.phones.items()
        }

    def __repr__(self) -> str:
        return f"InProcessNetwork({len(self._handsets)} phones)"

    def handset(self, msisdn: str) -> Handset | None:
        """The phone at ``msisdn``, else the mailbox."""
        phone = self._handsets.get(msisdn)
        return phone if phone is not None else self.fallback.handset(msisdn)

    def flush(self, phone: VirtualPhone) -> int:
        """Send what ``phone`` has in its outbox (on the next turn); how many messages."""
        outgoing = phone.outbox()
        for message in outgoing:
            self._later(self._sender(phone.msisdn, message))
        return len(outgoing)

    def _sender(self, msisdn: str, message: Outgoing) -> Callable[[], object]:
        tlvs: dict[int, bytes] = {}
        if message.report_of is not None:
            tlvs[TAG_DELIVER_REPORT_OF] = message.report_of.encode() + b"\0"

        def send() -> object:
            return self._send_mo(
                msisdn,
                message.destination,
                user_data=message.user_data,
                protocol_id=message.protocol_id,
                data_coding=message.data_coding,
                tlvs=tlvs,
            )

        return send

    def act(self, msisdn: str, action: Callable[[VirtualPhone], list[Event]]) -> list[Event]:
        """Run ``action`` on the phone at ``msisdn`` (``lambda p: p.select(path)``), then
        send its MOs; returns its events."""
        phone = self.fleet[msisdn].phone
        events = action(phone)
        self.flush(phone)
        return events


# -- from another process, over the simulator's HTTP API --------------------------------------


class HttpLink:
    """One phone's link over the simulator's HTTP API (blocking; see the module docstring)."""

    def __init__(self, base_url: str, phone: VirtualPhone, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.phone = phone
        self.timeout = timeout
        self.cursor: int | None = None

    def __repr__(self) -> str:
        return f"HttpLink({self.base_url!r}, {self.phone.msisdn!r})"

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the operator's own simulator URL
            self.base_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()[:200]
            raise FleetError(f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FleetError(f"{method} {path}: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise FleetError(f"{method} {path}: the answer is not JSON") from None

    def send_outbox(self) -> int:
        """POST each MO of the phone's outbox; how many were sent."""
        outgoing = self.phone.outbox()
        for message in outgoing:
            body: dict[str, Any] = {
                "from": self.phone.msisdn,
                "to": message.destination,
                "user_data": [part.hex() for part in message.user_data],
                "protocol_id": message.protocol_id,
                "data_coding": message.data_coding,
            }
            self._request("POST", "/mo", body)
        return len(outgoing)

    def _mt(self, after: int | None) -> tuple[list[dict[str, Any]], int]:
        query = {"to": self.phone.msisdn}
        if after is not None:
            query["after"] = str(after)
        answer = self._request("GET", "/mt?" + urllib.parse.urlencode(query))
        if not isinstance(answer, dict) or not isinstance(answer.get("messages"), list):
            raise FleetError("GET /mt: unexpected answer")
        cursor = answer.get("cursor")
        if not isinstance(cursor, int):
            raise FleetError("GET /mt: no cursor")
        return answer["messages"], cursor

    def skip_existing(self) -> None:
        """Start after what the mailbox already holds (messages from before this run)."""
        _, self.cursor = self._mt(None)

    def poll(self) -> list[Event]:
        """Fetch the MT that arrived since the last poll, deliver them to the phone, send its
        answers (PoRs); the phone's events."""
        messages, cursor = self._mt(self.cursor)
        events: list[Event] = []
        for message in messages:
            events += self.deliver_json(message)
        if messages:
            last = messages[-1].get("cursor")
            self.cursor = last if isinstance(last, int) else cursor
        elif self.cursor is None:
            self.cursor = cursor
        self.send_outbox()
        return events

    def deliver_json(self, message: dict[str, Any]) -> list[Event]:
        """Deliver one message as ``GET /mt`` shows it."""
        try:
            payload = bytes.fromhex(str(message["hex"]))
            ies_json = message.get("udh") or []

            ies = [InformationElement(int(ie["iei"]), bytes.fromhex(ie["data"])) for ie in ies_json]
            parts = message.get("parts") or [{}]
            message_id = parts[0].get("message_id")
            return self.phone.deliver(
                [build_udh(ies) + payload if ies else payload],
                source=str(message["from"]),
                protocol_id=int(message.get("protocol_id") or 0),
                data_coding=int(message.get("data_coding") or 0),
                udhi=bool(ies),
                message_id=message_id if isinstance(message_id, str) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FleetError(f"GET /mt: malformed message ({type(exc).__name__})") from None
