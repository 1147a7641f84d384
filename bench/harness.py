"""What every benchmark shares: an embedded stack in a temp home, a worker, tenants, tables.

Each benchmark module is runnable alone (``python -m bench.<name> [--quick]``) and
from ``bench.run_all``; both go through :func:`run_standalone` or :func:`bench_stack`,
so a benchmark never depends on a stack somebody started by hand and never leaves
one behind: ``stack_down`` runs in ``finally`` and the temp home is removed.

Baselines are measured in the same process, against the same stack, interleaved
with the measured variant where that is possible: a ratio against a number from
another day or machine would say more about the machine than about Stead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.worker import Worker

from bench.bare import BareChainWorkflow, noop
from stead.contracts.run import Budget, RunInput, RunOptions, RunRequest, RunStatus
from stead.contracts.search_attributes import start_search_attributes
from stead.db.pool import create_pool, tenant_transaction
from stead.devstack.stack import (
    ExternalTemporal,
    read_state,
    stack_down,
    stack_up,
    temporal_under_test,
)
from stead.identity.directory import add_principal, create_tenant
from stead.policy.admin import OpaAdmin
from stead.settings import Settings, load_settings
from stead.temporal import connect
from workers.main import build_worker, open_resources

REPO = Path(__file__).resolve().parents[1]
# Like tests/conftest.py: a stray export must not point a benchmark at a real cluster.
# STEAD_TEMPORAL_DEV_DYNAMIC_CONFIG: the bench stack's dev server with other dynamic config
# (e.g. Temporal's own transfer-queue reader rate, to measure before and after in turn).
KEEP_ENV = {"STEAD_OPA_BIN", "STEAD_TEMPORAL_DEV_DYNAMIC_CONFIG"}
PRINCIPAL = "user:ann"
APPROVER = "user:bob"


def quiet_logging() -> None:
    """Per-step INFO lines (one per activity) would cost more than some steps measured."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("temporalio", "stead", "httpx", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def scrub_environment() -> None:
    for name in list(os.environ):
        if name.startswith("STEAD_") and name not in KEEP_ENV:
            del os.environ[name]


def settings_for(home: Path, playbook_dir: Path | None = None) -> Settings:
    """Repo policies, benchmark playbooks, no .env from the cwd, WARNING logs."""
    return load_settings(
        _env_file=None,
        home=home,
        policy_dir=REPO / "policies",
        playbook_dir=playbook_dir or REPO / "playbooks",
        log_level="WARNING",
        log_format="text",
    )


@dataclass(frozen=True)
class TemporalTarget:
    """The Temporal a bench stack uses: its own dev server (``external`` None) or a cluster.

    ``pids`` are the cluster's processes (its services and their database), so the CPU
    per step tables count the cluster as "temporal" the way they count a dev server.
    """

    server: str = "dev"
    external: ExternalTemporal | None = None
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class BenchStack:
    """A running embedded stack and the temp dirs that belong to it."""

    settings: Settings
    work: Path
    target: TemporalTarget = field(default_factory=TemporalTarget)

    @property
    def playbook_dir(self) -> Path:
        return self.settings.playbook_dir

    def meter(self) -> Meter:
        return Meter(self.settings, self.target.pids)


@contextlib.contextmanager
def bench_stack(
    prefix: str = "stead-bench-", target: TemporalTarget | None = None
) -> Iterator[BenchStack]:
    """Postgres, Temporal and OPA on free loopback ports in a temp ``STEAD_HOME``.

    ``target`` says which Temporal; without one, ``STEAD_TEST_TEMPORAL_ADDRESS`` (and
    ``STEAD_TEST_TEMPORAL_NAMESPACE``) may point it at a cluster someone runs (whose CPU
    is then not counted), else the stack starts a dev server.

    Playbooks come from a temp dir the benchmarks write into: generated plans of
    thousands of steps do not fit ``playbook_source`` (512 kB) and need no repo file.
    """
    if target is None:
        env = temporal_under_test(os.environ)
        target = TemporalTarget("cluster" if env else "dev", env)
    external = target.external
    scrub_environment()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    playbooks = work / "playbooks"
    playbooks.mkdir()
    base = settings_for(work / "home", playbooks)
    try:
        started = time.perf_counter()
        stack_up(base, external=external)
        temporal = f"Temporal at {external.address}" if external else "dev Temporal"
        print(
            f"embedded stack up in {time.perf_counter() - started:.1f} s ({base.home}, {temporal})"
        )
        try:
            yield BenchStack(settings_for(work / "home", playbooks), work, target)
        finally:
            stack_down(base)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Workers:
    """A Stead worker (``build_worker``, as in production) and a bare one, in this process."""

    client: Client
    settings: Settings
    stead_queue: str
    bare_queue: str
    # A Stead worker holding back ``held_patches`` (the code path before them), if asked.
    held_queue: str = ""


@contextlib.asynccontextmanager
async def in_process_workers(
    settings: Settings, held_patches: tuple[str, ...] = ()
) -> AsyncIterator[Workers]:
    """Both workers share one event loop, like one worker process would.

    The bare worker polls a queue of its own with the SDK's defaults, so what it
    measures is Temporal's cost for a step and nothing of Stead's. With
    ``held_patches`` a third, a Stead worker on the path from before those patches,
    polls ``held_queue``: the old code's cost, measured in the same run.
    """
    client = await connect(settings)
    stead_queue = f"bench-stead-{uuid.uuid4().hex[:8]}"
    bare_queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    held_queue = f"bench-held-{uuid.uuid4().hex[:8]}" if held_patches else ""
    bare = Worker(client, task_queue=bare_queue, workflows=[BareChainWorkflow], activities=[noop])
    async with (
        open_resources(settings) as resources,
        build_worker(client, stead_queue, resources),
        bare,
        contextlib.AsyncExitStack() as held,
    ):
        if held_patches:
            await held.enter_async_context(
                build_worker(client, held_queue, resources, held_patches=held_patches)
            )
        yield Workers(client, settings, stead_queue, bare_queue, held_queue)


def new_tenant(label: str) -> str:
    return f"b{label[:6]}{uuid.uuid4().hex[:8]}"


async def configure_tenant(settings: Settings, tenant: str, **config: Any) -> None:
    """Policy data through OPA's data API, and a directory entry, as an operator sets them up.

    The tenant is *managed* from the start, with the starter and the approver as its
    principals: a tenant without a directory row becomes managed as soon as anything
    (a run's memory summary) creates one, and from then on refuses unlisted starters,
    so an unmanaged benchmark tenant would lock itself out after its first run.
    """
    body = {
        "operations": ["core.echo"],
        "approval_risk": "high",
        "approval_authentication": "none",
        # Benchmarks start runs with start_run below, without start tokens.
        "start_authentication": "none",
        **config,
    }
    await OpaAdmin(settings.opa_url, settings.opa_admin_token).aput_data(
        f"stead/tenants/{tenant}", body
    )
    pool = await create_pool(settings.postgres_dsn, min_size=1, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            await create_tenant(conn, tenant, "benchmark")
            for principal in (PRINCIPAL, APPROVER):
                await add_principal(conn, tenant, principal)
    finally:
        await pool.close()


def write_playbook(directory: Path, name: str, steps: Sequence[dict[str, Any]]) -> str:
    """A playbook file the worker's planner loads by name (JSON is YAML)."""
    import json

    (directory / f"{name}.yaml").write_text(
        json.dumps({"name": name, "inputs": {}, "steps": list(steps)})
    )
    return name


def echo_chain(n: int) -> list[dict[str, Any]]:
    """``n`` core.echo steps, each depending on the one before: strictly sequential."""
    return [
        {
            "id": f"s{i}",
            "operation": "core.echo",
            "args": {"value": i},
            **({"depends_on": [f"s{i - 1}"]} if i else {}),
        }
        for i in range(n)
    ]


async def start_governed(
    w: Workers,
    tenant: str,
    playbook: str,
    steps: int,
    *,
    express: bool = False,
    max_parallel: int = 4,
    continue_after: int = 200,
    workflow_id: str | None = None,
) -> WorkflowHandle[Any, RunStatus]:
    request = RunRequest(
        tenant=tenant,
        principal=PRINCIPAL,
        playbook=playbook,
        budget=Budget(max_steps=max(steps, 1)),
        options=RunOptions(
            express_reads=express,
            max_parallel=max_parallel,
            continue_as_new_after_steps=continue_after,
        ),
    )
    return await w.client.start_workflow(
        "stead.run",
        RunInput(request=request),
        id=workflow_id or f"bench-{tenant}-{uuid.uuid4().hex[:10]}",
        task_queue=w.stead_queue,
        result_type=RunStatus,
        search_attributes=start_search_attributes(request),  # as `stead run` starts
    )


class RunFailed(RuntimeError):
    """A governed run that did not complete; ``reason`` is what it reported."""

    def __init__(self, workflow_id: str, reason: str) -> None:
        super().__init__(f"{workflow_id}: {reason}")
        self.reason = reason


async def run_governed(w: Workers, tenant: str, playbook: str, steps: int, **kw: Any) -> float:
    """Seconds from start to result of one governed run; raises RunFailed unless it completed."""
    started = time.perf_counter()
    handle = await start_governed(w, tenant, playbook, steps, **kw)
    try:
        status = await handle.result()
    except WorkflowFailureError as exc:
        raise RunFailed(handle.id, f"workflow failed: {exc.cause or exc}") from exc
    elapsed = time.perf_counter() - started
    if status.status != "completed":
        raise RunFailed(handle.id, f"{status.status}: {'; '.join(status.reasons)}")
    return elapsed


@dataclass
class Retried:
    """Runs that failed and were run again, so one failure is reported, not fatal.

    A latency benchmark needs a completed run to time; the failure itself is a
    finding, so every reason is kept and printed with the results.
    """

    attempts: int = 3
    reasons: list[str] = field(default_factory=list)

    async def __call__(self, call: Callable[[], Awaitable[float]]) -> float:
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except RunFailed as exc:
                self.reasons.append(exc.reason)
                if attempt == self.attempts:
                    raise
        raise AssertionError("unreachable")

    def lines(self) -> list[str]:
        return [
            f"FAILED and retried: {self.reasons.count(r)}x {r[:240]}"
            for r in sorted(set(self.reasons))
        ]

    def note(self) -> str:
        return f" ({len(self.reasons)} failed runs retried)" if self.reasons else ""


async def run_bare(w: Workers, steps: int, *, local: bool = False) -> float:
    started = time.perf_counter()
    done = await w.client.execute_workflow(
        BareChainWorkflow.run,
        args=[steps, local],
        id=f"bench-bare-{uuid.uuid4().hex[:10]}",
        task_queue=w.bare_queue,
    )
    elapsed = time.perf_counter() - started
    if done != steps:
        raise RuntimeError(f"bare chain ran {done} of {steps} steps")
    return elapsed


async def bounded(limit: int, calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run ``calls`` concurrently, at most ``limit`` at a time, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def run_chain(client: Client, workflow_id: str, first_run_id: str) -> list[WorkflowHistory]:
    """Every run's history of ``workflow_id``, following continue-as-new from the first."""
    histories: list[WorkflowHistory] = []
    run_id: str | None = first_run_id
    while run_id is not None:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        run_id = None
        if last.HasField("workflow_execution_continued_as_new_event_attributes"):
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return histories


def fsync_latency_ms(directory: Path, n: int = 200) -> tuple[float, float]:
    """p50/p99 of one 8 kB write + fsync on this disk: the floor under every durable commit.

    Postgres (WAL) and Temporal's SQLite both wait for this on each commit, so a
    step's latency is mostly (durable commits per step) x this number.
    """
    path = directory / "fsync.probe"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(n):
            os.write(fd, b"x" * 8192)
            started = time.perf_counter()
            os.fsync(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return percentile(samples, 50), percentile(samples, 99)


@dataclass(frozen=True)
class PgCounters:
    """Durable work Postgres has done: WAL fsyncs (``pg_stat_io``) and committed transactions."""

    wal_fsyncs: int
    commits: int

    def __sub__(self, other: PgCounters) -> PgCounters:
        return PgCounters(self.wal_fsyncs - other.wal_fsyncs, self.commits - other.commits)


# A backend that flushed its counters less than a second ago holds new ones until it
# has been idle for PGSTAT_IDLE_INTERVAL (10 s), so a count is read only after that.
STATS_SETTLE_SECONDS = 11.0


async def pg_counters(admin_dsn: str) -> PgCounters:
    """The app database's counters after every backend has published its own (PG 16+).

    Read from the ``postgres`` database, so the reader's own transactions are not counted.
    """
    await asyncio.sleep(STATS_SETTLE_SECONDS)
    base, _, app_db = admin_dsn.rpartition("/")
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal') AS fsyncs,"
            " (SELECT xact_commit FROM pg_stat_database WHERE datname = $1) AS commits",
            app_db.split("?", 1)[0],
        )
        return PgCounters(int(row["fsyncs"] or 0), int(row["commits"] or 0))
    finally:
        await conn.close()


SERVICES = ("temporal", "postgres", "opa")


@dataclass(frozen=True)
class Usage:
    """CPU seconds per process group between two snapshots."""

    cpu: dict[str, float]

    def per(self, n: int) -> Usage:
        return Usage({k: v / n for k, v in self.cpu.items()})


class Meter:
    """Where the time goes: CPU of this process (the worker) and of each stack service.

    Only the services this benchmark's stack started (pids from its ``stack.json``)
    and their children (Postgres backends) are counted, never another stack on the
    same machine. A step that costs little CPU but much wall time is waiting: on the
    disk (fsync) or for a CPU another process holds.
    """

    def __init__(self, settings: Settings, temporal_pids: Sequence[int] = ()) -> None:
        state = read_state(settings.home.resolve())
        if state is None:
            raise RuntimeError(f"no stack recorded in {settings.home}")
        self._roots = {
            name: [psutil.Process(record.pid)]
            for name, record in state.services.items()
            if name in SERVICES
        }
        if temporal_pids:
            # A cluster beside the stack: its services and its own Postgres are "temporal".
            self._roots["temporal"] = [psutil.Process(pid) for pid in temporal_pids]
        self._roots["worker"] = [psutil.Process()]

    def _sample(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, roots in self._roots.items():
            procs = list(roots)
            if name != "worker":
                for root in roots:
                    with contextlib.suppress(psutil.Error):
                        procs += root.children(recursive=True)
            seen: dict[int, float] = {}
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    cpu = proc.cpu_times()
                    seen[proc.pid] = cpu.user + cpu.system
            out[name] = seen
        return out

    @contextlib.contextmanager
    def measuring(self, into: list[Usage]) -> Iterator[None]:
        before = self._sample()
        yield
        after = self._sample()
        cpu = {
            name: sum(c - before.get(name, {}).get(pid, 0.0) for pid, c in procs.items())
            for name, procs in after.items()
        }
        into.append(Usage(cpu))


def total(usages: Sequence[Usage]) -> Usage:
    names = {k for u in usages for k in u.cpu}
    return Usage({k: sum(u.cpu.get(k, 0.0) for u in usages) for k in names})


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# ------------------------------------------------------------------ reporting


@dataclass(frozen=True)
class Row:
    """One line of the combined table: a measure, its same-run baseline, and the goal."""

    bench: str
    measure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: bool | None = None


@dataclass
class Section:
    """What one benchmark reports: its own detailed table and its summary rows."""

    title: str
    lines: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def print(self) -> None:
        print()
        print(self.title)
        print("=" * len(self.title))
        for line in self.lines:
            print(line)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """The first ``left`` columns left-aligned, numbers right-aligned, a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        cells = [
            str(c).ljust(widths[i]) if i < left else str(c).rjust(widths[i])
            for i, c in enumerate(r)
        ]
        return "  ".join(cells).rstrip()

    return [fmt(header), "-" * len(fmt(header)), *(fmt(r) for r in rows)]


def verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: ""}[met]


def summary_table(rows: Sequence[Row]) -> list[str]:
    def cut(text: str) -> str:
        return text if len(text) <= 60 else text[:57] + "..."

    return table(
        ("benchmark", "measure", "value", "baseline (same run)", "ratio", "goal", ""),
        [
            (r.bench, r.measure, cut(r.value), r.baseline, r.ratio, r.goal, verdict(r.met))
            for r in rows
        ],
        left=2,
    )


def machine() -> dict[str, str]:
    """nproc, CPU model and RAM: numbers mean little without the machine they ran on."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import temporalio

    load = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "temporalio": getattr(temporalio, "__version__", "?"),
    }


def machine_line() -> str:
    m = machine()
    return (
        f"{m['date']} · nproc {m['nproc']} · {m['cpu']} · RAM {m['ram']} · {m['os']} · "
        f"Python {m['python']} · temporalio {m['temporalio']} · load average {m['load']}"
    )


def on_stack(prefix: str, measure: Callable[[Settings, Path], Coroutine[Any, Any, Any]]) -> None:
    """A fresh embedded stack in a temporary home for a standalone benchmark that talks to
    the services directly (no worker): up, measure, and down even when the measure fails."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        home = {
            "home": work / "home",
            "policy_dir": REPO / "policies",
            "playbook_dir": REPO / "playbooks",
        }
        cfg = load_settings(_env_file=None, **home)
        stack_up(cfg)
        try:
            # Reload: stack_up records the endpoints it chose in the home's stack file.
            asyncio.run(measure(load_settings(_env_file=None, **home), work))
        finally:
            stack_down(cfg)


def quick_flag(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds)")
    return parser


def run_standalone(measure: Callable[[BenchStack], Coroutine[Any, Any, Section]]) -> Section:
    """Start a stack, measure, print the section and its summary rows, stop the stack."""
    quiet_logging()
    print(machine_line())
    with bench_stack() as stack:
        section = asyncio.run(measure(stack))
    report(section)
    return section


def report(section: Section) -> None:
    section.print()
    if section.rows:
        print()
        for line in summary_table(section.rows):
            print(line)
