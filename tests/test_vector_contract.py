"""One contract, both vector backends: the embedded engine and the qdrant-client API.

Tenant isolation (invariant 5) is the point of most of these tests: the vectors are
hand-made so that the other tenant's point is always the better match.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from qdrant_client import models
from qdrant_edge import Distance, EdgeConfig, EdgeShard, EdgeVectorParams, Point, UpdateOperation

from stead.vector import (
    EdgeVectorIndex,
    HybridHits,
    QdrantServerIndex,
    TermVector,
    VectorIndex,
    VectorIndexMismatch,
    VectorIndexUnavailable,
    VectorPayload,
    VectorPoint,
    open_vector_index,
)
from stead.vector.terms import document_terms, query_terms

# qdrant-client's local mode (the "server-local" backend) has no payload indexes and
# warns on every create_payload_index; the real server builds them, so ignore only that.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Payload indexes have no effect in the local Qdrant:UserWarning"
)

DIM = 4
EAST = [1.0, 0.0, 0.0, 0.0]
NORTH = [0.0, 1.0, 0.0, 0.0]
UP = [0.0, 0.0, 1.0, 0.0]
NORTH_EAST = [0.9, 0.1, 0.0, 0.0]


def point(
    tenant: str,
    vector: list[float],
    *,
    namespace: str = "notes",
    point_id: str | None = None,
    version: int = 1,
) -> VectorPoint:
    return VectorPoint(
        id=point_id or str(uuid.uuid4()),
        vector=vector,
        payload=VectorPayload(
            tenant=tenant,
            namespace=namespace,
            memory_id=f"mem-{uuid.uuid4().hex[:8]}",
            version=version,
            sensitivity="internal",
            expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        ),
    )


@pytest.fixture(params=["edge", "server-local"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    backend: VectorIndex
    if request.param == "edge":
        backend = EdgeVectorIndex(tmp_path / "qdrant")
    else:
        backend = QdrantServerIndex(location=":memory:")
    await backend.ensure_collection(DIM)
    yield backend
    await backend.close()


async def test_query_returns_nearest_point_of_the_tenant_first(index: VectorIndex) -> None:
    east, north, north_east = point("acme", EAST), point("acme", NORTH), point("acme", NORTH_EAST)
    await index.upsert([north, east, north_east])

    hits = await index.query("acme", EAST, k=3)

    assert [hit.id for hit in hits] == [east.id, north_east.id, north.id]
    assert hits[0].score == pytest.approx(1.0)
    assert hits[0].payload == east.payload


async def test_tenant_never_sees_another_tenants_exact_match(index: VectorIndex) -> None:
    acme_secret = point("acme", EAST)
    globex_note = point("globex", UP)
    await index.upsert([acme_secret, globex_note])

    hits = await index.query("globex", EAST, k=10)

    assert [hit.id for hit in hits] == [globex_note.id]
    assert await index.query("initech", EAST, k=10) == []


async def test_namespace_filter_matches_any_listed_namespace(index: VectorIndex) -> None:
    note = point("acme", EAST, namespace="notes")
    task = point("acme", NORTH_EAST, namespace="tasks")
    contact = point("acme", EAST, namespace="contacts")
    await index.upsert([note, task, contact])

    hits = await index.query("acme", EAST, k=10, namespaces=["notes", "tasks"])

    assert [hit.id for hit in hits] == [note.id, task.id]
    assert await index.query("acme", EAST, k=10, namespaces=[]) == []


async def test_delete_removes_point_from_query_and_count(index: VectorIndex) -> None:
    gone, kept = point("acme", EAST), point("acme", NORTH)
    await index.upsert([gone, kept])

    await index.delete("acme", [gone.id])

    assert [hit.id for hit in await index.query("acme", EAST, k=10)] == [kept.id]
    assert await index.count("acme") == 1


async def test_delete_in_the_name_of_another_tenant_keeps_the_point(index: VectorIndex) -> None:
    victim = point("acme", EAST)
    await index.upsert([victim])

    await index.delete("globex", [victim.id])

    assert await index.count("acme") == 1


async def test_upsert_with_the_same_id_replaces_the_point(index: VectorIndex) -> None:
    first = point("acme", EAST, version=1)
    second = point("acme", NORTH, point_id=first.id, version=2)
    await index.upsert([first])

    await index.upsert([second])

    hits = await index.query("acme", NORTH, k=10)
    assert [(hit.id, hit.payload.version) for hit in hits] == [(first.id, 2)]
    assert hits[0].score == pytest.approx(1.0)
    assert await index.count("acme") == 1


async def test_count_is_per_tenant(index: VectorIndex) -> None:
    await index.upsert([point("acme", EAST), point("acme", NORTH), point("globex", UP)])

    assert (await index.count("acme"), await index.count("globex")) == (2, 1)


async def test_ensure_collection_twice_keeps_the_points(index: VectorIndex) -> None:
    stored = point("acme", EAST)
    await index.upsert([stored])

    await index.ensure_collection(DIM)

    assert [hit.id for hit in await index.query("acme", EAST, k=1)] == [stored.id]


async def test_ensure_collection_with_another_dim_is_a_mismatch(index: VectorIndex) -> None:
    with pytest.raises(VectorIndexMismatch):
        await index.ensure_collection(DIM * 2)


async def test_empty_tenant_is_refused(index: VectorIndex) -> None:
    with pytest.raises(ValueError, match="tenant"):
        await index.query("", EAST, k=1)


async def test_optimize_keeps_the_answers_and_the_tenant_scope(index: VectorIndex) -> None:
    east, north = point("acme", EAST), point("acme", NORTH)
    globex_east = point("globex", EAST)
    await index.upsert([east, north, globex_east])
    before = [hit.id for hit in await index.query("acme", EAST, k=3)]

    assert isinstance(await index.optimize(), bool)
    await index.upsert([later := point("acme", NORTH_EAST)])

    assert [hit.id for hit in await index.query("acme", EAST, k=3)] == [
        before[0],
        later.id,
        before[1],
    ]
    assert [hit.id for hit in await index.query("globex", NORTH, k=3)] == [globex_east.id]


async def test_edge_close_waits_for_reads_in_flight_and_refuses_later_ones(
    tmp_path: Path,
) -> None:
    """Reads do not hold the lifecycle lock while the engine works (recall's two index
    queries overlap), so close must wait for them: a read either answers or is refused
    as unavailable, never fails inside a shard closed under it."""
    index = EdgeVectorIndex(tmp_path / "qdrant")
    await index.ensure_collection(DIM)
    stored = point("acme", EAST)
    await index.upsert([stored])
    terms = query_terms("east")

    answers = await asyncio.gather(
        *(index.hybrid("acme", EAST, terms, 5) for _ in range(8)),
        index.close(),
        *(index.query("acme", EAST, 1) for _ in range(4)),
        return_exceptions=True,
    )

    for answer in answers:
        assert answer is None or isinstance(answer, (HybridHits, list, VectorIndexUnavailable))
        if isinstance(answer, HybridHits):
            assert [hit.id for hit in answer.dense] == [stored.id]
    with pytest.raises(VectorIndexUnavailable):
        await index.query("acme", EAST, 1)


async def test_edge_data_survives_close_and_reopen(tmp_path: Path) -> None:
    stored = point("acme", EAST)
    first = EdgeVectorIndex(tmp_path / "qdrant")
    await first.ensure_collection(DIM)
    await first.upsert([stored])
    await first.close()

    reopened = EdgeVectorIndex(tmp_path / "qdrant")
    try:
        hits = await reopened.query("acme", EAST, k=1)
        await reopened.ensure_collection(DIM)
        assert [(hit.id, hit.payload) for hit in hits] == [(stored.id, stored.payload)]
        assert await reopened.count("acme") == 1
    finally:
        await reopened.close()


async def test_edge_second_opener_of_a_path_is_unavailable(tmp_path: Path) -> None:
    holder = EdgeVectorIndex(tmp_path / "qdrant")
    await holder.ensure_collection(DIM)
    try:
        with pytest.raises(VectorIndexUnavailable, match="another process"):
            await EdgeVectorIndex(tmp_path / "qdrant").count("acme")
    finally:
        await holder.close()


async def test_edge_query_before_any_shard_exists_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(VectorIndexUnavailable, match="ensure_collection"):
        await EdgeVectorIndex(tmp_path / "qdrant").count("acme")


async def test_server_unreachable_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    index = QdrantServerIndex(url=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(VectorIndexUnavailable, match=f"127.0.0.1:{port}"):
            await index.ensure_collection(DIM)
    finally:
        await index.close()


async def test_factory_uses_the_server_only_when_a_url_is_set(tmp_path: Path) -> None:
    embedded = open_vector_index(None, tmp_path)
    remote = open_vector_index("http://127.0.0.1:6333", tmp_path)
    try:
        assert isinstance(embedded, EdgeVectorIndex)
        assert isinstance(remote, QdrantServerIndex)
    finally:
        await embedded.close()
        await remote.close()


def test_points_reject_unknown_fields_and_non_uuid_ids() -> None:
    payload = point("acme", EAST).payload.model_dump()
    with pytest.raises(ValidationError):
        VectorPayload.model_validate({**payload, "text": "leaked content"})
    with pytest.raises(ValidationError):
        VectorPoint(id="memory-1", vector=EAST, payload=VectorPayload.model_validate(payload))


# ------------------------------------------------------------------ term vectors


def with_terms(p: VectorPoint, text: str) -> VectorPoint:
    return p.model_copy(update={"terms": document_terms(text)})


def lexical_query(text: str) -> TermVector:
    terms = query_terms(text)
    assert terms is not None
    return terms


async def test_hybrid_ranks_exact_terms_within_the_tenant_only(index: VectorIndex) -> None:
    disputed = with_terms(point("acme", NORTH), "Invoice 88123 was disputed by the customer.")
    paid = with_terms(point("acme", EAST), "Invoice 55012 was paid by the customer.")
    await index.upsert([disputed, paid])
    question = lexical_query("Which invoice is 88123?")

    alone = await index.hybrid("acme", EAST, question, k=5)
    # Another tenant full of the same rare term: acme's IDF (and so its scores) must not
    # move, or a tenant could probe another's corpus through its own scores.
    await index.upsert(
        [with_terms(point("globex", EAST), f"Invoice 88123 copy {n}") for n in range(20)]
    )
    crowded = await index.hybrid("acme", EAST, question, k=5)

    assert [h.id for h in alone.dense] == [paid.id, disputed.id]
    assert [h.id for h in alone.lexical] == [disputed.id, paid.id]  # "invoice" is in both
    assert [h.score for h in crowded.lexical] == pytest.approx([h.score for h in alone.lexical])
    assert {h.payload.tenant for h in crowded.lexical} == {"acme"}
    assert (await index.hybrid("initech", None, question, k=5)).lexical == ()


async def test_hybrid_without_a_vector_ranks_terms_only(index: VectorIndex) -> None:
    note = with_terms(point("acme", EAST, namespace="notes"), "The quokka is friendly.")
    task = with_terms(point("acme", EAST, namespace="tasks"), "Feed the quokka.")
    await index.upsert([note, task])

    found = await index.hybrid("acme", None, lexical_query("quokka"), k=5, namespaces=["tasks"])

    assert found.dense == () and [h.id for h in found.lexical] == [task.id]
    assert await index.hybrid("acme", None, lexical_query("quokka"), k=5, namespaces=[]) == (
        HybridHits()
    )


async def test_set_terms_backfills_a_point_and_skips_others_and_missing(
    index: VectorIndex,
) -> None:
    old = point("acme", EAST)  # written before term vectors existed
    foreign = point("globex", EAST)
    await index.upsert([old, foreign])
    terms = document_terms("The wombat ledger was closed.")
    missing = str(uuid.uuid4())

    before = await index.hybrid("acme", None, lexical_query("wombat ledger"), k=5)
    done = await index.set_terms("acme", {old.id: terms, foreign.id: terms, missing: terms})
    after = await index.hybrid("acme", EAST, lexical_query("wombat ledger"), k=5)

    assert before.lexical == () and done == [old.id]
    assert [h.id for h in after.lexical] == [old.id]
    assert [h.id for h in after.dense] == [old.id]  # its embedding stayed
    assert (await index.hybrid("globex", None, lexical_query("wombat"), k=5)).lexical == ()


async def assert_upgraded(upgraded: VectorIndex, stored: VectorPoint) -> None:
    """Opened like any index, the old store gains term vectors and keeps its point."""
    await upgraded.ensure_collection(DIM)
    await upgraded.set_terms("acme", {stored.id: document_terms("wombat ledger")})
    found = await upgraded.hybrid("acme", EAST, lexical_query("wombat"), k=5)
    assert [h.id for h in found.dense] == [stored.id]
    assert [h.id for h in found.lexical] == [stored.id]


async def test_a_shard_from_before_term_vectors_gains_them_in_place(tmp_path: Path) -> None:
    stored = point("acme", EAST)
    old = EdgeShard.create(
        str(tmp_path / "qdrant"),
        EdgeConfig(vectors=EdgeVectorParams(size=DIM, distance=Distance.Cosine)),
    )
    old.update(
        UpdateOperation.upsert_points(
            [Point(stored.id, list(stored.vector), stored.payload.model_dump(mode="json"))]
        )
    )
    old.flush()
    old.close()

    upgraded = EdgeVectorIndex(tmp_path / "qdrant")
    try:
        await assert_upgraded(upgraded, stored)
    finally:
        await upgraded.close()


async def test_a_collection_from_before_term_vectors_gains_them_in_place() -> None:
    stored = point("acme", EAST)
    upgraded = QdrantServerIndex(location=":memory:")
    client = upgraded._client  # the collection as the previous release created it
    try:
        await client.create_collection(
            "stead_memory",
            vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        )
        await client.upsert(
            "stead_memory",
            points=[
                models.PointStruct(
                    id=stored.id,
                    vector=list(stored.vector),
                    payload=stored.payload.model_dump(mode="json"),
                )
            ],
        )
        await assert_upgraded(upgraded, stored)
    finally:
        await upgraded.close()
