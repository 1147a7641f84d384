"""``tenant_transaction`` and ``commit_without_waiting_for_disk``: the asynchronous commit
rides on the COMMIT message, applies to that one transaction only, and a rolled-back
transaction leaves nothing behind for the next one on the same connection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from stead.db.pool import commit_without_waiting_for_disk, create_pool, tenant_transaction
from stead.runs import get_run, record_run_started
from stead.settings import Settings


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    # One connection, so every transaction below reuses the same session.
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=1)
    yield pool
    await pool.close()


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def test_a_lazy_commit_commits_and_does_not_outlive_its_transaction(
    pool: asyncpg.Pool,
) -> None:
    t = tenant()
    async with tenant_transaction(pool, t) as conn:
        await record_run_started(
            conn,
            tenant=t,
            workflow_id=f"wf-{t}",
            principal="user:ann",
            goal="g",
            playbook=None,
            labels={},
        )
        await commit_without_waiting_for_disk(conn)
    async with tenant_transaction(pool, t) as conn:
        assert await get_run(conn, f"wf-{t}") is not None
        assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "on"


async def test_a_rolled_back_lazy_transaction_leaves_the_next_one_durable(
    pool: asyncpg.Pool,
) -> None:
    t = tenant()
    with pytest.raises(RuntimeError):
        async with tenant_transaction(pool, t) as conn:
            await commit_without_waiting_for_disk(conn)
            raise RuntimeError("refused")
    async with tenant_transaction(pool, t) as conn:
        await record_run_started(
            conn,
            tenant=t,
            workflow_id=f"wf-{t}",
            principal="user:ann",
            goal="g",
            playbook=None,
            labels={},
        )
    async with tenant_transaction(pool, t) as conn:
        assert await get_run(conn, f"wf-{t}") is not None
        assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "on"


async def test_outside_tenant_transaction_the_setting_is_made_at_once(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await commit_without_waiting_for_disk(conn)
        assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "off"
