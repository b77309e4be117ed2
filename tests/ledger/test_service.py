"""The ledger's service layer, every operation on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from ledger.errors import (
    CardStateError,
    IdempotencyConflict,
    InvalidAmount,
    InvalidRequest,
    LedgerError,
    LoadStateError,
    Refused,
    UnknownCard,
    UnknownLoad,
    UnknownMerchant,
    UnknownSubscriber,
    WalletExists,
)
from ledger.limits import Limits
from ledger.service import Ledger

from .conftest import SettableClock
from .helpers import (
    ICCID,
    ICCID2,
    ICCID3,
    ID_NUMBER,
    MSISDN,
    MSISDN2,
    funded_wallet,
    journal_size,
    loaded_card,
    raw_sql,
    run_one_batch,
)

TODAY = date(2026, 3, 2)  # the clock fixture: 2026-03-02 10:00 in Shanghai


def _reserve(led: Ledger, amount: int, key: str, card_balance: int = 0, **kw: Any) -> Any:
    return led.reserve_load(
        kw.pop("msisdn", MSISDN),
        kw.pop("iccid", ICCID),
        amount,
        card_balance=card_balance,
        online_counter=kw.pop("counter", 1),
        key=key,
        **kw,
    )


# -- wallets -----------------------------------------------------------------------------------
def test_open_wallet_starts_empty(ledger: Ledger) -> None:
    """A new wallet has a zero cash account, no card, no top-ups and is open."""
    view = ledger.open_wallet(MSISDN, ID_NUMBER)
    assert view.msisdn == MSISDN
    assert (view.cash, view.card_iccid, view.card_state, view.card_balance) == (0, None, None, 0)
    assert (view.topups_today, view.in_flight, view.state) == (0, 0, "open")
    assert ledger.wallet(MSISDN) == view


def test_open_wallet_twice_is_refused(ledger: Ledger) -> None:
    """A second wallet for an MSISDN with an open one is refused."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    with pytest.raises(WalletExists, match=MSISDN):
        ledger.open_wallet(MSISDN, ID_NUMBER)


def test_open_wallet_with_request_id_replays(ledger: Ledger) -> None:
    """The same request id and request returns the first result; a different request with
    the same id is refused."""
    first = ledger.open_wallet(MSISDN, ID_NUMBER, request_id="open-1")
    ledger.deposit(MSISDN, 500, "bank", request_id="dep-1")
    assert ledger.open_wallet(MSISDN, ID_NUMBER, request_id="open-1") == first
    with pytest.raises(IdempotencyConflict, match="open-1"):
        ledger.open_wallet(MSISDN, "99999999", request_id="open-1")


def test_leading_plus_is_the_same_msisdn(ledger: Ledger) -> None:
    """'+86...' and '86...' name the same subscriber."""
    ledger.open_wallet("+" + MSISDN, ID_NUMBER)
    assert ledger.wallet(MSISDN).msisdn == MSISDN


@pytest.mark.parametrize("msisdn", ["", "abc", "0861380013800", "86-138", "1" * 16, 8613800138000])
def test_open_wallet_refuses_bad_msisdn(ledger: Ledger, msisdn: Any) -> None:
    """An MSISDN that is not E.164 digits is refused."""
    with pytest.raises(InvalidRequest, match="MSISDN"):
        ledger.open_wallet(msisdn, ID_NUMBER)


def test_unknown_subscriber(ledger: Ledger) -> None:
    """Queries and operations on an MSISDN without a wallet are refused naming it."""
    with pytest.raises(UnknownSubscriber, match=MSISDN):
        ledger.wallet(MSISDN)
    with pytest.raises(UnknownSubscriber, match=MSISDN):
        ledger.deposit(MSISDN, 100, "bank", request_id="d")
    with pytest.raises(UnknownSubscriber):
        ledger.history(MSISDN)
    assert journal_size(ledger) == 0


# -- cards -------------------------------------------------------------------------------------
def test_enable_card(ledger: Ledger) -> None:
    """Enabling a card makes it the wallet's active card with an empty purse."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    view = ledger.enable_card(MSISDN, ICCID)
    assert (view.card_iccid, view.card_state, view.card_balance) == (ICCID, "active", 0)
    assert ledger.enable_card(MSISDN, ICCID) == view  # the same card again: nothing to do


def test_enable_card_refusals(ledger: Ledger) -> None:
    """A card needs a wallet; a wallet takes one active card; a card belongs to one wallet."""
    with pytest.raises(UnknownSubscriber):
        ledger.enable_card(MSISDN, ICCID)
    ledger.open_wallet(MSISDN, ID_NUMBER)
    ledger.open_wallet(MSISDN2, ID_NUMBER)
    ledger.enable_card(MSISDN, ICCID)
    with pytest.raises(CardStateError, match="swap"):
        ledger.enable_card(MSISDN, ICCID2)
    with pytest.raises(CardStateError, match=ICCID):
        ledger.enable_card(MSISDN2, ICCID)
    with pytest.raises(InvalidRequest, match="ICCID"):
        ledger.enable_card(MSISDN2, "not-an-iccid")


# -- deposits ----------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["bank", "voucher"])
def test_deposit_from_bank_and_voucher(ledger: Ledger, source: str) -> None:
    """A deposit moves money from the funding source to the cash account."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    transfer = ledger.deposit(MSISDN, 12_345, source, request_id="d1")
    assert (transfer.code, transfer.amount) == ("deposit", 12_345)
    assert (transfer.debit, transfer.credit) == (source, f"cash:{MSISDN}")
    assert transfer.context["msisdn"] == MSISDN
    assert ledger.wallet(MSISDN).cash == 12_345
    assert ledger.verify().ok


def test_hall_deposit_needs_teller_and_hall(ledger: Ledger) -> None:
    """A business-hall deposit records teller and hall; without them it is refused."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    with pytest.raises(InvalidRequest, match="teller"):
        ledger.deposit(MSISDN, 100, "hall", request_id="d1")
    with pytest.raises(InvalidRequest, match="teller"):
        ledger.deposit(MSISDN, 100, "hall", request_id="d1", teller="T7")
    transfer = ledger.deposit(MSISDN, 100, "hall", request_id="d1", teller="T7", hall="H01")
    assert transfer.debit == "hall:H01"
    assert (transfer.context["teller"], transfer.context["hall"]) == ("T7", "H01")


def test_deposit_replay_posts_once(ledger: Ledger) -> None:
    """The same request id and request returns the first transfer and posts nothing more."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    first = ledger.deposit(MSISDN, 100, "bank", request_id="d1")
    again = ledger.deposit(MSISDN, 100, "bank", request_id="d1")
    assert again == first
    assert journal_size(ledger) == 1
    assert ledger.wallet(MSISDN).cash == 100


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 101},
        {"source": "voucher"},
        {"msisdn": MSISDN2},
    ],
)
def test_deposit_same_id_different_request_conflicts(
    ledger: Ledger, change: dict[str, Any]
) -> None:
    """A request id reused for a different deposit is refused; nothing is posted."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    ledger.open_wallet(MSISDN2, ID_NUMBER)
    ledger.deposit(MSISDN, 100, "bank", request_id="d1")
    args: dict[str, Any] = {"msisdn": MSISDN, "amount": 100, "source": "bank"} | change
    with pytest.raises(IdempotencyConflict):
        ledger.deposit(args["msisdn"], args["amount"], args["source"], request_id="d1")
    assert journal_size(ledger) == 1


def test_request_id_reused_across_operations_conflicts(ledger: Ledger) -> None:
    """A business-hall request id is one request, whatever the operation."""
    ledger.open_wallet(MSISDN, ID_NUMBER, request_id="r1")
    with pytest.raises(IdempotencyConflict):
        ledger.deposit(MSISDN, 100, "bank", request_id="r1")
    ledger.deposit(MSISDN, 100, "bank", request_id="r2")
    with pytest.raises(IdempotencyConflict):
        ledger.enable_card(MSISDN, ICCID, request_id="r2")


@pytest.mark.parametrize("amount", [0, -1, -100, 1.5, 100.0, "100", None, True, 10**13])
def test_deposit_refuses_bad_amounts(ledger: Ledger, amount: Any) -> None:
    """Zero, negative, non-integer and absurd amounts are refused; nothing is posted."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    with pytest.raises(InvalidAmount):
        ledger.deposit(MSISDN, amount, "bank", request_id="d1")
    assert journal_size(ledger) == 0
    assert ledger.wallet(MSISDN).cash == 0


def test_deposit_refuses_bad_source_and_ids(ledger: Ledger) -> None:
    """Unknown sources and malformed request ids are refused."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    with pytest.raises(InvalidRequest, match="source"):
        ledger.deposit(MSISDN, 100, "cash", request_id="d1")
    for bad in ("", "has space", "has#hash", "x" * 201):
        with pytest.raises(InvalidRequest, match="request id"):
            ledger.deposit(MSISDN, 100, "bank", request_id=bad)
    assert journal_size(ledger) == 0


# -- two-phase top-up --------------------------------------------------------------------------
def test_reserve_and_post_load(ledger: Ledger) -> None:
    """Reserve moves cash to in flight; post moves it to the card purse."""
    funded_wallet(ledger, cash=100_000)
    load = _reserve(ledger, 30_000, "mo:1", counter=7)
    assert (load.state, load.amount, load.online_counter, load.key) == (
        "reserved",
        30_000,
        7,
        "mo:1",
    )
    view = ledger.wallet(MSISDN)
    assert (view.cash, view.in_flight, view.card_balance, view.topups_today) == (
        70_000,
        30_000,
        0,
        1,
    )
    assert ledger.pending_loads() == [load]
    posted = ledger.post_load(load.id)
    assert posted.state == "posted"
    view = ledger.wallet(MSISDN)
    assert (view.cash, view.in_flight, view.card_balance, view.topups_today) == (
        70_000,
        0,
        30_000,
        1,
    )
    assert ledger.pending_loads() == []
    assert ledger.verify().ok


def test_post_reports_the_balances_it_left(ledger: Ledger) -> None:
    """post_load says the card purse's and the cash account's balances as the posting left
    them (the confirmation SMS shows them without reading the wallet again): after each post,
    in one batch with other writes to the same accounts, and for a post replayed later."""
    funded_wallet(ledger, cash=100_000)
    first = _reserve(ledger, 30_000, "mo:1", counter=1)
    second = _reserve(ledger, 20_000, "mo:2", card_balance=30_000, counter=2)
    assert (first.card_balance, first.cash_balance) == (None, None)  # a reservation: not said
    posted = ledger.post_load(first.id)
    view = ledger.wallet(MSISDN)
    assert (posted.card_balance, posted.cash_balance) == (view.card_balance, view.cash)
    assert (posted.card_balance, posted.cash_balance) == (30_000, 50_000)
    jobs = run_one_batch(
        ledger,
        [
            (ledger.post_load, (second.id,), {}),
            (ledger.deposit, (MSISDN, 5_000, "bank"), {"request_id": "more"}),
            (ledger.post_load, (second.id,), {}),
        ],
    )
    for job in jobs:
        job.finish()
    assert [job.error for job in jobs] == [None, None, None]
    assert [(j.result.card_balance, j.result.cash_balance) for j in (jobs[0], jobs[2])] == [
        (50_000, 50_000),
        (50_000, 55_000),
    ]
    again = ledger.post_load(first.id)
    assert (again.state, again.card_balance, again.cash_balance) == ("posted", 50_000, 55_000)
    assert ledger.verify().ok


def test_void_load_returns_cash(ledger: Ledger) -> None:
    """A voided load returns to the cash account and stops counting as a top-up."""
    funded_wallet(ledger, cash=100_000)
    load = _reserve(ledger, 30_000, "mo:1")
    assert ledger.void_load(load.id).state == "voided"
    view = ledger.wallet(MSISDN)
    assert (view.cash, view.in_flight, view.card_balance, view.topups_today) == (100_000, 0, 0, 0)
    assert ledger.verify().ok


def test_post_and_void_are_idempotent(ledger: Ledger) -> None:
    """Posting a posted load (or voiding a voided one) changes nothing."""
    funded_wallet(ledger, cash=100_000)
    posted = _reserve(ledger, 1_000, "mo:1")
    voided = _reserve(ledger, 2_000, "mo:2")
    ledger.post_load(posted.id)
    ledger.void_load(voided.id)
    size = journal_size(ledger)
    assert ledger.post_load(posted.id).state == "posted"
    assert ledger.void_load(voided.id).state == "voided"
    assert journal_size(ledger) == size
    assert ledger.wallet(MSISDN).card_balance == 1_000


def test_settled_loads_cannot_change_outcome(ledger: Ledger) -> None:
    """A posted load cannot be voided or put in doubt, nor a voided one posted."""
    funded_wallet(ledger, cash=100_000)
    posted = _reserve(ledger, 1_000, "mo:1")
    voided = _reserve(ledger, 2_000, "mo:2")
    ledger.post_load(posted.id)
    ledger.void_load(voided.id)
    with pytest.raises(LoadStateError, match="posted"):
        ledger.void_load(posted.id)
    with pytest.raises(LoadStateError, match="posted"):
        ledger.mark_in_doubt(posted.id)
    with pytest.raises(LoadStateError, match="voided"):
        ledger.post_load(voided.id)
    with pytest.raises(UnknownLoad):
        ledger.post_load("ld_nonexistent")
    assert ledger.verify().ok


@pytest.mark.parametrize("outcome", ["post", "void"])
def test_in_doubt_load_stays_in_flight_until_resolved(ledger: Ledger, outcome: str) -> None:
    """An in-doubt load keeps its money in flight and counts as a top-up until resolved."""
    funded_wallet(ledger, cash=100_000)
    load = _reserve(ledger, 5_000, "mo:1")
    doubt = ledger.mark_in_doubt(load.id)
    assert doubt.state == "in_doubt"
    assert ledger.mark_in_doubt(load.id) == doubt
    view = ledger.wallet(MSISDN)
    assert (view.cash, view.in_flight, view.topups_today) == (95_000, 5_000, 1)
    assert ledger.pending_loads(ICCID) == [doubt]
    if outcome == "post":
        ledger.post_load(load.id)
        assert ledger.wallet(MSISDN).card_balance == 5_000
    else:
        ledger.void_load(load.id)
        assert ledger.wallet(MSISDN).cash == 100_000
    assert ledger.pending_loads() == []
    assert ledger.verify().ok


def test_reserve_replay_returns_first_result(ledger: Ledger) -> None:
    """The same load key and request returns the first result (reserved) and posts nothing,
    even after the load was posted; a different request under the key is refused."""
    funded_wallet(ledger, cash=100_000)
    first = _reserve(ledger, 1_000, "mo:1", counter=3)
    ledger.post_load(first.id)
    size = journal_size(ledger)
    assert _reserve(ledger, 1_000, "mo:1", counter=3) == first
    assert journal_size(ledger) == size
    with pytest.raises(IdempotencyConflict, match="mo:1"):
        _reserve(ledger, 2_000, "mo:1", counter=3)
    with pytest.raises(IdempotencyConflict):
        _reserve(ledger, 1_000, "mo:1", counter=4)
    assert journal_size(ledger) == size
    assert ledger.wallet(MSISDN).topups_today == 1


def test_single_topup_limit(ledger: Ledger) -> None:
    """A top-up above 500 CNY is refused with the rule and figures; 500 CNY is allowed."""
    funded_wallet(ledger, cash=200_000)
    with pytest.raises(Refused) as info:
        _reserve(ledger, 60_000, "mo:1")
    assert info.value.rule == "single_topup_limit"
    assert info.value.figures == {"amount": 60_000, "limit": 50_000}
    assert str(info.value) == "refused: single top-up 600.00 CNY exceeds the limit 500.00 CNY"
    _reserve(ledger, 50_000, "mo:2")


def test_card_balance_limit_counts_reported_balance_and_in_flight(ledger: Ledger) -> None:
    """The card cap is judged on the balance the card reports plus loads in flight."""
    funded_wallet(ledger, cash=200_000)
    _reserve(ledger, 40_000, "mo:1")
    size = journal_size(ledger)
    with pytest.raises(Refused) as info:
        _reserve(ledger, 50_000, "mo:2", card_balance=20_000)
    assert info.value.rule == "card_balance_limit"
    assert info.value.figures == {
        "card_balance": 20_000,
        "in_flight": 40_000,
        "amount": 50_000,
        "after": 110_000,
        "limit": 100_000,
    }
    assert str(info.value) == (
        "refused: card balance 200.00 CNY + in flight 400.00 CNY + top-up 500.00 CNY = "
        "1100.00 CNY exceeds the card limit 1000.00 CNY"
    )
    assert journal_size(ledger) == size
    _reserve(ledger, 40_000, "mo:3", card_balance=20_000)  # exactly 1000.00: allowed
    assert ledger.wallet(MSISDN).in_flight == 80_000


def test_card_balance_limit_uses_card_report_not_mirror(ledger: Ledger) -> None:
    """Offline purchases make the mirror stale: the card's own report is what counts."""
    funded_wallet(ledger, cash=200_000)
    loaded_card(ledger, 50_000)
    # the mirror says 500.00 but the card reports 100.00 after offline purchases
    _reserve(ledger, 50_000, "mo:1", card_balance=10_000)
    with pytest.raises(Refused, match="card limit"):
        _reserve(ledger, 50_000, "mo:2", card_balance=60_000)


def test_daily_topup_count_ignores_voided_counts_in_doubt(ledger: Ledger) -> None:
    """At most five top-ups a day: reserved, posted and in-doubt loads count, voided not."""
    funded_wallet(ledger, cash=200_000)
    loads = [_reserve(ledger, 100, f"mo:{i}") for i in range(5)]
    ledger.post_load(loads[0].id)
    ledger.mark_in_doubt(loads[1].id)
    with pytest.raises(Refused) as info:
        _reserve(ledger, 100, "mo:5")
    assert info.value.rule == "daily_topup_count"
    assert info.value.figures == {"count": 5, "limit": 5}
    assert "daily limit of 5" in str(info.value)
    ledger.void_load(loads[2].id)
    assert ledger.wallet(MSISDN).topups_today == 4
    _reserve(ledger, 100, "mo:5")
    with pytest.raises(Refused, match="daily"):
        _reserve(ledger, 100, "mo:6")


def test_daily_count_rolls_over_at_shanghai_midnight(
    ledger: Ledger, ledger_clock: SettableClock
) -> None:
    """The day is Asia/Shanghai's: the count resets at 16:00 UTC, not at 00:00 UTC."""
    ledger_clock.now = datetime(2026, 3, 2, 15, 59, tzinfo=UTC)  # 23:59 in Shanghai
    funded_wallet(ledger, cash=200_000)
    for i in range(5):
        _reserve(ledger, 100, f"mo:{i}")
    with pytest.raises(Refused, match="daily"):
        _reserve(ledger, 100, "mo:5")
    ledger_clock.now = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # 00:00 on 3 March there
    assert ledger.wallet(MSISDN).topups_today == 0
    _reserve(ledger, 100, "mo:5")
    assert ledger.wallet(MSISDN).topups_today == 1
    # voiding a load of the previous day does not touch today's count
    ledger.void_load(ledger.pending_loads()[0].id)
    assert ledger.wallet(MSISDN).topups_today == 1
    assert ledger.verify().ok


def test_reserve_refuses_overdraft(ledger: Ledger) -> None:
    """A top-up above the cash balance is refused with the balance and the amount."""
    funded_wallet(ledger, cash=1_000)
    with pytest.raises(Refused) as info:
        _reserve(ledger, 2_000, "mo:1")
    assert info.value.rule == "insufficient_funds"
    assert info.value.figures == {"balance": 1_000, "amount": 2_000}
    assert str(info.value) == (
        "refused: insufficient funds: cash account balance 10.00 CNY is less than 20.00 CNY"
    )
    assert ledger.wallet(MSISDN).topups_today == 0


def test_reserve_refuses_wrong_cards(ledger: Ledger) -> None:
    """A top-up to an unknown card, or to a card that is not the wallet's, is refused."""
    funded_wallet(ledger)
    funded_wallet(ledger, MSISDN2, ICCID2)
    size = journal_size(ledger)
    with pytest.raises(UnknownCard, match=ICCID3):
        _reserve(ledger, 100, "mo:1", iccid=ICCID3)
    with pytest.raises(CardStateError, match="not the active card"):
        _reserve(ledger, 100, "mo:1", iccid=ICCID2)
    with pytest.raises(InvalidAmount):
        _reserve(ledger, 100, "mo:1", card_balance=-1)
    with pytest.raises(InvalidRequest, match="online counter"):
        _reserve(ledger, 100, "mo:1", counter=-1)
    assert journal_size(ledger) == size


# -- purchases and merchants -------------------------------------------------------------------
def test_purchase_moves_purse_to_merchant(ledger: Ledger) -> None:
    """A POS record moves money from the card purse to the merchant's payable account."""
    funded_wallet(ledger)
    loaded_card(ledger, 50_000)
    ledger.open_merchant("M001", "Canteen")
    at = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
    sale = ledger.purchase(ICCID, "M001", 1_250, offline_counter=17, terminal_id="POS-9", at=at)
    assert (sale.code, sale.amount) == ("purchase", 1_250)
    assert (sale.debit, sale.credit) == (f"card:{ICCID}", "merchant:M001")
    assert sale.context["counter"] == 17
    assert sale.context["terminal"] == "POS-9"
    assert ledger.wallet(MSISDN).card_balance == 48_750
    assert ledger.verify().ok


def test_purchase_is_idempotent_by_card_and_counter(ledger: Ledger) -> None:
    """The same POS record again returns the first transfer; a different record with the same
    card and offline counter is refused."""
    funded_wallet(ledger)
    loaded_card(ledger, 50_000)
    ledger.open_merchant("M001", "Canteen")
    first = ledger.purchase(ICCID, "M001", 1_000, offline_counter=5, terminal_id="T1")
    size = journal_size(ledger)
    assert ledger.purchase(ICCID, "M001", 1_000, offline_counter=5, terminal_id="T1") == first
    with pytest.raises(IdempotencyConflict):
        ledger.purchase(ICCID, "M001", 1_001, offline_counter=5, terminal_id="T1")
    assert journal_size(ledger) == size
    ledger.purchase(ICCID, "M001", 1_000, offline_counter=6, terminal_id="T1")
    assert ledger.wallet(MSISDN).card_balance == 48_000


def test_purchase_refusals(ledger: Ledger) -> None:
    """Single purchase cap, overdraft of the purse, unknown card or merchant: refused."""
    funded_wallet(ledger)
    loaded_card(ledger, 30_000)
    ledger.open_merchant("M001", "Canteen")
    size = journal_size(ledger)
    with pytest.raises(Refused) as info:
        ledger.purchase(ICCID, "M001", 50_001, offline_counter=1)
    assert info.value.rule == "single_purchase_limit"
    assert str(info.value) == "refused: single purchase 500.01 CNY exceeds the limit 500.00 CNY"
    with pytest.raises(Refused) as info:
        ledger.purchase(ICCID, "M001", 30_001, offline_counter=1)
    assert info.value.rule == "insufficient_funds"
    assert info.value.figures == {"balance": 30_000, "amount": 30_001}
    assert "card purse" in str(info.value)
    with pytest.raises(UnknownCard):
        ledger.purchase(ICCID3, "M001", 100, offline_counter=1)
    with pytest.raises(UnknownMerchant, match="M404"):
        ledger.purchase(ICCID, "M404", 100, offline_counter=1)
    with pytest.raises(InvalidAmount):
        ledger.purchase(ICCID, "M001", 0, offline_counter=1)
    with pytest.raises(InvalidRequest):
        ledger.purchase(ICCID, "M001", 100, offline_counter=1, at=datetime(2026, 3, 2))
    assert journal_size(ledger) == size
    ledger.purchase(ICCID, "M001", 30_000, offline_counter=1)  # the whole purse is fine


def test_currency_mismatch_is_refused(ledger: Ledger) -> None:
    """A transfer between accounts of different currencies is refused; nothing posted."""
    funded_wallet(ledger)
    loaded_card(ledger, 30_000)
    ledger.open_merchant("M-HK", "Border shop", currency="HKD")
    size = journal_size(ledger)
    with pytest.raises(Refused) as info:
        ledger.purchase(ICCID, "M-HK", 100, offline_counter=1)
    assert info.value.rule == "currency_mismatch"
    assert "HKD" in str(info.value)
    assert "CNY" in str(info.value)
    assert journal_size(ledger) == size


def test_open_merchant_is_idempotent(ledger: Ledger) -> None:
    """Opening the same merchant again is a no-op; with other details it is refused."""
    ledger.open_merchant("M001", "Canteen")
    ledger.open_merchant("M001", "Canteen")
    with pytest.raises(WalletExists, match="M001"):
        ledger.open_merchant("M001", "Kiosk")
    with pytest.raises(InvalidRequest):
        ledger.open_merchant("M 1", "Canteen")
    with pytest.raises(InvalidRequest):
        ledger.open_merchant("M002", "Canteen", currency="cny")


# -- card swap and closing ---------------------------------------------------------------------
def test_swap_card_migrates_read_balance(ledger: Ledger) -> None:
    """A read old card: its reported balance moves to the new card's purse; what the mirror
    holds beyond it stays with the old card for its late POS records."""
    funded_wallet(ledger)
    loaded_card(ledger, 30_000)
    ledger.open_merchant("M001", "Canteen")
    view = ledger.swap_card(MSISDN, ICCID2, old_balance=25_000, request_id="swap-1")
    assert (view.card_iccid, view.card_state, view.card_balance) == (ICCID2, "active", 25_000)
    # a purchase made offline on the old card before the swap arrives later
    ledger.purchase(ICCID, "M001", 5_000, offline_counter=1)
    entries = ledger.history(MSISDN, last=4)
    migration = [e for e in entries if e.code == "card_swap_migration"]
    assert sorted(e.amount for e in migration) == [-25_000, 25_000]
    assert ledger.verify().ok
    with pytest.raises(UnknownCard):
        ledger.reserve_load(MSISDN, ICCID3, 100, card_balance=0, online_counter=1, key="x")
    with pytest.raises(CardStateError):
        ledger.reserve_load(MSISDN, ICCID, 100, card_balance=0, online_counter=1, key="x")


def test_swap_card_forfeits_lost_card(ledger: Ledger) -> None:
    """A lost card cannot be recovered: its purse is forfeited, the cash account is kept."""
    funded_wallet(ledger, cash=100_000)
    loaded_card(ledger, 30_000)
    view = ledger.swap_card(
        MSISDN, ICCID2, old_balance=None, request_id="swap-1", teller="T1", hall="H01"
    )
    assert (view.card_iccid, view.card_balance, view.cash) == (ICCID2, 0, 70_000)
    forfeit = ledger.history(MSISDN, last=1)[0]
    assert (forfeit.code, forfeit.amount, forfeit.counterparty) == (
        "forfeiture",
        -30_000,
        "forfeiture",
    )
    assert forfeit.context["hall"] == "H01"
    assert (
        ledger.swap_card(
            MSISDN, ICCID2, old_balance=None, request_id="swap-1", teller="T1", hall="H01"
        )
        == view
    )
    assert ledger.verify().ok


def test_swap_card_refusals(ledger: Ledger) -> None:
    """No active card, pending loads, a reported balance above the mirror, or a known new
    card: refused, nothing posted."""
    funded_wallet(ledger, iccid=None)
    funded_wallet(ledger, MSISDN2, ICCID3)
    with pytest.raises(CardStateError, match="no active card"):
        ledger.swap_card(MSISDN, ICCID2, old_balance=None, request_id="s1")
    ledger.enable_card(MSISDN, ICCID)
    load = _reserve(ledger, 10_000, "mo:1")
    with pytest.raises(CardStateError, match="in flight"):
        ledger.swap_card(MSISDN, ICCID2, old_balance=None, request_id="s1")
    ledger.post_load(load.id)
    size = journal_size(ledger)
    with pytest.raises(Refused) as info:
        ledger.swap_card(MSISDN, ICCID2, old_balance=10_001, request_id="s1")
    assert info.value.rule == "insufficient_funds"
    with pytest.raises(CardStateError):
        ledger.swap_card(MSISDN, ICCID, old_balance=None, request_id="s1")
    with pytest.raises(CardStateError, match=ICCID3):
        ledger.swap_card(MSISDN, ICCID3, old_balance=None, request_id="s1")
    assert journal_size(ledger) == size


def test_close_wallet_refunds_cash_and_read_purse(ledger: Ledger) -> None:
    """Closing refunds the cash account and the purse read from the card to the hall."""
    funded_wallet(ledger, cash=100_000)
    loaded_card(ledger, 30_000)
    closed = ledger.close_wallet(
        MSISDN, request_id="close-1", teller="T1", hall="H01", card_balance=30_000
    )
    assert (closed.cash_refunded, closed.purse_refunded, closed.forfeited) == (70_000, 30_000, 0)
    assert [t.code for t in closed.transfers] == ["refund", "refund"]
    assert closed.wallet.state == "closed"
    view = ledger.wallet(MSISDN)
    assert (view.state, view.cash, view.card_iccid) == ("closed", 0, None)
    assert (
        ledger.close_wallet(
            MSISDN, request_id="close-1", teller="T1", hall="H01", card_balance=30_000
        )
        == closed
    )
    with pytest.raises(UnknownSubscriber):
        ledger.deposit(MSISDN, 100, "bank", request_id="late")
    assert ledger.verify().ok


def test_close_wallet_forfeits_unread_purse(ledger: Ledger) -> None:
    """Without a card reading the purse is forfeited; the cash is still refunded."""
    funded_wallet(ledger, cash=100_000)
    loaded_card(ledger, 30_000)
    closed = ledger.close_wallet(MSISDN, request_id="close-1", teller="T1", hall="H01")
    assert (closed.cash_refunded, closed.purse_refunded, closed.forfeited) == (70_000, 0, 30_000)
    assert [t.code for t in closed.transfers] == ["refund", "forfeiture"]
    assert ledger.verify().ok


def test_close_wallet_refusals_and_reopen(ledger: Ledger) -> None:
    """Money to refund needs a teller and hall; pending loads block closing; after closing
    the MSISDN can open a new, empty wallet."""
    funded_wallet(ledger, cash=100_000)
    with pytest.raises(InvalidRequest, match="teller"):
        ledger.close_wallet(MSISDN, request_id="c1")
    load = _reserve(ledger, 1_000, "mo:1")
    with pytest.raises(CardStateError, match="in flight"):
        ledger.close_wallet(MSISDN, request_id="c1", teller="T1", hall="H01")
    ledger.void_load(load.id)
    ledger.close_wallet(MSISDN, request_id="c1", teller="T1", hall="H01")
    reopened = ledger.open_wallet(MSISDN, ID_NUMBER)
    assert (reopened.state, reopened.cash, reopened.card_iccid) == ("open", 0, None)
    assert ledger.wallet(MSISDN).state == "open"
    assert ledger.history(MSISDN) == []
    assert ledger.verify().ok


def test_latest_closed_wallet_within_one_clock_tick(ledger: Ledger) -> None:
    """With the clock standing still, an MSISDN's views show its latest wallet generation,
    also past the ninth (ids MSISDN.9 < MSISDN.10 only by length), not an older one that
    shares its creation time."""
    funded_wallet(ledger, cash=100_000)
    loaded_card(ledger, 1_000)
    ledger.close_wallet(MSISDN, request_id="c1", teller="T1", hall="H01", card_balance=1_000)
    assert ledger.wallet(MSISDN).topups_today == 1
    for generation in range(2, 12):
        ledger.open_wallet(MSISDN, ID_NUMBER)
        ledger.deposit(MSISDN, generation, "bank", request_id=f"d{generation}")
        ledger.close_wallet(MSISDN, request_id=f"c{generation}", teller="T1", hall="H01")
        view = ledger.wallet(MSISDN)
        assert (view.state, view.topups_today) == ("closed", 0)
        assert sorted(e.amount for e in ledger.history(MSISDN)) == [-generation, generation]


def test_close_empty_wallet_needs_no_hall(ledger: Ledger) -> None:
    """A wallet with nothing to refund closes without teller or hall."""
    ledger.open_wallet(MSISDN, ID_NUMBER)
    closed = ledger.close_wallet(MSISDN, request_id="c1")
    assert closed.transfers == ()
    assert ledger.wallet(MSISDN).state == "closed"


# -- queries -----------------------------------------------------------------------------------
def test_history_last_n_newest_first(ledger: Ledger) -> None:
    """History lists the subscriber's entries newest first with signed amounts, the
    counterparty and the balance after; ``last`` bounds it (10 by default)."""
    funded_wallet(ledger, cash=0)
    for i in range(12):
        ledger.deposit(MSISDN, 100 + i, "bank", request_id=f"d{i}")
    entries = ledger.history(MSISDN)
    assert len(entries) == 10
    assert [e.amount for e in entries] == [111 - i for i in range(10)]
    assert [e.transfer_id for e in entries] == sorted(
        (e.transfer_id for e in entries), reverse=True
    )
    assert entries[0].balance_after == sum(100 + i for i in range(12))
    assert entries[0].counterparty == "bank"
    assert len(ledger.history(MSISDN, last=3)) == 3
    with pytest.raises(InvalidRequest):
        ledger.history(MSISDN, last=0)


def test_history_covers_cash_and_card(ledger: Ledger) -> None:
    """A top-up shows as cash out (reserve) and card in (post), a purchase as card out."""
    funded_wallet(ledger, cash=100_000)
    load = _reserve(ledger, 20_000, "mo:1")
    ledger.post_load(load.id)
    ledger.open_merchant("M001", "Canteen")
    ledger.purchase(ICCID, "M001", 500, offline_counter=1)
    entries = ledger.history(MSISDN, last=4)
    assert [(e.code, e.amount, e.balance_after) for e in entries] == [
        ("purchase", -500, 19_500),
        ("topup_post", 20_000, 20_000),
        ("topup_reserve", -20_000, 80_000),
        ("deposit", 100_000, 100_000),
    ]
    assert [e.account for e in entries] == [f"card:{ICCID}"] * 2 + [f"cash:{MSISDN}"] * 2


def test_merchant_day(ledger: Ledger, ledger_clock: SettableClock) -> None:
    """A merchant's day lists that local day's purchases only, oldest first."""
    funded_wallet(ledger)
    loaded_card(ledger, 50_000)
    ledger.open_merchant("M001", "Canteen")
    ledger.open_merchant("M002", "Kiosk")
    ledger_clock.now = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # 23:30 on 2 March
    ledger.purchase(ICCID, "M001", 100, offline_counter=1)
    ledger.purchase(ICCID, "M002", 999, offline_counter=2)
    ledger_clock.now = datetime(2026, 3, 2, 16, 30, tzinfo=UTC)  # 00:30 on 3 March
    ledger.purchase(ICCID, "M001", 200, offline_counter=3)
    day1 = ledger.merchant_day("M001", TODAY)
    day2 = ledger.merchant_day("M001", date(2026, 3, 3))
    assert [(e.amount, e.counterparty) for e in day1] == [(100, f"card:{ICCID}")]
    assert [e.amount for e in day2] == [200]
    assert ledger.merchant_day("M001", date(2026, 3, 4)) == []
    with pytest.raises(UnknownMerchant):
        ledger.merchant_day("M404", TODAY)


def test_hall_report(ledger: Ledger, ledger_clock: SettableClock) -> None:
    """A hall's day: cash deposits taken in, refunds paid out, the net; other halls and
    other days are not included."""
    funded_wallet(ledger, cash=0)
    funded_wallet(ledger, MSISDN2, ICCID2, cash=0)
    ledger.deposit(MSISDN, 10_000, "hall", request_id="a", teller="T1", hall="H01")
    ledger.deposit(MSISDN2, 5_000, "hall", request_id="b", teller="T2", hall="H01")
    ledger.deposit(MSISDN2, 7_000, "hall", request_id="c", teller="T3", hall="H02")
    ledger.close_wallet(MSISDN, request_id="d", teller="T1", hall="H01")
    ledger_clock.advance(days=1)
    ledger.deposit(MSISDN2, 1_000, "hall", request_id="e", teller="T2", hall="H01")
    report = ledger.hall_report("H01", TODAY)
    assert (report.hall, report.day) == ("H01", TODAY)
    assert (report.deposits, report.refunds, report.net) == (15_000, 10_000, 5_000)
    assert [(e.code, e.amount) for e in report.entries] == [
        ("deposit", 10_000),
        ("deposit", 5_000),
        ("refund", -10_000),
    ]
    assert [e.context["teller"] for e in report.entries] == ["T1", "T2", "T1"]
    empty = ledger.hall_report("H09", TODAY)
    assert (empty.deposits, empty.refunds, empty.net, empty.entries) == (0, 0, 0, [])


# -- verify ------------------------------------------------------------------------------------
def test_verify_on_empty_and_busy_ledger(ledger: Ledger) -> None:
    """verify passes on a fresh ledger and after every kind of operation; the total is 0."""
    report = ledger.verify()
    assert (report.ok, report.problems, report.transfers, report.total) == (True, [], 0, 0)
    funded_wallet(ledger)
    loaded_card(ledger, 30_000)
    report = ledger.verify()
    assert report.ok
    assert report.transfers == 3
    assert report.total == 0
    assert report.accounts >= 8


def test_verify_catches_a_tampered_balance(ledger: Ledger, ledger_url: str) -> None:
    """A balance changed directly in SQL is caught: it no longer matches the journal and the
    balances no longer sum to zero."""
    funded_wallet(ledger, cash=10_000)
    raw_sql(
        ledger_url, "UPDATE accounts SET balance = balance + 1 WHERE id = ?", (f"cash:{MSISDN}",)
    )
    report = ledger.verify()
    assert not report.ok
    assert report.total == 1
    assert any(f"cash:{MSISDN}" in p and "journal" in p for p in report.problems)
    assert any("sum" in p for p in report.problems)


def test_verify_catches_a_tampered_load(ledger: Ledger, ledger_url: str) -> None:
    """A load whose state was changed behind the ledger's back is caught."""
    funded_wallet(ledger, cash=10_000)
    load = _reserve(ledger, 1_000, "mo:1")
    raw_sql(ledger_url, "UPDATE loads SET state = 'posted' WHERE id = ?", (load.id,))
    problems = ledger.verify().problems
    assert any("in flight" in p for p in problems)
    assert any(load.id in p for p in problems)


def test_journal_is_append_only(ledger: Ledger, ledger_url: str) -> None:
    """The database itself refuses to update or delete journal rows."""
    funded_wallet(ledger, cash=10_000)
    for sql in ("UPDATE transfers SET amount = 1", "DELETE FROM transfers"):
        with pytest.raises(Exception, match="append-only"):
            raw_sql(ledger_url, sql)
    assert ledger.verify().ok


def test_refusals_are_ledger_errors_with_one_line(ledger: Ledger) -> None:
    """Every refusal is a LedgerError with a one-line message."""
    funded_wallet(ledger, cash=100)
    for call in (
        lambda: ledger.deposit(MSISDN, 0, "bank", request_id="x"),
        lambda: _reserve(ledger, 50_001, "k"),
        lambda: ledger.wallet(MSISDN2),
    ):
        with pytest.raises(LedgerError) as info:
            call()
        assert "\n" not in str(info.value)
        assert str(info.value)


def test_custom_limits(ledger_url: str, ledger_clock: SettableClock) -> None:
    """Limits are per product: a ledger with smaller limits enforces them."""
    limits = Limits(single_topup=1_000, card_balance=2_000, daily_topups=2, single_purchase=300)
    with Ledger.connect(ledger_url, limits=limits, clock=ledger_clock) as led:
        funded_wallet(led, cash=10_000)
        with pytest.raises(Refused, match="single top-up"):
            _reserve(led, 1_001, "a")
        _reserve(led, 1_000, "b")
        with pytest.raises(Refused, match="card limit"):
            _reserve(led, 1_000, "c", card_balance=1)
        _reserve(led, 1_000, "d")
        with pytest.raises(Refused, match="daily"):
            _reserve(led, 1, "e")


def test_reconnect_keeps_everything(ledger_url: str, ledger_clock: SettableClock) -> None:
    """Closing and reconnecting (migrations already applied) keeps the data and the keys."""
    with Ledger.connect(ledger_url, clock=ledger_clock) as led:
        funded_wallet(led)
        first = led.deposit(MSISDN, 100, "bank", request_id="d1")
    with Ledger.connect(ledger_url, clock=ledger_clock) as led:
        assert led.deposit(MSISDN, 100, "bank", request_id="d1") == first
        assert led.wallet(MSISDN).cash == 200_100
        assert led.verify().ok
