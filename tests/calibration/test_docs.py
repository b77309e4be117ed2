"""Keeps docs/calibration.md true: the worked-example table after
``<!-- check: worked-examples -->`` is rebuilt row by row from ``calibration.rf`` (A = 0, 10,
20, 27, 29 dB), and the ``hex vector=sms-record`` block must be the bytes
``calibration.profile`` encodes. A failing row prints the row the code produces."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from calibration.imei import parse_imei
from calibration.profile import CalibrationRecord, Method, decode, encode
from calibration.rf import DEFAULT_MODEL, BandKind, Level, Refusal, compute_profile
from tests.docvectors import doc_vectors

DOC = Path(__file__).resolve().parents[2] / "docs" / "calibration.md"
WORKED_A = ["0.0", "10.0", "20.0", "27.0", "29.0"]


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def checked_table(name: str) -> list[list[str]]:
    """The body rows (cells stripped) of the table after ``<!-- check: name -->``."""
    lines = doc_text().splitlines()
    start = lines.index(f"<!-- check: {name} -->") + 1
    rows: list[list[str]] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[2:]  # skip header and separator


def _dbm(value: float | Decimal) -> str:
    return f"{value:+.2f}" if isinstance(value, float) else f"{value:+.1f}"


def _distances(level: Level) -> str:
    return f"{level.d_near_cm:.2f} / {level.d_eff_cm:.2f} / {level.d_far_cm:.2f}"


def expected_row(a_text: str) -> list[str]:
    """The worked-example row for A as the code computes it."""
    a = Decimal(a_text)
    outcome = compute_profile(a)
    door = DEFAULT_MODEL.level(a, BandKind.DOOR)
    if isinstance(outcome, Refusal):
        payment_p = f"refused: {outcome.reason.value}"
        return [
            a_text,
            _dbm(outcome.payment.ideal_p_dbm),
            payment_p,
            "-",
            _dbm(door.ideal_p_dbm),
            "-",
            "-",
            "refusal",
        ]
    pay = outcome.payment
    pay_p = _dbm(pay.p_dbm) + (" (clamped)" if pay.clamped else "")
    if isinstance(outcome.door, Level):
        door_p = _dbm(outcome.door.p_dbm) + (" (clamped)" if outcome.door.clamped else "")
        door_d = _distances(outcome.door)
    else:
        door_p = f"unavailable: {outcome.door.reason.value}"
        door_d = "-"
    return [
        a_text,
        _dbm(pay.ideal_p_dbm),
        pay_p,
        _distances(pay),
        _dbm(door.ideal_p_dbm),
        door_p,
        door_d,
        "profile",
    ]


def test_worked_examples_cover_the_issue_values() -> None:
    """The doc's table lists exactly A = 0, 10, 20, 27 and 29 dB, in that order."""
    assert [row[0] for row in checked_table("worked-examples")] == WORKED_A


@pytest.mark.parametrize("a_text", WORKED_A)
def test_worked_example_row_matches_the_code(a_text: str) -> None:
    """Each row (levels, distances, refusal) is what calibration.rf computes for that A."""
    rows = {row[0]: row for row in checked_table("worked-examples")}
    expected = expected_row(a_text)
    assert rows[a_text] == expected, "code gives: | " + " | ".join(expected) + " |"


def hex_vector(name: str) -> bytes:
    """The octets of the fenced block ``hex vector=name``."""
    vectors = doc_vectors(doc_text())
    assert name in vectors, f"no hex vector {name} in {DOC}"
    return vectors[name]


def test_sms_record_vector_matches_the_encoder() -> None:
    """The documented calibration file is what the encoder writes for the SMS example."""
    outcome = compute_profile(Decimal("10.0"))
    assert not isinstance(outcome, Refusal)
    record = CalibrationRecord.from_profile(
        outcome,
        imei=parse_imei("260531793113837"),
        method=Method.SMS,
        on=dt.date(2024, 3, 15),
    )
    data = encode(record)
    assert hex_vector("sms-record") == data, "code gives: " + data.hex(" ").upper()
    assert decode(hex_vector("sms-record")) == record
