"""``stead mcp``: a tenant's MCP servers (add, list, refresh, remove) and ``stead mcp serve``.

The configuration is a file per tenant under ``STEAD_MCP_DIR`` (``stead.mcp.config``);
each tool a server lists becomes the catalog operation ``mcp.<server>.<tool>`` on
workers started after the change. Changes are audited in the tenant's log.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from stead.cli._common import console, fails_cleanly, print_json, settings
from stead.errors import ConfigError

if TYPE_CHECKING:
    from stead.mcp.admin import McpAdmin

app = typer.Typer(help="MCP servers whose tools run as governed steps; Stead as an MCP server.")

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant whose servers these are.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ActorOption = Annotated[str, typer.Option("--as", help="Who makes the change, for the audit log.")]
T = TypeVar("T")


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r} must be KEY=VALUE (VALUE may be secret://...)")
        pairs[key] = value
    return pairs


def _run_admin(actor: str, work: Callable[[McpAdmin], Awaitable[T]]) -> T:
    from stead.db.pool import create_pool
    from stead.mcp.admin import McpAdmin
    from stead.mcp.config import McpConfigStore
    from stead.secrets import open_secret_store
    from stead.settings import secret_environment

    cfg = settings()

    async def go() -> T:
        pool = await create_pool(cfg.postgres_dsn, min_size=1, max_size=2)
        try:
            admin = McpAdmin(
                McpConfigStore(cfg.resolved_mcp_dir),
                pool,
                open_secret_store(cfg, secret_environment()),
                actor,
            )
            return await work(admin)
        finally:
            await pool.close()

    return asyncio.run(go())


@app.command("add")
@fails_cleanly
def add(
    name: Annotated[str, typer.Argument(help="Server name: operations are mcp.<name>.<tool>.")],
    tenant: TenantOption,
    command: Annotated[
        str | None, typer.Option("--command", help="A stdio server's command line.")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="A Streamable HTTP server's URL.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="KEY=VALUE for a stdio server (repeat).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="KEY=VALUE for an HTTP server (repeat).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per call.")] = 30.0,
    dedupes_by_key: Annotated[
        bool,
        typer.Option("--dedupes-by-key", help="The server honours _meta io.stead/idempotency_key."),
    ] = False,
    actor: ActorOption = "system:operator",
    json_out: JsonOption = False,
) -> None:
    """Connect, list the server's tools and pin each definition by hash."""
    from stead.mcp.config import McpServerConfig

    if (command is None) == (url is None):
        raise ConfigError("give exactly one of --command (stdio) or --url (Streamable HTTP)")
    server = McpServerConfig(
        transport="stdio" if command is not None else "http",
        command=tuple(shlex.split(command)) if command is not None else (),
        url=url,
        env=_pairs(env or [], "--env"),
        headers=_pairs(header or [], "--header"),
        timeout_seconds=timeout,
        dedupes_by_key=dedupes_by_key,
    )
    pinned = _run_admin(actor, lambda admin: admin.add(tenant, name, server))
    tools = {t: p.hash for t, p in sorted(pinned.tools.items())}
    if json_out:
        print_json({"server": name, "tenant": tenant, "tools": tools})
        return
    console.print(f"added MCP server [bold]{name}[/] for {tenant}: {len(tools)} tools pinned")
    for tool in tools:
        console.print(f"  mcp.{name}.{tool}", highlight=False)


@app.command("list")
@fails_cleanly
def list_servers(tenant: TenantOption, json_out: JsonOption = False) -> None:
    """The tenant's servers, their pinned tools and any change awaiting review."""
    from stead.mcp.config import McpConfigStore

    config = McpConfigStore(settings().resolved_mcp_dir).load(tenant)
    rows = [
        {
            "server": name,
            **server.identity(),
            "env": sorted(server.env),
            "headers": sorted(server.headers),
            "tools": {t: p.hash for t, p in sorted(server.tools.items())},
            "pending": sorted(server.pending),
        }
        for name, server in sorted(config.servers.items())
    ]
    if json_out:
        print_json(rows)
        return
    for name, server in sorted(config.servers.items()):
        where = server.url or " ".join(server.command)
        pending = f", {len(server.pending)} changed (refused)" if server.pending else ""
        tools = f"{len(server.tools)} tools{pending}"
        console.print(f"{name:<16} {server.transport:<5} {tools}  {where}", highlight=False)


@app.command("refresh")
@fails_cleanly
def refresh(
    name: Annotated[str, typer.Argument(help="The server to list again.")],
    tenant: TenantOption,
    accept: Annotated[
        bool, typer.Option("--accept", help="Pin the listed definitions (after review).")
    ] = False,
    actor: ActorOption = "system:operator",
    json_out: JsonOption = False,
) -> None:
    """List the tools again; changed ones are refused until you accept them."""
    diff = _run_admin(actor, lambda admin: admin.refresh(tenant, name, accept=accept))
    if json_out:
        print_json({"server": name, "accepted": accept, **diff})
        return
    if not any(diff.values()):
        console.print(f"{name}: no change")
        return
    for kind in ("changed", "added", "removed"):
        for tool in diff[kind]:
            console.print(f"  {kind:<8} mcp.{name}.{tool}", highlight=False)
    console.print("accepted" if accept else "refused until `stead mcp refresh --accept`")


@app.command("remove")
@fails_cleanly
def remove(
    name: Annotated[str, typer.Argument(help="The server to remove.")],
    tenant: TenantOption,
    actor: ActorOption = "system:operator",
) -> None:
    """Forget the server; its operations are refused from now on."""
    _run_admin(actor, lambda admin: admin.remove(tenant, name))
    console.print(f"removed MCP server {name} from {tenant}")


@app.command("serve")
@fails_cleanly
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
) -> None:
    """Serve Stead to MCP clients (Streamable HTTP at /mcp), principal tokens as bearer tokens."""
    import uvicorn

    from stead.cli.mcp_serve import SteadMcp

    url = f"http://{host}:{port}"
    app_ = SteadMcp(settings(), url).server.streamable_http_app(host=host, stateless_http=True)
    console.print(f"stead mcp serve: {url}/mcp", highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="warning")
