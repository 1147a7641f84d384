"""The ``stead`` entry point: one Typer app, one sub-app per concern."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated

import typer
from temporalio.client import Client

from stead.cli import (
    bulk_approve,
    catalog,
    codec,
    dev,
    identity,
    mcp,
    memory,
    policy,
    runs,
    schedules,
    slo,
    temporal_setup,
    upgrade,
)
from stead.cli._common import console, fails_cleanly, print_json, settings, with_client
from stead.cli.plugins import add_plugin_commands, plugin_demo

app = typer.Typer(help="Stead: a durable, governed runtime for AI agents.", no_args_is_help=True)
app.add_typer(dev.app, name="dev")
app.add_typer(catalog.app, name="catalog")
app.add_typer(mcp.app, name="mcp")
app.add_typer(memory.app, name="memory")
app.add_typer(identity.tenant_app, name="tenant")
app.add_typer(identity.principal_app, name="principal")
app.add_typer(identity.keys_app, name="keys")
app.add_typer(policy.app, name="policy")
app.add_typer(temporal_setup.app, name="temporal")
app.add_typer(schedules.app, name="schedules")
app.add_typer(upgrade.app, name="upgrade")
runs.register(app)
bulk_approve.register(app)
slo.register(app)
codec.register(app)
# Command groups from installed packages (the field cases add `stead webhook`).
add_plugin_commands(app)


db_app = typer.Typer(help="Database schema.")
app.add_typer(db_app, name="db")


@db_app.command("migrate")
@fails_cleanly
def db_migrate() -> None:
    """Apply pending migrations with the admin DSN (idempotent; safe on every deploy)."""
    from stead.db.migrations import migrate
    from stead.errors import ConfigError

    cfg = settings()
    if not cfg.postgres_admin_dsn:
        raise ConfigError("set STEAD_POSTGRES_ADMIN_DSN (owner or superuser) to apply migrations")
    applied = asyncio.run(migrate(cfg.postgres_admin_dsn, cfg.postgres_dsn))
    console.print(f"applied: {', '.join(applied) or 'nothing (up to date)'}")


@app.command()
@fails_cleanly
def worker(
    adapters: Annotated[
        list[str] | None,
        typer.Option(
            "--adapters",
            help="Edge worker: run only these adapters' steps (comma-separated or repeated).",
        ),
    ] = None,
    task_queue: Annotated[
        str | None, typer.Option("--task-queue", help="Queue to poll (default STEAD_TASK_QUEUE).")
    ] = None,
) -> None:
    """Run a worker on the configured task queue until SIGTERM."""
    from stead.settings import load_settings
    from workers.main import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    names = [n.strip() for group in adapters or () for n in group.split(",") if n.strip()]
    cfg = load_settings(task_queue=task_queue) if task_queue else settings()
    asyncio.run(run_worker(cfg, adapters=names))


@app.command()
@fails_cleanly
def demo(
    case: Annotated[
        str | None,
        typer.Argument(
            help="A demo from an installed plugin (content, commerce); none: the foundation demo"
        ),
    ] = None,
) -> None:
    """Start the stack and a worker and run a demo: the foundation loop, or a plugin's.

    The field cases' demos (content, commerce) come with their plugin,
    ``pip install -e examples/stead-cases``; without it only the foundation demo runs.
    """
    if case is None:
        from stead.cli.demo import run_foundation_demo

        run_foundation_demo()
    else:
        plugin_demo(case)()


@app.command()
@fails_cleanly
def hello(
    name: Annotated[str, typer.Argument(help="Who to greet.")] = "Stead",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the hello workflow on a worker and print its result (a wiring check)."""
    from stead.contracts.hello import GreetingRequest

    cfg = settings()

    async def go(client: Client) -> dict[str, str]:
        result = await client.execute_workflow(
            "stead.hello",
            GreetingRequest(name=name),
            id=f"hello-{uuid.uuid4()}",
            task_queue=cfg.task_queue,
            result_type=dict,
        )
        return dict(result)

    result = with_client(go, cfg)
    if json_out:
        print_json(result)
    else:
        console.print(
            f"[green]workflow completed[/]: {result['message']} (from worker {result['worker']})"
        )
