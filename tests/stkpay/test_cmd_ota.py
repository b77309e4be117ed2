"""``stkpay ota encode|decode`` (stkpay/cmd_ota.py): the contract of issue 4 (flags, JSON
keys), round trips through the codec, card keys from the key file, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ota.apdu import ResponseApdu
from ota.errors import ResponseStatus
from ota.keystore import FileKeyStore, generate_keyset
from ota.remote_apdu import build_compact_response
from ota.secured_packet import Keys, Spi, decode_command, encode_response
from ota.smspp import response_user_data
from stkpay.cli import main

KIC_KEY = "000102030405060708090A0B0C0D0E0F"
KID_KEY = "101112131415161718191A1B1C1D1E1F"
RAW_KEYS = ["--kic-key", KIC_KEY, "--kid-key", KID_KEY]
KEYS = Keys(kic=bytes.fromhex(KIC_KEY), kid=bytes.fromhex(KID_KEY))
ENCODE = ["ota", "encode", "--spi", "1621", "--kic", "12", "--kid", "12", "--tar", "B00001"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_json_has_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """--json: command_packet (CPL to the end), user_data (UDH included) and each header
    field by name; the packet decodes with the same keys to the APDUs given."""
    code, out, _ = run(
        capsys, *ENCODE, "--counter", "5", *RAW_KEYS, "--apdu", "00A40004023F00", "--json"
    )
    assert code == 0
    obj = json.loads(out)
    packet = bytes.fromhex(obj["command_packet"])
    assert obj["user_data"] == ["027000" + obj["command_packet"]]
    for key in ("spi", "kic", "kid", "tar", "counter", "cpl", "chl", "pcntr"):
        assert key in obj
    assert (obj["spi"], obj["kic"], obj["kid"], obj["tar"]) == ("1621", "12", "12", "B00001")
    assert obj["counter"] == 5 and obj["cpl"] == len(packet) - 2
    assert decode_command(packet, KEYS).data == bytes.fromhex("00A40004023F00")


def test_long_packet_is_concatenated(capsys: pytest.CaptureFixture[str]) -> None:
    """A packet longer than one SMS comes as several user-data parts, 0x70 in the first."""
    apdus = ["--apdu", "00D60000" + "64" + "AB" * 100, "--apdu", "00D60000" + "20" + "CD" * 32]
    code, out, _ = run(capsys, *ENCODE, "--counter", "1", *RAW_KEYS, *apdus, "--json")
    assert code == 0
    parts = json.loads(out)["user_data"]
    assert len(parts) == 2
    # UDHL, concatenation (reference 0, 2 parts, part n), and 70 00 in the first part only
    assert parts[0].startswith("07" + "0003000201" + "7000")
    assert parts[1].startswith("05" + "0003000202")


def test_encode_then_decode_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    """decode takes what encode prints and gives back every field and the APDUs."""
    apdus = ["00A40004023F00", "00B0000010"]
    argv = [*ENCODE, "--counter", "77", *RAW_KEYS]
    for apdu in apdus:
        argv += ["--apdu", apdu]
    _, packet, _ = run(capsys, *argv)
    code, out, _ = run(capsys, "ota", "decode", "--command", packet.strip(), *RAW_KEYS, "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["apdus"] == apdus
    assert obj["counter"] == 77 and obj["tar"] == "B00001"


def test_decode_response(capsys: pytest.CaptureFixture[str]) -> None:
    """A PoR as received (UDH included) with the command's SPI/KIc/KID: status, counter and
    data, padding removed."""
    data = build_compact_response(1, ResponseApdu(b"\x01\x02", 0x9000))
    packet = encode_response(
        spi=Spi.from_hex("1639"),
        kic=0x12,
        kid=0x12,
        tar=bytes.fromhex("B00001"),
        counter=9,
        status=ResponseStatus.POR_OK,
        data=data,
        keys=KEYS,
    )
    code, out, _ = run(
        capsys,
        "ota",
        "decode",
        "--response",
        response_user_data(packet).hex(),
        "--spi",
        "1639",
        "--kic",
        "12",
        "--kid",
        "12",
        *RAW_KEYS,
        "--json",
    )
    assert code == 0
    obj = json.loads(out)
    assert (obj["status"], obj["counter"], obj["data"]) == (0, 9, data.hex().upper())


def test_card_keys_from_the_key_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--iccid takes the card's diversified keys: what it encodes decodes with them, and not
    with another card's."""
    key_file = tmp_path / "keys.json"
    generate_keyset(FileKeyStore(key_file), "ota", 1)
    card = ["--iccid", "8986001234567890123", "--key-file", str(key_file)]
    other = ["--iccid", "8986001234567890131", "--key-file", str(key_file)]
    _, packet, _ = run(capsys, *ENCODE, "--counter", "3", *card, "--apdu", "00A40004023F00")
    code, out, _ = run(capsys, "ota", "decode", "--command", packet.strip(), *card, "--json")
    assert code == 0 and json.loads(out)["counter"] == 3
    code, out, err = run(capsys, "ota", "decode", "--command", packet.strip(), *other)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        [*ENCODE, "--counter", "1", *RAW_KEYS, "--apdu", "00A4"],  # not an APDU
        [*ENCODE, "--counter", "1", *RAW_KEYS, "--apdu", "zz"],  # not hex
        [*ENCODE, "--counter", "-1", *RAW_KEYS, "--apdu", "00A40004023F00"],
        [*ENCODE, "--counter", "1", "--apdu", "00A40004023F00"],  # no keys
        [
            "ota",
            "encode",
            "--spi",
            "16",
            "--kic",
            "12",
            "--kid",
            "12",
            "--tar",
            "B00001",
            "--counter",
            "1",
            *RAW_KEYS,
            "--apdu",
            "00A40004023F00",
        ],  # short SPI
        [
            *ENCODE,
            "--counter",
            "1",
            "--kic-key",
            "00",
            "--kid-key",
            KID_KEY,
            "--apdu",
            "00A40004023F00",
        ],  # bad key length
        ["ota", "decode", "--command", "0005AABB", *RAW_KEYS],  # malformed
        ["ota", "decode", "--response", "027100", *RAW_KEYS],  # no SPI/KIc/KID
        ["ota", "decode", *RAW_KEYS],  # neither
    ],
)
def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Bad arguments and malformed packets: one line on stderr, exit 2, no traceback, and no
    key material in the message."""
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert KIC_KEY not in err.upper() and KID_KEY not in err.upper()


def test_bad_checksum_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A packet decoded with the wrong KID key: a one-line refusal naming the checksum."""
    _, packet, _ = run(capsys, *ENCODE, "--counter", "1", *RAW_KEYS, "--apdu", "00A40004023F00")
    wrong = ["--kic-key", KIC_KEY, "--kid-key", KIC_KEY]
    code, _, err = run(capsys, "ota", "decode", "--command", packet.strip(), *wrong)
    assert code == 2 and "Checksum" in err
