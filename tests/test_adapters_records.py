"""``records.put`` / ``records.get`` on the real Postgres of the test stack, as the app role."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from adapters.records import PutResult
from adapters.registry import AdapterResources, default_catalog
from stead.db.pool import create_pool, tenant_transaction
from stead.operations.base import AdapterError, OperationContext
from stead.settings import Settings

CATALOG = default_catalog()
PUT = CATALOG.get("records.put")
GET = CATALOG.get("records.get")


@pytest_asyncio.fixture(scope="module")
async def resources(stack: Settings) -> AsyncIterator[AdapterResources]:
    pool = await create_pool(stack.postgres_dsn, max_size=8)
    try:
        yield AdapterResources(pool=pool)
    finally:
        await pool.close()


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _ctx(resources: AdapterResources, tenant: str, workflow: str = "", step: str = "s1") -> Any:
    wf = workflow or f"wf-{uuid.uuid4().hex[:8]}"
    return OperationContext(
        tenant=tenant,
        principal="user:ada",
        workflow_id=wf,
        step_id=step,
        idempotency_key=f"{wf}/{step}",
        resources=resources,
    )


async def _put(ctx: OperationContext, key: str, value: dict[str, Any]) -> Any:
    return await PUT.run(ctx, CATALOG.parse_args("records.put", {"key": key, "value": value}))


async def _get(ctx: OperationContext, key: str) -> Any:
    return await GET.run(ctx, CATALOG.parse_args("records.get", {"key": key}))


async def _writes(pool: asyncpg.Pool, tenant: str, key: str) -> list[str]:
    async with tenant_transaction(pool, tenant) as conn:
        rows = await conn.fetch(
            "SELECT idempotency_key FROM records_writes WHERE key = $1 ORDER BY id", key
        )
    return [row["idempotency_key"] for row in rows]


async def test_put_then_get_round_trips(resources: AdapterResources) -> None:
    tenant = _tenant()
    value = {"name": "Ada", "tags": ["a", "b"], "n": 1.5, "nested": {"ok": True, "none": None}}
    put = await _put(_ctx(resources, tenant), "customer/1", value)
    assert put == PutResult(key="customer/1", version=1, created=True)
    got = await _get(_ctx(resources, tenant), "customer/1")
    assert (got.key, got.value, got.version) == ("customer/1", value, 1)


async def test_same_idempotency_key_writes_once(resources: AdapterResources) -> None:
    tenant = _tenant()
    ctx = _ctx(resources, tenant)
    first = await _put(ctx, "k", {"v": 1})
    again = await _put(ctx, "k", {"v": 1})
    assert (first.version, first.created) == (1, True)
    assert (again.version, again.created) == (1, False)
    assert await _writes(resources.pool, tenant, "k") == [ctx.idempotency_key]
    assert (await _get(_ctx(resources, tenant), "k")).version == 1


async def test_a_new_idempotency_key_bumps_the_version(resources: AdapterResources) -> None:
    tenant = _tenant()
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    await _put(_ctx(resources, tenant, wf, "s1"), "k", {"v": 1})
    second = await _put(_ctx(resources, tenant, wf, "s2"), "k", {"v": 2})
    assert (second.version, second.created) == (2, True)
    got = await _get(_ctx(resources, tenant), "k")
    assert (got.value, got.version) == ({"v": 2}, 2)
    assert await _writes(resources.pool, tenant, "k") == [f"{wf}/s1", f"{wf}/s2"]


async def test_an_old_key_replays_after_later_writes(resources: AdapterResources) -> None:
    tenant = _tenant()
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    await _put(_ctx(resources, tenant, wf, "s1"), "k", {"v": 1})
    await _put(_ctx(resources, tenant, wf, "s2"), "k", {"v": 2})
    replay = await _put(_ctx(resources, tenant, wf, "s1"), "k", {"v": 1})
    assert (replay.version, replay.created) == (1, False)
    assert (await _get(_ctx(resources, tenant), "k")).value == {"v": 2}


async def test_concurrent_attempts_with_one_key_write_once(resources: AdapterResources) -> None:
    tenant = _tenant()
    ctx = _ctx(resources, tenant)
    results = await asyncio.gather(*(_put(ctx, "k", {"v": 1}) for _ in range(6)))
    assert sorted(r.created for r in results) == [False] * 5 + [True]
    assert {r.version for r in results} == {1}
    assert await _writes(resources.pool, tenant, "k") == [ctx.idempotency_key]


async def test_reusing_a_key_with_other_arguments_is_refused(resources: AdapterResources) -> None:
    tenant = _tenant()
    ctx = _ctx(resources, tenant)
    await _put(ctx, "k", {"v": 1})
    with pytest.raises(AdapterError) as caught:
        await _put(ctx, "k", {"v": 2})
    assert caught.value.retryable is False
    assert "different arguments" in caught.value.message
    assert (await _get(_ctx(resources, tenant), "k")).value == {"v": 1}


async def test_reconcile_finds_a_completed_write(resources: AdapterResources) -> None:
    assert PUT.reconcile is not None
    tenant = _tenant()
    ctx = _ctx(resources, tenant)
    args = CATALOG.parse_args("records.put", {"key": "k", "value": {"v": 1}})
    assert await PUT.reconcile(ctx, args) is None
    await PUT.run(ctx, args)
    found = await PUT.reconcile(ctx, args)
    assert found == PutResult(key="k", version=1, created=False)
    assert await _writes(resources.pool, tenant, "k") == [ctx.idempotency_key]


async def test_another_tenant_cannot_read_or_overwrite(resources: AdapterResources) -> None:
    alice, bob = _tenant(), _tenant()
    await _put(_ctx(resources, alice), "shared-name", {"owner": "alice"})
    with pytest.raises(AdapterError) as caught:
        await _get(_ctx(resources, bob), "shared-name")
    assert caught.value.retryable is False
    bobs = await _put(_ctx(resources, bob), "shared-name", {"owner": "bob"})
    assert (bobs.version, bobs.created) == (1, True)
    assert (await _get(_ctx(resources, alice), "shared-name")).value == {"owner": "alice"}


async def test_another_tenant_cannot_reconcile_a_foreign_write(resources: AdapterResources) -> None:
    assert PUT.reconcile is not None
    alice, bob = _tenant(), _tenant()
    ctx = _ctx(resources, alice)
    args = CATALOG.parse_args("records.put", {"key": "k", "value": {"v": 1}})
    await PUT.run(ctx, args)
    foreign = OperationContext(
        tenant=bob,
        principal="user:bob",
        workflow_id=ctx.workflow_id,
        step_id=ctx.step_id,
        idempotency_key=ctx.idempotency_key,
        resources=resources,
    )
    assert await PUT.reconcile(foreign, args) is None


async def test_get_of_a_missing_key_is_not_retryable(resources: AdapterResources) -> None:
    tenant = _tenant()
    with pytest.raises(AdapterError) as caught:
        await _get(_ctx(resources, tenant), "nope")
    assert caught.value.retryable is False
    assert f"record nope not found for tenant {tenant}" in caught.value.message


async def test_the_write_log_is_append_only(resources: AdapterResources) -> None:
    tenant = _tenant()
    await _put(_ctx(resources, tenant), "k", {"v": 1})
    assert resources.pool is not None
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(resources.pool, tenant) as conn:
            await conn.execute("DELETE FROM records_writes WHERE key = 'k'")
    assert len(await _writes(resources.pool, tenant, "k")) == 1


async def test_without_a_tenant_setting_no_rows_are_visible(
    resources: AdapterResources, stack: Settings
) -> None:
    tenant = _tenant()
    await _put(_ctx(resources, tenant), "k", {"v": 1})
    conn = await asyncpg.connect(stack.postgres_dsn)
    try:
        count = await conn.fetchval("SELECT count(*) FROM records WHERE tenant = $1", tenant)
    finally:
        await conn.close()
    assert count == 0


async def test_a_worker_without_a_pool_gets_a_clear_error() -> None:
    ctx = _ctx(AdapterResources(), _tenant())
    with pytest.raises(AdapterError) as caught:
        await _get(ctx, "k")
    assert caught.value.retryable is False
    assert "no Postgres pool" in caught.value.message


@pytest.mark.parametrize(
    "args",
    [
        {"key": "", "value": {}},
        {"key": "x" * 201, "value": {}},
        {"key": "k", "value": [1]},
        {"key": "k"},
    ],
)
def test_bad_put_arguments_are_refused(args: dict[str, Any]) -> None:
    from stead.operations.catalog import InvalidArguments

    with pytest.raises(InvalidArguments):
        CATALOG.parse_args("records.put", args)


def test_specs_match_what_policy_expects() -> None:
    put, get = PUT.spec(), GET.spec()
    assert (put.side_effect, put.risk, put.idempotency, put.scopes) == (
        "write",
        "low",
        "reconcile",
        ("records:write",),
    )
    assert (get.side_effect, get.risk, get.idempotency, get.scopes) == (
        "read",
        "low",
        "native",
        ("records:read",),
    )


async def test_resources_close_only_what_they_opened(stack: Settings) -> None:
    shared = await create_pool(stack.postgres_dsn)
    try:
        borrowed = await AdapterResources.open(stack, pool=shared)
        await borrowed.aclose()
        assert borrowed.http is not None and borrowed.http.is_closed
        assert await shared.fetchval("SELECT 1") == 1
    finally:
        await shared.close()
    async with await AdapterResources.open(stack) as own:
        assert own.pool is not None and own.http is not None
        ctx = _ctx(own, _tenant())
        assert (await _put(ctx, "k", {"v": 1})).created is True
    assert own.pool.is_closing() and own.http.is_closed
