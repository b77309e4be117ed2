"""The wallet's limits as pure rules: figures, messages, days in Asia/Shanghai."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvalidRequest, Refused
from ledger.limits import (
    Limits,
    check_currency,
    check_funds,
    check_purchase,
    check_topup,
    day_bounds,
    local_day,
)

LIMITS = Limits()


def test_defaults_are_the_brief_card_parameters() -> None:
    """500 CNY single top-up, 1000 CNY card, 5 top-ups a day, 500 CNY purchase, Shanghai."""
    assert (LIMITS.single_topup, LIMITS.card_balance) == (50_000, 100_000)
    assert (LIMITS.daily_topups, LIMITS.single_purchase) == (5, 50_000)
    assert LIMITS.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"single_topup": 0},
        {"card_balance": -1},
        {"daily_topups": 1.5},
        {"single_purchase": True},
        {"timezone": "Mars/Olympus"},
    ],
)
def test_limits_refuse_nonsense(kwargs: dict[str, object]) -> None:
    """Limits must be positive integers in a known time zone."""
    with pytest.raises(ValueError, match=r"Limits|time zone"):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_topup_rules_in_order() -> None:
    """Single cap first, then the daily count, then the card cap."""
    with pytest.raises(Refused) as info:
        check_topup(LIMITS, amount=50_001, card_balance=100_000, in_flight=0, topups_today=9)
    assert info.value.rule == "single_topup_limit"
    with pytest.raises(Refused) as info:
        check_topup(LIMITS, amount=100, card_balance=100_000, in_flight=0, topups_today=5)
    assert info.value.rule == "daily_topup_count"
    with pytest.raises(Refused) as info:
        check_topup(LIMITS, amount=100, card_balance=99_950, in_flight=0, topups_today=4)
    assert info.value.rule == "card_balance_limit"
    check_topup(LIMITS, amount=50, card_balance=99_900, in_flight=50, topups_today=4)


@given(
    amount=st.integers(1, 60_000),
    card=st.integers(0, 110_000),
    flight=st.integers(0, 110_000),
    count=st.integers(0, 7),
)
def test_topup_accepts_exactly_what_the_limits_allow(
    amount: int, card: int, flight: int, count: int
) -> None:
    """check_topup passes iff every limit holds."""
    allowed = amount <= 50_000 and count < 5 and card + flight + amount <= 100_000
    try:
        check_topup(LIMITS, amount=amount, card_balance=card, in_flight=flight, topups_today=count)
    except Refused:
        assert not allowed
    else:
        assert allowed


def test_refusal_messages_name_rule_and_figures() -> None:
    """Messages are one line with the figures in yuan."""
    with pytest.raises(Refused) as info:
        check_purchase(LIMITS, amount=60_000)
    assert str(info.value) == "refused: single purchase 600.00 CNY exceeds the limit 500.00 CNY"
    assert info.value.figures == {"amount": 60_000, "limit": 50_000}
    with pytest.raises(Refused) as info:
        check_funds(what="cash account", balance=5, amount=6)
    assert str(info.value) == (
        "refused: insufficient funds: cash account balance 0.05 CNY is less than 0.06 CNY"
    )
    with pytest.raises(Refused) as info:
        check_currency(debit="a", debit_currency="CNY", credit="b", credit_currency="USD")
    assert (info.value.rule, info.value.figures) == ("currency_mismatch", {})
    check_currency(debit="a", debit_currency="CNY", credit="b", credit_currency="CNY")


def test_refused_rejects_unknown_rules_and_pickles() -> None:
    """Only the documented rules exist; a refusal survives pickling (thread pools, processes)."""
    import pickle

    with pytest.raises(ValueError, match="rule"):
        Refused("no_such_rule", {}, "x")
    original = Refused("insufficient_funds", {"balance": 1, "amount": 2}, "refused: x")
    copy = pickle.loads(pickle.dumps(original))
    assert (copy.rule, copy.figures, str(copy)) == (original.rule, original.figures, "refused: x")


def test_shanghai_day_starts_at_1600_utc() -> None:
    """Asia/Shanghai is UTC+8 all year: 15:59:59 UTC is still the same local day."""
    assert local_day(datetime(2026, 3, 2, 15, 59, 59, tzinfo=UTC), "Asia/Shanghai") == date(
        2026, 3, 2
    )
    assert local_day(datetime(2026, 3, 2, 16, 0, tzinfo=UTC), "Asia/Shanghai") == date(2026, 3, 3)
    start, end = day_bounds(date(2026, 3, 3), "Asia/Shanghai")
    assert start.astimezone(UTC) == datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
)
def test_day_bounds_contain_the_instant(at: datetime) -> None:
    """Every instant lies within the bounds of its own local day."""
    day = LIMITS.local_day(at)
    start, end = day_bounds(day, LIMITS.timezone)
    assert start <= at < end


def test_naive_datetimes_are_refused() -> None:
    """A day cannot be judged on a naive datetime."""
    with pytest.raises(InvalidRequest):
        local_day(datetime(2026, 3, 2), "Asia/Shanghai")
    assert local_day(
        datetime(2026, 3, 2, 23, tzinfo=timezone(timedelta(hours=-5))), "Asia/Shanghai"
    ) == date(2026, 3, 3)
