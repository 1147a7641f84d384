"""``stead run | status | pending | approve | cancel | audit``: operate governed runs.

Exit codes of ``run --wait`` are a contract CI pipelines rely on: 0 completed,
1 failed, 2 denied, plan rejected or refused before start (bad flags, unknown
playbook, no planner model), 3 cancelled or timed out, 4 Temporal unavailable.
The other commands exit 0 when they did what was asked (``status`` reports a failed
run with exit 0: it succeeded in reporting), 1 when they could not (unknown run,
refused approval) and 4 when Temporal did not answer.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import JsonValue, ValidationError
from rich.markup import escape
from rich.table import Table
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as TemporalTimeout
from temporalio.service import RPCError, RPCStatusCode

from stead.cli._common import (
    cli_client,
    console,
    err_console,
    fails_cleanly,
    is_outage,
    print_json,
    settings,
    task_in_failed_state,
    temporal_unavailable,
    tenant_id,
    update_not_taken,
    with_client,
)
from stead.contracts.run import (
    ApprovalInput,
    Budget,
    CancelInput,
    PendingApproval,
    RunInput,
    RunRequest,
    RunState,
    RunStatus,
    StepResult,
    Verdict,
)
from stead.contracts.search_attributes import start_search_attributes
from stead.errors import (
    ApprovalRefused,
    ApprovalRepeated,
    CancelRefused,
    ConfigError,
    TemporalUnavailable,
    UpdateNotTaken,
)
from stead.runs.actions import ActionCount, count_actions, run_histories
from stead.runs.fairness import run_priority
from stead.settings import Settings

EXIT_CODES: dict[str, int] = {
    "completed": 0,
    "failed": 1,
    "denied": 2,
    "plan_rejected": 2,
    "cancelled": 3,
    "timed_out": 3,
}
EXIT_REFUSED = 2

# How an approver proves who they are, for `stead approve` and `stead approve-all`.
ApproverToken = Annotated[
    str | None, typer.Option(help="Principal token; else --token-file, STEAD_PRINCIPAL_TOKEN.")
]
ApproverTokenFile = Annotated[Path | None, typer.Option(help="File with the principal token.")]

# A run whose workflow Temporal itself closed (terminated, timed out) never
# returned a RunStatus; its last snapshot is relabelled with what happened.
_CUT_SHORT = frozenset({RPCStatusCode.CANCELLED, RPCStatusCode.UNKNOWN})
_CLOSED_BY_TEMPORAL: dict[WorkflowExecutionStatus, RunState] = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "cancelled",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


def parse_inputs(pairs: list[str]) -> dict[str, JsonValue]:
    """``k=v`` pairs; ``v`` is JSON when it parses (numbers, lists), else a plain string."""
    inputs: dict[str, JsonValue] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--input {pair!r} is not key=value (e.g. --input key=k1)")
        try:
            inputs[key] = json.loads(raw)
        except json.JSONDecodeError:
            inputs[key] = raw
    return inputs


def summarize(status: RunStatus) -> dict[str, Any]:
    """The JSON ``stead run --wait --json`` and ``stead status --json`` print.

    A stored plan (over ``plan_inline_max_steps``) reports its current window in
    ``steps`` and the whole run in ``total_steps``, ``step_counts`` and ``window``.
    """
    summary = _summary(status)
    plan = status.plan
    if status.total_steps is not None and plan is not None and plan.stored is not None:
        summary["total_steps"] = status.total_steps
        summary["step_counts"] = dict(status.step_counts)
        summary["window"] = {
            "start": plan.stored.window_start,
            "steps": len(status.steps),
        }
    return summary


def _summary(status: RunStatus) -> dict[str, Any]:
    return {
        "run_id": status.workflow_id,
        "tenant": status.tenant,
        "status": status.status,
        "reasons": list(status.reasons),
        "steps": [
            {
                "id": s.step_id,
                "operation": s.operation,
                "status": s.status,
                "decision": None
                if s.decision is None
                else {
                    "outcome": s.decision.outcome,
                    "reasons": list(s.decision.reasons),
                    "id": s.decision.decision_id,
                },
                "result": s.output,
                "error": s.error,
            }
            for s in status.steps
        ],
        "pending_approvals": [
            {
                "step_id": p.step_id,
                "operation": p.operation,
                "approvers": list(p.eligible or p.approvers),
                "deadline": p.deadline.isoformat(),
            }
            for p in status.pending_approvals
        ],
        "cost_usd": status.spent.usd,
        "tokens": status.spent.tokens,
    }


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("status")(status)
    app.command("pending")(pending)
    app.command("approve")(approve)
    app.command("cancel")(cancel)
    app.command("audit")(audit)


def _refuse(message: str) -> NoReturn:
    """Nothing was started: say why and exit 2, the code CI reads as "refused"."""
    err_console.print(f"[bold red]cannot start[/]: {escape(message)}", highlight=False)
    raise typer.Exit(EXIT_REFUSED)


@fails_cleanly
def run(
    tenant: Annotated[str, typer.Option(help="Tenant the run belongs to.")],
    principal: Annotated[
        str | None,
        typer.Option("--as", help="Who starts it, e.g. user:alice (default: the token's)."),
    ] = None,
    goal: Annotated[str | None, typer.Option(help="Free-form goal for the LLM planner.")] = None,
    playbook: Annotated[str | None, typer.Option(help="Playbook name (playbook dir).")] = None,
    playbook_file: Annotated[Path | None, typer.Option(help="A playbook YAML file.")] = None,
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="Playbook input k=v (repeat).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Budget: most steps.")] = None,
    max_usd: Annotated[float | None, typer.Option(help="Budget: most dollars.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Your principal token (else STEAD_TOKEN_FILE, STEAD_TOKEN)."),
    ] = None,
) -> None:
    """Start a governed run; prints its id, or with --wait its outcome.

    The principal token proves who starts: it is narrowed here to this one start
    (workflow id and request) and only that copy is sent.
    """
    from adapters.registry import worker_catalog
    from stead.cli.starts import narrow_to_start, start_token_input, starter
    from stead.cli.tenant_known import tenant_exists
    from stead.planning.preflight import preflight

    cfg = settings()
    try:
        raw_token = start_token_input(cfg, token_file)
        principal = starter(cfg, tenant, principal, raw_token)
    except ConfigError as exc:
        _refuse(exc.message)
    source = None
    if playbook_file is not None:
        try:
            source = playbook_file.read_text(encoding="utf-8")
        except OSError as exc:
            _refuse(f"--playbook-file {playbook_file} cannot be read ({exc.strerror})")
    try:
        parsed_inputs = parse_inputs(inputs or [])
    except ConfigError as exc:
        _refuse(exc.message)
    limits = {"max_steps": max_steps, "max_usd": max_usd}
    try:
        request = RunRequest(
            tenant=tenant,
            principal=principal,
            goal=goal,
            playbook=playbook,
            playbook_source=source,
            inputs=parsed_inputs,
            budget=Budget(**{k: v for k, v in limits.items() if v is not None}),
        )
    except ValidationError as exc:
        _refuse(f"invalid run request: {_pydantic_errors(exc)}")
    try:
        preflight(
            request,
            cfg,
            origin=None if playbook_file is None else str(playbook_file),
            catalog=worker_catalog(cfg),
        )
    except ConfigError as exc:
        _refuse(exc.message)
    if asyncio.run(tenant_exists(cfg, tenant)) is False:
        _refuse(
            f"tenant {tenant} does not exist: neither OPA (data.stead.tenants.{tenant}) nor "
            f"the directory knows it; create it with `stead tenant create {tenant}` and "
            "give it policy data, or check the spelling"
        )
    workflow_id = f"run-{tenant}-{uuid.uuid4().hex[:12]}"
    start_token = None
    if raw_token is not None:
        try:
            start_token = narrow_to_start(cfg, raw_token, workflow_id, request)
        except ConfigError as exc:
            _refuse(exc.message)

    async def go(client: Client) -> RunStatus | None:
        await client.start_workflow(
            "stead.run",
            RunInput(request=request, start_token=start_token),
            id=workflow_id,
            task_queue=cfg.task_queue,
            result_type=RunStatus,
            # The tenant is the fairness key: its burst queues behind itself only.
            priority=run_priority(tenant, cfg.fairness_weights),
            # Set at start, not upserted by the run: one Action less per run.
            search_attributes=start_search_attributes(request),
        )
        if not wait:
            return None
        return await _wait_riding_out_outages(client, cfg, request, workflow_id)

    result = with_client(go, cfg)
    if result is None:
        typer.echo(workflow_id)
        return
    _print_run(result, json_out)
    raise typer.Exit(EXIT_CODES.get(result.status, 1))


async def _wait_riding_out_outages(
    client: Client, cfg: Settings, request: RunRequest, workflow_id: str
) -> RunStatus:
    """The run's outcome, waiting through Temporal restarts.

    The run lives in Temporal, not in this process: while the server is down or
    restarting the run is merely out of sight, so an outage is never reported as a
    failed run. We reconnect with a bounded backoff and ask again; only an outage
    longer than ``temporal_outage_timeout`` (counted from when Temporal stopped
    answering, reset by every successful reconnect) ends the wait, with exit 4.
    """
    loop = asyncio.get_running_loop()
    down_since: float | None = None
    pause = 0.2
    while True:
        handle = client.get_workflow_handle(workflow_id, result_type=RunStatus)
        try:
            final: RunStatus = await handle.result()
            return final
        except WorkflowFailureError as exc:
            return await _closed_by_temporal(client, request, workflow_id, exc)
        except RPCError as exc:
            # A restart shows as UNAVAILABLE, or as a long poll cut short (CANCELLED,
            # UNKNOWN transport error): the run itself is unaffected either way.
            if not is_outage(exc) and exc.status not in _CUT_SHORT:
                raise
            last: RPCError = exc
        down_since = down_since if down_since is not None else loop.time()
        while True:
            if loop.time() - down_since > cfg.temporal_outage_timeout:
                raise TemporalUnavailable(
                    f"{temporal_unavailable(last).message}. Run {workflow_id} may still be "
                    f"going: `stead status {workflow_id}`"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
            try:
                client = await cli_client(cfg)
            except TemporalUnavailable:
                continue
            down_since, pause = None, 0.2
            break


async def _closed_by_temporal(
    client: Client, request: RunRequest, run_id: str, exc: WorkflowFailureError
) -> RunStatus:
    """The workflow ended without returning (terminated, timed out): report its last state."""
    cause = exc.cause
    state: RunState = "failed"
    if isinstance(cause, (CancelledError, TerminatedError)):
        state = "cancelled"
    elif isinstance(cause, TemporalTimeout):
        state = "timed_out"
    reason = str(cause or exc)
    handle = client.get_workflow_handle(run_id, result_type=RunStatus)
    try:
        last: RunStatus = await handle.query("status", result_type=RunStatus)
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        return RunStatus(
            workflow_id=run_id,
            tenant=request.tenant,
            principal=request.principal,
            status=state,
            reasons=(reason,),
        )
    return last.model_copy(update={"status": state, "reasons": (*last.reasons, reason)})


@fails_cleanly
def status(
    run_id: Annotated[str, typer.Argument(help="The run (workflow) id.")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Where a run is: its plan, each step's decision and result, pending approvals.

    Exits 0 whenever it could report, whatever the run's outcome; `run --wait`
    carries the outcome exit codes.
    """
    result, actions = with_client(lambda client: _status_and_actions(client, run_id))
    _print_run(result, json_out, actions)


async def _status_and_actions(client: Client, run_id: str) -> tuple[RunStatus, ActionCount]:
    """The run's status and the Temporal Cloud Actions its histories record so far."""
    status = await _status(client, run_id)
    actions = count_actions(await run_histories(client, run_id))
    steps = status.total_steps if status.total_steps is not None else len(status.steps)
    return status, actions.with_steps(steps)


async def _status(client: Client, run_id: str) -> RunStatus:
    handle = client.get_workflow_handle(run_id, result_type=RunStatus)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if is_outage(exc):
            raise temporal_unavailable(exc) from None
        raise ConfigError(f"run {run_id} not found: {exc.message}") from None
    if described.status == WorkflowExecutionStatus.COMPLETED:
        final: RunStatus = await handle.result()
        return final
    try:
        snapshot: RunStatus = await handle.query("status", result_type=RunStatus)
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
        if isinstance(exc, RPCError) and is_outage(exc):
            raise temporal_unavailable(exc) from None
        raise ConfigError(
            f"run {run_id} did not answer the status query ({exc}); is a worker running "
            "on its task queue?"
        ) from None
    execution = described.status
    if execution is not None and execution in _CLOSED_BY_TEMPORAL:
        reasons = (*snapshot.reasons, f"workflow execution {execution.name.lower()}")
        snapshot = snapshot.model_copy(
            update={"status": _CLOSED_BY_TEMPORAL[execution], "reasons": reasons}
        )
    return snapshot


@fails_cleanly
def pending(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant.", callback=tenant_id)
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Steps waiting for a human, across runs (from Temporal's visibility index)."""
    items = with_client(lambda client: list_pending(client, tenant))
    if json_out:
        print_json([p.model_dump(mode="json") for p in items])
        return
    if not items:
        console.print("no steps are waiting for approval")
        return
    table = Table(title="Pending approvals")
    # Run ids are what an operator copies into `stead approve`: fold them, never elide.
    table.add_column("run", overflow="fold")
    for col in ("step", "operation", "approvers", "requested by", "deadline (UTC)"):
        table.add_column(col)
    for p in items:
        table.add_row(
            p.workflow_id,
            p.step_id,
            p.operation,
            ", ".join(p.eligible or p.approvers),
            p.requested_by,
            f"{p.deadline.astimezone(UTC):%Y-%m-%d %H:%M}",
        )
    console.print(table)
    for p in items:
        console.print(
            f"stead approve {p.workflow_id} {p.step_id} --as <approver>",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


async def list_pending(
    client: Client, tenant: str | None, *, concurrency: int = 16
) -> list[PendingApproval]:
    """Runs flagged in visibility, then each run's own answer (visibility lags the workflow).

    The runs are asked ``concurrency`` at a time: a run evicted from its worker's cache
    replays to answer, and thousands asked one by one would take minutes.
    """
    gate = asyncio.Semaphore(concurrency)

    async def ask(handle: WorkflowHandle[Any, Any]) -> list[PendingApproval]:
        async with gate:
            return await pending_of(handle)

    answers = await asyncio.gather(*map(ask, await flagged_runs(client, tenant)))
    return [p for waiting in answers for p in waiting]


async def flagged_runs(client: Client, tenant: str | None) -> list[WorkflowHandle[Any, Any]]:
    """Running runs whose ``SteadPendingApproval`` search attribute is set, oldest first:
    a bulk vote reaches first the runs nearest their approval deadline (visibility lists
    newest first, and SQL visibility cannot order by anything else)."""
    query = "SteadPendingApproval = true AND ExecutionStatus = 'Running'"
    if tenant:
        query += f" AND SteadTenant = '{_quote(tenant)}'"
    try:
        listed = [e async for e in client.list_workflows(query)]
    except RPCError as exc:
        if is_outage(exc):
            raise temporal_unavailable(exc) from None
        raise ConfigError(f"cannot list runs from Temporal visibility: {exc.message}") from None
    listed.sort(key=lambda e: e.start_time)
    return [client.get_workflow_handle(e.id, run_id=e.run_id) for e in listed]


async def pending_of(handle: WorkflowHandle[Any, Any]) -> list[PendingApproval]:
    """The run's own list of waiting steps; none if it closed or cannot answer."""
    try:
        waiting: list[PendingApproval] = await handle.query(
            "pending_approvals", result_type=list[PendingApproval]
        )
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        # Closed or unreachable since the listing: it is not waiting on anyone here.
        return []
    return waiting


@fails_cleanly
def approve(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    step_id: Annotated[str, typer.Argument(help="The step awaiting approval.")],
    principal: Annotated[str, typer.Option("--as", help="The approver, e.g. user:alice.")],
    reject: Annotated[bool, typer.Option(help="Reject instead of approve.")] = False,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    token: ApproverToken = None,
    token_file: ApproverTokenFile = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Approve (or --reject) a pending step; refused approvals say why and change nothing."""
    from stead.cli.identity import principal_token_input

    cfg = settings()
    raw_token = principal_token_input(cfg, token, token_file)

    async def go(client: Client) -> dict[str, Any]:
        return await submit_approval(
            client,
            cfg,
            run_id=run_id,
            step_id=step_id,
            principal=principal,
            verdict="reject" if reject else "approve",
            comment=comment,
            raw_token=raw_token,
        )

    outcome = with_client(go, cfg)
    if json_out:
        print_json(outcome)
    else:
        console.print(f"[green]{outcome['verdict']}d[/] step {step_id} of {run_id}")


async def submit_approval(
    client: Client,
    cfg: Settings,
    *,
    run_id: str,
    step_id: str,
    principal: str,
    verdict: Verdict,
    comment: str,
    raw_token: str | None,
) -> dict[str, Any]:
    """What ``stead approve`` and the MCP ``approve`` tool send: the step must be waiting,
    and the principal token (if any) is narrowed to this one approval before it is sent."""
    handle = client.get_workflow_handle(run_id)
    try:
        waiting: list[PendingApproval] = await handle.query(
            "pending_approvals", result_type=list[PendingApproval]
        )
    except RPCError as exc:
        if is_outage(exc):
            raise temporal_unavailable(exc) from None
        if task_in_failed_state(exc):
            raise UpdateNotTaken(update_not_taken(run_id, "approval")) from None
        raise ConfigError(f"cannot reach run {run_id}: {exc.message}") from None
    match = [p for p in waiting if p.step_id == step_id]
    if not match:
        raise ConfigError(f"step {step_id} of {run_id} is not awaiting approval")
    return await send_approval(
        client,
        cfg,
        match[0],
        principal=principal,
        verdict=verdict,
        comment=comment,
        raw_token=raw_token,
    )


async def send_approval(
    client: Client,
    cfg: Settings,
    pending: PendingApproval,
    *,
    principal: str,
    verdict: Verdict,
    comment: str,
    raw_token: str | None,
) -> dict[str, Any]:
    """One vote on one waiting step, through the ``approve`` update (its validator and
    handler check the approver, the plan hash and the token, and audit a refusal)."""
    from stead.cli.identity import approval_token

    run_id, step_id = pending.workflow_id, pending.step_id
    # Scoped to this one approval: the copy that lands in history approves nothing else.
    scoped = None
    if raw_token is not None:
        scoped = approval_token(
            cfg,
            raw_token,
            run_id=run_id,
            step_id=step_id,
            plan_hash=pending.plan_hash,
            verdict=verdict,
        )
    try:
        approval = ApprovalInput(
            step_id=step_id,
            plan_hash=pending.plan_hash,
            approver=principal,
            verdict=verdict,
            comment=comment,
            token=scoped,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid approval: {_pydantic_errors(exc)}") from None
    handle = client.get_workflow_handle(run_id)
    try:
        result = await handle.execute_update("approve", approval, result_type=StepResult)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        # One line, whether the validator or the handler refused (both audit it).
        reason = " ".join(str(getattr(cause, "message", None) or cause).split())
        if getattr(cause, "type", None) == "ApprovalRepeated":
            raise ApprovalRepeated(f"approval refused: {reason}") from None
        raise ApprovalRefused(f"approval refused: {reason}") from None
    except RPCError as exc:
        if task_in_failed_state(exc):
            raise UpdateNotTaken(update_not_taken(run_id, "approval")) from None
        raise
    return {
        "run_id": run_id,
        "step_id": step_id,
        "verdict": approval.verdict,
        "step": result.model_dump(mode="json"),
    }


@fails_cleanly
def cancel(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    principal: Annotated[str, typer.Option("--as", help="Who cancels, e.g. user:alice.")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit and the run.")] = "",
    token_file: Annotated[
        Path | None,
        typer.Option(help="Your principal token (else STEAD_TOKEN_FILE, STEAD_TOKEN)."),
    ] = None,
) -> None:
    """Ask a run to stop: running steps finish, nothing new starts.

    Attributed like an approval: the run audits ``cancel_requested`` with who asked
    and why, and its ``run_finished`` record carries both. With a principal token it
    is proven: the token is narrowed to this run and this reason before it is sent,
    and a tenant whose approvals need tokens refuses a cancel without one.
    """
    from stead.cli.identity import cancel_token
    from stead.cli.starts import start_token_input

    cfg = settings()
    raw = start_token_input(cfg, token_file)
    token = None if raw is None else cancel_token(cfg, raw, run_id=run_id, reason=reason)
    try:
        payload = CancelInput(requested_by=principal, reason=reason, token=token)
    except ValidationError as exc:
        raise ConfigError(f"invalid cancel: {_pydantic_errors(exc)}") from None

    async def go(client: Client) -> None:
        try:
            await client.get_workflow_handle(run_id).execute_update("cancel", payload)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            why = " ".join(str(getattr(cause, "message", None) or cause).split())
            raise CancelRefused(f"cancel refused, the run keeps going: {why}") from None

    try:
        with_client(go, cfg)
    except RPCError as exc:
        if is_outage(exc):
            raise temporal_unavailable(exc) from None
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConfigError(f"run {run_id} is not running (unknown or finished)") from None
        if task_in_failed_state(exc):
            raise UpdateNotTaken(update_not_taken(run_id, "cancel")) from None
        raise ConfigError(f"cannot cancel {run_id}: {exc.message}") from None
    proof = "proven by token" if token else "claimed"
    console.print(
        f"cancel requested for {run_id} by {escape(principal)} ({proof})", highlight=False
    )


@fails_cleanly
def audit(
    target: Annotated[str, typer.Argument(help="A run id, or `verify` to check the hash chain.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant (verify: only this tenant).")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The audit trail of a run, or `stead audit verify` to detect tampering (exit 1)."""
    from stead.cli.audit import show_run_audit, verify_audit

    if target == "verify":
        ok = verify_audit(settings(), tenant, json_out)
        if not ok:
            raise typer.Exit(1)
        return
    show_run_audit(settings(), target, tenant, json_out)


def _print_run(status: RunStatus, json_out: bool, actions: ActionCount | None = None) -> None:
    summary = summarize(status)
    if actions is not None:
        # What a Temporal Cloud user pays for this run (stead.runs.actions).
        summary["temporal_actions"] = actions.summary()
    if json_out:
        print_json(summary)
        return
    colour = {"completed": "green", "failed": "red", "denied": "red", "plan_rejected": "red"}.get(
        status.status, "yellow"
    )
    console.print(
        f"run [bold]{status.workflow_id}[/] ({status.tenant}): [{colour}]{status.status}[/]"
    )
    for reason in status.reasons:
        console.print(f"  reason: {escape(reason)}")
    window = summary.get("window")
    if window is not None:
        counts = ", ".join(f"{n:,} {state}" for state, n in sorted(summary["step_counts"].items()))
        first = window["start"] + 1
        console.print(
            f"  steps: {counts} of {summary['total_steps']:,} (stored plan; below, steps "
            f"{first:,}-{window['start'] + window['steps']:,}, the current window)",
            highlight=False,
            soft_wrap=True,
        )
    table = Table()
    for col in ("step", "operation", "status", "decision", "detail"):
        table.add_column(col)
    for step in summary["steps"]:
        decision = step["decision"]["outcome"] if step["decision"] else ""
        result = step["result"]
        detail = step["error"] or (json.dumps(result)[:80] if result is not None else "")
        table.add_row(step["id"], step["operation"], step["status"], decision, escape(detail))
    console.print(table)
    for p in status.pending_approvals:
        console.print(
            f"  waiting: step {p.step_id} needs approval from "
            f"{', '.join(p.eligible or p.approvers)} "
            f"→ stead approve {p.workflow_id} {p.step_id} --as <principal>",
            soft_wrap=True,
            markup=False,
        )
    spent = status.spent
    console.print(f"  spent: {spent.steps} steps, {spent.tokens} tokens, ${spent.usd:.4f}")
    if actions is not None:
        per = actions.per_step
        console.print(
            f"  Temporal Actions: {actions.total}"
            + ("" if per is None else f" ({per:.2f} per step)"),
            highlight=False,
        )


def _pydantic_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors()
    )


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
