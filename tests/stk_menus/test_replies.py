"""Tests for stk_menus.replies: every reply in both languages, its segment budget, the money
filter, and strict values."""

from __future__ import annotations

from datetime import date

import pytest

from smsc.text import Encoding, choose_encoding
from stk_menus.replies import (
    LANGUAGES,
    LONGEST_VALUES,
    SEGMENT_BUDGET,
    TEMPLATE_DIR,
    TEMPLATES,
    ReplyError,
    format_money,
    render,
    segments_needed,
)

CASES = [(name, lang) for name in TEMPLATES for lang in LANGUAGES]


def test_template_files_match_the_budget_table() -> None:
    """Every reply has a zh and an en template, and no template lacks a budget."""
    files = sorted(path.name for path in TEMPLATE_DIR.glob("*.j2"))
    assert files == sorted(f"{name}.{lang}.j2" for name, lang in CASES)
    assert set(LONGEST_VALUES) == set(SEGMENT_BUDGET)


@pytest.mark.parametrize(("name", "lang"), CASES)
def test_longest_values_fit_the_budget(name: str, lang: str) -> None:
    """Rendered with its longest values, each reply fits its segment budget."""
    text = render(name, lang, **LONGEST_VALUES[name])
    assert text
    assert segments_needed(text) <= SEGMENT_BUDGET[name], text


@pytest.mark.parametrize(("name", "lang"), CASES)
def test_language_and_alphabet(name: str, lang: str) -> None:
    """Chinese replies are Chinese (UCS2); English ones fit the GSM alphabet."""
    text = render(name, lang, **LONGEST_VALUES[name])
    if lang == "zh":
        assert any("\u4e00" <= char <= "\u9fff" for char in text)
    else:
        assert choose_encoding(text) is Encoding.GSM7


def test_zh_is_the_default_language() -> None:
    """Without a language, the reply is Chinese."""
    assert render("help") == render("help", "zh")


def test_topup_ok_shows_the_amounts() -> None:
    """The confirmation names the amount and both balances, formatted as money."""
    zh = render("topup_ok", amount=10000, card_balance=25050, cash_balance=5)
    assert "100.00元" in zh and "250.50元" in zh and "0.05元" in zh
    en = render("topup_ok", "en", amount=10000, card_balance=25050, cash_balance=5)
    assert "CNY 100.00" in en and "CNY 250.50" in en and "CNY 0.05" in en


def test_wrong_pin_shows_attempts_left() -> None:
    """The wrong-PIN refusal tells how many attempts remain."""
    assert "2次" in render("refused_wrong_pin", attempts_left=2)
    assert "2 more attempt" in render("refused_wrong_pin", "en", attempts_left=2)


@pytest.mark.parametrize(
    ("fen", "zh", "en"),
    [
        (10000, "100.00元", "CNY 100.00"),
        (5, "0.05元", "CNY 0.05"),
        (0, "0.00元", "CNY 0.00"),
        (123456, "1234.56元", "CNY 1234.56"),
        (-5, "-0.05元", "CNY -0.05"),
    ],
)
def test_money_filter(fen: int, zh: str, en: str) -> None:
    """Fen print as yuan with two decimals: "100.00元" / "CNY 100.00"."""
    assert format_money(fen) == zh
    assert format_money(fen, "en") == en
    assert render("balance", card_balance=fen, cash_balance=0).startswith(f"手机钱包余额：卡内{zh}")


@pytest.mark.parametrize("bad", [1.5, True, "100", None])
def test_money_filter_refuses_non_fen(bad: object) -> None:
    """Only integer fen are money: floats, booleans and strings are refused."""
    with pytest.raises(ReplyError):
        render("balance", card_balance=bad, cash_balance=0)


def test_last10_lines() -> None:
    """Each entry is one line: MMDD, kind, amount (sign dropped: the kind says it)."""
    entries = [
        {"date": date(2025, 3, 15), "kind": "topup_post", "amount": 50000},
        {"date": date(2025, 3, 16), "kind": "purchase", "amount": -1250},
    ]
    assert render("last10", transactions=entries) == "明细：\n0315充500.00\n0316消12.50"
    assert render("last10", "en", transactions=entries) == (
        "Last 10 (CNY):\n0315 TOPUP 500.00\n0316 BUY 12.50"
    )


def test_last10_empty() -> None:
    """No entries: a one-line text."""
    assert render("last10", transactions=[]) == "暂无交易记录。"
    assert render("last10", "en", transactions=[]) == "No wallet transactions yet."


def test_missing_value_fails_loudly() -> None:
    """A value the template needs but the caller left out raises (StrictUndefined)."""
    with pytest.raises(ReplyError, match="cash_balance"):
        render("topup_ok", amount=1, card_balance=1)


def test_unexpected_value_fails() -> None:
    """A value the template does not use is a caller mistake, and raises."""
    with pytest.raises(ReplyError, match="amount"):
        render("help", amount=1)


def test_unknown_kind_fails() -> None:
    """A transaction kind the last-10 reply does not know raises instead of printing blank."""
    with pytest.raises(ReplyError):
        render("last10", transactions=[{"date": date(2025, 1, 1), "kind": "gift", "amount": 1}])


def test_bad_date_fails() -> None:
    """A transaction date must be a date."""
    with pytest.raises(ReplyError):
        render("last10", transactions=[{"date": "0101", "kind": "purchase", "amount": 1}])


def test_unknown_reply_or_language() -> None:
    """Unknown reply names and languages raise ReplyError."""
    with pytest.raises(ReplyError):
        render("greeting")
    with pytest.raises(ReplyError):
        render("help", "fr")


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("中" * 70, 1),
        ("中" * 71, 2),
        ("中" * 134, 2),
        ("中" * 135, 3),
        ("€" * 80, 1),
        ("€" * 81, 2),
    ],
)
def test_segments_needed(text: str, segments: int) -> None:
    """GSM 7-bit: 160 alone, 153 per part; UCS2: 70 alone, 67 per part; € counts two."""
    assert segments_needed(text) == segments


def test_missing_nested_value_fails_loudly() -> None:
    """A transaction without its date raises, naming the missing field."""
    with pytest.raises(ReplyError, match="date"):
        render("last10", transactions=[{"kind": "purchase", "amount": 1}])
