"""Run APDU scripts against a card in a local PC/SC reader (pyscard).

The transport rules a terminal applies on T=0 (ETSI TS 102 221 §7.3.1, ISO/IEC 7816-3
§12.2; GET RESPONSE per TS 102 221 §12.1.1):

* ``61XX``: the card holds XX response bytes: fetch them with GET RESPONSE
  ``00 C0 00 00 XX`` (repeatedly while the card answers ``61XX``), the data concatenated.
* ``6CXX``: wrong Le: send the same command again with Le = XX (``00`` meaning 256).

A step's expected status words (``ota.script``) are checked against the status word that ends
this exchange; when the reader had to fetch or re-send, the card's first answer may match
instead (so a step may expect ``61XX`` explicitly). The run stops at the first mismatch
unless ``keep_going``.

:func:`run_steps` is the transport-independent core (a ``transmit(bytes) -> bytes`` callable,
e.g. :meth:`simcard.card.VirtualCard.process`); :func:`run_script` connects to a PC/SC
reader. PC/SC failures become :class:`PcscError` subclasses with one-line messages: the
service missing (:class:`PcscUnavailableError`), an unknown reader
(:class:`ReaderNotFoundError`, naming the readers present), no card
(:class:`CardUnavailableError`), a failed transmission (:class:`TransmitError`). pyscard is
imported only when a reader is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ota.apdu import CommandApdu, ResponseApdu
from ota.script import ScriptStep

#: Bound on GET RESPONSE / re-send rounds for one step (a card looping on 61XX/6CXX).
MAX_ROUNDS: Final = 64

_SCARD_E_NO_SERVICE: Final = 0x8010001D
_SCARD_E_SERVICE_STOPPED: Final = 0x8010001E
_SCARD_E_NO_READERS_AVAILABLE: Final = 0x8010002E

Transmit = Callable[[bytes], bytes]


class PcscError(Exception):
    """A PC/SC failure, with a one-line message for the operator."""


class PcscUnavailableError(PcscError):
    """No PC/SC service: pcscd is not running (or not reachable)."""


class ReaderNotFoundError(PcscError):
    """The requested reader is not among the readers present."""

    def __init__(self, reader: str, readers: Sequence[str]) -> None:
        present = ", ".join(repr(r) for r in readers) if readers else "none"
        super().__init__(f"unknown reader {reader!r}; readers present: {present}")
        self.reader = reader
        self.readers = list(readers)


class CardUnavailableError(PcscError):
    """No card in the reader, or the card cannot be connected."""


class TransmitError(PcscError):
    """A transmission failed (card removed, reader gone) or the card answered garbage."""


@dataclass(frozen=True, slots=True)
class Transmission:
    """One command/response pair on the wire (GET RESPONSE and re-sends included).

    The representation shows the command header and lengths only: a command may carry a
    PIN (VERIFY) or a key.
    """

    command: bytes
    response: bytes

    def __repr__(self) -> str:
        return (
            f"Transmission(header={self.command[:4].hex().upper()}, "
            f"command=<{len(self.command)} bytes>, response=<{len(self.response)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class Exchange:
    """The outcome of one script step."""

    step: ScriptStep
    response: ResponseApdu  # all response data gathered, and the final status word
    first_sw: int  # the card's answer to the step's own APDU
    ok: bool
    transmissions: tuple[Transmission, ...] = field(default=())

    @property
    def apdu(self) -> bytes:
        """The step's command APDU."""
        return self.step.apdu.to_bytes()

    @property
    def expected(self) -> tuple[str, ...]:
        """The status word patterns the step accepts."""
        return self.step.expect

    def to_json(self) -> dict[str, Any]:
        """``{"apdu", "response", "sw", "expected", "ok", "line"}`` (hex upper case)."""
        return {
            "apdu": self.apdu.hex().upper(),
            "response": self.response.data.hex().upper(),
            "sw": f"{self.response.sw:04X}",
            "expected": list(self.expected),
            "ok": self.ok,
            "line": self.step.line,
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    """Every exchange run, in order; ``steps`` is how many the script had."""

    exchanges: tuple[Exchange, ...]
    steps: int

    @property
    def ok(self) -> bool:
        """Every step ran and matched."""
        return len(self.exchanges) == self.steps and all(e.ok for e in self.exchanges)

    @property
    def mismatches(self) -> tuple[Exchange, ...]:
        """The exchanges whose status word was not expected."""
        return tuple(e for e in self.exchanges if not e.ok)


def _response(raw: bytes) -> ResponseApdu:
    if len(raw) < 2:
        raise TransmitError(f"the card answered {len(raw)} bytes, no status word")
    return ResponseApdu.from_bytes(raw)


def transceive(
    apdu: CommandApdu, transmit: Transmit
) -> tuple[ResponseApdu, int, tuple[Transmission, ...]]:
    """Send ``apdu`` applying the T=0 rules (61XX, 6CXX).

    Returns the gathered response, the card's first status word and the transmissions.
    """
    log: list[Transmission] = []

    def send(command: CommandApdu) -> ResponseApdu:
        raw_command = command.to_bytes()
        raw = bytes(transmit(raw_command))
        log.append(Transmission(raw_command, raw))
        return _response(raw)

    last = apdu
    resp = send(last)
    first_sw = resp.sw
    data = b""
    for _ in range(MAX_ROUNDS):
        if resp.sw1 == 0x6C and not last.extended:
            last = CommandApdu(last.cla, last.ins, last.p1, last.p2, last.data, resp.sw2 or 256)
        elif resp.sw1 == 0x61:
            data += resp.data
            last = CommandApdu(0x00, 0xC0, 0x00, 0x00, le=resp.sw2 or 256)
        else:
            break
        resp = send(last)
    return ResponseApdu(data + resp.data, resp.sw), first_sw, tuple(log)


def check(step: ScriptStep, final_sw: int, first_sw: int, rounds: int) -> bool:
    """Whether the step's expectation is met (see the module docstring)."""
    if step.accepts(final_sw):
        return True
    return rounds > 1 and step.accepts(first_sw)


def run_steps(
    steps: Sequence[ScriptStep],
    transmit: Transmit,
    *,
    on_exchange: Callable[[Exchange], None] | None = None,
    keep_going: bool = False,
) -> RunResult:
    """Run the steps over ``transmit``; stop at the first mismatch unless ``keep_going``."""
    done: list[Exchange] = []
    for step in steps:
        response, first_sw, log = transceive(step.apdu, transmit)
        ok = check(step, response.sw, first_sw, len(log))
        exchange = Exchange(step, response, first_sw, ok, log)
        done.append(exchange)
        if on_exchange is not None:
            on_exchange(exchange)
        if not ok and not keep_going:
            break
    return RunResult(tuple(done), len(steps))


# --- pyscard ---------------------------------------------------------------------------------


def _hresult(exc: BaseException) -> int:
    value = getattr(exc, "hresult", -1)
    return value & 0xFFFFFFFF if isinstance(value, int) and value != -1 else -1


def _pcsc_failure(exc: BaseException, doing: str) -> PcscError:
    """Map a pyscard exception to a one-line :class:`PcscError`."""
    name = type(exc).__name__
    code = _hresult(exc)
    if code in (_SCARD_E_NO_SERVICE, _SCARD_E_SERVICE_STOPPED) or name in (
        "CardServiceNotFoundException",
        "CardServiceStoppedException",
    ):
        return PcscUnavailableError(
            f"PC/SC service not available while {doing}: pcscd is not running"
        )
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    return PcscError(f"PC/SC error while {doing}: {detail}")


def _pyscard_readers() -> list[Any]:
    try:
        from smartcard.System import readers  # noqa: PLC0415 - needs libpcsclite
    except ImportError as exc:  # pragma: no cover - pyscard is a dependency
        raise PcscUnavailableError(f"pyscard is not usable: {exc}") from None
    try:
        return list(readers())
    except Exception as exc:  # pyscard raises several unrelated classes
        if _hresult(exc) == _SCARD_E_NO_READERS_AVAILABLE:
            return []
        raise _pcsc_failure(exc, "listing readers") from None


def list_readers() -> list[str]:
    """Names of the PC/SC readers present; :class:`PcscUnavailableError` without pcscd."""
    return [str(r) for r in _pyscard_readers()]


def run_script(
    steps: Sequence[ScriptStep],
    *,
    reader: str,
    on_exchange: Callable[[Exchange], None] | None = None,
    keep_going: bool = False,
) -> RunResult:
    """Connect to the card in ``reader`` and run the steps (see :func:`run_steps`)."""
    present = _pyscard_readers()
    chosen = next((r for r in present if str(r) == reader), None)
    if chosen is None:
        raise ReaderNotFoundError(reader, [str(r) for r in present])
    try:
        from smartcard.Exceptions import NoCardException  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - pyscard is a dependency
        raise PcscUnavailableError(f"pyscard is not usable: {exc}") from None
    try:
        connection = chosen.createConnection()
        connection.connect()
    except NoCardException:
        raise CardUnavailableError(f"no card in reader {reader!r}") from None
    except Exception as exc:
        failure = _pcsc_failure(exc, f"connecting to the card in {reader!r}")
        if type(failure) is PcscError:
            failure = CardUnavailableError(str(failure))
        raise failure from None

    def transmit(apdu: bytes) -> bytes:
        try:
            data, sw1, sw2 = connection.transmit(list(apdu))
        except Exception as exc:
            raise TransmitError(
                str(_pcsc_failure(exc, f"transmitting to the card in {reader!r}"))
            ) from None
        return bytes(data) + bytes((sw1, sw2))

    try:
        return run_steps(steps, transmit, on_exchange=on_exchange, keep_going=keep_going)
    finally:
        _close(connection)


def _close(connection: Any) -> None:
    for method in ("disconnect", "release"):
        func = getattr(connection, method, None)
        if func is None:
            continue
        with contextlib.suppress(Exception):  # closing a dead connection may fail too
            func()
