"""Tests for simcard.card: the virtual UICC (ATR, default profile, ICCID, power, applets)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import pytest
import smartcard.ATR
from hypothesis import given
from hypothesis import strategies as st

from ota.apdu import CommandApdu
from simcard.apdu_dispatch import ClassGroup, Response, reply
from simcard.card import (
    ATR,
    CALIBRATION_PATH,
    CALIBRATION_SIZE,
    DEFAULT_PROFILE,
    WALLET_AID,
    IccidError,
    VirtualCard,
    decode_iccid,
    encode_iccid,
)
from simcard.filesystem import ProfileError

# osmocom/pysim pySim/profile/ts_51_011.py, class EF_ICCID, _test_de_encode:
# ('988812010000400310f0', {"iccid": "8988211000000430010"}) - TS 102 221 §13.2 coding.
PYSIM_ICCID = "8988211000000430010"
PYSIM_ICCID_CONTENT = bytes.fromhex("988812010000400310f0")


def send(card: VirtualCard, hex_apdu: str) -> tuple[bytes, int]:
    out = card.process(bytes.fromhex(hex_apdu))
    return out[:-2], int.from_bytes(out[-2:], "big")


def test_atr_parses_as_t0_with_t15_and_valid_checksum() -> None:
    """pyscard's ATR parser (an independent implementation) reads T=0, T=15 and a good TCK."""
    parsed = smartcard.ATR.ATR(list(ATR))
    assert parsed.getSupportedProtocols() == {"T=0": True, "T=15": True}
    assert parsed.checksumOK
    assert parsed.getHistoricalBytes() == list(bytes.fromhex("8031E073BE2100"))
    assert VirtualCard(PYSIM_ICCID).atr == ATR


def test_iccid_coding_matches_pysim_vector() -> None:
    """EF ICCID content is the swapped-nibble BCD of pySim's published vector."""
    assert encode_iccid(PYSIM_ICCID) == PYSIM_ICCID_CONTENT
    assert decode_iccid(PYSIM_ICCID_CONTENT) == PYSIM_ICCID


@given(st.text(alphabet="0123456789", min_size=1, max_size=20))
def test_iccid_round_trip(iccid: str) -> None:
    """Any 1-20 digit ICCID survives encode then decode, in 10 bytes."""
    content = encode_iccid(iccid)
    assert len(content) == 10
    assert decode_iccid(content) == iccid


@pytest.mark.parametrize("bad", ["", "89860A", "1" * 21, "８９"])
def test_bad_iccid_is_refused(bad: str) -> None:
    """Non-digits, empty and over-long ICCIDs raise IccidError (a ValueError)."""
    with pytest.raises(IccidError):
        encode_iccid(bad)
    with pytest.raises(ValueError):
        VirtualCard(bad)


def test_decode_refuses_non_bcd() -> None:
    """A nibble A-E in EF ICCID is not BCD."""
    with pytest.raises(IccidError):
        decode_iccid(bytes.fromhex("A8"))


def test_read_iccid_over_apdus() -> None:
    """SELECT MF, SELECT EF ICCID, READ BINARY return the ICCID given to the constructor."""
    card = VirtualCard(PYSIM_ICCID)
    assert send(card, "00A4000C023F00")[1] == 0x9000
    assert send(card, "00A4000C022FE2")[1] == 0x9000
    assert send(card, "00B000000A") == (PYSIM_ICCID_CONTENT, 0x9000)
    assert send(card, "00B0820000") == (PYSIM_ICCID_CONTENT, 0x9000)  # by SFI 2
    assert send(card, "00D6000001AA")[1] == 0x6982  # read-only


def test_default_profile_layout() -> None:
    """MF with EF ICCID and EF DIR; DF 7F50 (wallet AID) with parameters and calibration."""
    card = VirtualCard("89860000000000000001")
    assert card.fs.read_binary("2FE2") == encode_iccid("89860000000000000001")
    calibration = card.fs.ef(CALIBRATION_PATH)
    assert calibration.size == CALIBRATION_SIZE == 32
    assert not calibration.read_only
    params = card.fs.read_binary("7F50/6F51")
    assert int.from_bytes(params[0:4], "big") == 100_000  # 1000 CNY balance cap, in fen
    assert int.from_bytes(params[4:8], "big") == 50_000
    assert int.from_bytes(params[8:12], "big") == 50_000
    assert params[12] == 5
    # EF DIR record 1: application template with the wallet AID (TS 102 221 §13.1)
    record = card.fs.ef("2F00").record(1)
    assert record[:4] == bytes((0x61, 18, 0x4F, 8))
    assert record[4:12] == WALLET_AID


def test_wallet_selected_by_aid_and_calibration_written() -> None:
    """SELECT by the wallet AID, then UPDATE/READ BINARY on the calibration EF."""
    card = VirtualCard(PYSIM_ICCID)
    assert send(card, f"00A4040C08{WALLET_AID.hex()}")[1] == 0x9000
    assert card.files.current_application is card.fs.find("7F50")
    assert send(card, "00A4000C026F60")[1] == 0x9000
    assert send(card, "00D6000004DEADBEEF")[1] == 0x9000
    assert send(card, "00B0000020") == (
        bytes.fromhex("DEADBEEF") + b"\xff" * 28,
        0x9000,
    )


def test_cards_do_not_share_state() -> None:
    """Each card has its own copy of the profile; DEFAULT_PROFILE is never modified."""
    before = copy.deepcopy(DEFAULT_PROFILE)
    one, two = VirtualCard("1"), VirtualCard("2")
    one.fs.write_binary(CALIBRATION_PATH, b"\x01")
    assert two.fs.read_binary(CALIBRATION_PATH)[0] == 0xFF
    assert two.fs.read_binary("2FE2") == encode_iccid("2")
    assert before == DEFAULT_PROFILE


def test_power_cycle_and_reset_select_the_mf() -> None:
    """Power off mutes the card (6F00); power on and reset select the MF again."""
    card = VirtualCard(PYSIM_ICCID)
    send(card, "00A4000C022FE2")
    card.power_off()
    assert not card.powered
    assert send(card, "00B000000A") == (b"", 0x6F00)
    card.power_on()
    assert card.powered
    assert send(card, "00B000000A")[1] == 0x6986  # no current EF after power on
    send(card, "00A4000C022FE2")
    card.reset()
    assert send(card, "00B000000A")[1] == 0x6986
    card.fs.write_binary(CALIBRATION_PATH, b"\x07")
    card.power_off()
    card.power_on()
    assert card.fs.read_binary(CALIBRATION_PATH)[0] == 7  # contents survive power cycles


def test_custom_profile_gets_an_ef_iccid() -> None:
    """A profile without EF ICCID gets one; the constructor's ICCID is written to it."""
    card = VirtualCard(PYSIM_ICCID, profile={"files": {"6F01": {"type": "transparent"}}})
    assert card.fs.read_binary("2FE2") == PYSIM_ICCID_CONTENT
    assert send(card, "00A4000C026F01")[1] == 0x9000


def test_custom_profile_with_bad_ef_iccid_is_refused() -> None:
    """EF ICCID must be a 10-byte transparent EF; anything else is a ProfileError."""
    with pytest.raises(ProfileError):
        VirtualCard("1", profile={"files": {"2FE2": {"type": "transparent", "size": 4}}})
    with pytest.raises(ProfileError):
        VirtualCard("1", profile={"files": {"2FE2": {"type": "linear_fixed", "record_length": 10}}})
    with pytest.raises(ProfileError):
        VirtualCard("1", profile={"files": []})
    with pytest.raises(ProfileError):
        VirtualCard("1", profile=[])  # type: ignore[arg-type]


class Balance:
    """A test applet: PBOC-style GET BALANCE (CLA 80, INS 5C) answering 4 bytes."""

    def __init__(self) -> None:
        self.resets = 0

    def commands(self) -> Iterable[tuple[ClassGroup, int]]:
        return [(ClassGroup.PROPRIETARY, 0x5C)]

    def handle(self, command: CommandApdu) -> Response:
        return reply((1234).to_bytes(4, "big"))

    def reset(self) -> None:
        self.resets += 1


def test_registered_applet_is_reached_and_reset() -> None:
    """register() adds an applet beside the file system; power on resets it."""
    card = VirtualCard(PYSIM_ICCID)
    applet = Balance()
    card.register(applet)
    assert send(card, "805C000204") == ((1234).to_bytes(4, "big"), 0x9000)
    assert send(card, "005C000204")[1] == 0x6E00
    card.power_on()
    assert applet.resets == 1
    assert "VirtualCard" in repr(card)
    assert PYSIM_ICCID in repr(card)
