"""The RF distance model of the RF-SIM (issue 6) and the rule that turns a handset's
shielding into the card's transmit levels.

The model, fixed by issue 6 so that the card, the platform, the instrument and the tests
agree on it (constants in :class:`RfModel`, configuration section ``[calibration]``):

* the reader accepts the card when the received level ``RSSI(d) >= T``, ``T = -60 dBm``;
* ``RSSI(d) = P - A - L(d)``: ``P`` the card's transmit level (-20 to +10 dBm in 0.5 dB
  steps), ``A`` the handset's shielding (per model 0 to 30 dB, each phone of a model within
  +-1 dB of its model's value), ``L(d) = 30 + 25 log10(d / 1 cm)`` dB for 0.5 <= d <= 50 cm;
* hence the effective distance ``d_eff = 10 ** ((P - A - T - 30) / 25)`` cm.

The level rule (:meth:`RfModel.level`): for a band ``[lo, hi]`` (payment 3.0-5.0 cm, door
access 6.0-10.0 cm) the level aims at the band's middle in dB, the middle of the path-loss
interval ``[L(lo), L(hi)]``. Since ``L`` is affine in ``log10 d`` that middle is
``L(sqrt(lo * hi))``: aiming at the middle in dB and aiming at the geometric mean distance
(3.873 cm, 7.746 cm) are the same thing. The ideal level is
``P* = A + T + (L(lo) + L(hi)) / 2``; the level is the point of the P grid nearest to ``P*``
(an exact tie goes to the lower level, the shorter distance), clamped into the P range. It
is valid only when the whole spread lands inside the band: ``d_eff`` for ``A - 1`` and for
``A + 1`` both in ``[lo, hi]``, boundaries inclusive (``d_eff`` is monotonic in ``A``, so the
two ends decide for every phone in between). The valid levels form an interval of P
symmetric about ``P*``, so when the nearest grid point is not valid no other level is.

Exactness: every dB quantity is an integer number of tenths of a dB (``A`` has 0.1 dB
resolution, ``P`` a 0.5 dB grid) and every comparison against a logarithm is made in
integers: ``u <= s log10(d)`` (``u`` tenths, ``s`` the slope in tenths per decade) is
decided as ``10**u <= d**s`` with :class:`~fractions.Fraction`. No float takes part in a
decision; floats appear only in reported distances and RSSI values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import Enum
from fractions import Fraction
from typing import Final

__all__ = [
    "A_LIMIT_DB",
    "DEFAULT_MODEL",
    "Band",
    "BandKind",
    "Level",
    "Profile",
    "Refusal",
    "RfError",
    "RfModel",
    "Unavailable",
    "UnavailableReason",
    "compute_profile",
    "effective_distance",
    "quantize_db",
    "rssi",
]

#: The largest ``|A|`` the level rule accepts: a model's A is 0..30 dB (the handset table
#: enforces that), a single phone measured by the instrument may fall a little outside; the
#: bound only keeps the exact arithmetic small.
A_LIMIT_DB: Final = Decimal(100)

_DB_LIMIT_TENTHS: Final = 10_000  # constants of a model: |value| <= 1000 dB


class RfError(ValueError):
    """A value outside the RF model (wrong grid, out of range, not a number)."""


def quantize_db(value: float | Decimal | int) -> Decimal:
    """``value`` rounded to the 0.1 dB grid (half to even), as a Decimal with one place."""
    if isinstance(value, bool):
        raise RfError("a dB value must be a number, not a bool")
    try:
        dec = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    except (InvalidOperation, ValueError) as exc:
        raise RfError(f"not a dB value: {value!r}") from exc
    if not dec.is_finite() or abs(dec) > Decimal(10) ** 6:
        raise RfError(f"not a finite dB value of sensible size: {value!r}")
    out = dec.quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
    return out if out else Decimal("0.0")  # no "-0.0"


def _tenths(value: Decimal | int, what: str, limit: int = _DB_LIMIT_TENTHS) -> int:
    """``value`` (exact) in tenths of a dB; it must sit on the 0.1 dB grid within ``limit``."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise RfError(f"{what} must be a Decimal or an int (round floats with quantize_db)")
    dec = Decimal(value)
    if not dec.is_finite():
        raise RfError(f"{what} must be finite")
    scaled = dec.scaleb(1)
    if abs(scaled) > limit:
        raise RfError(f"{what} = {value} dB is out of range (|value| <= {limit // 10} dB)")
    if scaled != scaled.to_integral_value():
        raise RfError(f"{what} must be a multiple of 0.1 dB, not {value}")
    return int(scaled)


def _from_tenths(tenths: int) -> Decimal:
    return Decimal(tenths).scaleb(-1)


def _positive_fraction(value: Decimal | int, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise RfError(f"{what} must be a Decimal or an int")
    dec = Decimal(value)
    if not dec.is_finite() or dec <= 0 or dec > 10_000:
        raise RfError(f"{what} must be a positive distance in cm, not {value}")
    return Fraction(dec)


def _real(value: float | Decimal | int, what: str) -> float:
    if isinstance(value, bool):
        raise RfError(f"{what} must be a number, not a bool")
    out = float(value)
    if not math.isfinite(out):
        raise RfError(f"{what} must be finite")
    return out


class BandKind(Enum):
    """Which target band a level serves."""

    PAYMENT = "payment"
    DOOR = "door"


@dataclass(frozen=True, slots=True)
class Band:
    """A target band of effective distance, ``lo_cm <= d_eff <= hi_cm`` (inclusive)."""

    kind: BandKind
    lo_cm: Decimal
    hi_cm: Decimal

    def __post_init__(self) -> None:
        lo = _positive_fraction(self.lo_cm, f"{self.kind.value} band low end")
        hi = _positive_fraction(self.hi_cm, f"{self.kind.value} band high end")
        if lo >= hi:
            raise RfError(
                f"{self.kind.value} band must have lo < hi, not {self.lo_cm}..{self.hi_cm}"
            )

    @property
    def middle_cm(self) -> float:
        """The distance at the band's middle in dB: the geometric mean ``sqrt(lo * hi)``."""
        return math.sqrt(float(self.lo_cm) * float(self.hi_cm))


class UnavailableReason(Enum):
    """Why a band has no valid level for a given A."""

    #: the ideal level is above the P range and the top level leaves the band for A + spread:
    #: the handset shields too much
    NEEDS_MORE_POWER = "needs_more_power"
    #: the ideal level is below the P range and the bottom level overshoots for A - spread:
    #: the handset shields too little
    NEEDS_LESS_POWER = "needs_less_power"
    #: the spread (plus the grid's rounding) is wider than the band
    SPREAD_EXCEEDS_BAND = "spread_exceeds_band"


@dataclass(frozen=True, slots=True)
class Level:
    """A valid level: every phone within ``A +- spread`` lands in the band.

    ``d_near_cm`` is ``d_eff`` for ``A + spread`` (the most shielded phone, shortest reach),
    ``d_far_cm`` for ``A - spread``; ``clamped`` says the ideal level was outside the P range.
    """

    band: BandKind
    a_db: Decimal
    p_dbm: Decimal
    ideal_p_dbm: float
    clamped: bool
    d_eff_cm: float
    d_near_cm: float
    d_far_cm: float


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No valid level for this band; ``p_dbm`` is the level the rule tried."""

    band: BandKind
    a_db: Decimal
    reason: UnavailableReason
    p_dbm: Decimal
    ideal_p_dbm: float


@dataclass(frozen=True, slots=True)
class Profile:
    """A calibration profile: the payment level (always) and the door level, or why not."""

    a_db: Decimal
    payment: Level
    door: Level | Unavailable

    @property
    def door_p_dbm(self) -> Decimal | None:
        """The door-access level, or None when the handset cannot reach the door band."""
        return self.door.p_dbm if isinstance(self.door, Level) else None


@dataclass(frozen=True, slots=True)
class Refusal:
    """No valid payment level: the handset is not calibrated by SMS (business hall)."""

    a_db: Decimal
    payment: Unavailable

    @property
    def reason(self) -> UnavailableReason:
        """Why the payment level cannot be valid."""
        return self.payment.reason

    @property
    def message(self) -> str:
        """One line for operators and logs."""
        return (
            f"no valid payment level for A = {self.a_db} dB ({self.reason.value}): "
            "calibrate at a business hall"
        )


_PAYMENT: Final = Band(BandKind.PAYMENT, Decimal("3.0"), Decimal("5.0"))
_DOOR: Final = Band(BandKind.DOOR, Decimal("6.0"), Decimal("10.0"))


@dataclass(frozen=True, slots=True)
class RfModel:
    """The constants of the RF model (issue 6); all dB figures on the 0.1 dB grid."""

    threshold_dbm: Decimal = Decimal(-60)
    p_min_dbm: Decimal = Decimal(-20)
    p_max_dbm: Decimal = Decimal(10)
    p_step_db: Decimal = Decimal("0.5")
    a_min_db: Decimal = Decimal(0)
    a_max_db: Decimal = Decimal(30)
    spread_db: Decimal = Decimal(1)
    loss_at_1cm_db: Decimal = Decimal(30)
    loss_per_decade_db: Decimal = Decimal(25)
    d_min_cm: Decimal = Decimal("0.5")
    d_max_cm: Decimal = Decimal(50)
    payment: Band = _PAYMENT
    door: Band = _DOOR
    # the same figures in tenths of a dB, derived once
    _t: int = field(init=False, repr=False, compare=False)
    _p_min: int = field(init=False, repr=False, compare=False)
    _p_max: int = field(init=False, repr=False, compare=False)
    _p_step: int = field(init=False, repr=False, compare=False)
    _spread: int = field(init=False, repr=False, compare=False)
    _l1: int = field(init=False, repr=False, compare=False)
    _s: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_t", _tenths(self.threshold_dbm, "threshold_dbm"))
        p_min = _tenths(self.p_min_dbm, "p_min_dbm")
        p_max = _tenths(self.p_max_dbm, "p_max_dbm")
        step = _tenths(self.p_step_db, "p_step_db")
        if step <= 0:
            raise RfError("p_step_db must be > 0")
        if p_min > p_max or (p_max - p_min) % step:
            raise RfError("p_max_dbm - p_min_dbm must be a non-negative multiple of p_step_db")
        set_(self, "_p_min", p_min)
        set_(self, "_p_max", p_max)
        set_(self, "_p_step", step)
        if _tenths(self.a_min_db, "a_min_db") > _tenths(self.a_max_db, "a_max_db"):
            raise RfError("a_min_db must be <= a_max_db")
        spread = _tenths(self.spread_db, "spread_db")
        if spread < 0:
            raise RfError("spread_db must be >= 0")
        set_(self, "_spread", spread)
        set_(self, "_l1", _tenths(self.loss_at_1cm_db, "loss_at_1cm_db"))
        slope = _tenths(self.loss_per_decade_db, "loss_per_decade_db", limit=1000)
        if slope <= 0:
            raise RfError("loss_per_decade_db must be > 0")
        set_(self, "_s", slope)
        d_min = _positive_fraction(self.d_min_cm, "d_min_cm")
        d_max = _positive_fraction(self.d_max_cm, "d_max_cm")
        if d_min >= d_max:
            raise RfError("d_min_cm must be < d_max_cm")
        for band, kind in ((self.payment, BandKind.PAYMENT), (self.door, BandKind.DOOR)):
            if band.kind is not kind:
                raise RfError(f"the {kind.value} band must be of kind {kind.value}")
            if not d_min <= Fraction(band.lo_cm) < Fraction(band.hi_cm) <= d_max:
                raise RfError(f"the {kind.value} band must lie within d_min_cm..d_max_cm")

    # -- the physics (floats) ----------------------------------------------------------

    def loss(self, d_cm: float | Decimal | int) -> float:
        """``L(d)`` in dB; ``d`` must lie in the model's domain ``d_min_cm..d_max_cm``."""
        d = _real(d_cm, "distance")
        if not float(self.d_min_cm) <= d <= float(self.d_max_cm):
            raise RfError(
                f"distance {d} cm is outside the model's domain {self.d_min_cm}..{self.d_max_cm} cm"
            )
        return float(self.loss_at_1cm_db) + float(self.loss_per_decade_db) * math.log10(d)

    def rssi(
        self, p_dbm: float | Decimal | int, a_db: float | Decimal | int, d_cm: float | Decimal | int
    ) -> float:
        """``RSSI(d) = P - A - L(d)`` in dBm."""
        return _real(p_dbm, "P") - _real(a_db, "A") - self.loss(d_cm)

    def effective_distance(
        self, p_dbm: float | Decimal | int, a_db: float | Decimal | int
    ) -> float:
        """``d_eff = 10 ** ((P - A - T - L(1 cm)) / slope)`` in cm: the reader accepts the
        card exactly when it is no farther than this. Outside ``d_min_cm..d_max_cm`` the value
        is the formula's extrapolation."""
        exponent = (_real(p_dbm, "P") - _real(a_db, "A") - float(self.threshold_dbm)) - float(
            self.loss_at_1cm_db
        )
        return float(10.0 ** (exponent / float(self.loss_per_decade_db)))

    def accepts(
        self, p_dbm: float | Decimal | int, a_db: float | Decimal | int, d_cm: float | Decimal | int
    ) -> bool:
        """Whether the reader accepts the card at ``d``: ``RSSI(d) >= T``."""
        return self.rssi(p_dbm, a_db, d_cm) >= float(self.threshold_dbm)

    # -- the grid and the exact decisions ----------------------------------------------

    def levels(self) -> tuple[Decimal, ...]:
        """Every level of the P grid, lowest first."""
        return tuple(_from_tenths(t) for t in range(self._p_min, self._p_max + 1, self._p_step))

    def band(self, kind: BandKind) -> Band:
        """The band of ``kind``."""
        return self.payment if kind is BandKind.PAYMENT else self.door

    def _cmp(self, u: int, base: Fraction) -> int:
        """The sign of ``u - s * log10(base)`` (``u`` in tenths), decided exactly as the sign
        of ``10**u - base**s``."""
        left = Fraction(10) ** u
        right = base**self._s
        return (left > right) - (left < right)

    def _in_band(self, p: int, a: int, band: Band) -> bool:
        """Exact: ``lo <= d_eff(P, A) <= hi`` for ``P``, ``A`` in tenths (inclusive)."""
        u = p - a - self._t - self._l1
        return self._cmp(u, Fraction(band.lo_cm)) >= 0 and self._cmp(u, Fraction(band.hi_cm)) <= 0

    def in_band(self, p_dbm: Decimal | int, a_db: Decimal | int, kind: BandKind) -> bool:
        """Whether ``d_eff(P, A)`` lies in the band of ``kind`` (exact, ends included)."""
        return self._in_band(_tenths(p_dbm, "P"), _tenths(a_db, "A"), self.band(kind))

    def _ideal_float(self, a: int, band: Band) -> float:
        mid = float(self.loss_at_1cm_db) + float(self.loss_per_decade_db) * math.log10(
            band.middle_cm
        )
        return (a + self._t) / 10 + mid

    def _nearest_grid(self, a: int, band: Band) -> int:
        """The point of the unbounded P grid nearest to ``P*`` (tenths), ties downward.

        ``P* = c + y`` with ``c = A + T + L(1 cm)`` and ``y = (s / 2) log10(lo * hi)``; ``g`` is
        the answer when ``g - step/2 < P* <= g + step/2``, each side decided exactly by doubling
        it: ``2 (g - c) +- step`` against ``s log10(lo * hi)``.
        """
        c = a + self._t + self._l1
        lohi = Fraction(band.lo_cm) * Fraction(band.hi_cm)
        step = self._p_step
        k = round((self._ideal_float(a, band) * 10 - self._p_min) / step)
        g = self._p_min + k * step
        while self._cmp(2 * (g - c) + step, lohi) < 0:  # P* above g + step/2
            g += step
        while self._cmp(2 * (g - c) - step, lohi) >= 0:  # P* at or below g - step/2
            g -= step
        return g

    def _a_tenths(self, a_db: Decimal | int) -> int:
        return _tenths(a_db, "A", limit=int(A_LIMIT_DB) * 10)

    def level(self, a_db: Decimal | int, kind: BandKind) -> Level | Unavailable:
        """The level for band ``kind`` and shielding ``a_db`` (0.1 dB grid), or why none."""
        a = self._a_tenths(a_db)
        band = self.band(kind)
        a_dec = _from_tenths(a)
        ideal = self._ideal_float(a, band)
        g = self._nearest_grid(a, band)
        p = min(max(g, self._p_min), self._p_max)
        near, far = a + self._spread, a - self._spread
        if self._in_band(p, near, band) and self._in_band(p, far, band):
            p_dec = _from_tenths(p)
            return Level(
                band=kind,
                a_db=a_dec,
                p_dbm=p_dec,
                ideal_p_dbm=ideal,
                clamped=p != g,
                d_eff_cm=self.effective_distance(p_dec, a_dec),
                d_near_cm=self.effective_distance(p_dec, _from_tenths(near)),
                d_far_cm=self.effective_distance(p_dec, _from_tenths(far)),
            )
        if g > self._p_max:
            reason = UnavailableReason.NEEDS_MORE_POWER
        elif g < self._p_min:
            reason = UnavailableReason.NEEDS_LESS_POWER
        else:
            reason = UnavailableReason.SPREAD_EXCEEDS_BAND
        return Unavailable(
            band=kind, a_db=a_dec, reason=reason, p_dbm=_from_tenths(p), ideal_p_dbm=ideal
        )

    def compute_profile(self, a_db: Decimal | int) -> Profile | Refusal:
        """The calibration profile for shielding ``a_db``, or the refusal (business hall)."""
        payment = self.level(a_db, BandKind.PAYMENT)
        if isinstance(payment, Unavailable):
            return Refusal(a_db=payment.a_db, payment=payment)
        return Profile(a_db=payment.a_db, payment=payment, door=self.level(a_db, BandKind.DOOR))


#: The model exactly as issue 6 fixes it.
DEFAULT_MODEL: Final = RfModel()


def rssi(
    p_dbm: float | Decimal | int, a_db: float | Decimal | int, d_cm: float | Decimal | int
) -> float:
    """``RSSI(d) = P - A - L(d)`` in dBm, under :data:`DEFAULT_MODEL`."""
    return DEFAULT_MODEL.rssi(p_dbm, a_db, d_cm)


def effective_distance(p_dbm: float | Decimal | int, a_db: float | Decimal | int) -> float:
    """``d_eff`` in cm under :data:`DEFAULT_MODEL`."""
    return DEFAULT_MODEL.effective_distance(p_dbm, a_db)


def compute_profile(a_db: Decimal | int, model: RfModel = DEFAULT_MODEL) -> Profile | Refusal:
    """The calibration profile for shielding ``a_db`` (0.1 dB grid), or the refusal."""
    return model.compute_profile(a_db)
