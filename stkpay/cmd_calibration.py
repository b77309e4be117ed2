"""``stkpay calibration import|export|coverage`` and ``stkpay calibrate``: the handset table,
coverage figures, and instrument calibration at a business hall (issue 6, docs/calibration.md).

* ``stkpay calibration import FILE [--url URL]``: the handset-table CSV of
  docs/calibration.md into the calibration store (all or nothing; a bad file is one line
  naming its line number, exit 2).
* ``stkpay calibration export [FILE] [--url URL]``: the table as that CSV (stdout without FILE).
* ``stkpay calibration coverage [--json] [--url URL]``: active cards calibrated by SMS, by
  instrument, uncalibrated; the TACs holding cards back.
* ``stkpay calibrate --reader NAME [--imei IMEI] --instrument sim:A=12.3[,seed=N] [--json]``:
  reads the card's ICCID (EF 2FE2, ETSI TS 102 221 §13.2) through PC/SC, takes the
  instrument's readings at 2, 4, 6 and 8 cm, estimates this phone's A (least squares,
  :mod:`calibration.instrument`), computes its profile, writes EF 7F50/6F60 (method
  instrument), reads it back to verify, and reports to the platform store
  (:meth:`calibration.service.CalibrationService.on_instrument_result`). A handset whose
  payment level cannot be valid: one line, exit 2, nothing written. ``--imei`` defaults to
  the IMEI in the card's current calibration file.

The store URL: ``--url``, else ``$STKPAY_CALIBRATION_URL``, else
``sqlite:///var/stkpay-calibration.db``. The instrument is a device interface
(:class:`calibration.instrument.Instrument`); ``sim:`` selects the simulated one, driven by the
phone's own A with Gaussian reading noise (``[calibration] instrument_noise_sd_db``, 0.7 dB).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from stkpay.cli import CliError
from stkpay.config import Config

DEFAULT_URL: Final = "sqlite:///var/stkpay-calibration.db"
URL_ENV: Final = "STKPAY_CALIBRATION_URL"
EXIT_OK: Final = 0
EXIT_VERIFY: Final = 1

_ICCID_FID: Final = 0x2FE2


def store_url(args: argparse.Namespace, config: Config | None = None) -> str:
    """The calibration store URL: ``--url``, the environment, ``calibration.url``, or the
    default."""
    url: str | None = getattr(args, "url", None)
    configured = config.calibration.url if config is not None else None
    return url or os.environ.get(URL_ENV) or configured or DEFAULT_URL


def _open_store(args: argparse.Namespace, config: Config | None = None) -> Any:
    from calibration.store import CalibrationStore, StoreError  # noqa: PLC0415

    try:
        return CalibrationStore.open(store_url(args, config))
    except StoreError as exc:
        raise CliError(str(exc)) from None


def _now() -> datetime:
    return datetime.now(UTC)


# -- import / export / coverage ---------------------------------------------------------------


def _import(args: argparse.Namespace, config: Config) -> int:
    from calibration.store import StoreError  # noqa: PLC0415
    from calibration.table import CsvError, parse_csv  # noqa: PLC0415

    path: str = args.file
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        models = parse_csv(text)
    except CsvError as exc:
        raise CliError(f"{path}: {exc}") from None
    store = _open_store(args, config)
    try:
        count = store.put_models(models, at=_now())
    except StoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    print(f"imported {count} handset model(s) from {path}")
    return EXIT_OK


def _export(args: argparse.Namespace, config: Config) -> int:
    from calibration.store import StoreError  # noqa: PLC0415
    from calibration.table import format_csv  # noqa: PLC0415

    store = _open_store(args, config)
    try:
        text = format_csv(store.models())
    except StoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    if args.file is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(args.file).write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise CliError(f"{args.file}: cannot write: {exc.strerror or exc}") from None
    return EXIT_OK


def _coverage(args: argparse.Namespace, config: Config) -> int:
    from calibration.service import CalibrationService  # noqa: PLC0415
    from calibration.store import StoreError  # noqa: PLC0415

    store = _open_store(args, config)
    try:
        service = CalibrationService(
            store, ota=None, clock=_now, rf_model=config.calibration.rf_model()
        )
        cov = service.coverage()
    except StoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    if args.json:
        print(json.dumps(cov.to_json(), separators=(",", ":")))
        return EXIT_OK
    print(f"active cards: {cov.active}")
    for label, count in (
        ("calibrated by SMS", cov.sms),
        ("calibrated by instrument", cov.instrument),
        ("uncalibrated", cov.uncalibrated),
    ):
        print(f"  {label:<26}{count:>8}  {100 * cov.share(count):6.1f} %")
    if cov.tacs:
        print("TACs sent to a business hall (held back / cards / subscribers, status):")
        for t in cov.tacs:
            print(f"  {t.tac}  {t.held_back:>6} / {t.cards:>6} / {t.subscribers:>6}  {t.status}")
    return EXIT_OK


# -- calibrate ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimSpec:
    """``sim:A=12.3[,seed=N]``: the simulated instrument's phone A and random seed."""

    a_db: Decimal
    seed: int | None


def parse_instrument(spec: str) -> SimSpec:
    """Parse ``--instrument``; :class:`CliError` naming what is wrong."""
    kind, sep, rest = spec.partition(":")
    if kind != "sim" or not sep:
        raise CliError(f"--instrument: unknown instrument {spec!r} (supported: sim:A=DB[,seed=N])")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        if not eq or key not in ("A", "seed") or key in fields:
            raise CliError(f"--instrument: expected sim:A=DB[,seed=N], got {spec!r}")
        fields[key] = value
    if "A" not in fields:
        raise CliError("--instrument: sim: needs A=DB, the phone's shielding")
    try:
        a_db = Decimal(fields["A"])
    except InvalidOperation:
        raise CliError(f"--instrument: A must be a number of dB, got {fields['A']!r}") from None
    if not a_db.is_finite() or abs(a_db) > 100:
        raise CliError(f"--instrument: A must be a finite number within +-100 dB, got {a_db}")
    seed = None
    if "seed" in fields:
        if not fields["seed"].isdigit():
            raise CliError(
                f"--instrument: seed must be a non-negative integer, got {fields['seed']!r}"
            )
        seed = int(fields["seed"])
    return SimSpec(a_db, seed)


def _steps(apdus: Sequence[Any]) -> list[Any]:
    from ota.script import ScriptStep  # noqa: PLC0415

    return [ScriptStep(apdu, ("9000", "61XX"), line=i + 1) for i, apdu in enumerate(apdus)]


def _run(reader: str, apdus: Sequence[Any], doing: str) -> list[bytes]:
    """Run ``apdus`` on the card in ``reader``; the response data of each, or CliError."""
    from ota.pcsc import PcscError, run_script  # noqa: PLC0415

    try:
        result = run_script(_steps(apdus), reader=reader)
    except PcscError as exc:
        raise CliError(str(exc)) from None
    if not result.ok:
        bad = result.mismatches[0]
        raise CliError(
            f"{doing}: the card answered {bad.response.sw:04X} to {bad.apdu.hex().upper()}"
        )
    return [e.response.data for e in result.exchanges]


def _calibrate(args: argparse.Namespace, config: Config) -> int:
    from calibration.imei import ImeiError, parse_imei  # noqa: PLC0415
    from calibration.instrument import (  # noqa: PLC0415
        InstrumentError,
        SimulatedInstrument,
        calibrate_phone,
    )
    from calibration.profile import (  # noqa: PLC0415
        CalibrationRecord,
        Method,
        ProfileError,
        decode,
        encode,
    )
    from calibration.rf import Profile  # noqa: PLC0415
    from calibration.service import CalibrationService, ServiceError, calibration_apdus  # noqa: PLC0415
    from calibration.store import StoreError  # noqa: PLC0415
    from simcard.card import IccidError, decode_iccid  # noqa: PLC0415

    spec = parse_instrument(args.instrument)
    cal = config.calibration
    model = cal.rf_model()
    reader: str = args.reader

    # the card: ICCID and its current calibration file
    iccid_data, cal_data = _read_card(reader)
    try:
        iccid = decode_iccid(iccid_data)
    except IccidError as exc:
        raise CliError(f"the card's EF ICCID: {exc}") from None
    if args.imei is not None:
        try:
            imei = parse_imei(args.imei)
        except ImeiError as exc:
            raise CliError(f"--imei: {exc}") from None
    else:
        try:
            current = decode(cal_data)
        except ProfileError:
            current = None
        if current is None or current.imei is None:
            raise CliError("--imei is needed: the card's calibration file names no phone")
        imei = current.imei

    # measure and compute
    rng = random.Random(spec.seed)  # simulated reading noise, not cryptography
    instrument = SimulatedInstrument(
        Decimal(str(cal.instrument_level_dbm)),
        spec.a_db,
        rng,
        cal.instrument_noise_sd_db,
        model=model,
    )
    try:
        result = calibrate_phone(
            instrument,
            p_dbm=Decimal(str(cal.instrument_level_dbm)),
            distances=cal.instrument_distances_cm,
            model=model,
        )
    except InstrumentError as exc:
        raise CliError(f"instrument: {exc}") from None
    if not isinstance(result.outcome, Profile):
        raise CliError(
            f"card {iccid} in phone {imei}: measured A = {result.a_db} dB, "
            f"{result.outcome.message}; nothing written"
        )
    profile = result.outcome
    record = CalibrationRecord.from_profile(
        profile, imei=imei, method=Method.INSTRUMENT, on=_now().date()
    )
    raw = encode(record)

    # write and verify
    data = _run(reader, calibration_apdus(raw), "writing the calibration file")
    if data[-1] != raw:
        raise CliError(
            f"card {iccid}: the calibration file reads back {data[-1].hex().upper()}, "
            "not what was written",
            code=EXIT_VERIFY,
        )

    # report to the platform
    store = _open_store(args, config)
    try:
        service = CalibrationService(store, ota=None, clock=_now, rf_model=model)
        learning = service.on_instrument_result(
            iccid, imei, result.a_db, record, model_name=args.model or ""
        )
    except (StoreError, ServiceError) as exc:
        raise CliError(f"card {iccid} calibrated, but the platform was not told: {exc}") from None
    finally:
        store.close()
    door = profile.door_p_dbm
    out = {
        "iccid": iccid,
        "imei": imei.digits,
        "tac": imei.tac,
        "readings": [{"d_cm": r.d_cm, "rssi_dbm": round(r.rssi_dbm, 2)} for r in result.readings],
        "a_estimate_db": round(result.a_estimate_db, 3),
        "a_db": str(result.a_db),
        "residual_rms_db": round(result.residual_rms_db, 3),
        "payment_dbm": str(profile.payment.p_dbm),
        "payment_d_eff_cm": round(profile.payment.d_eff_cm, 2),
        "door_dbm": None if door is None else str(door),
        "file": raw.hex().upper(),
        "verified": True,
        "learning": learning.status.value,
    }
    if args.json:
        print(json.dumps(out, separators=(",", ":")))
        return EXIT_OK
    print(f"card {iccid} in phone {imei.digits} (TAC {imei.tac})")
    for r in result.readings:
        print(f"  {r.d_cm:4.1f} cm  {r.rssi_dbm:7.2f} dBm")
    print(
        f"A = {result.a_db} dB "
        f"(estimate {result.a_estimate_db:.2f}, rms {result.residual_rms_db:.2f})"
    )
    print(f"payment level {profile.payment.p_dbm} dBm (d_eff {profile.payment.d_eff_cm:.2f} cm)")
    print(f"door level {'unavailable' if door is None else f'{door} dBm'}")
    print(f"written to EF 7F50/6F60 and verified; platform: {learning.status.value}")
    return EXIT_OK


def _read_card(reader: str) -> tuple[bytes, bytes]:
    """EF ICCID and the calibration file of the card in ``reader``."""
    from ota.commands import SelectReturn, read_binary, select_by_fid, select_by_path  # noqa: PLC0415

    data = _run(
        reader,
        [
            select_by_fid(_ICCID_FID, returns=SelectReturn.NOTHING),
            read_binary(0, 10),
            select_by_path((0x7F50, 0x6F60), returns=SelectReturn.NOTHING),
            read_binary(0, 32),
        ],
        "reading the card",
    )
    return data[1], data[3]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``calibration`` command group and the ``calibrate`` command."""
    url_help = f"calibration store (default: ${URL_ENV} or {DEFAULT_URL})"
    group = sub.add_parser("calibration", help="handset table and calibration coverage")
    cmds = group.add_subparsers(dest="calibration_command", metavar="ACTION", required=True)

    p = cmds.add_parser("import", help="import a handset-table CSV (tac,model,a_db,provenance)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--url", help=url_help)
    p.set_defaults(func=_import)

    p = cmds.add_parser("export", help="export the handset table as CSV")
    p.add_argument("file", metavar="FILE", nargs="?", help="output file (default: stdout)")
    p.add_argument("--url", help=url_help)
    p.set_defaults(func=_export)

    p = cmds.add_parser("coverage", help="cards by calibration method; TACs holding cards back")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--url", help=url_help)
    p.set_defaults(func=_coverage)

    p = sub.add_parser(
        "calibrate",
        help="calibrate the card in a PC/SC reader with the instrument (business hall)",
        description="Read the card, measure the phone with the instrument at 2, 4, 6 and 8 cm, "
        "estimate its A, write the profile to EF 7F50/6F60, verify it and report it to the "
        "platform. Exit 2 (nothing written) when the handset cannot be calibrated.",
    )
    p.add_argument("--reader", required=True, metavar="NAME", help="PC/SC reader")
    p.add_argument("--imei", help="the phone's IMEI (default: the one in the card's file)")
    p.add_argument(
        "--instrument", required=True, metavar="SPEC", help="sim:A=DB[,seed=N] (simulated)"
    )
    p.add_argument("--model", help="the handset model's name (for a TAC the table learns)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--url", help=url_help)
    p.set_defaults(func=_calibrate)
