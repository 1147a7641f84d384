"""Safe upgrades with Worker Versioning, on the real stack.

A rolling upgrade (build B started beside A, made current, A stopped) must not strand a
run parked on an approval: it moves to B and completes there. A workflow change that
would break such a run must be caught by ``stead upgrade check`` before the deploy: the
check replays the cluster's open runs against the code it is run from, here a copy of
``workflows/`` with a deliberate nondeterministic change, first on the import path.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from stead.contracts.run import ApprovalInput, RunStatus
from stead.devstack.ports import LOOPBACK, free_port
from stead.errors import ConfigError, DeploymentNotReady
from stead.settings import Settings, load_settings
from stead.temporal import connect
from stead.temporal.replay_check import replay_runs, runs_query
from stead.temporal.versioning import RUN_VERSIONING, deployment_config, describe, promote
from tests.conftest import REPO, WorkerHandle, subprocess_env
from tests.runs import (
    POLL_INTERVAL,
    POLL_SECONDS,
    configure_tenant,
    new_tenant,
    playbook,
    start_run,
    wait_pending,
)
from tests.workers import start_worker, stop_worker, worker_process
from workers.registered import WORKFLOWS

PUT = playbook({"id": "put", "operation": "records.put", "args": {"key": "a", "value": {}}})
# A timer before the run's first command: every recorded run now disagrees with the
# code at its first workflow task, the way a reordered activity would.
RUN_METHOD = re.compile(r"(    async def run\(self, inp: RunInput\) -> RunStatus:\n)")
NONDETERMINISTIC = r"\1        await workflow.sleep(1)\n"
EXIT_TEMPORAL_UNAVAILABLE = 4


async def stead(
    settings: Settings, *args: str, cwd: Path = REPO, **env: str
) -> tuple[int, str, str]:
    """``stead <args>`` as a CI step runs it: its own process, importing from ``cwd`` first."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stead.cli",
        *args,
        env=subprocess_env(settings, PYTHONPATH=str(cwd), **env),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=120)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def parked_run(
    client: Client, settings: Settings, task_queue: str
) -> WorkflowHandle[Any, RunStatus]:
    """A run waiting for user:bob's approval of its one step, listed in visibility."""
    tenant = new_tenant()
    await configure_tenant(settings.opa_url, tenant, approval_risk="low", approvers=["user:bob"])
    handle = await start_run(
        client, task_queue, tenant=tenant, principal="user:ann", playbook_source=PUT
    )
    await wait_pending(handle, "put")
    await wait_listed(client, handle.id)
    return handle


async def wait_listed(client: Client, workflow_id: str, also: str = "") -> None:
    """Visibility lags the run a little; the check lists runs from it (bounded polling)."""
    query = f"WorkflowId = '{workflow_id}'" + (f" AND {also}" if also else "")
    for _ in range(int(POLL_SECONDS / POLL_INTERVAL)):
        async for _found in client.list_workflows(query):
            return
        await asyncio.sleep(POLL_INTERVAL)
    raise AssertionError(f"{workflow_id} never became visible")


def own_queue_and_deployment() -> tuple[str, str]:
    """A task queue and a Worker Deployment no other test uses."""
    tag = uuid.uuid4().hex[:8]
    return f"upgrade-{tag}", f"stead-{tag}"


async def build_of(handle: WorkflowHandle[Any, RunStatus]) -> str:
    described = await handle.describe()
    info = described.raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id


async def approve(handle: WorkflowHandle[Any, RunStatus]) -> RunStatus:
    pending = await wait_pending(handle, "put")
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id="put", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
        ),
    )
    return await handle.result()


async def test_run_parked_on_build_a_completes_on_build_b_after_a_rolling_upgrade(
    stack: Settings,
) -> None:
    task_queue, deployment = own_queue_and_deployment()
    client = await connect(stack)
    first = start_worker(
        stack, task_queue, STEAD_WORKER_DEPLOYMENT=deployment, STEAD_WORKER_BUILD_ID="a"
    )
    try:
        # A versioned build gets no task until it is current: promote A, as a first deploy.
        await promote(client, deployment, "a", wait_seconds=POLL_SECONDS)
        handle = await parked_run(client, stack, task_queue)
        assert await build_of(handle) == "a"

        with worker_process(
            stack, task_queue, STEAD_WORKER_DEPLOYMENT=deployment, STEAD_WORKER_BUILD_ID="b"
        ):
            code, out, err = await stead(
                stack, "upgrade", "check", "--task-queue", task_queue, "--json"
            )
            assert code == 0, (out, err)
            assert [r["workflow_id"] for r in json.loads(out)["runs"]] == [handle.id]

            code, out, err = await stead(
                stack,
                "upgrade",
                "promote",
                "--build-id",
                "b",
                "--wait",
                str(POLL_SECONDS),
                STEAD_WORKER_DEPLOYMENT=deployment,
            )
            assert code == 0, err
            assert f"worker deployment '{deployment}': build 'b' is current (was 'a')" in out
            stop_worker(first)

            status = await approve(handle)
            assert status.status == "completed", status.reasons
            assert await build_of(handle) == "b"
            state = await describe(client, deployment)
            assert state.current_build_id == "b"
            assert {b.build_id for b in state.builds} == {"a", "b"}
            code, out, err = await stead(
                stack, "upgrade", "status", "--json", STEAD_WORKER_DEPLOYMENT=deployment
            )
            assert code == 0, err
            shown = json.loads(out)
            assert (shown["deployment"], shown["current_build_id"]) == (deployment, "b")
            assert {b["build_id"]: b["status"] for b in shown["builds"]}["b"] == "current"
    finally:
        stop_worker(first)


async def test_first_versioned_deploy_takes_over_runs_parked_on_unversioned_workers(
    stack: Settings,
) -> None:
    """Turning versioning on for a running system: the parked run needs no old worker."""
    task_queue, deployment = own_queue_and_deployment()
    client = await connect(stack)
    unversioned = start_worker(stack, task_queue)
    try:
        handle = await parked_run(client, stack, task_queue)
        assert await build_of(handle) == ""
        with worker_process(
            stack, task_queue, STEAD_WORKER_DEPLOYMENT=deployment, STEAD_WORKER_BUILD_ID="a"
        ):
            await promote(client, deployment, "a", wait_seconds=POLL_SECONDS)
            stop_worker(unversioned)
            status = await approve(handle)
            assert status.status == "completed", status.reasons
            assert await build_of(handle) == "a"
    finally:
        stop_worker(unversioned)


async def test_incompatible_change_is_caught_by_upgrade_check_before_deploy(
    worker: WorkerHandle, tmp_path: Path
) -> None:
    handle = await parked_run(worker.client, worker.settings, worker.task_queue)
    candidate = tmp_path / "candidate"
    shutil.copytree(
        REPO / "workflows", candidate / "workflows", ignore=shutil.ignore_patterns("__pycache__")
    )
    entry = candidate / "workflows" / "run" / "run_workflow.py"
    changed, found = RUN_METHOD.subn(NONDETERMINISTIC, entry.read_text())
    assert found == 1, f"RunWorkflow.run's signature moved; update RUN_METHOD for {entry}"
    entry.write_text(changed)
    check = ("upgrade", "check", "--task-queue", worker.task_queue)

    code, out, err = await stead(worker.settings, *check, "--json", cwd=candidate)
    assert code == 1, (out, err)
    report = json.loads(out)
    assert report["workflows"] == str(candidate / "workflows")
    assert (report["checked"], report["broken"]) == (1, 1)
    [run] = report["runs"]
    assert (run["workflow_id"], run["verdict"], run["status"]) == (handle.id, "breaks", "running")
    assert "Nondeterminism" in run["failure"], run["failure"]

    code, out, err = await stead(worker.settings, *check, cwd=candidate)
    assert code == 1
    assert f"BREAKS  {handle.id} (stead.run, running): [TMPRL1100] Nondeterminism" in out
    # The reason is Temporal's own (which event or patch marker no longer matches; that
    # depends on what else the history holds), one line without the event dump; then the
    # summary and the advice.
    assert "force_cause" not in out and len(out.splitlines()) == 3, out
    assert "Failing workflow task" not in err
    assert "1 run(s) on task queue" in out and "0 ok, 1 would break" in out

    code, out, err = await stead(worker.settings, *check)
    assert code == 0, (out, err)
    assert f"ok      {handle.id} (stead.run, running)" in out
    assert "1 ok, 0 would break" in out

    # The parked run is untouched by the check and still completes on today's code.
    assert (await approve(handle)).status == "completed"


async def test_replay_check_from_outside_the_cli_sees_open_and_recently_closed_runs(
    worker: WorkerHandle,
) -> None:
    handle = await parked_run(worker.client, worker.settings, worker.task_queue)
    report = await replay_runs(worker.client, WORKFLOWS, task_queue=worker.task_queue)
    # Other runs of this module's queue may still be open (a test that failed midway).
    assert [
        (r.workflow_id, r.status, r.failure) for r in report.runs if r.workflow_id == handle.id
    ] == [(handle.id, "running", None)]
    assert (await approve(handle)).status == "completed"
    await wait_listed(worker.client, handle.id, "ExecutionStatus = 'Completed'")
    closed = await replay_runs(
        worker.client, WORKFLOWS, task_queue=worker.task_queue, closed_within=timedelta(hours=1)
    )
    # Other runs of this module's queue may be listed too; this one replays, completed.
    assert (handle.id, "completed", None) in [
        (r.workflow_id, r.status, r.failure) for r in closed.runs
    ]


async def test_upgrade_check_against_dead_temporal_prints_one_line_and_exits_4(
    stack: Settings,
) -> None:
    nobody = f"{LOOPBACK}:{free_port()}"
    code, out, err = await stead(stack, "upgrade", "check", STEAD_TEMPORAL_ADDRESS=nobody)
    assert code == EXIT_TEMPORAL_UNAVAILABLE, (out, err)
    assert out == ""
    [line] = [line for line in err.splitlines() if line.strip()]
    assert "temporal_unavailable" in line and nobody in line


async def test_promote_of_a_build_no_worker_runs_is_refused_in_one_line(stack: Settings) -> None:
    deployment = f"stead-{uuid.uuid4().hex[:8]}"
    client = await connect(stack)
    with pytest.raises(DeploymentNotReady, match="Start its workers"):
        await promote(client, deployment, "ghost")
    code, out, err = await stead(
        stack,
        "upgrade",
        "promote",
        "--build-id",
        "ghost",
        "--wait",
        "0",
        STEAD_WORKER_DEPLOYMENT=deployment,
    )
    assert code == 1 and out == ""
    [line] = [line for line in err.splitlines() if line.strip()]
    assert "deployment_not_ready" in line and "'ghost'" in line


def test_versioning_is_off_until_a_build_id_is_set(tmp_path: Path) -> None:
    assert deployment_config(load_settings(_env_file=None, home=tmp_path)) is None
    config = deployment_config(
        load_settings(_env_file=None, home=tmp_path, worker_build_id="2026.12.07-ab12")
    )
    assert config is not None
    assert config.use_worker_versioning
    assert config.default_versioning_behavior == RUN_VERSIONING
    assert config.version.to_canonical_string() == "stead.2026.12.07-ab12"
    # Temporal's canonical "<deployment>.<build>" allows no dot in the deployment name.
    with pytest.raises(ConfigError, match="STEAD_WORKER_DEPLOYMENT"):
        load_settings(_env_file=None, home=tmp_path, worker_deployment="a.b")


def test_runs_query_names_the_queue_the_types_and_the_window() -> None:
    assert runs_query("stead", ["stead.run"]) == (
        "TaskQueue = 'stead' AND WorkflowType IN ('stead.run') AND ExecutionStatus = 'Running'"
    )
    with pytest.raises(ValueError, match="quote"):
        runs_query("x' OR '1'='1", ["stead.run"])
