"""Helpers for starting governed runs in tests and configuring tenants in the real OPA."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle

from stead.contracts.run import PendingApproval, RunInput, RunRequest, RunStatus


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
        response = await client.put(f"{opa_url}/v1/data/stead/tenants/{tenant}", json=body)
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


def playbook(*steps: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    import yaml

    return yaml.safe_dump({"name": "inline", "inputs": inputs or {}, "steps": list(steps)})


async def wait_pending(handle: WorkflowHandle[Any, RunStatus], step_id: str) -> PendingApproval:
    """Poll the run's own ``pending_approvals`` query (bounded) until ``step_id`` waits."""
    for _ in range(600):
        pending: list[PendingApproval] = await handle.query(
            "pending_approvals", result_type=list[PendingApproval]
        )
        for item in pending:
            if item.step_id == step_id:
                return item
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id}: step {step_id} never awaited approval")
