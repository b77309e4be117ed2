"""Outbound message model of the ESME: what a caller sends and what it learns back.

SMPP v3.4 Issue 1.2 clauses: §4.4.1 submit_sm fields; §5.2.12 esm_class (UDHI, bit 6,
is set for every part that carries a UDH); §5.2.17 registered_delivery (0x01, "SMSC
delivery receipt requested where final delivery outcome is delivery success or failure",
on **every** part of a long message, so a failure of any part is reported); §5.2.19
data_coding; §5.3.2.22-24 sar_* and §5.3.2.32 message_payload for long messages. User data
headers and concatenation follow 3GPP TS 23.040 §9.2.3.24.1/.8 (see :mod:`smsc.segment`).

Text without an explicit encoding: with ``data_coding_default = "gsm7"`` (the SMSC reads
0x00 as GSM 03.38) it goes as GSM 7-bit when the default alphabet and its extension table
can carry it, else as UCS2. With ``"ascii"``/``"latin1"`` (0x00 means that charset at this
SMSC) text that charset can carry goes with its explicit data_coding (0x01/0x03), else UCS2.

This module is sans-IO; the Twisted client is :mod:`smsc.esme`.
"""

from __future__ import annotations

from dataclasses import dataclass

from smsc.esme_core import ABORTED, INVALID, TIMEOUT
from smsc.pdu import ESM_UDHI, SubmitSm, status_name
from smsc.segment import (
    LongMode,
    ReferenceAllocator,
    Segment,
    segment_binary,
    segment_encoded,
)
from smsc.text import Encoding, encode_auto, encode_text
from smsc.udh import InformationElement
from stkpay.config import SmscConfig

__all__ = [
    "ABORTED",
    "INVALID",
    "TIMEOUT",
    "OutboundMessage",
    "PartResult",
    "ResultCollector",
    "SendResult",
    "build_submits",
    "status_text",
]

_LOCAL_NAMES = {TIMEOUT: "TIMEOUT", ABORTED: "ABORTED", INVALID: "INVALID"}
_LONG_MODES = {mode.value: mode for mode in LongMode}
_REGISTERED_DELIVERY = 0x01  # §5.2.17: receipt on final delivery success or failure


def status_text(status: int) -> str:
    """``ESME_ROK``, ``ESME_RTHROTTLED``, ``0x000000AB``, or ``TIMEOUT``/``ABORTED``/``INVALID``."""
    local = _LOCAL_NAMES.get(status)
    return local if local is not None else status_name(status)


def _check_text(name: str, value: str, limit: int, *, allow_empty: bool = True) -> None:
    if len(value) > limit or not value.isascii():
        raise ValueError(f"{name} must be ASCII of at most {limit} characters")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message to send: ``text`` (with an optional ``encoding``) or binary ``data``.

    ``user_data`` instead carries SMS user data already built, UDH included, one entry per
    short message, sent as is with UDHI set (3GPP TS 31.115 §4 secured packets, whose
    command-packet element travels in the first segment only: :mod:`ota.smspp` builds them).

    ``None`` fields take their value from the :class:`~stkpay.config.SmscConfig`:
    ``source`` (``source_addr``), the TON/NPI fields, ``registered_delivery`` and
    ``long_mode`` (``long_messages``). ``data_coding`` applies to binary data only
    (default 0x04; e.g. 0xF6 for SIM data download). ``extra_ies`` go into every part's
    UDH (e.g. IEI 0x70 for an OTA command packet, port addressing). ``esm_class`` holds
    extra bits (messaging mode, reply path); UDHI is set automatically.
    """

    destination: str
    text: str | None = None
    data: bytes | None = None
    user_data: tuple[bytes, ...] | None = None
    source: str | None = None
    encoding: Encoding | None = None
    data_coding: int | None = None
    extra_ies: tuple[InformationElement, ...] = ()
    protocol_id: int = 0
    esm_class: int = 0
    registered_delivery: bool | None = None
    long_mode: LongMode | None = None
    source_addr_ton: int | None = None
    source_addr_npi: int | None = None
    dest_addr_ton: int | None = None
    dest_addr_npi: int | None = None
    service_type: str = ""
    validity_period: str = ""
    priority_flag: int = 0

    def __post_init__(self) -> None:
        text = self.text
        if self.user_data is not None:
            if text is not None or self.data is not None:
                raise ValueError("give exactly one of text, data and user_data")
            if not 1 <= len(self.user_data) <= 255:
                raise ValueError("user_data must hold 1 to 255 short messages")
            if any(not 1 <= len(part) <= 140 for part in self.user_data):
                raise ValueError("each user_data part must be 1 to 140 octets (TS 23.040)")
            if self.encoding is not None and self.encoding is not Encoding.BINARY:
                raise ValueError("binary data takes no text encoding")
        elif text is not None:
            if self.data is not None:
                raise ValueError("give exactly one of text and data")
            if self.encoding is Encoding.BINARY:
                raise ValueError("text cannot be sent with the binary encoding; use data")
            if self.data_coding is not None:
                raise ValueError("data_coding applies to binary data; text chooses its own")
        elif self.data is None:
            raise ValueError("give exactly one of text and data")
        elif self.encoding is not None and self.encoding is not Encoding.BINARY:
            raise ValueError("binary data takes no text encoding")
        if not (
            0 <= self.protocol_id <= 0xFF
            and 0 <= self.esm_class <= 0xFF
            and 0 <= self.priority_flag <= 0xFF
        ):
            raise ValueError("protocol_id, esm_class and priority_flag must be 0..255")
        # §4.4.1 C-Octet String limits (the codec would refuse them later, inside the window).
        _check_text("destination", self.destination, 20, allow_empty=False)
        if self.source is not None:
            _check_text("source", self.source, 20)
        if self.service_type:
            _check_text("service_type", self.service_type, 5)
        if self.validity_period:
            if len(self.validity_period) != 16:
                raise ValueError("validity_period must be empty or 16 characters (§7.1.1)")
            _check_text("validity_period", self.validity_period, 16)


@dataclass(frozen=True, slots=True)
class PartResult:
    """The outcome of one part: the SMSC's message id and the command_status (0 = accepted;
    negative: the local :data:`TIMEOUT`, :data:`ABORTED` or :data:`INVALID`)."""

    message_id: str
    status: int

    @property
    def ok(self) -> bool:
        """True when the SMSC accepted the part."""
        return self.status == 0

    @property
    def status_name(self) -> str:
        """The status by name (see :func:`status_text`)."""
        return status_text(self.status)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of a whole message, one :class:`PartResult` per part in order.

    Delivery receipts are not part of it: they arrive later through the ESME's
    ``on_receipt`` callback.
    """

    parts: tuple[PartResult, ...]

    @property
    def ok(self) -> bool:
        """True when every part was accepted."""
        return all(part.status == 0 for part in self.parts)

    @property
    def status(self) -> int:
        """The first failing part's status, 0 when all were accepted."""
        for part in self.parts:
            if part.status != 0:
                return part.status
        return 0

    @property
    def message_ids(self) -> tuple[str, ...]:
        """The SMSC's message id of each part (``""`` where none was given)."""
        return tuple(part.message_id for part in self.parts)


class ResultCollector:
    """Gathers the parts' outcomes of one message; the :class:`SendResult` once all are in."""

    __slots__ = ("_parts", "_remaining")

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("a message has at least one part")
        self._parts: list[PartResult | None] = [None] * count
        self._remaining = count

    @property
    def remaining(self) -> int:
        """Parts still without an outcome."""
        return self._remaining

    def set(self, index: int, result: PartResult) -> SendResult | None:
        """Record part ``index``; returns the whole result when it was the last one.

        Raises ValueError if that part already has an outcome (each is final once).
        """
        if self._parts[index] is not None:
            raise ValueError(f"part {index} already has an outcome")
        self._parts[index] = result
        self._remaining -= 1
        if self._remaining:
            return None
        return SendResult(tuple(p for p in self._parts if p is not None))


def _segments(
    msg: OutboundMessage, config: SmscConfig, references: ReferenceAllocator
) -> list[Segment]:
    mode = msg.long_mode if msg.long_mode is not None else _LONG_MODES[config.long_messages]
    if msg.user_data is not None:
        coding = 0x04 if msg.data_coding is None else msg.data_coding
        return [Segment(part, True, {}, coding) for part in msg.user_data]
    destination = msg.destination
    wide = mode is not LongMode.UDH8

    def reference() -> int:  # drawn only for a message of more than one part
        return references.next(destination, wide=wide)

    if msg.data is not None:
        coding = 0x04 if msg.data_coding is None else msg.data_coding
        return segment_binary(
            msg.data, mode, reference, data_coding=coding, extra_ies=msg.extra_ies
        )
    text = msg.text
    assert text is not None
    enc = msg.encoding
    if enc is not None:
        data = encode_text(text, enc)
    elif config.data_coding_default == "gsm7":
        enc, data = encode_auto(text)  # the GSM-7 check and conversion in one pass
    else:
        enc = Encoding(config.data_coding_default)
        try:
            data = text.encode("ascii" if enc is Encoding.ASCII else "latin-1")
        except UnicodeEncodeError:
            enc = Encoding.UCS2
            data = encode_text(text, enc)
    return segment_encoded(data, enc, mode, reference, extra_ies=msg.extra_ies)


def build_submits(
    msg: OutboundMessage, config: SmscConfig, references: ReferenceAllocator
) -> list[SubmitSm]:
    """The submit_sm PDUs (sequence_number 0) carrying ``msg``, one per part, in order.

    A concatenation reference is drawn from ``references`` (per destination) only when the
    message needs more than one part. Raises ValueError (including
    :class:`~smsc.gsm7.UnencodableError`) when the message cannot be encoded or needs more
    than 255 parts.
    """
    segments = _segments(msg, config, references)
    wants = msg.registered_delivery
    if wants is None:
        wants = config.registered_delivery
    registered = _REGISTERED_DELIVERY if wants else 0
    source = config.source_addr if msg.source is None else msg.source
    src_ton = config.source_addr_ton if msg.source_addr_ton is None else msg.source_addr_ton
    src_npi = config.source_addr_npi if msg.source_addr_npi is None else msg.source_addr_npi
    dst_ton = config.dest_addr_ton if msg.dest_addr_ton is None else msg.dest_addr_ton
    dst_npi = config.dest_addr_npi if msg.dest_addr_npi is None else msg.dest_addr_npi
    return [
        SubmitSm(
            service_type=msg.service_type,
            source_addr_ton=src_ton,
            source_addr_npi=src_npi,
            source_addr=source,
            dest_addr_ton=dst_ton,
            dest_addr_npi=dst_npi,
            destination_addr=msg.destination,
            esm_class=(msg.esm_class | ESM_UDHI) if seg.udhi else msg.esm_class,
            protocol_id=msg.protocol_id,
            priority_flag=msg.priority_flag,
            validity_period=msg.validity_period,
            registered_delivery=registered,
            data_coding=seg.data_coding,
            short_message=seg.short_message,
            tlvs=dict(seg.tlvs) if seg.tlvs else {},
        )
        for seg in segments
    ]
