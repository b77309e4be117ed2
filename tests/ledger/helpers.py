"""Shared helpers for the ledger tests: fixtures' data and direct SQL for tampering."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from ledger.commit import Job
from ledger.service import Ledger, WalletView

MSISDN = "8613800138000"
MSISDN2 = "8613900139000"
ICCID = "89860012345678901234"
ICCID2 = "89860012345678905678"
ICCID3 = "89860012345678909999"
ID_NUMBER = "11010119900307001X"


def journal_size(led: Ledger) -> int:
    """How many transfers the journal holds."""
    return led.verify().transfers


def funded_wallet(
    led: Ledger,
    msisdn: str = MSISDN,
    iccid: str | None = ICCID,
    cash: int = 200_000,
) -> WalletView:
    """Open a wallet, enable ``iccid`` on it (unless None) and deposit ``cash`` from the bank."""
    led.open_wallet(msisdn, ID_NUMBER)
    if iccid is not None:
        led.enable_card(msisdn, iccid)
    if cash:
        led.deposit(msisdn, cash, "bank", request_id=f"fund-{msisdn}")
    return led.wallet(msisdn)


def loaded_card(
    led: Ledger, amount: int = 50_000, msisdn: str = MSISDN, iccid: str = ICCID
) -> None:
    """Reserve and post one top-up of ``amount`` to the card."""
    view = led.reserve_load(
        msisdn, iccid, amount, card_balance=0, online_counter=900, key=f"seed-load-{iccid}"
    )
    led.post_load(view.id)


def raw_sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the ledger's database behind the service's back."""
    if url.startswith("sqlite:///"):
        con = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()
    with psycopg.connect(url, autocommit=True) as con:
        cur = con.execute(sql.replace("?", "%s"), params or None)
        return cur.fetchall() if cur.description else []


def run_one_batch(
    led: Ledger, calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]]
) -> list[Job]:
    """Run ``calls`` (method, args, kwargs) as one batch in one transaction."""
    jobs = [led._capture(method, args, kwargs) for method, args, kwargs in calls]
    with led._db.connection() as conn:
        led._runner.run(conn, jobs)
    return jobs
