"""Keeps docs/smpp.md true: its hex vectors and checked tables are rebuilt from the code.

Every fenced block of docs/smpp.md whose info string is ``hex vector=NAME`` is parsed (hex
digits before ``#`` on each line; the rest is annotation) and must equal the octets that
:data:`VECTORS` builds for NAME with the codec (SMPP 3.4 §3.2, §4), the session (§2.3,
§4.3.1), the receipt builder (Appendix B, §5.3.2.12/.35) and the segmenter (3GPP TS 23.040
§9.2.3.24, TS 23.038 §6.2.1.1); each vector is also decoded back. Tables preceded by an
``<!-- check: NAME -->`` comment (session states, part capacities, data_coding, message-id
keys) are compared with the code in the same way. A failing vector prints the octets the
code produces, ready to paste.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from smsc import gsm7
from smsc.codec import HEADER, PduError, decode, encode
from smsc.dlr import MsgIdNormalizer, parse_receipt, receipt_pdu
from smsc.pdu import (
    ESM_UDHI,
    BindTransceiver,
    BindTransceiverResp,
    CommandId,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageState,
    Pdu,
    Status,
    SubmitSm,
    SubmitSmResp,
    Tag,
)
from smsc.segment import LongMode, segment_binary, segment_text
from smsc.session import _LEGAL, PduReceived, ProtocolViolation, Role, SmppSession, State
from smsc.text import Encoding, encoding_of
from smsc.udh import (
    IEI_COMMAND_PACKET,
    Concat,
    InformationElement,
    Ports,
    build_udh,
    find_concat,
    find_ports,
    split_udh,
)
from tests.docvectors import doc_vectors, parse_hex

DOC = Path(__file__).resolve().parents[1] / "docs" / "smpp.md"

# -- the examples the document walks through ----------------------------------------------

ESME_ID = "stkpay"
PASSWORD = "secret"  # a dummy, as the document says
SMSC_ID = "stkpay-sim"
SHORT_CODE = "10658888"  # SmscConfig.source_addr default (TON 0, NPI 0)
MSISDN = "8613800138000"  # E.164, TON 1 international, NPI 1 ISDN
TEXT_60 = "Payment of 25.00 CNY to Li Wei received. Balance 1024.50 CNY"
MESSAGE_ID = "1042"
SUBMIT_SEQ = 2
DATE = "2501151030"  # Appendix B YYMMDDhhmm
CHINESE = (
    "【STK钱包】尊敬的用户，您尾号8000的钱包已于2025年1月15日10时30分向签约商户成功完成支付"
    "人民币25.00元，收款方：𠮷野家（上海南京东路店），流水号20250115103000001，余额1024.50元。"
    "非本人操作请回复0冻结。"
)
CHINESE_REF = 0x2A
EURO_TEXT = (
    "Your STK wallet card ending 8000 was charged for an online purchase at Le Petit Cafe, "
    "Paris on 15 Jan 2025 at 10:30. Amount in the merchant's currency: €25.00 "
    "(CNY 196.40 at today's rate). Reply 0 to freeze the card."
)
EURO_REF = 0x2B
REF16 = 0x1234


def bind_transceiver() -> BindTransceiver:
    """§4.1.5 as the ESME sends it with the default configuration."""
    return BindTransceiver(sequence_number=1, system_id=ESME_ID, password=PASSWORD)


def bind_transceiver_resp() -> BindTransceiverResp:
    """§4.1.6 as the simulator answers: its system_id and sc_interface_version 0x34."""
    return BindTransceiverResp(
        sequence_number=1, system_id=SMSC_ID, tlvs={Tag.SC_INTERFACE_VERSION: b"\x34"}
    )


def submit_sm() -> SubmitSm:
    """§4.4.1: one 60-character GSM 7-bit part with a delivery receipt requested."""
    return SubmitSm(
        sequence_number=SUBMIT_SEQ,
        source_addr=SHORT_CODE,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=MSISDN,
        registered_delivery=0x01,
        data_coding=0x00,
        short_message=gsm7.encode(TEXT_60),
    )


def submit_sm_resp() -> SubmitSmResp:
    """§4.4.2 with the simulator's decimal message id."""
    return SubmitSmResp(sequence_number=SUBMIT_SEQ, message_id=MESSAGE_ID)


def receipt() -> DeliverSm:
    """§4.6.1 receipt for the submit_sm above, as :func:`smsc.dlr.receipt_pdu` builds it."""
    return receipt_pdu(
        MESSAGE_ID,
        MessageState.DELIVERED,
        source_addr=MSISDN,
        destination_addr=SHORT_CODE,
        source_addr_ton=1,
        source_addr_npi=1,
        submit_date=DATE,
        done_date=DATE,
        text=TEXT_60,
        sequence_number=7,
    )


def unknown_command() -> bytes:
    """An SMPP 5.0 broadcast_sm header (command_id 0x00000111), unknown to SMPP 3.4."""
    return HEADER.pack(16, 0x00000111, 0, 5)


def session_answer(role: Role, incoming: bytes) -> bytes:
    """What a fresh (OPEN) session of ``role`` queues on its own for ``incoming``."""
    session = SmppSession(role)
    events = session.receive_data(incoming)
    assert len(events) == 1
    assert isinstance(events[0], ProtocolViolation)
    return session.data_to_send()


def chinese_parts() -> list[bytes]:
    """The long UCS2 message in UDH8 mode (TS 23.040 §9.2.3.24.1)."""
    segments = segment_text(CHINESE, Encoding.UCS2, LongMode.UDH8, CHINESE_REF)
    return [seg.short_message for seg in segments]


def euro_parts() -> list[bytes]:
    """The long GSM 7-bit message with '€' at the part boundary, UDH8 mode."""
    segments = segment_text(EURO_TEXT, Encoding.GSM7, LongMode.UDH8, EURO_REF)
    return [seg.short_message for seg in segments]


def sar_tlvs() -> bytes:
    """The TLV tail (sar_msg_ref_num, sar_total_segments, sar_segment_seqnum) of part 1 of
    the euro text in SAR mode, cut from the encoded submit_sm."""
    seg = segment_text(EURO_TEXT, Encoding.GSM7, LongMode.SAR, REF16)[0]
    with_tlvs = SubmitSm(short_message=seg.short_message, tlvs=seg.tlvs)
    without = SubmitSm(short_message=seg.short_message)
    return encode(with_tlvs)[len(encode(without)) :]


def udh16() -> bytes:
    """The UDH of part 1 of the euro text in UDH16 mode (TS 23.040 §9.2.3.24.8)."""
    seg = segment_text(EURO_TEXT, Encoding.GSM7, LongMode.UDH16, REF16)[0]
    return seg.short_message[: 1 + seg.short_message[0]]


def udh_ports_concat() -> bytes:
    """16-bit port addressing (§9.2.3.24.4) placed before an 8-bit concatenation IE."""
    return build_udh(
        (Ports(2948, 9200, wide=True).to_ie(), Concat(0x2A, 2, 1, ref16=False).to_ie())
    )


def udh_command_packet() -> bytes:
    """The TS 31.115 command packet IE (0x70, no data) alone in a UDH."""
    return build_udh((InformationElement(IEI_COMMAND_PACKET),))


# -- the vectors: how to build each, and what decoding it back must give ---------------------


@dataclass(frozen=True, slots=True)
class Vector:
    """One documented vector: ``build`` makes its octets, ``check`` decodes them back."""

    build: Callable[[], bytes]
    check: Callable[[bytes], None]


def _pdu_vector(make: Callable[[], Pdu]) -> Vector:
    def check(data: bytes) -> None:
        assert decode(data) == make()

    return Vector(lambda: encode(make()), check)


def _check_generic_nack(data: bytes) -> None:
    assert decode(data) == GenericNack(sequence_number=5, command_status=Status.ESME_RINVCMDID)


def _check_unknown(data: bytes) -> None:
    with pytest.raises(PduError) as info:
        decode(data)
    assert info.value.status == Status.ESME_RINVCMDID
    assert info.value.response() == GenericNack(5, Status.ESME_RINVCMDID)


def _check_refused(data: bytes) -> None:
    assert decode(data) == SubmitSmResp(SUBMIT_SEQ, Status.ESME_RINVBNDSTS, "")


def _check_receipt(data: bytes) -> None:
    pdu = decode(data)
    assert isinstance(pdu, DeliverSm)
    assert pdu == receipt()
    parsed = parse_receipt(pdu)
    assert parsed is not None
    assert parsed.message_id == MESSAGE_ID
    assert parsed.state is MessageState.DELIVERED
    assert parsed.stat == "DELIVRD"
    assert parsed.text == TEXT_60[:20].strip()


def _part_vector(
    parts: Callable[[], list[bytes]], index: int, reference: int, text: str, enc: Encoding
) -> Vector:
    def check(data: bytes) -> None:
        ies, payload = split_udh(data)
        total = len(parts())
        assert find_concat(ies) == Concat(reference, total, index + 1, ref16=False)
        decoded = payload.decode("utf-16-be") if enc is Encoding.UCS2 else gsm7.decode(payload)
        assert decoded
        assert text.startswith(decoded) if index == 0 else text.endswith(decoded)

    return Vector(lambda: parts()[index], check)


def _check_sar(data: bytes) -> None:
    body = encode(SubmitSm())[16:] + data  # an empty submit_sm's body with the TLVs after it
    spliced = decode(HEADER.pack(16 + len(body), SubmitSm.command_id, 0, 0) + body)
    assert isinstance(spliced, SubmitSm)
    assert spliced.tlvs == {
        Tag.SAR_MSG_REF_NUM: REF16.to_bytes(2, "big"),
        Tag.SAR_TOTAL_SEGMENTS: b"\x02",
        Tag.SAR_SEGMENT_SEQNUM: b"\x01",
    }


def _check_udh16(data: bytes) -> None:
    ies, rest = split_udh(data)
    assert rest == b""
    assert find_concat(ies) == Concat(REF16, 2, 1, ref16=True)


def _check_ports_concat(data: bytes) -> None:
    ies, rest = split_udh(data)
    assert rest == b""
    assert find_ports(ies) == Ports(2948, 9200, wide=True)
    assert find_concat(ies) == Concat(0x2A, 2, 1, ref16=False)


def _check_command_packet(data: bytes) -> None:
    ies, rest = split_udh(data)
    assert rest == b""
    assert ies == (InformationElement(IEI_COMMAND_PACKET, b""),)


VECTORS: dict[str, Vector] = {
    "bind_transceiver": _pdu_vector(bind_transceiver),
    "bind_transceiver_resp": _pdu_vector(bind_transceiver_resp),
    "submit_sm": _pdu_vector(submit_sm),
    "submit_sm_resp": _pdu_vector(submit_sm_resp),
    "deliver_sm_receipt": Vector(lambda: encode(receipt()), _check_receipt),
    "enquire_link": _pdu_vector(lambda: EnquireLink(sequence_number=3)),
    "enquire_link_resp": _pdu_vector(lambda: EnquireLinkResp(sequence_number=3)),
    "unknown_command": Vector(unknown_command, _check_unknown),
    "generic_nack": Vector(
        lambda: session_answer(Role.SMSC, unknown_command()), _check_generic_nack
    ),
    "refused_submit_sm_resp": Vector(
        lambda: session_answer(Role.SMSC, encode(submit_sm())), _check_refused
    ),
    "ucs2_part1": _part_vector(chinese_parts, 0, CHINESE_REF, CHINESE, Encoding.UCS2),
    "ucs2_part2": _part_vector(chinese_parts, 1, CHINESE_REF, CHINESE, Encoding.UCS2),
    "gsm7_part1": _part_vector(euro_parts, 0, EURO_REF, EURO_TEXT, Encoding.GSM7),
    "gsm7_part2": _part_vector(euro_parts, 1, EURO_REF, EURO_TEXT, Encoding.GSM7),
    "sar_tlvs": Vector(sar_tlvs, _check_sar),
    "udh16": Vector(udh16, _check_udh16),
    "udh_ports_concat": Vector(udh_ports_concat, _check_ports_concat),
    "udh_command_packet": Vector(udh_command_packet, _check_command_packet),
}

# -- reading the document -------------------------------------------------------------------


def checked_table(text: str, name: str) -> list[list[str]]:
    """The body rows (cells stripped) of the Markdown table after ``<!-- check: NAME -->``."""
    marker = f"<!-- check: {name} -->"
    assert text.count(marker) == 1, f"{DOC.name} must hold exactly one {marker}"
    lines = text.split(marker, 1)[1].lstrip("\n").splitlines()
    rows: list[list[str]] = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(rows) > 2, f"no table after {marker}"
    return rows[2:]  # past the header and the |---| line


def pretty(data: bytes) -> str:
    """Octets as 16 per line, for pasting into the document."""
    return "\n".join(data[i : i + 16].hex(" ").upper() for i in range(0, len(data), 16))


@pytest.fixture(scope="module")
def doc() -> str:
    """The document's text."""
    return DOC.read_text(encoding="utf-8")


# -- the tests ------------------------------------------------------------------------------


def test_parse_hex_ignores_annotations() -> None:
    """A vector line's hex ends at '#': field names, values and spaces are not octets."""
    assert parse_hex("00 00 00 10  # command_length 16\n0A0b # x 0x99\n\n") == bytes.fromhex(
        "000000100a0b"
    )


def test_doc_holds_exactly_the_known_vectors(doc: str) -> None:
    """Every vector the test can rebuild is in the document and the document has no other,
    so a vector cannot be dropped or added without a builder."""
    assert sorted(doc_vectors(doc)) == sorted(VECTORS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_matches_code(doc: str, name: str) -> None:
    """The document's octets are exactly what the code produces today."""
    built = VECTORS[name].build()
    documented = doc_vectors(doc).get(name)
    assert documented is not None, f"vector {name!r} missing from {DOC.name}"
    assert documented == built, f"{name}: the code now produces\n{pretty(built)}"


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_decodes_back(doc: str, name: str) -> None:
    """Each documented vector decodes back to what the document says it is."""
    VECTORS[name].check(doc_vectors(doc)[name])


def test_long_examples_reassemble_and_keep_pairs() -> None:
    """The worked long messages split where the document says and join back to the text:
    the Chinese part 1 stops before the surrogate pair of '𠮷', the GSM part 1 before the
    escape of '€'."""
    zh = chinese_parts()
    assert [len(part) for part in zh] == [6 + 132, 6 + 116]
    assert zh[1][6:10] == "𠮷".encode("utf-16-be")
    assert "".join(part[6:].decode("utf-16-be") for part in zh) == CHINESE
    eu = euro_parts()
    assert [len(part) for part in eu] == [6 + 152, 6 + 65]
    assert eu[1][6:8] == b"\x1b\x65"
    assert "".join(gsm7.decode(part[6:]) for part in eu) == EURO_TEXT


def test_submit_sm_example_is_what_the_esme_builds() -> None:
    """The documented submit_sm is what smsc.message builds for TEXT_60 to MSISDN with the
    default [smsc] configuration (sequence number aside)."""
    from smsc.message import OutboundMessage, build_submits
    from smsc.segment import ReferenceAllocator
    from stkpay.config import SmscConfig

    built = build_submits(OutboundMessage(MSISDN, text=TEXT_60), SmscConfig(), ReferenceAllocator())
    assert len(built) == 1
    built[0].sequence_number = SUBMIT_SEQ
    assert built[0] == submit_sm()


def test_receipt_example_has_udhi_clear_and_receipt_type() -> None:
    """The receipt example is an SMSC Delivery Receipt by esm_class (§5.2.12) without UDH."""
    pdu = receipt()
    assert pdu.esm_class == 0x04
    assert not pdu.esm_class & ESM_UDHI


# -- checked tables -------------------------------------------------------------------------

_ROLES = {"ESME": {Role.ESME}, "SMSC": {Role.SMSC}, "both": {Role.ESME, Role.SMSC}, "—": set()}
_BOUND = (State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX)


def test_session_table_matches_state_table(doc: str) -> None:
    """The §2.3 table in the document is session.py's: who may send each PDU in each state
    ('as bound': a response keeps the bound state's rule while unbinding), every command id
    has a row, and nothing may be sent in CLOSED."""
    rows = checked_table(doc, "session-states")
    names = {row[0].strip("`") for row in rows}
    assert names == {cid.name.lower() for cid in CommandId}
    columns = (State.OPEN, *_BOUND, State.UNBINDING)
    for row in rows:
        cid = CommandId[row[0].strip("`").upper()]
        assert len(row) == 1 + len(columns), row
        for state, cell in zip(columns, row[1:], strict=True):
            if state is State.UNBINDING and cell == "as bound":
                for role in Role:
                    for bound in _BOUND:
                        unbinding = cid in _LEGAL[role, State.UNBINDING, bound]
                        assert unbinding == (cid in _LEGAL[role, bound, bound]), (cid, role)
                continue
            contexts = (
                _BOUND if state is State.UNBINDING else (None if state is State.OPEN else state,)
            )
            for bound_as in contexts:
                legal = {role for role in Role if cid in _LEGAL[role, state, bound_as]}
                assert legal == _ROLES[cell], (cid.name, state.name, cell)
    for role in Role:
        assert not _LEGAL[role, State.CLOSED, None]


_UNITS: dict[str, int] = {"GSM 7-bit": 1, "UCS2": 2, "8-bit": 1}


def _payloads(label: str, units: int, mode: LongMode) -> list[bytes]:
    """Each part's user data without its UDH, for ``units`` characters (or octets)."""
    if label == "GSM 7-bit":
        segments = segment_text("a" * units, Encoding.GSM7, mode, 1)
    elif label == "UCS2":
        segments = segment_text("中" * units, Encoding.UCS2, mode, 1)
    else:
        segments = segment_binary(b"\x00" * units, mode, 1)
    return [
        s.short_message[1 + s.short_message[0] :] if s.udhi else s.short_message for s in segments
    ]


def test_capacity_table(doc: str) -> None:
    """Per-part capacities in the document are what segmentation produces: the most one
    unsplit part holds, then each part's payload of a three-part message in each mode."""
    rows = {row[0]: [int(cell) for cell in row[2:]] for row in checked_table(doc, "capacities")}
    assert set(rows) == set(_UNITS)
    for label, width in _UNITS.items():
        single, *caps = rows[label]
        assert [len(p) for p in _payloads(label, single, LongMode.UDH8)] == [single * width]
        assert len(_payloads(label, single + 1, LongMode.UDH8)) == 2, label
        for mode, cap in zip((LongMode.UDH8, LongMode.UDH16, LongMode.SAR), caps, strict=True):
            sizes = [len(p) for p in _payloads(label, 3 * cap, mode)]
            assert sizes == [cap * width] * 3, (label, mode)


_CODING_RE = re.compile(r"0x([0-9A-Fa-f]{2})(?:\s*[-–]\s*0x([0-9A-Fa-f]{2}))?")


def test_data_coding_table(doc: str) -> None:
    """Each row of the data_coding table whose 'read as' is one encoding holds for every
    value it lists (0x00 with the default configuration)."""
    checked = 0
    for row in checked_table(doc, "data-coding"):
        codings, read_as = row[0], row[2]
        match = re.fullmatch(r"`(\w+)`.*", read_as)
        if match is None:
            continue
        expected = Encoding(match.group(1))
        values: list[int] = []
        for lo, hi in _CODING_RE.findall(codings):
            values.extend(range(int(lo, 16), int(hi or lo, 16) + 1))
        assert values, row
        for value in values:
            assert encoding_of(value) is expected, (hex(value), row)
        checked += 1
    assert checked >= 8


def test_msg_id_table(doc: str) -> None:
    """The message-id normalisation examples give the keys the document says (Kannel's
    msg-id-type, smsc.dlr.MsgIdNormalizer)."""
    rows = checked_table(doc, "msg-id-type")
    assert len(rows) >= 5
    for row in rows:
        kind, resp, rcpt, key = (cell.strip("`") for cell in row[:4])
        norm = MsgIdNormalizer(int(kind))
        assert norm.from_submit_resp(resp) == key, row
        assert norm.from_receipt(rcpt) == key, row


def test_session_accepts_documented_bind() -> None:
    """The documented bind_transceiver is accepted by an SMSC-side session in OPEN."""
    session = SmppSession(Role.SMSC)
    events = session.receive_data(encode(bind_transceiver()))
    assert events == [PduReceived(bind_transceiver())]
