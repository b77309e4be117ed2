"""The card's APDU dispatcher (sans-IO): command APDU bytes in, response APDU bytes out.

Implements the card side of the command/response pair of ISO/IEC 7816-4 §5.1 (short
length fields only: cases 1 to 4) and the class byte coding of ETSI TS 102 221 §10.1.1:

* ``'0X'``, ``'4X'`` and ``'6X'`` carry the ISO/IEC 7816-4 (interindustry) commands,
  ``'8X'``, ``'CX'`` and ``'EX'`` the commands TS 102 221 and the applications define
  themselves (STATUS, the CAT commands, GlobalPlatform, PBOC); any other class is answered
  ``6E00``. Logical channels other than the basic channel are answered ``6881``
  (TS 102 221 §10.2.1.5).
* A command is routed by (class group, INS) to the :class:`ApduHandler` registered for it:
  an INS nobody handles is answered ``6D00``, a known INS in the wrong class group ``6E00``,
  a malformed command (fewer than 4 bytes, Lc inconsistent with the length, extended length
  fields) ``6700``.
* Response chaining as on a T=0 card (TS 102 221 §7.3.1 and §12.1.1, ISO/IEC 7816-3): a
  command sent without Le (case 1 or 3) whose answer carries data gets ``61XX`` and the data
  is kept for GET RESPONSE (``00 C0 00 00 XX``); GET RESPONSE with a wrong Le gets ``6CXX``.
* :meth:`Dispatcher.process` never raises: a handler's :class:`CardError` becomes its status
  word, any other exception ``6F00`` (technical problem, no precise diagnosis).

Applets (the file system, the wallet, the STK menu, the OTA endpoint) register handlers; the
dispatcher knows nothing about any of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final, Protocol

from ota.apdu import ApduError, CommandApdu, ResponseApdu


class SW(IntEnum):
    """Status words of ETSI TS 102 221 §10.2.1 used by the card model."""

    OK = 0x9000
    # 10.2.1.2 warnings
    END_OF_FILE = 0x6282  # end of file/record reached before reading Le bytes
    # 10.2.1.4 execution errors
    TECHNICAL_PROBLEM = 0x6F00
    MEMORY_PROBLEM = 0x6581
    # 10.2.1.5 checking errors
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    INCOMPATIBLE_FILE_STRUCTURE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    CONDITIONS_NOT_SATISFIED = 0x6985
    NO_CURRENT_EF = 0x6986
    INCORRECT_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1_P2 = 0x6A86
    LC_INCONSISTENT_WITH_P1_P2 = 0x6A87
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_P1_P2 = 0x6B00  # wrong parameter(s) P1-P2, e.g. an offset outside the EF
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00


#: SW1 of "response bytes still available" (TS 102 221 §10.2.1.1): ``61XX``.
SW1_BYTES_AVAILABLE: Final = 0x61
#: SW1 of "wrong length Le, SW2 gives the exact length" (TS 102 221 §10.2.1.5): ``6CXX``.
SW1_WRONG_LE: Final = 0x6C

INS_GET_RESPONSE: Final = 0xC0


class ClassGroup(Enum):
    """Which commands a class byte may carry (ETSI TS 102 221 §10.1.1, table 10.3)."""

    INTERINDUSTRY = "interindustry"  # '0X', '4X', '6X': ISO/IEC 7816-4 commands
    PROPRIETARY = "proprietary"  # '8X', 'CX', 'EX': TS 102 221 and application commands


def class_group(cla: int) -> ClassGroup | None:
    """The group of a class byte, or ``None`` for a class the UICC does not support."""
    high = cla & 0xF0
    if high in (0x00, 0x40, 0x60):
        return ClassGroup.INTERINDUSTRY
    if high in (0x80, 0xC0, 0xE0):
        return ClassGroup.PROPRIETARY
    return None


def logical_channel(cla: int) -> int:
    """The logical channel a class byte addresses (TS 102 221 §10.1.1): b2-b1 for '0X'/'8X',
    4 + b4-b1 for the further interindustry coding ('4X', '6X', 'CX', 'EX')."""
    if cla & 0x40:
        return 4 + (cla & 0x0F)
    return cla & 0x03


class CardError(Exception):
    """Raised by a handler to answer a status word without data."""

    def __init__(self, sw: int, reason: str = "") -> None:
        super().__init__(f"{sw:04X}" + (f": {reason}" if reason else ""))
        self.sw = sw


#: The command type handlers receive: ``ota.apdu.CommandApdu`` (``le`` is Ne: ``None`` when
#: the command has no Le field, else 1-256, an Le byte ``00`` meaning 256).
Command = CommandApdu
#: The answer type handlers return: ``ota.apdu.ResponseApdu`` (data, sw).
Response = ResponseApdu


def reply(data: bytes = b"", sw: int = SW.OK) -> ResponseApdu:
    """A response with data (default none) and status word (default 9000)."""
    return ResponseApdu(data, sw)


def parse_command(apdu: bytes) -> CommandApdu:
    """Parse command APDU bytes in short form (ISO/IEC 7816-3 §12.1.3); a card without
    extended length support answers anything else 6700, so this raises ``ApduError``."""
    return CommandApdu.from_short_bytes(apdu)


class ApduHandler(Protocol):
    """An applet or card service the dispatcher routes commands to.

    ``commands()`` names the (class group, INS) pairs it handles; ``handle`` answers one
    command (raising :class:`CardError` for an error status word); ``reset`` is called at
    power on and warm reset to drop volatile state (selection, sessions).
    """

    def commands(self) -> Iterable[tuple[ClassGroup, int]]:
        """The (class group, INS) pairs this handler answers."""
        ...

    def handle(self, command: Command) -> Response:
        """Answer one command."""
        ...

    def reset(self) -> None:
        """Forget volatile state (power on, warm reset)."""
        ...


class DispatchError(ValueError):
    """A handler registration conflicts with one already registered."""


@dataclass(slots=True)
class Dispatcher:
    """Routes command APDUs to registered handlers; see the module docstring."""

    _routes: dict[tuple[ClassGroup, int], ApduHandler] = field(default_factory=dict, repr=False)
    _handlers: list[ApduHandler] = field(default_factory=list)
    _pending: bytes | None = field(default=None, repr=False)
    #: The last exception a handler raised other than CardError (kept for debugging).
    last_fault: BaseException | None = None

    def register(self, handler: ApduHandler, *, replace: bool = False) -> None:
        """Route the handler's (class group, INS) pairs to it.

        A pair already routed to another handler raises :class:`DispatchError` unless
        ``replace`` is true. GET RESPONSE belongs to the dispatcher and cannot be taken.
        """
        pairs = list(handler.commands())
        for group, ins in pairs:
            if not 0 <= ins <= 0xFF:
                raise DispatchError(f"INS {ins!r} out of range")
            if ins == INS_GET_RESPONSE and group is ClassGroup.INTERINDUSTRY:
                raise DispatchError("GET RESPONSE is handled by the dispatcher")
            other = self._routes.get((group, ins))
            if other is not None and other is not handler and not replace:
                raise DispatchError(f"INS {ins:02X} ({group.value}) is already routed")
        for pair in pairs:
            self._routes[pair] = handler
        if all(h is not handler for h in self._handlers):
            self._handlers.append(handler)

    def reset(self) -> None:
        """Power on / warm reset: drop pending response data and reset every handler."""
        self._pending = None
        for handler in self._handlers:
            handler.reset()

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU: response data followed by SW1 SW2. Never raises."""
        try:
            return self._process(bytes(apdu)).to_bytes()
        except Exception as exc:  # a card answers 6F00 rather than dying
            self.last_fault = exc
            self._pending = None
            return reply(sw=SW.TECHNICAL_PROBLEM).to_bytes()

    def _process(self, apdu: bytes) -> Response:
        try:
            command = parse_command(apdu)
        except ApduError:
            self._pending = None
            return reply(sw=SW.WRONG_LENGTH)
        group = class_group(command.cla)
        if group is None:
            self._pending = None
            return reply(sw=SW.CLA_NOT_SUPPORTED)
        if logical_channel(command.cla) != 0:
            self._pending = None
            return reply(sw=SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
        if group is ClassGroup.INTERINDUSTRY and command.ins == INS_GET_RESPONSE:
            return self._get_response(command)
        self._pending = None
        handler = self._routes.get((group, command.ins))
        if handler is None:
            known = command.ins == INS_GET_RESPONSE or any(
                (g, command.ins) in self._routes for g in ClassGroup
            )
            sw = SW.CLA_NOT_SUPPORTED if known else SW.INS_NOT_SUPPORTED
            return reply(sw=sw)
        try:
            response = handler.handle(command)
        except CardError as exc:
            return reply(sw=exc.sw & 0xFFFF)
        return self._deliver(command, response)

    def _deliver(self, command: Command, response: Response) -> Response:
        """Apply T=0 response chaining to a handler's answer."""
        if not response.data:
            return response
        if command.le is None:
            if response.sw != SW.OK:
                # Warnings with data cannot be chained on T=0: the data is dropped.
                return reply(sw=response.sw)
            self._pending = response.data
            return reply(sw=(SW1_BYTES_AVAILABLE << 8) | (len(response.data) & 0xFF))
        if len(response.data) > command.le:
            self._pending = response.data[command.le :]
            rest = len(self._pending)
            return reply(response.data[: command.le], (SW1_BYTES_AVAILABLE << 8) | (rest & 0xFF))
        return response

    def _get_response(self, command: Command) -> Response:
        """GET RESPONSE (TS 102 221 §12.1.1): the data a previous ``61XX`` announced."""
        pending = self._pending
        if command.p1 != 0 or command.p2 != 0:
            return reply(sw=SW.INCORRECT_P1_P2)
        if command.data:
            return reply(sw=SW.WRONG_LENGTH)
        if pending is None:
            return reply(sw=SW.CONDITIONS_NOT_SATISFIED)
        le = command.le
        if le is None:
            return reply(sw=SW.WRONG_LENGTH)
        if le > len(pending):
            # More asked than available (Le '00' asks for 256): tell the exact length.
            return reply(sw=(SW1_WRONG_LE << 8) | len(pending))
        chunk, rest = pending[:le], pending[le:]
        if rest:
            self._pending = rest
            return reply(chunk, (SW1_BYTES_AVAILABLE << 8) | (len(rest) & 0xFF))
        self._pending = None
        return reply(chunk)
