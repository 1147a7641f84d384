"""Governed MCP: real MCP servers' tools run as governed Stead steps, on the real stack.

The servers are the reference servers from PyPI (``mcp-server-time``, ``mcp-server-git``
on a repository the test creates, ``mcp-server-fetch`` against a local HTTP server) and
``tests/mcp_fault_server.py``, written with the SDK, for the failure cases. Each server
is configured and pinned through ``McpAdmin`` (what ``stead mcp add`` runs) before the
worker starts, and every call goes through the ordinary step path: OPA, approvals,
capability token, effect ledger, audit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from stead.contracts.run import ApprovalInput, RunStatus
from stead.db.pool import create_pool, tenant_transaction
from stead.mcp.admin import McpAdmin
from stead.mcp.config import McpConfigStore, McpServerConfig
from stead.secrets import open_secret_store
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import REPO, subprocess_env
from tests.peers import FakeLlm, serve, serve_handler
from tests.runs import configure_tenant, new_tenant, playbook, start_run, wait_pending
from tests.test_no_secrets_in_history import history_texts, raw_history
from tests.workers import start_worker, stop_worker
from workers.main import build_worker, open_resources

BIN = Path(sys.executable).parent
FAULT = (sys.executable, "-m", "tests.mcp_fault_server")
TOKEN = f"fault-token-{uuid.uuid4().hex}"
TIME_READ = {"risk": "low", "side_effect": "read"}


@dataclass
class Site:
    """A loopback HTTP server that records the paths it was asked for."""

    origin: str = ""
    paths: list[str] = field(default_factory=list)


@contextmanager
def site() -> Iterator[Site]:
    state = Site()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            state.paths.append(self.path)
            body = b"<html><body><p>hello from the local site</p></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_handler(Handler) as state.origin:
        yield state


@dataclass
class Mcp:
    client: Client
    task_queue: str
    settings: Settings
    llm: FakeLlm
    pool: asyncpg.Pool
    admin: McpAdmin
    tenant: str
    repo: Path
    fault: Path
    site: Site


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def new_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "Test")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "b.txt").write_text("two\n")
    git(repo, "add", "b.txt")
    return repo


def fault_server(state: Path, timeout: float = 20.0) -> McpServerConfig:
    return McpServerConfig(
        transport="stdio",
        command=FAULT,
        env={
            "FAULT_STATE": str(state),
            "PYTHONPATH": str(REPO),
            "FAULT_TOKEN": "secret://{tenant}/mcp/fault_token",
        },
        timeout_seconds=timeout,
        dedupes_by_key=True,
    )


@pytest_asyncio.fixture(scope="module")
async def m(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mcp]:
    root = tmp_path_factory.mktemp("mcp")
    secrets = root / "secrets"
    tenant = new_tenant()
    folder = secrets / tenant / "mcp"
    folder.mkdir(parents=True, mode=0o700)
    for d in (secrets, secrets / tenant, folder):
        d.chmod(0o700)
    (folder / "fault_token").write_text(TOKEN)
    (folder / "fault_token").chmod(0o600)
    repo, fault = new_repo(root), root / "fault"
    fault.mkdir()
    llm = FakeLlm()
    with site() as local, serve(llm) as llm_url:
        settings = stack.model_copy(
            update={
                "mcp_dir": root / "mcp",
                "planner_model": "openai/fake-planner",
                "planner_api_base": f"{llm_url}/v1",
                "planner_api_key": SecretStr("test-key"),
                "secret_backends": ("files",),
                "secret_dir": secrets,
            }
        )
        await configure_tenant(
            settings.opa_url,
            tenant,
            egress=["127.0.0.1"],
            approvers=["user:bob"],
            mcp_tools={
                "mcp.clock.get_current_time": TIME_READ,
                "mcp.web.fetch": TIME_READ,
                "mcp.fault.note": TIME_READ,
                "mcp.fault.fail": TIME_READ,
                "mcp.fault.whoami": TIME_READ,
                "mcp.fault.env_names": TIME_READ,
                "mcp.faultslow.hang": TIME_READ,
            },
        )
        pool = await create_pool(settings.postgres_dsn, max_size=2)
        store = McpConfigStore(root / "mcp")
        admin = McpAdmin(store, pool, open_secret_store(settings, {}), "user:operator")
        ref = f"secret://{tenant}/mcp/fault_token"
        servers = {
            "clock": McpServerConfig(transport="stdio", command=(str(BIN / "mcp-server-time"),)),
            "git": McpServerConfig(
                transport="stdio", command=(str(BIN / "mcp-server-git"), "--repository", str(repo))
            ),
            "web": McpServerConfig(
                transport="stdio",
                command=(
                    str(BIN / "mcp-server-fetch"),
                    "--ignore-robots-txt",
                    # Its own SSRF guard refuses loopback; Stead's egress policy decides.
                    "--allow-private-ips",
                ),
            ),
            "fault": fault_server(fault).model_copy(
                update={"env": {**fault_server(fault).env, "FAULT_TOKEN": ref}}
            ),
            "faultslow": fault_server(fault, timeout=2.0).model_copy(update={"env": {}}),
        }
        try:
            for name, server in servers.items():
                await admin.add(tenant, name, server)
            task_queue = f"mcp-{uuid.uuid4().hex[:8]}"
            client = await connect(settings)
            async with (
                open_resources(settings) as resources,
                build_worker(client, task_queue, resources),
            ):
                yield Mcp(
                    client, task_queue, settings, llm, pool, admin, tenant, repo, fault, local
                )
        finally:
            await pool.close()


async def run_steps(m: Mcp, *steps: dict[str, Any]) -> WorkflowHandle[Any, RunStatus]:
    return await start_run(
        m.client,
        m.task_queue,
        tenant=m.tenant,
        principal="user:ann",
        playbook_source=playbook(*steps),
    )


async def audit_kinds(m: Mcp, workflow_id: str | None = None) -> list[dict[str, Any]]:
    async with tenant_transaction(m.pool, m.tenant) as conn:
        rows = await conn.fetch(
            "SELECT kind, actor, step_id, data::text AS data FROM audit_events"
            " WHERE tenant = $1 AND ($2::text IS NULL OR workflow_id = $2) ORDER BY id",
            m.tenant,
            workflow_id,
        )
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


async def test_adding_a_server_pins_its_tools_and_audits_it(m: Mcp) -> None:
    config = McpConfigStore(m.settings.resolved_mcp_dir).load(m.tenant)
    assert set(config.servers["git"].tools) >= {"git_status", "git_commit", "git_reset"}
    added = [r for r in await audit_kinds(m) if r["kind"] == "mcp_server_added"]
    assert {r["data"]["server"] for r in added} == {"clock", "git", "web", "fault", "faultslow"}
    git_row = next(r for r in added if r["data"]["server"] == "git")
    assert git_row["actor"] == "user:operator"
    assert git_row["data"]["tools"]["git_commit"] == config.servers["git"].tools["git_commit"].hash


async def test_a_goal_planned_by_the_llm_uses_an_mcp_tool(m: Mcp) -> None:
    m.llm.replies.clear()
    m.llm.bodies.clear()
    m.llm.reply_plan(
        {
            "rationale": "ask the clock server",
            "steps": [
                {
                    "id": "now",
                    "operation": "mcp.clock.get_current_time",
                    "args": {"timezone": "UTC"},
                }
            ],
        }
    )
    handle = await start_run(
        m.client, m.task_queue, tenant=m.tenant, principal="user:ann", goal="what time is it?"
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    prompt = json.dumps(m.llm.bodies[0])
    assert "mcp.clock.get_current_time" in prompt, "the planner must see the MCP tool"
    assert "fault_token" not in prompt and TOKEN not in prompt
    (step,) = status.steps
    assert isinstance(step.output, dict) and isinstance(step.output["structured"], dict)
    assert step.output["structured"]["timezone"] == "UTC"
    kinds = [r["kind"] for r in await audit_kinds(m, handle.id)]
    assert "step_decision" in kinds and "effect" in kinds


async def test_a_write_git_tool_waits_for_approval_and_commits_once(m: Mcp) -> None:
    before = git(m.repo, "rev-list", "--count", "HEAD")
    handle = await run_steps(
        m,
        {
            "id": "commit",
            "operation": "mcp.git.git_commit",
            "args": {"repo_path": str(m.repo), "message": "add b via governed MCP"},
        },
    )
    pending = await wait_pending(handle, "commit")
    # The server annotates git_commit destructiveHint=false; policy data says nothing,
    # so the tool is high risk and waits.
    assert any("high risk" in r for r in pending.reasons), pending.reasons
    assert git(m.repo, "rev-list", "--count", "HEAD") == before
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id="commit", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
        ),
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert int(git(m.repo, "rev-list", "--count", "HEAD")) == int(before) + 1
    assert git(m.repo, "log", "-1", "--format=%s").strip() == "add b via governed MCP"
    async with tenant_transaction(m.pool, m.tenant) as conn:
        effects = await conn.fetch(
            "SELECT status FROM effects WHERE tenant = $1 AND workflow_id = $2",
            m.tenant,
            handle.id,
        )
    assert [e["status"] for e in effects] == ["completed"]


async def test_a_fetch_to_an_unlisted_host_is_denied_before_any_request(m: Mcp) -> None:
    port = m.site.origin.rsplit(":", 1)[1]
    path = f"/private-{uuid.uuid4().hex[:8]}"
    handle = await run_steps(
        m,
        {
            "id": "get",
            "operation": "mcp.web.fetch",
            "args": {"url": f"http://localhost:{port}{path}"},
        },
    )
    status = await handle.result()
    assert status.status == "denied", status.reasons
    assert status.steps[0].decision is not None
    assert status.steps[0].decision.reasons == (
        f"egress_denied: http://localhost:{port} is not in tenant {m.tenant}'s egress list",
    )
    assert path not in m.site.paths


async def test_a_fetch_to_a_listed_host_runs(m: Mcp) -> None:
    path = f"/page-{uuid.uuid4().hex[:8]}"
    handle = await run_steps(
        m,
        {
            "id": "get",
            "operation": "mcp.web.fetch",
            "args": {"url": f"{m.site.origin}{path}", "raw": True},
        },
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert path in m.site.paths
    assert "hello from the local site" in json.dumps(status.steps[0].output)


async def test_a_changed_tool_is_refused_until_an_operator_accepts_it(m: Mcp) -> None:
    effects = m.fault / "effects.jsonl"
    effects.unlink(missing_ok=True)
    (m.fault / "schema_v2").write_text("")
    note = {"id": "note", "operation": "mcp.fault.note", "args": {"text": "hi"}}
    try:
        # Changed on the server, not yet refreshed: refused at the call, nothing runs.
        status = await (await run_steps(m, note)).result()
        assert status.status == "failed"
        assert "changed since it was pinned" in " ".join(status.reasons)
        assert not effects.exists()
        assert "mcp_tool_changed" in [r["kind"] for r in await audit_kinds(m)]
        # Refreshed without --accept: policy denies before any call.
        diff = await m.admin.refresh(m.tenant, "fault", accept=False)
        assert diff["changed"] == ["note"]
        status = await (await run_steps(m, note)).result()
        assert status.status == "denied"
        assert status.steps[0].decision is not None
        assert status.steps[0].decision.reasons[0].startswith("mcp_tool_changed: mcp.fault.note")
        # Accepted: the new definition is the pin and the call runs.
        await m.admin.refresh(m.tenant, "fault", accept=True)
        status = await (await run_steps(m, note)).result()
        assert status.status == "completed", status.reasons
        assert len(effects.read_text().splitlines()) == 1
        accepted = [r for r in await audit_kinds(m) if r["kind"] == "mcp_tools_accepted"]
        assert accepted and "note" in accepted[-1]["data"]["changed"]
    finally:
        (m.fault / "schema_v2").unlink(missing_ok=True)
        await m.admin.refresh(m.tenant, "fault", accept=True)


async def test_an_is_error_result_fails_the_step(m: Mcp) -> None:
    status = await (
        await run_steps(m, {"id": "f", "operation": "mcp.fault.fail", "args": {}})
    ).result()
    assert status.status == "failed"
    assert "reported an error" in " ".join(status.reasons)


async def test_an_is_error_result_with_on_failure_skip_lets_the_run_go_on(m: Mcp) -> None:
    status = await (
        await run_steps(
            m,
            {"id": "f", "operation": "mcp.fault.fail", "args": {}, "on_failure": "skip"},
            {"id": "now", "operation": "mcp.clock.get_current_time", "args": {"timezone": "UTC"}},
        )
    ).result()
    assert status.steps[0].status != "succeeded", status.reasons
    assert status.steps[1].status == "succeeded", status.reasons


async def test_a_hanging_server_fails_the_step_without_a_repeat(m: Mcp) -> None:
    status = await (
        await run_steps(m, {"id": "h", "operation": "mcp.faultslow.hang", "args": {}})
    ).result()
    assert status.status == "failed"
    assert "did not answer" in " ".join(status.reasons)


async def test_an_echoed_secret_never_reaches_history_or_the_result(m: Mcp) -> None:
    handle = await run_steps(m, {"id": "who", "operation": "mcp.fault.whoami", "args": {}})
    status = await handle.result()
    assert status.status == "completed", status.reasons
    output = json.dumps(status.steps[0].output)
    assert "token=" in output and TOKEN not in output
    for text in history_texts(await raw_history(m.settings, handle.id)):
        assert TOKEN not in text


async def test_a_stdio_server_gets_only_its_own_environment(m: Mcp) -> None:
    status = await (
        await run_steps(m, {"id": "env", "operation": "mcp.fault.env_names", "args": {}})
    ).result()
    assert status.status == "completed", status.reasons
    output = status.steps[0].output
    assert isinstance(output, dict) and isinstance(output["structured"], dict)
    names = output["structured"]["result"]
    assert isinstance(names, list)
    assert "FAULT_TOKEN" in names
    assert not [n for n in names if str(n).startswith("STEAD_")]


async def test_a_worker_killed_during_a_call_leaves_one_effect(m: Mcp) -> None:
    calls, effects = m.fault / "calls", m.fault / "effects.jsonl"
    calls.unlink(missing_ok=True)
    effects.unlink(missing_ok=True)
    (m.fault / "block").write_text("")
    queue = f"mcp-kill-{uuid.uuid4().hex[:8]}"
    env = {
        "STEAD_MCP_DIR": str(m.settings.resolved_mcp_dir),
        "STEAD_SECRET_BACKENDS": '["files"]',
        "STEAD_SECRET_DIR": str(m.settings.secret_dir),
    }
    first = worker_with(m.settings, queue, env)
    handle = await start_run(
        m.client,
        queue,
        tenant=m.tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "note", "operation": "mcp.fault.note", "args": {"text": "once"}}
        ),
    )
    try:
        await _until(lambda: calls.exists() and calls.read_text().strip() != "")
        first.kill()
        first.wait()
    finally:
        stop_worker(first)
    (m.fault / "block").unlink()
    second = worker_with(m.settings, queue, env)
    try:
        status = await handle.result()
    finally:
        stop_worker(second)
    assert status.status == "completed", status.reasons
    lines = [json.loads(x) for x in effects.read_text().splitlines()]
    assert lines == [{"key": f"{handle.id}/note", "text": "once"}]
    assert len(calls.read_text().split()) == 2, "the retry called again under the same key"
    async with tenant_transaction(m.pool, m.tenant) as conn:
        rows = await conn.fetch(
            "SELECT status, attempts FROM effects WHERE tenant = $1 AND workflow_id = $2",
            m.tenant,
            handle.id,
        )
    assert [r["status"] for r in rows] == ["completed"] and rows[0]["attempts"] == 2


def worker_with(settings: Settings, queue: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """A ``stead worker`` process that reads this module's MCP config and secret files."""
    return start_worker(settings.model_copy(), queue, drain=True, env=env)


async def _until(ready: Any) -> None:
    import asyncio

    for _ in range(1200):
        if ready():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the MCP call never started")


def test_the_cli_adds_lists_and_removes_a_server(m: Mcp, tmp_path: Path) -> None:
    tenant = new_tenant()
    env = subprocess_env(m.settings, STEAD_MCP_DIR=str(tmp_path / "mcp"))

    def stead(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stead.cli", "mcp", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    added = stead("add", "cliclock", "--tenant", tenant, "--command", str(BIN / "mcp-server-time"))
    assert added.returncode == 0, added.stderr
    assert "mcp.cliclock.get_current_time" in added.stdout
    listed = stead("list", "--tenant", tenant, "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["server"] == "cliclock" and "convert_time" in row["tools"]
    again = stead("add", "cliclock", "--tenant", new_tenant(), "--command", "true")
    assert again.returncode == 1 and "already configured" in again.stderr
    assert stead("refresh", "cliclock", "--tenant", tenant).returncode == 0
    assert stead("remove", "cliclock", "--tenant", tenant).returncode == 0
    assert json.loads(stead("list", "--tenant", tenant, "--json").stdout) == []


def test_another_tenants_mcp_tools_are_not_in_a_planners_catalog(m: Mcp) -> None:
    from adapters.registry import worker_catalog

    catalog = worker_catalog(m.settings)
    assert "mcp.clock.get_current_time" in catalog.for_tenant(m.tenant)
    assert "mcp.clock.get_current_time" not in catalog.for_tenant(new_tenant())
    assert "records.put" in catalog.for_tenant(new_tenant())
