"""The micro-benchmarks run (tiny sizes, no figures judged): a bench that no longer starts
is found here rather than by the next person who needs its numbers. Figures live in the
benches' output and docs/benchmarks.md, never in tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_esme_paths_bench_runs() -> None:
    """Every path of the ESME bench prints a figure."""
    out = _run("bench/esme_paths.py", "--count", "20", "--rounds", "1")
    rows = [line for line in out.splitlines() if line.startswith("  M")]
    assert [row.split(":")[0].strip() for row in rows] == ["MO in"] * 2 + ["MT out"] * 4


def test_app_topup_bench_runs_and_counts_store_calls(tmp_path: Path) -> None:
    """The wallet-app bench completes its top-ups (it exits non-zero otherwise) and counts the
    store calls of one: the card's pending loads are not read (nothing is in flight on the card,
    and a new reservation is known by its own credit note), the wallet read once, the counter
    drawn once, the PIN checked once."""
    out = _run("bench/app_topup.py", "--cards", "2", "--rounds", "1", "--dir", str(tmp_path))
    calls = next(line for line in out.splitlines() if "calls per top-up:" in line)
    counted = {
        name: int(n)
        for name, n in (item.strip().rsplit(" ", 1) for item in calls.split(":", 1)[1].split(","))
    }
    assert counted.get("ledger.pending_loads", 0) == 0
    assert counted["ledger.wallet"] == 1  # to find the card; the post says the new balances
    assert counted["counters.next"] == 1
    assert counted["pins.verify"] == 1
    assert counted["ledger.reserve_load"] == counted["ledger.post_load"] == 1
