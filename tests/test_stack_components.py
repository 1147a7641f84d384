"""Each embedded component is used for real: Postgres through the app role, OPA from
``policies/``, Temporal running a workflow with an activity, Qdrant upsert + filtered query."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from stead.contracts.hello import Greeting, GreetingRequest
from stead.settings import Settings
from stead.vector import EdgeVectorIndex, VectorPayload, VectorPoint
from tests.conftest import WorkerHandle
from tests.opa_auth import decision_headers


async def test_app_role_round_trips_rows_without_owning_tables(stack: Settings) -> None:
    conn = await asyncpg.connect(stack.postgres_dsn)
    try:
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)
            await conn.execute(
                "INSERT INTO tenants (id, display_name) VALUES ($1, $2)", tenant, "Acme"
            )
            assert (
                await conn.fetchval("SELECT display_name FROM tenants WHERE id = $1", tenant)
                == "Acme"
            )
        role = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert role["rolsuper"] is False and role["rolbypassrls"] is False
        owner = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'tenants'")
        assert owner != await conn.fetchval("SELECT current_user")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP TABLE tenants")
    finally:
        await conn.close()


async def test_migrations_are_tracked_once(stack: Settings) -> None:
    from stead.db.migrations import migrate

    assert stack.postgres_admin_dsn is not None
    again = await migrate(stack.postgres_admin_dsn, stack.postgres_dsn)
    assert again == []
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        versions = [
            r["version"] for r in await admin.fetch("SELECT version FROM schema_migrations")
        ]
    finally:
        await admin.close()
    assert "0001_directory" in versions
    assert len(versions) == len(set(versions))


async def test_opa_answers_from_the_policy_files(stack: Settings) -> None:
    async with httpx.AsyncClient(base_url=stack.opa_url, headers=decision_headers()) as client:
        health = await client.post("/v1/data/stead/system/health", json={"input": {}})
        assert health.json()["result"]["ok"] is True
        denied = await client.post(
            "/v1/data/stead/step/decision",
            json={"input": {"tenant": "nobody-configured", "principal": "user:eve"}},
        )
    decision = denied.json()["result"]
    assert decision["outcome"] == "deny"
    assert decision["reasons"]


async def test_temporal_runs_a_workflow_with_an_activity(worker: WorkerHandle) -> None:
    workflow_id = f"hello-{uuid.uuid4()}"
    result = await worker.client.execute_workflow(
        "stead.hello",
        GreetingRequest(name="Ada"),
        id=workflow_id,
        task_queue=worker.task_queue,
        result_type=Greeting,
    )
    assert result.message == "Hello, Ada!"
    history = await worker.client.get_workflow_handle(workflow_id).fetch_history()
    completed = [
        e for e in history.events if e.HasField("activity_task_completed_event_attributes")
    ]
    assert len(completed) == 1


async def test_qdrant_upsert_and_tenant_filtered_query(tmp_path: Path) -> None:
    # A shard of its own: the engine allows one opener per path, and a worker may hold the stack's.
    index = EdgeVectorIndex(tmp_path / "qdrant")
    try:
        await index.ensure_collection(dim=4)
        mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
        await index.upsert(
            [
                VectorPoint(id=mine, vector=[1, 0, 0, 0], payload=_payload("acme")),
                VectorPoint(id=theirs, vector=[1, 0, 0, 0], payload=_payload("globex")),
            ]
        )
        hits = await index.query("acme", [1, 0, 0, 0], k=10)
    finally:
        await index.close()
    assert [hit.id for hit in hits] == [mine]


def _payload(tenant: str) -> VectorPayload:
    return VectorPayload(
        tenant=tenant,
        namespace="notes",
        memory_id=str(uuid.uuid4()),
        version=1,
        sensitivity="internal",
        expires_at=None,
    )
