"""The audit log is append-only and hash-chained: tampering by a superuser is detected,
the app role cannot rewrite history, and concurrent writers keep the chain gapless."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from stead.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditKeyConflict,
    AuditRecord,
    AuditTenantMismatch,
    VerifyResult,
    append_event,
    list_events,
    verify_chain,
)
from stead.audit.chain import hashed_fields, unkeyed_hash
from stead.contracts.run import canonical_json
from stead.db.pool import create_pool, tenant_transaction
from stead.settings import Settings


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=25)
    try:
        yield pool
    finally:
        await pool.close()


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def event(tenant: str, n: int, workflow_id: str = "wf-1") -> AuditEvent:
    return AuditEvent(
        tenant=tenant,
        workflow_id=workflow_id,
        run_id="run-1",
        step_id=f"s{n}",
        kind="step.executed",
        actor="user:alice",
        data={"n": n, "note": "héllo", "nested": {"b": [1, 2.5, None], "a": True}},
    )


async def append_many(pool: asyncpg.Pool, tenant: str, count: int) -> list[AuditRecord]:
    records = []
    for n in range(count):
        async with tenant_transaction(pool, tenant) as conn:
            records.append(await append_event(conn, event(tenant, n)))
    return records


async def verify(pool: asyncpg.Pool, tenant: str) -> VerifyResult:
    async with tenant_transaction(pool, tenant) as conn:
        return await verify_chain(conn, tenant)


async def tamper(stack: Settings, sql: str, *args: object) -> None:
    """What an attacker with superuser access could do: switch off the guard, rewrite."""
    assert stack.postgres_admin_dsn is not None
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        async with admin.transaction():
            await admin.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            status = await admin.execute(sql, *args)
            await admin.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        assert status.endswith(" 1"), status
    finally:
        await admin.close()


async def test_chain_of_events_verifies(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    records = await append_many(pool, tenant, 12)

    assert [r.seq for r in records] == list(range(1, 13))
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    result = await verify(pool, tenant)
    assert result.ok, result
    assert result.checked == 12
    assert result.first_bad_seq is None


async def test_hash_covers_data_exactly_as_stored(pool: asyncpg.Pool) -> None:
    # jsonb rewrites some numbers (1e20 comes back as an integer); the chain must
    # still verify from what Postgres returns.
    tenant = new_tenant()
    odd = AuditEvent(
        tenant=tenant,
        workflow_id=None,
        run_id=None,
        step_id=None,
        kind="odd",
        actor="service:stead",
        data={"big": 1e20, "tiny": 1e-7, "one": 1.0, "int": 10**30, "s": '\u2603\n"q"'},
    )
    async with tenant_transaction(pool, tenant) as conn:
        await append_event(conn, odd)
    await append_many(pool, tenant, 2)

    result = await verify(pool, tenant)
    assert result.ok, result
    assert result.checked == 3


async def test_edited_row_is_named_as_first_bad(pool: asyncpg.Pool, stack: Settings) -> None:
    tenant = new_tenant()
    await append_many(pool, tenant, 6)

    await tamper(
        stack,
        "UPDATE audit_events SET data = jsonb_set(data, '{n}', '999')"
        " WHERE tenant = $1 AND seq = 3",
        tenant,
    )

    result = await verify(pool, tenant)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.checked == 2
    assert "altered" in (result.reason or "")


async def test_deleted_row_is_detected(pool: asyncpg.Pool, stack: Settings) -> None:
    tenant = new_tenant()
    await append_many(pool, tenant, 6)

    await tamper(stack, "DELETE FROM audit_events WHERE tenant = $1 AND seq = 4", tenant)

    result = await verify(pool, tenant)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert "missing" in (result.reason or "")


async def test_rehashed_forgery_is_named_at_its_own_row(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    # A forger who edits seq 2 and recomputes its hash without the audit key (the
    # pre-0007 unkeyed sha256) is caught at seq 2 itself: the row's MAC is keyed.
    tenant = new_tenant()
    await append_many(pool, tenant, 5)
    async with tenant_transaction(pool, tenant) as conn:
        second = (await list_events(conn, tenant))[1]

    forged_data = {**second.data, "n": "forged"}
    fields = hashed_fields(
        tenant=tenant,
        seq=2,
        workflow_id=second.workflow_id,
        run_id=second.run_id,
        step_id=second.step_id,
        kind=second.kind,
        actor=second.actor,
        data=forged_data,
        recorded_at=second.recorded_at,
    )

    await tamper(
        stack,
        "UPDATE audit_events SET data = $2::text::jsonb, hash = $3 WHERE tenant = $1 AND seq = 2",
        tenant,
        canonical_json(forged_data),
        unkeyed_hash(second.prev_hash, fields),
    )

    result = await verify(pool, tenant)
    assert not result.ok
    assert result.first_bad_seq == 2
    assert "altered or forged" in (result.reason or "")


async def test_app_role_cannot_update_delete_or_truncate_audit_rows(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    await append_many(pool, tenant, 2)

    for sql in (
        "UPDATE audit_events SET actor = 'user:mallory' WHERE tenant = $1",
        "DELETE FROM audit_events WHERE tenant = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with tenant_transaction(pool, tenant) as conn:
                await conn.execute(sql, tenant)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        async with tenant_transaction(pool, tenant) as conn:
            await conn.execute("TRUNCATE audit_events")

    assert (await verify(pool, tenant)).checked == 2


async def test_trigger_refuses_rewrites_even_with_privileges(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    tenant = new_tenant()
    await append_many(pool, tenant, 1)
    assert stack.postgres_admin_dsn is not None
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await admin.execute("UPDATE audit_events SET kind = 'x' WHERE tenant = $1", tenant)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await admin.execute("DELETE FROM audit_events WHERE tenant = $1", tenant)
    finally:
        await admin.close()
    assert (await verify(pool, tenant)).ok


async def test_concurrent_appends_produce_a_gapless_valid_chain(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()

    async def one(n: int) -> AuditRecord:
        async with tenant_transaction(pool, tenant) as conn:
            return await append_event(conn, event(tenant, n))

    records = await asyncio.gather(*(one(n) for n in range(20)))

    assert sorted(r.seq for r in records) == list(range(1, 21))
    result = await verify(pool, tenant)
    assert result.ok, result
    assert result.checked == 20


async def test_an_append_after_another_writer_links_to_the_real_head(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    """A worker remembers the head it last committed and inserts on it in one round trip;
    when another writer (here a second pool, as another worker process) appended since,
    that insert writes nothing and the append reads the head: the chain stays gapless."""
    tenant = new_tenant()
    await append_many(pool, tenant, 2)
    other = await create_pool(stack.postgres_dsn, min_size=1, max_size=1)
    try:
        async with other.acquire() as conn, conn.transaction():
            # Not through tenant_transaction: nothing of it reaches this process's memory.
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)
            await append_event(conn, event(tenant, 2))
    finally:
        await other.close()
    records = await append_many(pool, tenant, 2)
    assert [r.seq for r in records] == [4, 5]
    result = await verify(pool, tenant)
    assert result.ok and result.checked == 5, result


async def test_append_refuses_a_transaction_for_another_tenant(pool: asyncpg.Pool) -> None:
    tenant, other = new_tenant(), new_tenant()
    with pytest.raises(AuditTenantMismatch, match=other):
        async with tenant_transaction(pool, tenant) as conn:
            await append_event(conn, event(other, 0))
    async with pool.acquire() as conn:
        with pytest.raises(AuditTenantMismatch, match="needs a transaction"):
            await append_event(conn, event(tenant, 0))


async def test_list_events_filters_by_workflow_in_chain_order(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    for n, wf in enumerate(["wf-a", "wf-b", "wf-a", "wf-b", "wf-a"]):
        async with tenant_transaction(pool, tenant) as conn:
            await append_event(conn, event(tenant, n, workflow_id=wf))

    async with tenant_transaction(pool, tenant) as conn:
        only_a = await list_events(conn, tenant, workflow_id="wf-a")
        everything = await list_events(conn, tenant)

    assert [r.seq for r in only_a] == [1, 3, 5]
    assert {r.workflow_id for r in only_a} == {"wf-a"}
    assert len(everything) == 5
    assert only_a[1].data == {"n": 2, "note": "héllo", "nested": {"a": True, "b": [1, 2.5, None]}}


async def test_an_append_with_a_key_is_written_once_per_tenant(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    """A retried activity appends with the key of its first attempt: the second append
    returns the first row whether this process knows the head or another writer moved it,
    the chain stays valid, and the same key in another tenant is another row."""
    tenant, other = new_tenant(), new_tenant()

    async def keyed(t: str, n: int, key: str) -> AuditRecord:
        async with tenant_transaction(pool, t) as conn:
            return await append_event(conn, event(t, n), idempotency_key=key)

    first = await keyed(tenant, 0, "activity:wf-1/run-1/1")
    again = await keyed(tenant, 0, "activity:wf-1/run-1/1")  # the head is known here
    assert again == first
    await append_many(pool, tenant, 1)  # without a key: always appended
    late = await keyed(tenant, 0, "activity:wf-1/run-1/1")  # the head moved on since
    assert late == first
    assert (await keyed(other, 0, "activity:wf-1/run-1/1")).seq == 1
    async with tenant_transaction(pool, tenant) as conn:
        assert [r.seq for r in await list_events(conn, tenant)] == [1, 2]
    result = await verify(pool, tenant)
    assert result.ok and result.checked == 2, result
    # The constraint holds for a writer that skips the check (SQL as the app role).
    app = await asyncpg.connect(stack.postgres_dsn)
    try:
        async with app.transaction():
            await app.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)
            with pytest.raises(asyncpg.UniqueViolationError):
                await app.execute(PLANT, tenant, 3, "activity:wf-1/run-1/1")
        # A row planted without the audit key under a key a later call will use (keys are
        # predictable) does not stand in for that call's event: the append refuses.
        async with app.transaction():
            await app.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)
            await app.execute(PLANT, tenant, 3, "activity:wf-1/run-1/7")
    finally:
        await app.close()
    with pytest.raises(AuditKeyConflict):
        await keyed(tenant, 0, "activity:wf-1/run-1/7")


PLANT = (
    "INSERT INTO audit_events (tenant, seq, workflow_id, run_id, step_id, kind, actor, data,"
    " prev_hash, hash, chain_version, idempotency_key)"
    " VALUES ($1, $2, 'wf-1', 'run-1', 's0', 'step.executed', 'user:alice', '{}', '', '', 2, $3)"
)
