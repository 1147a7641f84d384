"""What a run costs in Temporal Cloud Actions, and that the cuts weakened nothing.

A run started as ``stead run`` starts it carries its search attributes on the start
request (free), sends one upsert per status change (the pending flag rides along) and
remembers its summary in a local activity beside its final record. Counted from the
real histories by ``stead.runs.actions``; the approval is still proven, decided again
and audited; and start attributes that lie are overwritten, so they gain nothing.
"""

from __future__ import annotations

import asyncpg
import pytest
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from stead.audit.log import list_events
from stead.cli.starts import start_governed
from stead.contracts.run import ApprovalInput, RunInput, RunRequest, RunStatus
from stead.contracts.search_attributes import SA_PENDING, SA_STATUS, SA_TENANT
from stead.db.pool import create_pool, tenant_transaction
from stead.runs.actions import count_actions
from tests.conftest import WorkerHandle
from tests.record_histories import scheduled, upserted
from tests.runs import configure_tenant, new_tenant, playbook, wait_pending

# Workflow tasks that record markers (each one Action): runs.open with the patch marker,
# then runs.record with the run summary. One more when the SDK records a local
# activity's marker in the next task: when the local activity outlasts its task (the
# SDK heartbeats the task), or, as a fresh clone showed, when Core completed the first
# task (patch marker, search attributes) before runs.open resolved.
MARKER_TASKS = (2, 3)
# An approved run has one more: the vote's task records the `vote-after-audit` patch
# marker (a fresh clone counted 4: that one and a local activity's marker in its own
# task; 3 before).
APPROVED_MARKER_TASKS = tuple(n + 1 for n in MARKER_TASKS)

ECHO = playbook({"id": "echo", "operation": "core.echo", "args": {"value": 1}})
PUT = playbook({"id": "put", "operation": "records.put", "args": {"key": "a", "value": {}}})


@pytest.fixture(scope="module")
async def pool(worker: WorkerHandle) -> asyncpg.Pool:
    pool = await create_pool(worker.settings.postgres_dsn, max_size=2)
    yield pool
    await pool.close()


async def test_an_allowed_one_step_run_started_like_stead_run_costs_seven_actions(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    request = RunRequest(tenant=tenant, principal="user:ann", playbook_source=ECHO)
    handle = await start_governed(worker.client, worker.task_queue, request, None)
    assert (await handle.result()).status == "completed"
    history = await handle.fetch_history()
    # Tenant, "planning" and not pending came with the start: no upsert repeats them.
    assert upserted(history) == [{"SteadStatus": '"running"'}, {"SteadStatus": '"completed"'}]
    assert await scheduled(handle) == ["plan.create_decided", "step.run"]
    counted = count_actions([history])
    assert counted.by_kind.get("marker_task") in MARKER_TASKS, counted
    assert counted.by_kind == {
        "workflow_started": 1,
        "activity_attempt": 2,  # the decided plan, the step
        # runs.open (+ the patch); runs.record + the summary (see MARKER_TASKS)
        "marker_task": counted.by_kind.get("marker_task"),
        "search_attribute_upsert": 2,
    }
    # The summary is still remembered, with its audit row, after the final record.
    async with tenant_transaction(pool, tenant) as conn:
        kinds = [e.kind for e in await list_events(conn, tenant, handle.id)]
    assert kinds[-2:] == ["run_finished", "memory_written"]


async def test_an_approved_step_sends_status_and_pending_flag_in_one_upsert_each(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(
        worker.settings.opa_url, tenant, approval_risk="low", approvers=["user:bob"]
    )
    request = RunRequest(tenant=tenant, principal="user:ann", playbook_source=PUT)
    handle = await start_governed(worker.client, worker.task_queue, request, None)
    pending = await wait_pending(handle, "put")
    listed = (await handle.describe()).typed_search_attributes
    assert (listed.get(SA_STATUS), listed.get(SA_PENDING)) == ("awaiting_approval", True)
    vote = ApprovalInput(
        step_id="put", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
    )
    await handle.execute_update("approve", vote)
    status = await handle.result()
    assert status.status == "completed"
    history = await handle.fetch_history()
    assert upserted(history) == [
        {"SteadStatus": '"running"'},
        {"SteadStatus": '"awaiting_approval"', "SteadPendingApproval": "true"},
        {"SteadStatus": '"running"', "SteadPendingApproval": "false"},
        {"SteadStatus": '"completed"'},
    ]
    counted = count_actions([history])
    markers = counted.by_kind.get("marker_task", 0)
    assert markers in APPROVED_MARKER_TASKS, counted
    assert counted.total - markers == 13, counted  # 16 Actions with three marker tasks
    # Governance as strong as before: the vote is audited, and the step ran only after
    # policy decided it again with the approval in its input.
    async with tenant_transaction(pool, tenant) as conn:
        events = await list_events(conn, tenant, handle.id)
        outcomes = await conn.fetch(
            "SELECT outcome FROM decisions WHERE workflow_id = $1 AND kind = 'step' "
            "ORDER BY evaluated_at",
            handle.id,
        )
    kinds = [e.kind for e in events]
    assert kinds.index("approval_accepted") < kinds.index("effect")
    assert [r["outcome"] for r in outcomes] == ["approve", "allow"]
    assert status.steps[0].approvals[0].approver == "user:bob"


async def test_start_attributes_that_lie_are_overwritten_in_the_first_task(
    worker: WorkerHandle,
) -> None:
    """From the attacker's side: anyone who can start workflows can set any search
    attribute at start. The run compares them with its own request and rewrites each
    one that differs, so it is listed under its own tenant and real status, never as a
    victim tenant's run, a finished run or one waiting on a human."""
    victim, tenant = new_tenant(), new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    forged = TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT, victim),
            SearchAttributePair(SA_STATUS, "completed"),
            SearchAttributePair(SA_PENDING, True),
        ]
    )
    request = RunRequest(tenant=tenant, principal="user:ann", playbook_source=ECHO)
    handle = await worker.client.start_workflow(
        "stead.run",
        RunInput(request=request),
        id=f"run-{tenant}-forged",
        task_queue=worker.task_queue,
        result_type=RunStatus,
        search_attributes=forged,
    )
    assert (await handle.result()).status == "completed"
    history = await handle.fetch_history()
    assert upserted(history)[0] == {
        "SteadTenant": f'"{tenant}"',
        "SteadStatus": '"planning"',
        "SteadPendingApproval": "false",
    }
    listed = (await handle.describe()).typed_search_attributes
    assert (listed.get(SA_TENANT), listed.get(SA_STATUS), listed.get(SA_PENDING)) == (
        tenant,
        "completed",
        False,
    )
