"""The ledger's write operations, each run inside a :class:`~ledger.tx.Tx`.

Each function validates its input, answers a replayed key with the stored first result (or
refuses a reused key with :class:`~ledger.errors.IdempotencyConflict`), reads and locks the rows
it needs in a fixed order (wallet, cards by ICCID, load, accounts), judges the limits, and only
then changes anything. It returns a thunk giving its result once the batch is flushed (transfer
ids are assigned at flush).

Idempotency keys are namespaced so that callers cannot collide with each other: business-hall
requests ``req:{request_id}``, loads ``load:{key}`` (post ``…#post``, void ``…#void``),
purchases ``pos:{iccid}:{offline_counter}``. The same key with the same request (same canonical
request hash, which covers the operation and every argument but a load's credit note) returns
the first result; the same key with a different request is refused; a refused request stores
nothing, so it may be retried.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from ledger.errors import (
    CardStateError,
    IdempotencyConflict,
    InvalidRequest,
    LoadStateError,
    UnknownCard,
    UnknownLoad,
    UnknownMerchant,
    UnknownSubscriber,
    WalletExists,
)
from ledger.limits import check_purchase, check_topup
from ledger.money import check_amount, check_balance
from ledger.tx import AccountRow, CardRow, LoadRow, MerchantRow, TransferRow, Tx, WalletRow
from ledger.views import CloseView, LoadView, TransferView, View, WalletView

Thunk = Callable[[], Any]

DEPOSIT_SOURCES: Final = {"hall": "hall_cash", "bank": "bank", "voucher": "voucher"}
IN_FLIGHT: Final = "in_flight"
FORFEITURE: Final = "forfeiture"

_MSISDN: Final = re.compile(r"\+?([1-9][0-9]{4,14})")
_ICCID: Final = re.compile(r"[0-9]{6,20}[Ff]?")
_KEY: Final = re.compile(r"[\x21\x22\x24-\x7e]{1,200}")  # printable ASCII except space and '#'
_NAME_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ID_NUMBER: Final = re.compile(r"[0-9A-Za-z-]{4,32}")
_CHANNEL: Final = re.compile(r"[a-z0-9_-]{1,16}")
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_TERMINAL: Final = re.compile(r"[\x20-\x7e]{0,64}")
#: the longest credit note a load keeps (``loads.credit``)
CREDIT_MAX: Final = 1024


# -- validation ------------------------------------------------------------------------------
def msisdn_of(value: object) -> str:
    """An MSISDN in E.164 digits (a leading '+' is dropped)."""
    match = _MSISDN.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidRequest(f"invalid MSISDN {_show(value)}: E.164 digits expected")
    return match.group(1)


def iccid_of(value: object) -> str:
    """An ICCID: 6 to 20 digits, optionally F-padded."""
    if not isinstance(value, str) or not _ICCID.fullmatch(value):
        raise InvalidRequest(f"invalid ICCID {_show(value)}")
    return value.upper()


def key_of(value: object, what: str = "request id") -> str:
    """An idempotency key or request id: 1..200 printable ASCII characters, no space or '#'."""
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise InvalidRequest(f"invalid {what} {_show(value)}: 1-200 printable characters")
    return value


def name_id_of(value: object, what: str) -> str:
    """A teller, hall or merchant id: letters, digits, '.', '_', '-' (up to 64)."""
    if not isinstance(value, str) or not _NAME_ID.fullmatch(value):
        raise InvalidRequest(f"invalid {what} {_show(value)}")
    return value


def counter_of(value: object, what: str) -> int:
    """A card counter: a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidRequest(f"invalid {what} {_show(value)}: a non-negative integer expected")
    return value


def aware_of(value: object) -> datetime:
    """A timezone-aware datetime."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidRequest("a timezone-aware datetime is required")
    return value


def credit_of(value: object) -> str | None:
    """A load's credit note: None, or text of at most :data:`CREDIT_MAX` characters that both
    backends can store (no NUL, valid Unicode: no lone surrogate)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > CREDIT_MAX:
        raise InvalidRequest(
            f"invalid credit note {_show(value)}: None or up to {CREDIT_MAX} characters"
        )
    if "\x00" in value or (not value.isascii() and not _encodable(value)):
        raise InvalidRequest("invalid credit note: NUL or unpaired surrogate")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def request_hash(op: str, *values: str | int | None) -> str:
    """The hash of the canonical request: the operation and its arguments in the operation's
    fixed order (str, int or None, whose ``repr`` is unambiguous). The order is part of the
    stored data: an operation that changes its arguments gets a new name (``deposit/2``)."""
    return hashlib.blake2b(repr((op, values)).encode(), digest_size=16).hexdigest()


def load_id_for(key: str) -> str:
    """A load's id, derived from its idempotency key."""
    return "ld_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _replay(tx: Tx, key: str, op: str, rhash: str, shown: str) -> Thunk | None:
    """Replay of a request whose first result is stored in ``requests``."""
    req = tx.request(key)
    if req is None:
        if tx.transfer_by_key(key) is not None:  # the key was used by a one-transfer request
            raise IdempotencyConflict(shown)
        return None
    if req.op != op or req.request_hash != rhash:
        raise IdempotencyConflict(shown)
    return req.value


def _replay_transfer(tx: Tx, key: str, rhash: str, shown: str) -> TransferRow | None:
    """Replay of a one-transfer request: its journal row (the key is unique there), so
    the request costs no extra row."""
    row = tx.transfer_by_key(key)
    if row is None:
        if key.startswith("req:") and tx.request(key) is not None:
            raise IdempotencyConflict(shown)
        return None
    if row.request_hash != rhash:
        raise IdempotencyConflict(shown)
    return row


def _context(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and v != ""}


# -- views -----------------------------------------------------------------------------------
def wallet_view(tx: Tx, wallet: WalletRow) -> WalletView:
    """The wallet as of now in this transaction (cash and purse read under lock)."""
    cash = tx.account(wallet.cash_account, lock=True)
    card: CardRow | None = None
    purse = 0
    if wallet.card_iccid is not None:
        card = tx.card(wallet.card_iccid)
        if card is not None:
            acc = tx.account(card.purse_account, lock=True)
            purse = (acc.balance or 0) if acc is not None else 0
    today = tx.limits.local_day(tx.now).isoformat()
    return WalletView(
        msisdn=wallet.msisdn,
        cash=(cash.balance or 0) if cash is not None else 0,
        card_iccid=card.iccid if card is not None else None,
        card_state=card.state if card is not None else None,
        card_balance=purse,
        topups_today=wallet.topup_count if wallet.topup_day == today else 0,
        in_flight=card.in_flight if card is not None else 0,
        state=wallet.state,
    )


def transfer_view(row: TransferRow) -> TransferView:
    """A journal row as a view (after flush)."""
    return row.view()


def load_view(
    load: LoadRow,
    state: str | None = None,
    *,
    card_balance: int | None = None,
    cash_balance: int | None = None,
) -> LoadView:
    """A load as a view (optionally with another state, and the balances a post left)."""
    return LoadView(
        id=load.id,
        msisdn=load.msisdn,
        iccid=load.iccid,
        amount=load.amount,
        state=state or load.state,
        online_counter=load.online_counter,
        key=load.key,
        credit=load.credit,
        card_balance=card_balance,
        cash_balance=cash_balance,
    )


def _settled_view(tx: Tx, load: LoadRow, wallet: WalletRow, card: CardRow) -> LoadView:
    """A settled load; a posted one with the balances of its card purse and its wallet's cash
    account, read under lock (the post's prefetch holds both rows already: no statement on
    either backend)."""
    if load.state != "posted":
        return load_view(load)
    purse = tx.account(card.purse_account, lock=True)
    cash = tx.account(wallet.cash_account, lock=True)
    return load_view(
        load,
        card_balance=purse.balance if purse is not None else None,
        cash_balance=cash.balance if cash is not None else None,
    )


def _open_wallet_of(tx: Tx, msisdn: str) -> WalletRow:
    wallet = tx.open_wallet(msisdn)
    if wallet is None:
        raise UnknownSubscriber(msisdn)
    return wallet


def _locked(tx: Tx, account_id: str) -> AccountRow:
    acc = tx.account(account_id, lock=True)
    if acc is None:
        raise InvalidRequest(f"account {account_id} does not exist")
    return acc


def _pending_check(card: CardRow, action: str) -> None:
    if card.in_flight:
        raise CardStateError(
            f"cannot {action}: top-ups still in flight to card {card.iccid}; post or void them"
        )


def _hall_pair(teller: object, hall: object, required: bool, action: str) -> tuple[str, str]:
    if teller is None and hall is None and not required:
        return "", ""
    if teller is None or hall is None:
        raise InvalidRequest(f"{action} needs both a teller id and a hall id")
    return name_id_of(teller, "teller id"), name_id_of(hall, "hall id")


# -- wallets and cards -----------------------------------------------------------------------
def open_wallet(tx: Tx, msisdn: str, id_number: str, request_id: str | None) -> Thunk:
    """Open a wallet and its cash account."""
    msisdn = msisdn_of(msisdn)
    if not isinstance(id_number, str) or not _ID_NUMBER.fullmatch(id_number):
        raise InvalidRequest("invalid ID number: 4-32 letters or digits expected")
    rkey = f"req:{key_of(request_id)}" if request_id is not None else None
    rhash = request_hash("open_wallet", msisdn, id_number)
    if rkey is not None and (done := _replay(tx, rkey, "open_wallet", rhash, request_id or "")):
        return done
    if tx.open_wallet(msisdn) is not None:
        # Under READ COMMITTED the same request racing from another process may have
        # committed this wallet after our replay check read nothing: it is a replay, not
        # a second wallet.
        if rkey is not None and (req := tx.request(rkey, fresh=True)) is not None:
            if req.op != "open_wallet" or req.request_hash != rhash:
                raise IdempotencyConflict(request_id or "")
            return req.value
        raise WalletExists(f"a wallet is already open for {msisdn}")
    generation = tx.wallet_generations(msisdn)
    wallet_id = msisdn if generation == 0 else f"{msisdn}.{generation + 1}"
    cash = tx.new_account(f"cash:{wallet_id}", "cash", "CNY")
    wallet = WalletRow(
        id=wallet_id,
        msisdn=msisdn,
        id_number=id_number,
        state="open",
        cash_account=cash.id,
        card_iccid=None,
        topup_day=None,
        topup_count=0,
        created_at=tx.now,
        closed_at=None,
    )
    tx.add_wallet(wallet)
    view = wallet_view(tx, wallet)
    if rkey is not None:
        tx.remember(rkey, "open_wallet", rhash, lambda: view)
    return lambda: view


def enable_card(tx: Tx, msisdn: str, iccid: str, request_id: str | None) -> Thunk:
    """Enable a new RF-SIM card on a wallet that has none (its purse mirror starts at 0)."""
    msisdn, iccid = msisdn_of(msisdn), iccid_of(iccid)
    rkey = f"req:{key_of(request_id)}" if request_id is not None else None
    rhash = request_hash("enable_card", msisdn, iccid)
    if rkey is not None and (done := _replay(tx, rkey, "enable_card", rhash, request_id or "")):
        return done
    wallet = _open_wallet_of(tx, msisdn)
    if wallet.card_iccid == iccid:
        view = wallet_view(tx, wallet)  # already enabled here: nothing to do
    else:
        if wallet.card_iccid is not None:
            raise CardStateError(
                f"wallet {msisdn} already has the active card {wallet.card_iccid}; use a card swap"
            )
        if tx.card(iccid) is not None:
            raise CardStateError(f"card {iccid} is already enabled (or was retired)")
        purse = tx.new_account(f"card:{iccid}", "card", "CNY")
        card = CardRow(
            iccid=iccid,
            wallet_id=wallet.id,
            msisdn=msisdn,
            state="active",
            purse_account=purse.id,
            in_flight=0,
            enabled_at=tx.now,
            retired_at=None,
        )
        tx.add_card(card)
        tx.set(wallet, card_iccid=iccid)
        view = wallet_view(tx, wallet)
    if rkey is not None:
        tx.remember(rkey, "enable_card", rhash, lambda: view)
    return lambda: view


def deposit(  # noqa: PLR0917 - the committer passes a job's arguments as a tuple
    tx: Tx,
    msisdn: str,
    amount: int,
    source: str,
    request_id: str,
    teller: str | None = None,
    hall: str | None = None,
) -> Thunk:
    """Deposit to the cash account from a business hall's cash, the bank or a voucher."""
    msisdn = msisdn_of(msisdn)
    amount = check_amount(amount)
    if not isinstance(source, str) or source not in DEPOSIT_SOURCES:
        raise InvalidRequest(f"invalid deposit source {_show(source)}: hall, bank or voucher")
    if teller is None and hall is None and source != "hall":
        teller = hall = ""
    else:
        teller, hall = _hall_pair(teller, hall, source == "hall", "a business-hall deposit")
    rid = key_of(request_id)
    rkey = "req:" + rid
    rhash = request_hash("deposit", msisdn, amount, source, teller, hall)
    if (first := _replay_transfer(tx, rkey, rhash, rid)) is not None:
        return first.view
    wallet = _open_wallet_of(tx, msisdn)
    if source == "hall":
        src = tx.ensure_account(f"hall:{hall}", "hall_cash", "CNY")
    else:
        src = _existing(tx, source)
    cash = _locked(tx, wallet.cash_account)
    context = {"msisdn": msisdn, "source": source}
    if teller:  # both or neither (_hall_pair)
        context["teller"] = teller
        context["hall"] = hall
    return tx.post("deposit", src, cash, amount, key=rkey, request_hash=rhash, context=context).view


def _existing(tx: Tx, account_id: str) -> AccountRow:
    acc = tx.account(account_id, lock=False)
    if acc is None:
        raise InvalidRequest(f"account {account_id} does not exist")
    return acc


def swap_card(  # noqa: PLR0917 - the committer passes a job's arguments as a tuple
    tx: Tx,
    msisdn: str,
    new_iccid: str,
    old_balance: int | None,
    request_id: str,
    teller: str | None = None,
    hall: str | None = None,
) -> Thunk:
    """Replace the wallet's active card: the old purse is migrated to the new card when the
    old card was read (``old_balance``), forfeited when it was lost (``None``)."""
    msisdn, new_iccid = msisdn_of(msisdn), iccid_of(new_iccid)
    if old_balance is not None:
        old_balance = check_balance(old_balance, "old card balance")
    teller, hall = _hall_pair(teller, hall, False, "a card swap")
    rid = key_of(request_id)
    rkey = f"req:{rid}"
    rhash = request_hash("swap_card", msisdn, new_iccid, old_balance, teller, hall)
    if done := _replay(tx, rkey, "swap_card", rhash, rid):
        return done
    wallet = _open_wallet_of(tx, msisdn)
    if wallet.card_iccid is None:
        raise CardStateError(f"wallet {msisdn} has no active card to swap; enable one")
    if wallet.card_iccid == new_iccid:
        raise CardStateError(f"card {new_iccid} is already the active card of {msisdn}")
    first, second = sorted((wallet.card_iccid, new_iccid))
    tx.card(first)  # lock both cards in ICCID order
    tx.card(second)
    old = tx.card(wallet.card_iccid)
    if old is None:
        raise CardStateError(f"the active card {wallet.card_iccid} of {msisdn} is missing")
    if tx.card(new_iccid) is not None:
        raise CardStateError(f"card {new_iccid} is already enabled (or was retired)")
    _pending_check(old, "swap the card")
    old_purse = _locked(tx, old.purse_account)
    new_purse = tx.new_account(f"card:{new_iccid}", "card", "CNY")
    context = _context(
        msisdn=msisdn, iccid=old.iccid, new_iccid=new_iccid, teller=teller, hall=hall
    )
    if old_balance is not None:
        if old_balance > 0:
            tx.post(
                "card_swap_migration",
                old_purse,
                new_purse,
                old_balance,
                key=rkey,
                request_hash=rhash,
                context=context,
            )
    elif old_purse.balance:
        tx.post(
            "forfeiture",
            old_purse,
            _existing(tx, FORFEITURE),
            old_purse.balance,
            key=rkey,
            request_hash=rhash,
            context=context,
        )
    tx.set(old, state="retired", retired_at=tx.now)
    card = CardRow(
        iccid=new_iccid,
        wallet_id=wallet.id,
        msisdn=msisdn,
        state="active",
        purse_account=new_purse.id,
        in_flight=0,
        enabled_at=tx.now,
        retired_at=None,
    )
    tx.add_card(card)
    tx.set(wallet, card_iccid=new_iccid)
    view = wallet_view(tx, wallet)
    tx.remember(rkey, "swap_card", rhash, lambda: view)
    return lambda: view


def close_wallet(  # noqa: PLR0917 - the committer passes a job's arguments as a tuple
    tx: Tx,
    msisdn: str,
    request_id: str,
    teller: str | None = None,
    hall: str | None = None,
    card_balance: int | None = None,
) -> Thunk:
    """Close a wallet: cash refunded to the hall's cash; the purse refunded as read from the
    card (``card_balance``), or forfeited when the card was not read."""
    msisdn = msisdn_of(msisdn)
    if card_balance is not None:
        card_balance = check_balance(card_balance)
    teller, hall = _hall_pair(teller, hall, False, "closing a wallet")
    rid = key_of(request_id)
    rkey = f"req:{rid}"
    rhash = request_hash("close_wallet", msisdn, teller, hall, card_balance)
    if done := _replay(tx, rkey, "close_wallet", rhash, rid):
        return done
    wallet = _open_wallet_of(tx, msisdn)
    card = tx.card(wallet.card_iccid) if wallet.card_iccid is not None else None
    if card is not None:
        _pending_check(card, "close the wallet")
    cash = _locked(tx, wallet.cash_account)
    purse = _locked(tx, card.purse_account) if card is not None else None
    refund_purse = (card_balance or 0) if purse is not None else 0
    if ((cash.balance or 0) > 0 or refund_purse > 0) and not hall:
        raise InvalidRequest("closing a wallet with money to refund needs a teller id and hall id")
    context = _context(msisdn=msisdn, iccid=card.iccid if card else None, teller=teller, hall=hall)
    rows: list[TransferRow] = []
    cash_refunded = purse_refunded = forfeited = 0
    if cash.balance:
        till = tx.ensure_account(f"hall:{hall}", "hall_cash", "CNY")
        cash_refunded = cash.balance
        rows.append(
            tx.post(
                "refund",
                cash,
                till,
                cash.balance,
                key=f"{rkey}#cash",
                request_hash=rhash,
                context=context,
            )
        )
    if card is not None and purse is not None:
        if card_balance is not None:
            if card_balance > 0:
                till = tx.ensure_account(f"hall:{hall}", "hall_cash", "CNY")
                purse_refunded = card_balance
                rows.append(
                    tx.post(
                        "refund",
                        purse,
                        till,
                        card_balance,
                        key=f"{rkey}#purse",
                        request_hash=rhash,
                        context=context,
                    )
                )
        elif purse.balance:
            forfeited = purse.balance
            rows.append(
                tx.post(
                    "forfeiture",
                    purse,
                    _existing(tx, FORFEITURE),
                    purse.balance,
                    key=f"{rkey}#purse",
                    request_hash=rhash,
                    context=context,
                )
            )
        tx.set(card, state="closed", retired_at=tx.now)
    snapshot = wallet_view(tx, wallet)
    tx.close_wallet(wallet)
    closed = WalletView(
        msisdn=snapshot.msisdn,
        cash=snapshot.cash,
        card_iccid=None,
        card_state=None,
        card_balance=0,
        topups_today=snapshot.topups_today,
        in_flight=0,
        state="closed",
    )

    def result() -> CloseView:
        return CloseView(
            msisdn=msisdn,
            cash_refunded=cash_refunded,
            purse_refunded=purse_refunded,
            forfeited=forfeited,
            transfers=tuple(transfer_view(r) for r in rows),
            wallet=closed,
        )

    tx.remember(rkey, "close_wallet", rhash, result)
    return result


# -- two-phase top-up ------------------------------------------------------------------------
def reserve_load(  # noqa: PLR0917 - the committer passes a job's arguments as a tuple
    tx: Tx,
    msisdn: str,
    iccid: str,
    amount: int,
    card_balance: int,
    online_counter: int,
    key: str,
    channel: str,
    credit: str | None = None,
) -> Thunk:
    """Phase one of a top-up: cash account -> loads in flight, judging every top-up limit.
    ``credit`` (the caller's note of the CREDIT FOR LOAD it sends) is kept with the load; it
    is not part of the request: a replay returns the first load's note."""
    msisdn, iccid = msisdn_of(msisdn), iccid_of(iccid)
    amount = check_amount(amount)
    card_balance = check_balance(card_balance)
    online_counter = counter_of(online_counter, "online counter")
    key = key_of(key, "load key")
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise InvalidRequest(f"invalid channel {_show(channel)}")
    credit = credit_of(credit)
    rkey = f"load:{key}"
    rhash = request_hash(
        "reserve_load", msisdn, iccid, amount, card_balance, online_counter, channel
    )
    if _replay_transfer(tx, rkey, rhash, key) is not None:
        # the first result is made of the load's immutable fields: no lock (taking one now,
        # after the batch's other locks, could invert the order they are taken in)
        load = tx.load(load_id_for(key), lock=False)
        if load is None:
            raise UnknownLoad(load_id_for(key))
        first = load_view(load, state="reserved")  # the first result, whatever happened since
        return lambda: first
    wallet = _open_wallet_of(tx, msisdn)
    card = tx.card(iccid)
    if card is None:
        raise UnknownCard(iccid)
    if card.wallet_id != wallet.id or card.state != "active":
        raise CardStateError(f"card {iccid} is not the active card of {msisdn}")
    cash = _locked(tx, wallet.cash_account)
    today = tx.limits.local_day(tx.now).isoformat()
    count = wallet.topup_count if wallet.topup_day == today else 0
    check_topup(
        tx.limits,
        amount=amount,
        card_balance=card_balance,
        in_flight=card.in_flight,
        topups_today=count,
    )
    load = LoadRow(
        id=load_id_for(key),
        key=key,
        wallet_id=wallet.id,
        msisdn=msisdn,
        iccid=iccid,
        amount=amount,
        state="reserved",
        online_counter=online_counter,
        channel=channel,
        day=today,
        created_at=tx.now,
        updated_at=tx.now,
        credit=credit,
    )
    tx.post(
        "topup_reserve",
        cash,
        _existing(tx, IN_FLIGHT),
        amount,
        key=rkey,
        request_hash=rhash,
        context=_context(
            msisdn=msisdn,
            iccid=iccid,
            counter=online_counter,
            channel=channel,
            load_id=load.id,
            card_balance=card_balance,
        ),
    )
    tx.add_load(load)
    tx.set(wallet, topup_day=today, topup_count=count + 1)
    tx.set(card, in_flight=card.in_flight + amount)
    view = load_view(load)
    return lambda: view


def _load_locked(tx: Tx, load_id: str) -> tuple[LoadRow, WalletRow, CardRow]:
    if not isinstance(load_id, str) or not load_id:
        raise UnknownLoad(str(load_id))
    owner = tx.load_owner(load_id)
    if owner is None:
        raise UnknownLoad(load_id)
    wallet = tx.wallet(owner[0])
    card = tx.card(owner[1])
    load = tx.load(load_id)
    if load is None:
        raise UnknownLoad(load_id)
    if card is None:
        raise UnknownCard(load.iccid)
    return load, wallet, card


def _settle_load(tx: Tx, load_id: str, outcome: str) -> Thunk:
    """Phase two: post (in flight -> card purse) or void (in flight -> cash account)."""
    load, wallet, card = _load_locked(tx, load_id)
    if load.state == outcome:
        view = _settled_view(tx, load, wallet, card)
        return lambda: view
    if load.state not in ("reserved", "in_doubt"):
        raise LoadStateError(f"load {load_id} is {load.state}; it cannot be {outcome}")
    in_flight = _existing(tx, IN_FLIGHT)
    context = _context(
        msisdn=load.msisdn,
        iccid=load.iccid,
        counter=load.online_counter,
        channel=load.channel,
        load_id=load.id,
    )
    rkey = f"load:{load.key}"
    if outcome == "posted":
        purse = _existing(tx, card.purse_account)
        tx.post(
            "topup_post",
            in_flight,
            purse,
            load.amount,
            key=f"{rkey}#post",
            request_hash=request_hash("post_load", load.id),
            context=context,
        )
    else:
        cash = _existing(tx, wallet.cash_account)
        tx.post(
            "topup_void",
            in_flight,
            cash,
            load.amount,
            key=f"{rkey}#void",
            request_hash=request_hash("void_load", load.id),
            context=context,
        )
        if wallet.topup_day == load.day and wallet.topup_count > 0:
            tx.set(wallet, topup_count=wallet.topup_count - 1)
    tx.set(card, in_flight=card.in_flight - load.amount)
    tx.set(load, state=outcome, updated_at=tx.now)
    view = _settled_view(tx, load, wallet, card)
    return lambda: view


def post_load(tx: Tx, load_id: str) -> Thunk:
    """The card proved the load: in flight -> card purse. Idempotent."""
    return _settle_load(tx, load_id, "posted")


def void_load(tx: Tx, load_id: str) -> Thunk:
    """The card proved it did not load: in flight -> cash account. Idempotent."""
    return _settle_load(tx, load_id, "voided")


def mark_in_doubt(tx: Tx, load_id: str) -> Thunk:
    """No proof either way: the money stays in flight until the card's next contact."""
    load, _wallet, _card = _load_locked(tx, load_id)
    if load.state == "reserved":
        tx.set(load, state="in_doubt", updated_at=tx.now)
    elif load.state != "in_doubt":
        raise LoadStateError(f"load {load_id} is {load.state}; it cannot be in doubt")
    view = load_view(load)
    return lambda: view


# -- merchants and purchases -----------------------------------------------------------------
def open_merchant(tx: Tx, merchant_id: str, name: str, currency: str) -> Thunk:
    """Open a merchant and its payable account; the same merchant again is a no-op."""
    merchant_id = name_id_of(merchant_id, "merchant id")
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or not name.isprintable():
        raise InvalidRequest("invalid merchant name: 1-200 printable characters")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise InvalidRequest(f"invalid currency {_show(currency)}")
    existing = tx.merchant(merchant_id)
    if existing is not None:
        acc = tx.account(existing.account, lock=False)
        if existing.name != name or acc is None or acc.currency != currency:
            raise WalletExists(f"merchant {merchant_id} already exists with other details")
        return lambda: None
    account = tx.new_account(f"merchant:{merchant_id}", "merchant", currency)
    tx.add_merchant(MerchantRow(merchant_id, name, account.id, tx.now))
    return lambda: None


def purchase(  # noqa: PLR0917 - the committer passes a job's arguments as a tuple
    tx: Tx,
    iccid: str,
    merchant_id: str,
    amount: int,
    offline_counter: int,
    terminal_id: str,
    at: datetime | None,
) -> Thunk:
    """A purchase from a POS record: card purse -> merchant payable."""
    iccid = iccid_of(iccid)
    merchant_id = name_id_of(merchant_id, "merchant id")
    amount = check_amount(amount)
    offline_counter = counter_of(offline_counter, "offline counter")
    if not isinstance(terminal_id, str) or not _TERMINAL.fullmatch(terminal_id):
        raise InvalidRequest(f"invalid terminal id {_show(terminal_id)}")
    if at is not None:
        at = aware_of(at)
    rkey = f"pos:{iccid}:{offline_counter}"
    rhash = request_hash(
        "purchase",
        iccid,
        merchant_id,
        amount,
        terminal_id,
        at.isoformat() if at is not None else None,
    )
    if (first := _replay_transfer(tx, rkey, rhash, rkey)) is not None:
        return first.view
    card = tx.card(iccid)
    if card is None:
        raise UnknownCard(iccid)
    merchant = tx.merchant(merchant_id)
    if merchant is None:
        raise UnknownMerchant(merchant_id)
    check_purchase(tx.limits, amount=amount)
    purse = _locked(tx, card.purse_account)
    payable = _existing(tx, merchant.account)
    transfer = tx.post(
        "purchase",
        purse,
        payable,
        amount,
        key=rkey,
        request_hash=rhash,
        occurred_at=at,
        context=_context(
            msisdn=card.msisdn,
            iccid=iccid,
            counter=offline_counter,
            merchant=merchant_id,
            terminal=terminal_id,
            channel="pos",
        ),
    )
    return transfer.view


__all__ = [
    "View",
    "close_wallet",
    "deposit",
    "enable_card",
    "mark_in_doubt",
    "open_merchant",
    "open_wallet",
    "post_load",
    "purchase",
    "reserve_load",
    "swap_card",
    "void_load",
]
