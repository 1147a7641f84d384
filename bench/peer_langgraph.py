"""Peer: the same N-step chain in LangGraph, checkpointed to the same embedded Postgres.

LangGraph's ``PostgresSaver`` is what a LangGraph user gets for durability: one
checkpoint per superstep. The chain is N nodes that each return their input, like
``core.echo``; the graph runs with ``durability="sync"`` (each checkpoint is written
before the next node runs, the guarantee closest to a Temporal step) and, for
reference, ``"async"`` (LangGraph's default: the write overlaps the next node).
The baseline, in the same run, is the same graph with no checkpointer at all.
LangGraph has no policy, approval, ledger or audit: this row says what durability
alone costs a peer on this disk, not what governance costs.

Needs the ``bench`` extra (``langgraph``, ``langgraph-checkpoint-postgres``,
``psycopg[binary]``); without it the rows print "unavailable: <reason>".

    .venv/bin/python -m bench.peer_langgraph [--quick] [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.harness import (
    BenchStack,
    Row,
    Section,
    median,
    quick_flag,
    run_standalone,
    table,
)

DATABASE = "langgraph_bench"


@dataclass(frozen=True)
class PeerTimes:
    """Median wall seconds of one N-step chain in each mode."""

    steps: int
    memory: float
    sync: float
    async_: float


def unavailable_reason() -> str | None:
    try:
        import langgraph.graph  # noqa: F401
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver  # noqa: F401
    except Exception as exc:  # any import failure means the row cannot be measured
        return f"{type(exc).__name__}: {exc}"
    return None


async def peer_dsn(admin_dsn: str, database: str = DATABASE) -> str:
    """A database of its own, so a peer's tables never touch Stead's schema."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{database}"


def chain_graph(steps: int, checkpointer: Any = None) -> Any:
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        value: int

    def echo(state: State) -> State:
        return {"value": state["value"] + 1}

    graph = StateGraph(State)
    names = [f"s{i}" for i in range(steps)]
    for name in names:
        graph.add_node(name, echo)
    graph.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        graph.add_edge(a, b)
    graph.add_edge(names[-1], END)
    return graph.compile(checkpointer=checkpointer)


async def _once(graph: Any, steps: int, durability: str | None) -> float:
    config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": steps + 10}
    started = time.perf_counter()
    out = await graph.ainvoke({"value": 0}, config, durability=durability)
    elapsed = time.perf_counter() - started
    if out["value"] != steps:
        raise RuntimeError(f"LangGraph chain ran {out['value']} of {steps} steps")
    return elapsed


async def langgraph_chain(admin_dsn: str, steps: int, repeats: int) -> PeerTimes:
    """Median seconds per chain: no checkpointer, Postgres sync, Postgres async; interleaved."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    dsn = await peer_dsn(admin_dsn)
    async with AsyncPostgresSaver.from_conn_string(dsn) as saver:
        await saver.setup()
        bare = chain_graph(steps)
        durable = chain_graph(steps, saver)
        await _once(bare, steps, None)
        await _once(durable, steps, "sync")
        memory, sync, async_ = [], [], []
        for _ in range(repeats):
            memory.append(await _once(bare, steps, None))
            sync.append(await _once(durable, steps, "sync"))
            async_.append(await _once(durable, steps, "async"))
    return PeerTimes(steps, median(memory), median(sync), median(async_))


@dataclass(frozen=True)
class Sizes:
    steps: int
    repeats: int


FULL = Sizes(steps=100, repeats=3)
QUICK = Sizes(steps=20, repeats=1)


async def measure(stack: BenchStack, sizes: Sizes = FULL) -> Section:
    section = Section(f"5. Peer: {sizes.steps}-step chain in LangGraph + Postgres checkpointer")
    reason = unavailable_reason()
    if reason is not None:
        section.lines.append(f"unavailable: {reason}")
        section.rows.append(Row("5 peer", "LangGraph + PostgresSaver", f"unavailable: {reason}"))
        return section
    t = await langgraph_chain(stack.settings.postgres_admin_dsn or "", sizes.steps, sizes.repeats)
    base = t.memory / t.steps * 1000
    rows = [
        ("LangGraph, no checkpointer (baseline)", t.memory, "1.00x"),
        ("LangGraph + PostgresSaver, durability=sync", t.sync, f"{t.sync / t.memory:.1f}x"),
        ("LangGraph + PostgresSaver, durability=async", t.async_, f"{t.async_ / t.memory:.1f}x"),
    ]
    section.lines += table(
        ("variant", "chain ms", "ms/step", "x baseline"),
        [(name, f"{s * 1000:.0f}", f"{s / t.steps * 1000:.2f}", r) for name, s, r in rows],
    )
    section.lines.append(
        f"median of {sizes.repeats}; embedded Postgres, database {DATABASE}; "
        "one checkpoint per node"
    )
    section.rows.append(
        Row(
            "5 peer",
            "LangGraph+PG (sync) ms/step",
            f"{t.sync / t.steps * 1000:.2f}",
            f"{base:.3f} (no checkpointer)",
            f"{t.sync / t.memory:.0f}x",
            "reference",
        )
    )
    return section


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
