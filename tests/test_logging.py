"""Worker logs: one JSON object a line, carrying the tenant, run and step they are about."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from stead.observability.logs import ContextFilter, JsonFormatter, TextFormatter, log_context
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import WorkerHandle
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from tests.workers import worker_process

TWO_STEPS = playbook(
    {"id": "put", "operation": "records.put", "args": {"key": "k", "value": {}}},
    {"id": "echo", "operation": "core.echo", "args": {"value": 1}, "depends_on": ["put"]},
)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything logged in this process while the test runs, as the worker formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _parse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_line_carries_its_context_extras_and_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    log = logging.getLogger("tests.logging.unit")
    log.addHandler(handler)
    log.propagate = False
    try:
        with log_context(tenant="acme", run_id="run-1", step_id="s1"):
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("it broke", extra={"operation": "core.echo"})
        log.warning("outside")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    inside, outside = _parse(stream.getvalue())
    assert inside["message"] == "it broke" and inside["level"] == "ERROR"
    assert (inside["tenant"], inside["run_id"], inside["step_id"]) == ("acme", "run-1", "s1")
    assert inside["operation"] == "core.echo"
    assert "ValueError: boom" in inside["exc"]
    assert inside["ts"].endswith("+00:00")
    assert "tenant" not in outside and outside["message"] == "outside"


def test_text_lines_end_with_the_run_context() -> None:
    record = logging.LogRecord("stead.steps", logging.INFO, __file__, 1, "step done", None, None)
    with log_context(tenant="acme", run_id="run-1", step_id="s1"):
        ContextFilter().filter(record)
    assert (
        TextFormatter().format(record).endswith("step done [tenant=acme run_id=run-1 step_id=s1]")
    )


async def test_step_lines_from_a_run_carry_tenant_run_and_step(
    worker: WorkerHandle, json_lines: io.StringIO
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=TWO_STEPS,
    )
    assert (await handle.result()).status == "completed"
    lines = _parse(json_lines.getvalue())
    steps = [
        line for line in lines if line["logger"] == "stead.steps" and line.get("tenant") == tenant
    ]
    assert {(s["step_id"], s["operation"], s["outcome"]) for s in steps} == {
        ("put", "records.put", "succeeded"),
        ("echo", "core.echo", "succeeded"),
    }
    for line in steps:
        assert line["run_id"] == handle.id
        assert line["level"] == "INFO"
        assert line["attempt"] == 1
        assert isinstance(line["duration_ms"], float)


async def test_stead_worker_writes_json_lines_for_steps_and_itself(stack: Settings) -> None:
    task_queue = f"logs-{uuid.uuid4().hex[:8]}"
    with worker_process(stack, task_queue, drain=False) as child:
        client = await connect(stack)
        tenant = new_tenant()
        await configure_tenant(stack.opa_url, tenant)
        handle = await start_run(
            client, task_queue, tenant=tenant, principal="user:ann", playbook_source=TWO_STEPS
        )
        assert (await handle.result()).status == "completed"
        child.send_signal(signal.SIGTERM)
        assert child.stdout is not None
        output = await asyncio.to_thread(child.stdout.read)
        await asyncio.to_thread(child.wait, 20)
    lines = _parse(output)
    assert all(set(line) >= {"ts", "level", "logger", "message"} for line in lines)
    steps = [line for line in lines if line["logger"] == "stead.steps"]
    assert {(s["tenant"], s["run_id"], s["step_id"]) for s in steps} == {
        (tenant, handle.id, "put"),
        (tenant, handle.id, "echo"),
    }
    assert any(line["logger"] == "stead.worker" and "draining" in line["message"] for line in lines)
