"""A phone with an RF-SIM behind the SMSC simulator's handset interface (:mod:`smsc.handset`).

An MT that is an SMS-PP data download (3GPP TS 23.040 §9.2.3.9 TP-PID 0x7F with a command
packet identifier, IEI 0x70, in its UDH: 3GPP TS 31.115 §4.2) goes to the card's OTA endpoint
(:class:`~simcard.ota_endpoint.OtaEndpoint`), as a real phone passes it to the UICC by
ENVELOPE (SMS-PP DOWNLOAD). The PoR the card produces goes back to the sender as an
SMS-SUBMIT from this phone with TP-PID 0x7F, data coding 0xF6 and IEI 0x71 (TS 31.115 §4.4),
injected into the simulator as an MO on the next reactor turn (never re-entering the
simulator while it delivers). Any other MT lands in the phone's inbox.

When the command's SPI asks for the PoR in the SMS-DELIVER-REPORT instead, a real network
hands that user data to the SMSC, and SMPP 3.4 has no way to pass it to the ESME. The
simulator's documented extension carries it anyway: the same user data as an MO tagged with
the vendor TLV :data:`~smsc.simulator.TAG_DELIVER_REPORT_OF` (the MT's message id).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ota.secured_packet import PorTransport
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD, response_user_data
from simcard.ota_endpoint import OtaEndpoint, OtaOutcome
from smsc.handset import Handset, MailboxDirectory, MtMessage
from smsc.simulator import TAG_DELIVER_REPORT_OF
from smsc.udh import IEI_COMMAND_PACKET

__all__ = ["CardDirectory", "CardHandset", "MoSender"]


class MoSender(Protocol):
    """What sends a handset's MO into the network (the simulator's ``submit_mo``)."""

    def __call__(
        self,
        source: str,
        destination: str,
        *,
        user_data: Sequence[bytes] | None = ...,
        protocol_id: int = ...,
        data_coding: int | None = ...,
        tlvs: Mapping[int, bytes] | None = ...,
    ) -> object: ...


class CardHandset:
    """One phone (``msisdn``) holding a card whose OTA endpoint is ``endpoint``.

    ``send_mo`` injects an MO; ``later`` runs a callable on the next turn of the event loop
    (e.g. ``lambda f: reactor.callLater(0, f)``). ``outcomes`` keeps the last results of the
    endpoint (bounded), ``inbox`` the last ordinary messages.
    """

    def __init__(
        self,
        msisdn: str,
        endpoint: OtaEndpoint,
        *,
        send_mo: MoSender,
        later: Callable[[Callable[[], object]], object],
        keep: int = 100,
    ) -> None:
        self.msisdn = msisdn
        self.endpoint = endpoint
        self._send_mo = send_mo
        self._later = later
        self.outcomes: deque[OtaOutcome] = deque(maxlen=keep)
        self.inbox: deque[MtMessage] = deque(maxlen=keep)

    def __repr__(self) -> str:
        return f"CardHandset({self.msisdn!r})"

    def deliver(self, message: MtMessage) -> bool:
        """Take one whole MT: an OTA command goes to the card, anything else to the inbox."""
        msg = message.message
        is_ota = msg.protocol_id == TP_PID_SIM_DATA_DOWNLOAD and any(
            ie.iei == IEI_COMMAND_PACKET for ie in msg.ies
        )
        if not is_ota:
            self.inbox.append(message)
            return True
        outcome = self.endpoint.receive(msg.payload)
        self.outcomes.append(outcome)
        if outcome.response is not None:
            user_data = response_user_data(outcome.response)
            reply_to = msg.source
            tlvs: dict[int, bytes] = {}
            spi = outcome.spi
            if spi is not None and spi.por_transport is PorTransport.DELIVER_REPORT:
                tlvs[TAG_DELIVER_REPORT_OF] = message.parts[0].message_id.encode() + b"\0"

            def send() -> None:
                self._send_mo(
                    self.msisdn,
                    reply_to,
                    user_data=(user_data,),
                    protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
                    data_coding=DCS_CLASS2_8BIT,
                    tlvs=tlvs,
                )

            self._later(send)
        return True


class CardDirectory:
    """A handset directory with card phones for some MSISDNs and a mailbox for the rest."""

    def __init__(self, fallback: MailboxDirectory | None = None) -> None:
        self._cards: dict[str, CardHandset] = {}
        self.fallback = fallback if fallback is not None else MailboxDirectory()

    def add(self, handset: CardHandset) -> None:
        """Put ``handset`` on the network at its MSISDN."""
        self._cards[handset.msisdn] = handset

    def handset(self, msisdn: str) -> Handset:
        """The card phone at ``msisdn``, else the mailbox."""
        card = self._cards.get(msisdn)
        return card if card is not None else self.fallback.handset(msisdn)
