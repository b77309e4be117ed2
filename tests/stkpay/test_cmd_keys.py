"""stkpay keys list|import|generate|card: KCVs only, key from stdin, one-line errors (exit 2).

The commands are run through a parser built like ``stkpay.cli.main`` builds its own
(``register`` into a subparser, ``CliError`` -> one line on stderr and its exit status), so
the tests do not depend on when the group is wired into ``stkpay.cli``.
"""

from __future__ import annotations

import io
import json
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ota.keys import KeyAlgorithm, KeyName, diversify, kcv
from stkpay import cmd_keys
from stkpay.cli import EXIT_USAGE, CliError, _Parser
from stkpay.config import Config

AES128_MK = bytes(range(16))
TDES_MK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
ICCID = "89860012345678901234"


def run(argv: Sequence[str], config: Any = None) -> int:
    """``stkpay keys ...`` as stkpay.cli.main runs a command group."""
    parser = _Parser(prog="stkpay")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    cmd_keys.register(sub)
    args = parser.parse_args(["keys", *argv])
    try:
        return int(args.func(args, Config() if config is None else config))
    except CliError as exc:
        print(f"stkpay: {exc}", file=sys.stderr)
        return exc.code


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool = False) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory with no STKPAY_KEY_FILE."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STKPAY_KEY_FILE", raising=False)


def _import(monkeypatch: pytest.MonkeyPatch, key_hex: str, *argv: str) -> int:
    monkeypatch.setattr(sys, "stdin", _Stdin(key_hex + "\n"))
    return run(["import", *argv])


def test_import_reads_stdin_and_prints_kcv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """import reads one line of hex from a non-tty stdin, stores it in the default key file
    (var/stkpay-keys.json, 0600) and prints the KCV, never the key."""
    code = _import(
        monkeypatch,
        AES128_MK.hex(),
        *("--keyset", "ota", "--name", "kic"),
        *("--version", "1", "--algorithm", "aes"),
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "ota/kic v1 aes-128 KCV C35280" in out
    assert AES128_MK.hex() not in out.lower()
    path = tmp_path / "var" / "stkpay-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_import_from_a_terminal_uses_getpass(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal the key is read with getpass (no echo)."""
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return TDES_MK.hex()

    monkeypatch.setattr(sys, "stdin", _Stdin("", tty=True))
    monkeypatch.setattr(cmd_keys.getpass, "getpass", fake_getpass)
    argv = ["import", "--keyset", "w", "--name", "dlk", "--version", "2", "--algorithm", "3des"]
    assert run(argv) == 0
    assert prompts and "not echoed" in prompts[0]
    assert "KCV 08D7B4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("key_hex", "argv", "match"),
    [
        ("zz" * 16, ["--name", "kic", "--algorithm", "aes"], "not an even number of hex"),
        ("", ["--name", "kic", "--algorithm", "aes"], "not an even number of hex"),
        ("00" * 15, ["--name", "kic", "--algorithm", "aes"], "16, 24 or 32 bytes"),
        ("00" * 16, ["--name", "dlk", "--algorithm", "aes"], "always 2-key 3DES"),
    ],
)
def test_bad_import_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    key_hex: str,
    argv: list[str],
    match: str,
) -> None:
    """A bad key: one line on stderr, exit 2, nothing written, the key never echoed."""
    code = _import(monkeypatch, key_hex, "--keyset", "ota", "--version", "1", *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE
    assert len(err) == 1 and match in err[0]
    if key_hex:
        assert key_hex not in err[0]
    assert not Path("var/stkpay-keys.json").exists()


def test_duplicate_import_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Importing an existing version: one line, exit 2 (versions are immutable)."""
    argv = ("--keyset", "ota", "--name", "kid", "--version", "3", "--algorithm", "aes")
    assert _import(monkeypatch, AES128_MK.hex(), *argv) == 0
    capsys.readouterr()
    assert _import(monkeypatch, bytes(16).hex(), *argv) == EXIT_USAGE
    assert "already exists" in capsys.readouterr().err


def test_generate_then_list_and_card(capsys: pytest.CaptureFixture[str]) -> None:
    """generate makes all five masters; list shows their KCVs; card shows the card's KCVs."""
    assert run(["generate", "--keyset", "ota", "--version", "1", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in generated] == ["kic", "kid", "dlk", "dpk", "dtk"]
    assert [g["algorithm"] for g in generated] == ["aes", "aes", "3des", "3des", "3des"]

    assert run(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == generated

    assert run(["list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["KEYSET", "NAME", "VERSION", "ALGORITHM", "KCV"]
    assert table[1].split() == ["ota", "kic", "1", "aes-128", generated[0]["kcv"]]

    assert run(["card", "--iccid", ICCID, "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert (card["iccid"], card["keyset"], card["version"]) == (ICCID, "ota", 1)
    assert [k["name"] for k in card["keys"]] == ["kic", "kid", "dlk", "dpk", "dtk"]
    assert all(len(k["kcv"]) == 6 for k in card["keys"])
    assert [k["kcv"] for k in card["keys"]] != [g["kcv"] for g in generated]


def test_card_kcvs_are_the_diversified_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """card prints the KCVs of the keys diversified for that ICCID (and no key)."""
    base = ("--keyset", "ota", "--version", "1")
    _import(monkeypatch, AES128_MK.hex(), *base, "--name", "kic", "--algorithm", "aes")
    _import(monkeypatch, TDES_MK.hex(), *base, "--name", "kid", "--algorithm", "3des")
    capsys.readouterr()
    assert run(["card", "--iccid", ICCID]) == 0
    out = capsys.readouterr().out
    kic = diversify(KeyAlgorithm.AES, AES128_MK, KeyName.KIC, ICCID)
    kid = diversify(KeyAlgorithm.TDES, TDES_MK, KeyName.KID, ICCID)
    assert f"card {ICCID}: key set ota v1" in out
    assert f"KCV {kcv(KeyAlgorithm.AES, kic).hex().upper()}" in out
    assert f"KCV {kcv(KeyAlgorithm.TDES, kid).hex().upper()}" in out
    for secret in (kic, kid, AES128_MK, TDES_MK):
        assert secret.hex() not in out.lower()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["card", "--iccid", "1234"], "bad ICCID"),
        (["card", "--iccid", ICCID, "--keyset", "nope"], "no key set 'nope'"),
        (["card", "--iccid", ICCID, "--version", "9"], "no version 9"),
    ],
)
def test_card_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], match: str
) -> None:
    """Unknown ICCID format, key set or version: one line, exit 2."""
    run(["generate", "--keyset", "ota", "--version", "1"])
    capsys.readouterr()
    assert run(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


def test_bad_version_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A version outside 1-255 is an argparse error: one line, exit 2."""
    with pytest.raises(SystemExit) as info:
        run(["generate", "--keyset", "ota", "--version", "0"])
    assert info.value.code == EXIT_USAGE
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_unsafe_key_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A group/world-readable key file: one line naming the fix, exit 2."""
    run(["generate", "--keyset", "ota", "--version", "1"])
    (tmp_path / "var" / "stkpay-keys.json").chmod(0o644)
    capsys.readouterr()
    assert run(["list"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "chmod 600" in err[0]


def test_key_file_precedence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--key-file beats $STKPAY_KEY_FILE, which beats ota.key_file in the config, which beats
    var/stkpay-keys.json."""
    config = SimpleNamespace(ota=SimpleNamespace(key_file=str(tmp_path / "cfg.json")))
    run(["generate", "--keyset", "cfg", "--version", "1"], config)
    assert (tmp_path / "cfg.json").exists()
    monkeypatch.setenv("STKPAY_KEY_FILE", str(tmp_path / "env.json"))
    run(["generate", "--keyset", "env", "--version", "1"], config)
    assert (tmp_path / "env.json").exists()
    run(["generate", "--keyset", "opt", "--version", "1", "--key-file", "opt.json"], config)
    assert (tmp_path / "opt.json").exists()
    monkeypatch.delenv("STKPAY_KEY_FILE")
    run(["generate", "--keyset", "dflt", "--version", "1"])
    capsys.readouterr()
    for file, keyset in [
        ("cfg.json", "cfg"),
        ("env.json", "env"),
        ("opt.json", "opt"),
        ("var/stkpay-keys.json", "dflt"),
    ]:
        assert run(["list", "--json", "--key-file", str(tmp_path / file)]) == 0
        assert {k["keyset"] for k in json.loads(capsys.readouterr().out)} == {keyset}


def test_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    """No key file yet: list says so and exits 0."""
    assert run(["list"]) == 0
    assert "no master keys" in capsys.readouterr().out
