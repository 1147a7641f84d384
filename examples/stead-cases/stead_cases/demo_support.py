"""What both field-case demos need around the runs: the example services, a worker
configured for them, the tenant's directory entry and approver token, approvals
performed through the real ``stead approve`` command, and the SLO summary."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.markup import escape
from temporalio.client import Client, WorkflowHandle

from stead.cli._common import console
from stead.contracts.run import PendingApproval, RunStatus
from stead.db.pool import create_pool, tenant_transaction
from stead.errors import ConfigError
from stead.settings import Settings

STEAD = (sys.executable, "-m", "stead.cli")


def examples() -> ModuleType:
    """The example services (``stead_cases.services``), with the modules the demos use
    imported as its attributes."""
    for name in ("_http", "content", "llm", "mailbox", "platform", "shop", "warehouse"):
        importlib.import_module(f"stead_cases.services.{name}")
    return importlib.import_module("stead_cases.services")


@contextmanager
def case_worker(settings: Settings, task_queue: str, config: Mapping[str, str]) -> Iterator[None]:
    """A ``stead worker`` child with the example's settings added to the environment.

    ``env(1)`` adds them to what the child inherits, so this process never reads its
    own environment (settings stay in stead.settings).
    """
    assignments = {
        "STEAD_HOME": str(settings.home.resolve()),
        "STEAD_TASK_QUEUE": task_queue,
        "STEAD_LOG_LEVEL": "WARNING",
        **config,
    }
    child = subprocess.Popen(
        ["env", *(f"{k}={v}" for k, v in assignments.items()), *STEAD, "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    seen: list[str] = []
    for line in child.stdout:
        seen.append(line)
        if "stead worker ready" in line:
            break
    else:
        child.wait()
        raise ConfigError("the worker exited before it was ready:\n" + "".join(seen[-20:]))
    stream = child.stdout
    # Keep reading: a full pipe would block the worker mid-run.
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
    try:
        yield
    finally:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def token_file(settings: Settings, tenant: str, principal: str, folder: Path) -> Path:
    """A principal token for ``principal`` (what `stead principal token` prints), in a
    private file for `stead approve --token-file`."""
    from stead.identity.tokens import PrincipalTokenIssuer
    from stead.keys import IDENTITY, key_store

    private = key_store(settings).private(IDENTITY)
    if private is None:
        raise ConfigError("no identity key in the stack's key store; run `stead keys init`")
    issued = PrincipalTokenIssuer(private).issue(tenant, principal)
    path = folder / f"{principal.replace(':', '_')}.token"
    path.write_text(issued.token)
    path.chmod(0o600)
    return path


def stead_approve(
    settings: Settings,
    pending: PendingApproval,
    approver: str,
    token: Path,
    *,
    reject: bool = False,
    comment: str = "",
) -> None:
    """Print the command, then run it: the approval goes through the real CLI."""
    flags = ["--reject"] if reject else []
    if comment:
        flags += ["--comment", comment]
    shown = " ".join([pending.workflow_id, pending.step_id, "--as", approver, *flags])
    console.print(f"  [cyan]$ stead approve {escape(shown)} --token-file {token.name}[/]")
    result = subprocess.run(
        [
            *("env", f"STEAD_HOME={settings.home.resolve()}", *STEAD, "approve"),
            *(pending.workflow_id, pending.step_id, "--as", approver, *flags),
            *("--token-file", str(token)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ConfigError(f"stead approve failed: {result.stderr.strip() or result.stdout.strip()}")


async def next_pending(handle: WorkflowHandle[Any, RunStatus]) -> PendingApproval | None:
    """The next step the run holds for a human, or None once the run has finished."""
    result = asyncio.ensure_future(handle.result())
    try:
        while not result.done():
            waiting: list[PendingApproval] = await handle.query(
                "pending_approvals", result_type=list[PendingApproval]
            )
            if waiting:
                return waiting[0]
            await asyncio.wait([result], timeout=0.1)
        return None
    finally:
        result.cancel()


def show_pending(pending: PendingApproval) -> None:
    console.print(
        f"[yellow]waiting for a human[/]: step [bold]{pending.step_id}[/] ({pending.operation})"
    )
    for reason in pending.reasons:
        console.print(f"  policy: {escape(reason)}")


async def slo_summary(settings: Settings, tenant: str, extra_usd: float = 0.0) -> None:
    """The tenant's SLO figures for the last hour, read from Postgres like `stead slo`."""
    from stead.slo.report import compute_report

    pool = await create_pool(settings.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            report = await compute_report(conn, tenant=tenant, since="1h")
    finally:
        await pool.close()
    f = report.tenants.get(tenant, report.total)
    a = f.approvals
    console.print(
        f"[bold]SLO summary[/] (tenant {tenant}, last hour; `stead slo --tenant {tenant}`)"
    )
    console.print(f"  runs: {f.runs.finished} finished, {f.runs.failed} failed")
    console.print(
        f"  approvals: {a.requested} requested, {a.answered} answered, "
        f"{a.overridden} overridden (override rate "
        + ("-" if a.override_rate is None else f"{a.override_rate:.0%}")
        + ")"
    )
    console.print(f"  minutes saved: {f.minutes_saved:g}")
    console.print(
        f"  cost: ${f.cost.total_usd:.6f} ({f.cost.total_tokens} tokens; planner and adapters"
        " such as llm.generate, as each run recorded)"
        + (f", of which drafting ${extra_usd:.6f}" if extra_usd else "")
    )
    console.print(f"  recovered steps: {f.recovery.recovered_steps} (retried, no effect doubled)")


def temp_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="stead-demo-")


async def put_opa_data(settings: Settings, path: str, value: Any) -> None:
    """What an operator does with `curl -X PUT $OPA/v1/data/...`, printed and done."""
    from stead.policy.admin import OpaAdmin

    body = json.dumps(value)
    console.print(
        f'  [cyan]$ curl -X PUT -H "Authorization: Bearer $STEAD_OPA_ADMIN_TOKEN" '
        f"{settings.opa_url}/v1/data/{path} -d '{body}'[/]"
    )
    await OpaAdmin(settings.opa_url, settings.opa_admin_token).aput_data(path, value)


def client_handle(client: Client, run_id: str) -> WorkflowHandle[Any, RunStatus]:
    return client.get_workflow_handle(run_id, result_type=RunStatus)
