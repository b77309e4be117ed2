"""The durable history of cards' MO counters (ota/history.py), on SQLite and PostgreSQL: the
receiving entity's replay protection (TS 102 225 §5.1.1) survives a restart and is shared by
gateway instances; a redelivery (same counter, same octets) is told from a replay."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ota.errors import CounterTooLow
from ota.history import SqlHistory, history_url_for
from ota.receiver import SecuredMoReceiver
from ota.smspp import parse_command_user_data
from simcard.wallet_applet import WalletApplet
from stk_menus import wallet_mo
from tests.simcard.test_wallet_applet import ICCID, make_store

KEY = ("89860012345678901234", "ota")
OTHER = ("8986001234567890123F", "ota")


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh history URL on each backend (PostgreSQL: the table dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
        return
    import psycopg

    pg: str = request.getfixturevalue("pg_module_url")
    yield pg
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS mo_history")


def test_new_known_and_lower_counters(url: str) -> None:
    """A higher counter is stored (None); the same counter again gives its digest back
    (redelivery or replay, the receiver compares); a lower unknown one is refused; cards
    are separate."""
    history = SqlHistory(url)
    try:
        assert history.record(KEY, 5, digest("a")) is None
        assert history.record(KEY, 5, digest("other")) == digest("a")
        assert history.record(KEY, 7, digest("b")) is None
        with pytest.raises(CounterTooLow):
            history.record(KEY, 6, digest("c"))
        assert history.record(OTHER, 1, digest("d")) is None
    finally:
        history.close()


def test_replay_protection_survives_a_restart(url: str) -> None:
    """A new history on the same database (the gateway restarted, or another instance)
    knows the counters the first one accepted: a used counter gives back its first packet's
    digest (the receiver refuses other octets as a replay), a lower forgotten one is refused,
    only a higher one is new."""
    first = SqlHistory(url, window=4)
    try:
        for counter in range(1, 11):
            assert first.record(KEY, counter, digest(f"p{counter}")) is None
    finally:
        first.close()
    second = SqlHistory(url, window=4)
    try:
        assert second.record(KEY, 9, digest("replayed")) == digest("p9")
        with pytest.raises(CounterTooLow):
            second.record(KEY, 3, digest("replayed"))
        assert second.record(KEY, 10, digest("p10")) == digest("p10")
        assert second.record(KEY, 11, digest("p11")) is None
    finally:
        second.close()


def test_old_counters_are_forgotten_but_still_refused(url: str) -> None:
    """Only the last ``window`` counters keep their digests; an older one is refused as too
    low, never accepted."""
    history = SqlHistory(url, window=4)
    try:
        for counter in range(1, 21):
            history.record(KEY, counter, digest(f"p{counter}"))
        assert history.record(KEY, 18, digest("p18")) == digest("p18")
        with pytest.raises(CounterTooLow):
            history.record(KEY, 2, digest("p2"))
    finally:
        history.close()


def test_concurrent_instances_accept_each_counter_once(url: str) -> None:
    """Two instances storing the same counters at once: each counter is new for exactly one
    of them; the other sees it known (or, having lost the race for a lower one, too low)."""
    histories = [SqlHistory(url), SqlHistory(url)]

    def run(history: SqlHistory) -> list[int]:
        accepted = []
        for counter in range(1, 41):
            try:
                if history.record(KEY, counter, digest(f"p{counter}")) is None:
                    accepted.append(counter)
            except CounterTooLow:
                pass
        return accepted

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            a, b = pool.map(run, histories)
    finally:
        for history in histories:
            history.close()
    assert sorted(a + b) == list(range(1, 41))


def test_receiver_on_a_durable_history_refuses_a_replay_after_a_restart(tmp_path: Path) -> None:
    """The gateway's receiving entity on SqlHistory: a card's MO accepted before a restart is
    refused after it when replayed with other octets (a used counter) or older, and an SMSC
    redelivery of the very same packet is still recognised as one."""
    store = make_store(tmp_path)
    applet = WalletApplet.personalise(ICCID, store.card_keys(ICCID), rng=random.Random(1))
    url = f"sqlite:///{tmp_path / 'ota.db'}"

    def packet(counter: int, action: wallet_mo.WalletMo) -> bytes:
        return parse_command_user_data(list(applet.secured_user_data(action, counter=counter)))

    balance = wallet_mo.Balance(wallet_mo.Language.ZH, 0, None)
    last10 = wallet_mo.Last10(wallet_mo.Language.ZH, 0, None)
    before = SqlHistory(url)
    try:
        receiver = SecuredMoReceiver(store, before, tars=[wallet_mo.PLATFORM_TAR])
        assert not receiver.receive(ICCID, packet(4, balance)).redelivered
        assert not receiver.receive(ICCID, packet(5, balance)).redelivered
    finally:
        before.close()
    after = SqlHistory(url)  # the gateway restarted
    try:
        receiver = SecuredMoReceiver(store, after, tars=[wallet_mo.PLATFORM_TAR])
        assert receiver.receive(ICCID, packet(5, balance)).redelivered
        with pytest.raises(CounterTooLow):
            receiver.receive(ICCID, packet(5, last10))  # the counter used for other octets
        with pytest.raises(CounterTooLow):
            receiver.receive(ICCID, packet(3, last10))  # below the last accepted
        assert not receiver.receive(ICCID, packet(6, last10)).redelivered
    finally:
        after.close()


@pytest.mark.parametrize(
    ("counters", "history"),
    [
        ("sqlite:////var/stkpay/ota.db", "sqlite:////var/stkpay/ota-mo.db"),
        ("sqlite:///var/ota", "sqlite:///var/ota-mo.db"),
        ("sqlite://:memory:", "sqlite://:memory:"),
        ("postgresql://stkpay@db/stkpay", "postgresql://stkpay@db/stkpay"),
    ],
)
def test_history_sits_beside_the_counter_store(counters: str, history: str) -> None:
    """SQLite: a file of its own next to the counters' (one writer per file); PostgreSQL:
    the same database."""
    assert history_url_for(counters) == history
