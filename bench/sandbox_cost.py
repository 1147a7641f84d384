"""What a workflow-cache miss costs the worker: one replay of a recorded run, per sandbox mode.

A run the worker has not cached (every new run's first workflow task, and every parked
run evicted from a full cache once its approval arrives, row 7) is rebuilt by replaying
its history in a fresh sandbox. The worker keeps the SDK's default sandbox
(``workers.main.WORKFLOW_RUNNER``), which re-imports every workflow module into each
one; passing the modules through is about three times cheaper but takes away the
run-time guard against clocks, randomness and I/O in workflow code
(tests/test_worker_sandbox.py shows it). This replays committed histories from ``tests/histories/``
with the same ``Replayer`` in three modes, interleaved, and reports CPU and wall time
per replay; the baseline is the unsandboxed runner (no guard at all). No stack needed.

    .venv/bin/python -m bench.sandbox_cost [--quick] [--repeats 20]
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from bench.harness import REPO, Row, Section, machine_line, median, quick_flag, report, table
from workers.main import WORKFLOW_RUNNER
from workflows.run import RunWorkflow

HISTORIES = ("approved", "chain.1")
MODES: dict[str, WorkflowRunner] = {
    "worker's sandbox (re-imports workflow modules)": WORKFLOW_RUNNER,
    "modules passed through (no run-time guard)": SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
    ),
    "unsandboxed (baseline)": UnsandboxedWorkflowRunner(),
}


@dataclass(frozen=True)
class Sizes:
    repeats: int


FULL = Sizes(repeats=20)
QUICK = Sizes(repeats=5)


async def replay_ms(replayer: Replayer, history: WorkflowHistory) -> tuple[float, float]:
    """CPU and wall milliseconds of one replay in this process."""
    cpu, wall = time.process_time(), time.perf_counter()
    await replayer.replay_workflow(history)
    return (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000


async def measure(sizes: Sizes = FULL) -> Section:
    section = Section("7b. A workflow-cache miss: CPU to replay one recorded run, by sandbox mode")
    histories = {
        name: WorkflowHistory.from_json(
            name, (REPO / "tests" / "histories" / f"{name}.json").read_text()
        )
        for name in HISTORIES
    }
    replayers = {
        mode: Replayer(
            workflows=[RunWorkflow], data_converter=pydantic_data_converter, workflow_runner=runner
        )
        for mode, runner in MODES.items()
    }
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    for history in histories.values():  # warm up: first imports
        for replayer in replayers.values():
            await replayer.replay_workflow(history)
    for _ in range(sizes.repeats):
        for name, history in histories.items():
            for mode, replayer in replayers.items():
                c, w = await replay_ms(replayer, history)
                cpu.setdefault((name, mode), []).append(c)
                wall.setdefault((name, mode), []).append(w)
    rows = []
    for name, history in histories.items():
        base = median(cpu[(name, "unsandboxed (baseline)")])
        for mode in MODES:
            c = median(cpu[(name, mode)])
            rows.append((f"{name} ({len(history.events)} events)", mode, f"{c:.1f}",
                         f"{median(wall[(name, mode)]):.1f}", f"{c / base:.1f}x"))  # fmt: skip
    section.lines += table(("history", "mode", "CPU ms", "wall ms", "x unsandboxed"), rows, left=2)
    section.lines.append(f"median of {sizes.repeats} replays each, modes interleaved")
    name = HISTORIES[0]
    worker = median(cpu[(name, "worker's sandbox (re-imports workflow modules)")])
    passed = median(cpu[(name, "modules passed through (no run-time guard)")])
    base = median(cpu[(name, "unsandboxed (baseline)")])
    section.rows += [
        Row("7b sandbox", "replay CPU ms, worker's sandbox", f"{worker:.1f}",
            f"{base:.1f} (unsandboxed)", f"{worker / base:.1f}x", "reported"),
        Row("7b sandbox", "replay CPU ms, modules passed through", f"{passed:.1f}",
            f"{base:.1f} (unsandboxed)", f"{passed / base:.1f}x", "reported"),
    ]  # fmt: skip
    return section


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    sizes = Sizes(args.repeats or (QUICK if args.quick else FULL).repeats)
    print(machine_line())
    report(asyncio.run(measure(sizes)))


if __name__ == "__main__":
    main()
