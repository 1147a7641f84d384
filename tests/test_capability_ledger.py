"""The authority checks the decision log before signing; the capability ledger binds keys and
keeps tenants apart. Real Postgres, through the app role that row-level security binds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from stead.capability import (
    CapabilityAuthority,
    CapabilityClaims,
    CapabilityInvalid,
    CapabilityScope,
    KeyRebound,
    NoAllowDecision,
    consume,
)
from stead.capability.ledger import load_grant, spent_on, store_grant
from stead.contracts.run import Decision
from stead.db.pool import create_pool, tenant_transaction
from stead.keys import CAPABILITY, key_store
from stead.runs.store import record_decision
from stead.settings import Settings
from tests.runs import new_tenant


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, max_size=3)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def authority(stack: Settings, pool: asyncpg.Pool) -> CapabilityAuthority:
    private = key_store(stack).private(CAPABILITY)
    assert private is not None
    return CapabilityAuthority(private, pool)


async def decide(
    pool: asyncpg.Pool, tenant: str, workflow_id: str, step_id: str, outcome: str
) -> str:
    decision = Decision(decision_id=uuid.uuid4().hex, outcome=outcome, reasons=("test",))
    async with tenant_transaction(pool, tenant) as conn:
        await record_decision(
            conn,
            tenant=tenant,
            workflow_id=workflow_id,
            step_id=step_id,
            kind="step",
            decision=decision,
            input_hash="h",
            eval_ms=None,
        )
    return decision.decision_id


def scope_for(
    tenant: str, workflow_id: str, step_id: str, decision_id: str, args: str = "a"
) -> CapabilityScope:
    return CapabilityScope(
        tenant=tenant,
        workflow_id=workflow_id,
        run_id="r-1",
        step_id=step_id,
        operation="records.put",
        args_hash=args * 64,
        idempotency_key=f"{workflow_id}/{step_id}",
        decision_id=decision_id,
    )


async def test_the_authority_signs_only_a_recorded_allow_for_that_very_step(
    pool: asyncpg.Pool, authority: CapabilityAuthority
) -> None:
    tenant, other = new_tenant(), new_tenant()
    allowed = await decide(pool, tenant, "wf-1", "put", "allow")
    denied = await decide(pool, tenant, "wf-1", "drop", "deny")
    held = await decide(pool, tenant, "wf-1", "send", "approve")
    elsewhere = await decide(pool, other, "wf-1", "put", "allow")

    issued = await authority.authorize(scope_for(tenant, "wf-1", "put", allowed))
    assert issued.claims.decision_id == allowed
    refused = [
        scope_for(tenant, "wf-1", "drop", denied),
        scope_for(tenant, "wf-1", "send", held),
        scope_for(tenant, "wf-1", "drop", allowed),  # an allow, but for another step
        scope_for(tenant, "wf-2", "put", allowed),  # ... or another run
        scope_for(tenant, "wf-1", "put", elsewhere),  # another tenant's allow: RLS hides it
        scope_for(tenant, "wf-1", "put", "never-decided"),
    ]
    for scope in refused:
        with pytest.raises(NoAllowDecision):
            await authority.authorize(scope)


async def test_a_token_may_be_presented_again_only_by_a_retry_of_its_own_effect(
    pool: asyncpg.Pool, authority: CapabilityAuthority
) -> None:
    tenant = new_tenant()
    claims = authority.sign(scope_for(tenant, "wf-1", "put", "d")).claims
    async with tenant_transaction(pool, tenant) as conn:
        assert await consume(conn, claims) is True
    async with tenant_transaction(pool, tenant) as conn:
        assert await consume(conn, claims) is False
        assert await spent_on(conn, claims.token_id) == "wf-1/put"


async def test_a_key_spent_on_one_effect_refuses_tokens_for_other_arguments_or_steps(
    pool: asyncpg.Pool, authority: CapabilityAuthority
) -> None:
    tenant = new_tenant()
    first = authority.sign(scope_for(tenant, "wf-1", "put", "d", args="a")).claims
    async with tenant_transaction(pool, tenant) as conn:
        await consume(conn, first)
    changed_args = authority.sign(scope_for(tenant, "wf-1", "put", "d", args="b")).claims
    other_step = authority.sign(
        scope_for(tenant, "wf-1", "get", "d").model_copy(update={"idempotency_key": "wf-1/put"})
    ).claims
    for claims, differs in ((changed_args, "args_hash"), (other_step, "step_id")):
        # The refusal is caught and the transaction commits: a refused spend wrote nothing.
        async with tenant_transaction(pool, tenant) as conn:
            with pytest.raises(KeyRebound, match=differs):
                await consume(conn, claims)
    retry = authority.sign(scope_for(tenant, "wf-1", "put", "d", args="a")).claims
    async with tenant_transaction(pool, tenant) as conn:
        assert await consume(conn, retry) is True
        spent = await conn.fetch(
            "SELECT token_id FROM capability_uses WHERE idempotency_key = 'wf-1/put'"
            " ORDER BY used_at, token_id"
        )
    assert {r["token_id"] for r in spent} == {first.token_id, retry.token_id}


async def test_spent_tokens_and_grants_are_invisible_to_other_tenants(
    pool: asyncpg.Pool, authority: CapabilityAuthority
) -> None:
    tenant, other = new_tenant(), new_tenant()
    issued = authority.sign(scope_for(tenant, "wf-1", "put", "d"))
    claims: CapabilityClaims = issued.claims
    async with tenant_transaction(pool, tenant) as conn:
        await consume(conn, claims)
        await store_grant(
            conn,
            tenant=tenant,
            token_id=claims.token_id,
            idempotency_key=claims.idempotency_key,
            token=issued.token,
            expires_at=claims.expires_at,
        )
        assert await load_grant(conn, claims.token_id) == issued.token
    async with tenant_transaction(pool, other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM capability_uses") == 0
        assert await spent_on(conn, claims.token_id) is None
        with pytest.raises(CapabilityInvalid, match="no capability grant"):
            await load_grant(conn, claims.token_id)
    # The other tenant cannot spend it either: the id is taken where it cannot see.
    foreign = claims.model_copy(update={"tenant": other})
    async with tenant_transaction(pool, other) as conn:
        with pytest.raises(CapabilityInvalid, match="not spendable"):
            await consume(conn, foreign)


async def test_the_ledger_refuses_rewrites(
    pool: asyncpg.Pool, authority: CapabilityAuthority
) -> None:
    tenant = new_tenant()
    claims = authority.sign(scope_for(tenant, "wf-1", "put", "d")).claims
    async with tenant_transaction(pool, tenant) as conn:
        await consume(conn, claims)
    async with tenant_transaction(pool, tenant) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE capability_uses SET args_hash = 'x'")
