"""Benchmark: the wallet app's CPU per complete top-up, in process (no SMPP, no gateway).

Per complete top-up :meth:`handlers.app.WalletApp.on_message` handles two MO: the card's
secured top-up (its PIN checked, the load reserved, the CREDIT FOR LOAD built and secured)
and the card's PoR (the TAC checked, the load posted, the reply rendered). The rig is the one
of ``tests/handlers/test_app.py``, rebuilt here (:class:`Rig`): ledger, PIN store
and OTA counters on SQLite files in one directory (group commit off: every write commits in
the caller's thread), the key file beside them, the losable state in memory, and a fleet of
virtual phones whose cards answer the CREDIT.

``--cards`` subscribers (wallet funded, card enabled, PIN set) top up 1 yuan each in turn,
the clock one second further per top-up and one day further per round (the ledger allows 5
top-ups per card a day); a warm-up of 20 top-ups first. Only the app is
timed: ``time.thread_time`` around each ``on_message`` (the phones and cards are not
counted). A round is one top-up per card; the figure is the median of ``--rounds`` rounds,
in µs of the app's CPU per top-up, with the stores in a temporary directory on disk and on
``/dev/shm`` (tmpfs: no fsync cost), each in a fresh rig. The garbage collector runs as in
production (a collection before each round). After the timed rounds one more round counts the
calls per top-up into the app's collaborators (ledger, PIN store, OTA counters, key store);
the wrappers that count are not in place while timing.

Usage: ``python bench/app_topup.py [--cards N] [--rounds R] [--dir PATH ...]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path: put the project root first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from handlers.app import AppConfig, Effect, SendOta, SendSms, WalletApp
from handlers.pins import Pepper, SqlPinStore
from handlers.state import MemoryState
from ledger.service import Ledger
from ota.counters import open_counter_store
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.platform import OtaPlatform
from ota.receiver import MemoryHistory, SecuredMoReceiver
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD
from simcard.fleet import Fleet
from simcard.wallet_applet import TERMINAL_ID, Outgoing
from smsc.reassembly import Message
from smsc.udh import CONCAT_IEIS, split_udh
from stk_menus import wallet_mo

#: collaborator attributes of the rig whose calls are counted, and the methods counted
COUNTED = {
    "ledger": ("wallet", "pending_loads", "reserve_load", "post_load", "void_load"),
    "pins": ("verify", "succeeded"),
    "counters": ("next",),
    "keystore": ("card_keys",),
}
DAY = 86_400.0
FIRST = "8613900000000"
PIN = "123456"
ID_NUMBER = "11010119900307001X"
START = dt.datetime(2024, 5, 20, 2, 30, tzinfo=dt.UTC)  # 10:30 in Asia/Shanghai
TOPUP = "我的手机钱包/充值"
CONFIRMED = "充值成功"  # how the topup_ok reply in Chinese starts


class Clock:
    """Settable time: aware UTC datetimes for the ledger and the app, seconds for the rest."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def to_message(msisdn: str, out: Outgoing) -> Message:
    """What the SMSC side hands the app for an MO the phone sent (reassembled, UDH split)."""
    payload = b""
    ies = []
    for part in out.user_data:
        part_ies, data = split_udh(part)
        ies += [ie for ie in part_ies if ie.iei not in CONCAT_IEIS and ie not in ies]
        payload += data
    return Message(
        source=msisdn,
        destination=out.destination,
        data_coding=out.data_coding,
        esm_class=0,
        protocol_id=out.protocol_id,
        payload=payload,
        ies=tuple(ies),
        parts=len(out.user_data),
    )


class Rig:
    """The app over SQLite stores in ``tmp`` and ``cards`` virtual phones, each subscriber's
    wallet open and funded, card enabled, PIN set (as tests/handlers/test_app.py's rig)."""

    def __init__(self, tmp: Path, cards: int) -> None:
        self.clock = Clock()
        self.keystore = FileKeyStore(tmp / "keys.json")
        generate_keyset(self.keystore, "ota", 1, KeyAlgorithm.AES)
        url = f"sqlite:///{tmp / 'ledger.db'}"
        self.ledger = Ledger.connect(url, clock=self.clock, group_commit=False)
        self.pins = SqlPinStore(url, Pepper(b"\x5a" * 32))
        self.counters = open_counter_store(f"sqlite:///{tmp / 'counters.db'}")
        self.platform = OtaPlatform(self.keystore, self.counters, clock=self.clock.seconds)
        receiver = SecuredMoReceiver(self.keystore, MemoryHistory(), tars=[wallet_mo.PLATFORM_TAR])
        self.app = WalletApp(
            ledger=self.ledger,
            receiver=receiver,
            platform=self.platform,
            keystore=self.keystore,
            pins=self.pins,
            state=MemoryState(clock=self.clock.seconds),
            clock=self.clock,
            config=AppConfig(terminal_id=TERMINAL_ID),
        )
        self.fleet = Fleet(self.keystore, count=cards, first_msisdn=FIRST, seed=7)
        self.confirmed = 0  # top-ups confirmed to the subscriber (topup_ok)
        self.other: list[str] = []  # any other reply
        for i in range(cards):
            msisdn = self.msisdn(i)
            phone = self.fleet[msisdn].phone
            self.ledger.open_wallet(msisdn, ID_NUMBER)
            self.ledger.enable_card(msisdn, phone.card.iccid)
            self.ledger.deposit(msisdn, 200_000, "bank", request_id=f"fund-{msisdn}")
            self.pins.set_pin(phone.card.iccid, PIN)
            phone.power_on()
            phone.outbox()  # the calibration MO

    def msisdn(self, i: int) -> str:
        return str(int(FIRST) + i)

    def topup(self, msisdn: str, yuan: int) -> None:
        """The subscriber tops up from the STK menu; MO, CREDIT and PoR run to the end."""
        phone = self.fleet[msisdn].phone
        phone.select(TOPUP)
        phone.input(str(yuan))
        phone.input(PIN)
        self._pump(msisdn)

    def _pump(self, msisdn: str) -> None:
        for out in self.fleet[msisdn].phone.outbox():
            self._apply(self.app.on_message(to_message(msisdn, out)))

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendSms):
                if effect.text.startswith(CONFIRMED):
                    self.confirmed += 1
                else:
                    self.other.append(effect.text)
            elif isinstance(effect, SendOta):
                self.fleet[effect.msisdn].phone.deliver(
                    effect.outgoing.user_data,
                    source="10658888",
                    protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
                    data_coding=DCS_CLASS2_8BIT,
                )
                self._pump(effect.msisdn)

    def verified(self) -> bool:
        report = self.ledger.verify()
        return report.ok and report.total == 0

    def close(self) -> None:
        self.ledger.close()
        self.pins.close()
        self.counters.close()


def _rig(base: str | None, cards: int) -> Rig:
    return Rig(Path(tempfile.mkdtemp(prefix="app_topup.", dir=base)), cards)


def _timed(rig: Rig) -> list[float]:
    """Wrap the app's ``on_message``; returns the list it adds each call's CPU seconds to."""
    spent = [0.0]
    on_message = rig.app.on_message

    def timed(msg: Any) -> Any:
        start = time.thread_time()
        try:
            return on_message(msg)
        finally:
            spent[0] += time.thread_time() - start

    rig.app.on_message = timed  # type: ignore[method-assign]
    return spent


def _count(rig: Rig) -> Counter[str]:
    """Wrap the counted methods on the rig's collaborators (the app holds the same objects)."""
    calls: Counter[str] = Counter()

    def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(*args, **kwargs)

        return wrapper

    for attr, methods in COUNTED.items():
        target = getattr(rig, attr)
        for method in methods:
            setattr(target, method, counting(f"{attr}.{method}", getattr(target, method)))
    return calls


def run(base: str | None, cards: int, rounds: int) -> tuple[float, list[float], Counter[str]]:
    """Median µs of app CPU per top-up, each round's figure, and calls per top-up."""
    rig = _rig(base, cards)
    try:
        spent = _timed(rig)
        for i in range(min(cards, 20)):  # warm-up: caches, prepared statements
            rig.topup(rig.msisdn(i), 1)
        figures = []
        for _ in range(rounds):
            rig.clock.advance(DAY)
            gc.collect()
            spent[0] = 0.0
            for i in range(cards):
                rig.clock.advance(1)
                rig.topup(rig.msisdn(i), 1)
            figures.append(spent[0] / cards * 1e6)
        calls = _count(rig)
        rig.clock.advance(DAY)
        for i in range(cards):
            rig.clock.advance(1)
            rig.topup(rig.msisdn(i), 1)
        calls = Counter(calls)  # what the app called; the checks below call the ledger too
        topups = min(cards, 20) + (rounds + 1) * cards
        if rig.other or rig.confirmed != topups or rig.ledger.pending_loads():
            raise SystemExit(f"not every top-up completed: {rig.other[:3]}")
        if not rig.verified():
            raise SystemExit("the ledger's journal does not verify")
        return statistics.median(figures), figures, calls
    finally:
        rig.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--cards", type=int, default=300, help="subscribers (top-ups a round)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument(
        "--dir",
        action="append",
        dest="dirs",
        help="where the stores go (repeatable; default: the temp dir on disk, and /dev/shm)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.cards < 1:
        parser.error("--rounds and --cards must be at least 1")
    dirs = args.dirs or [tempfile.gettempdir(), "/dev/shm"]
    print(f"wallet app CPU per complete top-up, {args.cards} cards, {args.rounds} rounds")
    for base in dirs:
        median, figures, calls = run(base, args.cards, args.rounds)
        each = " ".join(f"{f:.0f}" for f in figures)
        print(f"  stores in {base:<12} {median:7.0f} us  (rounds: {each})")
    per = ", ".join(f"{name} {n / args.cards:g}" for name, n in sorted(calls.items()))
    print(f"  calls per top-up: {per}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
