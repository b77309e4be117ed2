"""A throwaway PostgreSQL database for a bench run (created on the admin URL's server, dropped
after, even when the run fails)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

__all__ = ["throwaway_database"]


@contextlib.contextmanager
def throwaway_database(admin_url: str, prefix: str = "stkpay_bench") -> Iterator[str]:
    """A new database named ``prefix_<random>`` on the server of ``admin_url``; its URL."""
    import psycopg
    import psycopg.conninfo

    admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    params = psycopg.conninfo.conninfo_to_dict(admin_url)
    password = params.get("password")
    auth = f"{params.get('user') or 'postgres'}" + (f":{password}" if password else "")
    where = f"{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://{auth}@{where}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
