"""Stead's Schedules in a namespace: which exist, where they fire, and removing leftovers.

A schedule is Stead's when it starts a ``stead.*`` workflow (memory repairs, the field
cases' demo runs, and the per-queue memory schedules of older versions). Whether a
queue is served is Temporal's answer: a queue with no workflow poller seen recently
(the matching service remembers pollers for a few minutes) is abandoned.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, ScheduleActionStartWorkflow

from stead.contracts.base import Closed

STEAD_WORKFLOW_PREFIX = "stead."


class SteadSchedule(Closed):
    """One of Stead's schedules as `stead schedules list` shows it."""

    id: str
    workflow: str
    task_queue: str
    paused: bool
    polled: bool


async def stead_schedules(client: Client) -> list[SteadSchedule]:
    """Every schedule in the client's namespace that starts a Stead workflow."""
    found: list[SteadSchedule] = []
    polled: dict[str, bool] = {}
    async for listed in await client.list_schedules():
        workflow = getattr(listed.schedule.action if listed.schedule else None, "workflow", "")
        if not workflow.startswith(STEAD_WORKFLOW_PREFIX):
            continue
        described = await client.get_schedule_handle(listed.id).describe()
        action = described.schedule.action
        if not isinstance(action, ScheduleActionStartWorkflow):
            continue
        queue = action.task_queue
        if queue not in polled:
            polled[queue] = await is_polled(client, queue)
        found.append(
            SteadSchedule(
                id=listed.id,
                workflow=workflow,
                task_queue=queue,
                paused=described.schedule.state.paused,
                polled=polled[queue],
            )
        )
    return sorted(found, key=lambda s: s.id)


async def is_polled(client: Client, task_queue: str) -> bool:
    """Whether any worker polls ``task_queue`` for workflow tasks (recently, per Temporal)."""
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(described.pollers) > 0


async def prune_schedules(client: Client, *, everything: bool = False) -> list[SteadSchedule]:
    """Delete Stead's schedules on unpolled queues (all of them with ``everything``)."""
    removed = []
    for schedule in await stead_schedules(client):
        if everything or not schedule.polled:
            await client.get_schedule_handle(schedule.id).delete()
            removed.append(schedule)
    return removed
