"""The field cases as run requests, and the Temporal Schedules that start them.

``stead demo content|commerce``, ``stead webhook serve`` and the end-to-end tests all
build their runs here, so the story the demo tells is the one the tests check. The
schedules are the batch loop: the content week every Monday morning, reconciliation
every night; ``ensure_demo_schedules`` creates them or, when they exist, updates them
to the current request, so calling it again is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import JsonValue, SecretStr
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from stead.contracts.run import RunInput, RunOptions, RunRequest

CONTENT_PLAYBOOK = "content-weekly"
COMMERCE_PLAYBOOK = "commerce-reconcile"
CONTENT_AGENT = "agent:content-ops"
COMMERCE_AGENT = "agent:reconciler"
# `stead webhook serve` starts runs as this service principal, with its own token.
WEBHOOK_PRINCIPAL = "service:webhook"
CONTENT_SCHEDULE = "stead-demo-content-weekly"
COMMERCE_SCHEDULE = "stead-demo-commerce-nightly"
WEEKLY = "0 6 * * MON"
NIGHTLY = "30 2 * * *"


def content_request(
    tenant: str,
    *,
    week: str,
    video_title: str,
    platform_url: str,
    subscribers: Sequence[str],
    llm_api_base: str | None,
    topic: str = "",
    clips: Sequence[dict[str, JsonValue]] = (),
    hashtags: Sequence[str] = (),
    llm_model: str = "openai/gpt-4o-mini",
    principal: str = CONTENT_AGENT,
    playbook_source: str | None = None,
) -> RunRequest:
    """The weekly content playbook (or ``playbook_source``, a variant of it)."""
    inputs: dict[str, JsonValue] = {
        "week": week,
        "video_title": video_title,
        "topic": topic,
        "clips": list(clips),
        "hashtags": list(hashtags),
        "platform_url": platform_url,
        "subscribers": list(subscribers),
        "llm_model": llm_model,
        "llm_api_base": llm_api_base,
    }
    return RunRequest(
        tenant=tenant,
        principal=principal,
        playbook=None if playbook_source else CONTENT_PLAYBOOK,
        playbook_source=playbook_source,
        inputs=inputs,
        labels={"case": "content"},
    )


def content_goal_request(
    tenant: str,
    goal: str,
    *,
    week: str,
    video_title: str,
    platform_url: str,
    llm_api_base: str | None,
    llm_model: str = "openai/gpt-4o-mini",
    channels: Sequence[str] = ("x", "linkedin"),
    principal: str = CONTENT_AGENT,
) -> RunRequest:
    """The LLM-planned variant: a free-form goal, the same operations, one replan for a
    rejected publish (the planner redrafts with the reviewer's comment)."""
    return RunRequest(
        tenant=tenant,
        principal=principal,
        goal=goal,
        inputs={
            "week": week,
            "video_title": video_title,
            "platform_url": platform_url,
            "llm_model": llm_model,
            "llm_api_base": llm_api_base,
            "channels": list(channels),
        },
        labels={"case": "content"},
        options=RunOptions(max_replans=2),
    )


def commerce_request(
    tenant: str,
    *,
    shop_url: str,
    limits: dict[str, JsonValue],
    database: str = "warehouse",
    skus: Sequence[str] = (),
    trigger: dict[str, JsonValue] | None = None,
    history_key: str = "reconciliation",
    shop_fields: dict[str, JsonValue] | None = None,
    principal: str = COMMERCE_AGENT,
    playbook_source: str | None = None,
) -> RunRequest:
    """One reconciliation: all SKUs (nightly) or the few a return event names."""
    inputs: dict[str, JsonValue] = {
        "shop_url": shop_url,
        "database": database,
        "skus": list(skus),
        "trigger": trigger or {"type": "manual"},
        "history_key": history_key,
        "shop_fields": shop_fields or {},
        **limits,
    }
    return RunRequest(
        tenant=tenant,
        principal=principal,
        playbook=None if playbook_source else COMMERCE_PLAYBOOK,
        playbook_source=playbook_source,
        inputs=inputs,
        labels={"case": "commerce"},
    )


async def reconcile_limits(
    opa_url: str, tenant: str, token: SecretStr | None = None
) -> dict[str, JsonValue]:
    """The tenant's auto-fix limits as playbook inputs, read from OPA's data API now.

    They only route mismatches between the two fix steps; policy decides. Limits that
    are missing leave the playbook's defaults, and policy then reviews every adjustment.
    ``token`` is OPA's decision token (``STEAD_OPA_TOKEN``), enough to read ``data.stead``.
    """
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        response = await http.get(
            f"{opa_url}/v1/data/stead/tenants/{tenant}/reconcile", headers=headers
        )
        response.raise_for_status()
    found: Any = response.json().get("result")
    if not isinstance(found, dict):
        return {}
    names = {"max_auto_units": "auto_units", "max_auto_value": "auto_value"}
    return {
        names[k]: v
        for k, v in found.items()
        if k in names and isinstance(v, int | float) and not isinstance(v, bool)
    }


async def ensure_demo_schedules(
    client: Client,
    task_queue: str,
    *,
    content: RunRequest | None = None,
    commerce: RunRequest | None = None,
    paused: bool = False,
) -> list[str]:
    """Create (or update to these requests) the weekly content and nightly reconciliation
    Schedules, for the requests given; returns their ids. Overlaps are skipped: a slow
    week never runs twice."""
    wanted = {
        schedule_id: (request, cron)
        for schedule_id, request, cron in (
            (CONTENT_SCHEDULE, content, WEEKLY),
            (COMMERCE_SCHEDULE, commerce, NIGHTLY),
        )
        if request is not None
    }
    for schedule_id, (request, cron) in wanted.items():
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                "stead.run",
                RunInput(request=request),
                id=f"run-{request.tenant}-{schedule_id}",
                task_queue=task_queue,
            ),
            spec=ScheduleSpec(cron_expressions=[cron]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            state=ScheduleState(paused=paused, note="stead demo: examples/stead-cases/README.md"),
        )
        try:
            await client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(schedule_id).update(replace)
    return list(wanted)
