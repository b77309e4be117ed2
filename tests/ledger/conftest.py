"""Fixtures running the ledger on both backends.

``ledger_url`` is parametrized: a fresh SQLite file in ``tmp_path``, and a throwaway PostgreSQL
database created for the test on the server at ``STKPAY_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, trust auth) and dropped after it.
``ledger`` is a connected :class:`~ledger.service.Ledger` on that URL with a settable clock
(``ledger_clock``). ``pg_url`` is PostgreSQL only. When PostgreSQL is unreachable the
PostgreSQL cases skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.service import Ledger

PG_ADMIN_URL = os.environ.get("STKPAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL required under CI=true: {reason}")
    pytest.skip(f"PostgreSQL unreachable: {reason}")


def _with_database(admin_url: str, dbname: str) -> str:
    """``admin_url`` with its database name replaced by ``dbname``."""
    import psycopg.conninfo

    params = psycopg.conninfo.conninfo_to_dict(admin_url)
    params["dbname"] = dbname
    user = params.get("user") or "postgres"
    host = params.get("host") or "127.0.0.1"
    port = params.get("port") or "5432"
    password = params.get("password")
    auth = f"{user}:{password}" if password else str(user)
    return f"postgresql://{auth}@{host}:{port}/{dbname}"


@contextmanager
def throwaway_pg_database(admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        _pg_unavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise  # unreachable: skip/fail raise
    name = f"stkpay_test_{uuid.uuid4().hex[:16]}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _with_database(admin_url, name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database URL (dropped after the test)."""
    with throwaway_pg_database() as url:
        yield url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    with throwaway_pg_database() as url:
        yield url


@dataclass
class SettableClock:
    """A clock for the ledger: returns ``now``; tests move it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        """Move the clock forward by a ``timedelta(**kwargs)``."""
        self.now += timedelta(**kwargs)


@pytest.fixture
def ledger_clock() -> SettableClock:
    """The injected clock of ``ledger``: 2026-03-02 02:00 UTC (10:00 in Shanghai)."""
    return SettableClock(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))


@pytest.fixture
def ledger(ledger_url: str, ledger_clock: SettableClock) -> Iterator[Ledger]:
    """A connected ledger on each backend, default limits, clock ``ledger_clock``."""
    led = Ledger.connect(ledger_url, clock=ledger_clock)
    try:
        yield led
    finally:
        led.close()
