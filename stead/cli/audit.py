"""Reading and verifying the audit log from the CLI."""

from __future__ import annotations

import asyncio

import asyncpg
from rich.table import Table

from stead.audit.log import list_events, verify_chain
from stead.cli._common import console, err_console, print_json
from stead.db.pool import create_pool, tenant_transaction
from stead.errors import ConfigError
from stead.settings import Settings


def show_run_audit(cfg: Settings, run_id: str, tenant: str | None, json_out: bool) -> None:
    async def go() -> list[dict[str, object]]:
        resolved = tenant or await _tenant_of(cfg, run_id)
        pool = await create_pool(cfg.postgres_dsn, max_size=2)
        try:
            async with tenant_transaction(pool, resolved) as conn:
                events = await list_events(conn, resolved, run_id)
        finally:
            await pool.close()
        return [e.model_dump(mode="json") for e in events]

    events = asyncio.run(go())
    if json_out:
        print_json(events)
        return
    table = Table(title=f"Audit trail of {run_id}")
    for col in ("seq", "at", "kind", "actor", "step", "data"):
        table.add_column(col)
    for e in events:
        table.add_row(str(e["seq"]), str(e["recorded_at"]), str(e["kind"]), str(e["actor"]), str(e.get("step_id") or ""), str(e["data"])[:80])
    console.print(table)


async def _tenant_of(cfg: Settings, run_id: str) -> str:
    """The run's tenant from Temporal's search attributes: the caller need not repeat it."""
    from workers.main import connect

    client = await connect(cfg)
    try:
        described = await client.get_workflow_handle(run_id).describe()
    except Exception as exc:
        raise ConfigError(f"run {run_id} not found ({exc}); pass --tenant") from None
    values = described.search_attributes.get("SteadTenant") or []
    if not values:
        raise ConfigError(f"run {run_id} has no tenant attribute; pass --tenant")
    return str(values[0])


def verify_audit(cfg: Settings, tenant: str | None, json_out: bool) -> bool:
    async def go() -> list[dict[str, object]]:
        tenants = [tenant] if tenant else await _all_tenants(cfg)
        pool = await create_pool(cfg.postgres_dsn, max_size=2)
        results = []
        try:
            for t in tenants:
                async with tenant_transaction(pool, t) as conn:
                    result = await verify_chain(conn, t)
                results.append({"tenant": t, **result.model_dump(mode="json")})
        finally:
            await pool.close()
        return results

    results = asyncio.run(go())
    ok = all(r["ok"] for r in results)
    if json_out:
        print_json({"ok": ok, "tenants": results})
        return ok
    for r in results:
        if r["ok"]:
            console.print(f"[green]ok[/] {r['tenant']}: {r['checked']} events, chain intact")
        else:
            err_console.print(
                f"[bold red]TAMPERED[/] {r['tenant']}: first bad row seq {r['first_bad_seq']}: {r['reason']}",
                highlight=False,
            )
    return ok


async def _all_tenants(cfg: Settings) -> list[str]:
    """Listing every tenant crosses tenants, so it needs the admin role (an operator tool)."""
    if not cfg.postgres_admin_dsn:
        raise ConfigError("verifying all tenants needs STEAD_POSTGRES_ADMIN_DSN; or pass --tenant")
    conn = await asyncpg.connect(cfg.postgres_admin_dsn)
    try:
        rows = await conn.fetch("SELECT DISTINCT tenant FROM audit_events ORDER BY tenant")
    finally:
        await conn.close()
    return [r["tenant"] for r in rows]
