"""Exact terms as sparse vectors: the lexical half of recall, scored by the index.

The Postgres BM25 statement has to read every live version that shares a word with
the question and count document frequencies on the fly; on a corpus where common words
match a third of a tenant's versions that is ~3,200 rows and hundreds of milliseconds
whatever the index (bench/README.md). Here each version's terms are stored once, as a
sparse vector beside its embedding, and the engine's inverted index with the IDF
modifier does BM25 at query time: term frequency (saturated, length-normalised) is in
the stored weights, inverse document frequency comes from the engine, over the
querying tenant's points only (`IdfParams(corpus=...)`).

Tokenising is qdrant-edge's own BM25 model (English stop words, Snowball stemmer,
hashed token ids), so both backends, the embedded engine and a Qdrant server, get the
same vectors from the same code. `TERMS_MODEL` names the parameters: points built with
others are rebuilt by `stead memory reindex` (`indexed_model` in Postgres records it).
"""

from __future__ import annotations

import threading

from qdrant_edge import Bm25, Bm25Config

from stead.vector.index import TermVector

K1 = 1.2
B = 0.75
# Memories are sentences, not web pages: BM25's usual 256-token average would make
# length normalisation a no-op. About the length of a dialogue turn or a fact, in
# tokens after stop words.
AVG_LEN = 16.0
TERMS_MODEL = f"bm25-english-k{K1:g}-b{B:g}-avg{AVG_LEN:g}"

_local = threading.local()


def _model() -> Bm25:
    # One model per thread: embedding runs in worker threads (asyncio.to_thread).
    model: Bm25 | None = getattr(_local, "model", None)
    if model is None:
        model = Bm25(Bm25Config(k=K1, b=B, avg_len=AVG_LEN, language="english"))
        _local.model = model
    return model


def document_terms(text: str) -> TermVector:
    """A memory's terms with BM25 term-frequency weights (empty for a text of stop words)."""
    sparse = _model().embed_document(text)
    return TermVector(indices=tuple(sparse.indices), values=tuple(sparse.values))


def query_terms(text: str) -> TermVector | None:
    """A question's distinct terms, weight 1 each; None when it has none to match."""
    sparse = _model().embed_query(text)
    if not sparse.indices:
        return None
    return TermVector(indices=tuple(sparse.indices), values=tuple(sparse.values))
