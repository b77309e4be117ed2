"""Tests for ota.commands: TS 102 221 file commands, GlobalPlatform card content management
builders and the TS 101 220 TAR constants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.apdu import CommandApdu
from ota.commands import (
    TAR_RAM_ISD,
    TAR_RFM_ADF,
    TAR_RFM_SIM,
    TAR_RFM_UICC,
    CommandError,
    Privilege,
    RecordMode,
    SelectReturn,
    delete,
    get_response,
    install_for_install,
    install_for_load,
    install_parameters,
    load_blocks,
    privileges_bytes,
    read_binary,
    read_record,
    select_by_aid,
    select_by_fid,
    select_by_path,
    update_binary,
    update_record,
)
from ota.remote_apdu import build_compact, split_compact


def h(text: str) -> bytes:
    """Hex with spaces allowed."""
    return bytes.fromhex(text.replace(" ", ""))


def test_tar_constants() -> None:
    """The RAM and RFM TARs of TS 101 220 Annex D."""
    tars = (TAR_RAM_ISD, TAR_RFM_UICC, TAR_RFM_ADF, TAR_RFM_SIM)
    assert [t.hex().upper() for t in tars] == ["000000", "B00000", "B00001", "B00010"]


# -- file commands ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("apdu", "wire"),
    [
        (select_by_fid(0x3F00), "00A40004023F0000"),  # pySim test_apdu.script, case 4
        (select_by_fid(0x2FE2, returns=SelectReturn.NOTHING), "00A4000C022FE2"),
        (select_by_path([0x7FFF, 0x6F07]), "00A40804047FFF6F0700"),
        (select_by_path([0x6F07], from_mf=False), "00A40904026F0700"),
        (select_by_aid(h("A0000000871002")), "00A4040407A000000087100200"),
        (read_binary(), "00B0000000"),
        (read_binary(0x0102, 10), "00B001020A"),
        (read_binary(4, 2, sfi=0x07), "00B0870402"),
        (update_binary(h("0102"), 0x10), "00D60010020102"),
        (update_binary(h("AA"), 1, sfi=3), "00D6830101AA"),
        (read_record(1, 0x1C), "00B201041C"),
        (read_record(0, 0x1C, mode=RecordMode.NEXT, sfi=2), "00B200121C"),
        (update_record(2, h("FFFF")), "00DC020402FFFF"),
        (update_record(0, h("01"), mode=RecordMode.PREVIOUS), "00DC00030101"),
        (get_response(), "00C0000000"),
        (get_response(0x20, cla=0xA0), "A0C0000020"),
    ],
)
def test_file_command_encodings(apdu: CommandApdu, wire: str) -> None:
    """Each builder gives the TS 102 221 §11.1 encoding."""
    assert apdu.to_bytes() == h(wire)


@pytest.mark.parametrize(
    "call",
    [
        lambda: select_by_fid(0x10000),
        lambda: select_by_path([]),
        lambda: select_by_path([0x3F00, 0x7FFF]),
        lambda: select_by_aid(h("A0000000")),
        lambda: read_binary(0x8000),
        lambda: read_binary(0, 257),
        lambda: read_binary(256, 1, sfi=1),
        lambda: read_binary(0, 1, sfi=31),
        lambda: update_binary(b""),
        lambda: update_binary(bytes(256)),
        lambda: read_record(256, 4),
        lambda: read_record(1, 4, sfi=0),
        lambda: update_record(1, h("00"), mode=RecordMode.NEXT),
        lambda: get_response(0),
    ],
)
def test_file_command_arguments_checked(call: object) -> None:
    """Out-of-range arguments raise CommandError rather than build a wrong APDU."""
    assert callable(call)
    with pytest.raises(CommandError):
        call()


# -- GlobalPlatform ---------------------------------------------------------------------------


def test_install_parameters_pysim() -> None:
    """Install parameters with memory quotas and toolkit parameters match osmocom/pysim
    tests/unittests/test_globalplatform.py (Install_param_Test), and the minimal one is C9 00."""
    params = install_parameters(
        non_volatile_quota=256,
        volatile_quota=256,
        toolkit=h("010001001505000000000000000000000000"),
    )
    assert params == h("c900ef1cc8020100c7020100ca12010001001505000000000000000000000000")
    assert install_parameters() == h("c900")


def test_install_parameters_large_quota_and_app_data() -> None:
    """Quotas above 65,535 take 4 bytes; application parameters go inside C9."""
    assert install_parameters(h("0102"), volatile_quota=0x10000) == h("c9020102ef06c70400010000")


def test_install_for_load_layout() -> None:
    """INSTALL [for load]: 80 E6 02 00, LVs of load file AID, SD AID, hash, parameters,
    token, Le 00 (the layout of osmocom/pysim pySim/global_platform/__init__.py,
    do_install_for_load, and GP 2.3 §11.5.2.3.1)."""
    apdu = install_for_load(h("D07002CA44"), security_domain_aid=h("A000000151000000"))
    assert apdu.to_bytes() == h("80E6020012 05D07002CA44 08A000000151000000 00 00 00 00")
    with pytest.raises(CommandError, match="hash"):
        install_for_load(h("D07002CA44"), load_token=b"\x01")


# Shadytel/sim-tools shadysim/shadysim.py, install_app(): the INSTALL [for install and make
# selectable] it sends over SMS-PP to the RAM TAR, followed by GET RESPONSE. The expected
# string is assembled here exactly as that function does.
def _shadysim_install(load_aid: str, module: str, instance: str, toolkit: str) -> str:
    parameters = "c802" + "0000" + "c702" + "0000" + toolkit
    parameters = "ef" + f"{len(parameters) // 2:02x}" + parameters + "c9" + "00"
    data = (
        f"{len(load_aid) // 2:02x}"
        + load_aid
        + f"{len(module) // 2:02x}"
        + module
        + f"{len(instance) // 2:02x}"
        + instance
        + "0100"
        + f"{len(parameters) // 2:02x}"
        + parameters
        + "00"
    )
    return "80e60c00" + f"{len(data) // 2:02x}" + data + "00c0000000"


def test_install_for_install_shadysim() -> None:
    """The INSTALL of shadysim (with toolkit parameters: access domain FF, priority 01,
    no timers, 16-char menu text, one menu entry, TAR C00001) is reproduced byte for byte."""
    toolkit = "01ff" + "01" + "00" + "10" + "01" + "0000" + "0000" + "03" + "c00001"
    toolkit = "ca" + f"{len(toolkit) // 2:02x}" + toolkit
    expected = _shadysim_install("D07002CA44", "D07002CA44900101", "D07002CA44900101", toolkit)
    params = h("ef" + f"{(8 + len(toolkit) // 2):02x}" + "c8020000c7020000" + toolkit + "c900")
    apdu = install_for_install(
        h("D07002CA44"), h("D07002CA44900101"), h("D07002CA44900101"), parameters=params
    )
    assert build_compact([apdu, get_response()]) == h(expected)
    # the same parameters in GP's order, as install_parameters() writes them
    gp_order = install_parameters(non_volatile_quota=0, volatile_quota=0, toolkit=h(toolkit)[2:])
    assert gp_order == h("c900") + params[:-2]


def test_install_for_install_fields() -> None:
    """P1 0C (install and make selectable) or 04, privileges of 1 or 3 bytes, C9 required."""
    lf, mod, app = h("A0000001510000"), h("A000000151000001"), h("A000000151000001")
    apdu = install_for_install(lf, mod, app, privileges=privileges_bytes(Privilege.SECURITY_DOMAIN))
    assert apdu.p1 == 0x0C
    assert apdu.le == 256
    assert apdu.data == (h("07A0000001510000 08A000000151000001 08A000000151000001 0180 02C900 00"))
    assert install_for_install(lf, mod, app, make_selectable=False).p1 == 0x04
    three = privileges_bytes(Privilege.CARD_RESET, extended=h("0000"))
    assert install_for_install(lf, mod, app, privileges=three).data[26:30] == h("03040000")
    with pytest.raises(CommandError):
        install_for_install(lf, mod, app, privileges=h("0000"))
    with pytest.raises(CommandError, match="C9"):
        install_for_install(lf, mod, app, parameters=h("ef00"))
    with pytest.raises(CommandError):
        install_for_install(lf, mod, app, parameters=h("c905"))


def test_load_blocks_shadysim() -> None:
    """LOAD in 108-byte blocks (P1 00 then 80 on the last, P2 the block number, the load
    file inside C4 82 len) as Shadytel/sim-tools shadysim.py load_aid_raw() builds them."""
    load_file = bytes(range(256)) + bytes(range(44))  # 300 bytes
    stream = "c4" + "82012c" + load_file.hex()
    expected = []
    block = 0
    while stream:  # shadysim's loop, on hex digits (0xd8 digits = 108 bytes)
        if len(stream) > 0xD8:
            expected.append("80e800" + f"{block:02x}" + "6c" + stream[:0xD8])
            stream = stream[0xD8:]
            block += 1
        else:
            expected.append("80e880" + f"{block:02x}" + f"{len(stream) // 2:02x}" + stream)
            stream = ""
    blocks = load_blocks(load_file, block_size=108)
    assert [build_compact([b]) for b in blocks] == [h(e) for e in expected]
    assert [b.p2 for b in blocks] == [0, 1, 2]
    assert all(b.le == 256 for b in blocks)


@given(st.binary(min_size=1, max_size=3000), st.integers(1, 255))
def test_load_blocks_reassemble(load_file: bytes, size: int) -> None:
    """Blocks concatenate to C4 <length> <file>; only the last has P1 80; P2 counts up."""
    try:
        blocks = load_blocks(load_file, block_size=size)
    except CommandError:
        assert (len(load_file) + 4) / size > 256
        return
    joined = b"".join(b.data for b in blocks)
    assert joined.endswith(load_file)
    assert joined[0] == 0xC4
    assert [b.p2 for b in blocks] == list(range(len(blocks)))
    assert [b.p1 for b in blocks] == [0x00] * (len(blocks) - 1) + [0x80]
    assert all(1 <= len(b.data) <= size for b in blocks)


def test_load_blocks_arguments() -> None:
    """Empty files, bad block sizes and more than 256 blocks are refused."""
    for call in (
        lambda: load_blocks(b""),
        lambda: load_blocks(b"\x01", block_size=0),
        lambda: load_blocks(b"\x01", block_size=256),
        lambda: load_blocks(bytes(300), block_size=1),
    ):
        with pytest.raises(CommandError):
            call()


def test_delete_layout() -> None:
    """DELETE: 80 E4 00 P2 Lc 4F len AID 00 (osmocom/pysim pySim/global_platform/__init__.py
    do_delete_card_content; GP 2.3 §11.2), P2 80 with related objects."""
    assert delete(h("D07002CA44")).to_bytes() == h("80E40000074F05D07002CA4400")
    assert delete(h("D07002CA44"), related=True).p2 == 0x80
    with pytest.raises(CommandError):
        delete(bytes(17))


def test_ram_script_survives_compact_round_trip() -> None:
    """A whole RAM script (delete, install for load, load, install) splits back into the
    same commands, with the GP Le dropped as the compact format requires."""
    script = [
        delete(h("D07002CA44"), related=True),
        install_for_load(h("D07002CA44")),
        *load_blocks(bytes(400), block_size=200),
        install_for_install(h("D07002CA44"), h("D07002CA4401"), h("D07002CA4401")),
    ]
    back = split_compact(build_compact(script))
    assert back == [CommandApdu(a.cla, a.ins, a.p1, a.p2, a.data) for a in script]
