"""The embedded backend: the real Qdrant engine in process (`qdrant_edge.EdgeShard`).

Used by `stead dev up`, tests and CI, so one machine runs the full stack without a
Qdrant server. One shard lives under `path`; the engine holds an exclusive lock on
its WAL, so only one `EdgeVectorIndex` (in any process) can have a path open.
Share an index between processes through a Qdrant server instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    HasIdCondition,
    IdfParams,
    KeywordIndexParams,
    MatchAny,
    MatchValue,
    Modifier,
    PayloadSchemaType,
    Point,
    PointVectors,
    Query,
    QueryBatchRequest,
    QueryRequest,
    SearchParams,
    SparseVector,
    UpdateOperation,
)

from stead.vector.index import (
    MEMORY_ID_FIELD,
    NAMESPACE_FIELD,
    TENANT_FIELD,
    TERMS_VECTOR,
    HybridHits,
    TermVector,
    VectorHit,
    VectorIndexMismatch,
    VectorIndexUnavailable,
    VectorPoint,
    canonical_ids,
    check_k,
    check_tenant,
    hits_from,
)

if TYPE_CHECKING:
    # Aliases that exist only in the engine's type stubs, not at runtime.
    from qdrant_edge import ConditionType, PayloadSchemaParams, PointId, Vector

T = TypeVar("T")

# Written by `EdgeShard.create`; its presence is how we tell "load" from "create",
# because `load` on an empty dir and `create` on a used one both fail.
_CONFIG_FILE = "edge_config.json"

_INDEXES: dict[str, PayloadSchemaType | PayloadSchemaParams] = {
    TENANT_FIELD: KeywordIndexParams(is_tenant=True),
    NAMESPACE_FIELD: PayloadSchemaType.Keyword,
    MEMORY_ID_FIELD: PayloadSchemaType.Keyword,
}


class EdgeVectorIndex:
    """`VectorIndex` on an embedded shard; opens lazily so construction never blocks."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._shard: EdgeShard | None = None
        self._dim: int | None = None
        self._closed = False
        # The engine tolerates threads, but close() racing an in-flight call would
        # fail it with "Shard is not initialized": the lock guards the lifecycle (open,
        # ensure, close) and writes, and close waits for the reads in flight. Reads do
        # not hold it while the engine works, so recall's term query can run while its
        # question is embedded and the dense query of another recall runs beside it.
        self._lock = asyncio.Lock()
        self._reads = 0
        self._no_reads = asyncio.Event()
        self._no_reads.set()

    async def ensure_collection(self, dim: int) -> None:
        async with self._lock:
            self._check_open()
            if self._shard is not None and self._dim != dim:
                # Opened lazily without a config, so its dimension is unknown: reopen
                # with one and let the engine verify it against the stored segments.
                await self._no_reads.wait()
                await asyncio.to_thread(self._shard.close)
                self._shard = None
            if self._shard is None:
                self._shard = await asyncio.to_thread(self._open, dim)
                self._dim = dim
            await asyncio.to_thread(_ensure_schema, self._shard)

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        batch = [Point(p.id, _vectors(p), p.payload.model_dump(mode="json")) for p in points]
        await self._run(lambda shard: _write(shard, UpdateOperation.upsert_points(batch)))

    async def query(
        self,
        tenant: str,
        vector: Sequence[float],
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> list[VectorHit]:
        return list((await self.hybrid(tenant, vector, None, k, namespaces)).dense)

    async def hybrid(
        self,
        tenant: str,
        vector: Sequence[float] | None,
        terms: TermVector | None,
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> HybridHits:
        conditions = [_tenant_condition(tenant)]
        if namespaces is not None:
            if not namespaces:
                return HybridHits()
            conditions.append(FieldCondition(NAMESPACE_FIELD, match=MatchAny(list(namespaces))))
        scope = Filter(must=conditions)
        requests = []
        if vector is not None:
            requests.append(
                QueryRequest(
                    limit=check_k(k),
                    query=Query.Nearest(list(vector)),
                    filter=scope,
                    with_payload=True,
                )
            )
        if terms is not None:
            # IDF over this tenant's points only: another tenant's corpus never moves a
            # score (and so cannot be probed through one).
            requests.append(
                QueryRequest(
                    limit=check_k(k),
                    query=Query.Nearest(_sparse(terms), using=TERMS_VECTOR),
                    filter=scope,
                    params=SearchParams(
                        idf=IdfParams(corpus=Filter(must=[_tenant_condition(tenant)]))
                    ),
                    with_payload=True,
                )
            )
        if not requests:
            return HybridHits()
        batch = QueryBatchRequest(requests)
        answers = await self._read(lambda shard: shard.query_batch(batch))
        dense = hits_from(answers.pop(0)) if vector is not None else ()
        lexical = hits_from(answers.pop(0)) if terms is not None else ()
        return HybridHits(dense=dense, lexical=lexical)

    async def set_terms(self, tenant: str, terms: Mapping[str, TermVector]) -> list[str]:
        wanted = dict(zip(canonical_ids(list(terms)), terms.values(), strict=True))
        if not wanted:
            return []
        scope = Filter(must=[_tenant_condition(tenant)])

        def backfill(shard: EdgeShard) -> list[str]:
            # Only points that exist and are this tenant's: the engine refuses a whole
            # batch for one missing id (a point deleted meanwhile).
            ids: list[PointId] = list(wanted)
            present = shard.retrieve(ids, True, False)
            vectors = [
                PointVectors(r.id, {TERMS_VECTOR: _sparse(wanted[str(r.id)])})
                for r in present
                if (r.payload or {}).get(TENANT_FIELD) == tenant
            ]
            if vectors:
                _write(shard, UpdateOperation.update_vectors(vectors, scope))
            return [str(v.id) for v in vectors]

        return await self._run(backfill)

    async def delete(self, tenant: str, point_ids: Sequence[str]) -> None:
        ids: set[PointId] = set(canonical_ids(point_ids))
        if not ids:
            return
        # Deleting by filter, not by id, is what keeps another tenant's ids inert.
        scope = Filter(must=[_tenant_condition(tenant), HasIdCondition(ids)])
        await self._run(lambda shard: _write(shard, UpdateOperation.delete_points_by_filter(scope)))

    async def count(self, tenant: str) -> int:
        request = CountRequest(exact=True, filter=Filter(must=[_tenant_condition(tenant)]))
        return await self._read(lambda shard: shard.count(request))

    async def optimize(self) -> bool:
        # Counted as a read, not under the write lock: the engine optimizes segment
        # copies (proxy segments) while queries and writes go on.
        return await self._read(lambda shard: shard.optimize())

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._no_reads.wait()
            if self._shard is not None:
                await asyncio.to_thread(self._shard.close)
                self._shard = None

    async def _run(self, op: Callable[[EdgeShard], T]) -> T:
        """A write (or a read-modify-write): one at a time, under the lifecycle lock."""
        async with self._lock:
            shard = await self._opened()
            return await asyncio.to_thread(op, shard)

    async def _read(self, op: Callable[[EdgeShard], T]) -> T:
        """A read: the lock only to find the shard open; counted, so close waits for it."""
        async with self._lock:
            shard = await self._opened()
            self._reads += 1
            self._no_reads.clear()
        try:
            return await asyncio.to_thread(op, shard)
        finally:
            self._reads -= 1
            if not self._reads:
                self._no_reads.set()

    async def _opened(self) -> EdgeShard:
        self._check_open()
        if self._shard is None:
            # A shard from an earlier process is usable before ensure_collection.
            self._shard = await asyncio.to_thread(self._open, None)
        return self._shard

    def _check_open(self) -> None:
        if self._closed:
            raise VectorIndexUnavailable(f"the vector index at {self._path} was closed")

    def _open(self, dim: int | None) -> EdgeShard:
        where = str(self._path)
        if (self._path / _CONFIG_FILE).exists():
            try:
                return EdgeShard.load(where, None if dim is None else _config(dim, terms=False))
            except Exception as exc:  # the engine raises bare Exception for everything
                if "incompatible" in str(exc):
                    raise VectorIndexMismatch(
                        f"the vector shard at {where} does not match dim={dim}, cosine ({exc}); "
                        "the embedding model changed: delete the dir and re-index from Postgres"
                    ) from exc
                raise VectorIndexUnavailable(
                    f"cannot open the vector shard at {where} ({exc}); if another process "
                    "holds it, stop that process or point STEAD_QDRANT_URL at a Qdrant server"
                ) from exc
        if dim is None:
            raise VectorIndexUnavailable(
                f"no vector shard at {where} yet; call ensure_collection(dim) to create it"
            )
        try:
            return EdgeShard.create(where, _config(dim, terms=True))
        except Exception as exc:
            raise VectorIndexUnavailable(
                f"cannot create the vector shard at {where} ({exc}); is the dir writable?"
            ) from exc


def _config(dim: int, *, terms: bool) -> EdgeConfig:
    """`terms`: declare the sparse vector (a new shard). An existing shard is loaded
    without declaring it, which inherits what it has (a shard from before term vectors
    fails a load that declares them); `_ensure_schema` adds it then."""
    sparse = {TERMS_VECTOR: EdgeSparseVectorParams(modifier=Modifier.Idf)} if terms else None
    return EdgeConfig(
        vectors=EdgeVectorParams(size=dim, distance=Distance.Cosine), sparse_vectors=sparse
    )


def _vectors(point: VectorPoint) -> Vector:
    if point.terms is None:
        return list(point.vector)
    return {"": list(point.vector), TERMS_VECTOR: _sparse(point.terms)}


def _sparse(terms: TermVector) -> SparseVector:
    return SparseVector(list(terms.indices), list(terms.values))


def _tenant_condition(tenant: str) -> ConditionType:
    return FieldCondition(TENANT_FIELD, match=MatchValue(check_tenant(tenant)))


def _ensure_schema(shard: EdgeShard) -> None:
    """Payload indexes, and the sparse term vector on a shard made before it existed
    (the engine adds it in place and ignores a repeat; its points get their terms from
    `stead memory reindex`)."""
    existing = shard.info().payload_schema
    missing = [field for field in _INDEXES if field not in existing]
    for field in missing:
        shard.update(UpdateOperation.create_field_index(field, _INDEXES[field]))
    shard.update(UpdateOperation.create_sparse_vector(TERMS_VECTOR, Modifier.Idf))
    shard.flush()


def _write(shard: EdgeShard, operation: UpdateOperation) -> None:
    # The WAL already survives a crash; flushing makes the segments themselves current,
    # so a reopen does not depend on WAL replay.
    shard.update(operation)
    shard.flush()
