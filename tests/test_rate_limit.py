"""Per-tenant rate limits: one token bucket per (tenant, operation) in the real Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from adapters.core import ECHO
from adapters.ratelimit import RATE_LIMITED, RateLimited, RateLimiter
from stead.db.pool import create_pool, tenant_transaction
from stead.settings import RateLimitSetting, Settings
from stead.temporal import connect
from tests.conftest import WorkerHandle, settings_for
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from workers.main import build_worker, open_resources

# 60/min in bursts of 2: two calls at once, then one a second.
LIMITED = dataclasses.replace(
    ECHO, name="test.limited", rate_limit_per_minute=60, rate_limit_burst=2
)
# 600/min, no burst: a slot every 0.1 s, so waits are short enough to sit out in a test.
FAST = dataclasses.replace(ECHO, name="test.fast", rate_limit_per_minute=600, rate_limit_burst=1)


@pytest_asyncio.fixture(scope="module")
async def pools(stack: Settings) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """Two pools stand for two workers: they share nothing but the database."""
    first = await create_pool(stack.postgres_dsn, max_size=4)
    second = await create_pool(stack.postgres_dsn, max_size=4)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _key() -> str:
    return f"wf-{uuid.uuid4().hex[:8]}/s"


async def test_a_tenant_gets_its_burst_then_waits_for_the_next_slot(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    limiter = RateLimiter(pools[0])
    tenant = new_tenant()
    await limiter.acquire(tenant, LIMITED, _key())
    await limiter.acquire(tenant, LIMITED, _key())
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire(tenant, LIMITED, _key())
    assert 0.8 < caught.value.retry_after < 1.2
    assert caught.value.details["reason"] == "rate_limited"
    assert "60/min for test.limited" in str(caught.value)


async def test_each_tenant_has_its_own_bucket(pools: tuple[asyncpg.Pool, asyncpg.Pool]) -> None:
    limiter = RateLimiter(pools[0])
    busy, quiet = new_tenant(), new_tenant()
    for _ in range(2):
        await limiter.acquire(busy, LIMITED, _key())
    with pytest.raises(RateLimited):
        await limiter.acquire(busy, LIMITED, _key())
    await limiter.acquire(quiet, LIMITED, _key())
    await limiter.acquire(quiet, LIMITED, _key())


async def test_workers_share_one_bucket(pools: tuple[asyncpg.Pool, asyncpg.Pool]) -> None:
    one, two = RateLimiter(pools[0]), RateLimiter(pools[1])
    tenant = new_tenant()
    await one.acquire(tenant, LIMITED, _key())
    await two.acquire(tenant, LIMITED, _key())
    for limiter in (one, two):
        with pytest.raises(RateLimited):
            await limiter.acquire(tenant, LIMITED, _key())


async def test_concurrent_calls_get_exactly_the_burst(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    limiters = [RateLimiter(pools[i % 2]) for i in range(6)]
    tenant = new_tenant()
    outcomes = await asyncio.gather(
        *(limiter.acquire(tenant, LIMITED, _key()) for limiter in limiters),
        return_exceptions=True,
    )
    waits = sorted(o.retry_after for o in outcomes if isinstance(o, RateLimited))
    assert outcomes.count(None) == 2 and len(waits) == 4
    # The four late callers hold consecutive slots, one second apart, in arrival order.
    assert [round(w) for w in waits] == [1, 2, 3, 4]


async def test_a_throttled_step_runs_on_its_retry_without_drawing_again(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    limiter = RateLimiter(pools[0])
    tenant = new_tenant()
    await limiter.acquire(tenant, FAST, _key())
    step = _key()
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire(tenant, FAST, step)
    early = caught.value.retry_after
    with pytest.raises(RateLimited) as again:  # an early retry keeps the same slot
        await limiter.acquire(tenant, FAST, step)
    assert again.value.retry_after <= early
    await asyncio.sleep(early)
    await limiter.acquire(tenant, FAST, step)
    async with tenant_transaction(pools[0], tenant) as conn:
        left = await conn.fetchval("SELECT count(*) FROM rate_reservations")
    assert left == 0


async def test_an_operator_override_beats_the_declared_limit(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    tenant, other = new_tenant(), new_tenant()
    limiter = RateLimiter(
        pools[0],
        {
            "test.limited": RateLimitSetting(per_minute=1),
            f"{tenant}/test.limited": RateLimitSetting(per_minute=6000, burst=10),
        },
    )
    unlimited = dataclasses.replace(ECHO, name="test.unlimited")
    assert limiter.limit_for(tenant, LIMITED) is not None
    for _ in range(10):
        await limiter.acquire(tenant, LIMITED, _key())
    await limiter.acquire(other, LIMITED, _key())
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire(other, LIMITED, _key())
    assert caught.value.retry_after > 55  # 1/min
    assert limiter.limit_for(other, unlimited) is None


# --- in a governed run ---------------------------------------------------------------

THROTTLED = new_tenant()
UNTHROTTLED = new_tenant()
FOUR_PUTS = playbook(
    *(
        {"id": f"put{i}", "operation": "records.put", "args": {"key": f"k{i}", "value": {}}}
        for i in range(4)
    )
)


@pytest_asyncio.fixture(scope="module")
async def limited_worker(stack: Settings) -> AsyncIterator[WorkerHandle]:
    """A worker whose operator limits one tenant to 120 records.put a minute, no burst."""
    settings = settings_for(
        stack.home,
        rate_limits={f"{THROTTLED}/records.put": {"per_minute": 120, "burst": 1}},
    )
    task_queue = f"test-rl-{uuid.uuid4().hex[:8]}"
    client = await connect(settings)
    async with open_resources(settings) as resources, build_worker(client, task_queue, resources):
        yield WorkerHandle(client=client, task_queue=task_queue, settings=settings)


async def _execute_attempts(handle: WorkflowHandle[Any, Any]) -> list[int]:
    """The attempt number that completed each step's execution (``step.run``) in history."""
    scheduled: dict[int, str] = {}
    attempts: list[int] = []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if scheduled.get(started.scheduled_event_id) in ("step.run", "adapter.execute"):
                attempts.append(started.attempt)
    return sorted(attempts)


async def _throttles(
    handle: WorkflowHandle[Any, Any], data_converter: DataConverter
) -> list[ApplicationError]:
    """The failures of step attempts that the rate limiter turned away, as raised.

    A retried attempt's failure is not an event of its own: Temporal records it as the
    ``last_failure`` of the attempt that finally started.
    """
    throttles: list[ApplicationError] = []
    async for event in handle.fetch_history_events():
        started = event.activity_task_started_event_attributes
        if event.HasField("activity_task_started_event_attributes") and started.HasField(
            "last_failure"
        ):
            error = await data_converter.decode_failure(started.last_failure)
            if isinstance(error, ApplicationError) and error.type == RATE_LIMITED:
                throttles.append(error)
    return throttles


async def test_a_limited_tenants_steps_wait_their_turn_and_others_do_not(
    limited_worker: WorkerHandle,
) -> None:
    for tenant in (THROTTLED, UNTHROTTLED):
        await configure_tenant(limited_worker.settings.opa_url, tenant)
    throttled, free = [
        await start_run(
            limited_worker.client,
            limited_worker.task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=FOUR_PUTS,
        )
        for tenant in (THROTTLED, UNTHROTTLED)
    ]
    slow, fast = await asyncio.gather(throttled.result(), free.result())
    assert slow.status == fast.status == "completed", (slow.reasons, fast.reasons)
    # One slot every 0.5 s: the first step runs at once, the other three wait in turn,
    # each retried exactly once (its reservation), never burning its retry budget.
    assert await _execute_attempts(throttled) == [1, 2, 2, 2]
    assert await _execute_attempts(free) == [1, 1, 1, 1]
    # Each of the three was told to wait for its own reserved slot, and Temporal was
    # asked to retry it exactly then; the other tenant was never turned away.
    throttles = await _throttles(throttled, limited_worker.client.data_converter)
    assert len(throttles) == 3
    for error in throttles:
        reason, *_ = error.details
        assert reason["reason"] == "rate_limited"
        assert reason["operation"] == "records.put"
        assert reason["per_minute"] == 120
        assert reason["retry_after_seconds"] > 0
        assert error.next_retry_delay is not None
        assert error.next_retry_delay.total_seconds() > 0
    assert await _throttles(free, limited_worker.client.data_converter) == []
