"""The wallet MO action format (stk_menus/wallet_mo.py): round trips, strict decoding, PIN
blocks (ISO 9564-1 format 2), and the vectors of docs/protocol.md rebuilt from the code."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.secured_packet import CounterMode, Integrity, Keys, Spi, decode_command, encode_command
from ota.smspp import command_user_data, parse_command_user_data
from stk_menus.wallet_mo import (
    PLATFORM_TAR,
    Balance,
    Calibration,
    Language,
    Last10,
    LoadProof,
    TopUp,
    WalletMoError,
    decode,
    encode,
    pin_block,
    pin_from_block,
)
from tests.docvectors import doc_vectors

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_pin_block_format_2() -> None:
    """ISO 9564-1 format 2: control 2, length, digits, F padding; malformed blocks refused."""
    assert pin_block("123456").hex().upper() == "26123456FFFFFFFF"
    assert pin_from_block(bytes.fromhex("26123456FFFFFFFF")) == "123456"
    for bad in ("16123456FFFFFFFF", "2612345AFFFFFFFF", "26123456FFFFFF0F", "23123FFFFFFFFFFF"):
        with pytest.raises(WalletMoError):
            pin_from_block(bytes.fromhex(bad))
    with pytest.raises(WalletMoError):
        pin_block("12a4")


def test_pin_never_in_repr() -> None:
    """A top-up's repr does not show the PIN block or the PIN."""
    topup = TopUp(
        amount=100, pin_block=pin_block("987654"), load_init=bytes(16), terminal_id=bytes(6)
    )
    assert "987654" not in repr(topup) and "98765" not in repr(topup)


actions = st.one_of(
    st.builds(
        TopUp,
        language=st.sampled_from(Language),
        online_counter=st.none() | st.integers(0, 0xFFFF),
        load_proof=st.none()
        | st.builds(
            LoadProof,
            st.integers(0, 0xFFFF),
            st.binary(min_size=4, max_size=4),
            st.binary(min_size=4, max_size=4),
        ),
        amount=st.integers(1, 2**32 - 1),
        pin_block=st.text("0123456789", min_size=4, max_size=12).map(pin_block),
        load_init=st.binary(min_size=16, max_size=16),
        terminal_id=st.binary(min_size=6, max_size=6),
    ),
    st.builds(Balance, st.sampled_from(Language), st.none() | st.integers(0, 0xFFFF)),
    st.builds(Last10, st.sampled_from(Language)),
    st.builds(
        Calibration,
        iccid=st.text("0123456789", min_size=19, max_size=20),
        imei=st.text("0123456789", min_size=15, max_size=15),
        applet_version=st.integers(0, 0xFFFF),
        profile=st.binary(max_size=32),
    ),
)


@given(actions)
def test_round_trip(action: TopUp | Balance | Last10 | Calibration) -> None:
    """decode(encode(x)) == x for every action."""
    assert decode(encode(action)) == action


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_only_wallet_mo_error(data: bytes) -> None:
    """Any octets decode or raise WalletMoError, nothing else."""
    with contextlib.suppress(WalletMoError):
        decode(data)


@pytest.mark.parametrize(
    ("hexdata", "why"),
    [
        ("", "format version"),
        ("02800102", "format version"),
        ("01800102800102", "twice"),
        ("01800109", "unknown action"),
        ("0180010299020000", "unknown tag"),
        ("01800101", "missing"),
        ("01", "tag 80 missing"),  # no action at all (found by the property test)
        ("018001028103000000", "expected"),
        ("0180010281", "truncated"),
        ("01800102810400", "runs past"),
        ("0180010281040000000A", "does not belong"),
        ("018001028501" + "02", "unknown language"),
        ("0180010288080000000000000000", "tag 88 does not belong to action BALANCE"),
    ],
)
def test_malformed_is_refused(hexdata: str, why: str) -> None:
    """Each malformation is named."""
    with pytest.raises(WalletMoError, match=why):
        decode(bytes.fromhex(hexdata))


# -- the vectors of docs/protocol.md ----------------------------------------------------------

KEYS = Keys(kic=bytes(range(16)), kid=bytes(range(0x10, 0x20)))
SPI = Spi(counter=CounterMode.HIGHER, integrity=Integrity.CC, ciphered=True)
TOPUP = TopUp(
    amount=10_000,
    pin_block=pin_block("123456"),
    load_init=bytes.fromhex("00002710 0003 01 00 11223344 2988AE5A".replace(" ", "")),
    terminal_id=bytes.fromhex("001122334455"),
    online_counter=3,
)
CALIBRATION = Calibration(
    iccid="8986001234567890123",
    imei="356938035643809",
    applet_version=0x0100,
    profile=bytes.fromhex("01"),
)


def secured(action: TopUp | Calibration, counter: int) -> bytes:
    return encode_command(
        spi=SPI,
        kic=0x12,
        kid=0x12,
        tar=PLATFORM_TAR,
        counter=counter,
        data=encode(action),
        keys=KEYS,
    )


VECTORS = {
    "wallet-topup-data": lambda: encode(TOPUP),
    "wallet-topup-user-data": lambda: command_user_data(secured(TOPUP, 7), reference=0)[0],
    "wallet-balance-data": lambda: encode(Balance(online_counter=4)),
    "wallet-calibration-data": lambda: encode(CALIBRATION),
    "wallet-calibration-user-data": lambda: command_user_data(secured(CALIBRATION, 1), reference=0)[
        0
    ],
}


def _doc_vectors() -> dict[str, bytes]:
    return doc_vectors(DOC)


def test_doc_has_exactly_our_vectors() -> None:
    """docs/protocol.md shows each wallet vector built here, and no other."""
    assert sorted(_doc_vectors()) == sorted(VECTORS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_doc_vector(name: str) -> None:
    """The hex in docs/protocol.md is what the code builds, and it decodes back."""
    built = VECTORS[name]()
    assert _doc_vectors()[name] == built, built.hex().upper()
    if name.endswith("user-data"):
        command = decode_command(parse_command_user_data([built]), KEYS)
        assert command.tar == PLATFORM_TAR
        assert decode(command.data) in (TOPUP, CALIBRATION)
    else:
        decode(built)
