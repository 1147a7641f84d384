"""The embedders: the local model gives sensible, deterministic vectors; the litellm
backend talks to a real OpenAI-compatible /v1/embeddings server the test starts."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import pytest

from stead.embeddings import EmbeddingMismatch, EmbeddingUnavailable, LiteLlmEmbedder, open_embedder
from tests.peers import serve_handler
from tests.test_memory_support import EMBEDDER

# litellm builds some of its pydantic schemas on first use; which call comes first
# decides whether pydantic's ReadOnly-TypedDict warning fires inside a test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
)

PARAPHRASES = ("How do I reset my password?", "I forgot my password, how can I change it?")
UNRELATED = "The invoice was paid by bank transfer on Monday."


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


async def test_local_model_scores_paraphrases_above_unrelated_text() -> None:
    first, second, other = await EMBEDDER.embed([*PARAPHRASES, UNRELATED])

    assert cosine(first, second) > 0.8
    assert cosine(first, other) < 0.2
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert len(first) == EMBEDDER.dim == 384


async def test_local_model_is_deterministic_and_batch_independent() -> None:
    texts = [*PARAPHRASES, UNRELATED, "short", "a much longer sentence " * 20]

    # embed_sync is the model itself; embed() answers repeats from its cache.
    once, twice = EMBEDDER.embed_sync(texts), EMBEDDER.embed_sync(texts)
    alone = [EMBEDDER.embed_sync([t])[0] for t in texts]

    assert once == twice
    np.testing.assert_allclose(np.array(once), np.array(alone), atol=1e-5)


async def test_local_model_answers_repeated_texts_from_its_cache_with_the_same_vectors() -> None:
    texts = ["Run ended completed.\nPlaybook: refunds\nSteps: 3 succeeded", "short", "short"]

    first = await EMBEDDER.embed(texts)
    again = await EMBEDDER.embed(texts[:1])

    np.testing.assert_allclose(np.array(first), np.array(EMBEDDER.embed_sync(texts)), atol=1e-5)
    assert again == first[:1] and again[0] is not first[0]
    assert first[1] == first[2]


class EmbeddingServer:
    """An OpenAI-compatible embeddings endpoint backed by the local model."""

    def __init__(self, dim_override: int | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.dim_override = dim_override

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(body)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = EMBEDDER.embed_sync(texts)
        if self.dim_override:
            vectors = [v[: self.dim_override] for v in vectors]
        data = []
        # Answer in reverse order, tagged by index, as some providers do.
        for i, vector in reversed(list(enumerate(vectors))):
            if body.get("encoding_format") == "base64":
                value: Any = base64.b64encode(
                    np.asarray(vector, dtype=np.float32).tobytes()
                ).decode()
            else:
                value = vector
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }


@pytest.fixture
def provider() -> Iterator[tuple[EmbeddingServer, str]]:
    server_state = EmbeddingServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if (
                self.path != "/v1/embeddings"
                or self.headers.get("Authorization") != "Bearer sk-test"
            ):
                status, payload = 404, {"error": {"message": f"no route {self.path}"}}
            else:
                status, payload = 200, server_state.answer(body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serve_handler(Handler) as url:
        yield server_state, f"{url}/v1"


async def test_litellm_embedder_returns_the_providers_vectors_in_order(
    provider: tuple[EmbeddingServer, str],
) -> None:
    state, url = provider
    embedder = LiteLlmEmbedder("openai/text-embedding-test", 384, api_base=url, api_key="sk-test")

    vectors = await embedder.embed([*PARAPHRASES, UNRELATED])

    expected = await EMBEDDER.embed([*PARAPHRASES, UNRELATED])
    np.testing.assert_allclose(np.array(vectors), np.array(expected), atol=1e-6)
    assert state.requests[0]["input"] == [*PARAPHRASES, UNRELATED]
    assert state.requests[0]["model"] == "text-embedding-test"


async def test_litellm_embedder_refuses_vectors_of_another_dimension(
    provider: tuple[EmbeddingServer, str],
) -> None:
    state, url = provider
    state.dim_override = 16
    embedder = LiteLlmEmbedder("openai/text-embedding-test", 384, api_base=url, api_key="sk-test")

    with pytest.raises(EmbeddingMismatch, match="16-dim vector, configured for 384"):
        await embedder.embed(["hello"])


async def test_litellm_embedder_failure_is_unavailable_and_hides_the_key(
    provider: tuple[EmbeddingServer, str],
) -> None:
    _, url = provider
    embedder = LiteLlmEmbedder("openai/text-embedding-test", 384, api_base=url, api_key="sk-wrong")

    with pytest.raises(EmbeddingUnavailable) as caught:
        await embedder.embed(["hello"])
    assert "sk-wrong" not in caught.value.message


def test_factory_needs_a_dimension_for_a_remote_model() -> None:
    assert open_embedder(None).name == "local/all-MiniLM-L6-v2"
    with pytest.raises(Exception, match="STEAD_EMBEDDING_DIM"):
        open_embedder("openai/text-embedding-3-small")


async def test_loading_the_local_model_runs_numpys_blas_on_one_thread() -> None:
    import ctypes

    from stead.embeddings.minilm import _blas_libraries

    await EMBEDDER.embed(["load the model"])

    # Idle OpenBLAS helper threads busy-wait after every product: on a worker's shared
    # cores one embedding cost ~25x its own CPU. Loading the model turns them off.
    getters = [
        getattr(ctypes.CDLL(str(lib)), "scipy_openblas_get_num_threads64_", None)
        for lib in _blas_libraries()
    ]
    found = [get for get in getters if get is not None]
    assert found, "numpy's wheel ships scipy-openblas64 on Linux (positive control)"
    assert [get() for get in found] == [1] * len(found)
