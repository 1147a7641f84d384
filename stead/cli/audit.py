"""Reading and verifying the audit log from the CLI."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from rich.markup import escape
from temporalio.service import RPCError

from stead.audit.chain import installed
from stead.audit.log import list_events, verify_chain
from stead.cli._common import console, err_console, print_json
from stead.contracts.search_attributes import SA_TENANT
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
    # One line per event, like `git log --oneline`: greppable, never wrapped mid-field.
    console.print(f"audit trail of {run_id}: {len(events)} events", highlight=False)
    for e in events:
        data = json.dumps(e["data"], sort_keys=True)
        line = (
            f"{e['seq']:>5}  {str(e['recorded_at'])[:19].replace('T', ' ')}  {e['kind']:<18} "
            f"{e['actor']:<16} {e.get('step_id') or '-':<10} "
            f"{data if len(data) <= 100 else data[:99] + '…'}"
        )
        console.print(line, soft_wrap=True, highlight=False, markup=False)


async def _tenant_of(cfg: Settings, run_id: str) -> str:
    """The run's tenant from Temporal's search attributes: the caller need not repeat it."""
    from stead.cli._common import cli_client, is_outage, temporal_unavailable

    client = await cli_client(cfg)
    try:
        described = await client.get_workflow_handle(run_id).describe()
    except RPCError as exc:
        if is_outage(exc):
            raise temporal_unavailable(exc) from None
        raise ConfigError(f"run {run_id} not found ({exc.message}); pass --tenant") from None
    tenant = described.typed_search_attributes.get(SA_TENANT)
    if not tenant:
        raise ConfigError(f"run {run_id} has no tenant attribute; pass --tenant")
    return tenant


def verify_audit(cfg: Settings, tenant: str | None, json_out: bool) -> bool:
    """Verify one tenant's chain, or every tenant's: exit status 1 for any finding.

    Needs the audit key (``audit.secret``) and the anchor directory the workers write;
    without the key it stops with one line (AuditKeyMissing), never "intact".
    """
    chain = installed()
    chain.key()

    async def go() -> list[dict[str, object]]:
        tenants = [tenant] if tenant else await _all_tenants(cfg, chain.anchors.tenants())
        pool = await create_pool(cfg.postgres_dsn, max_size=2)
        results = []
        try:
            for t in tenants:
                async with tenant_transaction(pool, t) as conn:
                    result = await verify_chain(conn, t, chain=chain)
                results.append({"tenant": t, **result.model_dump(mode="json")})
        finally:
            await pool.close()
        return results

    results = asyncio.run(go())
    ok = all(r["ok"] for r in results)
    if json_out:
        print_json({"ok": ok, "tenants": results})
        return ok
    if not results:
        console.print("no audit events to verify")
    for r in results:
        if r["ok"]:
            unkeyed = f" ({r['unkeyed']} from before the keyed chain)" if r["unkeyed"] else ""
            console.print(
                f"[green]ok[/] {r['tenant']}: {r['checked']} events{unkeyed}, chain intact,"
                f" anchored at seq {r['anchored_seq'] or '-'}",
                highlight=False,
            )
        else:
            bad = r["first_bad_seq"]
            where = "" if bad is None else f" first bad row seq {bad}:"
            err_console.print(
                f"[bold red]TAMPERED[/] {r['tenant']}:{where} {escape(str(r['reason']))}",
                highlight=False,
            )
    return ok


async def _all_tenants(cfg: Settings, anchored: list[str]) -> list[str]:
    """Every tenant with audit rows or an anchor (a chain deleted whole keeps its anchor).

    Listing rows across tenants needs the admin role (an operator tool).
    """
    if not cfg.postgres_admin_dsn:
        raise ConfigError("verifying all tenants needs STEAD_POSTGRES_ADMIN_DSN; or pass --tenant")
    try:
        conn = await asyncpg.connect(cfg.postgres_admin_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        host = cfg.postgres_admin_dsn.rsplit("@", 1)[-1]
        raise ConfigError(f"cannot connect to Postgres at {host} as admin: {exc}") from None
    try:
        rows = await conn.fetch("SELECT DISTINCT tenant FROM audit_events ORDER BY tenant")
    finally:
        await conn.close()
    return sorted({r["tenant"] for r in rows} | set(anchored))
