"""Tests for stk_menus.alpha: the four alpha codings of ETSI TS 102 221 Annex A."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsc import gsm7
from stk_menus.alpha import AlphaError, decode_alpha, encode_alpha

# Published vectors --------------------------------------------------------------------------
#
# ICC alpha identifiers with FF padding, 81 and 82 codings of "Mozilla" + U+694A:
# mozilla/gecko-dev dom/system/gonk/tests/test_ril_worker_icc_ICCPDUHelper.js
# (test_read_alpha_identifier).
MOZILLA_81 = "81 08 D2 4D 6F 7A 69 6C 6C 61 CA FF FF"
MOZILLA_82 = "82 08 69 00 4D 6F 7A 69 6C 6C 61 CA FF FF"
# The alpha identifiers of ETSI TS 102 384 §27.22.4.10 SEND SHORT MESSAGE sequences 1.11.1/1.11.2/
# 1.11.3 (80, 81 and 82 codings of "8?ル?"), as carried in mozilla B2G
# dom/icc/tests/marionette/test_stk_send_sms.js (e.g. Floorp-Projects/Floorp).
SEND_SM_80 = "80 00 38 00 30 30 EB 00 30"
SEND_SM_81 = "81 04 61 38 31 EB 31"
SEND_SM_82 = "82 04 30 A0 38 32 CB 32"
# The SET UP MENU title of TS 102 384 §27.22.4.7 (Chinese, 80 coding), same source,
# dom/icc/tests/marionette/test_stk_setup_menu.js (setup_menu_cmd_28), mozilla/gecko-dev.
SETUP_MENU_TITLE_80 = "80 5D E5 51 77 7B B1 53 55"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_published_81_and_82_with_padding() -> None:
    """The 81 and 82 codings decode to the same text, the FF padding dropped."""
    assert decode_alpha(h(MOZILLA_81)) == "Mozilla\u694a"
    assert decode_alpha(h(MOZILLA_82)) == "Mozilla\u694a"


def test_encoder_picks_the_published_81_form() -> None:
    """81 is the most compact coding of "Mozilla楊": the vector's octets, unpadded."""
    assert encode_alpha("Mozilla\u694a") == h(MOZILLA_81)[:-2]


@pytest.mark.parametrize(
    ("vector", "text"),
    [(SEND_SM_80, "80ル0"), (SEND_SM_81, "81ル1"), (SEND_SM_82, "82ル2")],
)
def test_published_ts_102_384_codings(vector: str, text: str) -> None:
    """TS 102 384's 80, 81 and 82 alpha identifiers decode to their texts."""
    assert decode_alpha(h(vector)) == text


def test_published_chinese_title_is_80_and_most_compact() -> None:
    """A Chinese title with no common half page codes as 80, as in TS 102 384."""
    assert decode_alpha(h(SETUP_MENU_TITLE_80)) == "工具箱单"
    assert encode_alpha("工具箱单") == h(SETUP_MENU_TITLE_80)


def test_gsm_coding_with_padding() -> None:
    """Plain GSM text is one septet per octet; trailing FF is padding."""
    assert encode_alpha("Toolkit Menu") == b"Toolkit Menu"
    assert decode_alpha(b"Toolkit Menu\xff\xff\xff") == "Toolkit Menu"
    assert encode_alpha("@£") == b"\x00\x01"


def test_gsm_extension_character_takes_two_octets() -> None:
    """An extension-table character is ESC + code (TS 23.038 §6.2.1.1)."""
    assert encode_alpha("a€") == b"a\x1b\x65"
    assert decode_alpha(b"a\x1b\x65") == "a€"


def test_empty_text() -> None:
    """No text is no octets, and an all-padding field is no text."""
    assert encode_alpha("") == b""
    assert decode_alpha(b"") == ""
    assert decode_alpha(b"\xff\xff") == ""
    assert decode_alpha(b"\x80\xff\xff") == ""


def test_81_preferred_to_gsm_when_shorter() -> None:
    """Eight euro signs: 16 GSM octets, but 11 in an 81 coding whose half page holds U+20AC."""
    encoded = encode_alpha("€" * 8)
    assert encoded[:3] == bytes((0x81, 8, 0x20AC >> 7))
    assert len(encoded) == 11
    assert decode_alpha(encoded) == "€" * 8


def test_82_when_no_half_page_holds_the_text() -> None:
    """U+307F..U+3081 straddle a half-page boundary: only a 16-bit base pointer fits them."""
    text = "\u307f\u3080\u3081"
    encoded = encode_alpha(text)
    assert encoded == bytes((0x82, 3, 0x30, 0x7F, 0x80, 0x81, 0x82))
    assert decode_alpha(encoded) == text


def test_80_when_characters_are_far_apart() -> None:
    """Characters more than 127 apart leave 80 as the only UCS2 coding."""
    assert encode_alpha("中A\u4e00\u9fa5") == h("80 4E 2D 00 41 4E 00 9F A5")


def test_gsm_characters_inside_81_stay_septets() -> None:
    """In an 81 coding an octet below 80 is a GSM septet: "@" is 00, not a window offset."""
    encoded = encode_alpha("@ЗД")
    assert encoded == bytes((0x81, 3, 0x08, 0x00, 0x80 | 0x17, 0x80 | 0x14))
    assert decode_alpha(encoded) == "@ЗД"


def test_max_len() -> None:
    """max_len refuses a text whose shortest coding is longer, and accepts one that fits."""
    assert encode_alpha("abc", max_len=3) == b"abc"
    with pytest.raises(AlphaError, match="more than 2"):
        encode_alpha("abc", max_len=2)


@pytest.mark.parametrize("text", ["\U0001f600", "a\ud800", "\uffff"])
def test_unencodable_text(text: str) -> None:
    """Beyond the BMP, lone surrogates and the padding value U+FFFF cannot be coded."""
    with pytest.raises(AlphaError):
        encode_alpha(text)


@pytest.mark.parametrize(
    "data",
    [
        "83 00",  # not a coding
        "41 C0 42",  # an octet above 7F inside GSM text
        "80 00 41 00",  # odd UCS2 body not ending in FF
        "80 D8 00",  # a surrogate
        "80 FF FF 00 41",  # U+FFFF inside the text
        "81 05 13 41",  # count beyond the field
        "81 01",  # header cut short
        "82 01 00",  # header cut short
        "82 01 FF F0 FF",  # base + offset beyond U+FFFE
    ],
)
def test_malformed_fields(data: str) -> None:
    """Malformed fields raise AlphaError, naming what is wrong."""
    with pytest.raises(AlphaError):
        decode_alpha(h(data))


def test_80_odd_padding_octet() -> None:
    """An 80 field may end in a single FF (its length odd)."""
    assert decode_alpha(h("80 4F 60 59 7D FF")) == "你好"


# Properties ---------------------------------------------------------------------------------

bmp_text = st.text(
    alphabet=st.characters(max_codepoint=0xFFFE, exclude_categories=["Cs"]), max_size=60
)
mixed_text = st.text(
    alphabet=st.sampled_from("Aa1 @€[中国移动钱包充值ЗДРАВСТВУЙТЕルー\u3080\u307f\u0100"),
    max_size=40,
)


def _all_lengths(text: str) -> list[int]:
    lengths = [1 + 2 * len(text)]
    if gsm7.can_encode(text):
        lengths.append(gsm7.septet_length(text))
    return lengths


@given(st.one_of(bmp_text, mixed_text))
def test_round_trip(text: str) -> None:
    """Any BMP text decodes back to itself, with or without FF padding after it."""
    encoded = encode_alpha(text)
    assert decode_alpha(encoded) == text
    assert decode_alpha(encoded + b"\xff" * 3) == text


@given(st.one_of(bmp_text, mixed_text))
def test_never_longer_than_gsm_or_80(text: str) -> None:
    """The chosen coding is no longer than the GSM coding (when possible) nor the 80 one."""
    if text:
        assert len(encode_alpha(text)) <= min(_all_lengths(text))


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_only_alpha_error(data: bytes) -> None:
    """Decoding any octets returns text or raises AlphaError, nothing else."""
    try:
        text = decode_alpha(data)
    except AlphaError:
        return
    assert isinstance(text, str)
