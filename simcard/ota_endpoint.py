"""The card's OTA endpoint: the Receiving Entity of ETSI TS 102 225 §5 for remote management.

A command packet (what follows the UDH of an SMS-PP data download, 3GPP TS 31.115 §4.2) is
checked in the order of TS 102 225 §5.1 and TS 102 226 §5, each failure answered by the
response packet a card sends for it (:func:`ota.secured_packet.response_for_error`):

1. the header must parse (else *unidentified security error* 06, PoR in clear);
2. the TAR must belong to an application of this card (else *TAR unknown* 09);
3. the key set named by the key version of KIc/KID must exist on the card (else 06);
4. the SPI must reach the application's minimum security level (else *insufficient security
   level* 0A): integrity by cryptographic checksum, ciphering, counter checked;
5. the CC must verify and the data decipher (else 01 / 05), and only then
6. the counter is judged against the one the card holds for that key set (02 / 03 / 04),
   and stored. A packet failing 1-5 never moves the counter.

The secured data is a compact remote command (TS 102 226 §5.1.1; the purse's instructions
are known to the splitter, :data:`ota.pboc.COMPACT_P3`): its C-APDUs run in order on
the card until one ends with a status word other than '90 00', '91 XX', '92 XX' or '61 XX';
the PoR carries the compact response (§5.1.2): the number executed and the last R-APDU
(its data dropped, the status word kept, when the PoR would not fit one short message).

Sans-IO: bytes in, the response packet (or None) out. The handset that carries the SMS (and
sends the PoR by SMS-SUBMIT) lives in :mod:`simcard.handset`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ota.apdu import ApduError, ResponseApdu
from ota.errors import (
    BadKey,
    InsufficientSecurity,
    OtaError,
    ResponseStatus,
    UnknownTar,
)
from ota.pboc import COMPACT_P3
from ota.remote_apdu import RemoteApduError, build_compact_response, split_compact
from ota.secured_packet import (
    CommandHeader,
    CounterMode,
    Integrity,
    Keys,
    Spi,
    check_counter,
    decode_command,
    decode_command_header,
    encode_response,
    por_wanted,
    response_for_error,
)

__all__ = ["MinimumSecurity", "OtaEndpoint", "OtaOutcome", "TarPolicy"]

#: Status words after which the next command of a script still runs (TS 102 226 §5.1.1).
_CONTINUE_SW1: Final = frozenset({0x90, 0x91, 0x92, 0x61})
#: The largest response packet one SMS-SUBMIT carries after its UDH (02 71 00): a last
#: R-APDU whose data would not fit is answered with its status word alone.
_MAX_POR: Final = 140 - 3


#: The integrity mechanisms of an SPI, weakest first (TS 102 225 §5.1.1).
_STRENGTH: Final = {Integrity.NONE: 0, Integrity.RC: 1, Integrity.CC: 2, Integrity.DS: 3}


@dataclass(frozen=True, slots=True)
class MinimumSecurity:
    """The minimum security level an application demands of a command packet (the MSL of
    TS 102 226 §8.2.1.3.2.4, here as the three SPI properties it tests)."""

    integrity: Integrity = Integrity.CC
    ciphered: bool = True
    counter: CounterMode = CounterMode.HIGHER

    def met_by(self, spi: Spi) -> bool:
        """True when ``spi`` gives at least this level."""
        strength = _STRENGTH
        return (
            strength[spi.integrity] >= strength[self.integrity]
            and (spi.ciphered or not self.ciphered)
            and spi.counter >= self.counter
        )


@dataclass(frozen=True, slots=True)
class TarPolicy:
    """An application reachable over the air: its name and minimum security level."""

    name: str
    minimum: MinimumSecurity = field(default_factory=MinimumSecurity)


@dataclass(frozen=True, slots=True)
class OtaOutcome:
    """What one command packet did: ``status`` (the PoR's), the APDUs executed, the
    response packet to send (None when the SPI asks for none), the command's SPI (None when
    its header did not parse: it says how the PoR travels), and the error if refused."""

    status: ResponseStatus
    executed: int
    response: bytes | None
    error: OtaError | None = None
    spi: Spi | None = None


class OtaEndpoint:
    """Verifies command packets with the card's keys and counters, runs their APDUs on the
    card (``process``: C-APDU bytes in, R-APDU bytes out) and builds the PoR.

    ``keys`` maps the key version number of KIc/KID (b8-b5, 1..15) to the card's key pair;
    ``tars`` the TARs this card answers to. ``counters`` (key version -> last counter
    accepted) is the card's persistent state: pass the same mapping back after a restart.
    """

    def __init__(
        self,
        process: Callable[[bytes], bytes],
        *,
        keys: Mapping[int, Keys],
        tars: Mapping[bytes, TarPolicy],
        counters: dict[int, int] | None = None,
        counter_window: int | None = None,
    ) -> None:
        self._process = process
        self._keys = dict(keys)
        self._tars = dict(tars)
        self.counters: dict[int, int] = {} if counters is None else counters
        self._window = counter_window

    def __repr__(self) -> str:
        versions = sorted(self._keys)
        return f"OtaEndpoint(key versions {versions}, {len(self._tars)} TARs)"

    def last_counter(self, version: int) -> int | None:
        """The last counter accepted under key set ``version`` (None: none yet)."""
        return self.counters.get(version)

    def receive(self, packet: bytes) -> OtaOutcome:
        """Handle one command packet (CPL to the end) and say what to answer."""
        try:
            header = decode_command_header(packet)
        except OtaError as exc:
            return OtaOutcome(exc.status, 0, None, exc, None)
        keys: Keys | None = None
        try:
            if header.tar not in self._tars:
                raise UnknownTar(f"TAR {header.tar.hex().upper()} is not on this card")
            version = header.kic >> 4 if header.spi.ciphered else header.kid >> 4
            keys = self._keys.get(version)
            if keys is None:
                raise BadKey(f"no key set with version {version} on this card")
            if not self._tars[header.tar].minimum.met_by(header.spi):
                raise InsufficientSecurity(
                    f"SPI {header.spi.to_bytes().hex().upper()} is below the minimum security"
                    f" level of {self._tars[header.tar].name}",
                    counter=header.counter,
                )
            command = decode_command(packet, keys)
            check_counter(
                command.spi.counter,
                command.counter,
                self.counters.get(version),
                max_window=self._window,
            )
        except OtaError as exc:
            return self._refuse(exc, header, keys)
        if command.spi.counter is not CounterMode.NONE:
            self.counters[version] = command.counter
        executed, last = self._run(command.data)
        status = ResponseStatus.POR_OK
        response = None
        if por_wanted(command.spi, status):
            for result in (last, ResponseApdu(b"", last.sw)):
                response = encode_response(
                    spi=command.spi,
                    kic=command.kic,
                    kid=command.kid,
                    tar=command.tar,
                    counter=command.counter,
                    status=status,
                    data=build_compact_response(executed, result),
                    keys=keys,
                )
                if len(response) <= _MAX_POR:
                    break
        return OtaOutcome(status, executed, response, None, command.spi)

    def _refuse(self, error: OtaError, header: CommandHeader, keys: Keys | None) -> OtaOutcome:
        response = None
        if por_wanted(header.spi, error.status):
            response = response_for_error(error, header, keys)
        return OtaOutcome(error.status, 0, response, error, header.spi)

    def _run(self, data: bytes) -> tuple[int, ResponseApdu]:
        """Run a compact remote command; a script that cannot be split runs nothing and is
        answered with the card's '6700' (wrong length) for the first command."""
        try:
            apdus = split_compact(data, overrides=COMPACT_P3)
        except RemoteApduError:
            return 0, ResponseApdu(b"", 0x6700)
        executed = 0
        last = ResponseApdu(b"", 0x9000)
        for apdu in apdus:
            raw = self._process(apdu.to_bytes())
            try:
                last = ResponseApdu.from_bytes(raw)
            except ApduError:
                last = ResponseApdu(b"", 0x6F00)
            executed += 1
            if last.sw >> 8 not in _CONTINUE_SW1:
                break
        return executed, last
