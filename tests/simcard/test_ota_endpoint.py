"""The card's OTA endpoint (simcard/ota_endpoint.py): the receiving entity's checks in the
order of ETSI TS 102 225 §5.1, each refusal answered with its status and moving nothing,
and compact remote commands (TS 102 226 §5.1) run on the card."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.apdu import CommandApdu
from ota.errors import ResponseStatus
from ota.remote_apdu import build_compact, parse_compact_response
from ota.secured_packet import (
    CounterMode,
    Integrity,
    Keys,
    PorRequest,
    PorTransport,
    Spi,
    decode_response,
    encode_command,
)
from simcard.card import CALIBRATION_PATH, VirtualCard
from simcard.ota_endpoint import MinimumSecurity, OtaEndpoint, TarPolicy

KEYS = Keys(kic=bytes(range(16)), kid=bytes(range(16, 32)))
OTHER = Keys(kic=bytes(16), kid=bytes(16))
TAR = bytes.fromhex("B00001")
KIC, KID = 0x12, 0x12  # AES-CBC / AES-CMAC, key set 1
SPI = Spi(
    counter=CounterMode.HIGHER,
    integrity=Integrity.CC,
    ciphered=True,
    por=PorRequest.ALWAYS,
    por_integrity=Integrity.CC,
    por_ciphered=True,
    por_transport=PorTransport.SUBMIT,
)
SELECT_CAL = [
    CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex(fid)) for fid in CALIBRATION_PATH.split("/")
]


def endpoint(card: VirtualCard | None = None, **kwargs: object) -> tuple[OtaEndpoint, VirtualCard]:
    card = card or VirtualCard("8986001234567890123")
    ep = OtaEndpoint(card.process, keys={1: KEYS}, tars={TAR: TarPolicy("RFM")}, **kwargs)  # type: ignore[arg-type]
    return ep, card


def packet(
    apdus: list[CommandApdu],
    counter: int,
    *,
    spi: Spi = SPI,
    tar: bytes = TAR,
    keys: Keys = KEYS,
    kic: int = KIC,
    kid: int = KID,
) -> bytes:
    return encode_command(
        spi=spi, kic=kic, kid=kid, tar=tar, counter=counter, data=build_compact(apdus), keys=keys
    )


def por(data: bytes, spi: Spi = SPI) -> tuple[ResponseStatus, int, bytes]:
    decoded = decode_response(data, spi=spi, kic=KIC, kid=KID, keys=KEYS)
    return decoded.status, decoded.counter, decoded.data


def test_script_runs_and_the_por_carries_the_last_response() -> None:
    """UPDATE then READ BINARY: both run, the file changes, the PoR verifies with the card's
    keys and carries the count and the last R-APDU."""
    ep, card = endpoint()
    apdus = [
        *SELECT_CAL,
        CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\xaa\xbb"),
        CommandApdu(0x00, 0xB0, 0x00, 0x00, le=2),
    ]
    outcome = ep.receive(packet(apdus, 5))
    assert outcome.status is ResponseStatus.POR_OK and outcome.executed == 5
    assert outcome.response is not None
    status, counter, data = por(outcome.response)
    assert (status, counter) == (ResponseStatus.POR_OK, 5)
    response = parse_compact_response(data)
    assert response.executed == 5 and response.last.data == b"\xaa\xbb"
    assert response.last.sw == 0x9000
    assert card.fs.read_binary(CALIBRATION_PATH)[:2] == b"\xaa\xbb"
    assert ep.last_counter(1) == 5


def test_script_stops_at_the_first_error() -> None:
    """A command ending in an error status word stops the script; the PoR reports how many
    ran and that status word."""
    ep, card = endpoint()
    apdus = [
        CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex("3F00")),
        CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex("1234")),  # not there: 6A82
        *SELECT_CAL,
        CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\x01"),
    ]
    before = card.fs.read_binary(CALIBRATION_PATH)
    outcome = ep.receive(packet(apdus, 1))
    assert outcome.response is not None
    response = parse_compact_response(por(outcome.response)[2])
    assert response.executed == 2 and response.last.sw == 0x6A82
    assert card.fs.read_binary(CALIBRATION_PATH) == before


def test_replay_is_refused_and_runs_nothing() -> None:
    """The same counter again (or a lower one) is answered 'counter too low' (02) with a PoR
    the platform can verify, and nothing runs."""
    ep, card = endpoint()
    write = [*SELECT_CAL, CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\x01")]
    assert ep.receive(packet(write, 7)).status is ResponseStatus.POR_OK
    again = [*SELECT_CAL, CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\x02")]
    for counter in (7, 6):
        outcome = ep.receive(packet(again, counter))
        assert outcome.status is ResponseStatus.COUNTER_LOW and outcome.executed == 0
        assert outcome.response is not None
        assert por(outcome.response)[:2] == (ResponseStatus.COUNTER_LOW, counter)
    assert card.fs.read_binary(CALIBRATION_PATH)[0] == 1
    assert ep.last_counter(1) == 7


@pytest.mark.parametrize(
    ("build", "status"),
    [
        (lambda: packet(SELECT_CAL, 9, keys=OTHER), ResponseStatus.RC_CC_DS_FAILED),
        (lambda: packet(SELECT_CAL, 9, tar=b"\x00\x00\x01"), ResponseStatus.TAR_UNKNOWN),
        (
            lambda: packet(SELECT_CAL, 9, kic=0x22, kid=0x22),
            ResponseStatus.UNIDENTIFIED_SECURITY_ERROR,
        ),
        (
            lambda: packet(SELECT_CAL, 9, spi=dataclasses.replace(SPI, ciphered=False)),
            ResponseStatus.INSUFFICIENT_SECURITY_LEVEL,
        ),
        (
            lambda: packet(SELECT_CAL, 9, spi=dataclasses.replace(SPI, counter=CounterMode.NONE)),
            ResponseStatus.INSUFFICIENT_SECURITY_LEVEL,
        ),
        (lambda: b"\x00\x05garbage", ResponseStatus.UNIDENTIFIED_SECURITY_ERROR),
    ],
    ids=["bad-cc", "unknown-tar", "unknown-key-version", "unciphered", "no-counter", "garbage"],
)
def test_refusals_move_nothing(build: object, status: ResponseStatus) -> None:
    """Each refusal has its TS 102 225 status; the counter and the files stay as they were."""
    ep, card = endpoint()
    assert ep.receive(packet(SELECT_CAL, 3)).status is ResponseStatus.POR_OK
    before = card.fs.read_binary(CALIBRATION_PATH)
    outcome = ep.receive(build())  # type: ignore[operator]
    assert outcome.status is status
    assert outcome.executed == 0 and outcome.error is not None
    assert ep.last_counter(1) == 3
    assert card.fs.read_binary(CALIBRATION_PATH) == before


def test_security_level_below_an_applications_minimum() -> None:
    """An application may accept an RC-only, unciphered packet when its MSL allows."""
    card = VirtualCard("8986001234567890123")
    relaxed = TarPolicy("open", MinimumSecurity(Integrity.RC, ciphered=False))
    ep = OtaEndpoint(card.process, keys={1: KEYS}, tars={TAR: relaxed})
    spi = Spi(counter=CounterMode.HIGHER, integrity=Integrity.RC, por=PorRequest.ALWAYS)
    data = packet(SELECT_CAL, 1, spi=spi, kic=0x10, kid=0x15)  # CRC-32 RC
    assert ep.receive(data).status is ResponseStatus.POR_OK


def test_no_por_when_none_is_asked() -> None:
    """SPI 'no PoR': the card runs the script and answers nothing."""
    ep, _ = endpoint()
    spi = dataclasses.replace(SPI, por=PorRequest.NONE)
    outcome = ep.receive(packet(SELECT_CAL, 1, spi=spi))
    assert outcome.status is ResponseStatus.POR_OK and outcome.response is None


def test_read_data_comes_back_in_the_por() -> None:
    """A READ BINARY at the end of the script: its data is in the PoR (EF ICCID here)."""
    card = VirtualCard("8986001234567890123")
    ep, _ = endpoint(card)
    read = [
        CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex("3F00")),
        CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex("2FE2")),
        CommandApdu(0x00, 0xB0, 0x00, 0x00, le=10),
    ]
    small = ep.receive(packet(read, 1))
    assert small.response is not None and len(small.response) <= 137
    assert parse_compact_response(por(small.response)[2]).last.data  # the ICCID came back


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    """Any octets: a refusal with a status, never an exception, the counter untouched."""
    ep, _ = endpoint()
    outcome = ep.receive(data)
    assert outcome.status is not ResponseStatus.POR_OK and outcome.error is not None
    assert ep.last_counter(1) is None
