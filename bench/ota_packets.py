"""Benchmark: TS 102 225 secured command packets built and verified per second, one core.

The packet is what a platform sends in a campaign: SPI 16 39 (counter must be higher,
ciphered, CC; PoR always, by SMS-SUBMIT, ciphered, with a CC), TAR B0 00 10 and one 40-octet
APDU (UPDATE BINARY of 35 octets), a new counter for every packet. For AES-128 (KIc/KID 12:
AES-CBC + AES-CMAC) and two-key 3DES (KIc/KID 15: outer-CBC + CBC-MAC) it prints

* built/s: ``ota.secured_packet.encode_command`` (pad, CC, cipher);
* verified/s: ``decode_command`` (decipher, check the CC, strip the padding);

each twice: reusing one ``Keys`` (the per-key cipher/CMAC objects it caches are warm: one
card's packets, or a card model) and with a new ``Keys`` per packet (a campaign over many
cards, one key set each: the cold case). Each figure is the median of ``--repeats`` runs of
``--packets`` packets, timed with ``time.perf_counter`` with the garbage collector paused;
the process is pinned to one CPU where the OS allows. The target is 20,000 AES packets
built/s and verified/s. Usage: ``python bench/ota_packets.py [--quick] [--packets N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from ota.secured_packet import Keys, Spi, decode_command, encode_command

SPI = Spi.from_hex("1639")
TAR = bytes.fromhex("B00010")
APDU = bytes.fromhex("00D6000023") + bytes(range(35))  # UPDATE BINARY, 35 data octets: 40
TARGET = 20_000  # AES packets per second, built and verified (issue 4)


@dataclass(frozen=True, slots=True)
class Suite:
    """An algorithm pair as the KIc/KID octets name it, with key sizes."""

    name: str
    kic: int
    kid: int
    key_size: int


SUITES = (Suite("AES-128", 0x12, 0x12, 16), Suite("3DES-2key", 0x15, 0x15, 16))


def _keys(suite: Suite, index: int) -> Keys:
    """Distinct dummy keys per index (the bench never sees real keys)."""
    seed = index.to_bytes(4, "big")
    kic = (seed * (suite.key_size // 4 + 1))[: suite.key_size]
    kid = bytes(b ^ 0x5A for b in kic)
    return Keys(kic=kic, kid=kid)


def _rate(run: Callable[[], None], count: int, repeats: int) -> float:
    """Median packets/s of ``repeats`` timed calls of ``run`` (each handling ``count``)."""
    run()  # warm-up
    rates = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            rates.append(count / (time.perf_counter() - start))
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(rates)


def measure(suite: Suite, count: int, repeats: int, *, fresh_keys: bool) -> tuple[float, float]:
    """(built/s, verified/s) for ``suite``; with ``fresh_keys`` a new Keys for each packet."""
    shared = _keys(suite, 0)
    key_sets = [_keys(suite, i) for i in range(count)] if fresh_keys else [shared] * count

    def build() -> None:
        for counter, keys in enumerate(key_sets, start=1):
            encode_command(
                spi=SPI, kic=suite.kic, kid=suite.kid, tar=TAR, counter=counter, data=APDU,
                keys=Keys(kic=keys.kic, kid=keys.kid) if fresh_keys else keys,
            )  # fmt: skip

    packets = [
        encode_command(
            spi=SPI, kic=suite.kic, kid=suite.kid, tar=TAR, counter=counter, data=APDU, keys=keys
        )
        for counter, keys in enumerate(key_sets, start=1)
    ]
    check = decode_command(packets[-1], key_sets[-1])
    assert check.data == APDU and check.counter == count, "round trip failed"

    def verify() -> None:
        for packet, keys in zip(packets, key_sets, strict=True):
            decode_command(packet, Keys(kic=keys.kic, kid=keys.kid) if fresh_keys else keys)

    return _rate(build, count, repeats), _rate(verify, count, repeats)


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def main(argv: list[str] | None = None) -> int:
    """Measure every suite in both key modes and print one line each."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer packets (a few seconds)")
    parser.add_argument("--packets", type=int, default=None, help="packets per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args(argv)
    count = args.packets or (5_000 if args.quick else 50_000)
    print(f"secured command packets, SPI 16 39, {len(APDU)}-octet APDU; {_pin_one_core()}")
    print(f"median of {args.repeats} runs of {count} packets")
    print(f"{'algorithms':<12}{'keys':<16}{'built/s':>12}{'verified/s':>13}")
    aes: list[float] = []
    for suite in SUITES:
        for fresh in (False, True):
            built, verified = measure(suite, count, args.repeats, fresh_keys=fresh)
            mode = "new per packet" if fresh else "reused"
            print(f"{suite.name:<12}{mode:<16}{built:>12,.0f}{verified:>13,.0f}")
            if suite.name.startswith("AES"):
                aes += [built, verified]
    worst = min(aes)
    verdict = "met" if worst >= TARGET else "NOT met"
    print(f"target: >= {TARGET:,} AES packets built/s and verified/s: {verdict} "
          f"(slowest AES figure {worst:,.0f}/s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
