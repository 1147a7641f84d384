"""``stead run | status | pending | approve | cancel | audit``: operate governed runs.

Exit codes of ``run --wait`` (and ``status``) are a contract CI pipelines rely on:
0 completed, 1 failed, 2 denied or plan rejected, 3 cancelled or timed out.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import JsonValue, ValidationError
from rich.table import Table
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError

from stead.cli._common import console, err_console, fails_cleanly, print_json, settings
from stead.contracts.run import ApprovalInput, Budget, PendingApproval, RunInput, RunRequest, RunStatus
from stead.errors import ConfigError

EXIT_CODES = {
    "completed": 0,
    "failed": 1,
    "denied": 2,
    "plan_rejected": 2,
    "cancelled": 3,
    "timed_out": 3,
}


def _client() -> tuple[Any, Client]:
    from workers.main import connect

    cfg = settings()
    return cfg, asyncio.run(connect(cfg))


def parse_inputs(pairs: list[str]) -> dict[str, JsonValue]:
    """``k=v`` pairs; ``v`` is JSON when it parses (numbers, lists), else a plain string."""
    inputs: dict[str, JsonValue] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--input {pair!r} is not key=value")
        try:
            inputs[key] = json.loads(raw)
        except json.JSONDecodeError:
            inputs[key] = raw
    return inputs


def summarize(status: RunStatus) -> dict[str, Any]:
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
                else {"outcome": s.decision.outcome, "reasons": list(s.decision.reasons), "id": s.decision.decision_id},
                "result": s.output,
                "error": s.error,
            }
            for s in status.steps
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


@fails_cleanly
def run(
    tenant: Annotated[str, typer.Option(help="Tenant the run belongs to.")],
    principal: Annotated[str, typer.Option("--as", help="Who starts it, e.g. user:alice.")],
    goal: Annotated[str | None, typer.Option(help="Free-form goal for the LLM planner.")] = None,
    playbook: Annotated[str | None, typer.Option(help="Playbook name from the playbook dir.")] = None,
    playbook_file: Annotated[Path | None, typer.Option(help="A playbook YAML file.")] = None,
    inputs: Annotated[list[str] | None, typer.Option("--input", help="Playbook input k=v (repeat).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Budget: most steps.")] = None,
    max_usd: Annotated[float | None, typer.Option(help="Budget: most dollars.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Start a governed run; prints its id, or with --wait its outcome."""
    from activities.planning import preflight

    source = None
    if playbook_file is not None:
        if not playbook_file.is_file():
            raise ConfigError(f"--playbook-file {playbook_file} does not exist")
        source = playbook_file.read_text()
    budget = Budget(
        **{k: v for k, v in {"max_steps": max_steps, "max_usd": max_usd}.items() if v is not None}
    )
    try:
        request = RunRequest(
            tenant=tenant,
            principal=principal,
            goal=goal,
            playbook=playbook,
            playbook_source=source,
            inputs=parse_inputs(inputs or []),
            budget=budget,
        )
    except ValidationError as exc:
        err_console.print(f"[bold red]invalid run request[/]: {_pydantic_errors(exc)}", highlight=False)
        raise typer.Exit(2) from None
    cfg = settings()
    try:
        preflight(request, cfg)
    except ConfigError as exc:
        err_console.print(f"[bold red]cannot start[/]: {exc.message}", highlight=False)
        raise typer.Exit(2) from None
    workflow_id = f"run-{tenant}-{uuid.uuid4().hex[:12]}"

    async def go() -> RunStatus | None:
        from workers.main import connect

        client = await connect(cfg)
        handle = await client.start_workflow(
            "stead.run", RunInput(request=request), id=workflow_id, task_queue=cfg.task_queue
        )
        if not wait:
            return None
        return await handle.result(result_type=RunStatus)

    result = asyncio.run(go())
    if result is None:
        typer.echo(workflow_id)
        return
    _print_run(result, json_out)
    raise typer.Exit(EXIT_CODES.get(result.status, 1))


@fails_cleanly
def status(
    run_id: Annotated[str, typer.Argument(help="The run (workflow) id.")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Where a run is: its plan, each step's decision and result, pending approvals."""
    _, client = _client()
    result = asyncio.run(_status(client, run_id))
    _print_run(result, json_out)


async def _status(client: Client, run_id: str) -> RunStatus:
    handle = client.get_workflow_handle(run_id)
    try:
        described = await handle.describe()
    except RPCError as exc:
        raise ConfigError(f"run {run_id} not found: {exc.message}") from None
    if described.status == WorkflowExecutionStatus.COMPLETED:
        return await handle.result(result_type=RunStatus)
    return await handle.query("status", result_type=RunStatus)


@fails_cleanly
def pending(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Steps waiting for a human, across runs (from Temporal's visibility index)."""
    _, client = _client()
    items = asyncio.run(list_pending(client, tenant))
    if json_out:
        print_json([p.model_dump(mode="json") for p in items])
        return
    table = Table(title="Pending approvals")
    for col in ("run", "step", "operation", "approvers", "requested by", "deadline"):
        table.add_column(col)
    for p in items:
        table.add_row(p.workflow_id, p.step_id, p.operation, ", ".join(p.eligible or p.approvers), p.requested_by, p.deadline.isoformat())
    console.print(table)


async def list_pending(client: Client, tenant: str | None) -> list[PendingApproval]:
    query = "SteadPendingApproval = true AND ExecutionStatus = 'Running'"
    if tenant:
        query += f" AND SteadTenant = '{_quote(tenant)}'"
    found: list[PendingApproval] = []
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            found.extend(await handle.query("pending_approvals", result_type=list[PendingApproval]))
        except RPCError:
            continue
    return found


@fails_cleanly
def approve(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    step_id: Annotated[str, typer.Argument(help="The step awaiting approval.")],
    principal: Annotated[str, typer.Option("--as", help="The approver, e.g. user:alice.")],
    reject: Annotated[bool, typer.Option(help="Reject instead of approve.")] = False,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Approve (or --reject) a pending step; refused approvals say why and change nothing."""
    _, client = _client()

    async def go() -> dict[str, Any]:
        handle = client.get_workflow_handle(run_id)
        waiting = await handle.query("pending_approvals", result_type=list[PendingApproval])
        match = [p for p in waiting if p.step_id == step_id]
        if not match:
            raise ConfigError(f"step {step_id} of {run_id} is not awaiting approval")
        approval = ApprovalInput(
            step_id=step_id,
            plan_hash=match[0].plan_hash,
            approver=principal,
            verdict="reject" if reject else "approve",
            comment=comment,
        )
        try:
            result = await handle.execute_update("approve", approval)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            raise ConfigError(f"approval refused: {getattr(cause, 'message', str(cause))}") from None
        return {"run_id": run_id, "step_id": step_id, "verdict": approval.verdict, "step": result}

    outcome = asyncio.run(go())
    if json_out:
        print_json(outcome)
    else:
        console.print(f"[green]{outcome['verdict']}d[/] step {step_id} of {run_id}")


@fails_cleanly
def cancel(run_id: Annotated[str, typer.Argument(help="The run id.")]) -> None:
    """Ask a run to stop: running steps finish, nothing new starts."""
    _, client = _client()
    asyncio.run(client.get_workflow_handle(run_id).signal("cancel"))
    console.print(f"cancel requested for {run_id}")


@fails_cleanly
def audit(
    target: Annotated[str, typer.Argument(help="A run id, or `verify` to check the hash chain.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant (verify: only this tenant).")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The audit trail of a run, or `stead audit verify` to detect tampering."""
    from stead.cli.audit import show_run_audit, verify_audit

    if target == "verify":
        ok = verify_audit(settings(), tenant, json_out)
        if not ok:
            raise typer.Exit(1)
        return
    show_run_audit(settings(), target, tenant, json_out)


def _print_run(status: RunStatus, json_out: bool) -> None:
    summary = summarize(status)
    if json_out:
        print_json(summary)
        return
    colour = {"completed": "green", "failed": "red", "denied": "red", "plan_rejected": "red"}.get(status.status, "yellow")
    console.print(f"run [bold]{status.workflow_id}[/] ({status.tenant}): [{colour}]{status.status}[/]")
    for reason in status.reasons:
        console.print(f"  reason: {reason}")
    table = Table()
    for col in ("step", "operation", "status", "decision", "detail"):
        table.add_column(col)
    for step in summary["steps"]:
        decision = step["decision"]["outcome"] if step["decision"] else ""
        detail = step["error"] or (json.dumps(step["result"])[:80] if step["result"] is not None else "")
        table.add_row(step["id"], step["operation"], step["status"], decision, detail)
    console.print(table)
    for p in status.pending_approvals:
        console.print(
            f"  waiting: step {p.step_id} needs approval from {', '.join(p.eligible or p.approvers)} "
            f"→ stead approve {p.workflow_id} {p.step_id} --as <principal>"
        )
    console.print(f"  spent: {status.spent.steps} steps, {status.spent.tokens} tokens, ${status.spent.usd:.4f}")


def _pydantic_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors())


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
