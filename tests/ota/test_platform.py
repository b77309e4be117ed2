"""The platform's OTA side (ota/platform.py): command packets secured with each card's own
keys and a persisted counter, and PoRs matched, verified and decoded (TS 102 225 §5,
TS 31.115 §4, TS 102 226 §5.1.2)."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ota.apdu import CommandApdu, ResponseApdu
from ota.counters import open_counter_store
from ota.errors import BadChecksum, MalformedPacket, OtaError, ResponseStatus
from ota.keys import CardKeys
from ota.keystore import FileKeyStore, generate_keyset
from ota.platform import OtaPlatform, UnmatchedPor
from ota.remote_apdu import build_compact_response, split_compact
from ota.secured_packet import Keys, decode_command, encode_response
from ota.smspp import parse_command_user_data, response_user_data

ICCID_A = "8986001234567890123"
ICCID_B = "8986001234567890131"
TAR = bytes.fromhex("B00001")
SELECT_MF = CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex("3F00"))


@pytest.fixture
def platform(tmp_path: Path) -> OtaPlatform:
    store = FileKeyStore(tmp_path / "keys.json")
    generate_keyset(store, "ota", 1)
    counters = open_counter_store(f"sqlite:///{tmp_path / 'counters.db'}")
    ticks = itertools.count()
    return OtaPlatform(store, counters, clock=lambda: float(next(ticks)))


def card_keys(platform: OtaPlatform, iccid: str) -> Keys:
    pair = platform._keystore.card_keys(iccid, "ota").ota_keys()
    return Keys(kic=pair.kic, kid=pair.kid)


def answer(platform: OtaPlatform, iccid: str, packet: bytes, *, keys: Keys | None = None) -> bytes:
    """What the card sends back: a PoR OK with one executed command, SW 9000."""
    keys = keys or card_keys(platform, iccid)
    cmd = decode_command(packet, card_keys(platform, iccid))
    return response_user_data(
        encode_response(
            spi=cmd.spi,
            kic=cmd.kic,
            kid=cmd.kid,
            tar=cmd.tar,
            counter=cmd.counter,
            status=ResponseStatus.POR_OK,
            data=build_compact_response(1, ResponseApdu(b"", 0x9000)),
            keys=keys,
        )
    )


def test_each_card_gets_its_own_keys_and_increasing_counters(platform: OtaPlatform) -> None:
    """One card, one key: a packet for card A does not verify with card B's keys; counters
    rise per card; the user data reassembles to the packet and the APDUs come back."""
    a1 = platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    a2 = platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    b1 = platform.command(iccid=ICCID_B, msisdn="2", tar=TAR, apdus=[SELECT_MF])
    assert (a1.pending.counter, a2.pending.counter, b1.pending.counter) == (1, 2, 1)
    assert parse_command_user_data(a1.user_data) == a1.packet
    cmd = decode_command(a1.packet, card_keys(platform, ICCID_A))
    assert split_compact(cmd.data) == [SELECT_MF]
    with pytest.raises(BadChecksum):
        decode_command(a1.packet, card_keys(platform, ICCID_B))
    secret = card_keys(platform, ICCID_A)
    for shown in (repr(a1), repr(a1.pending), repr(platform)):
        assert secret.kic.hex() not in shown and secret.kid.hex() not in shown


def test_por_is_matched_verified_and_decoded(platform: OtaPlatform) -> None:
    """A PoR answers its command (found by MSISDN, TAR and the counter under the ciphering),
    out of order, and each is consumed once."""
    first = platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    second = platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    assert platform.pending == 2
    result = platform.receive_por("1", answer(platform, ICCID_A, first.packet))
    assert result.command.counter == first.pending.counter and result.ok
    assert result.response is not None and result.response.executed == 1
    result = platform.receive_por("1", answer(platform, ICCID_A, second.packet))
    assert result.command.counter == second.pending.counter
    assert platform.pending == 0
    with pytest.raises(UnmatchedPor):
        platform.receive_por("1", answer(platform, ICCID_A, first.packet))


def test_forged_or_stray_por_is_refused_and_the_command_stays(platform: OtaPlatform) -> None:
    """A PoR from another number, under other keys, or malformed is refused; the genuine
    PoR still matches afterwards."""
    out = platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    genuine = answer(platform, ICCID_A, out.packet)
    with pytest.raises(UnmatchedPor):
        platform.receive_por("2", genuine)
    forged = answer(platform, ICCID_A, out.packet, keys=card_keys(platform, ICCID_B))
    with pytest.raises(BadChecksum):
        platform.receive_por("1", forged)
    with pytest.raises(MalformedPacket):
        platform.receive_por("1", b"\x02\x71\x00\x00")
    tampered = bytearray(genuine)
    tampered[-1] ^= 1
    with pytest.raises(OtaError):  # a bad checksum, or padding that no longer adds up
        platform.receive_por("1", bytes(tampered))
    assert platform.pending == 1
    assert platform.receive_por("1", genuine).ok


def test_pending_commands_are_bounded_and_expire(tmp_path: Path) -> None:
    """The table of commands awaiting a PoR is bounded (oldest evicted, counted) and
    ``expire`` hands back those older than a time."""
    store = FileKeyStore(tmp_path / "keys.json")
    generate_keyset(store, "ota", 1)
    now = [0.0]
    platform = OtaPlatform(
        store,
        open_counter_store("sqlite://:memory:"),
        clock=lambda: now[0],
        max_pending=3,
    )
    for t in range(5):
        now[0] = float(t)
        platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    assert platform.pending == 3 and platform.evicted == 2
    gone = platform.expire(older_than=4.0)
    assert [p.counter for p in gone] == [3, 4]
    assert platform.pending == 1


def test_evicted_and_expired_commands_no_longer_match_a_por(tmp_path: Path) -> None:
    """The per-card index follows eviction and expiry: a PoR for a forgotten command is
    unmatched, the one still pending matches, and nothing of the card's is left after."""
    store = FileKeyStore(tmp_path / "keys.json")
    generate_keyset(store, "ota", 1)
    now = [0.0]
    platform = OtaPlatform(
        store, open_counter_store("sqlite://:memory:"), clock=lambda: now[0], max_pending=2
    )
    sent = []
    for t in range(3):
        now[0] = float(t)
        sent.append(platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF]))
    now[0] = 3.0
    other = platform.command(iccid=ICCID_B, msisdn="2", tar=TAR, apdus=[SELECT_MF])
    # Capacity 2: the first two of card A were evicted, oldest first.
    for gone in sent[:2]:
        with pytest.raises(UnmatchedPor):
            platform.receive_por("1", answer(platform, ICCID_A, gone.packet))
    assert platform.expire(older_than=2.5) == [sent[2].pending]
    with pytest.raises(UnmatchedPor):
        platform.receive_por("1", answer(platform, ICCID_A, sent[2].packet))
    assert platform.receive_por("2", answer(platform, ICCID_B, other.packet)).ok
    assert platform.pending == 0 and platform._by_card == {}


def test_workers_sharing_a_platform_match_every_por_once(platform: OtaPlatform) -> None:
    """Commands and PoRs of many cards from several threads at once (the gateway's workers):
    every PoR matches its own command exactly once and the table ends empty."""
    cards = [(f"89860012345678{i:05d}", str(1000 + i)) for i in range(16)]

    def one_card(card: tuple[str, str]) -> int:
        iccid, msisdn = card
        matched = 0
        for _ in range(5):
            out = platform.command(iccid=iccid, msisdn=msisdn, tar=TAR, apdus=[SELECT_MF])
            result = platform.receive_por(msisdn, answer(platform, iccid, out.packet))
            matched += result.command.counter == out.pending.counter
        return matched

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(one_card, cards)) == [5] * len(cards)
    assert platform.pending == 0


def test_counter_survives_a_restart(tmp_path: Path) -> None:
    """A new platform on the same counter store never reuses a counter."""
    store = FileKeyStore(tmp_path / "keys.json")
    generate_keyset(store, "ota", 1)
    url = f"sqlite:///{tmp_path / 'counters.db'}"
    first = OtaPlatform(store, open_counter_store(url), clock=lambda: 0.0)
    used = [
        first.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF]).pending.counter
        for _ in range(3)
    ]
    second = OtaPlatform(store, open_counter_store(url), clock=lambda: 0.0)
    after = second.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    assert after.pending.counter > max(used)


def test_por_of_a_command_sent_elsewhere_is_verified_with_the_cards_keys(tmp_path: Path) -> None:
    """A PoR for a command another instance sent (or this one before a restart): refused as
    unmatched without the card's ICCID; with it, verified with that card's keys and returned
    unmatched, carrying the counter under the ciphering. Another card's keys, a tampered PoR
    or the wrong card named are still refused."""
    store = FileKeyStore(tmp_path / "keys.json")
    generate_keyset(store, "ota", 1)
    url = f"sqlite:///{tmp_path / 'counters.db'}"
    sender = OtaPlatform(store, open_counter_store(url), clock=lambda: 0.0)
    other = OtaPlatform(store, open_counter_store(url), clock=lambda: 0.0)
    out = sender.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    genuine = answer(sender, ICCID_A, out.packet)
    with pytest.raises(UnmatchedPor):
        other.receive_por("1", genuine)
    result = other.receive_por("1", genuine, iccid=ICCID_A)
    assert not result.matched and result.ok
    assert (result.command.iccid, result.command.tar) == (ICCID_A, TAR)
    assert result.command.counter == out.pending.counter
    assert result.response is not None and result.response.last.sw == 0x9000
    with pytest.raises(BadChecksum):
        other.receive_por("1", genuine, iccid=ICCID_B)
    forged = answer(sender, ICCID_A, out.packet, keys=card_keys(sender, ICCID_B))
    with pytest.raises(BadChecksum):
        other.receive_por("1", forged, iccid=ICCID_A)
    tampered = bytearray(genuine)
    tampered[-1] ^= 1
    with pytest.raises(OtaError):
        other.receive_por("1", bytes(tampered), iccid=ICCID_A)
    # the sender still matches it to its own command, which it consumes
    assert sender.receive_por("1", genuine, iccid=ICCID_A).matched
    assert sender.pending == 0


class _CountingStore:
    """A key store that counts card-key look-ups (the rest is the wrapped store's)."""

    def __init__(self, store: FileKeyStore) -> None:
        self.store = store
        self.lookups = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def card_keys(self, iccid: str, keyset: str = "ota", version: int | None = None) -> CardKeys:
        self.lookups += 1
        return self.store.card_keys(iccid, keyset, version)


def test_command_uses_the_callers_card_keys_only_when_they_fit(tmp_path: Path) -> None:
    """Card keys the caller has just looked up secure the command without a second look-up;
    keys of another card or another key set are not used: the store is asked, and the packet
    verifies with the addressed card's keys."""
    store = FileKeyStore(tmp_path / "keys.json")
    generate_keyset(store, "ota", 1)
    generate_keyset(store, "spare", 1)
    counting = _CountingStore(store)
    counters = open_counter_store(f"sqlite:///{tmp_path / 'counters.db'}")
    platform = OtaPlatform(counting, counters, clock=lambda: 0.0)  # type: ignore[arg-type]
    own = store.card_keys(ICCID_A, "ota")
    out = platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF], card_keys=own)
    assert counting.lookups == 0
    assert split_compact(decode_command(out.packet, card_keys(platform, ICCID_A)).data) == [
        SELECT_MF
    ]
    for wrong in (store.card_keys(ICCID_B, "ota"), store.card_keys(ICCID_A, "spare")):
        before = counting.lookups
        out = platform.command(
            iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF], card_keys=wrong
        )
        assert counting.lookups == before + 1
        decode_command(out.packet, card_keys(platform, ICCID_A))


def test_a_key_set_rotated_by_another_process_secures_the_next_command(tmp_path: Path) -> None:
    """The platform keeps no card keys of its own: after another process adds version 2 of
    the key set to the key file, the next command is secured with the card's v2 keys (KIc
    and KID name key set 2) and no longer verifies with v1's."""
    path = tmp_path / "keys.json"
    store = FileKeyStore(path)
    generate_keyset(store, "ota", 1)
    platform = OtaPlatform(
        store, open_counter_store(f"sqlite:///{tmp_path / 'counters.db'}"), clock=lambda: 0.0
    )
    v1 = card_keys(platform, ICCID_A)
    first = platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    decode_command(first.packet, v1)
    generate_keyset(FileKeyStore(path), "ota", 2)  # the `stkpay keys` CLI, in effect
    second = platform.command(iccid=ICCID_A, msisdn="1", tar=TAR, apdus=[SELECT_MF])
    assert (second.packet[5] >> 4, second.packet[6] >> 4) == (2, 2)  # KIc, KID: key set 2
    assert card_keys(platform, ICCID_A) != v1
    decode_command(second.packet, card_keys(platform, ICCID_A))
    with pytest.raises(BadChecksum):
        decode_command(second.packet, v1)
