"""Invariant 1: today's workflow code replays every committed history without nondeterminism.

The histories in ``tests/histories/`` were recorded by ``tests/record_histories.py``
against the real stack. A change to ``workflows/`` that would break a run parked in
production (a reordered activity, a new timer, a removed signal) fails here, naming the
history. Fix it with ``workflow.patched``, or re-record only when no run of the old code
can exist (docs/workflow-changes.md says which, and how).
No services are needed: the Replayer runs the workflow code against the recorded events,
in the worker's own sandbox (``workers.main.WORKFLOW_RUNNER``), as a cache miss would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.record_histories import HISTORIES, SCENARIOS, history_workflow_id
from workers.main import WORKFLOW_RUNNER
from workflows.hello import HelloWorkflow
from workflows.run import RunWorkflow

# The behaviours the committed histories must cover; deleting one fails the suite.
REQUIRED_SCENARIOS = (
    "happy",
    "approved",
    "rejected",
    "rejected-replan",
    "approval-timeout",
    "denied",
    "step-denied",
    "plan-rejected",
    "signal-approval",
    "cancelled",
    "cancel-update",
    "cancel-proven",
    "chain",
    "stored-plan",
    "fan-out",
    "express",
    "llm-planner",
    "hello",
    "fewer-actions-approved",
    "fewer-actions-deadline",
    "fewer-actions-forged",
    "fewer-actions-chain",
    "vote-after-audit",
)
CLOSING_EVENTS = (
    "workflow_execution_completed_event_attributes",
    "workflow_execution_continued_as_new_event_attributes",
)
HISTORY_FILES = sorted(HISTORIES.glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(history_workflow_id(path), path.read_text())


def scenario_of(path: Path) -> str:
    return path.name.split(".", 1)[0]


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[p.name for p in HISTORY_FILES])
async def test_history_replays_without_nondeterminism(path: Path) -> None:
    history = load(path)
    # A truncated recording would replay "cleanly" while checking only half the run.
    first, last = (history.events[i].WhichOneof("attributes") for i in (0, -1))
    assert first == "workflow_execution_started_event_attributes", first
    assert last in CLOSING_EVENTS, (
        f"{path.name} does not end with the run completing or continuing as new; re-record it"
    )
    replayer = Replayer(
        workflows=[RunWorkflow, HelloWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


def test_every_required_scenario_has_a_recorded_history() -> None:
    recorded = {scenario_of(p) for p in HISTORY_FILES}
    missing = [s for s in REQUIRED_SCENARIOS if s not in recorded]
    assert not missing, (
        f"no history in {HISTORIES} for {missing}; run `.venv/bin/python -m tests.record_histories`"
    )
    assert set(REQUIRED_SCENARIOS) <= set(SCENARIOS), "the recorder lost a required scenario"


def test_continue_as_new_chain_is_recorded_run_by_run() -> None:
    runs = sorted(p.name for p in HISTORY_FILES if scenario_of(p) == "chain")
    assert runs == ["chain.1.json", "chain.2.json", "chain.3.json"], runs
