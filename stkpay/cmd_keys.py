"""``stkpay keys list|import|generate|card``: the master keys behind "one card, one key".

Issue 4, "Keys: one card, one key": master keys live in a key file (:class:`ota.keystore.
FileKeyStore`, mode 0600, never in the repository); a card's keys are diversified from them by
its ICCID (:mod:`ota.keys`). Nothing here ever prints a key: imports, listings and card
queries show key check values (KCVs) only.

The key file: ``--key-file FILE``; else ``$STKPAY_KEY_FILE``; else ``ota.key_file`` from the
configuration when it has one; else ``var/stkpay-keys.json`` (relative to the current
directory).

* ``keys import`` reads the key as hex from the terminal without echo (``getpass``), or, when
  stdin is not a terminal, from the first line of stdin; it prints the KCV to compare with the
  key ceremony's.
* ``keys generate`` makes fresh random masters for every key name (kic, kid with
  ``--algorithm``; the PBOC keys dlk, dpk, dtk always 2-key 3DES) for the demo and tests.
* Bad input (a malformed key, an unknown key set, an unsafe key file): one line on stderr and
  exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any, Final

from ota.keys import KeyAlgorithm, KeyName, KeysError, parse_key_hex
from ota.keystore import FileKeyStore, KeyInfo, KeyStoreError
from stkpay.cli import CliError
from stkpay.config import Config

DEFAULT_KEY_FILE: Final = Path("var/stkpay-keys.json")
ENV_KEY_FILE: Final = "STKPAY_KEY_FILE"


def key_file(args: argparse.Namespace, config: Config) -> Path:
    """The key file in force: option, environment, configuration, default."""
    if getattr(args, "key_file", None):
        return Path(args.key_file)
    env = os.environ.get(ENV_KEY_FILE)
    if env:
        return Path(env)
    configured = getattr(getattr(config, "ota", None), "key_file", None)
    if isinstance(configured, str | os.PathLike) and str(configured):
        return Path(configured)
    return DEFAULT_KEY_FILE


def _store(args: argparse.Namespace, config: Config) -> FileKeyStore:
    return FileKeyStore(key_file(args, config))


def _info_json(info: KeyInfo) -> dict[str, Any]:
    return {
        "keyset": info.keyset,
        "name": info.name.value,
        "version": info.version,
        "algorithm": info.algorithm.value,
        "bits": 8 * info.length,
        "kcv": info.kcv_hex,
    }


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _fail(exc: Exception) -> CliError:
    return CliError(" ".join(str(exc).split()))


def _list(args: argparse.Namespace, config: Config) -> int:
    store = _store(args, config)
    try:
        infos = store.list_keys()
    except KeyStoreError as exc:
        raise _fail(exc) from None
    if args.json:
        _print_json([_info_json(i) for i in infos])
    elif not infos:
        print(f"no master keys in {store.path}")
    else:
        print(f"{'KEYSET':<16} {'NAME':<4} {'VERSION':>7}  {'ALGORITHM':<9}  KCV")
        for i in infos:
            alg = f"{i.algorithm.value}-{8 * i.length}"
            print(f"{i.keyset:<16} {i.name.value:<4} {i.version:>7}  {alg:<9}  {i.kcv_hex}")
    return 0


def _read_key() -> bytes:
    """The key hex: without echo from a terminal, else one line of stdin."""
    if sys.stdin.isatty():
        try:
            text = getpass.getpass("key (hex, not echoed): ")
        except EOFError:
            text = ""
    else:
        text = sys.stdin.readline()
    try:
        return parse_key_hex(text)
    except KeysError as exc:
        raise _fail(exc) from None


def _import(args: argparse.Namespace, config: Config) -> int:
    store = _store(args, config)
    material = _read_key()
    try:
        info = store.import_key(args.keyset, args.name, args.version, args.algorithm, material)
    except KeyStoreError as exc:
        raise _fail(exc) from None
    if args.json:
        _print_json(_info_json(info))
    else:
        print(f"imported {info.describe()} into {store.path}")
    return 0


def _generate(args: argparse.Namespace, config: Config) -> int:
    store = _store(args, config)
    try:
        infos = store.generate(args.keyset, args.version, args.algorithm)
    except KeyStoreError as exc:
        raise _fail(exc) from None
    if args.json:
        _print_json([_info_json(i) for i in infos])
    else:
        for info in infos:
            print(f"generated {info.describe()}")
        print(f"into {store.path}")
    return 0


def _card(args: argparse.Namespace, config: Config) -> int:
    store = _store(args, config)
    try:
        card = store.card_keys(args.iccid, args.keyset, args.version)
    except KeyStoreError as exc:
        raise _fail(exc) from None
    if args.json:
        _print_json(
            {
                "iccid": card.iccid,
                "keyset": card.keyset,
                "version": card.version,
                "keys": [
                    {
                        "name": k.name.value,
                        "algorithm": k.algorithm.value,
                        "bits": 8 * len(k.value),
                        "kcv": k.kcv.hex().upper(),
                    }
                    for k in card.keys
                ],
            }
        )
    else:
        print(f"card {card.iccid}: key set {card.keyset} v{card.version}")
        for k in card.keys:
            alg = f"{k.algorithm.value}-{8 * len(k.value)}"
            print(f"  {k.name.value:<4} {alg:<9} KCV {k.kcv.hex().upper()}")
    return 0


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be 1-255: {text!r}")
    return value


def _add_key_file(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key-file",
        metavar="FILE",
        help=f"master key file (default: ${ENV_KEY_FILE}, ota.key_file, {DEFAULT_KEY_FILE})",
    )


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` command group."""
    group = sub.add_parser("keys", help="OTA and wallet master keys (KCVs only, never keys)")
    cmds = group.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    algorithms = [a.value for a in KeyAlgorithm]

    p = cmds.add_parser("list", help="master keys: key set, name, version, algorithm, KCV")
    _add_key_file(p)
    _add_json(p)
    p.set_defaults(func=_list)

    p = cmds.add_parser(
        "import",
        help="import a master key (hex from stdin, not echoed); prints its KCV",
        description="Reads the key as hex: without echo from a terminal, else the first line "
        "of stdin. Versions are immutable: a new key is a new version.",
    )
    p.add_argument("--keyset", required=True, metavar="NAME", help="key set, e.g. ota")
    p.add_argument("--name", required=True, choices=[n.value for n in KeyName])
    p.add_argument("--version", required=True, type=_version, metavar="N", help="1-255")
    p.add_argument("--algorithm", required=True, choices=algorithms)
    _add_key_file(p)
    _add_json(p)
    p.set_defaults(func=_import)

    p = cmds.add_parser(
        "generate",
        help="fresh random masters for every key name (demo, tests); prints KCVs",
        description="kic and kid use --algorithm; the PBOC keys dlk, dpk, dtk are always "
        "2-key 3DES.",
    )
    p.add_argument("--keyset", required=True, metavar="NAME", help="key set, e.g. ota")
    p.add_argument("--version", required=True, type=_version, metavar="N", help="1-255")
    p.add_argument("--algorithm", choices=algorithms, default="aes", help="default aes")
    _add_key_file(p)
    _add_json(p)
    p.set_defaults(func=_generate)

    p = cmds.add_parser("card", help="a card's diversified keys, as KCVs")
    p.add_argument("--iccid", required=True, help="the card's ICCID as printed")
    p.add_argument("--keyset", default="ota", metavar="NAME", help="default ota")
    p.add_argument("--version", type=_version, metavar="N", help="default: the current one")
    _add_key_file(p)
    _add_json(p)
    p.set_defaults(func=_card)
