"""``stead demo``: the whole loop on the embedded stack, started and stopped around it.

A stack that was already running is left running; one the demo started is stopped.
The worker is a real ``stead worker`` child process, as in production. The helpers
here (the stack, a worker, the tenant's directory entry, a starter's credential) are
also what plugin demos build on: the field cases' (``examples/stead-cases``) import them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from stead.cli._common import console, settings
from stead.cli.starts import StartCredential
from stead.db.pool import create_pool, tenant_transaction
from stead.devstack import stack_down, stack_status, stack_up
from stead.errors import ConfigError
from stead.settings import Settings, load_settings


@contextmanager
def embedded_stack() -> Iterator[Settings]:
    base = load_settings()
    already = bool(stack_status(base)["running"])
    console.print("[bold]starting the embedded stack[/] (Temporal, Postgres, OPA, Qdrant)...")
    stack_up(base)
    try:
        # Read again now that the stack (and its keys) exist; this also installs the
        # audit chain the demos append with, as every other command does.
        yield settings()
    finally:
        if not already:
            stack_down(base)
            console.print("stack stopped")


@contextmanager
def worker_process(settings: Settings, task_queue: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "STEAD_HOME": str(settings.home), "STEAD_TASK_QUEUE": task_queue}
    child = subprocess.Popen(
        [sys.executable, "-m", "stead.cli", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if "stead worker ready" in line:
                break
        else:
            raise RuntimeError("the worker exited before it was ready")
        # Keep draining: a worker blocked on a full stdout pipe would stall the demo.
        threading.Thread(target=lambda: [None for _ in child.stdout or ()], daemon=True).start()
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def demo_task_queue() -> str:
    return f"demo-{uuid.uuid4().hex[:8]}"


async def ensure_directory(settings: Settings, tenant: str, principals: list[str]) -> None:
    """The tenant and its principals, created if missing (the demo may run twice)."""
    from stead.identity.directory import add_principal, create_tenant
    from stead.identity.errors import PrincipalExists, TenantExists

    pool = await create_pool(settings.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            with suppress(TenantExists):
                await create_tenant(conn, tenant)
        for principal in principals:
            async with tenant_transaction(pool, tenant) as conn:
                with suppress(PrincipalExists):
                    await add_principal(conn, tenant, principal)
    finally:
        await pool.close()
    console.print(f"directory: tenant [bold]{tenant}[/] with {', '.join(principals)}")


def start_credential(settings: Settings, tenant: str, principal: str) -> StartCredential:
    """A principal token for the demo's starter, held in memory and narrowed per start
    (what `stead run --token-file` does), so the demo runs with start tokens required."""
    from stead.identity.tokens import PrincipalTokenIssuer
    from stead.keys import IDENTITY, key_store

    private = key_store(settings).private(IDENTITY)
    if private is None:
        raise ConfigError("no identity key in the stack's key store; run `stead keys init`")
    issued = PrincipalTokenIssuer(private).issue(tenant, principal)
    return StartCredential.load(settings, issued.token)


def run_foundation_demo() -> None:
    """Hello workflow, then the records-demo playbook through OPA, the ledger and the audit log."""
    import asyncio

    from stead.audit import chain_for, verify_chain
    from stead.cli.runs import summarize
    from stead.cli.starts import start_governed
    from stead.contracts.hello import Greeting, GreetingRequest
    from stead.contracts.run import RunRequest, RunStatus
    from stead.temporal import connect

    async def go(cfg: Settings, task_queue: str) -> tuple[Greeting, RunStatus, bool]:
        client = await connect(cfg)
        greeting = await client.execute_workflow(
            "stead.hello",
            GreetingRequest(name="Stead"),
            id=f"demo-hello-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=Greeting,
        )
        request = RunRequest(
            tenant="demo",
            principal="user:demo",
            playbook="records-demo",
            inputs={"key": f"demo-{uuid.uuid4().hex[:6]}", "note": "written by make demo"},
        )
        # Starts need a proven starter: user:demo is in the directory and presents its
        # token narrowed to this start, as `stead run --token-file` would.
        await ensure_directory(cfg, "demo", ["user:demo"])
        starter = start_credential(cfg, "demo", "user:demo")
        handle = await start_governed(client, task_queue, request, starter)
        status: RunStatus = await handle.result()
        pool = await create_pool(cfg.postgres_dsn, max_size=1)
        try:
            async with tenant_transaction(pool, "demo") as conn:
                chain = await verify_chain(conn, "demo", chain=chain_for(cfg))
        finally:
            await pool.close()
        return greeting, status, chain.ok

    with embedded_stack() as cfg:
        task_queue = demo_task_queue()
        with worker_process(cfg, task_queue):
            greeting, status, chain_ok = asyncio.run(go(cfg, task_queue))
        console.print(
            f"[green]hello workflow completed[/]: {greeting.message} (worker {greeting.worker})"
        )
        console.print(f"governed run {status.workflow_id}: [bold]{status.status}[/]")
        for step in summarize(status)["steps"]:
            console.print(
                f"  {step['id']:<6} {step['operation']:<14} {step['status']:<10} "
                f"policy={(step['decision'] or {}).get('outcome', '-')} result={step['result']}"
            )
        console.print(
            f"audit chain for tenant demo: {'[green]intact[/]' if chain_ok else '[red]BROKEN[/]'}"
        )
