"""Reproduce the ~35 ms workflow-task wait seen on the embedded dev server.

Not one of the seven benchmarks: a diagnostic for whoever looks into it next. In one
worker process, the first workflow's tasks start ~3 ms after they are scheduled; every
later workflow's tasks (after its first few) wait ~35-40 ms, for a bare chain and a
governed run alike, with either data converter. Activity tasks start at once (eager
dispatch). The sequential benchmark's full-size rows run many workflows per worker, so
both the bare and the governed chain carry the wait; its quick rows run the bare chain
as the first workflow on its worker, so only the governed chain carries it there.

    .venv/bin/python -m bench.wft_wait
"""

from __future__ import annotations

import asyncio
import uuid
from statistics import median

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Worker

from bench.bare import BareChainWorkflow, noop
from bench.harness import BenchStack, bench_stack
from stead.temporal import connect

STEPS = 40


def task_waits_ms(history: WorkflowHistory) -> list[float]:
    """Scheduled-to-started of each workflow task in ``history``."""
    waits: list[float] = []
    scheduled = None
    for event in history.events:
        name = EventType.Name(event.event_type)
        at = event.event_time.ToDatetime()
        if name == "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED":
            scheduled = at
        elif name == "EVENT_TYPE_WORKFLOW_TASK_STARTED" and scheduled is not None:
            waits.append((at - scheduled).total_seconds() * 1000)
            scheduled = None
    return waits


async def measure(stack: BenchStack) -> None:
    client = await connect(stack.settings)
    queue = f"wft-wait-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[BareChainWorkflow], activities=[noop]):
        for nth in range(1, 4):
            handle = await client.start_workflow(
                BareChainWorkflow.run,
                args=[STEPS, False],
                id=f"{queue}-{nth}",
                task_queue=queue,
            )
            await handle.result()
            waits = task_waits_ms(await handle.fetch_history())
            print(
                f"workflow {nth} on this worker: workflow task wait median "
                f"{median(waits):.1f} ms, first five {[round(w, 1) for w in waits[:5]]}"
            )


def main() -> None:
    with bench_stack() as stack:
        asyncio.run(measure(stack))


if __name__ == "__main__":
    main()
