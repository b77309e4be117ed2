"""The ledger's schema as ordered, versioned migrations, one statement list per backend.

Migrations run on connect inside one transaction that first takes a lock (PostgreSQL: a
transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE``), so processes starting at the
same time apply each migration exactly once. ``schema_version`` records what was applied.

Tables:

* ``accounts``: id, kind, currency, cached balance (fen). A CHECK refuses a negative balance on
  the non-negative kinds, as a last line behind the service's own checks.
* ``transfers``: the journal, append-only (triggers refuse UPDATE, DELETE and, on PostgreSQL,
  TRUNCATE). One row per double-entry transfer: code, amount > 0, debit account (money leaves),
  credit account (money enters), currency, unique idempotency key, request hash, context JSON,
  each side's balance after the transfer, creation time (UTC) and business time.
* ``requests``: the first result of every keyed request (idempotency), append-only.
* ``wallets``, ``cards``, ``merchants``: the holders; at most one open wallet per MSISDN and one
  active card per wallet (partial unique indexes).
* ``loads``: two-phase card top-ups and their state.

Version 2 (the write path of the journal): each account keeps the id of its latest transfer
(``accounts.last_transfer``) and each transfer the previous transfer of either side
(``debit_prev``, ``credit_prev``), a chain per account, newest first. An account's entries are
found by walking it; the per-account indexes ``(debit_account, id)`` and ``(credit_account,
id)`` are dropped: every batch inserted into them at one place per account it touched, which
dirtied (and wrote to the WAL, then the database) one index page per account per commit and
cost more than the rest of a transfer's storage. The journal's remaining indexes (the id, the
unique key, the posting time) take appends.

Version 3 (the load's credit note): ``loads.credit``, nullable text, the gateway's note of the
CREDIT FOR LOAD it sent (what the card's TAC is verified against), written with the
reservation, so a proof of receipt arriving after a restart or at another gateway instance
can be checked. Rows of earlier versions have NULL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

NON_NEGATIVE_KINDS: Final = ("cash", "card", "merchant", "in_flight")
SOURCE_KINDS: Final = ("hall_cash", "bank", "voucher", "settlement", "fees", "forfeiture")
ACCOUNT_KINDS: Final = NON_NEGATIVE_KINDS + SOURCE_KINDS

#: Operator accounts every ledger has (id, kind); hall cash accounts are created per hall.
OPERATOR_ACCOUNTS: Final = (
    ("bank", "bank"),
    ("voucher", "voucher"),
    ("in_flight", "in_flight"),
    ("settlement", "settlement"),
    ("fees", "fees"),
    ("forfeiture", "forfeiture"),
)

_CODES: Final = (
    "'topup_reserve','topup_post','topup_void','purchase','deposit','refund',"
    "'card_swap_migration','forfeiture','settlement','reversal'"
)
_KINDS: Final = ",".join(f"'{k}'" for k in ACCOUNT_KINDS)
_NONNEG: Final = ",".join(f"'{k}'" for k in NON_NEGATIVE_KINDS)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: a description and its statements per backend."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


def _tables(ts: str, big: str, json: str, serial: str) -> tuple[str, ...]:
    """The version-1 tables, with the backend's timestamp, integer, JSON and key types."""
    return (
        f"""CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ({_KINDS})),
            currency TEXT NOT NULL CHECK (length(currency) = 3),
            balance {big} NOT NULL DEFAULT 0,
            created_at {ts} NOT NULL,
            CHECK (balance >= 0 OR kind NOT IN ({_NONNEG}))
        )""",
        f"""CREATE TABLE wallets (
            id TEXT PRIMARY KEY,
            msisdn TEXT NOT NULL,
            id_number TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
            cash_account TEXT NOT NULL REFERENCES accounts (id),
            card_iccid TEXT,
            topup_day TEXT,
            topup_count INTEGER NOT NULL DEFAULT 0 CHECK (topup_count >= 0),
            created_at {ts} NOT NULL,
            closed_at {ts}
        )""",
        "CREATE UNIQUE INDEX wallets_open_msisdn ON wallets (msisdn) WHERE state = 'open'",
        "CREATE INDEX wallets_msisdn ON wallets (msisdn, created_at)",
        f"""CREATE TABLE cards (
            iccid TEXT PRIMARY KEY,
            wallet_id TEXT NOT NULL REFERENCES wallets (id),
            msisdn TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'retired', 'closed')),
            purse_account TEXT NOT NULL REFERENCES accounts (id),
            in_flight {big} NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
            enabled_at {ts} NOT NULL,
            retired_at {ts}
        )""",
        "CREATE UNIQUE INDEX cards_active_wallet ON cards (wallet_id) WHERE state = 'active'",
        f"""CREATE TABLE merchants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            account TEXT NOT NULL REFERENCES accounts (id),
            created_at {ts} NOT NULL
        )""",
        f"""CREATE TABLE transfers (
            id {serial},
            code TEXT NOT NULL CHECK (code IN ({_CODES})),
            amount {big} NOT NULL CHECK (amount > 0),
            debit_account TEXT NOT NULL REFERENCES accounts (id),
            credit_account TEXT NOT NULL REFERENCES accounts (id),
            currency TEXT NOT NULL,
            key TEXT NOT NULL UNIQUE,
            request_hash TEXT NOT NULL,
            context {json} NOT NULL,
            debit_balance {big} NOT NULL,
            credit_balance {big} NOT NULL,
            created_at {ts} NOT NULL,
            occurred_at {ts} NOT NULL,
            CHECK (debit_account <> credit_account)
        )""",
        "CREATE INDEX transfers_debit ON transfers (debit_account, id)",
        "CREATE INDEX transfers_credit ON transfers (credit_account, id)",
        "CREATE INDEX transfers_created ON transfers (created_at)",
        f"""CREATE TABLE loads (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            wallet_id TEXT NOT NULL REFERENCES wallets (id),
            msisdn TEXT NOT NULL,
            iccid TEXT NOT NULL REFERENCES cards (iccid),
            amount {big} NOT NULL CHECK (amount > 0),
            state TEXT NOT NULL CHECK (state IN ('reserved', 'posted', 'voided', 'in_doubt')),
            online_counter {big} NOT NULL,
            channel TEXT NOT NULL,
            day TEXT NOT NULL,
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL
        )""",
        "CREATE INDEX loads_pending ON loads (iccid) WHERE state IN ('reserved', 'in_doubt')",
        "CREATE INDEX loads_wallet_day ON loads (wallet_id, day)",
        f"""CREATE TABLE requests (
            key TEXT PRIMARY KEY,
            op TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            result {json} NOT NULL,
            created_at {ts} NOT NULL
        )""",
    )


def _operator_accounts(now_sql: str) -> tuple[str, ...]:
    return tuple(
        f"INSERT INTO accounts (id, kind, currency, balance, created_at) "  # noqa: S608 - constant SQL, values bound
        f"VALUES ('{acc}', '{kind}', 'CNY', 0, {now_sql})"
        for acc, kind in OPERATOR_ACCOUNTS
    )


_SQLITE_APPEND_ONLY: Final = tuple(
    f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
        BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END"""
    for table in ("transfers", "requests")
    for op in ("UPDATE", "DELETE")
)

_PG_APPEND_ONLY: Final = (
    """CREATE FUNCTION stkpay_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
        END
    $$""",
    *(
        f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION stkpay_append_only()"""
        for table in ("transfers", "requests")
    ),
    *(
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION stkpay_append_only()"""
        for table in ("transfers", "requests")
    ),
)

_V1: Final = (
    Migration(
        1,
        "accounts, journal, requests, wallets, cards, merchants, loads",
        sqlite=(
            *_tables("TEXT", "INTEGER", "TEXT", "INTEGER PRIMARY KEY"),
            *_SQLITE_APPEND_ONLY,
            *_operator_accounts("strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')"),
        ),
        postgresql=(
            *_tables(
                "TIMESTAMPTZ",
                "BIGINT",
                "JSONB",
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            ),
            *_PG_APPEND_ONLY,
            *_operator_accounts("now()"),
        ),
    ),
)


def _backfill(greatest: str) -> tuple[str, str]:
    """The version-2 backfill (using the version-1 indexes): each transfer's previous
    transfer on either side, then each account's latest; ``greatest`` takes the greater of
    two ids, either possibly NULL."""
    latest = (
        "(SELECT MAX(p.id) FROM transfers p WHERE p.{col} = transfers.{side} "
        "AND p.id < transfers.id)"
    )

    def prev(side: str) -> str:
        return greatest.format(
            a=latest.format(col="debit_account", side=side),
            b=latest.format(col="credit_account", side=side),
        )

    last = greatest.format(
        a="(SELECT MAX(t.id) FROM transfers t WHERE t.debit_account = accounts.id)",
        b="(SELECT MAX(t.id) FROM transfers t WHERE t.credit_account = accounts.id)",
    )
    return (
        f"UPDATE transfers SET debit_prev = {prev('debit_account')}, "  # noqa: S608 - constant SQL
        f"credit_prev = {prev('credit_account')}",
        f"UPDATE accounts SET last_transfer = {last}",  # noqa: S608 - constant SQL
    )


#: SQLite's two-argument max() is NULL when either is; PostgreSQL's GREATEST ignores NULLs
_SQLITE_BACKFILL: Final = _backfill("NULLIF(max(COALESCE({a}, 0), COALESCE({b}, 0)), 0)")
_PG_BACKFILL: Final = _backfill("GREATEST({a}, {b})")

MIGRATIONS: Final = (
    *_V1,
    Migration(
        2,
        "per-account transfer chains replace the journal's per-account indexes",
        sqlite=(
            "ALTER TABLE accounts ADD COLUMN last_transfer INTEGER",
            "ALTER TABLE transfers ADD COLUMN debit_prev INTEGER",
            "ALTER TABLE transfers ADD COLUMN credit_prev INTEGER",
            "DROP TRIGGER transfers_no_update",
            _SQLITE_BACKFILL[0],
            _SQLITE_APPEND_ONLY[0],
            _SQLITE_BACKFILL[1],
            "DROP INDEX transfers_debit",
            "DROP INDEX transfers_credit",
        ),
        postgresql=(
            "ALTER TABLE accounts ADD COLUMN last_transfer BIGINT",
            "ALTER TABLE transfers ADD COLUMN debit_prev BIGINT, ADD COLUMN credit_prev BIGINT",
            "ALTER TABLE transfers DISABLE TRIGGER transfers_append_only",
            _PG_BACKFILL[0],
            "ALTER TABLE transfers ENABLE TRIGGER transfers_append_only",
            _PG_BACKFILL[1],
            "DROP INDEX transfers_debit",
            "DROP INDEX transfers_credit",
        ),
    ),
    Migration(
        3,
        "the load's credit note (what a card's proof of receipt is verified against)",
        sqlite=("ALTER TABLE loads ADD COLUMN credit TEXT",),
        postgresql=("ALTER TABLE loads ADD COLUMN credit TEXT",),
    ),
)

SCHEMA_VERSION: Final = MIGRATIONS[-1].version

VERSION_TABLE: Final = {
    "sqlite": """CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at TEXT NOT NULL
    )""",
    "postgresql": """CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
}
