"""The core ledger: accounts, double-entry postings, two-phase card loads, limits and
idempotency keys, on SQLite (embedded default) and PostgreSQL. Knows nothing about SMS.
"""
