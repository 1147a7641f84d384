"""A vote counts only once its approval_accepted row is written.

The step waits on the run's counted votes. When a vote counted as it arrived, the step
could start, and its effect be audited, while the approval's own audit row was still
waiting to be written (or being retried). Reproduced on the real stack: a ``stead
worker`` subprocess, the audit table locked in Postgres so the vote's row cannot be
written, and the run looked at from outside (its history, its query) while the lock is
held; then the lock goes and the log must hold the approval before the effect.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowHandle

from stead.contracts.run import PendingApproval, RunStatus
from stead.errors import ApprovalRepeated
from stead.settings import Settings
from tests.runs import bob_approves, start_run, wait_pending
from tests.test_approval_unknown_outcome import (
    ACCEPTED,
    ECHO,
    SCHEDULED,
    assert_step_ran_only_on_a_recorded_approval,
    history_of,
    until,
    vote,
)
from tests.workers import worker_process

# What a vote schedules before it counts: the approver's proof and the audit rows.
VOTING = {"identity.verify_approval", "audit.append"}


def scheduled_after_the_vote(events: list[Any]) -> list[str]:
    """The activity types the run scheduled since it accepted the vote."""
    kinds = [e.event_type for e in events]
    if ACCEPTED not in kinds:
        return []
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events[kinds.index(ACCEPTED) :]
        if e.event_type == SCHEDULED
    ]


async def waiting_steps(handle: WorkflowHandle[Any, RunStatus]) -> list[str]:
    waiting = await handle.query("pending_approvals", result_type=list[PendingApproval])
    return [p.step_id for p in waiting]


async def test_the_step_waits_for_its_approval_row_and_a_repeat_vote_is_refused(
    stack: Settings,
) -> None:
    tenant, client, queue = await bob_approves(stack, "audit-first")
    assert stack.postgres_admin_dsn
    with worker_process(stack, queue):
        handle = await start_run(
            client, queue, tenant=tenant, principal="user:ann", playbook_source=ECHO
        )
        pending = await wait_pending(handle, "s0")
        admin = await asyncpg.connect(stack.postgres_admin_dsn)
        try:
            await admin.execute("BEGIN")
            # Inserts wait: the accepted vote's audit row cannot be written yet.
            await admin.execute("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE")
            first = asyncio.ensure_future(vote(client, stack, pending))

            async def auditing() -> bool:
                return "audit.append" in scheduled_after_the_vote(await history_of(handle))

            await until(auditing, "the vote accepted, its audit row waiting")
            # The same approver again, while the first vote's row waits: refused as a
            # repeat (its refusal is audited too, so its answer also waits for the lock).
            again = asyncio.ensure_future(vote(client, stack, pending))

            async def two_votes_in() -> bool:
                events = await history_of(handle)
                return [e.event_type for e in events].count(ACCEPTED) == 2

            await until(two_votes_in, "the repeat vote accepted into the handler")
            # The run has answered everything it was sent (a query is answered after the
            # workflow tasks before it): the step still waits, nothing of it was scheduled.
            assert await waiting_steps(handle) == ["s0"]
            events = await history_of(handle)
            assert set(scheduled_after_the_vote(events)) <= VOTING, scheduled_after_the_vote(events)
            status = await handle.query("status", result_type=RunStatus)
            assert [s.status for s in status.steps] == ["awaiting_approval"], status
            await admin.execute("COMMIT")  # the lock goes
        finally:
            await admin.close()
        answer = await first
        assert answer["verdict"] == "approve"
        assert [a["approver"] for a in answer["step"]["approvals"]] == ["user:bob"], answer
        # Told apart from a refusal: approve-all resending after an unknown outcome counts
        # it as the vote it already cast.
        with pytest.raises(ApprovalRepeated, match="already voted"):
            await again
        await assert_step_ran_only_on_a_recorded_approval(stack, handle, tenant)
