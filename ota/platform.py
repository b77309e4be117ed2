"""The platform's side of remote card management: secured command packets out, proofs of
receipt in (ETSI TS 102 225 §5 as the Sending Entity, 3GPP TS 31.115 §4 over SMS).

:class:`OtaPlatform` (sans-IO) turns "run these APDUs on this card" into the SMS user data of
a command packet, secured with that card's own keys ("one card, one key", :mod:`ota.keys`)
and a counter drawn from the :class:`~ota.counters.CounterStore`, which persists it before
the packet exists (a crash never reuses one). It remembers what it sent, bounded, so that a
PoR coming back as an MO (UDH IEI 0x71, TS 31.115 §4.4) is matched to its command by the
card's MSISDN and the TAR, verified and deciphered with that command's SPI/KIc/KID and keys,
its counter checked against the command's, and its remote-APDU response decoded (TS 102 226
§5.1.2). A PoR that matches nothing, fails its checksum or names another counter is refused
with a precise :class:`~ota.errors.OtaError`; the pending command stays for the genuine PoR.

A PoR for a command this instance did not send (it was sent before a restart, or by another
gateway instance behind the same SMSC account) can still be verified when the caller names
the card: ``receive_por(msisdn, user_data, iccid=...)`` checks it with that card's current
keys and the profile's SPI/KIc/KID and returns it with ``matched=False``. Its counter then
names a command the caller must find in its own durable records (the wallet's loads, the
calibration store); the checksum under the card's own key is what authenticates it.

Default security (:data:`DEFAULT_PROFILE`): AES-CBC ciphering with an AES-CMAC cryptographic
checksum, counter must be higher, PoR always, by SMS-SUBMIT, itself checksummed and ciphered:
SPI ``16 39``, KIc ``x2``, KID ``x2`` (x = the key set version).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ota.apdu import CommandApdu
from ota.counters import CounterStore
from ota.errors import MalformedPacket, OtaError, ResponseStatus
from ota.keys import CardKeys, KeyAlgorithm
from ota.keystore import KeyStore
from ota.pboc import COMPACT_P3
from ota.remote_apdu import RemoteApduError, RemoteResponse, build_compact, parse_compact_response
from ota.secured_packet import (
    ChecksumAlgorithm,
    CipherAlgorithm,
    CounterMode,
    Integrity,
    Keys,
    Kic,
    Kid,
    PorRequest,
    PorTransport,
    ResponsePacket,
    Spi,
    decode_response,
    encode_command,
    shared_keys,
)
from ota.smspp import command_user_data, parse_response_user_data

__all__ = [
    "DEFAULT_PROFILE",
    "OtaPlatform",
    "OutgoingCommand",
    "PendingCommand",
    "PorResult",
    "SecurityProfile",
    "UnmatchedPor",
]


class UnmatchedPor(OtaError):  # noqa: N818 - an OtaError like the codec's
    """A response packet from a card with no command awaiting a PoR for that TAR."""


@dataclass(frozen=True, slots=True)
class SecurityProfile:
    """How the platform secures command packets: the SPI and the KIc/KID algorithms (their
    key version nibble is the key set version, filled in per card)."""

    spi: Spi
    cipher: CipherAlgorithm
    checksum: ChecksumAlgorithm
    keyset: str = "ota"

    def kic(self, version: int) -> int:
        """The KIc octet for key set ``version``."""
        return Kic(self.cipher, version).to_byte()

    def kid(self, version: int) -> int:
        """The KID octet for key set ``version``."""
        return Kid(self.checksum, version).to_byte()


DEFAULT_PROFILE = SecurityProfile(
    spi=Spi(
        counter=CounterMode.HIGHER,
        integrity=Integrity.CC,
        ciphered=True,
        por=PorRequest.ALWAYS,
        por_integrity=Integrity.CC,
        por_ciphered=True,
        por_transport=PorTransport.SUBMIT,
    ),
    cipher=CipherAlgorithm.AES_CBC,
    checksum=ChecksumAlgorithm.AES_CMAC,
)

_TDES_CIPHERS = (CipherAlgorithm.TDES_2KEY_CBC, CipherAlgorithm.TDES_3KEY_CBC)


@dataclass(frozen=True, slots=True)
class PendingCommand:
    """A command sent and awaiting its PoR (keys are not shown in the repr)."""

    msisdn: str
    iccid: str
    tar: bytes
    counter: int
    spi: Spi
    kic: int
    kid: int
    sent_at: float
    keys: Keys = field(repr=False)


@dataclass(frozen=True, slots=True)
class OutgoingCommand:
    """A command packet ready for the SMSC: its SMS user data (UDH included), one entry per
    short message, to be sent with TP-PID 0x7F and data coding 0xF6."""

    pending: PendingCommand
    packet: bytes
    user_data: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PorResult:
    """A verified proof of receipt: the command it answers, the card's response status and,
    when the card ran the script, its remote-APDU response."""

    command: PendingCommand
    status: ResponseStatus
    data: bytes
    response: RemoteResponse | None
    #: False: verified with the card's keys, not matched to a command this instance sent
    #: (``command`` is rebuilt from the PoR: its ``sent_at`` is NaN)
    matched: bool = True

    @property
    def ok(self) -> bool:
        """True when the card accepted the packet and the last APDU ended without error."""
        return (
            self.status is ResponseStatus.POR_OK
            and self.response is not None
            and self.response.last.sw >> 8 in (0x90, 0x91, 0x92)
        )


def _response_of(por: ResponsePacket) -> RemoteResponse | None:
    """The remote-APDU response of a PoR that ran the script (TS 102 226 §5.1.2), if any."""
    if por.status is not ResponseStatus.POR_OK:
        return None
    try:
        return parse_compact_response(por.data)
    except RemoteApduError:
        return None


class OtaPlatform:
    """Builds command packets for cards and matches their PoRs (sans-IO; time injected)."""

    def __init__(
        self,
        keystore: KeyStore,
        counters: CounterStore,
        *,
        clock: Callable[[], float],
        profile: SecurityProfile = DEFAULT_PROFILE,
        max_pending: int = 100_000,
    ) -> None:
        if max_pending <= 0:
            raise ValueError("max_pending must be > 0")
        self._keystore = keystore
        self._counters = counters
        self._clock = clock
        self.profile = profile
        self._max_pending = max_pending
        # Oldest first (eviction, expiry); and by card and TAR, so that a PoR looks only at
        # the commands sent to its sender. Both under ``_lock``: the gateway's workers share
        # one platform.
        self._pending: OrderedDict[tuple[str, bytes, int], PendingCommand] = OrderedDict()
        self._by_card: dict[tuple[str, bytes], dict[int, PendingCommand]] = {}
        self._lock = threading.Lock()
        self._reference = 0
        self.evicted = 0

    def __repr__(self) -> str:
        return f"OtaPlatform({len(self._pending)} pending)"

    @property
    def pending(self) -> int:
        """Commands awaiting a PoR."""
        return len(self._pending)

    def _card_keys(self, iccid: str, card: CardKeys | None = None) -> tuple[int, Keys]:
        """The version and OTA keys of the card's current keys of the profile's key set:
        ``card`` when it holds them (the caller looked them up for this card already), else
        from the key store."""
        if card is None or card.keyset != self.profile.keyset or card.iccid != iccid:
            card = self._keystore.card_keys(iccid, self.profile.keyset)
        pair = card.ota_keys()
        algorithm = card.get("kic").algorithm
        if (algorithm is KeyAlgorithm.AES) != (self.profile.cipher is CipherAlgorithm.AES_CBC):
            wanted = self.profile.cipher.value
            raise ValueError(
                f"key set {self.profile.keyset!r} holds {algorithm} keys, not {wanted}"
            )
        if self.profile.cipher in _TDES_CIPHERS and algorithm is not KeyAlgorithm.TDES:
            raise ValueError(f"key set {self.profile.keyset!r} does not hold 3DES keys")
        return card.version, shared_keys(pair.kic, pair.kid)

    def command(
        self,
        *,
        iccid: str,
        msisdn: str,
        tar: bytes,
        apdus: Sequence[CommandApdu],
        card_keys: CardKeys | None = None,
    ) -> OutgoingCommand:
        """Secure ``apdus`` (a compact remote command, TS 102 226 §5.1.1) for the card
        ``iccid`` at ``msisdn``: the counter is persisted before this returns. ``card_keys``:
        the card's current keys of the profile's key set when the caller has just looked them
        up (saves a key store look-up; keys of another card or key set are not used)."""
        data = build_compact(apdus, overrides=COMPACT_P3)
        version, keys = self._card_keys(iccid, card_keys)
        profile = self.profile
        kic, kid = profile.kic(version), profile.kid(version)
        counter = self._counters.next(iccid, profile.keyset)
        packet = encode_command(
            spi=profile.spi, kic=kic, kid=kid, tar=tar, counter=counter, data=data, keys=keys
        )
        with self._lock:
            self._reference = reference = (self._reference + 1) & 0xFF
        user_data = tuple(command_user_data(packet, reference=reference))
        pending = PendingCommand(
            msisdn, iccid, bytes(tar), counter, profile.spi, kic, kid, self._clock(), keys
        )
        if profile.spi.por is not PorRequest.NONE:
            self._remember(pending)
        return OutgoingCommand(pending, packet, user_data)

    def _remember(self, pending: PendingCommand) -> None:
        with self._lock:
            self._pending[(pending.msisdn, pending.tar, pending.counter)] = pending
            self._by_card.setdefault((pending.msisdn, pending.tar), {})[pending.counter] = pending
            while len(self._pending) > self._max_pending:
                _, old = self._pending.popitem(last=False)
                self._unindex(old)
                self.evicted += 1

    def _unindex(self, pending: PendingCommand) -> None:
        card = (pending.msisdn, pending.tar)
        commands = self._by_card.get(card)
        if commands is not None:
            commands.pop(pending.counter, None)
            if not commands:
                del self._by_card[card]

    def _claim(self, msisdn: str, tar: bytes, counter: int) -> PendingCommand | None:
        """Remove and return the command ``(msisdn, tar, counter)``, if still pending."""
        with self._lock:
            pending = self._pending.pop((msisdn, tar, counter), None)
            if pending is not None:
                self._unindex(pending)
            return pending

    def receive_por(self, msisdn: str, user_data: bytes, *, iccid: str | None = None) -> PorResult:
        """Verify a PoR received as SMS user data (UDH with IEI 0x71 included) from
        ``msisdn``. Raises :class:`OtaError` (:class:`UnmatchedPor`, a bad checksum, a
        malformed packet); a refused PoR leaves the pending command in place. With ``iccid``
        (the card at ``msisdn``), a PoR no pending command claims is verified with that
        card's keys instead (``matched=False``, see the module docstring)."""
        packet = parse_response_user_data(user_data)
        if len(packet) < 6:
            raise MalformedPacket(f"response packet of {len(packet)} octets is too short")
        tar = bytes(packet[3:6])
        with self._lock:
            candidates = list(self._by_card.get((msisdn, tar), {}).values())
        try:
            return self._match(msisdn, tar, packet, candidates)
        except UnmatchedPor:
            if iccid is None:
                raise
        return self._unmatched(msisdn, iccid, tar, packet)

    def _unmatched(self, msisdn: str, iccid: str, tar: bytes, packet: bytes) -> PorResult:
        """A PoR verified with the card's current keys and the profile's security."""
        version, keys = self._card_keys(iccid)
        profile = self.profile
        kic, kid = profile.kic(version), profile.kid(version)
        por = decode_response(packet, spi=profile.spi, kic=kic, kid=kid, keys=keys)
        command = PendingCommand(
            msisdn, iccid, tar, por.counter, profile.spi, kic, kid, math.nan, keys
        )
        return PorResult(command, por.status, por.data, _response_of(por), matched=False)

    def _match(
        self, msisdn: str, tar: bytes, packet: bytes, candidates: list[PendingCommand]
    ) -> PorResult:
        if not candidates:
            raise UnmatchedPor(f"no command to {msisdn} awaits a PoR for TAR {tar.hex().upper()}")
        error: OtaError | None = None
        for candidate in reversed(candidates):  # the newest first: the usual case
            try:
                por = decode_response(
                    packet,
                    spi=candidate.spi,
                    kic=candidate.kic,
                    kid=candidate.kid,
                    keys=candidate.keys,
                )
            except OtaError as exc:
                error = exc
                continue
            # The counter sits under the ciphering: it names the command answered.
            pending = self._claim(msisdn, tar, por.counter)
            if pending is None:
                error = UnmatchedPor(f"PoR counter {por.counter} matches no command")
                continue
            return PorResult(pending, por.status, por.data, _response_of(por))
        assert error is not None
        raise error

    def forget(self, msisdn: str, tar: bytes, counter: int) -> PendingCommand | None:
        """Stop waiting for the PoR of command ``counter`` to ``msisdn``'s ``tar`` (its
        purpose was served otherwise, e.g. another instance settled it); the command, if it
        was pending. A PoR for it later can still be verified with ``iccid``."""
        return self._claim(msisdn, bytes(tar), counter)

    def expire(self, older_than: float) -> list[PendingCommand]:
        """Forget commands sent before ``older_than`` whose PoR never came; returns them."""
        with self._lock:
            gone = [p for p in self._pending.values() if p.sent_at < older_than]
            for p in gone:
                del self._pending[(p.msisdn, p.tar, p.counter)]
                self._unindex(p)
        return gone
