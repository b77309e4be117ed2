"""A UICC file system (ETSI TS 102 221 §8 and §11.1) built from a plain data description.

The tree (:class:`FileSystem`) holds the MF ('3F00'), DFs (optionally with a DF name, the
AID of an application) and EFs: transparent, linear fixed and cyclic (§8.2). Contents
survive power cycles; the selection does not.

:class:`FileSystemHandler` is the APDU side, an :class:`~simcard.apdu_dispatch.ApduHandler`
with its own selection state (current DF, current EF, record pointer: §8.4), so that a second
context (the OTA endpoint's remote file management) can share the tree:

* SELECT (§11.1.1): P1 '00' by FID (the search order of §8.4.1: MF, '7FFF' the current
  application, children of the current DF, its parent, the parent's children, the current DF
  itself), '01' child DF, '03' parent DF, '04' by DF name (right-truncated AID, first
  occurrence), '08' path from the MF, '09' path from the current DF; P2 '04' returns the FCP
  template (§11.1.1.3: '62' with '82' file descriptor, '83' file identifier, '84' DF name,
  '8A' life cycle status, '8C' compact security attributes, 'C6' PIN status template for
  DFs, '80' file size for EFs, '88' SFI), '0C' returns no data.
* STATUS (§11.1.2): P2 '00' the FCP of the current DF, '01' the current application's DF
  name, '0C' no data.
* READ BINARY / UPDATE BINARY (§11.1.3, §11.1.4): 15-bit offset in P1-P2, or an SFI in P1
  (b8 = 1) with an 8-bit offset in P2; Le '00' reads up to the end of the file (at most 256
  bytes), a larger Le gets the bytes up to the end and '6282'.
* READ RECORD / UPDATE RECORD (§11.1.5, §11.1.6): modes next ('02'), previous ('03'),
  absolute or current ('04'), SFI in P2 b8-b4; a cyclic EF is updated in previous mode
  only, the oldest record becoming record 1; a wrong Le gets '6CXX' with the record length.
* Status words of §10.2.1: '6A82' file not found, '6A83' record not found, '6B00' offset
  outside the EF, '6981' command incompatible with the file structure, '6986' no current EF,
  '6982' update of a read-only file, '6700' wrong length, '6A86' incorrect P1-P2.

Description format (a mapping, e.g. from TOML): the MF is ``{"files": {FID: node}}``; a node
is ``{"type": "df", "name": ..., "aid": HEX, "files": {...}}`` or an EF
``{"type": "transparent", "size": N, "content": HEX, ...}`` /
``{"type": "linear_fixed" | "cyclic", "record_length": N, "record_count": N,
"records": [HEX, ...], ...}`` with optional ``name``, ``sfi`` (1-30), ``read_only`` and
``fill`` (the byte that pads short contents, default 'FF').
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Final

from simcard.apdu_dispatch import SW, CardError, ClassGroup, Command, Response, reply

MF_FID: Final = 0x3F00
CURRENT_ADF_FID: Final = 0x7FFF  # TS 102 221 §8.3: the current application's ADF
RESERVED_FIDS: Final = frozenset({MF_FID, CURRENT_ADF_FID, 0xFFFF})

MAX_RECORD_LENGTH: Final = 255
MAX_RECORD_COUNT: Final = 254
MAX_TRANSPARENT_SIZE: Final = 0x7FFF + 1  # offsets are 15 bits (§11.1.3)


class ProfileError(ValueError):
    """The file system description is invalid (names the file and the key)."""


class FileSystemError(ValueError):
    """A direct (non-APDU) access to the tree names a file that is not there or misfits."""


class Structure(Enum):
    """EF structures of TS 102 221 §8.2 (with their file descriptor byte, §11.1.1.4.3)."""

    TRANSPARENT = "transparent"
    LINEAR_FIXED = "linear_fixed"
    CYCLIC = "cyclic"

    @property
    def descriptor_byte(self) -> int:
        """File descriptor byte: shareable working EF with this structure."""
        return _FDB[self]


_FDB: Final = {Structure.TRANSPARENT: 0x41, Structure.LINEAR_FIXED: 0x42, Structure.CYCLIC: 0x46}
FDB_DF: Final = 0x78  # shareable DF (TS 102 221 table 11.5)
DATA_CODING_BYTE: Final = 0x21  # TS 102 221 §11.1.1.4.3


class Ins(IntEnum):
    """INS codes of the file commands (TS 102 221 §10.1.2, table 10.5)."""

    SELECT = 0xA4
    STATUS = 0xF2
    READ_BINARY = 0xB0
    UPDATE_BINARY = 0xD6
    READ_RECORD = 0xB2
    UPDATE_RECORD = 0xDC


class RecordMode(IntEnum):
    """P2 b3-b1 of READ/UPDATE RECORD (TS 102 221 table 11.11)."""

    NEXT = 0x02
    PREVIOUS = 0x03
    ABSOLUTE = 0x04


class Lcsi(IntEnum):
    """Life cycle status integer (TS 102 221 §11.1.1.4.9)."""

    OPERATIONAL_ACTIVATED = 0x05
    OPERATIONAL_DEACTIVATED = 0x04


# --- the tree ----------------------------------------------------------------------------


class DedicatedFile:
    """The MF or a DF: a FID, an optional DF name (AID) and children by FID."""

    __slots__ = ("aid", "children", "fid", "name", "parent")

    def __init__(
        self, fid: int, name: str, aid: bytes | None, parent: DedicatedFile | None
    ) -> None:
        self.fid = fid
        self.name = name
        self.aid = aid
        self.parent = parent
        self.children: dict[int, DedicatedFile | ElementaryFile] = {}

    def __repr__(self) -> str:
        return f"DedicatedFile({self.path_text!r}, name={self.name!r})"

    @property
    def path_text(self) -> str:
        """The absolute path, e.g. ``3F00/7F50``."""
        return _path_text(self)

    def by_sfi(self, sfi: int) -> ElementaryFile | None:
        """The child EF with this short file identifier."""
        for child in self.children.values():
            if isinstance(child, ElementaryFile) and child.sfi == sfi:
                return child
        return None


class ElementaryFile:
    """A working EF: transparent (bytes) or record based (equal-length records)."""

    __slots__ = ("_data", "_records", "fid", "name", "parent", "read_only", "sfi", "structure")

    def __init__(
        self,
        fid: int,
        name: str,
        structure: Structure,
        parent: DedicatedFile,
        *,
        data: bytes = b"",
        records: Sequence[bytes] = (),
        sfi: int | None = None,
        read_only: bool = False,
    ) -> None:
        self.fid = fid
        self.name = name
        self.structure = structure
        self.parent = parent
        self.sfi = sfi
        self.read_only = read_only
        self._data = bytearray(data)
        self._records = [bytearray(r) for r in records]

    def __repr__(self) -> str:
        return f"ElementaryFile({self.path_text!r}, {self.structure.value}, name={self.name!r})"

    @property
    def path_text(self) -> str:
        """The absolute path, e.g. ``3F00/7F50/6F60``."""
        return _path_text(self)

    @property
    def is_record_based(self) -> bool:
        """Linear fixed or cyclic."""
        return self.structure is not Structure.TRANSPARENT

    @property
    def record_length(self) -> int:
        """Length of every record (0 for a transparent EF)."""
        return len(self._records[0]) if self._records else 0

    @property
    def record_count(self) -> int:
        """Number of records (0 for a transparent EF)."""
        return len(self._records)

    @property
    def size(self) -> int:
        """File size in bytes (§11.1.1.4.1): data bytes, or record length x count."""
        if self.is_record_based:
            return self.record_length * self.record_count
        return len(self._data)

    @property
    def data(self) -> bytes:
        """The whole content of a transparent EF."""
        return bytes(self._data)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of a transparent EF (the caller checks the bounds)."""
        return bytes(self._data[offset : offset + length])

    def write(self, offset: int, data: bytes) -> None:
        """Overwrite bytes of a transparent EF (the caller checks the bounds)."""
        self._data[offset : offset + len(data)] = data

    def record(self, number: int) -> bytes:
        """Record ``number`` (1-based; for a cyclic EF record 1 is the newest)."""
        return bytes(self._records[number - 1])

    @property
    def records(self) -> list[bytes]:
        """All records, record 1 first."""
        return [bytes(r) for r in self._records]

    def set_record(self, number: int, data: bytes) -> None:
        """Overwrite record ``number`` (1-based) of a linear fixed EF."""
        self._records[number - 1][:] = data

    def push_record(self, data: bytes) -> None:
        """Cyclic EF: the oldest record is overwritten and becomes record 1 (§8.2.3)."""
        self._records.pop()
        self._records.insert(0, bytearray(data))


Node = DedicatedFile | ElementaryFile


def _path_text(node: Node) -> str:
    parts: list[str] = []
    current: Node | None = node
    while current is not None:
        parts.append(f"{current.fid:04X}")
        current = current.parent
    return "/".join(reversed(parts))


def parse_path(path: str | Sequence[int]) -> list[int]:
    """A path as FIDs: ``"3F00/7F50/6F60"``, ``"7F50/6F60"`` (from the MF) or ints."""
    if isinstance(path, str):
        parts = [p for p in path.replace(":", "/").split("/") if p]
        try:
            fids = [_fid(p) for p in parts]
        except ProfileError as exc:
            raise FileSystemError(str(exc)) from None
    else:
        fids = list(path)
    if fids and fids[0] == MF_FID:
        fids = fids[1:]
    return fids


class FileSystem:
    """The file tree of one card. Build it with :meth:`from_description` or :meth:`from_toml`."""

    __slots__ = ("mf",)

    def __init__(self, mf: DedicatedFile | None = None) -> None:
        self.mf = mf if mf is not None else DedicatedFile(MF_FID, "MF", None, None)

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> FileSystem:
        """Build the tree from a plain mapping (see the module docstring)."""
        if not isinstance(description, Mapping):
            raise ProfileError("profile: expected a table with 'files'")
        unknown = set(description) - {"files", "name"}
        if unknown:
            raise ProfileError(f"3F00: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        mf = DedicatedFile(MF_FID, str(description.get("name", "MF")), None, None)
        _build_children(mf, description.get("files", {}))
        return cls(mf)

    @classmethod
    def from_toml(cls, text: str) -> FileSystem:
        """Build the tree from TOML text (same layout as :meth:`from_description`)."""
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"profile: not valid TOML: {exc}") from None
        return cls.from_description(table)

    def find(self, path: str | Sequence[int]) -> Node:
        """The file at an absolute path (the MF for an empty path)."""
        node: Node = self.mf
        for fid in parse_path(path):
            if not isinstance(node, DedicatedFile) or fid not in node.children:
                raise FileSystemError(f"no file {fid:04X} under {node.path_text}")
            node = node.children[fid]
        return node

    def ef(self, path: str | Sequence[int]) -> ElementaryFile:
        """The EF at an absolute path."""
        node = self.find(path)
        if not isinstance(node, ElementaryFile):
            raise FileSystemError(f"{node.path_text} is not an EF")
        return node

    def read_binary(self, path: str | Sequence[int]) -> bytes:
        """The whole content of a transparent EF."""
        ef = self.ef(path)
        if ef.is_record_based:
            raise FileSystemError(f"{ef.path_text} is not transparent")
        return ef.data

    def write_binary(self, path: str | Sequence[int], data: bytes, offset: int = 0) -> None:
        """Personalisation write to a transparent EF (ignores read-only)."""
        ef = self.ef(path)
        if ef.is_record_based:
            raise FileSystemError(f"{ef.path_text} is not transparent")
        if offset < 0 or offset + len(data) > ef.size:
            raise FileSystemError(f"{ef.path_text}: {len(data)} bytes at {offset} exceed the EF")
        ef.write(offset, data)

    def walk(self) -> Iterable[Node]:
        """Every file, depth first, the MF first."""
        stack: list[Node] = [self.mf]
        while stack:
            node = stack.pop()
            yield node
            if isinstance(node, DedicatedFile):
                stack.extend(reversed(list(node.children.values())))


# --- building from data ----------------------------------------------------------------------

_DF_KEYS: Final = frozenset({"type", "name", "aid", "files"})
_EF_KEYS: Final = frozenset({"type", "name", "sfi", "read_only", "fill"})
_TRANSPARENT_KEYS: Final = _EF_KEYS | {"size", "content"}
_RECORD_KEYS: Final = _EF_KEYS | {"record_length", "record_count", "records"}


def _fid(text: object) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and len(text) == 4:
        try:
            value = int(text, 16)
        except ValueError:
            raise ProfileError(f"file identifier {text!r} is not 4 hex digits") from None
    else:
        raise ProfileError(f"file identifier {text!r} is not 4 hex digits")
    if not 0 <= value <= 0xFFFF:
        raise ProfileError(f"file identifier {text!r} out of range")
    return value


def _hex(where: str, key: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise ProfileError(f"{where}: {key} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProfileError(f"{where}: {key} is not valid hex") from None


def _int(where: str, key: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProfileError(f"{where}: {key} must be an integer in {lo}..{hi}")
    return value


def _build_children(parent: DedicatedFile, files: object) -> None:
    if not isinstance(files, Mapping):
        raise ProfileError(f"{parent.path_text}: files must be a table keyed by FID")
    sfis: set[int] = set()
    for key, spec in files.items():
        fid = _fid(key)
        where = f"{parent.path_text}/{fid:04X}"
        if fid in RESERVED_FIDS:
            raise ProfileError(f"{where}: reserved file identifier")
        if fid in parent.children:
            raise ProfileError(f"{where}: duplicate file identifier")
        if fid == parent.fid:
            raise ProfileError(f"{where}: same file identifier as its parent")
        if not isinstance(spec, Mapping):
            raise ProfileError(f"{where}: expected a table")
        node = _build_node(parent, fid, where, spec)
        if isinstance(node, ElementaryFile) and node.sfi is not None:
            if node.sfi in sfis:
                raise ProfileError(f"{where}: duplicate SFI {node.sfi}")
            sfis.add(node.sfi)
        parent.children[fid] = node


def _build_node(parent: DedicatedFile, fid: int, where: str, spec: Mapping[str, Any]) -> Node:
    kind = spec.get("type")
    name = spec.get("name", "")
    if not isinstance(name, str):
        raise ProfileError(f"{where}: name must be a string")
    if kind == "df":
        _check_keys(where, spec, _DF_KEYS)
        aid = None
        if "aid" in spec:
            aid = _hex(where, "aid", spec["aid"])
            if not 1 <= len(aid) <= 16:
                raise ProfileError(f"{where}: aid must be 1 to 16 bytes")
        df = DedicatedFile(fid, name, aid, parent)
        _build_children(df, spec.get("files", {}))
        return df
    try:
        structure = Structure(kind)
    except ValueError:
        raise ProfileError(
            f"{where}: type must be df, transparent, linear_fixed or cyclic, not {kind!r}"
        ) from None
    sfi = None if spec.get("sfi") is None else _int(where, "sfi", spec["sfi"], 1, 30)
    read_only = spec.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ProfileError(f"{where}: read_only must be true or false")
    fill_bytes = _hex(where, "fill", spec.get("fill", "FF"))
    if len(fill_bytes) != 1:
        raise ProfileError(f"{where}: fill must be one byte")
    fill = fill_bytes[0]
    if structure is Structure.TRANSPARENT:
        _check_keys(where, spec, _TRANSPARENT_KEYS)
        content = _hex(where, "content", spec.get("content", ""))
        size = _int(where, "size", spec.get("size", len(content)), 0, MAX_TRANSPARENT_SIZE)
        if len(content) > size:
            raise ProfileError(f"{where}: content of {len(content)} bytes exceeds size {size}")
        data = content + bytes([fill]) * (size - len(content))
        return ElementaryFile(fid, name, structure, parent, data=data, sfi=sfi, read_only=read_only)
    _check_keys(where, spec, _RECORD_KEYS)
    if "record_length" not in spec:
        raise ProfileError(f"{where}: record_length is required")
    length = _int(where, "record_length", spec["record_length"], 1, MAX_RECORD_LENGTH)
    raw = spec.get("records", [])
    if not isinstance(raw, list):
        raise ProfileError(f"{where}: records must be a list of hex strings")
    given = [_hex(where, f"records[{i}]", r) for i, r in enumerate(raw)]
    count = _int(where, "record_count", spec.get("record_count", len(given)), 1, MAX_RECORD_COUNT)
    if len(given) > count:
        raise ProfileError(f"{where}: {len(given)} records given, record_count is {count}")
    records: list[bytes] = []
    for i, rec in enumerate(given):
        if len(rec) > length:
            raise ProfileError(f"{where}: records[{i}] longer than record_length {length}")
        records.append(rec + bytes([fill]) * (length - len(rec)))
    records += [bytes([fill]) * length] * (count - len(records))
    return ElementaryFile(
        fid, name, structure, parent, records=records, sfi=sfi, read_only=read_only
    )


def _check_keys(where: str, spec: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")


# --- FCP (TS 102 221 §11.1.1.3) ---------------------------------------------------------------


def tlv(tag: int, value: bytes) -> bytes:
    """One BER-TLV data object with a one-byte tag (definite length, short or long form)."""
    n = len(value)
    if n < 0x80:
        length = bytes((n,))
    elif n <= 0xFF:
        length = bytes((0x81, n))
    else:
        length = bytes((0x82, n >> 8, n & 0xFF))
    return bytes((tag,)) + length + value


# Compact security attributes (TS 102 221 §11.1.1.4.7.1, ISO/IEC 7816-4 compact format):
# access mode byte b2 (update) and b1 (read), then one security condition byte per set bit
# from b7 down to b1: '00' always, 'FF' never.
_AM_UPDATE_READ: Final = 0x03
_SC_ALWAYS: Final = 0x00
_SC_NEVER: Final = 0xFF
# PIN status template DO (§11.1.1.4.10): PS_DO '90' (no PIN enabled), key reference '83' PIN1.
_PIN_STATUS: Final = tlv(0xC6, tlv(0x90, b"\x00") + tlv(0x83, b"\x01"))


def fcp(node: Node) -> bytes:
    """The FCP template ('62') of a file, as SELECT with P2 '04' returns it."""
    if isinstance(node, DedicatedFile):
        body = tlv(0x82, bytes((FDB_DF, DATA_CODING_BYTE)))
        body += tlv(0x83, node.fid.to_bytes(2, "big"))
        if node.aid is not None:
            body += tlv(0x84, node.aid)
        body += tlv(0x8A, bytes((Lcsi.OPERATIONAL_ACTIVATED,)))
        body += tlv(0x8C, bytes((_AM_UPDATE_READ, _SC_ALWAYS, _SC_ALWAYS)))
        body += _PIN_STATUS
        return tlv(0x62, body)
    descriptor = bytes((node.structure.descriptor_byte, DATA_CODING_BYTE))
    if node.is_record_based:
        descriptor += node.record_length.to_bytes(2, "big") + bytes((node.record_count,))
    update = _SC_NEVER if node.read_only else _SC_ALWAYS
    body = tlv(0x82, descriptor)
    body += tlv(0x83, node.fid.to_bytes(2, "big"))
    body += tlv(0x8A, bytes((Lcsi.OPERATIONAL_ACTIVATED,)))
    body += tlv(0x8C, bytes((_AM_UPDATE_READ, update, _SC_ALWAYS)))
    body += tlv(0x80, node.size.to_bytes(2, "big"))
    if node.sfi is not None:
        body += tlv(0x88, bytes((node.sfi << 3,)))
    return tlv(0x62, body)


# --- the APDU side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """A snapshot of the selection state (§8.4)."""

    df: DedicatedFile
    ef: ElementaryFile | None
    record: int | None


class FileSystemHandler:
    """SELECT, STATUS, READ/UPDATE BINARY and READ/UPDATE RECORD on a :class:`FileSystem`."""

    __slots__ = ("_df", "_ef", "_record", "fs")

    def __init__(self, fs: FileSystem) -> None:
        self.fs = fs
        self._df: DedicatedFile = fs.mf
        self._ef: ElementaryFile | None = None
        self._record: int | None = None

    # ApduHandler protocol
    def commands(self) -> Iterable[tuple[ClassGroup, int]]:
        """The file commands: ISO class for all but STATUS (TS 102 221 table 10.5)."""
        iso = ClassGroup.INTERINDUSTRY
        return [
            (iso, Ins.SELECT),
            (iso, Ins.READ_BINARY),
            (iso, Ins.UPDATE_BINARY),
            (iso, Ins.READ_RECORD),
            (iso, Ins.UPDATE_RECORD),
            (ClassGroup.PROPRIETARY, Ins.STATUS),
        ]

    def reset(self) -> None:
        """After power on or reset the MF is selected (§8.4)."""
        self._df, self._ef, self._record = self.fs.mf, None, None

    def handle(self, command: Command) -> Response:
        """Answer one file command."""
        ins = command.ins
        if ins == Ins.SELECT:
            return self._select(command)
        if ins == Ins.STATUS:
            return self._status(command)
        if ins == Ins.READ_BINARY:
            return self._read_binary(command)
        if ins == Ins.UPDATE_BINARY:
            return self._update_binary(command)
        if ins == Ins.READ_RECORD:
            return self._read_record(command)
        if ins == Ins.UPDATE_RECORD:
            return self._update_record(command)
        raise CardError(SW.INS_NOT_SUPPORTED)

    # state
    @property
    def selection(self) -> Selection:
        """Current DF, current EF and record pointer."""
        return Selection(self._df, self._ef, self._record)

    @property
    def current_application(self) -> DedicatedFile | None:
        """The nearest DF with a DF name (AID) at or above the current DF."""
        node: DedicatedFile | None = self._df
        while node is not None:
            if node.aid is not None:
                return node
            node = node.parent
        return None

    def _make_current(self, node: Node) -> None:
        if isinstance(node, DedicatedFile):
            self._df, self._ef = node, None
        else:
            self._df, self._ef = node.parent, node
        self._record = None

    # SELECT
    def _select(self, cmd: Command) -> Response:
        if cmd.p2 not in (0x04, 0x0C):
            raise CardError(SW.INCORRECT_P1_P2, "P2 must be 04 (FCP) or 0C (no data)")
        node = self._resolve(cmd.p1, cmd.data)
        if node is None:
            raise CardError(SW.FILE_NOT_FOUND)
        self._make_current(node)
        return reply(fcp(node) if cmd.p2 == 0x04 else b"")

    def _resolve(self, p1: int, data: bytes) -> Node | None:
        if p1 == 0x00:
            return self._by_fid(_one_fid(data))
        if p1 == 0x01:
            child = self._df.children.get(_one_fid(data))
            return child if isinstance(child, DedicatedFile) else None
        if p1 == 0x03:
            if data:
                raise CardError(SW.WRONG_LENGTH)
            return self._df.parent
        if p1 == 0x04:
            if not 1 <= len(data) <= 16:
                raise CardError(SW.WRONG_LENGTH)
            return next(
                (
                    n
                    for n in self.fs.walk()
                    if isinstance(n, DedicatedFile) and n.aid is not None and n.aid.startswith(data)
                ),
                None,
            )
        if p1 in (0x08, 0x09):
            if not data or len(data) % 2:
                raise CardError(SW.WRONG_LENGTH)
            fids = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
            start: DedicatedFile | None = self.fs.mf if p1 == 0x08 else self._df
            if p1 == 0x08 and fids[0] == MF_FID:
                fids = fids[1:]
            if fids and fids[0] == CURRENT_ADF_FID:
                start, fids = self.current_application, fids[1:]
            return _walk_path(start, fids)
        raise CardError(SW.INCORRECT_P1_P2, f"SELECT P1 {p1:02X} not supported")

    def _by_fid(self, fid: int) -> Node | None:
        """TS 102 221 §8.4.1: which files a FID may select from the current DF."""
        if fid == MF_FID:
            return self.fs.mf
        if fid == CURRENT_ADF_FID:
            return self.current_application
        current = self._df
        if fid in current.children:
            return current.children[fid]
        parent = current.parent
        if parent is not None:
            if parent.fid == fid:
                return parent
            if fid in parent.children:
                return parent.children[fid]
        if current.fid == fid:
            return current
        return None

    # STATUS
    def _status(self, cmd: Command) -> Response:
        if cmd.p1 not in (0x00, 0x01, 0x02):
            raise CardError(SW.INCORRECT_P1_P2)
        if cmd.data:
            raise CardError(SW.WRONG_LENGTH)
        if cmd.p2 == 0x00:
            return reply(fcp(self._df))
        if cmd.p2 == 0x01:
            app = self.current_application
            return reply(tlv(0x84, app.aid) if app is not None and app.aid else b"")
        if cmd.p2 == 0x0C:
            return reply()
        raise CardError(SW.INCORRECT_P1_P2)

    # BINARY
    def _binary_target(self, p1: int, p2: int) -> tuple[ElementaryFile, int]:
        if p1 & 0x80:
            if p1 & 0x60:
                raise CardError(SW.INCORRECT_P1_P2)
            ef = self._df.by_sfi(p1 & 0x1F)
            if ef is None:
                raise CardError(SW.FILE_NOT_FOUND)
            offset = p2
        else:
            if self._ef is None:
                raise CardError(SW.NO_CURRENT_EF)
            ef, offset = self._ef, (p1 << 8) | p2
        if ef.is_record_based:
            raise CardError(SW.INCOMPATIBLE_FILE_STRUCTURE)
        return ef, offset

    def _read_binary(self, cmd: Command) -> Response:
        ef, offset = self._binary_target(cmd.p1, cmd.p2)
        if cmd.le is None or cmd.data:
            raise CardError(SW.WRONG_LENGTH)
        if offset >= ef.size:
            raise CardError(SW.WRONG_P1_P2, "offset outside the EF")
        self._use(ef)
        remaining = ef.size - offset
        if cmd.le == 256:  # Le '00': up to the end of the file, at most 256 bytes
            return reply(ef.read(offset, min(256, remaining)))
        if cmd.le > remaining:
            return reply(ef.read(offset, remaining), SW.END_OF_FILE)
        return reply(ef.read(offset, cmd.le))

    def _update_binary(self, cmd: Command) -> Response:
        ef, offset = self._binary_target(cmd.p1, cmd.p2)
        if ef.read_only:
            raise CardError(SW.SECURITY_STATUS_NOT_SATISFIED)
        if not cmd.data:
            raise CardError(SW.WRONG_LENGTH)
        if offset >= ef.size:
            raise CardError(SW.WRONG_P1_P2, "offset outside the EF")
        if offset + len(cmd.data) > ef.size:
            raise CardError(SW.WRONG_LENGTH, "data beyond the end of the EF")
        self._use(ef)
        ef.write(offset, cmd.data)
        return reply()

    def _use(self, ef: ElementaryFile) -> None:
        """An EF addressed by SFI becomes the current EF (§11.1.3)."""
        if ef is not self._ef:
            self._make_current(ef)

    # RECORD
    def _record_target(self, p2: int) -> tuple[ElementaryFile, RecordMode]:
        sfi = p2 >> 3
        if sfi == 0x1F:
            raise CardError(SW.INCORRECT_P1_P2)
        try:
            mode = RecordMode(p2 & 0x07)
        except ValueError:
            raise CardError(SW.INCORRECT_P1_P2, "record mode not supported") from None
        if sfi:
            ef = self._df.by_sfi(sfi)
            if ef is None:
                raise CardError(SW.FILE_NOT_FOUND)
        else:
            if self._ef is None:
                raise CardError(SW.NO_CURRENT_EF)
            ef = self._ef
        if not ef.is_record_based:
            raise CardError(SW.INCOMPATIBLE_FILE_STRUCTURE)
        return ef, mode

    def _record_number(self, ef: ElementaryFile, mode: RecordMode, p1: int) -> int:
        """The record a READ/UPDATE RECORD addresses (§11.1.5.1); raises 6A83 if none."""
        count = ef.record_count
        pointer = self._record if ef is self._ef else None
        if mode is RecordMode.ABSOLUTE:
            if p1 == 0xFF:
                raise CardError(SW.INCORRECT_P1_P2)
            number = p1 if p1 else pointer
            if number is None or number > count:
                raise CardError(SW.RECORD_NOT_FOUND)
            return number
        if p1 != 0:
            raise CardError(SW.INCORRECT_P1_P2)
        cyclic = ef.structure is Structure.CYCLIC
        if mode is RecordMode.NEXT:
            if pointer is None:
                return 1
            if pointer < count:
                return pointer + 1
            if cyclic:
                return 1
            raise CardError(SW.RECORD_NOT_FOUND)
        if pointer is None:
            return count
        if pointer > 1:
            return pointer - 1
        if cyclic:
            return count
        raise CardError(SW.RECORD_NOT_FOUND)

    def _read_record(self, cmd: Command) -> Response:
        ef, mode = self._record_target(cmd.p2)
        if cmd.le is None or cmd.data:
            raise CardError(SW.WRONG_LENGTH)
        number = self._record_number(ef, mode, cmd.p1)
        if cmd.le not in (256, ef.record_length):
            # T=0: tell the terminal the exact length (§10.2.1.5, '6CXX').
            raise CardError(0x6C00 | ef.record_length)
        self._use(ef)
        if mode is not RecordMode.ABSOLUTE:
            self._record = number
        return reply(ef.record(number))

    def _update_record(self, cmd: Command) -> Response:
        ef, mode = self._record_target(cmd.p2)
        if ef.read_only:
            raise CardError(SW.SECURITY_STATUS_NOT_SATISFIED)
        if len(cmd.data) != ef.record_length:
            raise CardError(SW.WRONG_LENGTH)
        if ef.structure is Structure.CYCLIC:
            if mode is not RecordMode.PREVIOUS or cmd.p1 != 0:
                raise CardError(SW.INCORRECT_P1_P2, "a cyclic EF is updated in previous mode")
            self._use(ef)
            ef.push_record(cmd.data)
            self._record = 1
            return reply()
        number = self._record_number(ef, mode, cmd.p1)
        self._use(ef)
        ef.set_record(number, cmd.data)
        if mode is not RecordMode.ABSOLUTE:
            self._record = number
        return reply()


def _one_fid(data: bytes) -> int:
    if len(data) != 2:
        raise CardError(SW.WRONG_LENGTH, "a file identifier is 2 bytes")
    return int.from_bytes(data, "big")


def _walk_path(start: DedicatedFile | None, fids: Sequence[int]) -> Node | None:
    node: Node | None = start
    for fid in fids:
        if not isinstance(node, DedicatedFile):
            return None
        node = node.children.get(fid)
    return node
