"""Real worker processes for fault tests: started as ``stead worker``, killed with signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from stead.settings import Settings
from tests.conftest import REPO, subprocess_env


def start_worker(
    settings: Settings, task_queue: str, *, drain: bool = True, **env: str
) -> subprocess.Popen[str]:
    """``drain=False`` leaves stdout to the caller (to read the worker's log lines)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "stead.cli", "worker"],
        env=subprocess_env(settings, STEAD_TASK_QUEUE=task_queue, **env),
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
    settings: Settings, task_queue: str, *, drain: bool = True, **env: str
) -> Iterator[subprocess.Popen[str]]:
    child = start_worker(settings, task_queue, drain=drain, **env)
    try:
        yield child
    finally:
        stop_worker(child)


def stop_worker(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdout is not None:
        child.stdout.close()
