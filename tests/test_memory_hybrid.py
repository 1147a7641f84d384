"""Hybrid recall on the real stack: exact terms, meaning, periods, and what never surfaces.

Each claim is checked against the path it is about: the index's term ranking
(`index.hybrid` with the question's term vector: what recall uses), `store.lexical`
(BM25 in Postgres, as the app role under row-level security: what recall uses when the
index cannot answer) and the index's nearest points are asked directly next to
`recall`, so "found only through its exact term" means the vector path alone did not
put it first, and "only through meaning" means neither lexical path had anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from stead.db.pool import tenant_transaction
from stead.embeddings import LiteLlmEmbedder
from stead.memory import store
from stead.memory.fusion import DEFAULT_FUSION
from stead.memory.service import MemoryService
from stead.settings import Settings
from stead.vector import EdgeVectorIndex, QdrantServerIndex, VectorPayload, VectorPoint
from stead.vector.terms import TERMS_MODEL, document_terms, query_terms
from tests.test_memory_contract import DEGRADED
from tests.test_memory_support import (
    EMBEDDER,
    admin_fetch,
    new_tenant,
    open_service,
    query,
    remember,
    utcnow,
)

LEVELS = ["public", "internal"]
REASONS = ("embedding_unavailable", "index_unavailable")


def degraded_recalls(reason: str) -> float:
    return REGISTRY.get_sample_value(DEGRADED, {"reason": reason}) or 0.0


@pytest_asyncio.fixture(scope="module")
async def service(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryService]:
    index = EdgeVectorIndex(tmp_path_factory.mktemp("memory-hybrid") / "qdrant")
    async with open_service(stack, index) as svc:
        yield svc


async def lexical_keys(service: MemoryService, tenant: str, text: str) -> list[str]:
    async with tenant_transaction(service.pool, tenant) as conn:
        found = await store.lexical(
            conn, tenant, text, namespaces=None, since=None, sensitivities=LEVELS, limit=10
        )
        rows = await store.versions_by_id(conn, tenant, [i for i, _ in found])
    key = {r["id"]: r["key"] for r in rows}
    return [key[i] for i, _ in found]


async def term_keys(service: MemoryService, tenant: str, text: str) -> list[str]:
    """The index's exact-term ranking, as recall asks it (live versions only)."""
    terms = query_terms(text)
    if terms is None:
        return []
    found = await service.index.hybrid(tenant, None, terms, k=10)
    async with tenant_transaction(service.pool, tenant) as conn:
        rows = await store.versions_by_id(conn, tenant, [h.id for h in found.lexical])
    key = {r["id"]: r["key"] for r in rows if r["live"]}
    return [key[h.id] for h in found.lexical if h.id in key]


async def vector_keys(service: MemoryService, tenant: str, text: str) -> list[str]:
    [vector] = await EMBEDDER.embed([text])
    hits = await service.index.query(tenant, vector, k=10)
    async with tenant_transaction(service.pool, tenant) as conn:
        rows = await store.versions_by_id(conn, tenant, [h.id for h in hits])
    key = {r["id"]: r["key"] for r in rows}
    return [key[h.id] for h in hits]


INVOICES = {
    "inv-a": "Invoice 55012 was paid on time by the customer.",
    "inv-b": "Invoice 77345 was refunded to the customer after a complaint.",
    "inv-c": "Invoice 88123 was disputed by the customer.",
    "inv-d": "Invoice 10457 is overdue; the customer was reminded by email.",
    "inv-e": "Invoice 63220 was cancelled because the order never shipped.",
    # Near misses: the same digits in another order look alike to an embedding.
    "inv-f": "Invoice 88132 was paid by the customer.",
    "inv-g": "Invoice 81223 was refunded to the customer.",
    "inv-h": "Invoice 18823 was paid on time.",
}


async def test_a_question_answered_only_through_its_exact_term(service: MemoryService) -> None:
    tenant = new_tenant()
    for key, text in INVOICES.items():
        await service.remember(remember(tenant, "billing", key, text))
    question = "What is the status of invoice 88123?"

    by_meaning = await vector_keys(service, tenant, question)
    result = await service.recall(query(tenant, question, k=3))

    # To the embedding, 88132 is nearer than 88123 itself: the vector path alone misses it.
    assert by_meaning[0] != "inv-c"
    assert (await term_keys(service, tenant, question))[0] == "inv-c"
    assert (await lexical_keys(service, tenant, question))[0] == "inv-c"
    assert result.items[0].key == "inv-c" and not result.degraded


async def test_a_question_answered_only_through_meaning(service: MemoryService) -> None:
    tenant = new_tenant()
    await service.remember(
        remember(tenant, "ops", "oncall", "Priya is the on-call engineer this week.")
    )
    await service.remember(remember(tenant, "ops", "menu", "The canteen serves soup on Fridays."))
    await service.remember(remember(tenant, "ops", "desk", "Office plants are watered on Mondays."))
    question = "Who responds to outages at the moment?"

    result = await service.recall(query(tenant, question, k=1))

    assert await lexical_keys(service, tenant, question) == []  # no word in common
    assert await term_keys(service, tenant, question) == []
    assert [i.key for i in result.items] == ["oncall"]


async def test_a_period_named_in_the_question_prefers_memories_of_that_time(
    service: MemoryService,
) -> None:
    tenant = new_tenant()
    for month in (2, 3, 4):
        req = remember(tenant, "journal", f"2024-{month}", "We shipped a new release of the app.")
        await service.remember(
            req.model_copy(update={"valid_from": datetime(2024, month, 12, tzinfo=UTC)})
        )

    result = await service.recall(query(tenant, "What did we ship in March 2024?", k=3))

    assert result.items[0].key == "2024-3"
    assert result.items[0].valid_from == datetime(2024, 3, 12, tzinfo=UTC)


async def test_a_question_naming_a_subject_prefers_memories_about_it(
    service: MemoryService,
) -> None:
    tenant = new_tenant()
    turns = {
        "t1": "Caroline: I signed up for the pottery course at the community centre.",
        "t2": "Melanie: Caroline, which pottery class did you sign up for?",
        "t3": "Melanie: I spent the weekend camping with the kids.",
        "t4": "Melanie: The kids loved the museum trip on Sunday.",
        "t5": "Caroline: Work has been busy, but the team is great.",
        "t6": "Melanie: I have been reading a lot of mystery novels lately.",
        "t7": "Melanie: Our dog learned to fetch the newspaper.",
    }
    for key, text in turns.items():
        await service.remember(remember(tenant, "chat", key, text))
    question = "Which pottery class did Caroline sign up for?"

    result = await service.recall(query(tenant, question, k=3))

    # Term matching alone prefers the turn that repeats the words; it is Melanie's.
    assert (await term_keys(service, tenant, question))[0] == "t2"
    assert result.items[0].key == "t1"


async def test_the_turn_after_a_matching_question_comes_back_as_its_neighbour(
    service: MemoryService,
) -> None:
    tenant = new_tenant()
    turns = [
        "Why did you choose the red kayak over the canoe?",
        "It reminds me of summers with my dad, he had the same one.",
        "The weather forecast says rain for the whole week.",
        "We finally drove up to the lake house on Saturday.",
        "My sister started a new job at the hospital.",
        "I baked bread with the kids this morning.",
    ]
    for n, text in enumerate(turns, start=1):
        await service.remember(remember(tenant, "chat", f"S1:{n}", text))
    question = "Why did she choose the red kayak?"
    without = MemoryService(
        service.pool,
        service.index,
        service.embedder,
        fusion=replace(DEFAULT_FUSION, neighbour_share=0),
    )

    result = await service.recall(query(tenant, question, k=2))
    alone = await without.recall(query(tenant, question, k=2))

    assert "S1:2" not in await term_keys(service, tenant, question)  # no word in common
    assert [i.key for i in alone.items] != ["S1:1", "S1:2"]  # the cue is what finds it
    assert [i.key for i in result.items] == ["S1:1", "S1:2"]


async def test_stale_and_erased_versions_never_surface_through_either_path(
    service: MemoryService, stack: Settings
) -> None:
    tenant = new_tenant()
    old = await service.remember(remember(tenant, "codes", "door", "The door code is quokka-7731."))
    await service.remember(remember(tenant, "codes", "door", "The door code changed; ask Omar."))
    gone = await service.remember(remember(tenant, "codes", "safe", "The safe code quokka-9902."))
    await service.erase(tenant, "codes", "safe", principal="user:dpo", reason="test")
    await service.remember(
        remember(
            tenant,
            "codes",
            "gate",
            "The gate code is quokka-4410.",
            expires_at=utcnow() - timedelta(seconds=1),
        )
    )
    # Put the superseded and erased points back, with their terms, as a lagging or
    # restored index holds them: both of the index's rankings propose them.
    for version, text in ((old.version, "door code quokka-7731"), (gone.version, "safe code")):
        [vector] = await EMBEDDER.embed([text])
        payload = VectorPayload(
            tenant=tenant, namespace="codes", memory_id="x", version=1, sensitivity="internal"
        )
        await service.index.upsert(
            [VectorPoint(id=version.id, vector=vector, payload=payload, terms=document_terms(text))]
        )
    question = "What is the quokka code?"
    terms = query_terms(question)
    assert terms is not None
    proposed = await service.index.hybrid(tenant, None, terms, k=10)

    result = await service.recall(query(tenant, question, k=10))
    async with open_service(stack, QdrantServerIndex(url="http://127.0.0.1:9")) as offline:
        degraded = await offline.recall(query(tenant, question, k=10))

    assert {old.version.id, gone.version.id} <= {h.id for h in proposed.lexical}
    assert await term_keys(service, tenant, question) == ["door"]  # v2, by "code"
    assert await lexical_keys(service, tenant, question) == ["door"]
    assert [i.key for i in result.items] == ["door"] and result.items[0].version == 2
    assert result.stale == 3  # door v1, the erased safe, the expired gate
    assert degraded.degraded and [i.key for i in degraded.items] == ["door"]
    contents = " ".join(i.content for i in (*result.items, *degraded.items))
    assert "7731" not in contents and "9902" not in contents and "4410" not in contents


async def test_the_lexical_path_is_tenant_isolated(service: MemoryService) -> None:
    victim, attacker = new_tenant(), new_tenant()
    await service.remember(remember(victim, "plans", "falcon", "Project Falcon launches 3 May."))
    await service.remember(remember(attacker, "plans", "lunch", "Lunch is at noon."))

    question = "When does Project Falcon launch?"
    terms = query_terms(question)
    assert terms is not None
    scored = (await service.index.hybrid(victim, None, terms, k=5)).lexical
    before = await service.recall(query(victim, question, k=1))
    result = await service.recall(query(attacker, question, k=10))
    assert [i.key for i in result.items] == ["lunch"]
    assert await term_keys(service, attacker, "Falcon") == []
    # The index's term statistics are per tenant: the attacker flooding its own memory
    # with the word moves nothing in the victim's ranking (no probing through scores).
    for n in range(12):
        await service.remember(remember(attacker, "plans", f"f{n}", f"Falcon decoy {n}."))
    after = await service.recall(query(victim, question, k=1))
    rescored = (await service.index.hybrid(victim, None, terms, k=5)).lexical
    assert [i.key for i in after.items] == [i.key for i in before.items] == ["falcon"]
    assert [h.score for h in rescored] == pytest.approx([h.score for h in scored])
    # As SQL from the app role: the attacker's session naming the victim's tenant in the
    # query still sees nothing (row-level security), and no tenant at all sees nothing.
    async with tenant_transaction(service.pool, attacker) as conn:
        named = await store.lexical(
            conn, victim, "Falcon", namespaces=None, since=None, sensitivities=LEVELS, limit=10
        )
    async with service.pool.acquire() as conn, conn.transaction():
        unset = await store.lexical(
            conn, victim, "Falcon", namespaces=None, since=None, sensitivities=LEVELS, limit=10
        )
    assert named == [] and unset == []
    assert await lexical_keys(service, victim, "Falcon") == ["falcon"]


async def test_an_unindexed_write_is_found_through_its_terms(stack: Settings) -> None:
    tenant = new_tenant()
    async with open_service(stack, QdrantServerIndex(url="http://127.0.0.1:9")) as offline:
        written = await offline.remember(
            remember(tenant, "ops", "runbook", "Restart the billing cron nightly.")
        )
        result = await offline.recall(query(tenant, "billing cron restart"))

    assert not written.indexed
    assert result.degraded and [i.key for i in result.items] == ["runbook"]


# litellm builds some pydantic schemas on first use, which warn about `ReadOnly`.
@pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning")
async def test_with_the_model_down_the_index_still_answers_by_exact_terms(
    service: MemoryService,
) -> None:
    """The model unreachable: recall says degraded (and counts why) and still answers
    from the index's term ranking (the tenant's terms are not lagging, so Postgres does
    not rank them instead)."""
    tenant = new_tenant()
    await service.remember(remember(tenant, "ops", "runbook", "Restart the billing cron nightly."))
    await service.remember(remember(tenant, "ops", "menu", "The canteen serves soup on Fridays."))
    # Nothing listens on the discard port: every embedding call fails.
    dead_model = LiteLlmEmbedder(
        "openai/text-embedding-test", 384, api_base="http://127.0.0.1:9/v1", api_key="sk-test"
    )
    without_model = MemoryService(service.pool, service.index, dead_model)
    before = {reason: degraded_recalls(reason) for reason in REASONS}

    result = await without_model.recall(query(tenant, "billing cron restart", k=1))

    assert result.degraded and [i.key for i in result.items] == ["runbook"]
    after = {reason: degraded_recalls(reason) for reason in REASONS}
    assert after == {"embedding_unavailable": before["embedding_unavailable"] + 1,
                     "index_unavailable": before["index_unavailable"]}  # fmt: skip


async def test_a_lagging_index_leaves_exact_terms_to_postgres_until_it_catches_up(
    service: MemoryService, stack: Settings
) -> None:
    tenant = new_tenant()
    await service.remember(remember(tenant, "ops", "menu", "The canteen serves soup on Fridays."))
    async with open_service(stack, QdrantServerIndex(url="http://127.0.0.1:9")) as offline:
        written = await offline.remember(
            remember(tenant, "ops", "runbook", "Restart the billing cron nightly.")
        )
    question = "billing cron restart"

    lagging = await service.recall(query(tenant, question, k=1))
    assert not written.indexed and await term_keys(service, tenant, question) == []
    assert [i.key for i in lagging.items] == ["runbook"] and not lagging.degraded
    await service.reindex(tenant)
    caught_up = await service.recall(query(tenant, question, k=1))
    assert await term_keys(service, tenant, question) == ["runbook"]
    assert [i.key for i in caught_up.items] == ["runbook"] and caught_up.unindexed == 0


async def test_versions_indexed_before_term_vectors_get_them_from_reindex(
    service: MemoryService, stack: Settings
) -> None:
    tenant = new_tenant()
    written = await service.remember(
        remember(tenant, "ops", "vault", "The vault key rotates every quarter.")
    )
    # The state migration 0012 leaves a version indexed by an earlier release in: its
    # point has the embedding but no term vector.
    row = written.version
    [vector] = await EMBEDDER.embed([row.content or ""])
    payload = VectorPayload(
        tenant=tenant, namespace="ops", memory_id="m", version=1, sensitivity="internal"
    )
    await service.index.upsert([VectorPoint(id=row.id, vector=vector, payload=payload)])
    await admin_fetch(
        stack, "UPDATE memory_versions SET index_state = 'terms' WHERE id = $1::uuid", row.id
    )

    before = await service.recall(query(tenant, "vault key rotation", k=1))
    assert await term_keys(service, tenant, "vault key") == []
    assert [i.key for i in before.items] == ["vault"]  # ranked in Postgres meanwhile
    done = await service.reindex(tenant)
    [state] = await admin_fetch(
        stack, "SELECT index_state, indexed_model FROM memory_versions WHERE id = $1::uuid", row.id
    )
    assert done.indexed == 1 and state["index_state"] == "indexed"
    assert state["indexed_model"].endswith("+" + TERMS_MODEL)
    assert await term_keys(service, tenant, "vault key") == ["vault"]
    assert [h.id for h in await service.index.query(tenant, vector, k=1)] == [row.id]
