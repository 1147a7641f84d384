"""Memory Schedules: opt-in, one pair per namespace, never for test or demo queues, and
``stead schedules list|prune`` finds and removes the ones nobody serves.

Each test prepares its own namespace with ``stead temporal setup`` so the schedules it
counts are only its own, on the real dev server with real ``stead worker`` processes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from stead.memory.contracts import PURGE_WORKFLOW, REINDEX_WORKFLOW
from stead.memory.schedules import (
    PURGE_SCHEDULE,
    REINDEX_SCHEDULE,
    ensure_memory_schedules,
    maintenance_schedule,
)
from stead.settings import Settings
from stead.temporal import connect
from stead.temporal.schedules import stead_schedules
from tests.conftest import REPO, settings_for, subprocess_env
from tests.runs import POLL_INTERVAL, POLL_SECONDS
from tests.workers import worker_process


def stead(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stead.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Schedules are listed through visibility, which catches up within moments."""
    for _ in range(int(POLL_SECONDS / POLL_INTERVAL)):
        value = await probe()
        if done(value):
            return value
        await asyncio.sleep(POLL_INTERVAL)
    raise AssertionError(f"never reached the expected state; last seen {value!r}")


@pytest.fixture
def namespace(stack: Settings) -> str:
    name = f"sched-{uuid.uuid4().hex[:8]}"
    ready = stead(subprocess_env(stack), "temporal", "setup", "--namespace", name)
    assert ready.returncode == 0, ready.stderr
    return name


async def per_queue_schedules_of_old(client: Client, task_queue: str) -> list[str]:
    """What versions before one-pair-per-namespace left behind: a pair per task queue,
    ids suffixed with the queue."""
    ids = []
    for name, workflow_name in (
        (REINDEX_SCHEDULE, REINDEX_WORKFLOW),
        (PURGE_SCHEDULE, PURGE_WORKFLOW),
    ):
        schedule_id = f"{name}/{task_queue}"
        every = timedelta(minutes=10)
        await client.create_schedule(
            schedule_id, maintenance_schedule(workflow_name, schedule_id, task_queue, every)
        )
        ids.append(schedule_id)
    return ids


def listed(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    done = stead(env, "schedules", *args, "--json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


async def test_a_worker_with_schedules_on_makes_one_pair_and_prune_keeps_them(
    stack: Settings, namespace: str
) -> None:
    queue = f"ops-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(stack, STEAD_TEMPORAL_NAMESPACE=namespace)
    client = await connect(settings_for(stack.home, temporal_namespace=namespace))
    # What older versions left behind: a pair per queue, on a queue nobody polls now.
    leftovers = await per_queue_schedules_of_old(client, f"gone-{uuid.uuid4().hex[:8]}")

    with worker_process(
        stack, queue, STEAD_TEMPORAL_NAMESPACE=namespace, STEAD_MEMORY_SCHEDULES="true"
    ):
        await eventually(lambda: stead_schedules(client), lambda found: len(found) == 4)
        shown = {s["id"]: s for s in listed(env, "list")}
        assert shown[REINDEX_SCHEDULE]["workflow"] == REINDEX_WORKFLOW
        assert shown[PURGE_SCHEDULE]["workflow"] == PURGE_WORKFLOW
        for ours in (REINDEX_SCHEDULE, PURGE_SCHEDULE):
            assert (shown[ours]["task_queue"], shown[ours]["polled"]) == (queue, True)
        for old in leftovers:
            assert shown[old]["polled"] is False

        removed = listed(env, "prune")
        assert {s["id"] for s in removed} == set(leftovers)
        remaining = await eventually(lambda: stead_schedules(client), lambda found: len(found) == 2)
        assert {s.id for s in remaining} == {REINDEX_SCHEDULE, PURGE_SCHEDULE}

    everything = listed(env, "prune", "--all")
    assert {s["id"] for s in everything} == {REINDEX_SCHEDULE, PURGE_SCHEDULE}
    await eventually(lambda: stead_schedules(client), lambda found: not found)
    assert listed(env, "list") == []


async def test_no_schedules_by_default_nor_for_test_or_demo_queues(
    stack: Settings, namespace: str
) -> None:
    client = await connect(settings_for(stack.home, temporal_namespace=namespace))
    queue = f"ops-{uuid.uuid4().hex[:8]}"
    with worker_process(stack, queue, STEAD_TEMPORAL_NAMESPACE=namespace):
        pass
    every = timedelta(minutes=10)
    for ephemeral in (f"test-{uuid.uuid4().hex[:8]}", f"demo-{uuid.uuid4().hex[:8]}"):
        made = await ensure_memory_schedules(
            client, ephemeral, reindex_every=every, purge_every=every
        )
        assert made == []
    # Described by id, not listed: a describe sees a schedule the moment it exists.
    for schedule_id in (REINDEX_SCHEDULE, PURGE_SCHEDULE, f"{REINDEX_SCHEDULE}/{queue}"):
        with pytest.raises(RPCError, match="not found"):
            await client.get_schedule_handle(schedule_id).describe()


async def test_a_second_worker_repoints_the_pair_in_place(stack: Settings, namespace: str) -> None:
    client = await connect(settings_for(stack.home, temporal_namespace=namespace))
    first_queue, second_queue = (f"ops-{uuid.uuid4().hex[:8]}" for _ in range(2))
    hour = timedelta(hours=1)
    first = await ensure_memory_schedules(
        client, first_queue, reindex_every=timedelta(minutes=7), purge_every=hour
    )
    second = await ensure_memory_schedules(
        client, second_queue, reindex_every=timedelta(minutes=3), purge_every=hour
    )
    try:
        assert first == second == [REINDEX_SCHEDULE, PURGE_SCHEDULE]
        described = await client.get_schedule_handle(REINDEX_SCHEDULE).describe()
        action = described.schedule.action
        assert getattr(action, "workflow", None) == REINDEX_WORKFLOW
        assert getattr(action, "task_queue", None) == second_queue
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(minutes=3)]
    finally:
        for schedule_id in first:
            await client.get_schedule_handle(schedule_id).delete()
