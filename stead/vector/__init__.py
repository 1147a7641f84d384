"""Tenant-scoped vector index for memory recall: one contract, two Qdrant backends.

The server backend is imported on first use: qdrant-client takes ~1.5 s to import, and
every `stead` command (most never touch a Qdrant server) would pay for it.
"""

from typing import TYPE_CHECKING, Any

from stead.vector.edge import EdgeVectorIndex
from stead.vector.factory import open_vector_index
from stead.vector.index import (
    HybridHits,
    Sensitivity,
    TermVector,
    VectorHit,
    VectorIndex,
    VectorIndexMismatch,
    VectorIndexUnavailable,
    VectorPayload,
    VectorPoint,
)

if TYPE_CHECKING:
    from stead.vector.server import QdrantServerIndex


def __getattr__(name: str) -> Any:
    if name == "QdrantServerIndex":
        from stead.vector.server import QdrantServerIndex

        return QdrantServerIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EdgeVectorIndex",
    "HybridHits",
    "QdrantServerIndex",
    "Sensitivity",
    "TermVector",
    "VectorHit",
    "VectorIndex",
    "VectorIndexMismatch",
    "VectorIndexUnavailable",
    "VectorPayload",
    "VectorPoint",
    "open_vector_index",
]
