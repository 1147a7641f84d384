"""Postgres access: migrations and role bootstrap (``migrations``), tenant-scoped connections."""
