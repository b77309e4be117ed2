"""The ledger's unit of work: one database transaction carrying a batch of requests.

Operations read the rows they need through :class:`Tx` (cached for the batch; on PostgreSQL
each row is read ``FOR UPDATE``, on SQLite the transaction holds the write lock), judge the
request in Python, and record their changes in memory. Every in-memory change goes through
:class:`Tx` and is logged, so :meth:`Tx.mark` / :meth:`Tx.undo_to` give each request the effect of
a SAVEPOINT at no database cost: a refused request is undone and leaves nothing behind.

A batch costs a constant number of round trips, whatever its size (round trips, and on SQLite
every row stepped through, release the GIL, which the many threads calling the ledger then
fight over): :meth:`Tx.prefetch` reads and locks what the batch's requests announced, in one
pipeline; :meth:`Tx.prepare` creates new accounts, allocates the transfer ids and reads the
remaining touched balances under lock; :meth:`Tx.write` sends every change as multi-row
statements (balance deltas ``balance = balance + delta`` in account-id order, the journal rows,
the stored first results), pipelined with the caller's COMMIT.

Transfer ids are allocated in :meth:`Tx.prepare` (SQLite: after ``MAX(id)`` under the write
lock; PostgreSQL: from the identity sequence) while every row the batch touches is locked, so
for one account ids increase in commit order and "newest first" is "highest id first". Each
side's balance after a transfer is computed from the balances read under lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ledger.db import Conn
from ledger.errors import StorageError
from ledger.limits import Limits, check_currency, check_funds
from ledger.schema import NON_NEGATIVE_KINDS
from ledger.views import View, decode_view, encode_view

_FUNDS_LABEL: Final = {"cash": "cash account", "card": "card purse", "merchant": "merchant account"}

AccountMeta = tuple[str, str]  # (kind, currency): immutable, cacheable across transactions


@dataclass(slots=True, eq=False)
class AccountRow:
    """An account as this batch knows it; ``balance`` is None unless read under lock."""

    id: str
    kind: str
    currency: str
    balance: int | None
    delta: int = 0
    new: bool = False


@dataclass(slots=True, eq=False)
class WalletRow:
    """A wallet row."""

    id: str
    msisdn: str
    id_number: str = field(repr=False)
    state: str
    cash_account: str
    card_iccid: str | None
    topup_day: str | None
    topup_count: int
    created_at: Any  # a datetime for new rows, the stored value for rows read
    closed_at: datetime | None
    new: bool = False
    dirty: bool = False


@dataclass(slots=True, eq=False)
class CardRow:
    """A card row."""

    iccid: str
    wallet_id: str
    msisdn: str
    state: str
    purse_account: str
    in_flight: int
    enabled_at: Any  # a datetime for new rows, the stored value for rows read
    retired_at: datetime | None
    new: bool = False
    dirty: bool = False


@dataclass(slots=True, eq=False)
class MerchantRow:
    """A merchant row."""

    id: str
    name: str
    account: str
    created_at: datetime
    new: bool = False


@dataclass(slots=True, eq=False)
class LoadRow:
    """A two-phase load row."""

    id: str
    key: str
    wallet_id: str
    msisdn: str
    iccid: str
    amount: int
    state: str
    online_counter: int
    channel: str
    day: str
    created_at: Any  # a datetime for new rows, the stored value for rows read
    updated_at: Any
    new: bool = False
    dirty: bool = False


@dataclass(slots=True, eq=False)
class TransferRow:
    """A journal row; ``id`` and the balances after are filled in at flush."""

    code: str
    amount: int
    debit: str
    credit: str
    currency: str
    key: str
    request_hash: str
    context: dict[str, Any]
    created_at: datetime
    occurred_at: datetime
    id: int = 0
    debit_balance: int = 0
    credit_balance: int = 0


_UNSET: Final[Any] = object()


@dataclass(slots=True, eq=False)
class RequestRow:
    """The first result of a keyed request: stored JSON, or a thunk for one made in this
    batch (evaluated once the batch's transfer ids are known)."""

    key: str
    op: str
    request_hash: str
    stored: Any = None
    thunk: Callable[[], View | None] | None = None
    new: bool = False
    _value: Any = _UNSET

    def value(self) -> View | None:
        """The first result (a view, or None)."""
        if self._value is _UNSET:
            self._value = self.thunk() if self.thunk is not None else decode_view(self.stored)
        return self._value  # type: ignore[no-any-return]


_W_COLS: Final = (
    "id, msisdn, id_number, state, cash_account, card_iccid, topup_day, topup_count, "
    "created_at, closed_at"
)
_C_COLS: Final = "iccid, wallet_id, msisdn, state, purse_account, in_flight, enabled_at, retired_at"
_T_COLS: Final = (
    "id, code, amount, debit_account, credit_account, currency, key, request_hash, context, "
    "created_at, occurred_at"
)
_W_COLS_W: Final = ", ".join(f"w.{c.strip()}" for c in _W_COLS.split(","))
_C_COLS_C: Final = ", ".join(f"c.{c.strip()}" for c in _C_COLS.split(","))
_L_COLS: Final = (
    "id, key, wallet_id, msisdn, iccid, amount, state, online_counter, channel, day, "
    "created_at, updated_at"
)


class Tx:
    """One write transaction's row cache, change log and flush."""

    def __init__(
        self, conn: Conn, limits: Limits, meta: dict[str, AccountMeta], now: datetime
    ) -> None:
        self.conn = conn
        self.limits = limits
        self.now = now
        self._meta = meta
        self._lock = " FOR UPDATE" if conn.dialect == "postgresql" else ""
        self._accounts: dict[str, AccountRow] = {}
        self._wallets: dict[str, WalletRow] = {}
        self._open_by_msisdn: dict[str, str | None] = {}
        self._cards: dict[str, CardRow | None] = {}
        self._merchants: dict[str, MerchantRow | None] = {}
        self._loads: dict[str, LoadRow | None] = {}
        self._requests: dict[str, RequestRow | None] = {}
        self._transfers: list[TransferRow] = []
        self._by_key: dict[str, TransferRow | None] = {}
        self._new: dict[str, list[Any]] = {
            "accounts": [],
            "wallets": [],
            "cards": [],
            "merchants": [],
            "loads": [],
            "requests": [],
        }
        self._undo: list[Callable[[], None]] = []

    # -- savepoints (in memory) ----------------------------------------------------------
    def mark(self) -> int:
        """A savepoint: the current length of the change log."""
        return len(self._undo)

    def undo_to(self, mark: int) -> None:
        """Undo every change made since ``mark``."""
        while len(self._undo) > mark:
            self._undo.pop()()

    def set(self, row: Any, **changes: Any) -> None:
        """Change fields of a cached row (logged)."""
        for name, value in changes.items():
            self._undo.append(_restore(row, name, getattr(row, name)))
            setattr(row, name, value)
        if hasattr(row, "dirty"):
            row.dirty = True

    def _put(self, cache: dict[str, Any], key: str, value: Any) -> None:
        had, old = key in cache, cache.get(key)

        def undo() -> None:
            if had:
                cache[key] = old
            else:
                cache.pop(key, None)

        self._undo.append(undo)
        cache[key] = value

    def _append(self, items: list[Any], item: Any) -> None:
        items.append(item)
        self._undo.append(items.pop)

    # -- reads ---------------------------------------------------------------------------
    def _wallet_from(self, row: tuple[Any, ...]) -> WalletRow:
        cached = self._wallets.get(row[0])
        if cached is not None:
            return cached
        wallet = WalletRow(
            id=row[0],
            msisdn=row[1],
            id_number=row[2],
            state=row[3],
            cash_account=row[4],
            card_iccid=row[5],
            topup_day=row[6],
            topup_count=int(row[7]),
            created_at=row[8],  # as stored: only new rows are written
            closed_at=self.conn.from_ts(row[9]) if row[9] is not None else None,
        )
        self._wallets[wallet.id] = wallet
        return wallet

    def open_wallet(self, msisdn: str) -> WalletRow | None:
        """The open wallet of ``msisdn`` (locked), or None."""
        if msisdn in self._open_by_msisdn:
            wid = self._open_by_msisdn[msisdn]
            return None if wid is None else self._wallets[wid]
        row = self.conn.one(
            f"SELECT {_W_COLS} FROM wallets WHERE msisdn = ? AND state = 'open'{self._lock}",  # noqa: S608 - constant SQL, values bound
            (msisdn,),
        )
        wallet = None if row is None else self._wallet_from(row)
        self._open_by_msisdn[msisdn] = None if wallet is None else wallet.id
        return wallet

    def wallet(self, wallet_id: str) -> WalletRow:
        """The wallet with this id (locked); it must exist."""
        cached = self._wallets.get(wallet_id)
        if cached is not None:
            return cached
        row = self.conn.one(f"SELECT {_W_COLS} FROM wallets WHERE id = ?{self._lock}", (wallet_id,))  # noqa: S608 - constant SQL, values bound
        if row is None:
            raise StorageError(f"wallet {wallet_id} is referenced but missing")
        return self._wallet_from(row)

    def wallet_generations(self, msisdn: str) -> int:
        """How many wallets ``msisdn`` has had (to name a new one)."""
        row = self.conn.one("SELECT COUNT(*) FROM wallets WHERE msisdn = ?", (msisdn,))
        stored = int(row[0]) if row else 0
        return stored + sum(1 for w in self._new["wallets"] if w.msisdn == msisdn)

    def card(self, iccid: str) -> CardRow | None:
        """The card (locked), or None."""
        if iccid in self._cards:
            return self._cards[iccid]
        row = self.conn.one(f"SELECT {_C_COLS} FROM cards WHERE iccid = ?{self._lock}", (iccid,))  # noqa: S608 - constant SQL, values bound
        card = None if row is None else self._card_from(row)
        self._cards[iccid] = card
        return card

    def _card_from(self, row: tuple[Any, ...]) -> CardRow:
        return CardRow(
            iccid=row[0],
            wallet_id=row[1],
            msisdn=row[2],
            state=row[3],
            purse_account=row[4],
            in_flight=int(row[5]),
            enabled_at=row[6],  # as stored: only new rows are written
            retired_at=self.conn.from_ts(row[7]) if row[7] is not None else None,
        )

    def merchant(self, merchant_id: str) -> MerchantRow | None:
        """The merchant, or None (merchants never change: no lock)."""
        if merchant_id in self._merchants:
            return self._merchants[merchant_id]
        row = self.conn.one(
            "SELECT id, name, account, created_at FROM merchants WHERE id = ?", (merchant_id,)
        )
        merchant = None
        if row is not None:
            merchant = MerchantRow(row[0], row[1], row[2], self.conn.from_ts(row[3]))
        self._merchants[merchant_id] = merchant
        return merchant

    def load_owner(self, load_id: str) -> tuple[str, str] | None:
        """The wallet id and ICCID of a load, read without a lock (so that locks are then
        taken in the fixed order wallet, card, load)."""
        cached = self._loads.get(load_id)
        if cached is not None:
            return cached.wallet_id, cached.iccid
        row = self.conn.one("SELECT wallet_id, iccid FROM loads WHERE id = ?", (load_id,))
        return None if row is None else (str(row[0]), str(row[1]))

    def load(self, load_id: str) -> LoadRow | None:
        """The load (locked), or None."""
        if load_id in self._loads:
            return self._loads[load_id]
        row = self.conn.one(f"SELECT {_L_COLS} FROM loads WHERE id = ?{self._lock}", (load_id,))  # noqa: S608 - constant SQL, values bound
        load = None if row is None else self._load_from(row)
        self._loads[load_id] = load
        return load

    def _load_from(self, row: tuple[Any, ...]) -> LoadRow:
        return LoadRow(
            id=row[0],
            key=row[1],
            wallet_id=row[2],
            msisdn=row[3],
            iccid=row[4],
            amount=int(row[5]),
            state=row[6],
            online_counter=int(row[7]),
            channel=row[8],
            day=row[9],
            created_at=row[10],  # as stored: only new rows are written
            updated_at=row[11],  # replaced by a datetime whenever the row changes
        )

    def transfer_by_key(self, key: str) -> TransferRow | None:
        """The journal row with this idempotency key (stored or made in this batch), or None."""
        if key in self._by_key:
            return self._by_key[key]
        row = self.conn.one(f"SELECT {_T_COLS} FROM transfers WHERE key = ?", (key,))  # noqa: S608
        found = None if row is None else self._transfer_from(row)
        self._by_key[key] = found
        return found

    def _transfer_from(self, row: tuple[Any, ...]) -> TransferRow:
        return TransferRow(
            code=row[1],
            amount=int(row[2]),
            debit=row[3],
            credit=row[4],
            currency=row[5],
            key=row[6],
            request_hash=row[7],
            context=self.conn.from_json(row[8]),
            created_at=self.conn.from_ts(row[9]),
            occurred_at=self.conn.from_ts(row[10]),
            id=int(row[0]),
        )

    def prefetch(
        self,
        *,
        keys: Iterable[str] = (),
        request_keys: Iterable[str] = (),
        msisdns: Iterable[str] = (),
        iccids: Iterable[str] = (),
        load_ids: Iterable[str] = (),
    ) -> None:
        """Read (and lock) in one round trip the rows a batch is going to need: transfers and
        requests by key, wallets with their cash accounts (open ones by MSISDN, and those of
        the loads), cards with their purses (by ICCID, and those of the loads), loads. Locks
        are taken table by table in key order, the order every operation takes them, so
        concurrent batches do not deadlock on these rows. Misses are cached too."""
        conn, lock = self.conn, self._lock
        wallet_ids: set[str] = set()
        iccids = set(iccids)
        load_wanted = sorted(set(load_ids) - self._loads.keys())
        if load_wanted:  # one more round trip: whose locks to take first
            cond, params = conn.in_("id", load_wanted)
            for wallet_id, iccid in conn.select(
                "wallet_id, iccid", f"FROM loads WHERE {cond}", params
            ):
                wallet_ids.add(str(wallet_id))
                iccids.add(str(iccid))
        queries: list[tuple[str, str, Sequence[Any]]] = []
        handlers: list[Callable[[list[tuple[Any, ...]]], None]] = []

        key_wanted = sorted(set(keys) - self._by_key.keys())
        if key_wanted:
            cond, params = conn.in_("key", key_wanted)
            queries.append((_T_COLS, f"FROM transfers WHERE {cond}", params))

            def got_transfers(rows: list[tuple[Any, ...]]) -> None:
                for key in key_wanted:
                    self._by_key[key] = None
                for row in rows:
                    self._by_key[str(row[6])] = self._transfer_from(row)

            handlers.append(got_transfers)
        req_wanted = sorted(set(request_keys) - self._requests.keys())
        if req_wanted:
            cond, params = conn.in_("key", req_wanted)
            queries.append(("key, op, request_hash, result", f"FROM requests WHERE {cond}", params))

            def got_requests(rows: list[tuple[Any, ...]]) -> None:
                for key in req_wanted:
                    self._requests[key] = None
                for key, op, rhash, result in rows:
                    self._requests[key] = RequestRow(key, op, rhash, stored=conn.from_json(result))

            handlers.append(got_requests)
        msisdn_wanted = sorted(set(msisdns) - self._open_by_msisdn.keys())
        id_wanted = sorted(wallet_ids - self._wallets.keys())
        if msisdn_wanted or id_wanted:
            where: list[str] = []
            params = ()
            if msisdn_wanted:
                cond, more = conn.in_("w.msisdn", msisdn_wanted)
                where.append(f"({cond} AND w.state = 'open')")
                params += more
            if id_wanted:
                cond, more = conn.in_("w.id", id_wanted)
                where.append(cond)
                params += more
            queries.append(
                (
                    f"{_W_COLS_W}, a.kind, a.currency, a.balance",
                    "FROM wallets w JOIN accounts a ON a.id = w.cash_account "
                    f"WHERE {' OR '.join(where)} ORDER BY w.id{lock and ' FOR UPDATE OF w, a'}",
                    params,
                )
            )

            def got_wallets(rows: list[tuple[Any, ...]]) -> None:
                for msisdn in msisdn_wanted:
                    self._open_by_msisdn[msisdn] = None
                for row in rows:
                    wallet = self._wallet_from(row)
                    if wallet.state == "open":
                        self._open_by_msisdn[wallet.msisdn] = wallet.id
                    self._account_from(wallet.cash_account, row[-3:])

            handlers.append(got_wallets)
        card_wanted = sorted(iccids - self._cards.keys())
        if card_wanted:
            cond, params = conn.in_("c.iccid", card_wanted)
            queries.append(
                (
                    f"{_C_COLS_C}, a.kind, a.currency, a.balance",
                    "FROM cards c JOIN accounts a ON a.id = c.purse_account "
                    f"WHERE {cond} ORDER BY c.iccid{lock and ' FOR UPDATE OF c, a'}",
                    params,
                )
            )

            def got_cards(rows: list[tuple[Any, ...]]) -> None:
                for iccid in card_wanted:
                    self._cards[iccid] = None
                for row in rows:
                    card = self._card_from(row)
                    self._cards[card.iccid] = card
                    self._account_from(card.purse_account, row[-3:])

            handlers.append(got_cards)
        if load_wanted:
            cond, params = conn.in_("id", load_wanted)
            queries.append((_L_COLS, f"FROM loads WHERE {cond} ORDER BY id{lock}", params))

            def got_loads(rows: list[tuple[Any, ...]]) -> None:
                for load_id in load_wanted:
                    self._loads[load_id] = None
                for row in rows:
                    self._loads[str(row[0])] = self._load_from(row)

            handlers.append(got_loads)
        if queries:
            for handler, rows in zip(handlers, conn.select_many(queries), strict=True):
                handler(rows)

    def _account_from(self, account_id: str, row: Sequence[Any]) -> None:
        """Cache an account read under lock (kind, currency, balance)."""
        kind, currency, balance = row
        self._meta[account_id] = (kind, currency)
        if self._accounts.get(account_id) is None:
            self._accounts[account_id] = AccountRow(account_id, kind, currency, int(balance))

    def request(self, key: str, *, fresh: bool = False) -> RequestRow | None:
        """The stored first result of a keyed request, or None. ``fresh`` reads past this
        transaction's cache: a racing request with the same key may have committed since."""
        if key in self._requests and not (fresh and self._requests[key] is None):
            return self._requests[key]
        row = self.conn.one("SELECT op, request_hash, result FROM requests WHERE key = ?", (key,))
        req = None
        if row is not None:
            req = RequestRow(key, row[0], row[1], stored=self.conn.from_json(row[2]))
        self._requests[key] = req
        return req

    def account(self, account_id: str, *, lock: bool) -> AccountRow | None:
        """An account; with ``lock`` its balance is read (``FOR UPDATE`` on PostgreSQL)."""
        acc = self._accounts.get(account_id)
        if acc is not None and (acc.balance is not None or not lock):
            return acc
        if not lock and acc is None:
            meta = self._meta.get(account_id)
            if meta is not None:
                acc = AccountRow(account_id, meta[0], meta[1], None)
                self._accounts[account_id] = acc
                return acc
        sql = f"SELECT kind, currency, balance FROM accounts WHERE id = ?{self._lock}"  # noqa: S608
        row = self.conn.one(sql, (account_id,))
        if row is None:
            return None
        self._meta[account_id] = (row[0], row[1])
        if acc is None:
            acc = AccountRow(account_id, row[0], row[1], None)
            self._accounts[account_id] = acc
        if lock:
            acc.balance = int(row[2]) + acc.delta
        return acc

    # -- writes --------------------------------------------------------------------------
    def new_account(self, account_id: str, kind: str, currency: str) -> AccountRow:
        """Create an account (inserted at flush unless it already exists)."""
        acc = AccountRow(account_id, kind, currency, 0, new=True)
        self._put(self._accounts, account_id, acc)
        self._append(self._new["accounts"], acc)
        return acc

    def ensure_account(self, account_id: str, kind: str, currency: str) -> AccountRow:
        """An operator account, created on first use (e.g. a business hall's cash)."""
        acc = self.account(account_id, lock=False)
        if acc is not None:
            return acc
        acc = AccountRow(account_id, kind, currency, None, new=True)
        self._put(self._accounts, account_id, acc)
        self._append(self._new["accounts"], acc)
        return acc

    def add_wallet(self, wallet: WalletRow) -> None:
        """Insert a new open wallet."""
        wallet.new = True
        self._put(self._wallets, wallet.id, wallet)
        self._put(self._open_by_msisdn, wallet.msisdn, wallet.id)
        self._append(self._new["wallets"], wallet)

    def close_wallet(self, wallet: WalletRow) -> None:
        """Mark a wallet closed (it is no longer the MSISDN's open wallet)."""
        self.set(wallet, state="closed", closed_at=self.now, card_iccid=None)
        self._put(self._open_by_msisdn, wallet.msisdn, None)

    def add_card(self, card: CardRow) -> None:
        """Insert a new card."""
        card.new = True
        self._put(self._cards, card.iccid, card)
        self._append(self._new["cards"], card)

    def add_merchant(self, merchant: MerchantRow) -> None:
        """Insert a new merchant."""
        merchant.new = True
        self._put(self._merchants, merchant.id, merchant)
        self._append(self._new["merchants"], merchant)

    def add_load(self, load: LoadRow) -> None:
        """Insert a new load."""
        load.new = True
        self._put(self._loads, load.id, load)
        self._append(self._new["loads"], load)

    def remember(
        self, key: str, op: str, request_hash: str, thunk: Callable[[], View | None]
    ) -> RequestRow:
        """Store the first result of a keyed request."""
        req = RequestRow(key, op, request_hash, thunk=thunk, new=True)
        self._put(self._requests, key, req)
        self._append(self._new["requests"], req)
        return req

    def post(
        self,
        code: str,
        debit: AccountRow,
        credit: AccountRow,
        amount: int,
        *,
        key: str,
        request_hash: str,
        context: dict[str, Any],
        occurred_at: datetime | None = None,
    ) -> TransferRow:
        """Move ``amount`` from ``debit`` to ``credit``: refuses a currency mismatch and an
        overdraft of a non-negative account (whose balance must have been read under lock)."""
        if debit.currency != credit.currency:
            check_currency(
                debit=debit.id,
                debit_currency=debit.currency,
                credit=credit.id,
                credit_currency=credit.currency,
            )
        if debit.kind in NON_NEGATIVE_KINDS:
            if debit.balance is not None:
                check_funds(
                    what=_FUNDS_LABEL.get(debit.kind, debit.id),
                    balance=debit.balance,
                    amount=amount,
                )
            elif debit.kind != "in_flight":  # in flight is bounded by the loads' own state
                raise RuntimeError(f"debit of {debit.id} without reading its balance under lock")
        transfer = TransferRow(
            code=code,
            amount=amount,
            debit=debit.id,
            credit=credit.id,
            currency=debit.currency,
            key=key,
            request_hash=request_hash,
            context=context,
            created_at=self.now,
            occurred_at=occurred_at or self.now,
        )
        had_key, old = key in self._by_key, self._by_key.get(key)
        _move(debit, credit, amount)
        self._transfers.append(transfer)
        self._by_key[key] = transfer

        def undo() -> None:
            _move(credit, debit, amount)
            self._transfers.pop()
            if had_key:
                self._by_key[key] = old
            else:
                self._by_key.pop(key, None)

        self._undo.append(undo)
        return transfer

    # -- flush ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """First round trip of the flush: create the batch's new accounts, allocate the
        transfer ids, read (and lock, in id order) the balances of the touched accounts not
        read yet; then compute each transfer's balances after."""
        conn = self.conn
        touched = sorted({t.debit for t in self._transfers} | {t.credit for t in self._transfers})
        unread = [a for a in touched if self._accounts[a].balance is None]
        sends = conn.insert_statements(
            "INSERT INTO accounts (id, kind, currency, balance, created_at)",
            ("text", "text", "text", "bigint", "timestamptz"),
            [(a.id, a.kind, a.currency, 0, conn.ts(self.now)) for a in self._new["accounts"]],
            suffix=" ON CONFLICT (id) DO NOTHING",
        )
        queries: list[tuple[str, str, Sequence[Any]]] = []
        if self._transfers:
            if conn.dialect == "sqlite":
                queries.append(("m", "FROM (SELECT COALESCE(MAX(id), 0) AS m FROM transfers)", ()))
            else:
                queries.append(
                    (
                        "nextval(pg_get_serial_sequence('transfers', 'id'))",
                        "FROM generate_series(1, ?)",
                        (len(self._transfers),),
                    )
                )
        if unread:
            cond, params = conn.in_("id", unread)
            queries.append(
                ("id, balance", f"FROM accounts WHERE {cond} ORDER BY id{self._lock}", params)
            )
        results = conn.select_many(queries, sends=sends) if queries or sends else []
        if not self._transfers:
            return
        if conn.dialect == "sqlite":
            base = int(results[0][0][0])
            ids = list(range(base + 1, base + 1 + len(self._transfers)))
        else:
            ids = sorted(int(r[0]) for r in results[0])
        for transfer, tid in zip(self._transfers, ids, strict=True):
            transfer.id = tid
        final = {a: self._accounts[a].balance for a in touched}
        if unread:
            stored = {str(r[0]): int(r[1]) for r in results[1]}
            if len(stored) != len(unread):
                raise StorageError("an account of the batch is missing")
            for account_id in unread:
                final[account_id] = stored[account_id] + self._accounts[account_id].delta
        running: dict[str, int] = {a: b for a, b in final.items() if b is not None}
        for transfer in reversed(self._transfers):
            transfer.credit_balance = running[transfer.credit]
            running[transfer.credit] -= transfer.amount
            transfer.debit_balance = running[transfer.debit]
            running[transfer.debit] += transfer.amount

    def write(self) -> None:
        """Second round trip of the flush: every write, pipelined on PostgreSQL (the runner
        adds the COMMIT to the same pipeline)."""
        conn = self.conn
        memo: dict[datetime, Any] = {}

        def ts(value: datetime) -> Any:
            out = memo.get(value)
            if out is None:
                out = memo[value] = conn.ts(value)
            return out

        touched = self._touched()
        deltas = sorted((a, self._accounts[a].delta) for a in touched if self._accounts[a].delta)
        if deltas:
            conn.update_rows(
                "accounts", "id", ("balance",), ("text", "bigint"), deltas, increment=True
            )
        # updates before inserts: a closed wallet (or retired card) frees its unique slot
        conn.update_rows(
            "wallets",
            "id",
            ("state", "card_iccid", "topup_day", "topup_count", "closed_at"),
            ("text", "text", "text", "text", "integer", "timestamptz"),
            [
                (
                    w.id,
                    w.state,
                    w.card_iccid,
                    w.topup_day,
                    w.topup_count,
                    ts(w.closed_at) if w.closed_at else None,
                )
                for w in self._wallets.values()
                if w.dirty and not w.new
            ],
        )
        conn.insert_rows(
            f"INSERT INTO wallets ({_W_COLS})",
            ("text",) * 7 + ("integer", "timestamptz", "timestamptz"),
            [
                (
                    w.id,
                    w.msisdn,
                    w.id_number,
                    w.state,
                    w.cash_account,
                    w.card_iccid,
                    w.topup_day,
                    w.topup_count,
                    ts(w.created_at),
                    ts(w.closed_at) if w.closed_at else None,
                )
                for w in self._new["wallets"]
            ],
        )
        conn.update_rows(
            "cards",
            "iccid",
            ("state", "in_flight", "retired_at"),
            ("text", "text", "bigint", "timestamptz"),
            [
                (c.iccid, c.state, c.in_flight, ts(c.retired_at) if c.retired_at else None)
                for c in self._cards.values()
                if c is not None and c.dirty and not c.new
            ],
        )
        conn.insert_rows(
            f"INSERT INTO cards ({_C_COLS})",
            ("text",) * 5 + ("bigint", "timestamptz", "timestamptz"),
            [
                (
                    c.iccid,
                    c.wallet_id,
                    c.msisdn,
                    c.state,
                    c.purse_account,
                    c.in_flight,
                    ts(c.enabled_at),
                    ts(c.retired_at) if c.retired_at else None,
                )
                for c in self._new["cards"]
            ],
        )
        conn.insert_rows(
            "INSERT INTO merchants (id, name, account, created_at)",
            ("text", "text", "text", "timestamptz"),
            [(m.id, m.name, m.account, ts(m.created_at)) for m in self._new["merchants"]],
        )
        conn.insert_rows(
            f"INSERT INTO loads ({_L_COLS})",
            ("text",) * 5
            + ("bigint", "text", "bigint", "text", "text")
            + ("timestamptz", "timestamptz"),
            [
                (
                    ld.id,
                    ld.key,
                    ld.wallet_id,
                    ld.msisdn,
                    ld.iccid,
                    ld.amount,
                    ld.state,
                    ld.online_counter,
                    ld.channel,
                    ld.day,
                    ts(ld.created_at),
                    ts(ld.updated_at),
                )
                for ld in self._new["loads"]
            ],
        )
        conn.update_rows(
            "loads",
            "id",
            ("state", "updated_at"),
            ("text", "text", "timestamptz"),
            [
                (ld.id, ld.state, ts(ld.updated_at))
                for ld in self._loads.values()
                if ld is not None and ld.dirty and not ld.new
            ],
        )
        conn.insert_rows(
            "INSERT INTO transfers (id, code, amount, debit_account, credit_account, currency, "
            "key, request_hash, context, debit_balance, credit_balance, created_at, occurred_at)",
            ("bigint", "text", "bigint")
            + ("text",) * 5
            + ("jsonb", "bigint", "bigint", "timestamptz", "timestamptz"),
            [
                (
                    t.id,
                    t.code,
                    t.amount,
                    t.debit,
                    t.credit,
                    t.currency,
                    t.key,
                    t.request_hash,
                    _dumps(t.context),
                    t.debit_balance,
                    t.credit_balance,
                    ts(t.created_at),
                    ts(t.occurred_at),
                )
                for t in self._transfers
            ],
        )
        conn.insert_rows(
            "INSERT INTO requests (key, op, request_hash, result, created_at)",
            ("text", "text", "text", "jsonb", "timestamptz"),
            [
                (r.key, r.op, r.request_hash, _dumps(encode_view(r.value())), ts(self.now))
                for r in self._new["requests"]
            ],
        )

    def _touched(self) -> frozenset[str]:
        return frozenset(t.debit for t in self._transfers) | {t.credit for t in self._transfers}

    def committed(self) -> None:
        """After commit: remember the new accounts' immutable kind and currency."""
        for acc in self._new["accounts"]:
            self._meta[acc.id] = (acc.kind, acc.currency)


def _move(debit: AccountRow, credit: AccountRow, amount: int) -> None:
    debit.delta -= amount
    credit.delta += amount
    if debit.balance is not None:
        debit.balance -= amount
    if credit.balance is not None:
        credit.balance += amount


def _restore(row: Any, name: str, value: Any) -> Callable[[], None]:
    def undo() -> None:
        setattr(row, name, value)

    return undo


_dumps: Final = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
