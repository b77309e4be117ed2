"""The SMS texts the platform answers a subscriber with: Jinja2 templates, Chinese and English.

Each reply is ``templates/<name>.<lang>.j2`` (``lang`` ``zh``, the default, or ``en``) and is
rendered by :func:`render` with :class:`jinja2.StrictUndefined`: a value the template uses but
the caller did not pass fails loudly, and so does a value passed that the template does not use.
Filters: ``money`` (fen to "100.00元", English "CNY 100.00"), ``yuan`` (fen to "100.00", for the
compact lines of the last-10 reply), ``mmdd`` (a date to "0315"; the caller passes local dates).

Each reply has a budget of SMS segments (:data:`SEGMENT_BUDGET`): one for every reply but the
last 10 transactions, which may take two. Chinese text goes as UCS2 (70 characters in one
segment, 67 per part of a concatenated message), English as GSM 7-bit (160, 153), per
:mod:`smsc.segment`; :func:`segments_needed` counts. :data:`LONGEST_VALUES` holds, for every
reply, the longest values it was sized for (amounts up to 999999.00 CNY asked, 999999.99 CNY in
a cash account, 1000.00 CNY on a card; last-10 entries of up to 1000.00 CNY): the tests render
each reply with them in both languages and hold it to its budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from functools import cache
from pathlib import Path
from typing import Final

import jinja2
from jinja2 import meta

from smsc.segment import LongMode, segment_text
from smsc.text import choose_encoding

__all__ = [
    "LANGUAGES",
    "LONGEST_VALUES",
    "SEGMENT_BUDGET",
    "TEMPLATES",
    "ReplyError",
    "format_money",
    "render",
    "segments_needed",
]

TEMPLATE_DIR: Final = Path(__file__).resolve().parent / "templates"
LANGUAGES: Final = ("zh", "en")

#: SMS segments each reply may use.
SEGMENT_BUDGET: Final[Mapping[str, int]] = {
    "topup_ok": 1,
    "refused_topup_limit": 1,
    "refused_card_cap": 1,
    "refused_daily_count": 1,
    "refused_insufficient_cash": 1,
    "refused_wrong_pin": 1,
    "refused_pin_locked": 1,
    "refused_unknown_card": 1,
    "refused_replay": 1,
    "refused_bad_mac": 1,
    "refused_plain_text": 1,
    "refused_pin_unset": 1,
    "topup_failed": 1,
    "balance": 1,
    "last10": 2,
    "help": 1,
    "calibration": 1,
    "calibration_done": 1,
    "calibration_already": 1,
    "calibration_refused_imei": 1,
}
TEMPLATES: Final = tuple(SEGMENT_BUDGET)

_MAX_ASKED: Final = 99_999_900  # fen: the largest amount a 6-digit GET INPUT can ask
_MAX_CASH: Final = 99_999_999  # fen: 999999.99 CNY
_CARD_CAP: Final = 100_000  # fen: the card balance cap, 1000.00 CNY
_TOPUP_LIMIT: Final = 50_000  # fen: the single top-up limit, 500.00 CNY

#: The longest values each reply is sized for (see the module docstring).
LONGEST_VALUES: Final[Mapping[str, Mapping[str, object]]] = {
    "topup_ok": {"amount": _TOPUP_LIMIT, "card_balance": _CARD_CAP, "cash_balance": _MAX_CASH},
    "refused_topup_limit": {"amount": _MAX_ASKED, "limit": _TOPUP_LIMIT},
    "refused_card_cap": {"amount": _MAX_ASKED, "card_balance": _CARD_CAP, "cap": _CARD_CAP},
    "refused_daily_count": {"max_count": 99},
    "refused_insufficient_cash": {"amount": _MAX_ASKED, "cash_balance": _MAX_CASH},
    "refused_wrong_pin": {"attempts_left": 9},
    "refused_pin_locked": {},
    "refused_unknown_card": {},
    "refused_replay": {},
    "refused_bad_mac": {},
    "refused_plain_text": {},
    "refused_pin_unset": {},
    "topup_failed": {},
    "balance": {"card_balance": _CARD_CAP, "cash_balance": _MAX_CASH},
    "last10": {
        "transactions": [{"date": date(2025, 12, 31), "kind": "reversal", "amount": -_CARD_CAP}]
        * 10
    },
    "help": {},
    "calibration": {},
    "calibration_done": {},
    "calibration_already": {},
    "calibration_refused_imei": {},
}


class ReplyError(ValueError):
    """An unknown reply or language, a missing or unexpected value, or a bad amount."""


def _defined(value: object) -> object:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError, naming what is missing
    return value


def _fen(value: object) -> int:
    value = _defined(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReplyError(f"an amount must be an integer number of fen, got {type(value).__name__}")
    return value


def _yuan(value: object) -> str:
    fen = _fen(value)
    whole, frac = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole}.{frac:02d}"


def format_money(fen: int, lang: str = "zh") -> str:
    """Fen as money text: ``10000`` is "100.00元" in Chinese, "CNY 100.00" in English."""
    text = _yuan(fen)
    return f"CNY {text}" if lang == "en" else f"{text}元"


def _mmdd(value: object) -> str:
    value = _defined(value)
    if not isinstance(value, date):
        raise ReplyError(f"a transaction date must be a date, got {type(value).__name__}")
    return f"{value.month:02d}{value.day:02d}"


@cache
def _environment(lang: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - plain SMS text, never HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["money"] = lambda fen: format_money(fen, lang)
    env.filters["yuan"] = _yuan
    env.filters["mmdd"] = _mmdd
    return env


@cache
def _template(name: str, lang: str) -> tuple[jinja2.Template, frozenset[str]]:
    env = _environment(lang)
    filename = f"{name}.{lang}.j2"
    source = (TEMPLATE_DIR / filename).read_text(encoding="utf-8")
    names = frozenset(meta.find_undeclared_variables(env.parse(source)))
    return env.get_template(filename), names


def render(name: str, lang: str = "zh", **values: object) -> str:
    """The text of reply ``name`` in ``lang`` with ``values``; trailing whitespace removed."""
    if name not in SEGMENT_BUDGET:
        raise ReplyError(f"no reply {name!r}")
    if lang not in LANGUAGES:
        raise ReplyError(f"no language {lang!r}: {', '.join(LANGUAGES)}")
    template, expected = _template(name, lang)
    unexpected = sorted(set(values) - expected)
    if unexpected:
        raise ReplyError(f"reply {name!r} takes no value {', '.join(unexpected)}")
    missing = sorted(expected - set(values))
    if missing:
        raise ReplyError(f"reply {name!r} needs {', '.join(missing)}")
    try:
        return template.render(**values).strip()
    except jinja2.UndefinedError as exc:
        raise ReplyError(f"reply {name!r} ({lang}): {exc.message}") from exc


def segments_needed(text: str) -> int:
    """SMS segments ``text`` takes: GSM 7-bit when it can carry the text, else UCS2; a long
    text as parts with an 8-bit concatenation header (3GPP TS 23.040 §9.2.3.24.1)."""
    return len(segment_text(text, choose_encoding(text), LongMode.UDH8, reference=0))
