"""Tests for simcard.vpcd: vsmartcard's vpcd framing, the card session and the socket adapter.

Protocol facts from frankmorgner/vsmartcard: virtualsmartcard/src/vpcd/vpcd.c
(sendToVICC/recvFromVICC: 2-byte big-endian length then payload) and
virtualsmartcard/src/vpicc/virtualsmartcard/VirtualSmartcard.py (VPCD_CTRL_OFF 0, _ON 1,
_RESET 2, _ATR 4; one-byte messages are controls, GET ATR is answered with the ATR).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simcard.card import ATR, VirtualCard
from simcard.vpcd import (
    ApduEvent,
    Control,
    ControlEvent,
    VpcdCardSession,
    VpcdDecoder,
    VpcdError,
    VpcdEvent,
    frame,
    parse_endpoint,
    serve_vpcd,
)

ICCID = "8988211000000430010"


def decode_all(chunks: list[bytes]) -> list[VpcdEvent | str]:
    """Feed chunks, collecting events and errors (as 'error') in order."""
    decoder = VpcdDecoder()
    out: list[VpcdEvent | str] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        while True:
            try:
                event = decoder.next_event()
            except VpcdError:
                out.append("error")
                continue
            if event is None:
                break
            out.append(event)
    return out


def test_frame_layout() -> None:
    """A message is a 2-byte big-endian length then the payload."""
    assert frame(b"\x04") == b"\x00\x01\x04"
    assert frame(b"\x00" * 0x1234)[:2] == b"\x12\x34"


def test_frame_refuses_empty_and_oversized() -> None:
    """Empty payloads (the driver reads them as a dead card) and > 65535 bytes are refused."""
    with pytest.raises(VpcdError):
        frame(b"")
    with pytest.raises(VpcdError):
        frame(b"\x00" * 0x10000)


def test_controls_and_apdus_decode() -> None:
    """One-byte messages are controls 0/1/2/4; longer ones are APDUs."""
    stream = b"".join(
        [
            frame(b"\x01"),
            frame(b"\x04"),
            frame(bytes.fromhex("00A40004023F00")),
            frame(b"\x02"),
            frame(b"\x00"),
        ]
    )
    assert decode_all([stream]) == [
        ControlEvent(Control.POWER_ON),
        ControlEvent(Control.GET_ATR),
        ApduEvent(bytes.fromhex("00A40004023F00")),
        ControlEvent(Control.RESET),
        ControlEvent(Control.POWER_OFF),
    ]


def test_partial_data_waits() -> None:
    """Half a length or half a payload yields no event until the rest arrives."""
    decoder = VpcdDecoder()
    decoder.receive_data(b"\x00")
    assert decoder.next_event() is None
    decoder.receive_data(b"\x05\x00\xa4")
    assert decoder.next_event() is None
    assert decoder.buffered == 4
    decoder.receive_data(b"\x00\x00\x00")
    assert decoder.next_event() == ApduEvent(bytes.fromhex("00A4000000"))
    assert decoder.buffered == 0


def test_undefined_frames_raise_and_decoding_goes_on() -> None:
    """An empty message or an unknown control raises VpcdError; the next frame still decodes."""
    stream = b"\x00\x00" + frame(b"\x03") + frame(b"\x04")
    assert decode_all([stream]) == ["error", "error", ControlEvent(Control.GET_ATR)]


def test_events_iterator() -> None:
    """events() yields every complete event buffered."""
    decoder = VpcdDecoder()
    decoder.receive_data(frame(b"\x01") + frame(b"\x04") + b"\x00")
    assert list(decoder.events()) == [
        ControlEvent(Control.POWER_ON),
        ControlEvent(Control.GET_ATR),
    ]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_whole_or_bytewise_agree(data: bytes) -> None:
    """Arbitrary bytes give the same events and errors whole or one byte at a time,
    and nothing but VpcdError is ever raised."""
    whole = decode_all([data])
    bytewise = decode_all([data[i : i + 1] for i in range(len(data))])
    assert whole == bytewise


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=10))
def test_frame_decode_round_trip(payloads: list[bytes]) -> None:
    """Framed payloads decode back to themselves (as controls or APDUs)."""
    payloads = [p for p in payloads if len(p) > 1 or p[0] in (0, 1, 2, 4)]
    events = decode_all([b"".join(frame(p) for p in payloads)])
    back = [
        bytes((e.control,)) if isinstance(e, ControlEvent) else e.apdu
        for e in events
        if not isinstance(e, str)
    ]
    assert back == payloads


def test_session_answers_atr_and_apdus_and_nothing_for_power() -> None:
    """GET ATR -> ATR, APDU -> response APDU, power on/off/reset -> no answer."""
    card = VirtualCard(ICCID)
    session = VpcdCardSession(card)
    assert session.receive_data(frame(b"\x01")) == b""
    assert session.receive_data(frame(b"\x04")) == frame(ATR)
    answer = session.receive_data(frame(bytes.fromhex("00A4000C022FE2")))
    assert answer == frame(b"\x90\x00")
    assert session.receive_data(frame(b"\x00")) == b""
    assert not card.powered
    assert session.receive_data(frame(b"\x02")) == b""
    assert card.powered


def test_session_answers_several_messages_in_one_read() -> None:
    """Several frames in one read give all the answers in order."""
    session = VpcdCardSession(VirtualCard(ICCID))
    stream = (
        frame(b"\x04") + frame(bytes.fromhex("00A4000C022FE2")) + frame(bytes.fromhex("00B000000A"))
    )
    expected = frame(ATR) + frame(b"\x90\x00") + frame(bytes.fromhex("988812010000400310f09000"))
    assert session.receive_data(stream) == expected


def test_session_ignores_undefined_frames() -> None:
    """Undefined frames are skipped (as vsmartcard's vpicc does) and counted."""
    session = VpcdCardSession(VirtualCard(ICCID))
    assert session.receive_data(b"\x00\x00" + frame(b"\x07") + frame(b"\x04")) == frame(ATR)
    assert session.ignored == 2


class MuteCard(VirtualCard):
    """A card model answering nothing: the session must still send a status word."""

    __slots__ = ()

    def process(self, apdu: bytes) -> bytes:
        return b""


def test_session_never_sends_an_empty_answer() -> None:
    """An empty card answer would read as a dead card to vpcd: 6F00 is sent instead."""
    session = VpcdCardSession(MuteCard(ICCID))
    assert session.receive_data(frame(bytes.fromhex("00A4000C022FE2"))) == frame(b"\x6f\x00")


@given(st.binary(max_size=120))
def test_session_survives_arbitrary_bytes(data: bytes) -> None:
    """The card session answers arbitrary input with well-formed frames, never raising."""
    session = VpcdCardSession(VirtualCard(ICCID))
    out = session.receive_data(data)
    events = decode_all([out])
    assert all(isinstance(e, ApduEvent) for e in events)  # every answer is >= 2 bytes


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("127.0.0.1:35963", ("127.0.0.1", 35963)),
        ("localhost:1", ("localhost", 1)),
        ("35964", ("127.0.0.1", 35964)),
        (":35964", ("127.0.0.1", 35964)),
        ("[::1]:35963", ("::1", 35963)),
    ],
)
def test_parse_endpoint(text: str, endpoint: tuple[str, int]) -> None:
    """HOST:PORT, :PORT and PORT are accepted."""
    assert parse_endpoint(text) == endpoint


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:65536", "host:x1"])
def test_parse_endpoint_refuses(text: str) -> None:
    """Missing, zero, too large or non-numeric ports are refused."""
    with pytest.raises(ValueError):
        parse_endpoint(text)


# --- the socket adapter against a stand-in vpcd driver ------------------------------------------


@pytest.fixture
def fake_vpcd() -> Iterator[socket.socket]:
    """A listening socket playing pcscd's vpcd driver."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    yield server
    server.close()


def recv_frame(conn: socket.socket) -> bytes:
    """Read one framed message (the test side of the protocol)."""
    header = b""
    while len(header) < 2:
        chunk = conn.recv(2 - len(header))
        assert chunk, "connection closed"
        header += chunk
    size = int.from_bytes(header, "big")
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        assert chunk, "connection closed"
        payload += chunk
    return payload


def test_serve_vpcd_serves_until_the_driver_closes(fake_vpcd: socket.socket) -> None:
    """serve_vpcd answers the driver's messages and returns when the driver hangs up."""
    card = VirtualCard(ICCID)
    port = fake_vpcd.getsockname()[1]
    thread = threading.Thread(target=serve_vpcd, args=(card, "127.0.0.1", port), daemon=True)
    thread.start()
    conn, _ = fake_vpcd.accept()
    with conn:
        conn.settimeout(10)
        conn.sendall(frame(b"\x01") + frame(b"\x04"))
        assert recv_frame(conn) == ATR
        conn.sendall(frame(bytes.fromhex("00A4000C022FE2")))
        assert recv_frame(conn) == b"\x90\x00"
        # an APDU split across two writes
        apdu = frame(bytes.fromhex("00B000000A"))
        conn.sendall(apdu[:3])
        conn.sendall(apdu[3:])
        assert recv_frame(conn) == bytes.fromhex("988812010000400310f09000")
    thread.join(10)
    assert not thread.is_alive()


def test_serve_vpcd_stops_on_event(fake_vpcd: socket.socket) -> None:
    """Setting the stop event ends serve_vpcd and closes its connection."""
    card = VirtualCard(ICCID)
    stop, connected = threading.Event(), threading.Event()
    port = fake_vpcd.getsockname()[1]
    thread = threading.Thread(
        target=serve_vpcd,
        args=(card, "127.0.0.1", port, stop),
        kwargs={"connected": connected},
        daemon=True,
    )
    thread.start()
    conn, _ = fake_vpcd.accept()
    with conn:
        conn.settimeout(10)
        assert connected.wait(10)
        conn.sendall(frame(b"\x04"))
        assert recv_frame(conn) == ATR
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        assert conn.recv(16) == b""  # the card side closed


def test_serve_vpcd_refused_connection_raises() -> None:
    """No driver listening: serve_vpcd raises OSError (the CLI turns it into a message)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        serve_vpcd(VirtualCard(ICCID), "127.0.0.1", port)
