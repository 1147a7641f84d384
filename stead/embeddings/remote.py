"""Embeddings from any provider litellm speaks (OpenAI, Azure, Ollama, vLLM, TEI ...).

One `litellm.aembedding` call per batch. Retries belong to Temporal and to the
memory service's repair path (an un-indexed version is re-embedded by `reindex`),
so litellm's own retries are off and every provider failure becomes one typed
error whose message never carries the API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stead.embeddings.base import EmbeddingUnavailable, check_vectors
from stead.litellm_offline import litellm as import_litellm

MAX_BATCH = 256  # most providers cap one request near here


class LiteLlmEmbedder:
    """`Embedder` over `litellm.aembedding`; the dimension is configured, then enforced.

    The dimension must be known before the first call, because the vector index is
    created for it at worker start; a provider that answers with another size is
    refused (`EmbeddingMismatch`) instead of poisoning the index.
    """

    def __init__(
        self,
        model: str,
        dim: int,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if dim < 1:
            raise ValueError(f"embedding dim must be positive, got {dim}")
        self._model = model
        self._dim = dim
        self._api_base = api_base
        self._api_key = api_key
        self._timeout = timeout

    @property
    def name(self) -> str:
        return self._model

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), MAX_BATCH):
            batch = list(texts[start : start + MAX_BATCH])
            vectors.extend(await self._call(batch))
        check_vectors(self.name, self.dim, texts, vectors)
        return vectors

    async def _call(self, batch: list[str]) -> list[list[float]]:
        litellm = import_litellm()
        try:
            response = await litellm.aembedding(
                model=self._model,
                input=batch,
                api_base=self._api_base,
                api_key=self._api_key,
                timeout=self._timeout,
                encoding_format="float",
                num_retries=0,
                max_retries=0,
            )
        except Exception as exc:  # litellm wraps provider errors in many unrelated types
            raise EmbeddingUnavailable(
                f"embedding model {self._model} at {self._api_base or 'the provider default URL'} "
                f"failed ({type(exc).__name__}: {self._redact(str(exc))}); recall degrades to "
                "full-text search and `stead memory reindex` indexes what was missed"
            ) from None
        return _vectors(response)

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:300]


def _vectors(response: Any) -> list[list[float]]:
    """Rows in input order: providers may return them out of order, tagged by index."""
    data = getattr(response, "data", None) or []
    rows: list[tuple[int, list[float]]] = []
    for position, item in enumerate(data):
        index = (
            item.get("index", position)
            if isinstance(item, dict)
            else getattr(item, "index", position)
        )
        values = (
            item.get("embedding") if isinstance(item, dict) else getattr(item, "embedding", None)
        )
        if not isinstance(values, list):
            raise EmbeddingUnavailable("the embedding provider returned no float vector")
        rows.append((int(index), [float(v) for v in values]))
    return [values for _, values in sorted(rows, key=lambda row: row[0])]
