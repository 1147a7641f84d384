"""Whether a tenant exists, asked by ``stead run`` before it starts anything.

A tenant exists when OPA has policy data for it (``data.stead.tenants.<id>``, what
``stead tenant``/operators push and every decision reads) or the directory has a row
for it (``stead tenant create``). Either is enough: a tenant configured only in
policy runs with claimed starters, one only in the directory is refused by policy
later with a reason of its own. Only when both answer "no" is the run refused.
When neither can be asked (OPA and Postgres unreachable from here) the CLI cannot
know, so it does not guess: the run starts and the worker, which fails closed, decides.
"""

from __future__ import annotations

import asyncpg

from stead.db.pool import create_pool, tenant_transaction
from stead.errors import ConfigError
from stead.identity.directory import get_tenant
from stead.policy.opa import OpaClient, PolicyUnavailable, PolicyUndefined
from stead.settings import Settings


async def tenant_exists(settings: Settings, tenant: str) -> bool | None:
    """True or False when one source could answer; None when none could."""
    in_policy = await _in_policy(settings, tenant)
    if in_policy:
        return True
    in_directory = await _in_directory(settings, tenant)
    if in_directory:
        return True
    if in_policy is None and in_directory is None:
        return None
    return False


async def _in_policy(settings: Settings, tenant: str) -> bool | None:
    async with OpaClient(settings.opa_url, token=settings.opa_token) as opa:
        try:
            data = await opa.evaluate(f"stead/tenants/{tenant}", {})
        except PolicyUndefined:
            return False
        except PolicyUnavailable:
            return None
    return data is not None


async def _in_directory(settings: Settings, tenant: str) -> bool | None:
    try:
        pool = await create_pool(settings.postgres_dsn, min_size=1, max_size=1)
    except ConfigError:
        return None
    try:
        async with tenant_transaction(pool, tenant) as conn:
            return await get_tenant(conn, tenant) is not None
    except (OSError, asyncpg.PostgresError):
        return None
    finally:
        await pool.close()
