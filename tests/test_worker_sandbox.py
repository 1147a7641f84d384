"""The worker's sandbox keeps its run-time guard, and builds from code compiled once.

A workflow that reads the clock, draws a random number or opens a file has its workflow
task failed, so nothing it decided that way is ever recorded: the worker re-executes
workflow modules in each sandbox instead of passing them through (a passed-through
module holds the real ``time``, and the guard is gone). ``workers/sandbox.py`` serves
those modules from code compiled once per process (bench/sandbox_cost.py): the careless
workflow here is served the same way, so the guard is proven on that path, and a source
file edited under a running worker does not change what its next sandbox runs. It also
reads serialization contexts without entering the sandbox: the same answers, checked.
"""

from __future__ import annotations

import dataclasses
import importlib
import uuid
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Worker, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._runner import _fake_info

from tests.careless_workflow import Careless
from tests.conftest import WorkerHandle
from tests.test_cli_runs import eventually
from workers.main import WORKFLOW_RUNNER
from workers.sandbox import WORKFLOW_PACKAGES, WorkerSandbox, _DirectContexts
from workflows.hello import HelloWorkflow

# The worker's own runner, serving this test's careless module like it serves workflows/.
CARELESS_RUNNER = dataclasses.replace(
    WORKFLOW_RUNNER,
    workflow_packages=(*WORKFLOW_RUNNER.workflow_packages, Careless.__module__),
)

VERSIONED = """
from temporalio import workflow


@workflow.defn(name="{name}")
class Versioned:
    @workflow.run
    async def run(self) -> str:
        return "{version}"
"""


async def failed_task_message(client: Client, workflow_id: str) -> str | None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    for event in history.events:
        if event.HasField("workflow_task_failed_event_attributes"):
            return str(event.workflow_task_failed_event_attributes.failure.message)
    return None


def test_the_worker_runs_the_sdk_sandbox_with_its_default_restrictions() -> None:
    assert isinstance(WORKFLOW_RUNNER, WorkerSandbox)
    assert WORKFLOW_RUNNER.restrictions == SandboxRestrictions.default
    assert WORKFLOW_RUNNER.workflow_packages == WORKFLOW_PACKAGES == ("workflows",)


async def test_serialization_contexts_are_read_directly_and_match_the_sdks_answer() -> None:
    """On this SDK the shortcut is taken (a later SDK that moves its internals fails here,
    not silently slower), and it answers what the SDK's way through the sandbox does."""
    details = WorkflowInstanceDetails(
        payload_converter_factory=DataConverter.default._new_payload_converter,
        failure_converter_class=DataConverter.default.failure_converter_class,
        interceptor_classes=[],
        defn=workflow._Definition.must_from_class(HelloWorkflow),
        info=_fake_info,
        randomness_seed=-1,
        extern_functions={},
        disable_eager_activity_execution=False,
        worker_level_failure_exception_types=[],
        patch_activation_callback=None,
        last_completion_result=Payloads(),
        last_failure=Failure(),
    )
    direct = WORKFLOW_RUNNER.create_instance(details)
    assert isinstance(direct, _DirectContexts)
    sdk = dataclasses.replace(WORKFLOW_RUNNER, direct_contexts=False).create_instance(details)
    assert not isinstance(sdk, _DirectContexts)
    assert direct.get_serialization_context(None) == sdk.get_serialization_context(None)
    assert direct.get_external_store_context(None) == sdk.get_external_store_context(None)
    assert direct.get_info() == sdk.get_info()


@pytest.mark.parametrize("what", ["clock", "random", "file"])
async def test_the_worker_sandbox_still_refuses_nondeterminism(
    worker: WorkerHandle, what: str
) -> None:
    client = worker.client
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[Careless], workflow_runner=CARELESS_RUNNER
    ):
        handle = await client.start_workflow(
            Careless.run, what, id=f"{queue}-{what}", task_queue=queue
        )
        try:
            message = await eventually(
                lambda: failed_task_message(client, handle.id),
                f"{what}: the workflow task to fail",
                tries=600,
            )
        finally:
            await handle.terminate("test done")
    assert "restricted" in message.lower() or "cannot access" in message.lower(), message


async def run_new(client: Client, queue: str, name: str) -> str:
    """A new run: its first workflow task builds a fresh sandbox on the worker."""
    result: str = await client.execute_workflow(
        name, id=f"{queue}-{uuid.uuid4().hex[:6]}", task_queue=queue, result_type=str
    )
    return result


async def test_a_source_edited_under_a_running_worker_does_not_change_its_next_sandbox(
    worker: WorkerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"pinned_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    source = tmp_path / package / "flow.py"
    source.write_text(VERSIONED.format(name=package, version="first"))
    monkeypatch.syspath_prepend(str(tmp_path))
    versioned = importlib.import_module(f"{package}.flow").Versioned
    client = worker.client
    runner = dataclasses.replace(WORKFLOW_RUNNER, workflow_packages=(package,))
    queue = f"pinned-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[versioned], workflow_runner=runner):
        assert await run_new(client, queue, package) == "first"
        source.write_text(VERSIONED.format(name=package, version="edited while running"))
        assert await run_new(client, queue, package) == "first"
    # The SDK's own sandbox reads the file again for each one: the edit would have run.
    sdk_queue = f"unpinned-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=sdk_queue,
        workflows=[versioned],
        workflow_runner=SandboxedWorkflowRunner(),
    ):
        assert await run_new(client, sdk_queue, package) == "edited while running"
