"""stkpay demo: the whole service in one process, checked end to end."""

from __future__ import annotations

import subprocess
import sys


def test_demo_exchanges_long_messages_both_ways_with_receipts() -> None:
    """`stkpay demo` binds the ESME to the simulator over TCP, sends long UCS2 and GSM 7-bit
    MT with receipts, receives long MO reassembled, answers them, and exits 0 only when
    every check held."""
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
