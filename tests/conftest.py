"""Session fixtures: one real embedded stack per test session, a worker per test module.

The stack is started with the same launcher as ``stead dev up`` in a temporary
``STEAD_HOME`` on free loopback ports, and torn down at the end; tests never depend
on a stack somebody started by hand. ``STEAD_*`` variables from the developer's shell
are dropped so a stray export cannot point the suite at a real cluster; the one
deliberate way to do that is ``STEAD_TEST_TEMPORAL_ADDRESS`` (and
``STEAD_TEST_TEMPORAL_NAMESPACE``): Temporal is then that cluster instead of a dev server.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client

from stead.audit import chain_for
from stead.audit import install as install_audit_chain
from stead.devstack.stack import ExternalTemporal, stack_down, stack_up, temporal_under_test
from stead.settings import Settings, load_settings
from stead.temporal import connect
from tests import opa_auth
from workers.main import build_worker, open_resources

REPO = Path(__file__).resolve().parents[1]
KEEP = {"STEAD_OPA_BIN"}
EXTERNAL_TEMPORAL = temporal_under_test(os.environ)
for _name in list(os.environ):
    if _name.startswith(("STEAD_", "TEMPORAL_")) and _name not in KEEP:
        del os.environ[_name]
# Nor may Temporal's own profile file (~/.config/temporalio/temporal.toml).
os.environ["TEMPORAL_CONFIG_FILE"] = os.devnull


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Collect Temporal clients before shutdown: a live one can abort the interpreter."""
    gc.collect()


def settings_for(home: Path, **overrides: object) -> Settings:
    """Settings for a test stack: repo policies and playbooks, no .env from the cwd."""
    return load_settings(
        _env_file=None,
        home=home,
        policy_dir=REPO / "policies",
        playbook_dir=REPO / "playbooks",
        **overrides,
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with running_stack(tmp_path_factory.mktemp("stead-home"), EXTERNAL_TEMPORAL) as settings:
        yield settings


@contextmanager
def running_stack(home: Path, external: ExternalTemporal | None) -> Iterator[Settings]:
    """Postgres and OPA, and Temporal unless ``external`` names a cluster to use instead."""
    base = settings_for(home)
    stack_up(base, external=external)
    try:
        settings = settings_for(home)
        # Tests append to the audit log without a worker too; the worker installs the same.
        install_audit_chain(chain_for(settings))
        opa_auth.remember(settings)
        yield settings
    finally:
        stack_down(base)


@dataclass(frozen=True)
class WorkerHandle:
    client: Client
    task_queue: str
    settings: Settings


@pytest_asyncio.fixture(scope="module")
async def worker(stack: Settings) -> AsyncIterator[WorkerHandle]:
    """An in-process worker on its own task queue, so modules never steal each other's tasks."""
    task_queue = f"test-{uuid.uuid4().hex[:10]}"
    client = await connect(stack)
    async with open_resources(stack) as resources, build_worker(client, task_queue, resources):
        yield WorkerHandle(client=client, task_queue=task_queue, settings=stack)


def subprocess_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a ``stead`` child process pointed at a test stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEAD_") or k in KEEP}
    env.update(
        STEAD_HOME=str(settings.home),
        STEAD_POLICY_DIR=str(settings.policy_dir),
        STEAD_PLAYBOOK_DIR=str(settings.playbook_dir),
    )
    env.update(extra)
    return env
