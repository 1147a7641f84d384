"""Plans stored by reference: the whole plan in Postgres, one window of it in history.

Temporal refuses payloads over 2 MiB, and a 10,000-step plan is larger than that, so a
plan with more steps than ``plan_inline_max_steps`` is stored here once, under the hash
of exactly what is stored, and the run carries only the window of steps it is running.
Steps are stored in execution order (every dependency before its dependant), so a
window never depends on a later one and earlier windows can be summarized as "all
succeeded except these".

Every function expects a connection inside ``tenant_transaction`` for ``tenant``.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from stead.contracts.run import Step, StepExecution, sha256_hex
from stead.errors import SteadError
from stead.planning.refs import find_refs


class PlanNotStored(SteadError):
    """A run refers to a stored plan that this tenant's ``plans`` table does not hold."""


@dataclass(frozen=True)
class PlanWindow:
    """Steps ``start`` to ``start + len(steps)`` of a stored plan, and what outlives them."""

    start: int
    steps: tuple[Step, ...]
    execution: dict[str, StepExecution]
    total_steps: int
    keep_outputs: tuple[str, ...]


def execution_order(steps: Sequence[Step]) -> list[Step]:
    """``steps`` with every dependency before its dependant, otherwise in the given order.

    Stable (Kahn's algorithm taking the earliest ready step first), so a plan already in
    dependency order comes back unchanged. Dependencies outside ``steps`` are ignored;
    a cycle raises ``ValueError`` (validation rejects cycles before this is called).
    """
    index = {step.id: i for i, step in enumerate(steps)}
    waiting = [0] * len(steps)
    dependants: list[list[int]] = [[] for _ in steps]
    for i, step in enumerate(steps):
        for dep in set(step.depends_on):
            if dep in index:
                waiting[i] += 1
                dependants[index[dep]].append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    ordered: list[Step] = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(steps[i])
        for j in dependants[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(ordered) != len(steps):
        raise ValueError("the steps depend on each other in a cycle")
    return ordered


def stored_plan_hash(steps: Sequence[Step], execution: Mapping[str, StepExecution]) -> str:
    """The hash of what is stored: steps in order with how each runs.

    Execution settings are part of it (unlike an inline plan's hash) because the row is
    shared by every run with the same hash: a catalog change must give a new row, not
    alter how a running plan's steps run.
    """
    return sha256_hex(_stored_items(steps, execution))


def referenced_outputs(steps: Sequence[Step]) -> dict[str, tuple[int, int]]:
    """For each step whose output a later step refers to: (its index, the last referrer's)."""
    index = {step.id: i for i, step in enumerate(steps)}
    found: dict[str, tuple[int, int]] = {}
    for i, step in enumerate(steps):
        for ref in find_refs(step.args):
            if ref in index:
                found[ref] = (index[ref], i)
    return found


def outputs_needed_after(referenced: Mapping[str, Sequence[int]], end: int) -> tuple[str, ...]:
    """Steps before ``end`` whose outputs steps at ``end`` or later still refer to."""
    kept = [(pos[0], sid) for sid, pos in referenced.items() if pos[0] < end <= pos[1]]
    return tuple(sid for _, sid in sorted(kept))


async def store_plan(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    plan_hash: str,
    steps: Sequence[Step],
    execution: Mapping[str, StepExecution],
) -> None:
    """Store the plan once; storing the same hash again (a retried activity) is a no-op."""
    await conn.execute(
        "INSERT INTO plans (tenant, plan_hash, steps, step_count, referenced)"
        " VALUES ($1, $2, $3::text::jsonb, $4, $5::text::jsonb)"
        " ON CONFLICT (tenant, plan_hash) DO NOTHING",
        tenant,
        plan_hash,
        json.dumps(_stored_items(steps, execution), separators=(",", ":")),
        len(steps),
        json.dumps(referenced_outputs(steps), separators=(",", ":")),
    )


async def load_window(
    conn: asyncpg.Connection, *, tenant: str, plan_hash: str, start: int, size: int
) -> PlanWindow:
    """Steps ``start`` .. ``start + size - 1`` (fewer at the end) and the outputs to keep."""
    row = await conn.fetchrow(
        "SELECT p.step_count, p.referenced::text AS referenced,"
        " COALESCE((SELECT jsonb_agg(e ORDER BY i)"
        "   FROM jsonb_array_elements(p.steps) WITH ORDINALITY AS t(e, i)"
        "   WHERE i > $3 AND i <= $3 + $4), '[]')::text AS items"
        " FROM plans p WHERE p.tenant = $1 AND p.plan_hash = $2",
        tenant,
        plan_hash,
        start,
        size,
    )
    if row is None:
        raise PlanNotStored(f"plan {plan_hash} is not stored for tenant {tenant!r}")
    steps, execution = _parse_items(json.loads(row["items"]))
    return PlanWindow(
        start=start,
        steps=steps,
        execution=execution,
        total_steps=row["step_count"],
        keep_outputs=outputs_needed_after(json.loads(row["referenced"]), start + len(steps)),
    )


async def load_steps(conn: asyncpg.Connection, *, tenant: str, plan_hash: str) -> tuple[Step, ...]:
    """Every step of a stored plan, in execution order (policy decides the whole plan)."""
    raw = await conn.fetchval(
        "SELECT steps::text FROM plans WHERE tenant = $1 AND plan_hash = $2", tenant, plan_hash
    )
    if raw is None:
        raise PlanNotStored(f"plan {plan_hash} is not stored for tenant {tenant!r}")
    steps, _ = _parse_items(json.loads(raw))
    return steps


def _stored_items(
    steps: Sequence[Step], execution: Mapping[str, StepExecution]
) -> list[dict[str, object]]:
    return [
        {
            "step": step.model_dump(mode="json"),
            "execution": execution.get(step.id, StepExecution()).model_dump(mode="json"),
        }
        for step in steps
    ]


def _parse_items(
    items: list[dict[str, object]],
) -> tuple[tuple[Step, ...], dict[str, StepExecution]]:
    steps = tuple(Step.model_validate(item["step"]) for item in items)
    execution = {
        step.id: StepExecution.model_validate(item["execution"])
        for step, item in zip(steps, items, strict=True)
    }
    return steps, execution
