"""The built-in operations, the catalog they form, and the worker-side handles they use.

Operations receive their dependencies through ``OperationContext.resources``; the
worker opens one ``AdapterResources`` at start and closes it at shutdown, so every
activity shares one Postgres pool and one HTTP connection pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from adapters.base import Operation
from adapters.catalog import Catalog
from adapters.core import ECHO
from adapters.http import HTTP_REQUEST, new_http_client
from adapters.records import RECORDS_GET, RECORDS_PUT
from stead.db.pool import create_pool
from stead.settings import Settings


def builtin_operations() -> list[Operation[Any, Any]]:
    """Every operation Stead ships."""
    return [ECHO, HTTP_REQUEST, RECORDS_PUT, RECORDS_GET]


def default_catalog() -> Catalog:
    """A fresh catalog of the built-ins: callers may register more without sharing state."""
    return Catalog(builtin_operations())


@dataclass
class AdapterResources:
    """Handles operations look up by attribute name (``pool``, ``http``); never credentials.

    ``aclose`` closes only what ``open`` created: a pool handed in by the worker
    belongs to the worker.
    """

    pool: asyncpg.Pool | None = None
    http: httpx.AsyncClient | None = None
    _owns_pool: bool = field(default=False, repr=False)
    _owns_http: bool = field(default=False, repr=False)

    @classmethod
    async def open(
        cls, settings: Settings, *, pool: asyncpg.Pool | None = None
    ) -> AdapterResources:
        """Share ``pool`` if given, else connect as the app role (RLS binds it either way)."""
        if pool is not None:
            return cls(pool=pool, http=new_http_client(), _owns_http=True)
        own_pool = await create_pool(settings.postgres_dsn)
        return cls(pool=own_pool, http=new_http_client(), _owns_pool=True, _owns_http=True)

    async def aclose(self) -> None:
        """Close what ``open`` created; safe to call twice."""
        http, pool = self.http if self._owns_http else None, self.pool if self._owns_pool else None
        self._owns_http = self._owns_pool = False
        try:
            if http is not None:
                await http.aclose()
        finally:
            if pool is not None:
                await pool.close()

    async def __aenter__(self) -> AdapterResources:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
