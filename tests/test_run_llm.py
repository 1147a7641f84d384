"""The LLM planner inside a real run, against a local OpenAI-compatible server the test starts."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.client import Client

from stead.settings import Settings
from stead.temporal import connect
from tests.peers import FakeLlm, serve
from tests.runs import configure_tenant, new_tenant, start_run
from workers.main import build_worker, open_resources

VALID_PLAN = {
    "rationale": "echo twice",
    "steps": [
        {"id": "a", "operation": "core.echo", "args": {"value": 1}},
        {
            "id": "b",
            "operation": "core.echo",
            "args": {"value": {"$ref": "steps.a.output.value"}},
            "depends_on": ["a"],
        },
    ],
}


@dataclass
class LlmWorker:
    client: Client
    task_queue: str
    llm: FakeLlm
    settings: Settings


@pytest_asyncio.fixture(scope="module")
async def llm_worker(stack: Settings) -> AsyncIterator[LlmWorker]:
    llm = FakeLlm()
    with serve(llm) as url:
        settings = stack.model_copy(
            update={
                "planner_model": "openai/fake-planner",
                "planner_api_base": f"{url}/v1",
                "planner_api_key": SecretStr("test-key"),
            }
        )
        task_queue = f"llm-{uuid.uuid4().hex[:8]}"
        client = await connect(settings)
        async with (
            open_resources(settings) as resources,
            build_worker(client, task_queue, resources),
        ):
            yield LlmWorker(client, task_queue, llm, settings)


@pytest.fixture
def llm(llm_worker: LlmWorker) -> FakeLlm:
    llm_worker.llm.replies.clear()
    llm_worker.llm.bodies.clear()
    return llm_worker.llm


async def _run(w: LlmWorker, goal: str):  # type: ignore[no-untyped-def]
    tenant = new_tenant()
    await configure_tenant(w.settings.opa_url, tenant)
    handle = await start_run(w.client, w.task_queue, tenant=tenant, principal="user:ann", goal=goal)
    return await handle.result()


async def test_malformed_output_is_repaired_and_tokens_are_recorded(
    llm_worker: LlmWorker, llm: FakeLlm
) -> None:
    llm.reply_plan("this is not json {", tokens=40)
    llm.reply_plan(VALID_PLAN, tokens=60)
    status = await _run(llm_worker, "echo something")
    assert status.status == "completed", status.reasons
    assert len(llm.bodies) == 2
    second_prompt = json.dumps(llm.bodies[1]["messages"])
    assert "JSON" in second_prompt or "json" in second_prompt
    assert status.plan is not None and status.plan.planner.kind == "llm"
    assert status.plan.planner.tokens == 100 and status.spent.tokens == 100
    assert [s.output for s in status.steps] == [{"value": 1}, {"value": 1}]


async def test_rate_limit_is_retried_by_temporal_after_retry_after(
    llm_worker: LlmWorker, llm: FakeLlm
) -> None:
    llm.reply_error(429, {"Retry-After": "1"})
    llm.reply_plan(VALID_PLAN)
    status = await _run(llm_worker, "echo something")
    assert status.status == "completed", status.reasons
    assert len(llm.bodies) == 2


async def test_always_invalid_output_is_rejected_with_zero_steps_run(
    llm_worker: LlmWorker, llm: FakeLlm
) -> None:
    llm.reply_plan({"rationale": "x", "steps": [{"id": "a", "operation": "rm.rf", "args": {}}]})
    status = await _run(llm_worker, "do something impossible")
    assert status.status == "plan_rejected"
    assert status.steps == ()
    assert any("rm.rf" in reason for reason in status.reasons)
    assert len(llm.bodies) == 3


async def test_auth_error_is_not_retried(llm_worker: LlmWorker, llm: FakeLlm) -> None:
    llm.reply_error(401)
    status = await _run(llm_worker, "echo something")
    assert status.status == "plan_rejected"
    assert len(llm.bodies) == 1


async def test_a_rejected_plan_still_counts_the_tokens_its_planner_calls_spent(
    llm_worker: LlmWorker, llm: FakeLlm
) -> None:
    bad = {"rationale": "x", "steps": [{"id": "a", "operation": "rm.rf", "args": {}}]}
    for _ in range(3):
        llm.reply_plan(bad, tokens=30)
    status = await _run(llm_worker, "do something impossible")
    assert status.status == "plan_rejected"
    assert len(llm.bodies) == 3
    # Three calls were made and paid for: budgets and `stead slo` must see them.
    assert status.spent.tokens == 90, status.spent
