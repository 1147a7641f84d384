"""What a workflow-cache miss costs the worker: one sandbox and one replay, per sandbox mode.

A run the worker has not cached (every new run's first workflow task, and every parked
run evicted from a full cache once its approval arrives, row 7) is rebuilt in a fresh
sandbox that re-executes every module under ``workflows/`` (that is what keeps the
run-time guard against clocks, randomness and I/O in workflow code:
tests/test_worker_sandbox.py), then replayed from its history.

Five modes, interleaved: the SDK's default ``SandboxedWorkflowRunner()`` (what the worker
ran before ``workers/sandbox.py``); ``WorkerSandbox`` with workflow modules compiled once
per process but serialization contexts still asked through the sandbox; the worker's
``WorkerSandbox`` as it runs (contexts read directly too); every module passed through
(no guard); and the unsandboxed runner (no sandbox at all: the baseline). Each is measured with
and without the workflow modules' bytecode on disk: a ``pip install``ed image has it,
a checkout run with ``PYTHONDONTWRITEBYTECODE`` (this machine, the Dockerfile's env for
anything not pip-compiled) or read-only has not, and then the SDK's sandbox compiles
every workflow module from source on every miss. Bytecode is switched with
``sys.pycache_prefix`` (a temporary directory, empty or compiled into).

Per mode: *sandbox* is the CPU to build one sandbox for ``RunWorkflow`` and load its
modules (``prepare_workflow``, exactly what a miss adds before replaying); *replay* is
one ``Replayer`` replay of a committed history, which builds two (the Replayer
validates the workflow in one per call, a worker once at start); *miss* = replay -
sandbox, the CPU a worker spends on one cache miss of that run. No stack needed.

    .venv/bin/python -m bench.sandbox_cost [--quick] [--repeats 20]
"""

from __future__ import annotations

import asyncio
import dataclasses
import py_compile
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import cache_from_source

import temporalio.workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from bench.harness import REPO, Row, Section, machine_line, median, quick_flag, report, table
from workers.main import WORKFLOW_RUNNER
from workflows.run import RunWorkflow

HISTORIES = ("approved", "chain.1")
SDK = "SDK default sandbox (before)"
COMPILED = "compiled once, contexts via sandbox"
WORKER = "worker's sandbox (+ direct contexts)"
PASSED = "modules passed through (no guard)"
BASE = "unsandboxed (baseline)"
MODES: dict[str, WorkflowRunner] = {
    SDK: SandboxedWorkflowRunner(),
    COMPILED: dataclasses.replace(WORKFLOW_RUNNER, direct_contexts=False),
    WORKER: WORKFLOW_RUNNER,
    PASSED: SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
    ),
    BASE: UnsandboxedWorkflowRunner(),
}
ON_DISK = "bytecode on disk"
NONE = "no bytecode"


@dataclass(frozen=True)
class Sizes:
    repeats: int


FULL = Sizes(repeats=20)
QUICK = Sizes(repeats=5)


@contextmanager
def bytecode(on_disk: bool) -> Iterator[None]:
    """Imports in this block find the workflow modules' bytecode (in a temporary pycache
    prefix), or none at all; nothing is written beside the sources."""
    saved = sys.pycache_prefix, sys.dont_write_bytecode
    with tempfile.TemporaryDirectory(prefix="stead-bench-pyc-") as prefix:
        sys.pycache_prefix = prefix
        sys.dont_write_bytecode = True
        try:
            if on_disk:
                for source in (REPO / "workflows").rglob("*.py"):
                    py_compile.compile(str(source), cfile=cache_from_source(str(source)))
            yield
        finally:
            sys.pycache_prefix, sys.dont_write_bytecode = saved


def sandbox_ms(runner: WorkflowRunner) -> float:
    """CPU milliseconds to build one sandbox for RunWorkflow (none for the unsandboxed)."""
    if not isinstance(runner, SandboxedWorkflowRunner):
        return 0.0
    defn = temporalio.workflow._Definition.must_from_class(RunWorkflow)
    cpu = time.process_time()
    runner.prepare_workflow(defn)
    return (time.process_time() - cpu) * 1000


async def replay_ms(replayer: Replayer, history: WorkflowHistory) -> float:
    """CPU milliseconds of one Replayer replay in this process."""
    cpu = time.process_time()
    await replayer.replay_workflow(history)
    return (time.process_time() - cpu) * 1000


Samples = dict[tuple[str, str, str], list[float]]


async def sample(sizes: Sizes, histories: dict[str, WorkflowHistory]) -> tuple[Samples, Samples]:
    """Sandbox and replay CPU per (bytecode, mode[, history]), modes interleaved."""
    replayers = {
        mode: Replayer(
            workflows=[RunWorkflow], data_converter=pydantic_data_converter, workflow_runner=runner
        )
        for mode, runner in MODES.items()
    }
    sandboxes: Samples = {}
    replays: Samples = {}
    for state in (NONE, ON_DISK):
        with bytecode(state == ON_DISK):
            for history in histories.values():  # warm up: first imports, first compile
                for replayer in replayers.values():
                    await replayer.replay_workflow(history)
            for _ in range(sizes.repeats):
                for mode, runner in MODES.items():
                    sandboxes.setdefault((state, mode, ""), []).append(sandbox_ms(runner))
                    for name, history in histories.items():
                        replays.setdefault((state, mode, name), []).append(
                            await replay_ms(replayers[mode], history)
                        )
    return sandboxes, replays


async def measure(sizes: Sizes = FULL) -> Section:
    section = Section("7b. A workflow-cache miss: CPU for its sandbox and its replay, by mode")
    histories = {
        name: WorkflowHistory.from_json(
            name, (REPO / "tests" / "histories" / f"{name}.json").read_text()
        )
        for name in HISTORIES
    }
    sandboxes, replays = await sample(sizes, histories)
    rows = []
    miss: dict[tuple[str, str, str], float] = {}
    for state in (ON_DISK, NONE):
        for name, history in histories.items():
            for mode in MODES:
                build = median(sandboxes[(state, mode, "")])
                replay = median(replays[(state, mode, name)])
                miss[(state, mode, name)] = replay - build
            for mode in MODES:
                m = miss[(state, mode, name)]
                rows.append((state, f"{name} ({len(history.events)} events)", mode,
                             f"{median(sandboxes[(state, mode, '')]):.1f}",
                             f"{median(replays[(state, mode, name)]):.1f}", f"{m:.1f}",
                             f"{m / miss[(state, SDK, name)]:.2f}x",
                             f"{m / miss[(state, BASE, name)]:.1f}x"))  # fmt: skip
    header = ("bytecode", "history", "mode", "sandbox ms", "replay ms", "miss ms", "x SDK",
              "x unsandboxed")  # fmt: skip
    section.lines += table(header, rows, left=3)
    section.lines.append(
        f"CPU ms, median of {sizes.repeats} each, modes interleaved; miss = replay - sandbox "
        "(the Replayer builds one sandbox more than a worker's cache miss does)"
    )
    name = HISTORIES[0]
    for state in (ON_DISK, NONE):
        worker, sdk = miss[(state, WORKER, name)], miss[(state, SDK, name)]
        base = miss[(state, BASE, name)]
        section.rows += [
            Row("7b sandbox", f"miss CPU ms, {name}, worker's sandbox, {state}",
                f"{worker:.1f}", f"{sdk:.1f} (SDK default sandbox)", f"{worker / sdk:.2f}x",
                "reported"),
            Row("7b sandbox", f"miss CPU ms, {name}, SDK default sandbox, {state}",
                f"{sdk:.1f}", f"{base:.1f} (unsandboxed)", f"{sdk / base:.1f}x", "reported"),
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
