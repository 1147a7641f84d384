"""Governed runs on a real multi-service Temporal cluster, through the faults a cluster has.

Each test runs a real Stead worker against frontend, history, matching and worker
processes on PostgreSQL, breaks one of them mid-run, and checks what a user would:
the run completes, the effect reached the target system exactly once (a local HTTP
API that counts calls), and the effect ledger saw it. Waits are on conditions with a
deadline, never on sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
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
from tests.test_run_faults import pool, test_worker_killed_after_effect_executes_once

pytestmark = pytest.mark.cluster

# The suite's own test of a Stead worker SIGKILLed after the effect (a new worker
# finishes the run, one effect, two ledger attempts), collected again here so it runs
# unchanged against the cluster: `stack` is this tier's.
__all__ = ["pool", "test_worker_killed_after_effect_executes_once"]

# Generous for a loaded 2-core machine running four Temporal services; bounded so a
# lost run fails the test instead of hanging it.
DEADLINE = 180.0
APPROVER = "user:bob"


def charge(url: str) -> str:
    """One external write: POST /charges on the local API, keyed by ``<run>/charge``.

    The attempt may take the catalog's full 60 s, so a call the API holds outlives a
    service restart and its completion is what crosses the broken cluster.
    """
    return playbook(
        {
            "id": "charge",
            "operation": "http.request",
            "args": {
                "method": "POST",
                "url": f"{url}/charges",
                "json": {"amount": 5},
                "timeout_seconds": 59,
            },
            "timeout_seconds": 60,
        }
    )


async def start_charge(
    worker: WorkerHandle, tenant: str, url: str
) -> WorkflowHandle[Any, RunStatus]:
    return await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=charge(url),
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
        handle = await start_charge(worker, tenant, url)
        await assert_once(worker.settings, tenant, handle, api)


async def test_approval_is_listed_by_search_attribute_then_runs_once(
    worker: WorkerHandle,
) -> None:
    tenant = await governed_tenant(worker.settings, approval=True)
    api = IdempotentApi()
    with serve(api) as url:
        handle = await start_charge(worker, tenant, url)
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


async def held_through(worker: WorkerHandle, fault: Callable[[], None]) -> None:
    """Start a run, apply ``fault`` while its effect's response is held, then let it finish."""
    tenant = await governed_tenant(worker.settings)
    api = HeldApi()
    with serve(api) as url:
        handle = await start_charge(worker, tenant, url)
        assert await asyncio.to_thread(api.in_flight.wait, DEADLINE)
        await asyncio.to_thread(fault)
        api.release.set()
        await assert_once(worker.settings, tenant, handle, api)


async def test_history_killed_mid_step_completes_once(
    worker: WorkerHandle, cluster: TemporalCluster
) -> None:
    def kill_history() -> None:
        # The step's effect happened; its completion has no history to go to yet.
        cluster.kill("history")
        cluster.start_service("history")

    await held_through(worker, kill_history)


async def test_matching_killed_while_parked_dispatches_after_restart(
    worker: WorkerHandle, cluster: TemporalCluster
) -> None:
    tenant = await governed_tenant(worker.settings, approval=True)
    api = IdempotentApi()
    with serve(api) as url:
        handle = await start_charge(worker, tenant, url)
        await wait_pending(handle, "charge")
        # The worker's polls were parked in the matching process that dies here.
        await asyncio.to_thread(cluster.kill, "matching")
        await asyncio.to_thread(cluster.start_service, "matching")
        await approve(handle, "charge")
        await assert_once(worker.settings, tenant, handle, api)


async def test_frontend_restart_mid_step_completes_once(
    worker: WorkerHandle, cluster: TemporalCluster
) -> None:
    # Worker and client both lose their connection and must reconnect on their own.
    await held_through(worker, lambda: cluster.restart("frontend"))
