"""The CLI while Temporal is down or restarting: one line and exit 4 ("Temporal
unavailable") instead of a traceback or a wrong verdict, nothing on stdout, and
``stead run --wait --json`` rides out a restart of the server to print the run's
real outcome.

The restart test runs its own ``temporal server start-dev`` (SQLite file in a temp
dir) so killing it leaves the session stack alone; Postgres and OPA are the stack's.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

import pytest

from stead.contracts.run import ApprovalInput, PendingApproval, RunStatus
from stead.devstack import proc, temporal
from stead.devstack.ports import LOOPBACK, free_port, is_free
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import REPO, settings_for, subprocess_env
from tests.runs import configure_tenant, new_tenant, playbook, wait_pending
from tests.workers import worker_process

PUT_ONLY = playbook(
    {"id": "put", "operation": "records.put", "args": {"key": "a", "value": {"n": 1}}}
)
EXIT_TEMPORAL_UNAVAILABLE = 4


async def stead(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stead.cli",
        *args,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=120)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    "args",
    [
        ("status", "run-x-000000000000", "--json"),
        ("pending", "--json"),
        ("cancel", "run-x-000000000000", "--as", "user:ann"),
        ("approve", "run-x-000000000000", "put", "--as", "user:bob", "--json"),
        ("audit", "run-x-000000000000"),
        ("hello", "--json"),
        ("run", "--tenant", "acme", "--as", "user:ann", "--playbook", "records-demo"),
        ("run", "--tenant", "acme", "--as", "user:ann", "--playbook", "records-demo", "--wait"),
    ],
    ids=lambda args: "-".join(a for a in args if not a.startswith("run-x")),
)
async def test_command_against_dead_temporal_prints_one_line_and_exits_4(
    stack: Settings, args: tuple[str, ...]
) -> None:
    nobody = f"{LOOPBACK}:{free_port()}"
    env = subprocess_env(stack, STEAD_TEMPORAL_ADDRESS=nobody)
    code, out, err = (
        await stead(env, *args, "--input", "key=k1")
        if args[0] == "run"
        else (await stead(env, *args))
    )
    assert code == EXIT_TEMPORAL_UNAVAILABLE, (code, out, err)
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "temporal_unavailable" in lines[0] and nobody in lines[0]
    assert "Traceback" not in err


def _temporal_ports() -> temporal.TemporalPorts:
    return temporal.TemporalPorts(
        grpc=free_port(), ui=free_port(), http=free_port(), metrics=free_port()
    )


async def _run_of(own: Settings, tenant: str) -> str:
    """The id of the tenant's run, from visibility (bounded polling: it lags a little)."""
    client = await connect(own)
    for _ in range(200):
        found = [e.id async for e in client.list_workflows(f"SteadTenant = '{tenant}'")]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no run of {tenant} became visible")


async def _pending(own: Settings, run_id: str) -> PendingApproval:
    client = await connect(own)
    return await wait_pending(client.get_workflow_handle(run_id, result_type=RunStatus))


async def test_run_wait_rides_out_a_temporal_restart_and_prints_the_completed_run(
    stack: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "temporal"
    home.mkdir()
    ports = _temporal_ports()
    address = f"{LOOPBACK}:{ports.grpc}"
    own = settings_for(stack.home, temporal_address=address)
    record = await asyncio.to_thread(temporal.start, home, ports, "default")
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, approval_risk="low", approvers=["user:bob"])
    source = tmp_path / "put-only.yaml"
    source.write_text(PUT_ONLY)
    task_queue = f"outage-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(stack, STEAD_TEMPORAL_ADDRESS=address, STEAD_TASK_QUEUE=task_queue)
    try:
        with worker_process(stack, task_queue, STEAD_TEMPORAL_ADDRESS=address):
            waiting = asyncio.create_task(
                stead(
                    env,
                    *("run", "--tenant", tenant, "--as", "user:ann"),
                    *("--playbook-file", str(source), "--wait", "--json"),
                )
            )
            run_id = await _run_of(own, tenant)
            pending = await _pending(own, run_id)

            # The server goes away while the CLI waits on the run, then comes back
            # on the same port with the same database.
            proc.stop(record, sig=signal.SIGKILL)
            assert is_free(ports.grpc)
            assert not waiting.done()
            record = await asyncio.to_thread(temporal.start, home, ports, "default")

            client = await connect(own)
            approval = ApprovalInput(
                step_id="put", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
            )
            await client.get_workflow_handle(run_id).execute_update("approve", approval)
            code, out, err = await waiting
            final = await client.get_workflow_handle(run_id, result_type=RunStatus).result()
    finally:
        proc.stop(record, sig=signal.SIGKILL)

    assert code == 0, (code, out, err)
    summary = json.loads(out)  # stdout is exactly the run's JSON: no SDK warnings in it
    assert summary["run_id"] == run_id
    assert summary["status"] == "completed"
    assert [s["status"] for s in summary["steps"]] == ["succeeded"]
    assert "Traceback" not in err
    assert final.status == "completed"
