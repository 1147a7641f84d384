"""``stead temporal setup`` on the dev server: a fresh namespace without Stead's search
attributes makes the worker refuse with one line naming them and the fix; setup
registers them (twice is harmless) and the worker then starts."""

from __future__ import annotations

import subprocess
import sys
import uuid

from stead.settings import Settings
from tests.conftest import REPO, subprocess_env
from tests.workers import worker_process


def stead(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stead.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_worker_refuses_a_namespace_without_search_attributes_until_setup(
    stack: Settings,
) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    task_queue = f"setup-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(stack, STEAD_TEMPORAL_NAMESPACE=namespace, STEAD_TASK_QUEUE=task_queue)

    absent = stead(env, "worker")
    assert absent.returncode == 1, absent
    assert f"stead temporal setup --namespace {namespace}" in absent.stderr
    assert "does not exist" in absent.stderr

    # The namespace alone (as a cluster admin would create it) still lacks the attributes.
    from tests.temporal_admin import register_namespace

    register_namespace(stack, namespace)
    refused = stead(env, "worker")
    assert refused.returncode == 1, refused
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    for name in ("SteadTenant(Keyword)", "SteadStatus(Keyword)", "SteadPendingApproval(Bool)"):
        assert name in lines[0]
    assert f"stead temporal setup --namespace {namespace}" in lines[0]

    first = stead(env, "temporal", "setup", "--namespace", namespace)
    assert first.returncode == 0, first
    assert "added SteadTenant(Keyword), SteadStatus(Keyword), SteadPendingApproval(Bool)" in (
        first.stdout
    )
    again = stead(env, "temporal", "setup", "--namespace", namespace)
    assert again.returncode == 0, again
    assert "exists; search attributes: all present" in again.stdout

    with worker_process(stack, task_queue, STEAD_TEMPORAL_NAMESPACE=namespace) as worker:
        assert worker.poll() is None


def test_setup_creates_a_missing_namespace(stack: Settings) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(stack, STEAD_TEMPORAL_NAMESPACE=namespace)
    created = stead(env, "temporal", "setup")
    assert created.returncode == 0, created
    assert f"namespace {namespace}: created" in created.stdout
    assert "added SteadTenant(Keyword)" in created.stdout


def test_cloud_prints_the_tcld_steps_without_connecting(stack: Settings) -> None:
    env = subprocess_env(stack, STEAD_TEMPORAL_ADDRESS="127.0.0.1:1")
    steps = stead(env, "temporal", "setup", "--namespace", "agents", "--cloud")
    assert steps.returncode == 0, steps
    assert "tcld namespace search-attributes add --namespace agents.<account-id>" in steps.stdout
    assert "--search-attribute SteadPendingApproval=Bool" in steps.stdout
