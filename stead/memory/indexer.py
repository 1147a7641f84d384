"""Keeping the vector index in step with Postgres, after the fact and repairably.

The index is written only after the version is committed, so a crash or an
unavailable index can leave it behind but never ahead: `index_state` in Postgres
says which versions still need a point ('pending') and which points must go
('stale'). `sync` does the write for fresh versions; `repair` drains the backlog
for a tenant and is what `stead memory reindex` and the scheduled workflow run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from stead.db.pool import tenant_transaction
from stead.embeddings.base import Embedder, EmbeddingUnavailable
from stead.memory import store
from stead.memory.db import db_errors
from stead.memory.metrics import UNINDEXED_WRITES
from stead.vector import VectorIndex, VectorIndexUnavailable, VectorPayload, VectorPoint
from stead.vector.index import VectorIndexMismatch
from stead.vector.terms import TERMS_MODEL, document_terms

BATCH = 128
MAX_PASSES = 10_000
log = logging.getLogger("stead.memory")
# Run summaries (activities/memory.py) open with a headline paragraph (what was asked,
# how it ended, the counts) and then list steps. Only the headline is embedded: it is
# what a search should match, and embedding cost grows with tokens (a full summary is
# 256 tokens, ~250 ms of worker CPU per run; the headline ~30). The content in
# Postgres, which recall returns, keeps every line.
RUN_SUMMARIES = "runs"
HEADLINE_NAMESPACES = frozenset({RUN_SUMMARIES})


def embedding_text(namespace: str, content: str) -> str:
    """What is embedded for a version: its content, or only its headline paragraph."""
    if namespace in HEADLINE_NAMESPACES:
        return content.split("\n\n", 1)[0]
    return content


class Indexer:
    """Embeds versions and writes or deletes their points; owns the ensure-once flag."""

    def __init__(self, pool: asyncpg.Pool, index: VectorIndex, embedder: Embedder) -> None:
        self._pool = pool
        self.index = index
        self.embedder = embedder
        self._ready = False

    async def ensure(self) -> None:
        """Create the collection for the embedder's dimension once per process."""
        if not self._ready:
            await self.index.ensure_collection(self.embedder.dim)
            self._ready = True

    async def sync(self, tenant: str, rows: Sequence[Any], stale_ids: Sequence[str]) -> bool:
        """Index fresh versions and drop superseded points; False leaves the work pending.

        Never raises for an unavailable index or model: the write is already durable,
        and the backlog in Postgres is what `repair` picks up."""
        try:
            if rows:
                await self._upsert(tenant, rows)
        except (VectorIndexUnavailable, EmbeddingUnavailable, VectorIndexMismatch) as exc:
            UNINDEXED_WRITES.inc(len(rows))
            log.warning(
                "memory of tenant %s committed but not indexed (%s); `stead memory reindex` "
                "or the scheduled reindex will index it",
                tenant,
                getattr(exc, "message", exc),
            )
            return False
        await self.remove(tenant, stale_ids)
        return True

    async def remove(self, tenant: str, ids: Sequence[str]) -> bool:
        """Delete points; on failure they stay 'stale' for the next repair."""
        if not ids:
            return True
        try:
            await self.ensure()
            await self.index.delete(tenant, ids)
        except VectorIndexUnavailable as exc:
            log.warning("stale vectors of tenant %s not yet removed: %s", tenant, exc.message)
            return False
        with db_errors("index bookkeeping"):
            async with tenant_transaction(self._pool, tenant) as conn:
                await store.mark_absent(conn, tenant, ids)
        return True

    async def repair(self, tenant: str, *, full: bool = False) -> tuple[int, int]:
        """Index every pending version and delete every stale point of `tenant`.

        Raises `VectorIndexUnavailable` (or `EmbeddingUnavailable`): a repair that
        cannot reach the index must fail visibly so its schedule tries again."""
        await self.ensure()
        indexed = removed = 0
        if full:
            with db_errors("reindex"):
                async with tenant_transaction(self._pool, tenant) as conn:
                    await store.mark_all_pending(conn, tenant)
        for _ in range(MAX_PASSES):
            with db_errors("reindex"):
                async with tenant_transaction(self._pool, tenant) as conn:
                    pending, terms, stale = await store.index_work(conn, tenant, BATCH)
            if not pending and not terms and not stale:
                break
            if pending:
                await self._upsert(tenant, pending)
                indexed += len(pending)
            if terms:
                await self._backfill_terms(tenant, terms)
                indexed += len(terms)
            if stale:
                await self.index.delete(tenant, stale)
                with db_errors("reindex"):
                    async with tenant_transaction(self._pool, tenant) as conn:
                        await store.mark_absent(conn, tenant, stale)
                removed += len(stale)
        return indexed, removed

    @property
    def model(self) -> str:
        """What a point is built with, recorded in Postgres (`indexed_model`)."""
        return f"{self.embedder.name}+{TERMS_MODEL}"

    async def _upsert(self, tenant: str, rows: Sequence[Any]) -> None:
        vectors = await self.embedder.embed(
            [embedding_text(row["namespace"], row["content"]) for row in rows]
        )
        await self.ensure()
        # Terms of the whole content (a run summary's step lines too), as Postgres full
        # text had them; only the embedding is limited to the headline.
        points = [
            VectorPoint(
                id=row["id"],
                vector=vector,
                payload=VectorPayload(**store.payload_fields(row)),
                terms=document_terms(row["content"]),
            )
            for row, vector in zip(rows, vectors, strict=True)
        ]
        await self.index.upsert(points)
        await self._mark_indexed(tenant, rows)

    async def _backfill_terms(self, tenant: str, rows: Sequence[Any]) -> None:
        """Points indexed before term vectors: add theirs, keep their embedding (no
        model call), which is what makes the upgrade cheap. A row whose point is gone
        (a lost shard) is indexed from scratch instead."""
        done = set(
            await self.index.set_terms(
                tenant, {row["id"]: document_terms(row["content"]) for row in rows}
            )
        )
        await self._mark_indexed(tenant, [row for row in rows if row["id"] in done])
        lost = [row for row in rows if row["id"] not in done]
        if lost:
            await self._upsert(tenant, lost)

    async def _mark_indexed(self, tenant: str, rows: Sequence[Any]) -> None:
        with db_errors("index bookkeeping"):
            async with tenant_transaction(self._pool, tenant) as conn:
                await store.mark_indexed(conn, tenant, [row["id"] for row in rows], self.model)
