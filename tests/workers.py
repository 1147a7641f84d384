"""Real worker processes for fault tests: started as ``stead worker``, killed with signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from temporalio.client import Client, WorkflowHandle

from stead.contracts.run import RunStatus
from stead.settings import Settings
from tests.conftest import REPO, subprocess_env
from tests.peers import IdempotentApi
from tests.runs import playbook, start_run


def start_worker(
    settings: Settings,
    task_queue: str,
    *,
    drain: bool = True,
    env: Mapping[str, str] | None = None,
    **more_env: str,
) -> subprocess.Popen[str]:
    """``drain=False`` leaves stdout to the caller (to read the worker's log lines);
    ``env`` and keyword variables are added to the worker's environment."""
    child = subprocess.Popen(
        [sys.executable, "-m", "stead.cli", "worker"],
        env=subprocess_env(settings, STEAD_TASK_QUEUE=task_queue, **{**(env or {}), **more_env}),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    seen = []
    for line in child.stdout:
        seen.append(line)
        if "stead worker ready" in line:
            if drain:
                _drain(child)
            return child
    child.wait(timeout=10)
    raise AssertionError("worker exited before it was ready:\n" + "".join(seen[-30:]))


def _drain(child: subprocess.Popen[str]) -> None:
    """Keep reading the worker's output: a full pipe would block the worker mid-run."""
    stream = child.stdout
    assert stream is not None

    def pump() -> None:
        try:
            for _ in stream:
                pass
        except (OSError, ValueError):
            return

    threading.Thread(target=pump, daemon=True).start()


@contextmanager
def worker_process(
    settings: Settings,
    task_queue: str,
    *,
    drain: bool = True,
    env: Mapping[str, str] | None = None,
    **more_env: str,
) -> Iterator[subprocess.Popen[str]]:
    child = start_worker(settings, task_queue, drain=drain, env=env, **more_env)
    try:
        yield child
    finally:
        stop_worker(child)


def stop_worker(child: subprocess.Popen[Any]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdout is not None:
        child.stdout.close()


async def run_whose_worker_dies_after_the_effect(
    stack: Settings,
    client: Client,
    api: IdempotentApi,
    *,
    tenant: str,
    steps: list[dict[str, Any]],
    while_down: Callable[[], Awaitable[None]] | None = None,
) -> tuple[WorkflowHandle[Any, RunStatus], RunStatus]:
    """Run ``steps`` on a fresh queue whose worker the peer kills with SIGKILL right after
    its first effect, before the worker can report it; then (after ``while_down``, with
    no worker running) finish the run on a new worker and return how it ended."""
    task_queue = f"fault-{uuid.uuid4().hex[:8]}"
    first = start_worker(stack, task_queue)
    api.on_first_effect = lambda: os.kill(first.pid, signal.SIGKILL)
    handle = await start_run(
        client, task_queue, tenant=tenant, principal="user:ann", playbook_source=playbook(*steps)
    )
    await asyncio.to_thread(first.wait, 60)
    assert first.returncode == -signal.SIGKILL
    stop_worker(first)
    if while_down is not None:
        await while_down()
    with worker_process(stack, task_queue):
        return handle, await handle.result()
