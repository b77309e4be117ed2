"""APDU script files: the text format operations staff write, and that both the OTA campaigns
(each line one C-APDU of a TS 102 226 remote script) and the PC/SC runner (``stkpay card
run``) execute.

Format
======

* UTF-8 text, one C-APDU per line. Line ends are ``\\n`` (a ``\\r`` before it is ignored).
* ``#`` starts a comment that runs to the end of the line. Blank lines and comment-only lines
  are ignored. A comment after an APDU stays attached to its step (``ScriptStep.comment``).
* The APDU is written in hexadecimal, upper or lower case, as a complete ISO/IEC 7816-4
  C-APDU (short or extended length, decoded by the ISO/IEC 7816-3 §12.1.3 rules): header,
  then Lc and data, then Le, as the case requires. Spaces or tabs may separate groups of
  digits, but not split a byte (each group has an even number of digits).
* The APDU may be followed by ``->`` and one or more expected status word patterns separated
  by ``|`` or ``,``. A pattern is four characters, each a hex digit or ``X`` (any nibble):
  ``9000``, ``61XX``, ``6A82``, ``9XXX``. The step passes when the status word matches any of
  them. Without ``->`` a step expects ``9000`` or ``61XX``.
* A line starting with ``@`` is reserved for directives (``@name value``); none is defined
  yet, so such a line is an error rather than silently ignored.

Example::

    # update EF.SPN (USIM) with "stkpay"
    00A4000402 3F00            -> 9000|61XX   # MF
    00A4000402 7FFF                           # ADF.USIM (current application)
    00A4000402 6F46            -> 9000, 61XX
    00D6000011 00 73746B706179 FFFFFFFFFFFFFFFFFFFF -> 9000

:func:`parse_script` raises :class:`ScriptError` with ``source:line: reason``; the message
never repeats the line's content, which may carry a PIN or a key. :func:`format_script`
writes steps back so that ``parse_script(format_script(steps)) == steps``: each step goes
on its own line number, with blank lines in between, and its comment after ``#``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ota.apdu import ApduError, CommandApdu

__all__ = [
    "DEFAULT_EXPECT",
    "ScriptError",
    "ScriptStep",
    "check_pattern",
    "format_script",
    "parse_script",
    "sw_matches",
]

DEFAULT_EXPECT: Final[tuple[str, ...]] = ("9000", "61XX")

_PATTERN: Final = re.compile(r"[0-9A-Fa-fXx]{4}")
_HEX_GROUP: Final = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_SEPARATORS: Final = re.compile(r"[|,]")


class ScriptError(ValueError):
    """A malformed script line or step; the message names the source and line."""


def check_pattern(pattern: str) -> str:
    """Validate a status word pattern and return it upper-cased (``61xx`` -> ``61XX``)."""
    if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
        raise ScriptError(
            "a status word pattern is 4 characters, each a hex digit or X (e.g. 9000, 61XX)"
        )
    return pattern.upper()


def sw_matches(pattern: str, sw: int) -> bool:
    """True when the status word ``sw`` matches ``pattern`` nibble by nibble."""
    normal = check_pattern(pattern)
    if not 0 <= sw <= 0xFFFF:
        raise ScriptError(f"a status word is 0..0xFFFF, got {sw}")
    actual = f"{sw:04X}"
    return all(p in ("X", a) for p, a in zip(normal, actual, strict=True))


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One line of a script: the C-APDU, the accepted status words, where it was, its comment."""

    apdu: CommandApdu
    expect: tuple[str, ...] = DEFAULT_EXPECT
    line: int = 1
    comment: str = ""

    def __post_init__(self) -> None:
        if not self.expect:
            raise ScriptError("a step expects at least one status word pattern")
        for pattern in self.expect:
            if check_pattern(pattern) != pattern:
                raise ScriptError("status word patterns are stored upper-case")
        if self.line < 1:
            raise ScriptError(f"line numbers start at 1, got {self.line}")
        if "\n" in self.comment or "\r" in self.comment or self.comment != self.comment.strip():
            raise ScriptError("a comment is one line without surrounding whitespace")

    def accepts(self, sw: int) -> bool:
        """True when ``sw`` matches one of the expected patterns."""
        return any(sw_matches(p, sw) for p in self.expect)


def _parse_hex(text: str, where: str) -> bytes:
    groups = text.split()
    if not groups:
        raise ScriptError(f"{where}: no APDU before '->'")
    for number, group in enumerate(groups, 1):
        if not _HEX_GROUP.fullmatch(group):
            raise ScriptError(f"{where}: hex group {number} is not an even number of hex digits")
    return bytes.fromhex("".join(groups))


def _parse_expect(text: str, where: str) -> tuple[str, ...]:
    out: list[str] = []
    for number, item in enumerate(_SEPARATORS.split(text), 1):
        try:
            out.append(check_pattern(item.strip()))
        except ScriptError as exc:
            raise ScriptError(f"{where}: expected status word {number}: {exc}") from None
    return tuple(out)


def parse_script(text: str, *, source: str = "<script>") -> list[ScriptStep]:
    """Parse a script into its steps; raise :class:`ScriptError` naming the bad line."""
    steps: list[ScriptStep] = []
    for number, raw_line in enumerate(text.split("\n"), 1):
        line = raw_line.removesuffix("\r")
        where = f"{source}:{number}"
        content, hash_mark, comment = line.partition("#")
        content = content.strip()
        if not content:
            continue
        if "\r" in content:
            raise ScriptError(f"{where}: stray carriage return")
        if content.startswith("@"):
            raise ScriptError(f"{where}: directives ('@name value') are reserved, none defined")
        apdu_text, arrow, expect_text = content.partition("->")
        if "->" in expect_text:
            raise ScriptError(f"{where}: more than one '->'")
        raw = _parse_hex(apdu_text, where)
        try:
            apdu = CommandApdu.from_bytes(raw)
        except ApduError as exc:
            raise ScriptError(f"{where}: not a C-APDU: {exc}") from None
        expect = _parse_expect(expect_text, where) if arrow else DEFAULT_EXPECT
        note = comment.strip() if hash_mark else ""
        if "\r" in note:
            raise ScriptError(f"{where}: stray carriage return in the comment")
        steps.append(ScriptStep(apdu, expect, number, note))
    return steps


def format_script(steps: Sequence[ScriptStep]) -> str:
    """Write steps as script text, each on its own line number (see the module docstring)."""
    lines: list[str] = []
    for step in steps:
        if step.line <= len(lines):
            raise ScriptError(
                f"step at line {step.line} does not come after line {len(lines)}:"
                " line numbers must increase"
            )
        lines.extend([""] * (step.line - len(lines) - 1))
        text = f"{step.apdu.to_bytes().hex().upper()} -> {'|'.join(step.expect)}"
        if step.comment:
            text += f"  # {step.comment}"
        lines.append(text)
    return "\n".join(lines) + "\n" if lines else ""
