"""Freshness and as-of reads on the real stack: `as_of` (recorded time), `valid_at`
(valid time), `max_age`, and a namespace's consistency policy from OPA policy data.

Index lag is made for real: a write goes through a service whose Qdrant does not
answer (committed, `indexed=False`), then the live service reads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from stead.memory.service import MemoryService
from stead.settings import Settings
from stead.vector import EdgeVectorIndex, QdrantServerIndex
from tests.runs import configure_tenant
from tests.test_memory_support import new_tenant, open_service, query, remember, utcnow


@pytest_asyncio.fixture(scope="module")
async def service(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryService]:
    index = EdgeVectorIndex(tmp_path_factory.mktemp("memory-freshness") / "qdrant")
    async with open_service(stack, index) as svc:
        yield svc


async def test_as_of_reads_what_memory_held_then(service: MemoryService) -> None:
    tenant = new_tenant()
    first = await service.remember(remember(tenant, "brand", "colour", "The brand colour is teal."))
    await service.remember(remember(tenant, "brand", "colour", "The brand colour is orange."))
    then = first.version.recorded_at + timedelta(microseconds=1)

    past = await service.get(tenant, "brand", "colour", principal="user:alice", as_of=then)
    now = await service.get(tenant, "brand", "colour", principal="user:alice")
    recalled_then = await service.recall(query(tenant, "brand colour", as_of=then))
    recalled_now = await service.recall(query(tenant, "brand colour"))

    assert past is not None and past.content == "The brand colour is teal."
    assert now is not None and now.content == "The brand colour is orange."
    assert [i.content for i in recalled_then.items] == ["The brand colour is teal."]
    assert recalled_then.as_of == then
    assert [i.content for i in recalled_now.items] == ["The brand colour is orange."]


async def test_as_of_never_brings_back_erased_content(service: MemoryService) -> None:
    tenant = new_tenant()
    written = await service.remember(remember(tenant, "crm", "addr", "Jane lives on Elm Street."))
    then = written.version.recorded_at + timedelta(microseconds=1)
    await service.erase(tenant, "crm", "addr", principal="user:dpo", reason="request")

    past = await service.get(tenant, "crm", "addr", principal="user:alice", as_of=then)
    recalled = await service.recall(query(tenant, "Where does Jane live? Elm Street", as_of=then))

    assert past is not None and past.content is None and past.erased_at is not None
    assert recalled.items == ()


async def test_valid_at_reads_what_was_true_then(service: MemoryService) -> None:
    tenant = new_tenant()
    for month, text in ((1, "Prices rose 2%."), (6, "Prices rose 5%.")):
        req = remember(tenant, "ops", "inflation", text)
        await service.remember(
            req.model_copy(update={"valid_from": datetime(2024, month, 1, tzinfo=UTC)})
        )

    march = await service.get(
        tenant,
        "ops",
        "inflation",
        principal="user:alice",
        valid_at=datetime(2024, 3, 1, tzinfo=UTC),
    )
    july = await service.get(
        tenant,
        "ops",
        "inflation",
        principal="user:alice",
        valid_at=datetime(2024, 7, 1, tzinfo=UTC),
    )
    before = await service.get(
        tenant,
        "ops",
        "inflation",
        principal="user:alice",
        valid_at=datetime(2023, 7, 1, tzinfo=UTC),
    )

    assert march is not None and march.content == "Prices rose 2%."
    assert july is not None and july.content == "Prices rose 5%."
    assert before is None


async def test_max_age_filters_event_time(service: MemoryService) -> None:
    tenant = new_tenant()
    old = remember(tenant, "ops", "deploy", "The deploy freeze starts Friday.")
    await service.remember(old.model_copy(update={"valid_from": utcnow() - timedelta(days=30)}))
    await service.remember(remember(tenant, "ops", "oncall", "The deploy owner is Ben."))

    recent = await service.recall(query(tenant, "deploy", k=5, max_age=timedelta(days=7)))
    anything = await service.recall(query(tenant, "deploy", k=5))
    got = await service.get(
        tenant, "ops", "deploy", principal="user:alice", max_age=timedelta(days=7)
    )

    assert [i.key for i in recent.items] == ["oncall"]
    assert sorted(i.key for i in anything.items) == ["deploy", "oncall"]
    assert got is None


async def test_fresh_namespaces_read_their_own_writes_before_the_index(
    service: MemoryService, stack: Settings
) -> None:
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, memory={"consistency": {"fresh": ["ops"]}})
    async with open_service(stack, QdrantServerIndex(url="http://127.0.0.1:9")) as lagging:
        for namespace in ("ops", "notes"):
            written = await lagging.remember(
                remember(tenant, namespace, "oncall", "Priya is the on-call engineer this week.")
            )
            assert not written.indexed
    question = "Who responds to outages at the moment?"  # no word in common with the write

    fresh = await service.recall(query(tenant, question, namespaces=("ops",)))
    indexed = await service.recall(query(tenant, question, namespaces=("notes",)))

    assert (fresh.consistency, fresh.unindexed) == ("fresh", 1)
    assert [(i.namespace, i.key) for i in fresh.items] == [("ops", "oncall")]
    assert (indexed.consistency, indexed.unindexed, indexed.items) == ("indexed", 1, ())
    await service.reindex(tenant)
    caught_up = await service.recall(query(tenant, question, namespaces=("notes",)))
    assert [i.key for i in caught_up.items] == ["oncall"] and caught_up.unindexed == 0
