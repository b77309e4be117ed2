"""HTTP JSON control API of the SMSC simulator (twisted.web), loopback by default.

Used by the tests, the demo, the virtual phones and operators' integration tests:

* ``POST /mo`` ``{"from": MSISDN, "to": SHORT_CODE, "text": "..."}`` or ``{"from", "to",
  "hex": "...", "data_coding": 4, "udh": "7000"}`` injects an MO (SMPP 3.4 §4.6.1
  deliver_sm to the ESME serving the short code; long ones split with TS 23.040
  §9.2.3.24.1 concatenation; ``udh`` holds information elements, without the UDHL octet,
  put in every part). Answers ``{"message_id", "esme", "queued", "parts"}``. A card's
  secured MO or PoR comes as ``{"from", "to", "user_data": [HEX, ...], "protocol_id": 127,
  "data_coding": 246}``: each short message's user data with its UDH (3GPP TS 31.115 §4.2,
  §4.4), sent as is with UDHI set and that TP-PID (``Simulator.inject_mo(user_data=...,
  protocol_id=...)``); ``user_data`` excludes ``text``, ``hex`` and ``udh``; ``protocol_id``
  (0..255, default 0) applies to any MO.
* ``GET /mt?to=MSISDN[&after=CURSOR]``: messages delivered to that handset's mailbox,
  reassembled, each with its parts' SMPP fields (§4.4.1 submit_sm), oldest first, and the
  cursor to pass as ``after`` next time.
* ``GET /stats``: counts per bind plus totals. ``GET /faults`` / ``POST /faults``: read or
  change the injected faults (and ``receipt_delay``, ``delivered_ratio``) at run time.

Errors are JSON too: ``{"error": "..."}`` with 400 (bad request), 404 or 405.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, Final

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from smsc.handset import MailboxDirectory, MtMessage, MtPart, StoredMessage
from smsc.pdu import Tag
from smsc.simulator import Simulator
from smsc.text import Encoding, encoding_of

__all__ = ["SimulatorApi", "make_site", "message_json", "part_json"]

#: Addresses are SMPP C-Octet strings of at most 20 characters (§4.4.1 source_addr).
_MAX_ADDRESS: Final = 20
_MAX_BODY: Final = 1 << 20

_TAG_NAMES: Final[dict[int, str]] = {int(tag): tag.name.lower() for tag in Tag}
_RUNTIME_SETTINGS: Final = ("receipt_delay", "delivered_ratio")


class ApiError(Exception):
    """A request the API refuses: HTTP ``code`` and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _tlvs_json(tlvs: dict[int, bytes]) -> dict[str, str]:
    return {_TAG_NAMES.get(tag, f"0x{tag:04x}"): value.hex() for tag, value in tlvs.items()}


def part_json(part: MtPart) -> dict[str, Any]:
    """One MT part: its message id, who sent it, and every field of its PDU (bytes as hex,
    TLVs by lower-case §5.3.2 name)."""
    pdu = part.pdu
    fields: dict[str, Any] = {
        "message_id": part.message_id,
        "system_id": part.system_id,
        "command": type(pdu).__name__,
        "destination": part.destination,
        "received_at": part.received_at,
        "sequence_number": pdu.sequence_number,
    }
    for field in dataclasses.fields(pdu):
        name = field.name
        if name in ("sequence_number", "command_status"):
            continue
        value = getattr(pdu, name)
        if name == "tlvs":
            fields[name] = _tlvs_json(value)
        elif isinstance(value, bytes):
            fields[name] = value.hex()
        elif isinstance(value, list):
            fields[name] = [list(item) for item in value]
        else:
            fields[name] = value
    return fields


def message_json(
    stored: StoredMessage | MtMessage, *, default: Encoding = Encoding.GSM7
) -> dict[str, Any]:
    """One delivered message: addresses, coding, text (None for 8-bit data), payload hex,
    the non-concatenation UDH information elements and its parts."""
    cursor = stored.cursor if isinstance(stored, StoredMessage) else None
    mt = stored.message if isinstance(stored, StoredMessage) else stored
    message = mt.message
    binary = encoding_of(message.data_coding, default=default) is Encoding.BINARY
    return {
        "cursor": cursor,
        "from": message.source,
        "to": message.destination,
        "data_coding": message.data_coding,
        "esm_class": message.esm_class,
        "protocol_id": message.protocol_id,
        "text": None if binary else message.text(default=default),
        "hex": message.payload.hex(),
        "udh": [{"iei": ie.iei, "data": ie.data.hex()} for ie in message.ies],
        "parts": [part_json(part) for part in mt.parts],
        "delivered_at": mt.delivered_at,
    }


def _address(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{key!r} must be a non-empty string")
    if len(value) > _MAX_ADDRESS or not value.isascii() or not value.isprintable():
        raise ApiError(400, f"{key!r} must be at most {_MAX_ADDRESS} printable ASCII characters")
    return value


def _hex(body: dict[str, Any], key: str) -> bytes | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{key!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ApiError(400, f"{key!r} is not valid hex") from None


def _user_data(body: dict[str, Any]) -> list[bytes] | None:
    value = body.get("user_data")
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > 255:
        raise ApiError(400, "'user_data' must be a list of 1 to 255 hex strings")
    parts = []
    for item in value:
        if not isinstance(item, str):
            raise ApiError(400, "'user_data' must be a list of hex strings")
        try:
            parts.append(bytes.fromhex(item))
        except ValueError:
            raise ApiError(400, "'user_data' holds invalid hex") from None
    return parts


class SimulatorApi(Resource):
    """The whole API as one leaf resource dispatching on method and path."""

    isLeaf = True  # noqa: N815 - twisted.web's name

    def __init__(self, simulator: Simulator) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.simulator = simulator

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 - twisted.web's name
        """GET /mt, /stats, /faults."""
        return self._render(request, "GET")

    def render_POST(self, request: Request) -> bytes:  # noqa: N802 - twisted.web's name
        """POST /mo, /faults."""
        return self._render(request, "POST")

    def _render(self, request: Request, method: str) -> bytes:
        path = (request.path or b"").decode("latin-1").rstrip("/") or "/"
        routes = {
            ("GET", "/mt"): self._get_mt,
            ("GET", "/stats"): self._get_stats,
            ("GET", "/faults"): self._get_faults,
            ("POST", "/mo"): self._post_mo,
            ("POST", "/faults"): self._post_faults,
        }
        handler = routes.get((method, path))
        try:
            if handler is None:
                if any(route_path == path for _, route_path in routes):
                    raise ApiError(405, f"{method} not allowed on {path}")
                raise ApiError(404, f"no such resource {path[:60]}")
            result = handler(request)
            code = 200
        except ApiError as exc:
            result, code = {"error": str(exc)}, exc.code
        request.setResponseCode(code)
        set_header: Callable[[bytes, bytes], None] = request.setHeader
        set_header(b"content-type", b"application/json")
        set_header(b"cache-control", b"no-store")
        return json.dumps(result, ensure_ascii=False).encode("utf-8") + b"\n"

    # -- handlers ------------------------------------------------------------------------

    @staticmethod
    def _arg(request: Request, name: str) -> str | None:
        values = (request.args or {}).get(name.encode())
        return None if not values else values[0].decode("utf-8", "replace")

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        content = request.content
        raw = content.read(_MAX_BODY + 1) if content is not None else b""
        if len(raw) > _MAX_BODY:
            raise ApiError(400, "body too large")
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        return body

    def _get_mt(self, request: Request) -> dict[str, Any]:
        directory = self.simulator.directory
        if not isinstance(directory, MailboxDirectory):
            raise ApiError(404, "this simulator delivers to handsets, not mailboxes")
        to = self._arg(request, "to")
        if not to:
            raise ApiError(400, "'to' is required")
        after_text = self._arg(request, "after")
        after = 0
        if after_text is not None:
            try:
                after = int(after_text)
            except ValueError:
                raise ApiError(400, "'after' must be an integer cursor") from None
        default = self.simulator.data_coding_default
        messages = [message_json(m, default=default) for m in directory.messages(to, after)]
        return {"messages": messages, "cursor": directory.cursor}

    def _get_stats(self, request: Request) -> dict[str, Any]:
        return self.simulator.stats()

    def _faults(self) -> dict[str, Any]:
        sim = self.simulator
        return {
            **sim.faults.as_dict(),
            "receipt_delay": sim.receipt_delay,
            "delivered_ratio": sim.delivered_ratio,
        }

    def _get_faults(self, request: Request) -> dict[str, Any]:
        return self._faults()

    def _post_faults(self, request: Request) -> dict[str, Any]:
        body = self._body(request)
        sim = self.simulator
        settings = {key: body.pop(key) for key in _RUNTIME_SETTINGS if key in body}
        for key, value in settings.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ApiError(400, f"{key} must be a number")
        try:
            faults = sim.faults.updated(body)
            receipt_delay = float(settings.get("receipt_delay", sim.receipt_delay))
            ratio = float(settings.get("delivered_ratio", sim.delivered_ratio))
            if not receipt_delay >= 0 or not 0.0 <= ratio <= 1.0:
                raise ValueError("receipt_delay must be >= 0 and delivered_ratio in 0..1")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        sim.set_faults(faults)
        sim.receipt_delay = receipt_delay
        sim.delivered_ratio = ratio
        return self._faults()

    def _post_mo(self, request: Request) -> dict[str, Any]:
        body = self._body(request)
        unknown = set(body) - {
            "from",
            "to",
            "text",
            "hex",
            "data_coding",
            "udh",
            "user_data",
            "protocol_id",
        }
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0][:40]!r}")
        source = _address(body, "from")
        destination = _address(body, "to")
        text = body.get("text")
        if text is not None and not isinstance(text, str):
            raise ApiError(400, "'text' must be a string")
        data = _hex(body, "hex")
        user_data = _user_data(body)
        if user_data is not None:
            if text is not None or data is not None or body.get("udh") is not None:
                raise ApiError(400, "'user_data' excludes 'text', 'hex' and 'udh'")
        elif (text is None) == (data is None):
            raise ApiError(400, "give exactly one of 'text', 'hex' and 'user_data'")
        protocol_id = body.get("protocol_id", 0)
        if (
            isinstance(protocol_id, bool)
            or not isinstance(protocol_id, int)
            or not 0 <= protocol_id <= 0xFF
        ):
            raise ApiError(400, "'protocol_id' must be an integer 0..255")
        data_coding = body.get("data_coding")
        if data_coding is not None and (
            isinstance(data_coding, bool)
            or not isinstance(data_coding, int)
            or not 0 <= data_coding <= 0xFF
        ):
            raise ApiError(400, "'data_coding' must be an integer 0..255")
        udh = _hex(body, "udh")
        try:
            result = self.simulator.inject_mo(
                source,
                destination,
                text=text,
                data=data,
                data_coding=data_coding,
                udh=udh,
                user_data=user_data,
                protocol_id=protocol_id,
            )
        except ValueError as exc:
            raise ApiError(400, f"cannot send this message: {exc}") from None
        return {
            "message_id": result.message_id,
            "esme": result.system_id,
            "queued": result.queued,
            "parts": result.parts,
        }


def make_site(simulator: Simulator) -> Site:
    """The twisted.web site serving the API (no request log: it would flood at load)."""
    site = Site(SimulatorApi(simulator))  # type: ignore[no-untyped-call]
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
