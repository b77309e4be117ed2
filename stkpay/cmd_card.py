"""``stkpay card run|virtual``: APDU scripts against a PC/SC card, and a virtual card for pcscd.

Issue 4, "PC/SC runner (pyscard)":

* ``stkpay card run SCRIPT [--reader NAME] [--keep-going] [--json]`` runs an APDU script
  (the format of :mod:`ota.script`) against the card in a PC/SC reader through
  :func:`ota.pcsc.run_script`, printing each exchange as it happens: ``> APDU`` then
  ``< DATA SW  ok`` or ``< DATA SW  MISMATCH expected 9000|61XX``; with ``--json`` one JSON
  object per exchange (keys ``apdu``, ``response``, ``sw``, ``expected``, ``ok``, ``line``).
  Without ``--reader`` the only reader present is used; with several it refuses, naming
  them. Exit status 0 when every step matched, 1 when one did not, 2 (one line on stderr)
  for an unreadable or malformed script (naming file:line), an unknown reader, no card, or
  no pcscd.
* ``stkpay card virtual --iccid ICCID [--vpcd HOST:PORT]`` serves a
  :class:`simcard.card.VirtualCard` to pcscd's vpcd driver (default 127.0.0.1:35963, the
  reader "Virtual PCD 00 00") until interrupted or until pcscd closes the connection.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Final

from stkpay.cli import CliError
from stkpay.config import Config

EXIT_OK: Final = 0
EXIT_MISMATCH: Final = 1


def _read_script(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None


def choose_reader(requested: str | None, readers: list[str]) -> str:
    """The reader to use: ``requested`` if present, else the only reader; else refuse."""
    from ota.pcsc import ReaderNotFoundError  # noqa: PLC0415 - keep pyscard off the CLI start

    if requested is not None:
        if requested not in readers:
            raise CliError(str(ReaderNotFoundError(requested, readers)))
        return requested
    if not readers:
        raise CliError("no PC/SC reader present")
    if len(readers) > 1:
        names = ", ".join(repr(r) for r in readers)
        raise CliError(f"several readers present, choose one with --reader: {names}")
    return readers[0]


def _run(args: argparse.Namespace, _config: Config) -> int:
    from ota.pcsc import Exchange, PcscError, list_readers, run_script  # noqa: PLC0415
    from ota.script import ScriptError, parse_script  # noqa: PLC0415

    path: str = args.script
    text = _read_script(path)
    try:
        steps = parse_script(text, source=path)
    except ScriptError as exc:
        raise CliError(str(exc)) from None
    if not steps:
        raise CliError(f"{path}: no APDU in the script")
    as_json: bool = args.json

    def show(exchange: Exchange) -> None:
        if as_json:
            print(json.dumps(exchange.to_json(), separators=(",", ":")), flush=True)
            return
        data = exchange.response.data.hex().upper()
        sw = f"{exchange.response.sw:04X}"
        verdict = "ok" if exchange.ok else "MISMATCH expected " + "|".join(exchange.expected)
        print(f"> {exchange.apdu.hex().upper()}")
        print(f"< {data + ' ' if data else ''}{sw}  {verdict}", flush=True)

    try:
        reader = choose_reader(args.reader, list_readers())
        result = run_script(steps, reader=reader, on_exchange=show, keep_going=args.keep_going)
    except PcscError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK if result.ok else EXIT_MISMATCH


def _virtual(args: argparse.Namespace, _config: Config) -> int:
    from simcard.card import VirtualCard  # noqa: PLC0415
    from simcard.vpcd import parse_endpoint, serve_vpcd  # noqa: PLC0415

    try:
        card = VirtualCard(args.iccid)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        host, port = parse_endpoint(args.vpcd)
    except ValueError as exc:
        raise CliError(f"--vpcd: {exc}") from None
    print(
        f"virtual card {card.iccid} -> vpcd at {host}:{port} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        serve_vpcd(card, host, port)
    except OSError as exc:
        raise CliError(
            f"cannot connect to vpcd at {host}:{port}: {exc.strerror or exc} "
            "(is pcscd running with the vpcd driver?)"
        ) from None
    print("vpcd closed the connection", file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``card`` command group."""
    group = sub.add_parser("card", help="APDU scripts on PC/SC cards; a virtual card for pcscd")
    cmds = group.add_subparsers(dest="card_command", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "run",
        help="run an APDU script against the card in a PC/SC reader",
        description="Send each APDU of SCRIPT (one hex APDU per line, '#' comments, "
        "optional '-> 9000|61XX' expected status words) and check the status words. "
        "Exit 0 when all matched, 1 on a mismatch, 2 on an error.",
    )
    p.add_argument("script", metavar="SCRIPT", help="APDU script file")
    p.add_argument("--reader", metavar="NAME", help="PC/SC reader (default: the only one)")
    p.add_argument("--keep-going", action="store_true", help="run every step even after a mismatch")
    p.add_argument("--json", action="store_true", help="one JSON object per exchange")
    p.set_defaults(func=_run)

    p = cmds.add_parser(
        "virtual",
        help="serve a virtual UICC to pcscd's vpcd driver",
        description="Connect a virtual card (simcard.card.VirtualCard) to pcscd's vpcd "
        "driver and serve it until interrupted or until pcscd closes the connection.",
    )
    p.add_argument("--iccid", required=True, help="the card's ICCID (digits)")
    p.add_argument(
        "--vpcd",
        default="127.0.0.1:35963",
        metavar="HOST:PORT",
        help="vpcd driver address (default 127.0.0.1:35963, reader 'Virtual PCD 00 00')",
    )
    p.set_defaults(func=_virtual)
