"""The ledger's errors: every refusal is a :class:`LedgerError` with a one-line message.

A refusal never leaves anything posted: the operation that raised it changed nothing. Messages
name the rule and the figures (in yuan) so that a teller, a CLI user or an SMS reply can say
why; they never carry a national ID number or any other secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

REFUSAL_RULES: Final = frozenset(
    {
        "single_topup_limit",
        "card_balance_limit",
        "daily_topup_count",
        "single_purchase_limit",
        "insufficient_funds",
        "currency_mismatch",
    }
)


class LedgerError(Exception):
    """Base of every ledger refusal; ``str()`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        """The one-line message."""
        return str(self)


class InvalidRequest(LedgerError):  # noqa: N818 - name fixed by the ledger API
    """A malformed request (bad source, missing teller/hall, bad identifier)."""


class InvalidAmount(InvalidRequest):
    """An amount that is zero, negative, not an integer number of fen, or not parseable."""


class UnknownSubscriber(LedgerError):  # noqa: N818 - name fixed by the ledger API
    """No open wallet for this MSISDN."""

    def __init__(self, msisdn: str, message: str | None = None) -> None:
        self.msisdn = msisdn
        super().__init__(message or f"unknown subscriber {msisdn}: no open wallet")


class UnknownCard(LedgerError):  # noqa: N818 - name fixed by the ledger API
    """No card with this ICCID is enabled on any wallet."""

    def __init__(self, iccid: str) -> None:
        self.iccid = iccid
        super().__init__(f"unknown card {iccid}")


class UnknownMerchant(LedgerError):  # noqa: N818 - name fixed by the ledger API
    """No merchant with this id."""

    def __init__(self, merchant_id: str) -> None:
        self.merchant_id = merchant_id
        super().__init__(f"unknown merchant {merchant_id}")


class UnknownLoad(LedgerError):  # noqa: N818 - name fixed by the ledger API
    """No top-up load with this id."""

    def __init__(self, load_id: str) -> None:
        self.load_id = load_id
        super().__init__(f"unknown load {load_id}")


class WalletExists(LedgerError):  # noqa: N818 - name fixed by the ledger API
    """An open wallet already exists for this MSISDN (or a merchant for this id)."""


class CardStateError(LedgerError):
    """The card or wallet is not in a state that allows the operation (no active card, card
    already enabled elsewhere, loads still pending)."""


class LoadStateError(LedgerError):
    """The load is in a state that does not allow the transition (e.g. post a voided load)."""


class IdempotencyConflict(LedgerError):  # noqa: N818 - name fixed by the ledger API
    """The idempotency key was already used for a different request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used for a different request")


class Refused(LedgerError):  # noqa: N818 - name fixed by the ledger API
    """A business rule refused the request; ``rule`` names it, ``figures`` (fen or counts)
    are the numbers it judged."""

    def __init__(self, rule: str, figures: Mapping[str, int], message: str) -> None:
        if rule not in REFUSAL_RULES:
            raise ValueError(f"unknown refusal rule {rule!r}")
        self.rule = rule
        self.figures: dict[str, int] = dict(figures)
        super().__init__(message if message.startswith("refused") else f"refused: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.rule, self.figures, str(self)))


class StorageError(Exception):
    """The database failed (unreachable, connection lost, repeated conflicts).

    Not a :class:`LedgerError`: nothing was refused, the outcome is unknown. Retrying with the
    same idempotency key is always safe (a gateway answers ESME_RX_T_APPN so the SMSC retries).
    """
