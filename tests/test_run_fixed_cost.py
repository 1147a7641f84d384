"""A run's fixed cost: the start record and admission are one local activity, the plan
and its decision one activity, and search attributes are upserted only when a value
changes, while the run is recorded and admitted and its plan decided, recorded, audited
and failing closed exactly as before."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from stead.audit.log import list_events
from stead.db.pool import create_pool, tenant_transaction
from stead.devstack import opa as opa_stack
from stead.devstack.ports import free_port
from stead.devstack.proc import stop as stop_process
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import WorkerHandle
from tests.opa_auth import stack_tokens
from tests.peers import IdempotentApi, serve
from tests.runs import (
    configure_tenant,
    new_tenant,
    playbook,
    start_authenticated_run,
    start_run,
)
from tests.workers import worker_process

TWO_ECHOES = playbook(
    {"id": "a", "operation": "core.echo", "args": {"value": 1}},
    {"id": "b", "operation": "core.echo", "args": {"value": 2}, "depends_on": ["a"]},
)


@pytest.fixture(scope="module")
async def pool(stack: Settings) -> asyncpg.Pool:
    pool = await create_pool(stack.postgres_dsn, max_size=2)
    yield pool
    await pool.close()


def scheduled_activities(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def local_activities(history: WorkflowHistory) -> list[str]:
    """Local activities leave a marker each; its ``data`` detail names the activity type."""
    names = []
    for event in history.events:
        if not event.HasField("marker_recorded_event_attributes"):
            continue
        data = event.marker_recorded_event_attributes.details.get("data")
        if data is None or not data.payloads:
            continue
        name = json.loads(data.payloads[0].data).get("activity_type")
        if name:
            names.append(name)
    return names


def upserts(history: WorkflowHistory) -> list[dict[str, str]]:
    """Each search-attribute upsert in order, as {attribute: JSON value}."""
    found = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            continue
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        found.append({k: v.data.decode() for k, v in fields.indexed_fields.items()})
    return found


def patch_markers(history: WorkflowHistory) -> list[str]:
    return [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]


async def test_a_new_run_plans_and_decides_its_plan_in_one_recorded_audited_activity(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, egress=["127.0.0.1"])
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=TWO_ECHOES,
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    history = await handle.fetch_history()
    names = scheduled_activities(history)
    assert names.count("plan.create_decided") == 1
    assert "plan.create" not in names and "policy.decide_plan" not in names
    # The summary is local too, in the final record's workflow task (one marker Action).
    assert local_activities(history) == ["runs.open", "runs.record", "memory.remember_run_summary"]
    async with tenant_transaction(pool, tenant) as conn:
        decisions = await conn.fetch(
            "SELECT decision_id, outcome FROM decisions WHERE workflow_id = $1 AND kind = 'plan'",
            handle.id,
        )
        events = await list_events(conn, tenant, handle.id)
    assert [d["outcome"] for d in decisions] == ["allow"]
    kinds = [e.kind for e in events]
    assert kinds.count("run_started") == 1 and kinds.count("run_finished") == 1
    assert kinds.index("run_started") < kinds.index("plan_decision")
    audited = [e for e in events if e.kind == "plan_decision"]
    assert [e.data["decision_id"] for e in audited] == [decisions[0]["decision_id"]]


async def test_a_run_upserts_each_status_once_and_meets_one_patch(worker: WorkerHandle) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, egress=["127.0.0.1"])
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=TWO_ECHOES,
    )
    assert (await handle.result()).status == "completed"
    history = await handle.fetch_history()
    # Started without search attributes (as any client may): the first status upsert also
    # sets the tenant and pending=False; none repeats a value.
    found = [u for u in upserts(history) if "TemporalChangeVersion" not in u]
    statuses = [u["SteadStatus"] for u in found if "SteadStatus" in u]
    assert statuses == ['"planning"', '"running"', '"completed"']
    assert [u for u in found if "SteadPendingApproval" in u] == found[:1]
    # One patch marker (and its TemporalChangeVersion upsert, which Cloud does not bill):
    # the pre-release patches are retired, and each patch a run meets costs it an event
    # and a visibility write. ``fewer-actions`` is docs/workflow-changes.md's lifecycle.
    assert patch_markers(history) == ["fewer-actions"]
    assert [u for u in upserts(history) if "TemporalChangeVersion" in u] == [
        {"TemporalChangeVersion": '["fewer-actions"]'}
    ]
    described = await handle.describe()
    attributes = described.typed_search_attributes
    assert {p.key.name: p.value for p in attributes}.items() >= {
        "SteadTenant": tenant,
        "SteadStatus": "completed",
        "SteadPendingApproval": False,
    }.items()


async def test_opa_gone_when_the_plan_is_decided_fails_the_run_with_the_reason(
    stack: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    tenant = new_tenant()
    task_queue = f"fixed-{uuid.uuid4().hex[:8]}"
    binary = opa_stack.ensure_binary(stack.home, stack.opa_bin)
    port = free_port()
    record = opa_stack.start(tmp_path, binary, stack.policy_dir, port, tokens=stack_tokens(stack))
    own_opa = f"http://127.0.0.1:{port}"
    api = IdempotentApi()
    client = await connect(stack)
    try:
        await configure_tenant(own_opa, tenant, egress=["127.0.0.1"])
        with serve(api) as url, worker_process(stack, task_queue, STEAD_OPA_URL=own_opa):
            stop_process(record, sig=signal.SIGKILL)
            # OPA down means start tokens are required (fail closed): the starter proves
            # who it is, so the run gets as far as its plan decision.
            handle = await start_authenticated_run(
                client,
                task_queue,
                stack,
                tenant=tenant,
                principal="user:ann",
                playbook_source=playbook(
                    {
                        "id": "send",
                        "operation": "http.request",
                        "args": {"method": "POST", "url": f"{url}/x"},
                    }
                ),
            )
            status = await handle.result()
    finally:
        stop_process(record, sig=signal.SIGKILL)
    # Blocked, not denied: the same outcome as a step whose decision OPA could not give.
    assert status.status == "failed"
    assert status.reasons[0] == "policy_unavailable" and len(status.reasons) > 1
    assert status.plan is not None
    assert api.effects == []
    names = scheduled_activities(await handle.fetch_history())
    # Undecided by the combined activity, so the workflow asked (and retried) on its own.
    assert names.count("plan.create_decided") == 1
    assert names.count("policy.decide_plan") == 1
    assert "step.run" not in names and "adapter.execute" not in names
    async with tenant_transaction(pool, tenant) as conn:
        events = await list_events(conn, tenant, handle.id)
    assert [e.kind for e in events if e.kind in ("policy_blocked", "plan_decision")] == [
        "policy_blocked"
    ]
