"""PIN store: keyed hashes, attempt counting, lock-out and unlock (handlers/pins.py)."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.pins import (
    MAX_ATTEMPTS,
    PEPPER_ENV,
    MemoryPinStore,
    Pepper,
    PinError,
    PinStore,
    PinVerdict,
    SqlPinStore,
    open_pin_store,
    pepper_from_env,
    pin_hash,
)

ICCID = "89860012345678901234"
ICCID2 = "8986001234567890123"
PEPPER = Pepper(bytes(range(32)))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PinStore]:
    """Both implementations."""
    pins: PinStore
    if request.param == "memory":
        pins = MemoryPinStore(PEPPER)
    else:
        pins = SqlPinStore(f"sqlite:///{tmp_path / 'ledger.db'}", PEPPER)
    yield pins
    pins.close()


def test_hash_is_hmac_sha256_of_salt_and_pin() -> None:
    """The stored value is HMAC-SHA256 keyed by the pepper over domain, salt and PIN."""
    salt = b"\x01" * 16
    expected = hmac.new(
        PEPPER.key, b"stkpay-pin-v1\x00" + salt + b"\x00123456", hashlib.sha256
    ).digest()
    assert pin_hash(PEPPER, salt, "123456") == expected
    assert pin_hash(Pepper(b"\x02" * 32), salt, "123456") != expected


def test_right_pin_is_ok_and_wrong_counts_down(store: PinStore) -> None:
    """A wrong PIN is counted and the attempts left reported; the right one is accepted."""
    store.set_pin(ICCID, "123456")
    assert store.verify(ICCID, "123456").verdict is PinVerdict.OK
    first = store.verify(ICCID, "000000")
    assert (first.verdict, first.attempts_left) == (PinVerdict.WRONG, 2)
    second = store.verify(ICCID, "000000")
    assert (second.verdict, second.attempts_left) == (PinVerdict.WRONG, 1)
    assert store.verify(ICCID, "123456").ok  # a right PIN alone does not reset
    third = store.verify(ICCID, "000000")
    assert (third.verdict, third.attempts_left) == (PinVerdict.LOCKED, 0)


def test_locked_refuses_even_the_right_pin_until_unlocked(store: PinStore) -> None:
    """After 3 wrong PINs even the right one is refused; unlock restores it."""
    store.set_pin(ICCID, "123456")
    for _ in range(MAX_ATTEMPTS):
        store.verify(ICCID, "999999")
    assert store.verify(ICCID, "123456").verdict is PinVerdict.LOCKED
    assert store.status(ICCID).verdict is PinVerdict.LOCKED
    store.succeeded(ICCID)  # success reporting cannot unlock
    assert store.verify(ICCID, "123456").verdict is PinVerdict.LOCKED
    store.unlock(ICCID)
    assert store.verify(ICCID, "123456").ok
    assert store.status(ICCID).attempts_left == MAX_ATTEMPTS


def test_succeeded_resets_the_count(store: PinStore) -> None:
    """Reporting a judged request with the right PIN resets the wrong count."""
    store.set_pin(ICCID, "123456")
    store.verify(ICCID, "111111")
    store.verify(ICCID, "111111")
    store.succeeded(ICCID)
    assert store.verify(ICCID, "111111").attempts_left == 2


def test_count_false_judges_without_counting(store: PinStore) -> None:
    """verify(count=False) (a redelivered MO) costs no attempt and reports them as they are."""
    store.set_pin(ICCID, "123456")
    for _ in range(5):
        assert store.verify(ICCID, "111111", count=False).attempts_left == MAX_ATTEMPTS
    store.verify(ICCID, "111111")
    check = store.verify(ICCID, "111111", count=False)
    assert (check.verdict, check.attempts_left) == (PinVerdict.WRONG, 2)
    assert store.status(ICCID).attempts_left == 2


def test_not_set_and_per_card(store: PinStore) -> None:
    """A card without a PIN is NOT_SET; cards do not share state; F filler is the same card."""
    assert store.verify(ICCID, "123456").verdict is PinVerdict.NOT_SET
    store.set_pin(ICCID2 + "F", "654321")
    assert store.verify(ICCID2, "654321").ok
    assert store.verify(ICCID, "654321").verdict is PinVerdict.NOT_SET


def test_set_pin_replaces_and_clears_lock(store: PinStore) -> None:
    """Setting a new PIN at the hall replaces the old one and clears the count."""
    store.set_pin(ICCID, "123456")
    for _ in range(MAX_ATTEMPTS):
        store.verify(ICCID, "000000")
    store.set_pin(ICCID, "246810")
    assert store.verify(ICCID, "123456").attempts_left == 2
    assert store.verify(ICCID, "246810").ok


def test_sqlite_stores_no_pin_and_per_card_salt(tmp_path: Path) -> None:
    """The table holds neither the PIN nor equal hashes for equal PINs; state survives reopen."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    pins = SqlPinStore(url, PEPPER)
    pins.set_pin(ICCID, "123456")
    pins.set_pin(ICCID2, "123456")
    pins.verify(ICCID, "000000")
    pins.close()
    con = sqlite3.connect(tmp_path / "ledger.db")
    rows = con.execute("SELECT iccid, salt, pin_hash, failures FROM wallet_pins").fetchall()
    con.close()
    assert len(rows) == 2
    assert rows[0][1] != rows[1][1] and rows[0][2] != rows[1][2]
    assert all(b"123456" not in bytes(r[1]) + bytes(r[2]) for r in rows)
    again = SqlPinStore(url, PEPPER)
    assert again.status(ICCID).attempts_left == 2
    assert again.verify(ICCID2, "123456").ok
    again.close()


def test_bad_arguments_raise_pin_error(store: PinStore) -> None:
    """Malformed PINs and ICCIDs raise PinError whose message shows no PIN."""
    with pytest.raises(PinError) as info:
        store.set_pin(ICCID, "12a456")
    assert "12a456" not in str(info.value)
    with pytest.raises(PinError):
        store.verify("1234", "123456")
    with pytest.raises(PinError):
        store.verify(ICCID, "123")


def test_pepper_from_env_and_repr_hides_it() -> None:
    """The pepper comes from STKPAY_PIN_PEPPER (hex) and its repr shows a check value only."""
    pepper = pepper_from_env({PEPPER_ENV: "00" * 32})
    assert pepper.key == bytes(32)
    assert "00000000" not in repr(pepper)
    with pytest.raises(PinError):
        pepper_from_env({})
    with pytest.raises(PinError):
        pepper_from_env({PEPPER_ENV: "zz"})
    with pytest.raises(PinError):
        Pepper(b"short")
    assert repr(MemoryPinStore(pepper)).startswith("MemoryPinStore(")


def test_open_pin_store_picks_the_backend(tmp_path: Path) -> None:
    """memory: and None give the in-process store, a sqlite URL the SQL store; others fail."""
    assert isinstance(open_pin_store(None, PEPPER), MemoryPinStore)
    sql = open_pin_store(f"sqlite:///{tmp_path / 'x.db'}", PEPPER)
    assert isinstance(sql, SqlPinStore)
    sql.close()
    with pytest.raises(PinError):
        open_pin_store("mysql://x", PEPPER)


@given(st.text(max_size=20))
def test_arbitrary_pin_text_raises_only_pin_error(text: str) -> None:
    """Any string either is a valid PIN (judged) or raises PinError, nothing else."""
    pins = MemoryPinStore(PEPPER)
    pins.set_pin(ICCID, "123456")
    try:
        check = pins.verify(ICCID, text)
    except PinError:
        return
    assert check.verdict in (PinVerdict.OK, PinVerdict.WRONG)
