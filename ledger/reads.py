"""The ledger's read side: balances, histories, day reports and the journal check.

Every function runs on a read-only snapshot (PostgreSQL REPEATABLE READ, SQLite WAL read
transaction) opened by the caller, so multi-statement answers are consistent. ``verify``
recomputes every balance from the journal and checks the invariants the writers keep:

* each account's cached balance equals its credits minus its debits, and equals the balance
  recorded after the account's latest transfer;
* each account's chain (schema version 2) starts at its latest transfer and links every
  transfer of the account to the one before it;
* the balances sum to zero; no non-negative account (cash, card purse, merchant payable,
  loads in flight) is negative;
* every transfer has a positive amount and one currency on both sides;
* the in-flight account holds exactly the reserved and in-doubt loads; each card's in-flight
  figure is the sum of its pending loads; each wallet's top-up count for its day matches its
  non-voided loads of that day; every load has its reserve transfer, and a posted or voided
  load its post or void transfer, for the load's amount.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Final

from ledger.db import Conn
from ledger.errors import InvalidRequest, UnknownMerchant, UnknownSubscriber
from ledger.limits import Limits, day_bounds
from ledger.ops import msisdn_of, name_id_of
from ledger.schema import NON_NEGATIVE_KINDS
from ledger.views import EntryView, HallReport, LoadView, VerifyReport, WalletView

MAX_PROBLEMS: Final = 50
_T_COLS: Final = (
    "id, code, amount, debit_account, credit_account, debit_balance, credit_balance, "
    "occurred_at, context"
)


# An MSISDN's wallets, the open one first, then the latest generation (ids are MSISDN,
# MSISDN.2, MSISDN.3, ...: longer is later, then by text), not by ``created_at``, which two
# wallets opened and closed within one clock tick share.
def _wallet_row(conn: Conn, msisdn: str) -> tuple[Any, ...]:
    row = conn.one(
        "SELECT id, msisdn, state, cash_account, card_iccid, topup_day, topup_count "
        "FROM wallets WHERE msisdn = ? "
        "ORDER BY CASE WHEN state = 'open' THEN 0 ELSE 1 END, length(id) DESC, id DESC LIMIT 1",
        (msisdn,),
    )
    if row is None:
        raise UnknownSubscriber(msisdn, f"unknown subscriber {msisdn}: no wallet")
    return row


#: The wallet view in one statement (one round trip, consistent without a transaction): the
#: open wallet of the MSISDN (else its latest closed one), its cash balance, and its card's
#: state, purse balance and loads in flight.
#: The wallet row is chosen first (LIMIT 1 in a subquery), so that every plan, whatever the
#: table statistics, looks the card and the two balances up by key.
_WALLET_SQL: Final = (
    "SELECT w.msisdn, w.state, w.card_iccid, w.topup_day, w.topup_count, "
    "COALESCE((SELECT balance FROM accounts WHERE id = w.cash_account), 0), c.state, "
    "COALESCE((SELECT balance FROM accounts WHERE id = c.purse_account), 0), "
    "COALESCE(c.in_flight, 0) "
    "FROM (SELECT msisdn, state, card_iccid, topup_day, topup_count, cash_account "
    "FROM wallets WHERE msisdn = ? "
    "ORDER BY CASE WHEN state = 'open' THEN 0 ELSE 1 END, length(id) DESC, id DESC LIMIT 1) w "
    "LEFT JOIN cards c ON c.iccid = w.card_iccid"
)


def wallet(conn: Conn, msisdn: str, limits: Limits, now: datetime) -> WalletView:
    """The open wallet of ``msisdn`` (or its latest closed one), read by one statement."""
    msisdn = msisdn_of(msisdn)
    row = conn.one(_WALLET_SQL, (msisdn,))
    if row is None:
        raise UnknownSubscriber(msisdn, f"unknown subscriber {msisdn}: no wallet")
    msisdn, state, card_iccid, topup_day, topup_count, cash, card_state, purse, in_flight = row
    today = limits.local_day(now).isoformat()
    return WalletView(
        msisdn=msisdn,
        cash=int(cash),
        card_iccid=card_iccid,
        card_state=card_state,
        card_balance=int(purse) if card_state is not None else 0,
        topups_today=int(topup_count) if topup_day == today else 0,
        in_flight=int(in_flight) if card_state is not None else 0,
        state=state,
    )


def _legs(conn: Conn, rows: list[tuple[Any, ...]], accounts: set[str]) -> list[EntryView]:
    """Entries of ``accounts`` from transfer rows, in the rows' order (debit leg first)."""
    entries = []
    for tid, code, amount, debit, credit, debit_bal, credit_bal, occurred, context in rows:
        at = conn.from_ts(occurred)
        ctx = conn.from_json(context)
        if debit in accounts:
            entries.append(
                EntryView(int(tid), at, code, -int(amount), credit, int(debit_bal), ctx, debit)
            )
        if credit in accounts:
            entries.append(
                EntryView(
                    int(tid), at, code, int(amount), debit, int(credit_bal), dict(ctx), credit
                )
            )
    return entries


def history(conn: Conn, msisdn: str, last: int) -> list[EntryView]:
    """The last ``last`` entries of a subscriber's cash account and card purses, newest first."""
    msisdn = msisdn_of(msisdn)
    if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= 1000:
        raise InvalidRequest(f"invalid count {last!r}: 1 to 1000")
    wid, _m, _s, cash_account, *_ = _wallet_row(conn, msisdn)
    accounts = {cash_account} | {
        str(r[0])
        for r in conn.execute("SELECT purse_account FROM cards WHERE wallet_id = ?", (wid,))
    }
    found: dict[int, tuple[Any, ...]] = {}
    for account in sorted(accounts):
        for row in conn.execute(_CHAIN, (account, account, last)):
            found[int(row[0])] = row
    rows = [found[tid] for tid in sorted(found, reverse=True)]
    return _legs(conn, rows, accounts)[:last]


#: an account's latest transfers, newest first: its chain (schema version 2) walked from
#: ``accounts.last_transfer`` through each transfer's link on the account's side, at most
#: the given number of steps; parameters: account, account, count
_CHAIN: Final = (
    "WITH RECURSIVE chain(id, n) AS ("  # noqa: S608 - constant SQL, values bound
    " SELECT last_transfer, 1 FROM accounts WHERE id = ? AND last_transfer IS NOT NULL"
    " UNION ALL"
    " SELECT CASE WHEN t.debit_account = ? THEN t.debit_prev ELSE t.credit_prev END, c.n + 1"
    " FROM chain c JOIN transfers t ON t.id = c.id WHERE c.n < ?"
    f") SELECT {_T_COLS} FROM transfers WHERE id IN (SELECT id FROM chain) ORDER BY id DESC"
)


def _day_rows(conn: Conn, account: str, day: date, limits: Limits) -> list[tuple[Any, ...]]:
    """Transfers of ``account`` posted on the local calendar ``day``, oldest first.

    The day is mapped to a range of transfer ids with the (cheap, append-only) index on the
    posting time, and that range of the journal is read in id order for the account's rows:
    no per-account index has to be maintained on every insert (schema version 2)."""
    start, end = day_bounds(day, limits.timezone)
    bounds = (conn.ts(start), conn.ts(end))
    span = conn.one(
        "SELECT MIN(id), MAX(id) FROM transfers WHERE created_at >= ? AND created_at < ?", bounds
    )
    if span is None or span[0] is None:
        return []
    return conn.execute(
        f"SELECT {_T_COLS} FROM transfers WHERE id BETWEEN ? AND ? "  # noqa: S608 - constant SQL
        "AND (debit_account = ? OR credit_account = ?) AND created_at >= ? AND created_at < ? "
        "ORDER BY id",
        (span[0], span[1], account, account, *bounds),
    )


def merchant_day(conn: Conn, merchant_id: str, day: date, limits: Limits) -> list[EntryView]:
    """A merchant's entries for one local calendar day, oldest first."""
    merchant_id = name_id_of(merchant_id, "merchant id")
    row = conn.one("SELECT account FROM merchants WHERE id = ?", (merchant_id,))
    if row is None:
        raise UnknownMerchant(merchant_id)
    account = str(row[0])
    return _legs(conn, _day_rows(conn, account, day, limits), {account})


def hall_report(conn: Conn, hall: str, day: date, limits: Limits) -> HallReport:
    """A business hall's cash for one local day, from the till's view: deposits taken in
    (positive), refunds paid out (negative), net cash the till should have gained."""
    hall = name_id_of(hall, "hall id")
    account = f"hall:{hall}"
    entries = [
        EntryView(
            e.transfer_id,
            e.at,
            e.code,
            -e.amount,
            e.counterparty,
            -e.balance_after if e.balance_after is not None else None,
            e.context,
            e.account,
        )
        for e in _legs(conn, _day_rows(conn, account, day, limits), {account})
    ]
    deposits = sum(e.amount for e in entries if e.code == "deposit")
    refunds = -sum(e.amount for e in entries if e.code == "refund")
    return HallReport(hall, day, deposits, refunds, deposits - refunds, entries)


def pending_loads(conn: Conn, iccid: str | None) -> list[LoadView]:
    """Loads reserved or in doubt (optionally of one card), oldest first."""
    sql = (
        "SELECT id, msisdn, iccid, amount, state, online_counter, key, credit FROM loads "
        "WHERE state IN ('reserved', 'in_doubt')"
    )
    params: tuple[Any, ...] = ()
    if iccid is not None:
        sql += " AND iccid = ?"
        params = (iccid,)
    rows = conn.execute(sql + " ORDER BY created_at, id", params)
    return [LoadView(r[0], r[1], r[2], int(r[3]), r[4], int(r[5]), r[6], r[7]) for r in rows]


def verify(conn: Conn) -> VerifyReport:
    """Recompute every balance from the journal and check the invariants."""
    conn.scan_tables()
    problems: list[str] = []
    heads: dict[str, int | None] = {}
    accounts: dict[str, tuple[str, str, int]] = {}
    for r in conn.execute("SELECT id, kind, currency, balance, last_transfer FROM accounts"):
        accounts[str(r[0])] = (str(r[1]), str(r[2]), int(r[3]))
        heads[str(r[0])] = None if r[4] is None else int(r[4])
    derived = dict.fromkeys(accounts, 0)
    for account, total in conn.execute(
        "SELECT credit_account, SUM(amount) FROM transfers GROUP BY credit_account"
    ):
        derived[account] = derived.get(account, 0) + int(total)
    for account, total in conn.execute(
        "SELECT debit_account, SUM(amount) FROM transfers GROUP BY debit_account"
    ):
        derived[account] = derived.get(account, 0) - int(total)
    for account in sorted(derived):
        if account not in accounts:
            problems.append(f"journal names unknown account {account}")
            continue
        kind, _currency, cached = accounts[account]
        if cached != derived[account]:
            problems.append(
                f"account {account}: cached balance {cached} but the journal gives "
                f"{derived[account]}"
            )
        if kind in NON_NEGATIVE_KINDS and min(cached, derived[account]) < 0:
            problems.append(f"account {account} ({kind}) is negative")
    total = sum(balance for _k, _c, balance in accounts.values())
    if total != 0:
        problems.append(f"balances sum to {total}, not 0")
    if sum(derived.values()) != 0:
        problems.append("journal debits and credits differ")

    count_row = conn.one(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN amount <= 0 THEN 1 ELSE 0 END), 0) FROM transfers"
    )
    transfers = int(count_row[0]) if count_row else 0
    if count_row and int(count_row[1]):
        problems.append(f"{int(count_row[1])} transfers have a non-positive amount")
    for (tid,) in conn.execute(
        "SELECT t.id FROM transfers t JOIN accounts d ON d.id = t.debit_account "
        "JOIN accounts c ON c.id = t.credit_account "
        "WHERE d.currency <> c.currency OR t.currency <> d.currency ORDER BY t.id LIMIT 10"
    ):
        problems.append(f"transfer {tid} mixes currencies")
    for account, after, latest in conn.execute(
        "WITH legs AS ("
        "  SELECT id, debit_account AS acc, debit_balance AS bal FROM transfers"
        "  UNION ALL SELECT id, credit_account, credit_balance FROM transfers"
        "), latest AS (SELECT acc, MAX(id) AS id FROM legs GROUP BY acc) "
        "SELECT l.acc, g.bal, l.id FROM latest l JOIN legs g ON g.acc = l.acc AND g.id = l.id"
    ):
        known = accounts.get(str(account))
        if known is not None and int(after) != known[2]:
            cached = known[2]
            problems.append(
                f"account {account}: balance after its latest transfer is {after}, cached {cached}"
            )
        if known is not None and heads.pop(str(account)) != int(latest):
            problems.append(f"account {account}: its chain does not start at transfer {latest}")
    for account, head in sorted(heads.items()):
        if head is not None:
            problems.append(f"account {account} has no transfer but its chain starts at {head}")
    for account, tid in conn.execute(
        "WITH legs AS ("
        "  SELECT id, debit_account AS acc, debit_prev AS prev FROM transfers"
        "  UNION ALL SELECT id, credit_account, credit_prev FROM transfers"
        "), linked AS (SELECT acc, id, prev, LAG(id) OVER (PARTITION BY acc ORDER BY id) AS want"
        "  FROM legs) "
        "SELECT acc, id FROM linked WHERE COALESCE(prev, 0) <> COALESCE(want, 0) "
        "ORDER BY id LIMIT 10"
    ):
        problems.append(f"transfer {tid}: the chain of {account} skips or misses a link")

    _check_loads(conn, accounts, problems)
    if len(problems) > MAX_PROBLEMS:
        problems = [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]
    return VerifyReport(
        ok=not problems,
        problems=problems,
        accounts=len(accounts),
        transfers=transfers,
        total=total,
    )


def _check_loads(
    conn: Conn, accounts: dict[str, tuple[str, str, int]], problems: list[str]
) -> None:
    row = conn.one(
        "SELECT COALESCE(SUM(amount), 0) FROM loads WHERE state IN ('reserved', 'in_doubt')"
    )
    pending = int(row[0]) if row else 0
    in_flight = accounts.get("in_flight", ("", "", 0))[2]
    if pending != in_flight:
        problems.append(
            f"loads in flight total {pending} but the in-flight account holds {in_flight}"
        )
    for iccid, cached, actual in conn.execute(
        "SELECT c.iccid, c.in_flight, COALESCE(SUM(l.amount), 0) FROM cards c "
        "LEFT JOIN loads l ON l.iccid = c.iccid AND l.state IN ('reserved', 'in_doubt') "
        "GROUP BY c.iccid, c.in_flight HAVING c.in_flight <> COALESCE(SUM(l.amount), 0)"
    ):
        problems.append(f"card {iccid}: in flight {cached} but its pending loads total {actual}")
    for wid, cached, actual in conn.execute(
        "SELECT w.id, w.topup_count, (SELECT COUNT(*) FROM loads l WHERE l.wallet_id = w.id "
        "AND l.day = w.topup_day AND l.state <> 'voided') FROM wallets w "
        "WHERE w.topup_day IS NOT NULL"
    ):
        if int(cached) != int(actual):
            problems.append(f"wallet {wid}: top-up count {cached} but {actual} loads that day")
    checks = (
        ("reserve", "", "1 = 1"),
        ("post", "#post", "l.state = 'posted'"),
        ("void", "#void", "l.state = 'voided'"),
    )
    for label, suffix, where in checks:
        for load_id, state in conn.execute(
            f"SELECT l.id, l.state FROM loads l LEFT JOIN transfers t "  # noqa: S608 - constant SQL, values bound
            f"ON t.key = 'load:' || l.key || '{suffix}' AND t.amount = l.amount "
            f"WHERE {where} AND t.id IS NULL ORDER BY l.id LIMIT 10"
        ):
            problems.append(f"load {load_id} ({state}) has no matching {label} transfer")
    for load_id, state in conn.execute(
        "SELECT l.id, l.state FROM loads l JOIN transfers t ON t.key IN "
        "('load:' || l.key || '#post', 'load:' || l.key || '#void') "
        "WHERE l.state IN ('reserved', 'in_doubt') ORDER BY l.id LIMIT 10"
    ):
        problems.append(f"load {load_id} is {state} but was already settled")
