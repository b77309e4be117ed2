"""The ledger's unit of work: one database transaction carrying a batch of requests.

Operations read the rows they need through :class:`Tx` (cached for the batch; on PostgreSQL
each row is read ``FOR UPDATE``, on SQLite the transaction holds the write lock), judge the
request in Python, and record their changes in memory. Every in-memory change goes through
:class:`Tx` and is logged, so :meth:`Tx.mark` / :meth:`Tx.undo_to` give each request the effect of
a SAVEPOINT at no database cost: a refused request is undone and leaves nothing behind, and
:meth:`Tx.release` drops the log of one that stood.

A batch costs a constant number of round trips and statements, whatever its size (round trips,
and on SQLite every statement, release the GIL, which the threads of the process then fight
over): :meth:`Tx.prefetch` reads and locks what the batch's requests announced in one
statement (transfers and stored results by key, wallets with their cash accounts, cards with
their purses, loads, other accounts; on PostgreSQL then the transfer ids); :meth:`Tx.prepare`
creates new accounts and locks whatever the prefetch did not (and allocates the ids then);
:meth:`Tx.write` sends every change as multi-row statements (balance deltas ``balance = balance
+ delta``, the journal rows, the stored first results), pipelined with the caller's COMMIT.

Transfer ids are drawn (SQLite: after ``MAX(id)`` under the write lock; PostgreSQL: from the
identity sequence) only once every account the batch moves money on is locked, so for one
account ids increase in commit order and "newest first" is "highest id first". Each side's
balance after a transfer is computed from the balances read under lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache, partial
from operator import attrgetter
from typing import Any, Final

from ledger.db import Conn, Statement, dumps
from ledger.errors import StorageError
from ledger.limits import Limits, check_currency, check_funds
from ledger.schema import NON_NEGATIVE_KINDS
from ledger.views import TransferView, View, decode_view, encode_view

_FUNDS_LABEL: Final = {"cash": "cash account", "card": "card purse", "merchant": "merchant account"}
_NON_NEGATIVE: Final = frozenset(NON_NEGATIVE_KINDS)
_ABSENT: Final[Any] = object()

AccountMeta = tuple[str, str]  # (kind, currency): immutable, cacheable across transactions


@dataclass(slots=True, eq=False)
class AccountRow:
    """An account as this batch knows it; ``balance`` is None unless read under lock, and
    ``last`` (its latest transfer's id, the head of its chain: schema version 2) is read
    with it."""

    id: str
    kind: str
    currency: str
    balance: int | None
    delta: int = 0
    new: bool = False
    last: int | None = None


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
    credit: str | None = None  # the caller's credit note (schema version 3), never changed
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
    debit_prev: int | None = None
    credit_prev: int | None = None

    def view(self) -> TransferView:
        """The row as a view (after the flush gave it its id)."""
        return TransferView(
            self.id,
            self.code,
            self.amount,
            self.debit,
            self.credit,
            self.key,
            self.created_at,
            self.context,
        )


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
_NEXTVAL: Final = "nextval(pg_get_serial_sequence('transfers', 'id'))"
#: journal rows and stored results by key, in one statement: a source tag, then the
#: transfer columns (a stored result fills key, op as code, request_hash, result as context)
_U_NAMES: Final = tuple(f"c{i}" for i in range(1, 12))
_U_COLS: Final = "src, " + ", ".join(_U_NAMES)
_T_COLS_U: Final = ", ".join(
    f"{c.strip()} AS {n}" for c, n in zip(_T_COLS.split(","), _U_NAMES, strict=True)
)
_R_COLS_U: Final = (
    "NULL AS c1, op AS c2, NULL AS c3, NULL AS c4, NULL AS c5, NULL AS c6, key AS c7, "
    "request_hash AS c8, result AS c9, NULL AS c10, NULL AS c11"
)
_SQLITE_MAX_ID: Final = ("m", "FROM (SELECT COALESCE(MAX(id), 0) AS m FROM transfers)", ())
_L_COLS: Final = (
    "id, key, wallet_id, msisdn, iccid, amount, state, online_counter, channel, day, "
    "created_at, updated_at, credit"
)


#: updatable columns of the holder tables and their SQL types, key first (see
#: :meth:`Tx._update_statements`); a timestamp column comes last
_WALLET_SETS: Final = (
    ("id", "text"),
    ("state", "text"),
    ("card_iccid", "text"),
    ("topup_day", "text"),
    ("topup_count", "integer"),
    ("closed_at", "timestamptz"),
)
_CARD_SETS: Final = (
    ("iccid", "text"),
    ("state", "text"),
    ("in_flight", "bigint"),
    ("retired_at", "timestamptz"),
)
_LOAD_SETS: Final = (("id", "text"), ("state", "text"), ("updated_at", "timestamptz"))
_ACCOUNT_SETS: Final = ("balance", "last_transfer")
_ACCOUNT_TYPES: Final = ("text", "bigint", "bigint")
_ACCOUNT_ADDED: Final = ("balance",)
_LOAD_TYPES: Final = (
    ("text",) * 5
    + ("bigint", "text", "bigint", "text", "text")
    + ("timestamptz", "timestamptz", "text")
)
_TRANSFER_INSERT: Final = (
    "INSERT INTO transfers (id, code, amount, debit_account, credit_account, currency, "
    "key, request_hash, context, debit_balance, credit_balance, created_at, occurred_at, "
    "debit_prev, credit_prev)"
)
_TRANSFER_TYPES: Final = (
    ("bigint", "text", "bigint")
    + ("text",) * 5
    + ("jsonb", "bigint", "bigint", "timestamptz", "timestamptz", "bigint", "bigint")
)


@lru_cache(maxsize=64)
def _update_shape(
    sets: tuple[tuple[str, str], ...], changed: frozenset[str]
) -> tuple[str, tuple[str, ...], tuple[str, ...], Callable[[Any], tuple[Any, ...]], bool]:
    """Key, columns, SQL types, row getter and whether the last column is a timestamp, of
    the UPDATE of the columns ``changed`` among ``sets``."""
    key, key_type = sets[0]
    chosen = [(c, t) for c, t in sets[1:] if c in changed]
    names = tuple(c for c, _t in chosen)
    types = (key_type, *(t for _c, t in chosen))
    return (
        key,
        names,
        types,
        attrgetter(key, *names),
        bool(chosen) and chosen[-1][1] == "timestamptz",
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
        #: accounts whose balance the prefetch read under lock (before any id was allocated)
        self._early: set[str] = set()
        #: PostgreSQL: transfer ids allocated by the prefetch after its locks, ascending
        self._ids: list[int] = []
        #: SQLite: the journal's highest id, read by the prefetch under the write lock
        self._max_id: int | None = None
        #: after :meth:`prepare`: each touched account's latest transfer id
        self._heads: dict[str, int | None] = {}
        self._new: dict[str, list[Any]] = {
            "accounts": [],
            "wallets": [],
            "cards": [],
            "merchants": [],
            "loads": [],
            "requests": [],
        }
        #: the change log: one undo function per change (see :meth:`mark`)
        self.undo_log: list[Callable[[], None]] = []
        #: per row type, the fields :meth:`set` changed on some row of this batch: the
        #: flush's UPDATE sets only those columns (the others hold what was read under lock)
        self._changed: dict[type, set[str]] = {}

    # -- savepoints (in memory) ----------------------------------------------------------
    def mark(self) -> int:
        """A savepoint: the current length of the change log."""
        return len(self.undo_log)

    def undo_to(self, mark: int) -> None:
        """Undo every change made since ``mark``."""
        while len(self.undo_log) > mark:
            self.undo_log.pop()()

    def release(self, mark: int) -> None:
        """Keep every change made since ``mark``: forget how to undo them (a request that
        stood needs no savepoint any more; the entries also refer back to this Tx, a cycle
        only the garbage collector would otherwise break)."""
        del self.undo_log[mark:]

    def set(self, row: Any, **changes: Any) -> None:
        """Change fields of a cached row (logged)."""
        log = self.undo_log
        for name, value in changes.items():
            log.append(partial(setattr, row, name, getattr(row, name)))
            setattr(row, name, value)
        if hasattr(row, "dirty"):
            row.dirty = True
            changed = self._changed.get(type(row))
            if changed is None:
                self._changed[type(row)] = set(changes)
            else:
                changed.update(changes)

    def _put(self, cache: dict[str, Any], key: str, value: Any) -> None:
        had, old = key in cache, cache.get(key)

        def undo() -> None:
            if had:
                cache[key] = old
            else:
                cache.pop(key, None)

        self.undo_log.append(undo)
        cache[key] = value

    def _append(self, items: list[Any], item: Any) -> None:
        items.append(item)
        self.undo_log.append(items.pop)

    # -- reads ---------------------------------------------------------------------------
    def _wallet_from(self, row: tuple[Any, ...]) -> WalletRow:
        cached = self._wallets.get(row[0])
        if cached is not None:
            return cached
        wallet = WalletRow(
            row[0],  # id
            row[1],  # msisdn
            row[2],  # id_number
            row[3],  # state
            row[4],  # cash_account
            row[5],  # card_iccid
            row[6],  # topup_day
            int(row[7]),  # topup_count
            row[8],  # created_at, as stored: only new rows are written
            self.conn.from_ts(row[9]) if row[9] is not None else None,  # closed_at
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

    def load(self, load_id: str, *, lock: bool = True) -> LoadRow | None:
        """The load (locked), or None. Without ``lock``: a read of its immutable fields for a
        view, neither locked nor cached (unless the batch already holds it)."""
        if load_id in self._loads:
            return self._loads[load_id]
        row = self.conn.one(
            f"SELECT {_L_COLS} FROM loads WHERE id = ?{self._lock if lock else ''}",  # noqa: S608 - constant SQL, values bound
            (load_id,),
        )
        load = None if row is None else self._load_from(row)
        if lock:
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
            credit=row[12],
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
        accounts: Iterable[str] = (),
        ids: int = 0,
    ) -> None:
        """Read (and lock) in one round trip the rows a batch is going to need: transfers and
        requests by key, wallets with their cash accounts (open ones by MSISDN, and those of
        the loads), cards with their purses (by ICCID, and those of the loads), loads, other
        accounts by id. Locks are taken table by table in key order, the order every operation
        takes them, so concurrent batches do not deadlock on these rows. Misses are cached too.

        PostgreSQL: then, with those locks held, ``ids`` transfer ids are drawn from the
        sequence (:meth:`prepare` uses them if every account the batch moves money on was
        locked here, and no new account is created; otherwise it allocates anew)."""
        conn, lock = self.conn, self._lock
        iccids = set(iccids)
        load_wanted = sorted(set(load_ids) - self._loads.keys())
        wallet_ids: set[str] = set()
        owned: list[str] = []
        if load_wanted and conn.dialect == "postgresql":
            # the loads' wallets and cards are selected by a subquery on the loads (wallet id
            # and ICCID never change) in the same statement, ahead of the loads' own lock: the
            # locks are still taken wallets, cards, loads, and no round trip is spent on the
            # owners (on SQLite such a statement cost more than the read it saves)
            owned = load_wanted
        elif load_wanted:  # one more statement: whose locks to take first
            cond, params = conn.in_("id", load_wanted)
            # one load: a plain row read, as cheap as the JSON-aggregated one without its
            # decoding
            owners = (
                conn.execute(f"SELECT wallet_id, iccid FROM loads WHERE {cond}", params)  # noqa: S608 - constant SQL, values bound
                if len(load_wanted) == 1
                else conn.select("wallet_id, iccid", f"FROM loads WHERE {cond}", params)
            )
            for wallet_id, iccid in owners:
                wallet_ids.add(str(wallet_id))
                iccids.add(str(iccid))
        owned_cond, owned_params = conn.in_("id", owned) if owned else ("", ())
        #: wallets and cards this batch already holds: a row the owner subquery reads again
        #: is left as it is (unless an MSISDN or ICCID hint wanted it, as before)
        held_wallets = set(self._wallets)
        held_cards = set(self._cards)
        queries: list[tuple[str, str, Sequence[Any]]] = []
        handlers: list[Callable[[list[tuple[Any, ...]]], None]] = []

        key_wanted = sorted(set(keys) - self._by_key.keys())
        req_wanted = sorted(set(request_keys) - self._requests.keys())
        if key_wanted or req_wanted:
            # one statement for both: journal rows by key, and stored first results by key
            parts: list[str] = []
            params = ()
            if key_wanted:
                cond, more = conn.in_("key", key_wanted)
                parts.append(f"SELECT 't' AS src, {_T_COLS_U} FROM transfers WHERE {cond}")  # noqa: S608
                params += more
            if req_wanted:
                cond, more = conn.in_("key", req_wanted)
                parts.append(f"SELECT 'r' AS src, {_R_COLS_U} FROM requests WHERE {cond}")  # noqa: S608
                params += more
            queries.append((_U_COLS, f"FROM ({' UNION ALL '.join(parts)}) AS u", params))

            def got_keys(rows: list[tuple[Any, ...]]) -> None:
                for key in key_wanted:
                    self._by_key[key] = None
                for key in req_wanted:
                    self._requests[key] = None
                for row in rows:
                    if row[0] == "t":
                        self._by_key[str(row[7])] = self._transfer_from(row[1:])
                    else:
                        self._requests[row[7]] = RequestRow(
                            row[7], row[2], row[8], stored=conn.from_json(row[9])
                        )

            handlers.append(got_keys)
        msisdn_wanted = sorted(set(msisdns) - self._open_by_msisdn.keys())
        id_wanted = sorted(wallet_ids - self._wallets.keys())
        if msisdn_wanted or id_wanted or owned:
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
            if owned:
                where.append(self._owned("w.id", "wallet_id", owned_cond))
                params += owned_params
            queries.append(
                (
                    f"{_W_COLS_W}, a.kind, a.currency, a.balance, a.last_transfer",
                    "FROM wallets w JOIN accounts a ON a.id = w.cash_account "
                    f"WHERE {' OR '.join(where)} ORDER BY w.id{lock and ' FOR UPDATE OF w, a'}",
                    params,
                )
            )

            def got_wallets(rows: list[tuple[Any, ...]]) -> None:
                for msisdn in msisdn_wanted:
                    self._open_by_msisdn[msisdn] = None
                for row in rows:
                    if row[0] in held_wallets and row[1] not in msisdn_wanted:
                        continue  # held already, only a load's owner
                    wallet = self._wallet_from(row)
                    if wallet.state == "open":
                        self._open_by_msisdn[wallet.msisdn] = wallet.id
                    self._account_from(wallet.cash_account, row[-4:])

            handlers.append(got_wallets)
        card_wanted = sorted(iccids - self._cards.keys())
        if card_wanted or owned:
            where = []
            params = ()
            if card_wanted and owned:  # PostgreSQL
                # one array, not an OR of two: the planner keeps the index lookup
                params = (dumps(card_wanted), *owned_params)
                union = f"UNION ALL SELECT iccid FROM loads WHERE {owned_cond}"  # noqa: S608
                where.append(
                    "c.iccid = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST(? AS jsonb)) "
                    f"{union}))"
                )
            else:
                if card_wanted:
                    cond, params = conn.in_("c.iccid", card_wanted)
                    where.append(cond)
                if owned:
                    where.append(self._owned("c.iccid", "iccid", owned_cond))
                    params += owned_params
            queries.append(
                (
                    f"{_C_COLS_C}, a.kind, a.currency, a.balance, a.last_transfer",
                    "FROM cards c JOIN accounts a ON a.id = c.purse_account "
                    f"WHERE {' OR '.join(where)} ORDER BY c.iccid"
                    f"{lock and ' FOR UPDATE OF c, a'}",
                    params,
                )
            )
            wanted_cards = set(card_wanted)

            def got_cards(rows: list[tuple[Any, ...]]) -> None:
                for iccid in card_wanted:
                    self._cards[iccid] = None
                for row in rows:
                    if row[0] in held_cards and row[0] not in wanted_cards:
                        continue  # held already, only a load's card
                    card = self._card_from(row)
                    self._cards[card.iccid] = card
                    self._account_from(card.purse_account, row[-4:])

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
        account_wanted = sorted(
            a
            for a in set(accounts)
            if (acc := self._accounts.get(a)) is None or acc.balance is None
        )
        if account_wanted:
            cond, params = conn.in_("id", account_wanted)
            queries.append(
                (
                    "id, kind, currency, balance, last_transfer",
                    f"FROM accounts WHERE {cond} ORDER BY id{lock}",
                    params,
                )
            )

            def got_accounts(rows: list[tuple[Any, ...]]) -> None:
                for row in rows:
                    self._account_from(str(row[0]), row[1:])

            handlers.append(got_accounts)
        if ids > 0 and conn.dialect == "postgresql":
            queries.append((_NEXTVAL, "FROM generate_series(1, ?)", (ids,)))

            def got_ids(rows: list[tuple[Any, ...]]) -> None:
                self._ids = sorted(int(r[0]) for r in rows)

            handlers.append(got_ids)
        elif conn.dialect == "sqlite" and self._max_id is None:
            # the write lock is held since BEGIN IMMEDIATE: the journal's last id is ours
            # until this transaction writes, so read it now rather than in another statement
            queries.append(_SQLITE_MAX_ID)

            def got_max(rows: list[tuple[Any, ...]]) -> None:
                self._max_id = int(rows[0][0])

            handlers.append(got_max)
        if queries:
            for handler, rows in zip(handlers, conn.select_many(queries), strict=True):
                handler(rows)

    def _owned(self, column: str, owner: str, cond: str) -> str:
        """``column`` among the ``owner`` column of the loads matching ``cond`` (PostgreSQL:
        ``= ANY(ARRAY(...))``, an index lookup as :meth:`~ledger.db.Conn.in_`)."""
        if self.conn.dialect == "postgresql":
            return f"{column} = ANY(ARRAY(SELECT {owner} FROM loads WHERE {cond}))"  # noqa: S608
        return f"{column} IN (SELECT {owner} FROM loads WHERE {cond})"  # noqa: S608

    def _account_from(self, account_id: str, row: Sequence[Any]) -> None:
        """Cache an account read under lock by the prefetch (kind, currency, balance, latest
        transfer)."""
        kind, currency, balance, last = row
        if account_id not in self._meta:
            self._meta[account_id] = (kind, currency)
        acc = self._accounts.get(account_id)
        if acc is None:
            self._accounts[account_id] = AccountRow(
                account_id, kind, currency, int(balance), last=last
            )
            self._early.add(account_id)
        elif acc.balance is None:  # known (kind and currency) but not read under lock yet
            acc.balance = int(balance) + acc.delta
            acc.last = last
            self._early.add(account_id)

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
        # kind and currency never change: only a read of the balance takes the row lock
        sql = (
            "SELECT kind, currency, balance, last_transfer FROM accounts "  # noqa: S608
            f"WHERE id = ?{self._lock if lock else ''}"
        )
        row = self.conn.one(sql, (account_id,))
        if row is None:
            return None
        self._meta[account_id] = (row[0], row[1])
        if acc is None:
            acc = AccountRow(account_id, row[0], row[1], None)
            self._accounts[account_id] = acc
        if lock:
            acc.balance = int(row[2]) + acc.delta
            acc.last = row[3]
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
        if debit.kind in _NON_NEGATIVE:
            if debit.balance is not None:
                if debit.balance < amount:
                    check_funds(
                        what=_FUNDS_LABEL.get(debit.kind, debit.id),
                        balance=debit.balance,
                        amount=amount,
                    )
            elif debit.kind != "in_flight":  # in flight is bounded by the loads' own state
                raise RuntimeError(f"debit of {debit.id} without reading its balance under lock")
        now = self.now
        transfer = TransferRow(
            code,
            amount,
            debit.id,
            credit.id,
            debit.currency,
            key,
            request_hash,
            context,
            now,  # created_at
            occurred_at or now,
        )
        by_key = self._by_key
        old = by_key.get(key, _ABSENT)
        _move(debit, credit, amount)
        self._transfers.append(transfer)
        by_key[key] = transfer
        self.undo_log.append(partial(self._unpost, debit, credit, amount, key, old))
        return transfer

    def _unpost(
        self, debit: AccountRow, credit: AccountRow, amount: int, key: str, old: Any
    ) -> None:
        _move(credit, debit, amount)
        self._transfers.pop()
        if old is _ABSENT:
            self._by_key.pop(key, None)
        else:
            self._by_key[key] = old

    # -- flush ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """First step of the flush: create the batch's new accounts, read (and lock, in id
        order) the balances of the touched accounts not read yet, allocate the transfer ids
        (after those locks: for any account, ids then increase in commit order); then compute
        each transfer's balances after. On PostgreSQL this costs no round trip when the
        prefetch already locked every touched account and drew enough ids."""
        conn = self.conn
        transfers = self._transfers
        touched = sorted({t.debit for t in transfers} | {t.credit for t in transfers})
        accounts = self._accounts
        unread = [a for a in touched if accounts[a].balance is None]
        new_accounts = self._new["accounts"]
        sends = conn.insert_statements(
            "INSERT INTO accounts (id, kind, currency, balance, created_at)",
            ("text", "text", "text", "bigint", "timestamptz"),
            [(a.id, a.kind, a.currency, 0, conn.row_ts(self.now)) for a in new_accounts],
            suffix=" ON CONFLICT (id) DO NOTHING",
        )
        queries: list[tuple[str, str, Sequence[Any]]] = []
        if unread:
            cond, params = conn.in_("id", unread)
            queries.append(
                (
                    "id, balance, last_transfer",
                    f"FROM accounts WHERE {cond} ORDER BY id{self._lock}",
                    params,
                )
            )
        ids: list[int] | None = None
        if transfers:
            if conn.dialect == "sqlite":  # the write lock is held: MAX(id) is ours
                if self._max_id is None:
                    queries.append(_SQLITE_MAX_ID)
            elif (
                not queries
                and not new_accounts
                and len(self._ids) >= len(transfers)
                and self._early.issuperset(touched)
            ):
                ids = self._ids[: len(transfers)]
            else:
                queries.append((_NEXTVAL, "FROM generate_series(1, ?)", (len(transfers),)))
        results = conn.select_many(queries, sends=sends) if queries or sends else []
        if not transfers:
            return
        if ids is None:
            if conn.dialect == "sqlite":
                base = self._max_id if self._max_id is not None else int(results[-1][0][0])
                ids = list(range(base + 1, base + 1 + len(transfers)))
            else:
                ids = sorted(int(r[0]) for r in results[-1])
        for transfer, tid in zip(transfers, ids, strict=True):
            transfer.id = tid
        final = {a: accounts[a].balance for a in touched}
        if unread:
            stored = {str(r[0]): r for r in results[0]}
            if len(stored) != len(unread):
                raise StorageError("an account of the batch is missing")
            for account_id in unread:
                row = stored[account_id]
                final[account_id] = int(row[1]) + accounts[account_id].delta
                accounts[account_id].last = row[2]
        running: dict[str, int] = {a: b for a, b in final.items() if b is not None}
        for transfer in reversed(transfers):
            transfer.credit_balance = running[transfer.credit]
            running[transfer.credit] -= transfer.amount
            transfer.debit_balance = running[transfer.debit]
            running[transfer.debit] += transfer.amount
        # the chains: each transfer links to the previous one of either account
        heads: dict[str, int | None] = {a: accounts[a].last for a in touched}
        for transfer in transfers:
            transfer.debit_prev = heads[transfer.debit]
            transfer.credit_prev = heads[transfer.credit]
            heads[transfer.debit] = heads[transfer.credit] = transfer.id
        self._heads = heads

    def write(self) -> None:
        """Second round trip of the flush: every write, pipelined on PostgreSQL (the runner
        adds the COMMIT to the same pipeline). Categories without rows cost nothing."""
        conn = self.conn
        now = self.now
        memo: dict[datetime, Any] = {now: conn.row_ts(now)}

        def ts(value: datetime) -> Any:
            out = memo.get(value)
            if out is None:
                out = memo[value] = conn.row_ts(value)
            return out

        now_ts = memo[now]
        to_json = conn.row_json
        new = self._new
        changed = self._changed

        # the holders first, one statement each, updates before inserts: a closed wallet (or
        # a retired card) frees its unique slot; then the rest, in any order
        if WalletRow in changed:
            self._update(
                "wallets",
                _WALLET_SETS,
                changed[WalletRow],
                [w for w in self._wallets.values() if w.dirty and not w.new],
                ts,
            )
        if new["wallets"]:
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
                    for w in new["wallets"]
                ],
            )
        if CardRow in changed:
            self._update(
                "cards",
                _CARD_SETS,
                changed[CardRow],
                [c for c in self._cards.values() if c is not None and c.dirty and not c.new],
                ts,
            )
        if new["cards"]:
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
                    for c in new["cards"]
                ],
            )
        if new["merchants"]:
            conn.insert_rows(
                "INSERT INTO merchants (id, name, account, created_at)",
                ("text", "text", "text", "timestamptz"),
                [(m.id, m.name, m.account, ts(m.created_at)) for m in new["merchants"]],
            )
        together: list[Statement] = []
        heads = self._heads
        if heads:
            accounts = self._accounts
            together += conn.update_statements(
                "accounts",
                "id",
                _ACCOUNT_SETS,
                _ACCOUNT_TYPES,
                sorted([(a, accounts[a].delta, h) for a, h in heads.items()]),
                increment=_ACCOUNT_ADDED,
            )
        if new["loads"]:
            together += conn.insert_statements(
                f"INSERT INTO loads ({_L_COLS})",
                _LOAD_TYPES,
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
                        ld.credit,
                    )
                    for ld in new["loads"]
                ],
            )
        if LoadRow in changed:
            together += self._update_statements(
                "loads",
                _LOAD_SETS,
                changed[LoadRow],
                [ld for ld in self._loads.values() if ld is not None and ld.dirty and not ld.new],
                ts,
            )
        if self._transfers:
            together += conn.insert_statements(
                _TRANSFER_INSERT,
                _TRANSFER_TYPES,
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
                        to_json(t.context),
                        t.debit_balance,
                        t.credit_balance,
                        now_ts if t.created_at is now else ts(t.created_at),
                        now_ts if t.occurred_at is now else ts(t.occurred_at),
                        t.debit_prev,
                        t.credit_prev,
                    )
                    for t in self._transfers
                ],
            )
        if new["requests"]:
            together += conn.insert_statements(
                "INSERT INTO requests (key, op, request_hash, result, created_at)",
                ("text", "text", "text", "jsonb", "timestamptz"),
                [
                    (r.key, r.op, r.request_hash, to_json(encode_view(r.value())), now_ts)
                    for r in new["requests"]
                ],
            )
        if together:
            conn.send_together(together)

    def _update(
        self,
        table: str,
        sets: tuple[tuple[str, str], ...],
        changed: Iterable[str],
        rows: list[Any],
        ts: Callable[[datetime], Any],
    ) -> None:
        for sql, params, binary in self._update_statements(table, sets, changed, rows, ts):
            self.conn.send(sql, params, binary=binary)

    def _update_statements(
        self,
        table: str,
        sets: tuple[tuple[str, str], ...],
        changed: Iterable[str],
        rows: list[Any],
        ts: Callable[[datetime], Any],
    ) -> list[Statement]:
        """The UPDATE of the changed rows of a holder table: of its updatable columns
        (``sets``, key first), those :meth:`set` changed on some row of the batch (a row that
        did not change one writes back the value it read under lock). Setting fewer columns
        spares SQLite the upkeep of the indexes on the others (a partial index on ``state``
        was rewritten at every top-up)."""
        if not rows:
            return []
        key, names, types, get, stamp = _update_shape(sets, frozenset(changed))
        if not names:
            return []
        if stamp:  # the last column is a timestamp: datetimes travel as row_ts text
            values = [
                (*r[:-1], ts(r[-1]) if isinstance(r[-1], datetime) else r[-1])
                for r in map(get, rows)
            ]
        else:
            values = list(map(get, rows))
        return self.conn.update_statements(table, key, names, types, values)

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
