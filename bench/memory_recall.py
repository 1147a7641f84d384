"""Recall latency at scale: the embedded stack against qdrant-client's local mode.

What is measured: `MemoryService.recall` end to end (embed the query with the local
all-MiniLM-L6-v2; one index call for both rankings, the nearest points and the best
by exact terms (BM25 term vectors), filtered by tenant; fetch and check the versions
in Postgres under row-level security; fuse), the index call alone, and the vector
query alone, for
`--memories` memories spread evenly over `--tenants` tenants. The same service code
runs twice, once on the embedded Qdrant engine (`EdgeVectorIndex`, the default
stack) and once on qdrant-client's `:memory:` local mode (the baseline in the same
run); queries alternate between the two so drift hits both columns alike.

How the data gets there: the corpus is generated from a seed; its embeddings are
computed once with the real local model and cached as a .npy file (computing 100k
takes ~25 min on 2 idle cores, hours on a loaded machine; progress is saved, so a
run resumes, and `--memories` below what is done already uses it). Postgres is
bulk-loaded with COPY as the admin role (COPY FROM does not run under row-level
security), already marked indexed; both indexes get the same points (embedding and
term vector) by batched upserts.

    .venv/bin/python -m bench.memory_recall                     # 100k memories x 10 tenants
    .venv/bin/python -m bench.memory_recall --memories 5000 --queries 100   # a quick run
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import random
import statistics
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bench.harness import on_stack
from stead.db.pool import create_pool
from stead.embeddings import MiniLmEmbedder
from stead.memory import RecallQuery
from stead.memory.service import MemoryService
from stead.settings import Settings
from stead.vector import EdgeVectorIndex, QdrantServerIndex, VectorIndex, VectorPayload, VectorPoint
from stead.vector.terms import TERMS_MODEL, document_terms, query_terms

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = ("customers", "orders", "support", "brand", "ops")
NAMES = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
    "Marco",
    "Nora",
    "Omar",
    "Pia",
]
CITIES = [
    "Lisbon",
    "Oslo",
    "Denver",
    "Pune",
    "Lagos",
    "Quito",
    "Seoul",
    "Perth",
    "Cork",
    "Turin",
    "Leeds",
    "Austin",
]
PRODUCTS = [
    "bike",
    "helmet",
    "kettle",
    "desk",
    "lamp",
    "tent",
    "jacket",
    "router",
    "drone",
    "blender",
    "scarf",
]
CHANNELS = ("email", "phone", "chat", "post")
TEMPLATES = (
    "{name} from {city} prefers {channel} and bought a {product} last {day}.",
    "Order {n} for a {product} ships to {city} on {day}; contact {name} by {channel}.",
    "Support ticket {n}: {name}'s {product} stopped working after the {day} update.",
    "Brand rule {n}: mention the {product} range only with photos taken in {city}.",
    "Runbook {n}: restart the {product} service in {city} every {day} night.",
)
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
QUESTIONS = (
    "Which customer in {city} likes to be contacted by {channel}?",
    "When does the {product} order to {city} ship?",
    "Who reported a broken {product}?",
    "What are the rules for showing the {product} range?",
    "How often do we restart the {product} service in {city}?",
)


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(TEMPLATES).format(
            name=rng.choice(NAMES),
            city=rng.choice(CITIES),
            channel=rng.choice(CHANNELS),
            product=rng.choice(PRODUCTS),
            day=rng.choice(DAYS),
            n=i,
        )
        for i in range(n)
    ]


def questions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    return [
        rng.choice(QUESTIONS).format(
            city=rng.choice(CITIES), channel=rng.choice(CHANNELS), product=rng.choice(PRODUCTS)
        )
        for _ in range(n)
    ]


def embeddings(texts: list[str], cache: Path, seed: int) -> np.ndarray[Any, Any]:
    """Real embeddings of `texts`, computed once and cached by corpus size and seed.

    Progress is saved as it goes (`memory_recall-<done>-<seed>.npy`, replaced every few
    batches): an interrupted run resumes there, and a smaller run can already use it."""
    path = cache / f"memory_recall-{len(texts)}-{seed}.npy"
    if path.exists():
        cached: np.ndarray[Any, Any] = np.load(path)
        return cached
    # The corpus of a seed is a prefix of every larger one: reuse a bigger cache, or
    # resume from the largest smaller one.
    done_before: np.ndarray[Any, Any] | None = None
    for found in sorted(cache.glob(f"memory_recall-*-{seed}.npy"), key=_cached_size):
        size = _cached_size(found)
        if size >= len(texts):
            prefix: np.ndarray[Any, Any] = np.load(found, mmap_mode="r")[: len(texts)]
            return np.ascontiguousarray(prefix)
        done_before = np.load(found)
    cache.mkdir(parents=True, exist_ok=True)
    embedder = MiniLmEmbedder()
    started = time.perf_counter()
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    first = 0 if done_before is None else len(done_before)
    if done_before is not None:
        out[:first] = done_before
    step, checkpoint = 2048, first
    for start in range(first, len(texts), step):
        out[start : start + step] = embedder.embed_sync(texts[start : start + step])
        done = min(start + step, len(texts))
        rate = (done - first) / (time.perf_counter() - started)
        print(f"  embedded {done}/{len(texts)} ({rate:.0f}/s)", flush=True)
        if done - checkpoint >= 4 * step and done < len(texts):
            _save_prefix(cache, seed, out[:done], replaces=checkpoint)
            checkpoint = done
    _save_prefix(cache, seed, out, replaces=checkpoint)
    return out


def reused(n: int, cache: Path, seed: int) -> np.ndarray[Any, Any]:
    """`n` corpus vectors when fewer are embedded: the largest cached prefix of real
    embeddings repeated, each copy moved by a little noise and renormalised. The index
    then holds `n` distinct points shaped like real ones (the query vectors stay real),
    but a point's vector is not its own text's: latency only, never quality."""
    found = max(cache.glob(f"memory_recall-*-{seed}.npy"), key=_cached_size, default=None)
    if found is None:
        raise SystemExit("--reuse-vectors needs some embeddings cached: run --prepare-only first")
    real: np.ndarray[Any, Any] = np.load(found)
    rng = np.random.default_rng(seed)
    out = np.resize(real, (n, real.shape[1])).astype(np.float32)
    out[len(real) :] += rng.normal(0, 0.02, size=(n - min(n, len(real)), real.shape[1]))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    print(f"corpus vectors: {len(real)} real embeddings reused for {n} points")
    return out


def _cached_size(path: Path) -> int:
    return int(path.stem.split("-")[1])


def _save_prefix(cache: Path, seed: int, vectors: np.ndarray[Any, Any], replaces: int) -> None:
    np.save(cache / f"memory_recall-{len(vectors)}-{seed}.npy", vectors)
    old = cache / f"memory_recall-{replaces}-{seed}.npy"
    if replaces and replaces != len(vectors) and old.exists():
        old.unlink()


async def load_postgres(
    admin_dsn: str, texts: list[str], tenants: list[str]
) -> list[tuple[str, str, str, str]]:
    """COPY memories and their (indexed) versions; returns (version id, tenant, ns, memory id)."""
    now = datetime.now(UTC)
    memories, versions, points = [], [], []
    for i, text in enumerate(texts):
        tenant = tenants[i % len(tenants)]
        namespace = NAMESPACES[i % len(NAMESPACES)]
        memory_id, version_id = uuid.uuid4(), uuid.uuid4()
        memories.append((memory_id, tenant, namespace, f"k{i}", 1, now, now))
        digest = hashlib.sha256(text.encode()).hexdigest()
        versions.append(
            (
                version_id,
                tenant,
                memory_id,
                1,
                text,
                digest,
                "internal",
                now,
                now,
                "service:bench",
                "bench",
                "indexed",
                f"local/all-MiniLM-L6-v2+{TERMS_MODEL}",
            )
        )
        points.append((str(version_id), tenant, namespace, str(memory_id)))
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.executemany(
            "INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING", [(t,) for t in tenants]
        )
        await conn.copy_records_to_table(
            "memories",
            records=memories,
            columns=[
                "id",
                "tenant",
                "namespace",
                "key",
                "current_version",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "memory_versions",
            records=versions,
            columns=[
                "id",
                "tenant",
                "memory_id",
                "version",
                "content",
                "content_hash",
                "sensitivity",
                "valid_from",
                "recorded_at",
                "principal",
                "reason",
                "index_state",
                "indexed_model",
            ],
        )
        await conn.execute("ANALYZE memories; ANALYZE memory_versions")
    finally:
        await conn.close()
    return points


async def load_index(
    index: VectorIndex,
    points: list[tuple[str, str, str, str]],
    vectors: np.ndarray[Any, Any],
    texts: list[str],
) -> float:
    started = time.perf_counter()
    await index.ensure_collection(vectors.shape[1])
    batch = 1000
    for start in range(0, len(points), batch):
        await index.upsert(
            [
                VectorPoint(
                    id=pid,
                    vector=vectors[start + j].tolist(),
                    payload=VectorPayload(
                        tenant=tenant,
                        namespace=ns,
                        memory_id=mid,
                        version=1,
                        sensitivity="internal",
                    ),
                    terms=document_terms(texts[start + j]),
                )
                for j, (pid, tenant, ns, mid) in enumerate(points[start : start + batch])
            ]
        )
    return time.perf_counter() - started


class PrecomputedEmbedder:
    """Serves the query vectors computed up front, so a row can show recall's storage
    path (index + Postgres) without the model's CPU time in it."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self._vectors = vectors

    @property
    def name(self) -> str:
        return MiniLmEmbedder().name

    @property
    def dim(self) -> int:
        return 384

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vectors[t] for t in texts]


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


async def measure(cfg: Settings, args: argparse.Namespace, work: Path) -> None:
    texts = corpus(args.memories, args.seed)
    print(f"corpus: {len(texts)} memories x {args.tenants} tenants; embedding (cached)...")
    vectors = (
        reused(len(texts), args.cache, args.seed)
        if args.reuse_vectors
        else embeddings(texts, args.cache, args.seed)
    )
    tenants = [f"bench{t:02d}" for t in range(args.tenants)]
    started = time.perf_counter()
    points = await load_postgres(cfg.postgres_admin_dsn or "", texts, tenants)
    print(f"postgres: COPY of {len(points)} versions in {time.perf_counter() - started:.1f} s")
    edge = EdgeVectorIndex(work / "qdrant")
    local = QdrantServerIndex(location=":memory:")
    names = ("edge", "local") if args.local else ("edge",)
    for name, index in (("edge", edge), ("local", local))[: len(names)]:
        took = await load_index(index, points, vectors, texts)
        print(f"{name}: {len(points)} points upserted in {took:.1f} s")

    embedder = MiniLmEmbedder()
    pool = await create_pool(cfg.postgres_dsn, min_size=2, max_size=4)
    asked = questions(args.queries + args.warmup, args.seed)
    qvecs = embedder.embed_sync(asked)
    cached = PrecomputedEmbedder(dict(zip(asked, qvecs, strict=True)))
    indexes: tuple[tuple[str, VectorIndex], ...] = (("edge", edge), ("local", local))[: len(names)]
    services = {name: MemoryService(pool, idx, embedder) for name, idx in indexes}
    storage = {name: MemoryService(pool, idx, cached) for name, idx in indexes}
    recall: dict[str, list[float]] = {"edge": [], "local": []}
    depth = max(services["edge"].fusion.depth, args.k * 4 + 8)  # what recall asks
    stored: dict[str, list[float]] = {"edge": [], "local": []}
    both: dict[str, list[float]] = {"edge": [], "local": []}
    vector: dict[str, list[float]] = {"edge": [], "local": []}
    try:
        for i, text in enumerate(asked):
            tenant = tenants[i % len(tenants)]
            q = RecallQuery(tenant=tenant, query=text, principal="service:bench", k=args.k)
            for name in names if i % 2 == 0 else tuple(reversed(names)):
                svc = services[name]
                r = await timed(functools.partial(svc.recall, q))
                s = await timed(functools.partial(storage[name].recall, q))
                terms = query_terms(text)
                h = await timed(functools.partial(svc.index.hybrid, tenant, qvecs[i], terms, depth))
                v = await timed(functools.partial(svc.index.query, tenant, qvecs[i], args.k))
                if i >= args.warmup:
                    recall[name].append(r)
                    stored[name].append(s)
                    both[name].append(h)
                    vector[name].append(v)
    finally:
        await pool.close()
        await edge.close()
        await local.close()
    report(args, {"recall": recall, "stored": stored, "both": both, "vector": vector})


def report(args: argparse.Namespace, times: dict[str, dict[str, list[float]]]) -> None:
    print()
    print(
        f"memory recall, {args.memories} memories x {args.tenants} tenants,"
        f" k={args.k}, {args.queries} queries"
    )
    print(f"{'path':<42}{'p50 ms':>10}{'p95 ms':>10}{'local/edge p50':>17}{'p95':>8}")
    rows = (
        ("recall, end to end", times["recall"]),
        ("recall, query pre-embedded", times["stored"]),
        ("index: dense + terms (one call)", times["both"]),
        ("vector query only", times["vector"]),
    )
    for label, data in rows:
        for name in [n for n in ("edge", "local") if data[n]]:
            p50, p95 = pct(data[name], 50), pct(data[name], 95)
            ratio = ""
            if name == "local":
                ratio = f"{p50 / pct(data['edge'], 50):>16.1f}x{p95 / pct(data['edge'], 95):>7.1f}x"
            print(f"{label + ' / ' + name:<42}{p50:>10.2f}{p95:>10.2f}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=REPO / ".stead" / "bench")
    parser.add_argument("--prepare-only", action="store_true", help="Only compute the embeddings.")
    parser.add_argument(
        "--reuse-vectors",
        action="store_true",
        help="Fill the corpus from the embeddings cached so far (latency only; see reused()).",
    )
    parser.add_argument(
        "--no-local",
        dest="local",
        action="store_false",
        help="Skip the local-mode baseline (brute force in Python: seconds per hybrid query "
        "beyond a few thousand memories).",
    )
    args = parser.parse_args()
    if args.prepare_only:
        embeddings(corpus(args.memories, args.seed), args.cache, args.seed)
        return
    # Local mode says it ignores payload indexes and is not meant for this size: that
    # is exactly what makes it the baseline.
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
    warnings.filterwarnings("ignore", message="Local mode is not recommended")
    on_stack("stead-bench-memory-", lambda settings, work: measure(settings, args, work))


if __name__ == "__main__":
    main()
