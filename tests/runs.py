"""Helpers for starting governed runs in tests and configuring tenants in the real OPA."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle

from stead.contracts.run import PendingApproval, RunInput, RunRequest, RunStatus, start_digest
from stead.settings import Settings
from stead.temporal import connect
from tests.opa_auth import admin_headers


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def configure_tenant(opa_url: str, tenant: str, **config: Any) -> None:
    """Tenant policy data goes into OPA through its data API, as an operator would push it.

    Test tenants count approvers' and starters' claimed names
    (``approval_authentication``/``start_authentication: none``) unless a test asks for
    ``"token"``: the workflow tests exercise approval logic, tests/test_identity_approvals.py
    and tests/test_attack_starts.py exercise principal and start tokens.
    """
    body = {
        "operations": ["*"],
        "approval_risk": "high",
        "approval_authentication": "none",
        "start_authentication": "none",
        **config,
    }
    async with httpx.AsyncClient() as client:
        response = await client.put(
            f"{opa_url}/v1/data/stead/tenants/{tenant}", json=body, headers=admin_headers()
        )
        response.raise_for_status()


async def start_run(
    client: Client, task_queue: str, **request: Any
) -> WorkflowHandle[Any, RunStatus]:
    req = RunRequest(**request)
    return await client.start_workflow(
        "stead.run",
        RunInput(request=req),
        id=f"run-{req.tenant}-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        result_type=RunStatus,
    )


async def bob_approves(settings: Settings, queue_prefix: str) -> tuple[str, Client, str]:
    """A fresh tenant whose low-risk steps wait for user:bob, a client, and a task queue
    of its own (for a ``stead worker`` the test starts and stops)."""
    tenant = new_tenant()
    await configure_tenant(settings.opa_url, tenant, approval_risk="low", approvers=["user:bob"])
    return tenant, await connect(settings), f"{queue_prefix}-{uuid.uuid4().hex[:8]}"


def playbook(*steps: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    import yaml

    return yaml.safe_dump({"name": "inline", "inputs": inputs or {}, "steps": list(steps)})


# One budget for every wait on a run: generous for a loaded 2-core machine, bounded so
# a run that never gets there fails the test instead of hanging it.
POLL_SECONDS = 60.0
POLL_INTERVAL = 0.05
_ENDED = ("completed", "failed", "denied", "plan_rejected", "cancelled")


async def wait_pending(
    handle: WorkflowHandle[Any, RunStatus], step_id: str | None = None
) -> PendingApproval:
    """Poll the run's own queries (bounded) until ``step_id`` (or any step) awaits approval.

    Fails at once if the run ends first, with the run's reasons, rather than at the budget.
    """
    for _ in range(int(POLL_SECONDS / POLL_INTERVAL)):
        pending: list[PendingApproval] = await handle.query(
            "pending_approvals", result_type=list[PendingApproval]
        )
        for item in pending:
            if step_id is None or item.step_id == step_id:
                return item
        status = await handle.query("status", result_type=RunStatus)
        if status.status in _ENDED:
            raise AssertionError(
                f"{handle.id}: run ended {status.status} before {step_id or 'a step'} "
                f"awaited approval: {status.reasons}"
            )
        await asyncio.sleep(POLL_INTERVAL)
    raise AssertionError(f"{handle.id}: {step_id or 'no step'} never awaited approval")


async def start_authenticated_run(
    client: Client, task_queue: str, settings: Settings, **request: Any
) -> WorkflowHandle[Any, RunStatus]:
    """Start as ``stead run --token-file`` does, for tenants that require start tokens.

    The tenant is put in the directory with the starter (if missing), the starter gets a
    principal token, and only its copy narrowed to this start goes to Temporal.
    """
    from contextlib import suppress

    from stead.db.pool import create_pool, tenant_transaction
    from stead.identity import directory
    from stead.identity.errors import PrincipalExists, TenantExists
    from stead.identity.starts import StartScope, scope_to_start
    from stead.identity.tokens import PrincipalTokenIssuer
    from stead.keys import IDENTITY, key_store

    req = RunRequest(**request)
    pool = await create_pool(settings.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, req.tenant) as conn:
            with suppress(TenantExists):
                await directory.create_tenant(conn, req.tenant)
        async with tenant_transaction(pool, req.tenant) as conn:
            with suppress(PrincipalExists):
                await directory.add_principal(conn, req.tenant, req.principal)
    finally:
        await pool.close()
    keys = key_store(settings)
    private, public = keys.private(IDENTITY), keys.public(IDENTITY)
    assert private is not None and public is not None
    token = PrincipalTokenIssuer(private).issue(req.tenant, req.principal).token
    workflow_id = f"run-{req.tenant}-{uuid.uuid4().hex[:12]}"
    scope = StartScope(workflow_id=workflow_id, request_digest=start_digest(req))
    return await client.start_workflow(
        "stead.run",
        RunInput(request=req, start_token=scope_to_start(token, public, scope)),
        id=workflow_id,
        task_queue=task_queue,
        result_type=RunStatus,
    )
