"""Remote APDU structures of ETSI TS 102 226 §5: what the secured data of a command packet
(TS 102 225) carries for Remote File Management and Remote Application Management, and what
the card's response packet carries back.

Compact format (TS 102 226 §5.1)
================================

Command (§5.1.1): the C-APDUs one after another, with no separator and no count. Each is
coded the way a TS 102 221 UICC receives it over T=0, as a command TPDU (ISO/IEC 7816-3
§12.2, TS 102 221 §7.3.1.1): ``CLA INS P1 P2 P3 [data]``, where P3 is

* ``00`` for a case 1 command,
* Le for a case 2 command (``00`` meaning 256),
* Lc, followed by the data, for a case 3 *or case 4* command: a case 4 command carries no Le.
  The card announces its response data with ``61XX``, and a following GET RESPONSE
  (``00 C0 00 00 Le``) fetches it; that is how RAM tools read GET STATUS over SMS
  (``80F28000024F00`` then ``00C0000000``, Shadytel/sim-tools ``shadysim/shadysim.py``).

Splitting the stream therefore needs, for every command but the last, one fact the bytes do
not carry: whether P3 counts command data that follows (Lc) or announces a response length
(Le). A card knows it from the instruction; :func:`split_compact` uses the same knowledge, the
table :data:`P3_MEANING` of the commands of TS 102 221 §10.1.2 (Table 10.5), TS 102 222 and
GlobalPlatform Card Specification 2.3 §11 (with GET STATUS told apart from the TS 102 221
STATUS by P1), extensible by the caller. Rules, in order:

1. fewer than 4 octets left: malformed (truncated header);
2. exactly 4 octets left: a last case 1 command written in ISO/IEC 7816-4 form (no P3);
3. INS known to take command data: P3 is Lc; ``P3=00`` is a case 1 command; the data must
   be there. If exactly one octet remains after it, it is the Le of a last case 4 command
   (lenient: some tools append it);
4. INS known to take no command data: P3 is Le, the command is case 2 (``00`` = 256);
5. INS unknown: only acceptable for the last command, whose remaining octets are decoded by
   the ISO/IEC 7816-3 §12.1.3 length rules (short form only); otherwise the stream cannot be
   split and :class:`RemoteApduError` is raised.

What the compact format cannot say (so :func:`build_compact` then :func:`split_compact` is
not the identity for these):

* **Le of a case 4 command**: dropped on the wire; the command comes back as case 3.
* **case 1 versus case 2 with Le=256**: both are ``CLA INS P1 P2 00``. For an instruction
  whose P3 is Le the splitter reads case 2 with Le=256; for one whose P3 is Lc, case 1.
* **extended length**: P3 is one octet, so Nc <= 255 and Ne <= 256;
  :func:`build_compact` refuses anything longer.

:func:`build_compact` refuses a command whose case contradicts its instruction (e.g. READ
BINARY with data), since the card would mis-split everything after it.

Response (§5.1.2): one octet, the number of commands executed, then the status word of the
last executed command, then that command's response data if it returned any
(``01 6132``: one command, SW ``6132``, no data; osmocom/pysim
``tests/unittests/test_ota.py``). :class:`RemoteResponse` holds the count and the last
R-APDU.

Expanded format (TS 102 226 §5.2)
=================================

Command (§5.2.1): a Command Scripting template, BER-TLV tag ``AA`` with a definite length,
or ``AE 80`` ... ``00 00`` with the indefinite length (TS 101 220 Table 7.18), holding one
C-APDU TLV per command, tag ``22`` (TS 101 220 Table 7.19), its value a complete ISO/IEC
7816-4 C-APDU (extended length allowed). The Immediate Action (``81``), Error Action
(``82``) and Script Chaining (``83``) TLVs are not supported: :func:`parse_expanded` rejects
them as an unknown tag, which is what a card without them reports.

Response (§5.2.2): a Response Scripting template, ``AB`` (definite) or ``AF 80`` ...
``00 00`` (indefinite, TS 101 220 Table 7.18), holding the Number of executed command TLVs
(tag ``80``, an unsigned integer; present in the definite form, absent in the indefinite
one as real cards send it), one R-APDU TLV (tag ``23``, response data then SW1 SW2) per
executed command, and possibly a Bad Format TLV (tag ``90``, one octet, :class:`BadFormat`).
A response with no R-APDU at all (the card rejected the script before executing anything)
raises :class:`ScriptRejectedError`, which carries the bad-format code.

Every parser here raises :class:`RemoteApduError` (a :class:`ValueError`) and nothing else,
whatever the input; the message never shows command data (it may hold a PIN or a key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from ota.apdu import ApduError, CommandApdu, ResponseApdu, StatusWord

__all__ = [
    "P3",
    "P3_MEANING",
    "TAG_COMMAND_SCRIPTING_DEFINITE",
    "TAG_COMMAND_SCRIPTING_INDEFINITE",
    "TAG_C_APDU",
    "TAG_RESPONSE_SCRIPTING_DEFINITE",
    "TAG_RESPONSE_SCRIPTING_INDEFINITE",
    "TAG_R_APDU",
    "BadFormat",
    "RemoteApduError",
    "RemoteResponse",
    "ScriptRejectedError",
    "build_compact",
    "build_compact_response",
    "build_expanded",
    "build_expanded_response",
    "p3_meaning",
    "parse_compact_response",
    "parse_expanded",
    "parse_expanded_response",
    "split_compact",
]

# TS 101 220 Table 7.18 (templates) and Tables 7.19 / 7.20 (their contents).
TAG_COMMAND_SCRIPTING_DEFINITE: Final = 0xAA
TAG_RESPONSE_SCRIPTING_DEFINITE: Final = 0xAB
TAG_COMMAND_SCRIPTING_INDEFINITE: Final = 0xAE
TAG_RESPONSE_SCRIPTING_INDEFINITE: Final = 0xAF
TAG_C_APDU: Final = 0x22
TAG_IMMEDIATE_ACTION: Final = 0x81
TAG_ERROR_ACTION: Final = 0x82
TAG_SCRIPT_CHAINING: Final = 0x83
TAG_R_APDU: Final = 0x23
TAG_EXECUTED_COUNT: Final = 0x80
TAG_BAD_FORMAT: Final = 0x90

_INDEFINITE: Final = 0x80
_EOC: Final = b"\x00\x00"
_MAX_BER_LENGTH: Final = 0xFFFFFF


class BadFormat(IntEnum):
    """Bad Format TLV values (TS 102 226 §5.2.2, Table 5.12)."""

    UNKNOWN_TAG = 0x01
    WRONG_LENGTH = 0x02
    LENGTH_NOT_FOUND = 0x03


class RemoteApduError(ValueError):
    """A remote APDU structure that cannot be built or parsed.

    ``bad_format`` says which Bad Format value a card would report for an expanded command
    script that fails to parse (TS 102 226 Table 5.12), when one applies.
    """

    def __init__(self, message: str, *, bad_format: BadFormat | None = None) -> None:
        super().__init__(message)
        self.bad_format = bad_format


class ScriptRejectedError(RemoteApduError):
    """An expanded response with no R-APDU: the card executed nothing of the script."""

    def __init__(self, message: str, *, executed: int, bad_format: BadFormat | None) -> None:
        super().__init__(message, bad_format=bad_format)
        self.executed = executed


# -- compact format -------------------------------------------------------------------------


class P3(Enum):
    """What P3 of a compact (T=0 style) C-APDU counts."""

    LC = "Lc"  # command data follows: cases 1 (P3=00), 3 and 4
    LE = "Le"  # no command data: case 2 (P3=00 meaning 256)


# INS -> meaning of P3, for the commands a remote management script sends.
P3_MEANING: Final[Mapping[int, P3]] = {
    # ETSI TS 102 221 §10.1.2 Table 10.5 (and ISO/IEC 7816-4 Table 4)
    0xA4: P3.LC,  # SELECT
    0xB0: P3.LE,  # READ BINARY
    0xD6: P3.LC,  # UPDATE BINARY
    0xB2: P3.LE,  # READ RECORD
    0xDC: P3.LC,  # UPDATE RECORD
    0xA2: P3.LC,  # SEARCH RECORD
    0x32: P3.LC,  # INCREASE
    0xCB: P3.LC,  # RETRIEVE DATA (TS 102 221) / GET DATA odd INS (GP)
    0xDB: P3.LC,  # SET DATA
    0x20: P3.LC,  # VERIFY PIN (P3=00: case 1, retry counter query)
    0x24: P3.LC,  # CHANGE PIN
    0x26: P3.LC,  # DISABLE PIN
    0x28: P3.LC,  # ENABLE PIN
    0x2C: P3.LC,  # UNBLOCK PIN
    0x04: P3.LC,  # DEACTIVATE FILE
    0x44: P3.LC,  # ACTIVATE FILE
    0x88: P3.LC,  # AUTHENTICATE / INTERNAL AUTHENTICATE
    0x89: P3.LC,  # AUTHENTICATE (odd INS)
    0x84: P3.LE,  # GET CHALLENGE
    0xAA: P3.LC,  # TERMINAL CAPABILITY
    0x10: P3.LC,  # TERMINAL PROFILE
    0xC2: P3.LC,  # ENVELOPE
    0x12: P3.LE,  # FETCH
    0x14: P3.LC,  # TERMINAL RESPONSE
    0x70: P3.LE,  # MANAGE CHANNEL (open: Le=01; close: case 1, P3=00)
    0x73: P3.LC,  # MANAGE SECURE CHANNEL
    0x75: P3.LC,  # TRANSACT DATA
    0x76: P3.LC,  # SUSPEND UICC
    0xC0: P3.LE,  # GET RESPONSE
    # ETSI TS 102 222 (administrative commands; the case 1 ones send P3=00)
    0xE0: P3.LC,  # CREATE FILE
    0xD4: P3.LC,  # RESIZE FILE
    0xFE: P3.LC,  # TERMINATE CARD USAGE (case 1)
    # GlobalPlatform Card Specification 2.3 §11 (CLA 8X); same INS as some TS 102 222
    # commands (E4 DELETE FILE, E6 TERMINATE DF, E8 TERMINATE EF), which take P3 as Lc too
    0xE4: P3.LC,  # DELETE
    0xE6: P3.LC,  # INSTALL
    0xE8: P3.LC,  # LOAD
    0xD8: P3.LC,  # PUT KEY
    0xE2: P3.LC,  # STORE DATA (GP) / APPEND RECORD (ISO)
    0xF0: P3.LC,  # SET STATUS
    0xCA: P3.LE,  # GET DATA
    0x50: P3.LC,  # INITIALIZE UPDATE
    0x82: P3.LC,  # EXTERNAL AUTHENTICATE
    # 0xF2 depends on P1: see p3_meaning()
}

_INS_STATUS: Final = 0xF2


def p3_meaning(cla: int, ins: int, p1: int, overrides: Mapping[int, P3] | None = None) -> P3 | None:
    """Whether P3 of this command is Lc or Le in the compact format, or None if unknown.

    ``overrides`` (INS -> :class:`P3`) takes precedence, for proprietary instructions.
    INS ``F2`` is the TS 102 221 STATUS (P1 ``00``-``02``, P3 is Le) or the GlobalPlatform
    GET STATUS (P1 ``80``/``40``/``20``/``10``, P3 is Lc), told apart by the high nibble of
    P1. ``cla`` is accepted for symmetry and future use.
    """
    del cla  # the instructions above mean the same in every class they are used with
    if overrides is not None and ins in overrides:
        return overrides[ins]
    if ins == _INS_STATUS:
        return P3.LC if p1 & 0xF0 else P3.LE
    return P3_MEANING.get(ins)


def split_compact(
    secured_data: bytes, *, overrides: Mapping[int, P3] | None = None
) -> list[CommandApdu]:
    """Split the secured data of a compact command packet into its C-APDUs (§5.1.1)."""
    raw = bytes(secured_data)
    n = len(raw)
    out: list[CommandApdu] = []
    i = 0
    while i < n:
        rem = n - i
        if rem < 4:
            raise RemoteApduError(f"truncated C-APDU header at offset {i}: {rem} byte(s) left")
        cla, ins, p1, p2 = raw[i], raw[i + 1], raw[i + 2], raw[i + 3]
        if rem == 4:  # rule 2: a last case 1 command in ISO form
            out.append(CommandApdu(cla, ins, p1, p2))
            break
        p3 = raw[i + 4]
        kind = p3_meaning(cla, ins, p1, overrides)
        if kind is None:  # rule 5
            try:
                out.append(CommandApdu.from_short_bytes(raw[i:]))
            except ApduError as exc:
                raise RemoteApduError(
                    f"cannot split at offset {i}: INS {ins:02X} is not known to take Lc or Le"
                    f" in P3, and the {rem} remaining bytes are not one C-APDU ({exc})"
                ) from None
            break
        if kind is P3.LE:  # rule 4
            out.append(CommandApdu(cla, ins, p1, p2, le=p3 or 256))
            i += 5
            continue
        end = i + 5 + p3  # rule 3
        if end > n:
            raise RemoteApduError(
                f"C-APDU at offset {i} (INS {ins:02X}): Lc={p3} runs past the end of the data"
            )
        body = raw[i + 5 : end]
        if end == n - 1 and p3:
            out.append(CommandApdu(cla, ins, p1, p2, body, raw[end] or 256))
            break
        if end == n - 1:
            raise RemoteApduError(f"one stray byte after the C-APDU at offset {i}")
        out.append(CommandApdu(cla, ins, p1, p2, body))
        i = end
    return out


def build_compact(
    apdus: Sequence[CommandApdu], *, overrides: Mapping[int, P3] | None = None
) -> bytes:
    """Concatenate C-APDUs in the compact form of §5.1.1 (T=0 TPDUs, case 4 without Le)."""
    out = bytearray()
    for index, apdu in enumerate(apdus):
        if apdu.extended:
            raise RemoteApduError(
                f"C-APDU {index} needs extended length, which the compact format cannot carry"
            )
        kind = p3_meaning(apdu.cla, apdu.ins, apdu.p1, overrides)
        case = apdu.case
        if kind is P3.LC and case == 2:
            raise RemoteApduError(
                f"C-APDU {index}: INS {apdu.ins:02X} takes Lc in P3, so a case 2 command"
                " would be mis-split"
            )
        if kind is P3.LE and case in (3, 4):
            raise RemoteApduError(
                f"C-APDU {index}: INS {apdu.ins:02X} takes Le in P3, so command data"
                " would be mis-split"
            )
        out += apdu.header
        if case == 1:
            out.append(0)
        elif case == 2:
            assert apdu.le is not None
            out.append(apdu.le & 0xFF)
        else:
            out.append(len(apdu.data))
            out += apdu.data
    return bytes(out)


@dataclass(frozen=True, slots=True)
class RemoteResponse:
    """A remote management response (§5.1.2 compact, §5.2.2 expanded).

    ``executed``: the number of commands the card executed. ``last``: the R-APDU of the last
    executed command (compact: its status word, and its response data if it returned any).
    ``responses``: every R-APDU of an expanded response in order (empty for compact, which
    carries only the last). ``bad_format``: the Bad Format TLV of an expanded response.
    """

    executed: int
    last: ResponseApdu
    responses: tuple[ResponseApdu, ...] = ()
    bad_format: BadFormat | None = None

    @property
    def truncated(self) -> bool:
        """An expanded R-APDU ended in ``62F1``: its data was cut and the script stopped."""
        return any(r.sw == StatusWord.RESPONSE_TRUNCATED for r in self.responses) or (
            self.last.sw == StatusWord.RESPONSE_TRUNCATED
        )


def parse_compact_response(data: bytes) -> RemoteResponse:
    """Decode the compact response data: count, SW of the last command, its data."""
    raw = bytes(data)
    if len(raw) < 3:
        raise RemoteApduError(
            f"a compact response has a count and a status word (3 bytes), got {len(raw)}"
        )
    return RemoteResponse(raw[0], ResponseApdu(raw[3:], int.from_bytes(raw[1:3], "big")))


def build_compact_response(executed: int, last: ResponseApdu) -> bytes:
    """Encode the compact response data of §5.1.2."""
    if not 0 <= executed <= 0xFF:
        raise RemoteApduError(f"the executed count is one octet, got {executed}")
    return bytes([executed]) + last.sw.to_bytes(2, "big") + last.data


# -- expanded format ------------------------------------------------------------------------


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n > _MAX_BER_LENGTH:
        raise RemoteApduError(f"TLV value of {n} bytes is too long")
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _ber_length(len(value)) + value


def _read_length(raw: bytes, i: int, end: int) -> tuple[int, int]:
    """The definite BER length at ``raw[i]`` and the offset of the value."""
    if i >= end:
        raise RemoteApduError(
            f"length missing at offset {i}", bad_format=BadFormat.LENGTH_NOT_FOUND
        )
    first = raw[i]
    if first < 0x80:
        return first, i + 1
    size = first & 0x7F
    if first == _INDEFINITE or size > 3:
        raise RemoteApduError(
            f"unsupported length octet {first:02X} at offset {i}",
            bad_format=BadFormat.WRONG_LENGTH,
        )
    if i + 1 + size > end:
        raise RemoteApduError(
            f"length at offset {i} is truncated", bad_format=BadFormat.LENGTH_NOT_FOUND
        )
    return int.from_bytes(raw[i + 1 : i + 1 + size], "big"), i + 1 + size


def _items(raw: bytes, start: int, end: int) -> list[tuple[int, bytes, int]]:
    """The (tag, value, offset) items of a run of single-octet-tag definite TLVs."""
    out: list[tuple[int, bytes, int]] = []
    i = start
    while i < end:
        tag = raw[i]
        length, vstart = _read_length(raw, i + 1, end)
        vend = vstart + length
        if vend > end:
            raise RemoteApduError(
                f"TLV {tag:02X} at offset {i}: length {length} runs past its template",
                bad_format=BadFormat.WRONG_LENGTH,
            )
        out.append((tag, raw[vstart:vend], i))
        i = vend
    return out


def _template(raw: bytes, definite: int, indefinite: int, what: str) -> tuple[bool, int, int]:
    """Locate the content of a scripting template: (is_definite, start, end)."""
    if not raw:
        raise RemoteApduError(f"empty {what}")
    tag = raw[0]
    if tag == definite:
        length, start = _read_length(raw, 1, len(raw))
        if start + length != len(raw):
            raise RemoteApduError(
                f"{what} length {length} does not match the {len(raw) - start} bytes present",
                bad_format=BadFormat.WRONG_LENGTH,
            )
        return True, start, len(raw)
    if tag == indefinite:
        if len(raw) < 4 or raw[1] != _INDEFINITE:
            raise RemoteApduError(
                f"{what} tag {tag:02X} must be followed by the indefinite length 80",
                bad_format=BadFormat.WRONG_LENGTH,
            )
        return False, 2, len(raw)
    raise RemoteApduError(
        f"{what} must start with {definite:02X} or {indefinite:02X}, got {tag:02X}",
        bad_format=BadFormat.UNKNOWN_TAG,
    )


def _indefinite_items(raw: bytes, start: int) -> list[tuple[int, bytes, int]]:
    """Items of an indefinite-length template up to its end-of-contents ``00 00``."""
    out: list[tuple[int, bytes, int]] = []
    i = start
    n = len(raw)
    while True:
        if i >= n:
            raise RemoteApduError(
                "indefinite template without its end-of-contents 00 00",
                bad_format=BadFormat.LENGTH_NOT_FOUND,
            )
        if raw[i] == 0:
            if raw[i : i + 2] != _EOC or i + 2 != n:
                raise RemoteApduError(
                    f"bad end-of-contents at offset {i}", bad_format=BadFormat.WRONG_LENGTH
                )
            return out
        tag = raw[i]
        length, vstart = _read_length(raw, i + 1, n)
        vend = vstart + length
        if vend > n:
            raise RemoteApduError(
                f"TLV {tag:02X} at offset {i}: length {length} runs past the data",
                bad_format=BadFormat.WRONG_LENGTH,
            )
        out.append((tag, raw[vstart:vend], i))
        i = vend


def build_expanded(apdus: Sequence[CommandApdu], *, definite_length: bool = True) -> bytes:
    """A Command Scripting template (§5.2.1): ``AA`` definite or ``AE 80 .. 00 00``."""
    content = b"".join(_tlv(TAG_C_APDU, apdu.to_bytes()) for apdu in apdus)
    if definite_length:
        return _tlv(TAG_COMMAND_SCRIPTING_DEFINITE, content)
    return bytes([TAG_COMMAND_SCRIPTING_INDEFINITE, _INDEFINITE]) + content + _EOC


def parse_expanded(data: bytes) -> list[CommandApdu]:
    """The C-APDUs of a Command Scripting template (§5.2.1), definite or indefinite."""
    raw = bytes(data)
    definite, start, end = _template(
        raw, TAG_COMMAND_SCRIPTING_DEFINITE, TAG_COMMAND_SCRIPTING_INDEFINITE, "command script"
    )
    items = _items(raw, start, end) if definite else _indefinite_items(raw, start)
    out: list[CommandApdu] = []
    for tag, value, offset in items:
        if tag != TAG_C_APDU:
            raise RemoteApduError(
                f"unsupported TLV {tag:02X} at offset {offset} in a command script",
                bad_format=BadFormat.UNKNOWN_TAG,
            )
        try:
            out.append(CommandApdu.from_bytes(value))
        except ApduError as exc:
            raise RemoteApduError(
                f"C-APDU TLV at offset {offset}: {exc}", bad_format=BadFormat.WRONG_LENGTH
            ) from None
    return out


def build_expanded_response(
    responses: Sequence[ResponseApdu],
    *,
    executed: int | None = None,
    definite_length: bool = True,
    bad_format: BadFormat | None = None,
) -> bytes:
    """A Response Scripting template (§5.2.2).

    Definite (``AB``): the executed count (``executed``, by default the number of R-APDUs),
    the R-APDU TLVs, then the Bad Format TLV if given. Indefinite (``AF 80 .. 00 00``): the
    same without the count, which a reader takes to be the number of R-APDUs.
    """
    body = bytearray()
    if definite_length:
        count = len(responses) if executed is None else executed
        if not 0 <= count <= 0xFFFFFFFF:
            raise RemoteApduError(f"executed count must be 0..2**32-1, got {count}")
        size = max(1, (count.bit_length() + 7) // 8)
        body += _tlv(TAG_EXECUTED_COUNT, count.to_bytes(size, "big"))
    elif executed is not None and executed != len(responses):
        raise RemoteApduError("the indefinite form carries no count: executed must match")
    for r in responses:
        body += _tlv(TAG_R_APDU, r.to_bytes())
    if bad_format is not None:
        body += _tlv(TAG_BAD_FORMAT, bytes([bad_format]))
    if definite_length:
        return _tlv(TAG_RESPONSE_SCRIPTING_DEFINITE, bytes(body))
    return bytes([TAG_RESPONSE_SCRIPTING_INDEFINITE, _INDEFINITE]) + bytes(body) + _EOC


def parse_expanded_response(data: bytes) -> RemoteResponse:
    """Decode a Response Scripting template (§5.2.2), definite or indefinite."""
    raw = bytes(data)
    definite, start, end = _template(
        raw, TAG_RESPONSE_SCRIPTING_DEFINITE, TAG_RESPONSE_SCRIPTING_INDEFINITE, "response script"
    )
    items = _items(raw, start, end) if definite else _indefinite_items(raw, start)
    executed: int | None = None
    responses: list[ResponseApdu] = []
    bad: BadFormat | None = None
    for position, (tag, value, offset) in enumerate(items):
        if tag == TAG_EXECUTED_COUNT and position == 0:
            if not 1 <= len(value) <= 4:
                raise RemoteApduError(f"executed count of {len(value)} bytes at offset {offset}")
            executed = int.from_bytes(value, "big")
        elif tag == TAG_R_APDU:
            if bad is not None:
                raise RemoteApduError(f"R-APDU after the Bad Format TLV at offset {offset}")
            try:
                responses.append(ResponseApdu.from_bytes(value))
            except ApduError as exc:
                raise RemoteApduError(f"R-APDU TLV at offset {offset}: {exc}") from None
        elif tag == TAG_BAD_FORMAT and bad is None:
            try:
                if len(value) != 1:
                    raise ValueError
                bad = BadFormat(value[0])
            except ValueError:
                raise RemoteApduError(f"bad Bad Format TLV at offset {offset}") from None
        else:
            raise RemoteApduError(f"unexpected TLV {tag:02X} at offset {offset}")
    if definite and executed is None:
        raise RemoteApduError("definite response script without the executed-count TLV 80")
    count = len(responses) if executed is None else executed
    if not responses:
        reason = f"bad format: {bad.name.lower()}" if bad is not None else "no R-APDU"
        raise ScriptRejectedError(
            f"the card executed {count} command(s) and returned no R-APDU ({reason})",
            executed=count,
            bad_format=bad,
        )
    return RemoteResponse(count, responses[-1], tuple(responses), bad)
