"""The embedding contract memory depends on, and the errors every backend raises.

Memory only needs two things from a model: a fixed dimension (the vector index is
created for it, and refuses another one) and a batch call from texts to vectors.
Keeping the contract this small lets a local model and any litellm provider stand
behind it without the memory service knowing which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from stead.errors import ErrorCode, SteadError


class EmbeddingUnavailable(SteadError):
    """The model could not be reached or loaded; recall degrades to full-text search."""

    code = ErrorCode.SERVICE_NOT_READY


class EmbeddingMismatch(SteadError):
    """The model answered with vectors of another shape than it declared: a config bug,
    since mixing dimensions in one index would make every score meaningless."""

    code = ErrorCode.CONFIG


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors of one fixed dimension."""

    @property
    def name(self) -> str:
        """A stable identifier of the model, stored with each indexed version so a
        model change can be detected and the index rebuilt."""
        ...

    @property
    def dim(self) -> int:
        """The length of every vector this embedder returns."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order; never blocks the event loop."""
        ...


def check_vectors(name: str, dim: int, texts: Sequence[str], vectors: list[list[float]]) -> None:
    """Refuse an answer that does not fit the declared contract."""
    if len(vectors) != len(texts):
        raise EmbeddingMismatch(
            f"embedding model {name} returned {len(vectors)} vectors for {len(texts)} texts"
        )
    for vector in vectors:
        if len(vector) != dim:
            raise EmbeddingMismatch(
                f"embedding model {name} returned a {len(vector)}-dim vector, configured for "
                f"{dim}; set STEAD_EMBEDDING_DIM to the model's dimension and run "
                "`stead memory reindex --full`"
            )
