"""Errors of the OTA secured-packet layer and the response status codes they map to.

ETSI TS 102 225 §5.1.2 (table 5, Response Status Codes) and 3GPP TS 31.115 §4.4 define the
one-octet status a Receiving Entity (the card) puts in its Response Packet (PoR). Every error a
received packet can cause is an :class:`OtaError` carrying the status the card answers with,
so ``ota.secured_packet.response_for_error`` can build that PoR from the error alone.

Two kinds of error, as in h11: :class:`OtaError` is the *peer* breaking the protocol (a bad
checksum, a replayed counter, a truncated packet) and always has a :attr:`OtaError.status`;
:class:`OtaUsageError` is the *caller* misusing the API (a 4-octet TAR, a counter above
2**40-1) and has none. Both are :class:`ValueError`. No message ever contains key material.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "BadChecksum",
    "BadKey",
    "CipheringError",
    "CounterBlocked",
    "CounterTooHigh",
    "CounterTooLow",
    "InsufficientSecurity",
    "MalformedPacket",
    "MalformedUserData",
    "OtaError",
    "OtaUsageError",
    "ResponseStatus",
    "UnknownTar",
    "UnsupportedAlgorithm",
]


class ResponseStatus(IntEnum):
    """Response Status Code octet (TS 102 225 §5.1.2 table 5; TS 31.115 §4.4 for 0B/0C)."""

    POR_OK = 0x00
    RC_CC_DS_FAILED = 0x01
    COUNTER_LOW = 0x02
    COUNTER_HIGH = 0x03
    COUNTER_BLOCKED = 0x04
    CIPHERING_ERROR = 0x05
    UNIDENTIFIED_SECURITY_ERROR = 0x06  # header not interpretable: PoR unciphered, no RC/CC/DS
    INSUFFICIENT_MEMORY = 0x07
    MORE_TIME = 0x08
    TAR_UNKNOWN = 0x09
    INSUFFICIENT_SECURITY_LEVEL = 0x0A
    RESPONSE_IN_SMS_SUBMIT = 0x0B  # TS 31.115: the actual response follows in an SMS-SUBMIT
    RESPONSE_IN_USSD = 0x0C  # TS 31.115: the actual response follows in USSD


class OtaUsageError(ValueError):
    """The caller passed an argument the codec cannot encode (never caused by a peer)."""


class OtaError(ValueError):
    """A received packet (or its user data) the Receiving Entity must refuse.

    ``status`` is the response status the card sends back for it; ``counter`` the command's
    counter when it was known at the point of failure (it is copied into the PoR).
    """

    status: ResponseStatus = ResponseStatus.UNIDENTIFIED_SECURITY_ERROR

    def __init__(self, message: str, *, counter: int | None = None) -> None:
        super().__init__(message)
        self.counter = counter


class MalformedPacket(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """Lengths, header or field codings that do not add up (status 06)."""


class MalformedUserData(MalformedPacket):
    """SMS user data that does not carry a well-formed (concatenated) secured packet."""


class UnsupportedAlgorithm(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """A KIc/KID coding that is RFU, implicit, proprietary or not implemented (status 06)."""


class BadKey(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """The key provided does not fit the algorithm the packet names (status 06)."""


class BadChecksum(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """The RC, CC or DS does not verify (status 01)."""

    status = ResponseStatus.RC_CC_DS_FAILED


class CounterTooLow(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """Replay: the counter is not above the one the card holds (status 02)."""

    status = ResponseStatus.COUNTER_LOW


class CounterTooHigh(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """The counter is further ahead than the card accepts (status 03)."""

    status = ResponseStatus.COUNTER_HIGH


class CounterBlocked(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """The card's counter has reached 2**40-1 and can go no higher (status 04)."""

    status = ResponseStatus.COUNTER_BLOCKED


class CipheringError(OtaError):
    """Deciphering failed: not whole blocks, or an impossible padding counter (status 05)."""

    status = ResponseStatus.CIPHERING_ERROR


class UnknownTar(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """No application or key set behind the TAR (status 09)."""

    status = ResponseStatus.TAR_UNKNOWN


class InsufficientSecurity(OtaError):  # noqa: N818 (API names fixed by issue 4)
    """The SPI asks for less security than the card's minimum security level (status 0A)."""

    status = ResponseStatus.INSUFFICIENT_SECURITY_LEVEL
