"""Connections for the app role, always inside a tenant.

Row-level security policies compare rows to ``current_setting('app.tenant_id')``.
The setting is made per transaction (``set_config(..., true)``), so a pooled
connection never carries one tenant's identity into another tenant's work, and a
query outside ``tenant_transaction`` sees no tenant rows at all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from stead.errors import ConfigError

# stead.contracts.run.TenantId; repeated here so the quoting in tenant_transaction is
# safe on its own, whoever calls it.
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
# Open tenant transactions (by connection) and whether each commits without waiting for
# its WAL flush (``commit_without_waiting_for_disk``).
_LAZY_COMMIT: dict[int, bool] = {}
# What to do once each open tenant transaction has committed (``after_commit``).
_AFTER_COMMIT: dict[int, dict[str, Callable[[], None]]] = {}
log = logging.getLogger(__name__)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool for the app role whose connections go back without a reset round trip.

    asyncpg's default reset (unlock advisory locks, close cursors, unlisten, RESET ALL)
    is one more round trip on every release, i.e. per transaction. Nothing in Stead
    leaves session state on these connections: the tenant and ``synchronous_commit``
    are set per transaction (``true``/``SET LOCAL``), advisory locks are
    transaction-scoped, cursors live inside transactions. asyncpg still rolls back a
    transaction left open before the connection is reused.
    """
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError) as exc:
        host = dsn.rsplit("@", 1)[-1]
        raise ConfigError(
            f"cannot connect to Postgres at {host}: {exc}. Is `stead dev up` running, "
            "or is STEAD_POSTGRES_DSN right?"
        ) from exc
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release: see ``create_pool``."""


@asynccontextmanager
async def tenant_transaction(pool: asyncpg.Pool, tenant: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction in which RLS lets the app role see only ``tenant``'s rows.

    BEGIN and the tenant setting go to Postgres as one simple-protocol message, one
    round trip instead of two; every step runs a few of these transactions. So the
    tenant is sent as a quoted literal, which is why it is checked against the
    tenant id grammar first. Callers must not open ``conn.transaction()`` inside
    (asyncpg refuses it in a transaction it did not start; nothing here needs one).
    """
    if not tenant:
        raise ValueError("a tenant is required for tenant-scoped database access")
    if not _TENANT.match(tenant):
        raise ValueError(f"not a tenant id: {tenant!r} (lowercase letters, digits, _ and -)")
    async with pool.acquire() as conn:
        await conn.execute(f"BEGIN; SELECT set_config('app.tenant_id', '{tenant}', true)")
        key = id(conn)
        _LAZY_COMMIT[key] = False
        _AFTER_COMMIT[key] = {}
        try:
            yield conn
        except BaseException:
            _LAZY_COMMIT.pop(key, None)
            _AFTER_COMMIT.pop(key, None)
            await _roll_back(conn)
            raise
        lazy = _LAZY_COMMIT.pop(key, False)
        actions = _AFTER_COMMIT.pop(key, {})
        await conn.execute("SET LOCAL synchronous_commit TO off; COMMIT" if lazy else "COMMIT")
        _run_after_commit(actions)


def after_commit(conn: asyncpg.Connection, name: str, action: Callable[[], None]) -> bool:
    """Run ``action`` once the current ``tenant_transaction`` has committed.

    For records kept outside Postgres that must never claim more than Postgres holds
    (the audit chain's anchor): a rolled-back transaction drops its actions. A later
    action under the same ``name`` replaces the earlier one, so several audit appends
    in one transaction write one anchor. Returns False, and keeps nothing, when
    ``conn`` is not in a ``tenant_transaction``.
    """
    actions = _AFTER_COMMIT.get(id(conn))
    if actions is None:
        return False
    actions[name] = action
    return True


def _run_after_commit(actions: dict[str, Callable[[], None]]) -> None:
    """The transaction has committed: an action that fails is logged, never raised,
    because the caller's work is done and must not be retried for it."""
    for name, action in actions.items():
        try:
            action()
        except Exception:
            log.warning("after-commit action %s failed", name, exc_info=True)


async def _roll_back(conn: asyncpg.Connection) -> None:
    """Roll back; a connection that cannot (closed, or cancelled mid-query) is terminated,
    which ends its transaction too and makes the pool replace it."""
    if conn.is_closed():
        return
    try:
        await conn.execute("ROLLBACK")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        conn.terminate()


async def commit_without_waiting_for_disk(conn: asyncpg.Connection) -> None:
    """Let the current transaction commit without waiting for its WAL flush.

    Only for writes whose loss in a Postgres crash is harmless *because a durable
    commit follows* on the same path (WAL is flushed in order, so that later commit
    makes this one durable too), or because nothing outside Postgres depends on them
    yet: e.g. the intent of a read with native idempotency, which needs no durable
    intent before it runs. Never for the intent of an effect: that must be on disk
    before the adapter acts (stead/ledger/effects.py). Saves one fsync per use.

    Inside ``tenant_transaction`` the setting goes to Postgres with the COMMIT, in the
    same message (it is read at commit time), so it costs no round trip of its own.
    """
    key = id(conn)
    if key in _LAZY_COMMIT:
        _LAZY_COMMIT[key] = True
        return
    await conn.execute("SET LOCAL synchronous_commit TO off")
