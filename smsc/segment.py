"""Splitting long messages into SMPP submissions.

Three ways of sending a message that exceeds one short message (3GPP TS 23.040 §9.2.3.24;
SMPP 3.4 §5.3.2.22-24 and §5.3.2.32):

* ``UDH8`` / ``UDH16``: each part carries a concatenation IE (§9.2.3.24.1, 8-bit reference;
  §9.2.3.24.8, 16-bit reference) in its User Data Header;
* ``SAR``: no UDH; each part carries the sar_msg_ref_num (2 octets), sar_total_segments and
  sar_segment_seqnum TLVs and the SMSC builds the UDH. Because that UDH shares the part's 140
  octets, parts are sized as if they carried a 16-bit concatenation IE (152 septets, 66 UCS2
  code units, 133 octets), which fits whichever IE the SMSC chooses;
* ``PAYLOAD``: the whole message in one message_payload TLV (§5.3.2.32), short_message empty.

One part holds 140 octets of user data including the UDH (§9.2.3.24): GSM 7-bit text
floor((140 - UDH octets) * 8 / 7) septets (160 / 153 with an 8-bit concat IE / 152 with a
16-bit one), UCS2 (140 - UDH octets) // 2 UTF-16 code units (70 / 67 / 66), 8-bit data
140 - UDH octets (140 / 134 / 133). GSM 7-bit text is carried unpacked in short_message (one
septet per octet, SMPP §5.2.19), so its short_message may be longer than 140 octets; packed on
the air interface it fits. Extra IEs (port addressing, the TS 31.115 command packet IE) are
repeated in every part and reduce its capacity. A part never ends between an escape and its
extension code (TS 23.038 §6.2.1.1) nor between the halves of a UTF-16 surrogate pair.
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smsc.gsm7 import ESC
from smsc.pdu import Tag
from smsc.text import Encoding, data_coding_for, encode_text
from smsc.udh import CONCAT_IEIS, IEI_CONCAT_8, IEI_CONCAT_16, InformationElement, build_udh

__all__ = [
    "MAX_PARTS",
    "MAX_USER_DATA",
    "SAR_UDH_RESERVE",
    "LongMode",
    "ReferenceAllocator",
    "Segment",
    "segment_binary",
    "segment_encoded",
    "segment_text",
]

MAX_USER_DATA = 140  # octets of TP-User-Data in one SMS, UDH included (TS 23.040 §9.2.3.24)
MAX_PARTS = 255  # sar_total_segments and the concat IE count parts in one octet
MAX_PAYLOAD = 0xFFFF  # message_payload TLV length field (SMPP §5.3.2.32)
SAR_UDH_RESERVE = 6  # octets of a 16-bit concatenation IE (§9.2.3.24.8)

#: A concatenation reference, or what draws one: called only when a message needs more than
#: one part (a :class:`ReferenceAllocator`'s counter advances only for those).
Reference = int | Callable[[], int]


class LongMode(enum.StrEnum):
    """How a message longer than one part is submitted."""

    UDH8 = "udh8"
    UDH16 = "udh16"
    SAR = "sar"
    PAYLOAD = "payload"


@dataclass(frozen=True, slots=True)
class Segment:
    """One submit_sm's worth of a message.

    ``short_message`` includes the UDH when ``udhi`` (the caller then ORs ``ESM_UDHI`` into
    esm_class); ``tlvs`` holds the sar_* TLVs or message_payload (then short_message is b"").
    """

    short_message: bytes
    udhi: bool
    tlvs: dict[int, bytes]
    data_coding: int


class _Unit(enum.Enum):
    """What one unit of the encoded data is, for capacity and split rules."""

    SEPTET = 1  # one unpacked GSM septet per octet; never split ESC from its code
    OCTET = 2
    UTF16 = 3  # two octets per code unit; never split a surrogate pair


def _capacity(unit: _Unit, udh_len: int) -> int:
    """Units that fit in one part beside a UDH of ``udh_len`` octets (0: no UDH)."""
    room = MAX_USER_DATA - udh_len
    if unit is _Unit.SEPTET:
        return room * 8 // 7
    if unit is _Unit.UTF16:
        return room // 2
    return room


def _split(data: bytes, unit: _Unit, capacity: int) -> list[bytes]:
    """Cut ``data`` into chunks of at most ``capacity`` units, keeping pairs together."""
    step = capacity * 2 if unit is _Unit.UTF16 else capacity
    chunks: list[bytes] = []
    start = 0
    size = len(data)
    while start < size:
        end = start + step
        if end < size:
            if unit is _Unit.SEPTET and data[end - 1] == ESC:
                end -= 1  # the escape goes with its extension code into the next part
            elif unit is _Unit.UTF16 and 0xD8 <= data[end - 2] <= 0xDB:
                end -= 2  # a high surrogate goes with its low surrogate
        chunks.append(data[start:end])
        start = end
    return chunks


def _ie_octets(ies: Sequence[InformationElement]) -> int:
    return sum(2 + len(ie.data) for ie in ies)


def _check_reference(reference: int, mode: LongMode) -> None:
    limit = 0xFF if mode is LongMode.UDH8 else 0xFFFF
    if not 0 <= reference <= limit:
        raise ValueError(f"reference {reference} out of range 0..{limit} for {mode}")


def _segment(
    data: bytes,
    unit: _Unit,
    data_coding: int,
    mode: LongMode,
    *,
    reference: Reference,
    extra_ies: Sequence[InformationElement],
) -> list[Segment]:
    extra = tuple(extra_ies)
    for ie in extra:
        if ie.iei in CONCAT_IEIS:
            raise ValueError("extra_ies must not hold a concatenation IE; segmentation adds it")
    extra_udh = build_udh(extra) if extra else b""

    if mode is LongMode.PAYLOAD:
        payload = extra_udh + data
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"message of {len(payload)} octets exceeds message_payload's 65535")
        return [Segment(b"", bool(extra), {Tag.MESSAGE_PAYLOAD: payload}, data_coding)]

    if isinstance(reference, int):
        _check_reference(reference, mode)

    unit_octets = 2 if unit is _Unit.UTF16 else 1
    if len(data) <= _capacity(unit, len(extra_udh)) * unit_octets:
        return [Segment(extra_udh + data, bool(extra), {}, data_coding)]

    # Every part's UDH: the extra IEs and a concatenation IE. In SAR mode the SMSC adds that
    # IE from the sar_* TLVs; room is left for the 16-bit one, whichever the SMSC chooses.
    concat_len = 5 if mode is LongMode.UDH8 else SAR_UDH_RESERVE
    udh_len = 1 + _ie_octets(extra) + concat_len
    capacity = _capacity(unit, udh_len)
    if capacity < (1 if unit is _Unit.OCTET else 2):  # room for at least one escape/surrogate pair
        raise ValueError("the extra IEs leave no room for the message in a part")
    if len(data) > MAX_PARTS * capacity * unit_octets:  # cheap early refusal of huge input
        raise ValueError(f"message needs more than {MAX_PARTS} parts")
    chunks = _split(data, unit, capacity)
    total = len(chunks)
    if total > MAX_PARTS:
        raise ValueError(f"message needs {total} parts, more than {MAX_PARTS}")
    if isinstance(reference, int):
        ref = reference
    else:
        ref = reference()
        _check_reference(ref, mode)

    if mode is LongMode.SAR:
        ref_num = ref.to_bytes(2, "big")
        total_octet = bytes((total,))
        return [
            Segment(
                extra_udh + chunk,
                bool(extra),
                {
                    Tag.SAR_MSG_REF_NUM: ref_num,
                    Tag.SAR_TOTAL_SEGMENTS: total_octet,
                    Tag.SAR_SEGMENT_SEQNUM: bytes((seqnum,)),
                },
                data_coding,
            )
            for seqnum, chunk in enumerate(chunks, start=1)
        ]
    # UDHL, the concatenation IE (§9.2.3.24.1 8-bit / .8 16-bit reference) first, then the
    # extra IEs: what build_udh((Concat(...).to_ie(), *extra)) gives, without the objects.
    if mode is LongMode.UDH8:
        head = bytes((udh_len - 1, IEI_CONCAT_8, 3, ref))
    else:
        head = bytes((udh_len - 1, IEI_CONCAT_16, 4, ref >> 8, ref & 0xFF))
    extra_body = extra_udh[1:]
    return [
        Segment(head + bytes((total, seqnum)) + extra_body + chunk, True, {}, data_coding)
        for seqnum, chunk in enumerate(chunks, start=1)
    ]


_UNITS = {Encoding.GSM7: _Unit.SEPTET, Encoding.UCS2: _Unit.UTF16}


def segment_encoded(
    data: bytes,
    enc: Encoding,
    mode: LongMode,
    reference: Reference,
    *,
    gsm7_coding: int = 0x00,
    extra_ies: Sequence[InformationElement] = (),
) -> list[Segment]:
    """:func:`segment_text` for text already encoded with ``enc`` (:func:`~smsc.text.encode_text`).

    ``reference`` may also be a callable drawing one (called only when the message needs
    more than one part), so that a message is encoded and split once.
    """
    unit = _UNITS.get(enc, _Unit.OCTET)
    data_coding = data_coding_for(enc, gsm7_coding=gsm7_coding)
    return _segment(data, unit, data_coding, mode, reference=reference, extra_ies=extra_ies)


def segment_text(
    text: str,
    enc: Encoding,
    mode: LongMode,
    reference: int,
    *,
    gsm7_coding: int = 0x00,
    extra_ies: Sequence[InformationElement] = (),
) -> list[Segment]:
    """Encode ``text`` with ``enc`` and split it for ``mode``.

    A message that fits one part is sent alone, without concatenation (with a UDH only when
    ``extra_ies`` is given). ASCII and LATIN1 text is sized as 8-bit data (one octet per
    character), whatever the SMSC converts it to. ``reference`` identifies the parts of one
    message (0..255 for UDH8, 0..65535 otherwise; see :class:`ReferenceAllocator`). Raises
    :class:`~smsc.gsm7.UnencodableError` if ``enc`` cannot carry the text and ValueError when
    it needs more than 255 parts.
    """
    return segment_encoded(
        encode_text(text, enc),
        enc,
        mode,
        reference,
        gsm7_coding=gsm7_coding,
        extra_ies=extra_ies,
    )


def segment_binary(
    data: bytes,
    mode: LongMode,
    reference: Reference,
    *,
    data_coding: int = 0x04,
    extra_ies: Sequence[InformationElement] = (),
) -> list[Segment]:
    """Split 8-bit data for ``mode`` (140 octets per part less the UDH); see
    :func:`segment_text` and, for a callable ``reference``, :func:`segment_encoded`."""
    return _segment(
        bytes(data), _Unit.OCTET, data_coding, mode, reference=reference, extra_ies=extra_ies
    )


class ReferenceAllocator:
    """Concatenation references rotating per destination (TS 23.040 §9.2.3.24.1: the
    reference is "a modulo 256 counter" per destination; 65536 for 16-bit references).

    A destination seen for the first time starts at a random point, so that references do not
    repeat after a restart. At most ``max_destinations`` counters are kept; the least recently
    used is forgotten first.
    """

    __slots__ = ("_counters", "_max", "_rng")

    def __init__(
        self, max_destinations: int = 100_000, *, rng: random.Random | None = None
    ) -> None:
        if max_destinations < 1:
            raise ValueError("max_destinations must be >= 1")
        self._max = max_destinations
        self._rng = rng if rng is not None else random.Random()
        self._counters: OrderedDict[str, int] = OrderedDict()

    def next(self, destination: str, *, wide: bool) -> int:
        """The next reference for ``destination``: 0..65535 when ``wide`` else 0..255."""
        counters = self._counters
        value = counters.get(destination)
        if value is None:
            value = self._rng.randrange(0x10000)
            if len(counters) >= self._max:
                counters.popitem(last=False)
        else:
            counters.move_to_end(destination)
        counters[destination] = (value + 1) & 0xFFFF
        return value if wide else value & 0xFF

    def __len__(self) -> int:
        return len(self._counters)
