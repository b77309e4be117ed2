"""The platform as a receiving entity: secured packets a card sends (its wallet applet's MO,
its calibration SMS), checked as ETSI TS 102 225 §5.1 has a receiver check them.

A card's applet sends a command packet (3GPP TS 31.115 §4.2 coding, UDH IEI 0x70) to the
platform's short code. :class:`SecuredMoReceiver` (sans-IO apart from its store):

1. reads the header (else *unidentified security error*);
2. accepts only the platform's own TARs (else *TAR unknown*);
3. takes the card's keys of the key set version named by KIc/KID (else 06);
4. demands the minimum security level: CC, ciphering, counter must be higher (else 0A);
5. verifies the CC and deciphers (else 01 / 05);
6. judges the counter against what the card used before, per card and key set:

   * higher than any seen: accepted, and remembered with a digest of the packet;
   * a counter already used **with the same packet**: an SMSC redelivering the MO (a lost
     deliver_sm_resp): accepted as a *redelivery*, so that the caller answers with its stored
     first reply and posts nothing (docs/architecture.md, "Money");
   * a counter already used with other content, or one below the remembered window: a replay,
     refused with *counter too low* (02).

The store (:class:`CounterHistory`) remembers the last ``window`` counters of each card with
their digests. :class:`MemoryHistory` is the embedded default; the ledger keeps its own in the
same transaction as the money (the wallet issue).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ota.errors import BadKey, CounterTooLow, InsufficientSecurity, UnknownTar
from ota.keys import KeysError
from ota.keystore import KeyStore, KeyStoreError
from ota.secured_packet import (
    CommandPacket,
    CounterMode,
    Integrity,
    Keys,
    decode_command,
    decode_command_header,
    shared_keys,
)

__all__ = [
    "CounterHistory",
    "MemoryHistory",
    "ReceivedPacket",
    "SecuredMoReceiver",
]


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    """A verified packet from a card: the decoded command, and whether it is a redelivery
    of one already accepted (same ICCID, key set, counter and octets)."""

    iccid: str
    command: CommandPacket
    redelivered: bool


class CounterHistory(Protocol):
    """What a receiver remembers per card and key set: recent counters and packet digests."""

    def record(self, key: tuple[str, str], counter: int, digest: bytes) -> bytes | None:
        """Atomically: if ``counter`` is known, return its digest (nothing changes); if it is
        above every known one, store it and return None; otherwise (a lower counter that is
        not remembered) raise :class:`~ota.errors.CounterTooLow`."""
        ...


class MemoryHistory:
    """In-process :class:`CounterHistory`: the last ``window`` counters per card (bounded to
    ``max_cards`` cards, least recently used dropped; a dropped card's next packet is judged
    on its counter alone, which only ever admits a higher counter)."""

    def __init__(self, *, window: int = 32, max_cards: int = 100_000) -> None:
        if window <= 0 or max_cards <= 0:
            raise ValueError("window and max_cards must be > 0")
        self._window = window
        self._max_cards = max_cards
        self._cards: OrderedDict[tuple[str, str], OrderedDict[int, bytes]] = OrderedDict()
        self._floor: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryHistory({len(self._cards)} cards)"

    def record(self, key: tuple[str, str], counter: int, digest: bytes) -> bytes | None:
        with self._lock:
            seen = self._cards.get(key)
            if seen is None:
                seen = self._cards[key] = OrderedDict()
                if len(self._cards) > self._max_cards:
                    old, _ = self._cards.popitem(last=False)
                    self._floor.pop(old, None)
            else:
                self._cards.move_to_end(key)
            known = seen.get(counter)
            if known is not None:
                return known
            highest = next(reversed(seen)) if seen else self._floor.get(key, -1)
            if counter <= highest:
                raise CounterTooLow(f"counter {counter} is not above {highest}", counter=counter)
            seen[counter] = digest
            while len(seen) > self._window:
                dropped, _ = seen.popitem(last=False)
                self._floor[key] = dropped
            return None


_STRENGTH = {Integrity.NONE: 0, Integrity.RC: 1, Integrity.CC: 2, Integrity.DS: 3}


class SecuredMoReceiver:
    """Verifies secured packets from cards with each card's own keys (see the module doc)."""

    def __init__(
        self,
        keystore: KeyStore,
        history: CounterHistory,
        *,
        tars: Iterable[bytes],
        keyset: str = "ota",
    ) -> None:
        self._keystore = keystore
        self._history = history
        self._tars = frozenset(bytes(t) for t in tars)
        self._keyset = keyset

    def __repr__(self) -> str:
        return f"SecuredMoReceiver({len(self._tars)} TARs, key set {self._keyset!r})"

    def _keys(self, iccid: str, version: int) -> Keys:
        try:
            card = self._keystore.card_keys(iccid, self._keyset, version or None)
            pair = card.ota_keys()
        except (KeyStoreError, KeysError) as exc:
            raise BadKey(f"no key set {self._keyset} v{version} for this card: {exc}") from None
        return shared_keys(pair.kic, pair.kid)

    def receive(self, iccid: str, packet: bytes) -> ReceivedPacket:
        """Verify ``packet`` (CPL to the end) from the card ``iccid``. Raises
        :class:`~ota.errors.OtaError` with the status a receiving entity reports."""
        header = decode_command_header(packet)
        if header.tar not in self._tars:
            raise UnknownTar(f"TAR {header.tar.hex().upper()} is not the platform's")
        spi = header.spi
        if (
            _STRENGTH[spi.integrity] < _STRENGTH[Integrity.CC]
            or not spi.ciphered
            or (spi.counter < CounterMode.HIGHER)
        ):
            raise InsufficientSecurity(
                f"SPI {spi.to_bytes().hex().upper()}: a card must send CC, ciphering and a"
                " counter that must be higher"
            )
        keys = self._keys(iccid, header.kic >> 4 or header.kid >> 4)
        command = decode_command(packet, keys)
        digest = hashlib.sha256(packet).digest()
        known = self._history.record((iccid, self._keyset), command.counter, digest)
        if known is None:
            return ReceivedPacket(iccid, command, False)
        if hmac.compare_digest(known, digest):
            return ReceivedPacket(iccid, command, True)
        raise CounterTooLow(
            f"counter {command.counter} was used before for another packet: a replay",
            counter=command.counter,
        )
