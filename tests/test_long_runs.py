"""A long plan finishes through continue-as-new with every run's history kept small.

Temporal warns at 10,240 events per run and kills runs far beyond; the run workflow
continues as new every ``continue_as_new_after_steps`` steps (default 200), carrying
its state whole. Outputs must survive that hand-over: late steps read outputs of steps
that ran two runs earlier.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.client import WorkflowHistory

from stead.contracts.activities import DecideStepInput, ExecuteStepInput, ExpressStepInput
from stead.contracts.run import Budget, RunOptions, RunStatus
from tests.conftest import WorkerHandle
from tests.record_histories import fetch_run_chain
from tests.runs import configure_tenant, new_tenant, playbook, start_run

STEPS = 500
CHAIN_LENGTH = 5  # every fifth step starts a fresh chain; the others read their predecessor
EVENTS_WARN_LIMIT = 10_240

pytestmark = pytest.mark.slow


def scheduled_per_step(histories: list[WorkflowHistory]) -> Counter[tuple[str, str]]:
    """How often each (activity, step id) was scheduled, read from the recorded inputs.

    ``step.run`` decides and executes in one activity; ``policy.decide_step`` and
    ``adapter.execute`` are the regular path's two.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for history in histories:
        for event in history.events:
            if not event.HasField("activity_task_scheduled_event_attributes"):
                continue
            attrs = event.activity_task_scheduled_event_attributes
            name, data = attrs.activity_type.name, attrs.input.payloads[0].data
            if name == "step.run":
                step = ExpressStepInput.model_validate_json(data).decide.step
            elif name == "policy.decide_step":
                step = DecideStepInput.model_validate_json(data).step
            elif name == "adapter.execute":
                step = ExecuteStepInput.model_validate_json(data).step
            else:
                continue
            counts[(name, step.id)] += 1
    return counts


def long_plan() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for i in range(STEPS - 1):
        if i % CHAIN_LENGTH == 0:
            steps.append({"id": f"s{i:03d}", "operation": "core.echo", "args": {"value": i}})
        else:
            steps.append(
                {
                    "id": f"s{i:03d}",
                    "operation": "core.echo",
                    "args": {"value": {"$ref": f"steps.s{i - 1:03d}.output.value"}},
                    "depends_on": [f"s{i - 1:03d}"],
                }
            )
    # The last step joins its chain with steps that ran in the first and middle runs.
    join = ("s498", "s000", "s250")
    steps.append(
        {
            "id": f"s{STEPS - 1:03d}",
            "operation": "core.echo",
            "args": {"value": [{"$ref": f"steps.{sid}.output.value"} for sid in join]},
            "depends_on": list(join),
        }
    )
    return steps


@dataclass(frozen=True)
class LongRun:
    status: RunStatus
    histories: list[WorkflowHistory]
    seconds: float


@pytest.fixture(scope="module")
async def long_run(worker: WorkerHandle) -> LongRun:
    """One 500-step run shared by the tests below (it takes tens of seconds)."""
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, operations=["core.echo"])
    began = time.monotonic()
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(*long_plan()),
        budget=Budget(max_steps=STEPS),
        # continue_as_new_after_steps stays at its default (200). Express reads stay off:
        # the exactly-once check below counts the regular decide and execute activities.
        options=RunOptions(express_reads=False),
    )
    status = await handle.result()
    seconds = time.monotonic() - began
    assert handle.first_execution_run_id is not None
    histories = await fetch_run_chain(worker.client, handle.id, handle.first_execution_run_id)
    sizes = [len(history.events) for history in histories]
    print(f"\n{STEPS} steps: {status.status} in {seconds:.1f} s; events per run {sizes}")
    return LongRun(status, histories, seconds)


def test_500_step_plan_completes_through_continue_as_new(long_run: LongRun) -> None:
    status = long_run.status
    assert status.status == "completed", status.reasons
    assert status.continued >= 2
    assert len(status.steps) == STEPS
    assert [s.step_id for s in status.steps if s.status != "succeeded"] == []
    assert status.spent.steps == STEPS
    # Outputs of steps from the first and second runs reached the third.
    assert status.steps[-1].output == {"value": [495, 0, 250]}


def test_every_run_of_the_chain_stays_below_the_history_warning(long_run: LongRun) -> None:
    sizes = [len(history.events) for history in long_run.histories]
    assert len(sizes) == long_run.status.continued + 1
    assert max(sizes) < EVENTS_WARN_LIMIT, sizes


def test_each_step_is_decided_once_and_executed_once(long_run: LongRun) -> None:
    # A step started twice double-counts its budget and asks OPA again for a step
    # already decided; the effect ledger only hides the second execution.
    scheduled = scheduled_per_step(long_run.histories)
    twice = sorted(key for key, n in scheduled.items() if n > 1)
    assert twice == [], f"{len(twice)} (activity, step) pairs scheduled more than once: {twice[:6]}"
    assert {step for _, step in scheduled} == {step["id"] for step in long_plan()}
    assert all(name == "step.run" for name, _ in scheduled)
