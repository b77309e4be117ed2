"""calibration.imei: IMEI (Luhn check digit) and IMEISV validation, TAC extraction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibration.imei import Imei, ImeiError, luhn_check_digit, parse_imei, tac_of, validate_tac

# Valid IMEIs:
# - 260531793113837: the worked example of 3GPP TS 23.003 Annex B (check digit 7);
# - the rest: arthurdejong/python-stdnum, tests/test_imei.doctest ("Should be valid numbers").
VALID_IMEIS = ["260531793113837", "352099001761481", "350077523237513", "354178036859789"]
# IMEISVs from the same doctest: 16 digits, software version in place of the check digit.
VALID_IMEISVS = {"3520990017614823": "352099001761481", "3568680000414120": "356868000041418"}


@pytest.mark.parametrize("text", VALID_IMEIS)
def test_published_imeis_are_valid(text: str) -> None:
    """Published valid IMEIs parse, keep their digits and give their TAC and SNR."""
    imei = parse_imei(text)
    assert imei.digits == text
    assert str(imei) == text
    assert imei.tac == text[:8]
    assert imei.snr == text[8:14]
    assert imei.check_digit == int(text[14])
    assert imei.svn is None
    assert tac_of(text) == text[:8]


def test_annex_b_check_digit() -> None:
    """TS 23.003 Annex B: the check digit of 26053179311383 is 7; stdnum's doctest: 8 for
    35686800004141."""
    assert luhn_check_digit("26053179311383") == 7
    assert luhn_check_digit("35686800004141") == 8


def test_wrong_check_digit_is_refused_with_the_expected_digit() -> None:
    """354178036859782 (python-stdnum: invalid check digit) is refused, naming digit 9."""
    with pytest.raises(ImeiError, match="expected 9"):
        parse_imei("354178036859782")


@pytest.mark.parametrize(("text", "imei"), list(VALID_IMEISVS.items()))
def test_imeisv_is_accepted_as_the_same_handset(text: str, imei: str) -> None:
    """A 16-digit IMEISV gives the IMEI (check digit computed) and keeps the SVN aside."""
    parsed = parse_imei(text)
    assert parsed.digits == imei
    assert parsed.svn == text[14:]
    assert parsed.imeisv == text
    assert parsed == parse_imei(imei)  # the SVN is not part of the handset's identity


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "digits"),
        ("35209900176148", "got 14"),
        ("35209900176148123", "got 17"),
        ("35-209900-176148-1", "digits only"),
        ("35209900176148１", "digits only"),  # full-width digit: not ASCII
        (" 352099001761481", "digits only"),
    ],
)
def test_malformed_imei_is_refused(text: str, words: str) -> None:
    """Wrong length, separators, spaces or non-ASCII digits raise ImeiError saying why."""
    with pytest.raises(ImeiError, match=words):
        parse_imei(text)


def test_non_string_is_refused() -> None:
    """An IMEI given as an int raises ImeiError (leading zeros would be lost)."""
    with pytest.raises(ImeiError):
        parse_imei(352099001761481)  # type: ignore[arg-type]


@pytest.mark.parametrize("tac", ["3520990", "352099001", "3520990a", ""])
def test_bad_tac_is_refused(tac: str) -> None:
    """A TAC is exactly 8 decimal digits."""
    with pytest.raises(ImeiError):
        validate_tac(tac)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tac": "1234567", "snr": "123456"},
        {"tac": "12345678", "snr": "12345"},
        {"tac": "12345678", "snr": "123456", "svn": "1"},
    ],
)
def test_imei_fields_are_validated(kwargs: dict[str, str]) -> None:
    """Imei checks its TAC (8), SNR (6) and SVN (2) lengths."""
    with pytest.raises(ImeiError):
        Imei(**kwargs)


@given(st.from_regex(r"\A[0-9]{14}\Z"))
def test_check_digit_completes_any_body(body: str) -> None:
    """Body + its Luhn digit is a valid IMEI; every other 15th digit is refused."""
    cd = luhn_check_digit(body)
    assert parse_imei(body + str(cd)).body == body
    for other in set(range(10)) - {cd}:
        with pytest.raises(ImeiError):
            parse_imei(body + str(other))


@given(st.from_regex(r"\A[0-9]{14}\Z"), st.integers(0, 13), st.integers(1, 9))
def test_luhn_detects_any_single_digit_change(body: str, position: int, delta: int) -> None:
    """Changing one digit of a valid IMEI always breaks the check (Luhn's guarantee)."""
    valid = body + str(luhn_check_digit(body))
    changed = valid[:position] + str((int(valid[position]) + delta) % 10) + valid[position + 1 :]
    with pytest.raises(ImeiError):
        parse_imei(changed)


@given(st.text(max_size=20))
def test_arbitrary_text_raises_only_imei_error(text: str) -> None:
    """Any text parses to an Imei or raises ImeiError, never another exception."""
    try:
        imei = parse_imei(text)
    except ImeiError:
        return
    assert imei.digits[:14] == text[:14]
