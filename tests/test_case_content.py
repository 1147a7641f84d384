"""Field case A end to end: a solo creator's content week.

Real pieces only: memory in the session's Postgres, the example LLM (an
OpenAI-compatible server reached through litellm), the example platform (HTTP,
Idempotency-Key), an aiosmtpd mailbox, OPA with the shipped tenant policy, and a
``stead worker`` child process that the test kills with SIGKILL mid-publish.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle

from adapters.memory import remembered_data
from stead.cli.memory import open_session
from stead.contracts.run import RunInput, RunRequest, RunStatus
from stead.db.pool import create_pool, tenant_transaction
from stead.identity.directory import add_principal, create_tenant
from stead.memory.contracts import Provenance, RememberRequest
from stead.settings import Settings
from stead.slo.report import Figures, compute_report
from stead.temporal import connect
from stead_cases.runs import CONTENT_AGENT, content_goal_request, content_request
from stead_cases.services import content
from stead_cases.services._http import serve
from stead_cases.services.llm import ExampleLlm
from stead_cases.services.mailbox import Mailbox
from stead_cases.services.mailbox import serve as serve_smtp
from stead_cases.services.platform import PlatformService
from tests.cases import (
    approve_until_done,
    configure_case_tenant,
    decide,
    output,
    playbook_variant,
    retire,
    step,
)
from tests.opa_auth import admin_headers
from tests.runs import new_tenant, wait_pending
from tests.workers import start_worker

CREATOR = "user:creator"
SIGN_OFF = "Keep making things. - Sam"


@dataclass
class Case:
    client: Client
    settings: Settings
    task_queue: str
    tenant: str
    tight_tenant: str
    platform: PlatformService
    platform_url: str
    llm: ExampleLlm
    llm_url: str
    mailbox: Mailbox
    worker: subprocess.Popen[str]
    env: dict[str, str]

    def restart_worker(self) -> None:
        retire(self.worker)
        self.worker = start_worker(self.settings, self.task_queue, env=self.env)

    async def start(self, request: RunRequest) -> WorkflowHandle[Any, RunStatus]:
        return await self.client.start_workflow(
            "stead.run",
            RunInput(request=request),
            id=f"run-{request.tenant}-{uuid.uuid4().hex[:12]}",
            task_queue=self.task_queue,
            result_type=RunStatus,
        )

    def posts_of(self, workflow_id: str) -> list[dict[str, Any]]:
        return [p for p in self.platform.posts if p["idempotency_key"].startswith(workflow_id)]


async def seed_tenant(settings: Settings, tenant: str) -> None:
    """The creator's directory entry (who may start runs), then what `stead memory put`
    does: versioned memories with the creator as their author."""
    pool = await create_pool(settings.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            await create_tenant(conn, tenant)
            for principal in (CONTENT_AGENT, CREATOR):
                await add_principal(conn, tenant, principal)
    finally:
        await pool.close()
    async with open_session(settings) as session:
        for namespace, key, text, why in content.seed():
            await session.service.remember(
                RememberRequest(
                    tenant=tenant,
                    namespace=namespace,
                    key=key,
                    content=text,
                    provenance=Provenance(principal=CREATOR, agent="tests", reason=why),
                )
            )


@pytest.fixture(scope="module")
async def case(stack: Settings) -> AsyncIterator[Case]:
    tenant, tight = new_tenant(), new_tenant()
    for t in (tenant, tight):
        await configure_case_tenant(stack.opa_url, t, "creator")
    await seed_tenant(stack, tenant)
    platform, llm, mailbox = PlatformService(), ExampleLlm(), Mailbox()
    with serve(platform) as platform_url, serve(llm) as llm_url, serve_smtp(mailbox) as smtp:
        env = {
            "STEAD_SMTP_HOST": smtp[0],
            "STEAD_SMTP_PORT": str(smtp[1]),
            "STEAD_SMTP_SECURITY": "none",
            "STEAD_EMAIL_SENDERS": json.dumps({tenant: "sam@makersbench.example"}),
            "STEAD_PLANNER_MODEL": "openai/gpt-4o-mini",
            "STEAD_PLANNER_API_BASE": f"{llm_url}/v1",
            "STEAD_PLANNER_API_KEY": "example",
        }
        task_queue = f"content-{uuid.uuid4().hex[:8]}"
        worker = start_worker(stack, task_queue, env=env)
        state = Case(
            await connect(stack),
            stack,
            task_queue,
            tenant,
            tight,
            platform,
            platform_url,
            llm,
            llm_url,
            mailbox,
            worker,
            env,
        )
        try:
            yield state
        finally:
            retire(state.worker)


async def slo_figures(settings: Settings, tenant: str) -> Figures:
    """The tenant's last hour as `stead slo --json` computes it."""
    pool = await create_pool(settings.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            report = await compute_report(conn, tenant=tenant, since="1h")
    finally:
        await pool.close()
    return report.tenants.get(tenant, report.total)


def weekly(case: Case, **timeouts: float) -> RunRequest:
    week = content.week()
    return content_request(
        case.tenant,
        week=week["week"],
        video_title=week["video_title"],
        topic=week["topic"],
        clips=week["clips"],
        hashtags=week["hashtags"],
        platform_url=case.platform_url,
        subscribers=week["subscribers"],
        llm_api_base=f"{case.llm_url}/v1",
        playbook_source=playbook_variant("content-weekly", **timeouts),
    )


async def test_weekly_playbook_is_reviewed_then_published_once_through_a_5xx_and_a_worker_kill(
    case: Case, stack: Settings
) -> None:
    # The first post lands but its answer is a 503; the retry then dies with the worker
    # right after the second post lands. Neither may post anything twice.
    case.platform.fail_next(503, when="after")
    held = case.platform.stall_next(skip=1)
    handle = await case.start(weekly(case, publish=4))

    review = await wait_pending(handle, "publish")
    assert review.approvers == (CREATOR,)
    assert any("external side effects" in r for r in review.reasons)
    posts = review.args["posts"]
    assert isinstance(posts, list) and len(posts) == 4  # x, linkedin and one per clip
    await decide(handle, review, CREATOR)

    assert await asyncio.to_thread(held.wait, 60)
    os.kill(case.worker.pid, signal.SIGKILL)
    await asyncio.to_thread(case.worker.wait, 30)
    case.platform.release()
    case.restart_worker()

    status, approved = await approve_until_done(handle, CREATOR)
    assert status.status == "completed", status.reasons
    assert approved == ["newsletter"]

    published = case.posts_of(handle.id)
    assert [p["channel"] for p in published] == ["x", "linkedin", "shorts", "shorts"]
    assert case.platform.requests >= 6  # 1 failed + 2 cut off + 4 replays/creates
    assert SIGN_OFF in published[0]["text"]  # the brand voice came from memory
    mails = [m for m in case.mailbox.messages if m["subject"].startswith("New video")]
    assert len(mails) == 1 and sorted(mails[0]["to"]) == ["ada@example.com", "lin@example.com"]

    brief = step(status, "brief")
    assert brief.decision is not None and brief.decision.outcome == "allow"
    items = output(status, "brief")["items"]
    assert [(i["key"], i["version"]) for i in items] == [
        ("voice", 1),
        ("style-guide", 1),
        ("episode", 1),
        ("episode", 2),
    ]
    assert {i["written_by"] for i in items} == {CREATOR}
    draft = output(status, "draft_x")
    assert draft["usage"]["total_tokens"] > 0 and draft["cost_usd"] > 0
    assert [a.approver for a in step(status, "publish").approvals] == [CREATOR]

    pool = await create_pool(stack.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, case.tenant) as conn:
            attempts = await conn.fetchval(
                "SELECT attempts FROM effects WHERE idempotency_key = $1", f"{handle.id}/publish"
            )
    finally:
        await pool.close()
    assert attempts >= 3


async def test_weekly_playbook_redrafts_a_rejected_package_with_the_comment_and_counts_its_cost(
    case: Case, stack: Settings
) -> None:
    comment = "Say the livestream starts Friday at 6pm"
    before = await slo_figures(stack, case.tenant)
    handle = await case.start(weekly(case))
    first = await wait_pending(handle, "publish")
    await decide(handle, first, CREATOR, reject=True, comment=comment)

    # The playbook's on_reject block: the drafts are redone with the comment as feedback.
    second = await wait_pending(handle, "republish_2")
    asked = [c for c in case.llm.calls if c["role"] == "writer" and comment in c["system"]]
    assert len(asked) == 2  # redraft_x_2 and redraft_linkedin_2 sent it to the model
    posts: Any = second.args["posts"]
    texts = [p["text"] for p in posts]
    assert [comment in t for t in texts] == [True, True, False, False]  # clips unchanged
    await decide(handle, second, CREATOR)
    status, approved = await approve_until_done(handle, CREATOR)

    assert status.status == "completed", status.reasons
    assert status.replans == 1 and approved == ["newsletter"]
    assert "publish" not in [s.step_id for s in status.steps]  # replaced by republish_2
    published = case.posts_of(handle.id)
    assert [p["channel"] for p in published] == ["x", "linkedin", "shorts", "shorts"]
    assert all(p["idempotency_key"].startswith(f"{handle.id}/republish_2/") for p in published)
    assert all(comment in p["text"] for p in published[:2])

    # Every draft's tokens and dollars are in the run's spend and its record.
    drafts: list[Any] = [
        s.output for s in status.steps if s.operation == "llm.generate" and s.status == "succeeded"
    ]
    assert len(drafts) == 5  # three drafts, two redrafts
    tokens = sum(d["usage"]["total_tokens"] for d in drafts)
    usd = sum(d["cost_usd"] for d in drafts)
    assert tokens > 0 and usd > 0
    assert status.spent.tokens == tokens and status.spent.usd == pytest.approx(usd)
    pool = await create_pool(stack.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, case.tenant) as conn:
            record = await conn.fetchrow(
                "SELECT tokens, cost_usd::float8 AS usd FROM runs WHERE workflow_id = $1",
                handle.id,
            )
    finally:
        await pool.close()
    assert record is not None
    assert record["tokens"] == tokens and record["usd"] == pytest.approx(usd)
    figures = await slo_figures(stack, case.tenant)  # what `stead slo --json` reports
    assert figures.cost.total_tokens == before.cost.total_tokens + tokens
    assert figures.cost.total_usd == pytest.approx(before.cost.total_usd + usd)

    # What went out is remembered as structured data, with this run as its provenance.
    remembered = step(status, "remember").output
    assert isinstance(remembered, dict) and remembered["key"] == "published"
    async with open_session(case.settings) as session:
        versions = await session.service.history(
            case.tenant, "content", "published", principal=CREATOR
        )
    latest = versions[-1]
    assert latest.version == remembered["version"]
    assert (latest.provenance.workflow_id, latest.provenance.step_id) == (handle.id, "remember")
    data: Any = remembered_data(latest.content or "")
    assert isinstance(data, dict) and data["week"] == content.week()["week"]
    assert [p["post_id"] for p in data["posts"]] == [p["id"] for p in published]


async def test_llm_planned_week_redrafts_a_rejected_draft_with_the_reviewers_comment(
    case: Case, stack: Settings
) -> None:
    week = content.week()
    planner_calls = case.llm.count("planner")
    before = await slo_figures(stack, case.tenant)
    handle = await case.start(
        content_goal_request(
            case.tenant,
            "Announce the plywood workbench video on X and LinkedIn",
            week=week["week"],
            video_title=week["video_title"],
            platform_url=case.platform_url,
            llm_api_base=f"{case.llm_url}/v1",
        )
    )
    first = await wait_pending(handle, "publish")
    comment = "Mention the Friday livestream"
    await decide(handle, first, CREATOR, reject=True, comment=comment)

    second = await wait_pending(handle, "publish_2")
    posts: Any = second.args["posts"]
    texts = [p["text"] for p in posts]
    assert all(f"Revised after review: {comment}" in t for t in texts), texts
    await decide(handle, second, CREATOR)
    status = await handle.result()

    assert status.status == "completed", status.reasons
    assert status.replans == 1
    assert case.llm.count("planner") - planner_calls == 2
    published = case.posts_of(handle.id)
    assert len(published) == 2 and all(comment in p["text"] for p in published)
    assert output(status, "redraft_x_2")["cost_usd"] > 0

    figures = await slo_figures(stack, case.tenant)
    assert figures.approvals.overridden == before.approvals.overridden + 1
    assert figures.minutes_saved > 0
    # The planner's tokens and the drafts', priced by litellm.
    assert figures.cost.total_usd == pytest.approx(before.cost.total_usd + status.spent.usd)


async def test_tightening_the_review_threshold_in_opa_holds_more_steps(case: Case) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.put(
            f"{case.settings.opa_url}/v1/data/stead/tenants/{case.tight_tenant}/approval_risk",
            json="low",
            headers=admin_headers(),
        )
        response.raise_for_status()
    week = content.week()
    handle = await case.start(
        content_goal_request(
            case.tight_tenant,
            "Announce the plywood workbench video",
            week=week["week"],
            video_title=week["video_title"],
            platform_url=case.platform_url,
            llm_api_base=f"{case.llm_url}/v1",
        )
    )
    # Reading the brand voice ran freely before (see the weekly run); now it waits.
    held = await wait_pending(handle)
    assert held.step_id == "brief"
    assert any("approval threshold (low)" in r for r in held.reasons)
    await handle.signal("cancel")
    status = await handle.result()
    assert status.status == "cancelled"
    assert case.posts_of(handle.id) == []
