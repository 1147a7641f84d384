"""The built-in operations, the catalog they form, and the worker-side handles they use.

Operations receive their dependencies through ``OperationContext.resources``; the
worker opens one ``AdapterResources`` at start and closes it at shutdown, so every
activity shares one Postgres pool, one HTTP connection pool, one set of tenant
database pools, and one secret store. A worker that serves only some adapters
(``stead worker --adapters email``) opens only what those adapters use: an edge
worker for email holds the SMTP relay and nothing else.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from adapters.core import ECHO
from adapters.email import EMAIL_SEND, SmtpRelay
from adapters.files import FILES_READ, FILES_WRITE, FileSandbox
from adapters.http import HTTP_REQUEST, new_http_client
from adapters.mcp import mcp_operations
from adapters.memory import (
    MEMORY_HISTORY,
    MEMORY_OBSERVE,
    MEMORY_OBSERVE_MANY,
    MEMORY_REMEMBER,
    MEMORY_SERIES,
)
from adapters.plugins import load_plugin_operations
from adapters.records import RECORDS_GET, RECORDS_PUT
from adapters.sql import SQL_EXECUTE, SQL_QUERY, SqlDatabases
from adapters.webhook import WEBHOOK_POST
from stead.db.pool import create_pool
from stead.errors import ConfigError
from stead.mcp.config import McpConfigStore
from stead.memory.service import MemoryService
from stead.operations.base import Operation
from stead.operations.catalog import Catalog, UnknownAdapter
from stead.secrets import SecretStore, open_secret_store
from stead.settings import Settings, secret_environment

# Which handles each built-in adapter uses. An adapter from a plugin gets the
# generic ones (HTTP client, secret store) and opens anything else itself.
_USES: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "records": frozenset({"pool"}),
    "http": frozenset({"http", "secrets"}),
    "webhook": frozenset({"http", "secrets"}),
    "sql": frozenset({"sql", "secrets"}),
    "email": frozenset({"smtp"}),
    "files": frozenset({"files"}),
    "mcp": frozenset({"pool", "secrets"}),
}
_PLUGIN_USES = frozenset({"http", "secrets"})


def builtin_operations() -> list[Operation[Any, Any]]:
    """Every operation Stead ships; the field cases' come from their plugin
    (``examples/stead-cases``), through the ``stead.adapters`` entry point like any other."""
    return [
        ECHO,
        HTTP_REQUEST,
        RECORDS_PUT,
        RECORDS_GET,
        SQL_QUERY,
        SQL_EXECUTE,
        EMAIL_SEND,
        FILES_WRITE,
        FILES_READ,
        WEBHOOK_POST,
        MEMORY_REMEMBER,
        MEMORY_HISTORY,
        MEMORY_OBSERVE,
        MEMORY_OBSERVE_MANY,
        MEMORY_SERIES,
    ]


def default_catalog(*, plugins: bool = True) -> Catalog:
    """A fresh catalog of the built-ins and installed plugins (``stead.adapters`` entry points).

    Fresh on every call, so callers may register more without sharing state. A plugin
    whose operation reuses a built-in name is refused, naming both.
    """
    catalog = Catalog(builtin_operations())
    if plugins:
        for op in load_plugin_operations():
            if op.name in catalog:
                raise ValueError(
                    f"adapter plugin operation {op.name} clashes with an operation already in "
                    "the catalog; a plugin must use its own adapter name"
                )
            catalog.register(op)
    return catalog


def worker_catalog(settings: Settings) -> Catalog:
    """The default catalog with ``STEAD_ADAPTER_QUEUES`` applied: what a worker plans with.

    Routed operations stay in the catalog (the planner and OPA still need their
    schemas and risk); only their task queue changes, so ``build_plan`` sends their
    steps to the edge worker.
    """
    catalog = default_catalog()
    # Each tenant's pinned MCP tools (``stead mcp add``), as read when the worker starts.
    for op in mcp_operations(McpConfigStore(settings.resolved_mcp_dir)):
        catalog.register(op)
    try:
        return catalog.route(settings.adapter_queues)
    except UnknownAdapter as exc:
        raise ConfigError(f"STEAD_ADAPTER_QUEUES: {exc}") from None


def uses(adapters: Collection[str] | None) -> frozenset[str]:
    """The resource names ``adapters`` need; None means every adapter."""
    if adapters is None:
        return frozenset().union(*_USES.values(), _PLUGIN_USES)
    return frozenset().union(*(_USES.get(a, _PLUGIN_USES) for a in adapters))


@dataclass
class AdapterResources:
    """Handles operations look up by attribute name (``pool``, ``http``, ``sql``, ``smtp``,
    ``files``, ``secrets``); a credential only ever behind a store or a masked setting.

    ``aclose`` closes only what ``open`` created: a pool handed in by the worker
    belongs to the worker.
    """

    pool: asyncpg.Pool | None = None
    http: httpx.AsyncClient | None = None
    sql: SqlDatabases | None = None
    smtp: SmtpRelay | None = None
    files: FileSandbox | None = None
    secrets: SecretStore | None = None
    memory: MemoryService | None = None  # set by the worker; memory.remember reads it
    _owns_pool: bool = field(default=False, repr=False)
    _owns_http: bool = field(default=False, repr=False)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        pool: asyncpg.Pool | None = None,
        adapters: Collection[str] | None = None,
        secrets: SecretStore | None = None,
    ) -> AdapterResources:
        """Open what ``adapters`` (default: all) use; share ``pool`` if given.

        Without a given pool, one is opened as the app role (RLS binds it either way)
        only when an adapter needs it. ``secrets`` defaults to the store the settings
        describe (``STEAD_SECRET_BACKENDS``).
        """
        needed = uses(adapters)
        res = cls(pool=pool)
        try:
            if pool is None and "pool" in needed:
                res.pool = await create_pool(settings.postgres_dsn)
                res._owns_pool = True
            if "http" in needed:
                res.http = new_http_client()
                res._owns_http = True
            if "sql" in needed:
                res.sql = SqlDatabases(settings.sql_databases)
            if "smtp" in needed:
                res.smtp = SmtpRelay.from_settings(settings)
            if "files" in needed:
                res.files = FileSandbox(settings.files_root or settings.home / "files")
            if "secrets" in needed:
                res.secrets = secrets or open_secret_store(settings, secret_environment())
        except BaseException:
            await res.aclose()
            raise
        return res

    async def aclose(self) -> None:
        """Close what ``open`` created; safe to call twice."""
        http = self.http if self._owns_http else None
        pool = self.pool if self._owns_pool else None
        sql, self.sql = self.sql, None
        self._owns_http = self._owns_pool = False
        try:
            if http is not None:
                await http.aclose()
            if sql is not None:
                await sql.aclose()
        finally:
            if pool is not None:
                await pool.close()

    async def __aenter__(self) -> AdapterResources:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
