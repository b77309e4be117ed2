"""The wallet platform wired on its embedded defaults, all state in one directory.

What ``stkpay demo`` and the benches run in-process: the ledger (SQLite), PINs in the ledger's
database, the OTA counters (SQLite), the platform's OTA sender and the receiving entity for
cards' secured MO, the calibration store (SQLite) seeded with handset models, the
calibration service, and the wallet application over them, with in-process losable state.
Blocking: open, use and close it on one worker thread. ``stkpay serve`` wires the same parts
from the configuration instead (``stkpay.gateway``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from calibration.service import CalibrationService
from calibration.store import CalibrationStore
from calibration.table import HandsetModel, Provenance
from handlers.app import AppConfig, WalletApp
from handlers.pins import Pepper, SqlPinStore
from handlers.state import MemoryState
from ledger.service import Ledger
from ota.counters import SqliteCounterStore, open_counter_store
from ota.keystore import KeyStore
from ota.platform import OtaPlatform, PorResult
from ota.receiver import MemoryHistory, SecuredMoReceiver
from stk_menus import wallet_mo

__all__ = ["EmbeddedPlatform", "ModelSpec"]


class ModelSpec(Protocol):
    """A handset model the calibration table starts with (TAC, name, shielding A in dB)."""

    @property
    def tac(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def a_db(self) -> Decimal: ...


@dataclass
class EmbeddedPlatform:
    """The parts, open; :meth:`close` closes the stores."""

    ledger: Ledger
    pins: SqlPinStore
    counters: SqliteCounterStore
    platform: OtaPlatform
    store: CalibrationStore
    calibration: CalibrationService
    app: WalletApp

    @classmethod
    def open(
        cls,
        directory: Path,
        keystore: KeyStore,
        *,
        models: Iterable[ModelSpec],
        clock: Callable[[], dt.datetime],
        pepper: Pepper,
        terminal_id: bytes | None,
        on_other_por: Callable[[PorResult], None] | None = None,
    ) -> EmbeddedPlatform:
        """Open (creating) every store under ``directory``; ``clock`` is business time."""
        url = f"sqlite:///{directory / 'ledger.db'}"
        ledger = Ledger.connect(url, clock=clock)
        pins = SqlPinStore(url, pepper)
        counters = open_counter_store(f"sqlite:///{directory / 'ota.db'}")
        assert isinstance(counters, SqliteCounterStore)
        platform = OtaPlatform(keystore, counters, clock=time.time)
        receiver = SecuredMoReceiver(keystore, MemoryHistory(), tars=[wallet_mo.PLATFORM_TAR])
        store = CalibrationStore.open(f"sqlite:///{directory / 'calibration.db'}")
        store.put_models(
            [HandsetModel(m.tac, m.name, m.a_db, Provenance.LAB) for m in models],
            at=dt.datetime.now(dt.UTC),
        )
        calibration = CalibrationService(store, ota=platform, clock=clock)
        app = WalletApp(
            ledger=ledger,
            receiver=receiver,
            platform=platform,
            keystore=keystore,
            pins=pins,
            state=MemoryState(clock=time.monotonic),
            clock=clock,
            config=AppConfig(terminal_id=terminal_id),
            calibration=calibration,
            on_other_por=on_other_por,
        )
        return cls(ledger, pins, counters, platform, store, calibration, app)

    def close(self) -> None:
        """Close every store."""
        self.ledger.close()
        self.pins.close()
        self.counters.close()
        self.store.close()
