"""Database bootstrap: roles, then ``infra/postgres/migrations/*.sql`` in order, exactly once.

Tables are owned by ``stead_owner``; the app connects as a separate login role that
is neither owner nor BYPASSRLS, so row-level security (added by later migrations)
binds it. Each migration runs in its own transaction under an advisory lock, so two
workers starting at once cannot apply the same file twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

from stead.errors import MigrationError

OWNER_ROLE = "stead_owner"
MIGRATIONS_LOCK = 0x57EAD  # arbitrary, stable advisory-lock key for this schema
DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "infra" / "postgres" / "migrations"


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path) -> list[Migration]:
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    return [Migration(version=p.stem, path=p) for p in sorted(directory.glob("*.sql"))]


def app_role_from_dsn(app_dsn: str) -> tuple[str, str | None]:
    parts = urlsplit(app_dsn)
    if not parts.username:
        raise MigrationError("STEAD_POSTGRES_DSN names no user; the app role must be explicit")
    password = unquote(parts.password) if parts.password else None
    return unquote(parts.username), password


async def ensure_roles(conn: asyncpg.Connection, app_role: str, app_password: str | None) -> None:
    """Create the owner and app roles if missing; the app role never owns or bypasses RLS."""
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", OWNER_ROLE):
        await conn.execute(f'CREATE ROLE "{OWNER_ROLE}" NOLOGIN')
    ident = _quote_ident(app_role)
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", app_role):
        await conn.execute(
            f"CREATE ROLE {ident} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
        )
    await conn.execute(f"ALTER ROLE {ident} NOSUPERUSER NOBYPASSRLS")
    if app_password is not None:
        await conn.execute(f"ALTER ROLE {ident} PASSWORD {_quote_literal(app_password)}")


async def migrate(
    admin_dsn: str, app_dsn: str, directory: Path = DEFAULT_MIGRATIONS_DIR
) -> list[str]:
    """Apply pending migrations; returns the versions applied now (empty when up to date)."""
    migrations = discover(directory)
    app_role, app_password = app_role_from_dsn(app_dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK)
        await ensure_roles(conn, app_role, app_password)
        await _grant_baseline(conn, app_role)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {
            row["version"]: row["checksum"]
            for row in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.path.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(f'SET LOCAL ROLE "{OWNER_ROLE}"')
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
                await conn.execute("RESET ROLE")
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK)
        await conn.close()


async def _grant_baseline(conn: asyncpg.Connection, app_role: str) -> None:
    """The owner may create in public; the app role may only use what the owner grants it."""
    ident = _quote_ident(app_role)
    await conn.execute(f'GRANT "{OWNER_ROLE}" TO CURRENT_USER')
    await conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{OWNER_ROLE}"')
    await conn.execute(f"GRANT USAGE ON SCHEMA public TO {ident}")
    await conn.execute(f"REVOKE CREATE ON SCHEMA public FROM {ident}")
    await conn.execute(
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{OWNER_ROLE}" IN SCHEMA public '
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ident}"
    )
    await conn.execute(
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{OWNER_ROLE}" IN SCHEMA public '
        f"GRANT USAGE, SELECT ON SEQUENCES TO {ident}"
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
