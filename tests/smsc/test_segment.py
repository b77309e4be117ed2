"""Tests for smsc.segment: long-message splitting (TS 23.040 §9.2.3.24; SMPP 3.4 sar_*,
message_payload)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsc import gsm7
from smsc.pdu import Tag
from smsc.segment import (
    MAX_USER_DATA,
    SAR_UDH_RESERVE,
    LongMode,
    ReferenceAllocator,
    Segment,
    segment_binary,
    segment_encoded,
    segment_text,
)
from smsc.text import Encoding, encode_text
from smsc.udh import (
    IEI_COMMAND_PACKET,
    Concat,
    InformationElement,
    Ports,
    build_udh,
    find_concat,
    find_ports,
    split_udh,
)

SPLIT_MODES = [LongMode.UDH8, LongMode.UDH16, LongMode.SAR]
PORTS16 = Ports(2948, 9200, wide=True).to_ie()  # 6 octets as an IE


def body(seg: Segment) -> bytes:
    """The part's message data, without its UDH."""
    if seg.udhi:
        return split_udh(seg.short_message)[1]
    return seg.short_message


def udh_octets(seg: Segment) -> int:
    """Octets of UDH on the air: this part's own, plus the concat IE the SMSC adds for SAR."""
    own = len(seg.short_message) - len(body(seg)) if seg.udhi else 0
    if Tag.SAR_MSG_REF_NUM in seg.tlvs:
        own = (own or 1) + SAR_UDH_RESERVE
    return own


def air_octets(seg: Segment, enc: Encoding) -> int:
    """TP-User-Data octets of the part on the air (GSM septets packed after fill bits)."""
    udh = udh_octets(seg)
    if enc is Encoding.GSM7:
        fill = (7 - udh * 8 % 7) % 7
        return (udh * 8 + fill + 7 * len(body(seg)) + 7) // 8
    return udh + len(body(seg))


@pytest.mark.parametrize(
    ("enc", "char", "single", "udh8", "udh16"),
    [
        (Encoding.GSM7, "a", 160, 153, 152),
        (Encoding.UCS2, "中", 70, 67, 66),
        (Encoding.LATIN1, "é", 140, 134, 133),
    ],
)
def test_part_capacities(enc: Encoding, char: str, single: int, udh8: int, udh16: int) -> None:
    """Single-part and per-part capacities: 160/153/152 septets, 70/67/66 UCS2, 140/134/133."""
    assert len(segment_text(char * single, enc, LongMode.UDH8, 1)) == 1
    for mode, per_part in [
        (LongMode.UDH8, udh8),
        (LongMode.UDH16, udh16),
        (LongMode.SAR, udh16),
    ]:
        parts = segment_text(char * (single + 1), enc, mode, 1)
        unit = 2 if enc is Encoding.UCS2 else 1
        assert [len(body(p)) // unit for p in parts] == [per_part, single + 1 - per_part]
        assert all(air_octets(p, enc) <= MAX_USER_DATA for p in parts)
        exact = segment_text(char * (per_part * 3), enc, mode, 1)
        assert len(exact) == 3


def test_binary_capacities() -> None:
    """Binary: 140 octets alone, 134 per part with an 8-bit concat IE, 133 with a 16-bit one."""
    assert len(segment_binary(bytes(140), LongMode.UDH8, 1)) == 1
    assert [len(body(p)) for p in segment_binary(bytes(141), LongMode.UDH8, 1)] == [134, 7]
    assert [len(body(p)) for p in segment_binary(bytes(141), LongMode.UDH16, 1)] == [133, 8]
    parts = segment_binary(bytes(141), LongMode.SAR, 1, data_coding=0xF6)
    assert [len(p.short_message) for p in parts] == [133, 8]
    assert {p.data_coding for p in parts} == {0xF6}


def test_single_part_has_no_concat() -> None:
    """A message that fits one part goes without UDH, TLVs or concatenation."""
    for mode in SPLIT_MODES:
        [seg] = segment_text("hello", Encoding.GSM7, mode, 9)
        assert seg == Segment(b"hello", False, {}, 0x00)
    [empty] = segment_text("", Encoding.UCS2, LongMode.UDH8, 0)
    assert empty == Segment(b"", False, {}, 0x08)


def test_udh8_parts() -> None:
    """UDH8 parts carry 05 00 03 ref total seq and set udhi."""
    parts = segment_text("x" * 200, Encoding.GSM7, LongMode.UDH8, 0xAB, gsm7_coding=0xF0)
    assert [p.short_message[:6] for p in parts] == [
        bytes.fromhex("050003AB0201"),
        bytes.fromhex("050003AB0202"),
    ]
    assert all(p.udhi and p.tlvs == {} and p.data_coding == 0xF0 for p in parts)
    assert b"".join(body(p) for p in parts) == b"x" * 200


def test_udh16_parts() -> None:
    """UDH16 parts carry 06 08 04 refhi reflo total seq."""
    parts = segment_text("中" * 100, Encoding.UCS2, LongMode.UDH16, 0x1234)
    assert [find_concat(split_udh(p.short_message)[0]) for p in parts] == [
        Concat(0x1234, 2, 1, ref16=True),
        Concat(0x1234, 2, 2, ref16=True),
    ]
    assert parts[0].short_message[:7] == bytes.fromhex("06080412340201")


def test_sar_parts() -> None:
    """SAR parts have no UDH and carry sar_msg_ref_num (2 octets), total and seqnum TLVs."""
    parts = segment_text("y" * 400, Encoding.GSM7, LongMode.SAR, 0x0102)
    assert len(parts) == 3
    for seqnum, part in enumerate(parts, start=1):
        assert not part.udhi
        assert part.tlvs == {
            Tag.SAR_MSG_REF_NUM: b"\x01\x02",
            Tag.SAR_TOTAL_SEGMENTS: b"\x03",
            Tag.SAR_SEGMENT_SEQNUM: bytes([seqnum]),
        }
    assert b"".join(p.short_message for p in parts) == b"y" * 400


def test_payload_mode() -> None:
    """PAYLOAD sends one part: the whole message in message_payload, short_message empty."""
    [seg] = segment_text("z" * 1000, Encoding.GSM7, LongMode.PAYLOAD, 0)
    assert seg == Segment(b"", False, {Tag.MESSAGE_PAYLOAD: b"z" * 1000}, 0x00)
    [ported] = segment_binary(b"\x01\x02", LongMode.PAYLOAD, 0, extra_ies=[PORTS16])
    assert ported.udhi
    ies, data = split_udh(ported.tlvs[Tag.MESSAGE_PAYLOAD])
    assert (ies, data) == ((PORTS16,), b"\x01\x02")
    with pytest.raises(ValueError, match="65535"):
        segment_binary(bytes(0x10000), LongMode.PAYLOAD, 0)


def test_escape_never_split() -> None:
    """An extension character straddling the capacity moves whole into the next part."""
    text = "a" * 152 + "€" + "b" * 10  # the escape would be septet 153 of part 1
    parts = segment_text(text, Encoding.GSM7, LongMode.UDH8, 1)
    assert len(body(parts[0])) == 152
    assert body(parts[1]).startswith(b"\x1b\x65")
    assert "".join(gsm7.decode(body(p)) for p in parts) == text


def test_surrogate_pair_never_split() -> None:
    """A character beyond the BMP straddling the capacity moves whole into the next part."""
    text = "中" * 66 + "😀" + "中" * 5  # the pair would be code units 67-68
    parts = segment_text(text, Encoding.UCS2, LongMode.UDH8, 1)
    assert len(body(parts[0])) == 66 * 2
    assert body(parts[1])[:2] == b"\xd8\x3d"
    assert "".join(body(p).decode("utf-16-be") for p in parts) == text


def test_extra_ies_repeat_and_reduce_capacity() -> None:
    """Extra IEs appear in every part's UDH and shrink it: ports16 + concat8 = 12 octets of UDH,
    floor(128 * 8 / 7) = 146 septets; alone the 7-octet UDH leaves 152."""
    extra = [PORTS16, InformationElement(IEI_COMMAND_PACKET)]
    [single] = segment_text("a" * 150, Encoding.GSM7, LongMode.UDH8, 1, extra_ies=[PORTS16])
    assert single.udhi
    assert split_udh(single.short_message) == ((PORTS16,), b"a" * 150)
    assert len(segment_text("a" * 153, Encoding.GSM7, LongMode.UDH8, 1, extra_ies=[PORTS16])) == 2
    parts = segment_text("a" * 300, Encoding.GSM7, LongMode.UDH8, 1, extra_ies=extra)
    for part in parts:
        ies = split_udh(part.short_message)[0]
        assert find_ports(ies) == Ports(2948, 9200, wide=True)
        assert InformationElement(IEI_COMMAND_PACKET) in ies
        assert air_octets(part, Encoding.GSM7) <= MAX_USER_DATA
    # UDH: 1 + 6 (ports) + 2 (0x70) + 5 (concat) = 14 octets -> floor(126 * 8 / 7) = 144
    assert [len(body(p)) for p in parts] == [144, 144, 12]


def test_extra_ies_sar_mode() -> None:
    """In SAR mode extra IEs form each part's UDH beside the sar_* TLVs."""
    parts = segment_binary(bytes(300), LongMode.SAR, 5, extra_ies=[PORTS16])
    assert all(p.udhi and split_udh(p.short_message)[0] == (PORTS16,) for p in parts)
    assert all(air_octets(p, Encoding.BINARY) <= MAX_USER_DATA for p in parts)


def test_refusals() -> None:
    """Concat IEs in extra_ies, out-of-range references, > 255 parts, no room: ValueError."""
    with pytest.raises(ValueError, match="concatenation"):
        segment_text(
            "a", Encoding.GSM7, LongMode.UDH8, 1, extra_ies=[Concat(1, 1, 1, False).to_ie()]
        )
    with pytest.raises(ValueError, match="reference"):
        segment_text("a" * 200, Encoding.GSM7, LongMode.UDH8, 256)
    with pytest.raises(ValueError, match="reference"):
        segment_text("a" * 200, Encoding.GSM7, LongMode.SAR, 0x10000)
    assert len(segment_binary(bytes(134 * 255), LongMode.UDH8, 1)) == 255
    with pytest.raises(ValueError, match="255"):
        segment_binary(bytes(134 * 255 + 1), LongMode.UDH8, 1)
    with pytest.raises(ValueError, match="255"):
        segment_text("a" * 153 * 254 + "€" * 77, Encoding.GSM7, LongMode.UDH8, 1)
    big = [InformationElement(0x24, bytes(133))]  # UDH 141 octets with concat
    with pytest.raises(ValueError, match="room"):
        segment_binary(bytes(20), LongMode.UDH8, 1, extra_ies=big)
    with pytest.raises(gsm7.UnencodableError):
        segment_text("中", Encoding.GSM7, LongMode.UDH8, 1)


# Arbitrary text, plus long texts dense in escapes and surrogate pairs, which often straddle
# a part boundary.
texts = st.one_of(
    st.text(max_size=700),
    st.text(alphabet=st.sampled_from("a€{é"), min_size=150, max_size=700),
    st.text(alphabet=st.sampled_from("a中😀"), min_size=60, max_size=400),
)
text_and_encoding = texts.flatmap(
    lambda t: st.tuples(
        st.just(t),
        st.sampled_from(
            [Encoding.UCS2]
            + ([Encoding.GSM7] if gsm7.can_encode(t) else [])
            + ([Encoding.LATIN1] if all(ord(c) < 0x100 for c in t) else [])
        ),
    )
)


def decode_part(data: bytes, enc: Encoding) -> str:
    """One part's data decoded on its own, strictly for UCS2 (a split pair would raise)."""
    if enc is Encoding.GSM7:
        return gsm7.decode(data)
    return data.decode("utf-16-be" if enc is Encoding.UCS2 else "latin-1")


@settings(max_examples=200)
@given(text_and_encoding, st.sampled_from(SPLIT_MODES), st.integers(0, 255))
def test_parts_fit_and_keep_pairs(case: tuple[str, Encoding], mode: LongMode, ref: int) -> None:
    """For any text: every part fits 140 octets on the air, no part ends inside an escape
    sequence or a surrogate pair, and each part decoded alone continues the text."""
    text, enc = case
    parts = segment_text(text, enc, mode, ref)
    assert len(parts) >= 1
    for part in parts:
        assert air_octets(part, enc) <= MAX_USER_DATA
        if enc is Encoding.GSM7:
            assert not body(part).endswith(b"\x1b")  # ESC only ever opens a pair here
    assert "".join(decode_part(body(p), enc) for p in parts) == text


def test_reference_allocator_rotates_per_destination() -> None:
    """References count up per destination, wrap at 256 (or 65536 when wide), independently."""
    alloc = ReferenceAllocator(rng=random.Random(7))
    first = alloc.next("8613800000001", wide=False)
    seconds = [alloc.next("8613800000001", wide=False) for _ in range(300)]
    assert seconds[:3] == [(first + 1) % 256, (first + 2) % 256, (first + 3) % 256]
    assert all(0 <= r <= 255 for r in seconds)
    assert seconds[255] == first  # full cycle of 256
    other = alloc.next("8613800000002", wide=True)
    assert alloc.next("8613800000002", wide=True) == (other + 1) % 0x10000
    assert len(alloc) == 2


def test_reference_allocator_wide_wraps() -> None:
    """A 16-bit reference wraps from 65535 to 0."""

    class Top(random.Random):
        def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
            return 0xFFFF

    alloc = ReferenceAllocator(rng=Top())
    assert [alloc.next("d", wide=True) for _ in range(2)] == [0xFFFF, 0]


def test_reference_allocator_bounded_lru() -> None:
    """At most max_destinations counters are kept; the least recently used goes first."""
    alloc = ReferenceAllocator(3, rng=random.Random(1))
    a = alloc.next("a", wide=True)
    alloc.next("b", wide=True)
    alloc.next("c", wide=True)
    assert alloc.next("a", wide=True) == (a + 1) % 0x10000  # "a" is now the most recent
    alloc.next("d", wide=True)  # evicts "b"
    assert len(alloc) == 3
    assert alloc.next("a", wide=True) == (a + 2) % 0x10000  # "a" kept its counter
    for n in range(1000):
        alloc.next(f"x{n}", wide=False)
    assert len(alloc) == 3
    with pytest.raises(ValueError):
        ReferenceAllocator(0)


EXTRA_IE_SETS = [(), (PORTS16,), (InformationElement(IEI_COMMAND_PACKET),), (PORTS16, PORTS16)]


@settings(max_examples=150)
@given(
    st.integers(0, 700),
    st.sampled_from([LongMode.UDH8, LongMode.UDH16]),
    st.integers(0, 0xFFFF),
    st.sampled_from(EXTRA_IE_SETS),
)
def test_concat_udh_bytes(
    size: int, mode: LongMode, ref: int, extra: tuple[InformationElement, ...]
) -> None:
    """Each part of a long message starts with build_udh((the concat IE, *extra_ies)): the
    UDH is built without the IE objects, octet for octet as from them."""
    if mode is LongMode.UDH8:
        ref &= 0xFF
    data = bytes(i & 0xFF for i in range(size))
    parts = segment_binary(data, mode, ref, extra_ies=extra)
    if len(parts) == 1:
        assert parts[0].short_message == (build_udh(extra) if extra else b"") + data
        return
    total = len(parts)
    joined = b""
    for seqnum, part in enumerate(parts, start=1):
        udh = build_udh((Concat(ref, total, seqnum, ref16=mode is LongMode.UDH16).to_ie(), *extra))
        assert part.short_message.startswith(udh)
        assert part.udhi and part.tlvs == {} and part.data_coding == 0x04
        joined += part.short_message[len(udh) :]
    assert joined == data


@settings(max_examples=150)
@given(
    st.text(alphabet="ab€中\U0001f600", max_size=400),
    st.sampled_from(list(LongMode)),
    st.integers(0, 255),
)
def test_callable_reference_drawn_only_for_long_messages(
    text: str, mode: LongMode, ref: int
) -> None:
    """segment_encoded with a callable reference gives segment_text's parts for the reference
    it returns, and calls it only when the message needs more than one part."""
    enc = Encoding.GSM7 if gsm7.can_encode(text) else Encoding.UCS2
    drawn: list[int] = []

    def draw() -> int:
        drawn.append(ref)
        return ref

    try:
        expected = segment_text(text, enc, mode, ref)
    except ValueError:
        with pytest.raises(ValueError):
            segment_encoded(encode_text(text, enc), enc, mode, draw)
        assert drawn == []
        return
    assert segment_encoded(encode_text(text, enc), enc, mode, draw) == expected
    assert drawn == ([ref] if len(expected) > 1 else [])


def test_callable_reference_out_of_range() -> None:
    """A drawn reference is range-checked like a given one."""
    with pytest.raises(ValueError, match="out of range"):
        segment_binary(bytes(300), LongMode.UDH8, lambda: 256)
