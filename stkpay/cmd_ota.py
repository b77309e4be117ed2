"""``stkpay ota encode|decode``: build and read secured packets by hand (issue 4).

For operators debugging a packet and for conformance checks against other implementations
(ETSI TS 102 225 §5, 3GPP TS 31.115 §4):

* ``encode --spi HEX4 --kic HEX2 --kid HEX2 --tar HEX6 --counter N --apdu HEX [--apdu ...]``
  with ``--kic-key HEX --kid-key HEX``, or ``--iccid ICCID [--key-file FILE]`` (the card's
  diversified keys of the key set version named by the KIc/KID nibble, else the current
  one), prints the command packet; ``--json`` prints one object: ``command_packet`` (hex,
  CPL to the end: what follows the UDH), ``user_data`` (the SMS user-data payloads in hex,
  UDH included, concatenated when needed) and every header field by name. The APDUs form a
  compact remote command (TS 102 226 §5.1.1); ciphering pads with ``00``.
* ``decode (--command HEX | --response HEX --spi HEX4 --kic HEX2 --kid HEX2)`` with the same
  key options verifies the CC/RC, deciphers and prints every field: for a command its
  ``apdus``; for a response (given as received in the SMS user data, UDH included) its
  ``status`` (integer), ``counter`` (integer) and ``data`` (hex, padding removed).

A bad checksum, an unknown algorithm, a malformed packet or argument: one line on stderr and
exit status 2. Keys are never printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Final

from ota.apdu import ApduError, CommandApdu
from ota.errors import OtaError, OtaUsageError, ResponseStatus
from ota.keys import KeysError
from ota.keystore import KeyStoreError
from ota.remote_apdu import RemoteApduError, build_compact, split_compact
from ota.secured_packet import (
    CommandPacket,
    Keys,
    ResponsePacket,
    Spi,
    decode_command,
    decode_command_header,
    decode_response,
    encode_command,
)
from ota.smspp import command_user_data, parse_response_user_data
from stkpay.cli import CliError
from stkpay.cmd_keys import key_file
from stkpay.config import Config

_HEX: Final = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def _hex(text: str, what: str, size: int | None = None) -> bytes:
    """Hex (spaces allowed) as bytes; ``size`` octets exactly when given."""
    compact = "".join(text.split())
    if not _HEX.fullmatch(compact):
        raise CliError(f"{what} must be hex octets, got {text!r}")
    raw = bytes.fromhex(compact)
    if size is not None and len(raw) != size:
        raise CliError(f"{what} must be {size} octet(s), got {len(raw)}")
    return raw


def _key_hex(text: str, what: str) -> bytes:
    """A key in hex; the message never repeats the value."""
    compact = "".join(text.split())
    if not _HEX.fullmatch(compact):
        raise CliError(f"{what} must be hex octets")
    return bytes.fromhex(compact)


def _keys(args: argparse.Namespace, config: Config, kic: int, kid: int) -> Keys:
    """The packet keys: raw (--kic-key/--kid-key) or the card's (--iccid)."""
    if args.iccid is not None:
        if args.kic_key is not None or args.kid_key is not None:
            raise CliError("give either --iccid or --kic-key/--kid-key, not both")
        from ota.keystore import FileKeyStore  # noqa: PLC0415 - only with --iccid

        store = FileKeyStore(key_file(args, config))
        version = (kic >> 4) or (kid >> 4) or None
        try:
            card = store.card_keys(args.iccid, args.keyset, version)
            pair = card.ota_keys()
        except (KeyStoreError, KeysError) as exc:
            raise CliError(str(exc)) from None
        return Keys(kic=pair.kic, kid=pair.kid)
    if args.kic_key is None and args.kid_key is None:
        raise CliError("keys needed: --kic-key and --kid-key, or --iccid")
    kic_key = _key_hex(args.kic_key, "--kic-key") if args.kic_key is not None else b""
    kid_key = _key_hex(args.kid_key, "--kid-key") if args.kid_key is not None else b""
    try:
        return Keys(kic=kic_key, kid=kid_key)
    except (OtaUsageError, OtaError) as exc:
        raise CliError(str(exc)) from None


def _spi(text: str) -> Spi:
    raw = _hex(text, "--spi", 2)
    try:
        return Spi.from_bytes(raw)
    except OtaError as exc:
        raise CliError(f"--spi: {exc}") from None


def _octet(text: str, what: str) -> int:
    return _hex(text, what, 1)[0]


def _spi_fields(spi: Spi) -> dict[str, Any]:
    return {
        "spi": spi.to_bytes().hex().upper(),
        "counter_mode": spi.counter.name.lower(),
        "integrity": spi.integrity.name.lower(),
        "ciphered": spi.ciphered,
        "por": spi.por.name.lower(),
        "por_integrity": spi.por_integrity.name.lower(),
        "por_ciphered": spi.por_ciphered,
        "por_transport": spi.por_transport.name.lower(),
    }


def _command_fields(packet: bytes, command: CommandPacket) -> dict[str, Any]:
    header = command.header
    return {
        "cpl": header.cpl,
        "chl": header.chl,
        **_spi_fields(command.spi),
        "kic": f"{command.kic:02X}",
        "kid": f"{command.kid:02X}",
        "tar": command.tar.hex().upper(),
        "counter": command.counter,
        "pcntr": command.pcntr,
        "checksum_length": header.checksum_length,
        "secured_data": command.data.hex().upper(),
        "command_packet": packet.hex().upper(),
    }


def _print(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        return
    for name, value in obj.items():
        shown = " ".join(value) if isinstance(value, list) else value
        sys.stdout.write(f"{name:16} {shown}\n")


def _encode(args: argparse.Namespace, config: Config) -> int:
    spi = _spi(args.spi)
    kic, kid = _octet(args.kic, "--kic"), _octet(args.kid, "--kid")
    tar = _hex(args.tar, "--tar", 3)
    if not 0 <= args.counter < 1 << 40:
        raise CliError(f"--counter must be 0 .. 2**40-1, got {args.counter}")
    try:
        apdus = [CommandApdu.from_bytes(_hex(a, "--apdu")) for a in args.apdu]
        data = build_compact(apdus)
    except (ApduError, RemoteApduError) as exc:
        raise CliError(f"--apdu: {exc}") from None
    keys = _keys(args, config, kic, kid)
    try:
        packet = encode_command(
            spi=spi, kic=kic, kid=kid, tar=tar, counter=args.counter, data=data, keys=keys
        )
        command = decode_command(packet, keys)
        parts = command_user_data(packet, reference=args.reference)
    except (OtaError, OtaUsageError) as exc:
        raise CliError(str(exc)) from None
    out = _command_fields(packet, command)
    out["apdus"] = [a.to_bytes().hex().upper() for a in apdus]
    out["user_data"] = [p.hex().upper() for p in parts]
    if args.json:
        _print(out, True)
    else:
        sys.stdout.write(packet.hex().upper() + "\n")
    return 0


def _decode(args: argparse.Namespace, config: Config) -> int:
    if (args.command is None) == (args.response is None):
        raise CliError("give exactly one of --command and --response")
    if args.command is not None:
        packet = _hex(args.command, "--command")
        try:
            header = decode_command_header(packet)
        except OtaError as exc:
            raise CliError(f"malformed command packet: {exc}") from None
        keys = _keys(args, config, header.kic, header.kid)
        try:
            command = decode_command(packet, keys)
        except OtaError as exc:
            raise CliError(f"{type(exc).__name__}: {exc}") from None
        out = _command_fields(packet, command)
        try:
            out["apdus"] = [a.to_bytes().hex().upper() for a in split_compact(command.data)]
        except RemoteApduError as exc:
            raise CliError(f"the secured data is not a compact remote command: {exc}") from None
        _print(out, args.json)
        return 0
    if args.spi is None or args.kic is None or args.kid is None:
        raise CliError("--response needs --spi, --kic and --kid of the command it answers")
    spi = _spi(args.spi)
    kic, kid = _octet(args.kic, "--kic"), _octet(args.kid, "--kid")
    keys = _keys(args, config, kic, kid)
    try:
        packet = parse_response_user_data(_hex(args.response, "--response"))
        response = decode_response(packet, spi=spi, kic=kic, kid=kid, keys=keys)
    except OtaError as exc:
        raise CliError(f"{type(exc).__name__}: {exc}") from None
    _print(_response_fields(packet, response), args.json)
    return 0


def _response_fields(packet: bytes, response: ResponsePacket) -> dict[str, Any]:
    return {
        "rpl": int.from_bytes(packet[:2], "big"),
        "rhl": packet[2],
        "tar": response.tar.hex().upper(),
        "counter": response.counter,
        "pcntr": response.pcntr,
        "status": int(response.status),
        "status_name": ResponseStatus(response.status).name.lower(),
        "data": response.data.hex().upper(),
        "response_packet": packet.hex().upper(),
    }


def _add_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kic-key", metavar="HEX", help="ciphering key (KIc)")
    p.add_argument("--kid-key", metavar="HEX", help="checksum key (KID)")
    p.add_argument("--iccid", help="use this card's diversified keys from the key file")
    p.add_argument("--key-file", metavar="FILE", help="master key file (with --iccid)")
    p.add_argument("--keyset", default="ota", help="key set name (with --iccid; default ota)")
    p.add_argument("--json", action="store_true", help="one JSON object")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ota`` command group."""
    group = sub.add_parser("ota", help="OTA secured packets (TS 102 225 / TS 31.115)")
    cmds = group.add_subparsers(dest="ota_command", metavar="ACTION", required=True)

    p = cmds.add_parser("encode", help="build a command packet")
    p.add_argument("--spi", required=True, metavar="HEX4", help="security parameter indicator")
    p.add_argument("--kic", required=True, metavar="HEX2", help="KIc octet")
    p.add_argument("--kid", required=True, metavar="HEX2", help="KID octet")
    p.add_argument("--tar", required=True, metavar="HEX6", help="toolkit application reference")
    p.add_argument("--counter", required=True, type=int, metavar="N", help="CNTR (0..2**40-1)")
    p.add_argument(
        "--apdu", required=True, action="append", metavar="HEX", help="a C-APDU (repeatable)"
    )
    p.add_argument(
        "--reference",
        type=int,
        default=0,
        metavar="N",
        help="8-bit concatenation reference when the packet needs several SMS (default 0)",
    )
    _add_keys(p)
    p.set_defaults(func=_encode)

    p = cmds.add_parser("decode", help="verify and decipher a command or response packet")
    p.add_argument("--command", metavar="HEX", help="a command packet, CPL to the end")
    p.add_argument("--response", metavar="HEX", help="a PoR's SMS user data, UDH included")
    p.add_argument("--spi", metavar="HEX4", help="the SPI of the command a response answers")
    p.add_argument("--kic", metavar="HEX2", help="its KIc octet")
    p.add_argument("--kid", metavar="HEX2", help="its KID octet")
    _add_keys(p)
    p.set_defaults(func=_decode)
