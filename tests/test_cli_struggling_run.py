"""``stead approve`` against a run whose workflow task keeps failing or timing out.

Once a run's workflow task is on its third attempt, Temporal refuses queries and
updates to it ("Workflow Task in failed state"): an overloaded worker whose tasks time
out gets there as surely as a failing one. The approver gets one line saying so, and
that whether the vote was recorded is unknown, not a traceback.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.service import RPCError
from temporalio.worker import Worker

from stead.cli._common import task_in_failed_state
from stead.cli.runs import submit_approval
from stead.errors import ConfigError
from tests.conftest import WorkerHandle
from tests.struggling_run import StrugglingRun

POLL = 0.1
BUDGET_SECONDS = 60.0


async def test_approving_a_run_whose_task_keeps_failing_says_so_in_one_line(
    worker: WorkerHandle,
) -> None:
    queue = f"struggling-{uuid.uuid4().hex[:8]}"
    client = worker.client
    async with Worker(client, task_queue=queue, workflows=[StrugglingRun]):
        handle = await client.start_workflow(
            "stead.run", id=f"run-struggling-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        for _ in range(int(BUDGET_SECONDS / POLL)):
            pending = (await handle.describe()).raw_description.pending_workflow_task
            if pending.attempt >= 3:
                break
            await asyncio.sleep(POLL)
        else:
            pytest.fail(f"{handle.id}: its workflow task never reached a third attempt")
        with pytest.raises(ConfigError) as refused:
            await submit_approval(
                client,
                worker.settings,
                run_id=handle.id,
                step_id="put",
                principal="user:bob",
                verdict="approve",
                comment="",
                raw_token=None,
            )
        message = refused.value.message
        assert "failed or timed out twice in a row" in message
        # Not "nothing was recorded": an update the run had accepted gets this answer too
        # (tests/test_approval_unknown_outcome.py), so the approver is told to re-list.
        assert "is unknown" in message and "stead pending" in message and "\n" not in message
        # The update itself is refused the same way, and the check recognises it.
        with pytest.raises(RPCError) as update:
            await handle.execute_update("approve", "x")
        assert task_in_failed_state(update.value)
        await handle.terminate("test over")
