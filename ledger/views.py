"""The values the ledger's service layer returns: frozen dataclasses, amounts in fen.

``TransferView.debit`` is the account the money leaves, ``credit`` the account it enters; an
account's balance is what was credited to it minus what was debited from it, so the balances
of all accounts sum to zero. ``EntryView.amount`` is signed from the account holder's view
(positive: money in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

LOAD_STATES = ("reserved", "posted", "voided", "in_doubt")
TRANSFER_CODES = (
    "topup_reserve",
    "topup_post",
    "topup_void",
    "purchase",
    "deposit",
    "refund",
    "card_swap_migration",
    "forfeiture",
    "settlement",
    "reversal",
)


@dataclass(frozen=True, slots=True)
class WalletView:
    """A wallet: cash account balance and the active card's purse mirror (fen)."""

    msisdn: str
    cash: int
    card_iccid: str | None
    card_state: str | None
    card_balance: int
    topups_today: int
    in_flight: int
    state: str


@dataclass(frozen=True, slots=True)
class TransferView:
    """One posted double-entry transfer."""

    id: int
    code: str
    amount: int
    debit: str
    credit: str
    key: str
    created_at: datetime
    context: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class LoadView:
    """A two-phase card top-up; ``credit``: the caller's note of the CREDIT FOR LOAD it sent
    (stored with the reservation, None if it gave none). From ``post_load`` only:
    ``card_balance`` and ``cash_balance``, the card purse's and the wallet's cash balances as
    the posting left them (what the confirmation SMS shows; None elsewhere)."""

    id: str
    msisdn: str
    iccid: str
    amount: int
    state: str
    online_counter: int
    key: str
    credit: str | None = None
    card_balance: int | None = None
    cash_balance: int | None = None


@dataclass(frozen=True, slots=True)
class EntryView:
    """One leg of a transfer seen from one account (a subscriber's, a merchant's, a hall's)."""

    transfer_id: int
    at: datetime
    code: str
    amount: int
    counterparty: str
    balance_after: int | None
    context: dict[str, Any] = field(default_factory=dict, hash=False)
    account: str = ""


@dataclass(frozen=True, slots=True)
class CloseView:
    """A closed wallet: what was refunded (cash, purse read from the card) or forfeited."""

    msisdn: str
    cash_refunded: int
    purse_refunded: int
    forfeited: int
    transfers: tuple[TransferView, ...]
    wallet: WalletView


@dataclass(frozen=True, slots=True)
class HallReport:
    """A business hall's cash for one local day: deposits taken, refunds paid, net cash."""

    hall: str
    day: date
    deposits: int
    refunds: int
    net: int
    entries: list[EntryView] = field(default_factory=list, hash=False)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of recomputing every balance from the journal; ``total`` must be 0."""

    ok: bool
    problems: list[str]
    accounts: int
    transfers: int
    total: int


View = WalletView | TransferView | LoadView | CloseView


def encode_view(view: View | None) -> dict[str, Any] | None:
    """A view as JSON-ready data (for the stored first result of a keyed request)."""
    if view is None:
        return None
    if isinstance(view, TransferView):
        return {
            "type": "transfer",
            "id": view.id,
            "code": view.code,
            "amount": view.amount,
            "debit": view.debit,
            "credit": view.credit,
            "key": view.key,
            "created_at": view.created_at.isoformat(),
            "context": view.context,
        }
    if isinstance(view, CloseView):
        return {
            "type": "close",
            "msisdn": view.msisdn,
            "cash_refunded": view.cash_refunded,
            "purse_refunded": view.purse_refunded,
            "forfeited": view.forfeited,
            "transfers": [encode_view(t) for t in view.transfers],
            "wallet": encode_view(view.wallet),
        }
    kind = "wallet" if isinstance(view, WalletView) else "load"
    data: dict[str, Any] = {"type": kind}
    for name in view.__dataclass_fields__:
        data[name] = getattr(view, name)
    return data


def decode_view(data: dict[str, Any] | None) -> View | None:
    """The inverse of :func:`encode_view`."""
    if data is None:
        return None
    fields = {k: v for k, v in data.items() if k != "type"}
    kind = data["type"]
    if kind == "transfer":
        fields["created_at"] = datetime.fromisoformat(fields["created_at"])
        return TransferView(**fields)
    if kind == "close":
        fields["transfers"] = tuple(decode_view(t) for t in fields["transfers"])
        fields["wallet"] = decode_view(fields["wallet"])
        return CloseView(**fields)
    if kind == "wallet":
        return WalletView(**fields)
    if kind == "load":
        return LoadView(**fields)
    raise ValueError(f"unknown stored result type {kind!r}")
