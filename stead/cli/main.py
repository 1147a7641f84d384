"""The ``stead`` entry point: one Typer app, one sub-app per concern."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated

import typer

from stead.cli import dev, runs
from stead.cli._common import console, fails_cleanly, print_json, settings

app = typer.Typer(help="Stead: a durable, governed runtime for AI agents.", no_args_is_help=True)
app.add_typer(dev.app, name="dev")
runs.register(app)


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
def worker() -> None:
    """Run a worker on the configured task queue until SIGTERM."""
    from workers.main import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_worker(settings()))


@app.command()
@fails_cleanly
def demo() -> None:
    """Start the stack and a worker, run hello and a governed playbook, verify the audit log."""
    from stead.cli.demo import run_foundation_demo

    run_foundation_demo()


@app.command()
@fails_cleanly
def hello(
    name: Annotated[str, typer.Argument(help="Who to greet.")] = "Stead",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the hello workflow on a worker and print its result (a wiring check)."""
    from stead.contracts.hello import GreetingRequest
    from workers.main import connect

    async def go() -> dict[str, str]:
        cfg = settings()
        client = await connect(cfg)
        result = await client.execute_workflow(
            "stead.hello",
            GreetingRequest(name=name),
            id=f"hello-{uuid.uuid4()}",
            task_queue=cfg.task_queue,
            result_type=dict,
        )
        return dict(result)

    result = asyncio.run(go())
    if json_out:
        print_json(result)
    else:
        console.print(
            f"[green]workflow completed[/]: {result['message']} (from worker {result['worker']})"
        )
