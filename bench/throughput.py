"""3. Throughput with one worker: many concurrent runs, governed vs bare, in steps per second.

R runs of S sequential steps start at once on one in-process worker (the production
``build_worker`` with the SDK's default concurrency); the clock runs from the first
start to the last result. The baseline is R bare workflows of S trivial activities
on the same Temporal, in the same process, measured in the same run. All governed
runs belong to one tenant, the common case and the worst one for the audit chain's
per-tenant append lock.

A run that fails is counted, not retried: its first reason is printed, and steps/s
counts completed runs only, so a failure shows up as lost throughput.

    .venv/bin/python -m bench.throughput [--quick] [--runs 50] [--steps 10] [--repeats 1]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.harness import (
    SERVICES,
    BenchStack,
    Row,
    Section,
    Usage,
    Workers,
    configure_tenant,
    echo_chain,
    in_process_workers,
    median,
    new_tenant,
    quick_flag,
    run_bare,
    run_governed,
    run_standalone,
    table,
    total,
    write_playbook,
)

GOAL_RATIO = 0.85


@dataclass(frozen=True)
class Sizes:
    runs: int
    steps: int
    repeats: int


FULL = Sizes(runs=50, steps=10, repeats=1)
QUICK = Sizes(runs=10, steps=5, repeats=1)


@dataclass
class Batch:
    seconds: list[float] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)


async def concurrently(runs: int, one: Callable[[], Awaitable[float]], into: Batch) -> None:
    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(runs)), return_exceptions=True)
    into.seconds.append(time.perf_counter() - started)
    for result in results:
        if isinstance(result, BaseException):
            into.failed += 1
            into.reasons.append(f"{type(result).__name__}: {_cause(result)}")
        else:
            into.completed += 1


def _cause(exc: BaseException) -> str:
    """The innermost message: a workflow failure wraps the activity error that caused it."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)[:200]


def variants(w: Workers, tenant: str, steps: int) -> dict[str, Callable[[], Awaitable[float]]]:
    return {
        "bare activity (baseline)": lambda: run_bare(w, steps),
        "bare local activity": lambda: run_bare(w, steps, local=True),
        "governed": lambda: run_governed(w, tenant, f"chain{steps}", steps),
        "governed, express_reads": lambda: run_governed(
            w, tenant, f"chain{steps}", steps, express=True
        ),
    }


async def measure(stack: BenchStack, sizes: Sizes = FULL) -> Section:
    r, s = sizes.runs, sizes.steps
    section = Section(f"3. Throughput, one worker: {r} concurrent runs x {s} sequential steps")
    write_playbook(stack.playbook_dir, f"chain{s}", echo_chain(s))
    async with in_process_workers(stack.settings) as w:
        tenant = new_tenant("thru")
        await configure_tenant(stack.settings, tenant)
        calls = variants(w, tenant, s)
        names = list(calls)
        for name in names:
            await calls[name]()
        meter = stack.meter()
        batches = {name: Batch() for name in names}
        for rep in range(sizes.repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                with meter.measuring(batches[name].usage):
                    await concurrently(r, calls[name], batches[name])

    def rate(b: Batch) -> float:
        return b.completed * s / sum(b.seconds)

    base = rate(batches[names[0]])
    rows = []
    for name, b in batches.items():
        cpu = total(b.usage).per(max(1, b.completed * s)).cpu
        rows.append(
            (
                name,
                f"{median(b.seconds):.1f}",
                f"{b.completed}/{b.completed + b.failed}",
                f"{rate(b):.1f}",
                f"{rate(b) / base:.2f}x",
                *(f"{cpu.get(k, 0.0) * 1000:.1f}" for k in ("worker", *SERVICES)),
            )
        )
    section.lines += table(
        ("variant", "wall s", "completed", "steps/s", "x bare",
         "CPU ms/step: worker", "Temporal", "Postgres", "OPA"),
        rows,
    )  # fmt: skip
    section.lines.append(
        f"{sizes.repeats} repeat(s), variants rotated; steps/s = completed runs x {s} / wall; "
        "one tenant; in-process workers: Stead's with its default slots (4 workflow tasks), "
        "the bare one with the SDK's"
    )
    for name, b in batches.items():
        for reason in sorted(set(b.reasons))[:3]:
            section.lines.append(f"FAILED ({name}): {b.reasons.count(reason)}x {reason}")
    for name in ("governed", "governed, express_reads"):
        b = batches[name]
        ratio = rate(b) / base
        section.rows.append(
            Row(
                "3 throughput",
                f"{name} steps/s" + (f" ({b.failed} runs FAILED)" if b.failed else ""),
                f"{rate(b):.1f}",
                f"{base:.1f} (bare activity)",
                f"{ratio:.2f}x",
                f">= {GOAL_RATIO}x",
                ratio >= GOAL_RATIO and not b.failed,
            )
        )
    return section


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    sizes = Sizes(args.runs or base.runs, args.steps or base.steps, args.repeats or base.repeats)
    run_standalone(lambda stack: measure(stack, sizes))


if __name__ == "__main__":
    main()
