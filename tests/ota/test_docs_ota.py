"""Keeps docs/ota.md true: its worked example is rebuilt from the code, octet for octet.

Every fenced block of docs/ota.md whose info string is ``hex vector=NAME`` is parsed (hex
digits before ``#`` on each line; the rest is annotation) and must equal what :data:`VECTORS`
builds for NAME with ``ota.secured_packet`` and ``ota.smspp`` (TS 102 225 §5.1, TS 31.115
§4.2-4.4). The table after ``<!-- check: status_codes -->`` must list ``ResponseStatus`` exactly.
A failing vector prints the octets the code produces, ready to paste.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ota.apdu import CommandApdu, ResponseApdu
from ota.commands import delete, get_response
from ota.keys import KeyAlgorithm, KeyName, diversify, kcv
from ota.remote_apdu import (
    build_compact,
    build_compact_response,
    build_expanded,
    build_expanded_response,
    parse_compact_response,
    parse_expanded,
    parse_expanded_response,
    split_compact,
)
from ota.script import parse_script
from ota.secured_packet import (
    SMS_RESPONSE_UDH,
    Keys,
    ResponseStatus,
    Spi,
    decode_command,
    decode_response,
    encode_command,
    encode_response,
)
from ota.smspp import (
    command_user_data,
    parse_command_user_data,
    parse_response_user_data,
    response_user_data,
)
from smsc.udh import split_udh
from tests.docvectors import doc_vectors, hex_lines

DOC = Path(__file__).resolve().parents[2] / "docs" / "ota.md"

# -- the example the document walks through ---------------------------------------------------

KEYS = Keys(kic=bytes(range(16)), kid=bytes(range(0x10, 0x20)))  # test keys, as the doc says
SPI = Spi.from_hex("1639")
KIC = KID = 0x12
TAR = bytes.fromhex("B00010")
COUNTER = 42
DATA = bytes.fromhex("00A40004023F00")  # SELECT MF
POR_DATA = bytes.fromhex("019000")
CONCAT_REFERENCE = 0x5A


def command_packet() -> bytes:
    """The example command packet (CPL to the end)."""
    return encode_command(spi=SPI, kic=KIC, kid=KID, tar=TAR, counter=COUNTER, data=DATA, keys=KEYS)


def response_packet() -> bytes:
    """The card's PoR for it: status 00 with the data 01 90 00."""
    return encode_response(
        spi=SPI,
        kic=KIC,
        kid=KID,
        tar=TAR,
        counter=COUNTER,
        status=ResponseStatus.POR_OK,
        data=POR_DATA,
        keys=KEYS,
    )


def _aes_cbc_decrypt(data: bytes) -> bytes:
    """Independent of the codec: plain AES-CBC, zero IV, with the example's KIc key."""
    decryptor = Cipher(algorithms.AES(KEYS.kic), modes.CBC(bytes(16))).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def command_plaintext() -> bytes:
    """CNTR .. padding as ciphered (deciphered here with AES directly)."""
    return _aes_cbc_decrypt(command_packet()[10:])


def command_cc_input() -> bytes:
    """CPL .. TAR, CNTR, PCNTR, data and padding: what the CMAC covers."""
    plain = command_plaintext()
    return command_packet()[:10] + plain[:6] + plain[14:]


def response_plaintext() -> bytes:
    """CNTR .. padding of the PoR as ciphered."""
    return _aes_cbc_decrypt(response_packet()[6:])


def response_cc_input() -> bytes:
    """UDH 02 71 00, RPL .. status, data and padding: what the PoR's CMAC covers."""
    plain = response_plaintext()
    return SMS_RESPONSE_UDH + response_packet()[:6] + plain[:7] + plain[15:]


def single_user_data() -> bytes:
    """The example packet as the user data of one SMS-DELIVER."""
    (user_data,) = command_user_data(command_packet(), reference=0)
    return user_data


def long_command_packet() -> bytes:
    """The example's header around 256 data octets: long enough for three messages."""
    return encode_command(
        spi=SPI, kic=KIC, kid=KID, tar=TAR, counter=COUNTER, data=bytes(range(256)), keys=KEYS
    )


def concatenated_udhs() -> bytes:
    """The UDHs of the parts carrying :func:`long_command_packet`, concatenated."""
    parts = command_user_data(long_command_packet(), reference=CONCAT_REFERENCE)
    return b"".join(part[: 1 + part[0]] for part in parts)


# -- how each vector is built, and what decoding it back must give ----------------------------


def _check_command_packet(data: bytes) -> None:
    decoded = decode_command(data, KEYS)
    assert (decoded.spi, decoded.tar, decoded.counter, decoded.data) == (SPI, TAR, COUNTER, DATA)


def _check_user_data(data: bytes) -> None:
    assert parse_command_user_data([data]) == command_packet()


def _check_response(data: bytes) -> None:
    por = decode_response(data, spi=SPI, kic=KIC, kid=KID, keys=KEYS)
    assert (por.status, por.counter, por.data) == (ResponseStatus.POR_OK, COUNTER, POR_DATA)
    assert parse_response_user_data(response_user_data(data)) == data


def _check_concat(data: bytes) -> None:
    parts = command_user_data(long_command_packet(), reference=CONCAT_REFERENCE)
    assert b"".join(part[: 1 + part[0]] for part in parts) == data
    assert [len(split_udh(part)[1]) for part in parts] == [132, 134, 16]
    assert parse_command_user_data(parts[::-1]) == long_command_packet()


def _no_check(data: bytes) -> None:
    assert data


# -- the remote-APDU section (TS 102 226 §5): the example script, built both ways ----------------

SCRIPT = """\
00A4000C02 6F46                              # SELECT EF.SPN, no FCP
00D6000011 00 73746B706179 FFFFFFFFFFFFFFFFFFFF -> 9000   # UPDATE BINARY
00B0000011 -> 9000|61XX                      # READ BINARY, 17 bytes
"""
SPN = bytes.fromhex("0073746B706179") + b"\xff" * 10


def _script_apdus() -> list[CommandApdu]:
    return [step.apdu for step in parse_script(SCRIPT)]


def _check_compact(data: bytes) -> None:
    assert split_compact(data) == _script_apdus()


def _check_expanded(data: bytes) -> None:
    assert parse_expanded(data) == _script_apdus()


def _check_compact_response(data: bytes) -> None:
    response = parse_compact_response(data)
    assert (response.executed, response.last) == (3, ResponseApdu(SPN, 0x9000))


def _check_expanded_response(data: bytes) -> None:
    response = parse_expanded_response(data)
    assert response.executed == 3 and response.last == ResponseApdu(SPN, 0x9000)


def _ram_delete() -> bytes:
    return build_compact([delete(bytes.fromhex("A0000003330101"), related=True), get_response()])


_REMOTE: dict[str, tuple[Callable[[], bytes], Callable[[bytes], None]]] = {
    "ota-rfm-compact": (lambda: build_compact(_script_apdus()), _check_compact),
    "ota-rfm-compact-response": (
        lambda: build_compact_response(3, ResponseApdu(SPN, 0x9000)),
        _check_compact_response,
    ),
    "ota-rfm-expanded": (lambda: build_expanded(_script_apdus()), _check_expanded),
    "ota-rfm-expanded-indefinite": (
        lambda: build_expanded(_script_apdus(), definite_length=False),
        _check_expanded,
    ),
    "ota-rfm-expanded-response": (
        lambda: build_expanded_response(
            [ResponseApdu(b"", 0x9000), ResponseApdu(b"", 0x9000), ResponseApdu(SPN, 0x9000)]
        ),
        _check_expanded_response,
    ),
    "ota-ram-delete-compact": (_ram_delete, lambda data: None),
}


VECTORS: dict[str, tuple[Callable[[], bytes], Callable[[bytes], None]]] = {
    **_REMOTE,
    "command_cc_input": (command_cc_input, _no_check),
    "command_plaintext": (command_plaintext, _no_check),
    "command_packet": (command_packet, _check_command_packet),
    "command_user_data": (single_user_data, _check_user_data),
    "concatenated_udhs": (concatenated_udhs, _check_concat),
    "response_cc_input": (response_cc_input, _no_check),
    "response_packet": (response_packet, _check_response),
}


# -- reading the document ----------------------------------------------------------------------


def _doc_vectors() -> dict[str, bytes]:
    return doc_vectors(DOC)


_hex_lines = hex_lines


def test_doc_has_exactly_the_vectors_we_build() -> None:
    """docs/ota.md shows every vector built here and no other."""
    assert sorted(_doc_vectors()) == sorted(VECTORS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_doc_vector(name: str) -> None:
    """The hex in docs/ota.md is what the code produces, and it decodes back."""
    build, check = VECTORS[name]
    built = build()
    shown = _doc_vectors()[name]
    assert shown == built, f"{name}: the code produces\n{_hex_lines(built)}"
    check(shown)


def test_doc_cc_is_the_leftmost_cmac_octets() -> None:
    """The CC in the plaintext is AES-CMAC of the CC input, first 8 octets (independent check)."""
    from cryptography.hazmat.primitives.cmac import CMAC

    mac = CMAC(algorithms.AES(KEYS.kid))
    mac.update(command_cc_input())
    assert command_plaintext()[6:14] == mac.finalize()[:8]
    mac = CMAC(algorithms.AES(KEYS.kid))
    mac.update(response_cc_input())
    assert response_plaintext()[7:15] == mac.finalize()[:8]


def test_doc_status_table_matches_response_status() -> None:
    """The status code table lists every ResponseStatus with its code, in order."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- check: status_codes -->", 1)[1].strip().split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    listed = [(int(code, 16), name.strip().strip("`")) for code, name in rows]
    assert listed == [(s.value, s.name) for s in ResponseStatus]


# -- the key diversification table of the "Keys" section ---------------------------------------

_KEY_ROW = re.compile(
    r"^\| (?P<master>[^|]+) \| (?P<name>[^|]+) \| `(?P<iccid>\d+F?)`[^|]* \| `(?P<key>[0-9A-F]+)`"
    r" \| `(?P<kcv>[0-9A-F]{6})` \|$",
    re.M,
)
_MASTERS = {"`000102…0F`": bytes(range(16)), "`000102…1F`": bytes(range(32))}


def test_doc_key_table_is_what_the_code_derives() -> None:
    """Every row of our own diversification vectors in docs/ota.md (master, key name, ICCID,
    card key, KCV) is what ota.keys computes."""
    rows = list(_KEY_ROW.finditer(DOC.read_text(encoding="utf-8")))
    assert len(rows) >= 6
    master = b""
    algorithm = KeyAlgorithm.TDES
    for row in rows:
        text = row["master"].strip()
        if text != "same":
            algorithm = KeyAlgorithm.TDES if text.startswith("3DES") else KeyAlgorithm.AES
            quoted = re.search(r"`[^`]+`", text)
            assert quoted is not None
            master = _MASTERS.get(quoted.group(0)) or bytes.fromhex(quoted.group(0).strip("`"))
        name = KeyName.KIC if row["name"].strip() == "any" else KeyName(row["name"].strip())
        card_key = diversify(algorithm, master, name, row["iccid"])
        assert card_key.hex().upper() == row["key"], row.group(0)
        assert kcv(algorithm, card_key).hex().upper() == row["kcv"], row.group(0)
