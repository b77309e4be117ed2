"""Tests for ota.script: the APDU script file format (parse, format, status word patterns)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ota.script
from ota.apdu import CommandApdu
from ota.script import (
    DEFAULT_EXPECT,
    ScriptError,
    ScriptStep,
    check_pattern,
    format_script,
    parse_script,
    sw_matches,
)

EXAMPLE = """\
# update EF.SPN of the USIM
00A4000402 3F00  -> 9000|61XX    # MF
00a4000402 7fff
\t00A4000402 6F46 -> 9000, 61xx
00D6000011 00 73746B706179 FFFFFFFFFFFFFFFFFFFF -> 9000

00B0000011 -> 9000 | 6CXX  # read it back
"""


def test_example_parses() -> None:
    """The example script gives five steps with their lines, patterns and comments."""
    steps = parse_script(EXAMPLE, source="spn.apdu")
    assert [s.line for s in steps] == [2, 3, 4, 5, 7]
    assert steps[0] == ScriptStep(
        CommandApdu(0, 0xA4, 0, 4, bytes.fromhex("3F00")), ("9000", "61XX"), 2, "MF"
    )
    assert steps[1].expect == DEFAULT_EXPECT
    assert steps[1].comment == ""
    assert steps[2].expect == ("9000", "61XX")
    assert steps[3].apdu.data == bytes.fromhex("0073746B706179") + b"\xff" * 10
    assert steps[4].apdu == CommandApdu(0, 0xB0, 0, 0, le=0x11)
    assert steps[4].expect == ("9000", "6CXX")
    assert steps[4].comment == "read it back"


def test_module_docstring_example_parses() -> None:
    """The example in the module docstring (and in docs) is a valid script."""
    doc = ota.script.__doc__ or ""
    block = doc.split("Example::\n\n", 1)[1].split("\n\n", 1)[0]
    text = "\n".join(line.removeprefix("    ") for line in block.splitlines())
    steps = parse_script(text)
    assert len(steps) == 4
    assert steps[3].apdu.ins == 0xD6


def test_crlf_and_no_final_newline() -> None:
    """CRLF line ends and a missing final newline are accepted."""
    steps = parse_script("00A40004023F00\r\n00B0000001 -> 9000")
    assert [s.line for s in steps] == [1, 2]
    assert steps[1].expect == ("9000",)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("00A40004023F00\n00A4000402 3F0 -> 9000\n", 2, "hex group 2"),
        ("00A40004023F00\n\n00A40004023F00 -> 90\n", 3, "expected status word 1"),
        ("00A40004023F00 -> 9000|\n", 1, "expected status word 2"),
        ("00A40004023F00 -> 9000 -> 6A82\n", 1, "more than one"),
        ("-> 9000\n", 1, "no APDU"),
        ("00A4\n", 1, "not a C-APDU"),
        ("00A4000402\n00A40004023F000000\n", 2, "not a C-APDU"),
        ("@tar B00001\n", 1, "directives"),
        ("0G\n", 1, "hex group 1"),
    ],
)
def test_malformed_lines_name_source_and_line(text: str, line: int, reason: str) -> None:
    """Each malformed line raises ScriptError 'source:line: reason'."""
    with pytest.raises(ScriptError, match=f"^card.apdu:{line}: .*{reason}"):
        parse_script(text, source="card.apdu")


def test_error_never_echoes_the_line() -> None:
    """A broken VERIFY PIN line is reported without its digits (no secret in messages)."""
    with pytest.raises(ScriptError) as info:
        parse_script("0020000108 31323334FFFFFFF\n")
    assert "3132" not in str(info.value)
    assert "FFFF" not in str(info.value)


def test_patterns() -> None:
    """check_pattern upper-cases valid patterns; sw_matches compares nibble by nibble."""
    assert check_pattern("61xx") == "61XX"
    assert sw_matches("9000", 0x9000)
    assert not sw_matches("9000", 0x9001)
    assert sw_matches("61XX", 0x6132)
    assert sw_matches("6x8x", 0x6A82)
    assert not sw_matches("6x8x", 0x6A92)
    assert sw_matches("XXXX", 0x0000)
    for bad in ("900", "90000", "9G00", "", " 900"):
        with pytest.raises(ScriptError):
            check_pattern(bad)
    with pytest.raises(ScriptError):
        sw_matches("9000", 0x10000)


@given(st.integers(0, 0xFFFF), st.lists(st.booleans(), min_size=4, max_size=4))
def test_pattern_from_sw_matches_it(sw: int, wild: list[bool]) -> None:
    """A pattern made from a status word, any nibbles wildcarded, matches that word."""
    text = "".join("X" if w else c for w, c in zip(wild, f"{sw:04X}", strict=True))
    assert sw_matches(text, sw)
    assert sw_matches(text.lower(), sw)


def test_step_validation() -> None:
    """ScriptStep refuses empty or lower-case patterns, line 0 and multi-line comments."""
    apdu = CommandApdu(0, 0xA4, 0, 0, b"\x3f\x00")
    with pytest.raises(ScriptError):
        ScriptStep(apdu, ())
    with pytest.raises(ScriptError):
        ScriptStep(apdu, ("61xx",))
    with pytest.raises(ScriptError):
        ScriptStep(apdu, line=0)
    with pytest.raises(ScriptError):
        ScriptStep(apdu, comment="two\nlines")
    with pytest.raises(ScriptError):
        ScriptStep(apdu, comment=" padded")
    assert ScriptStep(apdu, ("6XXX",)).accepts(0x6A82)


def test_format_refuses_unordered_lines() -> None:
    """format_script needs strictly increasing line numbers."""
    apdu = CommandApdu(0, 0xA4, 0, 0, b"\x3f\x00")
    with pytest.raises(ScriptError, match="increase"):
        format_script([ScriptStep(apdu, line=3), ScriptStep(apdu, line=3)])


def test_format_example() -> None:
    """format_script writes APDU, arrow, patterns and comment; blank lines keep numbering."""
    steps = parse_script(EXAMPLE)
    text = format_script(steps)
    assert text.splitlines()[1] == "00A40004023F00 -> 9000|61XX  # MF"
    assert text.splitlines()[0] == ""
    assert parse_script(text) == steps
    assert format_script([]) == ""


byte = st.integers(0, 255)
apdus = st.builds(
    CommandApdu,
    byte,
    byte,
    byte,
    byte,
    st.one_of(st.binary(max_size=30), st.binary(min_size=256, max_size=260)),
    st.one_of(st.none(), st.integers(1, 65536)),
)
patterns = st.text(alphabet="0123456789ABCDEFX", min_size=4, max_size=4)
comments = st.text(
    alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
    max_size=20,
).map(str.strip)


@given(
    st.lists(
        st.tuples(apdus, st.lists(patterns, min_size=1, max_size=3), comments, st.integers(0, 3)),
        max_size=8,
    )
)
def test_format_parse_round_trip(
    items: list[tuple[CommandApdu, list[str], str, int]],
) -> None:
    """parse_script(format_script(steps)) == steps, comments and line numbers included."""
    steps = []
    line = 0
    for apdu, expect, comment, gap in items:
        line += 1 + gap
        steps.append(ScriptStep(apdu, tuple(expect), line, comment))
    assert parse_script(format_script(steps)) == steps


@given(st.text(alphabet="0123456789abcdefABCDEF xX#->|,@\n\r\tg", max_size=80))
def test_arbitrary_text_raises_only_script_error(text: str) -> None:
    """parse_script returns steps or raises ScriptError, whatever the text."""
    try:
        steps = parse_script(text)
    except ScriptError:
        return
    assert all(isinstance(s, ScriptStep) for s in steps)
