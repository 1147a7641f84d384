"""Tenants cannot read or write each other's runs, decisions, audit records, effects or
groups: row-level security binds the app role even when a query names the other tenant.
Also the run store's own idempotency, since every write it makes is retried by Temporal."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio

from stead.audit import AuditEvent, append_event, list_events
from stead.contracts.run import ApprovalPolicy, Decision
from stead.db.pool import create_pool, tenant_transaction
from stead.ledger import LedgerConflict, begin
from stead.runs import (
    DecisionIdTaken,
    RunNotRecorded,
    add_group_member,
    get_run,
    group_members,
    list_decisions,
    list_runs,
    record_decision,
    record_run_started,
    record_run_status,
)
from stead.settings import Settings

TABLES = ("runs", "decisions", "audit_events", "effects", "group_members")

# One row per table written for tenant $1 (the victim), attempted from another tenant.
FOREIGN_INSERTS = {
    "runs": "INSERT INTO runs (workflow_id, tenant, principal, status)"
    " VALUES ('wf-' || $1, $1, 'user:eve', 'running')",
    "decisions": "INSERT INTO decisions (decision_id, tenant, workflow_id, kind, outcome,"
    " input_hash) VALUES ('d-' || $1, $1, 'wf', 'plan', 'allow', 'h')",
    "audit_events": "INSERT INTO audit_events (tenant, seq, kind, actor, data, prev_hash, hash)"
    " VALUES ($1, 1000, 'forged', 'user:eve', '{}', 'x', 'y')",
    "effects": "INSERT INTO effects (idempotency_key, tenant, workflow_id, step_id, operation,"
    " args_hash, status) VALUES ('k-' || $1, $1, 'wf', 's', 'email.send', 'h', 'completed')",
    "group_members": "INSERT INTO group_members (tenant, group_name, principal)"
    " VALUES ($1, 'approvers', 'user:eve')",
}


@dataclass(frozen=True)
class Seeded:
    tenant: str
    workflow_id: str
    decision_id: str
    effect_key: str


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=5)
    try:
        yield pool
    finally:
        await pool.close()


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def allow(decision_id: str) -> Decision:
    return Decision(decision_id=decision_id, outcome="allow", reasons=("ok",))


async def seed(pool: asyncpg.Pool, tenant: str) -> Seeded:
    """One row in every tenant-scoped table, written through the store functions."""
    workflow_id = f"wf-{uuid.uuid4().hex[:10]}"
    decision_id = f"d-{uuid.uuid4().hex[:10]}"
    key = f"{workflow_id}/send"
    async with tenant_transaction(pool, tenant) as conn:
        await record_run_started(
            conn,
            tenant=tenant,
            workflow_id=workflow_id,
            principal="user:alice",
            goal="send the weekly report",
            playbook=None,
            labels={"team": "ops"},
        )
        await record_decision(
            conn,
            tenant=tenant,
            workflow_id=workflow_id,
            step_id="send",
            kind="step",
            decision=allow(decision_id),
            input_hash="h" * 64,
            eval_ms=1.5,
        )
        await append_event(
            conn,
            AuditEvent(
                tenant=tenant,
                workflow_id=workflow_id,
                kind="run_started",
                actor="user:alice",
                data={"secret": "tenant A only"},
            ),
        )
        await add_group_member(conn, tenant, "group:approvers", "user:alice")
        await begin(
            conn,
            tenant=tenant,
            key=key,
            workflow_id=workflow_id,
            step_id="send",
            operation="email.send",
            args_hash="a" * 64,
            decision_id=decision_id,
        )
    return Seeded(tenant, workflow_id, decision_id, key)


@pytest_asyncio.fixture(scope="module")
async def tenant_a(pool: asyncpg.Pool) -> Seeded:
    return await seed(pool, new_tenant())


async def admin_count(stack: Settings, table: str, tenant: str) -> int:
    assert stack.postgres_admin_dsn is not None
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        count = await admin.fetchval(f"SELECT count(*) FROM {table} WHERE tenant = $1", tenant)
    finally:
        await admin.close()
    return int(count)


@pytest.mark.parametrize("table", TABLES)
async def test_other_tenant_sees_nothing_even_when_naming_the_tenant(
    pool: asyncpg.Pool, stack: Settings, tenant_a: Seeded, table: str
) -> None:
    assert await admin_count(stack, table, tenant_a.tenant) >= 1  # the rows do exist
    async with tenant_transaction(pool, new_tenant()) as conn:
        rows = await conn.fetch(f"SELECT * FROM {table} WHERE tenant = $1", tenant_a.tenant)
    assert rows == []


@pytest.mark.parametrize("table", TABLES)
async def test_other_tenant_cannot_insert_rows_for_the_tenant(
    pool: asyncpg.Pool, stack: Settings, tenant_a: Seeded, table: str
) -> None:
    before = await admin_count(stack, table, tenant_a.tenant)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(pool, new_tenant()) as conn:
            await conn.execute(FOREIGN_INSERTS[table], tenant_a.tenant)
    assert await admin_count(stack, table, tenant_a.tenant) == before


@pytest.mark.parametrize("table", TABLES)
async def test_queries_outside_a_tenant_transaction_see_no_rows(
    pool: asyncpg.Pool, stack: Settings, tenant_a: Seeded, table: str
) -> None:
    assert await admin_count(stack, table, tenant_a.tenant) >= 1
    async with pool.acquire() as conn:
        # Use the connection for a tenant first: the setting must not outlive it.
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant_a.tenant)
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") >= 1
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_other_tenant_cannot_update_or_delete_the_tenants_rows(
    pool: asyncpg.Pool, stack: Settings, tenant_a: Seeded
) -> None:
    async with tenant_transaction(pool, new_tenant()) as conn:
        updated = await conn.execute(
            "UPDATE runs SET status = 'cancelled' WHERE tenant = $1", tenant_a.tenant
        )
        deleted = await conn.execute("DELETE FROM group_members WHERE tenant = $1", tenant_a.tenant)
    assert (updated, deleted) == ("UPDATE 0", "DELETE 0")
    assert await admin_count(stack, "group_members", tenant_a.tenant) >= 1


async def test_store_functions_are_blind_to_other_tenants(
    pool: asyncpg.Pool, tenant_a: Seeded
) -> None:
    other = new_tenant()
    async with tenant_transaction(pool, other) as conn:
        assert await get_run(conn, tenant_a.workflow_id) is None
        assert await list_runs(conn, tenant_a.tenant) == []
        assert await list_decisions(conn, tenant_a.tenant, tenant_a.workflow_id) == []
        assert await list_events(conn, tenant_a.tenant) == []
        assert await group_members(conn, tenant_a.tenant, ["group:approvers"]) == {
            "group:approvers": []
        }
        first = await append_event(conn, AuditEvent(tenant=other, kind="k", actor="user:bob"))
    assert first.seq == 1  # each tenant has its own chain


async def test_other_tenant_cannot_take_over_a_workflow_id_key_or_decision_id(
    pool: asyncpg.Pool, stack: Settings, tenant_a: Seeded
) -> None:
    other = new_tenant()
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(pool, other) as conn:
            await record_run_started(
                conn,
                tenant=other,
                workflow_id=tenant_a.workflow_id,
                principal="user:eve",
                goal="hijack",
                playbook=None,
                labels={},
            )
    with pytest.raises(RunNotRecorded):
        async with tenant_transaction(pool, other) as conn:
            await record_run_status(
                conn, tenant=other, workflow_id=tenant_a.workflow_id, status="cancelled"
            )
    with pytest.raises(LedgerConflict, match="outside tenant"):
        async with tenant_transaction(pool, other) as conn:
            await begin(
                conn,
                tenant=other,
                key=tenant_a.effect_key,
                workflow_id=tenant_a.workflow_id,
                step_id="send",
                operation="email.send",
                args_hash="a" * 64,
                decision_id=None,
            )
    with pytest.raises(DecisionIdTaken):
        async with tenant_transaction(pool, other) as conn:
            await record_decision(
                conn,
                tenant=other,
                workflow_id="wf-x",
                step_id=None,
                kind="plan",
                decision=allow(tenant_a.decision_id),
                input_hash="h",
                eval_ms=None,
            )
    async with tenant_transaction(pool, tenant_a.tenant) as conn:
        run = await get_run(conn, tenant_a.workflow_id)
    assert run is not None and (run.principal, run.status) == ("user:alice", "planning")


async def test_run_record_upserts_and_status_updates_are_idempotent(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    seeded = await seed(pool, tenant)
    wf = seeded.workflow_id
    async with tenant_transaction(pool, tenant) as conn:
        await record_run_status(
            conn, tenant=tenant, workflow_id=wf, status="running", plan_hash="p1", tokens=10
        )
        # A retried start must not reset progress.
        await record_run_started(
            conn,
            tenant=tenant,
            workflow_id=wf,
            principal="user:alice",
            goal="send the weekly report",
            playbook=None,
            labels={"team": "ops"},
        )
        await record_run_status(
            conn,
            tenant=tenant,
            workflow_id=wf,
            status="completed",
            tokens=25,
            cost_usd=0.125,
            minutes_saved=12.5,
            summary={"steps": 3},
            finished=True,
        )
        done = await get_run(conn, wf)
        await record_run_status(
            conn, tenant=tenant, workflow_id=wf, status="completed", finished=True
        )
        again = await get_run(conn, wf)
        completed = await list_runs(conn, tenant, status="completed")
        running = await list_runs(conn, tenant, status="running")

    assert done is not None and again is not None
    assert (done.status, done.plan_hash, done.tokens) == ("completed", "p1", 25)
    assert (done.cost_usd, done.minutes_saved) == (0.125, 12.5)
    assert done.summary == {"steps": 3} and done.labels == {"team": "ops"}
    assert done.finished_at is not None and again.finished_at == done.finished_at
    assert [r.workflow_id for r in completed] == [wf] and running == []


async def test_decisions_are_stored_once_with_their_approval_policy(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    decision = Decision(
        decision_id=f"d-{uuid.uuid4().hex[:8]}",
        outcome="approve",
        reasons=("high risk", "external recipient"),
        approval=ApprovalPolicy(approvers=("group:finance",), eligible=("user:carol",)),
        policy_revision="rev-7",
    )
    async with tenant_transaction(pool, tenant) as conn:
        for _ in range(2):
            await record_decision(
                conn,
                tenant=tenant,
                workflow_id=wf,
                step_id="pay",
                kind="step",
                decision=decision,
                input_hash="i" * 64,
                eval_ms=3.25,
            )
        stored = await list_decisions(conn, tenant, wf)

    assert len(stored) == 1
    assert stored[0].decision == decision
    assert (stored[0].step_id, stored[0].kind, stored[0].eval_ms) == ("pay", "step", 3.25)


async def test_group_members_expand_prefixed_and_bare_names(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    async with tenant_transaction(pool, tenant) as conn:
        await add_group_member(conn, tenant, "group:finance", "user:carol")
        await add_group_member(conn, tenant, "finance", "user:bob")
        await add_group_member(conn, tenant, "group:finance", "user:bob")
        members = await group_members(conn, tenant, ["group:finance", "finance", "group:none"])

    assert members == {
        "group:finance": ["user:bob", "user:carol"],
        "finance": ["user:bob", "user:carol"],
        "group:none": [],
    }
