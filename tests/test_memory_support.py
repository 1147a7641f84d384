"""Shared pieces of the memory tests (no tests here; the name keeps it in the memory suite).

Each test module opens its own service on a fresh embedded shard under a temp dir,
so no test opens the stack's shard (a worker may hold it) and modules never share
points. Tests use a fresh tenant each, so they never see each other's memories.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg

from stead.db.pool import create_pool
from stead.embeddings import MiniLmEmbedder
from stead.memory import Provenance, RecallQuery, RememberRequest
from stead.memory.service import MemoryService
from stead.policy.opa import OpaClient
from stead.settings import Settings
from stead.vector import VectorIndex

# One model instance for the whole session: the weights load once (~0.3 s).
EMBEDDER = MiniLmEmbedder()
# qdrant-client's local mode warns that it ignores payload indexes; the server builds them.
LOCAL_MODE_WARNING = "ignore:Payload indexes have no effect in the local Qdrant:UserWarning"


def new_tenant() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def open_service(stack: Settings, index: VectorIndex) -> AsyncIterator[MemoryService]:
    """A service on the stack's Postgres and OPA; closes the index, pool and client."""
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=8)
    opa = OpaClient(stack.opa_url, token=stack.opa_token)
    try:
        service = MemoryService(pool, index, EMBEDDER, opa)
        await service.start()
        yield service
    finally:
        await index.close()
        await opa.aclose()
        await pool.close()


def remember(
    tenant: str,
    namespace: str,
    key: str,
    content: str,
    *,
    principal: str = "user:alice",
    sensitivity: str = "internal",
    expires_at: datetime | None = None,
    **provenance: object,
) -> RememberRequest:
    return RememberRequest.model_validate(
        {
            "tenant": tenant,
            "namespace": namespace,
            "key": key,
            "content": content,
            "sensitivity": sensitivity,
            "expires_at": expires_at,
            "provenance": Provenance.model_validate(
                {"principal": principal, "reason": "test", **provenance}
            ),
        }
    )


def query(tenant: str, text: str, **fields: object) -> RecallQuery:
    return RecallQuery.model_validate(
        {"tenant": tenant, "query": text, "principal": "user:alice", **fields}
    )


async def admin_fetch(stack: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    """Read as the owner-side admin (bypasses RLS): what is really stored, for assertions."""
    assert stack.postgres_admin_dsn is not None
    conn = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


def utcnow() -> datetime:
    return datetime.now(UTC)
