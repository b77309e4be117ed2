"""OutboundMessage validation and the submit_sm fields build_submits gives each kind."""

from __future__ import annotations

import pytest

from smsc.message import OutboundMessage, build_submits
from smsc.pdu import ESM_UDHI
from smsc.segment import ReferenceAllocator
from stkpay.config import SmscConfig


def test_user_data_parts_are_sent_as_is_with_udhi() -> None:
    """Pre-built user data (an OTA command packet) becomes one submit_sm per part, untouched,
    with UDHI, the given protocol_id and data_coding, and no concatenation added."""
    first = bytes.fromhex("0700030a0201700001") + b"A" * 50
    second = bytes.fromhex("0500030a0202") + b"B" * 20
    msg = OutboundMessage(
        "8613800138000",
        user_data=(first, second),
        protocol_id=0x7F,
        data_coding=0xF6,
    )
    pdus = build_submits(msg, SmscConfig(), ReferenceAllocator())
    assert [p.short_message for p in pdus] == [first, second]
    assert all(p.esm_class & ESM_UDHI for p in pdus)
    assert {p.protocol_id for p in pdus} == {0x7F}
    assert {p.data_coding for p in pdus} == {0xF6}
    assert all(not p.tlvs for p in pdus)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "x", "user_data": (b"\x00",)}, "exactly one"),
        ({"data": b"x", "user_data": (b"\x00",)}, "exactly one"),
        ({"user_data": ()}, "1 to 255"),
        ({"user_data": (b"",)}, "1 to 140"),
        ({"user_data": (b"x" * 141,)}, "1 to 140"),
    ],
)
def test_user_data_refused_when_inconsistent(kwargs: dict[str, object], message: str) -> None:
    """user_data excludes text and data, and each part must fit one short message."""
    with pytest.raises(ValueError, match=message):
        OutboundMessage("1", **kwargs)  # type: ignore[arg-type]
