"""The governed run end to end on the real stack: playbook → OPA → approval → effect → audit."""

from __future__ import annotations

import asyncpg
import pytest
from temporalio.client import WorkflowUpdateFailedError

from stead.audit.log import list_events, verify_chain
from stead.contracts.run import ApprovalInput, RunStatus
from stead.db.pool import create_pool, tenant_transaction
from stead.runs.store import add_group_member
from tests.conftest import WorkerHandle
from tests.runs import configure_tenant, new_tenant, playbook, start_run, wait_pending

PUT_GET = playbook(
    {"id": "put", "operation": "records.put", "args": {"key": "${inputs.key}", "value": {"n": 1}}},
    {
        "id": "get",
        "operation": "records.get",
        "args": {"key": {"$ref": "steps.put.output.key"}},
        "depends_on": ["put"],
    },
    inputs={"key": {"type": "string", "required": True}},
)


@pytest.fixture(scope="module")
async def pool(worker: WorkerHandle) -> asyncpg.Pool:
    pool = await create_pool(worker.settings.postgres_dsn, max_size=4)
    yield pool
    await pool.close()


async def writes(pool: asyncpg.Pool, tenant: str) -> int:
    async with tenant_transaction(pool, tenant) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM records_writes"))


async def test_playbook_run_completes_with_decisions_effects_and_a_valid_audit_chain(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=PUT_GET,
        inputs={"key": "k1"},
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert [s.status for s in status.steps] == ["succeeded", "succeeded"]
    assert status.steps[1].output == {"key": "k1", "value": {"n": 1}, "version": 1}
    assert all(s.decision is not None and s.decision.outcome == "allow" for s in status.steps)
    assert await writes(pool, tenant) == 1
    async with tenant_transaction(pool, tenant) as conn:
        kinds = [e.kind for e in await list_events(conn, tenant, handle.id)]
        chain = await verify_chain(conn, tenant)
    assert kinds.count("step_decision") == 2 and kinds.count("effect") == 2
    assert kinds[0] == "run_started" and "plan_decision" in kinds
    # The run's summary is remembered (with provenance) after its final record.
    assert kinds[-2:] == ["run_finished", "memory_written"]
    assert chain.ok


async def test_denied_step_never_executes_and_says_why(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, operations=["records.get", "core.echo"])
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "echo", "operation": "core.echo", "args": {"value": 1}},
            {
                "id": "put",
                "operation": "records.put",
                "args": {"key": "x", "value": {}},
                "depends_on": ["echo"],
            },
        ),
    )
    status = await handle.result()
    assert status.status == "denied"
    assert any("records.put" in r and "not allowed" in r for r in status.reasons)
    assert await writes(pool, tenant) == 0


async def test_plan_with_unknown_operation_is_rejected_before_any_step(
    worker: WorkerHandle,
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook({"id": "a", "operation": "mail.blast", "args": {}}),
    )
    status = await handle.result()
    assert status.status == "plan_rejected"
    assert any("mail.blast" in r for r in status.reasons)
    assert status.steps == ()


async def test_bad_arguments_are_refused_before_the_adapter(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "echo", "operation": "core.echo", "args": {"value": {"not": "a string"}}},
            {
                "id": "put",
                "operation": "records.put",
                "args": {"key": {"$ref": "steps.echo.output.value"}, "value": {}},
                "depends_on": ["echo"],
            },
        ),
    )
    status = await handle.result()
    assert status.status == "denied"
    assert status.steps[1].status == "denied"
    assert "fail its schema" in (status.steps[1].error or "")
    assert await writes(pool, tenant) == 0


async def _approval_run(worker: WorkerHandle, tenant: str, **config: object):  # type: ignore[no-untyped-def]
    await configure_tenant(worker.settings.opa_url, tenant, approval_risk="low", **config)
    return await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "put", "operation": "records.put", "args": {"key": "a", "value": {}}}
        ),
    )


async def test_approval_by_a_group_member_lets_the_step_run(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    async with tenant_transaction(pool, tenant) as conn:
        await add_group_member(conn, tenant, "group:approvers", "user:bob")
    handle = await _approval_run(worker, tenant, approvers=["group:approvers"])
    pending = await wait_pending(handle, "put")
    assert pending.eligible == ("user:bob",)
    assert await writes(pool, tenant) == 0
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id="put", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
        ),
    )
    status = await handle.result()
    assert status.status == "completed"
    assert status.steps[0].approvals[0].approver == "user:bob"
    assert await writes(pool, tenant) == 1


async def test_rejection_stops_the_step(worker: WorkerHandle, pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    handle = await _approval_run(worker, tenant, approvers=["user:bob"])
    pending = await wait_pending(handle, "put")
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id="put",
            plan_hash=pending.plan_hash,
            approver="user:bob",
            verdict="reject",
            comment="not today",
        ),
    )
    status = await handle.result()
    assert status.status == "failed"
    assert status.steps[0].status == "rejected"
    assert "not today" in (status.steps[0].error or "")
    assert await writes(pool, tenant) == 0


async def test_wrong_approver_self_approval_and_stale_plan_are_refused_and_audited(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    """Refusals that carry nothing dangerous are accepted into the handler, so each
    leaves an ``approval_refused`` row (a validator refusal would leave no trace)."""
    tenant = new_tenant()
    handle = await _approval_run(worker, tenant, approvers=["user:bob", "user:ann"])
    pending = await wait_pending(handle, "put")
    attempts = [
        (
            ApprovalInput(
                step_id="put", plan_hash=pending.plan_hash, approver="user:eve", verdict="approve"
            ),
            "not an approver",
        ),
        (
            ApprovalInput(
                step_id="put", plan_hash=pending.plan_hash, approver="user:ann", verdict="approve"
            ),
            "may not approve",
        ),
        (
            ApprovalInput(
                step_id="put", plan_hash="0" * 64, approver="user:bob", verdict="approve"
            ),
            "plan hash",
        ),
        (
            ApprovalInput(
                step_id="nope", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
            ),
            "not awaiting",
        ),
    ]
    for approval, message in attempts:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("approve", approval)
        assert message in str(refused.value.cause)
    async with tenant_transaction(pool, tenant) as conn:
        events = await list_events(conn, tenant, handle.id)
    refused_rows = [e for e in events if e.kind == "approval_refused"]
    assert [(e.actor, e.data["via"]) for e in refused_rows] == [
        ("user:eve", "update"),
        ("user:ann", "update"),
        ("user:bob", "update"),
        ("user:bob", "update"),
    ]
    for row, (_, message) in zip(refused_rows, attempts, strict=True):
        assert message in str(row.data["reason"])
    assert await writes(pool, tenant) == 0
    await handle.signal("cancel")
    assert (await handle.result()).status == "cancelled"


async def test_invalid_signal_approval_is_audited_as_refused(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    handle = await _approval_run(worker, tenant, approvers=["user:bob"])
    pending = await wait_pending(handle, "put")
    await handle.signal(
        "approve_signal",
        ApprovalInput(
            step_id="put", plan_hash=pending.plan_hash, approver="user:eve", verdict="approve"
        ),
    )
    await handle.signal(
        "approve_signal",
        ApprovalInput(
            step_id="put", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
        ),
    )
    status = await handle.result()
    assert status.status == "completed"
    async with tenant_transaction(pool, tenant) as conn:
        events = await list_events(conn, tenant, handle.id)
    refused = [e for e in events if e.kind == "approval_refused"]
    assert len(refused) == 1 and refused[0].actor == "user:eve"
    assert [e.actor for e in events if e.kind == "approval_accepted"] == ["user:bob"]


async def test_approval_timeout_escalates_then_rejects_by_default(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    handle = await _approval_run(
        worker,
        tenant,
        approvers=["user:bob"],
        approval_timeout_seconds=1,
        on_timeout="escalate",
        escalate_to=["user:carol"],
    )
    status: RunStatus = await handle.result()
    assert status.status == "failed"
    assert status.steps[0].status == "rejected"
    assert "timed out after escalation" in (status.steps[0].error or "")
    async with tenant_transaction(pool, tenant) as conn:
        kinds = [e.kind for e in await list_events(conn, tenant, handle.id)]
    assert "approval_escalated" in kinds and "approval_timed_out" in kinds
    assert await writes(pool, tenant) == 0


async def test_cancel_signal_stops_a_waiting_run(worker: WorkerHandle) -> None:
    tenant = new_tenant()
    handle = await _approval_run(worker, tenant, approvers=["user:bob"])
    await wait_pending(handle, "put")
    await handle.signal("cancel")
    status = await handle.result()
    assert status.status == "cancelled"
    assert status.steps[0].status == "cancelled"


@pytest.mark.parametrize(
    ("args", "actor", "attribution"),
    [
        ((), "unknown:unattributed-cancel", "unattributed"),
        (({"requested_by": 5},), "unknown:malformed-cancel", "malformed"),
        (({"requested_by": "user:carol", "reason": "typo"},), "user:carol", "claimed"),
    ],
    ids=["bare", "malformed", "attributed"],
)
async def test_a_cancel_signal_sent_directly_stops_the_run_and_is_audited_as_sent(
    worker: WorkerHandle, pool: asyncpg.Pool, args: tuple[object, ...], actor: str, attribution: str
) -> None:
    # A bare or malformed cancel still stops the run (stopping is the safe direction);
    # the audit says how far it was attributed instead of pretending to know who.
    tenant = new_tenant()
    handle = await _approval_run(worker, tenant, approvers=["user:bob"])
    await wait_pending(handle, "put")
    await handle.signal("cancel", args=args)
    status = await handle.result()
    assert status.status == "cancelled"
    assert status.reasons[0].startswith(f"cancelled by {actor}")
    async with tenant_transaction(pool, tenant) as conn:
        events = await list_events(conn, tenant, handle.id)
    [asked] = [e for e in events if e.kind == "cancel_requested"]
    assert asked.actor == actor and asked.data["attribution"] == attribution
    assert ("problem" in asked.data) == (attribution == "malformed")
    [finished] = [e for e in events if e.kind == "run_finished"]
    cancel = finished.data["cancel"]
    assert isinstance(cancel, dict) and cancel["requested_by"] == actor


async def test_express_lane_still_decides_ledgers_and_audits(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    from stead.contracts.run import RunOptions

    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "a", "operation": "core.echo", "args": {"value": 7}},
            {
                "id": "b",
                "operation": "core.echo",
                "args": {"value": {"$ref": "steps.a.output.value"}},
                "depends_on": ["a"],
            },
        ),
        options=RunOptions(express_reads=True),
    )
    status = await handle.result()
    assert status.status == "completed"
    assert [s.output for s in status.steps] == [{"value": 7}, {"value": 7}]
    history = await handle.fetch_history()
    scheduled = [
        e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
    ]
    names = {e.activity_task_scheduled_event_attributes.activity_type.name for e in scheduled}
    assert "adapter.execute" not in names and "policy.decide_step" not in names
    async with tenant_transaction(pool, tenant) as conn:
        kinds = [e.kind for e in await list_events(conn, tenant, handle.id)]
        ledgered = await conn.fetchval(
            "SELECT count(*) FROM effects WHERE workflow_id = $1", handle.id
        )
    assert kinds.count("step_decision") == 2 and kinds.count("effect") == 2
    assert ledgered == 2


async def test_express_lane_falls_back_to_approval_when_policy_asks(worker: WorkerHandle) -> None:
    from stead.contracts.run import RunOptions

    tenant = new_tenant()
    await configure_tenant(
        worker.settings.opa_url, tenant, approval_risk="low", approvers=["user:bob"]
    )
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook({"id": "a", "operation": "core.echo", "args": {"value": 1}}),
        options=RunOptions(express_reads=True),
    )
    pending = await wait_pending(handle, "a")
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id="a", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
        ),
    )
    status = await handle.result()
    assert status.status == "completed"
    assert status.steps[0].output == {"value": 1}
