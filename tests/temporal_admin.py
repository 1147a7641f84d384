"""A namespace created as a cluster admin would, without Stead's help."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from stead.errors import ConfigError
from stead.namespace_setup import ensure_namespace, missing_search_attributes
from stead.settings import Settings
from stead.temporal import connect


def register_namespace(settings: Settings, namespace: str) -> None:
    """Register it and wait (bounded) until the frontend knows it: its cache lags."""

    async def go() -> None:
        client = await connect(settings)
        await ensure_namespace(client, namespace, timedelta(days=1))
        for _ in range(120):
            try:
                await missing_search_attributes(client, namespace)
                return
            except ConfigError:
                await asyncio.sleep(0.25)
        raise AssertionError(f"namespace {namespace} never became visible")

    asyncio.run(go())
