"""Tenant-scoped vector index for memory recall: one contract, two Qdrant backends."""

from stead.vector.edge import EdgeVectorIndex
from stead.vector.factory import open_vector_index
from stead.vector.index import (
    Sensitivity,
    VectorHit,
    VectorIndex,
    VectorIndexMismatch,
    VectorIndexUnavailable,
    VectorPayload,
    VectorPoint,
)
from stead.vector.server import QdrantServerIndex

__all__ = [
    "EdgeVectorIndex",
    "QdrantServerIndex",
    "Sensitivity",
    "VectorHit",
    "VectorIndex",
    "VectorIndexMismatch",
    "VectorIndexUnavailable",
    "VectorPayload",
    "VectorPoint",
    "open_vector_index",
]
