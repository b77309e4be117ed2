"""stkpay.config: the TOML file, its validation and the environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from stkpay import config
from stkpay.config import ConfigError, Secret

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "stkpay.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_file_loads_and_equals_defaults() -> None:
    """The documented example is valid and documents exactly the defaults."""
    cfg = config.load(ROOT / "stkpay.example.toml", env={})
    assert cfg == config.Config()


def test_no_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a file (and no STKPAY_CONFIG) the defaults apply."""
    monkeypatch.chdir(tmp_path)
    assert config.load(env={}) == config.Config()


def test_values_are_read(tmp_path: Path) -> None:
    """Keys in the file override defaults, with ints widened to floats where a float is due."""
    p = write(
        tmp_path,
        '[smsc]\nwindow = 64\nthroughput = 500\nbind = "tx+rx"\n'
        '[[simulator.accounts]]\nsystem_id = "a"\npassword = "pw"\nshort_codes = ["1", "2"]\n',
    )
    cfg = config.load(p, env={})
    assert cfg.smsc.window == 64
    assert cfg.smsc.throughput == 500.0
    assert isinstance(cfg.smsc.throughput, float)
    assert cfg.smsc.bind == "tx+rx"
    assert cfg.simulator.accounts[0].short_codes == ("1", "2")
    assert cfg.simulator.accounts[0].password.reveal() == "pw"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[smsc]\nwindw = 3\n", "unknown key smsc.windw"),
        ("[smsc]\nwindow = 'ten'\n", "smsc.window must be an integer"),
        ("[smsc]\nwindow = 0\n", "smsc.window must be > 0"),
        ("[smsc]\nbind = 'rxtx'\n", "smsc.bind must be one of"),
        ("[smsc]\nsystem_id = 'x-very-long-system-id'\n", "smsc.system_id must be ASCII"),
        ("[smsc]\nregistered_delivery = 1\n", "smsc.registered_delivery must be true or false"),
        ("smsc = 3\n", "smsc must be a table"),
        ("[[simulator.accounts]]\nthroughput = -1\n", "simulator.accounts[0].throughput"),
        ("[smsc\n", "not valid TOML"),
    ],
)
def test_bad_file_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Every kind of mistake gives one line that names the file and the key."""
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(p, env={})
    line = str(info.value)
    assert message in line
    assert "\n" not in line
    assert str(p) in line


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    """A file named explicitly (or by STKPAY_CONFIG) must exist."""
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="no such file"):
        config.load(env={"STKPAY_CONFIG": str(tmp_path / "nope.toml")})


def test_environment_overrides_secrets(tmp_path: Path) -> None:
    """STKPAY_SMSC_PASSWORD and STKPAY_LEDGER_URL win over the file."""
    p = write(tmp_path, '[smsc]\npassword = "file"\n[ledger]\nurl = "sqlite:///x.db"\n')
    cfg = config.load(
        p, env={"STKPAY_SMSC_PASSWORD": "envpw", "STKPAY_LEDGER_URL": "postgresql://h/db"}
    )
    assert cfg.smsc.password.reveal() == "envpw"
    assert cfg.ledger.url == "postgresql://h/db"


def test_secrets_never_show(tmp_path: Path) -> None:
    """A password appears in no repr, str or error message."""
    p = write(tmp_path, '[smsc]\npassword = "hunter22"\n')
    cfg = config.load(p, env={})
    assert "hunter22" not in repr(cfg)
    assert "hunter22" not in str(cfg.smsc.password)
    bad = write(tmp_path, '[smsc]\npassword = "far-too-long-secret"\n')
    with pytest.raises(ConfigError) as info:
        config.load(bad, env={})
    assert "far-too-long" not in str(info.value)
    assert Secret("a") == Secret("a")
