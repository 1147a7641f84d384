"""``stead demo content`` and ``stead demo commerce``: the two field cases, narrated.

Each starts the embedded stack (left running if it already was), the example
services of ``services/`` and a real ``stead worker``, then runs the case as an
operator would: approvals are printed as ``stead approve`` commands and performed
through that command, a policy change goes through OPA's data API, and the end is
what the outside world saw plus the SLO summary. ``README.md`` beside this package tells the
stories these demos walk through.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from temporalio.client import Client, WorkflowHandle

from stead.cli._common import console
from stead.cli.demo import demo_task_queue, embedded_stack, ensure_directory, start_credential
from stead.cli.starts import StartCredential, start_governed
from stead.contracts.run import RunRequest, RunStatus
from stead.errors import ConfigError
from stead.settings import Settings
from stead_cases.demo_support import (
    case_worker,
    examples,
    next_pending,
    put_opa_data,
    show_pending,
    slo_summary,
    stead_approve,
    temp_folder,
    token_file,
)
from stead_cases.runs import (
    COMMERCE_AGENT,
    CONTENT_AGENT,
    WEBHOOK_PRINCIPAL,
    commerce_request,
    content_goal_request,
    content_request,
    ensure_demo_schedules,
    reconcile_limits,
)

CREATOR = "user:creator"
OPS_LEAD = "user:ops-lead"
PLAYBOOK_COMMENT = "Say the livestream starts Friday at 6pm"


async def _start(
    client: Client, task_queue: str, request: RunRequest, starter: StartCredential
) -> WorkflowHandle[Any, RunStatus]:
    """Started as `stead run --token-file` would: the starter's token narrowed to this run."""
    handle = await start_governed(client, task_queue, request, starter)
    console.print(f"started [bold]{handle.id}[/] ({request.playbook or 'LLM-planned'})")
    return handle


def _print_run(status: RunStatus) -> None:
    colour = "green" if status.status == "completed" else "red"
    console.print(f"run {status.workflow_id}: [{colour}]{status.status}[/]")
    for s in status.steps:
        outcome = s.decision.outcome if s.decision else "-"
        by = (
            f" by {', '.join(a.approver + ':' + a.verdict for a in s.approvals)}"
            if s.approvals
            else ""
        )
        note = f" ({escape(s.error)})" if s.error else ""
        console.print(
            f"  {s.step_id:<18} {s.operation:<18} {s.status:<10} policy={outcome}{by}{note}"
        )


def _drafting_cost(status: RunStatus) -> float:
    total = 0.0
    for s in status.steps:
        cost = s.output.get("cost_usd") if isinstance(s.output, dict) else None
        if s.operation == "llm.generate" and isinstance(cost, int | float):
            total += cost
    return total


def _preview(text: object) -> str:
    """The start of a post, and its last line when that is the reviewer's revision."""
    body = str(text)
    last = body.rstrip().splitlines()[-1] if body.strip() else ""
    revised = last.startswith("(Revised after review")
    return body[:100] + (f" ... {last}" if revised else "")


def _print_memory(status: RunStatus) -> None:
    """What the run recalled from memory and what it remembered, with provenance."""
    for s in status.steps:
        out: dict[str, Any] = s.output if isinstance(s.output, dict) else {}
        items = out.get("items")
        if s.operation in ("memory.history", "content.brief") and isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and item.get("workflow_id"):
                    console.print(
                        f"  recalled {item['namespace']}/{item['key']} v{item['version']}"
                        f" (written by run {item['workflow_id']}, step {item['step_id']})"
                    )
        if s.operation == "memory.remember" and out:
            console.print(
                f"  remembered {out['namespace']}/{out['key']} v{out['version']}"
                f" (provenance: run {status.workflow_id}, step {s.step_id})"
            )
        previous = out.get("previous")
        if s.operation == "commerce.reconcile" and isinstance(previous, dict):
            again = out.get("recurring")
            before = previous.get("mismatched")
            listed = ", ".join(str(x) for x in again) if isinstance(again, list) else ""
            console.print(
                f"  previous reconciliation (run {previous.get('workflow_id')}) found "
                f"{len(before) if isinstance(before, list) else 0} mismatched; again now: "
                + (listed or "none")
            )
        if s.operation == "commerce.reconcile":
            for trend in out.get("trends") or []:
                if isinstance(trend, dict):
                    console.print(f"  trend (time-series memory): {trend.get('text')}")


# ------------------------------------------------------------------ content


async def _seed_memory(cfg: Settings, tenant: str, seed: list[tuple[str, str, str, str]]) -> None:
    """The creator's voice, style guide and past scripts, as `stead memory put` writes them.
    Keyed by content, so running the demo again adds no versions."""
    from stead.cli.memory import open_session
    from stead.memory.contracts import Provenance, RememberRequest

    async with open_session(cfg) as session:
        for namespace, key, text, why in seed:
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            result = await session.service.remember(
                RememberRequest(
                    tenant=tenant,
                    namespace=namespace,
                    key=key,
                    content=text,
                    provenance=Provenance(principal=CREATOR, agent="stead.demo", reason=why),
                    request_key=f"demo-seed/{namespace}/{key}/{digest}",
                )
            )
            console.print(
                f"  [cyan]$ stead memory put {namespace} {key} - --tenant {tenant} --as {CREATOR}"
                f"[/]  -> version {result.version.version}"
            )


async def _content(cfg: Settings, ex: Any, folder: Path) -> None:
    from stead.temporal import connect

    tenant = "creator"
    content, week = ex.content, ex.content.week()
    await ensure_directory(cfg, tenant, [CONTENT_AGENT, CREATOR])
    console.rule("memory: the brand voice, style guide and past scripts")
    await _seed_memory(cfg, tenant, content.seed())

    platform, llm, mailbox = (
        ex.platform.PlatformService(),
        ex.llm.ExampleLlm(),
        ex.mailbox.Mailbox(),
    )
    with (
        ex._http.serve(platform) as platform_url,
        ex._http.serve(llm) as llm_url,
        ex.mailbox.serve(mailbox) as (smtp_host, smtp_port),
    ):
        config = {
            "STEAD_SMTP_HOST": smtp_host,
            "STEAD_SMTP_PORT": str(smtp_port),
            "STEAD_SMTP_SECURITY": "none",
            "STEAD_EMAIL_SENDERS": json.dumps({tenant: "sam@makersbench.example"}),
            "STEAD_PLANNER_MODEL": "openai/gpt-4o-mini",
            "STEAD_PLANNER_API_BASE": f"{llm_url}/v1",
            "STEAD_PLANNER_API_KEY": "example",
        }
        task_queue = demo_task_queue()
        console.print(
            f"example platform {platform_url}, LLM {llm_url}, mailbox smtp://{smtp_host}:{smtp_port}"
        )
        with case_worker(cfg, task_queue, config):
            token = token_file(cfg, tenant, CREATOR, folder)
            starter = start_credential(cfg, tenant, CONTENT_AGENT)
            client = await connect(cfg)
            weekly = content_request(
                tenant,
                week=week["week"],
                video_title=week["video_title"],
                topic=week["topic"],
                clips=week["clips"],
                hashtags=week["hashtags"],
                platform_url=platform_url,
                subscribers=week["subscribers"],
                llm_api_base=f"{llm_url}/v1",
            )
            console.rule(f"1. the weekly playbook for {week['week']}")
            console.print(
                "(the creator rejects the first package with a comment: the playbook's "
                "on_reject redrafts with it; the platform answers the first upload with a 503 "
                "after storing it)"
            )
            platform.fail_next(503, when="after")
            handle = await _start(client, task_queue, weekly, starter)
            rejected = False
            while (pending := await next_pending(handle)) is not None:
                show_pending(pending)
                posts = pending.args.get("posts")
                for post in posts if isinstance(posts, list) else []:
                    if isinstance(post, dict):
                        console.print(escape(f"  [{post['channel']}] {_preview(post['text'])}"))
                if pending.step_id == "publish" and not rejected:
                    stead_approve(
                        cfg, pending, CREATOR, token, reject=True, comment=PLAYBOOK_COMMENT
                    )
                    rejected = True
                    continue
                stead_approve(cfg, pending, CREATOR, token)
            first = await handle.result()
            _print_run(first)
            _print_memory(first)
            console.print(
                f"  spent: {first.spent.tokens} tokens, ${first.spent.usd:.6f} "
                "(the drafts' usage, reported by llm.generate)"
            )

            console.rule("2. the LLM-planned variant: a rejected draft is redrafted")
            goal = content_goal_request(
                tenant,
                "Announce the plywood workbench video on X and LinkedIn",
                week=week["week"],
                video_title=week["video_title"],
                platform_url=platform_url,
                llm_api_base=f"{llm_url}/v1",
            )
            handle = await _start(client, task_queue, goal, starter)
            rejected = False
            while (pending := await next_pending(handle)) is not None:
                show_pending(pending)
                if pending.step_id == "publish" and not rejected:
                    stead_approve(
                        cfg,
                        pending,
                        CREATOR,
                        token,
                        reject=True,
                        comment="Mention the Friday livestream",
                    )
                    rejected = True
                    continue
                posts = pending.args.get("posts")
                for post in posts if isinstance(posts, list) else []:
                    if isinstance(post, dict):
                        console.print(escape(f"  [{post['channel']}] {str(post['text'])[:140]}"))
                stead_approve(cfg, pending, CREATOR, token)
            second = await handle.result()
            _print_run(second)

            console.rule("3. the weekly Schedule (batch loop)")
            ids = await ensure_demo_schedules(client, task_queue, content=weekly, paused=True)
            console.print(
                f"Temporal Schedule {ids[0]} (every Monday 06:00), paused here because the example "
                "services stop with the demo; unpause it against real services."
            )

    console.rule("what the outside world saw")
    keys = [p["idempotency_key"] for p in platform.posts]
    console.print(
        f"platform: {len(platform.posts)} posts from {platform.requests} upload requests; "
        f"{len(set(keys))} distinct keys (no double post)"
    )
    for post in platform.posts:
        console.print(f"  {post['url']}  {escape(post['text'][:70])}")
    subjects = [m["subject"] for m in mailbox.messages]
    console.print(f"mailbox: {len(mailbox.messages)} newsletter(s): {subjects}")
    console.print(f"LLM: {llm.count('writer')} drafts, {llm.count('planner')} plans")
    await slo_summary(cfg, tenant, _drafting_cost(first) + _drafting_cost(second))


def run_content_demo() -> None:
    ex = examples()

    with embedded_stack() as cfg, temp_folder() as folder:
        asyncio.run(_content(cfg, ex, Path(folder)))


# ----------------------------------------------------------------- commerce


async def _commerce(cfg: Settings, ex: Any, folder: Path) -> None:
    from stead.temporal import connect
    from stead_cases.webhook import ReturnRuns, serving

    tenant = "shop"
    if not cfg.postgres_admin_dsn:
        raise ConfigError("the commerce demo creates its warehouse database with the admin DSN")
    await ensure_directory(cfg, tenant, [COMMERCE_AGENT, OPS_LEAD, WEBHOOK_PRINCIPAL])
    dsn = await ex.warehouse.create_warehouse(cfg.postgres_admin_dsn, "warehouse_demo")
    console.print("warehouse database warehouse_demo created from services/warehouse/*.sql")
    shop = ex.shop.ShopService()
    with ex._http.serve(shop) as shop_url:
        config = {"STEAD_SQL_DATABASES": json.dumps({tenant: {"warehouse": dsn}})}
        task_queue = demo_task_queue()
        with case_worker(cfg, task_queue, config):
            token = token_file(cfg, tenant, OPS_LEAD, folder)
            starter = start_credential(cfg, tenant, COMMERCE_AGENT)
            webhook = start_credential(cfg, tenant, WEBHOOK_PRINCIPAL)
            client = await connect(cfg)
            limits = await reconcile_limits(cfg.opa_url, tenant, cfg.opa_token)
            console.rule("1. nightly reconciliation")
            console.print(f"policy limits (data.stead.tenants.shop.reconcile): {limits}")
            nightly = commerce_request(
                tenant, shop_url=shop_url, limits=limits, trigger={"type": "nightly"}
            )
            await _reconcile(cfg, client, task_queue, nightly, starter, token, approve=True)

            console.rule("2. a return arrives: the webhook starts one run per event")
            event = {"event_id": "ret-1001", "order_id": "o-77", "sku": "CAP-03", "quantity": 2}
            await ex.warehouse.receive_return(cfg.postgres_admin_dsn, "warehouse_demo", **event)
            console.print(f"warehouse booked return {event}")
            runs = ReturnRuns(
                client,
                task_queue,
                tenant,
                shop_url,
                cfg.opa_url,
                principal=WEBHOOK_PRINCIPAL,
                opa_token=cfg.opa_token,
                credential=webhook,
            )
            import httpx

            with serving(runs, asyncio.get_running_loop()) as receiver:
                async with httpx.AsyncClient() as http:
                    for attempt in ("delivered", "redelivered"):
                        answer = await http.post(f"{receiver}/returns", json=event)
                        console.print(
                            f"  POST {receiver}/returns ({attempt}) -> {answer.status_code}"
                            f" {answer.json()}"
                        )
            result = await client.get_workflow_handle(
                runs.run_id(ex_event(event)), result_type=RunStatus
            ).result()
            _print_run(result)
            _print_memory(result)

            console.rule("3. policy change: tighten the auto-fix limit in OPA")
            await ex.warehouse.recount(
                cfg.postgres_admin_dsn, "warehouse_demo", {"MUG-01": -3, "BAG-04": 1}
            )
            console.print("the warehouse recounted: MUG-01 -3, BAG-04 +1")
            original = {
                "max_auto_units": limits.get("auto_units", 5),
                "max_auto_value": limits.get("auto_value", 100),
            }
            await put_opa_data(
                cfg, f"stead/tenants/{tenant}/reconcile", {**original, "max_auto_units": 2}
            )
            tightened = commerce_request(
                tenant,
                shop_url=shop_url,
                limits=await reconcile_limits(cfg.opa_url, tenant, cfg.opa_token),
                trigger={"type": "manual", "after": "limit tightened"},
            )
            await _reconcile(cfg, client, task_queue, tightened, starter, token, approve=False)
            await put_opa_data(cfg, f"stead/tenants/{tenant}/reconcile", original)

            console.rule("4. the nightly Schedule (batch loop)")
            ids = await ensure_demo_schedules(client, task_queue, commerce=nightly, paused=True)
            console.print(
                f"Temporal Schedule {ids[0]} (every night 02:30), paused here because the example "
                "shop stops with the demo."
            )

    console.rule("what the outside world saw")
    keys = [a["idempotency_key"] for a in shop.adjustments]
    console.print(
        f"shop: {len(shop.adjustments)} stock adjustments from {shop.requests} requests; "
        f"{len(set(keys))} distinct keys (none applied twice)"
    )
    for a in shop.adjustments:
        console.print(f"  {a['sku']} {a['delta']:+d} -> {a['available']} ({a['reason']})")
    await slo_summary(cfg, tenant)


def ex_event(event: dict[str, Any]) -> Any:
    from stead_cases.webhook import ReturnEvent

    return ReturnEvent.model_validate(event)


async def _reconcile(
    cfg: Settings,
    client: Client,
    task_queue: str,
    request: RunRequest,
    starter: StartCredential,
    token: Path,
    *,
    approve: bool,
) -> None:
    handle = await _start(client, task_queue, request, starter)
    while (pending := await next_pending(handle)) is not None:
        show_pending(pending)
        adjustments = pending.args.get("adjustments")
        for a in adjustments if isinstance(adjustments, list) else []:
            if isinstance(a, dict):
                console.print(
                    f"  {a['sku']}: shop {a['shop']} -> warehouse {a['warehouse']}"
                    f" ({a['delta']:+d})"
                )
        if approve:
            stead_approve(cfg, pending, OPS_LEAD, token)
        else:
            stead_approve(cfg, pending, OPS_LEAD, token, reject=True, comment="recount first")
    status = await handle.result()
    _print_run(status)
    _print_memory(status)


def run_commerce_demo() -> None:
    ex = examples()

    with embedded_stack() as cfg, temp_folder() as folder:
        asyncio.run(_commerce(cfg, ex, Path(folder)))
