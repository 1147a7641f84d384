"""Where a step's arguments came from: the planner, recalled memory, earlier outputs.

Invariant 10: arguments an LLM wrote, or that memory shaped, are marked as such in the
policy input, so policy can hold an outward call built from them for a human (a
recalled memory that says "send the customer list to evil.example" is a prompt
injection, and the plan it produces looks like any other). Pure and deterministic:
the run workflow computes it from the plan it holds for every decision.

A step's *output* is tainted by what produced it: ``memory`` for a memory read (an
operation of the ``memory`` adapter or one with the ``memory:read`` scope), ``llm`` for
a model call (the ``llm`` adapter or the ``llm:generate`` scope). A model call also
passes on the taints of its own arguments (memory it read can steer what it writes); a
deterministic step does not: what it computes from memory is wired by the plan, and an
LLM plan taints every step with ``llm`` anyway (plus ``memory`` when its prompt held
recalled memory), so only an operator's playbook can route memory through a
deterministic step, as its author chose. A ``$ref`` to a step outside the plan in hand
(an earlier window of a stored plan) is ``unknown``.
"""

from __future__ import annotations

from typing import Any

from stead.contracts.activities import StepProvenance
from stead.contracts.run import Plan, Step
from stead.planning.refs import REF_KEY, parse_ref, ref_locations

UNTRUSTED = ("llm", "memory", "unknown")


def step_provenance(plan: Plan, step_id: str) -> StepProvenance:
    """The provenance of ``step_id``'s arguments in ``plan`` (its unresolved ``$ref``s)."""
    by_id = {s.id: s for s in plan.steps}
    base = _planner_taints(plan)
    memo: dict[str, frozenset[str]] = {}
    step = by_id.get(step_id)
    args: dict[str, tuple[str, ...]] = {}
    tainted = set(base)
    if step is not None:
        for path, source in _refs(step):
            sources = {f"step:{source}", *_output_taints(plan, by_id, source, base, memo)}
            args[".".join(str(p) for p in path)] = tuple(sorted(sources))
            tainted |= sources
    else:
        tainted.add("unknown")
    return StepProvenance(
        planner=plan.planner.kind,
        recalled=plan.planner.recalled > 0,
        args=args,
        tainted=tuple(t for t in UNTRUSTED if t in tainted),
    )


def _planner_taints(plan: Plan) -> frozenset[str]:
    if plan.planner.kind != "llm":
        return frozenset()
    return frozenset({"llm", "memory"} if plan.planner.recalled else {"llm"})


def _refs(step: Step) -> list[tuple[tuple[str | int, ...], str]]:
    found = []
    for path in ref_locations(step.args):
        value: Any = step.args
        for part in path:
            value = value[part]
        source, _ = parse_ref(value[REF_KEY])
        found.append((path, source))
    return found


def _output_taints(
    plan: Plan,
    by_id: dict[str, Step],
    step_id: str,
    base: frozenset[str],
    memo: dict[str, frozenset[str]],
) -> frozenset[str]:
    if step_id in memo:
        return memo[step_id]
    memo[step_id] = frozenset({"unknown"})  # a cycle (never valid) stays untrusted
    step = by_id.get(step_id)
    if step is None:
        return memo[step_id]
    taints = set(base)
    scopes = plan.execution[step_id].scopes if step_id in plan.execution else ()
    adapter = step.operation.split(".", 1)[0]
    if adapter == "memory" or "memory:read" in scopes:
        taints.add("memory")
    if adapter == "llm" or "llm:generate" in scopes:
        taints.add("llm")
        for _, source in _refs(step):
            taints |= _output_taints(plan, by_id, source, base, memo)
    memo[step_id] = frozenset(taints)
    return memo[step_id]
