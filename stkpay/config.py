"""Configuration: one TOML file (``stkpay.toml``) plus environment overrides for secrets.

Loaded once at start and passed down; nothing reads it behind the caller's back. Every
section is a frozen dataclass; a field's type and ``metadata["check"]`` validate the file,
and a bad file raises :class:`ConfigError` whose message is one line naming the key.

Environment overrides (secrets never live in the repository):

* ``STKPAY_CONFIG``: path of the file (default ``./stkpay.toml`` when it exists);
* ``STKPAY_SMSC_PASSWORD``: ``smsc.password``;
* ``STKPAY_LEDGER_URL``: ``ledger.url``;
* ``STKPAY_PIN_PEPPER``: ``gateway.pin_pepper`` (hex, at least 16 octets).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

DEFAULT_PATH: Final = Path("stkpay.toml")


class ConfigError(Exception):
    """A bad configuration file or value; ``str()`` is one line naming the key."""


class Secret:
    """A secret string (password, key) that never shows in a repr, log line or exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _ratio(v: Any) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be between 0 and 1"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)

    return check


def _byte(v: Any) -> str | None:
    return None if 0 <= v <= 255 else "must be between 0 and 255"


def _c_octet(limit: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        text = v.reveal() if isinstance(v, Secret) else v
        if not text.isascii() or len(text) >= limit:
            return f"must be ASCII of at most {limit - 1} characters"
        return None

    return check


def _opt(default: Any, check: Callable[[Any], str | None] | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True, slots=True)
class SmscConfig:
    """``[smsc]``: how the gateway's ESME binds to the operator's SMSC (SMPP 3.4)."""

    host: str = _opt("127.0.0.1", doc="SMSC host")
    port: int = _opt(2775, lambda v: None if 0 < v < 65536 else "must be a TCP port")
    system_id: str = _opt("stkpay", _c_octet(16))
    password: Secret = _opt(Secret(""), _c_octet(9), "overridden by STKPAY_SMSC_PASSWORD")
    system_type: str = _opt("", _c_octet(13))
    bind: str = _opt(
        "trx",
        _one_of("trx", "tx+rx", "tx", "rx"),
        "one transceiver, a transmitter + receiver pair, or one of them alone",
    )
    address_range: str = _opt("", _c_octet(41))
    source_addr: str = _opt("10658888", _c_octet(21), "the service's short code")
    source_addr_ton: int = _opt(0, _byte)
    source_addr_npi: int = _opt(0, _byte)
    dest_addr_ton: int = _opt(1, _byte)
    dest_addr_npi: int = _opt(1, _byte)
    window: int = _opt(10, _positive, "outstanding requests per bind")
    response_timeout: float = _opt(10.0, _positive, "seconds to wait for a response PDU")
    enquire_link_interval: float = _opt(30.0, _positive, "seconds of silence before enquire_link")
    throughput: float = _opt(100.0, _positive, "submit_sm per second per bind")
    reconnect_min: float = _opt(1.0, _positive, "first reconnect delay, seconds")
    reconnect_max: float = _opt(60.0, _positive, "reconnect delay cap, seconds")
    throttle_backoff: float = _opt(1.0, _positive, "first pause after ESME_RTHROTTLED, seconds")
    long_messages: str = _opt("udh8", _one_of("udh8", "udh16", "sar", "payload"))
    data_coding_default: str = _opt("gsm7", _one_of("gsm7", "ascii", "latin1"))
    registered_delivery: bool = _opt(True, doc="request delivery receipts")
    msg_id_type: int = _opt(
        -1,
        lambda v: None if -1 <= v <= 3 else "must be -1 (as sent) or Kannel's 0..3",
        "Kannel msg-id-type: 0 dec/dec, 1 hex/dec, 2 dec/hex, 3 hex/hex (resp/receipt)",
    )
    reassembly_timeout: float = _opt(120.0, _positive, "seconds before a partial MO expires")
    reassembly_max_per_source: int = _opt(16, _positive)
    reassembly_max_total: int = _opt(10_000, _positive)


@dataclass(frozen=True, slots=True)
class SimAccount:
    """One ESME account of the simulator (``[[simulator.accounts]]``)."""

    system_id: str = _opt("stkpay", _c_octet(16))
    password: Secret = _opt(Secret("secret"), _c_octet(9))
    short_codes: tuple[str, ...] = _opt(("10658888",), doc="MO to these goes to this account")
    throughput: float = _opt(0.0, _non_negative, "submit_sm/s before ESME_RTHROTTLED; 0: none")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """``[simulator]``: the SMSC simulator (``stkpay smsc-sim``)."""

    listen: str = _opt("tcp:2775:interface=127.0.0.1", doc="Twisted endpoint string")
    api: str = _opt("tcp:8775:interface=127.0.0.1", doc="HTTP control API endpoint")
    accounts: tuple[SimAccount, ...] = _opt((SimAccount(),))
    receipt_delay: float = _opt(0.0, _non_negative, "seconds before a delivery receipt")
    delivered_ratio: float = _opt(1.0, _ratio, "share of receipts that say DELIVRD")
    mt_retention: int = _opt(1000, _positive, "messages kept per handset mailbox")
    max_mailboxes: int = _opt(10_000, _positive, "handset mailboxes kept (least recent evicted)")
    message_id_format: str = _opt("dec", _one_of("dec", "hex", "hex-upper"))
    receipt_id_format: str = _opt(
        "", _one_of("", "dec", "hex", "hex-upper"), "ids in receipts; '' = message_id_format"
    )
    data_coding_default: str = _opt("gsm7", _one_of("gsm7", "ascii", "latin1"))


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """``[ledger]``: the system of record (SQLite path or PostgreSQL URL)."""

    url: str = _opt("sqlite:///var/stkpay-ledger.db", doc="overridden by STKPAY_LEDGER_URL")


@dataclass(frozen=True, slots=True)
class OtaConfig:
    """``[ota]``: card keys and the sending counters (ETSI TS 102 225 §5.1.1 CNTR)."""

    key_file: str = _opt("var/stkpay-keys.json", doc="master keys; overridden by STKPAY_KEY_FILE")
    counter_url: str = _opt("sqlite:///var/stkpay-ota.db", doc="SQLite path or PostgreSQL URL")
    mo_history: str = _opt(
        "memory",
        _one_of("memory", "durable"),
        "cards' MO counters: in process, or beside the counter store (survives restarts)",
    )


@dataclass(frozen=True, slots=True)
class StateConfig:
    """``[state]``: what may be lost (dedup cache, flood limits, the shared submit budget)."""

    url: str = _opt("", doc="empty or memory: in-process; redis://host:port/db for Redis")
    prefix: str = _opt("stkpay:", doc="key prefix in Redis")


@dataclass(frozen=True, slots=True)
class CalibrationConfig:
    """``[calibration]``: the RF model every part agrees on (issue 6, docs/calibration.md),
    and where the handset table and the cards' calibration records live."""

    url: str = _opt(
        "sqlite:///var/stkpay-calibration.db", doc="overridden by STKPAY_CALIBRATION_URL"
    )

    threshold_dbm: float = _opt(-60.0, doc="T: the reader accepts RSSI >= T")
    p_min_dbm: float = _opt(-20.0, doc="lowest card transmit level")
    p_max_dbm: float = _opt(10.0, doc="highest card transmit level")
    p_step_db: float = _opt(0.5, doc="transmit level step")
    a_min_db: float = _opt(0.0, doc="least handset shielding")
    a_max_db: float = _opt(30.0, doc="most handset shielding")
    spread_db: float = _opt(1.0, doc="phones of a model within +- this of its A")
    loss_at_1cm_db: float = _opt(30.0, doc="L(1 cm)")
    loss_per_decade_db: float = _opt(25.0, doc="L(d) slope per decade of distance")
    d_min_cm: float = _opt(0.5, doc="shortest distance the model covers")
    d_max_cm: float = _opt(50.0, doc="longest distance the model covers")
    payment_band_cm: tuple[float, ...] = _opt((3.0, 5.0), doc="payment distance band")
    door_band_cm: tuple[float, ...] = _opt((6.0, 10.0), doc="door-access distance band")
    instrument_distances_cm: tuple[float, ...] = _opt((2.0, 4.0, 6.0, 8.0))
    instrument_level_dbm: float = _opt(0.0, doc="card level while the instrument measures")
    instrument_noise_sd_db: float = _opt(0.7, doc="simulated instrument reading noise")
    learn_count: int = _opt(3, doc="instrument results that teach a TAC its A")
    learn_tolerance_db: float = _opt(1.0, doc="they agree when all lie within this of the mean")

    def rf_model(self) -> Any:
        """The :class:`calibration.rf.RfModel` these constants describe (ConfigError if the
        constants are inconsistent)."""
        from decimal import Decimal  # noqa: PLC0415 - keeps config import light

        from calibration.rf import Band, BandKind, RfError, RfModel  # noqa: PLC0415

        def dec(value: float) -> Decimal:
            return Decimal(str(value))

        def band(kind: BandKind, values: tuple[float, ...], key: str) -> Band:
            if len(values) != 2:
                raise ConfigError(f"calibration.{key} must be [low, high] in cm")
            return Band(kind, dec(values[0]), dec(values[1]))

        try:
            return RfModel(
                threshold_dbm=dec(self.threshold_dbm),
                p_min_dbm=dec(self.p_min_dbm),
                p_max_dbm=dec(self.p_max_dbm),
                p_step_db=dec(self.p_step_db),
                a_min_db=dec(self.a_min_db),
                a_max_db=dec(self.a_max_db),
                spread_db=dec(self.spread_db),
                loss_at_1cm_db=dec(self.loss_at_1cm_db),
                loss_per_decade_db=dec(self.loss_per_decade_db),
                d_min_cm=dec(self.d_min_cm),
                d_max_cm=dec(self.d_max_cm),
                payment=band(BandKind.PAYMENT, self.payment_band_cm, "payment_band_cm"),
                door=band(BandKind.DOOR, self.door_band_cm, "door_band_cm"),
            )
        except RfError as exc:
            raise ConfigError(f"calibration: {exc}") from None


def _pepper_hex(v: Any) -> str | None:
    text = v.reveal() if isinstance(v, Secret) else v
    if not text:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return "must be hex"
    return None if len(raw) >= 16 else "must be at least 16 octets (32 hex digits)"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """``[gateway]``: ``stkpay serve`` (the SMPP gateway running the wallet application)."""

    health: str = _opt(
        "tcp:8780:interface=127.0.0.1", doc="Twisted endpoint of GET /healthz; 'none': off"
    )
    sweep_interval: float = _opt(30.0, _positive, "seconds between in-doubt sweeps")
    grace_period: float = _opt(10.0, _positive, "seconds SIGTERM allows to drain and unbind")
    in_doubt_after: float = _opt(300.0, _positive, "seconds before an unanswered load is in doubt")
    workers: int = _opt(
        16, _positive, "threads running the wallet application; one subscriber's MO stay in order"
    )
    pin_pepper: Secret = _opt(
        Secret(""), _pepper_hex, "PIN hashing secret (hex); overridden by STKPAY_PIN_PEPPER"
    )
    ephemeral_pepper: bool = _opt(
        False, doc="development only: without a pepper, make a throwaway one (PINs then die)"
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file."""

    smsc: SmscConfig = field(default_factory=SmscConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    ota: OtaConfig = field(default_factory=OtaConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    state: StateConfig = field(default_factory=StateConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)


_T = TypeVar("_T")


def _describe(value: Any) -> str:
    if isinstance(value, Secret):
        return "a secret"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _convert(path: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a table, got {_describe(value)}")
        return _build(tp, value, path)  # type: ignore[arg-type]
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {_describe(value)}")
        return tuple(_convert(f"{path}[{i}]", item_tp, v) for i, v in enumerate(value))
    if tp is Secret:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string")
        return Secret(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path} must be a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {_describe(value)}")
        return value
    if isinstance(tp, types.UnionType):  # pragma: no cover - no optional fields yet
        raise ConfigError(f"{path}: unsupported type")
    raise ConfigError(f"{path}: unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type[_T], table: Mapping[str, Any], prefix: str) -> _T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in table:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown key {where}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            continue
        path = f"{prefix}.{name}" if prefix else name
        value = _convert(path, hints[name], table[name])
        check = f.metadata.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"{path} {problem}, got {_describe(value)}")
        kwargs[name] = value
    return cls(**kwargs)


def from_mapping(table: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from a parsed TOML table, then apply the environment overrides."""
    cfg = _build(Config, table, "")
    env = os.environ if env is None else env
    if env.get("STKPAY_SMSC_PASSWORD") is not None:
        cfg = dataclasses.replace(
            cfg, smsc=dataclasses.replace(cfg.smsc, password=Secret(env["STKPAY_SMSC_PASSWORD"]))
        )
    if env.get("STKPAY_PIN_PEPPER") is not None:
        pepper = Secret(env["STKPAY_PIN_PEPPER"])
        problem = _pepper_hex(pepper)
        if problem:
            raise ConfigError(f"STKPAY_PIN_PEPPER {problem}")
        cfg = dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, pin_pepper=pepper))
    if env.get("STKPAY_LEDGER_URL"):
        cfg = dataclasses.replace(cfg, ledger=LedgerConfig(url=env["STKPAY_LEDGER_URL"]))
    return cfg


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or ``$STKPAY_CONFIG``, or ``./stkpay.toml`` if present, else defaults).

    Raises ConfigError with a one-line message naming the file and the key.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get("STKPAY_CONFIG"))
    p = Path(path) if path is not None else Path(env.get("STKPAY_CONFIG") or DEFAULT_PATH)
    if not p.exists():
        if explicit:
            raise ConfigError(f"{p}: no such file")
        return from_mapping({}, env)
    try:
        with p.open("rb") as fh:
            table = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: {exc.strerror}") from None
    try:
        return from_mapping(table, env)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
