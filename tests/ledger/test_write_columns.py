"""The flush's UPDATEs set only the columns some request of the batch changed (the others
are written back as read under lock): in one batch mixing requests that change different
columns of the same tables, and one refused request whose changes are undone, every row ends
as the requests that stood left it, on both backends."""

from __future__ import annotations

from ledger.service import Ledger
from tests.ledger.conftest import SettableClock
from tests.ledger.helpers import (
    ICCID,
    ICCID2,
    ICCID3,
    ID_NUMBER,
    MSISDN,
    MSISDN2,
    raw_sql,
    run_one_batch,
)

MSISDN3 = "8613700137000"


def test_mixed_batch_writes_each_row_as_its_requests_left_it(
    ledger_url: str, ledger_clock: SettableClock
) -> None:
    with Ledger.connect(ledger_url, clock=ledger_clock, group_commit=False) as led:
        for msisdn, iccid in ((MSISDN, ICCID), (MSISDN2, ICCID2)):
            led.open_wallet(msisdn, ID_NUMBER)
            led.enable_card(msisdn, iccid)
            led.deposit(msisdn, 100_000, "bank", request_id=f"fund-{msisdn}")
        led.open_wallet(MSISDN3, ID_NUMBER)
        first = led.reserve_load(
            MSISDN2, ICCID2, 3_000, card_balance=0, online_counter=1, key="first"
        )
        ledger_clock.advance(seconds=5)
        jobs = run_one_batch(
            led,
            [
                # wallets.topup_day/topup_count, cards.in_flight
                (
                    led.reserve_load,
                    (MSISDN, ICCID, 2_000),
                    {"card_balance": 0, "online_counter": 1, "key": "k1"},
                ),
                # cards.in_flight, loads.state/updated_at
                (led.post_load, (first.id,), {}),
                # wallets.card_iccid (a new card)
                (led.enable_card, (MSISDN3, ICCID3), {}),
                # refused (over the cash): its changes are undone
                (
                    led.reserve_load,
                    (MSISDN2, ICCID2, 10_000_000),
                    {"card_balance": 0, "online_counter": 2, "key": "k2"},
                ),
            ],
        )
        assert [job.error is None for job in jobs] == [True, True, True, False]
        one, two, three = led.wallet(MSISDN), led.wallet(MSISDN2), led.wallet(MSISDN3)
        assert (one.topups_today, one.in_flight, one.card_iccid) == (1, 2_000, ICCID)
        assert (two.topups_today, two.in_flight, two.card_balance) == (1, 0, 3_000)
        assert (three.card_iccid, three.card_state, three.topups_today) == (ICCID3, "active", 0)
        rows = raw_sql(
            ledger_url,
            "SELECT msisdn, state, card_iccid, topup_count FROM wallets ORDER BY msisdn",
        )
        assert [tuple(r) for r in rows] == [
            (MSISDN3, "open", ICCID3, 0),
            (MSISDN, "open", ICCID, 1),
            (MSISDN2, "open", ICCID2, 1),
        ]
        cards = raw_sql(ledger_url, "SELECT iccid, state, in_flight FROM cards ORDER BY iccid")
        assert [tuple(r) for r in cards] == [
            (ICCID, "active", 2_000),
            (ICCID2, "active", 0),
            (ICCID3, "active", 0),
        ]
        loads = raw_sql(ledger_url, "SELECT key, state FROM loads ORDER BY key")
        assert [tuple(r) for r in loads] == [("first", "posted"), ("k1", "reserved")]
        assert led.verify().ok
