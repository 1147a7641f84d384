"""The embedders: the local model gives sensible, deterministic vectors; the litellm
backend talks to a real OpenAI-compatible /v1/embeddings server the test starts."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stead.embeddings import EmbeddingMismatch, EmbeddingUnavailable, LiteLlmEmbedder, open_embedder
from stead.embeddings.bert_graph import build_encoder
from stead.embeddings.minilm import (
    MODEL_NAME,
    MiniLmEmbedder,
    _Encoder,
    _session,
    bundled_model_dir,
)
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
    assert open_embedder(None).name == MODEL_NAME == "local/all-MiniLM-L6-v2-int8"
    with pytest.raises(Exception, match="STEAD_EMBEDDING_DIM"):
        open_embedder("openai/text-embedding-3-small")


# The float model's first six components for two texts, as the float32 pipeline that
# matched sentence-transformers computed them before int8 (numpy, commit 1ad8552).
FLOAT_REFERENCE = {
    "How do I reset my password?": [0.0069, -0.06302, -0.07204, -0.0325, -0.04271, 0.07043],
    UNRELATED: [-0.06423, 0.0919, 0.01326, -0.0637, -0.06949, -0.03568],
}
MEANING_TEXTS = (
    *PARAPHRASES,
    UNRELATED,
    "When did Caroline go to the LGBTQ support group?",
    "Run ended completed.\nPlaybook: refunds\nSteps: 3 succeeded",
    "a much longer sentence " * 40,
)


def float_encoder() -> _Encoder:
    """The same graph with float32 weights: the reference int8 is held to."""
    from safetensors.numpy import load_file

    model_dir = bundled_model_dir()
    config = json.loads((model_dir / "config.json").read_text())
    graph = build_encoder(load_file(str(model_dir / "model.safetensors")), config, int8=False)
    return _Encoder(_session(graph), EMBEDDER._load().tokenizer)


def test_int8_vectors_keep_the_float_models_meaning() -> None:
    reference = float_encoder()
    encodings = reference.tokenizer.encode_batch(list(MEANING_TEXTS))
    floats = np.stack([reference.encode(e) for e in encodings])
    int8 = np.array(EMBEDDER.embed_sync(list(MEANING_TEXTS)))

    # The float graph is the model: it reproduces the float pipeline's vectors.
    for text, head in FLOAT_REFERENCE.items():
        np.testing.assert_allclose(floats[MEANING_TEXTS.index(text)][:6], head, atol=2e-5)
    # Int8 weights move each vector a little and nothing more.
    agreement = (floats * int8).sum(axis=1)
    assert agreement.min() > 0.99, agreement
    # Meaning survives: each text is still nearest its own float vector.
    assert list((int8 @ floats.T).argmax(axis=1)) == list(range(len(MEANING_TEXTS)))


def test_the_built_graph_is_cached_per_machine_and_a_damaged_copy_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected = EMBEDDER.embed_sync([UNRELATED])

    assert MiniLmEmbedder().embed_sync([UNRELATED]) == expected
    [cached] = (tmp_path / "stead" / "models").glob("minilm-int8-*.onnx")
    built = cached.read_bytes()
    # Readable by others: an image builds it as root for its non-root worker.
    assert cached.stat().st_mode & 0o777 == 0o644

    cached.write_bytes(built[: len(built) // 3])  # a torn or damaged copy
    assert MiniLmEmbedder().embed_sync([UNRELATED]) == expected
    assert cached.read_bytes() == built

    # An unwritable cache (a read-only home): the graph is built in memory each time.
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert MiniLmEmbedder().embed_sync([UNRELATED]) == expected


def thread_cpu_ticks() -> dict[int, int]:
    """CPU clock ticks (user + system) of each thread of this process, from /proc."""
    ticks = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def test_embedding_runs_on_the_calling_thread_only() -> None:
    """An embedding shares the worker's cores with its workflows and activities. A
    runtime that splits each call over a thread per core, whose helpers then busy-wait
    (OpenBLAS did: ~220 ms of CPU for one 8 ms embedding), takes CPU on other threads;
    one thread per call takes it only on the caller's. Load changes neither."""
    EMBEDDER.embed_sync(["load the model"])
    texts = [f"question {i} about the refund of order {i * 7}" for i in range(60)]

    before = thread_cpu_ticks()
    for text in texts:
        EMBEDDER.embed_sync([text])
    after = thread_cpu_ticks()

    spent = {tid: after[tid] - before.get(tid, 0) for tid in after}
    caller = spent.pop(threading.get_native_id())
    assert caller > 0, "the embeddings ran on this thread (positive control)"
    assert sum(spent.values()) <= max(3, caller // 5), (caller, spent)
