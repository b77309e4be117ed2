"""Fixtures shared by the OTA store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ledger.conftest import throwaway_pg_database


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """One throwaway PostgreSQL database per test module (dropped afterwards)."""
    with throwaway_pg_database() as url:
        yield url
