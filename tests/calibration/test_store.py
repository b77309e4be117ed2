"""calibration.store: the handset table, cards' calibration records, instrument results and
held-back TACs, with one behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from calibration.imei import parse_imei
from calibration.profile import CalibrationRecord, Method, encode
from calibration.rf import DEFAULT_MODEL, Profile
from calibration.store import (
    SCHEMA_VERSION,
    CalibrationStore,
    StoreInputError,
    StoreUnavailableError,
    redact,
)
from calibration.table import HandsetModel, Provenance
from tests.ledger.conftest import throwaway_pg_database

T0 = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)
ICCID = "89860012345678901234"
IMEI = "260531793113837"  # 3GPP TS 23.003 Annex B example IMEI
LAB = HandsetModel("26053179", "Example X1", Decimal("10.0"), Provenance.LAB)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh calibration database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cal.db'}"
        return
    with throwaway_pg_database() as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[CalibrationStore]:
    """An open store on each backend."""
    s = CalibrationStore.open(store_url)
    try:
        yield s
    finally:
        s.close()


def sms_record(imei: str = IMEI, a: str = "10.0") -> bytes:
    profile = DEFAULT_MODEL.compute_profile(Decimal(a))
    assert isinstance(profile, Profile)
    return encode(
        CalibrationRecord.from_profile(
            profile, imei=parse_imei(imei), method=Method.SMS, on=T0.date()
        )
    )


def test_models_round_trip_and_replace(store: CalibrationStore) -> None:
    """Models are stored by TAC, listed sorted, replaced by a later put, deleted by TAC."""
    other = HandsetModel("35209900", 'Brand, "Pro"', Decimal("27.0"), Provenance.IMPORT)
    assert store.put_models([other, LAB], at=T0) == 2
    assert store.models() == [LAB, other]
    changed = HandsetModel(LAB.tac, "Renamed", Decimal("11.5"), Provenance.IMPORT)
    store.put_models([changed], at=T0)
    assert store.get_model(LAB.tac) == changed
    assert store.delete_model(LAB.tac)
    assert not store.delete_model(LAB.tac)
    assert store.get_model(LAB.tac) is None


def test_add_model_if_absent_never_overwrites(store: CalibrationStore) -> None:
    """A learnt model does not replace a model already known (lab or import)."""
    store.put_models([LAB], at=T0)
    learnt = HandsetModel(LAB.tac, "TAC 26053179", Decimal("20.0"), Provenance.INSTRUMENT)
    assert not store.add_model_if_absent(learnt, at=T0)
    assert store.get_model(LAB.tac) == LAB


def test_instrument_results_window(store: CalibrationStore) -> None:
    """The latest ``window`` results come back oldest first, with the TAC's model if known."""
    for a in ("10.0", "12.0", "11.0", "11.5"):
        results, known = store.add_instrument_result(
            "35000001", Decimal(a), iccid=ICCID, imei=IMEI, at=T0, window=3
        )
    assert results == (Decimal("12.0"), Decimal("11.0"), Decimal("11.5"))
    assert known is None
    assert store.instrument_results("35000001") == tuple(
        Decimal(a) for a in ("10.0", "12.0", "11.0", "11.5")
    )
    store.put_models([LAB], at=T0)
    _, known = store.add_instrument_result(LAB.tac, Decimal("3.0"), iccid=ICCID, imei=IMEI, at=T0)
    assert known == LAB


def test_card_lifecycle_pending_then_calibrated(store: CalibrationStore) -> None:
    """A pending command leaves the card uncalibrated; its confirmation records method,
    levels, IMEI and time, and clears the pending command."""
    assert store.card(ICCID) is None
    raw = sms_record()
    store.mark_pending(
        ICCID, msisdn="8613912345678", imei=IMEI, counter=7, record=raw, language="en", at=T0
    )
    state = store.card(ICCID)
    assert state is not None and not state.calibrated
    assert state.pending is not None
    assert (state.pending.counter, state.pending.record, state.pending.language) == (7, raw, "en")
    assert state.pending.sent_at == T0
    later = T0 + dt.timedelta(seconds=5)
    record = store.mark_calibrated(ICCID, raw, msisdn="8613912345678", at=later)
    state = store.card(ICCID)
    assert state is not None and state.calibrated and state.pending is None
    assert state.method is Method.SMS
    assert state.imei == IMEI
    assert state.calibrated_at == later
    assert (state.payment_dbm, state.door_dbm, state.a_db) == (
        record.payment_dbm,
        record.door_dbm,
        Decimal("10.0"),
    )
    assert state.record == raw
    assert state.msisdn == "8613912345678"


def test_clear_pending_only_for_its_counter(store: CalibrationStore) -> None:
    """Clearing names the counter: a stale command's failure does not clear a newer one."""
    store.mark_pending(
        ICCID, msisdn=None, imei=IMEI, counter=3, record=sms_record(), language="zh", at=T0
    )
    assert not store.clear_pending(ICCID, 2, at=T0)
    assert store.clear_pending(ICCID, 3, at=T0)
    state = store.card(ICCID)
    assert state is not None and state.pending is None


def test_phone_change_makes_the_card_uncalibrated(store: CalibrationStore) -> None:
    """mark_uncalibrated drops the levels of the previous phone."""
    store.mark_calibrated(ICCID, sms_record(), msisdn=None, at=T0)
    store.mark_uncalibrated(ICCID, msisdn=None, imei="352099001761481", at=T0)
    state = store.card(ICCID)
    assert state is not None
    assert (state.method, state.imei, state.payment_dbm, state.record) == (
        Method.NONE,
        "352099001761481",
        None,
        None,
    )


def test_mark_calibrated_refuses_uncalibrated_or_garbage(store: CalibrationStore) -> None:
    """Only a valid calibrated file can be recorded as calibrated."""
    with pytest.raises(StoreInputError):
        store.mark_calibrated(ICCID, bytes(32), msisdn=None, at=T0)
    with pytest.raises(StoreInputError):
        store.mark_calibrated(ICCID, b"\x01" * 32, msisdn=None, at=T0)
    with pytest.raises(StoreInputError):
        store.mark_calibrated("12ab", sms_record(), msisdn=None, at=T0)
    with pytest.raises(StoreInputError):
        store.mark_calibrated(ICCID, sms_record(), msisdn=None, at=dt.datetime(2026, 1, 1))


def test_hold_back_counted_once_per_card_and_coverage(store: CalibrationStore) -> None:
    """A TAC counts each card once; held back counts cards still uncalibrated and active;
    coverage counts active cards by method."""
    cards = [f"898600000000000000{i:02d}" for i in range(4)]
    for c in cards[:3]:
        store.mark_uncalibrated(c, msisdn="86139" + c[-2:], imei=IMEI, at=T0)
        assert store.count_hold_back("26053179", c, msisdn="86139" + c[-2:], at=T0)
    assert not store.count_hold_back("26053179", cards[0], msisdn=None, at=T0)
    store.count_hold_back("35209900", cards[3], msisdn=None, at=T0)
    store.mark_uncalibrated(cards[3], msisdn=None, imei=IMEI, at=T0)
    store.mark_calibrated(cards[2], sms_record(), msisdn=None, at=T0)  # calibrated since
    store.set_active(cards[1], False, at=T0)  # closed
    holds = store.hold_backs()
    assert [(h.tac, h.cards, h.held_back, h.subscribers) for h in holds] == [
        ("26053179", 3, 1, 3),
        ("35209900", 1, 1, 0),
    ]
    counts = store.coverage_counts()
    assert (counts.active, counts.sms, counts.instrument, counts.uncalibrated) == (3, 1, 0, 2)


def test_reopen_keeps_everything_and_schema_version(store_url: str) -> None:
    """Data survives closing and reopening; reopening does not migrate twice."""
    with CalibrationStore.open(store_url) as first:
        first.put_models([LAB], at=T0)
        first.mark_calibrated(ICCID, sms_record(), msisdn=None, at=T0)
    with CalibrationStore.open(store_url) as second:
        assert second.schema_version() == SCHEMA_VERSION
        assert second.get_model(LAB.tac) == LAB
        state = second.card(ICCID)
        assert state is not None and state.method is Method.SMS


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    """The SQLite file is in WAL mode (synchronous=FULL is per connection, set on open)."""
    path = tmp_path / "sub" / "cal.db"
    with CalibrationStore.open(f"sqlite:///{path}"):
        pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_bad_urls_are_refused_in_one_line() -> None:
    """An unsupported URL is an input error; an unreachable server hides its password."""
    with pytest.raises(StoreInputError):
        CalibrationStore.open("mysql://x")
    with pytest.raises(StoreInputError):
        CalibrationStore.open("sqlite://relative")
    with pytest.raises(StoreUnavailableError) as info:
        CalibrationStore.open("postgresql://u:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(info.value)
    assert "\n" not in str(info.value)
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
