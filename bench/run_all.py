"""Every benchmark in one run, on one embedded stack, ending with the combined table.

One stack serves all of them (starting one takes seconds, and each benchmark uses
tenants and task queues of its own); the heavy ones (10,000 steps, 1,000 parked
runs) go last so their histories cannot slow the latency measurements. A benchmark
that fails is reported as a failed row and the rest still run. The table is
printed with the date and the machine (nproc, CPU model, RAM, load average): on a
shared 2-core machine the load average says how much the numbers can be trusted.

    .venv/bin/python -m bench.run_all            # full sizes (tens of minutes)
    .venv/bin/python -m bench.run_all --quick    # smoke run, about two minutes
    .venv/bin/python -m bench.run_all --only sequential,express
    .venv/bin/python -m bench.run_all --only locomo --locomo PATH/locomo10-part1.json
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from bench import (
    actions,
    decisions,
    express,
    fairness,
    locomo,
    long_run,
    parked,
    peer_dbos,
    peer_langgraph,
    sandbox_cost,
    sequential,
    throughput,
    wft_wait,
)
from bench.harness import (
    BenchStack,
    Row,
    Section,
    bench_stack,
    machine_line,
    quick_flag,
    quiet_logging,
    report,
    summary_table,
)

Bench = Callable[[BenchStack], Awaitable[Section]]
T = TypeVar("T")


def benchmarks(quick: bool, locomo_path: Path | None = None) -> dict[str, Bench]:
    """In run order: latency first, the long and parked runs last. LoCoMo runs only
    with a data file (it is not in the repository); without one its row says skipped."""

    def pick(full: T, small: T) -> T:
        return small if quick else full

    return {
        # Its own dev servers (bare Temporal), not the shared stack.
        "wft_wait": lambda s: wft_wait.measure(pick(wft_wait.FULL, wft_wait.QUICK)),
        "sequential": lambda s: sequential.measure(s, pick(sequential.FULL, sequential.QUICK)),
        "express": lambda s: express.measure(s, pick(express.FULL, express.QUICK)),
        "throughput": lambda s: throughput.measure(s, pick(throughput.FULL, throughput.QUICK)),
        "actions": lambda s: actions.measure(s, pick(actions.FULL, actions.QUICK)),
        "decisions": lambda s: decisions.measure(s.settings, pick(decisions.FULL, decisions.QUICK)),
        "peer": lambda s: peer_langgraph.measure(
            s, pick(peer_langgraph.FULL, peer_langgraph.QUICK)
        ),
        "peer_dbos": lambda s: peer_dbos.measure(s, pick(peer_dbos.FULL, peer_dbos.QUICK)),
        # Replays committed histories in this process; needs no stack.
        "sandbox_cost": lambda s: sandbox_cost.measure(pick(sandbox_cost.FULL, sandbox_cost.QUICK)),
        "long_run": lambda s: long_run.measure(s, pick(long_run.FULL, long_run.QUICK)),
        "parked": lambda s: parked.measure(s, pick(parked.FULL, parked.QUICK)),
        "fairness": lambda s: fairness.measure(s, pick(fairness.FULL, fairness.QUICK)),
        "locomo": lambda s: locomo.measure(s, locomo_path, pick(None, [0])),
    }


async def run(stack: BenchStack, chosen: dict[str, Bench]) -> list[Row]:
    rows: list[Row] = []
    for name, bench in chosen.items():
        started = time.perf_counter()
        print(f"\n--- {name} ...", flush=True)
        try:
            section = await bench(stack)
        except Exception as exc:
            traceback.print_exc()
            section = Section(f"{name}: FAILED")
            section.rows.append(Row(name, "benchmark failed", f"{type(exc).__name__}: {exc}"[:120]))
        section.lines.append(f"({name} took {time.perf_counter() - started:.0f} s)")
        report(section)
        rows += section.rows
    return rows


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument(
        "--locomo", type=Path, default=None, help="locomo10*.json (CC BY-NC; not in the repo)"
    )
    args = parser.parse_args()
    quiet_logging()
    everything = benchmarks(args.quick, args.locomo)
    wanted = [n for n in args.only.split(",") if n] or list(everything)
    unknown = set(wanted) - set(everything)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(everything)}")
    first = machine_line()
    print(first)
    started = time.perf_counter()
    with bench_stack() as stack:
        rows = asyncio.run(run(stack, {n: everything[n] for n in wanted}))
    minutes = (time.perf_counter() - started) / 60
    print()
    title = f"Stead benchmarks ({'quick' if args.quick else 'full'} sizes, {minutes:.1f} min)"
    print(title)
    print("=" * len(title))
    print(f"start: {first}")
    print(f"end:   {machine_line()}")
    print()
    for line in summary_table(rows):
        print(line)


if __name__ == "__main__":
    main()
