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

After its last round the command lists again what still waits and names every matching
step that was waiting when it started but got no vote from it (a run that could not
answer what waits, one the listing did not return): a bulk vote that skipped a run it
was asked to vote on says so and exits 1, instead of leaving the run parked unseen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from stead.cli._common import (
    console,
    err_console,
    fails_cleanly,
    is_outage,
    principal_id,
    print_json,
    settings,
    task_in_failed_state,
    tenant_id,
    with_client,
)
from stead.cli.runs import (
    ApproverToken,
    ApproverTokenFile,
    flagged_runs,
    send_approval,
)
from stead.contracts.run import PendingApproval, Plan, Verdict
from stead.errors import ApprovalRepeated, SteadError, UpdateNotTaken
from stead.settings import Settings

# A vote Temporal answered instead of the run is sent again, at most this many times in
# all, with a pause that doubles (1, 2, 4, 8 s): enough for an overloaded worker to
# catch up on a run's workflow tasks, bounded so the command ends with a report.
ATTEMPTS = 5
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 15.0


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
    """What one run answered to its vote: ``error`` is None when the update was accepted.

    ``unknown``: Temporal, not the run, answered (the run's workflow task failing or
    timing out, Temporal too slow or away), so whether the vote was recorded is not
    known; ``moved_on``: after such an answer the step no longer waited when it was
    listed again (the vote was recorded, or someone else's decided it); ``already``:
    the run refused the vote as a repeat, it holds this principal's vote on the step
    already (or is writing its audit row: a vote counts once that row is written).
    """

    run_id: str
    step_id: str
    error: str | None = None
    unknown: bool = False
    attempts: int = 1
    moved_on: bool = False
    already: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "step_id": self.step_id,
            "error": self.error,
            "unknown": self.unknown,
            "attempts": self.attempts,
            "moved_on": self.moved_on,
            "already_voted": self.already,
        }


@dataclass(frozen=True)
class Missed:
    """A matching step that waited when the command started and still waits, with no
    vote from the command: ``step_id`` is empty when the run could not say what waits."""

    run_id: str
    step_id: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step_id": self.step_id, "reason": self.reason}


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
    attempts: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="Rounds in all for votes Temporal answered instead of the run (unknown "
            "outcome); each round lists again what still waits.",
        ),
    ] = ATTEMPTS,
    token: ApproverToken = None,
    token_file: ApproverTokenFile = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Approve (or --reject) every matching waiting step of a tenant, one proven vote per run.

    A vote Temporal answered instead of the run (an overloaded worker's run whose workflow
    task timed out twice, Temporal slow) has an unknown outcome: the run is asked again
    what still waits and the vote resent, for up to --attempts rounds. Exits 0 when every
    vote was accepted or its step no longer waits (or nothing matched), 1 when any was
    refused by its run or is still unknown after the last round, or when a matching step
    that waited when the command started still waits without a vote from it (listed
    again after the last round: "missed").
    """
    from stead.cli.identity import principal_token_input

    cfg = settings()
    raw_token = principal_token_input(cfg, token, token_file)
    selection = Selection(tenant, operation, step, playbook)
    verdict: Verdict = "reject" if reject else "approve"

    ballot = None if dry_run else Ballot(principal, verdict, comment, raw_token)

    async def go(client: Client) -> tuple[list[PendingApproval], list[Vote], list[Missed]]:
        started_at = datetime.now(UTC)
        listed: set[str] = set()
        chosen, votes = await vote_on_matching(
            client, cfg, selection, ballot, concurrency, attempts, on_round=said_again,
            listed=listed,
        )  # fmt: skip
        if ballot is None:
            return chosen, votes, []
        return (
            chosen,
            votes,
            await never_voted(client, selection, votes, started_at, listed, concurrency),
        )

    chosen, votes, missed = with_client(go)
    refused = [v for v in votes if v.error is not None and not v.unknown]
    unknown = [v for v in votes if v.unknown]
    moved_on = [v for v in votes if v.moved_on]
    already = [v for v in votes if v.already]
    accepted = len(votes) - len(refused) - len(unknown) - len(moved_on) - len(already)
    if json_out:
        print_json(
            {
                "tenant": tenant,
                "verdict": verdict,
                "dry_run": dry_run,
                "matched": len(chosen),
                "accepted": accepted,
                "refused": len(refused),
                "unknown": len(unknown),
                "no_longer_waiting": len(moved_on),
                "already_voted": len(already),
                "retried": sum(v.attempts > 1 for v in votes),
                "missed": len(missed),
                "missed_runs": [m.as_json() for m in missed],
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
        for v in unknown:
            console.print(
                f"unknown after {v.attempts} attempt(s): {v.run_id} {v.step_id}: {v.error}",
                highlight=False,
            )
        for m in missed:
            console.print(
                f"missed: {m.run_id} {m.step_id or '(unknown step)'}: {m.reason}",
                highlight=False,
                markup=False,
            )
        console.print(
            f"{verdict}d {accepted} of {len(chosen)} waiting steps of {tenant} as {principal}"
            + (f"; {len(moved_on)} no longer waiting after a retry" if moved_on else "")
            + (f"; {len(already)} held its vote already" if already else "")
            + (f"; {len(refused)} refused" if refused else "")
            + (f"; {len(unknown)} unknown (list them: stead pending)" if unknown else "")
            + (
                f"; {len(missed)} waiting since before it started, never voted on" if missed else ""
            ),
            highlight=False,
            markup=False,
        )
    if refused or unknown or missed:
        raise typer.Exit(1)


def said_again(attempt: int, runs: int, pause: float) -> None:
    """One line on stderr per round that ends with unknown outcomes (stdout stays JSON)."""
    err_console.print(
        f"round {attempt}: {runs} run(s) with an unknown outcome (Temporal answered, not "
        f"the run); asking them again in {pause:.0f} s",
        highlight=False,
        markup=False,
    )


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
    attempts: int = 1,
    first_pause_s: float = FIRST_PAUSE_S,
    on_round: Callable[[int, int, float], None] | None = None,
    listed: set[str] | None = None,
) -> tuple[list[PendingApproval], list[Vote]]:
    """Ask each flagged run of the tenant what waits, and vote on what matches right
    away, ``concurrency`` runs at a time; with no ``ballot`` only list what matches.

    Asking and voting back to back means a run evicted from its worker's cache replays
    once, to answer, and is still cached when its vote arrives; listing all runs first
    and voting after would replay each of thousands twice.

    A vote whose outcome is unknown (Temporal answered, not the run) is retried, up to
    ``attempts`` rounds in all: each round first asks the run again what still waits, so
    a vote that was recorded after all is not sent twice (and if it were, the run would
    refuse a second vote by the same approver: votes are idempotent). ``on_round`` hears
    (round, runs to ask again, pause in seconds) before each pause; ``listed`` receives
    the workflow ids of the first listing (for ``never_voted``).
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(
        handle: WorkflowHandle[Any, Any],
    ) -> tuple[list[PendingApproval] | RPCError, list[Vote]]:
        async with gate:
            waiting = await asked(handle)
            if isinstance(waiting, RPCError):
                return waiting, []
            chosen = [p for p in waiting if p.tenant == selection.tenant and selection.matches(p)]
            playbook = selection.playbook
            if chosen and playbook is not None and await planned_from(handle) != playbook:
                chosen = []
            if ballot is None:
                return chosen, []
            return chosen, [await vote(client, cfg, p, ballot) for p in chosen]

    handles = await flagged_runs(client, selection.tenant)
    if listed is not None:
        listed.update(h.id for h in handles)
    chosen: dict[tuple[str, str], PendingApproval] = {}
    final: dict[tuple[str, str], Vote] = {}
    for attempt in range(1, max(attempts, 1) + 1):
        again: list[WorkflowHandle[Any, Any]] = []
        for handle, (waiting, votes) in zip(
            handles, await asyncio.gather(*map(one, handles)), strict=True
        ):
            if isinstance(waiting, RPCError):
                final[(handle.id, "")] = Vote(
                    handle.id, "", f"Temporal did not let the run answer what waits: "
                    f"{waiting.message}", unknown=True, attempts=attempt,
                )  # fmt: skip
                again.append(handle)
                continue
            final.pop((handle.id, ""), None)
            still = {(p.workflow_id, p.step_id) for p in waiting}
            for key, earlier in list(final.items()):
                if key[0] == handle.id and earlier.unknown and key not in still:
                    final[key] = replace(earlier, error=None, unknown=False, moved_on=True)
            for p in waiting:
                chosen.setdefault((p.workflow_id, p.step_id), p)
            for v in votes:
                final[(v.run_id, v.step_id)] = replace(v, attempts=attempt)
            if any(v.unknown for v in votes):
                again.append(handle)
        if ballot is None or not again or attempt == attempts:
            break
        pause = min(first_pause_s * 2 ** (attempt - 1), MAX_PAUSE_S)
        if on_round is not None:
            on_round(attempt, len(again), pause)
        await asyncio.sleep(pause)
        handles = again
    if ballot is None:
        return list(chosen.values()), []
    return list(chosen.values()), list(final.values())


async def never_voted(
    client: Client,
    selection: Selection,
    votes: list[Vote],
    started_at: datetime,
    listed: set[str],
    concurrency: int,
) -> list[Missed]:
    """List again what waits and name each matching step that waited when the command
    started yet got no vote from it.

    A step waited at the start when its own ``since`` (the run's clock, Temporal's) is
    not after ``started_at`` (this host's); one that began to wait later (the next step
    of a run just approved) was never asked about and is not named. A run whose answer
    was already reported as unknown is not named again. A run that was in the first
    listing, still waits according to Temporal's listing and cannot say on what (its
    worker down, Temporal answering for it) is named with an empty step: nobody can say
    it was voted on.
    """
    voted = {(v.run_id, v.step_id) for v in votes}
    unasked = {v.run_id for v in votes if not v.step_id}
    gate = asyncio.Semaphore(concurrency)

    async def one(handle: WorkflowHandle[Any, Any]) -> list[Missed]:
        if handle.id in unasked:
            return []
        async with gate:
            waiting = await answered(handle)
            if isinstance(waiting, Exception):
                if handle.id not in listed:
                    return []
                why = waiting.message if isinstance(waiting, RPCError) else str(waiting)
                return [Missed(handle.id, "", f"it still waits and cannot say on what: {why}")]
            chosen = [
                p
                for p in waiting
                if p.tenant == selection.tenant
                and selection.matches(p)
                and (p.workflow_id, p.step_id) not in voted
                and p.since <= started_at
            ]
            if (
                chosen
                and selection.playbook is not None
                and await planned_from(handle) != selection.playbook
            ):
                return []
            return [
                Missed(p.workflow_id, p.step_id, f"waiting since {p.since.isoformat()}, no vote")
                for p in chosen
            ]

    found = await asyncio.gather(*map(one, await flagged_runs(client, selection.tenant)))
    return [m for missed in found for m in missed]


async def answered(
    handle: WorkflowHandle[Any, Any],
) -> list[PendingApproval] | RPCError | WorkflowQueryFailedError | WorkflowQueryRejectedError:
    """The run's own list of waiting steps, or why Temporal or the run gave none."""
    try:
        waiting: list[PendingApproval] = await handle.query(
            "pending_approvals", result_type=list[PendingApproval]
        )
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
        return exc
    return waiting


async def asked(handle: WorkflowHandle[Any, Any]) -> list[PendingApproval] | RPCError:
    """The run's own list of waiting steps; none if it closed, Temporal's error if it
    would not let a run still running answer right now (its workflow task failing, no
    worker polling its queue, Temporal slow or away): ask again later."""
    waiting = await answered(handle)
    if isinstance(waiting, RPCError):
        # No poller seen (FAILED_PRECONDITION) is not "closed": whether the run still
        # runs is Temporal's to say, not its error's wording.
        if transient(waiting) or await still_running(handle):
            return waiting
        return []
    if isinstance(waiting, Exception):
        return []
    return waiting


async def still_running(handle: WorkflowHandle[Any, Any]) -> bool:
    """True unless Temporal says the run closed (or no longer knows it)."""
    try:
        described = await handle.describe()
    except RPCError as exc:
        return exc.status != RPCStatusCode.NOT_FOUND
    return described.status == WorkflowExecutionStatus.RUNNING


def transient(exc: RPCError) -> bool:
    """Temporal answered instead of the run, for a reason that passes: by status and
    error type, never by the message's wording."""
    return (
        is_outage(exc)
        or exc.status == RPCStatusCode.RESOURCE_EXHAUSTED
        or (task_in_failed_state(exc))
    )


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
    except UpdateNotTaken as exc:
        return Vote(pending.workflow_id, pending.step_id, exc.message, unknown=True)
    except ApprovalRepeated:
        return Vote(pending.workflow_id, pending.step_id, already=True)
    except SteadError as exc:
        return Vote(pending.workflow_id, pending.step_id, exc.message)
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        why = "Temporal did not answer in time; the vote may have been recorded"
        return Vote(pending.workflow_id, pending.step_id, why, unknown=True)
    except RPCError as exc:
        return Vote(
            pending.workflow_id, pending.step_id, f"Temporal: {exc.message}",
            unknown=transient(exc),
        )  # fmt: skip
    return Vote(pending.workflow_id, pending.step_id)
