"""Temporal Cloud Actions counted from real histories (stead.runs.actions).

A small workflow with one of each billable thing runs on the session stack's
Temporal; its histories must count exactly what Cloud's published rules say. A
governed run's ``stead status --json`` reports its Actions per step.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

from temporalio.worker import Worker

from stead.runs.actions import count_actions, run_histories
from tests.conftest import REPO, WorkerHandle, subprocess_env
from tests.known_actions import KnownWorkflow, flaky
from tests.runs import configure_tenant, new_tenant, playbook, start_run


async def test_a_known_history_counts_what_cloud_bills(worker: WorkerHandle) -> None:
    queue = f"actions-{uuid.uuid4().hex[:8]}"
    client = worker.client
    async with Worker(client, task_queue=queue, workflows=[KnownWorkflow], activities=[flaky]):
        handle = await client.start_workflow(
            KnownWorkflow.run, False, id=f"{queue}-wf", task_queue=queue
        )
        await handle.signal(KnownWorkflow.poke)
        await handle.result()
    histories = await run_histories(client, handle.id)
    assert len(histories) == 2
    counted = count_actions(histories)
    assert counted.by_kind == {
        "workflow_started": 2,  # the start and the continue-as-new
        "activity_attempt": 3,  # one, and one retried once
        "marker_task": 2,  # the patch's workflow task, the local activities' task
        "timer_started": 1,
        "signal": 1,
        "search_attribute_upsert": 1,  # the patch's TemporalChangeVersion upsert is free
    }
    assert counted.total == 10
    assert counted.with_steps(4).per_step == 2.5


async def test_status_json_reports_actions_per_step(worker: WorkerHandle) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    echo = [{"id": f"s{i}", "operation": "core.echo", "args": {"value": i}} for i in range(2)]
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(*echo),
    )
    assert (await handle.result()).status == "completed"
    actions = (await stead_json(worker, "status", handle.id))["temporal_actions"]
    expected = count_actions(await run_histories(worker.client, handle.id))
    assert actions["total"] == expected.total
    assert actions["per_step"] == round(expected.total / 2, 2)
    # Each allowed step is at least its one activity.
    assert actions["by_kind"]["activity_attempt"] >= 2
    # stead slo --actions: the same run, as the tenant's cost in Actions.
    slo = await stead_json(worker, "slo", "--tenant", tenant, "--since", "1h", "--actions")
    assert slo["temporal_actions"] == {
        "runs_counted": 1,
        "total": expected.total,
        "per_run": float(expected.total),
        "per_step": round(expected.total / 2, 2),
    }


async def stead_json(worker: WorkerHandle, *args: str) -> Any:
    """``stead ARGS --json`` as a child process on the test stack: its one JSON document."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stead.cli",
        *args,
        "--json",
        env=subprocess_env(worker.settings),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 0, err.decode()
    return json.loads(out)
