"""Recall latency at scale: 100k memories x 10 tenants on the embedded stack.

What is measured: `MemoryService.recall` end to end (embed the query with the local
all-MiniLM-L6-v2; one index call for the nearest points and the best by exact terms
(BM25 term vectors, IDF over the tenant's points); fetch and check the versions in
Postgres under row-level security; fuse), the same with the query
pre-embedded, both index rankings in one call, the term query alone and the vector
query alone, for
`--memories` memories spread evenly over `--tenants` tenants. Every question is
distinct, so none is answered from the embedder's cache of recent texts. The same-run
baseline is a bare vector store's recall: embed the question, ask the index for its 5
nearest points (no terms, no Postgres, no checks). Goal: recall p95 <= 20 ms.
`--local` also runs the same service code on qdrant-client's `:memory:` local mode
(queries alternate between the two so drift hits both columns alike); it ranks terms
by brute force in Python, seconds per query beyond a few thousand memories.

How the data gets there: the corpus is generated from a seed; its embeddings are
computed once with the real local model and cached as a .npy file (computing 100k
takes ~25 min on 2 idle cores, hours on a loaded machine; progress is saved, so a
run resumes, and `--memories` below what is done already uses it). When fewer than
`--memories` are cached, the cached ones are reused for the rest (`reused`: latency
only). Postgres is bulk-loaded with COPY as the admin role (COPY FROM does not run
under row-level security), already marked indexed; the index gets the same points
(embedding and term vector) by batched upserts. `bench.run_all` runs it as the
`memory_recall` row (`--quick`: 5k memories).

    .venv/bin/python -m bench.memory_recall                     # 100k memories x 10 tenants
    .venv/bin/python -m bench.memory_recall --memories 5000 --queries 100   # a quick run
    .venv/bin/python -m bench.memory_recall --prepare-only --memories 8192  # embed a prefix
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.harness import BenchStack, Row, Section, machine_line, on_stack
from bench.harness import report as report_rows
from stead.db.pool import create_pool
from stead.embeddings import MiniLmEmbedder
from stead.embeddings.minilm import MODEL_NAME
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
    """`n` questions, distinct: a repeated question would be answered from the embedder's
    cache of recent texts, and the end-to-end row must pay for the query embedding (the
    templates give 334 distinct ones; beyond that a copy is numbered)."""
    distinct = sorted(
        {
            template.format(city=city, channel=channel, product=product)
            for template in QUESTIONS
            for city in CITIES
            for channel in CHANNELS
            for product in PRODUCTS
        }
    )
    random.Random(seed + 1).shuffle(distinct)
    return [
        distinct[i % len(distinct)] + (f" ({i // len(distinct)})" if i >= len(distinct) else "")
        for i in range(n)
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
                f"{MODEL_NAME}+{TERMS_MODEL}",
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


# Command lines for `bench.run_all` (full sizes: the defaults).
FULL: tuple[str, ...] = ()
QUICK = ("--memories", "5000", "--queries", "60", "--warmup", "10")
GOAL_P95_MS = 20.0
PATHS = ("recall", "stored", "both", "terms", "vector", "bare")
LABELS = {
    "recall": "recall, end to end",
    "stored": "recall, query pre-embedded",
    "both": "index: dense + terms (one call)",
    "terms": "index: terms only (BM25, tenant IDF)",
    "vector": "vector query only",
    "bare": "bare: embed + vector query (baseline)",
}


def corpus_vectors(texts: list[str], sizes: argparse.Namespace) -> np.ndarray[Any, Any]:
    """Real embeddings of the corpus, or (`reuse_vectors`, or when only a prefix is cached)
    the cached prefix reused (`reused`): latency only. With nothing cached, 2,048 are
    embedded first (a minute or two)."""
    cached = max((_cached_size(f) for f in sizes.cache.glob(f"memory_recall-*-{sizes.seed}.npy")),
                 default=0)  # fmt: skip
    reuse = sizes.reuse_vectors if sizes.reuse_vectors is not None else cached < len(texts)
    if not reuse:
        return embeddings(texts, sizes.cache, sizes.seed)
    if not cached:
        embeddings(texts[:2048], sizes.cache, sizes.seed)
    return reused(len(texts), sizes.cache, sizes.seed)


async def measure_recall(cfg: Settings, sizes: argparse.Namespace, work: Path) -> Section:
    texts = corpus(sizes.memories, sizes.seed)
    print(f"corpus: {len(texts)} memories x {sizes.tenants} tenants; embedding (cached)...")
    vectors = corpus_vectors(texts, sizes)
    tenants = [f"bench{t:02d}" for t in range(sizes.tenants)]
    started = time.perf_counter()
    points = await load_postgres(cfg.postgres_admin_dsn or "", texts, tenants)
    print(f"postgres: COPY of {len(points)} versions in {time.perf_counter() - started:.1f} s")
    edge = EdgeVectorIndex(work / "qdrant")
    local = QdrantServerIndex(location=":memory:")
    names = ("edge", "local") if sizes.local else ("edge",)
    indexes: tuple[tuple[str, VectorIndex], ...] = (("edge", edge), ("local", local))[: len(names)]
    for name, index in indexes:
        took = await load_index(index, points, vectors, texts)
        print(f"{name}: {len(points)} points upserted in {took:.1f} s")
        # What the scheduled reindex does after writes: build the search graphs.
        started = time.perf_counter()
        await index.optimize()
        print(f"{name}: optimized in {time.perf_counter() - started:.1f} s")

    embedder = MiniLmEmbedder()
    pool = await create_pool(cfg.postgres_dsn, min_size=2, max_size=4)
    asked = questions(sizes.queries + sizes.warmup, sizes.seed)
    qvecs = embedder.embed_sync(asked)
    cached = PrecomputedEmbedder(dict(zip(asked, qvecs, strict=True)))
    services = {name: MemoryService(pool, idx, embedder) for name, idx in indexes}
    storage = {name: MemoryService(pool, idx, cached) for name, idx in indexes}
    depth = max(services["edge"].fusion.depth, sizes.k * 4 + 8)  # what recall asks
    times: dict[str, dict[str, list[float]]] = {path: {n: [] for n in names} for path in PATHS}
    try:
        for i, text in enumerate(asked):
            tenant = tenants[i % len(tenants)]
            q = RecallQuery(tenant=tenant, query=text, principal="service:bench", k=sizes.k)
            for name in names if i % 2 == 0 else tuple(reversed(names)):
                svc = services[name]
                terms = query_terms(text)

                async def bare(
                    svc: MemoryService = svc, text: str = text, tenant: str = tenant
                ) -> None:
                    [vector] = await asyncio.to_thread(embedder.embed_sync, [text])
                    await svc.index.query(tenant, vector, sizes.k)

                spent = {
                    "bare": await timed(bare),
                    "recall": await timed(functools.partial(svc.recall, q)),
                    "stored": await timed(functools.partial(storage[name].recall, q)),
                    "both": await timed(
                        functools.partial(svc.index.hybrid, tenant, qvecs[i], terms, depth)
                    ),
                    "terms": await timed(
                        functools.partial(svc.index.hybrid, tenant, None, terms, depth)
                    ),
                    "vector": await timed(
                        functools.partial(svc.index.query, tenant, qvecs[i], sizes.k)
                    ),
                }
                if i >= sizes.warmup:
                    for path, ms in spent.items():
                        times[path][name].append(ms)
    finally:
        await pool.close()
        await edge.close()
        await local.close()
    return report(sizes, times)


def report(sizes: argparse.Namespace, times: dict[str, dict[str, list[float]]]) -> Section:
    scale = f"{sizes.memories // 1000}k x {sizes.tenants} tenants"
    section = Section(
        f"memory recall, {sizes.memories} memories x {sizes.tenants} tenants,"
        f" k={sizes.k}, {sizes.queries} distinct questions"
    )
    lines = section.lines
    lines.append(f"{'path':<46}{'p50 ms':>10}{'p95 ms':>10}{'local/edge p50':>17}{'p95':>8}")
    for path in PATHS:
        data = times[path]
        for name in [n for n in ("edge", "local") if data.get(n)]:
            p50, p95 = pct(data[name], 50), pct(data[name], 95)
            ratio = ""
            if name == "local":
                ratio = f"{p50 / pct(data['edge'], 50):>16.1f}x{p95 / pct(data['edge'], 95):>7.1f}x"
            lines.append(f"{LABELS[path] + ' / ' + name:<46}{p50:>10.2f}{p95:>10.2f}{ratio}")
    r50, r95 = pct(times["recall"]["edge"], 50), pct(times["recall"]["edge"], 95)
    b50, b95 = pct(times["bare"]["edge"], 50), pct(times["bare"]["edge"], 95)
    section.rows += [
        Row("memory_recall", f"recall p50 ms, {scale}", f"{r50:.1f}",
            f"{b50:.1f} (embed + vector query)", f"{r50 / b50:.2f}x"),
        Row("memory_recall", f"recall p95 ms, {scale}", f"{r95:.1f}",
            f"{b95:.1f} (embed + vector query)", f"{r95 / b95:.2f}x",
            f"<= {GOAL_P95_MS:.0f} ms", r95 <= GOAL_P95_MS),
    ]  # fmt: skip
    return section


async def measure(stack: BenchStack, argv: Sequence[str]) -> Section:
    """For `bench.run_all`: the stack's Postgres, a shard of its own under the stack's dir."""
    _quiet_local_mode()
    sizes = parse_sizes(list(argv))
    return await measure_recall(stack.settings, sizes, stack.work / "memory-recall")


def _quiet_local_mode() -> None:
    # Local mode says it ignores payload indexes and is not meant for this size: that
    # is exactly what makes it the baseline.
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
    warnings.filterwarnings("ignore", message="Local mode is not recommended")


def options() -> argparse.ArgumentParser:
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
        default=None,
        help="Fill the corpus from the embeddings cached so far (latency only; see reused()); "
        "the default when fewer than --memories are cached.",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="Also measure qdrant-client's local mode (brute force in Python: seconds per "
        "hybrid query beyond a few thousand memories).",
    )
    parser.add_argument("--no-local", dest="local", action="store_false", help="The default.")
    return parser


def parse_sizes(argv: Sequence[str] | None = None) -> argparse.Namespace:
    sizes = options().parse_args(argv)
    # Another model's vectors (the float MiniLM's before int8) are another corpus.
    sizes.cache = sizes.cache / MODEL_NAME.replace("/", "_")
    return sizes


def main() -> None:
    sizes = parse_sizes()
    if sizes.prepare_only:
        embeddings(corpus(sizes.memories, sizes.seed), sizes.cache, sizes.seed)
        return
    _quiet_local_mode()

    async def measured(cfg: Settings, work: Path) -> None:
        print(machine_line())
        report_rows(await measure_recall(cfg, sizes, work))
        print(machine_line())

    on_stack("stead-bench-memory-", measured)


if __name__ == "__main__":
    main()
