"""Tests for smsc.gsm7: TS 23.038 §6.2.1 alphabet, §6.2.1.1 extension table, §6.1.2.1 packing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsc import gsm7

BASE_CHARS = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXT_CHARS = "\x0c^{}\\[~]|€"
GSM_CHARS = BASE_CHARS + EXT_CHARS

gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=400)
septets = st.binary(max_size=300).map(lambda b: bytes(x & 0x7F for x in b))


def test_base_table_spot_values() -> None:
    """Characters sit at the code points of TS 23.038 §6.2.1 (spot checks across the table)."""
    assert gsm7.encode("@£$¥") == b"\x00\x01\x02\x03"
    assert gsm7.encode("Ç\nØø\rÅå") == bytes([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F])
    assert gsm7.encode("Δ_ΞÆÉ") == bytes([0x10, 0x11, 0x1A, 0x1C, 0x1F])
    assert gsm7.encode("¤¡§¿à") == bytes([0x24, 0x40, 0x5F, 0x60, 0x7F])
    assert gsm7.encode("AZaz09 ") == b"AZaz09 "


def test_extension_table() -> None:
    """Each §6.2.1.1 extension character encodes as ESC + its code and decodes back."""
    expected = {
        "\x0c": 0x0A,
        "^": 0x14,
        "{": 0x28,
        "}": 0x29,
        "\\": 0x2F,
        "[": 0x3C,
        "~": 0x3D,
        "]": 0x3E,
        "|": 0x40,
        "€": 0x65,
    }
    for char, code in expected.items():
        assert gsm7.encode(char) == bytes([0x1B, code])
        assert gsm7.decode(bytes([0x1B, code])) == char
        assert gsm7.septet_length(char) == 2


def test_alphabet_is_128_base_plus_10_extension() -> None:
    """The table defines 127 base characters (0x1B is the escape) and 10 extension ones."""
    assert len(set(BASE_CHARS)) == 127
    assert all(gsm7.can_encode(c) for c in GSM_CHARS)
    assert len(gsm7.encode(BASE_CHARS)) == 127


@pytest.mark.parametrize(
    ("text", "position", "char"),
    [("ab中c", 2, "中"), ("`", 0, "`"), ("x\x1b", 1, "\x1b"), ("ok\t", 2, "\t"), ("ç", 0, "ç")],
)
def test_encode_names_first_unencodable(text: str, position: int, char: str) -> None:
    """encode raises UnencodableError (a ValueError) naming the first bad character's index."""
    with pytest.raises(gsm7.UnencodableError) as info:
        gsm7.encode(text)
    assert isinstance(info.value, ValueError)
    assert info.value.position == position
    assert info.value.char == char
    assert f"position {position}" in str(info.value)
    assert not gsm7.can_encode(text)
    with pytest.raises(gsm7.UnencodableError):
        gsm7.septet_length(text)


def test_decode_unknown_extension_falls_back_to_base() -> None:
    """ESC + a code the extension table lacks decodes as the base-table character (§6.2.1.1)."""
    assert gsm7.decode(b"\x1bA\x1b\x00") == "A@"


def test_decode_reserved_and_trailing_escape_as_space() -> None:
    """ESC ESC and a lone trailing ESC decode as a space (§6.2.1.1 reserved code)."""
    assert gsm7.decode(b"a\x1b\x1bb") == "a b"
    assert gsm7.decode(b"a\x1b") == "a "
    assert gsm7.decode(b"\x1b\x1b\x1b\x65") == " €"


def test_decode_high_octets_as_replacement() -> None:
    """An octet >= 0x80 is not a septet: it decodes as U+FFFD, not masked."""
    assert gsm7.decode(b"a\x80\xc1") == "a\ufffd\ufffd"
    assert gsm7.decode(b"\x1b\xe5") == "\ufffd"


@given(gsm_text)
def test_round_trip_gsm_text(text: str) -> None:
    """Any text over the alphabet and extension table survives encode then decode."""
    data = gsm7.encode(text)
    assert gsm7.decode(data) == text
    assert gsm7.septet_length(text) == len(data)
    assert gsm7.can_encode(text)
    assert data.isascii()


@given(st.text(max_size=50))
def test_can_encode_agrees_with_encode(text: str) -> None:
    """can_encode is exactly "encode does not raise"; the reported position is the first bad."""
    try:
        gsm7.encode(text)
    except gsm7.UnencodableError as exc:
        assert not gsm7.can_encode(text)
        assert gsm7.can_encode(text[: exc.position])
        assert not gsm7.can_encode(text[exc.position])
    else:
        assert gsm7.can_encode(text)


@given(st.binary(max_size=300))
def test_decode_never_raises(data: bytes) -> None:
    """Any octets decode to some text; without escapes, one character per octet."""
    text = gsm7.decode(data)
    if 0x1B not in data:
        assert len(text) == len(data)


def test_known_packing_vector() -> None:
    """ "hellohello" packs to E8 32 9B FD 46 97 D9 EC 37 (the TS 23.038 example)."""
    packed = gsm7.pack(gsm7.encode("hellohello"))
    assert packed == bytes.fromhex("E8329BFD4697D9EC37")
    assert gsm7.decode(gsm7.unpack(packed, 10)) == "hellohello"


def test_pack_eight_septets_fill_seven_octets() -> None:
    """Eight septets fill exactly seven octets; a fill bit shifts the first septet up one."""
    assert len(gsm7.pack(b"ABCDEFGH")) == 7
    assert gsm7.pack(b"\x41", fill_bits=1) == b"\x82"
    assert gsm7.pack(b"", fill_bits=3) == b"\x00"


@given(septets, st.integers(0, 6))
def test_pack_unpack_round_trip(data: bytes, fill_bits: int) -> None:
    """unpack(pack(s, f), len(s), f) == s, the length is ceil((7n + f) / 8), and fill bits are
    zero bits below the septets."""
    packed = gsm7.pack(data, fill_bits)
    assert len(packed) == (7 * len(data) + fill_bits + 7) // 8
    assert gsm7.unpack(packed, len(data), fill_bits) == data
    unshifted = int.from_bytes(gsm7.pack(data), "little")
    assert int.from_bytes(packed, "little") == unshifted << fill_bits


def test_pack_unpack_reject_bad_arguments() -> None:
    """Septets >= 0x80, fill bits outside 0..6 and short data are refused."""
    with pytest.raises(ValueError, match="septet"):
        gsm7.pack(b"\x80")
    with pytest.raises(ValueError, match="fill_bits"):
        gsm7.pack(b"a", fill_bits=7)
    with pytest.raises(ValueError, match="fill_bits"):
        gsm7.unpack(b"a", 1, fill_bits=-1)
    with pytest.raises(ValueError, match="need"):
        gsm7.unpack(b"\x00" * 6, 8)
    with pytest.raises(ValueError, match="count"):
        gsm7.unpack(b"", -1)


@given(st.text(alphabet=st.sampled_from("aZ0 @£€{[Δ`中\u00a0é\U0001f600"), max_size=40))
def test_try_encode_agrees_with_encode(text: str) -> None:
    """try_encode is encode's result, or None exactly where encode raises (mixed scripts:
    encodable non-ASCII, an unencodable ASCII character, CJK, non-BMP)."""
    try:
        expected: bytes | None = gsm7.encode(text)
    except gsm7.UnencodableError:
        expected = None
    assert gsm7.try_encode(text) == expected
    assert gsm7.can_encode(text) is (expected is not None)
