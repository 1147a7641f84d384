"""``stead approve-all``: vote on every matching waiting step of one tenant, one proof each.

An operator facing hundreds of runs parked on the same kind of step (a batch of
write-backs after an incident, a release gate) should not type hundreds of
commands, but a bulk vote must not become a weaker vote. So nothing here is new
authority: the command lists the tenant's waiting steps exactly as ``stead pending``
does, keeps those that match the filters, and sends each one the same ``approve``
update ``stead approve`` sends, with the principal token narrowed to that one run,
step, plan hash and verdict. Every run's validator and approval activity check the
approver, the plan hash and the token on their own, and audit a refusal; one refused
vote does not stop the others, and the exit code says whether any was refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError

from stead.cli._common import (
    console,
    fails_cleanly,
    principal_id,
    print_json,
    settings,
    tenant_id,
    with_client,
)
from stead.cli.runs import (
    ApproverToken,
    ApproverTokenFile,
    flagged_runs,
    pending_of,
    send_approval,
)
from stead.contracts.run import PendingApproval, Plan, Verdict
from stead.errors import SteadError
from stead.settings import Settings


@dataclass(frozen=True)
class Selection:
    """Which waiting steps of one tenant a bulk vote is about; unset filters match all."""

    tenant: str
    operation: str | None = None
    step_id: str | None = None
    playbook: str | None = None

    def matches(self, pending: PendingApproval) -> bool:
        return (self.operation is None or pending.operation == self.operation) and (
            self.step_id is None or pending.step_id == self.step_id
        )


@dataclass(frozen=True)
class Vote:
    """What one run answered to its vote: ``error`` is None when the update was accepted."""

    run_id: str
    step_id: str
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step_id": self.step_id, "error": self.error}


def register(app: typer.Typer) -> None:
    app.command("approve-all")(approve_all)


@fails_cleanly
def approve_all(
    tenant: Annotated[str, typer.Option(help="The tenant whose runs wait.", callback=tenant_id)],
    principal: Annotated[
        str, typer.Option("--as", help="The approver, e.g. user:alice.", callback=principal_id)
    ],
    operation: Annotated[str | None, typer.Option(help="Only steps of this operation.")] = None,
    step: Annotated[str | None, typer.Option(help="Only steps with this step id.")] = None,
    playbook: Annotated[
        str | None, typer.Option(help="Only runs planned from this playbook.")
    ] = None,
    reject: Annotated[bool, typer.Option(help="Reject instead of approve.")] = False,
    comment: Annotated[str, typer.Option(help="Why; recorded with every vote.")] = "",
    dry_run: Annotated[bool, typer.Option(help="List what would be voted on; send nothing.")] = (
        False
    ),
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Runs asked and voted on at a time.")
    ] = 32,
    token: ApproverToken = None,
    token_file: ApproverTokenFile = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Approve (or --reject) every matching waiting step of a tenant, one proven vote per run.

    Exits 0 when every vote was accepted (or nothing matched), 1 when any was refused.
    """
    from stead.cli.identity import principal_token_input

    cfg = settings()
    raw_token = principal_token_input(cfg, token, token_file)
    selection = Selection(tenant, operation, step, playbook)
    verdict: Verdict = "reject" if reject else "approve"

    ballot = None if dry_run else Ballot(principal, verdict, comment, raw_token)
    chosen, votes = with_client(
        lambda client: vote_on_matching(client, cfg, selection, ballot, concurrency)
    )
    refused = [v for v in votes if v.error is not None]
    if json_out:
        print_json(
            {
                "tenant": tenant,
                "verdict": verdict,
                "dry_run": dry_run,
                "matched": len(chosen),
                "accepted": len(votes) - len(refused),
                "refused": len(refused),
                "runs": [v.as_json() for v in votes]
                if not dry_run
                else [{"run_id": p.workflow_id, "step_id": p.step_id} for p in chosen],
            }
        )
    elif dry_run:
        for p in chosen:
            console.print(f"{p.workflow_id} {p.step_id} {p.operation}", highlight=False)
        console.print(f"{len(chosen)} waiting steps match; nothing sent (--dry-run)")
    else:
        for v in refused:
            console.print(f"refused: {v.run_id} {v.step_id}: {v.error}", highlight=False)
        console.print(
            f"{verdict}d {len(votes) - len(refused)} of {len(chosen)} waiting steps of "
            f"{tenant} as {principal}" + (f"; {len(refused)} refused" if refused else ""),
            highlight=False,
            markup=False,
        )
    if refused:
        raise typer.Exit(1)


@dataclass(frozen=True)
class Ballot:
    """The one vote every chosen step gets, and who casts it."""

    principal: str
    verdict: Verdict
    comment: str
    raw_token: str | None


async def vote_on_matching(
    client: Client,
    cfg: Settings,
    selection: Selection,
    ballot: Ballot | None,
    concurrency: int,
) -> tuple[list[PendingApproval], list[Vote]]:
    """Ask each flagged run of the tenant what waits, and vote on what matches right
    away, ``concurrency`` runs at a time; with no ``ballot`` only list what matches.

    Asking and voting back to back means a run evicted from its worker's cache replays
    once, to answer, and is still cached when its vote arrives; listing all runs first
    and voting after would replay each of thousands twice.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(handle: WorkflowHandle[Any, Any]) -> tuple[list[PendingApproval], list[Vote]]:
        async with gate:
            chosen = [
                p
                for p in await pending_of(handle)
                if p.tenant == selection.tenant and selection.matches(p)
            ]
            playbook = selection.playbook
            if chosen and playbook is not None and await planned_from(handle) != playbook:
                chosen = []
            if ballot is None:
                return chosen, []
            return chosen, [await vote(client, cfg, p, ballot) for p in chosen]

    answers = await asyncio.gather(*map(one, await flagged_runs(client, selection.tenant)))
    return [p for chosen, _ in answers for p in chosen], [v for _, votes in answers for v in votes]


async def planned_from(handle: WorkflowHandle[Any, Any]) -> str | None:
    """The playbook the run was planned from (None for an LLM plan)."""
    try:
        # A run waiting on a step has a plan: it was planned before any step.
        plan: Plan = await handle.query("plan", result_type=Plan)
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        return None
    return plan.planner.playbook


async def vote(client: Client, cfg: Settings, pending: PendingApproval, ballot: Ballot) -> Vote:
    """One run's vote through ``stead approve``'s own path; a refusal is the run's answer."""
    try:
        await send_approval(
            client,
            cfg,
            pending,
            principal=ballot.principal,
            verdict=ballot.verdict,
            comment=ballot.comment,
            raw_token=ballot.raw_token,
        )
    except SteadError as exc:
        return Vote(pending.workflow_id, pending.step_id, exc.message)
    except RPCError as exc:
        return Vote(pending.workflow_id, pending.step_id, f"Temporal: {exc.message}")
    return Vote(pending.workflow_id, pending.step_id)
