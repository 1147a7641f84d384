"""`stead memory ...` as an operator runs it: a separate process, JSON out.

A worker (in this test process) holds the embedded shard, as `stead worker` would;
the CLI must still work, by routing its index calls through that worker. Without a
worker it opens the shard itself, and with neither it answers from Postgres alone.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.worker import Worker

from activities.memory import MemoryActivities
from stead.settings import Settings
from stead.temporal import connect
from stead.vector import EdgeVectorIndex
from tests.conftest import REPO, subprocess_env
from tests.scope_support import integrity_secret
from tests.test_memory_support import new_tenant, open_service
from workflows.memory import MemoryIndexOpWorkflow, MemoryPurgeWorkflow, MemoryReindexWorkflow

pytestmark = pytest.mark.slow  # each command is a fresh Python process

CLI = "from stead.cli.memory import app; app(prog_name='stead memory')"


@dataclass(frozen=True)
class Held:
    shard: Path
    task_queue: str


@pytest_asyncio.fixture(scope="module")
async def held(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Held]:
    """A worker holding its shard and serving memory's workflows on its own queue."""
    shard = tmp_path_factory.mktemp("memory-cli") / "qdrant"
    task_queue = f"test-memory-cli-{uuid.uuid4().hex[:8]}"
    client = await connect(stack)
    async with (
        open_service(stack, EdgeVectorIndex(shard)) as service,
        Worker(
            client,
            task_queue=task_queue,
            workflows=[MemoryReindexWorkflow, MemoryPurgeWorkflow, MemoryIndexOpWorkflow],
            activities=MemoryActivities(service, integrity_secret(stack)).all(),
        ),
    ):
        yield Held(shard, task_queue)


async def stead_memory(
    stack: Settings, shard: Path, task_queue: str, *args: str, **env_extra: str
) -> Any:
    """Run the CLI in a child process without blocking this loop (the worker runs here)."""
    env = subprocess_env(
        stack, STEAD_QDRANT_PATH=str(shard), STEAD_TASK_QUEUE=task_queue, **env_extra
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CLI, *args, "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_cli_works_while_the_worker_holds_the_shard(stack: Settings, held: Held) -> None:
    tenant = new_tenant()

    async def cli(*args: str) -> Any:
        return await stead_memory(stack, held.shard, held.task_queue, *args, "--tenant", tenant)

    put = await cli(
        "put",
        "brand",
        "colour",
        "The brand colour is teal.",
        "--as",
        "user:alice",
        "--reason",
        "brand book",
    )
    await cli(
        "put",
        "brand",
        "colour",
        "The brand colour is orange.",
        "--as",
        "user:bob",
        "--reason",
        "rebrand",
    )
    got = await cli("get", "brand", "colour")
    history = await cli("history", "brand", "colour")
    found = await cli("search", "what colour is our brand?")

    assert (put["via"], put["created"], put["indexed"]) == ("worker", True, True)
    assert (got["version"], got["content"]) == (2, "The brand colour is orange.")
    assert [(v["version"], v["provenance"]["principal"]) for v in history["versions"]] == [
        (1, "user:alice"),
        (2, "user:bob"),
    ]
    assert (found["via"], found["degraded"]) == ("worker", False)
    assert [(i["key"], i["version"]) for i in found["items"]] == [("colour", 2)]

    erased = await cli("erase", "brand", "colour", "--as", "user:dpo", "--reason", "test erasure")
    after = await cli("get", "brand", "colour")
    again = await cli("search", "what colour is our brand?")
    reindexed = await stead_memory(
        stack, held.shard, held.task_queue, "reindex", "--tenant", tenant
    )

    assert (erased["versions"], erased["vectors_removed"]) == ([1, 2], True)
    assert after["content"] is None and after["erased_at"] is not None
    assert after["content_hash"] == got["content_hash"]
    assert again["items"] == []
    assert (reindexed["via"], reindexed["tenants"]) == ("worker", 1)


async def test_cli_opens_the_shard_itself_when_no_worker_holds_it(
    stack: Settings, tmp_path: Path
) -> None:
    tenant, shard, queue = new_tenant(), tmp_path / "qdrant", "nobody-polls-this"

    put = await stead_memory(
        stack,
        shard,
        queue,
        "put",
        "ops",
        "dns",
        "DNS lives in the infra repo.",
        "--tenant",
        tenant,
        "--as",
        "user:alice",
    )
    found = await stead_memory(
        stack, shard, queue, "search", "where is DNS configured", "--tenant", tenant
    )

    assert (put["via"], put["indexed"]) == ("local", True)
    assert (found["via"], found["degraded"], [i["key"] for i in found["items"]]) == (
        "local",
        False,
        ["dns"],
    )


async def test_cli_get_as_of_reads_the_version_current_then(
    stack: Settings, tmp_path: Path
) -> None:
    tenant, shard, queue = new_tenant(), tmp_path / "qdrant", "nobody-polls-this"

    async def cli(*args: str) -> Any:
        return await stead_memory(stack, shard, queue, *args, "--tenant", tenant)

    first = await cli("put", "ops", "dns", "DNS lives in the infra repo.", "--as", "user:alice")
    await cli("put", "ops", "dns", "DNS moved to the platform repo.", "--as", "user:bob")
    then = await cli("get", "ops", "dns", "--as-of", first["version"]["recorded_at"])

    assert (then["version"], then["content"]) == (1, "DNS lives in the infra repo.")


async def test_cli_answers_from_postgres_when_the_holder_serves_no_queue(
    stack: Settings, held: Held
) -> None:
    tenant, queue = new_tenant(), "nobody-polls-this"

    put = await stead_memory(
        stack,
        held.shard,
        queue,
        "put",
        "ops",
        "backup",
        "Backups run nightly at 02:00.",
        "--tenant",
        tenant,
        "--as",
        "user:alice",
    )
    found = await stead_memory(
        stack, held.shard, queue, "search", "when do backups run", "--tenant", tenant
    )

    assert (put["via"], put["indexed"]) == ("postgres-only", False)
    assert (found["via"], found["degraded"], [i["key"] for i in found["items"]]) == (
        "postgres-only",
        True,
        ["backup"],
    )


async def test_cli_without_the_integrity_secret_answers_from_postgres_instead_of_routing(
    stack: Settings, held: Held, tmp_path: Path
) -> None:
    """The worker refuses index calls not sealed with its integrity secret, so a CLI
    without that file does not route at all: it degrades like an unreachable index."""
    tenant = new_tenant()
    # The stack's keys (the audit key included) but not the integrity secret.
    keys = tmp_path / "keys-without-integrity"
    shutil.copytree(stack.resolved_keys_dir, keys, ignore=shutil.ignore_patterns("integrity.*"))
    elsewhere = str(keys)

    put = await stead_memory(
        stack,
        held.shard,
        held.task_queue,
        "put",
        "ops",
        "vpn",
        "The VPN is needed for the wiki.",
        "--tenant",
        tenant,
        "--as",
        "user:alice",
        STEAD_KEYS_DIR=elsewhere,
    )
    found = await stead_memory(
        stack,
        held.shard,
        held.task_queue,
        "search",
        "do I need the VPN",
        "--tenant",
        tenant,
        STEAD_KEYS_DIR=elsewhere,
    )

    assert (put["via"], put["indexed"]) == ("postgres-only", False)
    assert (found["via"], found["degraded"], [i["key"] for i in found["items"]]) == (
        "postgres-only",
        True,
        ["vpn"],
    )


async def test_cli_refuses_bad_input_with_a_clear_message(stack: Settings, held: Held) -> None:
    env = subprocess_env(stack, STEAD_QDRANT_PATH=str(held.shard), STEAD_TASK_QUEUE=held.task_queue)
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-c",
            CLI,
            "put",
            "bad namespace!",
            "k",
            "v",
            "--tenant",
            "acme",
            "--as",
            "user:a",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "namespace" in done.stderr and "Traceback" not in done.stderr
