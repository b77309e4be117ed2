"""stkpay.cli: bad input is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from stkpay.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the version and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("stkpay ")


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command: exit 2 and a single error line."""
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "invalid choice" in err[0]


def test_bad_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken config file stops a command with one line naming the key, exit 2."""
    bad = tmp_path / "c.toml"
    bad.write_text("[smsc]\nwindow = -1\n", encoding="utf-8")
    assert main(["--config", str(bad), "config", "check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"stkpay: {bad}: smsc.window must be > 0, got -1"]


def test_config_show_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """config show prints the configuration in force with the password masked."""
    good = tmp_path / "c.toml"
    good.write_text('[smsc]\npassword = "hunter2"\nwindow = 7\n', encoding="utf-8")
    assert main(["--config", str(good), "config", "show"]) == 0
    out = capsys.readouterr().out
    assert '"window": 7' in out
    assert "hunter2" not in out
    assert '"password": "***"' in out


@pytest.mark.parametrize("module", ["stkpay", "stkpay.cli"])
def test_module_entry_points_report_errors_on_one_line(module: str) -> None:
    """`python -m stkpay` and `python -m stkpay.cli` turn a CliError into one line, exit 2."""
    import subprocess
    import sys

    proc = subprocess.run(
        [
            *(sys.executable, "-m", module, "smpp", "send", "--bind", "tx", "--receipt"),
            *("--smsc", "127.0.0.1:9", "--to", "1", "--text", "x"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--receipt needs a bind that receives" in lines[0]
