"""Plans too large for history are stored in Postgres and run window by window.

A plan over ``plan_inline_max_steps`` (20 for the worker here) is stored under its hash;
each workflow run holds one window of ``continue_as_new_after_steps`` (10) steps and
continues as new at the window's end, carrying settled counts and only the outputs
later steps refer to. The same playbook also runs inline on a worker with the default
threshold, so the tests can show what storing by reference saves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHistory

from stead.contracts.activities import (
    ExecuteStepInput,
    ExecuteStepOutput,
    ExpressStepInput,
    ExpressStepOutput,
)
from stead.contracts.run import (
    ApprovalInput,
    Budget,
    PendingApproval,
    Plan,
    RunInput,
    RunOptions,
    RunStatus,
    Step,
    StepResult,
)
from stead.db.pool import tenant_transaction
from stead.runs.plans import (
    PlanNotStored,
    execution_order,
    load_steps,
    load_window,
    outputs_needed_after,
    referenced_outputs,
)
from stead.runs.store import get_run
from stead.settings import Settings, load_settings
from stead.temporal import connect
from tests.conftest import REPO, subprocess_env
from tests.record_histories import fetch_run_chain
from tests.runs import configure_tenant, new_tenant, start_run
from workers.main import build_worker, open_resources

THRESHOLD = 20
WINDOW = 10
EVENTS_WARN_LIMIT = 10_240
# Where a run's plan enters history: with its decision.
PLAN_ACTIVITIES = ("plan.create_decided",)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Workers:
    client: Client
    inline_queue: str
    stored_queue: str
    pool: asyncpg.Pool
    settings: Settings
    playbooks: Path


@pytest_asyncio.fixture(scope="module")
async def workers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Workers]:
    """Two workers sharing one set of resources: the default threshold, and 20 steps.

    Playbooks are files in the workers' playbook dir, so the run request (carried by
    every continue-as-new) stays small for both.
    """
    playbooks = tmp_path_factory.mktemp("stored-playbooks")
    common: dict[str, Any] = {
        "_env_file": None,
        "home": stack.home,
        "policy_dir": stack.policy_dir,
        "playbook_dir": playbooks,
    }
    inline = load_settings(**common)
    stored = load_settings(**common, plan_inline_max_steps=THRESHOLD)
    client = await connect(inline)
    inline_queue, stored_queue = (f"test-{uuid.uuid4().hex[:10]}" for _ in range(2))
    async with open_resources(inline) as resources:
        low = dataclasses.replace(resources, settings=stored)
        async with (
            build_worker(client, inline_queue, resources),
            build_worker(client, stored_queue, low),
        ):
            yield Workers(client, inline_queue, stored_queue, resources.pool, stack, playbooks)


def write_playbook(w: Workers, steps: list[dict[str, Any]]) -> str:
    """A playbook file the workers load by name (JSON is YAML)."""
    name = f"p{uuid.uuid4().hex[:10]}"
    (w.playbooks / f"{name}.yaml").write_text(
        json.dumps({"name": name, "inputs": {}, "steps": steps})
    )
    return name


def echo(sid: str, value: Any, *deps: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "operation": "core.echo",
        "args": {"value": value},
        "depends_on": list(deps),
        "minutes_saved": 1.5,
        **extra,
    }


def ref(sid: str, path: str = ".value") -> dict[str, str]:
    return {"$ref": f"steps.{sid}.output{path}"}


def sixty_steps() -> list[dict[str, Any]]:
    """56 echo steps in chains of five, a failing skip step and its dependant, and two
    steps reading outputs several windows back. ``join`` is listed first though it
    depends on later steps: storing puts it after them."""
    chain: dict[int, dict[str, Any]] = {}
    for i in range(56):
        sid = f"s{i:02d}"
        chain[i] = echo(sid, i) if i % 5 == 0 else echo(sid, ref(f"s{i - 1:02d}"), f"s{i - 1:02d}")
    bad = echo("bad", ref("s12", ".missing"), "s12", on_failure="skip")
    return [
        echo("join", [ref("s00"), ref("s27"), ref("s55")], "s00", "s27", "s55"),
        *(chain[i] for i in range(15)),
        bad,
        *(chain[i] for i in range(15, 41)),
        echo("after_bad", "never", "bad"),
        *(chain[i] for i in range(41, 56)),
        echo("late", ref("s03"), "s03"),
    ]


def executed_outputs(histories: list[WorkflowHistory]) -> dict[str, Any]:
    """Each executed step's output, read from history: the ``step.run`` results (decide
    and execute in one activity) and any ``adapter.execute`` results (the regular path)."""
    scheduled: dict[int, tuple[str, str]] = {}
    outputs: dict[str, Any] = {}
    for history in histories:
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                attrs = event.activity_task_scheduled_event_attributes
                data = attrs.input.payloads[0].data if attrs.input.payloads else b""
                if attrs.activity_type.name == "adapter.execute":
                    step = ExecuteStepInput.model_validate_json(data).step
                    scheduled[event.event_id] = ("execute", step.id)
                elif attrs.activity_type.name == "step.run":
                    step = ExpressStepInput.model_validate_json(data).decide.step
                    scheduled[event.event_id] = ("fused", step.id)
            if event.HasField("activity_task_completed_event_attributes"):
                done = event.activity_task_completed_event_attributes
                if done.scheduled_event_id not in scheduled:
                    continue
                kind, step_id = scheduled.pop(done.scheduled_event_id)
                data = done.result.payloads[0].data
                if kind == "execute":
                    outputs[step_id] = ExecuteStepOutput.model_validate_json(data).output
                    continue
                fused = ExpressStepOutput.model_validate_json(data)
                if fused.executed and fused.output is not None:
                    outputs[step_id] = fused.output.output
    return outputs


def plan_bytes(history: WorkflowHistory) -> int:
    """Size of the plan activity's result: the plan as history holds it."""
    scheduled: set[int] = set()
    for event in history.events:
        attrs = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes") and (
            attrs.activity_type.name in PLAN_ACTIVITIES
        ):
            scheduled.add(event.event_id)
        if event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id in scheduled:
                return done.result.ByteSize()
    raise AssertionError("no plan activity result in the first run's history")


def largest_event(histories: list[WorkflowHistory]) -> int:
    return max(event.ByteSize() for history in histories for event in history.events)


def carried(history: WorkflowHistory) -> RunInput:
    """The input a run handed to its continue-as-new successor."""
    last = history.events[-1].workflow_execution_continued_as_new_event_attributes
    return RunInput.model_validate_json(last.input.payloads[0].data)


@dataclass(frozen=True)
class Ran:
    tenant: str
    workflow_id: str
    status: RunStatus
    histories: list[WorkflowHistory]


async def run_to_end(w: Workers, queue: str, tenant: str, name: str, steps: int) -> Ran:
    handle = await start_run(
        w.client,
        queue,
        tenant=tenant,
        principal="user:ann",
        playbook=name,
        budget=Budget(max_steps=steps),
        options=RunOptions(continue_as_new_after_steps=WINDOW),
    )
    status = await handle.result()
    assert handle.first_execution_run_id is not None
    histories = await fetch_run_chain(w.client, handle.id, handle.first_execution_run_id)
    return Ran(tenant, handle.id, status, histories)


@dataclass(frozen=True)
class Pair:
    stored: Ran
    inline: Ran


@pytest_asyncio.fixture(scope="module")
async def sixty(workers: Workers) -> Pair:
    """The same 60-step playbook run stored (threshold 20) and inline (default 500)."""
    name = write_playbook(workers, sixty_steps())
    tenant = new_tenant()
    await configure_tenant(workers.settings.opa_url, tenant, operations=["core.echo"])
    stored, inline = await asyncio.gather(
        run_to_end(workers, workers.stored_queue, tenant, name, 60),
        run_to_end(workers, workers.inline_queue, tenant, name, 60),
    )
    return Pair(stored, inline)


def expected_outputs() -> dict[str, Any]:
    outputs: dict[str, Any] = {f"s{i:02d}": {"value": i - i % 5} for i in range(56)}
    outputs["join"] = {"value": [0, 25, 55]}
    outputs["late"] = {"value": 0}
    return outputs


def test_a_stored_plan_completes_with_every_output_count_and_minute(sixty: Pair) -> None:
    status = sixty.stored.status
    assert status.status == "completed", status.reasons
    assert status.plan is not None and status.plan.stored is not None
    assert status.total_steps == 60
    assert status.step_counts == {"succeeded": 58, "failed": 1, "skipped": 1}
    assert status.spent.steps == 58
    assert executed_outputs(sixty.stored.histories) == expected_outputs()
    # The result holds the last window only, with the cross-window join in it.
    assert len(status.steps) == WINDOW
    by_id = {s.step_id: s for s in status.steps}
    assert by_id["join"].output == {"value": [0, 25, 55]}
    assert by_id["late"].output == {"value": 0}


async def test_run_record_of_a_stored_plan_counts_the_whole_run(
    sixty: Pair, workers: Workers
) -> None:
    async with tenant_transaction(workers.pool, sixty.stored.tenant) as conn:
        record = await get_run(conn, sixty.stored.workflow_id)
    assert record is not None
    assert record.status == "completed"
    assert record.minutes_saved == pytest.approx(58 * 1.5)
    assert record.summary["steps"] == {"succeeded": 58, "failed": 1, "skipped": 1}
    assert record.plan_hash == sixty.stored.status.plan.plan_hash  # type: ignore[union-attr]


def test_failure_in_one_window_skips_its_dependant_in_a_later_one(sixty: Pair) -> None:
    first = carried(sixty.stored.histories[1])
    assert first.carry is not None and first.carry.settled is not None
    assert [(s.step_id, s.status) for s in first.carry.settled.unsuccessful] == [("bad", "failed")]
    fourth = carried(sixty.stored.histories[4])
    assert fourth.carry is not None and fourth.carry.settled is not None
    assert [(s.step_id, s.status) for s in fourth.carry.settled.unsuccessful] == [
        ("bad", "failed"),
        ("after_bad", "skipped"),
    ]


def test_each_run_holds_one_window_and_carries_only_referenced_outputs(sixty: Pair) -> None:
    histories = sixty.stored.histories
    assert sixty.stored.status.continued == 5
    assert len(histories) == 6
    assert max(len(h.events) for h in histories) < EVENTS_WARN_LIMIT
    after_first = carried(histories[0])
    assert after_first.carry is not None and after_first.carry.plan is not None
    assert after_first.carry.plan.steps == ()
    # s00 and s03 feed `join` and `late` in the last window; s10 starts a new chain,
    # so no other output of the first window is carried.
    assert set(after_first.carry.outputs) == {"s00", "s03"}
    assert after_first.carry.results == {}


def test_largest_payload_stays_below_the_plan_the_inline_run_carries(sixty: Pair) -> None:
    inline = sixty.inline
    assert inline.status.status == "completed", inline.status.reasons
    assert inline.status.plan is not None and inline.status.plan.stored is None
    assert len(inline.status.steps) == 60
    assert inline.status.continued >= 5
    assert executed_outputs(inline.histories) == expected_outputs()
    whole_plan = plan_bytes(inline.histories[0])
    stored_largest = largest_event(sixty.stored.histories)
    inline_largest = largest_event(inline.histories)
    print(
        f"\nwhole plan {whole_plan} B; largest event: stored {stored_largest} B, "
        f"inline {inline_largest} B"
    )
    assert stored_largest < whole_plan <= inline_largest


async def stead_cli(settings: Settings, *args: str) -> tuple[int, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stead.cli",
        *args,
        env=subprocess_env(settings),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 0, err.decode()
    return child.returncode, out.decode()


async def test_cli_status_reports_whole_run_counts_and_the_current_window(
    sixty: Pair, workers: Workers
) -> None:
    _, out = await stead_cli(workers.settings, "status", sixty.stored.workflow_id, "--json")
    summary = json.loads(out)
    assert summary["status"] == "completed"
    assert summary["total_steps"] == 60
    assert summary["step_counts"] == {"succeeded": 58, "failed": 1, "skipped": 1}
    assert summary["window"] == {"start": 50, "steps": 10}
    assert len(summary["steps"]) == 10
    _, text = await stead_cli(workers.settings, "status", sixty.stored.workflow_id)
    assert "1 failed, 1 skipped, 58 succeeded of 60" in text
    assert "steps 51-60, the current window" in text
    _, inline = await stead_cli(workers.settings, "status", sixty.inline.workflow_id, "--json")
    assert "total_steps" not in json.loads(inline)


async def test_policy_decides_the_whole_stored_plan(workers: Workers) -> None:
    # Step 25 is in the third window; the plan is denied before anything runs.
    steps = [echo(f"e{i:02d}", i) for i in range(30)]
    steps[25] = {"id": "e25", "operation": "records.put", "args": {"key": "k", "value": {}}}
    tenant = new_tenant()
    await configure_tenant(workers.settings.opa_url, tenant, operations=["core.echo"])
    ran = await run_to_end(
        workers, workers.stored_queue, tenant, write_playbook(workers, steps), 30
    )
    assert ran.status.status == "denied"
    assert any("e25" in reason and "records.put" in reason for reason in ran.status.reasons)
    assert ran.status.plan is not None and ran.status.plan.stored is not None
    assert executed_outputs(ran.histories) == {}


async def test_approval_in_a_later_window_names_the_whole_plan_hash(workers: Workers) -> None:
    tenant = new_tenant()
    await configure_tenant(
        workers.settings.opa_url, tenant, approval_risk="low", approvers=["user:bob"]
    )
    steps = [echo(f"a{i:02d}", i) for i in range(22)]
    handle = await start_run(
        workers.client,
        workers.stored_queue,
        tenant=tenant,
        principal="user:ann",
        playbook=write_playbook(workers, steps),
        budget=Budget(max_steps=22),
        options=RunOptions(continue_as_new_after_steps=WINDOW),
    )
    hashes: dict[str, str] = {}
    result = asyncio.ensure_future(handle.result())
    while not result.done():
        waiting = await handle.query("pending_approvals", result_type=list[PendingApproval])
        for item in waiting:
            hashes[item.step_id] = item.plan_hash
            await handle.execute_update(
                "approve",
                ApprovalInput(
                    step_id=item.step_id,
                    plan_hash=item.plan_hash,
                    approver="user:bob",
                    verdict="approve",
                ),
                result_type=StepResult,
            )
        if not waiting:
            await asyncio.wait([result], timeout=0.05)
    status = result.result()
    assert status.status == "completed", status.reasons
    assert status.plan is not None and status.plan.stored is not None
    assert status.plan.stored.window_start == 20
    assert sorted(hashes) == [f"a{i:02d}" for i in range(22)]
    assert set(hashes.values()) == {status.plan.plan_hash}
    last = {s.step_id: s for s in status.steps}["a21"]
    assert last.status == "succeeded"
    assert [a.approver for a in last.approvals] == ["user:bob"]
    async with tenant_transaction(workers.pool, tenant) as conn:
        stored = await load_steps(conn, tenant=tenant, plan_hash=status.plan.plan_hash)
    assert [s.id for s in stored] == [f"a{i:02d}" for i in range(22)]


async def test_a_plan_at_the_threshold_stays_inline(workers: Workers) -> None:
    tenant = new_tenant()
    await configure_tenant(workers.settings.opa_url, tenant, operations=["core.echo"])
    steps = [echo(f"i{i:02d}", i) for i in range(THRESHOLD)]
    ran = await run_to_end(
        workers, workers.stored_queue, tenant, write_playbook(workers, steps), THRESHOLD
    )
    assert ran.status.status == "completed", ran.status.reasons
    assert ran.status.plan is not None and ran.status.plan.stored is None
    assert ran.status.total_steps is None and ran.status.step_counts == {}
    assert len(ran.status.steps) == THRESHOLD


async def test_a_stored_plan_that_would_replan_is_rejected_before_it_runs(
    workers: Workers,
) -> None:
    tenant = new_tenant()
    await configure_tenant(workers.settings.opa_url, tenant, operations=["core.echo"])
    steps = [echo(f"r{i:02d}", i) for i in range(25)]
    steps[3] = echo("r03", 3, on_failure="replan")
    ran = await run_to_end(
        workers, workers.stored_queue, tenant, write_playbook(workers, steps), 25
    )
    assert ran.status.status == "plan_rejected"
    assert any("'r03'" in r and "on_failure: replan" in r for r in ran.status.reasons)


async def test_another_tenant_cannot_read_a_stored_plan(workers: Workers) -> None:
    tenant, other = new_tenant(), new_tenant()
    await configure_tenant(workers.settings.opa_url, tenant, operations=["core.echo"])
    steps = [echo(f"t{i:02d}", i) for i in range(21)]
    ran = await run_to_end(
        workers, workers.stored_queue, tenant, write_playbook(workers, steps), 21
    )
    assert ran.status.status == "completed", ran.status.reasons
    assert ran.status.plan is not None
    plan_hash = ran.status.plan.plan_hash
    async with tenant_transaction(workers.pool, tenant) as conn:
        window = await load_window(conn, tenant=tenant, plan_hash=plan_hash, start=20, size=10)
    assert [s.id for s in window.steps] == ["t20"]
    with pytest.raises(PlanNotStored):
        async with tenant_transaction(workers.pool, other) as conn:
            await load_window(conn, tenant=other, plan_hash=plan_hash, start=0, size=10)


# ------------------------------------------------------------------ pure helpers


def _step(sid: str, *deps: str, args: dict[str, Any] | None = None) -> Step:
    return Step(id=sid, operation="core.echo", args=args or {}, depends_on=deps)


def test_execution_order_puts_dependencies_first_and_keeps_the_rest_in_place() -> None:
    steps = [_step("d", "b"), _step("a"), _step("b", "a"), _step("c")]
    assert [s.id for s in execution_order(steps)] == ["a", "b", "d", "c"]
    ordered = [_step("a"), _step("b", "a"), _step("c")]
    assert execution_order(ordered) == ordered


def test_execution_order_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        execution_order([_step("a", "b"), _step("b", "a")])


def test_outputs_needed_after_a_window_are_those_referred_to_later() -> None:
    steps = [
        _step("a"),
        _step("b", "a", args={"v": {"$ref": "steps.a.output"}}),
        _step("c"),
        _step("d", "a", "c", args={"v": [{"$ref": "steps.a.output"}, {"$ref": "steps.c.output"}]}),
    ]
    referenced = referenced_outputs(steps)
    assert referenced == {"a": (0, 3), "c": (2, 3)}
    assert outputs_needed_after(referenced, 1) == ("a",)
    assert outputs_needed_after(referenced, 3) == ("a", "c")
    assert outputs_needed_after(referenced, 4) == ()


def test_a_plan_without_stored_field_still_parses() -> None:
    raw = {"plan_id": "p", "plan_hash": "h", "steps": [], "planner": {"kind": "playbook"}}
    assert Plan.model_validate(raw).stored is None
