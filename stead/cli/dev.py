"""``stead dev``: the embedded real stack on loopback."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from stead.cli._common import console, fails_cleanly, print_json, settings
from stead.devstack import stack_down, stack_status, stack_up
from stead.devstack.stack import ExternalTemporal, RequestedPorts, env_lines

app = typer.Typer(help="Run Temporal, Postgres, OPA and Qdrant locally for development and tests.")


@app.command()
@fails_cleanly
def up(
    temporal_port: Annotated[
        int | None, typer.Option(help="Temporal gRPC port (default: a free one).")
    ] = None,
    temporal_ui_port: Annotated[int | None, typer.Option(help="Temporal UI port.")] = None,
    postgres_port: Annotated[int | None, typer.Option(help="Postgres port.")] = None,
    opa_port: Annotated[int | None, typer.Option(help="OPA port.")] = None,
    temporal_address: Annotated[
        str | None,
        typer.Option(
            help="Use this Temporal cluster (host:port) instead of starting a dev server; "
            "prepare it once with `stead temporal setup`."
        ),
    ] = None,
    temporal_namespace: Annotated[
        str, typer.Option(help="Namespace on the --temporal-address cluster.")
    ] = "default",
    json_out: Annotated[bool, typer.Option("--json", help="Print the stack as JSON.")] = False,
) -> None:
    """Start the stack (harmless when already running); endpoints go to $STEAD_HOME/stack.json."""
    requested = RequestedPorts(
        temporal=temporal_port, temporal_ui=temporal_ui_port, postgres=postgres_port, opa=opa_port
    )
    external = ExternalTemporal(temporal_address, temporal_namespace) if temporal_address else None
    stack_up(settings(), requested, external=external)
    status = stack_status(settings())
    if json_out:
        print_json(status)
        return
    _print_status(status)


@app.command()
@fails_cleanly
def down(
    purge: Annotated[bool, typer.Option(help="Also delete all data in $STEAD_HOME.")] = False,
) -> None:
    """Stop exactly the processes `up` started."""
    stopped = stack_down(settings(), purge=purge)
    console.print(
        f"stopped: {', '.join(stopped) or 'nothing was running'}"
        + (" (data purged)" if purge else "")
    )


@app.command()
@fails_cleanly
def status(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Which services run, on which ports, and where Qdrant lives."""
    report = stack_status(settings())
    if json_out:
        print_json(report)
    else:
        _print_status(report)
    if not report["running"]:
        raise typer.Exit(1)


@app.command()
@fails_cleanly
def env() -> None:
    """Shell exports for the running stack: eval "$(stead dev env)"."""
    lines = env_lines(settings().home)
    if not lines:
        console.print("no stack is running; start one with `stead dev up`")
        raise typer.Exit(1)
    typer.echo("\n".join(lines))


def _print_status(report: dict[str, object]) -> None:
    table = Table(title=f"Stead dev stack in {report['home']}")
    table.add_column("service")
    table.add_column("state")
    table.add_column("where")
    services = report.get("services")
    assert isinstance(services, dict)
    for name, info in services.items():
        state = "[green]running[/]" if info["alive"] else "[red]stopped[/]"
        ports = ", ".join(f"{k}={v}" for k, v in info["ports"].items())
        table.add_row(name, state, f"pid {info['pid']}, {ports}")
    endpoints = report.get("endpoints")
    if "temporal" not in services and isinstance(endpoints, dict):
        table.add_row("temporal", "[green]external[/]", str(endpoints.get("temporal_address")))
    qdrant = report.get("qdrant")
    if isinstance(qdrant, dict):
        table.add_row("qdrant", f"[green]{qdrant['mode']}[/]", str(qdrant["location"]))
    console.print(table)
    if report.get("temporal_ui"):
        console.print(f"Temporal UI: {report['temporal_ui']}")
    if report.get("opa_tokens"):
        console.print(f"OPA tokens (decision, admin): {report['opa_tokens']}")
