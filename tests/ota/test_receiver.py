"""The platform as receiving entity for cards' secured MO (ota/receiver.py): TS 102 225 §5.1
checks with each card's own keys, redelivery told from replay (docs/architecture.md, Money)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.errors import (
    BadChecksum,
    BadKey,
    CounterTooLow,
    InsufficientSecurity,
    OtaError,
    UnknownTar,
)
from ota.keystore import FileKeyStore, generate_keyset
from ota.receiver import MemoryHistory, SecuredMoReceiver
from ota.secured_packet import (
    CounterMode,
    Integrity,
    Keys,
    PorRequest,
    Spi,
    encode_command,
)

ICCID = "8986001234567890123"
OTHER = "8986001234567890131"
TAR = bytes.fromhex("5741C0")  # the platform's wallet TAR in these tests
SPI = Spi(counter=CounterMode.HIGHER, integrity=Integrity.CC, ciphered=True, por=PorRequest.NONE)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FileKeyStore:
    keys = FileKeyStore(tmp_path_factory.mktemp("keys") / "keys.json")
    generate_keyset(keys, "ota", 1)
    return keys


def keys_of(store: FileKeyStore, iccid: str) -> Keys:
    pair = store.card_keys(iccid, "ota").ota_keys()
    return Keys(kic=pair.kic, kid=pair.kid)


def packet(store: FileKeyStore, counter: int, data: bytes = b"\x01", **kw: object) -> bytes:
    args: dict[str, object] = {
        "spi": SPI,
        "kic": 0x12,
        "kid": 0x12,
        "tar": TAR,
        "counter": counter,
        "data": data,
        "keys": keys_of(store, ICCID),
    }
    args.update(kw)
    return encode_command(**args)  # type: ignore[arg-type]


def receiver(store: FileKeyStore, **kw: int) -> SecuredMoReceiver:
    return SecuredMoReceiver(store, MemoryHistory(**kw), tars=[TAR])


def test_accepted_then_redelivered_then_replayed(store: FileKeyStore) -> None:
    """A new counter is accepted; the same packet again is a redelivery (accepted, marked);
    the same counter with other content is a replay (02); a lower counter too."""
    rx = receiver(store)
    first = rx.receive(ICCID, packet(store, 10, b"top-up 100"))
    assert not first.redelivered and first.command.data == b"top-up 100"
    again = rx.receive(ICCID, packet(store, 10, b"top-up 100"))
    assert again.redelivered and again.command.counter == 10
    with pytest.raises(CounterTooLow):
        rx.receive(ICCID, packet(store, 10, b"top-up 500"))
    with pytest.raises(CounterTooLow):
        rx.receive(ICCID, packet(store, 9, b"anything"))
    assert not rx.receive(ICCID, packet(store, 11)).redelivered


def test_out_of_order_within_the_window_is_a_replay_unless_identical(
    store: FileKeyStore,
) -> None:
    """Counters must rise: a packet with a lower, unseen counter is refused even if it was
    merely delayed (the card never sends one after a higher); older remembered ones can
    still be recognised as redeliveries until they leave the window."""
    rx = receiver(store, window=2)
    packets = {n: packet(store, n, bytes([n])) for n in (1, 2, 3)}
    for n in (1, 2, 3):
        rx.receive(ICCID, packets[n])
    assert rx.receive(ICCID, packets[2]).redelivered
    with pytest.raises(CounterTooLow):  # 1 has left the window of 2
        rx.receive(ICCID, packets[1])


def test_each_card_is_checked_with_its_own_keys(store: FileKeyStore) -> None:
    """One card, one key: card A's packet claimed for card B fails its CC; counters are per
    card."""
    rx = receiver(store)
    with pytest.raises(BadChecksum):
        rx.receive(OTHER, packet(store, 1))
    rx.receive(ICCID, packet(store, 5))
    other = packet(store, 1, keys=keys_of(store, OTHER))
    assert not rx.receive(OTHER, other).redelivered


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"tar": b"\x00\x00\x01"}, UnknownTar),
        ({"spi": dataclasses.replace(SPI, ciphered=False)}, InsufficientSecurity),
        (
            {"spi": dataclasses.replace(SPI, integrity=Integrity.RC), "kid": 0x15},
            InsufficientSecurity,
        ),
        ({"spi": dataclasses.replace(SPI, counter=CounterMode.NONE)}, InsufficientSecurity),
        ({"kic": 0x22, "kid": 0x22}, BadKey),
    ],
    ids=["unknown-tar", "unciphered", "rc-only", "no-counter", "unknown-key-version"],
)
def test_refusals(store: FileKeyStore, kwargs: dict[str, object], error: type) -> None:
    """Each refusal names its TS 102 225 status class and remembers nothing."""
    rx = receiver(store)
    with pytest.raises(error):
        rx.receive(ICCID, packet(store, 3, **kwargs))
    assert not rx.receive(ICCID, packet(store, 3)).redelivered


def test_unknown_card_is_refused(store: FileKeyStore, tmp_path: Path) -> None:
    """A card with no key set in the store: BadKey, not a crash."""
    empty = SecuredMoReceiver(FileKeyStore(tmp_path / "none.json"), MemoryHistory(), tars=[TAR])
    with pytest.raises(BadKey):
        empty.receive(ICCID, packet(store, 1))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_ota_errors(data: bytes) -> None:
    """Any octets: an OtaError (status known), never another exception."""
    rx = SecuredMoReceiver(FileKeyStore("/nonexistent/keys.json"), MemoryHistory(), tars=[TAR])
    with pytest.raises(OtaError):
        rx.receive(ICCID, data)


@given(st.lists(st.tuples(st.integers(1, 12), st.sampled_from([b"a", b"b"])), max_size=30))
def test_history_matches_a_simple_model(events: list[tuple[int, bytes]]) -> None:
    """MemoryHistory against a model: accept above the highest, recognise a remembered
    counter by its digest, refuse the rest."""
    history = MemoryHistory(window=4)
    seen: dict[int, bytes] = {}
    for counter, digest in events:
        remembered = sorted(seen)[-4:]
        try:
            known = history.record(("c", "ota"), counter, digest)
        except CounterTooLow:
            assert counter not in remembered and seen and counter <= max(seen)
            continue
        if counter in remembered:
            assert known == seen[counter]
        else:
            assert known is None and (not seen or counter > max(seen))
            seen[counter] = digest


def test_a_key_file_replaced_by_another_process_is_used_at_once(tmp_path: Path) -> None:
    """The receiver keeps no card keys of its own: when another process replaces the key file
    with other masters under the same version, the next MO is checked with the card's new
    keys, and a packet made with the old ones fails its CC."""
    path = tmp_path / "keys.json"
    store = FileKeyStore(path)
    generate_keyset(store, "ota", 1)
    rx = receiver(store)
    old = keys_of(store, ICCID)
    assert rx.receive(ICCID, packet(store, 1)).command.counter == 1
    other = tmp_path / "other" / "keys.json"
    generate_keyset(FileKeyStore(other), "ota", 1)
    other.replace(path)  # the `stkpay keys` CLI rewriting the file, in effect
    assert keys_of(store, ICCID) != old
    assert rx.receive(ICCID, packet(store, 2)).command.counter == 2
    with pytest.raises(BadChecksum):
        rx.receive(ICCID, packet(store, 3, keys=old))
