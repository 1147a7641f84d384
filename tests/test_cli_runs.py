"""The ``stead`` CLI for governed runs, end to end: real child processes, a real worker.

Every command runs as ``python -m stead.cli`` against the session stack, the way an
operator or a CI pipeline runs it; assertions are on what they see: exit codes,
the JSON on stdout, the message on stderr.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from stead.settings import Settings
from tests.conftest import REPO, subprocess_env
from tests.runs import configure_tenant, new_tenant, playbook
from tests.workers import stop_worker, worker_process

T = TypeVar("T")

# One step that an approval-gated tenant holds for a human (records.put is a write).
PUT_ONLY = playbook(
    {"id": "put", "operation": "records.put", "args": {"key": "a", "value": {"n": 1}}}
)
GET_MISSING = playbook({"id": "get", "operation": "records.get", "args": {"key": "missing"}})
UNKNOWN_OPERATION = playbook({"id": "blast", "operation": "mail.blast", "args": {}})


@dataclass(frozen=True, repr=False)
class Outcome:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout must be exactly one JSON document: nothing before it, nothing after."""
        try:
            return json.loads(self.out)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stdout is not one JSON document ({exc}):\n{self!r}") from None

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@dataclass(frozen=True)
class Cli:
    env: dict[str, str]
    settings: Settings
    playbooks: Path

    async def __call__(self, *args: str, env: dict[str, str] | None = None) -> Outcome:
        child = await self.start(*args, env=env)
        out, err = await asyncio.wait_for(child.communicate(), timeout=60)
        assert child.returncode is not None
        return Outcome(child.returncode, out.decode(), err.decode())

    async def start(
        self, *args: str, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stead.cli",
            *args,
            env={**self.env, **(env or {})},
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def status(self, run_id: str) -> dict[str, Any]:
        result = await self("status", run_id, "--json")
        assert result.code == 0, result
        status: dict[str, Any] = result.json()
        return status


@pytest.fixture(scope="module")
def cli(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """One real ``stead worker`` on a queue of its own, and a runner for CLI commands on it."""
    task_queue = f"cli-{uuid.uuid4().hex[:10]}"
    playbooks = tmp_path_factory.mktemp("cli-playbooks")
    for name, source in {
        "put-only": PUT_ONLY,
        "get-missing": GET_MISSING,
        "unknown-op": UNKNOWN_OPERATION,
    }.items():
        (playbooks / f"{name}.yaml").write_text(source)
    with worker_process(stack, task_queue) as worker:
        try:
            yield Cli(subprocess_env(stack, STEAD_TASK_QUEUE=task_queue), stack, playbooks)
            assert worker.poll() is None, f"the worker exited ({worker.returncode}) mid-module"
        finally:
            # stop_worker leaves the log pipe open; close it once the worker is gone.
            stop_worker(worker)
            if worker.stdout is not None:
                worker.stdout.close()


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, tries: int = 20) -> T:
    """Poll ``probe`` until it returns a value; a bounded number of tries, never a bet on timing."""
    for _ in range(tries):
        value = await probe()
        if value is not None:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"gave up waiting: {what}")


async def wait_for_status(cli: Cli, run_id: str, wanted: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status = await cli.status(run_id)
        return status if status["status"] == wanted else None

    return await eventually(probe, f"{run_id} to be {wanted}")


async def wait_for_step(cli: Cli, run_id: str, step: str, wanted: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status = await cli.status(run_id)
        states = {s["id"]: s["status"] for s in status["steps"]}
        return status if states.get(step) == wanted else None

    return await eventually(probe, f"step {step} of {run_id} to be {wanted}")


async def wait_listed_pending(cli: Cli, tenant: str) -> list[dict[str, Any]]:
    """``stead pending`` reads Temporal's visibility index, which lags the workflow a little."""

    async def probe() -> list[dict[str, Any]] | None:
        result = await cli("pending", "--tenant", tenant, "--json")
        assert result.code == 0, result
        listed: list[dict[str, Any]] = result.json()
        return listed or None

    return await eventually(probe, f"a pending approval listed for {tenant}")


async def approval_tenant(cli: Cli) -> str:
    tenant = new_tenant()
    await configure_tenant(
        cli.settings.opa_url, tenant, approval_risk="low", approvers=["user:bob"]
    )
    return tenant


async def start_put(cli: Cli, tenant: str) -> str:
    started = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook-file",
        str(cli.playbooks / "put-only.yaml"),
    )
    assert started.code == 0, started
    run_id = started.out.strip()
    assert run_id.startswith(f"run-{tenant}-") and "\n" not in run_id, started
    return run_id


async def test_run_wait_json_prints_one_object_with_outcome_steps_and_cost(cli: Cli) -> None:
    tenant = new_tenant()
    await configure_tenant(cli.settings.opa_url, tenant)
    result = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook",
        "records-demo",
        "--input",
        "key=k1",
        "--wait",
        "--json",
    )
    assert result.code == 0, result
    summary = result.json()
    assert {"run_id", "status", "steps", "cost_usd"} <= summary.keys()
    step_keys = {"id", "operation", "status", "decision", "result"}
    assert all(step_keys <= step.keys() for step in summary["steps"])
    assert summary["run_id"].startswith(f"run-{tenant}-")
    assert summary["status"] == "completed"
    assert summary["cost_usd"] == 0.0
    assert [(s["id"], s["operation"], s["status"]) for s in summary["steps"]] == [
        ("put", "records.put", "succeeded"),
        ("get", "records.get", "succeeded"),
    ]
    assert all(s["decision"]["outcome"] == "allow" for s in summary["steps"])
    assert summary["steps"][1]["result"] == {"key": "k1", "value": {"text": "hello"}, "version": 1}


async def test_denied_run_exits_2_and_says_why(cli: Cli) -> None:
    tenant = new_tenant()
    await configure_tenant(cli.settings.opa_url, tenant, operations=["records.get"])
    result = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook",
        "records-demo",
        "--input",
        "key=k1",
        "--wait",
        "--json",
    )
    assert result.code == 2, result
    summary = result.json()
    assert summary["status"] == "denied"
    assert any("records.put" in reason and "not allowed" in reason for reason in summary["reasons"])


async def rows_for(cli: Cli, tenant: str) -> dict[str, int]:
    """How many run records and audit rows the tenant has, read as the database owner."""
    assert cli.settings.postgres_admin_dsn is not None
    conn = await asyncpg.connect(cli.settings.postgres_admin_dsn)
    try:
        return {
            table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant = $1", tenant)
            for table in ("runs", "audit_events")
        }
    finally:
        await conn.close()


async def test_an_operation_the_catalog_lacks_is_refused_before_anything_starts(
    cli: Cli,
) -> None:
    tenant = new_tenant()
    await configure_tenant(cli.settings.opa_url, tenant)
    result = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook-file",
        str(cli.playbooks / "unknown-op.yaml"),
        "--wait",
        "--json",
    )
    assert result.code == 2, result
    assert result.out == "", result
    err = " ".join(result.err.split())
    assert "cannot start" in err and "operation mail.blast is not in the adapter catalog" in err
    assert "install that plugin" in err, result
    assert await rows_for(cli, tenant) == {"runs": 0, "audit_events": 0}


async def test_a_tenant_neither_policy_nor_the_directory_knows_is_refused_before_anything_starts(
    cli: Cli,
) -> None:
    tenant = new_tenant()
    result = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook",
        "records-demo",
        "--input",
        "key=k1",
        "--wait",
        "--json",
    )
    assert result.code == 2, result
    assert result.out == "", result
    err = " ".join(result.err.split())
    assert f"cannot start: tenant {tenant} does not exist" in err, result
    assert f"stead tenant create {tenant}" in err, result
    assert len(result.err.strip().splitlines()) <= 3, result  # one line, maybe wrapped
    assert await rows_for(cli, tenant) == {"runs": 0, "audit_events": 0}


async def test_a_tenant_only_in_the_directory_may_start(cli: Cli) -> None:
    # Exists means policy data or a directory row; policy then decides as usual.
    tenant = new_tenant()
    made = await cli("tenant", "create", tenant)
    assert made.code == 0, made
    result = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook",
        "records-demo",
        "--input",
        "key=k1",
        "--wait",
        "--json",
    )
    assert "does not exist" not in result.err, result
    assert (await rows_for(cli, tenant))["runs"] == 1, result


async def test_failed_step_exits_1_with_the_adapter_error(cli: Cli) -> None:
    tenant = new_tenant()
    await configure_tenant(cli.settings.opa_url, tenant)
    result = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook-file",
        str(cli.playbooks / "get-missing.yaml"),
        "--wait",
        "--json",
    )
    assert result.code == 1, result
    summary = result.json()
    assert summary["status"] == "failed"
    [step] = summary["steps"]
    assert step["status"] == "failed"
    assert "record missing not found" in step["error"]


async def test_cancelled_run_exits_3_and_status_reports_it_with_exit_0(cli: Cli) -> None:
    tenant = await approval_tenant(cli)
    waiting = await cli.start(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook-file",
        str(cli.playbooks / "put-only.yaml"),
        "--wait",
        "--json",
    )
    try:
        [item] = await wait_listed_pending(cli, tenant)
        run_id = item["workflow_id"]
        cancelled = await cli("cancel", run_id, "--as", "user:carol", "--reason", "wrong day")
        assert cancelled.code == 0, cancelled
        assert "user:carol" in cancelled.out, cancelled
        out, err = await asyncio.wait_for(waiting.communicate(), timeout=60)
    finally:
        if waiting.returncode is None:
            waiting.kill()
            await waiting.wait()
    assert waiting.returncode is not None
    result = Outcome(waiting.returncode, out.decode(), err.decode())
    assert result.code == 3, result
    assert result.json()["status"] == "cancelled"
    status = await cli.status(run_id)
    assert status["status"] == "cancelled"
    assert status["reasons"] == ["cancelled by user:carol: wrong day"]
    assert [s["status"] for s in status["steps"]] == ["cancelled"]
    # Attributed and audited like an approval: who asked, why, and the run's end says so.
    trail = await cli("audit", run_id, "--json")
    assert trail.code == 0, trail
    events = {e["kind"]: e for e in trail.json()}
    asked = events["cancel_requested"]
    assert asked["actor"] == "user:carol"
    assert asked["data"] == {"reason": "wrong day", "attribution": "claimed"}
    assert events["run_finished"]["data"]["cancel"] == {
        "requested_by": "user:carol",
        "reason": "wrong day",
        "attribution": "claimed",
    }


async def test_cancel_of_an_unknown_run_says_so_in_one_line(cli: Cli) -> None:
    result = await cli("cancel", "run-nobody-000000000000", "--as", "user:carol")
    assert result.code == 1, result
    assert "is not running" in result.err and "Traceback" not in result.err, result


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--goal", "tidy the records"], ["STEAD_PLANNER_MODEL"]),
        (["--playbook", "nope"], ["no playbook 'nope'", "available:", "records-demo"]),
        (["--playbook", "records-demo", "--input", "k1"], ["'k1' is not key=value"]),
    ],
    ids=["goal-without-planner", "unknown-playbook", "input-not-key-value"],
)
async def test_requests_that_cannot_run_exit_2_before_any_workflow_starts(
    cli: Cli, flags: list[str], says: list[str]
) -> None:
    # Temporal is pointed at a closed port: reaching it at all would fail differently.
    result = await cli(
        "run",
        "--tenant",
        new_tenant(),
        "--as",
        "user:ann",
        *flags,
        "--wait",
        env={"STEAD_TEMPORAL_ADDRESS": "127.0.0.1:1"},
    )
    assert result.code == 2, result
    assert all(part in result.err for part in ["cannot start", *says]), result
    assert result.out == ""


async def test_approval_from_the_cli_checks_the_approver_then_runs_the_step(cli: Cli) -> None:
    tenant = await approval_tenant(cli)
    run_id = await start_put(cli, tenant)
    [item] = await wait_listed_pending(cli, tenant)
    assert (item["workflow_id"], item["step_id"]) == (run_id, "put")
    assert item["eligible"] == ["user:bob"] and item["requested_by"] == "user:ann"

    refused = await cli("approve", run_id, "put", "--as", "user:eve")
    assert refused.code != 0, refused
    assert "not an approver" in refused.err, refused

    approved = await cli("approve", run_id, "put", "--as", "user:bob", "--json")
    assert approved.code == 0, approved
    assert approved.json()["verdict"] == "approve"
    status = await wait_for_status(cli, run_id, "completed")
    assert status["steps"][0]["status"] == "succeeded"
    assert status["steps"][0]["result"]["version"] == 1


async def test_rejection_from_the_cli_fails_the_run_with_the_comment(cli: Cli) -> None:
    tenant = await approval_tenant(cli)
    run_id = await start_put(cli, tenant)
    await wait_for_step(cli, run_id, "put", "awaiting_approval")
    rejected = await cli(
        "approve", run_id, "put", "--as", "user:bob", "--reject", "--comment", "not today"
    )
    assert rejected.code == 0, rejected
    status = await wait_for_status(cli, run_id, "failed")
    [step] = status["steps"]
    assert step["status"] == "rejected"
    assert "rejected by user:bob: not today" in step["error"]


async def _tamper(admin_dsn: str, tenant: str, seq: int) -> None:
    """What a superuser could do: rewrite a row behind the append-only trigger's back."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            updated = await conn.execute(
                """UPDATE audit_events SET data = '{"x":1}' WHERE tenant = $1 AND seq = $2""",
                tenant,
                seq,
            )
            await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
    finally:
        await conn.close()
    assert updated == "UPDATE 1"


async def test_audit_lists_the_run_and_verify_detects_tampering(cli: Cli) -> None:
    tenant = new_tenant()
    await configure_tenant(cli.settings.opa_url, tenant)
    done = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook",
        "records-demo",
        "--input",
        "key=k1",
        "--wait",
        "--json",
    )
    assert done.code == 0, done
    run_id = done.json()["run_id"]

    trail = await cli("audit", run_id, "--json")
    assert trail.code == 0, trail
    events = trail.json()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_started" and kinds[-2:] == ["run_finished", "memory_written"], kinds
    assert "plan_decision" in kinds, kinds
    assert kinds.count("step_decision") == 2 and kinds.count("effect") == 2, kinds
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert {e["tenant"] for e in events} == {tenant}

    intact = await cli("audit", "verify", "--tenant", tenant)
    assert intact.code == 0, intact
    assert "chain intact" in intact.out

    assert cli.settings.postgres_admin_dsn is not None
    await _tamper(cli.settings.postgres_admin_dsn, tenant, seq=2)

    broken, everyone = await asyncio.gather(
        cli("audit", "verify", "--tenant", tenant), cli("audit", "verify", "--json")
    )
    assert broken.code == 1, broken
    assert f"TAMPERED {tenant}: first bad row seq 2" in broken.err, broken
    assert everyone.code == 1, everyone
    report = everyone.json()
    assert report["ok"] is False
    [ours] = [t for t in report["tenants"] if t["tenant"] == tenant]
    assert (ours["ok"], ours["first_bad_seq"]) == (False, 2)


async def test_audit_shows_which_playbook_file_and_plan_ran(cli: Cli) -> None:
    tenant = new_tenant()
    await configure_tenant(cli.settings.opa_url, tenant)
    path = cli.playbooks / "put-only.yaml"
    done = await cli(
        "run",
        "--tenant",
        tenant,
        "--as",
        "user:ann",
        "--playbook-file",
        str(path),
        "--wait",
        "--json",
    )
    assert done.code == 0, done
    run_id = done.json()["run_id"]
    trail = await cli("audit", run_id, "--json")
    assert trail.code == 0, trail
    events = {e["kind"]: e for e in trail.json()}
    started = events["run_started"]["data"]
    # What `sha256sum put-only.yaml` prints: an auditor can tell which file ran.
    assert started["playbook"] is None
    assert started["playbook_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cli.settings.postgres_admin_dsn is not None
    conn = await asyncpg.connect(cli.settings.postgres_admin_dsn)
    try:
        recorded = await conn.fetchval("SELECT plan_hash FROM runs WHERE workflow_id = $1", run_id)
    finally:
        await conn.close()
    assert recorded and events["plan_decision"]["data"]["plan_hash"] == recorded
