"""calibration.instrument: the instrument interface, the simulated device, the least-squares
estimate of A and one phone's calibration."""

from __future__ import annotations

import math
import random
import statistics
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.instrument import (
    READING_DISTANCES_CM,
    InstrumentError,
    Reading,
    SimulatedInstrument,
    calibrate_phone,
    estimate_a,
    take_readings,
)
from calibration.rf import DEFAULT_MODEL, Profile, Refusal


def loss(d: float) -> float:
    """L(d) = 30 + 25 log10(d), written out independently of the code."""
    return 30 + 25 * math.log10(d)


def test_readings_are_taken_at_2_4_6_8_cm() -> None:
    """The instrument reads at 2, 4, 6 and 8 cm, in that order."""
    seen: list[float] = []

    class Recorder:
        def read_rssi(self, d_cm: float) -> float:
            seen.append(d_cm)
            return -50.0

    readings = take_readings(Recorder())
    assert READING_DISTANCES_CM == (2.0, 4.0, 6.0, 8.0)
    assert seen == [2.0, 4.0, 6.0, 8.0]
    assert readings[0] == Reading(2.0, -50.0)


def test_noise_free_readings_give_the_exact_a() -> None:
    """With no noise the estimate is the phone's own A."""
    inst = SimulatedInstrument(0, 17.3, random.Random(1), noise_sd=0.0)
    readings = take_readings(inst)
    assert readings[1].rssi_dbm == pytest.approx(0 - 17.3 - loss(4))
    assert estimate_a(readings, 0) == pytest.approx(17.3, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.5, 50), st.floats(-120, 0)),
        min_size=1,
        max_size=8,
    ),
    st.floats(-20, 10),
    st.floats(0.01, 5),
)
def test_estimate_is_the_least_squares_solution(
    readings: list[tuple[float, float]], p: float, delta: float
) -> None:
    """With the slope fixed by the model, the estimate zeroes the residual sum and any other
    A has a larger sum of squared residuals."""
    a = estimate_a(readings, p)

    def sse(x: float) -> float:
        return sum((r - (p - x - loss(d))) ** 2 for d, r in readings)

    residual_sum = sum(r - (p - a - loss(d)) for d, r in readings)
    assert abs(residual_sum) < 1e-6 * len(readings) * 100
    assert sse(a + delta) > sse(a)
    assert sse(a - delta) > sse(a)


def test_simulated_noise_has_the_stated_spread() -> None:
    """Readings scatter around the model with standard deviation about 0.7 dB (seeded)."""
    inst = SimulatedInstrument(0, 10, random.Random(42))
    clean = DEFAULT_MODEL.rssi(0, 10, 4)
    noise = [inst.read_rssi(4) - clean for _ in range(4000)]
    assert abs(statistics.fmean(noise)) < 0.05
    assert statistics.stdev(noise) == pytest.approx(0.7, rel=0.05)


def test_estimate_error_is_about_0_35_db() -> None:
    """Four readings at 0.7 dB give an estimate whose error has sd 0.7 / sqrt(4) = 0.35 dB."""
    rng = random.Random(7)
    errors = [
        estimate_a(take_readings(SimulatedInstrument(0, 15, rng)), 0) - 15 for _ in range(3000)
    ]
    assert statistics.stdev(errors) == pytest.approx(0.35, rel=0.06)


def test_calibrate_phone_gives_the_phones_profile() -> None:
    """calibrate_phone estimates A, rounds it to 0.1 dB and computes the profile for it."""
    result = calibrate_phone(SimulatedInstrument(0, 12.04, random.Random(3), noise_sd=0.0))
    assert result.a_db == Decimal("12.0")
    assert result.residual_rms_db == pytest.approx(0.0, abs=1e-9)
    assert result.outcome == DEFAULT_MODEL.compute_profile(Decimal("12.0"))
    assert isinstance(result.outcome, Profile)
    assert len(result.readings) == 4


def test_calibrate_phone_refuses_a_heavily_shielded_phone() -> None:
    """A phone at A = 29 dB gets a refusal from the instrument too."""
    result = calibrate_phone(SimulatedInstrument(0, 29, random.Random(5)))
    assert isinstance(result.outcome, Refusal)


def test_measurement_level_is_taken_into_account() -> None:
    """The estimate subtracts the level the card transmitted at while measured."""
    result = calibrate_phone(
        SimulatedInstrument(8, 20, random.Random(0), noise_sd=0.0), p_dbm=Decimal(8)
    )
    assert result.a_db == Decimal("20.0")


@pytest.mark.parametrize(
    ("readings", "words"),
    [
        ([], "no readings"),
        ([(0.1, -40.0)], "domain"),
        ([(60.0, -40.0)], "domain"),
        ([(2.0, float("nan"))], "finite"),
        ([(2.0,)], "pair"),
        ([("x", -40.0)], "pair"),
    ],
)
def test_bad_readings_raise_instrument_error(
    readings: list[tuple[float, float]], words: str
) -> None:
    """Empty, out-of-model or malformed readings raise InstrumentError saying why."""
    with pytest.raises(InstrumentError, match=words):
        estimate_a(readings, 0)


def test_absurd_estimate_is_refused() -> None:
    """An instrument reporting nonsense (+200 dBm) gives InstrumentError, not a profile."""

    class Broken:
        def read_rssi(self, d_cm: float) -> float:
            return 200.0

    with pytest.raises(InstrumentError, match="not a handset"):
        calibrate_phone(Broken())


def test_simulated_instrument_rejects_bad_settings() -> None:
    """Negative or non-finite noise, or non-finite P/A, raise InstrumentError; repr shows
    the simulation's settings."""
    with pytest.raises(InstrumentError):
        SimulatedInstrument(0, 10, random.Random(), noise_sd=-1)
    with pytest.raises(InstrumentError):
        SimulatedInstrument(0, float("inf"), random.Random())
    assert "a_db=10.0" in repr(SimulatedInstrument(0, 10, random.Random()))
    with pytest.raises(InstrumentError):
        SimulatedInstrument(0, 10, random.Random()).read_rssi(0.2)
