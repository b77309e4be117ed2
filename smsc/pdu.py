"""SMPP 3.4 PDU model (SMPP v3.4 Issue 1.2, §4 PDU definitions, §5 field definitions).

One frozen-shape, slotted dataclass per PDU, fields named and ordered as in §4; C-Octet
strings are ``str`` (ASCII), ``short_message`` is ``bytes``, optional parameters (§5.3 TLVs)
are ``tlvs: dict[tag, value-bytes]`` in arrival order. ``command_length`` is never stored:
it is derived on encode and checked on decode. The codec is in :mod:`smsc.codec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar


class CommandId(IntEnum):
    """§5.1.2.1 command_id values."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


RESPONSE_BIT = 0x80000000


class Status(IntEnum):
    """§5.1.3 command_status (error codes) used by stkpay."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RCANCELFAIL = 0x11
    ESME_RREPLACEFAIL = 0x13
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVNUMDESTS = 0x33
    ESME_RINVDESTFLAG = 0x40
    ESME_RINVSUBREP = 0x42
    ESME_RINVESMCLASS = 0x43
    ESME_RCNTSUBDL = 0x44
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RINVREPFLAG = 0x54
    ESME_RINVNUMMSGS = 0x55
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RINVDFTMSGID = 0x63
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RQUERYFAIL = 0x67
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


def status_name(code: int) -> str:
    """``ESME_RTHROTTLED`` for 0x58; ``0x000000AB`` for a code the spec does not name."""
    try:
        return Status(code).name
    except ValueError:
        return f"0x{code:08X}"


class Tag(IntEnum):
    """§5.3.2 optional parameter tags used by stkpay."""

    DEST_ADDR_SUBUNIT = 0x0005
    DEST_NETWORK_TYPE = 0x0006
    DEST_BEARER_TYPE = 0x0007
    DEST_TELEMATICS_ID = 0x0008
    SOURCE_ADDR_SUBUNIT = 0x000D
    SOURCE_NETWORK_TYPE = 0x000E
    SOURCE_BEARER_TYPE = 0x000F
    SOURCE_TELEMATICS_ID = 0x0010
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    MS_MSG_WAIT_FACILITIES = 0x0030
    PRIVACY_INDICATOR = 0x0201
    SOURCE_SUBADDRESS = 0x0202
    DEST_SUBADDRESS = 0x0203
    USER_MESSAGE_REFERENCE = 0x0204
    USER_RESPONSE_CODE = 0x0205
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    CALLBACK_NUM_PRES_IND = 0x0302
    CALLBACK_NUM_ATAG = 0x0303
    NUMBER_OF_MESSAGES = 0x0304
    CALLBACK_NUM = 0x0381
    DPF_RESULT = 0x0420
    SET_DPF = 0x0421
    MS_AVAILABILITY_STATUS = 0x0422
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427
    USSD_SERVICE_OP = 0x0501
    DISPLAY_TIME = 0x1201
    SMS_SIGNAL = 0x1203
    MS_VALIDITY = 0x1204
    ALERT_ON_MESSAGE_DELIVERY = 0x130C
    ITS_REPLY_TYPE = 0x1380
    ITS_SESSION_INFO = 0x1383


class MessageState(IntEnum):
    """§5.2.28 message_state."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


# esm_class bits (§5.2.12)
ESM_UDHI = 0x40
ESM_REPLY_PATH = 0x80
ESM_TYPE_MASK = 0x3C
ESM_TYPE_DELIVERY_RECEIPT = 0x04
ESM_TYPE_INTERMEDIATE = 0x20


def _tlvs() -> dict[int, bytes]:
    return {}


@dataclass(slots=True)
class Pdu:
    """Common header (§3.2): command_id is per class; command_length is derived."""

    command_id: ClassVar[int] = 0
    sequence_number: int = 0
    command_status: int = 0

    @property
    def is_response(self) -> bool:
        """True for ``*_resp`` and generic_nack."""
        return bool(self.command_id & RESPONSE_BIT)


# -- §4.1 bind operations ------------------------------------------------------------


@dataclass(slots=True)
class _Bind(Pdu):
    """§4.1.1/§4.1.3/§4.1.5 bind_* body. The password never reaches a repr."""

    system_id: str = ""
    password: str = field(default="", repr=False)
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(slots=True)
class _BindResp(Pdu):
    """§4.1.2/§4.1.4/§4.1.6 bind_*_resp: system_id and sc_interface_version TLV."""

    system_id: str = ""
    tlvs: dict[int, bytes] = field(default_factory=_tlvs)


@dataclass(slots=True)
class BindTransmitter(_Bind):
    """§4.1.1 bind_transmitter."""

    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER


@dataclass(slots=True)
class BindTransmitterResp(_BindResp):
    """§4.1.2 bind_transmitter_resp."""

    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER_RESP


@dataclass(slots=True)
class BindReceiver(_Bind):
    """§4.1.3 bind_receiver."""

    command_id: ClassVar[int] = CommandId.BIND_RECEIVER


@dataclass(slots=True)
class BindReceiverResp(_BindResp):
    """§4.1.4 bind_receiver_resp."""

    command_id: ClassVar[int] = CommandId.BIND_RECEIVER_RESP


@dataclass(slots=True)
class BindTransceiver(_Bind):
    """§4.1.5 bind_transceiver."""

    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER


@dataclass(slots=True)
class BindTransceiverResp(_BindResp):
    """§4.1.6 bind_transceiver_resp."""

    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER_RESP


@dataclass(slots=True)
class Outbind(Pdu):
    """§4.1.7 outbind."""

    command_id: ClassVar[int] = CommandId.OUTBIND
    system_id: str = ""
    password: str = field(default="", repr=False)


@dataclass(slots=True)
class Unbind(Pdu):
    """§4.2.1 unbind (header only)."""

    command_id: ClassVar[int] = CommandId.UNBIND


@dataclass(slots=True)
class UnbindResp(Pdu):
    """§4.2.2 unbind_resp (header only)."""

    command_id: ClassVar[int] = CommandId.UNBIND_RESP


@dataclass(slots=True)
class GenericNack(Pdu):
    """§4.3.1 generic_nack (header only)."""

    command_id: ClassVar[int] = CommandId.GENERIC_NACK


# -- §4.4/§4.6 submit_sm and deliver_sm ----------------------------------------------


@dataclass(slots=True)
class _ShortMessage(Pdu):
    """The common body of submit_sm (§4.4.1) and deliver_sm (§4.6.1)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: dict[int, bytes] = field(default_factory=_tlvs)


@dataclass(slots=True)
class SubmitSm(_ShortMessage):
    """§4.4.1 submit_sm."""

    command_id: ClassVar[int] = CommandId.SUBMIT_SM


@dataclass(slots=True)
class SubmitSmResp(Pdu):
    """§4.4.2 submit_sm_resp. A body-less resp (error status) decodes to message_id ''."""

    command_id: ClassVar[int] = CommandId.SUBMIT_SM_RESP
    message_id: str = ""


@dataclass(slots=True)
class DeliverSm(_ShortMessage):
    """§4.6.1 deliver_sm (MO, or a delivery receipt when esm_class says so)."""

    command_id: ClassVar[int] = CommandId.DELIVER_SM


@dataclass(slots=True)
class DeliverSmResp(Pdu):
    """§4.6.2 deliver_sm_resp (message_id is unused and set to NULL by the spec)."""

    command_id: ClassVar[int] = CommandId.DELIVER_SM_RESP
    message_id: str = ""


@dataclass(slots=True)
class SubmitMulti(Pdu):
    """§4.5.1 submit_multi. ``dest_addresses`` holds (dest_flag, ton, npi, address-or-dl)."""

    command_id: ClassVar[int] = CommandId.SUBMIT_MULTI
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addresses: list[tuple[int, int, int, str]] = field(default_factory=list)
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: dict[int, bytes] = field(default_factory=_tlvs)


@dataclass(slots=True)
class SubmitMultiResp(Pdu):
    """§4.5.2 submit_multi_resp. ``unsuccess_smes``: (ton, npi, address, error_status)."""

    command_id: ClassVar[int] = CommandId.SUBMIT_MULTI_RESP
    message_id: str = ""
    unsuccess_smes: list[tuple[int, int, str, int]] = field(default_factory=list)


# -- §4.7 data_sm --------------------------------------------------------------------


@dataclass(slots=True)
class DataSm(Pdu):
    """§4.7.1 data_sm: the message, if any, is in the message_payload TLV."""

    command_id: ClassVar[int] = CommandId.DATA_SM
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: dict[int, bytes] = field(default_factory=_tlvs)


@dataclass(slots=True)
class DataSmResp(Pdu):
    """§4.7.2 data_sm_resp."""

    command_id: ClassVar[int] = CommandId.DATA_SM_RESP
    message_id: str = ""
    tlvs: dict[int, bytes] = field(default_factory=_tlvs)


# -- §4.8-§4.10 query, cancel, replace -----------------------------------------------


@dataclass(slots=True)
class QuerySm(Pdu):
    """§4.8.1 query_sm."""

    command_id: ClassVar[int] = CommandId.QUERY_SM
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""


@dataclass(slots=True)
class QuerySmResp(Pdu):
    """§4.8.2 query_sm_resp."""

    command_id: ClassVar[int] = CommandId.QUERY_SM_RESP
    message_id: str = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


@dataclass(slots=True)
class CancelSm(Pdu):
    """§4.9.1 cancel_sm."""

    command_id: ClassVar[int] = CommandId.CANCEL_SM
    service_type: str = ""
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@dataclass(slots=True)
class CancelSmResp(Pdu):
    """§4.9.2 cancel_sm_resp (header only)."""

    command_id: ClassVar[int] = CommandId.CANCEL_SM_RESP


@dataclass(slots=True)
class ReplaceSm(Pdu):
    """§4.10.1 replace_sm."""

    command_id: ClassVar[int] = CommandId.REPLACE_SM
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(slots=True)
class ReplaceSmResp(Pdu):
    """§4.10.2 replace_sm_resp (header only)."""

    command_id: ClassVar[int] = CommandId.REPLACE_SM_RESP


# -- §4.11 enquire_link, §4.12 alert_notification ------------------------------------


@dataclass(slots=True)
class EnquireLink(Pdu):
    """§4.11.1 enquire_link (header only)."""

    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK


@dataclass(slots=True)
class EnquireLinkResp(Pdu):
    """§4.11.2 enquire_link_resp (header only)."""

    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK_RESP


@dataclass(slots=True)
class AlertNotification(Pdu):
    """§4.12.1 alert_notification."""

    command_id: ClassVar[int] = CommandId.ALERT_NOTIFICATION
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    esme_addr_ton: int = 0
    esme_addr_npi: int = 0
    esme_addr: str = ""
    tlvs: dict[int, bytes] = field(default_factory=_tlvs)


PDU_CLASSES: dict[int, type[Pdu]] = {
    cls.command_id: cls
    for cls in (
        GenericNack,
        BindReceiver,
        BindReceiverResp,
        BindTransmitter,
        BindTransmitterResp,
        BindTransceiver,
        BindTransceiverResp,
        Outbind,
        QuerySm,
        QuerySmResp,
        SubmitSm,
        SubmitSmResp,
        DeliverSm,
        DeliverSmResp,
        Unbind,
        UnbindResp,
        ReplaceSm,
        ReplaceSmResp,
        CancelSm,
        CancelSmResp,
        EnquireLink,
        EnquireLinkResp,
        SubmitMulti,
        SubmitMultiResp,
        AlertNotification,
        DataSm,
        DataSmResp,
    )
}


def response_class(command_id: int) -> type[Pdu] | None:
    """The ``*_resp`` class answering a request command_id (None for responses/outbind)."""
    if command_id & RESPONSE_BIT:
        return None
    return PDU_CLASSES.get(command_id | RESPONSE_BIT)
