"""``stead upgrade``: roll out a new worker build without breaking a parked run.

``check`` replays the open runs against the code installed here (run it from the new
build), ``promote`` makes a build current, ``status`` shows which builds Temporal knows
and which can be stopped. The README's "Upgrading workers" section walks through it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from temporalio.client import Client

from stead.cli._common import console, fails_cleanly, print_json, settings, with_client
from stead.temporal.replay_check import ReplayReport, replay_runs
from stead.temporal.versioning import DeploymentState, Promotion, describe, promote

app = typer.Typer(help="Upgrade workers safely: replay open runs, promote a build.")

EXIT_WOULD_BREAK = 1
DeploymentOption = Annotated[
    str | None,
    typer.Option("--deployment", help="Worker deployment (default STEAD_WORKER_DEPLOYMENT)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for CI).")]


@app.command()
@fails_cleanly
def check(
    task_queue: Annotated[
        str | None,
        typer.Option("--task-queue", help="Runs on this queue (default STEAD_TASK_QUEUE)."),
    ] = None,
    closed_hours: Annotated[
        float,
        typer.Option("--closed-hours", min=0, help="Also replay runs closed in the last N hours."),
    ] = 0,
    json_out: JsonOption = False,
) -> None:
    """Replay the open runs against the code installed here; exit 1 if any would break.

    Each run that would fail on this code (nondeterminism) is named with the reason.
    """
    # The worker's own list and the package it comes from: run this from the new build.
    import workflows
    from workers.main import WORKFLOW_RUNNER
    from workers.registered import WORKFLOWS

    # Replaying a breaking run makes the SDK core log "Failing workflow task"; the
    # report below says the same per run, so keep stderr for real errors.
    logging.getLogger("temporalio.core").setLevel(logging.ERROR)
    cfg = settings()
    queue = task_queue or cfg.task_queue
    closed = timedelta(hours=closed_hours) if closed_hours else None

    async def go(client: Client) -> ReplayReport:
        return await replay_runs(
            client, WORKFLOWS, task_queue=queue, closed_within=closed,
            workflow_runner=WORKFLOW_RUNNER,
        )  # fmt: skip

    report = with_client(go, cfg)
    code = str(Path(workflows.__file__).resolve().parent)
    if json_out:
        print_json(_report_json(report, code))
    else:
        _print_report(report, code)
    if report.broken:
        raise typer.Exit(EXIT_WOULD_BREAK)


def _report_json(report: ReplayReport, code: str) -> dict[str, Any]:
    return {
        "namespace": report.namespace,
        "task_queue": report.task_queue,
        "workflows": code,
        "checked": len(report.runs),
        "ok": len(report.runs) - len(report.broken),
        "broken": len(report.broken),
        "runs": [
            {**asdict(run), "verdict": "breaks" if run.breaks else "ok"} for run in report.runs
        ],
    }


def _print_report(report: ReplayReport, code: str) -> None:
    for run in report.runs:
        if run.breaks:
            _say(f"BREAKS  {run.workflow_id} ({run.workflow_type}, {run.status}): {run.failure}")
        else:
            _say(f"ok      {run.workflow_id} ({run.workflow_type}, {run.status})")
    checked, broken = len(report.runs), len(report.broken)
    where = f"task queue {report.task_queue!r} of namespace {report.namespace!r}"
    _say(
        f"{checked} run(s) on {where} replayed against {code}: "
        f"{checked - broken} ok, {broken} would break"
    )
    if broken:
        _say(
            "do not deploy this code: put the change behind workflow.patched "
            "(docs/workflow-changes.md), or let those runs finish first"
        )


@app.command("promote")
@fails_cleanly
def promote_(
    build_id: Annotated[str, typer.Option("--build-id", help="The build to make current.")],
    deployment: DeploymentOption = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait", min=0, help="Seconds to wait for the build's workers to start polling."
        ),
    ] = 30.0,
    json_out: JsonOption = False,
) -> None:
    """Make a build current: new runs start on it, open runs move to it.

    Open runs move at their next workflow task; run `stead upgrade check` from the
    build first.
    """
    cfg = settings()
    name = deployment or cfg.worker_deployment

    async def go(client: Client) -> Promotion:
        return await promote(client, name, build_id, wait_seconds=wait)

    done = with_client(go, cfg)
    if json_out:
        print_json(asdict(done))
        return
    was = f" (was {done.previous_build_id!r})" if done.previous_build_id else ""
    _say(f"worker deployment {done.deployment!r}: build {done.build_id!r} is current{was}")


@app.command()
@fails_cleanly
def status(
    deployment: DeploymentOption = None,
    json_out: JsonOption = False,
) -> None:
    """The current build and every build Temporal knows; a drained one can be stopped."""
    cfg = settings()
    name = deployment or cfg.worker_deployment

    async def go(client: Client) -> DeploymentState:
        return await describe(client, name)

    state = with_client(go, cfg)
    if json_out:
        print_json(asdict(state))
        return
    _say(
        f"worker deployment {state.deployment!r}: current build "
        f"{state.current_build_id or '(none: unversioned workers)'}"
        + (f", ramping {state.ramping_build_id}" if state.ramping_build_id else "")
    )
    for build in state.builds:
        _say(f"  {build.build_id}  {build.status}")


def _say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)
