"""The dev stack keeps its ports: a port our own last connections left in TIME_WAIT is
free for our restart, a listened-on port is not, and ``dev down``/``dev up`` after a
client ran brings every service back where it was."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import psutil
from temporalio.client import Client

from stead.devstack.ports import LOOPBACK, is_free
from stead.devstack.stack import read_state
from tests.test_devstack import home, stead

__all__ = ["home"]  # the fixture, shared with test_devstack


def _port_in_time_wait() -> int:
    """A loopback port whose server side closed first: the kernel holds it in TIME_WAIT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOOPBACK, 0))
        server.listen()
        port = int(server.getsockname()[1])
        client = socket.create_connection((LOOPBACK, port))
        accepted, _ = server.accept()
        accepted.close()  # the side that closes first enters TIME_WAIT
        client.recv(1)
        client.close()
    return port


def _time_wait_on(port: int) -> bool:
    return any(
        c.laddr and c.laddr.port == port and c.status == psutil.CONN_TIME_WAIT
        for c in psutil.net_connections(kind="tcp4")
    )


def test_port_in_time_wait_is_free_for_our_restart() -> None:
    port = _port_in_time_wait()
    assert _time_wait_on(port)
    assert is_free(port)


def test_port_another_process_listens_on_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((LOOPBACK, 0))
        server.listen()
        assert not is_free(int(server.getsockname()[1]))


def _ports(home: Path) -> dict[str, dict[str, int]]:
    state = read_state(home)
    assert state is not None
    return {name: dict(record.ports) for name, record in state.services.items()}


async def _use_every_service(home: Path) -> None:
    """What a worker does: talk to Temporal, Postgres and OPA, then hang up."""
    import asyncpg

    state = read_state(home)
    assert state is not None
    address, dsn, opa_url = (
        state.endpoints["temporal_address"],
        state.endpoints["postgres_dsn"],
        state.endpoints["opa_url"],
    )
    assert address and dsn and opa_url
    client = await Client.connect(address)
    assert await client.service_client.check_health()
    for _ in range(3):
        conn = await asyncpg.connect(dsn)
        await conn.fetchval("SELECT 1")
        await conn.close()
    with urllib.request.urlopen(f"{opa_url}/health", timeout=5) as response:
        assert response.status == 200


def test_down_and_up_after_a_client_keeps_every_port(home: Path) -> None:
    up = stead(home, "dev", "up")
    assert up.returncode == 0, up.stderr
    before = _ports(home)
    asyncio.run(_use_every_service(home))

    down = stead(home, "dev", "down")
    assert down.returncode == 0, down.stderr
    again = stead(home, "dev", "up")
    assert again.returncode == 0, again.stderr

    assert _ports(home) == before
