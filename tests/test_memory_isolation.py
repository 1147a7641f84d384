"""Invariant 5 for memory: a tenant never reads or writes another tenant's memory, even
when the tenant argument is forged at the SQL layer or at the vector-index layer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from stead.db.pool import tenant_transaction
from stead.memory.service import MemoryService
from stead.settings import Settings
from stead.vector import EdgeVectorIndex, VectorPayload, VectorPoint
from tests.test_memory_support import (
    EMBEDDER,
    admin_fetch,
    new_tenant,
    open_service,
    query,
    remember,
)

TABLES = ("memories", "memory_versions", "memory_state", "observations", "observation_retention")
SECRET_PLAN = "Project Falcon launches on 3 March with a 20 percent discount."


@pytest_asyncio.fixture(scope="module")
async def service(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryService]:
    index = EdgeVectorIndex(tmp_path_factory.mktemp("memory-isolation") / "qdrant")
    async with open_service(stack, index) as svc:
        yield svc


async def test_every_memory_table_forces_row_level_security_on_a_non_owner(stack: Settings) -> None:
    rows = await admin_fetch(
        stack,
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        " pg_get_userbyid(c.relowner) AS owner"
        " FROM pg_class c WHERE c.relname = ANY($1::text[])",
        list(TABLES),
    )
    assert {r["relname"]: (r["relrowsecurity"], r["relforcerowsecurity"]) for r in rows} == {
        t: (True, True) for t in TABLES
    }
    [role] = await admin_fetch(
        stack, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'stead_app'"
    )
    assert {r["owner"] for r in rows} == {"stead_owner"}
    assert (role["rolsuper"], role["rolbypassrls"]) == (False, False)


async def test_forged_tenant_in_sql_reads_nothing(service: MemoryService) -> None:
    victim, attacker = new_tenant(), new_tenant()
    await service.remember(remember(victim, "plans", "falcon", SECRET_PLAN))
    pool = service._pool

    async with tenant_transaction(pool, attacker) as conn:
        # The query names the victim; RLS binds to the transaction's tenant.
        found = await conn.fetch(
            "SELECT v.content FROM memory_versions v JOIN memories m ON m.id = v.memory_id"
            " WHERE v.tenant = $1 OR true",
            victim,
        )
        memories = await conn.fetchval("SELECT count(*) FROM memories WHERE tenant = $1", victim)
    async with pool.acquire() as conn:  # no tenant at all
        untenanted = await conn.fetchval("SELECT count(*) FROM memory_versions")

    assert (found, memories, untenanted) == ([], 0, 0)
    assert await service.get(attacker, "plans", "falcon", principal="user:eve") is None
    assert await service.history(attacker, "plans", "falcon", principal="user:eve") == []


async def test_forged_tenant_in_sql_cannot_write_or_erase(service: MemoryService) -> None:
    victim, attacker = new_tenant(), new_tenant()
    written = await service.remember(remember(victim, "plans", "falcon", SECRET_PLAN))

    async with tenant_transaction(service._pool, attacker) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "INSERT INTO memories (tenant, namespace, key) VALUES ($1, 'plans', 'x')", victim
            )
    async with tenant_transaction(service._pool, attacker) as conn:
        erased = await conn.execute(
            "UPDATE memory_versions SET content = NULL, erased_at = now() WHERE tenant = $1", victim
        )
    assert erased == "UPDATE 0"
    current = await service.get(victim, "plans", "falcon", principal="user:alice")
    assert current is not None and current.content == SECRET_PLAN
    assert current.id == written.version.id


async def test_recall_never_returns_another_tenants_best_match(service: MemoryService) -> None:
    victim, attacker = new_tenant(), new_tenant()
    await service.remember(remember(victim, "plans", "falcon", SECRET_PLAN))
    await service.remember(remember(attacker, "notes", "lunch", "Lunch is at noon on Fridays."))

    result = await service.recall(query(attacker, "When does Project Falcon launch?", k=10))

    assert [i.key for i in result.items] == ["lunch"]


async def test_a_point_forged_into_the_index_for_another_tenant_is_dropped(
    service: MemoryService,
) -> None:
    victim, attacker = new_tenant(), new_tenant()
    written = await service.remember(remember(victim, "plans", "falcon", SECRET_PLAN))
    # An index write that claims the attacker's tenant for the victim's version id
    # (a bug or a forged payload): the index then returns it to the attacker's query.
    [vector] = await EMBEDDER.embed([SECRET_PLAN])
    forged = VectorPayload(
        tenant=attacker, namespace="plans", memory_id="x", version=1, sensitivity="internal"
    )
    await service.index.upsert([VectorPoint(id=written.version.id, vector=vector, payload=forged)])
    assert [h.id for h in await service.index.query(attacker, vector, k=5)] == [written.version.id]

    result = await service.recall(query(attacker, "When does Project Falcon launch?"))

    # Postgres, asked under the attacker's tenant, does not know the version.
    assert result.items == () and result.stale == 1
