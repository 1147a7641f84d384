"""The catalog: complete metadata, export to OPA, routing, plugins, and the adapter boundary."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.execution import ExecutionActivities
from adapters.core import ECHO
from adapters.files import FileSandbox
from adapters.plugins import PluginError
from adapters.registry import AdapterResources, builtin_operations, default_catalog
from stead.capability.trust import open_trust
from stead.contracts.activities import ExecuteStepInput, RunRef
from stead.contracts.run import PlannerInfo, Step
from stead.db.pool import create_pool
from stead.devstack.opa import find_binary
from stead.operations.base import AdapterError, Operation, OperationContext
from stead.operations.catalog import Catalog, UnknownAdapter
from stead.planning.validate import build_plan
from stead.runs.scope import configure_scope
from stead.settings import Settings
from tests.conftest import REPO, subprocess_env
from tests.opa_auth import decision_headers
from tests.scope_support import admit_run, integrity_secret

README = (REPO / "adapters" / "README.md").read_text()


# --- what every operation declares --------------------------------------------------


# Built-ins and the installed plugins' (the field cases', as `make test` installs them).
@pytest.mark.parametrize("op", list(default_catalog()), ids=lambda op: op.name)
def test_every_installed_operation_declares_what_policy_and_the_runtime_need(
    op: Operation[Any, Any],
) -> None:
    spec = op.spec()
    assert spec.description, "the planner reads it"
    if spec.side_effect != "read":
        assert spec.scopes, "every effect on the world names the scope it needs"
    assert spec.args_schema.get("additionalProperties") is False, "args must be closed"
    assert spec.args_schema["type"] == spec.result_schema["type"] == "object"
    assert spec.side_effect in ("read", "write", "external")
    assert spec.risk in ("low", "medium", "high")
    assert spec.timeout_seconds > 0 and spec.max_attempts >= 1
    if spec.idempotency == "reconcile":
        assert op.reconcile is not None
    if spec.side_effect != "read":
        assert spec.idempotency in ("key", "reconcile") or op.name.startswith("files.")


def test_writes_to_a_tenants_database_are_high_risk_and_reads_are_not() -> None:
    catalog = default_catalog(plugins=False)
    assert (catalog.get("sql.execute").side_effect, catalog.get("sql.execute").risk) == (
        "write",
        "high",
    )
    assert (catalog.get("sql.query").side_effect, catalog.get("sql.query").risk) == ("read", "low")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": "Echo"}, "<adapter>.<operation>"),
        ({"name": "echo"}, "<adapter>.<operation>"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"rate_limit_burst": 5}, "rate_limit_burst needs"),
        ({"idempotency": "reconcile"}, "reconcile function"),
        ({"args_model": dict}, "args_model"),
    ],
)
def test_a_malformed_operation_is_refused_when_built(changes: dict[str, Any], problem: str) -> None:
    import dataclasses

    with pytest.raises(ValueError, match=re.escape(problem)):
        dataclasses.replace(ECHO, **changes)


# --- export for planners and OPA ----------------------------------------------------


def _stead(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stead.cli", *args],
        env=subprocess_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_planner_export_lists_every_operation_with_its_schemas(stack: Settings) -> None:
    done = _stead(stack, "catalog", "export")
    assert done.returncode == 0, done.stderr
    specs = {s["name"]: s for s in json.loads(done.stdout)}
    assert set(specs) >= {op.name for op in builtin_operations()}
    assert specs["email.send"]["args_schema"]["required"] == ["to", "subject", "text"]
    assert specs["email.send"]["rate_limit_per_minute"] == 60


def test_the_opa_export_is_data_opa_loads_as_data_stead_catalog(
    stack: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "policies" / "stead" / "catalog" / "data.json"
    done = _stead(stack, "catalog", "export", "--opa", "--out", str(out))
    assert done.returncode == 0, done.stderr
    opa = find_binary(stack.home, stack.opa_bin)
    assert opa is not None
    query = 'data.stead.catalog.operations["sql.execute"]'
    evaluated = subprocess.run(
        [str(opa), "eval", "--format", "json", "-d", str(tmp_path / "policies"), query],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    entry = json.loads(evaluated.stdout)["result"][0]["expressions"][0]["value"]
    assert (entry["side_effect"], entry["risk"], entry["idempotency"]) == (
        "write",
        "high",
        "reconcile",
    )
    assert entry["scopes"] == ["sql:write"] and "args_schema" in entry


async def test_the_opa_export_can_be_pushed_to_a_running_opa(stack: Settings) -> None:
    done = _stead(stack, "catalog", "export", "--push")
    assert done.returncode == 0, done.stderr
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{stack.opa_url}/v1/data/stead/catalog/operations", headers=decision_headers()
        )
    operations = answer.json()["result"]
    assert operations["email.send"]["risk"] == "medium"
    assert operations["files.read"]["side_effect"] == "read"


# --- routing to edge workers --------------------------------------------------------


def test_a_routed_adapter_is_planned_onto_its_edge_queue() -> None:
    catalog = default_catalog(plugins=False).route({"email": "edge-email"})
    plan = build_plan(
        [
            Step(
                id="mail",
                operation="email.send",
                args={"to": ["a@b.test"], "subject": "s", "text": "t"},
            ),
            Step(id="echo", operation="core.echo"),
        ],
        catalog,
        PlannerInfo(kind="playbook"),
        "routing",
        "plan-1",
    )
    assert plan.execution["mail"].task_queue == "edge-email"
    assert plan.execution["echo"].task_queue is None
    assert "email.send" not in catalog.local_to("stead")
    assert "email.send" in catalog.local_to("edge-email")
    assert catalog.for_adapters({"email"}).names() == ["email.send"]


def test_routing_an_adapter_nobody_installed_is_refused() -> None:
    with pytest.raises(UnknownAdapter, match="unknown adapter\\(s\\) pager; installed"):
        default_catalog(plugins=False).route({"pager": "edge-pager"})


# --- third-party adapters through entry points --------------------------------------


def _install_plugin(root: Path, body: str, entry: str = "operations") -> str:
    """Lay out a real installed distribution (package + dist-info) under ``root``."""
    module = f"steadplug_{uuid.uuid4().hex[:8]}"
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(textwrap.dedent(body))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[stead.adapters]\nplugged = {module}:{entry}\n")
    return module


GREETER = """
    from pydantic import BaseModel, ConfigDict
    from stead.operations.base import Operation


    class Args(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str


    class Result(BaseModel):
        greeting: str


    async def _greet(ctx, args):
        return Result(greeting=f"hello {args.name}")


    def operations():
        return [
            Operation(
                name="greeter.hello",
                description="Greet someone.",
                args_model=Args,
                result_model=Result,
                run=_greet,
                side_effect="read",
                risk="low",
                idempotency="native",
                scopes=("greeter:read",),
                rate_limit_per_minute=30,
            )
        ]

    def not_operations():
        return ["greeter.hello"]

    def clashing():
        return [op.__class__(**{**op.__dict__, "name": "email.send"}) for op in operations()]
"""


async def test_an_installed_plugin_adds_its_operations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, GREETER)
    monkeypatch.syspath_prepend(str(tmp_path))
    catalog = default_catalog()
    op = catalog.get("greeter.hello")
    assert op.spec().rate_limit_per_minute == 30
    ctx = OperationContext("acme", "user:ada", "wf", "s", "wf/s")
    result = await op.run(ctx, catalog.parse_args("greeter.hello", {"name": "Ada"}))
    assert result.model_dump() == {"greeting": "hello Ada"}
    assert "greeter.hello" not in default_catalog(plugins=False)


@pytest.mark.parametrize(
    ("entry", "error", "message"),
    [
        ("not_operations", PluginError, "every item must be an stead.operations.base.Operation"),
        ("missing_function", PluginError, "failed to import"),
        ("clashing", ValueError, "email.send clashes"),
    ],
)
def test_a_broken_plugin_stops_the_catalog_naming_the_plugin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    entry: str,
    error: type[Exception],
    message: str,
) -> None:
    module = _install_plugin(tmp_path, GREETER, entry=entry)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(error, match=message) as caught:
        default_catalog()
    if error is PluginError:
        assert module in str(caught.value)


# --- the adapter boundary -----------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def _execute_input(wf: str, operation: str, args: dict[str, Any]) -> ExecuteStepInput:
    return ExecuteStepInput(
        tenant="acme",
        principal="user:ann",
        run=RunRef(workflow_id=wf, run_id="r1", started_by="user:ann"),
        plan_hash="h",
        step=Step(id="s1", operation=operation, args=args),
        decision_id="never-recorded",
        idempotency_key=f"{wf}/s1",
    )


@pytest.mark.parametrize(
    ("operation", "args", "error_type"),
    [
        ("files.write", {"path": "../../etc/cron.d/x", "content": "* root sh"}, "InvalidArguments"),
        ("files.write", {"path": "ok.txt", "content": "x", "mode": "append"}, "InvalidArguments"),
        ("files.write", {"path": "ok.txt"}, "InvalidArguments"),
        ("files.wipe", {"path": "ok.txt"}, "UnknownOperation"),
    ],
)
async def test_bad_input_never_reaches_the_adapter(
    stack: Settings,
    pool: asyncpg.Pool,
    tmp_path: Path,
    operation: str,
    args: dict[str, Any],
    error_type: str,
) -> None:
    sandbox = tmp_path / "files"
    trust = open_trust(stack, pool)
    execution = ExecutionActivities(
        default_catalog(plugins=False),
        pool,
        AdapterResources(files=FileSandbox(sandbox)),
        issuer=trust.authority,
        verifier=trust.capabilities,
    )
    # A run admitted for tenant acme, so the tenant scope passes and the arguments are
    # what is refused (the scope check itself is tests/test_attack_scope.py's).
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    integrity = integrity_secret(stack)
    await admit_run(pool, "acme", wf, "r1", integrity=integrity)
    configure_scope(pool, integrity)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=wf, workflow_run_id="r1")
    with pytest.raises(ApplicationError) as caught:
        await env.run(execution.execute, _execute_input(wf, operation, args))
    assert caught.value.type == error_type and caught.value.non_retryable
    assert operation in str(caught.value)
    assert not sandbox.exists()


# --- the README's example is real ----------------------------------------------------


async def test_the_readme_example_operation_registers_and_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], "adapters/README.md", "exec"), namespace)
    for block in blocks[1:]:
        compile(block, "adapters/README.md", "exec")
    op = namespace["GREET"]
    catalog = Catalog([op, ECHO])
    ctx = OperationContext("acme", "user:ada", "wf", "s", "wf/s")
    result = await op.run(ctx, catalog.parse_args("greeter.hello", {"name": "Ada"}))
    assert result.greeting == "hello Ada from acme"
    with pytest.raises(AdapterError):
        await op.run(ctx, catalog.parse_args("greeter.hello", {"name": "nobody"}))
