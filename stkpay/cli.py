"""The ``stkpay`` command line: ``main(argv) -> int``.

Each command group lives in its own module exposing ``register(subparsers)``; the handler
it sets (``func``) takes the parsed arguments and the loaded :class:`~stkpay.config.Config`
and returns an exit status. Any :class:`CliError` or :class:`~stkpay.config.ConfigError`
becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from stkpay import __version__
from stkpay.config import Config, ConfigError, load

Handler = Callable[[argparse.Namespace, Config], int]

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument on one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every command group registered."""
    from stkpay import (  # noqa: PLC0415 - lazy
        cmd_calibration,
        cmd_card,
        cmd_config,
        cmd_demo,
        cmd_keys,
        cmd_ledger,
        cmd_ota,
        cmd_phone,
        cmd_serve,
        cmd_sim,
        cmd_smpp,
        cmd_wallet,
    )

    parser = _Parser(prog="stkpay", description="RF-SIM mobile wallet platform")
    parser.add_argument("--version", action="version", version=f"stkpay {__version__}")
    parser.add_argument("--config", metavar="FILE", help="stkpay.toml (default: $STKPAY_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (
        cmd_config,
        cmd_sim,
        cmd_smpp,
        cmd_demo,
        cmd_wallet,
        cmd_ledger,
        cmd_ota,
        cmd_keys,
        cmd_card,
        cmd_calibration,
        cmd_phone,
        cmd_serve,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stkpay`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        config = load(args.config)
        return func(args, config)
    except (CliError, ConfigError) as exc:
        code = exc.code if isinstance(exc, CliError) else EXIT_USAGE
        print(f"stkpay: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    # Run through the imported module, not this __main__ copy: the command modules raise
    # stkpay.cli.CliError, which must be the class main() catches.
    from stkpay.cli import main as _main

    sys.exit(_main())
