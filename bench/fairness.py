"""8. Fairness between tenants: a quiet tenant's step latency behind a noisy tenant's backlog.

A noisy tenant queues hundreds of runs (a short ``core.echo`` chain each) on a task queue
before the worker polls it; then a quiet tenant starts a few runs of the same chain and
we time them, start to result, per step. The worker has bounded slots
(``STEAD_WORKER_MAX_ACTIVITIES``/``_WORKFLOW_TASKS``), as a production worker has, so the
backlog waits in Temporal, where matching decides who goes next. Three modes, one stack,
one process, each on a fresh queue with a fresh worker:

- idle: the quiet runs alone (the baseline: what a step costs with nobody in the way);
- FIFO: every run on the default fairness key (what Stead did before fairness keys);
- fair: every run starts through ``stead.cli.starts.start_governed`` with its tenant as
  the fairness key (Stead's default now), on the dev server's fair matcher.

Printed: the quiet tenant's ms per step in each mode, the ratio of FIFO and fair to idle
and of FIFO to fair (same run), and how many noisy runs were still open when the quiet
runs had finished (that the backlog really was there).

    .venv/bin/python -m bench.fairness [--quick]
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import Priority

from bench.harness import (
    PRINCIPAL,
    BenchStack,
    Row,
    Section,
    bounded,
    configure_tenant,
    echo_chain,
    new_tenant,
    quick_flag,
    run_standalone,
    table,
    write_playbook,
)
from stead.cli.starts import start_governed
from stead.contracts.run import Budget, RunRequest, RunStatus
from stead.temporal import connect
from workers.main import build_worker, open_resources

STEPS = 3
SLOTS = 4


@dataclass(frozen=True)
class Sizes:
    noisy_runs: int
    quiet_runs: int
    timeout_s: float


FULL = Sizes(noisy_runs=300, quiet_runs=5, timeout_s=1200)
QUICK = Sizes(noisy_runs=60, quiet_runs=3, timeout_s=300)


@dataclass(frozen=True)
class Mode:
    name: str
    noisy_runs: int
    fair: bool


@dataclass(frozen=True)
class Outcome:
    quiet_ms_per_step: float
    noisy_open_after_quiet: int


def request(tenant: str, playbook: str) -> RunRequest:
    return RunRequest(
        tenant=tenant, principal=PRINCIPAL, playbook=playbook, budget=Budget(max_steps=STEPS)
    )


async def start(
    client: Client, queue: str, tenant: str, playbook: str, fair: bool
) -> WorkflowHandle[Any, RunStatus]:
    # Without fairness every run shares the default key: first in, first out.
    options: dict[str, Any] = {} if fair else {"priority": Priority.default}
    return await start_governed(client, queue, request(tenant, playbook), None, **options)


async def timed(handle: WorkflowHandle[Any, RunStatus], since: float) -> float:
    status = await handle.result()
    if status.status != "completed":
        raise RuntimeError(f"{handle.id}: {status.status}: {'; '.join(status.reasons)}")
    return time.perf_counter() - since


async def one_mode(stack: BenchStack, mode: Mode, playbook: str, sizes: Sizes) -> Outcome:
    noisy, quiet = new_tenant("noisy"), new_tenant("quiet")
    for tenant in (noisy, quiet):
        await configure_tenant(stack.settings, tenant)
    client = await connect(stack.settings)
    queue = f"bench-fair-{uuid.uuid4().hex[:8]}"
    backlog = await bounded(
        20,
        [lambda: start(client, queue, noisy, playbook, mode.fair) for _ in range(mode.noisy_runs)],
    )
    slots = stack.settings.model_copy(
        update={"worker_max_activities": SLOTS, "worker_max_workflow_tasks": SLOTS}
    )
    async with open_resources(slots) as resources, build_worker(client, queue, resources):
        since = time.perf_counter()
        quiet_handles = [
            await start(client, queue, quiet, playbook, mode.fair) for _ in range(sizes.quiet_runs)
        ]
        seconds = await asyncio.wait_for(
            asyncio.gather(*(timed(h, since) for h in quiet_handles)), sizes.timeout_s
        )
        still_open = sum(
            1
            for status in await bounded(20, [h.describe for h in backlog])
            if status.close_time is None
        )
        # Drain the backlog before the worker stops, so the next mode starts on a quiet server.
        await asyncio.wait_for(asyncio.gather(*(h.result() for h in backlog)), sizes.timeout_s)
    per_step = 1000 * sum(seconds) / len(seconds) / STEPS
    return Outcome(per_step, still_open)


async def measure(stack: BenchStack, sizes: Sizes = FULL) -> Section:
    section = Section(
        f"8. Fairness: a quiet tenant's step latency behind {sizes.noisy_runs} queued noisy runs"
    )
    playbook = write_playbook(stack.playbook_dir, f"fair{STEPS}", echo_chain(STEPS))
    modes = [
        Mode("idle (no noisy runs)", 0, True),
        Mode(f"FIFO ({sizes.noisy_runs} noisy queued, no fairness key)", sizes.noisy_runs, False),
        Mode(f"fair ({sizes.noisy_runs} noisy queued, tenant keys)", sizes.noisy_runs, True),
    ]
    outcomes = {}
    for mode in modes:
        outcomes[mode.name] = await one_mode(stack, mode, playbook, sizes)
        print(f"  {mode.name}: {outcomes[mode.name]}", flush=True)
    idle, fifo, fair = (outcomes[m.name] for m in modes)
    section.lines += table(
        ["mode", "quiet ms/step", "x idle", "noisy runs still open when quiet done"],
        [
            (
                m.name,
                f"{o.quiet_ms_per_step:.0f}",
                f"{o.quiet_ms_per_step / idle.quiet_ms_per_step:.1f}x",
                str(o.noisy_open_after_quiet),
            )
            for m, o in ((m, outcomes[m.name]) for m in modes)
        ],
    )
    section.lines.append(
        f"worker slots: {SLOTS} activities, {SLOTS} workflow tasks; {STEPS}-step chains; "
        f"{sizes.quiet_runs} quiet runs started together after the backlog"
    )
    section.rows += [
        Row(
            "8 fairness",
            "quiet ms/step, fair",
            f"{fair.quiet_ms_per_step:.0f}",
            f"{idle.quiet_ms_per_step:.0f} (idle)",
            f"{fair.quiet_ms_per_step / idle.quiet_ms_per_step:.1f}x",
        ),
        Row(
            "8 fairness",
            "quiet ms/step, FIFO / fair",
            f"{fifo.quiet_ms_per_step:.0f}",
            f"{fair.quiet_ms_per_step:.0f} (fair)",
            f"{fifo.quiet_ms_per_step / fair.quiet_ms_per_step:.1f}x",
            "fair << FIFO",
            fair.quiet_ms_per_step < fifo.quiet_ms_per_step,
        ),
    ]
    return section


def main() -> None:
    args = quick_flag(__doc__).parse_args()
    run_standalone(lambda stack: measure(stack, QUICK if args.quick else FULL))


if __name__ == "__main__":
    main()
