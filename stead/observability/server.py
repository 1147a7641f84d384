"""Serving ``/metrics`` from the worker, and keeping the approvals gauge fresh meanwhile."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry
from temporalio.client import Client
from temporalio.service import RPCError

from stead.observability.approvals import PendingApprovals
from stead.observability.metrics import APPROVALS_PENDING, REGISTRY

# Prometheus scrapes every 15 s (infra/prometheus/prometheus.yml); fresher is wasted.
APPROVALS_REFRESH = timedelta(seconds=15)
log = logging.getLogger("stead.metrics")


@dataclass
class MetricsServer:
    """``GET /metrics`` on ``port`` from a daemon thread; :meth:`close` stops it."""

    port: int
    _httpd: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    port: int, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> MetricsServer:
    """Serve ``registry``; port 0 picks a free one (see :attr:`MetricsServer.port`)."""
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(port=httpd.server_port, _httpd=httpd, _thread=thread)


async def keep_approvals_fresh(
    client: Client,
    gauge: PendingApprovals = APPROVALS_PENDING,
    every: timedelta = APPROVALS_REFRESH,
) -> None:
    """Recount pending approvals forever; a failed count keeps the last figure."""
    while True:
        try:
            await gauge.refresh(client)
        except RPCError as exc:
            log.warning("could not count pending approvals in Temporal visibility: %s", exc)
        await asyncio.sleep(every.total_seconds())


@asynccontextmanager
async def worker_metrics(port: int, client: Client) -> AsyncIterator[MetricsServer | None]:
    """While open: ``/metrics`` on ``port`` and a fresh approvals gauge; nothing when port is 0."""
    if port == 0:
        yield None
        return
    server = serve_metrics(port)
    refresher = asyncio.create_task(keep_approvals_fresh(client), name="stead-approvals-gauge")
    try:
        yield server
    finally:
        refresher.cancel()
        with suppress(asyncio.CancelledError):
            await refresher
        server.close()
