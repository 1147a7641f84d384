"""The lexical half of recall alone, at 100k memories x 10 tenants: where its time goes.

Hybrid recall's cost on large tenants is the BM25 statement (`store.lexical`): it
reads every live version of the tenant that shares a lexeme with the question, and
on `memory_recall`'s templated corpus every question term matches thousands of a
tenant's 10,000 versions. This measures that statement as the app role under
row-level security (BEGIN + tenant setting per query, as recall does), against two
baselines run in the same loop, interleaved:

- `before`: the BM25 statement as it was before this benchmark existed (a second scan
  of the tenant's rows to count documents, the memories join on every query, lexemes
  unnested twice); it ranks identically, so the ratio is the cost of the rewrite;
- `ts_rank`: Postgres full text ranked by `ts_rank` (no idf), the old degraded path.

No embeddings are needed, so it runs at full size in a minute or two:

    .venv/bin/python -m bench.lexical_path                    # 100k x 10 tenants
    .venv/bin/python -m bench.lexical_path --memories 20000 --queries 100
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import asyncpg

from bench.harness import on_stack
from bench.locomo import TS_RANK
from bench.memory_recall import corpus, load_postgres, questions
from stead.db.pool import create_pool, tenant_transaction
from stead.memory import store
from stead.settings import Settings

BEFORE = """
WITH q AS (
    SELECT nullif(replace(plainto_tsquery('english', $2)::text, ' & ', ' | '), '')::tsquery AS tsq,
           ARRAY(SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', $2)))) AS terms
), hits AS (
    SELECT v.id, v.search, length(v.search) AS len
    FROM memory_versions v JOIN memories m ON m.id = v.memory_id AND m.tenant = v.tenant, q
    WHERE v.tenant = $1 AND v.superseded_at IS NULL AND v.erased_at IS NULL
      AND (v.expires_at IS NULL OR v.expires_at > now()) AND v.search @@ q.tsq
      AND v.sensitivity = ANY($3::text[])
), docs AS (
    SELECT count(*)::float8 AS n FROM memory_versions v WHERE v.tenant = $1
      AND v.superseded_at IS NULL AND v.erased_at IS NULL
      AND (v.expires_at IS NULL OR v.expires_at > now())
), tf AS (
    SELECT h.id, h.len, u.lexeme, coalesce(array_length(u.positions, 1), 1) AS tf
    FROM hits h, q, unnest(h.search) u WHERE u.lexeme = ANY(q.terms)
), df AS (
    SELECT lexeme, count(*)::float8 AS df FROM tf GROUP BY lexeme
), mean AS (
    SELECT greatest(avg(len), 1)::float8 AS len FROM hits
)
SELECT tf.id::text AS id,
       sum(ln(1 + (docs.n - df.df + 0.5) / (df.df + 0.5))
           * tf.tf * 2.2 / (tf.tf + 1.2 * (0.25 + 0.75 * tf.len / mean.len))) AS score
FROM tf JOIN df USING (lexeme), docs, mean
GROUP BY tf.id ORDER BY score DESC, tf.id LIMIT $4
"""
LEVELS = ["public", "internal"]
DEPTH = 50


async def timed_in_tenant(pool: asyncpg.Pool, tenant: str, call: Any) -> tuple[float, list[str]]:
    started = time.perf_counter()
    async with tenant_transaction(pool, tenant) as conn:
        ids = await call(conn)
    return (time.perf_counter() - started) * 1000, ids


async def measure(cfg: Settings, args: argparse.Namespace) -> None:
    tenants = [f"bench{t:02d}" for t in range(args.tenants)]
    started = time.perf_counter()
    await load_postgres(cfg.postgres_admin_dsn or "", corpus(args.memories, args.seed), tenants)
    print(f"postgres: COPY of {args.memories} versions in {time.perf_counter() - started:.1f} s")
    pool = await create_pool(cfg.postgres_dsn, min_size=2, max_size=4)
    asked = questions(args.queries + args.warmup, args.seed)
    times: dict[str, list[float]] = {"now": [], "before": [], "ts_rank": []}
    same = 0
    try:
        for i, text in enumerate(asked):
            tenant = tenants[i % len(tenants)]

            async def now(conn: asyncpg.Connection, text: str = text, t: str = tenant) -> Any:
                found = await store.lexical(
                    conn, t, text, namespaces=None, since=None, sensitivities=LEVELS, limit=DEPTH
                )
                return [round(score, 9) for _, score in found]

            async def before(conn: asyncpg.Connection, text: str = text, t: str = tenant) -> Any:
                rows = await conn.fetch(BEFORE, t, text, LEVELS, DEPTH)
                return [round(float(r["score"]), 9) for r in rows]

            async def ts_rank(conn: asyncpg.Connection, text: str = text, t: str = tenant) -> Any:
                return [r["key"] for r in await conn.fetch(TS_RANK, t, text)]

            calls = {"now": now, "before": before, "ts_rank": ts_rank}
            order = list(calls) if i % 2 == 0 else list(reversed(calls))
            scores: dict[str, Any] = {}
            for name in order:
                took, scores[name] = await timed_in_tenant(pool, tenant, calls[name])
                if i >= args.warmup:
                    times[name].append(took)
            same += sorted(scores["now"]) == sorted(scores["before"])
    finally:
        await pool.close()
    print()
    print(
        f"lexical path, {args.memories} memories x {args.tenants} tenants, "
        f"{args.queries} queries (BEGIN + tenant + statement + COMMIT, as the app role)"
    )
    print(f"{'statement':<34}{'p50 ms':>10}{'p95 ms':>10}{'p50 vs now':>12}")
    base = statistics.median(times["now"])
    for name, label in (
        ("now", "BM25 (store.lexical)"),
        ("before", "BM25 before"),
        ("ts_rank", "ts_rank (no idf)"),
    ):
        p50 = statistics.median(times[name])
        p95 = statistics.quantiles(times[name], n=100, method="inclusive")[94]
        print(f"{label:<34}{p50:>10.1f}{p95:>10.1f}{p50 / base:>11.2f}x")
    print(f"same BM25 scores as before: {same}/{len(asked)} questions")


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
    on_stack("stead-bench-lexical-", lambda settings, _work: measure(settings, args))


if __name__ == "__main__":
    main()
