"""The handset table: handset models keyed by IMEI TAC (3GPP TS 23.003 §6.2.1, 8 digits), each
with its shielding ``A`` (0.0 to 30.0 dB, 0.1 dB resolution), its provenance and the
calibration profile the RF model (issue 6, :mod:`calibration.rf`) computes for it.

Learning from the instrument (issue 6): every instrument result (the A the business hall
measured for one phone) is recorded against its TAC. When the TAC is not yet in the table
and its latest ``learn_count`` (3) results agree, the model's A becomes their mean (rounded
to 0.1 dB, half to even) and the TAC becomes known with provenance ``instrument``; later
phones of that model are calibrated by SMS. "Agree on A within +-1 dB" is read as the issue
words it for the phones of one model: every one of those results lies within
``learn_tolerance_db`` (1 dB) of their mean, ends included (exact arithmetic). Only the
latest results count, so an outlier stops blocking once newer results outnumber it. A TAC
already known (from the lab, an import, or learnt) is not changed by instrument results.

CSV (UTF-8, comma-separated, RFC 4180 quoting, one header line exactly)::

    tac,model,a_db,provenance
    35209900,Example Phone X1,12.5,lab

``tac`` 8 digits, unique in the file; ``model`` a non-empty name; ``a_db`` a decimal number
0.0..30.0 with at most one decimal place; ``provenance`` one of ``lab``, ``instrument``,
``import``. The profile is not stored: it follows from ``a_db``. A bad file raises
:class:`CsvError` whose message is one line naming the line number; nothing is imported
from a file with any bad line. Export writes the rows sorted by TAC.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from fractions import Fraction
from typing import Final

from calibration.imei import Imei, ImeiError, parse_imei, validate_tac
from calibration.rf import DEFAULT_MODEL, Profile, Refusal, RfModel

__all__ = [
    "CSV_HEADER",
    "CsvError",
    "HandsetEntry",
    "HandsetModel",
    "HandsetTable",
    "LearnStatus",
    "Learning",
    "Provenance",
    "TableError",
    "format_csv",
    "parse_csv",
]

CSV_HEADER: Final = ("tac", "model", "a_db", "provenance")
A_MIN_DB: Final = Decimal(0)
A_MAX_DB: Final = Decimal(30)
_MODEL_NAME_MAX: Final = 100


class TableError(ValueError):
    """A handset model or instrument result that does not fit the table."""


class CsvError(TableError):
    """A bad CSV file; ``str()`` is one line naming the line number."""


class Provenance(Enum):
    """Where a handset model's A came from."""

    LAB = "lab"
    INSTRUMENT = "instrument"
    IMPORT = "import"


def _a_value(value: Decimal, what: str = "A") -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TableError(f"{what} must be a finite Decimal")
    if not A_MIN_DB <= value <= A_MAX_DB:
        raise TableError(f"{what} = {value} dB is out of range {A_MIN_DB}..{A_MAX_DB} dB")
    if value * 10 != (value * 10).to_integral_value():
        raise TableError(f"{what} = {value} dB has more than 0.1 dB resolution")
    return value.quantize(Decimal("0.1"))


def _check_tac(tac: str) -> str:
    try:
        return validate_tac(tac)
    except ImeiError as exc:
        raise TableError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class HandsetModel:
    """One handset model: TAC, name, shielding A (dB, 0.1 dB grid) and provenance."""

    tac: str
    name: str
    a_db: Decimal
    provenance: Provenance

    def __post_init__(self) -> None:
        _check_tac(self.tac)
        if not isinstance(self.name, str) or not self.name.strip():
            raise TableError("model name must be non-empty")
        if len(self.name) > _MODEL_NAME_MAX or not self.name.isprintable():
            raise TableError(f"model name must be printable, at most {_MODEL_NAME_MAX} chars")
        object.__setattr__(self, "a_db", _a_value(self.a_db))
        if not isinstance(self.provenance, Provenance):
            raise TableError("provenance must be a Provenance")


@dataclass(frozen=True, slots=True)
class HandsetEntry:
    """A model in the table with what the RF model makes of it."""

    model: HandsetModel
    calibration: Profile | Refusal

    @property
    def sms_calibratable(self) -> bool:
        """Whether phones of this model are calibrated over the air."""
        return isinstance(self.calibration, Profile)


class LearnStatus(Enum):
    """What an instrument result did to the table."""

    PENDING = "pending"  # recorded; the latest results do not (yet) agree
    LEARNED = "learned"  # the TAC became known with this result
    ALREADY_KNOWN = "already_known"  # the TAC was known; nothing changed
    OUT_OF_RANGE = "out_of_range"  # the phone's A is outside 0..30 dB: not recorded


@dataclass(frozen=True, slots=True)
class Learning:
    """The outcome of :meth:`HandsetTable.record_instrument_result`."""

    tac: str
    status: LearnStatus
    results: tuple[Decimal, ...]
    entry: HandsetEntry | None


def _agree(results: Sequence[Decimal], tolerance: Decimal) -> Fraction | None:
    """The exact mean of ``results`` when every one lies within ``tolerance`` of it."""
    values = [Fraction(r) for r in results]
    mean = sum(values, Fraction(0)) / len(values)
    if all(abs(v - mean) <= Fraction(tolerance) for v in values):
        return mean
    return None


class HandsetTable:
    """The in-memory handset table (storage-agnostic; persistence adapts it)."""

    def __init__(
        self,
        models: Iterable[HandsetModel] = (),
        *,
        rf_model: RfModel = DEFAULT_MODEL,
        learn_count: int = 3,
        learn_tolerance_db: Decimal = Decimal(1),
    ) -> None:
        if learn_count < 1:
            raise TableError("learn_count must be >= 1")
        if not isinstance(learn_tolerance_db, Decimal) or learn_tolerance_db < 0:
            raise TableError("learn_tolerance_db must be a Decimal >= 0")
        self._rf = rf_model
        self._learn_count = learn_count
        self._tolerance = learn_tolerance_db
        self._entries: dict[str, HandsetEntry] = {}
        self._results: dict[str, list[Decimal]] = {}
        self._names: dict[str, str] = {}
        for model in models:
            self.add(model)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tac: object) -> bool:
        return tac in self._entries

    def __iter__(self) -> Iterator[HandsetEntry]:
        """The entries sorted by TAC."""
        return iter([self._entries[tac] for tac in sorted(self._entries)])

    def add(self, model: HandsetModel) -> HandsetEntry:
        """Put ``model`` in the table (replacing its TAC's entry) and compute its profile."""
        entry = HandsetEntry(model, self._rf.compute_profile(model.a_db))
        self._entries[model.tac] = entry
        self._results.pop(model.tac, None)
        return entry

    def remove(self, tac: str) -> None:
        """Forget ``tac``'s model; :class:`TableError` if unknown."""
        if self._entries.pop(_check_tac(tac), None) is None:
            raise TableError(f"TAC {tac} is not in the table")

    def get(self, tac: str) -> HandsetEntry | None:
        """The entry for ``tac`` (8 digits), or None when the model is unknown."""
        return self._entries.get(_check_tac(tac))

    def lookup(self, imei: Imei | str) -> HandsetEntry | None:
        """The entry for the handset ``imei`` (an :class:`Imei` or its digits)."""
        if isinstance(imei, str):
            try:
                imei = parse_imei(imei)
            except ImeiError as exc:
                raise TableError(str(exc)) from None
        return self._entries.get(imei.tac)

    def instrument_results(self, tac: str) -> tuple[Decimal, ...]:
        """The instrument results recorded for an unknown ``tac``, oldest first."""
        return tuple(self._results.get(_check_tac(tac), ()))

    def record_instrument_result(self, tac: str, a_db: Decimal, *, name: str = "") -> Learning:
        """Record one phone's measured A for ``tac``; learn the model when the latest
        ``learn_count`` results agree (see the module docstring). A result outside the model
        range 0..30 dB (a single phone may lie up to the spread beyond it) is not recorded."""
        _check_tac(tac)
        if not isinstance(a_db, Decimal) or not a_db.is_finite():
            raise TableError("instrument A must be a finite Decimal")
        if tac in self._entries:
            return Learning(tac, LearnStatus.ALREADY_KNOWN, (), self._entries[tac])
        if not A_MIN_DB <= a_db <= A_MAX_DB:
            return Learning(tac, LearnStatus.OUT_OF_RANGE, self.instrument_results(tac), None)
        a = _a_value(a_db, "instrument A")
        if name.strip():
            self._names[tac] = name.strip()
        results = self._results.setdefault(tac, [])
        results.append(a)
        window = results[-self._learn_count :]
        if len(window) < self._learn_count:
            return Learning(tac, LearnStatus.PENDING, tuple(results), None)
        mean = _agree(window, self._tolerance)
        if mean is None:
            return Learning(tac, LearnStatus.PENDING, tuple(results), None)
        tenths = round(mean * 10)  # Fraction rounding: half to even
        model = HandsetModel(
            tac=tac,
            name=self._names.pop(tac, f"TAC {tac}"),
            a_db=Decimal(tenths).scaleb(-1),
            provenance=Provenance.INSTRUMENT,
        )
        entry = self.add(model)
        return Learning(tac, LearnStatus.LEARNED, tuple(window), entry)

    def import_csv(self, text: str) -> int:
        """Add every model of the CSV ``text`` (all or nothing); the number added."""
        models = parse_csv(text)
        for model in models:
            self.add(model)
        return len(models)

    def export_csv(self) -> str:
        """The table as CSV (:data:`CSV_HEADER`), sorted by TAC."""
        return format_csv(entry.model for entry in self)


def _parse_a(text: str, line: int) -> Decimal:
    if not text or text.strip() != text or "e" in text.lower():
        raise CsvError(f"line {line}: a_db must be a decimal number, got {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CsvError(f"line {line}: a_db must be a decimal number, got {text!r}") from None
    if not value.is_finite():
        raise CsvError(f"line {line}: a_db must be a decimal number, got {text!r}")
    try:
        return _a_value(value)
    except TableError as exc:
        raise CsvError(f"line {line}: {exc}") from None


def parse_csv(text: str) -> list[HandsetModel]:
    """The models of a handset-table CSV; :class:`CsvError` naming the line on bad input."""
    if not isinstance(text, str):
        raise CsvError("line 1: the CSV must be text")
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    models: list[HandsetModel] = []
    seen: dict[str, int] = {}
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
            raise CsvError(f"line 1: the header must be {','.join(CSV_HEADER)}")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(CSV_HEADER):
                raise CsvError(f"line {line}: expected {len(CSV_HEADER)} fields, got {len(row)}")
            tac, name, a_text, prov_text = row
            try:
                validate_tac(tac)
            except ImeiError as exc:
                raise CsvError(f"line {line}: {exc}") from None
            if tac in seen:
                raise CsvError(f"line {line}: TAC {tac} repeats line {seen[tac]}")
            a_db = _parse_a(a_text, line)
            try:
                provenance = Provenance(prov_text)
            except ValueError:
                choices = ", ".join(p.value for p in Provenance)
                raise CsvError(
                    f"line {line}: provenance must be one of {choices}, got {prov_text!r}"
                ) from None
            try:
                models.append(HandsetModel(tac, name, a_db, provenance))
            except TableError as exc:
                raise CsvError(f"line {line}: {exc}") from None
            seen[tac] = line
    except csv.Error as exc:
        raise CsvError(f"line {reader.line_num}: {exc}") from None
    return models


def format_csv(models: Iterable[HandsetModel]) -> str:
    """CSV text for ``models`` (in the given order), header first, CRLF line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for model in models:
        writer.writerow([model.tac, model.name, str(model.a_db), model.provenance.value])
    return out.getvalue()
