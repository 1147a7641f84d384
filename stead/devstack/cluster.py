"""A production-shaped Temporal cluster on one machine, for the cluster test tier and benchmarks.

Temporal's own server (built from its Go module by ``make temporal-cluster-bin``)
runs frontend, history, matching and worker as four processes on an embedded
PostgreSQL, with 4 history shards and ports chosen free at start. The schema is
created by ``temporal-sql-tool`` and the namespace prepared by ``stead temporal
setup``, exactly as an operator would. Unlike ``temporal server start-dev`` this
has real membership, shard ownership and persistence between services, so killing
one service tests what a user's cluster does when a pod dies.

It lives beside the dev stack (not under ``tests/``) because the benchmark harness
and ``python -m stead.devstack.cluster`` use it too. Every process it starts is
tracked by pid and start time and stopped by that record, never by name.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from temporalio.service import ConnectConfig, ServiceClient

from stead.devstack import postgres, proc
from stead.devstack.cluster_config import (
    DATABASE,
    SERVICES,
    SQL_USER,
    VISIBILITY_DATABASE,
    ServiceName,
    ServicePorts,
    dynamic_config,
    pick_ports,
    server_config,
)
from stead.devstack.ports import LOOPBACK, free_port
from stead.errors import BinaryMissing, ServiceNotReady, StackError

CACHE = Path.home() / ".cache" / "stead"
HEALTH_NAMES: dict[ServiceName, str] = {
    "frontend": "temporal.api.workflowservice.v1.WorkflowService",
    "history": "temporal.api.workflowservice.v1.HistoryService",
    "matching": "temporal.api.workflowservice.v1.MatchingService",
    "worker": "temporal.api.workflowservice.v1.WorkerService",
}
# A loaded 2-core machine starts four Go services slowly; history also waits for its shards.
READY_TIMEOUT = 120.0
HEALTH_TIMEOUT = timedelta(seconds=2)
# As in infra/temporal/dynamicconfig (compose): the SQL schema keeps ids in VARCHAR(255),
# so longer ids get a clear error at the frontend instead of a database error. The
# transfer queue's reader is capped at 20 loads a second per history shard by default,
# which caps a sequential chain (all on one shard) at ~20 steps a second; as on the dev
# server (stead.devstack.temporal.TRANSFER_QUEUE_DYNAMIC_CONFIG), not here.
DYNAMIC_DEFAULTS: dict[str, Any] = {
    "limit.maxIDLength": 255,
    "history.transferProcessorMaxPollRPS": 1000,
}


@dataclass(frozen=True)
class ClusterBinaries:
    """The server and SQL tool where ``make temporal-cluster-bin`` caches them."""

    server: Path = CACHE / "bin" / "temporal-server"
    sql_tool: Path = CACHE / "bin" / "temporal-sql-tool"

    def require(self) -> None:
        for binary in (self.server, self.sql_tool):
            if not os.access(binary, os.X_OK):
                raise BinaryMissing(
                    f"{binary} is missing; build Temporal's server and SQL tool once with "
                    f"`make temporal-cluster-bin`"
                )


@dataclass
class TemporalCluster:
    """Start, fault and stop one cluster under ``home`` (its Postgres, configs and logs)."""

    home: Path
    namespace: str = "default"
    binaries: ClusterBinaries = field(default_factory=ClusterBinaries)
    dynamic: dict[str, Any] = field(default_factory=lambda: dict(DYNAMIC_DEFAULTS))
    ports: dict[ServiceName, ServicePorts] = field(default_factory=pick_ports)
    _records: dict[str, proc.PidRecord] = field(default_factory=dict)
    _pg_port: int = 0

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.ports['frontend'].grpc}"

    def start(self) -> None:
        """Postgres, schema, the four services, then the namespace; all or nothing."""
        self.binaries.require()
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            self._start_postgres()
            password = self._prepare_databases()
            self._write_configs(password)
            for service in SERVICES:
                self.start_service(service)
            self._setup_namespace()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Services in reverse start order, Postgres last; safe to call twice."""
        for service in reversed(SERVICES):
            self.stop_service(service)
        record = self._records.pop("postgres", None)
        if record is not None:
            proc.stop(record, sig=signal.SIGINT)

    def start_service(self, service: ServiceName) -> None:
        argv = [
            str(self.binaries.server),
            "--config-file",
            str(self._config_path(service)),
            "--allow-no-auth",
            "start",
            "--service",
            service,
        ]
        log = self.log_path(service)
        record = proc.spawn(f"temporal-{service}", argv, run_dir=self.home / "run", log_path=log)
        self._records[service] = record
        proc.wait_ready(
            f"temporal {service}",
            record,
            lambda: self.is_serving(service),
            log_path=log,
            timeout=READY_TIMEOUT,
        )

    def stop_service(self, service: ServiceName, *, sig: signal.Signals = signal.SIGTERM) -> None:
        record = self._records.pop(service, None)
        if record is not None:
            proc.stop(record, sig=sig)

    def kill(self, service: ServiceName) -> None:
        """SIGKILL, as when a node dies: no shard hand-off, no membership goodbye."""
        self.stop_service(service, sig=signal.SIGKILL)

    def restart(self, service: ServiceName, *, sig: signal.Signals = signal.SIGTERM) -> None:
        """Same ports, same config: the service rejoins the ring where it was."""
        self.stop_service(service, sig=sig)
        self.start_service(service)

    def pid(self, service: ServiceName) -> int:
        return self._records[service].pid

    def pids(self) -> tuple[int, ...]:
        """Every process running now, its Postgres included: what a benchmark meters."""
        return tuple(record.pid for record in self._records.values())

    def is_serving(self, service: ServiceName) -> bool:
        return asyncio.run(
            _serving(f"{LOOPBACK}:{self.ports[service].grpc}", HEALTH_NAMES[service])
        )

    def wait_serving(self, timeout: float = READY_TIMEOUT) -> None:
        """Every service answers its gRPC health check with SERVING, or ServiceNotReady."""
        deadline = time.monotonic() + timeout
        for service in SERVICES:
            while not self.is_serving(service):
                if time.monotonic() > deadline:
                    raise ServiceNotReady(
                        f"temporal {service} is not serving after {timeout:.0f} s; "
                        f"see {self.log_path(service)}"
                    )
                time.sleep(0.2)

    def log_path(self, service: str) -> Path:
        return self.home / "logs" / f"temporal-{service}.log"

    def _config_path(self, service: ServiceName) -> Path:
        return self.home / "config" / f"{service}.yaml"

    def _start_postgres(self) -> None:
        postgres.init_cluster(self.home)
        self._pg_port = free_port()
        self._records["postgres"] = postgres.start(self.home, self._pg_port)

    def _prepare_databases(self) -> str:
        """A ``temporal`` role, then both databases created and migrated by Temporal's tool."""
        creds = postgres.init_cluster(self.home)
        # The cluster's Postgres is its own: its second generated password is the temporal role's.
        password = creds.app_password
        asyncio.run(_ensure_role(creds.admin_dsn(self._pg_port, "postgres"), password))
        for database, schema in ((DATABASE, "temporal"), (VISIBILITY_DATABASE, "visibility")):
            marker = self.home / f"{database}.migrated"
            if marker.exists():
                continue
            self._sql_tool(password, database, "create-database")
            self._sql_tool(password, database, "setup-schema", "-v", "0.0")
            self._sql_tool(
                password, database, "update-schema", "--schema-name", f"postgresql/v12/{schema}"
            )
            marker.touch()
        return password

    def _sql_tool(self, password: str, database: str, *command: str) -> None:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SQL_PLUGIN": "postgres12",
            "SQL_HOST": LOOPBACK,
            "SQL_PORT": str(self._pg_port),
            "SQL_USER": SQL_USER,
            # From the environment, not argv: argv is readable by every user of the machine.
            "SQL_PASSWORD": password,
            "SQL_DATABASE": database,
        }
        _run(
            [str(self.binaries.sql_tool), *command],
            env,
            f"temporal-sql-tool {command[0]} on {database}",
        )

    def _write_configs(self, password: str) -> None:
        config_dir = self.home / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        dynamic_path = config_dir / "dynamic.yaml"
        dynamic_path.write_text(yaml.safe_dump(dynamic_config(self.dynamic)))
        for service in SERVICES:
            path = self._config_path(service)
            path.touch(mode=0o600)  # it holds the database password
            document = server_config(
                service,
                self.ports,
                pg_port=self._pg_port,
                password=password,
                dynamic_config_path=str(dynamic_path),
            )
            path.write_text(yaml.safe_dump(document, sort_keys=False))

    def _setup_namespace(self) -> None:
        """``stead temporal setup``, the command an operator runs on their own cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STEAD_", "TEMPORAL_"))}
        env.update(STEAD_HOME=str(self.home / "stead-cli"), STEAD_TEMPORAL_ADDRESS=self.address)
        argv = [sys.executable, "-m", "stead.cli", "temporal", "setup"]
        _run([*argv, "--namespace", self.namespace], env, f"stead temporal setup on {self.address}")


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"{what} failed:\n{(result.stdout + result.stderr)[-2000:]}")


async def _ensure_role(admin_dsn: str, password: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", SQL_USER):
            # CREATE ROLE takes no bind parameters; the password is ours and URL-safe.
            await conn.execute(f"CREATE ROLE {SQL_USER} LOGIN CREATEDB PASSWORD '{password}'")
    finally:
        await conn.close()


async def _serving(address: str, service: str) -> bool:
    try:
        client = await ServiceClient.connect(ConnectConfig(target_host=address, lazy=True))
        return await client.check_health(service=service, timeout=HEALTH_TIMEOUT)
    except Exception:
        return False


@contextmanager
def running_cluster(home: Path, namespace: str = "default") -> Iterator[TemporalCluster]:
    cluster = TemporalCluster(home=home, namespace=namespace)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m stead.devstack.cluster --home DIR``: run a cluster until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", type=Path, required=True, help="data dir (Postgres, logs)")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with running_cluster(args.home.resolve(), args.namespace) as cluster:
        print(f"temporal cluster up in {time.monotonic() - started:.1f} s", flush=True)
        print(f"export STEAD_TEST_TEMPORAL_ADDRESS={cluster.address}", flush=True)
        print(f"export STEAD_TEST_TEMPORAL_NAMESPACE={args.namespace}", flush=True)
        print("(Ctrl-C stops every service)", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
