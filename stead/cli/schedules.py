"""``stead schedules``: see Stead's Temporal Schedules in the namespace and remove leftovers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from temporalio.client import Client

from stead.cli._common import console, fails_cleanly, print_json, with_client
from stead.temporal.schedules import SteadSchedule, prune_schedules, stead_schedules

app = typer.Typer(help="Stead's Temporal Schedules in the configured namespace.")


@app.command("list")
@fails_cleanly
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every schedule that starts a Stead workflow, its queue, and whether a worker polls it."""
    found = with_client(stead_schedules)
    _show(found, json_out, empty="no Stead schedules in this namespace")


@app.command()
@fails_cleanly
def prune(
    everything: Annotated[
        bool, typer.Option("--all", help="Remove every Stead schedule, polled queue or not.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Remove Stead's schedules whose task queue no worker polls (all of them with --all)."""

    async def go(client: Client) -> list[SteadSchedule]:
        return await prune_schedules(client, everything=everything)

    _show(with_client(go), json_out, empty="nothing to prune", title="removed")


def _show(found: list[SteadSchedule], json_out: bool, *, empty: str, title: str = "") -> None:
    if json_out:
        print_json([s.model_dump() for s in found])
        return
    if not found:
        console.print(empty)
        return
    table = Table(title=title or None)
    for column in ("schedule", "workflow", "task queue", "polled", "paused"):
        table.add_column(column)
    for s in found:
        table.add_row(s.id, s.workflow, s.task_queue, "yes" if s.polled else "no", str(s.paused))
    console.print(table)
