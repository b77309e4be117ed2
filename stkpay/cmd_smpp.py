"""``stkpay smpp send|listen``: stkpay's ESME from the command line.

For operators testing an SMSC and for scripts. ``send`` binds, sends one message (split when
long), prints one JSON line per part and, with ``--receipt``, each delivery receipt as it
comes, then unbinds. ``listen`` binds and prints each (reassembled) MO as a JSON line;
``--echo`` answers each MO with an MT carrying the same text (or the same 8-bit data). A
bind failure, a refused part, or the link lost (the SMSC closed or unbound it; these one-shot
runs do not reconnect): one line on stderr and exit status 1. Receipts that beat the last
part's submit_sm_resp are printed after the part lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from smsc.dlr import Receipt
from smsc.reassembly import Message
from smsc.segment import LongMode
from smsc.text import Encoding, encoding_of
from stkpay.cli import CliError
from stkpay.config import Config, Secret, SmscConfig
from stkpay.runner import EXIT_FAILED, run


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _hexbytes(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex: {value!r}") from None


def _positive_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if f <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value!r}")
    return f


def _add_bind_args(p: argparse.ArgumentParser, binds: tuple[str, ...], default: str) -> None:
    p.add_argument("--smsc", type=_hostport, metavar="HOST:PORT", help="default: [smsc] host:port")
    p.add_argument("--system-id", help="default: [smsc] system_id")
    p.add_argument("--password", help="default: $STKPAY_SMSC_PASSWORD or [smsc] password")
    p.add_argument("--system-type", help="default: [smsc] system_type")
    p.add_argument("--bind", choices=binds, default=default, help=f"bind type (default {default})")
    p.add_argument("--window", type=int, help="outstanding requests (default: [smsc] window)")
    p.add_argument(
        "--bind-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="give up when not bound within this time (default 10)",
    )


def _smsc_config(args: argparse.Namespace, base: SmscConfig) -> SmscConfig:
    changes: dict[str, Any] = {}
    if args.smsc is not None:
        changes["host"], changes["port"] = args.smsc
    if args.system_id is not None:
        changes["system_id"] = args.system_id
    if args.password is not None:
        changes["password"] = Secret(args.password)
    elif os.environ.get("STKPAY_SMSC_PASSWORD") is None and args.system_id is not None:
        changes["password"] = Secret("")
    if args.system_type is not None:
        changes["system_type"] = args.system_type
    if args.window is not None:
        if args.window < 1:
            raise CliError("--window must be >= 1")
        changes["window"] = args.window
    # A tool run wants an answer, not a reconnect loop: one bind attempt, fast feedback.
    changes["bind"] = "trx"
    for name, limit in (("system_id", 16), ("system_type", 13)):
        value = changes.get(name)
        if isinstance(value, str) and (len(value) >= limit or not value.isascii()):
            flag = "--" + name.replace("_", "-")
            raise CliError(f"{flag} must be ASCII of at most {limit - 1} characters")
    password = changes.get("password")
    if isinstance(password, Secret) and len(password.reveal()) >= 9:
        raise CliError("--password must be at most 8 characters")
    return dataclasses.replace(base, **changes)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {"receipt": receipt.as_dict()}


def message_json(message: Message, default: Encoding) -> dict[str, Any]:
    """An MO as the JSON line ``listen`` prints (``text`` is null for 8-bit data)."""
    binary = encoding_of(message.data_coding, default=default) is Encoding.BINARY
    return {
        "from": message.source,
        "to": message.destination,
        "data_coding": message.data_coding,
        "text": None if binary else message.text(default=default),
        "hex": message.payload.hex(),
        "udh": [{"iei": ie.iei, "data": ie.data.hex()} for ie in message.ies],
        "parts": message.parts,
    }


# -- send ---------------------------------------------------------------------------------


def _send_cmd(args: argparse.Namespace, config: Config) -> int:
    if args.receipt and args.bind == "tx":
        raise CliError("--receipt needs a bind that receives (trx): a transmitter gets no receipts")
    if args.text is not None and args.encoding == "binary":
        raise CliError("--encoding binary takes --hex, not --text")
    cfg = _smsc_config(args, config.smsc)
    if args.long is not None:
        cfg = dataclasses.replace(cfg, long_messages=args.long)
    return run(lambda reactor: _send(reactor, args, cfg))


async def _send(reactor: Any, args: argparse.Namespace, cfg: SmscConfig) -> int:
    from smsc.esme import Esme  # noqa: PLC0415 - Twisted import cost only when used
    from smsc.message import OutboundMessage  # noqa: PLC0415

    receipts: list[Receipt] = []  # this message's, in arrival order
    held: list[Receipt] | None = []  # receipts printed once the part lines are out
    waiting: defer.Deferred[None] | None = None
    expected = 0
    msg: OutboundMessage | None = None

    def on_receipt(receipt: Receipt, token: object) -> None:
        if token is msg and msg is not None:
            receipts.append(receipt)
        if held is not None:  # a receipt may beat the last part's submit_sm_resp
            held.append(receipt)
            return
        _emit(_receipt_json(receipt))
        if waiting is not None and len(receipts) >= expected and not waiting.called:
            waiting.callback(None)

    esme = Esme(cfg, reactor=reactor, on_receipt=on_receipt, reconnect=False, links=(args.bind,))
    await _bind(esme, reactor, args.bind_timeout)
    try:
        encoding = Encoding(args.encoding) if args.encoding else None
        try:
            if args.hex is not None:
                msg = OutboundMessage(
                    destination=args.to,
                    data=args.hex,
                    source=args.from_,
                    data_coding=args.data_coding,
                    registered_delivery=args.receipt,
                )
            else:
                msg = OutboundMessage(
                    destination=args.to,
                    text=args.text,
                    source=args.from_,
                    encoding=encoding,
                    registered_delivery=args.receipt,
                )
        except ValueError as exc:
            raise CliError(str(exc)) from None
        try:
            result = await esme.send(msg)
        except ValueError as exc:
            raise CliError(f"cannot encode the message: {exc}") from None
        total = len(result.parts)
        for i, part in enumerate(result.parts, 1):
            _emit(
                {
                    "part": i,
                    "parts": total,
                    "message_id": part.message_id,
                    "status": part.status_name,
                }
            )
        early, held = held, None
        for receipt in early or ():
            _emit(_receipt_json(receipt))
        if not result.ok:
            bad = next(p for p in result.parts if not p.ok)
            print(f"stkpay: part refused: {bad.status_name}", file=sys.stderr)
            return EXIT_FAILED
        if args.receipt:
            expected = total
            watch: _LinkWatch | None = None
            if len(receipts) < expected:
                waiting = defer.Deferred()
                timeout = reactor.callLater(args.wait, _finish, waiting)
                watch = _LinkWatch(esme, reactor, waiting)
                await waiting
                watch.stop()
                if timeout.active():
                    timeout.cancel()
            if len(receipts) < expected:
                why = watch.lost if watch is not None and watch.lost else None
                print(
                    f"stkpay: {expected - len(receipts)} receipt(s) not received "
                    + (f"({why})" if why else f"within {args.wait:g} s"),
                    file=sys.stderr,
                )
                return EXIT_FAILED
        return 0
    finally:
        await esme.stopService()


# -- listen -------------------------------------------------------------------------------


def _listen_cmd(args: argparse.Namespace, config: Config) -> int:
    if args.echo and args.bind == "rx":
        raise CliError("--echo needs a bind that transmits (trx): a receiver cannot send")
    cfg = _smsc_config(args, config.smsc)
    return run(lambda reactor: _listen(reactor, args, cfg))


async def _listen(reactor: Any, args: argparse.Namespace, cfg: SmscConfig) -> int:
    from smsc.esme import Esme  # noqa: PLC0415

    default = Encoding(cfg.data_coding_default)
    done: defer.Deferred[None] = defer.Deferred()
    seen = 0
    esme: Esme | None = None

    def on_message(message: Message) -> defer.Deferred[None] | None:
        nonlocal seen
        _emit(message_json(message, default))
        seen += 1
        if args.echo and esme is not None:
            _echo(esme, message, default)
        if args.count and seen >= args.count and not done.called:
            reactor.callLater(0, done.callback, None)
        return None

    def on_receipt(receipt: Receipt, token: object) -> None:
        _emit(_receipt_json(receipt))

    esme = Esme(
        cfg,
        reactor=reactor,
        on_message=on_message,
        on_receipt=on_receipt,
        reconnect=False,
        links=(args.bind,),
    )
    await _bind(esme, reactor, args.bind_timeout)
    if args.duration:
        reactor.callLater(args.duration, _finish, done)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: reactor.callFromThread(_finish, done))
    watch = _LinkWatch(esme, reactor, done)
    try:
        await done
    finally:
        watch.stop()
        await esme.stopService()
    if watch.lost is not None:
        raise CliError(watch.lost, EXIT_FAILED)
    return 0


def _echo(esme: Any, message: Message, default: Encoding) -> None:
    """Answer ``message`` with an MT carrying the same text (or the same 8-bit data)."""
    from smsc.message import OutboundMessage  # noqa: PLC0415

    try:
        if encoding_of(message.data_coding, default=default) is Encoding.BINARY:
            reply = OutboundMessage(
                destination=message.source,
                source=message.destination,
                data=message.payload,
                data_coding=message.data_coding,
                registered_delivery=False,
            )
        else:
            reply = OutboundMessage(
                destination=message.source,
                source=message.destination,
                text=message.text(default=default),
                registered_delivery=False,
            )
    except ValueError as exc:
        print(f"stkpay: echo failed: {exc}", file=sys.stderr)
        return

    def sent(result: Any) -> None:
        if not result.ok:
            print(f"stkpay: echo refused: {result.parts[0].status_name}", file=sys.stderr)

    d = esme.send(reply)
    d.addCallbacks(sent, lambda f: print(f"stkpay: echo failed: {f.value}", file=sys.stderr))


def _finish(done: defer.Deferred[None]) -> None:
    if not done.called:
        done.callback(None)


class _LinkWatch:
    """Fires ``done`` when the bound link goes away (the ESME runs with reconnect=False, so
    it will not come back) and says why in :attr:`lost`; checked every 0.1 s."""

    def __init__(self, esme: Any, reactor: IReactorTime, done: defer.Deferred[None]) -> None:
        self.esme = esme
        self.done = done
        self.lost: str | None = None
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = reactor
        self._loop.start(0.1, now=False)

    def _check(self) -> None:
        if self.esme.bound or self.lost is not None or self.done.called:
            return
        if self.esme.counters.peer_unbinds:
            self.lost = "the SMSC unbound"
        else:
            self.lost = "the connection to the SMSC was lost"
        _finish(self.done)

    def stop(self) -> None:
        """Stop watching."""
        if self._loop.running:
            self._loop.stop()


# -- shared -------------------------------------------------------------------------------


async def _bind(esme: Any, reactor: IReactorTime, timeout: float) -> None:
    """Start the ESME and wait for the bind; one line and exit 1 if it does not come."""
    from smsc.esme import BindError  # noqa: PLC0415

    esme.startService()
    bound: defer.Deferred[None] = esme.when_bound()
    bound.addTimeout(timeout, reactor)
    try:
        await bound
    except defer.TimeoutError:
        await esme.stopService()
        reason = esme.last_bind_error or "no answer"
        raise CliError(f"not bound within {timeout:g} s: {reason}", EXIT_FAILED) from None
    except BindError as exc:
        await esme.stopService()
        reason = esme.last_bind_error or str(exc) or "refused"
        raise CliError(f"bind failed: {reason}", EXIT_FAILED) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``smpp send`` and ``smpp listen``."""
    group = sub.add_parser("smpp", help="send or receive SMS through an SMSC (ESME)")
    cmds = group.add_subparsers(dest="smpp_command", metavar="ACTION", required=True)

    send = cmds.add_parser("send", help="bind, send one message, print results, unbind")
    _add_bind_args(send, ("tx", "trx"), "trx")
    send.add_argument("--from", dest="from_", metavar="ADDR", help="source address")
    send.add_argument("--to", required=True, metavar="ADDR", help="destination address")
    body = send.add_mutually_exclusive_group(required=True)
    body.add_argument("--text", help="message text (split when long)")
    body.add_argument("--hex", type=_hexbytes, help="message octets in hex")
    send.add_argument("--encoding", choices=[e.value for e in Encoding], help="default: auto")
    send.add_argument("--data-coding", type=lambda v: int(v, 0), help="with --hex (default 4)")
    send.add_argument("--long", choices=[m.value for m in LongMode], help="long-message mode")
    send.add_argument("--receipt", action="store_true", help="request and wait for receipts")
    send.add_argument(
        "--wait", type=_positive_float, default=30.0, metavar="SECONDS", help="receipt wait"
    )
    send.set_defaults(func=_send_cmd)

    listen = cmds.add_parser("listen", help="bind and print each MO as a JSON line")
    _add_bind_args(listen, ("rx", "trx"), "trx")
    listen.add_argument("--echo", action="store_true", help="answer each MO with its text")
    listen.add_argument("--count", type=int, default=0, help="exit after N messages")
    listen.add_argument(
        "--duration", type=_positive_float, metavar="SECONDS", help="exit after this long"
    )
    listen.set_defaults(func=_listen_cmd)
