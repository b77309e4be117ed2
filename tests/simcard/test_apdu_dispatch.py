"""Tests for simcard.apdu_dispatch: routing by class and INS, status words, T=0 chaining."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.apdu import CommandApdu
from simcard.apdu_dispatch import (
    SW,
    CardError,
    ClassGroup,
    Dispatcher,
    DispatchError,
    Response,
    class_group,
    logical_channel,
    reply,
)

ISO = ClassGroup.INTERINDUSTRY
PROP = ClassGroup.PROPRIETARY


class Echo:
    """A test applet: INS 10 (ISO) echoes the data; INS 20 (proprietary) answers a fixed
    payload; INS 30 raises CardError 6985; INS 40 crashes."""

    def __init__(self, payload: bytes = bytes(range(40))) -> None:
        self.payload = payload
        self.seen: list[CommandApdu] = []
        self.resets = 0

    def commands(self) -> Iterable[tuple[ClassGroup, int]]:
        return [(ISO, 0x10), (PROP, 0x20), (ISO, 0x30), (ISO, 0x40)]

    def handle(self, command: CommandApdu) -> Response:
        self.seen.append(command)
        if command.ins == 0x10:
            return reply(command.data)
        if command.ins == 0x20:
            return reply(self.payload)
        if command.ins == 0x30:
            raise CardError(SW.CONDITIONS_NOT_SATISFIED, "test")
        raise RuntimeError("applet bug")

    def reset(self) -> None:
        self.resets += 1


def make() -> tuple[Dispatcher, Echo]:
    d = Dispatcher()
    echo = Echo()
    d.register(echo)
    return d, echo


def sw_of(response: bytes) -> int:
    return int.from_bytes(response[-2:], "big")


def test_routes_by_class_group_and_ins() -> None:
    """A registered (group, INS) reaches its handler with the parsed command."""
    d, echo = make()
    assert d.process(bytes.fromhex("0010000003AABBCC03")) == bytes.fromhex("AABBCC9000")
    assert echo.seen[-1] == CommandApdu(0, 0x10, 0, 0, bytes.fromhex("AABBCC"), 3)


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("0011000000", 0x6D00),  # INS nobody handles
        ("8010000000", 0x6E00),  # known INS, wrong class group (TS 102 221 10.1.1)
        ("0020000000", 0x6E00),
        ("80C0000010", 0x6E00),  # GET RESPONSE is an ISO-class command
        ("A0A40000023F00", 0x6E00),  # GSM class 'A0' is not a UICC class
        ("FF10000000", 0x6E00),
        ("2010000000", 0x6E00),
        ("0110000000", 0x6881),  # logical channel 1
        ("4110000000", 0x6881),  # further interindustry: channel 5
        ("", 0x6700),
        ("001000", 0x6700),  # shorter than a header
        ("0010000005AABB", 0x6700),  # Lc inconsistent with the length
        ("00100000000001AA", 0x6700),  # extended length form is not supported
        ("0030000000", 0x6985),  # handler's CardError
        ("0040000000", 0x6F00),  # handler crash
    ],
)
def test_status_words_for_unroutable_or_failing_commands(apdu: str, sw: int) -> None:
    """Malformed or unroutable commands get the status word TS 102 221 10.2.1 assigns."""
    d, _ = make()
    assert d.process(bytes.fromhex(apdu)) == sw.to_bytes(2, "big")


def test_handler_crash_is_recorded() -> None:
    """A crashing handler answers 6F00 and leaves the exception for debugging."""
    d, _ = make()
    d.process(bytes.fromhex("0040000000"))
    assert isinstance(d.last_fault, RuntimeError)


def test_class_helpers() -> None:
    """Class groups and logical channels follow TS 102 221 table 10.3."""
    assert class_group(0x00) is ISO
    assert class_group(0x6F) is ISO
    assert class_group(0x80) is PROP
    assert class_group(0xE3) is PROP
    assert class_group(0xA0) is None
    assert logical_channel(0x03) == 3
    assert logical_channel(0x83) == 3
    assert logical_channel(0x40) == 4
    assert logical_channel(0x4F) == 19
    assert logical_channel(0xC1) == 5


def test_case3_with_data_answers_61xx_then_get_response() -> None:
    """Data for a command without Le waits for GET RESPONSE behind 61XX (T=0)."""
    d, echo = make()
    assert d.process(bytes.fromhex("80200000")) == bytes.fromhex("6128")
    assert d.process(bytes.fromhex("00C0000028")) == echo.payload + b"\x90\x00"
    # nothing left
    assert d.process(bytes.fromhex("00C0000001")) == bytes.fromhex("6985")


def test_get_response_wrong_le_gets_6cxx_and_data_survives() -> None:
    """GET RESPONSE asking too much gets 6CXX; the data is still there afterwards."""
    d, echo = make()
    d.process(bytes.fromhex("80200000"))
    assert d.process(bytes.fromhex("00C0000000")) == bytes.fromhex("6C28")
    assert d.process(bytes.fromhex("00C0000050")) == bytes.fromhex("6C28")
    assert d.process(bytes.fromhex("00C0000028")) == echo.payload + b"\x90\x00"


def test_get_response_in_chunks() -> None:
    """GET RESPONSE with a short Le hands out a chunk and 61XX for the rest."""
    d, echo = make()
    d.process(bytes.fromhex("80200000"))
    first = d.process(bytes.fromhex("00C0000010"))
    assert first == echo.payload[:16] + bytes.fromhex("6118")
    assert d.process(bytes.fromhex("00C0000018")) == echo.payload[16:] + b"\x90\x00"


def test_other_command_drops_pending_data() -> None:
    """Any other command discards the data a 61XX announced."""
    d, _ = make()
    d.process(bytes.fromhex("80200000"))
    d.process(bytes.fromhex("0011000000"))
    assert d.process(bytes.fromhex("00C0000028")) == bytes.fromhex("6985")


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [("00C0010028", 0x6A86), ("00C00000", 0x6700), ("00C0000001AA", 0x6700)],
)
def test_get_response_parameter_checks(apdu: str, sw: int) -> None:
    """GET RESPONSE needs P1-P2 0000, an Le and no data."""
    d, _ = make()
    d.process(bytes.fromhex("80200000"))
    assert d.process(bytes.fromhex(apdu)) == sw.to_bytes(2, "big")


def test_case4_answers_data_directly() -> None:
    """A command with Le gets its data at once; more than Le gives Le bytes and 61XX."""
    d, echo = make()
    assert d.process(bytes.fromhex("8020000000")) == echo.payload + b"\x90\x00"
    assert d.process(bytes.fromhex("8020000008")) == echo.payload[:8] + bytes.fromhex("6120")
    assert d.process(bytes.fromhex("00C0000020")) == echo.payload[8:] + b"\x90\x00"


def test_registration_conflicts() -> None:
    """A (group, INS) already routed elsewhere is refused unless replaced explicitly."""
    d, _ = make()
    other = Echo(b"\x01")
    with pytest.raises(DispatchError):
        d.register(other)
    d.register(other, replace=True)
    assert d.process(bytes.fromhex("8020000000")) == bytes.fromhex("019000")


def test_get_response_cannot_be_registered() -> None:
    """GET RESPONSE belongs to the dispatcher."""

    class Thief(Echo):
        def commands(self) -> Iterable[tuple[ClassGroup, int]]:
            return [(ISO, 0xC0)]

    with pytest.raises(DispatchError):
        Dispatcher().register(Thief())


def test_reset_resets_handlers_and_pending_data() -> None:
    """Reset (power on) calls every handler's reset once and forgets pending data."""
    d, echo = make()
    d.register(echo)  # registering twice keeps one handler
    d.process(bytes.fromhex("80200000"))
    d.reset()
    assert echo.resets == 1
    assert d.process(bytes.fromhex("00C0000028")) == bytes.fromhex("6985")


def test_card_error_message_shows_status_word() -> None:
    """CardError carries its status word and shows it in hex."""
    exc = CardError(0x6A82, "no such file")
    assert exc.sw == 0x6A82
    assert str(exc) == "6A82: no such file"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_answer_a_status_word(apdu: bytes) -> None:
    """Any input bytes get a response ending in a 2-byte status word; nothing raises."""
    d, _ = make()
    out = d.process(apdu)
    assert len(out) >= 2
    assert out[-2] in (0x90, 0x61, 0x62, 0x67, 0x68, 0x69, 0x6A, 0x6C, 0x6D, 0x6E, 0x6F)


@given(st.lists(st.binary(max_size=12), max_size=20))
def test_arbitrary_sequences_never_raise(apdus: list[bytes]) -> None:
    """A sequence of arbitrary commands, GET RESPONSEs included, never raises."""
    d, _ = make()
    for apdu in apdus:
        assert len(d.process(apdu)) >= 2
        assert len(d.process(b"\x00\xc0\x00\x00" + apdu[:1])) >= 2


@given(st.binary(min_size=1, max_size=255), st.integers(1, 256))
def test_chained_data_reassembles(data: bytes, chunk: int) -> None:
    """Data announced by 61XX comes back whole, whatever Le the terminal uses per chunk."""
    d, _ = make()
    first = d.process(bytes((0x00, 0x10, 0, 0, len(data))) + data)
    assert first == bytes((0x61, len(data)))
    got = b""
    while True:
        out = d.process(bytes((0x00, 0xC0, 0, 0, chunk & 0xFF)))
        sw = sw_of(out)
        if sw >> 8 == 0x6C:
            chunk = (sw & 0xFF) or 256
            continue
        got += out[:-2]
        if sw == 0x9000:
            break
        assert sw >> 8 == 0x61
    assert got == data


def test_repr_hides_pending_response_data() -> None:
    """Response data waiting for GET RESPONSE is not shown in the dispatcher's repr."""
    d, echo = make()
    d.process(bytes.fromhex("80200000"))
    assert echo.payload.hex() not in repr(d).lower()
    assert "Dispatcher" in repr(d)
