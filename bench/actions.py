"""8. Temporal Cloud Actions per governed step: what a Cloud user pays per step.

Counted from each run's histories by ``stead.runs.actions`` (Temporal Cloud's
published rules). A step's Actions are the slope between a 1-step and an N-step
run of ``core.echo`` (so the run's fixed cost cancels out); the fixed cost is what
is left of the 1-step run. The baseline is the bare chain (``bench.bare``), counted
the same way in the same run: one activity per step, one start per run.

An approved step and a denied run are measured as whole 1-step runs, less the
allowed run's fixed cost for the approved one.

    .venv/bin/python -m bench.actions [--quick]
"""

from __future__ import annotations

import asyncio
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


async def measure(stack: BenchStack, sizes: Sizes = FULL) -> Section:
    settings = stack.settings
    n = sizes.steps
    allow, approve, deny = new_tenant("act"), new_tenant("actap"), new_tenant("actdn")
    await configure_tenant(settings, allow)
    await configure_tenant(settings, approve, approval_risk="low", approvers=[APPROVER])
    await configure_tenant(settings, deny, operations=["core.nothing"])
    one = write_playbook(stack.playbook_dir, f"actions-1-{allow}", echo_chain(1))
    many = write_playbook(stack.playbook_dir, f"actions-{n}-{allow}", echo_chain(n))
    async with in_process_workers(settings) as w:
        g1, gn = await governed_actions(w, allow, one, 1), await governed_actions(w, allow, many, n)
        e1 = await governed_actions(w, allow, one, 1, express=True)
        en = await governed_actions(w, allow, many, n, express=True)
        b1, bn = await bare_actions(w, 1), await bare_actions(w, n)
        approved = await approved_run(w, approve, one)
        denied = await denied_run(w, deny, one)
    step = (gn.total - g1.total) / (n - 1)
    express_step = (en.total - e1.total) / (n - 1)
    bare_step = (bn.total - b1.total) / (n - 1)
    fixed = g1.total - step
    section = Section("8. Temporal Cloud Actions per step (counted from histories)")
    section.lines += table(
        ("run", "Actions", "by kind"),
        [
            ("governed, 1 step", str(g1.total), kinds(g1)),
            (f"governed, {n} steps", str(gn.total), kinds(gn)),
            (f"express, {n} steps", str(en.total), kinds(en)),
            (f"bare, {n} steps", str(bn.total), kinds(bn)),
            ("approved, 1 step", str(approved.total), kinds(approved)),
            ("denied, 1 step", str(denied.total), kinds(denied)),
        ],
    )
    section.lines += [
        "",
        *table(
            ("per", "Actions"),
            [
                ("allowed step (slope)", f"{step:.2f}"),
                ("allowed express step (slope)", f"{express_step:.2f}"),
                ("bare activity step (slope)", f"{bare_step:.2f}"),
                ("a run's fixed cost (1-step run - step)", f"{fixed:.2f}"),
                ("an approved step (1-step run - fixed)", f"{approved.total - fixed:.2f}"),
                ("a denied 1-step run, whole", str(denied.total)),
            ],
        ),
    ]
    section.rows += [
        Row(
            "8 actions",
            "Actions per allowed step",
            f"{step:.2f}",
            f"{bare_step:.2f} (bare activity)",
            f"{step / bare_step:.2f}x",
            f"<= {GOAL}x",
            step / bare_step <= GOAL,
        ),
        Row(
            "8 actions",
            "Actions per express step",
            f"{express_step:.2f}",
            f"{bare_step:.2f} (bare activity)",
            f"{express_step / bare_step:.2f}x",
            "reference",
        ),
        Row(
            "8 actions",
            "a run's fixed Actions",
            f"{fixed:.1f}",
            f"{b1.total - bare_step:.1f} (bare)",
        ),
        Row("8 actions", "approved step Actions", f"{approved.total - fixed:.1f}"),
        Row("8 actions", "denied 1-step run Actions", str(denied.total)),
    ]
    return section


def main() -> None:
    args = quick_flag(__doc__).parse_args()
    run_standalone(lambda stack: measure(stack, QUICK if args.quick else FULL))


if __name__ == "__main__":
    main()
