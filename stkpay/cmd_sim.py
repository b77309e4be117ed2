"""``stkpay smsc-sim``: run the SMSC simulator (an SMPP 3.4 server) until SIGINT/SIGTERM.

Accounts come from ``[[simulator.accounts]]`` of the configuration file; ``--system-id`` /
``--password`` (with ``--short-code`` and ``--throughput``) add one, replacing a configured
account with the same system_id. The fault flags set :class:`smsc.simulator.Faults` at
start; ``POST /faults`` on the control API changes them at run time. Binds and a periodic
one-line summary are logged to stderr; passwords never are. ``POST /faults`` with
``{"stall": true}`` hangs every connection until it is set back to false.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, cast

from stkpay.cli import CliError
from stkpay.config import Config, Secret, SimAccount, SimulatorConfig

_ID_FORMATS = ("dec", "hex", "hex-upper")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``smsc-sim`` to the parser."""
    p = sub.add_parser(
        "smsc-sim",
        help="run the SMSC simulator (SMPP 3.4 server with an HTTP control API)",
        description="Run a standalone SMSC that ESMEs bind to; stop with Ctrl-C.",
    )
    p.add_argument("--listen", metavar="ENDPOINT", help="SMPP endpoint, e.g. tcp:2775")
    p.add_argument(
        "--api",
        metavar="ENDPOINT",
        help="HTTP control API endpoint, e.g. tcp:8775 (loopback unless interface= is given); "
        "'none' disables it",
    )
    p.add_argument("--system-id", metavar="ID", help="an ESME account that may bind")
    p.add_argument("--password", metavar="PW", help="its password")
    p.add_argument(
        "--short-code",
        metavar="CODE",
        action="append",
        default=None,
        help="MO to numbers starting with CODE go to this account (repeatable)",
    )
    p.add_argument(
        "--throughput", type=float, metavar="RATE", help="this account's submit_sm/s limit"
    )
    p.add_argument("--receipt-delay", type=float, metavar="S", help="seconds before a receipt")
    p.add_argument(
        "--delivered-ratio", type=float, metavar="R", help="share of MT delivered (0..1)"
    )
    p.add_argument(
        "--throttle", type=float, metavar="RATE", help="submit_sm/s per bind, then THROTTLED"
    )
    p.add_argument("--response-delay", type=float, metavar="S", help="delay every submit resp")
    p.add_argument("--error-rate", type=float, metavar="R", help="share of submits refused")
    p.add_argument(
        "--error-status",
        metavar="NAME|HEX",
        help="status of refused submits (default ESME_RSYSERR)",
    )
    p.add_argument("--drop-after", type=int, metavar="N", help="drop a connection at PDU N")
    p.add_argument("--out-of-order", action="store_true", help="answer in shuffled batches")
    p.add_argument("--unbind-after", type=int, metavar="N", help="send unbind after N PDUs")
    p.add_argument(
        "--stall-after",
        type=int,
        metavar="N",
        help="stop answering a connection from its PDU N on, like a hung SMSC",
    )
    p.add_argument(
        "--message-id-format", choices=_ID_FORMATS, default="dec", help="message ids (dec)"
    )
    p.add_argument(
        "--receipt-id-format",
        choices=_ID_FORMATS,
        default=None,
        help="ids in receipts, when written unlike the submit_sm_resp (default: the same)",
    )
    p.add_argument(
        "--stats-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between summary lines on stderr (0: none)",
    )
    p.set_defaults(func=run)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CliError(message)


def _accounts(args: argparse.Namespace, sim: SimulatorConfig) -> tuple[SimAccount, ...]:
    """The configured accounts plus (replacing the same system_id) the command-line one."""
    if args.system_id is None:
        _check(args.password is None, "--password needs --system-id")
        _check(args.short_code is None, "--short-code needs --system-id")
        _check(args.throughput is None, "--throughput needs --system-id")
        return sim.accounts
    _check(args.password is not None, "--system-id needs --password")
    system_id: str = args.system_id
    password: str = args.password
    _check(
        0 < len(system_id) <= 15 and system_id.isascii() and system_id.isprintable(),
        "--system-id must be 1..15 printable ASCII characters",
    )
    _check(
        len(password) <= 8 and password.isascii(),
        "--password must be at most 8 ASCII characters (SMPP 3.4 §4.1.1)",
    )
    short_codes = tuple(args.short_code) if args.short_code else SimAccount().short_codes
    for code in short_codes:
        _check(
            0 < len(code) <= 20 and code.isascii() and code.isprintable(),
            "--short-code must be 1..20 printable ASCII characters",
        )
    throughput = 0.0 if args.throughput is None else args.throughput
    _check(throughput >= 0, "--throughput must be >= 0")
    account = SimAccount(
        system_id=system_id,
        password=Secret(password),
        short_codes=short_codes,
        throughput=throughput,
    )
    others = tuple(a for a in sim.accounts if a.system_id != system_id)
    return (*others, account)


def build(args: argparse.Namespace, config: Config, reactor: Any) -> Any:
    """Validate the flags and build the simulator service (not started). Raises CliError."""
    from smsc.simulator import (  # noqa: PLC0415 - keeps `stkpay --help` fast
        Faults,
        make_service,
        parse_status,
        server_from_string,
    )

    sim = config.simulator
    accounts = _accounts(args, sim)
    _check(bool(accounts), "no account may bind: give --system-id and --password")

    faults_args: dict[str, Any] = {}
    for flag, name in (
        ("--throttle", "throttle"),
        ("--response-delay", "response_delay"),
        ("--error-rate", "error_rate"),
        ("--drop-after", "drop_after"),
        ("--unbind-after", "unbind_after"),
        ("--stall-after", "stall_after"),
    ):
        value = getattr(args, name)
        if value is not None:
            _check(value >= 0, f"{flag} must be >= 0")
            faults_args[name] = value
    if args.error_rate is not None:
        _check(args.error_rate <= 1, "--error-rate must be between 0 and 1")
    if args.error_status is not None:
        try:
            faults_args["error_status"] = parse_status(args.error_status)
        except ValueError as exc:
            raise CliError(f"--error-status: {exc}") from None
    faults_args["out_of_order"] = bool(args.out_of_order)
    faults = Faults(**faults_args)

    receipt_delay = sim.receipt_delay if args.receipt_delay is None else args.receipt_delay
    _check(receipt_delay >= 0, "--receipt-delay must be >= 0")
    ratio = sim.delivered_ratio if args.delivered_ratio is None else args.delivered_ratio
    _check(0 <= ratio <= 1, "--delivered-ratio must be between 0 and 1")
    _check(args.stats_interval >= 0, "--stats-interval must be >= 0")

    listen = args.listen if args.listen is not None else sim.listen
    api = args.api if args.api is not None else sim.api
    if api.lower() == "none":
        api = ""
    for flag, description in (("--listen", listen), ("--api", api)):
        if description:
            try:
                server_from_string(reactor, description)
            except (ValueError, TypeError, KeyError) as exc:
                raise CliError(f"{flag}: bad endpoint {description!r}: {exc}") from None

    return make_service(
        SimulatorConfig(
            listen=listen,
            api=api,
            accounts=accounts,
            receipt_delay=receipt_delay,
            delivered_ratio=ratio,
            mt_retention=sim.mt_retention,
            data_coding_default=sim.data_coding_default,
        ),
        reactor,
        faults=faults,
        message_id_format=args.message_id_format,
        receipt_id_format=args.receipt_id_format,
    )


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the simulator on the global reactor until SIGINT/SIGTERM."""
    from twisted.internet import reactor as _reactor  # noqa: PLC0415 - CLI entry point only
    from twisted.internet.task import LoopingCall  # noqa: PLC0415
    from twisted.logger import (  # noqa: PLC0415
        FilteringLogObserver,
        Logger,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    reactor: Any = _reactor
    service = build(args, config, reactor)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    observer: Any = FilteringLogObserver(
        cast(Any, textFileLogObserver(sys.stderr)), [cast(Any, predicate)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    log = Logger(namespace="stkpay.smsc-sim")
    status = {"code": 0}

    def listening(ports: tuple[int, int | None]) -> None:
        smpp_port, api_port = ports
        accounts = ", ".join(service.simulator.accounts)
        api_text = "off" if api_port is None else str(api_port)
        log.info(
            "SMSC simulator listening: smpp port {smpp}, api port {api}; accounts: {accounts}",
            smpp=smpp_port,
            api=api_text,
            accounts=accounts,
        )

    def failed(failure: Any) -> None:
        print(f"stkpay: smsc-sim cannot listen: {failure.getErrorMessage()}", file=sys.stderr)
        status["code"] = 1
        if reactor.running:
            reactor.stop()

    def start() -> None:
        service.startService()
        service.when_listening().addCallbacks(listening, failed)

    summary = LoopingCall(lambda: log.info("{summary}", summary=service.simulator.summary()))
    summary.clock = reactor
    if args.stats_interval > 0:
        reactor.callWhenRunning(
            lambda: summary.start(args.stats_interval, now=False).addErrback(lambda _: None)
        )
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)

    def stop_summary() -> None:
        if summary.running:
            summary.stop()

    reactor.addSystemEventTrigger("before", "shutdown", stop_summary)
    reactor.run()
    return status["code"]


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - convenience
    """``python -m stkpay.cmd_sim ...`` = ``stkpay smsc-sim ...``."""
    from stkpay.cli import main as cli_main  # noqa: PLC0415

    return cli_main(["smsc-sim", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
