"""Fault tests with real processes: kill the worker mid-run, stop OPA, and check effects
happen exactly once and nothing runs without a decision."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid

import asyncpg
import pytest
from temporalio.client import WorkflowUpdateFailedError

from stead.contracts.approval_token import ApprovalScope
from stead.contracts.run import ApprovalInput
from stead.db.pool import create_pool, tenant_transaction
from stead.devstack import opa as opa_stack
from stead.devstack.ports import free_port
from stead.devstack.proc import stop as stop_process
from stead.identity import directory
from stead.identity.tokens import PrincipalTokenIssuer, scope_to_approval
from stead.keys import IDENTITY, key_store
from stead.settings import Settings
from stead.temporal import connect
from tests.opa_auth import stack_tokens
from tests.peers import FakeLlm, IdempotentApi, serve
from tests.runs import configure_tenant, new_tenant, playbook, start_run, wait_pending
from tests.workers import (
    run_whose_worker_dies_after_the_effect,
    start_worker,
    stop_worker,
    worker_process,
)


@pytest.fixture(scope="module")
async def pool(stack: Settings) -> asyncpg.Pool:
    pool = await create_pool(stack.postgres_dsn, max_size=2)
    yield pool
    await pool.close()


async def test_worker_killed_after_effect_executes_once(
    stack: Settings, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, egress=["127.0.0.1"])
    api = IdempotentApi()
    client = await connect(stack)
    with serve(api) as url:
        handle, status = await run_whose_worker_dies_after_the_effect(
            stack,
            client,
            api,
            tenant=tenant,
            steps=[
                {
                    "id": "charge",
                    "operation": "http.request",
                    "args": {
                        "method": "POST",
                        "url": f"{url}/charges",
                        "json": {"amount": 5},
                        "timeout_seconds": 2,
                    },
                    "timeout_seconds": 3,
                }
            ],
        )
    assert status.status == "completed", status.reasons
    assert len(api.effects) == 1
    assert api.requests >= 2
    assert api.effects[0]["key"] == f"{handle.id}/charge"
    async with tenant_transaction(pool, tenant) as conn:
        attempts = await conn.fetchval(
            "SELECT attempts FROM effects WHERE idempotency_key = $1", f"{handle.id}/charge"
        )
    assert attempts >= 2


async def test_worker_killed_between_steps_does_not_replan(stack: Settings) -> None:
    tenant = new_tenant()
    await configure_tenant(
        stack.opa_url, tenant, approval_risk="medium", approvers=["user:bob"], egress=["127.0.0.1"]
    )
    task_queue = f"fault-{uuid.uuid4().hex[:8]}"
    llm, api = FakeLlm(), IdempotentApi()
    client = await connect(stack)
    with serve(llm) as llm_url, serve(api) as api_url:
        llm.reply_plan(
            {
                "rationale": "echo then notify",
                "steps": [
                    {"id": "note", "operation": "core.echo", "args": {"value": "hi"}},
                    {
                        "id": "notify",
                        "operation": "http.request",
                        "args": {"method": "POST", "url": f"{api_url}/notify", "json": {"m": 1}},
                        "depends_on": ["note"],
                    },
                ],
            }
        )
        planner = {
            "STEAD_PLANNER_MODEL": "openai/fake-planner",
            "STEAD_PLANNER_API_BASE": f"{llm_url}/v1",
            "STEAD_PLANNER_API_KEY": "test-key",
        }
        first = start_worker(stack, task_queue, env=planner)
        handle = await start_run(
            client, task_queue, tenant=tenant, principal="user:ann", goal="notify the team"
        )
        pending = await wait_pending(handle, "notify")
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 30)
        stop_worker(first)
        with worker_process(stack, task_queue, env=planner):
            await handle.execute_update(
                "approve",
                ApprovalInput(
                    step_id="notify",
                    plan_hash=pending.plan_hash,
                    approver="user:bob",
                    verdict="approve",
                ),
            )
            status = await handle.result()
    assert status.status == "completed", status.reasons
    assert len(llm.bodies) == 1
    assert len(api.effects) == 1


async def test_opa_stopped_blocks_the_step_and_never_allows(  # type: ignore[no-untyped-def]
    stack: Settings, pool: asyncpg.Pool, tmp_path
) -> None:
    """With OPA gone, a claimed name is not enough to approve (the tenant's policy
    cannot be read: the check is retried, then the vote refused saying OPA could not be
    reached, not blaming a missing token), and a proven approval cannot run the step
    (the step cannot be decided again): nothing leaves."""
    tenant = new_tenant()
    async with tenant_transaction(pool, tenant) as conn:
        await directory.create_tenant(conn, tenant)
        for principal in ("user:ann", "user:bob"):
            await directory.add_principal(conn, tenant, principal)
    keys = key_store(stack)
    identity_key, identity_pub = keys.private(IDENTITY), keys.public(IDENTITY)
    assert identity_key is not None and identity_pub is not None
    bob = PrincipalTokenIssuer(identity_key).issue(tenant, "user:bob").token
    task_queue = f"fault-{uuid.uuid4().hex[:8]}"
    binary = opa_stack.ensure_binary(stack.home, stack.opa_bin)
    port = free_port()
    record = opa_stack.start(tmp_path, binary, stack.policy_dir, port, tokens=stack_tokens(stack))
    own_opa = f"http://127.0.0.1:{port}"
    api = IdempotentApi()
    client = await connect(stack)
    try:
        await configure_tenant(
            own_opa, tenant, approval_risk="medium", approvers=["user:bob"], egress=["127.0.0.1"]
        )
        with serve(api) as url, worker_process(stack, task_queue, STEAD_OPA_URL=own_opa):
            handle = await start_run(
                client,
                task_queue,
                tenant=tenant,
                principal="user:ann",
                playbook_source=playbook(
                    {
                        "id": "send",
                        "operation": "http.request",
                        "args": {"method": "POST", "url": f"{url}/x"},
                    }
                ),
            )
            pending = await wait_pending(handle, "send")
            # OPA dies while the step waits; the approval makes the workflow ask OPA again.
            stop_process(record, sig=signal.SIGKILL)
            claimed = ApprovalInput(
                step_id="send", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
            )
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update("approve", claimed)
            reason = str(refused.value.cause)
            assert "identity could not be verified" in reason and "could not be reached" in reason
            assert "principal token" not in reason
            scope = ApprovalScope(
                workflow_id=handle.id,
                step_id="send",
                plan_hash=pending.plan_hash,
                verdict="approve",
            )
            token = scope_to_approval(bob, identity_pub, scope)
            await handle.execute_update("approve", claimed.model_copy(update={"token": token}))
            status = await handle.result()
    finally:
        stop_process(record, sig=signal.SIGKILL)
    assert status.status == "failed"
    send = status.steps[0]
    assert send.status == "blocked"
    assert send.decision is not None and send.decision.blocked == "policy_unavailable"
    assert api.effects == []


async def _wait_step_done(handle, step_id: str) -> None:  # type: ignore[no-untyped-def]
    from stead.contracts.run import RunStatus

    for _ in range(600):
        status = await handle.query("status", result_type=RunStatus)
        if any(s.step_id == step_id and s.status == "succeeded" for s in status.steps):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{step_id} never succeeded")


_ = subprocess
