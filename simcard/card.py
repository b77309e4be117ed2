"""The virtual UICC: ATR, file system and APDU dispatcher behind one ``process`` call.

* ATR (ISO/IEC 7816-3 §8, ETSI TS 102 221 §6.3): ``3B 97 96 80 1F C7 80 31 E0 73 BE 21 00 E4``
  - direct convention; TA1 '96' (Fi 512, Di 32); TD1 '80' then TD2 '1F': T=0, then the
  global interface bytes for T=15 with TA3 'C7' (clock stop allowed, voltage classes A, B
  and C, TS 102 221 §6.3.3); historical bytes '80' + compact-TLV card service data and card
  capabilities (ISO/IEC 7816-4 §8.1.1); TCK since T=15 is indicated.
* The default profile (:data:`DEFAULT_PROFILE`, a plain data description, see
  :mod:`simcard.filesystem`): the MF with EF ICCID ('2FE2', SFI 2, read-only, the ICCID in
  swapped-nibble BCD per TS 102 221 §13.2), EF DIR ('2F00', linear fixed, one application
  template for the wallet, §13.1) and the wallet DF '7F50' (DF name :data:`WALLET_AID`) with
  EF wallet parameters '6F51' and EF calibration '6F60' (32 bytes; issue 6 defines its
  content).
* Power: the card is inserted powered; :meth:`VirtualCard.power_off` makes it mute (every
  command is answered '6F00' until :meth:`VirtualCard.power_on`), power on and warm reset
  select the MF and drop the volatile state of every registered handler.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from simcard.apdu_dispatch import SW, ApduHandler, Dispatcher, reply
from simcard.filesystem import FileSystem, FileSystemHandler, ProfileError

ATR: Final = bytes.fromhex("3B9796801FC78031E073BE2100E4")

EF_ICCID_PATH: Final = "3F00/2FE2"
WALLET_DF_PATH: Final = "3F00/7F50"
WALLET_PARAMETERS_PATH: Final = "3F00/7F50/6F51"
CALIBRATION_PATH: Final = "3F00/7F50/6F60"
CALIBRATION_SIZE: Final = 32

#: The wallet application's DF name: category 'F' (ISO/IEC 7816-5, not registered) followed
#: by "STKPAY" in ASCII and a version byte. Not an AID of any real scheme.
WALLET_AID: Final = bytes.fromhex("F0") + b"STKPAY" + bytes.fromhex("01")


class IccidError(ValueError):
    """An ICCID that cannot be stored in EF ICCID."""


def encode_iccid(iccid: str) -> bytes:
    """EF ICCID content (TS 102 221 §13.2): BCD digits, low nibble first, 'F'-padded to 10
    bytes. ``iccid`` is 1 to 20 decimal digits."""
    if not (iccid.isascii() and iccid.isdigit() and 1 <= len(iccid) <= 20):
        raise IccidError(f"ICCID must be 1 to 20 decimal digits, not {iccid!r}")
    digits = iccid + "F" * (20 - len(iccid))
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, 20, 2))


def decode_iccid(content: bytes) -> str:
    """The ICCID digits of EF ICCID content (stops at the first 'F' nibble)."""
    out: list[str] = []
    for byte in content:
        for nibble in (byte & 0x0F, byte >> 4):
            if nibble == 0xF:
                return "".join(out)
            if nibble > 9:
                raise IccidError(f"EF ICCID content {content.hex()} is not BCD")
            out.append(str(nibble))
    return "".join(out)


# Wallet parameters (placeholder layout until the wallet issue defines the file): the card
# parameters of the product brief in fen, big-endian: balance cap (4 bytes), single purchase
# cap (4), single top-up cap (4), top-ups per day (1).
_WALLET_PARAMETERS: Final = (
    (100_000).to_bytes(4, "big")
    + (50_000).to_bytes(4, "big")
    + (50_000).to_bytes(4, "big")
    + bytes((5,))
)

# EF DIR record (TS 102 221 §13.1): application template '61' holding the AID '4F' and the
# application label '50'.
_DIR_RECORD: Final = bytes((0x61, 2 + len(WALLET_AID) + 2 + 6, 0x4F, len(WALLET_AID)))
_DIR_RECORD_FULL: Final = _DIR_RECORD + WALLET_AID + bytes((0x50, 6)) + b"WALLET"

DEFAULT_PROFILE: Final[Mapping[str, Any]] = {
    "files": {
        "2FE2": {
            "type": "transparent",
            "name": "EF.ICCID",
            "size": 10,
            "sfi": 2,
            "read_only": True,
        },
        "2F00": {
            "type": "linear_fixed",
            "name": "EF.DIR",
            "record_length": 32,
            "record_count": 2,
            "sfi": 30,
            "records": [_DIR_RECORD_FULL.hex()],
        },
        "7F50": {
            "type": "df",
            "name": "DF.WALLET",
            "aid": WALLET_AID.hex(),
            "files": {
                "6F51": {
                    "type": "transparent",
                    "name": "EF.WALLET_PARAMETERS",
                    "size": 16,
                    "content": _WALLET_PARAMETERS.hex(),
                },
                "6F60": {
                    "type": "transparent",
                    "name": "EF.CALIBRATION",
                    "size": CALIBRATION_SIZE,
                },
            },
        },
    }
}

_EF_ICCID_SPEC: Final[Mapping[str, Any]] = DEFAULT_PROFILE["files"]["2FE2"]


def _with_iccid_file(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``profile`` with an EF ICCID under the MF (added if missing)."""
    if not isinstance(profile, Mapping):
        raise ProfileError("profile: expected a table with 'files'")
    table = copy.deepcopy(dict(profile))
    files = table.setdefault("files", {})
    if not isinstance(files, dict):
        raise ProfileError("3F00: files must be a table keyed by FID")
    if not any(isinstance(k, str) and k.upper() == "2FE2" for k in files):
        files["2FE2"] = dict(_EF_ICCID_SPEC)
    return table


class VirtualCard:
    """A UICC model: ``VirtualCard(iccid).process(apdu) -> response``."""

    __slots__ = ("_powered", "dispatcher", "files", "fs", "iccid")

    def __init__(self, iccid: str, *, profile: Mapping[str, Any] | None = None) -> None:
        content = encode_iccid(iccid)
        self.iccid = iccid
        self.fs = FileSystem.from_description(
            _with_iccid_file(DEFAULT_PROFILE if profile is None else profile)
        )
        ef = self.fs.ef(EF_ICCID_PATH)
        if ef.is_record_based or ef.size != len(content):
            raise ProfileError("3F00/2FE2: EF ICCID must be a transparent EF of 10 bytes")
        self.fs.write_binary(EF_ICCID_PATH, content)
        self.files = FileSystemHandler(self.fs)
        self.dispatcher = Dispatcher()
        self.dispatcher.register(self.files)
        self._powered = True

    def __repr__(self) -> str:
        return f"VirtualCard(iccid={self.iccid!r}, powered={self._powered})"

    @property
    def atr(self) -> bytes:
        """The answer to reset."""
        return ATR

    @property
    def powered(self) -> bool:
        """Whether the card is powered (answers commands)."""
        return self._powered

    def power_on(self) -> None:
        """Cold reset: power on, MF selected, volatile state cleared."""
        self._powered = True
        self.dispatcher.reset()

    def power_off(self) -> None:
        """Deactivate the card: it answers nothing useful until powered on again."""
        self._powered = False
        self.dispatcher.reset()

    def reset(self) -> None:
        """Warm reset: MF selected, volatile state cleared (the card stays powered)."""
        self._powered = True
        self.dispatcher.reset()

    def register(self, handler: ApduHandler, *, replace: bool = False) -> None:
        """Add an applet or card service (see :class:`~simcard.apdu_dispatch.ApduHandler`)."""
        self.dispatcher.register(handler, replace=replace)

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU: response data + SW1 SW2. Never raises."""
        if not self._powered:
            return reply(sw=SW.TECHNICAL_PROBLEM).to_bytes()
        return self.dispatcher.process(apdu)
