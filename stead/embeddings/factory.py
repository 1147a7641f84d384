"""Choose the embedder from settings, so callers never branch on deployment."""

from __future__ import annotations

from stead.embeddings.base import Embedder
from stead.embeddings.minilm import MiniLmEmbedder
from stead.embeddings.remote import LiteLlmEmbedder
from stead.errors import ConfigError


def open_embedder(
    model: str | None,
    *,
    dim: int | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
) -> Embedder:
    """A litellm model when one is named, else the local all-MiniLM-L6-v2.

    Nothing is loaded or contacted here: the local weights load on the first embed.
    """
    if not model:
        return MiniLmEmbedder()
    if dim is None:
        raise ConfigError(
            f"STEAD_EMBEDDING_MODEL={model} needs STEAD_EMBEDDING_DIM (the vector size the "
            "model returns, e.g. 1536 for text-embedding-3-small): the index is created for it"
        )
    return LiteLlmEmbedder(model, dim, api_base=api_base, api_key=api_key)
