"""Tests for stk_menus.cat: the CAT codec of ETSI TS 102 223 / TS 101 220, against published
vectors (pySim's test suite, ETSI TS 102 384 sequences, modem documentation) and properties."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stk_menus.cat import (
    DCS_8BIT,
    DCS_PACKED,
    DCS_UCS2,
    AccessTechnology,
    AlphaIdentifier,
    CatError,
    CommandDetails,
    CommandType,
    DefaultText,
    Device,
    DeviceIdentities,
    DisplayText,
    DisplayTextQualifier,
    Duration,
    GeneralResult,
    GetInput,
    GetInputQualifier,
    IconIdentifier,
    Imei,
    Imeisv,
    Item,
    ItemIconIdentifierList,
    ItemIdentifier,
    ItemsNextActionIndicator,
    MenuQualifier,
    MenuSelection,
    RawObject,
    ResponseLength,
    Result,
    SelectItem,
    SelectItemQualifier,
    SetUpMenu,
    SupportedRadioAccessTechnologies,
    TerminalResponse,
    TextCoding,
    TextString,
    TimeUnit,
    decode_envelope,
    decode_object,
    decode_proactive_command,
    decode_terminal_response,
    encode_object,
    parse_objects,
    terminal_response,
    text_coding,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# -- pySim's CAT vectors: osmocom/pysim tests/unittests/test_cat.py ---------------------------
# (IMEI_Test, IMEISV_Test, SupportedRadioAccessTechnologies_Test)

PYSIM_IMEI_15 = "123456789012345"
PYSIM_IMEI_ENCODED = "94081a32547698103254"
PYSIM_IMEISV_16 = "1234567890123456"
PYSIM_IMEISV_ENCODED = "e2091332547698103254f6"


def test_pysim_imei_encodes_to_eight_octets() -> None:
    """pySim IMEI_Test: 15 digits encode as 94 08 1A 32 54 76 98 10 32 54."""
    tlv = encode_object(Imei(PYSIM_IMEI_15))
    assert tlv.hex() == PYSIM_IMEI_ENCODED
    assert tlv[1] == 8 and len(tlv) - 2 == 8


def test_pysim_imei_first_octet_framing() -> None:
    """pySim IMEI_Test: octet 1 holds type 2 (IMEI), the odd flag and digit 1 (TS 24.008)."""
    octet1 = Imei(PYSIM_IMEI_15).encode()[2]
    assert (octet1 & 0x07, (octet1 >> 3) & 1, octet1 >> 4) == (2, 1, 1)


def test_pysim_imei_decodes_to_the_digits() -> None:
    """pySim IMEI_Test: the vector decodes to the 15 digits, framing nibble removed."""
    assert decode_object(h(PYSIM_IMEI_ENCODED)) == Imei(PYSIM_IMEI_15)


def test_pysim_imei_even_digit_count_uses_the_end_mark() -> None:
    """pySim IMEI_Test: 16 digits are even (flag 0) and end with the F filler, and decode back."""
    tlv = Imei(PYSIM_IMEISV_16).encode()
    assert (tlv[2] >> 3) & 1 == 0
    assert tlv[-1] >> 4 == 0x0F
    assert Imei.decode(tlv).digits == PYSIM_IMEISV_16


def test_pysim_imeisv() -> None:
    """pySim IMEISV_Test: E2 09 13 32 .. F6 both ways; type 3, even, end mark, 9 octets."""
    assert Imeisv(PYSIM_IMEISV_16).encode().hex() == PYSIM_IMEISV_ENCODED
    value = h(PYSIM_IMEISV_ENCODED)[2:]
    assert (value[0] & 0x07, (value[0] >> 3) & 1, value[-1] >> 4, len(value)) == (3, 0, 0xF, 9)
    assert decode_object(h(PYSIM_IMEISV_ENCODED)) == Imeisv(PYSIM_IMEISV_16)


@pytest.mark.parametrize(("encoded", "enabled"), [("b4020801", True), ("b4020800", False)])
def test_pysim_supported_radio_access_technologies(encoded: str, enabled: bool) -> None:
    """pySim SupportedRadioAccessTechnologies_Test: E-UTRAN enabled is 01, disabled 00."""
    value = SupportedRadioAccessTechnologies(((AccessTechnology.E_UTRAN, enabled),))
    assert value.encode().hex() == encoded
    assert decode_object(h(encoded)) == value


def test_pysim_supported_radio_access_technologies_multiple() -> None:
    """pySim: B4 04 08 01 00 00 is E-UTRAN enabled, GSM disabled."""
    decoded = decode_object(h("b40408010000"))
    assert isinstance(decoded, SupportedRadioAccessTechnologies)
    assert decoded.entries == ((AccessTechnology.E_UTRAN, True), (AccessTechnology.GSM, False))


# -- ETSI TS 102 384 proactive command sequences --------------------------------------------
# As published in mozilla B2G's marionette tests dom/icc/tests/marionette/test_stk_*.js
# (setup_menu, select_item: mozilla/gecko-dev; get_input: Floorp-Projects/Floorp;
# display_text: mozilla/gecko-dev). Name = the test's case name.

TS_102_384 = {
    "setup_menu_cmd_1": "d03b810301250082028182850c546f6f6c6b6974204d656e758f07014974656d2031"
    "8f07024974656d20328f07034974656d20338f07044974656d2034",
    "setup_menu_cmd_3": "d081fc810301250082028182850a4c617267654d656e75318f05505a65726f8f044f4f"
    "6e658f044e54776f8f064d54687265658f054c466f75728f054b466976658f044a5369788f0649536576656e8f"
    "064845696768748f05474e696e658f0646416c7068618f0645427261766f8f0844436861726c69658f064344"
    "656c74618f05424563686f8f0941466f782d74726f748f0640426c61636b8f063f42726f776e8f043e526564"
    "8f073d4f72616e67658f073c59656c6c6f778f063b477265656e8f053a426c75658f073956696f6c65748f05"
    "38477265798f063757686974658f06366d696c6c698f06356d6963726f8f05346e616e6f8f05337069636f",
    "setup_menu_cmd_7": "d041810301250082028182850c546f6f6c6b6974204d656e758f07014974656d2031"
    "8f07024974656d20328f07034974656d20338f07044974656d2034180413101526",
    "setup_menu_cmd_8": "d03c810301250082028182850c546f6f6c6b6974204d656e758f07014974656d2031"
    "8f07024974656d20328f07034974656d20339e0201019f0401030303",
    "setup_menu_cmd_10": "d029810301250182028182850c546f6f6c6b6974204d656e758f07014974656d2031"
    "8f07024974656d2032",
    "setup_menu_cmd_11": "d048810301250082028182850e546f6f6c6b6974204d656e7520318f0701497465"
    "6d20318f07024974656d20328f07034974656d2033d004000e00b4d10c000600b4000600b4000600b4",
    "setup_menu_cmd_28": "d03c8103012500820281828509805de551777bb153558f080180987976ee4e008f08"
    "0280987976ee4e8c8f080380987976ee4e098f080480987976ee56db",
    "setup_menu_cmd_29": "d0208103012500820281828509805de551777bb153558f0411804e008f0412804e8c",
    "setup_menu_remove": "d00d81030125008202818285008f00",
    "select_item_cmd_1": "d03d810301240082028182850e546f6f6c6b69742053656c6563748f07014974656d"
    "20318f07024974656d20328f07034974656d20338f07044974656d2034",
    "select_item_cmd_8": "d037810301240082028182850e546f6f6c6b69742053656c6563748f07014974656d"
    "20318f07024974656d20328f07034974656d2033900102",
    "select_item_cmd_9": "d034810301248082028182850e546f6f6c6b69742053656c6563748f07014974656d"
    "20318f07024974656d20328f07034974656d2033",
    "get_input_cmd_1": "d01b8103012300820281828d0c04456e74657220313233343591020505",
    "get_input_cmd_2": "d01a8103012308820281828d0b004537bd2c07d96eaad10a91020505",
    "get_input_cmd_4": "d0278103012304820281828d180450617373776f726420313c53454e443e32333435"
    "36373891020408",
    "get_input_cmd_11": "d0288103012301820281828d19080417041404200410041204210422041204230419"
    "0422041591020505",
    "get_input_cmd_13": "d01b8103012303820281828d0c04456e7465722048656c6c6f91020c0c",
    "get_input_cmd_15": "d0238103012300820281828d0c04456e746572203132333435910205051706043132"
    "333435",
    "get_input_cmd_17": "d01d8103012300820281828d0a043c4e4f2d49434f4e3e9102000a1e020001",
    "display_text_cmd_1": "d01a8103012180820281028d0f04546f6f6c6b697420546573742031",
    "display_text_cmd_3": "d0198103012180820281028d0e00d4f79bbd4ed341d4f29c0e9a01",
    "display_text_cmd_8": "d0108103012180820281028d05084f60597d",
    "display_text_cmd_10": "d0288103012180820281020d1d00d3309bfc06c95c301aa8e80259c3ec34b9ac07"
    "c9602f58ed159bb940",
    "display_text_cmd_11": "d0198103012180820281028d0a043130205365636f6e648402010a",
    "display_text_cmd_12": "d01a8103012180820281028d0b0442617369632049636f6e9e020001",
    "display_text_cmd_16": "d0268103012100820281028d1b12d4f79bbd4ed341d4f29c0e3a4a9f55a80e868f"
    "c158a09b304905",
    "display_text_cmd_19": "d0268103012100820281028d1bf2d4f79bbd4ed341d4f29c0e3a4a9f55a80e8637"
    "c258a09b304905",
    "display_text_cmd_20": "d0298103012100820281028d1ef6546f6f6c6b697420546573742047524f55503a"
    "307846302c2038424954",
}
# Published in a UCS2 coding (80) that is not the most compact one (81): they decode, and
# re-encode shorter.
TS_102_384_NOT_COMPACT = {
    "setup_menu_cmd_26": "d0819c8103012500820281828519800417041404200410041204210422041204230419"
    "042204158f1c018004170414042004100412042104220412042304190422041500318f1c02800417041404200410"
    "04120421042204120423041904220415"
    "00328f1c038004170414042004100412042104220412042304190422041500338f1c0480041704140420041004"
    "12042104220412042304190422041500"
    "34",
    "setup_menu_cmd_30": "d0448103012500820281828509800038003030eb00308f0a01800038003030eb0031"
    "8f0a02800038003030eb00328f0a03800038003030eb00338f0a04800038003030eb0034",
}

# HiSilicon modem AT command documentation (^CSIN, ^CSTR, ^CSEN examples), Impalabs/resources
# ELS-AN00_02_HM_opensource/drivers/hisi/modem/tafnew/common/at/custom/src/at_custom_pam_cmd_tbl.c
HISI_SELECT_ITEM = (
    "D0398103012400820281828F0A01805F53524D53F778018F0A02805207636253F778018F0A03807F168F9153F7"
    "78018F0A0480547C53EB8F6C79FB"
)
HISI_REFRESH = "D009810301010382028182"
HISI_TERMINAL_RESPONSE = "810301240082028281830100100102"
HISI_MENU_SELECTION = "D30782020181100101"
# TERMINAL RESPONSE: GET INPUT 1.9.1A of TS 102 384 §27.22.4.3.1 (an empty string), as asserted
# octet by octet in mozilla/gecko-dev dom/system/gonk/tests/test_ril_worker_stk.js
# (test_stk_terminal_response_get_input_empty_string; device identities tag 02, no CR).
TS_102_384_GET_INPUT_EMPTY_RESPONSE = "8103012300020282818301008d0104"


@pytest.mark.parametrize("name", sorted(TS_102_384))
def test_ts_102_384_vectors_round_trip(name: str) -> None:
    """Each TS 102 384 command decodes and re-encodes to the same octets."""
    data = h(TS_102_384[name])
    assert decode_proactive_command(data).encode() == data


@pytest.mark.parametrize("name", sorted(TS_102_384_NOT_COMPACT))
def test_ts_102_384_non_compact_vectors(name: str) -> None:
    """Vectors in a longer UCS2 coding decode; re-encoding is shorter and decodes the same."""
    data = h(TS_102_384_NOT_COMPACT[name])
    command = decode_proactive_command(data)
    again = command.encode()
    assert len(again) < len(data)
    assert decode_proactive_command(again) == command


def test_setup_menu_fields() -> None:
    """setup_menu_cmd_1: title, four items, qualifier 00, command number 1."""
    command = decode_proactive_command(h(TS_102_384["setup_menu_cmd_1"]))
    assert isinstance(command, SetUpMenu)
    assert command.alpha == AlphaIdentifier("Toolkit Menu")
    assert command.items == tuple(Item(i, f"Item {i}") for i in range(1, 5))
    assert (command.qualifier, command.number) == (MenuQualifier.NONE, 1)


def test_setup_menu_long_form_length() -> None:
    """setup_menu_cmd_3: 81 FC template length, 30 items with descending identifiers."""
    command = decode_proactive_command(h(TS_102_384["setup_menu_cmd_3"]))
    assert isinstance(command, SetUpMenu)
    assert command.alpha.text == "LargeMenu1"
    assert len(command.items) == 30
    assert (command.items[0], command.items[-1]) == (Item(0x50, "Zero"), Item(0x33, "pico"))


def test_setup_menu_next_actions_and_icons() -> None:
    """setup_menu_cmd_7/8: next action indicator (18, no CR), icon and item icon list."""
    command = decode_proactive_command(h(TS_102_384["setup_menu_cmd_7"]))
    assert isinstance(command, SetUpMenu)
    assert command.next_actions == ItemsNextActionIndicator((0x13, 0x10, 0x15, 0x26))
    command = decode_proactive_command(h(TS_102_384["setup_menu_cmd_8"]))
    assert isinstance(command, SetUpMenu)
    assert command.icon == IconIdentifier(1, self_explanatory=False)
    assert command.item_icons == ItemIconIdentifierList((3, 3, 3), self_explanatory=False)


def test_setup_menu_text_attributes_are_carried() -> None:
    """setup_menu_cmd_11: text attribute objects (D0, D1: CR set) ride along in extra."""
    command = decode_proactive_command(h(TS_102_384["setup_menu_cmd_11"]))
    assert isinstance(command, SetUpMenu)
    assert [(raw.tag, raw.cr) for raw in command.extra] == [(0x50, True), (0x51, True)]


def test_setup_menu_chinese() -> None:
    """setup_menu_cmd_28: a Chinese menu in 80 coding (its most compact one)."""
    command = decode_proactive_command(h(TS_102_384["setup_menu_cmd_28"]))
    assert isinstance(command, SetUpMenu)
    assert command.alpha.text == "工具箱单"
    assert [item.text for item in command.items] == ["项目一", "项目二", "项目三", "项目四"]


def test_setup_menu_removal() -> None:
    """A single empty Item (8F 00) removes the menu: no items."""
    command = decode_proactive_command(h(TS_102_384["setup_menu_remove"]))
    assert command == SetUpMenu(AlphaIdentifier(""), ())


def test_select_item_default_and_help() -> None:
    """select_item_cmd_8: default item 2 (tag 90); select_item_cmd_9: qualifier 80 (help)."""
    command = decode_proactive_command(h(TS_102_384["select_item_cmd_8"]))
    assert isinstance(command, SelectItem)
    assert command.default_item == ItemIdentifier(2)
    command = decode_proactive_command(h(TS_102_384["select_item_cmd_9"]))
    assert isinstance(command, SelectItem)
    assert command.qualifier == SelectItemQualifier.HELP


def test_get_input_qualifiers() -> None:
    """get_input_cmd_2/4/11/13: packed, hidden, alphabet, UCS2 alphabet bits."""
    expected = {
        "get_input_cmd_1": GetInputQualifier.NONE,
        "get_input_cmd_2": GetInputQualifier.PACKED,
        "get_input_cmd_4": GetInputQualifier.HIDDEN,
        "get_input_cmd_11": GetInputQualifier.ALPHABET,
        "get_input_cmd_13": GetInputQualifier.ALPHABET | GetInputQualifier.UCS2,
    }
    for name, qualifier in expected.items():
        command = decode_proactive_command(h(TS_102_384[name]))
        assert isinstance(command, GetInput)
        assert command.qualifier == qualifier, name


def test_get_input_fields() -> None:
    """get_input_cmd_2 (packed prompt), _4 (lengths 4..8), _15 (default text, 17 no CR)."""
    command = decode_proactive_command(h(TS_102_384["get_input_cmd_2"]))
    assert isinstance(command, GetInput)
    assert command.text == TextString("Enter 67*#+", DCS_PACKED)
    command = decode_proactive_command(h(TS_102_384["get_input_cmd_4"]))
    assert isinstance(command, GetInput)
    assert command.response_length == ResponseLength(4, 8)
    assert command.text.text == "Password 1<SEND>2345678"
    command = decode_proactive_command(h(TS_102_384["get_input_cmd_15"]))
    assert isinstance(command, GetInput)
    assert command.default_text == DefaultText("12345", DCS_8BIT, cr=False)


def test_get_input_icon_without_cr() -> None:
    """get_input_cmd_17: an icon identifier with CR clear (1E) keeps its flag."""
    command = decode_proactive_command(h(TS_102_384["get_input_cmd_17"]))
    assert isinstance(command, GetInput)
    assert command.icon == IconIdentifier(1, self_explanatory=True, cr=False)


@pytest.mark.parametrize(
    ("name", "text", "dcs"),
    [
        ("display_text_cmd_1", "Toolkit Test 1", DCS_8BIT),
        ("display_text_cmd_3", "Toolkit Test 3", DCS_PACKED),
        ("display_text_cmd_8", "你好", DCS_UCS2),
        ("display_text_cmd_10", "Saldo 2.04 E. Validez 20/05/13. ", DCS_PACKED),
        ("display_text_cmd_16", "Toolkit Test GROUP:0x10, 7BIT", 0x12),
        ("display_text_cmd_19", "Toolkit Test GROUP:0xF0, 7BIT", 0xF2),
        ("display_text_cmd_20", "Toolkit Test GROUP:0xF0, 8BIT", 0xF6),
    ],
)
def test_display_text_codings(name: str, text: str, dcs: int) -> None:
    """Text strings in packed, 8-bit and UCS2 codings, and message-class coding schemes."""
    command = decode_proactive_command(h(TS_102_384[name]))
    assert isinstance(command, DisplayText)
    assert (command.text.text, command.text.dcs) == (text, dcs)


def test_display_text_details() -> None:
    """display_text_cmd_1: wait for user; _10: text string without CR; _11: duration 10 s."""
    command = decode_proactive_command(h(TS_102_384["display_text_cmd_1"]))
    assert isinstance(command, DisplayText)
    assert command.qualifier == DisplayTextQualifier.WAIT_FOR_USER
    command = decode_proactive_command(h(TS_102_384["display_text_cmd_10"]))
    assert isinstance(command, DisplayText)
    assert command.text.cr is False
    command = decode_proactive_command(h(TS_102_384["display_text_cmd_11"]))
    assert isinstance(command, DisplayText)
    assert command.duration == Duration(TimeUnit.SECONDS, 10)


def test_display_text_immediate_response() -> None:
    """The immediate response object (AB 00) sets immediate_response and comes back."""
    command = DisplayText(TextString("Hi"), immediate_response=True)
    data = command.encode()
    assert data.endswith(b"\xab\x00")
    assert decode_proactive_command(data) == command


def test_hisi_chinese_select_item() -> None:
    """A China SIM's SELECT ITEM without alpha identifier: four 80-coded Chinese items."""
    data = h(HISI_SELECT_ITEM)
    command = decode_proactive_command(data)
    assert isinstance(command, SelectItem)
    assert command.alpha is None
    assert [item.text for item in command.items] == ["当前号码", "切换号码", "编辑号码", "呼叫转移"]
    assert command.encode() == data


def test_hisi_refresh_is_beyond_this_codec() -> None:
    """A well-formed REFRESH is refused as beyond capability (result 30), not as garbage."""
    with pytest.raises(CatError) as info:
        decode_proactive_command(h(HISI_REFRESH))
    assert info.value.result is GeneralResult.COMMAND_BEYOND_TERMINAL_CAPABILITY


def test_hisi_terminal_response() -> None:
    """SELECT ITEM answered OK with item 2 (tag 10 without CR), octet for octet."""
    data = h(HISI_TERMINAL_RESPONSE)
    response = decode_terminal_response(data)
    assert response.details == CommandDetails(1, CommandType.SELECT_ITEM, 0)
    assert response.general is GeneralResult.PERFORMED_SUCCESSFULLY
    assert response.item == ItemIdentifier(2, cr=False)
    assert response.encode() == data


def test_hisi_menu_selection() -> None:
    """MENU SELECTION of item 1 from the keypad, octet for octet."""
    data = h(HISI_MENU_SELECTION)
    envelope = decode_envelope(data)
    assert envelope.item == ItemIdentifier(1, cr=False)
    assert envelope.devices == DeviceIdentities(Device.KEYPAD, Device.UICC)
    assert envelope.help_requested is False
    assert envelope.encode() == data


def test_ts_102_384_empty_get_input_response() -> None:
    """GET INPUT 1.9.1A: an empty string is a text string of the coding scheme alone."""
    data = h(TS_102_384_GET_INPUT_EMPTY_RESPONSE)
    response = decode_terminal_response(data)
    assert response.text == TextString("", DCS_8BIT)
    assert response.devices.cr is False
    assert response.encode() == data


# -- the TLV layer --------------------------------------------------------------------------


def test_length_forms() -> None:
    """Lengths up to 7F take one octet, 80..FF take 81 xx (TS 101 220 §7.1.2)."""
    assert RawObject(0x05, b"a" * 0x7F).encode()[:2] == b"\x05\x7f"
    assert RawObject(0x05, b"a" * 0x80).encode()[:3] == b"\x05\x81\x80"
    assert parse_objects(b"\x05\x81\x80" + b"a" * 0x80) == (RawObject(0x05, b"a" * 0x80),)


@pytest.mark.parametrize("data", ["05817f" + "00" * 0x7F, "058200800000", "0580", "05", "0503aa"])
def test_bad_lengths(data: str) -> None:
    """Non-minimal 81 lengths, 82 and indefinite forms, and short values are refused."""
    with pytest.raises(CatError):
        parse_objects(h(data))


def test_value_over_255_is_refused() -> None:
    """CAT lengths stop at 255."""
    with pytest.raises(CatError):
        RawObject(0x05, b"a" * 256)


def test_three_byte_tags() -> None:
    """Tags from 7F up use 7F + two octets, CR in bit 16 (TS 101 220 §7.1.1.2)."""
    raw = RawObject(0x1234, b"\x01", cr=True)
    assert raw.encode() == h("7f92340101")
    assert parse_objects(raw.encode()) == (raw,)
    with pytest.raises(CatError):
        parse_objects(h("7f00050100"))  # tag 05 has a single-byte form


@pytest.mark.parametrize("first", ["00", "80", "ff"])
def test_invalid_tag_octets(first: str) -> None:
    """00, 80 and FF are not COMPREHENSION-TLV tags."""
    with pytest.raises(CatError):
        parse_objects(h(first + "0100"))


def _menu_with(extra_object: str) -> bytes:
    body = h("810301250082028182" + "8503414243" + "8f020141" + extra_object)
    return b"\xd0" + bytes((len(body),)) + body


def test_unknown_object_without_cr_is_kept() -> None:
    """An unknown object with CR clear is kept in extra and encoded again (TS 102 223 §6.10)."""
    data = _menu_with("3a0201ff")
    command = decode_proactive_command(data)
    assert isinstance(command, SetUpMenu)
    assert command.extra == (RawObject(0x3A, b"\x01\xff", cr=False),)
    assert command.encode() == data


def test_unknown_object_with_cr_is_refused() -> None:
    """An unknown object with CR set is refused: command data not understood (32)."""
    with pytest.raises(CatError) as info:
        decode_proactive_command(_menu_with("ba0201ff"))
    assert info.value.result is GeneralResult.COMMAND_DATA_NOT_UNDERSTOOD


def test_known_object_in_the_wrong_command_follows_the_cr_rule() -> None:
    """A response length (11) means nothing in SET UP MENU: kept without CR, refused with."""
    command = decode_proactive_command(_menu_with("11020105"))
    assert isinstance(command, SetUpMenu)
    assert command.extra == (RawObject(0x11, b"\x01\x05"),)
    with pytest.raises(CatError):
        decode_proactive_command(_menu_with("91020105"))


def test_missing_mandatory_object() -> None:
    """GET INPUT without its response length: required values missing (36)."""
    body = h("810301230082028182" + "8d0204" + "41")
    with pytest.raises(CatError) as info:
        decode_proactive_command(b"\xd0" + bytes((len(body),)) + body)
    assert info.value.result is GeneralResult.REQUIRED_VALUES_MISSING


def test_unknown_type_of_command() -> None:
    """An undefined type of command: command type not understood (31)."""
    with pytest.raises(CatError) as info:
        decode_proactive_command(h("d009810301ee0082028182"))
    assert info.value.result is GeneralResult.COMMAND_TYPE_NOT_UNDERSTOOD


@pytest.mark.parametrize(
    "data",
    [
        "d00d82028182810301250085008f00",  # devices before details
        "d00d81030125008202818385008f00",  # SET UP MENU to the network
        "d00d81030125008202828185008f00",  # sent by the terminal
        "d00e81030125008202818285008f00",  # template length beyond the data
        "d10d81030125008202818285008f00",  # not a proactive command template
        "d00f810301250082028182850085008f00",  # alpha identifier twice
        "d0138103012500820281828500" + "8f020141" * 2,  # item identifier 1 twice
        "d00f81030125008202818285008f020041",  # item identifier 00
        "d0118103012500820281828500" + "8f020141" + "8f00",  # an empty item among items
        "d00b810301250082028182" + "8f00",  # SET UP MENU without alpha identifier
    ],
)
def test_malformed_commands(data: str) -> None:
    """Structural errors are CatErrors."""
    with pytest.raises(CatError):
        decode_proactive_command(h(data))


def test_terminal_response_wrong_direction() -> None:
    """A terminal response must go from the terminal to the UICC."""
    with pytest.raises(CatError):
        decode_terminal_response(h("810301240082028182830100"))


# -- text strings ---------------------------------------------------------------------------


def test_text_coding_of_dcs() -> None:
    """The alphabet of a coding scheme follows TS 23.038 §4; compressed/reserved are refused."""
    assert text_coding(0x00) is TextCoding.GSM7_PACKED
    assert text_coding(0x04) is TextCoding.GSM_8BIT
    assert text_coding(0x08) is TextCoding.UCS2
    assert text_coding(0x1A) is TextCoding.UCS2
    assert text_coding(0xF6) is TextCoding.GSM_8BIT
    for dcs in (0x20, 0x0C, 0x80, 0xE0):
        with pytest.raises(CatError):
            text_coding(dcs)


def test_packed_seven_characters_pad_with_cr() -> None:
    """7 septets leave 7 spare bits: <CR> fills them, decoding drops it (TS 23.038 §6.1.2.1.1)."""
    packed = TextString("ABCDEFG", DCS_PACKED).encode()
    assert packed[1] == 8 and (packed[-1] >> 1) == 0x0D
    assert TextString.decode(packed).text == "ABCDEFG"


def test_packed_cr_on_octet_boundary_is_doubled() -> None:
    """A wanted final <CR> on an octet boundary gets a second one: it reads as <CR><CR>."""
    text = "ABCDEFG\r"
    assert TextString.decode(TextString(text, DCS_PACKED).encode()).text == text + "\r"


def test_null_and_empty_text_strings() -> None:
    """The null text string has no coding scheme (8D 00); the empty one has it alone."""
    assert TextString("", None).encode() == b"\x8d\x00"
    assert TextString("", DCS_UCS2).encode() == b"\x8d\x01\x08"
    assert TextString.decode(b"\x8d\x00") == TextString("", None)
    with pytest.raises(CatError):
        TextString("x", None)


@pytest.mark.parametrize(
    ("text", "dcs"), [("中", DCS_8BIT), ("中", DCS_PACKED), ("\U0001f600", DCS_UCS2)]
)
def test_text_outside_its_coding(text: str, dcs: int) -> None:
    """Text the coding scheme cannot carry is refused when the value is made."""
    with pytest.raises(CatError):
        TextString(text, dcs)


@pytest.mark.parametrize("value", ["0441c0", "08004100", "08d800"])
def test_bad_text_values(value: str) -> None:
    """An 8-bit text above 7F, odd UCS2 and surrogates are refused."""
    with pytest.raises(CatError):
        TextString.from_value(h(value), True)


# -- GET INPUT answers and the terminal response builder ------------------------------------

AMOUNT = GetInput(TextString("Amount"), ResponseLength(1, 6))
PIN = GetInput(TextString("PIN"), ResponseLength(6, 6), GetInputQualifier.HIDDEN)


def test_answer_to_get_input() -> None:
    """A digit answer is echoed in an 8-bit text string after the result."""
    response = terminal_response(AMOUNT, text="200")
    assert response.encode() == h("810301230082028281830100" + "8d0404323030")
    assert decode_terminal_response(response.encode()) == response


@pytest.mark.parametrize(
    ("qualifier", "dcs"),
    [
        (GetInputQualifier.NONE, DCS_8BIT),
        (GetInputQualifier.PACKED, DCS_PACKED),
        (GetInputQualifier.ALPHABET | GetInputQualifier.UCS2, DCS_UCS2),
    ],
)
def test_answer_coding_follows_the_qualifier(qualifier: GetInputQualifier, dcs: int) -> None:
    """The answer's coding scheme is UCS2, packed or 8-bit as the qualifier asks."""
    command = GetInput(TextString("?"), ResponseLength(1, 8), qualifier)
    assert command.response_dcs == dcs
    assert terminal_response(command, text="123").text == TextString("123", dcs)


@pytest.mark.parametrize("answer", ["12345", "1234567", "12a456", "12.456"])
def test_pin_input_is_checked_without_echoing_it(answer: str) -> None:
    """Wrong length or a non-digit is refused; the message never contains the input."""
    with pytest.raises(CatError) as info:
        terminal_response(PIN, text=answer)
    assert answer not in str(info.value)


def test_digits_allow_star_hash_plus() -> None:
    """Digits-only input allows 0-9, *, # and + (TS 102 223 §8.6)."""
    PIN.check_input("12*#+0")


def test_answer_to_select_item_and_misuse() -> None:
    """An item answers SELECT ITEM only, and must be one it offered."""
    menu = SelectItem((Item(1, "A"), Item(2, "B")))
    assert terminal_response(menu, item=2).item == ItemIdentifier(2)
    with pytest.raises(CatError):
        terminal_response(menu, item=3)
    with pytest.raises(CatError):
        terminal_response(AMOUNT, item=1)
    with pytest.raises(CatError):
        terminal_response(menu, text="1")


def test_user_ended_session() -> None:
    """A response may carry a failure result and nothing else."""
    response = terminal_response(PIN, GeneralResult.SESSION_TERMINATED_BY_USER)
    assert response.encode() == h("810301230482028281830110")


def test_menu_selection_with_help() -> None:
    """The help request (15 00) follows the item identifier."""
    envelope = MenuSelection(ItemIdentifier(3), help_requested=True)
    assert envelope.encode() == h("d309820201819001031500")
    assert decode_envelope(envelope.encode()) == envelope


def test_value_checks() -> None:
    """Out-of-range fields are refused when a value is made."""
    with pytest.raises(CatError):
        Item(0, "x")
    with pytest.raises(CatError):
        ResponseLength(5, 4)
    with pytest.raises(CatError):
        SetUpMenu(AlphaIdentifier("m"), (Item(1, "a"), Item(1, "b")))
    with pytest.raises(CatError):
        SetUpMenu(AlphaIdentifier("m"), (Item(1, "a"),), next_actions=ItemsNextActionIndicator(()))
    with pytest.raises(CatError):
        SelectItem(())
    with pytest.raises(CatError):
        Duration(TimeUnit.SECONDS, 0)
    with pytest.raises(CatError):
        Imei("12345x")


def test_too_long_command() -> None:
    """A command over 255 octets is refused at encoding."""
    items = tuple(Item(i, "x" * 20) for i in range(1, 13))
    with pytest.raises(CatError):
        SetUpMenu(AlphaIdentifier("m"), items).encode()


# -- properties -----------------------------------------------------------------------------

label = st.text(alphabet=st.sampled_from("AZaz09 @€中国移动钱包充值ЗДルー"), max_size=12)
gsm_label = st.text(alphabet=st.sampled_from("AZaz09 @*#+"), max_size=12)


@st.composite
def items(draw: st.DrawFn, min_size: int = 0) -> tuple[Item, ...]:
    ids = draw(st.lists(st.integers(1, 255), min_size=min_size, max_size=6, unique=True))
    return tuple(Item(i, draw(label), cr=draw(st.booleans())) for i in ids)


def text_strings(
    tag_cls: type[TextString] | type[DefaultText] = TextString,
) -> st.SearchStrategy[TextString | DefaultText]:
    return st.one_of(
        st.builds(tag_cls, gsm_label, st.sampled_from([DCS_8BIT, DCS_PACKED, 0xF2, 0xF6])),
        st.builds(tag_cls, label, st.just(DCS_UCS2)),
    )


icons = st.none() | st.builds(IconIdentifier, st.integers(0, 255), st.booleans(), st.booleans())
extras = st.lists(
    st.builds(RawObject, st.sampled_from([0x3A, 0x50, 0x51, 0x7E, 0x1234]), st.binary(max_size=6)),
    max_size=2,
).map(tuple)


@st.composite
def set_up_menus(draw: st.DrawFn) -> SetUpMenu:
    entries = draw(items())
    count = len(entries)
    return SetUpMenu(
        alpha=AlphaIdentifier(draw(label)),
        items=entries,
        qualifier=MenuQualifier(draw(st.sampled_from([0, 1, 0x80, 0x81]))),
        number=draw(st.integers(0, 255)),
        next_actions=draw(
            st.none() | st.just(ItemsNextActionIndicator(tuple([0x13] * count)))
            if count
            else st.none()
        ),
        icon=draw(icons),
        item_icons=draw(st.none() | st.just(ItemIconIdentifierList(tuple([1] * count)))),
        extra=draw(extras),
    )


@st.composite
def select_items(draw: st.DrawFn) -> SelectItem:
    entries = draw(items(min_size=1))
    return SelectItem(
        items=entries,
        alpha=draw(st.none() | st.builds(AlphaIdentifier, label)),
        qualifier=SelectItemQualifier(draw(st.integers(0, 255))),
        number=draw(st.integers(0, 255)),
        default_item=draw(st.none() | st.just(ItemIdentifier(entries[0].identifier))),
        icon=draw(icons),
        extra=draw(extras),
    )


@st.composite
def get_inputs(draw: st.DrawFn) -> GetInput:
    low = draw(st.integers(0, 255))
    return GetInput(
        text=draw(text_strings()),
        response_length=ResponseLength(low, draw(st.integers(low, 255))),
        qualifier=GetInputQualifier(draw(st.integers(0, 255))),
        number=draw(st.integers(0, 255)),
        default_text=draw(st.none() | text_strings(DefaultText)),
        icon=draw(icons),
        duration=draw(
            st.none() | st.builds(Duration, st.sampled_from(TimeUnit), st.integers(1, 255))
        ),
        extra=draw(extras),
    )


@st.composite
def display_texts(draw: st.DrawFn) -> DisplayText:
    return DisplayText(
        text=draw(text_strings()),
        qualifier=DisplayTextQualifier(draw(st.sampled_from([0, 1, 0x80, 0x81]))),
        number=draw(st.integers(0, 255)),
        icon=draw(icons),
        immediate_response=draw(st.booleans()),
        duration=draw(
            st.none() | st.builds(Duration, st.sampled_from(TimeUnit), st.integers(1, 255))
        ),
        extra=draw(extras),
    )


commands = st.one_of(set_up_menus(), select_items(), get_inputs(), display_texts())


def _fits(command: SetUpMenu | SelectItem | GetInput | DisplayText) -> bool:
    try:
        command.encode()
    except CatError:
        return False
    return True


@settings(deadline=timedelta(seconds=1))
@given(commands.filter(_fits))
def test_commands_round_trip(command: SetUpMenu | SelectItem | GetInput | DisplayText) -> None:
    """Every command decodes back to the value it was encoded from."""
    assert decode_proactive_command(command.encode()) == command


@given(
    st.builds(
        TerminalResponse,
        details=st.builds(
            CommandDetails, st.integers(0, 255), st.sampled_from(CommandType), st.integers(0, 255)
        ),
        result=st.builds(Result, st.sampled_from(GeneralResult), st.binary(max_size=3)),
        text=st.none() | text_strings(),
        item=st.none() | st.builds(ItemIdentifier, st.integers(0, 255), st.booleans()),
        duration=st.none() | st.builds(Duration, st.sampled_from(TimeUnit), st.integers(1, 255)),
        devices=st.builds(
            DeviceIdentities, st.just(Device.TERMINAL), st.just(Device.UICC), st.booleans()
        ),
        extra=extras,
    )
)
def test_terminal_responses_round_trip(response: TerminalResponse) -> None:
    """Every terminal response decodes back to itself."""
    assert decode_terminal_response(response.encode()) == response


@given(st.builds(MenuSelection, st.builds(ItemIdentifier, st.integers(0, 255)), st.booleans()))
def test_menu_selections_round_trip(envelope: MenuSelection) -> None:
    """Every menu selection decodes back to itself."""
    assert decode_envelope(envelope.encode()) == envelope


_DECODERS = (
    decode_proactive_command,
    decode_terminal_response,
    decode_envelope,
    decode_object,
    parse_objects,
)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_cat_error(data: bytes) -> None:
    """Any octets either decode or raise CatError, whichever decoder reads them."""
    for decode in _DECODERS:
        with contextlib.suppress(CatError):
            decode(data)


known_tags = st.sampled_from(
    [
        0x01,
        0x02,
        0x03,
        0x04,
        0x05,
        0x0D,
        0x0F,
        0x10,
        0x11,
        0x14,
        0x15,
        0x17,
        0x18,
        0x1E,
        0x1F,
        0x2B,
        0x34,
        0x50,
        0x62,
        0x3A,
    ]
)
tlv_soup = st.lists(
    st.builds(RawObject, known_tags, st.binary(max_size=8), st.booleans()), max_size=8
).map(lambda objects: b"".join(o.encode() for o in objects))
heads = st.sampled_from(
    ["810301250082028182", "810301240082028182", "810301230082028182", "810301210082028102"]
)


@given(heads, tlv_soup)
def test_structured_garbage_raises_only_cat_error(head: str, soup: bytes) -> None:
    """Well-framed objects with random values in a real command: a command or CatError; and
    whatever decodes re-encodes to something that decodes the same."""
    body = h(head) + soup
    if len(body) > 255:
        return
    data = b"\xd0" + (bytes((len(body),)) if len(body) < 0x80 else bytes((0x81, len(body)))) + body
    try:
        command = decode_proactive_command(data)
    except CatError:
        return
    try:
        again = command.encode()
    except CatError:
        return  # a canonical coding can be longer than the garbage (a template over 255)
    assert decode_proactive_command(again) == command


@given(tlv_soup)
def test_structured_garbage_in_responses(soup: bytes) -> None:
    """Random objects after a response's details and devices: a response or CatError."""
    with contextlib.suppress(CatError):
        decode_terminal_response(h("810301230082028281") + soup)


def test_small_objects_decode_once_and_refusals_repeat() -> None:
    """Command details, device identities and results are remembered by value (equal to a
    fresh decode); a refused value raises every time."""
    details = CommandDetails(1, CommandType.GET_INPUT, 0x04)
    assert CommandDetails.decode(details.encode()) == details
    assert CommandDetails.decode(details.encode()) is CommandDetails.decode(details.encode())
    assert (
        CommandDetails.decode(CommandDetails(2, CommandType.GET_INPUT, 0x04).encode()).number == 2
    )
    result = Result(GeneralResult.PERFORMED_SUCCESSFULLY, b"\x01")
    assert Result.decode(result.encode()) == result
    for _ in range(2):
        with pytest.raises(CatError):
            CommandDetails.decode(bytes.fromhex("8103010000"))  # type of command 00
        with pytest.raises(CatError):
            Result.decode(bytes.fromhex("8300"))  # no general result


def test_terminal_response_codes_the_typed_text_as_asked() -> None:
    """The text answering a GET INPUT is checked and coded per its qualifier, each time."""
    ask = GetInput(TextString("PIN"), ResponseLength(4, 6), GetInputQualifier.HIDDEN)
    first = terminal_response(ask, text="1234")
    assert first.text == TextString("1234", ask.response_dcs)
    assert first.details == ask.details and first.details is ask.details
    assert terminal_response(ask, text="5678").text == TextString("5678", ask.response_dcs)
    with pytest.raises(CatError):
        terminal_response(ask, text="12")
