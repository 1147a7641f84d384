"""Tenant budgets on the real stack: month-to-date spend from Postgres reaches OPA.

Earlier spend is seeded the way runs record it, through the app role inside the
tenant's transaction; the run under test then asks the real OPA with the shipped
policy. A tenant's cap here is $1 a month with the soft line at half of it.
"""

from __future__ import annotations

import asyncpg
import pytest

from stead.contracts.run import ApprovalInput
from stead.db.pool import create_pool, tenant_transaction
from stead.runs.store import list_decisions, record_run_started, record_run_status
from tests.conftest import WorkerHandle
from tests.runs import configure_tenant, new_tenant, playbook, start_run, wait_pending

ECHO = playbook({"id": "echo", "operation": "core.echo", "args": {"value": 1}})
BUDGET = {"monthly_usd": 1.0, "monthly_tokens": 100_000, "soft_fraction": 0.5}


@pytest.fixture(scope="module")
async def pool(worker: WorkerHandle) -> asyncpg.Pool:
    pool = await create_pool(worker.settings.postgres_dsn, max_size=4)
    yield pool
    await pool.close()


async def spent_earlier(
    pool: asyncpg.Pool, tenant: str, usd: float, tokens: int = 0, *, last_month: bool = False
) -> None:
    """A finished earlier run of ``tenant`` that cost ``usd`` and ``tokens``."""
    workflow_id = f"earlier-{new_tenant()}"
    async with tenant_transaction(pool, tenant) as conn:
        await record_run_started(
            conn,
            tenant=tenant,
            workflow_id=workflow_id,
            principal="user:ann",
            goal="earlier work",
            playbook=None,
            labels={},
        )
        await record_run_status(
            conn,
            tenant=tenant,
            workflow_id=workflow_id,
            status="completed",
            tokens=tokens,
            cost_usd=usd,
            finished=True,
        )
        if last_month:
            await conn.execute(
                "UPDATE runs SET started_at = date_trunc('month', now()) - interval '1 day'"
                " WHERE workflow_id = $1",
                workflow_id,
            )


async def test_spend_under_the_soft_line_runs_without_approval(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant, neighbour = new_tenant(), new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, budget=BUDGET)
    await spent_earlier(pool, tenant, 0.3, 1_000)
    # Neither last month's spend nor another tenant's counts against this month's cap.
    await spent_earlier(pool, tenant, 50.0, 10_000_000, last_month=True)
    await spent_earlier(pool, neighbour, 50.0, 10_000_000)
    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal="user:ann", playbook_source=ECHO
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert status.steps[0].decision is not None
    assert status.steps[0].decision.reasons == ("allowed by policy",)


async def test_spend_past_the_soft_line_waits_for_approval_then_runs(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, budget=BUDGET, approvers=["user:bob"])
    await spent_earlier(pool, tenant, 0.35)
    await spent_earlier(pool, tenant, 0.25)
    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal="user:ann", playbook_source=ECHO
    )
    pending = await wait_pending(handle, "echo")
    assert pending.reasons == (
        f"monthly cost budget of tenant {tenant} nearly spent: $0.6 spent this month"
        " is at or above 50% of the $1 cap",
    )
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id="echo", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
        ),
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert status.steps[0].output == {"value": 1}


async def test_spend_past_the_cap_is_denied_naming_the_budget(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, budget=BUDGET, approvers=["user:bob"])
    await spent_earlier(pool, tenant, 0.7, 60_000)
    await spent_earlier(pool, tenant, 0.5, 50_000)
    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal="user:ann", playbook_source=ECHO
    )
    status = await handle.result()
    assert status.status == "denied"
    assert status.steps[0].status == "denied"
    assert status.steps[0].output is None
    assert status.reasons == (
        f"step echo: monthly cost budget of tenant {tenant} exhausted: $1.2 spent this month,"
        " past the cap of $1; "
        f"monthly token budget of tenant {tenant} exhausted: 110000 tokens spent this month,"
        " past the cap of 100000 tokens",
    )
    async with tenant_transaction(pool, tenant) as conn:
        decisions = await list_decisions(conn, tenant, handle.id)
        effects = await conn.fetchval(
            "SELECT count(*) FROM effects WHERE workflow_id = $1", handle.id
        )
    outcomes = [(d.kind, d.decision.outcome) for d in decisions]
    assert outcomes == [("plan", "allow"), ("step", "deny")]
    assert effects == 0
