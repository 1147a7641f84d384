"""Every benchmark in one run, on each Temporal server asked for, ending with one combined table.

Per server, one stack serves all of them (starting one takes seconds, and each
benchmark uses tenants and task queues of its own); the heavy ones (10,000 steps,
parked runs) go last so their histories cannot slow the latency measurements. A
benchmark that fails is reported as a failed row and the rest still run.

``--servers dev,cluster`` runs the rows once on the embedded dev server (``temporal
server start-dev``, as ``stead dev`` runs it) and once on a real multi-service
cluster (Temporal's own server as frontend, history, matching and worker processes
on PostgreSQL, ``stead.devstack.cluster``; its binaries come from ``make
temporal-cluster-bin``), which this command starts in a temp dir and stops when the
run ends or fails. Each server's rows are measured against baselines of the same run
on *that* server; the table puts them side by side, with issue 16's goal number
(1-6; the side by side is goal 7) and a verdict per server. Benchmarks that do not
touch Temporal, or cannot run on the cluster, run once and say why in the notes.

The table is printed with the date and the machine (nproc, CPU model, RAM, load
average): on a shared 2-core machine the load average says how much the numbers can
be trusted.

    .venv/bin/python -m bench.run_all            # dev server, full sizes (tens of minutes)
    .venv/bin/python -m bench.run_all --quick    # smoke run, about two minutes
    .venv/bin/python -m bench.run_all --servers dev,cluster [--quick]   # what `make bench` runs
    .venv/bin/python -m bench.run_all --only sequential,express --servers dev,cluster
    .venv/bin/python -m bench.run_all --only locomo --locomo PATH/locomo10-part1.json
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal, TypeVar

from bench import (
    actions,
    decisions,
    express,
    fairness,
    locomo,
    long_run,
    memory_recall,
    parked,
    peer_dbos,
    peer_langgraph,
    sandbox_cost,
    sequential,
    summary,
    throughput,
    wft_wait,
)
from bench.harness import (
    BenchStack,
    Row,
    Section,
    TemporalTarget,
    bench_stack,
    machine_line,
    quick_flag,
    quiet_logging,
    report,
)
from stead.devstack.cluster import running_cluster
from stead.devstack.stack import TEST_TEMPORAL_ADDRESS, ExternalTemporal, temporal_under_test

SERVERS = ("dev", "cluster")
T = TypeVar("T")


@dataclass(frozen=True)
class Bench:
    """A benchmark, the issue 16 goal its rows answer ("" for another issue's), and where it runs.

    ``each``: on every server asked for. ``once``: on the first one only, because
    nothing it measures goes through the Temporal under test (OPA alone, LangGraph,
    a replay in this process, its own dev servers). ``dev``: only on the dev server,
    for the reason in ``why``.
    """

    goal: str
    run: Callable[[BenchStack], Awaitable[Section]]
    where: Literal["each", "once", "dev"] = "each"
    why: str = ""


def benchmarks(quick: bool, locomo_path: Path | None = None) -> dict[str, Bench]:
    """In run order: latency first, the long and parked runs last. LoCoMo runs only
    with a data file (it is not in the repository); without one its row says skipped."""

    def pick(full: T, small: T) -> T:
        return small if quick else full

    parked_sizes = pick(parked.FULL, parked.QUICK)
    return {
        "wft_wait": Bench(
            "1",
            lambda s: wft_wait.measure(pick(wft_wait.FULL, wft_wait.QUICK)),
            "once",
            "starts three bare dev servers of its own (the journal comparison)",
        ),
        "sequential": Bench(
            "1", lambda s: sequential.measure(s, pick(sequential.FULL, sequential.QUICK))
        ),
        "express": Bench("2", lambda s: express.measure(s, pick(express.FULL, express.QUICK))),
        "throughput": Bench(
            "3", lambda s: throughput.measure(s, pick(throughput.FULL, throughput.QUICK))
        ),
        "actions": Bench("4", lambda s: actions.measure(s, pick(actions.FULL, actions.QUICK))),
        "decisions": Bench(
            "",
            lambda s: decisions.measure(s.settings, pick(decisions.FULL, decisions.QUICK)),
            "once",
            "OPA alone, no Temporal in the measured path",
        ),
        "peer": Bench(
            "6",
            lambda s: peer_langgraph.measure(s, pick(peer_langgraph.FULL, peer_langgraph.QUICK)),
            "once",
            "LangGraph on Postgres, no Temporal",
        ),
        "peer_dbos": Bench(
            "6", lambda s: peer_dbos.measure(s, pick(peer_dbos.FULL, peer_dbos.QUICK))
        ),
        "sandbox_cost": Bench(
            "5",
            lambda s: sandbox_cost.measure(pick(sandbox_cost.FULL, sandbox_cost.QUICK)),
            "once",
            "replays committed histories in this process, no server",
        ),
        "long_run": Bench("", lambda s: long_run.measure(s, pick(long_run.FULL, long_run.QUICK))),
        "parked": Bench(
            "5",
            lambda s: parked.measure(s, parked_sizes),
            "each" if quick else "dev",
            f"{parked_sizes.runs:,} parked runs take about an hour to park and approve on "
            "this machine, so once, on the dev server (--quick parks 40 on both servers)",
        ),
        "fairness": Bench(
            "",
            lambda s: fairness.measure(s, pick(fairness.FULL, fairness.QUICK)),
            "dev",
            "the cluster launcher does not enable matching.enableFairness",
        ),
        "memory_recall": Bench(
            "",
            lambda s: memory_recall.measure(s, pick(memory_recall.FULL, memory_recall.QUICK)),
            "once",
            "the memory service alone, no Temporal",
        ),
        "locomo": Bench(
            "",
            lambda s: locomo.measure(s, locomo_path, pick(None, [0])),
            "once",
            "the memory service alone, no Temporal",
        ),
    }


async def run(stack: BenchStack, chosen: dict[str, Bench]) -> list[summary.Measured]:
    measured: list[summary.Measured] = []
    for name, bench in chosen.items():
        started = time.perf_counter()
        print(f"\n--- {name} on {stack.target.server} ...", flush=True)
        try:
            section = await bench.run(stack)
        except Exception as exc:
            traceback.print_exc()
            section = Section(f"{name}: FAILED")
            section.rows.append(Row(name, "benchmark failed", f"{type(exc).__name__}: {exc}"[:120]))
        section.lines.append(
            f"({name} on {stack.target.server} took {time.perf_counter() - started:.0f} s)"
        )
        report(section)
        measured += [summary.Measured(bench.goal, stack.target.server, row) for row in section.rows]
    return measured


@contextlib.contextmanager
def server_stack(server: str) -> Iterator[BenchStack]:
    """A bench stack on ``server``; for ``cluster``, a cluster started for it and stopped after."""
    if server == "dev":
        with bench_stack(target=TemporalTarget("dev")) as stack:
            yield stack
        return
    with tempfile.TemporaryDirectory(prefix="stead-bench-cluster-") as home:
        started = time.perf_counter()
        with running_cluster(Path(home)) as cluster:
            print(
                f"temporal cluster up in {time.perf_counter() - started:.1f} s at {cluster.address}"
            )
            external = ExternalTemporal(cluster.address, cluster.namespace)
            target = TemporalTarget("cluster", external, cluster.pids())
            with bench_stack(target=target) as stack:
                yield stack


def runs_on(bench: Bench, server: str, servers: list[str]) -> bool:
    if bench.where == "once":
        return server == servers[0]
    if bench.where == "dev":
        return server == "dev"
    return True


def notes(chosen: dict[str, Bench], servers: list[str]) -> list[str]:
    """Why a benchmark's cells are empty on a server."""
    out = []
    for name, bench in chosen.items():
        missing = [s for s in servers if not runs_on(bench, s, servers)]
        if missing:
            out.append(f"{name}: not on {', '.join(missing)}: {bench.why}")
    return out


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every stack and cluster is stopped by its ``finally``.

    It is passed on as SIGINT: inside ``asyncio.run`` that cancels the running benchmark,
    whose workers then shut down on a live event loop (an exception raised from here
    instead left the workers' shutdown waiting on a loop that was closing); outside it,
    SIGINT raises KeyboardInterrupt. A second signal interrupts whatever is still waiting.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument(
        "--servers", default="dev", help=f"comma-separated, in run order, of {', '.join(SERVERS)}"
    )
    parser.add_argument(
        "--locomo", type=Path, default=None, help="locomo10*.json (CC BY-NC; not in the repo)"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    quiet_logging()
    everything = benchmarks(args.quick, args.locomo)
    wanted = [n for n in args.only.split(",") if n] or list(everything)
    unknown = set(wanted) - set(everything)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(everything)}")
    servers = [s for s in args.servers.split(",") if s]
    if not servers or set(servers) - set(SERVERS) or len(set(servers)) != len(servers):
        parser.error(f"--servers takes distinct names of {list(SERVERS)}, got {args.servers!r}")
    if temporal_under_test(os.environ):
        print(
            f"{TEST_TEMPORAL_ADDRESS} is ignored here: --servers cluster starts a cluster "
            "(the single benchmark modules still use it)"
        )
    _stop_on_sigterm()
    chosen = {n: everything[n] for n in wanted}
    first = machine_line()
    print(first)
    started = time.perf_counter()
    measured: list[summary.Measured] = []
    spans = []
    for server in servers:
        here = {n: b for n, b in chosen.items() if runs_on(b, server, servers)}
        if not here:
            continue
        print(f"\n===== {server}: {', '.join(here)}", flush=True)
        began = machine_line()
        with server_stack(server) as stack:
            measured += asyncio.run(run(stack, here))
        spans.append(f"{server}: {began}  ->  {machine_line()}")
    minutes = (time.perf_counter() - started) / 60
    print()
    sizes = "quick" if args.quick else "full"
    title = f"Stead benchmarks ({sizes} sizes, {' + '.join(servers)}, {minutes:.1f} min)"
    print(title)
    print("=" * len(title))
    for span in spans:
        print(span)
    print()
    for line in summary.plain(servers, measured):
        print(line)
    why = notes(chosen, servers)
    legend = (
        "goal: issue 16's goals table (1 sequential, 2 express, 3 throughput, 4 Actions, "
        "5 parked, 6 peers; 7 is this side by side), blank: another issue's row. Each "
        "ratio is against the baseline measured in the same run on the same server."
    )
    print()
    for line in [legend, *why]:
        print(line)
    if args.markdown:
        args.markdown.write_text(
            "\n".join(
                [title, "", *spans, "", *summary.markdown(servers, measured), "", legend, *why]
            )
            + "\n"
        )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; every stack and cluster this run started was stopped")
