"""Peer: the same governed chain on DBOS and on LangGraph, beside Stead, against bare Temporal.

Each peer runs the N-step chain of ``core.echo`` steps with **the same OPA call per
step** that Stead's ``step.run`` makes (``OpaClient.decide_step`` on
``data.stead.step.decision``, the same input shape, risk and side effect from the
worker's catalog), on the same embedded Postgres and OPA:

- *DBOS*: a ``@DBOS.workflow()`` of N ``@DBOS.step()``s; DBOS records each step's
  output in its system database (a database of its own on the stack's Postgres)
  before the next runs, which is what makes its workflow durable.
- *LangGraph*: N nodes with ``PostgresSaver``, ``durability="sync"``: one checkpoint
  per node, written before the next node runs.
- *Stead*: the governed run (regular lane, and with ``express_reads``) on an
  in-process worker, as ``bench.sequential`` runs it.

The baseline is a bare Temporal workflow of N trivial activities (``bench/bare.py``)
on the same stack, interleaved round by round with every variant. Each figure is a
slope, (T(N) - T(1)) / (N - 1), so a run's fixed cost (Stead's plan and summary,
DBOS's workflow row) does not count as per-step time. The peers record no decision,
mint no capability, keep no ledger or audit row and wait for nobody: what they give up
is in bench/README.md (row 5).

Needs the ``bench`` extra (``dbos``, ``langgraph``, ``langgraph-checkpoint-postgres``,
``psycopg[binary]``); a peer that cannot be imported prints "unavailable: <reason>".

    .venv/bin/python -m bench.peer_dbos [--quick] [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from adapters.registry import worker_catalog
from bench.harness import (
    PRINCIPAL,
    BenchStack,
    Retried,
    Row,
    Section,
    Workers,
    configure_tenant,
    echo_chain,
    in_process_workers,
    median,
    new_tenant,
    quick_flag,
    run_bare,
    run_governed,
    run_standalone,
    table,
    write_playbook,
)
from bench.peer_langgraph import peer_dsn
from stead.contracts.run import Budget, Spent
from stead.policy.opa import OpaClient
from stead.settings import Settings

DBOS_DATABASE = "dbos_bench"
OPERATION = "core.echo"

Chain = Callable[[int], Awaitable[float]]


@dataclass(frozen=True)
class Sizes:
    steps: int
    repeats: int


FULL = Sizes(steps=30, repeats=3)
QUICK = Sizes(steps=10, repeats=1)


class Denied(RuntimeError):
    """OPA did not allow a peer's step: the chain stops there, as Stead's would."""


@dataclass(frozen=True)
class StepDecider:
    """The OPA call ``step.run`` makes for one step, with the same input shape.

    ``tenant_spent`` is read once per benchmark rather than per step (Stead reads it in
    the step's transaction): the peers have no runs table to read it from.
    """

    opa: OpaClient
    tenant: str
    operation: dict[str, Any]
    tenant_spent: dict[str, Any]

    async def allow(self, run_id: str, index: int, steps: int) -> None:
        result = await self.opa.decide_step(
            {
                "tenant": self.tenant,
                "principal": PRINCIPAL,
                "run": {"workflow_id": run_id, "run_id": run_id, "started_by": PRINCIPAL},
                "step": {
                    "id": f"s{index}",
                    "operation": OPERATION,
                    "args": {"value": index},
                    "secrets": [],
                },
                "operation": self.operation,
                "budget": Budget(max_steps=max(steps, 1)).model_dump(mode="json"),
                "spent": Spent(steps=index).model_dump(mode="json"),
                "tenant_spent": self.tenant_spent,
                "approvals": [],
            }
        )
        if result.outcome != "allow":
            raise Denied(f"OPA said {result.outcome} for step s{index}: {result.reasons}")


def dbos_unavailable() -> str | None:
    try:
        import dbos  # noqa: F401
    except Exception as exc:  # any import failure means the row cannot be measured
        return f"{type(exc).__name__}: {exc}"
    return None


def langgraph_unavailable() -> str | None:
    from bench.peer_langgraph import unavailable_reason

    return unavailable_reason()


# ------------------------------------------------------------------ DBOS


# DBOS records a workflow's arguments in its system database, so a step gets its
# decider by tenant name, not as an argument (an OPA client does not serialize).
_DECIDERS: dict[str, StepDecider] = {}


@functools.cache
def _dbos_chain() -> Any:
    """The DBOS workflow, registered once per process (DBOS keeps a global registry)."""
    from dbos import DBOS

    @DBOS.step(retries_allowed=False)
    async def governed_echo(tenant: str | None, index: int, steps: int) -> int:
        if tenant is not None:
            await _DECIDERS[tenant].allow(DBOS.workflow_id or "", index, steps)
        return index + 1

    @DBOS.workflow(name="bench.dbos_chain")
    async def chain(tenant: str | None, steps: int) -> int:
        value = 0
        for i in range(steps):
            value = await governed_echo(tenant, i, steps)
        return value

    return chain


@dataclass(frozen=True)
class DbosPeer:
    """One launched DBOS on its own database of the stack's Postgres."""

    decider: StepDecider

    async def once(self, steps: int, *, governed: bool = True) -> float:
        from dbos import SetWorkflowID

        _DECIDERS[self.decider.tenant] = self.decider
        chain = _dbos_chain()
        started = time.perf_counter()
        with SetWorkflowID(f"dbos-{uuid.uuid4().hex[:12]}"):
            done = await chain(self.decider.tenant if governed else None, steps)
        elapsed = time.perf_counter() - started
        if done != steps:
            raise RuntimeError(f"DBOS chain ran {done} of {steps} steps")
        return elapsed


def launch_dbos(dsn: str) -> None:
    from dbos import DBOS, DBOSConfig

    _dbos_chain()  # register before launch, as DBOS requires
    config: DBOSConfig = {
        "name": "stead-bench-peer",
        "system_database_url": dsn.replace("postgresql://", "postgresql+psycopg://", 1),
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()


def destroy_dbos() -> None:
    """Shut DBOS down and give the event loop a thread pool back: DBOS made its own
    pool the loop's default executor (``asyncio.to_thread``) and destroy shuts it."""
    from dbos import DBOS

    DBOS.destroy(workflow_completion_timeout_sec=0)
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())


# ------------------------------------------------------------------ LangGraph


def governed_graph(steps: int, decider: StepDecider, checkpointer: Any) -> Any:
    """The LangGraph chain of ``bench.peer_langgraph`` with the OPA call in every node."""
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        run: str
        value: int

    def node(index: int) -> Any:
        async def echo(state: State) -> State:
            await decider.allow(state["run"], index, steps)
            return {"run": state["run"], "value": state["value"] + 1}

        return echo

    graph = StateGraph(State)
    names = [f"s{i}" for i in range(steps)]
    for i, name in enumerate(names):
        graph.add_node(name, node(i))
    graph.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        graph.add_edge(a, b)
    graph.add_edge(names[-1], END)
    return graph.compile(checkpointer=checkpointer)


async def langgraph_once(graphs: dict[int, Any], steps: int) -> float:
    run = uuid.uuid4().hex
    config = {"configurable": {"thread_id": run}, "recursion_limit": steps + 10}
    started = time.perf_counter()
    out = await graphs[steps].ainvoke({"run": run, "value": 0}, config, durability="sync")
    elapsed = time.perf_counter() - started
    if out["value"] != steps:
        raise RuntimeError(f"LangGraph chain ran {out['value']} of {steps} steps")
    return elapsed


# ------------------------------------------------------------------ measuring


async def decider_for(settings: Settings, opa: OpaClient) -> tuple[StepDecider, str]:
    tenant = new_tenant("peer")
    await configure_tenant(settings, tenant)
    op = worker_catalog(settings).get(OPERATION)
    meta = {"name": OPERATION, "side_effect": op.side_effect, "risk": op.risk,
            "scopes": list(op.scopes)}  # fmt: skip
    spent = {"usd": 0.0, "tokens": 0, "runs": 0, "since": "2026-01-01T00:00:00Z"}
    return StepDecider(opa, tenant, meta, spent), tenant


async def slopes(
    chains: dict[str, Chain], steps: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Median ms per step (slope) and median ms of the N-step chain, per variant; the
    variants interleaved in every round so the machine's load falls on all alike."""
    per_step: dict[str, list[float]] = {name: [] for name in chains}
    whole: dict[str, list[float]] = {name: [] for name in chains}
    for warm in chains.values():  # first connections, first imports
        await warm(1)
    for _ in range(repeats):
        for name, chain in chains.items():
            t_n = await chain(steps)
            t_1 = await chain(1)
            per_step[name].append((t_n - t_1) / (steps - 1) * 1000)
            whole[name].append(t_n * 1000)
    return {name: (median(per_step[name]), median(whole[name])) for name in chains}


async def measure(stack: BenchStack, sizes: Sizes = FULL) -> Section:
    section = Section(
        f"5. Peers: a {sizes.steps}-step governed chain (one OPA decision per step) on "
        "Stead, DBOS and LangGraph"
    )
    settings = stack.settings
    admin = settings.postgres_admin_dsn or ""
    retried = Retried()
    n = sizes.steps
    playbook = write_playbook(stack.playbook_dir, f"peer{n}", echo_chain(n))
    write_playbook(stack.playbook_dir, "peer1", echo_chain(1))
    unavailable: dict[str, str] = {}
    async with (
        OpaClient(settings.opa_url, token=settings.opa_token) as opa,
        in_process_workers(settings) as w,
    ):
        decider, tenant = await decider_for(settings, opa)
        chains: dict[str, Chain] = {
            "bare Temporal activity (baseline)": functools.partial(run_bare, w),
            "Stead governed": _stead(w, tenant, playbook, retried, express=False),
            "Stead governed, express_reads": _stead(w, tenant, playbook, retried, express=True),
        }
        dbos_reason = dbos_unavailable()
        if dbos_reason is None:
            await asyncio.to_thread(launch_dbos, await peer_dsn(admin, DBOS_DATABASE))
            peer = DbosPeer(decider)
            chains["DBOS + OPA per step"] = peer.once
            chains["DBOS, no OPA"] = functools.partial(peer.once, governed=False)
        else:
            unavailable["DBOS"] = dbos_reason
        lg_reason = langgraph_unavailable()
        try:
            if lg_reason is None:
                from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

                async with AsyncPostgresSaver.from_conn_string(await peer_dsn(admin)) as saver:
                    await saver.setup()
                    graphs = {k: governed_graph(k, decider, saver) for k in (1, n)}
                    chains["LangGraph + PostgresSaver + OPA per step"] = functools.partial(
                        langgraph_once, graphs
                    )
                    results = await slopes(chains, n, sizes.repeats)
            else:
                unavailable["LangGraph"] = lg_reason
                results = await slopes(chains, n, sizes.repeats)
        finally:
            if dbos_reason is None:
                destroy_dbos()
    base = results["bare Temporal activity (baseline)"][0]
    section.lines += table(
        ("variant", "ms/step", "x bare", f"{n}-step chain ms"),
        [
            (name, f"{ms:.2f}", f"{ms / base:.2f}x", f"{chain:.0f}")
            for name, (ms, chain) in results.items()
        ],
    )
    section.lines.append(
        f"slope (T({n}) - T(1)) / {n - 1}, median of {sizes.repeats}, variants interleaved; "
        f"embedded Postgres (DBOS: database {DBOS_DATABASE}), the stack's OPA"
    )
    section.lines += [f"unavailable: {name}: {why}" for name, why in unavailable.items()]
    section.lines += retried.lines()
    for name, (ms, _) in results.items():
        if name.startswith(("DBOS", "LangGraph")):
            section.rows.append(
                Row("5 peer", f"{name} ms/step", f"{ms:.2f}", f"{base:.1f} (bare activity)",
                    f"{ms / base:.2f}x", "reference")
            )  # fmt: skip
    for name, why in unavailable.items():
        section.rows.append(Row("5 peer", f"{name} + OPA per step", f"unavailable: {why}"))
    return section


def _stead(w: Workers, tenant: str, playbook: str, retried: Retried, *, express: bool) -> Chain:
    async def chain(steps: int) -> float:
        name = playbook if steps > 1 else "peer1"
        return await retried(
            lambda: run_governed(w, tenant, name, steps, express=express, max_parallel=1)
        )

    return chain


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    sizes = Sizes(args.steps or base.steps, args.repeats or base.repeats)
    run_standalone(lambda stack: measure(stack, sizes))


if __name__ == "__main__":
    main()
