"""The effect ledger remembers every idempotency key: a retry finds the attempt that came
before it, a completed effect returns its stored result, and a key never changes meaning."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from pydantic import JsonValue

from stead.db.pool import create_pool, tenant_transaction
from stead.ledger import (
    LedgerConflict,
    LedgerEntry,
    LedgerKeyUnknown,
    begin,
    complete,
    fail,
    get,
)
from stead.settings import Settings


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def key() -> str:
    return f"wf-{uuid.uuid4().hex[:8]}/send"


async def begin_in_own_transaction(
    pool: asyncpg.Pool, tenant: str, key: str, args_hash: str = "a" * 64
) -> LedgerEntry:
    async with tenant_transaction(pool, tenant) as conn:
        return await begin(
            conn,
            tenant=tenant,
            key=key,
            workflow_id=key.split("/")[0],
            step_id="send",
            operation="email.send",
            args_hash=args_hash,
            decision_id="d-1",
        )


async def test_begin_twice_returns_the_same_row_and_counts_attempts(
    pool: asyncpg.Pool, tenant: str, key: str
) -> None:
    first = await begin_in_own_transaction(pool, tenant, key)
    # The worker "dies" here: the intent is committed, the effect outcome unknown.
    second = await begin_in_own_transaction(pool, tenant, key)

    assert first.status == second.status == "in_flight"
    assert (first.attempts, second.attempts) == (1, 2)
    assert second.created_at == first.created_at
    assert second.decision_id == "d-1"


async def test_begin_after_complete_returns_the_stored_result(
    pool: asyncpg.Pool, tenant: str, key: str
) -> None:
    await begin_in_own_transaction(pool, tenant, key)
    result: JsonValue = {"message_id": "m-42", "recipients": ["a@example.com"], "ok": True}
    async with tenant_transaction(pool, tenant) as conn:
        await complete(conn, tenant=tenant, key=key, result=result)

    again = await begin_in_own_transaction(pool, tenant, key)

    assert again.status == "completed"
    assert again.result == result
    assert again.attempts == 1
    assert again.completed_at is not None


async def test_same_key_with_different_arguments_is_a_conflict(
    pool: asyncpg.Pool, tenant: str, key: str
) -> None:
    await begin_in_own_transaction(pool, tenant, key, args_hash="a" * 64)

    with pytest.raises(LedgerConflict, match="args_hash"):
        await begin_in_own_transaction(pool, tenant, key, args_hash="b" * 64)

    async with tenant_transaction(pool, tenant) as conn:
        entry = await get(conn, key)
    assert entry is not None
    assert (entry.args_hash, entry.attempts) == ("a" * 64, 1)


async def test_begin_after_fail_returns_the_stored_error(
    pool: asyncpg.Pool, tenant: str, key: str
) -> None:
    await begin_in_own_transaction(pool, tenant, key)
    async with tenant_transaction(pool, tenant) as conn:
        await fail(conn, tenant=tenant, key=key, error="mailbox does not exist")

    again = await begin_in_own_transaction(pool, tenant, key)

    assert again.status == "failed"
    assert again.error == "mailbox does not exist"


async def test_complete_is_idempotent_and_keeps_the_first_result(
    pool: asyncpg.Pool, tenant: str, key: str
) -> None:
    await begin_in_own_transaction(pool, tenant, key)
    async with tenant_transaction(pool, tenant) as conn:
        await complete(conn, tenant=tenant, key=key, result={"n": 1})
    async with tenant_transaction(pool, tenant) as conn:
        await complete(conn, tenant=tenant, key=key, result={"n": 2})
        entry = await get(conn, key)

    assert entry is not None and entry.result == {"n": 1}


async def test_a_finished_entry_cannot_change_its_outcome(
    pool: asyncpg.Pool, tenant: str, key: str
) -> None:
    await begin_in_own_transaction(pool, tenant, key)
    async with tenant_transaction(pool, tenant) as conn:
        await complete(conn, tenant=tenant, key=key, result=None)

    with pytest.raises(LedgerConflict, match="already completed"):
        async with tenant_transaction(pool, tenant) as conn:
            await fail(conn, tenant=tenant, key=key, error="late failure")


async def test_complete_without_begin_is_refused(pool: asyncpg.Pool, tenant: str, key: str) -> None:
    with pytest.raises(LedgerKeyUnknown, match="call begin"):
        async with tenant_transaction(pool, tenant) as conn:
            await complete(conn, tenant=tenant, key=key, result={"n": 1})


async def test_racing_begins_on_one_key_are_serialized(
    pool: asyncpg.Pool, tenant: str, key: str
) -> None:
    entries = await asyncio.gather(*(begin_in_own_transaction(pool, tenant, key) for _ in range(5)))

    assert sorted(e.attempts for e in entries) == [1, 2, 3, 4, 5]
    assert {e.status for e in entries} == {"in_flight"}
