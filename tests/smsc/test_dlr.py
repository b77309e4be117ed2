"""Tests for smsc.dlr: receipt parsing (SMPP 3.4 §5.2.12, §5.3.2, Appendix B), formatting,
message-id normalisation (Kannel msg-id-type) and the receipt matcher."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsc.dlr import (
    _CANONICAL_RE,
    FINAL_STATES,
    MsgIdNormalizer,
    Receipt,
    ReceiptMatcher,
    RecentKeys,
    _scan_fields,
    _text_fields,
    format_receipt_text,
    is_receipt,
    parse_receipt,
    receipt_pdu,
    stat_for_state,
    state_for_stat,
)
from smsc.pdu import DataSm, DeliverSm, MessageState, Tag

STATS = ["DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE"]


def dlr(
    text: bytes | str = b"",
    *,
    esm_class: int = 0x04,
    tlvs: dict[int, bytes] | None = None,
    data_coding: int = 0,
) -> DeliverSm:
    """A deliver_sm receipt from the handset 8613800000001 to the ESME's short code."""
    if isinstance(text, str):
        text = text.encode()
    return DeliverSm(
        source_addr="8613800000001",
        destination_addr="10086",
        esm_class=esm_class,
        data_coding=data_coding,
        short_message=text,
        tlvs=tlvs or {},
    )


def parsed(pdu: DeliverSm | DataSm) -> Receipt:
    receipt = parse_receipt(pdu)
    assert receipt is not None
    return receipt


# -- is_receipt ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("esm_class", "expected"),
    [
        (0x00, False),  # default message type: MO
        (0x04, True),  # SMSC delivery receipt
        (0x44, True),  # receipt with UDHI
        (0x84, True),  # receipt with reply path
        (0x20, True),  # intermediate delivery notification
        (0x08, False),  # SME delivery acknowledgement: from the handset, not the SMSC
        (0x10, False),  # SME manual/user acknowledgement
        (0x18, False),  # conversation abort
        (0x40, False),  # MO with UDHI
        (0x03, False),  # messaging-mode bits only
    ],
)
def test_is_receipt_reads_message_type_bits(esm_class: int, expected: bool) -> None:
    """§5.2.12: only message type 0x04 or 0x20 under mask 0x3C make a receipt."""
    assert is_receipt(esm_class) is expected


def test_non_receipt_with_receipt_tlvs_is_not_a_receipt() -> None:
    """An ordinary MO carrying receipted_message_id/message_state is still an MO (None)."""
    pdu = dlr(
        "id:1 stat:DELIVRD",
        esm_class=0x00,
        tlvs={Tag.RECEIPTED_MESSAGE_ID: b"1\x00", Tag.MESSAGE_STATE: b"\x02"},
    )
    assert parse_receipt(pdu) is None


# -- parse: TLV only, text only, both -------------------------------------------------


def test_parse_tlv_only() -> None:
    """TLVs alone give id, state, the derived 7-letter stat and the network error code."""
    receipt = parsed(
        dlr(
            tlvs={
                Tag.RECEIPTED_MESSAGE_ID: b"ab12F\x00",
                Tag.MESSAGE_STATE: bytes([MessageState.UNDELIVERABLE]),
                Tag.NETWORK_ERROR_CODE: b"\x03\x00\x01",
            }
        )
    )
    assert receipt.message_id == "ab12F"
    assert receipt.state is MessageState.UNDELIVERABLE
    assert receipt.stat == "UNDELIV"
    assert receipt.err == ""
    assert receipt.network_error == b"\x03\x00\x01"
    assert receipt.submitted is None
    assert receipt.delivered is None
    assert receipt.text == ""
    assert receipt.source == "8613800000001"
    assert receipt.destination == "10086"
    assert receipt.final
    assert not receipt.delivered_ok


def test_parse_tlv_id_without_nul_and_padded() -> None:
    """A receipted_message_id without its NUL, or padded with spaces, still reads."""
    assert parsed(dlr(tlvs={Tag.RECEIPTED_MESSAGE_ID: b" 77 "})).message_id == "77"
    assert parsed(dlr(tlvs={Tag.RECEIPTED_MESSAGE_ID: b"77\x00junk"})).message_id == "77"


def test_parse_text_only_appendix_b() -> None:
    """The Appendix B text alone fills every field."""
    receipt = parsed(
        dlr(
            "id:0123456789 sub:001 dlvrd:001 submit date:1901011200 "
            "done date:1901011201 stat:DELIVRD err:000 text:Hello world"
        )
    )
    assert receipt == Receipt(
        message_id="0123456789",
        state=MessageState.DELIVERED,
        stat="DELIVRD",
        err="000",
        submitted=1,
        delivered=1,
        submit_date="1901011200",
        done_date="1901011201",
        network_error=None,
        source="8613800000001",
        destination="10086",
        text="Hello world",
    )
    assert receipt.final
    assert receipt.delivered_ok


def test_parse_both_tlv_wins() -> None:
    """With both, the TLVs decide message_id and state; stat stays as the text wrote it."""
    receipt = parsed(
        dlr(
            "id:XYZ sub:001 dlvrd:001 submit date:1901011200 done date:1901011201 "
            "stat:DELIVRD err:000 text:x",
            tlvs={
                Tag.RECEIPTED_MESSAGE_ID: b"ABC\x00",
                Tag.MESSAGE_STATE: bytes([MessageState.UNDELIVERABLE]),
            },
        )
    )
    assert receipt.message_id == "ABC"
    assert receipt.state is MessageState.UNDELIVERABLE
    assert receipt.stat == "DELIVRD"
    assert receipt.err == "000"
    assert not receipt.delivered_ok


def test_parse_empty_tlv_id_falls_back_to_text() -> None:
    """An empty receipted_message_id (just the NUL) does not hide the text's id."""
    receipt = parsed(dlr("id:555 stat:EXPIRED", tlvs={Tag.RECEIPTED_MESSAGE_ID: b"\x00"}))
    assert receipt.message_id == "555"
    assert receipt.state is MessageState.EXPIRED


@pytest.mark.parametrize("value", [b"", b"\x00", b"\x09", b"\xff"])
def test_parse_invalid_state_tlv_falls_back_to_text(value: bytes) -> None:
    """A message_state TLV that is empty or not a §5.2.28 value yields to the text's stat."""
    receipt = parsed(dlr("id:1 stat:REJECTD", tlvs={Tag.MESSAGE_STATE: value}))
    assert receipt.state is MessageState.REJECTED
    assert receipt.stat == "REJECTD"


def test_parse_wide_state_tlv() -> None:
    """A message_state sent as a 4-octet integer is read as its value."""
    receipt = parsed(dlr(tlvs={Tag.MESSAGE_STATE: b"\x00\x00\x00\x02"}))
    assert receipt.state is MessageState.DELIVERED
    assert receipt.stat == "DELIVRD"


# -- parse: real-world text variants ---------------------------------------------------

# (short_message, expected fields). Each line is a shape seen from real SMSCs or gateways.
VARIANTS: list[tuple[bytes, dict[str, object]]] = [
    # Kannel / most SMSCs: lowercase keys, decimal id, 10-digit dates.
    (
        b"id:1234567890 sub:001 dlvrd:001 submit date:2401311159 done date:2401311200 "
        b"stat:DELIVRD err:000 text:Ni hao",
        {"message_id": "1234567890", "state": MessageState.DELIVERED, "text": "Ni hao"},
    ),
    # Appendix B spelling with capitalised keys ("Text:").
    (
        b"id:42 Sub:001 Dlvrd:000 Submit date:2401311159 Done date:2401311200 "
        b"Stat:UNDELIV Err:001 Text:Hello",
        {"submitted": 1, "delivered": 0, "stat": "UNDELIV", "err": "001", "text": "Hello"},
    ),
    # All upper case keys and a lower-case stat.
    (
        b"ID:42 SUB:1 DLVRD:1 SUBMIT DATE:2401311159 DONE DATE:2401311200 STAT:delivrd "
        b"ERR:0 TEXT:hi",
        {"submitted": 1, "stat": "DELIVRD", "state": MessageState.DELIVERED, "err": "0"},
    ),
    # Dates with seconds.
    (
        b"id:42 sub:001 dlvrd:001 submit date:240131115959 done date:240131120001 "
        b"stat:DELIVRD err:000 text:",
        {"submit_date": "240131115959", "done_date": "240131120001", "text": ""},
    ),
    # Hex ids, upper and lower case.
    (b"id:6B3F1A2C sub:001 stat:DELIVRD", {"message_id": "6B3F1A2C"}),
    (b"id:00ff10 stat:ENROUTE", {"message_id": "00ff10", "state": MessageState.ENROUTE}),
    # Missing err, missing text, missing dates.
    (
        b"id:7 sub:001 dlvrd:001 stat:DELIVRD text:abc",
        {"err": "", "submit_date": "", "done_date": "", "text": "abc"},
    ),
    (b"id:7 sub:001 dlvrd:001 stat:EXPIRED err:000", {"text": "", "stat": "EXPIRED"}),
    # text: with colons and key-like words in it: everything after text: is text.
    (
        b"id:9 sub:001 dlvrd:001 stat:DELIVRD err:000 Text:Pay: 10 id:x stat:UNDELIV err:5",
        {
            "message_id": "9",
            "state": MessageState.DELIVERED,
            "err": "000",
            "text": "Pay: 10 id:x stat:UNDELIV err:5",
        },
    ),
    # Keys that appear only inside text: are still text.
    (
        b"id:9 stat:DELIVRD text:see sub:5 err:7 done date:2401311200",
        {
            "submitted": None,
            "err": "",
            "done_date": "",
            "text": "see sub:5 err:7 done date:2401311200",
        },
    ),
    # A key repeated before text: the first occurrence wins.
    (b"id:1 stat:DELIVRD id:2 stat:UNDELIV", {"message_id": "1", "stat": "DELIVRD"}),
    # Extra spaces everywhere, spaces around the colon.
    (
        b"  id: 12345   sub : 001  dlvrd:  001   submit  date: 2401311159  "
        b"done date :2401311200   stat: DELIVRD  err: 000   text:  padded  ",
        {
            "message_id": "12345",
            "submitted": 1,
            "delivered": 1,
            "submit_date": "2401311159",
            "done_date": "2401311200",
            "stat": "DELIVRD",
            "err": "000",
            "text": "padded",
        },
    ),
    # Another field order.
    (
        b"stat:REJECTD err:069 id:abc dlvrd:000 sub:001",
        {"message_id": "abc", "state": MessageState.REJECTED, "err": "069", "delivered": 0},
    ),
    # Full state names instead of the 7-letter words.
    (b"id:1 stat:DELIVERED", {"stat": "DELIVRD", "state": MessageState.DELIVERED}),
    (b"id:1 stat:UNDELIVERABLE", {"stat": "UNDELIV", "state": MessageState.UNDELIVERABLE}),
    # Buffered/acked words (Kannel accepts them as intermediate).
    (b"id:1 stat:BUFFRED", {"stat": "ENROUTE", "state": MessageState.ENROUTE}),
    (b"id:1 stat:ACKED", {"stat": "ACCEPTD", "state": MessageState.ACCEPTED}),
    # Numeric stat.
    (b"id:1 stat:5", {"stat": "UNDELIV", "state": MessageState.UNDELIVERABLE}),
    # Unknown stat word: kept upper-cased, no state.
    (b"id:1 stat:Failed", {"stat": "FAILED", "state": None}),
    # Underscore dates, "error:" key.
    (
        b"id:1 submit_date:2401311159 done_date:2401311200 stat:DELIVRD error:000",
        {"submit_date": "2401311159", "done_date": "2401311200", "err": "000"},
    ),
    # C string NUL sent inside short_message.
    (b"id:1 stat:DELIVRD err:000 text:hi\x00", {"text": "hi", "err": "000"}),
    # Non-numeric counts: None, not a crash.
    (b"id:1 sub:one dlvrd:-1 stat:DELIVRD", {"submitted": None, "delivered": None}),
    # Junk: defaults.
    (b"\xff\xfe garbage", {"message_id": "", "state": None, "stat": "", "text": ""}),
    # Empty id value followed by fields.
    (b"id: sub:001 stat:DELIVRD", {"message_id": "", "submitted": 1}),
    # Latin-1 text that is not UTF-8.
    (b"id:1 stat:DELIVRD text:caf\xe9", {"text": "café"}),
]


@pytest.mark.parametrize(("short_message", "expected"), VARIANTS)
def test_parse_real_world_text_variants(short_message: bytes, expected: dict[str, object]) -> None:
    """Each real-world receipt text shape parses to the expected fields."""
    receipt = parsed(dlr(short_message))
    for name, value in expected.items():
        assert getattr(receipt, name) == value, name


def test_parse_ucs2_receipt_text() -> None:
    """A receipt text sent as UCS2 (data_coding 0x08) is decoded as UTF-16-BE."""
    text = "id:88 stat:DELIVRD err:000 text:你好"
    receipt = parsed(dlr(text.encode("utf-16-be"), data_coding=0x08))
    assert (receipt.message_id, receipt.stat, receipt.text) == ("88", "DELIVRD", "你好")


def test_parse_data_sm_receipt_from_message_payload() -> None:
    """A data_sm receipt (§4.7.1) carries its text in message_payload."""
    pdu = DataSm(
        source_addr="8613800000001",
        destination_addr="10086",
        esm_class=0x04,
        tlvs={Tag.MESSAGE_PAYLOAD: b"id:31 sub:001 dlvrd:001 stat:DELIVRD err:000"},
    )
    receipt = parsed(pdu)
    assert (receipt.message_id, receipt.state, receipt.delivered) == (
        "31",
        MessageState.DELIVERED,
        1,
    )


def test_parse_deliver_sm_payload_when_short_message_empty() -> None:
    """A deliver_sm with an empty short_message reads the text from message_payload."""
    receipt = parsed(dlr(tlvs={Tag.MESSAGE_PAYLOAD: b"id:32 stat:EXPIRED"}))
    assert (receipt.message_id, receipt.state) == ("32", MessageState.EXPIRED)


def test_parse_skips_udh_when_udhi_set() -> None:
    """With UDHI, the UDH in front of the receipt text is skipped."""
    receipt = parsed(dlr(b"\x05\x00\x03\x01\x01\x01id:33 stat:DELIVRD", esm_class=0x44))
    assert (receipt.message_id, receipt.stat) == ("33", "DELIVRD")


def test_intermediate_notification_is_never_final() -> None:
    """esm_class 0x20 marks an intermediate notification: not final even with stat DELIVRD."""
    receipt = parsed(dlr("id:1 stat:DELIVRD", esm_class=0x20))
    assert receipt.intermediate
    assert receipt.state is MessageState.DELIVERED
    assert not receipt.final
    assert not receipt.delivered_ok


@pytest.mark.parametrize("state", list(MessageState))
def test_final_and_delivered_ok_per_state(state: MessageState) -> None:
    """ENROUTE and ACCEPTED are intermediate; every other state is final; only DELIVERED ok."""
    receipt = Receipt(message_id="1", state=state)
    assert receipt.final is (state not in (MessageState.ENROUTE, MessageState.ACCEPTED))
    assert receipt.final is (state in FINAL_STATES)
    assert receipt.delivered_ok is (state is MessageState.DELIVERED)


def test_no_state_is_not_final() -> None:
    """A receipt whose state could not be read is neither final nor delivered."""
    receipt = Receipt(message_id="1")
    assert not receipt.final
    assert not receipt.delivered_ok


def test_as_dict_is_json_ready() -> None:
    """as_dict names the state and hex-encodes the network error."""
    receipt = Receipt(
        message_id="1", state=MessageState.UNDELIVERABLE, network_error=b"\x03\x00\x01"
    )
    view = receipt.as_dict()
    assert view["state"] == "UNDELIVERABLE"
    assert view["network_error"] == "030001"
    assert view["final"] is True


@pytest.mark.parametrize("state", list(MessageState))
def test_stat_state_round_trip(state: MessageState) -> None:
    """Every state has a 7-letter stat that maps back to it."""
    stat = stat_for_state(state)
    assert len(stat) == 7
    assert state_for_stat(stat) is state
    assert state_for_stat(stat.lower()) is state
    assert state_for_stat(state.name) is state


def test_state_for_unknown_stat_is_none() -> None:
    """An unknown stat word maps to no state."""
    assert state_for_stat("NOPE") is None
    assert state_for_stat("") is None


# -- format_receipt_text / receipt_pdu ---------------------------------------------------


def test_format_receipt_text_exact() -> None:
    """The Appendix B layout, counts zero-padded to 3 digits, text cut to 20 characters."""
    text = format_receipt_text(
        "0A1B",
        submitted=1,
        delivered=0,
        submit_date="2401311159",
        done_date="2401311200",
        stat="UNDELIV",
        err="001",
        text="0123456789abcdefghijKLMN",
    )
    assert text == (
        "id:0A1B sub:001 dlvrd:000 submit date:2401311159 done date:2401311200 "
        "stat:UNDELIV err:001 text:0123456789abcdefghij"
    )


@pytest.mark.parametrize(
    ("message_id", "kwargs"),
    [
        ("1", {"submitted": -1}),
        ("1", {"delivered": -1}),
        ("1", {"stat": "DEL IVRD"}),
        ("1", {"err": "0 0"}),
        ("1", {"submit_date": "2401 311159"}),
        ("1 2", {}),
        ("1\t2", {}),
    ],
)
def test_format_receipt_text_rejects_unparseable_values(
    message_id: str, kwargs: dict[str, object]
) -> None:
    """Negative counts or whitespace inside a token raise ValueError (caller error)."""
    args: dict[str, object] = {
        "submitted": 1,
        "delivered": 1,
        "submit_date": "2401311159",
        "done_date": "2401311200",
        "stat": "DELIVRD",
        "err": "000",
        "text": "",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match="receipt"):
        format_receipt_text(message_id, **args)  # type: ignore[arg-type]


def test_receipt_pdu_delivered() -> None:
    """A DELIVERED receipt: esm_class 0x04, text and TLVs, no network_error_code."""
    pdu = receipt_pdu(
        "1F",
        MessageState.DELIVERED,
        source_addr="8613800000001",
        destination_addr="10086",
        submit_date="2401311159",
        done_date="2401311200",
        text="你好 hello",
        source_addr_ton=1,
        source_addr_npi=1,
    )
    assert pdu.esm_class == 0x04
    assert (pdu.source_addr, pdu.destination_addr, pdu.source_addr_ton) == (
        "8613800000001",
        "10086",
        1,
    )
    assert pdu.short_message == (
        b"id:1F sub:001 dlvrd:001 submit date:2401311159 done date:2401311200 "
        b"stat:DELIVRD err:000 text:?? hello"
    )
    assert pdu.tlvs == {Tag.RECEIPTED_MESSAGE_ID: b"1F\x00", Tag.MESSAGE_STATE: b"\x02"}
    receipt = parsed(pdu)
    assert receipt.delivered_ok
    assert receipt.network_error is None


def test_receipt_pdu_undeliverable_has_network_error() -> None:
    """A failed receipt carries network_error_code: GSM + err by default, or as given."""
    pdu = receipt_pdu(
        "7",
        MessageState.UNDELIVERABLE,
        source_addr="a",
        destination_addr="b",
        submit_date="2401311159",
        done_date="2401311200",
        err=27,
    )
    assert pdu.tlvs[Tag.NETWORK_ERROR_CODE] == b"\x03\x00\x1b"
    receipt = parsed(pdu)
    assert (receipt.stat, receipt.err, receipt.delivered) == ("UNDELIV", "027", 0)
    assert receipt.final
    given_code = receipt_pdu(
        "7",
        MessageState.REJECTED,
        source_addr="a",
        destination_addr="b",
        submit_date="",
        done_date="",
        network_error=b"\x08\x00\x01",
    )
    assert given_code.tlvs[Tag.NETWORK_ERROR_CODE] == b"\x08\x00\x01"


def test_receipt_pdu_long_id_uses_message_payload() -> None:
    """Receipt text over 254 octets goes in message_payload and still parses."""
    long_id = "9" * 200
    pdu = receipt_pdu(
        long_id,
        MessageState.DELIVERED,
        source_addr="a",
        destination_addr="b",
        submit_date="2401311159",
        done_date="2401311200",
    )
    assert pdu.short_message == b""
    assert len(pdu.tlvs[Tag.MESSAGE_PAYLOAD]) > 254
    pdu.tlvs.pop(Tag.RECEIPTED_MESSAGE_ID)
    assert parsed(pdu).message_id == long_id


@pytest.mark.parametrize(
    "kwargs",
    [{"message_id": "ид"}, {"err": -1}, {"err": 0x10000}, {"network_error": b"\x03\x00"}],
)
def test_receipt_pdu_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    """Non-ASCII ids, out-of-range err and a network error not 3 octets raise ValueError."""
    args: dict[str, object] = {
        "message_id": "1",
        "state": MessageState.UNDELIVERABLE,
        "source_addr": "a",
        "destination_addr": "b",
        "submit_date": "",
        "done_date": "",
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        receipt_pdu(**args)  # type: ignore[arg-type]


def test_receipt_pdu_survives_the_wire_codec() -> None:
    """encode then decode with smsc.codec keeps the receipt parseable and equal."""
    codec = pytest.importorskip("smsc.codec")
    pdu = receipt_pdu(
        "00AB",
        MessageState.EXPIRED,
        source_addr="8613800000001",
        destination_addr="10086",
        submit_date="2401311159",
        done_date="2401311200",
        sequence_number=5,
        text="hi",
    )
    decoded = codec.decode(codec.encode(pdu))
    assert isinstance(decoded, DeliverSm)
    assert parse_receipt(decoded) == parse_receipt(pdu)


# -- hypothesis: round trip and fuzz -----------------------------------------------------

# Tokens that must not contain whitespace (Unicode Z*/C* excluded covers str.isspace()).
tokens = st.text(st.characters(blacklist_categories=("Z", "C")), max_size=30)
dates = st.one_of(st.just(""), st.from_regex(r"\A[0-9]{10}([0-9]{2})?\Z"))


@given(
    message_id=tokens,
    submitted=st.integers(0, 10**6),
    delivered=st.integers(0, 10**6),
    submit_date=dates,
    done_date=dates,
    stat=st.sampled_from(STATS),
    err=tokens,
    text=st.text(st.characters(codec="utf-8", blacklist_characters="\x00")),
)
def test_format_then_parse_round_trip(
    *,
    message_id: str,
    submitted: int,
    delivered: int,
    submit_date: str,
    done_date: str,
    stat: str,
    err: str,
    text: str,
) -> None:
    """Any formatted receipt text parses back to the same fields (text: first 20, trimmed)."""
    body = format_receipt_text(
        message_id,
        submitted=submitted,
        delivered=delivered,
        submit_date=submit_date,
        done_date=done_date,
        stat=stat,
        err=err,
        text=text,
    )
    receipt = parsed(dlr(body.encode("utf-8")))
    assert receipt.message_id == message_id
    assert (receipt.submitted, receipt.delivered) == (submitted, delivered)
    assert (receipt.submit_date, receipt.done_date) == (submit_date, done_date)
    assert receipt.stat == stat
    assert receipt.state is state_for_stat(stat)
    assert receipt.err == err
    assert receipt.text == text[:20].strip()


@given(
    message_id=tokens,
    submitted=st.integers(0, 10**6),
    stat=tokens,
    err=tokens,
    dates=st.tuples(tokens, tokens),
    text=st.text(),
)
def test_canonical_fast_path_agrees_with_general_scan(
    *,
    message_id: str,
    submitted: int,
    stat: str,
    err: str,
    dates: tuple[str, str],
    text: str,
) -> None:
    """The fast path for the canonical layout gives exactly what the general scan gives."""
    body = format_receipt_text(
        message_id,
        submitted=submitted,
        delivered=submitted,
        submit_date=dates[0],
        done_date=dates[1],
        stat=stat,
        err=err,
        text=text,
    )
    assert _CANONICAL_RE.fullmatch(body) is not None
    assert _text_fields(body) == _scan_fields(body)


@given(
    message_id=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=64),
    state=st.sampled_from(list(MessageState)),
    submitted=st.integers(0, 999),
    err=st.integers(0, 0xFFFF),
)
def test_receipt_pdu_then_parse_round_trip(
    message_id: str, state: MessageState, submitted: int, err: int
) -> None:
    """receipt_pdu builds what parse_receipt reads back: id, state, stat, counts, err."""
    receipt = parsed(
        receipt_pdu(
            message_id,
            state,
            source_addr="a",
            destination_addr="b",
            submit_date="2401311159",
            done_date="2401311200",
            submitted=submitted,
            err=err,
        )
    )
    assert receipt.message_id == message_id.strip()
    assert receipt.state is state
    assert receipt.stat == stat_for_state(state)
    assert receipt.submitted == submitted
    assert receipt.delivered == (submitted if state is MessageState.DELIVERED else 0)
    assert receipt.err == f"{err:03d}"


_KEYS = [b"id:", b"sub:", b"dlvrd:", b"submit date:", b"done date:", b"stat:", b"err:", b"text:"]
junk = st.lists(st.one_of(st.binary(max_size=12), st.sampled_from([*_KEYS, b" ", b"\x00"])))


@settings(max_examples=300)
@given(
    pieces=junk,
    esm_class=st.integers(0, 255),
    data_coding=st.integers(0, 255),
    tlvs=st.dictionaries(
        st.sampled_from(
            [
                Tag.RECEIPTED_MESSAGE_ID,
                Tag.MESSAGE_STATE,
                Tag.NETWORK_ERROR_CODE,
                Tag.MESSAGE_PAYLOAD,
            ]
        ),
        st.binary(max_size=12),
    ),
)
def test_parse_never_raises_on_junk(
    pieces: list[bytes], esm_class: int, data_coding: int, tlvs: dict[int, bytes]
) -> None:
    """Any short_message/TLV content yields a Receipt (or None for non-receipts), no error."""
    pdu = dlr(b"".join(pieces)[:254], esm_class=esm_class, tlvs=tlvs, data_coding=data_coding)
    receipt = parse_receipt(pdu)
    assert (receipt is not None) is is_receipt(esm_class)
    data_sm = DataSm(esm_class=esm_class, data_coding=data_coding, tlvs=tlvs)
    assert (parse_receipt(data_sm) is not None) is is_receipt(esm_class)


# -- MsgIdNormalizer -------------------------------------------------------------------


def test_normalizer_string_rule() -> None:
    """-1: case-insensitive, leading zeros stripped, an all-zero id is '0', '' stays ''."""
    norm = MsgIdNormalizer()
    assert norm.from_submit_resp("00AbC") == norm.from_receipt("abc") == "abc"
    assert norm.from_submit_resp("000") == norm.from_receipt("0") == "0"
    assert norm.from_submit_resp(" 12 ") == norm.from_receipt("012") == "12"
    assert norm.from_submit_resp("") == ""
    assert norm.from_submit_resp("ab") != norm.from_receipt("abc")


@pytest.mark.parametrize(
    ("msg_id_type", "resp", "receipt"),
    [
        (0, "000123", "123"),  # both decimal
        (1, "00Ff", "255"),  # resp hex, receipt decimal
        (2, "255", "0xff"),  # resp decimal, receipt hex (0x prefix accepted)
        (2, "00255", "FF"),
        (3, "00fF", "FF"),  # both hex
    ],
)
def test_normalizer_kannel_types_match(msg_id_type: int, resp: str, receipt: str) -> None:
    """Each Kannel msg-id-type maps the resp's and the receipt's spelling to one key."""
    norm = MsgIdNormalizer(msg_id_type)
    assert norm.from_submit_resp(resp) == norm.from_receipt(receipt)


@pytest.mark.parametrize(
    ("msg_id_type", "resp", "receipt"),
    [
        (0, "10", "0x10"),  # decimal receipt: "0x10" is a string, not 16
        (1, "10", "10"),  # hex 10 = 16 != decimal 10
        (2, "10", "10"),
        (-1, "0x10", "16"),
    ],
)
def test_normalizer_kannel_types_distinguish(msg_id_type: int, resp: str, receipt: str) -> None:
    """Different values in the configured bases do not match."""
    norm = MsgIdNormalizer(msg_id_type)
    assert norm.from_submit_resp(resp) != norm.from_receipt(receipt)


@pytest.mark.parametrize("msg_id_type", [0, 1, 2, 3])
def test_normalizer_fallback_to_string_rule(msg_id_type: int) -> None:
    """An id that does not parse in its base (or signs, underscores, huge) compares as a string."""
    norm = MsgIdNormalizer(msg_id_type)
    assert norm.from_submit_resp("Zz-01") == norm.from_receipt("zZ-01") == "zz-01"
    assert norm.from_submit_resp("+12") == "+12"
    assert norm.from_receipt("1_0") == "1_0"
    huge = "1" * 5000
    assert norm.from_submit_resp(huge) == norm.from_receipt(huge) == huge


@pytest.mark.parametrize("bad", [-2, 4])
def test_normalizer_rejects_unknown_type(bad: int) -> None:
    """Only -1..3 are Kannel msg-id-types."""
    with pytest.raises(ValueError, match="msg_id_type"):
        MsgIdNormalizer(bad)


@given(
    value=st.integers(0, 2**64),
    msg_id_type=st.integers(0, 3),
    zeros=st.integers(0, 3),
    upper=st.booleans(),
)
def test_normalizer_numeric_property(value: int, msg_id_type: int, zeros: int, upper: bool) -> None:
    """For every type, the same number written in the resp's and the receipt's base (any case,
    any leading zeros) gives one key; a different number gives another."""
    norm = MsgIdNormalizer(msg_id_type)

    def spell(number: int, hex_: bool) -> str:
        text = "0" * zeros + (f"{number:x}" if hex_ else str(number))
        return text.upper() if upper else text

    resp = spell(value, bool(msg_id_type & 1))
    assert norm.from_submit_resp(resp) == norm.from_receipt(spell(value, bool(msg_id_type & 2)))
    assert norm.from_submit_resp(resp) != norm.from_receipt(spell(value + 1, bool(msg_id_type & 2)))


# -- ReceiptMatcher --------------------------------------------------------------------


def rc(message_id: str, state: MessageState = MessageState.DELIVERED) -> Receipt:
    return Receipt(message_id=message_id, state=state)


def test_matcher_resp_then_final_receipt() -> None:
    """A final receipt after the resp returns the token and frees the pending entry."""
    matcher: ReceiptMatcher[str] = ReceiptMatcher(MsgIdNormalizer())
    assert matcher.submitted("A1", "msg-1", now=0.0) is None
    assert matcher.pending_count == 1
    assert matcher.receipt(rc("a1"), now=1.0) == "msg-1"
    assert matcher.pending_count == 0
    assert matcher.stats.matched == 1


def test_matcher_intermediate_keeps_pending() -> None:
    """ENROUTE/ACCEPTED receipts return the token and keep the entry for the final one."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer())
    matcher.submitted("5", 50, now=0.0)
    assert matcher.receipt(rc("5", MessageState.ACCEPTED), now=1.0) == 50
    assert matcher.receipt(rc("5", MessageState.ENROUTE), now=2.0) == 50
    assert matcher.pending_count == 1
    assert matcher.receipt(rc("5", MessageState.UNDELIVERABLE), now=3.0) == 50
    assert matcher.pending_count == 0
    assert matcher.stats.matched == 3


def test_matcher_duplicate_final_receipt_yields_nothing() -> None:
    """A repeated final receipt is counted as a duplicate, returns None and is not parked."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer())
    matcher.submitted("5", 50, now=0.0)
    assert matcher.receipt(rc("5"), now=1.0) == 50
    assert matcher.receipt(rc("5"), now=2.0) is None
    assert matcher.receipt(rc("5", MessageState.ENROUTE), now=3.0) is None
    assert matcher.stats.duplicates == 2
    assert matcher.early_count == 0


def test_matcher_receipt_before_resp_is_matched() -> None:
    """A final receipt before its resp is parked; the resp gets it back; no token stored."""
    matcher: ReceiptMatcher[str] = ReceiptMatcher(MsgIdNormalizer(1))
    early = rc("255")
    assert matcher.receipt(early, now=0.0) is None
    assert matcher.early_count == 1
    assert matcher.submitted("FF", "msg", now=0.1) is early
    assert matcher.early_count == 0
    assert matcher.pending_count == 0
    assert matcher.stats.early_parked == 1
    assert matcher.stats.early_matched == 1
    assert matcher.receipt(early, now=0.2) is None  # the same receipt again is a duplicate
    assert matcher.stats.duplicates == 1


def test_matcher_early_intermediate_stores_token() -> None:
    """An early intermediate receipt is returned by submitted() and the token kept for the
    final receipt."""
    matcher: ReceiptMatcher[str] = ReceiptMatcher(MsgIdNormalizer())
    enroute = rc("9", MessageState.ENROUTE)
    assert matcher.receipt(enroute, now=0.0) is None
    assert matcher.submitted("9", "msg", now=0.1) is enroute
    assert matcher.pending_count == 1
    assert matcher.receipt(rc("9"), now=1.0) == "msg"


def test_matcher_early_final_supersedes_early_intermediate() -> None:
    """Two early receipts for one id: the final one wins; a later one is a duplicate."""
    matcher: ReceiptMatcher[str] = ReceiptMatcher(MsgIdNormalizer())
    final = rc("9", MessageState.EXPIRED)
    matcher.receipt(rc("9", MessageState.ENROUTE), now=0.0)
    matcher.receipt(final, now=0.1)
    matcher.receipt(rc("9", MessageState.ENROUTE), now=0.2)
    assert matcher.early_count == 1
    assert matcher.stats.duplicates == 1
    assert matcher.submitted("9", "msg", now=0.3) is final
    assert matcher.pending_count == 0


def test_matcher_max_pending_drops_oldest() -> None:
    """Over max_pending the oldest submission is dropped (counted); its receipt is unmatched."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer(), max_pending=2)
    for i in range(3):
        matcher.submitted(str(i + 1), i, now=float(i))
    assert matcher.pending_count == 2
    assert matcher.stats.dropped == 1
    assert matcher.receipt(rc("1"), now=5.0) is None
    assert matcher.receipt(rc("2"), now=5.0) == 1
    assert matcher.receipt(rc("3"), now=5.0) == 2


def test_matcher_max_early_drops_oldest() -> None:
    """Over max_early the oldest parked receipt is dropped (counted)."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer(), max_early=2)
    for i in range(3):
        matcher.receipt(rc(str(i + 1)), now=float(i))
    assert matcher.early_count == 2
    assert matcher.stats.early_dropped == 1
    assert matcher.submitted("1", 1, now=5.0) is None
    assert matcher.submitted("3", 3, now=5.0) is not None


def test_matcher_max_early_zero_parks_nothing() -> None:
    """max_early=0 disables parking."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer(), max_early=0)
    assert matcher.receipt(rc("1"), now=0.0) is None
    assert matcher.early_count == 0
    assert matcher.stats.early_dropped == 1


def test_matcher_expiry() -> None:
    """Entries expire exactly at ttl (pending) and early_ttl (parked), counted separately."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer(), ttl=100.0, early_ttl=10.0)
    matcher.submitted("1", 1, now=0.0)
    matcher.submitted("2", 2, now=50.0)
    matcher.receipt(rc("e1"), now=0.0)
    matcher.receipt(rc("e2"), now=5.0)
    assert matcher.expire(9.9) == 0
    assert matcher.expire(10.0) == 1  # e1
    assert matcher.stats.unmatched_expired == 1
    assert matcher.expire(99.9) == 1  # e2
    assert matcher.expire(100.0) == 1  # "1"
    assert matcher.stats.pending_expired == 1
    assert matcher.receipt(rc("1"), now=100.0) is None
    assert matcher.receipt(rc("2"), now=100.0) == 2
    assert matcher.pending_count == 0


def test_matcher_recent_finals_expire() -> None:
    """Remembered final ids expire with ttl: a late receipt is then parked, not a duplicate."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer(), ttl=10.0)
    matcher.submitted("1", 1, now=0.0)
    matcher.receipt(rc("1"), now=1.0)
    matcher.expire(11.0)
    assert matcher.receipt(rc("1"), now=11.0) is None
    assert matcher.stats.duplicates == 0
    assert matcher.early_count == 1


def test_matcher_max_recent_bounds_duplicate_memory() -> None:
    """Between max_recent/2 and max_recent of the latest final ids are remembered as seen."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer(), max_recent=2)
    for i in (1, 2, 3):
        matcher.submitted(str(i), i, now=0.0)
        matcher.receipt(rc(str(i)), now=0.0)
    matcher.receipt(rc("3"), now=1.0)
    matcher.receipt(rc("2"), now=1.0)
    assert matcher.stats.duplicates == 2
    matcher.receipt(rc("1"), now=1.0)
    assert matcher.stats.duplicates == 2
    assert matcher.early_count == 1


def test_recent_keys_fixed_memory_and_generations() -> None:
    """RecentKeys keeps at least the last capacity/2 keys, forgets what is older than
    capacity, supports discard, and expires whole generations by time."""
    recent = RecentKeys(8)
    for i in range(100):
        recent.add(f"id{i}", float(i))
        assert all(f"id{j}" in recent for j in range(max(0, i - 3), i + 1))
        assert all(f"id{j}" not in recent for j in range(max(0, i - 7)))
    assert len(recent) <= 8
    recent.discard("id99")
    assert "id99" not in recent and "id98" in recent
    recent.expire(forget_before=99.0)
    assert len(recent) == 0 and "id98" not in recent
    with pytest.raises(ValueError):
        RecentKeys(0)


@given(st.lists(st.sampled_from([f"k{i}" for i in range(40)]), max_size=300))
def test_recent_keys_never_forgets_the_latest_half(keys: list[str]) -> None:
    """Whatever the sequence, the last capacity/2 distinct keys added are all remembered."""
    recent = RecentKeys(16)
    for n, key in enumerate(keys):
        recent.add(key, float(n))
    latest: list[str] = []
    for key in reversed(keys):
        if key not in latest:
            latest.append(key)
    assert all(key in recent for key in latest[:8])


def test_matcher_reused_id_replaces_older() -> None:
    """An id submitted again (SMSC counter wrapped) replaces the older entry, counted."""
    matcher: ReceiptMatcher[str] = ReceiptMatcher(MsgIdNormalizer())
    matcher.submitted("1", "old", now=0.0)
    matcher.receipt(rc("1"), now=0.5)
    matcher.submitted("1", "mid", now=1.0)
    matcher.submitted("1", "new", now=2.0)
    assert matcher.stats.dropped == 1
    assert matcher.pending_count == 1
    assert matcher.receipt(rc("1"), now=3.0) == "new"  # not a duplicate of the first
    assert matcher.expire(2.0 + 72 * 3600) == 0


def test_matcher_empty_ids_are_unmatchable() -> None:
    """An empty id (SMSC quirk) is neither stored nor parked."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer())
    assert matcher.submitted("", 1, now=0.0) is None
    assert matcher.receipt(rc(""), now=0.0) is None
    assert (matcher.pending_count, matcher.early_count) == (0, 0)
    assert matcher.stats.unmatchable == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": 0.0}, {"early_ttl": -1.0}, {"max_pending": 0}, {"max_early": -1}, {"max_recent": -1}],
)
def test_matcher_rejects_bad_bounds(kwargs: dict[str, float]) -> None:
    """Non-positive ttl or negative bounds are configuration errors."""
    with pytest.raises(ValueError):
        ReceiptMatcher(MsgIdNormalizer(), **kwargs)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(
    plan=st.lists(
        st.tuples(st.booleans(), st.integers(0, 3), st.booleans()), min_size=1, max_size=30
    ),
    rng=st.randoms(use_true_random=False),
)
def test_matcher_each_final_outcome_learned_once(
    plan: list[tuple[bool, int, bool]], rng: random.Random
) -> None:
    """Whatever the order of resps and receipts (early or late, intermediate receipts before
    or after the final one, duplicates) and however messages interleave, each message's final
    outcome reaches the caller exactly once and nothing stays stored."""
    matcher: ReceiptMatcher[int] = ReceiptMatcher(MsgIdNormalizer(3))
    queues: dict[int, list[tuple[str, Receipt]]] = {}
    for n, (upper, intermediates, duplicate) in enumerate(plan):
        resp_id = f"{n + 1:X}" if upper else f"0{n + 1:x}"
        receipt_id = f"{n + 1:x}"
        steps = [("resp", Receipt(message_id=resp_id)), ("dlr", rc(receipt_id))]
        steps += [("dlr", rc(receipt_id, MessageState.ENROUTE))] * intermediates
        if duplicate:
            steps.append(("dlr", rc(receipt_id)))
        rng.shuffle(steps)
        queues[n] = steps
    finals = dict.fromkeys(queues, 0)
    now = 0.0
    while queues:
        n = rng.choice(sorted(queues))
        kind, item = queues[n].pop(0)
        if not queues[n]:
            del queues[n]
        now += 0.01
        if kind == "resp":
            got = matcher.submitted(item.message_id, n, now)
            if got is not None and got.final:
                finals[n] += 1
        else:
            token = matcher.receipt(item, now)
            if token is not None:
                assert token == n
                finals[n] += item.final
    assert all(count == 1 for count in finals.values()), finals
    assert matcher.pending_count == 0
    assert matcher.early_count == 0
