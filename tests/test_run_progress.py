"""The run's state object (workflows/run/progress.py), driven without a workflow.

Pure: a fixed clock and a votes table stand in for ``workflow.now`` and the approval
desk, so these tests need no Temporal server; the replay tests prove the workflow
around it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from stead.contracts.activities import ExecuteStepOutput, StepUsage
from stead.contracts.run import (
    ApprovalRecord,
    Plan,
    PlannerInfo,
    RunCarry,
    SettledStep,
    Spent,
    Step,
    StoredPlan,
)
from workflows.run.progress import RunProgress

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
VOTE = ApprovalRecord(approver="user:bob", verdict="approve", at=NOW)


def plan(*steps: Step, stored: StoredPlan | None = None) -> Plan:
    return Plan(
        plan_id="p",
        plan_hash="h",
        steps=steps,
        planner=PlannerInfo(kind="playbook"),
        stored=stored,
    )


def step(sid: str, *deps: str, on_failure: str = "abort") -> Step:
    return Step.model_validate(
        {"id": sid, "operation": "core.echo", "depends_on": deps, "on_failure": on_failure}
    )


def progress(carry: RunCarry | None = None) -> RunProgress:
    votes = {"b": (VOTE,)}
    return RunProgress(
        carry or RunCarry(status="planning"), clock=lambda: NOW, votes=lambda s: votes.get(s, ())
    )


def test_the_carry_round_trips_unchanged() -> None:
    carry = RunCarry(
        status="running",
        plan=plan(step("a")),
        outputs={"a": 1},
        spent=Spent(steps=1, tokens=2, usd=0.5),
        replans=1,
        continued=2,
        reasons=("why",),
        approval_authentication="token",
    )
    assert progress(carry).carry == carry


def test_a_result_keeps_its_start_and_carries_the_steps_votes() -> None:
    run = progress(RunCarry(plan=plan(step("b"))))
    b = step("b")
    run.put_result(b, "running", started_at=NOW)
    run.put_result(b, "succeeded", output="x", finished=True)
    result = run.results["b"]
    assert (result.status, result.started_at, result.finished_at) == ("succeeded", NOW, NOW)
    assert result.approvals == (VOTE,)


def test_steps_behind_a_failed_step_are_skipped_and_the_run_counts_as_failed() -> None:
    a, b, c = step("a"), step("b", "a"), step("c")
    run = progress(RunCarry(plan=plan(a, b, c)))
    assert [s.id for s in run.ready_steps()] == ["a", "c"]
    run.put_result(a, "failed", error="boom", finished=True)
    run.skip_unreachable()
    assert run.state("b") == "skipped"
    assert run.state("c") == "pending" and not run.all_done()
    assert run.aborting_failure()


def test_a_step_output_adds_the_step_and_its_reported_spend() -> None:
    run = progress(RunCarry(plan=plan(step("a")), spent=Spent(tokens=10, usd=1.0)))
    run.step_output("a", ExecuteStepOutput(output={"k": 1}, usage=StepUsage(tokens=5, usd=0.25)))
    assert run.spent == Spent(steps=1, tokens=15, usd=1.25)
    assert run.outputs == {"a": {"k": 1}}


def test_a_replan_keeps_succeeded_steps_and_returns_the_dropped_results() -> None:
    a, b = step("a"), step("b", "a")
    run = progress(RunCarry(plan=plan(a, b)))
    run.put_result(a, "succeeded", finished=True)
    run.put_result(b, "rejected", finished=True)
    dropped = run.replanned(plan(step("a"), step("c", "a")))
    assert list(dropped) == ["b"]
    assert run.plan is not None and [s.id for s in run.plan.steps] == ["a", "c"]
    assert list(run.results) == ["a"] and run.status == "running"


def test_a_stored_plan_settles_its_window_into_the_next_carry() -> None:
    a, b = step("a"), step("b", on_failure="skip")
    window = plan(a, b, stored=StoredPlan(total_steps=4, keep_outputs=("a",)))
    run = progress(RunCarry(plan=window, outputs={"a": 1, "b": 2}))
    run.put_result(a, "succeeded", finished=True)
    run.put_result(b, "failed", finished=True)
    assert run.more_windows()
    nxt = run.next_carry()
    assert nxt.continued == 1 and nxt.results == {} and nxt.outputs == {"a": 1}
    assert nxt.plan is not None and nxt.plan.steps == ()
    assert nxt.plan.stored is not None and nxt.plan.stored.window_start == 2
    assert nxt.settled is not None and nxt.settled.counts == {"succeeded": 1, "failed": 1}
    assert nxt.settled.unsuccessful == (
        SettledStep(step_id="b", operation="core.echo", status="failed"),
    )
    later = progress(nxt)
    assert later.window_to_load()
    # A step of an earlier window counts as succeeded unless it was settled otherwise.
    assert later.state("a") == "succeeded" and later.state("b") == "failed"
    assert later.whole_run_counts() == {"succeeded": 1, "failed": 1, "pending": 2}
