"""Tests of smsc/sim_api.py: the simulator's HTTP JSON control API over real loopback TCP."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from smsc.pdu import ESM_UDHI, BindReceiver, BindTransmitter, DeliverSm, Status, SubmitSm
from smsc.segment import LongMode, segment_text
from smsc.simulator import make_service
from smsc.text import Encoding
from stkpay.config import SimulatorConfig
from tests.smsc.conftest import SimHandle
from tests.smsc.test_simulator import FakeEsme

PHONE = "8613800138000"


class _Body(Protocol):
    """Collects a response body (readBody warns about this transport under Twisted 26)."""

    def __init__(self, done: Deferred[bytes]) -> None:
        self.done = done
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(b"".join(self.chunks))


async def http(method: str, url: str, body: object = None) -> tuple[int, Any]:
    """One request with twisted.web's Agent; (status, decoded JSON body)."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, FileBodyProducer
    from twisted.web.http_headers import Headers

    producer = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        producer = FileBodyProducer(BytesIO(data))
    response = await Agent(reactor).request(
        method.encode(),
        url.encode(),
        Headers({"content-type": ["application/json"]}),
        producer,
    )
    done: Deferred[bytes] = Deferred()
    response.deliverBody(_Body(done))
    raw = await done
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    return response.code, json.loads(raw)


@pytest_twisted.ensureDeferred
async def test_post_mo_routes_or_queues(smsc_sim: SimHandle) -> None:
    """POST /mo answers the message id and the ESME; queued until a receiver binds, then
    delivered as deliver_sm."""
    code, body = await http(
        "POST", smsc_sim.api_url + "/mo", {"from": PHONE, "to": smsc_sim.short_code, "text": "hi"}
    )
    assert code == 200
    assert body == {"message_id": "1", "esme": smsc_sim.system_id, "queued": True, "parts": 1}
    esme = FakeEsme(smsc_sim.simulator)
    esme.bind(BindReceiver, smsc_sim.system_id, smsc_sim.password)
    (mo,) = esme.ack_all()
    assert (mo.source_addr, mo.destination_addr, mo.short_message) == (
        PHONE,
        smsc_sim.short_code,
        b"hi",
    )
    code, body = await http(
        "POST",
        smsc_sim.api_url + "/mo",
        {"from": PHONE, "to": smsc_sim.short_code, "text": "手机钱包" * 40},
    )
    assert (code, body["queued"], body["parts"]) == (200, False, 3)
    assert len(esme.ack_all()) == 3


@pytest_twisted.ensureDeferred
async def test_post_mo_binary_with_udh(smsc_sim: SimHandle) -> None:
    """hex + data_coding + udh: the deliver_sm carries the IEs as UDH with UDHI set."""
    esme = FakeEsme(smsc_sim.simulator)
    esme.bind(BindReceiver, smsc_sim.system_id, smsc_sim.password)
    code, body = await http(
        "POST",
        smsc_sim.api_url + "/mo",
        {
            "from": PHONE,
            "to": smsc_sim.short_code,
            "hex": "0a0b",
            "data_coding": 246,
            "udh": "7100",
        },
    )
    assert (code, body["queued"]) == (200, False)
    (mo,) = esme.ack_all()
    assert isinstance(mo, DeliverSm)
    assert (mo.esm_class, mo.data_coding, mo.short_message) == (
        ESM_UDHI,
        246,
        b"\x02\x71\x00\x0a\x0b",
    )


@pytest_twisted.ensureDeferred
async def test_post_mo_unrouted_destination(smsc_sim: SimHandle) -> None:
    """An MO to a number no account serves gets an id, esme null, not queued."""
    code, body = await http(
        "POST", smsc_sim.api_url + "/mo", {"from": PHONE, "to": "999", "text": "lost"}
    )
    assert code == 200
    assert (body["esme"], body["queued"]) == (None, False)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        ({"to": "10658888", "text": "x"}, "'from'"),
        ({"from": PHONE, "to": "10658888"}, "exactly one"),
        ({"from": PHONE, "to": "10658888", "text": "x", "hex": "00"}, "exactly one"),
        ({"from": PHONE, "to": "10658888", "hex": "zz"}, "not valid hex"),
        ({"from": PHONE, "to": "10658888", "hex": "00", "data_coding": 256}, "data_coding"),
        ({"from": PHONE, "to": "10658888", "hex": "00", "data_coding": True}, "data_coding"),
        ({"from": PHONE, "to": "10658888", "text": "中", "data_coding": 0}, "cannot send"),
        ({"from": PHONE, "to": "10658888", "hex": "00", "udh": "7102"}, "cannot send"),
        ({"from": PHONE, "to": "10658888", "text": 5}, "'text'"),
        ({"from": "1" * 21, "to": "10658888", "text": "x"}, "'from'"),
        ({"from": PHONE, "to": "10658888", "text": "x", "extra": 1}, "unknown field"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_post_mo_rejects_bad_bodies(smsc_sim: SimHandle, body: object, fragment: str) -> None:
    """A bad /mo body is a 400 with a one-line error naming the problem; nothing is sent."""
    code, answer = await http("POST", smsc_sim.api_url + "/mo", body)
    assert code == 400
    assert fragment in answer["error"]
    assert "\n" not in answer["error"]
    assert smsc_sim.simulator.counters.mo_messages == 0


@pytest_twisted.ensureDeferred
async def test_get_mt_returns_reassembled_messages_after_cursor(smsc_sim: SimHandle) -> None:
    """GET /mt lists what the handset got, reassembled with each part's PDU fields; after=
    returns only newer messages and the cursor to continue from."""
    esme = FakeEsme(smsc_sim.simulator)
    esme.bind(BindTransmitter, smsc_sim.system_id, smsc_sim.password)
    text = "钱包余额查询结果：" * 10
    segments = segment_text(text, Encoding.UCS2, LongMode.UDH8, 9)
    esme.send(
        *(
            SubmitSm(
                source_addr=smsc_sim.short_code,
                destination_addr=PHONE,
                esm_class=ESM_UDHI,
                data_coding=s.data_coding,
                short_message=s.short_message,
                registered_delivery=1,
            )
            for s in segments
        )
    )
    assert all(p.command_status == Status.ESME_ROK for p in esme.received())
    code, body = await http("GET", f"{smsc_sim.api_url}/mt?to={PHONE}")
    assert code == 200
    (message,) = body["messages"]
    assert message["text"] == text
    assert (message["from"], message["to"], message["data_coding"]) == (
        smsc_sim.short_code,
        PHONE,
        8,
    )
    assert message["hex"] == text.encode("utf-16-be").hex()
    assert message["udh"] == []
    assert [p["message_id"] for p in message["parts"]] == ["1", "2"]
    first = message["parts"][0]
    assert first["short_message"] == segments[0].short_message.hex()
    assert (first["registered_delivery"], first["esm_class"], first["command"]) == (
        1,
        ESM_UDHI,
        "SubmitSm",
    )
    assert first["sequence_number"] == 2
    assert body["cursor"] == message["cursor"]

    esme.send(
        SubmitSm(source_addr="1", destination_addr=PHONE, short_message=b"\x01\x02", data_coding=4)
    )
    esme.received()
    code, newer = await http("GET", f"{smsc_sim.api_url}/mt?to={PHONE}&after={body['cursor']}")
    (binary,) = newer["messages"]
    assert (binary["text"], binary["hex"]) == (None, "0102")
    assert newer["cursor"] == binary["cursor"] > body["cursor"]
    code, none = await http("GET", f"{smsc_sim.api_url}/mt?to={PHONE}&after={newer['cursor']}")
    assert (code, none["messages"], none["cursor"]) == (200, [], newer["cursor"])


@pytest.mark.parametrize(
    ("query", "code"),
    [("", 400), ("?to=", 400), (f"?to={PHONE}&after=x", 400), ("?to=8613999999999", 200)],
)
@pytest_twisted.ensureDeferred
async def test_get_mt_arguments(smsc_sim: SimHandle, query: str, code: int) -> None:
    """``to`` is required and ``after`` must be an integer; an unknown MSISDN has no messages."""
    status, body = await http("GET", f"{smsc_sim.api_url}/mt{query}")
    assert status == code
    if code == 200:
        assert body["messages"] == []


@pytest_twisted.ensureDeferred
async def test_get_stats_counts_per_bind(smsc_sim: SimHandle) -> None:
    """GET /stats lists each bind with its counters, plus totals."""
    esme = FakeEsme(smsc_sim.simulator)
    esme.bind(BindTransmitter, smsc_sim.system_id, smsc_sim.password)
    esme.send(SubmitSm(source_addr="1", destination_addr=PHONE, short_message=b"x"))
    code, stats = await http("GET", smsc_sim.api_url + "/stats")
    assert code == 200
    (bind,) = stats["binds"]
    assert (bind["system_id"], bind["bind_type"], bind["submit_sm"]) == (
        smsc_sim.system_id,
        "transmitter",
        1,
    )
    assert stats["totals"]["submit_sm"] == 1
    assert stats["totals"]["mt_delivered"] == 1


@pytest_twisted.ensureDeferred
async def test_faults_read_and_change_at_run_time(smsc_sim: SimHandle) -> None:
    """POST /faults changes faults and receipt settings for new traffic; GET /faults shows
    them; a bad change is a 400 and changes nothing."""
    code, faults = await http("GET", smsc_sim.api_url + "/faults")
    assert code == 200
    assert faults["error_rate"] == 0.0
    code, faults = await http(
        "POST",
        smsc_sim.api_url + "/faults",
        {"error_rate": 1, "error_status": "0x14", "receipt_delay": 2, "delivered_ratio": 0.5},
    )
    assert code == 200
    assert (faults["error_rate"], faults["error_status"]) == (1.0, "ESME_RMSGQFUL")
    assert (faults["receipt_delay"], faults["delivered_ratio"]) == (2.0, 0.5)
    esme = FakeEsme(smsc_sim.simulator)
    esme.bind(BindTransmitter, smsc_sim.system_id, smsc_sim.password)
    esme.send(SubmitSm(source_addr="1", destination_addr=PHONE, short_message=b"x"))
    (resp,) = esme.received()
    assert resp.command_status == Status.ESME_RMSGQFUL
    for bad in ({"error_rate": 2}, {"drop_after": -1}, {"receipt_delay": "x"}, {"nope": 1}):
        code, answer = await http("POST", smsc_sim.api_url + "/faults", bad)
        assert code == 400, bad
        assert answer["error"]
    code, after = await http("GET", smsc_sim.api_url + "/faults")
    assert after == faults


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [("GET", "/nothing", 404), ("GET", "/mo", 405), ("POST", "/stats", 405)],
)
@pytest_twisted.ensureDeferred
async def test_unknown_paths_and_methods(
    smsc_sim: SimHandle, method: str, path: str, code: int
) -> None:
    """Unknown resources are 404, a known one with the wrong method 405, both as JSON."""
    status, body = await http(method, smsc_sim.api_url + path, {} if method == "POST" else None)
    assert status == code
    assert "error" in body


@pytest_twisted.ensureDeferred
async def test_service_reports_a_port_it_cannot_listen_on(smsc_sim: SimHandle) -> None:
    """A listen endpoint already in use makes when_listening fail (the CLI prints it)."""
    from twisted.internet import reactor

    config = SimulatorConfig(listen=f"tcp:{smsc_sim.port}:interface=127.0.0.1", api="")
    service = make_service(config, reactor)
    service.startService()
    with pytest.raises(CannotListenError):
        await service.when_listening()
    await service.stopService()


@pytest_twisted.ensureDeferred
async def test_post_mo_user_data_with_protocol_id(smsc_sim: SimHandle) -> None:
    """user_data parts (UDH included) + protocol_id + data_coding: one deliver_sm per part,
    UDHI set, the octets as given, the TP-PID and data coding carried."""
    esme = FakeEsme(smsc_sim.simulator)
    esme.bind(BindReceiver, smsc_sim.system_id, smsc_sim.password)
    parts = ["0500035a0201" + "11" * 10, "0500035a0202" + "22" * 4]
    code, body = await http(
        "POST",
        smsc_sim.api_url + "/mo",
        {
            "from": PHONE,
            "to": smsc_sim.short_code,
            "user_data": parts,
            "protocol_id": 0x7F,
            "data_coding": 0xF6,
        },
    )
    assert (code, body["parts"]) == (200, 2)
    mos = esme.ack_all()
    assert [m.short_message.hex() for m in mos if isinstance(m, DeliverSm)] == parts
    for mo in mos:
        assert isinstance(mo, DeliverSm)
        assert (mo.esm_class & ESM_UDHI, mo.protocol_id, mo.data_coding) == (ESM_UDHI, 0x7F, 0xF6)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"user_data": []}, "'user_data'"),
        ({"user_data": "027000"}, "'user_data'"),
        ({"user_data": [1]}, "'user_data'"),
        ({"user_data": ["zz"]}, "invalid hex"),
        ({"user_data": ["027000"], "hex": "00"}, "excludes"),
        ({"user_data": ["027000"], "udh": "7000"}, "excludes"),
        ({"user_data": ["00" * 141]}, "cannot send"),
        ({"user_data": ["027000"], "protocol_id": 256}, "'protocol_id'"),
        ({"user_data": ["027000"], "protocol_id": True}, "'protocol_id'"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_post_mo_rejects_bad_user_data(
    smsc_sim: SimHandle, body: dict[str, object], fragment: str
) -> None:
    """A malformed user_data or protocol_id is a 400 naming it; nothing is sent."""
    full = {"from": PHONE, "to": "10658888", **body}
    code, answer = await http("POST", smsc_sim.api_url + "/mo", full)
    assert code == 400
    assert fragment in answer["error"]
    assert smsc_sim.simulator.counters.mo_messages == 0
