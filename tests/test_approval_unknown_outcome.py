"""A vote Temporal answered with an error may still have been recorded: its outcome is
unknown, the run says which, and no step runs on a vote that was not recorded.

At 1,000 parked runs on a starved worker (bench/README.md, row 7) 222 approvals got
"Workflow Task in failed state" and 41 of those runs completed anyway. Why: the SDK's
``execute_update`` re-sends ``UpdateWorkflowExecution`` (same update id) until the
update is at least accepted, and the server checks the run's workflow-task attempt
*before* it looks the update id up. So a vote the worker had already accepted, whose
run's next workflow tasks then timed out twice, is answered on the re-send exactly like
a vote that never arrived.

Reproduced on the real stack, deterministically: a ``stead worker`` subprocess, runs
started straight through Temporal with a 1 s workflow-task timeout, the audit table
locked in Postgres so an accepted vote cannot finish its handler, and the worker frozen
with SIGSTOP so the run's workflow tasks time out until their attempt reaches 3.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollWorkflowTaskQueueRequest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode

from stead.audit.log import list_events
from stead.cli._common import task_in_failed_state
from stead.cli.runs import send_approval
from stead.contracts.run import ApprovalInput, PendingApproval, RunInput, RunRequest, RunStatus
from stead.errors import UpdateNotTaken
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import REPO, subprocess_env
from tests.runs import configure_tenant, new_tenant, playbook, wait_pending
from tests.workers import worker_process

ECHO = playbook({"id": "s0", "operation": "core.echo", "args": {"value": 1}})
ACCEPTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
SCHEDULED = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
TRIES = 600
POLL = 0.1


async def until(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``probe`` (bounded); never a bet on how long something takes."""
    for _ in range(TRIES):
        if await probe():
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"gave up waiting: {what}")


async def history_of(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    return list((await handle.fetch_history()).events)


async def task_attempt(handle: WorkflowHandle[Any, Any]) -> int:
    return int((await handle.describe()).raw_description.pending_workflow_task.attempt)


async def in_failed_state(handle: WorkflowHandle[Any, Any]) -> bool:
    """The run's workflow task is on its third attempt: Temporal now refuses updates."""
    return await task_attempt(handle) >= 3


@contextmanager
def frozen(worker: subprocess.Popen[str]) -> Iterator[None]:
    """The worker stopped by SIGSTOP (its open polls still take tasks it cannot finish),
    resumed by SIGCONT whatever happens."""
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(worker.pid, signal.SIGCONT)


@dataclass(frozen=True)
class Parked:
    client: Client
    handle: WorkflowHandle[Any, RunStatus]
    pending: PendingApproval
    worker: subprocess.Popen[str]
    queue: str


@asynccontextmanager
async def parked_run(stack: Settings) -> AsyncIterator[Parked]:
    """A run parked on its step s0, on a ``stead worker`` subprocess of its own queue."""
    queue = f"unknown-{uuid.uuid4().hex[:8]}"
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, approval_risk="low", approvers=["user:bob"])
    client = await connect(stack)
    with worker_process(stack, queue) as worker:
        handle = await client.start_workflow(
            "stead.run",
            RunInput(request=RunRequest(tenant=tenant, principal="user:ann", playbook_source=ECHO)),
            id=f"run-{tenant}-{uuid.uuid4().hex[:12]}",
            task_queue=queue,
            result_type=RunStatus,
            # Short, so the frozen worker's tasks time out in seconds (default: 10 s).
            task_timeout=timedelta(seconds=1),
        )
        yield Parked(client, handle, await wait_pending(handle, "s0"), worker, queue)


async def stuck(run: Parked) -> None:
    """With the worker frozen: an event the run needs a workflow task for (a signal it
    ignores), then wait until its task is on the third attempt (updates refused).

    The frozen worker alone cannot be relied on to start those attempts: only polls it
    had open before SIGSTOP can take a task, and how many it had (none, once they were
    answered) is the worker's scheduling. A fresh clone's CI run stopped at attempt 2
    and waited out the bound. So this test also polls the run's queue itself and never
    answers what it takes: every attempt is started and times out (1 s) for certain."""
    await run.handle.signal("nudge")
    thief = asyncio.ensure_future(take_and_drop_tasks(run.client, run.queue))
    try:
        await until(lambda: in_failed_state(run.handle), "a third workflow-task attempt")
    finally:
        thief.cancel()
        await asyncio.gather(thief, return_exceptions=True)


async def take_and_drop_tasks(client: Client, queue: str) -> None:
    """Poll ``queue`` for workflow tasks like a worker that hangs on each one.

    A task sticky to the frozen worker reaches this normal queue once its sticky
    schedule-to-start timeout passes. Each poll asks for at most 5 s (the server's
    shortest long poll is 2 s), so a poll left open by the cancel ends soon after."""
    request = PollWorkflowTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
        identity="test: takes workflow tasks and never answers",
    )
    while True:
        try:
            await client.workflow_service.poll_workflow_task_queue(
                request, retry=False, timeout=timedelta(seconds=5)
            )
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise


def vote(client: Client, settings: Settings, pending: PendingApproval) -> Awaitable[Any]:
    """The vote ``stead approve`` and ``stead approve-all`` send."""
    return send_approval(
        client, settings, pending, principal="user:bob", verdict="approve", comment="",
        raw_token=None,
    )  # fmt: skip


async def audit_kinds(settings: Settings, tenant: str, run_id: str | None) -> list[tuple[str, str]]:
    """(kind, actor) of the run's audit rows in chain order; every row of the tenant
    when ``run_id`` is None."""
    assert settings.postgres_admin_dsn
    conn = await asyncpg.connect(settings.postgres_admin_dsn)
    try:
        return [(e.kind, e.actor) for e in await list_events(conn, tenant, run_id)]
    finally:
        await conn.close()


async def assert_step_ran_only_on_a_recorded_approval(
    settings: Settings, handle: WorkflowHandle[Any, RunStatus], tenant: str
) -> None:
    """The governance claim, from three records that do not share code: Temporal's
    history holds an accepted approve update, the run's own result names the eligible
    approver, and the audit log has that approver's acceptance before the step's effect."""
    status = await handle.result()
    assert status.status == "completed", status
    [step] = status.steps
    assert step.status == "succeeded" and [a.approver for a in step.approvals] == ["user:bob"]
    assert any(e.event_type == ACCEPTED for e in await history_of(handle))
    kinds = await audit_kinds(settings, tenant, handle.id)
    assert ("approval_accepted", "user:bob") in kinds, kinds
    first_effect = [k for k, _ in kinds].index("effect")
    assert kinds.index(("approval_accepted", "user:bob")) < first_effect, kinds


async def test_a_vote_answered_workflow_task_in_failed_state_can_be_recorded(
    stack: Settings,
) -> None:
    """The 41: the vote is accepted, the run's next tasks time out, and the same update
    (its id, as the SDK re-sends it) is then answered with the "refused" error."""
    async with parked_run(stack) as run:
        handle, pending = run.handle, run.pending
        assert stack.postgres_admin_dsn
        admin = await asyncpg.connect(stack.postgres_admin_dsn)
        try:
            await admin.execute("BEGIN")
            # Inserts wait: the accepted vote's audit row cannot be written yet.
            await admin.execute("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE")
            sent = asyncio.ensure_future(vote(run.client, stack, pending))

            async def accepted_and_auditing() -> bool:
                events = await history_of(handle)
                kinds = [e.event_type for e in events]
                return ACCEPTED in kinds and any(
                    e.activity_task_scheduled_event_attributes.activity_type.name == "audit.append"
                    for e in events[kinds.index(ACCEPTED) :]
                    if e.event_type == SCHEDULED
                )

            await until(accepted_and_auditing, "the vote accepted, its audit row waiting")
            with frozen(run.worker):
                await admin.execute("COMMIT")  # the lock goes; the worker is frozen
                await stuck(run)
                [accepted] = [e for e in await history_of(handle) if e.event_type == ACCEPTED]
                update_id = (
                    accepted.workflow_execution_update_accepted_event_attributes
                    .accepted_request.meta.update_id
                )  # fmt: skip
                again = ApprovalInput(
                    step_id="s0", plan_hash=pending.plan_hash, approver="user:bob",
                    verdict="approve",
                )  # fmt: skip
                with pytest.raises(RPCError) as answered:
                    await handle.start_update(
                        "approve", again, id=update_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED
                    )
                assert task_in_failed_state(answered.value), answered.value
        finally:
            await admin.close()
        # The vote was recorded all along: the run completes on it, and the client that
        # sent it gets its answer once the worker is back.
        await assert_step_ran_only_on_a_recorded_approval(stack, handle, pending.tenant)
        assert (await sent)["verdict"] == "approve"


async def test_a_vote_never_recorded_runs_nothing_and_approve_all_resends_it(
    stack: Settings,
) -> None:
    """The 181: a vote Temporal refused before the run saw it leaves the step waiting
    with no approval anywhere; ``stead approve-all`` asks again and resends it."""
    async with parked_run(stack) as run:
        handle, pending = run.handle, run.pending
        with frozen(run.worker):
            await stuck(run)
            with pytest.raises(UpdateNotTaken) as refused:
                await vote(run.client, stack, pending)
            assert "is unknown" in refused.value.message
        # Once the worker is back: the step still waits, and nothing was recorded.
        await until(lambda: still_waiting(handle), "the run to answer again")
        events = await history_of(handle)
        assert not any(e.event_type == ACCEPTED for e in events)
        kinds = [k for k, _ in await audit_kinds(stack, pending.tenant, handle.id)]
        assert "approval_accepted" not in kinds and "effect" not in kinds, kinds

        with frozen(run.worker):
            await stuck(run)
            # approve-all: round 1 is answered by Temporal; it says so, waits, asks again.
            child = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "stead.cli", "approve-all", "--tenant", pending.tenant,
                  "--as", "user:bob", "--attempts", "8", "--json"),
                env=subprocess_env(stack, STEAD_TASK_QUEUE=run.queue), cwd=REPO,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert child.stderr is not None
            line = await asyncio.wait_for(child.stderr.readline(), timeout=60)
            assert b"unknown outcome" in line, line
        out, err = await asyncio.wait_for(child.communicate(), timeout=120)
        assert child.returncode == 0, (out, err)
        report = json.loads(out)
        assert (report["accepted"], report["refused"], report["unknown"]) == (1, 0, 0), report
        assert report["retried"] == 1, report
        await assert_step_ran_only_on_a_recorded_approval(stack, handle, pending.tenant)


async def still_waiting(handle: WorkflowHandle[Any, RunStatus]) -> bool:
    try:
        waiting = await handle.query("pending_approvals", result_type=list[PendingApproval])
    except RPCError:
        return False
    return [p.step_id for p in waiting] == ["s0"]
