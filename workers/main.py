"""The Stead worker: which workflows and activities run on which task queue.

Started by ``stead worker``. It connects with the pydantic data converter (every
contract is a pydantic model) and exits cleanly on SIGTERM/SIGINT: in-flight
activities get the graceful-shutdown window, then the process returns 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.hello import greet
from stead.settings import Settings
from workflows.hello import HelloWorkflow

log = logging.getLogger("stead.worker")


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


def build_worker(client: Client, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[HelloWorkflow],
        activities=[greet],
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run_worker(settings: Settings) -> None:
    client = await connect(settings)
    worker = build_worker(client, settings.task_queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        print(f"stead worker ready: task queue {settings.task_queue!r} on {settings.temporal_address}", flush=True)
        await stop.wait()
        log.info("shutdown requested; draining")
