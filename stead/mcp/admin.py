"""What ``stead mcp add|refresh|remove`` do, audited: pin a server's tools, review changes.

Adding a server lists its tools with the SDK and pins every definition by hash.
Refreshing lists them again: a definition that differs from its pin (or a new tool)
is recorded as *pending* and refused until ``--accept``; accepting makes the live
listing the pins. Every change lands in the tenant's audit log with the hashes, so
"who accepted this tool definition, when" has an answer.
"""

from __future__ import annotations

import asyncpg
from pydantic import JsonValue, SecretStr

from stead.audit.log import AuditEvent, append_event
from stead.db.pool import tenant_transaction
from stead.egress import Destination
from stead.errors import ConfigError
from stead.mcp.config import (
    SERVER_NAME,
    McpConfigStore,
    McpServerConfig,
    PinnedTool,
    tool_segment,
)
from stead.mcp.session import connected, list_tool_definitions, resolved_values
from stead.secrets import SecretStore


class McpAdmin:
    def __init__(
        self, store: McpConfigStore, pool: asyncpg.Pool, secrets: SecretStore, actor: str
    ) -> None:
        self._store = store
        self._pool = pool
        self._secrets = secrets
        self._actor = actor

    async def add(self, tenant: str, name: str, server: McpServerConfig) -> McpServerConfig:
        if not SERVER_NAME.match(name):
            raise ConfigError(
                f"MCP server name {name!r} must be lowercase letters, digits and _ (max 40), "
                "starting with a letter: it becomes part of operation names mcp.<server>.<tool>"
            )
        owner = self._store.owner(name)
        if owner is not None:
            raise ConfigError(
                f"MCP server {name!r} is already configured"
                + (" for this tenant; `stead mcp remove` it first" if owner == tenant else "")
                + (" (by another tenant); pick another name" if owner != tenant else "")
            )
        tools = await self._listed(tenant, server)
        pinned = server.model_copy(update={"tools": tools, "pending": {}})
        config = self._store.load(tenant)
        self._store.save(
            tenant, config.model_copy(update={"servers": {**config.servers, name: pinned}})
        )
        await self._audit(
            tenant,
            "mcp_server_added",
            {"server": name, **server.identity(), "tools": _hashes(tools)},
        )
        return pinned

    async def refresh(self, tenant: str, name: str, *, accept: bool) -> dict[str, list[str]]:
        """List again; return ``{"changed", "added", "removed"}`` tool names vs the pins."""
        config = self._store.load(tenant)
        server = config.servers.get(name)
        if server is None:
            raise ConfigError(f"tenant {tenant} has no MCP server {name!r}; see `stead mcp list`")
        live = await self._listed(tenant, server)
        diff = {
            "changed": sorted(
                t for t in live if t in server.tools and live[t].hash != server.tools[t].hash
            ),
            "added": sorted(t for t in live if t not in server.tools),
            "removed": sorted(t for t in server.tools if t not in live),
        }
        if accept:
            updated = server.model_copy(update={"tools": live, "pending": {}})
            kind = "mcp_tools_accepted"
        else:
            pending = {t: live[t] for t in diff["changed"] + diff["added"]}
            updated = server.model_copy(update={"pending": pending})
            kind = "mcp_tools_changed"
        self._store.save(
            tenant, config.model_copy(update={"servers": {**config.servers, name: updated}})
        )
        if accept or any(diff.values()):
            await self._audit(
                tenant,
                kind,
                {
                    "server": name,
                    "changed": {
                        t: {"pinned": server.tools[t].hash, "listed": live[t].hash}
                        for t in diff["changed"]
                    },
                    "added": _hashes({t: live[t] for t in diff["added"]}),
                    "removed": list(diff["removed"]),
                },
            )
        return diff

    async def remove(self, tenant: str, name: str) -> None:
        config = self._store.load(tenant)
        if name not in config.servers:
            raise ConfigError(f"tenant {tenant} has no MCP server {name!r}; see `stead mcp list`")
        servers = {k: v for k, v in config.servers.items() if k != name}
        self._store.save(tenant, config.model_copy(update={"servers": servers}))
        await self._audit(tenant, "mcp_server_removed", {"server": name})

    async def _listed(self, tenant: str, server: McpServerConfig) -> dict[str, PinnedTool]:
        async def resolve(ref: str, destination: Destination | None) -> SecretStr:
            return await self._secrets.get(ref, tenant, adapter="mcp", destination=destination)

        env, headers, _ = await resolved_values(server, resolve)
        async with connected(server, env, headers) as client:
            definitions = await list_tool_definitions(client)
        return {
            str(d["name"]): PinnedTool.of(d)
            for d in definitions
            if tool_segment(str(d["name"])) is not None
        }

    async def _audit(self, tenant: str, kind: str, data: dict[str, JsonValue]) -> None:
        async with tenant_transaction(self._pool, tenant) as conn:
            await append_event(
                conn, AuditEvent(tenant=tenant, kind=kind, actor=self._actor, data=data)
            )


def _hashes(tools: dict[str, PinnedTool]) -> dict[str, JsonValue]:
    return {name: pin.hash for name, pin in sorted(tools.items())}
