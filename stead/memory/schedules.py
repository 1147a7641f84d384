"""Memory's Temporal Schedules: one reindex and one purge per namespace, when asked for.

Opt-in (``STEAD_MEMORY_SCHEDULES=true``) and never for a test or demo queue: a schedule
outlives the worker that made it, and one per short-lived queue left a shared cluster
firing dozens of repairs onto queues nobody polls. One per namespace: the worker that
starts last points them at its queue; `stead schedules prune` removes leftovers.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from stead.memory.contracts import PURGE_WORKFLOW, REINDEX_WORKFLOW, MaintenanceInput

REINDEX_SCHEDULE = "stead-memory-reindex"
PURGE_SCHEDULE = "stead-memory-purge-expired"
# Queues the suite, the benchmarks and `stead demo` make up and abandon.
EPHEMERAL_QUEUE_PREFIXES = ("test-", "demo-", "bench-")

log = logging.getLogger("stead.memory.schedules")


def is_ephemeral_queue(task_queue: str) -> bool:
    return task_queue.startswith(EPHEMERAL_QUEUE_PREFIXES)


def maintenance_schedule(
    workflow_name: str, workflow_id: str, task_queue: str, every: timedelta
) -> Schedule:
    """Start ``workflow_name`` on ``task_queue`` every ``every``; a run still going when the
    next is due makes that one skip."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            workflow_name,
            MaintenanceInput(),
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=max(every, timedelta(minutes=30)),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_memory_schedules(
    client: Client,
    task_queue: str,
    *,
    reindex_every: timedelta,
    purge_every: timedelta,
) -> list[str]:
    """Create the namespace's reindex and purge schedules or repoint them at ``task_queue``.

    Idempotent, so every worker with schedules on may call it at start. Overlapping runs
    are skipped: a second repair of the same backlog does nothing useful. Returns the
    schedule ids, or none for an ephemeral queue.
    """
    if is_ephemeral_queue(task_queue):
        log.warning("no memory schedules for %r: test and demo queues never get them", task_queue)
        return []
    ids = []
    for schedule_id, workflow_name, every in (
        (REINDEX_SCHEDULE, REINDEX_WORKFLOW, reindex_every),
        (PURGE_SCHEDULE, PURGE_WORKFLOW, purge_every),
    ):
        schedule = maintenance_schedule(workflow_name, schedule_id, task_queue, every)
        try:
            await client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput, schedule: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(schedule_id).update(replace)
        ids.append(schedule_id)
    return ids
