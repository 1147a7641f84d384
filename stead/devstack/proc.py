"""Child processes the stack owns, tracked by pid files so ``down`` stops exactly those.

A pid file records the pid *and* the process start time: a recycled pid that now
belongs to something else is never signalled. Processes run in their own session
so that stopping one stops its children too, and so they outlive ``stead dev up``.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from stead.errors import ServiceCrashed, ServiceNotReady

LOG_TAIL_CHARS = 2000

# Children started by this process. Holding the Popen objects keeps them from being
# collected (and warning) while the service runs on after ``spawn`` returns; ``stop``
# reaps them so a stopped service never lingers as a zombie of a long-lived parent.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None if it exited or the pid was reused."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def alive(self) -> bool:
        return self.process() is not None


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        raw = json.loads(path.read_text())
        return PidRecord(pid=int(raw["pid"]), create_time=float(raw["create_time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    run_dir: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> PidRecord:
    """Start ``argv`` detached, logging to ``log_path``, and record its pid file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            **identity(user),
        )
    _children[proc.pid] = proc
    record = PidRecord(pid=proc.pid, create_time=psutil.Process(proc.pid).create_time())
    pid_file(run_dir, name).write_text(
        json.dumps({"pid": record.pid, "create_time": record.create_time})
    )
    return record


def identity(user: str | None) -> dict[str, Any]:
    """Popen arguments to run as ``user`` with *its* groups: keeping root's group would
    let a directory's group bits (e.g. a 0700 root temp dir) deny the child access."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def stop(record: PidRecord, *, sig: signal.Signals = signal.SIGTERM, grace: float = 15.0) -> None:
    """Signal the process group politely, then kill it if it does not leave in time."""
    proc = record.process()
    if proc is None:
        _reap(record.pid)
        return
    family = [proc, *proc.children(recursive=True)]
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        proc.send_signal(sig)
    _, alive = psutil.wait_procs(family, timeout=grace)
    for leftover in alive:
        try:
            leftover.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)
    _reap(record.pid)


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)


def wait_ready(
    name: str,
    record: PidRecord,
    probe: Callable[[], bool],
    *,
    log_path: Path,
    timeout: float,
) -> None:
    """Poll ``probe`` until it passes; a child that exits meanwhile is reported with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.alive():
            raise ServiceCrashed(
                f"{name} exited during start-up; last lines of {log_path}:\n{log_tail(log_path)}"
            )
        if probe():
            return
        time.sleep(0.2)
    raise ServiceNotReady(
        f"{name} did not become ready in {timeout:.0f} s; see {log_path}:\n{log_tail(log_path)}"
    )


def log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"
