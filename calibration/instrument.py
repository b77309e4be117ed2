"""The business-hall calibration instrument (issue 6): a reader the phone is laid on, which
measures the card's received level at fixed distances, and the estimate of this phone's
shielding ``A`` from those readings.

* The device is an interface (:class:`Instrument`: ``read_rssi(d_cm) -> dBm``); the station
  drives it with the card transmitting at a known level ``P`` and takes readings at 2, 4, 6
  and 8 cm (:data:`READING_DISTANCES_CM`).
* :class:`SimulatedInstrument` is the simulated device driven by the virtual phone's own A:
  each reading is the model's ``RSSI(d) = P - A - L(d)`` (:mod:`calibration.rf`) plus
  Gaussian noise (standard deviation 0.7 dB by default) from an injected ``random.Random``.
* :func:`estimate_a` is the least-squares estimate of A. The model fixes ``L(d)`` (intercept
  and slope), so each reading gives ``A_i = P - L(d_i) - RSSI_i`` and the sum of squared
  residuals ``sum (RSSI_i - (P - A - L(d_i)))**2 = sum (A_i - A)**2`` is smallest at the mean
  of the ``A_i``: the estimate is that mean. Its standard error is ``sigma / sqrt(n)``
  (0.35 dB for 4 readings at 0.7 dB). A free slope would add a parameter the model already
  fixes and double the variance of the estimate at these distances.
* :func:`calibrate_phone` measures, estimates, rounds A to 0.1 dB and computes this phone's
  profile with the same rule as SMS calibration (:meth:`calibration.rf.RfModel.compute_profile`),
  whose +-1 dB spread margin also covers the estimate's error (see docs/calibration.md).

Sans-IO: the device is injected; nothing here touches PC/SC or a clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, NamedTuple, Protocol

from calibration.rf import (
    A_LIMIT_DB,
    DEFAULT_MODEL,
    Profile,
    Refusal,
    RfError,
    RfModel,
    quantize_db,
)

__all__ = [
    "DEFAULT_NOISE_SD_DB",
    "MEASUREMENT_LEVEL_DBM",
    "READING_DISTANCES_CM",
    "Instrument",
    "InstrumentError",
    "InstrumentResult",
    "Reading",
    "SimulatedInstrument",
    "calibrate_phone",
    "estimate_a",
    "take_readings",
]

#: The distances the instrument reads at (issue 6).
READING_DISTANCES_CM: Final = (2.0, 4.0, 6.0, 8.0)
#: The level the card is set to while it is measured.
MEASUREMENT_LEVEL_DBM: Final = Decimal(0)
#: The simulated instrument's reading noise (issue 6).
DEFAULT_NOISE_SD_DB: Final = 0.7


class InstrumentError(ValueError):
    """Readings that cannot give an estimate (none, out of the model, not numbers)."""


class Reading(NamedTuple):
    """One reading: the distance (cm) and the received level (dBm)."""

    d_cm: float
    rssi_dbm: float


class Instrument(Protocol):
    """The instrument device: the received level of the card at ``d_cm`` centimetres."""

    def read_rssi(self, d_cm: float) -> float:
        """The card's received level in dBm with the phone at ``d_cm`` cm."""
        ...


class SimulatedInstrument:
    """A simulated instrument measuring a phone of shielding ``a_db`` whose card transmits at
    ``p_dbm``; each reading carries Gaussian noise of ``noise_sd`` dB drawn from ``rng``."""

    def __init__(
        self,
        p_dbm: float | Decimal,
        a_db: float | Decimal,
        rng: random.Random,
        noise_sd: float = DEFAULT_NOISE_SD_DB,
        *,
        model: RfModel = DEFAULT_MODEL,
    ) -> None:
        if not (math.isfinite(noise_sd) and noise_sd >= 0):
            raise InstrumentError("noise_sd must be a finite number >= 0")
        self._p = float(p_dbm)
        self._a = float(a_db)
        if not (math.isfinite(self._p) and math.isfinite(self._a)):
            raise InstrumentError("P and A must be finite")
        self._rng = rng
        self._noise_sd = noise_sd
        self._model = model

    def __repr__(self) -> str:
        return f"SimulatedInstrument(p_dbm={self._p}, a_db={self._a}, noise_sd={self._noise_sd})"

    def read_rssi(self, d_cm: float) -> float:
        """The model's RSSI at ``d_cm`` plus the reading noise."""
        try:
            clean = self._model.rssi(self._p, self._a, d_cm)
        except RfError as exc:
            raise InstrumentError(str(exc)) from None
        return clean + self._rng.gauss(0.0, self._noise_sd)


def take_readings(
    instrument: Instrument, distances: Sequence[float] = READING_DISTANCES_CM
) -> tuple[Reading, ...]:
    """One reading per distance, in order."""
    return tuple(Reading(float(d), float(instrument.read_rssi(d))) for d in distances)


def _per_reading_a(
    readings: Sequence[tuple[float, float]], p_dbm: float | Decimal, model: RfModel
) -> list[float]:
    if not readings:
        raise InstrumentError("no readings")
    p = float(p_dbm)
    if not math.isfinite(p):
        raise InstrumentError("P must be finite")
    out: list[float] = []
    for i, reading in enumerate(readings):
        try:
            d, level = reading
            d, level = float(d), float(level)
        except (TypeError, ValueError):
            raise InstrumentError(f"reading {i} is not a (distance, rssi) pair") from None
        if not math.isfinite(level):
            raise InstrumentError(f"reading {i}: RSSI must be finite")
        try:
            loss = model.loss(d)
        except RfError as exc:
            raise InstrumentError(f"reading {i}: {exc}") from None
        out.append(p - loss - level)
    return out


def estimate_a(
    readings: Sequence[tuple[float, float]],
    p_dbm: float | Decimal,
    model: RfModel = DEFAULT_MODEL,
) -> float:
    """The least-squares estimate of A from ``(d_cm, rssi_dbm)`` readings taken with the card
    at ``p_dbm``: the mean of ``P - L(d_i) - RSSI_i`` (the slope of ``L`` is the model's)."""
    values = _per_reading_a(readings, p_dbm, model)
    return math.fsum(values) / len(values)


@dataclass(frozen=True, slots=True)
class InstrumentResult:
    """One instrument calibration: the readings, the estimate (raw and on the 0.1 dB grid),
    the RMS of the residuals (dB) and the profile or refusal for this phone."""

    p_dbm: Decimal
    readings: tuple[Reading, ...]
    a_estimate_db: float
    a_db: Decimal
    residual_rms_db: float
    outcome: Profile | Refusal


def calibrate_phone(
    instrument: Instrument,
    *,
    p_dbm: Decimal = MEASUREMENT_LEVEL_DBM,
    distances: Sequence[float] = READING_DISTANCES_CM,
    model: RfModel = DEFAULT_MODEL,
) -> InstrumentResult:
    """Measure the phone on ``instrument`` (card at ``p_dbm``), estimate its A and compute its
    profile; :class:`InstrumentError` if the readings cannot give an estimate."""
    readings = take_readings(instrument, distances)
    values = _per_reading_a(readings, p_dbm, model)
    estimate = math.fsum(values) / len(values)
    residual_rms = math.sqrt(math.fsum((v - estimate) ** 2 for v in values) / len(values))
    if not abs(estimate) <= float(A_LIMIT_DB):
        raise InstrumentError(
            f"estimated A {estimate:.1f} dB is beyond +-{A_LIMIT_DB} dB: not a handset reading"
        )
    a_db = quantize_db(estimate)
    return InstrumentResult(
        p_dbm=p_dbm,
        readings=readings,
        a_estimate_db=estimate,
        a_db=a_db,
        residual_rms_db=residual_rms,
        outcome=model.compute_profile(a_db),
    )
