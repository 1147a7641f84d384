"""The lexical half of recall alone, at 100k memories x 10 tenants: where its time goes.

Recall ranks exact terms in the vector index: each version's terms are a sparse BM25
vector beside its embedding, the engine applies IDF over the tenant's points
(stead/vector/terms.py). Before, the BM25 statement in Postgres (`store.lexical`,
now only for reads of the past, event-time windows, a lagging index and degraded
mode) read every live version of the tenant sharing a lexeme with the question: on
`memory_recall`'s templated corpus every question term matches thousands of a
tenant's 10,000 versions. This measures, in one loop, interleaved:

- `index terms`: the question's term vector and the embedded engine's term ranking
  (`EdgeVectorIndex.hybrid` without a dense vector; the points' dense vectors are
  8-dim placeholders, since only the term ranking is timed here);
- `index terms + check`: the same, then the candidates' rows checked in Postgres as
  recall does (BEGIN + tenant + `versions_by_id` + COMMIT, as the app role);
- `BM25 in Postgres`: `store.lexical` (BEGIN + tenant + statement + COMMIT);
- `ts_rank`: Postgres full text ranked by `ts_rank` (no idf), the old degraded path.

and how much the two BM25 rankings agree (top-10 overlap). No embeddings are needed,
so it runs at full size in a few minutes:

    .venv/bin/python -m bench.lexical_path                    # 100k x 10 tenants
    .venv/bin/python -m bench.lexical_path --memories 20000 --queries 100
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import on_stack
from bench.locomo import TS_RANK
from bench.memory_recall import corpus, load_index, load_postgres, questions
from stead.db.pool import create_pool, tenant_transaction
from stead.memory import store
from stead.settings import Settings
from stead.vector import EdgeVectorIndex
from stead.vector.terms import query_terms

LEVELS = ["public", "internal"]
DEPTH = 50
PLACEHOLDER = [1.0] + [0.0] * 7


async def timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


async def measure(cfg: Settings, args: argparse.Namespace, work: Path) -> None:
    tenants = [f"bench{t:02d}" for t in range(args.tenants)]
    texts = corpus(args.memories, args.seed)
    started = time.perf_counter()
    points = await load_postgres(cfg.postgres_admin_dsn or "", texts, tenants)
    print(f"postgres: COPY of {args.memories} versions in {time.perf_counter() - started:.1f} s")
    index = EdgeVectorIndex(work / "qdrant")
    placeholders = np.tile(np.asarray(PLACEHOLDER, dtype=np.float32), (len(points), 1))
    took = await load_index(index, points, placeholders, texts)
    print(f"edge: {len(points)} points with term vectors upserted in {took:.1f} s")
    pool = await create_pool(cfg.postgres_dsn, min_size=2, max_size=4)
    asked = questions(args.queries + args.warmup, args.seed)
    names = ("terms", "checked", "postgres", "ts_rank")
    times: dict[str, list[float]] = {name: [] for name in names}
    overlap: list[float] = []
    try:
        for i, text in enumerate(asked):
            tenant = tenants[i % len(tenants)]

            async def terms(text: str = text, t: str = tenant) -> list[str]:
                found = await index.hybrid(t, None, query_terms(text), DEPTH)
                return [h.id for h in found.lexical]

            async def checked(text: str = text, t: str = tenant) -> list[str]:
                ids = await terms(text, t)
                async with tenant_transaction(pool, t) as conn:
                    rows = await store.versions_by_id(conn, t, ids)
                live = {r["id"] for r in rows if r["live"]}
                return [i for i in ids if i in live]

            async def postgres(text: str = text, t: str = tenant) -> list[str]:
                async with tenant_transaction(pool, t) as conn:
                    found = await store.lexical(
                        conn,
                        t,
                        text,
                        namespaces=None,
                        since=None,
                        sensitivities=LEVELS,
                        limit=DEPTH,
                    )
                return [i for i, _ in found]

            async def ts_rank(text: str = text, t: str = tenant) -> list[str]:
                async with tenant_transaction(pool, t) as conn:
                    return [r["key"] for r in await conn.fetch(TS_RANK, t, text)]

            calls = {"terms": terms, "checked": checked, "postgres": postgres, "ts_rank": ts_rank}
            order = list(calls) if i % 2 == 0 else list(reversed(calls))
            ranked: dict[str, Any] = {}
            for name in order:
                ms, ranked[name] = await timed(calls[name])
                if i >= args.warmup:
                    times[name].append(ms)
            if i >= args.warmup:
                top = set(ranked["postgres"][:10])
                overlap.append(len(top & set(ranked["checked"][:10])) / max(len(top), 1))
    finally:
        await pool.close()
        await index.close()
    print()
    print(
        f"lexical path, {args.memories} memories x {args.tenants} tenants, "
        f"{args.queries} queries, {DEPTH} candidates"
    )
    print(f"{'path':<40}{'p50 ms':>10}{'p95 ms':>10}{'p50 vs postgres':>17}")
    base = statistics.median(times["postgres"])
    for name, label in (
        ("terms", "index terms (EdgeVectorIndex.hybrid)"),
        ("checked", "index terms + Postgres check"),
        ("postgres", "BM25 in Postgres (store.lexical)"),
        ("ts_rank", "ts_rank (no idf)"),
    ):
        p50 = statistics.median(times[name])
        p95 = statistics.quantiles(times[name], n=100, method="inclusive")[94]
        print(f"{label:<40}{p50:>10.1f}{p95:>10.1f}{p50 / base:>16.2f}x")
    print(f"top-10 overlap, index BM25 vs Postgres BM25: {statistics.mean(overlap):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    on_stack("stead-bench-lexical-", lambda settings, work: measure(settings, args, work))


if __name__ == "__main__":
    main()
