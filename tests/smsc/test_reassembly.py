"""Tests for smsc.reassembly: normalising received parts and reassembling concatenated messages
(TS 23.040 §9.2.3.24.1/.8, SMPP 3.4 §5.3.2.22-24 and §5.3.2.32), within bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from smsc import gsm7
from smsc.pdu import ESM_UDHI, DataSm, DeliverSm, SubmitSm, Tag
from smsc.reassembly import (
    Expired,
    Fragment,
    Message,
    Reassembler,
    fragment_from_pdu,
    plain_message,
)
from smsc.segment import LongMode, Segment, segment_binary, segment_text
from smsc.text import Encoding
from smsc.udh import (
    IEI_COMMAND_PACKET,
    Concat,
    InformationElement,
    Ports,
    UdhError,
    build_udh,
)
from tests.smsc.test_gsm7 import GSM_CHARS

PORTS = Ports(2948, 2948, wide=True).to_ie()
CMD = InformationElement(IEI_COMMAND_PACKET)


def to_pdu(seg: Segment, source: str = "8613800000001", dest: str = "10086") -> SubmitSm:
    """The submit_sm a client would send for ``seg``."""
    return SubmitSm(
        source_addr=source,
        destination_addr=dest,
        esm_class=ESM_UDHI if seg.udhi else 0,
        data_coding=seg.data_coding,
        short_message=seg.short_message,
        tlvs=dict(seg.tlvs),
    )


def frag(
    seqnum: int,
    *,
    total: int = 3,
    reference: int | None = 7,
    source: str = "a",
    payload: bytes | None = None,
    destination: str = "d",
) -> Fragment:
    """A GSM 7-bit fragment whose payload names its position."""
    return Fragment(
        source=source,
        destination=destination,
        reference=reference,
        total=total,
        seqnum=seqnum,
        data_coding=0,
        esm_class=ESM_UDHI,
        protocol_id=0,
        payload=payload if payload is not None else f"<{seqnum}>".encode(),
        ies=(),
    )


def reassembler(**overrides: float) -> Reassembler:
    params = {"timeout": 60.0, "max_per_source": 10, "max_total": 100} | overrides
    return Reassembler(
        timeout=params["timeout"],
        max_per_source=int(params["max_per_source"]),
        max_total=int(params["max_total"]),
    )


# -- fragment_from_pdu ----------------------------------------------------------------------


def test_fragment_from_udh_concat() -> None:
    """A UDH concat IE gives reference/total/seqnum; other IEs are kept, the UDH stripped."""
    udh = build_udh([PORTS, Concat(0x42, 3, 2, ref16=False).to_ie(), CMD])
    pdu = DeliverSm(
        source_addr="861",
        destination_addr="10086",
        esm_class=ESM_UDHI,
        protocol_id=0x7F,
        data_coding=0xF6,
        short_message=udh + b"data",
    )
    assert fragment_from_pdu(pdu) == Fragment(
        source="861",
        destination="10086",
        reference=0x42,
        total=3,
        seqnum=2,
        data_coding=0xF6,
        esm_class=ESM_UDHI,
        protocol_id=0x7F,
        payload=b"data",
        ies=(PORTS, CMD),
    )


def test_fragment_from_sar() -> None:
    """sar_* TLVs give a 16-bit reference, total and seqnum; no UDH involved."""
    pdu = SubmitSm(
        short_message=b"hi",
        tlvs={
            Tag.SAR_MSG_REF_NUM: b"\x12\x34",
            Tag.SAR_TOTAL_SEGMENTS: b"\x04",
            Tag.SAR_SEGMENT_SEQNUM: b"\x03",
        },
    )
    got = fragment_from_pdu(pdu)
    assert (got.reference, got.total, got.seqnum, got.payload) == (0x1234, 4, 3, b"hi")


def test_fragment_udh_concat_beats_sar() -> None:
    """With both a UDH concat IE and sar_* TLVs, the UDH (what the handset sees) wins."""
    pdu = DeliverSm(
        esm_class=ESM_UDHI,
        short_message=build_udh([Concat(1, 2, 2, ref16=False).to_ie()]) + b"x",
        tlvs={
            Tag.SAR_MSG_REF_NUM: b"\x00\x09",
            Tag.SAR_TOTAL_SEGMENTS: b"\x05",
            Tag.SAR_SEGMENT_SEQNUM: b"\x05",
        },
    )
    got = fragment_from_pdu(pdu)
    assert (got.reference, got.total, got.seqnum) == (1, 2, 2)


def test_fragment_single_and_payload() -> None:
    """A plain message is reference None, 1 of 1; message_payload is read when present, also
    from data_sm (which has no protocol_id), and its UDH parsed when UDHI is set."""
    plain = fragment_from_pdu(DeliverSm(short_message=b"hello", data_coding=0x08))
    assert (plain.reference, plain.total, plain.seqnum, plain.payload) == (None, 1, 1, b"hello")
    assert plain.ies == ()
    payload = fragment_from_pdu(SubmitSm(tlvs={Tag.MESSAGE_PAYLOAD: b"x" * 500}))
    assert payload.payload == b"x" * 500
    data_sm = DataSm(
        source_addr="861",
        esm_class=ESM_UDHI,
        tlvs={Tag.MESSAGE_PAYLOAD: build_udh([CMD]) + b"\x01"},
    )
    got = fragment_from_pdu(data_sm)
    assert (got.payload, got.ies, got.protocol_id, got.reference) == (b"\x01", (CMD,), 0, None)
    assert fragment_from_pdu(DataSm()).payload == b""


def test_fragment_udh_without_concat_is_single() -> None:
    """A UDH holding only ports is a single message with its IEs kept."""
    got = fragment_from_pdu(DeliverSm(esm_class=ESM_UDHI, short_message=build_udh([PORTS]) + b"z"))
    assert (got.reference, got.total, got.ies, got.payload) == (None, 1, (PORTS,), b"z")


def test_fragment_malformed() -> None:
    """A UDH that overruns raises UdhError (a ValueError); so do sar_* TLVs of wrong length."""
    with pytest.raises(UdhError):
        fragment_from_pdu(DeliverSm(esm_class=ESM_UDHI, short_message=b"\x05\x00\x03"))
    with pytest.raises(UdhError):
        fragment_from_pdu(DeliverSm(esm_class=ESM_UDHI, short_message=b""))
    bad_sar = {
        Tag.SAR_MSG_REF_NUM: b"\x01",
        Tag.SAR_TOTAL_SEGMENTS: b"\x02",
        Tag.SAR_SEGMENT_SEQNUM: b"\x01",
    }
    with pytest.raises(ValueError, match="sar"):
        fragment_from_pdu(DeliverSm(short_message=b"x", tlvs=bad_sar))


def test_fragment_udhi_clear_means_no_udh() -> None:
    """Without UDHI a leading 0x05 0x00 0x03 is text, not a header."""
    got = fragment_from_pdu(DeliverSm(short_message=b"\x05\x00\x03\x01\x02\x01"))
    assert got.reference is None and got.payload == b"\x05\x00\x03\x01\x02\x01"


# -- Reassembler ------------------------------------------------------------------------------


def test_in_any_order() -> None:
    """Parts complete a message in seqnum order whatever order they arrive in."""
    r = reassembler()
    assert r.add(frag(3), 0.0) is None
    assert r.add(frag(1), 1.0) is None
    assert r.pending == 1
    msg = r.add(frag(2), 2.0)
    assert msg is not None
    assert msg.payload == b"<1><2><3>"
    assert msg.parts == 3
    assert msg.text() == "<1><2><3>"
    assert msg.esm_class & ESM_UDHI == 0
    assert r.pending == 0
    assert r.stats.completed == 1


def test_single_message_passes_through() -> None:
    """A part without reference (or 1 of 1) is a whole message at once, not held."""
    r = reassembler()
    msg = r.add(frag(1, total=1, reference=None, payload=b"hi"), 0.0)
    assert msg == Message("a", "d", 0, 0, 0, b"hi", (), 1)
    assert r.add(frag(1, total=1, reference=5), 0.0) is not None
    assert r.pending == 0


def test_duplicates_dropped_and_counted() -> None:
    """A seqnum already held is dropped and counted; the message is delivered once."""
    r = reassembler()
    r.add(frag(1), 0.0)
    assert r.add(frag(1, payload=b"other"), 0.5) is None
    assert r.stats.duplicates == 1
    r.add(frag(2), 1.0)
    msg = r.add(frag(3), 1.0)
    assert msg is not None and msg.payload == b"<1><2><3>"


def test_late_duplicate_after_completion() -> None:
    """A part repeated after its set completed (within the timeout) is dropped and counted;
    a different part under the same key is a new message reusing the reference."""
    r = reassembler(timeout=60.0)
    for n in (1, 2, 3):
        r.add(frag(n), 0.0)
    assert r.add(frag(2), 10.0) is None
    assert r.pending == 0
    assert r.stats.duplicates == 1
    assert r.add(frag(1, payload=b"new"), 20.0) is None
    assert r.pending == 1  # a new set
    r.add(frag(2, payload=b"+"), 20.0)
    msg = r.add(frag(3, payload=b"!"), 20.0)
    assert msg is not None and msg.payload == b"new+!"


def test_completed_memory_expires() -> None:
    """After the timeout a repeated part is no longer recognised: it opens a new set."""
    r = reassembler(timeout=60.0)
    for n in (1, 2, 3):
        r.add(frag(n), 0.0)
    r.add(frag(2), 61.0)
    assert r.pending == 1
    assert r.stats.duplicates == 0


@pytest.mark.parametrize(
    ("seqnum", "total"),
    [(0, 3), (4, 3), (1, 0), (0, 0)],
)
def test_invalid_parts_counted(seqnum: int, total: int) -> None:
    """seqnum 0, seqnum > total and total 0 are refused and counted as invalid."""
    r = reassembler()
    assert r.add(frag(seqnum, total=total), 0.0) is None
    assert r.stats.invalid == 1
    assert r.pending == 0


def test_key_includes_total_reference_and_addresses() -> None:
    """Sets differing in source, destination, reference or total never mix."""
    r = reassembler()
    r.add(frag(1, total=2), 0.0)
    assert r.add(frag(2, total=3), 0.0) is None
    assert r.add(frag(2, total=2, reference=8), 0.0) is None
    assert r.add(frag(2, total=2, source="b"), 0.0) is None
    assert r.add(frag(2, total=2, destination="e"), 0.0) is None
    assert r.pending == 5
    assert r.add(frag(2, total=2), 0.0) is not None


def test_expiry_reports_incomplete_sets() -> None:
    """Sets whose first part is timeout old are reported with what arrived, oldest first;
    younger sets stay."""
    r = reassembler(timeout=30.0)
    r.add(frag(1, reference=1), 0.0)
    r.add(frag(3, reference=1), 25.0)
    r.add(frag(2, reference=2), 10.0)
    r.add(frag(1, reference=3), 20.0)
    assert r.expire(29.9) == []
    assert r.expire(40.0) == [Expired("a", "d", 1, 3, 2), Expired("a", "d", 2, 3, 1)]
    assert r.pending == 1
    assert r.stats.expired == 2
    assert r.expire(50.0) == [Expired("a", "d", 3, 3, 1)]
    assert r.expire(1000.0) == []
    assert r.stats.expired == 3


def test_per_source_bound_evicts_oldest_of_that_source() -> None:
    """A source at max_per_source loses its oldest set to a new one; others are untouched."""
    r = reassembler(max_per_source=2)
    r.add(frag(1, reference=1, source="other"), 0.0)
    r.add(frag(1, reference=1), 1.0)
    r.add(frag(1, reference=2), 2.0)
    r.add(frag(1, reference=3), 3.0)  # evicts reference 1 of source "a"
    assert r.stats.evicted == 1
    assert r.pending == 3
    r.add(frag(2, reference=2), 4.0)
    assert r.add(frag(3, reference=2), 4.0) is not None  # reference 2 kept
    r.add(frag(2, reference=1), 5.0)  # reopens reference 1 from scratch
    assert r.add(frag(3, reference=1), 5.0) is None
    assert r.add(frag(2, reference=1, source="other"), 5.0) is None
    assert r.add(frag(3, reference=1, source="other"), 5.0) is not None


def test_per_source_bound_of_one() -> None:
    """With max_per_source=1 a source's new set replaces its old one, and still completes."""
    r = reassembler(max_per_source=1)
    r.add(frag(1, total=2, reference=1), 0.0)
    r.add(frag(1, total=2, reference=2), 0.0)
    assert r.stats.evicted == 1
    assert r.add(frag(2, total=2, reference=2), 0.0) is not None
    assert r.pending == 0


def test_total_bound_evicts_oldest_overall() -> None:
    """Beyond max_total the oldest set of any source is evicted and counted."""
    r = reassembler(max_total=3)
    for n, source in enumerate("wxyz"):
        r.add(frag(1, source=source), float(n))
    assert r.pending == 3
    assert r.stats.evicted == 1
    assert r.expire(1000.0) == [
        Expired("x", "d", 7, 3, 1),
        Expired("y", "d", 7, 3, 1),
        Expired("z", "d", 7, 3, 1),
    ]


def test_flood_of_first_parts_stays_bounded() -> None:
    """1e5 first parts that never complete, from many sources: at most max_total sets held,
    every displaced set counted, and expiry then empties the state."""
    r = reassembler(max_total=1000, max_per_source=5, timeout=60.0)
    for n in range(100_000):
        r.add(frag(1, total=2, reference=n & 0xFF, source=str(n % 997)), n * 1e-4)
        assert r.pending <= 1000
    pending = r.pending
    assert pending == 1000
    assert r.stats.evicted == 100_000 - pending
    assert len(r._by_source) <= 997  # the per-source index is bounded too
    assert len(r.expire(1e6)) == pending
    assert r.pending == 0
    assert not r._by_source


def test_message_ies_and_fields() -> None:
    """The message takes its fields from part 1 and the union of the parts' IEs in order."""
    r = reassembler()
    first = Fragment(
        "a", "d", 9, 2, 1, 0x08, ESM_UDHI | 0x80, 0x7F, "中".encode("utf-16-be"), (CMD, PORTS)
    )
    second = Fragment("a", "d", 9, 2, 2, 0x08, ESM_UDHI, 0x7F, "文".encode("utf-16-be"), (PORTS,))
    assert r.add(second, 0.0) is None
    msg = r.add(first, 0.0)
    assert msg is not None
    assert msg.ies == (CMD, PORTS)
    assert msg.esm_class == 0x80
    assert (msg.data_coding, msg.protocol_id, msg.parts) == (0x08, 0x7F, 2)
    assert msg.text() == "中文"


def test_message_text_default_for_zero() -> None:
    """Message.text reads data_coding 0x00 with the configured default alphabet."""
    msg = Message("a", "d", 0x00, 0, 0, b"\xe9t\xe9", (), 1)
    assert msg.text(default=Encoding.LATIN1) == "été"
    assert msg.text() == "\ufffdt\ufffd"


def test_bad_parameters() -> None:
    """Non-positive timeout or bounds are refused."""
    with pytest.raises(ValueError):
        Reassembler(timeout=0, max_per_source=1, max_total=1)
    with pytest.raises(ValueError):
        Reassembler(timeout=1, max_per_source=0, max_total=1)


# -- segmentation then reassembly ---------------------------------------------------------

ALL_MODES = list(LongMode)


def carriers(text: str) -> list[Encoding]:
    found = [Encoding.UCS2]
    if gsm7.can_encode(text):
        found.append(Encoding.GSM7)
    if text.isascii():
        found.append(Encoding.ASCII)
    if all(ord(c) < 0x100 for c in text):
        found.append(Encoding.LATIN1)
    return found


def deliver_all(segments: list[Segment], order: list[int], r: Reassembler) -> list[Message]:
    messages = []
    for n, index in enumerate(order):
        got = r.add(fragment_from_pdu(to_pdu(segments[index])), float(n))
        if got is not None:
            messages.append(got)
    return messages


# Arbitrary text, plus long texts that stress the boundaries: GSM text with escapes, and UCS2
# text with surrogate pairs.
texts = st.one_of(
    st.text(max_size=400),
    st.text(min_size=150, max_size=1200),
    st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=400),
    st.text(alphabet=st.sampled_from(GSM_CHARS), min_size=100, max_size=1200),
    st.text(alphabet=st.sampled_from("a€{"), min_size=150, max_size=700),
    st.text(alphabet=st.sampled_from("a€{中😀é"), min_size=50, max_size=600),
)


@settings(max_examples=200, deadline=None)
@given(st.data(), texts, st.sampled_from(ALL_MODES), st.integers(0, 255))
def test_segment_then_reassemble_is_identity(
    data: st.DataObject, text: str, mode: LongMode, reference: int
) -> None:
    """For any text, every encoding that can carry it and every LongMode, segmenting, sending
    as submit_sm, and reassembling the parts in random order with duplicates gives the text."""
    enc = data.draw(st.sampled_from(carriers(text)), label="encoding")
    extra = data.draw(st.sampled_from([(), (PORTS,), (CMD, PORTS)]), label="extra_ies")
    segments = segment_text(text, enc, mode, reference, extra_ies=extra)
    n = len(segments)
    dups = data.draw(st.lists(st.integers(0, n - 1), max_size=3), label="dups") if n > 1 else []
    order = data.draw(st.permutations(list(range(n)) + dups), label="order")
    event(f"{enc} parts={min(n, 4)}")
    for segment in segments:  # each part stands alone: no escape or surrogate pair cut
        part = fragment_from_pdu(to_pdu(segment)).payload
        if enc is Encoding.GSM7:
            assert not part.endswith(b"\x1b")
        elif enc is Encoding.UCS2:
            part.decode("utf-16-be")  # strict: raises on a cut surrogate pair
    r = reassembler()
    messages = deliver_all(segments, order, r)
    assert len(messages) == 1
    [msg] = messages
    assert msg.text() == text
    assert msg.parts == n
    assert msg.ies == extra
    assert r.stats.duplicates == len(dups)
    assert r.pending == 0


@settings(max_examples=60, deadline=None)
@given(st.data(), st.binary(max_size=2000), st.sampled_from(ALL_MODES), st.integers(0, 255))
def test_binary_round_trip(data: st.DataObject, payload: bytes, mode: LongMode, ref: int) -> None:
    """Binary data survives segmentation and out-of-order reassembly octet for octet."""
    segments = segment_binary(payload, mode, ref, data_coding=0xF6)
    order = data.draw(st.permutations(range(len(segments))), label="order")
    [msg] = deliver_all(segments, order, reassembler())
    assert msg.payload == payload
    assert msg.data_coding == 0xF6


@pytest.mark.parametrize(
    ("pdu", "plain"),
    [
        (DeliverSm(source_addr="1", destination_addr="2", short_message=b"BAL"), True),
        (DeliverSm(source_addr="1", esm_class=0x80, protocol_id=7, data_coding=8), True),
        (SubmitSm(source_addr="1", short_message=b"x" * 160), True),
        (DeliverSm(esm_class=ESM_UDHI, short_message=b"\x05\x00\x03\x01\x02\x01hi"), False),
        (DeliverSm(esm_class=ESM_UDHI, short_message=b"\x02\x70\x00pkt"), True),
        (DeliverSm(esm_class=ESM_UDHI | 0x80, protocol_id=0x7F, short_message=b"\x00x"), True),
        (DeliverSm(esm_class=ESM_UDHI, short_message=b"\x04\x70\x00\x71\x00pkt"), False),
        (DeliverSm(esm_class=ESM_UDHI, short_message=b"\x04\x00\x02\x01\x01hi"), False),
        (DeliverSm(esm_class=ESM_UDHI, short_message=b"\x09\x70\x00"), False),
        (DeliverSm(esm_class=ESM_UDHI), False),
        (DeliverSm(short_message=b"hi", tlvs={Tag.SAR_MSG_REF_NUM: b"\x00\x01"}), False),
        (DeliverSm(tlvs={Tag.MESSAGE_PAYLOAD: b"hello"}), False),
        (DataSm(tlvs={Tag.MESSAGE_PAYLOAD: b"hello"}), False),
    ],
)
def test_plain_message_matches_the_reassembly_path(
    pdu: DeliverSm | SubmitSm | DataSm, plain: bool
) -> None:
    """plain_message gives what fragment_from_pdu + Reassembler.add give, or None when the
    PDU needs that path (a UDH with concatenation or several IEs, a malformed UDH, sar_* or
    message_payload TLVs, data_sm)."""
    got = plain_message(pdu)
    if not plain:
        assert got is None
        return
    reassembler = Reassembler(timeout=60.0, max_per_source=4, max_total=16)
    assert got == reassembler.add(fragment_from_pdu(pdu), 0.0)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.sampled_from([0x00, 0x08, 0x70, 0x71, 0x05]), st.binary(max_size=5)),
        max_size=3,
    ),
    st.binary(max_size=20),
    st.integers(0, 255),
)
def test_plain_message_with_udh_matches_the_reassembly_path(
    ies: list[tuple[int, bytes]], payload: bytes, esm_class: int
) -> None:
    """For any UDH (well-formed or not, concatenation IEs of any length included): whenever
    plain_message gives a message, it is the one the reassembly path gives."""
    udh = b"".join(bytes((iei, len(data))) + data for iei, data in ies)
    pdu = DeliverSm(
        source_addr="1",
        destination_addr="2",
        esm_class=esm_class | ESM_UDHI,
        short_message=bytes((len(udh),)) + udh + payload,
    )
    got = plain_message(pdu)
    if got is None:
        return
    reassembler = Reassembler(timeout=60.0, max_per_source=4, max_total=16)
    assert got == reassembler.add(fragment_from_pdu(pdu), 0.0)
