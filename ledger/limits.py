"""The wallet's card parameters (参数设置) and the pure rules that judge a request against them.

Defaults are the product brief's: card (e-purse) balance cap 1000 CNY, single purchase cap
500 CNY, single top-up cap 500 CNY, at most 5 top-ups a day. A "day" is a calendar day in the
wallet's time zone (Asia/Shanghai: midnight there is 16:00 UTC). The card cap is judged on the
balance the card itself reports when the load starts (INITIALIZE FOR LOAD), plus loads still in
flight to it, plus this load: offline purchases make the platform's purse mirror stale.

The functions here do no I/O and read no clock; the service calls them inside the posting
transaction with the figures it read under lock. Each raises :class:`~ledger.errors.Refused`
naming the rule and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from ledger.errors import InvalidRequest, Refused
from ledger.money import format_yuan


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-product limits, amounts in fen."""

    single_topup: int = 50_000
    card_balance: int = 100_000
    daily_topups: int = 5
    single_purchase: int = 50_000
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        for name in ("single_topup", "card_balance", "daily_topups", "single_purchase"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        _zone(self.timezone)  # raises on an unknown zone

    def local_day(self, at: datetime) -> date:
        """The calendar day of ``at`` (aware) in the wallet's time zone."""
        return local_day(at, self.timezone)


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def local_day(at: datetime, timezone: str) -> date:
    """The calendar day of the aware datetime ``at`` in ``timezone``."""
    if at.tzinfo is None:
        raise InvalidRequest("a timezone-aware datetime is required")
    return at.astimezone(_zone(timezone)).date()


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The aware local midnights that start ``day`` and the day after, in ``timezone``."""
    zone = _zone(timezone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    following = date.fromordinal(day.toordinal() + 1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return start, end


def check_topup(
    limits: Limits, *, amount: int, card_balance: int, in_flight: int, topups_today: int
) -> None:
    """Judge a top-up (load) of ``amount`` fen, in the order: single top-up cap, daily count,
    card balance cap (reported balance + loads in flight + this load)."""
    if amount > limits.single_topup:
        raise Refused(
            "single_topup_limit",
            {"amount": amount, "limit": limits.single_topup},
            f"refused: single top-up {format_yuan(amount)} CNY exceeds the limit "
            f"{format_yuan(limits.single_topup)} CNY",
        )
    if topups_today >= limits.daily_topups:
        raise Refused(
            "daily_topup_count",
            {"count": topups_today, "limit": limits.daily_topups},
            f"refused: {topups_today} top-ups today already reach the daily limit of "
            f"{limits.daily_topups}",
        )
    after = card_balance + in_flight + amount
    if after > limits.card_balance:
        raise Refused(
            "card_balance_limit",
            {
                "card_balance": card_balance,
                "in_flight": in_flight,
                "amount": amount,
                "after": after,
                "limit": limits.card_balance,
            },
            f"refused: card balance {format_yuan(card_balance)} CNY + in flight "
            f"{format_yuan(in_flight)} CNY + top-up {format_yuan(amount)} CNY = "
            f"{format_yuan(after)} CNY exceeds the card limit "
            f"{format_yuan(limits.card_balance)} CNY",
        )


def check_purchase(limits: Limits, *, amount: int) -> None:
    """Judge a purchase of ``amount`` fen against the single purchase cap."""
    if amount > limits.single_purchase:
        raise Refused(
            "single_purchase_limit",
            {"amount": amount, "limit": limits.single_purchase},
            f"refused: single purchase {format_yuan(amount)} CNY exceeds the limit "
            f"{format_yuan(limits.single_purchase)} CNY",
        )


def check_funds(*, what: str, balance: int, amount: int) -> None:
    """Refuse an overdraft: ``what`` (e.g. "cash account") holds ``balance`` < ``amount``."""
    if balance < amount:
        raise Refused(
            "insufficient_funds",
            {"balance": balance, "amount": amount},
            f"refused: insufficient funds: {what} balance {format_yuan(balance)} CNY is less "
            f"than {format_yuan(amount)} CNY",
        )


def check_currency(*, debit: str, debit_currency: str, credit: str, credit_currency: str) -> None:
    """Refuse a transfer between accounts of different currencies."""
    if debit_currency != credit_currency:
        raise Refused(
            "currency_mismatch",
            {},
            f"refused: currency mismatch: {debit} is in {debit_currency}, {credit} is in "
            f"{credit_currency}",
        )
