"""Would the code installed here break a run that is open on the cluster? Replay and see.

Before a new build becomes current, every open run will be replayed on it at its next
workflow task (runs auto-upgrade, stead/temporal/versioning.py). This fetches the
histories of those runs (and, if asked, of runs closed recently, which queries and
resets still replay) and runs them through Temporal's ``Replayer`` with the workflow
classes given, which are the ones the worker of this code registers. A nondeterminism
error here is the one the run would hit in production, found before the deploy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

# Visibility page size and history fetches in flight; a namespace with thousands of
# parked runs is checked in one pass without holding every history at once.
_PAGE = 100


@dataclass(frozen=True)
class RunReplay:
    """One run's verdict: ``failure`` is None when today's code replays it cleanly."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    failure: str | None

    @property
    def breaks(self) -> bool:
        return self.failure is not None


@dataclass(frozen=True)
class ReplayReport:
    namespace: str
    task_queue: str
    query: str
    runs: tuple[RunReplay, ...]

    @property
    def broken(self) -> tuple[RunReplay, ...]:
        return tuple(run for run in self.runs if run.breaks)


def workflow_types(workflows: Sequence[type]) -> tuple[str, ...]:
    """The registered names (``stead.run``…) of the workflow classes a worker runs."""
    names = (workflow._Definition.must_from_class(cls).name for cls in workflows)
    return tuple(name for name in names if name is not None)  # None: a dynamic workflow


def runs_query(task_queue: str, types: Sequence[str], closed_since: datetime | None = None) -> str:
    """Visibility query for the open runs of these types on the queue (and those closed
    since ``closed_since``)."""
    for value in (task_queue, *types):
        if "'" in value or "\\" in value:
            raise ValueError(f"{value!r}: a task queue or workflow type with a quote")
    names = ", ".join(f"'{name}'" for name in types)
    status = "ExecutionStatus = 'Running'"
    if closed_since is not None:
        since = closed_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = f"({status} OR CloseTime > '{since}')"
    return f"TaskQueue = '{task_queue}' AND WorkflowType IN ({names}) AND {status}"


async def replay_runs(
    client: Client,
    workflows: Sequence[type],
    *,
    task_queue: str,
    closed_within: timedelta | None = None,
    workflow_runner: WorkflowRunner | None = None,
) -> ReplayReport:
    """Replay every open run of ``workflows`` on ``task_queue`` with these classes.

    ``workflow_runner`` is the sandbox to replay in: the worker's own (``stead upgrade
    check`` passes it) replays exactly as the worker would, and each run's sandbox costs
    a third less CPU than the SDK's default; None is the SDK's default sandbox."""
    closed_since = datetime.now(UTC) - closed_within if closed_within else None
    query = runs_query(task_queue, workflow_types(workflows), closed_since)
    statuses: dict[tuple[str, str], str] = {}

    async def histories() -> AsyncIterator[WorkflowHistory]:
        async for execution in client.list_workflows(query, page_size=_PAGE):
            status = execution.status.name.lower() if execution.status else "unknown"
            statuses[(execution.id, execution.run_id)] = status
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            yield await handle.fetch_history()

    # The client's converter: with STEAD_CODEC_KEYRING set, payloads are encrypted
    # and the replayer must decrypt a run's input exactly as the worker would.
    # The client's runtime too: the CLI's forwards the SDK core's log lines (a replayed
    # nondeterminism is logged as a warning) to Python logging instead of stdout.
    replayer = Replayer(
        workflows=workflows,
        data_converter=client.data_converter,
        runtime=client.service_client.config.runtime,
        workflow_runner=workflow_runner or SandboxedWorkflowRunner(),
    )
    verdicts = []
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            history = result.history
            verdicts.append(
                RunReplay(
                    workflow_id=history.workflow_id,
                    run_id=history.run_id,
                    workflow_type=_type_of(history),
                    status=statuses.get((history.workflow_id, history.run_id), "unknown"),
                    failure=_reason(result.replay_failure),
                )
            )
    return ReplayReport(
        namespace=client.namespace, task_queue=task_queue, query=query, runs=tuple(verdicts)
    )


def _type_of(history: WorkflowHistory) -> str:
    started = history.events[0].workflow_execution_started_event_attributes
    return started.workflow_type.name


def _reason(failure: Exception | None) -> str | None:
    """The SDK's failure without the Rust-side wrapping: ``[TMPRL1100] Nondeterminism
    error: …`` is what names the command that no longer matches."""
    if failure is None:
        return None
    text = " ".join(str(failure).split()) or type(failure).__name__
    start = text.find("[TMPRL")
    if start < 0:
        return text
    end = text.find('"', start)  # the message ends where core's debug dump of it goes on
    return text[start:end] if end > 0 else text[start:]
