"""Capabilities at the execution boundary, end to end on the real stack.

Each test runs a governed run on a worker whose capability issuer misbehaves the way a
compromised or confused path would (a tampered token, an expired one, one replayed
from another step, one minted for other arguments, one signed by a stranger). The
boundary must refuse before any adapter runs, fail the step, and audit
``capability_refused``. The last tests show the honest paths: inline minting leaves no
token in workflow history, and an edge worker holding only the public key runs its
step from a grant the authority minted ahead.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from biscuit_auth import KeyPair
from temporalio import activity
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Worker

from activities.execution import ExecutionActivities
from activities.policy import PolicyActivities
from activities.step import StepActivities
from stead.audit.log import AuditRecord, list_events
from stead.capability import CapabilityAuthority, CapabilityIssuer, CapabilityScope
from stead.capability.authority import utcnow
from stead.contracts.run import RunStatus, sha256_hex
from stead.db.pool import create_pool, tenant_transaction
from stead.keys import AUDIT, CAPABILITY, key_store
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import settings_for
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from tests.test_capability_tokens import flip_a_byte
from workers.main import build_worker, open_resources
from workflows.run import RunWorkflow

PUT = playbook({"id": "put", "operation": "records.put", "args": {"key": "a", "value": {"n": 1}}})
PUT_TWICE = playbook(
    {"id": "first", "operation": "records.put", "args": {"key": "a", "value": {"n": 1}}},
    {
        "id": "second",
        "operation": "records.put",
        "args": {"key": "b", "value": {"n": 2}},
        "depends_on": ["first"],
    },
)

IssuerFactory = Callable[[CapabilityAuthority], CapabilityIssuer]


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, max_size=3)
    yield pool
    await pool.close()


class Recording:
    """The real authority, remembering every token it handed out."""

    def __init__(self, authority: CapabilityAuthority) -> None:
        self.authority = authority
        self.tokens: list[str] = []

    async def issue(self, scope: CapabilityScope) -> str:
        token = await self.authority.issue(scope)
        self.tokens.append(token)
        return token


class Tampering(Recording):
    async def issue(self, scope: CapabilityScope) -> str:
        return flip_a_byte(await super().issue(scope))


class Replaying(Recording):
    """Hands every later step the token minted for the first one."""

    async def issue(self, scope: CapabilityScope) -> str:
        await super().issue(scope)
        return self.tokens[0]


class OtherArguments(Recording):
    """Mints (against the step's real allow) for arguments the step is not running with."""

    async def issue(self, scope: CapabilityScope) -> str:
        swapped = scope.model_copy(
            update={"args_hash": sha256_hex({"key": "a", "value": {"evil": 1}})}
        )
        return await super().issue(swapped)


def expired(authority: CapabilityAuthority) -> CapabilityIssuer:
    private = authority._key  # the real key, with a clock ten minutes behind
    return CapabilityAuthority(
        private, authority._pool, clock=lambda: utcnow() - timedelta(minutes=10)
    )


def forged(authority: CapabilityAuthority) -> CapabilityIssuer:
    return CapabilityAuthority(KeyPair().private_key, authority._pool)


def _name(fn: Callable[..., object]) -> str | None:
    defn = activity._Definition.from_callable(fn)
    return None if defn is None else defn.name


@asynccontextmanager
async def worker_with(
    stack: Settings, make_issuer: IssuerFactory
) -> AsyncIterator[tuple[Client, str, CapabilityIssuer]]:
    """A worker whose executions (``adapter.execute`` and the fused ``step.run``) get their
    tokens from ``make_issuer(real authority)``."""
    task_queue = f"cap-{uuid.uuid4().hex[:10]}"
    client = await connect(stack)
    async with open_resources(stack) as resources:
        assert resources.trust.authority is not None
        issuer = make_issuer(resources.trust.authority)
        execution = ExecutionActivities(
            resources.catalog,
            resources.pool,
            resources.adapters,
            issuer=issuer,
            verifier=resources.trust.capabilities,
        )
        policy = PolicyActivities(resources.opa, resources.pool, resources.catalog)
        step = StepActivities(resources.pool, policy, execution)
        replaced = ("adapter.execute", "step.run")
        activities = [a for a in resources.activities() if _name(a) not in replaced]
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[RunWorkflow],
            activities=[*activities, execution.execute, step.run],
            graceful_shutdown_timeout=timedelta(seconds=5),
        ):
            yield client, task_queue, issuer


def raw_history(history: WorkflowHistory) -> bytes:
    """Every event as stored, payload bytes included (the JSON form base64-encodes them)."""
    return b"".join(event.SerializeToString() for event in history.events)


async def writes(pool: asyncpg.Pool, tenant: str) -> int:
    async with tenant_transaction(pool, tenant) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM records_writes"))


async def events(pool: asyncpg.Pool, tenant: str, workflow_id: str, kind: str) -> list[AuditRecord]:
    async with tenant_transaction(pool, tenant) as conn:
        return [e for e in await list_events(conn, tenant, workflow_id) if e.kind == kind]


async def run_with(
    stack: Settings, make_issuer: IssuerFactory, source: str
) -> tuple[str, str, RunStatus]:
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant)
    async with worker_with(stack, make_issuer) as (client, task_queue, _):
        handle = await start_run(
            client, task_queue, tenant=tenant, principal="user:ann", playbook_source=source
        )
        return tenant, handle.id, await handle.result()


@pytest.mark.parametrize(
    ("make_issuer", "reason"),
    [
        (Tampering, "invalid"),
        (expired, "expired"),
        (OtherArguments, "mismatch"),
        (forged, "invalid"),
    ],
    ids=["tampered", "expired", "changed-args", "forged"],
)
async def test_a_bad_capability_is_refused_audited_and_never_reaches_the_adapter(
    stack: Settings, pool: asyncpg.Pool, make_issuer: IssuerFactory, reason: str
) -> None:
    tenant, workflow_id, status = await run_with(stack, make_issuer, PUT)
    assert status.status == "failed"
    assert status.steps[0].status == "failed"
    assert f"capability refused ({reason})" in (status.steps[0].error or "")
    assert await writes(pool, tenant) == 0
    refused = await events(pool, tenant, workflow_id, "capability_refused")
    assert len(refused) == 1, "a refusal is not retried, and is audited once"
    assert refused[0].step_id == "put" and refused[0].data["reason"] == reason
    assert await events(pool, tenant, workflow_id, "effect") == []


async def test_a_refused_capability_never_loses_the_decision_it_was_refused_under(
    stack: Settings, pool: asyncpg.Pool
) -> None:
    """The fused step records its decision and admits the effect in one transaction; a
    refusal rolls that transaction back, and the decision is recorded on its own before
    the refusal is audited. Read as the app role: the allow is there once, its audit
    event precedes the refusal, and nothing was spent or begun under it."""
    tenant, workflow_id, status = await run_with(stack, forged, PUT)
    assert status.status == "failed"
    async with tenant_transaction(pool, tenant) as conn:
        decisions = await conn.fetch(
            "SELECT decision_id, outcome, blocked FROM decisions"
            " WHERE workflow_id = $1 AND kind = 'step' AND step_id = 'put'",
            workflow_id,
        )
        spent = await conn.fetchval(
            "SELECT count(*) FROM capability_uses WHERE workflow_id = $1", workflow_id
        )
        begun = await conn.fetchval(
            "SELECT count(*) FROM effects WHERE workflow_id = $1", workflow_id
        )
        trail = [e for e in await list_events(conn, tenant, workflow_id) if e.step_id == "put"]
    assert [(r["outcome"], r["blocked"]) for r in decisions] == [("allow", None)]
    decision_id = decisions[0]["decision_id"]
    assert [(e.kind, e.data["decision_id"]) for e in trail] == [
        ("step_decision", decision_id),
        ("capability_refused", decision_id),
    ]
    assert (spent, begun) == (0, 0)


async def test_a_token_replayed_for_another_step_is_refused_and_audited(
    stack: Settings, pool: asyncpg.Pool
) -> None:
    tenant, workflow_id, status = await run_with(stack, Replaying, PUT_TWICE)
    assert [s.status for s in status.steps] == ["succeeded", "failed"]
    assert "capability refused (replayed)" in (status.steps[1].error or "")
    assert f"spent on {workflow_id}/first" in (status.steps[1].error or "")
    assert await writes(pool, tenant) == 1
    refused = await events(pool, tenant, workflow_id, "capability_refused")
    assert [(e.step_id, e.data["reason"]) for e in refused] == [("second", "replayed")]


async def test_each_step_spends_its_own_token_and_no_token_enters_history(
    stack: Settings, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant)
    async with worker_with(stack, Recording) as (client, task_queue, issuer):
        handle = await start_run(
            client, task_queue, tenant=tenant, principal="user:ann", playbook_source=PUT_TWICE
        )
        status = await handle.result()
        history = raw_history(await handle.fetch_history())
    assert status.status == "completed", status.reasons
    assert isinstance(issuer, Recording) and len(issuer.tokens) == 2
    assert not any(token.encode() in history for token in issuer.tokens)
    async with tenant_transaction(pool, tenant) as conn:
        spent = await conn.fetch(
            "SELECT step_id, decision_id FROM capability_uses WHERE workflow_id = $1"
            " ORDER BY used_at",
            handle.id,
        )
    decisions = {s.step_id: s.decision.decision_id for s in status.steps if s.decision}
    assert [(r["step_id"], r["decision_id"]) for r in spent] == [
        ("first", decisions["first"]),
        ("second", decisions["second"]),
    ]


async def test_an_edge_worker_with_only_the_public_key_runs_its_step_from_a_grant(
    stack: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant)
    main_queue, edge_queue = f"main-{uuid.uuid4().hex[:8]}", f"edge-{uuid.uuid4().hex[:8]}"
    shutil.copy(key_store(stack).public_path(CAPABILITY), tmp_path / "capability.pub")
    # The edge appends to the audit log, so it holds the chain's key (never a signing key).
    shutil.copy(key_store(stack).secret_path(AUDIT), tmp_path / "audit.secret")
    routes = {"records": edge_queue}
    main = settings_for(stack.home, task_queue=main_queue, adapter_queues=routes)
    edge = settings_for(stack.home, task_queue=edge_queue, adapter_queues=routes, keys_dir=tmp_path)
    client = await connect(stack)
    async with open_resources(main) as main_res, open_resources(edge) as edge_res:
        assert edge_res.trust.authority is None
        async with (
            build_worker(client, main_queue, main_res),
            build_worker(client, edge_queue, edge_res),
        ):
            handle = await start_run(
                client, main_queue, tenant=tenant, principal="user:ann", playbook_source=PUT
            )
            status = await handle.result()
            history = raw_history(await handle.fetch_history())
    assert status.status == "completed", status.reasons
    assert await writes(pool, tenant) == 1
    async with tenant_transaction(pool, tenant) as conn:
        grant = await conn.fetchrow(
            "SELECT token_id, token FROM capability_grants WHERE idempotency_key = $1",
            f"{handle.id}/put",
        )
        spent = await conn.fetchval(
            "SELECT token_id FROM capability_uses WHERE workflow_id = $1", handle.id
        )
    assert grant is not None and spent == grant["token_id"]
    assert grant["token"].encode() not in history, "history carries the grant's id, not the token"
    assert grant["token_id"].encode() in history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.secret", "capability.pub"]
