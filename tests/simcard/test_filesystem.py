"""Tests for simcard.filesystem: the UICC file system of ETSI TS 102 221 §8 and §11.1."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simcard.apdu_dispatch import Dispatcher
from simcard.filesystem import (
    DedicatedFile,
    ElementaryFile,
    FileSystem,
    FileSystemError,
    FileSystemHandler,
    ProfileError,
    Structure,
    fcp,
    tlv,
)

AID = bytes.fromhex("A0000000871002FF49FF0589")

PROFILE: dict[str, Any] = {
    "files": {
        "2FE2": {"type": "transparent", "size": 10, "content": "0102", "read_only": True},
        "2F05": {"type": "transparent", "size": 300, "sfi": 5},
        "2F06": {"type": "transparent", "size": 0},
        "7F10": {
            "type": "df",
            "name": "DF.TELECOM",
            "files": {
                "6F3A": {
                    "type": "linear_fixed",
                    "record_length": 4,
                    "record_count": 3,
                    "records": ["11111111", "22"],
                    "sfi": 7,
                },
                "6F3C": {
                    "type": "cyclic",
                    "record_length": 2,
                    "records": ["0101", "0202", "0303"],
                },
                "6F3D": {
                    "type": "linear_fixed",
                    "record_length": 2,
                    "record_count": 2,
                    "read_only": True,
                },
                "5F3A": {"type": "df", "files": {"4F30": {"type": "transparent", "size": 4}}},
            },
        },
        "7F20": {
            "type": "df",
            "aid": AID.hex(),
            "files": {"6F07": {"type": "transparent", "size": 9}},
        },
    }
}


class Card:
    """A dispatcher with just the file system, for APDU-level tests."""

    def __init__(self, profile: dict[str, Any] | None = None) -> None:
        self.fs = FileSystem.from_description(profile or PROFILE)
        self.files = FileSystemHandler(self.fs)
        self.dispatcher = Dispatcher()
        self.dispatcher.register(self.files)

    def send(self, hex_apdu: str) -> tuple[bytes, int]:
        out = self.dispatcher.process(bytes.fromhex(hex_apdu.replace(" ", "")))
        return out[:-2], int.from_bytes(out[-2:], "big")

    def sw(self, hex_apdu: str) -> int:
        return self.send(hex_apdu)[1]

    def select(self, *fids: str) -> int:
        """SELECT by path from the MF, no data returned."""
        path = "".join(fids)
        return self.sw(f"00A4080C{len(path) // 2:02X}{path}")

    def current(self) -> str:
        sel = self.files.selection
        return (sel.ef or sel.df).path_text


def parse_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """A minimal BER-TLV reader for one-byte tags (test helper)."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        tag, length = data[i], data[i + 1]
        i += 2
        if length == 0x81:
            length, i = data[i], i + 1
        out.append((tag, data[i : i + length]))
        i += length
    return out


# --- FCP ---------------------------------------------------------------------------------------


def test_fcp_file_descriptor_vectors() -> None:
    """File descriptors match pySim's TS 102 221 §11.1.1.4.3 vectors."""
    # osmocom/pysim pySim/ts_102_221.py, class FileDescriptor, _test_de_encode:
    # '82024121' transparent working EF, '82054221006e05' linear fixed 110 x 5, '82027821' DF.
    fs = FileSystem.from_description(
        {
            "files": {
                "6F01": {"type": "transparent", "size": 1},
                "6F02": {"type": "linear_fixed", "record_length": 110, "record_count": 5},
                "7F01": {"type": "df"},
            }
        }
    )
    assert tlv(0x82, parse_tlvs(fcp(fs.find("6F01"))[2:])[0][1]).hex() == "82024121"
    assert fcp(fs.find("6F02"))[2:9].hex() == "82054221006e05"
    assert fcp(fs.find("7F01"))[2:6].hex() == "82027821"
    # osmocom/pysim pySim/ts_102_221.py, class LifeCycleStatusInteger: '8a0105' activated.
    assert bytes.fromhex("8a0105") in fcp(fs.find("6F01"))


def test_fcp_of_an_ef_lists_the_ts_102_221_objects_in_order() -> None:
    """An EF's FCP: 82, 83, 8A, 8C, 80 (size), 88 (SFI) inside a '62' template."""
    fs = FileSystem.from_description(PROFILE)
    raw = fcp(fs.find("2F05"))
    assert raw[0] == 0x62
    assert raw[1] == len(raw) - 2
    objects = parse_tlvs(raw[2:])
    assert [t for t, _ in objects] == [0x82, 0x83, 0x8A, 0x8C, 0x80, 0x88]
    values = dict(objects)
    assert values[0x83] == bytes.fromhex("2F05")
    assert values[0x80] == (300).to_bytes(2, "big")
    assert values[0x88] == bytes((5 << 3,))
    assert values[0x8C] == bytes.fromhex("030000")  # read and update always allowed


def test_fcp_marks_read_only_files_never_updatable() -> None:
    """A read-only EF's compact security attributes say 'update: never'."""
    fs = FileSystem.from_description(PROFILE)
    assert dict(parse_tlvs(fcp(fs.find("2FE2"))[2:]))[0x8C] == bytes.fromhex("03FF00")


def test_fcp_of_a_df_has_aid_and_pin_status() -> None:
    """A DF's FCP carries the DF name (84) when it has one and a PIN status template (C6)."""
    fs = FileSystem.from_description(PROFILE)
    objects = parse_tlvs(fcp(fs.find("7F20"))[2:])
    assert [t for t, _ in objects] == [0x82, 0x83, 0x84, 0x8A, 0x8C, 0xC6]
    assert dict(objects)[0x84] == AID
    assert 0x84 not in dict(parse_tlvs(fcp(fs.mf)[2:]))


def test_fcp_of_record_files_gives_length_and_count() -> None:
    """A record EF's descriptor has record length (2 bytes) and count; size is their product."""
    fs = FileSystem.from_description(PROFILE)
    values = dict(parse_tlvs(fcp(fs.find("7F10/6F3C"))[2:]))
    assert values[0x82] == bytes.fromhex("4621000203")
    assert values[0x80] == (6).to_bytes(2, "big")


def test_tlv_long_lengths() -> None:
    """BER-TLV lengths from 128 use the 81/82 long forms."""
    assert tlv(0x80, b"\x00" * 127)[:2] == bytes.fromhex("807F")
    assert tlv(0x80, b"\x00" * 200)[:3] == bytes.fromhex("8081C8")
    assert tlv(0x80, b"\x00" * 300)[:4] == bytes.fromhex("8082012C")


# --- building from data -----------------------------------------------------------------------


def test_description_builds_the_tree() -> None:
    """Files, structures, fill and record padding come from the description."""
    fs = FileSystem.from_description(PROFILE)
    iccid = fs.ef("3F00/2FE2")
    assert iccid.structure is Structure.TRANSPARENT
    assert iccid.data == bytes.fromhex("0102") + b"\xff" * 8
    assert iccid.read_only
    adn = fs.ef("7F10/6F3A")
    assert adn.records == [bytes.fromhex("11111111"), bytes.fromhex("22FFFFFF"), b"\xff" * 4]
    assert adn.sfi == 7
    assert isinstance(fs.find("7F10/5F3A"), DedicatedFile)
    assert fs.find("") is fs.mf
    assert [n.path_text for n in fs.walk()][:3] == ["3F00", "3F00/2FE2", "3F00/2F05"]


def test_toml_description_equals_dict() -> None:
    """The TOML form builds the same tree as the equivalent mapping."""
    fs = FileSystem.from_toml(
        """
        [files.2FE2]
        type = "transparent"
        size = 10
        content = "0102"
        read_only = true

        [files.7F10]
        type = "df"
        [files.7F10.files.6F3A]
        type = "linear_fixed"
        record_length = 4
        record_count = 3
        records = ["11111111", "22"]
        """
    )
    assert fs.read_binary("2FE2") == bytes.fromhex("0102") + b"\xff" * 8
    assert fs.ef("7F10/6F3A").records[1] == bytes.fromhex("22FFFFFF")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"2FE": {"type": "transparent"}}, "not 4 hex digits"),
        ({"GGGG": {"type": "transparent"}}, "not 4 hex digits"),
        ({"3F00": {"type": "transparent"}}, "reserved"),
        ({"7FFF": {"type": "df"}}, "reserved"),
        ({"2fe2": {"type": "transparent"}, "2FE2": {"type": "transparent"}}, "duplicate"),
        ({"2FE2": {"type": "binary"}}, "type must be"),
        ({"2FE2": {"type": "transparent", "sise": 3}}, "unknown key(s) sise"),
        ({"2FE2": {"type": "transparent", "size": 1, "content": "0102"}}, "exceeds size"),
        ({"2FE2": {"type": "transparent", "content": "0G"}}, "not valid hex"),
        ({"2FE2": {"type": "transparent", "size": -1}}, "size must be"),
        ({"2FE2": {"type": "transparent", "sfi": 31}}, "sfi must be"),
        ({"2FE2": {"type": "transparent", "read_only": "yes"}}, "read_only"),
        ({"2FE2": {"type": "transparent", "fill": "0000"}}, "fill must be one byte"),
        ({"6F01": {"type": "linear_fixed", "record_count": 1}}, "record_length is required"),
        ({"6F01": {"type": "linear_fixed", "record_length": 0}}, "record_length must be"),
        ({"6F01": {"type": "linear_fixed", "record_length": 2}}, "record_count must be"),
        (
            {"6F01": {"type": "cyclic", "record_length": 1, "records": ["0102"]}},
            "longer than record_length",
        ),
        (
            {"6F01": {"type": "linear_fixed", "record_length": 1, "records": "01"}},
            "records must be a list",
        ),
        (
            {
                "6F01": {
                    "type": "linear_fixed",
                    "record_length": 1,
                    "record_count": 1,
                    "records": ["01", "02"],
                }
            },
            "2 records given",
        ),
        (
            {"6F01": {"type": "transparent", "sfi": 2}, "6F02": {"type": "transparent", "sfi": 2}},
            "duplicate SFI",
        ),
        ({"7F10": {"type": "df", "aid": ""}}, "aid must be 1 to 16 bytes"),
        ({"7F10": {"type": "df", "files": {"7F10": {"type": "df"}}}}, "same file identifier"),
        ({"7F10": {"type": "df", "files": []}}, "files must be a table"),
        ({"7F10": "df"}, "expected a table"),
        ({"7F10": {"type": "df", "name": 5}}, "name must be a string"),
    ],
)
def test_bad_descriptions_are_refused(files: dict[str, Any], message: str) -> None:
    """Every malformed description raises ProfileError naming the problem."""
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FileSystem.from_description({"files": files})


def test_bad_description_names_the_path() -> None:
    """The error names the file's full path."""
    with pytest.raises(ProfileError, match=r"3F00/7F10/6F3A: record_length"):
        FileSystem.from_description(
            {"files": {"7F10": {"type": "df", "files": {"6F3A": {"type": "cyclic"}}}}}
        )


def test_bad_top_level_and_toml() -> None:
    """A non-table profile, unknown top-level keys and broken TOML are ProfileErrors."""
    with pytest.raises(ProfileError):
        FileSystem.from_description([])  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match="unknown key"):
        FileSystem.from_description({"filez": {}})
    with pytest.raises(ProfileError, match="not valid TOML"):
        FileSystem.from_toml("[files.2FE2\n")


def test_direct_access_errors() -> None:
    """find/ef/read_binary/write_binary refuse missing files and misfits."""
    fs = FileSystem.from_description(PROFILE)
    with pytest.raises(FileSystemError):
        fs.find("7F10/0000")
    with pytest.raises(FileSystemError):
        fs.find("2FE2/0001")
    with pytest.raises(FileSystemError):
        fs.ef("7F10")
    with pytest.raises(FileSystemError):
        fs.read_binary("7F10/6F3A")
    with pytest.raises(FileSystemError):
        fs.write_binary("7F10/6F3A", b"\x00")
    with pytest.raises(FileSystemError):
        fs.write_binary("2FE2", b"\x00" * 11)
    with pytest.raises(FileSystemError):
        fs.find("3F00/XYZ")
    fs.write_binary("2FE2", b"\xaa", offset=9)  # personalisation ignores read-only
    assert fs.read_binary([0x2FE2])[-1] == 0xAA


# --- SELECT ------------------------------------------------------------------------------------


def test_select_mf_returns_fcp_via_get_response() -> None:
    """SELECT MF with P2 04 (case 3) answers 61XX; GET RESPONSE gives the MF's FCP."""
    card = Card()
    data, sw = card.send("00A40004023F00")
    assert data == b""
    assert sw >> 8 == 0x61
    data, sw = card.send(f"00C00000{sw & 0xFF:02X}")
    assert sw == 0x9000
    assert data == fcp(card.fs.mf)
    assert dict(parse_tlvs(data[2:]))[0x83] == bytes.fromhex("3F00")


def test_select_with_le_returns_fcp_directly() -> None:
    """SELECT with Le (case 4) answers the FCP at once."""
    card = Card()
    data, sw = card.send("00A40004022FE200")
    assert sw == 0x9000
    assert data == fcp(card.fs.find("2FE2"))


def test_select_by_fid_search_order() -> None:
    """TS 102 221 §8.4.1: children, parent, siblings of the current DF, itself, the MF."""
    card = Card()
    assert card.sw("00A4000C027F10") == 0x9000
    assert card.sw("00A4000C026F3A") == 0x9000  # child of the current DF
    assert card.current() == "3F00/7F10/6F3A"
    assert card.sw("00A4000C025F3A") == 0x9000  # child DF
    assert card.sw("00A4000C027F10") == 0x9000  # parent of the current DF
    assert card.sw("00A4000C025F3A") == 0x9000
    assert card.sw("00A4000C026F3C") == 0x9000  # child of the parent
    assert card.current() == "3F00/7F10/6F3C"
    assert card.sw("00A4000C025F3A") == 0x9000
    assert card.sw("00A4000C027F20") == 0x6A82  # not reachable from 5F3A by FID
    assert card.sw("00A4000C022FE2") == 0x6A82
    assert card.current() == "3F00/7F10/5F3A"  # a failed SELECT changes nothing
    assert card.sw("00A4000C025F3A") == 0x9000  # the current DF itself
    assert card.sw("00A4000C026F3C") == 0x9000  # child of the parent
    assert card.sw("00A4000C027F10") == 0x9000  # the current DF itself
    assert card.sw("00A4000C022FE2") == 0x9000  # sibling of 7F10 (child of its parent)
    assert card.sw("00A4000C027F20") == 0x9000  # sibling DF
    assert card.sw("00A4000C023F00") == 0x9000
    assert card.current() == "3F00"


def test_select_child_parent_and_paths() -> None:
    """P1 01 child DF, 03 parent, 08 path from MF, 09 path from the current DF."""
    card = Card()
    assert card.sw("00A4010C027F10") == 0x9000
    assert card.sw("00A4010C026F3A") == 0x6A82  # an EF is not a child DF
    assert card.sw("00A4090C045F3A4F30") == 0x9000
    assert card.current() == "3F00/7F10/5F3A/4F30"
    assert card.sw("00A4030C") == 0x9000  # parent of the current DF 5F3A
    assert card.current() == "3F00/7F10"
    assert card.sw("00A4030C") == 0x9000
    assert card.current() == "3F00"
    assert card.sw("00A4030C") == 0x6A82  # the MF has no parent
    assert card.sw("00A4080C047F106F3C") == 0x9000
    assert card.sw("00A4080C063F007F106F3A") == 0x9000  # leading MF tolerated
    assert card.sw("00A4080C047F109999") == 0x6A82
    assert card.sw("00A4080C062FE21234ABCD") == 0x6A82  # through an EF
    assert card.sw("00A4080C023F00") == 0x9000
    assert card.current() == "3F00"


def test_select_by_aid_and_current_application() -> None:
    """P1 04 selects a DF by full or right-truncated DF name; 7FFF is then that DF."""
    card = Card()
    assert card.files.current_application is None
    assert card.sw(f"00A4040C{len(AID):02X}{AID.hex()}") == 0x9000
    assert card.current() == "3F00/7F20"
    assert card.sw("00A4000C026F07") == 0x9000
    assert card.files.current_application is card.fs.find("7F20")
    card.select("7F10")
    assert card.sw("00A4040C05A000000087") == 0x9000  # partial DF name
    assert card.sw("00A4040C05A000000088") == 0x6A82
    assert card.sw("00A4000C027FFF") == 0x9000
    assert card.current() == "3F00/7F20"
    assert card.sw("00A4080C047FFF6F07") == 0x9000
    assert card.current() == "3F00/7F20/6F07"
    card.select("7F10")
    assert card.sw("00A4000C027FFF") == 0x6A82  # no current application


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00A40000023F00", 0x6A86),  # P2 00 (FCI) not in TS 102 221
        ("00A40044023F00", 0x6A86),
        ("00A4000D023F00", 0x6A86),
        ("00A4020C023F00", 0x6A86),  # P1 02 not supported
        ("00A4000C033F0000", 0x6700),
        ("00A4000C", 0x6700),
        ("00A4030C023F00", 0x6700),
        ("00A4080C033F0000", 0x6700),
        ("00A4040C11" + "00" * 17, 0x6700),
    ],
)
def test_select_parameter_errors(apdu: str, sw: int) -> None:
    """Unsupported P1/P2 give 6A86; data of the wrong length 6700."""
    assert Card().sw(apdu) == sw


# --- STATUS ------------------------------------------------------------------------------------


def test_status() -> None:
    """STATUS gives the FCP of the current DF (P2 00), the DF name (01) or nothing (0C)."""
    card = Card()
    card.select("7F20", "6F07")
    assert card.send("80F2000000")[0] == fcp(card.fs.find("7F20"))
    assert card.send("80F2000100") == (tlv(0x84, AID), 0x9000)
    assert card.send("80F2000C") == (b"", 0x9000)
    assert card.sw("80F20003") == 0x6A86
    assert card.sw("80F20300") == 0x6A86
    assert card.sw("80F2000001AA") == 0x6700
    card.select("7F10")
    assert card.send("80F2000100") == (b"", 0x9000)
    assert card.sw("00F20000") == 0x6E00  # STATUS is a TS 102 221 class command


# --- BINARY ------------------------------------------------------------------------------------


def test_read_binary_offsets_and_le() -> None:
    """READ BINARY honours the offset; Le 00 reads to the end; too large an Le gives 6282."""
    card = Card()
    card.fs.write_binary("2F05", bytes(range(256)) + bytes(44))
    card.select("2F05")
    assert card.send("00B0000004") == (bytes(range(4)), 0x9000)
    assert card.send("00B0000102") == (bytes((1, 2)), 0x9000)
    assert card.send("00B0000000") == (bytes(range(256)), 0x9000)  # 256 of 300
    assert card.send("00B0010000") == (bytes(44), 0x9000)  # offset 256: the last 44
    assert card.send("00B0012A10") == (bytes(2), 0x6282)  # 16 asked, 2 left
    assert card.sw("00B0012C01") == 0x6B00  # offset 300 = size
    assert card.sw("00B07FFF01") == 0x6B00


def test_read_binary_errors() -> None:
    """No current EF 6986; record EF 6981; no Le 6700."""
    card = Card()
    assert card.sw("00B0000001") == 0x6986
    card.select("7F10", "6F3A")
    assert card.sw("00B0000001") == 0x6981
    card.select("2FE2")
    assert card.sw("00B00000") == 0x6700
    card.select("2F06")
    assert card.sw("00B0000001") == 0x6B00  # empty EF


def test_read_binary_by_sfi_selects_the_ef() -> None:
    """P1 b8 = 1: the SFI names the EF in the current DF, which becomes the current EF."""
    card = Card()
    card.fs.write_binary("2F05", b"\x42" * 300)
    assert card.send("00B0850301") == (b"\x42", 0x9000)
    assert card.current() == "3F00/2F05"
    assert card.sw("00B0860001") == 0x6A82  # no EF with SFI 6 in the MF
    assert card.sw("00B0A50001") == 0x6A86  # b7-b6 must be 0
    card.select("7F10")
    assert card.sw("00B0870001") == 0x6981  # SFI 7 is a record EF


def test_update_binary() -> None:
    """UPDATE BINARY writes at the offset; read-only 6982; past the end 6700 / 6B00."""
    card = Card()
    card.select("2F05")
    assert card.sw("00D6012A02ABCD") == 0x9000
    assert card.send("00B0012A02") == (bytes.fromhex("ABCD"), 0x9000)
    assert card.sw("00D6012B02ABCD") == 0x6700
    assert card.sw("00D6012C01AB") == 0x6B00
    assert card.sw("00D60000") == 0x6700
    assert card.sw("00D6850001EE") == 0x9000  # by SFI
    assert card.fs.read_binary("2F05")[0] == 0xEE
    card.select("2FE2")
    assert card.sw("00D6000001AA") == 0x6982
    card.select("7F10", "6F3A")
    assert card.sw("00D6000001AA") == 0x6981


@given(offset=st.integers(0, 299), data=st.binary(min_size=1, max_size=255))
def test_update_then_read_binary_round_trip(offset: int, data: bytes) -> None:
    """What UPDATE BINARY writes inside the EF, READ BINARY returns."""
    data = data[: 300 - offset]
    card = Card()
    card.select("2F05")
    p1p2 = f"{offset:04X}"
    assert card.sw(f"00D6{p1p2}{len(data):02X}{data.hex()}") == 0x9000
    assert card.send(f"00B0{p1p2}{len(data) & 0xFF:02X}") == (data, 0x9000)


# --- RECORDS ---------------------------------------------------------------------------------


def test_read_record_absolute_and_le() -> None:
    """Absolute mode reads record N; Le 00 or the record length; else 6C + length."""
    card = Card()
    card.select("7F10", "6F3A")
    assert card.send("00B2010404") == (bytes.fromhex("11111111"), 0x9000)
    assert card.send("00B2020400") == (bytes.fromhex("22FFFFFF"), 0x9000)
    assert card.sw("00B2010402") == 0x6C04
    assert card.sw("00B2040404") == 0x6A83
    assert card.sw("00B2000404") == 0x6A83  # current record: none yet
    assert card.sw("00B2FF0404") == 0x6A86
    assert card.sw("00B20104") == 0x6700


def test_read_record_next_previous_linear() -> None:
    """Linear fixed: next from none is record 1, previous from none the last; no wrap."""
    card = Card()
    card.select("7F10", "6F3A")
    records = card.fs.ef("7F10/6F3A").records
    assert card.send("00B2000204") == (records[0], 0x9000)
    assert card.send("00B2000204") == (records[1], 0x9000)
    assert card.send("00B2000404") == (records[1], 0x9000)  # current record
    assert card.send("00B2000204") == (records[2], 0x9000)
    assert card.sw("00B2000204") == 0x6A83  # past the last: pointer unchanged
    assert card.send("00B2000304") == (records[1], 0x9000)
    assert card.send("00B2000304") == (records[0], 0x9000)
    assert card.sw("00B2000304") == 0x6A83
    assert card.sw("00B2010204") == 0x6A86  # P1 must be 00 in next mode
    card.select("7F10", "6F3A")  # selecting resets the pointer
    assert card.send("00B2000304") == (records[2], 0x9000)


def test_read_record_cyclic_wraps() -> None:
    """Cyclic: next wraps from the last record to the first, previous the other way."""
    card = Card()
    card.select("7F10", "6F3C")
    got = [card.send("00B2000202")[0].hex() for _ in range(4)]
    assert got == ["0101", "0202", "0303", "0101"]
    got = [card.send("00B2000302")[0].hex() for _ in range(2)]
    assert got == ["0303", "0202"]


def test_read_record_errors() -> None:
    """Transparent EF 6981; no current EF 6986; bad mode 6A86; SFI lookups."""
    card = Card()
    assert card.sw("00B2010404") == 0x6986
    card.select("2FE2")
    assert card.sw("00B2010404") == 0x6981
    assert card.sw("00B2010504") == 0x6A86  # mode 5
    assert card.sw("00B201FC04") == 0x6A86  # SFI 1F reserved
    card.select("7F10")
    assert card.send("00B2013C04") == (bytes.fromhex("11111111"), 0x9000)  # SFI 7
    assert card.current() == "3F00/7F10/6F3A"
    assert card.sw("00B2014C04") == 0x6A82  # SFI 9


def test_update_record_linear() -> None:
    """UPDATE RECORD writes a whole record; wrong length 6700; read-only 6982."""
    card = Card()
    card.select("7F10", "6F3A")
    assert card.sw("00DC030404CAFEBABE") == 0x9000
    assert card.send("00B2030404") == (bytes.fromhex("CAFEBABE"), 0x9000)
    assert card.sw("00DC030403CAFEBA") == 0x6700
    assert card.sw("00DC000204AAAAAAAA") == 0x9000  # next: record 1
    assert card.sw("00DC000404BBBBBBBB") == 0x9000  # current: record 1
    assert card.fs.ef("7F10/6F3A").records[0] == b"\xbb" * 4
    assert card.sw("00DC040404BBBBBBBB") == 0x6A83
    card.select("7F10", "6F3D")
    assert card.sw("00DC01040200FF") == 0x6982
    card.select("2FE2")
    assert card.sw("00DC01040400000000") == 0x6981


def test_update_record_cyclic() -> None:
    """Cyclic: previous mode only; the oldest record is overwritten and becomes record 1."""
    card = Card()
    card.select("7F10", "6F3C")
    assert card.sw("00DC0004020909") == 0x6A86
    assert card.sw("00DC0003020909") == 0x9000
    assert card.fs.ef("7F10/6F3C").records == [b"\x09\x09", b"\x01\x01", b"\x02\x02"]
    assert card.send("00B2000402") == (b"\x09\x09", 0x9000)  # pointer on record 1


@given(
    number=st.integers(1, 3),
    data=st.binary(min_size=4, max_size=4),
)
def test_update_then_read_record_round_trip(number: int, data: bytes) -> None:
    """What UPDATE RECORD writes in absolute mode, READ RECORD returns."""
    card = Card()
    card.select("7F10", "6F3A")
    assert card.sw(f"00DC{number:02X}0404{data.hex()}") == 0x9000
    assert card.send(f"00B2{number:02X}0404") == (data, 0x9000)


# --- robustness ------------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0xA4, 0xB0, 0xD6, 0xB2, 0xDC, 0xF2]),
            st.binary(min_size=2, max_size=2),
            st.binary(max_size=8),
            st.one_of(st.none(), st.integers(0, 255)),
        ),
        max_size=12,
    )
)
def test_file_commands_never_fault(commands: list[tuple[int, bytes, bytes, int | None]]) -> None:
    """Arbitrary file commands get status words, never a 6F00 internal fault."""
    card = Card()
    for ins, p1p2, data, le in commands:
        cla = 0x80 if ins == 0xF2 else 0x00
        apdu = bytes((cla, ins)) + p1p2
        if data:
            apdu += bytes((len(data),)) + data
        if le is not None:
            apdu += bytes((le,))
        out = card.dispatcher.process(apdu)
        assert out[-2:] != b"\x6f\x00", card.dispatcher.last_fault


def test_handler_reset_selects_mf() -> None:
    """reset() selects the MF and forgets the current EF and record pointer."""
    card = Card()
    card.select("7F10", "6F3A")
    card.files.reset()
    sel = card.files.selection
    assert sel.df is card.fs.mf
    assert sel.ef is None
    assert sel.record is None


def test_reprs_name_the_path() -> None:
    """Files show their path and name in reprs."""
    fs = FileSystem.from_description(PROFILE)
    assert "3F00/7F10" in repr(fs.find("7F10"))
    ef = fs.find("7F10/6F3A")
    assert isinstance(ef, ElementaryFile)
    assert "3F00/7F10/6F3A" in repr(ef)
    assert "linear_fixed" in repr(ef)
