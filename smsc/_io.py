"""The slices of Twisted's interfaces that the SMPP adapters use, as typing protocols.

Time and transport are injected (a reactor or ``task.Clock``; a TCP transport or
``StringTransport``); these protocols say exactly what the ESME and the simulator need of
them, so a test double only has to provide that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class DelayedCall(Protocol):
    """What ``callLater`` returns (``twisted.internet.interfaces.IDelayedCall``)."""

    def getTime(self) -> float:  # noqa: N802 - Twisted's name
        """When the call runs."""
        ...

    def reset(self, seconds_from_now: float) -> None:
        """Move the call."""
        ...

    def cancel(self) -> None:
        """Cancel the call."""
        ...

    def active(self) -> bool:
        """True until the call ran or was cancelled."""
        ...


class Clock(Protocol):
    """The part of ``IReactorTime`` used (a reactor or ``task.Clock``)."""

    def seconds(self) -> float:
        """Now, in seconds."""
        ...

    def callLater(  # noqa: N802 - Twisted's name
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> DelayedCall:
        """Run ``callable`` after ``delay`` seconds."""
        ...


class Transport(Protocol):
    """The part of ``ITCPTransport`` used (a TCP transport or ``StringTransport``)."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer."""
        ...

    def loseConnection(self) -> None:  # noqa: N802 - Twisted's name
        """Close after the queued bytes are written."""
        ...

    def abortConnection(self) -> None:  # noqa: N802 - Twisted's name
        """Close at once, dropping what is queued."""
        ...

    def getPeer(self) -> object:  # noqa: N802 - Twisted's name
        """The peer's address."""
        ...
