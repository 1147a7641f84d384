"""Helpers the two field-case tests share: tenant policy from data.json, playbook
variants with test-sized timeouts, and a human at the approval queue."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import yaml
from temporalio.client import WorkflowHandle

from stead.contracts.run import ApprovalInput, PendingApproval, RunStatus, StepResult
from stead.planning.playbooks import playbook_path
from tests.conftest import REPO
from tests.runs import configure_tenant
from tests.workers import stop_worker


async def configure_case_tenant(opa_url: str, tenant: str, template: str, **changes: Any) -> None:
    """Push ``policies/stead/data.json``'s ``template`` tenant under a fresh tenant id, so
    each test gets the shipped policy without touching the shared demo tenants."""
    data = json.loads((REPO / "policies/stead/data.json").read_text())
    await configure_tenant(opa_url, tenant, **{**data["tenants"][template], **changes})


def playbook_variant(name: str, **timeouts: float) -> str:
    """The shipped playbook with some steps' timeouts tightened (a killed worker's
    activity is retried only once its start-to-close timeout has passed)."""
    # Found as the worker finds it: the repo's folder, then the cases' plugin's.
    data = yaml.safe_load(playbook_path(name, REPO / "playbooks").read_text())
    for step in data["steps"]:
        if step["id"] in timeouts:
            step["timeout_seconds"] = timeouts[step["id"]]
    return yaml.safe_dump(data, sort_keys=False)


async def decide(
    handle: WorkflowHandle[Any, RunStatus],
    pending: PendingApproval,
    approver: str,
    *,
    reject: bool = False,
    comment: str = "",
) -> StepResult:
    result: StepResult = await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id=pending.step_id,
            plan_hash=pending.plan_hash,
            approver=approver,
            verdict="reject" if reject else "approve",
            comment=comment,
        ),
        result_type=StepResult,
    )
    return result


async def approve_until_done(
    handle: WorkflowHandle[Any, RunStatus], approver: str
) -> tuple[RunStatus, list[str]]:
    """Approve every step the run holds until it finishes; returns the status and the
    ids of the steps approved, in order."""
    approved: list[str] = []
    result = asyncio.ensure_future(handle.result())
    while not result.done():
        waiting = await handle.query("pending_approvals", result_type=list[PendingApproval])
        for item in waiting:
            await decide(handle, item, approver)
            approved.append(item.step_id)
        if not waiting:
            await asyncio.wait([result], timeout=0.05)
    return result.result(), approved


def retire(child: subprocess.Popen[str]) -> None:
    """Stop a worker (if still alive) and close its output pipe, which the draining
    thread leaves open once the worker is gone."""
    stop_worker(child)
    if child.stdout is not None:
        child.stdout.close()


def step(status: RunStatus, step_id: str) -> StepResult:
    return next(s for s in status.steps if s.step_id == step_id)


def output(status: RunStatus, step_id: str) -> Any:
    """A step's output, typed Any: the run records JSON whose shape only the playbook and
    the adapter know, and the test asserts that shape."""
    return step(status, step_id).output
