"""Tests for smsc.text: encodings and data_coding (SMPP 3.4 §5.2.19, TS 23.038 §4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsc.gsm7 import UnencodableError
from smsc.text import (
    Encoding,
    choose_encoding,
    data_coding_for,
    decode_text,
    encode_auto,
    encode_text,
    encoding_of,
)


def test_data_coding_for_each_encoding() -> None:
    """Each encoding maps to its SMPP §5.2.19 value; GSM7's value is configurable."""
    assert data_coding_for(Encoding.GSM7) == 0x00
    assert data_coding_for(Encoding.GSM7, gsm7_coding=0xF0) == 0xF0
    assert data_coding_for(Encoding.ASCII) == 0x01
    assert data_coding_for(Encoding.LATIN1) == 0x03
    assert data_coding_for(Encoding.BINARY) == 0x04
    assert data_coding_for(Encoding.UCS2) == 0x08
    assert data_coding_for(Encoding.UCS2, gsm7_coding=0xF0) == 0x08


@pytest.mark.parametrize(
    ("data_coding", "expected"),
    [
        (0x01, Encoding.ASCII),  # SMPP IA5
        (0x02, Encoding.BINARY),  # SMPP octet unspecified
        (0x03, Encoding.LATIN1),
        (0x04, Encoding.BINARY),
        (0x05, Encoding.BINARY),  # JIS: not implemented, read as octets
        (0x08, Encoding.UCS2),
        (0x0E, Encoding.BINARY),  # KS C 5601
        (0x10, Encoding.GSM7),  # general group, class 0, default alphabet
        (0x11, Encoding.GSM7),  # general group, class 1
        (0x15, Encoding.BINARY),  # general group, 8-bit, class 1
        (0x18, Encoding.UCS2),  # general group, UCS2
        (0x1C, Encoding.GSM7),  # general group, reserved alphabet -> default alphabet
        (0x24, Encoding.BINARY),  # compressed
        (0x48, Encoding.UCS2),  # automatic deletion group, UCS2
        (0x40, Encoding.GSM7),  # automatic deletion group, default alphabet
        (0x80, Encoding.GSM7),  # reserved group -> default alphabet
        (0xC0, Encoding.GSM7),  # message waiting, discard
        (0xD8, Encoding.GSM7),  # message waiting, store
        (0xE0, Encoding.UCS2),  # message waiting, store, UCS2
        (0xF0, Encoding.GSM7),  # data coding/message class, default alphabet
        (0xF1, Encoding.GSM7),
        (0xF4, Encoding.BINARY),  # data coding/message class, 8-bit
        (0xF6, Encoding.BINARY),
    ],
)
def test_encoding_of(data_coding: int, expected: Encoding) -> None:
    """SMPP values below 0x10 and the TS 23.038 §4 coding groups above are read as specified."""
    assert encoding_of(data_coding) is expected


def test_encoding_of_zero_is_configurable() -> None:
    """data_coding 0x00 means the configured default (GSM 7-bit unless told otherwise)."""
    assert encoding_of(0x00) is Encoding.GSM7
    assert encoding_of(0x00, default=Encoding.LATIN1) is Encoding.LATIN1
    assert encoding_of(0x03, default=Encoding.ASCII) is Encoding.LATIN1


@given(st.sampled_from(Encoding))
def test_data_coding_round_trips(enc: Encoding) -> None:
    """encoding_of(data_coding_for(enc)) is enc for every encoding."""
    assert encoding_of(data_coding_for(enc)) is enc
    assert encoding_of(data_coding_for(enc, gsm7_coding=0xF0)) is enc


@given(st.integers(0, 255), st.sampled_from(Encoding))
def test_encoding_of_total(data_coding: int, default: Encoding) -> None:
    """Every octet value maps to some encoding (no exception for reserved values)."""
    assert encoding_of(data_coding, default=default) in Encoding


def test_choose_encoding() -> None:
    """GSM 7-bit when every character is in the alphabet or extension table, else UCS2."""
    assert choose_encoding("hello") is Encoding.GSM7
    assert choose_encoding("€[1] {x}") is Encoding.GSM7
    assert choose_encoding("余额 100") is Encoding.UCS2
    assert choose_encoding("`") is Encoding.UCS2
    assert choose_encoding("") is Encoding.GSM7


def test_ucs2_surrogate_pair() -> None:
    """UCS2 is UTF-16-BE: a character beyond the BMP becomes a surrogate pair and back."""
    assert encode_text("😀", Encoding.UCS2) == bytes.fromhex("D83DDE00")
    assert decode_text(bytes.fromhex("D83DDE00"), Encoding.UCS2) == "😀"
    assert encode_text("中", Encoding.UCS2) == bytes.fromhex("4E2D")


def test_ucs2_decode_tolerates_bad_data() -> None:
    """An odd trailing octet and a lone surrogate decode as U+FFFD instead of raising."""
    assert decode_text(bytes.fromhex("4E2D00"), Encoding.UCS2) == "中\ufffd"
    assert decode_text(bytes.fromhex("D8000041"), Encoding.UCS2) == "\ufffdA"
    assert decode_text(bytes.fromhex("DE00"), Encoding.UCS2) == "\ufffd"


def test_ascii_latin1_binary_decode() -> None:
    """ASCII shows high octets as U+FFFD; Latin-1 and binary map each octet to U+00xx."""
    assert decode_text(b"a\xe9", Encoding.ASCII) == "a\ufffd"
    assert decode_text(b"a\xe9", Encoding.LATIN1) == "aé"
    assert decode_text(b"\x00\xff", Encoding.BINARY) == "\x00\xff"


@pytest.mark.parametrize(
    ("text", "enc", "position"),
    [
        ("abé", Encoding.ASCII, 2),
        ("é中", Encoding.LATIN1, 1),
        ("x中", Encoding.GSM7, 1),
        ("a\ud800", Encoding.UCS2, 1),
        ("ā", Encoding.BINARY, 0),
    ],
)
def test_encode_unencodable(text: str, enc: Encoding, position: int) -> None:
    """encode_text raises UnencodableError naming the first character the encoding lacks."""
    with pytest.raises(UnencodableError) as info:
        encode_text(text, enc)
    assert info.value.position == position
    assert info.value.encoding == enc.value


@given(st.binary(max_size=200), st.sampled_from(Encoding))
def test_decode_never_raises(data: bytes, enc: Encoding) -> None:
    """decode_text returns text for any octets in any encoding."""
    assert isinstance(decode_text(data, enc), str)


@given(st.text(max_size=200))
def test_round_trip_every_encoding_that_fits(text: str) -> None:
    """For each encoding that can carry the text, encode then decode is the identity; the
    chosen encoding always can."""
    carriers = [choose_encoding(text), Encoding.UCS2]
    if text.isascii():
        carriers.append(Encoding.ASCII)
    if all(ord(c) < 0x100 for c in text):
        carriers += [Encoding.LATIN1, Encoding.BINARY]
    for enc in carriers:
        assert decode_text(encode_text(text, enc), enc) == text


@given(st.binary(max_size=200))
def test_binary_round_trip(data: bytes) -> None:
    """BINARY text is a lossless view of the octets."""
    assert encode_text(decode_text(data, Encoding.BINARY), Encoding.BINARY) == data


@given(st.text(max_size=80) | st.text(alphabet="abc €{中文\ud800", max_size=80))
def test_encode_auto_is_choose_then_encode(text: str) -> None:
    """encode_auto gives what choose_encoding then encode_text give, and raises alike (a
    lone surrogate cannot go as UCS2)."""
    enc = choose_encoding(text)
    try:
        expected = encode_text(text, enc)
    except UnencodableError as exc:
        with pytest.raises(UnencodableError) as caught:
            encode_auto(text)
        assert caught.value.position == exc.position
    else:
        assert encode_auto(text) == (enc, expected)
