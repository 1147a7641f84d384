"""Privacy on the way to a planner: `secret` never reaches a prompt; `pii` only where
OPA's `data.stead.memory.read` allows it for the principal and agent.

The planner is the real `LlmPlanner` talking to a local OpenAI-compatible server
(tests/peers.py), so the assertion is on the bytes a provider would receive.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pydantic import SecretStr, ValidationError

from activities.memory import MemoryActivities
from adapters.registry import default_catalog
from stead.contracts.activities import PlanInput, RecalledMemory
from stead.contracts.run import RunRequest
from stead.memory.contracts import RecallInput
from stead.memory.service import MemoryService
from stead.planning.llm import LlmPlanner
from stead.settings import Settings
from stead.vector import EdgeVectorIndex
from tests.peers import FakeLlm, serve
from tests.runs import configure_tenant
from tests.test_memory_support import new_tenant, open_service, query, remember

# litellm builds some of its pydantic schemas on first use; which call comes first
# decides whether pydantic's ReadOnly-TypedDict warning fires inside a test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
)

VAULT = "The vault code is 4417-ALPHA."
PHONE = "Jane Roe's mobile number is 555-0199."
BRAND = "Our brand colour is teal; keep replies short."
QUESTION = "vault code, Jane Roe's mobile number and our brand colour for the reply"
PLAN = {
    "rationale": "echo",
    "steps": [{"id": "say", "operation": "core.echo", "args": {"value": "hi"}}],
}


@pytest_asyncio.fixture(scope="module")
async def service(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryService]:
    index = EdgeVectorIndex(tmp_path_factory.mktemp("memory-privacy") / "qdrant")
    async with open_service(stack, index) as svc:
        yield svc


async def seeded_tenant(service: MemoryService, stack: Settings) -> str:
    tenant = new_tenant()
    await configure_tenant(
        stack.opa_url,
        tenant,
        memory={
            "pii_readers": [
                {"principals": ["user:alice"], "agents": ["planner"], "namespaces": ["crm/*"]}
            ]
        },
    )
    await service.remember(remember(tenant, "ops", "vault", VAULT, sensitivity="secret"))
    await service.remember(remember(tenant, "crm/people", "jane", PHONE, sensitivity="pii"))
    await service.remember(remember(tenant, "brand", "style", BRAND))
    return tenant


async def recall_for(
    service: MemoryService, tenant: str, principal: str
) -> tuple[RecalledMemory, ...]:
    recall = MemoryActivities(service).recall
    return await recall(
        RecallInput(tenant=tenant, principal=principal, query=QUESTION, workflow_id="wf-1", k=10)
    )


async def planner_prompt(stack: Settings, tenant: str, recalled: tuple[RecalledMemory, ...]) -> str:
    llm = FakeLlm()
    llm.reply_plan(PLAN)
    with serve(llm) as url:
        settings = stack.model_copy(
            update={
                "planner_model": "openai/fake-planner",
                "planner_api_base": f"{url}/v1",
                "planner_api_key": SecretStr("test-key"),
            }
        )
        request = RunRequest(tenant=tenant, principal="user:alice", goal="Answer Jane's question")
        await LlmPlanner(default_catalog(), settings).plan(
            PlanInput(request=request, workflow_id="wf-1", recalled=recalled), "wf-1/plan-1"
        )
    return json.dumps(llm.bodies)


async def test_secret_content_never_appears_in_the_planner_prompt(
    service: MemoryService, stack: Settings
) -> None:
    tenant = await seeded_tenant(service, stack)

    recalled = await recall_for(service, tenant, "user:alice")
    prompt = await planner_prompt(stack, tenant, recalled)

    assert "4417-ALPHA" not in prompt
    assert "teal" in prompt
    assert {m.sensitivity for m in recalled} == {"internal", "pii"}


async def test_pii_reaches_the_planner_only_when_opa_allows_the_principal(
    service: MemoryService, stack: Settings
) -> None:
    tenant = await seeded_tenant(service, stack)

    allowed = await planner_prompt(stack, tenant, await recall_for(service, tenant, "user:alice"))
    denied = await planner_prompt(stack, tenant, await recall_for(service, tenant, "user:bob"))

    assert "555-0199" in allowed
    assert "555-0199" not in denied and "teal" in denied


async def test_pii_is_withheld_from_an_agent_the_grant_does_not_name(
    service: MemoryService, stack: Settings
) -> None:
    tenant = await seeded_tenant(service, stack)

    result = await service.recall(
        query(tenant, QUESTION, agent="summarizer", clearance="pii", k=10)
    )

    assert [i.key for i in result.items] == ["style"] and result.withheld == 2  # pii, secret


async def test_a_tenant_without_grants_gets_no_pii(service: MemoryService) -> None:
    tenant = new_tenant()  # not configured in OPA at all: default deny
    await service.remember(remember(tenant, "crm/people", "jane", PHONE, sensitivity="pii"))

    result = await service.recall(query(tenant, "Jane Roe mobile number", clearance="pii"))

    assert result.items == () and result.withheld == 1
    shown = await service.get(tenant, "crm/people", "jane", principal="user:alice", clearance="pii")
    assert shown is not None and shown.content is None and shown.withheld


def test_a_planner_recall_cannot_ask_for_secrets() -> None:
    with pytest.raises(ValidationError, match="clearance"):
        RecallInput.model_validate(
            {
                "tenant": "acme",
                "principal": "user:alice",
                "query": "q",
                "workflow_id": "w",
                "clearance": "secret",
            }
        )
