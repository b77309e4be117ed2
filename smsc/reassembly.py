"""Reassembly of incoming concatenated short messages (sans-IO, bounded).

A received part is normalised into a :class:`Fragment` from whichever concatenation the sender
used: a concatenation IE in the UDH (3GPP TS 23.040 §9.2.3.24.1 8-bit / §9.2.3.24.8 16-bit
reference), the SMPP 3.4 sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs
(§5.3.2.22-24), or none (a single message, possibly in message_payload, §5.3.2.32).

:class:`Reassembler` collects the parts of a set keyed by (source, destination, reference,
total) in any order (§9.2.3.24.1: parts may arrive out of sequence), drops duplicates, and
bounds its memory: at most ``max_per_source`` incomplete sets per source and ``max_total``
overall, the oldest set being evicted beyond either. Incomplete sets older than ``timeout``
(counted from their first part) are reported by :meth:`Reassembler.expire`. Time is passed in
as ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from smsc.pdu import ESM_UDHI, DataSm, DeliverSm, SubmitSm, Tag
from smsc.text import Encoding, decode_text, encoding_of
from smsc.udh import CONCAT_IEIS, InformationElement, UdhError, find_concat, split_udh

__all__ = [
    "Expired",
    "Fragment",
    "Message",
    "Reassembler",
    "ReassemblyStats",
    "fragment_from_pdu",
    "plain_message",
]


@dataclass(frozen=True, slots=True)
class Fragment:
    """One received part, normalised. ``reference`` is None for a message sent whole."""

    source: str
    destination: str
    reference: int | None
    total: int
    seqnum: int
    data_coding: int
    esm_class: int
    protocol_id: int
    payload: bytes  # user data without the UDH
    ies: tuple[InformationElement, ...]  # the UDH's IEs other than concatenation


_MESSAGE_PAYLOAD: Final = int(Tag.MESSAGE_PAYLOAD)


def _sar(tlvs: dict[int, bytes]) -> tuple[int, int, int] | None:
    """(reference, total, seqnum) from the three sar_* TLVs; None unless all are present."""
    ref = tlvs.get(Tag.SAR_MSG_REF_NUM)
    total = tlvs.get(Tag.SAR_TOTAL_SEGMENTS)
    seqnum = tlvs.get(Tag.SAR_SEGMENT_SEQNUM)
    if ref is None or total is None or seqnum is None:
        return None
    if len(ref) != 2 or len(total) != 1 or len(seqnum) != 1:
        raise ValueError("sar_* TLVs must be 2, 1 and 1 octets long")
    return int.from_bytes(ref, "big"), total[0], seqnum[0]


def fragment_from_pdu(pdu: SubmitSm | DeliverSm | DataSm) -> Fragment:
    """Normalise a submit_sm, deliver_sm or data_sm carrying a message (or one part of it).

    The user data is message_payload when present, else short_message. With UDHI set in
    esm_class its UDH is parsed (raising :class:`~smsc.udh.UdhError`, a ValueError, when
    malformed) and a concatenation IE there takes precedence over sar_* TLVs.
    """
    tlvs = pdu.tlvs
    payload_tlv = tlvs.get(_MESSAGE_PAYLOAD) if tlvs else None
    if payload_tlv is not None:
        user_data = payload_tlv
    elif isinstance(pdu, DataSm):
        user_data = b""
    else:
        user_data = pdu.short_message
    protocol_id = 0 if isinstance(pdu, DataSm) else pdu.protocol_id

    ies: tuple[InformationElement, ...] = ()
    reference: int | None = None
    total = seqnum = 1
    if pdu.esm_class & ESM_UDHI:
        all_ies, user_data = split_udh(user_data)
        concat = find_concat(all_ies)
        ies = tuple(ie for ie in all_ies if ie.iei not in CONCAT_IEIS)
        if concat is not None:
            reference, total, seqnum = concat.reference, concat.total, concat.seqnum
    if reference is None and tlvs:
        sar = _sar(tlvs)
        if sar is not None:
            reference, total, seqnum = sar
    return Fragment(
        source=pdu.source_addr,
        destination=pdu.destination_addr,
        reference=reference,
        total=total,
        seqnum=seqnum,
        data_coding=pdu.data_coding,
        esm_class=pdu.esm_class,
        protocol_id=protocol_id,
        payload=bytes(user_data),
        ies=ies,
    )


def plain_message(pdu: SubmitSm | DeliverSm | DataSm) -> Message | None:
    """The whole :class:`Message` of a short_message sent whole: no TLVs (so no sar_* or
    message_payload, §5.3.2.22-24, §5.3.2.32) and either no UDHI (§5.2.12) or a UDH holding
    one IE that is not a concatenation IE (the common OTA MO: the TS 31.115 command or
    response packet IE); None otherwise, a malformed UDH included (that path reports it).

    The same message :func:`fragment_from_pdu` then :meth:`Reassembler.add` would give, for
    the common MO, without the intermediate :class:`Fragment`.
    """
    if isinstance(pdu, DataSm) or pdu.tlvs:
        return None
    esm_class = pdu.esm_class
    user_data = pdu.short_message
    ies: tuple[InformationElement, ...] = ()
    if esm_class & ESM_UDHI:
        try:
            ies, user_data = split_udh(user_data)
        except UdhError:
            return None
        if len(ies) > 1 or (ies and ies[0].iei in CONCAT_IEIS):
            return None
        esm_class &= ~ESM_UDHI
    return Message(
        pdu.source_addr,
        pdu.destination_addr,
        pdu.data_coding,
        esm_class,
        pdu.protocol_id,
        bytes(user_data),
        ies,
        1,
    )


@dataclass(frozen=True, slots=True)
class Message:
    """A whole received message. ``payload`` never holds a UDH (``esm_class`` has UDHI
    cleared); the UDH's IEs other than concatenation are in ``ies``, in order of first
    appearance across the parts."""

    source: str
    destination: str
    data_coding: int
    esm_class: int
    protocol_id: int
    payload: bytes
    ies: tuple[InformationElement, ...]
    parts: int

    def text(self, *, default: Encoding = Encoding.GSM7) -> str:
        """The payload decoded per data_coding (``default`` is what 0x00 means); never raises."""
        return decode_text(self.payload, encoding_of(self.data_coding, default=default))


@dataclass(frozen=True, slots=True)
class Expired:
    """An incomplete set given up after the timeout: ``received`` of ``total`` parts came."""

    source: str
    destination: str
    reference: int
    total: int
    received: int


@dataclass(slots=True)
class ReassemblyStats:
    """Counters since the reassembler was created."""

    completed: int = 0  # multi-part messages completed
    duplicates: int = 0  # parts dropped as already received
    expired: int = 0  # incomplete sets given up after the timeout
    evicted: int = 0  # incomplete sets dropped to respect the bounds
    invalid: int = 0  # parts with total 0, seqnum 0 or seqnum > total


_Key = tuple[str, str, int, int]  # (source, destination, reference, total)


@dataclass(slots=True)
class _Set:
    started: float
    parts: dict[int, Fragment] = field(default_factory=dict)


def _message(parts: list[Fragment]) -> Message:
    first = parts[0]
    # The common MO: one part with at most one IE (e.g. the TS 31.115 command or response
    # packet IE of an OTA message), so nothing to merge or deduplicate.
    if len(parts) == 1 and len(first.ies) < 2:
        return Message(
            first.source,
            first.destination,
            first.data_coding,
            first.esm_class & ~ESM_UDHI,
            first.protocol_id,
            first.payload,
            first.ies,
            1,
        )
    seen: set[InformationElement] = set()
    ies: list[InformationElement] = []
    for part in parts:
        for ie in part.ies:
            if ie not in seen:
                seen.add(ie)
                ies.append(ie)
    return Message(
        source=first.source,
        destination=first.destination,
        data_coding=first.data_coding,
        esm_class=first.esm_class & ~ESM_UDHI,
        protocol_id=first.protocol_id,
        payload=b"".join(part.payload for part in parts),
        ies=tuple(ies),
        parts=len(parts),
    )


class Reassembler:
    """Collects concatenated parts into messages, within bounded memory.

    ``add`` returns the whole :class:`Message` when a part completes it (a single message at
    once). A part identical to one of a set completed less than ``timeout`` ago is a late
    duplicate and is dropped (an SMSC redelivers a part whose response was lost); a part with
    other content under that key starts a new set (the sender reused the reference). At most
    ``max_total`` completed sets are remembered for this.
    """

    __slots__ = (
        "_by_source",
        "_done",
        "_max_per_source",
        "_max_total",
        "_sets",
        "_timeout",
        "stats",
    )

    def __init__(self, *, timeout: float, max_per_source: int, max_total: int) -> None:
        if timeout <= 0 or max_per_source < 1 or max_total < 1:
            raise ValueError("timeout, max_per_source and max_total must be positive")
        self._timeout = timeout
        self._max_per_source = max_per_source
        self._max_total = max_total
        # Incomplete sets, oldest first (insertion order = order of first part).
        self._sets: OrderedDict[_Key, _Set] = OrderedDict()
        # Per source, that source's incomplete sets, oldest first.
        self._by_source: dict[str, OrderedDict[_Key, None]] = {}
        # Recently completed sets -> (completion time, hash of each part's payload), oldest
        # first: a part arriving again soon after is recognised as a late duplicate.
        self._done: OrderedDict[_Key, tuple[float, tuple[int, ...]]] = OrderedDict()
        self.stats = ReassemblyStats()

    @property
    def pending(self) -> int:
        """Number of incomplete sets held."""
        return len(self._sets)

    def add(self, frag: Fragment, now: float) -> Message | None:
        """Take one part; the whole message when it completes a set, else None."""
        if frag.total < 1 or not 1 <= frag.seqnum <= frag.total:
            self.stats.invalid += 1
            return None
        if frag.reference is None or frag.total == 1:
            return _message([frag])

        key: _Key = (frag.source, frag.destination, frag.reference, frag.total)
        entry = self._sets.get(key)
        if entry is None:
            self._forget_done(now)
            done = self._done.get(key)
            if done is not None:
                if done[1][frag.seqnum - 1] == hash(frag.payload):
                    self.stats.duplicates += 1  # a late copy of a part already delivered
                    return None
                # Other content under a finished key: a new message reusing the reference.
                del self._done[key]
            entry = self._open(key, now)
        elif frag.seqnum in entry.parts:
            self.stats.duplicates += 1
            return None
        entry.parts[frag.seqnum] = frag
        if len(entry.parts) < frag.total:
            return None

        self._remove(key)
        parts = [entry.parts[n] for n in range(1, frag.total + 1)]
        self._done[key] = (now, tuple(hash(part.payload) for part in parts))
        self._done.move_to_end(key)
        if len(self._done) > self._max_total:
            self._done.popitem(last=False)
        self.stats.completed += 1
        return _message(parts)

    def expire(self, now: float) -> list[Expired]:
        """Give up the incomplete sets whose first part is ``timeout`` or more old."""
        expired: list[Expired] = []
        deadline = now - self._timeout
        sets = self._sets
        while sets:
            key, entry = next(iter(sets.items()))
            if entry.started > deadline:
                break
            self._remove(key)
            source, destination, reference, total = key
            expired.append(Expired(source, destination, reference, total, len(entry.parts)))
        self.stats.expired += len(expired)
        self._forget_done(now)
        return expired

    # -- internals --------------------------------------------------------------------

    def _open(self, key: _Key, now: float) -> _Set:
        source = key[0]
        per_source = self._by_source.get(source)
        if per_source is None:
            per_source = self._by_source[source] = OrderedDict()
        elif len(per_source) >= self._max_per_source:
            self._remove(next(iter(per_source)))
            self.stats.evicted += 1
        if len(self._sets) >= self._max_total:
            self._remove(next(iter(self._sets)))
            self.stats.evicted += 1
        # An eviction may have emptied and dropped this source's index: put it back.
        per_source = self._by_source.setdefault(source, per_source)
        entry = _Set(now)
        self._sets[key] = entry
        per_source[key] = None
        return entry

    def _remove(self, key: _Key) -> None:
        del self._sets[key]
        per_source = self._by_source[key[0]]
        del per_source[key]
        if not per_source:
            del self._by_source[key[0]]

    def _forget_done(self, now: float) -> None:
        done = self._done
        deadline = now - self._timeout
        while done:
            key, (finished, _) = next(iter(done.items()))
            if finished > deadline:
                break
            del done[key]
