"""``stead dev`` lifecycle on a stack of its own: survive down/up, leave no process
behind, be harmless twice, and fail clearly (missing OPA without Go, a taken port)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stead.contracts.hello import GreetingRequest
from stead.devstack.stack import read_state
from stead.devstack.temporal import DYNAMIC_CONFIG
from tests.conftest import REPO, subprocess_env

STEAD = [sys.executable, "-m", "stead.cli"]


def stead(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = env or {
        k: v for k, v in os.environ.items() if not k.startswith("STEAD_") or k == "STEAD_OPA_BIN"
    }
    base = {**base, "STEAD_HOME": str(home), "STEAD_POLICY_DIR": str(REPO / "policies")}
    return subprocess.run(
        [*STEAD, *args], capture_output=True, text=True, env=base, timeout=180, cwd=REPO
    )


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "home"
    stead(tmp_path / "home", "dev", "down")


def recorded_pids(home: Path) -> list[int]:
    state = read_state(home)
    assert state is not None
    return [record.pid for record in state.services.values()]


def test_data_survives_down_and_up_and_down_leaves_no_process(home: Path) -> None:
    assert stead(home, "dev", "up").returncode == 0
    first_pids = recorded_pids(home)
    state = read_state(home)
    assert state is not None
    dsn = state.endpoints["postgres_dsn"]
    address = state.endpoints["temporal_address"]
    workflow_id = f"survivor-{uuid.uuid4()}"
    asyncio.run(_write_row_and_start_workflow(dsn, address, workflow_id))

    down = stead(home, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in first_pids if psutil.pid_exists(pid) and _not_zombie(pid)]
    assert not (home / "stack.json").exists()
    # The embedded Temporal commits through a WAL (stead.devstack.temporal.SQLITE_PRAGMAS):
    # its default rollback journal made every workflow task wait on fsyncs.
    (database,) = home.rglob("temporal.db")
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    assert stead(home, "dev", "up").returncode == 0
    state = read_state(home)
    assert state is not None
    # Without Temporal's 20-a-second cap on the transfer queue's reader, which made every
    # workflow task of a sequential chain wait for its turn (bench.wft_wait).
    assert dynamic_config(home) == DYNAMIC_CONFIG
    assert asyncio.run(
        _row_and_workflow_exist(
            state.endpoints["postgres_dsn"], state.endpoints["temporal_address"], workflow_id
        )
    )


def dynamic_config(home: Path) -> dict[str, str]:
    """The ``--dynamic-config-value`` pairs the running dev server was started with."""
    state = read_state(home)
    assert state is not None
    argv = psutil.Process(state.services["temporal"].pid).cmdline()
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dynamic-config-value"]
    keys = [pair.split("=", 1)[0] for pair in pairs]
    assert len(keys) == len(set(keys)), pairs
    return dict(pair.split("=", 1) for pair in pairs)


def test_dev_server_dynamic_config_takes_overrides(home: Path) -> None:
    reader = "history.transferProcessorMaxPollRPS"
    overrides = {reader: "20", "limit.maxIDLength": "255"}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STEAD_")},
        "STEAD_OPA_BIN": os.environ.get("STEAD_OPA_BIN", ""),
        "STEAD_TEMPORAL_DEV_DYNAMIC_CONFIG": json.dumps(overrides),
    }
    up = stead(home, "dev", "up", env=env)
    assert up.returncode == 0, up.stderr
    assert dynamic_config(home) == {**DYNAMIC_CONFIG, **overrides}


def test_up_twice_is_harmless(home: Path) -> None:
    assert stead(home, "dev", "up").returncode == 0
    pids = recorded_pids(home)
    again = stead(home, "dev", "up")
    assert again.returncode == 0, again.stderr
    assert recorded_pids(home) == pids
    status = json.loads(stead(home, "dev", "status", "--json").stdout)
    assert status["running"] is True
    assert status["qdrant"]["mode"] == "embedded"


def test_purge_deletes_the_data_dir(home: Path) -> None:
    assert stead(home, "dev", "up").returncode == 0
    assert stead(home, "dev", "down", "--purge").returncode == 0
    assert not home.exists()


def test_missing_opa_without_go_says_how_to_install(home: Path, tmp_path: Path) -> None:
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    env = {
        "PATH": str(bare_path),
        "HOME": str(tmp_path / "nohome"),
        "XDG_CACHE_HOME": str(tmp_path / "nocache"),
    }
    result = stead(home, "dev", "up", env=env)
    assert result.returncode == 1
    assert (
        "opa" in result.stderr
        and "go install github.com/open-policy-agent/opa@v1.22.2" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (home / "run" / "postgres.pid").exists()
    assert read_state(home) is None


def test_taken_port_is_refused_and_nothing_is_left_running(home: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = stead(home, "dev", "up", "--opa-port", str(port))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "in use" in result.stderr
    assert read_state(home) is None
    for name in ("postgres", "temporal", "opa"):
        assert not (home / "run" / f"{name}.pid").exists()


def test_crashed_child_reports_its_log_and_stops_the_rest(home: Path, tmp_path: Path) -> None:
    broken_policies = tmp_path / "policies"
    broken_policies.mkdir()
    (broken_policies / "broken.rego").write_text("package stead.system\n\nthis is not rego {\n")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("STEAD_") or k == "STEAD_OPA_BIN"
    }
    env = {**env, "STEAD_HOME": str(home), "STEAD_POLICY_DIR": str(broken_policies)}
    result = subprocess.run(
        [*STEAD, "dev", "up"], capture_output=True, text=True, env=env, timeout=180, cwd=REPO
    )
    assert result.returncode == 1
    assert "opa exited during start-up" in result.stderr
    assert read_state(home) is None
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(home) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    env = subprocess_env_for(tmp_path, STEAD_TEMPORAL_ADDRESS="no-port-here")
    result = subprocess.run(
        [*STEAD, "dev", "status"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert "STEAD_TEMPORAL_ADDRESS" in result.stderr


def subprocess_env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEAD_")}
    return {**env, "STEAD_HOME": str(tmp_path), **extra}


def _not_zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def _write_row_and_start_workflow(
    dsn: str | None, address: str | None, workflow_id: str
) -> None:
    import asyncpg
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    assert dsn and address
    conn = await asyncpg.connect(dsn)
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', 'survivor', true)")
        await conn.execute("INSERT INTO tenants (id) VALUES ('survivor')")
    await conn.close()
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    # No worker polls this queue: the workflow stays open, stored only in the SQLite file.
    await client.start_workflow(
        "stead.hello", GreetingRequest(name="x"), id=workflow_id, task_queue="nobody"
    )


async def _row_and_workflow_exist(dsn: str | None, address: str | None, workflow_id: str) -> bool:
    import asyncpg
    from temporalio.client import Client

    assert dsn and address
    conn = await asyncpg.connect(dsn)
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', 'survivor', true)")
        row = await conn.fetchval("SELECT id FROM tenants WHERE id = 'survivor'")
    await conn.close()
    client = await Client.connect(address)
    described = await client.get_workflow_handle(workflow_id).describe()
    return row == "survivor" and described.id == workflow_id


_ = (shutil, subprocess_env)
