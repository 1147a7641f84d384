"""The identity directory through `stead tenant …` / `stead principal …`, and who may start a run.

The CLI runs in process against the real Postgres of the session stack; run admission
is checked on real runs: a managed tenant admits only its enabled principals, an
unmanaged tenant (no directory row) admits whoever the client names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import pytest_asyncio
from typer import Typer
from typer.testing import CliRunner

from stead.audit.log import list_events
from stead.cli.identity import keys_app, principal_app, tenant_app
from stead.db.pool import create_pool, tenant_transaction
from stead.identity.tokens import read_claims
from stead.keys import IDENTITY, key_store
from stead.settings import Settings
from tests.conftest import WorkerHandle
from tests.runs import configure_tenant, new_tenant, playbook, start_run

T = TypeVar("T")
PUT = playbook({"id": "put", "operation": "records.put", "args": {"key": "a", "value": {}}})


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, max_size=2)
    yield pool
    await pool.close()


def cli(stack: Settings, app: Typer, *args: str) -> Any:
    """Invoke a sub-app with --json and return the parsed output; fail on a non-zero exit."""
    result = CliRunner().invoke(app, [*args, "--json"], env={"STEAD_HOME": str(stack.home)})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def cli_fails(stack: Settings, app: Typer, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"STEAD_HOME": str(stack.home)})
    assert result.exit_code == 1, result.output
    return result.output


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """The CLI runs its own event loop (asyncio.run), so async tests call it off this one."""
    return await asyncio.to_thread(fn, *args)


def managed_tenant(stack: Settings, *principals: str) -> str:
    tenant = new_tenant()
    cli(stack, tenant_app, "create", tenant, "--name", "Test tenant")
    for principal in principals:
        cli(stack, principal_app, "add", principal, "--tenant", tenant)
    return tenant


def test_tenants_and_principals_are_administered_from_the_cli(stack: Settings) -> None:
    tenant = managed_tenant(stack, "user:alice", "agent:triage")
    assert tenant in [t["id"] for t in cli(stack, tenant_app, "list")]
    cli(stack, principal_app, "join", "user:alice", "group:approvers", "--tenant", tenant)
    cli(stack, principal_app, "join", "user:alice", "oncall", "--tenant", tenant)
    listed = {p["id"]: p for p in cli(stack, principal_app, "list", "--tenant", tenant)}
    assert listed["user:alice"]["groups"] == ["group:approvers", "group:oncall"]
    assert listed["user:alice"]["kind"] == "user" and listed["agent:triage"]["kind"] == "agent"
    disabled = cli(stack, principal_app, "disable", "agent:triage", "--tenant", tenant)
    assert disabled["disabled"] is True and disabled["tokens_not_before"] is not None
    left = cli(stack, principal_app, "leave", "user:alice", "oncall", "--tenant", tenant)
    assert left["groups"] == ["group:approvers"]


def test_directory_mistakes_are_one_clear_line(stack: Settings) -> None:
    tenant = managed_tenant(stack, "user:alice")
    assert "already exists" in cli_fails(stack, tenant_app, "create", tenant)
    assert "already a principal" in cli_fails(
        stack, principal_app, "add", "user:alice", "--tenant", tenant
    )
    assert "not a principal id" in cli_fails(
        stack, principal_app, "add", "group:ops", "--tenant", tenant
    )
    assert "not in the directory" in cli_fails(
        stack, principal_app, "list", "--tenant", new_tenant()
    )
    assert "stead principal add" in cli_fails(
        stack, principal_app, "join", "user:bob", "approvers", "--tenant", tenant
    )


def test_principal_token_names_tenant_principal_and_expiry(stack: Settings) -> None:
    tenant = managed_tenant(stack, "user:alice")
    issued = cli(stack, principal_app, "token", "user:alice", "--tenant", tenant, "--ttl", "30m")
    public = key_store(stack).public(IDENTITY)
    assert public is not None
    claims = read_claims(issued["token"], public)
    assert (claims.tenant, claims.principal) == (tenant, "user:alice")
    assert (claims.expires_at - claims.issued_at).total_seconds() == 1800
    cli(stack, principal_app, "disable", "user:alice", "--tenant", tenant)
    assert "disabled" in cli_fails(stack, principal_app, "token", "user:alice", "--tenant", tenant)
    assert "not a principal" in cli_fails(
        stack, principal_app, "token", "user:zed", "--tenant", tenant
    )


def test_keys_show_prints_public_keys_only(stack: Settings) -> None:
    cli(stack, keys_app, "init")  # the test must not depend on another creating them first
    report = cli(stack, keys_app, "show")
    assert set(report) == {"capability", "identity", "integrity", "audit"}
    pairs = [report["capability"], report["identity"]]
    assert all(info["public_key"].startswith("ed25519/") for info in pairs)
    assert "private" not in json.dumps([info["public_key"] for info in pairs])
    # Symmetric secrets have no public half: only where they are is shown, never a value.
    shown = json.dumps(report)
    for name in ("integrity", "audit"):
        assert report[name]["public_key"] is None
        value = Path(report[name]["private_file"]).read_text().strip()
        assert value and value not in shown


async def test_principals_are_invisible_across_tenants(stack: Settings, pool: asyncpg.Pool) -> None:
    tenant = await in_thread(managed_tenant, stack, "user:alice")
    other = await in_thread(managed_tenant, stack)
    async with tenant_transaction(pool, other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM principals WHERE tenant = $1", tenant) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO principals (tenant, id, kind) VALUES ($1, 'user:eve', 'user')", tenant
            )


async def _run(worker: WorkerHandle, tenant: str, principal: str):  # type: ignore[no-untyped-def]
    await configure_tenant(worker.settings.opa_url, tenant)
    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal=principal, playbook_source=PUT
    )
    return handle, await handle.result()


async def test_a_managed_tenant_refuses_runs_from_strangers(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = await in_thread(managed_tenant, worker.settings, "user:alice")
    handle, status = await _run(worker, tenant, "user:mallory")
    assert status.status == "denied"
    assert "user:mallory is not a principal of tenant" in status.reasons[0]
    assert status.plan is None and status.steps == ()
    async with tenant_transaction(pool, tenant) as conn:
        events = await list_events(conn, tenant, handle.id)
        recorded = await conn.fetchrow(
            "SELECT principal, status FROM runs WHERE workflow_id = $1", handle.id
        )
    # Refused at the door, the run writes no memory: an unproven starter's goal text
    # must not reach the tenant's memory, where a later planner would recall it.
    assert [e.kind for e in events] == ["run_started", "run_refused", "run_finished"]
    assert events[1].actor == "user:mallory"
    assert dict(recorded) == {"principal": "user:mallory", "status": "denied"}


async def test_a_disabled_principal_cannot_start_runs(worker: WorkerHandle) -> None:
    tenant = await in_thread(managed_tenant, worker.settings, "user:alice")
    await in_thread(
        cli, worker.settings, principal_app, "disable", "user:alice", "--tenant", tenant
    )
    _, status = await _run(worker, tenant, "user:alice")
    assert status.status == "denied"
    assert "disabled" in status.reasons[0]


async def test_an_enabled_principal_of_a_managed_tenant_runs(worker: WorkerHandle) -> None:
    tenant = await in_thread(managed_tenant, worker.settings, "user:alice")
    _, status = await _run(worker, tenant, "user:alice")
    assert status.status == "completed", status.reasons


async def test_an_unmanaged_tenant_admits_the_named_starter(worker: WorkerHandle) -> None:
    _, status = await _run(worker, new_tenant(), "user:anyone")
    assert status.status == "completed", status.reasons
