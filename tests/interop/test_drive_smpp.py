"""stkpay's ESME CLI (``stkpay smpp send`` / ``listen``) against Kannel's test SMSC.

``drive_smpp`` (kannel-extras, test/drive_smpp.c) is an SMSC written to drive bearerbox,
and an SMSC of the sloppy kind the issue asks the CLI to take in stride: it answers only
bind_transmitter and bind_receiver (SMPP 3.4 §4.1.1, §4.1.3; a bind_transceiver gets no
answer), sends an empty system_id and an empty message_id in submit_sm_resp (§4.4.2),
numbers its own PDUs from sequence 0 (§3.2 reserves 0x00000001-0x7FFFFFFF), and puts a
receipted_message_id TLV (§5.3.2.12) on ordinary MOs (esm_class 0) when the bind said
interface_version 0x34. It exits when its client's connection closes, so each test gets a
fresh one, and its log is the evidence of what it received. See docs/interop.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.kannel import DriveSmpp, StkpayProcess, run_stkpay

pytestmark = [pytest.mark.kannel, pytest.mark.usefixtures("drive_smpp_installed")]

WAIT = 15.0
# drive_smpp ignores credentials; these only have to fit SMPP 3.4's field sizes.
CREDENTIALS = ["--system-id", "stkpay", "--password", "secret"]

DriveFactory = Callable[[int], DriveSmpp]


@pytest.fixture
def drive_smpp(workdir: Path) -> Iterator[DriveFactory]:
    """Start drive_smpp instances (each with ``messages`` MOs to send); all stopped after."""
    started: list[DriveSmpp] = []

    def start(messages: int = 1) -> DriveSmpp:
        drive = DriveSmpp(workdir / f"drive{len(started)}", messages)
        started.append(drive)
        return drive

    yield start
    for drive in started:
        drive.stop()


def _send_args(drive: DriveSmpp, *extra: str) -> list[str]:
    return ["smpp", "send", "--smsc", drive.address, *CREDENTIALS, *extra]


def test_send_on_transmitter_bind_gets_message_ids(drive_smpp: DriveFactory, workdir: Path) -> None:
    """``smpp send --bind tx`` binds, submits, prints the (empty) message id, and unbinds.

    drive_smpp's submit_sm_resp carries an empty message_id with status 0: the CLI reports
    the part as accepted with message_id "" and exits 0. drive_smpp's log shows one
    bind_transmitter, the submitted text, and an unbind before the connection closed.
    """
    drive = drive_smpp(1)
    code, lines, stderr = run_stkpay(
        _send_args(drive, "--bind", "tx", "--from", "123", "--to", "456", "--text", "hello 1"),
        workdir / "send.log",
        WAIT,
    )
    assert code == 0, stderr
    assert [_json(line) for line in lines] == [
        {"part": 1, "parts": 1, "message_id": "", "status": "ESME_ROK"}
    ]
    assert drive.wait_exit() == 0
    report = drive.report()
    assert report.received_from_esme == 1
    assert report.submitted_texts == ("hello 1",)
    assert report.handled.get("bind_transmitter") == 1
    assert report.handled.get("unbind") == 1


def test_send_long_text_one_line_per_part(drive_smpp: DriveFactory, workdir: Path) -> None:
    """A 300-character text goes out as two submit_sm, and the CLI prints a line for each.

    Both parts are accepted with empty message ids; drive_smpp counts two submissions.
    """
    drive = drive_smpp(1)
    text = "".join(str(i % 10) for i in range(300))
    code, lines, stderr = run_stkpay(
        _send_args(drive, "--bind", "tx", "--from", "123", "--to", "456", "--text", text),
        workdir / "send.log",
        WAIT,
    )
    assert code == 0, stderr
    parsed = [_json(line) for line in lines]
    assert [(p["part"], p["parts"], p["message_id"], p["status"]) for p in parsed] == [
        (1, 2, "", "ESME_ROK"),
        (2, 2, "", "ESME_ROK"),
    ]
    assert drive.wait_exit() == 0
    assert drive.report().received_from_esme == 2


def test_transceiver_bind_unanswered_fails_in_one_line(
    drive_smpp: DriveFactory, workdir: Path
) -> None:
    """drive_smpp never answers bind_transceiver: the CLI gives up after --bind-timeout.

    Exit status 1 and a single stderr line naming the timeout; drive_smpp logged the
    bind_transceiver as an unhandled PDU, so the CLI's PDU did reach it.
    """
    drive = drive_smpp(1)
    code, lines, stderr = run_stkpay(
        _send_args(drive, "--bind", "trx", "--bind-timeout", "1", "--to", "456", "--text", "x"),
        workdir / "send.log",
        8.0,  # the command must give up about when --bind-timeout says, not much later
    )
    assert code == 1
    assert lines == []
    err = stderr.strip().splitlines()
    assert len(err) == 1 and "not bound within 1 s" in err[0], stderr
    assert drive.wait_exit() == 0
    assert "Unhandled SMPP PDU" in drive.proc.log_text()


def test_listen_prints_drive_smpp_mos(drive_smpp: DriveFactory, workdir: Path) -> None:
    """``smpp listen --bind rx`` prints the five MOs drive_smpp sends, in order, as MOs.

    They come from 456 to 123 with texts "1".."5", sequence numbers starting at 0 and a
    receipted_message_id TLV although esm_class says ordinary message: none may be taken
    for a receipt. Every deliver_sm is acknowledged; drive_smpp's enquire_link after each
    MO is answered (the last one may race the unbind that --count 5 starts, hence >= 4).
    """
    drive = drive_smpp(5)
    listen = StkpayProcess(
        "stkpay smpp listen",
        ["smpp", "listen", "--smsc", drive.address, *CREDENTIALS, "--bind", "rx", "--count", "5"],
        workdir / "listen.log",
    )
    try:
        mos = listen.json_lines(5, WAIT)
        code, _ = listen.communicate(WAIT)
    finally:
        listen.stop()
    assert code == 0, listen.describe()
    assert [(m["from"], m["to"], m["text"]) for m in mos] == [
        ("456", "123", str(i)) for i in range(1, 6)
    ]
    assert not any("receipt" in m for m in mos)
    assert all(m["data_coding"] == 0 for m in mos)
    assert drive.wait_exit() == 0
    report = drive.report()
    assert report.sent_to_esme == 5
    assert report.handled.get("bind_receiver") == 1
    assert report.handled.get("deliver_sm_resp") == 5
    assert report.handled.get("enquire_link_resp", 0) >= 4
    assert report.handled.get("unbind") == 1


def test_listen_survives_past_drive_smpp_smsbox_dial(
    drive_smpp: DriveFactory, workdir: Path
) -> None:
    """A receiver bind held for 4 s stays up past drive_smpp's smsbox dial (1 s and 3 s).

    drive_smpp dials bearerbox's smsbox port after its first client connects and panics
    when nobody answers; the harness's stand-in on port 13001 answers, so the bind lives
    until the CLI's --duration ends it with an unbind.
    """
    drive = drive_smpp(1)
    listen = StkpayProcess(
        "stkpay smpp listen",
        [
            "smpp",
            "listen",
            "--smsc",
            drive.address,
            *CREDENTIALS,
            "--bind",
            "rx",
            "--duration",
            "4",
        ],
        workdir / "listen.log",
    )
    try:
        mos = listen.json_lines(1, WAIT)
        code, _ = listen.communicate(WAIT)
    finally:
        listen.stop()
    assert code == 0, listen.describe()
    assert [m["text"] for m in mos] == ["1"]
    assert drive.wait_exit() == 0
    assert drive.report().handled.get("unbind") == 1
    assert drive.stand_in.connections or drive.stand_in.shared


def _json(line: str) -> dict[str, object]:
    value = json.loads(line)
    assert isinstance(value, dict), line
    return value
