"""``stkpay ledger verify|hall-report|in-doubt``, and how every ledger command reaches the ledger.

Issue 3, "Business-hall operations from the command line": all commands go through the one
service layer (:class:`ledger.service.Ledger`) against the configured ledger: ``ledger.url`` in
the config file, overridden by ``STKPAY_LEDGER_URL``; SQLite by default. A relative SQLite
path (``sqlite:///var/ledger.db``) resolves against the current directory, and its parent
directory is created.

``ledger in-doubt`` (issue 5, "Handlers"): the card top-ups reserved and not yet proven
(``reserved``: awaiting the card's proof of receipt; ``in_doubt``: no proof came, settled at the
card's next contact by its online counter, never by a timer), oldest first.

Exit statuses: 0 done; 2 for a refusal or bad input (any :class:`~ledger.errors.LedgerError`:
a bad amount, an unknown subscriber, a refused rule), one line on stderr; 1 when the ledger
cannot be reached or ``verify`` finds a problem. Messages never carry a database password.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from ledger.errors import LedgerError, StorageError
from ledger.money import format_yuan
from ledger.views import EntryView, HallReport, VerifyReport
from stkpay.cli import CliError
from stkpay.config import Config

if TYPE_CHECKING:
    from ledger.service import Ledger

EXIT_FAILED: Final = 1

_SQLITE: Final = "sqlite://"


def resolve_url(url: str, cwd: Path | None = None) -> str:
    """The ledger URL with a relative SQLite path made absolute against ``cwd`` (default: the
    current directory) and that file's parent directory created; other URLs unchanged."""
    if not url.startswith(_SQLITE):
        if url.startswith(("postgresql://", "postgres://")):
            return url
        raise CliError(f"ledger.url: unsupported URL {redact(url)!r} (sqlite:// or postgresql://)")
    rest = url[len(_SQLITE) :]
    if rest in (":memory:", "/:memory:"):
        return url
    if not rest.startswith("/") or rest == "/":
        raise CliError(f"ledger.url: expected sqlite:///PATH, got {url!r}")
    path = Path(rest[1:])  # sqlite:///rel/x.db -> rel/x.db; sqlite:////abs/x.db -> /abs/x.db
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {path.parent}: {exc.strerror}", EXIT_FAILED) from None
    return f"{_SQLITE}/{path}"


def redact(url: str) -> str:
    """``url`` without its password (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def open_ledger(config: Config) -> Iterator[Ledger]:
    """Connect to the configured ledger for one command; map failures to :class:`CliError`.

    A :class:`LedgerError` raised inside the block becomes exit status 2 with its one-line
    message; a database that cannot be reached or fails, exit status 1. The ledger is closed
    on the way out. Group commit is off: a command makes one request, nothing to batch.
    """
    # Imported here, not at module level: `stkpay --help` need not load the database drivers.
    import psycopg  # noqa: PLC0415

    from ledger.service import Ledger  # noqa: PLC0415

    url = resolve_url(config.ledger.url)
    try:
        ledger = Ledger.connect(url, group_commit=False)
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    except StorageError as exc:  # its message names the (redacted) database already
        raise CliError(_one_line(exc), EXIT_FAILED) from None
    except (sqlite3.Error, psycopg.Error, OSError) as exc:
        raise CliError(
            f"cannot open the ledger at {redact(url)}: {_one_line(exc)}", EXIT_FAILED
        ) from None
    try:
        yield ledger
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    except StorageError as exc:
        raise CliError(_one_line(exc), EXIT_FAILED) from None
    except (sqlite3.Error, psycopg.Error) as exc:
        raise CliError(f"ledger failure: {_one_line(exc)}", EXIT_FAILED) from None
    finally:
        with contextlib.suppress(Exception):
            ledger.close()


def print_json(value: Any) -> None:
    """One JSON document on stdout (UTF-8, keys in insertion order)."""
    print(json.dumps(value, ensure_ascii=False, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def entry_json(entry: EntryView) -> dict[str, Any]:
    """An :class:`EntryView` as a JSON object (amounts in fen, signed from the holder)."""
    return {
        "transfer_id": entry.transfer_id,
        "at": entry.at.isoformat(),
        "code": entry.code,
        "amount_fen": entry.amount,
        "counterparty": entry.counterparty,
        "balance_after_fen": entry.balance_after,
        "context": entry.context,
    }


def entry_line(entry: EntryView) -> str:
    """One human line: UTC time, code, signed yuan, counterparty, balance after."""
    sign = "+" if entry.amount > 0 else ""
    after = "" if entry.balance_after is None else f"  balance {format_yuan(entry.balance_after)}"
    at = entry.at.strftime("%Y-%m-%d %H:%M:%SZ")
    amount = f"{sign}{format_yuan(entry.amount)}"
    return f"{at}  {entry.code:<19} {amount:>12} CNY  {entry.counterparty}{after}"


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _verify(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config) as ledger:
        report: VerifyReport = ledger.verify()
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "problems": report.problems,
                "accounts": report.accounts,
                "transfers": report.transfers,
                "total_fen": report.total,
            }
        )
    else:
        for problem in report.problems:
            print(f"problem: {problem}")
        verdict = "ok" if report.ok else f"FAILED ({len(report.problems)} problems)"
        print(
            f"ledger {verdict}: {report.accounts} accounts, {report.transfers} transfers, "
            f"sum of balances {format_yuan(report.total)} CNY"
        )
    if not report.ok:
        print("stkpay: ledger verify found problems", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _hall_report(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config) as ledger:
        report: HallReport = ledger.hall_report(args.hall, args.date)
    if args.json:
        print_json(
            {
                "hall": report.hall,
                "date": report.day.isoformat(),
                "deposits_fen": report.deposits,
                "refunds_fen": report.refunds,
                "net_fen": report.net,
                "entries": [entry_json(e) for e in report.entries],
            }
        )
        return 0
    print(f"hall {report.hall}, {report.day.isoformat()}")
    for entry in report.entries:
        teller = entry.context.get("teller")
        print(entry_line(entry) + (f"  teller {teller}" if teller else ""))
    print(f"deposits taken {format_yuan(report.deposits):>12} CNY")
    print(f"refunds paid   {format_yuan(report.refunds):>12} CNY")
    print(f"net cash       {format_yuan(report.net):>12} CNY")
    return 0


def _age(created: object, now: datetime) -> float | None:
    """Seconds since ``created`` (None when the ledger's view does not carry it)."""
    if not isinstance(created, datetime):
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return max(0.0, (now - created).total_seconds())


def _age_text(age: float | None) -> str:
    if age is None:
        return "?"
    seconds = int(age)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d{seconds % 86_400 // 3600:02d}h"


def _in_doubt(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config) as ledger:
        loads = ledger.pending_loads()
    now = datetime.now(UTC)
    rows = []
    for load in loads:
        created = getattr(load, "created_at", None)  # when the ledger's LoadView carries it
        rows.append((load, created, _age(created, now)))
    if args.json:
        print_json(
            [
                {
                    "load_id": load.id,
                    "msisdn": load.msisdn,
                    "iccid": load.iccid,
                    "amount_fen": load.amount,
                    "state": load.state,
                    "online_counter": load.online_counter,
                    "key": load.key,
                    "created_at": created.isoformat() if isinstance(created, datetime) else None,
                    "age_s": None if age is None else round(age, 1),
                }
                for load, created, age in rows
            ]
        )
        return 0
    if not rows:
        print("no pending loads")
        return 0
    print(
        f"{'load id':<36}  {'msisdn':<15} {'iccid':<20} {'amount':>10}  "
        f"{'state':<9} {'age':>7} {'counter':>7}"
    )
    for load, _, age in rows:
        print(
            f"{load.id:<36}  {load.msisdn:<15} {load.iccid:<20} {format_yuan(load.amount):>10}  "
            f"{load.state:<9} {_age_text(age):>7} {load.online_counter:>7}"
        )
    in_doubt = sum(1 for load, _, _ in rows if load.state == "in_doubt")
    total = sum(load.amount for load, _, _ in rows)
    print(
        f"{len(rows)} pending ({in_doubt} in doubt, {len(rows) - in_doubt} reserved), "
        f"{format_yuan(total)} CNY in flight"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ledger verify``, ``ledger hall-report`` and ``ledger in-doubt``."""
    group = sub.add_parser("ledger", help="check the ledger; business-hall cash reports")
    cmds = group.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "verify",
        help="recompute every balance from the journal; exit 1 if any problem",
        description="Recompute every account balance from the append-only journal and check "
        "that they sum to zero, that no non-negative account is negative and that pending "
        "loads equal the in-flight account. Exit 0 when all hold, 1 otherwise.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_verify)

    p = cmds.add_parser(
        "hall-report",
        help="a business hall's cash for one day (deposits, refunds, net)",
        description="The cash a business hall took (deposits) and paid out (refunds) on one "
        "calendar day in the wallet's time zone (Asia/Shanghai), each posting with its teller.",
    )
    p.add_argument("--hall", required=True, metavar="ID", help="business hall id")
    p.add_argument("--date", required=True, type=_date, metavar="YYYY-MM-DD", help="local day")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_hall_report)

    p = cmds.add_parser(
        "in-doubt",
        help="card top-ups reserved or in doubt (no proof from the card yet)",
        description="List the pending card loads, oldest first: load id, MSISDN, ICCID, "
        "amount, state (reserved: awaiting the card's proof of receipt; in_doubt: no proof "
        "came, settled at the card's next contact), age and the card's online counter.",
    )
    p.add_argument("--json", action="store_true", help="print JSON (amounts in fen)")
    p.set_defaults(func=_in_doubt)
