"""Builders for the C-APDUs of remote file and application management, and the TARs that
address them.

File commands (ETSI TS 102 221 §11.1, sent to an RFM TAR, TS 102 226 §7):
SELECT by file identifier, by path and by AID (§11.1.1), READ BINARY / UPDATE BINARY
(§11.1.3, §11.1.4), READ RECORD / UPDATE RECORD (§11.1.5, §11.1.6), GET RESPONSE (§11.1.19).
Class byte ``00`` (TS 102 221 Table 10.3, basic logical channel) unless given.

Card content management (GlobalPlatform Card Specification v2.3, sent to the RAM TAR of the
Issuer Security Domain, TS 102 226 §8), class byte ``80``:

* INSTALL [for load] (§11.5.2.3.1): P1 ``02``; data ``len LoadFileAID | len SD-AID |
  len LoadFileDataBlockHash | len LoadParameters | len LoadToken``.
* LOAD (§11.6): the Load File Data Block TLV ``C4 <BER length> <load file>`` (Table 11-58)
  cut into blocks; P1 ``00`` for more blocks, ``80`` for the last; P2 the block number from
  0 (Table 11-56).
* INSTALL [for install and make selectable] (§11.5.2.3.2): P1 ``0C`` (``04`` for install
  | ``08`` for make selectable); data ``len LoadFileAID | len ModuleAID | len
  ApplicationAID | len Privileges | len InstallParameters | len InstallToken``. The install
  parameters (§11.5.2.3.7, Table 11-49) start with the mandatory application specific
  parameters ``C9``, optionally followed by system specific parameters ``EF`` (memory quotas
  ``C8``/``C7``, UICC toolkit parameters ``CA`` of TS 102 226 §8.2.1.3.2.1):
  :func:`install_parameters`.
* DELETE (§11.2): data ``4F len AID``; P2 ``80`` also deletes related objects.

All GP commands are built case 4 with Le ``00`` (256), as GP defines them; the compact
remote format drops that Le on the wire (see :mod:`ota.remote_apdu`), so a script that
needs the response data of the last command follows it with :func:`get_response`.

TARs (ETSI TS 101 220 Annex D; TS 102 226 §7.2, §7.3, §8): see :data:`TAR_RAM_ISD` and the
``TAR_RFM_*`` constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, IntFlag
from typing import Final

from ota.apdu import CommandApdu

__all__ = [
    "CLA_GP",
    "CLA_ISO",
    "TAR_RAM_ISD",
    "TAR_RFM_ADF",
    "TAR_RFM_SIM",
    "TAR_RFM_UICC",
    "CommandError",
    "Privilege",
    "RecordMode",
    "SelectReturn",
    "delete",
    "get_response",
    "install_for_install",
    "install_for_load",
    "install_parameters",
    "load_blocks",
    "privileges_bytes",
    "read_binary",
    "read_record",
    "select_by_aid",
    "select_by_fid",
    "select_by_path",
    "update_binary",
    "update_record",
]

CLA_ISO: Final = 0x00
CLA_GP: Final = 0x80

# ETSI TS 101 220 Annex D, "Coding of TAR values":
TAR_RAM_ISD: Final = bytes.fromhex("000000")  # Issuer Security Domain (RAM, TS 102 226 §8)
TAR_RFM_UICC: Final = bytes.fromhex("B00000")  # RFM of the UICC shared file system (§7.2)
TAR_RFM_ADF: Final = bytes.fromhex("B00001")  # ADF RFM, e.g. ADF.USIM (TS 102 226 §7.3)
TAR_RFM_SIM: Final = bytes.fromhex("B00010")  # RFM of the SIM file system (3GPP TS 31.116)
# Cards may be personalised with other TARs inside the allocated ranges (osmocom/pysim's
# tests/unittests/test_ota.py addresses a sysmoISIM-SJA5 USIM RFM at B00011): the campaign
# configuration, not this module, decides the TAR of a given card.

_INS_SELECT: Final = 0xA4
_INS_READ_BINARY: Final = 0xB0
_INS_UPDATE_BINARY: Final = 0xD6
_INS_READ_RECORD: Final = 0xB2
_INS_UPDATE_RECORD: Final = 0xDC
_INS_GET_RESPONSE: Final = 0xC0
_INS_DELETE: Final = 0xE4
_INS_INSTALL: Final = 0xE6
_INS_LOAD: Final = 0xE8

_TAG_AID: Final = 0x4F
_TAG_LOAD_FILE_DATA_BLOCK: Final = 0xC4
_TAG_APP_SPECIFIC: Final = 0xC9
_TAG_SYSTEM_SPECIFIC: Final = 0xEF
_TAG_VOLATILE_QUOTA: Final = 0xC7
_TAG_NON_VOLATILE_QUOTA: Final = 0xC8
_TAG_TOOLKIT: Final = 0xCA

_MAX_SHORT_DATA: Final = 255


class CommandError(ValueError):
    """A command that cannot be built from the given arguments."""


class SelectReturn(IntEnum):
    """SELECT P2 (TS 102 221 Table 11.2): what the card returns."""

    FCP = 0x04  # return the FCP template (case 4)
    NOTHING = 0x0C  # no data returned (case 3)


class RecordMode(IntEnum):
    """READ/UPDATE RECORD P2 mode (TS 102 221 Table 11.11 / 11.13)."""

    NEXT = 0x02
    PREVIOUS = 0x03
    ABSOLUTE = 0x04  # P1 = record number (absolute or current, P1=00 meaning current)


class Privilege(IntFlag):
    """First privilege byte (GP Card Specification 2.3 §11.1.2, Table 11-7)."""

    NONE = 0x00
    SECURITY_DOMAIN = 0x80
    DAP_VERIFICATION = 0x40
    DELEGATED_MANAGEMENT = 0x20
    CARD_LOCK = 0x10
    CARD_TERMINATE = 0x08
    CARD_RESET = 0x04
    CVM_MANAGEMENT = 0x02
    MANDATED_DAP_VERIFICATION = 0x01


def privileges_bytes(first: Privilege, *, extended: bytes | None = None) -> bytes:
    """Privileges field: one byte, or three with ``extended`` giving bytes 2 and 3."""
    if extended is None:
        return bytes([int(first)])
    if len(extended) != 2:
        raise CommandError("extended privileges are exactly 2 more bytes")
    return bytes([int(first)]) + extended


def _aid(aid: bytes, what: str, *, allow_empty: bool = False) -> bytes:
    if not aid and allow_empty:
        return aid
    if not 5 <= len(aid) <= 16:
        raise CommandError(f"{what} must be 5..16 bytes (ISO/IEC 7816-4), got {len(aid)}")
    return aid


def _lv(value: bytes, what: str) -> bytes:
    if len(value) > 0xFF:
        raise CommandError(f"{what} of {len(value)} bytes does not fit a 1-byte length")
    return bytes([len(value)]) + value


def _data(data: bytes, what: str) -> bytes:
    if not 1 <= len(data) <= _MAX_SHORT_DATA:
        raise CommandError(f"{what} must be 1..{_MAX_SHORT_DATA} bytes, got {len(data)}")
    return data


def _check_byte(value: int, what: str) -> None:
    if not 0 <= value <= 0xFF:
        raise CommandError(f"{what} must be 0..255, got {value}")


def _le(le: int) -> int:
    if not 1 <= le <= 256:
        raise CommandError(f"Le must be 1..256, got {le}")
    return le


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n > 0xFFFFFF:
        raise CommandError(f"a load file of {n} bytes is too large")
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def _top_level_tags(field: bytes) -> list[int]:
    """Tags of a run of single-octet-tag TLVs with 1-byte (or 81 xx) lengths."""
    tags: list[int] = []
    i = 0
    while i < len(field):
        if i + 1 >= len(field):
            raise CommandError("install parameters: truncated TLV")
        length, start = field[i + 1], i + 2
        if length == 0x81 and start < len(field):
            length, start = field[start], start + 1
        elif length >= 0x80:
            raise CommandError("install parameters: unsupported TLV length")
        if start + length > len(field):
            raise CommandError("install parameters: TLV runs past the field")
        tags.append(field[i])
        i = start + length
    return tags


# -- file management (TS 102 221 §11.1) ------------------------------------------------------


def select_by_fid(
    fid: int, *, returns: SelectReturn = SelectReturn.FCP, cla: int = CLA_ISO
) -> CommandApdu:
    """SELECT by file identifier (P1 ``00``): ``00 A4 00 04 02 <fid> [00]``."""
    if not 0 <= fid <= 0xFFFF:
        raise CommandError(f"a file identifier is 2 bytes, got {fid:#x}")
    le = 256 if returns is SelectReturn.FCP else None
    return CommandApdu(cla, _INS_SELECT, 0x00, returns, fid.to_bytes(2, "big"), le)


def select_by_path(
    path: Sequence[int],
    *,
    from_mf: bool = True,
    returns: SelectReturn = SelectReturn.FCP,
    cla: int = CLA_ISO,
) -> CommandApdu:
    """SELECT by path: P1 ``08`` from the MF (the path omits ``3F00``) or ``09`` from the
    current DF (TS 102 221 Table 11.1)."""
    if not path:
        raise CommandError("a path has at least one file identifier")
    if any(not 0 <= fid <= 0xFFFF for fid in path):
        raise CommandError("file identifiers are 2 bytes")
    if from_mf and path[0] == 0x3F00:
        raise CommandError("a path from the MF does not include 3F00 itself")
    data = _data(b"".join(fid.to_bytes(2, "big") for fid in path), "the path")
    le = 256 if returns is SelectReturn.FCP else None
    return CommandApdu(cla, _INS_SELECT, 0x08 if from_mf else 0x09, returns, data, le)


def select_by_aid(
    aid: bytes, *, returns: SelectReturn = SelectReturn.FCP, cla: int = CLA_ISO
) -> CommandApdu:
    """SELECT by DF name (P1 ``04``), first or only occurrence (TS 102 221 Table 11.2)."""
    le = 256 if returns is SelectReturn.FCP else None
    return CommandApdu(cla, _INS_SELECT, 0x04, returns, _aid(aid, "the AID"), le)


def read_binary(
    offset: int = 0, length: int = 256, *, sfi: int | None = None, cla: int = CLA_ISO
) -> CommandApdu:
    """READ BINARY: ``length`` bytes (1..256) from ``offset``; with ``sfi`` the file is
    named by its short identifier and the offset is 0..255 (TS 102 221 §11.1.3)."""
    if sfi is None:
        if not 0 <= offset <= 0x7FFF:
            raise CommandError(f"offset must be 0..32767, got {offset}")
        p1, p2 = offset >> 8, offset & 0xFF
    else:
        if not 1 <= sfi <= 30 or not 0 <= offset <= 0xFF:
            raise CommandError("with an SFI (1..30) the offset is 0..255")
        p1, p2 = 0x80 | sfi, offset
    return CommandApdu(cla, _INS_READ_BINARY, p1, p2, le=_le(length))


def update_binary(
    data: bytes, offset: int = 0, *, sfi: int | None = None, cla: int = CLA_ISO
) -> CommandApdu:
    """UPDATE BINARY: write ``data`` (1..255 bytes) at ``offset`` (TS 102 221 §11.1.4)."""
    if sfi is None:
        if not 0 <= offset <= 0x7FFF:
            raise CommandError(f"offset must be 0..32767, got {offset}")
        p1, p2 = offset >> 8, offset & 0xFF
    else:
        if not 1 <= sfi <= 30 or not 0 <= offset <= 0xFF:
            raise CommandError("with an SFI (1..30) the offset is 0..255")
        p1, p2 = 0x80 | sfi, offset
    return CommandApdu(cla, _INS_UPDATE_BINARY, p1, p2, _data(data, "the data"))


def read_record(
    record: int,
    length: int,
    *,
    mode: RecordMode = RecordMode.ABSOLUTE,
    sfi: int | None = None,
    cla: int = CLA_ISO,
) -> CommandApdu:
    """READ RECORD of ``length`` bytes (the record length): P1 the record number, P2 the
    mode, with the SFI in its 5 high bits when given (TS 102 221 §11.1.5)."""
    _check_byte(record, "the record number")
    if sfi is not None and not 1 <= sfi <= 30:
        raise CommandError(f"an SFI is 1..30, got {sfi}")
    p2 = int(mode) | ((sfi << 3) if sfi is not None else 0)
    return CommandApdu(cla, _INS_READ_RECORD, record, p2, le=_le(length))


def update_record(
    record: int,
    data: bytes,
    *,
    mode: RecordMode = RecordMode.ABSOLUTE,
    sfi: int | None = None,
    cla: int = CLA_ISO,
) -> CommandApdu:
    """UPDATE RECORD with ``data`` (the whole record): absolute (P1 = record) or previous
    (P1 = ``00``) mode (TS 102 221 §11.1.6)."""
    _check_byte(record, "the record number")
    if mode is RecordMode.NEXT:
        raise CommandError("UPDATE RECORD has no 'next' mode (TS 102 221 Table 11.13)")
    if sfi is not None and not 1 <= sfi <= 30:
        raise CommandError(f"an SFI is 1..30, got {sfi}")
    p2 = int(mode) | ((sfi << 3) if sfi is not None else 0)
    return CommandApdu(cla, _INS_UPDATE_RECORD, record, p2, _data(data, "the record"))


def get_response(length: int = 256, *, cla: int = CLA_ISO) -> CommandApdu:
    """GET RESPONSE (TS 102 221 §11.1.19): fetch the response of the previous command."""
    return CommandApdu(cla, _INS_GET_RESPONSE, 0x00, 0x00, le=_le(length))


# -- GlobalPlatform card content management ------------------------------------------------


def install_parameters(
    app_specific: bytes = b"",
    *,
    non_volatile_quota: int | None = None,
    volatile_quota: int | None = None,
    toolkit: bytes | None = None,
) -> bytes:
    """Install parameters field (GP 2.3 Table 11-49): ``C9 len <app_specific>``, then, if
    any system parameter is given, ``EF len`` holding ``C8`` (non-volatile memory quota),
    ``C7`` (volatile memory quota), each 2 bytes (4 above 65,535), and ``CA`` (UICC toolkit
    application parameters, TS 102 226 §8.2.1.3.2.1), in that order."""
    out = bytes([_TAG_APP_SPECIFIC]) + _lv(app_specific, "application specific parameters")
    system = b""
    for tag, quota in (
        (_TAG_NON_VOLATILE_QUOTA, non_volatile_quota),
        (_TAG_VOLATILE_QUOTA, volatile_quota),
    ):
        if quota is not None:
            if not 0 <= quota <= 0xFFFFFFFF:
                raise CommandError(f"a memory quota is 0..2**32-1, got {quota}")
            size = 2 if quota <= 0xFFFF else 4
            system += bytes([tag, size]) + quota.to_bytes(size, "big")
    if toolkit is not None:
        system += bytes([_TAG_TOOLKIT]) + _lv(toolkit, "toolkit parameters")
    if system:
        out += bytes([_TAG_SYSTEM_SPECIFIC]) + _lv(system, "system specific parameters")
    return out


def install_for_load(
    load_file_aid: bytes,
    *,
    security_domain_aid: bytes = b"",
    load_file_hash: bytes = b"",
    load_parameters: bytes = b"",
    load_token: bytes = b"",
    cla: int = CLA_GP,
) -> CommandApdu:
    """INSTALL [for load] (GP 2.3 §11.5.2.3.1, P1 ``02``)."""
    if load_token and not load_file_hash:
        raise CommandError("a load token requires the load file data block hash (GP C.4.1)")
    data = (
        _lv(_aid(load_file_aid, "the load file AID"), "load file AID")
        + _lv(_aid(security_domain_aid, "the SD AID", allow_empty=True), "SD AID")
        + _lv(load_file_hash, "load file hash")
        + _lv(load_parameters, "load parameters")
        + _lv(load_token, "load token")
    )
    return CommandApdu(cla, _INS_INSTALL, 0x02, 0x00, _data(data, "INSTALL data"), 256)


def load_blocks(load_file: bytes, *, block_size: int = 240, cla: int = CLA_GP) -> list[CommandApdu]:
    """LOAD commands carrying ``C4 <length> <load_file>`` in blocks of ``block_size`` bytes
    (1..255): P1 ``80`` on the last block, ``00`` before; P2 the block number from 0."""
    if not load_file:
        raise CommandError("the load file is empty")
    if not 1 <= block_size <= _MAX_SHORT_DATA:
        raise CommandError(f"block size must be 1..{_MAX_SHORT_DATA}, got {block_size}")
    stream = bytes([_TAG_LOAD_FILE_DATA_BLOCK]) + _ber_length(len(load_file)) + load_file
    chunks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    if len(chunks) > 256:
        raise CommandError(f"{len(chunks)} blocks exceed the 256 block numbers of P2")
    last = len(chunks) - 1
    return [
        CommandApdu(cla, _INS_LOAD, 0x80 if n == last else 0x00, n, chunk, 256)
        for n, chunk in enumerate(chunks)
    ]


def install_for_install(
    load_file_aid: bytes,
    module_aid: bytes,
    application_aid: bytes,
    *,
    privileges: bytes = b"\x00",
    parameters: bytes = b"\xc9\x00",
    install_token: bytes = b"",
    make_selectable: bool = True,
    cla: int = CLA_GP,
) -> CommandApdu:
    """INSTALL [for install (and make selectable)] (GP 2.3 §11.5.2.3.2): P1 ``0C`` (or
    ``04`` without make selectable). ``parameters`` is the install parameters field, see
    :func:`install_parameters`; it must hold the mandatory ``C9`` TLV (GP lists it first;
    Shadytel/sim-tools' shadysim puts ``EF`` before it, so the order is not enforced)."""
    if len(privileges) not in (1, 3):
        raise CommandError(f"privileges are 1 or 3 bytes, got {len(privileges)}")
    if _TAG_APP_SPECIFIC not in _top_level_tags(parameters):
        raise CommandError("install parameters must hold the application specific TLV C9")
    data = (
        _lv(_aid(load_file_aid, "the load file AID"), "load file AID")
        + _lv(_aid(module_aid, "the module AID"), "module AID")
        + _lv(_aid(application_aid, "the application AID"), "application AID")
        + _lv(privileges, "privileges")
        + _lv(parameters, "install parameters")
        + _lv(install_token, "install token")
    )
    p1 = 0x0C if make_selectable else 0x04
    return CommandApdu(cla, _INS_INSTALL, p1, 0x00, _data(data, "INSTALL data"), 256)


def delete(aid: bytes, *, related: bool = False, cla: int = CLA_GP) -> CommandApdu:
    """DELETE [card content] (GP 2.3 §11.2): ``80 E4 00 P2 Lc 4F len AID 00``; P2 ``80``
    deletes the object and its related objects (a load file and its applications)."""
    data = bytes([_TAG_AID]) + _lv(_aid(aid, "the AID"), "AID")
    return CommandApdu(cla, _INS_DELETE, 0x00, 0x80 if related else 0x00, data, 256)
