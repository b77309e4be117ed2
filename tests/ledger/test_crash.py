"""A ledger writer SIGKILLed in the middle of a stream of transfers, restarted (issue 3,
acceptance "crash test"), on SQLite and PostgreSQL.

This file is also the writer: ``python test_crash.py URL N`` streams N steps with
deterministic idempotency keys from four threads (so that group commit batches them), printing
each finished step. The test kills it twice at different points, runs it to the end, then
replays the whole stream once more. After each kill ``stkpay ledger verify`` passes and
every transfer in the journal is whole; at the end each transfer of the stream is in the
journal exactly once (counted by key and by its unique (code, amount)), nothing is left in
flight, and the final replay posts nothing.

Steps ``i`` by kind ``(i // 4) % 4``: a bank deposit of ``100 + i`` fen; a load of ``1000 + i``
reserved and posted; a purchase of ``50 + i`` (offline counter ``i``); a load of ``1000 + i``
reserved and voided.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

MSISDN = "8613800138000"
ICCID = "89860012345678901234"
MERCHANT = "M-CRASH"
THREADS = 4
STEPS = 240
SEED_CASH = 10_000_000
FIRST_LOAD = 50_000


def _kind(i: int) -> str:
    return ("deposit", "load", "purchase", "void")[(i // 4) % 4]


def _expected(steps: int) -> Counter[tuple[str, int]]:
    """(code, amount) of every transfer the full stream posts, each once."""
    want: Counter[tuple[str, int]] = Counter()
    want[("deposit", SEED_CASH)] += 1
    want[("topup_reserve", FIRST_LOAD)] += 1
    want[("topup_post", FIRST_LOAD)] += 1
    for i in range(steps):
        kind = _kind(i)
        if kind == "deposit":
            want[("deposit", 100 + i)] += 1
        elif kind == "load":
            want[("topup_reserve", 1000 + i)] += 1
            want[("topup_post", 1000 + i)] += 1
        elif kind == "purchase":
            want[("purchase", 50 + i)] += 1
        else:
            want[("topup_reserve", 1000 + i)] += 1
            want[("topup_void", 1000 + i)] += 1
    return want


# -- the writer (runs in a child process) -----------------------------------------------------


def stream(url: str, steps: int) -> None:
    """Run the whole stream; every step is keyed, so a rerun completes what a kill cut."""
    from ledger.errors import WalletExists
    from ledger.limits import Limits
    from ledger.service import Ledger

    led = Ledger.connect(url, limits=Limits(daily_topups=1_000_000))
    led.open_wallet(MSISDN, "110101199003070000", request_id="crash:open")
    led.deposit(MSISDN, SEED_CASH, "bank", request_id="crash:seed")
    led.enable_card(MSISDN, ICCID, request_id="crash:enable")
    with contextlib.suppress(WalletExists):  # opened by an earlier run
        led.open_merchant(MERCHANT, "Crash canteen")
    first = led.reserve_load(
        MSISDN, ICCID, FIRST_LOAD, card_balance=0, online_counter=0, key="crash:load:first"
    )
    led.post_load(first.id)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def step(i: int) -> None:
        kind = _kind(i)
        if kind == "deposit":
            led.deposit(MSISDN, 100 + i, "bank", request_id=f"crash:dep:{i}")
        elif kind == "purchase":
            led.purchase(ICCID, MERCHANT, 50 + i, offline_counter=i + 1)
        else:
            load = led.reserve_load(
                MSISDN,
                ICCID,
                1000 + i,
                card_balance=0,
                online_counter=i + 1,
                key=f"crash:{kind}:{i}",
            )
            if kind == "load":
                led.post_load(load.id)
            else:
                led.void_load(load.id)

    def run(t: int) -> None:
        try:
            for i in range(t, steps, THREADS):
                step(i)
                with lock:
                    sys.stdout.write(f"{i}\n")
                    sys.stdout.flush()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    led.close()
    if failures:
        raise failures[0]
    print("done", flush=True)


# -- the test ---------------------------------------------------------------------------------


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STKPAY_CONFIG"}
    env["STKPAY_LEDGER_URL"] = url
    return env


def _start(url: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, url, str(STEPS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(url),
        cwd=cwd,
    )


def _kill_after(proc: subprocess.Popen[str], lines: int) -> int:
    """SIGKILL ``proc`` once it has reported ``lines`` finished steps; return how many."""
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if line.strip() == "done":
            break
        seen += 1
        if seen >= lines:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr and proc.stderr.read())
    if proc.stdout:
        proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
    return seen


def _run_to_end(url: str, cwd: Path) -> None:
    proc = _start(url, cwd)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert out.rstrip().endswith("done")


def _cli_verify(url: str, cwd: Path) -> None:
    """`stkpay ledger verify` as a separate process: exit 0, "ledger ok"."""
    proc = subprocess.run(
        [sys.executable, "-m", "stkpay", "ledger", "verify"],
        capture_output=True,
        text=True,
        env=_env(url),
        cwd=cwd,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("ledger ok")


def _journal(url: str) -> list[tuple[str, str, int]]:
    """(key, code, amount) of every transfer, read with plain SQL."""
    sql = "SELECT key, code, amount FROM transfers ORDER BY id"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as db:
            rows = db.execute(sql).fetchall()
        return [(str(k), str(c), int(a)) for k, c, a in rows]
    import psycopg

    with psycopg.connect(url) as conn:
        rows2: list[Any] = conn.execute(sql).fetchall()
    return [(str(k), str(c), int(a)) for k, c, a in rows2]


def _whole(journal: list[tuple[str, str, int]]) -> None:
    """Every transfer in the journal belongs to the stream, at most once per key."""
    want = _expected(STEPS)
    keys = Counter(k for k, _, _ in journal)
    assert max(keys.values()) == 1
    got = Counter((c, a) for _, c, a in journal)
    assert not got - want, f"transfers the stream never asked for: {got - want}"


def test_sigkill_mid_stream_then_replay_posts_each_transfer_once(
    ledger_url: str, tmp_path: Path
) -> None:
    """Killed twice mid-stream, verify passes and the journal holds only whole transfers;
    completed and replayed, each transfer of the stream is posted exactly once."""
    first = _kill_after(_start(ledger_url, tmp_path), STEPS // 5)
    assert first < STEPS
    _cli_verify(ledger_url, tmp_path)
    _whole(_journal(ledger_url))

    second = _kill_after(_start(ledger_url, tmp_path), STEPS // 2)
    assert second < STEPS
    _cli_verify(ledger_url, tmp_path)
    _whole(_journal(ledger_url))

    _run_to_end(ledger_url, tmp_path)
    journal = _journal(ledger_url)
    assert Counter((c, a) for _, c, a in journal) == _expected(STEPS)
    assert len({k for k, _, _ in journal}) == len(journal)
    _cli_verify(ledger_url, tmp_path)

    _run_to_end(ledger_url, tmp_path)  # a full replay: nothing new
    assert _journal(ledger_url) == journal

    from ledger.service import Ledger

    led = Ledger.connect(ledger_url)
    try:
        assert led.pending_loads(ICCID) == []
        wallet = led.wallet(MSISDN)
        want = _expected(STEPS)
        deposits = sum(a * n for (c, a), n in want.items() if c == "deposit")
        posted = sum(a * n for (c, a), n in want.items() if c == "topup_post")
        spent = sum(a * n for (c, a), n in want.items() if c == "purchase")
        assert (wallet.cash, wallet.in_flight) == (deposits - posted, 0)
        assert wallet.card_balance == posted - spent
    finally:
        led.close()


if __name__ == "__main__":
    stream(sys.argv[1], int(sys.argv[2]))
    sys.exit(0)
