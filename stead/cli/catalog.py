"""``stead catalog``: what operations this installation offers, for people, planners and OPA.

``stead catalog export --opa --out policies/stead/catalog/data.json`` writes the
catalog as OPA data. OPA maps a data file's directory to its path in ``data``, so a
file at ``<policy dir>/stead/catalog/data.json`` is ``data.stead.catalog`` whether OPA
loads the directory (``opa run --watch policies/``, the embedded stack) or a bundle
built from it (production). The file is the reviewable record of which operations
policy knows about; ``--push`` writes the same document into a running OPA's data
API instead (handy against ``stead dev up``; a bundle-managed OPA refuses it).

The catalog exported is the one a planning worker would use: built-ins, installed
plugins (``stead.adapters`` entry points) and ``STEAD_ADAPTER_QUEUES`` routing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stead.cli._common import console, fails_cleanly, settings
from stead.errors import ConfigError
from stead.policy.admin import OpaAdmin

app = typer.Typer(help="The adapter catalog: operations, schemas, risk, routing.")
OPA_DATA_PATH = "stead/catalog"


@app.command("list")
@fails_cleanly
def list_operations() -> None:
    """One line per operation: side effect, risk, idempotency, rate limit, task queue."""
    from adapters.registry import worker_catalog

    for op in worker_catalog(settings()):
        limit = f"{op.rate_limit_per_minute}/min" if op.rate_limit_per_minute else "unlimited"
        console.print(
            f"{op.name:<16} {op.side_effect:<8} {op.risk:<6} {op.idempotency:<9} "
            f"{limit:<10} {op.task_queue or '(run queue)'}",
            highlight=False,
        )


@app.command("export")
@fails_cleanly
def export(
    opa: Annotated[
        bool, typer.Option("--opa", help="OPA data for data.stead.catalog, not planner specs.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of standard output.")
    ] = None,
    push: Annotated[
        bool, typer.Option("--push", help="PUT the OPA data into STEAD_OPA_URL's data API.")
    ] = False,
) -> None:
    """Export the catalog: JSON schemas for planners, or (``--opa``) data for policy."""
    from adapters.registry import worker_catalog

    cfg = settings()
    catalog = worker_catalog(cfg)
    document: Any = (
        catalog.opa_data() if opa or push else [s.model_dump(mode="json") for s in catalog.specs()]
    )
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if push:
        try:
            OpaAdmin(cfg.opa_url, cfg.opa_admin_token).put_data(OPA_DATA_PATH, document)
        except ConfigError as exc:
            if "refused stead/catalog" not in exc.message:
                raise
            raise ConfigError(
                f"{exc.message}; a bundle-managed OPA takes data only from its bundle: "
                f"use --out <policy dir>/{OPA_DATA_PATH}/data.json instead"
            ) from None
        console.print(f"pushed {len(catalog)} operations to {cfg.opa_url}/v1/data/{OPA_DATA_PATH}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        console.print(f"wrote {len(catalog)} operations to {out}")
    elif not push:
        typer.echo(text, nl=False)
