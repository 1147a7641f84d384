"""Check a plan against the adapter catalog before anything runs, then seal it.

Every planner (playbook or LLM) goes through :func:`validate_plan`, so a plan that
names an unknown operation, passes arguments its schema rejects, or cannot be
ordered never reaches policy or execution. Reasons are plain sentences: they go
back to the LLM as a correction and to the operator as the rejection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from stead.contracts.run import Budget, Plan, PlannerInfo, Step, StepExecution
from stead.operations.catalog import Catalog, UnknownOperation
from stead.planning.refs import RefError, find_refs, ref_locations


class PlanRejected(Exception):
    """No valid plan could be made; ``reasons`` says why, one sentence each.

    ``tokens``/``cost_usd`` are what the planner spent getting there: a rejected LLM
    plan still cost its calls, and budgets and ``stead slo`` must count them.
    """

    def __init__(
        self,
        reasons: Iterable[str],
        *,
        summary: str = "the plan was rejected",
        tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        self.reasons = list(reasons)
        self.summary = summary
        self.tokens = tokens
        self.cost_usd = cost_usd
        super().__init__(f"{summary}:\n- " + "\n- ".join(self.reasons) if self.reasons else summary)


def validate_plan(
    steps: Sequence[Step],
    catalog: Catalog | None,
    budget: Budget,
    *,
    completed: Collection[str] = (),
) -> list[str]:
    """Every reason ``steps`` cannot run as a plan; an empty list means it can.

    ``completed`` names steps that already succeeded in this run (a replan): new
    steps may depend on and refer to them, but may not reuse their ids, because a
    step id is half of the idempotency key and a reused one would replay the old
    effect instead of running the new step. Without a ``catalog`` (``stead run``
    before it starts anything: only the worker knows its adapters) the plan's
    structure is checked, not its operations.
    """
    reasons: list[str] = []
    if not steps:
        reasons.append("the plan has no steps")
    if len(steps) > budget.max_steps:
        reasons.append(
            f"the plan has {len(steps)} steps; the budget allows at most {budget.max_steps}"
        )

    ids = [step.id for step in steps]
    seen: set[str] = set()
    for step_id in ids:
        if step_id in seen:
            reasons.append(f"step id {step_id!r} is used more than once")
        seen.add(step_id)
        if step_id in completed:
            reasons.append(
                f"step id {step_id!r} already ran in this run; give the new step another id"
            )
    known = seen | set(completed)

    for step in steps:
        reasons.extend(_check_step(step, catalog, known))

    reasons.extend(
        f"steps depend on each other in a cycle: {' -> '.join(c)}" for c in _cycles(steps)
    )
    return reasons


def build_plan(
    steps: Sequence[Step],
    catalog: Catalog,
    planner_info: PlannerInfo,
    rationale: str,
    plan_id: str,
) -> Plan:
    """Seal validated steps into a :class:`Plan`: its hash and how each step runs.

    The execution settings are copied from the catalog now, so they are recorded in
    history with the plan and a later catalog change cannot alter a running plan.
    """
    frozen = tuple(steps)
    execution: dict[str, StepExecution] = {}
    for step in frozen:
        op = catalog.get(step.operation)
        execution[step.id] = StepExecution(
            task_queue=op.task_queue,
            # A step may tighten its operation's timeout, never loosen it.
            timeout_seconds=min(step.timeout_seconds or op.timeout_seconds, op.timeout_seconds),
            max_attempts=op.max_attempts,
            side_effect=op.side_effect,
            risk=op.risk,
            scopes=op.scopes,
        )
    return Plan(
        plan_id=plan_id,
        plan_hash=Plan.hash_steps(frozen),
        steps=frozen,
        execution=execution,
        rationale=rationale,
        planner=planner_info,
    )


def _check_step(step: Step, catalog: Catalog | None, known: set[str]) -> list[str]:
    reasons = [
        f"step {step.id!r} depends on {dep!r}, which is not a step of this plan"
        for dep in step.depends_on
        if dep not in known
    ]
    try:
        referenced = find_refs(step.args)
    except RefError as exc:
        reasons.append(f"step {step.id!r}: {exc}")
        referenced = set()
    # A reference to a step that does not exist is that, not a missing dependency:
    # adding it to depends_on as told would only fail again, differently.
    reasons.extend(
        f"step {step.id!r} refers to the output of {ref!r}, which is not a step of this plan"
        for ref in sorted(referenced)
        if ref not in known
    )
    reasons.extend(
        f"step {step.id!r} refers to the output of {ref!r} but does not list it in depends_on"
        for ref in sorted(referenced)
        if ref in known and ref not in step.depends_on
    )
    if catalog is None:
        return reasons
    try:
        op = catalog.get(step.operation)
    except UnknownOperation as exc:
        reasons.append(f"step {step.id!r}: {exc}")
        return reasons
    reasons.extend(f"step {step.id!r}: {e}" for e in _schema_errors(op.args_model, step))
    return reasons


def _schema_errors(model: type[BaseModel], step: Step) -> list[str]:
    """Schema errors in ``step.args``, ignoring those a reference could still fix.

    A referenced value is only known at execution (where the resolved arguments are
    checked again), so an error at, above or below a reference's position is not
    reported now; a missing required argument or an unknown one still is.
    """
    try:
        model.model_validate(step.args)
    except ValidationError as exc:
        refs = ref_locations(step.args)
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if any(_prefix(ref, loc) or _prefix(loc, ref) for ref in refs):
                continue
            where = ".".join(str(p) for p in loc) or "(root)"
            errors.append(f"argument {where}: {err['msg']}")
        if errors:
            return [f"arguments for {step.operation} fail its schema: " + "; ".join(errors)]
    return []


def _prefix(short: tuple[Any, ...], long: tuple[Any, ...]) -> bool:
    return long[: len(short)] == short


def _cycles(steps: Sequence[Step]) -> list[list[str]]:
    """Each dependency cycle once, as ``[a, b, a]`` (a depends on b depends on a).

    Iterative, because a plan may hold thousands of steps in one chain.
    """
    graph: Mapping[str, tuple[str, ...]] = {s.id: s.depends_on for s in steps}
    on_path: dict[str, int] = {}  # node -> its index in ``path``
    done: set[str] = set()
    cycles: list[list[str]] = []
    for root in graph:
        if root in done:
            continue
        path: list[str] = [root]
        on_path[root] = 0
        pending: list[Iterator[str]] = [iter(graph[root])]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                node = path.pop()
                del on_path[node]
                done.add(node)
                pending.pop()
            elif dep in on_path:
                cycles.append([*path[on_path[dep] :], dep])
            elif dep in graph and dep not in done:
                on_path[dep] = len(path)
                path.append(dep)
                pending.append(iter(graph[dep]))
    return cycles
