"""An audit activity retried after its row committed writes no second row.

Temporal retries an activity whose completion it never recorded. For ``audit.append``
that happens when the worker dies after the row's transaction committed and before the
completion reached Temporal: the retry used to append the event again (an approval
accepted twice in the log). Reproduced on the real stack, deterministically: a ``stead
worker`` subprocess, and the tenant's audit anchor file replaced by a FIFO. The anchor
is written right after the audit transaction commits (``stead.db.pool.after_commit``),
and opening a FIFO for writing blocks until someone reads it, so the worker stops
exactly between the commit and the activity's completion; the test sees the row in
Postgres and kills the worker with SIGKILL there. A new worker runs the retry.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from stead.audit import installed
from stead.settings import Settings
from tests.runs import bob_approves, start_run, wait_pending
from tests.test_approval_unknown_outcome import (
    ACCEPTED,
    ECHO,
    audit_kinds,
    history_of,
    until,
    vote,
)
from tests.test_attack_database import stead
from tests.workers import start_worker, stop_worker, worker_process


async def test_an_audit_row_committed_by_a_worker_killed_before_completing_is_written_once(
    stack: Settings,
) -> None:
    tenant, client, queue = await bob_approves(stack, "audit-retry")
    anchor: Path = installed().anchors.path(tenant)
    first = start_worker(stack, queue)
    try:
        handle = await start_run(
            client, queue, tenant=tenant, principal="user:ann", playbook_source=ECHO
        )
        pending = await wait_pending(handle, "s0")

        async def settled() -> bool:
            """Every audit row so far is written and anchored, no activity is running."""
            described = await handle.describe()
            if described.raw_description.pending_activities or not anchor.exists():
                return False
            anchored = installed().anchors.read(tenant, installed().key())
            # A fresh tenant: its chain is this run's rows, and its head their count.
            head = len(await audit_kinds(stack, tenant, None))
            return anchored is not None and anchored.seq == head

        await until(settled, "the parked run's audit rows anchored")
        saved = anchor.read_bytes()
        anchor.unlink()
        os.mkfifo(anchor, 0o600)
        sent = asyncio.ensure_future(vote(client, stack, pending))

        async def accepted_row() -> bool:
            kinds = [k for k, _ in await audit_kinds(stack, tenant, handle.id)]
            return "approval_accepted" in kinds

        # The row commits; the worker then blocks opening the FIFO, before it completes.
        await until(accepted_row, "the approval_accepted row committed")
        os.kill(first.pid, signal.SIGKILL)
        await asyncio.to_thread(first.wait, 60)
        assert first.returncode == -signal.SIGKILL
    finally:
        stop_worker(first)
        if anchor.is_fifo():
            anchor.unlink()
            anchor.write_bytes(saved)

    # Temporal retries the audit activity once its start-to-close timeout (10 s) passes.
    with worker_process(stack, queue):
        status = await handle.result()
        assert (await sent)["verdict"] == "approve"
    assert status.status == "completed", status

    events = await history_of(handle)
    after_vote = events[[e.event_type for e in events].index(ACCEPTED) :]
    [audited] = [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in after_vote
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "audit.append"
    ][:1]
    attempts = {
        e.activity_task_started_event_attributes.attempt
        for e in after_vote
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id
        in {
            s.event_id
            for s in after_vote
            if s.activity_task_scheduled_event_attributes.activity_id == audited
        }
    }
    assert attempts and min(attempts) >= 2, attempts  # the row came from a retried activity

    kinds = await audit_kinds(stack, tenant, handle.id)
    assert kinds.count(("approval_accepted", "user:bob")) == 1, kinds
    effect = [k for k, _ in kinds].index("effect")
    assert kinds.index(("approval_accepted", "user:bob")) < effect, kinds
    verified = await stead(stack, "audit", "verify", "--tenant", tenant)
    assert verified.code == 0, verified
