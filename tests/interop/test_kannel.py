"""Kannel (Debian's bearerbox + smsbox) as the ESME, bound to ``stkpay smsc-sim``.

Kannel's SMPP client (gw/smsc/smsc_smpp.c) binds as a transceiver (SMPP 3.4 §4.1.5) with
interface_version 0x34. MT enter through smsbox's sendsms HTTP interface and must come out
of the simulator's ``GET /mt`` reassembled (UDH concatenation, 3GPP TS 23.040 §9.2.3.24.1;
GSM 03.38 default alphabet with the extension table, and UCS-2); MO injected with
``POST /mo`` must reach Kannel's sms-service (deliver_sm, §4.6.1) and the service's answer
return as an MT; a delivery receipt (registered_delivery §5.2.17, Appendix B) must match
Kannel's submission well enough for Kannel to call the dlr-url. See docs/interop.md.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import SHORT_CODE, SYSTEM_ID, require_installed
from tests.interop.kannel import HttpRecorder, Kannel, SmscSim

pytestmark = pytest.mark.kannel

WAIT = 15.0  # seconds; Kannel and the simulator answer within a second on this machine


def _send(kannel: Kannel, to: str, text: str, **extra: str | int) -> None:
    status, body = kannel.sendsms(**{"from": SHORT_CODE, "to": to, "text": text, **extra})
    assert status == 202, f"sendsms -> {status} {body!r}"
    assert "Accepted" in body, body


def test_kannel_binds_to_simulator(kannel: Kannel, smsc_sim: SmscSim) -> None:
    """Kannel's transceiver bind is accepted on both sides.

    bearerbox's status.txt shows the SMSC online with the bound system_id and system_type;
    the simulator's /stats lists a transceiver bind in state BOUND_TRX for that system_id.
    """
    status = kannel.smsc_status()
    assert status is not None and status.online, kannel.status()
    assert f":{SYSTEM_ID}:KANNEL" in status.line
    binds = smsc_sim.stats()["binds"]
    assert [(b["bind_type"], b["state"]) for b in binds if b["system_id"] == SYSTEM_ID] == [
        ("transceiver", "BOUND_TRX")
    ]


def test_mt_gsm_text_with_extension_characters(kannel: Kannel, smsc_sim: SmscSim) -> None:
    """A GSM text MT with extension-table characters arrives intact.

    Kannel converts the UTF-8 sendsms text to the GSM 03.38 default alphabet, sending
    ``[ ] { } € ^ ~ | \\`` as escape (0x1B) pairs with data_coding 0; the simulator decodes
    data_coding 0 as GSM 7-bit and must give back the same text.
    """
    msisdn = "8613800000101"
    text = "Balance [ok] {CNY} 12.50€ ^~|\\ @£$¥ end"
    _send(kannel, msisdn, text)
    message = smsc_sim.wait_mt(msisdn, lambda m: True, "GSM MT from Kannel", WAIT)
    assert message["text"] == text
    assert message["data_coding"] == 0
    assert message["from"] == SHORT_CODE


def test_mt_long_gsm_text_reassembled(kannel: Kannel, smsc_sim: SmscSim) -> None:
    """A 400-character GSM text sent through Kannel comes out of /mt as one message.

    Kannel splits it into parts of at most 153 septets behind an 8-bit concatenation UDH;
    a "€" (escape pair 1B 65) placed on septets 153-154 makes Kannel end the first part
    one septet early rather than split the pair, so the second part opens with an escape.
    """
    msisdn = "8613800000102"
    text = "x" * 152 + "€" + ("[GSM] {extension} " * 20)[: 400 - 153]
    _send(kannel, msisdn, text)
    message = smsc_sim.wait_mt(msisdn, lambda m: True, "long GSM MT from Kannel", WAIT)
    assert message["text"] == text
    assert message["data_coding"] == 0
    assert len(message["parts"]) == 3


def test_mt_long_chinese_ucs2_reassembled(kannel: Kannel, smsc_sim: SmscSim) -> None:
    """A 150-character Chinese MT (coding=2, charset=UTF-8) arrives reassembled in UCS-2.

    Kannel sends it as three UCS-2 parts (data_coding 8) of at most 67 characters; /mt shows
    one message with the whole text and its three parts.
    """
    msisdn = "8613800000103"
    text = ("您的电子钱包余额为壹佰贰拾叁元肆角伍分。感谢使用移动支付服务！" * 5)[:150]
    _send(kannel, msisdn, text, coding=2, charset="UTF-8")
    message = smsc_sim.wait_mt(msisdn, lambda m: True, "Chinese MT from Kannel", WAIT)
    assert message["text"] == text
    assert message["data_coding"] == 8
    assert len(message["parts"]) == 3


def test_mo_reaches_kannel_and_reply_comes_back(
    kannel: Kannel, smsc_sim: SmscSim, recorder: HttpRecorder
) -> None:
    """An MO injected with POST /mo reaches Kannel's service; its reply returns as an MT.

    The simulator routes the MO to the ESME serving the short code (Kannel); smsbox calls
    the service URL with sender, short code and text; the service's text answer is
    submitted back by Kannel to the sender and shows up in the simulator's /mt.
    """
    msisdn = "8613800000104"
    text = "BAL 1234"
    answer = smsc_sim.post_mo(msisdn, SHORT_CODE, text)
    assert answer.get("message_id")
    hit = recorder.wait_for(
        "/mo", lambda h: h.get("from").endswith(msisdn), "MO at Kannel's service", WAIT
    )
    assert hit.text("text") == text
    assert hit.get("to") == SHORT_CODE
    assert hit.get("smsc") == kannel.settings.smsc_id
    reply = f"ack {len(text)} chars from {msisdn}"
    message = smsc_sim.wait_mt(msisdn, lambda m: True, "Kannel's reply MT", WAIT)
    assert message["text"] == reply
    assert message["from"] == SHORT_CODE


def test_long_chinese_mo_reassembled_by_kannel(
    kannel: Kannel, smsc_sim: SmscSim, recorder: HttpRecorder
) -> None:
    """A 100-character Chinese MO is split by the simulator and reassembled by Kannel.

    The simulator sends UCS-2 parts with a concatenation UDH; Kannel's bearerbox combines
    them (sms-combine-concatenated-mo) and smsbox hands the service the whole text.
    """
    msisdn = "8613800000105"
    text = ("充值五十元到我的电子钱包，请确认交易并回复短信验证码。" * 4)[:100]
    smsc_sim.post_mo(msisdn, SHORT_CODE, text)
    hit = recorder.wait_for(
        "/mo", lambda h: h.get("from").endswith(msisdn), "long Chinese MO at Kannel", WAIT
    )
    charset = hit.get("charset") or "utf-8"
    assert hit.text("text", charset) == text
    message = smsc_sim.wait_mt(msisdn, lambda m: True, "Kannel's reply MT", WAIT)
    assert message["text"] == f"ack {len(text)} chars from {msisdn}"


def test_delivery_receipt_reaches_kannel(
    kannel: Kannel, smsc_sim: SmscSim, recorder: HttpRecorder
) -> None:
    """With dlr-mask, the simulator's delivery receipt reaches Kannel and is matched.

    dlr-mask 1|2|8|16 asks Kannel for the SMSC acknowledgement (8, on submit_sm_resp) and
    the final state (1 delivered, 2 undeliverable). Kannel calls the dlr-url only for a
    receipt it can match to its submission by SMSC message id, so a type-1 call with the
    same id as the type-8 call shows the receipt's id agrees with the submit_sm_resp's.
    """
    msisdn = "8613800000106"
    dlr_url = recorder.url("/dlr") + f"?to={msisdn}&type=%d&id=%F&smsc=%i&answer=%A"
    _send(kannel, msisdn, "receipt please", dlr_mask=27, dlr_url=dlr_url)
    smsc_sim.wait_mt(msisdn, lambda m: True, "the MT", WAIT)
    ack = recorder.wait_for(
        "/dlr", lambda h: h.get("to") == msisdn and h.get("type") == "8", "SMSC ack", WAIT
    )
    final = recorder.wait_for(
        "/dlr",
        lambda h: h.get("to") == msisdn and h.get("type") in ("1", "2"),
        "delivery receipt at Kannel's dlr-url",
        WAIT,
    )
    assert final.get("type") == "1", final
    assert final.get("id") and final.get("id") == ack.get("id")
    assert final.get("smsc") == kannel.settings.smsc_id
    assert "stat:DELIVRD" in final.text("answer")


@pytest.mark.parametrize(("ci", "outcome"), [("true", "fail"), ("", "skip")])
def test_missing_kannel_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    """A missing Kannel skips these tests, except under CI=true where it fails the run."""
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match="kannel is not installed"):
        require_installed(["/usr/sbin/bearerbox"], "kannel")
    require_installed([], "kannel")  # nothing missing: no effect
