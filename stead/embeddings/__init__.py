"""Text embeddings for memory recall: one small contract, a local model and litellm."""

from stead.embeddings.base import Embedder, EmbeddingMismatch, EmbeddingUnavailable
from stead.embeddings.factory import open_embedder
from stead.embeddings.minilm import MiniLmEmbedder
from stead.embeddings.remote import LiteLlmEmbedder

__all__ = [
    "Embedder",
    "EmbeddingMismatch",
    "EmbeddingUnavailable",
    "LiteLlmEmbedder",
    "MiniLmEmbedder",
    "open_embedder",
]
