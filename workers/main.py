"""The Stead worker: which workflows and activities run on which task queue.

Started by ``stead worker``. It connects with the pydantic data converter (every
contract is a pydantic model), opens the resources activities need (Postgres pool,
OPA client, adapter resources) once, and exits cleanly on SIGTERM/SIGINT: in-flight
activities get the graceful-shutdown window, then the process returns 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.execution import ExecutionActivities
from activities.express import ExpressActivities
from activities.hello import greet
from activities.planning import PlanningActivities
from activities.policy import PolicyActivities
from activities.records import RecordActivities
from adapters.catalog import Catalog
from adapters.registry import AdapterResources, default_catalog
from stead.db.pool import create_pool
from stead.policy.opa import OpaClient
from stead.settings import Settings
from workflows.hello import HelloWorkflow
from workflows.run import RunWorkflow

log = logging.getLogger("stead.worker")


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


@dataclass
class WorkerResources:
    """Long-lived handles shared by every activity on this worker."""

    settings: Settings
    pool: asyncpg.Pool
    opa: OpaClient
    catalog: Catalog
    adapters: AdapterResources

    def activities(self) -> list[Callable[..., Any]]:
        policy = PolicyActivities(self.opa, self.pool, self.catalog)
        execution = ExecutionActivities(self.catalog, self.pool, self.adapters)
        planning = PlanningActivities(self.catalog, self.settings)
        records = RecordActivities(self.pool)
        express = ExpressActivities(policy, execution)
        return [
            greet,
            planning.create_plan,
            policy.decide_plan,
            policy.decide_step,
            execution.execute,
            express.run_step,
            records.append_audit,
            records.record_run,
        ]


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[WorkerResources]:
    pool = await create_pool(settings.postgres_dsn)
    opa = OpaClient(settings.opa_url)
    adapters = await AdapterResources.open(settings, pool=pool)
    try:
        yield WorkerResources(settings, pool, opa, default_catalog(), adapters)
    finally:
        await adapters.aclose()
        await opa.aclose()
        await pool.close()


def build_worker(client: Client, task_queue: str, resources: WorkerResources) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[HelloWorkflow, RunWorkflow],
        activities=resources.activities(),
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run_worker(settings: Settings) -> None:
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_resources(settings) as resources, build_worker(client, settings.task_queue, resources):
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        print(
            f"stead worker ready: task queue {settings.task_queue!r} on {settings.temporal_address}",
            flush=True,
        )
        await stop.wait()
        log.info("shutdown requested; draining")
