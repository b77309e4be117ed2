"""Tests for smsc.codec: SMPP 3.4 encode/decode, differential against smpplib, fuzzing."""

from __future__ import annotations

import dataclasses
import pickle
import struct
from typing import Any

import pytest
import smpplib.consts
import smpplib.smpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsc import codec
from smsc.codec import HEADER, MAX_PDU_SIZE, PduError, decode, decode_body, encode
from smsc.pdu import (
    PDU_CLASSES,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    CommandId,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageState,
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
    Tag,
    Unbind,
    UnbindResp,
)

# -- typical values, one per class -------------------------------------------------------

TIME = "250101120000000+"  # §7.1.1 absolute time format, 16 characters

TYPICAL: list[Pdu] = [
    BindTransmitter(1, 0, "stkpay", "secret", "WALLET", 0x34, 1, 1, "^861380"),
    BindReceiver(2, 0, "stkpay", "secret", "", 0x34, 0, 0, ""),
    BindTransceiver(3, 0, "stkpay", "pw", "VMA", 0x34, 2, 3, "1[0-9]+"),
    BindTransmitterResp(1, 0, "SMSC1", {Tag.SC_INTERFACE_VERSION: b"\x34"}),
    BindReceiverResp(2, Status.ESME_RINVPASWD, "SMSC1", {}),
    BindTransceiverResp(3, 0, "SMSC", {}),
    Outbind(4, 0, "SMSC", "pw"),
    Unbind(5),
    UnbindResp(5),
    GenericNack(6, Status.ESME_RINVCMDID),
    EnquireLink(7),
    EnquireLinkResp(7),
    SubmitSm(
        sequence_number=8,
        service_type="CMT",
        source_addr_ton=5,
        source_addr="95588",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="8613800138000",
        esm_class=0x40,
        priority_flag=1,
        schedule_delivery_time=TIME,
        registered_delivery=1,
        data_coding=8,
        short_message=b"\x05\x00\x03\x2a\x02\x01" + "你好".encode("utf-16-be"),
        tlvs={Tag.USER_MESSAGE_REFERENCE: b"\x00\x07"},
    ),
    SubmitSmResp(8, 0, "6f2a9c01"),
    DeliverSm(
        sequence_number=9,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="8613800138000",
        destination_addr="95588",
        esm_class=0x04,
        short_message=b"id:6f2a9c01 sub:001 dlvrd:001 submit date:2501011200 "
        b"done date:2501011201 stat:DELIVRD err:000 text:hello",
        tlvs={Tag.RECEIPTED_MESSAGE_ID: b"6f2a9c01\x00", Tag.MESSAGE_STATE: b"\x02"},
    ),
    DeliverSmResp(9, 0, ""),
    SubmitMulti(
        sequence_number=10,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="95588",
        dest_addresses=[(1, 1, 1, "8613800138000"), (2, 0, 0, "staff"), (1, 0, 0, "139000")],
        validity_period=TIME,
        registered_delivery=1,
        short_message=b"hello",
        tlvs={Tag.SOURCE_PORT: b"\x0b\x84"},
    ),
    SubmitMultiResp(10, 0, "m-1", [(1, 1, "13900000000", Status.ESME_RINVDSTADR)]),
    DataSm(
        sequence_number=11,
        service_type="WAP",
        source_addr="95588",
        destination_addr="8613800138000",
        registered_delivery=1,
        data_coding=4,
        tlvs={Tag.MESSAGE_PAYLOAD: b"\x00" * 300},
    ),
    DataSmResp(11, 0, "d-1", {Tag.ADDITIONAL_STATUS_INFO_TEXT: b"ok\x00"}),
    QuerySm(12, 0, "6f2a9c01", 1, 1, "95588"),
    QuerySmResp(12, 0, "6f2a9c01", TIME, MessageState.DELIVERED, 0),
    CancelSm(13, 0, "", "6f2a9c01", 1, 1, "95588", 1, 1, "8613800138000"),
    CancelSmResp(13),
    ReplaceSm(14, 0, "6f2a9c01", 1, 1, "95588", TIME, TIME, 1, 0, b"new text"),
    ReplaceSmResp(14),
    AlertNotification(15, 0, 1, 1, "8613800138000", 1, 1, "95588", {0x0422: b"\x00"}),
]


def test_typical_values_cover_every_pdu_class() -> None:
    """TYPICAL has one instance of every class of smsc.pdu, so round trips cover them all."""
    assert {type(p) for p in TYPICAL} == set(PDU_CLASSES.values())


def test_field_table_matches_the_pdu_dataclasses() -> None:
    """The codec's §4 table lists each class's body fields in dataclass order, all of them."""
    assert set(codec._SPECS) == set(PDU_CLASSES.values())
    for cls, spec in codec._SPECS.items():
        names = [f.name for f in dataclasses.fields(cls)][2:]  # after seq, status
        assert [name for name, _, _ in spec] == names, cls.__name__


@pytest.mark.parametrize("pdu", TYPICAL, ids=lambda p: type(p).__name__)
def test_round_trip_typical(pdu: Pdu) -> None:
    """decode(encode(pdu)) == pdu, command_length matches, decode_body agrees."""
    raw = encode(pdu)
    length, cid, status, seq = HEADER.unpack_from(raw)
    assert (length, cid, status, seq) == (
        len(raw),
        pdu.command_id,
        pdu.command_status,
        pdu.sequence_number,
    )
    assert decode(raw) == pdu
    assert decode_body(cid, status, seq, raw[16:]) == pdu
    assert decode(bytearray(raw)) == pdu
    assert decode(memoryview(raw)) == pdu


def test_known_bytes() -> None:
    """Hand-assembled octets (§3.2, §4.4.1, §4.11.1) match the encoder exactly."""
    assert encode(EnquireLink(1)) == bytes.fromhex("00000010 00000015 00000000 00000001")
    assert encode(GenericNack(7, Status.ESME_RINVCMDLEN)) == bytes.fromhex(
        "00000010 80000000 00000002 00000007"
    )
    body = (
        b"\0"  # service_type
        + b"\x01\x01" + b"95588\0"  # source ton, npi, addr
        + b"\x01\x01" + b"8613800138000\0"  # dest ton, npi, addr
        + b"\x00\x00\x00"  # esm_class, protocol_id, priority_flag
        + b"\0\0"  # schedule_delivery_time, validity_period
        + b"\x01\x00\x00\x00"  # registered_delivery, replace, data_coding, default msg id
        + b"\x02hi"  # sm_length, short_message
        + b"\x02\x04\x00\x02\x00\x2a"  # user_message_reference TLV
    )  # fmt: skip
    pdu = SubmitSm(
        sequence_number=0x01020304,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="95588",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="8613800138000",
        registered_delivery=1,
        short_message=b"hi",
        tlvs={Tag.USER_MESSAGE_REFERENCE: b"\x00\x2a"},
    )
    expected = struct.pack(">IIII", 16 + len(body), 4, 0, 0x01020304) + body
    assert encode(pdu) == expected
    assert decode(expected) == pdu


# -- differential tests against smpplib ---------------------------------------------------

_TAG = smpplib.consts.OPTIONAL_PARAMS


def _theirs(name: str, seq: int, **fields: Any) -> Any:
    """An smpplib PDU with an explicit sequence number (its default client has none)."""
    pdu = smpplib.smpp.make_pdu(name, sequence=seq, **fields)
    pdu.sequence = seq
    return pdu


def _parse_theirs(raw: bytes) -> Any:
    return smpplib.smpp.parse_pdu(raw, sequence=0)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else value


_SM_INTS = (
    "source_addr_ton",
    "source_addr_npi",
    "dest_addr_ton",
    "dest_addr_npi",
    "esm_class",
    "protocol_id",
    "priority_flag",
    "registered_delivery",
    "replace_if_present_flag",
    "data_coding",
    "sm_default_msg_id",
)
_SM_TEXTS = (
    "service_type",
    "source_addr",
    "destination_addr",
    "schedule_delivery_time",
    "validity_period",
)


def _assert_same_sm(ours: SubmitSm | DeliverSm, theirs: Any) -> None:
    assert ours.sequence_number == theirs.sequence
    assert ours.command_status == theirs.status
    for name in _SM_INTS:
        assert getattr(ours, name) == (getattr(theirs, name) or 0), name
    for name in _SM_TEXTS:
        assert getattr(ours, name) == _text(getattr(theirs, name)), name
    assert ours.short_message == (theirs.short_message or b"")


def test_differential_bind_transceiver() -> None:
    """bind_transceiver: smpplib's octets decode to our fields and ours parse to its fields."""
    fields: dict[str, Any] = {
        "system_id": "stkpay",
        "password": "s3cret",
        "system_type": "WALLET",
        "addr_ton": 1,
        "addr_npi": 1,
        "address_range": "^95588",
    }
    theirs_raw = _theirs("bind_transceiver", 1, **fields).generate()
    ours = BindTransceiver(sequence_number=1, **fields)
    assert encode(ours) == theirs_raw
    assert decode(theirs_raw) == ours
    parsed = _parse_theirs(encode(ours))
    assert parsed.command == "bind_transceiver"
    assert parsed.interface_version == 0x34
    for name in ("system_id", "password", "system_type", "address_range"):
        assert _text(getattr(parsed, name)) == getattr(ours, name), name
    assert (parsed.addr_ton, parsed.addr_npi, parsed.sequence) == (1, 1, 1)


def test_differential_bind_transceiver_resp() -> None:
    """bind_transceiver_resp with the sc_interface_version TLV, both directions."""
    theirs_raw = _theirs(
        "bind_transceiver_resp", 3, system_id="SMSC", sc_interface_version=0x34
    ).generate()
    ours = BindTransceiverResp(3, 0, "SMSC", {Tag.SC_INTERFACE_VERSION: b"\x34"})
    assert decode(theirs_raw) == ours
    parsed = _parse_theirs(encode(ours))
    assert (parsed.system_id, parsed.sc_interface_version, parsed.sequence) == (b"SMSC", 0x34, 3)


_SUBMIT_CASES: list[tuple[str, dict[str, Any], dict[int, bytes]]] = [
    ("plain", {}, {}),
    (
        "sar",
        {"sar_msg_ref_num": 0x1234, "sar_total_segments": 3, "sar_segment_seqnum": 2},
        {
            Tag.SAR_MSG_REF_NUM: b"\x12\x34",
            Tag.SAR_TOTAL_SEGMENTS: b"\x03",
            Tag.SAR_SEGMENT_SEQNUM: b"\x02",
        },
    ),
    (
        "payload",
        {"message_payload": b"\xab" * 300, "user_message_reference": 42},
        {Tag.USER_MESSAGE_REFERENCE: b"\x00\x2a", Tag.MESSAGE_PAYLOAD: b"\xab" * 300},
    ),
]


@pytest.mark.parametrize(("case", "their_tlvs", "our_tlvs"), _SUBMIT_CASES, ids=lambda c: c)
def test_differential_submit_sm(
    case: str, their_tlvs: dict[str, Any], our_tlvs: dict[int, bytes]
) -> None:
    """submit_sm with and without sar_*, message_payload, user_message_reference TLVs."""
    short = b"" if "message_payload" in their_tlvs else "héllo wörld".encode("latin-1")
    fields: dict[str, Any] = {
        "service_type": "CMT",
        "source_addr_ton": 5,
        "source_addr_npi": 0,
        "source_addr": "STKPAY",
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": "8613800138000",
        "esm_class": 0,
        "protocol_id": 0x7F,
        "priority_flag": 1,
        "schedule_delivery_time": "",
        "validity_period": "000001000000000R",
        "registered_delivery": 1,
        "replace_if_present_flag": 0,
        "data_coding": 0xF6,
        "sm_default_msg_id": 0,
        "short_message": short,
    }
    theirs = _theirs("submit_sm", 77, **fields, **their_tlvs)
    ours = SubmitSm(sequence_number=77, **fields, tlvs=our_tlvs)
    decoded = decode(theirs.generate())
    assert isinstance(decoded, SubmitSm)
    _assert_same_sm(decoded, theirs)
    assert decoded == ours
    parsed = _parse_theirs(encode(ours))
    assert parsed.command == "submit_sm"
    _assert_same_sm(ours, parsed)
    for name, value in their_tlvs.items():
        assert getattr(parsed, name) == value, name


def test_differential_submit_sm_resp() -> None:
    """submit_sm_resp: message_id both ways; an error resp without body (§4.4.2) from smpplib."""
    theirs = _theirs("submit_sm_resp", 9, message_id="0A1B2C")
    assert decode(theirs.generate()) == SubmitSmResp(9, 0, "0A1B2C")
    parsed = _parse_theirs(encode(SubmitSmResp(9, 0, "0A1B2C")))
    assert (parsed.command, parsed.sequence, parsed.message_id) == ("submit_sm_resp", 9, b"0A1B2C")
    header_only = struct.pack(">IIII", 16, CommandId.SUBMIT_SM_RESP, Status.ESME_RTHROTTLED, 9)
    assert decode(header_only) == SubmitSmResp(9, Status.ESME_RTHROTTLED, "")
    assert _parse_theirs(header_only).status == Status.ESME_RTHROTTLED


def test_differential_deliver_sm_receipt() -> None:
    """A delivery receipt deliver_sm with receipted_message_id and message_state TLVs."""
    text = b"id:0A1B2C sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 stat:DELIVRD"
    fields: dict[str, Any] = {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": "8613800138000",
        "dest_addr_ton": 0,
        "dest_addr_npi": 0,
        "destination_addr": "95588",
        "esm_class": 0x04,
        "short_message": text,
    }
    theirs = _theirs(
        "deliver_sm",
        0x7FFFFFFF,
        receipted_message_id="0A1B2C",
        message_state=MessageState.DELIVERED,
        **fields,
    )
    decoded = decode(theirs.generate())
    assert isinstance(decoded, DeliverSm)
    _assert_same_sm(decoded, theirs)
    assert decoded.tlvs == {Tag.RECEIPTED_MESSAGE_ID: b"0A1B2C\0", Tag.MESSAGE_STATE: b"\x02"}
    ours = DeliverSm(sequence_number=0x7FFFFFFF, **fields, tlvs=decoded.tlvs)
    parsed = _parse_theirs(encode(ours))
    _assert_same_sm(ours, parsed)
    assert parsed.receipted_message_id == b"0A1B2C"
    assert parsed.message_state == MessageState.DELIVERED


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("deliver_sm_resp", DeliverSmResp(5, 0, "")),
        ("enquire_link", EnquireLink(6)),
        ("enquire_link_resp", EnquireLinkResp(6)),
        ("unbind", Unbind(7)),
        ("unbind_resp", UnbindResp(7)),
        ("generic_nack", GenericNack(8, Status.ESME_RINVCMDID)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_differential_small_pdus(name: str, ours: Pdu) -> None:
    """deliver_sm_resp, enquire_link(_resp), unbind(_resp), generic_nack: identical octets."""
    theirs = _theirs(name, ours.sequence_number, status=ours.command_status)
    assert encode(ours) == theirs.generate()
    assert decode(theirs.generate()) == ours
    parsed = _parse_theirs(encode(ours))
    assert (parsed.command, parsed.sequence, parsed.status) == (
        name,
        ours.sequence_number,
        ours.command_status,
    )


_ADDR_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def _latin1(max_size: int, *, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(min_codepoint=1, max_codepoint=0xFF), min_size=min_size, max_size=max_size
    )


_TIMES = st.one_of(st.just(""), st.text(_ADDR_CHARS, min_size=16, max_size=16))


_SM_FIELDS = st.fixed_dictionaries(
    {
        **{name: st.integers(0, 255) for name in _SM_INTS},
        "service_type": _latin1(5),
        "source_addr": _latin1(20),
        "destination_addr": _latin1(20),
        "schedule_delivery_time": _TIMES,
        "validity_period": _TIMES,
        "short_message": st.binary(max_size=254),
    }
)
_SAR = st.tuples(st.integers(0, 0xFFFF), st.integers(1, 255), st.integers(1, 255))


@settings(max_examples=60, deadline=None)
@given(fields=_SM_FIELDS, seq=st.integers(1, 0x7FFFFFFF), sar=st.none() | _SAR)
def test_differential_submit_sm_property(
    fields: dict[str, Any], seq: int, sar: tuple[int, int, int] | None
) -> None:
    """For arbitrary in-limit fields, smpplib's submit_sm octets equal ours, both ways."""
    their_tlvs: dict[str, int] = {}
    our_tlvs: dict[int, bytes] = {}
    if sar is not None:
        their_tlvs = dict(
            zip(("sar_msg_ref_num", "sar_total_segments", "sar_segment_seqnum"), sar, strict=True)
        )
        our_tlvs = {
            Tag.SAR_MSG_REF_NUM: sar[0].to_bytes(2, "big"),
            Tag.SAR_TOTAL_SEGMENTS: bytes([sar[1]]),
            Tag.SAR_SEGMENT_SEQNUM: bytes([sar[2]]),
        }
    theirs = _theirs("submit_sm", seq, **fields, **their_tlvs)
    ours = SubmitSm(sequence_number=seq, **fields, tlvs=our_tlvs)
    assert decode(theirs.generate()) == ours
    parsed = _parse_theirs(encode(ours))
    _assert_same_sm(ours, parsed)


# -- hypothesis: round trip of every class --------------------------------------------------

_U8 = st.integers(0, 255)
_TLVS = st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=300), max_size=4)


def _field_strategy(kind: int, limit: int) -> st.SearchStrategy[Any]:
    if kind == codec._CSTR:
        return _latin1(limit - 1)
    if kind == codec._TIME:
        return st.one_of(st.just(""), _latin1(16, min_size=16))
    if kind == codec._U8:
        return _U8
    if kind == codec._SM:
        return st.binary(max_size=254)
    if kind == codec._TLVS:
        return _TLVS
    if kind == codec._DESTS:
        sme = st.tuples(st.just(1), _U8, _U8, _latin1(limit - 1))
        dl = st.tuples(st.just(2), st.just(0), st.just(0), _latin1(limit - 1))
        return st.lists(sme | dl, max_size=8)
    assert kind == codec._UNSUCC
    return st.lists(st.tuples(_U8, _U8, _latin1(limit - 1), st.integers(0, 0xFFFFFFFF)), max_size=8)


def _pdu_strategy(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    spec = codec._SPECS[cls]
    return st.builds(
        cls,
        sequence_number=st.integers(0, 0xFFFFFFFF),
        command_status=st.integers(0, 0xFFFFFFFF),
        **{name: _field_strategy(kind, limit) for name, kind, limit in spec},
    )


ANY_PDU = st.one_of([_pdu_strategy(cls) for cls in PDU_CLASSES.values()])


@settings(max_examples=400, deadline=None)
@given(pdu=ANY_PDU)
def test_round_trip_any(pdu: Pdu) -> None:
    """For arbitrary in-limit field values of every class, decode(encode(pdu)) == pdu."""
    raw = encode(pdu)
    assert len(raw) == HEADER.unpack_from(raw)[0]
    assert codec._encode_generic(pdu) == raw  # fast path and table path agree
    assert decode(raw, max_pdu_size=len(raw)) == pdu


@settings(max_examples=40, deadline=None)
@given(stream=st.lists(ANY_PDU, min_size=2, max_size=6))
def test_encode_is_deterministic_and_self_delimiting(stream: list[Pdu]) -> None:
    """Concatenated encodings split on command_length give back each PDU in order."""
    raw = b"".join(encode(p) for p in stream)
    out: list[Pdu] = []
    pos = 0
    while pos < len(raw):
        length = HEADER.unpack_from(raw, pos)[0]
        out.append(decode(raw[pos : pos + length]))
        pos += length
    assert out == stream


# -- hypothesis: decode() raises nothing but PduError ------------------------------------


def _only_pdu_error(raw: bytes) -> None:
    try:
        pdu = decode(raw)
    except PduError as exc:
        assert isinstance(exc.status, int)
        assert isinstance(exc.response(), Pdu)
    else:
        assert isinstance(pdu, Pdu)


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=300))
def test_decode_arbitrary_bytes_raises_only_pdu_error(raw: bytes) -> None:
    """Random octets: decode returns a Pdu or raises PduError, nothing else."""
    _only_pdu_error(raw)


# bodies built from NULs, text, small counts and the first half of a TLV tag
_BODY_PIECES = st.lists(st.sampled_from([b"\0", b"ab", b"\x02", b"\x04\x24"])).map(b"".join)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cid=st.sampled_from(sorted(PDU_CLASSES)) | st.integers(0, 0xFFFFFFFF),
    status=st.sampled_from([0, 1]) | st.integers(0, 0xFFFFFFFF),
    seq=st.integers(0, 0xFFFFFFFF),
    body=st.binary(max_size=200) | _BODY_PIECES,
)
def test_decode_arbitrary_bodies_raises_only_pdu_error(
    cid: int, status: int, seq: int, body: bytes
) -> None:
    """A valid header with any command_id and junk body: a Pdu or PduError, nothing else."""
    _only_pdu_error(HEADER.pack(16 + len(body), cid, status, seq) + body)


@settings(max_examples=300, deadline=None)
@given(pdu=ANY_PDU, data=st.data())
def test_decode_mutated_pdus_raises_only_pdu_error(pdu: Pdu, data: st.DataObject) -> None:
    """A valid encoding with one octet changed or the body cut: a Pdu or PduError."""
    raw = bytearray(encode(pdu))
    if len(raw) > 16 and data.draw(st.booleans()):
        cut = data.draw(st.integers(16, len(raw) - 1))
        del raw[cut:]
        raw[0:4] = len(raw).to_bytes(4, "big")
    else:
        i = data.draw(st.integers(4, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _only_pdu_error(bytes(raw))


# -- malformed input -----------------------------------------------------------------------


def _pdu(cid: int, body: bytes, *, status: int = 0, seq: int = 42) -> bytes:
    return HEADER.pack(16 + len(body), cid, status, seq) + body


def _error(raw: bytes, **kwargs: Any) -> PduError:
    with pytest.raises(PduError) as info:
        decode(raw, **kwargs)
    return info.value


def test_short_header_is_fatal_cmdlen() -> None:
    """Fewer than 16 octets: ESME_RINVCMDLEN, fatal, answered with generic_nack."""
    err = _error(b"\x00\x00\x00\x10\x00\x00")
    assert (err.status, err.fatal) == (Status.ESME_RINVCMDLEN, True)
    assert err.response() == GenericNack(0, Status.ESME_RINVCMDLEN)


@pytest.mark.parametrize("length", [0, 15, MAX_PDU_SIZE + 1, 0xFFFFFFFF])
def test_command_length_out_of_range_is_fatal(length: int) -> None:
    """command_length < 16 or > the maximum: ESME_RINVCMDLEN, fatal, with the header's seq."""
    raw = struct.pack(">IIII", length, CommandId.ENQUIRE_LINK, 0, 99)
    err = _error(raw)
    assert (err.status, err.fatal, err.sequence_number) == (Status.ESME_RINVCMDLEN, True, 99)
    assert err.command_id == CommandId.ENQUIRE_LINK
    assert err.response() == GenericNack(99, Status.ESME_RINVCMDLEN)


def test_max_pdu_size_is_configurable() -> None:
    """A PDU larger than max_pdu_size is refused even though it is well-formed."""
    raw = encode(SubmitSm(1, short_message=b"x" * 200))
    assert decode(raw, max_pdu_size=len(raw)) is not None
    assert _error(raw, max_pdu_size=len(raw) - 1).status == Status.ESME_RINVCMDLEN


def test_command_length_disagreeing_with_data_is_cmdlen() -> None:
    """decode() given more or fewer octets than command_length: ESME_RINVCMDLEN."""
    raw = encode(SubmitSmResp(3, 0, "abc"))
    assert _error(raw + b"\0").status == Status.ESME_RINVCMDLEN
    assert _error(raw[:-1]).status == Status.ESME_RINVCMDLEN


def test_unknown_command_id_is_not_fatal() -> None:
    """Unknown command_id: ESME_RINVCMDID, not fatal, answered with generic_nack (§4.3.1)."""
    err = _error(_pdu(0x00000099, b"whatever"))
    assert (err.status, err.fatal, err.command_id) == (Status.ESME_RINVCMDID, False, 0x99)
    assert err.response() == GenericNack(42, Status.ESME_RINVCMDID)


def test_missing_nul_answers_with_the_matching_resp() -> None:
    """A C-Octet String without NUL: ESME_RINVMSGLEN, answered by submit_sm_resp."""
    err = _error(_pdu(CommandId.SUBMIT_SM, b"CMT"))
    assert (err.status, err.fatal, err.command_id) == (
        Status.ESME_RINVMSGLEN,
        False,
        CommandId.SUBMIT_SM,
    )
    assert err.response() == SubmitSmResp(42, Status.ESME_RINVMSGLEN, "")
    assert "submit" in str(err).lower()


def test_truncated_submit_sm_is_msglen() -> None:
    """Every proper prefix of a submit_sm body (up to a complete TLV) is ESME_RINVMSGLEN."""
    with_tlv = encode(TYPICAL[12])
    assert with_tlv.endswith(b"\x02\x04\x00\x02\x00\x07")  # a 6-octet TLV closes it
    without_tlv = encode(SubmitSm(1, source_addr="95588", short_message=b"hello"))
    for raw, stop in ((with_tlv, len(with_tlv) - 6), (without_tlv, len(without_tlv))):
        for cut in range(16, stop):
            err = _error(_pdu(CommandId.SUBMIT_SM, raw[16:cut]))
            assert err.status == Status.ESME_RINVMSGLEN, cut
    assert decode(_pdu(CommandId.SUBMIT_SM, with_tlv[16:-6])) == dataclasses.replace(
        TYPICAL[12], sequence_number=42, tlvs={}
    )


def test_sm_length_past_the_body_is_msglen() -> None:
    """sm_length larger than the octets that follow: ESME_RINVMSGLEN."""
    raw = bytearray(encode(SubmitSm(1, short_message=b"abc")))
    raw[-4] = 10  # sm_length
    assert _error(bytes(raw)).status == Status.ESME_RINVMSGLEN


@pytest.mark.parametrize(
    "tail",
    [b"\x02\x04\x00\x05\x00", b"\x02\x04\x00\x02\x00", b"\x02\x04", b"\x02\x04\x00"],
    ids=["length-overruns", "overruns-by-one", "short-tag", "short-length"],
)
def test_bad_tlv_is_msglen(tail: bytes) -> None:
    """A TLV whose length runs past the body, or a cut TLV header: ESME_RINVMSGLEN."""
    body = encode(SubmitSm(1, short_message=b"hi"))[16:] + tail
    err = _error(_pdu(CommandId.SUBMIT_SM, body))
    assert err.status == Status.ESME_RINVMSGLEN
    assert err.response() == SubmitSmResp(42, Status.ESME_RINVMSGLEN)


def test_header_only_pdu_with_body_is_cmdlen() -> None:
    """enquire_link carrying a body: ESME_RINVCMDLEN (not fatal, the stream is intact)."""
    err = _error(_pdu(CommandId.ENQUIRE_LINK, b"\0\0\0\0"))
    assert (err.status, err.fatal) == (Status.ESME_RINVCMDLEN, False)
    assert err.response() == EnquireLinkResp(42, Status.ESME_RINVCMDLEN)


def test_bad_dest_flag_is_invdestflag() -> None:
    """submit_multi with dest_flag 3 (§4.5.1.1): ESME_RINVDESTFLAG via submit_multi_resp."""
    good = encode(SubmitMulti(1, dest_addresses=[(1, 1, 1, "123")]))
    body = bytearray(good[16:])
    flag_at = body.index(b"\x01\x01\x01\x01123")
    body[flag_at + 1] = 3
    err = _error(_pdu(CommandId.SUBMIT_MULTI, bytes(body)))
    assert err.status == Status.ESME_RINVDESTFLAG
    assert err.response() == SubmitMultiResp(42, Status.ESME_RINVDESTFLAG)


@pytest.mark.parametrize(
    "cls", [c for c in PDU_CLASSES.values() if c().is_response], ids=lambda c: c.__name__
)
def test_responses_without_body_decode_to_defaults(cls: type[Pdu]) -> None:
    """Any response with an empty body decodes to defaults, with or without error status."""
    for status in (0, Status.ESME_RSYSERR):
        assert decode(_pdu(cls.command_id, b"", status=status)) == cls(42, status)


def test_error_response_with_junk_body_decodes_to_defaults() -> None:
    """An error submit_sm_resp whose body does not parse: defaults, not a PduError."""
    raw = _pdu(CommandId.SUBMIT_SM_RESP, b"junk-without-nul", status=Status.ESME_RSYSERR)
    assert decode(raw) == SubmitSmResp(42, Status.ESME_RSYSERR, "")
    ok = _error(_pdu(CommandId.SUBMIT_SM_RESP, b"junk-without-nul"))
    assert ok.status == Status.ESME_RINVMSGLEN


@pytest.mark.parametrize(
    "pdu",
    [SubmitSmResp(42, 0, "abc"), QuerySmResp(42, 0, "abc", "", 2, 0), CancelSm(42)],
    ids=lambda p: type(p).__name__,
)
def test_trailing_tlvs_on_a_tlvless_pdu_are_tolerated(pdu: Pdu) -> None:
    """A PDU without TLVs + a well-formed TLV (SMPP 5.0 peers add some): TLV dropped;
    trailing octets that are not TLVs: ESME_RINVMSGLEN."""
    body = encode(pdu)[16:]
    assert decode(_pdu(pdu.command_id, body + b"\x04\x25\x00\x01\x03")) == pdu
    assert _error(_pdu(pdu.command_id, body + b"xy")).status == Status.ESME_RINVMSGLEN


def test_latin1_junk_decodes() -> None:
    """Octets 0x80-0xFF in C-Octet Strings decode as latin-1 rather than failing."""
    raw = encode(SubmitSmResp(1, 0, "id")).replace(b"id\0", b"\xe9\xff\0")
    raw = HEADER.pack(len(raw), CommandId.SUBMIT_SM_RESP, 0, 1) + raw[16:]
    assert decode(raw) == SubmitSmResp(1, 0, "éÿ")


def test_overlong_strings_are_accepted_on_decode() -> None:
    """C-Octet Strings beyond the §4 maxima decode (only encode enforces the limits)."""
    raw = _pdu(CommandId.SUBMIT_SM_RESP, b"m" * 100 + b"\0")
    assert decode(raw) == SubmitSmResp(42, 0, "m" * 100)


def test_sequence_zero_is_accepted() -> None:
    """Some SMSCs start at sequence 0: decoding accepts it."""
    assert decode(encode(EnquireLink(0))) == EnquireLink(0)


def test_pdu_error_pickles_and_describes() -> None:
    """PduError survives pickling (for logging across processes) with its fields."""
    err = _error(_pdu(0x1234, b""))
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.status, copy.command_id, copy.sequence_number, copy.fatal, copy.detail) == (
        err.status,
        err.command_id,
        err.sequence_number,
        err.fatal,
        err.detail,
    )
    assert "0x00001234" in err.detail


# -- encode errors ---------------------------------------------------------------------------

# §4 maxima (characters, without the NUL), restated from the spec tables.
_LIMITS: list[tuple[type[Pdu], str, int]] = [
    (BindTransceiver, "system_id", 15),
    (BindTransceiver, "password", 8),
    (BindTransceiver, "system_type", 12),
    (BindTransceiver, "address_range", 40),
    (BindTransmitterResp, "system_id", 15),
    (Outbind, "password", 8),
    (SubmitSm, "service_type", 5),
    (SubmitSm, "source_addr", 20),
    (SubmitSm, "destination_addr", 20),
    (DeliverSm, "source_addr", 20),
    (SubmitSmResp, "message_id", 64),
    (DeliverSmResp, "message_id", 64),
    (DataSm, "source_addr", 64),
    (DataSm, "destination_addr", 64),
    (QuerySm, "message_id", 64),
    (CancelSm, "destination_addr", 20),
    (ReplaceSm, "message_id", 64),
    (AlertNotification, "esme_addr", 64),
]


@pytest.mark.parametrize(("cls", "name", "chars"), _LIMITS, ids=str)
def test_c_octet_string_limits(cls: type[Pdu], name: str, chars: int) -> None:
    """The §4 maximum encodes; one character more is a ValueError naming the field."""
    ok = cls(**{name: "x" * chars})  # type: ignore[arg-type]
    assert getattr(decode(encode(ok)), name) == "x" * chars
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{name}"):
        encode(cls(**{name: "x" * (chars + 1)}))  # type: ignore[arg-type]


def test_password_never_in_error_messages() -> None:
    """An over-long or non-latin-1 password is reported without its value."""
    secret = "hunter2-is-too-long"
    with pytest.raises(ValueError, match="password") as info:
        encode(BindTransceiver(1, password=secret))
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="password") as info:
        encode(BindTransceiver(1, password="密码"))
    assert "密" not in str(info.value)
    assert "hunter2" not in repr(BindTransceiver(1, password="hunter2"))


@pytest.mark.parametrize(
    ("pdu", "field"),
    [
        (SubmitSm(1, short_message=b"x" * 255), "short_message"),
        (ReplaceSm(1, short_message=b"x" * 255), "short_message"),
        (SubmitSm(1, schedule_delivery_time="2501011200"), "schedule_delivery_time"),
        (DeliverSm(1, validity_period="x" * 17), "validity_period"),
        (QuerySmResp(1, final_date="1"), "final_date"),
        (SubmitSm(1, esm_class=256), "esm_class"),
        (SubmitSm(1, data_coding=-1), "data_coding"),
        (SubmitSm(1, source_addr="中国"), "source_addr"),
        (SubmitSm(1, destination_addr="12\x0034"), "destination_addr"),
        (SubmitSmResp(1, message_id="a\0b"), "message_id"),
        (SubmitSm(0x1_0000_0000), "sequence_number"),
        (EnquireLink(1, -1), "command_status"),
        (SubmitSm(1, tlvs={0x10000: b""}), "tlvs"),
        (DeliverSm(1, tlvs={0x0424: b"x" * 65536}), "tlvs"),
        (SubmitMulti(1, dest_addresses=[(3, 0, 0, "x")]), "dest_addresses"),
        (SubmitMulti(1, dest_addresses=[(2, 1, 0, "dl")]), "dest_addresses"),
        (SubmitMulti(1, dest_addresses=[(1, 0, 0, "1")] * 255), "dest_addresses"),
        (SubmitMultiResp(1, unsuccess_smes=[(0, 0, "x" * 21, 0)]), "unsuccess_smes"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_encode_value_errors_name_the_field(pdu: Pdu, field: str) -> None:
    """Out-of-range values raise ValueError naming the field (a local error, not PduError)."""
    with pytest.raises(ValueError, match=field):
        encode(pdu)


@pytest.mark.parametrize(
    ("pdu", "field"),
    [
        (SubmitSm(1, source_addr=123), "source_addr"),  # type: ignore[arg-type]
        (SubmitSm(1, short_message="text"), "short_message"),  # type: ignore[arg-type]
        (SubmitSm(1, tlvs={0x0424: "text"}), "tlvs"),  # type: ignore[dict-item]
        (SubmitSmResp(1, message_id=None), "message_id"),  # type: ignore[arg-type]
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_encode_type_errors_name_the_field(pdu: Pdu, field: str) -> None:
    """Wrong Python types raise TypeError naming the field."""
    with pytest.raises(TypeError, match=field):
        encode(pdu)


def test_encode_rejects_foreign_objects() -> None:
    """encode() of something that is not a PDU class of smsc.pdu is a TypeError."""
    with pytest.raises(TypeError, match="not an SMPP PDU"):
        encode(object())  # type: ignore[arg-type]


def test_fast_and_table_encoders_agree() -> None:
    """The hand-written encoders produce the same octets as the validating table encoder."""
    for pdu in TYPICAL:
        assert codec._ENCODERS[type(pdu)](pdu) == codec._encode_generic(pdu), type(pdu)


@pytest.mark.parametrize("cls", [DeliverSmResp, SubmitSmResp])
@pytest.mark.parametrize("status", [0, Status.ESME_RX_T_APPN, 0xFFFFFFFF])
def test_empty_message_id_response_is_one_precomputed_pack(cls: type[Pdu], status: int) -> None:
    """§4.6.2 deliver_sm_resp with its NULL message_id: header and NUL, as the table says."""
    pdu = cls(sequence_number=0x7FFFFFFF, command_status=status)
    raw = encode(pdu)
    assert raw == HEADER.pack(17, cls.command_id, status, 0x7FFFFFFF) + b"\0"
    assert raw == codec._encode_generic(pdu)
