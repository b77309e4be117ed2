"""Running an async command body under the global reactor (CLI entry points only).

Library code takes its reactor as a parameter; only commands reach for the global one,
through :func:`run`, which turns the body's result into an exit status and any
:class:`~stkpay.cli.CliError` into one line on stderr.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer, task
from twisted.python.failure import Failure

EXIT_FAILED = 1

Body = Callable[[Any], Coroutine[Any, Any, int]]


def run(body: Body) -> int:
    """Run ``body(reactor)`` to completion; its int is the exit status."""
    from stkpay.cli import CliError  # noqa: PLC0415 - cli imports the command modules

    status = [EXIT_FAILED]

    def main(reactor: Any) -> defer.Deferred[None]:
        d = defer.ensureDeferred(body(reactor))

        def done(code: int) -> None:
            status[0] = code

        def failed(f: Failure) -> None:
            err = f.value
            if isinstance(err, CliError):
                print(f"stkpay: {err}", file=sys.stderr)
                status[0] = err.code
            else:
                print(f"stkpay: {f.getErrorMessage()}", file=sys.stderr)
                status[0] = EXIT_FAILED

        return d.addCallbacks(done, failed)

    with contextlib.suppress(SystemExit):
        task.react(main)
    return status[0]
