"""stkpay calibration import|export|coverage and stkpay calibrate (through pcscd + vpcd
against the virtual card on vpcd slot 1), run through a parser built as stkpay.cli.main
builds its own (so the tests do not depend on when the group is wired into stkpay.cli).

The PC/SC test skips when pcscd with the vpcd reader "Virtual PCD 00 01" is not reachable,
except under ``CI=true`` where it fails. tests/ota/test_pcsc.py holds slot 0 with a module
fixture, so this module serves its card on slot 1 (port 35964).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from calibration.imei import parse_imei
from calibration.profile import Method, decode
from calibration.rf import DEFAULT_MODEL
from calibration.store import CalibrationStore
from ota.pcsc import PcscError, list_readers
from simcard.card import CALIBRATION_PATH
from stkpay import cmd_calibration
from stkpay.cli import EXIT_USAGE, CliError, _Parser
from stkpay.config import Config
from tests.vpcd import WatchedCard, require_pcscd, served_card

READER = "Virtual PCD 00 01"  # vpcd slot 1
VPCD_PORT = 35964  # slot 1 = 35963 + 1 (vsmartcard vpcd.h VPCDPORT)
ICCID = "89860012345678905555"
IMEI = "260531793113837"  # 3GPP TS 23.003 Annex B example IMEI

CSV = (
    "tac,model,a_db,provenance\r\n"
    "26053179,Example X1,10.0,lab\r\n"
    '35209900,"Brand, ""Pro""",7.0,import\r\n'
)


def run(argv: Sequence[str]) -> int:
    """``stkpay ...`` as stkpay.cli.main runs a command."""
    parser = _Parser(prog="stkpay")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    cmd_calibration.register(sub)
    args = parser.parse_args(list(argv))
    try:
        return int(args.func(args, Config()))
    except CliError as exc:
        print(f"stkpay: {exc}", file=sys.stderr)
        return exc.code


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A fresh SQLite calibration store."""
    return f"sqlite:///{tmp_path / 'cal.db'}"


def test_import_export_round_trip(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV imported then exported comes back identical (sorted by TAC, CRLF)."""
    src = tmp_path / "in.csv"
    src.write_bytes(CSV.encode())
    assert run(["calibration", "import", str(src), "--url", url]) == 0
    assert "imported 2" in capsys.readouterr().out
    out = tmp_path / "out.csv"
    assert run(["calibration", "export", str(out), "--url", url]) == 0
    assert out.read_bytes() == CSV.encode()
    assert run(["calibration", "export", "--url", url]) == 0
    assert capsys.readouterr().out == CSV


def test_url_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --url the store is $STKPAY_CALIBRATION_URL."""
    db = tmp_path / "env.db"
    monkeypatch.setenv("STKPAY_CALIBRATION_URL", f"sqlite:///{db}")
    src = tmp_path / "in.csv"
    src.write_bytes(CSV.encode())
    assert run(["calibration", "import", str(src)]) == 0
    assert db.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tac,model,a_db,provenance\n2605317,X,1.0,lab\n", "line 2: TAC must be 8 digits, got 7"),
        ("tac,model,a_db,provenance\n26053179,X,30.5,lab\n", "line 2: A = 30.5 dB is out of range"),
        ("tac,model\n", "line 1: the header must be"),
    ],
)
def test_bad_csv_one_line_exit_2_nothing_imported(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """A bad file is refused whole: one line on stderr naming the line, exit 2."""
    src = tmp_path / "bad.csv"
    src.write_text(text)
    assert run(["calibration", "import", str(src), "--url", url]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    with CalibrationStore.open(url) as store:
        assert store.models() == []


def test_missing_file_exit_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable file is one line, exit 2."""
    assert run(["calibration", "import", "/nonexistent/x.csv", "--url", url]) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


def test_coverage_text_and_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Coverage prints the shares and the TACs holding cards back; --json the figures."""
    import datetime as dt

    from tests.calibration.test_store import sms_record

    t0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    with CalibrationStore.open(url) as store:
        store.mark_calibrated("89860000000000000001", sms_record(), msisdn=None, at=t0)
        for n in (2, 3, 4):
            iccid = f"8986000000000000000{n}"
            store.mark_uncalibrated(iccid, msisdn=None, imei="352099001761481", at=t0)
            store.count_hold_back("35209900", iccid, msisdn=None, at=t0)
    assert run(["calibration", "coverage", "--url", url]) == 0
    text = capsys.readouterr().out
    assert "active cards: 4" in text and "25.0 %" in text and "75.0 %" in text
    assert "35209900" in text and "unknown" in text
    assert run(["calibration", "coverage", "--json", "--url", url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["active"], data["sms"], data["instrument"], data["uncalibrated"]) == (4, 1, 0, 3)
    assert data["tacs"] == [
        {"tac": "35209900", "cards": 3, "held_back": 3, "subscribers": 0, "status": "unknown"}
    ]


@pytest.mark.parametrize(
    "spec", ["sim", "lab:A=1", "sim:A=x", "sim:B=3", "sim:A=1,seed=-1", "sim:A=1,A=2", "sim:A=500"]
)
def test_bad_instrument_spec_exit_2(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --instrument is one line, exit 2, before any reader is touched."""
    assert run(["calibrate", "--reader", "nope", "--instrument", spec]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith("stkpay: --instrument")


# --- through pcscd + vpcd -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slot1_card() -> Iterator[WatchedCard]:
    """A VirtualCard served on vpcd slot 1, present in READER; released afterwards."""
    with served_card(WatchedCard(ICCID), READER, VPCD_PORT) as card:
        yield card


def test_calibrate_through_pcsc_writes_a_verified_instrument_record(
    slot1_card: WatchedCard, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """stkpay calibrate measures the phone (true A = 12.3 dB), writes EF 6F60 with an
    instrument record for this IMEI whose payment level puts the true A in the payment
    band, and the platform store records the card calibrated by instrument."""
    argv = ["calibrate", "--reader", READER, "--imei", IMEI, "--instrument", "sim:A=12.3,seed=7"]
    assert run([*argv, "--json", "--url", url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["iccid"] == ICCID and out["verified"] is True
    record = decode(slot1_card.fs.read_binary(CALIBRATION_PATH))
    assert record.method is Method.INSTRUMENT
    assert record.imei == parse_imei(IMEI)
    assert record.payment_dbm is not None
    assert DEFAULT_MODEL.in_band(record.payment_dbm, Decimal("12.3"), DEFAULT_MODEL.payment.kind)
    assert out["file"] == slot1_card.fs.read_binary(CALIBRATION_PATH).hex().upper()
    with CalibrationStore.open(url) as store:
        state = store.card(ICCID)
        assert state is not None and state.method is Method.INSTRUMENT and state.imei == IMEI
        assert store.instrument_results("26053179") == (Decimal(out["a_db"]),)


def test_calibrate_refused_handset_exit_2_nothing_written(
    slot1_card: WatchedCard, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handset whose payment level cannot be valid (A = 29.5 dB): one line, exit 2, the
    card's file and the store unchanged."""
    before = slot1_card.fs.read_binary(CALIBRATION_PATH)
    argv = ["calibrate", "--reader", READER, "--imei", IMEI, "--instrument", "sim:A=29.5,seed=1"]
    assert run([*argv, "--url", url]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "nothing written" in err and err.count("\n") == 1
    assert slot1_card.fs.read_binary(CALIBRATION_PATH) == before
    with CalibrationStore.open(url) as store:
        assert store.card(ICCID) is None


def test_calibrate_unknown_reader_exit_2(capsys: pytest.CaptureFixture[str], url: str) -> None:
    """An unknown reader is one line naming the readers present, exit 2."""
    try:
        list_readers()
    except PcscError as exc:
        require_pcscd(f"pcscd not reachable: {exc}")
    argv = ["calibrate", "--reader", "No Such Reader", "--imei", IMEI, "--instrument", "sim:A=3"]
    assert run([*argv, "--url", url]) == EXIT_USAGE
    assert "No Such Reader" in capsys.readouterr().err
