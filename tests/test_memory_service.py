"""Memory on the real stack: versions and provenance, supersede, TTL, erasure, repair.

Postgres and OPA are the session stack's; the vector index is a fresh embedded shard
for this module; the embedder is the real local all-MiniLM-L6-v2.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
import pytest_asyncio

from stead.audit import list_events
from stead.db.pool import tenant_transaction
from stead.memory import MemoryNotFound, MemoryUnavailable
from stead.memory.errors import MemoryConflict
from stead.memory.service import MemoryService
from stead.settings import Settings
from stead.vector import EdgeVectorIndex, QdrantServerIndex, VectorPayload, VectorPoint
from tests.test_memory_support import (
    EMBEDDER,
    admin_fetch,
    new_tenant,
    open_service,
    query,
    remember,
    utcnow,
)


@pytest_asyncio.fixture(scope="module")
async def service(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryService]:
    index = EdgeVectorIndex(tmp_path_factory.mktemp("memory-service") / "qdrant")
    async with open_service(stack, index) as svc:
        yield svc


async def test_versions_and_provenance_round_trip(service: MemoryService) -> None:
    tenant = new_tenant()
    first = await service.remember(
        remember(
            tenant,
            "brand",
            "colour",
            "The brand colour is teal.",
            agent="planner",
            model="gpt-x",
            model_version="2026-01",
            prompt_hash="ab" * 32,
            workflow_id="run-1",
            run_id="r-1",
            step_id="save",
            source_refs=("doc:brand-book",),
        )
    )
    second = await service.remember(
        remember(tenant, "brand", "colour", "The brand colour is orange.")
    )

    history = await service.history(tenant, "brand", "colour", principal="user:alice")

    assert [v.version for v in history] == [1, 2]
    assert [v.content for v in history] == [
        "The brand colour is teal.",
        "The brand colour is orange.",
    ]
    old, new = history
    assert old.superseded_at == new.recorded_at
    assert new.superseded_at is None
    assert old.provenance.model_dump() == {
        "principal": "user:alice",
        "agent": "planner",
        "model": "gpt-x",
        "model_version": "2026-01",
        "prompt_hash": "ab" * 32,
        "workflow_id": "run-1",
        "run_id": "r-1",
        "step_id": "save",
        "reason": "test",
        "source_refs": ("doc:brand-book",),
    }
    assert (first.created, first.indexed, second.indexed) == (True, True, True)
    current = await service.get(tenant, "brand", "colour", principal="user:alice")
    assert current is not None and current.version == 2


async def test_a_version_cannot_be_rewritten_or_deleted(service: MemoryService) -> None:
    tenant = new_tenant()
    await service.remember(remember(tenant, "notes", "k", "original"))
    async with tenant_transaction(service._pool, tenant) as conn:  # the app role itself
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only by erasure"):
            await conn.execute(
                "UPDATE memory_versions SET content = 'forged' WHERE tenant = $1", tenant
            )
    async with tenant_transaction(service._pool, tenant) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM memory_versions WHERE tenant = $1", tenant)
    async with tenant_transaction(service._pool, tenant) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="provenance never change"):
            await conn.execute(
                "UPDATE memory_versions SET principal = 'user:eve' WHERE tenant = $1", tenant
            )


async def test_update_makes_the_old_vector_hit_disappear_from_recall(
    service: MemoryService,
) -> None:
    tenant = new_tenant()
    old = await service.remember(
        remember(tenant, "brand", "colour", "Our brand colour is teal green.")
    )
    await service.remember(
        remember(tenant, "brand", "colour", "Our brand colour is bright orange.")
    )
    # Make the index stale on purpose: put the superseded version's point back, the
    # way a failed delete would leave it.
    [vector] = await EMBEDDER.embed(["Our brand colour is teal green."])
    payload = VectorPayload(
        tenant=tenant, namespace="brand", memory_id="m", version=1, sensitivity="internal"
    )
    await service.index.upsert([VectorPoint(id=old.version.id, vector=vector, payload=payload)])

    result = await service.recall(query(tenant, "what is our brand colour teal green?"))

    assert [(i.key, i.version, i.content) for i in result.items] == [
        ("colour", 2, "Our brand colour is bright orange.")
    ]
    assert result.stale == 1 and not result.degraded


async def test_recall_ranks_the_paraphrase_first(service: MemoryService) -> None:
    tenant = new_tenant()
    for key, text in {
        "reset": "To reset a password, open Settings and choose Security.",
        "invoice": "Invoices are paid by bank transfer within 30 days.",
        "logo": "The logo always sits on a white background.",
    }.items():
        await service.remember(remember(tenant, "howto", key, text))

    result = await service.recall(query(tenant, "I forgot my password, how do I change it?", k=2))

    assert result.items[0].key == "reset"
    assert result.items[0].provenance.principal == "user:alice"


async def test_expired_versions_leave_recall_and_purge_erases_them(
    service: MemoryService, stack: Settings
) -> None:
    tenant = new_tenant()
    soon = utcnow() + timedelta(seconds=1)
    await service.remember(
        remember(tenant, "offers", "spring", "Spring sale code SPRING25.", expires_at=soon)
    )
    await service.remember(
        remember(tenant, "offers", "always", "Loyal customers get free shipping.")
    )
    assert {i.key for i in (await service.recall(query(tenant, "sale code"))).items} == {
        "spring",
        "always",
    }

    # Wait on Postgres's own clock (the one recall compares with) until the TTL passed.
    async with service._pool.acquire() as conn:
        while await conn.fetchval("SELECT now() <= $1", soon):
            await asyncio.sleep(0.05)

    assert {i.key for i in (await service.recall(query(tenant, "sale code"))).items} == {"always"}
    purged = await service.purge_expired(tenant)
    assert (purged.erased, purged.vectors_removed) == (1, True)
    [row] = await admin_fetch(
        stack,
        "SELECT content, erase_reason, index_state FROM memory_versions v JOIN memories m"
        " ON m.id = v.memory_id WHERE v.tenant = $1 AND m.key = 'spring'",
        tenant,
    )
    assert (row["content"], row["erase_reason"], row["index_state"]) == (None, "expired", "absent")


async def test_erasure_leaves_no_content_or_vector_but_keeps_hash_and_provenance(
    service: MemoryService, stack: Settings
) -> None:
    tenant = new_tenant()
    text = "Customer Jane Roe lives at 12 Elm Street."
    written = await service.remember(remember(tenant, "customers", "jane", text, sensitivity="pii"))
    assert await service.index.count(tenant) == 1

    erased = await service.erase(
        tenant, "customers", "jane", principal="user:dpo", reason="GDPR art. 17 request"
    )

    assert erased.versions == (1,) and erased.vectors_removed
    assert await service.index.count(tenant) == 0
    [row] = await admin_fetch(
        stack,
        "SELECT content, search::text AS search, content_hash, principal, erased_by"
        " FROM memory_versions WHERE id = $1::uuid",
        written.version.id,
    )
    assert row["content"] is None and row["search"] == ""
    assert row["content_hash"] == written.version.content_hash
    assert (row["principal"], row["erased_by"]) == ("user:alice", "user:dpo")
    dumped = await admin_fetch(
        stack, "SELECT data::text AS d FROM audit_events WHERE tenant = $1", tenant
    )
    assert all("Elm Street" not in r["d"] for r in dumped)
    async with tenant_transaction(service._pool, tenant) as conn:
        kinds = [e.kind for e in await list_events(conn, tenant)]
    assert kinds == ["memory_written", "memory_erased"]
    recalled = await service.recall(query(tenant, "Where does Jane Roe live?", clearance="secret"))
    assert recalled.items == ()


async def test_erasing_an_unknown_memory_says_so(service: MemoryService) -> None:
    with pytest.raises(MemoryNotFound, match="no memory notes/nothing"):
        await service.erase(new_tenant(), "notes", "nothing", principal="user:dpo", reason="x")


async def test_failed_index_write_is_repaired_by_reindex(
    service: MemoryService, stack: Settings
) -> None:
    tenant = new_tenant()
    dead = QdrantServerIndex(url="http://127.0.0.1:9")  # discard port: nothing answers
    async with open_service(stack, dead) as offline:
        written = await offline.remember(
            remember(tenant, "ops", "runbook", "Restart the billing cron nightly.")
        )
        assert (written.created, written.indexed) == (True, False)
        degraded = await offline.recall(query(tenant, "billing cron restart"))
        assert degraded.degraded and [i.key for i in degraded.items] == ["runbook"]

    assert (await service.index.count(tenant)) == 0  # the write is not in the index
    repaired = await service.reindex(tenant)

    assert repaired.indexed == 1 and (await service.index.count(tenant)) == 1
    result = await service.recall(query(tenant, "billing cron restart"))
    assert [i.key for i in result.items] == ["runbook"] and not result.degraded


async def test_a_repeated_request_key_returns_the_first_version(service: MemoryService) -> None:
    tenant = new_tenant()
    request = remember(tenant, "notes", "k", "once").model_copy(
        update={"request_key": "wf-1/step-1"}
    )

    first, again = await asyncio.gather(service.remember(request), service.remember(request))

    assert sorted([first.created, again.created]) == [False, True]
    assert first.version.id == again.version.id
    assert len(await service.history(tenant, "notes", "k", principal="user:alice")) == 1
    changed = request.model_copy(update={"content": "twice"})
    with pytest.raises(MemoryConflict, match="different content"):
        await service.remember(changed)


async def test_postgres_unavailable_fails_clearly(service: MemoryService) -> None:
    # min_size=0 opens no connection up front, like a pool whose server went away.
    pool = await asyncpg.create_pool("postgresql://stead_app@127.0.0.1:9/stead", min_size=0)
    try:
        offline = MemoryService(pool, service.index, EMBEDDER)
        with pytest.raises(MemoryUnavailable, match="Postgres did not answer"):
            await offline.recall(query(new_tenant(), "anything"))
    finally:
        await pool.close()
