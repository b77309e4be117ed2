"""SMPP 3.4 delivery receipts and message-id matching (sans-IO).

Implements, from SMPP v3.4 Issue 1.2:

* §5.2.12 esm_class: for deliver_sm/data_sm the message-type bits (mask 0x3C) say whether the
  PDU is an SMSC Delivery Receipt (0x04) or an Intermediate Delivery Notification (0x20).
  Whether a PDU is a receipt is decided by esm_class only: some SMSCs put receipt TLVs on
  ordinary MO.
* §5.3.2.12 receipted_message_id (0x001E, C-Octet String), §5.3.2.35 message_state (0x0427,
  one octet, values of §5.2.28) and §5.3.2.31 network_error_code (0x0423, 3 octets: network
  type then a 2-octet error code) carried by receipts (§4.6.1, §4.7.1).
* Appendix B, the de-facto receipt text format
  ``id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD
  err:E text: ...``, parsed leniently (any key order, any key case, extra spaces, missing
  fields, dates with seconds, ``text:`` containing colons or key-like words) and formatted
  strictly for the SMSC simulator.
* Matching receipts with submissions by message id, normalised as Kannel's ``msg-id-type``
  (hex or decimal in the submit_sm_resp and in the receipt), including receipts that arrive
  before their submit_sm_resp, with bounded memory and expiry on an injected clock.

Nothing here does I/O or reads a clock: time is passed in as ``now`` (seconds, monotonic).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from smsc.pdu import (
    ESM_TYPE_DELIVERY_RECEIPT,
    ESM_TYPE_INTERMEDIATE,
    ESM_TYPE_MASK,
    ESM_UDHI,
    DataSm,
    DeliverSm,
    MessageState,
    Tag,
)

__all__ = [
    "FINAL_STATES",
    "MAX_SHORT_MESSAGE",
    "MatcherStats",
    "MsgIdNormalizer",
    "Receipt",
    "ReceiptMatcher",
    "RecentKeys",
    "format_receipt_text",
    "is_receipt",
    "parse_receipt",
    "receipt_pdu",
    "stat_for_state",
    "state_for_stat",
]

#: §4.6.1: short_message holds at most 254 octets; longer receipt text goes in message_payload.
MAX_SHORT_MESSAGE: Final = 254

#: Appendix B: the receipt's ``text:`` field carries the first 20 characters of the message.
RECEIPT_TEXT_CHARS: Final = 20

#: §5.2.28 states after which no further receipt is expected. ACCEPTED is *not* final here:
#: real SMSCs send ``stat:ACCEPTD`` as an intermediate "taken by the SMSC" notice before the
#: DELIVRD/UNDELIV one. UNKNOWN *is* final (Kannel counts it as a failure; no SMSC sends a
#: later receipt after it).
FINAL_STATES: Final = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.EXPIRED,
        MessageState.DELETED,
        MessageState.UNDELIVERABLE,
        MessageState.REJECTED,
        MessageState.UNKNOWN,
    }
)

# Appendix B stat values (7 letters) per §5.2.28 state.
_STAT_BY_STATE: Final[dict[MessageState, str]] = {
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
}

# stat text (upper case) -> state: the Appendix B words, the §5.2.28 names some SMSCs write
# instead, the buffered/acked words Kannel also accepts, and the numeric §5.2.28 values.
_STATE_BY_STAT: Final[dict[str, MessageState]] = {
    **{stat: state for state, stat in _STAT_BY_STATE.items()},
    **{state.name: state for state in MessageState},
    "DELIVER": MessageState.DELIVERED,
    "UNDELIVERED": MessageState.UNDELIVERABLE,
    "UNDELIVRD": MessageState.UNDELIVERABLE,
    "UNDELIVD": MessageState.UNDELIVERABLE,
    "BUFFRED": MessageState.ENROUTE,
    "BUFFERD": MessageState.ENROUTE,
    "BUFFERED": MessageState.ENROUTE,
    "ACKED": MessageState.ACCEPTED,
    **{str(int(state)): state for state in MessageState},
}


def stat_for_state(state: MessageState) -> str:
    """The Appendix B 7-letter stat for a §5.2.28 state (``DELIVRD`` for DELIVERED)."""
    return _STAT_BY_STATE[state]


def state_for_stat(stat: str) -> MessageState | None:
    """The §5.2.28 state an SMSC meant by a stat word, any case; None when unknown.

    Accepts the Appendix B words (DELIVRD, UNDELIV, ...), the full state names some SMSCs
    write (DELIVERED, UNDELIVERABLE, ...), BUFFRED/ACKED and the numeric values 1..8.
    """
    return _STATE_BY_STAT.get(stat.strip().upper())


def _canonical_stat(stat: str) -> str:
    """A known stat word in its 7-letter Appendix B form; an unknown one upper-cased."""
    word = stat.strip().upper()
    state = _STATE_BY_STAT.get(word)
    return word if state is None else _STAT_BY_STATE[state]


def is_receipt(esm_class: int) -> bool:
    """§5.2.12: True when the message-type bits say SMSC Delivery Receipt or Intermediate
    Delivery Notification. The only test for "is a receipt": TLVs do not decide it."""
    return (esm_class & ESM_TYPE_MASK) in (ESM_TYPE_DELIVERY_RECEIPT, ESM_TYPE_INTERMEDIATE)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A parsed delivery receipt (§4.6.1/§4.7.1 with the §5.3.2 receipt TLVs, Appendix B).

    ``message_id`` is as the SMSC wrote it, from receipted_message_id when present, else from
    the text's ``id:``. ``state`` is from the message_state TLV, else mapped from ``stat``.
    ``stat`` is the text's stat in its 7-letter form (an unrecognised word upper-cased as
    written), or derived from ``state`` when only the TLV is there, or ''. ``err`` is the
    text's err as written ('' when absent; see ``network_error`` for the TLV).
    ``submit_date``/``done_date`` are raw ('YYMMDDhhmm' or with seconds) or ''.
    ``source``/``destination`` are the receipt PDU's own addresses, so ``source`` is the
    original message's destination. ``intermediate`` marks an §5.2.12 Intermediate Delivery
    Notification (esm_class 0x20), which is never final.
    """

    message_id: str
    state: MessageState | None = None
    stat: str = ""
    err: str = ""
    submitted: int | None = None
    delivered: int | None = None
    submit_date: str = ""
    done_date: str = ""
    network_error: bytes | None = None
    source: str = ""
    destination: str = ""
    text: str = ""
    intermediate: bool = False

    @property
    def final(self) -> bool:
        """No further receipt is expected: a final state (see FINAL_STATES; ACCEPTED and
        ENROUTE are intermediate) on a receipt that is not an intermediate notification."""
        return not self.intermediate and self.state in FINAL_STATES

    @property
    def delivered_ok(self) -> bool:
        """The message reached the handset (state DELIVERED on a final receipt)."""
        return not self.intermediate and self.state is MessageState.DELIVERED

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view (state by name, network_error as hex), e.g. for CLI output."""
        return {
            "message_id": self.message_id,
            "state": None if self.state is None else self.state.name,
            "stat": self.stat,
            "err": self.err,
            "submitted": self.submitted,
            "delivered": self.delivered,
            "submit_date": self.submit_date,
            "done_date": self.done_date,
            "network_error": None if self.network_error is None else self.network_error.hex(),
            "source": self.source,
            "destination": self.destination,
            "text": self.text,
            "intermediate": self.intermediate,
            "final": self.final,
        }


# -- Appendix B text parsing ---------------------------------------------------------

# A key starts at the beginning of the text or after whitespace, so a key-like word glued to
# a value ("id:stat:1") is part of that value. Case-insensitive; spaces allowed around ':'.
_KEY_RE: Final = re.compile(
    r"(?<!\S)(id|sub|dlvrd|submit[\s_]*date|done[\s_]*date|stat|err(?:or)?|text)\s*:\s*",
    re.IGNORECASE,
)
_KEY_NAMES: Final[dict[str, str]] = {
    "id": "id",
    "sub": "sub",
    "dlvrd": "dlvrd",
    "stat": "stat",
    "err": "err",
    "error": "err",
    "text": "text",
}


def _key_name(raw: str) -> str:
    lowered = raw.lower()
    name = _KEY_NAMES.get(lowered)
    if name is not None:
        return name
    return "submit date" if lowered.startswith("submit") else "done date"


# The exact layout format_receipt_text writes (and most SMSCs send): a fast path, about 20
# times quicker than the general scan, which it agrees with wherever it matches.
_CANONICAL_RE: Final = re.compile(
    r"id:(\S*) sub:(\S*) dlvrd:(\S*) submit date:(\S*) done date:(\S*) stat:(\S*) "
    r"err:(\S*) text:(.*)",
    re.DOTALL,
)
_CANONICAL_KEYS: Final = ("id", "sub", "dlvrd", "submit date", "done date", "stat", "err")


def _text_fields(text: str) -> dict[str, str]:
    """Appendix B ``key:value`` pairs (see _scan_fields), canonical layout first."""
    match = _CANONICAL_RE.fullmatch(text)
    if match is None:
        return _scan_fields(text)
    fields = dict(zip(_CANONICAL_KEYS, match.groups()[:7], strict=True))
    fields["text"] = match.group(8).strip()
    return fields


def _scan_fields(text: str) -> dict[str, str]:
    """Appendix B ``key:value`` pairs in any order and case. A value runs to the next key;
    ``text:`` runs to the end (it may hold colons and key-like words). The first occurrence
    of a key wins."""
    fields: dict[str, str] = {}
    matches = list(_KEY_RE.finditer(text))
    for i, match in enumerate(matches):
        name = _key_name(match.group(1))
        if name == "text":
            fields.setdefault(name, text[match.end() :].strip())
            break
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        fields.setdefault(name, text[match.end() : end].strip())
    return fields


def _first_token(value: str | None) -> str:
    if not value:
        return ""
    parts = value.split(None, 1)
    return parts[0] if parts else ""


def _count(value: str | None) -> int | None:
    token = _first_token(value)
    if token.isascii() and token.isdigit():
        return int(token)
    return None


def _decode_text(data: bytes, data_coding: int) -> str:
    """Receipt text to str without ever raising: UCS2 (§5.2.19 0x08) as UTF-16-BE, otherwise
    UTF-8 when it decodes (ASCII included), else Latin-1."""
    if data_coding == 0x08:
        return data.decode("utf-16-be", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _c_octet_tlv(value: bytes) -> str:
    """A C-Octet String TLV value: up to the first NUL, Latin-1, surrounding spaces removed."""
    end = value.find(b"\x00")
    if end >= 0:
        value = value[:end]
    return value.decode("latin-1").strip()


_STATE_BY_VALUE: Final[dict[int, MessageState]] = {int(state): state for state in MessageState}


def _state_tlv(value: bytes | None) -> MessageState | None:
    """§5.3.2.35: one octet; tolerate a wider big-endian integer; None when not a state."""
    if not value:
        return None
    return _STATE_BY_VALUE.get(value[0] if len(value) == 1 else int.from_bytes(value[:4], "big"))


def parse_receipt(pdu: DeliverSm | DataSm) -> Receipt | None:
    """Parse a deliver_sm/data_sm receipt; None when esm_class says it is not one (§5.2.12).

    Never raises, whatever the short_message or TLVs hold: missing or unreadable fields take
    their defaults. The TLVs win over the text for message_id and state. The text is the
    short_message (after a UDH when UDHI is set) or, when that is empty, message_payload.
    """
    if not is_receipt(pdu.esm_class):
        return None
    tlvs = pdu.tlvs
    raw = b""
    if isinstance(pdu, DeliverSm):
        raw = pdu.short_message
        if raw and pdu.esm_class & ESM_UDHI:
            raw = raw[1 + raw[0] :]
    if not raw:
        raw = tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    text = _decode_text(raw, pdu.data_coding).rstrip("\x00")
    fields = _text_fields(text) if text else {}

    message_id = ""
    tlv_id = tlvs.get(Tag.RECEIPTED_MESSAGE_ID)
    if tlv_id is not None:
        message_id = _c_octet_tlv(tlv_id)
    if not message_id:
        message_id = _first_token(fields.get("id"))

    text_stat = _first_token(fields.get("stat"))
    state = _state_tlv(tlvs.get(Tag.MESSAGE_STATE))
    if state is None and text_stat:
        state = state_for_stat(text_stat)
    if text_stat:
        stat = _canonical_stat(text_stat)
    elif state is not None:
        stat = _STAT_BY_STATE[state]
    else:
        stat = ""

    return Receipt(
        message_id=message_id,
        state=state,
        stat=stat,
        err=_first_token(fields.get("err")),
        submitted=_count(fields.get("sub")),
        delivered=_count(fields.get("dlvrd")),
        submit_date=fields.get("submit date", ""),
        done_date=fields.get("done date", ""),
        network_error=tlvs.get(Tag.NETWORK_ERROR_CODE),
        source=pdu.source_addr,
        destination=pdu.destination_addr,
        text=fields.get("text", ""),
        intermediate=(pdu.esm_class & ESM_TYPE_MASK) == ESM_TYPE_INTERMEDIATE,
    )


# -- Appendix B text and receipt PDU building (the SMSC simulator's side) -------------------


def _check_token(name: str, value: str) -> None:
    if any(c.isspace() for c in value):
        raise ValueError(f"receipt {name} must not contain whitespace")


def format_receipt_text(
    message_id: str,
    *,
    submitted: int,
    delivered: int,
    submit_date: str,
    done_date: str,
    stat: str,
    err: str,
    text: str,
) -> str:
    """Appendix B receipt text; ``sub``/``dlvrd`` as at least 3 digits, ``text`` cut to its
    first 20 characters. Raises ValueError for a negative count or whitespace inside
    message_id, stat, err or a date (they would not parse back)."""
    if submitted < 0 or delivered < 0:
        raise ValueError("receipt sub/dlvrd must not be negative")
    for name, value in (
        ("message_id", message_id),
        ("stat", stat),
        ("err", err),
        ("submit_date", submit_date),
        ("done_date", done_date),
    ):
        _check_token(name, value)
    return (
        f"id:{message_id} sub:{submitted:03d} dlvrd:{delivered:03d} "
        f"submit date:{submit_date} done date:{done_date} stat:{stat} err:{err} "
        f"text:{text[:RECEIPT_TEXT_CHARS]}"
    )


def receipt_pdu(
    message_id: str,
    state: MessageState,
    *,
    source_addr: str,
    destination_addr: str,
    submit_date: str,
    done_date: str,
    submitted: int = 1,
    delivered: int | None = None,
    err: int = 0,
    network_error: bytes | None = None,
    text: str = "",
    source_addr_ton: int = 0,
    source_addr_npi: int = 0,
    dest_addr_ton: int = 0,
    dest_addr_npi: int = 0,
    service_type: str = "",
    sequence_number: int = 0,
) -> DeliverSm:
    """The receipt deliver_sm an SMSC sends (§4.6.1, esm_class 0x04, §5.2.12).

    ``source_addr``/``destination_addr`` (and TON/NPI) are the receipt's own: pass the
    original message's destination as ``source_addr`` and its source as
    ``destination_addr``. ``submit_date``/``done_date`` are 'YYMMDDhhmm'. ``delivered``
    defaults to ``submitted`` for DELIVERED and 0 otherwise; ``err`` is written as 3 digits.
    ``text`` is the original message's text; its first 20 characters go in the receipt,
    non-ASCII characters as '?'.

    Carries both the Appendix B text (in short_message, or in message_payload when over 254
    octets) and the TLVs receipted_message_id (§5.3.2.12), message_state (§5.3.2.35) and,
    for a failed message (not DELIVERED/ENROUTE/ACCEPTED), network_error_code (§5.3.2.31):
    ``network_error`` (3 octets) or by default GSM (type 3) with ``err`` as the code.
    ``sequence_number`` 0 lets the session assign one.
    """
    if not message_id.isascii():
        raise ValueError("receipt message_id must be ASCII")
    if err < 0 or err > 0xFFFF:
        raise ValueError("receipt err must be 0..65535")
    if network_error is not None and len(network_error) != 3:
        raise ValueError("network_error_code must be 3 octets")
    if delivered is None:
        delivered = submitted if state is MessageState.DELIVERED else 0
    body = format_receipt_text(
        message_id,
        submitted=submitted,
        delivered=delivered,
        submit_date=submit_date,
        done_date=done_date,
        stat=_STAT_BY_STATE[state],
        err=f"{err:03d}",
        text=text,
    ).encode("ascii", errors="replace")
    tlvs: dict[int, bytes] = {
        Tag.RECEIPTED_MESSAGE_ID: message_id.encode("ascii") + b"\x00",
        Tag.MESSAGE_STATE: bytes((int(state),)),
    }
    failed = state not in (
        MessageState.DELIVERED,
        MessageState.ENROUTE,
        MessageState.ACCEPTED,
    )
    if failed:
        tlvs[Tag.NETWORK_ERROR_CODE] = (
            network_error if network_error is not None else b"\x03" + err.to_bytes(2, "big")
        )
    short_message = body
    if len(body) > MAX_SHORT_MESSAGE:
        short_message = b""
        tlvs[Tag.MESSAGE_PAYLOAD] = body
    return DeliverSm(
        sequence_number=sequence_number,
        service_type=service_type,
        source_addr_ton=source_addr_ton,
        source_addr_npi=source_addr_npi,
        source_addr=source_addr,
        dest_addr_ton=dest_addr_ton,
        dest_addr_npi=dest_addr_npi,
        destination_addr=destination_addr,
        esm_class=ESM_TYPE_DELIVERY_RECEIPT,
        short_message=short_message,
        tlvs=tlvs,
    )


# -- message-id normalisation (Kannel msg-id-type) ------------------------------------------

# Longer ids are compared as strings: they are not numbers any SMSC assigns, and str() of a
# huge int would hit CPython's int/str conversion limit.
_MAX_NUMERIC_ID: Final = 64


def _string_key(message_id: str) -> str:
    """The string rule: trimmed, lower case, leading zeros stripped ('000' -> '0')."""
    key = message_id.strip().lower()
    stripped = key.lstrip("0")
    if not stripped and key:
        return "0"
    return stripped


def _numeric_key(message_id: str, base: int) -> str:
    """The id's value in ``base`` as a decimal string; the string rule when it does not parse."""
    value = message_id.strip()
    if value and len(value) <= _MAX_NUMERIC_ID and value.isascii() and value.isalnum():
        try:
            return str(int(value, base))
        except ValueError:
            pass
    return _string_key(message_id)


class MsgIdNormalizer:
    """Canonical key for matching submit_sm_resp ids with receipt ids (Kannel's msg-id-type):
    -1: compare as strings (case-insensitive, leading zeros stripped);
    0: both decimal; 1: resp hex, receipt decimal; 2: resp decimal, receipt hex; 3: both hex.
    An id that does not parse in the configured base falls back to the string rule.

    Numeric keys are decimal digit strings; a string-rule fallback always holds a character
    that is not a digit of the configured base, so the two kinds never collide. '' (an empty
    id, sent by some SMSCs) normalises to '' and matches nothing in ReceiptMatcher.
    """

    __slots__ = ("_receipt_base", "_resp_base", "msg_id_type")

    def __init__(self, msg_id_type: int = -1) -> None:
        if not -1 <= msg_id_type <= 3:
            raise ValueError("msg_id_type must be -1 (strings) or Kannel's 0..3")
        self.msg_id_type = msg_id_type
        self._resp_base = 0 if msg_id_type < 0 else (16 if msg_id_type & 1 else 10)
        self._receipt_base = 0 if msg_id_type < 0 else (16 if msg_id_type & 2 else 10)

    def from_submit_resp(self, message_id: str) -> str:
        """Key of a submit_sm_resp message_id."""
        if not self._resp_base:
            return _string_key(message_id)
        return _numeric_key(message_id, self._resp_base)

    def from_receipt(self, message_id: str) -> str:
        """Key of a receipt's message id (receipted_message_id or the text's ``id:``)."""
        if not self._receipt_base:
            return _string_key(message_id)
        return _numeric_key(message_id, self._receipt_base)

    def __repr__(self) -> str:
        return f"MsgIdNormalizer(msg_id_type={self.msg_id_type})"


# -- receipt matching ----------------------------------------------------------------------

T = TypeVar("T")


@dataclass(slots=True)
class MatcherStats:
    """ReceiptMatcher counters (monotonic)."""

    matched: int = 0  # receipts matched to a pending submission (final or intermediate)
    early_parked: int = 0  # receipts parked because their submit_sm_resp had not come
    early_matched: int = 0  # parked receipts handed back when their submit_sm_resp came
    unmatched_expired: int = 0  # parked receipts whose submission never came within the ttl
    pending_expired: int = 0  # submissions whose final receipt never came within the ttl
    dropped: int = 0  # submissions evicted (oldest first) over max_pending, or id reused
    early_dropped: int = 0  # parked receipts evicted (oldest first) over max_early
    duplicates: int = 0  # receipts for an id whose final receipt was already matched
    unmatchable: int = 0  # submissions/receipts with an empty message id (ignored)


class RecentKeys:
    """A set of recently seen keys in fixed memory: two generations of open-addressing tables
    of 64-bit fingerprints in preallocated arrays, so remembering a key allocates nothing that
    outlives the call and the resident size does not move once the tables exist.

    It holds the last ``capacity // 2`` to ``capacity`` keys added (at least one): when the
    current generation is full, the older one is cleared and becomes the current. A
    generation also empties once every key in it is older than a ``forget_before`` given to
    :meth:`expire`. Fingerprints are Python's string hash (per process, 64 bits): a false
    "seen" needs two of at most ``capacity`` keys to collide in 64 bits.
    """

    __slots__ = ("_cap", "_count", "_gens", "_half", "_mask", "_newest", "_zero")

    _EMPTY: Final = 0
    _GONE: Final = 1  # a removed entry (tombstone); real fingerprints have bit 1 set

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._half = max(1, capacity // 2)
        slots = 1 << max(3, (2 * self._half - 1).bit_length())  # load factor <= 1/2
        self._cap = slots
        self._mask = slots - 1
        self._zero = bytes(8 * slots)
        self._gens = [memoryview(bytearray(8 * slots)).cast("Q") for _ in range(2)]
        self._count = [0, 0]
        self._newest = [float("-inf"), float("-inf")]

    def __len__(self) -> int:
        return self._count[0] + self._count[1]

    @staticmethod
    def _fingerprint(key: str) -> int:
        return (hash(key) & 0xFFFF_FFFF_FFFF_FFFF) | 2

    def _find(self, table: memoryview, fp: int) -> int:
        """The slot holding ``fp``, or -1."""
        mask = self._mask
        i = fp & mask
        while True:
            slot = table[i]
            if slot == fp:
                return i
            if slot == 0:
                return -1
            i = (i + 1) & mask

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        fp = self._fingerprint(key)
        return any(self._find(table, fp) >= 0 for table in self._gens)

    def add(self, key: str, now: float) -> None:
        """Remember ``key`` (seen at ``now``)."""
        fp = self._fingerprint(key)
        if self._find(self._gens[0], fp) >= 0:
            self._newest[0] = now
            return
        if self._count[0] >= self._half:
            self._rotate()
        table, mask = self._gens[0], self._mask
        i = fp & mask
        while table[i] > self._GONE:
            i = (i + 1) & mask
        table[i] = fp
        self._count[0] += 1
        self._newest[0] = now

    def discard(self, key: str) -> None:
        """Forget ``key`` if remembered."""
        fp = self._fingerprint(key)
        for gen, table in enumerate(self._gens):
            i = self._find(table, fp)
            if i >= 0:
                table[i] = self._GONE
                self._count[gen] -= 1

    def expire(self, forget_before: float) -> None:
        """Clear each generation whose newest key is older than ``forget_before``."""
        for gen in (1, 0):
            if self._count[gen] and self._newest[gen] <= forget_before:
                self._clear(gen)

    def _rotate(self) -> None:
        self._clear(1)
        self._gens.reverse()
        self._count.reverse()
        self._newest.reverse()

    def _clear(self, gen: int) -> None:
        self._gens[gen].cast("B")[:] = self._zero
        self._count[gen] = 0
        self._newest[gen] = float("-inf")


class ReceiptMatcher(Generic[T]):
    """Matches receipts to submitted messages; a receipt that arrives before its submit_sm_resp
    (allowed by real SMSCs) is parked and matched when the resp comes, not lost. Bounded
    memory: at most `max_pending` submitted ids awaiting receipts (oldest dropped, counted),
    and at most `max_early` parked receipts; both expire after `ttl` seconds (sans-IO: now
    passed in).

    A final receipt (Receipt.final) removes the pending submission; an intermediate one
    (ENROUTE, ACCEPTED, esm_class 0x20) is matched and keeps it. Keys of the last
    `max_recent` final receipts (at least half as many, in fixed memory: :class:`RecentKeys`)
    are remembered so that a repeated final receipt (an SMSC redelivering after a lost
    deliver_sm_resp, or a late intermediate) counts as a duplicate and yields no token: the
    caller learns each final outcome once. Parked receipts expire
    after `early_ttl` (default `ttl`). Tokens must not be None (None means "no match").
    ``now`` must not decrease between calls (use a monotonic clock).

    Memory per pending id: one OrderedDict entry ``key -> (token, time)``. OrderedDict and
    not dict: CPython pops the oldest entry of an OrderedDict in O(1), while
    ``next(iter(dict))`` rescans the deleted slots at the front, quadratic under eviction.
    """

    __slots__ = (
        "_early",
        "_early_ttl",
        "_max_early",
        "_max_pending",
        "_max_recent",
        "_normalizer",
        "_pending",
        "_recent",
        "_ttl",
        "stats",
    )

    def __init__(
        self,
        normalizer: MsgIdNormalizer,
        *,
        ttl: float = 72 * 3600,
        max_pending: int = 1_000_000,
        max_early: int = 10_000,
        early_ttl: float | None = None,
        max_recent: int = 100_000,
    ) -> None:
        if ttl <= 0 or (early_ttl is not None and early_ttl <= 0):
            raise ValueError("ttl must be positive")
        if max_pending < 1 or max_early < 0 or max_recent < 0:
            raise ValueError("max_pending must be >= 1, max_early and max_recent >= 0")
        self._normalizer = normalizer
        self._ttl = ttl
        self._early_ttl = ttl if early_ttl is None else early_ttl
        self._max_pending = max_pending
        self._max_early = max_early
        self._max_recent = max_recent
        self._pending: OrderedDict[str, tuple[T, float]] = OrderedDict()
        self._early: OrderedDict[str, tuple[Receipt, float]] = OrderedDict()
        self._recent = RecentKeys(max_recent) if max_recent else None
        self.stats = MatcherStats()

    @property
    def pending_count(self) -> int:
        """Submissions awaiting a final receipt."""
        return len(self._pending)

    @property
    def early_count(self) -> int:
        """Receipts parked awaiting their submit_sm_resp."""
        return len(self._early)

    def submitted(self, message_id: str, token: T, now: float) -> Receipt | None:
        """Record a submission's id from its submit_sm_resp.

        Returns a parked receipt for this id if one arrived first. When that receipt is final
        the token is not stored (the outcome is known); when it is intermediate the token is
        stored to await the final one. A reused id replaces the older pending entry (counted
        as dropped).
        """
        key = self._normalizer.from_submit_resp(message_id)
        if not key:
            self.stats.unmatchable += 1
            return None
        if self._recent is not None:
            self._recent.discard(key)
        parked = self._early.pop(key, None)
        if parked is not None:
            self.stats.early_matched += 1
            receipt = parked[0]
            if receipt.final:
                self._remember_final(key, now)
                return receipt
        pending = self._pending
        if key in pending:
            del pending[key]
            self.stats.dropped += 1
        pending[key] = (token, now)
        if len(pending) > self._max_pending:
            pending.popitem(last=False)
            self.stats.dropped += 1
        return None if parked is None else parked[0]

    def receipt(self, receipt: Receipt, now: float) -> T | None:
        """The token of the submission this receipt belongs to, or None: parked as early (its
        submit_sm_resp has not come yet), a duplicate, or an empty id."""
        key = self._normalizer.from_receipt(receipt.message_id)
        if not key:
            self.stats.unmatchable += 1
            return None
        entry = self._pending.get(key)
        if entry is not None:
            self.stats.matched += 1
            if receipt.final:
                del self._pending[key]
                self._remember_final(key, now)
            return entry[0]
        if self._recent is not None and key in self._recent:
            self.stats.duplicates += 1
            return None
        self._park(key, receipt, now)
        return None

    def expire(self, now: float) -> int:
        """Drop pending submissions and parked receipts older than their ttl; returns how many
        (the remembered final-receipt keys expire too, uncounted)."""
        expired_pending = _expire(self._pending, now - self._ttl)
        expired_early = _expire(self._early, now - self._early_ttl)
        if self._recent is not None:
            self._recent.expire(now - self._ttl)
        self.stats.pending_expired += expired_pending
        self.stats.unmatched_expired += expired_early
        return expired_pending + expired_early

    def _park(self, key: str, receipt: Receipt, now: float) -> None:
        early = self._early
        held = early.get(key)
        if held is not None:
            if held[0].final:
                # The final outcome is already parked: anything after it is a duplicate.
                self.stats.duplicates += 1
                return
            del early[key]  # a newer (possibly final) receipt supersedes an intermediate one
        else:
            self.stats.early_parked += 1
        if self._max_early == 0:
            self.stats.early_dropped += 1
            return
        early[key] = (receipt, now)
        if len(early) > self._max_early:
            early.popitem(last=False)
            self.stats.early_dropped += 1

    def _remember_final(self, key: str, now: float) -> None:
        if self._recent is not None:
            self._recent.add(key, now)


def _expire(entries: OrderedDict[str, tuple[T, float]], limit: float) -> int:
    """Pop entries stamped at or before ``limit`` from the (time-ordered) front."""
    count = 0
    while entries:
        key, (_, when) = next(iter(entries.items()))
        if when > limit:
            break
        del entries[key]
        count += 1
    return count
