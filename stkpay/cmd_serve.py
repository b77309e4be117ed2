"""``stkpay serve``: run the SMPP gateway until SIGTERM/SIGINT (issue 5, "Running it").

Builds :func:`stkpay.gateway.make_gateway` from the configuration (``--config`` or
``$STKPAY_CONFIG`` or ``./stkpay.toml``; the PIN pepper from ``STKPAY_PIN_PEPPER``) and runs it
on the global reactor. Logs go to stderr: one line per bind state change (the ESME's), the
health port, sweeps, and the stop. SIGTERM or SIGINT: the gateway stops taking MO, drains,
unbinds and the process exits 0 within ``[gateway] grace_period``.

A configuration that cannot run (bad file, no key file, no pepper, bad endpoint) is one line
on stderr and exit status 2; a health port that cannot listen, exit status 1.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from typing import Any, cast

from stkpay.cli import CliError
from stkpay.config import Config

EXIT_FAILED = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the parser."""
    p = sub.add_parser(
        "serve",
        help="run the SMPP gateway (wallet handlers, ledger, OTA) until SIGTERM",
        description="Bind to the configured SMSC and serve the wallet: STK top-ups, balance "
        "and last-10 queries, proofs of receipt. GET /healthz on [gateway] health. Stop with "
        "SIGTERM or Ctrl-C: MO are refused (the SMSC retries), the windows drain, then unbind.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the gateway on the global reactor until SIGINT/SIGTERM."""
    del args
    from twisted.internet import reactor as _reactor  # noqa: PLC0415 - CLI entry point only
    from twisted.logger import (  # noqa: PLC0415
        FilteringLogObserver,
        Logger,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from stkpay.gateway import GatewayError, make_gateway  # noqa: PLC0415

    reactor: Any = _reactor
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    observer: Any = FilteringLogObserver(
        cast(Any, textFileLogObserver(sys.stderr)), [cast(Any, predicate)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s"
    )
    log = Logger(namespace="stkpay.serve")
    try:
        gateway = make_gateway(config, reactor)
    except GatewayError as exc:
        raise CliError(str(exc)) from None
    status = {"code": 0}

    def failed(failure: Any) -> None:
        print(f"stkpay: serve: healthz cannot listen: {failure.getErrorMessage()}", file=sys.stderr)
        status["code"] = EXIT_FAILED
        if reactor.running:
            reactor.stop()

    def start() -> None:
        # What start-up allocated (modules, configuration, stores) lives as long as the
        # process: out of the collector's sight, a full collection stays short.
        gc.collect()
        gc.freeze()
        gateway.startService()
        gateway.when_health_listening().addErrback(failed)
        log.info(
            "gateway started: SMSC {host}:{port} as {system_id}, ledger {dialect}",
            host=config.smsc.host,
            port=config.smsc.port,
            system_id=config.smsc.system_id,
            dialect=gateway.ledger.dialect,
        )

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stopService)
    reactor.run()
    return status["code"]
