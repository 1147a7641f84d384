"""Choose the vector backend from settings, so callers never branch on deployment."""

from __future__ import annotations

from pathlib import Path

from stead.vector.edge import EdgeVectorIndex
from stead.vector.index import VectorIndex


def open_vector_index(
    qdrant_url: str | None, qdrant_path: Path, api_key: str | None = None
) -> VectorIndex:
    """A Qdrant server when a URL is configured, else the embedded engine under
    `qdrant_path`; nothing is contacted until the first call."""
    if qdrant_url:
        from stead.vector.server import QdrantServerIndex  # slow import, only when used

        return QdrantServerIndex(url=qdrant_url, api_key=api_key)
    return EdgeVectorIndex(qdrant_path)
