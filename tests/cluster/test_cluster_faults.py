"""Governed runs on a real multi-service Temporal cluster, through the faults a cluster has.

Each test runs a real Stead worker against frontend, history, matching and worker
processes on PostgreSQL, breaks one of them mid-run, and checks what a user would:
the run completes, the effect reached the target system exactly once (a local HTTP
API that counts calls), and the effect ledger saw it. Waits are on conditions with a
deadline, never on sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from stead.contracts.run import ApprovalInput, RunStatus
from stead.db.pool import create_pool, tenant_transaction
from stead.devstack.cluster import TemporalCluster
from stead.settings import Settings
from tests.conftest import WorkerHandle
from tests.peers import IdempotentApi, serve
from tests.runs import configure_tenant, new_tenant, playbook, start_run, wait_pending
from tests.workers import start_worker, stop_worker, worker_process
from workers.main import connect

pytestmark = pytest.mark.cluster

# Generous for a loaded 2-core machine running four Temporal services; bounded so a
# lost run fails the test instead of hanging it.
DEADLINE = 180.0
APPROVER = "user:bob"


def charge(url: str, *, timeout: float = 60) -> str:
    """One external write: POST /charges on the local API, keyed by ``<run>/charge``.

    ``timeout`` bounds the attempt (the catalog's 60 s at most): long enough by default
    for a held call to outlive a service restart, short where a dead worker's attempt
    must time out quickly so the next one runs.
    """
    return playbook(
        {
            "id": "charge",
            "operation": "http.request",
            "args": {
                "method": "POST",
                "url": f"{url}/charges",
                "json": {"amount": 5},
                "timeout_seconds": timeout - 1,
            },
            "timeout_seconds": timeout,
        }
    )


async def governed_tenant(settings: Settings, *, approval: bool = False) -> str:
    tenant = new_tenant()
    config: dict[str, Any] = {"egress": ["127.0.0.1"]}
    if approval:
        config.update(approval_risk="medium", approvers=[APPROVER])
    await configure_tenant(settings.opa_url, tenant, **config)
    return tenant


async def outcome(handle: WorkflowHandle[Any, RunStatus]) -> RunStatus:
    return await asyncio.wait_for(handle.result(), DEADLINE)


async def approve(handle: WorkflowHandle[Any, RunStatus], step_id: str) -> None:
    pending = await wait_pending(handle, step_id)
    approval = ApprovalInput(
        step_id=step_id, plan_hash=pending.plan_hash, approver=APPROVER, verdict="approve"
    )
    await asyncio.wait_for(handle.execute_update("approve", approval), DEADLINE)


async def ledger_attempts(settings: Settings, tenant: str, key: str) -> int | None:
    pool = await create_pool(settings.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            attempts: int | None = await conn.fetchval(
                "SELECT attempts FROM effects WHERE idempotency_key = $1", key
            )
            return attempts
    finally:
        await pool.close()


async def assert_once(
    settings: Settings, tenant: str, handle: WorkflowHandle[Any, RunStatus], api: IdempotentApi
) -> None:
    status = await outcome(handle)
    assert status.status == "completed", status.reasons
    assert [effect["key"] for effect in api.effects] == [f"{handle.id}/charge"]
    assert await ledger_attempts(settings, tenant, f"{handle.id}/charge") is not None


class HeldApi(IdempotentApi):
    """Performs the effect, then holds the response until the test has broken the cluster."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = threading.Event()
        self.release = threading.Event()
        self.on_first_effect = self._hold

    def _hold(self) -> None:
        self.in_flight.set()
        self.release.wait(DEADLINE)


async def test_governed_run_completes_with_one_effect(worker: WorkerHandle) -> None:
    tenant = await governed_tenant(worker.settings)
    api = IdempotentApi()
    with serve(api) as url:
        handle = await start_run(
            worker.client,
            worker.task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=charge(url),
        )
        await assert_once(worker.settings, tenant, handle, api)


async def test_approval_is_listed_by_search_attribute_then_runs_once(
    worker: WorkerHandle,
) -> None:
    tenant = await governed_tenant(worker.settings, approval=True)
    api = IdempotentApi()
    with serve(api) as url:
        handle = await start_run(
            worker.client,
            worker.task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=charge(url),
        )
        await wait_pending(handle, "charge")
        # What `stead pending` asks: SQL visibility must hold Stead's search attributes.
        await listed(worker.client, f'SteadPendingApproval = true AND WorkflowId = "{handle.id}"')
        assert api.effects == []
        await approve(handle, "charge")
        await assert_once(worker.settings, tenant, handle, api)


async def listed(client: Client, query: str) -> None:
    """Visibility is written asynchronously by history: poll the query until it matches."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        async for _ in client.list_workflows(query):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no workflow matched {query!r} in {DEADLINE:.0f} s")


async def test_history_killed_mid_step_completes_once(
    worker: WorkerHandle, cluster: TemporalCluster
) -> None:
    tenant = await governed_tenant(worker.settings)
    api = HeldApi()
    with serve(api) as url:
        handle = await start_run(
            worker.client,
            worker.task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=charge(url),
        )
        assert await asyncio.to_thread(api.in_flight.wait, DEADLINE)
        # The step's effect happened; its completion has no history to go to yet.
        await asyncio.to_thread(cluster.kill, "history")
        await asyncio.to_thread(cluster.start_service, "history")
        api.release.set()
        await assert_once(worker.settings, tenant, handle, api)


async def test_matching_killed_while_parked_dispatches_after_restart(
    worker: WorkerHandle, cluster: TemporalCluster
) -> None:
    tenant = await governed_tenant(worker.settings, approval=True)
    api = IdempotentApi()
    with serve(api) as url:
        handle = await start_run(
            worker.client,
            worker.task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=charge(url),
        )
        await wait_pending(handle, "charge")
        # The worker's polls were parked in the matching process that dies here.
        await asyncio.to_thread(cluster.kill, "matching")
        await asyncio.to_thread(cluster.start_service, "matching")
        await approve(handle, "charge")
        await assert_once(worker.settings, tenant, handle, api)


async def test_frontend_restart_mid_step_completes_once(
    worker: WorkerHandle, cluster: TemporalCluster
) -> None:
    tenant = await governed_tenant(worker.settings)
    api = HeldApi()
    with serve(api) as url:
        handle = await start_run(
            worker.client,
            worker.task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=charge(url),
        )
        assert await asyncio.to_thread(api.in_flight.wait, DEADLINE)
        # Worker and client both lose their connection and must reconnect on their own.
        await asyncio.to_thread(cluster.restart, "frontend")
        api.release.set()
        await assert_once(worker.settings, tenant, handle, api)


async def test_stead_worker_killed_after_effect_restarts_and_executes_once(
    stack: Settings,
) -> None:
    tenant = await governed_tenant(stack)
    task_queue = f"cluster-{uuid.uuid4().hex[:8]}"
    api = IdempotentApi()
    client = await connect(stack)
    with serve(api) as url:
        first = start_worker(stack, task_queue)
        # The API performs the effect, then kills the worker before it can report back.
        api.on_first_effect = lambda: os.kill(first.pid, signal.SIGKILL)
        handle = await start_run(
            client,
            task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=charge(url, timeout=3),
        )
        await asyncio.to_thread(first.wait, DEADLINE)
        assert first.returncode == -signal.SIGKILL
        stop_worker(first)
        with worker_process(stack, task_queue):
            await assert_once(stack, tenant, handle, api)
    assert api.requests >= 2
    attempts = await ledger_attempts(stack, tenant, f"{handle.id}/charge")
    assert attempts is not None and attempts >= 2
