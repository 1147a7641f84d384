"""2. The express lane: per-step cost of a low-risk read with ``express_reads=True``.

With ``RunOptions.express_reads`` a low-risk read step is one local activity that
asks OPA, records the decision, mints and spends its capability, runs the adapter
through the effect ledger and audits it: no task-queue round trip, no workflow task
per step. The baseline, in the same run, is a bare chain of trivial *local*
activities (bench/bare.py): what Temporal's local-activity machinery costs alone.

Per-step cost is the slope ``(T(N) - T(1)) / (N - 1)`` over a chain of ``core.echo``
steps. Then, to say where the time goes, one more N-step and 1-step run are counted
in Postgres' WAL fsyncs (``pg_stat_io``): a durable commit waits for one, and this
disk's fsync latency is measured in the same run.

    .venv/bin/python -m bench.express [--quick] [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from bench.harness import (
    SERVICES,
    BenchStack,
    PgCounters,
    Retried,
    Row,
    Section,
    Usage,
    configure_tenant,
    echo_chain,
    fsync_latency_ms,
    in_process_workers,
    median,
    new_tenant,
    pg_counters,
    quick_flag,
    run_bare,
    run_governed,
    run_standalone,
    table,
    total,
    write_playbook,
)

# Issue 16, goal 2: an express step at most 2.5x a bare local activity's (same run).
GOAL_RATIO = 2.5
PARALLEL = 8


@dataclass(frozen=True)
class Sizes:
    steps: int
    repeats: int
    count_commits: bool = True  # ~35 s of waiting for Postgres to publish its counters


FULL = Sizes(steps=200, repeats=3)
QUICK = Sizes(steps=30, repeats=1, count_commits=False)


def fan_out(n: int) -> list[dict[str, object]]:
    """``n`` independent reads: the express lane at ``max_parallel`` instead of in a chain."""
    return [{"id": f"s{i}", "operation": "core.echo", "args": {"value": i}} for i in range(n)]


async def measure(stack: BenchStack, sizes: Sizes = FULL) -> Section:
    n = sizes.steps
    section = Section(f"2. Express lane: {n} low-risk read steps (core.echo), express_reads=True")
    fsync50, fsync99 = fsync_latency_ms(stack.work)
    for steps in {1, n}:
        write_playbook(stack.playbook_dir, f"chain{steps}", echo_chain(steps))
        write_playbook(stack.playbook_dir, f"fan{steps}", fan_out(steps))
    admin = stack.settings.postgres_admin_dsn or ""
    async with in_process_workers(stack.settings) as w:
        tenant = new_tenant("express")
        await configure_tenant(stack.settings, tenant)
        retried = Retried()
        variants = {
            "bare local activity (baseline)": lambda k: run_bare(w, k, local=True),
            "governed, express_reads (chain)": lambda k: retried(
                lambda: run_governed(w, tenant, f"chain{k}", k, express=True)
            ),
            f"governed, express_reads ({PARALLEL} in parallel)": lambda k: retried(
                lambda: run_governed(w, tenant, f"fan{k}", k, express=True, max_parallel=PARALLEL)
            ),
        }
        names = list(variants)
        for name in names:
            await variants[name](1)
        meter = stack.meter()
        long: dict[str, list[float]] = {k: [] for k in names}
        short: dict[str, list[float]] = {k: [] for k in names}
        usage: dict[str, list[Usage]] = {k: [] for k in names}
        for r in range(sizes.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                with meter.measuring(usage[name]):
                    long[name].append(await variants[name](n))
                short[name].append(await variants[name](1))
        # Durable commits per step: the same chain counted in WAL fsyncs and commits.
        counted: list[PgCounters] = []
        if sizes.count_commits:
            before = await pg_counters(admin)
            for steps in (n, 1):
                counted_run = functools.partial(
                    run_governed, w, tenant, f"chain{steps}", steps, express=True
                )
                await retried(counted_run)
                after = await pg_counters(admin)
                counted.append(after - before)
                before = after

    def slope(name: str) -> float:
        return (median(long[name]) - median(short[name])) / (n - 1) * 1000

    base = slope(names[0])
    rows = []
    for name in names:
        cpu = total(usage[name]).per(n * sizes.repeats).cpu
        rows.append(
            (
                name,
                f"{median(long[name]) * 1000:.0f}",
                f"{median(short[name]) * 1000:.0f}",
                f"{slope(name):.1f}",
                f"{slope(name) / base:.1f}x",
                *(f"{cpu.get(k, 0.0) * 1000:.1f}" for k in ("worker", *SERVICES)),
            )
        )
    section.lines += table(
        ("variant", f"{n}-step ms", "1-step ms", "ms/step", "x baseline",
         "CPU ms/step: worker", "Temporal", "Postgres", "OPA"),
        rows,
    )  # fmt: skip
    chain = slope(names[1])
    section.lines += retried.lines()
    section.lines.append(
        f"median of {sizes.repeats}; ms/step = (T(N) - T(1)) / (N - 1); in-process worker; "
        "CPU = each process's CPU over the N-step runs / steps (idle background included)"
    )
    if counted:
        fsyncs = (counted[0].wal_fsyncs - counted[1].wal_fsyncs) / (n - 1)
        commits = (counted[0].commits - counted[1].commits) / (n - 1)
        section.lines.append(
            f"Postgres per express step: {commits:.1f} transactions, {fsyncs:.1f} WAL fsyncs "
            f"(pg_stat_io); this disk: fsync p50 {fsync50:.1f} ms, p99 {fsync99:.1f} ms, so "
            f"~{fsyncs * fsync50:.1f} ms of each step waits for the disk at p50"
        )
    else:
        section.lines.append(
            f"this disk: fsync p50 {fsync50:.1f} ms, p99 {fsync99:.1f} ms "
            "(Postgres commit counting skipped with --quick)"
        )
    section.lines.append(
        "Per express step, 2 tenant transactions (BEGIN + set_config in one round trip, "
        "statements, COMMIT): the spend read + decision + decision check + capability spend "
        "+ ledger intent + the decision's audit event, then the completion + audit event; "
        "for a read with native idempotency only the last waits for its fsync (and flushes "
        "the first)."
    )
    section.rows.append(
        Row(
            "2 express",
            "express ms/step (chain)" + retried.note(),
            f"{chain:.1f}",
            f"{base:.1f} (bare local activity)",
            f"{chain / base:.1f}x",
            f"<= {GOAL_RATIO}x",
            chain / base <= GOAL_RATIO,
        )
    )
    parallel = slope(names[2])
    section.rows.append(
        Row(
            "2 express",
            f"express ms/step ({PARALLEL} parallel)",
            f"{parallel:.1f}",
            f"{base:.1f} (bare local activity)",
            f"{parallel / base:.1f}x",
            f"<= {GOAL_RATIO}x",
            parallel / base <= GOAL_RATIO,
        )
    )
    return section


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    sizes = Sizes(args.steps or base.steps, args.repeats or base.repeats)
    run_standalone(lambda stack: measure(stack, sizes))


if __name__ == "__main__":
    main()
