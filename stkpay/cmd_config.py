"""``stkpay config check|show``: validate the configuration and print what is in force."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from stkpay.config import Config, Secret


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return "***" if value.reveal() else ""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _check(args: argparse.Namespace, config: Config) -> int:
    print("configuration ok")
    return 0


def _show(args: argparse.Namespace, config: Config) -> int:
    print(json.dumps(_plain(config), indent=2, ensure_ascii=False))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config check`` and ``config show``."""
    group = sub.add_parser("config", help="check or show the configuration")
    cmds = group.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    cmds.add_parser("check", help="validate the file; exit 2 with one line if bad").set_defaults(
        func=_check
    )
    cmds.add_parser("show", help="print the configuration in force (secrets masked)").set_defaults(
        func=_show
    )
