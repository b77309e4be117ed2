"""A virtual card served to the real pcscd through its vpcd driver, for the PC/SC tests.

``served_card(card, reader, port)`` runs :func:`simcard.vpcd.serve_vpcd` in a thread and
yields once the vpcd driver has talked to the card and pcscd lets a client connect to it
(readiness polling with a deadline, not protocol timing); it stops the card afterwards. Where
pcscd or the reader is missing the test is skipped, except under CI=true, where ``make test``
must have started them and the test fails.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ota.pcsc import PcscError, list_readers
from simcard.card import ATR, VirtualCard
from simcard.vpcd import serve_vpcd

__all__ = ["PRESENCE_DEADLINE", "WatchedCard", "card_connectable", "require_pcscd", "served_card"]

PRESENCE_DEADLINE = 10.0


def require_pcscd(reason: str) -> None:
    """Skip, or fail under CI=true where make test must have started pcscd."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true pcscd with vpcd is required (make test starts it)")
    pytest.skip(reason)


class WatchedCard(VirtualCard):
    """A VirtualCard that records that the vpcd driver talked to it."""

    __slots__ = ("contacted",)

    def __init__(self, iccid: str) -> None:
        super().__init__(iccid)
        self.contacted = threading.Event()

    @property
    def atr(self) -> bytes:
        self.contacted.set()
        return ATR


def card_connectable(reader: str) -> bool:
    """Whether pcscd lets us connect to a card in ``reader`` right now."""
    from smartcard.Exceptions import CardConnectionException, NoCardException
    from smartcard.System import readers

    chosen = next(r for r in readers() if str(r) == reader)
    connection = chosen.createConnection()
    try:
        connection.connect()
    except (NoCardException, CardConnectionException):
        return False
    connection.disconnect()
    return True


@contextmanager
def served_card(card: WatchedCard, reader: str, port: int) -> Iterator[WatchedCard]:
    """Serve ``card`` on vpcd ``port`` until the block ends; it is present in ``reader``."""
    try:
        names = list_readers()
    except PcscError as exc:
        require_pcscd(f"pcscd not reachable: {exc}")
    if reader not in names:
        require_pcscd(f"no vpcd reader {reader!r} (readers: {names})")
    stop, connected = threading.Event(), threading.Event()
    failures: list[OSError] = []

    def serve() -> None:
        try:
            serve_vpcd(card, "127.0.0.1", port, stop, connected=connected)
        except OSError as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve, name=f"vpcd-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + PRESENCE_DEADLINE
        while not (card.contacted.is_set() and card_connectable(reader)):
            if failures:
                require_pcscd(f"cannot connect to vpcd on port {port}: {failures[0]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the virtual card did not appear in {reader!r} within 10 s")
            time.sleep(0.1)
        yield card
    finally:
        stop.set()
        thread.join(5)
