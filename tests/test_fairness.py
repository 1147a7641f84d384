"""Fairness between tenants: a quiet tenant's run is not stuck behind a noisy tenant's backlog.

Runs start through ``start_governed`` (the webhook's and demos' path; ``stead run`` sets
the same priority), so each carries its tenant as Temporal's fairness key. The noisy
tenant's runs are queued before any worker polls, then the quiet tenant's one run; a
worker with one slot of each kind then drains the queue. Matching with fairness on
(the dev server's dynamic config, stead.devstack.temporal) hands out tasks by key, so the
quiet run finishes among the first; with every run on the default key (no fairness,
the control) it finishes behind the backlog. Asserted by the order runs closed in,
never by a time. The quiet run's steps are activities the workflow scheduled without a
priority of their own, so its early finish also shows they inherited the run's key.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.common import Priority

from stead.cli.starts import start_governed
from stead.contracts.run import RunRequest, RunStatus
from stead.settings import Settings
from stead.temporal import connect
from tests.runs import configure_tenant, new_tenant, playbook
from workers.main import build_worker, open_resources

NOISY_RUNS = 16
CHAIN = playbook(
    {"id": "a", "operation": "core.echo", "args": {"value": "a"}},
    {"id": "b", "operation": "core.echo", "args": {"value": "b"}, "depends_on": ["a"]},
)


def request(tenant: str) -> RunRequest:
    return RunRequest(tenant=tenant, principal="user:ann", playbook_source=CHAIN)


async def noisy_runs_closed_before_quiet(stack: Settings, *, fair: bool) -> int:
    """How many of the noisy tenant's backlogged runs closed before the quiet tenant's run."""
    noisy, quiet = new_tenant(), new_tenant()
    for tenant in (noisy, quiet):
        await configure_tenant(stack.opa_url, tenant)
    task_queue = f"test-fair-{uuid.uuid4().hex[:10]}"
    client = await connect(stack)
    options: dict[str, Any] = {} if fair else {"priority": Priority.default}
    noisy_handles: list[WorkflowHandle[Any, RunStatus]] = [
        await start_governed(client, task_queue, request(noisy), None, **options)
        for _ in range(NOISY_RUNS)
    ]
    quiet_handle = await start_governed(client, task_queue, request(quiet), None, **options)
    # One slot of each kind: the backlog stays in Temporal, where matching orders it.
    single = stack.model_copy(update={"worker_max_activities": 1, "worker_max_workflow_tasks": 1})
    async with open_resources(single) as resources, build_worker(client, task_queue, resources):
        results = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in [*noisy_handles, quiet_handle])), 300
        )
    assert all(r.status == "completed" for r in results), [r.reasons for r in results]
    closed = {h.id: (await h.describe()).close_time for h in [*noisy_handles, quiet_handle]}
    quiet_closed = closed.pop(quiet_handle.id)
    assert quiet_closed is not None
    return sum(1 for t in closed.values() if t is not None and t < quiet_closed)


async def test_quiet_tenant_overtakes_a_noisy_backlog_only_with_fairness(stack: Settings) -> None:
    with_fairness = await noisy_runs_closed_before_quiet(stack, fair=True)
    without = await noisy_runs_closed_before_quiet(stack, fair=False)
    # Control: first in, first out, the quiet run waits for most of the backlog.
    assert without >= NOISY_RUNS // 2, without
    # Fair: it finishes among the first, whatever the noisy tenant queued before it.
    assert with_fairness <= NOISY_RUNS // 4, with_fairness
