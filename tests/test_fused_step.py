"""``step.run``: a step policy allows at once is decided and executed in one activity,
and governed exactly as on the two-activity path (tests/test_run_workflow.py covers the
approval, deny and express paths it hands over to)."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import asyncpg
import pytest

from activities.memory import summary_text
from stead.audit.log import list_events, verify_chain
from stead.db.pool import create_pool, tenant_transaction
from stead.devstack import opa as opa_stack
from stead.devstack.ports import free_port
from stead.devstack.proc import stop as stop_process
from stead.memory.contracts import RunSummaryInput
from stead.memory.indexer import RUN_SUMMARIES, embedding_text
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import WorkerHandle
from tests.opa_auth import stack_tokens
from tests.peers import IdempotentApi, serve
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from tests.workers import (
    run_whose_worker_dies_after_the_effect,
    worker_process,
)

PUT_GET = playbook(
    {"id": "put", "operation": "records.put", "args": {"key": "k", "value": {"n": 1}}},
    {
        "id": "get",
        "operation": "records.get",
        "args": {"key": {"$ref": "steps.put.output.key"}},
        "depends_on": ["put"],
    },
)


@pytest.fixture(scope="module")
async def pool(stack: Settings) -> asyncpg.Pool:
    pool = await create_pool(stack.postgres_dsn, max_size=2)
    yield pool
    await pool.close()


async def test_an_allowed_step_is_one_activity_with_its_decision_token_ledger_and_audit(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, egress=["127.0.0.1"])
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=PUT_GET,
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert status.steps[1].output == {"key": "k", "value": {"n": 1}, "version": 1}
    history = await handle.fetch_history()
    names = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert names.count("step.run") == 2
    assert "policy.decide_step" not in names and "adapter.execute" not in names
    decided = {s.step_id: s.decision.decision_id for s in status.steps if s.decision}
    async with tenant_transaction(pool, tenant) as conn:
        recorded = await conn.fetch(
            "SELECT step_id, decision_id, outcome FROM decisions"
            " WHERE workflow_id = $1 AND kind = 'step'",
            handle.id,
        )
        spent = await conn.fetch(
            "SELECT step_id, decision_id FROM capability_uses WHERE workflow_id = $1", handle.id
        )
        ledger = await conn.fetch(
            "SELECT step_id, decision_id, status FROM effects WHERE workflow_id = $1", handle.id
        )
        events = await list_events(conn, tenant, handle.id)
        chain = await verify_chain(conn, tenant)
    assert {(r["step_id"], r["decision_id"], r["outcome"]) for r in recorded} == {
        (sid, did, "allow") for sid, did in decided.items()
    }
    assert {(r["step_id"], r["decision_id"]) for r in spent} == set(decided.items())
    assert {(r["step_id"], r["decision_id"], r["status"]) for r in ledger} == {
        (sid, did, "completed") for sid, did in decided.items()
    }
    per_step = [(e.step_id, e.kind) for e in events if e.step_id is not None]
    assert per_step == [
        ("put", "step_decision"),
        ("put", "effect"),
        ("get", "step_decision"),
        ("get", "effect"),
    ]
    assert chain.ok


async def test_opa_gone_when_a_step_is_decided_blocks_it_on_the_regular_path(
    stack: Settings, tmp_path: Path
) -> None:
    tenant = new_tenant()
    task_queue = f"fused-{uuid.uuid4().hex[:8]}"
    binary = opa_stack.ensure_binary(stack.home, stack.opa_bin)
    port = free_port()
    record = opa_stack.start(tmp_path, binary, stack.policy_dir, port, tokens=stack_tokens(stack))
    own_opa = f"http://127.0.0.1:{port}"
    api = IdempotentApi()
    # OPA dies during the first step's effect, after that step was decided.
    api.on_first_effect = lambda: stop_process(record, sig=signal.SIGKILL)
    client = await connect(stack)
    try:
        await configure_tenant(own_opa, tenant, egress=["127.0.0.1"])
        with serve(api) as url, worker_process(stack, task_queue, STEAD_OPA_URL=own_opa):
            handle = await start_run(
                client,
                task_queue,
                tenant=tenant,
                principal="user:ann",
                playbook_source=playbook(
                    {
                        "id": "send",
                        "operation": "http.request",
                        "args": {"method": "POST", "url": f"{url}/x"},
                    },
                    {
                        "id": "after",
                        "operation": "core.echo",
                        "args": {"value": 1},
                        "depends_on": ["send"],
                    },
                ),
            )
            status = await handle.result()
    finally:
        stop_process(record, sig=signal.SIGKILL)
    assert [s.status for s in status.steps] == ["succeeded", "blocked"]
    after = status.steps[1]
    assert after.decision is not None and after.decision.blocked == "policy_unavailable"
    assert after.output is None
    assert len(api.effects) == 1


async def test_a_retry_after_the_effect_keeps_the_allow_it_happened_under_though_policy_now_denies(
    stack: Settings, pool: asyncpg.Pool
) -> None:
    """The worker dies after the peer performed the effect; before the retry, the tenant
    loses the operation. The retried ``step.run`` must not decide again: the effect
    happened under the first allow, so the step succeeds with that decision, the
    reuse is audited, and the next step (decided fresh) shows policy really denies now."""
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, egress=["127.0.0.1"])
    api = IdempotentApi()
    client = await connect(stack)

    async def tighten() -> None:
        # Policy tightens while no worker runs: http.request is no longer allowed.
        await configure_tenant(
            stack.opa_url, tenant, operations=["records.*"], egress=["127.0.0.1"]
        )

    with serve(api) as url:
        handle, status = await run_whose_worker_dies_after_the_effect(
            stack,
            client,
            api,
            tenant=tenant,
            steps=[
                {
                    "id": "charge",
                    "operation": "http.request",
                    "args": {"method": "POST", "url": f"{url}/charges", "json": {"amount": 5}},
                    "timeout_seconds": 3,
                },
                {
                    "id": "again",
                    "operation": "http.request",
                    "args": {"method": "POST", "url": f"{url}/charges", "json": {"amount": 6}},
                    "depends_on": ["charge"],
                },
            ],
            while_down=tighten,
        )
    charge, again = status.steps
    assert (charge.status, again.status) == ("succeeded", "denied"), status.reasons
    assert len(api.effects) == 1 and api.effects[0]["key"] == f"{handle.id}/charge"
    assert charge.decision is not None and charge.decision.outcome == "allow"
    async with tenant_transaction(pool, tenant) as conn:
        decided = await conn.fetch(
            "SELECT decision_id, outcome FROM decisions"
            " WHERE workflow_id = $1 AND step_id = 'charge'",
            handle.id,
        )
        ledger = await conn.fetchrow(
            "SELECT decision_id, status, attempts FROM effects WHERE idempotency_key = $1",
            f"{handle.id}/charge",
        )
        events = await list_events(conn, tenant, handle.id)
        chain = await verify_chain(conn, tenant)
    assert [(r["decision_id"], r["outcome"]) for r in decided] == [
        (charge.decision.decision_id, "allow")
    ]
    assert ledger["decision_id"] == charge.decision.decision_id
    assert ledger["status"] == "completed" and ledger["attempts"] >= 2
    kinds = [e.kind for e in events if e.step_id == "charge"]
    assert kinds[:2] == ["step_decision", "decision_reused"], kinds
    assert kinds.count("decision_reused") == 1 and "step_decision" not in kinds[1:]
    reused = next(e for e in events if e.kind == "decision_reused")
    assert reused.data["decision_id"] == charge.decision.decision_id
    assert reused.data["attempt"] == 2
    assert chain.ok


def test_a_run_summary_embeds_its_headline_and_keeps_every_step_in_the_content() -> None:
    content = summary_text(
        RunSummaryInput(
            tenant="acme",
            principal="user:ann",
            workflow_id="run-acme-1",
            run_id="r1",
            status="failed",
            goal="Refund order 42",
            steps=(("look", "records.get", "succeeded"), ("pay", "http.request", "failed")),
            reasons=("step pay failed: 502",),
        )
    )
    headline = embedding_text(RUN_SUMMARIES, content)
    assert headline == (
        "Run ended failed.\nGoal: Refund order 42\n"
        "Steps: 1 failed, 1 succeeded\nReason: step pay failed: 502"
    )
    assert content.startswith(headline + "\n\n")
    assert "Run: run-acme-1\n" in content and "Step pay (http.request): failed" in content
    assert embedding_text("kb", "one\n\ntwo") == "one\n\ntwo"
