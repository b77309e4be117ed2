"""``stkpay wallet open|deposit|enable-card|show|history|swap-card|close``: business-hall work.

Issue 3, "Business-hall operations from the command line" (flags as listed there), on the
product brief's lifecycle (开户, top up the cash account, enable the RF-SIM card, swap, close):
each command is one call of the ledger's service layer (:mod:`ledger.service`) against the
configured ledger (see :mod:`stkpay.cmd_ledger`).

* Amounts are yuan with at most two decimals (``ledger.money.parse_yuan``); a card balance
  read from a card (``--old-balance``, ``--card-balance``) may also be zero.
* Every command that posts takes ``--request-id``, the idempotency key, defaulting to a fresh
  UUID: the same id again, from any number of processes at once, posts once and answers with
  the first result; the same id with a different request is refused.
* Commands that move cash take ``--teller ID --hall ID``, recorded with the posting for the
  hall's daily cash report (``stkpay ledger hall-report``); a hall deposit requires them.
* A bad amount, an unknown subscriber, a refused rule (any ledger refusal): one line on stderr
  and exit status 2, nothing posted.

Issue 5 ("Handlers", PINs): ``wallet set-pin`` sets the top-up PIN of the wallet's active card
(6 digits, read without echo twice from a terminal, else one line of stdin; never echoed,
logged or printed), stored as a keyed hash by :mod:`handlers.pins` in the ledger's database
with the pepper of ``STKPAY_PIN_PEPPER``; ``wallet unlock-pin`` clears the wrong-PIN count
and the lock after three wrong PINs.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import re
import sys
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from ledger.errors import LedgerError
from ledger.money import format_yuan, parse_yuan
from ledger.views import CloseView, TransferView, WalletView
from stkpay.cli import CliError
from stkpay.cmd_ledger import entry_json, entry_line, open_ledger, print_json
from stkpay.config import Config

if TYPE_CHECKING:
    from handlers.pins import PinStore

SOURCES: Final = ("hall", "bank", "voucher")
#: Digits of a wallet PIN (the STK GET INPUT asks for six).
PIN_LENGTH: Final = 6

_ZERO: Final = re.compile(r"0{1,13}(?:\.0{1,2})?")


def parse_amount(text: str) -> int:
    """A positive amount in yuan as fen; a bad one is a :class:`CliError` (exit 2)."""
    try:
        return parse_yuan(text)
    except LedgerError as exc:
        raise CliError(str(exc)) from None


def parse_balance(text: str) -> int:
    """A card balance in yuan as fen: like :func:`parse_amount`, but zero is allowed."""
    return 0 if _ZERO.fullmatch(text) else parse_amount(text)


def wallet_json(view: WalletView) -> dict[str, Any]:
    """``wallet show --json``: amounts in fen."""
    return {
        "msisdn": view.msisdn,
        "state": view.state,
        "cash_fen": view.cash,
        "card_iccid": view.card_iccid,
        "card_state": view.card_state,
        "card_balance_fen": view.card_balance,
        "topups_today": view.topups_today,
        "in_flight_fen": view.in_flight,
    }


def transfer_json(view: TransferView) -> dict[str, Any]:
    """A posted transfer as JSON (amount in fen)."""
    return {
        "id": view.id,
        "code": view.code,
        "amount_fen": view.amount,
        "debit": view.debit,
        "credit": view.credit,
        "key": view.key,
        "created_at": view.created_at.isoformat(),
        "context": view.context,
    }


def _print_wallet(view: WalletView) -> None:
    card = "none" if view.card_iccid is None else f"{view.card_iccid} ({view.card_state})"
    print(f"wallet {view.msisdn} ({view.state})")
    print(f"cash           {format_yuan(view.cash):>12} CNY")
    print(f"card           {card}")
    print(f"card purse     {format_yuan(view.card_balance):>12} CNY")
    print(f"in flight      {format_yuan(view.in_flight):>12} CNY")
    print(f"top-ups today  {view.topups_today:>12}")


def _request_id(args: argparse.Namespace) -> str:
    rid: str | None = args.request_id
    return rid if rid is not None else str(uuid.uuid4())


def _open(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config) as ledger:
        view = ledger.open_wallet(args.msisdn, args.id_number, request_id=_request_id(args))
    if args.json:
        print_json(wallet_json(view))
    else:
        print(f"opened wallet {view.msisdn}")
    return 0


def _deposit(args: argparse.Namespace, config: Config) -> int:
    amount = parse_amount(args.amount)
    with open_ledger(config) as ledger:
        transfer = ledger.deposit(
            args.msisdn,
            amount,
            args.source,
            request_id=_request_id(args),
            teller=args.teller,
            hall=args.hall,
        )
        view = ledger.wallet(args.msisdn)
    if args.json:
        print_json({"transfer": transfer_json(transfer), "wallet": wallet_json(view)})
    else:
        print(
            f"deposited {format_yuan(transfer.amount)} CNY ({args.source}) to {view.msisdn}: "
            f"cash {format_yuan(view.cash)} CNY (transfer {transfer.id}, key {transfer.key})"
        )
    return 0


def _enable_card(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config) as ledger:
        view = ledger.enable_card(args.msisdn, args.iccid, request_id=_request_id(args))
    if args.json:
        print_json(wallet_json(view))
    else:
        print(f"card {view.card_iccid} {view.card_state} on wallet {view.msisdn}")
    return 0


def _show(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config) as ledger:
        view = ledger.wallet(args.msisdn)
    if args.json:
        print_json(wallet_json(view))
    else:
        _print_wallet(view)
    return 0


def _history(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config) as ledger:
        entries = ledger.history(args.msisdn, args.last)
    if args.json:
        print_json([entry_json(e) for e in entries])
    elif not entries:
        print(f"no transactions for {args.msisdn}")
    else:
        for entry in entries:
            print(entry_line(entry))
    return 0


def _swap_card(args: argparse.Namespace, config: Config) -> int:
    old_balance = None if args.old_balance is None else parse_balance(args.old_balance)
    with open_ledger(config) as ledger:
        view = ledger.swap_card(
            args.msisdn,
            args.iccid,
            old_balance=old_balance,
            request_id=_request_id(args),
            teller=args.teller,
            hall=args.hall,
        )
    if args.json:
        print_json(wallet_json(view))
    else:
        fate = (
            f"old purse {format_yuan(old_balance)} CNY migrated"
            if old_balance is not None
            else "old card not read: its purse is forfeited"
        )
        print(
            f"card {view.card_iccid} {view.card_state} on wallet {view.msisdn}; {fate}; "
            f"card purse {format_yuan(view.card_balance)} CNY"
        )
    return 0


def _close(args: argparse.Namespace, config: Config) -> int:
    card_balance = None if args.card_balance is None else parse_balance(args.card_balance)
    with open_ledger(config) as ledger:
        closed: CloseView = ledger.close_wallet(
            args.msisdn,
            request_id=_request_id(args),
            teller=args.teller,
            hall=args.hall,
            card_balance=card_balance,
        )
    if args.json:
        print_json(
            {
                "msisdn": closed.msisdn,
                "cash_refunded_fen": closed.cash_refunded,
                "purse_refunded_fen": closed.purse_refunded,
                "forfeited_fen": closed.forfeited,
                "transfers": [transfer_json(t) for t in closed.transfers],
                "wallet": wallet_json(closed.wallet),
            }
        )
    else:
        print(
            f"closed wallet {closed.msisdn}: cash refunded {format_yuan(closed.cash_refunded)} "
            f"CNY, purse refunded {format_yuan(closed.purse_refunded)} CNY, forfeited "
            f"{format_yuan(closed.forfeited)} CNY"
        )
    return 0


def read_pin(*, tty: bool | None = None) -> str:
    """The new PIN: twice without echo from a terminal, else one line of stdin. Checked to be
    :data:`PIN_LENGTH` digits; a bad one is a :class:`CliError` that never shows it."""
    interactive = sys.stdin.isatty() if tty is None else tty
    if interactive:
        first = getpass.getpass("new PIN (6 digits): ")
        again = getpass.getpass("new PIN again: ")
        if first != again:
            raise CliError("the two PINs differ; nothing changed")
        pin = first
    else:
        pin = sys.stdin.readline().rstrip("\r\n")
    if not (len(pin) == PIN_LENGTH and pin.isascii() and pin.isdigit()):
        raise CliError(f"a PIN is {PIN_LENGTH} digits; nothing changed")
    return pin


def _active_card(config: Config, msisdn: str) -> str:
    with open_ledger(config) as ledger:
        view = ledger.wallet(msisdn)
    if view.card_iccid is None or view.card_state != "active":
        raise CliError(f"wallet {view.msisdn} has no active card; enable one first")
    return view.card_iccid


@contextlib.contextmanager
def _pin_store(config: Config) -> Iterator[PinStore]:
    from handlers.pins import PinError, PinStoreError, open_pin_store  # noqa: PLC0415
    from stkpay.cmd_ledger import EXIT_FAILED, resolve_url  # noqa: PLC0415
    from stkpay.gateway import GatewayError, resolve_pepper  # noqa: PLC0415

    try:
        pepper = resolve_pepper(config, allow_ephemeral=False)
    except GatewayError as exc:
        raise CliError(str(exc)) from None
    try:
        store = open_pin_store(resolve_url(config.ledger.url), pepper)
    except PinError as exc:
        raise CliError(str(exc)) from None
    except PinStoreError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    try:
        yield store
    except PinError as exc:
        raise CliError(str(exc)) from None
    except PinStoreError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        store.close()


def _set_pin(args: argparse.Namespace, config: Config) -> int:
    iccid = _active_card(config, args.msisdn)
    with _pin_store(config) as pins:  # the pepper is checked before the PIN is asked for
        pin = read_pin()
        pins.set_pin(iccid, pin)
    print(f"PIN set for card {iccid} of wallet {args.msisdn}")
    return 0


def _unlock_pin(args: argparse.Namespace, config: Config) -> int:
    from handlers.pins import PinVerdict  # noqa: PLC0415

    iccid = _active_card(config, args.msisdn)
    with _pin_store(config) as pins:
        if pins.status(iccid).verdict is PinVerdict.NOT_SET:
            raise CliError(f"card {iccid} has no PIN; set one with `stkpay wallet set-pin`")
        pins.unlock(iccid)
    print(f"PIN of card {iccid} of wallet {args.msisdn} unlocked (wrong attempts cleared)")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _add_msisdn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--msisdn", required=True, metavar="E164", help="subscriber, E.164 digits")


def _add_request_id(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--request-id",
        metavar="KEY",
        help="idempotency key (default: a fresh UUID); the same key again posts once and "
        "repeats the first answer",
    )


def _add_teller(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--teller", metavar="ID", help=f"teller handling the cash ({what})")
    p.add_argument("--hall", metavar="ID", help=f"business hall whose cash moves ({what})")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (amounts in fen)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``wallet`` command group."""
    group = sub.add_parser("wallet", help="business-hall wallet operations (the ledger)")
    cmds = group.add_subparsers(dest="wallet_command", metavar="ACTION", required=True)

    p = cmds.add_parser("open", help="open a wallet (MSISDN + national ID number)")
    _add_msisdn(p)
    p.add_argument("--id-number", required=True, metavar="ID", help="national ID number")
    _add_request_id(p)
    _add_json(p)
    p.set_defaults(func=_open)

    p = cmds.add_parser("deposit", help="deposit cash to the wallet's cash account")
    _add_msisdn(p)
    p.add_argument("--amount", required=True, metavar="YUAN", help="yuan, at most 2 decimals")
    p.add_argument("--source", required=True, choices=SOURCES, help="where the money comes from")
    _add_request_id(p)
    _add_teller(p, "required with --source hall")
    _add_json(p)
    p.set_defaults(func=_deposit)

    p = cmds.add_parser("enable-card", help="enable an RF-SIM wallet card on a wallet")
    _add_msisdn(p)
    p.add_argument("--iccid", required=True, help="the card's ICCID")
    _add_request_id(p)
    _add_json(p)
    p.set_defaults(func=_enable_card)

    p = cmds.add_parser("show", help="cash and card balances, card state, top-ups today")
    _add_msisdn(p)
    _add_json(p)
    p.set_defaults(func=_show)

    p = cmds.add_parser("history", help="the subscriber's last transactions, newest first")
    _add_msisdn(p)
    p.add_argument("--last", type=_positive_int, default=10, metavar="N", help="default 10")
    _add_json(p)
    p.set_defaults(func=_history)

    p = cmds.add_parser(
        "swap-card",
        help="move the wallet to a new card",
        description="Enable a new card on the wallet. With --old-balance (the old card was "
        "read) its purse migrates to the new card; without, the old purse is forfeited (the "
        "card cannot be reported lost or recovered).",
    )
    _add_msisdn(p)
    p.add_argument("--iccid", required=True, metavar="NEW", help="the new card's ICCID")
    p.add_argument("--old-balance", metavar="YUAN", help="purse balance read from the old card")
    _add_request_id(p)
    _add_teller(p, "recorded with the posting")
    _add_json(p)
    p.set_defaults(func=_swap_card)

    p = cmds.add_parser(
        "close",
        help="close a wallet: cash refunded; purse refunded if read, else forfeited",
    )
    _add_msisdn(p)
    p.add_argument("--card-balance", metavar="YUAN", help="purse balance read from the card")
    _add_request_id(p)
    _add_teller(p, "the refund is paid from this hall's cash")
    _add_json(p)
    p.set_defaults(func=_close)

    p = cmds.add_parser(
        "set-pin",
        help="set the top-up PIN of the wallet's card (read without echo)",
        description="Reads a 6-digit PIN twice without echo from a terminal, or one line of "
        "stdin, and stores its keyed hash (pepper: STKPAY_PIN_PEPPER) for the wallet's active "
        "card. Clears any wrong-PIN count and lock.",
    )
    _add_msisdn(p)
    p.set_defaults(func=_set_pin)

    p = cmds.add_parser(
        "unlock-pin",
        help="unlock the card's PIN after three wrong tries (clears the count)",
    )
    _add_msisdn(p)
    p.set_defaults(func=_unlock_pin)
