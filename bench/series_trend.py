"""What the commerce trend costs: per-SKU history reads and per-run writes of time series.

Seeds one tenant with the points ``commerce-reconcile`` records (per run and SKU, a
mismatch and a stock point, one ``observe_many`` batch per run), then times the read
its ``trend`` step makes (``by: sku``, ``last: 4``, one bucket over 90 days) against
the same-run baseline: the plain window read of the same rows (no grouping, no
``last``). It also times one run's batch write per point against single observes.
Prints p50/p95 in ms and ratios; run with ``python -m bench.series_trend``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench.harness import on_stack
from stead.db.pool import create_pool
from stead.memory import Provenance
from stead.memory.contracts import ObserveRequest, SeriesQuery
from stead.memory.series import SeriesStore
from stead.settings import Settings

WHO = Provenance(principal="service:bench")
TENANT = "bench-trend"


def run_points(run: int, skus: int, at: datetime, key: str) -> list[ObserveRequest]:
    points: list[ObserveRequest] = []
    for n in range(skus):
        sku = f"SKU-{n:05d}"
        wrong = 1.0 if (n + run) % 7 == 0 else 0.0
        for kind, value in (("mismatch", wrong), ("stock", float(n % 50))):
            points.append(
                ObserveRequest(
                    tenant=TENANT,
                    series="commerce.sku",
                    value=value,
                    labels={"sku": sku, "kind": kind},
                    observed_at=at,
                    provenance=WHO,
                    request_key=f"{key}#{len(points)}",
                )
            )
    return points


def pct(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


async def measure(cfg: Settings, args: argparse.Namespace) -> None:
    pool = await create_pool(cfg.postgres_dsn, min_size=1, max_size=2)
    store = SeriesStore(pool)
    now = datetime.now(UTC)
    try:
        for run in range(args.runs):
            at = now - timedelta(days=args.runs - run)
            await store.observe_many(run_points(run, args.skus, at, f"seed-{run}"))
        print(f"seeded {args.runs} runs x {args.skus} SKUs = {args.runs * args.skus * 2} points")
        base = SeriesQuery(
            tenant=TENANT,
            series="commerce.sku",
            labels={"kind": "mismatch"},
            since=now - timedelta(days=90),
            until=now,
            bucket=timedelta(days=90),
            aggregate="sum",
        )
        trend = base.model_copy(update={"by": "sku", "last": 4})
        timings: dict[str, list[float]] = {"plain window": [], "trend (by sku, last 4)": []}
        for _ in range(args.reads):
            for name, query in (("plain window", base), ("trend (by sku, last 4)", trend)):
                start = time.perf_counter()
                await store.series(query)
                timings[name].append((time.perf_counter() - start) * 1000)
        writes: dict[str, list[float]] = {"single observe": [], "observe_many batch": []}
        for n in range(args.writes):
            at = now - timedelta(minutes=n + 1)
            batch = run_points(n, args.skus, at, f"batch-{n}")
            start = time.perf_counter()
            await store.observe_many(batch)
            writes["observe_many batch"].append((time.perf_counter() - start) * 1000 / len(batch))
            start = time.perf_counter()
            await store.observe(batch[0].model_copy(update={"request_key": f"single-{n}"}))
            writes["single observe"].append((time.perf_counter() - start) * 1000)
    finally:
        await pool.close()
    print(f"{'read (ms)':<28}{'p50':>9}{'p95':>9}{'p50 vs plain':>14}")
    plain = pct(timings["plain window"], 50)
    for name, values in timings.items():
        p50 = pct(values, 50)
        print(f"{name:<28}{p50:>9.2f}{pct(values, 95):>9.2f}{p50 / plain:>13.1f}x")
    print(f"{'write (ms per point)':<28}{'p50':>9}{'p95':>9}{'p50 vs single':>14}")
    single = pct(writes["single observe"], 50)
    for name, values in writes.items():
        p50 = pct(values, 50)
        print(f"{name:<28}{p50:>9.3f}{pct(values, 95):>9.3f}{p50 / single:>13.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skus", type=int, default=200)
    parser.add_argument("--runs", type=int, default=60, help="Earlier nightly runs seeded.")
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--writes", type=int, default=5)
    args = parser.parse_args()
    on_stack("stead-bench-series-", lambda settings, _work: measure(settings, args))


if __name__ == "__main__":
    main()
