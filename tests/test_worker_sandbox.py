"""The worker's sandbox passes workflow modules through (a cache miss does not re-import
them, bench/sandbox_cost.py) but keeps its run-time guard: a workflow that reads the
clock, draws a random number or opens a file has its workflow task failed, so nothing it
decided that way is ever recorded. If the guard went with the re-import, these fail."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from tests.careless_workflow import Careless
from tests.conftest import WorkerHandle
from tests.test_cli_runs import eventually
from workers.main import WORKFLOW_RUNNER


async def failed_task_message(client: Client, workflow_id: str) -> str | None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    for event in history.events:
        if event.HasField("workflow_task_failed_event_attributes"):
            return str(event.workflow_task_failed_event_attributes.failure.message)
    return None


@pytest.mark.parametrize("what", ["clock", "random", "file"])
async def test_the_worker_sandbox_still_refuses_nondeterminism(
    worker: WorkerHandle, what: str
) -> None:
    client = worker.client
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[Careless], workflow_runner=WORKFLOW_RUNNER
    ):
        handle = await client.start_workflow(
            Careless.run, what, id=f"{queue}-{what}", task_queue=queue
        )
        try:
            message = await eventually(
                lambda: failed_task_message(client, handle.id),
                f"{what}: the workflow task to fail",
                tries=600,
            )
        finally:
            await handle.terminate("test done")
    assert "restricted" in message.lower() or "cannot access" in message.lower(), message
