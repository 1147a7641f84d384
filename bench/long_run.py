"""6. A 10,000-step playbook: does it complete, and does each run's history stay small?

Temporal warns at 10,240 events in one run's history and refuses payloads over 2 MiB
(the SDK checks before it sends). The run workflow continues as new every
``continue_as_new_after_steps`` steps (200 by default), so history per run stays
bounded. A plan over ``plan_inline_max_steps`` (500 by default) is stored in
Postgres by reference: each run of the chain holds one window of it and carries
compact settled state, so no payload grows with the plan (the whole 10,000-step plan
would be ~2.6 MB).

The playbook is N independent ``core.echo`` steps (a chain would only be slower:
N sequential steps), run on the regular path (the default, and the one with the
most events per step) with ``max_parallel`` 8. When the N-step run does not
complete, the reason is printed, and a smaller run (``--fallback``) shows the
continue-as-new chain working.

    .venv/bin/python -m bench.long_run [--quick] [--steps 10000] [--fallback 2000]
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from temporalio.client import WorkflowHistory

from bench.harness import (
    BenchStack,
    Row,
    Section,
    Workers,
    configure_tenant,
    in_process_workers,
    new_tenant,
    quick_flag,
    run_chain,
    run_standalone,
    start_governed,
    table,
    write_playbook,
)

EVENTS_WARN = 10_240
PAYLOAD_LIMIT = 2 * 1024 * 1024
CONTINUE_AFTER = 200
PARALLEL = 8


@dataclass(frozen=True)
class Sizes:
    steps: int
    fallback: int
    timeout_s: float


FULL = Sizes(steps=10_000, fallback=2_000, timeout_s=3600)
QUICK = Sizes(steps=700, fallback=0, timeout_s=300)  # over 500: stored


@dataclass(frozen=True)
class LongRun:
    steps: int
    status: str
    reasons: tuple[str, ...]
    seconds: float
    events: list[int]
    largest_event: list[int]  # bytes of the largest event (a payload carrier) per run
    plan_bytes: int  # the plan.create_decided result: the plan (or its first window) in history


def independent(n: int) -> list[dict[str, object]]:
    return [{"id": f"s{i}", "operation": "core.echo", "args": {"value": i}} for i in range(n)]


def _plan_bytes(history: WorkflowHistory) -> int:
    scheduled: dict[int, str] = {}
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
        if event.HasField("activity_task_completed_event_attributes"):
            attrs = event.activity_task_completed_event_attributes
            if scheduled.get(attrs.scheduled_event_id) == "plan.create_decided":
                return attrs.result.ByteSize()
    return 0


async def one_run(w: Workers, stack: BenchStack, steps: int, timeout_s: float) -> LongRun:
    name = f"long{steps}"
    write_playbook(stack.playbook_dir, name, independent(steps))
    tenant = new_tenant("long")
    await configure_tenant(stack.settings, tenant)
    started = time.perf_counter()
    handle = await start_governed(
        w, tenant, name, steps, max_parallel=PARALLEL, continue_after=CONTINUE_AFTER
    )
    result = asyncio.ensure_future(handle.result())
    while not result.done():
        done, _ = await asyncio.wait({result}, timeout=60)
        elapsed = time.perf_counter() - started
        if not done:
            print(f"  {steps} steps: still running after {elapsed:.0f} s", flush=True)
            if elapsed > timeout_s:
                await handle.terminate("benchmark timeout")
    seconds = time.perf_counter() - started
    try:
        status = result.result()
        state, reasons = status.status, status.reasons
    except Exception as exc:
        state, reasons = "failed", (f"{type(exc).__name__}: {exc}",)
    assert handle.first_execution_run_id is not None
    histories = await run_chain(w.client, handle.id, handle.first_execution_run_id)
    return LongRun(
        steps=steps,
        status=state,
        reasons=tuple(reasons),
        seconds=seconds,
        events=[len(h.events) for h in histories],
        largest_event=[max(e.ByteSize() for e in h.events) for h in histories],
        plan_bytes=_plan_bytes(histories[0]),
    )


async def measure(stack: BenchStack, sizes: Sizes = FULL) -> Section:
    section = Section(f"6. A {sizes.steps:,}-step playbook through continue-as-new")
    runs: list[LongRun] = []
    async with in_process_workers(stack.settings) as w:
        runs.append(await one_run(w, stack, sizes.steps, sizes.timeout_s))
        if runs[0].status != "completed" and sizes.fallback:
            runs.append(await one_run(w, stack, sizes.fallback, sizes.timeout_s))
    inline_max = stack.settings.plan_inline_max_steps
    rows = []
    for r in runs:
        rows.append(
            (
                f"{r.steps:,} steps",
                "stored" if r.steps > inline_max else "inline",
                r.status,
                f"{r.seconds:.0f}",
                f"{r.steps / r.seconds:.1f}" if r.status == "completed" else "",
                str(len(r.events)),
                str(max(r.events)),
                f"{r.plan_bytes / 1024:.0f}",
                f"{max(r.largest_event) / 1024:.0f}",
            )
        )
    section.lines += table(
        ("playbook", "plan", "status", "seconds", "steps/s", "runs in chain", "max events/run",
         "plan in history kB", "largest event kB"),
        rows,
    )  # fmt: skip
    section.lines.append(
        f"independent core.echo steps, regular path, max_parallel {PARALLEL}, continue-as-new "
        f"every {CONTINUE_AFTER} steps; plans over {inline_max} steps are stored in Postgres "
        f"and history holds one window; Temporal warns at {EVENTS_WARN:,} events per run and "
        f"refuses payloads over {PAYLOAD_LIMIT // 1024:,} kB"
    )
    for r in runs:
        section.lines.append(f"events per run ({r.steps:,} steps): {r.events}")
        section.lines.append(
            f"largest event per run, kB ({r.steps:,} steps): "
            f"{[round(b / 1024, 1) for b in r.largest_event]}"
        )
        if r.status != "completed":
            section.lines.append(f"{r.steps:,} steps did not complete: {'; '.join(r.reasons)}")
    first = runs[0]
    section.rows.append(
        Row(
            "6 long run",
            f"{first.steps:,}-step playbook",
            first.status + (f" in {first.seconds:.0f} s" if first.status == "completed" else ""),
            "",
            "",
            "completes",
            first.status == "completed",
        )
    )
    # A run that never got past planning says nothing about history size.
    for r in (r for r in runs if r.status == "completed" or len(r.events) > 1):
        section.rows.append(
            Row(
                "6 long run",
                f"max events/run ({r.steps:,} steps, {len(r.events)} runs, {r.status})",
                str(max(r.events)),
                "",
                f"{max(r.events) / EVENTS_WARN:.2f} of limit",
                f"< {EVENTS_WARN:,}",
                max(r.events) < EVENTS_WARN,
            )
        )
        largest = max(r.largest_event)
        section.rows.append(
            Row(
                "6 long run",
                f"largest payload ({r.steps:,} steps)",
                f"{largest / 1024:.0f} kB",
                "",
                f"{largest / PAYLOAD_LIMIT:.3f} of limit",
                f"< {PAYLOAD_LIMIT // 1024:,} kB",
                largest < PAYLOAD_LIMIT,
            )
        )
    return section


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--fallback", type=int, help="smaller run when the first fails; 0: none")
    parser.add_argument("--timeout", type=float, help="seconds before the run is terminated")
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        args.steps or base.steps,
        base.fallback if args.fallback is None else args.fallback,
        args.timeout or base.timeout_s,
    )
    run_standalone(lambda stack: measure(stack, sizes))


if __name__ == "__main__":
    main()
