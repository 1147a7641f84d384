"""Connecting to one configured MCP server with the official SDK, secrets resolved here.

A connection lives for one ``tools/list`` or one ``tools/call``: a stdio server is a
child process of the worker started with only the environment its configuration
names (the SDK adds PATH, HOME and the like, never the worker's own variables), so
one tenant's server never sees another's credentials or the worker's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from pydantic import JsonValue, SecretStr

from stead.egress import Destination, url_destination
from stead.mcp.config import McpServerConfig

SECRET_SCHEME = "secret://"

# Resolves one secret:// reference for this server, checked against where it goes.
Resolver = Callable[[str, Destination | None], Awaitable[SecretStr]]


class McpUnreachable(Exception):
    """The server could not be started or reached; retrying may help."""


async def resolved_values(
    server: McpServerConfig, resolve: Resolver
) -> tuple[dict[str, str], dict[str, str], list[SecretStr]]:
    """``env`` and ``headers`` with references resolved, and the secret values (to redact).

    A stdio server's environment goes nowhere but its own process (destination None);
    an HTTP server's headers go to its URL, which the secret must be bound to.
    """
    secrets: list[SecretStr] = []

    async def value(raw: str, destination: Destination | None) -> str:
        if not raw.startswith(SECRET_SCHEME):
            return raw
        secret = await resolve(raw, destination)
        secrets.append(secret)
        return secret.get_secret_value()

    env = {k: await value(v, None) for k, v in server.env.items()}
    target = url_destination(server.url) if server.url else None
    headers = {k: await value(v, target) for k, v in server.headers.items()}
    return env, headers, secrets


@asynccontextmanager
async def connected(
    server: McpServerConfig, env: dict[str, str], headers: dict[str, str]
) -> AsyncIterator[Client]:
    """An initialized SDK client for ``server``; closed (and a stdio child ended) on exit."""
    if server.transport == "stdio":
        params = StdioServerParameters(
            command=server.command[0], args=list(server.command[1:]), env=env
        )
        client = Client(params, read_timeout_seconds=server.timeout_seconds, cache=None)
    else:
        assert server.url is not None
        http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(server.timeout_seconds))
        transport = streamable_http_client(server.url, http_client=http)
        client = Client(transport, read_timeout_seconds=server.timeout_seconds, cache=None)
    try:
        async with client:
            yield client
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap whatever the body raised; callers want the error
        # itself (a timeout, an AdapterError), not a group of one.
        leaf = _only(group)
        if leaf is None:
            raise
        if isinstance(leaf, (OSError, httpx2.HTTPError)):
            raise McpUnreachable(f"{type(leaf).__name__}: {leaf}") from leaf
        raise leaf from None
    except (OSError, httpx2.HTTPError) as exc:
        raise McpUnreachable(f"{type(exc).__name__}: {exc}") from exc


def _only(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested groups of one, else None."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        if len(leaf.exceptions) != 1:
            return None
        leaf = leaf.exceptions[0]
    return leaf


async def list_tool_definitions(client: Client) -> list[dict[str, JsonValue]]:
    """Every tool the server lists (all pages), as the JSON it sent (camelCase keys)."""
    tools: list[dict[str, JsonValue]] = []
    cursor: str | None = None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools.extend(
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in page.tools
        )
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools
