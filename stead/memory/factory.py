"""Build the memory service from settings, the same way in the worker and the CLI."""

from __future__ import annotations

import asyncpg
from pydantic import SecretStr

from stead.embeddings import Embedder, open_embedder
from stead.memory.service import MemoryService
from stead.memory.shard import GuardedEdgeIndex
from stead.policy.opa import OpaClient
from stead.settings import Settings
from stead.vector import VectorIndex, open_vector_index


def embedder_from_settings(settings: Settings) -> Embedder:
    """`STEAD_EMBEDDING_MODEL` (+ `_DIM`, `_API_BASE`, `_API_KEY`) picks a litellm model;
    unset, the local all-MiniLM-L6-v2.

    Read with getattr so this works before `Settings` declares the embedding fields;
    with them declared it reads exactly those (see the wiring notes of issue 4)."""
    key = getattr(settings, "embedding_api_key", None)
    return open_embedder(
        getattr(settings, "embedding_model", None),
        dim=getattr(settings, "embedding_dim", None),
        api_base=getattr(settings, "embedding_api_base", None),
        api_key=key.get_secret_value() if key is not None else None,
    )


async def open_memory_service(
    settings: Settings,
    pool: asyncpg.Pool,
    opa: OpaClient | None,
    *,
    index: VectorIndex | None = None,
) -> MemoryService:
    """The worker's service: its own vector index (the embedded shard, opened only if
    no other process holds it, unless STEAD_QDRANT_URL is set), started so the
    collection exists. The caller closes
    `service.index` at shutdown; an unavailable index at start only degrades recall."""
    if index is None:
        index = (
            open_vector_index(
                settings.qdrant_url,
                settings.resolved_qdrant_path,
                _secret(settings.qdrant_api_key),
            )
            if settings.qdrant_url
            else GuardedEdgeIndex(settings.resolved_qdrant_path)
        )
    service = MemoryService(pool, index, embedder_from_settings(settings), opa)
    await service.start()
    return service


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
