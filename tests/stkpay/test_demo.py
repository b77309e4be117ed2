"""stkpay demo: the simulator, the gateway as its own process and a fleet of virtual phones,
checked end to end."""

from __future__ import annotations

import subprocess
import sys


def test_demo_exchanges_long_messages_both_ways_with_receipts() -> None:
    """`stkpay demo` binds the ESME to the simulator over TCP, sends long UCS2 and GSM 7-bit
    MT with receipts, receives long MO reassembled, answers them; then `stkpay serve` runs as
    a child process (ready, then drained and exit 0 on SIGTERM) for the fleet's wallets,
    calibration (SMS, business hall, instrument, phone change), top-ups refused by each
    limit, a lost PoR settled, an OTA push with verified PoRs, coverage and Ledger.verify()
    appear in the summary; it exits 0 only when every check held."""
    proc = subprocess.run(
        [sys.executable, "-m", "stkpay.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "demo: all checks passed" in out
    assert "FAILED" not in out
    assert "long Chinese (UCS2): 146 chars, 3 part(s), accepted" in out
    assert "delivery receipts: 6/6, 6 DELIVRD" in out
    # the wallet, calibration and OTA push part (issues 5 and 6)
    assert "  top-up attempts                  31" in out
    assert "  top-up successes                 26" in out
    for label in (
        "refused: over 500 per top-up      1",
        "refused: card cap 1000            1",
        "refused: 5 top-ups a day          1",
        "refused: no overdraft             1",
        "refused: wrong PIN                1",
    ):
        assert label in out
    assert "top-up latency p50 / p99" in out
    assert "lost PoR resolved               yes" in out
    assert "SMS 16 (80%), instrument 1 (5%), uncalibrated 3 (15%)" in out
    assert "TAC 86891203 (unknown): 1 held back of 2 cards" in out
    assert "TAC 86000029 (refused): 2 held back of 2 cards" in out
    assert "OTA push EF 6F51             5/5 PoR verified" in out
    assert "ledger verify                passed" in out
    assert "[ok] a phone change triggered recalibration" in out
    assert "[ok] one phone calibrated by the instrument path" in out
    assert "Gateway: stkpay serve (pid " in out
    assert "[ok] stkpay serve drained, unbound and exited 0 on SIGTERM" in out
    assert "[ok] stkpay serve logged no failure" in out
