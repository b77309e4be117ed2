"""SMPP 3.4 binary codec (SMPP v3.4 Issue 1.2: §3.1-§3.2 PDU format, §4 PDU bodies,
§5.2 field definitions, §5.3 optional parameters).

``encode(pdu) -> bytes`` and ``decode(bytes) -> Pdu`` for every class of :mod:`smsc.pdu`.

Layout (§3.2): a 16-octet header ``command_length, command_id, command_status,
sequence_number`` (four big-endian 32-bit integers), the mandatory body, then TLVs
``tag(2) length(2) value`` (§3.2.4.1, §5.3.1).

Field rules (§3.1, §4 tables):

* C-Octet Strings end with a NUL; the §4 maxima include the NUL (``source_addr`` 21 means
  at most 20 characters). Text is latin-1 both ways: decoding never fails, whatever a
  peer sends; encoding a longer or non-latin-1 string raises :class:`ValueError` naming
  the field, never its value (it may be a password).
* ``schedule_delivery_time``, ``validity_period``, ``final_date`` (§7.1.1) are either
  empty or exactly 16 characters.
* ``short_message`` is preceded by ``sm_length`` (one octet); more than 254 octets is a
  :class:`ValueError` on encode (use the ``message_payload`` TLV, §5.3.2.32).
* TLVs are kept as ``dict[tag, value]`` in arrival order, known or not (a repeated tag
  keeps its last value). PDUs with a body but no ``tlvs`` field (e.g. ``submit_sm_resp``)
  tolerate well-formed trailing TLVs (an SMPP 5.0 SMSC may add some) and drop them.

Decoding is lenient where real SMSCs deviate harmlessly and strict about framing:

* C-Octet Strings longer than the §4 maxima are accepted (only encoding enforces them);
* a response with an empty body, or with a non-zero ``command_status`` and a body that
  does not parse, decodes to its defaults (§4.4.2: on error "the submit_sm_resp PDU body
  is not returned");
* ``command_length`` below 16 or above the limit is :data:`Status.ESME_RINVCMDLEN` and
  ``fatal`` (the stream cannot be resynchronised); an unknown ``command_id`` is
  :data:`Status.ESME_RINVCMDID` (§4.3.1: the generic_nack cases); a header-only PDU with
  a body is ``ESME_RINVCMDLEN``; a truncated body, a C-Octet String without its NUL, an
  ``sm_length`` or TLV length running past the body is ``ESME_RINVMSGLEN``; an invalid
  ``dest_flag`` in submit_multi (§4.5.1.1) is ``ESME_RINVDESTFLAG``.

:func:`decode` raises nothing but :class:`PduError`, for any input.

The hot PDUs (submit_sm, deliver_sm, their responses, header-only PDUs) have hand-written
encoders and decoders; the rest go through one table-driven path (:data:`_SPECS`), which
is also the validator that names the offending field when a fast encoder fails.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, cast

from smsc.pdu import (
    PDU_CLASSES,
    RESPONSE_BIT,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    Status,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    response_class,
)

__all__ = [
    "HEADER",
    "MAX_PDU_SIZE",
    "PduError",
    "decode",
    "decode_body",
    "encode",
]

HEADER: Final = struct.Struct(">IIII")
"""§3.2 header: command_length, command_id, command_status, sequence_number."""

MAX_PDU_SIZE: Final = 65536
"""Default upper bound on ``command_length`` accepted from a peer."""

_HEADER_NUL: Final = struct.Struct(">IIIIx")  # a header and an empty C-Octet String
_TLV: Final = struct.Struct(">HH")
_U32: Final = struct.Struct(">I")
_B2: Final = struct.Struct(">BB")
_B3: Final = struct.Struct(">BBB")
_B5: Final = struct.Struct(">BBBBB")
_NUL: Final = b"\0"
_MAX_SM: Final = 254
_TIME_LEN: Final = 16


class PduError(Exception):
    """The peer sent a bad PDU.

    Carries what to answer: :meth:`response` is a ``generic_nack`` for a bad header
    (§4.3.1: invalid command_length, unknown command_id) and the matching ``*_resp``
    with ``status`` for a known request whose body is bad. ``fatal`` means the stream
    cannot be resynchronised (the command_length itself is unusable).
    """

    status: int
    command_id: int
    sequence_number: int
    fatal: bool

    def __init__(
        self,
        status: int,
        command_id: int,
        sequence_number: int,
        detail: str,
        *,
        fatal: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.fatal = fatal

    @property
    def detail(self) -> str:
        """Human-readable reason (never contains field values)."""
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_pdu_error,
            (self.status, self.command_id, self.sequence_number, self.detail, self.fatal),
        )

    def response(self) -> Pdu:
        """The PDU to send back: generic_nack, or the request's ``*_resp`` with ``status``."""
        if not self.fatal and self.status != Status.ESME_RINVCMDID:
            cls = response_class(self.command_id)
            if cls is not None:
                return cls(sequence_number=self.sequence_number, command_status=self.status)
        return GenericNack(sequence_number=self.sequence_number, command_status=self.status)


def _rebuild_pdu_error(
    status: int, command_id: int, sequence_number: int, detail: str, fatal: bool
) -> PduError:
    return PduError(status, command_id, sequence_number, detail, fatal=fatal)


class _BodyError(Exception):
    """Internal: a body problem with a specific status; becomes a :class:`PduError`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


# -- field kinds and the per-class table (§4) --------------------------------------------

_CSTR: Final = 1  # C-Octet String, limit = max octets including the NUL
_TIME: Final = 2  # C-Octet String, empty or 16 characters (§7.1.1)
_U8: Final = 3  # Integer, 1 octet
_SM: Final = 4  # sm_length (1 octet) + short_message
_DESTS: Final = 5  # submit_multi number_of_dests + dest_address list (§4.5.1.1)
_UNSUCC: Final = 6  # submit_multi_resp no_unsuccess + unsuccess_sme list (§4.5.2.1)
_TLVS: Final = 7  # optional parameters to the end of the body (§3.2.4.1)

_Field = tuple[str, int, int]

_BIND: Final[tuple[_Field, ...]] = (
    ("system_id", _CSTR, 16),
    ("password", _CSTR, 9),
    ("system_type", _CSTR, 13),
    ("interface_version", _U8, 0),
    ("addr_ton", _U8, 0),
    ("addr_npi", _U8, 0),
    ("address_range", _CSTR, 41),
)
_BIND_RESP: Final[tuple[_Field, ...]] = (("system_id", _CSTR, 16), ("tlvs", _TLVS, 0))
_SHORT: Final[tuple[_Field, ...]] = (
    ("service_type", _CSTR, 6),
    ("source_addr_ton", _U8, 0),
    ("source_addr_npi", _U8, 0),
    ("source_addr", _CSTR, 21),
    ("dest_addr_ton", _U8, 0),
    ("dest_addr_npi", _U8, 0),
    ("destination_addr", _CSTR, 21),
    ("esm_class", _U8, 0),
    ("protocol_id", _U8, 0),
    ("priority_flag", _U8, 0),
    ("schedule_delivery_time", _TIME, 17),
    ("validity_period", _TIME, 17),
    ("registered_delivery", _U8, 0),
    ("replace_if_present_flag", _U8, 0),
    ("data_coding", _U8, 0),
    ("sm_default_msg_id", _U8, 0),
    ("short_message", _SM, 0),
    ("tlvs", _TLVS, 0),
)
_MESSAGE_ID: Final[tuple[_Field, ...]] = (("message_id", _CSTR, 65),)

_SPECS: Final[dict[type[Pdu], tuple[_Field, ...]]] = {
    # §4.1 bind operations
    BindTransmitter: _BIND,
    BindReceiver: _BIND,
    BindTransceiver: _BIND,
    BindTransmitterResp: _BIND_RESP,
    BindReceiverResp: _BIND_RESP,
    BindTransceiverResp: _BIND_RESP,
    Outbind: (("system_id", _CSTR, 16), ("password", _CSTR, 9)),  # §4.1.7
    # §4.2, §4.3, §4.11: header only
    Unbind: (),
    UnbindResp: (),
    GenericNack: (),
    EnquireLink: (),
    EnquireLinkResp: (),
    CancelSmResp: (),  # §4.9.2
    ReplaceSmResp: (),  # §4.10.2
    # §4.4 submit_sm, §4.6 deliver_sm
    SubmitSm: _SHORT,
    DeliverSm: _SHORT,
    SubmitSmResp: _MESSAGE_ID,
    DeliverSmResp: _MESSAGE_ID,
    # §4.5 submit_multi
    SubmitMulti: (
        ("service_type", _CSTR, 6),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _CSTR, 21),
        ("dest_addresses", _DESTS, 21),
        ("esm_class", _U8, 0),
        ("protocol_id", _U8, 0),
        ("priority_flag", _U8, 0),
        ("schedule_delivery_time", _TIME, 17),
        ("validity_period", _TIME, 17),
        ("registered_delivery", _U8, 0),
        ("replace_if_present_flag", _U8, 0),
        ("data_coding", _U8, 0),
        ("sm_default_msg_id", _U8, 0),
        ("short_message", _SM, 0),
        ("tlvs", _TLVS, 0),
    ),
    SubmitMultiResp: (("message_id", _CSTR, 65), ("unsuccess_smes", _UNSUCC, 21)),
    # §4.7 data_sm: addresses are up to 65 octets here
    DataSm: (
        ("service_type", _CSTR, 6),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _CSTR, 65),
        ("dest_addr_ton", _U8, 0),
        ("dest_addr_npi", _U8, 0),
        ("destination_addr", _CSTR, 65),
        ("esm_class", _U8, 0),
        ("registered_delivery", _U8, 0),
        ("data_coding", _U8, 0),
        ("tlvs", _TLVS, 0),
    ),
    DataSmResp: (("message_id", _CSTR, 65), ("tlvs", _TLVS, 0)),
    # §4.8 query_sm
    QuerySm: (
        ("message_id", _CSTR, 65),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _CSTR, 21),
    ),
    QuerySmResp: (
        ("message_id", _CSTR, 65),
        ("final_date", _TIME, 17),
        ("message_state", _U8, 0),
        ("error_code", _U8, 0),
    ),
    # §4.9 cancel_sm
    CancelSm: (
        ("service_type", _CSTR, 6),
        ("message_id", _CSTR, 65),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _CSTR, 21),
        ("dest_addr_ton", _U8, 0),
        ("dest_addr_npi", _U8, 0),
        ("destination_addr", _CSTR, 21),
    ),
    # §4.10 replace_sm
    ReplaceSm: (
        ("message_id", _CSTR, 65),
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _CSTR, 21),
        ("schedule_delivery_time", _TIME, 17),
        ("validity_period", _TIME, 17),
        ("registered_delivery", _U8, 0),
        ("sm_default_msg_id", _U8, 0),
        ("short_message", _SM, 0),
    ),
    # §4.12 alert_notification: addresses up to 65 octets
    AlertNotification: (
        ("source_addr_ton", _U8, 0),
        ("source_addr_npi", _U8, 0),
        ("source_addr", _CSTR, 65),
        ("esme_addr_ton", _U8, 0),
        ("esme_addr_npi", _U8, 0),
        ("esme_addr", _CSTR, 65),
        ("tlvs", _TLVS, 0),
    ),
}

_DEST_SME: Final = 1  # §4.5.1.1 dest_flag: SME address
_DEST_DL: Final = 2  # §4.5.1.1 dest_flag: distribution list name
_MAX_DESTS: Final = 254  # §4.5.1 number_of_dests


# -- generic (validating) encoder ---------------------------------------------------------


def _where(pdu: Pdu, name: str) -> str:
    return f"{type(pdu).__name__}.{name}"


def _u8(pdu: Pdu, name: str, value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{_where(pdu, name)} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{_where(pdu, name)} must fit in one octet (0..255)")
    return value


def _u32(pdu: Pdu, name: str, value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{_where(pdu, name)} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{_where(pdu, name)} must fit in four octets")
    return value


def _text(pdu: Pdu, name: str, value: object, limit: int) -> bytes:
    """C-Octet String with its NUL; ``limit`` counts the NUL as the §4 tables do."""
    if not isinstance(value, str):
        raise TypeError(f"{_where(pdu, name)} must be a str, not {type(value).__name__}")
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{_where(pdu, name)} has characters outside latin-1") from None
    if _NUL in raw:
        raise ValueError(f"{_where(pdu, name)} contains a NUL")
    if len(raw) >= limit:
        raise ValueError(
            f"{_where(pdu, name)} is {len(raw)} characters; at most {limit - 1} allowed"
        )
    return raw + _NUL


def _time(pdu: Pdu, name: str, value: object) -> bytes:
    raw = _text(pdu, name, value, _TIME_LEN + 1)
    if len(raw) not in (1, _TIME_LEN + 1):
        raise ValueError(f"{_where(pdu, name)} must be empty or 16 characters (§7.1.1)")
    return raw


def _octets(pdu: Pdu, name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{_where(pdu, name)} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _tlv_bytes(pdu: Pdu, value: object) -> bytes:
    if not isinstance(value, dict):
        raise TypeError(f"{_where(pdu, 'tlvs')} must be a dict, not {type(value).__name__}")
    parts: list[bytes] = []
    for tag, val in value.items():
        if not isinstance(tag, int) or not 0 <= tag <= 0xFFFF:
            raise ValueError(f"{_where(pdu, 'tlvs')} has a tag outside 0..0xFFFF")
        raw = _octets(pdu, f"tlvs[0x{tag:04X}]", val)
        if len(raw) > 0xFFFF:
            raise ValueError(f"{_where(pdu, 'tlvs')}[0x{tag:04X}] is longer than 65535 octets")
        parts.append(_TLV.pack(tag, len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _dests(pdu: Pdu, name: str, value: object, limit: int) -> bytes:
    if not isinstance(value, list):
        raise TypeError(f"{_where(pdu, name)} must be a list")
    if len(value) > _MAX_DESTS:
        raise ValueError(f"{_where(pdu, name)} has more than {_MAX_DESTS} entries (§4.5.1)")
    parts = [bytes((len(value),))]
    for i, entry in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(entry, tuple) or len(entry) != 4:
            raise TypeError(f"{_where(pdu, where)} must be (dest_flag, ton, npi, address)")
        flag, ton, npi, addr = entry
        if flag == _DEST_SME:
            parts.append(bytes((_DEST_SME, _u8(pdu, where, ton), _u8(pdu, where, npi))))
        elif flag == _DEST_DL:
            if ton != 0 or npi != 0:
                raise ValueError(f"{_where(pdu, where)}: a distribution list has no ton/npi")
            parts.append(bytes((_DEST_DL,)))
        else:
            raise ValueError(f"{_where(pdu, where)}: dest_flag must be 1 (SME) or 2 (DL)")
        parts.append(_text(pdu, where, addr, limit))
    return b"".join(parts)


def _unsucc(pdu: Pdu, name: str, value: object, limit: int) -> bytes:
    if not isinstance(value, list):
        raise TypeError(f"{_where(pdu, name)} must be a list")
    if len(value) > 0xFF:
        raise ValueError(f"{_where(pdu, name)} has more than 255 entries")
    parts = [bytes((len(value),))]
    for i, entry in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(entry, tuple) or len(entry) != 4:
            raise TypeError(f"{_where(pdu, where)} must be (ton, npi, address, error_status)")
        ton, npi, addr, err = entry
        parts.append(bytes((_u8(pdu, where, ton), _u8(pdu, where, npi))))
        parts.append(_text(pdu, where, addr, limit))
        parts.append(_U32.pack(_u32(pdu, where, err)))
    return b"".join(parts)


def _encode_generic(pdu: Pdu) -> bytes:
    """Table-driven encoder that checks every field and names the first bad one."""
    spec = _SPECS[type(pdu)]
    parts: list[bytes] = []
    for name, kind, limit in spec:
        value = getattr(pdu, name)
        if kind == _CSTR:
            parts.append(_text(pdu, name, value, limit))
        elif kind == _U8:
            parts.append(bytes((_u8(pdu, name, value),)))
        elif kind == _TIME:
            parts.append(_time(pdu, name, value))
        elif kind == _SM:
            raw = _octets(pdu, name, value)
            if len(raw) > _MAX_SM:
                raise ValueError(
                    f"{_where(pdu, name)} is {len(raw)} octets; at most {_MAX_SM} "
                    "(use the message_payload TLV)"
                )
            parts.append(bytes((len(raw),)))
            parts.append(raw)
        elif kind == _TLVS:
            parts.append(_tlv_bytes(pdu, value))
        elif kind == _DESTS:
            parts.append(_dests(pdu, name, value, limit))
        else:  # _UNSUCC
            parts.append(_unsucc(pdu, name, value, limit))
    body = b"".join(parts)
    return (
        HEADER.pack(
            16 + len(body),
            pdu.command_id,
            _u32(pdu, "command_status", pdu.command_status),
            _u32(pdu, "sequence_number", pdu.sequence_number),
        )
        + body
    )


# -- fast encoders -------------------------------------------------------------------------

_Encoder = Callable[[Pdu], bytes]


def _encode_tlvs(tlvs: dict[int, bytes]) -> bytes:
    pack = _TLV.pack
    parts: list[bytes] = []
    for tag, val in tlvs.items():
        parts.append(pack(tag, len(val)))
        parts.append(val)
    return b"".join(parts)


def _make_header_only_encoder(cls: type[Pdu]) -> _Encoder:
    cid = cls.command_id
    pack = HEADER.pack

    def enc(p: Pdu) -> bytes:
        return pack(16, cid, p.command_status, p.sequence_number)

    return enc


def _make_message_id_encoder(cls: type[Pdu]) -> _Encoder:
    cid = cls.command_id
    pack = HEADER.pack
    empty = _HEADER_NUL.pack

    def enc(p: SubmitSmResp | DeliverSmResp) -> bytes:
        if p.message_id == "":  # deliver_sm_resp's usual NULL message_id (§4.6.2): one pack
            return empty(17, cid, p.command_status, p.sequence_number)
        mid = p.message_id.encode("latin-1")
        if len(mid) > 64 or _NUL in mid:
            raise ValueError
        return pack(17 + len(mid), cid, p.command_status, p.sequence_number) + mid + _NUL

    return cast(_Encoder, enc)


def _make_short_message_encoder(cls: type[Pdu]) -> _Encoder:
    cid = cls.command_id
    hpack = HEADER.pack
    b2 = _B2.pack
    b3 = _B3.pack
    b5 = _B5.pack
    join = b"".join
    nul = _NUL

    def enc(p: SubmitSm | DeliverSm) -> bytes:
        st = p.service_type.encode("latin-1")
        sa = p.source_addr.encode("latin-1")
        da = p.destination_addr.encode("latin-1")
        sd = p.schedule_delivery_time.encode("latin-1")
        vp = p.validity_period.encode("latin-1")
        sm = p.short_message
        n = len(sm)
        if (
            len(st) > 5
            or len(sa) > 20
            or len(da) > 20
            or n > _MAX_SM
            or (sd and len(sd) != _TIME_LEN)
            or (vp and len(vp) != _TIME_LEN)
            or nul in st + sa + da + sd + vp
        ):
            raise ValueError
        body = join(
            (
                st,
                nul,
                b2(p.source_addr_ton, p.source_addr_npi),
                sa,
                nul,
                b2(p.dest_addr_ton, p.dest_addr_npi),
                da,
                nul,
                b3(p.esm_class, p.protocol_id, p.priority_flag),
                sd,
                nul,
                vp,
                nul,
                b5(
                    p.registered_delivery,
                    p.replace_if_present_flag,
                    p.data_coding,
                    p.sm_default_msg_id,
                    n,
                ),
                sm,
                _encode_tlvs(p.tlvs) if p.tlvs else b"",
            )
        )
        return hpack(16 + len(body), cid, p.command_status, p.sequence_number) + body

    return cast(_Encoder, enc)


_ENCODERS: Final[dict[type[Pdu], _Encoder]] = dict.fromkeys(_SPECS, _encode_generic)
for _cls, _spec in _SPECS.items():
    if not _spec:
        _ENCODERS[_cls] = _make_header_only_encoder(_cls)
_ENCODERS[SubmitSm] = _make_short_message_encoder(SubmitSm)
_ENCODERS[DeliverSm] = _make_short_message_encoder(DeliverSm)
_ENCODERS[SubmitSmResp] = _make_message_id_encoder(SubmitSmResp)
_ENCODERS[DeliverSmResp] = _make_message_id_encoder(DeliverSmResp)


def encode(pdu: Pdu) -> bytes:
    """The full PDU, header included; ``command_length`` and ``sm_length`` are derived.

    Raises :class:`ValueError` (or :class:`TypeError` for a wrong type) naming the field
    that cannot be encoded; the message never contains the field's value.
    """
    try:
        enc = _ENCODERS[type(pdu)]
    except KeyError:
        raise TypeError(f"not an SMPP PDU class: {type(pdu).__name__}") from None
    try:
        return enc(pdu)
    except Exception:  # any failure: the validating encoder names the field, or succeeds
        return _encode_generic(pdu)


# -- decoders -------------------------------------------------------------------------------

# A decoder takes (pdu bytes, body offset, sequence_number, command_status); the PDU ends
# at the end of the bytes, so running past it raises IndexError / struct.error / ValueError.
_Decoder = Callable[[bytes, int, int, int], Pdu]


def _decode_tlvs(b: bytes, pos: int) -> dict[int, bytes]:
    """§3.2.4.1 TLVs from ``pos`` to the end of ``b``."""
    end = len(b)
    tlvs: dict[int, bytes] = {}
    unpack = _TLV.unpack_from
    while pos < end:
        if end - pos < 4:
            raise _BodyError(Status.ESME_RINVMSGLEN, "trailing octets too short for a TLV")
        tag, length = unpack(b, pos)
        pos += 4
        nxt = pos + length
        if nxt > end:
            raise _BodyError(
                Status.ESME_RINVMSGLEN, f"TLV 0x{tag:04X} length {length} runs past the body"
            )
        tlvs[tag] = b[pos:nxt]
        pos = nxt
    return tlvs


def _make_header_only_decoder(cls: type[Pdu]) -> _Decoder:
    def dec(b: bytes, pos: int, seq: int, status: int) -> Pdu:
        if pos != len(b):
            raise _BodyError(
                Status.ESME_RINVCMDLEN, f"{cls.__name__} has no body, got {len(b) - pos} octets"
            )
        return cls(seq, status)

    return dec


def _make_message_id_decoder(cls: type[Pdu]) -> _Decoder:
    def dec(b: bytes, pos: int, seq: int, status: int) -> Pdu:
        i = b.index(0, pos)
        if i + 1 != len(b):
            _decode_tlvs(b, i + 1)  # well-formed trailing TLVs are tolerated and dropped
        return cls(seq, status, b[pos:i].decode("latin-1"))  # type: ignore[call-arg]

    return dec


def _make_short_message_decoder(cls: type[Pdu]) -> _Decoder:
    b5 = _B5.unpack_from

    def dec(b: bytes, pos: int, seq: int, status: int) -> Pdu:
        i = b.index(0, pos)
        st = b[pos:i].decode("latin-1") if i != pos else ""  # usually empty
        ston = b[i + 1]
        snpi = b[i + 2]
        pos = i + 3
        i = b.index(0, pos)
        sa = b[pos:i].decode("latin-1")
        dton = b[i + 1]
        dnpi = b[i + 2]
        pos = i + 3
        i = b.index(0, pos)
        da = b[pos:i].decode("latin-1")
        esm = b[i + 1]
        pid = b[i + 2]
        prio = b[i + 3]
        pos = i + 4
        i = b.index(0, pos)
        sd = b[pos:i].decode("latin-1") if i != pos else ""
        pos = i + 1
        i = b.index(0, pos)
        vp = b[pos:i].decode("latin-1") if i != pos else ""
        rd, rep, dc, dmid, n = b5(b, i + 1)
        pos = i + 6
        end = pos + n
        if end > len(b):
            raise _BodyError(Status.ESME_RINVMSGLEN, f"sm_length {n} runs past the body")
        tlvs = _decode_tlvs(b, end) if end != len(b) else {}
        return cls(  # type: ignore[call-arg]
            seq,
            status,
            st,
            ston,
            snpi,
            sa,
            dton,
            dnpi,
            da,
            esm,
            pid,
            prio,
            sd,
            vp,
            rd,
            rep,
            dc,
            dmid,
            b[pos:end],
            tlvs,
        )

    return dec


def _make_generic_decoder(cls: type[Pdu], spec: tuple[_Field, ...]) -> _Decoder:
    steps = tuple(kind for _, kind, _ in spec)
    has_tlvs = _TLVS in steps

    def dec(b: bytes, pos: int, seq: int, status: int) -> Pdu:
        values: list[object] = []
        append = values.append
        for kind in steps:
            if kind in (_CSTR, _TIME):
                i = b.index(0, pos)
                append(b[pos:i].decode("latin-1"))
                pos = i + 1
            elif kind == _U8:
                append(b[pos])
                pos += 1
            elif kind == _SM:
                n = b[pos]
                pos += 1
                if pos + n > len(b):
                    raise _BodyError(Status.ESME_RINVMSGLEN, f"sm_length {n} runs past the body")
                append(b[pos : pos + n])
                pos += n
            elif kind == _TLVS:
                append(_decode_tlvs(b, pos))
                pos = len(b)
            elif kind == _DESTS:
                count = b[pos]
                pos += 1
                dests: list[tuple[int, int, int, str]] = []
                for _ in range(count):
                    flag = b[pos]
                    if flag == _DEST_SME:
                        ton = b[pos + 1]
                        npi = b[pos + 2]
                        pos += 3
                    elif flag == _DEST_DL:
                        ton = npi = 0
                        pos += 1
                    else:
                        raise _BodyError(Status.ESME_RINVDESTFLAG, f"dest_flag {flag} is invalid")
                    i = b.index(0, pos)
                    dests.append((flag, ton, npi, b[pos:i].decode("latin-1")))
                    pos = i + 1
                append(dests)
            else:  # _UNSUCC
                count = b[pos]
                pos += 1
                smes: list[tuple[int, int, str, int]] = []
                for _ in range(count):
                    ton = b[pos]
                    npi = b[pos + 1]
                    i = b.index(0, pos + 2)
                    addr = b[pos + 2 : i].decode("latin-1")
                    (err,) = _U32.unpack_from(b, i + 1)
                    smes.append((ton, npi, addr, err))
                    pos = i + 5
                append(smes)
        if not has_tlvs and pos != len(b):
            _decode_tlvs(b, pos)  # well-formed trailing TLVs are tolerated and dropped
        return cls(seq, status, *values)

    return dec


_DECODERS: Final[dict[int, _Decoder]] = {}
for _cls, _spec in _SPECS.items():
    _DECODERS[_cls.command_id] = (
        _make_header_only_decoder(_cls) if not _spec else _make_generic_decoder(_cls, _spec)
    )
_DECODERS[SubmitSm.command_id] = _make_short_message_decoder(SubmitSm)
_DECODERS[DeliverSm.command_id] = _make_short_message_decoder(DeliverSm)
_DECODERS[SubmitSmResp.command_id] = _make_message_id_decoder(SubmitSmResp)
_DECODERS[DeliverSmResp.command_id] = _make_message_id_decoder(DeliverSmResp)


def _decode(b: bytes, pos: int, command_id: int, status: int, seq: int) -> Pdu:
    dec = _DECODERS.get(command_id)
    if dec is None:
        raise PduError(
            Status.ESME_RINVCMDID, command_id, seq, f"unknown command_id 0x{command_id:08X}"
        )
    try:
        return dec(b, pos, seq, status)
    except _BodyError as exc:
        code, detail = exc.status, str(exc)
    except ValueError:  # bytes.index found no NUL
        code, detail = Status.ESME_RINVMSGLEN, "a C-Octet String has no NUL terminator"
    except (IndexError, struct.error):
        code, detail = Status.ESME_RINVMSGLEN, "body is truncated"
    if command_id & RESPONSE_BIT and (status != 0 or pos == len(b)):
        return PDU_CLASSES[command_id](seq, status)  # §4.4.2: error responses may lack a body
    name = PDU_CLASSES[command_id].__name__
    raise PduError(code, command_id, seq, f"malformed {name}: {detail}")


def decode(data: bytes | bytearray | memoryview, *, max_pdu_size: int = MAX_PDU_SIZE) -> Pdu:
    """Exactly one full PDU, header included. Raises only :class:`PduError`."""
    b = data if type(data) is bytes else bytes(data)
    n = len(b)
    if n < 16:
        raise PduError(
            Status.ESME_RINVCMDLEN, 0, 0, f"{n} octets: shorter than the header", fatal=True
        )
    length, command_id, status, seq = HEADER.unpack_from(b)
    if length < 16 or length > max_pdu_size:
        raise PduError(
            Status.ESME_RINVCMDLEN,
            command_id,
            seq,
            f"command_length {length} outside 16..{max_pdu_size}",
            fatal=True,
        )
    if length != n:
        raise PduError(
            Status.ESME_RINVCMDLEN,
            command_id,
            seq,
            f"command_length {length} but {n} octets given",
            fatal=True,
        )
    return _decode(b, 16, command_id, status, seq)


def decode_body(
    command_id: int,
    command_status: int,
    sequence_number: int,
    body: bytes | bytearray | memoryview,
) -> Pdu:
    """A PDU from its header fields and body (without the header). Raises only PduError."""
    b = body if type(body) is bytes else bytes(body)
    return _decode(b, 0, command_id, command_status, sequence_number)
