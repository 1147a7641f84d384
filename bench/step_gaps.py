"""Where a bare activity step's time goes: the median gap between consecutive history events.

``bench.wft_wait`` traced the workflow-task wait (scheduled → started) to History's
transfer-queue reader rate. This reads the histories of a bare chain on the stack's kind
of dev server (SQLite WAL, ``stead.devstack.temporal.DYNAMIC_CONFIG``) and prints, per
pair of consecutive event types, the median time between them, so the rest of a step
can be attributed to the server's queue, the worker's workflow task, or the activity's
round trip. Bare Temporal only (no Stead code runs), so it doubles as an upstream
reproduction. ``--reader-rps 20`` runs it at Temporal's default reader rate instead.

    .venv/bin/python -m bench.step_gaps [--steps 20] [--runs 3] [--unsandboxed] [--in-memory]
        [--reader-rps N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from statistics import median

from temporalio.api.enums.v1 import EventType
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from bench import wft_wait
from bench.bare import BareChainWorkflow, noop
from stead.devstack.temporal import SQLITE_PRAGMAS, dynamic_config_args

WAL = tuple(arg for pragma in SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma))
# The first events of a run go through the normal (non-sticky) queue: skip them.
SKIP_EVENTS = 6


async def gaps(
    steps: int,
    runs: int,
    *,
    sandboxed: bool = True,
    persist: bool = True,
    reader_rps: int | None = None,
) -> dict[str, list[float]]:
    found: dict[str, list[float]] = defaultdict(list)
    overrides = {wft_wait.READER: str(reader_rps)} if reader_rps else {}
    extra = (*(WAL if persist else ()), *dynamic_config_args(overrides))
    runner = SandboxedWorkflowRunner() if sandboxed else UnsandboxedWorkflowRunner()
    with tempfile.TemporaryDirectory(prefix="stead-gaps-") as tmp, contextlib.ExitStack() as st:
        client = await wft_wait.connect(
            st.enter_context(wft_wait.dev_server(Path(tmp), persist, extra))
        )
        queue = f"gaps-{uuid.uuid4().hex[:8]}"
        async with Worker(
            client,
            task_queue=queue,
            workflows=[BareChainWorkflow],
            activities=[noop],
            workflow_runner=runner,
        ):
            for nth in range(runs + 1):
                handle = await client.start_workflow(
                    BareChainWorkflow.run,
                    args=[steps, False],
                    id=f"{queue}-{nth}",
                    task_queue=queue,
                )
                await handle.result()
                if nth == 0:  # a warm-up run
                    continue
                events = [
                    (
                        EventType.Name(e.event_type).removeprefix("EVENT_TYPE_"),
                        e.event_time.ToDatetime(),
                    )
                    for e in (await handle.fetch_history()).events
                ]
                for (first, at), (then, later) in zip(
                    events[SKIP_EVENTS:], events[SKIP_EVENTS + 1 :], strict=False
                ):
                    found[f"{first} -> {then}"].append((later - at).total_seconds() * 1000)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--unsandboxed", action="store_true", help="no workflow sandbox")
    parser.add_argument("--in-memory", action="store_true", help="a dev server without a file")
    parser.add_argument("--reader-rps", type=int, help=f"{wft_wait.READER} (Temporal's: 20)")
    args = parser.parse_args()
    found = asyncio.run(
        gaps(
            args.steps,
            args.runs,
            sandboxed=not args.unsandboxed,
            persist=not args.in_memory,
            reader_rps=args.reader_rps,
        )
    )
    for pair, values in sorted(found.items(), key=lambda kv: -median(kv[1])):
        print(f"{pair:64s} n={len(values):4d}  median {median(values):6.1f} ms")


if __name__ == "__main__":
    main()
