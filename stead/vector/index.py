"""The vector-index contract every backend honours, and the models that cross it.

Postgres is the truth for memory; the vector index only ranks candidates. So the
contract is deliberately small, and tenant isolation lives *in* it: every read and
delete takes the tenant as a required argument and filters on it inside the engine,
never after the fact and never from caller-supplied payload.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, AwareDatetime, Field, TypeAdapter

from stead.contracts.base import Closed
from stead.errors import ConfigError, ErrorCode, SteadError

Sensitivity = Literal["public", "internal", "pii", "secret"]

TENANT_FIELD = "tenant"
NAMESPACE_FIELD = "namespace"
MEMORY_ID_FIELD = "memory_id"
# The sparse (BM25-style) vector stored beside the dense one in the same point; the
# engine applies the IDF modifier at query time, over the querying tenant's points only.
TERMS_VECTOR = "terms"


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _canonical_uuid(value: str) -> str:
    # Engines hand ids back in canonical form; normalising on the way in keeps
    # `hit.id == point.id` true for callers who wrote an upper-case UUID. A canonical
    # id is its own normal form (recall checks ~100 hits per question: no parse).
    if _CANONICAL_UUID.fullmatch(value):
        return value
    return str(uuid.UUID(value))


PointId = Annotated[str, AfterValidator(_canonical_uuid)]
TenantId = Annotated[str, Field(min_length=1)]


class VectorPayload(Closed):
    """What the index may know about a memory: enough to filter and to find the row
    in Postgres, nothing that would leak content if the index were copied."""

    tenant: TenantId
    namespace: str = Field(min_length=1)
    memory_id: str = Field(min_length=1)
    version: int = Field(ge=0)
    sensitivity: Sensitivity
    # Aware only: a naive expiry would be read in whatever zone the reader runs in.
    expires_at: AwareDatetime | None = None


class TermVector(Closed):
    """A text's terms as a sparse vector: hashed token ids and their weights (term
    frequency, saturated and length-normalised, for a document; 1.0 each for a query).
    Hashes only: like the payload, it never carries the content itself."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


class VectorPoint(Closed):
    """One embedding to store; the id is a UUID because both engines require one.

    `terms` makes the point findable by its exact terms too (`VectorIndex.hybrid`)."""

    id: PointId
    vector: list[float] = Field(min_length=1)
    payload: VectorPayload
    terms: TermVector | None = None


class VectorHit(Closed):
    """A ranked candidate; the payload is re-validated so a foreign write cannot
    smuggle fields past the contract."""

    id: PointId
    score: float
    payload: VectorPayload


class HybridHits(Closed):
    """Both rankings of one `hybrid` call, each best first, fused by the caller."""

    dense: tuple[VectorHit, ...] = ()
    lexical: tuple[VectorHit, ...] = ()


class VectorIndexUnavailable(SteadError):
    """The backend cannot be reached or opened; callers degrade to Postgres-only recall
    instead of failing the run."""

    code = ErrorCode.SERVICE_NOT_READY


class VectorIndexMismatch(ConfigError):
    """The stored collection was built for another dimension or distance: usually the
    embedding model changed, and the index must be rebuilt, not silently mixed."""


class VectorIndex(Protocol):
    """A tenant-scoped nearest-neighbour index over memory embeddings."""

    async def ensure_collection(self, dim: int) -> None:
        """Create the collection and its payload indexes if missing; safe to repeat.

        Raises `VectorIndexMismatch` if it exists with another dimension."""
        ...

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        """Insert or replace points by id; durable when this returns."""
        ...

    async def query(
        self,
        tenant: str,
        vector: Sequence[float],
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> list[VectorHit]:
        """The `k` nearest points of `tenant`, best first; `namespaces` matches any
        listed (an empty list matches nothing, `None` matches all)."""
        ...

    async def hybrid(
        self,
        tenant: str,
        vector: Sequence[float] | None,
        terms: TermVector | None,
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> HybridHits:
        """In one engine call, the `k` nearest points of `tenant` by `vector` and the `k`
        best by `terms` (BM25: the engine's IDF over this tenant's points only, so
        another tenant's corpus never shifts a score); either may be None (no ranking)."""
        ...

    async def set_terms(self, tenant: str, terms: Mapping[str, TermVector]) -> list[str]:
        """Give existing points of `tenant` their term vector, keeping the dense one: the
        backfill for points written before term vectors existed. Returns the ids done;
        a missing point, or another tenant's, is skipped (and not returned)."""
        ...

    async def delete(self, tenant: str, point_ids: Sequence[str]) -> None:
        """Remove the listed points that belong to `tenant`; others' ids are ignored."""
        ...

    async def count(self, tenant: str) -> int:
        """Exact number of points stored for `tenant`."""
        ...

    async def optimize(self) -> bool:
        """Build the engine's search structures (HNSW graphs, per tenant) over what was
        written since; True if there was anything to do. Until then a query scores every
        point of the shard, not only the tenant's (7 ms instead of 1 at 100k points).
        The embedded engine has no background optimizer, so the scheduled reindex calls
        this; a Qdrant server optimizes by itself (no-op). Blocking: seconds to minutes
        after a bulk load; reads and writes go on meanwhile."""
        ...

    async def close(self) -> None:
        """Release the engine or connection; idempotent."""
        ...


_HITS: TypeAdapter[tuple[VectorHit, ...]] = TypeAdapter(tuple[VectorHit, ...])


def hits_from(scored: Iterable[Any]) -> tuple[VectorHit, ...]:
    """An engine's scored points (either backend's type: id, score, payload) as hits,
    each payload re-validated against the contract (all of them in one validator call:
    a model per hit built in Python cost recall ~2 ms for 100 candidates)."""
    return _HITS.validate_python(
        [
            {"id": str(point.id), "score": point.score, "payload": point.payload or {}}
            for point in scored
        ]
    )


def check_tenant(tenant: str) -> str:
    """Refuse an empty tenant loudly: filtering on "" would quietly match nothing and
    hide a caller bug that, elsewhere, could widen access."""
    if not tenant:
        raise ValueError("tenant must be a non-empty string; every vector query is tenant-scoped")
    return tenant


def check_k(k: int) -> int:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return k


def canonical_ids(point_ids: Sequence[str]) -> list[str]:
    """Validate ids before they reach an engine, whose parse errors are untyped."""
    try:
        return [_canonical_uuid(point_id) for point_id in point_ids]
    except ValueError as exc:
        raise ValueError(f"point ids must be UUID strings: {exc}") from exc
