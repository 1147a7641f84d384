"""The identity directory in Postgres: tenants, their principals, and group membership.

A tenant listed in ``tenants`` is *managed*: only its enabled principals may start
runs or approve steps (``stead.identity.admission``, ``stead.identity.approvals``).
Principals are ``user:``, ``agent:`` or ``service:`` ids; groups are not principals,
they are names in ``group_members`` that approval policies expand.

Every function expects a connection inside ``tenant_transaction`` for ``tenant``:
row-level security hides other tenants' rows, ``tenants`` included (migration 0007).
The one read across tenants is :func:`tenant_ids`, through the owner's
``stead_tenant_ids()``, which returns ids and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

import asyncpg

from stead.contracts.base import Closed
from stead.identity.errors import (
    DirectoryError,
    PrincipalExists,
    PrincipalUnknown,
    TenantExists,
    TenantUnknown,
)

PrincipalKind = Literal["user", "agent", "service"]

TENANT_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PRINCIPAL_ID: Final = re.compile(r"^(user|agent|service):[A-Za-z0-9._@+-]{1,128}$")
GROUP_ID: Final = re.compile(r"^group:[A-Za-z0-9._@+-]{1,128}$")

_PRINCIPAL_COLUMNS = (
    "p.tenant, p.id, p.kind, p.display_name, p.disabled, p.tokens_not_before, p.created_at,"
    " COALESCE((SELECT array_agg('group:' || g.group_name ORDER BY g.group_name)"
    " FROM group_members g WHERE g.tenant = p.tenant AND g.principal = p.id), '{}') AS groups"
)


class Tenant(Closed):
    id: str
    display_name: str
    created_at: datetime


class Principal(Closed):
    tenant: str
    id: str
    kind: PrincipalKind
    display_name: str
    disabled: bool
    tokens_not_before: datetime | None
    created_at: datetime
    groups: tuple[str, ...] = ()


def check_tenant_id(tenant: str) -> str:
    if not TENANT_ID.fullmatch(tenant):
        raise DirectoryError(
            f"{tenant!r} is not a tenant id: lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 63 characters"
        )
    return tenant


def check_principal_id(principal: str) -> str:
    if not PRINCIPAL_ID.fullmatch(principal):
        raise DirectoryError(
            f"{principal!r} is not a principal id: use user:<name>, agent:<name> or service:<name>"
        )
    return principal


def group_id(group: str) -> str:
    """``ops`` or ``group:ops`` → ``group:ops``, checked."""
    name = group if group.startswith("group:") else f"group:{group}"
    if not GROUP_ID.fullmatch(name):
        raise DirectoryError(f"{group!r} is not a group name: use group:<name>")
    return name


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(id=row["id"], display_name=row["display_name"], created_at=row["created_at"])


def _principal(row: asyncpg.Record) -> Principal:
    return Principal(
        tenant=row["tenant"],
        id=row["id"],
        kind=row["kind"],
        display_name=row["display_name"],
        disabled=row["disabled"],
        tokens_not_before=row["tokens_not_before"],
        created_at=row["created_at"],
        groups=tuple(row["groups"]),
    )


# ---------------------------------------------------------------- tenants


async def create_tenant(conn: asyncpg.Connection, tenant: str, display_name: str = "") -> Tenant:
    """Call inside ``tenant_transaction(pool, tenant)``: RLS admits only that tenant's row."""
    row = await conn.fetchrow(
        "INSERT INTO tenants (id, display_name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"
        " RETURNING id, display_name, created_at",
        check_tenant_id(tenant),
        display_name,
    )
    if row is None:
        raise TenantExists(f"tenant {tenant} already exists; see `stead tenant list`")
    return _tenant(row)


async def get_tenant(conn: asyncpg.Connection, tenant: str) -> Tenant | None:
    row = await conn.fetchrow(
        "SELECT id, display_name, created_at FROM tenants WHERE id = $1", tenant
    )
    return None if row is None else _tenant(row)


async def tenant_ids(conn: asyncpg.Connection) -> list[str]:
    """Every tenant's id, on any app-role connection: the one deliberate read across
    tenants (for jobs that visit each tenant in turn), and it yields ids only."""
    return [r[0] for r in await conn.fetch("SELECT stead_tenant_ids()")]


# ------------------------------------------------------------- principals


async def add_principal(
    conn: asyncpg.Connection, tenant: str, principal: str, display_name: str = ""
) -> Principal:
    kind = check_principal_id(principal).split(":", 1)[0]
    if await get_tenant(conn, tenant) is None:
        raise TenantUnknown(
            f"tenant {tenant} is not in the directory; create it with `stead tenant create`"
        )
    inserted = await conn.fetchval(
        "INSERT INTO principals (tenant, id, kind, display_name) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (tenant, id) DO NOTHING RETURNING 1",
        tenant,
        principal,
        kind,
        display_name,
    )
    if inserted is None:
        raise PrincipalExists(f"{principal} is already a principal of tenant {tenant}")
    return await _require(conn, tenant, principal)


async def get_principal(conn: asyncpg.Connection, tenant: str, principal: str) -> Principal | None:
    row = await conn.fetchrow(
        f"SELECT {_PRINCIPAL_COLUMNS} FROM principals p WHERE p.tenant = $1 AND p.id = $2",
        tenant,
        principal,
    )
    return None if row is None else _principal(row)


async def list_principals(conn: asyncpg.Connection, tenant: str) -> list[Principal]:
    rows = await conn.fetch(
        f"SELECT {_PRINCIPAL_COLUMNS} FROM principals p WHERE p.tenant = $1 ORDER BY p.id", tenant
    )
    return [_principal(r) for r in rows]


async def set_disabled(
    conn: asyncpg.Connection, tenant: str, principal: str, disabled: bool
) -> Principal:
    """Disable (or enable) a principal. Disabling also revokes every token issued so far.

    Tokens carry whole seconds, so the cut-off is the next whole second: a token from
    the second of the revocation is refused too (fail closed), and ``stead principal
    token`` waits for the cut-off before issuing a new one.
    """
    updated = await conn.fetchval(
        "UPDATE principals SET disabled = $3, updated_at = now(),"
        " tokens_not_before = CASE WHEN $3"
        " THEN date_trunc('second', now()) + interval '1 second'"
        " ELSE tokens_not_before END"
        " WHERE tenant = $1 AND id = $2 RETURNING 1",
        tenant,
        principal,
        disabled,
    )
    if updated is None:
        raise _unknown(tenant, principal)
    return await _require(conn, tenant, principal)


# ----------------------------------------------------------------- groups


async def join_group(
    conn: asyncpg.Connection, tenant: str, principal: str, group: str
) -> Principal:
    """Idempotent; the principal must be in the directory."""
    name = group_id(group)
    await _require(conn, tenant, principal)
    await conn.execute(
        "INSERT INTO group_members (tenant, group_name, principal) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        tenant,
        name.removeprefix("group:"),
        principal,
    )
    return await _require(conn, tenant, principal)


async def leave_group(
    conn: asyncpg.Connection, tenant: str, principal: str, group: str
) -> Principal:
    name = group_id(group)
    await conn.execute(
        "DELETE FROM group_members WHERE tenant = $1 AND group_name = $2 AND principal = $3",
        tenant,
        name.removeprefix("group:"),
        principal,
    )
    return await _require(conn, tenant, principal)


async def is_named_approver(
    conn: asyncpg.Connection, tenant: str, principal: str, approvers: Sequence[str]
) -> bool:
    """Whether policy's approvers name ``principal`` directly or through a group it is in *now*."""
    if principal in approvers:
        return True
    groups = [a.removeprefix("group:") for a in approvers if a.startswith("group:")]
    if not groups:
        return False
    found = await conn.fetchval(
        "SELECT 1 FROM group_members WHERE tenant = $1 AND principal = $2"
        " AND group_name = ANY($3::text[]) LIMIT 1",
        tenant,
        principal,
        groups,
    )
    return found is not None


async def _require(conn: asyncpg.Connection, tenant: str, principal: str) -> Principal:
    found = await get_principal(conn, tenant, principal)
    if found is None:
        raise _unknown(tenant, principal)
    return found


def _unknown(tenant: str, principal: str) -> PrincipalUnknown:
    return PrincipalUnknown(
        f"{principal} is not a principal of tenant {tenant}; add it with "
        f"`stead principal add {principal} --tenant {tenant}`"
    )
