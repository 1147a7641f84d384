"""``stead temporal setup``: make a namespace ready for Stead (namespace, search attributes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from temporalio.client import Client

from stead.cli._common import console, fails_cleanly, settings, with_client
from stead.namespace_setup import cloud_steps, ensure_namespace, register_search_attributes

app = typer.Typer(help="Prepare a Temporal cluster for Stead.")


@app.command()
@fails_cleanly
def setup(
    namespace: Annotated[
        str | None, typer.Option(help="Namespace (default STEAD_TEMPORAL_NAMESPACE).")
    ] = None,
    retention_days: Annotated[
        int, typer.Option(min=1, help="Retention of closed runs when the namespace is created.")
    ] = 7,
    cloud: Annotated[
        bool, typer.Option("--cloud", help="Print the Temporal Cloud (tcld) steps instead.")
    ] = False,
) -> None:
    """Create the namespace if missing and register Stead's search attributes (idempotent)."""
    cfg = settings()
    name = namespace or cfg.temporal_namespace
    if cloud:
        typer.echo("\n".join(cloud_steps(name)))
        return
    # The namespace may not exist yet: connect on it without needing it.
    cfg = cfg.model_copy(update={"temporal_namespace": name})

    async def go(client: Client) -> tuple[bool, list[str]]:
        created = await ensure_namespace(client, name, timedelta(days=retention_days))
        return created, await register_search_attributes(client, name)

    created, added = with_client(go, cfg)
    console.print(
        f"namespace {name}: {'created' if created else 'exists'}; search attributes: "
        f"{'added ' + ', '.join(added) if added else 'all present (nothing to do)'}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
