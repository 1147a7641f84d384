"""The server configuration of a production-shaped Temporal cluster on one machine.

Each service runs as its own ``temporal-server start --service X`` process and reads
its own file: the files differ only in the Prometheus port, because every process
would otherwise try to bind the same one. Everything else (persistence on
PostgreSQL, 4 history shards, the membership ring on loopback) is shared, as in a
real deployment where every pod mounts the same config.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

from stead.devstack.ports import LOOPBACK, is_free
from stead.errors import PortInUse

ServiceName = Literal["history", "matching", "frontend", "worker"]
# History and matching first: the frontend routes to them, the worker service calls the frontend.
SERVICES: tuple[ServiceName, ...] = ("history", "matching", "frontend", "worker")
HISTORY_SHARDS = 4
DATABASE = "temporal"
VISIBILITY_DATABASE = "temporal_visibility"
SQL_USER = "temporal"


@dataclass(frozen=True)
class ServicePorts:
    grpc: int
    membership: int
    metrics: int
    http: int | None = None  # only the frontend serves Temporal's HTTP API


# The SQL schema stores membership ports as SMALLINT: a port the kernel hands out
# (32768 and up on Linux) kills the service at start with "out of range for type smallint".
PORT_RANGE = range(20000, 32768)


def pick_ports() -> dict[ServiceName, ServicePorts]:
    """Free loopback ports below 32768, chosen once per cluster and kept across restarts."""
    taken: set[int] = set()

    def port() -> int:
        for _ in range(1000):
            candidate = secrets.choice(PORT_RANGE)
            if candidate not in taken and is_free(candidate):
                taken.add(candidate)
                return candidate
        raise PortInUse(f"no free loopback port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")

    ports: dict[ServiceName, ServicePorts] = {}
    for name in SERVICES:
        ports[name] = ServicePorts(
            grpc=port(),
            membership=port(),
            metrics=port(),
            http=port() if name == "frontend" else None,
        )
    return ports


def _datastore(database: str, pg_port: int, password: str, max_conns: int) -> dict[str, Any]:
    return {
        "sql": {
            "pluginName": "postgres12",
            "databaseName": database,
            "connectAddr": f"{LOOPBACK}:{pg_port}",
            "connectProtocol": "tcp",
            "user": SQL_USER,
            "password": password,
            "maxConns": max_conns,
            "maxIdleConns": max_conns,
            "maxConnLifetime": "1h",
        }
    }


def server_config(
    service: ServiceName,
    ports: dict[ServiceName, ServicePorts],
    *,
    pg_port: int,
    password: str,
    dynamic_config_path: str,
) -> dict[str, Any]:
    """The YAML document ``temporal-server --config-file`` reads for ``service``."""
    frontend = f"{LOOPBACK}:{ports['frontend'].grpc}"
    services: dict[str, Any] = {}
    for name, p in ports.items():
        rpc: dict[str, Any] = {
            "grpcPort": p.grpc,
            "membershipPort": p.membership,
            "bindOnLocalHost": True,
        }
        if p.http is not None:
            rpc["httpPort"] = p.http
        services[name] = {"rpc": rpc}
    return {
        "log": {"stdout": True, "level": "warn"},
        "persistence": {
            "defaultStore": "default",
            "visibilityStore": "visibility",
            "numHistoryShards": HISTORY_SHARDS,
            "datastores": {
                "default": _datastore(DATABASE, pg_port, password, 20),
                "visibility": _datastore(VISIBILITY_DATABASE, pg_port, password, 10),
            },
        },
        "global": {
            "membership": {"maxJoinDuration": "30s", "broadcastAddress": LOOPBACK},
            "metrics": {
                "prometheus": {
                    "framework": "tally",
                    "timerType": "histogram",
                    "listenAddress": f"{LOOPBACK}:{ports[service].metrics}",
                }
            },
        },
        "services": services,
        "clusterMetadata": single_cluster_metadata(frontend),
        "dcRedirectionPolicy": {"policy": "noop"},
        "publicClient": {"hostPort": frontend},
        "dynamicConfigClient": {"filepath": dynamic_config_path, "pollInterval": "10s"},
    }


def dynamic_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """Dynamic config in the server's file format: each key a list of constrained values."""
    return {key: [{"value": value}] for key, value in overrides.items()}


def single_cluster_metadata(frontend: str) -> dict[str, Any]:
    """The ``clusterMetadata`` of one cluster, named ``active``, with no global namespaces."""
    return {
        "enableGlobalNamespace": False,
        "failoverVersionIncrement": 10,
        "masterClusterName": "active",
        "currentClusterName": "active",
        "clusterInformation": {
            "active": {
                "enabled": True,
                "initialFailoverVersion": 1,
                "rpcName": "frontend",
                "rpcAddress": frontend,
            }
        },
    }
