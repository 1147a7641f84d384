"""8. Temporal Cloud Actions per governed step: what a Cloud user pays per step.

Counted from each run's histories by ``stead.runs.actions`` (Temporal Cloud's
published rules). A step's Actions are the slope between a 1-step and an N-step
run of ``core.echo`` (so the run's fixed cost cancels out); the fixed cost is what
is left of the 1-step run. The baseline is the bare chain (``bench.bare``), counted
the same way in the same run: one activity per step, one start per run.

An approved step and a denied run are measured as whole 1-step runs, less the
allowed run's fixed cost for the approved one. Every run is measured twice in the same
run of the benchmark: on today's path, and on a worker that holds back the
``fewer-actions`` patch (``build_worker(held_patches=...)``), the path before it.

    .venv/bin/python -m bench.actions [--quick]
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import Any

from temporalio.client import WorkflowHandle

from bench.bare import BareChainWorkflow
from bench.harness import (
    APPROVER,
    BenchStack,
    Row,
    Section,
    Workers,
    configure_tenant,
    echo_chain,
    in_process_workers,
    new_tenant,
    quick_flag,
    run_standalone,
    start_governed,
    table,
    write_playbook,
)
from stead.contracts.run import ApprovalInput, PendingApproval, RunStatus
from stead.runs.actions import ActionCount, count_actions, run_histories

GOAL = 1.2
# The workflow patch that cut a run's Actions; a worker holding it back runs the old path.
PATCH = "fewer-actions"


@dataclass(frozen=True)
class Sizes:
    steps: int


FULL = Sizes(steps=10)
QUICK = Sizes(steps=5)


async def governed_actions(
    w: Workers, tenant: str, playbook: str, steps: int, *, express: bool = False
) -> ActionCount:
    handle = await start_governed(w, tenant, playbook, steps, express=express)
    status = await handle.result()
    if status.status != "completed":
        raise RuntimeError(f"{handle.id}: {status.status}: {'; '.join(status.reasons)}")
    return count_actions(await run_histories(w.client, handle.id))


async def bare_actions(w: Workers, steps: int) -> ActionCount:
    handle = await w.client.start_workflow(
        BareChainWorkflow.run,
        args=[steps, False],
        id=f"bench-actions-bare-{uuid.uuid4().hex[:10]}",
        task_queue=w.bare_queue,
    )
    await handle.result()
    return count_actions([await handle.fetch_history()])


async def approved_run(w: Workers, tenant: str, playbook: str) -> ActionCount:
    handle: WorkflowHandle[Any, RunStatus] = await start_governed(w, tenant, playbook, 1)
    deadline = time.monotonic() + 120
    pending: list[PendingApproval] = []
    while not pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{handle.id} never asked for approval")
        await asyncio.sleep(0.1)
        pending = await handle.query("pending_approvals", result_type=list[PendingApproval])
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id=pending[0].step_id,
            plan_hash=pending[0].plan_hash,
            approver=APPROVER,
            verdict="approve",
        ),
    )
    status = await handle.result()
    if status.status != "completed":
        raise RuntimeError(f"{handle.id}: {status.status}: {'; '.join(status.reasons)}")
    return count_actions(await run_histories(w.client, handle.id))


async def denied_run(w: Workers, tenant: str, playbook: str) -> ActionCount:
    handle = await start_governed(w, tenant, playbook, 1)
    status = await handle.result()
    if status.status not in ("denied", "plan_rejected"):
        raise RuntimeError(f"{handle.id}: expected a denial, got {status.status}")
    return count_actions(await run_histories(w.client, handle.id))


def kinds(count: ActionCount) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(count.by_kind.items()))


@dataclass(frozen=True)
class PathCounts:
    """One code path's runs, counted: 1 and N allowed steps, express, approved, denied."""

    one: ActionCount
    many: ActionCount
    express_one: ActionCount
    express_many: ActionCount
    approved: ActionCount
    denied: ActionCount
    steps: int

    def slope(self, one: ActionCount, many: ActionCount) -> float:
        return (many.total - one.total) / (self.steps - 1)

    @property
    def step(self) -> float:
        return self.slope(self.one, self.many)

    @property
    def express_step(self) -> float:
        return self.slope(self.express_one, self.express_many)

    @property
    def fixed(self) -> float:
        return self.one.total - self.step

    @property
    def approved_step(self) -> float:
        return self.approved.total - self.fixed


@dataclass(frozen=True)
class Tenants:
    allow: str
    approve: str
    deny: str
    one: str
    many: str


async def path_counts(w: Workers, t: Tenants, n: int) -> PathCounts:
    """Every run of one path, on ``w.stead_queue``."""
    return PathCounts(
        one=await governed_actions(w, t.allow, t.one, 1),
        many=await governed_actions(w, t.allow, t.many, n),
        express_one=await governed_actions(w, t.allow, t.one, 1, express=True),
        express_many=await governed_actions(w, t.allow, t.many, n, express=True),
        approved=await approved_run(w, t.approve, t.one),
        denied=await denied_run(w, t.deny, t.one),
        steps=n,
    )


async def measure(stack: BenchStack, sizes: Sizes = FULL) -> Section:
    settings = stack.settings
    n = sizes.steps
    allow, approve, deny = new_tenant("act"), new_tenant("actap"), new_tenant("actdn")
    await configure_tenant(settings, allow)
    await configure_tenant(settings, approve, approval_risk="low", approvers=[APPROVER])
    await configure_tenant(settings, deny, operations=["core.nothing"])
    one = write_playbook(stack.playbook_dir, f"actions-1-{allow}", echo_chain(1))
    many = write_playbook(stack.playbook_dir, f"actions-{n}-{allow}", echo_chain(n))
    tenants = Tenants(allow, approve, deny, one, many)
    async with in_process_workers(settings, held_patches=(PATCH,)) as w:
        now = await path_counts(w, tenants, n)
        before = await path_counts(dataclasses.replace(w, stead_queue=w.held_queue), tenants, n)
        b1, bn = await bare_actions(w, 1), await bare_actions(w, n)
    bare_step = (bn.total - b1.total) / (n - 1)
    section = Section("8. Temporal Cloud Actions per step (counted from histories)")
    section.lines += table(
        ("run", "Actions", "by kind"),
        [
            ("governed, 1 step", str(now.one.total), kinds(now.one)),
            (f"governed, {n} steps", str(now.many.total), kinds(now.many)),
            (f"express, {n} steps", str(now.express_many.total), kinds(now.express_many)),
            (f"bare, {n} steps", str(bn.total), kinds(bn)),
            ("approved, 1 step", str(now.approved.total), kinds(now.approved)),
            ("denied, 1 step", str(now.denied.total), kinds(now.denied)),
            (f"before {PATCH}: governed, 1 step", str(before.one.total), kinds(before.one)),
            (f"before {PATCH}: approved", str(before.approved.total), kinds(before.approved)),
            (f"before {PATCH}: denied", str(before.denied.total), kinds(before.denied)),
        ],
    )
    section.lines += [
        "",
        *table(
            ("per", "Actions", f"before {PATCH} (same run)"),
            [
                ("allowed step (slope)", f"{now.step:.2f}", f"{before.step:.2f}"),
                (
                    "allowed express step (slope)",
                    f"{now.express_step:.2f}",
                    f"{before.express_step:.2f}",
                ),
                ("bare activity step (slope)", f"{bare_step:.2f}", ""),
                (
                    "a run's fixed cost (1-step run - step)",
                    f"{now.fixed:.2f}",
                    f"{before.fixed:.2f}",
                ),
                (
                    "an approved step (1-step run - fixed)",
                    f"{now.approved_step:.2f}",
                    f"{before.approved_step:.2f}",
                ),
                ("a denied 1-step run, whole", str(now.denied.total), str(before.denied.total)),
            ],
        ),
    ]
    was = f"before {PATCH}"
    section.rows += [
        Row(
            "8 actions",
            "Actions per allowed step",
            f"{now.step:.2f}",
            f"{bare_step:.2f} (bare activity)",
            f"{now.step / bare_step:.2f}x",
            f"<= {GOAL}x",
            now.step / bare_step <= GOAL,
        ),
        Row(
            "8 actions",
            "Actions per express step",
            f"{now.express_step:.2f}",
            f"{bare_step:.2f} (bare activity)",
            f"{now.express_step / bare_step:.2f}x",
            "reference",
        ),
        Row(
            "8 actions",
            "a run's fixed Actions",
            f"{now.fixed:.1f}",
            f"{before.fixed:.1f} ({was}); {b1.total - bare_step:.1f} (bare)",
        ),
        Row(
            "8 actions",
            "approved step Actions",
            f"{now.approved_step:.1f}",
            f"{before.approved_step:.1f} ({was})",
        ),
        Row(
            "8 actions",
            "denied 1-step run Actions",
            str(now.denied.total),
            f"{before.denied.total} ({was})",
        ),
    ]
    return section


def main() -> None:
    args = quick_flag(__doc__).parse_args()
    run_standalone(lambda stack: measure(stack, QUICK if args.quick else FULL))


if __name__ == "__main__":
    main()
