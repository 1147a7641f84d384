"""The production backend: a Qdrant server through `qdrant_client.AsyncQdrantClient`.

`location=":memory:"` runs qdrant-client's local mode, a pure-Python stand-in that
keeps the contract tests honest without a server; it ignores payload indexes and
warns that it does, which is harmless for correctness.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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

_INDEXES: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
    TENANT_FIELD: models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
    NAMESPACE_FIELD: models.PayloadSchemaType.KEYWORD,
    MEMORY_ID_FIELD: models.PayloadSchemaType.KEYWORD,
}


class QdrantServerIndex:
    """`VectorIndex` on one collection of a Qdrant server (or local mode in tests)."""

    def __init__(
        self,
        url: str | None = None,
        location: str | None = None,
        collection: str = "stead_memory",
        api_key: str | None = None,
    ) -> None:
        if (url is None) == (location is None):
            raise ValueError("give exactly one of url (a Qdrant server) or location (local mode)")
        self._where = url or location
        self._collection = collection
        # The compatibility probe runs in a thread at construction and only warns;
        # an unreachable server must surface as VectorIndexUnavailable on first use.
        # api_key: the server's QDRANT__SERVICE__API_KEY (compose requires one).
        self._client = AsyncQdrantClient(
            url=url, location=location, api_key=api_key, check_compatibility=False
        )

    async def ensure_collection(self, dim: int) -> None:
        async with self._reachable():
            if not await self._client.collection_exists(self._collection):
                try:
                    await self._client.create_collection(
                        self._collection,
                        vectors_config=models.VectorParams(
                            size=dim, distance=models.Distance.COSINE
                        ),
                        sparse_vectors_config={
                            TERMS_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                        },
                    )
                except UnexpectedResponse as exc:
                    if exc.status_code != 409:  # 409: another worker created it first
                        raise
            info = await self._client.get_collection(self._collection)
            self._check_shape(info, dim)
            if TERMS_VECTOR not in (info.config.params.sparse_vectors or {}):
                await self._add_terms_vector()
            for field, schema in _INDEXES.items():
                if field not in info.payload_schema:
                    await self._client.create_payload_index(
                        self._collection, field, field_schema=schema, wait=True
                    )

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        batch = [
            models.PointStruct(
                id=p.id, vector=_vectors(p), payload=p.payload.model_dump(mode="json")
            )
            for p in points
        ]
        async with self._reachable():
            await self._client.upsert(self._collection, points=batch, wait=True)

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
        conditions: list[models.Condition] = [_tenant_condition(tenant)]
        if namespaces is not None:
            if not namespaces:
                return HybridHits()
            conditions.append(
                models.FieldCondition(
                    key=NAMESPACE_FIELD, match=models.MatchAny(any=list(namespaces))
                )
            )
        scope = models.Filter(must=conditions)
        requests = []
        if vector is not None:
            requests.append(
                models.QueryRequest(
                    query=list(vector), filter=scope, limit=check_k(k), with_payload=True
                )
            )
        if terms is not None:
            # IDF over this tenant's points only (see stead/vector/terms.py).
            corpus = models.Filter(must=[_tenant_condition(tenant)])
            requests.append(
                models.QueryRequest(
                    query=_sparse(terms),
                    using=TERMS_VECTOR,
                    filter=scope,
                    limit=check_k(k),
                    with_payload=True,
                    params=models.SearchParams(idf=models.IdfCorpusParams(corpus=corpus)),
                )
            )
        if not requests:
            return HybridHits()
        async with self._reachable():
            answers = await self._client.query_batch_points(self._collection, requests=requests)
        ranked = [hits_from(answer.points) for answer in answers]
        return HybridHits(
            dense=ranked.pop(0) if vector is not None else (),
            lexical=ranked.pop(0) if terms is not None else (),
        )

    async def set_terms(self, tenant: str, terms: Mapping[str, TermVector]) -> list[str]:
        wanted = dict(zip(canonical_ids(list(terms)), terms.values(), strict=True))
        if not wanted:
            return []
        async with self._reachable():
            # Only points that exist and are this tenant's: the server refuses a whole
            # batch for one missing id (a point deleted meanwhile).
            present = await self._client.retrieve(
                self._collection, ids=list(wanted), with_payload=True, with_vectors=False
            )
            vectors = [
                models.PointVectors(id=r.id, vector={TERMS_VECTOR: _sparse(wanted[str(r.id)])})
                for r in present
                if (r.payload or {}).get(TENANT_FIELD) == tenant
            ]
            if vectors:
                await self._client.update_vectors(self._collection, points=vectors, wait=True)
        return [str(v.id) for v in vectors]

    async def delete(self, tenant: str, point_ids: Sequence[str]) -> None:
        ids: list[models.ExtendedPointId] = list(canonical_ids(point_ids))
        if not ids:
            return
        # Deleting by filter, not by id, is what keeps another tenant's ids inert.
        scope = models.Filter(must=[_tenant_condition(tenant), models.HasIdCondition(has_id=ids)])
        async with self._reachable():
            await self._client.delete(
                self._collection, points_selector=models.FilterSelector(filter=scope), wait=True
            )

    async def count(self, tenant: str) -> int:
        async with self._reachable():
            result = await self._client.count(
                self._collection,
                count_filter=models.Filter(must=[_tenant_condition(tenant)]),
                exact=True,
            )
        return result.count

    async def optimize(self) -> bool:
        # A server runs its optimizers in the background; local mode has no index.
        return False

    async def close(self) -> None:
        await self._client.close()

    async def _add_terms_vector(self) -> None:
        """A collection from before term vectors: add the sparse vector in place (its
        points get their terms from `stead memory reindex`)."""
        config = models.SparseVectorNameConfig(
            sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF)
        )
        try:
            await self._client.create_vector_name(self._collection, TERMS_VECTOR, config)
        except UnexpectedResponse as exc:
            if exc.status_code not in (400, 409):  # another worker added it first
                raise

    def _check_shape(self, info: models.CollectionInfo, dim: int) -> None:
        params = info.config.params.vectors
        if not (
            isinstance(params, models.VectorParams)
            and params.size == dim
            and params.distance == models.Distance.COSINE
        ):
            raise VectorIndexMismatch(
                f"collection {self._collection!r} at {self._where} is not a single cosine "
                f"vector of dim={dim} ({params}); the embedding model changed: "
                "recreate the collection and re-index from Postgres"
            )

    @asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        try:
            yield
        except (ResponseHandlingException, httpx.TransportError) as exc:
            raise self._unavailable(exc) from exc
        except UnexpectedResponse as exc:
            if exc.status_code in (401, 403):
                # A deployment mistake, not the caller's: degrade like an outage, say what.
                raise VectorIndexUnavailable(
                    f"Qdrant at {self._where} refused Stead's API key (HTTP {exc.status_code}); "
                    "recall degrades to Postgres only. Set STEAD_QDRANT_API_KEY to the "
                    "server's key."
                ) from exc
            if exc.status_code is not None and exc.status_code >= 500:
                raise self._unavailable(exc) from exc
            raise

    def _unavailable(self, exc: Exception) -> VectorIndexUnavailable:
        return VectorIndexUnavailable(
            f"Qdrant at {self._where} did not answer ({exc}); recall degrades to Postgres "
            "only. Is the server running, and is STEAD_QDRANT_URL right?"
        )


def _vectors(point: VectorPoint) -> models.VectorStruct:
    if point.terms is None:
        return list(point.vector)
    return {"": list(point.vector), TERMS_VECTOR: _sparse(point.terms)}


def _sparse(terms: TermVector) -> models.SparseVector:
    return models.SparseVector(indices=list(terms.indices), values=list(terms.values))


def _tenant_condition(tenant: str) -> models.FieldCondition:
    return models.FieldCondition(
        key=TENANT_FIELD, match=models.MatchValue(value=check_tenant(tenant))
    )
