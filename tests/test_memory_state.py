"""Structured state: compare-and-set gives exactly one winner among concurrent writers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from stead.db.pool import create_pool
from stead.memory import StateConflict, StateValue
from stead.memory.state import StateStore
from stead.settings import Settings
from tests.test_memory_support import new_tenant

WRITERS = 8


@pytest_asyncio.fixture(scope="module")
async def state(stack: Settings) -> AsyncIterator[StateStore]:
    pool: asyncpg.Pool = await create_pool(stack.postgres_dsn, min_size=WRITERS, max_size=WRITERS)
    try:
        yield StateStore(pool)
    finally:
        await pool.close()


async def race(state: StateStore, tenant: str, expected: int) -> list[StateValue | StateConflict]:
    async def write(n: int) -> StateValue | StateConflict:
        try:
            return await state.compare_and_set(
                tenant,
                "orders",
                "o-1",
                {"status": f"writer-{n}"},
                expected_version=expected,
                principal=f"agent:w{n}",
            )
        except StateConflict as conflict:
            return conflict

    return await asyncio.gather(*(write(n) for n in range(WRITERS)))


async def test_concurrent_creates_have_exactly_one_winner(state: StateStore) -> None:
    tenant = new_tenant()

    outcomes = await race(state, tenant, expected=0)

    winners = [o for o in outcomes if isinstance(o, StateValue)]
    losers = [o for o in outcomes if isinstance(o, StateConflict)]
    assert len(winners) == 1 and len(losers) == WRITERS - 1
    assert {loser.current_version for loser in losers} == {1}
    stored = await state.get(tenant, "orders", "o-1")
    assert stored == winners[0]


async def test_concurrent_updates_of_one_version_have_exactly_one_winner(state: StateStore) -> None:
    tenant = new_tenant()
    await state.compare_and_set(
        tenant, "orders", "o-1", {"status": "new"}, expected_version=0, principal="user:a"
    )

    outcomes = await race(state, tenant, expected=1)

    winners = [o for o in outcomes if isinstance(o, StateValue)]
    assert len(winners) == 1 and winners[0].version == 2
    assert all(o.current_version == 2 for o in outcomes if isinstance(o, StateConflict))
    stored = await state.get(tenant, "orders", "o-1")
    assert stored is not None and stored.value == winners[0].value


async def test_a_conflict_names_the_version_to_retry_with(state: StateStore) -> None:
    tenant = new_tenant()
    await state.compare_and_set(
        tenant, "orders", "o-1", {"s": 1}, expected_version=0, principal="user:a"
    )
    await state.compare_and_set(
        tenant, "orders", "o-1", {"s": 2}, expected_version=1, principal="user:a"
    )

    with pytest.raises(
        StateConflict, match="at version 2, not 1; re-read it and retry with expected_version=2"
    ):
        await state.compare_and_set(
            tenant, "orders", "o-1", {"s": 3}, expected_version=1, principal="user:b"
        )
    retried = await state.compare_and_set(
        tenant, "orders", "o-1", {"s": 3}, expected_version=2, principal="user:b"
    )
    assert (retried.version, retried.value, retried.updated_by) == (3, {"s": 3}, "user:b")


async def test_state_is_invisible_to_other_tenants(state: StateStore) -> None:
    owner, other = new_tenant(), new_tenant()
    await state.compare_and_set(
        owner, "orders", "o-1", {"s": 1}, expected_version=0, principal="user:a"
    )

    assert await state.get(other, "orders", "o-1") is None
    # The other tenant's "create" lands in its own namespace, not on the owner's row.
    mine = await state.compare_and_set(
        other, "orders", "o-1", {"s": 9}, expected_version=0, principal="user:e"
    )
    assert mine.version == 1
    owned = await state.get(owner, "orders", "o-1")
    assert owned is not None and owned.value == {"s": 1}
