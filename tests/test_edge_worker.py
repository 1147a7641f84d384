"""Hybrid edge deployment: email steps run on an edge worker that alone holds the relay.

The main worker (in process) runs the workflow, planning and policy, and routes the
``email`` adapter to the edge queue (``STEAD_ADAPTER_QUEUES``); it has no SMTP relay
and does not execute email steps. The edge worker is a real ``stead worker --adapters
email --task-queue <edge>`` subprocess: no workflows, only ``adapter.execute`` for
email, with the relay settings in its own environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle

from adapters.email import message_id
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import REPO, WorkerHandle, settings_for, subprocess_env
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from tests.smtp_peer import Mailbox, smtp_server
from tests.workers import stop_worker
from workers.edge import open_edge_resources
from workers.main import WorkerResources, build_worker, open_resources

EDGE_QUEUE = f"edge-email-{uuid.uuid4().hex[:8]}"
TENANT = new_tenant()
SENDER = "ops@acme.test"


@pytest.fixture(scope="module")
def smtp() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest_asyncio.fixture(scope="module")
async def main_worker(stack: Settings) -> AsyncIterator[tuple[WorkerHandle, WorkerResources]]:
    settings = settings_for(stack.home, adapter_queues={"email": EDGE_QUEUE})
    task_queue = f"test-main-{uuid.uuid4().hex[:8]}"
    client = await connect(settings)
    async with open_resources(settings) as resources, build_worker(client, task_queue, resources):
        yield WorkerHandle(client=client, task_queue=task_queue, settings=settings), resources


def _start(settings: Settings, log: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stead.cli", "worker", *args],
            env=subprocess_env(settings, **env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="module")
def edge(
    stack: Settings, smtp: Mailbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path_factory.mktemp("edge") / "worker.log"
    child = _start(
        stack,
        log,
        "--adapters",
        "email",
        "--task-queue",
        EDGE_QUEUE,
        STEAD_SMTP_HOST="127.0.0.1",
        STEAD_SMTP_PORT=str(smtp.port),
        STEAD_SMTP_SECURITY="none",
        STEAD_EMAIL_SENDERS=json.dumps({TENANT: SENDER}),
    )
    deadline = time.monotonic() + 60
    while "stead worker ready" not in log.read_text(errors="replace"):
        if child.poll() is not None or time.monotonic() > deadline:
            stop_worker(child)
            raise AssertionError("edge worker did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.1)
    try:
        yield child
    finally:
        stop_worker(child)


async def _execute_queues(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The task queue each execution of the run was scheduled on (``step.run`` decides and
    executes on the run's own queue; a routed step's ``adapter.execute`` goes to its edge)."""
    queues = []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name in ("step.run", "adapter.execute"):
                queues.append(attrs.task_queue.name)
    return queues


async def test_the_main_worker_plans_email_but_cannot_send_it(
    main_worker: tuple[WorkerHandle, WorkerResources],
) -> None:
    handle, resources = main_worker
    assert resources.catalog.get("email.send").task_queue == EDGE_QUEUE
    assert "email.send" not in resources.catalog.local_to(handle.settings.task_queue)
    assert "records.put" in resources.catalog.local_to(handle.settings.task_queue)
    assert resources.adapters.smtp is None


async def test_an_edge_worker_holds_only_its_adapters_handles(stack: Settings) -> None:
    settings = settings_for(stack.home, smtp_host="127.0.0.1", smtp_security="none")
    async with open_edge_resources(settings, ["email"]) as edge:
        assert edge.catalog.names() == ["email.send"]
        assert edge.adapters.smtp is not None and edge.adapters.smtp.host == "127.0.0.1"
        held = (edge.adapters.http, edge.adapters.sql, edge.adapters.files, edge.adapters.secrets)
        assert held == (None, None, None, None)
        assert [a.__name__ for a in edge.activities()] == ["execute"]


async def test_an_email_step_runs_on_the_edge_worker(
    main_worker: tuple[WorkerHandle, WorkerResources],
    edge: subprocess.Popen[bytes],
    smtp: Mailbox,
) -> None:
    handle, _ = main_worker
    await configure_tenant(handle.settings.opa_url, TENANT, egress=["mail:example.test"])
    rcpt = f"ann-{uuid.uuid4().hex[:6]}@example.test"
    run = await start_run(
        handle.client,
        handle.task_queue,
        tenant=TENANT,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "note", "operation": "records.put", "args": {"key": "k", "value": {"n": 1}}},
            {
                "id": "mail",
                "operation": "email.send",
                "args": {"to": [rcpt], "subject": "Report ready", "text": "See records/k."},
                "depends_on": ["note"],
            },
        ),
    )
    status = await run.result()
    assert status.status == "completed", status.reasons
    (message,) = smtp.to(rcpt)
    assert message["Message-ID"] == message_id(f"{run.id}/mail", SENDER)
    sent = status.steps[1].output
    assert isinstance(sent, dict) and sent["message_id"] == message["Message-ID"]
    assert sorted(await _execute_queues(run)) == sorted([handle.task_queue, EDGE_QUEUE])
    assert edge.poll() is None


def test_an_edge_worker_for_an_unknown_adapter_refuses_to_start(
    stack: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    child = _start(stack, log, "--adapters", "email,pager", "--task-queue", "edge-x")
    assert child.wait(timeout=60) == 1
    output = " ".join(log.read_text().split())
    assert "unknown adapter(s) pager" in output
    assert "installed adapters:" in output and "email" in output
