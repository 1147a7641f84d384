"""``stead dev up | down | status``: start the real services, record them, stop exactly those.

``$STEAD_HOME/stack.json`` is the contract with every other command: it holds the
endpoints (read by ``load_settings``) and the pid record of each child. ``up`` is
idempotent (live services are kept), and a failure part-way stops whatever this
call started, so a crashed child or a taken port never leaves orphans.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import shutil
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from stead.db.migrations import migrate
from stead.devstack import opa, postgres, proc, temporal
from stead.devstack.ports import LOOPBACK, claim
from stead.policy.authz import TOKENS_FILE, read_tokens
from stead.settings import STACK_FILE, Settings

ServiceName = Literal["postgres", "temporal", "opa"]
START_ORDER: tuple[ServiceName, ...] = ("postgres", "temporal", "opa")
PORTS_FILE = "ports.json"
STOP_SIGNAL: dict[str, signal.Signals] = {
    "postgres": signal.SIGINT,  # "fast" shutdown: do not wait for idle clients to leave
    "temporal": signal.SIGTERM,
    "opa": signal.SIGTERM,
}


class ServiceRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: int
    create_time: float
    ports: dict[str, int]
    log: str

    @property
    def pid_record(self) -> proc.PidRecord:
        return proc.PidRecord(self.pid, self.create_time)


class QdrantRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["embedded", "server"]
    location: str


class StackState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: str
    started_at: datetime
    services: dict[str, ServiceRecord]
    endpoints: dict[str, str | None]
    qdrant: QdrantRecord
    temporal_ui: str | None = None  # None when Temporal is an external cluster


class RequestedPorts(BaseModel):
    """Ports the user pinned on the command line; None means pick a free one."""

    temporal: int | None = None
    temporal_ui: int | None = None
    postgres: int | None = None
    opa: int | None = None


@dataclass(frozen=True)
class ExternalTemporal:
    """A Temporal cluster someone else runs: the stack starts Postgres and OPA beside it."""

    address: str
    namespace: str = "default"


TEST_TEMPORAL_ADDRESS = "STEAD_TEST_TEMPORAL_ADDRESS"
TEST_TEMPORAL_NAMESPACE = "STEAD_TEST_TEMPORAL_NAMESPACE"


def temporal_under_test(environ: Mapping[str, str]) -> ExternalTemporal | None:
    """The cluster the test suite and benchmarks target instead of the dev server, if any.

    Read (by tests/conftest.py and bench/harness.py) before they drop the shell's
    other ``STEAD_*`` variables: this one is the deliberate way to aim them elsewhere.
    """
    address = environ.get(TEST_TEMPORAL_ADDRESS)
    if not address:
        return None
    return ExternalTemporal(address, environ.get(TEST_TEMPORAL_NAMESPACE) or "default")


def read_state(home: Path) -> StackState | None:
    path = home / STACK_FILE
    if not path.exists():
        return None
    try:
        return StackState.model_validate_json(path.read_text())
    except ValueError:
        return None


def _write_state(home: Path, state: StackState) -> None:
    path = home / STACK_FILE
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)


@contextmanager
def _exclusive(home: Path) -> Iterator[None]:
    """Two ``up``/``down`` calls on one home serialize instead of racing."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def stack_up(
    settings: Settings,
    requested: RequestedPorts | None = None,
    *,
    external: ExternalTemporal | None = None,
) -> StackState:
    """Start what is not running; with ``external`` Temporal is that cluster, not a dev server."""
    requested = requested or RequestedPorts()
    home = settings.home.resolve()
    with _exclusive(home):
        previous = read_state(home)
        last_ports = _last_ports(home)
        kept = {
            name: record
            for name, record in (previous.services.items() if previous else [])
            if record.pid_record.alive()
        }
        # Resolve the binary before starting anything: a missing OPA must not leave
        # Postgres and Temporal running behind the error.
        opa_binary = opa.ensure_binary(home, settings.opa_bin) if "opa" not in kept else None
        started: list[tuple[str, proc.PidRecord]] = []
        services: dict[str, ServiceRecord] = dict(kept)
        try:
            if "postgres" not in kept:
                creds = postgres.init_cluster(home)
                pg_port = claim(
                    "postgres", requested.postgres, _prev_port(last_ports, "postgres", "port")
                )
                record = postgres.start(home, pg_port)
                started.append(("postgres", record))
                services["postgres"] = _record(record, {"port": pg_port}, home, "postgres")
            pg_port = services["postgres"].ports["port"]
            creds = postgres.init_cluster(home)
            asyncio.run(_prepare_database(creds, pg_port))

            if external is not None:
                # A dev server from an earlier `up` would be stranded: nothing would use it.
                dev_server = services.pop("temporal", None)
                if dev_server is not None:
                    proc.stop(dev_server.pid_record, sig=STOP_SIGNAL["temporal"])
            elif "temporal" not in kept:
                ports = temporal.TemporalPorts(
                    grpc=claim(
                        "temporal", requested.temporal, _prev_port(last_ports, "temporal", "grpc")
                    ),
                    ui=claim(
                        "temporal UI",
                        requested.temporal_ui,
                        _prev_port(last_ports, "temporal", "ui"),
                    ),
                    http=claim("temporal HTTP", None, _prev_port(last_ports, "temporal", "http")),
                    metrics=claim(
                        "temporal metrics", None, _prev_port(last_ports, "temporal", "metrics")
                    ),
                )
                record = temporal.start(
                    home,
                    ports,
                    settings.temporal_namespace,
                    codec_endpoint=settings.codec_server_url,
                    dynamic_config=settings.temporal_dev_dynamic_config,
                )
                started.append(("temporal", record))
                services["temporal"] = _record(record, ports.__dict__, home, "temporal")

            if "opa" not in kept:
                assert opa_binary is not None
                opa_port = claim("opa", requested.opa, _prev_port(last_ports, "opa", "port"))
                record = opa.start(home, opa_binary, settings.policy_dir, opa_port)
                started.append(("opa", record))
                services["opa"] = _record(record, {"port": opa_port}, home, "opa")
        except BaseException:
            for name, record in reversed(started):
                proc.stop(record, sig=STOP_SIGNAL[name])
                proc.pid_file(home / "run", name).unlink(missing_ok=True)
            raise

        state = StackState(
            home=str(home),
            started_at=previous.started_at if previous and kept else datetime.now(UTC),
            services=services,
            endpoints=_endpoints(settings, services, creds, external),
            qdrant=_qdrant(settings, home),
            temporal_ui=None
            if external
            else f"http://{LOOPBACK}:{services['temporal'].ports['ui']}",
        )
        _write_state(home, state)
        (home / PORTS_FILE).write_text(
            json.dumps({name: record.ports for name, record in services.items()})
        )
        return state


async def _prepare_database(creds: postgres.PgCredentials, port: int) -> None:
    await postgres.ensure_database(creds, port)
    await migrate(creds.admin_dsn(port), creds.app_dsn(port))


def _prev_port(previous: dict[str, dict[str, int]], service: str, key: str) -> int | None:
    return previous.get(service, {}).get(key)


def _last_ports(home: Path) -> dict[str, dict[str, int]]:
    """Ports of the last ``up``, kept across ``down`` so UI bookmarks and exports stay valid."""
    try:
        raw = json.loads((home / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _record(record: proc.PidRecord, ports: dict[str, int], home: Path, name: str) -> ServiceRecord:
    return ServiceRecord(
        pid=record.pid,
        create_time=record.create_time,
        ports=ports,
        log=str(home / "logs" / f"{name}.log"),
    )


def _endpoints(
    settings: Settings,
    services: dict[str, ServiceRecord],
    creds: postgres.PgCredentials,
    external: ExternalTemporal | None,
) -> dict[str, str | None]:
    pg_port = services["postgres"].ports["port"]
    temporal_endpoints = (
        {"temporal_address": external.address, "temporal_namespace": external.namespace}
        if external
        else {"temporal_address": f"{LOOPBACK}:{services['temporal'].ports['grpc']}"}
    )
    return {
        **temporal_endpoints,
        "postgres_dsn": creds.app_dsn(pg_port),
        "postgres_admin_dsn": creds.admin_dsn(pg_port),
        "opa_url": f"http://{LOOPBACK}:{services['opa'].ports['port']}",
        "qdrant_path": None
        if settings.qdrant_url
        else str(settings.resolved_qdrant_path.resolve()),
    }


def _qdrant(settings: Settings, home: Path) -> QdrantRecord:
    """Qdrant has no process to start: the engine runs inside whichever process opens the shard."""
    if settings.qdrant_url:
        return QdrantRecord(mode="server", location=settings.qdrant_url)
    path = settings.resolved_qdrant_path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return QdrantRecord(mode="embedded", location=str(path))


def stack_down(settings: Settings, *, purge: bool = False) -> list[str]:
    """Stop what ``up`` started (by recorded pid, never by name); returns the services stopped."""
    home = settings.home.resolve()
    if not home.exists():
        return []
    with _exclusive(home):
        state = read_state(home)
        stopped: list[str] = []
        run_dir = home / "run"
        for name in reversed(START_ORDER):
            records = []
            if state and name in state.services:
                records.append(state.services[name].pid_record)
            orphan = proc.read_pid_file(proc.pid_file(run_dir, name))
            if orphan is not None and orphan not in records:
                records.append(orphan)
            for record in records:
                if record.alive():
                    proc.stop(record, sig=STOP_SIGNAL[name])
                    stopped.append(name)
            proc.pid_file(run_dir, name).unlink(missing_ok=True)
        (home / STACK_FILE).unlink(missing_ok=True)
    if purge:
        shutil.rmtree(home, ignore_errors=True)
    return stopped


def stack_status(settings: Settings) -> dict[str, object]:
    home = settings.home.resolve()
    state = read_state(home)
    if state is None:
        return {"home": str(home), "running": False, "services": {}}
    services = {
        name: {
            "alive": record.pid_record.alive(),
            "pid": record.pid,
            "ports": record.ports,
            "log": record.log,
        }
        for name, record in state.services.items()
    }
    return {
        "home": str(home),
        "running": all(s["alive"] for s in services.values()),
        "services": services,
        "qdrant": state.qdrant.model_dump(),
        "temporal_ui": state.temporal_ui,
        "endpoints": {k: v for k, v in state.endpoints.items() if "dsn" not in k},
        # Where, never what: the tokens stay in their 0600 file.
        "opa_tokens": str(opa.tokens_dir(home) / TOKENS_FILE),
    }


def env_lines(home: Path) -> list[str]:
    """Shell exports for tools outside Stead (psql, temporal CLI) to reach the same stack."""
    state = read_state(home.resolve())
    if state is None:
        return []
    lines = [f"export STEAD_HOME={json.dumps(state.home)}"]
    for key, value in state.endpoints.items():
        if value is not None:
            lines.append(f"export STEAD_{key.upper()}={json.dumps(value)}")
    # The temporal CLI reads these, so it talks to the same server and namespace.
    lines.append(f"export TEMPORAL_ADDRESS={state.endpoints['temporal_address']}")
    namespace = state.endpoints.get("temporal_namespace")
    if namespace is not None:
        lines.append(f"export TEMPORAL_NAMESPACE={json.dumps(namespace)}")
    tokens = read_tokens(opa.tokens_dir(home.resolve()))
    if tokens is not None:
        # For curl against the data API; Stead's own commands read the file directly.
        lines.append(f"export STEAD_OPA_TOKEN={json.dumps(tokens.decision)}")
        lines.append(f"export STEAD_OPA_ADMIN_TOKEN={json.dumps(tokens.admin)}")
    return lines
