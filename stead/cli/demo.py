"""``stead demo``: the whole loop on the embedded stack, started and stopped around it.

A stack that was already running is left running; one the demo started is stopped.
The worker is a real ``stead worker`` child process, as in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from stead.cli._common import console
from stead.devstack import stack_down, stack_status, stack_up
from stead.settings import Settings, load_settings


@contextmanager
def embedded_stack() -> Iterator[Settings]:
    base = load_settings()
    already = bool(stack_status(base)["running"])
    console.print("[bold]starting the embedded stack[/] (Temporal, Postgres, OPA, Qdrant)...")
    stack_up(base)
    try:
        yield load_settings()
    finally:
        if not already:
            stack_down(base)
            console.print("stack stopped")


@contextmanager
def worker_process(settings: Settings, task_queue: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "STEAD_HOME": str(settings.home), "STEAD_TASK_QUEUE": task_queue}
    child = subprocess.Popen(
        [sys.executable, "-m", "stead.cli", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if "stead worker ready" in line:
                break
        else:
            raise RuntimeError("the worker exited before it was ready")
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def demo_task_queue() -> str:
    return f"demo-{uuid.uuid4().hex[:8]}"
