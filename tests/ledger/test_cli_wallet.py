"""stkpay wallet ... / stkpay ledger ...: business-hall operations from the command line
(issue 3), in-process through ``stkpay.cli.main`` and as real processes, on SQLite and
PostgreSQL (``STKPAY_LEDGER_URL``).

Pinned: each command's effect and output (text and ``--json``); every refusal or bad input is
one line on stderr with exit status 2 and posts nothing; the same ``--request-id`` posts once,
also when six processes race with it; the ledger URL resolution (relative SQLite path, created
directory) and an unreachable database (exit 1, no password shown).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ledger.service import Ledger
from stkpay.cli import main

MSISDN = "8613800138000"
OTHER = "8613900139000"
ICCID = "89860012345678901234"
NEW_ICCID = "89860012345678909999"
ID_NUMBER = "110101199003070000"
ROOT = Path(__file__).resolve().parents[2]


class Cli:
    """Runs ``stkpay`` in-process; returns (status, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self.capsys = capsys
        self.url = url

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        """Run, require exit 0 and a silent stderr, return stdout."""
        code, out, err = self(*argv)
        assert (code, err) == (0, ""), (argv, code, err)
        return out

    def json(self, *argv: str) -> Any:
        """Run with --json, require exit 0, return the parsed document."""
        return json.loads(self.ok(*argv, "--json"))

    def refused(self, *argv: str) -> str:
        """Run, require exit 2 with exactly one stderr line and no stdout; return that line."""
        code, out, err = self(*argv)
        lines = err.splitlines()
        assert code == 2, (argv, code, out, err)
        assert len(lines) == 1 and lines[0].strip(), (argv, err)
        assert "Traceback" not in err
        assert out == ""
        return lines[0]

    def ledger(self) -> Ledger:
        """A direct service connection to the same database (for set-up and checks)."""
        return Ledger.connect(self.url, group_commit=False)


@pytest.fixture
def cli(
    ledger_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """The CLI pointed at a fresh ledger of each backend through STKPAY_LEDGER_URL."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STKPAY_CONFIG", raising=False)
    monkeypatch.setenv("STKPAY_LEDGER_URL", ledger_url)
    return Cli(capsys, ledger_url)


def _opened(cli: Cli, cash: str = "") -> None:
    cli.ok("wallet", "open", "--msisdn", MSISDN, "--id-number", ID_NUMBER)
    if cash:
        cli.ok(
            *("wallet", "deposit", "--msisdn", MSISDN, "--amount", cash, "--source", "hall"),
            *("--teller", "T1", "--hall", "H1", "--request-id", "seed"),
        )


def _shanghai_today() -> str:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()


def test_business_hall_day(cli: Cli) -> None:
    """Open, deposit (hall, bank, voucher), enable a card, show, history, swap with the old
    card read, hall report, close: balances and outputs as the service posted them."""
    out = cli.ok("wallet", "open", "--msisdn", MSISDN, "--id-number", ID_NUMBER)
    assert MSISDN in out
    assert ID_NUMBER not in out  # the national ID is not echoed

    dep = cli.json(
        *("wallet", "deposit", "--msisdn", MSISDN, "--amount", "100.5", "--source", "hall"),
        *("--teller", "T7", "--hall", "H1", "--request-id", "r-1"),
    )
    assert dep["transfer"]["amount_fen"] == 10_050
    assert dep["transfer"]["code"] == "deposit"
    assert dep["wallet"]["cash_fen"] == 10_050
    out = cli.ok(
        *("wallet", "deposit", "--msisdn", MSISDN, "--amount", "20", "--source", "bank"),
    )
    assert "20.00 CNY" in out and "120.50 CNY" in out
    cli.ok("wallet", "deposit", "--msisdn", MSISDN, "--amount", "0.01", "--source", "voucher")

    out = cli.ok("wallet", "enable-card", "--msisdn", MSISDN, "--iccid", ICCID)
    assert ICCID in out

    shown = cli.json("wallet", "show", "--msisdn", MSISDN)
    assert shown == {
        "msisdn": MSISDN,
        "state": shown["state"],
        "cash_fen": 12_051,
        "card_iccid": ICCID,
        "card_state": shown["card_state"],
        "card_balance_fen": 0,
        "topups_today": 0,
        "in_flight_fen": 0,
    }
    assert {"msisdn", "cash_fen", "card_iccid", "card_state", "card_balance_fen"} <= set(shown)
    assert {"topups_today", "in_flight_fen"} <= set(shown)
    text = cli.ok("wallet", "show", "--msisdn", MSISDN)
    assert "120.51 CNY" in text and ICCID in text

    history = cli.json("wallet", "history", "--msisdn", MSISDN)
    assert [e["amount_fen"] for e in history] == [1, 2_000, 10_050]  # newest first
    assert all(e["code"] == "deposit" for e in history)
    assert [
        e["amount_fen"] for e in cli.json("wallet", "history", "--msisdn", MSISDN, "--last", "2")
    ] == [1, 2_000]
    lines = cli.ok("wallet", "history", "--msisdn", MSISDN, "--last", "1").splitlines()
    assert len(lines) == 1 and "+0.01" in lines[0]

    report = cli.json("ledger", "hall-report", "--hall", "H1", "--date", _shanghai_today())
    assert (report["hall"], report["deposits_fen"], report["refunds_fen"]) == ("H1", 10_050, 0)
    assert report["net_fen"] == 10_050
    assert [e["context"].get("teller") for e in report["entries"]] == ["T7"]
    text = cli.ok("ledger", "hall-report", "--hall", "H1", "--date", _shanghai_today())
    assert "100.50" in text and "T7" in text

    swapped = cli.json(
        *("wallet", "swap-card", "--msisdn", MSISDN, "--iccid", NEW_ICCID, "--old-balance", "0"),
        *("--teller", "T7", "--hall", "H1"),
    )
    assert swapped["card_iccid"] == NEW_ICCID

    closed = cli.json(
        *("wallet", "close", "--msisdn", MSISDN, "--teller", "T7", "--hall", "H1"),
        *("--card-balance", "0"),
    )
    assert closed["cash_refunded_fen"] == 12_051
    assert closed["forfeited_fen"] == 0
    report = cli.json("ledger", "hall-report", "--hall", "H1", "--date", _shanghai_today())
    assert (report["deposits_fen"], report["refunds_fen"]) == (10_050, 12_051)
    assert report["net_fen"] == 10_050 - 12_051
    after = cli.json("wallet", "show", "--msisdn", MSISDN)
    assert (after["state"], after["cash_fen"], after["card_iccid"]) == ("closed", 0, None)

    out = cli.ok("ledger", "verify")
    assert out.startswith("ledger ok")
    verdict = cli.json("ledger", "verify")
    assert verdict["ok"] is True and verdict["total_fen"] == 0 and verdict["problems"] == []


def test_swap_card_without_reading_the_old_card_forfeits_its_purse(cli: Cli) -> None:
    """swap-card without --old-balance: the old purse mirror is forfeited, the new card
    starts empty; with --old-balance YUAN the read balance migrates."""
    _opened(cli, cash="300")
    cli.ok("wallet", "enable-card", "--msisdn", MSISDN, "--iccid", ICCID)
    led = cli.ledger()
    try:
        load = led.reserve_load(MSISDN, ICCID, 10_000, card_balance=0, online_counter=1, key="mo:1")
        led.post_load(load.id)
    finally:
        led.close()
    assert cli.json("wallet", "show", "--msisdn", MSISDN)["card_balance_fen"] == 10_000

    out = cli.ok("wallet", "swap-card", "--msisdn", MSISDN, "--iccid", NEW_ICCID)
    assert "forfeited" in out
    shown = cli.json("wallet", "show", "--msisdn", MSISDN)
    assert (shown["card_iccid"], shown["card_balance_fen"]) == (NEW_ICCID, 0)
    assert any(e["code"] == "forfeiture" for e in cli.json("wallet", "history", "--msisdn", MSISDN))

    third = NEW_ICCID[:-1] + "8"
    cli.ok("wallet", "swap-card", "--msisdn", MSISDN, "--iccid", third, "--old-balance", "0.00")
    assert cli.json("wallet", "show", "--msisdn", MSISDN)["card_iccid"] == third
    assert cli.json("ledger", "verify")["ok"] is True


def test_same_request_id_posts_once(cli: Cli) -> None:
    """A deposit repeated with the same --request-id answers with the first transfer and
    posts nothing; the same id with a different amount is refused (exit 2), nothing posted."""
    _opened(cli)
    argv = ("wallet", "deposit", "--msisdn", MSISDN, "--amount", "50", "--source", "bank")
    first = cli.json(*argv, "--request-id", "same")
    again = cli.json(*argv, "--request-id", "same")
    assert again["transfer"]["id"] == first["transfer"]["id"]
    assert again["wallet"]["cash_fen"] == 5_000
    line = cli.refused(
        *("wallet", "deposit", "--msisdn", MSISDN, "--amount", "60", "--source", "bank"),
        *("--request-id", "same"),
    )
    assert "same" in line
    # without --request-id each run is a new request
    cli.ok(*argv)
    assert cli.json("wallet", "show", "--msisdn", MSISDN)["cash_fen"] == 10_000


@pytest.mark.parametrize("amount", ["0", "-1", "12.345", "1e3", "abc", "", "0.00", " 5", "5,00"])
def test_bad_amounts_are_one_line_exit_2(cli: Cli, amount: str) -> None:
    """Zero, negative, three decimals, exponents, words, blanks: one line, exit 2, no post."""
    _opened(cli)
    line = cli.refused(
        "wallet", "deposit", "--msisdn", MSISDN, "--amount", amount, "--source", "bank"
    )
    assert line.startswith("stkpay: ") and "amount" in line
    assert cli.json("wallet", "show", "--msisdn", MSISDN)["cash_fen"] == 0


def test_refusals_are_one_line_exit_2(cli: Cli) -> None:
    """Unknown subscribers, a card enabled elsewhere, a second open, a hall deposit without
    teller, a bad balance, a close with a load in flight, usage errors: each one line on
    stderr, exit 2, and nothing posted."""
    _opened(cli, cash="600")
    cli.ok("wallet", "enable-card", "--msisdn", MSISDN, "--iccid", ICCID)
    led = cli.ledger()
    try:
        led.reserve_load(MSISDN, ICCID, 10_000, card_balance=0, online_counter=1, key="mo:1")
        before = led.verify().transfers
    finally:
        led.close()

    for argv in (
        ("wallet", "show", "--msisdn", OTHER),
        ("wallet", "history", "--msisdn", OTHER),
        ("wallet", "deposit", "--msisdn", OTHER, "--amount", "5", "--source", "bank"),
        ("wallet", "enable-card", "--msisdn", OTHER, "--iccid", NEW_ICCID),
        ("wallet", "close", "--msisdn", OTHER),
        ("wallet", "swap-card", "--msisdn", OTHER, "--iccid", NEW_ICCID),
    ):
        assert OTHER in cli.refused(*argv), argv

    cli.ok("wallet", "open", "--msisdn", OTHER, "--id-number", ID_NUMBER)
    assert ICCID in cli.refused("wallet", "enable-card", "--msisdn", OTHER, "--iccid", ICCID)
    assert "already open" in cli.refused(
        "wallet", "open", "--msisdn", MSISDN, "--id-number", ID_NUMBER
    )
    line = cli.refused("wallet", "deposit", "--msisdn", MSISDN, "--amount", "5", "--source", "hall")
    assert "teller" in line or "hall" in line
    cli.refused(
        "wallet", "swap-card", "--msisdn", MSISDN, "--iccid", NEW_ICCID, "--old-balance", "-3"
    )
    cli.refused("wallet", "close", "--msisdn", MSISDN, "--card-balance", "1.234")
    cli.refused("wallet", "close", "--msisdn", MSISDN, "--teller", "T1", "--hall", "H1")
    # usage errors: argparse, also one line and exit 2
    cli.refused("wallet", "history", "--msisdn", MSISDN, "--last", "0")
    cli.refused("ledger", "hall-report", "--hall", "H1", "--date", "2026-13-01")
    cli.refused("wallet", "deposit", "--msisdn", MSISDN, "--amount", "5", "--source", "cash")

    led = cli.ledger()
    try:
        assert led.verify().transfers == before
        assert led.wallet(MSISDN).cash == 50_000
    finally:
        led.close()


def test_a_refused_rule_names_the_rule_and_figures(cli: Cli) -> None:
    """Migrating more than the old card's purse mirror holds is refused as insufficient funds,
    naming both figures; the old card stays active."""
    _opened(cli)
    cli.ok("wallet", "enable-card", "--msisdn", MSISDN, "--iccid", ICCID)
    line = cli.refused(
        *("wallet", "swap-card", "--msisdn", MSISDN, "--iccid", NEW_ICCID),
        *("--old-balance", "1000.01"),
    )
    assert line.startswith("stkpay: refused: insufficient funds")
    assert "1000.01" in line and "0.00" in line
    assert cli.json("wallet", "show", "--msisdn", MSISDN)["card_iccid"] == ICCID


# -- configuration ----------------------------------------------------------------------------


def test_relative_sqlite_path_resolves_against_cwd_and_creates_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ledger.url sqlite:///var/a/b.db is ./var/a/b.db (directories created); with no
    config at all the default ledger lands in ./var/ under the current directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STKPAY_CONFIG", raising=False)
    monkeypatch.setenv("STKPAY_LEDGER_URL", "sqlite:///var/a/b.db")
    cli = Cli(capsys, "")
    cli.ok("wallet", "open", "--msisdn", MSISDN, "--id-number", ID_NUMBER)
    assert (tmp_path / "var" / "a" / "b.db").is_file()

    monkeypatch.delenv("STKPAY_LEDGER_URL")
    cli.ok("wallet", "open", "--msisdn", MSISDN, "--id-number", ID_NUMBER)
    assert (tmp_path / "var" / "stkpay-ledger.db").is_file()

    config = tmp_path / "stkpay.toml"
    config.write_text('[ledger]\nurl = "sqlite:///other/l.db"\n', encoding="utf-8")
    cli.ok("--config", str(config), "wallet", "open", "--msisdn", OTHER, "--id-number", ID_NUMBER)
    assert (tmp_path / "other" / "l.db").is_file()


def test_unreachable_database_is_one_line_exit_1_without_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PostgreSQL URL nobody listens on: one line, exit 1, the password masked."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STKPAY_CONFIG", raising=False)
    monkeypatch.setenv("STKPAY_LEDGER_URL", "postgresql://u:hunter2@127.0.0.1:1/ledger")
    code, _out, err = Cli(capsys, "")("wallet", "show", "--msisdn", MSISDN)
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "hunter2" not in err and "***" in err


def test_unsupported_url_scheme_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ledger.url must be sqlite:// or postgresql://; anything else is one line, exit 2."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STKPAY_CONFIG", raising=False)
    monkeypatch.setenv("STKPAY_LEDGER_URL", "mysql://u:pw@host/db")
    line = Cli(capsys, "").refused("ledger", "verify")
    assert "ledger.url" in line and "pw" not in line


# -- real processes ---------------------------------------------------------------------------


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STKPAY_CONFIG"}
    env["STKPAY_LEDGER_URL"] = url
    return env


def test_as_a_process(cli: Cli, tmp_path: Path) -> None:
    """`python -m stkpay wallet show --json` prints the wallet; a refusal from a real process
    is one stderr line and exit 2."""
    _opened(cli, cash="12.34")
    proc = subprocess.run(
        [sys.executable, "-m", "stkpay", "wallet", "show", "--msisdn", MSISDN, "--json"],
        capture_output=True,
        text=True,
        env=_env(cli.url),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(proc.stdout)["cash_fen"] == 1_234
    proc = subprocess.run(
        [sys.executable, "-m", "stkpay", "wallet", "show", "--msisdn", OTHER],
        capture_output=True,
        text=True,
        env=_env(cli.url),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and OTHER in proc.stderr


# Each racer imports everything first, says it is ready (a file), then spins until the "go"
# file appears, so that the six processes reach the ledger together, not one after another.
_RACER = """
import os, sys, time
import ledger.service, stkpay.cmd_wallet, stkpay.cmd_ledger
from stkpay.cli import main
gate = sys.argv[1]
open(os.path.join(gate, f"ready-{os.getpid()}"), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(gate, "go")) and time.monotonic() < deadline:
    time.sleep(0.0005)
sys.exit(main(sys.argv[2:]))
"""


def _race(
    url: str, cwd: Path, argv: list[str], n: int = 6
) -> list[subprocess.CompletedProcess[str]]:
    gate = cwd / f"gate-{time.monotonic_ns()}"
    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(gate), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(url),
            cwd=cwd,
        )
        for _ in range(n)
    ]
    deadline = time.monotonic() + 60
    while len(list(gate.glob("ready-*"))) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    (gate / "go").touch()
    done = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def test_same_request_id_from_six_racing_processes_posts_once(cli: Cli, tmp_path: Path) -> None:
    """Six processes open the same wallet and then deposit with one --request-id at the same
    instant: each succeeds with the same answer, and the wallet and the money exist once."""
    opened = _race(
        cli.url,
        tmp_path,
        ["wallet", "open", "--msisdn", MSISDN, "--id-number", ID_NUMBER, "--request-id", "o-1"],
    )
    assert [(p.returncode, p.stderr) for p in opened] == [(0, "")] * 6

    argv = ["wallet", "deposit", "--msisdn", MSISDN, "--amount", "88.88", "--source", "hall"]
    argv += ["--teller", "T1", "--hall", "H1", "--request-id", "race-1", "--json"]
    deposits = _race(cli.url, tmp_path, argv)
    assert [(p.returncode, p.stderr) for p in deposits] == [(0, "")] * 6
    ids = {json.loads(p.stdout)["transfer"]["id"] for p in deposits}
    assert len(ids) == 1

    shown = cli.json("wallet", "show", "--msisdn", MSISDN)
    assert shown["cash_fen"] == 8_888
    history = cli.json("wallet", "history", "--msisdn", MSISDN, "--last", "50")
    assert [e["amount_fen"] for e in history if e["code"] == "deposit"] == [8_888]
    assert cli.json("ledger", "verify")["ok"] is True
