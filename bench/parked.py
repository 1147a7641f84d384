"""7. 10,000 runs parked on approval: worker memory, then a bulk approve.

Parked runs cost a worker memory while the SDK keeps them in its workflow cache, with
their state and the sandbox they run in; the cache is bounded
(``STEAD_MAX_CACHED_WORKFLOWS``, 1,000 by default, ``cache`` below), so runs beyond
it are evicted and replay from history when their approval arrives. The quick size
parks more runs than its small cache holds, so it exercises the eviction and the
replay too. So the worker runs
as a real ``stead worker`` subprocess (what an operator deploys), and its RSS is
read with psutil: idle after start (the baseline, same run), sampled while runs
park, and once all are parked. The tenant holds every step at or above risk
``low`` for approval, so each run's single ``core.echo`` step waits for a human.

Starts are paced: at most ``window`` runs (half the cache, at most twice the
concurrency, by default) are started but not yet parked. Starting all 10,000 at once
thrashes the cache instead: the worker takes each run's first workflow task in start
order, so a run is evicted by later starts before it parks and its next task queues,
uncached, behind thousands of first tasks (measured: 289 of 10,000 parked after 12
minutes, a backlog of 9,691 workflow tasks dispatched at ~0.9/s); and 500 in flight on
a worker that got ~15% of a core (load 15) took 8-10 s per workflow task, past the 10 s
task timeout. Runs arriving over time, as they do in use, never pile up like that.

Then every run is approved as ``stead approve-all`` approves (``vote_on_matching``:
each flagged run asked what waits, then sent its own ``approve`` update, ``concurrency``
runs at a time), and each run must complete. Parked means the run's
``SteadPendingApproval`` search attribute is true, counted through visibility.

    .venv/bin/python -m bench.parked [--quick] [--runs 10000] [--concurrency 50] [--cache 1000]
        [--max-workflow-tasks N] [--worker-log FILE]
        [--window 100] [--park-for SECONDS]

Every 30 s it prints a progress line (runs parked or closed, the rate, the worker's RSS
and the load), so a run stopped early still reports how far it got; ``--park-for``
stops starting runs after that many seconds and goes on to approve those started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client, WorkflowHandle

from bench.harness import (
    APPROVER,
    KEEP_ENV,
    REPO,
    BenchStack,
    Row,
    Section,
    Workers,
    bounded,
    configure_tenant,
    new_tenant,
    quick_flag,
    run_standalone,
    start_governed,
    table,
    write_playbook,
)
from stead.cli.bulk_approve import ATTEMPTS, Ballot, Selection, vote_on_matching
from stead.contracts.run import RunStatus
from stead.settings import Settings
from stead.temporal import connect

GOAL_RSS_MB = 1000.0
APPROVAL_WAIT_S = 24 * 3600
STEP = "s0"


@dataclass(frozen=True)
class Sizes:
    runs: int
    concurrency: int
    timeout_s: float
    cache: int = 1000
    # The worker's STEAD_WORKER_MAX_WORKFLOW_TASKS; None: the SDK's default.
    workflow_tasks: int | None = None
    window: int | None = None
    # Wall-clock seconds after which no new run is started: the runs started by then
    # park and are approved, so a run cut short still reports every phase.
    park_for_s: float | None = None

    @property
    def in_flight(self) -> int:
        """Most runs started but not yet parked: half the cache, at most two batches."""
        return self.window or max(1, min(self.cache // 2, 2 * self.concurrency))


FULL = Sizes(runs=10_000, concurrency=50, timeout_s=3600)
QUICK = Sizes(runs=40, concurrency=10, timeout_s=300, cache=10)


@dataclass
class Rss:
    """Samples of one process's resident set size, in MB."""

    process: psutil.Process
    peak: float = 0.0
    # The worker's CPU seconds (user + system) when idle, before any run.
    cpu_idle: float = 0.0
    samples: list[float] = field(default_factory=list)

    def now(self) -> float:
        mb = float(self.process.memory_info().rss) / 1e6
        self.peak = max(self.peak, mb)
        self.samples.append(mb)
        return mb

    async def sample_every(self, seconds: float) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.now()
            await asyncio.sleep(seconds)


@contextlib.contextmanager
def worker_process(
    settings: Settings,
    task_queue: str,
    cache: int,
    log: Path | None = None,
    workflow_tasks: int | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """``stead worker`` on ``task_queue``, its output drained so it never blocks on a pipe
    (and kept in ``log`` when given: why a workflow task failed is said only there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEAD_") or k in KEEP_ENV}
    env.update(
        STEAD_HOME=str(settings.home),
        STEAD_POLICY_DIR=str(settings.policy_dir),
        STEAD_PLAYBOOK_DIR=str(settings.playbook_dir),
        STEAD_LOG_LEVEL="WARNING",
        STEAD_LOG_FORMAT="text",
        STEAD_METRICS_PORT="0",
        STEAD_MAX_CACHED_WORKFLOWS=str(cache),
        PYTHONPATH=str(REPO),
    )
    if workflow_tasks is not None:
        env["STEAD_WORKER_MAX_WORKFLOW_TASKS"] = str(workflow_tasks)
    child = subprocess.Popen(
        [sys.executable, "-m", "stead.cli", "worker", "--task-queue", task_queue],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tail: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            tail = [*tail[-20:], line]
            if "stead worker ready" in line:
                break
        else:
            raise RuntimeError("the worker exited before it was ready:\n" + "".join(tail))
        threading.Thread(target=_drain, args=(child, log), daemon=True).start()
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _drain(child: subprocess.Popen[str], log: Path | None) -> None:
    assert child.stdout is not None
    with contextlib.ExitStack() as stack:
        out = None if log is None else stack.enter_context(log.open("a", encoding="utf-8"))
        for line in child.stdout:
            if out is not None:
                out.write(line)
                out.flush()


class Progress:
    """A line every ``every`` seconds while runs park or complete: the RSS curve and
    the rate, so a run stopped before its end still says how far it got."""

    def __init__(self, rss: Rss, every: float = 30.0) -> None:
        self.rss = rss
        self.every = every
        self.began = time.monotonic()
        self.last = self.began
        self.last_count = 0
        self.curve: list[tuple[float, int, float]] = []

    def phase(self) -> None:
        """A new count starts (parked, then closed): rates are of the new count."""
        self.last, self.last_count = time.monotonic(), 0

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every

    def line(self, what: str, count: int, extra: str = "") -> None:
        now = time.monotonic()
        rate = (count - self.last_count) / max(now - self.last, 1e-9)
        with contextlib.suppress(psutil.Error):
            self.rss.now()
        mb = self.rss.samples[-1] if self.rss.samples else 0.0
        self.curve.append((now - self.began, count, mb))
        load = os.getloadavg()[0]
        print(
            f"  {time.strftime('%H:%M:%S', time.gmtime())} UTC +{now - self.began:.0f}s "
            f"{what} {count}{extra} ({rate:.2f}/s last {now - self.last:.0f}s) "
            f"worker RSS {mb:.0f} MB (peak {self.rss.peak:.0f}) load {load:.1f}",
            flush=True,
        )
        self.last, self.last_count = now, count


async def parked_count(client: Client, tenant: str) -> int:
    query = f"SteadTenant = '{tenant}' AND SteadPendingApproval = true"
    return (await client.count_workflows(query)).count


async def wait_parked(
    client: Client, tenant: str, runs: int, timeout_s: float, progress: Progress
) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        parked = await parked_count(client, tenant)
        # A run that ended before it parked (denied: OPA too slow to answer under load)
        # never will, so waiting stops once every run is parked or closed.
        closed = await closed_count(client, tenant)
        if parked + closed >= runs or time.monotonic() > deadline:
            if closed:
                print(f"  {closed} run(s) ended before parking", flush=True)
            return parked
        if progress.due():
            progress.line("parked", parked, f"/{runs}")
        await asyncio.sleep(1.0)


async def closed_count(client: Client, tenant: str) -> int:
    query = f"SteadTenant = '{tenant}' AND ExecutionStatus != 'Running'"
    return (await client.count_workflows(query)).count


async def measure(stack: BenchStack, sizes: Sizes = FULL, log: Path | None = None) -> Section:
    section = Section(f"7. {sizes.runs:,} runs parked on approval, one `stead worker` process")
    settings = stack.settings
    write_playbook(stack.playbook_dir, "park", [{"id": STEP, "operation": "core.echo"}])
    tenant = new_tenant("park")
    # Approvals wait as long as the whole benchmark may take: with the policy's default
    # of an hour, runs parked first timed out (rejected) before the bulk vote reached
    # them in the 10,000-run row (3,135 of them, 2026-12-07).
    await configure_tenant(
        settings,
        tenant,
        approval_risk="low",
        approvers=[APPROVER],
        approval_timeout_seconds=APPROVAL_WAIT_S,
    )
    task_queue = f"bench-park-{uuid.uuid4().hex[:8]}"
    with worker_process(settings, task_queue, sizes.cache, log, sizes.workflow_tasks) as child:
        rss = Rss(psutil.Process(child.pid))
        await asyncio.sleep(2.0)
        idle = rss.now()
        rss.cpu_idle = sum(rss.process.cpu_times()[:2])
        sampler = asyncio.ensure_future(rss.sample_every(0.5))
        try:
            result = await park_and_approve(settings, tenant, task_queue, sizes, rss)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        alive = child.poll() is None
    n, parked, park_s, rss_parked, approved, approve_s, complete_s, completed, errors, tasks = (
        result
    )
    if n < sizes.runs:
        section.lines.append(
            f"CUT SHORT: {n:,} of {sizes.runs:,} runs started (--park-for {sizes.park_for_s:.0f} s)"
        )
    section.lines += table(
        ("phase", "seconds", "runs", "worker RSS MB"),
        [
            ("worker idle (baseline)", "", "", f"{idle:.0f}"),
            ("start and park", f"{park_s:.1f}", f"{parked}/{n} parked", f"{rss_parked:.0f}"),
            ("bulk approve (approve-all)", f"{approve_s:.1f}", f"{approved}/{n} accepted", ""),
            ("approve to all complete", f"{complete_s:.1f}", f"{completed}/{n} completed", ""),
            ("peak while sampling", "", "", f"{rss.peak:.0f}"),
        ],
    )
    per_run = (rss_parked - idle) * 1000 / max(parked, 1)
    section.lines.append(
        f"RSS parked/idle {rss_parked / idle:.2f}x, ~{per_run:.0f} kB per parked run; "
        f"approvals {sizes.concurrency} at a time; workflow cache {sizes.cache:,} runs, "
        f"workflow task slots {sizes.workflow_tasks or 'the worker default'}; "
        f"at most {sizes.in_flight:,} runs started and not parked; "
        f"worker {'alive' if alive else 'DIED'} at the end"
    )
    done_per_s = completed / max(approve_s + complete_s, 1e-9)
    for reason in sorted(set(errors))[:3]:
        section.lines.append(f"FAILED: {errors.count(reason)}x {reason}")
    section.lines += tasks
    section.rows += [
        Row("7 parked", f"worker RSS, {parked:,} parked (peak)", f"{rss.peak:.0f} MB",
            f"{idle:.0f} MB (idle worker)", f"{rss.peak / idle:.1f}x", f"< {GOAL_RSS_MB:.0f} MB",
            rss.peak < GOAL_RSS_MB),
        Row("7 parked", "time to park all", f"{park_s:.0f} s", "", "", f"{n:,} parked",
            parked == n),
        Row("7 parked", "bulk approve -> all complete", f"{approve_s + complete_s:.0f} s", "",
            "", f"{n:,} complete", completed == n),
        Row("7 parked", "approve-to-done throughput", f"{done_per_s:.1f} runs/s", "", "",
            "reported"),
    ]  # fmt: skip
    return section


async def park_and_approve(
    settings: Settings, tenant: str, task_queue: str, sizes: Sizes, rss: Rss
) -> tuple[int, int, float, float, int, float, float, int, list[str], list[str]]:
    client = await connect(settings)
    progress = Progress(rss)
    started = time.perf_counter()
    handles = await start_paced(client, settings, tenant, task_queue, sizes, progress)
    n = len(handles)
    parked = await wait_parked(client, tenant, n, sizes.timeout_s, progress)
    park_s = time.perf_counter() - started
    progress.line("parked", parked, f"/{n} (all started runs parked or closed)")
    await asyncio.sleep(2.0)
    rss_parked = rss.now()
    errors: list[str] = []
    # What `stead approve-all --tenant T --as APPROVER` does: each run asked, then its
    # own approve update, a run at a time per slot; a vote Temporal answered instead of
    # the run (unknown outcome) asked again and resent, as approve-all does.
    ballot = Ballot(principal=APPROVER, verdict="approve", comment="", raw_token=None)
    began = time.perf_counter()
    cpu_parked = rss.process.cpu_times()
    progress.phase()
    reporter = asyncio.ensure_future(report_closed(client, tenant, n, progress))
    try:
        _, votes = await vote_on_matching(
            client, settings, Selection(tenant), ballot, sizes.concurrency, ATTEMPTS
        )
        approved = sum(v.error is None for v in votes)
        retried = sum(v.attempts > 1 for v in votes)
        for refused in [v for v in votes if v.error is not None][:3]:
            errors.append(f"approve: {refused.error}"[:200])
            errors.extend(await task_failures(client.get_workflow_handle(refused.run_id)))
        approve_s = time.perf_counter() - began

        async def outcome(handle: WorkflowHandle[Any, RunStatus]) -> bool:
            try:
                status = await asyncio.wait_for(handle.result(), timeout=sizes.timeout_s)
            except Exception as exc:
                errors.append(f"result: {type(exc).__name__}: {exc}"[:200])
                return False
            if status.status != "completed":
                errors.append(f"run {status.status}: {'; '.join(status.reasons)}"[:200])
            return status.status == "completed"

        completed = sum(
            await bounded(sizes.concurrency * 4, [functools.partial(outcome, h) for h in handles])
        )
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    complete_s = time.perf_counter() - began - approve_s
    progress.line("completed", completed, f"/{n}")
    cpu_done = rss.process.cpu_times()
    park_cpu = cpu_parked.user + cpu_parked.system - rss.cpu_idle
    wake_cpu = cpu_done.user + cpu_done.system - cpu_parked.user - cpu_parked.system
    tasks = await task_trouble(handles)
    tasks.append(
        f"worker CPU: {park_cpu * 1000 / max(parked, 1):.0f} ms per run started and parked, "
        f"{wake_cpu * 1000 / max(completed, 1):.0f} ms per run approved and completed"
    )
    if retried:
        tasks.append(f"votes resent after an unknown outcome: {retried}")
    return (
        n, parked, park_s, rss_parked, approved, approve_s, complete_s, completed, errors, tasks
    )  # fmt: skip


async def report_closed(client: Client, tenant: str, runs: int, progress: Progress) -> None:
    """The approve phase's progress line: runs closed so far."""
    while True:
        await asyncio.sleep(progress.every)
        with contextlib.suppress(Exception):
            progress.line("closed", await closed_count(client, tenant), f"/{runs}")


async def task_trouble(handles: list[WorkflowHandle[Any, RunStatus]]) -> list[str]:
    """Workflow tasks that timed out or failed, over every run, from their histories: why
    a run could not take its approval shows up here (and in ``--worker-log``)."""
    timed_out: dict[str, int] = {}
    failed: dict[str, int] = {}
    runs = 0
    for handle in handles:
        history = await handle.fetch_history()
        seen = False
        for event in history.events:
            if event.HasField("workflow_task_timed_out_event_attributes"):
                kind = TimeoutType.Name(event.workflow_task_timed_out_event_attributes.timeout_type)
                timed_out[kind] = timed_out.get(kind, 0) + 1
                seen = True
            elif event.HasField("workflow_task_failed_event_attributes"):
                message = event.workflow_task_failed_event_attributes.failure.message[:120]
                failed[message] = failed.get(message, 0) + 1
                seen = True
        runs += seen
    if not runs:
        return []
    found = [f"workflow tasks timed out in {runs} runs: {timed_out or 'none'}"]
    found += [f"workflow task failed {n}x: {message}" for message, n in failed.items()]
    return found


async def start_paced(
    client: Client,
    settings: Settings,
    tenant: str,
    task_queue: str,
    sizes: Sizes,
    progress: Progress,
) -> list[WorkflowHandle[Any, RunStatus]]:
    """Start ``sizes.runs`` runs, ``sizes.concurrency`` at a time, keeping at most
    ``sizes.in_flight`` of them started and not yet parked; none after ``park_for_s``."""
    handles: list[WorkflowHandle[Any, RunStatus]] = []
    parked = 0
    stop_at = None if sizes.park_for_s is None else time.monotonic() + sizes.park_for_s
    while len(handles) < sizes.runs:
        if stop_at is not None and time.monotonic() >= stop_at:
            print(f"  --park-for reached: {len(handles)} of {sizes.runs} started", flush=True)
            break
        room = sizes.in_flight - (len(handles) - parked)
        if room <= 0:
            await asyncio.sleep(0.5)
            parked = await parked_count(client, tenant)
            if progress.due():
                progress.line("parked", parked, f", started {len(handles)}/{sizes.runs}")
            continue
        first = len(handles)
        batch = range(first, first + min(room, sizes.concurrency, sizes.runs - first))
        handles += await asyncio.gather(
            *(_start(client, settings, tenant, task_queue, f"park-{tenant}-{i}") for i in batch)
        )
    return handles


async def task_failures(handle: WorkflowHandle[Any, RunStatus]) -> list[str]:
    """Why the run's workflow tasks failed, from its history: a replay after eviction
    that fails shows up here and nowhere else (the worker's log is drained)."""
    history = await handle.fetch_history()
    return [
        "workflow task failed: " + event.workflow_task_failed_event_attributes.failure.message[:200]
        for event in history.events
        if event.HasField("workflow_task_failed_event_attributes")
    ][:1]


async def _start(
    client: Client, settings: Settings, tenant: str, task_queue: str, workflow_id: str
) -> WorkflowHandle[Any, RunStatus]:
    """Start one run on the subprocess worker's queue, not an in-process one."""
    w = Workers(client, settings, stead_queue=task_queue, bare_queue="")
    return await start_governed(w, tenant, "park", 1, workflow_id=workflow_id)


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--cache", type=int, help="the worker's STEAD_MAX_CACHED_WORKFLOWS")
    parser.add_argument("--worker-log", type=Path, help="append the worker's output to this file")
    parser.add_argument(
        "--max-workflow-tasks", type=int, help="the worker's STEAD_WORKER_MAX_WORKFLOW_TASKS"
    )
    parser.add_argument("--window", type=int, help="most runs started and not yet parked")
    parser.add_argument(
        "--park-for", type=float, help="seconds after which no new run is started (then approve)"
    )
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        args.runs or base.runs,
        args.concurrency or base.concurrency,
        base.timeout_s,
        base.cache if args.cache is None else args.cache,
        args.max_workflow_tasks,
        args.window,
        args.park_for,
    )
    run_standalone(lambda stack: measure(stack, sizes, args.worker_log))


if __name__ == "__main__":
    main()
