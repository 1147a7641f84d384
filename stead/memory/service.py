"""The memory service: versioned, provenance-tracked, tenant-isolated memory.

Postgres is the truth and the vector index only ranks. So every answer is checked
against Postgres before it leaves: a hit whose version was superseded, erased or has
expired is dropped (a stale index never leaks an old value), and a hit the caller
may not read is withheld. When the index (or the embedding model) is unavailable,
recall still answers from Postgres full-text search and says so (`degraded`); when
Postgres is unavailable, nothing answers, and the error says why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from stead.audit.log import AuditEvent, append_event
from stead.contracts.run import canonical_json
from stead.db.pool import tenant_transaction
from stead.embeddings.base import Embedder, EmbeddingUnavailable
from stead.memory import cues, store, when
from stead.memory.contracts import (
    Consistency,
    EraseResult,
    MemoryVersion,
    PurgeResult,
    RecallItem,
    RecallQuery,
    RecallResult,
    ReindexResult,
    RememberRequest,
    RememberResult,
)
from stead.memory.db import db_errors
from stead.memory.errors import MemoryConflict, MemoryNotFound
from stead.memory.fusion import DEFAULT_FUSION, Fusion
from stead.memory.indexer import Indexer, embedding_text
from stead.memory.metrics import DEGRADED_RECALLS
from stead.memory.privacy import ReadGate, cleared
from stead.memory.series import SeriesStore
from stead.memory.state import StateStore
from stead.memory.views import recall_item, shown
from stead.policy.opa import OpaClient, PolicyUnavailable, PolicyUndefined
from stead.vector import VectorIndex, VectorIndexUnavailable
from stead.vector.index import HybridHits, TermVector
from stead.vector.terms import query_terms

SYSTEM_ACTOR = "service:stead-memory"
CONSISTENCY_DECISION = "stead/memory/consistency"
CONSISTENCY_TTL = 5.0  # seconds a namespace's policy is reused before OPA is asked again
# A 'fresh' recall embeds at most this many unindexed writes (newest first); a backlog
# larger than that is the reindex schedule's job, and still found through its terms.
FRESH_LIMIT = 32
log = logging.getLogger("stead.memory")


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


class MemoryService:
    """One per worker (or CLI call); shares the worker's pool, index and OPA client."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        index: VectorIndex,
        embedder: Embedder,
        opa: OpaClient | None = None,
        fusion: Fusion = DEFAULT_FUSION,
    ) -> None:
        self._pool = pool
        self.fusion = fusion
        self._consistency: dict[tuple[str, tuple[str, ...] | None], tuple[Consistency, float]] = {}
        self._opa = opa
        self._indexer = Indexer(pool, index, embedder)
        self.state = StateStore(pool)
        self.observations = SeriesStore(pool)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def index(self) -> VectorIndex:
        return self._indexer.index

    @property
    def embedder(self) -> Embedder:
        return self._indexer.embedder

    async def start(self) -> bool:
        """Prepare the index; False (logged) when it is unavailable, which only degrades."""
        try:
            await self._indexer.ensure()
        except VectorIndexUnavailable as exc:
            log.warning("memory starts without its vector index: %s", exc.message)
            return False
        return True

    # ------------------------------------------------------------------ writes

    async def remember(self, req: RememberRequest) -> RememberResult:
        """Append a version (Postgres, one transaction), then index it.

        With a `request_key`, a repeat of the same request returns the first version
        (`created=False`) and a different request under the same key is refused."""
        digest = content_hash(req.content)
        request_hash = (
            req.request_fingerprint
            or hashlib.sha256(
                canonical_json(req.model_dump(mode="json", exclude={"provenance"})).encode()
            ).hexdigest()
        )
        try:
            row, superseded = await self._append(req, digest, request_hash)
        except asyncpg.UniqueViolationError:
            # A concurrent attempt with the same request key committed first.
            row, superseded = await self._prior(req, request_hash), None
        if superseded is None:
            return RememberResult(
                version=store.version_from_row(row),
                created=False,
                indexed=row["index_state"] == "indexed",
            )
        indexed = await self._indexer.sync(req.tenant, [row], superseded)
        version = store.version_from_row(row).model_copy(
            update={"index_state": "indexed" if indexed else "pending"}
        )
        return RememberResult(version=version, created=True, indexed=indexed)

    async def _append(
        self, req: RememberRequest, digest: str, request_hash: str
    ) -> tuple[Any, list[str] | None]:
        p = req.provenance
        with db_errors("remember"):
            async with tenant_transaction(self._pool, req.tenant) as conn:
                if req.request_key is not None:
                    prior = await store.find_by_request_key(conn, req.tenant, req.request_key)
                    if prior is not None:
                        return _same_request(prior, request_hash, req), None
                await store.ensure_tenant(conn, req.tenant)
                row, superseded = await store.append_version(conn, req, digest, request_hash)
                await append_event(
                    conn,
                    AuditEvent(
                        tenant=req.tenant,
                        workflow_id=p.workflow_id,
                        run_id=p.run_id,
                        step_id=p.step_id,
                        kind="memory_written",
                        actor=p.principal,
                        data={
                            "namespace": req.namespace,
                            "key": req.key,
                            "version": row["version"],
                            "content_hash": digest,
                            "sensitivity": req.sensitivity,
                            "agent": p.agent,
                            "model": p.model,
                            "reason": p.reason,
                        },
                    ),
                )
        return row, superseded

    async def _prior(self, req: RememberRequest, request_hash: str) -> Any:
        assert req.request_key is not None
        with db_errors("remember"):
            async with tenant_transaction(self._pool, req.tenant) as conn:
                prior = await store.find_by_request_key(conn, req.tenant, req.request_key)
        if prior is None:
            raise MemoryConflict(
                f"request key {req.request_key} collided with a concurrent write that then "
                "vanished; retry the write"
            )
        return _same_request(prior, request_hash, req)

    async def find_written(self, tenant: str, request_key: str) -> MemoryVersion | None:
        """The version a request key wrote, if any: how a retried step finds its effect."""
        with db_errors("reconcile"):
            async with tenant_transaction(self._pool, tenant) as conn:
                row = await store.find_by_request_key(conn, tenant, request_key)
        return None if row is None else store.version_from_row(row)

    async def erase(
        self,
        tenant: str,
        namespace: str,
        key: str,
        *,
        principal: str,
        reason: str,
        version: int | None = None,
    ) -> EraseResult:
        """Forget content (one version, or all of the key): content and vectors go; the
        hash, the provenance and an audit record of the erasure stay."""
        with db_errors("erase"):
            async with tenant_transaction(self._pool, tenant) as conn:
                rows = await store.erase_versions(
                    conn,
                    tenant,
                    by=principal,
                    reason=reason,
                    namespace=namespace,
                    key=key,
                    version=version,
                )
                if not rows and not await store.memory_exists(conn, tenant, namespace, key):
                    raise MemoryNotFound(f"no memory {namespace}/{key} for tenant {tenant}")
                if rows:
                    await append_event(
                        conn,
                        AuditEvent(
                            tenant=tenant,
                            kind="memory_erased",
                            actor=principal,
                            data={
                                "namespace": namespace,
                                "key": key,
                                "versions": [r["version"] for r in rows],
                                "content_hashes": [r["content_hash"] for r in rows],
                                "reason": reason,
                            },
                        ),
                    )
        removed = await self._indexer.remove(tenant, [r["id"] for r in rows])
        return EraseResult(
            tenant=tenant,
            namespace=namespace,
            key=key,
            versions=tuple(r["version"] for r in rows),
            content_hashes=tuple(r["content_hash"] for r in rows),
            vectors_removed=removed,
        )

    async def purge_expired(self, tenant: str | None = None) -> PurgeResult:
        """Erase every version past its TTL and apply time-series retention, for one
        tenant or every tenant listed."""
        tenants = [tenant] if tenant else await self._tenants()
        erased, removed_all, rolled_up, dropped = 0, True, 0, 0
        for t in tenants:
            compacted = await self.observations.compact(t)
            rolled_up, dropped = rolled_up + compacted.rolled_up, dropped + compacted.dropped
            with db_errors("purge"):
                async with tenant_transaction(self._pool, t) as conn:
                    rows = await store.erase_versions(
                        conn, t, by=SYSTEM_ACTOR, reason="expired", expired_only=True
                    )
                    if rows:
                        await append_event(
                            conn,
                            AuditEvent(
                                tenant=t,
                                kind="memory_expired",
                                actor=SYSTEM_ACTOR,
                                data={
                                    "erased": [
                                        {
                                            "namespace": r["namespace"],
                                            "key": r["key"],
                                            "version": r["version"],
                                            "content_hash": r["content_hash"],
                                        }
                                        for r in rows
                                    ]
                                },
                            ),
                        )
            erased += len(rows)
            removed_all = await self._indexer.remove(t, [r["id"] for r in rows]) and removed_all
        return PurgeResult(
            tenants=len(tenants),
            erased=erased,
            vectors_removed=removed_all,
            observations_rolled_up=rolled_up,
            observations_dropped=dropped,
        )

    async def reindex(self, tenant: str | None = None, *, full: bool = False) -> ReindexResult:
        """Index pending versions and drop stale points (`full`: re-embed everything)."""
        tenants = [tenant] if tenant else await self._tenants()
        indexed = removed = 0
        for t in tenants:
            done, gone = await self._indexer.repair(t, full=full)
            indexed, removed = indexed + done, removed + gone
        # The embedded engine builds its search graphs only when asked (a no-op when
        # nothing changed, and on a Qdrant server): without it every query scores the
        # whole shard.
        await self._indexer.ensure()
        await self.index.optimize()
        return ReindexResult(tenants=len(tenants), indexed=indexed, removed=removed, failed=0)

    # ------------------------------------------------------------------- reads

    async def get(
        self,
        tenant: str,
        namespace: str,
        key: str,
        *,
        principal: str,
        agent: str | None = None,
        clearance: str = "internal",
        as_of: datetime | None = None,
        valid_at: datetime | None = None,
        max_age: timedelta | None = None,
    ) -> MemoryVersion | None:
        """The current version (erased versions come back with `content=None`); with
        `as_of`, the version current at that recorded time; with `valid_at`, the latest
        one valid then; with `max_age`, None unless its event time is that recent."""
        with db_errors("get"):
            async with tenant_transaction(self._pool, tenant) as conn:
                row = await store.version_at(
                    conn, tenant, namespace, key, as_of=as_of, valid_at=valid_at
                )
        if row is None:
            return None
        if max_age is not None and row["valid_from"] < datetime.now(UTC) - max_age:
            return None
        gate = ReadGate(
            self._opa, tenant=tenant, principal=principal, agent=agent, clearance=clearance
        )
        return await shown(row, gate)

    async def history(
        self,
        tenant: str,
        namespace: str,
        key: str,
        *,
        principal: str,
        agent: str | None = None,
        clearance: str = "internal",
    ) -> list[MemoryVersion]:
        """Every version, oldest first, with content the reader may not see withheld."""
        with db_errors("history"):
            async with tenant_transaction(self._pool, tenant) as conn:
                rows = await store.history(conn, tenant, namespace, key)
        gate = ReadGate(
            self._opa, tenant=tenant, principal=principal, agent=agent, clearance=clearance
        )
        return [await shown(row, gate) for row in rows]

    async def recall(self, q: RecallQuery) -> RecallResult:
        """Top-k versions for `q.query`, best first, that `q.principal` may read.

        Hybrid: meaning (the embedding's nearest points) and exact terms (BM25) each
        propose candidates, fused (`fusion.py`), with a bonus for event times in a period
        the question names (`when.py`), for a subject label the question names, and a
        share of a sequence neighbour's score (`cues.py`). Both rankings come from the
        index in one call after the question is embedded (`VectorIndex.hybrid`: the
        term vectors of `vector/terms.py`, IDF over this tenant's points; running the
        term query beside the embedding instead was measured no faster on 2 cores,
        bench/README.md); Postgres only checks the candidates' rows.
        Exact terms are ranked in Postgres instead (`store.lexical`) when the index
        cannot hold the answer: a read of the past (`as_of`) or of an event-time window
        (`max_age`, `valid_at`), a tenant with versions the index has no terms for yet
        (`store.backlog`), or no index at all. Every candidate of either path is
        checked against Postgres in the same transaction: only versions of this tenant
        current now (or at `q.as_of`) leave. With the index or the model unavailable the
        result says `degraded`. Under a 'fresh' consistency policy, writes the index has
        not caught up with are ranked by meaning here too (`_unindexed`)."""
        since = datetime.now(UTC) - q.max_age if q.max_age is not None else None
        gate = ReadGate(
            self._opa, tenant=q.tenant, principal=q.principal, agent=q.agent, clearance=q.clearance
        )
        depth = max(self.fusion.depth, q.k * 4 + 8)
        consistency = await self.consistency(q.tenant, q.namespaces)
        exact_filters = q.as_of is not None or since is not None or q.valid_at is not None
        terms = None if exact_filters else query_terms(q.query)
        with db_errors("recall"):
            async with tenant_transaction(self._pool, q.tenant) as conn:
                # The embedding and the index run while Postgres looks for a backlog.
                searched = asyncio.create_task(self._search(q, depth, terms))
                try:
                    # Reads of the past rank terms in Postgres anyway (`terms` is None).
                    pending, lagging = (
                        await store.backlog(conn, q.tenant, q.namespaces, FRESH_LIMIT)
                        if q.as_of is None
                        else ([], True)
                    )
                finally:
                    vector, found = await searched
                if found is not None and terms is not None and not lagging:
                    lexical = [(h.id, h.score) for h in found.lexical]
                else:
                    lexical = await store.lexical(
                        conn,
                        q.tenant,
                        q.query,
                        namespaces=q.namespaces,
                        since=since,
                        sensitivities=cleared(q.clearance),
                        limit=depth,
                        valid_at=q.valid_at,
                        as_of=q.as_of,
                    )
                hits = [] if found is None else [*found.dense, *found.lexical]
                wanted = list(dict.fromkeys([h.id for h in hits] + [i for i, _ in lexical]))
                rows = {
                    r["id"]: r
                    for r in await store.versions_by_id(conn, q.tenant, wanted, as_of=q.as_of)
                }
        # A point Postgres does not know for this tenant, or one whose version is no
        # longer live, is the stale index talking: never an answer, through either path.
        stale = {
            h.id
            for h in hits
            if h.id not in rows or h.payload.tenant != q.tenant or not rows[h.id]["live"]
        }
        ranked_vector = [
            (h.id, h.score) for h in (found.dense if found else ()) if h.id not in stale
        ]
        if consistency == "fresh" and vector is not None and pending:
            ranked_vector = await self._with_unindexed(ranked_vector, vector, pending, rows)
        ranked_lexical = [
            (i, score) for i, score in lexical if i not in stale and i in rows and rows[i]["live"]
        ]
        periods = when.windows(q.query)
        question = cues.words(q.query)
        candidates = {i for i, _ in (*ranked_vector, *ranked_lexical)}
        in_period = {i for i in candidates if when.in_any(rows[i]["valid_from"], periods)}
        about = {i for i in candidates if cues.names_subject(question, rows[i]["content"])}
        near = cues.neighbours({i: (rows[i]["namespace"], rows[i]["key"]) for i in candidates})
        items: list[RecallItem] = []
        withheld = 0
        fused = self.fusion.fuse(ranked_vector, ranked_lexical, in_period, about, near)
        for cid, score in fused:
            row = rows[cid]
            if not _in_scope(row, q, since):
                continue
            if not await gate.may_read(row["sensitivity"], row["namespace"]):
                withheld += 1
                continue
            if len(items) < q.k:
                items.append(recall_item(row, score))
        return RecallResult(
            items=tuple(items),
            degraded=vector is None or found is None,
            withheld=withheld,
            stale=len(stale),
            consistency=consistency,
            unindexed=len(pending),
            as_of=q.as_of,
        )

    async def _search(
        self, q: RecallQuery, depth: int, terms: TermVector | None
    ) -> tuple[list[float] | None, HybridHits | None]:
        """The query vector and both of the index's rankings. Without the model: no
        vector, and the index still ranks exact terms; without the index: (vector, None).
        Either way the recall is degraded, and the log and metric say why."""
        vector: list[float] | None = None
        try:
            [vector] = await self.embedder.embed([q.query])
        except EmbeddingUnavailable as exc:
            _degraded(q.tenant, "embedding_unavailable", exc.message)
        try:
            await self._indexer.ensure()
            found = await self.index.hybrid(q.tenant, vector, terms, depth, q.namespaces)
        except VectorIndexUnavailable as exc:
            _degraded(q.tenant, "index_unavailable", exc.message)
            return vector, None
        return vector, found

    async def _with_unindexed(
        self,
        ranked: list[tuple[str, float]],
        vector: list[float],
        pending: list[Any],
        rows: dict[str, Any],
    ) -> list[tuple[str, float]]:
        """Read-your-writes: score unindexed live versions against the query vector the
        way the index would (cosine of normalised vectors) and merge them in."""
        try:
            vectors = await self.embedder.embed(
                [embedding_text(r["namespace"], r["content"]) for r in pending]
            )
        except EmbeddingUnavailable:
            return ranked
        known = {cid for cid, _ in ranked}
        for row, candidate in zip(pending, vectors, strict=True):
            rows.setdefault(row["id"], row)
            if row["id"] not in known:
                ranked.append((row["id"], _cosine(vector, candidate)))
        return sorted(ranked, key=lambda item: -item[1])

    async def consistency(self, tenant: str, namespaces: Sequence[str] | None) -> Consistency:
        """The namespaces' consistency policy (OPA `stead/memory/consistency`), cached for
        a few seconds. Without OPA: 'indexed'; OPA unreachable or undefined: 'fresh',
        the stronger guarantee, so a policy outage never weakens a read."""
        if self._opa is None:
            return "indexed"
        key = (tenant, None if namespaces is None else tuple(sorted(namespaces)))
        cached = self._consistency.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        request = {
            "tenant": tenant,
            "namespaces": None if namespaces is None else list(key[1] or ()),
        }
        try:
            answer = await self._opa.evaluate(CONSISTENCY_DECISION, request)
        except (PolicyUnavailable, PolicyUndefined) as exc:
            log.warning("memory consistency for %s read as 'fresh': %s", tenant, exc.message)
            return "fresh"
        value: Consistency = "indexed" if answer == "indexed" else "fresh"
        self._consistency[key] = (value, time.monotonic() + CONSISTENCY_TTL)
        return value

    async def _tenants(self) -> list[str]:
        with db_errors("tenant directory"):
            async with self._pool.acquire() as conn:
                return await store.directory_tenants(conn)


def _degraded(tenant: str, reason: str, message: str) -> None:
    DEGRADED_RECALLS.labels(reason=reason).inc()
    answers = "full-text search" if reason == "index_unavailable" else "exact terms"
    log.warning(
        "memory recall for tenant %s degraded to %s (%s): %s", tenant, answers, reason, message
    )


def _in_scope(row: Any, q: RecallQuery, since: datetime | None) -> bool:
    """The query's filters, checked on the Postgres row whichever path proposed it."""
    if q.namespaces is not None and row["namespace"] not in q.namespaces:
        return False
    if since is not None and row["valid_from"] < since:
        return False
    if q.valid_at is None:
        return True
    return bool(
        row["valid_from"] <= q.valid_at
        and (row["valid_to"] is None or row["valid_to"] > q.valid_at)
    )


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


def _same_request(prior: Any, request_hash: str, req: RememberRequest) -> Any:
    if prior["request_hash"] != request_hash:
        raise MemoryConflict(
            f"request key {req.request_key} already wrote {prior['namespace']}/{prior['key']} "
            "with different content; a step's arguments cannot change between attempts"
        )
    return prior
