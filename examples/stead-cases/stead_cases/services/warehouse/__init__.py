"""The example warehouse: a Postgres database of its own beside Stead's.

:func:`create_warehouse` (re)creates it in a Postgres server from an admin DSN,
loads ``schema.sql`` and ``seed.sql``, and returns the DSN of a read-only role: the
only access the ``warehouse.stock`` connector needs, so that is all it gets. The
warehouse's own writes (a return arriving) go through :func:`receive_return` with
the admin DSN, standing in for the warehouse team's system.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

HERE = Path(__file__).resolve().parent


def dsn_for(dsn: str, database: str, user: str | None = None, password: str | None = None) -> str:
    """``dsn`` pointed at another database (and optionally another login)."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if user is not None:
        host = netloc.rsplit("@", 1)[-1]
        netloc = f"{quote(user)}:{quote(password or '')}@{host}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


async def create_warehouse(admin_dsn: str, database: str = "warehouse") -> str:
    """Drop and create ``database`` with the sample data; return a read-only DSN for it."""
    reader = f"{database}_reader"
    password = secrets.token_urlsafe(16)
    server = await asyncpg.connect(dsn_for(admin_dsn, "postgres"))
    try:
        await server.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await server.execute(f'CREATE DATABASE "{database}"')
        exists = await server.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", reader)
        verb = "ALTER" if exists else "CREATE"
        # A role password cannot be a bound parameter; the token is URL-safe base64.
        await server.execute(f"{verb} ROLE \"{reader}\" LOGIN PASSWORD '{password}'")
    finally:
        await server.close()
    conn = await asyncpg.connect(dsn_for(admin_dsn, database))
    try:
        await conn.execute((HERE / "schema.sql").read_text())
        await conn.execute((HERE / "seed.sql").read_text())
        await conn.execute(f'GRANT USAGE ON SCHEMA public TO "{reader}"')
        await conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{reader}"')
    finally:
        await conn.close()
    return dsn_for(admin_dsn, database, reader, password)


async def receive_return(
    admin_dsn: str,
    database: str,
    *,
    event_id: str,
    order_id: str,
    sku: str,
    quantity: int,
    condition: str = "resellable",
) -> None:
    """The warehouse books a returned parcel: a resellable unit goes back on the shelf."""
    conn = await asyncpg.connect(dsn_for(admin_dsn, database))
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO returns (event_id, order_id, sku, quantity, condition)"
                " VALUES ($1, $2, $3, $4, $5)",
                event_id,
                order_id,
                sku,
                quantity,
                condition,
            )
            column = "on_hand" if condition == "resellable" else "damaged"
            bump = "on_hand = on_hand + $2" + (
                ", damaged = damaged + $2" if column == "damaged" else ""
            )
            await conn.execute(
                f"UPDATE stock_levels SET {bump} WHERE (sku, location) = (SELECT sku, location"
                " FROM stock_levels WHERE sku = $1 ORDER BY location LIMIT 1)",
                sku,
                quantity,
            )
    finally:
        await conn.close()


async def rename_column(admin_dsn: str, database: str, old: str, new: str) -> None:
    """Simulate the warehouse team changing its schema under the connector."""
    conn = await asyncpg.connect(dsn_for(admin_dsn, database))
    try:
        await conn.execute(f'ALTER TABLE stock_levels RENAME COLUMN "{old}" TO "{new}"')
    finally:
        await conn.close()


async def recount(admin_dsn: str, database: str, changes: dict[str, int]) -> None:
    """A stock count found ``changes`` (units per SKU) on the first shelf of each SKU."""
    conn = await asyncpg.connect(dsn_for(admin_dsn, database))
    try:
        async with conn.transaction():
            for sku, delta in changes.items():
                await conn.execute(
                    "UPDATE stock_levels SET on_hand = on_hand + $2 WHERE (sku, location) ="
                    " (SELECT sku, location FROM stock_levels WHERE sku = $1"
                    " ORDER BY location LIMIT 1)",
                    sku,
                    delta,
                )
    finally:
        await conn.close()
