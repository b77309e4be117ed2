"""``stkpay wallet set-pin|unlock-pin`` and ``stkpay ledger in-doubt`` (issue 5, "Handlers"),
in-process through ``stkpay.cli.main`` on a SQLite ledger in tmp_path.

Pinned: set-pin stores a keyed hash that verifies with the same pepper (from
STKPAY_PIN_PEPPER) and only the right PIN; it reads one line from a non-tty stdin, two
matching no-echo entries from a tty, never prints the PIN, refuses anything but 6 digits, a
wallet without an active card and a missing pepper (one line, exit 2, nothing stored);
unlock-pin clears a lock; in-doubt lists reserved and in-doubt loads (text and JSON) and
nothing else.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.pins import Pepper, PinVerdict, SqlPinStore
from ledger.service import Ledger
from stkpay import cmd_wallet
from stkpay.cli import main

MSISDN = "8613800138000"
BARE = "8613900139000"
ICCID = "89860012345678901234"
ID_NUMBER = "110101199003070000"
PEPPER_HEX = "5a" * 32
PIN = "314159"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A ledger URL in tmp_path with one wallet + active card and one bare wallet; the pepper
    in the environment; no stkpay.toml around."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STKPAY_CONFIG", raising=False)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("STKPAY_LEDGER_URL", url)
    monkeypatch.setenv("STKPAY_PIN_PEPPER", PEPPER_HEX)
    with Ledger.connect(url, group_commit=False) as ledger:
        ledger.open_wallet(MSISDN, ID_NUMBER)
        ledger.enable_card(MSISDN, ICCID)
        ledger.deposit(MSISDN, 100_000, "bank", request_id="fund")
        ledger.open_wallet(BARE, ID_NUMBER)
    yield url


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def store(url: str) -> SqlPinStore:
    return SqlPinStore(url, Pepper(bytes.fromhex(PEPPER_HEX)))


def test_set_pin_from_stdin_stores_a_verifying_hash(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """set-pin reads one stdin line, stores it for the wallet's active card under the
    environment's pepper; the right PIN verifies, another does not; the PIN is never printed."""
    code, out, err = run(
        capsys, monkeypatch, "wallet", "set-pin", "--msisdn", MSISDN, stdin=PIN + "\n"
    )
    assert (code, err) == (0, ""), err
    assert ICCID in out and PIN not in out
    pins = store(env)
    try:
        assert pins.verify(ICCID, PIN, count=False).verdict is PinVerdict.OK
        assert pins.verify(ICCID, "000000", count=False).verdict is PinVerdict.WRONG
    finally:
        pins.close()


def test_set_pin_from_a_tty_asks_twice_without_echo(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a terminal the PIN is read with getpass twice; differing entries change nothing."""
    answers = iter([PIN, PIN, "111111", "222222"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(cmd_wallet.getpass, "getpass", fake_getpass)
    assert cmd_wallet.read_pin(tty=True) == PIN
    assert len(prompts) == 2
    with pytest.raises(cmd_wallet.CliError, match="differ"):
        cmd_wallet.read_pin(tty=True)


@pytest.mark.parametrize("bad", ["12345", "1234567", "12a456", "", "１２３４５６"])
def test_set_pin_refuses_anything_but_six_digits(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """A PIN that is not 6 ASCII digits: one line, exit 2, the entry not echoed, no PIN set."""
    code, out, err = run(
        capsys, monkeypatch, "wallet", "set-pin", "--msisdn", MSISDN, stdin=bad + "\n"
    )
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "6 digits" in err
    assert not bad or bad not in err
    pins = store(env)
    try:
        assert pins.status(ICCID).verdict is PinVerdict.NOT_SET
    finally:
        pins.close()


def test_set_pin_refusals_without_card_or_pepper(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No active card, an unknown subscriber, no pepper: each one line on stderr, exit 2."""
    code, _, err = run(capsys, monkeypatch, "wallet", "set-pin", "--msisdn", BARE, stdin=PIN)
    assert code == 2 and "no active card" in err and len(err.splitlines()) == 1
    code, _, err = run(
        capsys, monkeypatch, "wallet", "set-pin", "--msisdn", "8613700000000", stdin=PIN
    )
    assert code == 2 and len(err.splitlines()) == 1
    monkeypatch.delenv("STKPAY_PIN_PEPPER")
    code, _, err = run(capsys, monkeypatch, "wallet", "set-pin", "--msisdn", MSISDN, stdin=PIN)
    assert code == 2 and "STKPAY_PIN_PEPPER" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("STKPAY_PIN_PEPPER", "abcd")  # too short
    code, _, err = run(capsys, monkeypatch, "wallet", "set-pin", "--msisdn", MSISDN, stdin=PIN)
    assert code == 2 and "16 octets" in err and "abcd" not in err


def test_unlock_pin_clears_the_lock(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three wrong PINs lock the card; unlock-pin lets the right PIN verify again. Unlocking
    a card without a PIN is refused."""
    code, _, err = run(capsys, monkeypatch, "wallet", "unlock-pin", "--msisdn", MSISDN)
    assert code == 2 and "no PIN" in err
    assert run(capsys, monkeypatch, "wallet", "set-pin", "--msisdn", MSISDN, stdin=PIN)[0] == 0
    pins = store(env)
    try:
        for _ in range(3):
            pins.verify(ICCID, "000000")
        assert pins.verify(ICCID, PIN).verdict is PinVerdict.LOCKED
        code, out, err = run(capsys, monkeypatch, "wallet", "unlock-pin", "--msisdn", MSISDN)
        assert (code, err) == (0, "") and "unlocked" in out
        assert pins.verify(ICCID, PIN).verdict is PinVerdict.OK
    finally:
        pins.close()


def test_in_doubt_lists_reserved_and_in_doubt_loads(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty at first; then a reserved and an in-doubt load are listed (state, amount,
    counter), a posted one is not; --json carries the same in fen."""
    code, out, _ = run(capsys, monkeypatch, "ledger", "in-doubt")
    assert code == 0 and "no pending loads" in out
    assert json.loads(run(capsys, monkeypatch, "ledger", "in-doubt", "--json")[1]) == []
    with Ledger.connect(env, group_commit=False) as ledger:
        a = ledger.reserve_load(MSISDN, ICCID, 5_000, card_balance=0, online_counter=1, key="a")
        b = ledger.reserve_load(MSISDN, ICCID, 7_000, card_balance=0, online_counter=2, key="b")
        c = ledger.reserve_load(MSISDN, ICCID, 1_000, card_balance=0, online_counter=3, key="c")
        ledger.mark_in_doubt(b.id)
        ledger.post_load(c.id)
    code, out, err = run(capsys, monkeypatch, "ledger", "in-doubt")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert any(a.id in line and "reserved" in line and "50.00" in line for line in lines)
    assert any(b.id in line and "in_doubt" in line and "70.00" in line for line in lines)
    assert c.id not in out
    assert "2 pending (1 in doubt, 1 reserved), 120.00 CNY in flight" in out
    doc = json.loads(run(capsys, monkeypatch, "ledger", "in-doubt", "--json")[1])
    assert [(d["load_id"], d["state"], d["amount_fen"], d["online_counter"]) for d in doc] == [
        (a.id, "reserved", 5_000, 1),
        (b.id, "in_doubt", 7_000, 2),
    ]
    assert all(d["msisdn"] == MSISDN and d["iccid"] == ICCID for d in doc)
