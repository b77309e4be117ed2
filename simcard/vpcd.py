"""The vpcd protocol: a virtual card served to pcscd's vpcd driver (vsmartcard).

vsmartcard's reader driver (``ifd-vpcd``) listens on TCP 127.0.0.1:35963 for slot 0 (35964
for slot 1, ...); the virtual card connects to it. Facts from vsmartcard's own sources
(repository frankmorgner/vsmartcard: ``virtualsmartcard/src/vpcd/vpcd.c`` functions
``sendToVICC``/``recvFromVICC``/``vicc_getatr``/``vicc_poweron``; and the reference card
``virtualsmartcard/src/vpicc/virtualsmartcard/VirtualSmartcard.py``, class ``VirtualICC``,
method ``run`` and the ``VPCD_CTRL_*`` constants):

* Every message, in both directions, is a 2-byte big-endian length followed by that many
  bytes.
* A 1-byte message from the driver is a control: 0 power off, 1 power on, 2 reset, 4 get
  ATR. The card answers GET ATR with the ATR and the other three with nothing.
* Any longer message is a command APDU, answered by the response APDU.
* The driver never sends an empty message (``vicc_transmit`` sends only when it has bytes)
  and treats an empty answer as a dead card, so the card never sends one. The driver asks
  for the ATR periodically to see whether the card is still there.

:class:`VpcdDecoder` is the sans-IO framing (bytes in, events out, :class:`VpcdError` for a
frame the protocol does not define); :class:`VpcdCardSession` turns events into calls on a
card and the bytes to send back; :func:`serve_vpcd` is the small blocking socket adapter.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Protocol

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 35963  # vpcd.h VPCDPORT: slot 0; slot n listens on 35963 + n
MAX_MESSAGE: Final = 0xFFFF
#: How often the blocking adapter looks at its stop event (it is not a protocol timer).
POLL_INTERVAL: Final = 0.1


class VpcdError(ValueError):
    """A frame the vpcd protocol does not define (the frame is consumed; the stream goes on)."""


class Control(IntEnum):
    """The one-byte controls (VirtualSmartcard.py ``VPCD_CTRL_*``)."""

    POWER_OFF = 0
    POWER_ON = 1
    RESET = 2
    GET_ATR = 4


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A control message from the driver."""

    control: Control


@dataclass(frozen=True, slots=True)
class ApduEvent:
    """A command APDU from the driver."""

    apdu: bytes


VpcdEvent = ControlEvent | ApduEvent


def frame(payload: bytes) -> bytes:
    """One message: 2-byte big-endian length, then the payload (1 to 65535 bytes)."""
    if not payload:
        raise VpcdError("a vpcd message cannot be empty")
    if len(payload) > MAX_MESSAGE:
        raise VpcdError(f"a vpcd message holds at most {MAX_MESSAGE} bytes, not {len(payload)}")
    return len(payload).to_bytes(2, "big") + payload


class VpcdDecoder:
    """Buffers received bytes and yields one :data:`VpcdEvent` per complete message."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the socket."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded."""
        return len(self._buffer)

    def next_event(self) -> VpcdEvent | None:
        """The next event, or ``None`` when more data is needed.

        Raises :class:`VpcdError` for an empty message or an unknown control byte, after
        consuming it: the framing itself cannot desynchronise, so decoding may go on.
        """
        if len(self._buffer) < 2:
            return None
        size = int.from_bytes(self._buffer[:2], "big")
        if len(self._buffer) < 2 + size:
            return None
        payload = bytes(self._buffer[2 : 2 + size])
        del self._buffer[: 2 + size]
        if size == 0:
            raise VpcdError("empty vpcd message")
        if size == 1:
            try:
                return ControlEvent(Control(payload[0]))
            except ValueError:
                raise VpcdError(f"unknown vpcd control {payload[0]}") from None
        return ApduEvent(payload)

    def events(self) -> Iterator[VpcdEvent]:
        """All complete events buffered so far (stops at the first :class:`VpcdError`)."""
        while (event := self.next_event()) is not None:
            yield event


class SmartCard(Protocol):
    """What the vpcd session needs from a card (:class:`simcard.card.VirtualCard` fits)."""

    @property
    def atr(self) -> bytes:
        """The answer to reset."""
        ...

    def power_on(self) -> None:
        """Cold reset."""
        ...

    def power_off(self) -> None:
        """Deactivation."""
        ...

    def reset(self) -> None:
        """Warm reset."""
        ...

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU."""
        ...


class VpcdCardSession:
    """Sans-IO card side: ``receive_data(bytes) -> bytes to send back``.

    Frames the protocol does not define are ignored, as vsmartcard's own virtual card does
    (``VirtualICC.run`` logs them and reads on); they are counted in :attr:`ignored`.
    """

    __slots__ = ("_decoder", "card", "ignored")

    def __init__(self, card: SmartCard) -> None:
        self.card = card
        self._decoder = VpcdDecoder()
        self.ignored = 0

    def receive_data(self, data: bytes) -> bytes:
        """Feed received bytes; return the framed answers to send (possibly empty)."""
        self._decoder.receive_data(data)
        out = bytearray()
        while True:
            try:
                event = self._decoder.next_event()
            except VpcdError:
                self.ignored += 1
                continue
            if event is None:
                return bytes(out)
            answer = self._answer(event)
            if answer:
                out += frame(answer)

    def _answer(self, event: VpcdEvent) -> bytes:
        if isinstance(event, ApduEvent):
            response = self.card.process(event.apdu)
            return response if response else b"\x6f\x00"
        control = event.control
        if control is Control.GET_ATR:
            return self.card.atr
        if control is Control.POWER_ON:
            self.card.power_on()
        elif control is Control.POWER_OFF:
            self.card.power_off()
        else:
            self.card.reset()
        return b""


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT``) as a (host, port) pair; raises ``ValueError``."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host, int(port_text)


def serve_vpcd(
    card: SmartCard,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    stop: threading.Event | None = None,
    *,
    connected: threading.Event | None = None,
) -> None:
    """Connect to pcscd's vpcd driver and serve ``card`` until ``stop`` is set or the
    driver closes the connection. Raises ``OSError`` if the connection cannot be made.

    ``connected`` (optional) is set once the TCP connection is up.
    """
    session = VpcdCardSession(card)
    with socket.create_connection((host, port), timeout=5.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(POLL_INTERVAL if stop is not None else None)
        if connected is not None:
            connected.set()
        while stop is None or not stop.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            answer = session.receive_data(data)
            if answer:
                try:
                    sock.sendall(answer)
                except OSError:
                    return
