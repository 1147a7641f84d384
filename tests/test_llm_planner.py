"""The LLM planner against a real OpenAI-compatible HTTP server started by the test.

The server speaks ``POST /v1/chat/completions``, answers from a script per test and
records every request body, so tests assert on what actually went over the wire:
prompts, corrections, how many calls were made.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, JsonValue
from temporalio.exceptions import ApplicationError

from activities.planning import PlanningActivities
from stead.contracts.activities import PLAN_REJECTED, PlanInput, RecalledMemory
from stead.contracts.run import Budget, Plan, RunRequest
from stead.operations.base import Operation, OperationContext
from stead.operations.catalog import Catalog
from stead.planning import PlanRejected
from stead.planning.llm import (
    PLANNER_RATE_LIMITED,
    PLANNER_UNAVAILABLE,
    PLANNER_UNUSABLE,
    LlmPlanner,
)
from stead.settings import Settings
from tests.peers import serve_handler


class PutArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    value: dict[str, JsonValue]


class PutResult(BaseModel):
    key: str
    version: int


class GetArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str


class GetResult(BaseModel):
    value: dict[str, JsonValue] | None


async def _put(ctx: OperationContext, args: PutArgs) -> PutResult:
    return PutResult(key=args.key, version=1)


async def _get(ctx: OperationContext, args: GetArgs) -> GetResult:
    return GetResult(value=None)


CATALOG = Catalog(
    [
        Operation(
            name="records.put",
            description="Write a record under a key.",
            args_model=PutArgs,
            result_model=PutResult,
            run=_put,
            side_effect="write",
            risk="medium",
            idempotency="key",
        ),
        Operation(
            name="records.get",
            description="Read the record stored under a key.",
            args_model=GetArgs,
            result_model=GetResult,
            run=_get,
            side_effect="read",
            risk="low",
            idempotency="native",
        ),
    ]
)

GOOD_PLAN: dict[str, Any] = {
    "rationale": "store then verify",
    "steps": [
        {
            "id": "put",
            "operation": "records.put",
            "args": {"key": "k1", "value": {"text": "hi"}},
            "depends_on": [],
            "rationale": "store it",
            "on_failure": "abort",
        },
        {
            "id": "get",
            "operation": "records.get",
            "args": {"key": {"$ref": "steps.put.output.key"}},
            "depends_on": ["put"],
            "rationale": "read it back",
            "on_failure": "replan",
        },
    ],
}
UNKNOWN_OP_PLAN: dict[str, Any] = {
    "rationale": "drop it",
    "steps": [{"id": "drop", "operation": "records.drop", "args": {"key": "k1"}}],
}


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FakeLlm:
    """Scripted replies in, recorded requests out."""

    def __init__(self) -> None:
        self.url = ""
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.auth: list[str | None] = []
        self._lock = threading.Lock()

    def answer(
        self, content: str | dict[str, Any], prompt_tokens: int = 100, completion_tokens: int = 20
    ) -> None:
        text = content if isinstance(content, str) else json.dumps(content)
        n = len(self.replies)
        self.replies.append(
            Reply(
                200,
                {
                    "id": f"chatcmpl-{n}",
                    "object": "chat.completion",
                    "created": 1_700_000_000,
                    "model": "fake-planner",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                },
            )
        )

    def hang(self, seconds: float) -> None:
        """Answer, but only after ``seconds``: longer than the planner waits."""
        self.answer(GOOD_PLAN)
        self.replies[-1].delay = seconds

    def fail(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}
        self.replies.append(Reply(status, body, headers or {}))

    def take(self, raw: str, auth: str | None) -> Reply:
        with self._lock:
            self.raw.append(raw)
            self.requests.append(json.loads(raw))
            self.auth.append(auth)
            if not self.replies:
                return Reply(500, {"error": {"message": "the test scripted no more replies"}})
            return self.replies.pop(0)

    def user_text(self, index: int) -> str:
        """Everything the model was told in request ``index``, as one string."""
        return "\n".join(m["content"] for m in self.requests[index]["messages"])


def _handler(llm: FakeLlm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode()
            if self.path != "/v1/chat/completions":
                reply = Reply(404, {"error": {"message": f"no route {self.path}"}})
            else:
                reply = llm.take(raw, self.headers.get("Authorization"))
            time.sleep(reply.delay)
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def llm() -> Iterator[FakeLlm]:
    fake = FakeLlm()
    # Quiet: a client that gave up (a planner timeout) is expected here, not an error.
    with serve_handler(_handler(fake), quiet=True) as url:
        fake.url = f"{url}/v1"
        yield fake


def settings_for(llm: FakeLlm, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "home": tmp_path,
        "planner_model": "openai/fake-planner",
        "planner_api_base": llm.url,
        "planner_api_key": "test-key",
        "planner_timeout_seconds": 10.0,
        **overrides,
    }
    return Settings(**values)


def plan_input(
    goal: str = "store k1 and read it back", budget: Budget | None = None, **extra: Any
) -> PlanInput:
    request = RunRequest(
        tenant="acme",
        principal="user:ann",
        goal=goal,
        inputs={"key": "k1"},
        budget=budget or Budget(),
    )
    return PlanInput(request=request, workflow_id="wf-9", **extra)


def planner(llm: FakeLlm, tmp_path: Path, **overrides: Any) -> LlmPlanner:
    return LlmPlanner(CATALOG, settings_for(llm, tmp_path, **overrides))


async def test_a_valid_plan_on_the_first_call(llm: FakeLlm, tmp_path: Path) -> None:
    llm.answer(GOOD_PLAN, prompt_tokens=300, completion_tokens=45)
    plan = await planner(llm, tmp_path).plan(plan_input(), "wf-9/plan-1")

    assert isinstance(plan, Plan)
    assert [s.id for s in plan.steps] == ["put", "get"]
    assert plan.steps[1].on_failure == "replan"
    assert plan.rationale == "store then verify"
    assert plan.plan_hash == Plan.hash_steps(plan.steps)
    assert plan.execution["put"].side_effect == "write"
    info = plan.planner
    assert (info.kind, info.model, info.tokens, info.attempts) == (
        "llm",
        "openai/fake-planner",
        345,
        1,
    )
    assert info.cost_usd == 0.0  # litellm has no price for a fake model
    assert info.prompt_hash is not None and len(info.prompt_hash) == 64

    assert len(llm.requests) == 1
    sent = llm.requests[0]
    assert sent["model"] == "fake-planner"
    assert sent["response_format"] == {"type": "json_object"}
    assert llm.auth == ["Bearer test-key"]
    system, user = sent["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    assert '"name":"records.put"' in system["content"]
    assert "Read the record stored under a key." in system["content"]
    assert '"on_failure"' in system["content"]  # the answer's JSON schema
    assert "store k1 and read it back" in user["content"]
    assert '"key": "k1"' in user["content"]
    assert "at most 50 steps" in user["content"]


async def test_malformed_json_is_repaired_by_a_second_call(llm: FakeLlm, tmp_path: Path) -> None:
    llm.answer('{"rationale": "oops", "steps": [', prompt_tokens=100, completion_tokens=10)
    llm.answer(GOOD_PLAN, prompt_tokens=150, completion_tokens=40)
    plan = await planner(llm, tmp_path).plan(plan_input(), "wf-9/plan-1")

    assert len(llm.requests) == 2
    assert plan.planner.attempts == 2
    assert plan.planner.tokens == 300
    second = llm.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == '{"rationale": "oops", "steps": ['
    assert "the answer is not valid JSON" in second[3]["content"]
    assert llm.requests[1]["messages"][:2] == llm.requests[0]["messages"]


async def test_an_unknown_operation_is_repaired(llm: FakeLlm, tmp_path: Path) -> None:
    llm.answer(UNKNOWN_OP_PLAN)
    llm.answer(GOOD_PLAN)
    plan = await planner(llm, tmp_path).plan(plan_input(), "wf-9/plan-1")

    assert [s.operation for s in plan.steps] == ["records.put", "records.get"]
    assert len(llm.requests) == 2
    correction = llm.requests[1]["messages"][-1]["content"]
    assert "step 'drop': unknown operation 'records.drop'" in correction
    assert "known operations: records.get, records.put" in correction


async def test_an_always_invalid_plan_is_rejected_after_three_calls(
    llm: FakeLlm, tmp_path: Path
) -> None:
    for _ in range(5):
        llm.answer(UNKNOWN_OP_PLAN)
    with pytest.raises(PlanRejected) as caught:
        await planner(llm, tmp_path).plan(plan_input(), "wf-9/plan-1")

    assert len(llm.requests) == 3
    assert any("unknown operation 'records.drop'" in r for r in caught.value.reasons)
    assert "after 3 attempts" in str(caught.value)
    # Each correction carries the whole conversation so far.
    assert [len(r["messages"]) for r in llm.requests] == [2, 4, 6]


async def test_a_model_that_finds_no_plan_is_not_asked_again(llm: FakeLlm, tmp_path: Path) -> None:
    llm.answer({"rationale": "no operation can send email", "steps": []})
    with pytest.raises(PlanRejected, match="no operation can send email"):
        await planner(llm, tmp_path).plan(plan_input("email the team"), "wf-9/plan-1")
    assert len(llm.requests) == 1


async def test_rate_limit_is_retryable_after_the_retry_after_delay(
    llm: FakeLlm, tmp_path: Path
) -> None:
    llm.fail(429, "slow down", {"Retry-After": "7"})
    llm.answer(GOOD_PLAN)  # would be served if litellm retried on its own
    with pytest.raises(ApplicationError) as caught:
        await planner(llm, tmp_path).plan(plan_input(), "wf-9/plan-1")

    error = caught.value
    assert error.type == PLANNER_RATE_LIMITED
    assert not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=7)
    assert len(llm.requests) == 1, "Temporal owns retries, litellm must not retry"


async def test_bad_credentials_are_not_retried(llm: FakeLlm, tmp_path: Path) -> None:
    llm.fail(401, "Incorrect API key provided: test-key")
    with pytest.raises(ApplicationError) as caught:
        await planner(llm, tmp_path).plan(plan_input(), "wf-9/plan-1")

    error = caught.value
    assert error.type == PLANNER_UNUSABLE
    assert error.non_retryable
    assert "STEAD_PLANNER_API_KEY" in error.message
    assert "test-key" not in error.message
    assert len(llm.requests) == 1


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, PLANNER_UNUSABLE, False),
        (403, PLANNER_UNUSABLE, False),  # litellm raises a bare APIError for 403
        (404, PLANNER_UNUSABLE, False),
        (500, PLANNER_UNAVAILABLE, True),
        (502, PLANNER_UNAVAILABLE, True),
        (503, PLANNER_UNAVAILABLE, True),
    ],
)
async def test_provider_errors_are_classified_once(
    llm: FakeLlm, tmp_path: Path, status: int, kind: str, retryable: bool
) -> None:
    llm.fail(status, f"provider says {status}")
    with pytest.raises(ApplicationError) as caught:
        await planner(llm, tmp_path).plan(plan_input(), "wf-9/plan-1")
    assert caught.value.type == kind
    assert caught.value.non_retryable is not retryable
    assert caught.value.__cause__ is None, "raw provider errors stay out of history"
    assert len(llm.requests) == 1


async def test_a_slow_provider_times_out_retryably(llm: FakeLlm, tmp_path: Path) -> None:
    llm.hang(1.0)
    with pytest.raises(ApplicationError) as caught:
        await planner(llm, tmp_path, planner_timeout_seconds=0.2).plan(plan_input(), "wf-9/plan-1")
    assert caught.value.type == PLANNER_UNAVAILABLE
    assert not caught.value.non_retryable
    assert len(llm.requests) == 1


async def test_an_unreachable_provider_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        _env_file=None,
        home=tmp_path,
        planner_model="openai/fake-planner",
        planner_api_base=f"http://127.0.0.1:{port}/v1",
        planner_api_key="test-key",
    )
    with pytest.raises(ApplicationError) as caught:
        await LlmPlanner(CATALOG, settings).plan(plan_input(), "wf-9/plan-1")
    assert caught.value.type == PLANNER_UNAVAILABLE
    assert not caught.value.non_retryable


async def test_secret_memories_never_reach_the_model(llm: FakeLlm, tmp_path: Path) -> None:
    recalled = (
        RecalledMemory(namespace="crm", key="style", content="Customers like short replies."),
        RecalledMemory(
            namespace="crm", key="pw", content="hunter2-DO-NOT-SEND", sensitivity="secret"
        ),
        RecalledMemory(namespace="ops", key="tok", content="tok-SHOUTED", sensitivity="SECRET"),
    )
    llm.answer(UNKNOWN_OP_PLAN)  # a correction round trip resends the context too
    llm.answer(GOOD_PLAN)
    await planner(llm, tmp_path).plan(plan_input(recalled=recalled), "wf-9/plan-1")

    assert len(llm.raw) == 2
    for body in llm.raw:
        assert "hunter2-DO-NOT-SEND" not in body
        assert "tok-SHOUTED" not in body
        assert "Customers like short replies." in body
    assert '"source": "crm/style"' in llm.user_text(0)


async def test_a_replan_tells_the_model_what_failed_and_what_is_done(
    llm: FakeLlm, tmp_path: Path
) -> None:
    llm.answer({"rationale": "read again", "steps": [GOOD_PLAN["steps"][1]]})
    plan = await planner(llm, tmp_path).plan(
        plan_input(attempt=2, failure_context="get timed out", completed_steps=("put",)),
        "wf-9/plan-2",
    )
    assert [s.id for s in plan.steps] == ["get"]
    told = llm.user_text(0)
    assert "get timed out" in told
    assert "Already succeeded: put." in told


async def test_no_model_configured_is_a_clear_rejection(llm: FakeLlm, tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as caught:
        await planner(llm, tmp_path, planner_model=None).plan(plan_input(), "wf-9/plan-1")
    error = caught.value
    assert error.type == PLAN_REJECTED and error.non_retryable
    assert error.message == (
        "no planner model configured: set STEAD_PLANNER_MODEL or use --playbook"
    )
    assert llm.requests == []


async def test_the_activity_plans_goals_with_the_llm(llm: FakeLlm, tmp_path: Path) -> None:
    llm.answer(GOOD_PLAN)
    activities = PlanningActivities(CATALOG, settings_for(llm, tmp_path))
    plan = await activities.create_plan(plan_input(attempt=3))
    assert plan.plan_id == "wf-9/plan-3"
    assert plan.planner.kind == "llm"


async def test_the_activity_turns_a_rejected_llm_plan_into_plan_rejected(
    llm: FakeLlm, tmp_path: Path
) -> None:
    for _ in range(3):
        llm.answer(UNKNOWN_OP_PLAN)
    activities = PlanningActivities(CATALOG, settings_for(llm, tmp_path))
    with pytest.raises(ApplicationError) as caught:
        await activities.create_plan(plan_input())
    error = caught.value
    assert error.type == PLAN_REJECTED and error.non_retryable
    reasons = error.details[0]
    assert isinstance(reasons, list)
    assert any("unknown operation 'records.drop'" in r for r in reasons)
